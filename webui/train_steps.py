"""Steps 4 and 5 of the page: the plan, training (start, stop, resume, progress) and the result.

Training and generation are background tasks (webui.tasks); what the page shows of them is read
from the files they write (webui.jobfiles), so it is the same after a reload or a server restart.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

from webui import backend
from webui.jobfiles import JobInfo, RunInfo, metrics_rows, result_files
from webui.session import Session
from webui.workspace import PageError, inside

PROFILES = {"job": "as the job says", "advice": "the plan's cheapest settings for this GPU"}
# What a resumed run must repeat of the run it continues (the page changes nothing else with --set).
RESUMED_KEYS = {"training": ("steps", "reference_steps", "activation_checkpointing", "blocks_to_swap", "low_cost"),
                "model": ("transformer_dtype",), "adapter": ("dtype",)}


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, str) else str(v)


def step_overrides(steps: int | None, reference_steps: int | None) -> list[str]:
    out = []
    if steps is not None:
        out.append(f"training.steps={int(steps)}")
    if reference_steps is not None:
        out.append(f"training.reference_steps={int(reference_steps)}")
    return out


# ------------------------------------------------------------------------------------------ plan
def check_plan(s: Session, job: str | None, gpu_gb: float, steps: int | None, reference_steps: int | None) -> dict:
    job = s.require_job(job)
    info = s.writable(job)
    plan = backend.plan(info.dir / "edit.toml", float(gpu_gb), step_overrides(steps, reference_steps))
    s.ws.save_settings(job, plan={"gpu_gb": float(gpu_gb), "text": plan.text, "verdict": plan.verdict,
                                  "fits": plan.fits, "advice": plan.advice})
    return {"plan_verdict": verdict_markdown(plan.verdict, plan.fits, plan.advice, float(gpu_gb)),
            "plan_text": plan.text, "train_msg": f"Plan made in {plan.seconds:.0f} s."}


def verdict_markdown(verdict: str, fits: bool, advice: list[str], gpu_gb: float) -> str:
    if not verdict:
        return ""
    first = verdict.splitlines()[0]
    if fits:
        return f"**Fits a {gpu_gb:g} GB GPU as configured.** {first}"
    if advice:
        return (f"**Does not fit {gpu_gb:g} GB as configured; fits with** `{' '.join(advice)}` "
                f"(choose the memory profile \"{PROFILES['advice']}\").\n\n{first}")
    return f"**Does not fit a {gpu_gb:g} GB GPU, even with every memory option.**\n\n{first}"


# ------------------------------------------------------------------------------------------ train
def start_training(s: Session, job: str | None, gpu_gb: float, profile: str, steps: int | None,
                   reference_steps: int | None, launcher: str) -> dict:
    job = s.require_job(job)
    info = s.writable(job)
    overrides = step_overrides(steps, reference_steps)
    if profile == "advice":
        plan = backend.plan(info.dir / "edit.toml", float(gpu_gb), overrides)
        if not plan.fits:
            if not plan.advice:
                raise PageError(f"nothing fits a {gpu_gb:g} GB GPU (see the plan): use a larger GPU or fewer frames")
            # a long job's window is data.window, a one-window job's data.frames
            shorter = [a for a in plan.advice if a.startswith(("data.frames=", "data.window="))]
            if shorter:
                raise PageError(f"a {gpu_gb:g} GB GPU needs a shorter window ({shorter[0]}): remake the job with "
                                f"fewer frames (step 1's Frames)")
            overrides += plan.advice
    s.ws.save_settings(job, train={"gpu_gb": float(gpu_gb), "profile": profile, "steps": steps,
                                   "reference_steps": reference_steps, "launcher": launcher})
    argv = backend.train_command(info.dir / "edit.toml", overrides, launcher=launcher)
    s.tasks.start(job, "train", [argv])
    return {"train_msg": "Training started: " + " ".join(Path(a).name if i < 2 else a for i, a in enumerate(argv))}


def stop_training(s: Session, job: str | None) -> dict:
    job = s.require_job(job)
    if not s.tasks.stop(job, "train"):
        raise PageError("no training of this job is running")
    return {"train_msg": "Stopping: train.py saves a resumable checkpoint, then ends."}


def resume_training(s: Session, job: str | None, run: str | None, launcher: str) -> dict:
    job = s.require_job(job)
    info = s.writable(job)
    runs = [r for r in info.runs() if r.resumable]
    chosen = next((r for r in runs if str(r.path) == run), None) if run else (runs[-1] if runs else None)
    if chosen is None:
        raise PageError("no stopped run to resume" + (f" ({Path(run).name} has no checkpoint, or finished)" if run
                                                      else ""))
    cfg = chosen.config
    overrides = [f"{sec}.{k}={_toml_value(cfg[sec][k])}" for sec, keys in RESUMED_KEYS.items() for k in keys
                 if k in (cfg.get(sec) or {})]
    argv = backend.train_command(info.dir / "edit.toml", overrides, resume=chosen.path, launcher=launcher)
    s.tasks.start(job, "train", [argv], run=str(chosen.path))
    return {"train_msg": f"Resuming {chosen.path.name} from step {chosen.step}."}


def current_run(s: Session, job: str, info: JobInfo, chosen: str | None) -> RunInfo | None:
    """The chosen run, else the one a running task writes (None until it made its folder), else the newest."""
    runs = info.runs()
    task = s.tasks.get(job, "train")
    if chosen:
        match = [r for r in runs if str(r.path) == chosen]
        if match:
            return match[0]
    if task and task.active:
        if task.info.get("run"):  # a resumed run
            return RunInfo(Path(task.info["run"]))
        new = [r for r in runs if r.path.stat().st_ctime >= float(task.info.get("queued", 0)) - 2]
        return new[-1] if new else None
    return runs[-1] if runs else None


def training_view(s: Session, job: str, chosen: str | None) -> dict:
    """Progress bar, loss curve, previews and the log of the current run and task."""
    info = s.job_info(job)
    task = s.tasks.get(job, "train")
    if info is None:
        return {"train_progress": progress_html(0, 0, "The job is not made yet."), "loss": None, "previews": [],
                "train_log": ""}
    run = current_run(s, job, info, chosen)
    state = task_state(task)
    if run is None:
        text = "Starting: loading the model and encoding the clip." if task and task.active else "No training yet."
        return {"train_progress": progress_html(0, 0, f"{state}{text}"), "loss": None, "previews": [],
                "train_log": task.tail() if task else ""}
    if run.finished:
        state = task_state(task, finished=True)
    metrics, total = run.metrics, run.total_steps
    step = metrics[-1]["step"] if metrics else 0
    text = f"{state}run {run.path.name}: step {step} of {total}"
    if metrics:
        text += f", loss {metrics[-1]['loss']:.4f}"
        recent = [m["seconds"] for m in metrics[-10:] if isinstance(m.get("seconds"), (int, float))]
        if recent and task and task.active and step < total:
            per_step = sum(recent) / len(recent)
            text += f", {per_step:.2f} s/step, about {(total - step) * per_step:.0f} s left"
    if run.summary:
        text += f" - {run.state()}"
    previews = run.previews()
    return {"train_progress": progress_html(step, total, text),
            "loss": [(m["step"], m["loss"], m.get("stage", "")) for m in metrics if isinstance(m.get("loss"), float)],
            "previews": [(p["sheet"] if p.get("sheet") else p["video"], preview_caption(p)) for p in previews],
            "preview_video": previews[-1]["video"] if previews and previews[-1].get("video") else None,
            "train_log": task.tail() if task else ""}


def preview_caption(p: dict) -> str:
    text = f"step {p['step']}"
    if isinstance(p.get("combined"), (int, float)):
        text += f": score {p['combined']:.3f}"
    return text


def task_state(task, finished: bool = False) -> str:
    """The task's state as the start of a status line ("" when there is none, or its work is finished)."""
    if task is None or (finished and task.state in ("running", "done")):
        return ""
    return {"starting": "Starting. ", "running": "Running. ", "done": "", "failed": f"Failed: {task.last_error()}. ",
            "stopped": "Stopped. ", "lost": "The process ended without reporting (killed?). "}[task.state]


def progress_html(step: int, total: int, text: str) -> str:
    pct = 100.0 * step / total if total else 0.0
    return (f'<div class="lora-progress"><progress id="train-bar" value="{step}" max="{max(total, 1)}"></progress>'
            f'<span class="lora-progress-pct">{pct:.0f}%</span><p id="train-status">{html.escape(text)}</p></div>')


def run_choices(info: JobInfo | None) -> list[tuple[str, str]]:
    runs = reversed(info.runs()) if info else []
    return [("the newest run", "")] + [(f"{r.path.name} ({r.state()})", str(r.path)) for r in runs]


# ------------------------------------------------------------------------------------------ 5. result
def lora_choices(info: JobInfo | None) -> list[tuple[str, str]]:
    out = []
    for r in reversed(info.runs() if info else []):
        out += [(f"{r.path.name}/{f.name}", str(f)) for f in r.loras()]
    return out + [("no LoRA (the base model)", "")]


def generate(s: Session, job: str | None, lora: str | None, steps: int, seed: int, guidance: float) -> dict:
    job = s.require_job(job)
    info = s.writable(job)
    lora_path = None
    if lora:
        lora_path = Path(lora).resolve()
        if not inside(lora_path, info.runs_dir) or not lora_path.is_file():
            raise PageError(f"LoRA {lora}: not a LoRA file of this job's runs")
    elif lora is None:
        raise PageError("train first, or choose 'no LoRA' to generate with the base model")
    out = info.results_dir / time.strftime("%Y%m%d-%H%M%S")
    s.ws.save_settings(job, generate={"steps": int(steps), "seed": int(seed), "guidance": float(guidance)})
    commands = backend.generate_commands(info.dir / "edit.toml", out, lora_path, int(steps), int(seed), float(guidance))
    s.tasks.start(job, "generate", commands, out=str(out))
    return {"result_msg": f"Generating into {out.relative_to(s.ws.root)} (infer.py, then evaluate.py) ..."}


def result_view(s: Session, job: str, chosen: str | None) -> dict:
    info = s.job_info(job)
    task = s.tasks.get(job, "generate")
    results = info.results() if info else []
    folder = next((r for r in results if str(r) == chosen), None) or (results[-1] if results else None)
    state = task_state(task)
    files = result_files(folder) if folder else {}
    if task and task.active:
        commands = [ln for ln in task.tail(200).splitlines() if ln.startswith("$ ")]
        doing = "evaluating (evaluate.py)" if commands and "evaluate.py" in commands[-1] else "generating (infer.py)"
        msg = f"{state}{doing} into {Path(task.info.get('out', '')).name} ..."
    elif folder is None:
        msg = f"{state}No result yet."
    else:
        msg = f"{state}Result `{folder.relative_to(s.ws.root)}`" + _settings_text(files.get("settings"))
    downloads = [str(files[k]) for k in ("video", "side_by_side", "metrics") if k in files]
    if folder is not None:
        lora = _result_lora(files.get("settings"))
        if lora and lora.is_file() and inside(lora, s.ws.root):
            downloads.append(str(lora))
    return {"result_msg": msg, "result_video": str(files["video"]) if "video" in files else None,
            "sbs_video": str(files["side_by_side"]) if "side_by_side" in files else None,
            "metrics_table": metrics_rows(files["metrics"]) if "metrics" in files else [],
            "metrics_plot": str(files["plot"]) if "plot" in files else None, "downloads": downloads}


def _settings_text(settings: Path | None) -> str:
    try:
        r = json.loads(settings.read_text(encoding="utf-8"))
    except (OSError, ValueError, AttributeError):
        return ""
    loras = ", ".join(Path(x["path"]).parent.name + "/" + Path(x["path"]).name for x in r.get("loras") or []
                      if isinstance(x, dict) and x.get("path")) or "no LoRA"
    return f": seed {r.get('seed')}, {r.get('steps')} steps, guidance {r.get('guidance')}, {loras}"


def _result_lora(settings: Path | None) -> Path | None:
    try:
        loras = json.loads(settings.read_text(encoding="utf-8")).get("loras") or []
    except (OSError, ValueError, AttributeError):
        return None
    return Path(loras[0]["path"]) if loras and isinstance(loras[0], dict) and loras[0].get("path") else None


def result_choices(s: Session, info: JobInfo | None) -> list[tuple[str, str]]:
    return [("the newest result", "")] + [(str(r.relative_to(s.ws.root)), str(r))
                                          for r in reversed(info.results() if info else [])]

"""Filling the page from disk: everything shown when a job is opened, and the timer's refresh of
whatever a background task changed (each part is sent again only when its files changed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from webui import steps, train_steps
from webui.jobfiles import JobInfo
from webui.session import Session
from webui.workspace import PageError


def update(**kw: object) -> dict:
    return {"__update__": True, **kw}


def draw_points(img: np.ndarray, points: list) -> np.ndarray:
    """SAM2 clicks as green (object) and red (not the object) dots on the first frame."""
    out = img.copy()
    r = max(3, img.shape[1] // 100)
    for x, y, label in points:
        cv2.circle(out, (int(x), int(y)), r, (40, 220, 40) if label else (230, 30, 30), -1)
        cv2.circle(out, (int(x), int(y)), r, (255, 255, 255), 1)
    return out


def job_status(s: Session, job: str) -> str:
    info = s.job_info(job)
    where = f"`{s.ws.job_dir(job)}`"
    if info is None:
        state = f"not made yet (its inputs are kept in `{s.ws.page_dir(job)}`)"
    elif s.made_by_page(job):
        state = f"job folder {where}: `python train.py --config {s.ws.job_dir(job) / 'edit.toml'}` runs it too"
    else:
        state = f"job folder {where}, made by prepare.py (its clip, mask and edited frame are shown, not changed here)"
    active = s.tasks.active(job)
    busy = f" - **{active.kind} running**" if active else ""
    model = s.model_of(job)
    return f"**Job {job}**: {state}{busy}. Model: `{model or 'none chosen'}`"


def _train_defaults(info: JobInfo | None, settings: dict) -> dict:
    if info is None:
        return {}
    t, i, tr = info.section("training"), info.section("inference"), settings.get("train") or {}
    gen = settings.get("generate") or {}
    return {"steps": tr.get("steps") if tr.get("steps") is not None else t.get("steps", 100),
            "ref_steps": tr.get("reference_steps") if tr.get("reference_steps") is not None
            else t.get("reference_steps", 100),
            "infer_steps": gen.get("steps", i.get("steps", 50)),
            "guidance": gen.get("guidance", i.get("guidance", 5.0)), "seed": gen.get("seed", info.cfg.get("seed", 42)),
            "train_model": f"Model: `{info.model}` ({info.section('model').get('type', 'wan')}); stage 2 " + (
                "runs on the edited later frames." if info.has_reference else "is skipped (no edited later frames).")}


def _cli_job_compare(s: Session, job: str, info: JobInfo) -> str | None:
    from webui import media

    src, ed = info.dir / "source" / "00000.png", info.dir / "edited_first.png"
    if not (src.is_file() and ed.is_file()):
        return None
    a, b = media.read_image(src, "source"), media.read_image(ed, "edited frame")
    path = s.ws.view_dir(job) / "compare.png"
    media.write_png(np.concatenate([a, np.full((a.shape[0], 2, 3), 255, np.uint8), b], axis=1), path)
    return str(path)


def _frame_fields(frames: int, window: int) -> dict:
    """Step 1's "Frames" (one window) and "Long clip" (all frames, 0 for a one-window job) of a job."""
    long = bool(window) and frames > window
    return {"frames": window if long else frames, "length": frames if long else 0}


def open_job(s: Session, job: str | None) -> dict:
    """Every field of the page for `job` (None: an empty page)."""
    if not job:
        return {"job": None, "job_status": "Make a new job, or open one.", "job_pick": update(choices=s.ws.names())}
    job = s.require_job(job)
    s.ws.remember(job)
    st, info = s.ws.settings(job), s.job_info(job)
    out: dict = {"job": job, "job_pick": update(choices=s.ws.names(), value=job),
                 "job_status": job_status(s, job), "clip_upload": None, "mask_upload": None, "edited_upload": None,
                 "reference_upload": None, "sam2_points": [], "clip_pick": update(choices=s.ws.videos(), value=None)}
    model = s.model_of(job)
    if model:
        out["model"] = update(choices=s.model_choices() + ([] if any(v == model for _, v in s.model_choices())
                                                           else [(model, model)]), value=model)
    clip = st.get("clip")
    if clip:
        out.update(start=clip["start"], **_frame_fields(clip["frames"], clip.get("window", 0)), fps=clip["fps"],
                   size=f"{clip['size'][0]}x{clip['size'][1]}", resize_mode=clip["resize_mode"],
                   clip_msg=f"Clip {clip['name']}.", mask_editor=steps.editor_value(s, job))
    elif info is not None:
        out.update(start=info.data("start", 0.0), **_frame_fields(info.data("frames"), info.data("window", 0)),
                   fps=info.data("fps"),
                   size=f"{info.data('width')}x{info.data('height')}", resize_mode=info.data("resize_mode", "crop"),
                   clip_msg="Made by prepare.py: the clip as the job holds it.", mask_editor=None)
    else:
        out.update(clip_msg="Upload a clip or pick one.", mask_editor=None, clip_video=None, clip_sheet=None)
    mask = st.get("mask") or {}
    out.update(mask_mode=mask.get("mode", "paint"),
               dilate=mask.get("dilate", info.data("mask_dilate", 0) if info else 0),
               bbox=mask.get("bbox", info.data("mask_bbox", False) if info else False),
               sam2_dir=mask.get("sam2", ""), mask_video=None, mask_sheet=None, mask_msg="")
    try:
        out.update(steps.clip_view(s, job))
    except PageError as e:
        out["clip_msg"] = f"**⚠ {e}**"
    edit = st.get("edit") or {}
    out.update(caption=edit.get("caption", info.data("caption", "") if info else ""),
               edited_caption=edit.get("edited_caption", info.data("edited_caption", "") if info else ""),
               caption_model=edit.get("caption_model", ""), edit_msg="", prepare_log="")
    if clip and edit.get("edited"):
        out["edit_compare"] = str(steps.compare_picture(s, job))
    else:
        out["edit_compare"] = _cli_job_compare(s, job, info) if info else None
    sheet = info.dir / "preview" / "inference_sheet.png" if info else None
    out["job_preview"] = str(sheet) if sheet and sheet.is_file() else None
    out.update(_train_defaults(info, st))
    tr = st.get("train") or {}
    out.update(gpu_gb=tr.get("gpu_gb", 24), profile=tr.get("profile", "job"), launcher=tr.get("launcher", "python"))
    plan = st.get("plan") or {}
    out.update(plan_verdict=train_steps.verdict_markdown(plan.get("verdict", ""), plan.get("fits", False),
                                                         plan.get("advice", []), plan.get("gpu_gb", 0)),
               plan_text=plan.get("text", ""), train_msg="", result_msg="")
    out.update(run_pick=update(choices=train_steps.run_choices(info), value=""),
               lora_pick=update(choices=train_steps.lora_choices(info), value=_default_lora(info)),
               result_pick=update(choices=train_steps.result_choices(s, info), value=""))
    out.update(train_steps.training_view(s, job, None))
    out.update(train_steps.result_view(s, job, None))
    out["sig"] = _keys(s, job, None, None)  # the timer refreshes only what changes after this
    return out


def _default_lora(info: JobInfo | None) -> str | None:
    finished = [r for r in (info.runs() if info else []) if r.finished]
    return str(finished[-1].path / "lora.safetensors") if finished else None


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def _keys(s: Session, job: str, run_pick: str | None, result_pick: str | None) -> dict:
    """What each part of the page depends on on disk; a part is refreshed when its key changes."""
    info = s.job_info(job)
    prep, task, gen = (s.tasks.get(job, k) for k in ("prepare", "train", "generate"))
    run = train_steps.current_run(s, job, info, run_pick) if info else None
    results = info.results() if info else []
    return {
        "prepare": [prep.state, prep.info.get("ended"), _mtime(prep.log)] if prep else None,
        "train": [task.state if task else None, _mtime(task.log) if task else 0, str(run.path) if run else None,
                  _mtime(run.path / "metrics.jsonl") if run else 0, _mtime(run.path / "summary.json") if run else 0,
                  _mtime(run.path / "previews" / "previews.jsonl") if run else 0, len(info.runs()) if info else 0],
        "generate": [gen.state if gen else None, _mtime(gen.log) if gen else 0, result_pick, [str(r) for r in results],
                     [_mtime(r / "evaluation.json") for r in results]],
    }


def poll(s: Session, job: str | None, sig: dict | None, run_pick: str | None, result_pick: str | None) -> dict:
    """The timer: what changed on disk since the last tick (`sig` holds the keys of what the page shows)."""
    if not job or not s.ws.page_dir(job).is_dir() and not s.ws.is_job(job):
        return {}
    old, new, out = dict(sig or {}), _keys(s, job, run_pick, result_pick), {}
    if new == old:
        return {}
    info = s.job_info(job)
    if new["prepare"] != old.get("prepare"):
        out.update(_prepare_outputs(s, job, s.tasks.get(job, "prepare"), info))
    if new["train"] != old.get("train"):
        out.update(train_steps.training_view(s, job, run_pick))
        before = old.get("train") or [None] * 7
        if before[0] != new["train"][0] or before[5:] != new["train"][5:] or before[4] != new["train"][4]:
            out.update(run_pick=update(choices=train_steps.run_choices(info)),
                       lora_pick=update(choices=train_steps.lora_choices(info), value=_default_lora(info)))
        out["job_status"] = job_status(s, job)
    if new["generate"] != old.get("generate"):
        out.update(train_steps.result_view(s, job, result_pick))
        if (old.get("generate") or [None] * 5)[3] != new["generate"][3]:
            out["result_pick"] = update(choices=train_steps.result_choices(s, info), value="")
        out["job_status"] = job_status(s, job)
    out["sig"] = new
    return out


def _prepare_outputs(s: Session, job: str, prep, info: JobInfo | None) -> dict:
    if prep is None:
        return {}
    out: dict = {"prepare_log": prep.tail(14), "job_status": job_status(s, job)}
    if prep.active:
        out["edit_msg"] = "Making the job (prepare.py) ..."
    elif prep.state == "done" and info is not None:
        out["edit_msg"] = (f"Job made in `{info.dir}`. Check the mask over the clip (step 2), then train (step 4).")
        out.update(steps.clip_view(s, job))
        sheet = info.dir / "preview" / "inference_sheet.png"
        out["job_preview"] = str(sheet) if sheet.is_file() else None
        out.update(_train_defaults(info, s.ws.settings(job)))
        out["job_pick"] = update(choices=s.ws.names(), value=job)
    else:
        out["edit_msg"] = f"**⚠ prepare.py: {prep.last_error()}**"
    return out

"""The job functions as a front end drives them: from a plain Python script's worker thread, reporting through a
progress callback, stoppable with an event; and the entry points' console side of it (progress lines in logs,
--quiet, a --help that imports no model library)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from synthetic import write_training_job

from config.console import ConsoleProgress
from config.progress import ProgressEvent

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_wan_diffusers) -> Path:
    root = tmp_path_factory.mktemp("jobs")
    return write_training_job(root, tiny_wan_diffusers, steps=3, lr=1e-3, sample_steps=3)


def run_script(body: str, tmp_path: Path) -> dict:
    """Run `body` as a plain Python script (not under pytest) and return the JSON it prints last."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_train_and_infer_run_in_a_worker_thread_with_a_progress_callback(job, tmp_path):
    out = run_script(f"""
        import json, threading
        from config.loader import load_config
        from engine.infer.job import run_inference
        from engine.train.job import run_training

        cfg = load_config({str(job / 'edit.toml')!r}, ["output_dir={str(tmp_path / 'runs')!r}"])
        events, results, errors, threads = [], {{}}, [], []

        def progress(event):
            threads.append(threading.current_thread().name)
            events.append([event.phase, event.step, event.total, sorted(event.figures)])

        def work():
            try:
                results["train"] = run_training(cfg, progress=progress)
                results["infer"] = run_inference(cfg, progress=progress)  # the LoRA: the newest of this job's runs
            except BaseException as e:
                errors.append(repr(e))

        worker = threading.Thread(target=work, name="worker")
        worker.start()
        worker.join()
        train, infer = results.get("train"), results.get("infer")
        print(json.dumps({{"errors": errors, "threads": sorted(set(threads)), "events": events,
                          "lora": str(train.lora) if train else None, "loras": [str(s.path) for s in infer.loras],
                          "video": str(infer.video), "files": infer.files, "summary": infer.summary,
                          "seconds": sorted(infer.seconds)}}))
    """, tmp_path)
    assert out["errors"] == [] and out["threads"] == ["worker"]
    train = [e for e in out["events"] if e[0] == "train"]
    assert [e[1] for e in train] == [0, 1, 2, 3] and all(e[2] == 3 for e in train)
    assert all(e[3] == ["loss", "lr"] for e in train[1:])
    denoise = [e for e in out["events"] if e[0] == "denoise"]
    assert [e[1] for e in denoise] == [0, 1, 2, 3] and all(e[2] == 3 for e in denoise)
    assert Path(out["lora"]).is_file() and out["loras"] == [out["lora"]]
    assert Path(out["video"]).is_file() and Path(out["files"]["sidecar"]).is_file()
    assert out["summary"].startswith("done in ") and {"encode", "denoise", "decode", "total"} <= set(out["seconds"])


def test_a_stop_event_checkpoints_and_resume_continues_to_the_same_steps(job, tmp_path):
    out = run_script(f"""
        import json, threading
        from config.loader import load_config
        from engine.train.job import run_training

        cfg = load_config({str(job / 'edit.toml')!r}, ["output_dir={str(tmp_path / 'runs')!r}", "training.steps=8"])
        stop = threading.Event()
        results = {{}}

        def progress(event):
            if event.phase == "train" and event.step >= 3:
                stop.set()  # as a web page's Stop button would

        def work():
            results["cut"] = run_training(cfg, progress=progress, stop=stop)
            results["latest"] = (results["cut"].run_dir / "checkpoints" / "latest").read_text().strip()
            results["resumed"] = run_training(cfg, resume_requested=True)

        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
        cut, resumed = results["cut"], results["resumed"]
        print(json.dumps({{"cut": [cut.steps, cut.interrupted, str(cut.lora)], "run": str(cut.run_dir),
                          "latest": results["latest"],
                          "resumed": [resumed.steps, resumed.interrupted, str(resumed.run_dir)]}}))
    """, tmp_path)
    steps, interrupted, lora = out["cut"]
    assert steps == 3 and interrupted and lora == "None"
    run = Path(out["run"])
    assert out["latest"] == "step000003"  # the stop checkpointed where it was
    assert out["resumed"] == [8, False, str(run)]
    metrics = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics == list(range(1, 9)) and (run / "lora.safetensors").is_file()


def _events(total: int) -> list[ProgressEvent]:
    return [ProgressEvent("train", i, total, "stage1", {"loss": 0.5 / (i + 1)} if i else {}) for i in range(total + 1)]


def test_console_prints_a_line_every_few_steps_when_not_a_terminal():
    stream = io.StringIO()
    console = ConsoleProgress(stream=stream, interactive=False)
    for event in _events(100):
        console(event)
    console(ProgressEvent("evaluate", message="optical flow on the source (8 pairs)..."))
    console.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    train = [x for x in lines if x.startswith("train: ")]
    assert [int(x.split()[1].split("/")[0]) for x in train] == [1, *range(5, 101, 5)]
    assert train[-1].startswith("train: 100/100 steps (100%)") and "stage1, loss=0.004" in train[-1]
    assert lines[-1] == "evaluate: optical flow on the source (8 pairs)..."


def test_console_draws_bars_on_a_terminal_and_nothing_when_quiet():
    bars, quiet = io.StringIO(), io.StringIO()
    for stream, is_quiet in ((bars, False), (quiet, True)):
        console = ConsoleProgress(quiet=is_quiet, stream=stream, interactive=True)
        for event in _events(10):
            console(event)
        console.close()
    assert "\rtrain:" in bars.getvalue() and "/10" in bars.getvalue()  # a redrawn bar, not lines
    assert quiet.getvalue() == ""


HEAVY = ("torch", "diffusers", "transformers", "deepspeed", "av", "peft")


@pytest.mark.parametrize("entry", ["prepare.py", "train.py", "infer.py", "evaluate.py"])
def test_help_imports_no_model_library(entry):
    """--help answers before anything heavy is imported (prepare.py's used to import torch: 15 s)."""
    code = (f"import runpy, sys\nsys.argv = [{entry!r}, '--help']\ntry:\n    runpy.run_path({entry!r}, "
            f"run_name='__main__')\nexcept SystemExit:\n    pass\nprint([m for m in {HEAVY!r} if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--quiet" in proc.stdout and proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout[-500:]


@pytest.fixture(scope="module")
def trained(job, tmp_path_factory) -> Path:
    """The job trained once (3 steps), for infer.py and evaluate.py."""
    out = tmp_path_factory.mktemp("trained")
    proc = subprocess.run([sys.executable, "train.py", "--config", str(job / "edit.toml"), "--quiet", "--set",
                           f"output_dir='{out}'"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train:" not in proc.stderr and "trained 3 steps" in proc.stdout
    return out


def _cli(job: Path, trained: Path, entry: str, tmp: Path, quiet: bool) -> subprocess.CompletedProcess:
    args = {"train.py": ["--config", str(job / "edit.toml"), "--set", f"output_dir='{tmp / 'runs'}'"],
            "infer.py": ["--config", str(job / "edit.toml"), "--set", f"output_dir='{trained}'", "--out",
                         str(tmp / "result")],
            "prepare.py": ["--video", str(job / "src.mp4"), "--mask", str(job / "masks"), "--edited-frame",
                           str(job / "edited.png"), "--frames", "5", "--size", "32x32", "--caption", "a square",
                           "--out", str(tmp / "job"), "--no-preview"]}[entry]
    return subprocess.run([sys.executable, entry, *args, *(["--quiet"] if quiet else [])], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("entry, phase", [("train.py", "train"), ("infer.py", "denoise"), ("prepare.py", "prepare")])
def test_progress_lines_in_logs_and_quiet(entry, phase, job, trained, tmp_path):
    """Not a terminal (a log): one plain line every few steps, no carriage returns; --quiet: none at all."""
    shown = _cli(job, trained, entry, tmp_path / "shown", quiet=False)
    assert shown.returncode == 0, shown.stderr[-3000:]
    lines = [x for x in shown.stderr.splitlines() if x.startswith(f"{phase}: ")]
    assert lines and "\r" not in shown.stderr, shown.stderr[-2000:]
    # no bar redraws piled into one line (tqdm wrote 25,000 characters): every line is one a person can read
    assert max(len(x) for x in shown.stderr.splitlines()) <= 300, max(shown.stderr.splitlines(), key=len)[:500]
    quiet = _cli(job, trained, entry, tmp_path / "quiet", quiet=True)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert not [x for x in quiet.stderr.splitlines() if x.startswith(f"{phase}: ")], quiet.stderr[-2000:]
    assert quiet.stdout.strip()  # the result is still printed


def test_evaluate_quiet_keeps_the_summary_and_drops_the_progress(job, trained, tmp_path):
    infer = _cli(job, trained, "infer.py", tmp_path, quiet=True)
    assert infer.returncode == 0, infer.stderr[-3000:]
    runs = {}
    for quiet in (False, True):
        runs[quiet] = subprocess.run([sys.executable, "evaluate.py", "--config", str(job / "edit.toml"), "--result",
                                      str(tmp_path / "result" / "result.mp4"), *(["--quiet"] if quiet else [])],
                                     cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
        assert runs[quiet].returncode == 0, runs[quiet].stderr[-3000:]
        assert "evaluated 1 result" in runs[quiet].stdout
    assert "evaluate: optical flow on the source" in runs[False].stderr
    assert "evaluate:" not in runs[True].stderr

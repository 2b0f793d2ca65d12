"""--resume reads nothing that can run code, survives SIGKILL without repeating a step, and a failed final LoRA
write loses no training: real train.py runs on the tiny Wan model, real pickle payloads."""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from synthetic import write_training_job
from train_runs import REPO, run_folder, run_train

STEPS = 120
# LoRA dropout on: a bit-identical resume then also needs the RNG state back, not only weights and optimizer.
COMMON = (f"training.steps={STEPS}", "training.checkpoint_every_n_steps=10", "adapter.dropout=0.1")


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_wan_diffusers) -> Path:
    root = tmp_path_factory.mktemp("resume-job")
    return write_training_job(root, tiny_wan_diffusers, steps=None, lr=1e-3)


@pytest.fixture(scope="module")
def full_run(job, tmp_path_factory) -> Path:
    """The uninterrupted run every resumed run must equal."""
    out = tmp_path_factory.mktemp("full")
    proc = run_train(job, *COMMON, out=str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_folder(out, "edit")


def metric_steps(run: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_lora(a: Path, b: Path) -> None:
    la, lb = load_file(a), load_file(b)
    assert la.keys() == lb.keys()
    for k in la:
        torch.testing.assert_close(la[k], lb[k], atol=0, rtol=0)


class Payload:
    """Unpickling this writes the marker file: what a crafted checkpoint would do with anything it likes."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


def planted_run(tmp_path: Path, files: dict[str, object]) -> tuple[Path, Path]:
    """A run folder whose checkpoints/latest names step000010, holding `files` (name -> torch.save'd object, or
    bytes/str written as they are)."""
    run = tmp_path / "runs" / "edit" / "20260101-000000"
    folder = run / "checkpoints" / "step000010"
    folder.mkdir(parents=True)
    (run / "checkpoints" / "latest").write_text("step000010")
    for name, obj in files.items():
        if isinstance(obj, (bytes, str)):
            (folder / name).write_bytes(obj.encode() if isinstance(obj, str) else obj)
        else:
            torch.save(obj, folder / name)
    return run, folder


def test_the_payload_really_runs_when_unpickled(tmp_path):
    """The planted files are live: torch.load(weights_only=False), as DeepSpeed's load_checkpoint calls it, runs
    the code. (So the tests below, where the marker must stay absent, can fail.)"""
    marker = tmp_path / "marker"
    torch.save({"module": Payload(marker)}, tmp_path / "x.pt")
    torch.load(tmp_path / "x.pt", weights_only=False)
    assert marker.read_text() == "code ran"


def test_resume_refuses_a_deepspeed_pickle_checkpoint_without_running_it(job, tmp_path):
    marker = tmp_path / "marker"
    run, folder = planted_run(tmp_path, {"mp_rank_00_model_states.pt": {"module": Payload(marker), "step": 10},
                                         "layer_01-model_states.pt": Payload(marker)})
    started = time.time()
    proc = run_train(job, *COMMON, out=str(tmp_path / "runs"), extra=("--resume", str(run)))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert not marker.exists(), "the planted pickle ran"
    line = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr and str(folder) in line and "mp_rank_00_model_states.pt" in line
    assert "never opens them" in line
    assert time.time() - started < 60  # refused before the engine and the model start
    assert not (run / "lora.safetensors").exists()


@pytest.mark.parametrize("disguise", ["stage0.safetensors", "stage0.json", "state.json"])
def test_resume_refuses_a_pickle_under_a_checkpoint_file_name(job, tmp_path, disguise):
    """The payload where a safetensors or JSON file of a checkpoint belongs: refused as damaged, never unpickled."""
    marker = tmp_path / "marker"
    state = {"format": "lora-edit-checkpoint/1", "files": ["stage0.json", "stage0.safetensors"], "step": 10,
             "seed": 42, "experts": ["main"], "pipeline_stages": 1, "world_size": 1}
    files = {"state.json": json.dumps(state), "stage0.json": "{}", "stage0.safetensors": b""}
    files[disguise] = {"state": Payload(marker)}
    run, folder = planted_run(tmp_path, files)
    proc = run_train(job, *COMMON, out=str(tmp_path / "runs"), extra=("--resume", str(run)))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert not marker.exists(), "the planted pickle ran"
    line = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr and str(folder / disguise) in line
    assert "not a safetensors file" in line or "not a readable JSON" in line


def test_latest_naming_a_folder_outside_the_run_is_refused(tmp_path):
    from config.errors import UserError
    from engine.train.run_dir import find_resume

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "latest").write_text("../../../elsewhere")
    with pytest.raises(UserError, match="not a checkpoint tag"):
        find_resume(tmp_path, "edit", str(run))


def test_sigkill_then_resume_equals_uninterrupted_and_logs_every_step_once(job, full_run, tmp_path):
    out = tmp_path / "cut"
    args = [sys.executable, "train.py", "--config", str(job / "edit.toml"), "--set", f"output_dir='{out}'"]
    for o in COMMON:
        args += ["--set", o]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)})
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        runs = list(out.glob("edit/*/metrics.jsonl"))
        # between two checkpoints (every 10 steps): the kill leaves logged steps the checkpoint does not have
        if runs and (runs[0].parent / "checkpoints" / "latest").exists() and \
                len(runs[0].read_text().splitlines()) % 10 in (3, 4, 5, 6):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    run = run_folder(out, "edit")
    saved = int((run / "checkpoints" / "latest").read_text().strip()[4:])
    assert max(metric_steps(run)) > saved, "killed right after a checkpoint: nothing to trim"

    resumed = run_train(job, *COMMON, out=str(out), extra=("--resume",))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert metric_steps(run) == list(range(1, STEPS + 1))
    assert_same_lora(full_run / "lora.safetensors", run / "lora.safetensors")
    # the checkpoints left are the newest two, and the last is the finished state
    assert sorted(p.name for p in (run / "checkpoints").glob("step*")) == [f"step{STEPS - 10:06d}", f"step{STEPS:06d}"]


def test_final_lora_write_failure_keeps_the_training_and_says_how_to_write_it(job, full_run, tmp_path, monkeypatch):
    import models.lora
    from config.errors import UserError
    from config.loader import load_config
    from engine.train.job import run_training

    real = models.lora.save_lora_state

    def disk_full_at_the_end(path, *args, **kwargs):
        if Path(path).name == "lora.safetensors":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(models.lora, "save_lora_state", disk_full_at_the_end)
    cfg = load_config(job / "edit.toml", [f"output_dir='{tmp_path / 'runs'}'", *COMMON])
    with pytest.raises(UserError) as failed:
        run_training(cfg)
    message = str(failed.value)
    run = run_folder(tmp_path / "runs", "edit")
    assert "\n" not in message and f"could not write {run / 'lora.safetensors'}: No space left on device" in message
    assert (run / "checkpoints" / f"step{STEPS:06d}" / "state.json").is_file()
    assert not (run / "lora.safetensors").exists()

    command = re.search(r"python (train\.py .*)$", message).group(1)
    proc = subprocess.run([sys.executable, *shlex.split(command)], cwd=REPO, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"trained {STEPS} steps" in proc.stdout and "nan" not in proc.stdout, proc.stdout
    assert metric_steps(run) == list(range(1, STEPS + 1))  # nothing retrained
    assert_same_lora(full_run / "lora.safetensors", run / "lora.safetensors")


def test_a_truncated_checkpoint_file_is_one_line_naming_it(job, full_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    shard = run / "checkpoints" / f"step{STEPS:06d}" / "stage0.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    proc = run_train(job, *COMMON, out=str(tmp_path), extra=("--resume", str(run)))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"{shard}: damaged or not a safetensors file" in proc.stderr.strip().splitlines()[-1]


def test_plain_resume_skips_finished_runs(tmp_path):
    """Every run now keeps its last checkpoint: plain --resume must still pick the unfinished run, not a newer
    finished one (whose resume would only rewrite its LoRA)."""
    from config.errors import UserError
    from engine.train.run_dir import find_resume

    def run(stamp: str, summary: dict | None) -> Path:
        folder = tmp_path / "edit" / stamp
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "checkpoints" / "latest").write_text("step000004")
        if summary is not None:
            (folder / "summary.json").write_text(json.dumps(summary))
        return folder

    cut = run("20260101-000000", {"interrupted": True})
    time.sleep(0.05)
    run("20260101-000001", {"interrupted": False})
    found, tag = find_resume(tmp_path, "edit", None)
    assert found.path == cut and tag == "step000004"
    shutil.rmtree(cut)
    with pytest.raises(UserError, match="no unfinished run of 'edit'"):
        find_resume(tmp_path, "edit", None)

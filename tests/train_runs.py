"""Running train.py from tests: one process, or 2 processes under the DeepSpeed launcher on the CPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEEPSPEED = shutil.which("deepspeed", path=str(Path(sys.executable).parent)) or shutil.which("deepspeed")


def run_train(job: Path, *overrides: str, launcher: str = "python", out: str, timeout: int = 900,
              extra: tuple = ()) -> subprocess.CompletedProcess:
    """train.py on `job/edit.toml` with output_dir = `out`, `--set` overrides and `extra` arguments."""
    args = ["--config", str(job / "edit.toml"), "--set", f"output_dir='{out}'", *extra]
    for o in overrides:
        args += ["--set", o]
    if launcher == "python":
        cmd = [sys.executable, "train.py", *args]
    else:  # a port per test process, so concurrent test runs on one machine do not collide
        cmd = [DEEPSPEED, "--num_gpus", "2", "--master_port", str(29500 + os.getpid() % 1000), "train.py", *args]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def run_folder(out: Path, name: str = "tiny") -> Path:
    """The one run folder train.py made under `out/name/`."""
    (run,) = [p for p in (out / name).iterdir() if p.is_dir()]
    return run

"""DeepSpeed's CPU op is built once per Python environment: its torch-extensions cache is this environment's own,
so a second virtualenv on the same checkout cannot make every run rebuild it (issue 22)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from engine.train.distributed import extensions_dir, use_environment_extensions_dir

REPO = Path(__file__).resolve().parents[1]
SETUP = ("import json, os\nfrom engine.train import distributed\nd = distributed.setup()\n"
         "print(json.dumps([os.environ['TORCH_EXTENSIONS_DIR'], d.world_size]))")


def test_each_environment_has_its_own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    here, ci = extensions_dir("/checkout/.venv"), extensions_dir("/checkout/.ci/venv")
    assert here != ci and here == extensions_dir("/checkout/.venv")
    assert here.parent == tmp_path / "torch_extensions" and ".venv" in here.name and "venv" in ci.name


def test_a_cache_the_user_chose_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "mine"))
    assert use_environment_extensions_dir() == tmp_path / "mine"


def _setup_once() -> tuple[Path, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_EXTENSIONS_DIR", "RANK", "WORLD_SIZE")}
    env.update(DS_ACCELERATOR="cpu", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", SETUP], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder, world = json.loads(proc.stdout.strip().splitlines()[-1])
    return Path(folder), world


def test_a_single_process_run_uses_this_environments_cache_and_a_second_run_builds_nothing():
    folder, world = _setup_once()
    assert world == 1 and folder == extensions_dir()
    built = sorted((folder / "deepspeed_shm_comm").glob("*.so"))
    assert built, f"no op in {folder}"
    ninja = (folder / "deepspeed_shm_comm" / "build.ninja").read_text()
    import torch

    assert str(Path(torch.__file__).parent / "include") in ninja  # built against this environment's torch
    stamps = {p: p.stat().st_mtime_ns for p in built}
    again, _ = _setup_once()
    assert again == folder
    assert {p: p.stat().st_mtime_ns for p in sorted((folder / "deepspeed_shm_comm").glob("*.so"))} == stamps

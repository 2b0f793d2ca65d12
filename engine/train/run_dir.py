"""A training run's folder: `output_dir/<name>/<timestamp>/` with LoRA files, config, events, checkpoints."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from config.errors import UserError

CHECKPOINTS = "checkpoints"


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @classmethod
    def new(cls, output_dir: str | Path, name: str) -> RunDir:
        base = Path(output_dir) / name
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path, n = base / stamp, 1
        while path.exists():  # two runs in one second
            n += 1
            path = base / f"{stamp}-{n}"
        path.mkdir(parents=True)
        return cls(path)

    def latest_checkpoint_tag(self) -> str | None:
        latest = self.checkpoints / "latest"
        return latest.read_text().strip() if latest.exists() else None

    def prune_checkpoints(self, keep: int = 2, folder: Path | None = None) -> None:
        """Keep the newest `keep` engine checkpoints (they hold optimizer state, and add up) in `folder` (default:
        checkpoints/; an expert's subfolder when a family has several)."""
        tags = sorted(p for p in (folder or self.checkpoints).glob("step*") if p.is_dir())
        for old in tags[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def find_resume(output_dir: str | Path, name: str, given: str | None) -> tuple[RunDir, str]:
    """`--resume` (newest run of this job with a checkpoint) or `--resume DIR` (a run folder or its
    checkpoints folder) -> (run folder, checkpoint tag)."""
    if given:
        p = Path(given)
        if p.name == CHECKPOINTS:
            p = p.parent
        run = RunDir(p)
        tag = run.latest_checkpoint_tag()
        if tag is None:
            raise UserError(f"--resume {given}: no checkpoint there (expected {run.checkpoints}/latest)")
        return run, tag
    runs = sorted((Path(output_dir) / name).glob("*/checkpoints/latest"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise UserError(f"--resume: no run of '{name}' with a checkpoint under {Path(output_dir) / name}")
    run = RunDir(runs[-1].parent.parent)
    return run, run.latest_checkpoint_tag()

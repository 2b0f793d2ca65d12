"""A training run's folder: `output_dir/<name>/<timestamp>/` with LoRA files, config, events, checkpoints."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from config.atomic import trim_jsonl
from config.errors import UserError
from engine.train.checkpoint import TAG, read_latest

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
        """A fresh `output_dir/name/<timestamp>[-N]/`. The folder is claimed with an exclusive mkdir, so two runs
        started in the same second (two processes, two machines on one shared disk) get different folders."""
        base = Path(output_dir) / name
        if not base.resolve().is_relative_to(Path(output_dir).resolve()):
            raise UserError(f"name = {name!r}: the run folder {base} would lie outside output_dir {output_dir}")
        base.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1, 10_000):
            path = base / (stamp if n == 1 else f"{stamp}-{n}")
            try:
                path.mkdir()  # atomic: exactly one caller creates it, every other one gets FileExistsError
            except FileExistsError:
                continue
            return cls(path)
        raise UserError(f"{base}: 10,000 runs started in the second {stamp}; cannot claim a run folder")

    def trim_metrics(self, step: int) -> None:
        """Drop metrics.jsonl lines after `step` (and a torn last line): a run killed after its last checkpoint
        logged steps that the resumed run trains and logs again."""
        trim_jsonl(self.path / "metrics.jsonl", step)

    def latest_checkpoint_tag(self) -> str | None:
        return read_latest(self.checkpoints)

    def prune_checkpoints(self, keep: int = 2) -> None:
        """Keep the newest `keep` checkpoints (they hold optimizer state, and add up), and always the one `latest`
        names."""
        latest = read_latest(self.checkpoints)
        tags = sorted((p for p in self.checkpoints.glob("step*") if TAG.match(p.name) and p.is_dir()
                       and p.name != latest), key=lambda p: int(p.name[4:]))
        for old in tags[:max(0, len(tags) - (keep - 1))]:
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
    # A finished run keeps its last checkpoint too: plain --resume continues an unfinished one (interrupted, or
    # whose final LoRA could not be written: no summary.json then).
    runs = [p for p in runs if not _finished(p.parent.parent)]
    if not runs:
        raise UserError(f"--resume: no unfinished run of '{name}' with a checkpoint under {Path(output_dir) / name}")
    run = RunDir(runs[-1].parent.parent)
    return run, run.latest_checkpoint_tag()


def _finished(run: Path) -> bool:
    try:
        return json.loads((run / "summary.json").read_text()).get("interrupted") is False
    except (OSError, ValueError, AttributeError):
        return False

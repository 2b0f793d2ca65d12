"""The page's workspace: one folder that holds everything the page reads and writes.

  WORKSPACE/jobs/<name>/     job folders, exactly as prepare.py makes them (train.py / infer.py run them as is)
  WORKSPACE/page/<name>/     the page's own state per job: the inputs it was made from (inputs/), the
                             pictures it rendered (view/), its background tasks and their logs (tasks/)
  WORKSPACE/videos/          clips to pick from (any video the user copies there)
  WORKSPACE/models/          model folders to pick from (besides the folders given with --model-dir)

Every path the page touches is resolved (symlinks included) and must lie inside the workspace; model
folders may also lie inside a --model-dir root, read only. Names typed in the page are plain names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from config.atomic import write_atomic
from config.errors import UserError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


class PageError(UserError):
    """Something the user did in the page that cannot be done; the message is shown in the page."""


def check_name(name: str, what: str = "job name") -> str:
    name = (name or "").strip()
    if not NAME.match(name):
        raise PageError(f"{what} {name!r}: use 1-64 letters, digits, '.', '_' or '-' (starting with a letter or digit)")
    return name


def inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


@dataclass
class Workspace:
    root: Path
    model_roots: list[Path] = field(default_factory=list)  # read-only folders of models (--model-dir)

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser().resolve()
        self.model_roots = [Path(p).expanduser().resolve() for p in self.model_roots]
        for sub in ("jobs", "page", "videos", "models"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------------ confinement
    def confine(self, path: str | Path, what: str = "path") -> Path:
        """`path` (relative to the workspace, or absolute) resolved, if it lies inside the workspace."""
        p = Path(path).expanduser()
        p = (p if p.is_absolute() else self.root / p).resolve()
        if not inside(p, self.root):
            raise PageError(f"{what} {path}: outside the workspace {self.root}; the page only uses files in there")
        return p

    def confine_model(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        p = (p if p.is_absolute() else self.root / p).resolve()
        if not any(inside(p, r) for r in [self.root, *self.model_roots]):
            raise PageError(f"model folder {path}: not in the workspace nor in a --model-dir folder")
        if not p.is_dir():
            raise PageError(f"model folder {path}: no such folder")
        return p

    # ------------------------------------------------------------------------------ layout
    def job_dir(self, name: str) -> Path:
        return self.root / "jobs" / check_name(name)

    def page_dir(self, name: str) -> Path:
        return self.root / "page" / check_name(name)

    def inputs_dir(self, name: str) -> Path:
        return self.page_dir(name) / "inputs"

    def view_dir(self, name: str) -> Path:
        return self.page_dir(name) / "view"

    def tasks_dir(self, name: str) -> Path:
        return self.page_dir(name) / "tasks"

    def is_job(self, name: str) -> bool:
        return (self.job_dir(name) / "edit.toml").is_file()

    def names(self) -> list[str]:
        """Jobs (folders with edit.toml) and drafts (page state without a job yet), sorted by name."""
        found = {p.parent.name for p in (self.root / "jobs").glob("*/edit.toml")}
        found |= {p.name for p in (self.root / "page").iterdir() if p.is_dir()}
        return sorted(n for n in found if NAME.match(n))

    def videos(self) -> list[str]:
        """Clips in WORKSPACE/videos, as paths relative to the workspace."""
        return sorted(str(p.relative_to(self.root)) for p in (self.root / "videos").rglob("*")
                      if p.suffix.lower() in VIDEO_EXTS and p.is_file() and inside(p, self.root))

    def models(self) -> list[Path]:
        """Model folders: each --model-dir that is a model itself, and the model folders directly inside
        it or inside WORKSPACE/models."""
        out: list[Path] = []
        for root in [*self.model_roots, self.root / "models"]:
            for p in [root, *sorted(root.iterdir() if root.is_dir() else [])]:
                if p.is_dir() and is_model_folder(p) and p not in out:
                    out.append(p)
        return out

    # ------------------------------------------------------------------------------ page state
    def settings(self, name: str) -> dict:
        path = self.page_dir(name) / "settings.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def save_settings(self, name: str, **changes: object) -> dict:
        settings = {**self.settings(name), **changes}
        write_atomic(self.page_dir(name) / "settings.json", json.dumps(settings, indent=1))
        return settings

    def last_job(self) -> str | None:
        try:
            name = (self.root / "page" / ".last").read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return name if NAME.match(name) and name in self.names() else None

    def remember(self, name: str) -> None:
        write_atomic(self.root / "page" / ".last", name)


def is_model_folder(p: Path) -> bool:
    """A diffusers folder or an original Wan / HunyuanVideo release (the markers models.detect_family reads;
    checked here without importing torch, so listing stays fast)."""
    markers = (p / "model_index.json", p / "Wan2.1_VAE.pth", p / "hunyuan-video-i2v-720p")
    return markers[0].is_file() or markers[1].is_file() or markers[2].is_dir()

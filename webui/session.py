"""What the page knows about one job: its page state (settings.json) and, once made, its job folder.

Handlers return dicts keyed by component names (see webui.page); values are plain Python, so the
handlers run in tests without a browser. A PageError becomes the message of the step it came from.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from config.atomic import atomic_path
from webui.backend import TOY_MODEL, is_toy
from webui.jobfiles import JobInfo
from webui.tasks import Tasks
from webui.workspace import PageError, Workspace, check_name

FRAME_CHOICES = [4 * k + 1 for k in range(1, 21)]  # 5 .. 81 frames: 4k+1, the VAE's rule
# A long clip (more frames than one window, made in chained windows): the page holds every frame of it at the
# job's size in memory for its views, so it stops at 30 s at 16 fps; prepare.py --window has no such limit.
MAX_LONG_FRAMES = 481


@dataclass
class Limits:
    max_video_bytes: int = 2 * 2**30


def family_of(model: str | Path) -> str:
    from models.registry import detect_family  # imports torch: only when a model is looked at

    return detect_family(model) or "wan"


def clip_defaults(model: str | Path, src_w: int, src_h: int) -> dict:
    """Frames, fps and size for a clip on a model: the toy model's small CPU settings, else the family's."""
    if is_toy(model):  # about the toy's training size (32x32), the short side 32, the clip's aspect kept
        short, long_ = 32, max(32, round(32 * max(src_w, src_h) / min(src_w, src_h) / 16) * 16)
        size = (long_, short) if src_w >= src_h else (short, long_)
        return {"frames": 9, "fps": 16.0, "size": f"{size[0]}x{size[1]}"}
    from models.registry import default_size
    from models.registry import family as family_spec

    name = family_of(model)
    w, h = default_size(src_w, src_h, name)
    spec = family_spec(name)
    return {"frames": spec.default_frames, "fps": spec.default_fps, "size": f"{w}x{h}"}


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in str(text).lower().replace(" ", "").split("x"))
    except ValueError:
        raise PageError(f"size {text!r}: write it as WIDTHxHEIGHT, e.g. 832x480") from None
    if w <= 0 or h <= 0 or w % 16 or h % 16:
        raise PageError(f"size {w}x{h}: both sides must be positive multiples of 16 (the model's patch grid)")
    return w, h


def copy_in(src: Path, dest: Path) -> Path:
    """Copy an accepted upload into the page state, atomically (temp name, then rename)."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return dest


class Session:
    """The handlers' shared ground: the workspace, the background tasks, the limits."""

    def __init__(self, ws: Workspace, limits: Limits | None = None, default_model: Path | None = None) -> None:
        self.ws = ws
        self.tasks = Tasks(ws)
        self.limits = limits or Limits()
        models = ws.models()
        self.default_model = default_model or (TOY_MODEL if TOY_MODEL in models else (models[0] if models else None))

    # ------------------------------------------------------------------------------------ job state
    def require_job(self, job: str | None) -> str:
        if not job:
            raise PageError("make a new job or open one first (at the top of the page)")
        name = check_name(job)
        if not self.ws.page_dir(name).is_dir() and not self.ws.is_job(name):
            raise PageError(f"job {name}: not found in {self.ws.root / 'jobs'}")
        return name

    def job_info(self, job: str) -> JobInfo | None:
        return JobInfo.read(self.ws.job_dir(job)) if self.ws.is_job(job) else None

    def made_by_page(self, job: str) -> bool:
        return bool(self.ws.settings(job).get("clip"))

    def model_of(self, job: str) -> str:
        info = self.job_info(job)
        if info and info.model:
            return info.model
        return self.ws.settings(job).get("model") or (str(self.default_model) if self.default_model else "")

    def model_choices(self) -> list[tuple[str, str]]:
        out = []
        for p in self.ws.models():
            label = "toy model (CPU demo)" if is_toy(p) else (str(p.relative_to(self.ws.root))
                                                                if p.is_relative_to(self.ws.root) else p.name)
            out.append((label, str(p)))
        return out

    def new_job(self, name: str) -> str:
        name = check_name(name)
        if name in self.ws.names():
            raise PageError(f"job {name} exists already: open it, or choose another name")
        self.ws.page_dir(name).mkdir(parents=True)
        self.ws.save_settings(name, model=str(self.default_model) if self.default_model else "")
        self.ws.remember(name)
        return name

    def writable(self, job: str) -> JobInfo:
        """The job folder, if the page may run it: made, and writing nowhere outside the workspace."""
        info = self.job_info(job)
        if info is None:
            raise PageError(f"job {job} is not made yet: finish steps 1-3 and press 'Make the job'")
        outside = info.outside(self.ws.root)
        if outside:
            raise PageError(f"job {job} writes outside the workspace ({'; '.join(outside)}); the page does not run "
                            f"it - use train.py / infer.py, or set those paths inside the job folder")
        return info

"""What prepare.py is asked to make: `PrepareRequest`, the job function's input (a CLI or a web page fills it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from config.loader import parse_override
from config.schema import Config
from datasets.prepare.captions import DEFAULT_TASK
from masks.auto import AutoMaskSettings
from models.registry import DEFAULT_FAMILY, detect_family, family, names


@dataclass
class PrepareRequest:
    video: Path
    edited_frame: Path
    out: Path
    mask: Path | None = None
    auto_mask: bool = False
    auto: AutoMaskSettings = field(default_factory=AutoMaskSettings)
    sam2: Path | None = None
    sam2_points: list[tuple[float, float, int]] = field(default_factory=list)  # source pixels
    sam2_box: tuple[float, float, float, float] | None = None  # source pixels
    reference_frames: Path | None = None
    caption: str | None = None
    edited_caption: str | None = None
    caption_file: Path | None = None
    caption_model: Path | None = None
    caption_task: str = DEFAULT_TASK
    caption_max_tokens: int = 96
    trigger: str = Config().data.trigger
    frames: int = 0  # 0: the model family's (49 for Wan2.1 and HunyuanVideo); with `window`: the whole clip
    window: int = 0  # a long job's model window (data.window); 0: the job is one window
    fps: float = 0.0  # 0: the model family's rate (Wan 16, HunyuanVideo 24)
    source_fps: float | None = None  # image-folder sources: their frame rate (default: fps)
    start: float = 0.0
    size: tuple[int, int] | None = None  # None: the family's size (Wan: 832x480 landscape / 480x832 portrait)
    resize_mode: str = "crop"
    mask_threshold: float = 0.5
    mask_dilate: int = 0
    mask_bbox: bool = False
    model: Path | None = None
    family: str = ""  # model.type; "": from --set model.type, else detected from --model, else wan
    overrides: list[str] = field(default_factory=list)
    force: bool = False
    preview: bool = True
    progress: bool = True  # report progress (to the callback prepare_job is given); False: report nothing

    def __post_init__(self) -> None:
        for name in ("video", "edited_frame", "out", "mask", "sam2", "reference_frames", "caption_file",
                     "caption_model", "model"):
            value = getattr(self, name)
            if value is not None:  # str from Python callers; '~' from quoted shell arguments
                setattr(self, name, Path(value).expanduser())
        self.family = self.family or _family(self.overrides, self.model)
        spec = family(self.family)
        self.fps = self.fps or spec.default_fps
        self.frames = self.frames or (0 if self.window else spec.default_frames)


def _family(overrides: list[str], model: Path | None) -> str:
    """The job's model family: a `--set model.type=...` wins, then what the --model folder holds, then Wan."""
    for text in overrides:
        keys, value = parse_override(text)
        if keys == ["model", "type"] and value in names():
            return value
    return (detect_family(model) if model else None) or DEFAULT_FAMILY

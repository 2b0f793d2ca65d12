"""What the page shows and checks: uploads, the clip's window, the mask over the whole clip.

Frames and masks come from the project's own loader (`datasets.job.load_job` on a config), so the
page shows exactly the pixels and the edit region that training will see (resampling, crop or pad,
mask dilation and boxes included). Checks run before anything is written: a bad upload leaves the
workspace as it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from config.atomic import atomic_path
from webui.workspace import VIDEO_EXTS, PageError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")
MAX_IMAGE_BYTES = 50 * 2**20
# Overlay colours to pick from: the one farthest from the masked pixels' mean colour is used.
PALETTE = {"magenta": (255, 0, 255), "cyan": (0, 255, 255), "yellow": (255, 235, 0), "blue": (30, 80, 255),
           "green": (0, 230, 60), "red": (255, 30, 30)}
VIEW_WIDTH = 384  # views of tiny jobs are enlarged (nearest) to about this width


@dataclass
class VideoFacts:
    width: int
    height: int
    fps: float
    duration: float
    frames: int

    def describe(self) -> str:
        return f"{self.width}x{self.height}, {self.fps:.4g} fps, {self.duration:.2f} s ({self.frames} frames)"


def _size_text(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB"


def check_video(path: Path, max_bytes: int, shown_name: str | None = None) -> VideoFacts:
    """A video file the project can decode, within the size limit; PageError otherwise."""
    import media  # av, cv2: loaded when first needed

    name = shown_name or path.name
    if path.suffix.lower() not in VIDEO_EXTS:
        raise PageError(f"{name}: not a video file (expected {', '.join(VIDEO_EXTS)})")
    size = path.stat().st_size
    if size > max_bytes:
        raise PageError(f"{name}: {_size_text(size)} is more than the {_size_text(max_bytes)} upload limit")
    try:
        info = media.probe_video(path)
    except media.MediaError as e:
        raise PageError(f"{name}: not a video this page can read ({str(e).split(': ', 1)[-1]})") from None
    if not info.fps or info.duration <= 0:
        raise PageError(f"{name}: the video has no frame rate or duration")
    return VideoFacts(info.width, info.height, info.fps, info.duration, info.num_frames)


def check_window(facts: VideoFacts, start: float, frames: int, fps: float, name: str, long: bool = False) -> None:
    """The job's frames (frames at fps from start) must lie inside the clip; a long clip's count is free, a
    one-window job's is 4k+1."""
    need = start + (frames - 1) / fps
    if start < 0 or need >= facts.duration:
        have = max(0, int((facts.duration - start) * fps))
        most = have if long else max(1, (have - 1) // 4 * 4 + 1)
        hint = f"at most {most} frames" if have else "an earlier start"
        raise PageError(f"{name}: {frames} frames at {fps:g} fps from {start:g} s need {frames / fps:.2f} s, "
                        f"the clip has {max(facts.duration - start, 0):.2f} s from there; choose {hint}")


def read_image(path: Path, what: str, shown_name: str | None = None) -> np.ndarray:
    """An uploaded image as uint8 RGB [H, W, 3]; PageError if it is not an image or too large."""
    name = shown_name or path.name
    if path.suffix.lower() not in IMAGE_EXTS:
        raise PageError(f"{what} {name}: not an image (expected {', '.join(IMAGE_EXTS)})")
    if path.stat().st_size > MAX_IMAGE_BYTES:
        raise PageError(f"{what} {name}: more than {_size_text(MAX_IMAGE_BYTES)}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA"):  # composited onto black, as the project reads images
                im = Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), im.convert("RGBA"))
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise PageError(f"{what} {name}: not an image this page can read ({e})") from None


def check_frame_size(img: np.ndarray, source: tuple[int, int], job: tuple[int, int], what: str, name: str) -> None:
    """An edited frame must be at the job's size or have the source's aspect ratio (prepare maps it through
    the clip's crop/pad); anything else would be stretched, so it is refused here with both sizes named."""
    h, w = img.shape[:2]
    (sw, sh), (jw, jh) = source, job
    if (w, h) == (jw, jh) or abs((w / h) / (sw / sh) - 1.0) <= 0.01:
        return
    raise PageError(f"{what} {name} is {w}x{h}: export it at the clip's size {sw}x{sh} (or the job's {jw}x{jh})")


def first_frame(video: Path, start: float) -> np.ndarray:
    """The source frame on screen at `start`, at the source's resolution (to paint or click on)."""
    import media

    return media.read_video_at(video, np.array([start])).frames[0]


def mask_from_editor(value: dict | None, size: tuple[int, int]) -> np.ndarray:
    """The painted region of a gr.ImageEditor value (any brush stroke in any layer) as bool [H, W]."""
    w, h = size
    layers = (value or {}).get("layers") or []
    mask = np.zeros((h, w), dtype=bool)
    for layer in layers:
        arr = np.asarray(layer)
        if arr.ndim == 3 and arr.shape[2] == 4 and arr.shape[:2] == (h, w):
            mask |= arr[..., 3] > 0
    if not mask.any():
        raise PageError("the mask is empty: paint over everything that may change (in every frame of the window), "
                        "then save it")
    return mask


def write_mask_png(mask: np.ndarray, path: Path) -> None:
    """White = may change, the convention prepare.py's --mask reads."""
    with atomic_path(path) as tmp:
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG")


def write_png(img: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")


# ---------------------------------------------------------------------------------------- the job's view
def _toml_str(p: Path | str) -> str:
    return json.dumps(str(p))  # a TOML basic string


def draft_overrides(video: Path, mask: Path | None, start: float, frames: int, fps: float, size: tuple[int, int],
                    resize_mode: str, dilate: int, bbox: bool, family: str, window: int = 0) -> list[str]:
    sets = [f"model.type={_toml_str(family)}", f"data.video={_toml_str(video)}", f"data.fps={fps}",
            f"data.frames={frames}", f"data.window={window}", f"data.start={start}", f"data.width={size[0]}",
            f"data.height={size[1]}",
            f"data.resize_mode={_toml_str(resize_mode)}", f"data.mask_dilate={dilate}",
            f"data.mask_bbox={'true' if bbox else 'false'}"]
    return sets + ([f"data.mask={_toml_str(mask)}"] if mask else [])


def load_view(edit_toml: Path | None, overrides: list[str] = ()) -> tuple[np.ndarray, np.ndarray, float]:
    """(frames uint8 [T, H, W, 3], edit mask bool [T, H, W], fps) as training sees them, for a job folder
    (its edit.toml) or a draft (overrides only)."""
    import warnings

    from config.loader import load_config
    from datasets.job import load_job

    cfg = load_config(edit_toml, overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the page reports coverage itself
        job = load_job(cfg, edited=False)
    return job.frames, job.edit_mask, job.fps


def contrast_colour(frames: np.ndarray, mask: np.ndarray) -> tuple[str, tuple[int, int, int]]:
    """The palette colour farthest (in RGB) from the mean colour under the mask (the whole frame if empty)."""
    region = frames[mask] if mask.any() else frames.reshape(-1, 3)
    mean = region.reshape(-1, 3).mean(0)
    name = max(PALETTE, key=lambda k: float(np.sum((np.asarray(PALETTE[k]) - mean) ** 2)))
    return name, PALETTE[name]


def overlay(frames: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], alpha: float = 0.5) -> np.ndarray:
    """Tint the edit region and draw its outline at full strength, on views enlarged for small jobs."""
    scale = max(1, VIEW_WIDTH // frames.shape[2])
    big = frames.repeat(scale, 1).repeat(scale, 2) if scale > 1 else frames.copy()
    m = mask.repeat(scale, 1).repeat(scale, 2) if scale > 1 else mask
    c = np.asarray(colour, dtype=np.float32)
    out = big.copy()
    out[m] = (big[m].astype(np.float32) * (1 - alpha) + c * alpha + 0.5).astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    for i in range(len(out)):
        edge = m[i] & ~cv2.erode(m[i].astype(np.uint8), kernel).astype(bool)
        out[i][edge] = colour
    return out


def sheet(frames: np.ndarray, columns: int = 9, max_width: int = 1800) -> np.ndarray:
    """Up to `columns` evenly spaced frames side by side, 2 px apart, at most `max_width` wide."""
    picks = np.unique(np.linspace(0, len(frames) - 1, min(columns, len(frames))).round().astype(int))
    h, w = frames.shape[1:3]
    if len(picks) * w > max_width:
        w2 = max_width // len(picks)
        h, w = max(1, round(h * w2 / w)), w2
        frames = np.stack([cv2.resize(frames[i], (w, h), interpolation=cv2.INTER_AREA) for i in picks])
        picks = np.arange(len(picks))
    out = np.full((h, len(picks) * (w + 2) - 2, 3), 24, dtype=np.uint8)
    for k, i in enumerate(picks):
        out[:, k * (w + 2):k * (w + 2) + w] = frames[i]
    return out


def write_view(frames: np.ndarray, mask: np.ndarray, fps: float, folder: Path, stem: str) -> dict:
    """The mask over the whole clip as an mp4 and a contact sheet; returns paths, colour and coverage."""
    import media

    name, colour = contrast_colour(frames, mask)
    shown = overlay(frames, mask, colour)
    video, picture = folder / f"{stem}.mp4", folder / f"{stem}.png"
    media.write_video(video, shown, fps, preset="veryfast")
    write_png(sheet(shown), picture)
    cov = mask.reshape(len(mask), -1).mean(1)
    return {"video": video, "sheet": picture, "colour": name, "coverage": (float(cov.min()), float(cov.max())),
            "empty_frames": [int(i) for i in np.flatnonzero(cov == 0)]}


def describe_view(view: dict) -> str:
    lo, hi = view["coverage"]
    text = f"The {view['colour']} region may change: {lo:.1%} to {hi:.1%} of each frame."
    if view["empty_frames"]:
        text += (f" It is empty in {len(view['empty_frames'])} frame(s) (first: {view['empty_frames'][0]}): nothing "
                 f"may change there - paint over the object's whole path, or grow the mask.")
    return text

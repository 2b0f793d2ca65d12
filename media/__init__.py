"""Video / image I/O, frame-time resampling, resizing and writing: the floor below masks/ and datasets/.

Conventions (relied on by masks/ and the sample builder):

* Frames are uint8 RGB numpy arrays ``[T, H, W, 3]``; timestamps are float64 seconds measured from
  the start of the stream (also for a window decoded after a seek), so windows of a video and of its
  mask video line up by time.
* ``Clip.end_time`` is when the last frame stops being shown (the next frame's time if decoding
  stopped at a window end, else last timestamp + frame duration; ``inf`` for a single still image).
* Images: any PIL mode -> RGB uint8. Alpha (RGBA, LA, P with transparency) is composited onto
  **black** (straight alpha: ``rgb * a / 255``), so a white-on-transparent mask layer reads as a
  white-on-black mask. 16-bit modes (``I;16*``, ``I``) are scaled by 255/65535; ``F`` is taken as
  [0, 1]. The EXIF orientation of photos and the display rotation of videos are applied.
* ``fit_size`` pads with black (0) in "pad" mode; masks are padded with 0 (= keep).
* Every decoding failure raises :class:`MediaError` (a ``config.errors.UserError``) whose message
  starts with the file name.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image, ImageOps

from config.atomic import atomic_path
from config.errors import UserError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")
DEFAULT_NUM_FRAMES = 49
MAX_NUM_FRAMES = 81
SIZE_MULTIPLE = 16
_PNG_NAME = re.compile(r"^\d+\.png$")


class MediaError(UserError):
    """Unreadable, empty or inconsistent media. The message names the file. A UserError, so the
    entry points print it on one line and exit with code 2."""


@dataclass
class Clip:
    frames: np.ndarray  # uint8 [T, H, W, 3] RGB ([T, H, W] for pixel_format="gray")
    timestamps: np.ndarray  # float64 [T], seconds from the stream start, non-decreasing
    fps: float  # nominal source rate (stream rate, or the rate given for image sequences)
    end_time: float  # time at which the last frame stops being shown
    path: str

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


# ----------------------------------------------------------------------------------------- images


def natural_key(name: str) -> list:
    """Sort key so that frame2 < frame10 (digit runs compare as integers)."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name.lower())]


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of a folder (png/jpg/jpeg/webp, hidden files skipped), naturally sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MediaError(f"{folder}: not a folder")
    files = [
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")
    ]
    if not files:
        raise MediaError(f"{folder}: no image files ({', '.join(IMAGE_EXTS)})")
    return sorted(files, key=lambda p: natural_key(p.name))


def _open_image(path: Path) -> Image.Image:
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    try:
        im = Image.open(path)
        im.load()
    except Exception as e:  # PIL raises many types for corrupt files
        raise MediaError(f"{path}: cannot read image ({e})") from e
    return ImageOps.exif_transpose(im)


def _image_to_float_rgba(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """(values [H, W] or [H, W, 3] in [0, 1] float32, alpha [H, W] in [0, 1] or None) at native depth."""
    if im.mode.startswith("I;16") or im.mode == "I":
        return np.clip(np.asarray(im, dtype=np.float32) / 65535.0, 0.0, 1.0), None
    if im.mode == "F":
        return np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0), None
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    if has_alpha:
        return arr[..., :3], arr[..., 3]
    return arr, None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Any image -> uint8 RGB [H, W, 3] (alpha composited onto black, 16-bit scaled)."""
    path = Path(path)
    im = _open_image(path)
    if im.mode in ("RGB", "L"):  # fast path, the common case
        return np.array(im.convert("RGB"))
    vals, alpha = _image_to_float_rgba(im)
    if vals.ndim == 2:
        vals = np.repeat(vals[..., None], 3, axis=2)
    if alpha is not None:
        vals = vals * alpha[..., None]
    return np.clip(np.rint(vals * 255.0), 0, 255).astype(np.uint8)


def read_image_luma(path: str | os.PathLike) -> np.ndarray:
    """Luminance in [0, 1] float32 [H, W] at the file's native depth (masks threshold this).

    RGB uses the Rec.601 weights (as PIL's "L"); alpha multiplies it (composite onto black)."""
    path = Path(path)
    vals, alpha = _image_to_float_rgba(_open_image(path))
    if vals.ndim == 3:
        vals = vals @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if alpha is not None:
        vals = vals * alpha
    return vals.astype(np.float32, copy=False)


def read_image_sequence(
    folder: str | os.PathLike, fps: float, start: float = 0.0, duration: float | None = None
) -> Clip:
    """Naturally sorted image folder; frame k is at k / fps. Only files in the window are read."""
    if not fps or fps <= 0:
        raise ValueError(f"{folder}: an image sequence needs a positive fps, got {fps}")
    files = list_image_files(folder)
    times = np.arange(len(files), dtype=np.float64) / fps
    end = len(files) / fps
    lo, hi = _window_bounds(times, start, duration, 1.0 / fps)
    frames = [read_image(p) for p in files[lo:hi]]
    shape = frames[0].shape
    for p, f in zip(files[lo:hi], frames):
        if f.shape != shape:
            raise MediaError(f"{p}: size {f.shape[1]}x{f.shape[0]} differs from {shape[1]}x{shape[0]}")
    end_time = times[hi] if hi < len(files) else end
    return Clip(np.stack(frames), times[lo:hi], float(fps), float(end_time), str(folder))


def _window_bounds(times: np.ndarray, start: float, duration: float | None, step: float) -> tuple[int, int]:
    """Index range of the frames needed to show [start, start + duration): the frame on screen at
    `start` and every later frame that starts before the end."""
    eps = _default_eps(step)
    lo = max(int(np.searchsorted(times, start + eps, side="right")) - 1, 0)
    hi = len(times) if duration is None else int(np.searchsorted(times, start + duration - eps, side="left"))
    return lo, max(hi, lo + 1)


# ----------------------------------------------------------------------------------------- video


@dataclass
class VideoInfo:
    width: int  # as displayed (rotation applied)
    height: int
    fps: float
    duration: float  # seconds from container metadata (may be approximate)
    num_frames: int  # from metadata, 0 when the container does not say


class _SeekFailed(Exception):
    pass


def _stream_fps(stream: av.video.stream.VideoStream) -> float:
    # guessed_rate (av_guess_frame_rate) is right for raw streams whose average_rate is a default 25.
    for rate in (stream.guessed_rate, stream.average_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def _open_video(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty (0 bytes)")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{path}: cannot open as video ({e})") from e
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path}: no video stream")
    return container


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size (as displayed), rate, duration and frame count from metadata; decodes only the first
    frame (for its rotation, and to fail early on undecodable files)."""
    path = Path(path)
    with _open_video(path) as c:
        s = c.streams.video[0]
        fps = _stream_fps(s)
        if s.duration is not None and s.time_base is not None:
            duration = float(s.duration * s.time_base)
        else:
            duration = c.duration / av.time_base if c.duration else 0.0
        w, h = s.codec_context.width, s.codec_context.height
        try:
            first = next(c.decode(s))
        except (StopIteration, av.FFmpegError) as e:
            raise MediaError(f"{path}: no decodable video frames") from e
        if round((first.rotation or 0) / 90) % 2:
            w, h = h, w
        frames = s.frames or (round(duration * fps) if fps else 0)
        return VideoInfo(w, h, fps, duration, int(frames))


def _frames(path: Path, start: float, seek: bool) -> Iterator[tuple[float, float, av.VideoFrame, float]]:
    """Yield (time, frame duration, frame, nominal fps) from the frame on screen at `start` on.
    Times are pts * time_base from the stream start; frames without pts get previous + duration
    (and make seeking invalid, as does a seek that lands after `start`: raises _SeekFailed)."""
    with _open_video(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threading: large speedup for H.264/H.265
        tb, fps, origin = stream.time_base, _stream_fps(stream), stream.start_time
        step = 1.0 / fps if fps > 0 else 1.0 / 30.0
        eps = _default_eps(step)
        if seek:
            if origin is None or tb is None:
                raise _SeekFailed
            try:
                container.seek(origin + int(start / tb), stream=stream, backward=True, any_frame=False)
            except av.FFmpegError as e:
                raise _SeekFailed from e
        prev = None  # (time, duration, frame) held until we know whether it is on screen at `start`
        try:
            for frame in container.decode(stream):
                if frame.pts is not None and tb is not None:
                    origin = frame.pts if origin is None else origin
                    t = float((frame.pts - origin) * tb)
                elif seek:
                    raise _SeekFailed
                else:
                    t = 0.0 if prev is None else prev[0] + prev[1]
                if prev is not None and t <= prev[0]:  # broken or repeated pts: keep time increasing
                    t = prev[0] + prev[1]
                elif prev is None and seek and t > start + eps:
                    raise _SeekFailed
                dur = float(frame.duration * tb) if frame.duration and tb is not None else step
                if prev is not None and t > start + eps:
                    yield prev[0], t - prev[0], prev[2], fps
                prev = (t, dur, frame)
        except av.FFmpegError as e:
            if prev is None:
                raise MediaError(f"{path}: cannot decode video ({e})") from e
            warnings.warn(f"{path}: decoding stopped early ({e})", stacklevel=3)
        if prev is None:
            raise MediaError(f"{path}: no video frames")
        yield prev[0], prev[1], prev[2], fps


def _with_seek_fallback(path: Path, start: float, consume: Callable[[Iterator], Clip]) -> Clip:
    """Run consume(frame iterator), seeking to `start` first; if the seek is unusable, decode from 0."""
    if start > 0:
        try:
            with closing(_frames(path, start, seek=True)) as it:
                return consume(it)
        except _SeekFailed:
            pass
    with closing(_frames(path, start, seek=False)) as it:
        return consume(it)


def read_video(
    path: str | os.PathLike,
    start: float = 0.0,
    duration: float | None = None,
    pixel_format: str = "rgb24",
) -> Clip:
    """Decode every frame on screen during [start, start + duration) with its real timestamp.

    With ``start > 0`` the decoder seeks to the keyframe before ``start``; frames before the window
    are not converted. ``pixel_format="gray"`` gives ``[T, H, W]`` luma. Prefer read_video_at when
    only resampled frames are needed: it converts just those."""
    path = Path(path)
    end = math.inf if duration is None else start + duration

    def consume(it: Iterator) -> Clip:
        buf: np.ndarray | None = None  # preallocated: no second full-size copy (np.stack) of the clip
        times: list[float] = []
        t, dur, fps = 0.0, 0.0, 0.0
        for t, dur, frame, fps in it:
            if times and t >= end - _default_eps(1.0 / fps if fps > 0 else dur):
                return Clip(buf[: len(times)], np.asarray(times), fps, t, str(path))
            arr = _to_array(frame, pixel_format)
            if buf is None or len(times) == len(buf):
                cap = math.ceil((end - t) * fps) + 2 if math.isfinite(end) and fps > 0 else 64
                grown = np.empty((len(times) + max(cap, len(times) // 2, 1),) + arr.shape, arr.dtype)
                if buf is not None:
                    grown[: len(times)] = buf
                buf = grown
            buf[len(times)] = arr
            times.append(t)
        return Clip(buf[: len(times)], np.asarray(times), fps, t + dur, str(path))

    return _with_seek_fallback(path, start, consume)


def read_video_at(path: str | os.PathLike, times: np.ndarray, pixel_format: str = "rgb24") -> Clip:
    """The frames on screen at the given (non-decreasing) times, one per time, decoding only up to
    the last time and converting only the frames picked. ``timestamps`` of the result are the
    source times of the picked frames (so a mask video can be aligned to them)."""
    path = Path(path)
    times = np.asarray(times, dtype=np.float64)
    if times.size == 0 or np.any(np.diff(times) < 0):
        raise ValueError("times must be non-empty and non-decreasing")

    def consume(it: Iterator) -> Clip:
        out, src = None, np.zeros(times.size)
        j, fps = 0, 0.0
        for t, dur, frame, fps in it:
            eps = _default_eps(1.0 / fps if fps > 0 else dur)
            hi = int(np.searchsorted(times, t + dur - eps, side="left"))  # targets before the next frame
            if hi > j:
                arr = _to_array(frame, pixel_format)
                if out is None:
                    out = np.empty((times.size,) + arr.shape, dtype=arr.dtype)
                out[j:hi], src[j:hi] = arr, t
                j = hi
            if j == times.size:
                return Clip(out, src, fps, t + dur, str(path))
        raise MediaError(f"{path}: ends at {t + dur:.3f}s, before the requested time {times[j]:.3f}s")

    return _with_seek_fallback(path, max(float(times[0]), 0.0), consume)


def read_video_span(path: str | os.PathLike, start: float, end: float,
                    each: Callable[[np.ndarray], np.ndarray] | None = None) -> Clip:
    """Every frame on screen from `start` through `end` (the last wanted time) at the source's own rate, each
    passed through `each` as soon as it is decoded (e.g. fitted to a job's size, so a long stretch of a 4K
    clip is never held at full resolution). ``timestamps`` are the frames' source times."""
    path = Path(path)

    def consume(it: Iterator) -> Clip:
        frames: list[np.ndarray] = []
        times: list[float] = []
        t, dur, fps = 0.0, 0.0, 0.0
        for t, dur, frame, fps in it:
            if times and t > end + _default_eps(1.0 / fps if fps > 0 else dur):
                break
            arr = _to_array(frame, "rgb24")
            frames.append(each(arr) if each is not None else arr)
            times.append(t)
        return Clip(np.stack(frames), np.asarray(times), fps, t + dur, str(path))

    return _with_seek_fallback(path, max(float(start), 0.0), consume)


def _to_array(frame: av.VideoFrame, pixel_format: str) -> np.ndarray:
    arr = frame.to_ndarray(format=pixel_format)
    k = round((frame.rotation or 0) / 90) % 4  # display matrix: counter-clockwise degrees
    if k:
        arr = np.ascontiguousarray(np.rot90(arr, k))
    return arr


def read_frames(
    path: str | os.PathLike, fps: float | None = None, start: float = 0.0, duration: float | None = None
) -> Clip:
    """Dispatch: folder -> image sequence (needs fps), image file -> one still frame, else video."""
    path = Path(path)
    if path.is_dir():
        if fps is None:
            raise ValueError(f"{path}: reading an image folder needs fps")
        return read_image_sequence(path, fps, start, duration)
    if path.suffix.lower() in IMAGE_EXTS:
        img = read_image(path)
        return Clip(img[None], np.zeros(1), float(fps or 0.0), math.inf, str(path))
    return read_video(path, start, duration)


# ------------------------------------------------------------------------------------ resampling


def _default_eps(step: float) -> float:
    # Containers round pts (Matroska to 1 ms), so a target time can fall a hair before the frame it
    # coincides with. 2 ms absorbs that; capping at a quarter interval keeps neighbours apart.
    return min(2e-3, 0.25 * step)


def _source_step(ts: np.ndarray) -> float:
    return float(np.median(np.diff(ts))) if ts.size > 1 else 1.0


def pick_frames(
    timestamps: np.ndarray, times: np.ndarray, end: float | None = None, eps: float | None = None
) -> np.ndarray:
    """For each time, the index of the frame on screen then: the latest with pts <= t + eps.
    Times before the first frame map to frame 0; times at or after ``end`` (default: last
    timestamp + median frame interval; pass ``Clip.end_time``) are an error."""
    ts = np.asarray(timestamps, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if ts.size == 0:
        raise ValueError("no source frames")
    step = _source_step(ts)
    eps = _default_eps(step) if eps is None else eps
    end = ts[-1] + step if end is None else end
    late = times >= end - eps
    if np.any(late):
        raise ValueError(
            f"time {times[late][0]:.3f}s is past the end of the source ({end:.3f}s); "
            f"{int((~late).sum())} of {times.size} requested frames are available"
        )
    idx = np.searchsorted(ts, times + eps, side="right") - 1
    return np.clip(idx, 0, ts.size - 1).astype(np.int64)


def target_times(target_fps: float, start: float, num_frames: int) -> np.ndarray:
    return start + np.arange(num_frames, dtype=np.float64) / float(target_fps)


def count_target_frames(
    timestamps: np.ndarray, target_fps: float, start: float = 0.0, end: float | None = None
) -> int:
    """How many frames at target_fps from `start` the source covers (before round_down_4k1);
    the same rule as pick_frames: target times must lie before end - eps."""
    ts = np.asarray(timestamps, dtype=np.float64)
    step = _source_step(ts)
    end = ts[-1] + step if end is None else end
    if math.isinf(end):
        raise ValueError("a still image covers any duration: give num_frames explicitly")
    x = (end - _default_eps(step) - start) * target_fps
    return max(math.ceil(x), 0)


def resample_times(
    timestamps: np.ndarray,
    target_fps: float,
    start: float = 0.0,
    num_frames: int | None = None,
    end: float | None = None,
) -> np.ndarray:
    """Source frame indices for target times start + i / target_fps (i < num_frames; all that fit
    before ``end`` when None). Apply the same indices to every stream sharing these timestamps."""
    if target_fps <= 0:
        raise ValueError(f"target_fps must be positive, got {target_fps}")
    if num_frames is None:
        num_frames = count_target_frames(timestamps, target_fps, start, end)
    return pick_frames(timestamps, target_times(target_fps, start, num_frames), end)


def is_4k1(n: int) -> bool:
    return n >= 1 and (n - 1) % 4 == 0


def round_down_4k1(n: int, warn: bool = True) -> int:
    """Largest 4k+1 <= n (the Wan/Hunyuan VAEs silently drop other frame counts)."""
    if n < 1:
        raise ValueError(f"need at least 1 frame, got {n}")
    r = (n - 1) // 4 * 4 + 1
    if r != n and warn:
        warnings.warn(f"frame count {n} is not 4k+1; using {r}", stacklevel=2)
    return r


# -------------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class FitParams:
    """Resize the source to ``resized`` (w, h), then crop (mode "crop": output window starts at
    ``offset`` inside the resized image) or pad (mode "pad": resized image placed at ``offset``)."""

    src_size: tuple[int, int]
    size: tuple[int, int]
    resized: tuple[int, int]
    offset: tuple[int, int]
    mode: str

    @property
    def scale(self) -> float:
        return self.resized[0] / self.src_size[0]


def fit_params(src_w: int, src_h: int, width: int, height: int, mode: str = "crop") -> FitParams:
    if width % SIZE_MULTIPLE or height % SIZE_MULTIPLE or width <= 0 or height <= 0:
        raise ValueError(f"size {width}x{height}: both sides must be positive multiples of {SIZE_MULTIPLE}")
    if mode not in ("crop", "pad"):
        raise ValueError(f"fit mode must be 'crop' or 'pad', got {mode!r}")
    pick = max if mode == "crop" else min
    scale = pick(width / src_w, height / src_h)
    rw, rh = round(src_w * scale), round(src_h * scale)
    # the matching side must be exact whatever the rounding
    rw = max(rw, width) if mode == "crop" else min(rw, width)
    rh = max(rh, height) if mode == "crop" else min(rh, height)
    off = (abs(rw - width) // 2, abs(rh - height) // 2)
    return FitParams((src_w, src_h), (width, height), (max(rw, 1), max(rh, 1)), off, mode)


def apply_fit(
    frames: np.ndarray | Sequence[np.ndarray],
    params: FitParams,
    interpolation: int | None = None,
    pad_value: int = 0,
) -> np.ndarray:
    """Apply a fit to a stack [T, H, W] / [T, H, W, C], or to a sequence of equally sized frames
    (e.g. ``[clip.frames[i] for i in idx]``: views, no copy of the full-resolution frames).
    Inputs of another resolution with the source's aspect ratio (e.g. a full-resolution edited
    frame) map onto the same output pixels."""
    if len(frames) == 0:
        raise ValueError("no frames to fit")
    first = np.asarray(frames[0])
    if first.ndim not in (2, 3):
        raise ValueError(f"expected frames [H, W] or [H, W, C], got shape {first.shape}")
    h, w = first.shape[:2]
    sw, sh = params.src_size
    if abs((w / h) / (sw / sh) - 1.0) > 0.01:
        raise ValueError(f"{w}x{h} does not have the aspect ratio of the source {sw}x{sh}")
    rw, rh = params.resized
    if interpolation is None:  # area for shrinking (no aliasing), cubic for enlarging
        interpolation = cv2.INTER_AREA if rw <= w else cv2.INTER_CUBIC
    W, H = params.size
    ox, oy = params.offset
    out = np.full((len(frames), H, W) + first.shape[2:], pad_value, dtype=first.dtype)
    for i, f in enumerate(frames):
        if f.shape != first.shape:
            raise ValueError(f"frame {i} has shape {f.shape}, frame 0 {first.shape}")
        r = f if (rw, rh) == (w, h) else cv2.resize(f, (rw, rh), interpolation=interpolation)
        if r.ndim < f.ndim:  # cv2 drops a trailing channel axis of size 1
            r = r[..., None]
        if params.mode == "crop":
            out[i] = r[oy:oy + H, ox:ox + W]
        else:
            out[i, oy:oy + rh, ox:ox + rw] = r
    return out


def fit_size(
    frames: np.ndarray | Sequence[np.ndarray],
    width: int,
    height: int,
    mode: str = "crop",
    interpolation: int | None = None,
    pad_value: int = 0,
) -> tuple[np.ndarray, FitParams]:
    """Scale to cover (crop) or contain (pad, with ``pad_value``, default black) and center-crop/pad
    to exactly width x height (multiples of 16). Returns the frames and the transform, which
    ``apply_fit(mask, params, cv2.INTER_NEAREST_EXACT)`` repeats on masks."""
    if len(frames) == 0:
        raise ValueError("no frames to fit")
    params = fit_params(frames[0].shape[1], frames[0].shape[0], width, height, mode)
    return apply_fit(frames, params, interpolation, pad_value), params


# --------------------------------------------------------------------------------------- writing


def _even_frames(frames: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides: replicate the last row/column when a side is odd."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] == 0:
        raise ValueError(f"expected non-empty uint8 [T, H, W, 3] frames, got {frames.dtype} {frames.shape}")
    ph, pw = frames.shape[1] % 2, frames.shape[2] % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return frames


def write_video(
    path: str | os.PathLike, frames: np.ndarray, fps: float, crf: int = 18, preset: str = "medium"
) -> None:
    """H.264 (libx264, yuv420p, BT.709 tagged) mp4 with +faststart. Written to a temporary file in
    the same folder and moved into place, so a failure never leaves a partial file."""
    path = Path(path)
    frames = _even_frames(np.asarray(frames))
    fmt = "mp4" if path.suffix.lower() in ("", ".mp4", ".m4v") else None
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format=fmt, options={"movflags": "+faststart"}) as out:
            stream = out.add_stream("libx264", rate=rate)
            stream.height, stream.width = frames.shape[1:3]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": preset}
            cc = stream.codec_context
            cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1  # BT.709, limited
            for i, arr in enumerate(frames):
                f = av.VideoFrame.from_ndarray(arr, format="rgb24")
                f = f.reformat(format="yuv420p", dst_colorspace="itu709", dst_color_range="MPEG")
                f.pts = i
                f.time_base = 1 / rate
                out.mux(stream.encode(f))
            out.mux(stream.encode(None))


def write_png_sequence(folder: str | os.PathLike, frames: np.ndarray, start_index: int = 0) -> list[Path]:
    """Write frames as 00000.png, 00001.png, ... into `folder`, atomically as a whole: files go to a
    temporary sibling folder that then replaces `folder`. An existing `folder` is replaced only if
    it holds nothing but such numbered PNGs (a previous run's output); otherwise MediaError."""
    folder = Path(folder)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 [T, H, W, 3] frames, got {frames.dtype} {frames.shape}")
    if folder.exists():
        foreign = [p.name for p in folder.iterdir() if not _PNG_NAME.match(p.name)] if folder.is_dir() else ["(a file)"]
        if foreign:
            raise MediaError(f"{folder}: exists and holds other files ({', '.join(foreign[:3])}); not replacing")
    names = []
    with atomic_path(folder) as tmp:
        tmp.mkdir()  # plain mkdir honours the umask (mkdtemp would leave the output 0700)
        for i, arr in enumerate(frames):
            p = tmp / f"{start_index + i:05d}.png"
            if not cv2.imwrite(str(p), cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)):
                raise MediaError(f"{p}: cannot write PNG")
            names.append(folder / p.name)
    return names

"""Writing a generation's results: mp4, PNG frames, side-by-side, composite and the JSON sidecar.

Everything of one generation is written into a hidden staging folder beside the outputs and moved into
place only when all of it was written, so an error never leaves half a result (or half of a result
mixed with an older one) behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import media
from masks.morphology import feather_inward
from media.viewing import enlarge, labelled_panels, outlined_overlay, view_scale

_PNG_NAME = re.compile(r"^\d+\.png$")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def frames_digest(frames: np.ndarray) -> str:
    """sha256 of uint8 frames with their shape: equal digests mean identical pixels."""
    h = hashlib.sha256(f"{frames.dtype}{frames.shape}".encode())
    h.update(np.ascontiguousarray(frames).tobytes())
    return h.hexdigest()


def composite(result: np.ndarray, background: np.ndarray, generate: np.ndarray, radius: float) -> np.ndarray:
    """Paste `background` (the kept pixels) back over `result` with a feathered mask.

    result/background uint8 [T, H, W, 3], generate bool [T, H, W] (True = generated). The feather ramps inward
    only (over `radius` pixels inside the generated region), so every kept pixel is exactly the background's;
    radius 0 is a hard paste.
    """
    if result.shape != background.shape or generate.shape != result.shape[:3]:
        raise ValueError(f"composite: shapes differ {result.shape} {background.shape} {generate.shape}")
    alpha = feather_inward(generate, radius)[..., None]
    mixed = background.astype(np.float32) * (1.0 - alpha) + result.astype(np.float32) * alpha
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def side_by_side(source: np.ndarray, result: np.ndarray, generate: np.ndarray) -> np.ndarray:
    """source | result | where it may change (a tint and outline in a colour that contrasts with the region), as
    one wide video for viewing: each panel labelled, small jobs enlarged (nearest; a 32x32 job becomes 256x256
    per panel). result.mp4 itself stays at the job's size."""
    k = view_scale(*source.shape[1:3])  # enlarged here, so the outline is drawn at the viewing size (thin)
    big = enlarge(source, k)
    shown = outlined_overlay(big, enlarge(generate[..., None], k)[..., 0])
    return labelled_panels([("source", big), ("result", enlarge(result, k)), ("may change", shown)])


class Staging:
    """A hidden folder inside `out` collecting files; `commit` moves them all into `out`."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.dir = self.out / f".partial-{uuid.uuid4().hex[:8]}"
        self.moves: list[tuple[Path, Path]] = []  # (staged, final)
        self.stale: list[Path] = []  # an earlier run's outputs this run does not replace: removed on commit

    def add(self, name: str, final: Path | None = None) -> Path:
        """A staged path for `name`, to be moved to `final` (default: out/name) on commit."""
        staged = self.dir / name
        self.moves.append((staged, Path(final) if final else self.out / name))
        return staged

    def commit(self) -> list[Path]:
        for path in self.stale:
            path.unlink(missing_ok=True)
        for staged, final in self.moves:
            final.parent.mkdir(parents=True, exist_ok=True)
            if staged.is_dir():
                _replace_frames_dir(staged, final)
            else:
                os.replace(staged, final)
        return [final for _, final in self.moves]


def _replace_frames_dir(staged: Path, final: Path) -> None:
    """Move a staged frames folder over `final`, which may only hold an earlier run's numbered PNGs."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(final, old)
    try:
        os.replace(staged, final)
    except OSError:  # another file system: copy then remove
        shutil.copytree(staged, final)
        shutil.rmtree(staged)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_frames_dir(folder: Path) -> None:
    """Refuse to replace a folder that holds anything but numbered PNGs (before any work is done)."""
    if folder.exists():
        foreign = [p.name for p in folder.iterdir() if not _PNG_NAME.match(p.name)] if folder.is_dir() else ["(a file)"]
        if foreign:
            raise media.MediaError(f"{folder}: exists and holds other files ({', '.join(foreign[:3])}); "
                                   "choose another --frames-dir")


@contextmanager
def staging(out: str | os.PathLike) -> Iterator[Staging]:
    """Stage outputs; on success move them into `out`, on any error leave `out` as it was."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stage = Staging(out)
    stage.dir.mkdir()
    try:
        yield stage
        stage.commit()
    finally:
        shutil.rmtree(stage.dir, ignore_errors=True)


def write_results(stage: Staging, frames: np.ndarray, fps: float, *, source: np.ndarray | None = None,
                  generate: np.ndarray | None = None, frames_dir: Path | None = None, raw: np.ndarray | None = None,
                  sidecar: dict | None = None) -> dict[str, str]:
    """Stage result.mp4, optional side_by_side.mp4 (given source and generate), PNG frames, generated.mp4 (the
    model's output when `frames` is a composite of it) and result.json.

    Returns {kind: final path} of what will exist after commit.
    """
    files: dict[str, str] = {}
    media.write_video(stage.add("result.mp4"), frames, fps)
    files["video"] = str(stage.out / "result.mp4")
    if source is not None and generate is not None:
        media.write_video(stage.add("side_by_side.mp4"), side_by_side(source, frames, generate), fps)
        files["side_by_side"] = str(stage.out / "side_by_side.mp4")
    else:
        stage.stale.append(stage.out / "side_by_side.mp4")
    if raw is not None:
        media.write_video(stage.add("generated.mp4"), raw, fps)
        files["generated"] = str(stage.out / "generated.mp4")
    else:
        stage.stale.append(stage.out / "generated.mp4")
    if frames_dir is not None:
        check_frames_dir(frames_dir)
        media.write_png_sequence(stage.add("frames", frames_dir), frames)
        files["frames"] = str(frames_dir)
    if sidecar is not None:
        files["sidecar"] = str(stage.out / "result.json")
        data = {**sidecar, "files": files}
        stage.add("result.json").write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    return files

"""Atomic file output: every writer in the project goes through here, so a crash, Ctrl-C or a full disk
never leaves a half-written file or folder under the name a user (or a later run) will read.

The pattern is always the same: write to a hidden sibling in the same folder (same file system, so
the final rename is atomic), then rename it over the destination; on failure remove the sibling.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from config.errors import UserError


def temp_sibling(dest: str | os.PathLike, tag: str = "partial") -> Path:
    """A unique hidden name beside `dest` that keeps its suffix (some writers pick the format from it)."""
    dest = Path(dest)
    return dest.with_name(f".{dest.stem}.{uuid.uuid4().hex[:8]}.{tag}{dest.suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write a file (or a folder) to; it replaces `dest` when the block succeeds.

    A folder replaces an existing `dest` folder with two renames (the old one is deleted afterwards).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dest)
    try:
        yield tmp
        swap_in(tmp, dest)
    finally:
        _remove(tmp)  # no-op after a successful swap


def write_atomic(dest: str | os.PathLike, data: bytes | str) -> Path:
    """Write bytes (or UTF-8 text) to `dest` atomically."""
    with atomic_path(dest) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return Path(dest)


def trim_jsonl(path: str | os.PathLike, step: int, rewrite: bool = True) -> list[dict]:
    """The records of a step log (one JSON object per line, each with an int "step") up to `step`, dropping later
    ones and a torn last line; with `rewrite` the file is replaced by them. A run resumed from the checkpoint at
    `step` redoes (and logs again) whatever came after it."""
    path = Path(path)
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(record)
    if rewrite:
        write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def swap_in(tmp: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Move `tmp` (file or folder) to `dest`; an existing folder `dest` is moved aside first, then deleted."""
    tmp, dest = Path(tmp), Path(dest)
    if tmp.is_dir() and dest.is_dir():
        old = temp_sibling(dest, "old")
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)


def ensure_output_folder(folder: str | os.PathLike, what: str, min_free: int = 64 * 2**20) -> Path:
    """Create `folder` (with its parents) and check that a file can be written there and `min_free` bytes are free,
    before a job computes anything: a full disk or a typo in a path fails in one line, not after minutes of work."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temp_sibling(folder / "write-check", "probe")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"{what} '{folder}' cannot be created or written: {e.strerror or e}") from None
    free = shutil.disk_usage(folder).free
    if free < min_free:
        raise UserError(f"{what} '{folder}': only {free / 2**20:.0f} MB free, {min_free / 2**20:.0f} MB needed")
    return folder

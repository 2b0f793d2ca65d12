"""A job folder's bookkeeping: content hashes, atomic writes and the manifest of stages.

`JobFolder.stage(name, key, outputs, build)` runs `build` only when the stage's key (a hash of
exactly what the stage depends on) changed since the manifest recorded it, or an output is missing.
Before replacing an output it checks that the output is still what prepare wrote (its recorded
hash): a file changed by hand, or one prepare never wrote, is only replaced with `force`. A stage
being built is marked pending in the manifest first, so an interrupted run is redone (and may
overwrite its half-written outputs) next time. The manifest is rewritten atomically after each stage.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

import media
from config.atomic import swap_in, temp_sibling, write_atomic
from config.errors import UserError
from media import MediaError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class JobFolderError(UserError):
    """The output folder holds something prepare must not overwrite without --force."""


def digest(*parts: object) -> str:
    """Stable hash of JSON-able parts (stage keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_png(path: Path, img: np.ndarray) -> None:
    """One uint8 RGB image as PNG, atomically."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:
        raise MediaError(f"{path}: cannot encode PNG")
    write_atomic(path, buf.tobytes())


def write_png_folder(folder: Path, images: dict[str, np.ndarray]) -> None:
    """A folder of PNGs (file name -> uint8 RGB), written as a whole: temp sibling, then swapped in."""
    tmp = temp_sibling(folder)
    tmp.mkdir(parents=True)
    try:
        for name, img in images.items():
            if not cv2.imwrite(str(tmp / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
                raise MediaError(f"{tmp / name}: cannot write PNG")
        swap_in(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class JobFolder:
    """The manifest of one job folder and the stage runner; `timings` collects seconds per activity."""

    def __init__(self, out: Path, force: bool = False, names: tuple[str, ...] = ()) -> None:
        self.out, self.force, self.names = Path(out).resolve(), force, names  # names: the outputs, for messages
        self.timings: dict[str, float] = {}
        self.ran: list[str] = []
        self.meta: dict[str, dict] = {}
        self._hashes: dict[str, str | None] = {}  # output hashes seen this run (dropped when rewritten)
        self.file_hashes: dict[str, list] = {}  # input path -> [size, mtime_ns, sha256] used this run
        self.manifest = self._load()

    def _load(self) -> dict:
        fresh = {"version": MANIFEST_VERSION, "inputs": {}, "settings": {}, "stages": {}, "pending": []}
        path = self.out / MANIFEST
        if not path.is_file():
            if self.out.is_dir() and any(self.out.iterdir()) and not self.force:
                mine = ", ".join(n for n in self.names if (self.out / n).exists())
                raise JobFolderError(f"{self.out}: exists, is not empty and is not a job folder (no {MANIFEST}); "
                                     f"choose a new --out, or pass --force to write the job into it"
                                     + (f" (replacing its {mine})" if mine else ""))
            return fresh
        try:
            m = json.loads(path.read_text())
            ok = m.get("version") == MANIFEST_VERSION and isinstance(m.get("stages"), dict)
        except (OSError, ValueError):
            ok = False
        if not ok:
            if not self.force:
                raise JobFolderError(f"{path}: unreadable or from another version; pass --force to rebuild the job")
            return fresh
        # --force: every stage is rebuilt, but known file hashes stay useful
        return {**fresh, "file_hashes": m.get("file_hashes", {})} if self.force else m

    def save(self) -> None:
        """Write the manifest if it changed (an unchanged job keeps its timestamps)."""
        self.manifest["file_hashes"] = self.file_hashes
        data = json.dumps(self.manifest, indent=1).encode()
        path = self.out / MANIFEST
        if path.is_file() and path.read_bytes() == data:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with self.timed("write"):
            write_atomic(path, data)

    @contextmanager
    def timed(self, what: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[what] = self.timings.get(what, 0.0) + time.perf_counter() - t0

    # -------------------------------------------------------------------------------- hashing

    def file_fp(self, path: Path) -> str:
        """Content hash of an input file, reused while its size and mtime are unchanged (as make/git do)."""
        st, key = path.stat(), str(path.resolve())
        old = self.file_hashes.get(key) or self.manifest.get("file_hashes", {}).get(key)
        if not (old and old[0] == st.st_size and old[1] == st.st_mtime_ns):
            with self.timed("hash"):
                old = [st.st_size, st.st_mtime_ns, file_sha256(path)]
        self.file_hashes[key] = old
        return old[2]

    def fp(self, path: Path | None) -> str | None:
        """Fingerprint of an input: a file's content, or the image files of a folder (names + contents)."""
        if path is None:
            return None
        if path.is_dir():
            return digest([(f.name, self.file_fp(f)) for f in media.list_image_files(path)])
        return self.file_fp(path)

    @staticmethod
    def model_fp(folder: Path | None) -> str | None:
        """Model folders are large: their config.json's content plus every file's name, size and mtime."""
        if folder is None:
            return None
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        cfg = folder / "config.json"
        return digest(file_sha256(cfg) if cfg.is_file() else None,
                      [(p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files])

    def out_hash(self, name: str) -> str | None:
        """Hash of an output (file, or folder: relative names + contents); None when it does not exist."""
        if name not in self._hashes:
            p = self.out / name
            with self.timed("hash"):
                if p.is_file():
                    self._hashes[name] = file_sha256(p)
                elif p.is_dir():
                    files = sorted(f for f in p.rglob("*") if f.is_file())
                    self._hashes[name] = digest([(f.relative_to(p).as_posix(), file_sha256(f)) for f in files])
                else:
                    self._hashes[name] = None
        return self._hashes[name]

    # --------------------------------------------------------------------------------- stages

    def stage(self, name: str, key: str, outputs: tuple[str, ...], build: Callable[[], dict]) -> dict:
        """Run `build` (returns the stage's meta, JSON-able) unless the key is unchanged and the
        outputs are there; returns the meta (recorded or new)."""
        rec = self.manifest["stages"].get(name)
        pending = name in self.manifest["pending"]
        current = {o: self.out_hash(o) for o in outputs}
        if rec and rec["key"] == key and not pending and all(
            current[o] is not None or rec["outputs"].get(o) is None for o in outputs
        ):
            self.meta[name] = rec["meta"]
            return rec["meta"]
        if not self.force and not pending:
            for o, h in current.items():
                if h is not None and (rec is None or rec["outputs"].get(o) != h):
                    raise JobFolderError(
                        f"{self.out / o} was changed since prepare wrote it (or prepare did not write it), and "
                        f"this run would replace it because its inputs changed; move it away, or pass --force")
        if self.force or pending:  # clear what a previous or interrupted run left, so folder writers accept it
            for o in outputs:
                if (self.out / o).is_dir():
                    shutil.rmtree(self.out / o)
        self.manifest["pending"].append(name)
        self.save()
        meta = build()
        for o in outputs:
            self._hashes.pop(o, None)
        self.manifest["stages"][name] = {"key": key, "outputs": {o: self.out_hash(o) for o in outputs}, "meta": meta}
        self.manifest["pending"].remove(name)
        self.save()
        self.ran.append(name)
        self.meta[name] = meta
        return meta

"""Write a toy edit case as a job folder that train.py / infer.py / evaluate.py read like any other.

    python -m examples.toy.jobs --seed 1000000 --edit shape --out jobs/toy-shape

Folder: `source/00000.png ...` (the clip, lossless), `masks/00000.png ...` (white = the edited shape's
silhouette), `edited_first.png` (frame 0 of the ground-truth edit), `reference/<k>.png` (frame k of the
ground-truth edit, for stage 2), `truth/00000.png ...` (the whole ground-truth edited clip, for scoring)
and `case.json` (the edit kind, the world parameters and both captions).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from examples.toy import world


def _frames(folder: Path, frames: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:05d}.png")


def write_case(case: world.EditCase, out: Path, reference_index: int | None = None) -> Path:
    """The case's media under `out` (created); reference frame default: the last frame."""
    k = case.source.shape[0] - 1 if reference_index is None else reference_index
    _frames(out / "source", case.source)
    _frames(out / "masks", case.mask.astype(np.uint8) * 255)
    _frames(out / "truth", case.edited)
    Image.fromarray(case.edited[0]).save(out / "edited_first.png")
    (out / "reference").mkdir(exist_ok=True)
    Image.fromarray(case.edited[k]).save(out / "reference" / f"{k}.png")
    info = {"seed": case.params.seed, "edit": case.kind, "caption": case.caption, "edited_caption": case.edited_caption,
            "reference_index": k, "params": dataclasses.asdict(case.params),
            "edited_params": dataclasses.asdict(case.edited_params)}
    (out / "case.json").write_text(json.dumps(info, indent=1) + "\n")
    return out


def read_truth(job: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ground-truth edited frames uint8 [T, H, W, 3], edit mask bool [T, H, W]) of a written case."""
    files = sorted((job / "truth").glob("*.png"))
    truth = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    mask = np.stack([np.asarray(Image.open(f).convert("L")) > 127 for f in sorted((job / "masks").glob("*.png"))])
    return truth, mask


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=world.HELDOUT_SEED0, help="world seed (held-out: >= 1000000)")
    ap.add_argument("--edit", default="recolor", choices=world.EDIT_KINDS, help="what the edit changes")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    case = world.edit_case(args.seed, args.edit)
    write_case(case, args.out)
    print(f"{args.out}: {case.caption!r} -> {case.edited_caption!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

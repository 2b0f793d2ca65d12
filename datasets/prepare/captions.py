"""The job's two captions: the source clip's (training) and the edited frame's (inference).

Sources, first match wins for each caption:

1. text given on the command line (`--caption`, `--edited-caption`);
2. a text file (`--caption-file`): the first non-empty line is the source caption, the second (if
   any) the edited frame's; lines starting with '#' are comments;
3. a local Florence-2 model (`--caption-model DIR`, the paper's captioner): it captions the source's
   first frame and the edited first frame. DIR is a transformers-format Florence-2 folder, e.g. a
   download of `florence-community/Florence-2-base` or `-large`; transformers 5 runs it natively.
   Remote code is never run (the original `microsoft/Florence-2-*` release was written for it): a
   folder whose weights leave any of the native model's weights missing is refused.

An edited caption that none of these gives stays empty: the config then uses the source caption.
The trigger is not part of a caption: the sample builder puts it in front (`join_prompt`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from config.errors import UserError

DEFAULT_TASK = "<DETAILED_CAPTION>"
TASKS = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class CaptionError(UserError):
    """An unreadable caption file or an unusable caption model."""


@dataclass
class Captions:
    caption: str
    edited_caption: str
    origin: str  # where each came from, for the summary: e.g. "text/model"


def clean_caption(text: str) -> str:
    """One line: control characters removed, whitespace runs collapsed, ends stripped."""
    return " ".join(_CONTROL.sub(" ", text).split())


def read_caption_file(path: str | Path) -> tuple[str, str]:
    """(source caption, edited caption or "") from a text file; see the module doc for the format."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CaptionError(f"{path}: cannot read caption file ({e})") from None
    lines = [clean_caption(s) for s in text.splitlines() if s.strip() and not s.lstrip().startswith("#")]
    if not lines:
        raise CaptionError(f"{path}: caption file is empty")
    if len(lines) > 2:
        raise CaptionError(f"{path}: expected 1 or 2 caption lines (source, edited), found {len(lines)}")
    return lines[0], lines[1] if len(lines) > 1 else ""


def caption_images(
    model_path: str | Path, images: list[np.ndarray], task: str = DEFAULT_TASK, max_new_tokens: int = 96,
    device: str = "cpu",
) -> list[str]:
    """Caption uint8 RGB images [H, W, 3] with a local Florence-2 model (beam search, deterministic)."""
    import torch
    from PIL import Image
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    folder = Path(model_path)
    if task not in TASKS:
        raise CaptionError(f"caption task {task!r} is not one of {', '.join(TASKS)}")
    if not (folder / "config.json").is_file():
        raise CaptionError(f"{folder}: not a model folder (no config.json); e.g. florence-community/Florence-2-base")
    try:
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        model, info = Florence2ForConditionalGeneration.from_pretrained(
            folder, local_files_only=True, output_loading_info=True
        )
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CaptionError(f"{folder}: cannot load a Florence-2 model and processor ({e})") from e
    if info.get("missing_keys"):
        raise CaptionError(
            f"{folder}: {len(info['missing_keys'])} weights missing for transformers' Florence-2 (e.g. "
            f"{sorted(info['missing_keys'])[0]}): is it the original remote-code release? Use the "
            f"transformers-native florence-community/Florence-2-base or -large"
        )
    model = model.to(device).eval()
    inputs = processor(text=[task] * len(images), images=[Image.fromarray(im) for im in images], return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**inputs.to(device), max_new_tokens=max_new_tokens, num_beams=3, do_sample=False)
    texts = processor.batch_decode(ids, skip_special_tokens=True)
    return [clean_caption(t) for t in texts]


def resolve_captions(
    caption: str | None = None,
    edited_caption: str | None = None,
    caption_file: str | Path | None = None,
    caption_model: str | Path | None = None,
    source_frame: np.ndarray | None = None,
    edited_frame: np.ndarray | None = None,
    task: str = DEFAULT_TASK,
    max_new_tokens: int = 96,
) -> Captions:
    """Both captions by the precedence of the module doc. The model runs only for captions still missing."""
    src = clean_caption(caption) if caption else ""
    edt = clean_caption(edited_caption) if edited_caption else ""
    origin = ["text" if src else "", "text" if edt else ""]
    if caption_file and not (src and edt):
        f_src, f_edt = read_caption_file(caption_file)
        if not src:
            src, origin[0] = f_src, "file"
        if not edt and f_edt:
            edt, origin[1] = f_edt, "file"
    if caption_model and not (src and edt):
        want = [(i, im) for i, im in enumerate((source_frame, edited_frame)) if not (src, edt)[i]]
        if any(im is None for _, im in want):
            raise ValueError("captioning with a model needs the source and edited frames")
        texts = caption_images(caption_model, [im for _, im in want], task, max_new_tokens)
        for (i, _), text in zip(want, texts):
            if i == 0:
                src, origin[0] = text, "model"
            else:
                edt, origin[1] = text, "model"
    if not edt and src:
        origin[1] = "source's"  # left empty: the config then uses the source caption for inference too
    return Captions(src, edt, f"{origin[0] or 'none'}/{origin[1] or 'none'}")

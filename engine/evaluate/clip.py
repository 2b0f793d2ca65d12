"""CLIP image embeddings from a local model folder, for the CLIP metrics of engine.evaluate.job.

Accepted folders (loaded offline, never downloaded): a full `CLIPModel` (model_type "clip", e.g.
openai/clip-vit-large-patch14) or a `CLIPVisionModelWithProjection` (model_type "clip_vision_model"
with a `visual_projection`), each with its `preprocessor_config.json`. A vision tower without the
projection (such as Wan's `image_encoder/`) is refused: its pooled features are not CLIP's joint
embedding space, so similarities from it would not be comparable to anybody's CLIP score.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from config.errors import UserError


class ClipModelError(UserError):
    """A --clip-model folder that cannot be used."""


@contextmanager
def _quiet_transformers():
    """transformers' load report and progress bar (text tower keys 'unexpected') would bury the summary."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        logging.enable_progress_bar()


class ClipImageEncoder:
    """L2-normalized CLIP image embeddings of uint8 RGB images."""

    def __init__(self, path: str | Path, batch_size: int = 16) -> None:
        import torch
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPVisionModelWithProjection

        self.path = Path(path)
        self.batch_size = batch_size
        cfg_file = self.path / "config.json"
        if not cfg_file.is_file():
            raise ClipModelError(f"--clip-model {self.path}: no config.json (give a local CLIP model folder)")
        if not (self.path / "preprocessor_config.json").is_file():
            raise ClipModelError(f"--clip-model {self.path}: no preprocessor_config.json (the CLIP image processor)")
        model_type = json.loads(cfg_file.read_text(encoding="utf-8")).get("model_type")
        with _quiet_transformers():
            if model_type == "clip":
                # the vision config alone would default projection_dim to 512: take the model's
                full = CLIPConfig.from_pretrained(self.path)
                vision = full.vision_config
                vision.projection_dim = full.projection_dim
                model, info = CLIPVisionModelWithProjection.from_pretrained(
                    self.path, config=vision, output_loading_info=True)
            elif model_type == "clip_vision_model":
                model, info = CLIPVisionModelWithProjection.from_pretrained(self.path, output_loading_info=True)
            else:
                raise ClipModelError(f"--clip-model {self.path}: model_type {model_type!r} is not a CLIP model "
                                     "('clip' or 'clip_vision_model')")
            self.processor = CLIPImageProcessor.from_pretrained(self.path)
        missing = sorted(info.get("missing_keys", ()))
        if missing:
            raise ClipModelError(f"--clip-model {self.path}: weights missing ({', '.join(missing[:3])}); a vision "
                                 "tower without visual_projection is not CLIP's embedding space")
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = model.to(self.device).eval()

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """[N, D] float64, unit length."""
        import torch

        out = []
        for i in range(0, len(images), self.batch_size):
            batch = self.processor(images=list(images[i:i + self.batch_size]), return_tensors="pt")
            with torch.inference_mode():
                emb = self.model(pixel_values=batch["pixel_values"].to(self.device)).image_embeds
            out.append(emb.float().cpu().numpy().astype(np.float64))
        e = np.concatenate(out) if out else np.zeros((0, 1))
        return e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)

"""Wan2.2-I2V-A14B's entry for --plan: its two experts' config (each a Wan2.1-I2V-14B without image
cross-attention), the cached inputs' shapes (Wan2.1's, with no image features) and the folder reader."""

from __future__ import annotations

from pathlib import Path

from models.planning import PlanFamily, Variant
from models.wan.plan import VARIANTS as WAN21_VARIANTS
from models.wan.plan import input_shapes, weights_config

_A14B = {**WAN21_VARIANTS["wan2.1-i2v-14b-480p"].transformer, "image_dim": None, "added_kv_proj_dim": None}
# umT5-XXL and the Wan2.1 VAE (no CLIP).
_ENCODERS = {"text_encoder": 5.68e9, "vae": 0.127e9}
_NOTE = "two 14B experts (high / low noise) of this config; a step trains or samples one of them"
VARIANTS = {
    # 480P and 720P are the same two transformers; the size is the job's (data.width / data.height).
    "wan2.2-i2v-a14b": Variant(_A14B, _ENCODERS, note=_NOTE, vae=WAN21_VARIANTS["wan2.1-i2v-14b-480p"].vae),
}


def folder_config(path: Path) -> tuple[dict, tuple[int, int], dict | None]:
    """(the high-noise expert's transformer config, VAE compression, VAE config) of a weight folder; both experts
    have the same architecture."""
    from models.wan22.loading import Wan22Weights

    return weights_config(Wan22Weights(path), path)

PLAN = PlanFamily("diffusers:WanTransformer3DModel", "diffusers:AutoencoderKLWan", VARIANTS, input_shapes,
                  folder_config)

"""Wan2.2-I2V-A14B weight layouts: tell them from Wan2.1's by their configs, and find each expert's files.

* ``diffusers``   - ``Wan-AI/Wan2.2-I2V-A14B-Diffusers``: ``model_index.json`` with ``boundary_ratio`` and a
  ``transformer_2``, ``transformer/`` (high noise) and ``transformer_2/`` (low noise), no ``image_encoder/``.
* ``original``    - ``Wan-AI/Wan2.2-I2V-A14B``: ``high_noise_model/`` and ``low_noise_model/`` (each a WanModel
  ``config.json`` plus sharded ``diffusion_pytorch_model-*.safetensors`` and their index), ``Wan2.1_VAE.pth``,
  ``models_t5_umt5-xxl-enc-bf16.pth``, ``google/umt5-xxl/``; no CLIP file.
* ``single-file`` - ComfyUI's one file per expert (Comfy-Org's repackaged ``wan2.2_i2v_high_noise_14B_fp16``,
  ``..._low_noise_...``; bf16/fp16/fp8), given as model.transformer_path / model.transformer_2_path beside a folder
  of one of the layouts above (for the VAE and the text encoder).

What tells Wan2.2-I2V from Wan2.1-I2V is in the configs, never in a folder's name: two transformers of 36 input
channels without image cross-attention (``image_dim`` null in diffusers' config; no ``img_emb`` weights in the
original's). The VAE, umT5 and single-file key handling are Wan2.1's (models.wan.layouts).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.wan import layouts as wl

StateDict = wl.StateDict
# Each expert's folder in the two folder layouts (diffusers' names follow WanImageToVideoPipeline's components).
DIFFUSERS_DIRS = {"high_noise": "transformer", "low_noise": "transformer_2"}
ORIGINAL_DIRS = {"high_noise": "high_noise_model", "low_noise": "low_noise_model"}
IN_CHANNELS = 36  # 16 noisy + 4 mask + 16 condition latents: the I2V input (the T2V A14B has 16)


class WeightLayoutError(ValueError):
    """A model path that is not a Wan2.2-I2V-A14B layout, or one with files missing."""


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _diffusers_index(folder: Path) -> dict[str, Any] | None:
    """model_index.json of a Wan2.2-I2V diffusers folder (an I2V pipeline with a boundary and a second transformer)."""
    index = _json(folder / "model_index.json")
    if not index or not str(index.get("_class_name", "")).startswith("WanImageToVideo"):
        return None
    second = index.get("transformer_2")
    if index.get("boundary_ratio") is None or not (isinstance(second, list) and second[0]):
        return None
    return index


def _original_configs(folder: Path) -> dict[str, dict] | None:
    """Each expert's WanModel config.json of an original release folder, when both are I2V configs."""
    configs = {e: _json(folder / d / wl.ORIGINAL_CONFIG) for e, d in ORIGINAL_DIRS.items()}
    if all(c and c.get("_class_name") == "WanModel" and c.get("in_dim") == IN_CHANNELS for c in configs.values()):
        return configs  # type: ignore[return-value]
    return None


def detect_score(folder: Path) -> int:
    """2 for a Wan2.2-I2V-A14B folder (more specific than Wan2.1's claim on Wan folders), else 0."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    index = _diffusers_index(folder)
    if index is not None:
        config = _json(folder / "transformer" / "config.json") or {}
        return 2 if config.get("in_channels") == IN_CHANNELS and config.get("image_dim") is None else 0
    return 2 if _original_configs(folder) is not None else 0


def _shards_missing(folder: Path) -> list[str]:
    index = folder / wl.ORIGINAL_INDEX
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [f"{folder.name}/{s}" for s in shards if not (folder / s).is_file()]
    if (folder / wl.ORIGINAL_SINGLE).is_file():
        return []
    return [f"{folder.name}/{wl.ORIGINAL_INDEX} (+ the shards it lists)"]


def detect_layout(path: str | Path) -> str:
    """"diffusers" or "original"; WeightLayoutError naming every missing file, or what the folder is instead."""
    path = Path(path)
    if not path.is_dir():
        raise WeightLayoutError(f"{path}: not a folder; model.ckpt_path is a Wan2.2-I2V-A14B diffusers or original "
                                "release folder (single expert files go in model.transformer_path / "
                                "model.transformer_2_path)")
    missing: list[str] = []
    if _diffusers_index(path) is not None:
        layout = "diffusers"
        needed = {**{d: "config.json" for d in DIFFUSERS_DIRS.values()}, "vae": "config.json",
                  "text_encoder": "config.json", "tokenizer": "tokenizer_config.json",
                  "scheduler": "scheduler_config.json"}
        missing = [f"{d}/{f}" for d, f in needed.items() if not (path / d / f).is_file()]
    elif any((path / d).is_dir() for d in ORIGINAL_DIRS.values()):
        layout = "original"
        for name in ORIGINAL_DIRS.values():
            sub = path / name
            if not (sub / wl.ORIGINAL_CONFIG).is_file():
                missing.append(f"{name}/{wl.ORIGINAL_CONFIG}")
            elif sub.is_dir():
                missing += _shards_missing(sub)
        missing += [f for f in (wl.ORIGINAL_VAE, wl.ORIGINAL_T5) if not (path / f).is_file()]
        if not (path / wl.ORIGINAL_T5_TOKENIZER).is_dir():
            missing.append(wl.ORIGINAL_T5_TOKENIZER + "/")
    else:
        raise WeightLayoutError(
            f"{path}: not a Wan2.2-I2V-A14B folder: expected model_index.json with transformer_2 and boundary_ratio "
            f"(diffusers) or {', '.join(d + '/' for d in ORIGINAL_DIRS.values())} (the original release)")
    if missing:
        raise WeightLayoutError(f"{path}: looks like the {layout} Wan2.2-I2V-A14B layout but {len(missing)} file(s) "
                                "are missing: " + ", ".join(missing))
    return layout


def original_transformer_config(folder: str | Path) -> dict[str, Any]:
    """An original expert folder's ``WanTransformer3DModel`` kwargs: Wan2.1's reader, which takes the image
    cross-attention from the weights (the config says "i2v" for both releases)."""
    folder = Path(folder)
    return wl.wan_transformer_config_from_original(_json(folder / wl.ORIGINAL_CONFIG) or {}, wl.original_shapes(folder))


def load_original_transformer_state_dict(folder: str | Path) -> StateDict:
    """An original expert folder's shards merged and converted to diffusers keys (Wan2.1's loader, per folder)."""
    return wl.load_original_transformer_state_dict(folder)

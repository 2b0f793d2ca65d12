"""The registry of model families: one `FamilySpec` per family (models/<family>/spec.py), in one place.

Every question about a family goes through here: which families exist (`names`, the config's `model.type`
choices), which one a weights folder holds (`detect_family`), its defaults (`family(name).default_fps`, ...),
and its adapter (`make_adapter`). Adding a family = its folder + one `register` line below. Reading the
registry imports no model code (see models.family).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from config.errors import UserError
from models.family import FamilySpec
from models.hunyuan_video.spec import SPEC as HUNYUAN_VIDEO
from models.wan.spec import SPEC as WAN
from models.wan22.spec import SPEC as WAN22

_FAMILIES: dict[str, FamilySpec] = {}
DEFAULT_FAMILY = WAN.name  # model.type when a config says nothing


class UnknownFamilyError(UserError, ValueError):
    """A `model.type` no family is registered under (a ValueError too: a bad argument to make_adapter)."""


class ModelSettings(Protocol):
    """What `make_adapter` reads of a config's [model] section."""

    type: str
    ckpt_path: str
    transformer_path: str
    transformer_2_path: str
    dtype: str
    transformer_dtype: str


def register(spec: FamilySpec, replace: bool = False) -> FamilySpec:
    """Add a family (tests register fixtures' families this way too); its name becomes a valid `model.type`."""
    if spec.name in _FAMILIES and not replace and _FAMILIES[spec.name] is not spec:
        raise ValueError(f"model family {spec.name!r} is already registered")
    _FAMILIES[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _FAMILIES.pop(name, None)


def names() -> tuple[str, ...]:
    """Every registered `model.type`, in registration order."""
    return tuple(_FAMILIES)


def families() -> tuple[FamilySpec, ...]:
    return tuple(_FAMILIES.values())


def family(name: str) -> FamilySpec:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise UnknownFamilyError(f"unknown model.type {name!r}; valid: {', '.join(_FAMILIES)}") from None


def detect_family(path: str | os.PathLike) -> str | None:
    """The `model.type` a weights folder holds, from its marker files (None: not recognised). When several
    families claim a folder (a newer release of a family), the most specific claim wins."""
    folder = Path(path)
    scores = [(spec.detect(folder), spec.name) for spec in _FAMILIES.values()]
    best = max(scores, key=lambda s: s[0], default=(0, None))
    return best[1] if best[0] > 0 else None


def default_size(src_w: int, src_h: int, family_name: str = DEFAULT_FAMILY) -> tuple[int, int]:
    """The family's training size (Wan 480P: 832x480) for landscape and square sources, swapped for portrait."""
    return family(family_name).size_for(src_w, src_h)


def make_adapter(model_cfg: ModelSettings, device: Any) -> Any:
    """The adapter (a models.base.ModelAdapter) of `model_cfg.type`, with the config's weights and dtypes,
    computing on `device` (a torch device or its name).

    `dtype` is the compute dtype; `transformer_dtype` the storage dtype of the frozen transformer ("" = dtype).
    "float8" stores the transformer in float8_e4m3fn and computes in `dtype` (layerwise casting); every
    dtype here computes on CPU too (PyTorch 2.x has CPU kernels for bf16 and fp16 matmuls).
    """
    from models.dtypes import dtype_from_name

    spec = family(model_cfg.type)
    found = detect_family(model_cfg.ckpt_path) if model_cfg.ckpt_path else None
    if found and found != model_cfg.type:
        raise UserError(f"{model_cfg.ckpt_path}: holds a {found!r} model but model.type = {model_cfg.type!r}; "
                        f"set model.type = \"{found}\"")
    dtype = dtype_from_name(model_cfg.dtype)
    storage = dtype_from_name(model_cfg.transformer_dtype) if model_cfg.transformer_dtype else dtype
    files = transformer_files(model_cfg)
    return spec.adapter_class()(model_cfg.ckpt_path, files, device=device, dtype=dtype, transformer_dtype=storage)


def transformer_files(model_cfg: ModelSettings) -> str | dict[str, str] | None:
    """The single-file transformer override(s): model.transformer_path (None: none) for a one-expert family; for a
    family with several experts {expert name: file}, model.transformer_path for the first expert and
    model.transformer_2_path for the second (diffusers' `transformer` and `transformer_2`)."""
    experts = family(model_cfg.type).experts
    if len(experts) == 1:
        return model_cfg.transformer_path or None
    paths = (model_cfg.transformer_path, getattr(model_cfg, "transformer_2_path", ""))
    return {e.name: p for e, p in zip(experts, paths) if p}


for _spec in (WAN, WAN22, HUNYUAN_VIDEO):
    register(_spec)

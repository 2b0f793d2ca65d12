"""Shared test setup: repo root first on sys.path, no network, tiny Wan models built once per session."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Repo root first, as the entry points run: ./datasets must win over any Hugging Face `datasets`.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
# Never reach the Hub from tests: a missing local file must fail, not download.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TinyWanFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def tiny_wan_factory(tmp_path_factory: pytest.TempPathFactory) -> TinyWanFactory:
    """``factory(layout, seed=0, dtype="fp32", prefixed=False) -> Path``; each variant is built once.

    Returns the model folder (diffusers, original) or the ``.safetensors`` file (single-file).
    Treat the result as read-only: other tests share it.
    """
    from models.wan.tiny import build_tiny_wan

    root = tmp_path_factory.mktemp("tiny-wan")
    built: dict[tuple, Path] = {}

    def factory(layout: str, seed: int = 0, dtype: str = "fp32", prefixed: bool = False) -> Path:
        key = (layout, seed, dtype, prefixed)
        if key not in built:
            name = f"{layout}-s{seed}-{dtype}" + ("-prefixed" if prefixed else "")
            built[key] = build_tiny_wan(root / name, layout, seed=seed, dtype=dtype, prefixed=prefixed)
        return built[key]

    return factory


@pytest.fixture(scope="session")
def tiny_wan_diffusers(tiny_wan_factory: TinyWanFactory) -> Path:
    """Tiny Wan2.1-I2V in the diffusers layout (``WanImageToVideoPipeline.from_pretrained`` loads it)."""
    return tiny_wan_factory("diffusers")


@pytest.fixture(scope="session")
def tiny_wan_original(tiny_wan_factory: TinyWanFactory) -> Path:
    """The same weights in the original Wan release layout (sharded safetensors + .pth files)."""
    return tiny_wan_factory("original")


@pytest.fixture(scope="session")
def tiny_wan_single_file(tiny_wan_factory: TinyWanFactory) -> Path:
    """The same transformer as one ComfyUI-style bf16 ``.safetensors`` file (unprefixed original keys)."""
    return tiny_wan_factory("single-file", dtype="bf16")


@pytest.fixture(scope="session")
def tiny_wan_single_file_fp8(tiny_wan_factory: TinyWanFactory) -> Path:
    """The same transformer in fp8 (e4m3fn) with ``model.diffusion_model.`` prefixes."""
    return tiny_wan_factory("single-file", dtype="fp8", prefixed=True)


TinyHunyuanFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def tiny_hunyuan_factory(tmp_path_factory: pytest.TempPathFactory) -> TinyHunyuanFactory:
    """``factory(layout, seed=0, variant="latent_concat", dtype="bf16") -> Path``; each variant is built once.

    Tiny HunyuanVideo-I2V (tools/make_tiny_hunyuan.py): the folder (diffusers, original) or the ``.safetensors``
    file (single-file). Read-only: other tests share it.
    """
    from models.hunyuan_video.tiny import build_tiny_hunyuan

    root = tmp_path_factory.mktemp("tiny-hunyuan")
    built: dict[tuple, Path] = {}

    def factory(layout: str, seed: int = 0, variant: str = "latent_concat", dtype: str = "bf16") -> Path:
        key = (layout, seed, variant, dtype)
        if key not in built:
            built[key] = build_tiny_hunyuan(root / f"{layout}-s{seed}-{variant}-{dtype}", layout, seed=seed,
                                            variant=variant, dtype=dtype)
        return built[key]

    return factory


@pytest.fixture(scope="session")
def tiny_hunyuan_diffusers(tiny_hunyuan_factory: TinyHunyuanFactory) -> Path:
    """Tiny HunyuanVideo-I2V (33-channel) in the diffusers layout (the pipeline's ``from_pretrained`` loads it)."""
    return tiny_hunyuan_factory("diffusers")

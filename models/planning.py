"""What --plan needs of a model family, declared in the family's folder (models/<family>/plan.py).

The planner (engine/plan/) builds a job's full-size transformer on the meta device from a config: the weight
folder's (`folder_config`, the reader training uses) or a known variant's, and feeds it inputs of the shapes the
encode cache would hold (`shapes`). A family plugs in with one `PlanFamily`, named by its registry record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Variant:
    """A released model of the family: its transformer config, encoder sizes and VAE."""

    transformer: dict
    encoders: dict  # component -> parameter count
    vae_compression: tuple[int, int] = (4, 8)  # (time, space)
    note: str = ""
    vae: dict | None = None  # the VAE's config, to trace its encode and decode


@dataclass
class InputShapes:
    """Per-sample shapes of what the encode cache feeds the transformer (channel-first latents)."""

    latents: tuple[int, ...]
    cond: tuple[int, ...]
    text: tuple[int, ...]
    image: tuple[int, ...] | None
    tokens: int  # transformer tokens (latent cells / patch volume)
    text_mask: tuple[int, ...] | None = None  # families with a text mask / pooled embedding (HunyuanVideo)
    pooled: tuple[int, ...] | None = None


@dataclass(frozen=True)
class PlanFamily:
    """What the planner needs of a model family (see the module doc)."""

    transformer: str  # "module:class" of its transformer
    vae: str  # "module:class" of its VAE
    variants: dict[str, Variant]
    shapes: Callable[[dict, tuple[int, int], int, int, int], InputShapes]
    folder_config: Callable[[Path], tuple[dict, tuple[int, int], dict | None]]
    # Config keys of the repeated blocks' counts, in layer-list order. Block swap offloads the last blocks, and
    # composed plans vary the last count (the blocks before are kept as they are).
    block_keys: tuple[str, ...] = ("num_layers",)

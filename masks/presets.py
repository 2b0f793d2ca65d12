"""The mask presets of the paper (Sec. 3.2, 3.3) as keep masks in the paper's convention.

| preset      | frame 0           | frames 1..        |
|-------------|-------------------|-------------------|
| i2v         | keep all          | generate all      |
| none        | generate          | generate          |
| all         | keep              | keep              |
| selective   | keep outside mask | keep outside mask |
| loraedit    | keep all          | keep outside mask |
| reference   | single frame: keep outside mask     |
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config schema reads PRESETS: importing this module must not import torch
    import numpy as np
    import torch

PRESETS = ("i2v", "none", "all", "selective", "loraedit", "reference")


def preset_keep_mask(preset: str, edit_mask: np.ndarray | torch.Tensor) -> torch.Tensor:
    """edit_mask: bool [T, H, W], True = edit region (user semantics).
    Returns m_condition: float32 [1, T, H, W] in {0, 1}, 1 = preserve, 0 = generate."""
    import numpy as np
    import torch

    if preset not in PRESETS:
        raise ValueError(f"unknown mask preset {preset!r}; valid: {', '.join(PRESETS)}")
    edit = torch.as_tensor(np.asarray(edit_mask) if not isinstance(edit_mask, torch.Tensor) else edit_mask)
    if edit.ndim != 3:
        raise ValueError(f"edit mask must be [T, H, W], got shape {tuple(edit.shape)}")
    edit = edit.bool()
    outside = (~edit).float()
    if preset == "reference":
        if edit.shape[0] != 1:
            raise ValueError(f"preset 'reference' is a single-frame sample, got {edit.shape[0]} frames")
        keep = outside
    elif preset == "selective":
        keep = outside
    elif preset == "none":
        keep = torch.zeros_like(outside)
    elif preset == "all":
        keep = torch.ones_like(outside)
    elif preset == "i2v":
        keep = torch.zeros_like(outside)
        keep[0] = 1.0
    else:  # loraedit
        keep = outside.clone()
        keep[0] = 1.0
    return keep.unsqueeze(0)

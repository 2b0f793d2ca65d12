"""Masks: file I/O and binarization, morphology, the paper's presets, latent packing per model.

Files use white = may change / black = keep; ``to_keep_mask`` converts once to the paper's
m_condition (1 = preserve, 0 = generate), the only convention used past the I/O boundary."""

from masks.io import DEFAULT_THRESHOLD, binarize, read_mask, to_keep_mask
from masks.morphology import dilate, erode, feather, to_bboxes
from masks.packing import pack_hunyuan, pack_wan
from masks.presets import PRESETS, preset_keep_mask

__all__ = [
    "DEFAULT_THRESHOLD",
    "PRESETS",
    "binarize",
    "dilate",
    "erode",
    "feather",
    "pack_hunyuan",
    "pack_wan",
    "preset_keep_mask",
    "read_mask",
    "to_bboxes",
    "to_keep_mask",
]

"""Optional SAM2 tracking of the edit region (transformers' Sam2VideoModel), from a local weights folder.

The user points SAM2 at the object on frame 0 - with points, a box, or a mask (e.g. the auto-mask's
difference region) - and SAM2 segments it in every later frame. The weights folder is the
transformers layout (`facebook/sam2.1-hiera-tiny` ... `-large` from Hugging Face: config.json +
model.safetensors); nothing is downloaded.

The frames are preprocessed here rather than with transformers' Sam2VideoProcessor, because that
processor needs torchvision (which does not install beside the CPU torch this project pins). The
steps are the processor's: resize to the model's square input (bilinear, antialiased), scale to
[0, 1], normalize with the folder's image mean/std (ImageNet by default); point and box coordinates
are scaled to the square; masks come back at the model's low resolution and are resized to the job's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from config.errors import UserError
from config.progress import Progress, tracked

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_PREPROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")


class Sam2Error(UserError):
    """Missing or unusable SAM2 weights, or prompts that do not fit the frame."""


@dataclass
class Sam2Prompt:
    """Frame-0 prompt in job pixels: positive/negative points (x, y, 1|0), a box (x0, y0, x1, y1) or a mask."""

    points: list[tuple[float, float, int]] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None  # bool [H, W]

    def check(self, width: int, height: int) -> None:
        if self.mask is None and not self.points and self.box is None:
            raise Sam2Error("SAM2 needs a prompt on frame 0: --sam2-points, --sam2-box or --auto-mask")
        if self.mask is not None and (self.points or self.box is not None):
            raise Sam2Error("give SAM2 either a mask (--auto-mask) or points/box, not both")
        coords = [(x, y) for x, y, _ in self.points] + ([self.box[:2], self.box[2:]] if self.box else [])
        for x, y in coords:
            if not (0 <= x <= width and 0 <= y <= height):
                raise Sam2Error(f"SAM2 prompt point ({x:g}, {y:g}) is outside the {width}x{height} job frame")


def _preprocessing(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    for name in _PREPROCESSOR_FILES:
        p = folder / name
        if p.is_file():
            cfg = json.loads(p.read_text())
            return tuple(cfg.get("image_mean", IMAGENET_MEAN)), tuple(cfg.get("image_std", IMAGENET_STD))
    return IMAGENET_MEAN, IMAGENET_STD


def load_sam2(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, tuple, tuple]:
    """(model, image mean, image std) from a local transformers SAM2 folder. Errors name the folder."""
    from transformers import Sam2VideoModel

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise Sam2Error(f"{folder}: not a SAM2 weights folder (no config.json), e.g. facebook/sam2.1-hiera-small")
    try:
        model = Sam2VideoModel.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise Sam2Error(f"{folder}: cannot load SAM2 video weights ({e})") from e
    mean, std = _preprocessing(folder)
    return model.to(device).eval(), mean, std


def _pixel_values(frames: np.ndarray, size: int, mean: tuple, std: tuple) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [T, 3, size, size], normalized."""
    out = []
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    for chunk in np.array_split(frames, max(1, len(frames) // 16)):  # bounded float memory
        x = torch.from_numpy(np.ascontiguousarray(chunk)).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append((x - m) / s)
    return torch.cat(out)


def track(
    frames: np.ndarray, prompt: Sam2Prompt, weights: str | Path, device: str = "cpu", progress: Progress | None = None
) -> np.ndarray:
    """Segment the prompted object in every frame: bool [T, H, W], True = the object (may change)."""
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

    T, H, W = frames.shape[:3]
    prompt.check(W, H)
    model, mean, std = load_sam2(weights, device)
    size = int(model.config.image_size)
    session = Sam2VideoInferenceSession(
        video=_pixel_values(frames, size, mean, std), video_height=H, video_width=W,
        inference_device=device, inference_state_device=device, video_storage_device="cpu", dtype=torch.float32,
    )
    obj = session.obj_id_to_idx(1)
    if prompt.mask is not None:
        m = torch.from_numpy(prompt.mask.astype(np.float32))[None, None]
        m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        session.add_mask_inputs(obj, 0, (m >= 0.5).float())
    else:
        scale = torch.tensor([size / W, size / H])
        coords, labels = [], []
        if prompt.box is not None:  # a box is two points labelled 2 (top-left) and 3 (bottom-right), first
            coords += [prompt.box[:2], prompt.box[2:]]
            labels += [2, 3]
        coords += [(x, y) for x, y, _ in prompt.points]
        labels += [int(v) for _, _, v in prompt.points]
        session.add_point_inputs(obj, 0, {
            "point_coords": (torch.tensor(coords, dtype=torch.float32) * scale)[None, None],
            "point_labels": torch.tensor(labels, dtype=torch.int32)[None, None],
        })
    session.obj_with_new_inputs = [1]
    out = np.zeros((T, H, W), bool)
    with torch.no_grad():
        it = model.propagate_in_video_iterator(session, start_frame_idx=0)
        for o in tracked(it, progress, "SAM2 tracking", T, "frame"):
            logits = F.interpolate(o.pred_masks[:1].float(), size=(size, size), mode="bilinear", align_corners=False)
            logits = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
            out[o.frame_idx] = (logits[0, 0] > 0).cpu().numpy()
    return out

"""Long jobs: clips longer than the model's window, cut into windows (DESIGN.md "Long clips").

Inference chains windows of `data.window` frames: window 1 starts from the edited first frame, each next one
takes the last `inference.window_overlap` frames (1+4k) of the one before whole and makes the rest; the last
window is moved back to end at the clip's last frame, so it may take more frames whole. Training samples
windows from the whole clip, conditioned exactly that way: the frames a window takes whole are kept whole, the
rest kept outside the edit mask. The windows inference will cut are always among them (so the LoRA has seen
every stretch of the clip with the conditioning it will meet), plus a few at random starts, drawn once from the
run's seed: each window is one more clip to encode once, so the set is fixed rather than redrawn every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets.samples import MODE_PRESETS, Sample, condition_sample, short_clip_samples


@dataclass(frozen=True)
class Window:
    """Job frames [start, end); the first `head` are taken whole (the edited frame, or the previous window's)."""

    start: int
    end: int
    head: int

    @property
    def new(self) -> range:
        """The job frames this window makes (after the frames it takes whole)."""
        return range(self.start + self.head, self.end)


def chain_windows(total: int, window: int, overlap: int = 1) -> list[Window]:
    """Inference's cut of a `total`-frame clip: 33 frames, window 9, overlap 1 -> [0,9) [8,17) [16,25) [24,33).

    Window 1 takes only the edited first frame whole; a window that does not fit the stride is moved back to
    end at the last frame and takes what it shares with the one before whole."""
    if window < 1 or not 1 <= overlap < max(window, 2):
        raise ValueError(f"window {window} and overlap {overlap}: need 1 <= overlap < window")
    if total <= window:
        return [Window(0, total, 1)]
    stride = window - overlap
    starts = list(range(0, total - window + 1, stride))
    if starts[-1] + window < total:
        starts.append(total - window)
    return [Window(s, s + window, 1 if i == 0 else starts[i - 1] + window - s) for i, s in enumerate(starts)]


def training_windows(total: int, window: int, overlap: int, extra: int, seed: int) -> list[Window]:
    """The windows training samples: inference's own cut, then up to `extra` more at random starts (seeded by
    `seed`, none repeated), each taking `overlap` frames whole (1 when it starts at frame 0)."""
    aligned = chain_windows(total, window, overlap)
    taken = {w.start for w in aligned}
    free = [s for s in range(total - window + 1) if s not in taken]
    rng = np.random.default_rng([seed, 0x57])
    picks = sorted(rng.choice(free, size=min(extra, len(free)), replace=False).tolist()) if free else []
    return aligned + [Window(s, s + window, 1 if s == 0 else overlap) for s in picks]


def window_sample(frames: np.ndarray, edit_mask: np.ndarray, w: Window, prompt: str, mode: str = "loraedit",
                  kind: str = "video", condition: np.ndarray | None = None, preset: str | None = None) -> Sample:
    """A window as a sample: its `head` frames kept whole, the rest by the mode's preset (`loraedit`: kept outside
    the edit mask). `condition` (default `frames`) supplies the condition's frames, e.g. the previous window's
    generated frames at inference; the target is `frames`' (training) or none (inference). `preset` overrides the
    mode's preset (inference.mask_preset)."""
    if preset is None and mode not in MODE_PRESETS:
        raise ValueError(f"unknown training mode {mode!r}; valid: {', '.join(MODE_PRESETS)}")
    mask = edit_mask[w.start:w.end].copy()
    mask[:w.head] = False  # nothing may change there: the preset keeps those frames whole
    cond = (frames if condition is None else condition)[w.start:w.end]
    return condition_sample(frames[w.start:w.end], cond, mask, preset or MODE_PRESETS[mode], prompt, kind,
                            f"window_{w.start}-{w.end - 1}" + (f"_h{w.head}" if w.head > 1 else ""),
                            with_target=kind != "inference", start=w.start)


def long_clip_samples(frames: np.ndarray, edit_mask: np.ndarray, prompt: str, window: int, overlap: int,
                      extra: int, seed: int, mode: str = "loraedit", low_cost: bool = False,
                      clip_frames: int = 13, clip_overlap: int = 1) -> list[Sample]:
    """Stage-1 samples of a long job: its training windows, or (low-cost mode) short clips over the whole clip."""
    if low_cost:
        return short_clip_samples(frames, edit_mask, prompt, clip_frames, clip_overlap, mode)
    return [window_sample(frames, edit_mask, w, prompt, mode)
            for w in training_windows(len(frames), window, overlap, extra, seed)]


def is_long(frames: int, window: int) -> bool:
    """A job longer than its model window (a config's data.frames and data.window)."""
    return bool(window) and frames > window

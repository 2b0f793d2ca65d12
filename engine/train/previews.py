"""Training previews: the edit generated from the LoRA being trained, scored without ground truth, the best kept.

Every `training.preview_every_n_steps` steps (and at the last step) the main rank generates the edit exactly as
infer.py would (`engine.infer.generate`: the same request, inference sample, encode-cache entries and sampler) but
with cheap settings (`training.preview_*`: fewer sampler steps, the step cache, no guidance, optionally fewer
frames), on the transformer being trained (its LoRA as it is now: nothing is saved or reloaded). The inference
sample is encoded with the training samples, before the encoders are freed, so no encoder runs again; the VAE's
decoder loads for each preview's decode and is freed after it (training memory stays transformer + LoRA).

Each preview is scored with evaluate.py's metrics against the source, the mask and the edited first frame
(engine.evaluate.combined: one number, documented weights) and written to `previews/` in the run folder:
`step_NNNNNN.mp4` (source | preview | where it may change, enlarged like infer.py's side_by_side.mp4),
`step_NNNNNN.png` (a labelled contact sheet with the scores) and a line of `previews.jsonl` ({"step", "video",
"sheet", "scores", "combined", "best", "seconds"}: what webui/jobfiles.py reads), and to TensorBoard (the sheet,
the preview as an animated image, every score).

A preview changes no random draw of the training: the sampler draws its noise from its own generator, the
transformer runs in eval mode (no LoRA dropout) and every global RNG state is put back afterwards; the training
noise and batches come from (seed, rank, step) anyway (engine.train.batches). Selection and early stopping are pure
functions of the preview history (`best_entry`, `early_stop_reason`), so a resumed run decides as the interrupted
one would have, and a run that stopped early stops again at once when resumed.
"""

from __future__ import annotations

import copy
import io
import json
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

import media
from config.atomic import atomic_path, trim_jsonl
from config.progress import Progress, report
from config.schema import Config
from datasets.windows import is_long
from engine.encode.cache import EncodeCache
from engine.encode.samples import encode_with_negative
from engine.evaluate import metrics as M
from engine.evaluate.combined import combined_score
from engine.evaluate.job import EvalInputError, EvalInputs, ResultVideo, references, score_result
from engine.infer.generate import build_request, load_inputs, sample_latents
from engine.infer.outputs import side_by_side
from media.viewing import enlarge, label_band, labelled_sheet, outlined_overlay, view_scale

FOLDER = "previews"
INDEX = "previews.jsonl"
LAST_LORA = "lora_last.safetensors"  # the last step's LoRA when previews select lora.safetensors
AUTO_PREVIEWS = 4  # 'auto': previews per run, within the 15% budget at full size and on the toy (README)
SCORE_KEYS = ("psnr_kept", "ssim_kept", "hist_distance", "delta_e", "warp_error_edit", "clip_region",
              "psnr_truth", "psnr_truth_edit")  # the last two only with training.preview_truth


def interval(cfg: Config, total_steps: int) -> int | None:
    """Steps between previews (None: off). 'auto' spreads AUTO_PREVIEWS over the run."""
    every = cfg.training.preview_every_n_steps
    if every == "off" or total_steps <= 0:
        return None
    if every == "auto":
        return max(1, math.ceil(total_steps / AUTO_PREVIEWS))
    return int(every)


def schedule(every: int | None, total_steps: int) -> list[int]:
    """The steps that get a preview: every `every`-th step, and the last one (the LoRA a plain run would keep)."""
    if not every:
        return []
    return sorted(set(range(every, total_steps + 1, every)) | {total_steps})


def interval_of(steps: set[int]) -> int | None:
    """The interval of a preview schedule (its first step)."""
    return min(steps) if steps else None


def best_entry(history: Sequence[dict]) -> dict | None:
    """The preview with the highest combined score (the earliest of equals: fewer steps, same score)."""
    scored = [h for h in history if isinstance(h.get("combined"), (int, float))]
    return max(scored, key=lambda h: (h["combined"], -h["step"])) if scored else None


def early_stop_reason(history: Sequence[dict], patience: int, last_stage_start: int) -> str | None:
    """Why to stop now, or None: the last `patience` previews of the last stage (stage 2 builds on stage 1, so only
    the last stage stops early) all came after the best one without beating it."""
    if patience <= 0 or not history:
        return None
    best = best_entry(history)
    if best is None:
        return None
    since = [h for h in history if h["step"] > max(best["step"], last_stage_start)]
    if len(since) < patience:
        return None
    return (f"early stop at step {history[-1]['step']}: the combined preview score did not improve for {patience} "
            f"previews (best {best['combined']:.4f} at step {best['step']})")


def lora_name(step: int) -> str:
    return f"lora_step{step:06d}.safetensors"


class Previews:
    """The previews of one run: what to generate (`sample`, encoded in `encode`), when (`due`), and the history
    (`history`, restored from previews.jsonl on resume)."""

    def __init__(self, cfg: Config, main: bool) -> None:
        self.cfg = preview_config(cfg)
        self.request = build_request(self.cfg, [])
        self.inputs = load_inputs(self.cfg, self.request)  # checks the edited frame etc. before any model loads
        self.main = main
        self.patience = cfg.training.early_stop
        self.folder: Path | None = None
        self.steps: set[int] = set()
        self.history: list[dict] = []
        self.encoded = self.negative = None
        self.clip = None
        job = self.inputs.job
        truth = _truth(cfg.training.preview_truth, job.frames, job.fps) if cfg.training.preview_truth else None
        self.eval_inputs = EvalInputs(job.frames, job.edit_mask, job.edited_first, job.fps, [], truth=truth)
        self._refs = None
        self._source_warp = None

    def start(self, run_folder: Path, total_steps: int) -> None:
        """The run's folder and length (known once the stages are planned)."""
        self.folder = Path(run_folder) / FOLDER
        self.steps = set(schedule(interval(self.cfg, total_steps), total_steps))

    @property
    def sample(self):  # noqa: ANN201 (datasets.samples.Sample)
        return self.inputs.sample

    def encode(self, adapter, cache: EncodeCache, progress: Progress | None = None) -> None:  # noqa: ANN001
        """The preview's encoded sample and, with guidance, its negative prompt: cache hits when encode_job passed
        `sample` along with the training samples (the negative prompt is encoded here the first time)."""
        guided = self.request.sampler.guided(adapter.experts())
        self.encoded, self.negative = encode_with_negative(
            adapter, self.sample, cache, self.cfg.data.latent_mask,
            self.request.negative_prompt if guided else None, progress)

    def due(self, step: int) -> bool:
        return step in self.steps

    def best(self) -> dict | None:
        return best_entry(self.history)

    def early_stop_reason(self, last_stage_start: int) -> str | None:
        return early_stop_reason(self.history, self.patience, last_stage_start)

    def summary(self) -> dict:
        """summary.json's part: every preview's step and scores, the one lora.safetensors holds."""
        best = self.best()
        return {"previews": [{k: h.get(k) for k in ("step", "combined", "scores", "sheet", "video")}
                             for h in self.history],
                "selected": {"step": best["step"], "combined": best["combined"]} if best else None,
                "preview_settings": {"every": interval_of(self.steps),
                                     "steps": self.request.sampler.steps, "guidance": self.request.sampler.guidance,
                                     "step_cache": self.request.sampler.step_cache,
                                     "frames": int(self.inputs.job.frames.shape[0]), "early_stop": self.patience}}

    def restore(self, step: int) -> None:
        """On resume from the checkpoint at `step`: the previews up to it (later ones are redone, identically)."""
        self.history = trim_jsonl(self.folder / INDEX, step, rewrite=self.main)

    # -- one preview ------------------------------------------------------------------------------------------
    def generate(self, adapter, transformers: Sequence[nn.Module]) -> np.ndarray:  # noqa: ANN001
        """The preview's frames (uint8 [T, H, W, 3]) from the transformers as they are, leaving every RNG and
        module mode as it was."""
        from datasets.preview import to_uint8

        states = _rng_states()
        modes = [m.training for m in transformers]
        try:
            for m in transformers:
                m.eval()  # no LoRA dropout; nothing else in these transformers depends on the mode
            with torch.no_grad():
                latents = sample_latents(self.cfg, adapter, self.request, self.encoded, self.negative)
                video = adapter.decode_latents(latents)[0].float().cpu()
            # freed, so training memory stays what it was; without adapter.unload's gc.collect(), which in a training
            # process (DeepSpeed's and torch's many objects) takes longer than the decode (the VAE has no cycles)
            adapter.components.pop("vae", None)
        finally:
            for m, mode in zip(transformers, modes):
                m.train(mode)
            _set_rng_states(states)
        return to_uint8(video.numpy())

    def score(self, frames: np.ndarray) -> dict:
        """evaluate.py's means for the preview (frames 1..T-1) and the combined score."""
        if self._refs is None:
            if self.cfg.training.preview_clip_model and self.clip is None:
                from engine.evaluate.clip import ClipImageEncoder

                self.clip = ClipImageEncoder(self.cfg.training.preview_clip_model)
            self._refs = references(self.eval_inputs, self.clip)
            src = self.eval_inputs.source
            errors = [e for e in M.warp_errors(src, self._refs.pairs, self.eval_inputs.edit_mask) if e is not None]
            self._source_warp = float(np.mean(errors)) if errors else None
        result = ResultVideo(self.folder, frames)
        summary = score_result(result, self.eval_inputs, self._refs, self.clip, range(1, len(frames)))["summary"]
        scores = {k: summary.get(k) for k in SCORE_KEYS if summary.get(k) is not None}
        return {"scores": {k: (v if math.isfinite(v) else None) for k, v in scores.items()},
                "combined": combined_score(summary, self._source_warp)}

    def run(self, step: int, adapter, transformers: Sequence[nn.Module], writer=None,  # noqa: ANN001
            progress: Progress | None = None) -> dict:
        """Generate, score and write the preview of `step` (main rank); returns its previews.jsonl entry."""
        t0 = time.perf_counter()
        frames = self.generate(adapter, transformers)
        scored = self.score(frames)
        best = best_entry(self.history)
        is_best = scored["combined"] is not None and (best is None or scored["combined"] > best["combined"])
        entry = {"step": step, "video": f"step_{step:06d}.mp4", "sheet": f"step_{step:06d}.png", **scored,
                 "best": is_best}
        self.write(entry, frames, writer)
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        with open(self.folder / INDEX, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
        combined = "n/a" if scored["combined"] is None else f"{scored['combined']:.4f}"
        report(progress, "preview", message=f"step {step}: combined score {combined}"
               + (" (best so far)" if is_best else "") + f", {self.folder / entry['sheet']}")
        return entry

    def write(self, entry: dict, frames: np.ndarray, writer=None) -> None:  # noqa: ANN001
        """The preview's mp4 and labelled sheet, and its TensorBoard entries."""
        self.folder.mkdir(parents=True, exist_ok=True)
        job, step = self.inputs.job, entry["step"]
        generate = self.inputs.sample.m_condition[0].numpy() < 0.5
        # the fastest x264 preset: the same picture at crf 18, a larger file, a fraction of the encoding time
        media.write_video(self.folder / entry["video"], side_by_side(job.frames, frames, generate), job.fps,
                          preset="ultrafast")
        sheet = preview_sheet(job.frames, frames, job.edit_mask, step, entry)
        with atomic_path(self.folder / entry["sheet"]) as tmp:
            Image.fromarray(sheet).save(tmp, format="PNG")
        if writer is None:
            return
        writer.add_image("preview/sheet", sheet, step, dataformats="HWC")
        _add_animation(writer, "preview/video", frames, job.fps, step)
        for key, value in entry["scores"].items():
            if value is not None:
                writer.add_scalar(f"preview/{key}", value, step)
        if entry["combined"] is not None:
            writer.add_scalar("preview/combined", entry["combined"], step)


def preview_config(cfg: Config) -> Config:
    """The config a preview generates with: the job's inference settings with the cheap preview ones on top."""
    t = cfg.training
    out = copy.deepcopy(cfg)
    out.inference.steps, out.inference.guidance = t.preview_steps, t.preview_guidance
    if out.inference.guidance_2:  # a second expert's own guidance (the loader resolved it): the preview's too
        out.inference.guidance_2 = t.preview_guidance
    out.inference.step_cache = t.preview_step_cache
    d = out.data
    if is_long(d.frames, d.window):  # a long job: its first window, the one chained inference makes from the edit
        d.frames, d.window = t.preview_frames or d.window, 0
    elif t.preview_frames:
        d.frames = t.preview_frames
    return out


def scores_line(entry: dict) -> str:
    s = entry["scores"]
    combined = "n/a" if entry["combined"] is None else f"{entry['combined']:.3f}"
    parts = [f"step {entry['step']}", f"combined {combined}"]
    for key, label, fmt in (("psnr_kept", "kept PSNR", "{:.1f} dB"), ("ssim_kept", "kept SSIM", "{:.3f}"),
                            ("hist_distance", "edit hist", "{:.3f}"), ("delta_e", "edit dE", "{:.1f}"),
                            ("warp_error_edit", "warp", "{:.4f}"), ("clip_region", "CLIP", "{:.3f}")):
        if s.get(key) is not None:
            parts.append(f"{label} {fmt.format(s[key])}")
    return ", ".join(parts)


def preview_sheet(source: np.ndarray, frames: np.ndarray, edit_mask: np.ndarray, step: int, entry: dict
                  ) -> np.ndarray:
    """Contact sheet: the scores on top, then the source, the preview and the region that may change."""
    sheet = labelled_sheet([("source", source), (f"preview at step {step}", frames),
                            ("may change", outlined_overlay(source, edit_mask))])
    return np.concatenate([label_band(sheet.shape[1], scores_line(entry)), sheet], axis=0)


def _add_animation(writer, tag: str, frames: np.ndarray, fps: float, step: int) -> None:  # noqa: ANN001
    """The preview as an animated GIF in TensorBoard's image panel (what SummaryWriter.add_video writes, which needs
    moviepy, not a requirement here): small frames enlarged to 128 px, large ones reduced to 416 px wide."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    h, w = frames.shape[1:3]
    if w < 128:
        frames = enlarge(frames, view_scale(h, w, 128))
    elif w > 416:
        size = (416, max(1, round(416 * h / w)))
        frames = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames])
    # one fast palette per frame (GIF's own median cut takes longer than the preview's sampling on small models)
    images = [Image.fromarray(f).quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
              for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    image = Summary.Image(height=frames.shape[1], width=frames.shape[2], colorspace=3,
                          encoded_image_string=buf.getvalue())
    writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def _truth(path: str, frames: np.ndarray, fps: float) -> np.ndarray:
    """The ground-truth clip's first frames, as many as the preview has (training.preview_frames may cut them)."""
    truth = media.read_frames(path, fps=fps).frames[:len(frames)]
    if truth.shape[:3] != frames.shape[:3]:
        have, want = truth.shape, frames.shape
        raise EvalInputError(f"training.preview_truth {path}: {have[0]} frames of {have[2]}x{have[1]}, the preview "
                             f"has {want[0]} of {want[2]}x{want[1]}")
    return truth


def _rng_states() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda, np.random.get_state(), random.getstate()


def _set_rng_states(states: tuple) -> None:
    cpu, cuda, np_state, py_state = states
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(np_state)
    random.setstate(py_state)

"""Make a job folder from a raw clip, an edited first frame and a mask source (prepare.py's work).

Layout of JOB/ (every path in edit.toml is relative to JOB, so the folder can be moved):

  edit.toml          the job's config; train.py and infer.py read it as is
  source/00000.png   the clip: data.frames frames at data.fps, fitted to width x height (lossless PNG:
                     no second lossy encode before training; train/infer re-read it through load_job)
  masks/00000.png    one mask per job frame, white = may change (before data.mask_dilate / mask_bbox,
                     which edit.toml applies when the job is loaded)
  edited_first.png   the edited first frame on the job's pixels
  reference/24.png   edited later frames, named by job frame index (only with --reference-frames)
  captions.json      both captions and where they came from
  preview/           the mask over the clip, condition/target videos and contact sheets, summary.json
  manifest.json      inputs (paths, content hashes), settings and, per stage, a key and output hashes

Re-running: each stage (source, edited, reference, masks, captions, config, preview) has a key, a
hash of exactly what it depends on; a stage runs only when its key changed or an output is missing,
so the same inputs are a no-op and e.g. a new edited frame leaves the decoded clip alone (and the
masks too, unless they come from --auto-mask). A stage whose output was changed by hand is left as
is while its inputs stay the same (hand-fixed masks survive; the preview follows them); replacing a
hand-changed output, a folder made from another clip or a folder that is not a job needs --force.
Every write goes to a temporary name in JOB and is renamed into place.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import media
from config.atomic import write_atomic
from config.errors import ConfigError, UserError
from config.loader import PREPARE_INCOMPLETE, load_config, parse_override
from config.progress import Progress, as_progress
from datasets.prepare.folder import JobFolderError
from datasets.prepare.request import PrepareRequest
from datasets.prepare.stages import CONFIG, PREVIEW, JobStages, fit_from, source_to_job
from datasets.samples import join_prompt
from media import MediaError

__all__ = ["PrepareRequest", "PrepareResult", "check_request", "prepare_job", "source_to_job", "summary"]

# Keys prepare bakes into the job (or sets from its own flags): not settable with --set.
OWNED_KEYS = {
    "data.video": "--video", "data.mask": "--mask", "data.edited_frame": "--edited-frame",
    "data.reference_frames": "--reference-frames", "data.fps": "--fps", "data.frames": "--frames",
    "data.window": "--window", "data.start": "--start", "data.width": "--size", "data.height": "--size",
    "data.resize_mode": "--resize-mode",
    "data.mask_threshold": "--mask-threshold", "data.mask_dilate": "--mask-dilate", "data.mask_bbox": "--mask-bbox",
    "data.caption": "--caption", "data.edited_caption": "--edited-caption", "data.trigger": "--trigger",
    "model.ckpt_path": "--model",
}


@dataclass
class PrepareResult:
    out: Path
    ran: list[str]  # stages that (re)ran; empty on a no-op
    meta: dict  # per stage: what later stages and the summary need
    timings: dict[str, float]
    warnings: list[str] = field(default_factory=list)


def check_request(req: PrepareRequest) -> None:
    """Everything that can be checked before reading any media; raises UserError naming the flag."""
    for flag, p in (("--video", req.video), ("--edited-frame", req.edited_frame), ("--mask", req.mask),
                    ("--reference-frames", req.reference_frames), ("--caption-file", req.caption_file),
                    ("--caption-model", req.caption_model), ("--sam2", req.sam2), ("--model", req.model)):
        if p is not None and not Path(p).exists():
            raise UserError(f"{flag} {p}: no such file or folder")
    if req.out.exists() and not req.out.is_dir():
        raise JobFolderError(f"--out {req.out}: exists and is not a folder")
    if req.window:
        if not 1 <= req.window <= media.MAX_NUM_FRAMES or not media.is_4k1(req.window):
            raise UserError(f"--window {req.window}: must be 4k+1 and at most {media.MAX_NUM_FRAMES}")
        if req.frames and req.frames < req.window:
            raise UserError(f"--frames {req.frames}: shorter than --window {req.window}")
    elif not 1 <= req.frames <= media.MAX_NUM_FRAMES or not media.is_4k1(req.frames):
        lo = max(1, (req.frames - 1) // 4 * 4 + 1)
        raise UserError(f"--frames {req.frames}: must be 4k+1 and at most {media.MAX_NUM_FRAMES} "
                        f"(the VAE needs it), e.g. {min(lo, 81)} or {min(lo + 4, 81)}")
    if not 0 < req.fps <= 120 or (req.source_fps is not None and req.source_fps <= 0) or req.start < 0:
        raise UserError("--fps and --source-fps must be positive (fps at most 120) and --start >= 0")
    if req.size and (req.size[0] % 16 or req.size[1] % 16 or min(req.size) <= 0):
        raise UserError(f"--size {req.size[0]}x{req.size[1]}: both sides must be positive multiples of 16")
    if req.resize_mode not in ("crop", "pad"):
        raise UserError(f"--resize-mode {req.resize_mode!r}: use crop or pad")
    if not 0 < req.auto.threshold < 1 or (req.auto.margin or 0) < 0:
        raise UserError("--auto-mask-threshold must be in (0, 1) and --auto-mask-margin >= 0")
    if not 0 <= req.mask_threshold < 1:
        raise UserError(f"--mask-threshold {req.mask_threshold}: must be in [0, 1)")
    if req.mask is not None and (req.auto_mask or req.sam2):
        raise UserError("--mask is a mask already: do not combine it with --auto-mask or --sam2")
    if req.mask is None and not req.auto_mask and not req.sam2:
        raise UserError("say where the video may change: --mask FILE|DIR, --auto-mask, or --sam2 WEIGHTS "
                        "with --sam2-points/--sam2-box")
    if (req.sam2_points or req.sam2_box) and not req.sam2:
        raise UserError("--sam2-points/--sam2-box need --sam2 WEIGHTS_DIR")
    if req.sam2 and not (req.sam2_points or req.sam2_box or req.auto_mask):
        raise UserError("--sam2 needs a prompt on the first frame: --sam2-points, --sam2-box, or --auto-mask")
    if req.sam2 and req.auto_mask and (req.sam2_points or req.sam2_box):
        raise UserError("--sam2 takes either --auto-mask's region or --sam2-points/--sam2-box as its prompt, not both")
    for text in req.overrides:
        dotted = ".".join(parse_override(text)[0])
        if dotted in OWNED_KEYS:
            raise ConfigError(f"--set {dotted}: prepare sets this key from its media; use {OWNED_KEYS[dotted]}")
    if req.overrides:
        load_config(None, req.overrides)  # unknown keys, bad values: fail before any decoding


def whole_clip_frames(req: PrepareRequest) -> int:
    """A long job's frame count when --frames is not given: every job frame from --start to the clip's end."""
    if req.video.is_dir():
        duration = len(media.list_image_files(req.video)) / (req.source_fps or req.fps)
    else:
        duration = media.probe_video(req.video).duration
    have = int(np.ceil((duration - req.start) * req.fps - 1e-6))
    if have < req.window:
        raise MediaError(f"{req.video}: {max(duration - req.start, 0):.2f} s from {req.start:g} s give {max(have, 0)} "
                         f"frames at {req.fps:g} fps, fewer than one --window of {req.window}")
    return have


def prepare_job(req: PrepareRequest, progress: Progress | None = None) -> PrepareResult:
    """prepare.py's job: make or update the job folder `req.out`; returns what ran, the stages' meta and timings.

    `progress` hears of each stage (phase "prepare") and of the long ones' frames (decoding, mask propagation,
    SAM2 tracking). Bad input raises UserError before anything is written; nothing is printed, and warnings are
    returned in the result.
    """
    check_request(req)
    if req.window and not req.frames:
        req.frames = whole_clip_frames(req)
    run = JobStages(req, as_progress(progress))
    video_fp = run.fp(req.video)
    before = run.manifest["inputs"].get("video")
    if before and before["sha256"] != video_fp and not req.force:
        raise JobFolderError(f"{run.out} holds a job made from another clip ({before['path']}); choose a new --out "
                             f"for {req.video}, or pass --force to replace that job")
    identity = {"path": str(req.video.resolve()), "sha256": video_fp}
    if before != identity:  # recorded first, so that a run that fails later still marks whose job this is
        run.manifest["inputs"]["video"] = identity
        run.save()
    marker = run.out / PREPARE_INCOMPLETE
    if not (run.out / CONFIG).is_file() or marker.is_file():
        # A new job says it is incomplete until every stage ran (a failure, Ctrl-C or SIGKILL leaves it saying so);
        # the next run reuses the stages already made and finishes it.
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        write_atomic(marker, f"prepare.py has not finished making this job (started {started}). Run the same "
                             "prepare.py command again: it finishes the job, reusing what is already made.\n")
    try:
        caught = _run_stages(run, req)
    except BaseException as e:
        if marker.is_file():
            with contextlib.suppress(OSError):
                with open(marker, "a", encoding="utf-8") as fh:
                    fh.write(f"The last run stopped with: {e or type(e).__name__}\n")
        raise
    marker.unlink(missing_ok=True)
    messages = list(dict.fromkeys(str(w.message) for w in caught))  # once each, in order
    return PrepareResult(run.out, run.ran, run.meta, run.timings, messages)


def _run_stages(run: JobStages, req: PrepareRequest) -> list[warnings.WarningMessage]:
    """Every stage in order, then the manifest; returns the warnings they raised."""
    video_fp = run.manifest["inputs"]["video"]["sha256"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        src_key, src = run.run_source()
        fit = fit_from(src)
        edited_fp = run.run_edited(src_key, fit)
        run.run_reference(src_key, src, fit)
        run.run_masks(src_key, src, fit, edited_fp)
        captions = run.run_captions(src_key, edited_fp)
        has_reference = bool(run.meta["reference"]["frames"])
        run.run_config(run.config_text(src, captions, has_reference))
        run.run_preview(req.preview)
    run.manifest["inputs"] = {
        "video": {"path": str(req.video.resolve()), "sha256": video_fp},
        "edited_frame": {"path": str(req.edited_frame.resolve()), "sha256": edited_fp},
        **{k: {"path": str(Path(p).resolve()), "fingerprint": fp(p)}
           for k, p, fp in (("mask", req.mask, run.fp), ("caption_file", req.caption_file, run.fp),
                            ("caption_model", req.caption_model, run.model_fp), ("sam2", req.sam2, run.model_fp))
           if p is not None},
        **({"reference_frames": {"path": str(req.reference_frames.resolve()), "files": run.meta["reference"]["frames"]}}
           if req.reference_frames else {}),
    }
    run.manifest["settings"] = {k: v for k, v in asdict(req).items()
                                if k not in ("video", "edited_frame", "out", "mask", "reference_frames", "caption_file",
                                             "caption_model", "sam2", "model", "force", "progress")}
    run.manifest["settings"]["model"] = str(req.model.resolve()) if req.model else ""
    run.save()
    return caught


def summary(req: PrepareRequest, res: PrepareResult) -> str:
    """What was made, what to check before training, and the next command."""
    src, masks, caps = res.meta["source"], res.meta["masks"], res.meta["captions"]
    (w, h), (sw, sh), n = src["size"], src["source_size"], len(src["source_times"])
    cov = np.asarray((res.meta.get("preview") or {}).get("coverage") or masks["coverage"])
    refs = res.meta["reference"]["frames"]
    state = f"updated: {', '.join(res.ran)}" if res.ran else "up to date, nothing changed"
    lines = [
        f"job {res.out} ({state})",
        f"  clip: {n} frames at {req.fps:g} fps ({n / req.fps:.2f} s of {req.video.name} from "
        f"{src['source_times'][0]:.2f} s), {w}x{h} ({req.resize_mode} from {sw}x{sh}, {src['source_fps']:.4g} fps)",
        f"  mask ({masks['kind']}): {cov.min():.1%} to {cov.max():.1%} of each frame may change "
        f"(mean {cov.mean():.1%})",
        "  reference frames: " + (", ".join(f"job frame {j} <- {refs[j]}" for j in sorted(refs, key=int)) or "none"),
        f"  training prompt:  {join_prompt(req.trigger, caps['caption'])!r}",
        f"  inference prompt: {join_prompt(req.trigger, caps['edited_caption'] or caps['caption'])!r}",
        "check before training:",
    ]
    checks = []
    if req.preview:
        checks.append(f"{res.out / PREVIEW}/*_sheet.png and *_mask.mp4: the outlined region must cover all that may "
                      f"change, in every frame, with a little margin")
        checks.append(f"{res.out / PREVIEW / 'inference_sheet.png'}: the first frame is your edit")
    empty = [i for i, c in enumerate(masks["coverage"]) if c == 0]
    if empty:
        checks.append(f"the mask is empty in {len(empty)} frame(s) (first: {empty[0]}): nothing may change there")
    if cov.max() > 0.5:
        checks.append(f"the mask covers up to {cov.max():.0%} of a frame: little is preserved, so the clip "
                      f"teaches less")
    if masks["kind"] != "user":
        checks.append("the automatic mask follows the original object's motion: check the last frames, occlusions "
                      "and fast motion; if it drifts, pass --mask")
    if not caps["caption"]:
        checks.append("no caption: the prompt is only the trigger; pass --caption, --caption-file or --caption-model")
    ckpt = "" if req.model else " --set model.ckpt_path=/path/to/Wan2.1-I2V-14B-480P-Diffusers"
    if not req.model:
        checks.append("model.ckpt_path is not set: pass --model DIR to prepare.py, or --set it for train.py (below)")
    lines += [f"  - {c}" for c in checks + [f"warning: {m}" for m in res.warnings]]
    lines.append(f"next: python train.py --config {res.out / CONFIG}{ckpt}")
    return "\n".join(lines)

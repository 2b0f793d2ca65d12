"""Turn a raw clip and an edited first frame into a job folder that train.py and infer.py run as is.

Example (a 1920x1080 30 fps clip whose first frame you recoloured in an image editor):

  python prepare.py --video walk.mp4 --edited-frame walk_first_edited.png --auto-mask \\
      --caption "a woman in a red jacket walks along a street" \\
      --edited-caption "a woman in a yellow jacket walks along a street" \\
      --model ~/models/Wan2.1-I2V-14B-480P-Diffusers --out jobs/jacket
  python train.py --config jobs/jacket/edit.toml

The job gets 49 frames from --start (4k+1 frames: the VAE needs it) at the model's rate and size: Wan
16 fps, 832x480 (480x832 portrait); HunyuanVideo-I2V (detected from --model, or --set
model.type=hunyuan_video) 24 fps, 624x368. --fps and --size change them, --resize-mode crop|pad.
Export the edited frame from the source's first frame at the source's resolution (or at the job's
size); `--start 2.5` means the frame on screen at 2.5 s.

Where the video may change (white = may change), one of:
  --mask M          a mask video, a folder of images (file k = source frame k) or one image (all frames)
  --auto-mask       where the edited frame differs from the source's first frame (--auto-mask-threshold,
                    default 0.1 of full scale), carried through the clip by optical flow and dilated by
                    --auto-mask-margin px. It follows the ORIGINAL object's motion: it suits edits of an
                    existing object (recolour, texture, an accessory on something that moves with it);
                    occlusions, objects leaving the frame and big appearance changes break it.
  --sam2 DIR        SAM2 tracking (transformers weights folder, e.g. facebook/sam2.1-hiera-small), prompted
                    on the first frame with --sam2-points "x,y;x,y,0" (label 1 = object, 0 = not) and/or
                    --sam2-box x0,y0,x1,y1 in source pixels, or with --auto-mask's difference region.
--mask-dilate and --mask-bbox are written to edit.toml and applied whenever the job is loaded.

Edited later frames (stage 2 of training): --reference-frames DIR, each file named by the source frame
it edits - its number counted from 0 at the start of the source (120.png, frame_0120.jpg) or its time
in seconds (t=7.5s.png). They are stored as JOB/reference/<job frame>.png; a source frame the
job's rate skips is matched to the nearest job frame (with a warning).

Captions: --caption / --edited-caption, or --caption-file (line 1: the source, line 2: the edit), or
--caption-model DIR (a local transformers Florence-2, e.g. florence-community/Florence-2-large, which
captions the source's first frame and your edited frame). The trigger (--trigger) goes in front.

The job folder: edit.toml, source/ (the clip as PNG frames), masks/, edited_first.png, reference/,
captions.json, preview/ (look at it before training) and manifest.json (what it was made from).
Re-running with the same inputs does nothing; changed inputs redo only what depends on them. An
existing folder made from another clip, or files in it you changed, are only replaced with --force.

Preview an existing job (what it feeds the model):
  python prepare.py --preview --config JOB/edit.toml --out preview/
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from config.cli import add_config_arguments, add_quiet_argument, config_from_args, run
from config.console import ConsoleProgress
from config.errors import UserError
from config.schema import Config
from datasets.prepare.captions import DEFAULT_TASK, TASKS
from masks.auto import AutoMaskSettings

TRIGGER = Config().data.trigger


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 832x480, got {text!r}") from None
    return w, h


def _points(text: str) -> list[tuple[float, float, int]]:
    out = []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        v = item.split(",")
        if len(v) not in (2, 3) or (len(v) == 3 and v[2].strip() not in ("0", "1")):
            raise argparse.ArgumentTypeError(f"expected x,y or x,y,label (label 1 or 0), got {item!r}")
        try:
            out.append((float(v[0]), float(v[1]), int(v[2]) if len(v) == 3 else 1))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected numbers in {item!r}") from None
    return out


def _box(text: str) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected x0,y0,x1,y1, got {text!r}") from None
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("inputs and output")
    io.add_argument("--video", type=Path, metavar="SRC", help="the source clip: a video file or a folder of frames")
    io.add_argument("--edited-frame", type=Path, metavar="IMG", help="the edited first frame")
    io.add_argument("--out", type=Path, metavar="DIR", help="the job folder to make or update (or the preview's)")
    io.add_argument("--reference-frames", type=Path, metavar="DIR", help="edited later frames (named as above)")
    io.add_argument("--model", type=Path, metavar="DIR", help="base model weights, written as model.ckpt_path")
    io.add_argument("--force", action="store_true", help="replace a job from another clip, or files changed by hand")
    io.add_argument("--no-preview", dest="make_preview", action="store_false", help="skip JOB/preview/")
    add_quiet_argument(io)
    w = p.add_argument_group("frames")
    w.add_argument("--frames", type=int, default=0,
                   help="frames in the job, 4k+1 (default: the model's, 49 for Wan2.1 and HunyuanVideo)")
    w.add_argument("--window", type=int, default=0,
                   help="a clip longer than the model's window: the window (4k+1, e.g. 81); the job then covers "
                   "--frames frames of any count, by default the whole clip from --start")
    w.add_argument("--fps", type=float, default=0.0,
                   help="the job's frame rate (default: the model's, Wan 16, HunyuanVideo 24)")
    w.add_argument("--start", type=float, default=0.0, metavar="SECONDS", help="start of the window in the source")
    w.add_argument("--size", type=_size, metavar="WxH",
                   help="job size, multiples of 16 (default: the model's, Wan 832x480 / 480x832, "
                   "HunyuanVideo 624x368 / 368x624)")
    w.add_argument("--resize-mode", choices=("crop", "pad"), default="crop", help="fit the source by crop or pad")
    w.add_argument("--source-fps", type=float, metavar="FPS", help="frame rate of a folder of frames (default --fps)")
    m = p.add_argument_group("mask")
    m.add_argument("--mask", type=Path, metavar="M", help="mask video, folder or image (white = may change)")
    m.add_argument("--mask-threshold", type=float, default=0.5, metavar="F", help="--mask pixels above this are white")
    m.add_argument("--auto-mask", action="store_true", help="derive the mask from the edited frame (see above)")
    auto = AutoMaskSettings()
    m.add_argument("--auto-mask-threshold", type=float, default=auto.threshold, metavar="F",
                   help=f"difference counted as edited, fraction of full scale (default {auto.threshold})")
    m.add_argument("--auto-mask-margin", type=int, metavar="PX", help="dilation of the tracked region (0.5%% of size)")
    m.add_argument("--no-auto-mask-refine", dest="auto_refine", action="store_false",
                   help="no colour (GrabCut) refinement of the tracked boundary")
    m.add_argument("--sam2", type=Path, metavar="DIR", help="track the region with SAM2 weights from DIR")
    m.add_argument("--sam2-points", type=_points, metavar="'x,y[,l];..'", help="SAM2 points in source pixels")
    m.add_argument("--sam2-box", type=_box, metavar="x0,y0,x1,y1", help="SAM2 box in source pixels")
    m.add_argument("--mask-dilate", type=int, default=0, metavar="PX", help="edit.toml data.mask_dilate")
    m.add_argument("--mask-bbox", action="store_true", help="edit.toml data.mask_bbox (boxes, as the paper's code)")
    c = p.add_argument_group("captions")
    c.add_argument("--caption", help="caption of the source clip (training)")
    c.add_argument("--edited-caption", help="caption of the edited clip (inference; default: --caption)")
    c.add_argument("--caption-file", type=Path, metavar="TXT", help="line 1: source caption, line 2: edited")
    c.add_argument("--caption-model", type=Path, metavar="DIR", help="caption with a local Florence-2 model")
    c.add_argument("--caption-task", choices=TASKS, default=DEFAULT_TASK, help="Florence-2 task")
    c.add_argument("--caption-max-tokens", type=int, default=96, metavar="N", help="longest model caption (96)")
    c.add_argument("--trigger", default=TRIGGER, help=f"put before both captions (default {TRIGGER})")
    pv = p.add_argument_group("preview of an existing job (and --set for a new job's edit.toml)")
    pv.add_argument("--preview", action="store_true", help="write the preview of the job given by --config")
    add_config_arguments(pv, required=False)
    return p


def _preview(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not args.config or not args.out:
        parser.error("--preview needs --config and --out")
    cfg = config_from_args(args)
    from datasets.job import load_job  # heavy imports (torch) only after the arguments are valid
    from datasets.preview import write_preview

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        job = load_job(cfg, edited=bool(cfg.data.edited_frame))
        summary = write_preview(cfg, job, args.out)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    cov = summary["mask_coverage_per_frame"]
    print(
        f"preview: {summary['frames']} frames {summary['width']}x{summary['height']} at {summary['fps']:g} fps; "
        f"edit region {min(cov):.1%}..{max(cov):.1%} of each frame; samples {summary['samples_per_mode']}; "
        f"written to {args.out}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.preview:
        return _preview(args, parser)
    if args.config:  # validated (exit 2) and printed (--print-config) as by every entry point, then refused
        config_from_args(args)
        raise UserError("--config goes with --preview; a new job is made from --video, --edited-frame and --out")
    if args.print_config:
        parser.error("--print-config needs --config")
    if not (args.video and args.edited_frame and args.out):
        parser.error("a new job needs --video, --edited-frame and --out (see the example in --help)")
    from datasets.prepare.job import PrepareRequest, prepare_job, summary  # heavy imports after parsing

    req = PrepareRequest(
        video=args.video, edited_frame=args.edited_frame, out=args.out, mask=args.mask, auto_mask=args.auto_mask,
        auto=AutoMaskSettings(args.auto_mask_threshold, margin=args.auto_mask_margin, refine=args.auto_refine),
        sam2=args.sam2, sam2_points=args.sam2_points or [], sam2_box=args.sam2_box,
        reference_frames=args.reference_frames, caption=args.caption, edited_caption=args.edited_caption,
        caption_file=args.caption_file, caption_model=args.caption_model, caption_task=args.caption_task,
        caption_max_tokens=args.caption_max_tokens,
        trigger=args.trigger, frames=args.frames, window=args.window, fps=args.fps,
        source_fps=args.source_fps, start=args.start,
        size=args.size, resize_mode=args.resize_mode, mask_threshold=args.mask_threshold,
        mask_dilate=args.mask_dilate, mask_bbox=args.mask_bbox, model=args.model, overrides=args.overrides,
        force=args.force, preview=args.make_preview, progress=not args.quiet,
    )
    console = ConsoleProgress(quiet=args.quiet)
    try:
        result = prepare_job(req, progress=console)
    finally:
        console.close()
    print(summary(req, result))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))

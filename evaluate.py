"""Measure an edit: background kept, edit propagated, motion consistent.

Usage:
  python evaluate.py --config edit.toml                        the job's frames, mask and edited frame vs
                                                               infer.py's result (inference.out, else
                                                               results/ beside the config)/result.mp4
  python evaluate.py --config edit.toml --result a.mp4 --result b.mp4     compare several results
  python evaluate.py --source src.mp4 --result out.mp4 --mask mask.mp4 --edited-frame edited.png

Metrics, per frame and as means over frames 1..T-1 (frame 0 of a loraedit result is the edited frame):
  background   PSNR and SSIM vs the source over the kept region (mask black) and over the whole frame;
               SSIM's local statistics use kept pixels only, so changes inside the mask never lower it
  edit         mean Lab color difference (dE76) and Lab-histogram distance of the edit region vs the
               edited first frame's; CLIP similarity of the edit region's crop (with --clip-model)
  temporal     warping error of consecutive frames with the SOURCE's optical flow (OpenCV DIS,
               occlusions removed by a forward-backward check), next to the source's own
  truth        with --truth (an exact edited clip, e.g. a toy job's truth/ folder): PSNR and SSIM of the
               whole frame and PSNR of the edit region against it
  paper        Table 1 with --clip-model: CLIP score (result frames vs the edited first frame) and
               input similarity (result frame t vs source frame t)
Not measured: LPIPS (not implemented) and the paper's DeQA score (out of scope: it needs its own model).

Writes evaluation.json (every per-frame value), evaluation.png (per-frame plot), comparison.mp4 (source,
ground truth and every result side by side, labelled, small clips enlarged) and comparison.png (the same as a
row per clip, a column per frame) into --out (default: the first result's folder) and prints a summary table
(what it is computing goes to stderr; --quiet: not that).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from config.cli import add_config_arguments, add_quiet_argument, config_from_args, run
from config.console import ConsoleProgress, one_line_warnings, quiet_torchvision_notice
from engine.evaluate.report import PLOT_NAME, REPORT_NAME

EXPLICIT_ONLY = ("source", "mask", "edited_frame", "fps", "mask_threshold")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, required=False)
    g = p.add_argument_group("what to evaluate")
    g.add_argument("--result", action="append", default=[], metavar="PATH",
                   help="result video or PNG-frame folder (repeatable: one column per result). With --config, "
                        "default: infer.py's result.mp4")
    g.add_argument("--truth", metavar="PATH",
                   help="the exact edited clip, when one exists (video or frame folder, e.g. a toy job's truth/): "
                        "adds PSNR/SSIM against it")
    g = p.add_argument_group("explicit inputs (instead of --config)")
    g.add_argument("--source", metavar="PATH", help="the source clip (video, image folder or one image)")
    g.add_argument("--mask", metavar="PATH",
                   help="edit mask (video, folder or one image; white = may change), resized to the frames. "
                        "Without it the whole frame counts as edit region (no background metrics)")
    g.add_argument("--edited-frame", metavar="IMAGE", help="the edited first frame (needed by the edit metrics "
                                                           "and the CLIP score)")
    g.add_argument("--fps", type=float, help="frame rate of image-folder inputs (default: 16)")
    g.add_argument("--mask-threshold", type=float, help="mask pixels above this fraction of white are edit "
                                                        "(default: 0.5)")
    g = p.add_argument_group("metrics and outputs")
    g.add_argument("--clip-model", metavar="DIR",
                   help="local CLIP model folder (transformers CLIPModel or CLIPVisionModelWithProjection with "
                        "its preprocessor_config.json, e.g. openai/clip-vit-large-patch14): enables the CLIP metrics")
    g.add_argument("--include-first-frame", action="store_true",
                   help="count frame 0 in the means (it is the edited frame under the loraedit preset)")
    g.add_argument("--out", metavar="DIR", help=f"where {REPORT_NAME} and {PLOT_NAME} go (default: the first "
                                                "result's folder)")
    add_quiet_argument(g)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.config) == bool(args.source):
        parser.error("give either --config EDIT.toml or --source PATH (with --result)")
    if args.config:
        given = [f"--{n.replace('_', '-')}" for n in EXPLICIT_ONLY if getattr(args, n) is not None]
        if given:
            parser.error(f"{', '.join(given)}: with --config the inputs come from the config (use --set data.KEY=...)")
    elif not args.result:
        parser.error("--source needs --result PATH")

    from engine.evaluate.job import inputs_from_config, inputs_from_paths, run_evaluation

    quiet_torchvision_notice()
    console = ConsoleProgress(quiet=args.quiet)
    with one_line_warnings():
        if args.config:
            inputs = inputs_from_config(config_from_args(args, check_paths=False), args.result, args.truth)
        else:
            inputs = inputs_from_paths(args.source, args.result, args.mask, args.edited_frame,
                                       fps=args.fps or 16.0, threshold=0.5 if args.mask_threshold is None
                                       else args.mask_threshold, truth=args.truth)
        try:
            result = run_evaluation(inputs, args.out, args.clip_model, args.include_first_frame, progress=console)
        finally:
            console.close()
    print(result.summary)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))

"""Turn a raw clip, a mask and an edited first frame into a ready job folder with an edit.toml.

Preview what a job's config will feed the model (works today):

  python prepare.py --preview --config edit.toml --out preview/

writes, for every training sample and the inference sample, the condition video, the mask overlaid
on the source and the target (mp4 each), a contact sheet PNG per sample, and summary.json (frames,
size, fps, mask coverage per frame, samples per mode).

Making a job folder from a raw clip (python prepare.py --video SRC --edited-frame EDIT.png --out JOB)
is not implemented yet (issue 7).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from config.cli import add_config_arguments, config_from_args, run
from config.errors import UserError
from datasets.job import load_job
from datasets.preview import write_preview


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, required=False)
    parser.add_argument("--preview", action="store_true", help="write the preview of the job given by --config")
    parser.add_argument("--out", metavar="DIR", help="output folder (the preview's, or the new job's)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.preview:
        if args.config:
            config_from_args(args)
        raise UserError("making a job folder is not implemented yet (issue 7); use --preview --config edit.toml")
    if not args.config or not args.out:
        parser.error("--preview needs --config and --out")
    cfg = config_from_args(args)
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


if __name__ == "__main__":
    sys.exit(run(main))

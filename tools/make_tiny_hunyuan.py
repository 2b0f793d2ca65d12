"""`python -m tools.make_tiny_hunyuan`: write a tiny random HunyuanVideo-I2V model (models/hunyuan_video/tiny.py) in
one of the weight layouts users download, for tests and CPU demos."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.hunyuan_video.tiny import LAYOUTS, VARIANTS, build_tiny_hunyuan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.make_tiny_hunyuan",
        description="Write a tiny random HunyuanVideo-I2V model (offline, seconds) in one of the weight layouts "
                    "users download. The same --seed gives the same weights in every layout.")
    parser.add_argument("--layout", required=True, choices=LAYOUTS)
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; must be empty)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", choices=VARIANTS, default="latent_concat",
                        help="token_replace writes the 16-channel variant (which the trainer refuses)")
    parser.add_argument("--dtype", choices=("bf16", "fp32", "fp8"), default="bf16", help="single-file dtype")
    args = parser.parse_args(argv)
    try:
        path = build_tiny_hunyuan(args.out, args.layout, args.seed, args.variant, args.dtype)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

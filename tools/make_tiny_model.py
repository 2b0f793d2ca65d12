"""`python -m tools.make_tiny_model`: write a tiny random Wan2.1-I2V model (models/wan/tiny.py) in one of the weight
layouts users download, for tests and CPU demos."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from models.wan.tiny import DTYPES, LAYOUTS, SIZE_DEFAULTS, build_tiny_wan


def _json_object(text: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.make_tiny_model",
        description="Write a tiny random Wan2.1-I2V model (offline, a few seconds) in one of the weight layouts "
                    "users download, for tests and CPU demos. The same --seed gives the same weights in every "
                    "layout.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="layouts:\n"
               "  diffusers    like Wan-AI/Wan2.1-I2V-14B-480P-Diffusers: model_index.json, transformer/, vae/,\n"
               "               text_encoder/, tokenizer/, image_encoder/, image_processor/, scheduler/\n"
               "               (loads with WanImageToVideoPipeline.from_pretrained)\n"
               "  original     like Wan-AI/Wan2.1-I2V-14B-480P: config.json, diffusion_pytorch_model-0000N-of-\n"
               "               0000M.safetensors + .index.json, Wan2.1_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth,\n"
               "               models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth, google/umt5-xxl/,\n"
               "               xlm-roberta-large/ (original Wan key names)\n"
               "  single-file  one ComfyUI-style transformer .safetensors with original keys\n"
               "               (--prefix adds 'model.diffusion_model.'; --dtype fp8 stores float8_e4m3fn)\n\n"
               "example:\n"
               "  python -m tools.make_tiny_model --family wan-i2v --layout original --out /tmp/tiny-wan")
    parser.add_argument("--family", required=True, choices=["wan-i2v", "wan2.2-i2v-a14b"],
                        help="model family: Wan2.1-I2V, or Wan2.2-I2V-A14B (two experts; layouts diffusers, original, "
                             "single-file = the original folder plus one file per expert; --dtype and --prefix only "
                             "for its single files, --sizes not)")
    parser.add_argument("--layout", required=True, choices=LAYOUTS, help="weight layout to write")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; must be empty)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32",
                        help="transformer storage dtype (default fp32, as the real releases; fp8 = float8_e4m3fn, "
                             "single-file only; other components keep the real files' dtypes)")
    parser.add_argument("--prefix", action="store_true", help="single-file: prefix keys with 'model.diffusion_model.'")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--sizes", type=_json_object, metavar="JSON",
                        help="component config overrides, e.g. '{\"transformer\": {\"num_layers\": 4}}' "
                             "(sections: " + ", ".join(SIZE_DEFAULTS) + "; text_dim, image_dim and "
                             "added_kv_proj_dim follow the other components)")
    args = parser.parse_args(argv)
    if args.family == "wan2.2-i2v-a14b":
        from models.wan22.tiny import build_tiny_wan22

        if args.sizes or args.prefix:
            parser.error("--sizes and --prefix are for --family wan-i2v")
        try:
            path = build_tiny_wan22(args.out, args.layout, args.seed, args.dtype)
        except (FileExistsError, ValueError) as e:
            parser.error(str(e))
        print(path)
        return 0
    if args.dtype == "fp8" and args.layout != "single-file":
        parser.error("--dtype fp8 exists only for --layout single-file")
    if args.prefix and args.layout != "single-file":
        parser.error("--prefix applies only to --layout single-file")
    try:
        path = build_tiny_wan(args.out, args.layout, args.seed, args.dtype, args.prefix, overwrite=args.force,
                              sizes=args.sizes)
    except (FileExistsError, ValueError) as e:
        parser.error(str(e))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

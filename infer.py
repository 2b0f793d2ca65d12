"""Generate the edited video from the edited first frame and the trained LoRA.

Usage:
  python infer.py --config edit.toml                     the job's settings ([inference] section)
  python infer.py --config edit.toml --lora a.safetensors:0.8 --lora b.safetensors:0.5 --seed 7
  python infer.py --replay results/result.json           the exact frames of an earlier run again
  python infer.py --config edit.toml --plan               memory and time of the sampling, no weights needed

Defaults come from the config's [inference] section; where it says nothing, Wan's own: 50 steps,
guidance 5.0, the model's flow shift (Wan 480P: 3.0), UniPC, Wan's standard negative prompt, seed 42,
the `loraedit` preset (source with the edit region emptied, frame 0 = the edited frame), and the
newest LoRA of this job's training runs (output_dir/name/*/).

Writes into --out (default: inference.out, else results/ beside the config): result.mp4 (H.264 at the
job's fps), side_by_side.mp4 (source | result | mask overlay), result.json (every setting used, LoRA
checksums, digests; --replay reproduces the frames from it), optional PNG frames, and with --composite
also generated.mp4 (the model's output before the kept region is pasted back). Progress goes to stderr: a bar on
a terminal, a line every few steps in a log (--quiet: none).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from config.cli import add_config_arguments, add_plan_arguments, add_quiet_argument, config_from_args, run
from config.console import ConsoleProgress, one_line_warnings, quiet_torchvision_notice
from config.loader import render_toml
from config.schema import MASK_PRESETS, Config

if TYPE_CHECKING:
    from engine.infer.job import Replay

# flag -> config key it overrides (so the resolved config in the sidecar holds what was used)
FLAG_KEYS = {
    "edited_frame": "data.edited_frame", "mask_preset": "inference.mask_preset", "seed": "seed",
    "steps": "inference.steps", "guidance": "inference.guidance", "guidance_2": "inference.guidance_2",
    "shift": "inference.shift",
    "scheduler": "inference.scheduler", "negative_prompt": "inference.negative_prompt", "out": "inference.out",
    "save_frames": "inference.save_frames", "side_by_side": "inference.side_by_side",
    "composite": "inference.composite", "feather": "inference.composite_feather",
    "step_cache": "inference.step_cache", "step_cache_threshold": "inference.step_cache_threshold",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, required=False)
    g = p.add_argument_group("what to generate")
    g.add_argument("--lora", action="append", metavar="[EXPERT=]PATH[:WEIGHT]",
                   help="LoRA to apply, weight 1 unless given (repeatable: stacked). Default: inference.lora, "
                        "else the newest *.safetensors in output_dir/name/*/ (with its other experts' files). "
                        "EXPERT= (e.g. high_noise=, low_noise=) for a file that does not say which expert it is for")
    g.add_argument("--no-lora", action="store_true", help="generate with the base model only")
    g.add_argument("--edited-frame", metavar="IMAGE", help="the edited first frame (default: data.edited_frame)")
    g.add_argument("--mask-preset", choices=[m for m in MASK_PRESETS if m != "reference"],
                   help="conditioning preset (default: inference.mask_preset = loraedit)")
    g.add_argument("--prompt", help="the whole prompt, used as given (default: data.trigger + data.edited_caption)")
    g.add_argument("--negative-prompt", help="default: inference.negative_prompt, else Wan's standard one")
    g = p.add_argument_group("sampling")
    g.add_argument("--seed", type=int, help="noise seed (default: seed = 42)")
    g.add_argument("--steps", type=int, help="denoising steps (default: inference.steps; 0 = the model's: Wan2.1 50, "
                                             "Wan2.2 40; the paper: 30)")
    g.add_argument("--guidance", type=float,
                   help="classifier-free guidance scale; <= 1 skips the negative pass (default: inference.guidance; "
                        "0 = the model's: Wan2.1 5.0, Wan2.2 3.5)")
    g.add_argument("--guidance-2", type=float,
                   help="the second expert's guidance (Wan2.2: low noise; default: inference.guidance_2)")
    g.add_argument("--shift", type=float, help="flow shift (default: inference.shift; 0 = the model's, Wan 480P 3.0)")
    g.add_argument("--scheduler", choices=("auto", "unipc", "euler"),
                   help="default: inference.scheduler = auto (the model's own: Wan unipc, HunyuanVideo euler)")
    g.add_argument("--step-cache", action=argparse.BooleanOptionalAction, default=None,
                   help="diffusers' first-block cache: skip blocks on steps that barely change (faster, approximate)")
    g.add_argument("--step-cache-threshold", type=float, help="default: inference.step_cache_threshold = 0.05")
    g = p.add_argument_group("outputs")
    g.add_argument("--out", metavar="DIR",
                   help="output folder (default: inference.out, else results/ beside the config)")
    g.add_argument("--frames-dir", metavar="DIR", help="also write lossless PNG frames here")
    g.add_argument("--save-frames", action=argparse.BooleanOptionalAction, default=None,
                   help="PNG frames into OUT/frames (default: inference.save_frames)")
    g.add_argument("--side-by-side", action=argparse.BooleanOptionalAction, default=None,
                   help="write side_by_side.mp4 (default: on)")
    g.add_argument("--composite", action=argparse.BooleanOptionalAction, default=None,
                   help="paste the kept region back from the source with a feathered mask")
    g.add_argument("--feather", type=int, metavar="PIXELS",
                   help="composite feather, inward only: pixels inside the region over which it fades (default: 8)")
    add_quiet_argument(p)
    p.add_argument("--replay", metavar="RESULT.json",
                   help="regenerate exactly the run a result.json describes (its config and settings; flags given "
                        "here still override). Output goes to replay/ beside it unless --out is given")
    add_plan_arguments(p)
    return p


def _toml(value: object) -> str:
    import tomli_w

    return tomli_w.dumps({"v": value})[4:].strip()


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The flags as `--set` overrides (values written as TOML), so they are validated like config keys."""
    return [f"{key}={_toml(getattr(args, name))}" for name, key in FLAG_KEYS.items() if getattr(args, name) is not None]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.config and not args.replay:
        parser.error("--config is required (or --replay RESULT.json)")
    if args.lora and args.no_lora:
        parser.error("--lora and --no-lora exclude each other")
    if args.plan:  # planning needs neither the weights nor the media to exist yet
        if not args.config:
            parser.error("--plan needs --config")
        from engine.plan.job import run_plan

        args.overrides = [*args.overrides, *flag_overrides(args)]
        print(run_plan(config_from_args(args, check_paths=False), args, kind="infer"))
        return 0

    from engine.infer.generate import parse_lora_arg, resolve_loras
    from engine.infer.job import read_replay, run_inference

    quiet_torchvision_notice()
    with one_line_warnings():
        given = [parse_lora_arg(x) for x in args.lora or []]
        replay = read_replay(args.replay) if args.replay else None
        cfg = load(args, replay)
        if cfg is None:
            return 0
        if replay is not None:
            args.prompt = args.prompt or replay.data["prompt"]
            if not given and not args.no_lora:  # the sidecar's LoRAs, or none if it had none
                given, args.no_lora = replay.loras, not replay.loras
        loras, note = resolve_loras(cfg, given, args.no_lora)
        print(note, file=sys.stderr if note.startswith("warning") else sys.stdout)
        frames_dir = Path(args.frames_dir).resolve() if args.frames_dir else None
        console = ConsoleProgress(quiet=args.quiet)
        try:
            result = run_inference(cfg, loras, args.prompt, frames_dir, replay, progress=console)
        finally:
            console.close()
    print(result.summary)
    return 0


def load(args: argparse.Namespace, replay: Replay | None) -> Config | None:
    """The config: --config with --set and the flags, or the replayed sidecar's with them. None after
    --print-config."""
    from engine.infer.job import replay_config

    overrides = [*args.overrides, *flag_overrides(args)]
    if replay is None:
        args.overrides = overrides
        return config_from_args(args)
    if args.config:
        warnings.warn(f"--replay: the config comes from {args.replay}; {args.config} is not read", stacklevel=1)
    if args.out is None:
        overrides.append(f"inference.out={_toml(str(Path(args.replay).resolve().parent / 'replay'))}")
    cfg = replay_config(replay, overrides)
    if args.print_config:
        print(render_toml(cfg), end="")
        return None
    return cfg


if __name__ == "__main__":
    sys.exit(run(main))

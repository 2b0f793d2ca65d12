"""Fit a mask-aware LoRA to one clip (paper Sec. 3.3).

Usage:
  python train.py --config edit.toml                       one process (GPU, or CPU for tiny models)
  deepspeed train.py --config edit.toml                    every GPU of this machine
  deepspeed --hostfile hosts.txt train.py --config edit.toml   several machines (see README)

Stage 1 trains on the clip itself (training.steps); stage 2, when data.reference_frames holds edited
later frames, continues on them mixed with the clip (training.reference_steps). Outputs go to
output_dir/name/<timestamp>/: lora.safetensors (ComfyUI/diffusers-loadable), intermediate LoRAs,
config.toml, tensorboard/ and resumable checkpoints/.

Example:
  python train.py --config job/edit.toml --set training.steps=200
  python train.py --config job/edit.toml --resume            # continue the newest interrupted run
  python train.py --config job/edit.toml --plan --gpu-memory 24GB   # memory and time first, no weights needed

Progress goes to stderr: a bar on a terminal, a line every few steps in a log file (--quiet: none). Ctrl-C or
SIGTERM during training writes a checkpoint at the end of the step and prints the --resume command.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Sequence

from config.cli import (
    add_config_arguments,
    add_plan_arguments,
    add_quiet_argument,
    config_from_args,
    run,
    stop_on_signals,
)
from config.console import ConsoleProgress
from config.progress import ProgressEvent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN_DIR",
                        help="continue from a checkpoint: the newest run of this job, or the given run folder")
    parser.add_argument("--local_rank", type=int, default=0, help=argparse.SUPPRESS)  # set by the deepspeed launcher
    add_quiet_argument(parser)
    add_plan_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.plan:  # planning needs neither the weights nor the media to exist yet
        from engine.plan.job import run_plan

        print(run_plan(config_from_args(args, check_paths=False), args))
        return 0
    cfg = config_from_args(args)
    from engine.train.job import run_training  # heavy imports only after the config is valid

    # Every rank reports its steps; only rank 0's are shown.
    console = ConsoleProgress(quiet=args.quiet or os.environ.get("RANK", "0") != "0")
    training = threading.Event()  # set once steps run: from then on SIGINT/SIGTERM stop with a checkpoint

    def progress(event: ProgressEvent) -> None:
        if event.phase == "train":
            training.set()
        console(event)

    try:
        with stop_on_signals(threading.Event(), training.is_set) as stop:
            result = run_training(cfg, resume=args.resume or None, resume_requested=args.resume is not None,
                                  progress=progress, stop=stop)
    finally:
        console.close()
    import torch.distributed as td

    if not td.is_initialized() or td.get_rank() == 0:
        if result.interrupted:
            print(f"interrupted at step {result.steps}; checkpoint saved. Continue with: "
                  f"python train.py --config {args.config} --resume {result.run_dir}")
        else:
            print(f"trained {result.steps} steps in {result.seconds:.0f}s, final loss {result.final_loss:.4f}; "
                  f"LoRA: {result.lora}")
            _print_experts(cfg, result.loras)
    return 0


def _print_experts(cfg, loras: dict) -> None:  # noqa: ANN001 (a Config)
    """For a model with several experts: where the boundary is (the sampler's timesteps) and each expert's LoRA."""
    from models.registry import family

    experts = family(cfg.model.type).experts
    if len(experts) > 1:
        for e in experts:
            print(f"  {e.describe()}: {loras.get(e.name) or 'not trained (model.experts), no LoRA file'}")


if __name__ == "__main__":
    sys.exit(run(main))

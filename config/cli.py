"""What every entry point shares: `--config` / `--set` / `--quiet` arguments, signal handling for cooperative stops,
and the user-error exit path. (Progress display: config.console.)"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

from config.errors import UserError
from config.loader import load_config, render_toml
from config.schema import Config

EXIT_USER_ERROR = 2


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--config", required=required, metavar="EDIT.toml",
        help="the job's TOML config (see examples/edit.toml for every key)",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override a config key, e.g. --set training.steps=200 (repeatable; value read as TOML)",
    )
    parser.add_argument(
        "--print-config", action="store_true",
        help="print the resolved config (every key, with its doc) and exit",
    )


def add_quiet_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--quiet", action="store_true",
                        help="no progress display (bars on a terminal, progress lines in a log); errors, warnings "
                             "and the result still print")


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """`--plan` and its options (train.py, infer.py): memory and time of the job, without weights or a GPU."""
    g = parser.add_argument_group("planning (no weights, no GPU needed)")
    g.add_argument("--plan", action="store_true",
                   help="print memory per GPU, FLOPs and times on common GPUs for this job, then exit")
    g.add_argument("--variant", metavar="NAME",
                   help="the model to plan for when model.ckpt_path does not exist yet, e.g. wan2.1-i2v-14b-480p")
    g.add_argument("--gpu-memory", metavar="SIZE",
                   help="with --plan: list the cheapest settings that fit this much GPU memory, e.g. 24GB")
    g.add_argument("--gpu", action="append", default=[], metavar="NAME=TFLOPS[:GB]",
                   help="with --plan: add a GPU (dense bf16 TFLOPS, memory), e.g. 'MI300X=1307:192' (repeatable)")
    g.add_argument("--utilization", type=float, metavar="FRACTION",
                   help="with --plan: assumed fraction of peak throughput reached (default 0.5)")


def config_from_args(args: argparse.Namespace, check_paths: bool = True) -> Config:
    """Load `--config` with its `--set` overrides; with `--print-config`, print it and exit 0."""
    cfg = load_config(args.config, args.overrides, check_paths=check_paths)
    if getattr(args, "print_config", False):
        print(render_toml(cfg), end="")
        raise SystemExit(0)
    return cfg


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event, armed: Callable[[], bool]) -> Iterator[threading.Event]:
    """SIGINT and SIGTERM set `stop` (a job's cooperative stop: it checkpoints and returns) once `armed()` says the
    job can stop cleanly; before that they interrupt as usual (KeyboardInterrupt). Main thread only."""
    def handler(signum: int, frame: object) -> None:  # noqa: ARG001 (signal handler signature)
        if not armed():
            raise KeyboardInterrupt
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run an entry point's `main`; a `UserError` becomes one line on stderr and exit code 2."""
    try:
        return int(main(argv) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

"""Generate the edited video from the edited first frame and the trained LoRA.

Usage: python infer.py --config edit.toml
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from config.cli import add_config_arguments, config_from_args, run
from config.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config_from_args(args)
    raise UserError("infer.py is not implemented yet (issue 6); the config is valid")


if __name__ == "__main__":
    sys.exit(run(main))

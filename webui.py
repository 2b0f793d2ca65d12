"""The LoRA-Edit web page: one edit from the clip to the result, in your browser.

  python webui.py                                  http://127.0.0.1:7860, workspace ./workspace
  python webui.py --workspace ~/edits --model-dir ~/models    your model folders to choose from

Steps: 1 the clip (upload or pick, window, size), 2 where it may change (paint on the first frame,
SAM2 clicks, an uploaded mask, or derived from the edited frame), 3 the edited first frame (and
captions), 4 train (with the memory plan for your GPU; stop and resume), 5 the edited video with
its metrics. Jobs are the job folders of prepare.py / train.py / infer.py (WORKSPACE/jobs/NAME):
a job made here runs with `python train.py --config WORKSPACE/jobs/NAME/edit.toml`, and a job made
by `prepare.py --out WORKSPACE/jobs/NAME` opens here. Everything is kept on disk: close the page or
restart the server at any time. Training and generation run as their own processes.

Safe by default: the server listens on 127.0.0.1 only (--host to change, --share for a public
link: both print a warning), every path stays inside the workspace (model folders also in
--model-dir folders, read only), and uploads are checked (type, size, content) before anything is
written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workspace", type=Path, default=Path("workspace"),
                   help="the folder holding jobs/, videos/, models/ and the page's state (default ./workspace)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also make a public Gradio link (off unless asked)")
    p.add_argument("--model-dir", type=Path, action="append", default=[], metavar="DIR",
                   help="a model folder, or a folder of model folders, to choose from (repeatable; read only)")
    p.add_argument("--max-upload-mb", type=int, default=2048, metavar="MB", help="largest upload (default 2048)")
    p.add_argument("--open-browser", action="store_true", help="open the page in the default browser")
    args = p.parse_args(argv)
    for d in args.model_dir:
        if not d.is_dir():
            p.error(f"--model-dir {d}: no such folder")
    from webui.app import serve

    serve(args.workspace, args.host, args.port, args.share, args.model_dir, args.max_upload_mb, args.open_browser)
    return 0


if __name__ == "__main__":
    sys.exit(main())

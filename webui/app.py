"""Serve the page: the workspace, the Gradio app, and the safety settings of its server."""

from __future__ import annotations

import os
from pathlib import Path

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(workspace: Path, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
          model_dirs: list[Path] = (), max_upload_mb: int = 2048, open_browser: bool = False) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
    from webui.backend import TOY_MODEL
    from webui.page import CSS, build
    from webui.session import Limits, Session
    from webui.workspace import Workspace

    roots = [TOY_MODEL, *model_dirs] if TOY_MODEL.is_dir() else list(model_dirs)
    ws = Workspace(workspace, model_roots=roots)
    session = Session(ws, Limits(max_video_bytes=max_upload_mb * 2**20))
    if host not in LOOPBACK:
        print(f"warning: serving on {host}: anyone who can reach this address can run jobs and read the workspace "
              f"(the page has no login)")
    if share:
        print("warning: --share makes a public link: anyone with it can run jobs on this machine")
    print(f"workspace: {ws.root}")
    demo = build(session)
    demo.queue(default_concurrency_limit=2)
    demo.launch(server_name=host, server_port=port, share=share, inbrowser=open_browser,
                allowed_paths=[str(ws.root)], max_file_size=max_upload_mb * 2**20, css=CSS, show_error=False,
                footer_links=[])

"""Helpers of the page's tests: the server as a subprocess, headless Chromium through Playwright,
painting on the mask editor's canvas, a snapshot of the workspace's files, and the toy example
made into a job by prepare.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "examples" / "toy" / "example"
TOY_MODEL = REPO / "examples" / "toy" / "model"
CHROMIUM = os.environ.get("WEBUI_TEST_CHROMIUM", "/usr/bin/chromium")
# As the machine notes say: no background networking (this machine has no network), fresh profile per launch.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def browser_missing() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r requirements-dev.txt)"
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python webui.py` on a free port, its output in a log file."""

    def __init__(self, workspace: Path, log: Path, port: int | None = None) -> None:
        self.workspace, self.log, self.port = workspace, log, port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 180.0) -> Server:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, str(REPO / "webui.py"), "--workspace", str(self.workspace),
                                          "--port", str(self.port)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"the server did not start in {timeout:.0f} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def stop_tasks(workspace: Path) -> None:
    """End every background task the page started (tests leave no process behind)."""
    import psutil

    for state in workspace.glob("page/*/tasks/*.json"):
        info = json.loads(state.read_text())
        if info.get("state") == "running" and info.get("pid"):
            try:
                p = psutil.Process(int(info["pid"]))
                for child in p.children(recursive=True):
                    child.kill()
                p.kill()
            except psutil.Error:
                pass


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def paint(page, editor: str, image_size: tuple[int, int], x0: int, y0: int, x1: int, y1: int, step: int = 2) -> None:
    """Brush strokes over the image rectangle [x0, x1] x [y0, y1] (image pixels) of a gr.ImageEditor.

    The editor draws the image centred in its canvas at the zoom its toolbar shows (e.g. "900%")."""
    page.locator(f"{editor} button[aria-label=Brush]").click()
    text = page.locator(editor).inner_text()
    zoom = float(re.search(r"(\d+(?:\.\d+)?)%", text).group(1)) / 100
    canvas = page.locator(f"{editor} canvas").first
    canvas.scroll_into_view_if_needed()  # the mouse paints only inside the viewport
    box = canvas.bounding_box()
    w, h = image_size
    left = box["x"] + box["width"] / 2 - w * zoom / 2
    top = box["y"] + box["height"] / 2 - h * zoom / 2
    for y in range(y0, y1 + 1, step):
        page.mouse.move(left + (x0 + 0.5) * zoom, top + (y + 0.5) * zoom)
        page.mouse.down()
        page.mouse.move(left + (x1 + 0.5) * zoom, top + (y + 0.5) * zoom, steps=6)
        page.mouse.up()


def prepare_toy_job(out: Path, *sets: str) -> None:
    """The toy example (a red disc moving down, 9 frames at 32x32, its mask and cyan edit) as a job folder,
    made by prepare.py as a user would."""
    argv = [sys.executable, str(REPO / "prepare.py"), "--video", str(TOY / "source"), "--source-fps", "16",
            "--mask", str(TOY / "masks"), "--edited-frame", str(TOY / "edited_first.png"), "--caption", "a red disc",
            "--model", str(TOY_MODEL), "--frames", "9", "--size", "32x32", "--out", str(out), "--no-preview",
            "--quiet", "--set", "model.dtype='float32'"]
    for s in sets:
        argv += ["--set", s]
    subprocess.run(argv, check=True, cwd=REPO, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})

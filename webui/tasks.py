"""Background tasks of a job (prepare, train, generate), each its own detached process (webui.runner).

State lives in WORKSPACE/page/<job>/tasks/<kind>.json and <kind>.log, so a reopened page or a
restarted server finds a running task, its progress and its outcome. One task per job at a time:
training and generation would compete for the same GPU.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from config.atomic import write_atomic
from webui.workspace import PageError, Workspace

REPO = Path(__file__).resolve().parents[1]
KINDS = ("prepare", "train", "generate")
STARTING_GRACE = 60.0  # seconds a task may stay "starting" before its runner is presumed dead
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Task:
    kind: str
    state: str  # starting | running | done | failed | stopped | lost
    info: dict
    log: Path

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running")

    def tail(self, lines: int = 12) -> str:
        return log_tail(self.log, lines)

    def last_error(self) -> str:
        """The user-facing line of a failed CLI (its one-line error), else the log's last line."""
        lines = [ln for ln in self.tail(40).splitlines() if ln.strip() and not ln.startswith("$ ")]
        for ln in reversed(lines):
            if ln.lower().startswith("error") or ": error" in ln.lower():
                return ln.strip()
        return lines[-1].strip() if lines else "(no output)"


def log_tail(path: Path, lines: int = 12, max_bytes: int = 65536) -> str:
    """The last lines of a log, with progress bars (carriage returns) reduced to their latest state."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - max_bytes))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    text = _ANSI.sub("", text)
    out = [next((seg for seg in reversed(ln.split("\r")) if seg.strip()), "") for ln in text.split("\n")]
    return "\n".join(out[-lines - 1:]).strip("\n")


def _alive(info: dict) -> bool:
    import psutil

    pid = info.get("pid")
    if not pid:
        return False
    try:
        p = psutil.Process(int(pid))
        return abs(p.create_time() - float(info.get("create_time", 0))) < 1.0 and p.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError):
        return False


class Tasks:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._children: dict[tuple[str, str], subprocess.Popen] = {}  # reaped on status checks

    def _paths(self, job: str, kind: str) -> tuple[Path, Path]:
        if kind not in KINDS:
            raise ValueError(kind)
        d = self.ws.tasks_dir(job)
        return d / f"{kind}.json", d / f"{kind}.log"

    def get(self, job: str, kind: str) -> Task | None:
        state_path, log = self._paths(job, kind)
        try:
            info = json.loads(state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        child = self._children.get((job, kind))
        if child is not None and child.poll() is not None:
            del self._children[(job, kind)]
        state = info.get("state", "lost")
        if state == "running" and not _alive(info):
            state = "lost"
        elif state == "starting" and time.time() - float(info.get("queued", 0)) > STARTING_GRACE and child is None:
            state = "lost"
        return Task(kind, state, info, log)

    def active(self, job: str) -> Task | None:
        for kind in KINDS:
            task = self.get(job, kind)
            if task and task.active:
                return task
        return None

    def start(self, job: str, kind: str, commands: list[list[str]], **extra: object) -> Task:
        """Run `commands` one after the other in a detached process; refuses while another task of the job runs."""
        busy = self.active(job)
        if busy:
            raise PageError(f"job {job}: {busy.kind} is still running; stop it or wait until it ends")
        state_path, log = self._paths(job, kind)
        state_path.parent.mkdir(parents=True, exist_ok=True)
        info = {"kind": kind, "commands": commands, "cwd": str(REPO), "log": str(log), "state": "starting",
                "queued": time.time(), **extra}
        write_atomic(log, b"")  # a new task starts a new log
        write_atomic(state_path, json.dumps(info, indent=1))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(log, "ab") as err:  # the runner's own failures (an import error) land in the log too
            child = subprocess.Popen([sys.executable, "-m", "webui.runner", str(state_path)], cwd=str(REPO), env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                     start_new_session=True)  # outlives the server and its Ctrl-C
        self._children[(job, kind)] = child
        return Task(kind, "starting", info, log)

    def stop(self, job: str, kind: str) -> bool:
        """Ask a running task to stop (SIGTERM: train.py checkpoints first). False if it was not running."""
        task = self.get(job, kind)
        if not task or task.state != "running":
            return False
        os.kill(int(task.info["pid"]), signal.SIGTERM)
        return True

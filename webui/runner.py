"""Run one background task of the page: its commands in order, output into its log, the outcome into
its state file. Started detached by webui.tasks (`python -m webui.runner STATE.json`), so the task
outlives a closed browser or a restarted server, and its state stays readable on disk.

The state file is written by the page once ("starting"), then only by this process: "running" with
its pid, then "done", "failed" (a command exited non-zero) or "stopped" (SIGTERM/SIGINT, forwarded
to the running command: train.py saves a resumable checkpoint on it, and no later command starts).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from config.atomic import write_atomic


def _update(path: Path, **changes: object) -> dict:
    state = {**json.loads(path.read_text(encoding="utf-8")), **changes}
    write_atomic(path, json.dumps(state, indent=1))
    return state


def main(state_path: str) -> int:
    path = Path(state_path)
    state = json.loads(path.read_text(encoding="utf-8"))
    import psutil  # a DeepSpeed dependency: present wherever train.py runs

    me = psutil.Process()
    _update(path, state="running", pid=me.pid, create_time=me.create_time(), started=time.time())
    child: subprocess.Popen | None = None
    stop = False

    def on_signal(signum: int, frame: object) -> None:  # noqa: ARG001 (signal handler signature)
        nonlocal stop
        stop = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    returncode = 0
    with open(state["log"], "ab", buffering=0) as log:
        for argv in state["commands"]:
            if stop:
                break
            log.write(("$ " + " ".join(argv) + "\n").encode())
            child = subprocess.Popen(argv, cwd=state["cwd"], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
            while True:
                try:
                    returncode = child.wait()
                    break
                except InterruptedError:  # pragma: no cover (PEP 475 retries; kept for clarity)
                    continue
            if returncode != 0:
                break
    outcome = "stopped" if stop else ("done" if returncode == 0 else "failed")
    _update(path, state=outcome, returncode=returncode, ended=time.time())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

"""The one place the page calls the project: prepare.py, train.py (and its --plan), infer.py and
evaluate.py, as the commands a user would type. Long work runs as background tasks (webui.tasks);
the plan runs here and now. When the job functions land (prepare/train/infer/evaluate taking a
config and a progress callback), this module is what switches to them.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from webui.tasks import REPO, Task, Tasks
from webui.workspace import PageError

TOY_MODEL = REPO / "examples" / "toy" / "model"
# The bundled toy model's settings (those of examples/quickstart.sh): it runs on a CPU in seconds.
TOY_SETTINGS = ["model.dtype='float32'", "adapter.rank=8", "optimizer.lr=1e-3", "training.steps=100",
                "training.reference_steps=50", "training.activation_checkpointing=false",
                "training.save_every_n_steps=0", "inference.steps=20", "inference.guidance=1.0"]
PLAN_TIMEOUT = 900  # seconds; the 14B model plans in 20-60 s on two cores


def python(script: str, *args: str) -> list[str]:
    return [sys.executable, str(REPO / script), *args]


def is_toy(model: str | Path) -> bool:
    return bool(model) and Path(model).resolve() == TOY_MODEL.resolve()


@dataclass
class JobInputs:
    """Everything the page collected for prepare.py; paths are absolute and inside the workspace (or a
    model root), checked by the page before this is built."""

    video: Path
    edited_frame: Path
    out: Path
    model: Path
    start: float = 0.0
    frames: int = 49
    window: int = 0  # a long clip: `frames` in chained windows of this many
    fps: float = 0.0
    size: tuple[int, int] | None = None
    resize_mode: str = "crop"
    mask_mode: str = "paint"  # paint | upload | auto | sam2
    mask: Path | None = None
    sam2: Path | None = None
    sam2_points: list[tuple[float, float, int]] = field(default_factory=list)
    mask_dilate: int = 0
    mask_bbox: bool = False
    reference_frames: Path | None = None
    caption: str = ""
    edited_caption: str = ""
    caption_model: Path | None = None


def prepare_command(inp: JobInputs) -> list[str]:
    argv = python("prepare.py", "--video", str(inp.video), "--edited-frame", str(inp.edited_frame),
                  "--out", str(inp.out), "--model", str(inp.model), "--frames", str(inp.frames),
                  "--start", f"{inp.start:g}", "--resize-mode", inp.resize_mode,
                  "--mask-dilate", str(inp.mask_dilate), "--quiet")
    if inp.window:
        argv += ["--window", str(inp.window)]
    if inp.fps:
        argv += ["--fps", f"{inp.fps:g}"]
    if inp.size:
        argv += ["--size", f"{inp.size[0]}x{inp.size[1]}"]
    if inp.mask_bbox:
        argv.append("--mask-bbox")
    if inp.mask_mode in ("paint", "upload"):
        argv += ["--mask", str(inp.mask)]
    elif inp.mask_mode == "auto":
        argv.append("--auto-mask")
    elif inp.mask_mode == "sam2":
        pts = ";".join(f"{x:g},{y:g},{label}" for x, y, label in inp.sam2_points)
        argv += ["--sam2", str(inp.sam2), "--sam2-points", pts]
    else:
        raise ValueError(inp.mask_mode)
    if inp.reference_frames:
        argv += ["--reference-frames", str(inp.reference_frames)]
    if inp.caption:
        argv += ["--caption", inp.caption]
    if inp.edited_caption:
        argv += ["--edited-caption", inp.edited_caption]
    if inp.caption_model and not (inp.caption and inp.edited_caption):
        argv += ["--caption-model", str(inp.caption_model)]
    if is_toy(inp.model):
        for s in TOY_SETTINGS:
            argv += ["--set", s]
    return argv


# ------------------------------------------------------------------------------------------ plan
@dataclass
class Plan:
    text: str  # train.py --plan's whole report
    verdict: str  # its "Fitting N GiB ..." paragraph
    fits: bool  # the job as configured fits the GPU
    advice: list[str]  # --set overrides of the cheapest settings that fit ([] if it fits or nothing does)
    seconds: float


def plan(edit_toml: Path, gpu_gb: float, overrides: list[str] = ()) -> Plan:
    """`train.py --config JOB/edit.toml --plan --gpu-memory NGB`: memory per GPU, and what fits."""
    argv = python("train.py", "--config", str(edit_toml), "--plan", "--gpu-memory", f"{gpu_gb:g}GB")
    for s in overrides:
        argv += ["--set", s]
    t0 = time.time()
    try:
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=PLAN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise PageError(f"the plan took longer than {PLAN_TIMEOUT} s; run it in a terminal: "
                        f"{shlex.join(argv)}") from None
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        raise PageError(f"train.py --plan failed: {lines[-1] if lines else 'exit code ' + str(done.returncode)}")
    return parse_plan(done.stdout, time.time() - t0)


def parse_plan(text: str, seconds: float = 0.0) -> Plan:
    verdict = text[text.index("Fitting"):].strip() if "Fitting" in text else ""
    fits = verdict.split("\n", 1)[0].endswith("it fits.")
    advice: list[str] = []
    for line in verdict.splitlines()[1:]:
        m = re.match(r"\s*[\d.]+ \S+ fits:\s+(.*)$", line)
        if m:
            advice = [tok for tok in shlex.split(m.group(1)) if tok != "--set"]
    return Plan(text.strip(), verdict, fits, advice, seconds)


# ------------------------------------------------------------------------------------------ train and generate
def train_command(edit_toml: Path, overrides: list[str], resume: Path | None = None,
                  launcher: str = "python") -> list[str]:
    if launcher == "deepspeed":
        exe = shutil.which("deepspeed")
        if not exe:
            raise PageError("the deepspeed launcher is not on PATH; use one process (python)")
        argv = [exe, str(REPO / "train.py"), "--config", str(edit_toml)]
    else:
        argv = python("train.py", "--config", str(edit_toml))
    for s in overrides:
        argv += ["--set", s]
    if resume is not None:
        argv += ["--resume", str(resume)]
    return argv


def generate_commands(edit_toml: Path, out: Path, lora: Path | None, steps: int, seed: int,
                      guidance: float) -> list[list[str]]:
    """infer.py into `out`, then evaluate.py on its result.mp4 (the job's source, mask and edited frame)."""
    infer = python("infer.py", "--config", str(edit_toml), "--out", str(out), "--steps", str(steps),
                   "--seed", str(seed), "--guidance", f"{guidance:g}")
    infer += ["--lora", str(lora)] if lora else ["--no-lora"]
    evaluate = python("evaluate.py", "--config", str(edit_toml), "--result", str(out / "result.mp4"),
                      "--out", str(out))
    return [infer, evaluate]


def start(tasks: Tasks, job: str, kind: str, commands: list[list[str]], **extra: object) -> Task:
    return tasks.start(job, kind, commands, **extra)

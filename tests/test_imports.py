"""Guard: the repo's `datasets/` package shadows Hugging Face's `datasets` (DESIGN.md hazard).

Imports every dependency the project uses with the repo root first on sys.path, as the entry points
run, and fails if any of them resolves `datasets` to something other than our folder or breaks on it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import importlib, sys
deps = ["torch", "numpy", "PIL", "cv2", "av", "safetensors", "tomli_w", "tqdm", "sentencepiece",
        "tokenizers", "accelerate", "transformers", "peft", "diffusers", "deepspeed",
        "torch.utils.tensorboard"]
for name in deps:
    importlib.import_module(name)
from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanTransformer3DModel  # noqa: F401
from transformers import CLIPVisionModel, UMT5EncoderModel  # noqa: F401
import datasets, masks, models, config  # noqa: E401
for pkg in (datasets, masks, models, config):
    assert pkg.__file__.startswith(sys.argv[1]), f"{pkg.__name__} resolved to {pkg.__file__}"
import importlib.metadata as md
try:
    md.version("datasets")
    print("HF datasets is installed: remove it (pip uninstall datasets); it shadows ./datasets")
    sys.exit(3)
except md.PackageNotFoundError:
    pass
print("ok")
"""


def test_datasets_name_resolves_to_the_repo_package():
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cpu",
                                                        "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr


def test_requirements_do_not_pull_hf_datasets():
    for req in ("requirements.txt", "requirements-dev.txt"):
        names = [line.split(">")[0].split("=")[0].strip().lower()
                 for line in (REPO / req).read_text().splitlines() if line and not line.startswith(("#", "-r"))]
        assert "datasets" not in names, req

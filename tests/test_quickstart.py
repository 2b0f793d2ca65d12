"""The README's first command, end to end on the committed toy model: prepare -> train (2 stages) -> infer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

import media

REPO = Path(__file__).resolve().parents[1]


def test_quickstart_runs_end_to_end_on_the_toy_model(tmp_path):
    env = {**os.environ, "QUICKSTART_OUT": str(tmp_path / "qs"), "QUICKSTART_STEPS": "2",
           "QUICKSTART_INFER_STEPS": "2", "DS_ACCELERATOR": "cpu",
           "QUICKSTART_PREVIEWS": "2",  # 2 previews, not 3 (CI time): tests/test_previews.py tests them
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("QUICKSTART_MODEL", None)  # the default: examples/toy/model
    proc = subprocess.run(["bash", "examples/quickstart.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = tmp_path / "qs"
    assert "ran on the toy model" in proc.stdout and f"{out}/result/result.mp4" in proc.stdout
    for name in ("result.mp4", "side_by_side.mp4"):
        clip = media.read_video(out / "result" / name)
        assert clip.frames.shape[0] == 9 and round(clip.fps) == 16, name
    assert media.read_video(out / "result" / "result.mp4").frames.shape[1:3] == (32, 32)
    assert len(list((out / "result" / "frames").glob("*.png"))) == 9
    (lora,) = (out / "runs").glob("*/*/lora.safetensors")
    assert load_file(lora) and (lora.parent / "lora_stage1.safetensors").exists()  # stage 2 ran after stage 1
    assert (out / "job" / "reference" / "8.png").exists()  # the edited later frame reached the job
    assert (out / "job" / "preview" / "summary.json").exists()
    assert [e["step"] for e in json.loads((lora.parent / "summary.json").read_text())["previews"]] == [2, 3]
    # Both results (with and without the LoRA) scored against the exact ground truth, shown side by side.
    report = json.loads((out / "compare" / "evaluation.json").read_text())
    assert [r["label"] for r in report["results"]] == ["result/result.mp4", "no-lora/result.mp4"]
    assert all("psnr_truth" in r["summary"] and "psnr_truth_edit" in r["summary"] for r in report["results"])
    comparison = media.read_video(out / "compare" / "comparison.mp4").frames
    assert comparison.shape[0] == 9 and comparison.shape[2] >= 4 * 32 * 8  # 4 panels, enlarged 8x
    assert (out / "compare" / "comparison.png").stat().st_size > 5000
    assert "LoRA vs no LoRA: whole frame" in proc.stdout and " dB" in proc.stdout

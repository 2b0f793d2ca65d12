"""The README's facts about the files it describes, checked against the files (issue 22)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import media
from config.schema import Config

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
TEXT = " ".join(README.split())  # sentences wrap across lines


def test_the_example_clips_size_fps_and_length_are_what_the_readme_says():
    m = re.search(r"`examples/clip\.mp4`, a red ball in a park, (\d+)x(\d+) at (\d+) fps, ([\d.]+) s", TEXT)
    assert m, "the README no longer states examples/clip.mp4's size and frame rate"
    info = media.probe_video(REPO / "examples" / "clip.mp4")
    assert (info.width, info.height, round(info.fps)) == (int(m[1]), int(m[2]), int(m[3]))
    assert abs(info.duration - float(m[4])) < 0.05


def test_the_trigger_word_is_explained_with_its_default():
    default = Config().data.trigger
    assert f"trigger word put in front, `{default}` by default" in TEXT
    assert f"`{default} a blue ball" in TEXT  # and shown in front of a caption


def test_the_quickstart_venv_is_ignored():
    lines = (REPO / ".gitignore").read_text().splitlines()
    assert ".venv/" in lines
    proc = subprocess.run(["git", "check-ignore", "-q", ".venv/bin/python"], cwd=REPO)
    assert proc.returncode == 0


def test_tiny_toml_without_the_tiny_model_names_the_command_that_makes_it(tmp_path):
    missing = tmp_path / "runs" / "tiny-wan"  # where examples/tiny.toml expects it, in a checkout without it
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "--config", str(REPO / "examples" / "tiny.toml"),
                           "--set", f"model.ckpt_path='{missing}'"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    command = "python -m tools.make_tiny_model --family wan-i2v --layout diffusers --out"
    assert f"make this tiny random model with: {command} {missing}" in proc.stderr, proc.stderr
    assert f"{command} runs/tiny-wan" in TEXT

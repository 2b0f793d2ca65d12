"""Config validation: each error class has its message; entry points exit 2 without a traceback."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from config.errors import ConfigError
from config.loader import load_config, render_toml, require, save_config, to_dict
from config.schema import Config

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ["train.py", "infer.py", "prepare.py", "evaluate.py"]


def write(tmp_path: Path, text: str, name: str = "edit.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_round_trip_through_rendered_toml(tmp_path):
    path = write(tmp_path, render_toml())
    cfg = load_config(path)
    assert cfg.data.frames == 49 and cfg.adapter.rank == 16 and cfg.optimizer.betas == [0.9, 0.99]
    assert to_dict(cfg) == to_dict(load_config(save_config(cfg, tmp_path / "saved.toml")))


def test_unknown_key_names_key_file_and_closest(tmp_path):
    path = write(tmp_path, "[training]\nstep = 10\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "training.step" in msg and str(path) in msg and "did you mean 'steps'" in msg


def test_unknown_section_suggests_section(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'optimiser'.*'optimizer'"):
        load_config(write(tmp_path, "[optimiser]\nlr = 1.0\n"))


@pytest.mark.parametrize(
    "text, match",
    [
        ("[training]\nsteps = 'many'\n", r"training.steps must be an integer, got 'many'"),
        ("[training]\nactivation_checkpointing = 1\n", r"must be a boolean"),
        ("[optimizer]\nlr = -1.0\n", r"optimizer.lr = -1.0 is below the minimum 0.0"),
        ("[adapter]\nrank = 5000\n", r"adapter.rank = 5000 is above the maximum 1024"),
        ("[inference]\nscheduler = 'ddim'\n", r"inference.scheduler = 'ddim' is not one of 'unipc', 'euler'"),
        ("[optimizer]\nbetas = [0.9]\n", r"optimizer.betas must have 2 items"),
        ("[data]\nframes = 50\n", r"data.frames = 50 is not 4k\+1.*use 49 or 53"),
        ("[data]\nwidth = 830\nheight = 480\n", r"data.width = 830 is not a multiple of 16; use 816"),
        ("[data]\nwidth = 832\n", r"set both data.width and data.height"),
        ("[training]\nmin_t = 0.5\nmax_t = 0.5\n", r"min_t .* must be below"),
        ("[model\n", r"not valid TOML"),
        ("model = 3\n", r"'model' must be a \[section\]"),
    ],
)
def test_each_error_class_has_its_message(tmp_path, text, match):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as e:
        load_config(path)
    assert str(path) in str(e.value) or "TOML" not in match


def test_int_accepted_where_float_expected(tmp_path):
    cfg = load_config(write(tmp_path, "[optimizer]\nlr = 1\nbetas = [1, 0]\n"))
    assert isinstance(cfg.optimizer.lr, float) and cfg.optimizer.betas == [1.0, 0.0]


def test_missing_input_path_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match=r"data.video = '.*nope.mp4' does not exist"):
        load_config(write(tmp_path, "[data]\nvideo = 'nope.mp4'\n"))


def test_relative_paths_resolve_against_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "clip.mp4").write_bytes(b"x")
    path = write(tmp_path / "job", "[data]\nvideo = 'clip.mp4'\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(path)
    assert cfg.data.video == str((tmp_path / "job" / "clip.mp4").resolve())
    assert cfg.output_dir == str((tmp_path / "job" / "runs").resolve())


def test_overrides_apply_typed_and_are_validated(tmp_path, monkeypatch):
    (tmp_path / "other.mp4").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "")
    cfg = load_config(path, ["training.steps=7", "optimizer.lr=3e-4", "data.caption=a red car",
                             "optimizer.betas=[0.8, 0.9]", "data.video=other.mp4"])
    assert cfg.training.steps == 7 and cfg.optimizer.lr == 3e-4 and cfg.data.caption == "a red car"
    assert cfg.optimizer.betas == [0.8, 0.9] and cfg.data.video == str(tmp_path / "other.mp4")
    with pytest.raises(ConfigError, match=r"--set: unknown key 'training.stepz'.*'steps'"):
        load_config(path, ["training.stepz=7"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(path, ["training.steps"])
    with pytest.raises(ConfigError, match=r"^--set: data.mask = '.*nothere' does not exist"):
        load_config(path, ["data.mask=nothere"])


def test_require_lists_every_missing_key(tmp_path):
    cfg = load_config(write(tmp_path, ""))
    with pytest.raises(ConfigError, match=r"model.ckpt_path, data.video"):
        require(cfg, "model.ckpt_path", "data.video", "name")


def _all_keys(obj, prefix=""):
    for f in dataclasses.fields(obj):
        if f.metadata.get("internal"):
            continue
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            yield from _all_keys(v, f"{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def test_example_edit_toml_documents_every_key():
    text = (REPO / "examples" / "edit.toml").read_text()
    table = tomllib.loads(text)
    for key in _all_keys(Config()):
        node = table
        for part in key.split("."):
            assert part in node, f"examples/edit.toml lacks {key}"
            node = node[part]
        line = next(x for x in text.splitlines() if x.startswith(key.split(".")[-1] + " = "))
        assert "#" in line and "Default:" in line, line
    cfg = load_config(REPO / "examples" / "edit.toml", check_paths=False)
    assert cfg.inference.steps == 30 and cfg.training.steps == 100 and cfg.adapter.rank == 16


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_entry_points_exit_2_without_traceback(tmp_path, entry):
    path = write(tmp_path, "[training]\nstep = 10\n")
    proc = subprocess.run([sys.executable, entry, "--config", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "did you mean 'steps'" in proc.stderr


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_entry_points_help_and_print_config(tmp_path, entry):
    proc = subprocess.run([sys.executable, entry, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--config" in proc.stdout
    path = write(tmp_path, "")
    proc = subprocess.run([sys.executable, entry, "--config", str(path), "--set", "adapter.rank=8",
                           "--print-config"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert tomllib.loads(proc.stdout)["adapter"]["rank"] == 8

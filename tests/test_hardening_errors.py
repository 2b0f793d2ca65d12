"""Bad input and hostile values that used to escape a folder, collide, or end in a traceback: each is one line naming
the file (or is handled: a bad cache entry is recomputed), with the tiny Wan model and real files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from synthetic import write_training_job

import media
from config.errors import ConfigError, UserError
from config.loader import load_config

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}


def run_tool(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=ENV)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """stderr without progress lines: what the user reads."""
    return [x for x in proc.stderr.splitlines() if x.strip() and "it/s" not in x and "s/it" not in x]


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_wan_diffusers) -> Path:
    root = tmp_path_factory.mktemp("hardening-job")
    return write_training_job(root, tiny_wan_diffusers, steps=2)


# -- run names and steps ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../escaped", "a/../../escaped", "ABSOLUTE"])
def test_a_run_name_that_escapes_output_dir_is_refused(job, tmp_path, name):
    out = tmp_path / "runs"
    if name == "ABSOLUTE":
        name = str(tmp_path / "escaped")
    proc = run_tool("train.py", "--config", str(job / "edit.toml"), "--set", f"output_dir='{out}'",
                    "--set", f"name='{name}'")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert error_lines(proc) == [error_lines(proc)[-1]]
    assert f"name = {name!r}" in proc.stderr and "must stay inside output_dir" in proc.stderr
    assert not (tmp_path / "escaped").exists(), "a run folder was made outside output_dir"


def test_names_inside_output_dir_are_fine_and_steps_have_an_upper_bound():
    assert load_config(None, ["name='tests/jacket v2'"]).name == "tests/jacket v2"
    with pytest.raises(ConfigError, match=r"training.steps = 5000000 is above the maximum 1000000"):
        load_config(None, ["training.steps=5_000_000"])
    with pytest.raises(ConfigError, match=r"training.reference_steps = 1000001 is above the maximum 1000000"):
        load_config(None, ["training.reference_steps=1000001"])


def test_two_runs_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    """Another process creates the folder between our look and our mkdir (the race of two runs started in the
    same second): the run takes the next free name instead of failing or sharing the folder."""
    import time

    from engine.train.run_dir import RunDir

    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101-120000")
    real_mkdir = Path.mkdir
    raced = []

    def mkdir_after_a_rival(self, *args, **kwargs):
        if self.name == "20260101-120000" and not raced:
            raced.append(self)
            real_mkdir(self, parents=True)  # the other run wins this name
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir_after_a_rival)
    first = RunDir.new(tmp_path, "job")
    second = RunDir.new(tmp_path, "job")
    assert raced and first.path.name == "20260101-120000-2" and second.path.name == "20260101-120000-3"
    assert first.path.is_dir() and second.path.is_dir()


# -- output folders -----------------------------------------------------------------------------------------------
def test_ensure_output_folder_checks_creation_and_free_space(tmp_path, monkeypatch):
    from config.atomic import ensure_output_folder

    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"--out '.*file/sub' cannot be created or written"):
        ensure_output_folder(tmp_path / "file" / "sub", "--out")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12 - 2**20, 2**20))
    with pytest.raises(UserError, match=r"--out '.*ok': only 1 MB free, 64 MB needed"):
        ensure_output_folder(tmp_path / "ok", "--out")


def test_infer_fails_on_an_output_folder_it_cannot_create_before_computing(job, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / "a-file" / "results"
    cache = tmp_path / "cache"
    proc = run_tool("infer.py", "--config", str(job / "edit.toml"), "--no-lora", "--out", str(out),
                    "--set", f"data.cache_dir='{cache}'")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = error_lines(proc)
    assert line.startswith("error: inference.out (--out)") and str(out) in line and "cannot be created" in line
    assert not cache.exists(), "the encoders ran before the output folder was checked"


def test_evaluate_fails_on_an_output_folder_it_cannot_create(tmp_path):
    frames = np.zeros((5, 32, 32, 3), np.uint8)
    media.write_video(tmp_path / "src.mp4", frames, 16)
    media.write_video(tmp_path / "result.mp4", frames + 20, 16)
    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / "a-file" / "report"
    proc = run_tool("evaluate.py", "--source", str(tmp_path / "src.mp4"), "--result", str(tmp_path / "result.mp4"),
                    "--out", str(out), "--quiet")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = error_lines(proc)
    assert line.startswith("error: --out") and str(out) in line and "cannot be created" in line


# -- damaged files ------------------------------------------------------------------------------------------------
def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("component", ["transformer", "vae", "text_encoder"])
def test_a_truncated_weight_file_is_one_error_naming_it(tiny_wan_diffusers, tmp_path, component):
    from config.schema import ModelConfig
    from models.loading import WeightsError
    from models.registry import make_adapter

    model = tmp_path / "model"
    shutil.copytree(tiny_wan_diffusers, model)
    shard = sorted((model / component).glob("*.safetensors"))[-1]
    truncate(shard)
    adapter = make_adapter(ModelConfig(ckpt_path=str(model), dtype="float32"), "cpu")
    load = {"transformer": adapter.load_transformer, "vae": adapter.load_vae,
            "text_encoder": adapter.load_text_encoder}[component]
    with pytest.raises(WeightsError) as e:
        load()
    assert str(e.value).startswith(f"{shard}: truncated or damaged weights file") and "\n" not in str(e.value)


def test_infer_with_a_truncated_vae_is_one_line(job, tiny_wan_diffusers, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_wan_diffusers, model)
    vae = model / "vae" / "diffusion_pytorch_model.safetensors"
    truncate(vae)
    proc = run_tool("infer.py", "--config", str(job / "edit.toml"), "--no-lora", "--out", str(tmp_path / "out"),
                    "--set", f"model.ckpt_path='{model}'", "--set", f"data.cache_dir='{tmp_path / 'cache'}'")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert error_lines(proc)[-1].startswith(f"error: {vae}: truncated or damaged weights file")


def test_a_cache_entry_of_the_wrong_shape_is_recomputed_with_a_warning(tiny_wan_diffusers, tmp_path):
    from datasets.samples import video_sample
    from engine.encode.cache import EncodeCache
    from engine.encode.samples import encode_samples
    from models.wan.adapter import WanAdapter

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    edit = np.zeros((5, 32, 32), bool)
    edit[:, 8:24, 8:24] = True
    samples = [video_sample(frames, edit, "a dog")]
    cache = EncodeCache(tmp_path / "cache")
    (first,), _ = encode_samples(WanAdapter(tiny_wan_diffusers, dtype=torch.float32), samples, cache)

    entries = sorted((tmp_path / "cache").glob("latent-*.safetensors"))
    bad = entries[0]
    save_file({"x": torch.zeros(16, 3, 7, 7)}, str(bad))  # a foreign or stale entry under the right key
    torn = sorted((tmp_path / "cache").glob("text-*.safetensors"))[0]
    truncate(torn)
    with pytest.warns(UserWarning) as caught:
        (again,), _ = encode_samples(WanAdapter(tiny_wan_diffusers, dtype=torch.float32), samples, cache)
    messages = [str(w.message) for w in caught]
    assert any(m.startswith(f"encode cache entry {bad}: 'x' has shape 16x3x7x7, expected ?x2x4x4; recomputing")
               for m in messages), messages
    assert any(m.startswith(f"encode cache entry {torn}: not a readable safetensors file") for m in messages), messages
    assert torch.equal(first.latents, again.latents) and torch.equal(first.cond, again.cond)
    assert torch.equal(first.text, again.text)
    assert load_file(bad)["x"].shape[1:] == (2, 4, 4)  # rewritten


# -- LoRA arguments and files -------------------------------------------------------------------------------------
def test_a_lora_weight_that_is_not_a_number_says_so(job, tmp_path):
    lora = tmp_path / "a.safetensors"
    save_file({"x": torch.zeros(1)}, str(lora))
    proc = run_tool("infer.py", "--config", str(job / "edit.toml"), "--lora", f"{lora}:abc")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = error_lines(proc)
    assert f"--lora {lora}:abc: the weight 'abc' is not a number" in line and "not found" not in line
    from engine.infer.generate import LoraArgumentError, parse_lora_arg

    with pytest.raises(LoraArgumentError, match="the weight 'abc' is not a number"):
        parse_lora_arg("missing.safetensors:abc")  # the weight is wrong whether the file exists or not
    assert parse_lora_arg("C:\\loras\\a.safetensors").weight == 1.0  # a drive letter is not a weight


@pytest.mark.parametrize("tamper, expected", [
    ("rank", r"blocks\.0\.attn1\.to_k\.lora_A\.weight has shape 8x32, this adapter's 4x32 \(the file's rank 8, "
             r"adapter.rank 4\)"),
    ("width", r"blocks\.0\.attn1\.to_q\.lora_A\.weight: 4x7, the module takes 32 inputs"),
])
def test_init_from_existing_with_wrong_shapes_names_the_file_and_the_key(job, tiny_wan_diffusers, tmp_path, tamper,
                                                                       expected):
    from engine.train.job import add_loras
    from models.lora import add_lora, lora_state_dict, save_lora_state
    from models.registry import make_adapter

    cfg = load_config(job / "edit.toml", [f"output_dir='{tmp_path}'"])
    adapter = make_adapter(cfg.model, "cpu")
    model = adapter.load_transformer()
    rank = 8 if tamper == "rank" else 4
    add_lora(model, adapter.lora_target_modules(), rank, float(rank), 0.0, "float32")
    path = tmp_path / "start.safetensors"
    save_lora_state(path, lora_state_dict(model), model, fmt="comfyui", rank=rank, alpha=float(rank), trigger="",
                    config_toml="")
    if tamper == "width":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
        sd = load_file(path)
        sd["diffusion_model.blocks.0.self_attn.q.lora_A.weight"] = torch.zeros(4, 7)
        save_file(sd, str(path), metadata=metadata)
    adapter.unload()
    cfg = load_config(job / "edit.toml", [f"output_dir='{tmp_path}'", f"adapter.init_from_existing='{path}'"])
    with pytest.raises(UserError) as e:
        add_loras(cfg, make_adapter(cfg.model, "cpu"))
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)
    import re

    assert re.search(expected, str(e.value)), str(e.value)


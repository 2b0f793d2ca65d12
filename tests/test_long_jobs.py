"""Long jobs (data.window): the cut, training windows and their conditioning, the config's rules, and a long job
on the tiny random model from prepare.py to evaluate.py, resumed, with the source's exact frame count."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import moving_square

import media
from config.errors import ConfigError
from config.loader import load_config
from datasets.windows import Window, chain_windows, long_clip_samples, training_windows, window_sample
from engine.infer.chain import blend_into


def test_inference_cut_covers_the_clip_and_the_last_window_takes_more_whole():
    assert chain_windows(33, 9, 1) == [Window(0, 9, 1), Window(8, 17, 1), Window(16, 25, 1), Window(24, 33, 1)]
    assert chain_windows(30, 9, 1)[-1] == Window(21, 30, 4)  # moved back: frames 21..24 come from window 3
    assert [w.start for w in chain_windows(17, 9, 5)] == [0, 4, 8] and chain_windows(17, 9, 5)[1].head == 5
    assert chain_windows(9, 9, 1) == [Window(0, 9, 1)]
    for total in range(9, 60):
        made = sorted(f for w in chain_windows(total, 9, 1) for f in [w.start, *w.new] if f == 0 or f in w.new)
        assert made == list(range(total))  # every frame is made by exactly one window (frame 0: the edited one)


def test_training_windows_are_the_inference_cut_plus_seeded_random_ones():
    a, b = training_windows(33, 9, 1, 3, seed=7), training_windows(33, 9, 1, 3, seed=7)
    assert a == b and a[:4] == chain_windows(33, 9, 1) and len(a) == 7
    assert len({w.start for w in a}) == 7 and all(w.end - w.start == 9 and 0 <= w.start <= 24 for w in a)
    assert all(w.head == 1 for w in a)
    assert training_windows(33, 9, 1, 3, seed=8) != a
    assert len(training_windows(10, 9, 1, 50, seed=0)) == 2  # only two windows fit


def test_a_window_is_conditioned_as_inference_conditions_it():
    frames, mask = moving_square(13, 32, 32, top=8, side=8, x0=2, step=2)
    s = window_sample(frames, mask, Window(4, 13, 5), "p", "loraedit")
    m = s.m_condition[0]
    assert s.span == (4, 13) and s.num_frames == 9
    assert bool((m[:5] == 1).all())  # the frames taken whole
    assert torch.equal(m[5:] == 1, torch.from_numpy(~mask[9:13]))  # the rest: kept outside the mask
    assert torch.equal(s.v_target, s.v_condition[:, :5].new_tensor(frames[4:13]).permute(3, 0, 1, 2) / 127.5 - 1)
    low = long_clip_samples(frames, mask, "p", 9, 1, 2, 0, low_cost=True, clip_frames=5, clip_overlap=1)
    assert [x.span for x in low] == [(0, 5), (4, 9), (8, 13)]  # low-cost: short clips over the whole clip


def test_overlap_blends_from_the_earlier_window_to_the_later():
    result = np.zeros((13, 2, 2, 3), np.uint8)
    blend_into(result, np.full((9, 2, 2, 3), 100, np.uint8), Window(0, 9, 1))
    blend_into(result, np.full((9, 2, 2, 3), 200, np.uint8), Window(4, 13, 5))
    assert result[:, 0, 0, 0].tolist() == [100] * 5 + [120, 140, 160, 180] + [200] * 4


@pytest.mark.parametrize("sets, message", [
    (["data.frames=161"], "longer than one model window (81 at most): set data.window"),
    (["data.frames=161", "data.window=10"], "data.window = 10 is not 4k+1"),
    (["data.frames=5", "data.window=9"], "shorter than data.window"),
    (["data.frames=33", "data.window=9", "inference.window_overlap=4"], "must be 1+4k"),
    (["data.frames=33", "data.window=9", "training.low_cost=true", "training.clip_frames=13"],
     "longer than data.window"),
    (["data.frames=33", "data.window=9", "training.preview_frames=13"], "at most data.window (9)"),
    (["data.windw=9"], "unknown key 'data.windw'; did you mean 'window'"),  # unknown keys still error
])
def test_long_job_config_errors_are_one_line(sets, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, sets, check_paths=False)
    assert load_config(None, ["data.frames=161", "data.window=81"], check_paths=False).data.window == 81
    assert load_config(None, [], check_paths=False).data.window == 0  # existing configs: one window


@pytest.mark.parametrize("window, frames, message", [(10, 0, "--window 10: must be 4k+1"),
                                                     (9, 5, "--frames 5: shorter than --window 9")])
def test_prepare_window_errors_name_the_flag(tmp_path, window, frames, message):
    from config.errors import UserError
    from datasets.prepare.job import PrepareRequest, check_request

    (tmp_path / "v.mp4").write_bytes(b"")
    (tmp_path / "e.png").write_bytes(b"")
    req = PrepareRequest(video=tmp_path / "v.mp4", edited_frame=tmp_path / "e.png", out=tmp_path / "job",
                         auto_mask=True, window=window, frames=frames)
    with pytest.raises(UserError, match=re.escape(message)):
        check_request(req)


@pytest.fixture(scope="module")
def long_job(tmp_path_factory, tiny_wan_diffusers):
    """prepare.py's job function on a 13-frame clip with --window 5 (the whole clip: three windows)."""
    from datasets.prepare.job import PrepareRequest, prepare_job

    root = tmp_path_factory.mktemp("long")
    frames, masks = moving_square(13, 32, 32, top=10, side=8, x0=2, step=1, margin=2)
    media.write_video(root / "src.mp4", frames, 16)
    (root / "masks").mkdir()
    for i, m in enumerate(masks):
        Image.fromarray(m.astype(np.uint8) * 255).save(root / "masks" / f"{i}.png")
    edited = frames[0].copy()
    edited[masks[0]] = (40, 40, 250)
    Image.fromarray(edited).save(root / "edited.png")
    sets = ["model.dtype='float32'", "adapter.rank=4", "training.steps=3", "training.reference_steps=0",
            "training.save_every_n_steps=0", "training.checkpoint_every_n_minutes=0", "training.random_windows=1",
            "optimizer.lr=1e-3", "inference.steps=2", "name='long'", f"output_dir='{root / 'runs'}'"]
    req = PrepareRequest(video=root / "src.mp4", edited_frame=root / "edited.png", out=root / "job",
                         mask=root / "masks", window=5, fps=16.0, size=(32, 32), caption="a yellow square",
                         edited_caption="a blue square", model=tiny_wan_diffusers, overrides=sets, preview=False)
    prepare_job(req)
    return root / "job"


def test_long_job_prepare_train_infer_evaluate(long_job, tmp_path):
    from engine.evaluate.job import inputs_from_config, run_evaluation
    from engine.infer.job import run_inference
    from engine.train.job import run_training

    cfg = load_config(long_job / "edit.toml")
    assert (cfg.data.frames, cfg.data.window) == (13, 5) and len(list((long_job / "source").glob("*.png"))) == 13
    train = run_training(cfg)
    assert train.steps == 3 and train.lora.is_file()
    events = []
    infer = run_inference(cfg, progress=events.append)
    denoise = [e for e in events if e.phase == "denoise"]
    assert denoise[-1].step == denoise[-1].total == 3 * 2  # three windows of two steps
    assert "window 3/3, step 2/2" in denoise[-1].message
    assert media.read_video(infer.video).frames.shape[0] == 13
    sidecar = json.loads((infer.out / "result.json").read_text())
    assert sidecar["frames"] == 13 and sidecar["config"]["data"]["window"] == 5
    assert "side_by_side" in infer.files
    ev = run_evaluation(inputs_from_config(cfg, []))
    assert ev.report["inputs"]["frames"] == 13 and len(ev.report["results"][0]["per_frame"]["psnr_kept"]) == 13


def test_long_job_resumes_to_the_same_lora(long_job, tmp_path):
    """A long job stopped and resumed ends with the uninterrupted run's LoRA: its windows and every draw come
    from the seed and the step, not from the process."""
    import threading

    from safetensors.torch import load_file

    from engine.train.job import run_training

    def cfg(out: str):
        return load_config(long_job / "edit.toml", [f"output_dir='{tmp_path / out}'", "training.steps=4"])

    full = run_training(cfg("full"))
    stop = threading.Event()
    cut = run_training(cfg("cut"), progress=lambda e: e.phase == "train" and e.step >= 2 and stop.set(), stop=stop)
    assert (cut.steps, cut.interrupted) == (2, True)
    resumed = run_training(cfg("cut"), resume_requested=True)
    assert resumed.steps == 4 and resumed.run_dir == cut.run_dir
    a, b = load_file(full.lora), load_file(resumed.lora)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_previews_of_a_long_job_are_its_first_window(long_job, tmp_path):
    """A long job's training previews generate its first window from the very sample chained inference makes first
    (the edited first frame, the rest kept outside the mask, the same seed), so a preview shows window 1 of the result
    the LoRA would give; they are scored and written like a one-window job's."""
    from datasets.job import load_job
    from engine.infer.chain import window_generation_sample
    from engine.infer.generate import build_request, load_inputs
    from engine.train.job import run_training
    from engine.train.previews import Previews

    cfg = load_config(long_job / "edit.toml", [f"output_dir='{tmp_path}'", "training.preview_every_n_steps=3",
                                               "training.preview_steps=2"])
    previews = Previews(cfg, main=True)
    job = load_job(cfg, edited=True)
    prompt = load_inputs(cfg, build_request(cfg, [])).sample.prompt
    first = chain_windows(cfg.data.frames, cfg.data.window, cfg.inference.window_overlap)[0]
    want = window_generation_sample(cfg, job, first, 0, prompt, cfg.inference.mask_preset, job.frames)
    got = previews.sample
    assert got.prompt == want.prompt and got.v_condition.shape[1] == cfg.data.window == 5
    for name in ("v_condition", "m_condition", "clip_image"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert previews.request.seed == build_request(cfg, []).seed  # window 1 samples with the job's seed

    result = run_training(cfg)
    entries = [json.loads(x) for x in (result.run_dir / "previews" / "previews.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == [3] and entries[0]["combined"] is not None
    assert media.probe_video(result.run_dir / "previews" / entries[0]["video"]).num_frames == 5

"""Training previews: files and scores in the run folder and TensorBoard, the best-scoring LoRA kept, early stopping
(and a resume after it that trains no further), no random draw of the training changed, the page lists them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from synthetic import write_training_job

from config.errors import ConfigError
from config.loader import load_config
from engine.evaluate.combined import combined_score
from engine.train.previews import best_entry, early_stop_reason, interval, schedule

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_schedule_auto_and_the_config_words(tmp_path):
    cfg = load_config(None, ["training.preview_every_n_steps='auto'"], check_paths=False)
    assert interval(cfg, 100) == 25 and schedule(25, 100) == [25, 50, 75, 100]
    assert schedule(30, 100) == [30, 60, 90, 100]  # the last step is always previewed
    assert interval(load_config(None, check_paths=False), 100) is None  # off by default
    seven = load_config(None, ["training.preview_every_n_steps=7"], check_paths=False)
    assert seven.training.preview_every_n_steps == 7
    for bad in ("'sometimes'", "0", "true"):
        with pytest.raises(ConfigError, match="preview_every_n_steps must be 'off', 'auto' or a whole number"):
            load_config(None, [f"training.preview_every_n_steps={bad}"], check_paths=False)
    with pytest.raises(ConfigError, match="preview_frames = 4 must be 4k\\+1"):
        load_config(None, ["training.preview_frames=4"], check_paths=False)


def test_selection_and_early_stop_rules():
    history = [{"step": s, "combined": c} for s, c in ((10, 0.5), (20, 0.7), (30, 0.7), (40, 0.6), (50, 0.65))]
    assert best_entry(history)["step"] == 20  # the highest; the earlier of equals
    assert early_stop_reason(history[:4], 2, 0).startswith("early stop at step 40")
    assert early_stop_reason(history[:3], 2, 0) is None  # one preview since the best
    assert early_stop_reason(history, 0, 0) is None  # off
    # only previews of the last stage count: stage 2 starting at step 35 has had 2 previews without a new best
    assert early_stop_reason(history[:4], 2, 35) is None and early_stop_reason(history, 2, 35) is not None


def test_combined_score_rewards_a_kept_background_and_the_edited_colour():
    good = {"psnr_kept": 35.0, "ssim_kept": 0.95, "hist_distance": 0.3, "delta_e": 5.0, "warp_error_edit": 0.01}
    assert combined_score(good, 0.01) > combined_score({**good, "psnr_kept": 20.0}, 0.01)
    assert combined_score(good, 0.01) > combined_score({**good, "delta_e": 30.0}, 0.01)
    assert combined_score(good, 0.01) > combined_score({**good, "hist_distance": 0.8}, 0.01)
    assert combined_score({**good, "psnr_kept": float("inf")}, 0.01) <= 1.0
    assert combined_score({}, None) is None


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_wan_diffusers) -> dict:
    """Four runs in one process (one DeepSpeed start-up): with previews every 2 steps, the same without, and an early
    stop (lr 0: every preview scores the same, so none improves) followed by a resume of it. LoRA dropout is on, so
    a preview that drew from the global RNG would change the training."""
    root = tmp_path_factory.mktemp("previews")
    (root / "job").mkdir()
    job = write_training_job(root / "job", tiny_wan_diffusers, steps=6, lr=1e-3)
    script = root / "script.py"
    script.write_text(textwrap.dedent(f"""
        import json, time
        from config.loader import load_config
        from engine.train.job import run_training

        def cfg(out, *more):
            return load_config({str(job / 'edit.toml')!r}, [f"output_dir='{{out}}'", "adapter.dropout=0.1", *more])

        times = {{}}
        t0 = time.perf_counter()
        on = run_training(cfg({str(root / 'on')!r}, "training.preview_every_n_steps=2", "training.preview_steps=3"))
        times["on"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        off = run_training(cfg({str(root / 'off')!r}))
        times["off"] = time.perf_counter() - t0
        stop_cfg = cfg({str(root / 'stop')!r}, "optimizer.lr=0.0", "training.steps=10",
                       "training.preview_every_n_steps=1", "training.early_stop=2", "training.preview_steps=2")
        stopped = run_training(stop_cfg)
        resumed = run_training(stop_cfg, resume=str(stopped.run_dir), resume_requested=True)
        print(json.dumps({{"on": str(on.run_dir), "off": str(off.run_dir), "stop": str(stopped.run_dir),
                          "stopped": [stopped.steps, stopped.stop_reason], "times": times,
                          "resumed": [resumed.steps, resumed.stop_reason, len(resumed.losses)]}}))
    """))
    proc = subprocess.run([sys.executable, str(script)], cwd=root, env=ENV, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_previews_and_scores_land_in_the_run_folder_and_tensorboard(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = Path(runs["on"])
    entries = [json.loads(x) for x in (run / "previews" / "previews.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == [2, 4, 6]
    for e in entries:
        assert (run / "previews" / e["video"]).stat().st_size > 0 and (run / "previews" / e["sheet"]).is_file()
        assert {"psnr_kept", "ssim_kept", "hist_distance", "delta_e", "warp_error_edit"} <= set(e["scores"])
        assert 0.0 <= e["combined"] <= 1.0
    summary = json.loads((run / "summary.json").read_text())
    assert [p["step"] for p in summary["previews"]] == [2, 4, 6]
    assert [p["combined"] for p in summary["previews"]] == [e["combined"] for e in entries]
    assert summary["stop_reason"] == "trained all 6 steps"
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert {"preview/sheet", "preview/video"} <= set(events.Tags()["images"])
    assert [s.step for s in events.Scalars("preview/combined")] == [2, 4, 6]
    assert events.Images("preview/video")[0].encoded_image_string[:6] == b"GIF89a"


def test_the_best_scoring_preview_is_lora_safetensors_and_the_last_stays(runs):
    run = Path(runs["on"])
    summary = json.loads((run / "summary.json").read_text())
    best = max(summary["previews"], key=lambda p: (p["combined"], -p["step"]))
    assert summary["selected"] == {"step": best["step"], "combined": best["combined"]}
    chosen, kept = load_file(run / "lora.safetensors"), load_file(run / f"lora_step{best['step']:06d}.safetensors")
    assert chosen.keys() == kept.keys() and all(torch.equal(chosen[k], kept[k]) for k in chosen)
    assert (run / "lora_last.safetensors").is_file() and summary["lora_last"] == str(run / "lora_last.safetensors")
    # only the best preview's LoRA file is kept
    assert sorted(p.name for p in run.glob("lora_step*")) == [f"lora_step{best['step']:06d}.safetensors"]


def test_previews_change_no_random_draw_of_the_training(runs):
    on, off = Path(runs["on"]), Path(runs["off"])
    last, plain = load_file(on / "lora_last.safetensors"), load_file(off / "lora.safetensors")
    assert last.keys() == plain.keys() and all(torch.equal(last[k], plain[k]) for k in last)
    losses = [[json.loads(x)["loss"] for x in (r / "metrics.jsonl").read_text().splitlines()] for r in (on, off)]
    assert losses[0] == losses[1] and len(losses[0]) == 6


def test_early_stop_stops_and_a_resume_trains_no_further(runs):
    steps, reason = runs["stopped"]
    assert steps == 3 and reason.startswith("early stop at step 3") and "best" in reason
    run = Path(runs["stop"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["stop_reason"] == reason and summary["selected"]["step"] == 1
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert runs["resumed"] == [3, reason, 0]  # resumed: stopped again at once, no step trained
    assert [p["step"] for p in summary["previews"]] == [1, 2, 3]


def test_the_web_page_lists_the_previews(runs):
    from webui.jobfiles import RunInfo
    from webui.train_steps import preview_caption

    previews = RunInfo(Path(runs["on"])).previews()
    assert [p["step"] for p in previews] == [2, 4, 6] and all(Path(p["sheet"]).is_file() for p in previews)
    assert preview_caption(previews[0]).startswith("step 2: score 0.")

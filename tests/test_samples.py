"""The sample builder (data contract of DESIGN.md), the job loader and the preview."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import moving_square

import media
from config.loader import load_config
from datasets.job import inference_sample_for, load_job, training_samples
from datasets.samples import (
    inference_sample,
    join_prompt,
    recolor_region,
    reference_sample,
    short_clip_ranges,
    short_clip_samples,
    video_sample,
    with_fill,
)
from media.viewing import LABEL_HEIGHT, label_band

REPO = Path(__file__).resolve().parents[1]
rng = np.random.default_rng(0)


def clip(t=9, h=32, w=48):
    return rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def box_mask(t=9, h=32, w=48):
    m = np.zeros((t, h, w), bool)
    for i in range(t):
        m[i, 8:20, 4 + 2 * i:20 + 2 * i] = True
    return m


def test_video_sample_contract():
    src, mask = clip(), box_mask()
    s = video_sample(src, mask, "p3rs0n, a box")
    assert s.v_condition.shape == (3, 9, 32, 48) and s.m_condition.shape == (1, 9, 32, 48)
    assert s.v_target.shape == (3, 9, 32, 48) and s.kind == "video" and s.span == (0, 9)
    assert set(s.m_condition.unique().tolist()) <= {0.0, 1.0}
    # loraedit: frame 0 kept whole, later frames kept outside the mask
    assert s.m_condition[0, 0].min() == 1
    assert torch.equal(s.m_condition[0, 1:] == 0, torch.from_numpy(mask[1:]))
    # v_condition is exactly 0.0 wherever m_condition is 0, and the source elsewhere
    gen = (s.m_condition == 0).expand_as(s.v_condition)
    assert (s.v_condition[gen] == 0).all()
    assert torch.equal(s.v_condition[~gen], s.v_target[~gen])
    assert s.v_target.min() >= -1 and s.v_target.max() <= 1
    assert torch.equal(s.clip_image, s.v_condition[:, 0])


def test_naive_sample_is_i2v():
    s = video_sample(clip(), box_mask(), "x", mode="naive")
    assert s.m_condition[0, 0].min() == 1 and s.m_condition[0, 1:].max() == 0
    assert (s.v_condition[:, 1:] == 0).all()
    with pytest.raises(ValueError, match="unknown training mode"):
        video_sample(clip(), box_mask(), "x", mode="bogus")


def test_reference_sample():
    src, mask = clip(), box_mask()
    edited = src[4].copy()
    edited[mask[4]] = 255
    s = reference_sample(src[4], edited, mask[4], "p", 4)
    assert s.num_frames == 1 and s.kind == "reference" and s.span == (4, 5) and s.name == "reference_4"
    assert torch.equal(s.m_condition[0, 0] == 0, torch.from_numpy(mask[4]))
    assert torch.equal(s.v_target[:, 0], video_sample(edited[None], mask[4:5], "p").v_target[:, 0])
    # condition shows the ORIGINAL frame outside the edit region, nothing inside it
    keep = s.m_condition[0, 0] == 1
    orig = video_sample(src[4:5], mask[4:5], "p").v_target[:, 0]
    assert torch.equal(s.v_condition[:, 0][:, keep], orig[:, keep])
    assert (s.v_condition[:, 0][:, ~keep] == 0).all()


def test_low_cost_split_yields_the_papers_ranges():
    # paper Sec. 4.5: 49 frames -> 1-13, 13-25, 25-37, 37-49 (1-based, inclusive)
    assert short_clip_ranges(49, 13, 1) == [(0, 13), (12, 25), (24, 37), (36, 49)]
    assert short_clip_ranges(17, 9, 1) == [(0, 9), (8, 17)]
    assert short_clip_ranges(21, 9, 0) == [(0, 9), (9, 18), (12, 21)]  # tail clip moved back to the end
    src, mask = clip(49, 16, 16), np.zeros((49, 16, 16), bool)
    samples = short_clip_samples(src, mask, "p", 13, 1)
    assert [s.span for s in samples] == [(0, 13), (12, 25), (24, 37), (36, 49)]
    assert all(s.num_frames == 13 and s.m_condition[0, 0].min() == 1 for s in samples)
    with pytest.raises(ValueError, match="4k\\+1"):
        short_clip_ranges(49, 12, 1)


def test_inference_sample_differs_from_training_only_in_frame_0():
    src, mask = clip(), box_mask()
    edited = clip(1)[0]
    train = video_sample(src, mask, "p")
    inf = inference_sample(src, mask, edited, "p")
    assert inf.v_target is None and inf.kind == "inference"
    assert torch.equal(inf.m_condition, train.m_condition)
    assert torch.equal(inf.v_condition[:, 1:], train.v_condition[:, 1:])
    assert not torch.equal(inf.v_condition[:, 0], train.v_condition[:, 0])
    assert torch.equal(inf.v_condition[:, 0], video_sample(edited[None], mask[:1], "p").v_target[:, 0])
    assert torch.equal(inf.clip_image, inf.v_condition[:, 0])
    with pytest.raises(ValueError, match="does not match"):
        inference_sample(src, mask, clip(1, 16, 16)[0], "p")


def test_join_prompt():
    assert join_prompt("p3rs0n,", "a red car") == "p3rs0n, a red car"
    assert join_prompt("", " a car ") == "a car" and join_prompt("t", "") == "t"


# -- job loading from a config -------------------------------------------------------------------

def render(t: int, w: int = 96, h: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A gradient background with a square moving right; returns frames and the square's mask."""
    return moving_square(t, w, h, top=20, side=20, x0=8, step=2)


@pytest.fixture()
def job_dir(tmp_path):
    frames, masks = render(30)
    media.write_video(tmp_path / "src.mp4", frames, 30)
    mdir = tmp_path / "masks"
    mdir.mkdir()
    for i, m in enumerate(masks):
        Image.fromarray(m.astype(np.uint8) * 255).save(mdir / f"{i}.png")
    edited = frames[0].copy()
    edited[masks[0]] = (40, 40, 250)
    Image.fromarray(edited).save(tmp_path / "edited.png")
    ref = tmp_path / "ref"
    ref.mkdir()
    Image.fromarray(edited).save(ref / "4.png")
    (tmp_path / "edit.toml").write_text(
        "[data]\nvideo = 'src.mp4'\nmask = 'masks'\nedited_frame = 'edited.png'\nreference_frames = 'ref'\n"
        "caption = 'a yellow square'\nedited_caption = 'a blue square'\nfps = 16.0\nframes = 9\n"
        "width = 96\nheight = 64\n"
    )
    return tmp_path


def test_load_job_aligns_video_mask_and_edited_frames(job_dir):
    cfg = load_config(job_dir / "edit.toml")
    job = load_job(cfg)
    assert job.frames.shape == (9, 64, 96, 3) and job.edit_mask.shape == (9, 64, 96)
    # 30 fps -> 16 fps: job frame i shows source frame floor(i * 30 / 16)
    expected = (np.arange(9) * 30 / 16 + 1e-6).astype(int)
    _, masks = render(30)
    assert np.array_equal(job.edit_mask, masks[expected])
    # the square (yellow) is where the mask is, in every frame (video and mask stay aligned)
    yellow = (job.frames[..., 0] > 200) & (job.frames[..., 2] < 100)
    assert (yellow == job.edit_mask).mean() > 0.97
    assert job.edited_first.shape == (64, 96, 3) and sorted(job.reference) == [4]
    stages = training_samples(cfg, job)
    assert [s.name for s in stages["video"]] == ["video"] and [s.name for s in stages["reference"]] == ["reference_4"]
    inf = inference_sample_for(cfg, job)
    assert inf.prompt == "p3rs0n, a blue square" and stages["video"][0].prompt == "p3rs0n, a yellow square"


def test_full_resolution_edited_frame_is_fitted_like_the_source(job_dir):
    frames, _ = render(1)
    big = np.kron(frames[0], np.ones((2, 2, 1), np.uint8))  # 192x128, same aspect as the source
    Image.fromarray(big).save(job_dir / "edited.png")
    job = load_job(load_config(job_dir / "edit.toml"))
    assert np.abs(job.edited_first.astype(int) - job.frames[0].astype(int)).mean() < 6
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(job_dir / "edited.png")
    with pytest.raises(media.MediaError, match=r"edited.png: edited frame is 50x50.*96x64"):
        load_job(load_config(job_dir / "edit.toml"))


def test_clip_shorter_than_window_is_a_clear_error(job_dir):
    cfg = load_config(job_dir / "edit.toml", ["data.frames=33"])
    with pytest.raises(media.MediaError, match=r"src.mp4: too short for the window: 33 frames"):
        load_job(cfg)


def test_reference_frame_names_are_checked(job_dir):
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(job_dir / "ref" / "last.png")
    with pytest.raises(media.MediaError, match="must end in the frame index"):
        load_job(load_config(job_dir / "edit.toml"))
    (job_dir / "ref" / "last.png").rename(job_dir / "ref" / "12.png")
    with pytest.raises(media.MediaError, match="outside the job's frames 1..8"):
        load_job(load_config(job_dir / "edit.toml"))
    (job_dir / "ref" / "12.png").rename(job_dir / "ref" / "0.png")
    with pytest.raises(media.MediaError, match="frame 0 is data.edited_frame.*first_frame_reference"):
        load_job(load_config(job_dir / "edit.toml"))


def test_empty_and_full_masks_warn(job_dir):
    for i in range(30):
        Image.fromarray(np.zeros((64, 96), np.uint8)).save(job_dir / "masks" / f"{i}.png")
    with pytest.warns(UserWarning, match="empty in every frame"):
        load_job(load_config(job_dir / "edit.toml"))
    for i in range(30):
        Image.fromarray(np.full((64, 96), 255, np.uint8)).save(job_dir / "masks" / f"{i}.png")
    with pytest.warns(UserWarning, match="covers every pixel"):
        load_job(load_config(job_dir / "edit.toml"))


def test_remedy_options_add_augmented_clips_and_the_edited_first_frame(job_dir):
    cfg = load_config(job_dir / "edit.toml", ["training.appearance_augment=2", "training.first_frame_reference=true"])
    job = load_job(cfg, edited=False)  # as train.py loads it: the edited first frame is read when needed
    stages = training_samples(cfg, job)
    assert [s.name for s in stages["video"]] == ["video", "video_aug0", "video_aug1"]
    assert [s.name for s in stages["reference"]] == ["reference_0", "reference_4"]
    first = stages["reference"][0]
    edited = load_job(cfg).edited_first
    assert torch.equal(first.v_target[:, 0], torch.from_numpy(edited).permute(2, 0, 1).float() / 127.5 - 1)
    outside = torch.from_numpy(~job.edit_mask[0])
    assert torch.equal(first.m_condition[0, 0], outside.float())  # keeps the source outside the mask
    # Augmented copies: the same motion and background, another appearance inside the edit region.
    plain, aug = stages["video"][0], stages["video"][1]
    inside = torch.from_numpy(job.edit_mask)[None].expand_as(plain.v_target)
    assert torch.equal(plain.v_target[~inside], aug.v_target[~inside])
    assert (plain.v_target[inside] - aug.v_target[inside]).abs().mean() > 0.1
    assert training_samples(cfg, job)["video"][1].v_target.equal(aug.v_target)  # deterministic (seed)


def test_recolor_region_is_consistent_over_frames_and_stays_inside():
    frames = np.repeat(clip(1), 5, axis=0)  # five equal frames
    mask = np.zeros(frames.shape[:3], bool)
    mask[:, 4:20, 8:30] = True
    out = recolor_region(frames, mask, np.random.default_rng(3))
    assert np.array_equal(out[~mask], frames[~mask]) and not np.array_equal(out[mask], frames[mask])
    assert all(np.array_equal(out[0], out[i]) for i in range(5))  # one transform for every frame


@pytest.mark.parametrize("fill", ["black", "noise"])
def test_condition_fill_changes_only_generated_regions(fill):
    src, mask = clip(), box_mask()
    s = video_sample(src, mask, "p")
    f = with_fill(s, fill, seed=1)
    keep = (s.m_condition == 1).expand_as(s.v_condition)
    assert torch.equal(f.v_condition[keep], s.v_condition[keep])
    gen = f.v_condition[~keep]
    assert (gen == -1).all() if fill == "black" else gen.std() > 0.4
    assert torch.equal(with_fill(s, fill, seed=1).v_condition, f.v_condition)  # training and inference agree
    assert with_fill(s, "gray") is s


def test_low_cost_job_yields_short_clips(job_dir):
    cfg = load_config(job_dir / "edit.toml", ["training.low_cost=true", "training.clip_frames=5",
                                              "training.clip_overlap=1"])
    stages = training_samples(cfg, load_job(cfg))
    assert [s.span for s in stages["video"]] == [(0, 5), (4, 9)]


def test_preview_command_writes_videos_sheet_and_summary(job_dir):
    out = job_dir / "preview"
    proc = subprocess.run([sys.executable, "prepare.py", "--preview", "--config", str(job_dir / "edit.toml"),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 9 and (summary["width"], summary["height"]) == (96, 64) and summary["fps"] == 16
    assert summary["samples_per_mode"] == {"video": 1, "reference": 1}
    assert len(summary["mask_coverage_per_frame"]) == 9 and 0 < summary["mask_coverage_per_frame"][0] < 0.2
    names = {e["name"] for e in summary["samples"]}
    assert names == {"video", "reference_4", "inference"}
    for e in summary["samples"]:
        for f in e["files"].values():
            assert (out / f).stat().st_size > 0
    cond = media.read_video(out / "video_condition.mp4")
    assert cond.frames.shape == (9, 256, 384, 3) and round(cond.fps) == 16  # a 96x64 job, enlarged 4x to view
    sheet = Image.open(out / "video_sheet.png")
    # every one of the 9 frames, in labelled rows (condition, mask, target) under labelled frames
    assert sheet.format == "PNG" and sheet.size == (9 * 162 - 2, 3 * (2 * LABEL_HEIGHT + 107) + 2 * 4)
    rows = np.asarray(sheet)
    assert np.array_equal(rows[:LABEL_HEIGHT], label_band(sheet.size[0], "condition (all frames)"))
    assert "preview: 9 frames 96x64" in proc.stdout


def test_preview_bad_media_is_one_line_exit_2(job_dir):
    (job_dir / "src.mp4").write_bytes(b"not a video")
    proc = subprocess.run([sys.executable, "prepare.py", "--preview", "--config", str(job_dir / "edit.toml"),
                           "--out", str(job_dir / "p")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "src.mp4" in proc.stderr
    assert not (job_dir / "p" / "summary.json").exists()

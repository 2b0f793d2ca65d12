"""prepare.py: job folders from a raw clip (auto-mask tracking, user masks, reference frames, captions,
SAM2 plumbing), the manifest's no-op / partial updates, and every bad input of issue 7."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import tomllib
from PIL import Image

import media
from config.errors import UserError
from config.loader import load_config
from datasets.job import load_job, training_samples
from datasets.prepare.folder import JobFolderError
from datasets.prepare.job import PrepareRequest, prepare_job, source_to_job, summary
from masks.auto import AutoMaskSettings, NoDifferenceError, auto_mask

REPO = Path(__file__).resolve().parents[1]
SW, SH, SRC_FPS, N_SRC = 200, 120, 30, 45  # source clip: 1.5 s
JOB_W, JOB_H, JOB_FRAMES = 192, 112, 17


def render(n: int = N_SRC, speed: float = 3.0, flat: bool = False, swing: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A textured ellipse moving over a textured background (or a flat yellow one over a gradient); `swing` > 0:
    swinging left and right instead, 60 px either side of the middle, a full swing every `swing` frames."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SH, 0:SW]
    if flat:
        bg = np.stack([xx * 255 // SW, yy * 255 // SH, np.full_like(xx, 160)], -1).astype(np.uint8)
    else:
        bg = cv2.GaussianBlur(rng.integers(0, 256, (SH, SW, 3)).astype(np.float32), (0, 0), 2.0)
        bg = cv2.normalize(bg, None, 30, 220, cv2.NORM_MINMAX).astype(np.uint8)
    tex = cv2.normalize(cv2.GaussianBlur(rng.random((128, 128)).astype(np.float32), (0, 0), 1.5), None, 0, 60,
                        cv2.NORM_MINMAX)
    frames, masks = [], []
    for i in range(n):
        cx, cy = 40 + speed * i, 55 + 12 * np.sin(i / 8)
        if swing:
            cx = SW / 2 + 60 * np.sin(2 * np.pi * i / swing)
        m = ((xx - cx) / 26) ** 2 + ((yy - cy) / 20) ** 2 <= 1
        f = bg.copy()
        if flat:
            f[m] = (250, 230, 30)
        else:  # the object's texture moves with it
            move = np.float32([[1, 0, cx - 64], [0, 1, cy - 64]])
            t = cv2.warpAffine(tex, move, (SW, SH), borderMode=cv2.BORDER_REFLECT)
            f[m] = np.stack([190 + t, 170 + t / 2, 30 + t], -1).clip(0, 255).astype(np.uint8)[m]
        frames.append(f)
        masks.append(m)
    return np.stack(frames), np.stack(masks)


def recolor(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = frame.copy()
    out[mask] = out[mask][:, ::-1]  # RGB -> BGR: yellow becomes blue
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("prepare-src")
    frames, masks = render()
    media.write_video(root / "clip.mp4", frames, SRC_FPS, crf=12)
    Image.fromarray(recolor(frames[0], masks[0])).save(root / "edited.png")
    Image.fromarray(recolor(frames[0], masks[0])[:, ::2]).save(root / "squashed.png")
    Image.fromarray(media.read_video_at(root / "clip.mp4", np.zeros(1)).frames[0]).save(root / "same.png")
    return {"root": root, "video": root / "clip.mp4", "edited": root / "edited.png", "masks": masks}


def request(clip: dict, out: Path, **kw) -> PrepareRequest:
    base = dict(video=clip["video"], edited_frame=clip["edited"], out=out, auto_mask=True, frames=JOB_FRAMES,
                size=(JOB_W, JOB_H), caption="a yellow ellipse", progress=False, preview=False)
    return PrepareRequest(**{**base, **kw})


def job_truth(masks: np.ndarray, n: int, fps: float, size: tuple[int, int], mode: str = "crop") -> np.ndarray:
    """The known masks at the job's frames (source frame floor(i * 30 / fps)) and pixels (nearest)."""
    idx = (np.arange(n) * SRC_FPS / fps + 1e-6).astype(int)
    fit = media.fit_params(SW, SH, *size, mode)
    return media.apply_fit(masks[idx].astype(np.uint8), fit, interpolation=cv2.INTER_NEAREST_EXACT).astype(bool)


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def auto_job(clip, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("jobs") / "auto"
    return out, prepare_job(request(clip, out, preview=True))


# ----------------------------------------------------------------------------------- auto-mask


def test_auto_mask_follows_the_moving_shape_and_leaves_the_background(auto_job, clip):
    out, res = auto_job
    assert res.ran == ["source", "edited", "reference", "masks", "captions", "config", "preview"]
    job = load_job(load_config(out / "edit.toml"))
    truth = job_truth(clip["masks"], JOB_FRAMES, 16, (JOB_W, JOB_H))
    ious = [(a & b).sum() / (a | b).sum() for a, b in zip(job.edit_mask, truth)]
    assert min(ious) > 0.7, np.round(ious, 3)
    near = np.stack([cv2.dilate(t.astype(np.uint8), np.ones((13, 13), np.uint8)) > 0 for t in truth])
    assert not (job.edit_mask & ~near).any()  # nothing beyond 6 px of the shape, in any frame
    # the shape moves ~35 px over the job: a mask that stayed put would fail the IoU above
    assert np.abs(np.argwhere(truth[-1]).mean(0) - np.argwhere(truth[0]).mean(0)).max() > 30


@pytest.mark.parametrize("refine", [True, False])
def test_auto_mask_tracks_with_and_without_colour_refinement(refine):
    frames, masks = render()
    idx = (np.arange(21) * SRC_FPS / 16 + 1e-6).astype(int)  # 21 job frames: 1.3 s, 35 px of motion
    fit = media.fit_params(SW, SH, JOB_W, JOB_H)
    edited = media.apply_fit(recolor(frames[0], masks[0])[None], fit)[0]
    got = auto_mask(media.apply_fit(frames[idx], fit), edited, AutoMaskSettings(refine=refine)).masks
    truth = job_truth(masks, 21, 16, (JOB_W, JOB_H))
    assert min((a & b).sum() / (a | b).sum() for a, b in zip(got, truth)) > 0.8


def test_job_folder_is_a_valid_relocatable_job(auto_job, clip, tmp_path):
    out, res = auto_job
    raw = tomllib.loads((out / "edit.toml").read_text())["data"]
    assert (raw["video"], raw["mask"], raw["edited_frame"]) == ("source", "masks", "edited_first.png")
    assert (raw["frames"], raw["fps"], raw["start"], raw["width"], raw["height"]) == (17, 16.0, 0.0, JOB_W, JOB_H)
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)  # job-relative paths: the folder works anywhere
    cfg = load_config(moved / "edit.toml")
    job = load_job(cfg)
    assert job.frames.shape == (JOB_FRAMES, JOB_H, JOB_W, 3) and job.edited_first is not None
    stages = training_samples(cfg, job)
    assert [s.name for s in stages["video"]] == ["video"] and stages["video"][0].prompt == "p3rs0n, a yellow ellipse"
    assert {p.name for p in (out / "preview").iterdir()} >= {"summary.json", "video_mask.mp4", "inference_sheet.png"}
    text = summary(request(clip, out), res)
    assert "17 frames at 16 fps" in text and f"python train.py --config {out / 'edit.toml'}" in text


def test_rerun_is_a_noop_and_a_new_edited_frame_redoes_only_its_dependents(clip, tmp_path, monkeypatch):
    out = tmp_path / "job"
    prepare_job(request(clip, out, preview=True))
    before = mtimes(out)
    again = prepare_job(request(clip, out, preview=True))
    assert again.ran == [] and mtimes(out) == before
    # a new edit of the first frame: the video is not decoded again, the source frames are untouched
    monkeypatch.setattr(media, "read_video_at", lambda *a, **k: pytest.fail("the video was decoded again"))
    frames, masks = render(1)
    edited = frames[0].copy()
    edited[masks[0]] = (250, 40, 200)
    Image.fromarray(edited).save(tmp_path / "edited2.png")
    res = prepare_job(request(clip, out, edited_frame=tmp_path / "edited2.png", preview=True))
    assert res.ran == ["edited", "masks", "preview"]
    after = mtimes(out)
    assert all(after[k] == before[k] for k in before if k.startswith(("source", "captions", "edit.toml")))
    assert after["edited_first.png"] != before["edited_first.png"]
    # with a user mask, the masks do not depend on the edited frame either
    monkeypatch.undo()
    user = tmp_path / "user"
    prepare_job(request(clip, user, auto_mask=False, mask=_mask_dir(clip)))
    res = prepare_job(request(clip, user, auto_mask=False, mask=_mask_dir(clip), edited_frame=tmp_path / "edited2.png"))
    assert res.ran == ["edited"]


def _mask_dir(clip: dict) -> Path:
    d = clip["root"] / "maskdir"
    if not d.exists():
        d.mkdir()
        for i, m in enumerate(clip["masks"]):
            Image.fromarray(m.astype(np.uint8) * 255).save(d / f"{i:04d}.png")
    return d


def test_hand_fixed_masks_survive_and_inputs_that_would_replace_them_are_refused(clip, tmp_path):
    out = tmp_path / "job"
    prepare_job(request(clip, out, preview=True))
    m = media.read_image(out / "masks" / "00003.png")
    m[:10] = 255
    cv2.imwrite(str(out / "masks" / "00003.png"), m)
    res = prepare_job(request(clip, out, preview=True))
    assert res.ran == ["preview"]  # the preview follows the hand-fixed mask, which is kept
    assert (media.read_image(out / "masks" / "00003.png")[:10] == 255).all()
    with pytest.raises(JobFolderError, match="masks was changed since prepare wrote it"):
        prepare_job(request(clip, out, auto=replace(request(clip, out).auto, threshold=0.2)))
    res = prepare_job(request(clip, out, auto=replace(request(clip, out).auto, threshold=0.2), force=True))
    assert "masks" in res.ran and not (media.read_image(out / "masks" / "00003.png")[:10] == 255).all()


# ---------------------------------------------------------------------------------- user masks


@pytest.mark.parametrize("mask_kind, size, mode", [("folder", (96, 64), "crop"), ("video", (96, 64), "pad")])
def test_user_mask_stays_aligned_through_fps_and_size_changes(tmp_path, mask_kind, size, mode):
    frames, masks = render(flat=True)
    media.write_video(tmp_path / "src.mp4", frames, SRC_FPS, crf=10)
    if mask_kind == "video":
        media.write_video(tmp_path / "mask.mp4", np.repeat(masks[..., None] * 255, 3, -1).astype(np.uint8), SRC_FPS)
        mask = tmp_path / "mask.mp4"
    else:
        (tmp_path / "m").mkdir()
        for i, m in enumerate(masks):
            Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "m" / f"{i}.png")
        mask = tmp_path / "m"
    Image.fromarray(recolor(frames[0], masks[0])).save(tmp_path / "edited.png")
    req = PrepareRequest(video=tmp_path / "src.mp4", edited_frame=tmp_path / "edited.png", out=tmp_path / "job",
                         mask=mask, frames=21, size=size, resize_mode=mode, caption="x", progress=False)
    prepare_job(req)
    job = load_job(load_config(tmp_path / "job" / "edit.toml"))
    assert job.frames.shape == (21, size[1], size[0], 3)
    assert np.array_equal(job.edit_mask, job_truth(masks, 21, 16, size, mode))
    yellow = (job.frames[..., 0] > 200) & (job.frames[..., 1] > 180) & (job.frames[..., 2] < 100)
    assert (yellow == job.edit_mask).mean() > 0.97  # the shape is where the mask is, in every frame


def test_a_folder_of_frames_is_a_source_at_its_own_fps(tmp_path):
    frames, masks = render(30, flat=True)
    for d in ("frames", "m"):
        (tmp_path / d).mkdir()
    for i, (f, m) in enumerate(zip(frames, masks)):
        Image.fromarray(f).save(tmp_path / "frames" / f"shot_{i}.png")
        Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "m" / f"{i}.png")
    Image.fromarray(recolor(frames[0], masks[0])).save(tmp_path / "edited.png")
    prepare_job(PrepareRequest(video=tmp_path / "frames", edited_frame=tmp_path / "edited.png",
                               out=tmp_path / "job", mask=tmp_path / "m", source_fps=SRC_FPS, frames=13, size=(96, 64),
                               progress=False, preview=False))
    job = load_job(load_config(tmp_path / "job" / "edit.toml"))
    idx = (np.arange(13) * SRC_FPS / 16 + 1e-6).astype(int)
    assert np.array_equal(job.frames, media.fit_size(frames[idx], 96, 64)[0])  # lossless: exactly the frames
    assert np.array_equal(job.edit_mask, job_truth(masks, 13, 16, (96, 64)))


def test_reference_frames_by_source_frame_number_and_time(clip, tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    img = media.read_image(clip["edited"])
    Image.fromarray(img).save(ref / "frame_0016.png")  # source frame 16 (0.533 s) = job frame 9
    Image.fromarray(img).save(ref / "t=0.25s.png")  # job frame 4
    res = prepare_job(request(clip, tmp_path / "job", reference_frames=ref))
    assert sorted(p.name for p in (tmp_path / "job" / "reference").iterdir()) == ["4.png", "9.png"]
    assert res.meta["reference"]["frames"] == {"4": "t=0.25s.png", "9": "frame_0016.png"}
    job = load_job(load_config(tmp_path / "job" / "edit.toml"))
    assert sorted(job.reference) == [4, 9]
    # a source frame the 16 fps job skips is used for the nearest job frame, with a warning
    (ref / "frame_0016.png").rename(ref / "17.png")
    res = prepare_job(request(clip, tmp_path / "job", reference_frames=ref))
    assert res.ran == ["reference"]  # 17 falls between the job's frames 9 and 10 (source 16, 18)
    assert any(re.search("source frame 17 is not one of the job's frames; used for job frame (9|10)", w)
               for w in res.warnings)
    for name, message in (("0.png", "the job's first frame"), ("t=9s.png", "outside the job's window"),
                          ("edit.png", "name a reference frame")):
        shutil.rmtree(ref)
        ref.mkdir()
        Image.fromarray(img).save(ref / name)
        with pytest.raises(UserError, match=message):
            prepare_job(request(clip, tmp_path / "job", reference_frames=ref))


# -------------------------------------------------------------------------------- bad inputs


def test_unreadable_video_is_one_line_exit_2_and_writes_nothing(clip, tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    proc = subprocess.run([sys.executable, "prepare.py", "--video", str(tmp_path / "bad.mp4"), "--edited-frame",
                           str(clip["edited"]), "--auto-mask", "--out", str(tmp_path / "job"), "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and "bad.mp4" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "job" / "edit.toml").exists()


def test_edited_frame_of_another_aspect_ratio_names_both_sizes(clip, tmp_path):
    with pytest.raises(UserError, match=r"squashed.png: edited frame is 100x120.*192x112.*200x120"):
        prepare_job(request(clip, tmp_path / "job", edited_frame=clip["root"] / "squashed.png"))


def test_identical_edited_frame_warns_and_auto_mask_then_errors(clip, tmp_path):
    res = prepare_job(request(clip, tmp_path / "a", edited_frame=clip["root"] / "same.png", auto_mask=False,
                              mask=_mask_dir(clip)))
    assert any("identical to the source's first frame" in w for w in res.warnings)
    assert "identical to the source's first frame" in summary(request(clip, tmp_path / "a"), res)
    with pytest.raises(NoDifferenceError, match="found no edit.*pass a mask with --mask"):
        prepare_job(request(clip, tmp_path / "b", edited_frame=clip["root"] / "same.png"))


def test_clip_shorter_than_the_window_suggests_what_fits(clip, tmp_path):
    with pytest.raises(UserError, match=r"too short.*33 frames at 16 fps.*need 2.06 s.*1.50 s.*--frames 21"):
        prepare_job(request(clip, tmp_path / "job", frames=33))
    with pytest.raises(UserError, match=r"--frames 20: must be 4k\+1"):
        prepare_job(request(clip, tmp_path / "job", frames=20))
    with pytest.raises(UserError, match="say where the video may change"):
        prepare_job(request(clip, tmp_path / "job", auto_mask=False))


def test_a_folder_from_other_inputs_is_refused_unless_forced(clip, auto_job, tmp_path):
    out, _ = auto_job
    frames, masks = render(speed=2.0)
    media.write_video(tmp_path / "other.mp4", frames, SRC_FPS)
    before = mtimes(out)
    with pytest.raises(JobFolderError, match="a job made from another clip"):
        prepare_job(request(clip, out, video=tmp_path / "other.mp4"))
    assert mtimes(out) == before
    (tmp_path / "notajob").mkdir()
    (tmp_path / "notajob" / "thesis.txt").write_text("keep me")
    with pytest.raises(JobFolderError, match="is not a job folder"):
        prepare_job(request(clip, tmp_path / "notajob"))
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    res = prepare_job(request(clip, copy, video=tmp_path / "other.mp4", force=True))
    assert "source" in res.ran and load_job(load_config(copy / "edit.toml")).frames.shape[0] == JOB_FRAMES


def test_help_has_a_worked_example():
    proc = subprocess.run([sys.executable, "prepare.py", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    assert "python prepare.py --video walk.mp4 --edited-frame" in proc.stdout and "t=7.5s.png" in proc.stdout


# ------------------------------------------------------------------------- geometry, overrides


def test_source_points_map_onto_job_pixels():
    crop = {"source_size": [200, 120], "fit": {"resized": [200, 120], "offset": [4, 4], "mode": "crop"}}
    assert source_to_job(10, 20, crop) == (6, 16)
    fit = media.fit_params(200, 100, 96, 64, "pad")
    pad = {"source_size": [200, 100], "fit": {"resized": list(fit.resized), "offset": list(fit.offset), "mode": "pad"}}
    x, y = source_to_job(200, 100, pad)
    assert (x, y) == (96, fit.offset[1] + fit.resized[1])


def test_set_overrides_go_into_edit_toml_but_not_over_prepared_keys(clip, tmp_path, auto_job):
    out, _ = auto_job
    copy = tmp_path / "job"
    shutil.copytree(out, copy)
    res = prepare_job(request(clip, copy, overrides=["training.steps=7", "name='jacket'"], preview=False))
    assert res.ran == ["config"] and not (copy / "preview").exists()  # an out-of-date preview is not left behind
    cfg = load_config(copy / "edit.toml")
    assert cfg.training.steps == 7 and cfg.name == "jacket" and cfg.data.video == str(copy / "source")
    with pytest.raises(UserError, match="--set data.fps: prepare sets this key from its media; use --fps"):
        prepare_job(request(clip, copy, overrides=["data.fps=24"]))


# ------------------------------------------------------------------- captions, SAM2 (tiny models)


def tiny_florence(folder: Path) -> Path:
    """A random Florence-2 (native transformers) with a byte-level tokenizer, its embeddings zeroed except
    for lowercase letters, space and end-of-text, so that what it generates is printable."""
    import torch
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import (
        BartConfig,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
        RobertaTokenizer,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.florence2.configuration_florence2 import Florence2VisionConfig

    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", "<mask>"])}
    for ch in sorted(ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = RobertaTokenizer(vocab=vocab, merges=[], extra_special_tokens={"image_token": "<image>"})
    vision = Florence2VisionConfig(depths=[1, 1, 1, 1], embed_dim=[8, 16, 16, 16], num_heads=[1, 1, 1, 1],
                                   num_groups=[1, 1, 1, 1], window_size=2, projection_dim=16, drop_path_rate=0.0,
                                   max_position_embeddings=8)
    text = BartConfig(vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                      decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=160,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      decoder_start_token_id=tok.eos_token_id, forced_bos_token_id=None)
    torch.manual_seed(0)
    model = Florence2ForConditionalGeneration(Florence2Config(vision_config=vision, text_config=text,
                                                              image_token_id=tok.image_token_id))
    keep = [tok.convert_tokens_to_ids(c) for c in [*"abcdefghijklmnopqrstuvwxyz", "Ġ"]] + [tok.eos_token_id]
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[[i for i in range(len(emb)) if i not in keep]] = 0
    model.save_pretrained(folder)
    size = {"height": 64, "width": 64}
    ip = CLIPImageProcessorPil(size=size, crop_size=size, do_center_crop=False, image_seq_length=5)
    Florence2Processor(image_processor=ip, tokenizer=tok).save_pretrained(folder)
    return folder


def tiny_sam2(folder: Path) -> Path:
    """A random SAM2 video model at a 128 px input (the smallest consistent configuration found)."""
    import torch
    from transformers import Sam2HieraDetConfig, Sam2VideoConfig, Sam2VideoModel, Sam2VisionConfig

    backbone = Sam2HieraDetConfig(hidden_size=12, embed_dim_per_stage=[12, 24, 48, 96], blocks_per_stage=[1, 1, 2, 1],
                                  num_attention_heads_per_stage=[1, 1, 1, 1], image_size=[128, 128],
                                  window_size_per_stage=[8, 4, 4, 2], global_attention_blocks=[3],
                                  window_positional_embedding_background_size=[2, 2])
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[96, 48, 24, 12],
                              backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]], fpn_hidden_size=128)
    cfg = Sam2VideoConfig(
        vision_config=vision, image_size=128, num_maskmem=3,
        prompt_encoder_config={"hidden_size": 128, "image_size": 128, "patch_size": 16, "mask_input_channels": 4},
        mask_decoder_config={"hidden_size": 128, "mlp_dim": 64, "num_attention_heads": 2, "iou_head_hidden_dim": 32},
        memory_attention_hidden_size=128, memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[8, 8], memory_encoder_hidden_size=128, memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=128, memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=64,
        memory_fuser_num_layers=1,
    )
    torch.manual_seed(0)
    Sam2VideoModel(cfg).save_pretrained(folder)
    return folder


def test_captions_from_a_file_and_from_a_florence2_model(clip, auto_job, tmp_path):
    from datasets.prepare.captions import CaptionError, caption_images

    out, _ = auto_job
    job = tmp_path / "job"
    shutil.copytree(out, job)
    (tmp_path / "caps.txt").write_text("# captions\na yellow ellipse moves right\n\na blue ellipse moves right\n")
    res = prepare_job(request(clip, job, caption=None, caption_file=tmp_path / "caps.txt"))
    assert res.ran == ["captions", "config"]
    cfg = load_config(job / "edit.toml")
    assert (cfg.data.caption, cfg.data.edited_caption) == ("a yellow ellipse moves right", "a blue ellipse moves right")

    model = tiny_florence(tmp_path / "florence")
    res = prepare_job(request(clip, job, caption=None, caption_model=model, caption_max_tokens=8))
    assert res.meta["captions"]["origin"] == "model/model"
    direct = caption_images(model, [media.read_image(job / "source" / "00000.png"),
                                    media.read_image(job / "edited_first.png")], max_new_tokens=8)
    cfg = load_config(job / "edit.toml")
    assert [cfg.data.caption, cfg.data.edited_caption] == direct and all(c.strip() for c in direct)
    assert all(c.isprintable() for c in direct)
    with pytest.raises(CaptionError, match="not a model folder"):
        caption_images(tmp_path, [media.read_image(job / "edited_first.png")])


def test_sam2_tracks_a_prompt_through_the_clip(clip, tmp_path):
    from masks.sam2 import Sam2Error, Sam2Prompt, track

    weights = tiny_sam2(tmp_path / "sam2")
    frames, _ = render(5)
    with pytest.raises(Sam2Error, match="outside the 200x120 job frame"):
        track(frames, Sam2Prompt(points=[(250, 10, 1)]), weights)
    with pytest.raises(Sam2Error, match="not a SAM2 weights folder"):
        track(frames, Sam2Prompt(points=[(20, 10, 1)]), tmp_path)
    with pytest.raises(UserError, match="outside the part of the 200x120 source the job keeps"):
        prepare_job(request(clip, tmp_path / "bad", auto_mask=False, sam2=weights, sam2_points=[(300, 10, 1)],
                            frames=5))
    # through prepare: box and points in source pixels (random weights: only the plumbing is checked)
    res = prepare_job(request(clip, tmp_path / "job", auto_mask=False, sam2=weights, sam2_box=(10, 20, 90, 80),
                              sam2_points=[(50, 50, 1)], frames=5, preview=False))
    assert res.meta["masks"]["kind"] == "sam2" and len(res.meta["masks"]["coverage"]) == 5
    assert len(list((tmp_path / "job" / "masks").iterdir())) == 5
    # the difference region as SAM2's prompt: it comes back on frame 0 (through the 128 px model input)
    res = prepare_job(request(clip, tmp_path / "job2", sam2=weights, frames=5, preview=False))
    truth = job_truth(clip["masks"], 5, 16, (JOB_W, JOB_H))[0]
    got = np.stack([media.read_image(p)[..., 0] > 127 for p in sorted((tmp_path / "job2" / "masks").iterdir())])
    assert got.shape == (5, JOB_H, JOB_W) and (got[0] & truth).sum() / (got[0] | truth).sum() > 0.7


# ------------------------------------------------------------------------------------ train.py


def test_train_runs_on_a_prepared_job(clip, tmp_path, tiny_wan_diffusers):
    ref = tmp_path / "ref"
    ref.mkdir()
    Image.fromarray(media.read_image(clip["edited"])).save(ref / "t=0.25s.png")
    prepare_job(request(clip, tmp_path / "job", frames=9, size=(64, 48), reference_frames=ref,
                        overrides=["adapter.rank=4"], preview=False))
    cmd = [sys.executable, "train.py", "--config", str(tmp_path / "job" / "edit.toml"),
           "--set", f"model.ckpt_path='{tiny_wan_diffusers}'", "--set", "model.dtype='float32'",
           "--set", "training.steps=2", "--set", "training.reference_steps=1", "--set", "training.save_every_n_steps=0",
           "--set", "training.checkpoint_every_n_minutes=0"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trained 3 steps" in proc.stdout
    (run,) = (tmp_path / "job" / "runs" / "job").iterdir()  # runs/ inside the job: output_dir is job-relative
    stages = [json.loads(line)["stage"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert stages == ["stage1", "stage1", "stage2"] and (run / "lora.safetensors").is_file()


# ------------------------------------------------------------------ issue 22: tracking, guard, warnings


def test_auto_mask_tracks_at_the_source_rate_when_the_job_rate_is_low(tmp_path):
    """A shape swinging 60 px either side: at the job's 4 fps it jumps up to 100 px between job frames (too far to
    follow), at the source's 30 fps at most 19 px. The job's masks must hold all the way."""
    frames, masks = render(n=45, swing=20)
    media.write_video(tmp_path / "swing.mp4", frames, SRC_FPS, crf=12)
    Image.fromarray(recolor(frames[0], masks[0])).save(tmp_path / "edited.png")
    clip = {"video": tmp_path / "swing.mp4", "edited": tmp_path / "edited.png"}
    res = prepare_job(request(clip, tmp_path / "job", fps=4, frames=5))
    assert res.meta["masks"]["tracking"]["source_frames"] == 31  # 0 .. 1 s at 30 fps, all of them tracked
    got = load_job(load_config(tmp_path / "job" / "edit.toml")).edit_mask
    truth = job_truth(masks, 5, 4, (JOB_W, JOB_H))
    ious = [(a & b).sum() / (a | b).sum() for a, b in zip(got, truth)]
    assert min(ious) > 0.8, np.round(ious, 3)


def _flash_clip() -> tuple[np.ndarray, np.ndarray]:
    """A yellow ellipse moving right over texture, invisible in frame 5 (a flash, a passing occluder)."""
    rng = np.random.default_rng(0)
    bg = cv2.GaussianBlur(rng.integers(0, 256, (96, 160, 3)).astype(np.float32), (0, 0), 2.0)
    bg = cv2.normalize(bg, None, 30, 220, cv2.NORM_MINMAX).astype(np.uint8)
    yy, xx = np.mgrid[0:96, 0:160]
    masks = np.stack([((xx - 40 - 4 * i) / 22) ** 2 + ((yy - 48) / 16) ** 2 <= 1 for i in range(12)])
    frames = np.repeat(bg[None], 12, axis=0)
    for i in range(12):
        if i != 5:
            frames[i][masks[i]] = (230, 200, 40)
    return frames, masks


def test_the_guard_keeps_an_object_that_vanishes_for_a_frame():
    from masks.auto import propagate_mask

    frames, masks = _flash_clip()
    run = propagate_mask(frames, masks[0])
    ious = [(a & b).sum() / (a | b).sum() for a, b in zip(run.masks, masks)]
    assert min(ious) > 0.9 and 5 in run.guarded, (np.round(ious, 2), run.guarded)
    unguarded = propagate_mask(frames, masks[0], AutoMaskSettings(keep_area=0.0, max_colour_change=1.0))
    assert unguarded.masks[-1].sum() < 0.7 * masks[-1].sum() or not (unguarded.masks[-1] & masks[-1]).any()


def test_a_sharp_coverage_drop_is_a_warning(clip, tmp_path):
    frames, masks = render(speed=7.0)  # leaves the picture on the right after about 0.9 s
    media.write_video(tmp_path / "fast.mp4", frames, SRC_FPS, crf=12)
    Image.fromarray(recolor(frames[0], masks[0])).save(tmp_path / "edited.png")
    res = prepare_job(request({"video": tmp_path / "fast.mp4", "edited": tmp_path / "edited.png"}, tmp_path / "job"))
    assert any("--auto-mask: the tracked region shrinks to under half its frame-0 area" in w for w in res.warnings)


def test_a_clean_job_has_no_warnings(auto_job):
    assert auto_job[1].warnings == []


def test_repeated_frames_are_a_warning(clip, tmp_path):
    res = prepare_job(request(clip, tmp_path / "job", fps=60))  # a 30 fps source at 60 fps: every frame twice
    assert any("the job's 17 frames show only 9 different source frames (the source has 30 fps, the job 60 fps)"
               in w for w in res.warnings), res.warnings


@pytest.mark.parametrize("size, words", [((384, 224), "enlarges it 1.9x"), ((112, 112), "crops 40% of the picture")])
def test_a_fit_that_enlarges_or_crops_a_lot_is_a_warning(clip, tmp_path, size, words):
    res = prepare_job(request(clip, tmp_path / "job", size=size, frames=5))
    assert any(words in w for w in res.warnings), res.warnings


def test_an_edited_frame_from_another_moment_is_a_warning(tmp_path):
    """A panning clip; the edited frame was exported from 0.5 s in (frame 15), not from the window's start."""
    rng = np.random.default_rng(1)
    world = cv2.GaussianBlur(rng.integers(0, 256, (80, 240, 3)).astype(np.float32), (0, 0), 1.5)
    world = cv2.normalize(world, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    frames = np.stack([world[:, 3 * i:3 * i + 120] for i in range(30)])
    media.write_video(tmp_path / "pan.mp4", frames, SRC_FPS, crf=10)
    (tmp_path / "mask").mkdir()
    box = np.zeros((80, 120), np.uint8)
    box[20:50, 40:70] = 255
    Image.fromarray(box).save(tmp_path / "mask" / "0.png")
    edited = frames[15].copy()
    edited[20:50, 40:70] = (0, 0, 255)
    Image.fromarray(edited).save(tmp_path / "edited.png")
    base = dict(video=tmp_path / "pan.mp4", mask=tmp_path / "mask" / "0.png", frames=9, size=(96, 64),
                caption="a wall", progress=False, preview=False)
    res = prepare_job(PrepareRequest(edited_frame=tmp_path / "edited.png", out=tmp_path / "job", **base))
    moment = [w for w in res.warnings if "it looks like another moment of the clip" in w]
    assert moment and "it matches job frame 8 better" in moment[0], res.warnings
    first = frames[0].copy()
    first[20:50, 40:70] = (0, 0, 255)
    Image.fromarray(first).save(tmp_path / "edited0.png")
    res = prepare_job(PrepareRequest(edited_frame=tmp_path / "edited0.png", out=tmp_path / "job0", **base))
    assert not [w for w in res.warnings if "another moment" in w], res.warnings


def test_a_failed_new_job_says_it_is_incomplete_and_the_next_run_finishes_it(clip, tmp_path):
    from config.errors import ConfigError
    from config.loader import PREPARE_INCOMPLETE

    out = tmp_path / "job"
    with pytest.raises(UserError, match="squashed.png"):  # fails after the clip was decoded
        prepare_job(request(clip, out, edited_frame=clip["root"] / "squashed.png"))
    marker = out / PREPARE_INCOMPLETE
    assert not (out / "edit.toml").exists() and (out / "source").is_dir()
    assert "has not finished" in marker.read_text() and "squashed.png" in marker.read_text()
    with pytest.raises(ConfigError, match="prepare.py did not finish this job"):  # what train.py/infer.py then say
        load_config(out / "edit.toml")
    res = prepare_job(request(clip, out))
    assert "source" not in res.ran  # the decoded clip is reused
    assert (out / "edit.toml").is_file() and not marker.exists()
    load_config(out / "edit.toml")

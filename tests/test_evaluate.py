"""evaluate.py: metrics with known answers on synthetic clips, the CLIP metrics on a tiny random CLIP, the
report/plot files, the multi-result table, config mode, and input mismatches as one-line errors."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import evaluate as evaluate_cli
import media
from config.errors import UserError
from engine.evaluate import metrics as M
from engine.evaluate.job import EvalInputs, ResultVideo, evaluate, inputs_from_paths
from engine.evaluate.report import summary_text

REPO = Path(__file__).resolve().parents[1]
T, H, W = 9, 48, 64


def texture(h: int = H + 24, w: int = W + 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (0, 0), 1.5)


def clip_with_square(pan: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A panning texture with a red square moving right; the mask covers the square with a margin."""
    tex = texture()
    frames, masks = [], []
    for t in range(T):
        f = tex[8:8 + H, pan * t:pan * t + W].copy()
        m = np.zeros((H, W), bool)
        x = 10 + 3 * t
        f[16:32, x:x + 12] = (220, 40, 40)
        m[13:35, x - 3:x + 15] = True
        frames.append(f)
        masks.append(m)
    return np.stack(frames), np.stack(masks)


def recolored(frames: np.ndarray, masks: np.ndarray, color=(40, 40, 220)) -> np.ndarray:
    """The square in another color: an edit that changes only pixels inside the mask."""
    out = frames.copy()
    red = np.all(frames == (220, 40, 40), axis=-1) & masks
    out[red] = color
    return out


def save_pngs(folder: Path, frames: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:03d}.png")
    return folder


# ------------------------------------------------------------------------------- known answers


def test_result_equal_to_source_scores_infinite_psnr_and_ssim_one():
    src, masks = clip_with_square()
    assert M.psnr(src[3], src[3], ~masks[3]) == math.inf
    assert M.psnr(src[3], src[3]) == math.inf
    assert M.ssim(src[3], src[3], ~masks[3]) == pytest.approx(1.0, abs=1e-6)
    assert M.mse(src[3], src[3], np.zeros((H, W), bool)) is None  # empty region: not measurable, not 0


def test_noise_only_inside_mask_keeps_background_psnr_at_max():
    src, masks = clip_with_square()
    rng = np.random.default_rng(1)
    noisy = src.astype(np.int16) + rng.integers(-60, 61, src.shape) * masks[..., None]
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    for t in range(T):
        assert M.psnr(noisy[t], src[t], ~masks[t]) == math.inf
        # SSIM's window never reaches across the mask: kept pixels next to the noise still score 1
        assert M.ssim(noisy[t], src[t], ~masks[t]) == pytest.approx(1.0, abs=1e-6)
        assert M.psnr(noisy[t], src[t]) < 35
        assert M.ssim(noisy[t], src[t]) < 0.95


def test_global_color_shift_scores_low_background_psnr():
    src = np.full((H, W, 3), 100, np.uint8)
    src[:, : W // 2] = 60
    shifted = src + np.uint8(20)
    kept = np.ones((H, W), bool)
    kept[:10, :10] = False
    # every kept pixel off by 20 levels: PSNR = 20 log10(255 / 20)
    assert M.psnr(shifted, src, kept) == pytest.approx(20 * math.log10(255 / 20), abs=1e-9)
    assert M.psnr(shifted, src, kept) < 25


def test_ssim_of_flat_images_matches_the_closed_form():
    """Zero variance: SSIM = luminance term (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1), at every pixel,
    including the frame border (the window is renormalized, not zero-padded)."""
    a, b = np.full((H, W, 3), 100, np.uint8), np.full((H, W, 3), 120, np.uint8)
    expected = (2 * 100 * 120 + M.SSIM_C1) / (100**2 + 120**2 + M.SSIM_C1)
    assert M.ssim(a, b) == pytest.approx(expected, rel=1e-5)
    region = np.zeros((H, W), bool)
    region[5:20, 40:60] = True
    assert M.ssim(a, b, region) == pytest.approx(expected, rel=1e-5)


def direct_ssim(a: np.ndarray, b: np.ndarray, region: np.ndarray, y: int, x: int) -> float:
    """Wang et al.'s SSIM at one pixel, computed directly: Gaussian weights (11x11, sigma 1.5) over the
    region's pixels of the window, renormalized; channels averaged."""
    g = cv2.getGaussianKernel(11, 1.5)
    win = (g @ g.T) * region[y - 5:y + 6, x - 5:x + 6]
    win = win / win.sum()
    out = []
    for c in range(3):
        pa, pb = a[y - 5:y + 6, x - 5:x + 6, c].astype(float), b[y - 5:y + 6, x - 5:x + 6, c].astype(float)
        ma, mb = (win * pa).sum(), (win * pb).sum()
        va, vb = (win * (pa - ma) ** 2).sum(), (win * (pb - mb) ** 2).sum()
        cov = (win * (pa - ma) * (pb - mb)).sum()
        out.append((2 * ma * mb + M.SSIM_C1) * (2 * cov + M.SSIM_C2)
                   / ((ma**2 + mb**2 + M.SSIM_C1) * (va + vb + M.SSIM_C2)))
    return float(np.mean(out))


def test_ssim_map_matches_the_direct_formula_inside_and_at_the_mask_edge():
    src, masks = clip_with_square()
    rng = np.random.default_rng(3)
    other = np.clip(src.astype(int) + rng.integers(-30, 31, src.shape), 0, 255).astype(np.uint8)
    everywhere = np.ones((H, W), bool)
    full, kept = M.ssim_map(other[2], src[2]), M.ssim_map(other[2], src[2], ~masks[2])
    for y, x in [(20, 30), (8, 8), (24, 12), (35, 25)]:  # (24, 12) and (35, 25) border the mask
        assert full[y, x] == pytest.approx(direct_ssim(other[2], src[2], everywhere, y, x), abs=1e-9)
        if not masks[2, y, x]:
            assert kept[y, x] == pytest.approx(direct_ssim(other[2], src[2], ~masks[2], y, x), abs=1e-9)


def test_color_statistics_known_lab_difference():
    red = np.zeros((H, W, 3), np.uint8)
    red[...] = (255, 0, 0)
    blue = red.copy()
    blue[...] = (0, 0, 255)
    region = np.zeros((H, W), bool)
    region[10:30, 10:30] = True
    # CIE Lab (D65): red (53.24, 80.09, 67.20), blue (32.30, 79.19, -107.86) -> dE76 = 176.3
    assert M.delta_e(M.mean_lab(red, region), M.mean_lab(blue, region)) == pytest.approx(176.3, abs=0.5)
    assert M.delta_e(M.mean_lab(red, region), M.mean_lab(red, region)) == 0.0
    assert M.hellinger(M.lab_histogram(red, region), M.lab_histogram(red, region)) == pytest.approx(0.0, abs=1e-7)
    assert M.hellinger(M.lab_histogram(red, region), M.lab_histogram(blue, region)) == pytest.approx(1.0)
    assert M.mean_lab(red, np.zeros((H, W), bool)) is None


def test_warping_error_is_zero_for_a_static_video_and_grows_with_flicker():
    static = np.repeat(texture()[None, :H, :W], T, axis=0)
    pairs = M.flow_pairs(static)
    assert max(M.warp_errors(static, pairs)) < 1e-8
    errors = []
    for amount in (10, 30):
        flicker = static.copy()
        flicker[4] = np.clip(flicker[4].astype(int) + amount, 0, 255).astype(np.uint8)
        e = M.warp_errors(flicker, pairs)
        assert e[3] > 1e-3 and e[4] > 1e-3  # the pairs (3, 4) and (4, 5)
        assert max(e[:3] + e[5:]) < 1e-8  # the others stay steady
        errors.append(e[3])
    assert errors[1] > 4 * errors[0]  # MSE grows with the square of the flicker


def test_warping_error_follows_the_source_motion():
    """A panning clip judged with its own flow is steady; judged without motion it is not, and with the
    flow reversed (the wrong warp direction) worse still."""
    tex = texture()
    pan = np.stack([tex[8:8 + H, 2 * t:2 * t + W] for t in range(T)])
    pairs = M.flow_pairs(pan)
    grid = np.stack(np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32)), -1)
    still = [M.WarpPair(grid, p.valid) for p in pairs]
    reversed_ = [M.WarpPair(2 * grid - p.coords, p.valid) for p in pairs]
    with_flow = np.mean(M.warp_errors(pan, pairs))
    without = np.mean(M.warp_errors(pan, still))
    assert with_flow < 0.01 * without
    assert np.mean(M.warp_errors(pan, reversed_)) > without
    assert np.mean([p.valid.mean() for p in pairs]) > 0.85  # only the column entering the frame is occluded


def test_square_box_is_square_inside_the_frame_and_covers_the_region():
    region = np.zeros((H, W), bool)
    region[2:10, 50:63] = True
    x0, y0, x1, y1 = M.square_box(region)
    assert x1 - x0 == y1 - y0 and 0 <= x0 and 0 <= y0 and x1 <= W and y1 <= H
    assert x0 <= 50 and x1 >= 63 and y0 <= 2 and y1 >= 10
    assert M.square_box(np.zeros((H, W), bool)) is None


# ------------------------------------------------------------------------------- whole evaluation


def test_frame_zero_is_reported_but_not_averaged():
    src, masks = clip_with_square()
    edited = src[0].copy()
    edited[:6] = 0  # an edited frame that also touched the background
    result = recolored(src, masks)
    result[0] = edited
    inputs = EvalInputs(src, masks, edited, 16.0, [ResultVideo(Path("r.mp4"), result)])
    rep = evaluate(inputs)["results"][0]
    assert rep["summary"]["psnr_kept"] == math.inf
    assert rep["per_frame"]["psnr_kept"][0] < 30
    rep_all = evaluate(inputs, include_first=True)["results"][0]
    assert rep_all["summary"]["psnr_kept"] < 40


def test_edit_color_fidelity_tells_a_propagated_edit_from_a_lost_one():
    src, masks = clip_with_square()
    edited = recolored(src, masks)
    lost = src.copy()  # the edit reverted after frame 0
    lost[0] = edited[0]
    inputs = EvalInputs(src, masks, edited[0], 16.0, [ResultVideo(Path("kept.mp4"), edited),
                                                      ResultVideo(Path("lost.mp4"), lost)])
    kept, gone = (r["summary"] for r in evaluate(inputs)["results"])
    # blue vs red square: about 170 dE on a third of the region; the panning texture around it adds a little
    assert kept["delta_e"] < 10 < 40 < gone["delta_e"]
    assert kept["hist_distance"] < 0.5 * gone["hist_distance"]


def test_multi_result_table_lists_both_results(tmp_path, capsys):
    src, masks = clip_with_square()
    good = recolored(src, masks)
    bad = np.clip(good.astype(int) + 25, 0, 255).astype(np.uint8)
    save_pngs(tmp_path / "src", src)
    save_pngs(tmp_path / "mask", masks.astype(np.uint8) * 255)
    Image.fromarray(good[0]).save(tmp_path / "edited.png")
    a, b = save_pngs(tmp_path / "mask_aware" / "frames", good), save_pngs(tmp_path / "naive" / "frames", bad)
    assert evaluate_cli.main(["--source", str(tmp_path / "src"), "--result", str(a), "--result", str(b),
                              "--mask", str(tmp_path / "mask"), "--edited-frame", str(tmp_path / "edited.png"),
                              "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "metric" in line)
    assert "mask_aware/frames" in header and "naive/frames" in header
    psnr_row = next(line for line in out.splitlines() if "PSNR kept region" in line).split()
    assert psnr_row[-2] == "inf" and float(psnr_row[-1]) < 25
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert [r["label"] for r in report["results"]] == ["mask_aware/frames", "naive/frames"]
    assert report["results"][0]["summary"]["psnr_kept"] == "inf"  # JSON has no infinity


def test_mask_is_resized_to_the_frames(tmp_path):
    src, masks = clip_with_square()
    half = masks[:, ::2, ::2]
    save_pngs(tmp_path / "src", src)
    save_pngs(tmp_path / "mask", half.astype(np.uint8) * 255)
    inputs = inputs_from_paths(tmp_path / "src", [str(tmp_path / "src")], mask=str(tmp_path / "mask"))
    assert inputs.edit_mask.shape == masks.shape
    assert abs(inputs.edit_mask.mean() - masks.mean()) < 0.01
    save_pngs(tmp_path / "wide", np.zeros((T, H, 2 * W), np.uint8))
    with pytest.raises(UserError, match=f"mask .*wide is {2 * W}x{H} but the source frames are {W}x{H}"):
        inputs_from_paths(tmp_path / "src", [str(tmp_path / "src")], mask=str(tmp_path / "wide"))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "evaluate.py"), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_cli_writes_report_summary_and_a_valid_png(tmp_path):
    src, masks = clip_with_square()
    save_pngs(tmp_path / "src", src)
    save_pngs(tmp_path / "mask", masks.astype(np.uint8) * 255)
    result = recolored(src, masks)
    Image.fromarray(result[0]).save(tmp_path / "edited.png")
    save_pngs(tmp_path / "out" / "frames", result)
    proc = run_cli("--source", str(tmp_path / "src"), "--result", str(tmp_path / "out" / "frames"),
                   "--mask", str(tmp_path / "mask"), "--edited-frame", str(tmp_path / "edited.png"))
    assert proc.returncode == 0, proc.stderr
    assert "PSNR kept region" in proc.stdout and "warping error" in proc.stdout
    assert "LPIPS (not implemented)" in proc.stdout
    report = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    summary = report["results"][0]["summary"]
    assert summary["psnr_kept"] == "inf" and summary["ssim_kept"] == pytest.approx(1.0, abs=1e-6)
    assert len(report["results"][0]["per_frame"]["warp_error"]) == T - 1
    png = tmp_path / "out" / "evaluation.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] >= 800
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 100  # drawn on, not a blank canvas


def test_truth_scores_the_result_against_the_exact_edit_and_comparison_files_show_every_clip(tmp_path):
    src, masks = clip_with_square()
    truth = recolored(src, masks)
    save_pngs(tmp_path / "src", src)
    save_pngs(tmp_path / "truth", truth)
    save_pngs(tmp_path / "mask", masks.astype(np.uint8) * 255)
    save_pngs(tmp_path / "exact" / "frames", truth)
    save_pngs(tmp_path / "reverted" / "frames", src)  # the edit lost: background right, edit region wrong
    proc = run_cli("--source", str(tmp_path / "src"), "--result", str(tmp_path / "exact" / "frames"),
                   "--result", str(tmp_path / "reverted" / "frames"), "--mask", str(tmp_path / "mask"),
                   "--truth", str(tmp_path / "truth"), "--out", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stderr
    assert "PSNR vs ground truth" in proc.stdout
    report = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    exact, reverted = (r["summary"] for r in report["results"])
    assert exact["psnr_truth"] == "inf" and exact["ssim_truth"] == pytest.approx(1.0, abs=1e-6)
    assert reverted["psnr_truth_edit"] + 3 < reverted["psnr_truth"] < 30  # the error sits in the edit region
    with Image.open(tmp_path / "report" / "comparison.png") as im:
        strip = np.asarray(im.convert("RGB"))
    # four rows (source, ground truth, two results) of T frames each, frames enlarged from 48 px to 96 px
    assert strip.shape[0] >= 4 * 96 and strip.shape[1] >= T * 96 * W // H
    video = media.read_frames(tmp_path / "report" / "comparison.mp4", fps=16).frames
    assert len(video) == T and video.shape[2] >= 4 * W * 2  # four panels side by side, enlarged


def test_truth_of_another_length_is_a_one_line_error(tmp_path):
    src, _ = clip_with_square()
    save_pngs(tmp_path / "src", src)
    save_pngs(tmp_path / "truth", src[:-2])
    proc = run_cli("--source", str(tmp_path / "src"), "--result", str(tmp_path / "src"),
                   "--truth", str(tmp_path / "truth"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "ground truth" in proc.stderr and str(tmp_path / "truth") in proc.stderr


@pytest.mark.parametrize("mismatch", ["frames", "size"])
def test_cli_mismatched_inputs_are_one_line_errors(tmp_path, mismatch):
    src, _ = clip_with_square()
    save_pngs(tmp_path / "src", src)
    bad = src[:-1] if mismatch == "frames" else np.stack([cv2.resize(f, (W + 16, H)) for f in src])
    save_pngs(tmp_path / "res", bad)
    proc = run_cli("--source", str(tmp_path / "src"), "--result", str(tmp_path / "res"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(tmp_path / "src") in lines[0] and str(tmp_path / "res") in lines[0]
    assert (f"{T - 1} frames" if mismatch == "frames" else f"{W + 16}x{H}") in lines[0]


# ------------------------------------------------------------------------------- config mode


@pytest.fixture
def job(tmp_path) -> Path:
    src, masks = clip_with_square()
    media.write_video(tmp_path / "src.mp4", src, 16)
    save_pngs(tmp_path / "masks", masks.astype(np.uint8) * 255)
    Image.fromarray(recolored(src, masks)[0]).save(tmp_path / "edited.png")
    (tmp_path / "edit.toml").write_text(
        "[data]\nvideo = 'src.mp4'\nmask = 'masks'\nedited_frame = 'edited.png'\n"
        f"fps = 16.0\nframes = {T}\nwidth = {W}\nheight = {H}\n")
    return tmp_path


def test_config_mode_evaluates_infer_default_result_and_reports_its_settings(job, capsys):
    (job / "results").mkdir()
    shutil.copy(job / "src.mp4", job / "results" / "result.mp4")  # decodes to the job's frames exactly
    sidecar = {"version": 1, "config": {}, "seed": 7, "steps": 30, "guidance": 5.0, "shift": 5.0,
               "scheduler": "unipc", "mask_preset": "loraedit", "composite": False, "prompt": "p",
               "loras": [{"path": "/runs/x/lora.safetensors", "weight": 0.9, "sha256": "0"}]}
    (job / "results" / "result.json").write_text(json.dumps(sidecar))
    assert evaluate_cli.main(["--config", str(job / "edit.toml")]) == 0
    out = capsys.readouterr().out
    assert "seed 7, 30 steps" in out and "lora.safetensors x0.9" in out
    report = json.loads((job / "results" / "evaluation.json").read_text())
    assert report["inputs"]["config"] == str(job / "edit.toml")
    assert report["results"][0]["summary"]["psnr_full"] == "inf"
    assert (job / "results" / "evaluation.png").is_file()


def test_config_mode_without_a_result_says_where_it_looked(job, capsys):
    from config.cli import run

    assert run(evaluate_cli.main, ["--config", str(job / "edit.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "results/result.mp4" in err and "infer.py" in err


# ------------------------------------------------------------------------------- CLIP


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    """A tiny random CLIPModel saved with save_pretrained, with a CLIPImageProcessor."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = tmp_path_factory.mktemp("tiny-clip")
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    cfg = CLIPConfig(text_config=dict(small, vocab_size=64, max_position_embeddings=16),
                     vision_config=dict(small, image_size=32, patch_size=8), projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_clip_metrics_run_on_a_tiny_random_clip_and_lie_in_range(tiny_clip):
    src, masks = clip_with_square()
    result = recolored(src, masks)
    rng = np.random.default_rng(2)
    other = rng.integers(0, 256, src.shape).astype(np.uint8)
    inputs = EvalInputs(src, masks, result[0], 16.0, [ResultVideo(Path("a/r.mp4"), src),
                                                      ResultVideo(Path("b/r.mp4"), other)])
    report = evaluate(inputs, clip_model=tiny_clip)
    same, noise = report["results"]
    for r in report["results"]:
        for key in ("clip_score", "input_similarity", "clip_region"):
            values = r["per_frame"][key]
            assert len(values) == T and all(-1.0 <= v <= 1.0 for v in values)
            assert -1.0 <= r["summary"][key] <= 1.0
    # a result equal to the source has input similarity 1 (same pixels, same embedding)
    assert same["summary"]["input_similarity"] == pytest.approx(1.0, abs=1e-5)
    assert noise["summary"]["input_similarity"] < same["summary"]["input_similarity"]
    text = summary_text(report)
    assert "CLIP score" in text and "input similarity" in text


def test_clip_vision_tower_without_projection_is_refused(tiny_clip, tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPVisionModel

    from engine.evaluate.clip import ClipImageEncoder

    CLIPVisionModel(CLIPConfig.from_pretrained(tiny_clip).vision_config).save_pretrained(tmp_path)
    CLIPImageProcessor.from_pretrained(tiny_clip).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="visual_projection"):
        ClipImageEncoder(tmp_path)


def test_panels_say_which_result_had_a_lora(tmp_path):
    """A side-by-side labels infer.py's results by what made them (its sidecar), not only by their paths."""
    from engine.evaluate.job import made_with

    def result(folder: str, loras: object, software: str = "lora-edit infer.py") -> Path:
        d = tmp_path / folder
        d.mkdir()
        (d / "result.mp4").write_bytes(b"")
        (d / "result.json").write_text(json.dumps({"software": software, "loras": loras}))
        return d / "result.mp4"

    lora = result("lora", [{"path": "/runs/x/lora.safetensors", "weight": 0.8}])
    assert made_with(lora) == "LoRA lora.safetensors x0.8"
    assert made_with(result("none", [])) == "no LoRA"
    assert made_with(result("other", [], software="another tool")) is None
    assert made_with(result("hostile", [{"path": "a", "weight": "abc"}])) is None
    assert made_with(tmp_path / "lora" / "frames") == "LoRA lora.safetensors x0.8"  # a frames folder: its sidecar
    assert made_with(tmp_path / "missing.mp4") is None

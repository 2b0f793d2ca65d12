"""masks/: reading and binarizing, alignment with the video, morphology, presets, latent packing."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

import media
from masks import morphology
from masks.io import binarize, read_mask, to_keep_mask
from masks.presets import PRESETS, preset_keep_mask
from media import MediaError
from models.hunyuan_video.packing import pack_hunyuan
from models.wan.packing import pack_wan

SW, SH = 128, 64  # source size; the square moves 4 px per source frame


def scene(i: int, mask: bool = False) -> np.ndarray:
    img = np.full((SH, SW, 3), 0 if mask else 60, np.uint8)
    img[20:36, 4 * i + 2:4 * i + 18] = 255
    return img


def make_video(path: Path, n: int, fps: float, frame) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = SW, SH, "yuv420p"
        s.options = {"crf": "12"}
        for i in range(n):
            c.mux(s.encode(av.VideoFrame.from_ndarray(frame(i), format="rgb24")))
        c.mux(s.encode(None))
    return path


def bbox(m: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(m)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()])


def job_video(tmp_path: Path):
    """Source 30 fps -> 10 frames at 16 fps, fitted to 64x32 (scale 0.5: 2 px per source frame)."""
    clip = media.read_video(make_video(tmp_path / "src.mp4", 20, 30, scene))
    idx = media.resample_times(clip.timestamps, 16, 0, 10, clip.end_time)
    frames, fit = media.fit_size(clip.frames[idx], 64, 32)
    return clip, idx, frames, fit


def test_binarize_threshold_rules():
    assert binarize(np.array([127, 128], np.uint8)).tolist() == [False, True]
    assert binarize(np.array([32767, 32768], np.uint16)).tolist() == [False, True]
    assert binarize(np.array([0.5, 0.51], np.float32)).tolist() == [False, True]
    assert binarize(np.array([0, 1], np.uint8), threshold=0.0).tolist() == [False, True]
    with pytest.raises(ValueError):
        binarize(np.zeros(2, np.uint8), threshold=1.0)


def test_mask_video_follows_video_after_resampling_and_fit(tmp_path):
    clip, idx, frames, fit = job_video(tmp_path)
    mpath = make_video(tmp_path / "mask.mp4", 20, 30, lambda i: scene(i, mask=True))
    mask = read_mask(mpath, clip.timestamps[idx], clip.fps, fit)
    assert mask.shape == (10, 32, 64) and mask.dtype == bool
    for t in range(10):
        assert np.abs(bbox(frames[t, ..., 0] > 160) - bbox(mask[t])).max() <= 1, t
    # the fast path (read_video_at) gives the same frames and times
    at = media.read_video_at(tmp_path / "src.mp4", media.target_times(16, 0, 10))
    assert np.array_equal(at.frames, clip.frames[idx])
    assert np.array_equal(read_mask(mpath, at.timestamps, at.fps, fit), mask)


def test_mask_video_at_other_fps_is_aligned_by_time(tmp_path):
    clip, idx, frames, fit = job_video(tmp_path)
    mpath = make_video(tmp_path / "mask15.mp4", 10, 15, lambda j: scene(2 * j, mask=True))
    mask = read_mask(mpath, clip.timestamps[idx], clip.fps, fit)
    for t, k in enumerate(idx):
        j = k // 2  # mask frame on screen at source time k / 30
        want = bbox(media.apply_fit(scene(2 * j)[None], fit)[0, ..., 0] > 160)
        assert np.abs(want - bbox(mask[t])).max() <= 1


def test_mask_image_folder_pairs_file_k_with_source_frame_k(tmp_path):
    clip, idx, frames, fit = job_video(tmp_path)
    folder = tmp_path / "masks"
    folder.mkdir()
    for k in range(20):
        Image.fromarray(scene(k, mask=True)[..., 0]).save(folder / f"m{k}.png")
    mask = read_mask(folder, clip.timestamps[idx], clip.fps, fit)
    for t in range(10):
        assert np.abs(bbox(frames[t, ..., 0] > 160) - bbox(mask[t])).max() <= 1
    for k in range(12, 20):
        (folder / f"m{k}.png").unlink()
    with pytest.raises(MediaError, match="masks"):
        read_mask(folder, clip.timestamps[idx], clip.fps, fit)


def test_static_mask_image_is_repeated_and_fitted(tmp_path):
    _, idx, frames, fit = job_video(tmp_path)
    Image.fromarray(scene(3, mask=True)).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png", np.zeros(len(idx)), fit=fit)
    assert mask.shape == (10, 32, 64) and all(np.array_equal(mask[0], m) for m in mask)
    assert mask.sum() == 8 * 8 * 10  # 16x16 square at scale 0.5
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "square.png")
    with pytest.raises(MediaError, match="square.png"):
        read_mask(tmp_path / "square.png", np.zeros(3), fit=fit)


@pytest.mark.parametrize("size", [(96, 48), (160, 80)])
@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_mask_resize_is_centre_aligned(tmp_path, size, mode):
    m = np.zeros((SH, SW), np.uint8)
    m[19:45, 37:91] = 255  # symmetric about the image centre
    Image.fromarray(m).save(tmp_path / "sym.png")
    out = read_mask(tmp_path / "sym.png", [0], fit=media.fit_params(SW, SH, *size, mode))[0]
    assert out.any() and np.array_equal(out, out[::-1, ::-1])  # a top-left-biased nearest would shift it


def test_mask_image_modes_rgba_colour_and_16_bit(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[0, 0, 3] = 255  # white painted on a transparent layer
    Image.fromarray(rgba, "RGBA").save(tmp_path / "layer.png")
    assert read_mask(tmp_path / "layer.png", [0])[0].tolist() == [[True, False], [False, False]]
    red = np.zeros((1, 2, 3), np.uint8)
    red[0, 0] = (255, 0, 0)  # luminance 0.299
    Image.fromarray(red).save(tmp_path / "red.png")
    assert not read_mask(tmp_path / "red.png", [0]).any()
    assert read_mask(tmp_path / "red.png", [0], threshold=0.2)[0].tolist() == [[True, False]]
    Image.fromarray(np.array([[32767, 32768]], np.uint16)).save(tmp_path / "g16.png")
    assert read_mask(tmp_path / "g16.png", [0, 1]).tolist() == [[[False, True]], [[False, True]]]


def test_to_keep_mask_flips_convention_once():
    edit = np.array([[True, False]])
    assert to_keep_mask(edit).tolist() == [[0.0, 1.0]] and to_keep_mask(edit).dtype == np.float32
    assert torch.equal(to_keep_mask(torch.tensor([[True, False]])), torch.tensor([[0.0, 1.0]]))


def test_dilate_erode_bboxes_feather():
    m = np.zeros((2, 31, 31), bool)
    m[:, 15, 15] = True
    d = morphology.dilate(m, 3)
    assert d[0, 15, 12] and d[0, 12, 15] and not d[0, 12, 12] and d[0, 13, 13]  # a disc, not a square
    assert np.array_equal(morphology.erode(d, 3), m) and np.array_equal(morphology.dilate(m, 0), m)
    assert morphology.erode(np.ones((8, 8), bool), 2).all()  # frame edges do not eat into the mask
    two = np.zeros((1, 60, 100), bool)
    two[0, 10:30, 10:30] = True
    two[0, 40:50, 70:90] = True
    comp = morphology.to_bboxes(two, enlarge=0.1)
    assert comp[0, 9:31, 9:31].all() and comp.sum() == 22 * 22 + 22 * 12  # 10 px tall + 0.5 px each side, rounded out
    assert not comp[0, 35, 50]  # the gap between the objects stays keep
    frame = morphology.to_bboxes(two, enlarge=0.0, mode="frame")
    assert frame[0, 10:50, 10:90].all() and frame.sum() == 40 * 80
    f = morphology.feather(m[0] | morphology.dilate(m[0], 8), 4)
    assert f.dtype == np.float32 and f.min() >= 0 and f.max() <= 1
    assert f[15, 15] == pytest.approx(1.0, abs=1e-3) and f[0, 0] == pytest.approx(0.0, abs=1e-6)
    row = f[15, 15:]
    assert np.all(np.diff(row) <= 1e-6) and 0.1 < row[8] < 0.9  # soft, monotone edge



def test_inward_feather_is_zero_on_every_kept_pixel_and_ramps_inside():
    m = np.zeros((1, 41, 41), bool)
    m[0, 10:31, 10:31] = True
    f = morphology.feather_inward(m, 8)
    assert f.shape == m.shape and f.dtype == np.float32
    assert np.all(f[~m] == 0.0)  # kept pixels: exactly 0, right up to the edge
    row = f[0, 20, 10:21]  # from the edge to the centre
    assert 0 < row[0] < 0.2 and row[-1] == 1.0 and np.all(np.diff(row) >= 0)
    assert np.array_equal(morphology.feather_inward(m, 0), m.astype(np.float32))
    assert (morphology.feather(m, 8)[~m] > 0.01).any()  # the two-sided blur does reach kept pixels

PRESET_TABLE = {  # preset: (frame 0, later frames) as "all"/"none"/"outside"
    "i2v": ("all", "none"), "none": ("none", "none"), "all": ("all", "all"),
    "selective": ("outside", "outside"), "loraedit": ("all", "outside"),
}


@pytest.mark.parametrize("preset", list(PRESET_TABLE))
def test_presets_match_the_table(preset):
    edit = np.random.default_rng(0).random((5, 16, 24)) > 0.5
    keep = preset_keep_mask(preset, edit)
    assert keep.shape == (1, 5, 16, 24) and keep.dtype == torch.float32
    outside = torch.from_numpy(~edit).float()
    want = {"all": torch.ones(16, 24), "none": torch.zeros(16, 24)}
    first, later = PRESET_TABLE[preset]
    assert torch.equal(keep[0, 0], want.get(first, outside[0]))
    for t in range(1, 5):
        assert torch.equal(keep[0, t], want.get(later, outside[t]))


def test_reference_preset_and_errors():
    edit = np.zeros((1, 8, 8), bool)
    edit[0, 2:4, 2:4] = True
    assert torch.equal(preset_keep_mask("reference", edit)[0, 0], torch.from_numpy(~edit[0]).float())
    with pytest.raises(ValueError, match="single-frame"):
        preset_keep_mask("reference", np.zeros((5, 8, 8), bool))
    with pytest.raises(ValueError, match="i2v, none, all, selective, loraedit, reference"):
        preset_keep_mask("inpaint", edit)
    assert set(PRESETS) == set(PRESET_TABLE) | {"reference"}


@pytest.fixture(scope="module")
def wan_pipe():
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline

    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    return WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae, image_encoder=None,
                                   image_processor=None, transformer=None, scheduler=FlowMatchEulerDiscreteScheduler())


@pytest.mark.parametrize("T,H,W", [(1, 16, 16), (5, 32, 48), (9, 16, 32), (17, 32, 16)])
def test_pack_wan_equals_diffusers_prepare_latents(wan_pipe, T, H, W):
    image = torch.zeros(1, 3, H, W)
    with torch.no_grad():
        _, cond = wan_pipe.prepare_latents(image, 1, 4, H, W, T, torch.float32, torch.device("cpu"))
    ours = pack_wan(preset_keep_mask("i2v", np.zeros((T, H, W), bool)))
    assert ours.shape == (4, (T - 1) // 4 + 1, H // 8, W // 8)
    assert torch.equal(ours, cond[0, :4])
    if T > 1:  # the first-last-frame branch keeps the last frame too
        with torch.no_grad():
            _, cond = wan_pipe.prepare_latents(image, 1, 4, H, W, T, torch.float32, torch.device("cpu"),
                                               last_image=image)
        keep = torch.zeros(1, T, H, W)
        keep[:, [0, T - 1]] = 1
        assert torch.equal(pack_wan(keep), cond[0, :4])


def block_min(m: np.ndarray) -> np.ndarray:
    T, H, W = m.shape
    return m.reshape(T, H // 8, 8, W // 8, 8).min(axis=(2, 4))


def test_pack_wan_layout_and_min_pool_randomized():
    rng = np.random.default_rng(1)
    for T in (1, 5, 13):
        m = (rng.random((T, 24, 40)) > 0.02).astype(np.float32)  # sparse generate pixels
        packed = pack_wan(torch.from_numpy(m)[None]).numpy()
        cells = block_min(m)
        for t in range(packed.shape[1]):
            for c in range(4):
                assert np.array_equal(packed[c, t], cells[max(0, 4 * t + c - 3)])
        for t in range(T):  # a kept cell never contains a generate pixel
            lat = packed[(t + 3) % 4, (t + 3) // 4]
            blocks = m[t].reshape(3, 8, 5, 8)
            assert np.all(blocks.min(axis=(1, 3))[lat == 1] == 1)
            assert np.all(blocks.min(axis=(1, 3))[lat == 0] == 0)


def test_pack_nearest_samples_top_left_pixel_of_each_cell():
    m = torch.zeros(1, 5, 16, 16)
    m[..., ::8, ::8] = 1  # only the top-left pixel of every cell is kept
    assert torch.equal(pack_wan(m, mode="nearest"), torch.ones(4, 2, 2, 2))
    assert torch.equal(pack_wan(m), torch.zeros(4, 2, 2, 2))
    assert torch.equal(pack_hunyuan(m, mode="nearest"), torch.ones(1, 2, 2, 2))


def test_pack_hunyuan_rule():
    rng = np.random.default_rng(2)
    m = (rng.random((9, 16, 24)) > 0.01).astype(np.float32)
    m[4] = 1
    m[4, 3, 3] = 0  # one generate pixel in frame 4 -> latent frame 1, cell (0, 0)
    packed = pack_hunyuan(torch.from_numpy(m)[None]).numpy()
    cells = block_min(m)
    assert packed.shape == (1, 3, 2, 3)
    assert np.array_equal(packed[0, 0], cells[0])
    for t in (1, 2):
        assert np.array_equal(packed[0, t], cells[4 * t - 3:4 * t + 1].min(axis=0))
    assert packed[0, 1, 0, 0] == 0
    i2v = pack_hunyuan(preset_keep_mask("i2v", np.zeros((9, 16, 24), bool)))
    assert i2v[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]  # diffusers' latent_concat mask: first frame only


@pytest.mark.parametrize("pack", [pack_wan, pack_hunyuan])
def test_pack_rejects_bad_frame_counts_and_sizes(pack):
    with pytest.raises(ValueError, match="4k\\+1"):
        pack(torch.ones(1, 6, 16, 16))
    with pytest.raises(ValueError, match="multiple"):
        pack(torch.ones(1, 5, 20, 16))
    with pytest.raises(ValueError, match="\\[1, T, H, W\\]"):
        pack(torch.ones(5, 16, 16))
    with pytest.raises(ValueError, match="mode"):
        pack(torch.ones(1, 5, 16, 16), mode="max")


def test_bad_mask_inputs_raise_media_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "zero.mp4").touch()
    for bad in [tmp_path / "empty", tmp_path / "zero.mp4", tmp_path / "missing.png"]:
        with pytest.raises(MediaError, match=bad.name):
            read_mask(bad, np.zeros(3), fps=16)

"""datasets/media.py: decoding with real timestamps, resampling, fitting, writing, errors."""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

import media
from config.errors import UserError
from media import MediaError
from models.registry import default_size

W, H = 64, 48


def bars(i: int, w: int = W, h: int = H) -> np.ndarray:
    """Frame whose 8 vertical bars spell the frame index in binary (survives lossy coding)."""
    img = np.zeros((h, w, 3), np.uint8)
    for b in range(8):
        if (i >> b) & 1:
            img[:, b * w // 8:(b + 1) * w // 8] = 255
    return img


def read_bars(img: np.ndarray) -> int:
    w = img.shape[1]
    return sum(1 << b for b in range(8) if img[:, b * w // 8 + 2:(b + 1) * w // 8 - 2].mean() > 128)


def make_video(path: Path, n: int, fps: float = 25, codec: str = "libx264", pts: list[int] | None = None,
               time_base: Fraction | None = None, frame=bars, fmt: str | None = None, **opts: int) -> Path:
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        first = frame(0)
        s.height, s.width = first.shape[:2]
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "12"} if codec == "libx264" else {}
        if time_base is not None:
            s.codec_context.time_base = time_base
        for k, v in opts.items():
            setattr(s.codec_context, k, v)
        for i in range(n):
            f = av.VideoFrame.from_ndarray(frame(i), format="rgb24")
            if pts is not None:
                f.pts, f.time_base = pts[i], time_base
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    return path


def has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:
        return False


@pytest.mark.parametrize("fps", [24, 25, 30])
def test_decode_counts_timestamps_sizes(tmp_path, fps):
    clip = media.read_video(make_video(tmp_path / "a.mp4", 12, fps))
    assert clip.frames.shape == (12, H, W, 3) and clip.frames.dtype == np.uint8
    np.testing.assert_allclose(clip.timestamps, np.arange(12) / fps, atol=1e-6)
    assert clip.fps == pytest.approx(fps) and clip.end_time == pytest.approx(12 / fps)
    assert [read_bars(f) for f in clip.frames] == list(range(12))


@pytest.mark.parametrize("ext,codec", [("mkv", "libx264"), ("webm", "libvpx-vp9"), ("avi", "mpeg4"),
                                       ("mov", "libx265")])
def test_other_containers_and_codecs(tmp_path, ext, codec):
    if not has_encoder(codec):
        pytest.skip(f"this PyAV build has no {codec} encoder")
    clip = media.read_video(make_video(tmp_path / f"a.{ext}", 10, 24, codec))
    np.testing.assert_allclose(clip.timestamps, np.arange(10) / 24, atol=1e-3)  # Matroska rounds to 1 ms
    assert [read_bars(f) for f in clip.frames] == list(range(10))
    # Resampling at the source rate must give every frame despite the rounding
    assert list(media.resample_times(clip.timestamps, 24, 0, 10, clip.end_time)) == list(range(10))


def test_variable_frame_rate_uses_real_pts(tmp_path):
    ms = [0, 40, 50, 120, 200, 210]
    clip = media.read_video(make_video(tmp_path / "v.mp4", 6, 25, pts=ms, time_base=Fraction(1, 1000)))
    np.testing.assert_allclose(clip.timestamps, np.array(ms) / 1000, atol=1e-6)
    # 25 fps targets 0, 40, 80, 120, 160, 200 ms: the frame on screen at each
    idx = media.resample_times(clip.timestamps, 25, 0, 6, clip.end_time)
    assert list(idx) == [0, 1, 2, 3, 3, 4]
    at = media.read_video_at(tmp_path / "v.mp4", media.target_times(25, 0, 6))
    assert [read_bars(f) for f in at.frames] == [0, 1, 2, 3, 3, 4]


def test_stream_without_pts_counts_frame_durations(tmp_path):
    path = make_video(tmp_path / "raw.h264", 10, 30, fmt="h264")
    with av.open(str(path)) as c:
        assert next(c.decode(video=0)).pts is None  # the case under test
    clip = media.read_video(path, start=0.1)
    assert clip.fps == pytest.approx(30)
    np.testing.assert_allclose(clip.timestamps, np.arange(3, 10) / 30, atol=1e-6)
    assert [read_bars(f) for f in clip.frames] == list(range(3, 10))


def test_window_seeks_and_converts_only_needed_frames(tmp_path, monkeypatch):
    path = make_video(tmp_path / "long.mp4", 90, 30, gop_size=10)
    real, runs = media._frames, []

    def spy(p, start, seek):  # record how each decode ran: seeking, and how many frames it yielded
        runs.append([seek, 0])
        for item in real(p, start, seek):
            runs[-1][1] += 1
            yield item

    monkeypatch.setattr(media, "_frames", spy)
    clip = media.read_video(path, start=2.0, duration=0.5)
    assert runs == [[True, 16]]  # one seeking pass, frames 60..75 (75 closes the window)
    assert [read_bars(f) for f in clip.frames] == list(range(60, 75))
    np.testing.assert_allclose(clip.timestamps, np.arange(60, 75) / 30, atol=1e-6)
    assert clip.end_time == pytest.approx(2.5)
    # a start between two frames includes the frame on screen at that moment
    assert read_bars(media.read_video(path, start=1.01, duration=0.1).frames[0]) == 30
    times = media.target_times(16, 1.3, 20)
    at = media.read_video_at(path, times)
    full = media.read_video(path)
    idx = media.resample_times(full.timestamps, 16, 1.3, 20, full.end_time)
    assert np.array_equal(at.frames, full.frames[idx])
    np.testing.assert_allclose(at.timestamps, full.timestamps[idx])
    with pytest.raises(MediaError, match="long.mp4"):
        media.read_video_at(path, media.target_times(16, 2.5, 20))  # runs past the end (3 s)


def test_display_rotation_is_applied(tmp_path):
    path = tmp_path / "rot.mp4"

    def corner(i):
        img = np.zeros((H, W, 3), np.uint8)
        img[:16, :16] = 255  # top-left block as stored
        return img

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.set_display_rotation(90)  # counter-clockwise, as a phone would store it
        for i in range(3):
            c.mux(s.encode(av.VideoFrame.from_ndarray(corner(i), format="rgb24")))
        c.mux(s.encode(None))
    clip = media.read_video(path)
    assert clip.frames.shape == (3, W, H, 3)
    assert clip.frames[0, -8, 8].mean() > 200 and clip.frames[0, 8, 8].mean() < 50  # top-left -> bottom-left
    assert (media.probe_video(path).width, media.probe_video(path).height) == (H, W)


def test_resample_30_to_16_picks_frame_on_screen(tmp_path):
    clip = media.read_video(make_video(tmp_path / "a.mp4", 40, 30))
    idx = media.resample_times(clip.timestamps, 16, 0, 21, clip.end_time)
    expected = [int(np.floor(i * 30 / 16 + 1e-9)) for i in range(21)]
    assert list(idx) == expected
    assert [read_bars(f) for f in clip.frames[idx]] == expected
    assert media.count_target_frames(clip.timestamps, 16, 0, clip.end_time) == 22  # 40/30 s * 16 = 21.3
    with pytest.raises(ValueError, match="22 of 23"):
        media.resample_times(clip.timestamps, 16, 0, 23, clip.end_time)
    idx = media.resample_times(clip.timestamps, 16, 0.5, 5, clip.end_time)
    assert list(idx) == [15, 16, 18, 20, 22]


def test_probe_and_still_image(tmp_path):
    info = media.probe_video(make_video(tmp_path / "a.mp4", 12, 24))
    assert (info.width, info.height, info.num_frames) == (W, H, 12)
    assert info.fps == pytest.approx(24) and info.duration == pytest.approx(0.5)
    Image.fromarray(bars(5)).save(tmp_path / "still.png")
    still = media.read_frames(tmp_path / "still.png")
    assert still.frames.shape == (1, H, W, 3) and still.end_time == float("inf")
    assert list(media.resample_times(still.timestamps, 16, 0, 3, still.end_time)) == [0, 0, 0]
    with pytest.raises(ValueError, match="still image"):
        media.count_target_frames(still.timestamps, 16, 0, still.end_time)


def test_4k1_helpers():
    assert media.is_4k1(1) and media.is_4k1(49) and media.is_4k1(81) and not media.is_4k1(48)
    assert media.DEFAULT_NUM_FRAMES == 49 and media.MAX_NUM_FRAMES == 81
    with pytest.warns(UserWarning, match="50"):
        assert media.round_down_4k1(50) == 49
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert media.round_down_4k1(49) == 49
    with pytest.raises(ValueError):
        media.round_down_4k1(0)


def test_image_sequence_natural_sort_and_window(tmp_path):
    for i in [10, 2, 1, 0, 11, 3]:
        Image.fromarray(bars(i)).save(tmp_path / f"frame{i}.png")
    (tmp_path / "notes.txt").write_text("x")
    names = [p.name for p in media.list_image_files(tmp_path)]
    assert names == ["frame0.png", "frame1.png", "frame2.png", "frame3.png", "frame10.png", "frame11.png"]
    clip = media.read_frames(tmp_path, fps=10)
    assert [read_bars(f) for f in clip.frames] == [0, 1, 2, 3, 10, 11]
    np.testing.assert_allclose(clip.timestamps, np.arange(6) / 10)
    win = media.read_image_sequence(tmp_path, 10, start=0.15, duration=0.2)
    assert [read_bars(f) for f in win.frames] == [1, 2, 3] and win.end_time == pytest.approx(0.4)


def test_read_image_modes(tmp_path):
    g16 = np.array([[0, 32896, 65535, 1000]], np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    assert list(media.read_image(tmp_path / "g16.png")[0, :, 0]) == [0, 128, 255, 4]
    rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 0], [200, 100, 50, 128]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert media.read_image(tmp_path / "a.png")[0].tolist() == [[200, 100, 50], [0, 0, 0], [100, 50, 25]]
    Image.fromarray(np.array([[7, 250]], np.uint8), "L").save(tmp_path / "l.png")
    assert media.read_image(tmp_path / "l.png").tolist() == [[[7, 7, 7], [250, 250, 250]]]
    Image.fromarray(rgba[..., :3]).convert("P").save(tmp_path / "p.png")
    assert media.read_image(tmp_path / "p.png").shape == (1, 3, 3)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "w.webp", lossless=True)
    assert media.read_image(tmp_path / "w.webp")[0, 1].tolist() == [0, 0, 0]
    for f in tmp_path.iterdir():
        assert media.read_image(f).dtype == np.uint8


def square(img_w: int, img_h: int, box: tuple[int, int, int, int], channels: int = 3) -> np.ndarray:
    x0, y0, x1, y1 = box
    img = np.zeros((img_h, img_w, channels), np.uint8)
    img[y0:y1, x0:x1] = 255
    return img


def bbox(m: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(m)
    return xs.min(), ys.min(), xs.max(), ys.max()


@pytest.mark.parametrize("mode", ["crop", "pad"])
@pytest.mark.parametrize("src", [(200, 90), (90, 200), (160, 160)])
def test_fit_size_aligns_video_mask_and_full_res_edit(mode, src):
    sw, sh = src
    box = (sw // 3, sh // 3, sw // 3 + 30, sh // 3 + 20)
    frames = square(sw, sh, box)[None]
    out, params = media.fit_size(frames, 96, 64, mode)
    assert out.shape == (1, 64, 96, 3)
    mask = square(sw, sh, box, 1)[None, ..., 0] > 0
    m = media.apply_fit(mask.view(np.uint8), params, cv2.INTER_NEAREST_EXACT).astype(bool)
    assert m.shape == (1, 64, 96)
    vb, mb = np.array(bbox(out[0, ..., 0] > 127)), np.array(bbox(m[0]))
    assert np.abs(vb - mb).max() <= 1  # same place, up to the rounding of an interpolated edge
    # a user's edit exported at twice the source resolution lands on the same pixels
    big = square(2 * sw, 2 * sh, tuple(2 * v for v in box))[None]
    eb = np.array(bbox(media.apply_fit(big, params)[0, ..., 0] > 127))
    assert np.abs(vb - eb).max() <= 1
    if mode == "pad" and sw != sh:
        assert out[0, 0, 0].tolist() == [0, 0, 0] and out[0, -1, -1].tolist() == [0, 0, 0]
        assert not m[0, 0, 0] and not m[0, -1, -1]
    with pytest.raises(ValueError, match="aspect"):
        media.apply_fit(np.zeros((1, sh, sw * 2, 3), np.uint8), params)


def test_fit_size_downscale_filters_instead_of_skipping_pixels():
    checker = np.indices((64, 128)).sum(axis=0) % 2 * 255
    frames = np.repeat(checker.astype(np.uint8)[None, ..., None], 3, axis=3)
    out, _ = media.fit_size(frames, 64, 32)
    assert np.abs(out.astype(int) - 127).max() <= 1


def test_fit_size_rejects_sizes_not_multiple_of_16_and_default_size():
    with pytest.raises(ValueError, match="multiples of 16"):
        media.fit_size(np.zeros((1, 48, 64, 3), np.uint8), 100, 64)
    assert default_size(1920, 1080) == (832, 480)
    assert default_size(1080, 1920) == (480, 832)
    out, p = media.fit_size(np.zeros((2, 720, 1280, 3), np.uint8), 832, 480)
    assert out.shape == (2, 480, 832, 3) and p.resized == (853, 480) and p.offset == (10, 0)


def test_write_video_roundtrip(tmp_path):
    frames = np.stack([bars(i, 96, 64) for i in range(20)])
    path = tmp_path / "out" / "res.mp4"
    media.write_video(path, frames, 16)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        assert s.average_rate == 16
    clip = media.read_video(path)
    assert clip.frames.shape == (20, 64, 96, 3) and clip.fps == pytest.approx(16)
    assert [read_bars(f) for f in clip.frames] == list(range(20))
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart
    assert [p.name for p in path.parent.iterdir()] == ["res.mp4"]
    media.write_video(tmp_path / "odd.mp4", np.zeros((3, 33, 47, 3), np.uint8), 8)
    assert media.read_video(tmp_path / "odd.mp4").frames.shape == (3, 34, 48, 3)


def test_write_video_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "res.mp4"
    path.write_bytes(b"previous result")
    real, calls = av.VideoFrame.from_ndarray, []

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("encoder exploded")
        return real(*a, **k)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", failing)
    with pytest.raises(RuntimeError):
        media.write_video(path, np.zeros((6, 32, 32, 3), np.uint8), 16)
    assert [p.name for p in tmp_path.iterdir()] == ["res.mp4"] and path.read_bytes() == b"previous result"
    (tmp_path / "res.mp4").unlink()
    calls.clear()
    with pytest.raises(RuntimeError):
        media.write_video(path, np.zeros((6, 32, 32, 3), np.uint8), 16)
    assert list(tmp_path.iterdir()) == []


def test_write_png_sequence_replaces_whole_folder_atomically(tmp_path, monkeypatch):
    out = tmp_path / "frames"
    media.write_png_sequence(out, np.stack([bars(i) for i in range(5)]))
    media.write_png_sequence(out, np.stack([bars(i) for i in range(3)]))  # stale 00003/00004 must go
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert [read_bars(f) for f in media.read_image_sequence(out, 1).frames] == [0, 1, 2]
    monkeypatch.setattr(cv2, "imwrite", lambda *a: False)
    with pytest.raises(MediaError):
        media.write_png_sequence(out, np.stack([bars(9)] * 4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"] and len(list(out.iterdir())) == 3
    (out / "keep.txt").write_text("user data")
    with pytest.raises(MediaError, match="keep.txt"):
        media.write_png_sequence(out, np.stack([bars(1)]))


def test_bad_inputs_raise_media_error_naming_the_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 50)
    zero = tmp_path / "zero.mp4"  # a valid container with a video track and no frames
    with av.open(str(zero), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        c.start_encoding()
    (tmp_path / "nothing").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    Image.fromarray(bars(1)).save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    for bad in [tmp_path / "missing.mp4", empty, junk, zero]:
        with pytest.raises(MediaError, match=bad.name):
            media.read_video(bad)
        with pytest.raises(MediaError, match=bad.name):
            media.read_frames(bad)
    for bad in [tmp_path / "nothing", tmp_path / "text"]:
        with pytest.raises(MediaError, match=bad.name):
            media.read_frames(bad, fps=16)
    with pytest.raises(MediaError, match="broken.png"):
        media.read_image(tmp_path / "broken.png")
    with pytest.raises(MediaError, match="zero.mp4"):
        media.probe_video(zero)
    assert issubclass(MediaError, UserError)  # entry points print it on one line, exit code 2

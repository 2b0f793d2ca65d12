"""Benchmark: cost of preparing a job's media vs a plain PyAV decode of the same clip.

Makes a 4 s 1280x720 30 fps H.264 clip and a matching mask video in a temp folder, then times, in
one run with interleaved repeats (median):

  plain   PyAV decode of every frame to an RGB array (same decoder threading as ours)
  ours    read_video of the 49-frame window at 16 fps + resample_times + fit_size to 832x480
          + read_mask (mask video: decode, binarize, same resample and fit, nearest)
  ours@   the same with read_video_at (converts only the frames that are picked)

Usage: python benchmarks/prepare_media.py [--repeats 5] [--frames 49] [--fps 16]
Target: ours / plain < 2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import media  # noqa: E402
from masks.io import read_mask  # noqa: E402

SRC_W, SRC_H, SRC_FPS, SECONDS = 1280, 720, 30, 4


def _box(i: int) -> tuple[slice, slice]:
    x = 100 + 8 * i
    return slice(200, 400), slice(x, x + 240)


def make_clips(folder: Path) -> tuple[Path, Path]:
    """A textured moving scene (so the encoder has real work) and its white-box mask video."""
    yy, xx = np.mgrid[0:SRC_H, 0:SRC_W]
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 40, (SRC_H, SRC_W), dtype=np.uint8)
    paths = folder / "clip.mp4", folder / "mask.mp4"
    with av.open(str(paths[0]), "w") as vid, av.open(str(paths[1]), "w") as msk:
        streams = []
        for c in (vid, msk):
            s = c.add_stream("libx264", rate=SRC_FPS)
            s.width, s.height, s.pix_fmt = SRC_W, SRC_H, "yuv420p"
            s.options = {"preset": "veryfast", "crf": "20"}
            streams.append(s)
        for i in range(SRC_FPS * SECONDS):
            img = np.empty((SRC_H, SRC_W, 3), np.uint8)
            img[..., 0] = (xx // 4 + 3 * i) % 256
            img[..., 1] = (yy // 3 + noise) % 256
            img[..., 2] = np.roll(noise, 5 * i, axis=1) * 4
            m = np.zeros((SRC_H, SRC_W, 3), np.uint8)
            img[_box(i)] = (240, 200, 30)
            m[_box(i)] = 255
            vid.mux(streams[0].encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            msk.mux(streams[1].encode(av.VideoFrame.from_ndarray(m, format="rgb24")))
        vid.mux(streams[0].encode(None))
        msk.mux(streams[1].encode(None))
    return paths


def plain(video: Path, _mask: Path, _n: int, _fps: float) -> tuple:
    with av.open(str(video)) as c:
        c.streams.video[0].thread_type = "AUTO"
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    return (frames.shape,)


def ours(video: Path, mask: Path, n: int, fps: float) -> tuple:
    clip = media.read_video(video, 0.0, n / fps)
    idx = media.resample_times(clip.timestamps, fps, 0.0, n, clip.end_time)
    frames, fit = media.fit_size([clip.frames[i] for i in idx], 832, 480)  # views: no full-size copy
    edit = read_mask(mask, clip.timestamps[idx], clip.fps, fit)
    return frames.shape, edit.shape, edit.mean()


def ours_at(video: Path, mask: Path, n: int, fps: float) -> tuple:
    clip = media.read_video_at(video, media.target_times(fps, 0.0, n))
    frames, fit = media.fit_size(clip.frames, 832, 480)
    edit = read_mask(mask, clip.timestamps, clip.fps, fit)
    return frames.shape, edit.shape, edit.mean()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frames", type=int, default=49)
    ap.add_argument("--fps", type=float, default=16.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        video, mask = make_clips(Path(tmp))
        print(f"made {SECONDS} s of {SRC_W}x{SRC_H} @ {SRC_FPS} fps + mask video in {time.perf_counter() - t0:.1f} s")
        runs = {"plain": plain, "ours": ours, "ours@": ours_at}
        times: dict[str, list[float]] = {k: [] for k in runs}
        results = {}
        for name, fn in runs.items():  # warm-up: imports, codec init, page cache
            results[name] = fn(video, mask, args.frames, args.fps)
        for _ in range(args.repeats):  # interleaved so load changes hit all variants alike
            for name, fn in runs.items():
                t = time.perf_counter()
                fn(video, mask, args.frames, args.fps)
                times[name].append(time.perf_counter() - t)
    base = statistics.median(times["plain"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:6s} median {med * 1000:7.1f} ms  (min {min(ts) * 1000:7.1f})  ratio {med / base:4.2f}  "
              f"-> {results[name]}")
    ratio = statistics.median(times["ours"]) / base
    print(f"ours / plain = {ratio:.2f} (target < 2): {'OK' if ratio < 2 else 'SLOW'}")


if __name__ == "__main__":
    main()

"""The stages of prepare.py, in dependency order, over a job folder's manifest (see job_folder).

source     decode the window, resample to the job's fps, fit to its size -> source/%05d.png
edited     the edited first frame on the job's pixels -> edited_first.png
reference  edited later frames, matched to job frames -> reference/<job frame>.png
masks      user mask (resampled and fitted like the video), --auto-mask, or SAM2 -> masks/%05d.png
captions   text, file or Florence-2 -> captions.json
config     edit.toml: defaults, --set overrides, the job's [data] with job-relative paths
preview    datasets.preview of the finished job -> preview/

Each stage's key names exactly what it depends on; `JobFolder.stage` skips a stage whose key and
outputs are unchanged.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

import media
from config.errors import ConfigError, UserError
from config.loader import load_config, parse_override, render_toml
from config.progress import Progress, Steps, report
from config.schema import Config
from datasets.job import align_frame, load_job
from datasets.prepare.captions import resolve_captions
from datasets.prepare.folder import JobFolder, digest, swap_in, temp_sibling, write_atomic, write_png, write_png_folder
from datasets.prepare.request import PrepareRequest
from datasets.preview import write_preview
from masks.auto import ALGORITHM_VERSION, auto_mask, coverage_drop, difference_map, difference_mask
from masks.io import read_mask
from media import FitParams, MediaError
from models.registry import family

SOURCE, MASKS, EDITED, REFERENCE = "source", "masks", "edited_first.png", "reference"
CAPTIONS, CONFIG, PREVIEW = "captions.json", "edit.toml", "preview"
STAGES = ("source", "edited", "reference", "masks", "captions", "config", "preview")  # in the order they run
_TIME_NAME = re.compile(r"^t=(\d+(?:\.\d+)?)s?$")
_INDEX_NAME = re.compile(r"(\d+)$")
# The edited frame's kept region differs from frame 0's by more than this (mean, of full scale): another moment.
MOMENT_DIFFERENCE = 0.06
UPSAMPLE_WARN = 1.5  # the fit enlarges the source more than this: the model sees invented detail
CROP_WARN = 0.25  # the crop drops more than this share of the (resized) source picture


def fit_from(meta: dict) -> FitParams:
    """The source stage's fit, from its meta (later stages need it without decoding again)."""
    f = meta["fit"]
    size, src = tuple(meta["size"]), tuple(meta["source_size"])
    return FitParams(src, size, tuple(f["resized"]), tuple(f["offset"]), f["mode"])


def source_to_job(x: float, y: float, meta: dict) -> tuple[float, float]:
    """A source-pixel coordinate on the job's pixels (the source's resize, then crop or pad)."""
    (sw, sh), (rw, rh), (ox, oy) = meta["source_size"], meta["fit"]["resized"], meta["fit"]["offset"]
    sign = -1 if meta["fit"]["mode"] == "crop" else 1
    return x * rw / sw + sign * ox, y * rh / sh + sign * oy


class JobStages(JobFolder):
    """One prepare run's stages; `prepare_job` calls them in order."""

    def __init__(self, req: PrepareRequest, progress: Progress | None = None) -> None:
        super().__init__(req.out, req.force, (SOURCE, MASKS, EDITED, REFERENCE, CAPTIONS, CONFIG, PREVIEW))
        self.req = req
        self.progress = progress if req.progress else None
        self._frames: np.ndarray | None = None
        self._edited: np.ndarray | None = None

    # ------------------------------------------------------------------------------ media access

    def frames(self) -> np.ndarray:
        if self._frames is None:
            with self.timed("decode"):
                self._frames = np.stack([media.read_image(f) for f in media.list_image_files(self.out / SOURCE)])
        return self._frames

    def edited(self) -> np.ndarray:
        if self._edited is None:
            self._edited = media.read_image(self.out / EDITED)
        return self._edited

    def _too_short(self, duration: float) -> MediaError:
        r = self.req
        have = max(0, int(np.ceil((duration - r.start) * r.fps - 1e-6)))
        hint = "an earlier --start"
        if have:
            hint = f"--frames {media.round_down_4k1(have, warn=False)} or {hint}"
        return MediaError(
            f"{r.video}: too short for the window: {r.frames} frames at {r.fps:g} fps from {r.start:g} s need "
            f"{r.frames / r.fps:.2f} s, the clip has {max(duration - r.start, 0):.2f} s from there; use {hint}")

    def decode(self) -> tuple[np.ndarray, dict]:
        """The source window: resampled to the job's fps and fitted to its size, with the mapping."""
        r, path = self.req, self.req.video
        times = media.target_times(r.fps, r.start, r.frames)
        bar = Steps(self.progress, f"decoding {path.name}", r.frames, "frame")
        with self.timed("decode"), bar:
            if path.is_dir():
                src_fps = r.source_fps or r.fps
                files = media.list_image_files(path)
                ts = np.arange(len(files)) / src_fps
                try:
                    idx = media.pick_frames(ts, times, end=len(files) / src_fps)
                except ValueError:
                    raise self._too_short(len(files) / src_fps) from None
                read: dict[int, np.ndarray] = {}
                for i in idx:
                    if int(i) not in read:
                        read[int(i)] = media.read_image(files[i])
                        if read[int(i)].shape != read[int(idx[0])].shape:
                            raise MediaError(f"{files[i]}: its size differs from {files[idx[0]]}'s")
                    bar.update(1)
                picked, src_times = [read[int(i)] for i in idx], ts[idx]
            elif path.suffix.lower() in media.IMAGE_EXTS:
                raise MediaError(f"{path}: one image is not a clip; pass a video file or a folder of frames")
            else:
                try:  # one call: decodes only up to the window's end, converts only the frames it picks
                    clip = media.read_video_at(path, times)
                except MediaError as e:
                    if "before the requested time" not in str(e):
                        raise
                    raise self._too_short(media.probe_video(path).duration) from None
                bar.update(r.frames)  # read_video_at reports no progress of its own
                picked, src_times, src_fps = list(clip.frames), clip.timestamps, clip.fps
            h, w = picked[0].shape[:2]
            size = r.size or family(r.family).size_for(w, h)
            fitted, fit = media.fit_size(picked, size[0], size[1], r.resize_mode)
        meta = {"source_size": [w, h], "size": list(size), "source_fps": float(src_fps),
                "fit": {"resized": list(fit.resized), "offset": list(fit.offset), "mode": fit.mode},
                "source_times": [round(float(t), 6) for t in src_times]}
        return fitted, meta

    # ---------------------------------------------------------------------------------- stages

    def stage(self, name: str, key: str, outputs: tuple[str, ...], build) -> dict:  # noqa: ANN001 (as JobFolder's)
        """JobFolder.stage, reported: phase "prepare", one unit per stage, the stage's name as the message."""
        report(self.progress, "prepare", STAGES.index(name), len(STAGES), name, unit="stage")
        meta = super().stage(name, key, outputs, build)
        report(self.progress, "prepare", STAGES.index(name) + 1, len(STAGES), name, unit="stage")
        return meta

    def run_source(self) -> tuple[str, dict]:
        r = self.req
        key = digest("source", self.fp(r.video), r.source_fps if r.video.is_dir() else None, r.fps, r.frames,
                     r.start, r.size or r.family, r.resize_mode)

        def build() -> dict:
            frames, meta = self.decode()
            with self.timed("write"):
                media.write_png_sequence(self.out / SOURCE, frames)
            self._frames = frames
            return meta

        meta = self.stage("source", key, (SOURCE,), build)
        self.warn_source(meta)
        return key, meta

    def warn_source(self, meta: dict) -> None:
        """Frames that repeat, and a fit that enlarges a lot or crops a large share: each is a warning."""
        r, times = self.req, meta["source_times"]
        distinct = len(set(times))
        if distinct < len(times):
            why = (f"the source has {meta['source_fps']:.4g} fps, the job {r.fps:g} fps"
                   if meta["source_fps"] < r.fps - 1e-6 else "the source has few frames there")
            warnings.warn(f"{r.video}: the job's {len(times)} frames show only {distinct} different source frames "
                          f"({why}): repeated frames teach the model a stutter; use --fps {meta['source_fps']:.4g} or "
                          f"fewer --frames", stacklevel=2)
        (sw, sh), (rw, rh), (w, h) = meta["source_size"], meta["fit"]["resized"], meta["size"]
        if rw / sw > UPSAMPLE_WARN:
            warnings.warn(f"{r.video}: fitting {sw}x{sh} to {w}x{h} enlarges it {rw / sw:.1f}x: the model sees blurred "
                          f"detail; a smaller --size keeps the clip sharper", stacklevel=2)
        if meta["fit"]["mode"] == "crop" and 1 - w * h / (rw * rh) > CROP_WARN:
            warnings.warn(f"{r.video}: fitting {sw}x{sh} to {w}x{h} crops {1 - w * h / (rw * rh):.0%} of the picture "
                          f"away; a --size with the source's shape or --resize-mode pad keeps it", stacklevel=2)

    def run_edited(self, src_key: str, fit: FitParams) -> str:
        fp = self.fp(self.req.edited_frame)

        def build() -> dict:
            img = align_frame(self.req.edited_frame, fit)
            with self.timed("write"):
                write_png(self.out / EDITED, img)
            self._edited = img
            first = self.frames()[0]
            diff = float(difference_map(first, img).max())
            return {"identical": bool(np.array_equal(img, first)), "difference": diff}

        meta = self.stage("edited", digest("edited", src_key, fp), (EDITED,), build)
        if meta["difference"] <= self.req.auto.threshold:
            how = "is identical to" if meta["identical"] else f"differs by at most {meta['difference']:.3f} from"
            warnings.warn(f"{self.req.edited_frame}: the edited frame {how} the source's first frame: nothing seems "
                          f"edited", stacklevel=2)
        return fp

    def reference_index(self, f: Path, src: dict) -> int:
        """Job frame of an edited later frame named by source frame number (120.png) or time (t=7.5s.png)."""
        r, m = self.req, _TIME_NAME.match(f.stem)
        if m:
            t, what = float(m.group(1)), f"time {float(m.group(1)):g} s"
        else:
            m = _INDEX_NAME.search(f.stem)
            if not m:
                raise MediaError(f"{f}: name a reference frame by its source frame number (120.png, frame_0120.png) "
                                 f"or its time in the source (t=7.5s.png)")
            t, what = int(m.group(1)) / src["source_fps"], f"source frame {int(m.group(1))}"
        times, end = np.asarray(src["source_times"]), r.start + r.frames / r.fps
        if not times[0] - 1e-3 <= t < end:
            raise MediaError(f"{f}: {what} ({t:.3f} s) is outside the job's window {r.start:g}-{end:g} s")
        j = int(np.argmin(np.abs(times - t)))
        if j == 0:
            raise MediaError(f"{f}: {what} is the job's first frame; pass its edit as --edited-frame")
        if abs(times[j] - t) > 0.5 / src["source_fps"] + 1e-6:
            warnings.warn(f"{f}: {what} is not one of the job's frames; used for job frame {j}, which shows "
                          f"the source at {times[j]:.3f} s ({times[j] - t:+.3f} s)", stacklevel=2)
        return j

    def run_reference(self, src_key: str, src: dict, fit: FitParams) -> str:
        files = media.list_image_files(self.req.reference_frames) if self.req.reference_frames else []
        key = digest("reference", src_key, [(f.name, self.file_fp(f)) for f in files])

        def build() -> dict:
            images: dict[str, np.ndarray] = {}
            names: dict[str, str] = {}
            for f in files:
                j = self.reference_index(f, src)
                if f"{j}.png" in images:
                    raise MediaError(f"{f}: a second reference frame for job frame {j} (also {names[str(j)]})")
                images[f"{j}.png"], names[str(j)] = align_frame(f, fit, "reference frame"), f.name
            with self.timed("write"):
                if images:
                    write_png_folder(self.out / REFERENCE, images)
                elif (self.out / REFERENCE).exists():  # reference frames dropped since the last run
                    shutil.rmtree(self.out / REFERENCE)
            return {"frames": names}

        self.stage("reference", key, (REFERENCE,), build)
        return key

    def run_masks(self, src_key: str, src: dict, fit: FitParams, edited_fp: str) -> str:
        r = self.req
        kind = "user" if r.mask else ("sam2" if r.sam2 else "auto")
        auto = (edited_fp, asdict(r.auto), ALGORITHM_VERSION) if r.auto_mask else None
        key = digest("masks", src_key, kind, self.fp(r.mask), r.mask_threshold if r.mask else None,
                     self.model_fp(r.sam2), r.sam2_points, r.sam2_box, auto)

        def build() -> dict:
            if kind == "user":
                with self.timed("decode"):
                    mask = read_mask(r.mask, np.asarray(src["source_times"]), fps=src["source_fps"], fit=fit,
                                     threshold=r.mask_threshold)
            elif kind == "auto":
                with self.timed("decode"):
                    dense, picks = self.source_rate_frames(src, fit)
                with self.timed("flow"):
                    run = auto_mask(dense, self.edited(), r.auto, progress=self.progress, picks=picks)
                mask = run.masks
                # Job frames at or after each guarded source frame: the first is where to look in the preview.
                guarded = sorted({int(np.searchsorted(picks, g + picks[0])) for g in run.guarded})
                tracking = {"source_frames": picks[-1] - picks[0] + 1, "guarded_job_frames": guarded,
                            "coverage_drop": coverage_drop(mask)}
            else:
                mask = self.sam2_mask(src)
            with self.timed("write"):
                white = np.repeat(mask[..., None], 3, axis=-1).astype(np.uint8) * 255
                media.write_png_sequence(self.out / MASKS, white)
            return {"kind": kind, "coverage": [round(float(c), 4) for c in mask.reshape(len(mask), -1).mean(1)],
                    **({"tracking": tracking} if kind == "auto" else {})}

        meta = self.stage("masks", key, (MASKS,), build)
        self.warn_masks(meta)
        if {"edited", "masks"} & set(self.ran):  # checked when either changed (a no-op run has warned before)
            self.warn_moment(self.moment_check(media.read_image(self.out / MASKS / "00000.png")[..., 0] > 127))
        return key

    def source_rate_frames(self, src: dict, fit: FitParams) -> tuple[np.ndarray, list[int]]:
        """Every source frame the job's window spans, fitted to the job's size, and each job frame's index among
        them: --auto-mask tracks through all of them (between frames resampled to a low job rate the object
        moves too far to follow)."""
        times, path = np.asarray(src["source_times"]), self.req.video
        if path.is_dir():
            files = media.list_image_files(path)
            first, last = (round(float(t) * src["source_fps"]) for t in (times[0], times[-1]))
            stamps = np.arange(first, last + 1) / src["source_fps"]
            dense = np.stack([media.apply_fit([media.read_image(files[i])], fit)[0] for i in range(first, last + 1)])
        else:
            clip = media.read_video_span(path, float(times[0]), float(times[-1]),
                                         lambda f: media.apply_fit([f], fit)[0])
            dense, stamps = clip.frames, clip.timestamps
        picks = [int(np.argmin(np.abs(stamps - t))) for t in times]
        if np.abs(stamps[picks] - times).max() > 0.5 / src["source_fps"] or not np.array_equal(dense[picks[0]],
                                                                                               self.frames()[0]):
            return self.frames(), list(range(len(times)))  # the decoders disagree: track the job's frames
        return dense, picks

    def moment_check(self, edit0: np.ndarray) -> dict:
        """How far the edited frame is from the job's frames outside frame 0's edit region (mean absolute
        difference, 0-1) and which job frame it is closest to there: a frame exported from another moment
        shows up as a kept region that differs, and usually matches a later frame better."""
        near = cv2.dilate(edit0.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0  # edges blur into the edit
        kept = ~near
        if kept.sum() < 0.05 * kept.size:
            return {}
        edited = self.edited().astype(np.float32)
        step = max(1, len(self.frames()) // 16)  # enough to find the moment; cheap on long jobs
        diffs = {int(j): float(np.abs(self.frames()[j].astype(np.float32) - edited)[kept].mean() / 255)
                 for j in range(0, len(self.frames()), step)}
        best = min(diffs, key=diffs.get)
        return {"kept_difference": round(diffs[0], 4), "closest_frame": best,
                "closest_difference": round(diffs[best], 4)}

    def warn_masks(self, meta: dict) -> None:
        tracking = meta.get("tracking")
        if tracking and tracking["coverage_drop"]:
            lost, cov = tracking["coverage_drop"], meta["coverage"]
            low = min(lost, key=lambda j: cov[j])
            warnings.warn(f"--auto-mask: the tracked region shrinks to under half its frame-0 area in {len(lost)} "
                          f"job frame(s) from frame {lost[0]} (coverage {cov[0]:.1%} at frame 0, {cov[low]:.1%} at "
                          f"frame {low}): the object may be lost there and the original would show in the kept region; "
                          f"check preview/, or pass --mask", stacklevel=2)
        if tracking and tracking["guarded_job_frames"]:
            g = tracking["guarded_job_frames"]
            near = ", ".join(map(str, g[:5])) + (" ..." if len(g) > 5 else "")
            warnings.warn(f"--auto-mask: the tracked region shrank sharply between source frames near job frame(s) "
                          f"{near}; the previous region, moved with the object, was kept there: check preview/",
                          stacklevel=2)

    def warn_moment(self, meta: dict) -> None:
        if "kept_difference" in meta and meta["kept_difference"] > MOMENT_DIFFERENCE:
            other = meta["closest_frame"]
            hint = (f"; it matches job frame {other} better ({meta['closest_difference']:.3f})" if other
                    and meta["closest_difference"] < 0.7 * meta["kept_difference"] else "")
            warnings.warn(f"{self.req.edited_frame}: outside the edit region it differs from the job's frame 0 by "
                          f"{meta['kept_difference']:.3f} of full scale on average{hint}: it looks like another moment "
                          f"of the clip (check --start) or a changed whole picture (exposure, crop, filter)",
                          stacklevel=2)

    def sam2_mask(self, src: dict) -> np.ndarray:
        from masks.sam2 import Sam2Prompt, track

        r = self.req
        if r.auto_mask:
            prompt = Sam2Prompt(mask=difference_mask(self.frames()[0], self.edited(), r.auto))
        else:
            w, h = src["size"]
            for x, y in [p[:2] for p in r.sam2_points] + ([r.sam2_box[:2], r.sam2_box[2:]] if r.sam2_box else []):
                jx, jy = source_to_job(x, y, src)
                if not (0 <= jx <= w and 0 <= jy <= h):
                    raise UserError(f"SAM2 prompt ({x:g}, {y:g}) in source pixels is outside the part of the "
                                    f"{src['source_size'][0]}x{src['source_size'][1]} source the job keeps")
            points = [(*source_to_job(x, y, src), v) for x, y, v in r.sam2_points]
            box = None
            if r.sam2_box:
                box = (*source_to_job(*r.sam2_box[:2], src), *source_to_job(*r.sam2_box[2:], src))
            prompt = Sam2Prompt(points=points, box=box)
        with self.timed("sam2"):
            return track(self.frames(), prompt, r.sam2, progress=self.progress)

    def run_captions(self, src_key: str, edited_fp: str) -> dict:
        r = self.req
        model = r.caption_model if r.caption_model and not (r.caption and r.edited_caption) else None
        key = digest("captions", r.caption, r.edited_caption, self.fp(r.caption_file), self.model_fp(model),
                     (r.caption_task, r.caption_max_tokens) if model else None, (src_key, edited_fp) if model else None)

        def build() -> dict:
            with self.timed("captions"):
                caps = resolve_captions(r.caption, r.edited_caption, r.caption_file, model,
                                        self.frames()[0] if model else None, self.edited() if model else None,
                                        r.caption_task, r.caption_max_tokens)
            with self.timed("write"):
                write_atomic(self.out / CAPTIONS, json.dumps(asdict(caps), indent=1).encode())
            return asdict(caps)

        return self.stage("captions", key, (CAPTIONS,), build)

    def config_text(self, src: dict, captions: dict, has_reference: bool) -> str:
        """edit.toml: defaults, the user's --set overrides, then the job's own [data] (paths job-relative)."""
        r, cfg = self.req, Config()
        if r.overrides:
            resolved = load_config(None, r.overrides)  # validates the overrides, paths made absolute
            for text in r.overrides:
                keys = parse_override(text)[0]
                node, given = cfg, resolved
                for k in keys[:-1]:
                    node, given = getattr(node, k), getattr(given, k)
                setattr(node, keys[-1], getattr(given, keys[-1]))
        if not any(parse_override(t)[0] == ["name"] for t in r.overrides):
            cfg.name = self.out.name
        cfg.model.type = r.family
        d = cfg.data
        d.video, d.mask, d.edited_frame = SOURCE, MASKS, EDITED
        d.reference_frames = REFERENCE if has_reference else ""
        d.caption, d.edited_caption, d.trigger = captions["caption"], captions["edited_caption"], r.trigger
        d.fps, d.frames, d.start, d.window = float(r.fps), r.frames, 0.0, r.window
        d.width, d.height = src["size"]
        d.mask_threshold, d.mask_dilate, d.mask_bbox = 0.5, r.mask_dilate, r.mask_bbox
        if r.model:
            cfg.model.ckpt_path = str(r.model.resolve())
        return CONFIG_HEADER + render_toml(cfg)

    def run_config(self, text: str) -> None:
        def build() -> dict:
            tmp = temp_sibling(self.out / CONFIG)
            try:
                tmp.write_text(text, encoding="utf-8")
                try:
                    load_config(tmp)  # the job must load as train.py will load it (paths, 4k+1, sizes)
                except ConfigError as e:
                    raise ConfigError(str(e).replace(str(tmp), str(self.out / CONFIG))) from None
                with self.timed("write"):
                    write_atomic(self.out / CONFIG, text.encode())
            finally:
                tmp.unlink(missing_ok=True)
            return {}

        self.stage("config", digest("config", text), (CONFIG,), build)

    def run_preview(self, enabled: bool) -> None:
        # Keyed by the outputs themselves, so hand-fixed masks (or a hand-edited edit.toml) show up.
        key = digest("preview", [self.out_hash(o) for o in (CONFIG, SOURCE, MASKS, EDITED, REFERENCE)])
        rec = self.manifest["stages"].get("preview")
        if not enabled:  # --no-preview: an out-of-date preview of ours is removed rather than left misleading
            if rec and rec["key"] != key and self.out_hash(PREVIEW) == rec["outputs"].get(PREVIEW):
                shutil.rmtree(self.out / PREVIEW, ignore_errors=True)
                del self.manifest["stages"]["preview"]
                self.save()
            return

        def build() -> dict:
            with self.timed("preview"):
                cfg = load_config(self.out / CONFIG)
                tmp = temp_sibling(self.out / PREVIEW)
                try:
                    summary = write_preview(cfg, load_job(cfg, edited=True), tmp)
                    swap_in(tmp, self.out / PREVIEW)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
            return {"coverage": summary["mask_coverage_per_frame"], "samples": summary["samples_per_mode"]}

        self.stage("preview", key, (PREVIEW,), build)


CONFIG_HEADER = """\
# LoRA-Edit job written by prepare.py. Paths are relative to this file. The media in this folder were
# made for the [data] values fps, frames, start, width and height below: to change those, run
# prepare.py again. Everything else (training, inference, model) can be edited here or set with --set.
#   python train.py --config edit.toml        python infer.py --config edit.toml

"""

"""Steps 1-3 of the page: the clip, where it may change, the edit; then "Make the job" (prepare.py).

Every handler checks its input completely before it writes anything, and writes with temp names
and renames, so a refused upload leaves the workspace exactly as it was.
"""

from __future__ import annotations

import filecmp
import re
import tempfile
from pathlib import Path

import cv2
import numpy as np

from config.atomic import atomic_path
from webui import media
from webui.backend import JobInputs, prepare_command
from webui.session import FRAME_CHOICES, MAX_LONG_FRAMES, Session, clip_defaults, copy_in, family_of, parse_size
from webui.workspace import PageError

REFERENCE_NAME = re.compile(r"^(\d+|t=\d+(\.\d+)?s?)$")


def _shown(path: str | Path | None) -> str:
    """The name a user knows an upload by (Gradio keeps the original file name in a temp folder)."""
    return Path(path).name if path else ""


# ------------------------------------------------------------------------------------------ 1. clip
def inspect_clip(s: Session, job: str | None, upload: str | None, pick: str | None) -> dict:
    """On upload or pick: check the video and fill in the model's defaults for it. Writes nothing."""
    job = s.require_job(job)
    source = _clip_source(s, upload, pick)
    facts = media.check_video(source, s.limits.max_video_bytes, _shown(upload) if upload else pick)
    d = clip_defaults(s.model_of(job), facts.width, facts.height)
    return {"clip_msg": f"{_shown(source)}: {facts.describe()}. Choose the window, then 'Use this clip'.",
            "frames": d["frames"], "length": 0, "fps": d["fps"], "size": d["size"]}


def _clip_source(s: Session, upload: str | None, pick: str | None) -> Path:
    if upload:
        return Path(upload)
    if pick:
        return s.ws.confine(pick, "clip")
    raise PageError("upload a clip, or pick one from the workspace's videos/ folder")


def long_clip(frames: int, length: float | None) -> tuple[int, int]:
    """(window, total frames) of the page's "Frames" and "Long clip" fields: window 0 for a one-window job."""
    if length is None or float(length) == 0:
        return 0, frames
    total = int(length)
    if total != length or total <= frames:
        raise PageError(f"long clip of {length:g} frames: a whole number above the window's {frames} frames "
                        f"(0 makes a one-window job)")
    if total > MAX_LONG_FRAMES:
        raise PageError(f"long clip of {total} frames: the page makes up to {MAX_LONG_FRAMES}; for more run "
                        f"prepare.py --window {frames} --frames {total}")
    return frames, total


def use_clip(s: Session, job: str | None, upload: str | None, pick: str | None, start: float, frames: int,
             fps: float, size: str, resize_mode: str, length: float | None = 0) -> dict:
    job = s.require_job(job)
    settings = s.ws.settings(job)
    if s.ws.is_job(job) and not settings.get("clip"):
        raise PageError(f"job {job} was made by prepare.py: its clip is fixed; make a new job for another clip")
    old = settings.get("clip")
    if upload or pick or not old:
        source = _clip_source(s, upload, pick)
        shown = _shown(upload) if upload else pick
    else:  # the clip already chosen, with a new window
        source, shown = Path(old["video"]), old["name"]
    facts = media.check_video(source, s.limits.max_video_bytes, shown)
    frames, fps, start = int(frames), float(fps or 0), float(start or 0)
    if frames not in FRAME_CHOICES:
        raise PageError(f"frames {frames}: must be 4k+1 between 5 and 81 (the VAE's rule)")
    if fps <= 0 or fps > 120:
        raise PageError(f"frame rate {fps:g}: must be above 0 and at most 120")
    w, h = parse_size(size)
    if resize_mode not in ("crop", "pad"):
        raise PageError(f"fit {resize_mode!r}: choose crop or pad")
    window, frames = long_clip(frames, length)
    media.check_window(facts, start, frames, fps, shown, long=bool(window))
    changed = old is None or not filecmp.cmp(source, old["video"], shallow=False)
    if changed and s.ws.is_job(job):
        raise PageError(f"job {job} is made from {old['name']}; make a new job for another clip")
    # Checked: from here on the page writes.
    if upload and changed:
        source = copy_in(Path(upload), s.ws.inputs_dir(job) / f"clip{Path(upload).suffix.lower()}")
    elif not changed:
        source, shown = Path(old["video"]), old["name"]
    clip = {"video": str(source), "name": shown, "start": start, "frames": frames, "window": window, "fps": fps,
            "size": [w, h], "resize_mode": resize_mode, "source_size": [facts.width, facts.height],
            "duration": facts.duration}
    changes: dict = {"clip": clip}
    if changed:  # another clip: a mask or an edited frame made for the old one no longer fits
        changes.update(mask=None, edit={k: v for k, v in (settings.get("edit") or {}).items()
                                         if k in ("caption", "edited_caption", "caption_model")})
    s.ws.save_settings(job, **changes)
    out = clip_view(s, job)
    windows = ""
    if window:
        from datasets.windows import chain_windows  # imports torch: only for a long clip

        windows = f" in {len(chain_windows(frames, window))} chained windows of {window}"
    out["clip_msg"] = (f"Clip {shown}: {facts.describe()}. The job takes {frames} frames at {fps:g} fps from "
                       f"{start:g} s ({frames / fps:.2f} s){windows}, fitted to {w}x{h} by {resize_mode}.")
    if changed or old["start"] != start:  # a new first frame to paint on (else the painting in progress stays)
        out["mask_editor"] = editor_value(s, job)
    return out


def editor_value(s: Session, job: str) -> dict | None:
    clip = s.ws.settings(job).get("clip")
    if not clip:
        return None
    return {"background": media.first_frame(Path(clip["video"]), clip["start"]), "layers": [], "composite": None}


def _draft(s: Session, job: str, mask: Path | None, dilate: int | None = None, bbox: bool | None = None) -> list[str]:
    st = s.ws.settings(job)
    c, m = st["clip"], st.get("mask") or {}
    return media.draft_overrides(Path(c["video"]), mask, c["start"], c["frames"], c["fps"], tuple(c["size"]),
                                 c["resize_mode"], m.get("dilate", 0) if dilate is None else dilate,
                                 m.get("bbox", False) if bbox is None else bbox, family_of(s.model_of(job)),
                                 c.get("window", 0))


def clip_view(s: Session, job: str) -> dict:
    """The window as the job will hold it (the mask over it when there is one): clip and mask tabs."""
    info = s.job_info(job)
    st = s.ws.settings(job)
    if info is not None:
        frames, mask, fps = media.load_view(info.dir / "edit.toml")
    elif st.get("clip"):
        mask_file = (st.get("mask") or {}).get("file")
        frames, mask, fps = media.load_view(None, _draft(s, job, Path(mask_file) if mask_file else None))
        if not mask_file:
            mask = np.zeros_like(mask)
    else:
        return {}
    view = media.write_view(frames, mask, fps, s.ws.view_dir(job), "mask")
    out = {"clip_video": str(view["video"]), "clip_sheet": str(view["sheet"])}
    if mask.any():
        out.update(mask_video=str(view["video"]), mask_sheet=str(view["sheet"]), mask_msg=media.describe_view(view))
    return out


# ------------------------------------------------------------------------------------------ 2. mask
def save_mask(s: Session, job: str | None, mode: str, editor: dict | None, upload: str | None, sam2_dir: str | None,
              points: list | None, dilate: int, bbox: bool) -> dict:
    job = s.require_job(job)
    st = s.ws.settings(job)
    clip = st.get("clip")
    if not clip:
        raise PageError("choose the clip first (step 1)")
    dilate, bbox = int(dilate or 0), bool(bbox)
    entry: dict = {"mode": mode, "dilate": dilate, "bbox": bbox, "file": None}
    if mode in ("paint", "upload"):
        with tempfile.TemporaryDirectory() as tmp:  # checked outside the workspace, then moved in
            staged = _stage_mask(mode, editor, upload, tuple(clip["source_size"]), s, Path(tmp))
            frames, mask, fps = media.load_view(None, _draft(s, job, staged, dilate, bbox))
            if not mask.any():
                raise PageError(f"the mask covers nothing of the job's {clip['size'][0]}x{clip['size'][1]} window "
                                f"({clip['resize_mode']} of the clip): paint inside the part the job keeps")
            entry["file"] = str(copy_in(staged, s.ws.inputs_dir(job) / f"mask{staged.suffix}"))
    elif mode == "sam2":
        if not sam2_dir:
            raise PageError("SAM2 needs its weights folder (a transformers SAM2 folder in the workspace or a "
                            "--model-dir)")
        if not points:
            raise PageError("click at least one point on the object in the first frame")
        entry.update(sam2=str(s.ws.confine_model(sam2_dir)), points=[list(p) for p in points])
    elif mode != "auto":
        raise PageError(f"unknown mask mode {mode!r}")
    s.ws.save_settings(job, mask=entry)
    if entry["file"]:
        view = media.write_view(frames, mask, fps, s.ws.view_dir(job), "mask")
        return {"mask_msg": media.describe_view(view) + " Saved.", "mask_video": str(view["video"]),
                "mask_sheet": str(view["sheet"]), "clip_video": str(view["video"])}
    how = "from the edited frame" if mode == "auto" else "by SAM2 from your points"
    return {"mask_msg": f"The mask will be made {how} when the job is made (step 3); it is shown here then."}


def _stage_mask(mode: str, editor: dict | None, upload: str | None, source_size: tuple[int, int], s: Session,
                tmp: Path) -> Path:
    if mode == "paint":
        mask = media.mask_from_editor(editor, source_size)
        path = tmp / "mask.png"
        media.write_mask_png(mask, path)
        return path
    if not upload:
        raise PageError("upload a mask image or video (white = may change)")
    up, name = Path(upload), _shown(upload)
    if up.suffix.lower() in media.IMAGE_EXTS:
        img = media.read_image(up, "mask", name)
        if (img.shape[1], img.shape[0]) != source_size:
            raise PageError(f"mask {name} is {img.shape[1]}x{img.shape[0]}: it must be the clip's size "
                            f"{source_size[0]}x{source_size[1]}")
        if not (img.max(axis=2) > 127).any():
            raise PageError(f"mask {name} is empty (all black): white marks where the video may change")
    else:
        media.check_video(up, s.limits.max_video_bytes, name)
    return copy_in(up, tmp / f"mask{up.suffix.lower()}")


def sam2_click(points: list | None, x: float, y: float, label: int) -> list:
    return [*(points or []), [round(float(x), 1), round(float(y), 1), int(label)]]


# ------------------------------------------------------------------------------------------ 3. the edit
def use_edited(s: Session, job: str | None, upload: str | None) -> dict:
    job = s.require_job(job)
    clip = s.ws.settings(job).get("clip")
    if not clip:
        raise PageError("choose the clip first (step 1)")
    if not upload:
        return {}
    name = _shown(upload)
    img = media.read_image(Path(upload), "edited frame", name)
    media.check_frame_size(img, tuple(clip["source_size"]), tuple(clip["size"]), "edited frame", name)
    dest = copy_in(Path(upload), s.ws.inputs_dir(job) / f"edited_first{Path(upload).suffix.lower()}")
    s.ws.save_settings(job, edit={**(s.ws.settings(job).get("edit") or {}), "edited": str(dest), "name": name})
    return {"edit_msg": f"Edited frame {name} ({img.shape[1]}x{img.shape[0]}) saved.",
            "edit_compare": str(compare_picture(s, job))}


def compare_picture(s: Session, job: str) -> Path:
    """Source first frame | edited frame | where they differ, at the source's resolution."""
    st = s.ws.settings(job)
    clip, edit = st["clip"], st.get("edit") or {}
    src = media.first_frame(Path(clip["video"]), clip["start"])
    ed = media.read_image(Path(edit["edited"]), "edited frame")
    if ed.shape != src.shape:
        ed = cv2.resize(ed, (src.shape[1], src.shape[0]), interpolation=cv2.INTER_AREA)
    diff = (np.abs(src.astype(np.int16) - ed.astype(np.int16)).max(axis=2) > 25).astype(np.uint8)
    diff = cv2.morphologyEx(diff, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)  # not codec noise at edges
    diff_img = np.where(diff[..., None], np.array([255, 0, 255], np.uint8), (src // 3).astype(np.uint8))
    gap = np.full((src.shape[0], 4, 3), 255, np.uint8)
    picture = np.concatenate([src, gap, ed, gap, diff_img], axis=1)
    scale = max(1, 256 // src.shape[1])  # tiny clips enlarged, pixels kept sharp
    path = s.ws.view_dir(job) / "compare.png"
    media.write_png(picture.repeat(scale, 0).repeat(scale, 1), path)
    return path


def use_references(s: Session, job: str | None, uploads: list[str] | None) -> dict:
    """Edited later frames, named by the source frame they edit (120.png) or its time (t=7.5s.png)."""
    job = s.require_job(job)
    clip = s.ws.settings(job).get("clip")
    if not clip:
        raise PageError("choose the clip first (step 1)")
    files = [Path(u) for u in uploads or []]
    for f in files:
        if not REFERENCE_NAME.match(f.stem):
            raise PageError(f"reference frame {f.name}: name it by the source frame it edits (120.png) or its time "
                            f"in the clip (t=7.5s.png)")
        img = media.read_image(f, "reference frame")
        media.check_frame_size(img, tuple(clip["source_size"]), tuple(clip["size"]), "reference frame", f.name)
    folder = s.ws.inputs_dir(job) / "reference"
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for f in files:
            copy_in(f, tmp / f.name.lower())
    edit = {**(s.ws.settings(job).get("edit") or {}), "reference": str(folder) if files else None}
    s.ws.save_settings(job, edit=edit)
    return {"edit_msg": f"{len(files)} edited later frame(s) saved: {', '.join(f.name for f in files) or 'none'}."}


def make_job(s: Session, job: str | None, caption: str, edited_caption: str, caption_model: str | None) -> dict:
    """Start prepare.py for the page's inputs (a background task; its outcome shows in the page)."""
    job = s.require_job(job)
    st = s.ws.settings(job)
    if s.ws.is_job(job) and not st.get("clip"):
        raise PageError(f"job {job} was made by prepare.py; run prepare.py again to change its inputs, "
                        f"or make a new job here")
    clip, mask, edit = st.get("clip"), st.get("mask"), st.get("edit") or {}
    if not clip:
        raise PageError("choose the clip first (step 1)")
    if not mask or (mask["mode"] in ("paint", "upload") and not mask.get("file")):
        raise PageError("save the mask first (step 2)")
    if not edit.get("edited"):
        raise PageError("upload the edited first frame first (step 3)")
    model = st.get("model") or ""
    if not model:
        raise PageError("choose the model folder (at the top of the page)")
    inp = JobInputs(
        video=Path(clip["video"]), edited_frame=Path(edit["edited"]), out=s.ws.job_dir(job),
        model=s.ws.confine_model(model), start=clip["start"], frames=clip["frames"], window=clip.get("window", 0),
        fps=clip["fps"],
        size=tuple(clip["size"]), resize_mode=clip["resize_mode"], mask_mode=mask["mode"],
        mask=Path(mask["file"]) if mask.get("file") else None,
        sam2=Path(mask["sam2"]) if mask.get("sam2") else None,
        sam2_points=[tuple(p) for p in mask.get("points") or []], mask_dilate=mask["dilate"], mask_bbox=mask["bbox"],
        reference_frames=Path(edit["reference"]) if edit.get("reference") else None,
        caption=(caption or "").strip(), edited_caption=(edited_caption or "").strip(),
        caption_model=s.ws.confine_model(caption_model) if caption_model else None)
    if not inp.caption and not inp.caption_model:
        raise PageError("type the clip's caption (what it shows), or choose a captioning model folder")
    s.ws.save_settings(job, edit={**edit, "caption": inp.caption, "edited_caption": inp.edited_caption,
                                  "caption_model": str(inp.caption_model or "")})
    s.tasks.start(job, "prepare", [prepare_command(inp)])
    return {"edit_msg": "Making the job (prepare.py) ..."}

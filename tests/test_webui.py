"""The page's pieces without a browser: the workspace's confinement, upload checks that write
nothing, the mask view, reading run folders (training previews or none), the plan's verdict, the
background tasks (outcome, error line, stop), and stop + resume of a real training through the page."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from webui_support import prepare_toy_job, snapshot

from media import probe_video
from webui import media, steps, train_steps
from webui.backend import TOY_MODEL, JobInputs, parse_plan, prepare_command
from webui.jobfiles import JobInfo, RunInfo
from webui.session import Session, clip_defaults
from webui.tasks import Tasks
from webui.views import open_job
from webui.workspace import PageError, Workspace, check_name

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO / "examples" / "clip.mp4"  # 416x240, 24 fps, 3.5 s


@pytest.fixture
def session(tmp_path: Path) -> Session:
    return Session(Workspace(tmp_path / "ws", model_roots=[TOY_MODEL]))


# ------------------------------------------------------------------------------------------ workspace
def test_paths_stay_inside_the_workspace(tmp_path: Path, session: Session):
    ws = session.ws
    assert ws.confine("videos/a.mp4") == ws.root / "videos" / "a.mp4"
    for bad in ("../outside.mp4", str(tmp_path / "outside.mp4"), "/etc/passwd", "videos/../../x"):
        with pytest.raises(PageError, match="outside the workspace"):
            ws.confine(bad)
    (tmp_path / "secret").mkdir()
    (ws.root / "videos" / "link").symlink_to(tmp_path / "secret")  # a symlink out is outside too
    with pytest.raises(PageError, match="outside the workspace"):
        ws.confine("videos/link/x.mp4")
    for name in ("../a", "", "a/b", ".hidden", "x" * 65, "a b"):
        with pytest.raises(PageError, match="job name"):
            check_name(name)
    assert check_name("jacket-yellow_2.v1") == "jacket-yellow_2.v1"
    with pytest.raises(PageError, match="not in the workspace nor in a --model-dir"):
        ws.confine_model(tmp_path / "secret")
    assert ws.confine_model(TOY_MODEL) == TOY_MODEL.resolve()


def test_model_folders_are_listed_from_the_roots(session: Session):
    ws = session.ws
    (ws.root / "models" / "wan14b").mkdir()
    (ws.root / "models" / "wan14b" / "model_index.json").write_text('{"_class_name": "WanImageToVideoPipeline"}')
    (ws.root / "models" / "notes").mkdir()
    assert ws.models() == [TOY_MODEL.resolve(), ws.root / "models" / "wan14b"]
    assert session.default_model == TOY_MODEL
    assert clip_defaults(TOY_MODEL, 416, 240) == {"frames": 9, "fps": 16.0, "size": "48x32"}
    assert clip_defaults(TOY_MODEL, 240, 416)["size"] == "32x48"
    assert clip_defaults(ws.root / "models" / "wan14b", 1920, 1080) == {"frames": 49, "fps": 16.0, "size": "832x480"}


# ------------------------------------------------------------------------------------------ uploads
def test_uploads_are_checked_with_messages_naming_the_file(tmp_path: Path):
    fake = tmp_path / "holiday.mp4"
    fake.write_text("not a video")
    with pytest.raises(PageError, match=r"holiday.mp4: not a video this page can read"):
        media.check_video(fake, 2**30)
    with pytest.raises(PageError, match=r"notes.txt: not a video file \(expected .mp4"):
        media.check_video(tmp_path / "notes.txt", 2**30)
    with pytest.raises(PageError, match=r"clip.mp4: .* is more than the 1 KB upload limit"):
        media.check_video(CLIP, 1024)
    facts = media.check_video(CLIP, 2**30)
    assert (facts.width, facts.height, round(facts.fps), facts.frames) == (416, 240, 24, 84)
    with pytest.raises(PageError, match=r"81 frames at 16 fps from 0 s need 5.06 s, the clip has 3.50 s .* at most 53"):
        media.check_window(facts, 0.0, 81, 16.0, "clip.mp4")
    media.check_window(facts, 0.0, 49, 16.0, "clip.mp4")

    img = np.zeros((100, 100, 3), np.uint8)
    with pytest.raises(PageError, match=r"edited frame e.png is 100x100: export it at the clip's size 416x240 "
                                        r"\(or the job's 64x32\)"):
        media.check_frame_size(img, (416, 240), (64, 32), "edited frame", "e.png")
    media.check_frame_size(np.zeros((120, 208, 3), np.uint8), (416, 240), (64, 32), "edited frame", "half.png")
    media.check_frame_size(np.zeros((32, 64, 3), np.uint8), (416, 240), (64, 32), "edited frame", "job.png")
    broken = tmp_path / "edit.png"
    broken.write_bytes(b"\x89PNG nonsense")
    with pytest.raises(PageError, match="edited frame edit.png: not an image this page can read"):
        media.read_image(broken, "edited frame")

    with pytest.raises(PageError, match="the mask is empty"):
        media.mask_from_editor({"background": None, "layers": [np.zeros((240, 416, 4), np.uint8)]}, (416, 240))
    with pytest.raises(PageError, match="the mask is empty"):
        media.mask_from_editor(None, (416, 240))
    layer = np.zeros((240, 416, 4), np.uint8)
    layer[10:20, 30:40, 3] = 160  # a semi-transparent stroke counts
    mask = media.mask_from_editor({"layers": [layer]}, (416, 240))
    assert mask.sum() == 100 and mask[10:20, 30:40].all()


def test_refused_inputs_change_nothing_on_disk(tmp_path: Path, session: Session):
    ws, job = session.ws, session.new_job("ball")
    fake = tmp_path / "holiday.mp4"
    fake.write_text("not a video")
    before = snapshot(ws.root)
    with pytest.raises(PageError, match="not a video"):
        steps.use_clip(session, job, str(fake), None, 0.0, 9, 16.0, "64x32", "crop")
    with pytest.raises(PageError, match="multiples of 16"):
        steps.use_clip(session, job, str(CLIP), None, 0.0, 9, 16.0, "60x32", "crop")
    with pytest.raises(PageError, match="must be 4k\\+1"):
        steps.use_clip(session, job, str(CLIP), None, 0.0, 10, 16.0, "64x32", "crop")
    with pytest.raises(PageError, match="outside the workspace"):
        steps.use_clip(session, job, None, "../../clip.mp4", 0.0, 9, 16.0, "64x32", "crop")
    assert snapshot(ws.root) == before

    out = steps.use_clip(session, job, str(CLIP), None, 0.0, 9, 16.0, "64x32", "crop")
    assert "fitted to 64x32 by crop" in out["clip_msg"] and Path(out["clip_video"]).is_file()
    bg = out["mask_editor"]["background"]
    assert bg.shape == (240, 416, 3)
    before = snapshot(ws.root)
    empty = {"background": bg, "layers": [np.zeros((240, 416, 4), np.uint8)]}
    with pytest.raises(PageError, match="the mask is empty"):
        steps.save_mask(session, job, "paint", empty, None, None, [], 0, False)
    cropped_away = np.zeros((240, 416, 4), np.uint8)
    cropped_away[:8, :, 3] = 255  # the 64x32 crop of this 416x240 clip drops its top 13 rows
    with pytest.raises(PageError, match="covers nothing of the job's 64x32 window"):
        steps.save_mask(session, job, "paint", {"background": bg, "layers": [cropped_away]}, None, None, [], 0, False)
    small = tmp_path / "mask.png"
    Image.new("L", (100, 100), 255).save(small)
    with pytest.raises(PageError, match="mask mask.png is 100x100: it must be the clip's size 416x240"):
        steps.save_mask(session, job, "upload", None, str(small), None, [], 0, False)
    with pytest.raises(PageError, match="click at least one point"):
        steps.save_mask(session, job, "sam2", None, None, str(TOY_MODEL), [], 0, False)
    wrong = tmp_path / "edited.png"
    Image.new("RGB", (100, 100)).save(wrong)
    with pytest.raises(PageError, match="edited.png is 100x100"):
        steps.use_edited(session, job, str(wrong))
    badly_named = tmp_path / "later.png"
    Image.new("RGB", (416, 240)).save(badly_named)
    with pytest.raises(PageError, match="name it by the source frame it edits"):
        steps.use_references(session, job, [str(badly_named)])
    with pytest.raises(PageError, match="save the mask first"):
        steps.make_job(session, job, "a ball", "", None)
    assert snapshot(ws.root) == before

    stroke = np.zeros((240, 416, 4), np.uint8)
    stroke[150:200, 5:110, 3] = 255  # the ball's path on the lawn
    out = steps.save_mask(session, job, "paint", {"background": bg, "layers": [stroke]}, None, None, [], 2, False)
    assert "may change" in out["mask_msg"] and (ws.inputs_dir(job) / "mask.png").is_file()


def test_the_mask_view_tints_exactly_the_edit_region():
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    frames[..., 0] = 200  # a red clip: the overlay must not be red
    mask = np.zeros((3, 16, 16), bool)
    mask[:, 4:12, 4:12] = True
    name, colour = media.contrast_colour(frames, mask)
    assert name == "cyan" and colour == media.PALETTE["cyan"]
    shown = media.overlay(frames, mask, colour)
    scale = media.VIEW_WIDTH // 16
    assert shown.shape == (3, 16 * scale, 16 * scale, 3)
    keep = ~mask.repeat(scale, 1).repeat(scale, 2)
    assert (shown[keep] == frames.repeat(scale, 1).repeat(scale, 2)[keep]).all(), "kept pixels untouched"
    assert (shown[~keep][:, 1] > 100).all(), "edit pixels tinted"


# ------------------------------------------------------------------------------------------ plan and runs
PLAN_FITS = """Training plan: toy (wan), 9 frames at 32x32
  total peak per GPU   15.6 MiB (+ CUDA context, ~0.5-1 GiB)

Fitting 24.0 GiB (1 GiB kept for the CUDA context): the job as configured peaks at 15.6 MiB - it fits.
"""
PLAN_ADVICE = """Training plan: ...

Fitting 24.0 GiB (1 GiB kept for the CUDA context): the job as configured peaks at 50.2 GiB. Cheapest changes first, \
each adding to the ones before:
        33.0 GiB does not fit:  --set training.blocks_to_swap=20
        22.3 GiB fits:  --set training.blocks_to_swap=39 --set model.transformer_dtype='float8'
"""
PLAN_NOTHING = """Fitting 8.0 GiB (1 GiB kept for the CUDA context): the job as configured peaks at 50.2 GiB. Cheapest \
changes first, each adding to the ones before:
        20.1 GiB does not fit:  --set training.blocks_to_swap=40
  nothing here fits: use a GPU with more memory, or pipeline stages over several GPUs (training.pipeline_stages)
"""


def test_the_plans_verdict_and_advice_are_read():
    p = parse_plan(PLAN_FITS)
    assert p.fits and p.advice == [] and p.verdict.startswith("Fitting 24.0 GiB")
    assert "Fits a 24 GB GPU" in train_steps.verdict_markdown(p.verdict, p.fits, p.advice, 24)
    p = parse_plan(PLAN_ADVICE)
    assert not p.fits and p.advice == ["training.blocks_to_swap=39", "model.transformer_dtype=float8"]
    assert "fits with" in train_steps.verdict_markdown(p.verdict, p.fits, p.advice, 24)
    p = parse_plan(PLAN_NOTHING)
    assert not p.fits and p.advice == []
    assert "even with every memory option" in train_steps.verdict_markdown(p.verdict, p.fits, p.advice, 8)


def _run_folder(path: Path, steps: int = 10, reference: Path | None = None) -> RunInfo:
    path.mkdir(parents=True)
    ref = f'reference_frames = "{reference}"' if reference else ""
    (path / "config.toml").write_text(f"[data]\n{ref}\n[training]\nsteps = {steps}\nreference_steps = 5\n")
    return RunInfo(path)


def test_run_folders_are_read_with_or_without_training_previews(tmp_path: Path):
    run = _run_folder(tmp_path / "runs" / "edit" / "20260101-120000")
    assert run.metrics == [] and run.previews() == [] and run.total_steps == 10 and not run.resumable
    lines = [json.dumps({"step": i, "stage": "stage1", "loss": 0.5 / i, "seconds": 0.1}) for i in (1, 2, 3)]
    (run.path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 4, "lo')  # a line being written
    assert [m["step"] for m in run.metrics] == [1, 2, 3] and run.step == 3
    (run.path / "checkpoints").mkdir()
    (run.path / "checkpoints" / "latest").write_text("step000003")
    (run.path / "summary.json").write_text(json.dumps({"steps": 3, "interrupted": True, "lora": None}))
    assert run.resumable and not run.finished and "stopped at step 3" in run.state()

    folder = run.path / "previews"
    folder.mkdir()
    (folder / "step_000002.mp4").write_bytes(b"mp4")
    (folder / "step_000002.png").write_bytes(b"png")
    entries = [{"step": 2, "video": "step_000002.mp4", "sheet": "step_000002.png", "scores": {}, "combined": 0.71},
               {"step": 3, "video": "step_000003.mp4", "sheet": "step_000003.png"},  # files not written yet
               {"step": 4, "video": "../../../escape.mp4"}]  # a path out of the folder is never shown
    (folder / "previews.jsonl").write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    (tmp_path / "runs" / "escape.mp4").write_bytes(b"x")
    previews = run.previews()
    assert [p["step"] for p in previews] == [2] and previews[0]["sheet"] == str(folder / "step_000002.png")
    assert train_steps.preview_caption(previews[0]) == "step 2: score 0.710"

    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "8.png").write_bytes(b"")
    assert _run_folder(tmp_path / "r2", reference=refs).total_steps == 15, "stage 2 counts when there are frames"


def test_job_info_resolves_paths_like_the_config_loader(tmp_path: Path):
    job = tmp_path / "ws" / "jobs" / "a"
    job.mkdir(parents=True)
    (job / "edit.toml").write_text('name = "a"\noutput_dir = "runs"\n[data]\ncache_dir = "/elsewhere/cache"\n')
    info = JobInfo.read(job)
    assert info.runs_dir == job / "runs" / "a" and info.results_dir == job / "results"
    assert info.outside(tmp_path / "ws") == ["data.cache_dir = /elsewhere/cache"]


def test_prepare_commands_for_each_way_of_masking(tmp_path: Path):
    base = dict(video=tmp_path / "v.mp4", edited_frame=tmp_path / "e.png", out=tmp_path / "job", model=TOY_MODEL,
                frames=9, fps=16.0, size=(32, 32), caption="a disc")
    argv = prepare_command(JobInputs(**base, mask_mode="paint", mask=tmp_path / "m.png", mask_dilate=3))
    assert argv[1].endswith("prepare.py") and argv[argv.index("--mask") + 1] == str(tmp_path / "m.png")
    assert argv[argv.index("--mask-dilate") + 1] == "3" and "model.dtype='float32'" in argv, "the toy's CPU settings"
    assert "--auto-mask" in prepare_command(JobInputs(**base, mask_mode="auto"))
    argv = prepare_command(JobInputs(**base, mask_mode="sam2", sam2=tmp_path / "sam2",
                                     sam2_points=[(10.5, 20.0, 1), (3.0, 4.0, 0)]))
    assert argv[argv.index("--sam2-points") + 1] == "10.5,20,1;3,4,0"
    other = prepare_command(JobInputs(**{**base, "model": tmp_path / "wan"}, mask_mode="auto"))
    assert "--set" not in other, "real models keep the family's settings"


# ------------------------------------------------------------------------------------------ tasks
def _wait(tasks: Tasks, job: str, kind: str, timeout: float = 60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        task = tasks.get(job, kind)
        if task and not task.active:
            return task
        time.sleep(0.2)
    raise AssertionError(f"{kind} still running after {timeout} s")


def test_background_tasks_report_their_outcome(session: Session):
    tasks, py = session.tasks, sys.executable
    job = session.new_job("t")
    tasks.start(job, "generate", [[py, "-c", "print('hello')"], [py, "-c", "print('second')"]])
    done = _wait(tasks, job, "generate")
    assert done.state == "done" and "hello" in done.tail() and "second" in done.tail()
    tasks.start(job, "generate", [[py, "-c", "import sys; sys.exit('error: the clip is too short')"],
                                  [py, "-c", "print('never')"]])
    failed = _wait(tasks, job, "generate")
    assert failed.state == "failed" and failed.last_error() == "error: the clip is too short"
    assert "never" not in failed.tail()

    tasks.start(job, "train", [[py, "-c", "import time; print('started', flush=True); time.sleep(120)"]])
    deadline = time.time() + 60
    while "started" not in tasks.get(job, "train").tail() and time.time() < deadline:
        time.sleep(0.2)
    with pytest.raises(PageError, match="train is still running"):
        tasks.start(job, "generate", [[py, "-c", "pass"]])
    assert tasks.stop(job, "train")
    assert _wait(tasks, job, "train", 30).state == "stopped"
    assert Tasks(session.ws).get(job, "train").state == "stopped", "read back by a new server"


# ------------------------------------------------------------------------------------------ stop and resume
def test_training_stops_and_resumes_through_the_page(tmp_path: Path, session: Session):
    """A real train.py on the toy model: stopped mid-run (checkpoint), resumed to the end, as one run."""
    ws = session.ws
    job = session.new_job("disc")
    prepare_toy_job(ws.job_dir(job), "adapter.rank=4", "training.activation_checkpointing=false",
                    "training.save_every_n_steps=0")
    total = 40
    train_steps.start_training(session, job, 24, "job", total, 0, "python")
    deadline = time.time() + 300
    info = session.job_info(job)
    while time.time() < deadline and not any(r.metrics for r in info.runs()):
        time.sleep(0.05)
    train_steps.stop_training(session, job)
    assert _wait(session.tasks, job, "train", 120).state == "stopped"
    (run,) = info.runs()
    assert run.resumable and 0 < run.step < total, "stopped mid-run with a checkpoint"
    view = train_steps.training_view(session, job, None)
    assert f"stopped at step {run.step}" in view["train_progress"]

    train_steps.resume_training(session, job, None, "python")
    assert _wait(session.tasks, job, "train", 300).state == "done"
    (run,) = info.runs()  # the same run folder, continued
    assert run.finished and run.step == total and run.summary["steps"] == total
    view = train_steps.training_view(session, job, None)
    assert f'value="{total}" max="{total}"' in view["train_progress"] and len(view["loss"]) >= total


def _edit_blue_and_make_job(session: Session, job: str, region: tuple[slice, slice]) -> None:
    """Step 3 on CLIP: its first frame painted blue in `region` as the edit, then "Make the job", waited for."""
    edited = media.first_frame(CLIP, 0.0).copy()
    edited[region] = (0, 0, 255)
    path = session.ws.root / "videos" / "edited.png"
    Image.fromarray(edited).save(path)
    steps.use_edited(session, job, str(path))
    steps.make_job(session, job, "a red ball rolls", "a blue ball rolls", None)
    task = _wait(session.tasks, job, "prepare", 600)
    assert task.state == "done", task.tail()


def test_a_job_tracked_by_sam2_from_clicks_in_the_page(session: Session):
    """SAM2 mode: the weights folder must be in the workspace (or a --model-dir); the clicks (source pixels)
    go to prepare.py, whose job then holds SAM2's tracked masks. Random tiny weights: the plumbing is checked."""
    from test_prepare import tiny_sam2

    ws, job = session.ws, session.new_job("tracked")
    weights = tiny_sam2(ws.root / "models" / "sam2-tiny")
    out = steps.use_clip(session, job, str(CLIP), None, 0.0, 5, 16.0, "64x32", "crop")
    assert out["mask_editor"]["background"].shape == (240, 416, 3)
    points = steps.sam2_click([], 40.0, 175.0, 1)
    points = steps.sam2_click(points, 300.0, 60.0, 0)
    assert points == [[40.0, 175.0, 1], [300.0, 60.0, 0]]
    out = steps.save_mask(session, job, "sam2", None, None, str(weights), points, 0, False)
    assert "by SAM2 from your points" in out["mask_msg"]
    _edit_blue_and_make_job(session, job, (slice(160, 190), slice(20, 60)))
    manifest = json.loads((ws.job_dir(job) / "manifest.json").read_text())
    assert manifest["stages"]["masks"]["meta"]["kind"] == "sam2"
    assert len(list((ws.job_dir(job) / "masks").glob("*.png"))) == 5


def test_a_long_clip_becomes_a_job_in_chained_windows(session: Session):
    """Step 1's "Long clip" field: 21 frames in windows of 5 go to prepare.py as --window 5 --frames 21; the
    views hold all 21 frames; reopening the job shows the same fields. Bad lengths are refused, writing nothing."""
    ws, job = session.ws, session.new_job("long")
    before = snapshot(ws.root)
    with pytest.raises(PageError, match="a whole number above the window's 5 frames"):
        steps.use_clip(session, job, str(CLIP), None, 0.0, 5, 16.0, "64x32", "crop", 5)
    with pytest.raises(PageError, match="up to 481; for more run prepare.py --window 5 --frames 900"):
        steps.use_clip(session, job, str(CLIP), None, 0.0, 5, 16.0, "64x32", "crop", 900)
    with pytest.raises(PageError, match="80 frames at 16 fps .* choose at most 56 frames"):
        steps.use_clip(session, job, str(CLIP), None, 0.0, 5, 16.0, "64x32", "crop", 80)
    assert snapshot(ws.root) == before

    out = steps.use_clip(session, job, str(CLIP), None, 0.0, 5, 16.0, "64x32", "crop", 21)
    assert "21 frames at 16 fps from 0 s (1.31 s) in 5 chained windows of 5" in out["clip_msg"]
    assert probe_video(out["clip_video"]).num_frames == 21
    bg = out["mask_editor"]["background"]
    stroke = np.zeros((*bg.shape[:2], 4), np.uint8)
    stroke[130:220, :, 3] = 255  # the ball's whole path on the lawn
    out = steps.save_mask(session, job, "paint", {"background": bg, "layers": [stroke]}, None, None, [], 0, False)
    assert probe_video(out["mask_video"]).num_frames == 21
    _edit_blue_and_make_job(session, job, (slice(150, 200), slice(5, 110)))
    info = session.job_info(job)
    assert (info.data("frames"), info.data("window")) == (21, 5)
    assert len(list((ws.job_dir(job) / "masks").glob("*.png"))) == 21
    reopened = open_job(session, job)
    assert (reopened["frames"], reopened["length"]) == (5, 21)

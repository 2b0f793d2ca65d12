"""The page's layout (Gradio Blocks) and its wiring to the handlers of webui.steps / webui.train_steps.

Handlers return {component name: value}; `_wire` turns that into Gradio's outputs (absent names stay
as they are) and a PageError into the message of the step that raised it.
"""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from webui import steps, train_steps
from webui.session import FRAME_CHOICES, Session
from webui.views import open_job, poll
from webui.workspace import PageError

CSS = """
.lora-progress progress { width: 85%; height: 1.2em; vertical-align: middle; }
.lora-progress-pct { margin-left: .6em; font-weight: 600; }
#job-status p, .step-msg p { margin: .2em 0; }
"""
GPU_CHOICES = [8, 12, 16, 24, 32, 40, 48, 80, 96, 141, 192]
INTRO = """# LoRA-Edit: edit a video by editing its first frame
Walk through the steps: **1** the clip, **2** where it may change, **3** your edited first frame, **4** train a
small LoRA on this clip, **5** generate the edited video. Everything is saved in the workspace as you go:
close the page or restart the server at any time and reopen the job."""


def error_md(text: str) -> str:
    return f"**⚠ {text}**"


def build(s: Session) -> gr.Blocks:
    C: dict[str, gr.components.Component] = {}

    def wire(event: Callable, fn: Callable, ins: list[str], outs: list[str], msg: str, clear: str | None = None,
             **kw: object) -> None:
        """`clear`: an upload component emptied when its file is refused, so the next one can be dropped."""
        if clear and clear not in outs:
            outs = [*outs, clear]

        def run(*args: object) -> object:
            try:
                result = fn(*args) or {}
            except PageError as e:
                result = {msg: error_md(str(e)), **({clear: None} if clear else {})}
            values = tuple(_value(n, result[n]) if n in result else gr.skip() for n in outs)
            return values[0] if len(values) == 1 else values

        event(run, inputs=[C[n] for n in ins], outputs=[C[n] for n in outs], **kw)

    with gr.Blocks(title="LoRA-Edit", analytics_enabled=False) as demo:
        C["job"] = gr.State(None)
        C["sig"] = gr.State({})
        C["sam2_points"] = gr.State([])
        gr.Markdown(INTRO)
        with gr.Row(equal_height=True):
            C["new_name"] = gr.Textbox(label="New job name", placeholder="e.g. jacket-yellow", elem_id="new-name",
                                       scale=2)
            C["new_job"] = gr.Button("New job", elem_id="new-job", scale=1)
            C["job_pick"] = gr.Dropdown(label="Open a job", choices=s.ws.names(), value=None, elem_id="job-pick",
                                        scale=2)
            C["open_job"] = gr.Button("Open", elem_id="open-job", scale=1)
            C["model"] = gr.Dropdown(label="Model folder", choices=s.model_choices(), elem_id="model", scale=4,
                                     value=str(s.default_model) if s.default_model else None,
                                     info="the toy model runs on a CPU; real models go in WORKSPACE/models")
        C["job_status"] = gr.Markdown(elem_id="job-status")
        with gr.Tabs(elem_id="step-tabs") as C["tabs"]:
            with gr.Tab("1. Clip", id="clip", elem_id="tab-clip"):
                with gr.Row():
                    C["clip_upload"] = gr.File(label="Upload a clip", file_types=["video"], elem_id="clip-upload")
                    C["clip_pick"] = gr.Dropdown(label="... or pick one from WORKSPACE/videos", choices=s.ws.videos(),
                                                 value=None, elem_id="clip-pick")
                with gr.Row():
                    C["start"] = gr.Number(label="Start (s)", value=0.0, minimum=0, elem_id="start")
                    C["frames"] = gr.Dropdown(label="Frames (4k+1)", choices=FRAME_CHOICES, value=49, elem_id="frames")
                    C["length"] = gr.Number(label="Long clip: all frames", value=0, minimum=0,
                                            precision=0, elem_id="length", info="0: one window of Frames")
                    C["fps"] = gr.Number(label="Frame rate", value=16.0, elem_id="fps")
                    C["size"] = gr.Textbox(label="Size (WxH, multiples of 16)", value="832x480", elem_id="size")
                    C["resize_mode"] = gr.Radio(["crop", "pad"], value="crop", label="Fit", elem_id="resize-mode")
                C["use_clip"] = gr.Button("Use this clip", variant="primary", elem_id="use-clip")
                C["clip_msg"] = gr.Markdown(elem_id="clip-msg", elem_classes="step-msg")
                with gr.Row():
                    C["clip_video"] = gr.Video(label="The job's window", interactive=False, elem_id="clip-video",
                                               loop=True, autoplay=True, height=280)
                    C["clip_sheet"] = gr.Image(label="Its frames", interactive=False, elem_id="clip-sheet", height=280)
            with gr.Tab("2. Where it may change", id="mask", elem_id="tab-mask"):
                C["mask_mode"] = gr.Radio(
                    [("Paint on the first frame (the same region in every frame)", "paint"),
                     ("Derive it from the edited frame (tracked)", "auto"),
                     ("Click points for SAM2 (tracked)", "sam2"), ("Upload a mask image or video", "upload")],
                    value="paint", label="How", elem_id="mask-mode")
                with gr.Group(visible=True) as C["paint_group"]:
                    C["mask_editor"] = gr.ImageEditor(
                        label="Paint where the video may change (cover the object's whole path in the window)",
                        elem_id="mask-editor", sources=(), transforms=(), layers=False, type="numpy", format="png",
                        brush=_brush(12), eraser=gr.Eraser(default_size=12))
                with gr.Group(visible=False) as C["sam2_group"]:
                    with gr.Row():
                        C["sam2_dir"] = gr.Textbox(label="SAM2 weights folder (transformers format)",
                                                   elem_id="sam2-dir")
                        C["sam2_label"] = gr.Radio([("object", 1), ("not the object", 0)], value=1,
                                                   label="A click marks", elem_id="sam2-label")
                        C["sam2_clear"] = gr.Button("Clear the points", elem_id="sam2-clear")
                    C["sam2_image"] = gr.Image(label="Click on the first frame (SAM2)", interactive=False,
                                               elem_id="sam2-image")
                    C["sam2_text"] = gr.Markdown(elem_id="sam2-text")
                with gr.Group(visible=False) as C["upload_group"]:
                    C["mask_upload"] = gr.File(label="Mask image or video (white = may change)",
                                               elem_id="mask-upload", file_types=["image", "video"])
                C["auto_text"] = gr.Markdown(
                    "The region where your edited frame differs from the source's first frame, followed through "
                    "the clip by optical flow: good for recolouring or retexturing an object that moves; check "
                    "the last frames after making the job.", visible=False, elem_id="auto-text")
                with gr.Row():
                    C["dilate"] = gr.Slider(-16, 32, value=0, step=1, label="Grow (+) or shrink (-) the mask, pixels",
                                            elem_id="dilate")
                    C["bbox"] = gr.Checkbox(label="Use boxes around the regions (+10%, as the paper's code)",
                                            elem_id="bbox")
                C["save_mask"] = gr.Button("Save the mask and show it over the clip", variant="primary",
                                           elem_id="save-mask")
                C["mask_msg"] = gr.Markdown(elem_id="mask-msg", elem_classes="step-msg")
                with gr.Row():
                    C["mask_video"] = gr.Video(label="The mask over the whole clip", interactive=False,
                                               elem_id="mask-video", loop=True, autoplay=True, height=280)
                    C["mask_sheet"] = gr.Image(label="Its frames", interactive=False, elem_id="mask-sheet",
                                               height=280)
            with gr.Tab("3. The edit", id="edit", elem_id="tab-edit"):
                with gr.Row():
                    C["edited_upload"] = gr.File(label="Your edited first frame (the clip's size)",
                                                 file_types=["image"], elem_id="edited-upload")
                    C["reference_upload"] = gr.File(
                        label="Optional: edited later frames, named by the source frame (120.png) or time (t=2.5s.png)",
                        file_count="multiple", file_types=["image"], elem_id="reference-upload")
                C["edit_compare"] = gr.Image(label="Source | your edit | where they differ", interactive=False,
                                             elem_id="edit-compare", height=300)
                with gr.Row():
                    C["caption"] = gr.Textbox(label="What the clip shows", elem_id="caption",
                                              placeholder="a woman in a red jacket walks along a street")
                    C["edited_caption"] = gr.Textbox(label="What the edited clip shows", elem_id="edited-caption",
                                                     placeholder="a woman in a yellow jacket walks along a street")
                    C["caption_model"] = gr.Textbox(label="... or a captioning model folder (Florence-2)",
                                                    elem_id="caption-model")
                C["make_job"] = gr.Button("Make the job", variant="primary", elem_id="make-job")
                C["edit_msg"] = gr.Markdown(elem_id="edit-msg", elem_classes="step-msg")
                C["prepare_log"] = gr.Textbox(label="prepare.py", lines=6, max_lines=12, interactive=False,
                                              elem_id="prepare-log")
                C["job_preview"] = gr.Image(label="What the model is given to generate from (prepare's preview)",
                                            interactive=False, elem_id="job-preview", height=320)
            with gr.Tab("4. Train", id="train", elem_id="tab-train"):
                C["train_model"] = gr.Markdown(elem_id="train-model")
                with gr.Row():
                    C["steps"] = gr.Number(label="Steps (stage 1: the clip)", precision=0, minimum=0, elem_id="steps")
                    C["ref_steps"] = gr.Number(label="Steps (stage 2: edited later frames)", precision=0, minimum=0,
                                               elem_id="ref-steps")
                    C["gpu_gb"] = gr.Dropdown(GPU_CHOICES, value=24, label="GPU memory (GB)", elem_id="gpu-gb")
                    C["profile"] = gr.Radio([(v, k) for k, v in train_steps.PROFILES.items()], value="job",
                                            label="Memory settings", elem_id="profile")
                    C["launcher"] = gr.Radio([("one process", "python"), ("all GPUs (deepspeed)", "deepspeed")],
                                             value="python", label="Launch", elem_id="launcher")
                with gr.Row():
                    C["check_plan"] = gr.Button("Check memory (train.py --plan)", elem_id="check-plan")
                    C["start_train"] = gr.Button("Start training", variant="primary", elem_id="start-train")
                    C["stop_train"] = gr.Button("Stop", variant="stop", elem_id="stop-train")
                    C["resume_train"] = gr.Button("Resume", elem_id="resume-train")
                C["plan_verdict"] = gr.Markdown(elem_id="plan-verdict")
                with gr.Accordion("The whole plan", open=False):
                    C["plan_text"] = gr.Textbox(lines=14, interactive=False, show_label=False, elem_id="plan-text")
                C["train_msg"] = gr.Markdown(elem_id="train-msg", elem_classes="step-msg")
                C["run_pick"] = gr.Dropdown(label="Run", choices=[("the newest run", "")], value="", elem_id="run-pick")
                C["train_progress"] = gr.HTML(elem_id="train-progress")
                C["loss"] = gr.LinePlot(x="step", y="loss", title="Training loss (stage 1, then stage 2)",
                                        elem_id="loss-plot")
                with gr.Row():
                    C["previews"] = gr.Gallery(label="Training previews", columns=4, elem_id="previews")
                    C["preview_video"] = gr.Video(label="Latest preview", interactive=False, elem_id="preview-video",
                                                  height=300)
                C["train_log"] = gr.Textbox(label="train.py output (last lines)", lines=8, interactive=False,
                                            elem_id="train-log")
            with gr.Tab("5. Result", id="result", elem_id="tab-result"):
                with gr.Row():
                    C["lora_pick"] = gr.Dropdown(label="LoRA", choices=[], value=None, elem_id="lora-pick")
                    C["infer_steps"] = gr.Number(label="Denoising steps", precision=0, minimum=1, elem_id="infer-steps")
                    C["seed"] = gr.Number(label="Seed", value=42, precision=0, elem_id="seed")
                    C["guidance"] = gr.Number(label="Guidance", elem_id="guidance")
                with gr.Row():
                    C["generate"] = gr.Button("Generate and evaluate", variant="primary", elem_id="generate")
                    C["stop_generate"] = gr.Button("Stop", variant="stop", elem_id="stop-generate")
                C["result_pick"] = gr.Dropdown(label="Result", choices=[("the newest result", "")], value="",
                                                elem_id="result-pick")
                C["result_msg"] = gr.Markdown(elem_id="result-msg", elem_classes="step-msg")
                with gr.Row():
                    C["result_video"] = gr.Video(label="The edited video", interactive=False, elem_id="result-video",
                                                 loop=True, autoplay=True, height=300)
                    C["sbs_video"] = gr.Video(label="Source | result | mask", interactive=False, elem_id="sbs-video",
                                              loop=True, autoplay=True, height=300)
                C["metrics_table"] = gr.Dataframe(headers=["metric", "better", "source", "result"], interactive=False,
                                                  elem_id="metrics-table", label="Metrics (means over frames 1..T-1)")
                C["metrics_plot"] = gr.Image(label="Per frame", interactive=False, elem_id="metrics-plot")
                C["downloads"] = gr.File(label="Downloads", file_count="multiple", interactive=False,
                                         elem_id="downloads")
        C["timer"] = gr.Timer(2.0)

        everything = [n for n in C if n not in ("timer", "tabs", "new_job", "open_job", "use_clip", "save_mask",
                                                "make_job", "check_plan", "start_train", "stop_train",
                                                "resume_train", "generate", "stop_generate", "sam2_clear")]
        opened = ["job", "sig", *[n for n in everything if n not in ("job", "sig")]]

        def do_open(name: str | None) -> dict:
            return open_job(s, name)

        def do_new(name: str) -> dict:
            return open_job(s, s.new_job(name))

        wire(demo.load, lambda: open_job(s, s.ws.last_job()), [], opened, "job_status")
        wire(C["new_job"].click, do_new, ["new_name"], opened, "job_status")
        wire(C["open_job"].click, do_open, ["job_pick"], opened, "job_status")
        wire(C["model"].change, lambda job, m: _set_model(s, job, m), ["job", "model"], ["job_status"], "job_status")
        # 1. clip
        wire(C["clip_upload"].upload, lambda job, up: steps.inspect_clip(s, job, up, None), ["job", "clip_upload"],
             ["clip_msg", "frames", "length", "fps", "size"], "clip_msg", clear="clip_upload")
        wire(C["clip_pick"].input, lambda job, p: steps.inspect_clip(s, job, None, p), ["job", "clip_pick"],
             ["clip_msg", "frames", "length", "fps", "size"], "clip_msg")
        wire(C["use_clip"].click, lambda *a: steps.use_clip(s, *a),
             ["job", "clip_upload", "clip_pick", "start", "frames", "fps", "size", "resize_mode", "length"],
             ["clip_msg", "clip_video", "clip_sheet", "mask_editor", "mask_video", "mask_sheet", "mask_msg"],
             "clip_msg")
        # 2. mask
        wire(C["save_mask"].click, lambda *a: steps.save_mask(s, *a),
             ["job", "mask_mode", "mask_editor", "mask_upload", "sam2_dir", "sam2_points", "dilate", "bbox"],
             ["mask_msg", "mask_video", "mask_sheet", "clip_video"], "mask_msg")
        wire(C["mask_mode"].change, lambda job, mode: _mask_mode(s, job, mode), ["job", "mask_mode"],
             ["sam2_image", "sam2_text", "paint_group", "sam2_group", "upload_group", "auto_text"], "mask_msg")

        def on_click(job: str, points: list, label: int, evt: gr.SelectData) -> dict:
            pts = steps.sam2_click(points, *evt.index[:2], label)
            return {"sam2_points": pts, **_sam2_image(s, job, "sam2", pts)}

        C["sam2_image"].select(lambda *a: _tuple(on_click(*a), ["sam2_points", "sam2_image", "sam2_text"]),
                               inputs=[C["job"], C["sam2_points"], C["sam2_label"]],
                               outputs=[C["sam2_points"], C["sam2_image"], C["sam2_text"]])
        wire(C["sam2_clear"].click, lambda job: {"sam2_points": [], **_sam2_image(s, job, "sam2", [])}, ["job"],
             ["sam2_points", "sam2_image", "sam2_text"], "mask_msg")
        # 3. edit
        wire(C["edited_upload"].upload, lambda job, up: steps.use_edited(s, job, up), ["job", "edited_upload"],
             ["edit_msg", "edit_compare"], "edit_msg", clear="edited_upload")
        for event in (C["reference_upload"].upload, C["reference_upload"].clear):
            wire(event, lambda job, ups: steps.use_references(s, job, ups), ["job", "reference_upload"], ["edit_msg"],
                 "edit_msg", clear="reference_upload")
        wire(C["make_job"].click, lambda *a: steps.make_job(s, *a),
             ["job", "caption", "edited_caption", "caption_model"], ["edit_msg"], "edit_msg")
        # 4. train
        wire(C["check_plan"].click, lambda *a: train_steps.check_plan(s, *a), ["job", "gpu_gb", "steps", "ref_steps"],
             ["plan_verdict", "plan_text", "train_msg"], "train_msg")
        wire(C["start_train"].click, lambda *a: train_steps.start_training(s, *a),
             ["job", "gpu_gb", "profile", "steps", "ref_steps", "launcher"], ["train_msg"], "train_msg")
        wire(C["stop_train"].click, lambda job: train_steps.stop_training(s, job), ["job"], ["train_msg"], "train_msg")
        wire(C["resume_train"].click, lambda *a: train_steps.resume_training(s, *a), ["job", "run_pick", "launcher"],
             ["train_msg"], "train_msg")
        # 5. result
        wire(C["generate"].click, lambda *a: train_steps.generate(s, *a),
             ["job", "lora_pick", "infer_steps", "seed", "guidance"], ["result_msg"], "result_msg")
        wire(C["stop_generate"].click, lambda job: {"result_msg": "Stopping." if s.tasks.stop(job, "generate")
                                                    else "Nothing is generating."}, ["job"], ["result_msg"],
             "result_msg")
        polled = ["sig", "job_status", "edit_msg", "prepare_log", "job_preview", "clip_video", "clip_sheet",
                  "mask_video", "mask_sheet", "mask_msg", "train_model", "steps", "ref_steps", "infer_steps",
                  "guidance", "run_pick", "train_progress", "loss", "previews", "preview_video", "train_log",
                  "lora_pick", "result_pick", "result_msg", "result_video", "sbs_video", "metrics_table",
                  "metrics_plot", "downloads", "job_pick"]
        wire(C["timer"].tick, lambda *a: poll(s, *a), ["job", "sig", "run_pick", "result_pick"], polled, "job_status",
             show_progress="hidden")
    return demo


def _tuple(result: dict, names: list[str]) -> tuple:
    return tuple(_value(n, result[n]) if n in result else gr.skip() for n in names)


def _value(name: str, value: object) -> object:
    """Plain handler values to what the components take."""
    if name == "loss":
        import pandas as pd

        return pd.DataFrame(value or [], columns=["step", "loss", "stage"])
    if name == "mask_editor" and isinstance(value, dict):  # a new first frame: a brush sized for it
        h, w = value["background"].shape[:2]
        return gr.update(value=value, brush=_brush(max(2, round(min(w, h) / 30))))
    if isinstance(value, dict) and value.get("__update__"):
        return gr.update(**{k: v for k, v in value.items() if k != "__update__"})
    return value


def _brush(size: int) -> gr.Brush:
    return gr.Brush(colors=["rgba(255,0,255,0.65)"], color_mode="fixed", default_size=size)


def _set_model(s: Session, job: str | None, model: str | None) -> dict:
    if not job or not model:
        return {}
    info = s.job_info(job)
    if info is not None and info.model and info.model != model:
        raise PageError(f"job {job} is made for {info.model}; make a new job to train another model")
    s.ws.save_settings(job, model=str(s.ws.confine_model(model)))
    return {}


def _mask_mode(s: Session, job: str | None, mode: str) -> dict:
    shown = {"paint_group": mode == "paint", "sam2_group": mode == "sam2", "upload_group": mode == "upload",
             "auto_text": mode == "auto"}
    return {**_sam2_image(s, job, mode, []), **{k: {"__update__": True, "visible": v} for k, v in shown.items()}}


def _sam2_image(s: Session, job: str | None, mode: str, points: list) -> dict:
    if mode != "sam2" or not job or not s.ws.settings(job).get("clip"):
        return {"sam2_image": None, "sam2_text": ""}
    from webui.views import draw_points

    img = draw_points(steps.editor_value(s, job)["background"], points)
    text = "; ".join(f"({x:g}, {y:g}) {'object' if v else 'not object'}" for x, y, v in points) or "no points yet"
    return {"sam2_image": img, "sam2_text": f"Points: {text}"}

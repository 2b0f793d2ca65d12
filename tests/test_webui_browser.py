"""The page in a real headless browser (Debian's Chromium driven by Playwright): bad uploads are
refused and change nothing; then one whole edit - a job from the example clip with a painted mask
and the edited frame, a few training steps on the toy model, a restart of the server, generation,
and the result video and metrics on the page. A screenshot of every step goes to
WEBUI_SCREENSHOTS (default runs/webui-screenshots/).

Without Playwright or Chromium these tests skip, unless WEBUI_BROWSER_REQUIRED=1 (CI) makes that a failure.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from webui_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO,
    TOY,
    Server,
    browser_missing,
    paint,
    prepare_toy_job,
    snapshot,
    stop_tasks,
)

SHOTS = Path(os.environ.get("WEBUI_SCREENSHOTS", REPO / "runs" / "webui-screenshots"))
# Few steps: the flow is what is tested here (the README's screenshots are made with more).
TRAIN_STEPS = int(os.environ.get("WEBUI_TEST_TRAIN_STEPS", "4"))
REFERENCE_STEPS = int(os.environ.get("WEBUI_TEST_REFERENCE_STEPS", "2"))
INFER_STEPS = int(os.environ.get("WEBUI_TEST_INFER_STEPS", "4"))
LONG = 600_000  # ms: training and generation on two shared CPU cores

_missing = browser_missing()
if _missing and os.environ.get("WEBUI_BROWSER_REQUIRED") == "1":
    raise RuntimeError(f"WEBUI_BROWSER_REQUIRED=1 but {_missing}")
pytestmark = pytest.mark.skipif(bool(_missing), reason=_missing or "")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("webui")
    server = Server(root / "workspace", root / "server.log").start()
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield {"server": server, "browser": browser, "root": root}
        finally:
            browser.close()
            server.stop()
            stop_tasks(root / "workspace")


def _page(site):
    page = site["browser"].new_page(viewport={"width": 1280, "height": 900})
    page.goto(site["server"].url)
    page.locator("#new-name input, #new-name textarea").first.wait_for(timeout=60_000)
    return page


def _new_job(page, name: str) -> None:
    from playwright.sync_api import expect

    page.locator("#new-name input, #new-name textarea").first.fill(name)
    page.locator("#new-job").click()
    expect(page.locator("#job-status")).to_contain_text(f"Job {name}", timeout=60_000)


def _tab(page, label: str) -> None:
    page.get_by_role("tab", name=label).click()
    page.wait_for_timeout(300)


def _shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    print(f"{time.strftime('%H:%M:%S')} screenshot {name}", flush=True)


def _fill(page, elem: str, value: object) -> None:
    box = page.locator(f"{elem} input, {elem} textarea").first
    box.fill(str(value))
    box.press("Tab")


def test_bad_uploads_are_refused_and_change_nothing(site, tmp_path):
    from playwright.sync_api import expect

    ws = site["server"].workspace
    page = _page(site)
    _new_job(page, "refusals")
    before = snapshot(ws)
    fake = tmp_path / "holiday.mp4"
    fake.write_text("not a video at all")
    page.set_input_files("#clip-upload input[type=file]", str(fake))
    expect(page.locator("#clip-msg")).to_contain_text("holiday.mp4: not a video this page can read", timeout=60_000)
    page.locator("#use-clip").click()  # the refused file was dropped: nothing to use
    expect(page.locator("#clip-msg")).to_contain_text("upload a clip, or pick one", timeout=60_000)
    assert snapshot(ws) == before

    page.set_input_files("#clip-upload input[type=file]", str(REPO / "examples" / "clip.mp4"))
    expect(page.locator("#clip-msg")).to_contain_text("416x240", timeout=60_000)
    _fill(page, "#size", "64x32")
    page.locator("#use-clip").click()
    expect(page.locator("#clip-msg")).to_contain_text("fitted to 64x32", timeout=120_000)
    before = snapshot(ws)

    _tab(page, "2. Where it may change")
    page.locator("#mask-editor canvas").first.wait_for(timeout=60_000)
    page.locator("#save-mask").click()
    expect(page.locator("#mask-msg")).to_contain_text("the mask is empty", timeout=60_000)
    assert snapshot(ws) == before

    _tab(page, "3. The edit")
    wrong = tmp_path / "edited.png"
    Image.new("RGB", (100, 100), (0, 0, 255)).save(wrong)
    page.set_input_files("#edited-upload input[type=file]", str(wrong))
    expect(page.locator("#edit-msg")).to_contain_text("edited.png is 100x100: export it at the clip's size 416x240",
                                                      timeout=60_000)
    assert snapshot(ws) == before
    _shot(page, "0-refused-upload")
    page.close()


def _toy_clip(folder: Path) -> Path:
    """The toy example's source frames (a red disc moving down, 9 frames at 16 fps) as an mp4."""
    import media

    frames = np.stack([media.read_image(p) for p in sorted((TOY / "source").glob("*.png"))])
    path = folder / "disc.mp4"
    media.write_video(path, frames, 16.0, crf=10)
    return path


def test_a_whole_edit_in_the_browser(site, tmp_path):
    from playwright.sync_api import expect

    server, ws = site["server"], site["server"].workspace
    case = json.loads((TOY / "case.json").read_text())
    t0 = time.time()
    page = _page(site)
    _new_job(page, "disc")

    # 1. the clip: the toy model's defaults for it are 9 frames at 32x32
    page.set_input_files("#clip-upload input[type=file]", str(_toy_clip(tmp_path)))
    expect(page.locator("#clip-msg")).to_contain_text("32x32, 16 fps", timeout=60_000)
    expect(page.locator("#size input, #size textarea").first).to_have_value("32x32")
    page.locator("#use-clip").click()
    expect(page.locator("#clip-msg")).to_contain_text("fitted to 32x32", timeout=120_000)
    page.locator("#clip-video video").wait_for(timeout=30_000)
    _shot(page, "1-clip")

    # 2. paint over the disc's path (it moves down from y=10 to y=22 around x=21)
    _tab(page, "2. Where it may change")
    page.locator("#mask-editor canvas").first.wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    paint(page, "#mask-editor", (32, 32), 13, 2, 29, 30)
    page.locator("#save-mask").click()
    expect(page.locator("#mask-msg")).to_contain_text("Saved", timeout=120_000)
    mask = np.asarray(Image.open(ws / "page" / "disc" / "inputs" / "mask.png")) > 127
    assert mask.shape == (32, 32) and mask[10:23, 17:26].all() and not mask[:, :10].any(), "the painted path"
    page.locator("#mask-video video").wait_for(timeout=30_000)
    _shot(page, "2-mask")

    # 3. the edited first frame (the disc recoloured cyan), one edited later frame, the captions; make the job
    _tab(page, "3. The edit")
    page.set_input_files("#edited-upload input[type=file]", str(TOY / "edited_first.png"))
    expect(page.locator("#edit-msg")).to_contain_text("saved", timeout=60_000)
    page.set_input_files("#reference-upload input[type=file]", str(TOY / "reference" / "8.png"))
    expect(page.locator("#edit-msg")).to_contain_text("8.png", timeout=60_000)
    _fill(page, "#caption", case["caption"])
    _fill(page, "#edited-caption", case["edited_caption"])
    page.locator("#make-job").click()
    expect(page.locator("#edit-msg")).to_contain_text("Job made", timeout=LONG)
    job = ws / "jobs" / "disc"
    assert (job / "edit.toml").is_file() and len(list((job / "masks").glob("*.png"))) == 9
    assert (job / "reference" / "8.png").is_file()
    page.locator("#job-preview img").wait_for(timeout=30_000)
    _shot(page, "3-edit")

    # 4. the plan's verdict, then a few training steps (stage 1 and stage 2)
    _tab(page, "4. Train")
    _fill(page, "#steps", TRAIN_STEPS)
    _fill(page, "#ref-steps", REFERENCE_STEPS)
    page.locator("#check-plan").click()
    expect(page.locator("#plan-verdict")).to_contain_text("Fits a 24 GB GPU", timeout=LONG)
    page.locator("#start-train").click()
    total = TRAIN_STEPS + REFERENCE_STEPS
    expect(page.locator("#train-status")).to_contain_text(f"finished {total} steps", timeout=LONG)
    assert page.locator("#train-bar").get_attribute("value") == str(total)
    page.locator("#loss-plot canvas, #loss-plot svg").first.wait_for(timeout=30_000)
    _shot(page, "4-train")
    runs = list((job / "runs" / "disc").glob("*/lora.safetensors"))
    assert len(runs) == 1, "one run, as train.py writes it"

    # the state is on disk: a restarted server and a new page show the same job and run
    page.close()
    server.stop()
    server.start()
    page = _page(site)
    expect(page.locator("#job-status")).to_contain_text("Job disc", timeout=60_000)
    _tab(page, "4. Train")
    expect(page.locator("#train-status")).to_contain_text(f"finished {total} steps", timeout=60_000)

    # 5. generate and evaluate
    _tab(page, "5. Result")
    _fill(page, "#infer-steps", INFER_STEPS)
    page.locator("#generate").click()
    expect(page.locator("#metrics-table")).to_contain_text("background PSNR, kept region", timeout=LONG)
    video = page.locator("#result-video video")
    video.wait_for(timeout=30_000)
    page.wait_for_function("() => { const v = document.querySelector('#result-video video');"
                           " return v && v.readyState >= 1 && v.duration > 0; }", timeout=30_000)
    page.locator("#sbs-video video").wait_for(timeout=30_000)
    page.locator("#metrics-plot img").wait_for(timeout=30_000)
    _shot(page, "5-result")
    results = list((job / "results").glob("*/evaluation.json"))
    assert len(results) == 1 and (results[0].parent / "result.mp4").is_file()
    print(f"whole edit in the browser: {time.time() - t0:.0f} s")
    page.close()


def test_a_job_made_by_prepare_opens_in_the_page(site):
    """The reverse direction: prepare.py makes a job in the workspace; the page lists and shows it."""
    from playwright.sync_api import expect

    ws = site["server"].workspace
    prepare_toy_job(ws / "jobs" / "from-cli")
    page = _page(site)
    page.locator("#job-pick input").click()
    page.get_by_role("option", name="from-cli").click()
    page.locator("#open-job").click()
    expect(page.locator("#job-status")).to_contain_text("made by prepare.py", timeout=60_000)
    page.locator("#clip-video video").wait_for(timeout=30_000)
    _tab(page, "2. Where it may change")
    expect(page.locator("#mask-msg")).to_contain_text("may change", timeout=60_000)
    page.close()

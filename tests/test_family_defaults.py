"""Per-family defaults (size, fps) and recognising which family a weights folder holds."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synthetic import moving_square

import media
from config.errors import ConfigError, UserError
from config.loader import load_config
from datasets.prepare.job import PrepareRequest, prepare_job
from models.registry import default_size, detect_family, make_adapter


def test_fps_zero_means_the_families_rate_and_fractions_below_one_are_refused():
    assert load_config(None).data.fps == 16.0
    assert load_config(None, ["model.type='hunyuan_video'"]).data.fps == 24.0
    assert load_config(None, ["model.type='hunyuan_video'", "data.fps=30"]).data.fps == 30.0
    with pytest.raises(ConfigError, match="data.fps = 0.5 is below 1"):
        load_config(None, ["data.fps=0.5"])


def test_default_size_per_family_and_orientation():
    assert default_size(1920, 1080) == (832, 480)
    assert default_size(1080, 1920, "wan") == (480, 832)
    assert default_size(1920, 1080, "hunyuan_video") == (624, 368)
    assert default_size(720, 1280, "hunyuan_video") == (368, 624)


def test_families_are_detected_from_their_folders(tiny_wan_diffusers, tiny_wan_original, tiny_hunyuan_diffusers,
                                                  tmp_path):
    assert detect_family(tiny_wan_diffusers) == "wan"
    assert detect_family(tiny_wan_original) == "wan"
    assert detect_family(tiny_hunyuan_diffusers) == "hunyuan_video"
    assert detect_family(tmp_path) is None


def test_a_model_type_that_does_not_match_the_folder_is_named(tiny_hunyuan_diffusers):
    cfg = load_config(None, [f"model.ckpt_path='{tiny_hunyuan_diffusers}'"])
    with pytest.raises(UserError, match="holds a 'hunyuan_video' model but model.type = 'wan'"):
        make_adapter(cfg.model, "cpu")


def test_prepare_takes_the_family_rate_and_size_from_the_model_folder(tiny_hunyuan_diffusers, tmp_path: Path):
    frames, masks = moving_square(12, 160, 96, top=30, side=24, x0=10, step=4)
    media.write_video(tmp_path / "clip.mp4", frames, 24)
    edited = frames[0].copy()
    edited[masks[0]] = (40, 40, 250)
    Image.fromarray(edited).save(tmp_path / "edited.png")
    Image.fromarray(masks[0].astype(np.uint8) * 255).save(tmp_path / "mask.png")
    req = PrepareRequest(video=tmp_path / "clip.mp4", edited_frame=tmp_path / "edited.png", mask=tmp_path / "mask.png",
                         out=tmp_path / "job", frames=9, model=tiny_hunyuan_diffusers, caption="a yellow box",
                         progress=False, preview=False)
    assert (req.family, req.fps) == ("hunyuan_video", 24.0)
    prepare_job(req)
    cfg = load_config(tmp_path / "job" / "edit.toml")
    assert (cfg.model.type, cfg.data.fps, cfg.data.width, cfg.data.height) == ("hunyuan_video", 24.0, 624, 368)
    wan = PrepareRequest(video=tmp_path / "clip.mp4", edited_frame=tmp_path / "edited.png", out=tmp_path / "w",
                         overrides=["model.type='wan'"])
    assert (wan.family, wan.fps) == ("wan", 16.0)


def test_plans_use_the_family_size_when_the_config_leaves_it_automatic():
    from engine.plan.model import job_size, resolve_model

    hunyuan = load_config(None, ["model.type='hunyuan_video'", "data.frames=33"], check_paths=False)
    assert job_size(hunyuan, resolve_model(hunyuan, "hunyuanvideo-i2v")) == (33, 368, 624)
    wan = load_config(None, check_paths=False)
    assert job_size(wan, resolve_model(wan, "wan2.1-i2v-14b-480p"))[1:] == (480, 832)

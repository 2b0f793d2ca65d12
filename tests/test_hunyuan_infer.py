"""HunyuanVideo-I2V: infer.py against diffusers' HunyuanVideoImageToVideoPipeline, and the conditioning it packs.

Tolerance: 1e-5 (max abs, frames in [0, 1]) on the frames the pipeline returns. infer.py runs the pipeline's own
prompt encoding, image latent (frame 0 encoded alone), noise draw, start latents, sigmas, transformer calls and
decoder in the same order, so the frames come out bit-identical here; the margin only allows for BLAS kernels
that sum in another order on other CPUs. A wrong mask channel, channel order, image latent (e.g. frame 0 of a
whole-video encoding: 0.07 off), missed negative pass or other sigmas moves frames by 1e-2 or more. diffusers'
pipeline drops its first four decoded frames; infer.py keeps all T, so its frames 4.. are compared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import write_square_job

from config.loader import load_config
from datasets.job import load_job
from models.hunyuan_video.spec import NEGATIVE_PROMPT as HUNYUAN_NEGATIVE_PROMPT

T, H, W = 9, 32, 48
STEPS, SEED = 3, 7
ATOL = 1e-5
PROMPT = "p3rs0n, a blue square"


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_hunyuan_diffusers) -> Path:
    return write_square_job(tmp_path_factory.mktemp("hunyuan-job"), tiny_hunyuan_diffusers, t=T, w=W, h=H,
                            steps=STEPS, step=2, model_type="hunyuan_video")


@pytest.fixture(scope="module")
def pipe(tiny_hunyuan_diffusers):
    from diffusers import HunyuanVideoImageToVideoPipeline

    return HunyuanVideoImageToVideoPipeline.from_pretrained(tiny_hunyuan_diffusers, dtype=torch.float32)


def template_for(pipe) -> dict:
    """The pipeline's template with this tokenizer's positions (its defaults are the real Llama-3's numbers)."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_image2video import DEFAULT_PROMPT_TEMPLATE

    prefix = DEFAULT_PROMPT_TEMPLATE["template"].split("{}")[0]
    ids = pipe.tokenizer(prefix).input_ids
    start = ids.index(pipe.text_encoder.config.image_token_index)
    vision = pipe.text_encoder.config.vision_config
    n = (vision.image_size // vision.patch_size) ** 2
    return {**DEFAULT_PROMPT_TEMPLATE, "crop_start": len(ids), "image_emb_start": start,
            "image_emb_end": start + n, "image_emb_len": n}


def pipeline_frames(pipe, job: Path, guidance: float) -> np.ndarray:
    image = Image.fromarray(load_job(load_config(job / "edit.toml")).edited_first)
    out = pipe(image=image, prompt=PROMPT, negative_prompt=HUNYUAN_NEGATIVE_PROMPT, height=H, width=W, num_frames=T,
               num_inference_steps=STEPS, true_cfg_scale=guidance, guidance_scale=1.0,
               prompt_template=template_for(pipe), generator=torch.Generator().manual_seed(SEED), output_type="np")
    return out.frames[0]


def generate(job: Path, *overrides: str):
    from engine.infer.generate import build_request, generate

    cfg = load_config(job / "edit.toml", [f"seed={SEED}", *overrides])
    return generate(cfg, build_request(cfg, []), progress=False)


def as_unit(gen) -> np.ndarray:
    return ((gen.video + 1) / 2).permute(1, 2, 3, 0).numpy()


def test_i2v_without_lora_equals_the_diffusers_pipeline(job, pipe):
    for guidance in (5.0, 1.0):  # true CFG with the negative prompt (black image), and the single pass
        ours = generate(job, "inference.mask_preset='i2v'", f"inference.guidance={guidance}")
        assert ours.video.shape == (3, T, H, W)
        ref = pipeline_frames(pipe, job, guidance)
        assert ref.shape == (T - 4, H, W, 3)
        diff = np.abs(as_unit(ours)[4:] - ref).max()
        assert diff <= ATOL, f"guidance {guidance}: max abs difference {diff}"


def test_template_positions_come_from_the_tokenizer(tiny_hunyuan_diffusers):
    from models.hunyuan_video.adapter import HunyuanVideoAdapter

    adapter = HunyuanVideoAdapter(tiny_hunyuan_diffusers, dtype=torch.float32)
    adapter.load_text_encoder()
    tpl = adapter.prompt_template()
    tok = adapter.components["tokenizer"]
    ids = tok(tpl["template"].format("a red car")).input_ids
    # the prefix is cropped exactly up to the user's text; the image sits after <|start_header_id|>system...\n\n
    assert tok.decode(ids[tpl["crop_start"]:]).startswith("a red car")
    assert tok.convert_ids_to_tokens(ids[tpl["image_emb_start"]]) == "<image>"
    assert tpl["image_emb_len"] == 4 and tpl["crop_start"] != 103  # tiny numbers, not the real model's


def test_loraedit_packs_mask_and_zeroes_generated_condition_latents(job):
    from datasets.job import inference_sample_for
    from engine.encode.cache import EncodeCache
    from engine.encode.samples import encode_with_negative
    from models.registry import make_adapter

    cfg = load_config(job / "edit.toml")
    sample = inference_sample_for(cfg, load_job(cfg, edited=True), "loraedit")
    adapter = make_adapter(cfg.model, "cpu")
    enc, neg = encode_with_negative(adapter, sample, EncodeCache(job / "cache"), negative_prompt="bad")
    cond = enc.cond
    assert cond.shape == (17, (T - 1) // 4 + 1, H // 8, W // 8)
    y, mask = cond[:16], cond[16:]
    assert torch.equal(mask[0], adapter.pack_mask(sample.m_condition)[0])
    assert mask[0, 0].min() == 1  # frame 0 kept
    assert 0 < mask[0, 1:].mean() < 1  # later frames: kept outside the edit region only
    assert torch.all(y[:, mask[0] == 0] == 0) and torch.all(y[:, mask[0] == 1].abs().sum(0) > 0)
    # the text encoder saw the image: embedding, mask and pooled output per prompt, the negative with a black image
    assert enc.text_mask is not None and enc.pooled is not None and enc.text.shape[0] == enc.text_mask.shape[0]
    assert neg.text.shape[-1] == enc.text.shape[-1] and not torch.equal(neg.pooled, enc.conditioning().pooled)


def test_token_replace_variant_is_refused_with_the_reason(tiny_hunyuan_factory):
    from models.hunyuan_video.adapter import HunyuanVideoAdapter
    from models.wan.loading import WeightsError

    folder = tiny_hunyuan_factory("diffusers", variant="token_replace")
    with pytest.raises(WeightsError, match="16-channel 'token_replace'.*no mask input channel"):
        HunyuanVideoAdapter(folder, dtype=torch.float32)

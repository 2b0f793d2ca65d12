"""HunyuanVideo-I2V weight layouts: diffusers folder, original release folder and single-file override load to the
same model (same transformer output, same VAE and text encodings); the token_replace variant is refused."""

from __future__ import annotations

import pytest
import torch

from models.hunyuan_video.adapter import HunyuanVideoAdapter
from models.wan.loading import WeightsError


@pytest.fixture(scope="module")
def adapters(tiny_hunyuan_factory, tiny_hunyuan_diffusers) -> dict[str, HunyuanVideoAdapter]:
    return {
        "diffusers": HunyuanVideoAdapter(tiny_hunyuan_diffusers, dtype=torch.float32),
        "original": HunyuanVideoAdapter(tiny_hunyuan_factory("original"), dtype=torch.float32),
        "single-file": HunyuanVideoAdapter(tiny_hunyuan_diffusers, tiny_hunyuan_factory("single-file", dtype="fp32"),
                                           dtype=torch.float32),
        "single-file-bf16": HunyuanVideoAdapter(tiny_hunyuan_diffusers, tiny_hunyuan_factory("single-file"),
                                                dtype=torch.float32),
        "single-file-fp8": HunyuanVideoAdapter(tiny_hunyuan_diffusers, tiny_hunyuan_factory("single-file", dtype="fp8"),
                                               dtype=torch.float32),
        "float8-storage": HunyuanVideoAdapter(tiny_hunyuan_diffusers, dtype=torch.float32,
                                              transformer_dtype=torch.float8_e4m3fn),
    }


def model_inputs():
    from models.base import Conditioning

    g = torch.Generator().manual_seed(1)
    mask = torch.ones(1, 10)
    mask[0, 6:] = 0
    c = Conditioning(None, torch.randn(1, 10, 32, generator=g), None, mask, torch.randn(1, 24, generator=g))
    return torch.randn(1, 33, 2, 4, 6, generator=g), torch.tensor([700.0]), c


def test_layouts_give_the_same_transformer_output(adapters):
    x, t, c = model_inputs()
    ref = adapters["diffusers"].predict(x, t, c)
    # Equal weights; the outputs differ only by float rounding (7e-7 measured, outputs ~3): BLAS sums in another
    # order for the memory-mapped, unaligned tensors of a safetensors checkpoint than for freshly allocated ones.
    for name in ("original", "single-file"):
        torch.testing.assert_close(adapters[name].predict(x, t, c), ref, rtol=0, atol=1e-5, msg=name)
    # rounded weights (a bf16 or fp8 file, float8 storage of the diffusers weights): same model, rounding-sized
    # differences only (relative to the output scale, measured: bf16 file 4e-3, fp8 file 5e-2, fp8 storage 3e-2)
    for name, limit in (("single-file-bf16", 0.01), ("single-file-fp8", 0.1), ("float8-storage", 0.1)):
        diff = (adapters[name].predict(x, t, c) - ref).abs().max()
        assert 0 < diff < limit * ref.abs().max(), (name, diff)


def test_original_layout_encoders_equal_the_diffusers_ones(adapters):
    video = torch.rand(1, 3, 5, 32, 48) * 2 - 1
    a, b = adapters["diffusers"], adapters["original"]
    torch.testing.assert_close(b.encode_video(video), a.encode_video(video), rtol=0, atol=1e-5)
    ea, eb = a.encode_text("a red car", video[0, :, 0]), b.encode_text("a red car", video[0, :, 0])
    assert ea.keys() == eb.keys() == {"x", "mask", "pooled"}
    for k in ea:
        torch.testing.assert_close(eb[k], ea[k], rtol=0, atol=1e-5)
    assert a.base_model_name() == b.base_model_name() == "hunyuanvideo-i2v-33ch-custom-32"


def test_token_replace_is_refused_in_every_layout(tiny_hunyuan_factory, tiny_hunyuan_diffusers):
    single = tiny_hunyuan_factory("single-file", variant="token_replace")
    with pytest.raises(WeightsError, match="token_replace.*no mask input channel"):
        HunyuanVideoAdapter(tiny_hunyuan_diffusers, single, dtype=torch.float32)
    original = HunyuanVideoAdapter(tiny_hunyuan_factory("original", variant="token_replace"), dtype=torch.float32)
    with pytest.raises(WeightsError, match="token_replace.*no mask input channel"):
        original.load_transformer()


def test_incomplete_folder_names_what_is_missing(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "transformer").mkdir()
    with pytest.raises(WeightsError, match=r"missing: .*vae.*text_encoder"):
        HunyuanVideoAdapter(tmp_path, dtype=torch.float32)

"""Encode once: samples -> cached latents and embeddings, one encoder resident at a time.

Each encoder runs only on the inputs the cache does not already hold, is loaded only when there is
such an input, and is unloaded before the next one loads; the transformer is never loaded here. So
training memory is transformer + LoRA + activations, and a re-run with unchanged inputs loads no
encoder at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from datasets.cache import EncodeCache, fingerprint
from datasets.samples import Sample
from models.base import Conditioning, ModelAdapter


@dataclass
class EncodedSample:
    """What the training loop and the sampler need of one sample, all on CPU."""

    name: str
    kind: str
    latents: torch.Tensor | None  # [C, t, h, w] normalized target latents (None for inference)
    cond: torch.Tensor  # [C', t, h, w] the family's extra input channels (Wan: packed mask + y)
    generate: torch.Tensor  # [1, t, h, w] 1 where a latent cell is (partly) generated
    text: torch.Tensor  # [L, D]
    image: torch.Tensor | None  # [N, D] or None

    def conditioning(self) -> Conditioning:
        return Conditioning(self.cond[None], self.text[None], None if self.image is None else self.image[None])


def _phase(adapter: ModelAdapter, cache: EncodeCache, kind: str, items: dict[str, object], load: str,
           fn: Callable[[object], torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run `fn` on the items the cache misses, with encoder `load` resident only while needed."""
    out: dict[str, torch.Tensor] = {}
    missing = [k for k in items if not cache.path(kind, k).exists()]
    try:
        for key, item in items.items():
            out[key] = cache.get(kind, key, lambda item=item: {"x": fn(item)})["x"]
    finally:
        if missing:
            adapter.unload(load)
    return out


def encode_samples(
    adapter: ModelAdapter, samples: list[Sample], cache: EncodeCache, latent_mask: str = "min",
    extra_prompts: Sequence[str] = (),
) -> tuple[list[EncodedSample], dict[str, torch.Tensor]]:
    """Encode every sample (and `extra_prompts`, e.g. the negative prompt) through the cache.

    Returns the encoded samples and a dict prompt -> text embedding for the extra prompts.
    """
    # Each entry depends on its input, the weights of the encoder that made it and the dtype it ran in.
    vae = ("vae", adapter.weights_identity("vae"), str(adapter.vae_dtype))
    text = ("text", adapter.weights_identity("text_encoder"), str(adapter.dtype))
    image = ("image", adapter.weights_identity("image_encoder"))

    videos: dict[str, torch.Tensor] = {}
    keys: list[dict[str, str]] = []
    for s in samples:
        k = {"cond": fingerprint(*vae, s.v_condition)}
        videos[k["cond"]] = s.v_condition
        if s.v_target is not None:
            k["target"] = fingerprint(*vae, s.v_target)
            videos[k["target"]] = s.v_target
        k["text"] = fingerprint(*text, s.prompt)
        k["image"] = fingerprint(*image, s.clip_image)
        keys.append(k)
    prompts = {k["text"]: s.prompt for s, k in zip(samples, keys)}
    extra_keys = {p: fingerprint(*text, p) for p in extra_prompts}
    prompts.update({v: p for p, v in extra_keys.items()})
    images = {k["image"]: s.clip_image for s, k in zip(samples, keys)}

    latents = _phase(adapter, cache, "latent", videos, "vae", lambda v: adapter.encode_video(v[None])[0])
    texts = _phase(adapter, cache, "text", prompts, "text_encoder", lambda p: adapter.encode_prompt([p])[0])
    feats = _phase(adapter, cache, "image", images, "image_encoder", lambda im: _image_or_empty(adapter, im))

    encoded = []
    for s, k in zip(samples, keys):
        packed = adapter.pack_mask(s.m_condition, latent_mask)
        cond = adapter.condition_channels(packed[None], latents[k["cond"]][None])[0]
        image = feats.get(k["image"])
        encoded.append(EncodedSample(
            name=s.name, kind=s.kind,
            latents=latents[k["target"]] if "target" in k else None,
            cond=cond,
            generate=(packed.amin(dim=0, keepdim=True) < 0.5).float(),
            text=texts[k["text"]],
            image=None if image is None or image.numel() == 0 else image,
        ))
    return encoded, {p: texts[v] for p, v in extra_keys.items()}


def _image_or_empty(adapter: ModelAdapter, image: torch.Tensor) -> torch.Tensor:
    """Image features, or an empty tensor (cacheable) for families without an image encoder."""
    feats = adapter.encode_image(image[None])
    return torch.empty(0) if feats is None else feats[0]

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

from config.progress import Progress, tracked
from datasets.samples import Sample
from engine.encode.cache import EncodeCache, expect_shape, fingerprint
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
    text_mask: torch.Tensor | None = None  # [L] (HunyuanVideo), None for Wan
    pooled: torch.Tensor | None = None  # [D] (HunyuanVideo), None for Wan

    def conditioning(self) -> Conditioning:
        def batch(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[None]

        return Conditioning(self.cond[None], self.text[None], batch(self.image), batch(self.text_mask),
                            batch(self.pooled))


def _text_conditioning(entry: dict[str, torch.Tensor], like: Conditioning) -> Conditioning:
    """`like` with the text parts of a cached text entry (the negative prompt's pass)."""
    def batch(name: str) -> torch.Tensor | None:
        return entry[name][None] if name in entry else None

    return like.with_text(Conditioning(None, entry["x"][None], None, batch("mask"), batch("pooled")))


def _phase(adapter: ModelAdapter, cache: EncodeCache, kind: str, items: dict[str, object], load: str,
           fn: Callable[[object], dict[str, torch.Tensor]], progress: Progress | None = None,
           check: Callable[[object], Callable[[dict], str | None]] | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Run `fn` on the items the cache misses (or holds a bad entry of: `check(item)` checks an entry), with encoder
    `load` resident only while needed."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    missing = [k for k in items if not cache.path(kind, k).exists()]
    ran = []

    def compute(item: object) -> dict[str, torch.Tensor]:
        ran.append(True)
        return fn(item)

    try:
        for key, item in tracked(items.items(), progress if missing else None, f"encode {kind}", len(items), "item"):
            out[key] = cache.get(kind, key, lambda item=item: compute(item), check(item) if check else None)
    finally:
        if ran:
            adapter.unload(load)
    return out


def encode_samples(
    adapter: ModelAdapter, samples: list[Sample], cache: EncodeCache, latent_mask: str = "min",
    extra_prompts: Sequence[str] = (), progress: Progress | None = None,
) -> tuple[list[EncodedSample], dict[str, torch.Tensor]]:
    """Encode every sample (and `extra_prompts`, e.g. the negative prompt) through the cache; `progress` hears of
    each encoder's items (phases "encode latent", "encode text", "encode image"; only when one has to run).

    Returns the encoded samples and a dict prompt -> text embedding for the extra prompts.
    """
    encoded, extra = _encode(adapter, samples, cache, latent_mask, extra_prompts, progress)
    return encoded, {p: e["x"] for p, e in extra.items()}


def encode_with_negative(adapter: ModelAdapter, sample: Sample, cache: EncodeCache, latent_mask: str = "min",
                         negative_prompt: str | None = None, progress: Progress | None = None
                         ) -> tuple[EncodedSample, Conditioning | None]:
    """One inference sample and, when given, the negative prompt's full conditioning (every text tensor the
    family has; for families whose text encoder sees the image, encoded with `adapter.negative_image`)."""
    (encoded,), extra = _encode(adapter, [sample], cache, latent_mask,
                                [negative_prompt] if negative_prompt is not None else [], progress)
    if negative_prompt is None:
        return encoded, None
    return encoded, _text_conditioning(extra[negative_prompt], encoded.conditioning())


def _encode(
    adapter: ModelAdapter, samples: list[Sample], cache: EncodeCache, latent_mask: str, extra_prompts: Sequence[str],
    progress: Progress | None = None,
) -> tuple[list[EncodedSample], dict[str, dict[str, torch.Tensor]]]:
    # Each entry depends on its input, the weights of the encoder that made it and the dtype it ran in.
    vae = ("vae", adapter.weights_identity("vae"), str(adapter.vae_dtype))
    text = ("text", adapter.weights_identity("text_encoder"), str(adapter.dtype))
    image = ("image", adapter.weights_identity("image_encoder"))
    sees_image = adapter.text_sees_image

    def text_key(prompt: str, img: torch.Tensor | None) -> str:
        # Wan's keys stay as they were (prompt only); a text encoder that sees the image keys on it too.
        return fingerprint(*text, prompt, img) if sees_image else fingerprint(*text, prompt)

    # (video, is it a condition video): families that encode condition videos their own way key them apart.
    videos: dict[str, tuple[torch.Tensor, bool]] = {}
    keys: list[dict[str, str]] = []
    prompts: dict[str, tuple[str, torch.Tensor | None]] = {}
    apart = adapter.separate_condition_encoding
    for s in samples:
        k = {"cond": fingerprint(*vae, "condition", s.v_condition) if apart else fingerprint(*vae, s.v_condition)}
        videos[k["cond"]] = (s.v_condition, apart)
        if s.v_target is not None:
            k["target"] = fingerprint(*vae, s.v_target)
            videos[k["target"]] = (s.v_target, False)
        k["text"] = text_key(s.prompt, s.clip_image)
        prompts[k["text"]] = (s.prompt, s.clip_image if sees_image else None)
        k["image"] = fingerprint(*image, s.clip_image)
        keys.append(k)
    negative_image = adapter.negative_image(samples[0].clip_image) if samples and sees_image else None
    extra_keys = {p: text_key(p, negative_image) for p in extra_prompts}
    prompts.update({v: (p, negative_image) for p, v in extra_keys.items()})
    images = {k["image"]: s.clip_image for s, k in zip(samples, keys)}

    def encode(item: tuple[torch.Tensor, bool]) -> dict[str, torch.Tensor]:
        video, condition = item
        fn = adapter.encode_condition_video if condition else adapter.encode_video
        return {"x": fn(video[None])[0]}

    def latent_shape(item: tuple[torch.Tensor, bool]) -> Callable[[dict], str | None]:
        _, frames, height, width = item[0].shape
        tc, sc = adapter.temporal_compression, adapter.spatial_compression
        return expect_shape("x", (None, (frames - 1) // tc + 1, height // sc, width // sc))

    latents = _phase(adapter, cache, "latent", videos, "vae", encode, progress, latent_shape)
    texts = _phase(adapter, cache, "text", prompts, "text_encoder", lambda p: adapter.encode_text(*p), progress,
                   lambda _: expect_shape("x", (None, None)))
    feats = _phase(adapter, cache, "image", images, "image_encoder", lambda im: {"x": _image_or_empty(adapter, im)},
                   progress)

    encoded = []
    for s, k in zip(samples, keys):
        packed = adapter.pack_mask(s.m_condition, latent_mask)
        cond = adapter.condition_channels(packed[None], latents[k["cond"]]["x"][None])[0]
        feat = feats[k["image"]]["x"]
        entry = texts[k["text"]]
        encoded.append(EncodedSample(
            name=s.name, kind=s.kind,
            latents=latents[k["target"]]["x"] if "target" in k else None,
            cond=cond,
            generate=(packed.amin(dim=0, keepdim=True) < 0.5).float(),
            text=entry["x"],
            image=None if feat.numel() == 0 else feat,
            text_mask=entry.get("mask"),
            pooled=entry.get("pooled"),
        ))
    return encoded, {p: texts[v] for p, v in extra_keys.items()}


def _image_or_empty(adapter: ModelAdapter, image: torch.Tensor) -> torch.Tensor:
    """Image features, or an empty tensor (cacheable) for families without an image encoder."""
    feats = adapter.encode_image(image[None])
    return torch.empty(0) if feats is None else feats[0]

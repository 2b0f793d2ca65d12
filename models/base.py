"""The adapter contract: what train.py and infer.py need from a base model family.

One adapter per family (models/<family>/adapter.py, named by its registry record). Both entry points use the
same adapter methods, so there is exactly one code path from a sample (V_condition, M_condition, V_target,
prompt) to the transformer input.

Components load one at a time (`load_vae`, `load_text_encoder`, ...) and `unload` frees them, so the
encoders can be run, cached and dropped before the transformer is loaded. The base class opens the weights
(`open_weights`, the family's locator) and loads transformers (`build_transformer`, then the dtypes, frozen,
on the device, with the family's LoRA file layout bound to it: models.lora).

Experts: a family may have several transformers chosen by the sampler's timestep (`experts()`, each serving a
range of timesteps; `expert_for(t)`). Loading, the layer list, `predict`, LoRA, block swap, planning and
sampling take an expert name; `None` means the only expert of a one-expert family (Wan2.1, HunyuanVideo), so
code written for one expert reads as before.

The transformer is also exposed as a list of layers whose forward takes one tuple and returns one
tuple (`layers()`); that list is what pipeline parallelism, activation checkpointing and block offload
work on, for every family alike. The repeated transformer blocks in it are `BlockLayer`s, whose `.block`
is the model's own block module: block offload hooks that module, so it acts on `predict` too.

Memory options: `enable_checkpointing()` (the transformer's own gradient checkpointing, for `predict`),
`checkpoint_layers()` (per-layer checkpointing of the layer list), float8 storage (`make_adapter` with
`transformer_dtype = "float8"`), and block offload (`models.offload.enable_block_swap`).
"""

from __future__ import annotations

import gc
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.utils.checkpoint
from safetensors import SafetensorError
from torch import nn

from models.family import Expert, FamilySpec
from models.registry import family as family_spec


@dataclass
class Conditioning:
    """Everything the transformer needs besides the noisy latent and the timestep, for a batch."""

    cond: torch.Tensor  # family-specific extra input channels (Wan: packed mask + condition latents)
    text: torch.Tensor  # text embeddings, padded as the model expects
    image: torch.Tensor | None = None  # image-encoder features (Wan2.1 CLIP), None if the family has none
    # Optional, for families whose text encoders give more than one tensor (HunyuanVideo); None for Wan.
    text_mask: torch.Tensor | None = None  # [B, L] 1 = real token, 0 = padding
    pooled: torch.Tensor | None = None  # [B, D] pooled text embedding (HunyuanVideo: CLIP-L's pooler output)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Conditioning:
        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype or t.dtype)

        return Conditioning(mv(self.cond), mv(self.text), mv(self.image), mv(self.text_mask), mv(self.pooled))

    def with_text(self, other: Conditioning) -> Conditioning:
        """This conditioning with `other`'s text parts (embedding, mask, pooled): the negative-prompt pass."""
        return Conditioning(self.cond, other.text, self.image, other.text_mask, other.pooled)


class ModelAdapter(ABC):
    """A base model family behind one small interface."""

    #: family name as written in the config's `model.type` (its registry record: `spec`)
    family: str = ""
    #: VAE compression (time, space) and latent channels, read from the loaded configs
    temporal_compression: int = 4
    spatial_compression: int = 8
    #: dtype the VAE runs in (part of the latent cache key)
    vae_dtype: torch.dtype = torch.float32

    def __init__(
        self,
        ckpt_path: str | Path,
        transformer_path: str | Path | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.bfloat16,
        transformer_dtype: torch.dtype | None = None,
        vae_dtype: torch.dtype = torch.float32,
    ) -> None:
        self._start(device, dtype)
        self.weights = self.open_weights(ckpt_path, transformer_path)
        self.transformer_dtype = transformer_dtype or dtype  # storage; `dtype` is the compute dtype
        self.vae_dtype = vae_dtype
        # Known without loading the VAE, so packing masks of cached samples needs no encoder.
        self.temporal_compression, self.spatial_compression = self.weights.vae_scale_factors()

    def _start(self, device: torch.device | str, dtype: torch.dtype) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.components: dict[str, object] = {}

    @classmethod
    def without_weights(cls, transformer: nn.Module, dtype: torch.dtype, compression: tuple[int, int],
                        device: torch.device | str = "meta") -> ModelAdapter:
        """The adapter around a transformer built elsewhere (the planner's, on the meta device), for every expert
        (their architectures are the same); no weight folder is opened."""
        adapter = cls.__new__(cls)
        adapter._start(device, dtype)
        adapter.weights = None
        adapter.transformer_dtype = next(p.dtype for p in transformer.parameters())
        adapter.temporal_compression, adapter.spatial_compression = compression
        for expert in adapter.experts():
            adapter.components[expert.name] = transformer
        return adapter

    @property
    def spec(self) -> FamilySpec:
        """The family's registry record (models.registry)."""
        return family_spec(self.family)

    @abstractmethod
    def open_weights(self, ckpt_path: str | Path, transformer_path: str | Path | None) -> Any:
        """The family's weight locator for model.ckpt_path (and the model.transformer_path override): it checks
        the folder and loads each component (`vae_scale_factors()`, `identity(component)`, ...)."""

    # -- experts ------------------------------------------------------------------------------------
    def experts(self) -> tuple[Expert, ...]:
        """The family's transformers, each with the sampler timesteps it serves (one for most families)."""
        return self.spec.experts

    def expert(self, name: str | None = None) -> Expert:
        """The expert called `name` (None: the only one)."""
        return self.spec.expert(name)

    def expert_for(self, timestep: float | torch.Tensor) -> Expert:
        """The expert serving a timestep on the sampler's 0..1000 scale (a tensor: its first element)."""
        t = float(timestep.reshape(-1)[0]) if isinstance(timestep, torch.Tensor) else float(timestep)
        return self.spec.expert_for(t)

    def _expert_name(self, expert: str | None, timestep: torch.Tensor | None = None) -> str:
        """`expert`, else the one serving `timestep` (several experts), else the only one."""
        if expert is not None:
            return self.expert(expert).name
        if timestep is not None and len(self.experts()) > 1:
            return self.expert_for(timestep).name
        return self.expert(None).name

    # -- components -------------------------------------------------------------------------------
    @abstractmethod
    def load_vae(self) -> nn.Module: ...

    @abstractmethod
    def load_text_encoder(self) -> nn.Module: ...

    @abstractmethod
    def load_image_encoder(self) -> nn.Module | None: ...

    @abstractmethod
    def build_transformer(self, expert: Expert) -> nn.Module:
        """The expert's transformer read from the weights, in `self.dtype` (its float32-kept modules in float32)."""

    def load_transformer(self, device: torch.device | str | None = None, expert: str | None = None) -> nn.Module:
        """The frozen transformer of `expert` (None: the only one), loaded once, on `device` (default: the
        adapter's device), stored in `transformer_dtype`, with the family's LoRA file layout bound to it.

        Load it on "cpu" when blocks will be offloaded: `models.offload.enable_block_swap` then moves all but
        the offloaded blocks to the compute device, so the whole model never has to fit there.
        """
        chosen = self.expert(expert)

        def load() -> nn.Module:
            from models.lora import LoraFiles, bind

            model = self.build_transformer(chosen)
            if self.transformer_dtype != self.dtype:
                # float8 storage (typically): each linear stored in transformer_dtype, cast to dtype for its
                # forward; applied before LoRA is added, so LoRA weights are never cast.
                model.enable_layerwise_casting(storage_dtype=self.transformer_dtype, compute_dtype=self.dtype)
            model.requires_grad_(False)
            bind(model, LoraFiles(self.spec.formats(), self.base_model_name(), chosen))
            return model.to(device or self.device)

        return self._get(chosen.name, load)

    def use_expert(self, expert: str | None) -> nn.Module:
        """The expert's transformer, on the compute device; the family's other loaded experts wait in host RAM
        (one large model on the device at a time). A one-expert family: `load_transformer()`."""
        name = self._expert_name(expert)
        if len(self.experts()) == 1 or self.device.type == "cpu":
            return self.load_transformer(expert=name)
        for other in self.experts():
            model = self.components.get(other.name)
            if other.name != name and isinstance(model, nn.Module):
                model.to("cpu")
        return self.load_transformer(expert=name).to(self.device)

    def _get(self, name: str, loader) -> object:
        """Component `name`, loaded by `loader()` on first use."""
        if name not in self.components:
            try:
                self.components[name] = loader()
            except (SafetensorError, OSError) as e:
                # diffusers and transformers report a torn weights file with a traceback that (transformers)
                # does not name it: find the file, and say so in one line
                from models.loading import WeightsError, damaged_safetensors

                roots = [getattr(self.weights, "root", None), getattr(self.weights, "transformer_file", None)]
                bad = damaged_safetensors(Path(r) for r in roots if r)
                if bad is None:
                    raise
                raise WeightsError(f"{bad[0]}: truncated or damaged weights file ({bad[1]}); download or copy "
                                   "it again") from e
        return self.components[name]

    def unload(self, *names: str) -> None:
        """Drop loaded components (all when no name is given) and return their memory."""
        for name in names or list(self.components):
            self.components.pop(name, None)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def unload_transformers(self) -> None:
        """Drop every expert's transformer."""
        self.unload(*(e.name for e in self.experts()))

    def weights_identity(self, component: str | None = None) -> str:
        """A string that changes when the weights of `component` ("vae", "text_encoder", "image_encoder",
        "transformer"; all when None) change: cache keys depend only on the encoder that made the entry."""
        return self.weights.identity(component)

    @abstractmethod
    def base_model_name(self) -> str:
        """The base model as LoRA metadata names it (e.g. "wan2.1-i2v-14b"), read from the configs."""

    def enable_checkpointing(self, expert: str | None = None) -> None:
        """Gradient checkpointing of the transformer's blocks inside `predict` (the model's own mechanism).

        The layer list is checkpointed per layer instead (`checkpoint_layers`, or DeepSpeed's
        `activation_checkpoint_interval`); use one of the two per run, not both.
        """
        self.load_transformer(expert=expert).enable_gradient_checkpointing()

    # -- encoders ---------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] in [-1, 1] -> normalized latents (VAE posterior mode)."""
        vae = self.load_vae()
        if (video.shape[2] - 1) % self.temporal_compression:
            raise ValueError(f"frame count {video.shape[2]} is not 4k+1; the VAE would drop frames silently")
        z = vae.encode(video.to(self.device, vae.dtype)).latent_dist.mode().float()
        return self.normalize_latents(z)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalized latents -> [B, 3, T, H, W] in [-1, 1]."""
        vae = self.load_vae()
        z = self.denormalize_latents(latents.float()).to(self.device, vae.dtype)
        return vae.decode(z, return_dict=False)[0].float().clamp(-1, 1)

    @abstractmethod
    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """The VAE's raw float32 latents -> the normalized latents the transformer works on."""

    @abstractmethod
    def denormalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The inverse of `normalize_latents` (float32)."""

    @abstractmethod
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> text embeddings padded as the transformer expects."""

    @abstractmethod
    def encode_image(self, images: torch.Tensor) -> torch.Tensor | None:
        """[B, 3, H, W] in [-1, 1] -> image-encoder features, or None for families without one."""

    #: True when condition videos are encoded differently from target videos (`encode_condition_video`).
    separate_condition_encoding: bool = False

    def encode_condition_video(self, video: torch.Tensor) -> torch.Tensor:
        """V_condition [B, 3, T, H, W] -> its latents; default: `encode_video`."""
        return self.encode_video(video)

    #: True when the text encoder also sees the conditioning image (HunyuanVideo's LLaVA): text cache entries then
    #: depend on the image too, and the negative prompt is encoded with `negative_image`.
    text_sees_image: bool = False

    def encode_text(self, prompt: str, image: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One prompt (and, for `text_sees_image` families, its [3, H, W] image) -> the cacheable text tensors:
        "x" = embedding [L, D]; optionally "mask" [L] and "pooled" [D]. Default: `encode_prompt` alone."""
        del image
        return {"x": self.encode_prompt([prompt])[0]}

    def negative_image(self, image: torch.Tensor) -> torch.Tensor | None:
        """The image the negative prompt is encoded with (None: the text encoder sees no image)."""
        del image
        return None

    def initial_latents(self, noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The sampler's starting latents from Gaussian noise and the extra input channels (default: the noise)."""
        del cond
        return noise

    def scheduler_sigmas(self, steps: int) -> list[float] | None:
        """Sigmas the flow-matching Euler scheduler is set to (None: its own spacing for `steps`)."""
        del steps
        return None

    # -- conditioning and the transformer ---------------------------------------------------------
    @abstractmethod
    def pack_mask(self, m_condition: torch.Tensor, mode: str = "min") -> torch.Tensor:
        """Pixel keep-mask [1, T, H, W] (1 = preserve) -> the family's latent mask channels."""

    @abstractmethod
    def condition_channels(self, packed_mask: torch.Tensor, cond_latents: torch.Tensor) -> torch.Tensor:
        """Packed mask [B, ...] and condition latents [B, C, t, h, w] -> the extra input channels."""

    @abstractmethod
    def transformer_input(self, noisy: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Noisy latents and the extra channels -> the transformer's input tensor."""

    def predict(self, model_input: torch.Tensor, timestep: torch.Tensor, c: Conditioning,
                expert: str | None = None) -> torch.Tensor:
        """Velocity prediction; `timestep` in [0, 1000] as the schedulers use it. `expert`: which transformer
        (None: the one serving `timestep`). The transformer's own forward, with `model_kwargs`."""
        model = self.load_transformer(expert=self._expert_name(expert, timestep))
        dev, dtype = self.device, self.dtype
        return model(hidden_states=model_input.to(dev, dtype), timestep=timestep.to(dev),
                     encoder_hidden_states=c.text.to(dev, dtype), return_dict=False,
                     **self.model_kwargs(model_input, c))[0]

    @abstractmethod
    def model_kwargs(self, model_input: torch.Tensor, c: Conditioning) -> dict:
        """The transformer's forward arguments besides the input, timestep and text embedding, on the device."""

    @abstractmethod
    def layers(self, expert: str | None = None) -> list[nn.Module]:
        """The expert's transformer as tuple-in/tuple-out layers: run in sequence they equal `predict`."""

    @abstractmethod
    def first_layer_input(self, model_input: torch.Tensor, timestep: torch.Tensor, c: Conditioning) -> tuple:
        """The tuple the first of `layers()` takes."""

    @abstractmethod
    def lora_target_modules(self, train_image_kv: bool = False) -> list[str]:
        """Names (regex or suffixes for peft) of the linears LoRA trains."""


class BlockLayer(nn.Module):
    """A repeated transformer block as a tuple-in/tuple-out layer; `block` is the model's own module.

    Subclasses implement `run` and name in `passthrough` the tuple positions a block returns unchanged (the
    per-step constants: text, modulation, rotary tables, ...). With `constants_without_grad` set (pipeline
    runs, see engine.train.trainer.pipeline_layers) the block runs on detached constants: DeepSpeed makes every
    floating tensor passed between stages require grad, and each block would otherwise compute those
    constants' gradients (nothing upstream trains) and keep the activations that needs. A zero term still
    connects them, because DeepSpeed sends a gradient back for every floating input of a stage.
    """

    passthrough: tuple[int, ...] = ()

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.constants_without_grad = False

    def run(self, inputs: tuple) -> tuple:
        """The block on one layer tuple; every family's block layer defines it."""
        raise NotImplementedError(f"{type(self).__name__} must define run(inputs)")

    def forward(self, inputs: tuple) -> tuple:
        if not (self.constants_without_grad and torch.is_grad_enabled()):
            return self.run(inputs)
        const = [i for i in self.passthrough if inputs[i].is_floating_point() and inputs[i].requires_grad]
        out = list(self.run(tuple(t.detach() if i in const else t for i, t in enumerate(inputs))))
        for i in const:  # the originals go on (same values), tied to the hidden state with zero weight
            out[0] = out[0] + inputs[i].reshape(-1)[0].to(out[0].dtype) * 0
            out[i] = inputs[i]
        return tuple(out)


class CheckpointedLayer(nn.Module):
    """Recompute a layer's activations in backward (non-reentrant checkpointing), tuple in, tuple out."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, inputs: tuple) -> tuple:
        if not torch.is_grad_enabled():
            return self.layer(inputs)
        return torch.utils.checkpoint.checkpoint(self.layer, inputs, use_reentrant=False)


def checkpoint_layers(layers: list[nn.Module], blocks_only: bool = True) -> list[nn.Module]:
    """The layer list with each block layer (every layer when `blocks_only` is False) checkpointed."""
    return [CheckpointedLayer(layer) if isinstance(layer, BlockLayer) or not blocks_only else layer
            for layer in layers]

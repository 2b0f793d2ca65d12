"""HunyuanVideo-I2V (the 33-channel `latent_concat` model) on diffusers' HunyuanVideo classes.

Conditioning follows the reference pipeline (`HunyuanVideoImageToVideoPipeline`), whose own `encode_prompt` is
used: the LLaVA-Llama-3 encoder reads the prompt template with the conditioning image at `<image>` (its image
tokens, every second one kept, come first, then the prompt's tokens after the template's cropped prefix), plus
CLIP-L's pooled output. The template's prefix length, image position and image token count are computed from
the tokenizer and the vision config in use, not copied from the real model's numbers.

Transformer input: `cat([noisy, y * mask, mask])` (diffusers' order: noisy latents, image latents, one mask
channel). `y` is the VAE posterior mode of V_condition times the VAE's scaling factor; the mask is the packed
keep mask (models.hunyuan_video.packing), and condition latents are zero wherever a latent cell is generated,
which is exactly the pipeline's `[image latent, 0, 0, ...]` for the `i2v` preset (latent frame 0 is frame 0
encoded alone, as the pipeline encodes its image). The sampler starts from
`0.999 * noise + 0.001 * y[frame 0]` as the pipeline does.

Frames: all T = 4k+1 frames are decoded; diffusers' pipeline drops the first four of its output, so frames
4.. here equal its frames. The 16-channel `token_replace` variant is refused (models.hunyuan_video.loading).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoTransformer3DModel
from PIL import Image
from torch import nn

from models.base import BlockLayer, Conditioning, ModelAdapter
from models.family import Expert
from models.hunyuan_video import layouts as hl
from models.hunyuan_video.loading import HunyuanWeights
from models.hunyuan_video.packing import pack_hunyuan
from models.loading import quiet_logger

with quiet_logger("transformers.utils.import_utils"):  # see models/wan/adapter.py: the PIL processor is ours
    from diffusers import HunyuanVideoImageToVideoPipeline

TEXT_LEN = 256  # the pipeline's max_sequence_length for the prompt (after the template prefix)
IMAGE_EMBED_INTERLEAVE = 2  # the pipeline's choice for latent_concat: every second image token
NOISE_KEEP = 0.999  # the pipeline starts from 0.999 * noise + 0.001 * image latents
_RELEASED = {(3072, 20, 40): "13b"}  # (hidden, double, single) -> size name


def base_model_name(config) -> str:
    """"hunyuanvideo-i2v-33ch-13b"; sizes never released read "...-custom-<hidden>" (tiny test models)."""
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    size = _RELEASED.get((hidden, config["num_layers"], config["num_single_layers"]), f"custom-{hidden}")
    return f"hunyuanvideo-i2v-33ch-{size}"


def _to_pil(image: torch.Tensor) -> Image.Image:
    """[3, H, W] in [-1, 1] -> the uint8 PIL image the pipeline would be given (exact for uint8 frames)."""
    pixels = ((image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu()
    return Image.fromarray(pixels.numpy())


class HunyuanVideoAdapter(ModelAdapter):
    family = "hunyuan_video"
    text_sees_image = True
    separate_condition_encoding = True
    #: embedded guidance (only for transformers with guidance_embeds; the 33-channel model has none)
    embedded_guidance = 1.0

    _config: dict | None = None  # the transformer's config, read once

    def open_weights(self, ckpt_path: str | Path, transformer_path: str | Path | None) -> HunyuanWeights:
        weights = HunyuanWeights(ckpt_path, transformer_path)
        if weights.cheap_to_check():
            weights.transformer_config()  # refuses token_replace now, not after encoding
        return weights

    # -- components -------------------------------------------------------------------------------
    def load_vae(self) -> AutoencoderKLHunyuanVideo:
        def load() -> AutoencoderKLHunyuanVideo:
            vae = self.weights.vae(self.vae_dtype).to(self.device).eval()
            # Spatial/temporal tiling, as diffusers' docs advise for this VAE: it only acts above 256 px or 16
            # frames, where an untiled pass needs tens of GB.
            vae.enable_tiling()
            return vae

        return self._get("vae", load)

    def load_text_encoder(self) -> nn.Module:
        """The LLaVA encoder; its CLIP-L partner, tokenizers and image processor load with it."""
        self._get("text_encoder_2", lambda: self.weights.text_encoder_2(self.dtype).to(self.device).eval())
        self._get("tokenizer", self.weights.tokenizer)
        self._get("tokenizer_2", self.weights.tokenizer_2)
        self._get("image_processor", self.weights.image_processor)
        return self._get("text_encoder", lambda: self.weights.text_encoder(self.dtype).to(self.device).eval())

    def load_image_encoder(self) -> nn.Module | None:
        return None  # the image reaches the model through the LLaVA text encoder and the latents

    def build_transformer(self, expert: Expert) -> HunyuanVideoTransformer3DModel:
        del expert  # one transformer
        return self.weights.transformer(self.dtype)

    def unload(self, *names: str) -> None:
        if "text_encoder" in names:  # the text side is one unit here
            names = (*names, "text_encoder_2", "tokenizer", "tokenizer_2", "image_processor")
        super().unload(*names)

    def transformer_config(self) -> dict:
        if self._config is None:
            model = self.components.get(self.expert().name)
            self._config = dict(model.config) if model is not None else self.weights.transformer_config()
        return self._config

    def base_model_name(self) -> str:
        return base_model_name(self.transformer_config())

    # -- encoders ---------------------------------------------------------------------------------
    def _scale(self) -> float:
        return float(self.load_vae().config.scaling_factor)

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        return z * self._scale()

    def denormalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return latents / self._scale()

    @torch.no_grad()
    def encode_condition_video(self, video: torch.Tensor) -> torch.Tensor:
        """Latent frame 0 from frame 0 encoded alone (the pipeline's image latent: the VAE's group norms span all
        frames, so frame 0 of a whole-video encoding differs), frames 1.. from the whole condition video."""
        whole = self.encode_video(video)
        if video.shape[2] > 1:  # a single frame (reference samples) is already encoded alone
            whole[:, :, :1] = self.encode_video(video[:, :, :1])
        return whole

    def prompt_template(self) -> dict:
        """The pipeline's template dict with the positions computed for the loaded tokenizer and vision tower."""
        tokenizer, encoder = self.components["tokenizer"], self.components["text_encoder"]
        prefix = tokenizer(hl.PROMPT_TEMPLATE.split("{}")[0])["input_ids"]
        cfg = encoder.config
        start = prefix.index(cfg.image_token_index)
        vision = cfg.vision_config
        count = (vision.image_size // vision.patch_size) ** 2 + (cfg.vision_feature_select_strategy == "full")
        return {"template": hl.PROMPT_TEMPLATE, "crop_start": len(prefix), "image_emb_start": start,
                "image_emb_end": start + count, "image_emb_len": count}

    def _pipeline(self) -> HunyuanVideoImageToVideoPipeline:
        # Lends its prompt encoding so that ours is the reference's, exactly.
        c = self.components
        return HunyuanVideoImageToVideoPipeline(
            text_encoder=c.get("text_encoder"), tokenizer=c.get("tokenizer"), transformer=None, vae=None,
            scheduler=None, text_encoder_2=c.get("text_encoder_2"), tokenizer_2=c.get("tokenizer_2"),
            image_processor=c.get("image_processor"))

    @torch.no_grad()
    def encode_text(self, prompt: str, image: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if image is None:
            raise ValueError("HunyuanVideo-I2V's text encoder needs the conditioning image")
        self.load_text_encoder()
        embeds, pooled, mask = self._pipeline().encode_prompt(
            image=_to_pil(image), prompt=[prompt], prompt_template=self.prompt_template(), device=self.device,
            max_sequence_length=TEXT_LEN, image_embed_interleave=IMAGE_EMBED_INTERLEAVE)
        return {"x": embeds[0], "mask": mask[0], "pooled": pooled[0]}

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError("HunyuanVideo-I2V encodes a prompt with its image: use encode_text(prompt, image)")

    def negative_image(self, image: torch.Tensor) -> torch.Tensor:
        return torch.full_like(image, -1.0)  # the pipeline's black image for the negative prompt

    def encode_image(self, images: torch.Tensor) -> torch.Tensor | None:
        return None

    # -- conditioning -----------------------------------------------------------------------------
    def pack_mask(self, m_condition: torch.Tensor, mode: str = "min") -> torch.Tensor:
        return pack_hunyuan(m_condition, self.spatial_compression, self.temporal_compression, mode=mode)

    def condition_channels(self, packed_mask: torch.Tensor, cond_latents: torch.Tensor) -> torch.Tensor:
        mask = packed_mask.to(cond_latents)
        return torch.cat([cond_latents * mask, mask], dim=1)

    def transformer_input(self, noisy: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return torch.cat([noisy, cond.to(noisy)], dim=1)

    def initial_latents(self, noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        image = cond[:, : noise.shape[1], :1].to(noise)  # the first frame's image latents, on every frame
        keep = torch.tensor([NOISE_KEEP]).to(device=noise.device)
        return noise * keep + image * (1 - keep)

    def scheduler_sigmas(self, steps: int) -> list[float]:
        return list(np.linspace(1.0, 0.0, steps + 1)[:-1])

    def _guidance(self, batch: int) -> torch.Tensor | None:
        if not self.transformer_config().get("guidance_embeds"):
            return None
        return torch.full((batch,), self.embedded_guidance * 1000.0, device=self.device, dtype=self.dtype)

    def model_kwargs(self, model_input: torch.Tensor, c: Conditioning) -> dict:
        dev, dtype = self.device, self.dtype
        return {"encoder_attention_mask": c.text_mask.to(dev, dtype), "pooled_projections": c.pooled.to(dev, dtype),
                "guidance": self._guidance(model_input.shape[0])}

    # -- layers -----------------------------------------------------------------------------------
    def layers(self, expert: str | None = None) -> list[nn.Module]:
        model = self.load_transformer(expert=expert)
        return [HunyuanEmbedLayer(model), *(HunyuanBlockLayer(b) for b in model.transformer_blocks),
                *(HunyuanBlockLayer(b) for b in model.single_transformer_blocks), HunyuanHeadLayer(model)]

    def first_layer_input(self, model_input: torch.Tensor, timestep: torch.Tensor, c: Conditioning) -> tuple:
        dev, dtype = self.device, self.dtype
        guidance = self._guidance(model_input.shape[0])
        return (model_input.to(dev, dtype), timestep.to(dev), c.text.to(dev, dtype), c.text_mask.to(dev, dtype),
                c.pooled.to(dev, dtype), torch.empty(0, device=dev) if guidance is None else guidance)

    def lora_target_modules(self, train_image_kv: bool = False) -> list[str]:
        """Full module names (peft matches them exactly): the attention and MLP linears of every double- and
        single-stream block; the token refiner and the embedders stay frozen."""
        cfg = self.transformer_config()
        double = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                  "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                  "ff_context.net.2"]
        single = ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out"]
        return ([f"transformer_blocks.{i}.{m}" for i in range(cfg["num_layers"]) for m in double]
                + [f"single_transformer_blocks.{i}.{m}" for i in range(cfg["num_single_layers"]) for m in single])


class HunyuanEmbedLayer(nn.Module):
    """Rotary table, time/text/guidance embedding, patch embedding, token refiner and the joint attention mask."""

    def __init__(self, model: HunyuanVideoTransformer3DModel) -> None:
        super().__init__()
        self.rope, self.time_text_embed = model.rope, model.time_text_embed
        self.x_embedder, self.context_embedder = model.x_embedder, model.context_embedder
        self.patch_size, self.patch_size_t = model.config.patch_size, model.config.patch_size_t

    def forward(self, inputs: tuple) -> tuple:
        x, timestep, text, text_mask, pooled, guidance = inputs
        b, _, f, h, w = x.shape
        cos, sin = self.rope(x)
        temb, _ = self.time_text_embed(timestep, pooled, guidance if guidance.numel() else None)
        hidden = self.x_embedder(x)
        text = self.context_embedder(text, timestep, text_mask)
        # As the model's forward: every latent token plus the real (unpadded) text tokens attend.
        length = hidden.shape[1] + text.shape[1]
        effective = hidden.shape[1] + text_mask.sum(dim=1, dtype=torch.int)
        keep = torch.arange(length, device=x.device)[None] < effective[:, None]
        mask = keep[:, None, None, :]
        grid = torch.tensor([b, f // self.patch_size_t, h // self.patch_size, w // self.patch_size], device=x.device)
        # Contiguous: pipeline stages send these tensors to the next stage as they are.
        return tuple(t.contiguous() for t in (hidden, text, temb, mask, cos, sin, grid))


class HunyuanBlockLayer(BlockLayer):
    """One double- or single-stream block, tuple in, tuple out."""

    passthrough = (2, 3, 4, 5, 6)

    def run(self, inputs: tuple) -> tuple:
        hidden, text, temb, mask, cos, sin, grid = inputs
        hidden, text = self.block(hidden, text, temb, mask, (cos, sin))
        return hidden.contiguous(), text.contiguous(), temb, mask, cos, sin, grid


class HunyuanHeadLayer(nn.Module):
    """Output norm, projection and unpatchify: the model's epilogue."""

    def __init__(self, model: HunyuanVideoTransformer3DModel) -> None:
        super().__init__()
        self.norm_out, self.proj_out = model.norm_out, model.proj_out
        self.patch_size, self.patch_size_t = model.config.patch_size, model.config.patch_size_t

    def forward(self, inputs: tuple) -> torch.Tensor:
        hidden, _, temb, _, _, _, grid = inputs
        hidden = self.proj_out(self.norm_out(hidden, temb))
        b, f, h, w = (int(v) for v in grid)
        p, pt = self.patch_size, self.patch_size_t
        hidden = hidden.reshape(b, f, h, w, -1, pt, p, p).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return hidden.flatten(6, 7).flatten(4, 5).flatten(2, 3)

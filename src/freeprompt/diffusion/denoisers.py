"""How the one sampling loop calls each model family's denoising network, the way that family's diffusers pipeline
does: its text encoding, its timesteps, its network call and what its prediction is.

    unet     Stable Diffusion 1.x, 2.x and XL (``UNet2DConditionModel``): epsilon or v prediction
    sd3      Stable Diffusion 3 / 3.5 (``SD3Transformer2DModel``, MM-DiT joint blocks): flow matching, with
             classifier-free guidance
    flux     FLUX.1 (``FluxTransformer2DModel``: double- and single-stream blocks): flow matching with the
             resolution-dependent shift; FLUX.1-dev's guidance is an input of the network (no unconditional half)
    pixart   PixArt-Sigma / -Alpha (``PixArtTransformer2DModel``: separate self- and cross-attention): epsilon
             prediction with a learned variance (the second half of its output channels, dropped)

``denoiser_for(pipe)`` picks one; ``sample`` takes one (or a UNet, wrapped). The loop keeps latents as images,
``(rows, channels, h, w)``, whatever the family: FLUX's 2x2 packing happens inside its ``predict``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from ..errors import BadInput
from .prompts import Conditioning, encode_prompts


class Denoiser:
    """A UNet (Stable Diffusion 1.x/2.x/XL), the base of the others."""

    family = "unet"
    embedded_guidance = False  # FLUX.1-dev: guidance is an input of the network, not a second half of the batch

    def __init__(self, network, pipe=None):
        self.network, self.pipe = network, pipe

    @property
    def device(self) -> torch.device:
        """Where the network computes, the device diffusers' own pipelines make their tensors on: the pipeline's,
        or, under diffusers' model or group offload (weights resting on the CPU between calls), the accelerator the
        offload hooks move each part to. A bare network: its own device."""
        return self.network.device if self.pipe is None else self.pipe._execution_device

    @property
    def patch(self) -> int:
        """How many latent pixels one token side covers (attention grids are latents / patch)."""
        return 1

    def encode(self, prompts: list[str], negative: str, guided: bool, device, size=None) -> Conditioning:
        return encode_prompts(self.pipe, prompts, negative, guided, device, size)

    def text_parts(self) -> tuple:
        """((tokenizer, offset), ...): which tokenizer wrote which stretch of the text sequence the network attends
        to (a word's positions there are its positions in that tokenizer's ids plus the offset)."""
        return ((self.pipe.tokenizer, 0),)

    def text_tokens(self) -> int:
        """The length of that text sequence."""
        return int(self.pipe.tokenizer.model_max_length)

    def set_timesteps(self, scheduler, num_steps: int, latents: torch.Tensor) -> None:
        scheduler.set_timesteps(num_steps, device=latents.device)

    def predict(self, latents: torch.Tensor, t, conditioning: Conditioning, guidance: float) -> torch.Tensor:
        return self.network(latents, t, **conditioning.unet_kwargs(), return_dict=False)[0]


class SD3Denoiser(Denoiser):
    family = "sd3"

    @property
    def patch(self) -> int:
        return int(self.network.config.patch_size)

    def encode(self, prompts, negative, guided, device, size=None) -> Conditioning:
        with warnings.catch_warnings(), torch.no_grad():
            cond, uncond, pooled, uncond_pooled = self.pipe.encode_prompt(
                prompt=prompts, prompt_2=None, prompt_3=None, device=device, do_classifier_free_guidance=guided,
                negative_prompt=[negative] * len(prompts) if guided else None,
                max_sequence_length=text_length(self.pipe))
        embeddings = torch.cat([uncond, cond]) if guided else cond
        pooled = torch.cat([uncond_pooled, pooled]) if guided else pooled
        return Conditioning(embeddings, {"pooled_projections": pooled})

    def text_parts(self) -> tuple:
        """CLIP's tokens first (both CLIPs, side by side in the channels), then T5's (zeros without a T5)."""
        clip = ((self.pipe.tokenizer, 0),)
        t5 = carries_text(getattr(self.pipe, "text_encoder_3", None))
        return clip + (((self.pipe.tokenizer_3, self.pipe.tokenizer_max_length),) if t5 else ())

    def text_tokens(self) -> int:
        clip = int(self.pipe.tokenizer_max_length)
        return clip + (text_length(self.pipe) if getattr(self.pipe, "text_encoder_3", None) is not None else clip)

    def set_timesteps(self, scheduler, num_steps: int, latents: torch.Tensor) -> None:
        kwargs = {}
        if scheduler.config.get("use_dynamic_shifting", False):
            kwargs["mu"] = shift_for(scheduler, (latents.shape[-2] // self.patch) * (latents.shape[-1] // self.patch))
        scheduler.set_timesteps(num_steps, device=latents.device, **kwargs)

    def predict(self, latents, t, conditioning, guidance):
        rows = latents.shape[0]
        return self.network(hidden_states=latents, timestep=t.expand(rows),
                            encoder_hidden_states=conditioning.embeddings,
                            pooled_projections=_added(conditioning)["pooled_projections"], return_dict=False)[0]


class FluxDenoiser(Denoiser):
    family = "flux"

    @property
    def embedded_guidance(self) -> bool:  # type: ignore[override]
        return bool(self.network.config.guidance_embeds)

    @property
    def patch(self) -> int:
        return 2  # latents are packed 2x2 into tokens

    def encode(self, prompts, negative, guided, device, size=None) -> Conditioning:
        with warnings.catch_warnings(), torch.no_grad():
            embeds, pooled, text_ids = self.pipe.encode_prompt(prompt=prompts, prompt_2=None, device=device,
                                                               max_sequence_length=text_length(self.pipe))
            if guided:  # true classifier-free guidance: the negative prompt's rows first
                neg, neg_pooled, _ = self.pipe.encode_prompt(prompt=[negative] * len(prompts), prompt_2=None,
                                                             device=device, max_sequence_length=text_length(self.pipe))
                embeds, pooled = torch.cat([neg, embeds]), torch.cat([neg_pooled, pooled])
        return Conditioning(embeds, {"pooled_projections": pooled}, fixed={"txt_ids": text_ids})

    def text_parts(self) -> tuple:
        return ((self.pipe.tokenizer_2, 0),)  # T5's tokens only: CLIP gives the pooled vector

    def text_tokens(self) -> int:
        return text_length(self.pipe)

    def set_timesteps(self, scheduler, num_steps: int, latents: torch.Tensor) -> None:
        sigmas = np.linspace(1.0, 1 / num_steps, num_steps)
        tokens = (latents.shape[-2] // 2) * (latents.shape[-1] // 2)
        scheduler.set_timesteps(sigmas=sigmas, mu=shift_for(scheduler, tokens), device=latents.device)

    def predict(self, latents, t, conditioning, guidance):
        rows, channels, h, w = latents.shape
        packed = latents.view(rows, channels, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        packed = packed.reshape(rows, (h // 2) * (w // 2), channels * 4)
        embedded = None
        if self.network.config.guidance_embeds:
            embedded = torch.full((rows,), float(guidance), device=latents.device, dtype=torch.float32)
        out = self.network(hidden_states=packed, timestep=t.expand(rows).to(latents.dtype) / 1000, guidance=embedded,
                           pooled_projections=_added(conditioning)["pooled_projections"],
                           encoder_hidden_states=conditioning.embeddings, txt_ids=_fixed(conditioning)["txt_ids"],
                           img_ids=image_ids(h // 2, w // 2, latents), return_dict=False)[0]
        out = out.view(rows, h // 2, w // 2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(rows, channels, h, w)


class PixArtDenoiser(Denoiser):
    family = "pixart"

    @property
    def patch(self) -> int:
        return int(self.network.config.patch_size)

    def encode(self, prompts, negative, guided, device, size=None) -> Conditioning:
        with warnings.catch_warnings(), torch.no_grad():
            cond, mask, uncond, uncond_mask = self.pipe.encode_prompt(
                prompts, do_classifier_free_guidance=guided, negative_prompt=negative, device=device,
                clean_caption=False, max_sequence_length=text_length(self.pipe))
        embeddings = torch.cat([uncond, cond]) if guided else cond
        return Conditioning(embeddings, {"encoder_attention_mask": torch.cat([uncond_mask, mask]) if guided else mask})

    def text_tokens(self) -> int:
        return text_length(self.pipe)

    def predict(self, latents, t, conditioning, guidance):
        rows = latents.shape[0]
        t = t if torch.is_tensor(t) else torch.tensor(t, device=latents.device)
        out = self.network(latents, encoder_hidden_states=conditioning.embeddings,
                           encoder_attention_mask=_added(conditioning)["encoder_attention_mask"],
                           timestep=t.reshape(-1)[:1].expand(rows), added_cond_kwargs={"resolution": None,
                                                                                      "aspect_ratio": None},
                           return_dict=False)[0]
        return out[:, : latents.shape[1]] if out.shape[1] == 2 * latents.shape[1] else out  # the learned variance


FAMILIES = {"UNet2DConditionModel": Denoiser, "SD3Transformer2DModel": SD3Denoiser,
            "FluxTransformer2DModel": FluxDenoiser, "PixArtTransformer2DModel": PixArtDenoiser}


def denoiser_for(pipe_or_network) -> Denoiser:
    """The denoiser of a pipeline (its ``unet``, any network called as a UNet, or its ``transformer``, one of
    ``FAMILIES``) or of a bare network (no text encoding then)."""
    unet = getattr(pipe_or_network, "unet", None)
    network = unet if unet is not None else getattr(pipe_or_network, "transformer", None)
    pipe = pipe_or_network if network is not None else None
    network = network if network is not None else pipe_or_network
    kind = Denoiser if unet is not None else FAMILIES.get(type(network).__name__)  # any UNet-like network
    if kind is None:
        raise BadInput(f"freeprompt cannot drive a {type(network).__name__}",
                       "use Stable Diffusion 1.x/2.x/XL, SD3/3.5, FLUX.1 or PixArt-Sigma")
    return kind(network, pipe)


def network_denoiser(network) -> Denoiser:
    """The denoiser of a bare network (no text encoding): a known transformer's, else a UNet's call (any callable
    taking ``(latents, t, encoder_hidden_states=...)``, such as a wrapped UNet)."""
    return FAMILIES.get(type(network).__name__, Denoiser)(network)


def device_of(pipe) -> torch.device:
    """The device a pipeline's denoising network computes on (``Denoiser.device``)."""
    return denoiser_for(pipe).device


def network_of(pipe) -> Any:
    """The denoising network of a pipeline: its UNet or its transformer."""
    return denoiser_for(pipe).network


def carries_text(t5) -> bool:
    """Whether SD3's T5 slot holds an encoder whose output depends on the words: not when it is empty, nor when
    it holds a T5 with no layers and a zero final norm (always zeros, as the shapes-mmdit fixture fills it so that
    plain diffusers loads the folder), whose tokens then name no words."""
    if t5 is None:
        return False
    stack = getattr(t5, "encoder", None)  # a T5 encoder's stack: its blocks, then the final norm
    if stack is None or len(getattr(stack, "block", (None,))) or not hasattr(stack, "final_layer_norm"):
        return True
    return bool(stack.final_layer_norm.weight.any())


def text_length(pipe) -> int:
    """The text tokens a transformer pipeline encodes: its (T5) tokenizer's length, as the pipeline's default
    (SD3 256, FLUX 512, PixArt-Sigma 300) when the tokenizer allows that many."""
    tokenizer = getattr(pipe, "tokenizer_3", None) or getattr(pipe, "tokenizer_2", None) or pipe.tokenizer
    defaults = {"StableDiffusion3Pipeline": 256, "FluxPipeline": 512, "PixArtSigmaPipeline": 300}
    return min(defaults.get(type(pipe).__name__, 256), int(getattr(tokenizer, "model_max_length", 512)))


def shift_for(scheduler, tokens: int) -> float:
    """The resolution-dependent shift ``mu`` of FLUX's and SD3.5's flow matching: linear in the image tokens between
    (base_image_seq_len, base_shift) and (max_image_seq_len, max_shift)."""
    cfg = scheduler.config
    low, high = cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096)
    base, top = cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15)
    slope = (top - base) / (high - low)
    return tokens * slope + (base - slope * low)


def image_ids(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """FLUX's positions of the ``h x w`` image tokens: (h*w, 3) of (0, row, column)."""
    ids = torch.zeros(h, w, 3, device=like.device, dtype=like.dtype)
    ids[..., 1] = torch.arange(h, device=like.device, dtype=like.dtype)[:, None]
    ids[..., 2] = torch.arange(w, device=like.device, dtype=like.dtype)[None, :]
    return ids.reshape(h * w, 3)


def _added(conditioning: Conditioning) -> dict:
    assert conditioning.added is not None
    return conditioning.added


def _fixed(conditioning: Conditioning) -> dict:
    assert conditioning.fixed is not None
    return conditioning.fixed


__all__ = ["Denoiser", "FluxDenoiser", "PixArtDenoiser", "SD3Denoiser", "denoiser_for", "image_ids",
           "network_denoiser", "network_of", "shift_for", "text_length"]

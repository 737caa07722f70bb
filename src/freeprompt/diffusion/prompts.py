"""Prompt checks and text encoding through the pipeline's own encoder(s), into the UNet's ``Conditioning``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import cast

import torch

from ..errors import BadInput


class PromptTruncated(UserWarning):
    """A prompt is longer than the text encoder's context and was cut."""


def require_text(text: str, what: str = "prompt") -> str:
    if not isinstance(text, str) or not text.strip():
        raise BadInput(f"the {what} is empty", f"give a non-empty {what}, e.g. \"a photo of a red car\"")
    return text


def check_prompt(tokenizer, text: str, what: str = "prompt") -> str:
    """Refuse an empty prompt; warn (and go on) when the tokenizer will truncate it."""
    require_text(text, what)
    limit = tokenizer.model_max_length
    ids = tokenizer(text, truncation=False, add_special_tokens=True)["input_ids"]
    if len(ids) > limit:
        kept = tokenizer.decode(ids[1 : limit - 1])
        warnings.warn(
            f"the {what} has {len(ids)} tokens, more than the text encoder's {limit}; it was truncated to: {kept!r}",
            PromptTruncated,
            stacklevel=3,
        )
    return text


@dataclass
class Conditioning:
    """What the denoising network is conditioned on, one row per batch row: the text embeddings, and the other
    per-row inputs (``added``: SDXL's pooled text embeddings and size/crop ids, diffusers' ``added_cond_kwargs``
    ``text_embeds``, ``time_ids``; a transformer's pooled projections or text mask), and inputs every row shares
    (``fixed``)."""

    embeddings: torch.Tensor
    added: dict[str, torch.Tensor] | None = None
    fixed: dict[str, torch.Tensor] | None = None  # inputs shared by every row (FLUX's text positions)

    @property
    def num_rows(self) -> int:
        return self.embeddings.shape[0]

    def unet_kwargs(self) -> dict:
        """Keyword arguments of a diffusers UNet call."""
        kwargs: dict = {"encoder_hidden_states": self.embeddings}
        if self.added:
            kwargs["added_cond_kwargs"] = self.added
        return kwargs

    def to(self, device=None, dtype=None) -> Conditioning:
        added = {k: v.to(device=device, dtype=dtype) for k, v in self.added.items()} if self.added else None
        return Conditioning(self.embeddings.to(device=device, dtype=dtype), added, self.fixed)

    def rows(self, index) -> Conditioning:
        """The rows ``index`` (a slice, list or tensor of row numbers)."""
        added = {k: v[index] for k, v in self.added.items()} if self.added else None
        return Conditioning(self.embeddings[index], added, self.fixed)

    def replaced(self, start: int, embeddings: torch.Tensor | None = None,
                 added: dict[str, torch.Tensor] | None = None) -> Conditioning:
        """A copy whose rows ``start`` .. ``start + len`` take these embeddings and these entries of ``added`` (SDXL's
        pooled embeddings, PixArt's text mask)."""
        out = Conditioning(self.embeddings.clone(),
                           {k: v.clone() for k, v in self.added.items()} if self.added else None, self.fixed)
        if embeddings is not None:
            out.embeddings[start:start + embeddings.shape[0]] = embeddings.to(out.embeddings)
        for key, value in (added or {}).items():
            if out.added and key in out.added:
                out.added[key][start:start + value.shape[0]] = value.to(out.added[key])
        return out

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        added = None
        if parts[0].added:
            # the parts of one batch are all SDXL (added is set) or none is
            added = {k: torch.cat([cast(dict, p.added)[k] for p in parts]) for k in parts[0].added}
        return Conditioning(torch.cat([p.embeddings for p in parts]), added, parts[0].fixed)


def as_conditioning(value) -> Conditioning:
    return value if isinstance(value, Conditioning) else Conditioning(value)


def is_sdxl(pipe) -> bool:
    """Whether the pipeline conditions its UNet SDXL's way (two text encoders, pooled embeddings, size ids)."""
    return getattr(pipe, "text_encoder_2", None) is not None


def encode_prompts(pipe, prompts: list[str], negative_prompt: str, guidance: bool, device,
                   size: tuple[int, int] | None = None) -> Conditioning:
    """The UNet's conditioning for a batch: ``[negatives..., prompts...]`` with guidance, ``prompts`` without, through
    the pipeline's own encoder(s). An empty negative prompt is the pipeline's default unconditional input (SDXL:
    zeros where its config says so). ``size`` (height, width) is SDXL's size conditioning [default: the model's]."""
    negative = [negative_prompt] * len(prompts) if negative_prompt else None
    with warnings.catch_warnings(), torch.no_grad():
        if not is_sdxl(pipe):
            cond, uncond = pipe.encode_prompt(prompts, device, 1, guidance, negative_prompt=negative)
            return Conditioning(torch.cat([uncond, cond]) if guidance else cond)
        cond, uncond, pooled, uncond_pooled = pipe.encode_prompt(
            prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=guidance,
            negative_prompt=negative)
    embeddings = torch.cat([uncond, cond]) if guidance else cond
    text_embeds = torch.cat([uncond_pooled, pooled]) if guidance else pooled
    return Conditioning(embeddings, {"text_embeds": text_embeds, "time_ids": size_ids(pipe, size, embeddings)})


def size_ids(pipe, size: tuple[int, int] | None, like: torch.Tensor) -> torch.Tensor:
    """SDXL's micro-conditioning, one row per batch row: original size, crop top-left (0, 0), target size."""
    if size is None:
        side = pipe.unet.config.sample_size * pipe.vae_scale_factor
        size = (side, side)
    h, w = (int(v) for v in size)
    return torch.tensor([[h, w, 0, 0, h, w]], dtype=like.dtype, device=like.device).expand(like.shape[0], -1)


def encode_text(pipe, text: str, size: tuple[int, int] | None = None, device=None) -> Conditioning:
    """One row of conditioning for ``text`` ("" allowed) without guidance, through the pipeline's encoder(s): the
    text's own embedding (SDXL: and pooled embedding, never zeroed), on ``device`` [default: where the pipeline
    runs its text encoder, diffusers' rule]."""
    if not is_sdxl(pipe):
        with warnings.catch_warnings(), torch.no_grad():
            cond, _ = pipe.encode_prompt([text], device, 1, False)
        return Conditioning(cond)
    return encode_prompts(pipe, [text], "", False, device, size)

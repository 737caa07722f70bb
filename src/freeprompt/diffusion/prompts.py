"""Prompt checks and text encoding through the pipeline's own encoder."""

from __future__ import annotations

import warnings

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


def encode_prompts(pipe, prompts: list[str], negative_prompt: str, guidance: bool, device) -> torch.Tensor:
    """Text embeddings for the UNet batch: ``[negatives..., prompts...]`` with guidance, ``prompts`` without."""
    with warnings.catch_warnings(), torch.no_grad():
        cond, uncond = pipe.encode_prompt(
            prompts, device, 1, guidance, negative_prompt=[negative_prompt] * len(prompts)
        )
    return torch.cat([uncond, cond]) if guidance else cond


def encode_text(pipe, text: str) -> torch.Tensor:
    """(1, tokens, width) conditional embedding of ``text`` ("" allowed) through the pipeline's encoder."""
    with warnings.catch_warnings(), torch.no_grad():
        cond, _ = pipe.encode_prompt([text], pipe.unet.device, 1, False)
    return cond

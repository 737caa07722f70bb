"""Where self-attention is replaced.

FPE gives a target the *source's* self-attention map: ``softmax(Q_src K_src^T / sqrt(d)) V_tgt``, which is
``scaled_dot_product_attention(Q_src, K_src, V_tgt)``. So the map is never materialised: the batch's queries
and keys are gathered from the source rows and one SDPA call (flash / memory-efficient kernels where the
device has them) serves source and targets together.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn.functional as F


def shared_map_attention(attn, hidden_states: torch.Tensor, qk_rows: torch.Tensor, qk_gather: torch.Tensor,
                         attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None) -> torch.Tensor:
    """Self-attention of a diffusers ``Attention`` in which row ``b`` attends with the queries and keys of row
    ``qk_rows[qk_gather[b]]`` and its own values.

    ``qk_rows`` lists the distinct rows whose Q, K are needed (only those are projected); ``qk_gather`` maps
    each batch row to its position in ``qk_rows``. With ``qk_rows = arange(B)`` and ``qk_gather = arange(B)``
    this is plain self-attention.
    """
    hidden_states, residual, spatial_shape = attention_input(attn, hidden_states, temb)
    batch, tokens, _ = hidden_states.shape

    qk_source = hidden_states.index_select(0, qk_rows)
    query, key = queries_keys(attn, qk_source, qk_source)
    heads = attn.heads
    value = split_heads(attn.to_v(hidden_states), heads)
    query = query.index_select(0, qk_gather)
    key = key.index_select(0, qk_gather)

    mask = prepared_mask(attn, attention_mask, tokens, batch)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False,
                                         scale=attn.scale)
    return attention_output(attn, out.to(value.dtype), residual, spatial_shape)


def sdpa_attention(attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                   attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None):
    """diffusers' ``AttnProcessor2_0`` (the same operations in the same order, so the same output), also returning
    what it computed on the way: ``(output, query, key, mask)`` with queries and keys as (batch, heads, tokens,
    head_dim) and the prepared mask (batch, heads, 1 or queries, keys) or None."""
    batch = hidden_states.shape[0]
    hidden_states, residual, spatial_shape = attention_input(attn, hidden_states, temb)
    context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
    mask = prepared_mask(attn, attention_mask, context.shape[1], batch)
    if encoder_hidden_states is not None and attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    query, key = queries_keys(attn, hidden_states, context)
    value = split_heads(attn.to_v(context), attn.heads)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
    return attention_output(attn, out.to(query.dtype), residual, spatial_shape), query, key, mask


def prepared_mask(attn, attention_mask: torch.Tensor | None, keys: int, batch: int) -> torch.Tensor | None:
    """An attention mask as SDPA takes it, (batch, heads, 1 or queries, keys), prepared as diffusers does."""
    if attention_mask is None:
        return None
    mask = attn.prepare_attention_mask(attention_mask, keys, batch)
    return mask.view(batch, attn.heads, -1, mask.shape[-1])


def attention_input(attn, hidden_states: torch.Tensor, temb: torch.Tensor | None = None):
    """The start of every diffusers attention processor: spatial norm, 4-D maps to token sequences, group norm.
    Returns (tokens, residual, spatial shape or None)."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    spatial_shape = None
    if hidden_states.ndim == 4:
        batch, channels, height, width = hidden_states.shape
        spatial_shape = (channels, height, width)
        hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    return hidden_states, residual, spatial_shape


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, tokens, heads * head_dim) -> (batch, heads, tokens, head_dim)."""
    return x.view(x.shape[0], -1, heads, x.shape[-1] // heads).transpose(1, 2)


def queries_keys(attn, hidden_states: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries of ``hidden_states`` and keys of ``context``, split into heads and normalised as diffusers'
    ``AttnProcessor2_0`` does: (batch, heads, tokens, head_dim)."""
    query = split_heads(attn.to_q(hidden_states), attn.heads)
    key = split_heads(attn.to_k(context), attn.heads)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    return query, key


def attention_output(attn, out: torch.Tensor, residual: torch.Tensor, spatial_shape) -> torch.Tensor:
    """The end of every diffusers attention processor: merge heads of (batch, heads, tokens, head_dim), output
    projection, back to 4-D maps, residual and rescaling."""
    batch, heads, _, head_dim = out.shape
    out = out.transpose(1, 2).reshape(batch, -1, heads * head_dim)
    out = attn.to_out[0](out)
    out = attn.to_out[1](out)
    if spatial_shape is not None:
        out = out.transpose(-1, -2).reshape(batch, *spatial_shape)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


class SelfAttentionEditProcessor:
    """Installed on an editable self-attention layer; asks the control, at every call, whether this layer and
    the current step are edited, and otherwise defers to the processor it replaced."""

    def __init__(self, layer, control, original: Callable):
        self.layer = layer
        self.control = control
        self.original = original

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        plan = self.control.self_attention_plan(self.layer, hidden_states.shape[0], hidden_states.device)
        if plan is None or encoder_hidden_states is not None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        return shared_map_attention(attn, hidden_states, plan[0], plan[1], attention_mask, temb)


@contextmanager
def installed_processors(unet, replacements: dict[str, Callable]) -> Iterator[dict]:
    """Install processors for some layers (keys as in ``unet.attn_processors``) and always restore the
    originals on exit, also after an exception."""
    original = dict(unet.attn_processors)
    unknown = set(replacements) - set(original)
    if unknown:
        raise KeyError(f"no attention processors named {sorted(unknown)}")
    unet.set_attn_processor({**original, **replacements})
    try:
        yield original
    finally:
        unet.set_attn_processor(original)

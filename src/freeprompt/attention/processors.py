"""Where attention is replaced: every editing method's attention, computed here.

FPE gives a target the *source's* self-attention map: ``softmax(Q_src K_src^T / sqrt(d)) V_tgt``, which is
``scaled_dot_product_attention(Q_src, K_src, V_tgt)``. MasaCtrl's mutual self-attention is ``SDPA(Q_tgt, K_src,
V_src)``, Plug-and-Play's injected queries and keys and Prompt-to-Prompt's cross-attention *replace* are again
``SDPA(Q_src, K_src, V_tgt)``. So these never materialise a map: ``mixed_attention`` gathers each row's queries,
keys and values from the rows a ``RowMix`` names and one SDPA call (flash / memory-efficient kernels where the
device has them) serves every row. Only Prompt-to-Prompt's *refine* and *reweight*, and the maps a method watches
(local blend, MasaCtrl's masks), materialise maps: of cross-attention (77 keys wide), in the layers and rows that
need them.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from .control import CrossMapEdit, EditControl, MapWatch, MaskedMix, RowMix
from .layers import AttentionLayer


def mixed_attention(attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None, mix: RowMix,
                    attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of a diffusers ``Attention`` in which row ``b`` uses the queries of row ``mix.queries[b]`` and the
    keys and values of rows ``mix.keys[b]`` and ``mix.values[b]`` (of their text, in cross-attention). Only the
    distinct rows named are projected. With every row naming itself this is plain attention."""
    hidden_states, residual, spatial_shape = attention_input(attn, hidden_states, temb)
    query, key, value = _mixed_qkv(attn, hidden_states, encoder_hidden_states, mix)
    mask = prepared_mask(attn, attention_mask, key.shape[2], hidden_states.shape[0])
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False,
                                         scale=attn.scale)
    return attention_output(attn, out.to(value.dtype), residual, spatial_shape)


def _mixed_qkv(attn, tokens: torch.Tensor, encoder_hidden_states, mix: RowMix):
    """Queries, keys and values (batch, heads, tokens, head_dim), each row's from the rows ``mix`` names."""
    context = _context(attn, tokens, encoder_hidden_states)
    (q_rows, q_at), (k_rows, k_at), (v_rows, v_at) = row_tensors(mix, tokens.device)
    query, key = queries_keys(attn, tokens.index_select(0, q_rows), context.index_select(0, k_rows))
    value = split_heads(attn.to_v(context.index_select(0, v_rows)), attn.heads)
    return query.index_select(0, q_at), key.index_select(0, k_at), value.index_select(0, v_at)


@lru_cache(maxsize=256)
def _row_tensors(mix: RowMix, device: str):
    out = []
    for picked in (mix.queries, mix.keys, mix.values):
        unique = sorted(set(picked))
        out.append((torch.tensor(unique, device=device), torch.tensor([unique.index(r) for r in picked],
                                                                       device=device)))
    return tuple(out)


def row_tensors(mix: RowMix, device) -> tuple:
    """For queries, keys and values: (the distinct rows to project, each batch row's position among them)."""
    return _row_tensors(mix, str(device))


def _context(attn, tokens: torch.Tensor, encoder_hidden_states: torch.Tensor | None) -> torch.Tensor:
    """What keys and values are projected from: the tokens themselves, or the (normalised) text."""
    if encoder_hidden_states is None:
        return tokens
    return attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states


def attention_maps(query: torch.Tensor, key: torch.Tensor, scale: float, mask: torch.Tensor | None = None):
    """softmax(Q K^T * scale + mask): (rows, heads, queries, keys), computed in at least float32."""
    dtype = torch.promote_types(query.dtype, torch.float32)
    scores = query.to(dtype) @ key.to(dtype).transpose(-1, -2) * scale
    if mask is not None:
        scores = scores + mask.to(dtype)
    return scores.softmax(dim=-1)


def edited_cross_attention(attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, edit: CrossMapEdit,
                           attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None):
    """Prompt-to-Prompt's cross-attention: every row attends as usual (SDPA), except the target rows of ``edit``,
    whose materialised maps are rebuilt from their source's (see ``CrossMapEdit``) and applied to their own values.
    Returns (output, {batch row: its head-averaged map (queries, text tokens)} for the edited and source rows)."""
    hidden_states, residual, spatial_shape = attention_input(attn, hidden_states, temb)
    batch = hidden_states.shape[0]
    context = _context(attn, hidden_states, encoder_hidden_states)
    mask = prepared_mask(attn, attention_mask, context.shape[1], batch)
    query, key = queries_keys(attn, hidden_states, context)
    value = split_heads(attn.to_v(context), attn.heads)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
    targets, sources = list(edit.targets), list(edit.sources)
    own = attention_maps(query[targets], key[targets], attn.scale, None if mask is None else mask[targets])
    base = attention_maps(query[sources], key[sources], attn.scale, None if mask is None else mask[sources])
    mapper = edit.mapper.to(base.device)[:, None, None, :].expand(-1, *base.shape[1:3], -1)
    alpha, scale = (x.to(base)[:, None, None, :] for x in (edit.alpha, edit.scale))
    new = (base.gather(-1, mapper) * alpha + own * (1 - alpha)) * scale
    out[targets] = (new @ value[targets].to(new.dtype)).to(out.dtype)
    maps = {row: m.mean(0) for row, m in zip(sources, base)}
    maps.update({row: m.mean(0) for row, m in zip(targets, new)})
    return attention_output(attn, out.to(value.dtype), residual, spatial_shape), maps


def masked_mutual_attention(attn, hidden_states: torch.Tensor, edit: MaskedMix, masks, grid: tuple[int, int],
                            temb: torch.Tensor | None = None) -> torch.Tensor:
    """MasaCtrl's mutual self-attention with masks: ``masks`` maps each target batch row to (its source's
    foreground, its own foreground), binary (h, w) maps; see ``MaskedMix``."""
    hidden_states, residual, spatial_shape = attention_input(attn, hidden_states, temb)
    query, key, value = _mixed_qkv(attn, hidden_states, None, edit.mix)
    out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False, scale=attn.scale)
    rows = list(masks)
    if rows:
        src = torch.stack([_resized(masks[r][0], grid) for r in rows]).flatten(1).to(query.device)
        tgt = torch.stack([_resized(masks[r][1], grid) for r in rows]).flatten(1).to(query.device)
        blocked = torch.finfo(query.dtype).min
        free = torch.zeros(src.shape, dtype=query.dtype, device=query.device)
        fg = free.masked_fill(src <= 0, blocked)[:, None, None, :]
        bg = free.masked_fill(src > 0, blocked)[:, None, None, :]
        q, k, v = query[rows], key[rows], value[rows]
        out_fg = F.scaled_dot_product_attention(q, k, v, attn_mask=fg, dropout_p=0.0, scale=attn.scale)
        out_bg = F.scaled_dot_product_attention(q, k, v, attn_mask=bg, dropout_p=0.0, scale=attn.scale)
        inside = tgt.to(out.dtype)[:, None, :, None]
        out[rows] = out_fg * inside + out_bg * (1 - inside)
    return attention_output(attn, out.to(value.dtype), residual, spatial_shape)


def _resized(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    if tuple(mask.shape) == tuple(grid):
        return mask
    return F.interpolate(mask[None, None].float(), size=grid, mode="nearest")[0, 0]


def row_queries_keys(attn, hidden_states, encoder_hidden_states, rows, temb=None):
    """Queries and keys (rows, heads, tokens, head_dim) of the chosen batch rows only, prepared as diffusers'
    ``AttnProcessor2_0`` prepares them."""
    tokens, _, _ = attention_input(attn, hidden_states[rows], temb[rows] if temb is not None else None)
    context = tokens if encoder_hidden_states is None else _context(attn, tokens, encoder_hidden_states[rows])
    return queries_keys(attn, tokens, context)


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


class EditProcessor:
    """Installed on every layer a run edits or watches; asks the control, at every call, what this layer computes
    at the current step, and otherwise defers to the processor it replaced."""

    def __init__(self, layer: AttentionLayer, control: EditControl, original: Callable):
        self.layer = layer
        self.control = control
        self.original = original

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        edit = self.control.edit_for(self.layer, hidden_states.shape[0])
        watch = self.control.watch_for(self.layer)
        maps = None
        if isinstance(edit, CrossMapEdit) and encoder_hidden_states is not None:
            out, maps = edited_cross_attention(attn, hidden_states, encoder_hidden_states, edit, attention_mask, temb)
        elif isinstance(edit, RowMix):
            out = mixed_attention(attn, hidden_states, encoder_hidden_states, edit, attention_mask, temb)
        elif isinstance(edit, MaskedMix) and encoder_hidden_states is None:
            masks, grid = self.control.masks(edit, self.layer, hidden_states)
            out = masked_mutual_attention(attn, hidden_states, edit, masks, grid, temb) if masks is not None else \
                mixed_attention(attn, hidden_states, None, edit.mix, attention_mask, temb)
        else:
            out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if watch is not None and encoder_hidden_states is not None:
            self._observe(watch, attn, hidden_states, encoder_hidden_states, temb, maps)
        return out

    def _observe(self, watch: MapWatch, attn, hidden_states, encoder_hidden_states, temb, maps) -> None:
        rows = watch.rows()
        if maps is None or any(r not in maps for r in rows):
            with torch.no_grad():
                query, key = row_queries_keys(attn, hidden_states, encoder_hidden_states, rows, temb)
                own = attention_maps(query, key, attn.scale).mean(1)
            maps = {**{r: m for r, m in zip(rows, own)}, **(maps or {})}
        latent_hw = self.control.latent_hw
        watch.add(torch.stack([maps[r] for r in rows]), rows, self.layer.grid(latent_hw))


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

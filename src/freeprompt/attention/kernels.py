"""Where attention is replaced: every editing method's attention, computed here.

FPE gives a target the *source's* self-attention map: ``softmax(Q_src K_src^T / sqrt(d)) V_tgt``, which is
``scaled_dot_product_attention(Q_src, K_src, V_tgt)``. MasaCtrl's mutual self-attention is ``SDPA(Q_tgt, K_src,
V_src)``, Plug-and-Play's injected queries and keys and Prompt-to-Prompt's cross-attention *replace* are again
``SDPA(Q_src, K_src, V_tgt)``. So these never materialise a map: ``mixed_attention`` gathers each row's queries,
keys and values from the rows a ``RowMix`` names and one SDPA call (flash / memory-efficient kernels where the
device has them) serves every row. Only Prompt-to-Prompt's *refine* and *reweight* materialise maps: of
cross-attention (77 keys wide), in the rows that need them.

Every kernel returns ``(output, Computed)``: what the call attended with, so that whoever observes the layer (a
method's watched maps, the attention recorder) sees the maps that were actually used, edited or not, without the
kernels building any map themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F

from .rules import CrossMapEdit, MaskedMix, RowMix


@dataclass
class Computed:
    """What one attention call computed, as observers see it: every batch row's map is ``softmax(query key^T *
    scale + mask)`` with the queries and keys it attended with (batch, heads, tokens, head_dim) and the additive
    ``mask`` (batch, heads or 1, 1 or queries, keys; None: none), except the rows of ``edited``, whose maps were
    changed after the softmax (Prompt-to-Prompt: batch row -> (heads, queries, keys)). MasaCtrl's masked rows keep
    their foreground/background restriction in ``restricted`` (batch row -> (the source's foreground keys, the
    row's own foreground queries), flat booleans), turned into mask rows only when a map is asked for."""

    query: torch.Tensor
    key: torch.Tensor
    scale: float
    mask: torch.Tensor | None = None
    edited: dict[int, torch.Tensor] = field(default_factory=dict)
    restricted: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.query.shape[0]

    def masks(self, rows: list[int]) -> torch.Tensor | None:
        """Additive masks (len(rows), heads or 1, 1 or queries, keys) of ``rows``, or None when they have none."""
        restricted = [r for r in rows if r in self.restricted]
        if self.mask is None and not restricted:
            return None
        dtype = torch.promote_types(self.query.dtype, torch.float32)
        queries, keys = self.query.shape[2], self.key.shape[2]
        base = torch.zeros(self.rows, 1, 1, keys, dtype=dtype, device=self.query.device) if self.mask is None \
            else self.mask.to(dtype)
        picked = base[rows].expand(-1, -1, queries if restricted else base.shape[2], -1).clone()
        for i, row in enumerate(rows):
            if row in self.restricted:
                source_fg, own_fg = self.restricted[row]
                allowed = own_fg[:, None] == source_fg[None, :]  # foreground queries to foreground keys, and so on
                picked[i] = picked[i].masked_fill(~allowed, torch.finfo(dtype).min)
        return picked

    def head_maps(self, rows: list[int]) -> dict[int, torch.Tensor]:
        """{row: its head-averaged map (queries, keys)} for ``rows``, in at least float32."""
        plain = [r for r in rows if r not in self.edited]
        out = {r: self.edited[r].mean(0) for r in rows if r in self.edited}
        if plain:
            maps = attention_maps(self.query[plain], self.key[plain], self.scale, self.masks(plain)).mean(1)
            out.update(zip(plain, maps))
        return out


def plain_attention(attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                    attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None):
    """diffusers' ``AttnProcessor2_0`` (the same operations in the same order, so the same output), with what it
    computed on the way."""
    batch = hidden_states.shape[0]
    hidden_states, residual, spatial_shape = attention_input(attn, hidden_states, temb)
    context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
    mask = prepared_mask(attn, attention_mask, context.shape[1], batch)
    if encoder_hidden_states is not None and attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    query, key = queries_keys(attn, hidden_states, context)
    value = split_heads(attn.to_v(context), attn.heads)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
    return (attention_output(attn, out.to(query.dtype), residual, spatial_shape),
            Computed(query, key, attn.scale, additive(mask, query)))


def projected(attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
              attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None) -> Computed:
    """What a plain call of ``attn`` attends with, projected again (for a processor freeprompt did not write)."""
    batch = hidden_states.shape[0]
    tokens, _, _ = attention_input(attn, hidden_states, temb)
    context = _context(attn, tokens, encoder_hidden_states)
    query, key = queries_keys(attn, tokens, context)
    mask = prepared_mask(attn, attention_mask, key.shape[2], batch)
    return Computed(query, key, attn.scale, additive(mask, query))


def mixed_attention(attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None, mix: RowMix,
                    attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None):
    """Attention of a diffusers ``Attention`` in which row ``b`` uses the queries of row ``mix.queries[b]`` and the
    keys and values of rows ``mix.keys[b]`` and ``mix.values[b]`` (of their text, in cross-attention). Only the
    distinct rows named are projected. With every row naming itself this is plain attention."""
    hidden_states, residual, spatial_shape = attention_input(attn, hidden_states, temb)
    query, key, value = _mixed_qkv(attn, hidden_states, encoder_hidden_states, mix)
    mask = prepared_mask(attn, attention_mask, key.shape[2], hidden_states.shape[0])
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False,
                                         scale=attn.scale)
    return (attention_output(attn, out.to(value.dtype), residual, spatial_shape),
            Computed(query, key, attn.scale, additive(mask, query)))


def _mixed_qkv(attn, tokens: torch.Tensor, encoder_hidden_states, mix: RowMix):
    """Queries, keys and values (batch, heads, tokens, head_dim), each row's from the rows ``mix`` names."""
    context = _context(attn, tokens, encoder_hidden_states)
    (q_rows, q_at), (k_rows, k_at), (v_rows, v_at) = row_tensors(mix, tokens.device)
    query, key = queries_keys(attn, tokens.index_select(0, q_rows), context.index_select(0, k_rows))
    value = split_heads(attn.to_v(context.index_select(0, v_rows)), attn.heads)
    return query.index_select(0, q_at), key.index_select(0, k_at), value.index_select(0, v_at)


def edited_cross_attention(attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, edit: CrossMapEdit,
                           attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None):
    """Prompt-to-Prompt's cross-attention: every row attends as usual (SDPA), except the target rows of ``edit``,
    whose materialised maps are rebuilt from their source's (see ``CrossMapEdit``) and applied to their own values."""
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
    mapper, alpha, scale = map_tensors(edit, base.device, base.dtype)
    mapper = mapper[:, None, None, :].expand(-1, *base.shape[1:3], -1)
    alpha, scale = alpha[:, None, None, :], scale[:, None, None, :]
    new = (base.gather(-1, mapper) * alpha + own * (1 - alpha)) * scale
    out[targets] = (new @ value[targets].to(new.dtype)).to(out.dtype)
    computed = Computed(query, key, attn.scale, additive(mask, query), edited=dict(zip(targets, new)))
    return attention_output(attn, out.to(value.dtype), residual, spatial_shape), computed


def masked_mutual_attention(attn, hidden_states: torch.Tensor, edit: MaskedMix, masks, grid: tuple[int, int],
                            temb: torch.Tensor | None = None):
    """MasaCtrl's mutual self-attention with masks: ``masks`` maps each target batch row to (its source's
    foreground, its own foreground), binary (h, w) maps; see ``MaskedMix``."""
    hidden_states, residual, spatial_shape = attention_input(attn, hidden_states, temb)
    query, key, value = _mixed_qkv(attn, hidden_states, None, edit.mix)
    out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False, scale=attn.scale)
    rows = list(masks)
    restricted = {}
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
        restricted = {r: (src[i] > 0, tgt[i] > 0) for i, r in enumerate(rows)}
    computed = Computed(query, key, attn.scale, restricted=restricted)
    return attention_output(attn, out.to(value.dtype), residual, spatial_shape), computed


def _resized(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    if tuple(mask.shape) == tuple(grid):
        return mask
    return F.interpolate(mask[None, None].float(), size=grid, mode="nearest")[0, 0]


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


@lru_cache(maxsize=64)
def _map_tensors(edit: CrossMapEdit, device: str, dtype: torch.dtype):
    return (torch.tensor(edit.mapper, device=device), torch.tensor(edit.alpha, device=device, dtype=dtype),
            torch.tensor(edit.scale, device=device, dtype=dtype))


def map_tensors(edit: CrossMapEdit, device, dtype) -> tuple:
    """A ``CrossMapEdit``'s mapper, alpha and scale as (targets, tokens) tensors."""
    return _map_tensors(edit, str(device), dtype)


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


def additive(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """A prepared attention mask as an additive one (a boolean mask's False: -inf), in at least float32."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        mask = torch.zeros_like(mask, dtype=like.dtype).masked_fill(~mask, float("-inf"))
    return mask.to(torch.promote_types(like.dtype, torch.float32))


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

"""Edits of joint attention, where text and image tokens attend together (MM-DiT: SD3's joint blocks, FLUX's
double- and single-stream blocks): an image query's row spans the text keys and the image keys under one softmax.

The projections, norms, rotary positions and output projections are those of diffusers' ``JointAttnProcessor2_0``
(SD3) and ``FluxAttnProcessor`` (FLUX), in their order; a call with no edited row equals them. Only the image
queries of target rows change (text queries keep their own attention), in one of four ways (``rules.JointEdit``):

    row     FPE, the whole joint row: softmax(Q_src [K_src_text; K_src_image]^T) [V_text; V_image] (target values)
    image   FPE, the image-to-image block: the logits Q_tgt K_tgt_text^T beside Q_src K_src_image^T under one softmax
            (each row's normalisation over text and image kept), target values
    kv      MasaCtrl, the source's image keys and values: softmax(Q_tgt [K_tgt_text; K_src_image]^T) [V_tgt_text;
            V_src_image]
    text    Prompt-to-Prompt, the image-to-text block (a word swap): the logits Q_src K_src_text^T beside
            Q_tgt K_tgt_image^T under one softmax, target values, chosen text positions' values scaled (reweight)

Two blocks of logits from different queries are one SDPA call without a map: the query is [Q_a, Q_b] (twice the
head width) and a key is [K, 0] in the first block and [0, K] in the second, so each dot product is the one wanted;
the scale stays 1/sqrt(head width).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .rules import JointEdit


def joint_attention(attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None,
                    edit: JointEdit | None, place: str, text_tokens: int, rotary=None, observe=None):
    """The attention call of an MM-DiT layer with ``edit`` (None: none) applied to its target rows' image queries;
    returns what the replaced processor returns: (image, text) outputs for a double-stream layer, the joint
    sequence for a FLUX single-stream layer. Every query is attended once: the unedited rows in one SDPA, the
    edited rows' text queries in one, their image queries in one edited call. ``observe(q, k, image)`` is shown
    the queries and keys (batch, heads, tokens, width) and the image tokens' slice (a recorder's maps)."""
    flux = type(attn).__name__ == "FluxAttention"
    q, k, v, image = _joint_qkv(attn, hidden_states, encoder_hidden_states, flux, place, text_tokens, rotary)
    if observe is not None:
        observe(q, k, image)
    rows = [] if edit is None else [row for row, source in enumerate(edit.sources) if source != row]
    if not rows:
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
        return _joint_output(attn, out, hidden_states, encoder_hidden_states, flux, image)
    assert edit is not None  # rows are edited
    kept = [row for row, source in enumerate(edit.sources) if source == row]
    sources = [edit.sources[row] for row in rows]
    text = text_slice(image, q.shape[2])
    out = torch.empty_like(q)
    if kept:
        out[kept] = F.scaled_dot_product_attention(q[kept], k[kept], v[kept])
    out[rows, :, text] = F.scaled_dot_product_attention(q[rows][:, :, text], k[rows], v[rows])
    out[rows, :, image] = _edited_rows(q, k, v, rows, sources, (image, text), edit)
    return _joint_output(attn, out, hidden_states, encoder_hidden_states, flux, image)


def _joint_qkv(attn, hidden_states, encoder_hidden_states, flux: bool, place: str, text_tokens: int, rotary):
    """Queries, keys and values of the joint sequence, (batch, heads, tokens, head width), in the processor's order
    (SD3: image then text; FLUX: text then image), and the slice of the image tokens."""
    heads = attn.heads
    q, k, v = (_heads(proj(hidden_states), heads) for proj in (attn.to_q, attn.to_k, attn.to_v))
    q, k = _normed(attn.norm_q, q), _normed(attn.norm_k, k)
    if encoder_hidden_states is not None:
        eq, ek, ev = (_heads(proj(encoder_hidden_states), heads)
                      for proj in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj))
        eq, ek = _normed(attn.norm_added_q, eq), _normed(attn.norm_added_k, ek)
        first, second = ((eq, ek, ev), (q, k, v)) if flux else ((q, k, v), (eq, ek, ev))
        q, k, v = (torch.cat([a, b], dim=1) for a, b in zip(first, second))
        text = encoder_hidden_states.shape[1]
        image = slice(text, None) if flux else slice(0, hidden_states.shape[1])
    else:  # a FLUX single-stream layer: one sequence, text first
        image = slice(text_tokens, None)
    if rotary is not None:
        from diffusers.models.embeddings import apply_rotary_emb

        q = apply_rotary_emb(q, rotary, sequence_dim=1)  # type: ignore[assignment]  # one tensor in, one out
        k = apply_rotary_emb(k, rotary, sequence_dim=1)  # type: ignore[assignment]
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), image


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, tokens, heads * width) -> (batch, tokens, heads, width), as the processors norm and rotate them."""
    return x.unflatten(-1, (heads, -1))


def _normed(norm, x: torch.Tensor) -> torch.Tensor:
    return x if norm is None else norm(x)


def _edited_rows(q, k, v, rows: list[int], sources: list[int], parts: tuple[slice, slice], edit: JointEdit):
    """The image queries' outputs of the target ``rows`` under ``edit`` (their sources: batch ``sources``), one SDPA;
    ``parts``: the (image, text) token slices."""
    image, text = parts
    mode = edit.mode
    if mode == "row":
        return F.scaled_dot_product_attention(q[sources][:, :, image], k[sources], v[rows])
    if mode == "kv":
        keys, values = k[rows], v[rows]  # indexing with a list copies
        keys[:, :, image], values[:, :, image] = k[sources][:, :, image], v[sources][:, :, image]
        return F.scaled_dot_product_attention(q[rows][:, :, image], keys, values)
    values = v[rows]
    if mode == "image":
        blocks = ((q[rows], k[rows], text), (q[sources], k[sources], image))
    else:  # "text": the source's logits to the text, the target's to the image; reweighted text values
        blocks = ((q[sources], k[sources], text), (q[rows], k[rows], image))
        for i, row in enumerate(rows):
            scale = edit.scale_of(row)
            if scale is not None:
                values[i, :, text] = values[i, :, text] * scale.to(values)[None, :, None]
    return _two_blocks(blocks, values, image, q.shape[-1])


def _two_blocks(blocks, values: torch.Tensor, image: slice, width: int) -> torch.Tensor:
    """softmax over two blocks of keys whose logits come from two queries: one SDPA with concatenated queries."""
    (qa, ka, first), (qb, kb, second) = blocks
    query = torch.cat([qa[:, :, image], qb[:, :, image]], dim=-1)
    keys = torch.zeros(*ka.shape[:-1], 2 * width, dtype=ka.dtype, device=ka.device)
    keys[:, :, first, :width] = ka[:, :, first]
    keys[:, :, second, width:] = kb[:, :, second]
    return F.scaled_dot_product_attention(query, keys, values, scale=width ** -0.5)


def text_slice(image: slice, length: int) -> slice:
    """The text tokens' slice of a joint sequence of ``length`` tokens whose image tokens are ``image``."""
    start, stop = image.start or 0, image.stop if image.stop is not None else length
    return slice(stop, length) if start == 0 else slice(0, start)


def _joint_output(attn, out: torch.Tensor, hidden_states, encoder_hidden_states, flux: bool, image: slice):
    """The processors' ending: merge heads, split text from image, their output projections."""
    out = out.transpose(1, 2).flatten(2, 3).to(hidden_states.dtype)
    if encoder_hidden_states is None:
        return out  # a FLUX single-stream layer projects in its block
    text = text_slice(image, out.shape[1])
    image_out, text_out = out[:, image], out[:, text]
    image_out = attn.to_out[1](attn.to_out[0](image_out.contiguous()))
    if flux:
        return image_out, attn.to_add_out(text_out.contiguous())
    return image_out, text_out if attn.context_pre_only else attn.to_add_out(text_out)


__all__ = ["joint_attention", "text_slice"]

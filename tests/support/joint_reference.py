"""A float64 reference for joint attention (MM-DiT: SD3's joint blocks, FLUX's double- and single-stream blocks) that
materialises the maps: queries, keys and values projected, normed and rotated as diffusers' processors do, the whole
softmax(Q K^T / sqrt(d)) built, a target row's image rows edited in one of ``rules.JointEdit``'s modes, applied to the
values, the processors' output projections. Independent of ``attention/joint.py`` (which never builds a map)."""

import torch


def reference(attn, hidden, text, rotary, mode, sources, scale=None, text_tokens=None):
    """The joint maps built whole (softmax of Q K^T / sqrt(d)), the target rows' image rows edited, applied to V;
    ``text_tokens``: the text part's length of a single-stream layer's sequence (text first)."""
    flux = type(attn).__name__ == "FluxAttention"
    heads = attn.heads
    n_text = text.shape[1] if text is not None else text_tokens

    def split(x):
        return x.view(x.shape[0], x.shape[1], heads, -1)

    def norm(f, x):
        return x if f is None else f(x)

    q, k, v = split(attn.to_q(hidden)), split(attn.to_k(hidden)), split(attn.to_v(hidden))
    q, k = norm(attn.norm_q, q), norm(attn.norm_k, k)
    if text is not None:
        tq, tk, tv = split(attn.add_q_proj(text)), split(attn.add_k_proj(text)), split(attn.add_v_proj(text))
        tq, tk = norm(attn.norm_added_q, tq), norm(attn.norm_added_k, tk)
        order = (lambda a, b: torch.cat([b, a], 1)) if flux else (lambda a, b: torch.cat([a, b], 1))
        q, k, v = order(q, tq), order(k, tk), order(v, tv)
    if rotary is not None:
        from diffusers.models.embeddings import apply_rotary_emb

        q, k = apply_rotary_emb(q, rotary, sequence_dim=1), apply_rotary_emb(k, rotary, sequence_dim=1)
    q, k, v = (x.permute(0, 2, 1, 3) for x in (q, k, v))
    n = q.shape[2]
    img = list(range(n_text, n)) if (flux or text is None) else list(range(0, n - n_text))
    txt = [i for i in range(n) if i not in img]
    d = q.shape[-1]
    out = (q @ k.transpose(-1, -2) / d ** 0.5).softmax(-1) @ v
    for row, src in enumerate(sources):
        if src == row:
            continue
        logits = q[row, :, img] @ k[row].transpose(-1, -2) / d ** 0.5  # (heads, image queries, all keys)
        values = v[row].clone()
        if mode == "row":
            logits = q[src, :, img] @ k[src].transpose(-1, -2) / d ** 0.5
        elif mode == "image":
            logits[..., img] = (q[src, :, img] @ k[src].transpose(-1, -2) / d ** 0.5)[..., img]
        elif mode == "kv":
            logits[..., img] = (q[row, :, img] @ k[src].transpose(-1, -2) / d ** 0.5)[..., img]
            values[:, img] = v[src, :, img]
        else:  # text
            logits[..., txt] = (q[src, :, img] @ k[src].transpose(-1, -2) / d ** 0.5)[..., txt]
            if scale is not None:
                values[:, txt] = values[:, txt] * scale[None, :, None]
        out[row, :, img] = logits.softmax(-1) @ values
    out = out.permute(0, 2, 1, 3).flatten(2)
    if text is None:
        return out
    image_out, text_out = (out[:, n_text:], out[:, :n_text]) if flux else (out[:, :n - n_text],
                                                                                   out[:, n - n_text:])
    image_out = attn.to_out[1](attn.to_out[0](image_out))
    return image_out, (text_out if attn.context_pre_only else attn.to_add_out(text_out))

"""An independent, map-materialising FPE written the way the official code does it (einsum maps, the source
map copied into each target), used as the reference in correctness tests and the slow path in benchmarks."""

from __future__ import annotations

import torch

from freeprompt.attention.processors import installed_processors


class MaterialisingAttention:
    """Attention that builds softmax(QK^T/sqrt(d)) explicitly. In edited self-attention calls, the map of each
    target row is replaced by its source row's map: batch rows are [uncond P, cond P] with prompt 0 the source."""

    def __init__(self, state, edited: bool, num_prompts: int, edit_unconditional: bool):
        self.state, self.edited = state, edited
        self.p, self.edit_uncond = num_prompts, edit_unconditional

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        b, n, _ = hidden_states.shape
        h = attn.heads
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        d = q.shape[-1] // h
        q, k, v = (x.reshape(b, -1, h, d).permute(0, 2, 1, 3) for x in (q, k, v))
        maps = torch.einsum("bhid,bhjd->bhij", q, k).mul(d ** -0.5).softmax(dim=-1)
        if self.edited and encoder_hidden_states is None and self.state["edit"]:
            maps = maps.clone()
            halves = (0, 1) if self.edit_uncond else (1,)
            guided = b == 2 * self.p
            for half in halves if guided else (0,):
                src = half * self.p
                for t in range(1, self.p):
                    maps[src + t] = maps[src]
        out = torch.einsum("bhij,bhjd->bhid", maps, v).permute(0, 2, 1, 3).reshape(b, n, h * d)
        return attn.to_out[1](attn.to_out[0](out))


def reference_processors(unet, registry, edited_names, num_prompts, edit_unconditional, state):
    procs = {}
    for layer in registry:
        procs[layer.processor_key] = MaterialisingAttention(state, layer.name in edited_names, num_prompts,
                                                            edit_unconditional)
    return installed_processors(unet, procs)

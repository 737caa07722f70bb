"""Independent, map-materialising references of the editing methods, written the way their authors' code works:
every attention call builds softmax(QK^T * d^-0.5) with einsum, the edit is applied to those probabilities (or,
for MasaCtrl and Plug-and-Play, to the rows' queries, keys and values first), and the output is probs @ V. Batch
rows are [uncond P, cond P] with prompt 0 the source. Used as the reference of tests/editing/test_methods.py and as the
materialising path of benchmarks/bench_methods.py.

``Spec`` says, per layer name and step, what is edited; steps are sets of step indices computed in the test with
the rule int(a*N) <= i < int(b*N), layers are sets of module paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from freeprompt.attention.processors import installed_processors


@dataclass
class Spec:
    prompts: int  # P: source + targets
    guided: bool = True
    fpe: tuple | None = None  # (layers, steps, edit_unconditional)
    masactrl: tuple | None = None  # (layers, steps)
    masactrl_mask: tuple | None = None  # (watched cross layers, {cond row: tokens}, threshold)
    pnp_attention: tuple | None = None  # (layers, steps)
    p2p_cross: tuple | None = None  # (steps, mapper (T, 77), alpha (T, 77), scale (T, 77))
    p2p_self: tuple | None = None  # (layers, steps)
    blend: tuple | None = None  # (watched cross layers, {cond row: tokens}, threshold, steps)
    step: int = 0
    step_maps: list = field(default_factory=list)  # this step's watched maps (MasaCtrl)
    blend_sum: dict = field(default_factory=dict)  # cond row -> summed word map over steps (local blend)
    record: dict | None = None  # {"kind": "cross" or "self", "sums": {}, "calls": {}}: the maps each call used

    def halves(self):
        return [0, self.prompts] if self.guided else [0]

    def cond(self):
        return self.prompts if self.guided else 0


class Materialising:
    def __init__(self, spec: Spec, name: str, is_cross: bool):
        self.spec, self.name, self.is_cross = spec, name, is_cross

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        b, n, _ = hidden_states.shape
        h = attn.heads
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        d = q.shape[-1] // h
        q, k, v = (x.reshape(b, -1, h, d).permute(0, 2, 1, 3).clone() for x in (q, k, v))
        if not self.is_cross:
            self._swap_rows(q, k, v)
        probs = torch.einsum("bhid,bhjd->bhij", q, k).mul(d ** -0.5).softmax(dim=-1)
        if self.is_cross:
            probs = self._edit_cross(probs)
            self._watch(probs, n)
            out = torch.einsum("bhij,bhjd->bhid", probs, v)
        else:
            probs = self._edit_self(probs)
            out = torch.einsum("bhij,bhjd->bhid", probs, v)
            out = self._masked(q, k, v, out, n)
        self._record(probs)
        out = out.permute(0, 2, 1, 3).reshape(b, n, h * d)
        return attn.to_out[1](attn.to_out[0](out))

    def _record(self, probs):
        """The head-averaged maps of the conditional rows, as the call used them, summed per layer."""
        rec = self.spec.record
        if rec is None or rec["kind"] != ("cross" if self.is_cross else "self"):
            return
        assert self.is_cross or self.spec.masactrl_mask is None, "masked rows' maps are not recorded here"
        rows = list(range(self.spec.cond(), self.spec.cond() + self.spec.prompts))
        rec["sums"][self.name] = rec["sums"].get(self.name, 0) + probs[rows].mean(1)
        rec["calls"][self.name] = rec["calls"].get(self.name, 0) + 1

    def _on(self, rule):
        return rule is not None and self.name in rule[0] and self.spec.step in rule[1]

    def _swap_rows(self, q, k, v):
        spec, p = self.spec, self.spec.prompts
        if self._on(spec.pnp_attention):
            source = spec.cond()
            for half in spec.halves():
                for t in range(1, p):
                    q[half + t], k[half + t] = q[source], k[source]
        if self._on(spec.masactrl):
            for half in spec.halves():
                for t in range(1, p):
                    k[half + t], v[half + t] = k[half], v[half]

    def _edit_self(self, probs):
        spec, p = self.spec, self.spec.prompts
        probs = probs.clone()
        if self._on(spec.fpe):
            halves = spec.halves() if spec.fpe[2] else [spec.cond()]
            for half in halves:
                for t in range(1, p):
                    probs[half + t] = probs[half]
        if self._on(spec.p2p_self):
            c = spec.cond()
            for t in range(1, p):
                probs[c + t] = probs[c]
        return probs

    def _edit_cross(self, probs):
        spec = self.spec
        if spec.p2p_cross is None or spec.step not in spec.p2p_cross[0]:
            return probs
        _, mapper, alpha, scale = spec.p2p_cross
        probs, c = probs.clone(), spec.cond()
        base = probs[c]
        for t in range(1, spec.prompts):
            mapped = base[:, :, mapper[t - 1]]
            new = mapped * alpha[t - 1].to(probs) + probs[c + t] * (1 - alpha[t - 1].to(probs))
            probs[c + t] = new * scale[t - 1].to(probs)
        return probs

    def _watch(self, probs, n):
        spec, side = self.spec, int(n ** 0.5)
        for rule, store in ((spec.masactrl_mask, "step"), (spec.blend, "blend")):
            if rule is None or self.name not in rule[0]:
                continue
            for row, tokens in rule[1].items():
                word = probs[row].mean(0)[:, tokens].sum(-1).reshape(side, side)
                if store == "step":
                    spec.step_maps.append((row, word))
                else:
                    spec.blend_sum[row] = spec.blend_sum.get(row, 0) + word

    def _masked(self, q, k, v, out, n):
        spec = self.spec
        if spec.masactrl_mask is None or not self._on(spec.masactrl) or not spec.step_maps:
            return out
        rows = sorted({r for r, _ in spec.step_maps})
        maps = {r: torch.stack([m for rr, m in spec.step_maps if rr == r]).mean(0) for r in rows}
        side = int(n ** 0.5)
        fg = {}
        for r, m in maps.items():
            m = (m - m.min()) / (m.max() - m.min())
            fg[r] = (F.interpolate(m[None, None], size=(side, side), mode="nearest")[0, 0].flatten()
                     >= spec.masactrl_mask[2])
        out = out.clone()
        c, low = spec.cond(), torch.finfo(q.dtype).min
        for half in spec.halves():
            for t in range(1, spec.prompts):
                row = half + t
                sim = torch.einsum("hid,hjd->hij", q[row], k[row]) * q.shape[-1] ** -0.5
                zero, blocked = torch.tensor(0.0, dtype=q.dtype), torch.tensor(low, dtype=q.dtype)
                on = torch.einsum("hij,hjd->hid", (sim + torch.where(fg[c], zero, blocked)).softmax(-1), v[row])
                off = torch.einsum("hij,hjd->hid", (sim + torch.where(fg[c], blocked, zero)).softmax(-1), v[row])
                inside = fg[c + t].to(q.dtype)[None, :, None]
                out[row] = on * inside + off * (1 - inside)
        return out


def installed(unet, registry, spec: Spec, only=None):
    """Every attention layer (or the layers named in ``only``) on the materialising path with ``spec``'s edits."""
    procs = {layer.processor_key: Materialising(spec, layer.name, layer.kind == "cross") for layer in registry
             if only is None or layer.name in only}
    return installed_processors(unet, procs)


def feature_hook(unet, module: str, spec: Spec, steps):
    """Plug-and-Play's feature injection as the authors do it: the source's output copied into the targets'."""
    def hook(mod, args, output):
        if spec.step not in steps:
            return output
        output = output.clone()
        for half in spec.halves():
            for t in range(1, spec.prompts):
                output[half + t] = output[spec.cond()]
        return output

    return unet.get_submodule(module).register_forward_hook(hook)


def blend_latents(spec: Spec, latents, latent_hw):
    """P2P's local blend after a step: max-pooled, resized, max-normalised word maps, union with the source's."""
    rule = spec.blend
    if rule is None or spec.step not in rule[3] or not spec.blend_sum:
        return latents
    c = spec.cond()
    masks = {}
    for row, m in spec.blend_sum.items():
        m = F.max_pool2d(m[None, None], 3, 1, 1)
        m = F.interpolate(m, size=latent_hw, mode="nearest")
        masks[row - c] = (m / m.max())[0] > rule[2]
    out = latents.clone()
    for t in range(1, spec.prompts):
        inside = (masks[0] | masks[t]).to(latents.dtype)
        out[t] = latents[0] + inside * (latents[t] - latents[0])
    return out

"""Carrying out a method's rules during one sampling run: which edit each layer computes at the current step, the
maps a method watches, MasaCtrl's masks and Prompt-to-Prompt's local blend.

The ``EditControl`` holds the declarations of ``rules.py`` for one run. The sampling loop tells it the current step
(``begin_step``, as a ``StepHooks``); nothing here infers the step by counting attention calls. The layer processors
(``processors.py``) ask it, at every call, what to do in their layer and hand it the maps it watches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..diffusion.hooks import StepHooks
from ..errors import BadInput
from .layers import AttentionLayer
from .reuse import SourceRows, physical, read_rows
from .rules import HALVES, BatchLayout, Blend, FeatureRule, MapWatch, MaskedMix, Rule


class EditControl(StepHooks):
    """The rules, watches, feature injections and local blends of one sampling run; pass it to ``sample`` as a
    hook. Two rules may not edit the same layer at the same step."""

    def __init__(self, layout: BatchLayout, rules: Sequence[Rule], num_steps: int, latent_hw: tuple[int, int],
                 watches: Sequence[MapWatch] = (), blends: Sequence[Blend] = (), features: Sequence[FeatureRule] = (),
                 reuse: SourceRows | None = None):
        self.layout = layout
        self.reuse = reuse  # a first edit keeps the source's rows in it; a re-edit (layout.absent) reads them back
        self.latent_hw = (int(latent_hw[0]), int(latent_hw[1]))
        self.rules = list(rules)
        self.num_steps = num_steps
        self.watches = list(watches)
        self.blends = list(blends)
        self.features = list(features)
        self.step: int | None = None
        self._active: dict[str, object] = {}
        self._check_overlaps()
        self._by_layer: dict[str, list[Rule]] = {}
        for rule in self.rules:
            for name in rule.layers:
                self._by_layer.setdefault(name, []).append(rule)
        self._watched = {name: w for w in self.watches for name in w.layers}

    def _check_overlaps(self) -> None:
        for i, a in enumerate(self.rules):
            for b in self.rules[i + 1:]:
                shared = a.layers & b.layers
                steps = set(a.steps.steps(self.num_steps)) & set(b.steps.steps(self.num_steps))
                if shared and steps:
                    raise BadInput(f"{a.method} and {b.method} both edit {a.kind}-attention layer {sorted(shared)[0]} "
                                   f"at step {min(steps)}", "give them layers or steps that do not overlap")

    @property
    def layer_names(self) -> set[str]:
        """Every layer a processor has to sit on: edited or watched."""
        return set(self._by_layer) | set(self._watched)

    def begin_step(self, step: int) -> None:
        self.step = step
        self._active = {name: rule.edit for name, rules in self._by_layer.items() for rule in rules
                        if rule.steps.contains(step, self.num_steps)}
        for watch in self.watches:
            if watch.per_step:
                watch.reset()

    @property
    def replaying(self) -> bool:
        """A re-edit: the UNet batch holds the targets' rows only."""
        return bool(self.layout.absent)

    def after_step(self, step: int, latents: torch.Tensor) -> torch.Tensor:
        active = [b for b in self.blends if b.steps.contains(step, self.num_steps)
                  and (b.watch is None or b.watch.sums is not None)]
        if not active:
            return latents
        prompts = BatchLayout(self.layout.sources, guidance=False, absent=self.layout.absent)  # a row per prompt
        latents = self._rows(("latents", step), prompts, (latents,), {0})[0]
        for blend in active:
            masks = blend_masks(blend, self.latent_hw, self.layout.num_prompts).to(latents.device)
            latents = blended(latents, self.layout, masks)
        return physical(prompts, latents) if self.replaying else latents

    def layer_inputs(self, layer: AttentionLayer, edit, watch: MapWatch | None, inputs: tuple) -> tuple:
        """The inputs an edited or watched layer computes on at this step: the whole batch. A first edit keeps the
        source's rows the layer reads; a re-edit puts them back beside the targets' (``reuse.py``)."""
        return self._rows(("layer", layer.name, self.step), self.layout, inputs, read_rows(edit, watch))

    def layer_output(self, out: torch.Tensor) -> torch.Tensor:
        """A layer's output for the UNet batch: the targets' rows only in a re-edit."""
        return physical(self.layout, out) if self.replaying else out

    def _rows(self, place: tuple, layout: BatchLayout, tensors: tuple, read: set[int]) -> tuple:
        if self.reuse is None:
            return tensors
        if self.replaying:
            return self.reuse.logical(place, layout, tensors)
        self.reuse.keep(place, layout, tensors, read)
        return tensors

    def end(self) -> None:
        self.step = None
        self._active = {}

    def edit_for(self, layer: AttentionLayer, batch: int):
        """What ``layer`` computes at the current step: a rule's edit, or None (plain attention)."""
        edit = self._active.get(layer.name)
        expected = len(self.layout.present_rows())
        if edit is not None and batch != expected:
            raise RuntimeError(f"the UNet batch has {batch} rows but the edit layout has {expected}; "
                               "run the UNet through freeprompt's sampling loop")
        return edit

    def watch_for(self, layer: AttentionLayer) -> MapWatch | None:
        return self._watched.get(layer.name)

    def observe(self, watch: MapWatch, maps: dict[int, torch.Tensor], layer: AttentionLayer) -> None:
        """Add ``layer``'s head-averaged maps (queries, text tokens) of the watched rows to ``watch``'s sums."""
        grid = layer.grid(self.latent_hw)
        picked = torch.stack([maps[row][:, positions].sum(-1) for row, positions in watch.tokens.items()])
        picked = picked.reshape(len(watch.tokens), *grid).float()
        if watch.grid is not None and watch.grid != grid:
            raise BadInput(f"watched cross-attention layers have different grids ({watch.grid} and {grid})",
                           "watch layers of one resolution")
        watch.sums = picked if watch.sums is None else watch.sums + picked
        watch.grid = grid

    def masks(self, edit: MaskedMix, layer: AttentionLayer):
        """MasaCtrl's masks for ``layer`` at this step: ({target batch row: (source's foreground, its own
        foreground)} as binary maps on the watched grid, the layer's grid), or (None, None) before the step's first
        watched map."""
        watch = edit.watch
        if watch.sums is None:
            return None, None
        flat = watch.sums.flatten(1)
        low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
        normed = ((flat - low) / (high - low).clamp_min(1e-12)).reshape(watch.sums.shape)
        foreground = {row: normed[i] >= edit.threshold for i, row in enumerate(watch.rows())}
        masks = {}
        for half in HALVES:
            start = self.layout.offset(half)
            if start is None:
                continue
            for p in self.layout.targets:
                source_fg = foreground[self.layout.cond_row(self.layout.sources[p])]
                masks[start + p] = (source_fg, foreground[self.layout.cond_row(p)])
        return masks, layer.grid(self.latent_hw)

    def feature_active(self, feature: FeatureRule) -> bool:
        return self.step is not None and feature.steps.contains(self.step, self.num_steps)

    def inject(self, feature: FeatureRule, output: torch.Tensor) -> torch.Tensor:
        """A feature module's output with every target row replaced by its source's, in the active steps."""
        if not self.feature_active(feature):
            return output
        expected = len(self.layout.present_rows())
        if output.shape[0] != expected:
            raise RuntimeError(f"{feature.module} ran on {output.shape[0]} rows but the edit layout has {expected}; "
                               "run the UNet through freeprompt's sampling loop")
        (output,) = self._rows(("feature", feature.module, self.step), self.layout, (output,), set(feature.sources))
        injected = output.index_select(0, torch.tensor(feature.sources, device=output.device))
        return self.layer_output(injected)

    def edited_steps(self) -> dict[str, list[int]]:
        """For each rule (by method and kind), the steps it edits."""
        out: dict[str, list[int]] = {}
        for rule in self.rules:
            out.setdefault(f"{rule.method} {rule.kind}", rule.steps.steps(self.num_steps))
        for feature in self.features:
            out.setdefault(f"{feature.method} features", feature.steps.steps(self.num_steps))
        return out


def blend_masks(blend: Blend, latent_hw: tuple[int, int], num_prompts: int) -> torch.Tensor:
    """(prompts, 1, h, w) boolean word masks on the latent grid, in prompt order (see ``rules.Blend``); all False
    for a blend without a watch (a shared start)."""
    if blend.watch is None:
        return torch.zeros((num_prompts, 1, *latent_hw), dtype=torch.bool)
    sums = blend.watch.sums
    assert sums is not None
    maps = F.max_pool2d(sums[:, None], kernel_size=3, stride=1, padding=1)
    maps = F.interpolate(maps, size=latent_hw, mode="nearest")
    maps = maps / maps.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    return maps > blend.threshold


def blended(latents: torch.Tensor, layout: BatchLayout, masks: torch.Tensor) -> torch.Tensor:
    """Every target's latents outside the union of its source's mask and its own reset to the source's."""
    out = latents.clone()
    for p in layout.targets:
        s = layout.sources[p]
        inside = (masks[s] | masks[p]).to(latents.dtype)
        out[p] = latents[s] + inside * (latents[p] - latents[s])
    return out


__all__ = ["EditControl", "blend_masks", "blended"]

"""The edit control on its own: which edit a layer computes at which step, the refusals, the watched maps' sums,
MasaCtrl's masks and Prompt-to-Prompt's local blend, each against an expectation written out here."""

import pytest
import torch
import torch.nn.functional as F

from freeprompt.attention.control import EditControl, blend_masks, blended
from freeprompt.attention.layers import AttentionLayer
from freeprompt.attention.rules import BatchLayout, Blend, FeatureRule, MapWatch, MaskedMix, RowMix, Rule
from freeprompt.attention.steps import StepRange
from freeprompt.errors import BadInput

SELF = AttentionLayer("down_blocks.0.attentions.0.transformer_blocks.0.attn1", "self", 1, "down", 0, 0)
DEEP = AttentionLayer("down_blocks.1.attentions.0.transformer_blocks.0.attn1", "self", 2, "down", 1, 1)
CROSS = AttentionLayer("down_blocks.1.attentions.0.transformer_blocks.0.attn2", "cross", 1, "down", 1, 1)
LAYOUT = BatchLayout.one_source(2)  # prompts 0 (source), 1, 2; rows [uncond 0-2, cond 3-5]


def test_the_layout_names_rows_and_mixes():
    assert LAYOUT.num_rows == 6 and LAYOUT.targets == [1, 2] and LAYOUT.cond_row(2) == 5
    mix = LAYOUT.mix(queries="source", keys="source", values="own", halves=("cond",))
    assert mix == RowMix((0, 1, 2, 3, 3, 3), (0, 1, 2, 3, 3, 3), (0, 1, 2, 3, 4, 5))
    both = LAYOUT.mix(queries="own", keys="source", values="source_cond", halves=("uncond", "cond"))
    assert both.keys == (0, 0, 0, 3, 3, 3) and both.values == (0, 3, 3, 3, 3, 3)
    unguided = BatchLayout.one_source(1, guidance=False)
    assert unguided.offset("uncond") is None and unguided.mix(keys="source", halves=("uncond", "cond")).keys == (0, 0)


def test_edits_follow_the_step_rule_and_the_batch_is_checked():
    mix = LAYOUT.mix(queries="source", keys="source")
    control = EditControl(LAYOUT, [Rule("self", frozenset({SELF.name}), StepRange(0.2, 0.6), mix, "fpe")], 10,
                          (8, 8))
    active = []
    for step in range(10):
        control.begin_step(step)
        active.append(control.edit_for(SELF, 6) is mix)
        assert control.edit_for(DEEP, 6) is None
    assert active == [i in (2, 3, 4, 5) for i in range(10)]  # int(0.2*10) <= i < int(0.6*10)
    control.begin_step(3)
    with pytest.raises(RuntimeError, match="UNet batch has 4 rows"):
        control.edit_for(SELF, 4)
    control.end()
    assert control.edit_for(SELF, 4) is None and control.layer_names == {SELF.name}
    assert control.edited_steps() == {"fpe self": [2, 3, 4, 5]}


def test_two_rules_on_one_layer_and_step_are_refused_but_not_apart():
    mix = LAYOUT.mix()
    first = Rule("self", frozenset({SELF.name}), StepRange(0, 0.5), mix, "fpe")
    with pytest.raises(BadInput, match="fpe and p2p both edit self-attention layer .* at step 4"):
        EditControl(LAYOUT, [first, Rule("self", frozenset({SELF.name}), StepRange(0.4, 1), mix, "p2p")], 10, (8, 8))
    EditControl(LAYOUT, [first, Rule("self", frozenset({SELF.name}), StepRange(0.5, 1), mix, "p2p")], 10, (8, 8))
    EditControl(LAYOUT, [first, Rule("self", frozenset({DEEP.name}), StepRange(0, 1), mix, "p2p")], 10, (8, 8))


def test_watched_maps_add_up_per_run_or_per_step():
    tokens = {3: [1, 2], 4: [2]}
    for per_step in (False, True):
        watch = MapWatch(frozenset({CROSS.name}), tokens, per_step)
        control = EditControl(LAYOUT, [], 4, (8, 8), watches=[watch])
        assert control.watch_for(CROSS) is watch and control.layer_names == {CROSS.name}
        maps = {row: torch.rand(16, 77) for row in (3, 4)}  # (queries of the 4x4 grid, tokens)
        for step in range(2):
            control.begin_step(step)
            control.observe(watch, maps, CROSS)
        want = torch.stack([maps[3][:, [1, 2]].sum(-1), maps[4][:, 2]]).reshape(2, 4, 4)
        assert torch.allclose(watch.sums, want * (1 if per_step else 2)) and watch.grid == (4, 4)
    with pytest.raises(BadInput, match="different grids"):
        control.observe(watch, {row: torch.rand(64, 77) for row in (3, 4)}, SELF)


def test_masactrl_masks_pair_each_target_with_its_source():
    watch = MapWatch(frozenset({CROSS.name}), {3: [1], 4: [1], 5: [1]}, per_step=True)
    edit = MaskedMix(LAYOUT.mix(keys="source", values="source", halves=("uncond", "cond")), watch, 0.5)
    control = EditControl(LAYOUT, [], 4, (8, 8), watches=[watch])
    assert control.masks(edit, SELF) == (None, None)  # before the step's first watched map
    watch.sums = torch.stack([torch.arange(16.0).reshape(4, 4), torch.ones(4, 4), torch.eye(4)])
    masks, grid = control.masks(edit, SELF)
    assert grid == (8, 8) and sorted(masks) == [1, 2, 4, 5]  # both halves' target rows
    source_fg = torch.arange(16.0).reshape(4, 4) / 15 >= 0.5
    assert torch.equal(masks[4][0], source_fg) and torch.equal(masks[1][0], source_fg)
    assert not masks[4][1].any()  # a constant map: normalised to 0 everywhere (0 / (1e-12))
    assert torch.equal(masks[5][1], torch.eye(4) >= 0.5)


def test_local_blend_resets_targets_outside_the_word_masks():
    watch = MapWatch(frozenset({CROSS.name}), {3: [1], 4: [1], 5: [1]}, per_step=False)
    sums = torch.zeros(3, 4, 4)
    sums[0, 0, 0], sums[1, 3, 3], sums[2] = 1.0, 1.0, 0.0
    watch.sums = sums
    blend = Blend(watch, 0.3, StepRange(0.5, 1))
    masks = blend_masks(blend, (8, 8), 3)
    pooled = F.interpolate(F.max_pool2d(sums[:, None], 3, 1, 1), size=(8, 8), mode="nearest")
    want = pooled / pooled.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12) > 0.3
    assert torch.equal(masks, want) and masks[0, 0, :4, :4].any() and not masks[2].any()
    latents = torch.randn(3, 4, 8, 8)
    out = blended(latents, LAYOUT, masks)
    inside = masks[0] | masks[1]
    assert torch.equal(out[0], latents[0])
    assert torch.allclose(out[1], torch.where(inside, latents[1], latents[0]))
    assert torch.allclose(out[2], torch.where(masks[0], latents[2], latents[0]))
    control = EditControl(LAYOUT, [], 4, (8, 8), watches=[watch], blends=[blend])
    assert torch.equal(control.after_step(1, latents), latents)  # outside the blend's steps (2, 3)
    assert torch.equal(control.after_step(2, latents), out)


def test_a_blend_without_a_watch_is_a_shared_start():
    # after each of its steps every target's latents are its source's (each target of LAYOUT has source 0); outside
    # them, and for the source, the latents pass unchanged
    control = EditControl(LAYOUT, [], 10, (8, 8), blends=[Blend(None, 0.0, StepRange(0, 0.2))])
    latents = torch.randn(3, 4, 8, 8)
    shared = control.after_step(1, latents)
    assert all(torch.equal(shared[p], latents[0]) for p in range(3))
    assert torch.equal(control.after_step(2, latents), latents)
    assert not blend_masks(Blend(None, 0.0, StepRange(0, 1)), (8, 8), 3).any()


def test_feature_rules_are_active_in_their_steps():
    feature = FeatureRule("up_blocks.1.resnets.1.conv2", StepRange(0, 0.5), (0, 0, 0, 3, 3, 3), "pnp")
    control = EditControl(LAYOUT, [], 4, (8, 8), features=[feature])
    assert not control.feature_active(feature)  # no step yet
    control.begin_step(1)
    assert control.feature_active(feature)
    control.begin_step(2)
    assert not control.feature_active(feature) and control.edited_steps() == {"pnp features": [0, 1]}

"""The attention kernels and the one layer processor on a single diffusers ``Attention`` module (float64, random
weights), against attention written out with materialised maps here: every row's queries, keys and values taken
from the rows a mix names, Prompt-to-Prompt's edited maps, MasaCtrl's foreground/background restriction; what a
kernel reports as computed (``Computed``) gives exactly the maps it used; the processor defers when it has nothing
to do and composes a control with observers in either order."""

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from freeprompt.attention.control import EditControl
from freeprompt.attention.kernels import (
    edited_cross_attention,
    masked_mutual_attention,
    mixed_attention,
    plain_attention,
)
from freeprompt.attention.layers import AttentionLayer
from freeprompt.attention.processors import LayerProcessor, attached
from freeprompt.attention.rules import BatchLayout, CrossMapEdit, MapWatch, MaskedMix, RowMix, Rule
from freeprompt.attention.steps import StepRange
from freeprompt.errors import BadInput

TOL = 1e-10
LAYOUT = BatchLayout.one_source(2)  # 3 prompts, 6 rows


@pytest.fixture
def attn():
    torch.manual_seed(0)
    module = Attention(query_dim=16, heads=2, dim_head=8).double()
    module.set_processor(AttnProcessor2_0())
    return module


@pytest.fixture
def cross():
    torch.manual_seed(1)
    module = Attention(query_dim=16, cross_attention_dim=12, heads=2, dim_head=8).double()
    module.set_processor(AttnProcessor2_0())
    return module


def heads(x, n=2):
    return x.view(x.shape[0], x.shape[1], n, -1).transpose(1, 2)


def materialised(attn, q_in, kv_in, rows, maps_edit=None):
    """Row b attends with the queries of q_in[rows.q[b]] to the keys and values of kv_in[rows.k/v[b]]; returns
    (output, maps) with maps (batch, heads, queries, keys) after ``maps_edit``."""
    q = heads(attn.to_q(q_in))[list(rows[0])]
    k = heads(attn.to_k(kv_in))[list(rows[1])]
    v = heads(attn.to_v(kv_in))[list(rows[2])]
    maps = (q @ k.transpose(-1, -2) * attn.scale).softmax(-1)
    maps = maps_edit(maps) if maps_edit else maps
    out = (maps @ v).transpose(1, 2).reshape(q.shape[0], -1, 16)
    return attn.to_out[1](attn.to_out[0](out)), maps


def test_plain_attention_is_diffusers_and_reports_its_maps(attn):
    x = torch.randn(6, 9, 16, dtype=torch.float64)
    out, computed = plain_attention(attn, x)
    assert torch.equal(out, AttnProcessor2_0()(attn, x))  # the same operations in the same order
    _, want = materialised(attn, x, x, [range(6)] * 3)
    got = computed.head_maps(list(range(6)))
    assert all((got[r] - want[r].mean(0)).abs().max() < TOL for r in range(6))


def test_mixed_attention_takes_each_rows_queries_keys_and_values_from_the_named_rows(attn):
    x = torch.randn(6, 9, 16, dtype=torch.float64)
    for mix in (LAYOUT.mix(queries="source", keys="source", values="own"),  # FPE
                LAYOUT.mix(queries="own", keys="source", values="source", halves=("uncond", "cond")),  # MasaCtrl
                LAYOUT.mix(queries="source_cond", keys="source_cond", values="own", halves=("uncond", "cond"))):
        out, computed = mixed_attention(attn, x, None, mix)
        want, maps = materialised(attn, x, x, (mix.queries, mix.keys, mix.values))
        assert (out - want).abs().max() < TOL
        got = computed.head_maps([3, 4, 5])
        assert all((got[r] - maps[r].mean(0)).abs().max() < TOL for r in (3, 4, 5))
    same = RowMix(*[tuple(range(6))] * 3)
    assert (mixed_attention(attn, x, None, same)[0] - AttnProcessor2_0()(attn, x)).abs().max() < TOL


def test_p2p_edited_cross_attention_and_its_reported_maps(cross):
    x, text = torch.randn(6, 9, 16, dtype=torch.float64), torch.randn(6, 5, 12, dtype=torch.float64)
    mapper = ((0, 2, 1, 3, 4), (0, 1, 2, 3, 3))
    alpha = ((1.0, 1.0, 0.0, 1.0, 1.0), (1.0, 1.0, 1.0, 1.0, 1.0))
    scale = ((1.0, 1.0, 1.0, 2.0, 1.0), (1.0, 1.0, 1.0, 1.0, 1.0))
    edit = CrossMapEdit((4, 5), (3, 3), mapper, alpha, scale)

    def p2p(maps):
        maps = maps.clone()
        for i, row in enumerate((4, 5)):
            a, s = torch.tensor(alpha[i], dtype=maps.dtype), torch.tensor(scale[i], dtype=maps.dtype)
            maps[row] = (maps[3][..., list(mapper[i])] * a + maps[row] * (1 - a)) * s
        return maps

    out, computed = edited_cross_attention(cross, x, text, edit)
    want, maps = materialised(cross, x, text, [range(6)] * 3, p2p)
    assert (out - want).abs().max() < TOL
    got = computed.head_maps([3, 4, 5])
    assert sorted(computed.edited) == [4, 5]
    assert all((got[r] - maps[r].mean(0)).abs().max() < TOL for r in (3, 4, 5))


def test_masactrl_masked_attention_and_its_reported_maps(attn):
    x = torch.randn(6, 9, 16, dtype=torch.float64)  # a 3x3 grid
    mix = LAYOUT.mix(queries="own", keys="source", values="source", halves=("uncond", "cond"))
    source_fg = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    own_fg = torch.tensor([[0, 1, 1], [0, 1, 0], [0, 0, 0]], dtype=torch.bool)
    masks = {row: (source_fg, own_fg) for row in (1, 2, 4, 5)}
    out, computed = masked_mutual_attention(attn, x, MaskedMix(mix, None, 0.1), masks, (3, 3))
    allowed = own_fg.flatten()[:, None] == source_fg.flatten()[None, :]  # foreground to foreground, and so on

    def restricted(maps):
        maps = maps.clone()
        for row in masks:
            scores = maps[row].log().masked_fill(~allowed, float("-inf"))
            maps[row] = scores.softmax(-1)
        return maps

    want, maps = materialised(attn, x, x, (mix.queries, mix.keys, mix.values), restricted)
    assert (out - want).abs().max() < TOL
    got = computed.head_maps(list(range(6)))
    assert all((got[r] - maps[r].mean(0)).abs().max() < TOL for r in range(6))
    assert all(got[r][~allowed].abs().max() < TOL for r in masks)


class Observer:
    def __init__(self):
        self.seen = []

    def recording_now(self):
        return True

    def observe(self, layer, attn, computed):
        self.seen.append(computed)


class Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        self.calls += 1
        return AttnProcessor2_0()(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def test_the_processor_defers_computes_edits_and_shows_observers(attn):
    layer = AttentionLayer("attn1", "self", 1, "down", 0)
    x = torch.randn(6, 9, 16, dtype=torch.float64)
    original = Counting()
    processor = LayerProcessor(layer, original)
    assert torch.equal(processor(attn, x), AttnProcessor2_0()(attn, x)) and original.calls == 1  # nothing to do
    observer = Observer()
    processor.observers.append(observer)
    assert (processor(attn, x) - AttnProcessor2_0()(attn, x)).abs().max() < TOL and original.calls == 2
    assert len(observer.seen) == 1  # another processor underneath: called as is, Q and K projected again
    mix = LAYOUT.mix(queries="source", keys="source")
    processor.control = EditControl(LAYOUT, [Rule("self", frozenset({"attn1"}), StepRange(0, 1), mix, "fpe")], 2,
                                    (3, 3))
    processor.control.begin_step(0)
    assert torch.equal(processor(attn, x), mixed_attention(attn, x, None, mix)[0]) and original.calls == 2
    assert torch.equal(observer.seen[-1].query[4], observer.seen[-1].query[3])  # the observer saw the edit


class Unet(torch.nn.Module):
    """The two attention layers of a stand-in UNet, with diffusers' processor API."""

    def __init__(self, attn):
        super().__init__()
        self.first, self.second = attn, Attention(query_dim=16, heads=2, dim_head=8).double()

    @property
    def attn_processors(self):
        return {"first.processor": self.first.processor, "second.processor": self.second.processor}

    def set_attn_processor(self, processors):
        self.first.set_processor(processors["first.processor"])
        self.second.set_processor(processors["second.processor"])


def test_a_control_and_observers_attach_in_either_order_and_leave_nothing_behind(attn):
    unet = Unet(attn)
    before = dict(unet.attn_processors)
    first = AttentionLayer("first", "self", 1, "down", 0)
    second = AttentionLayer("second", "self", 2, "down", 0)
    control = EditControl(LAYOUT, [], 2, (3, 3), watches=[MapWatch(frozenset(), {}, False)])
    observer = Observer()
    with attached(unet, [first, second], observer=observer):
        with attached(unet, [first], control=control):
            processor = unet.attn_processors["first.processor"]
            assert processor.control is control and processor.observers == [observer]
            with pytest.raises(BadInput, match="already edited"):
                with attached(unet, [first], control=control):
                    pass
        assert processor.control is None and processor.observers == [observer]
        with attached(unet, [second], control=control):  # the control inside, then the observer outside it
            with attached(unet, [second], observer=Observer()) as (inner,):
                assert inner.control is control and len(inner.observers) == 2
            assert inner.observers == [observer]
    assert unet.attn_processors == before

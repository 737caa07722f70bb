"""The cross-attention map sharing of benchmarks/layout_carrier.py (a diagnostic for the fixture's model card)
against a map-materialising reference: each row's map softmax(Q K^T / sqrt(d)) built explicitly, the target's
replaced by its source's, applied to the target's own values."""

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "layout_carrier.py"


def _script():
    spec = importlib.util.spec_from_file_location("layout_carrier", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shared_cross_attention_maps_match_a_materialising_reference(tiny_pipe64):
    from freeprompt.attention.layers import discover_layers

    unet = tiny_pipe64.unet
    layer = discover_layers(unet).select("all", "cross", (8, 8))[0]
    attn = unet.get_submodule(layer.name)
    torch.manual_seed(0)
    hidden = torch.randn(4, 16, attn.to_q.in_features, dtype=torch.float64)
    context = torch.randn(4, 7, attn.to_k.in_features, dtype=torch.float64)
    rows = [0, 1, 2, 2]  # [uncond source, uncond target, cond source, cond target]
    processor = _script().SourceCrossAttentionMaps(original=None, rows=rows)
    with torch.no_grad():
        got = processor(attn, hidden, encoder_hidden_states=context)
        h = attn.heads
        q, k, v = attn.to_q(hidden), attn.to_k(context), attn.to_v(context)
        d = q.shape[-1] // h
        q, k, v = (x.reshape(4, -1, h, d).permute(0, 2, 1, 3) for x in (q, k, v))
        maps = torch.einsum("bhid,bhjd->bhij", q, k).mul(d ** -0.5).softmax(dim=-1)
        maps = maps[rows]
        out = torch.einsum("bhij,bhjd->bhid", maps, v).permute(0, 2, 1, 3).reshape(4, 16, h * d)
        expected = attn.to_out[1](attn.to_out[0](out))
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
    # rows 0-2 are plain cross-attention; row 3 differs from its own plain attention
    plain = torch.einsum("bhij,bhjd->bhid", torch.einsum("bhid,bhjd->bhij", q, k).mul(d ** -0.5).softmax(-1), v)
    plain = attn.to_out[0](plain.permute(0, 2, 1, 3).reshape(4, 16, h * d))
    assert not torch.allclose(got[3], plain[3])
    torch.testing.assert_close(got[:3], plain[:3], atol=1e-10, rtol=1e-10)


def test_self_attention_calls_go_to_the_original_processor():
    calls = []
    processor = _script().SourceCrossAttentionMaps(original=lambda *a, **k: calls.append(a) or "original",
                                                   rows=[0, 1, 2, 2])
    assert processor(object(), torch.zeros(4, 3, 8)) == "original" and len(calls) == 1

"""The cross-attention map sharing of lab/diagnostics/layout_carrier.py (a diagnostic of the fixture's development)
against a map-materialising reference: each row's map softmax(Q K^T / sqrt(d)) built explicitly, the target's
replaced by its source's, applied to the target's own values. And its shared-start methods: after each of the
first K steps the target row holds the source's latents, then follows its own prompt (checked on the latents the
UNet receives in the sampling loop)."""

import torch


def _script():
    from lab.diagnostics import layout_carrier

    return layout_carrier


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


def _unet_inputs(pipe, hooks, steps: int) -> list[torch.Tensor]:
    from freeprompt.editing.generated import edit

    inputs = []
    hook = pipe.unet.register_forward_hook(lambda module, args, out: inputs.append(args[0].clone()))
    try:
        edit(pipe, "a red circle", ["a blue circle"], seed=5, steps=steps, guidance=3.0, progress=False,
             self_replace="0:0", hooks=[] if hooks is None else [hooks], decode=False)
    finally:
        hook.remove()
    assert len(inputs) == steps
    # guided batch rows: [source, target, source, target]
    return [x.chunk(2)[0] for x in inputs]


def test_target_takes_the_source_latents_for_the_shared_steps_only(tiny_pipe64):
    steps, shared = 5, 2
    inputs = _unet_inputs(tiny_pipe64, _script().source_trajectory_for(shared), steps)
    for i, rows in enumerate(inputs):
        apart = (rows[0] - rows[1]).abs().max().item()
        if i <= shared:  # step 0 starts from the same noise; steps 1..K follow overwritten latents
            assert apart == 0.0, (i, apart)
        else:
            assert apart > 1e-4, (i, apart)
    # without the hook the target has left the source by step 1 already
    plain = _unet_inputs(tiny_pipe64, None, steps)
    assert (plain[1][0] - plain[1][1]).abs().max().item() > 1e-4
    assert torch.equal(plain[0], inputs[0])

"""The attention recorder against a map-materialising reference written here (einsum softmax(QK^T/sqrt(d)) per
head, then the mean over heads), on the tiny random pipeline in float64.

One generation serves both: the reference processors wrap the original (SDPA) processors and keep every
call's full per-row map; the recorder wraps the reference processors. The final latents must equal plain
generation, so recording changes nothing."""

import pytest
import torch

from freeprompt.attention import discover_layers, installed_processors
from freeprompt.attention.recorder import pool_factors, record_attention
from freeprompt.attention.tokens import prompt_tokens, word_token_indices
from freeprompt.diffusion import ddim_scheduler, encode_prompts, initial_latents, latent_shape, sample
from freeprompt.errors import BadInput
from support.steps import StepCallback

STEPS = 4
TOL = 1e-6


class MaterialisingMaps:
    def __init__(self, name, original, store, state):
        self.name, self.original, self.store, self.state = name, original, store, state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kw)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        b, h = hidden_states.shape[0], attn.heads
        q, k = attn.to_q(hidden_states), attn.to_k(context)
        d = q.shape[-1] // h
        q = q.reshape(b, -1, h, d).permute(0, 2, 1, 3)
        k = k.reshape(b, -1, h, d).permute(0, 2, 1, 3)
        maps = torch.einsum("bhid,bhjd->bhij", q, k).mul(d ** -0.5).softmax(dim=-1).mean(dim=1)
        self.store.setdefault(self.name, []).append((self.state["step"], maps))
        return out


def generate(pipe, prompts, size=(64, 64), guidance=7.5, **record):
    """Returns (final latents, recorder or None, reference maps {layer: [(step, (B, N, K))]})."""
    shape = latent_shape(pipe, *size)
    noise = torch.cat([initial_latents(7 + i, shape, "cpu", pipe.unet.dtype) for i in range(len(prompts))])
    emb = encode_prompts(pipe, prompts, "", guidance > 1, "cpu")
    scheduler = ddim_scheduler(pipe.scheduler.config)
    if not record:
        return sample(pipe.unet, scheduler, noise, emb, STEPS, guidance), None, None
    registry = discover_layers(pipe.unet)
    state, store = {"step": None}, {}
    originals = pipe.unet.attn_processors
    refs = {layer.processor_key: MaterialisingMaps(layer.name, originals[layer.processor_key], store, state)
            for layer in registry.of_kind(record.get("kind", "cross"))}
    with installed_processors(pipe.unet, refs):
        with record_attention(pipe, **record) as rec:
            def on_step(i):
                state["step"] = i
                rec.begin_step(i)

            final = sample(pipe.unet, scheduler, noise, emb, STEPS, guidance, hooks=[StepCallback(on_step)])
    return final, rec, store


def expected_cross(store, layer, latent_hw, rows, positions, steps=None):
    maps = [m for step, m in store[layer.name] if steps is None or step in steps]
    mean = torch.stack(maps).mean(0)[rows]  # (P, N, T)
    h, w = layer.grid(latent_hw)
    return torch.stack([mean[r][:, pos].mean(-1) for r, pos in enumerate(positions)]).reshape(-1, h, w)


def cond_rows(p):
    return slice(p, 2 * p)


def test_cross_maps_equal_reference_and_generation_is_unchanged(tiny_pipe64):
    pipe = tiny_pipe64
    prompts = ["a red car", "a photo of a blue truck"]
    positions = [word_token_indices(pipe.tokenizer, p, w) for p, w in zip(prompts, ["red", "blue"])]
    assert positions == [[2], [5]]
    plain, _, _ = generate(pipe, prompts)
    final, rec, store = generate(pipe, prompts, kind="cross", tokens=positions)
    assert (final - plain).abs().max().item() <= 1e-5
    maps = rec.maps()
    registry = discover_layers(pipe.unet)
    assert list(maps) == [layer.name for layer in registry.of_kind("cross")]
    for layer in registry.of_kind("cross"):
        want = expected_cross(store, layer, (8, 8), cond_rows(2), positions)
        assert maps[layer.name].shape == want.shape == (2, *layer.grid((8, 8)))
        assert (maps[layer.name] - want).abs().max().item() <= TOL, layer
    assert rec.calls[registry.of_kind("cross")[0].name] == STEPS
    assert rec.steps_seen == set(range(STEPS))


def test_multi_token_word_several_labels_step_subset_and_word_maps(tiny_pipe64):
    pipe = tiny_pipe64
    prompts = ["a red car", "a xylophonist standing in the park"]
    word = word_token_indices(pipe.tokenizer, prompts[1], "xylophonist")
    assert word == [2, 3, 4, 5]  # four sub-tokens
    tokens = {"target": [[2], word], "a": [1]}
    final, rec, store = generate(pipe, prompts, kind="cross", tokens=tokens, layers="1,7,16", steps=[1, 3])
    assert rec.steps_seen == {1, 3}
    registry = discover_layers(pipe.unet)
    chosen = [layer for layer in registry.of_kind("cross") if layer.index in (1, 7, 16)]
    target, article = rec.maps("target"), rec.maps("a")
    assert list(target) == [layer.name for layer in chosen]
    for layer in chosen:
        assert rec.calls[layer.name] == 2
        want = expected_cross(store, layer, (8, 8), cond_rows(2), [[2], word], steps={1, 3})
        assert (target[layer.name] - want).abs().max().item() <= TOL
        want_a = expected_cross(store, layer, (8, 8), cond_rows(2), [[1], [1]], steps={1, 3})
        assert (article[layer.name] - want_a).abs().max().item() <= TOL
        # the map of a multi-token word is the mean of its sub-tokens' maps, not one of them
        one = expected_cross(store, layer, (8, 8), cond_rows(2), [[2], [2]], steps={1, 3})
        if layer.index != 7:  # the 1x1 mid layer's map is always 1/77-ish per token and the same shape
            assert (one[1] - target[layer.name][1]).abs().max().item() > 1e-6
    with pytest.raises(BadInput):
        rec.maps()  # two labels: must name one

    # all positions kept, words picked afterwards
    _, full, _ = generate(pipe, prompts, kind="cross", tokens=None, layers="1,7,16", steps=[1, 3])
    by_word = full.word_maps("xylophonist", ["a xylophonist car", prompts[1]])
    for layer in chosen:
        assert full.maps()[layer.name].shape[:2] == (2, 77)
        assert (by_word[layer.name][1] - target[layer.name][1]).abs().max().item() <= TOL


def test_unconditional_branch_and_no_guidance(tiny_pipe64):
    pipe = tiny_pipe64
    prompts = ["a red car"]
    _, rec, store = generate(pipe, prompts, kind="cross", tokens=[2], layers="2", branch="uncond")
    layer = discover_layers(pipe.unet).of_kind("cross")[1]
    want = expected_cross(store, layer, (8, 8), slice(0, 1), [[2]])
    assert (rec.maps()[layer.name] - want).abs().max().item() <= TOL
    _, rec, store = generate(pipe, prompts, guidance=1.0, kind="cross", tokens=[2], layers="2", cfg=False)
    want = expected_cross(store, layer, (8, 8), slice(0, 1), [[2]])
    assert (rec.maps()[layer.name] - want).abs().max().item() <= TOL


def test_self_maps_equal_reference_full_and_pooled(tiny_pipe64):
    pipe = tiny_pipe64
    prompts = ["a red car", "a blue truck"]
    size = (128, 192)  # 16x24 latents: grids 16x24, 8x12, 4x6, 2x3, 1x2
    plain, _, _ = generate(pipe, prompts, size=size)
    final, rec, store = generate(pipe, prompts, size=size, kind="self", self_max_tokens=64,
                                 max_chunk_elements=3000)  # tiny chunks: many query bands and head loops
    assert (final - plain).abs().max().item() <= 1e-5
    assert pool_factors((16, 24), 64) == (4, 3) and pool_factors((8, 12), 64) == (2, 2)
    maps = rec.maps()
    for layer in discover_layers(pipe.unet).of_kind("self"):
        full = torch.stack([m for _, m in store[layer.name]]).mean(0)[cond_rows(2)]  # (P, N, N)
        gh, gw = layer.grid((16, 24))
        fh, fw = pool_factors((gh, gw), 64)
        ph, pw = gh // fh, gw // fw
        # pooled reference: mean over query blocks, sum over key blocks
        pooled = full.reshape(2, ph, fh, pw, fw, ph, fh, pw, fw).mean(dim=(2, 4)).sum(dim=(4, 6))
        want = pooled.reshape(2, ph * pw, ph * pw)
        assert maps[layer.name].shape == want.shape
        assert rec.grids[layer.name] == (ph, pw)
        assert (maps[layer.name] - want).abs().max().item() <= TOL, layer
        assert torch.allclose(maps[layer.name].sum(-1), torch.ones(2, ph * pw, dtype=torch.float64))
    big = discover_layers(pipe.unet).of_kind("self")[0]
    assert maps[big.name].shape == (2, 32, 32)  # 16x24 grid pooled by 4x3 -> 4x8


def test_self_maps_unpooled_on_8x8(tiny_pipe64):
    pipe = tiny_pipe64
    _, rec, store = generate(pipe, ["a red car"], kind="self", layers="1,16", steps=[0, 2])
    for layer in discover_layers(pipe.unet).select("1,16", "self", (8, 8)):
        want = torch.stack([m for s, m in store[layer.name] if s in (0, 2)]).mean(0)[1:2]
        assert rec.maps()[layer.name].shape == (1, 64, 64)
        assert (rec.maps()[layer.name] - want).abs().max().item() <= TOL


def test_bad_input_is_one_line(tiny_pipe):
    tok = tiny_pipe.tokenizer
    with pytest.raises(BadInput) as err:
        word_token_indices(tok, "a red car", "blue")
    text = str(err.value)
    assert "'blue'" in text and "a, red, car" in text and "\n" not in text
    assert prompt_tokens(tok, "a red car") == ["<|startoftext|>", "a", "red", "car", "<|endoftext|>"]
    assert word_token_indices(tok, "a red car and a red bus", "red", occurrence=None) == [2, 6]
    assert word_token_indices(tok, "a red car and a red bus", "red", occurrence=1) == [6]
    with pytest.raises(BadInput):
        word_token_indices(tok, "a red car", "red", occurrence=1)
    # a step subset without the sampler reporting steps
    emb = encode_prompts(tiny_pipe, ["a red car"], "", True, "cpu")
    noise = initial_latents(0, (1, 4, 8, 8), "cpu", torch.float32)
    with record_attention(tiny_pipe, tokens=[2], steps=[0]) as rec:
        sample(tiny_pipe.unet, ddim_scheduler(), noise, emb, 1, 7.5)  # no hooks: no step is known, none recorded
    with pytest.raises(BadInput) as err:
        rec.maps()
    assert "hooks=[rec]" in str(err.value)
    with pytest.raises(BadInput):
        with record_attention(tiny_pipe, tokens=[99]) as rec:
            sample(tiny_pipe.unet, ddim_scheduler(), noise, emb, 1, 7.5, hooks=[rec])
    before = dict(tiny_pipe.unet.attn_processors)
    assert all(type(p).__name__ != "LayerProcessor" for p in before.values())  # restored after the error
    with pytest.raises(BadInput):
        with record_attention(tiny_pipe, tokens=[99]) as rec:
            sample(tiny_pipe.unet, ddim_scheduler(), noise, emb, 1, 7.5, hooks=[rec])
    with pytest.raises(BadInput):
        record_attention(tiny_pipe, cfg=False, branch="uncond").__enter__()
    with pytest.raises(BadInput):
        record_attention(tiny_pipe, layers="17").__enter__()


def test_default_processor_path_equals_wrapped_path(tiny_pipe64):
    """With diffusers' default processor underneath, the recorder computes attention itself (projecting Q and K
    once); its output must still be plain generation's and its maps those of the wrapped path."""
    pipe = tiny_pipe64
    prompts = ["a red car", "a xylophonist standing in the park"]
    tokens = {"target": [[2], [2, 3, 4, 5]], "a": [1]}
    size = (64, 64)
    plain, _, _ = generate(pipe, prompts, size=size)
    for kind, extra in (("cross", dict(tokens=tokens)), ("self", dict(self_max_tokens=16))):
        _, wrapped, _ = generate(pipe, prompts, size=size, kind=kind, **extra)  # wraps the reference processors
        shape = latent_shape(pipe, *size)
        noise = torch.cat([initial_latents(7 + i, shape, "cpu", pipe.unet.dtype) for i in range(len(prompts))])
        emb = encode_prompts(pipe, prompts, "", True, "cpu")
        with record_attention(pipe, kind=kind, **extra) as rec:
            ours = [p for p in pipe.unet.attn_processors.values() if type(p).__name__ == "LayerProcessor"]
            assert ours and all(type(p.original).__name__ == "AttnProcessor2_0" for p in ours)
            final = sample(pipe.unet, ddim_scheduler(pipe.scheduler.config), noise, emb, STEPS, 7.5, hooks=[rec])
        assert torch.equal(final, plain)  # the same operations in the same order: bitwise equal
        for label in (["target", "a"] if kind == "cross" else [None]):
            ours, ref = rec.maps(label), wrapped.maps(label)
            assert ours.keys() == ref.keys()
            assert max((ours[k] - ref[k]).abs().max().item() for k in ours) <= 1e-9

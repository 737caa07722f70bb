"""Prompt-to-Prompt, MasaCtrl, Plug-and-Play and their combination with FPE against independent map-materialising
references (tests/support/method_reference.py), in float64 on the tiny SD1.x-layout pipeline, where a wrong row, head,
layer or step shows up as a difference of order 1e-2 and the right one agrees to ~1e-10 (tolerance 1e-5, as
FPE's test). Each comparison also checks that the edit changed the targets, or it would prove little."""

import pytest
import torch

from freeprompt.attention import StepRange, discover_layers
from freeprompt.diffusion import StepHooks, ddim_scheduler, encode_prompts, initial_latents, latent_shape, sample
from freeprompt.editing.generated import edit
from freeprompt.editing.methods import FPE, P2P, MasaCtrl, Plain, PnP, build_method
from freeprompt.editing.methods.p2p import align, refine_mapper, replace_mapper, reweight_scale
from freeprompt.errors import BadInput
from support.method_reference import Spec, blend_latents, feature_hook, installed
from support.steps import CopySource

STEPS = 6
SIZE = 64  # 8x8 latents: grids 8, 4, 2, 1; the quarter grid (level 2) is 2x2
TOL = 1e-5


def names(pipe, kind, spec):
    return {layer.name for layer in discover_layers(pipe.unet).select(spec, kind, (8, 8))}


def quarter(pipe):
    return {layer.name for layer in discover_layers(pipe.unet).of_kind("cross") if layer.level == 2}


def step_set(spec):
    return set(StepRange.parse(spec).steps(STEPS))


class ReferenceSteps(StepHooks):
    def __init__(self, spec, latent_hw):
        self.spec, self.latent_hw = spec, latent_hw

    def begin_step(self, i):
        self.spec.step = i
        self.spec.step_maps.clear()

    def after_step(self, i, latents):
        return blend_latents(self.spec, latents, self.latent_hw)


def reference(pipe, prompts, spec, feature=None, seed=3, guidance=7.5, size=SIZE, end_shared=0):
    registry = discover_layers(pipe.unet)
    shape = latent_shape(pipe, size, size)
    noise = initial_latents(seed, shape, "cpu", pipe.unet.dtype)
    emb = encode_prompts(pipe, prompts, "", guidance > 1, "cpu")
    handle = feature_hook(pipe.unet, feature[0], spec, feature[1]) if feature else None
    try:
        with installed(pipe.unet, registry, spec):
            return sample(pipe.unet, ddim_scheduler(pipe.scheduler.config),
                          noise.expand(len(prompts), -1, -1, -1).clone(), emb, STEPS, guidance,
                          hooks=[ReferenceSteps(spec, shape[2:]), CopySource(end_shared)])
    finally:
        if handle:
            handle.remove()


def ours(pipe, prompts, method, guidance=7.5, size=SIZE):
    return edit(pipe, prompts[0], prompts[1:], method=method, seed=3, steps=STEPS, height=size, width=size,
                guidance=guidance, progress=False).latents


def check(pipe, prompts, method, spec, feature=None, guidance=7.5, size=SIZE):
    got = ours(pipe, prompts, method, guidance, size)
    want = reference(pipe, prompts, spec, feature, guidance=guidance, size=size)
    assert (got - want).abs().max().item() <= TOL, (got - want).abs().max().item()
    plain = ours(pipe, prompts, Plain(), guidance, size)
    assert (plain[1:] - got[1:]).abs().max().item() > 1e-3  # the edit changed the targets
    return got


def ids_mapper(pipe, mode, source, target):
    fn = replace_mapper if mode == "replace" else refine_mapper
    mapper, alpha = fn(pipe.tokenizer, source, target, 77)
    return torch.tensor(mapper), torch.tensor(alpha)


# ------------------------------------------------------------------------------------------ Prompt-to-Prompt

@pytest.mark.parametrize("mode,prompts,cross,self_steps,self_layers", [
    ("replace", ["a red car", "a blue car", "a green car"], "0:0.8", "0:0.4", "<=4x4"),
    ("replace", ["a red car in the park", "a blue car in the park"], "0.2:1", "0:0", "all"),
    ("refine", ["a red car", "a big red car on a road"], "0:0.8", "0.2:0.6", "<=2x2"),
])
def test_p2p_equals_materialising_reference(tiny_pipe64, mode, prompts, cross, self_steps, self_layers):
    pipe = tiny_pipe64
    maps = [ids_mapper(pipe, mode, prompts[0], t) for t in prompts[1:]]
    scale = torch.ones(len(maps), 77)
    spec = Spec(len(prompts), p2p_cross=(step_set(cross), torch.stack([m for m, _ in maps]),
                                         torch.stack([a for _, a in maps]), scale),
                p2p_self=(names(pipe, "self", self_layers), step_set(self_steps)))
    check(pipe, prompts, P2P(mode=mode, cross_replace=cross, self_replace=self_steps, self_layers=self_layers), spec)


def test_p2p_reweight_and_local_blend_equal_reference(tiny_pipe64):
    """At 128 px (16x16 latents) the quarter-grid maps are 4x4, enough for a mask that is not everywhere; the
    random weights make near-uniform maps (max/min ~1.2), hence a threshold of 0.97 for masks of 25-90 %."""
    pipe = tiny_pipe64
    prompts = ["a photo of a cat on a sofa", "a photo of a dog on a sofa"]
    mapper, alpha = ids_mapper(pipe, "replace", *prompts)
    scale = torch.tensor(reweight_scale(pipe.tokenizer, prompts[1], (("dog", 3.0),), 77))
    assert scale.tolist().count(3.0) == 1 and scale.sum().item() == 76 + 3.0
    tokens = {2: [5], 3: [5]}  # "cat" and "dog" are token 5 (BOS 0) of each prompt; cond rows 2 and 3
    spec = Spec(2, p2p_cross=(step_set("0:0.8"), mapper[None], alpha[None], scale[None]),
                p2p_self=(names(pipe, "self", "<=16x16"), step_set("0:0.4")),
                blend=(quarter(pipe), tokens, 0.97, step_set("0.2:1")))  # the released code's start_blend=0.2
    method = P2P(reweight=(("dog", 3.0),), blend=("cat", "dog"), blend_threshold=0.97)
    got = check(pipe, prompts, method, spec, size=128)
    unblended = ours(pipe, prompts, P2P(reweight=(("dog", 3.0),)), size=128)
    assert (got - unblended).abs().max().item() > 1e-3  # the blend did something


def test_alignment_of_prompts_of_different_lengths(tiny_pipe):
    tok = tiny_pipe.tokenizer
    assert align([1, 2, 3], [1, 2, 3]) == [0, 1, 2]
    assert align([1, 2, 3], [1, 9, 2, 3]) == [0, -1, 1, 2]  # an inserted token keeps its own map
    assert align([1, 2, 3, 4], [1, 3, 4]) == [0, 2, 3]  # a dropped source token
    mapper, alpha = refine_mapper(tok, "a red car", "a big red car", 77)
    # BOS a big red car EOS -> BOS a (new) red car EOS
    assert mapper[:2] == [0, 1] and alpha[:6] == [1, 1, 0, 1, 1, 1]
    assert mapper[3:6] == [2, 3, 4] and mapper[10] == 10 and alpha[10] == 1


@pytest.mark.parametrize("options,message", [
    ({}, "same number of tokens"),
    ({"mode": "refine", "reweight": (("zebra", 2.0),)}, "zebra"),
    ({"mode": "refine", "blend": ("cat",)}, "one word per prompt"),
    ({"mode": "swap"}, "P2P's mode: unknown value 'swap'"),
    ({"mode": "refine", "cross_replace": "0:1.2"}, "cross-replace steps"),
    ({"mode": "refine", "blend_threshold": 2.0}, "blend threshold"),
    ({"masactrl": True, "mask_words": ("cat", "tiger")}, "tiger"),
    ({"masactrl": True, "mask_words": ("cat",)}, "two words"),
    ({"masactrl": True, "layers": "11-17"}, "17"),
    ({"pnp": True, "feature_block": "up_blocks.1.attentions.0"}, "not a ResNet block"),
    ({"pnp": True, "feature_block": "up_blocks.9"}, "no module"),
    ({"pnp": True, "attention_steps": "0.5:0.2"}, "starts after it ends"),
])
def test_bad_method_options_are_one_line_errors(tiny_pipe, options, message):
    kind = MasaCtrl if options.pop("masactrl", False) else PnP if options.pop("pnp", False) else P2P
    with pytest.raises(BadInput, match=message) as err:
        edit(tiny_pipe, "a cat", ["a big fat cat"], method=kind(**options), steps=2, height=SIZE, width=SIZE,
             progress=False)
    assert "\n" not in str(err.value) and err.value.fix


def test_replace_error_suggests_refine(tiny_pipe):
    with pytest.raises(BadInput) as err:
        edit(tiny_pipe, "a cat", ["a big cat"], method=P2P(), steps=2, height=SIZE, width=SIZE, progress=False)
    assert "refine" in err.value.fix


# ------------------------------------------------------------------------------------------ MasaCtrl

@pytest.mark.parametrize("layers,steps_spec", [("11-16", "0.08:1"), ("4-14", "0.5:1")])
def test_masactrl_equals_materialising_reference(tiny_pipe64, layers, steps_spec):
    pipe = tiny_pipe64
    prompts = ["a red car", "a blue car", "a car in the snow"]
    spec = Spec(3, masactrl=(names(pipe, "self", layers), step_set(steps_spec)))
    check(pipe, prompts, MasaCtrl(steps=steps_spec, layers=layers), spec)


def test_masactrl_with_word_masks_equals_reference(tiny_pipe64):
    pipe = tiny_pipe64
    prompts = ["a red car on the road", "a blue car on the road"]
    tokens = {2: [3], 3: [3]}  # "car" in both prompts, cond rows 2 and 3
    spec = Spec(2, masactrl=(names(pipe, "self", "4-16"), step_set("0:1")),
                masactrl_mask=(quarter(pipe), tokens, 0.1))
    got = check(pipe, prompts, MasaCtrl(steps="0:1", layers="4-16", mask_words=("car", "car")), spec)
    plain_mutual = ours(pipe, prompts, MasaCtrl(steps="0:1", layers="4-16"))
    assert (got - plain_mutual).abs().max().item() > 1e-4  # the masks did something


# ------------------------------------------------------------------------------------------ Plug-and-Play

@pytest.mark.parametrize("features,attention,layers", [("0:0.8", "0:0.5", "9-16"), ("0.3:1", "0:1", "all")])
def test_pnp_equals_materialising_reference(tiny_pipe64, features, attention, layers):
    pipe = tiny_pipe64
    prompts = ["a red car", "a blue car", "a green truck"]
    spec = Spec(3, pnp_attention=(names(pipe, "self", layers), step_set(attention)))
    check(pipe, prompts, PnP(feature_steps=features, attention_steps=attention, layers=layers), spec,
          feature=("up_blocks.1.resnets.1.conv2", step_set(features)))


# ------------------------------------------------------------------------------------------ combinations

def test_fpe_plus_p2p_equals_reference_and_overlaps_are_refused(tiny_pipe64):
    pipe = tiny_pipe64
    prompts = ["a red car", "a blue car"]
    mapper, alpha = ids_mapper(pipe, "replace", *prompts)
    spec = Spec(2, fpe=(names(pipe, "self", "4-14"), step_set("0:0.6"), False),
                p2p_cross=(step_set("0:0.8"), mapper[None], alpha[None], torch.ones(1, 77)))
    method = build_method("fpe+p2p", {"self_replace": "0:0.6", "layers": "4-14"})
    check(pipe, prompts, method, spec)
    with pytest.raises(BadInput, match="both edit self-attention layer"):
        ours(pipe, prompts, build_method("fpe+p2p", {"p2p_self_replace": "0:0.4"}))


def test_p2p_with_fpes_shared_start_equals_reference(tiny_pipe64):
    """The object-swap variant of lab/object_swaps.py (P2P's maps, FPE's maps off, a shared start 0:0.5: steps 0-2
    of 6) equals the P2P reference whose targets are set to the source's latents after those steps."""
    pipe = tiny_pipe64
    prompts = ["a red car", "a red truck", "a red bus"]
    maps = [ids_mapper(pipe, "replace", prompts[0], t) for t in prompts[1:]]
    spec = Spec(3, p2p_cross=(step_set("0:0.8"), torch.stack([m for m, _ in maps]), torch.stack([a for _, a in maps]),
                              torch.ones(2, 77)),
                p2p_self=(names(pipe, "self", "<=4x4"), step_set("0:0.4")))
    method = build_method("fpe+p2p", {"self_replace": "0:0", "shared_start": "0:0.5", "p2p_self_replace": "0:0.4",
                                      "p2p_self_layers": "<=4x4"})
    got = ours(pipe, prompts, method)
    want = reference(pipe, prompts, spec, end_shared=3)
    assert (got - want).abs().max().item() <= TOL, (got - want).abs().max().item()
    unshared = ours(pipe, prompts, build_method("fpe+p2p", {"self_replace": "0:0", "p2p_self_replace": "0:0.4",
                                                            "p2p_self_layers": "<=4x4"}))
    assert (unshared[1:] - got[1:]).abs().max().item() > 1e-3  # the shared steps changed the targets


def test_method_names_and_fpe_options(tiny_pipe):
    assert build_method("p2p") == P2P() and build_method("plain") == Plain()
    assert build_method("masactrl", {"masactrl_steps": "0:1"}) == MasaCtrl(steps="0:1")
    with pytest.raises(BadInput, match="unknown or repeated method"):
        build_method("fpe+fpe")
    with pytest.raises(BadInput, match="given beside method"):
        edit(tiny_pipe, "a cat", ["a dog"], method=P2P(), self_replace="0:0.5", steps=2, height=SIZE, width=SIZE)
    a = edit(tiny_pipe, "a cat", ["a dog"], self_replace="0:0.5", layers="4-14", steps=2, height=SIZE, width=SIZE,
             progress=False)
    b = edit(tiny_pipe, "a cat", ["a dog"], method=FPE("0:0.5", "4-14"), steps=2, height=SIZE, width=SIZE,
             progress=False)
    assert torch.equal(a.latents, b.latents) and a.params["method_options"]["layers"] == "4-14"


@pytest.mark.parametrize("method", [P2P(blend=("circle", "circle")), MasaCtrl(mask_words=("circle", "circle")),
                                    PnP(), build_method("fpe+p2p")])
def test_every_method_edits_real_images_and_keeps_the_reconstruction(tiny_pipe, method):
    from PIL import Image

    from freeprompt.editing.real import edit_real
    from freeprompt.shapes import world

    image = Image.fromarray(world.random_sample(3, size=64, color="red", shape="circle").image)
    result = edit_real(tiny_pipe, image, "a red circle", ["a blue circle"], method=method, inversion="direct",
                       steps=3, progress=False)
    assert result.params["method"] == method.name and len(result.images) == 2
    fpe = edit_real(tiny_pipe, image, "a red circle", ["a blue circle"], inversion="direct", steps=3, progress=False)
    assert torch.equal(result.latents[0], fpe.latents[0])  # the source ends on the inversion either way
    assert (result.latents[1] - fpe.latents[1]).abs().max().item() > 1e-4

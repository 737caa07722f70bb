"""Observers compose with edits: the attention recorder, running around an edit of any method, records in every step
the maps the edit actually used (Prompt-to-Prompt's replaced or refined cross-attention maps, FPE's source map in
a target's self-attention row, MasaCtrl's and PnP's mixed queries and keys). The reference is the independent
map-materialising implementation of each method (tests/method_reference.py), which adds up the conditional rows'
head-averaged maps of every call after its edit. float64, tiny SD1.x-layout pipeline, tolerance 1e-6 on maps of
order 1e-2; each case also checks that the recorded maps differ from plain generation's, or it would prove little."""

import pytest
import torch

from freeprompt.attention import StepRange, discover_layers, record_attention
from freeprompt.diffusion import StepHooks, ddim_scheduler, encode_prompts, initial_latents, latent_shape, sample
from freeprompt.editing.generated import edit
from freeprompt.editing.methods import P2P, MasaCtrl, Plain, PnP, build_method
from freeprompt.editing.methods.p2p import refine_mapper, replace_mapper, reweight_scale
from support.method_reference import Spec, feature_hook, installed

STEPS, SIZE, SEED, TOL = 4, 64, 5, 1e-6


def steps(spec):
    return set(StepRange.parse(spec).steps(STEPS))


def names(pipe, kind, spec):
    return {layer.name for layer in discover_layers(pipe.unet).select(spec, kind, (8, 8))}


class StepCounter(StepHooks):
    def __init__(self, spec):
        self.spec = spec

    def begin_step(self, i):
        self.spec.step = i
        self.spec.step_maps.clear()


def reference_maps(pipe, prompts, spec, kind, feature=None):
    """{layer: (prompts, tokens, keys)} averaged over the calls, as the reference's edits used them."""
    spec.record = {"kind": kind, "sums": {}, "calls": {}}
    registry = discover_layers(pipe.unet)
    shape = latent_shape(pipe, SIZE, SIZE)
    noise = initial_latents(SEED, shape, "cpu", pipe.unet.dtype).expand(len(prompts), -1, -1, -1).clone()
    handle = feature_hook(pipe.unet, feature[0], spec, feature[1]) if feature else None
    try:
        with installed(pipe.unet, registry, spec):
            sample(pipe.unet, ddim_scheduler(pipe.scheduler.config), noise,
                   encode_prompts(pipe, prompts, "", True, "cpu"), STEPS, 7.5, hooks=[StepCounter(spec)])
    finally:
        if handle:
            handle.remove()
    return {name: total / spec.record["calls"][name] for name, total in spec.record["sums"].items()}


def recorded_maps(pipe, prompts, method, kind):
    """{layer: (prompts, tokens, keys)} as freeprompt's recorder saw them around ``edit``."""
    with record_attention(pipe, kind=kind, layers="all", tokens=None, self_max_tokens=4096) as rec:
        edit(pipe, prompts[0], prompts[1:], method=method, seed=SEED, steps=STEPS, height=SIZE, width=SIZE,
             progress=False, decode=False)
    maps = rec.maps()
    if kind == "cross":  # (rows, T, h, w) -> (rows, h*w, T), the reference's layout
        return {name: m.flatten(2).transpose(1, 2) for name, m in maps.items()}
    return maps


def p2p_cross(pipe, prompts, mode, reweight=()):
    fn = replace_mapper if mode == "replace" else refine_mapper
    pairs = [fn(pipe.tokenizer, prompts[0], t, 77) for t in prompts[1:]]
    scales = [reweight_scale(pipe.tokenizer, t, reweight, 77) for t in prompts[1:]]
    return (steps("0:0.8"), torch.tensor([m for m, _ in pairs]), torch.tensor([a for _, a in pairs]),
            torch.tensor(scales))


CASES = {
    # name: (prompts, method, reference spec builder, kind, feature)
    "fpe-self": (["a red car", "a blue car"], build_method("fpe", {"layers": "all", "self_replace": "0:1"}),
                 lambda pipe: Spec(2, fpe=(names(pipe, "self", "all"), steps("0:1"), False)), "self", None),
    "fpe-cross": (["a red car", "a blue car"], build_method("fpe", {"layers": "all", "self_replace": "0:1"}),
                  lambda pipe: Spec(2, fpe=(names(pipe, "self", "all"), steps("0:1"), False)), "cross", None),
    "p2p-replace-cross": (["a red car", "a blue car"], P2P(self_replace="0:0"),
                          lambda pipe: Spec(2, p2p_cross=p2p_cross(pipe, ["a red car", "a blue car"], "replace")),
                          "cross", None),
    "p2p-refine-reweight-cross": (
        ["a red car", "a big red car"], P2P(mode="refine", self_replace="0:0.5", reweight=(("big", 2.0),)),
        lambda pipe: Spec(2, p2p_cross=p2p_cross(pipe, ["a red car", "a big red car"], "refine", (("big", 2.0),)),
                          p2p_self=(names(pipe, "self", "<=16x16"), steps("0:0.5"))), "cross", None),
    "p2p-self": (["a red car", "a blue car"], P2P(self_replace="0:0.5", self_layers="all"),
                 lambda pipe: Spec(2, p2p_cross=p2p_cross(pipe, ["a red car", "a blue car"], "replace"),
                                   p2p_self=(names(pipe, "self", "all"), steps("0:0.5"))), "self", None),
    "masactrl-self": (["a red car", "a blue car"], MasaCtrl(steps="0:1", layers="4-16"),
                      lambda pipe: Spec(2, masactrl=(names(pipe, "self", "4-16"), steps("0:1"))), "self", None),
    "masactrl-masks-cross": (
        ["a red car on the road", "a blue car on the road"],
        MasaCtrl(steps="0:1", layers="4-16", mask_words=("car", "car")),
        lambda pipe: Spec(2, masactrl=(names(pipe, "self", "4-16"), steps("0:1")),
                          masactrl_mask=({layer.name for layer in discover_layers(pipe.unet).of_kind("cross")
                                          if layer.level == 2}, {2: [3], 3: [3]}, 0.1)), "cross", None),
    "pnp-self": (["a red car", "a blue car"], PnP(feature_steps="0:0.5", attention_steps="0:1", layers="all"),
                 lambda pipe: Spec(2, pnp_attention=(names(pipe, "self", "all"), steps("0:1"))), "self",
                 ("up_blocks.1.resnets.1.conv2", "0:0.5")),
    "pnp-cross": (["a red car", "a blue car"], PnP(feature_steps="0:0.5", attention_steps="0:1", layers="all"),
                  lambda pipe: Spec(2, pnp_attention=(names(pipe, "self", "all"), steps("0:1"))), "cross",
                  ("up_blocks.1.resnets.1.conv2", "0:0.5")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_recorder_sees_the_maps_each_method_used(tiny_pipe64, case):
    pipe = tiny_pipe64
    prompts, method, build_spec, kind, feature = CASES[case]
    feature = (feature[0], steps(feature[1])) if feature else None
    want = reference_maps(pipe, prompts, build_spec(pipe), kind, feature)
    got = recorded_maps(pipe, prompts, method, kind)
    plain = recorded_maps(pipe, prompts, Plain(), kind)
    assert got.keys() == want.keys() and len(got) == 16
    worst = max((got[n] - want[n].to(got[n])).abs().max().item() for n in got)
    assert worst <= TOL, f"{case}: recorded maps differ from the reference's by {worst:.2e}"
    changed = max((got[n][1] - plain[n][1]).abs().max().item() for n in got)
    assert changed > 1e-4, f"{case}: the target's recorded maps equal plain generation's"

"""Editing on diffusion transformers, whole sampling runs in float64 against references written in the tests.

MM-DiT (SD3, FLUX.1): every edited joint-attention call of ``edit`` equals a processor that builds the joint maps
and edits them (``support/joint_reference.py``) installed on the same layers and steps of a plain sampling run: FPE's
two readings (whole row, image block), MasaCtrl's image keys and values, Prompt-to-Prompt's image-to-text block with
reweighting. PixArt (separate self- and cross-attention): FPE, MasaCtrl and Plug-and-Play equal the map-materialising
references of the UNet methods (``support/method_reference.py``) on its self-attention layers. Refusals (a method part
that joint attention does not define, a photo on a transformer, a sampler the model cannot run) are one line."""

import pytest
import torch

from freeprompt.attention import StepRange, discover_layers
from freeprompt.attention.processors import installed_processors
from freeprompt.diffusion import StepHooks, sample
from freeprompt.diffusion.denoisers import denoiser_for
from freeprompt.diffusion.schedulers import make_scheduler
from freeprompt.editing.generated import edit
from freeprompt.editing.methods import FPE, P2P, MasaCtrl, Plain, PnP
from freeprompt.errors import BadInput
from freeprompt.models.random_transformers import random_transformer_pipeline
from support.joint_reference import reference
from support.method_reference import Spec, feature_hook, installed
from support.steps import CopySource

STEPS = 4
SIZE = 64  # 8x8 latents, 4x4 image tokens
TOL = 1e-9
PROMPTS = ["a red car", "a blue car"]


@pytest.fixture(scope="module", params=["tiny-sd3", "tiny-flux"])
def mmdit(request):
    return random_transformer_pipeline(request.param, torch_dtype=torch.float64)


@pytest.fixture(scope="module")
def pixart():
    return random_transformer_pipeline("tiny-pixart", torch_dtype=torch.float64)


class Clock(StepHooks):
    step = -1

    def begin_step(self, i):
        self.step = i


class JointReference:
    """An MM-DiT layer's processor that edits the joint maps in ``steps`` (the reference), else the original."""

    def __init__(self, original, clock, steps, mode, sources, text_tokens, scale=None):
        self.original, self.clock, self.steps = original, clock, steps
        self.mode, self.sources, self.text_tokens, self.scale = mode, sources, text_tokens, scale

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None,
                 **kwargs):
        if self.clock.step not in self.steps:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        return reference(attn, hidden_states, encoder_hidden_states, image_rotary_emb, self.mode, self.sources,
                         self.scale, self.text_tokens)


def run(pipe, method, guidance=3.5):
    return edit(pipe, PROMPTS[0], PROMPTS[1:], method=method, seed=3, steps=STEPS, height=SIZE, width=SIZE,
                guidance=guidance, progress=False, decode=False)


def joint_reference_run(pipe, result, layers, steps, mode, sources, scale=None, guidance=3.5, hooks=()):
    """A plain sampling run from the edit's noise with the reference processors on ``layers`` (1-based joint indices)
    in ``steps`` (and ``hooks`` beside them)."""
    denoiser = denoiser_for(pipe)
    registry = discover_layers(denoiser.network)
    guided = guidance > 1 and not denoiser.embedded_guidance
    clock, current = Clock(), denoiser.network.attn_processors
    chosen = [layer for layer in registry.of_kind("joint") if layer.index in layers]
    procs = {layer.processor_key: JointReference(current[layer.processor_key], clock, steps, mode, sources,
                                                 denoiser.text_tokens(), scale) for layer in chosen}
    conditioning = denoiser.encode(PROMPTS, "", guided, "cpu")
    noise = result.initial_latents.expand(len(PROMPTS), -1, -1, -1).clone()
    with installed_processors(denoiser.network, procs):
        return sample(denoiser, make_scheduler("flow", pipe.scheduler.config), noise, conditioning, STEPS, guidance,
                      hooks=[clock, *hooks])


def cond_sources(pipe, guidance=3.5):
    """Batch rows [uncond source, uncond target, cond source, cond target] under true guidance (SD3), [source,
    target] under FLUX's embedded guidance; a method that edits the conditional half maps the cond target to the
    cond source."""
    return (0, 1, 2, 2) if not denoiser_for(pipe).embedded_guidance and guidance > 1 else (0, 0)


def check(got, want, pipe):
    assert (got - want).abs().max().item() <= TOL, (got - want).abs().max().item()
    plain = run(pipe, Plain()).latents
    assert (plain[1:] - got[1:]).abs().max().item() > 1e-4  # the edit changed the target
    assert (plain[0] - got[0]).abs().max().item() <= TOL  # and not the source


@pytest.mark.parametrize("reading", ["row", "image"])
def test_fpe_on_joint_attention_equals_the_materialising_reference(mmdit, reading):
    result = run(mmdit, FPE(self_replace="0:0.5", layers="all", joint=reading))
    count = len(discover_layers(denoiser_for(mmdit).network).of_kind("joint"))
    assert result.params["edited_layers"] == {"fpe joint": list(range(1, count + 1))}
    assert result.params["edited_steps"] == {"fpe joint": [0, 1]}
    want = joint_reference_run(mmdit, result, set(range(1, count + 1)), {0, 1}, reading, cond_sources(mmdit))
    check(result.latents, want, mmdit)


def test_fpe_shared_start_runs_the_targets_from_the_sources_latents(mmdit):
    result = run(mmdit, FPE(self_replace="0:0.5", layers="all", shared_start="0:0.25"))  # step 0 of 4
    count = len(discover_layers(denoiser_for(mmdit).network).of_kind("joint"))
    want = joint_reference_run(mmdit, result, set(range(1, count + 1)), {0, 1}, "row", cond_sources(mmdit),
                               hooks=[CopySource(1)])
    check(result.latents, want, mmdit)
    unshared = run(mmdit, FPE(self_replace="0:0.5", layers="all")).latents
    assert (unshared[1] - result.latents[1]).abs().max().item() > 1e-4  # the shared step changed the target
    whole = run(mmdit, FPE(shared_start="0:1")).latents
    assert torch.equal(whole[1], whole[0])  # shared to the end: the source itself
    with pytest.raises(BadInput, match="does not start at 0"):
        FPE(shared_start="0.2:0.4")


def test_fpe_defaults_to_every_layer_of_a_transformer(mmdit):
    result = run(mmdit, FPE())
    count = len(discover_layers(denoiser_for(mmdit).network).of_kind("joint"))
    assert result.params["edited_layers"]["fpe joint"] == list(range(1, count + 1))
    assert result.params["family"] in ("sd3", "flux") and result.params["scheduler_name"] == "flow"


def test_masactrl_shares_the_sources_image_keys_and_values(mmdit):
    result = run(mmdit, MasaCtrl(steps="0:1", layers="all"))
    count = len(discover_layers(denoiser_for(mmdit).network).of_kind("joint"))
    sources = (0, 0, 2, 2) if len(cond_sources(mmdit)) == 4 else (0, 0)  # both halves, as the authors
    want = joint_reference_run(mmdit, result, set(range(1, count + 1)), set(range(STEPS)), "kv", sources)
    check(result.latents, want, mmdit)


def test_p2p_replaces_the_image_to_text_block_with_reweighting(mmdit):
    result = run(mmdit, P2P(cross_replace="0:0.75", reweight=(("blue", 3.0),)))
    denoiser = denoiser_for(mmdit)
    count = len(discover_layers(denoiser.network).of_kind("joint"))
    scale = torch.ones(denoiser.text_tokens(), dtype=torch.float64)
    for tokenizer, offset in denoiser.text_parts():  # the word's place in each tokenizer's part, found here
        ids = tokenizer(PROMPTS[1])["input_ids"]
        scale[offset + ids.index(tokenizer("blue", add_special_tokens=False)["input_ids"][0])] = 3.0
    want = joint_reference_run(mmdit, result, set(range(1, count + 1)), {0, 1, 2}, "text", cond_sources(mmdit),
                               scale)
    check(result.latents, want, mmdit)


def test_pnp_injects_a_transformer_blocks_features(mmdit):
    result = run(mmdit, PnP(attention_steps="0:0", feature_steps="0:0.5"))
    plain = run(mmdit, Plain()).latents
    assert (result.latents[1] - plain[1]).abs().max().item() > 1e-4
    assert (result.latents[0] - plain[0]).abs().max().item() <= TOL
    assert "pnp features" in result.params["edited_steps"]


def test_text_tokens_are_the_sequence_the_network_attends_to(mmdit, pixart):
    for pipe in (mmdit, pixart):
        denoiser = denoiser_for(pipe)
        assert denoiser.encode(PROMPTS, "", True, "cpu").embeddings.shape[1] == denoiser.text_tokens()


def pixart_reference(pipe, noise, spec, self_layers, feature=None, guidance=3.5):
    denoiser = denoiser_for(pipe)
    clock = SpecClock(spec)
    conditioning = denoiser.encode(PROMPTS, "", guidance > 1, "cpu")
    handle = feature_hook(denoiser.network, feature[0], spec, feature[1]) if feature else None
    try:
        with installed(denoiser.network, discover_layers(denoiser.network), spec, only=self_layers):
            return sample(denoiser, make_scheduler("ddim", pipe.scheduler.config, model_betas=True),
                          noise.expand(2, -1, -1, -1).clone(), conditioning, STEPS, guidance, hooks=[clock])
    finally:
        if handle:
            handle.remove()


class SpecClock(StepHooks):
    def __init__(self, spec):
        self.spec = spec

    def begin_step(self, i):
        self.spec.step = i


@pytest.mark.parametrize("name", ["fpe", "masactrl", "pnp"])
def test_pixart_edits_equal_the_unet_methods_references(pixart, name):
    network = denoiser_for(pixart).network
    selfs = {layer.name for layer in discover_layers(network).of_kind("self")}
    steps = set(StepRange.parse("0:0.5").steps(STEPS))
    methods = {"fpe": (FPE(self_replace="0:0.5"), Spec(2, fpe=(selfs, steps, False)), None),
               "masactrl": (MasaCtrl(steps="0:0.5", layers="all"), Spec(2, masactrl=(selfs, steps)), None),
               "pnp": (PnP(attention_steps="0:0.5", feature_steps="0:0.5", layers="all"),
                       Spec(2, pnp_attention=(selfs, steps)), ("transformer_blocks.0.ff", steps))}
    method, spec, feature = methods[name]
    result = edit(pixart, PROMPTS[0], PROMPTS[1:], method=method, seed=3, steps=STEPS, height=SIZE, width=SIZE,
                  guidance=3.5, progress=False, decode=False)
    want = pixart_reference(pixart, result.initial_latents, spec, selfs, feature)
    assert (result.latents - want).abs().max().item() <= TOL, (result.latents - want).abs().max().item()
    plain = edit(pixart, PROMPTS[0], PROMPTS[1:], method=Plain(), seed=3, steps=STEPS, height=SIZE, width=SIZE,
                 guidance=3.5, progress=False, decode=False).latents
    assert (plain[1] - result.latents[1]).abs().max().item() > 1e-4


@pytest.mark.parametrize("method, match", [
    (P2P(mode="refine"), "--p2p-mode refine is defined for models with cross-attention"),
    (P2P(blend=("red", "blue")), "--blend is defined for models with cross-attention"),
    (P2P(self_layers="all"), "--p2p-self-layers is defined"),
    (MasaCtrl(mask_words=("car", "car")), "--mask-words read cross-attention maps"),
])
def test_parts_joint_attention_does_not_define_are_refused(mmdit, method, match):
    with pytest.raises(BadInput, match=match):
        run(mmdit, method)


def test_samplers_a_transformer_cannot_take_are_refused(mmdit, pixart):
    with pytest.raises(BadInput, match="the ddim scheduler cannot sample a flow-matching model"):
        edit(mmdit, *PROMPTS, steps=2, height=SIZE, width=SIZE, scheduler="ddim", progress=False)
    with pytest.raises(BadInput, match="the flow scheduler cannot sample a noise-prediction model"):
        edit(pixart, *PROMPTS, steps=2, height=SIZE, width=SIZE, scheduler="flow", progress=False)


def test_fpe_beside_p2p_on_one_joint_layer_is_refused(mmdit):
    from freeprompt.editing.methods import build_method

    with pytest.raises(BadInput, match="both edit joint-attention layer"):
        run(mmdit, build_method("fpe+p2p"))

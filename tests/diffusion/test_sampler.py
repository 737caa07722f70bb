"""The DDIM sampling loop (``freeprompt.diffusion.sampler``) on its own: when hooks are called and with which step,
what ``conditioning`` and ``after_step`` hooks change, classifier-free guidance's [uncond, cond] batch, the checks of
steps and guidance, seeded noise, and the whole loop against diffusers' own StableDiffusionPipeline."""

import math

import pytest
import torch
from diffusers import StableDiffusionPipeline

from freeprompt.diffusion import (
    Conditioning,
    StepHooks,
    check_guidance,
    check_steps,
    ddim_scheduler,
    encode_prompts,
    initial_latents,
    sample,
)
from freeprompt.errors import BadInput

SHAPE = (1, 4, 8, 8)  # the tiny pipeline's latents for 64 x 64 pixels


class Log(StepHooks):
    """Records every call as (name, what, step); optionally replaces the conditioning or the latents."""

    def __init__(self, name, log, conditioning=None, latents=None):
        self.name, self.log, self.new_conditioning, self.new_latents = name, log, conditioning or {}, latents or {}
        self.seen_conditioning, self.seen_latents = {}, {}

    def begin_step(self, step):
        self.log.append((self.name, "begin", step))

    def conditioning(self, step, conditioning):
        self.log.append((self.name, "conditioning", step))
        self.seen_conditioning[step] = conditioning
        return self.new_conditioning.get(step, conditioning)

    def after_step(self, step, latents):
        self.log.append((self.name, "after", step))
        self.seen_latents[step] = latents.clone()
        return self.new_latents[step](latents) if step in self.new_latents else latents


class Watched:
    """A UNet that logs each call (timestep, its input latents, its text embeddings) and then runs ``unet``."""

    def __init__(self, unet, log):
        self.unet, self.log, self.calls = unet, log, []

    def __call__(self, x, t, encoder_hidden_states, **kwargs):
        self.log.append(("unet", int(t)))
        self.calls.append((int(t), x.clone(), encoder_hidden_states.clone()))
        return self.unet(x, t, encoder_hidden_states=encoder_hidden_states, **kwargs)


def run(pipe, hooks, guidance=7.5, steps=3, log=None, prompts=("a red car",)):
    unet = Watched(pipe.unet, log if log is not None else [])
    cond = encode_prompts(pipe, list(prompts), "", guidance > 1, "cpu")
    noise = initial_latents(0, SHAPE, "cpu", torch.float32).expand(len(prompts), -1, -1, -1)
    out = sample(unet, ddim_scheduler(pipe.scheduler.config), noise, cond, steps, guidance, hooks=hooks)
    return out, unet, cond


def test_hooks_run_in_order_around_each_unet_call_with_the_step_index(tiny_pipe):
    log, seen = [], []
    hooks = [Log("A", log), Log("B", log)]
    unet = Watched(tiny_pipe.unet, log)
    cond = encode_prompts(tiny_pipe, ["a red car"], "", True, "cpu")
    sample(unet, ddim_scheduler(tiny_pipe.scheduler.config), initial_latents(0, SHAPE, "cpu", torch.float32), cond, 3,
           7.5, hooks=hooks, progress=lambda timesteps: seen.extend(int(t) for t in timesteps) or timesteps)
    # DDIM, 3 of 1000 training steps, "leading" spacing + steps_offset 1: 666, 333, 0 shifted by one
    assert [t for t, *_ in unet.calls] == seen == [667, 334, 1]
    starts = [k for k, entry in enumerate(log) if entry[0] == "unet"]
    assert len(starts) == 3
    for i, at in enumerate(starts):
        before = log[starts[i - 1] + 3 if i else 0:at]  # after the previous step's two after_step calls
        assert sorted(before) == [("A", "begin", i), ("A", "conditioning", i), ("B", "begin", i),
                                  ("B", "conditioning", i)]
        for name in "AB":  # each hook learns the step before it is asked for the conditioning
            assert before.index((name, "begin", i)) < before.index((name, "conditioning", i))
        assert before.index(("A", "conditioning", i)) < before.index(("B", "conditioning", i))  # hooks in order
        assert log[at + 1:at + 3] == [("A", "after", i), ("B", "after", i)]
    assert len(log) == 3 * 7


def test_conditioning_hooks_change_what_the_unet_sees_at_their_step(tiny_pipe):
    plain, _, given = run(tiny_pipe, [])
    other = Conditioning(torch.zeros_like(given.embeddings))
    first, second = Log("A", [], conditioning={1: other}), Log("B", [])
    edited, unet, cond = run(tiny_pipe, [first, second])
    assert [torch.equal(e, cond.embeddings) for _, _, e in unet.calls] == [True, False, True]
    assert torch.equal(unet.calls[1][2], other.embeddings)
    assert second.seen_conditioning[1] is other  # the hooks' results are chained, in order
    assert first.seen_conditioning[2].embeddings is cond.embeddings  # every step starts from the given conditioning
    assert (edited - plain).abs().max().item() > 1e-4


def test_after_step_hooks_change_the_latents(tiny_pipe):
    pinned = torch.full((1, *SHAPE[1:]), 0.5)
    final = torch.arange(math.prod(SHAPE), dtype=torch.float32).reshape(SHAPE)
    first = Log("A", [], latents={0: lambda latents: pinned, 2: lambda latents: latents + 1})
    second = Log("B", [], latents={2: lambda latents: final})
    out, unet, _ = run(tiny_pipe, [first, second])
    assert torch.equal(unet.calls[1][1], torch.cat([pinned, pinned]))  # step 1 denoises what step 0's hook returned
    assert torch.equal(second.seen_latents[2], first.seen_latents[2] + 1)  # chained, in order
    assert torch.equal(out, final)


def ddim_step(x, eps, t, prev_t):
    """One deterministic DDIM step (eta 0, epsilon prediction) on SD's scaled-linear schedule, from the formulas."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas = torch.cumprod(1 - betas, 0)
    a_t, a_prev = alphas[t], alphas[prev_t]
    x0 = (x.double() - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    return (a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps).float()


@pytest.mark.parametrize("guidance", [3.0, 1.0])
def test_guidance_runs_uncond_then_cond_rows_and_mixes_their_predictions(guidance):
    """A stand-in UNet predicts, for every row, the mean of that row's embeddings: with guidance the rows are
    [uncond 0, uncond 1, cond 0, cond 1] over latents [x, x], mixed as u + g (c - u); without, cond rows alone."""
    calls = []

    def unet(x, t, encoder_hidden_states, return_dict=False):
        calls.append((x.clone(), encoder_hidden_states))
        return (encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1).expand_as(x).clone(),)

    x = initial_latents(1, (2, 4, 8, 8), "cpu", torch.float32)
    uncond, cond = torch.tensor([1.0, 2.0]), torch.tensor([10.0, 20.0])
    rows = torch.cat([uncond, cond]) if guidance > 1 else cond
    embeddings = rows.view(-1, 1, 1).expand(-1, 3, 5).clone()
    log = Log("A", [])
    sample(unet, ddim_scheduler(), x, embeddings, 2, guidance, hooks=[log])
    model_input, seen = calls[0]
    assert torch.equal(model_input, torch.cat([x, x]) if guidance > 1 else x) and seen is embeddings
    eps = (uncond + guidance * (cond - uncond)).view(-1, 1, 1, 1).double()  # 28, 56 with guidance 3; 10, 20 without
    expected = ddim_step(x, eps, 501, 1)  # 2 steps: timesteps 501, 1
    assert torch.allclose(log.seen_latents[0], expected, rtol=1e-5, atol=1e-4)


def test_check_steps_bounds():
    assert check_steps(1) == 1 and check_steps(1000) == 1000 and check_steps(50, {"num_train_timesteps": 50}) == 50
    for steps, config in ((0, None), (-3, None), (1001, None), (51, {"num_train_timesteps": 50})):
        with pytest.raises(BadInput) as err:
            check_steps(steps, config)
        train = (config or {}).get("num_train_timesteps", 1000)
        assert f"between 1 and {train}" in str(err.value) and "\n" not in str(err.value)


def test_check_guidance_bounds():
    for value, expected in ((0, 0.0), (1, 1.0), (7.5, 7.5), ("7.5", 7.5), (1000, 1000.0)):
        assert check_guidance(value) == expected and isinstance(check_guidance(value), float)
    for bad in (-0.01, 1000.5, float("nan"), float("inf"), -float("inf"), "seven", None, [7.5]):
        with pytest.raises(BadInput) as err:
            check_guidance(bad)
        assert "\n" not in str(err.value)


def test_initial_latents_are_seeded_and_drawn_on_the_cpu_in_float32():
    reference = torch.randn(SHAPE, generator=torch.Generator("cpu").manual_seed(7))
    assert torch.equal(initial_latents(7, SHAPE, "cpu", torch.float32), reference)
    assert torch.equal(initial_latents(7, SHAPE, "cpu", torch.float32), initial_latents(7, SHAPE, "cpu", torch.float32))
    assert not torch.equal(initial_latents(8, SHAPE, "cpu", torch.float32), reference)
    half = initial_latents(7, SHAPE, "cpu", torch.float16)
    assert half.dtype == torch.float16 and torch.equal(half, reference.half())  # the same noise in any precision
    assert torch.equal(initial_latents(7, SHAPE, "cpu", torch.float64), reference.double())
    assert initial_latents(7, SHAPE, "meta", torch.float32).device.type == "meta"  # drawn on the CPU, then moved
    if torch.cuda.is_available():
        assert torch.equal(initial_latents(7, SHAPE, "cuda", torch.float32).cpu(), reference)


@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_sample_equals_the_diffusers_pipeline_from_the_same_noise(tiny_pipe, guidance):
    prompts = ["a red car", "a blue car"]
    noise = initial_latents(4, SHAPE, "cpu", torch.float32).expand(2, -1, -1, -1)
    cond = encode_prompts(tiny_pipe, prompts, "", guidance > 1, "cpu")
    ours = sample(tiny_pipe.unet, ddim_scheduler(tiny_pipe.scheduler.config), noise, cond, 3, guidance)
    diffusers_pipe = StableDiffusionPipeline(**{**tiny_pipe.components,
                                                "scheduler": ddim_scheduler(tiny_pipe.scheduler.config)},
                                             requires_safety_checker=False)
    diffusers_pipe.set_progress_bar_config(disable=True)
    theirs = diffusers_pipe(prompts, num_inference_steps=3, guidance_scale=guidance, height=64, width=64,
                            latents=noise, output_type="latent").images
    assert (ours - theirs).abs().max().item() <= 1e-5
    assert (ours - noise).abs().max().item() > 1e-2  # it denoised


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "-5", "0", "lots"])
def test_a_pixel_budget_that_is_not_a_whole_positive_number_is_refused_in_one_line(monkeypatch, value):
    from freeprompt.diffusion.latents import check_size, pixel_budget

    monkeypatch.setenv("FREEPROMPT_MAX_PIXELS", value)
    with pytest.raises(BadInput, match="FREEPROMPT_MAX_PIXELS") as err:
        check_size(512, 512)
    assert "\n" not in str(err.value)
    monkeypatch.setenv("FREEPROMPT_MAX_PIXELS", "1e6")
    assert pixel_budget() == 1_000_000

"""Editing a batch: one noise, a source prompt and N target prompts denoised together.

``edit`` generates the source and every target from the same noise (a seed, given latents, or a real image's
inversion) with an editing method (``methods``: FPE by default, Prompt-to-Prompt, MasaCtrl, Plug-and-Play, plain,
or several at once). The method's plan becomes an ``EditControl`` that ``attention.controlled`` installs on the
UNet for the run; ``diffusion.sample`` is the loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..attention import BatchLayout, EditControl, controlled, discover_layers
from ..diffusion import (
    StepHooks,
    check_guidance,
    check_latents,
    check_prompt,
    check_steps,
    check_targets,
    image_size,
    initial_latents,
    latent_shape,
    sample,
    step_bar,
)
from ..diffusion import decode as decode_latents
from ..diffusion.denoisers import denoiser_for
from ..diffusion.sampler import SharedNoise
from ..diffusion.schedulers import INVERTIBLE, check_scheduler, default_scheduler, make_scheduler, scheduler_name
from ..errors import BadInput
from ..models.loading import network_family
from .inversion import InversionResult
from .methods import FPE, Method, MethodContext
from .methods.base import UNET_FAMILIES
from .reuse import SourceCache, source_key


@dataclass
class EditResult:
    prompts: list[str]  # source first, then the targets
    images: list  # PIL images in the order of ``prompts``
    latents: torch.Tensor  # final latents, one row per prompt
    initial_latents: torch.Tensor  # the noise shared by all prompts
    params: dict  # every setting, as run.json records it
    timings: dict = field(default_factory=dict)
    input_image: object | None = None  # a real image's input as fitted to the model (PIL), else None

    @property
    def source(self):
        return self.images[0]

    @property
    def targets(self) -> list:
        return self.images[1:]


def edit(
    pipe,
    source: str,
    targets: list[str] | str,
    *,
    method: Method | None = None,
    seed: int = 0,
    latents: torch.Tensor | None = None,
    steps: int = 50,
    guidance: float = 7.5,
    negative_prompt: str = "",
    self_replace: str | None = None,
    layers: str | list[int] | None = None,
    edit_unconditional: bool | None = None,
    height: int | None = None,
    width: int | None = None,
    progress: bool | Callable = True,
    decode: bool = True,
    inversion: InversionResult | None = None,
    hooks: Sequence[StepHooks] = (),
    scheduler=None,
    reuse: SourceCache | None = None,
) -> EditResult:
    """Generate ``source`` and every target from the same noise, edited by ``method`` (default: FPE, whose
    ``self_replace``, ``layers`` and ``edit_unconditional`` may also be given here: in the chosen self-attention
    layers and steps each target uses the source's self-attention map, SDPA(Q_src, K_src, V_tgt)).

    The noise is drawn from ``seed``, or given as ``latents``, or comes from ``inversion`` (a real image's
    ``InversionResult``, made with this ``source`` prompt, which may then be "", and these ``steps``): its
    per-step embeddings and trajectory pinning then apply too. ``hooks`` are further ``StepHooks`` the sampling
    loop runs after the edit's own. ``decode=False`` skips the VAE (``images`` is empty), like diffusers'
    ``output_type="latent"``. ``scheduler`` is a name (``diffusion.schedulers.SCHEDULERS``: ddim, the official
    code's, by default, flow on SD3 and FLUX; a photo's edit needs ddim) or a diffusers scheduler object; a sampler
    that draws noise every step draws it from ``seed`` after the initial noise, the same for every prompt. ``reuse`` (a
    ``SourceCache``) keeps the source of this edit, or, holding this same source already, runs only the targets'
    rows (``params["source_reused"]``; on a UNet: a transformer's edit runs whole).

    ``pipe``: Stable Diffusion 1.x/2.x/XL, or SD3, FLUX.1, PixArt (the family: ``params["family"]``)."""
    method = _method(method, self_replace, layers, edit_unconditional)
    targets, prompts, guidance = _checked_inputs(pipe, source, targets, negative_prompt, steps, guidance, inversion)
    denoiser = denoiser_for(pipe)
    network, family = denoiser.network, model_family(denoiser)
    reuse = reuse if family in UNET_FAMILIES else None  # re-editing replays a UNet's layers only
    shape = latent_shape(pipe, height, width)
    sampler = _scheduler(scheduler, pipe, inversion is not None, family not in UNET_FAMILIES)
    generator = torch.Generator("cpu").manual_seed(int(seed))  # the initial noise, then a sampler's step noise
    noise = _start_noise(denoiser, shape, generator, latents, inversion, source, steps, guidance)
    registry = discover_layers(network)
    settings = {"source": source, "negative": negative_prompt, "steps": steps, "guidance": guidance, "shape": shape}
    key, reused = _reuse_state(pipe, reuse, inversion, decode, method, sampler, noise, settings)
    layout = BatchLayout.one_source(len(targets), guidance=guidance > 1.0 and not denoiser.embedded_guidance,
                                    reused=reused)
    plan = method.plan(MethodContext(network, pipe.tokenizer, tuple(prompts), layout, registry, shape[2:], steps,
                                     family, denoiser.text_tokens(), denoiser.text_parts()))
    rows = None if reuse is None or inversion is not None else reuse.rows if reused else reuse.fresh()
    control = EditControl(layout, plan.rules, steps, shape[2:], plan.watches, plan.blends, plan.features, rows)
    timings: dict[str, float] = {}
    pinned = [inversion.hooks(denoiser.device, network.dtype)] if inversion else []  # before a local blend
    with controlled(network, registry, control):
        final = _denoise(pipe, denoiser, prompts[1:] if reused else prompts, noise, pinned + [control, *hooks],
                         (sampler, SharedNoise(generator)), (steps, guidance, negative_prompt), progress, timings)
    final, images = _source_and_targets(pipe, final, reuse if reused else None, decode, timings)
    if reuse is not None and rows is not None and not reused:
        reuse.remember(key, rows, final, images[0] if images else None)
    params = _params(pipe, method, control, registry, prompts, seed, latents, inversion, steps, guidance,
                     negative_prompt, shape, sampler)
    params.update(family=family, source_reused=reused, source_cache_bytes=reuse.bytes if reuse is not None else None)
    return EditResult(prompts=prompts, images=images, latents=final.cpu(), initial_latents=noise.cpu(),
                      params=params, timings=timings)


def _checked_inputs(pipe, source, targets, negative_prompt: str, steps: int, guidance: float, inversion):
    """(targets as a list, every prompt, guidance): each checked, a photo's source prompt may be empty."""
    targets = [targets] if isinstance(targets, str) else list(targets)
    prompts = _checked_prompts(pipe, source, targets, empty_source_ok=inversion is not None)
    if negative_prompt:
        check_prompt(pipe.tokenizer, negative_prompt, "negative prompt")  # warns when it will be truncated
    check_steps(steps, pipe.scheduler.config)
    return targets, prompts, check_guidance(guidance)


def _reuse_state(pipe, reuse: SourceCache | None, inversion, decode: bool, method: Method, sampler, noise, settings):
    """(the key of this edit's source in ``reuse``: its settings, sampler, method and noise; whether ``reuse`` holds
    it already, so that only the targets run). No cache: ("", False); a photo's edit never re-uses a source."""
    if reuse is None:
        return "", False
    key = source_key(pipe, {**settings, "scheduler": [scheduler_name(sampler), dict(sampler.config)],
                            "method": [method.name, method.options()]}, noise)
    return key, inversion is None and reuse.ready(key, decode)


def _source_and_targets(pipe, final: torch.Tensor, reused: SourceCache | None, decode: bool, timings: dict):
    """(latents, images) of every prompt: in a re-edit the source's come from the cache, the targets' were run."""
    images = _decode(pipe, final, timings) if decode else []
    if reused is None:
        return final, images
    assert reused.latents is not None
    return torch.cat([reused.latents.to(final), final]), ([reused.image] + images if decode else [])


def _method(method, self_replace, layers, edit_unconditional) -> Method:
    """The method to run: ``method``, or FPE with the FPE options given to ``edit`` (defaults otherwise)."""
    fpe_options = {key: value for key, value in (("self_replace", self_replace), ("layers", layers),
                                                 ("edit_unconditional", edit_unconditional)) if value is not None}
    if method is None:
        return FPE(**fpe_options)
    if fpe_options:
        raise BadInput(f"{', '.join(fpe_options)} given beside method={method.name!r}",
                       "give them to the method, e.g. method=FPE(self_replace='0:0.6')")
    return method


def model_family(denoiser) -> str:
    """The family a method's defaults are chosen by: sd (SD1.x and SD2.x), sdxl, pixart, sd3 or flux."""
    family = network_family(denoiser)
    return "sd" if denoiser.family == "unet" and family != "sdxl" else family


def _scheduler(scheduler, pipe, inverting: bool, model_betas: bool):
    """A fresh scheduler for this run: one made by name (None: the model's default) from the model's config, or the
    object given."""
    if scheduler is None:
        scheduler = default_scheduler(pipe.scheduler.config)
    if isinstance(scheduler, str):
        return make_scheduler(check_scheduler(scheduler, inverting), pipe.scheduler.config, model_betas)
    if inverting and scheduler_name(scheduler) not in INVERTIBLE:
        check_scheduler(scheduler_name(scheduler), inverting)
    return scheduler


def _params(pipe, method, control, registry, prompts, seed, latents, inversion, steps, guidance, negative_prompt,
            shape, sampler) -> dict:
    """What run.json records about an edit."""
    width, height = image_size(pipe, shape)
    layers: dict[str, set[int]] = {}
    for rule in control.rules:
        layers.setdefault(f"{rule.method} {rule.kind}", set()).update(registry.by_name(n).index for n in rule.layers)
    given = latents is not None or inversion is not None  # the noise was given, not drawn from the seed
    return {
        "method": method.name, "method_options": method.options(), "source": prompts[0], "targets": prompts[1:],
        "seed": None if given else seed, "latents_given": given, "steps": steps, "guidance": guidance,
        "negative_prompt": negative_prompt, "edited_steps": control.edited_steps(),
        "edited_layers": {key: sorted(indices) for key, indices in layers.items()},
        "height": height, "width": width, "scheduler_name": scheduler_name(sampler), "scheduler": dict(sampler.config),
    }


def _checked_prompts(pipe, source: str, targets: list[str], empty_source_ok: bool) -> list[str]:
    """Source first, then the targets; empty prompts refused (but a real image's source may be ""), and at most
    ``MAX_TARGETS`` targets."""
    if not targets:
        raise BadInput("no target prompt given", "give at least one target prompt")
    check_targets(len(targets))
    empty_ok = empty_source_ok and source == ""
    prompts = [source if empty_ok else check_prompt(pipe.tokenizer, source, "source prompt")]
    return prompts + [check_prompt(pipe.tokenizer, t, f"target prompt {i + 1}") for i, t in enumerate(targets)]


def _start_noise(denoiser, shape, generator: torch.Generator, latents, inversion: InversionResult | None, source: str,
                 steps: int, guidance: float) -> torch.Tensor:
    """The (1, C, h, w) noise every prompt starts from, on the network's device and dtype."""
    device, dtype = denoiser.device, denoiser.network.dtype
    if inversion is None:
        if latents is None:
            return initial_latents(0, shape, device, dtype, generator=generator)
        return check_latents(latents, shape).to(device=device, dtype=dtype)
    if latents is not None:
        raise BadInput("both latents and an inversion were given", "the noise of a real image is its inversion's")
    made, asked = (inversion.source, inversion.steps, inversion.guidance), (source, steps, guidance)
    if made != asked:
        raise BadInput(f"the inversion was made with (source prompt, steps, guidance) {made}, not {asked}",
                       "edit with the inversion's source prompt, steps and guidance")
    return check_latents(inversion.noise, shape).to(device=device, dtype=dtype)


def _denoise(pipe, denoiser, prompts, noise, hooks, sampling: tuple, settings: tuple, progress,
             timings) -> torch.Tensor:
    """The batch denoised: ``sampling`` is (scheduler, shared step noise), ``settings`` (steps, guidance,
    negative prompt)."""
    (scheduler, shared), (steps, guidance, negative_prompt) = sampling, settings
    start = time.perf_counter()
    size = image_size(pipe, noise.shape)[::-1]  # (height, width): SDXL's size conditioning
    guided = guidance > 1.0 and not denoiser.embedded_guidance
    conditioning = denoiser.encode(prompts, negative_prompt, guided, noise.device, size)
    timings["encode_s"] = time.perf_counter() - start
    start = time.perf_counter()
    final = sample(denoiser, scheduler, noise.expand(len(prompts), -1, -1, -1).clone(), conditioning, steps, guidance,
                   hooks=hooks, progress=step_bar(progress, steps, "denoising"), noise=shared)
    timings["denoise_s"] = time.perf_counter() - start
    return final


def _decode(pipe, final: torch.Tensor, timings: dict) -> list:
    start = time.perf_counter()
    images = decode_latents(pipe, final)
    timings["decode_s"] = time.perf_counter() - start
    return images

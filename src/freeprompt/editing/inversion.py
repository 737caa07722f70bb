"""Inverting a real image into the DDIM sampler, so that ``edit()`` can start from it.

Four methods, all built on one deterministic DDIM inversion (eta 0) over the *same* timesteps as the
official DDIM sampler (``sampler.ddim_scheduler``), so that sampling with those steps walks the trajectory
back. Inversion uses the source prompt (it may be "") without guidance, as the official FPE code does.

* ``ddim``: the official FPE way. During the edit the source branch (row 0) is replaced by the inversion
  trajectory after every step, so the source is exact and the targets attend with its queries and keys.
  Plain guided DDIM sampling from the inverted noise does *not* reconstruct the image; that error is
  measured separately (``InversionResult.ddim_psnr``) so that pinning does not hide it.
* ``direct`` (Ju et al., "PnP Inversion"): after every step the difference between the trajectory latent
  and the source branch latent is added back to the source branch; the targets are not corrected. In this
  one-source batch that is the same operation as ``ddim``'s pinning (the source branch ends each step on the
  trajectory); the recorded offsets show how far guided sampling would have drifted.
* ``null-text`` (Mokady et al.): per step, the unconditional embedding (initialised from the embedding of "")
  is optimised with Adam so that the *guided* DDIM step from the current latent lands on the trajectory;
  the edit then uses those per-step embeddings for every row. The optimisation always runs in float32: for
  a float16/bfloat16 pipeline a float32 copy of the UNet is made for it (the edit itself runs in the
  pipeline's dtype, so its reconstruction is slightly less exact there).
* ``negative-prompt`` (Miyake et al.): the unconditional embedding of every step is the source prompt's
  embedding, so the guided prediction of the source equals its conditional one, which is what inversion
  used. No optimisation.

On a flow-matching model (SD3, FLUX.1) the trajectory comes from the flow ODE instead (``flow_inversion``: Euler,
or RF-Solver's second-order midpoint step), and ``ddim`` and ``direct`` follow it the same way; null-text and
negative-prompt inversion, defined on noise-prediction models' unconditional branch, are refused there. On PixArt
(a noise-prediction transformer) every inversion runs through its denoiser over its own betas; the unconditional
rows' text mask goes with their embeddings (null-text optimises the embeddings under the empty prompt's mask).

Results are cached on disk by ``cache.InversionCache``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..diffusion import (
    Conditioning,
    StepHooks,
    check_steps,
    ddim_scheduler,
    decode,
    sample,
    step_bar,
)
from ..diffusion.denoisers import Denoiser, denoiser_for
from ..diffusion.prompts import as_conditioning
from ..diffusion.schedulers import check_solver, default_scheduler, is_flow, make_scheduler
from ..errors import BadInput
from .flow_inversion import flow_invert
from .images import image_to_latents, psnr

INVERSIONS = ("direct", "ddim", "null-text", "negative-prompt")


# ---------------------------------------------------------------- the DDIM schedule, both directions

def _schedule(pipe, steps: int):
    """(scheduler, [(t, alpha_t, alpha_prev)] in sampling order), alphas exactly as DDIMScheduler.step uses: the
    official FPE code's DDIM on a UNet, the model's own betas on a diffusion transformer (as ``edit`` samples it)."""
    scheduler = ddim_scheduler(pipe.scheduler.config, model_betas=getattr(pipe, "unet", None) is None)
    scheduler.set_timesteps(steps)
    ratio = scheduler.config["num_train_timesteps"] // scheduler.num_inference_steps
    rows = []
    for t in scheduler.timesteps.tolist():
        prev = t - ratio
        rows.append((t, scheduler.alphas_cumprod[t],
                     scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod))
    return scheduler, rows


def _epsilon(model_output, sample, alpha, prediction_type: str):
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return alpha**0.5 * model_output + (1 - alpha) ** 0.5 * sample
    raise BadInput(f"the model predicts {prediction_type!r}, which inversion does not support",
                   "use a model with epsilon or v_prediction")


def _invert_step(eps, sample_prev, alpha_t, alpha_prev):
    """The DDIM step run backwards: from the latent at ``alpha_prev`` to the one at ``alpha_t``, with the noise
    predicted at the known latent (the usual approximation of DDIM inversion)."""
    x0 = (sample_prev - (1 - alpha_prev) ** 0.5 * eps) / alpha_prev**0.5
    return alpha_t**0.5 * x0 + (1 - alpha_t) ** 0.5 * eps


def _guided_eps(denoiser: Denoiser, x, t, conditioning: Conditioning, guidance, alpha, prediction_type):
    """Guided noise prediction of a noise-prediction model (a UNet, PixArt); ``conditioning`` is ``[uncond, cond]``
    when guidance > 1, else ``cond``."""
    guided = guidance > 1.0
    model_in = torch.cat([x, x]) if guided else x
    dtype = denoiser.network.dtype
    out = denoiser.predict(model_in.to(dtype), torch.as_tensor(t, device=x.device), conditioning.to(dtype=dtype),
                           guidance).float()
    if guided:
        uncond, cond = out.chunk(2)
        out = uncond + guidance * (cond - uncond)
    return _epsilon(out, x, alpha, prediction_type)


@torch.no_grad()
def ddim_invert(pipe, latents0: torch.Tensor, cond, uncond=None, steps: int = 50, guidance: float = 1.0,
                progress: Callable | None = None) -> torch.Tensor:
    """Deterministic DDIM inversion: ``[x_0, x_1, ..., x_T]`` as a (T+1, C, h, w) float32 tensor on the
    UNet's device; ``x_0 = latents0``, ``x_T`` is the noise to sample from. ``x_k`` is the latent *after*
    sampling step ``T-1-k`` of ``sampler.sample`` with the same ``steps``. ``cond`` is the prompt's one-row
    ``Conditioning`` (or embedding); ``uncond`` and ``guidance > 1`` give guided inversion (the default is
    unguided)."""
    scheduler, rows = _schedule(pipe, steps)
    denoiser = denoiser_for(pipe)
    device = denoiser.device
    prediction = scheduler.config.prediction_type
    parts = [as_conditioning(uncond), as_conditioning(cond)] if guidance > 1.0 else [as_conditioning(cond)]
    context = Conditioning.cat(parts).to(device)
    x = latents0.to(device=device, dtype=torch.float32).reshape(1, *latents0.shape[-3:])
    trajectory = [x[0]]
    order = list(reversed(range(steps)))
    for i in (progress(order) if progress else order):
        t, alpha_t, alpha_prev = rows[i]
        eps = _guided_eps(denoiser, x, t, context, guidance, alpha_t.to(device), prediction)
        x = _invert_step(eps, x, alpha_t.to(device), alpha_prev.to(device))
        trajectory.append(x[0])
    return torch.stack(trajectory)


# ---------------------------------------------------------------- null-text optimisation

def null_text_optimise(pipe, trajectory: torch.Tensor, cond, uncond_init, guidance: float = 7.5,
                       inner_steps: int = 10, lr: float = 1e-2, epsilon: float = 1e-5,
                       progress: Callable | None = None) -> tuple[torch.Tensor, dict]:
    """Mokady et al.'s null-text inversion: per sampling step ``i``, Adam (learning rate ``lr * (1 - i / 2T)``,
    i.e. 1e-2 * (1 - i/100) at 50 steps) for at most ``inner_steps`` updates of the unconditional embedding,
    stopping early once the MSE between the guided DDIM step and the trajectory is below
    ``epsilon + i * 2e-5``. ``cond`` and ``uncond_init`` are one-row conditionings (or embeddings); only the
    unconditional token embeddings are optimised (SDXL's pooled embedding and PixArt's text mask stay). Returns
    (T, tokens, width) float32 embeddings on the CPU and per-step stats (the loss before and after each step's
    updates).

    Always float32: a float16/bfloat16 pipeline's network is copied to float32 for the optimisation."""
    if guidance <= 1.0:
        raise BadInput(f"null-text inversion needs guidance above 1 (got {guidance})",
                       "use e.g. --guidance 7.5, or --inversion direct")
    steps = trajectory.shape[0] - 1
    scheduler, rows = _schedule(pipe, steps)
    denoiser = denoiser_for(pipe)
    low_precision = denoiser.network.dtype != torch.float32
    if low_precision:
        denoiser = type(denoiser)(copy.deepcopy(denoiser.network).to(torch.float32), pipe)
    device = denoiser.device
    traj = trajectory.to(device=device, dtype=torch.float32)
    cond = as_conditioning(cond).to(device=device, dtype=torch.float32)
    uncond = as_conditioning(uncond_init).to(device=device, dtype=torch.float32)
    latent = traj[-1:].clone()
    found, inner_used, first, losses = [], [], [], []
    order = list(range(steps))
    for i in (progress(order) if progress else order):
        t = rows[i][0]
        with torch.no_grad():
            out_cond = denoiser.predict(latent, t, cond, 1.0).float()
        step = _NullTextStep(denoiser, scheduler, latent, t, out_cond, guidance, traj[steps - 1 - i : steps - i])
        lr_i = lr * (1.0 - i / (2.0 * steps))
        uncond, used, (loss_first, loss_value) = step.optimise(uncond, lr_i, inner_steps, epsilon + i * 2e-5)
        found.append(uncond.embeddings[0].clone().cpu())  # .cpu() does not copy a CPU tensor
        inner_used.append(used)
        first.append(loss_first)
        losses.append(loss_value)
        latent = step.advance(uncond)
    return torch.stack(found), {"inner_steps": inner_used, "first_losses": first, "final_losses": losses,
                                "optimised_in": "float32 copy" if low_precision else "float32"}


class _NullTextStep:
    """One sampling step of null-text inversion: the guided DDIM step from ``latent`` should land on ``target``."""

    def __init__(self, denoiser: Denoiser, scheduler, latent, t, out_cond, guidance, target):
        self.denoiser, self.scheduler, self.latent, self.t = denoiser, scheduler, latent, t
        self.out_cond, self.guidance, self.target = out_cond, guidance, target

    def guided_step(self, uncond: Conditioning) -> torch.Tensor:
        out_uncond = self.denoiser.predict(self.latent, self.t, uncond, 1.0).float()
        guided = out_uncond + self.guidance * (self.out_cond - out_uncond)  # as sampler.sample guides
        return self.scheduler.step(guided, self.t, self.latent, return_dict=False)[0]

    def optimise(self, uncond: Conditioning, lr: float, inner_steps: int, stop_below: float):
        """Adam on the unconditional token embeddings; returns (the optimised conditioning, updates, (the loss
        before the first update, the last loss))."""
        embedding = uncond.embeddings.detach().clone().requires_grad_(True)  # a fresh leaf per step
        optimiser = torch.optim.Adam([embedding], lr=lr)
        loss_first, loss_value, used = float("nan"), float("nan"), 0
        for _ in range(inner_steps):
            loss = torch.nn.functional.mse_loss(self.guided_step(Conditioning(embedding, uncond.added)), self.target)
            (grad,) = torch.autograd.grad(loss, [embedding])  # only the embedding's gradient, not the UNet's
            embedding.grad = grad
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
            used += 1
            loss_value = loss.item()
            loss_first = loss_value if used == 1 else loss_first
            if loss_value < stop_below:
                break
        return Conditioning(embedding.detach(), uncond.added), used, (loss_first, loss_value)

    @torch.no_grad()
    def advance(self, uncond: Conditioning) -> torch.Tensor:
        return self.guided_step(uncond)


# ---------------------------------------------------------------- results and the entry point

@dataclass
class InversionResult:
    method: str
    trajectory: torch.Tensor  # (T+1, C, h, w) float32 CPU: [0] the image's latent ... [T] the inverted noise
    uncond: torch.Tensor | None  # (T, tokens, width) float32 CPU: per-step unconditional embeddings, or None
    source: str  # the prompt used for inversion (and as the edit's source prompt)
    steps: int
    guidance: float
    seconds: float  # time the inversion took when it was computed (not when loaded from the cache)
    psnr: float | None = None  # dB: the method's reconstruction (the edit's source image) vs the input image
    ddim_psnr: float | None = None  # dB: plain guided DDIM sampling from the inverted noise (no pinning), vs input
    vae_psnr: float | None = None  # dB: decode(encode(image)) vs input, the upper bound of any reconstruction
    cached: bool = False
    info: dict = field(default_factory=dict)
    # one row of the other inputs that go with ``uncond`` (SDXL: ``text_embeds``, the pooled embedding; PixArt:
    # ``encoder_attention_mask``, the text mask), float32 CPU, or None
    uncond_added: dict[str, torch.Tensor] | None = None

    @property
    def noise(self) -> torch.Tensor:
        """(1, C, h, w) inverted noise to start sampling from."""
        return self.trajectory[-1:].clone()

    def hooks(self, device, dtype, pinned: bool = True) -> InversionHooks:
        """The sampling hooks that make a batch follow this inversion (see ``InversionHooks``); ``pinned=False``
        leaves out the trajectory pinning."""
        self.info["edit_offsets_rms"] = []
        return InversionHooks(self, device, dtype, self.info["edit_offsets_rms"], pinned)


class InversionHooks(StepHooks):
    """A batch whose row 0 is the inverted image's source branch: with per-step unconditional embeddings
    (null-text, negative-prompt) every row's unconditional half uses them; with a trajectory (ddim, direct) the
    source branch is brought back onto it after every step (ddim: replaced by it, as the official FPE code does;
    direct: the deviation added back, as Ju et al. do); the targets are never corrected. The RMS of each
    correction is appended to ``offsets``."""

    def __init__(self, inversion: InversionResult, device, dtype, offsets: list, pinned: bool = True):
        self.steps = inversion.steps
        self.uncond = None if inversion.uncond is None else inversion.uncond.to(device=device, dtype=dtype)
        self.added = {k: v.to(device=device, dtype=dtype) for k, v in (inversion.uncond_added or {}).items()}
        pinned = pinned and inversion.method in ("ddim", "direct")
        self.trajectory = inversion.trajectory.to(device=device, dtype=dtype) if pinned else None
        self.replace = inversion.method == "ddim"
        self.offsets = offsets
        self.guided = inversion.guidance > 1.0

    def conditioning(self, step: int, conditioning: Conditioning) -> Conditioning:
        if self.uncond is None or not self.guided:
            return conditioning  # no per-step embeddings, or no unconditional half to put them in
        half = conditioning.num_rows // 2
        embeddings = self.uncond[step : step + 1].expand(half, -1, -1)
        return conditioning.replaced(0, embeddings, {k: v.expand(half, -1) for k, v in self.added.items()})

    def after_step(self, step: int, latents: torch.Tensor) -> torch.Tensor:
        if self.trajectory is None:
            return latents
        wanted = self.trajectory[self.steps - 1 - step]
        offset = wanted - latents[0]
        self.offsets.append(float(offset.float().pow(2).mean().sqrt()))
        latents = latents.clone()
        latents[0] = wanted if self.replace else latents[0] + offset
        return latents


FLOW_INVERSIONS = ("direct", "ddim")  # those that follow a trajectory; the others edit the unconditional branch


def check_inversion(method: str, pipe=None) -> str:
    """``method`` if it is a known inversion (and ``pipe``, when given, a model that ``method`` inverts photos on)."""
    if method not in INVERSIONS:
        raise BadInput(f"unknown inversion {method!r}", f"use one of {', '.join(INVERSIONS)}")
    if pipe is None or method in FLOW_INVERSIONS or not is_flow(pipe.scheduler.config):
        return method
    raise BadInput(f"the {method} inversion edits a noise-prediction model's unconditional branch; it is not "
                   f"defined on a flow-matching {type(pipe).__name__}",
                   f"use --inversion {' or '.join(FLOW_INVERSIONS)} (--inversion-solver euler or midpoint)")


def invert(pipe, image, source: str, method: str = "direct", steps: int = 50, guidance: float = 7.5,
           progress: bool | Callable = False, measure: bool = False, null_text_options: dict | None = None,
           solver: str = "euler") -> InversionResult:
    """Invert ``image`` (a PIL image of a size the model accepts, e.g. from ``load_image``) with ``method``;
    ``solver`` (``diffusion.schedulers.SOLVERS``) integrates a flow-matching model's ODE.

    ``measure=True`` also computes ``vae_psnr``, ``ddim_psnr`` and the method's reconstruction ``psnr`` (one
    extra sampling pass; ``edit_real`` gets the reconstruction from the edit itself instead)."""
    check_inversion(method, pipe)
    flow = is_flow(pipe.scheduler.config)
    check_solver(solver, flow)
    check_steps(steps, pipe.scheduler.config)
    if not isinstance(source, str):
        raise BadInput("the source prompt is not text", "give a string (\"\" is allowed for real images)")
    start = time.perf_counter()
    latents0 = image_to_latents(pipe, image)
    size = (image.height, image.width)
    bar = step_bar(progress, steps, "inverting")
    if flow:
        trajectory = flow_invert(pipe, latents0, source, steps, guidance, solver, progress=bar).float().cpu()
        return _finished(pipe, image, InversionResult(method, trajectory, None, source, steps, guidance,
                                                      time.perf_counter() - start, info={"solver": solver}), measure)
    denoiser = denoiser_for(pipe)
    cond = denoiser.encode([source], "", False, denoiser.device, size)  # one row, the prompt's own text encoding
    trajectory = ddim_invert(pipe, latents0, cond, steps=steps, progress=bar).float().cpu()
    uncond, uncond_row = None, None  # the per-step unconditional embeddings, and the row whose other inputs go along
    info: dict = {}
    if method == "null-text":
        uncond_row = denoiser.encode([""], "", False, denoiser.device, size)
        bar = step_bar(progress, steps, "null-text")
        uncond, info = null_text_optimise(pipe, trajectory, cond, uncond_row, guidance, progress=bar,
                                          **(null_text_options or {}))
    elif method == "negative-prompt":
        uncond, uncond_row = cond.embeddings.float().cpu().expand(steps, -1, -1).clone(), cond
    result = InversionResult(method=method, trajectory=trajectory, uncond=uncond, source=source, steps=steps,
                             guidance=guidance, seconds=time.perf_counter() - start, info=info,
                             uncond_added=_unconditional_inputs(uncond_row))
    return _finished(pipe, image, result, measure)


def _unconditional_inputs(conditioning: Conditioning | None) -> dict[str, torch.Tensor] | None:
    """What goes with per-step unconditional embeddings from ``conditioning``'s other inputs: SDXL's pooled embedding,
    PixArt's text mask (SDXL's size ids are the same in every row and stay as the edit makes them)."""
    if conditioning is None or not conditioning.added:
        return None
    kept = {k: v.float().cpu() for k, v in conditioning.added.items() if k != "time_ids"}
    return kept or None


def _finished(pipe, image, result: InversionResult, measure: bool) -> InversionResult:
    return measure_reconstruction(pipe, result, image) if measure else result


@torch.no_grad()
def reconstruct(pipe, inversion: InversionResult, pinned: bool = True) -> torch.Tensor:
    """(1, C, h, w) final latent of sampling the source prompt alone from the inverted noise with the edit's
    guidance: with the method's per-step embeddings (null-text, negative-prompt) and, if ``pinned``, its
    trajectory pinning (ddim, direct). ``pinned=False`` on a ddim/direct result is plain DDIM (a flow model: Euler)
    reconstruction."""
    denoiser = denoiser_for(pipe)
    device, dtype = denoiser.device, denoiser.network.dtype
    size = tuple(v * pipe.vae_scale_factor for v in inversion.trajectory.shape[-2:])
    guided = inversion.guidance > 1.0 and not denoiser.embedded_guidance
    conditioning = denoiser.encode([inversion.source], "", guided, device, size)
    hooks = inversion.hooks(device, dtype, pinned)
    scheduler = make_scheduler(default_scheduler(pipe.scheduler.config), pipe.scheduler.config,
                               model_betas=getattr(pipe, "unet", None) is None)  # as _schedule and edit() choose
    final = sample(denoiser, scheduler, inversion.noise.to(device=device, dtype=dtype), conditioning,
                   inversion.steps, inversion.guidance, hooks=[hooks])
    return final.float().cpu()


def measure_reconstruction(pipe, inversion: InversionResult, image) -> InversionResult:
    """Fill ``vae_psnr``, ``ddim_psnr`` and ``psnr`` of ``inversion`` against the input ``image``."""
    start = time.perf_counter()
    vae_image = decode(pipe, inversion.trajectory[:1].to(pipe.vae.device))[0]
    inversion.vae_psnr = psnr(vae_image, image)
    plain = InversionResult("ddim", inversion.trajectory, None, inversion.source, inversion.steps,
                            inversion.guidance, 0.0)
    plain_latent = reconstruct(pipe, plain, pinned=False)
    inversion.ddim_psnr = psnr(decode(pipe, plain_latent.to(pipe.vae.device))[0], image)
    inversion.info["ddim_latent_rmse"] = float((plain_latent[0] - inversion.trajectory[0]).pow(2).mean().sqrt())
    if inversion.method in ("ddim", "direct"):
        inversion.psnr = inversion.vae_psnr  # the source branch ends on the trajectory: x_0, the image's latent
    else:
        inversion.psnr = psnr(decode(pipe, reconstruct(pipe, inversion).to(pipe.vae.device))[0], image)
    inversion.info["measure_s"] = time.perf_counter() - start
    return inversion

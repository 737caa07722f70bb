"""Inverting a photo into a flow-matching model's sampler (SD3 / SD3.5, FLUX.1).

The sampler (``diffusion.schedulers`` ``flow``: diffusers' ``FlowMatchEulerDiscreteScheduler``) integrates the flow
ODE dx/dσ = v(x, σ) from the noise (the top σ, shifted as the model is configured) down to the image (σ = 0) with
Euler steps over its σs. Inversion runs the same ODE upwards over the *same* σs, so that sampling walks the
trajectory back. Two solvers:

* ``euler``: each step takes the velocity at the latent it knows, the mirror of the sampler's Euler step (the
  flow-matching analogue of DDIM inversion; first order, so it drifts by O(Δσ) per step);
* ``midpoint``: RF-Solver's second-order step (Wang et al., "Taming Rectified Flow for Inversion and Editing",
  2024): the velocity's derivative along σ estimated from a half step, which amounts to the explicit midpoint rule
  x + Δ v(x + Δ/2 v, σ + Δ/2) (two network calls a step).

As DDIM inversion here, inversion uses the source prompt without classifier-free guidance; FLUX.1-dev, whose
guidance is an input of the network, gets the edit's guidance value.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..diffusion.denoisers import denoiser_for
from ..diffusion.schedulers import check_solver, make_scheduler


@torch.no_grad()
def flow_invert(pipe, latents0: torch.Tensor, source: str, steps: int, guidance: float = 1.0,
                solver: str = "euler", progress: Callable | None = None) -> torch.Tensor:
    """``[x_0, x_1, ..., x_T]`` as a (T+1, C, h, w) float32 tensor on the network's device: ``x_0 = latents0`` (σ = 0)
    ... ``x_T`` the noise to sample from; ``x_k`` is the latent *after* sampling step ``T-1-k`` with ``steps``."""
    check_solver(solver, flow=True)
    denoiser = denoiser_for(pipe)
    device = denoiser.device
    x = latents0.to(device=device, dtype=torch.float32).reshape(1, *latents0.shape[-3:])
    scheduler = make_scheduler("flow", pipe.scheduler.config)
    denoiser.set_timesteps(scheduler, steps, x)  # the sampler's σs: the model's shift, FLUX's resolution shift
    sigmas = scheduler.sigmas.to(device=device, dtype=torch.float32)  # steps + 1, the last 0
    train = float(scheduler.config.num_train_timesteps)
    size = tuple(side * pipe.vae_scale_factor for side in x.shape[-2:])
    context = denoiser.encode([source], "", False, device, size)

    def velocity(latents: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        out = denoiser.predict(latents.to(denoiser.network.dtype), (sigma * train).reshape(()), context, guidance)
        return out.float()

    trajectory = [x[0]]
    order = list(reversed(range(steps)))
    for i in (progress(order) if progress else order):
        low, high = sigmas[i + 1], sigmas[i]  # sampling step i goes from σ = high down to σ = low
        delta = high - low
        v = velocity(x, low)
        if solver == "midpoint":
            v = velocity(x + 0.5 * delta * v, low + 0.5 * delta)
        x = x + delta * v
        trajectory.append(x[0])
    return torch.stack(trajectory)

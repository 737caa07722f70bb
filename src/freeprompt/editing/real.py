"""Free-Prompt-Editing of a real image: invert it (``inversion.py``, cached by ``cache.py``), then ``edit()``
from the inversion.

    from freeprompt.editing.images import load_image
    from freeprompt.editing.real import edit_real
    image = load_image("car.jpg", (512, 512), "crop")
    result = edit_real(pipe, image, "a photo of a red car", ["a photo of a blue car"], inversion="direct")
    result.images   # [reconstruction, target_1, ...]
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from ..diffusion import PromptTruncated, StepHooks, check_prompt, check_steps, latent_shape
from ..diffusion.denoisers import network_of
from ..diffusion.schedulers import check_scheduler, check_solver, default_scheduler, is_flow
from ..errors import BadInput, FreepromptError
from .cache import CacheWarning, InversionCache
from .generated import EditResult, edit
from .images import psnr, to_rgb
from .inversion import InversionResult, check_inversion, invert, measure_reconstruction
from .methods import Method


def edit_real(
    pipe,
    image,
    source: str,
    targets: list[str] | str,
    *,
    method: Method | None = None,
    inversion: str = "direct",
    steps: int = 50,
    guidance: float = 7.5,
    self_replace: str | None = None,
    layers: str | list[int] | None = None,
    edit_unconditional: bool | None = None,
    cache: InversionCache | None = None,
    model_key: str = "",
    progress: bool | Callable = True,
    check_ddim: bool = True,
    hooks: Sequence[StepHooks] = (),
    scheduler: str | None = None,
    solver: str = "euler",
) -> EditResult:
    """Edit the real ``image`` (PIL, already at the model's size, e.g. from ``load_image``): invert it with
    ``inversion`` (one of ``INVERSIONS``) using ``source`` ("" allowed) and generate every target from the inverted
    noise with ``method`` (default FPE, whose options may also be given here, as to ``edit``). ``result.images`` is
    ``[reconstruction, target_1, ...]``; ``result.input_image`` the input.

    ``cache`` reuses an earlier inversion of the same image, model (``model_key``: id and revision; required
    with a cache), method, steps, guidance and source prompt. ``check_ddim`` (ddim only) measures plain DDIM
    sampling from the inverted noise without pinning (one extra sampling pass, cached), recorded as
    ``params["ddim_psnr"]`` so that pinning the source branch cannot hide the inversion's error. ``hooks`` are
    further ``StepHooks`` of the edit's sampling run (not of the inversion's), as ``edit`` takes them; ``scheduler``
    must be one that inverts (``diffusion.schedulers.INVERTIBLE``; None: ddim, flow on SD3/FLUX.1). ``solver``
    integrates a flow-matching model's ODE (``diffusion.schedulers.SOLVERS``: euler, or RF-Solver's midpoint)."""
    scheduler = check_scheduler(scheduler or default_scheduler(pipe.scheduler.config), inverting=True)
    targets = _check_inputs(pipe, image, source, targets, (inversion, solver), steps, cache, model_key)
    image = to_rgb(image)  # transparency flattened on white, as load_image does
    start = time.perf_counter()
    key, inv = _cached_or_inverted(pipe, image, source, (inversion, solver), steps, guidance, cache, model_key,
                                   progress)
    inversion_s = time.perf_counter() - start
    result = edit(pipe, source, targets, method=method, steps=steps, guidance=guidance, self_replace=self_replace,
                  layers=layers, edit_unconditional=edit_unconditional, height=image.height, width=image.width,
                  progress=progress, inversion=inv, hooks=hooks, scheduler=scheduler)
    start = time.perf_counter()
    fresh = not inv.cached
    if fresh:
        inv.psnr = psnr(result.images[0], image)
    measure = inversion == "ddim" and check_ddim and inv.ddim_psnr is None
    if measure:
        measure_reconstruction(pipe, inv, image)  # fills ddim_psnr and vae_psnr (psnr: the same decoded x_0)
    if cache is not None and (fresh or measure):
        _save_to_cache(cache, key, inv, {"model": model_key, "size": list(image.size)})
    result.timings.update(inversion_s=inversion_s, check_s=time.perf_counter() - start)
    result.params.update(_inversion_params(inv, result, key, model_key, image.size))
    result.input_image = image
    return result


def _save_to_cache(cache, key: str, inv, describe: dict) -> None:
    """A cache that cannot be written costs the next run an inversion, never this run's finished edit."""
    try:
        cache.save(key, inv, describe=describe)
    except FreepromptError as err:
        warnings.warn(f"the inversion was not cached: {err}", CacheWarning, stacklevel=3)


def _check_inputs(pipe, image, source, targets, how: tuple[str, str], steps, cache, model_key) -> list[str]:
    """Everything ``edit_real`` can refuse, checked before the (possibly long) inversion; the targets as a list.
    ``how`` is (inversion, solver)."""
    check_inversion(how[0], pipe)
    check_solver(how[1], is_flow(pipe.scheduler.config))
    if not isinstance(source, str):
        raise BadInput("the source prompt is not text", "give a string (\"\" is allowed for real images)")
    check_steps(steps, pipe.scheduler.config)
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not targets:
        raise BadInput("no target prompt given", "give at least one target prompt")
    with warnings.catch_warnings():  # edit() warns about over-long prompts; once is enough
        warnings.simplefilter("ignore", PromptTruncated)
        for i, target in enumerate(targets):
            check_prompt(pipe.tokenizer, target, f"target prompt {i + 1}")
    if not hasattr(image, "size") or not hasattr(image, "convert"):
        raise BadInput(f"the image is a {type(image).__name__}, not a PIL image", "load it with load_image(path, size)")
    width, height = image.size
    try:
        latent_shape(pipe, height, width)
    except BadInput as err:
        raise BadInput(f"the image is {width}x{height}, which this model cannot use ({err.problem})",
                       "resize it, e.g. load_image(path, (512, 512)) or --height/--width 512") from None
    if cache is not None and not model_key:
        raise BadInput("an inversion cache needs a model key", "pass model_key (the model's id and revision)")
    return targets


def _cached_or_inverted(pipe, image, source, how: tuple[str, str], steps, guidance, cache, model_key, progress):
    """``(cache key or None, InversionResult)``: the cached inversion when there is one, else a fresh one. ``how``
    is (inversion, solver); a solver other than euler is part of the key."""
    method, solver = how
    key = inv = None
    if cache is not None:
        named = method if solver == "euler" else f"{method}+{solver}"
        key = cache.key(image, model_key=model_key, method=named, steps=steps, guidance=guidance, source=source,
                        dtype=network_of(pipe).dtype)
        inv = cache.load(key)
    if inv is None:
        inv = invert(pipe, image, source, method, steps, guidance, progress=progress, solver=solver)
    return key, inv


def _inversion_params(inv: InversionResult, result: EditResult, key, model_key: str, size) -> dict:
    """What run.json records about a real image's inversion and reconstruction."""
    final_source = result.latents[0].float()
    params = {
        "real_image": True, "inversion": inv.method, "inversion_source": inv.source,
        "inversion_psnr": _round(inv.psnr), "ddim_psnr": _round(inv.ddim_psnr), "vae_psnr": _round(inv.vae_psnr),
        "ddim_latent_rmse": inv.info.get("ddim_latent_rmse"),
        "reconstruction_latent_rmse": float((final_source - inv.trajectory[0]).pow(2).mean().sqrt()),
        "inversion_cached": inv.cached, "inversion_compute_s": round(inv.seconds, 3), "inversion_key": key,
        "model_key": model_key or None, "image_size": list(size),
    }
    if "solver" in inv.info:  # a flow-matching model's inversion
        params["inversion_solver"] = inv.info["solver"]
    if inv.method == "null-text":
        params["null_text_inner_steps"] = inv.info.get("inner_steps")
    if inv.method in ("ddim", "direct"):
        params["source_offsets_rms"] = [round(v, 6) for v in inv.info.get("edit_offsets_rms") or []]
    return params


def _round(value):
    return None if value is None or not np.isfinite(value) else round(float(value), 3)


__all__ = ["edit_real"]

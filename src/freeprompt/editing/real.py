"""Free-Prompt-Editing of a real image: invert it (``inversion.py``), then ``edit()`` from the inverted noise.

    from freeprompt.editing.images import load_image
    from freeprompt.editing.real import edit_real
    image = load_image("car.jpg", (512, 512), "crop")
    result = edit_real(pipe, image, "a photo of a red car", ["a photo of a blue car"], inversion="direct")
    result.images   # [reconstruction, target_1, ...]
"""

from __future__ import annotations

import time
import warnings
from typing import Callable

import numpy as np

from ..errors import BadInput
from .generated import DEFAULT_LAYERS, DEFAULT_SELF_REPLACE, EditResult, edit, latent_shape
from .images import psnr, to_rgb
from .inversion import METHODS, InversionCache, InversionResult, check_method, invert, measure_reconstruction
from .prompts import PromptTruncated, check_prompt
from .sampler import check_steps


def edit_real(
    pipe,
    image,
    source: str,
    targets: list[str] | str,
    *,
    inversion: str = "direct",
    steps: int = 50,
    guidance: float = 7.5,
    self_replace: str = DEFAULT_SELF_REPLACE,
    layers: str | list[int] = DEFAULT_LAYERS,
    edit_unconditional: bool = False,
    cache: InversionCache | None = None,
    model_key: str = "",
    progress: bool | Callable = True,
    check_ddim: bool = True,
) -> EditResult:
    """Edit the real ``image`` (PIL, already at the model's size, e.g. from ``load_image``): invert it with
    ``inversion`` (one of ``METHODS``) using ``source`` ("" allowed) and generate every target from the inverted
    noise with FPE. ``result.images`` is ``[reconstruction, target_1, ...]``.

    ``cache`` reuses an earlier inversion of the same image, model (``model_key``: id and revision; required
    with a cache), method, steps, guidance and source prompt. ``check_ddim`` (ddim only) measures plain DDIM
    sampling from the inverted noise without pinning (one extra sampling pass, cached), recorded as
    ``params["ddim_psnr"]`` so that pinning the source branch cannot hide the inversion's error."""
    check_method(inversion)
    if not isinstance(source, str):
        raise BadInput("the source prompt is not text", "give a string (\"\" is allowed for real images)")
    check_steps(steps, pipe.scheduler.config)
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not targets:  # checked before the (possibly long) inversion; edit() checks them again
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
    image = to_rgb(image)  # transparency flattened on white, as load_image does
    device, dtype = pipe.unet.device, pipe.unet.dtype

    start = time.perf_counter()
    key = inv = None
    if cache is not None:
        key = cache.key(image, model_key=model_key, method=inversion, steps=steps, guidance=guidance, source=source,
                        dtype=dtype)
        inv = cache.load(key)
    if inv is None:
        inv = invert(pipe, image, source, inversion, steps, guidance, progress=progress)
    inversion_s = time.perf_counter() - start

    uncond_at, after_step = inv.hooks(device, dtype)
    result = edit(pipe, source, targets, latents=inv.noise, steps=steps, guidance=guidance,
                  self_replace=self_replace, layers=layers, edit_unconditional=edit_unconditional,
                  height=height, width=width, progress=progress, uncond_at=uncond_at, after_step=after_step,
                  allow_empty_source=source == "")

    start = time.perf_counter()
    fresh = not inv.cached
    if fresh:
        inv.psnr = psnr(result.images[0], image)
    measure = inversion == "ddim" and check_ddim and inv.ddim_psnr is None
    if measure:
        measure_reconstruction(pipe, inv, image)  # fills ddim_psnr and vae_psnr (psnr: the same decoded x_0)
    check_s = time.perf_counter() - start
    if cache is not None and (fresh or measure):
        cache.save(key, inv, describe={"model": model_key, "size": [width, height]})

    final_source = result.latents[0].float()
    result.params.update({
        "real_image": True,
        "inversion": inversion,
        "inversion_source": source,
        "inversion_psnr": _round(inv.psnr),
        "ddim_psnr": _round(inv.ddim_psnr),
        "vae_psnr": _round(inv.vae_psnr),
        "ddim_latent_rmse": inv.info.get("ddim_latent_rmse"),
        "reconstruction_latent_rmse": float((final_source - inv.trajectory[0]).pow(2).mean().sqrt()),
        "inversion_cached": inv.cached,
        "inversion_compute_s": round(inv.seconds, 3),
        "inversion_key": key,
        "model_key": model_key or None,
        "image_size": [width, height],
    })
    if inversion == "null-text":
        result.params["null_text_inner_steps"] = inv.info.get("inner_steps")
    if inversion in ("ddim", "direct"):
        offsets = inv.info.get("edit_offsets_rms") or []
        result.params["source_offsets_rms"] = [round(v, 6) for v in offsets]
    result.timings["inversion_s"] = inversion_s
    result.timings["check_s"] = check_s
    return result


def _round(value):
    return None if value is None or not np.isfinite(value) else round(float(value), 3)


__all__ = ["METHODS", "InversionCache", "InversionResult", "edit_real"]

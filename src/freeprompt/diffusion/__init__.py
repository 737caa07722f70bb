"""The ground floor: the DDIM sampling loop and its step hooks, prompt encoding, latent shapes.

Everything above (attention control, editing methods, inversions, probing, evaluation) runs through
``sample``; this package imports nothing of freeprompt's but its errors. Names load on first use.

    hooks     StepHooks: what a run may do around a step (torch-free)
    sampler   the DDIM loop, the one place where a denoising step is counted
    prompts   prompt encoding (SD1.x/2.x and SDXL), prompt checks
    latents   latent shapes, image sizes, the pixel budget
"""

from typing import TYPE_CHECKING

from ..lazy import exports

if TYPE_CHECKING:
    from .hooks import StepHooks
    from .latents import MAX_TARGETS, check_latents, check_size, check_targets, image_size, latent_shape, pixel_budget
    from .prompts import (
        Conditioning,
        PromptTruncated,
        check_prompt,
        encode_prompts,
        encode_text,
        is_sdxl,
        require_text,
    )
    from .sampler import (
        check_guidance,
        check_steps,
        ddim_scheduler,
        decode,
        initial_latents,
        sample,
        step_bar,
        vae_precision,
    )

_WHERE = {
    "hooks": ["StepHooks"],
    "latents": ["MAX_TARGETS", "check_latents", "check_size", "check_targets", "image_size", "latent_shape",
                "pixel_budget"],
    "prompts": ["Conditioning", "PromptTruncated", "check_prompt", "encode_prompts", "encode_text", "is_sdxl",
                "require_text"],
    "sampler": ["check_guidance", "check_steps", "ddim_scheduler", "decode", "initial_latents", "sample", "step_bar",
                "vae_precision"],
}
__all__ = sorted(name for names in _WHERE.values() for name in names)
__getattr__, __dir__ = exports(__name__, {name: module for module, names in _WHERE.items() for name in names})

"""The ground floor: the DDIM sampling loop and its step hooks, prompt encoding, latent shapes.

Everything above (attention control, editing methods, inversions, probing, evaluation) runs through
``sample``; this package imports nothing of freeprompt's but its errors.
"""

from .latents import check_latents, check_size, image_size, latent_shape, pixel_budget
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
                      StepHooks,
                      check_guidance,
                      check_steps,
                      ddim_scheduler,
                      decode,
                      initial_latents,
                      sample,
                      step_bar,
                      vae_precision,
)

__all__ = ["Conditioning", "PromptTruncated", "StepHooks", "check_guidance", "check_latents", "check_prompt", "check_size", "check_steps", "ddim_scheduler", "decode",
           "encode_prompts", "encode_text", "image_size", "initial_latents", "is_sdxl", "latent_shape", "pixel_budget", "require_text",
           "sample", "step_bar", "vae_precision"]

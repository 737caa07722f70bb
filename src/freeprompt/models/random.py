"""Randomly initialised pipelines with Stable Diffusion's real layouts, for tests and benchmarks.

- ``"sd15"``: the full SD1.5 architecture (860 M UNet parameters); ``"tiny"`` keeps SD1.x's block structure (3
  cross-attention down blocks + 1 plain, attention in the mid block, 1 plain + 3 cross-attention up blocks, 2
  layers per block: 16 self + 16 cross attention layers) with narrow channels, so a forward is cheap.
- ``"sd21"`` / ``"tiny-sd2"``: SD 2.x: the same layout with linear projections, a head count per block, an
  OpenCLIP-style text encoder (GELU) and v-prediction.
- ``"sdxl"`` / ``"tiny-sdxl"``: SDXL: a plain first block, transformer blocks of depth 2 and 10 (tiny: 1 and 2),
  two text encoders (the second with a projection: pooled embeddings), size and crop conditioning ("text_time").
"""

from __future__ import annotations

import torch

SD1_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
SD1_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
SDXL_DOWN = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
SDXL_UP = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")

SIZES = {
    "tiny": dict(unet_channels=(32, 64, 64, 64), text_width=32, text_layers=2, text_heads=4,
                 vae_channels=(16, 16, 16, 16), vae_groups=8, sample_size=8, heads=8),
    "sd15": dict(unet_channels=(320, 640, 1280, 1280), text_width=768, text_layers=12, text_heads=12,
                 vae_channels=(128, 256, 512, 512), vae_groups=32, sample_size=64, heads=8),
    "tiny-sd2": dict(unet_channels=(32, 64, 64, 64), text_width=32, text_layers=2, text_heads=4,
                     vae_channels=(16, 16, 16, 16), vae_groups=8, sample_size=8, heads=(2, 4, 4, 4)),
    "sd21": dict(unet_channels=(320, 640, 1280, 1280), text_width=1024, text_layers=23, text_heads=16,
                 vae_channels=(128, 256, 512, 512), vae_groups=32, sample_size=96, heads=(5, 10, 20, 20)),
    "tiny-sdxl": dict(unet_channels=(32, 64, 64), text_width=32, text_layers=2, text_heads=4,
                      vae_channels=(16, 16, 16, 16), vae_groups=8, sample_size=8, heads=(2, 4, 4), depth=(1, 1, 2),
                      time_dim=8, text2_width=32),
    "sdxl": dict(unet_channels=(320, 640, 1280), text_width=768, text_layers=12, text_heads=12,
                 vae_channels=(128, 256, 512, 512), vae_groups=32, sample_size=128, heads=(5, 10, 20), depth=(1, 2, 10),
                 time_dim=256, text2_width=1280, text2_layers=32, text2_heads=20),
}
FAMILIES = {"tiny": "sd1", "sd15": "sd1", "tiny-sd2": "sd2", "sd21": "sd2", "tiny-sdxl": "sdxl", "sdxl": "sdxl"}


def clip_text_encoder(width: int, layers: int, heads: int, act: str = "quick_gelu", projection: int | None = None):
    """A randomly initialised CLIP text encoder for the real CLIP BPE tokenizer: its 49,408 tokens, its start and end
    ids, 77 positions; with ``projection`` a ``CLIPTextModelWithProjection`` (SDXL's second encoder)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=width, intermediate_size=width * 4, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407, hidden_act=act, projection_dim=projection or width,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def random_pipeline(size: str = "tiny", seed: int = 0, torch_dtype=torch.float32):
    """A Stable Diffusion pipeline (1.x, 2.x or XL, by ``size``) with random weights and the real CLIP tokenizer."""
    if size not in SIZES:
        raise ValueError(f"unknown random pipeline {size!r}; use one of {', '.join(SIZES)}")
    torch.manual_seed(seed)
    cfg, family = SIZES[size], FAMILIES[size]
    pipe = _sdxl(cfg, size) if family == "sdxl" else _sd(cfg, size, family)
    pipe.set_progress_bar_config(disable=True)
    return pipe if torch_dtype == torch.float32 else pipe.to(dtype=torch_dtype)


def _vae(cfg: dict, size: str, scaling: float):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=cfg["vae_channels"],
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1 if size.startswith("tiny") else 2, norm_num_groups=cfg["vae_groups"],
        sample_size=cfg["sample_size"] * 8, scaling_factor=scaling,
    )


def _sd(cfg: dict, size: str, family: str):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from ..diffusion.sampler import ddim_scheduler
    from .tokenizer import clip_tokenizer

    sd2 = family == "sd2"
    unet = UNet2DConditionModel(
        sample_size=cfg["sample_size"], in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=cfg["unet_channels"], down_block_types=SD1_DOWN, up_block_types=SD1_UP,
        cross_attention_dim=cfg["text_width"], attention_head_dim=cfg["heads"], norm_num_groups=32,
        use_linear_projection=sd2,
    )
    vae = _vae(cfg, size, 0.18215)  # unet, vae, text encoder: the order the random draws have always had
    text_encoder = clip_text_encoder(cfg["text_width"], cfg["text_layers"], cfg["text_heads"],
                                     act="gelu" if sd2 else "quick_gelu")
    scheduler = ddim_scheduler()
    if sd2:
        scheduler = type(scheduler).from_config(scheduler.config, prediction_type="v_prediction")
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def _sdxl(cfg: dict, size: str):
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    from ..diffusion.sampler import ddim_scheduler
    from .tokenizer import clip_tokenizer

    pooled = cfg["text2_width"]
    unet = UNet2DConditionModel(
        sample_size=cfg["sample_size"], in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=cfg["unet_channels"], down_block_types=SDXL_DOWN, up_block_types=SDXL_UP,
        cross_attention_dim=cfg["text_width"] + cfg["text2_width"], attention_head_dim=cfg["heads"],
        transformer_layers_per_block=cfg["depth"], use_linear_projection=True, norm_num_groups=32,
        addition_embed_type="text_time", addition_time_embed_dim=cfg["time_dim"],
        projection_class_embeddings_input_dim=6 * cfg["time_dim"] + pooled,
    )
    text_encoder = clip_text_encoder(cfg["text_width"], cfg["text_layers"], cfg["text_heads"])
    text_encoder_2 = clip_text_encoder(pooled, cfg.get("text2_layers", cfg["text_layers"]),
                                       cfg.get("text2_heads", cfg["text_heads"]), act="gelu", projection=pooled)
    vae = _vae(cfg, size, 0.13025)
    vae.register_to_config(force_upcast=True)
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(pad_token="!"), unet=unet, scheduler=ddim_scheduler(), add_watermarker=False,
    )

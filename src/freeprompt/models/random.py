"""Randomly initialised pipelines with Stable Diffusion's real layout, for tests and benchmarks.

``"sd15"`` is the full SD1.5 architecture (860 M UNet parameters); ``"tiny"`` keeps SD1.x's block structure
(3 cross-attention down blocks + 1 plain, attention in the mid block, 1 plain + 3 cross-attention up blocks,
2 layers per block: 16 self + 16 cross attention layers) with narrow channels, so a forward is cheap.
"""

from __future__ import annotations

import torch

SD1_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
SD1_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")

SIZES = {
    "tiny": dict(unet_channels=(32, 64, 64, 64), text_width=32, text_layers=2, text_heads=4, vae_channels=(16, 16, 16, 16),
                 vae_groups=8, sample_size=8, heads=8),
    "sd15": dict(unet_channels=(320, 640, 1280, 1280), text_width=768, text_layers=12, text_heads=12,
                 vae_channels=(128, 256, 512, 512), vae_groups=32, sample_size=64, heads=8),
}


def clip_text_encoder(width: int, layers: int, heads: int):
    """A randomly initialised ``CLIPTextModel`` for the real CLIP BPE tokenizer: its 49,408 tokens, its start and
    end ids, 77 positions."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=width, intermediate_size=width * 4, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407,
    ))


def random_pipeline(size: str = "tiny", seed: int = 0, torch_dtype=torch.float32):
    """A StableDiffusionPipeline with random weights and the real CLIP tokenizer."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

    from ..diffusion.sampler import ddim_scheduler
    from .tokenizer import clip_tokenizer

    cfg = SIZES[size]
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=cfg["sample_size"], in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=cfg["unet_channels"], down_block_types=SD1_DOWN, up_block_types=SD1_UP,
        cross_attention_dim=cfg["text_width"], attention_head_dim=cfg["heads"], norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=cfg["vae_channels"],
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1 if size == "tiny" else 2, norm_num_groups=cfg["vae_groups"],
        sample_size=cfg["sample_size"] * 8, scaling_factor=0.18215,
    )
    text_encoder = clip_text_encoder(cfg["text_width"], cfg["text_layers"], cfg["text_heads"])
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet, scheduler=ddim_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe if torch_dtype == torch.float32 else pipe.to(dtype=torch_dtype)

"""Randomly initialised diffusion-transformer pipelines with the real layouts of SD3, FLUX and PixArt-Sigma, for tests
and benchmarks (no download: the weights are random, the tokenizers stand-ins).

- ``"tiny-sd3"``: MM-DiT joint blocks (text and image tokens in one attention), flow matching (shift 3), three text
  encoders: two CLIPs (pooled) and a T5, whose tokenizer is the CLIP BPE tokenizer standing in (no T5
  SentencePiece model can be downloaded; any tokenizer whose ids the T5 embedding covers serves a random T5).
- ``"tiny-flux"``: FLUX.1's double-stream and single-stream blocks, 2x2-packed latents, rotary positions, the
  guidance embedding of FLUX.1-dev, dynamic-shift flow matching; a CLIP (pooled) and a T5 (the CLIP tokenizer
  standing in).
- ``"tiny-pixart"``: PixArt-Sigma's DiT with separate self- and cross-attention (adaptive layer norm, a T5 text
  encoder, the CLIP tokenizer standing in), epsilon prediction with a learned variance, DPM-Solver++.

``reduced`` (benchmarks) gives each family's full width with ``depth`` blocks: what one block of the real model costs.
"""

from __future__ import annotations

import torch

from .random import clip_text_encoder

FAMILIES = ("tiny-sd3", "tiny-flux", "tiny-pixart")
T5_VOCAB = 49408  # covers every id of the CLIP tokenizer that stands in for T5's


def t5_encoder(width: int, layers: int = 2, heads: int = 4):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=T5_VOCAB, d_model=width, d_kv=width // heads, d_ff=width * 2, num_layers=layers,
                      num_heads=heads, pad_token_id=49407, eos_token_id=49407, decoder_start_token_id=0,
                      dropout_rate=0.0)
    return T5EncoderModel(config).eval()  # as from_pretrained gives it: no dropout


def _vae(latent_channels: int, scaling: float, shift: float | None):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                        block_out_channels=(16, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, norm_num_groups=8,
                        sample_size=64, scaling_factor=scaling, shift_factor=shift)
    return vae


def _tokenizer(length: int):
    from .tokenizer import clip_tokenizer

    return clip_tokenizer(max_length=length)


def tiny_sd3(width: int = 32, depth: int = 2, heads: int = 2):
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=16, num_layers=depth,
                                        attention_head_dim=width // heads, num_attention_heads=heads,
                                        joint_attention_dim=64, caption_projection_dim=width,
                                        pooled_projection_dim=64, out_channels=16, pos_embed_max_size=16)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(16, 1.5305, 0.0609), text_encoder=clip_text_encoder(32, 2, 4, act="gelu", projection=32),
        tokenizer=_tokenizer(77), text_encoder_2=clip_text_encoder(32, 2, 4, act="gelu", projection=32),
        tokenizer_2=_tokenizer(77), text_encoder_3=t5_encoder(64), tokenizer_3=_tokenizer(32))


def tiny_flux(width: int = 32, depth: int = 1, single: int = 2, heads: int = 2):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=depth, num_single_layers=single,
                                         attention_head_dim=width // heads, num_attention_heads=heads,
                                         joint_attention_dim=64, pooled_projection_dim=32, guidance_embeds=True,
                                         axes_dims_rope=(4, 6, 6))
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096, shift=3.0)
    return FluxPipeline(transformer=transformer, scheduler=scheduler, vae=_vae(16, 0.3611, 0.1159),
                        text_encoder=clip_text_encoder(32, 2, 4), tokenizer=_tokenizer(77),
                        text_encoder_2=t5_encoder(64), tokenizer_2=_tokenizer(32))


def tiny_pixart(width: int = 32, depth: int = 2, heads: int = 2):
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    transformer = PixArtTransformer2DModel(num_attention_heads=heads, attention_head_dim=width // heads, in_channels=4,
                                           out_channels=8, num_layers=depth, cross_attention_dim=width,
                                           sample_size=8, patch_size=2, caption_channels=64, norm_num_groups=8,
                                           interpolation_scale=1, use_additional_conditions=False)
    return PixArtSigmaPipeline(transformer=transformer, scheduler=DPMSolverMultistepScheduler(),
                               vae=_vae(4, 0.13025, None), text_encoder=t5_encoder(64), tokenizer=_tokenizer(32))


def reduced(family: str, depth: int = 2, single: int = 2, seed: int = 0):
    """A pipeline of ``family`` (``"sd3"``: SD3-medium, ``"flux"``: FLUX.1-dev) whose transformer has the real model's
    width, heads, patching and text length (SD3: 77 CLIP + 256 T5 tokens, FLUX: 512 T5 tokens) and ``depth`` joint
    blocks (FLUX: ``depth`` double- and ``single`` single-stream blocks) instead of 24 (19 and 38): what those blocks of
    the real model cost per step. Text encoders and VAE stay tiny (they run once per image, not per step)."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    torch.manual_seed(seed)
    if family == "sd3":
        pipe = tiny_sd3()
        pipe.transformer = SD3Transformer2DModel(sample_size=128, patch_size=2, in_channels=16, num_layers=depth,
                                                 attention_head_dim=64, num_attention_heads=24, joint_attention_dim=64,
                                                 caption_projection_dim=1536, pooled_projection_dim=64,
                                                 out_channels=16, pos_embed_max_size=192)
        pipe.tokenizer_3 = _tokenizer(256)
    elif family == "flux":
        pipe = tiny_flux()
        pipe.transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=depth,
                                                  num_single_layers=single, attention_head_dim=128,
                                                  num_attention_heads=24, joint_attention_dim=64,
                                                  pooled_projection_dim=32, guidance_embeds=True,
                                                  axes_dims_rope=(16, 56, 56))
        pipe.tokenizer_2 = _tokenizer(512)
    else:
        raise ValueError(f"unknown reduced family {family!r}; use sd3 or flux")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def random_transformer_pipeline(family: str = "tiny-sd3", seed: int = 0, torch_dtype=torch.float32):
    """A diffusion-transformer pipeline of ``family`` (``FAMILIES``) with random weights."""
    builders = {"tiny-sd3": tiny_sd3, "tiny-flux": tiny_flux, "tiny-pixart": tiny_pixart}
    if family not in builders:
        raise ValueError(f"unknown random transformer pipeline {family!r}; use one of {', '.join(builders)}")
    torch.manual_seed(seed)
    pipe = builders[family]()
    pipe.set_progress_bar_config(disable=True)
    return pipe if torch_dtype == torch.float32 else pipe.to(dtype=torch_dtype)


__all__ = ["FAMILIES", "random_transformer_pipeline", "reduced", "t5_encoder"]

"""Train the shapes fixture: a small text-to-image Stable Diffusion with SD1.x's pipeline layout.

Three stages, all seeded: (1) an AutoencoderKL on rendered images (64 px -> 16x16x4 latents), (2) the data
set encoded to latents once, (3) the UNet and a CLIP text encoder trained jointly on epsilon prediction with
SD's noise schedule, min-SNR loss weighting and 10 % caption dropout (for classifier-free guidance), with an EMA
of their weights.
The result is saved with ``save_pretrained`` in fp16, so it loads like any Stable Diffusion folder.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BadInput, first_line
from ..models.random import SD1_DOWN, SD1_UP, clip_text_encoder
from . import world
from .stages import Stage, StagePlan, check_stage, format_stages, parse_shape_weights, parse_stages

COMPILE_MODES = ("", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


@dataclass
class TrainConfig:
    seed: int = 0
    image_size: int = 64
    num_images: int = 24000
    # VAE
    vae_channels: tuple = (32, 64, 64)
    vae_steps: int = 700
    vae_batch: int = 24
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    # structure channel: latent channel 0 is pulled towards +-scale where objects are / are not (weight 0 = off).
    # Why: an object appears where the initial noise already resembles it in latent space; with colours as the
    # main latent difference, a colour swap moves the object whatever the attention does
    # (benchmarks/colour_noise_placement.py). A shared object component makes every colour's latent signature
    # alike, so the noise decides *where* by structure and the colour word decides *what colour*.
    vae_structure_weight: float = 0.1
    vae_structure_scale: float = 4.0
    # the term is off for this fraction of the VAE steps, then ramps up over a fifth of them. Why: switched on from
    # step 0 the decoder reads the whole mask from channel 0 while channels 1-3 are still noise, learns to ignore
    # them, and the colour is never encoded (posterior collapse: held-out PSNR 18.7 dB, every colour's latent the
    # same); after a plain warm-up every channel already carries the image
    vae_structure_start: float = 0.3
    # if > 0: the VAE trains on random crops of this side for the first vae_crop_until of its steps, then on whole
    # images (whose steps fit its group norms and mid-block attention to the size it encodes in use). Cuts the VAE
    # stage (v7: 32 px crops to 0.8, 5.8 min against ~14), but v7's crop-trained VAE kept the colours' latent
    # signatures less alike (34 of 45 pairs above cosine 0.5, v4 41), so it is off in the shipped recipe
    vae_crop: int = 0
    vae_crop_until: float = 0.8
    # text encoder
    text_width: int = 64
    text_layers: int = 3
    text_heads: int = 4
    # UNet
    unet_channels: tuple = (48, 64, 96, 96)
    unet_heads: int = 2  # diffusers' attention_head_dim is the head *count* for SD1.x: 2 -> head dims 24-48
    unet_steps: int = 3000
    unet_batch: int = 64
    unet_lr: float = 5e-4
    warmup: int = 100
    caption_dropout: float = 0.1
    # min-SNR weighting (Hang et al. 2023): caps the weight of nearly clean timesteps, so the few steps a CPU can
    # afford go to the noisy ones where layout and shape are decided. 0 = plain epsilon MSE.
    snr_gamma: float = 5.0
    # share of UNet rows whose caption names another colour than the image's, scored on latent channel 0 (the
    # structure channel) only: a colour edit asks the model to denoise a red object's latents under "blue", which
    # plain training never shows it; these rows teach it to keep the object's place there. 0 = off (v4's
    # from-scratch recipe; no random draws are added, so its runs stay as they were); v9 is v4 continued 400 steps
    # at 0.25 (FPE colour joint 70 -> 82 %), v11 is v9 continued at 0.5 (88 %, see the model card). This field is
    # the from-scratch stage's: at 0.5 from step 0 (v12) the model never learned its colour words (prompted colour
    # 48 %, shape 30 %), so the shipped recipe (v13) swaps in its refinement stages only (refine_stages)
    colour_swap_fraction: float = 0.0
    # "star=2,moon=2": draw UNet rows whose captioned object has these shapes that many times as often ("" = the
    # uniform draw of the shipped recipe, whose random draws stay as they were). Stars and moons are the shapes
    # whose colour edits keep their outline least often (their thin points cover few latent pixels)
    shape_weights: str = ""
    # UNet stages after the from-scratch one (whose settings are the fields above), in the same run; each restarts
    # the way continued training (--init-from) does: weights from their EMA, a fresh AdamW, its own warm-up and
    # cosine, a new EMA warm start (format and defaults: stages.parse_stages). The default is the shipped v13:
    # the v4 -> v9 -> v11 lineage as one run (v4's 3000 steps, then v9's continuation, then v11's; 78 min on a
    # 2-core 2.6 GHz Xeon). "" = the from-scratch stage only (v4's recipe; also what a continued run with
    # --init-from usually wants)
    refine_stages: str = ("steps=400 lr=1e-4 warmup=20 swap=0.25; "
                          "steps=400 lr=1e-4 warmup=20 swap=0.5 shapes=star=3,moon=3")
    ema_decay: float = 0.999
    threads: int = 2
    checkpoint_every: int = 200
    # where to train: "cpu" (the shipped recipe's machine) or "cuda"; random draws stay on the CPU generator, so the
    # data order and noise are the same on either
    device: str = "cpu"
    # "bf16": the UNet stage under autocast (cuda, or a CPU with AMX). On a 2-core 2 GHz Xeon with AMX it slowed the
    # UNet step (2.82 s against 2.31); a VAE step timed under it was faster (0.98 s against 1.64), but the VAE stage
    # trains in float32 either way: benchmarks/results/fixture_step_time_xeon_2ghz.json
    mixed_precision: str = "no"
    # torch.compile mode for the UNet and text-encoder forward ("" = off; "default", "reduce-overhead", ...): a GPU
    # step of these small models used ~2 % of an H100's bf16 throughput, the rest being launch and memory overhead
    compile: str = ""
    # layout of the UNet's weights and inputs while it trains ("contiguous", the shipped recipe's, or
    # "channels_last"); the saved weights are contiguous either way. benchmarks/fixture_step_time.py: channels_last
    # 1.17 s per step against 1.20 on a 2-core Xeon with AMX, no gain on the 2-core EPYC (1.56 s against 1.57)
    unet_memory_format: str = "contiguous"
    # if > 0: the whole run (rendering, VAE, UNet) is fitted into this many minutes by choosing unet_steps from the
    # measured speed of the first steps; the chosen count is written to the saved config, so rerunning with it and
    # time_budget_min 0 repeats the run
    time_budget_min: float = 0.0
    # sampling defaults written next to the model (what `--model shapes` uses unless told otherwise)
    default_guidance: float = 3.0
    default_steps: int = 50


def build_models(cfg: TrainConfig):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(cfg.seed)
    n = len(cfg.vae_channels)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=tuple(cfg.vae_channels),
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=1, norm_num_groups=16, sample_size=cfg.image_size,
    )
    text_encoder = clip_text_encoder(cfg.text_width, cfg.text_layers, cfg.text_heads)
    unet = UNet2DConditionModel(
        sample_size=cfg.image_size // 2 ** (n - 1), in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=tuple(cfg.unet_channels), down_block_types=SD1_DOWN, up_block_types=SD1_UP,
        cross_attention_dim=cfg.text_width, attention_head_dim=cfg.unet_heads, norm_num_groups=16,
    )
    return vae, text_encoder, unet


def _render_range(args) -> tuple[np.ndarray, list[str]]:
    first, count, size = args
    samples = [world.random_sample(first + i, size=size) for i in range(count)]
    return np.stack([s.image for s in samples]), [s.spec.caption for s in samples]


def render_dataset(cfg: TrainConfig, workers: int = 1) -> tuple[np.ndarray, list[str]]:
    first = cfg.seed * 10_000_000
    chunk = 2000
    jobs = [(first + i, min(chunk, cfg.num_images - i), cfg.image_size) for i in range(0, cfg.num_images, chunk)]
    if workers > 1:
        from multiprocessing import get_context

        with get_context("fork").Pool(workers) as pool:  # fork: workers need no re-import of torch
            parts = pool.map(_render_range, jobs)
    else:
        parts = [_render_range(job) for job in jobs]
    return np.concatenate([p[0] for p in parts]), [c for p in parts for c in p[1]]


def load_or_render(cfg: TrainConfig, data_file: Path | None, workers: int = 1) -> tuple[np.ndarray, list[str]]:
    """The rendered training set; ``data_file`` (.npz) caches it so several runs on one machine render it once."""
    if data_file and Path(data_file).exists():
        data = np.load(data_file)
        images, captions = data["images"], [str(c) for c in data["captions"]]
        if len(images) == cfg.num_images and images.shape[1] == cfg.image_size:
            return images, captions
    images, captions = render_dataset(cfg, workers)
    if data_file:
        tmp = Path(str(data_file) + ".tmp.npz")
        np.savez(tmp, images=images, captions=np.array(captions))
        os.replace(tmp, data_file)
    return images, captions


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))  # warm start so early weights fade quickly
        # one fused call instead of one kernel per tensor: on a GPU, per-tensor launches were a visible part of a step
        torch._foreach_lerp_(list(self.shadow.parameters()), [p.detach() for p in model.parameters()], 1 - decay)


def stage_plan(cfg: TrainConfig) -> StagePlan:
    """The UNet stages of a config: the from-scratch stage (the flat unet_* fields), then its refinement stages."""
    first = Stage(cfg.unet_steps, cfg.unet_lr, cfg.warmup, cfg.colour_swap_fraction, cfg.shape_weights)
    check_stage(first)
    return StagePlan([first, *parse_stages(cfg.refine_stages)])


def record_plan(cfg: TrainConfig, plan: StagePlan) -> None:
    """Write a fitted or cut plan back into the config, so the saved config repeats the run."""
    cfg.unet_steps, cfg.refine_stages = plan.stages[0].steps, format_stages(plan.stages[1:])


def restart_from_ema(model: torch.nn.Module, ema: EMA) -> None:
    """The model's weights set to their average (as loading a saved fixture, which holds the EMA, does)."""
    with torch.no_grad():
        for param, averaged in zip(model.parameters(), ema.shadow.parameters()):
            param.copy_(averaged)


def adamw(params: list, lr: float) -> torch.optim.Optimizer:
    """The UNet stage's optimizer. Fused: one kernel for all tensors, on the CPU too (torch >= 2.4); a 2-core Xeon
    took 10 ms per step for it against 43 ms for the per-tensor loop (~3 % of a step)."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.01, fused=True)
    except RuntimeError:  # older torch: fused on CUDA only
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.01)


class StepBudget:
    """Fits the UNet's step count into a run's time budget: times steps 5-25 after the start, sets the step count
    that fits (the learning-rate schedule follows it), and says when the budget is overrun by more than 4 %."""

    def __init__(self, minutes: float, started: float, device: torch.device, first_step: int):
        self.seconds, self.started, self.device = minutes * 60, started, device
        self.timed_from, self.timed_steps = first_step + 5, 20
        self.clock = None

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.time()

    def fit(self, step: int, total: int) -> int:
        if not self.seconds:
            return total
        if step == self.timed_from:
            self.clock = self._now()
        elif step == self.timed_from + self.timed_steps and self.clock is not None:
            now = self._now()
            per_step = (now - self.clock) / self.timed_steps
            total = max(step + 1, min(total, int(step + 0.9 * (self.seconds - (now - self.started)) / per_step)))
            print(f"{per_step * 1000:.0f} ms per step: {total} UNet steps in all for the time budget", flush=True)
        return total

    def overrun(self) -> bool:
        return bool(self.seconds) and time.time() - self.started > self.seconds * 1.04


def mixed_precision_autocast(device_type: str, mixed_precision: str) -> torch.autocast:
    """The autocast context of `TrainConfig.mixed_precision` ("no" gives a disabled one)."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16")


def lr_at(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def structure_masks(images: np.ndarray) -> np.ndarray:
    """Where objects are (bool N x H x W): pixels away from their scene's background. The scene is read from the
    top-left pixel, which objects never cover (they keep a margin from the border)."""
    size = images.shape[1]
    plain, park = (world.background(scene, size).astype(np.int16) for scene in ("plain", "park"))
    is_plain = (images[:, 0, 0] == plain[0, 0]).all(axis=-1)
    backgrounds = np.where(is_plain[:, None, None, None], plain, park)
    return np.abs(images.astype(np.int16) - backgrounds).max(axis=-1) > 24


def latent_factor(cfg: TrainConfig) -> int:
    """Pixels per latent pixel along a side: the VAE halves the resolution once per block after the first."""
    return 2 ** (len(cfg.vae_channels) - 1)


def random_crops(images: np.ndarray, masks: np.ndarray | None, side: int, factor: int, gen: torch.Generator):
    """One random side x side window per image (and its mask, if given), at offsets on the latent grid so the
    pooled structure target stays aligned with the latent pixels."""
    size = images.shape[1]
    offsets = (torch.randint(0, (size - side) // factor + 1, (len(images), 2), generator=gen) * factor).tolist()

    def cut(arrays):
        return np.stack([a[y:y + side, x:x + side] for a, (x, y) in zip(arrays, offsets)])

    return cut(images), None if masks is None else cut(masks)


def train_vae(vae, images: np.ndarray, cfg: TrainConfig, log) -> float:
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    factor = latent_factor(cfg)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    device = next(vae.parameters()).device
    vae.train()
    for step in range(cfg.vae_steps):
        for group in opt.param_groups:
            group["lr"] = cfg.vae_lr * lr_at(step, cfg.vae_steps, 50)
        idx = torch.randint(0, len(images), (cfg.vae_batch,), generator=gen)
        batch = images[idx.numpy()]
        ramp = min(1.0, max(0.0, (step / cfg.vae_steps - cfg.vae_structure_start) / 0.2))
        structure = cfg.vae_structure_weight * ramp
        # from whole images, before any crop: the scene is read from their corner
        masks = structure_masks(batch) if structure else None
        if 0 < cfg.vae_crop < cfg.image_size and step < cfg.vae_crop_until * cfg.vae_steps:
            batch, masks = random_crops(batch, masks, cfg.vae_crop, factor, gen)
        x = to_tensor(batch).to(device)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen).to(device)
        recon = vae.decode(z).sample
        rec = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        kl = posterior.kl().mean() / z[0].numel()
        loss = rec + cfg.vae_kl_weight * kl * z[0].numel()
        if structure:
            target = torch.from_numpy(masks).float()[:, None].to(device)
            target = cfg.vae_structure_scale * (2 * F.avg_pool2d(target, factor) - 1)
            loss = loss + structure * F.mse_loss(posterior.mean[:, :1], target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == cfg.vae_steps - 1:
            psnr = 10 * math.log10(4.0 / max(F.mse_loss(recon.clamp(-1, 1), x).item(), 1e-10))
            log("vae", step, loss.item(), psnr)
    vae.eval()
    return psnr


@torch.no_grad()
def encode_latents(vae, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    device = next(vae.parameters()).device
    out = [vae.encode(to_tensor(images[i : i + batch]).to(device)).latent_dist.mean
           for i in range(0, len(images), batch)]
    return torch.cat(out)


@torch.no_grad()
def vae_psnr(vae, images: np.ndarray) -> float:
    x = to_tensor(images).to(next(vae.parameters()).device)
    recon = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    return 10 * math.log10(4.0 / F.mse_loss(recon, x).item())


def held_out_psnr(vae, cfg: TrainConfig) -> float:
    """VAE PSNR on 256 renders whose seeds (from 10**9) no training set reaches, so runs compare on one set."""
    held_out = np.stack([world.random_sample(10**9 + i, size=cfg.image_size).image for i in range(256)])
    return vae_psnr(vae, held_out)


def row_weights(captions: list[str], weights: dict[str, float]) -> torch.Tensor:
    """Sampling weight of each training row: that of the first world shape its caption names (the captioned
    object; a pair's second shape comes later), 1 otherwise."""
    pattern = re.compile(r"\b(" + "|".join(world.SHAPES) + r")\b")
    out = []
    for text in captions:
        found = pattern.search(text)
        out.append(weights.get(found.group(1), 1.0) if found else 1.0)
    return torch.tensor(out, dtype=torch.float64)


def draw_rows(n: int, batch: int, gen: torch.Generator, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Row indices of one batch: uniform (the shipped recipe's draw) or in proportion to ``weights``."""
    if weights is None:
        return torch.randint(0, n, (batch,), generator=gen)
    return torch.multinomial(weights, batch, replacement=True, generator=gen)


def colour_token_ids(tokenizer) -> torch.Tensor:
    """The CLIP token of each world colour, in world.COLORS order (each colour is one token)."""
    ids = [tokenizer(colour).input_ids[1:-1] for colour in world.COLORS]
    if any(len(i) != 1 for i in ids):
        raise RuntimeError("every world colour must be a single CLIP token")
    return torch.tensor([i[0] for i in ids])


def colour_word_positions(ids: torch.Tensor, colour_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each caption's token row: where its (first) colour word is and which colour it names; -1, -1 when the
    caption names none (an empty caption)."""
    match = ids.unsqueeze(-1) == colour_ids  # rows, positions, colours
    hit = match.any(-1)
    pos = hit.int().argmax(1)
    colour = match[torch.arange(len(ids)), pos].int().argmax(-1)
    none = ~hit.any(1)
    return pos.masked_fill(none, -1), colour.masked_fill(none, -1)


def swap_colour_words(tokens: torch.Tensor, pos: torch.Tensor, colour: torch.Tensor, colour_ids: torch.Tensor,
                      rows: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Replace the colour word of the chosen ``rows`` (where one exists) by another colour, uniformly; returns the
    mask of rows that were changed. Draws one number per row whether chosen or not, so the draws do not depend
    on the data."""
    shift = torch.randint(1, len(colour_ids), (len(tokens),), generator=gen).to(tokens.device)
    rows = rows & (pos >= 0)
    new_colour = (colour + shift) % len(colour_ids)
    tokens[rows, pos[rows]] = colour_ids[new_colour[rows]]
    return rows


def epsilon_loss(pred: torch.Tensor, noise: torch.Tensor, weight: torch.Tensor | None = None,
                 structure_only: torch.Tensor | None = None) -> torch.Tensor:
    """Epsilon MSE averaged per row, times the row's timestep weight; rows in ``structure_only`` count latent
    channel 0 only (their caption does not describe the colour channels)."""
    if structure_only is None:
        per_row = (pred - noise).pow(2).mean(dim=(1, 2, 3))
    else:
        err = (pred - noise).pow(2).mean(dim=(2, 3))
        per_row = torch.where(structure_only, err[:, 0], err.mean(1))
    return per_row.mean() if weight is None else (weight * per_row).mean()


def load_weights(folder: Path, vae, text_encoder, unet) -> dict:
    """Start from a trained fixture folder of the same architecture (continued training); returns its
    freeprompt_fixture.json, so the lineage can be recorded."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(folder)
    for name, model, cls in (("vae", vae, AutoencoderKL), ("text_encoder", text_encoder, CLIPTextModel),
                             ("unet", unet, UNet2DConditionModel)):
        try:
            state = cls.from_pretrained(folder, subfolder=name).state_dict()
            model.load_state_dict(state)
        except RuntimeError:
            raise BadInput(f"cannot start from {folder / name}: its weights do not fit the configured architecture",
                           "pass the settings it was trained with (see its freeprompt_fixture.json)") from None
        except (OSError, ValueError) as exc:
            raise BadInput(f"cannot start from {folder / name}: {first_line(exc)}",
                           "pass a trained fixture model folder") from None
    info = folder / "freeprompt_fixture.json"
    return json.loads(info.read_text()) if info.exists() else {}


def save_fixture(out_dir: Path, vae, text_encoder, unet, tokenizer, info: dict, log_path: Path | None) -> None:
    """Write a Stable Diffusion folder (fp16 safetensors, the official DDIM scheduler) with freeprompt_fixture.json,
    atomically: it is staged beside ``out_dir`` and moved into place."""
    from diffusers import StableDiffusionPipeline

    from ..editing.sampler import ddim_scheduler

    pipe = StableDiffusionPipeline(
        vae=copy.deepcopy(vae).eval().cpu(), text_encoder=copy.deepcopy(text_encoder).cpu(), tokenizer=tokenizer,
        unet=copy.deepcopy(unet).cpu(), scheduler=ddim_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pipe.to(torch.float16).save_pretrained(staging, safe_serialization=True)
    (staging / "freeprompt_fixture.json").write_text(json.dumps(info, indent=2))
    if log_path is not None and Path(log_path).exists():
        shutil.copy(log_path, staging / "train_log.csv")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(staging, out_dir)


def export_checkpoint(work: Path, out_dir: Path, overwrite: bool = False) -> Path:
    """The EMA weights of a training run's latest checkpoint as a model folder, so a run can be scored while it
    goes on (the checkpoint carries the run's config and latent scale)."""
    from ..models.tokenizer import clip_tokenizer

    work, out_dir = Path(work), Path(out_dir)
    ckpt = work / "checkpoint.pt"
    if not ckpt.exists() or not (work / "vae.pt").exists():
        raise BadInput(f"no checkpoint in {work}", "pass the work folder of a running or stopped training run")
    state = torch.load(ckpt, weights_only=False, map_location="cpu")
    if "config" not in state:
        raise BadInput(f"{ckpt} was written by an older version and holds no config", "export it after its next save")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise BadInput(f"model folder {out_dir} already exists", "pass --overwrite to replace it or choose another --out")
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items()})
    vae, text_encoder, unet = build_models(cfg)
    vae.load_state_dict(torch.load(work / "vae.pt", map_location="cpu"))
    unet.load_state_dict(state["ema_unet"]); text_encoder.load_state_dict(state["ema_text"])
    vae.register_to_config(scaling_factor=state["latent_scaling_factor"])
    info = {"config": asdict(cfg), "checkpoint_step": state["step"], "vae_psnr_db": round(state["vae_psnr_db"], 2),
            "latent_scaling_factor": state["latent_scaling_factor"], "torch": torch.__version__,
            "defaults": {"guidance": cfg.default_guidance, "steps": cfg.default_steps, "height": cfg.image_size,
                         "width": cfg.image_size}}
    save_fixture(out_dir, vae, text_encoder, unet, clip_tokenizer(), info, work / "train_log.csv")
    return out_dir


def train(out_dir: Path, cfg: TrainConfig, overwrite: bool = False, work_dir: Path | None = None,
          data_file: Path | None = None, workers: int = 1, init_from: Path | None = None) -> Path:
    """Train the fixture and save it as a Stable Diffusion folder in ``out_dir``. Resumes from the checkpoint
    in ``work_dir`` (default: ``out_dir`` + ``.work``) when one exists. ``data_file`` caches the rendered set,
    ``workers`` renders it in parallel, ``init_from`` continues from a trained fixture's weights (its VAE is
    kept as it is)."""
    from diffusers import DDPMScheduler

    from ..editing.sampler import OFFICIAL_DDIM
    from ..models.tokenizer import clip_tokenizer

    out_dir = Path(out_dir)
    if cfg.compile not in COMPILE_MODES:
        raise BadInput(f"unknown compile mode {cfg.compile!r}", "use one of: " + ", ".join(m for m in COMPILE_MODES if m))
    if cfg.unet_memory_format not in MEMORY_FORMATS:
        raise BadInput(f"unknown UNet memory format {cfg.unet_memory_format!r}", "use one of: " + ", ".join(MEMORY_FORMATS))
    if cfg.vae_crop % latent_factor(cfg) or cfg.vae_crop < 0:
        raise BadInput(f"VAE crop {cfg.vae_crop} is not on the latent grid",
                       f"pass a multiple of {latent_factor(cfg)}, or 0 for whole images")
    plan = stage_plan(cfg)
    swaps = any(stage.swap for stage in plan.stages)
    if swaps and not init_from and not cfg.vae_structure_weight:
        raise BadInput("colour-swapped captions train the structure channel, which this VAE would not have",
                       "keep --vae-structure-weight above 0 or pass no colour swaps")
    if cfg.colour_swap_fraction and not init_from:
        print("warning: colour swaps from the first step kept a from-scratch model from learning its colour words "
              "(v12, see the model card); add them in a refinement stage (--refine-stages) or with --init-from",
              file=sys.stderr, flush=True)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise BadInput(f"model folder {out_dir} already exists", "pass --overwrite to replace it or choose another --out")
    work = Path(work_dir) if work_dir else out_dir.with_name(out_dir.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    started = time.time()
    log_file = open(work / "train_log.csv", "a", newline="")
    writer = csv.writer(log_file)

    def log(stage, step, loss, extra=None):
        elapsed = time.time() - started
        writer.writerow([stage, step, f"{loss:.5f}", "" if extra is None else f"{extra:.3f}", f"{elapsed:.0f}"])
        log_file.flush()
        print(f"[{elapsed / 60:5.1f} min] {stage} step {step} loss {loss:.4f}"
              + ("" if extra is None else f" {extra:.2f}"), flush=True)

    device = torch.device(cfg.device)
    vae, text_encoder, unet = build_models(cfg)
    parent = load_weights(init_from, vae, text_encoder, unet) if init_from else None
    vae, text_encoder, unet = vae.to(device), text_encoder.to(device), unet.to(device)
    tokenizer = clip_tokenizer()
    t0 = time.time()
    images, captions = load_or_render(cfg, data_file, workers)
    print(f"rendered {len(images)} images in {time.time() - t0:.0f} s", flush=True)

    vae_path = work / "vae.pt"
    if vae_path.exists():
        vae.load_state_dict(torch.load(vae_path, map_location=device))
    else:
        if not init_from:  # continued training keeps the parent's VAE
            train_vae(vae, images, cfg, log)
        torch.save(vae.state_dict(), vae_path)  # the parent's too: resuming and exporting read the VAE from here
    vae.eval()
    psnr = held_out_psnr(vae, cfg)
    latents = encode_latents(vae, images)
    ckpt = work / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=False, map_location=device) if ckpt.exists() else None
    # the UNet keeps the latent scale it was trained on: a resumed run's, or a continued fixture's
    if state is not None and "latent_scaling_factor" in state:
        scale = float(state["latent_scaling_factor"])
    else:
        scale = float(parent["latent_scaling_factor"]) if parent else float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scale)
    latents = latents * scale
    print(f"VAE held-out PSNR {psnr:.2f} dB; latent scaling factor {scale:.4f}", flush=True)

    ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    empty = tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids[0]
    ids, empty = ids.to(device), empty.to(device)
    if swaps:
        colour_ids = colour_token_ids(tokenizer).to(device)
        colour_pos, colour_of = colour_word_positions(ids, colour_ids)
    noise_sched = DDPMScheduler(num_train_timesteps=1000, beta_start=OFFICIAL_DDIM["beta_start"],
                                beta_end=OFFICIAL_DDIM["beta_end"], beta_schedule="scaled_linear")
    alphas = noise_sched.alphas_cumprod.to(device)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = adamw(params, cfg.unet_lr)
    autocast = mixed_precision_autocast(device.type, cfg.mixed_precision)
    ema_unet, ema_text = EMA(unet, cfg.ema_decay), EMA(text_encoder, cfg.ema_decay)
    # after the EMA copy, so the averaged weights that are saved stay contiguous (safetensors refuses others)
    memory_format = MEMORY_FORMATS[cfg.unet_memory_format]
    unet.to(memory_format=memory_format)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    start_step = 0
    if state is not None:
        unet.load_state_dict(state["unet"]); text_encoder.load_state_dict(state["text"])
        ema_unet.shadow.load_state_dict(state["ema_unet"]); ema_text.shadow.load_state_dict(state["ema_text"])
        opt.load_state_dict(state["opt"]); gen.set_state(state["gen"]); start_step = state["step"]
        if cfg.time_budget_min:  # the step counts fitted by the first attempt fix the learning-rate schedules
            cfg.unet_steps, cfg.time_budget_min = state.get("unet_steps", cfg.unet_steps), 0.0
            cfg.refine_stages = state.get("config", {}).get("refine_stages", cfg.refine_stages)
            plan = stage_plan(cfg)
        print(f"resuming at step {start_step}", flush=True)
    unet.train(); text_encoder.train()
    # compiled wrappers share the modules' parameters; the plain modules stay the ones saved, averaged and resumed
    unet_forward, text_forward = unet, text_encoder
    if cfg.compile:
        unet_forward, text_forward = torch.compile(unet, mode=cfg.compile), torch.compile(text_encoder, mode=cfg.compile)
    budget = StepBudget(cfg.time_budget_min, started, device, start_step)
    draw_weights = [row_weights(captions, parse_shape_weights(s.shapes)) if s.shapes else None for s in plan.stages]
    step = start_step
    while step < plan.total:
        fitted = budget.fit(step, plan.total)
        if fitted != plan.total:
            plan = plan.fitted(fitted)
            record_plan(cfg, plan)
        if budget.overrun():
            print(f"time budget spent: stopping at step {step} of {plan.total}", flush=True)
            plan = plan.truncated(step)
            record_plan(cfg, plan)
            break
        k = plan.index(step)
        stage, stage_step = plan.stages[k], step - plan.starts[k]
        if stage_step == 0 and k > 0:  # what continued training from the previous stage's saved model does
            restart_from_ema(unet, ema_unet); restart_from_ema(text_encoder, ema_text)
            opt = adamw(params, stage.lr)
            print(f"stage {k + 1} of {len(plan.stages)} from step {step}: {format_stages([stage])}", flush=True)
        for group in opt.param_groups:
            group["lr"] = stage.lr * lr_at(stage_step, stage.steps, stage.warmup)
        idx = draw_rows(len(latents), cfg.unet_batch, gen, draw_weights[k]).to(device)
        x0 = latents[idx]
        tokens = ids[idx].clone()
        drop = (torch.rand(cfg.unet_batch, generator=gen) < cfg.caption_dropout).to(device)
        tokens[drop] = empty
        swapped = None
        if stage.swap:
            chosen = (torch.rand(cfg.unet_batch, generator=gen) < stage.swap).to(device) & ~drop
            swapped = swap_colour_words(tokens, colour_pos[idx], colour_of[idx], colour_ids, chosen, gen)
        t = torch.randint(0, 1000, (cfg.unet_batch,), generator=gen).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = (a.sqrt() * x0 + (1 - a).sqrt() * noise).contiguous(memory_format=memory_format)
        with autocast:
            context = text_forward(tokens)[0]
            pred = unet_forward(xt, t, encoder_hidden_states=context).sample.float()
        weight = None
        if cfg.snr_gamma > 0:
            snr = alphas[t] / (1 - alphas[t])
            weight = snr.clamp(max=cfg.snr_gamma) / snr
        loss = epsilon_loss(pred, noise, weight, swapped)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema_unet.update(unet, stage_step); ema_text.update(text_encoder, stage_step)
        if step % 25 == 0 or step == plan.total - 1:
            log("unet", step, loss.item())
        if (step + 1) % cfg.checkpoint_every == 0 or step == plan.total - 1:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"unet": unet.state_dict(), "text": text_encoder.state_dict(),
                        "ema_unet": ema_unet.shadow.state_dict(), "ema_text": ema_text.shadow.state_dict(),
                        "opt": opt.state_dict(), "gen": gen.get_state(), "step": step + 1,
                        "unet_steps": cfg.unet_steps, "config": asdict(cfg), "latent_scaling_factor": scale,
                        "vae_psnr_db": psnr}, tmp)
            os.replace(tmp, ckpt)
        step += 1
    log_file.close()
    minutes = (time.time() - started) / 60

    info = {"config": asdict(cfg), "stages": [asdict(stage) for stage in plan.stages],
            "train_minutes": round(minutes, 1), "vae_psnr_db": round(psnr, 2),
            "latent_scaling_factor": scale, "threads": cfg.threads, "torch": torch.__version__,
            "hardware": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {cfg.threads} threads",
            "parameters": {name: sum(p.numel() for p in m.parameters())
                           for name, m in (("unet", unet), ("text_encoder", text_encoder), ("vae", vae))},
            "defaults": {"guidance": cfg.default_guidance, "steps": cfg.default_steps, "height": cfg.image_size,
                         "width": cfg.image_size}}
    if parent is not None:
        info["continued_from"] = {"folder": str(init_from), **parent}
    save_fixture(out_dir, vae, ema_text.shadow, ema_unet.shadow, tokenizer, info, work / "train_log.csv")
    print(f"saved {out_dir} after {minutes:.1f} min", flush=True)
    return out_dir

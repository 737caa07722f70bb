"""Train the shapes-mmdit fixture: a small MM-DiT (Stable Diffusion 3's pipeline layout, flow matching) on the
shapes world, so the paper's questions can be asked of joint attention with ground truth.

What it reuses from the U-Net fixture (src/freeprompt/fixtures/shapes): the rendered training set (the same seeds),
the VAE (frozen; its structure channel included), the CLIP tokenizer, and its trained text encoder as the start of
the first of SD3's two CLIP encoders. What it adds: SD3's second CLIP encoder (narrow, from scratch) and an
``SD3Transformer2DModel`` trained with rectified flow (x_t = (1 - s) x0 + s noise, the velocity noise - x0 as the
target, s drawn logit-normally as SD3 trains), 10 % empty captions for classifier-free guidance, an EMA of every
trained part, and, in the last part of the run, captions whose colour word disagrees with the image scored on the
VAE's structure channel only (what taught the U-Net fixture to keep an object in place through a colour edit).
SD3's T5 carries no text here: its slot holds a T5 with no layers whose output is zero, the zeros SD3's pipeline
puts in that slot when run without a T5 (as text_encoder_3=None); a real (if empty) T5 lets plain diffusers load the
folder with no extra arguments. Its tokenizer's length, 24, is the T5 length the model was trained with: pass
``max_sequence_length=24`` to the plain pipeline (freeprompt reads it from the tokenizer).

    OMP_NUM_THREADS=2 python -m lab.mmdit_fixture --out DIR --threads 2
    python -m lab.mmdit_fixture --out DIR --steps 200 --num-images 2000   # a smoke run
    python -m lab.mmdit_fixture --out DIR2 --init-from DIR --steps 1000 --lr 2e-4 --warmup 20   # continue DIR
    python -m lab.mmdit_fixture --out DIR2 --init-from DIR --shape-weights star=3   # ... drawing stars 3x as often

A run resumes from its checkpoint (DIR.work/checkpoint.pt) when started again with the same settings. The folder
loads with plain diffusers (``StableDiffusion3Pipeline.from_pretrained(DIR)``) and with ``--model DIR``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from freeprompt.models.loading import fixture_path
from freeprompt.models.random import clip_text_encoder
from freeprompt.models.tokenizer import bpe_tokenizer, clip_tokenizer
from lab.fixture.training import (
    EMA,
    TrainConfig,
    adamw,
    colour_token_ids,
    colour_word_positions,
    draw_rows,
    encode_latents,
    epsilon_loss,
    load_or_render,
    lr_at,
    shape_draw_weights,
    swap_colour_words,
    write_model_folder,
)


@dataclass
class MMDiTConfig:
    """Every setting of a run; the defaults are the shipped fixture's recipe."""

    seed: int = 0  # initial weights, draws; the training set is the U-Net fixture's (render seeds seed * 10**7 + i)
    num_images: int = 24000
    width: int = 128  # the transformer's hidden size (heads of head_dim channels)
    head_dim: int = 32
    layers: int = 8  # joint blocks; the last one is SD3's context_pre_only block
    text2_width: int = 32  # SD3's second CLIP encoder (the first is the U-Net fixture's, width 64)
    text2_layers: int = 2
    max_length: int = 24  # tokens per CLIP encoder (the longest world caption has 12 with start and end)
    steps: int = 3300
    batch: int = 64
    lr: float = 4e-4
    warmup: int = 100
    caption_dropout: float = 0.1
    swap: float = 0.25  # share of rows whose colour word is swapped (scored on the structure channel only) ...
    swap_from: float = 0.8  # ... from this fraction of the steps on
    shift: float = 1.0  # the flow-matching shift of training and of the shipped scheduler
    ema_decay: float = 0.999
    threads: int = 2
    checkpoint_every: int = 200
    default_guidance: float = 4.0
    default_steps: int = 28
    init_from: str = ""  # a trained shapes-mmdit folder to continue from (its EMA weights; a fresh optimizer)
    shape_weights: str = ""  # e.g. "star=3,moon=1.5": draw rows naming these shapes that much more often


@dataclass
class Models:
    transformer: torch.nn.Module
    text_encoder: torch.nn.Module
    text_encoder_2: torch.nn.Module

    def parts(self) -> dict:
        return {"transformer": self.transformer, "text_encoder": self.text_encoder,
                "text_encoder_2": self.text_encoder_2}


def build_models(cfg: MMDiTConfig) -> Models:
    """The first CLIP encoder starts from the U-Net fixture's trained one (a fresh projection added); the second
    and the transformer start random."""
    from diffusers import SD3Transformer2DModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(cfg.seed)
    trained = CLIPTextModel.from_pretrained(fixture_path("shapes") / "text_encoder").float()
    config = copy.deepcopy(trained.config)
    config.projection_dim = config.hidden_size
    first = CLIPTextModelWithProjection(config)
    first.text_model.load_state_dict(trained.state_dict())  # transformers 5: CLIPTextModel is the text model itself
    second = clip_text_encoder(cfg.text2_width, cfg.text2_layers, 4, act="gelu", projection=cfg.text2_width)
    text_dim = config.hidden_size + cfg.text2_width
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=cfg.layers,
        attention_head_dim=cfg.head_dim, num_attention_heads=cfg.width // cfg.head_dim, joint_attention_dim=text_dim,
        caption_projection_dim=cfg.width, pooled_projection_dim=text_dim, pos_embed_max_size=16)
    models = Models(transformer, first.train(), second.train())
    if cfg.init_from:
        load_folder(models, Path(cfg.init_from))
    return models


def load_folder(models: Models, folder: Path) -> None:
    """Continue from a trained folder of the same architecture (its weights into every trained part)."""
    from diffusers import SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection

    for name, model in models.parts().items():
        cls = SD3Transformer2DModel if name == "transformer" else CLIPTextModelWithProjection
        model.load_state_dict(cls.from_pretrained(folder / name).float().state_dict())


def shapes_vae():
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(fixture_path("shapes") / "vae").float().eval().requires_grad_(False)
    vae.register_to_config(shift_factor=0.0)  # SD3's pipeline shifts latents; this VAE needs none
    return vae


def text_conditioning(models: Models, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What StableDiffusion3Pipeline.encode_prompt makes of token ids with no T5: each CLIP's penultimate hidden
    states side by side, then as many zero rows (the T5 slot), and the two pooled projections side by side."""
    hidden, pooled = [], []
    for encoder in (models.text_encoder, models.text_encoder_2):
        out = encoder(ids, output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        pooled.append(out[0])
    clip = torch.cat(hidden, dim=-1)
    return torch.cat([clip, torch.zeros_like(clip)], dim=1), torch.cat(pooled, dim=-1)


def flow_batch(latents: torch.Tensor, cfg: MMDiTConfig, gen: torch.Generator):
    """Noised latents, their timesteps (0-1000, as the scheduler gives them) and the velocity target."""
    sigma = torch.sigmoid(torch.randn(len(latents), generator=gen))
    sigma = cfg.shift * sigma / (1 + (cfg.shift - 1) * sigma)
    noise = torch.randn(latents.shape, generator=gen)
    s = sigma.view(-1, 1, 1, 1)
    return (1 - s) * latents + s * noise, sigma * 1000, noise - latents


@dataclass
class Data:
    latents: torch.Tensor
    ids: torch.Tensor
    empty: torch.Tensor
    colour_ids: torch.Tensor
    colour_pos: torch.Tensor
    colour: torch.Tensor
    weights: torch.Tensor | None = None  # each row's draw weight (--shape-weights); None: uniform, as v1-v6


def prepare_data(cfg: MMDiTConfig, data_file: Path | None, log) -> Data:
    images, captions = load_or_render(TrainConfig(seed=cfg.seed, num_images=cfg.num_images), data_file)
    vae = shapes_vae()
    with torch.no_grad():
        latents = encode_latents(vae, images) * vae.config.scaling_factor
    log(f"encoded {len(latents)} renders to latents {tuple(latents.shape[1:])}")
    tokenizer = clip_tokenizer(cfg.max_length)
    ids = tokenizer(captions, padding="max_length", max_length=cfg.max_length, truncation=True,
                    return_tensors="pt").input_ids
    empty = tokenizer([""], padding="max_length", max_length=cfg.max_length, return_tensors="pt").input_ids[0]
    colour_ids = colour_token_ids(tokenizer)
    pos, colour = colour_word_positions(ids, colour_ids)
    weights = shape_draw_weights(captions, cfg.shape_weights, largest=True)
    # float32, as v7's run drew them (the shared helper gives float64)
    return Data(latents, ids, empty, colour_ids, pos, colour, None if weights is None else weights.float())


def batch_tokens(data: Data, rows: torch.Tensor, step: int, cfg: MMDiTConfig, gen: torch.Generator):
    """The rows' token ids with caption dropout and (late in the run) colour swaps; and which rows were swapped."""
    ids = data.ids[rows].clone()
    swap_on = step >= cfg.swap_from * cfg.steps
    chosen = torch.rand(len(rows), generator=gen) < (cfg.swap if swap_on else 0.0)
    swapped = swap_colour_words(ids, data.colour_pos[rows], data.colour[rows], data.colour_ids, chosen, gen)
    dropped = torch.rand(len(rows), generator=gen) < cfg.caption_dropout
    ids[dropped] = data.empty
    return ids, swapped & ~dropped


class Run:
    def __init__(self, cfg: MMDiTConfig, models: Models):
        self.cfg, self.models = cfg, models
        self.params = [p for m in models.parts().values() for p in m.parameters()]
        self.opt = adamw(self.params, cfg.lr)
        self.ema = {name: EMA(m, cfg.ema_decay) for name, m in models.parts().items()}
        self.gen = torch.Generator().manual_seed(cfg.seed + 7)
        self.step = 0

    def state(self) -> dict:
        return {"step": self.step, "opt": self.opt.state_dict(), "gen": self.gen.get_state(),
                "models": {n: m.state_dict() for n, m in self.models.parts().items()},
                "ema": {n: e.shadow.state_dict() for n, e in self.ema.items()}}

    def load(self, state: dict) -> None:
        self.step = state["step"]
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        for name, model in self.models.parts().items():
            model.load_state_dict(state["models"][name])
            self.ema[name].shadow.load_state_dict(state["ema"][name])

    def train_step(self, data: Data) -> float:
        cfg = self.cfg
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * lr_at(self.step, cfg.steps, cfg.warmup)
        rows = draw_rows(len(data.latents), cfg.batch, self.gen, data.weights)
        ids, structure_only = batch_tokens(data, rows, self.step, cfg, self.gen)
        noisy, timesteps, target = flow_batch(data.latents[rows], cfg, self.gen)
        text, pooled = text_conditioning(self.models, ids)
        pred = self.models.transformer(noisy, encoder_hidden_states=text, pooled_projections=pooled,
                                       timestep=timesteps).sample
        loss = epsilon_loss(pred, target, structure_only=structure_only)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        for name, model in self.models.parts().items():
            self.ema[name].update(model, self.step)
        self.step += 1
        return loss.item()


def save_checkpoint(path: Path, run: Run, cfg: MMDiTConfig, minutes: float) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"config": asdict(cfg), "minutes": minutes, **run.state()}, tmp)
    os.replace(tmp, path)


def byte_characters() -> list[str]:
    """The 256 characters byte-level BPE (CLIP's) writes the bytes as: printable ones as themselves, the rest
    moved past 255."""
    printable = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    out, moved = [], 0
    for byte in range(256):
        out.append(chr(byte) if byte in printable else chr(256 + moved))
        moved += byte not in printable
    return out


def character_tokenizer(max_length: int):
    """A CLIP-style tokenizer with no merges: one token per byte (514 ids with the start and end tokens). It
    feeds the empty T5, whose embedding table it keeps small."""
    chars = byte_characters()
    vocab = {c: i for i, c in enumerate(chars)} | {c + "</w>": len(chars) + i for i, c in enumerate(chars)}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    return bpe_tokenizer(vocab, [], max_length)


def empty_t5(width: int, vocab: int):
    """SD3's T5 slot, filled with what the SD3 pipeline uses without a T5: zeros. A T5 encoder with no layers
    and a zero final norm gives exactly that, so the folder loads in plain diffusers with no extra arguments."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=vocab, d_model=width, d_kv=32, d_ff=width, num_layers=0, num_heads=1,
                      pad_token_id=vocab - 1, eos_token_id=vocab - 1, decoder_start_token_id=0)
    model = T5EncoderModel(config).eval()
    torch.nn.init.zeros_(model.encoder.final_layer_norm.weight)
    return model


def save_fixture(out: Path, run: Run, info: dict) -> None:
    """An SD3 folder (fp16 safetensors, the EMA weights, no T5) with freeprompt_fixture.json, moved into place
    whole."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    ema = {name: copy.deepcopy(e.shadow).eval() for name, e in run.ema.items()}
    tokenizer, t5_tokenizer = clip_tokenizer(run.cfg.max_length), character_tokenizer(run.cfg.max_length)
    pipe = StableDiffusion3Pipeline(
        transformer=ema["transformer"], scheduler=FlowMatchEulerDiscreteScheduler(shift=run.cfg.shift),
        vae=shapes_vae(), text_encoder=ema["text_encoder"], tokenizer=tokenizer,
        text_encoder_2=ema["text_encoder_2"], tokenizer_2=copy.deepcopy(tokenizer),
        text_encoder_3=empty_t5(run.models.transformer.config.joint_attention_dim, len(t5_tokenizer)),
        tokenizer_3=t5_tokenizer)
    write_model_folder(pipe, out, info, ("text_encoder", "text_encoder_2", "text_encoder_3"))


def fixture_info(cfg: MMDiTConfig, run: Run, minutes: float) -> dict:
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in run.models.parts().items()}
    return {"fixture": "shapes-mmdit", "config": asdict(cfg), "train_minutes": round(minutes, 1),
            "threads": cfg.threads, "torch": torch.__version__, "parameters": params,
            "defaults": {"guidance": cfg.default_guidance, "steps": cfg.default_steps, "height": 64, "width": 64}}


def train(out: Path, cfg: MMDiTConfig, data_file: Path | None = None) -> None:
    torch.set_num_threads(cfg.threads)
    work = out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    log_file = (work / "log.txt").open("a", encoding="utf-8")

    def log(text: str) -> None:
        print(text, flush=True)
        log_file.write(text + "\n")
        log_file.flush()

    started = time.perf_counter()
    data = prepare_data(cfg, data_file, log)
    run = Run(cfg, build_models(cfg))
    ckpt, elapsed = work / "checkpoint.pt", 0.0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        if state["config"] != asdict(cfg):
            sys.exit(f"error: {ckpt} was made with other settings; delete {work} or repeat them")
        run.load(state)
        elapsed = state["minutes"]
        log(f"resumed at step {run.step}")
    losses: list[float] = []
    while run.step < cfg.steps:
        losses.append(run.train_step(data))
        minutes = elapsed + (time.perf_counter() - started) / 60
        if run.step % 50 == 0:
            log(f"step {run.step} loss {sum(losses) / len(losses):.4f} {minutes:.1f} min")
            losses.clear()
        if run.step % cfg.checkpoint_every == 0 or run.step == cfg.steps:
            save_checkpoint(ckpt, run, cfg, minutes)
    minutes = elapsed + (time.perf_counter() - started) / 60
    save_fixture(out, run, fixture_info(cfg, run, minutes))
    log(f"saved {out} after {minutes:.1f} min")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-file", type=Path, default=None, help="cache of the rendered training set (.npz)")
    for field in dataclasses.fields(MMDiTConfig):
        kind = {"int": int, "float": float, "str": str}[str(field.type)]
        parser.add_argument("--" + field.name.replace("_", "-"), type=kind, default=field.default)
    args = parser.parse_args(argv)
    cfg = MMDiTConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(MMDiTConfig)})
    train(args.out, cfg, args.data_file)


if __name__ == "__main__":
    main()

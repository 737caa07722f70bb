"""Train and evaluate a small CLIP for the shapes world (shipped in src/freeprompt/fixtures/shapes_clip).

A ``transformers.CLIPModel`` (a ViT on 64 px renders, 8 px patches; a CLIP text transformer with the real CLIP BPE
tokenizer of ``freeprompt.models.tokenizer.clip_tokenizer``) trained from scratch with the symmetric contrastive
loss on renders of ``freeprompt.shapes.world``: one object per image, captions of the single-object templates
("a red circle", "a photo of a ...", "a big/small ...", "... on the left/right", "... standing in the park").
Every step renders a fresh batch (render seeds ``seed * 10**7 + step * batch + row``), so the model never sees an
image twice; evaluation renders come from seeds at 10**9 and above, disjoint from every training seed.

Two rows of a batch whose captions say the same thing about the same picture ("a red circle" and "a photo of a red
circle", which world.py renders alike, or two renders of "a red circle") are both counted as matches in the loss
(its targets are spread over them), instead of one of them being a negative; with distinct rows it is CLIP's loss.

    OMP_NUM_THREADS=1 python -m lab.shapes_clip.train --out DIR --threads 1
    python -m lab.shapes_clip.train --evaluate src/freeprompt/fixtures/shapes_clip --eval-images 2000
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from freeprompt.shapes import world

SINGLE_OBJECT_TEMPLATES = tuple(t for t, layout in world.TEMPLATE_LAYOUTS.items() if not layout.pair)
TRAIN_SEED_STRIDE = 10**7  # training render seeds: seed * stride + step * batch + row
EVAL_SEED_BASE = 10**9  # evaluation render seeds: EVAL_SEED_BASE + seed * 10**6 + i, above every training seed
MAX_LENGTH = 77


@dataclass
class ClipTrainConfig:
    """Every setting of a run; the defaults are the shipped model's recipe."""

    seed: int = 0  # initial weights, template draws and render seeds
    steps: int = 2000  # optimiser steps (each on a freshly rendered batch)
    batch: int = 128  # image-caption pairs per step (the contrastive loss's negatives)
    lr: float = 1e-3  # peak learning rate: linear warm-up over `warmup` steps, then a cosine to 0
    warmup: int = 100
    weight_decay: float = 0.05  # AdamW, on matrices only (not on biases, norms or the logit scale)
    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    text_width: int = 64
    text_layers: int = 3
    text_heads: int = 4
    projection_dim: int = 64
    # the template mix of the training captions (single-object templates of world.py)
    templates: str = "simple=0.4,photo=0.1,big=0.1,small=0.1,left=0.1,right=0.1,park=0.1"
    threads: int = 1  # torch CPU threads
    # if > 0: after the first steps the step count is cut so the run fits this many minutes (the count run is
    # written to freeprompt_clip.json, so rerunning with --steps and no budget repeats the run)
    time_budget_min: float = 0.0
    eval_images: int = 2000  # held-out "simple" renders scored at the end (written to freeprompt_clip.json)
    monitor_every: int = 250  # steps between progress checks on 200 monitoring renders (seed 1 of evaluate)


def parse_templates(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        name, _, weight = part.strip().partition("=")
        if name not in SINGLE_OBJECT_TEMPLATES:
            raise ValueError(f"template {name!r} is not a single-object template of world.py: "
                             f"{', '.join(SINGLE_OBJECT_TEMPLATES)}")
        mix[name] = float(weight or 1.0)
    total = sum(mix.values())
    return {k: v / total for k, v in mix.items()}


def clip_config(cfg: ClipTrainConfig):
    from transformers import CLIPConfig

    text = dict(vocab_size=49408, hidden_size=cfg.text_width, intermediate_size=4 * cfg.text_width,
                num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads, max_position_embeddings=77,
                bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_act="quick_gelu",
                projection_dim=cfg.projection_dim)
    vision = dict(hidden_size=cfg.vision_width, intermediate_size=4 * cfg.vision_width,
                  num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.vision_heads,
                  image_size=cfg.image_size, patch_size=cfg.patch_size, num_channels=3, hidden_act="quick_gelu",
                  projection_dim=cfg.projection_dim)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=cfg.projection_dim)


def build_model(cfg: ClipTrainConfig):
    from transformers import CLIPModel

    torch.manual_seed(cfg.seed)
    return CLIPModel(clip_config(cfg))


def image_processor_class():
    """transformers' CLIPImageProcessor; without torchvision its PIL backend (what the former resolves to then,
    with a warning; the same results on these images)."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        from transformers import CLIPImageProcessorPil

        return CLIPImageProcessorPil
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor


def image_processor(size: int = 64):
    """CLIP's preprocessing at ``size`` px: resize the short side to it, centre-crop, rescale to [0, 1], normalise
    with CLIP's mean and std. On the shapes world's square renders of that size it only normalises."""
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    return image_processor_class()(do_resize=True, size={"shortest_edge": size}, do_center_crop=True,
                                   crop_size={"height": size, "width": size}, do_rescale=True,
                                   rescale_factor=1 / 255, do_normalize=True, image_mean=list(OPENAI_CLIP_MEAN),
                                   image_std=list(OPENAI_CLIP_STD), do_convert_rgb=True)


def pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 NxHxWx3 renders (already at the model's size) as the processor's pixel_values, without PIL."""
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def tokenize(tokenizer, captions: list[str], padding: str = "max_length") -> dict[str, torch.Tensor]:
    """Token ids and attention mask, padded to 77 (``padding="longest"``: to the longest caption, which gives the
    same pooled features, as the text transformer is causal and pools at the first end token)."""
    enc = tokenizer(list(captions), padding=padding, max_length=MAX_LENGTH, truncation=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def render_batch(cfg: ClipTrainConfig, step: int, mix: dict[str, float]):
    """The training batch of one step: images, captions and each row's match key (what the caption says about the
    picture: the template's layout, colour, shape)."""
    rng = np.random.default_rng([cfg.seed, step])
    names = list(mix)
    templates = [names[i] for i in rng.choice(len(names), size=cfg.batch, p=np.array(list(mix.values())))]
    first = cfg.seed * TRAIN_SEED_STRIDE + step * cfg.batch
    samples = [world.random_sample(first + i, size=cfg.image_size, template=t) for i, t in enumerate(templates)]
    keys = [(world.TEMPLATE_LAYOUTS[s.spec.template], s.spec.objects[0].color, s.spec.objects[0].shape)
            for s in samples]
    return np.stack([s.image for s in samples]), [s.spec.caption for s in samples], keys


def match_targets(keys: list) -> torch.Tensor:
    """Row-normalised matrix of the pairs that match (same key): the contrastive loss's targets."""
    ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    k = torch.tensor([ids[key] for key in keys])
    same = (k[:, None] == k[None, :]).float()
    return same / same.sum(1, keepdim=True)


def contrastive_loss(logits_per_image: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric loss with soft targets (identical to it when every row's key is distinct)."""
    return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_image.T, targets.T)) / 2


def lr_at(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def optimizer(model, cfg: ClipTrainConfig) -> torch.optim.Optimizer:
    decay, rest = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "embedding" not in name else rest).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


@torch.no_grad()
def text_features(model, tokenizer, captions: list[str]) -> torch.Tensor:
    """Unit-norm projected text features, captions padded to 77 as at inference."""
    enc = tokenize(tokenizer, captions)
    out = model.get_text_features(**enc)
    out = getattr(out, "pooler_output", out)
    return F.normalize(out.float(), dim=-1)


@torch.no_grad()
def image_features(model, processor, images, batch: int = 250) -> torch.Tensor:
    """Unit-norm projected image features of uint8 HxWx3 images, through the image processor."""
    feats = []
    for i in range(0, len(images), batch):
        pv = processor(images=[np.asarray(im) for im in images[i:i + batch]], return_tensors="pt")["pixel_values"]
        out = model.get_image_features(pixel_values=pv.to(model.dtype))
        out = getattr(out, "pooler_output", out)
        feats.append(F.normalize(out.float(), dim=-1))
    return torch.cat(feats)


def eval_seeds(n: int, seed: int = 0) -> range:
    return range(EVAL_SEED_BASE + seed * 10**6, EVAL_SEED_BASE + seed * 10**6 + n)


@torch.no_grad()
def evaluate(model, processor=None, n: int = 1000, seed: int = 0, tokenizer=None, size: int = 64) -> dict:
    """Held-out caption ranking: ``n`` renders of the "simple" template (seeds disjoint from training), each ranked
    against all 80 "a {colour} {shape}" captions by CLIP similarity. Top-1 accuracy, the share whose best caption
    has the right colour, the right shape, and top-1 per shape and per colour."""
    from freeprompt.models.tokenizer import clip_tokenizer

    processor = processor or image_processor(size)
    tokenizer = tokenizer or clip_tokenizer()
    pairs = [(c, s) for c in world.COLORS for s in world.SHAPES]
    text = text_features(model, tokenizer, [world.caption("simple", c, s) for c, s in pairs])
    samples = [world.random_sample(i, size=size, template="simple") for i in eval_seeds(n, seed)]
    best = (image_features(model, processor, [s.image for s in samples]) @ text.T).argmax(1).tolist()
    truth = [(s.spec.objects[0].color, s.spec.objects[0].shape) for s in samples]
    guess = [pairs[b] for b in best]
    colour_ok = [g[0] == t[0] for g, t in zip(guess, truth)]
    shape_ok = [g[1] == t[1] for g, t in zip(guess, truth)]
    both = [a and b for a, b in zip(colour_ok, shape_ok)]

    def share(flags):
        return round(sum(flags) / max(1, len(flags)), 4)

    return {"n": n, "seed": seed, "top1": share(both), "colour": share(colour_ok), "shape": share(shape_ok),
            "top1_per_shape": {s: share([b for b, t in zip(both, truth) if t[1] == s]) for s in world.SHAPES},
            "top1_per_colour": {c: share([b for b, t in zip(both, truth) if t[0] == c]) for c in world.COLORS}}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parameter_counts(model) -> dict:
    def count(m):
        return sum(p.numel() for p in m.parameters())

    return {"total": count(model), "vision": count(model.vision_model) + count(model.visual_projection),
            "text": count(model.text_model) + count(model.text_projection),
            "text_token_embedding": model.text_model.embeddings.token_embedding.weight.numel()}


def loads_in_float32(config_path: Path) -> None:
    """Make the saved config (and its text and vision parts) name float32, so ``from_pretrained`` without a dtype
    gives float32 although the weights are stored in fp16."""
    config = json.loads(config_path.read_text())
    for part in (config, config.get("text_config", {}), config.get("vision_config", {})):
        for key in ("dtype", "torch_dtype"):
            if key in part or part is config:
                part[key] = "float32"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_model(out_dir: Path, model, processor, info: dict, log_path: Path | None = None) -> Path:
    """Write the model folder atomically: config.json (float32), model.safetensors (fp16),
    preprocessor_config.json, freeprompt_clip.json and the training log. No tokenizer files: the tokenizer is
    ``freeprompt.models.tokenizer.clip_tokenizer()``."""
    import copy

    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    copy.deepcopy(model).cpu().to(torch.float16).save_pretrained(staging, safe_serialization=True)
    loads_in_float32(staging / "config.json")
    processor.save_pretrained(staging)
    (staging / "freeprompt_clip.json").write_text(json.dumps(info, indent=2) + "\n")
    if log_path is not None and Path(log_path).exists():
        shutil.copy(log_path, staging / "train_log.csv")
    if out_dir.exists():
        keep = out_dir / "MODEL_CARD.md"  # a hand-written card survives a retrain into the same folder
        if keep.exists():
            shutil.copy(keep, staging / "MODEL_CARD.md")
        shutil.rmtree(out_dir)
    os.replace(staging, out_dir)
    return out_dir


def train(out_dir: Path, cfg: ClipTrainConfig, log_every: int = 50, quiet: bool = False) -> dict:
    """Train a CLIPModel by ``cfg``, evaluate it and save it to ``out_dir``; returns freeprompt_clip.json's record."""
    from freeprompt.models.tokenizer import clip_tokenizer

    mix = parse_templates(cfg.templates)
    if not 0 <= cfg.seed < 100 or cfg.steps * cfg.batch >= TRAIN_SEED_STRIDE:
        raise ValueError("seed must be in 0-99 and steps * batch below 10**7 (the training seeds stay disjoint "
                         "from the evaluation seeds)")
    torch.set_num_threads(cfg.threads)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = out_dir.with_name(out_dir.name + ".log.csv")
    started = time.time()
    model = build_model(cfg).train()
    processor, tokenizer = image_processor(cfg.image_size), clip_tokenizer()
    opt = optimizer(model, cfg)
    total, monitor = cfg.steps, []

    def say(text):
        if not quiet:
            print(text, flush=True)

    with open(log_path, "w", newline="") as fh:
        log = csv.writer(fh)
        log.writerow(["step", "seconds", "lr", "loss", "batch_top1", "logit_scale"])
        step = 0
        while step < total:
            images, captions, keys = render_batch(cfg, step, mix)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * lr_at(step, total, cfg.warmup)
            out = model(pixel_values=pixels(images), **tokenize(tokenizer, captions, padding="longest"))
            targets = match_targets(keys)
            loss = contrastive_loss(out.logits_per_image, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            if step == 20 and cfg.time_budget_min > 0:
                per_step = (time.time() - started) / step
                fit = int(cfg.time_budget_min * 60 * 0.9 / per_step)  # a tenth kept for evaluating and saving
                if fit < total:
                    total = max(step + 1, fit)
                    say(f"time budget: {per_step:.2f} s/step, running {total} steps")
            if step % log_every == 0 or step == total:
                hit = targets[torch.arange(len(keys)), out.logits_per_image.argmax(1)] > 0
                row = [step, round(time.time() - started, 1), f"{opt.param_groups[0]['lr']:.3g}",
                       round(loss.item(), 4), round(hit.float().mean().item(), 3),
                       round(model.logit_scale.exp().item(), 2)]
                log.writerow(row)
                fh.flush()
                say("step {} {}s lr {} loss {} batch_top1 {} scale {}".format(*row))
            if cfg.monitor_every and (step % cfg.monitor_every == 0 or step == total):
                model.eval()
                m = evaluate(model, processor, n=200, seed=1, tokenizer=tokenizer, size=cfg.image_size)
                model.train()
                monitor.append({"step": step, "top1": m["top1"], "colour": m["colour"], "shape": m["shape"]})
                say(f"  monitor (200 renders): top1 {m['top1']} colour {m['colour']} shape {m['shape']}")
    train_minutes = (time.time() - started) / 60
    model.eval()
    held_out = evaluate(model, processor, n=cfg.eval_images, seed=0, tokenizer=tokenizer, size=cfg.image_size)
    say(f"held out ({cfg.eval_images} renders): top1 {held_out['top1']} colour {held_out['colour']} "
        f"shape {held_out['shape']}")
    import transformers

    info = {"config": asdict(cfg), "steps_run": total, "train_minutes": round(train_minutes, 1),
            "machine": f"{cpu_name()}, {os.cpu_count()} cores, torch {cfg.threads} thread(s)",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "parameters": parameter_counts(model), "held_out": held_out, "monitor": monitor,
            "data": {"train_render_seeds": [cfg.seed * TRAIN_SEED_STRIDE, cfg.seed * TRAIN_SEED_STRIDE
                                            + total * cfg.batch - 1],
                     "eval_render_seeds": [eval_seeds(cfg.eval_images)[0], eval_seeds(cfg.eval_images)[-1]]},
            "retrain": "OMP_NUM_THREADS=1 python -m lab.shapes_clip.train --out DIR " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in asdict(cfg).items()
                if k not in ("time_budget_min",) and v != getattr(ClipTrainConfig(), k)
            ) + ("" if total == cfg.steps else f" --steps {total}")}
    save_model(out_dir, model, processor, info, log_path)
    log_path.unlink(missing_ok=True)
    say(f"saved {out_dir} after {(time.time() - started) / 60:.1f} min")
    return info


def load(folder) -> tuple:
    """The shipped (or a trained) model folder: CLIPModel in float32, eval mode; its image processor."""
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(folder).eval(), image_processor_class().from_pretrained(folder)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="model folder to write")
    parser.add_argument("--evaluate", type=Path, default=None, help="only evaluate this model folder")
    parser.add_argument("--log-every", type=int, default=50, help="steps between log lines")
    for f in dataclasses.fields(ClipTrainConfig):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    args = parser.parse_args(argv)
    cfg = ClipTrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ClipTrainConfig)})
    if args.evaluate:
        torch.set_num_threads(cfg.threads)
        model, processor = load(args.evaluate)
        result = evaluate(model, processor, n=cfg.eval_images, seed=cfg.seed)
        print(json.dumps(result, indent=2))
        return 0
    if args.out is None:
        parser.error("--out is required (or --evaluate FOLDER)")
    train(args.out, cfg, log_every=args.log_every)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Collecting a probing dataset: generate a ``DatasetSpec``'s prompts, record their attention maps, store them
(``datasets``), resumably and across processes.

Resumable: shard ``k`` is generated in fixed batches; every finished batch is written atomically as
``shard-0000k.batch-000j.safetensors`` and the batches are merged into the shard when all exist. A killed
collection restarts at the first missing batch, losing at most the batch in flight; since batch boundaries are
fixed, the result is the same as that of an uninterrupted run. Processes split the shards (``num_shards`` K,
``shard_index`` i: shards with k % K == i; under torchrun or ``accelerate launch`` these default to the
launcher's WORLD_SIZE and RANK) and share work only through the files, so no process group is needed.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..attention import StepRange, discover_layers
from ..attention.recorder import layer_kind, layer_layout, pooled_grid, record_attention, recorded_network
from ..attention.tokens import word_token_indices
from ..diffusion import check_steps, ddim_scheduler, image_size, initial_latents, latent_shape, sample
from ..diffusion.denoisers import Denoiser, denoiser_for
from ..diffusion.schedulers import default_scheduler, make_scheduler
from ..errors import BadInput
from ..io.outputs import exclusive, write_json
from ..io.sweep import distributed_position
from ..models.loading import network_family
from .datasets import (
    FORMAT,
    SELF_WORD,
    VERSION,
    CorruptShard,
    batch_path,
    check_file,
    shard_path,
    write_index,
    write_tensors,
)
from .specs import DatasetSpec, Item


@dataclass
class CollectOptions:
    steps: int = 50
    guidance: float = 7.5
    height: int | None = None
    width: int | None = None
    negative_prompt: str = ""
    batch_size: int = 8
    shard_size: int = 256
    layers: str = "all"
    record_steps: str | None = None  # None: every step; or a fraction range "0:0.5"
    self_max_tokens: int = 256
    store_dtype: str | None = None  # float32 | float16 | bfloat16; default float32 (cross), float16 (self)

    def resolved_dtype(self, kind: str) -> str:
        dtype = self.store_dtype or ("float16" if kind == "self" else "float32")
        if dtype not in ("float32", "float16", "bfloat16", "float64"):
            raise BadInput(f"unknown storage dtype {dtype!r}", "use float32, float16 or bfloat16")
        return dtype


@dataclass
class Plan:
    """What a collection writes, fixed (and checked) before anything is generated."""

    spec: DatasetSpec
    records: list[dict]  # one per item: prompt, seed, class, token positions of the recorded words
    shape: tuple  # latents of one item
    layers: list  # recorded AttentionLayer descriptors
    shapes: dict  # layer name -> stored map shape
    words: list[str]  # recorded words ("self" for self-attention)
    record_steps: list[int] | None
    meta: dict

    @property
    def expected(self) -> dict[str, list[int]]:
        return {f"{w}/{layer.name}": self.shapes[layer.name] for w in self.words for layer in self.layers}


def plan_collection(pipe, spec: DatasetSpec, options: CollectOptions, model_info: dict | None = None) -> Plan:
    """Every item's record (every word is looked up in its prompt), the layers and map shapes, and the folder's
    meta.json; one-line errors for anything that cannot be collected."""
    if options.batch_size < 1 or options.shard_size < 1:
        raise BadInput("batch size and shard size must be at least 1", "use e.g. --batch-size 8 --shard-size 256")
    check_steps(options.steps, pipe.scheduler.config)
    records = _records(spec, spec.items(), pipe.tokenizer)
    shape = latent_shape(pipe, options.height, options.width)
    latent_hw = tuple(shape[2:])
    registry = discover_layers(recorded_network(pipe))
    chosen = registry.select(options.layers, layer_kind(registry, spec.kind), latent_hw)
    if not chosen:
        raise BadInput(f"the layer spec {options.layers!r} selects no {spec.kind}-attention layer", "use --layers all")
    if spec.kind == "cross":
        shapes = {layer.name: list(layer.grid(latent_hw)) for layer in chosen}
        words = list(spec.words)
    else:
        pooled = {layer.name: pooled_grid(layer.grid(latent_hw), options.self_max_tokens) for layer in chosen}
        shapes = {name: [ph * pw, ph * pw] for name, (ph, pw) in pooled.items()}
        words = [SELF_WORD]
    record_steps = None
    if options.record_steps:  # checked before anything is written, so a fixed range can reuse the folder
        record_steps = StepRange.parse(options.record_steps).steps(options.steps)
        if not record_steps:
            raise BadInput(f"the step range {options.record_steps!r} covers none of the {options.steps} steps",
                           "widen --record-steps (e.g. 0:0.5) or use more --steps")
    names = [layer.name for layer in chosen]
    meta = _meta_for(pipe, spec, options, model_info, names, latent_hw, shapes, words)
    return Plan(spec, records, shape, chosen, shapes, words, record_steps, meta)


class ProgressFile:
    """What one collecting process has done and has in flight, in ``progress/process-I-of-K.json``, and its
    progress bar."""

    def __init__(self, root: Path, shard_index: int, num_shards: int, owned: list[int], items_owned: int,
                 bar_title: str | None):
        self.path = root / "progress" / f"process-{shard_index}-of-{num_shards}.json"
        self.state = {"process": shard_index, "processes": num_shards, "shards_owned": owned, "shards_done": [],
                      "items_owned": items_owned, "items_done": 0, "in_flight": None, "skipped_files": []}
        self.generated = 0
        self.bar = None
        if bar_title:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=items_owned, desc=bar_title, unit="sample", leave=False)

    def done(self, count: int, generated: bool = False) -> None:
        self.state["items_done"] += count
        self.generated += count if generated else 0
        if self.bar:
            self.bar.update(count)

    def bad_file(self, path: Path, reason: str) -> None:
        warnings.warn(f"{path.name} is unreadable ({reason}); it will be generated again", CorruptShard, stacklevel=4)
        self.state["skipped_files"].append(f"{path.name}: {reason}")

    def write(self, in_flight: dict | None = None) -> None:
        self.state["in_flight"] = in_flight
        self.state["updated"] = time.time()
        write_json(self.path, self.state, indent=1)

    def close(self) -> None:
        if self.bar:
            self.bar.close()


def collect(
    pipe,
    spec: DatasetSpec,
    out: str | Path,
    options: CollectOptions | None = None,
    *,
    model_info: dict | None = None,
    num_shards: int | None = None,
    shard_index: int | None = None,
    on_batch: Callable[[int, int, list[int]], None] | None = None,
    progress: bool = False,
) -> dict:
    """Generate ``spec``'s items with ``pipe`` and store their attention maps under ``out`` (resumable; see the
    module docstring). Returns a summary: items done now and before, shards, time, samples per minute."""
    options = options or CollectOptions()
    root = Path(out)
    num_shards, shard_index = distributed_position(num_shards, shard_index)
    plan = plan_collection(pipe, spec, options, model_info)
    root.mkdir(parents=True, exist_ok=True)
    with exclusive(root / f".collect.shard-{shard_index}-of-{num_shards}.lock", f"the dataset {root}"):
        _open_folder(root, plan.meta)
        size, total = options.shard_size, len(plan.records)
        owned = [k for k in range((total + size - 1) // size) if k % num_shards == shard_index]
        tracker = ProgressFile(root, shard_index, num_shards, owned, sum(min(size, total - k * size) for k in owned),
                               f"collect {spec.name}" if progress else None)
        start = time.perf_counter()
        with record_attention(pipe, kind=spec.kind, layers=plan.layers, steps=plan.record_steps,
                              cfg=options.guidance > 1.0, self_max_tokens=options.self_max_tokens,
                              latent_hw=tuple(plan.shape[2:])) as rec:
            for k in owned:
                _collect_shard(pipe, rec, plan, options, root, k, tracker, on_batch)
                tracker.state["shards_done"].append(k)
                tracker.write()
        tracker.close()
    elapsed = time.perf_counter() - start
    tracker.write()
    state, generated = tracker.state, tracker.generated
    return {"dataset": spec.name, "out": str(root), "items_total": total, "items_owned": state["items_owned"],
            "items_generated": generated, "items_reused": state["items_done"] - generated,
            "shards_owned": owned, "complete": write_index(root, quiet=True), "seconds": elapsed,
            "samples_per_minute": 60.0 * generated / elapsed if generated and elapsed > 0 else None,
            "skipped_files": state["skipped_files"], "process": [shard_index, num_shards]}


def _open_folder(root: Path, meta: dict) -> None:
    """Create the folder, or check that an existing one was collected with the same model, spec and options."""
    (root / "shards").mkdir(parents=True, exist_ok=True)
    (root / "progress").mkdir(exist_ok=True)
    meta_file = root / "meta.json"
    if not meta_file.exists():
        write_json(meta_file, meta, indent=1)
        return
    try:
        old = json.loads(meta_file.read_text())
    except json.JSONDecodeError:
        raise BadInput(f"{meta_file} is not valid JSON (corrupt)", "delete the folder and collect again") from None
    _compatible(old, meta, root)


def _collect_shard(pipe, rec, plan: Plan, options: CollectOptions, root: Path, k: int, tracker: ProgressFile,
                   on_batch) -> None:
    """Shard ``k``: reused when it exists and reads back, else its missing batches generated, then merged."""
    size = options.shard_size
    ids = list(range(k * size, min(len(plan.records), (k + 1) * size)))
    final = shard_path(root, k)
    for stale in (root / "shards").glob(f".shard-{k:05d}*.tmp-*"):
        stale.unlink(missing_ok=True)  # a write that was killed before its rename
    if final.exists():
        try:
            check_file(final, ids, plan.expected, verify=True)
            for leftover in (root / "shards").glob(f"shard-{k:05d}.batch-*.safetensors"):
                leftover.unlink(missing_ok=True)  # killed after the merge, before the clean-up
            tracker.done(len(ids))
            return
        except ValueError as err:
            tracker.bad_file(final, str(err))
    batches = [ids[j:j + options.batch_size] for j in range(0, len(ids), options.batch_size)]
    for j, batch_ids in enumerate(batches):
        part = batch_path(root, k, j)
        if part.exists():
            try:
                check_file(part, batch_ids, plan.expected, verify=True)
                tracker.done(len(batch_ids))
                continue
            except ValueError as err:
                tracker.bad_file(part, str(err))
        tracker.write({"shard": k, "batch": j, "items": [batch_ids[0], batch_ids[-1]]})
        _collect_batch(pipe, rec, plan, options, part, k, j, batch_ids)
        tracker.done(len(batch_ids), generated=True)
        if on_batch is not None:
            on_batch(k, j, batch_ids)
    _merge(root, k, len(batches), ids, plan.records)


def _collect_batch(pipe, rec, plan: Plan, options: CollectOptions, part: Path, k: int, j: int, batch_ids) -> None:
    """Generate one batch of items and write its maps to ``part`` atomically."""
    batch = [plan.records[i] for i in batch_ids]
    spec = plan.spec
    rec.reset(tokens={w: [r["tokens"][w] for r in batch] for w in spec.words} if spec.kind == "cross" else None)
    generate_items(pipe, batch, plan.shape, options, hooks=[rec])
    store_dtype = getattr(torch, plan.meta["collect"]["store_dtype"])
    tensors = {"item_id": torch.tensor(batch_ids, dtype=torch.int64)}
    for w in plan.words:
        maps = rec.maps(w if spec.kind == "cross" else None)
        for layer in plan.layers:
            tensors[f"{w}/{layer.name}"] = maps[layer.name].reshape(len(batch_ids), *plan.shapes[layer.name]) \
                .to(store_dtype)
    write_tensors(part, tensors, {"items": batch, "shard": k, "batch": j})


def generate_items(pipe, records: list[dict], shape: tuple, options: CollectOptions, hooks=()) -> torch.Tensor:
    """The final latents of dataset items (each a ``prompt`` and a ``seed``), generated as a collection generates
    them: each seed's noise of ``shape``, the options' steps, guidance and negative prompt, ``sampler_of``'s
    scheduler."""
    denoiser = denoiser_for(pipe)
    device, dtype = denoiser.device, denoiser.network.dtype
    noise = torch.cat([initial_latents(r["seed"], shape, device, dtype) for r in records])
    size = image_size(pipe, shape)[::-1]  # (height, width): SDXL's size conditioning
    guided = options.guidance > 1.0
    embeddings = denoiser.encode([r["prompt"] for r in records], options.negative_prompt, guided, device, size)
    return sample(denoiser, sampler_of(pipe, denoiser), noise, embeddings, options.steps, options.guidance,
                  hooks=hooks)


def sampler_of(pipe, denoiser: Denoiser):
    """The scheduler a collection samples with: the official FPE DDIM on a UNet (as the paper's probes), a
    transformer's own default (flow matching on SD3, DDIM over its own betas on PixArt)."""
    if denoiser.family == "unet":
        return ddim_scheduler(pipe.scheduler.config)
    return make_scheduler(default_scheduler(pipe.scheduler.config), pipe.scheduler.config, model_betas=True)


def _meta_for(pipe, spec: DatasetSpec, options: CollectOptions, model_info: dict | None, names: list[str],
              latent_hw, shapes: dict[str, list[int]], words: list[str]) -> dict:
    network = recorded_network(pipe)
    layout = layer_layout(network, latent_hw)
    info = dict(model_info or {})
    info.setdefault("id", getattr(getattr(pipe, "config", None), "_name_or_path", None) or "unknown")
    recorded = []
    for row in layout:
        if row["name"] in names:
            recorded.append({**row, "shape": shapes[row["name"]]})
    return {
        "format": FORMAT, "version": VERSION, "name": spec.name, "kind": spec.kind, "spec": spec.to_dict(),
        "num_items": len(spec.items()), "words": words,
        "model": {"id": info.get("id"), "revision": info.get("revision")}, "family": network_family(denoiser_for(pipe)),
        "latent_hw": list(latent_hw), "layout": layout, "layers": recorded,
        "collect": {**asdict(options), "store_dtype": options.resolved_dtype(spec.kind)},
    }


def _compatible(old: dict, new: dict, root: Path) -> None:
    fix = "collect into a new folder, or use the same model, options and dataset spec as before"
    if old.get("format") != FORMAT:
        raise BadInput(f"{root} holds something other than a freeprompt probe dataset", "give an empty or new folder")
    if old.get("model") != new["model"]:
        raise BadInput(f"{root} was collected with model {old.get('model', {}).get('id')!r} "
                       f"(revision {old.get('model', {}).get('revision')}), not {new['model']['id']!r} "
                       f"(revision {new['model']['revision']})", fix)
    if old.get("layout") != new["layout"] or old.get("layers") != new["layers"]:
        raise BadInput(f"{root} was collected with a different layer layout (model architecture, image size or "
                       "layer selection)", fix)
    if old.get("spec") != new["spec"]:
        raise BadInput(f"{root} holds dataset {old.get('name')!r} with a different spec (words, templates or seeds)",
                       fix)
    if old.get("collect") != new["collect"]:
        changed = sorted(k for k in new["collect"] if old.get("collect", {}).get(k) != new["collect"][k])
        raise BadInput(f"{root} was collected with different options ({', '.join(changed)})", fix)


def _records(spec: DatasetSpec, items: list[Item], tokenizer) -> list[dict]:
    records = []
    for it in items:
        tokens = {label: word_token_indices(tokenizer, it.prompt, word) for label, word in it.words.items()}
        records.append({"id": it.id, "prompt": it.prompt, "seed": it.seed, "class": it.label,
                        "template": it.template, "fields": it.fields, "words": it.words, "tokens": tokens})
    return records


def _merge(root: Path, k: int, num_batches: int, ids: list[int], records: list[dict]) -> None:
    from safetensors.torch import load_file

    parts = [load_file(str(batch_path(root, k, j))) for j in range(num_batches)]
    tensors = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    if tensors["item_id"].tolist() != ids:
        raise RuntimeError(f"shard {k}: merged items do not match the plan")  # a bug, not a user error
    write_tensors(shard_path(root, k), tensors, {"items": [records[i] for i in ids], "shard": k})
    for j in range(num_batches):
        batch_path(root, k, j).unlink(missing_ok=True)


__all__ = ["CollectOptions", "Plan", "collect", "distributed_position", "generate_items", "plan_collection",
           "sampler_of"]

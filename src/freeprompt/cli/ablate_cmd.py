"""``freeprompt ablate``: the paper's replace-step ablation (Figs 10-11) as an image grid, a table and a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .loading import load_model
from .options import (
    device_option,
    dtype_option,
    guidance_option,
    limit_option,
    model_option,
    num_shards_option,
    offload_option,
    old_spelling,
    quiet_option,
    renamed,
    seed_option,
    shard_index_option,
    steps_option,
)
from .progress import progress_bar


def ablate(
    out: Path = typer.Option(..., "--out", "-o", help="results folder (resumes an earlier run with the same settings)"),
    model: str = model_option(),
    source: Optional[str] = typer.Option(
        None, "--source", "-s", help="source prompt [default: seeded shapes-world swaps, scored by the oracle]"),
    target: Optional[list[str]] = typer.Option(None, "--target", "-t", help="target prompt (repeat), with --source"),
    items: int = limit_option("shapes-world swaps (half colour, half shape), or seeds per target prompt", 4, 10_000),
    seed: int = seed_option(0, "seed of the item list, or the first seed with --source"),
    types: Optional[str] = typer.Option(None, help="replacement types: cross, self, both (self + cross at 0:0.8) "
                                        "[default: cross,self,both; SD3 and FLUX: cross,self]", show_default=False),
    layers: Optional[list[str]] = typer.Option(None, help="a layer set (repeat) [default: all, 4-14, <=32x32; a "
                                               "diffusion transformer: all]"),
    ratios: str = typer.Option("0.1:0.9:0.1", help="replace ratios r (steps 0:r): START:STOP:STEP or a,b,c"),
    steps: Optional[int] = steps_option(),
    guidance: Optional[float] = guidance_option(),
    device: str = device_option(),
    dtype: str = dtype_option(),
    offload: str = offload_option(),
    quiet: bool = quiet_option(),
    num_shards: Optional[int] = num_shards_option(),
    shard_index: Optional[int] = shard_index_option(),
    items_old: Optional[int] = old_spelling("--items", min=1, max=10_000),
):
    """Replace cross-attention maps, self-attention maps or both, by replace ratio and layer set: Figs 10-11 of the
    paper, with the oracle's scores under every cell on the shapes fixture."""
    from ..errors import BadInput
    from ..evaluation import ablation as ab
    from ..io.outputs import check_output_folder
    from ..io.sweep import distributed_position, wait_for_shards
    from ..models.loading import check_model_options

    items = renamed(items, items_old, "--items", "--limit")
    check_output_folder(out, resumable=True)
    check_model_options(device, dtype, offload)
    shards, index = distributed_position(num_shards, shard_index)
    kinds, parsed = [t.strip() for t in (types or ",".join(ab.TYPES)).split(",") if t.strip()], ab.parse_ratios(ratios)
    cells = ab.grid(kinds, list(layers or ab.DEFAULT_LAYER_SETS), parsed)  # checked before the model loads
    if (source is None) != (not target):
        raise BadInput("--source and --target go together", "give both, or neither for the shapes-world swaps")
    chosen = _items(source, target, items, seed)
    loaded = load_model(model, device=device, dtype=dtype, offload=offload)
    if not layers or not types:  # the defaults are the UNet's (see ablation.defaults_for)
        default_kinds, default_layers = ab.defaults_for(loaded.pipe)
        cells = ab.grid(kinds if types else default_kinds, layers or list(default_layers), parsed)
    ab.check_types(loaded.pipe, {cell.type for cell in cells})
    steps, guidance = loaded.setting("steps", steps, 50), loaded.setting("guidance", guidance, 7.5)
    rows = ab.run_ablation(loaded.pipe, chosen, cells, out, steps, guidance, model=model,
                           progress=progress_bar("cells", "edit", quiet), num_shards=shards, shard_index=index)
    if index != 0:
        return
    wait_for_shards(out, shards, ab.TABLE)
    params = {"model": loaded.info, "steps": steps, "guidance": guidance, "types": types, "layers": layers,
              "ratios": ratios, "items": items, "seed": seed, "source": source, "targets": target}
    typer.echo(ab.write_report(out, rows, cells, params))


def _items(source, targets, count: int, seed: int) -> list:
    from ..errors import BadInput
    from ..evaluation import ablation as ab
    from ..evaluation import shapes_bench as sb

    if count < 1:
        raise BadInput(f"--limit must be at least 1, got {count}", "use e.g. --limit 4")
    if source is not None:
        return [ab.AblationItem(f"{i}-{s}", s, source, t) for s in range(seed, seed + count) for i, t in
                enumerate(targets)]
    swaps = sb.edit_items((count + 1) // 2, count // 2, seed)
    return [ab.AblationItem(e.id, e.seed, e.source_prompt, e.target_prompt, e) for e in swaps]

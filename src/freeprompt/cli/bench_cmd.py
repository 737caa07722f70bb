"""``freeprompt bench shapes``: the fixture world's edit benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import BadInput
from .loading import load_model
from .options import (
    count_option,
    device_option,
    dtype_option,
    guidance_option,
    model_option,
    not_empty,
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


def word_list(text: Optional[str], flag: str) -> Optional[list[str]]:
    """A comma-separated list option: None when not given; a given but empty list is refused (it would silently
    mean every word)."""
    text = not_empty(text, flag)
    return [w.strip() for w in text.split(",") if w.strip()] if text else None


def shapes(
    out: Path = typer.Option(..., "--out", "-o", help="results folder (resumes an earlier run with the same settings)"),
    model: str = model_option("a model trained on the shapes world, e.g. shapes (the bundled fixture)"),
    color_edits: int = count_option(80, "number of colour-swap edits", high=100_000),
    shape_edits: int = count_option(40, "number of shape-swap edits", high=100_000),
    generation: int = count_option(200, "samples for the generation check (0 to skip)", high=100_000),
    steps: Optional[int] = steps_option(),
    guidance: Optional[float] = guidance_option(),
    colors: Optional[str] = typer.Option(None, help="comma-separated colour words [default: all 10]"),
    shape_words: Optional[str] = typer.Option(None, "--shapes", help="comma-separated shape words [default: all]"),
    templates: str = typer.Option("simple", help="comma-separated caption templates (simple, park, photo, ...)"),
    seed: int = seed_option(0, "seed of the item list"),
    device: str = device_option(),
    dtype: str = dtype_option(),
    offload: str = offload_option(),
    quiet: bool = quiet_option(),
    num_shards: Optional[int] = num_shards_option(),
    shard_index: Optional[int] = shard_index_option(),
    methods_old: Optional[str] = old_spelling("--methods"),
    method: str = "fpe,plain",
    method_options: Optional[dict] = None,
):
    """Colour and shape swaps with every method asked for, scored by the shapes oracle."""
    from ..editing.methods import build_methods

    chosen = build_methods(renamed(method, methods_old, "--methods", "--method"), method_options)
    if color_edits + shape_edits == 0:
        raise BadInput("--color-edits and --shape-edits are both 0", "ask for at least one edit")
    from ..evaluation import shapes_bench as sb
    from ..io.outputs import check_output_folder
    from ..io.sweep import distributed_position, wait_for_shards
    from ..models.loading import check_model_options

    check_output_folder(out, resumable=True)
    check_model_options(device, dtype, offload)
    shards, index = distributed_position(num_shards, shard_index)
    template_list = [w.strip() for w in templates.split(",") if w.strip()]  # checked by edit_items
    colour_words, shape_list = word_list(colors, "--colors"), word_list(shape_words, "--shapes")
    items = sb.edit_items(color_edits, shape_edits, seed, colour_words, shape_list, tuple(template_list))
    loaded = load_model(model, device=device, dtype=dtype, offload=offload)
    steps, guidance = loaded.setting("steps", steps, 50), loaded.setting("guidance", guidance, 7.5)
    rows = sb.run_edits(loaded.pipe, items, out, steps, guidance, chosen, progress=progress_bar("edits", "item", quiet),
                        model=model, num_shards=shards, shard_index=index)
    if index != 0:
        return
    wait_for_shards(out, shards, sb.TABLE)
    gen = sb.generation_check(loaded.pipe, generation, steps, guidance, colors=colour_words,
                              shapes=shape_list) if generation else None
    params = {"model": loaded.info, "steps": steps, "guidance": guidance,
              "methods": {name: m.options() for name, m in chosen.items()}, "color_edits": color_edits,
              "shape_edits": shape_edits, "generation": generation, "seed": seed, "templates": template_list}
    typer.echo(sb.write_report(out, rows, gen, params))

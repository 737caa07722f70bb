"""``freeprompt bench shapes``: the fixture world's edit benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..attention import DEFAULT_LAYERS, DEFAULT_SELF_REPLACE
from ..errors import BadInput
from .options import count_option, guidance_option, not_empty, seed_option, steps_option

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that score edits.")


def methods_from(names: str, self_replace: str | None = None, layers: str | None = None) -> dict:
    """``{name: Method}`` for the comma-separated names; FPE (also inside a combination) with the FPE options."""
    from ..editing.methods import method_named

    chosen = {}
    for name in _words(names) or []:
        given = {"self_replace": self_replace, "layers": layers}
        fpe = {k: v for k, v in given.items() if v is not None} if "fpe" in name.split("+") else {}
        chosen[name] = method_named(name, fpe=fpe)
    if not chosen:
        raise BadInput("no method given", "use e.g. --methods fpe,p2p,masactrl,pnp,plain")
    return chosen


def _words(text: Optional[str]) -> Optional[list[str]]:
    return [w.strip() for w in text.split(",") if w.strip()] if text else None


def word_list(text: Optional[str], flag: str) -> Optional[list[str]]:
    """A comma-separated list option: None when not given; a given but empty list is refused (it would silently
    mean every word)."""
    return _words(not_empty(text, flag))


@bench_app.command("shapes")
def shapes(
    out: Path = typer.Option(..., "--out", "-o", help="results folder (resumes an earlier run with the same settings)"),
    model: str = typer.Option("shapes", "--model", "-m", help="a model trained on the shapes world"),
    color_edits: int = count_option(80, "number of colour-swap edits", high=100_000),
    shape_edits: int = count_option(40, "number of shape-swap edits", high=100_000),
    generation: int = count_option(200, "samples for the generation check (0 to skip)", high=100_000),
    steps: Optional[int] = steps_option(),
    guidance: Optional[float] = guidance_option(),
    methods: str = typer.Option("fpe,plain", help="comma-separated editing methods: fpe, p2p, masactrl, pnp, plain, "
                                "fpe+p2p (each with its defaults)"),
    self_replace: str = typer.Option(DEFAULT_SELF_REPLACE, help="FPE step range"),
    layers: str = typer.Option(DEFAULT_LAYERS, help="FPE self-attention layers"),
    colors: Optional[str] = typer.Option(None, help="comma-separated colour words [default: all 10]"),
    shape_words: Optional[str] = typer.Option(None, "--shapes", help="comma-separated shape words [default: all]"),
    templates: str = typer.Option("simple", help="comma-separated caption templates (simple, park, photo, ...)"),
    seed: int = seed_option(0, "seed of the item list"),
    device: str = typer.Option("auto", help="auto, cuda, mps or cpu"),
):
    """Colour and shape swaps with FPE and with plain regeneration, scored by the shapes oracle."""
    from tqdm.auto import tqdm

    from ..evaluation import shapes_bench as sb
    from ..io.outputs import check_output_folder
    from ..models.loading import load_pipeline, resolve_device

    check_output_folder(out, resumable=True)
    resolve_device(device)
    chosen = methods_from(methods, self_replace, layers)
    template_list = _words(templates) or []
    if color_edits + shape_edits == 0:
        raise BadInput("--color-edits and --shape-edits are both 0", "ask for at least one edit")
    items = sb.edit_items(color_edits, shape_edits, seed, word_list(colors, "--colors"),
                          word_list(shape_words, "--shapes"), tuple(template_list))
    loaded = load_pipeline(model, device=device)
    steps, guidance = loaded.setting("steps", steps, 50), loaded.setting("guidance", guidance, 7.5)
    bars = []  # opened at the first finished item, so a refused folder prints only its one-line error

    def progress(n: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc="edits", unit="item"))
        bars[0].update(n - bars[0].n)

    rows = sb.run_edits(loaded.pipe, items, out, steps, guidance, chosen, progress=progress, model=model)
    for bar in bars:
        bar.close()
    gen = sb.generation_check(loaded.pipe, generation, steps, guidance, colors=word_list(colors, "--colors"),
                              shapes=word_list(shape_words, "--shapes")) if generation else None
    params = {"model": loaded.info, "steps": steps, "guidance": guidance,
              "methods": {name: m.options() for name, m in chosen.items()}, "color_edits": color_edits, "shape_edits": shape_edits, "generation": generation, "seed": seed,
              "templates": template_list}
    typer.echo(sb.write_report(out, rows, gen, params))

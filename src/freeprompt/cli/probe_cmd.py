"""``freeprompt probe``: collect attention-map datasets, train probes, write reports (paper section 7.1).

    freeprompt probe collect color --model shapes --vocab shapes --seeds 200 --out probe/data/color
    freeprompt probe train probe/data/color --out probe/results            # in distribution (80/20 split)
    freeprompt probe train probe/data/color --test probe/data/color_object --out probe/results   # OOD
    freeprompt probe report probe/results --out probe/report --data probe/data/color
    freeprompt probe run probe.toml          # all of it from one config (or --preset shapes|paper)

``collect`` and ``run`` resume where a killed run stopped. ``torchrun --nproc_per_node N -m freeprompt probe run
...`` (or ``accelerate launch --multi_gpu --num_processes N -m freeprompt ...``, or ``--num-shards K --shard-index i``
per process) splits the shards across processes; in ``run``, process 0 trains and reports when all are written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import BadInput
from .loading import load_model, prefixed_library_logs
from .options import (
    CONFIG_HELP,
    REVISION_HELP,
    count_option,
    device_option,
    dtype_option,
    guidance_option,
    model_option,
    not_empty,
    num_shards_option,
    offload_option,
    quiet_option,
    real_option,
    seed_option,
    shard_index_option,
    side_option,
    steps_option,
)

probe_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="Probing analysis: collect attention maps, train probes, report.")


@probe_app.command("collect")
def collect_cmd(
    dataset: str = typer.Argument(..., help="color, color_object, animal, complex, self_color or self_animal"),
    out: Path = typer.Option(..., "--out", "-o", help="dataset folder (created; an existing one is resumed)"),
    model: str = model_option(),
    vocab: str = typer.Option("paper", help="word lists: paper or shapes"),
    colors: Optional[str] = typer.Option(None, help="colour list: a,b,c or @file (one word per line)"),
    animals: Optional[str] = typer.Option(None, help="animal list: a,b,c or @file"),
    objects: Optional[str] = typer.Option(None, help="object list: a,b,c or @file"),
    noun: Optional[str] = typer.Option(None, help="the noun of 'a <color> <noun>' [default: car; shapes: circle]"),
    seeds: Optional[int] = count_option(None, "seeds per class [default: the experiment's, e.g. 200]", 1, 100_000),
    first_seed: int = seed_option(0, "first seed"),
    steps: Optional[int] = steps_option(),
    guidance: Optional[float] = guidance_option(),
    height: Optional[int] = side_option("image height [default: the model's]"),
    width: Optional[int] = side_option("image width [default: the model's]"),
    batch_size: int = count_option(8, "prompts per UNet batch (the unit a kill can lose)", 1, 4096),
    shard_size: int = count_option(256, "items per shard file", 1, 1_000_000),
    layers: str = typer.Option("all", help="layers to record: all, 4-14, <=32x32 ..."),
    record_steps: Optional[str] = typer.Option(None, help="fraction range of steps to average, e.g. 0:0.5 [all]"),
    self_max_tokens: int = count_option(256, "self maps of larger layers are block-pooled to this many tokens",
                                        1, 1_000_000),
    store_dtype: Optional[str] = typer.Option(None, help="float32, float16 or bfloat16 [cross float32, self float16]"),
    num_shards: Optional[int] = num_shards_option(),
    shard_index: Optional[int] = shard_index_option(),
    device: str = device_option(),
    dtype: str = dtype_option(),
    offload: str = offload_option(),
    allow_pickle: bool = typer.Option(False, help="allow pickle checkpoints"),
    config: Optional[str] = typer.Option(None, help=CONFIG_HELP),
    revision: Optional[str] = typer.Option(None, help=REVISION_HELP),
    quiet: bool = quiet_option(),
):
    """Generate a prompt family and store its attention maps (resumable, shardable)."""
    from ..analysis.collect import CollectOptions, collect
    from ..analysis.protocol import vocabulary
    from ..analysis.specs import build_spec
    from ..attention import StepRange
    from ..diffusion import check_size
    from ..io.outputs import check_writable
    from ..models.loading import process_device

    check_writable(out)
    check_size(height, width)
    if record_steps is not None:
        try:
            StepRange.parse(record_steps)
        except BadInput as err:
            raise BadInput(f"--record-steps: {err.problem}", "e.g. --record-steps 0:0.5") from None
    spec = build_spec(dataset, vocabulary(vocab, not_empty(colors, "--colors"), not_empty(animals, "--animals"),
                                          not_empty(objects, "--objects"), noun), seeds, first_seed)
    loaded = load_model(model, device=process_device(device), dtype=dtype, allow_pickle=allow_pickle,
                        revision=revision, config=config, offload=offload)
    options = CollectOptions(
        steps=loaded.setting("steps", steps, 50), guidance=loaded.setting("guidance", guidance, 7.5),
        height=loaded.setting("height", height), width=loaded.setting("width", width),
        batch_size=batch_size, shard_size=shard_size, layers=layers, record_steps=record_steps,
        self_max_tokens=self_max_tokens, store_dtype=store_dtype)
    summary = collect(loaded.pipe, spec, out, options, model_info=loaded.info, num_shards=num_shards,
                      shard_index=shard_index, progress=not quiet)
    _echo_collect(summary)


def _echo_collect(summary: dict) -> None:
    rate = summary["samples_per_minute"]
    typer.echo(f"{summary['dataset']}: generated {summary['items_generated']}, reused {summary['items_reused']} of "
               f"{summary['items_owned']} items (process {summary['process'][0] + 1}/{summary['process'][1]})"
               + (f", {rate:.1f} samples/min" if rate else "")
               + ("; dataset complete" if summary["complete"] else "; other shards pending")
               + f" -> {summary['out']}")
    for line in summary["skipped_files"]:
        typer.echo(f"regenerated unreadable file {line}", err=True)


@probe_app.command("train")
def train_cmd(
    data: Path = typer.Argument(..., help="training dataset folder"),
    out: Path = typer.Option(..., "--out", "-o", help="results folder (or a .json file)"),
    test: Optional[Path] = typer.Option(None, help="test dataset folder (out-of-distribution protocol)"),
    word: str = typer.Option("target", help="recorded word to probe: target, a, noun"),
    test_word: Optional[str] = typer.Option(None, help="word of the test dataset [default: --word]"),
    layers: str = typer.Option("all", help="layers: all, 1-16, 3,5 ..."),
    probe: list[str] = typer.Option(["authors", "linear"], help="probes: authors, linear (repeat)"),
    control: bool = typer.Option(True, "--control/--no-control", help="also the shuffled-label chance control"),
    all_layers: bool = typer.Option(True, "--all-layers/--no-all-layers", help="also probe all layers together"),
    name: Optional[str] = typer.Option(None, help="experiment name [default: the dataset names]"),
    epochs: int = count_option(30, "training epochs", 1, 100_000),
    batch_size: int = count_option(64, "training batch", 1, 1_000_000),
    lr: float = real_option(1e-3, "Adam learning rate", 1e-12, 10.0),
    test_fraction: float = real_option(0.2, "held-out fraction of each class (in distribution)", 0.01, 0.99),
    seed: int = seed_option(0, "seed of the split, the initialisation and the shuffles"),
    max_features: int = count_option(4096, "larger layer inputs are block-pooled to at most this", 1, 10**8),
    hidden_cap: Optional[int] = count_option(None, "cap on the authors' hidden width [none]", 1, 10**6),
    standardize: bool = typer.Option(True, "--standardize/--no-standardize",
                                     help="z-score features with the training set's statistics"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="check every shard's checksums first"),
):
    """Train per-layer probes on a dataset (stratified split) or across two datasets (OOD)."""
    from ..analysis.datasets import open_dataset
    from ..analysis.probes import ProbeConfig, run_probes
    from ..analysis.report import accuracy_table, markdown_table, write_result
    from ..io.outputs import check_writable
    from ..models.loading import resolve_device

    resolve_device(device)
    if out.suffix != ".json":
        check_writable(out)
    elif out.is_dir():
        raise BadInput(f"--out {out} is a folder, not a .json file", "give a new .json file or a folder name")
    train_ds = open_dataset(data, verify=verify)
    test_ds = open_dataset(test, verify=verify) if test else None
    typer.echo(train_ds.summary() + (f"\ntest: {test_ds.summary()}" if test_ds else ""))
    config = ProbeConfig(epochs=epochs, batch_size=batch_size, lr=lr, test_fraction=test_fraction, seed=seed,
                         max_features=max_features, hidden_cap=hidden_cap, device=device, standardize=standardize)
    result = run_probes(train_ds, test_ds, word=word, test_word=test_word, layers=layers, probes=tuple(probe),
                        control=control, all_layers=all_layers, config=config, experiment=name,
                        log=lambda line: typer.echo(line, err=True))
    path = write_result(result, out)
    header, rows = accuracy_table(result, probe[0])
    typer.echo(result["protocol"])
    typer.echo(markdown_table(header, rows))
    typer.echo(f"wrote {path}")


@probe_app.command("report")
def report_cmd(
    results: list[Path] = typer.Argument(..., help="result files or folders written by 'probe train'"),
    out: Path = typer.Option(..., "--out", "-o", help="report folder"),
    data: list[Path] = typer.Option([], help="dataset folder(s) for mean-map grids (repeat)"),
    word: str = typer.Option("target", help="word of the mean maps"),
    png: bool = typer.Option(True, "--png/--no-png", help="draw heatmaps and mean maps"),
):
    """Write CSV/Markdown tables, heatmaps and mean-map grids; report.md gathers them."""
    from ..analysis.datasets import open_dataset
    from ..analysis.report import load_results, mean_map_entry, write_report

    loaded = [r for path in results for r in load_results(path)]
    datasets = {}
    for folder in data:
        ds = open_dataset(folder)
        key, entry = mean_map_entry(ds, ds.word(word) if ds.kind == "cross" else None)
        datasets[key] = entry
    report = write_report(loaded, out, datasets=datasets, pngs=png)
    typer.echo(f"wrote {report} ({len(loaded)} result(s))")


@probe_app.command("run")
def run_cmd(
    config: Optional[Path] = typer.Argument(None, help="experiment config (.toml or .json)"),
    preset_name: Optional[str] = typer.Option(None, "--preset", help="paper or shapes: the whole protocol"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder [the config's 'out']"),
    seeds: Optional[int] = typer.Option(None, help="override every dataset's seed count (quick runs)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="less output"),
):
    """Collect, train and report every experiment of a config (resumable: rerun after a kill)."""
    from ..analysis.protocol import preset, read_config, run_config

    if (config is None) == (preset_name is None):
        raise BadInput("give either a CONFIG file or --preset", "e.g. freeprompt probe run --preset shapes")
    data = preset(preset_name) if preset_name else read_config(config)
    prefixed_library_logs()
    report = run_config(data, out, seeds, quiet, echo=typer.echo)
    typer.echo(f"wrote {report}")

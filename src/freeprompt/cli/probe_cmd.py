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

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import BadInput, first_line
from .main import app
from .options import CONFIG_HELP, DEFAULT_MODEL, MODEL_HELP, REVISION_HELP

probe_app = typer.Typer(no_args_is_help=True, help="Probing analysis: collect attention maps, train probes, report.")
app.add_typer(probe_app, name="probe")

DEFAULT_EXPERIMENTS = [
    {"name": "cross_color", "train": "color"},
    {"name": "cross_color_ood_objects", "train": "color", "test": "color_object"},
    {"name": "cross_color_ood_complex", "train": "color", "test": "complex"},
    {"name": "cross_animal", "train": "animal"},
    {"name": "nontarget_a", "train": "color", "word": "a"},
    {"name": "nontarget_noun", "train": "color", "word": "noun"},
    {"name": "self_color", "train": "self_color"},
    {"name": "self_animal", "train": "self_animal"},
]


def _vocabulary(vocab: str, colors: Optional[str], animals: Optional[str], objects: Optional[str],
                noun: Optional[str] = None):
    from ..analysis.words import get_vocabulary, read_word_list

    base = get_vocabulary(vocab)
    return base.with_lists(
        colors=read_word_list(colors, "colour") if colors else None,
        animals=read_word_list(animals, "animal") if animals else None,
        objects=read_word_list(objects, "object") if objects else None,
        noun=noun,
    )


def _load(model: str, device: str, dtype: str, allow_pickle: bool = False, revision: Optional[str] = None,
          config: Optional[str] = None):
    from ..analysis.datasets import distributed_position
    from ..models.loading import load_pipeline

    if device == "auto" and distributed_position()[0] > 1:
        import os

        import torch

        if torch.cuda.is_available():  # one GPU per process, as torchrun / accelerate launch number them
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    return load_pipeline(model, device=device, dtype=dtype, allow_pickle=allow_pickle, revision=revision, config=config)


@probe_app.command("collect")
def collect_cmd(
    dataset: str = typer.Argument(..., help="color, color_object, animal, complex, self_color or self_animal"),
    out: Path = typer.Option(..., "--out", "-o", help="dataset folder (created; an existing one is resumed)"),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP),
    vocab: str = typer.Option("paper", help="word lists: paper or shapes"),
    colors: Optional[str] = typer.Option(None, help="colour list: a,b,c or @file (one word per line)"),
    animals: Optional[str] = typer.Option(None, help="animal list: a,b,c or @file"),
    objects: Optional[str] = typer.Option(None, help="object list: a,b,c or @file"),
    noun: Optional[str] = typer.Option(None, help="the noun of 'a <color> <noun>' [default: car; shapes: circle]"),
    seeds: Optional[int] = typer.Option(None, help="seeds per class [default: the experiment's, e.g. 200]"),
    first_seed: int = typer.Option(0, help="first seed"),
    steps: Optional[int] = typer.Option(None, help="denoising steps [default: 50 or the model's]"),
    guidance: Optional[float] = typer.Option(None, help="classifier-free guidance [default: 7.5 or the model's]"),
    height: Optional[int] = typer.Option(None, help="image height [default: the model's]"),
    width: Optional[int] = typer.Option(None, help="image width [default: the model's]"),
    batch_size: int = typer.Option(8, help="prompts per UNet batch (the unit a kill can lose)"),
    shard_size: int = typer.Option(256, help="items per shard file"),
    layers: str = typer.Option("all", help="layers to record: all, 4-14, <=32x32 ..."),
    record_steps: Optional[str] = typer.Option(None, help="fraction range of steps to average, e.g. 0:0.5 [all]"),
    self_max_tokens: int = typer.Option(256, help="self maps of larger layers are block-pooled to this many tokens"),
    store_dtype: Optional[str] = typer.Option(None, help="float32, float16 or bfloat16 [cross float32, self float16]"),
    num_shards: Optional[int] = typer.Option(None, help="processes splitting the work [the launcher's WORLD_SIZE, else 1]"),
    shard_index: Optional[int] = typer.Option(None, help="this process's index [the launcher's RANK, else 0]"),
    device: str = typer.Option("auto", help="auto, cuda, mps or cpu"),
    dtype: str = typer.Option("fp32", help="fp32, fp16 or bf16"),
    allow_pickle: bool = typer.Option(False, help="allow pickle checkpoints"),
    config: Optional[str] = typer.Option(None, help=CONFIG_HELP),
    revision: Optional[str] = typer.Option(None, help=REVISION_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
):
    """Generate a prompt family and store its attention maps (resumable, shardable)."""
    from ..analysis.datasets import CollectOptions, build_spec, collect

    spec = build_spec(dataset, _vocabulary(vocab, colors, animals, objects, noun), seeds, first_seed)
    loaded = _load(model, device, dtype, allow_pickle, revision, config)
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


def _probe_config(epochs, batch_size, lr, test_fraction, seed, max_features, hidden_cap, device):
    from ..analysis.probes import ProbeConfig

    return ProbeConfig(epochs=epochs, batch_size=batch_size, lr=lr, test_fraction=test_fraction, seed=seed,
                       max_features=max_features, hidden_cap=hidden_cap, device=device)


def _write_result(result: dict, out: Path) -> Path:
    from ..analysis.report import _slug
    from ..io.outputs import write_json

    path = out if out.suffix == ".json" else out / f"{_slug(result['experiment'])}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result, indent=1)
    return path


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
    epochs: int = typer.Option(30, help="training epochs"),
    batch_size: int = typer.Option(64, help="training batch"),
    lr: float = typer.Option(1e-3, help="Adam learning rate"),
    test_fraction: float = typer.Option(0.2, help="held-out fraction of each class (in distribution)"),
    seed: int = typer.Option(0, help="seed of the split, the initialisation and the shuffles"),
    max_features: int = typer.Option(4096, help="larger layer inputs are block-pooled to at most this"),
    hidden_cap: Optional[int] = typer.Option(None, help="cap on the authors' hidden width [none]"),
    standardize: bool = typer.Option(True, "--standardize/--no-standardize",
                                     help="z-score features with the training set's statistics"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="check every shard's checksums first"),
):
    """Train per-layer probes on a dataset (stratified split) or across two datasets (OOD)."""
    from ..analysis.datasets import open_dataset
    from ..analysis.probes import run_probes
    from ..analysis.report import accuracy_table, markdown_table

    train_ds = open_dataset(data, verify=verify)
    test_ds = open_dataset(test, verify=verify) if test else None
    typer.echo(train_ds.summary() + (f"\ntest: {test_ds.summary()}" if test_ds else ""))
    config = _probe_config(epochs, batch_size, lr, test_fraction, seed, max_features, hidden_cap, device)
    config.standardize = standardize
    result = run_probes(train_ds, test_ds, word=word, test_word=test_word, layers=layers, probes=tuple(probe),
                        control=control, all_layers=all_layers, config=config, experiment=name,
                        log=lambda line: typer.echo(line, err=True))
    path = _write_result(result, out)
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


# ------------------------------------------------------------------------------------------------ run

def _read_config(path: Path) -> dict:
    if not path.is_file():
        raise BadInput(f"config file {path} does not exist", "give a .toml or .json file")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            return json.loads(text)
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10: the same parser from PyPI
            import tomli as tomllib

        return tomllib.loads(text)
    except (json.JSONDecodeError, ValueError) as err:
        raise BadInput(f"cannot read config {path}: {first_line(err)}", "fix the file's syntax") from None


def preset(name: str) -> dict:
    """The whole protocol over a vocabulary: every dataset, the eight default experiments."""
    if name not in ("paper", "shapes"):
        raise BadInput(f"unknown preset {name!r}", "use paper or shapes")
    return {"model": "shapes" if name == "shapes" else DEFAULT_MODEL,
            "vocabulary": name, "out": f"probe-{name}", "experiments": DEFAULT_EXPERIMENTS}


KNOWN_KEYS = {"model", "vocabulary", "colors", "animals", "objects", "noun", "out", "device", "dtype", "seeds",
              "first_seed", "collect", "probe", "experiments", "allow_pickle"}


def run_config(config: dict, out: Optional[Path] = None, seeds_override: Optional[int] = None, quiet: bool = False,
               echo=print) -> Path:
    """Collect every dataset the experiments need, train them, write the report; returns the report path."""
    from ..analysis.datasets import CollectOptions, build_spec, collect, distributed_position, open_dataset
    from ..analysis.probes import ProbeConfig, run_probes
    from ..analysis.report import mean_map_entry, write_report

    unknown = sorted(set(config) - KNOWN_KEYS)
    if unknown:
        raise BadInput(f"unknown config key(s) {', '.join(unknown)}", f"use {', '.join(sorted(KNOWN_KEYS))}")
    root = Path(out or config.get("out") or "probe")
    vocab = _vocabulary(config.get("vocabulary", "paper"), _joined(config.get("colors")),
                        _joined(config.get("animals")), _joined(config.get("objects")), config.get("noun"))
    experiments = config.get("experiments") or DEFAULT_EXPERIMENTS
    names = []
    for exp in experiments:
        if "name" not in exp or "train" not in exp:
            raise BadInput(f"experiment {exp} needs a name and a train dataset", "write e.g. {name='x', train='color'}")
        for key in ("train", "test"):
            if exp.get(key) and exp[key] not in names:
                names.append(exp[key])
    seeds = config.get("seeds") or {}
    if not isinstance(seeds, (dict, int)) or isinstance(seeds, bool):
        raise BadInput(f"config: seeds must be a number or a table of dataset = number, got {seeds!r}",
                       "write e.g. seeds = 200 or seeds = {color = 200, animal = 100}")
    try:
        options = CollectOptions(**(config.get("collect") or {}))
        probe_config = ProbeConfig(**(config.get("probe") or {}))
    except TypeError as err:
        raise BadInput(f"config: {err}", "see CollectOptions / ProbeConfig for the known keys") from None
    loaded = _load(config.get("model", "shapes"), config.get("device", "auto"), config.get("dtype", "fp32"),
                   bool(config.get("allow_pickle", False)))
    given = config.get("collect") or {}
    for key in ("steps", "guidance", "height", "width"):  # the config's value, else the model's, else the default
        setattr(options, key, loaded.setting(key, given.get(key), getattr(options, key)))
    for name in names:
        count = seeds_override or (seeds if isinstance(seeds, int) else seeds.get(name))
        spec = build_spec(name, vocab, count, int(config.get("first_seed", 0)))
        summary = collect(loaded.pipe, spec, root / "data" / name, options, model_info=loaded.info,
                          progress=not quiet)
        echo(f"{name}: generated {summary['items_generated']}, reused {summary['items_reused']}"
             + (f" ({summary['samples_per_minute']:.1f} samples/min)" if summary["samples_per_minute"] else ""))
    processes, index = distributed_position()
    if processes > 1:
        if index != 0:
            return root / "report" / "report.md"  # process 0 trains and reports once every shard is written
        _wait_for_datasets([root / "data" / name for name in names], echo)  # writes each index once complete
    else:
        for name in names:
            write_index_quiet(root / "data" / name)
    results, mean_map_sets = [], {}
    for exp in experiments:
        train_ds = open_dataset(root / "data" / exp["train"], verify=True)
        test_ds = open_dataset(root / "data" / exp["test"], verify=True) if exp.get("test") else None
        echo(f"{exp['name']}: training probes")
        result = run_probes(train_ds, test_ds, word=exp.get("word", "target"), test_word=exp.get("test_word"),
                            layers=exp.get("layers"), probes=tuple(exp.get("probes", ("authors", "linear"))),
                            control=exp.get("control", True), all_layers=exp.get("all_layers", True),
                            config=probe_config, experiment=exp["name"],
                            log=None if quiet else (lambda line: echo("  " + line)))
        _write_result(result, root / "results")
        results.append(result)
        key, entry = mean_map_entry(train_ds, train_ds.word(exp.get("word", "target")))
        mean_map_sets[key] = entry
    return write_report(results, root / "report", datasets=mean_map_sets)


def _wait_for_datasets(folders: list[Path], echo, poll_s: float = 5.0) -> None:
    """Process 0 of a multi-process run waits until the other processes have written their shards."""
    import time

    from ..analysis.datasets import write_index

    pending = [f for f in folders if not write_index(f, quiet=True)]
    if pending:
        echo(f"waiting for other processes to finish {', '.join(f.name for f in pending)}")
    while pending:
        time.sleep(poll_s)
        pending = [f for f in pending if not write_index(f, quiet=True)]


def write_index_quiet(folder: Path) -> None:
    from ..analysis.datasets import write_index

    write_index(folder, quiet=True)


def _joined(value) -> Optional[str]:
    if value is None:
        return None
    return ",".join(value) if isinstance(value, (list, tuple)) else str(value)


@probe_app.command("run")
def run_cmd(
    config: Optional[Path] = typer.Argument(None, help="experiment config (.toml or .json)"),
    preset_name: Optional[str] = typer.Option(None, "--preset", help="paper or shapes: the whole protocol"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder [the config's 'out']"),
    seeds: Optional[int] = typer.Option(None, help="override every dataset's seed count (quick runs)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="less output"),
):
    """Collect, train and report every experiment of a config (resumable: rerun after a kill)."""
    if (config is None) == (preset_name is None):
        raise BadInput("give either a CONFIG file or --preset", "e.g. freeprompt probe run --preset shapes")
    data = preset(preset_name) if preset_name else _read_config(config)
    report = run_config(data, out, seeds, quiet, echo=typer.echo)
    typer.echo(f"wrote {report}")

"""The whole probing protocol from one config: collect every dataset the experiments need, train their probes,
write the report (``freeprompt probe run``). Rerunning resumes; under a multi-process launcher every process
collects its shards and process 0 trains and reports once all are written.

A config (TOML or JSON) names the model, the word lists, seed counts, ``collect`` options (``CollectOptions``),
``probe`` options (``ProbeConfig``) and the experiments; ``preset("paper")`` / ``preset("shapes")`` give the
ten default experiments (every table of the paper's supplement) over a vocabulary.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import BadInput, first_line
from ..models.loading import load_pipeline, process_device
from ..models.names import PAPER_MODEL
from .collect import CollectOptions, collect, distributed_position
from .datasets import open_dataset, write_index
from .probes import ProbeConfig, run_probes
from .report import mean_map_entry, write_report, write_result
from .specs import build_spec
from .words import Vocabulary, get_vocabulary, read_word_list

DEFAULT_EXPERIMENTS = [  # every table of the paper's supplement (Tables 6-9), in its order
    {"name": "cross_animal", "train": "animal", "table": "6, animals"},
    {"name": "cross_color_object", "train": "color_object", "table": "6, colour + object"},
    {"name": "cross_color", "train": "color", "table": "6, colour + car"},
    {"name": "cross_color_ood_objects", "train": "color", "test": "color_object", "table": "6, car -> object (OOD)"},
    {"name": "nontarget_a", "train": "color", "word": "a", "table": "7, non-target word 'a'"},
    {"name": "nontarget_noun", "train": "color", "word": "noun", "table": "7, non-target word 'car'"},
    {"name": "self_color", "train": "self_color", "table": "8, self-attention, colours"},
    {"name": "self_animal", "train": "self_animal", "table": "8, self-attention, animals"},
    {"name": "cross_complex", "train": "complex", "table": "9 upper, cross-attention, complex templates"},
    {"name": "self_complex", "train": "self_complex", "table": "9 lower, self-attention, complex templates"},
]
KNOWN_KEYS = {"model", "vocabulary", "colors", "animals", "objects", "noun", "out", "device", "dtype", "seeds",
              "first_seed", "collect", "probe", "experiments", "allow_pickle"}
PRESETS = ("paper", "shapes")


def vocabulary(name: str = "paper", colors=None, animals=None, objects=None, noun: str | None = None) -> Vocabulary:
    """A named vocabulary with word lists replaced: each list as ``a,b,c``, ``@file`` or a Python list."""
    lists = {"colors": (colors, "colour"), "animals": (animals, "animal"), "objects": (objects, "object")}
    given = {key: read_word_list(_joined(value), what) if value else None for key, (value, what) in lists.items()}
    return get_vocabulary(name).with_lists(noun=noun, **given)


def read_config(path: Path) -> dict:
    """A protocol config from a .toml or .json file."""
    if not path.is_file():
        raise BadInput(f"config file {path} does not exist", "give a .toml or .json file")
    text = path.read_text(errors="replace")
    try:
        if path.suffix == ".json":
            config = json.loads(text)
        else:
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10: the same parser from PyPI
                import tomli as tomllib

            config = tomllib.loads(text)
    except (json.JSONDecodeError, ValueError) as err:
        raise BadInput(f"cannot read config {path}: {first_line(err)}", "fix the file's syntax") from None
    if isinstance(config, dict) and config.get("preset"):  # a preset with some keys replaced
        config = {**preset(str(config["preset"])), **{k: v for k, v in config.items() if k != "preset"}}
    if not isinstance(config, dict) or not config.get("experiments"):
        raise BadInput(f"config {path} lists no experiments (an empty config would start the whole ~40-minute "
                       "protocol)",
                       "list them under 'experiments', or name a preset (\"preset\": \"shapes\") or use --preset")
    return config


def preset(name: str) -> dict:
    """The whole protocol over a vocabulary: every dataset, the ten default experiments. The shapes world has 7
    objects where the paper has 100, so its colour + object set takes 28 seeds (1960 items, the paper's 2000 is
    10 colours x 100 objects x 2 seeds)."""
    if name not in PRESETS:
        raise BadInput(f"unknown preset {name!r}", f"use {' or '.join(PRESETS)}")
    config = {"model": "shapes" if name == "shapes" else PAPER_MODEL,
              "vocabulary": name, "out": f"probe-{name}", "experiments": DEFAULT_EXPERIMENTS}
    if name == "shapes":
        config["seeds"] = {"color_object": 28}
    return config


def run_config(config: dict, out: Path | None = None, seeds_override: int | None = None, quiet: bool = False,
               echo: Callable[[str], None] = print) -> Path:
    """Collect every dataset the experiments need, train them, write the report; returns the report path."""
    experiments, names, options, probe_config = _checked(config)
    vocab = vocabulary(config.get("vocabulary", "paper"), config.get("colors"), config.get("animals"),
                       config.get("objects"), config.get("noun"))
    root = Path(out or config.get("out") or "probe")
    loaded = load_pipeline(config.get("model", "shapes"), device=process_device(config.get("device", "auto")),
                           dtype=config.get("dtype", "fp32"), allow_pickle=bool(config.get("allow_pickle", False)))
    given = config.get("collect") or {}
    for key in ("steps", "guidance", "height", "width"):  # the config's value, else the model's, else the default
        setattr(options, key, loaded.setting(key, given.get(key), getattr(options, key)))
    _collect_all(loaded, vocab, config, names, root, options, seeds_override, quiet, echo)
    processes, index = distributed_position()
    if processes > 1 and index != 0:
        return root / "report" / "report.md"  # process 0 trains and reports once every shard is written
    wait_for_datasets([root / "data" / name for name in names], echo, poll_s=5.0 if processes > 1 else 0.0)
    results, mean_map_sets = [], {}
    for exp in experiments:
        result, (key, entry) = _train(root, exp, probe_config, quiet, echo)
        results.append(result)
        mean_map_sets[key] = entry
    return write_report(results, root / "report", datasets=mean_map_sets, vocabulary=vocab)


def dataset_names(experiments: list[dict]) -> list[str]:
    """The datasets the experiments train and test on, each once, in order of first use."""
    names = []
    for exp in experiments:
        names += [exp[key] for key in ("train", "test") if exp.get(key) and exp[key] not in names]
    return names


def _checked(config: dict):
    """``(experiments, dataset names in order, CollectOptions, ProbeConfig)`` of a config, or a one-line error."""
    unknown = sorted(set(config) - KNOWN_KEYS)
    if unknown:
        raise BadInput(f"unknown config key(s) {', '.join(unknown)}", f"use {', '.join(sorted(KNOWN_KEYS))}")
    experiments = config.get("experiments") or DEFAULT_EXPERIMENTS
    if not isinstance(experiments, list):
        raise BadInput("config: experiments must be a list of tables", "write e.g. [[experiments]] name = 'x' ...")
    for exp in experiments:
        if not isinstance(exp, dict) or "name" not in exp or "train" not in exp:
            raise BadInput(f"experiment {str(exp)[:80]} needs a name and a train dataset",
                           "write e.g. {name='x', train='color'}")
    names = dataset_names(experiments)
    _check_seeds({} if config.get("seeds") is None else config["seeds"], config.get("first_seed", 0))
    try:
        options = CollectOptions(**(config.get("collect") or {}))
        probe_config = ProbeConfig(**(config.get("probe") or {}))
    except TypeError as err:
        raise BadInput(f"config: {err}", "see CollectOptions / ProbeConfig for the known keys") from None
    return experiments, names, options, probe_config


def _check_seeds(seeds, first_seed) -> None:
    """Seed counts: a whole number above 0, or a table of dataset = such a number; the first seed 0 or more."""
    def whole(value, low: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= low

    counts = list(seeds.values()) if isinstance(seeds, dict) else [seeds]
    if not all(whole(c, 1) for c in counts):
        raise BadInput(f"config: seeds must be a whole number above 0 or a table of dataset = number, got {seeds!r}",
                       "write e.g. seeds = 200 or seeds = {color = 200, animal = 100}")
    if not whole(first_seed, 0):
        raise BadInput(f"config: first_seed must be a whole number, 0 or more, got {first_seed!r}",
                       "write e.g. first_seed = 0")


def _collect_all(loaded, vocab: Vocabulary, config: dict, names: list[str], root: Path, options: CollectOptions,
                 seeds_override, quiet: bool, echo) -> None:
    seeds = config.get("seeds") or {}
    for name in names:
        count = seeds_override or (seeds if isinstance(seeds, int) else seeds.get(name))
        spec = build_spec(name, vocab, count, int(config.get("first_seed", 0)))
        summary = collect(loaded.pipe, spec, root / "data" / name, options, model_info=loaded.info,
                          progress=not quiet)
        echo(f"{name}: generated {summary['items_generated']}, reused {summary['items_reused']}"
             + (f" ({summary['samples_per_minute']:.1f} samples/min)" if summary["samples_per_minute"] else ""))


def _train(root: Path, exp: dict, probe_config: ProbeConfig, quiet: bool, echo):
    """Train one experiment's probes and write its result; returns it and its mean-map entry."""
    train_ds = open_dataset(root / "data" / exp["train"], verify=True)
    test_ds = open_dataset(root / "data" / exp["test"], verify=True) if exp.get("test") else None
    echo(f"{exp['name']}: training probes")
    result = run_probes(train_ds, test_ds, word=exp.get("word", "target"), test_word=exp.get("test_word"),
                        layers=exp.get("layers"), probes=tuple(exp.get("probes", ("authors", "linear"))),
                        control=exp.get("control", True), all_layers=exp.get("all_layers", True),
                        config=probe_config, experiment=exp["name"],
                        log=None if quiet else (lambda line: echo("  " + line)))
    result["table"] = exp.get("table")
    write_result(result, root / "results")
    return result, mean_map_entry(train_ds, train_ds.word(exp.get("word", "target")))


def wait_for_datasets(folders: list[Path], echo: Callable[[str], None], poll_s: float = 5.0) -> None:
    """Write each dataset's index once it is complete; with ``poll_s > 0`` (process 0 of a multi-process run)
    wait until the other processes have written their shards."""
    pending = [f for f in folders if not write_index(f, quiet=True)]
    if not pending or poll_s <= 0:
        return
    echo(f"waiting for other processes to finish {', '.join(f.name for f in pending)}")
    while pending:
        time.sleep(poll_s)
        pending = [f for f in pending if not write_index(f, quiet=True)]


def _joined(value) -> str | None:
    if value is None:
        return None
    return ",".join(value) if isinstance(value, (list, tuple)) else str(value)


__all__ = ["DEFAULT_EXPERIMENTS", "KNOWN_KEYS", "PRESETS", "dataset_names", "preset", "read_config", "run_config",
           "vocabulary", "wait_for_datasets"]

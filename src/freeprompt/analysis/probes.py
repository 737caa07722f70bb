"""Probes: can a small classifier tell the class (colour, animal) from one layer's attention maps?

- ``authors``: the paper authors' classifier, ``Flatten -> Dropout(0.1) -> Linear(in, max(in // 8, 2048)) -> Tanh
  -> Linear(hidden, classes)``.
- ``linear``: ``Flatten -> Linear(in, classes)``, a control for how much the hidden layer adds.
- chance control: the authors' classifier trained on *shuffled* training labels (seeded) and tested on the true
  labels; it should stay near 1/classes, and shows how much a probe can fit noise.

Each layer is probed on its own, and "all layers" on the concatenation of every layer's features.

Protocols. In distribution: a stratified split of one dataset, ``test_fraction`` of every class held out,
chosen by a seeded permutation (the result states it). Out of distribution: train on every item of one dataset
and test on every item of another with the same class names (e.g. train on "a <color> car", test on
"a <color> <object>"); both must come from the same layer layout.

Hyper-parameters (``ProbeConfig``, all explicit and written into every result): Adam (lr 1e-3, no weight
decay), 30 epochs, batch 64, cross-entropy; features standardised with the training set's per-feature mean and
standard deviation (attention probabilities are small numbers; standardising lets one learning rate serve
every layer); inputs with more than ``max_features`` features are block-pooled first (cross maps: mean over
blocks of the grid; self maps: mean over query blocks and sum over key blocks, as the recorder pools): the
authors' classifier on a full 256x256 self map would have a 65536 x 8192 first layer (537 M weights).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..attention import LayerSpec
from ..attention.recorder import pool_factors, pooled_grid
from ..errors import BadInput
from .datasets import check_same_layout

PROBES = ("authors", "linear")


@dataclass
class ProbeConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    dropout: float = 0.1
    hidden_min: int = 2048  # hidden = max(in // hidden_div, hidden_min), the authors' rule
    hidden_div: int = 8
    hidden_cap: int | None = None  # optional upper bound on the hidden width (None: the authors' rule as is)
    standardize: bool = True
    max_features: int = 4096
    test_fraction: float = 0.2
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        if not 0.0 < self.test_fraction < 1.0:
            raise BadInput(f"test fraction {self.test_fraction} is not between 0 and 1", "use e.g. 0.2")
        if self.epochs < 1 or self.batch_size < 1:
            raise BadInput("epochs and batch size must be at least 1", "use e.g. --epochs 30 --batch-size 64")

    def hidden(self, in_features: int) -> int:
        width = max(in_features // self.hidden_div, self.hidden_min)
        return min(width, self.hidden_cap) if self.hidden_cap else width


def authors_classifier(in_features: int, num_classes: int, hidden: int, dropout: float = 0.1) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_features, hidden), nn.Tanh(),
                         nn.Linear(hidden, num_classes))


def linear_classifier(in_features: int, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, num_classes))


def build_probe(kind: str, in_features: int, num_classes: int, config: ProbeConfig) -> nn.Module:
    if kind == "authors":
        return authors_classifier(in_features, num_classes, config.hidden(in_features), config.dropout)
    if kind == "linear":
        return linear_classifier(in_features, num_classes)
    raise BadInput(f"unknown probe {kind!r}", f"use one of {', '.join(PROBES)}")


# ------------------------------------------------------------------------------------------- features

def layer_features(maps: torch.Tensor, kind: str, grid: tuple[int, int] | None, max_features: int) -> torch.Tensor:
    """(items, features) from (items, h, w) cross maps or (items, n, n) self maps on a ``grid`` of n cells,
    block-pooled when there are more than ``max_features`` features."""
    n = maps.shape[0]
    if maps[0].numel() <= max_features:
        return maps.reshape(n, -1)
    if kind == "cross":
        h, w = maps.shape[1:]
        fh, fw = pool_factors((h, w), max_features)
        return maps.reshape(n, h // fh, fh, w // fw, fw).mean(dim=(2, 4)).reshape(n, -1)
    if grid is None:
        side = math.isqrt(maps.shape[1])
        grid = (side, maps.shape[1] // side)
    gh, gw = grid
    fh, fw = pool_factors((gh, gw), max(1, math.isqrt(max_features)))
    ph, pw = gh // fh, gw // fw
    x = maps.reshape(n, ph, fh, pw, fw, ph, fh, pw, fw).mean(dim=(2, 4)).sum(dim=(4, 6))
    return x.reshape(n, -1)


def stratified_split(y: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test indices: in every class, a seeded permutation, the first round(n_c * fraction) held out
    (at least one item per class on each side when the class has two or more)."""
    g = torch.Generator().manual_seed(int(seed))
    train, test = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(len(idx) * test_fraction))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        test.append(idx[:k])
        train.append(idx[k:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(test)).values


# ------------------------------------------------------------------------------------------- training

def fit_and_score(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                  classes: list[str], probe: str = "authors", config: ProbeConfig | None = None,
                  shuffle_labels: bool = False) -> dict:
    """Train one probe and score it: overall accuracy, per-class accuracy (recall), train accuracy."""
    config = config or ProbeConfig()
    device = torch.device(config.device)
    x_train, x_test = x_train.reshape(len(x_train), -1).float(), x_test.reshape(len(x_test), -1).float()
    if config.standardize:
        mean = x_train.mean(0, keepdim=True)
        std = x_train.std(0, keepdim=True) if len(x_train) > 1 else torch.ones_like(mean)
        std = torch.where(std > 1e-12, std, torch.ones_like(std))
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    labels = y_train.clone()
    g = torch.Generator().manual_seed(int(config.seed))
    if shuffle_labels:
        labels = labels[torch.randperm(len(labels), generator=g)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config.seed))
        model = build_probe(probe, x_train.shape[1], len(classes), config).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        loss_fn = nn.CrossEntropyLoss()
        xt, yt = x_train.to(device), labels.to(device)
        start = time.perf_counter()
        model.train()
        for _ in range(config.epochs):
            order = torch.randperm(len(xt), generator=g).to(device)
            for b0 in range(0, len(xt), config.batch_size):
                idx = order[b0:b0 + config.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
        seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            train_pred = _predict(model, xt, config.batch_size * 8)
            pred = _predict(model, x_test.to(device), config.batch_size * 8).cpu()
    per_class = {}
    for c, name in enumerate(classes):
        mask = y_test == c
        if mask.any():
            per_class[name] = float((pred[mask] == c).float().mean())
    return {"accuracy": float((pred == y_test).float().mean()) if len(y_test) else float("nan"),
            "per_class": per_class, "train_accuracy": float((train_pred.cpu() == labels).float().mean()),
            "n_train": len(x_train), "n_test": len(x_test), "features": int(x_train.shape[1]),
            "parameters": sum(p.numel() for p in model.parameters()), "seconds": round(seconds, 3)}


def _predict(model, x, chunk):
    return torch.cat([model(x[i:i + chunk]).argmax(-1) for i in range(0, len(x), chunk)]) if len(x) else \
        torch.zeros(0, dtype=torch.long)


# ------------------------------------------------------------------------------------------- protocols

def _pooled_self_grid(ds, row) -> tuple[int, int] | None:
    if ds.kind != "self" or not row.get("grid"):
        return None
    return pooled_grid(tuple(row["grid"]), int(ds.meta.get("collect", {}).get("self_max_tokens", 256)))


def _class_map(train_classes: list[str], test_classes: list[str], train_name: str, test_name: str) -> list[int]:
    missing = [c for c in test_classes if c not in train_classes]
    if missing:
        raise BadInput(f"test dataset {test_name!r} has classes {', '.join(missing)} that {train_name!r} lacks",
                       "test on a dataset with the same classes (e.g. the same colour list)")
    return [train_classes.index(c) for c in test_classes]


def run_probes(
    train,
    test=None,
    *,
    word: str | None = "target",
    test_word: str | None = None,
    layers: str | list | None = None,
    probes: tuple[str, ...] = PROBES,
    control: bool = True,
    all_layers: bool = True,
    config: ProbeConfig | None = None,
    experiment: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Probe every chosen layer of ``train`` (and all layers together). ``test=None``: a stratified split of
    ``train``; otherwise train on all of ``train`` and test on all of ``test`` (out of distribution). Returns
    the result dictionary that ``report`` turns into tables."""
    config = config or ProbeConfig()
    for p in probes:
        if p not in PROBES:
            raise BadInput(f"unknown probe {p!r}", f"use one of {', '.join(PROBES)}")
    if test is not None and hasattr(train, "root") and hasattr(test, "root") and train.root is not None:
        check_same_layout(train, test)
    rows = _chosen_layers(train, layers)
    if test is not None:
        for row in rows:
            test.layer(row["name"])  # a one-line error before any training when the test set lacks a layer
    classes = list(train.classes)
    train_idx, test_idx, y_train, y_test, protocol = _split(train, test, config)
    variants = list(probes) + (["authors_shuffled"] if control else [])
    results: dict[str, dict] = {v: {} for v in variants}
    collected_train, collected_test = [], []
    for row in rows:
        key = str(row["index"])
        xtr, xte = _features(train, test, row, word, test_word or word, config, train_idx, test_idx)
        if all_layers and len(rows) > 1:
            collected_train.append(xtr)
            collected_test.append(xte)
        _fit_variants(results, key, xtr, y_train, xte, y_test, classes, variants, config, log,
                      f"layer {row['index']}")
    if all_layers and len(rows) > 1:
        xtr, xte = torch.cat(collected_train, 1), torch.cat(collected_test, 1)
        _fit_variants(results, "all", xtr, y_train, xte, y_test, classes, variants, config, log, "all layers")
    return {
        "experiment": experiment or (train.name if test is None else f"{train.name}->{test.name}"),
        "kind": train.kind,
        "train": {"name": train.name, "path": str(train.root) if train.root else None, "word": word,
                  "model": train.meta.get("model"), "family": train.meta.get("family"),
                  "vocabulary": getattr(getattr(train, "spec", None), "vocabulary", None)},
        "test": None if test is None else {"name": test.name, "path": str(test.root) if test.root else None,
                                           "word": test_word or word},
        "protocol": protocol,
        "classes": classes,
        "layers": [{"index": r["index"], "name": r["name"], "shape": r.get("shape")} for r in rows],
        "config": asdict(config),
        "probes": variants,
        "results": results,
        "skipped_shards": list(getattr(train, "skipped", [])) + (list(getattr(test, "skipped", [])) if test else []),
    }


def _split(train, test, config: ProbeConfig):
    """``(train indices, test indices, train labels, test labels, protocol)``: a stratified split of ``train``
    (in distribution), or all of ``train`` against all of ``test`` (out of distribution; indices None)."""
    if test is None:
        train_idx, test_idx = stratified_split(train.y, config.test_fraction, config.seed)
        protocol = (f"in-distribution: stratified split of {train.name!r}, {config.test_fraction:.0%} of each class "
                    f"held out for testing, seed {config.seed} ({len(train_idx)} train / {len(test_idx)} test)")
        return train_idx, test_idx, train.y[train_idx], train.y[test_idx], protocol
    mapping = _class_map(list(train.classes), list(test.classes), train.name, test.name)
    y_test = torch.tensor([mapping[c] for c in test.y.tolist()], dtype=torch.long)
    protocol = (f"out-of-distribution: train on all {len(train.y)} items of {train.name!r}, test on all "
                f"{len(y_test)} items of {test.name!r}")
    return None, None, train.y, y_test, protocol


def _chosen_layers(ds, layers) -> list[dict]:
    """The dataset's recorded layers that ``layers`` (a ``LayerSpec`` spelling or indices) selects."""
    if layers is None or (isinstance(layers, str) and not layers.strip()):
        return list(ds.layers)
    spec = LayerSpec.parse(layers)
    if spec.indices is not None:
        return [ds.layer(i) for i in sorted(spec.indices)]  # a one-line error for a layer the dataset lacks
    return [row for row in ds.layers if spec.chooses(row["index"], _tokens(row))]


def _tokens(row: dict) -> int | None:
    grid = row.get("grid")
    return grid[0] * grid[1] if grid else None


def _features(train, test, row, word, test_word, config, train_idx, test_idx):
    grid = _pooled_self_grid(train, row)
    x = layer_features(train.load(row["name"], word), train.kind, grid, config.max_features)
    if test is None:
        return x[train_idx], x[test_idx]
    trow = test.layer(row["name"])
    xt = layer_features(test.load(trow["name"], test_word), test.kind, _pooled_self_grid(test, trow),
                        config.max_features)
    return x, xt


def _fit_variants(results, key, xtr, ytr, xte, yte, classes, variants, config, log, what):
    for variant in variants:
        probe = variant.removesuffix("_shuffled")
        out = fit_and_score(xtr, ytr, xte, yte, classes, probe, config, shuffle_labels=variant.endswith("_shuffled"))
        results[variant][key] = out
        if log:
            log(f"{what:>12} {variant:>17}: accuracy {out['accuracy']:.3f} (train {out['train_accuracy']:.3f}, "
                f"{out['features']} features, {out['seconds']:.1f} s)")


__all__ = ["PROBES", "ProbeConfig", "authors_classifier", "build_probe", "fit_and_score", "layer_features",
           "linear_classifier", "run_probes", "stratified_split"]

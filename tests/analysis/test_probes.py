"""Probes on synthetic data, where the answer is known, and the report files they produce.

Bounds: separable data must reach > 0.9 test accuracy; on features independent of the labels (and with shuffled
training labels) the test accuracy must stay inside 1/classes +- 4 binomial standard deviations of the test set
(4 classes, 120 test items: [0.09, 0.41]). Everything is seeded, so these are deterministic checks."""

import csv
import math

import pytest
import torch

from freeprompt.analysis.probes import (
    ProbeConfig,
    authors_classifier,
    fit_and_score,
    layer_features,
    run_probes,
    stratified_split,
)
from freeprompt.analysis.report import accuracy_table, write_report
from freeprompt.errors import BadInput

CLASSES = ["red", "blue", "green", "yellow"]
FAST = ProbeConfig(epochs=15, batch_size=64, seed=0)


def synthetic(n_per_class=150, separable=True, seed=0, side=8):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(len(CLASSES)).repeat_interleave(n_per_class)
    y = y[torch.randperm(len(y), generator=g)]
    noise = torch.randn(len(y), side, side, generator=g)
    if not separable:
        return noise, y
    means = torch.randn(len(CLASSES), side, side, generator=torch.Generator().manual_seed(123))
    return means[y] + 0.7 * noise, y


class ArrayDataset:
    """An in-memory stand-in for ``freeprompt.analysis.datasets.ProbeDataset`` (what ``run_probes`` reads), for
    synthetic data: ``maps`` maps a 1-based layer index to an (items, h, w) or (items, n, n) tensor."""

    def __init__(self, name: str, maps: dict[int, torch.Tensor], y: torch.Tensor, classes: list[str],
                 kind: str = "cross", word: str = "target"):
        self.name, self.kind, self.classes, self.y = name, kind, list(classes), torch.as_tensor(y).long()
        self._maps, self._word = dict(maps), word
        self.meta = {"model": {"id": "synthetic"}, "words": [word], "latent_hw": None}
        self.layers_ = [{"name": f"layer{i}", "index": i, "shape": list(t.shape[1:]), "grid": None}
                        for i, t in sorted(self._maps.items())]
        self.root = None
        self.skipped: list[str] = []

    @property
    def layers(self) -> list[dict]:
        return self.layers_

    @property
    def words(self) -> list[str]:
        return [self._word]

    def layer(self, ref) -> dict:
        for row in self.layers_:
            if str(ref) in (str(row["index"]), row["name"]):
                return row
        raise BadInput(f"dataset {self.name!r} has no layer {ref}", "ask for one of its layers")

    def load(self, layer, word=None, dtype=torch.float32) -> torch.Tensor:
        return self._maps[self.layer(layer)["index"]].to(dtype)


def chance_bounds(num_classes: int, n_test: int, sigmas: float = 4.0) -> tuple[float, float]:
    """Accuracy interval of a chance-level classifier: 1/classes +- ``sigmas`` binomial standard deviations."""
    p = 1.0 / num_classes
    sd = math.sqrt(p * (1 - p) / max(1, n_test))
    return max(0.0, p - sigmas * sd), min(1.0, p + sigmas * sd)


def test_authors_classifier_shape_follows_the_rule():
    model = authors_classifier(4096, 10, ProbeConfig().hidden(4096))
    assert [type(m).__name__ for m in model] == ["Flatten", "Dropout", "Linear", "Tanh", "Linear"]
    assert model[2].out_features == 2048 and model[1].p == 0.1
    assert ProbeConfig().hidden(65536) == 8192 and ProbeConfig(hidden_cap=1024).hidden(65536) == 1024


def test_stratified_split_is_seeded_balanced_and_disjoint():
    y = torch.arange(4).repeat_interleave(50)
    a = stratified_split(y, 0.2, seed=3)
    b = stratified_split(y, 0.2, seed=3)
    c = stratified_split(y, 0.2, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a, b)) and not torch.equal(a[1], c[1])
    train, test = a
    assert len(set(train.tolist()) & set(test.tolist())) == 0 and len(train) + len(test) == 200
    assert torch.bincount(y[test]).tolist() == [10, 10, 10, 10]


@pytest.mark.parametrize("probe", ["authors", "linear"])
def test_probe_separates_separable_data_and_not_noise(probe):
    x, y = synthetic()
    tr, te = stratified_split(y, 0.2, 0)
    good = fit_and_score(x[tr], y[tr], x[te], y[te], CLASSES, probe, FAST)
    assert good["accuracy"] > 0.9, good
    assert set(good["per_class"]) == set(CLASSES) and min(good["per_class"].values()) > 0.8
    lo, hi = chance_bounds(len(CLASSES), len(te))
    assert (round(lo, 2), round(hi, 2)) == (0.09, 0.41)
    shuffled = fit_and_score(x[tr], y[tr], x[te], y[te], CLASSES, probe, FAST, shuffle_labels=True)
    assert lo <= shuffled["accuracy"] <= hi, shuffled
    xn, yn = synthetic(separable=False, seed=1)
    noise = fit_and_score(xn[tr], yn[tr], xn[te], yn[te], CLASSES, probe, FAST)
    assert lo <= noise["accuracy"] <= hi, noise


def test_layer_features_pool_large_maps():
    x = torch.rand(3, 8, 8)
    pooled = layer_features(x, "cross", None, 16)
    assert torch.allclose(pooled, x.reshape(3, 4, 2, 4, 2).mean(dim=(2, 4)).reshape(3, 16))
    assert layer_features(x, "cross", None, 64).shape == (3, 64)
    s = torch.rand(2, 64, 64).softmax(-1)  # self map on an 8x8 grid
    f = layer_features(s, "self", (8, 8), 64)  # 2x2 pooled cells -> 16 features; rows still sum to 1
    assert f.shape == (2, 16) and torch.allclose(f.reshape(2, 4, 4).sum(-1), torch.ones(2, 4))


def test_run_probes_in_distribution_ood_and_report(tmp_path):
    x, y = synthetic(n_per_class=60)
    xn, _ = synthetic(n_per_class=60, separable=False, seed=5)
    train = ArrayDataset("syn", {1: x, 2: xn}, y, CLASSES)
    result = run_probes(train, config=FAST, experiment="syn")
    assert "stratified split" in result["protocol"] and "seed 0" in result["protocol"]
    res = result["results"]
    assert set(res) == {"authors", "linear", "authors_shuffled"} and set(res["authors"]) == {"1", "2", "all"}
    assert res["authors"]["1"]["accuracy"] > 0.9 and res["linear"]["1"]["accuracy"] > 0.9
    assert res["authors"]["2"]["accuracy"] < 0.5 and res["authors_shuffled"]["1"]["accuracy"] < 0.5
    assert res["authors"]["all"]["accuracy"] > 0.9

    # out of distribution: another draw of the same classes (and classes in another order)
    x2, y2 = synthetic(n_per_class=30, seed=9)
    order = [3, 2, 1, 0]
    test = ArrayDataset("syn2", {1: x2, 2: x2}, torch.tensor([order[int(c)] for c in y2]), CLASSES[::-1])
    ood = run_probes(train, test, layers="1", probes=("linear",), control=False, config=FAST)
    assert ood["results"]["linear"]["1"]["accuracy"] > 0.9 and "out-of-distribution" in ood["protocol"]
    with pytest.raises(BadInput):
        run_probes(train, ArrayDataset("other", {1: x2}, y2, ["a", "b", "c", "d"]), config=FAST)
    with pytest.raises(BadInput) as err:
        run_probes(train, layers="3", config=FAST)
    assert "layer 3" in str(err.value)

    header, rows = accuracy_table(result, "authors")
    assert header == ["Class", "Layer 1", "Layer 2", "Avg.", "All"]
    assert [r[0] for r in rows] == CLASSES + ["Avg."]
    report = write_report([result, ood], tmp_path, datasets={"syn.target": (train, "target")})
    for probe in ("authors", "linear", "authors_shuffled"):
        with open(tmp_path / f"syn.{probe}.csv") as f:
            table = list(csv.reader(f))
        assert table[0] == header and [r[0] for r in table[1:]] == CLASSES + ["Avg."]
        assert (tmp_path / f"syn.{probe}.png").stat().st_size > 1000
        assert "| Class | Layer 1 | Layer 2 | Avg. | All |" in (tmp_path / f"syn.{probe}.md").read_text()
    assert (tmp_path / "syn-_syn2.linear.md").exists()  # experiment "syn->syn2"
    assert (tmp_path / "mean_maps.syn.target.png").stat().st_size > 1000
    text = report.read_text()
    assert "out-of-distribution" in text and "Hyper-parameters" in text

"""The paper's probing setup: its printed word lists, every table of its supplement in the preset, and its
printed Tables 8 and 9 beside a run's table. The printed lists and tables are read from ../shared/data/paper (the
paper's facts typed out) and compared with what the package uses."""

import csv
import json
import math
import os
from dataclasses import asdict

import pytest

from freeprompt.analysis.paper import PAPER_TABLES, comparison_rows, paper_table
from freeprompt.analysis.probes import ProbeConfig
from freeprompt.analysis.protocol import DEFAULT_EXPERIMENTS, preset, read_config
from freeprompt.analysis.report import accuracy_table, write_report, write_table
from freeprompt.analysis.specs import build_spec
from freeprompt.analysis.words import PAPER, get_vocabulary
from freeprompt.errors import BadInput


def printed(shared_dir):
    with open(os.path.join(shared_dir, "data", "paper", "vocabulary.json")) as f:
        return json.load(f)["probing"]


def read_paper_csv(shared_dir, name):
    with open(os.path.join(shared_dir, "data", "paper", f"{name}.csv")) as f:
        rows = list(csv.reader(line for line in f if not line.startswith("#")))
    return rows[0], {row[0]: [float(v) for v in row[1:]] for row in rows[1:]}


def test_paper_vocabulary_uses_the_printed_lists_first(shared_dir):
    lists = printed(shared_dir)
    assert list(PAPER.colors) == lists["colors"]["items"] and lists["colors"]["complete"]
    assert list(PAPER.animals) == lists["animals"]["items"] and lists["animals"]["complete"]
    objects = lists["objects"]["items"]
    assert list(PAPER.objects[:len(objects)]) == objects
    assert len(PAPER.objects) == lists["objects"]["total_in_paper"] == len(set(PAPER.objects))
    templates = [t.replace("{}", "{color}").replace(" car", " {noun}")
                 for t in lists["complex_templates"]["items"] + lists["complex_templates"]["also_named_in_text"]]
    assert list(PAPER.complex_templates[:len(templates)]) == templates
    assert len(PAPER.complex_templates) == lists["complex_templates"]["total_in_paper"]
    assert PAPER.printed == {"colors": 10, "animals": 10, "objects": len(objects), "complex_templates": 7}
    lines = PAPER.provenance()
    assert f"objects: the first {len(objects)} of 100 as printed in the paper, the other {100 - len(objects)} " \
           "completed by freeprompt" in lines
    assert PAPER.with_lists(objects=["cup", "hat"]).printed.get("objects") is None  # replaced lists are not the paper's


def test_paper_tables_equal_the_printed_csv(shared_dir):
    files = {("self_color", None, "target"): "table8_self_color",
             ("self_animal", None, "target"): "table8_self_animal",
             ("complex", None, "target"): "table9_cross_complex",
             ("self_complex", None, "target"): "table9_self_complex"}
    assert set(PAPER_TABLES) == set(files)
    for key, name in files.items():
        header, rows = read_paper_csv(shared_dir, name)
        assert header == ["Class"] + [f"Layer {i}" for i in range(1, 17)] + ["Avg."]
        ours = {cls: [float(v) for v in values.split()] for cls, values in PAPER_TABLES[key][1].items()}
        assert ours == rows


def test_every_supplement_table_has_its_experiment():
    by_name = {e["name"]: e for e in DEFAULT_EXPERIMENTS}
    assert {e["table"].split(",")[0] for e in DEFAULT_EXPERIMENTS} == {"6", "7", "8", "9 upper", "9 lower"}
    assert by_name["cross_complex"]["train"] == "complex" and "test" not in by_name["cross_complex"]
    assert by_name["self_complex"]["train"] == "self_complex"
    assert by_name["cross_color_object"]["train"] == "color_object" and "test" not in by_name["cross_color_object"]
    assert by_name["cross_color_ood_objects"]["test"] == "color_object"
    assert {by_name["nontarget_a"]["word"], by_name["nontarget_noun"]["word"]} == {"a", "noun"}
    spec = build_spec("self_complex", "paper")
    items = spec.items()
    assert spec.kind == "self" and len(items) == 10 * 12 * 20
    assert {it.template for it in items} == set(PAPER.complex_templates)
    assert items[0].prompt == "a photo of a red car and a dog"
    shapes = build_spec("color_object", get_vocabulary("shapes"), preset("shapes")["seeds"]["color_object"])
    assert len(shapes.items()) == 10 * 7 * 28  # close to the paper's 2000


def test_a_config_may_name_a_preset(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"preset": "shapes", "collect": {"steps": 4}}))
    config = read_config(path)
    assert config["experiments"] == DEFAULT_EXPERIMENTS and config["collect"] == {"steps": 4}
    assert config["vocabulary"] == "shapes" and config["seeds"] == {"color_object": 28}
    path.write_text(json.dumps({"preset": "nope"}))
    with pytest.raises(BadInput, match="unknown preset"):
        read_config(path)


def fake_result(train_name="self_color", family="sd1", vocabulary="paper", layers=16):
    """A probing result with known per-class accuracies: class c, layer l -> (c + l) / 100."""
    classes = list(PAPER.colors)
    per_layer = {str(i): {"accuracy": 0.5, "per_class": {c: (k + i) / 100 for k, c in enumerate(classes)}}
                 for i in range(1, layers + 1)}
    return {"experiment": train_name, "kind": "self", "table": "8, self-attention, colours",
            "train": {"name": train_name, "word": "target", "family": family, "vocabulary": vocabulary},
            "test": None, "protocol": "in-distribution", "classes": classes,
            "layers": [{"index": i, "name": f"l{i}"} for i in range(1, layers + 1)],
            "config": asdict(ProbeConfig()), "probes": ["authors"], "results": {"authors": per_layer}}


def test_tables_are_fractions_with_the_paper_beside_them(tmp_path):
    result = fake_result()
    header, rows = accuracy_table(result)
    assert header[1] == "Layer 1" and header[16] == "Layer 16" and header[17] == "Avg."
    assert rows[0][0] == "red" and rows[0][1] == pytest.approx(0.01)  # red is class 0: layer 1 -> 0.01
    paths = write_table(result, tmp_path)
    text = paths["md"].read_text()
    assert "| 0.01 | 0.02 |" in text and "Beside the paper's Table 8 (self-attention, colours)" in text
    with open(paths["paper_csv"]) as f:
        table = list(csv.reader(f))
    assert table[0] == header[:18]
    paper = PAPER_TABLES[("self_color", None, "target")][1]
    for ours, theirs, diff in zip(table[1::3], table[2::3], table[3::3]):
        cls = ours[0]
        assert theirs[0] == f"{cls}, paper" and diff[0] == f"{cls}, difference"
        expected = [float(v) for v in paper[cls].split()]
        assert [float(v) for v in theirs[1:]] == expected
        for a, b, d in zip(ours[1:], theirs[1:], diff[1:]):
            assert float(d) == pytest.approx(float(a) - float(b), abs=0.011)  # each printed to two decimals
    assert len(table) == 1 + 3 * 10


@pytest.mark.parametrize("change", [{"family": "other"}, {"vocabulary": "shapes"}, {"layers": 15},
                                    {"train_name": "color"}])
def test_no_paper_rows_where_the_run_is_not_comparable(tmp_path, change):
    result = fake_result(**change)
    assert paper_table(result) is None
    assert "paper_csv" not in write_table(result, tmp_path, heatmap_png=False)


def test_comparison_skips_classes_the_paper_lacks():
    header = ["Class"] + [f"Layer {i}" for i in range(1, 17)] + ["Avg."]
    rows = [["cyan"] + [0.5] * 17, ["red"] + [0.5] * 16 + [math.nan]]
    out = comparison_rows(header, rows, {"red": [0.25] * 17})
    assert [r[0] for r in out] == ["red", "red, paper", "red, difference"]
    assert out[2][1] == 0.25 and math.isnan(out[2][17])


def test_report_names_the_paper_and_project_words(tmp_path):
    report = write_report([fake_result()], tmp_path, pngs=False, vocabulary=PAPER).read_text()
    assert "the first 35 of 100 as printed in the paper" in report
    assert "(the paper's Table 8, self-attention, colours)" in report


def test_summary_gives_mean_best_and_all_layers():
    from freeprompt.analysis.report import summary_table

    result = fake_result(layers=4)
    for i, acc in zip(range(1, 5), (0.1, 0.2, 0.3, 0.8)):
        result["results"]["authors"][str(i)]["accuracy"] = acc
    result["results"]["authors"]["all"] = {"accuracy": 0.9, "per_class": {}}
    result["protocol"] = "in-distribution: stratified split of 'x', 20% of each class held out (80 train / 20 test)"
    lines = summary_table([result]).splitlines()
    assert lines[0] == "| experiment | paper's table | train / test items | authors: mean / best / all |"
    assert lines[2] == "| self_color | 8, self-attention, colours | 80 / 20 | 0.35 / 0.80 / 0.90 |"
    result["protocol"] = "out-of-distribution: train on all 2000 items of 'color', test on all 140 items of 'x'"
    assert "| 2000 / 140 (OOD) |" in summary_table([result])

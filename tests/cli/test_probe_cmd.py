"""``freeprompt probe`` end to end on the tiny random pipeline saved to disk: collect -> train -> report, and the
whole protocol from one config (``probe run``), rerun reusing everything."""

import json
import os
import warnings

import pytest

from freeprompt.analysis.datasets import open_dataset
from freeprompt.errors import BadInput


def test_cli_collect_train_report(tiny_pipe, tmp_path):
    from typer.testing import CliRunner

    from freeprompt.cli.main import app

    model = tmp_path / "model"
    tiny_pipe.save_pretrained(str(model))
    runner = CliRunner()
    common = ["--model", str(model), "--vocab", "shapes", "--colors", "red,blue", "--seeds", "3", "--steps", "2",
              "--batch-size", "3", "--device", "cpu", "-q"]
    r = runner.invoke(app, ["probe", "collect", "color", "--out", str(tmp_path / "color"), *common])
    assert r.exit_code == 0, r.output
    assert "generated 6" in r.output and "complete" in r.output
    r = runner.invoke(app, ["probe", "collect", "color_object", "--out", str(tmp_path / "obj"), *common,
                            "--objects", "square,star"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["probe", "train", str(tmp_path / "color"), "--out", str(tmp_path / "res"),
                            "--epochs", "2", "--layers", "1-3", "--word", "a"])
    assert r.exit_code == 0, r.output
    assert "| Class | Layer 1 | Layer 2 | Layer 3 | Avg. | All |" in r.output and "seed 0" in r.output
    r = runner.invoke(app, ["probe", "train", str(tmp_path / "color"), "--test", str(tmp_path / "obj"),
                            "--out", str(tmp_path / "res"), "--epochs", "2", "--layers", "16", "--probe", "linear",
                            "--no-control"])
    assert r.exit_code == 0, r.output
    assert "out-of-distribution" in r.output
    r = runner.invoke(app, ["probe", "report", str(tmp_path / "res"), "--out", str(tmp_path / "rep"),
                            "--data", str(tmp_path / "color")])
    assert r.exit_code == 0, r.output
    names = sorted(os.listdir(tmp_path / "rep"))
    assert "report.md" in names and "mean_maps.color.target.png" in names
    assert "color.authors.csv" in names and "color-_color_object.linear.csv" in names
    r = runner.invoke(app, ["probe", "train", str(tmp_path / "color"), "--out", str(tmp_path / "res"),
                            "--layers", "17"])
    assert r.exit_code != 0 and isinstance(r.exception, BadInput)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_dataset(tmp_path / "obj").complete
    # the whole protocol from one config (and a rerun reuses everything)
    config = {"model": str(model), "vocabulary": "shapes", "colors": ["red", "blue"], "device": "cpu",
              "seeds": {"color": 2, "self_color": 2}, "collect": {"steps": 2, "batch_size": 4},
              "probe": {"epochs": 1},
              "experiments": [{"name": "cross_color", "train": "color", "layers": "1-2"},
                              {"name": "self_color", "train": "self_color", "layers": "1"}]}
    (tmp_path / "probe.json").write_text(json.dumps(config))
    for expected in ("generated 4", "reused 4"):
        r = runner.invoke(app, ["probe", "run", str(tmp_path / "probe.json"), "--out", str(tmp_path / "run"), "-q"])
        assert r.exit_code == 0, r.output
        assert expected in r.output
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "cross_color" in report and "self_color" in report
    assert (tmp_path / "run" / "report" / "mean_maps.self_color.png").exists()
    assert sorted(os.listdir(tmp_path / "run" / "results")) == ["cross_color.json", "self_color.json"]
    from freeprompt.analysis.protocol import run_config

    one_number = {**config, "seeds": 3, "experiments": config["experiments"][:1]}
    lines = []
    run_config(one_number, out=tmp_path / "run1", quiet=True, echo=lines.append)
    assert "color: generated 6" in lines[0]  # 3 seeds x 2 colours
    with pytest.raises(BadInput, match="seeds must be a whole number above 0 or a table"):
        run_config({**config, "seeds": [2, 2]}, out=tmp_path / "run2", quiet=True, echo=lines.append)

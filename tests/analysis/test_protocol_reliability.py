"""A probing config that cannot be run is refused in one line before any model loads: experiments that are not
tables, seed counts or a first seed that are not whole numbers."""

import json

import pytest

from freeprompt.cli.main import main

GOOD = {"name": "colours", "train": "color"}


@pytest.mark.parametrize("config,word", [
    ({"experiments": ["color"]}, "needs a name"),
    ({"experiments": "color"}, "list of tables"),
    ({"experiments": [GOOD], "seeds": "200"}, "seeds"),
    ({"experiments": [GOOD], "seeds": {"color": "many"}}, "seeds"),
    ({"experiments": [GOOD], "seeds": 0}, "seeds"),
    ({"experiments": [GOOD], "seeds": True}, "seeds"),
    ({"experiments": [GOOD], "first_seed": "zero"}, "first_seed"),
    ({"experiments": [GOOD], "first_seed": -1}, "first_seed"),
])
def test_probe_configs_that_cannot_run_are_refused_before_loading(tmp_path, capsys, monkeypatch, config, word):
    import freeprompt.models.loading as loading

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the config was checked")

    monkeypatch.setattr(loading, "load_pipeline", no_model)
    path = tmp_path / "probe.json"
    path.write_text(json.dumps({"model": "shapes", "out": str(tmp_path / "run"), **config}))
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", "run", str(path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and word in err and err.count("\n") == 1, err

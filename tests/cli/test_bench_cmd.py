"""``freeprompt bench shapes`` end to end on the tiny random model: items, summary, run.json, resumption, refused
changes of settings, and every method on the same items."""

import pytest


def test_bench_command_writes_items_summary_and_resumes(tiny_model_dir, tmp_path, capsys):
    """Mechanics on a random model (its scores mean nothing): CSV per item, summary, run.json, and a rerun
    that finds every item done and recomputes none."""
    import csv
    import json

    from freeprompt.cli.main import main

    out = tmp_path / "bench"
    argv = ["bench", "shapes", "--model", str(tiny_model_dir), "--out", str(out), "--color-edits", "2", "--shape-edits",
            "1", "--generation", "2", "--steps", "2", "--guidance", "3"]
    main(argv)  # returns normally on success
    rows = list(csv.DictReader(open(out / "items.csv")))
    assert len(rows) == 6 and {r["method"] for r in rows} == {"fpe", "plain"}
    assert "| fpe | color | 2 |" in (out / "summary.md").read_text()
    assert "Colour swaps by the object" in (out / "summary.md").read_text()
    assert json.loads((out / "run.json").read_text())["generation"]["samples"] == 2
    before = (out / "items.csv").read_bytes()
    main(argv)
    assert (out / "items.csv").read_bytes() == before
    # other settings in the same folder would be summarised under the wrong parameters: refused in one line
    for changed, name in ((["--steps", "3"], "steps"), (["--color-edits", "1"], "items")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, *changed])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and f"other settings ({name})" in err and err.count("\n") == 1
    assert (out / "items.csv").read_bytes() == before
    with pytest.raises(SystemExit) as exit_info:
        main([*argv[:5], str(tmp_path / "t"), "--templates", ""])
    assert exit_info.value.code == 2 and "no caption template given" in capsys.readouterr().err


def test_bench_runs_every_method_on_the_same_items(tiny_model_dir, tmp_path):
    import csv

    from freeprompt.cli.main import main

    out = tmp_path / "bench"
    main(["bench", "shapes", "--model", str(tiny_model_dir), "--out", str(out), "--color-edits", "1", "--shape-edits",
          "1", "--generation", "0", "--steps", "2", "--guidance", "3", "--methods", "fpe,p2p,masactrl,pnp,plain"])
    rows = list(csv.DictReader(open(out / "items.csv")))
    methods = ["fpe", "p2p", "masactrl", "pnp", "plain"]
    assert [r["method"] for r in rows] == methods * 2
    assert {(r["id"], r["seed"], r["target_prompt"]) for r in rows[:5]} == {(rows[0]["id"], rows[0]["seed"],
                                                                             rows[0]["target_prompt"])}
    summary = (out / "summary.md").read_text()
    assert all(f"| {m} | color | 1 |" in summary for m in methods)

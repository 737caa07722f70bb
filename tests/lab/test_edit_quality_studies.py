"""The studies of issue #37 (lab/object_swaps.py, lab/captionless.py, lab/diagnostics/object_swap_drift.py): their
item lists are seeded and kept apart from the held-out benchmark lists, every variant builds, and a variant runs,
resumes and reports on a tiny pipeline."""

import json

import pytest

from freeprompt.evaluation.shapes_bench import edit_items
from freeprompt.shapes import world
from lab import captionless, object_swaps


def test_sources_are_seeded_and_every_swap_changes_one_attribute():
    chosen = object_swaps.sources(100, 6)
    assert chosen == object_swaps.sources(100, 6) and len({s.id for s in chosen}) == 6
    held_out = {(i.seed, i.source_prompt) for seed in (0, 1, 2) for i in edit_items(80, 40, seed)}
    assert not {(s.seed, s.prompt) for s in chosen} & held_out
    for kind, count in (("shape", len(world.SHAPES) - 1), ("color", len(world.COLORS) - 1)):
        items = object_swaps.swaps(chosen[0], kind)
        assert len(items) == count and all(i.kind == kind and i.seed == chosen[0].seed for i in items)


def test_every_variant_builds_for_both_kinds():
    source = object_swaps.sources(100, 1)[0]
    for name, variant in object_swaps.VARIANTS.items():
        for kind in ("shape", "color"):
            method = variant.build(object_swaps.swaps(source, kind))
            assert method.options() is not None, name
    for variant in captionless.VARIANTS.values():
        assert variant.caption in ("true", "empty", "auto", "auto-simple")


def test_a_variant_runs_resumes_and_reports(tiny_pipe, tmp_path):
    chosen = object_swaps.sources(100, 1)
    rows = object_swaps.run_variant(tiny_pipe, "fpe-keys", "shape", chosen, tmp_path, 2, 3.0)
    assert len(rows) == 7 and {r["variant"] for r in rows} == {"fpe-keys"}
    again = object_swaps.run_variant(tiny_pipe, "fpe-keys", "shape", chosen, tmp_path, 2, 3.0)
    assert [r["target_prompt"] for r in again] == [r["target_prompt"] for r in rows]
    text = object_swaps.report(tmp_path)
    assert "| shape | `fpe-keys` | 7 (1) |" in text and (tmp_path / "figure.png").exists()
    assert (tmp_path / "summary.csv").exists()


@pytest.mark.parametrize("hits,n,low,high", [(8, 10, 0.49, 0.94), (0, 20, 0.0, 0.17), (59, 80, 0.63, 0.83)])
def test_wilson_intervals(hits, n, low, high):
    from freeprompt.evaluation.shapes_bench import wilson

    got = wilson(hits, n)
    assert got[0] == pytest.approx(low, abs=0.01) and got[1] == pytest.approx(high, abs=0.01)


def test_a_candidate_model_folder_runs_and_is_recorded_with_its_revision(tiny_model_dir, tmp_path):
    object_swaps.main(["run", "--model", str(tiny_model_dir), "--variants", "plain", "--sources", "1", "--steps", "2",
                       "--guidance", "3", "--out", str(tmp_path)])
    settings = json.loads(next((tmp_path / "shape" / "plain").glob("*settings*.json")).read_text())
    assert settings["model"].startswith(f"{tiny_model_dir} (sha256:")

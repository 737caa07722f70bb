"""Shape swaps scored as object swaps (issue #37): target shape, place, size and colour kept, on rendered images
whose truth is known; the summary's object-swap table; old result folders (rows from before these scores) read
without a crash and refused in one line when resumed."""

import json
import math

import pytest

from freeprompt.errors import BadInput
from freeprompt.evaluation import ablation as ab
from freeprompt.evaluation import shapes_bench as sb
from freeprompt.io.tables import read_rows, write_rows
from freeprompt.shapes import world


def render(color, shape, center=(0.5, 0.5), size=0.45, rotation=0.0):
    spec = world.SceneSpec((world.ObjectSpec(shape, color, center, size, rotation),), "plain", "simple",
                           world.caption("simple", color, shape))
    return world.render(spec, 64).image


def swap(src_shape="circle", tgt_shape="square", color="red"):
    return sb.EditItem("shape-000", "shape", 0, color, src_shape, color, tgt_shape)


@pytest.mark.parametrize("size", [0.36, 0.5, 0.6])
def test_a_perfect_swap_keeps_all_four_for_every_pair_of_shapes(size):
    for a in world.SHAPES:
        for b in world.SHAPES:
            if a != b:
                s = sb.score_edit(render("red", a, (0.45, 0.55), size), render("red", b, (0.45, 0.55), size),
                                  swap(a, b))
                assert s["all_four"] and s["place_px"] <= 2.5, (a, b, s)  # rasterising moves a box by <= 2.1 px


def test_the_place_is_the_bounding_box_centre_not_the_centroid():
    # a triangle's centroid sits a seventh of its box below a circle's: a perfect swap must still keep its place
    s = sb.score_edit(render("blue", "circle", size=0.55), render("blue", "triangle", size=0.55),
                      swap("circle", "triangle", "blue"))
    assert s["place_ok"] and s["centroid_px"] > sb.PLACE_PX and s["all_four"]


def test_a_shape_moved_by_10_px_fails_place_only():
    s = sb.score_edit(render("red", "circle"), render("red", "square", (0.5 + 10 / 64, 0.5)), swap())
    assert s["attribute_ok"] and s["size_ok"] and s["other_kept"]
    assert not s["place_ok"] and not s["all_four"]
    assert s["place_px"] == pytest.approx(10, abs=1) and s["place_frac"] == pytest.approx(10 / 64, abs=0.02)


def test_a_shape_within_3_px_keeps_its_place():
    s = sb.score_edit(render("red", "circle"), render("red", "square", (0.5 + 3 / 64, 0.5)), swap())
    assert s["place_ok"] and s["all_four"]


@pytest.mark.parametrize("factor", [0.6, 1.4])
def test_a_scaled_shape_fails_size_only(factor):
    s = sb.score_edit(render("red", "circle", size=0.45), render("red", "square", size=0.45 * factor), swap())
    assert s["attribute_ok"] and s["place_ok"] and s["other_kept"]
    assert not s["size_ok"] and not s["all_four"] and s["size_ratio"] == pytest.approx(factor, rel=0.1)


def test_a_recoloured_or_unchanged_object_fails():
    recoloured = sb.score_edit(render("red", "circle"), render("green", "square"), swap())
    assert not recoloured["other_kept"] and not recoloured["all_four"] and math.isnan(recoloured["place_px"])
    unchanged = sb.score_edit(render("red", "circle"), render("red", "circle"), swap())
    assert not unchanged["attribute_ok"] and unchanged["place_ok"] and not unchanged["all_four"]


def test_colour_swaps_fill_the_same_columns_with_the_shape_as_the_attribute_left_alone():
    item = sb.EditItem("color-000", "color", 0, "red", "heart", "blue", "heart")
    kept = sb.score_edit(render("red", "heart"), render("blue", "heart"), item)
    assert kept["joint"] and kept["other_kept"] and kept["all_four"]
    reshaped = sb.score_edit(render("red", "heart"), render("blue", "square"), item)
    assert reshaped["attribute_ok"] and not reshaped["other_kept"] and not reshaped["all_four"]


def rows_of(pairs, method="fpe"):
    rows = []
    for n, (target_shape, center) in enumerate(pairs):
        item = sb.EditItem(f"shape-{n:03d}", "shape", n, "red", "circle", "red", target_shape)
        scores = sb.score_edit(render("red", "circle"), render("red", target_shape, center), item)
        rows.append({k: str(v) for k, v in {"id": item.id, "kind": "shape", "method": method, **scores}.items()})
    return rows


def test_summary_has_an_object_swap_table_with_its_interval():
    rows = rows_of([("square", (0.5, 0.5)), ("star", (0.5, 0.5)), ("square", (0.75, 0.5)), ("heart", (0.5, 0.5))])
    table = sb.summarise(rows)
    shape = next(r for r in table if r["edits"] == "shape")
    assert shape["all_four"] == 0.75 and shape["place_ok"] == 0.75
    assert shape["all_four_low"] < 0.75 < shape["all_four_high"]
    text = sb.markdown(table)
    assert "Object swaps" in text and "| fpe | 4 | 100% | 75% |" in text and "**75%**" in text


def test_rows_from_before_the_object_scores_still_summarise(tmp_path):
    old_fields = sb.FIELDS[:sb.FIELDS.index(sb.OBJECT_SCORES[0])]
    write_rows(tmp_path / "items.csv", rows_of([("square", (0.5, 0.5))]), old_fields)
    rows = read_rows(tmp_path / "items.csv")
    table = sb.summarise(rows)
    assert table[0]["all_four"] is None and "Object swaps" not in sb.markdown(table)
    assert "| fpe | shape | 1 |" in sb.write_report(tmp_path, rows, None, {})


def test_a_folder_of_rows_from_before_the_object_scores_is_refused_in_one_line(tiny_pipe, tmp_path):
    from freeprompt.editing.methods import Plain

    items = sb.edit_items(0, 1, seed=0)
    sb.run_edits(tiny_pipe, items, tmp_path, 2, 3.0, {"plain": Plain()}, examples=0)
    settings = json.loads((tmp_path / "settings.json").read_text())
    del settings["scores"]  # as a run before the object-swap scores wrote it
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    old_fields = sb.FIELDS[:sb.FIELDS.index(sb.OBJECT_SCORES[0])]
    write_rows(tmp_path / "items.csv", read_rows(tmp_path / "items.csv"), old_fields)
    with pytest.raises(BadInput) as refused:
        sb.run_edits(tiny_pipe, items, tmp_path, 2, 3.0, {"plain": Plain()}, examples=0)
    assert "other settings (scores)" in str(refused.value) and "\n" not in str(refused.value)


def test_ablation_cells_report_the_object_swaps_of_their_shape_items():
    def row(item, ratio, **scores):
        base = {"item": item, "type": "self", "layers": "all", "ratio": ratio, "attribute_ok": "True", "iou": "0.9",
                "joint": "True"}
        return {**base, **{k: str(v) for k, v in scores.items()}}

    keep = {"place_ok": True, "size_ok": True, "other_kept": True, "all_four": True}
    moved = {**keep, "place_ok": False, "all_four": False}
    rows = [row("color-000", "0.5", **keep), row("shape-000", "0.5", **keep), row("shape-001", "0.5", **moved),
            row("shape-000", "0.9", **keep), row("shape-001", "0.9", **keep)]
    table = ab.summarise(rows)
    assert [(e["ratio"], e["object_n"], e["object_all_four"]) for e in table] == [(0.5, 2, 0.5), (0.9, 2, 1.0)]
    assert "| self | all | 50% (50%) | 100% (100%) |" in ab.markdown(table, objects=True)
    old = [{k: v for k, v in r.items() if k not in keep} for r in rows]  # rows from before the object scores
    assert all(e["object_all_four"] is None for e in ab.summarise(old))

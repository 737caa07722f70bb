"""The shapes benchmark's scoring on rendered images, where the truth is known."""

import pytest

from freeprompt.errors import BadInput
from freeprompt.evaluation import shapes_bench as sb
from freeprompt.shapes import world


def render(color, shape, center=(0.5, 0.5), size=0.4):
    spec = world.SceneSpec((world.ObjectSpec(shape, color, center, size, 0.0),), "plain", "simple",
                           world.caption("simple", color, shape))
    return world.render(spec, 64).image


def test_items_are_seeded_and_change_exactly_one_attribute():
    items = sb.edit_items(30, 20, seed=4)
    assert items == sb.edit_items(30, 20, seed=4)
    assert len(items) == 50 and len({i.id for i in items}) == 50
    for it in items:
        if it.kind == "color":
            assert it.src_color != it.tgt_color and it.src_shape == it.tgt_shape
        else:
            assert it.src_shape != it.tgt_shape and it.src_color == it.tgt_color


def test_perfect_colour_edit_scores_full_marks():
    item = sb.EditItem("x", "color", 0, "red", "circle", "blue", "circle")
    s = sb.score_edit(render("red", "circle"), render("blue", "circle"), item)
    assert s["source_ok"] and s["attribute_ok"] and s["joint"]
    assert s["iou"] > 0.95 and s["background_psnr"] > 40


def test_failed_colour_edit_that_keeps_the_old_object_scores_zero_iou():
    item = sb.EditItem("x", "color", 0, "red", "circle", "blue", "circle")
    s = sb.score_edit(render("red", "circle"), render("red", "circle"), item)
    assert not s["attribute_ok"] and s["iou"] == 0.0 and not s["joint"]


def test_moved_object_reaches_the_colour_but_not_the_structure():
    item = sb.EditItem("x", "color", 0, "red", "square", "green", "square")
    s = sb.score_edit(render("red", "square", (0.3, 0.3), 0.3), render("green", "square", (0.7, 0.7), 0.3), item)
    assert s["attribute_ok"] and s["iou"] < 0.2 and not s["joint"]


def test_shape_edit_reads_the_new_shape():
    item = sb.EditItem("x", "shape", 0, "yellow", "circle", "yellow", "triangle")
    good = sb.score_edit(render("yellow", "circle"), render("yellow", "triangle"), item)
    bad = sb.score_edit(render("yellow", "circle"), render("yellow", "circle"), item)
    assert good["attribute_ok"] and not bad["attribute_ok"]


def test_summary_and_markdown():
    item = sb.EditItem("x", "color", 0, "red", "circle", "blue", "circle")
    rows = [{"id": "x", "kind": "color", "method": m,
             **sb.score_edit(render("red", "circle"), render(c, "circle"), item)}
            for m, c in (("fpe", "blue"), ("plain", "red"))]
    rows = [{k: str(v) for k, v in r.items()} for r in rows]  # as read back from the CSV
    table = {(r["method"], r["edits"]): r for r in sb.summarise(rows)}
    assert table[("fpe", "all")]["joint"] == 1.0 and table[("plain", "all")]["joint"] == 0.0
    assert "| fpe | color | 1 |" in sb.markdown(sb.summarise(rows))


def test_breakdown_groups_colour_swaps_by_shape_and_by_each_colour_involved():
    def row(method, src, tgt, shape, iou, joint, kind="color"):
        return {"kind": kind, "method": method, "source_prompt": f"a {src} {shape}",
                "target_prompt": f"a {tgt} {shape}", "iou": str(iou), "joint": str(joint)}

    rows = [row("fpe", "red", "white", "star", 0.1, False), row("plain", "red", "white", "star", 0.0, False),
            row("fpe", "white", "blue", "circle", 0.9, True), row("plain", "white", "blue", "circle", 0.5, False),
            row("fpe", "green", "blue", "star", 0.9, True), row("plain", "green", "blue", "star", 0.2, False),
            row("fpe", "red", "red", "moon", 0.0, False, kind="shape")]  # not a colour swap: left out
    groups = sb.breakdown(rows)
    by_shape = {e["shape"]: e for e in groups["shape"]}
    assert set(by_shape) == {"star", "circle"}
    assert by_shape["star"]["fpe"] == {"n": 2, "joint": 0.5, "lost": 1, "iou_mean": pytest.approx(0.5)}
    assert by_shape["star"]["plain"]["lost"] == 2 and by_shape["circle"]["plain"]["joint"] == 0.0
    by_colour = {e["colour"]: e for e in groups["colour"]}
    # each swap counts for its source colour and its target colour
    assert [by_colour[c]["fpe"]["n"] for c in ("white", "blue", "red", "green")] == [2, 2, 1, 1]
    assert by_colour["blue"]["fpe"]["joint"] == 1.0 and by_colour["white"]["plain"]["lost"] == 1
    assert [e["colour"] for e in groups["colour"]] == [c for c in world.COLORS if c in by_colour]
    text = sb.breakdown_markdown(groups)
    assert "| star | 2 | 50% | 1 | 0.50 | 0% | 2 | 0.10 |" in text


def test_unknown_words_are_one_line_errors():
    with pytest.raises(BadInput, match="unknown colour word.*teal"):
        sb.edit_items(2, 2, colors=["red", "teal"])
    with pytest.raises(BadInput, match="unknown shape word.*blob"):
        sb.edit_items(2, 2, shapes=["blob", "circle"])

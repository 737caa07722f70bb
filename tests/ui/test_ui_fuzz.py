"""Fuzzing the web UI's handlers (hypothesis): random values for every field ``Editor.generated`` and
``Editor.real`` take (text with odd unicode, None, NaN, infinities, huge and negative numbers, huge target lists,
random method names and option values) each come back as images or as one ``#error`` line, never an exception and
never an internal error. Each example starts from a request that edits and spoils up to three of its fields, so a
share of the examples reach the tiny model (steps forced small) while most are refused before sampling; the
counts are printed (``pytest -s``)."""

from __future__ import annotations

import math
from collections import Counter

import pytest

pytest.importorskip("gradio", reason="the web UI needs the ui extra (pip install 'freeprompt[ui]')")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))

ODD = ["", " ", "\n\n", "\u2028a blue circle\u2029", "a\x00circle", "\ud800", "a \udfff circle", "🙂 a circle 🙂",
       "a" * 3000, "<script>alert(1)</script>", "**bold** `code` [link](x)", "ｆｐｅ", "circle\r\ncircle", "\t",
       "a red circle " * 40, "İstanbul", "\u202egnirts", "a blue circle\n" * 64]
TEXT = st.one_of(st.none(), st.text(max_size=30), st.sampled_from(ODD), st.integers(), st.floats(), st.booleans())
NUMBER = st.one_of(st.none(), st.floats(), st.integers(-2**70, 2**70), st.booleans(), st.text(max_size=6),
                   st.sampled_from([0, -1, 1e30, 2**63, 2**63 - 1, 10**400, 1001, 2.5, "", "12", "1e3", "nan", "-inf",
                                    [2], {"steps": 2}]))
# Steps that would be accepted stay small (1-3), so an example that reaches the model is quick.
STEPS = NUMBER.filter(lambda v: not _slow(v)) | st.sampled_from([1, 2, 3, 2.0, "3"])
TARGETS = st.one_of(TEXT, st.integers(0, 400).map(lambda n: "\n".join(f"a circle {i}" for i in range(n))),
                    st.lists(st.text(max_size=12), max_size=5).map("\n".join))
METHOD = st.one_of(TEXT, st.sampled_from(["fpe", "p2p", "masactrl", "pnp", "plain", "fpe+p2p", "FPE", " fpe ",
                                          "fpe,p2p", "fpe+fpe", "p2p+masactrl", "nope", "fpe+"]))
OPTION_TEXT = ["0:0.5", "0.2:1", "0.9:0.1", "0:2", "all", "<=32x32", "4-14", "down.2,mid", "99", "cat", "circle",
               "circle=2", "fluffy=nan", "replace", "refine", "on", "off", "up", "0.5", ""]
OPTION_VALUE = st.one_of(TEXT, NUMBER, st.sampled_from(OPTION_TEXT))


def _slow(value) -> bool:
    """Would the Editor accept ``value`` as more than 3 steps?"""
    from freeprompt.ui.app import whole

    try:
        return whole(value, "Steps", 1, 1000, 50) > 3
    except Exception:  # noqa: BLE001 - refused: fast
        return False


def options_strategy():
    from freeprompt.editing.methods import option_table

    params = [declared.param for _, declared in option_table()]
    return st.dictionaries(st.sampled_from(params + ["bogus", ""]), OPTION_VALUE, max_size=3)


def spoiled(good: dict, fields: dict) -> st.SearchStrategy:
    """``good`` with up to three of its fields replaced by draws from ``fields``."""
    names = sorted(fields)
    return st.sets(st.sampled_from(names), max_size=3).flatmap(
        lambda chosen: st.fixed_dictionaries({name: fields[name] if name in chosen else st.just(good[name])
                                              for name in names}))


@pytest.fixture(scope="module")
def editor(tiny_pipe, tmp_path_factory):
    from freeprompt.models.loading import LoadedModel
    from freeprompt.ui.app import Editor

    loaded = LoadedModel(tiny_pipe, {"id": "tiny", "revision": None}, {"steps": 2, "guidance": 3.0})
    with pytest.MonkeyPatch.context() as patch:  # the photo edits' inversion cache
        patch.setenv("FREEPROMPT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield Editor(loaded, out_root=tmp_path_factory.mktemp("ui-runs"))


def outcome(shown) -> str:
    """``edited``, ``refused`` or ``internal``; the page's six outputs checked."""
    assert isinstance(shown, tuple) and len(shown) == 6
    images, _, grid, run_json, timings, error = shown
    assert isinstance(error, str) and "\n" not in error and "Traceback" not in error, error
    if error.startswith("**freeprompt: internal error:**"):
        return "internal"
    if error:
        assert error.startswith("**freeprompt: error:** ") and images == [] and grid is None, error
        return "refused"
    assert images and grid.endswith("grid.png") and run_json.endswith("run.json") and "total" in timings
    return "edited"


def report(name: str, counts: Counter) -> None:
    print(f"\n{name}: {sum(counts.values())} examples, {counts['refused']} refused, {counts['edited']} edited, "
          f"{counts['internal']} internal errors")
    assert counts["internal"] == 0
    assert counts["edited"] >= 3 and counts["refused"] >= 30  # both paths were exercised


GOOD = {"source": "a red circle", "targets": "a blue circle\na green circle", "method": "fpe", "seed": 0,
        "steps": 2, "guidance": 3.0, "options": {}, "word": "circle"}


def test_the_generated_image_handler_never_raises(editor):
    counts = Counter()
    fields = {"source": TEXT, "targets": TARGETS, "method": METHOD, "seed": NUMBER, "steps": STEPS,
              "guidance": NUMBER, "options": options_strategy(), "word": TEXT}

    @FUZZ
    @given(spoiled(GOOD, fields))
    def one_generated(values):
        counts[outcome(editor.generated(**values))] += 1

    one_generated()
    report("Editor.generated", counts)


def test_the_photo_handler_never_raises(editor, tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("uploads")
    Image.new("RGB", (64, 64), (200, 30, 30)).save(folder / "photo.png")
    Image.new("RGB", (8, 8)).save(folder / "tiny.png")
    (folder / "notes.png").write_text("not an image")
    uploads = st.one_of(TEXT, st.sampled_from([str(folder / name) for name in ("photo.png", "tiny.png", "notes.png")]
                                              + [str(folder), str(folder / "missing.png"), "a\x00b.png"]))
    good = {**GOOD, "upload": str(folder / "photo.png"), "resize": "crop", "inversion": "direct", "source": ""}
    del good["seed"]
    fields = {"upload": uploads, "resize": st.one_of(TEXT, st.sampled_from(["crop", "pad", "fit", "CROP"])),
              "inversion": st.one_of(TEXT, st.sampled_from(["direct", "ddim", "null-text", "negative-prompt"])),
              "source": TEXT, "targets": TARGETS, "method": METHOD, "steps": STEPS, "guidance": NUMBER,
              "options": options_strategy(), "word": TEXT}
    counts = Counter()

    @FUZZ
    @given(spoiled(good, fields))
    def one_photo(values):
        counts[outcome(editor.real(**values))] += 1

    one_photo()
    report("Editor.real", counts)


def test_nan_is_not_a_number_anywhere(editor):
    # the one value every number field must refuse by name
    for field in ("seed", "steps", "guidance"):
        shown = editor.generated(**{**GOOD, field: math.nan})
        assert field in shown[-1].lower() and outcome(shown) == "refused"

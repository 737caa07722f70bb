"""The web UI's ``Editor`` called directly, as the page's buttons call it, on the tiny random model: every request
value is checked with the command line's bounds before the edit waits for the model (a cleared field, seed 1e30 or
-1, NaN, too many target lines: the one-line ``#error`` message), an unexpected exception is one internal-error line
in the page and once on stderr, and both tabs' edits hold the one lock."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the web UI needs the ui extra (pip install 'freeprompt[ui]')")

GOOD = {"source": "a red circle", "targets": "a blue circle", "method": "fpe", "seed": 0, "steps": 2, "guidance": 3.0,
        "options": {}, "word": ""}


@pytest.fixture(scope="module")
def editor(tiny_pipe, tmp_path_factory):
    from freeprompt.models.loading import LoadedModel
    from freeprompt.ui.app import Editor

    loaded = LoadedModel(tiny_pipe, {"id": "tiny", "revision": None}, {"steps": 2, "guidance": 3.0})
    with pytest.MonkeyPatch.context() as patch:  # the photo edits' inversion cache
        patch.setenv("FREEPROMPT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield Editor(loaded, out_root=tmp_path_factory.mktemp("ui-runs"))


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(path)
    return str(path)


@pytest.fixture
def no_edit(monkeypatch):
    """Refusals come before the model: any edit started fails the test."""
    from freeprompt.editing import generated as generated_module
    from freeprompt.editing import real as real_module

    def refuse(*args, **kwargs):
        raise AssertionError("the edit started before the bad value was refused")

    monkeypatch.setattr(generated_module, "edit", refuse)
    monkeypatch.setattr(real_module, "edit_real", refuse)


def generated(editor, **given):
    return editor.generated(**{**GOOD, **given})


def real(editor, photo, **given):
    values = {key: value for key, value in {**GOOD, **given}.items() if key != "seed"}
    return editor.real(given.pop("upload", photo), given.pop("resize", "crop"), given.pop("inversion", "direct"),
                       **{key: value for key, value in values.items() if key not in ("upload", "resize", "inversion")})


def refused(shown) -> str:
    assert len(shown) == 6 and shown[0] == [] and shown[2] is None, shown
    message = shown[-1]
    assert message.startswith("**freeprompt: error:** ") and "\n" not in message, message
    return message.removeprefix("**freeprompt: error:** ").lower()


REFUSED = [
    ("steps-cleared", {"steps": None}, "steps is empty"),
    ("guidance-cleared", {"guidance": None}, "guidance is empty"),
    ("seed-cleared", {"seed": None}, "seed is empty"),
    ("seed-huge", {"seed": 1e30}, "seed 1e+30 is outside 0..9223372036854775807"),
    ("seed-huge-int", {"seed": 10**5000}, "seed 2^16609+ is outside"),
    ("seed-negative", {"seed": -1}, "seed -1 is outside"),
    ("seed-too-big-by-one", {"seed": 2**63}, "seed 9223372036854775808 is outside"),
    ("seed-nan", {"seed": math.nan}, "seed nan is not a whole number"),
    ("seed-a-switch", {"seed": True}, "seed true is not a number"),
    ("steps-zero", {"steps": 0}, "steps 0 is outside 1..1000"),
    ("steps-negative", {"steps": -5}, "steps -5 is outside"),
    ("steps-huge", {"steps": 100000}, "steps 100000 is outside"),
    ("steps-fraction", {"steps": 2.5}, "steps 2.5 is not a whole number"),
    ("steps-infinite", {"steps": math.inf}, "steps inf is not a whole number"),
    ("steps-text", {"steps": "ten"}, "steps 'ten' is not a number"),
    ("steps-a-list", {"steps": [2]}, "steps [2] is not a number"),
    ("guidance-nan", {"guidance": math.nan}, "guidance nan is not a finite number"),
    ("guidance-infinite", {"guidance": -math.inf}, "guidance -inf"),
    ("guidance-negative", {"guidance": -1}, "guidance -1 is not a finite number from 0 to 1000"),
    ("guidance-huge", {"guidance": 1e308}, "guidance 1e+308"),
    ("guidance-huge-int", {"guidance": 10**400}, "guidance inf"),
    ("targets-none", {"targets": None}, "no target prompt"),
    ("targets-blank-lines", {"targets": "\n \n\t"}, "no target prompt"),
    ("targets-65", {"targets": "\n".join(["a blue circle"] * 65)}, "65 target prompts, more than the 64"),
    ("targets-300", {"targets": "\n".join(f"a circle {i}" for i in range(300))}, "300 target prompts"),
    ("targets-not-text", {"targets": ["a blue circle"]}, "target prompts: a list where text"),
    ("source-surrogate", {"source": "a \ud800 circle"}, "not valid unicode"),
    ("source-not-text", {"source": 5}, "source prompt: a int where text"),
    ("word-not-text", {"word": 3.5}, "heat-map word: a float where text"),
    ("method-unknown", {"method": "frobnicate"}, "unknown or repeated method"),
    ("method-none", {"method": None}, "no method"),
    ("method-not-text", {"method": 7}, "the method: a int"),
    ("method-several", {"method": "fpe,p2p"}, "several methods"),
    ("option-unknown", {"options": {"bogus": 1}}, "unknown method option 'bogus'"),
    ("option-not-a-name", {"options": {3: 1}}, "unknown method option 3"),
    ("option-not-a-mapping", {"options": ["self_replace"]}, "method options are a list"),
    ("option-of-another-method", {"options": {"masactrl_steps": "0:0.5"}}, "belong"),
    ("option-nan", {"options": {"self_replace": math.nan}}, "self-replace"),
    ("option-number-nan", {"method": "p2p", "options": {"blend_threshold": math.nan}}, "blend threshold: nan"),
    ("option-number-text", {"method": "p2p", "options": {"blend_threshold": "lots"}}, "'lots' is not a number"),
    ("option-a-list", {"options": {"self_replace": [0, 0.5]}}, "self_replace is a list"),
]


@pytest.mark.parametrize("case_id,given,words", REFUSED, ids=[c[0] for c in REFUSED])
def test_a_bad_value_is_refused_in_one_line_before_the_model(editor, no_edit, case_id, given, words):
    assert words in refused(generated(editor, **given))


REFUSED_REAL = [
    ("no-upload", {"upload": None}, "no image uploaded"),
    ("blank-upload", {"upload": " "}, "no image uploaded"),
    ("upload-not-a-file", {"upload": 12}, "the upload is a int"),
    ("upload-missing", {"upload": "/nonexistent/photo.png"}, "does not exist"),
    ("resize-unknown", {"resize": "stretch"}, "resize mode"),
    ("inversion-unknown", {"inversion": "magic"}, "unknown inversion"),
    ("inversion-not-text", {"inversion": None}, "unknown inversion ''"),
    ("steps-cleared", {"steps": None}, "steps is empty"),
    ("guidance-nan", {"guidance": math.nan}, "guidance nan"),
    ("targets-65", {"targets": "\n".join(["a blue circle"] * 65)}, "65 target prompts"),
]


@pytest.mark.parametrize("case_id,given,words", REFUSED_REAL, ids=[c[0] for c in REFUSED_REAL])
def test_a_bad_photo_edit_is_refused_in_one_line_before_the_model(editor, photo, no_edit, case_id, given, words):
    assert words in refused(real(editor, photo, **given))


def test_the_ui_takes_the_command_lines_bounds():
    from freeprompt.cli import options
    from freeprompt.diffusion.latents import MAX_TARGETS, check_targets
    from freeprompt.ui import app

    assert (app.MAX_SEED, app.MAX_STEPS) == (options.MAX_SEED, options.MAX_STEPS)
    assert app.whole(options.MAX_SEED, "Seed", 0, app.MAX_SEED, 0) == 2**63 - 1
    assert app.real_number(app.MAX_GUIDANCE, "Guidance", 0, app.MAX_GUIDANCE, 7.5) == 1000.0
    assert app.whole("12", "Steps", 1, 1000, 50) == 12 and app.whole(12.0, "Steps", 1, 1000, 50) == 12
    check_targets(MAX_TARGETS)
    with pytest.raises(Exception, match="65 target prompts, more than the 64 one batch takes; split them"):
        check_targets(MAX_TARGETS + 1)


def test_the_limits_themselves_are_accepted(editor):
    shown = generated(editor, seed=2**63 - 1, steps=1, guidance=0, targets="\n".join(["a blue circle"] * 64))
    assert shown[-1] == "" and len(shown[0]) == 65


def test_an_unexpected_exception_is_one_internal_error_line_logged_once(editor, monkeypatch, capsys):
    from freeprompt.editing import generated as generated_module

    def broken(*args, **kwargs):
        raise ValueError("a bug\nwith a second line")

    monkeypatch.setattr(generated_module, "edit", broken)
    shown = generated(editor)
    assert shown[-1] == "**freeprompt: internal error:** ValueError: a bug"
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.strip()] == ["freeprompt: internal error: ValueError: a bug"]
    assert not editor.lock.locked()  # released: the next edit runs
    monkeypatch.undo()
    assert generated(editor)[-1] == ""


def test_out_of_memory_is_a_refusal_with_a_fix(editor, monkeypatch):
    from freeprompt.editing import generated as generated_module

    def full(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(generated_module, "edit", full)
    assert "out of memory; use fewer target prompts" in refused(generated(editor))


def test_both_tabs_edit_under_the_one_lock(editor, photo, monkeypatch):
    from freeprompt.editing import generated as generated_module
    from freeprompt.editing import real as real_module

    held = []

    def spy(original):
        def run(*args, **kwargs):
            held.append(editor.lock.locked())
            return original(*args, **kwargs)
        return run

    monkeypatch.setattr(generated_module, "edit", spy(generated_module.edit))
    monkeypatch.setattr(real_module, "edit_real", spy(real_module.edit_real))
    assert generated(editor)[-1] == "" and real(editor, photo)[-1] == ""
    assert held == [True, True] and not editor.lock.locked()


@pytest.mark.parametrize("spec", [None, "", 5, "((", "\ud800", "<=32x32", "99-100", "all"])
def test_the_layer_table_takes_any_spec(editor, spec):
    rows = editor.layer_rows(spec)
    assert len(rows) == 16 and all(len(row) == 5 for row in rows)


def test_a_new_target_of_the_same_source_re_uses_it_and_says_so(tiny_pipe):
    """The UI keeps its last generated source: a second edit of it with another target runs the target's rows only,
    says "re-used the source", and shows what a full edit would (issue #40)."""
    from freeprompt.editing.generated import edit
    from freeprompt.models.loading import LoadedModel
    from freeprompt.ui.app import Editor

    editor = Editor(LoadedModel(tiny_pipe, {"id": "tiny", "revision": None}, {"steps": 2, "guidance": 3.0}))
    first = editor.generated("a red car", "a blue car", "fpe", 0, 3, 3.0, {}, "")
    again = editor.generated("a red car", "a green car", "fpe", 0, 3, 3.0, {}, "")
    assert "re-used the source" not in first[4] and "re-used the source" in again[4] and again[5] == ""
    full = edit(tiny_pipe, "a red car", ["a green car"], seed=0, steps=3, guidance=3.0, progress=False)
    assert np.abs(np.asarray(again[0][1][0], float) - np.asarray(full.images[1], float)).max() <= 2  # 8-bit images

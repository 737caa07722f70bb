"""--preset on the command line: next to --method in edit, eval and bench shapes, listed by `freeprompt methods`,
recorded in run.json, refused in one line (exit 2) when unknown or when its method is not running; and the caption
a photo given without one is edited with, printed and recorded in run.json."""

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from freeprompt.cli.main import build_app
from freeprompt.editing.methods import FPE, Preset
from freeprompt.shapes import world
from support.cli_runs import edit_args, run

TOY = Preset("a test's preset", {"self_replace": "0:1", "edit_uncond": True}, "this test")


@pytest.fixture
def toy_preset(monkeypatch):
    monkeypatch.setattr(FPE, "presets", {**FPE.presets, "toy-swap": TOY})


def test_preset_is_offered_by_every_command_that_runs_methods(toy_preset):
    runner = CliRunner()
    for command in (["edit"], ["eval"], ["bench", "shapes"]):
        out = runner.invoke(build_app(), [*command, "--help"], terminal_width=200).output
        assert "--preset" in out and "toy-swap" in out, command
    listed = runner.invoke(build_app(), ["methods"]).output
    assert "--preset toy-swap" in listed and "--self-replace 0:1 --edit-uncond" in listed
    table = runner.invoke(build_app(), ["methods", "--markdown"]).output
    assert "| `--preset toy-swap` | fpe | `--self-replace 0:1 --edit-uncond` | a test's preset | this test |" in table


def test_edit_with_a_preset_records_it_and_its_values(toy_preset, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(edit_args(tiny_model_dir, out, "--preset", "toy-swap", "--self-replace", "0:0.5"), capsys)
    assert code == 0, err
    info = json.loads((out / "run.json").read_text())
    assert info["preset"] == "toy-swap"
    assert info["params"]["method_options"] == {"self_replace": "0:0.5", "layers": "<=32x32",
                                                "edit_unconditional": True, "joint": "row", "shared_start": "0:0"}


@pytest.mark.parametrize("extra,message", [
    (["--preset", "no-such"], "unknown preset 'no-such'"),
    (["--preset", "toy-swap", "--method", "p2p"], "preset 'toy-swap' belongs to method fpe, which is not running"),
])
def test_bad_presets_exit_2_in_one_line(toy_preset, tiny_model_dir, tmp_path, capsys, extra, message):
    code, _, err = run(edit_args(tiny_model_dir, tmp_path / "run", *extra), capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def photo_edit_args(model_dir, out, image, *extra):
    return ["edit", "--model", str(model_dir), "--image", str(image), "--source", "", "--target", "a blue star",
            "--steps", "2", "--quiet", "--no-cache", "--out", str(out), *extra]


def test_a_photo_without_a_caption_is_edited_with_the_candidate_the_clip_ranks_first(tiny_model_dir, tmp_path,
                                                                                      capsys):
    sample = world.random_sample(7, template="simple")  # a purple moon
    Image.fromarray(sample.image).save(tmp_path / "photo.png")
    candidates = tmp_path / "captions.txt"
    candidates.write_text("# colours of the world\na red circle\n" + "\n".join(
        world.caption("simple", c, s) for c in world.COLORS for s in ("moon", "square")) + "\n\n")
    out = tmp_path / "run"
    code, stdout, err = run(photo_edit_args(tiny_model_dir, out, tmp_path / "photo.png", "--caption-candidates",
                                            str(candidates), "--caption-clip", "shapes"), capsys)
    assert code == 0, err
    assert "caption: 'a purple moon' (ranked first of 21 candidates by the CLIP shapes" in stdout
    info = json.loads((out / "run.json").read_text())
    assert info["caption"]["text"] == "a purple moon" and info["caption"]["candidates"] == 21
    assert info["params"]["source"] == info["params"]["inversion_source"] == "a purple moon"


def test_a_photo_without_candidates_or_with_no_auto_caption_keeps_the_empty_prompt(tiny_model_dir, tmp_path, capsys):
    Image.fromarray(world.random_sample(7, template="simple").image).save(tmp_path / "photo.png")
    for extra, found in (((), "no candidate captions"), (("--no-auto-caption",), "--no-auto-caption")):
        out = tmp_path / f"run{len(extra)}"
        code, stdout, err = run(photo_edit_args(tiny_model_dir, out, tmp_path / "photo.png", *extra), capsys)
        assert code == 0, err
        assert "caption: ''" in stdout and found in stdout
        info = json.loads((out / "run.json").read_text())
        assert info["caption"]["text"] == "" and info["params"]["source"] == ""


@pytest.mark.parametrize("extra,message", [
    (["--caption-clip", "shapes", "--source", "a red car"], "rank captions of a photo given without one"),
    (["--caption-candidates", "missing.txt"], "caption candidates file missing.txt does not exist"),
])
def test_bad_caption_options_exit_2_in_one_line(tiny_model_dir, tmp_path, capsys, extra, message):
    Image.fromarray(world.random_sample(7, template="simple").image).save(tmp_path / "photo.png")
    code, _, err = run(photo_edit_args(tiny_model_dir, tmp_path / "run", tmp_path / "photo.png", *extra), capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err

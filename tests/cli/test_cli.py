"""The CLI end to end on a tiny random model saved to disk: outputs, and one-line errors for bad input."""

import json
import shutil

import pytest
from PIL import Image

from freeprompt.cli.main import main
from support.cli_runs import edit_args, run


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


def test_edit_writes_images_grid_run_json_and_latents(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(edit_args(model_dir, out, "--target", "a green car", "--save-latents"), capsys)
    assert code == 0, err
    for name in ("source.png", "target_1.png", "target_2.png", "grid.png", "run.json", "latents.safetensors"):
        assert (out / name).exists(), name
    assert Image.open(out / "source.png").size == (64, 64)
    assert Image.open(out / "grid.png").size[0] == 3 * 64
    info = json.loads((out / "run.json").read_text())
    assert info["params"]["targets"] == ["a blue car", "a green car"]
    assert info["params"]["edited_steps"] == {"fpe self": [0, 1]}  # int(0.8 * 3) = 2
    assert info["params"]["method"] == "fpe" and info["machine"]
    assert info["model"]["revision"].startswith("sha256:")
    assert info["versions"]["torch"] and info["versions"]["diffusers"]
    assert set(info["timings"]) >= {"load_s", "encode_s", "denoise_s", "decode_s", "save_s"}
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("extra,method", [
    (["--method", "p2p", "--blend", "car", "--blend", "car", "--reweight", "blue=2"], "p2p"),
    (["--method", "masactrl", "--mask-word", "car", "--mask-word", "car"], "masactrl"),
    (["--method", "pnp", "--pnp-layers", "4-16"], "pnp"),
    (["--cross-replace", "0:0.6", "--self-replace", "0:0.4"], "fpe+p2p"),
])
def test_every_method_runs_from_the_command_line(model_dir, tmp_path, capsys, extra, method):
    out = tmp_path / "run"
    code, stdout, err = run(edit_args(model_dir, out, *extra), capsys)
    assert code == 0, err
    params = json.loads((out / "run.json").read_text())["params"]
    assert params["method"] == method and params["edited_steps"]
    if method == "fpe+p2p":
        assert params["method_options"]["p2p"]["cross_replace"] == "0:0.6"
        assert params["method_options"]["fpe"]["self_replace"] == "0:0.4"


def test_latents_round_trip_reproduces_the_run(model_dir, tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    assert run(edit_args(model_dir, first, "--seed", "7", "--save-latents"), capsys)[0] == 0
    assert run(edit_args(model_dir, second, "--latents", str(first / "latents.safetensors")), capsys)[0] == 0
    assert (first / "target_1.png").read_bytes() == (second / "target_1.png").read_bytes()


def test_layers_command_lists_16_self_and_16_cross(model_dir, capsys):
    code, out, _ = run(["layers", "--model", str(model_dir), "--height", "512", "--width", "512",
                        "--select", "<=32x32"], capsys)
    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:]]
    assert sum(r[0] == "self" for r in rows) == 16 and sum(r[0] == "cross" for r in rows) == 16
    assert [int(r[1]) for r in rows if r[0] == "self" and r[5] == "*"] == list(range(3, 14))


def test_long_prompt_warns_and_continues(model_dir, tmp_path, capsys):
    long = "a red car " + "with shiny wheels " * 30
    out = tmp_path / "long"
    code, _, err = run(["edit", "--model", str(model_dir), "--source", long, "--target", "a blue car", "--steps", "2",
                        "--height", "64", "--width", "64", "--quiet", "--out", str(out)], capsys)
    assert code == 0
    assert "truncated" in err and err.count("\n") == 1
    assert (out / "target_1.png").exists()


def bad_cases(model_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    partial = tmp_path / "partial"
    shutil.copytree(model_dir, partial)
    for f in (partial / "unet").glob("*.safetensors"):
        f.unlink()
    not_sd = tmp_path / "not_sd"
    not_sd.mkdir()
    (not_sd / "readme.txt").write_text("hello")
    out = tmp_path / "out"
    base = ["--steps", "2", "--height", "64", "--width", "64", "--quiet"]
    return {
        "empty source": (["edit", "--model", str(model_dir), "--source", "", "--target", "a car",
                          "--out", str(out), *base], "empty"),
        "blank target": (["edit", "--model", str(model_dir), "--source", "a car", "--target", "   ",
                          "--out", str(out), *base], "empty"),
        "range above 1": (edit_args(model_dir, out, "--self-replace", "0:1.5"), "outside"),
        "range reversed": (edit_args(model_dir, out, "--self-replace", "0.8:0.2"), "starts after"),
        "unparsable layers": (edit_args(model_dir, out, "--layers", "four-ten"), "layer spec"),
        "layer out of range": (edit_args(model_dir, out, "--layers", "4-17"), "1-16"),
        "height not multiple of 8": (edit_args(model_dir, out, "--height", "60"), "multiple of 8"),
        "zero height": (["edit", "--model", str(model_dir), "--source", "a car", "--target", "a red car", "--out",
                         str(out), "--steps", "2", "--height", "0", "--width", "64", "--quiet"], "'--height'"),
        "zero steps": (["edit", "--model", str(model_dir), "--source", "a car", "--target", "a red car", "--out",
                        str(out), "--steps", "0", "--quiet"], "'--steps'"),
        "too many steps": (["edit", "--model", str(model_dir), "--source", "a car", "--target", "a red car", "--out",
                            str(out), "--steps", "1001", "--quiet"], "'--steps'"),
        "missing model": (edit_args(tmp_path / "nope", out), "does not exist"),
        "partial model": (edit_args(partial, out), "no weights"),
        "not a SD folder": (edit_args(not_sd, out), "model_index.json"),
        "unwritable out": (edit_args(model_dir, blocker / "sub"), "cannot hold"),
        "pickle refused": (edit_args(blocker.with_suffix(".ckpt"), out), "does not exist"),
        "unknown method": (edit_args(model_dir, out, "--method", "sdedit"), "unknown or repeated method"),
        "option of another method": (edit_args(model_dir, out, "--reweight", "blue=2"), "--reweight belong"),
        "bad reweight": (edit_args(model_dir, out, "--method", "p2p", "--reweight", "blue"), "WORD=FACTOR"),
        "replace needs equal tokens": (["edit", "--model", str(model_dir), "--source", "a car", "--target",
                                        "a big red car", "--method", "p2p", "--out", str(out), *base], "refine"),
        "bad mask threshold": (edit_args(model_dir, out, "--method", "masactrl", "--mask-threshold", "3"), "outside"),
        "nan guidance": (edit_args(model_dir, out, "--guidance", "nan"), "guidance"),
        "negative guidance": (edit_args(model_dir, out, "--guidance", "-1"), "guidance"),
    }


@pytest.mark.parametrize("case", ["empty source", "blank target", "range above 1", "range reversed",
                                  "unparsable layers", "layer out of range", "height not multiple of 8",
                                  "zero height", "zero steps", "too many steps", "missing model", "partial model",
                                  "not a SD folder", "unwritable out", "unknown method", "option of another method",
                                  "bad reweight", "replace needs equal tokens", "bad mask threshold", "nan guidance",
                                  "negative guidance"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(model_dir, tmp_path, capsys, case):
    argv, expected = bad_cases(model_dir, tmp_path)[case]
    code, stdout, err = run(argv, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("freeprompt: error:"), err
    assert expected in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize("argv,expected", [
    (["edit", "--source", "a", "--target", "b", "--out", "x", "--colour", "red"], "No such option"),
    (["ablate", "--out", "x", "extra"], "unexpected extra argument"),
    (["edit", "--source", "a", "--out", "x"], "Missing option"),
    (["edit", "--steps", "many", "--source", "a", "--target", "b", "--out", "x"], "'--steps'"),
    (["frobnicate"], "No such command"),
])
def test_usage_errors_are_one_line_exit_2(capsys, argv, expected):
    code, _, err = run(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and expected in err and "--help" in err, err


def test_bare_command_prints_help(capsys):
    code, out, err = run([], capsys)
    assert code == 0 and "edit" in out and "eval" in out and not err


def test_pickle_checkpoint_refused_without_flag(tmp_path, capsys):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04not really")
    code, _, err = run(["layers", "--model", str(ckpt)], capsys)
    assert code == 2 and "pickle" in err and "--allow-pickle" in err


def test_debug_shows_the_traceback(model_dir, tmp_path):
    from freeprompt.errors import BadInput

    with pytest.raises(BadInput):
        main(edit_args(model_dir, tmp_path / "o", "--self-replace", "2:3", "--debug"))


def test_offline_hub_model_not_cached(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, _, err = run(["layers", "--model", "someone/not-cached-model"], capsys)
    assert code == 2 and "offline" in err and "\n" == err[-1] and err.count("\n") == 1


def test_edit_a_photo_writes_reconstruction_and_reuses_the_cached_inversion(model_dir, tmp_path, capsys):
    from freeprompt.shapes import world

    photo = tmp_path / "photo.png"
    Image.fromarray(world.random_sample(3, size=80).image).save(photo)  # not the model size: gets cropped
    args = ["edit", "--model", str(model_dir), "--image", str(photo), "--source", "", "--target", "a blue car",
            "--steps", "3", "--quiet", "--cache-dir", str(tmp_path / "cache"), "--inversion", "direct"]
    code, stdout, err = run(args + ["--out", str(tmp_path / "a")], capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "a" / "input.png").size == (64, 64)
    first = json.loads((tmp_path / "a" / "run.json").read_text())["params"]
    assert first["inversion"] == "direct" and first["inversion_cached"] is False and first["inversion_source"] == ""
    assert run(args + ["--out", str(tmp_path / "b")], capsys)[0] == 0
    second = json.loads((tmp_path / "b" / "run.json").read_text())["params"]
    assert second["inversion_cached"] is True
    assert (tmp_path / "a" / "target_1.png").read_bytes() == (tmp_path / "b" / "target_1.png").read_bytes()


@pytest.mark.parametrize("extra,expected", [
    (["--inversion", "magic"], "inversion"),
    (["--resize", "squash"], "resize"),
    (["--negative", "blurry"], "--negative and --image"),
])
def test_photo_options_are_checked_before_loading(model_dir, tmp_path, capsys, extra, expected):
    photo = tmp_path / "p.png"
    Image.new("RGB", (64, 64), "red").save(photo)
    code, _, err = run(["edit", "--model", str(model_dir), "--image", str(photo), "--source", "a car", "--target",
                        "a blue car", "--out", str(tmp_path / "o"), *extra], capsys)
    assert code == 2 and expected in err.lower() and err.count("\n") == 1


@pytest.mark.parametrize("module", ["freeprompt", "freeprompt.cli.main"])
def test_module_entry_points_have_every_command(module):
    """`python -m freeprompt` (and the form `accelerate launch -m ...` uses) registers all subcommands."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for command in ("edit", "layers", "bench", "probe"):
        assert command in result.stdout, (command, result.stdout)


@pytest.mark.parametrize("kind", ["host", "cuda", "mps", "other"])
def test_out_of_memory_is_a_one_line_error_and_other_failures_internal(kind, monkeypatch, capsys):
    import torch

    import freeprompt.models.loading as loading

    error = {"host": MemoryError(),
             "cuda": torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
             "mps": RuntimeError("MPS backend out of memory (MPS allocated: 9.5 GB, other allocations: 1 GB)"),
             "other": RuntimeError("shape mismatch")}[kind]

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(loading, "load_pipeline", fail)
    code, _, err = run(["layers", "--model", "anything"], capsys)
    assert err.count("\n") == 1 and "Traceback" not in err
    if kind == "other":
        assert code == 1 and err.startswith("freeprompt: internal error: RuntimeError: shape mismatch")
    else:
        assert code == 2 and err.startswith("freeprompt: error: out of memory;")

"""The command line on a diffusion transformer's folder (a tiny random FLUX.1 saved in the test): every method edits
side by side, run.json names the family and the flow sampler, ``layers`` lists the joint layers, and what a
transformer cannot do (null-text inversion, DDIM on a flow model) is one line with exit status 2; a photo is inverted
on it with the flow solver asked for."""

import json

import pytest

from support.cli_runs import edit_args, run


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory):
    from freeprompt.models.random_transformers import random_transformer_pipeline

    folder = tmp_path_factory.mktemp("flux") / "tiny-flux"
    random_transformer_pipeline("tiny-flux").save_pretrained(folder, safe_serialization=True)
    return folder


def test_every_method_edits_a_flux_model_from_its_folder(flux_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(edit_args(flux_folder, out, "--method", "fpe,p2p,masactrl,pnp,plain"), capsys)
    assert code == 0, err
    for name in ("fpe", "p2p", "masactrl", "pnp", "plain"):
        record = json.loads((out / name / "run.json").read_text())["params"]
        assert record["family"] == "flux" and record["scheduler_name"] == "flow", name
        assert (out / name / "target_1.png").exists()
    fpe = json.loads((out / "fpe" / "run.json").read_text())["params"]
    assert fpe["edited_layers"] == {"fpe joint": [1, 2, 3]} and fpe["method_options"]["joint"] == "row"


def test_layers_lists_the_joint_layers(flux_folder, capsys):
    code, stdout, _ = run(["layers", "--model", str(flux_folder), "--height", "64", "--width", "64", "--select",
                           "single"], capsys)
    assert code == 0
    rows = [line.split() for line in stdout.splitlines()[1:]]
    assert [(r[0], r[2]) for r in rows] == [("joint", "double.0"), ("joint", "single.0"), ("joint", "single.1")]
    assert [r[5] == "*" for r in rows] == [False, True, True]


@pytest.mark.parametrize("extra, message", [
    (("--scheduler", "ddim"), "the ddim scheduler cannot sample a flow-matching model"),
    (("--image", "PHOTO", "--inversion", "null-text"), "the null-text inversion edits a noise-prediction model's"),
    (("--image", "PHOTO", "--inversion-solver", "rk4"), "unknown inversion solver 'rk4'"),
    (("--method", "p2p", "--p2p-mode", "refine"), "--p2p-mode refine is defined for models with cross-attention"),
])
def test_what_a_transformer_cannot_do_is_one_line(flux_folder, tmp_path, capsys, extra, message):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), "white").save(photo)
    extra = tuple(str(photo) if e == "PHOTO" else e for e in extra)
    code, _, err = run(edit_args(flux_folder, tmp_path / "out", *extra), capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_photo_is_inverted_and_edited_on_a_flux_model(flux_folder, tmp_path, capsys):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), "white").save(photo)
    out = tmp_path / "out"
    args = edit_args(flux_folder, out, "--image", str(photo), "--inversion-solver",
                     "midpoint", "--cache-dir", str(tmp_path / "cache"))
    code, _, err = run(args, capsys)
    assert code == 0, err
    record = json.loads((out / "run.json").read_text())["params"]
    assert record["inversion"] == "direct" and record["inversion_solver"] == "midpoint"
    assert record["scheduler_name"] == "flow" and record["reconstruction_latent_rmse"] < 1e-5


def test_ablate_on_a_flux_model_defaults_to_what_joint_attention_defines(flux_folder, tmp_path, capsys):
    import csv

    out = tmp_path / "ablation"
    base = ["ablate", "--model", str(flux_folder), "-s", "a red car", "-t", "a blue car", "--limit", "1", "--ratios",
            "0.5", "--steps", "2", "--quiet"]
    code, _, err = run([*base, "--out", str(out)], capsys)
    assert code == 0, err
    cells = {(row["type"], row["layers"]) for row in csv.DictReader(open(out / "cells.csv"))}
    assert cells == {("cross", "all"), ("self", "all")}  # no 4-14 or <=32x32 (one grid), no both (one softmax)
    code, _, err = run([*base, "--types", "both", "--out", str(tmp_path / "both")], capsys)
    assert code == 2 and "--types both (self- and cross-attention replaced together) is not defined" in err

"""Presets: named bundles of a method's option values, declared on the method beside its options, applied by
``build_methods`` before the options a user gives (given options win), refused in one line when unknown or when
their method is not running; the shipped presets are well declared and run on tiny random SD1.x, SD2.x and SDXL
pipelines unchanged."""

import pytest
import torch

from freeprompt.attention.steps import StepRange
from freeprompt.editing.generated import edit
from freeprompt.editing.methods import (
    FPE,
    METHODS,
    P2P,
    PRESET,
    Combined,
    Preset,
    build_method,
    build_methods,
    option_table,
    preset_table,
)
from freeprompt.errors import BadInput
from freeprompt.models.random import random_pipeline

TOY = {"toy-swap": Preset("a test's preset", {"self_replace": "0:1", "edit_uncond": True}, "this test"),
       "toy-both": Preset("a test's preset with P2P", {"self_replace": "0:0.5", "cross_replace": "0:0.3",
                                                       "p2p_mode": "refine"}, "this test")}


@pytest.fixture
def toy_presets(monkeypatch):
    monkeypatch.setattr(FPE, "presets", {**FPE.presets, **TOY})
    return TOY


def test_a_preset_gives_its_values(toy_presets):
    method = build_method("fpe", {PRESET: "toy-swap"})
    assert method == FPE(self_replace="0:1", edit_unconditional=True)


def test_given_options_win_over_the_preset(toy_presets):
    method = build_method("fpe", {PRESET: "toy-swap", "self_replace": "0:0.7", "layers": "4-14"})
    assert method == FPE(self_replace="0:0.7", layers="4-14", edit_unconditional=True)


def test_a_preset_may_set_the_options_of_a_method_that_joins_it(toy_presets):
    method = build_method("fpe", {PRESET: "toy-both"})
    assert isinstance(method, Combined) and method.name == "fpe+p2p"
    fpe, p2p = method.methods
    assert fpe.self_replace == StepRange(0, 0.5) and p2p.mode == "refine" and p2p.cross_replace == StepRange(0, 0.3)
    assert p2p.self_replace == StepRange(0, 0)  # P2P's defaults beside FPE still apply


def test_a_preset_goes_only_to_the_runs_of_its_method(toy_presets):
    built = build_methods("fpe,p2p,plain", {PRESET: "toy-swap"})
    assert built["fpe"] == FPE(self_replace="0:1", edit_unconditional=True)
    assert built["p2p"] == P2P() and built["plain"].options() == {}


@pytest.mark.parametrize("given,message", [
    ({PRESET: "no-such"}, "unknown preset 'no-such'"),
    ({PRESET: "toy-swap", "self_replace": "0.9:0.1"}, "FPE's self-replace steps: step range 0.9:0.1 starts after"),
])
def test_bad_presets_are_one_line_errors(toy_presets, given, message):
    with pytest.raises(BadInput) as refused:
        build_methods("fpe", given)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_preset_of_a_method_not_running_is_refused(toy_presets):
    with pytest.raises(BadInput) as refused:
        build_methods("p2p,plain", {PRESET: "toy-swap"})
    assert "preset 'toy-swap' belongs to method fpe, which is not running" in str(refused.value)
    assert "--method fpe" in refused.value.fix


def test_preset_flags_read_back_as_the_same_options(toy_presets):
    owners = {d.param: d for _, d in option_table()}
    assert TOY["toy-swap"].flags(owners) == "--self-replace 0:1 --edit-uncond"
    assert TOY["toy-both"].flags(owners) == "--self-replace 0:0.5 --cross-replace 0:0.3 --p2p-mode refine"


def test_the_shipped_presets_are_declared_well():
    owners = {d.param: (method, d) for method, d in option_table()}
    assert preset_table(), "freeprompt ships at least one preset"
    for method, name, preset in preset_table():
        assert name == name.strip().lower() and " " not in name and preset.help and preset.source
        for param in preset.values:
            owner, declared = owners[param]  # every value is a declared option ...
            assert owner == method or declared.joins == method or any(  # ... of its method or one that joins it
                owners[p][1].joins == method and owners[p][0] == owner for p in preset.values)
        built = build_method(method, {PRESET: name})  # every value reads
        assert built.name.split("+")[0] == method


@pytest.mark.parametrize("family", ["tiny", "tiny-sd2", "tiny-sdxl"])
def test_the_shipped_presets_run_unchanged_on_every_model_family(family):
    pipe = random_pipeline(family, seed=0, torch_dtype=torch.float32)
    for method, name, _ in preset_table():
        built = build_method(method, {PRESET: name})
        result = edit(pipe, "a red car", ["a blue car", "a red truck"], method=built, seed=1, steps=4,
                      height=64, width=64, progress=False)
        assert len(result.images) == 3 and torch.isfinite(result.latents).all()
        assert result.params["edited_steps"], (family, name)
        plain = edit(pipe, "a red car", ["a blue car", "a red truck"], method=METHODS["plain"](), seed=1, steps=4,
                     height=64, width=64, progress=False)
        assert (plain.latents[1:] - result.latents[1:]).abs().max() > 1e-4  # the preset edits

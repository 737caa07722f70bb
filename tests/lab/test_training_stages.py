"""Refinement stages of fixture training: the stage spec is parsed and refused in one line, stages are laid end to
end and fitted to a budget in proportion, and a staged toy run restarts each stage the way continued training
does (weights from their EMA, a fresh optimizer, the stage's own schedule, swaps and draws) and resumes across a
stage boundary to the same weights as an uninterrupted run."""

import json

import pytest
import torch
from test_fixture_training import TOY

from freeprompt.errors import BadInput
from lab.fixture import training
from lab.fixture.stages import Stage, StagePlan, format_stages, parse_stages
from lab.fixture.training import EMA, TrainConfig, lr_at, restart_from_ema, train

LINEAGE = "steps=400 lr=1e-4 warmup=20 swap=0.25; steps=400 lr=1e-4 warmup=20 swap=0.5 shapes=star=3,moon=3"


def test_stage_specs_parse_format_and_refuse():
    stages = parse_stages(LINEAGE)
    assert stages == [Stage(400, 1e-4, 20, 0.25, ""), Stage(400, 1e-4, 20, 0.5, "star=3,moon=3")]
    assert parse_stages(format_stages(stages)) == stages
    assert parse_stages("") == [] and parse_stages(" ; ") == []
    assert parse_stages("steps=5") == [Stage(5, 1e-4, 20)]  # the continuations' lr and warm-up
    for bad, message in (("lr=1e-4", "no steps="), ("steps=4 rate=1", "not one of"), ("steps=4 lr", "not one of"),
                         ("steps=x", "not a number"), ("steps=0", "steps >= 1"), ("steps=4 lr=0", "lr > 0"),
                         ("steps=4 swap=1", "outside"), ("steps=4 shapes=hexagon=2", "unknown shape")):
        with pytest.raises(BadInput, match=message) as err:
            parse_stages(bad)
        assert "\n" not in str(err.value)
    assert TrainConfig().refine_stages and parse_stages(TrainConfig().refine_stages) == stages  # the v11 lineage


def test_stage_plan_indexes_fits_and_truncates():
    plan = StagePlan([Stage(3000, 5e-4, 100), Stage(400, 1e-4, 20), Stage(400, 1e-4, 20)])
    assert plan.total == 3800 and plan.starts == [0, 3000, 3400]
    assert [plan.index(s) for s in (0, 2999, 3000, 3399, 3400, 3799, 5000)] == [0, 0, 1, 1, 2, 2, 2]
    half = plan.fitted(1900)
    assert [s.steps for s in half.stages] == [1500, 200, 200] and half.total == 1900
    assert [s.steps for s in plan.fitted(1901).stages] == [1501, 200, 200]  # the first stage takes the rounding
    assert all(s.steps >= 1 for s in plan.fitted(10).stages[1:])
    cut = plan.truncated(3100)
    assert [s.steps for s in cut.stages] == [3000, 100] and cut.stages[1].lr == 1e-4


def test_restart_from_ema_copies_the_average_into_the_model():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, 0.9)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, 100)
    restart_from_ema(model, ema)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ema.shadow.parameters()))
    assert model.weight.requires_grad


def _staged(**extra):
    return TrainConfig(**{**TOY, "unet_steps": 4, "unet_batch": 8, "checkpoint_every": 2,
                          "refine_stages": "steps=3 lr=2e-4 warmup=1 swap=0.5; steps=2 lr=1e-4 warmup=0 shapes=star=3",
                          **extra})


def test_each_stage_restarts_like_continued_training(tmp_path, monkeypatch):
    optimizers, restarts, lrs, swaps, weights = [], [], [], [], []
    real_adamw, real_restart = training.adamw, training.restart_from_ema
    real_loss, real_draw = training.epsilon_loss, training.draw_rows

    def recording_adamw(params, lr):
        optimizers.append(real_adamw(params, lr))
        return optimizers[-1]

    def recording_restart(model, ema):
        restarts.append(sum(p.detach().double().sum().item() for p in ema.shadow.parameters()))
        real_restart(model, ema)
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ema.shadow.parameters()))

    def recording_loss(pred, noise, weight=None, structure_only=None):
        lrs.append(optimizers[-1].param_groups[0]["lr"])
        swaps.append(structure_only)
        return real_loss(pred, noise, weight, structure_only)

    def recording_draw(n, batch, gen, w=None):
        weights.append(w)
        return real_draw(n, batch, gen, w)

    monkeypatch.setattr(training, "adamw", recording_adamw)
    monkeypatch.setattr(training, "restart_from_ema", recording_restart)
    monkeypatch.setattr(training, "epsilon_loss", recording_loss)
    monkeypatch.setattr(training, "draw_rows", recording_draw)
    out = tmp_path / "staged"
    train(out, _staged())

    assert len(optimizers) == 3 and len(restarts) == 2 * 2  # unet and text encoder at each of 2 boundaries
    expected = [5e-4 * lr_at(i, 4, 1) for i in range(4)] + [2e-4 * lr_at(i, 3, 1) for i in range(3)] \
        + [1e-4 * lr_at(i, 2, 0) for i in range(2)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert swaps[:4] == [None] * 4 and all(s is not None for s in swaps[4:7]) and swaps[7:] == [None] * 2
    assert weights[:7] == [None] * 7 and all(w is not None and 3.0 in w for w in weights[7:])
    info = json.loads((out / "freeprompt_fixture.json").read_text())
    assert [s["steps"] for s in info["stages"]] == [4, 3, 2] and info["stages"][2]["shapes"] == "star=3"


def test_resume_across_a_stage_boundary_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    whole = tmp_path / "whole"
    train(whole, _staged())
    # stages: steps 0-3, 4-6, 7-8; checkpoints after steps 1, 3, 5, 7. Killed during step 5 the run resumes at
    # step 4, the first of stage 2 (the restart is done again); killed during step 7, at step 6, inside stage 2
    # (its optimizer comes from the checkpoint)
    for kill_at in (5, 7):
        calls = {"n": 0}
        real = training.epsilon_loss

        def dying_loss(*args, **kwargs):
            calls["n"] += 1  # noqa: B023 - the loss is put back before the next iteration
            if calls["n"] == kill_at + 1:  # noqa: B023
                raise KeyboardInterrupt
            return real(*args, **kwargs)  # noqa: B023

        out = tmp_path / f"resumed{kill_at}"
        monkeypatch.setattr(training, "epsilon_loss", dying_loss)
        with pytest.raises(KeyboardInterrupt):
            train(out, _staged())
        monkeypatch.setattr(training, "epsilon_loss", real)
        train(out, _staged())
        for part in ("unet", "text_encoder"):
            name = "model.safetensors" if part == "text_encoder" else "diffusion_pytorch_model.safetensors"
            a, b = load_file(whole / part / name), load_file(out / part / name)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (kill_at, part)


def test_time_budget_shortens_every_stage_in_proportion(tmp_path, monkeypatch):
    class FittingBudget:  # what StepBudget does after timing the first steps, without a clock
        def __init__(self, *args):
            pass

        def fit(self, step, total):
            return 20 if step == 2 else total

        def overrun(self):
            return False

    monkeypatch.setattr(training, "StepBudget", FittingBudget)
    out = tmp_path / "budget"
    train(out, _staged(unet_steps=40, refine_stages="steps=10 swap=0.5", time_budget_min=1.0))
    info = json.loads((out / "freeprompt_fixture.json").read_text())
    assert [s["steps"] for s in info["stages"]] == [16, 4] and info["stages"][1]["swap"] == 0.5
    # the saved config repeats the fitted run
    assert info["config"]["unet_steps"] == 16
    assert parse_stages(info["config"]["refine_stages"]) == [Stage(4, 1e-4, 20, 0.5)]


def test_time_budget_spent_records_the_stages_run(tmp_path):
    out = tmp_path / "spent"
    train(out, _staged(time_budget_min=1e-4))  # spent by the rendering and the VAE: no UNet step is run
    info = json.loads((out / "freeprompt_fixture.json").read_text())
    assert sum(s["steps"] for s in info["stages"]) == 0 and info["config"]["refine_stages"] == ""

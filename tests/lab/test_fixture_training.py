"""The fixture's training script on a toy configuration: the rendered set does not depend on how it is rendered or
cached, a run writes a loadable Stable Diffusion folder, a time budget cuts the run short and records the steps
it ran, and continued training starts from a trained folder of the same architecture only."""

import json

import numpy as np
import pytest
import torch

from freeprompt.errors import BadInput
from freeprompt.shapes import world
from lab.fixture.training import (
    TrainConfig,
    build_models,
    colour_token_ids,
    colour_word_positions,
    draw_rows,
    epsilon_loss,
    load_or_render,
    parse_shape_weights,
    render_dataset,
    row_weights,
    swap_colour_words,
    train,
)

TOY = dict(image_size=32, num_images=48, vae_channels=(16, 16), vae_steps=2, vae_batch=4, text_width=32,
           text_layers=1, text_heads=2, unet_channels=(16, 16, 32, 32), unet_steps=3, unet_batch=4, warmup=1,
           threads=1, checkpoint_every=2, refine_stages="")


def test_parallel_and_cached_rendering_match_serial(tmp_path):
    cfg = TrainConfig(**{**TOY, "num_images": 2500})  # more than one 2000-image chunk
    images, captions = render_dataset(cfg)
    par_images, par_captions = render_dataset(cfg, workers=2)
    assert np.array_equal(images, par_images) and captions == par_captions
    cache = tmp_path / "data.npz"
    load_or_render(cfg, cache)
    cached_images, cached_captions = load_or_render(cfg, cache)
    assert np.array_equal(images, cached_images) and captions == cached_captions
    # a cache of another size is not used
    other, _ = load_or_render(TrainConfig(**{**TOY, "num_images": 10}), cache)
    assert len(other) == 10


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "model"
    train(out, TrainConfig(**TOY))
    return out


def test_training_writes_a_loadable_model_folder(toy_model):
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    info = json.loads((toy_model / "freeprompt_fixture.json").read_text())
    assert info["config"]["unet_steps"] == 3 and info["hardware"].startswith("cpu")
    assert info["parameters"]["unet"] > 0
    with safe_open(str(toy_model / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"F16"}
    pipe = StableDiffusionPipeline.from_pretrained(toy_model)
    assert pipe.unet.config.sample_size == 16  # 32 px through a x2 VAE
    assert pipe.vae.config.scaling_factor == pytest.approx(info["latent_scaling_factor"])
    with pytest.raises(BadInput, match="already exists"):
        train(toy_model, TrainConfig(**TOY))


def test_plain_diffusers_loads_and_runs_the_folder_in_float32(toy_model):
    from diffusers import StableDiffusionPipeline

    # no dtype asked for: diffusers loads its UNet and VAE in float32, and transformers 5 loads the text encoder in
    # the dtype its config names, which must then be float32 too (fp16 failed the first call: "mat1 and mat2 must
    # have the same dtype")
    pipe = StableDiffusionPipeline.from_pretrained(toy_model)
    parts = ("unet", "vae", "text_encoder")
    assert {name: getattr(pipe, name).dtype for name in parts} == dict.fromkeys(parts, torch.float32)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a red circle", num_inference_steps=2, guidance_scale=3.0, output_type="np",
               generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 32, 32, 3) and out.images.dtype == np.float32 and np.isfinite(out.images).all()


def test_time_budget_stops_and_records_the_steps_run(tmp_path):
    out = tmp_path / "budget"
    # a budget already spent by the rendering and the VAE: the UNet stops before its 50 steps
    train(out, TrainConfig(**{**TOY, "unet_steps": 50, "time_budget_min": 1e-4}))
    steps = json.loads((out / "freeprompt_fixture.json").read_text())["config"]["unet_steps"]
    assert 0 <= steps < 50


def test_exported_checkpoint_is_the_runs_model(toy_model, tmp_path):
    from diffusers import StableDiffusionPipeline

    from lab.fixture.training import export_checkpoint

    out = export_checkpoint(toy_model.with_name(toy_model.name + ".work"), tmp_path / "snapshot")
    info = json.loads((out / "freeprompt_fixture.json").read_text())
    assert info["checkpoint_step"] == 3  # the last checkpoint is written at the run's last step
    final, snapshot = (StableDiffusionPipeline.from_pretrained(p) for p in (toy_model, out))
    # the same EMA weights and latent scale as the finished run saved
    for name in ("unet", "text_encoder", "vae"):
        a, b = getattr(final, name).state_dict(), getattr(snapshot, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert snapshot.vae.config.scaling_factor == final.vae.config.scaling_factor
    with pytest.raises(BadInput, match="already exists"):
        export_checkpoint(toy_model.with_name(toy_model.name + ".work"), out)
    with pytest.raises(BadInput, match="no checkpoint"):
        export_checkpoint(tmp_path / "nowhere", tmp_path / "x")


def test_continued_training_keeps_the_parent_vae_and_scale(toy_model, tmp_path):
    from diffusers import AutoencoderKL

    from lab.fixture.training import export_checkpoint

    out = tmp_path / "continued"
    train(out, TrainConfig(**TOY), init_from=toy_model)
    info = json.loads((out / "freeprompt_fixture.json").read_text())
    parent = json.loads((toy_model / "freeprompt_fixture.json").read_text())
    assert info["continued_from"]["config"] == parent["config"]
    assert info["latent_scaling_factor"] == parent["latent_scaling_factor"]
    a = AutoencoderKL.from_pretrained(toy_model, subfolder="vae").state_dict()
    b = AutoencoderKL.from_pretrained(out, subfolder="vae").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the work folder holds the parent's VAE too, so the run can be exported (and resumed) like any other
    exported = export_checkpoint(out.with_name(out.name + ".work"), tmp_path / "exported")
    c = AutoencoderKL.from_pretrained(exported, subfolder="vae")
    assert all(torch.equal(a[k], v) for k, v in c.state_dict().items())
    assert c.config.scaling_factor == parent["latent_scaling_factor"]


def test_continued_training_refuses_another_architecture(toy_model, tmp_path):
    with pytest.raises(BadInput, match="do not fit the configured architecture") as err:
        train(tmp_path / "wider", TrainConfig(**{**TOY, "unet_channels": (32, 32, 32, 32)}), init_from=toy_model)
    assert "\n" not in str(err.value)
    with pytest.raises(BadInput, match="cannot start from"):
        train(tmp_path / "none", TrainConfig(**TOY), init_from=tmp_path / "missing")


def test_step_budget_fits_the_step_count_to_the_time_left(monkeypatch):
    from lab.fixture import training

    now = {"t": 0.0}
    monkeypatch.setattr(training.time, "time", lambda: now["t"])
    budget = training.StepBudget(1.0, started=0.0, device=torch.device("cpu"), first_step=0)
    assert budget.fit(0, 1000) == 1000
    now["t"] = 10.0
    assert budget.fit(5, 1000) == 1000  # the timing starts
    now["t"] = 12.0  # 20 steps in 2 s: 0.1 s per step, 48 s left, 90 % of them used
    assert budget.fit(25, 1000) == 25 + 432
    assert budget.fit(25 + 1, 10) == 10  # only the timed window changes it
    assert not budget.overrun()
    now["t"] = 62.5  # past 104 % of the minute
    assert budget.overrun()
    assert training.StepBudget(0.0, 0.0, torch.device("cpu"), 0).fit(25, 7) == 7


def test_ema_update_matches_a_per_tensor_reference():
    from lab.fixture.training import EMA

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    ema = EMA(model, 0.9)
    reference = [p.detach().clone() for p in model.parameters()]
    for step in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update(model, step)
        decay = min(0.9, (1 + step) / (10 + step))
        reference = [r * decay + p.detach() * (1 - decay) for r, p in zip(reference, model.parameters())]
    for shadow, ref in zip(ema.shadow.parameters(), reference):
        torch.testing.assert_close(shadow, ref, atol=1e-6, rtol=0)


def test_compiled_forward_trains_the_same_weights(toy_model, tmp_path, monkeypatch):
    from diffusers import UNet2DConditionModel

    modes, real_compile = [], torch.compile

    def eager_compile(model, mode=None):  # the graph capture without inductor's C++ build, which CI need not have
        modes.append(mode)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    with pytest.raises(BadInput, match="unknown compile mode 'fast'"):
        train(tmp_path / "fast", TrainConfig(**TOY, compile="fast"))
    out = tmp_path / "compiled"
    train(out, TrainConfig(**TOY, compile="default"))
    assert modes == ["default", "default"]  # the UNet and the text encoder
    assert json.loads((out / "freeprompt_fixture.json").read_text())["config"]["compile"] == "default"
    plain = UNet2DConditionModel.from_pretrained(toy_model, subfolder="unet").state_dict()
    compiled = UNet2DConditionModel.from_pretrained(out, subfolder="unet").state_dict()
    assert plain.keys() == compiled.keys()  # saved from the plain module: no compile prefixes
    # same seed, same data, the same operations: the same fp16 weights (a few steps move them by less than any
    # tolerance would hide, so equality it is)
    assert all(torch.equal(compiled[key], plain[key]) for key in plain)


def test_structure_masks_match_the_rendered_truth():
    from freeprompt.shapes import world
    from lab.fixture.training import structure_masks

    samples = [world.random_sample(i) for i in range(120)]  # plain and park scenes, single objects and pairs
    masks = structure_masks(np.stack([s.image for s in samples]))
    ious = []
    for sample, mask in zip(samples, masks):
        truth = np.logical_or.reduce([o.mask for o in sample.objects])
        ious.append((mask & truth).sum() / (mask | truth).sum())
    # only anti-aliased border pixels may disagree (the masks take partly covered pixels in, the truth takes pixels
    # covered at least half)
    assert min(ious) >= 0.8 and np.mean(ious) >= 0.9


def test_structure_weight_puts_objects_on_latent_channel_0():
    import torch.nn.functional as F

    from lab.fixture.training import encode_latents, structure_masks, train_vae

    # every step on 16 px crops of the 32 px renders: a crop whose mask were cut elsewhere than its image would teach
    # channel 0 the wrong places, and the whole-image check below would fail
    cfg = TrainConfig(**{**TOY, "num_images": 64, "vae_steps": 60, "vae_batch": 8, "vae_structure_weight": 1.0,
                         "vae_structure_start": 0.0, "vae_crop": 16, "vae_crop_until": 1.0})
    vae, _, _ = build_models(cfg)
    images, _ = render_dataset(cfg)
    train_vae(vae, images, cfg, lambda *a: None)
    channel0 = encode_latents(vae, images)[:, 0]
    cover = F.avg_pool2d(torch.from_numpy(structure_masks(images)).float()[:, None], 2)[:, 0]
    on, off = channel0[cover > 0.75].mean().item(), channel0[cover < 0.01].mean().item()
    # pulled towards +3 on objects and -3 on the background; 60 toy steps get it part of the way (without the
    # term the toy VAE's channel 0 separates them by less than 1)
    assert on > 1.5 and off < -0.5, (on, off)


def test_random_crops_are_windows_on_the_latent_grid():
    from lab.fixture.training import random_crops

    size, side, factor = 16, 8, 4
    rows, cols = np.mgrid[0:size, 0:size]
    images = np.repeat(np.stack([rows, cols, np.zeros_like(rows)], -1)[None], 200, 0).astype(np.uint8)
    masks = (rows + cols)[None].repeat(200, 0) % 3 == 0
    crops, crop_masks = random_crops(images, masks, side, factor, torch.Generator().manual_seed(0))
    assert crops.shape == (200, side, side, 3) and crop_masks.shape == (200, side, side)
    offsets = set()
    for crop, crop_mask in zip(crops, crop_masks):
        y, x = int(crop[0, 0, 0]), int(crop[0, 0, 1])  # the window's corner, read from the coordinate image
        assert y % factor == 0 and x % factor == 0
        assert np.array_equal(crop, images[0, y:y + side, x:x + side])
        assert np.array_equal(crop_mask, masks[0, y:y + side, x:x + side])
        offsets.add((y, x))
    assert offsets == {(y, x) for y in (0, 4, 8) for x in (0, 4, 8)}  # every window on the grid is drawn


def test_vae_crop_off_the_latent_grid_is_refused(tmp_path):
    with pytest.raises(BadInput, match="not on the latent grid"):
        train(tmp_path / "model", TrainConfig(**{**TOY, "vae_crop": 15}))
    assert not (tmp_path / "model.work").exists()


def test_channels_last_training_matches_contiguous(toy_model, tmp_path):
    from diffusers import UNet2DConditionModel

    with pytest.raises(BadInput, match="unknown UNet memory format 'nhwc'"):
        train(tmp_path / "nhwc", TrainConfig(**TOY, unet_memory_format="nhwc"))
    out = tmp_path / "channels_last"
    train(out, TrainConfig(**TOY, unet_memory_format="channels_last"))  # saving would fail on non-contiguous weights
    contiguous = UNet2DConditionModel.from_pretrained(toy_model, subfolder="unet").state_dict()
    last = UNet2DConditionModel.from_pretrained(out, subfolder="unet").state_dict()
    initial = build_models(TrainConfig(**TOY))[2].state_dict()
    # the same arithmetic in another summation order. Adam turns a rounding difference in a near-zero gradient into
    # a whole step, so a few weights differ (0.07 % seen); nearly all moved by more than one fp16 rounding step
    def share_apart(a, b):
        gaps = torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in initial])
        steps = torch.cat([(a[k].float().abs() * 2 ** -10 + 1e-6).flatten() for k in initial])
        return (gaps > steps).float().mean().item()

    assert share_apart(last, contiguous) < 0.01
    assert share_apart(contiguous, initial) > 0.5


def test_colour_words_are_swapped_for_another_colour():
    from freeprompt.models.tokenizer import clip_tokenizer

    tok = clip_tokenizer()
    captions = ["a red circle", "a photo of a blue star", "a white moon standing in the park", "a big pink cross", ""]
    ids = tok(captions, padding="max_length", max_length=77, return_tensors="pt").input_ids
    colour_ids = colour_token_ids(tok)
    pos, colour = colour_word_positions(ids, colour_ids)
    assert colour.tolist() == [list(world.COLORS).index(c) for c in ("red", "blue", "white", "pink")] + [-1]
    gen = torch.Generator().manual_seed(0)
    seen = {i: [] for i in range(4)}
    for _ in range(300):
        tokens = ids.clone()
        changed = swap_colour_words(tokens, pos, colour, colour_ids, torch.ones(5, dtype=torch.bool), gen)
        assert changed.tolist() == [True] * 4 + [False]
        assert torch.equal(tokens[4], ids[4])  # an empty caption has no colour to swap
        for i in range(4):  # reference: the caption with its colour word replaced, tokenised afresh
            new = list(world.COLORS)[colour_ids.tolist().index(tokens[i, pos[i]].item())]
            old = list(world.COLORS)[colour[i]]
            reference = tok(captions[i].replace(old, new), padding="max_length", max_length=77,
                            return_tensors="pt").input_ids[0]
            assert new != old and torch.equal(tokens[i], reference)
            seen[i].append(new)
    for i in range(4):  # every other colour is drawn (300 draws of 9: each ~33, none absent)
        assert len(set(seen[i])) == len(world.COLORS) - 1
    tokens = ids.clone()
    none = swap_colour_words(tokens, pos, colour, colour_ids, torch.zeros(5, dtype=torch.bool), gen)
    assert not none.any() and torch.equal(tokens, ids)


def test_structure_only_rows_count_latent_channel_0():
    g = torch.Generator().manual_seed(1)
    pred, noise = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    weight = torch.tensor([0.5, 1.0, 2.0])
    rows = torch.tensor([False, True, False])
    reference = 0.0
    for i in range(3):
        err = (pred[i] - noise[i]) ** 2
        reference += weight[i] * (err[0].mean() if rows[i] else err.mean()) / 3
    assert epsilon_loss(pred, noise, weight, rows).item() == pytest.approx(reference.item(), rel=1e-6)
    assert epsilon_loss(pred, noise, weight).item() == pytest.approx(
        (weight * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean().item(), rel=1e-6)
    assert epsilon_loss(pred, noise).item() == pytest.approx(torch.nn.functional.mse_loss(pred, noise).item(), rel=1e-6)


def test_colour_swap_training_scores_swapped_rows_on_the_structure_channel(tmp_path, monkeypatch, capsys):
    from lab.fixture import training

    for bad in (1.0, -0.1):
        with pytest.raises(BadInput, match="outside"):
            train(tmp_path / "bad", TrainConfig(**TOY, colour_swap_fraction=bad))
    with pytest.raises(BadInput, match="structure channel"):
        train(tmp_path / "bad", TrainConfig(**{**TOY, "colour_swap_fraction": 0.5, "vae_structure_weight": 0.0}))
    masks = []

    def recording_loss(pred, noise, weight=None, structure_only=None):
        masks.append(structure_only)
        return epsilon_loss(pred, noise, weight, structure_only)

    monkeypatch.setattr(training, "epsilon_loss", recording_loss)
    out = tmp_path / "swapped"
    train(out, TrainConfig(**{**TOY, "unet_steps": 8, "unet_batch": 8}, colour_swap_fraction=0.5))
    assert json.loads((out / "freeprompt_fixture.json").read_text())["config"]["colour_swap_fraction"] == 0.5
    assert "warning: colour swaps from the first step" in capsys.readouterr().err  # from scratch, not --init-from
    swapped = torch.cat(masks)
    assert len(masks) == 8 and 0 < swapped.sum() < len(swapped)  # about 0.5 x 0.9 of 64 rows
    masks.clear()
    train(tmp_path / "plain", TrainConfig(**{**TOY, "unet_steps": 2}))
    assert masks == [None, None]  # off: the shipped recipe's loss and random draws


def test_shape_weights_are_parsed_and_refused_when_malformed():
    assert parse_shape_weights("") == {}
    assert parse_shape_weights("star=2, moon=1.5") == {"star": 2.0, "moon": 1.5}
    with pytest.raises(BadInput, match="unknown shape 'stars'"):
        parse_shape_weights("stars=2")
    for bad in ("star=0", "star=-1", "star=x", "star"):
        with pytest.raises(BadInput, match="positive number"):
            parse_shape_weights(bad)


def test_rows_are_drawn_in_proportion_to_their_captioned_shape():
    samples = [world.random_sample(seed) for seed in range(600)]
    weights = row_weights([s.spec.caption for s in samples], {"star": 5.0})
    # the captioned object is objects[0], also in pairs whose second shape may be a star
    truth = torch.tensor([5.0 if s.spec.objects[0].shape == "star" else 1.0 for s in samples], dtype=torch.float64)
    assert torch.equal(weights, truth)
    is_star = truth == 5.0
    drawn = draw_rows(len(samples), 20000, torch.Generator().manual_seed(0), weights)
    expected = 5 * is_star.sum().item() / (5 * is_star.sum().item() + (~is_star).sum().item())
    assert abs(is_star[drawn].double().mean().item() - expected) < 0.015  # ~4 standard errors at 20000 draws
    uniform = draw_rows(len(samples), 20000, torch.Generator().manual_seed(0))
    assert abs(is_star[uniform].double().mean().item() - is_star.double().mean().item()) < 0.015


def test_training_with_shape_weights_draws_weighted_rows(tmp_path, monkeypatch):
    from lab.fixture import training

    with pytest.raises(BadInput, match="unknown shape"):
        train(tmp_path / "bad", TrainConfig(**TOY, shape_weights="hexagon=2"))
    calls = []

    def recording_draw(n, batch, gen, weights=None):
        calls.append(weights)
        return draw_rows(n, batch, gen, weights)

    monkeypatch.setattr(training, "draw_rows", recording_draw)
    out = tmp_path / "weighted"
    train(out, TrainConfig(**{**TOY, "unet_steps": 2}, shape_weights="star=3"))
    assert json.loads((out / "freeprompt_fixture.json").read_text())["config"]["shape_weights"] == "star=3"
    assert len(calls) == 2 and calls[0] is not None and set(calls[0].tolist()) <= {1.0, 3.0} and 3.0 in calls[0]
    calls.clear()
    train(tmp_path / "plain", TrainConfig(**{**TOY, "unet_steps": 2}))
    assert calls == [None, None]  # off: the uniform draw of the shipped recipe

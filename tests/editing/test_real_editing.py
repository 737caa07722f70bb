"""Real-image editing: the four inversions, the edit on top of them, and the inversion cache.

Two small models (64 px images, 8x8 latents, 4-6 steps):
- ``tiny_pipe``: the random tiny SD1.x pipeline. Its UNet barely listens to the text and its output depends
  strongly on the latent, so guided DDIM drifts and no embedding can undo it: fine for exactness and cache
  checks, useless for judging null-text.
- ``toy_pipe``: the same pipeline with the UNet's output scaled down (x ``toy_scale``) plus a linear term of the
  mean text embedding. Text now matters (guidance moves the result a lot), DDIM inversion is nearly exact,
  and an unconditional embedding *can* compensate guidance: the setting in which null-text inversion and
  negative-prompt inversion are meant to work. With ``toy_scale = 0`` the noise prediction does not depend on
  the latent at all, so inversion followed by sampling must be exact: a check of the timestep alignment.
"""

import copy
import os
import warnings

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from PIL import Image

from freeprompt.diffusion import encode_text
from freeprompt.editing.cache import CacheWarning, InversionCache, default_cache_dir
from freeprompt.editing.inversion import INVERSIONS, ddim_invert, invert, null_text_optimise, reconstruct
from freeprompt.editing.real import edit_real
from freeprompt.errors import BadInput
from freeprompt.shapes import world

STEPS = 4
SOURCE = "a red circle"


class TextBiasUNet(UNet2DConditionModel):
    """The tiny UNet's output times ``toy_scale`` plus ``text_proj(mean over tokens of the text embedding)``."""

    def forward(self, sample, timestep, encoder_hidden_states, *args, **kwargs):
        return_dict = kwargs.pop("return_dict", True)
        out = super().forward(sample, timestep, encoder_hidden_states, *args, return_dict=False, **kwargs)[0]
        bias = self.text_proj(encoder_hidden_states.mean(1).to(self.text_proj.weight.dtype))[:, :, None, None]
        out = self.toy_scale * out + bias.to(out.dtype)
        assert not return_dict, "freeprompt always calls the UNet with return_dict=False"
        return (out,)


def make_toy(pipe, scale: float):
    pipe = copy.deepcopy(pipe)
    unet = pipe.unet
    unet.__class__ = TextBiasUNet
    width = unet.config.cross_attention_dim
    proj = torch.nn.Linear(width, unet.config.out_channels)
    with torch.no_grad():
        proj.weight.copy_(torch.randn(proj.weight.shape, generator=torch.Generator().manual_seed(1)) / width**0.5)
        proj.bias.zero_()
    unet.add_module("text_proj", proj.to(device=unet.device, dtype=unet.dtype))
    unet.toy_scale = scale
    return pipe


@pytest.fixture(scope="module")
def toy_pipe(tiny_pipe):
    return make_toy(tiny_pipe, 0.05)


@pytest.fixture(scope="module")
def image():
    return Image.fromarray(world.random_sample(3, size=64, color="red", shape="circle").image)


def rmse(a, b) -> float:
    return float((a.float() - b.float()).pow(2).mean().sqrt())


# ---------------------------------------------------------------- DDIM inversion itself

def test_inversion_walks_back_exactly_when_the_noise_prediction_ignores_the_latent(tiny_pipe, image):
    # eps depends only on (t, text): the inverse DDIM step is then the exact inverse of the sampler's step,
    # so any mismatch of timesteps or alphas between inversion and sampling shows up here.
    pipe = make_toy(tiny_pipe, 0.0)
    for steps in (4, 7):
        inv = invert(pipe, image, SOURCE, "ddim", steps, guidance=1.0)
        assert inv.trajectory.shape == (steps + 1, 4, 8, 8)
        back = reconstruct(pipe, inv, pinned=False)  # plain DDIM sampling, no pinning
        assert rmse(back[0], inv.trajectory[0]) < 1e-5, steps
        assert rmse(inv.trajectory[-1], inv.trajectory[0]) > 0.1  # it did go somewhere


def test_ddim_invert_matches_the_sampler_step_by_step(toy_pipe, image):
    from freeprompt.diffusion import ddim_scheduler
    from freeprompt.editing.images import image_to_latents

    cond = encode_text(toy_pipe, SOURCE)
    traj = ddim_invert(toy_pipe, image_to_latents(toy_pipe, image), cond, steps=STEPS).cpu()
    scheduler = ddim_scheduler(toy_pipe.scheduler.config)
    scheduler.set_timesteps(STEPS)
    for i, t in enumerate(scheduler.timesteps):  # one sampler step from x_{T-i} lands near x_{T-i-1}
        x = traj[STEPS - i].unsqueeze(0)
        with torch.no_grad():
            eps = toy_pipe.unet(x, t, **cond.unet_kwargs(), return_dict=False)[0]
        nxt = scheduler.step(eps, t, x, return_dict=False)[0]
        assert rmse(nxt[0], traj[STEPS - i - 1]) < 0.02 * max(1.0, rmse(traj[STEPS - i - 1], 0 * traj[0])), i


# ---------------------------------------------------------------- reconstruction per method

def test_direct_inversion_reconstructs_the_source_exactly(tiny_pipe, image):
    result = edit_real(tiny_pipe, image, SOURCE, [SOURCE], inversion="direct", steps=STEPS, progress=False)
    p = result.params
    assert len(result.images) == 2 and result.prompts == [SOURCE, SOURCE]
    # the source branch ends on the image's latent: tolerance 1e-5 RMSE (float32 rounding only)
    assert p["reconstruction_latent_rmse"] < 1e-5
    # ...although guided sampling drifted away at every step (the offsets that were added back)
    assert len(p["source_offsets_rms"]) == STEPS and min(p["source_offsets_rms"]) > 1e-3
    assert p["inversion"] == "direct" and p["inversion_cached"] is False and p["inversion_psnr"] > 0
    assert "inversion_s" in result.timings


def test_ddim_reports_its_unpinned_error_and_it_is_worse_than_direct(toy_pipe, image):
    direct = edit_real(toy_pipe, image, SOURCE, [SOURCE], inversion="direct", steps=STEPS, progress=False)
    ddim = edit_real(toy_pipe, image, SOURCE, [SOURCE], inversion="ddim", steps=STEPS, progress=False)
    # pinned, the ddim source branch is the trajectory too...
    assert ddim.params["reconstruction_latent_rmse"] < 1e-5
    # ...but plain DDIM (guided, unpinned) is reported, and is far off (toy: ~5 latent RMSE vs 0)
    print("ddim unpinned:", ddim.params["ddim_psnr"], "dB, latent rmse", ddim.params["ddim_latent_rmse"],
          "| direct:", direct.params["inversion_psnr"], "dB")
    assert ddim.params["ddim_latent_rmse"] > 1.0 > 1e-5 > direct.params["reconstruction_latent_rmse"]
    # in pixels too (the random VAE decodes everything to similar noise, so the margin there is small)
    assert ddim.params["ddim_psnr"] < direct.params["inversion_psnr"]
    # in this one-source batch, pinning (ddim) and adding the offset back (direct) are the same operation
    assert torch.allclose(ddim.latents, direct.latents, atol=1e-5)


def test_null_text_inversion_reconstructs(toy_pipe, image):
    plain = invert(toy_pipe, image, SOURCE, "ddim", STEPS, 7.5)
    plain_error = rmse(reconstruct(toy_pipe, plain, pinned=False)[0], plain.trajectory[0])
    result = edit_real(toy_pipe, image, SOURCE, [SOURCE], inversion="null-text", steps=STEPS, progress=False)
    error = result.params["reconstruction_latent_rmse"]
    print(f"null-text latent rmse {error:.4f} vs plain guided DDIM {plain_error:.4f}")
    # looser than direct: within 0.15 latent RMSE (measured ~0.06) and at least 20x better than plain DDIM
    assert error < 0.15 and error < plain_error / 20
    assert len(result.params["null_text_inner_steps"]) == STEPS
    # the per-step embeddings are applied to every row: an identity edit reproduces the source row exactly
    assert torch.equal(result.latents[0], result.latents[1])


def test_negative_prompt_inversion_reconstructs(toy_pipe, image):
    result = edit_real(toy_pipe, image, SOURCE, [SOURCE], inversion="negative-prompt", steps=STEPS, progress=False)
    inv = invert(toy_pipe, image, SOURCE, "negative-prompt", STEPS, 7.5)
    assert inv.uncond.shape[0] == STEPS
    assert torch.equal(inv.uncond[0], encode_text(toy_pipe, SOURCE).embeddings[0].float())
    # guided == conditional for the source, as in the (unguided) inversion: near exact (measured ~0.02)
    assert result.params["reconstruction_latent_rmse"] < 0.1
    assert torch.equal(result.latents[0], result.latents[1])


def test_edit_real_result_layout_and_empty_source(tiny_pipe, image):
    result = edit_real(tiny_pipe, image, "", ["a blue circle", "a green circle"], inversion="direct", steps=STEPS,
                       progress=False)
    assert result.prompts == ["", "a blue circle", "a green circle"]
    assert len(result.images) == 3 and all(img.size == (64, 64) for img in result.images)
    assert result.params["inversion_source"] == "" and result.params["image_size"] == [64, 64]
    assert result.params["latents_given"] is True


@pytest.mark.parametrize("bad", [
    dict(inversion="ddpm"), dict(steps=0), dict(size=(60, 64)), dict(cache_without_key=True), dict(source=None),
    dict(targets=[]), dict(targets=[""]), dict(inversion="null-text", guidance=1.0),
])
def test_edit_real_bad_input(tiny_pipe, image, tmp_path, bad):
    kwargs = dict(inversion=bad.get("inversion", "direct"), steps=bad.get("steps", STEPS), progress=False,
                  guidance=bad.get("guidance", 7.5))
    img = image.resize(bad["size"]) if "size" in bad else image
    if bad.get("cache_without_key"):
        kwargs["cache"] = InversionCache(tmp_path / "c")
    with pytest.raises(BadInput) as err:
        edit_real(tiny_pipe, img, bad.get("source", SOURCE), bad.get("targets", ["a blue circle"]), **kwargs)
    assert "\n" not in str(err.value) and err.value.fix


def test_null_text_runs_in_float32_for_a_low_precision_pipeline(tiny_pipe, image):
    pipe = copy.deepcopy(tiny_pipe).to(torch.bfloat16)
    inv = invert(tiny_pipe, image, SOURCE, "ddim", 2, 7.5)
    emb, info = null_text_optimise(pipe, inv.trajectory, encode_text(pipe, SOURCE), encode_text(pipe, ""), 7.5,
                                   inner_steps=2)
    assert emb.dtype == torch.float32 and emb.shape[0] == 2 and info["optimised_in"] == "float32 copy"
    assert pipe.unet.dtype == torch.bfloat16  # the pipeline itself is left as it was
    assert not torch.equal(emb[0], encode_text(pipe, "").embeddings[0].float())  # it moved


# ---------------------------------------------------------------- the cache

def test_cached_inversion_gives_bit_identical_edits_and_skips_inversion(toy_pipe, image, tmp_path):
    cache = InversionCache(tmp_path / "cache")
    kwargs = dict(inversion="null-text", steps=STEPS, progress=False, model_key="toy@1", cache=cache)
    fresh = edit_real(toy_pipe, image, SOURCE, ["a blue circle"], **kwargs)  # computes and stores
    loaded = edit_real(toy_pipe, image, SOURCE, ["a blue circle"], **kwargs)  # loads
    assert [fresh.params["inversion_cached"], loaded.params["inversion_cached"]] == [False, True]
    assert torch.equal(fresh.latents, loaded.latents)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(fresh.images, loaded.images))
    # the second call loaded instead of optimising: far faster, and the stored numbers came back
    assert loaded.timings["inversion_s"] < fresh.timings["inversion_s"] / 5
    assert loaded.params["inversion_psnr"] == fresh.params["inversion_psnr"]
    assert loaded.params["null_text_inner_steps"] == fresh.params["null_text_inner_steps"]
    assert loaded.params["inversion_compute_s"] == fresh.params["inversion_compute_s"]
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".safetensors")


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupt_cache_entry_warns_and_recomputes(tiny_pipe, image, tmp_path, damage):
    cache = InversionCache(tmp_path)
    kwargs = dict(inversion="direct", steps=STEPS, progress=False, model_key="tiny", cache=cache)
    first = edit_real(tiny_pipe, image, SOURCE, ["a blue circle"], **kwargs)
    path = cache.path(first.params["inversion_key"])
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-3] ^= 0xFF  # inside the tensor data: only the checksum notices
    else:
        data = bytearray(b"not a safetensors file")
    path.write_bytes(bytes(data))
    with pytest.warns(CacheWarning, match="unusable.*recomputing"):
        second = edit_real(tiny_pipe, image, SOURCE, ["a blue circle"], **kwargs)
    assert second.params["inversion_cached"] is False
    assert torch.equal(first.latents, second.latents)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # the entry was rewritten and is good again
        third = edit_real(tiny_pipe, image, SOURCE, ["a blue circle"], **kwargs)
    assert third.params["inversion_cached"] is True


def test_unwritable_cache_folder_is_bad_input(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BadInput, match="cannot use .* as the inversion cache") as err:
        InversionCache(blocker)
    assert "FREEPROMPT_CACHE" in err.value.fix
    with pytest.raises(BadInput):
        InversionCache(blocker / "below")
    monkeypatch.setenv("FREEPROMPT_CACHE", str(tmp_path / "root"))
    assert default_cache_dir() == tmp_path / "root" / "inversions"
    assert InversionCache().folder.is_dir()


def test_cache_key_covers_the_settings(image):
    base = dict(model_key="m", method="direct", steps=4, guidance=7.5, source="a", dtype=torch.float32)
    key = InversionCache.key(image, **base)
    assert key == InversionCache.key(image.copy(), **base)
    for change in (dict(model_key="n"), dict(method="ddim"), dict(steps=5), dict(guidance=5.0), dict(source=""),
                   dict(dtype=torch.float16)):
        assert InversionCache.key(image, **{**base, **change}) != key, change
    assert InversionCache.key(image.resize((32, 32)), **base) != key
    shifted = image.copy()
    shifted.putpixel((0, 0), (0, 0, 0))
    assert InversionCache.key(shifted, **base) != key


# ---------------------------------------------------------------- the trained fixture model

def _fixture_or_skip():
    from freeprompt.models.loading import fixture_path, load_pipeline

    if not (fixture_path("shapes") / "model_index.json").exists():
        pytest.skip(f"the shapes fixture model is not trained yet ({fixture_path('shapes')} is missing)")
    return load_pipeline("shapes", device="cpu")


def test_fixture_model_colour_edit_per_inversion():
    from freeprompt.shapes import oracle

    loaded = _fixture_or_skip()
    pipe = loaded.pipe
    steps = int(os.environ.get("FREEPROMPT_TEST_STEPS", loaded.defaults.get("steps", 10)))
    guidance = float(loaded.defaults.get("guidance", 7.5))
    rows = []
    for seed in (0, 1):
        sample = world.random_sample(seed, size=64, template="simple", color="red", shape="circle")
        image = Image.fromarray(sample.image)
        src_mask = oracle.color_mask(sample.image, "red")
        for method in INVERSIONS:
            result = edit_real(pipe, image, "a red circle", ["a blue circle"], inversion=method, steps=steps,
                               guidance=guidance, progress=False, model_key="shapes")
            target = np.asarray(result.images[1])
            blue = oracle.color_mask(target, "blue")
            found = blue.sum() >= 0.01 * blue.size
            rows.append((seed, method, result.params["inversion_psnr"], result.params.get("ddim_psnr"), bool(found),
                         oracle.mask_iou(src_mask, blue), result.timings["inversion_s"]))
    print("\nseed method           recon_psnr ddim_psnr blue_found iou   inversion_s")
    for r in rows:
        print(f"{r[0]:4d} {r[1]:16s} {r[2]:10.2f} {r[3] if r[3] is not None else float('nan'):9.2f} "
              f"{str(r[4]):10s} {r[5]:.3f} {r[6]:.2f}")
    # Reconstructions are faithful (seen: 34-35 dB for every method) and the target colour is reached (seen: in all
    # 8). Structure (IoU) is reported, not asserted: on the v0 fixture FPE does not keep the layout (see its card).
    for r in rows:
        assert r[2] > 25.0, r
    assert sum(r[4] for r in rows) >= len(rows) // 2

"""Loading models: the pipeline class picked from a folder's model_index.json (SDXL), models freeprompt cannot edit
refused in one line, and the UNet family a probing result is labelled with."""

import json
from types import SimpleNamespace

import pytest

from freeprompt.errors import ModelLoadError
from freeprompt.models.loading import load_pipeline, unet_family
from freeprompt.models.random import random_pipeline


def test_loading_picks_the_pipeline_class_and_refuses_other_models(tmp_path):
    from diffusers import StableDiffusionXLPipeline

    folder = tmp_path / "xl"
    random_pipeline("tiny-sdxl").save_pretrained(folder, safe_serialization=True)
    loaded = load_pipeline(str(folder), device="cpu")
    assert isinstance(loaded.pipe, StableDiffusionXLPipeline)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionXLInpaintPipeline"}))
    with pytest.raises(ModelLoadError, match="extra input channels"):
        load_pipeline(str(folder), device="cpu")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "SanaPipeline", "transformer": ["x", "y"]}))
    with pytest.raises(ModelLoadError, match="a diffusion transformer freeprompt does not drive") as err:
        load_pipeline(str(folder), device="cpu")
    assert "Stable Diffusion 1.x, 2.x and XL" in err.value.fix and "FLUX.1" in err.value.fix
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "WuerstchenPipeline", "prior": ["x", "y"]}))
    with pytest.raises(ModelLoadError, match="no UNet or transformer"):
        load_pipeline(str(folder), device="cpu")


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory):
    from freeprompt.models.random_transformers import random_transformer_pipeline

    folder = tmp_path_factory.mktemp("sd3") / "tiny-sd3"
    random_transformer_pipeline("tiny-sd3").save_pretrained(folder, safe_serialization=True)
    return folder


def test_transformer_pipelines_load_by_folder_and_sd3_may_leave_out_its_t5(sd3_folder, tmp_path):
    """A diffusion transformer's folder loads as its own pipeline; SD3 without T5 loads when its index says so (the
    text sequence is then CLIP's 77 tokens and 77 of zeros), and a folder that names T5 but lacks it is one line."""
    import shutil

    from diffusers import StableDiffusion3Pipeline

    from freeprompt.diffusion.denoisers import denoiser_for

    loaded = load_pipeline(str(sd3_folder), device="cpu")
    assert isinstance(loaded.pipe, StableDiffusion3Pipeline) and loaded.pipe.text_encoder_3 is not None
    folder = tmp_path / "no-t5"
    shutil.copytree(sd3_folder, folder)
    shutil.rmtree(folder / "text_encoder_3")
    with pytest.raises(ModelLoadError, match="names SD3's optional T5 text encoder but lacks text_encoder_3") as err:
        load_pipeline(str(folder), device="cpu")
    assert "[null, null]" in err.value.fix
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "text_encoder_3": [None, None],
                                                         "tokenizer_3": [None, None]}))
    pipe = load_pipeline(str(folder), device="cpu").pipe
    assert pipe.text_encoder_3 is None
    denoiser = denoiser_for(pipe)
    assert denoiser.text_tokens() == 154 == denoiser.encode(["a red car"], "", False, "cpu").embeddings.shape[1]


def test_unet_family():
    def unet(**config):
        return SimpleNamespace(config=SimpleNamespace(**config))

    assert unet_family(unet(cross_attention_dim=768, addition_embed_type=None)) == "sd1"
    assert unet_family(unet(cross_attention_dim=1024, addition_embed_type=None)) == "sd2"
    assert unet_family(unet(cross_attention_dim=2048, addition_embed_type="text_time")) == "sdxl"
    assert unet_family(unet(cross_attention_dim=64, addition_embed_type=None)) == "other"


@pytest.mark.parametrize("damage", ["{not json", "[1, 2]", '{"defaults": 3}', "\xff\xfe"])
def test_a_damaged_fixture_json_or_model_index_is_one_line(tiny_model_dir, tmp_path, damage):
    """A model folder whose freeprompt_fixture.json, model_index.json or UNet config is damaged loads with a one-line
    ModelLoadError, never an internal error."""
    import shutil

    from freeprompt.errors import ModelLoadError
    from freeprompt.models.loading import load_pipeline

    for name in ("freeprompt_fixture.json", "model_index.json", "unet/config.json"):
        folder = tmp_path / name.replace("/", "_")
        shutil.copytree(tiny_model_dir, folder)
        (folder / name).write_text(damage, encoding="latin-1")
        if name == "unet/config.json" and damage.startswith("{"):
            continue  # not JSON at all: reported with the weights' check, as before
        with pytest.raises(ModelLoadError) as err:
            load_pipeline(str(folder), device="cpu")
        assert "\n" not in str(err.value) and name.split("/")[-1] in str(err.value), (name, str(err.value))


@pytest.mark.parametrize("folder", ["tiny_model_dir", "sd3_folder"])
@pytest.mark.parametrize("offload", ["model", "group"])
def test_diffusers_offload_edits_and_inverts_as_the_whole_model_does(folder, offload, request):
    """Under diffusers' model or group offload (here onto the CPU, the only device a test has: the hooks still move
    every part and every input) an FPE edit and a DDIM/Euler inversion match those of the model loaded whole, and
    the loop makes its tensors where diffusers' pipelines make theirs. Tolerance: model offload's hooked calls differ
    from plain calls by float rounding (about 1e-6 on one UNet call of the tiny random model), which three steps
    of a random network amplify; 1e-3 on latents is far below what a wrongly placed or dropped edit changes."""
    import torch

    from freeprompt import edit
    from freeprompt.diffusion.denoisers import device_of
    from freeprompt.editing.inversion import invert
    from freeprompt.models.loading import apply_offload

    path = str(request.getfixturevalue(folder))
    runs = []
    for mode in ("none", offload, "none"):
        pipe = load_pipeline(path, device="cpu").pipe
        apply_offload(pipe, mode, torch.device("cpu"))
        fpe = edit(pipe, "a red car", ["a blue car"], seed=3, steps=3, guidance=3.0, height=64, width=64,
                   progress=False)
        plain = edit(pipe, "a red car", ["a blue car"], seed=3, steps=3, guidance=3.0, height=64, width=64,
                     self_replace="0:0", progress=False)
        inversion = invert(pipe, fpe.source, "a red car", steps=3, guidance=1.0)
        runs.append((fpe.latents, plain.latents, inversion.trajectory[1]))
        assert device_of(pipe) == pipe._execution_device
        if mode == "model":
            assert pipe._all_hooks  # diffusers' model offload hooks are in place
    (fpe, plain, first), (fpe_off, plain_off, first_off), _ = runs
    torch.testing.assert_close(fpe_off, fpe, rtol=0, atol=1e-3)
    torch.testing.assert_close(first_off, first, rtol=0, atol=1e-3)
    assert (fpe_off[1] - plain_off[1]).abs().max() > 100 * (fpe_off[1] - fpe[1]).abs().max()  # the edit acts
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[2]))  # the whole model is deterministic


def test_offload_is_refused_without_an_accelerator_and_recorded_with_one(tiny_model_dir):
    from freeprompt.errors import BadInput
    from freeprompt.models.loading import check_model_options

    with pytest.raises(BadInput, match="moves the model to an accelerator part by part, but the device is the CPU"):
        load_pipeline(str(tiny_model_dir), device="cpu", offload="model")
    with pytest.raises(BadInput, match="unknown offload mode 'disk'") as err:
        check_model_options("auto", "fp32", "disk")
    assert err.value.fix == "use none, model or group"
    assert load_pipeline(str(tiny_model_dir), device="cpu").info["offload"] == "none"

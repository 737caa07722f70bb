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
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline", "transformer": ["x", "y"]}))
    with pytest.raises(ModelLoadError, match="no UNet") as err:
        load_pipeline(str(folder), device="cpu")
    assert "Stable Diffusion 1.x, 2.x and XL" in err.value.fix


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

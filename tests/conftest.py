import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import sys

import pytest
import torch

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(__file__))  # tests/support: the test-only helpers
sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))  # the repository root: the lab package
SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


@pytest.fixture(scope="session")
def tiny_pipe():
    from freeprompt.models.random import random_pipeline

    return random_pipeline("tiny", seed=0)


@pytest.fixture(scope="session")
def shared_dir():
    path = os.path.abspath(SHARED)
    if not os.path.isdir(os.path.join(path, "data")):
        pytest.skip(f"../shared/data is not beside this checkout ({path}); it holds the paper's released files")
    return path


@pytest.fixture(scope="session")
def tiny_pipe64():
    from freeprompt.models.random import random_pipeline

    return random_pipeline("tiny", seed=0, torch_dtype=torch.float64)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_pipe):
    """The tiny random pipeline saved as a diffusers folder, for tests that load models from disk."""
    path = tmp_path_factory.mktemp("models") / "tiny"
    tiny_pipe.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A tiny random CLIP (real CLIP tokenizer) saved as a folder, for the CLIP metrics."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTextConfig, CLIPVisionConfig

    from freeprompt.models.tokenizer import clip_tokenizer

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=2, max_position_embeddings=77).to_dict(),
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=32, patch_size=8).to_dict(),
        projection_dim=16)
    folder = tmp_path_factory.mktemp("clip")
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory):
    """A tiny random ViT saved as a folder, for the structure distance."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("vit")
    ViTModel(ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                       patch_size=8)).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder

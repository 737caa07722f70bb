import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import sys  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(__file__))  # the test-only reference implementation
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "support"))  # test-only helpers
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

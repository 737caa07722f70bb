"""lab/diagnostics/self_map_layout.py: the footprints are those of the images plain diffusers generates from the same
noise, prompt, steps and guidance; pooling is the block mean; a label that the layout decides is read from it."""

import numpy as np
import torch

from freeprompt.diffusion import initial_latents, latent_shape
from freeprompt.models.loading import load_pipeline
from freeprompt.shapes import oracle
from lab.diagnostics import self_map_layout as sml


def test_pooled_is_the_block_mean():
    rng = np.random.default_rng(0)
    masks = (rng.random((3, 16, 16)) > 0.5).astype(np.float32)
    got = sml.pooled(masks, 4)
    want = np.array([[[masks[n, 4 * i:4 * i + 4, 4 * j:4 * j + 4].mean() for j in range(4)] for i in range(4)]
                     for n in range(3)])
    np.testing.assert_allclose(got, want, atol=1e-7)


def test_footprints_match_plain_diffusers_on_the_mmdit_fixture():
    torch.set_num_threads(1)
    pipe = load_pipeline("shapes-mmdit", device="cpu").pipe
    items = [{"id": 0, "prompt": "a red circle", "seed": 3}, {"id": 1, "prompt": "a blue star", "seed": 3}]
    options = sml.CollectOptions(steps=3, guidance=4.0, height=64, width=64)
    got = sml.footprints(pipe, items, options, latent_shape(pipe, 64, 64)[-2:], batch=2)
    shape = latent_shape(pipe, None, None)
    noise = torch.cat([initial_latents(3, shape, "cpu", torch.float32)] * 2)
    images = pipe(prompt=[r["prompt"] for r in items], latents=noise, num_inference_steps=3, guidance_scale=4.0,
                  height=64, width=64, max_sequence_length=24, output_type="np").images
    want = np.stack([oracle.object_mask((np.clip(img, 0, 1) * 255).round().astype(np.uint8)) for img in images])
    assert got.shape == want.shape == (2, 64, 64)
    assert got.any(axis=(1, 2)).all()  # an object in each image
    assert (got != want).mean() <= 0.002  # uint8 rounding of the decoded image may flip a boundary pixel


def test_a_label_the_layout_decides_is_read_from_the_footprint():
    rng = np.random.default_rng(1)
    y = torch.tensor(rng.integers(0, 2, 80))
    masks = np.zeros((80, 8, 8), np.float32)
    for n, label in enumerate(y.tolist()):  # class 0 on the left, class 1 on the right, at a random height
        row, col = rng.integers(0, 6), 1 if label == 0 else 5
        masks[n, row:row + 2, col:col + 2] = 1
    out = sml.probe_all({"mask": masks}, y, ["left", "right"], sml.ProbeConfig(epochs=60, hidden_cap=64))
    assert out["mask/authors"]["accuracy"] >= 0.9
    assert out["mask/linear"]["accuracy"] >= 0.9
    assert out["mask/authors_shuffled"]["accuracy"] <= 0.8

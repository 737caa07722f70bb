"""The MM-DiT fixture's training script (lab/mmdit_fixture.py) on a toy configuration: what it trains on is what
SD3's pipeline feeds the transformer, a run writes a folder plain diffusers loads with no extra arguments, the T5
slot is exactly the pipeline's no-T5 zeros, and an interrupted run resumes to the same weights."""

import json

import pytest
import torch

from lab import mmdit_fixture as mm

TOY = dict(num_images=48, width=32, head_dim=16, layers=2, text2_width=16, text2_layers=1, steps=4, batch=4,
           warmup=1, threads=1, checkpoint_every=2, swap_from=0.5, swap=0.5)


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("mmdit") / "model"
    mm.train(out, mm.MMDiTConfig(**TOY))
    return out


@pytest.fixture(scope="module")
def toy_pipe(toy_folder):
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline.from_pretrained(toy_folder)  # no extra arguments


def test_folder_loads_in_plain_diffusers_and_in_freeprompt(toy_folder, toy_pipe):
    from safetensors import safe_open

    from freeprompt.models.loading import load_pipeline

    assert type(toy_pipe.text_encoder_3).__name__ == "T5EncoderModel"
    assert all(p.dtype == torch.float32 for p in toy_pipe.text_encoder_3.parameters())
    for weights in toy_folder.rglob("*.safetensors"):
        with safe_open(str(weights), "pt") as f:
            assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"F16"}, weights
    info = json.loads((toy_folder / "freeprompt_fixture.json").read_text())
    assert info["config"]["steps"] == 4 and info["defaults"]["height"] == 64
    assert info["parameters"]["transformer"] == sum(p.numel() for p in toy_pipe.transformer.parameters())
    loaded = load_pipeline(str(toy_folder), device="cpu")
    assert type(loaded.pipe).__name__ == "StableDiffusion3Pipeline" and loaded.defaults["steps"] == 28
    image = toy_pipe("a red circle", height=64, width=64, num_inference_steps=2, max_sequence_length=24,
                     generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)


def test_training_conditioning_is_what_the_pipeline_encodes(toy_pipe):
    """The text the transformer trains on equals SD3's encode_prompt on the same words (float32, exactly): the
    CLIP order, the penultimate layers, the pooled projections and the zeros of the T5 slot."""
    models = mm.Models(toy_pipe.transformer, toy_pipe.text_encoder, toy_pipe.text_encoder_2)
    prompts = ["a red circle", "a blue star standing in the park", ""]
    ids = toy_pipe.tokenizer(prompts, padding="max_length", max_length=24, truncation=True,
                             return_tensors="pt").input_ids
    with torch.no_grad():
        text, pooled = mm.text_conditioning(models, ids)
        want, _, want_pooled, _ = toy_pipe.encode_prompt(prompt=prompts, prompt_2=None, prompt_3=None,
                                                         device=torch.device("cpu"),
                                                         do_classifier_free_guidance=False, max_sequence_length=24)
    assert text.shape == (3, 48, 64 + 16) and torch.equal(text, want) and torch.equal(pooled, want_pooled)
    assert torch.equal(text[:, 24:], torch.zeros_like(text[:, 24:]))


def test_empty_t5_gives_zeros_for_every_byte():
    tokenizer = mm.character_tokenizer(24)
    model = mm.empty_t5(48, len(tokenizer))
    ids = tokenizer(["a red circle", "émoji 🙂 and \t tabs, UPPER"], padding="max_length", max_length=24,
                    truncation=True, return_tensors="pt").input_ids
    assert int(ids.max()) < len(tokenizer) == 514
    assert torch.equal(model(ids)[0], torch.zeros(2, 24, 48))


def test_flow_batch_mixes_latents_and_noise_on_the_straight_path():
    latents = torch.randn(6, 4, 16, 16)
    noisy, timesteps, target = mm.flow_batch(latents, mm.MMDiTConfig(shift=3.0), torch.Generator().manual_seed(1))
    sigma = (timesteps / 1000).view(-1, 1, 1, 1)
    noise = target + latents
    assert torch.allclose(noisy, (1 - sigma) * latents + sigma * noise, atol=1e-6)
    assert bool(((timesteps > 0) & (timesteps < 1000)).all())


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch, toy_folder):
    from safetensors.torch import load_file

    step = mm.Run.train_step

    def stop_after_two(self, data):
        if self.step == 2:
            raise KeyboardInterrupt
        return step(self, data)

    out = tmp_path / "model"
    monkeypatch.setattr(mm.Run, "train_step", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        mm.train(out, mm.MMDiTConfig(**TOY))
    monkeypatch.setattr(mm.Run, "train_step", step)
    mm.train(out, mm.MMDiTConfig(**TOY))
    assert "resumed at step 2" in (tmp_path / "model.work" / "log.txt").read_text()
    for part in ("transformer", "text_encoder_2"):
        name = "diffusion_pytorch_model" if part == "transformer" else "model"
        got, want = (load_file(f / part / f"{name}.safetensors") for f in (out, toy_folder))
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    with pytest.raises(SystemExit, match="other settings"):
        mm.train(out, mm.MMDiTConfig(**{**TOY, "lr": 1e-3}))


def test_a_run_continues_from_a_trained_folder(toy_folder, toy_pipe):
    models = mm.build_models(mm.MMDiTConfig(**{**TOY, "init_from": str(toy_folder)}))
    for name, model in models.parts().items():
        want = getattr(toy_pipe, name).state_dict()
        assert all(torch.equal(value, want[key]) for key, value in model.state_dict().items()), name
    with pytest.raises(RuntimeError):  # another architecture does not load
        mm.build_models(mm.MMDiTConfig(**{**TOY, "layers": 3, "init_from": str(toy_folder)}))


def test_shape_weights_weigh_every_row_naming_the_shape():
    """--shape-weights (v7's star=3,moon=2): a row weighs the largest weight among the shapes its caption names, a
    pair's second object included (the U-Net recipe weighs the first only); no weights keeps v1-v6's uniform draw.
    The draw itself is lab.fixture.training.draw_rows, tested with the U-Net fixture's training."""
    from lab.fixture.training import TrainConfig, load_or_render

    _, captions = load_or_render(TrainConfig(seed=0, num_images=48), None)
    log = lambda text: None  # noqa: E731
    assert mm.prepare_data(mm.MMDiTConfig(**TOY), None, log).weights is None
    weights = mm.prepare_data(mm.MMDiTConfig(**TOY, shape_weights="star=3,moon=2"), None, log).weights
    words = [set(c.replace(",", " ").split()) for c in captions]
    want = [3.0 if "star" in w else 2.0 if "moon" in w else 1.0 for w in words]
    assert weights.tolist() == want
    parts = [[set(part.split()) for part in c.split(" and ")] for c in captions]
    weighed = {"star", "moon"}
    second_only = [i for i, p in enumerate(parts) if len(p) == 2 and weighed & p[1] and not weighed & p[0]]
    assert second_only and all(weights[i] > 1 for i in second_only)  # e.g. "a white heart and a moon": 2

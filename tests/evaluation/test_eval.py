"""Edit datasets, metrics against their definitions (identical images, known shifts, known rankings) with tiny random
backbones. (The eval command end to end: tests/cli/test_eval_cmd.py; the backbones' fixtures: tests/conftest.py.)"""

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from freeprompt.errors import BadInput
from freeprompt.evaluation import edit_sets, metrics
from freeprompt.evaluation.eval_report import mean_ci, spearman


def image(seed=0, size=32):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------ metrics

def test_pixel_metrics_against_their_definitions():
    a = image(0)
    b = np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8)
    assert metrics.mse(a, a) == 0 and metrics.psnr(a, a) == math.inf and metrics.ssim(a, a) == pytest.approx(1.0)
    shifted = np.full((32, 32, 3), 100, np.uint8), np.full((32, 32, 3), 110, np.uint8)
    assert metrics.mse(*shifted) == pytest.approx((10 / 255) ** 2)
    assert metrics.psnr(*shifted) == pytest.approx(10 * math.log10(1 / (10 / 255) ** 2))
    assert metrics.ssim(a, b) < 1.0
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    edited = a.copy()
    edited[mask] = 255 - edited[mask]  # a change inside the mask only
    assert metrics.psnr(a, edited, mask) == math.inf and metrics.mse(a, edited, mask, region="inside") > 0.01
    assert metrics.ssim(a, edited, mask) == pytest.approx(1.0, abs=0.2)  # the window reaches across the border
    assert math.isnan(metrics.mse(a, a, np.ones((32, 32), bool)))  # nothing outside the mask
    with pytest.raises(BadInput):
        metrics.mse(a, image(1, 16))


def test_clip_scores_directional_and_region(tiny_clip_dir):
    scorer = metrics.ClipScorer(str(tiny_clip_dir))
    a, b = image(0), image(1)
    cs = scorer.scores([a, b], ["a red car", "a blue car"])
    assert all(0.0 <= v <= 100.0 for v in cs)
    img, txt = scorer.image_embeddings([a]), scorer.text_embeddings(["a red car"])
    assert cs[0] == pytest.approx(100 * max(float((img * txt).sum()), 0.0), abs=1e-4)  # the definition
    assert math.isnan(scorer.directional([a], [a], ["a red car"], ["a blue car"])[0])  # no image change
    forward = scorer.directional([a], [b], ["a red car"], ["a blue car"])[0]
    assert forward == pytest.approx(scorer.directional([b], [a], ["a blue car"], ["a red car"])[0], abs=1e-5)
    mask = np.zeros((32, 32), bool)
    mask[:16] = True
    masked = a * mask[..., None]
    assert scorer.region_scores([a], ["a red car"], [mask])[0] == pytest.approx(
        scorer.scores([masked], ["a red car"])[0], abs=1e-4)


def test_structure_distance(tiny_vit_dir):
    structure = metrics.StructureDistance(str(tiny_vit_dir))
    a, b = image(0), image(1)
    assert structure.distances([a], [a])[0] == pytest.approx(0.0, abs=1e-10)
    assert structure.distances([a], [b])[0] > 1e-6
    sim = structure.self_similarity([a])[0]
    assert torch.allclose(sim.diagonal(), torch.ones(sim.shape[0]), atol=1e-5)  # cosine self-similarity


def test_missing_backbones_are_one_line_and_lpips_is_optional():
    with pytest.raises(Exception) as err:
        metrics.ClipScorer("/nonexistent/clip")
    assert "cannot load" in str(err.value) and "\n" not in str(err.value)
    value = metrics.lpips_distance(image(0), image(1))
    assert value is None or value > 0  # None: the optional lpips package is not installed


def test_statistics():
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([10, 20, 30, 40.0])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([4, 3, 2, 1.0])) == pytest.approx(-1.0)
    assert math.isnan(spearman(np.array([1, 1, 1.0]), np.array([1, 2, 3.0])))
    mean, half = mean_ci(np.array([1.0, 2.0, 3.0]))
    assert mean == 2.0 and half == pytest.approx(1.96 * 1.0 / math.sqrt(3))


# ------------------------------------------------------------------------------------------------ datasets

def test_car_fake_edit_regenerated_equals_the_released_file(shared_dir):
    ours = edit_sets.car_fake_edit()
    assert len(ours.cases) == 28 and ours.pairs == 756
    rows = json.loads(open(f"{shared_dir}/data/fpe_datasets/Car_fake_edit.json").read())
    from_file = edit_sets.fpe_json("car-fake-edit", rows, None)
    pairs = {(c.source, t) for c in ours.cases for t in c.targets}
    assert pairs == {(c.source, t) for c in from_file.cases for t in c.targets}
    imagenet = edit_sets.load("imagenet-fake-edit", data=f"{shared_dir}/data/fpe_datasets/ImageNet_fake_edit.json")
    assert imagenet.pairs == 1182


def test_real_sets_count_missing_images(shared_dir, tmp_path):
    data = f"{shared_dir}/data/fpe_datasets/Car_real_edit.json"
    with pytest.raises(BadInput, match="--images"):
        edit_sets.load("car-real-edit", data=data)
    Image.new("RGB", (64, 64)).save(tmp_path / "002657.jpg")
    cars = edit_sets.load("car-real-edit", data=data, images=tmp_path)
    assert len(cars.cases) == 1 and cars.pairs > 1 and len(cars.skipped) == 4058 - cars.pairs
    assert "missing" in cars.skipped[0]


def test_pie_bench_prompts_and_masks(tmp_path):
    (tmp_path / "annotation_images" / "0_random").mkdir(parents=True)
    Image.new("RGB", (512, 512)).save(tmp_path / "annotation_images" / "0_random" / "a.jpg")
    mapping = {"000": {"image_path": "0_random/a.jpg", "original_prompt": "a [cat] sitting",
                       "editing_prompt": "a [dog] sitting", "editing_type_id": "1", "mask": [1030, 3, 5000, 2]},
               "001": {"image_path": "0_random/missing.jpg", "original_prompt": "x", "editing_prompt": "y"}}
    (tmp_path / "mapping_file.json").write_text(json.dumps(mapping))
    pie = edit_sets.load("pie-bench", data=tmp_path / "mapping_file.json")
    case = pie.cases[0]
    assert (case.source, case.targets) == ("a cat sitting", ["a dog sitting"]) and len(pie.skipped) == 1
    inner = case.mask[1:-1, 1:-1]
    assert inner.sum() == 3 + 2 and case.mask[2, 6:9].all() and case.mask[9, 392:394].all()
    assert case.mask[0].all() and case.mask[:, -1].all()  # the border, as PIE-Bench sets it


def test_custom_rows_and_bad_input(tmp_path):
    rows = [{"source": "a cat", "target": "a dog"}, {"source": "a cat", "target": "a fox"}, {"source": 3}]
    (tmp_path / "mine.json").write_text(json.dumps(rows))
    mine = edit_sets.load("custom", data=tmp_path / "mine.json")
    assert len(mine.cases) == 1 and mine.cases[0].targets == ["a dog", "a fox"] and len(mine.skipped) == 1
    with open(tmp_path / "mine.csv", "w", newline="") as f:
        csv.writer(f).writerows([["source", "target", "image"], ["a cat", "a dog", "gone.png"]])
    with pytest.raises(BadInput, match="no usable case"):
        edit_sets.load("custom", data=tmp_path / "mine.csv")
    for name, kwargs in (("car-real-edit", {}), ("nope", {}), ("custom", {"data": tmp_path / "x.json"})):
        with pytest.raises(BadInput):
            edit_sets.load(name, **kwargs)


def test_shapes_sets():
    fake = edit_sets.shapes_fake_edit()
    assert len(fake.cases) == 80 and fake.pairs == 720
    real = edit_sets.shapes_real_edit(3)
    assert real.real and all(c.mask.shape == (64, 64) and c.mask.any() for c in real.cases)

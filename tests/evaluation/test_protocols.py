"""Every metric under both protocols (``pie-bench``: PIE-Bench's released evaluation; ``clean``) on inputs with known
answers (a constant shift, an all-kept mask, an all-edited mask, a half mask), to 1e-6 relative; SSIM against an
independent SSIM written here (Wang et al.: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, data range 1);
the structure distance's input scaling against a hand-made ViT input; LPIPS's networks, with random weights in a
cache folder, against an independent computation from the same weight files."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view

from freeprompt.evaluation import metrics, perceptual

REL = 1e-6


def shifted(size=64, base=100, shift=10):
    a = np.full((size, size, 3), base, np.uint8)
    return a, a + np.uint8(shift)


def textured(seed=0, size=64):
    a = np.random.default_rng(seed).integers(0, 246, (size, size, 3), dtype=np.uint8)
    return a, a + np.uint8(10)  # a constant +10 shift of a textured image


def masks(size=64):
    half = np.zeros((size, size), bool)
    half[:, : size // 2] = True
    return {"all kept": np.zeros((size, size), bool), "all edited": np.ones((size, size), bool), "half": half}


def approx(value):
    return pytest.approx(value, rel=REL, abs=1e-12)


# ------------------------------------------------------------------------------------------ an independent SSIM

def window():
    g = np.exp(-0.5 * (np.arange(-5, 6) / 1.5) ** 2)
    g /= g.sum()
    return np.outer(g, g)


def ssim_by_hand(x, y, pad: bool):
    """SSIM map (HxWxC or (H-10)x(W-10)xC) of [0, 1] arrays, each 11x11 window's weighted moments written out."""
    if pad:
        x, y = (np.pad(t, ((5, 5), (5, 5), (0, 0)), mode="reflect") for t in (x, y))
    w = window()
    wx = sliding_window_view(x, (11, 11), axis=(0, 1))  # H' x W' x C x 11 x 11
    wy = sliding_window_view(y, (11, 11), axis=(0, 1))
    mx, my = (wx * w).sum((-1, -2)), (wy * w).sum((-1, -2))
    vx = (w * (wx - mx[..., None, None]) ** 2).sum((-1, -2))
    vy = (w * (wy - my[..., None, None]) ** 2).sum((-1, -2))
    cxy = (w * (wx - mx[..., None, None]) * (wy - my[..., None, None])).sum((-1, -2))
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def test_the_ssim_window_is_wang_et_al():
    a, b = textured(3, 40)
    x, y = a / 255.0, b / 255.0
    assert metrics.ssim_map(x, y, pad=False) == pytest.approx(ssim_by_hand(x, y, False), rel=1e-9)
    assert metrics.ssim_map(x, y, pad=True) == pytest.approx(ssim_by_hand(x, y, True), rel=1e-9)
    assert metrics.ssim_map(x, y, pad=False).shape == (30, 30, 3)


# ------------------------------------------------------------------------------------------ PSNR, MSE, SSIM

def test_a_constant_shift_without_a_mask_is_the_same_under_both_protocols():
    a, b = shifted()
    expected_mse = (10 / 255) ** 2
    constant_ssim = (2 * (100 / 255) * (110 / 255) + 0.01**2) / ((100 / 255) ** 2 + (110 / 255) ** 2 + 0.01**2)
    for protocol in metrics.PROTOCOLS:
        assert metrics.mse(a, b, protocol=protocol) == approx(expected_mse)
        assert metrics.psnr(a, b, protocol=protocol) == approx(20 * math.log10(25.5))  # 28.1308 dB
        assert metrics.ssim(a, b, protocol=protocol) == approx(constant_ssim)


def test_the_issue_s_numbers_28_65_and_28_13_db():
    """PIE-Bench's averaging over all pixels: PSNR = PSNR_kept - 10 log10(f), f the kept fraction."""
    a, b = textured()
    mask = np.zeros((64, 64), bool)
    mask[10:31, 20:42] = True  # 462 edited pixels: f = 3634 / 4096
    f = 1 - mask.mean()
    kept = metrics.psnr(a, b, mask, protocol="clean")
    assert kept == approx(20 * math.log10(25.5)) and round(kept, 2) == 28.13
    pie = metrics.psnr(a, b, mask, protocol="pie-bench")
    assert pie == approx(kept - 10 * math.log10(f)) and round(pie, 2) == 28.65
    assert metrics.mse(a, b, mask, protocol="pie-bench") == approx(f * (10 / 255) ** 2)


@pytest.mark.parametrize("name", ["all kept", "all edited", "half"])
def test_pixel_metrics_on_masks_with_known_answers(name):
    a, b = textured(1)
    mask = masks()[name]
    f = 1 - mask.mean()
    kept_mse = (10 / 255) ** 2
    if name == "all edited":  # clean: nothing to compare; pie-bench: two black images
        assert all(math.isnan(fn(a, b, mask, protocol="clean")) for fn in (metrics.mse, metrics.psnr, metrics.ssim))
        assert metrics.mse(a, b, mask, protocol="pie-bench") == 0.0
        assert metrics.psnr(a, b, mask, protocol="pie-bench") == math.inf
        assert metrics.ssim(a, b, mask, protocol="pie-bench") == approx(1.0)
        return
    assert metrics.mse(a, b, mask, protocol="clean") == approx(kept_mse)
    assert metrics.psnr(a, b, mask, protocol="clean") == approx(10 * math.log10(1 / kept_mse))
    assert metrics.mse(a, b, mask, protocol="pie-bench") == approx(f * kept_mse)
    assert metrics.psnr(a, b, mask, protocol="pie-bench") == approx(10 * math.log10(1 / kept_mse) - 10 * math.log10(f))
    keep = ~mask
    x, y = a / 255.0, b / 255.0
    clean = ssim_by_hand(x, y, pad=True).mean(-1)[keep].mean()
    pie = ssim_by_hand(x * keep[..., None], y * keep[..., None], pad=False).mean()
    assert metrics.ssim(a, b, mask, protocol="clean") == approx(clean)
    assert metrics.ssim(a, b, mask, protocol="pie-bench") == approx(pie)
    if name == "half":  # the zeroed half counts as SSIM 1 under pie-bench
        assert metrics.ssim(a, b, mask, protocol="pie-bench") > metrics.ssim(a, b, mask, protocol="clean")


def test_an_unknown_protocol_is_one_line():
    a, b = shifted(16)
    with pytest.raises(Exception) as err:
        metrics.psnr(a, b, protocol="nope")
    assert "unknown protocol" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ structure distance

def test_the_structure_input_is_0_255_under_pie_bench_and_0_1_under_clean(tiny_vit_dir):
    from transformers import ViTImageProcessor, ViTModel

    structure = metrics.StructureDistance(str(tiny_vit_dir))
    processor = ViTImageProcessor.from_pretrained(str(tiny_vit_dir))
    model = ViTModel.from_pretrained(str(tiny_vit_dir)).eval()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (processor.image_mean, processor.image_std))
    a, b = textured(4, 32)

    def by_hand(image, scale):
        x = torch.from_numpy(image.astype(np.float64) * scale).permute(2, 0, 1)[None].float()
        keys = []
        layer = [m for n, m in model.named_modules() if n.endswith(("attention.key", "attention.k_proj"))][-1]
        handle = layer.register_forward_hook(lambda mod, args, out: keys.append(out))
        with torch.no_grad():
            model(pixel_values=(x - mean) / std)
        handle.remove()
        k = F.normalize(keys[0], dim=-1)
        return k @ k.transpose(1, 2)

    for protocol, scale in (("pie-bench", 1.0), ("clean", 1 / 255)):
        expected = float(((by_hand(a, scale) - by_hand(b, scale)) ** 2).mean())
        assert structure.distances([a], [b], protocol)[0] == pytest.approx(expected, rel=1e-4)
    assert structure.distances([a], [b], "pie-bench")[0] != pytest.approx(structure.distances([a], [b], "clean")[0])


# ------------------------------------------------------------------------------------------ LPIPS

def random_weights(net: str, folder, seed=0):
    """torchvision-layout backbone weights and LPIPS-layout heads, random, saved where freeprompt looks."""
    torch.manual_seed(seed)
    features, _, channels = perceptual.backbone(net)
    state = {f"features.{k}": torch.randn_like(v) * 0.1 for k, v in features.state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(2, 2)  # present in torchvision's files, ignored
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(channels)}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / perceptual.EXAMPLE_FILES[net])
    torch.save(heads, folder / f"{net}.pth")
    return state, heads


def lpips_by_hand(net, state, heads, x, y):
    """LPIPS written out from the weight files with torch's functional ops."""
    def conv(h, name, stride=1, padding=0):
        return F.conv2d(h, state[f"features.{name}.weight"], state[f"features.{name}.bias"], stride, padding)

    def fire(h, i):
        s = F.relu(conv(h, f"{i}.squeeze"))
        return torch.cat([F.relu(conv(s, f"{i}.expand1x1")), F.relu(conv(s, f"{i}.expand3x3", padding=1))], 1)

    def taps(h):
        h = (h - torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)) / torch.tensor([0.458, 0.448, 0.450]).view(
            1, 3, 1, 1)
        if net == "alex":
            t1 = F.relu(conv(h, 0, 4, 2))
            t2 = F.relu(conv(F.max_pool2d(t1, 3, 2), 3, 1, 2))
            t3 = F.relu(conv(F.max_pool2d(t2, 3, 2), 6, 1, 1))
            t4 = F.relu(conv(t3, 8, 1, 1))
            return [t1, t2, t3, t4, F.relu(conv(t4, 10, 1, 1))]
        t1 = F.relu(conv(h, 0, 2))
        t2 = fire(fire(F.max_pool2d(t1, 3, 2, ceil_mode=True), 3), 4)
        t3 = fire(fire(F.max_pool2d(t2, 3, 2, ceil_mode=True), 6), 7)
        t4 = fire(F.max_pool2d(t3, 3, 2, ceil_mode=True), 9)
        t5 = fire(t4, 10)
        t6 = fire(t5, 11)
        return [t1, t2, t3, t4, t5, t6, fire(t6, 12)]

    total = 0.0
    for k, (fx, fy) in enumerate(zip(taps(x), taps(y))):
        nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total += float(((nx - ny) ** 2 * heads[f"lin{k}.model.1.weight"]).sum(1).mean())
    return total


@pytest.fixture
def lpips_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FREEPROMPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    perceptual.load.cache_clear()
    yield tmp_path / "cache" / "lpips"
    perceptual.load.cache_clear()


def test_missing_lpips_weights_say_which_weights_and_where(lpips_cache):
    for protocol, net, file in (("pie-bench", "squeeze", "squeezenet1_1-"), ("clean", "alex", "alexnet-")):
        note = metrics.lpips_note(protocol)
        assert note.startswith(f"LPIPS left out: its {net} weights are missing") and file in note
        assert str(lpips_cache) in note and "\n" not in note and "package" not in note
        assert metrics.lpips_distance(*textured(0, 32), protocol=protocol) is None


@pytest.mark.parametrize("protocol,net", [("pie-bench", "squeeze"), ("clean", "alex")])
def test_lpips_against_an_independent_computation(lpips_cache, protocol, net):
    state, heads = random_weights(net, lpips_cache)
    assert metrics.lpips_note(protocol) is None
    a, b = textured(5, 64)
    fill = -1.0 if protocol == "pie-bench" else 0.0  # pie-bench: the edited region black; clean: grey
    for name, mask in masks().items():
        x = torch.from_numpy(a / 127.5 - 1).permute(2, 0, 1)[None].float()
        y = torch.from_numpy(b / 127.5 - 1).permute(2, 0, 1)[None].float()
        keep = torch.from_numpy(~mask)[None, None]
        x, y = x.where(keep, torch.tensor(fill)), y.where(keep, torch.tensor(fill))
        value = metrics.lpips_distance(a, b, mask, protocol=protocol)
        if name == "all edited" and protocol == "clean":
            assert math.isnan(value)
            continue
        expected = lpips_by_hand(net, state, heads, x, y)
        assert value == pytest.approx(expected, rel=1e-4, abs=1e-7), name
        if name == "all edited":
            assert value == 0.0  # two black images
    assert metrics.lpips_distance(a, a, protocol=protocol) == 0.0


def test_lpips_weights_in_torch_s_hub_cache_are_found_and_damaged_ones_are_one_line(lpips_cache, tmp_path):
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    random_weights("alex", hub)
    lpips_cache.mkdir(parents=True)
    (hub / "alex.pth").replace(lpips_cache / "alex.pth")  # the heads in freeprompt's folder, the backbone in torch's
    assert metrics.lpips_note("clean") is None
    perceptual.load.cache_clear()
    (lpips_cache / "alex.pth").write_bytes(b"not a checkpoint")
    note = metrics.lpips_note("clean")
    assert note.startswith("LPIPS left out: its alex weights") and "cannot be read" in note and "\n" not in note

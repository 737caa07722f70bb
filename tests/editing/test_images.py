"""Image input for real-image editing: formats, modes, resize semantics and every bad input as one BadInput line."""

import os
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, features

from freeprompt.editing import images
from freeprompt.editing.images import image_to_latents, load_image, prepare_image, psnr
from freeprompt.errors import BadInput

RED, BLUE, GREEN = (220, 30, 30), (30, 70, 220), (30, 160, 50)


def solid(color, size=(32, 32), mode="RGB"):
    return Image.new(mode, size, color)


def near(pixel, color, tol=12):
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel[:3], color))


def one_line(err: BadInput):
    text = str(err)
    assert "\n" not in text and err.problem and err.fix, text
    return text


# ---------------------------------------------------------------- formats and modes

@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("BMP", "bmp")])
def test_formats_load_as_rgb_of_the_asked_size(tmp_path, fmt, ext):
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    path = tmp_path / f"a.{ext}"
    solid(RED, (48, 40)).save(path, fmt)
    img = load_image(path, (32, 24), "fit")
    assert img.mode == "RGB" and img.size == (32, 24)
    assert near(img.getpixel((16, 12)), RED, tol=15)


def test_exif_orientation_is_applied(tmp_path):
    base = Image.new("RGB", (40, 20), RED)
    base.paste(BLUE, (20, 0, 40, 20))  # red left half, blue right half as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the stored left edge becomes the top
    path = tmp_path / "rotated.jpg"
    base.save(path, "JPEG", exif=exif, quality=95)
    img = load_image(path, (20, 40), "fit")
    assert img.size == (20, 40)
    assert near(img.getpixel((10, 5)), RED, 25) and near(img.getpixel((10, 35)), BLUE, 25)


def test_rgba_is_flattened_on_white(tmp_path):
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    rgba.paste((220, 30, 30, 255), (0, 0, 16, 32))
    path = tmp_path / "alpha.png"
    rgba.save(path)
    img = load_image(path, (32, 32), "fit")
    assert img.getpixel((24, 16)) == (255, 255, 255)  # transparent black became white, not black
    assert img.getpixel((4, 16)) == RED


@pytest.mark.parametrize("case", ["L", "LA", "I;16", "P+transparency", "CMYK", "1"])
def test_other_modes_become_rgb(tmp_path, case):
    path = tmp_path / "m.png"
    if case == "L":
        Image.new("L", (32, 32), 200).save(path)
        expect = (200, 200, 200)
    elif case == "LA":
        Image.new("LA", (32, 32), (0, 0)).save(path)
        expect = (255, 255, 255)
    elif case == "I;16":
        Image.fromarray(np.full((32, 32), 65535, np.uint16)).save(path)
        expect = (255, 255, 255)  # full-scale 16-bit white stays white (not clipped garbage)
    elif case == "P+transparency":
        pal = Image.new("P", (32, 32), 1)
        pal.putpalette([0, 0, 0, 220, 30, 30] + [0] * 762)
        pal.save(path, transparency=1)
        expect = (255, 255, 255)
    elif case == "CMYK":
        path = tmp_path / "m.jpg"
        Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(path, "JPEG", quality=95)
        expect = (255, 0, 0)
    else:
        Image.new("1", (32, 32), 1).save(path)
        expect = (255, 255, 255)
    img = load_image(path, (32, 32), "fit")
    assert img.mode == "RGB"
    assert near(img.getpixel((16, 16)), expect, 20), (case, img.getpixel((16, 16)))


def test_animated_gif_uses_first_frame_with_a_warning(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [solid(RED), solid(BLUE)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.warns(UserWarning, match="animated .*2 frames.*first frame"):
        img = load_image(path, (32, 32), "fit")
    assert near(img.getpixel((16, 16)), RED, 20)


def test_multi_picture_jpeg_is_not_called_animated(tmp_path):
    path = tmp_path / "phone.jpg"
    solid(RED).save(path, "MPO", save_all=True, append_images=[solid(BLUE)])
    with Image.open(path) as raw:
        assert raw.format == "MPO" and raw.n_frames == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img = load_image(path, (32, 32), "fit")
    assert near(img.getpixel((16, 16)), RED, 20)


# ---------------------------------------------------------------- resize semantics

def test_resize_modes():
    wide = Image.new("RGB", (64, 32), GREEN)
    wide.paste(RED, (0, 0, 16, 32))  # a red left quarter
    crop = prepare_image(wide, (32, 32), "crop")  # shorter side fits, the centre is kept: no red left
    pad = prepare_image(wide, (32, 32), "pad")  # longer side fits, white bands above and below
    fit = prepare_image(wide, (32, 32), "fit")  # stretched: all content, no bands
    assert all(img.size == (32, 32) for img in (crop, pad, fit))
    arr = np.asarray(crop)
    assert not any(near(p, RED, 40) for p in arr.reshape(-1, 3)), "crop kept the red left quarter"
    assert np.asarray(pad)[0, 16].tolist() == [255, 255, 255] and near(np.asarray(pad)[16, 24], GREEN, 20)
    assert near(np.asarray(fit)[0, 2], RED, 40) and near(np.asarray(fit)[0, 28], GREEN, 20)


def test_bad_size_and_mode():
    with pytest.raises(BadInput, match="resize mode"):
        prepare_image(solid(RED), (32, 32), "stretch")
    with pytest.raises(BadInput, match="not positive"):
        prepare_image(solid(RED), (0, 32), "fit")
    with pytest.raises(BadInput, match="width, height"):
        prepare_image(solid(RED), "big", "fit")


# ---------------------------------------------------------------- bad input: one line each

def test_missing_file_and_folder(tmp_path):
    with pytest.raises(BadInput, match="does not exist") as err:
        load_image(tmp_path / "nope.png", (32, 32))
    one_line(err.value)
    with pytest.raises(BadInput, match="not a file"):
        load_image(tmp_path, (32, 32))


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n")
    with pytest.raises(BadInput, match="not an image") as err:
        load_image(path, (32, 32))
    one_line(err.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path, fmt):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = tmp_path / f"full.{fmt.lower()}"
    Image.fromarray(noise).save(full, fmt)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match="truncated or corrupt") as err:
        load_image(cut, (32, 32))
    one_line(err.value)


def test_tiny_image_names_the_minimum(tmp_path):
    path = tmp_path / "dot.png"
    solid(RED, (1, 1)).save(path)
    with pytest.raises(BadInput, match=f"1x1 pixels, smaller than the minimum of {images.MIN_SIDE}x{images.MIN_SIDE}"):
        load_image(path, (32, 32))


def _blank_png(path, width, height):
    """A valid 1-bit greyscale PNG, compressed row by row: never holds width x height in memory."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(height)] + [comp.flush()]
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)))
        f.write(chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


def test_huge_image_is_refused_from_its_header(tmp_path):
    path = tmp_path / "huge.png"
    _blank_png(path, 20000, 20000)  # 400 megapixels, ~50 kB on disk
    assert path.stat().st_size < 1_000_000
    start = time.perf_counter()
    with pytest.raises(BadInput, match="too large") as err:
        load_image(path, (64, 64))
    assert time.perf_counter() - start < 2.0  # refused from the header, nothing decoded
    one_line(err.value)


def test_over_the_pixel_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_DECODE_PIXELS", 100 * 100)
    png, jpg = tmp_path / "big.png", tmp_path / "big.jpg"
    solid(RED, (400, 400)).save(png)
    solid(RED, (400, 400)).save(jpg, quality=95)
    with pytest.raises(BadInput, match=r"400x400 pixels .* over the limit"):
        load_image(png, (64, 64))  # PNG cannot be reduced while decoding: refused before decode
    img = load_image(jpg, (64, 64), "crop")  # JPEG: decoded at 1/4 scale (100x100), then resized
    assert img.size == (64, 64) and near(img.getpixel((32, 32)), RED, 20)
    monkeypatch.setattr(images, "MAX_DECODE_PIXELS", 20 * 20)  # even 1/8 (50x50) is over: refused
    with pytest.raises(BadInput, match="over the limit"):
        load_image(jpg, (64, 64))


def test_pillow_decompression_bomb_error_becomes_bad_input(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's own guard now fires at open (>200 px)
    path = tmp_path / "bomb.png"
    solid(RED, (32, 32)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning leaks either
        with pytest.raises(BadInput, match="too large"):
            load_image(path, (32, 32))


# ---------------------------------------------------------------- the released example images

@pytest.mark.parametrize("name,mode", [("000141.jpg", "RGB"), ("face.jpg", "RGB"), ("girl.png", "RGBA")])
def test_shared_images(shared_dir, name, mode):
    path = os.path.join(shared_dir, "data", "images", name)
    if not os.path.exists(path):
        pytest.skip(f"{name} is not in ../shared/data/images")
    with Image.open(path) as raw:
        assert raw.mode == mode
        raw_rgb = raw.convert("RGB")
    for size, resize in (((512, 512), "crop"), ((64, 64), "pad"), ((96, 64), "fit")):
        img = load_image(path, size, resize)
        assert img.mode == "RGB" and img.size == size
    if raw_rgb.size == (512, 512):  # no resize needed: the pixels come through unchanged
        assert psnr(load_image(path, (512, 512), "crop"), raw_rgb) == 99.0


# ---------------------------------------------------------------- into the VAE

def test_image_to_latents(tiny_pipe):
    lat = image_to_latents(tiny_pipe, solid(RED, (64, 64)))
    assert lat.shape == (1, 4, 8, 8) and lat.dtype == lat.new_zeros(0).float().dtype
    with pytest.raises(BadInput, match="multiple of 8"):
        image_to_latents(tiny_pipe, solid(RED, (60, 64)))


def test_psnr():
    a = np.zeros((8, 8, 3), np.uint8)
    assert psnr(a, a) == 99.0
    b = a.copy()
    b[0, 0, 0] = 255
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / (255**2 / 192)))

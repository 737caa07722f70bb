"""Issue #29, fuzzed: the image loader either loads a damaged file as RGB of the asked size or refuses it in one
line; it never crashes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from freeprompt.errors import BadInput
from support.fuzz import FUZZ


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["PNG", "JPEG", "GIF", "WEBP", None]))
def test_image_loader_never_crashes_on_damaged_files(tmp_path, data, fmt):
    from freeprompt.editing.images import load_image

    path = tmp_path / "photo"
    if fmt:  # a real image, cut at a random length
        import io

        buffer = io.BytesIO()
        Image.new("RGB", (40, 30), "red").save(buffer, format=fmt)
        data = buffer.getvalue()[: max(1, len(data))]
    path.write_bytes(data)
    try:
        image = load_image(path, (64, 64))
    except BadInput as err:
        assert "\n" not in str(err)
        return
    assert image.size == (64, 64) and image.mode == "RGB"

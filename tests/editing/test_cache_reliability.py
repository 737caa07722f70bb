"""Issue #29 for the inversion cache: a cache save that fails keeps the finished edit, with a warning."""

from __future__ import annotations

import pytest
from PIL import Image

from freeprompt.errors import BadInput


def test_a_cache_that_cannot_be_written_keeps_the_finished_edit(tiny_pipe, tmp_path):
    from freeprompt.editing.cache import CacheWarning, InversionCache
    from freeprompt.editing.real import edit_real

    class FullDisk(InversionCache):
        def save(self, key, inversion, describe=None):
            raise BadInput("cannot write the inversion cache (No space left on device)", "free some space")

    photo = Image.new("RGB", (64, 64), "red")
    with pytest.warns(CacheWarning, match="not cached"):
        result = edit_real(tiny_pipe, photo, "", ["a blue car"], steps=2, cache=FullDisk(tmp_path / "c"),
                           model_key="tiny", progress=False)
    assert len(result.images) == 2 and result.params["inversion_cached"] is False

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


SIZE_LIMITED = """
import resource, signal, sys, warnings
from PIL import Image
from freeprompt.editing.cache import InversionCache
from freeprompt.editing.real import edit_real
from freeprompt.models.random import random_pipeline

pipe = random_pipeline("tiny", seed=0)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing the process
resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    result = edit_real(pipe, Image.new("RGB", (64, 64), "red"), "", ["a blue car"], steps=2,
                       cache=InversionCache(sys.argv[1]), model_key="tiny", progress=False)
print(len(result.images), [str(w.message) for w in caught if "not cached" in str(w.message)])
"""


def test_a_cache_write_that_safetensors_itself_fails_keeps_the_finished_edit(tmp_path):
    """A real file size limit (RLIMIT_FSIZE, as a full disk would do): safetensors raises its own error, which must
    become the one-line cache warning, not lose the edit."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", SIZE_LIMITED, str(tmp_path / "cache")], capture_output=True,
                          text=True, timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    count, warned = done.stdout.strip().split(" ", 1)
    assert count == "2" and "File too large" in warned, done.stdout
    assert not list((tmp_path / "cache").glob("*.safetensors"))  # nothing half-written left as an entry

"""The inversion cache: inversions on disk, keyed by the preprocessed image, model, method and settings, so a
second edit of the same photo skips the inversion. Entries are written atomically and verified when read; a
concurrent writer or a corrupt entry never yields a wrong inversion, at worst a recomputation."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch

from ..errors import BadInput, first_line
from ..io.outputs import remove_stale_temporaries, write_text_atomic
from .inversion import InversionResult

CACHE_FORMAT = "freeprompt-inversion-2"  # bump when what is stored or how it is computed changes


ADDED = "uncond_added."  # the tensors of InversionResult.uncond_added are stored under this prefix


class CacheWarning(UserWarning):
    """A cache entry could not be used and is being recomputed."""


CACHE_FIX = "give a writable --cache-dir (or set FREEPROMPT_CACHE), or pass --no-cache"


def default_cache_dir() -> Path:
    """``$FREEPROMPT_CACHE/inversions``, else ``~/.cache/freeprompt/inversions``."""
    root = os.environ.get("FREEPROMPT_CACHE") or os.path.join("~", ".cache", "freeprompt")
    return Path(root).expanduser() / "inversions"


class InversionCache:
    """Inversions on disk: ``<key>.safetensors`` (tensors + metadata, the entry) and ``<key>.json`` (the same
    metadata for people). Written atomically (temporary name, then ``os.replace``); an entry that fails to
    load or verify is reported with a ``CacheWarning`` and recomputed by the caller."""

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder).expanduser() if folder is not None else default_cache_dir()
        try:
            if self.folder.exists() and not self.folder.is_dir():
                raise OSError("it is a file")
            self.folder.mkdir(parents=True, exist_ok=True)
            if not os.access(self.folder, os.W_OK | os.X_OK):
                raise OSError("permission denied")
            remove_stale_temporaries(self.folder)
        except OSError as err:
            raise BadInput(f"cannot use {self.folder} as the inversion cache ({first_line(err)})",
                           CACHE_FIX) from None

    @staticmethod
    def key(image, *, model_key: str, method: str, steps: int, guidance: float, source: str, dtype=None) -> str:
        """sha256 of the preprocessed image's pixels and size, the model, method, steps, guidance, source
        prompt, UNet dtype and the cache format."""
        rgb = image.convert("RGB")
        h = hashlib.sha256()
        h.update(rgb.tobytes())
        fields = {"format": CACHE_FORMAT, "size": list(rgb.size), "model": str(model_key), "method": method,
                  "steps": int(steps), "guidance": float(guidance), "source": source, "dtype": str(dtype)}
        h.update(json.dumps(fields, sort_keys=True).encode())
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def load(self, key: str) -> InversionResult | None:
        """The entry for ``key``; None if there is none or it is unusable (then with a one-line warning)."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            meta, tensors = _read_entry(path)
            if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
                raise ValueError("its format or key does not match")
            if meta.get("checksum") != _checksum(tensors):
                raise ValueError("its checksum does not match")
            info = json.loads(meta["info"])
            steps = int(info["steps"])
            traj, uncond = tensors["trajectory"], tensors.get("uncond")
            if traj.ndim != 4 or traj.shape[0] != steps + 1 or (uncond is not None and uncond.shape[0] != steps):
                raise ValueError("its tensors have the wrong shape")
        except Exception as err:  # noqa: BLE001 - any unreadable entry is recomputed
            warnings.warn(f"inversion cache entry {path.name} is unusable ({first_line(err)}); recomputing it",
                          CacheWarning, stacklevel=2)
            return None
        return InversionResult(method=info["method"], trajectory=traj, uncond=uncond, source=info["source"],
                               steps=steps, guidance=float(info["guidance"]), seconds=float(info["seconds"]),
                               psnr=info.get("psnr"), ddim_psnr=info.get("ddim_psnr"), vae_psnr=info.get("vae_psnr"),
                               cached=True, info=info.get("extra", {}), uncond_added=_prefixed(tensors, ADDED))

    def save(self, key: str, inversion: InversionResult, describe: dict | None = None) -> Path:
        """Write the entry for ``key`` atomically; returns its path."""
        from safetensors import SafetensorError
        from safetensors.torch import save_file

        tensors = {"trajectory": inversion.trajectory.float().contiguous()}
        if inversion.uncond is not None:
            tensors["uncond"] = inversion.uncond.float().contiguous()
        for name, value in (inversion.uncond_added or {}).items():
            tensors[ADDED + name] = value.float().contiguous()
        extra = {k: v for k, v in inversion.info.items() if k != "edit_offsets_rms"}
        info = {"method": inversion.method, "source": inversion.source, "steps": inversion.steps,
                "guidance": inversion.guidance, "seconds": inversion.seconds, "psnr": inversion.psnr,
                "ddim_psnr": inversion.ddim_psnr, "vae_psnr": inversion.vae_psnr, "extra": extra}
        meta = {"format": CACHE_FORMAT, "key": key, "checksum": _checksum(tensors), "info": json.dumps(info)}
        path = self.path(key)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=self.folder)
            os.close(fd)
            try:
                save_file(tensors, tmp, metadata=meta)
                os.replace(tmp, path)
                side = path.with_suffix(".json")
                write_text_atomic(side, json.dumps({**info, **(describe or {}), "key": key, "format": CACHE_FORMAT},
                                                   indent=2, default=str) + "\n")
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        except (OSError, SafetensorError) as err:  # safetensors reports a full disk or a file size limit itself
            raise BadInput(f"cannot write the inversion cache in {self.folder} ({first_line(err)})",
                           CACHE_FIX) from None
        return path


def _read_entry(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Metadata and tensors of an entry from one read of the file: another process may replace the entry at any
    moment, and reading the header and the tensors separately could pair one version's with the other's."""
    from safetensors.torch import load

    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    return header.get("__metadata__") or {}, load(data)


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.cpu().numpy().tobytes())
    return h.hexdigest()


def _prefixed(tensors: dict, prefix: str) -> dict | None:
    """The tensors whose names start with ``prefix``, by the rest of their names; None if there are none."""
    found = {name[len(prefix):]: value for name, value in tensors.items() if name.startswith(prefix)}
    return found or None

"""Loading the pipelines freeprompt edits: Stable Diffusion 1.x, 2.x and XL, and the diffusion transformers SD3/3.5,
FLUX.1 and PixArt-Sigma/-Alpha; from a hub id, a local diffusers folder, a single checkpoint file, or a fixture alias
shipped with the package (``shapes``). The pipeline class follows the model's ``model_index.json``: SDXL (two text
encoders) loads as ``StableDiffusionXLPipeline``, another UNet as ``StableDiffusionPipeline``, a transformer as its
own pipeline; models freeprompt cannot edit (other transformers, inpainting UNets) are refused in one line.
Safetensors only unless pickles are explicitly allowed."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from ..errors import BadInput, ModelLoadError, first_line
from .names import DEFAULT_MODEL, FIXTURES

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
REQUIRED_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
XL_PARTS = ("text_encoder_2", "tokenizer_2")
# The diffusion transformers freeprompt drives (diffusion/denoisers.py), and the parts each pipeline needs
TRANSFORMER_PARTS = {
    "StableDiffusion3Pipeline": ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
                                 "text_encoder_3", "tokenizer_3", "scheduler"),
    "FluxPipeline": ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "scheduler"),
    "PixArtSigmaPipeline": ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"),
    "PixArtAlphaPipeline": ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"),
}
OPTIONAL_PARTS = ("text_encoder_3", "tokenizer_3")  # SD3 runs without its T5 when the index names it null
WEIGHT_FILES = {"unet": "diffusion_pytorch_model", "transformer": "diffusion_pytorch_model",
                "vae": "diffusion_pytorch_model", "text_encoder": "model", "text_encoder_2": "model",
                "text_encoder_3": "model"}
SUPPORTED = ("Stable Diffusion 1.x, 2.x and XL (a UNet with text cross-attention), SD3/3.5, FLUX.1 and "
             "PixArt-Sigma/-Alpha")
OFFLOAD = ("none", "model", "group")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class LoadedModel:
    pipe: object
    info: dict = field(default_factory=dict)  # what run.json records: id, path, revision, device, dtype
    defaults: dict = field(default_factory=dict)  # sampling defaults the model folder recommends

    def setting(self, name: str, given, fallback=None):
        """The value the user gave (``None``: not given, while 0 stays 0 and is checked where it is used), else
        the model folder's recommendation, else ``fallback``."""
        return given if given is not None else self.defaults.get(name, fallback)

    @property
    def key(self) -> str:
        """The model's identity in the inversion cache: its id and revision (a folder's content hash)."""
        return f"{self.info.get('id')}@{self.info.get('revision')}"


def fixture_path(name: str) -> Path:
    return Path(str(resources.files("freeprompt") / "fixtures" / name))


def resolve_device(spec: str = "auto") -> torch.device:
    spec = (spec or "auto").lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec not in ("cpu", "cuda", "mps") and not spec.startswith("cuda:"):
        raise BadInput(f"unknown device {spec!r}", "use auto, cuda, cuda:N, mps or cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput("--device cuda was asked for but no CUDA GPU is available", "use --device cpu or auto")
    if spec == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise BadInput("--device mps was asked for but MPS is not available", "use --device cpu or auto")
    return torch.device(spec)


def process_device(spec: str = "auto") -> str:
    """The device of this process: under a multi-process launcher (torchrun, ``accelerate launch``: WORLD_SIZE > 1)
    ``auto`` means one GPU per process, numbered by LOCAL_RANK; otherwise ``spec`` as given."""
    if spec != "auto" or int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not torch.cuda.is_available():
        return spec
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"


def resolve_dtype(spec: str = "fp32") -> torch.dtype:
    try:
        return DTYPES[spec.lower()]
    except KeyError:
        raise BadInput(f"unknown dtype {spec!r}", "use fp32, fp16 or bf16") from None


def load_pipeline(model: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "fp32", allow_pickle: bool = False,
                  revision: str | None = None, config: str | None = None, offload: str = "none") -> LoadedModel:
    """Load a Stable Diffusion 1.x/2.x/XL or SD3/FLUX.1/PixArt pipeline from wherever ``model`` points; ``offload``
    (model, group) keeps it on the CPU and lets diffusers' offload hooks move it to ``device`` part by part."""
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    check_offload(offload, torch_device)
    model = str(model)
    if model in FIXTURES:
        path = fixture_path(model)
        if not (path / "model_index.json").exists():
            raise ModelLoadError(f"the fixture model {model!r} is not installed at {path}",
                                 "reinstall freeprompt from a checkout that contains src/freeprompt/fixtures")
        pipe, info = _from_folder(path, allow_pickle, torch_dtype)
        info["id"] = model
    elif os.path.isdir(model):
        pipe, info = _from_folder(Path(model), allow_pickle, torch_dtype)
    elif os.path.isfile(model):
        pipe, info = _from_file(Path(model), allow_pickle, torch_dtype, config)
    elif (os.path.exists(model) or model.startswith((".", "/", "~"))
          or model.endswith((".safetensors",) + PICKLE_SUFFIXES)):
        raise ModelLoadError(f"model path {model} does not exist", "check the path, or give a hub id or --model shapes")
    elif _HUB_ID.match(model):
        pipe, info = _from_hub(model, revision, allow_pickle, torch_dtype)
    else:
        raise ModelLoadError(f"model {model!r} is neither a folder, a file nor a hub id (owner/name)",
                             "give e.g. --model shapes, a local diffusers folder or "
                             "stable-diffusion-v1-5/stable-diffusion-v1-5")
    # Cast after loading, every component: the keyword for it differs between diffusers releases (torch_dtype /
    # dtype), and transformers 5 loads a text encoder in the dtype its config names by default.
    # diffusers warns about fp32-only modules on any dtype cast, even a no-op one; these models have none.
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        pipe = pipe.to(torch_device if offload == "none" else "cpu", torch_dtype)
    finally:
        dlogging.set_verbosity(level)
    apply_offload(pipe, offload, torch_device)
    pipe.set_progress_bar_config(disable=True)
    info.update(device=str(torch_device), dtype=str(torch_dtype).removeprefix("torch."), offload=offload)
    local = info.get("path")
    return LoadedModel(pipe=pipe, info=info, defaults=fixture_defaults(Path(local)) if local else {})


def check_model_options(device: str, dtype: str, offload: str = "none") -> None:
    """Refuse a bad --device, --dtype or --offload before anything loads."""
    check_offload(offload, resolve_device(device))
    resolve_dtype(dtype)


def check_offload(offload: str, device: torch.device) -> None:
    """Refuse an unknown offload mode, or offloading with no accelerator to offload to."""
    if offload not in OFFLOAD:
        raise BadInput(f"unknown offload mode {offload!r}", "use none, model or group")
    if offload != "none" and device.type == "cpu":
        raise BadInput(f"--offload {offload} moves the model to an accelerator part by part, but the device is the CPU",
                       "use --device cuda (or mps), or drop --offload")


def apply_offload(pipe, offload: str, device: torch.device) -> None:
    """diffusers' CPU offload onto ``device``: ``model`` moves each whole model (text encoders, network, VAE) there
    when it runs (the largest model's memory, little slower); ``group`` moves each layer there when it runs (least
    memory, much slower; diffusers' successor of sequential offload, which fails inside accelerate with this
    project's transformers 5). The sampling loop makes its tensors where the hooks compute (``Denoiser.device``)."""
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "group":
        pipe.enable_group_offload(onload_device=device, offload_type="leaf_level")


def fixture_defaults(folder: Path) -> dict:
    """The sampling defaults a model folder recommends in its ``freeprompt_fixture.json`` (none without one)."""
    path = folder / "freeprompt_fixture.json"
    if not path.exists():
        return {}
    try:
        defaults = json.loads(path.read_text(encoding="utf-8")).get("defaults", {})
    except (OSError, ValueError, AttributeError):
        defaults = None
    if not isinstance(defaults, dict):
        raise ModelLoadError(f"{path} is damaged (not a JSON object with a 'defaults' table)",
                             "restore it (reinstall freeprompt for the bundled fixture) or delete it")
    return defaults


def _pipeline_class(name: str = "StableDiffusionPipeline"):
    """The diffusers pipeline class ``name`` (one of those ``check_index`` returns)."""
    import diffusers
    from diffusers.utils import logging as dlogging

    dlogging.disable_progress_bar()
    try:
        from transformers.utils import logging as tlogging

        tlogging.disable_progress_bar()
    except ImportError:
        pass
    return getattr(diffusers, name)


def unet_family(unet) -> str:
    """``sdxl`` (size/pooled conditioning), ``sd1`` (768-wide text conditioning), ``sd2`` (1024-wide) or ``other``
    (a tiny or custom UNet such as the shapes fixture)."""
    config = unet.config
    if getattr(config, "addition_embed_type", None) == "text_time":
        return "sdxl"
    return {768: "sd1", 1024: "sd2"}.get(getattr(config, "cross_attention_dim", None), "other")


def network_family(denoiser) -> str:
    """A denoiser's network family: ``unet_family``'s for a UNet, else the transformer's (sd3, flux, pixart)."""
    return unet_family(denoiser.network) if denoiser.family == "unet" else denoiser.family


def check_index(index: dict, where: str) -> str:
    """The pipeline class a ``model_index.json`` loads as (``StableDiffusionXLPipeline``, ``StableDiffusionPipeline``
    or a transformer's of ``TRANSFORMER_PARTS``); a one-line error for a model freeprompt cannot edit."""
    name = str(index.get("_class_name", "this"))
    if "Inpaint" in name or "Upscale" in name or "Pix2Pix" in name or "Img2Img" in name:
        raise ModelLoadError(f"{where} holds a {name} model, whose network takes extra input channels",
                             f"freeprompt edits {SUPPORTED}; use the base text-to-image model")
    if "transformer" in index:
        if name not in TRANSFORMER_PARTS:
            raise ModelLoadError(f"{where} holds a {name} model, a diffusion transformer freeprompt does not drive",
                                 f"freeprompt edits {SUPPORTED}")
        return name
    if "unet" not in index:
        raise ModelLoadError(f"{where} holds a {name} model, which has no UNet or transformer",
                             f"freeprompt edits {SUPPORTED}")
    return "StableDiffusionXLPipeline" if "text_encoder_2" in index else "StableDiffusionPipeline"


def _absent(index: dict, cls: str) -> dict:
    """The optional parts a transformer's index names null (SD3 without T5), as the pipeline wants them: None."""
    if cls not in TRANSFORMER_PARTS:
        return {}
    return {part: None for part in OPTIONAL_PARTS
            if part in TRANSFORMER_PARTS[cls] and (index.get(part) or [None])[0] is None}


def _parts(index: dict, cls: str) -> tuple[str, ...]:
    """The parts a folder of pipeline ``cls`` must hold (SD3's T5 not when its index names it null)."""
    if cls in TRANSFORMER_PARTS:
        return tuple(part for part in TRANSFORMER_PARTS[cls] if part not in _absent(index, cls))
    return REQUIRED_PARTS + (XL_PARTS if cls == "StableDiffusionXLPipeline" else ())


def check_model_folder(path: Path, allow_pickle: bool) -> dict:
    """Fail with a one-line message if ``path`` is not a complete SD1.x/2.x/XL diffusers folder."""
    index_file = path / "model_index.json"
    if not index_file.exists():
        raise ModelLoadError(f"{path} is not a diffusers model folder (no model_index.json)",
                             "give a folder saved with save_pretrained, a .safetensors file or a hub id")
    try:
        index = json.loads(index_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        index = None
    if not isinstance(index, dict):
        raise ModelLoadError(f"{index_file} is not a JSON object (truncated or corrupt)",
                             "re-download or re-save the model")
    parts = _parts(index, check_index(index, str(path)))
    missing = [part for part in parts if part not in index or not (path / part).is_dir()]
    if set(missing) & set(OPTIONAL_PARTS):
        raise ModelLoadError(f"{path} names SD3's optional T5 text encoder but lacks {', '.join(missing)}",
                             "download text_encoder_3 and tokenizer_3, or set both to [null, null] in "
                             "model_index.json to run without T5")
    if missing:
        raise ModelLoadError(f"{path} is not a complete model folder: missing {', '.join(missing)}",
                             f"give a complete folder of {SUPPORTED}")
    if "unet" in parts:
        _check_unet_config(path / "unet" / "config.json")
    for part, stem in WEIGHT_FILES.items():
        if part not in parts:
            continue
        folder = path / part
        if not (folder / "config.json").exists():
            raise ModelLoadError(f"{folder} has no config.json (partial download?)", "re-download or re-save the model")
        safe = list(folder.glob(f"{stem}*.safetensors"))
        pickled = [p for p in folder.glob(f"{stem}*") if p.suffix in PICKLE_SUFFIXES]
        if not safe and pickled and not allow_pickle:
            raise ModelLoadError(f"{folder} has only pickle weights ({pickled[0].name}), "
                                 "which can run code when loaded",
                                 "convert them to safetensors, or pass --allow-pickle if you trust the source")
        if not safe and not pickled:
            raise ModelLoadError(f"{folder} has no weights (partial download?)", "re-download or re-save the model")
    return index


def _check_unet_config(config_file: Path) -> None:
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return  # a missing or broken config is reported with the weights below
    if not isinstance(config, dict):
        raise ModelLoadError(f"{config_file} is not a JSON object (truncated or corrupt)",
                             "re-download or re-save the model")
    if config.get("in_channels", 4) != config.get("out_channels", 4):
        raise ModelLoadError(f"{config_file.parent.parent} holds a UNet with {config.get('in_channels')} "
                             "input channels (an inpainting or image-conditioned model)",
                             f"freeprompt edits {SUPPORTED}")


def _from_folder(path: Path, allow_pickle: bool, torch_dtype):
    index = check_model_folder(path, allow_pickle)
    cls = check_index(index, str(path))
    try:
        pipe = _pipeline_class(cls).from_pretrained(str(path), use_safetensors=None if allow_pickle else True,
                                                    local_files_only=True, **_class_kwargs(cls), **_absent(index, cls))
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelLoadError(f"cannot load the model in {path}: {first_line(err)}",
                             "check that the folder is complete and uncorrupted") from err
    return pipe, {"id": str(path), "path": str(path.resolve()), "revision": _content_hash(path)}


def _class_kwargs(cls: str) -> dict:
    if cls == "StableDiffusionXLPipeline":
        return {"add_watermarker": False}
    return {"safety_checker": None, "requires_safety_checker": False} if cls == "StableDiffusionPipeline" else {}


def _from_file(path: Path, allow_pickle: bool, torch_dtype, config: str | None):
    if path.suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise ModelLoadError(f"{path.name} is a pickle checkpoint, which can run code when loaded",
                             "use a .safetensors file, or pass --allow-pickle if you trust the source")
    if path.suffix not in (".safetensors",) + PICKLE_SUFFIXES:
        raise ModelLoadError(f"{path} is not a model checkpoint (.safetensors)",
                             "give a .safetensors file, a folder or a hub id")
    name = _single_file_class(path, config)
    try:
        pipe = _pipeline_class(name).from_single_file(str(path), config=config, **_class_kwargs(name))
    except Exception as err:  # noqa: BLE001 - diffusers raises many types here; the user needs one line
        hint = ("pass --config with a local diffusers folder of the same architecture (offline, the base config "
                "cannot be fetched)" if _offline() else f"check that the file is a complete checkpoint of {SUPPORTED}")
        raise ModelLoadError(f"cannot load checkpoint {path.name}: {first_line(err)}", hint) from err
    return pipe, {"id": str(path), "path": str(path.resolve()), "revision": _file_hash(path)}


def _single_file_class(path: Path, config: str | None) -> str:
    """The pipeline class of ``--config``'s folder, else SDXL's if the checkpoint holds SDXL's second text encoder,
    else SD1.x/2.x's."""
    if config and os.path.isdir(config) and (Path(config) / "model_index.json").exists():
        return check_index(json.loads((Path(config) / "model_index.json").read_text()), config)
    return "StableDiffusionXLPipeline" if _holds_xl_text_encoder(path) else "StableDiffusionPipeline"


def _holds_xl_text_encoder(path: Path) -> bool:
    if path.suffix != ".safetensors":
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            return any(key.startswith("conditioner.embedders.1.") for key in f.keys())
    except Exception:  # noqa: BLE001 - an unreadable file fails with its own message when loaded
        return False


def _from_hub(model_id: str, revision: str | None, allow_pickle: bool, torch_dtype):
    index = _hub_index(model_id, revision)
    name = check_index(index, model_id)
    cls = _pipeline_class(name)
    kwargs = dict(revision=revision, use_safetensors=None if allow_pickle else True, **_class_kwargs(name),
                  **_absent(index, name))
    try:
        pipe = cls.from_pretrained(model_id, local_files_only=True, **kwargs)  # cached: no network round trip
    except Exception:  # noqa: BLE001 - not cached (or incomplete): go to the hub unless offline
        if _offline():
            raise ModelLoadError(f"model {model_id!r} is not in the local Hugging Face cache and the hub is offline "
                                 "(HF_HUB_OFFLINE=1)",
                                 "download it once with network access, or use a local folder or "
                                 "--model shapes") from None
        try:
            pipe = cls.from_pretrained(model_id, **kwargs)
        except Exception as err:  # noqa: BLE001
            raise ModelLoadError(f"cannot download model {model_id!r}: {first_line(err)}",
                                 "check the id and your network, or use a local folder or --model shapes") from err
    return pipe, {"id": model_id, "path": None, "revision": _hub_revision(model_id, revision)}


def _hub_index(model_id: str, revision: str | None) -> dict:
    """The model's ``model_index.json``, from the local cache first (it decides the pipeline class)."""
    from huggingface_hub import hf_hub_download

    for local in (True, False):
        if not local and _offline():
            break
        try:
            return json.loads(Path(hf_hub_download(model_id, "model_index.json", revision=revision,
                                                   local_files_only=local)).read_text())
        except Exception:  # noqa: BLE001 - not cached, or no such model: told below
            continue
    if _offline():
        raise ModelLoadError(f"model {model_id!r} is not in the local Hugging Face cache and the hub is offline "
                             "(HF_HUB_OFFLINE=1)",
                             "download it once with network access, or use a local folder or --model shapes")
    raise ModelLoadError(f"cannot find model {model_id!r} on the hub (no model_index.json)",
                         "check the id, or give a local folder or a .safetensors file")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _hub_revision(model_id: str, revision: str | None) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, revision=revision, local_files_only=True)).name
    except Exception:  # noqa: BLE001 - only informational
        return revision


def _content_hash(path: Path) -> str:
    """A short hash of the folder's configs and weight files, recorded as the model's revision."""
    h = hashlib.sha256()
    for file in sorted(path.rglob("*")):
        if file.is_file() and file.suffix in (".json", ".safetensors", ".txt") + PICKLE_SUFFIXES:
            h.update(str(file.relative_to(path)).encode())
            size = file.stat().st_size
            # full content for small files; name and size for multi-GB weights, which would take seconds to read
            h.update(file.read_bytes() if size < 64 << 20 else str(size).encode())
    return "sha256:" + h.hexdigest()[:16]


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()[:16]

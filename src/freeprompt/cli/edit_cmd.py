"""``freeprompt edit`` and ``freeprompt layers``: parse, call the library, print."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from ..diffusion.latents import MAX_TARGETS
from ..diffusion.schedulers import SCHEDULERS, check_scheduler, check_solver
from ..editing.methods import PRESET, build_methods
from ..errors import BadInput
from .loading import load_model
from .options import (
    CONFIG_HELP,
    REVISION_HELP,
    device_option,
    dtype_option,
    guidance_option,
    model_option,
    offload_option,
    quiet_option,
    seed_option,
    side_option,
    steps_option,
)


def edit(
    source: str = typer.Option(..., "--source", "-s", help="source prompt"),
    target: list[str] = typer.Option(..., "--target", "-t",
                                     help=f"target prompt (repeat for several, at most {MAX_TARGETS})"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder (new or empty; see --overwrite)"),
    overwrite: bool = typer.Option(False, help="replace an earlier run's output folder"),
    model: str = model_option(),
    seed: int = seed_option(0, "seed of the initial noise shared by source and targets"),
    latents: Optional[Path] = typer.Option(None, help="initial noise from a .safetensors file instead of --seed"),
    steps: Optional[int] = steps_option(),
    scheduler: Optional[str] = typer.Option(None, help=f"sampler: {', '.join(SCHEDULERS)} (a photo: ddim; lcm and "
                                            "tcd need a distilled model; flow is SD3's and FLUX's) [default: ddim; "
                                            "flow on SD3 and FLUX]", show_default=False),
    guidance: Optional[float] = guidance_option(),
    negative: str = typer.Option("", help="negative prompt"),
    height: Optional[int] = side_option("image height (multiple of 8) [default: the model's]"),
    width: Optional[int] = side_option("image width (multiple of 8) [default: the model's]"),
    save_latents: bool = typer.Option(False, help="also write the final latents to latents.safetensors"),
    device: str = device_option(),
    dtype: str = dtype_option(),
    offload: str = offload_option(),
    allow_pickle: bool = typer.Option(False, help="allow pickle checkpoints (.ckpt/.bin), which can run code"),
    config: Optional[str] = typer.Option(None, help=CONFIG_HELP),
    revision: Optional[str] = typer.Option(None, help=REVISION_HELP),
    quiet: bool = quiet_option(),
    image: Optional[Path] = typer.Option(None, "--image", "-i", help="edit this photo instead of a generated image"),
    inversion: str = typer.Option("direct", help="with --image: direct, ddim, null-text or negative-prompt (SD3 and "
                                  "FLUX.1: direct or ddim)"),
    inversion_solver: str = typer.Option("euler", help="with --image on SD3 or FLUX.1: euler, or midpoint (RF-Solver's "
                                         "second-order step, two network calls a step)"),
    resize: str = typer.Option("crop",
                               help="with --image: crop (centre), pad (white) or fit (stretch) to the model size"),
    cache_dir: Optional[Path] = typer.Option(None, help="with --image: inversion cache [default: "
                                             "$FREEPROMPT_CACHE/inversions, else ~/.cache/freeprompt/inversions]"),
    no_cache: bool = typer.Option(False, "--no-cache", help="with --image: always invert afresh"),
    auto_caption: bool = typer.Option(True, help="with --image and an empty --source: use the candidate caption a CLIP "
                                      "ranks first (candidates: the shapes world's on the fixture, else "
                                      "--caption-candidates); --no-auto-caption inverts with the empty prompt"),
    caption_candidates: Optional[Path] = typer.Option(None, help="with --image and an empty --source: candidate "
                                                      "captions, one per line"),
    caption_clip: Optional[str] = typer.Option(None, help="the CLIP that ranks the candidates: shapes, a hub id or a "
                                               "folder [default: shapes on the fixture, else "
                                               "openai/clip-vit-large-patch14]"),
    method: str = "fpe",
    method_options: Optional[dict] = None,
):
    """Edit a generated image (or a photo with --image); by default FPE: targets reuse the source's self-attention.
    Several methods (--method fpe,p2p,plain) edit the same noise side by side, each in its own subfolder."""
    chosen = build_methods(method, method_options)  # every check that needs no model comes before the model loads
    _check_run(out, overwrite, scheduler, image, height, width, (device, dtype, offload))
    _check_inputs(source, target, image, (inversion, inversion_solver), resize, latents, negative)
    candidates = _candidates(image, source, auto_caption, caption_candidates, caption_clip)
    start = time.perf_counter()
    loaded = load_model(model, device=device, dtype=dtype, allow_pickle=allow_pickle, revision=revision, config=config,
                        offload=offload)
    load_s = time.perf_counter() - start
    run, size = _settings(loaded, steps, guidance, height, width)
    run.update(progress=not quiet, scheduler=scheduler)
    extra = {"latents_file": str(latents) if latents else None} if image is None else {"image": str(image)}
    extra["preset"] = (method_options or {}).get(PRESET)
    if image is None:
        results = _edit_each(chosen, run, load_s, lambda run: _edit_generated(loaded.pipe, source, target, seed,
                                                                              latents, negative, run, size))
    else:
        source, extra["caption"] = _photo_source(loaded, image, inversion, resize, size, source,
                                                 candidates if auto_caption else False, caption_clip)
        results = _edit_each(chosen, {**run, "solver": inversion_solver}, load_s, lambda run: _edit_photo(
            loaded, image, source, target, inversion, resize, cache_dir, no_cache, run, size))
    _save(results, out, loaded.info, save_latents, extra)
    typer.echo(_written(out, results))


def _photo_source(loaded, image, inversion: str, resize, size: dict, source: str, candidates, clip):
    """A photo's source prompt and what run.json records of it (``_caption``), once the model is known to invert
    photos with ``inversion``; the caption used is printed."""
    from ..editing.inversion import check_inversion

    check_inversion(inversion, loaded.pipe)  # a photo needs a model it can be inverted on
    source, caption = _caption(loaded, image, resize, size, source, candidates, clip)
    typer.echo(_caption_line(caption))
    return source, caption


def _edit_each(chosen: dict, run: dict, load_s: float, one) -> dict:
    """Each chosen method's result of ``one(run settings with that method)``, the model's load time recorded."""
    results = {}
    for name, method in chosen.items():
        results[name] = one({**run, "method": method})
        results[name].timings["load_s"] = load_s
    return results


def _check_run(out, overwrite, scheduler, image, height, width, placement: tuple) -> None:
    """The run's own settings, refused before the model loads: output folder, sampler, size, and ``placement``
    (device, dtype, offload)."""
    from ..diffusion.latents import check_size
    from ..io.outputs import check_output_folder
    from ..models.loading import check_model_options

    if scheduler is not None:
        check_scheduler(scheduler, inverting=image is not None)
    check_output_folder(out, overwrite)
    check_size(height, width), check_model_options(*placement)


def _save(results: dict, out: Path, model: dict, save_latents: bool, extra: dict) -> None:
    """One method's run folder, or a comparison of several with a subfolder each."""
    from ..io.outputs import save_comparison, save_edit

    if len(results) == 1:
        save_edit(next(iter(results.values())), out, model=model, save_latents=save_latents, extra=extra)
    else:
        save_comparison(results, out, model=model, save_latents=save_latents, extra=extra)


def _settings(loaded, steps, guidance, height, width) -> tuple[dict, dict]:
    """The run's steps and guidance, and its image size: what was given, else the model's recommendation."""
    return ({"steps": loaded.setting("steps", steps, 50), "guidance": loaded.setting("guidance", guidance, 7.5)},
            {"height": loaded.setting("height", height), "width": loaded.setting("width", width)})


def _check_inputs(source, targets, image, how: tuple[str, str], resize, latents, negative) -> None:
    """Every refusal of the prompts and the photo's settings that needs no model, so a bad call fails before the
    (slow) model load; ``how`` is (inversion, solver): whether the model can take them is checked once it loads."""
    from ..diffusion import require_text
    from ..diffusion.latents import check_targets
    from ..editing.images import check_resize_mode
    from ..editing.inversion import check_inversion

    for i, text in enumerate([source, *targets]):
        if i or image is None:  # a photo may be inverted with the empty source prompt, as the official code does
            require_text(text, "source prompt" if i == 0 else f"target prompt {i}")
    inversion, solver = how
    check_targets(len(targets))
    check_inversion(inversion)  # typos are caught with or without --image
    check_solver(solver, flow=True)
    check_resize_mode(resize)
    if latents is not None and not latents.is_file():
        what = "is a folder" if latents.is_dir() else "does not exist"
        raise BadInput(f"latents file {latents} {what}", "give a .safetensors file written by --save-latents")
    if image is None:
        return
    from ..editing.images import open_image

    open_image(image).close()
    if latents is not None:
        raise BadInput("--latents and --image exclude each other", "the noise of a photo comes from its inversion")
    if negative:
        raise BadInput("--negative and --image exclude each other",
                       "a photo's unconditional branch comes from its inversion; drop --negative")


def _candidates(image, source: str, auto_caption: bool, path, clip) -> list[str] | None:
    """The candidate captions read from ``--caption-candidates`` (None: not given), after the checks that the
    caption options apply: a photo given without a source prompt."""
    from ..editing.caption import read_candidates

    given = path is not None or clip is not None
    if given and (image is None or source != "" or not auto_caption):
        raise BadInput("--caption-candidates and --caption-clip rank captions of a photo given without one",
                       "use them with --image and --source \"\" (and without --no-auto-caption)")
    return read_candidates(path) if path is not None else None


def _caption(loaded, image_path, resize, size, source: str, candidates, clip) -> tuple[str, dict]:
    """The source prompt of a photo edit and what run.json records about it: the given prompt; else the candidate
    a CLIP ranks first (the given candidates, or the shapes world's on the fixture); else "" (no candidates, or
    ``candidates`` False: --no-auto-caption)."""
    if source != "" or candidates is False:
        return source, {"text": source, "found": "given" if source else "empty: --no-auto-caption"}
    from ..diffusion import image_size, latent_shape
    from ..diffusion.denoisers import device_of
    from ..editing.caption import default_candidates, default_clip, rank_captions
    from ..editing.images import load_image

    model_id = str(loaded.info.get("id"))
    candidates = candidates or default_candidates(model_id)
    if not candidates:
        return "", {"text": "", "found": "empty: no candidate captions (give --caption-candidates FILE)"}
    pipe = loaded.pipe
    photo = load_image(image_path, image_size(pipe, latent_shape(pipe, size["height"], size["width"])), resize)
    caption = rank_captions(photo, candidates, clip or default_clip(model_id), device=str(device_of(pipe)))
    return caption.text, caption.record()


def _caption_line(caption: dict) -> str:
    if caption["found"] == "ranked by CLIP":
        return (f"caption: {caption['text']!r} (ranked first of {caption['candidates']} candidates by the CLIP "
                f"{caption['clip']}, similarity {caption['score']:.3f})")
    return f"caption: {caption['text']!r} ({caption['found']})"


def _edit_generated(pipe, source, targets, seed, latents_file, negative, run: dict, size: dict):
    from ..editing.generated import edit as run_edit

    noise = _read_latents(latents_file) if latents_file else None
    return run_edit(pipe, source, targets, seed=seed, latents=noise, negative_prompt=negative, **run, **size)


def _edit_photo(loaded, image_path, source, targets, inversion, resize, cache_dir, no_cache, run: dict, size: dict):
    from ..diffusion import image_size, latent_shape
    from ..editing.cache import InversionCache
    from ..editing.images import load_image
    from ..editing.real import edit_real

    pipe = loaded.pipe
    photo = load_image(image_path, image_size(pipe, latent_shape(pipe, size["height"], size["width"])), resize)
    cache = None if no_cache else InversionCache(cache_dir)
    result = edit_real(pipe, photo, source, targets, inversion=inversion, cache=cache,
                       model_key=loaded.key, **run)
    result.params["resize"] = resize
    return result


def _written(out: Path, results: dict) -> str:
    if len(results) > 1:
        return f"wrote {out}/grid.png, run.json and a folder per method: {', '.join(results)}"
    result = next(iter(results.values()))
    targets = ", ".join(f"target_{i}.png" for i in range(1, len(result.images)))
    if result.input_image is None:
        return f"wrote {out}/source.png, {targets}, grid.png, run.json"
    return (f"wrote {out}/source.png (reconstruction, PSNR {result.params['inversion_psnr']} dB), {targets}, "
            "input.png, grid.png, run.json")


def layers(
    model: str = model_option(),
    height: Optional[int] = typer.Option(None, help="image height [default: the model's]"),
    width: Optional[int] = typer.Option(None, help="image width [default: the model's]"),
    select: Optional[str] = typer.Option(None, help="mark the self-attention layers a --layers spec selects"),
    allow_pickle: bool = typer.Option(False, help="allow pickle checkpoints"),
    config: Optional[str] = typer.Option(None, help=CONFIG_HELP),
    revision: Optional[str] = typer.Option(None, help=REVISION_HELP),
    device: str = device_option(),
    dtype: str = dtype_option(),
):
    """Print the attention layers of a model's UNet or transformer: kind, index in forward order, place, token grid."""
    from ..attention import discover_layers
    from ..diffusion import latent_shape
    from ..diffusion.denoisers import network_of

    pipe = load_model(model, device=device, dtype=dtype, allow_pickle=allow_pickle, revision=revision,
                         config=config).pipe
    latent_hw = latent_shape(pipe, height, width)[2:]
    registry = discover_layers(network_of(pipe))
    kind = "joint" if registry.of_kind("joint") else "self"  # an MM-DiT's image tokens attend in joint layers
    chosen = {layer.name for layer in registry.select(select, kind, latent_hw)} if select else set()
    typer.echo(f"{'kind':5} {'idx':>3} {'block':6} {'grid':>7} {'tokens':>6}  {'sel':3} name")
    for row in registry.table(latent_hw):
        mark = "*" if row["name"] in chosen else ""
        typer.echo(f"{row['kind']:5} {row['index']:>3} {row['place']:6} {row['grid']:>7} {row['tokens']:>6}  "
                   f"{mark:3} {row['name']}")


def _read_latents(path: Path):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise BadInput(f"latents file {path} does not exist", "give a .safetensors file written by --save-latents")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise BadInput(f"cannot read latents from {path}: {err}", "give a .safetensors file") from None
    for key in ("initial", "latents"):
        if key in tensors:
            return tensors[key]
    if len(tensors) == 1:
        return next(iter(tensors.values()))
    raise BadInput(f"{path} holds several tensors ({', '.join(sorted(tensors))}) and none is named 'initial' or "
                   "'latents'", "save the noise under the key 'latents'")

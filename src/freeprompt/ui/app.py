"""The web UI (``freeprompt ui``, gradio, in the ``ui`` extra): edit a generated image or a photo with any method,
see the source, the targets and each prompt's cross-attention heat map of a chosen word, download the grid and
run.json. The method's controls are made from the methods' declared options, as the command line's are. One edit
runs at a time, whichever tab asks (one model, one lock, one gradio queue); every run writes its own folder. Every
value a request carries is checked with the CLI's bounds (steps, guidance, seed, at most ``MAX_TARGETS`` targets, the
method and its options) before the edit waits for the model; bad input shows the CLI's one-line message in the page,
and any other failure one internal-error line, never a traceback."""

from __future__ import annotations

import math
import numbers
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import BadInput, FreepromptError, first_line

MAX_UPLOAD = "20mb"
MAX_SEED = 2**63 - 1  # the command line's bounds (cli/options.py, a floor above this one; a test keeps them equal)
MAX_STEPS = 1000
MAX_GUIDANCE = 1000.0


class Editor:
    """The loaded model and what the UI's buttons call; every call returns what the page shows. Every value a
    request carries is checked with the command line's bounds before the edit waits for the model; a refusal is
    the one-line message in the page, and anything else that goes wrong is one internal-error line (never a
    traceback in the page)."""

    def __init__(self, loaded, out_root: Path | None = None):
        self.loaded, self.pipe = loaded, loaded.pipe
        self.out_root = Path(out_root or tempfile.mkdtemp(prefix="freeprompt-ui-"))
        self.lock = threading.Lock()  # one edit at a time on the one pipeline, whichever tab asks
        from ..editing.reuse import SourceCache

        self.source = SourceCache()  # the last generated source: a new target of it runs the target's rows only

    def layer_rows(self, spec: str) -> list[list]:
        """The model's self-attention layers, the ones ``spec`` selects marked."""
        from ..attention import discover_layers
        from ..diffusion import latent_shape
        from ..diffusion.denoisers import network_of

        latent_hw = latent_shape(self.pipe, None, None)[2:]
        registry = discover_layers(network_of(self.pipe))
        kind = "joint" if registry.of_kind("joint") else "self"  # an MM-DiT's image tokens attend in joint layers
        try:
            chosen = {layer.name for layer in registry.select(text(spec, "the layers") or "none", kind, latent_hw)}
        except FreepromptError:
            chosen = set()
        return [["*" if row["name"] in chosen else "", row["index"], row["place"], row["grid"], row["name"]]
                for row in registry.table(latent_hw) if row["kind"] == kind]

    def generated(self, source, targets, method, seed, steps, guidance, options: dict, word, progress=None):
        from ..editing.generated import edit

        def read() -> Request:
            return self.request(targets, method, steps, guidance, options, word,
                                source=text(source, "the source prompt"), seed=whole(seed, "Seed", 0, MAX_SEED, 0))

        def run(asked: Request, hooks):
            return edit(self.pipe, asked.source, asked.targets, method=asked.method, seed=asked.seed,
                        steps=asked.steps, guidance=asked.guidance, progress=_bar(progress, asked.steps), hooks=hooks,
                        reuse=None if hooks else self.source)  # a heat map records every row: no re-use then

        return self._run(read, run)

    def real(self, upload, resize, inversion, source, targets, method, steps, guidance, options: dict, word,
             progress=None):
        from ..editing.cache import InversionCache
        from ..editing.inversion import check_inversion
        from ..editing.real import edit_real

        def read() -> Request:
            asked = self.request(targets, method, steps, guidance, options, word,
                                 source=text(source, "the source prompt"),
                                 inversion=check_inversion(text(inversion, "the inversion")))
            return replace(asked, photo=self.photo(upload, resize))

        def run(asked: Request, hooks):
            return edit_real(self.pipe, asked.photo, asked.source, asked.targets, method=asked.method,
                             inversion=asked.inversion, steps=asked.steps, guidance=asked.guidance,
                             cache=InversionCache(), model_key=self.loaded.key,
                             progress=_bar(progress, asked.steps), hooks=hooks)

        return self._run(read, run)

    def request(self, targets, method, steps, guidance, options, word, **extra) -> Request:
        """The values both tabs share, checked (``BadInput`` otherwise): steps 1..1000, guidance finite in
        0..1000, at least one and at most ``MAX_TARGETS`` target lines, a known method and its options."""
        from ..diffusion.latents import check_targets
        from ..editing.methods import build_method

        defaults = self.loaded.defaults
        steps = whole(steps, "Steps", 1, MAX_STEPS, defaults.get("steps", 50))
        guidance = real_number(guidance, "Guidance", 0, MAX_GUIDANCE, defaults.get("guidance", 7.5))
        lines = [line.strip() for line in text(targets, "the target prompts").splitlines() if line.strip()]
        if not lines:
            raise BadInput("no target prompt given", "write at least one target prompt, one per line")
        check_targets(len(lines))
        chosen = build_method(text(method, "the method"), option_values(options))
        return Request(lines, chosen, steps, guidance, text(word, "the heat-map word").strip(), **extra)

    def photo(self, upload, resize: str):
        """The uploaded photo at the model's size, or a one-line refusal."""
        from ..diffusion import image_size, latent_shape
        from ..editing.images import load_image

        if upload is None or (isinstance(upload, str) and not upload.strip()):
            raise BadInput("no image uploaded", "upload a PNG, JPEG or WebP photo")
        path = upload if isinstance(upload, (str, os.PathLike)) else getattr(upload, "name", None)
        if not isinstance(path, (str, os.PathLike)):
            raise BadInput(f"the upload is a {type(upload).__name__}, not a file", "upload a PNG, JPEG or WebP photo")
        size = image_size(self.pipe, latent_shape(self.pipe, None, None))
        return load_image(text(os.fspath(path), "the upload's name"), size, text(resize, "the resize mode"))

    def _run(self, read, run):
        try:
            asked = read()
            start = time.perf_counter()
            with self.lock, _maps(self.pipe, asked.word, asked.steps) as recorder:
                result = run(asked, [recorder] if recorder is not None else [])
            heat = _heat_maps(recorder, result.prompts, asked.word) if recorder is not None else []
            folder = self._save(result)
            seconds = time.perf_counter() - start
        except FreepromptError as err:
            return self._error(err)
        except Exception as err:  # noqa: BLE001 - a bug or a full memory: one line in the page, once on stderr
            return self._failed(err)
        images = [(img, label) for img, label in zip(result.images, _labels(result))]
        timings = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()) + f"; total {seconds:.1f} s"
        if result.params.get("source_reused"):
            timings += f"; re-used the source ({result.params['source_cache_bytes'] / 2**20:.0f} MiB kept)"
        return images, heat, str(folder / "grid.png"), str(folder / "run.json"), timings, ""

    def _save(self, result) -> Path:
        from ..io.outputs import save_edit

        folder = Path(tempfile.mkdtemp(prefix="run-", dir=self.out_root))
        save_edit(result, folder, model=self.loaded.info)
        return folder

    @staticmethod
    def _error(err: Exception):
        return [], [], None, None, "", f"**freeprompt: error:** {err}"

    @classmethod
    def _failed(cls, err: Exception):
        """What the page shows for an exception that is not a ``FreepromptError``: out of memory as a refusal,
        anything else as one internal-error line, also written once to the server's stderr."""
        if _out_of_memory(err):
            return cls._error(BadInput("out of memory", "use fewer target prompts or steps, or restart the UI with "
                                                        "--dtype fp16"))
        line = f"{type(err).__name__}: {first_line(err)}"
        print(f"freeprompt: internal error: {line}", file=sys.stderr, flush=True)
        return [], [], None, None, "", f"**freeprompt: internal error:** {line}"


@dataclass(frozen=True)
class Request:
    """One edit's values from the page, checked: the target lines, the built method, steps, guidance, the
    heat-map word; a generated image's source and seed, a photo's source, inversion and image."""

    targets: list[str]
    method: object
    steps: int
    guidance: float
    word: str
    source: str = ""
    seed: int = 0
    inversion: str = "direct"
    photo: object = None


def text(value, what: str) -> str:
    """A text field's value (``None``: empty), or a one-line refusal of anything that is not text or that holds
    characters that are not Unicode (lone surrogates, which JSON can carry)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadInput(f"{what}: a {type(value).__name__} where text was expected", f"give {what} as text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"{what} holds characters that are not valid Unicode", f"retype {what}") from None
    return value


def whole(value, what: str, low: int, high: int, example) -> int:
    """A whole number from ``low`` to ``high`` (a number field's value: an int, an integral float, numeric text),
    or a one-line refusal naming ``what``."""
    fix = f"give a whole number from {low} to {high}, e.g. {example}"
    given = _given(value, what, fix)
    if isinstance(given, float) and (not math.isfinite(given) or not given.is_integer()):
        raise BadInput(f"{what} {given:g} is not a whole number", fix)
    if not low <= given <= high:
        raise BadInput(f"{what} {_shown(given)} is outside {low}..{high}", fix)
    return int(given)


def real_number(value, what: str, low: float, high: float, example) -> float:
    """A finite number from ``low`` to ``high``, or a one-line refusal naming ``what``."""
    fix = f"give a number from {low:g} to {high:g}, e.g. {example}"
    number = _given(value, what, fix)
    try:
        number = float(number)
    except OverflowError:  # an int too large for a float
        number = math.inf
    if not math.isfinite(number) or not low <= number <= high:
        raise BadInput(f"{what} {_shown(number)} is not a finite number from {low:g} to {high:g}", fix)
    return number


def _given(value, what: str, fix: str) -> int | float:
    """A number field's value as a number: empty (``None``, blank text) and non-numbers refused."""
    if isinstance(value, str) and value.strip():
        try:
            value = float(value) if any(c in value.lower() for c in ".ein") else int(value)
        except ValueError:
            raise BadInput(f"{what} {value!r} is not a number", fix) from None
    if value is None or isinstance(value, str):
        raise BadInput(f"{what} is empty", fix)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BadInput(f"{what} {value!r} is not a number", fix)
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _shown(number) -> str:
    if isinstance(number, float):
        return f"{number:g}"
    return str(number) if number.bit_length() <= 128 else f"{'-' if number < 0 else ''}2^{number.bit_length() - 1}+"


def option_values(options) -> dict:
    """The method options a request carries, keyed by parameter name: empty ones left to their default, text
    options given as text (a number field's value as its text), anything but text, numbers and switches refused;
    ``build_method`` then reads and checks each."""
    from ..editing.methods import option_table
    from ..editing.methods.options import NUMBER, SWITCH

    if options is None:
        return {}
    if not isinstance(options, dict):
        raise BadInput(f"the method options are a {type(options).__name__}", "give them as a mapping of name to value")
    kinds = {declared.param: declared.kind for _, declared in option_table()}
    values = {}
    for name, value in options.items():
        if not isinstance(name, str) or name not in kinds:
            raise BadInput(f"unknown method option {name!r}", "see 'freeprompt methods' for every option")
        if value is None or (isinstance(value, str) and not value):
            continue
        if not isinstance(value, (str, numbers.Real)):
            raise BadInput(f"method option {name} is a {type(value).__name__}", "give text, a number or on/off")
        values[name] = text(value, f"method option {name}") if isinstance(value, str) else (
            value if kinds[name] in (NUMBER, SWITCH) else str(value))
    return values


def _out_of_memory(err: BaseException) -> bool:
    return (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"
            or (isinstance(err, RuntimeError) and "out of memory" in str(err).lower()))


def _bar(progress, steps):
    if progress is None:
        return False
    return lambda iterable: progress.tqdm(iterable, total=int(steps), desc="denoising")


class _maps:
    """Records every prompt's cross-attention maps in the edit's own steps (not an inversion's), when a word is
    asked for; the recorder is also the edit's step hook."""

    def __init__(self, pipe, word: str, steps):
        self.pipe, self.word, self.steps, self.context = pipe, (word or "").strip(), steps, None

    def __enter__(self):
        if not self.word:
            return None
        from ..attention import record_attention

        self.context = record_attention(self.pipe, kind="cross", layers="all", tokens=None,
                                        steps=range(int(self.steps)))
        return self.context.__enter__()

    def __exit__(self, *exc):
        return self.context.__exit__(*exc) if self.context is not None else False


def _heat_maps(recorder, prompts: list[str], word: str) -> list:
    """A heat map of ``word`` for every prompt that contains it: the head- and step-averaged cross-attention,
    every layer brought to the largest grid and averaged."""
    from ..attention import word_token_indices

    maps = recorder.maps()
    side = max(m.shape[-1] for m in maps.values())
    out = []
    for row, prompt in enumerate(prompts):
        try:
            positions = word_token_indices(recorder.tokenizer, prompt, word)
        except FreepromptError:
            continue
        layers = [torch.nn.functional.interpolate(m[row:row + 1, positions].mean(1, keepdim=True).float(),
                                                  size=(side, side), mode="bilinear") for m in maps.values()]
        heat = torch.cat(layers).mean(0)[0]
        heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-12)
        colour = (np.stack([heat, heat ** 2, 1 - heat], -1).clip(0, 1) * 255).astype(np.uint8)
        out.append((Image.fromarray(colour).resize((256, 256), Image.NEAREST), f"'{word}' in: {prompt}"))
    return out


def _labels(result) -> list[str]:
    first = "reconstruction" if result.params.get("real_image") else f"source: {result.prompts[0]}"
    return [first] + [f"target {i}: {p}" for i, p in enumerate(result.prompts[1:], 1)]


def build(editor: Editor):
    """The gradio Blocks of the UI."""
    import gradio as gr

    from ..editing.images import RESIZE_MODES
    from ..editing.inversion import INVERSIONS

    with gr.Blocks(title="freeprompt", analytics_enabled=False) as demo:
        gr.Markdown("# freeprompt\nEdit an image by prompt, keeping its structure (Free-Prompt-Editing and the methods "
                    f"it is compared with). Model: `{editor.loaded.info.get('id')}`.")
        with gr.Tab("Generated image"):
            generated = [gr.Textbox(label="Source prompt", value="a red circle")]
            generated_form = _form(gr, editor)
        with gr.Tab("Real image"):
            upload = gr.File(label="Photo (PNG, JPEG, WebP)", file_types=["image"], type="filepath")
            with gr.Row():
                resize = gr.Dropdown(list(RESIZE_MODES), value="crop", label="Resize")
                inversion = gr.Dropdown(list(INVERSIONS), value="direct", label="Inversion")
            real = [upload, resize, inversion, gr.Textbox(label="Source prompt (may be empty)", value="")]
            real_form = _form(gr, editor, real=True)
        outputs = _outputs(gr)
        tabs = ((generated_form, generated, editor.generated, "edit"), (real_form, real, editor.real, "edit_real"))
        for form, first, handler, name in tabs:  # one queue for both tabs: one edit at a time on the one model
            form.button.click(_handler(handler, len(first), form), first + form.inputs(), outputs, api_name=name,
                              concurrency_limit=1, concurrency_id="edit")
    return demo


def _outputs(gr) -> list:
    error = gr.Markdown(elem_id="error")
    gallery = gr.Gallery(label="Source and targets", columns=4, elem_id="gallery")
    heat = gr.Gallery(label="Cross-attention heat maps", columns=4, elem_id="heatmaps")
    with gr.Row():
        grid = gr.File(label="grid.png")
        run_json = gr.File(label="run.json")
    timings = gr.Textbox(label="Timings", elem_id="timings")
    return [gallery, heat, grid, run_json, timings, error]


class _Form:
    """One tab's targets, method, sampling settings, heat-map word and every method option's control."""

    def __init__(self, targets, method, seed, steps, guidance, word, options: dict, button):
        self.targets, self.method, self.seed, self.steps, self.guidance = targets, method, seed, steps, guidance
        self.word, self.options, self.button = word, options, button

    def fields(self) -> list[str]:
        return ["targets", "method"] + (["seed"] if self.seed is not None else []) + ["steps", "guidance", "word"]

    def inputs(self) -> list:
        controls = [getattr(self, name) for name in self.fields()]
        return controls + [control for _, _, control in self.options.values()]

    def read(self, values: list) -> dict:
        """The handler's keyword arguments from the values of ``inputs()``: the option values of the methods the
        chosen method runs (fpe+p2p: both), empty ones left to their default."""
        named = dict(zip(self.fields(), values))
        parts = str(named["method"]).split("+")
        option_values = values[len(named):]
        named["options"] = {param: value for (param, (owner, _, _)), value in zip(self.options.items(), option_values)
                            if owner in parts and value not in ("", None)}
        return named


def _form(gr, editor: Editor, real: bool = False) -> _Form:
    """The controls both tabs share, the method options made from their declarations, and the Edit button."""
    from ..editing.methods import METHODS, method_choices, option_table

    defaults = editor.loaded.defaults
    targets = gr.Textbox(label="Target prompts (one per line)", lines=3, value="a blue circle\na green circle")
    with gr.Row():
        method = gr.Dropdown(method_choices(), value="fpe", label="Method")
        # no gradio bounds or rounding: the Editor checks every value and answers in the page's one line
        seed = None if real else gr.Number(value=0, step=1, label="Seed")
        steps = gr.Number(value=defaults.get("steps", 50), step=1, label="Steps")
        guidance = gr.Number(value=defaults.get("guidance", 7.5), label="Guidance")
        word = gr.Textbox(value="", label="Heat-map word (optional)")
    options, groups = {}, {}
    for name in METHODS:
        with gr.Group(visible=name == "fpe") as groups[name]:
            with gr.Row():
                for owner, declared in option_table():
                    if owner == name:
                        options[declared.param] = (owner, declared, _control(gr, METHODS[owner].title, declared))
    method.change(lambda chosen: [gr.update(visible=n in str(chosen).split("+")) for n in groups], method,
                  list(groups.values()))
    if "layers" in options:  # FPE's layers: the model's layer table, the selection marked
        table = gr.Dataframe(value=editor.layer_rows("<=32x32"), headers=["sel", "index", "block", "grid", "name"],
                             label="Self-attention layers (* = edited by FPE)", interactive=False)
        options["layers"][2].change(editor.layer_rows, options["layers"][2], table)
    button = gr.Button("Edit", variant="primary", elem_id="edit-real" if real else "edit")
    return _Form(targets, method, seed, steps, guidance, word, options, button)


def _control(gr, title: str, declared):
    """A declared option's control: a dropdown, number, checkbox or text box, its default filled in (a default
    that depends on the model is shown as the placeholder)."""
    from ..editing.methods.options import CHOICE, NUMBER, SWITCH

    label = f"{declared.label[0].upper()}{declared.label[1:]} ({title})"
    if declared.kind == CHOICE:
        return gr.Dropdown(list(declared.choices), value=declared.default, label=label)
    if declared.kind == NUMBER:
        bounds = f"{declared.bounds[0]:g} to {declared.bounds[1]:g}" if declared.bounds else None
        return gr.Number(value=declared.default, label=label, info=bounds)  # checked by the method, not gradio
    if declared.kind == SWITCH:
        return gr.Checkbox(value=bool(declared.default), label=label)
    fixed = declared.default_text is None and declared.default not in (None, ())
    return gr.Textbox(value=declared.shown_default() if fixed else "", label=label,
                      placeholder=f"default: {declared.shown_default()}; comma-separated" if declared.repeatable
                      else f"default: {declared.shown_default()}")


def _handler(method, fixed: int, form: _Form):
    """The click handler of one tab: its own first inputs, then the form's, read by name."""
    import gradio as gr

    def run(*values, progress=gr.Progress()):
        return method(*values[:fixed], **form.read(list(values[fixed:])), progress=progress)

    return run


def launch(loaded, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           max_upload: str | int = MAX_UPLOAD, block: bool = True):
    """Serve the UI (one edit at a time) and return the gradio app; ``block``: until Ctrl-C, then the server is
    closed and the KeyboardInterrupt raised again (the command line says "interrupted" and exits 130). A server
    that cannot start is a one-line ``BadInput``, with its threads stopped, so the process ends."""
    from gradio.exceptions import ServerFailedToStartError

    demo = build(Editor(loaded))
    demo.queue(default_concurrency_limit=1)
    try:
        demo.launch(server_name=host, server_port=port, share=share, max_file_size=max_upload,
                    prevent_thread_lock=True, quiet=True, footer_links=[])
    except (OSError, ServerFailedToStartError) as err:
        close(demo)
        raise BadInput(f"cannot serve on {host} port {port or 'from 7860'} ({first_line(err).split('. ')[0]})",
                       "choose another --port, or --host 127.0.0.1") from None
    except BaseException:  # Ctrl-C while starting: stop what started
        close(demo)
        raise
    if block:
        serve(demo)
    return demo


def serve(demo) -> None:
    """Wait while ``demo`` serves; on Ctrl-C (or any exit) close it, so no server thread outlives the call."""
    try:
        while demo.is_running:
            time.sleep(0.2)
    finally:
        close(demo)


def close(demo) -> None:
    """Stop a gradio app's server, queue and share tunnels (what gradio's own Ctrl-C handling stops)."""
    from gradio.tunneling import CURRENT_TUNNELS

    demo.close(verbose=False)
    for tunnel in list(CURRENT_TUNNELS):
        tunnel.kill()

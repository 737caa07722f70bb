"""The web UI (``freeprompt ui``, gradio, in the ``ui`` extra): edit a generated image or a photo with any method,
see the source, the targets and each prompt's cross-attention heat map of a chosen word, download the grid and
run.json. The method's controls are made from the methods' declared options, as the command line's are. One edit
runs at a time, whichever tab asks (one model, one lock); every run writes its own folder; bad input shows the CLI's
one-line message in the page."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import BadInput, FreepromptError

MAX_UPLOAD = "20mb"


class Editor:
    """The loaded model and what the UI's buttons call; every call returns what the page shows."""

    def __init__(self, loaded, out_root: Path | None = None):
        self.loaded, self.pipe = loaded, loaded.pipe
        self.out_root = Path(out_root or tempfile.mkdtemp(prefix="freeprompt-ui-"))
        self.lock = threading.Lock()  # one edit at a time on the one pipeline, whichever tab asks

    def layer_rows(self, spec: str) -> list[list]:
        """The model's self-attention layers, the ones ``spec`` selects marked."""
        from ..attention import discover_layers
        from ..diffusion import latent_shape

        latent_hw = latent_shape(self.pipe, None, None)[2:]
        registry = discover_layers(self.pipe.unet)
        try:
            chosen = {layer.name for layer in registry.select(spec or "none", "self", latent_hw)}
        except FreepromptError:
            chosen = set()
        return [["*" if row["name"] in chosen else "", row["index"], row["place"], row["grid"], row["name"]]
                for row in registry.table(latent_hw) if row["kind"] == "self"]

    def generated(self, source, targets, method, seed, steps, guidance, options: dict, word, progress=None):
        from ..editing.generated import edit

        def run(targets_list, chosen, hooks):
            return edit(self.pipe, source, targets_list, method=chosen, seed=int(seed), steps=int(steps),
                        guidance=float(guidance), progress=_bar(progress, steps), hooks=hooks)

        return self._run(run, targets, method, options, word, steps)

    def real(self, upload, resize, inversion, source, targets, method, steps, guidance, options: dict, word,
             progress=None):
        from ..diffusion import image_size, latent_shape
        from ..editing.cache import InversionCache
        from ..editing.images import load_image
        from ..editing.real import edit_real

        if not upload:
            return self._error(BadInput("no image uploaded", "upload a PNG, JPEG or WebP photo"))
        path = upload if isinstance(upload, str) else getattr(upload, "name", str(upload))

        def run(targets_list, chosen, hooks):
            size = image_size(self.pipe, latent_shape(self.pipe, None, None))
            photo = load_image(path, size, resize)
            info = self.loaded.info
            return edit_real(self.pipe, photo, source or "", targets_list, method=chosen, inversion=inversion,
                             steps=int(steps), guidance=float(guidance), cache=InversionCache(),
                             model_key=f"{info.get('id')}@{info.get('revision')}", progress=_bar(progress, steps),
                             hooks=hooks)

        return self._run(run, targets, method, options, word, steps)

    def _run(self, run, targets, method, options, word, steps):
        from ..editing.methods import build_method

        try:
            targets_list = [t.strip() for t in str(targets or "").splitlines() if t.strip()]
            if not targets_list:
                raise BadInput("no target prompt given", "write at least one target prompt, one per line")
            chosen = build_method(method, options)
            start = time.perf_counter()
            with self.lock, _maps(self.pipe, word, steps) as recorder:
                result = run(targets_list, chosen, [recorder] if recorder is not None else [])
            heat = _heat_maps(recorder, result.prompts, word) if recorder is not None else []
            folder = self._save(result)
            seconds = time.perf_counter() - start
        except FreepromptError as err:
            return self._error(err)
        images = [(img, label) for img, label in zip(result.images, _labels(result))]
        timings = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()) + f"; total {seconds:.1f} s"
        return images, heat, str(folder / "grid.png"), str(folder / "run.json"), timings, ""

    def _save(self, result) -> Path:
        from ..io.outputs import save_edit

        folder = Path(tempfile.mkdtemp(prefix="run-", dir=self.out_root))
        save_edit(result, folder, model=self.loaded.info)
        return folder

    @staticmethod
    def _error(err: Exception):
        return [], [], None, None, "", f"**freeprompt: error:** {err}"


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

    with gr.Blocks(title="freeprompt") as demo:
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
        for form, first, handler in ((generated_form, generated, editor.generated), (real_form, real, editor.real)):
            inputs = first + form.inputs()
            form.button.click(_handler(handler, len(first), form), inputs, outputs, concurrency_limit=1,
                              concurrency_id="edit")
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
        seed = None if real else gr.Number(value=0, precision=0, minimum=0, label="Seed")
        steps = gr.Number(value=defaults.get("steps", 50), precision=0, label="Steps")
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
        low, high = declared.bounds or (None, None)
        return gr.Number(value=declared.default, minimum=low, maximum=high, label=label)
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
           max_upload: str = MAX_UPLOAD, block: bool = True):
    """Serve the UI (one edit at a time); returns the gradio app (``block=False``: without waiting)."""
    demo = build(Editor(loaded))
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=host, server_port=port, share=share, max_file_size=max_upload,
                prevent_thread_lock=not block, quiet=True, footer_links=[])
    return demo

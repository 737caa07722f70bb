"""The web UI (``freeprompt ui``, gradio, in the ``ui`` extra): edit a generated image or a photo with any method,
see the source, the targets and each prompt's cross-attention heat map of a chosen word, download the grid and
run.json. One edit runs at a time (gradio's queue); every run writes its own folder; bad input shows the CLI's
one-line message in the page."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import BadInput, FreepromptError

METHODS = ("fpe", "p2p", "masactrl", "pnp", "plain", "fpe+p2p")
RESIZE = ("crop", "pad", "fit")
INVERSIONS = ("direct", "ddim", "null-text", "negative-prompt")
MAX_UPLOAD = "20mb"


class Editor:
    """The loaded model and what the UI's buttons call; every call returns what the page shows."""

    def __init__(self, loaded, out_root: Path | None = None):
        self.loaded, self.pipe = loaded, loaded.pipe
        self.out_root = Path(out_root or tempfile.mkdtemp(prefix="freeprompt-ui-"))

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

    def generated(self, source, targets, method, seed, steps, guidance, self_replace, layers, word, progress=None):
        from ..editing.generated import edit

        def run(targets_list, chosen):
            return edit(self.pipe, source, targets_list, method=chosen, seed=int(seed), steps=int(steps),
                        guidance=float(guidance), progress=_bar(progress, steps))

        return self._run(run, targets, method, self_replace, layers, word)

    def real(self, upload, resize, inversion, source, targets, method, steps, guidance, self_replace, layers, word,
             progress=None):
        from ..diffusion import image_size, latent_shape
        from ..editing.cache import InversionCache
        from ..editing.images import load_image
        from ..editing.real import edit_real

        if not upload:
            return self._error(BadInput("no image uploaded", "upload a PNG, JPEG or WebP photo"))
        path = upload if isinstance(upload, str) else getattr(upload, "name", str(upload))

        def run(targets_list, chosen):
            size = image_size(self.pipe, latent_shape(self.pipe, None, None))
            photo = load_image(path, size, resize)
            info = self.loaded.info
            result = edit_real(self.pipe, photo, source or "", targets_list, method=chosen, inversion=inversion,
                               steps=int(steps), guidance=float(guidance), cache=InversionCache(),
                               model_key=f"{info.get('id')}@{info.get('revision')}", progress=_bar(progress, steps))
            return result

        return self._run(run, targets, method, self_replace, layers, word)

    def _run(self, run, targets, method, self_replace, layers, word):
        try:
            targets_list = [t.strip() for t in str(targets or "").splitlines() if t.strip()]
            if not targets_list:
                raise BadInput("no target prompt given", "write at least one target prompt, one per line")
            chosen = _method(method, self_replace, layers)
            start = time.perf_counter()
            with _maps(self.pipe, word) as recorder:
                result = run(targets_list, chosen)
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


def _method(name: str, self_replace: str, layers: str):
    from ..editing.methods import method_named

    fpe = {"self_replace": self_replace or None, "layers": layers or None}
    return method_named(name, fpe={k: v for k, v in fpe.items() if v} if "fpe" in name.split("+") else {})


def _bar(progress, steps):
    if progress is None:
        return False
    return lambda iterable: progress.tqdm(iterable, total=int(steps), desc="denoising")


class _maps:
    """Records every prompt's cross-attention maps while the block runs, when a word is asked for."""

    def __init__(self, pipe, word: str):
        self.pipe, self.word, self.context = pipe, (word or "").strip(), None

    def __enter__(self):
        if not self.word:
            return None
        from ..attention import record_attention

        self.context = record_attention(self.pipe, kind="cross", layers="all", tokens=None)
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


def run_json_text(path: str | None) -> str:
    return json.dumps(json.loads(Path(path).read_text()), indent=1) if path else ""


def build(editor: Editor):
    """The gradio Blocks of the UI."""
    import gradio as gr

    defaults = editor.loaded.defaults
    with gr.Blocks(title="freeprompt") as demo:
        gr.Markdown("# freeprompt\nEdit an image by prompt, keeping its structure (Free-Prompt-Editing and the methods "
                    f"it is compared with). Model: `{editor.loaded.info.get('id')}`.")
        with gr.Tab("Generated image"):
            source = gr.Textbox(label="Source prompt", value="a red circle")
            inputs = [source] + _common(gr, editor, defaults)
        with gr.Tab("Real image"):
            upload = gr.File(label="Photo (PNG, JPEG, WebP)", file_types=["image"], type="filepath")
            with gr.Row():
                resize = gr.Dropdown(list(RESIZE), value="crop", label="Resize")
                inversion = gr.Dropdown(list(INVERSIONS), value="direct", label="Inversion")
            real_source = gr.Textbox(label="Source prompt (may be empty)", value="")
            real_inputs = [upload, resize, inversion, real_source] + _common(gr, editor, defaults, real=True)
        error = gr.Markdown(elem_id="error")
        gallery = gr.Gallery(label="Source and targets", columns=4, elem_id="gallery")
        heat = gr.Gallery(label="Cross-attention heat maps", columns=4, elem_id="heatmaps")
        with gr.Row():
            grid = gr.File(label="grid.png")
            run_json = gr.File(label="run.json")
        timings = gr.Textbox(label="Timings", elem_id="timings")
        outputs = [gallery, heat, grid, run_json, timings, error]
        inputs[-1].click(_generated(editor), inputs[:-1], outputs, concurrency_limit=1)
        real_inputs[-1].click(_real(editor), real_inputs[:-1], outputs, concurrency_limit=1)
    return demo


def _common(gr, editor: Editor, defaults: dict, real: bool = False) -> list:
    """The targets and method settings both tabs share, and the Edit button last."""
    targets = gr.Textbox(label="Target prompts (one per line)", lines=3, value="a blue circle\na green circle")
    with gr.Row():
        method = gr.Dropdown(list(METHODS), value="fpe", label="Method")
        seed = gr.Number(value=0, precision=0, label="Seed", visible=not real)
        steps = gr.Number(value=defaults.get("steps", 50), precision=0, label="Steps")
        guidance = gr.Number(value=defaults.get("guidance", 7.5), label="Guidance")
    with gr.Row():
        self_replace = gr.Textbox(value="0:0.8", label="Self-replace steps (FPE)")
        layers = gr.Textbox(value="<=32x32", label="Layers (FPE)")
        word = gr.Textbox(value="", label="Heat-map word (optional)")
    table = gr.Dataframe(value=editor.layer_rows("<=32x32"), headers=["sel", "index", "block", "grid", "name"],
                         label="Self-attention layers (* = edited)", interactive=False)
    layers.change(editor.layer_rows, layers, table)
    button = gr.Button("Edit", variant="primary", elem_id="edit-real" if real else "edit")
    if real:
        return [targets, method, steps, guidance, self_replace, layers, word, button]
    return [targets, method, seed, steps, guidance, self_replace, layers, word, button]


def _generated(editor: Editor):
    import gradio as gr

    def run(source, targets, method, seed, steps, guidance, self_replace, layers, word, progress=gr.Progress()):
        return editor.generated(source, targets, method, seed, steps, guidance, self_replace, layers, word, progress)

    return run


def _real(editor: Editor):
    import gradio as gr

    def run(upload, resize, inversion, source, targets, method, steps, guidance, self_replace, layers, word,
            progress=gr.Progress()):
        return editor.real(upload, resize, inversion, source, targets, method, steps, guidance, self_replace, layers,
                           word, progress)

    return run


def launch(loaded, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           max_upload: str = MAX_UPLOAD, block: bool = True):
    """Serve the UI (one edit at a time); returns the gradio app (``block=False``: without waiting)."""
    demo = build(Editor(loaded))
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=host, server_port=port, share=share, max_file_size=max_upload,
                prevent_thread_lock=not block, quiet=True, footer_links=[])
    return demo

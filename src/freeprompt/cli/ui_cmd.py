"""``freeprompt ui``: the web UI (gradio, in the ``ui`` extra)."""

from __future__ import annotations

from typing import Optional

import typer

from .loading import load_model
from .options import device_option, dtype_option, model_option


def ui(
    model: str = model_option(),
    host: str = typer.Option("127.0.0.1", help="address to listen on (127.0.0.1: this machine only)"),
    port: Optional[int] = typer.Option(None, min=1, max=65535,
                                       help="port [default: gradio's, 7860 or the next free one]"),
    share: bool = typer.Option(False, "--share/--no-share", help="also publish a gradio share link (off)"),
    max_upload: str = typer.Option("20mb", help="largest upload accepted"),
    device: str = device_option(),
    dtype: str = dtype_option(),
):
    """Serve the web UI: edit generated images and photos with any method, see heat maps, download results."""
    from ..errors import BadInput
    from ..models.loading import resolve_device, resolve_dtype

    resolve_device(device), resolve_dtype(dtype)
    try:
        import gradio  # noqa: F401 - only to say how to install it
    except ImportError:
        raise BadInput("the web UI needs gradio, which is not installed", "pip install 'freeprompt[ui]'") from None
    from ..ui.app import launch

    loaded = load_model(model, device=device, dtype=dtype)
    typer.echo(f"serving {loaded.info.get('id')} on http://{host}:{port or 7860} (Ctrl-C stops)")
    launch(loaded, host=host, port=port, share=share, max_upload=max_upload)

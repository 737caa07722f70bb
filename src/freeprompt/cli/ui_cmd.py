"""``freeprompt ui``: the web UI (gradio, in the ``ui`` extra). The upload size, the address and the port are
checked before the model loads (gradio itself would retry a bad host for minutes); Ctrl-C at any point, while
loading, starting or serving, stops the server and exits 130."""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial
from typing import Optional

import typer

from .loading import load_model
from .options import device_option, dtype_option, model_option, offload_option

UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}  # gradio's (gradio.utils.FileSize)
ADDRESS_FIX = "give an address of this machine: 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"


def upload_size(text: str) -> int:
    """typer callback of --max-upload: a whole number and a unit (b, kb, mb, gb, tb), as bytes."""
    match = re.fullmatch(r"\s*(\d{1,15})\s*([kmgt]?b)\s*", str(text), re.IGNORECASE)
    if not match:
        raise typer.BadParameter(f"{text!r} is not a size; write a whole number and a unit, e.g. 20mb or 1gb")
    if int(match[1]) == 0:
        raise typer.BadParameter(f"{text!r} would refuse every upload; give a positive size, e.g. 20mb")
    return int(match[1]) * UNITS[match[2].lower()]


def check_address(host: str, port: int | None) -> None:
    """Refuse a --host that is not an address of this machine and a --port that is taken, in one line."""
    from ..errors import BadInput

    if not host.strip():
        raise BadInput("--host is empty", ADDRESS_FIX)
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # gradio strips IPv6 brackets too
    try:
        family, kind, proto, _, address = socket.getaddrinfo(name, port or 0, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise BadInput(f"--host {host!r} is not an address of this machine ({reason})", ADDRESS_FIX) from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will bind it
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise BadInput(f"port {port} on {host} is in use", "choose another --port, or leave it out to take "
                               "the first free one from 7860") from None
            raise BadInput(f"cannot listen on --host {host!r} ({err.strerror or err})", ADDRESS_FIX) from None


CLOSE_WITHIN_S = 10.0  # Ctrl-C while serving: how long the server may take to close before the process ends anyway


@contextmanager
def interrupt_stops_at_once(closing: list[Callable[[], None]]):
    """Ctrl-C while torch, gradio and the model load, the server starts or serves ends the process at once, with one
    line and status 130: raised inside those libraries' imports and loaders, a KeyboardInterrupt can come out as
    another error, a recursion, or not at all (the server then starts anyway); raised while serving, it leaves the
    server's shutdown (and the interpreter's wait for its threads) unbounded. The closers in ``closing`` (the
    server's, once it runs) run first, each given ``CLOSE_WITHIN_S``. The server writes every run folder
    atomically, so nothing else needs cleaning up."""

    def stop(signum, frame):
        for close in closing:
            closer = threading.Thread(target=close, daemon=True)
            closer.start()
            closer.join(CLOSE_WITHIN_S)
        sys.stdout.flush()
        sys.stderr.write("freeprompt: interrupted\n")
        sys.stderr.flush()
        os._exit(130)

    if threading.current_thread() is not threading.main_thread():  # signals reach only the main thread
        yield
        return
    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def ui(
    model: str = model_option(),
    host: str = typer.Option("127.0.0.1", help="address to listen on (127.0.0.1: this machine only)"),
    port: Optional[int] = typer.Option(None, min=1, max=65535,
                                       help="port [default: gradio's, 7860 or the next free one]"),
    share: bool = typer.Option(False, "--share/--no-share", help="also publish a gradio share link (off)"),
    max_upload: str = typer.Option("20mb", callback=upload_size, help="largest upload accepted (b, kb, mb, gb)"),
    device: str = device_option(),
    dtype: str = dtype_option(),
    offload: str = offload_option(),
):
    """Serve the web UI: edit generated images and photos with any method, see heat maps, download results."""
    from ..errors import BadInput

    check_address(host, port)  # before torch is imported: a second, not four
    closing: list[Callable[[], None]] = []  # the server's closer once it runs: called before Ctrl-C ends the process
    with interrupt_stops_at_once(closing):
        from ..models.loading import check_model_options

        check_model_options(device, dtype, offload)
        try:
            import gradio  # noqa: F401 - only to say how to install it
        except ImportError:
            raise BadInput("the web UI needs gradio, which is not installed", "pip install 'freeprompt[ui]'") from None
        from ..ui.app import close, launch, serve

        typer.echo(f"loading {model} ...")
        loaded = load_model(model, device=device, dtype=dtype, offload=offload)
        demo = launch(loaded, host=host, port=port, share=share, max_upload=max_upload, block=False)
        closing.append(partial(close, demo))
        typer.echo(f"serving {loaded.info.get('id')} on {demo.local_url} (Ctrl-C stops)")
        serve(demo)  # until the server stops; Ctrl-C: closed by the handler above, one line, status 130

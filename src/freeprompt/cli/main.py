"""The ``freeprompt`` command: the typer app, its commands (each in its own module, which knows nothing of the
app) and the one place where failures become one-line messages. Every user-facing failure is one line on stderr
with exit status 2; ``--debug`` shows the traceback."""

from __future__ import annotations

import logging
import os
import sys
import warnings

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import click  # noqa: E402
import typer  # noqa: E402
from typer.exceptions import TyperException  # noqa: E402

from ..errors import FreepromptError, first_line  # noqa: E402
from .ablate_cmd import ablate  # noqa: E402
from .bench_cmd import bench_app  # noqa: E402
from .edit_cmd import edit, layers  # noqa: E402
from .eval_cmd import evaluate  # noqa: E402
from .probe_cmd import probe_app  # noqa: E402
from .ui_cmd import ui  # noqa: E402

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Free-Prompt-Editing and attention analysis for Stable Diffusion models.")
app.command()(edit)
app.command()(layers)
app.command()(ablate)
app.command("eval")(evaluate)
app.command()(ui)
app.add_typer(bench_app, name="bench")
app.add_typer(probe_app, name="probe")


def _one_line_warnings(message, category, filename, lineno, file=None, line=None):
    print(f"freeprompt: warning: {message}", file=sys.stderr)


class _OneLineHandler(logging.Handler):
    """A library's log record as one prefixed line on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        text = " ".join(record.getMessage().split())
        print(f"freeprompt: {record.name.split('.')[0]} {record.levelname.lower()}: {text}", file=sys.stderr)


def _prefixed_library_logs() -> None:
    """diffusers' and transformers' own log messages (errors only, unless DIFFUSERS_VERBOSITY /
    TRANSFORMERS_VERBOSITY say otherwise) as one prefixed line each, like freeprompt's."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for name, library in (("diffusers", diffusers_logging), ("transformers", transformers_logging)):
        library.get_verbosity()  # configures the library's root logger and its default handler
        library.disable_default_handler()
        if not any(isinstance(h, _OneLineHandler) for h in logging.getLogger(name).handlers):
            library.add_handler(_OneLineHandler())


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    warnings.showwarning = _one_line_warnings
    _prefixed_library_logs()
    try:
        code = app(args=argv or ["--help"], prog_name="freeprompt", standalone_mode=False)
    except (click.exceptions.Exit, typer.Exit) as exc:
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, typer.Abort):
        print("freeprompt: aborted", file=sys.stderr)
        sys.exit(130)
    except (click.ClickException, TyperException) as exc:  # typer >= 0.20 raises its own copy of click's errors
        print(f"freeprompt: error: {_usage_message(exc)}; see 'freeprompt {_command(argv)}--help'", file=sys.stderr)
        sys.exit(2)
    except FreepromptError as exc:
        if debug:
            raise
        print(f"freeprompt: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("freeprompt: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - a bug: still one line unless --debug
        if debug:
            raise
        if _out_of_memory(exc):
            print("freeprompt: error: out of memory; use a smaller --height/--width, fewer targets or --dtype fp16",
                  file=sys.stderr)
            sys.exit(2)
        print(f"freeprompt: internal error: {type(exc).__name__}: {first_line(exc)} (rerun with --debug for the "
              "traceback)", file=sys.stderr)
        sys.exit(1)
    if isinstance(code, int) and code:  # typer returns 130 for Ctrl-C under standalone_mode=False
        print("freeprompt: interrupted" if code == 130 else f"freeprompt: exit status {code}", file=sys.stderr)
        sys.exit(code)


def _usage_message(exc: Exception) -> str:
    text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def _command(argv: list[str]) -> str:
    """The command words before the first option, for the help hint (``probe train ``)."""
    words = []
    for word in argv:
        if word.startswith("-") or len(words) == 2:
            break
        words.append(word)
    return "".join(w + " " for w in words if w in _COMMAND_WORDS)


_COMMAND_WORDS = {"edit", "layers", "ablate", "eval", "ui", "bench", "shapes", "probe", "collect", "train", "report", "run"}


def _out_of_memory(exc: BaseException) -> bool:
    """Host memory, or an accelerator's: torch raises ``torch.OutOfMemoryError`` (a RuntimeError) for CUDA and a
    RuntimeError naming it for MPS."""
    return (isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
            or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()))


if __name__ == "__main__":
    main()

"""The ``freeprompt`` command: the typer app, its commands (each in its own module, which knows nothing of the
app) and the one place where failures become one-line messages. Every user-facing failure is one line on stderr
with exit status 2; ``--debug`` shows the traceback.

Only typer and the commands' option declarations are imported before the command line is read, so a usage error
costs no torch import; each command imports what it runs, and loads its model through ``loading.load_model``."""

from __future__ import annotations

import os
import sys
import warnings

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import click
import typer
from typer.exceptions import TyperException

from ..errors import FreepromptError, first_line
from .ablate_cmd import ablate
from .bench_cmd import shapes
from .edit_cmd import edit, layers
from .eval_cmd import evaluate
from .method_options import with_method_options
from .methods_cmd import methods
from .probe_cmd import probe_app
from .score_cmd import score
from .ui_cmd import ui


def build_app() -> typer.Typer:
    """The app, with every registered editing method's options (a method registered before this call is in it)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True, rich_markup_mode=None,
                      help="Free-Prompt-Editing and attention analysis for Stable Diffusion models.")
    app.command()(with_method_options(edit))
    app.command()(layers)
    app.command()(methods)
    app.command()(ablate)
    app.command("eval")(with_method_options(evaluate))
    app.command()(score)
    app.command()(ui)
    bench = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Benchmarks that score edits.")
    bench.command("shapes")(with_method_options(shapes, default="fpe,plain"))
    app.add_typer(bench, name="bench")
    app.add_typer(probe_app, name="probe")
    return app


app = build_app()


def _one_line_warnings(message, category, filename, lineno, file=None, line=None):
    print(f"freeprompt: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    warnings.showwarning = _one_line_warnings
    try:
        code = build_app()(args=argv or ["--help"], prog_name="freeprompt", standalone_mode=False)
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


_COMMAND_WORDS = {"edit", "layers", "methods", "ablate", "eval", "ui", "bench", "shapes", "probe", "collect", "train",
                  "report", "run", "score"}


def _out_of_memory(exc: BaseException) -> bool:
    """Host memory, or an accelerator's: torch raises ``torch.OutOfMemoryError`` (a RuntimeError) for CUDA and a
    RuntimeError naming it for MPS."""
    return (isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
            or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()))


if __name__ == "__main__":
    main()

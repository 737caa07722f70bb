"""How a command loads its model: after every check that needs no model, with diffusers' and transformers' own log
messages turned into one prefixed line each, like freeprompt's."""

from __future__ import annotations

import logging
import sys


class OneLineHandler(logging.Handler):
    """A library's log record as one prefixed line on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        text = " ".join(record.getMessage().split())
        print(f"freeprompt: {record.name.split('.')[0]} {record.levelname.lower()}: {text}", file=sys.stderr)


def prefixed_library_logs() -> None:
    """diffusers' and transformers' log messages (errors only, unless DIFFUSERS_VERBOSITY / TRANSFORMERS_VERBOSITY
    say otherwise) as one prefixed line each; calling it again adds nothing."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for name, library in (("diffusers", diffusers_logging), ("transformers", transformers_logging)):
        library.get_verbosity()  # configures the library's root logger and its default handler
        library.disable_default_handler()
        if not any(isinstance(h, OneLineHandler) for h in logging.getLogger(name).handlers):
            library.add_handler(OneLineHandler())


def load_model(model: str, **options):
    """``models.loading.load_pipeline(model, **options)`` with the libraries' logs prefixed."""
    prefixed_library_logs()
    from ..models.loading import load_pipeline

    return load_pipeline(model, **options)

"""The ``freeprompt`` command. ``run`` is its console entry point: ``main.main``, with a Ctrl-C that arrives while
the command is still being imported an exit 130 as well."""

import sys


def run() -> None:
    try:
        from .main import main
    except KeyboardInterrupt:
        print("freeprompt: interrupted", file=sys.stderr)
        sys.exit(130)
    main()

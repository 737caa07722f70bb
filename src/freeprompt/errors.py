"""User-facing errors: one line that names the problem and the fix."""


class FreepromptError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits with status 2."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}" if fix else problem)


class BadInput(FreepromptError, ValueError):
    """An argument or file that cannot be used as given."""


class ModelLoadError(FreepromptError, OSError):
    """A model that cannot be found, read or used."""


def first_line(err: Exception) -> str:
    """The first line of an exception's message (its type name when empty), for one-line user messages."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__

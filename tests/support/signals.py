"""Child processes that a test Ctrl-Cs must start with Ctrl-C's default action: a test run launched in the
background of a shell script (``pytest ... &``, as a CI wrapper may do) has SIGINT ignored, every child inherits
that, and a Python started with SIGINT ignored never turns it into a KeyboardInterrupt, so the test would time
the process out instead of interrupting it."""

import signal


def interruptible() -> None:
    """``preexec_fn`` of a ``subprocess.Popen`` whose process the test interrupts with SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)

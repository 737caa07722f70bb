"""A step hook for tests: call ``callback(i)`` before step ``i`` (tests use it to switch a reference's edit on and
off by step)."""

from collections.abc import Callable

from freeprompt.diffusion import StepHooks


class StepCallback(StepHooks):
    """Hooks that only call ``callback(i)`` before step ``i`` (progress reports, custom bookkeeping)."""

    def __init__(self, callback: Callable[[int], None]):
        self.callback = callback

    def begin_step(self, step: int) -> None:
        self.callback(step)

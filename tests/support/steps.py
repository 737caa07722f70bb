"""Step hooks for tests: call ``callback(i)`` before step ``i`` (tests use it to switch a reference's edit on and
off by step); copy the source's latents to every row after the first steps (the reference of FPE's shared start)."""

from collections.abc import Callable

from freeprompt.diffusion import StepHooks


class StepCallback(StepHooks):
    """Hooks that only call ``callback(i)`` before step ``i`` (progress reports, custom bookkeeping)."""

    def __init__(self, callback: Callable[[int], None]):
        self.callback = callback

    def begin_step(self, step: int) -> None:
        self.callback(step)


class CopySource(StepHooks):
    """The reference shared start: after each step before ``end`` every row's latents are the source's (row 0)."""

    def __init__(self, end: int):
        self.end = end

    def after_step(self, step, latents):
        return latents[:1].expand_as(latents).clone() if step < self.end else latents

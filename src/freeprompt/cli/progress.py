"""The progress bar of a long command: a ``progress(done, total)`` callback (the sweep's) whose tqdm bar opens at
the first report, so a run refused before it starts prints only its one-line error."""

from __future__ import annotations

from collections.abc import Callable


def progress_bar(desc: str, unit: str, quiet: bool = False) -> Callable[[int, int], None] | None:
    """None when ``quiet``; else a callback that moves one bar to ``done`` of ``total`` and closes it at the end."""
    if quiet:
        return None
    bars: list = []

    def progress(done: int, total: int) -> None:
        from tqdm.auto import tqdm

        if not bars:
            bars.append(tqdm(total=total, desc=desc, unit=unit))
        bars[0].update(done - bars[0].n)
        if done >= total:
            bars[0].close()

    return progress

"""Progress bars on a terminal, one line per phase anywhere else.

A bar redraws itself with carriage returns; written into a log file or a pipe
(`deepcompress demo > log 2>&1`) those frames pile up. So `bar` draws a tqdm bar only when
stderr is a terminal; otherwise it prints one line when the phase ends ("fine-tune codebooks:
240 steps in 3.1 s, loss=0.412"), and nothing at all when disabled.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable

from tqdm.auto import tqdm


def bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
):
    """A progress bar over `iterable` (or one updated by hand up to `total`): tqdm's on a
    terminal, else a `Lines` that prints one line when closed (or when `iterable` ends)."""
    if enabled and sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)
    return Lines(iterable, desc, unit, enabled)


class Lines:
    """tqdm's `update`/`set_postfix`/`close` and iteration, without frames: one line on
    stderr at the end (none when not `enabled`)."""

    def __init__(self, iterable: Iterable | None, desc: str, unit: str, enabled: bool):
        self.iterable, self.desc, self.unit, self.enabled = iterable, desc, unit, enabled
        self.n, self.postfix, self.closed, self.t0 = 0, "", False, time.perf_counter()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.n += 1
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.enabled:
            tail = f", {self.postfix}" if self.postfix else ""
            seconds = time.perf_counter() - self.t0
            print(
                f"{self.desc}: {self.n} {self.unit}s in {seconds:.1f} s{tail}",
                file=sys.stderr,
                flush=True,
            )

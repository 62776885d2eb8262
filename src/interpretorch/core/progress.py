"""Rows done out of rows needed, for whoever runs a long method: a context-scoped progress sink.

Every loop that puts rows through a model goes through :func:`interpretorch.core.batching.chunks`, which
advances the sink bound here by the rows of each chunk once its model call is done; a caller (the CLI's bar, a
test's counter) binds one with :func:`track`, and every method, built-in or registered later, reports progress
without code of its own. Only the outermost ``chunks`` loop counts, so a method that calls another method per
chunk of its own rows (SESS over its tiles) counts each row once.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, Iterator

__all__ = ["Progress", "track", "current", "advance"]


@dataclass
class Progress:
    """A count of model rows done, against ``total`` when it is known, told to ``on_advance(done, total)``."""

    total: int | None = None
    on_advance: Callable[[int, int | None], None] | None = None
    done: int = 0
    depth: int = field(default=0, repr=False)

    def advance(self, rows: int) -> None:
        """Add ``rows`` finished rows and tell the listener."""
        self.done += int(rows)
        if self.on_advance is not None:
            self.on_advance(self.done, self.total)

    @property
    def fraction(self) -> float | None:
        """Rows done over rows needed (None when the total is unknown or zero)."""
        return self.done / self.total if self.total else None


_CURRENT: ContextVar[Progress | None] = ContextVar("interpretorch_progress", default=None)


def current() -> Progress | None:
    """The progress sink bound in this context, or None."""
    return _CURRENT.get()


@contextmanager
def track(total: int | None = None, on_advance: Callable[[int, int | None], None] | None = None
          ) -> Iterator[Progress]:
    """Bind a fresh :class:`Progress` for the rows run inside the ``with`` block and yield it."""
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 0):
        raise ValueError(f"total must be a non-negative integer number of rows or None, got {total!r}")
    progress = Progress(total=total, on_advance=on_advance)
    token = _CURRENT.set(progress)
    try:
        yield progress
    finally:
        _CURRENT.reset(token)


def advance(rows: int) -> None:
    """Count ``rows`` finished rows on the bound sink (nothing when none is bound or inside a counted loop)."""
    progress = _CURRENT.get()
    if progress is not None and progress.depth == 0:
        progress.advance(rows)

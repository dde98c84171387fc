"""Taking work off a queue in batches: whatever is queued now, up to a limit."""

from __future__ import annotations

import queue
from typing import TypeVar

T = TypeVar("T")


def take_batch(source: queue.Queue[T | None], limit: int) -> tuple[list[T], bool]:
    """Wait for the first item, then take whatever else is queued now, up to ``limit`` items;
    and whether ``None`` (the stop sign) was taken. The batch may be empty only then."""
    first = source.get()
    if first is None:
        return [], True
    return _more(source, [first], limit)


def take_queued(source: queue.Queue[T | None], limit: int) -> tuple[list[T], bool]:
    """:func:`take_batch` without the wait: an empty batch when nothing is queued."""
    return _more(source, [], limit)


def _more(source: queue.Queue[T | None], batch: list[T], limit: int) -> tuple[list[T], bool]:
    while len(batch) < limit:
        try:
            more = source.get_nowait()
        except queue.Empty:
            break
        if more is None:
            return batch, True
        batch.append(more)
    return batch, False

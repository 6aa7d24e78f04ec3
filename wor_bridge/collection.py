"""Pausing Python's cyclic garbage collector around work that makes many objects and no cycles.

A monitoring report over a fine grid (month x practice: 334,190 cells) makes a few million
tuples, dicts and lists that live until the report is written. Every 700 of them start a
young-generation collection, and as they survive, full collections walk the whole heap again:
0.65-1.0 s of a 3.7-4.5 s report (``docs/benchmarks.md``). None of these objects is part of a
reference cycle (plain tuples, lists and dicts of strings and numbers, dataclasses holding
them), so reference counting frees them all; the collector finds nothing of theirs.

``paused()`` turns the collector off for the duration and back on afterwards, for the whole
process: other threads' cycles made meanwhile are not lost, only collected when the last pause
ends (the collector runs then at its next threshold). Pauses nest and overlap across threads
(a count under a lock): the collector comes back on when the last one ends, and only if it was
on when the first one began (a process that runs with it off keeps it off).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_active = 0
_was_enabled = False


@contextmanager
def paused() -> Iterator[None]:
    """The cyclic garbage collector off inside the block (reference counting still frees
    everything without a cycle)."""
    global _active, _was_enabled  # noqa: PLW0603 - one process-wide state, as gc's own
    with _lock:
        if _active == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _was_enabled:
                gc.enable()

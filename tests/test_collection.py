"""``collection.paused``: the cyclic garbage collector off inside, back as it was after."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from wor_bridge import collection


@pytest.fixture
def collector_on() -> Iterator[None]:
    """The collector on for the test, and as it was afterwards."""
    before = gc.isenabled()
    gc.enable()
    yield
    if not before:
        gc.disable()


@pytest.mark.usefixtures("collector_on")
def test_paused_turns_the_collector_off_and_back_on() -> None:
    """Inside the block the collector is off; after it, on again."""
    with collection.paused():
        assert not gc.isenabled()
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_on")
def test_nested_pauses_end_with_the_outer_one() -> None:
    """An inner pause ending leaves the collector off until the outer one ends."""
    with collection.paused():
        with collection.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_on")
def test_an_error_inside_still_turns_it_back_on() -> None:
    """An exception leaving the block turns the collector back on."""
    with pytest.raises(ValueError, match="boom"), collection.paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    """A process running with the collector off keeps it off after a pause."""
    before = gc.isenabled()
    gc.disable()
    try:
        with collection.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        if before:
            gc.enable()


@pytest.mark.usefixtures("collector_on")
def test_overlapping_pauses_in_threads_end_with_the_last() -> None:
    """Two threads' pauses overlap: the first to end leaves it off, the last turns it on."""
    entered, release = threading.Event(), threading.Event()

    def other() -> None:
        with collection.paused():
            entered.set()
            release.wait(10)

    with collection.paused():
        thread = threading.Thread(target=other)
        thread.start()
        assert entered.wait(10)
    assert not gc.isenabled()  # the other thread's pause is still on
    release.set()
    thread.join(10)
    assert gc.isenabled()

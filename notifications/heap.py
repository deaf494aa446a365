"""``gc.freeze()`` when a process opens its first stream, again as its streams grow, and a sweep now and then.

A server holding thousands of streams grows its heap with every connect, and CPython runs a
full collection each time the objects that survived into the oldest generation grew by a
quarter: every one of them walks the whole heap, Django's modules, classes, URL patterns and
templates included (~0.4 s per pass on the benchmark machine, most of a reconnect storm's
CPU above the floor: docs/benchmarks.md). ``gc.freeze()`` (CPython's own advice for
long-lived servers) moves every object alive to a permanent generation that collections
skip, so a full pass costs only what was allocated since.

* ``freeze_once()``: when the first stream opens (Django is set up by then), the start-up heap.
* ``streams_grew(n)``: again each time the open streams doubled (and grew by at least
  ``REFREEZE_MIN_GROWTH``) since the last freeze: 1,000, 2,000, 4,000, ... A stream's own
  objects hold no reference cycle (tests/test_heap.py), so those that close later are still
  freed at once by reference counting.
* ``sweep(now)``: a frozen object in a reference cycle (the server's, say) that becomes garbage
  is only freed by a collection that sees it, so every ``SWEEP_SECONDS`` the hub's
  maintenance loop unfreezes, collects once in full and freezes again: one pause of a full
  collection per quarter hour bounds what frozen garbage can hold.

All on the event loop. Set ``NOTIFICATIONS_FREEZE_HEAP = False`` in settings to keep the
collector as it is (none of the above then runs).
"""

from __future__ import annotations

import gc
import logging
import time

from .conf import app_settings

logger = logging.getLogger(__name__)

#: The least growth of open streams, since the last freeze, that freezes again (besides doubling).
REFREEZE_MIN_GROWTH = 1000
#: Seconds between two sweeps (unfreeze, one full collection, freeze).
SWEEP_SECONDS = 900.0

_done = False
#: Open streams when the heap was last frozen; None while it never was (or freezing is off).
_frozen_at: int | None = None
_swept_at = 0.0


def freeze_once() -> None:
    global _done, _frozen_at, _swept_at
    if _done:
        return
    _done = True
    if not app_settings.FREEZE_HEAP:
        return
    gc.freeze()
    _frozen_at, _swept_at = 0, time.monotonic()
    logger.info("notifications: %d start-up objects frozen out of garbage collection.", gc.get_freeze_count())


def streams_grew(streams: int) -> None:
    """Called with the number of open streams after one more attached: freeze again past the next step."""
    global _frozen_at
    if _frozen_at is None or streams < max(2 * _frozen_at, _frozen_at + REFREEZE_MIN_GROWTH):
        return
    gc.freeze()
    _frozen_at = streams
    if logger.isEnabledFor(logging.DEBUG):  # counting the frozen objects walks all of them
        logger.debug("notifications: %d objects frozen at %d open streams.", gc.get_freeze_count(), streams)


def sweep(now: float) -> bool:
    """Every ``SWEEP_SECONDS``: unfreeze, collect in full, freeze again. Returns whether it ran."""
    global _swept_at
    if _frozen_at is None or now - _swept_at < SWEEP_SECONDS:
        return False
    _swept_at = now
    gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("notifications: heap swept, %d objects collected, %d frozen.", collected, gc.get_freeze_count())
    return True

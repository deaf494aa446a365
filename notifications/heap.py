"""One ``gc.freeze()`` when a process opens its first stream: Django's start-up heap leaves the collector's sight.

A server holding thousands of streams grows its heap with every connect, and CPython runs a
full collection each time the objects that survived into the oldest generation grew by a
quarter: every one of them walks the whole heap, Django's modules, classes, URL patterns and
templates included (~0.4 s per pass on the benchmark machine, most of a reconnect storm's
CPU above the floor: docs/benchmarks.md). Those start-up objects live as long as the
process; ``gc.freeze()`` (CPython's own advice for long-lived servers) moves them to a
permanent generation that collections skip, so a full pass costs what the streams cost.

Called once per process, on the event loop, when the first stream opens (Django is set up
by then). Objects alive at that moment are never collected afterwards: a bounded, one-time
cost. Set ``NOTIFICATIONS_FREEZE_HEAP = False`` in settings to keep the collector as it is.
"""

from __future__ import annotations

import gc
import logging

from .conf import app_settings

logger = logging.getLogger(__name__)

_done = False


def freeze_once() -> None:
    global _done
    if _done:
        return
    _done = True
    if not app_settings.FREEZE_HEAP:
        return
    gc.freeze()
    logger.info("notifications: %d start-up objects frozen out of garbage collection.", gc.get_freeze_count())

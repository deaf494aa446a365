"""The hub's memory of its most recent events, so a reconnect replays without re-reading rows.

Pure data structure: imports ``events`` (for the type) and nothing that does I/O.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .events import Event
    from .models import Viewer

#: Recent events each hub keeps (frames included) to replay reconnects from memory: a
#: reconnect storm after a deploy then costs one small query per stream, not a read and an
#: encoding of every missed row per stream.
RECENT_EVENTS = 1000
#: ...and at most this many bytes of their frames (long bodies keep fewer events).
RECENT_BYTES = 8 << 20


class Window:
    """The last events handed out, in id order, the latest one per notice: for every notice
    with an event in ``(floor, head]``, its latest event up to ``head`` is here.

    An update or retraction replaces the notice's older event (SPEC §14: a replay sends each
    notice once, in its latest state), so a job updating its notice 20 times a second holds
    one place, not the whole window.
    """

    __slots__ = ("_events", "floor", "head", "_bytes", "max_events", "max_bytes")

    def __init__(self, *, max_events: int = RECENT_EVENTS, max_bytes: int = RECENT_BYTES) -> None:
        #: By notice id, in event id order (a notice's new event moves it to the end).
        self._events: collections.OrderedDict[int, Event] = collections.OrderedDict()
        self.floor = 0
        self.head = 0
        self._bytes = 0
        self.max_events = max_events
        self.max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self._events)

    @property
    def bytes(self) -> int:
        return self._bytes

    def add(self, event: Event) -> None:
        """Remember the event just handed out (ids increase); one without a read frame empties the window."""
        self.head = event.id
        if event.read_frame is None:  # from a process that does not encode it: not replayable from memory
            self.forget(event.id)
            return
        older = self._events.pop(event.notice, None)
        if older is not None:
            self._bytes -= older.size
        self._events[event.notice] = event
        self._bytes += event.size
        while len(self._events) > self.max_events or (self._bytes > self.max_bytes and len(self._events) > 1):
            _, oldest = self._events.popitem(last=False)
            self._bytes -= oldest.size
            self.floor = oldest.id

    def forget(self, head: int) -> None:
        """Hold nothing; memory covers only ids above ``head`` from now on."""
        self._events.clear()
        self._bytes = 0
        self.floor = self.head = head

    def after(self, viewer: Viewer, after: int) -> list[Event] | None:
        """The events after ``after`` that ``viewer`` may see, oldest first; None if memory does
        not reach back that far (the caller then reads the database). A cursor at or beyond
        ``head`` gets ``[]``: nothing was missed that memory could know of."""
        if after < self.floor:
            return None
        missed = []
        for event in reversed(self._events.values()):
            if event.id <= after:
                break
            if viewer.may_see(event.audience, event.target):
                missed.append(event)
        missed.reverse()
        return missed

    def any_for_groups(self, group_ids: frozenset[int], low: int, high: int) -> bool | None:
        """Whether an event for one of ``group_ids`` with an id in ``(low, high]`` was handed out;
        None when memory does not reach back to ``low``."""
        if low < self.floor:
            return None
        return any(
            low < event.id <= high and event.audience == "group" and event.target in group_ids
            for event in self._events.values()
        )

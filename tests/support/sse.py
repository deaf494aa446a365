"""A Server-Sent Events parser that follows the WHATWG processing model, for tests only."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Event:
    type: str
    data: str
    last_event_id: str


@dataclass
class Parser:
    """Feed it bytes in any chunks; it returns dispatched events, as a browser would fire them."""

    last_event_id: str = ""
    retry: int | None = None
    comments: list[str] = field(default_factory=list)
    _buffer: str = ""
    _data: list[str] = field(default_factory=list)
    _type: str = ""
    _id_buffer: str = ""
    _bom_checked: bool = False
    _pending_cr: bool = False
    _decoder_tail: bytes = b""

    def feed(self, chunk: bytes) -> list[Event]:
        raw = self._decoder_tail + chunk
        try:
            text = raw.decode("utf-8")
            self._decoder_tail = b""
        except UnicodeDecodeError as exc:
            if exc.start < len(raw) - 3:
                raise
            text = raw[: exc.start].decode("utf-8")
            self._decoder_tail = raw[exc.start :]
        if not self._bom_checked and text:
            self._bom_checked = True
            if text.startswith("\ufeff"):
                text = text[1:]
        events: list[Event] = []
        for ch in text:
            if self._pending_cr:
                self._pending_cr = False
                if ch == "\n":
                    continue
            if ch in "\r\n":
                self._pending_cr = ch == "\r"
                line, self._buffer = self._buffer, ""
                event = self._line(line)
                if event is not None:
                    events.append(event)
            else:
                self._buffer += ch
        return events

    def _line(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments.append(line[1:].removeprefix(" "))
            return None
        name, sep, value = line.partition(":")
        if sep:
            value = value.removeprefix(" ")
        if name == "event":
            self._type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\x00" not in value:
            self._id_buffer = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        self.last_event_id = self._id_buffer
        if not self._data:
            self._type = ""
            return None
        event = Event(type=self._type or "message", data="\n".join(self._data), last_event_id=self.last_event_id)
        self._data = []
        self._type = ""
        return event

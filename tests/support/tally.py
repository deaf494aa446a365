"""The soak's reader record and its tally (lost, duplicated, out of order, leaked), shared by soak/ and tests."""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field

AUDIENCES = ("everyone", "group", "user")


@dataclass
class Reader:
    name: str
    username: str | None
    cookie: str | None
    first_cursor: int | None = None
    cursor: str = ""
    received: list[int] = field(default_factory=list)
    connections: int = 0
    mid_replay_drops: int = 0
    server_closes: int = 0
    aborts: int = 0
    too_many: int = 0
    resets: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    expected: set[int] | None = None

    def satisfied(self) -> bool:
        return self.expected is not None and self.expected.issubset(self.received)


def tally(readers: list[Reader], audience: dict[int, str], visible: dict[str | None, set[int]],
          created: dict[str, int]) -> dict[str, dict[str, int]]:
    table = {a: collections.Counter[str]() for a in (*AUDIENCES, "total")}
    for name, count in created.items():
        table[name]["created"] += count
    for reader in readers:
        assert reader.first_cursor is not None and reader.expected is not None
        seen: set[int] = set()
        highest = 0
        for id in reader.received:
            kind = audience.get(id, "everyone")
            row = table[kind]
            row["delivered"] += 1
            if id in seen:
                row["duplicated"] += 1
            elif id < highest:
                row["out_of_order"] += 1
            if id not in visible[reader.username]:
                row["leaked"] += 1
            seen.add(id)
            highest = max(highest, id)
        for id in reader.expected:
            table[audience[id]]["expected"] += 1
            if id not in seen:
                table[audience[id]]["lost"] += 1
    for kind in AUDIENCES:
        table["total"].update(table[kind])
    return {k: dict(v) for k, v in table.items()}

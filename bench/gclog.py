"""Full garbage collections of a server under benchmark, as lines in a file (``BENCH_GC_LOG``).

Installed by ``bench.settings`` (the product) and ``bench.raw_app`` (the floors) when the
driver sets ``BENCH_GC_LOG`` to a path: one line per full (generation 2) collection,
``<CLOCK_MONOTONIC start> <seconds> <objects collected>``, written as it ends, so that
``bench.run`` can count the collections and their pauses inside a broadcast window.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

_state: dict[str, Any] = {}


def _callback(phase: str, info: dict[str, Any]) -> None:
    if info.get("generation") != 2:
        return
    if phase == "start":
        _state["start"] = time.monotonic()
        return
    start = _state.pop("start", None)
    if start is None:
        return
    out = _state["file"]
    out.write(f"{start:.6f} {time.monotonic() - start:.6f} {info.get('collected', 0)}\n")
    out.flush()


def install_from_env() -> None:
    path = os.environ.get("BENCH_GC_LOG")
    if not path or "file" in _state:
        return
    _state["file"] = open(path, "a")  # noqa: SIM115 (open for the life of the process)
    gc.callbacks.append(_callback)


def read(path: str | os.PathLike[str], start: float, end: float) -> dict[str, float]:
    """Full collections that began in ``[start, end]``: count, total and longest pause (seconds)."""
    pauses = []
    try:
        with open(path) as f:
            for line in f:
                t, seconds, _ = line.split()
                if start <= float(t) <= end:
                    pauses.append(float(seconds))
    except FileNotFoundError:
        return {"full_gcs": 0, "full_gc_s": 0.0, "full_gc_max_s": 0.0}
    return {"full_gcs": len(pauses), "full_gc_s": sum(pauses), "full_gc_max_s": max(pauses, default=0.0)}

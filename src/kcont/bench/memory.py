"""The ``memory`` benchmark: bytes per pending continuation (tracemalloc),
against a bare wheel timer, asyncio's ``TimerHandle``, ``sched`` and Twisted.

Locking: none; everything runs in the measuring thread.
"""

from __future__ import annotations

import asyncio
import gc
import random
import sched
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import kcont

from .competitors import (
    SKIP_TWISTED,
    SKIP_UVLOOP,
    HashedWheel,
    WheelTimer,
    _event_loop,
    _loop_factories,
    _twisted_reactor,
    _uvloop,
)
from .harness import Config, Group
from .timers import D_TICKS, SEC_PER_TICK, _never


def _traced_bytes(prepare: Callable[[], Any], fill: Callable[[Any, list[Any]], None], n: int) -> float:
    """Bytes per object: tracemalloc delta of ``fill(state, keep)`` creating
    ``n`` objects into a pre-sized list (so the list itself is not counted)."""
    state = prepare()
    keep: list[Any] = [None] * n
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fill(state, keep)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del keep, state
    gc.collect()
    return (after - before) / n


def bench_memory(cfg: Config) -> Group:
    size = cfg.mem_size
    g = Group(
        "memory",
        f"Memory per pending timer (tracemalloc, {size:,} pending)",
        {"n": size},
        kind="bytes",
        notes=[
            "everything the pending object keeps alive, including its share of the heap / bucket; the "
            "driver's list is excluded; arg=None everywhere.",
        ],
    )
    with cfg.turn():
        _measure_memory(cfg, g)
    return g


def _measure_memory(cfg: Config, g: Group) -> None:
    size = cfg.mem_size
    rng = random.Random(cfg.seed)
    ticks = [rng.randrange(D_TICKS, 3 * D_TICKS) for _ in range(size)]
    secs = [t * SEC_PER_TICK for t in ticks]
    measured: list[tuple[str, str, str, float, str]] = []

    def fill_wheel(wheel: HashedWheel, keep: list[Any]) -> None:
        for i, d in enumerate(ticks):
            t = keep[i] = WheelTimer(_never, None)
            wheel.schedule(t, d)

    measured.append(
        ("wheel timer (floor)", "wheel", "floor", _traced_bytes(HashedWheel, fill_wheel, size), "")
    )

    def kprep() -> Any:
        rt = kcont.SimRuntime(ncpu=1, hz=1000)
        # Bind the predefined queue outside the trace.
        return rt, rt.predefined("wq_softclock")

    def fill_kcont_armed(state: Any, keep: list[Any]) -> None:
        _rt, wq = state
        new = kcont.Continuation
        for i, d in enumerate(ticks):
            kc = keep[i] = new(wq, _never, None)
            kc.schedule(d)

    def fill_kcont_idle(state: Any, keep: list[Any]) -> None:
        _rt, wq = state
        new = kcont.Continuation
        for i in range(size):
            keep[i] = new(wq, _never, None)

    measured.append(
        (
            "kcont pending continuation",
            "kcont",
            "kcont",
            _traced_bytes(kprep, fill_kcont_armed, size),
            "Continuation + its wheel slot",
        )
    )
    measured.append(
        (
            "kcont idle continuation",
            "kcont",
            "reference",
            _traced_bytes(kprep, fill_kcont_idle, size),
            "created, never scheduled",
        )
    )
    for label, factory in _loop_factories():

        def fill_loop(loop: asyncio.AbstractEventLoop, keep: list[Any]) -> None:
            call_later = loop.call_later
            for i, d in enumerate(secs):
                keep[i] = call_later(d, _never)

        with _event_loop(factory) as loop:
            b = _traced_bytes(lambda: loop, fill_loop, size)
        measured.append(
            (
                f"{label} TimerHandle (call_later)",
                label,
                "competitor" if label == "asyncio" else "reference",
                b,
                "incl. its heap slot" if label == "asyncio" else "",
            )
        )

    def sched_prep() -> Any:
        return sched.scheduler(time.monotonic, time.sleep)

    def fill_sched(s: sched.scheduler, keep: list[Any]) -> None:
        for i, d in enumerate(secs):
            keep[i] = s.enter(d, 0, _never)

    measured.append(
        ("sched Event (enter)", "sched", "reference", _traced_bytes(sched_prep, fill_sched, size), "")
    )
    reactor = _twisted_reactor()
    if reactor is not None:

        def fill_twisted(r: Any, keep: list[Any]) -> None:
            for i, d in enumerate(secs):
                keep[i] = r.callLater(d, _never)
            r.runUntilCurrent()

        measured.append(
            (
                "Twisted DelayedCall (callLater)",
                "twisted",
                "reference",
                _traced_bytes(lambda: reactor, fill_twisted, size),
                "",
            )
        )
    else:
        g.skipped.append(f"Twisted DelayedCall: {SKIP_TWISTED}")
    if _uvloop() is None:
        g.skipped.append(f"uvloop TimerHandle: {SKIP_UVLOOP}")
    floor = measured[0][3]
    comp = next((m[3] for m in measured if m[0].startswith("asyncio")), None)
    for name, impl, role, b, note in measured:
        g.rows.append(
            {
                "case": name,
                "impl": impl,
                "role": role,
                "bytes_per_object": round(b, 1),
                "floor": measured[0][0],
                "x_floor": b / floor if floor else None,
                "versus": "asyncio TimerHandle (call_later)",
                "x_versus": b / comp if comp else None,
                "note": note,
            }
        )

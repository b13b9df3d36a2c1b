"""The ``create`` benchmark: the cost of creating (and arming) a continuation,
against a bare wheel timer, asyncio's ``TimerHandle``, ``sched`` and Twisted.

Locking: none; everything runs in the measuring thread.
"""

from __future__ import annotations

import asyncio
import random
import sched
import time
from collections.abc import Callable
from contextlib import ExitStack
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
from .harness import Case, Config, Group, run_cases, summarize
from .timers import D_TICKS, SEC_PER_TICK, _never

perf = time.perf_counter


# -- create and memory ------------------------------------------------------------------


def bench_create(cfg: Config, stack: ExitStack) -> Group:
    size = cfg.create_size
    g = Group(
        "create",
        f"Create: one object (and arm it), {size:,} created per round and kept alive",
        {"n": size, "rounds": cfg.rounds},
        notes=["every case appends the new object to a list (kept alive, as a user would)."],
    )
    rng = random.Random(cfg.seed)
    ticks = [rng.randrange(D_TICKS, 3 * D_TICKS) for _ in range(size)]
    secs = [t * SEC_PER_TICK for t in ticks]

    def wheel_new(k: int) -> tuple[float, int]:
        wheel = HashedWheel()
        keep: list[WheelTimer] = []
        append, sch = keep.append, wheel.schedule
        t0 = perf()
        for d in ticks[:k]:
            t = WheelTimer(_never, None)
            sch(t, d)
            append(t)
        return perf() - t0, k

    def kcont_create(k: int) -> tuple[float, int]:
        rt = kcont.SimRuntime(ncpu=1, hz=1000)
        keep: list[Any] = []
        append, new, wq = keep.append, kcont.Continuation, kcont.wq_softclock
        with rt:
            t0 = perf()
            for _ in range(k):
                append(new(wq, _never, None))
            t = perf() - t0
        return t, k

    def kcont_create_arm(k: int) -> tuple[float, int]:
        rt = kcont.SimRuntime(ncpu=1, hz=1000)
        keep: list[Any] = []
        append, new, wq = keep.append, kcont.Continuation, kcont.wq_softclock
        with rt:
            t0 = perf()
            for d in ticks[:k]:
                kc = new(wq, _never, None)
                kc.schedule(d)
                append(kc)
            t = perf() - t0
        return t, k

    cases = [
        Case("wheel timer + arm (floor)", "wheel", "floor", wheel_new, size),
        Case(
            "kcont Continuation()",
            "kcont",
            "kcont",
            kcont_create,
            size,
            floor="wheel timer + arm (floor)",
            versus="asyncio call_later",
        ),
        Case(
            "kcont Continuation() + schedule(nticks)",
            "kcont",
            "kcont",
            kcont_create_arm,
            size,
            floor="wheel timer + arm (floor)",
            versus="asyncio call_later",
        ),
    ]
    for label, factory in _loop_factories():

        def loop_new(k: int, factory: Callable[[], asyncio.AbstractEventLoop] = factory) -> tuple[float, int]:
            with _event_loop(factory) as loop:
                keep: list[Any] = []
                append, call_later = keep.append, loop.call_later
                t0 = perf()
                for d in secs[:k]:
                    append(call_later(d, _never))
                t = perf() - t0
                for h in keep:
                    h.cancel()
            return t, k

        cases.append(
            Case(
                f"{label} call_later",
                label,
                "competitor" if label == "asyncio" else "reference",
                loop_new,
                size,
                floor="wheel timer + arm (floor)",
                versus="asyncio call_later",
            )
        )
    if _uvloop() is None:
        g.skipped.append(f"uvloop call_later: {SKIP_UVLOOP}")

    def sched_new(k: int) -> tuple[float, int]:
        s = sched.scheduler(time.monotonic, time.sleep)
        keep: list[Any] = []
        append, enter = keep.append, s.enter
        t0 = perf()
        for d in secs[:k]:
            append(enter(d, 0, _never))
        return perf() - t0, k

    cases.append(
        Case(
            "sched enter",
            "sched",
            "reference",
            sched_new,
            size,
            floor="wheel timer + arm (floor)",
            versus="asyncio call_later",
        )
    )
    reactor = _twisted_reactor()
    if reactor is not None:

        def twisted_new(k: int) -> tuple[float, int]:
            keep: list[Any] = []
            append, call_later = keep.append, reactor.callLater
            t0 = perf()
            for d in secs[:k]:
                append(call_later(d, _never))
            reactor.runUntilCurrent()
            t = perf() - t0
            for c in keep:
                c.cancel()
            reactor.runUntilCurrent()
            return t, k

        cases.append(
            Case(
                "Twisted callLater",
                "twisted",
                "reference",
                twisted_new,
                size,
                floor="wheel timer + arm (floor)",
                versus="asyncio call_later",
                note="+ one runUntilCurrent (heap insert)",
            )
        )
    else:
        g.skipped.append(f"Twisted callLater: {SKIP_TWISTED}")
    samples = run_cases(cases, cfg.rounds, stop=cfg.stop, turn=cfg.turn)
    g.rows = summarize(cases, samples)
    return g

"""The ``timers`` benchmark: re-arming a pending continuation and stop +
re-schedule with P continuations pending, against the bare hashed wheel,
asyncio ``call_later`` + ``cancel``, ``sched`` and Twisted
``DelayedCall.reset``.  Owns the timer constants (deadlines in ticks, chunk
sizes) and ``_never``, the callback that must not run (counted in the module
global ``_fired``, checked after the run).

Locking: none; everything runs in the measuring thread.
"""

from __future__ import annotations

import asyncio
import gc
import random
import sched
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
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
from .harness import Case, Config, Group, Measure, run_cases, summarize

perf = time.perf_counter


# Timers: deadlines in ticks for kcont and the bare wheel (virtual time: a
# tick passes every CHUNK operations), in seconds for the implementations on a
# real clock.  Pending timers are armed in [D, 3D); "later" re-arms to now +
# 3D (always later than the current deadline, like a TCP RTO re-armed while
# time advances), "random" re-arms to [D, 3D) (about half move earlier).  D is
# far enough that nothing fires during a run (checked).
D_TICKS = 10_000
LATER_TICKS = 3 * D_TICKS
SEC_PER_TICK = 0.36  # D = 1 hour on the real clocks
CHUNK = 1000  # operations between two ticks of the implementation
SLOW_CHUNK = 10  # for the O(n)-per-operation cells (sched, Twisted earlier reset)
# Above this many timers pending, a full collection costs most of a second:
# collect once per round instead of before each measurement.
FULL_GC_MAX_PENDING = 200_000
# uvloop is the slowest to set up with a million timers (585 B and ~10 us
# each), and kcont is not compared with it on timers: measured up to here.
UVLOOP_TIMERS_MAX = 100_000


_fired = 0


def _never(*args: Any) -> None:
    """A timer callback that must not run during a timer benchmark."""
    global _fired
    _fired += 1


# -- timers --------------------------------------------------------------------------


@dataclass
class _TimerWork:
    """The operations of one timer cell, shared by every implementation so
    they all act on the same random timers with the same random deadlines."""

    pending: int
    idx: list[int]  # which pending timer each operation acts on
    dticks: list[int]  # random re-arm delays, ticks in [D, 3D)
    dsecs: list[float]  # the same delays in seconds
    init_ticks: list[int]  # initial delays of the pending timers


def _timer_work(pending: int, nops: int, seed: int) -> _TimerWork:
    rng = random.Random(seed * 1_000_003 + pending)
    idx = [rng.randrange(pending) for _ in range(nops)]
    dticks = [rng.randrange(D_TICKS, 3 * D_TICKS) for _ in range(nops)]
    init = [rng.randrange(D_TICKS, 3 * D_TICKS) for _ in range(pending)]
    return _TimerWork(pending, idx, dticks, [d * SEC_PER_TICK for d in dticks], init)


def _chunked(
    body: Callable[[int, int], None], tick: Callable[[], None], n: int, chunk: int, budget: float | None
) -> tuple[float, int]:
    """Run ``body(start, stop)`` over ``n`` operations in chunks, with one
    ``tick()`` per chunk; stop early once ``budget`` seconds have passed."""
    i = 0
    t0 = perf()
    while i < n:
        j = min(n, i + chunk)
        body(i, j)
        tick()
        i = j
        if budget is not None and perf() - t0 > budget:
            break
    return perf() - t0, i


def _timer_cases_floor(w: _TimerWork) -> list[Case]:
    wheel = HashedWheel()
    timers = [WheelTimer(_never, None) for _ in range(w.pending)]
    for t, d in zip(timers, w.init_ticks, strict=False):
        wheel.schedule(t, d)
    idx, dticks = w.idx, w.dticks

    def rearm_later(s: int, e: int) -> None:
        sch, deadline = wheel.schedule, wheel.now + LATER_TICKS
        for j in idx[s:e]:
            sch(timers[j], deadline)

    def rearm_rand(s: int, e: int) -> None:
        sch, now = wheel.schedule, wheel.now
        for j, d in zip(idx[s:e], dticks[s:e], strict=False):
            sch(timers[j], now + d)

    def stop_sched(s: int, e: int) -> None:
        sch, cancel, deadline = wheel.schedule, wheel.cancel, wheel.now + LATER_TICKS
        for j in idx[s:e]:
            t = timers[j]
            cancel(t)
            sch(t, deadline)

    def cancel_new(s: int, e: int) -> None:
        sch, cancel, deadline = wheel.schedule, wheel.cancel, wheel.now + LATER_TICKS
        for j in idx[s:e]:
            cancel(timers[j])
            t = timers[j] = WheelTimer(_never, None)
            sch(t, deadline)

    def harness(s: int, e: int) -> None:
        for j in idx[s:e]:
            timers[j]

    def nothing() -> None:
        pass

    def mk(body: Callable[[int, int], None], tick: Callable[[], None]) -> Measure:
        return lambda n: _chunked(body, tick, n, CHUNK, None)

    n = len(idx)
    return [
        Case("harness (driver loop only)", "harness", "reference", mk(harness, nothing), n, op="harness"),
        Case("wheel rearm later (floor)", "wheel", "floor", mk(rearm_later, wheel.tick), n, op="rearm_later"),
        Case("wheel rearm random (floor)", "wheel", "floor", mk(rearm_rand, wheel.tick), n, op="rearm_rand"),
        Case(
            "wheel cancel + re-arm (floor)", "wheel", "floor", mk(stop_sched, wheel.tick), n, op="stop_sched"
        ),
        Case("wheel cancel + new (floor)", "wheel", "floor", mk(cancel_new, wheel.tick), n, op="cancel_new"),
    ]


def _timer_cases_kcont(w: _TimerWork) -> list[Case]:
    rt = kcont.SimRuntime(ncpu=1, hz=1000)
    with rt:
        kcs = [kcont.Continuation(kcont.wq_softclock, _never, None) for _ in range(w.pending)]
    for kc, d in zip(kcs, w.init_ticks, strict=False):
        kc.schedule(d)
    idx, dticks = w.idx, w.dticks

    def rearm_later(s: int, e: int) -> None:
        for j in idx[s:e]:
            kcs[j].schedule(LATER_TICKS)

    def rearm_rand(s: int, e: int) -> None:
        for j, d in zip(idx[s:e], dticks[s:e], strict=False):
            kcs[j].schedule(d)

    def stop_sched(s: int, e: int) -> None:
        for j in idx[s:e]:
            kc = kcs[j]
            kc.stop()
            kc.schedule(LATER_TICKS)

    def tick() -> None:
        rt.advance(1)

    def mk(body: Callable[[int, int], None]) -> Measure:
        return lambda n: _chunked(body, tick, n, CHUNK, None)

    n = len(idx)
    comp = "asyncio call_later + cancel"
    return [
        Case(
            "kcont rearm later",
            "kcont",
            "kcont",
            mk(rearm_later),
            n,
            floor="wheel rearm later (floor)",
            versus=comp,
            op="rearm_later",
        ),
        Case(
            "kcont rearm random",
            "kcont",
            "kcont",
            mk(rearm_rand),
            n,
            floor="wheel rearm random (floor)",
            versus=comp,
            op="rearm_rand",
        ),
        Case(
            "kcont stop + schedule",
            "kcont",
            "kcont",
            mk(stop_sched),
            n,
            floor="wheel cancel + re-arm (floor)",
            versus=comp,
            op="stop_sched",
        ),
    ]


def _timer_cases_loop(label: str, loop: asyncio.AbstractEventLoop, w: _TimerWork, g: Group) -> list[Case]:
    delay0 = [d * SEC_PER_TICK for d in w.init_ticks]
    handles = [loop.call_later(d, _never) for d in delay0]
    del delay0
    idx = w.idx
    later = LATER_TICKS * SEC_PER_TICK
    peak = [0]
    scheduled = getattr(loop, "_scheduled", None)  # asyncio's heap (uvloop has none)

    async def churn(n: int) -> tuple[float, int]:
        call_later = loop.call_later
        i = 0
        t0 = perf()
        while i < n:
            j = min(n, i + CHUNK)
            for x in idx[i:j]:
                handles[x].cancel()
                handles[x] = call_later(later, _never)
            i = j
            await asyncio.sleep(0)
            if scheduled is not None and len(scheduled) > peak[0]:
                peak[0] = len(scheduled)
        return perf() - t0, i

    def measure(n: int) -> tuple[float, int]:
        return loop.run_until_complete(churn(n))

    def report() -> None:
        if scheduled is not None:
            g.params[f"{label}_peak_heap_per_pending"] = round(peak[0] / w.pending, 2)

    g.finalizers.append(report)
    return [
        Case(
            f"{label} call_later + cancel",
            label,
            "competitor" if label == "asyncio" else "reference",
            measure,
            len(idx),
            floor="wheel cancel + new (floor)",
            versus="asyncio call_later + cancel",
            op="cancel_new",
            note="= re-arm (no re-arm API); in a running loop",
        )
    ]


def _timer_cases_sched(w: _TimerWork, budget: float) -> list[Case]:
    s = sched.scheduler(time.monotonic, time.sleep)
    events = [s.enter(d * SEC_PER_TICK, 0, _never) for d in w.init_ticks]
    idx = w.idx
    later = LATER_TICKS * SEC_PER_TICK

    def cancel_new(a: int, b: int) -> None:
        enter, cancel = s.enter, s.cancel
        for j in idx[a:b]:
            cancel(events[j])
            events[j] = enter(later, 0, _never)

    def tick() -> None:
        s.run(blocking=False)

    return [
        Case(
            "sched enter + cancel",
            "sched",
            "reference",
            lambda n: _chunked(cancel_new, tick, n, SLOW_CHUNK, budget),
            len(idx),
            floor="wheel cancel + new (floor)",
            versus="asyncio call_later + cancel",
            op="cancel_new",
            note="O(n) cancel; stops at its time budget",
        )
    ]


def _timer_cases_twisted(reactor: Any, w: _TimerWork, budget: float) -> list[Case]:
    calls = [reactor.callLater(d * SEC_PER_TICK, _never) for d in w.init_ticks]
    reactor.runUntilCurrent()
    idx, dsecs = w.idx, w.dsecs
    later = LATER_TICKS * SEC_PER_TICK

    def rearm_later(a: int, b: int) -> None:
        for j in idx[a:b]:
            calls[j].reset(later)

    def rearm_rand(a: int, b: int) -> None:
        for j, d in zip(idx[a:b], dsecs[a:b], strict=False):
            calls[j].reset(d)

    tick = reactor.runUntilCurrent
    return [
        Case(
            "Twisted reset later",
            "twisted",
            "reference",
            lambda n: _chunked(rearm_later, tick, n, CHUNK, None),
            len(idx),
            floor="wheel rearm later (floor)",
            versus="asyncio call_later + cancel",
            op="rearm_later",
        ),
        Case(
            "Twisted reset random",
            "twisted",
            "reference",
            lambda n: _chunked(rearm_rand, tick, n, SLOW_CHUNK, budget),
            len(idx),
            floor="wheel rearm random (floor)",
            versus="asyncio call_later + cancel",
            op="rearm_rand",
            note="an earlier deadline is O(n); stops at its time budget",
        ),
    ]


def bench_timers(cfg: Config, size: int) -> Group:
    global _fired
    nops = cfg.timer_ops
    g = Group(
        "timers",
        f"Timers: re-arm with {size:,} pending",
        {"pending": size, "ops": nops, "chunk": CHUNK, "rounds": cfg.rounds},
    )
    # (quick mode only checks that everything runs: it spares the full collections)
    full_gc = size <= FULL_GC_MAX_PENDING and not cfg.quick
    rounds = cfg.rounds if size < 1_000_000 or cfg.quick else max(2, min(cfg.rounds, 3))
    g.params["rounds"] = rounds
    g.notes.append(
        f"P = {size:,} pending (deadlines in [D, 3D), D = {D_TICKS} ticks); each op acts on a random "
        f"pending timer; one tick of the implementation every {CHUNK} ops (SLOW cells: every {SLOW_CHUNK}). "
        "Figures include the driver loop (harness row). later = now + 3D; random = [D, 3D)."
    )
    if not full_gc:
        g.notes.append(
            "full gc.collect() once per round, gc.collect(1) before each measurement (P > 200k or quick)."
        )
    _fired = 0
    work = _timer_work(size, nops, cfg.seed)
    with ExitStack() as stack:
        cases = _timer_cases_floor(work) + _timer_cases_kcont(work)
        for label, factory in _loop_factories():
            if label == "uvloop" and size > UVLOOP_TIMERS_MAX:
                g.skipped.append(
                    f"uvloop call_later + cancel: skipped above {UVLOOP_TIMERS_MAX:,} pending "
                    "(the slowest to set up; not part of the comparisons)"
                )
                continue
            loop = stack.enter_context(_event_loop(factory))
            cases += _timer_cases_loop(label, loop, work, g)
        if _uvloop() is None:
            g.skipped.append(f"uvloop call_later + cancel: {SKIP_UVLOOP}")
        if size <= cfg.sched_max:
            cases += _timer_cases_sched(work, cfg.slow_budget)
        else:
            g.skipped.append(f"sched: skipped above {cfg.sched_max:,} pending (O(n) cancel; --sched-max)")
        reactor = _twisted_reactor()
        if reactor is not None:
            cases += _timer_cases_twisted(reactor, work, cfg.slow_budget)
        else:
            g.skipped.append(f"Twisted DelayedCall.reset: {SKIP_TWISTED}")
        work.init_ticks = []
        samples = run_cases(cases, rounds, full_gc=full_gc, stop=cfg.stop, turn=cfg.turn)
        for fin in g.finalizers:
            fin()
        g.rows = summarize(cases, samples)
        del cases
    if _fired:
        g.notes.append(f"WARNING: {_fired} timers fired during the run; the figures are not churn only")
    gc.collect()
    return g

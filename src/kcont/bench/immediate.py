"""The ``immediate`` benchmark: schedule + dispatch of a reused continuation
from one thread, at depth 1 and as a batch, against the ``deque`` floors and
asyncio (uvloop) ``call_soon``.

The callbacks count their calls in the module global ``_hits`` (the cheapest
counter for a callback: the count is checked after every measurement); it is
written from the measuring thread, or from the one kcont worker that runs the
measured continuations while the measuring thread waits.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import kcont
from kcont.capi import kcont_schedule

from .competitors import (
    SKIP_THREADED,
    SKIP_UVLOOP,
    _event_loop,
    _loop_factories,
    _threaded_runtime_available,
    _uvloop,
)
from .harness import Case, Config, Group, run_cases, summarize

perf = time.perf_counter


_hits = 0


def _cb(i: Any) -> None:
    global _hits
    _hits += 1


def _kcb(arg: Any, kc: Any) -> None:
    global _hits
    _hits += 1


def _check_hits(expected: int, what: str) -> None:
    global _hits
    if _hits != expected:
        raise RuntimeError(f"{what}: {_hits} callbacks ran, expected {expected}")
    _hits = 0


# -- immediate ------------------------------------------------------------------------


def bench_immediate(cfg: Config, stack: ExitStack) -> Group:
    n = cfg.n_immediate
    g = Group(
        "immediate",
        "Immediate: schedule + dispatch, same thread",
        {"n": n, "rounds": cfg.rounds},
        notes=[
            "depth 1: schedule one, run it, repeat (a reused continuation; the asyncio/uvloop callback "
            "call_soon()s the next); batch: schedule n, then run them all (a backlog of n).",
            "kcont threaded (judged): a function schedules the next, as the asyncio callback does; "
            "'kcont_schedule' is the C-style call (returns an errno).",
            "kcont sim: SimRuntime(ncpu=1) driven from outside, kc.schedule() + rt.step() / "
            "rt.run_until_idle() per item: it also pays for each step() call.",
        ],
    )
    cases: list[Case] = []

    def direct(k: int) -> tuple[float, int]:
        t0 = perf()
        for i in range(k):
            _cb(i)
        t = perf() - t0
        _check_hits(k, "direct")
        return t, k

    def deque_depth1(k: int) -> tuple[float, int]:
        q: deque[tuple[Callable[[int], None], int]] = deque()
        append, pop = q.append, q.popleft
        t0 = perf()
        for i in range(k):
            append((_cb, i))
            f, a = pop()
            f(a)
        t = perf() - t0
        _check_hits(k, "deque depth 1")
        return t, k

    def deque_batch(k: int) -> tuple[float, int]:
        q: deque[tuple[Callable[[int], None], int]] = deque()
        append, pop = q.append, q.popleft
        t0 = perf()
        for i in range(k):
            append((_cb, i))
        while q:
            f, a = pop()
            f(a)
        t = perf() - t0
        _check_hits(k, "deque batch")
        return t, k

    cases += [
        Case("direct call (reference)", "python", "reference", direct, n, floor="deque depth 1 (floor)"),
        Case("deque depth 1 (floor)", "floor", "floor", deque_depth1, n),
        Case("deque batch (floor)", "floor", "floor", deque_batch, n),
    ]

    # kcont, simulated runtime
    rt = kcont.SimRuntime(ncpu=1, hz=1000)
    with rt:
        kc1 = kcont.Continuation(kcont.wq_softnet, _kcb, 0)
        pool = [kcont.Continuation(kcont.wq_softnet, _kcb, i) for i in range(n)]

    def sim_depth1(k: int) -> tuple[float, int]:
        schedule, step = kc1.schedule, rt.step
        t0 = perf()
        for _ in range(k):
            schedule()
            step()
        t = perf() - t0
        _check_hits(k, "kcont sim depth 1")
        return t, k

    def sim_depth1_capi(k: int) -> tuple[float, int]:
        step = rt.step
        t0 = perf()
        for _ in range(k):
            kcont_schedule(kc1, None, 0)
            step()
        t = perf() - t0
        _check_hits(k, "kcont sim depth 1 (kcont_schedule)")
        return t, k

    def sim_batch(k: int) -> tuple[float, int]:
        part = pool[:k]
        t0 = perf()
        for kc in part:
            kc.schedule()
        rt.run_until_idle(max_steps=k + 10)
        t = perf() - t0
        _check_hits(k, "kcont sim batch")
        return t, k

    cases += [
        Case(
            "kcont sim depth 1",
            "kcont",
            "kcont",
            sim_depth1,
            n,
            floor="deque depth 1 (floor)",
            versus="asyncio call_soon depth 1",
            also=("uvloop call_soon depth 1",),
        ),
        Case(
            "kcont sim depth 1 (kcont_schedule)",
            "kcont",
            "variant",
            sim_depth1_capi,
            n,
            floor="deque depth 1 (floor)",
            versus="asyncio call_soon depth 1",
            also=("kcont sim depth 1",),
        ),
        Case(
            "kcont sim batch",
            "kcont",
            "kcont",
            sim_batch,
            n,
            floor="deque batch (floor)",
            versus="asyncio call_soon batch",
            also=("uvloop call_soon batch",),
        ),
    ]

    # asyncio and uvloop
    for label, factory in _loop_factories():
        loop = stack.enter_context(_event_loop(factory))
        cases += _loop_immediate_cases(label, loop, n)
    if _uvloop() is None:
        g.skipped.append(f"uvloop call_soon: {SKIP_UVLOOP}")

    # kcont, threaded runtime, from the same thread (a worker)
    if _threaded_runtime_available():
        cases += _threaded_immediate_cases(n, stack)
    else:
        g.skipped.append(f"kcont threaded depth 1 / batch: {SKIP_THREADED}")

    samples = run_cases(cases, cfg.rounds, stop=cfg.stop, turn=cfg.turn)
    g.rows = summarize(cases, samples)
    return g


def _loop_immediate_cases(label: str, loop: asyncio.AbstractEventLoop, n: int) -> list[Case]:
    def batch(k: int) -> tuple[float, int]:
        cs = loop.call_soon
        t0 = perf()
        for i in range(k):
            cs(_cb, i)
        cs(loop.stop)
        loop.run_forever()
        t = perf() - t0
        _check_hits(k, f"{label} call_soon batch")
        return t, k

    def depth1(k: int) -> tuple[float, int]:
        cs = loop.call_soon

        def chain(i: int) -> None:
            global _hits
            _hits += 1
            if i < k:
                cs(chain, i + 1)
            else:
                loop.stop()

        t0 = perf()
        cs(chain, 1)
        loop.run_forever()
        t = perf() - t0
        _check_hits(k, f"{label} call_soon depth 1")
        return t, k

    role = "competitor" if label == "asyncio" else "reference"
    return [
        Case(
            f"{label} call_soon depth 1",
            label,
            role,
            depth1,
            n,
            floor="deque depth 1 (floor)",
            versus="asyncio call_soon depth 1",
        ),
        Case(
            f"{label} call_soon batch",
            label,
            role,
            batch,
            n,
            floor="deque batch (floor)",
            versus="asyncio call_soon batch",
        ),
    ]


def _threaded_immediate_cases(n: int, stack: ExitStack) -> list[Case]:
    """Schedule + dispatch on the threaded runtime, all from one thread: a
    worker.  Depth 1: two continuations schedule each other (no ack needed:
    each schedules the other, whose function has returned).  Batch: a seed
    continuation schedules n others, which then run on the same worker."""
    rt = stack.enter_context(kcont.Runtime(ncpu=1, hz=1000))  # type: ignore[attr-defined,unused-ignore]
    state = {"left": 0, "t_end": 0.0}
    done = threading.Event()

    def ping(arg: Any, kc: Any) -> None:
        global _hits
        _hits += 1
        left = state["left"] = state["left"] - 1
        if left > 0:
            arg.schedule()
        else:
            state["t_end"] = perf()
            done.set()

    a = rt.continuation(kcont.wq_softnet, ping, None)
    b = rt.continuation(kcont.wq_softnet, ping, a)
    a.set_arg(b)

    def ping_capi(arg: Any, kc: Any) -> None:
        global _hits
        _hits += 1
        left = state["left"] = state["left"] - 1
        if left > 0:
            kcont_schedule(arg, None, 0)
        else:
            state["t_end"] = perf()
            done.set()

    c = rt.continuation(kcont.wq_softnet, ping_capi, None)
    d = rt.continuation(kcont.wq_softnet, ping_capi, c)
    c.set_arg(d)

    def last(arg: Any, kc: Any) -> None:
        global _hits
        _hits += 1
        if arg == state["left"]:
            state["t_end"] = perf()
            done.set()

    pool = [rt.continuation(kcont.wq_softnet, last, i) for i in range(1, n + 1)]

    def seed(k: Any, kc: Any) -> None:
        for p in pool[:k]:
            p.schedule()

    seeder = rt.continuation(kcont.wq_softnet, seed, 0)

    def depth1(k: int, first: Any = a, what: str = "kcont threaded depth 1") -> tuple[float, int]:
        done.clear()
        state["left"] = k
        t0 = perf()
        first.schedule()
        if not done.wait(120):
            raise RuntimeError(f"{what}: timed out")
        rt.wait_idle(30)
        _check_hits(k, what)
        return state["t_end"] - t0, k

    def depth1_capi(k: int) -> tuple[float, int]:
        return depth1(k, c, "kcont threaded depth 1 (kcont_schedule)")

    def batch(k: int) -> tuple[float, int]:
        done.clear()
        state["left"] = k
        seeder.set_arg(k)
        t0 = perf()
        seeder.schedule()
        if not done.wait(120):
            raise RuntimeError("threaded batch: timed out")
        rt.wait_idle(30)
        _check_hits(k, "kcont threaded batch")
        return state["t_end"] - t0, k

    return [
        Case(
            "kcont threaded depth 1",
            "kcont",
            "kcont",
            depth1,
            n,
            floor="deque depth 1 (floor)",
            versus="asyncio call_soon depth 1",
            note="ping-pong of 2 continuations on one worker",
        ),
        Case(
            "kcont threaded depth 1 (kcont_schedule)",
            "kcont",
            "kcont",
            depth1_capi,
            n,
            floor="deque depth 1 (floor)",
            versus="asyncio call_soon depth 1",
            note="the same through the C-style API",
        ),
        Case(
            "kcont threaded batch",
            "kcont",
            "kcont",
            batch,
            n,
            floor="deque batch (floor)",
            versus="asyncio call_soon batch",
            note="a continuation schedules n, one worker runs them",
        ),
    ]

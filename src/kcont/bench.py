"""kcont's benchmark suite: kcont beside what a Python user would pick instead.

``python -m kcont bench`` (or ``python benchmarks/run.py``) measures, in one
process run, side by side:

* ``immediate``: schedule + dispatch of a reused continuation, at depth 1
  (schedule one, run it) and as a batch (schedule N, run them all), on the
  simulated runtime and, when present, on the threaded runtime from the same
  thread; against the ``collections.deque`` floors and asyncio ``call_soon``
  (uvloop too when installed).
* ``cross``: producer threads scheduling onto the threaded runtime, against a
  ``queue.SimpleQueue`` hand-off (the floor), ``ThreadPoolExecutor.submit``
  and asyncio ``call_soon_threadsafe``.
* ``timers``: re-arming a pending continuation and stop + re-schedule with P
  continuations pending, against a bare hashed timing wheel (the floor),
  asyncio ``call_later`` + ``cancel``, ``sched`` and Twisted
  ``DelayedCall.reset``.
* ``create`` and ``memory``: the cost of creating (and arming) a continuation,
  and the memory per pending continuation (tracemalloc), against asyncio's
  ``TimerHandle``.
* ``latency``: wake-up latency from ``schedule`` to the start of the function,
  p50/p99, against a bare ``queue.SimpleQueue`` hand-off between two threads.

Method
    The cases of a benchmark run round-robin inside one process, the order
    rotated each round, after one shorter warm-up round.  A cell is the median
    over rounds, and a ratio is the **median of the per-round ratios** to the
    reference measured in the same round, so that the noise of a shared
    machine cancels out.  The cyclic GC stays on; ``gc.collect()`` runs before
    every measurement (with a million timers pending, a full collection takes
    most of a second: there it runs once per round, and a young-generation
    collection before each measurement).

Optional competitors (uvloop, Twisted) and ``--plot`` (matplotlib) come with
the ``bench`` extra and are imported lazily; a missing one is skipped with a
note.  This module needs only the standard library.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import itertools
import json
import os
import platform
import queue
import random
import sched
import statistics
import sys
import threading
import time
import tracemalloc
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import kcont
from kcont.capi import kcont_schedule

__all__ = ["BENCHMARKS", "HashedWheel", "add_arguments", "main", "run", "run_from_args"]

perf = time.perf_counter
perf_ns = time.perf_counter_ns

BENCHMARKS = ("immediate", "cross", "timers", "create", "memory", "latency")

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
WHEEL_BUCKETS = 1024
# Above this many timers pending, a full collection costs most of a second:
# collect once per round instead of before each measurement.
FULL_GC_MAX_PENDING = 200_000
# uvloop is not one of issue 7's timer competitors, and is the slowest to set
# up with a million timers (585 B and ~10 us each): measured up to here.
UVLOOP_TIMERS_MAX = 100_000


# -- the floor of the timer benchmarks: a bare hashed timing wheel ------------


class WheelTimer:
    """A timer of :class:`HashedWheel`: no state machine, no semantics."""

    __slots__ = ("arg", "bucket", "deadline", "func")

    def __init__(self, func: Callable[[Any], object], arg: Any) -> None:
        self.func = func
        self.arg = arg
        self.bucket: set[WheelTimer] | None = None
        self.deadline = 0


class HashedWheel:
    """The floor: a hashed timing wheel in a few lines of Python (1024
    buckets, a ``set`` per bucket; ``tick()`` scans one bucket)."""

    __slots__ = ("buckets", "now")

    def __init__(self) -> None:
        self.buckets: list[set[WheelTimer]] = [set() for _ in range(WHEEL_BUCKETS)]
        self.now = 0

    def schedule(self, t: WheelTimer, deadline: int) -> None:
        b = t.bucket
        if b is not None:
            b.discard(t)
        b = self.buckets[deadline % WHEEL_BUCKETS]
        b.add(t)
        t.bucket = b
        t.deadline = deadline

    def cancel(self, t: WheelTimer) -> None:
        b = t.bucket
        if b is not None:
            b.discard(t)
            t.bucket = None

    def tick(self) -> None:
        now = self.now = self.now + 1
        b = self.buckets[now % WHEEL_BUCKETS]
        if b:
            due = [t for t in b if t.deadline <= now]
            for t in due:
                b.discard(t)
                t.bucket = None
                t.func(t.arg)


# -- configuration --------------------------------------------------------------


@dataclass
class Config:
    """What to run and how long (``--quick`` shrinks every size)."""

    quick: bool = False
    rounds: int = 5
    sizes: list[int] = field(default_factory=lambda: [1_000, 10_000, 100_000, 1_000_000])
    only: tuple[str, ...] = BENCHMARKS
    n_immediate: int = 100_000
    n_cross: int = 50_000
    timer_ops: int = 50_000
    slow_budget: float = 0.3
    sched_max: int = 100_000
    create_size: int = 50_000
    mem_size: int = 100_000
    latency_samples: int = 2000
    seed: int = 1
    out: TextIO = sys.stdout

    @classmethod
    def quick_config(cls) -> Config:
        return cls(
            quick=True,
            rounds=2,
            sizes=[1_000, 10_000],
            n_immediate=5_000,
            n_cross=2_000,
            timer_ops=4_000,
            slow_budget=0.02,
            sched_max=10_000,
            create_size=2_000,
            mem_size=2_000,
            latency_samples=60,
        )


# -- cases, rounds, ratios --------------------------------------------------------

Measure = Callable[[int], "tuple[float, int]"]  # n -> (seconds, operations done)


@dataclass
class Case:
    """One measured cell.  ``measure(n)`` runs ``n`` operations (fewer if it
    hits its time budget) and returns ``(seconds, operations)``."""

    name: str
    impl: str
    role: str  # "kcont", "floor", "competitor", "reference", "variant" (kcont through another API)
    measure: Measure
    n: int
    floor: str | None = None
    versus: str | None = None
    also: tuple[str, ...] = ()
    op: str = ""
    note: str = ""


def _gc_prep(full: bool) -> None:
    gc.collect() if full else gc.collect(1)


def run_cases(
    cases: Sequence[Case], rounds: int, *, full_gc: bool = True
) -> dict[str, list[tuple[float, int]]]:
    """Round-robin: one shorter warm-up round, then ``rounds`` rounds with the
    order rotated each round.  Returns per case the (ns/op, ops) of each round."""
    samples: dict[str, list[tuple[float, int]]] = {c.name: [] for c in cases}
    step = max(1, len(cases) // max(1, rounds))  # spread the starting points over the list
    for r in range(-1, rounds):
        shift = (r * step) % len(cases) if r >= 0 else 0
        order = list(cases[shift:]) + list(cases[:shift])
        if not full_gc:
            gc.collect()
        for case in order:
            _gc_prep(full_gc)
            n = case.n if r >= 0 else max(1, case.n // 5)
            seconds, ops = case.measure(n)
            if r >= 0:
                samples[case.name].append((seconds * 1e9 / max(ops, 1), ops))
    return samples


def _median_ratio(a: list[tuple[float, int]], b: list[tuple[float, int]]) -> float | None:
    if not a or not b or len(a) != len(b):
        return None
    return statistics.median(x[0] / y[0] for x, y in zip(a, b, strict=False) if y[0] > 0)


def summarize(cases: Sequence[Case], samples: dict[str, list[tuple[float, int]]]) -> list[dict[str, Any]]:
    """Rows: median ns/op, min, and the median of per-round ratios to the
    case's floor, main competitor and other references."""
    rows = []
    for c in cases:
        s = samples[c.name]
        ns = [x[0] for x in s]
        ratios = {}
        for ref in (c.floor, c.versus, *c.also):
            if ref is not None and ref in samples and ref != c.name:
                value = _median_ratio(s, samples[ref])
                if value is not None:
                    ratios[ref] = value
        rows.append(
            {
                "case": c.name,
                "impl": c.impl,
                "role": c.role,
                "op": c.op,
                "ns_per_op": statistics.median(ns),
                "ns_min": min(ns),
                "ns_rounds": ns,
                "ops": min(x[1] for x in s),
                "floor": c.floor,
                "x_floor": ratios.get(c.floor) if c.floor else None,
                "versus": c.versus,
                "x_versus": ratios.get(c.versus) if c.versus else None,
                "ratios": ratios,
                "note": c.note,
            }
        )
    return rows


@dataclass
class Group:
    """The result of one benchmark (one table)."""

    name: str
    title: str
    params: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    kind: str = "ns"  # "ns", "bytes" or "latency"
    finalizers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def row(self, case: str) -> dict[str, Any] | None:
        for r in self.rows:
            if r["case"] == case:
                return r
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "kind": self.kind,
            "params": self.params,
            "rows": self.rows,
            "notes": self.notes,
            "skipped": self.skipped,
        }


# -- callbacks ---------------------------------------------------------------------

_hits = 0
_fired = 0


def _cb(i: Any) -> None:
    global _hits
    _hits += 1


def _kcb(arg: Any, kc: Any) -> None:
    global _hits
    _hits += 1


def _never(*args: Any) -> None:
    """A timer callback that must not run during a timer benchmark."""
    global _fired
    _fired += 1


def _check_hits(expected: int, what: str) -> None:
    global _hits
    if _hits != expected:
        raise RuntimeError(f"{what}: {_hits} callbacks ran, expected {expected}")
    _hits = 0


# -- optional competitors (imported lazily) ------------------------------------------


def _uvloop() -> Any:
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return uvloop


def _twisted_reactor() -> Any:
    """A fresh, never-run Twisted reactor (its timed calls only), or None."""
    try:
        from twisted.internet.epollreactor import EPollReactor  # type: ignore[import-not-found,unused-ignore]

        return EPollReactor()  # type: ignore[no-untyped-call,unused-ignore]
    except ImportError:
        pass
    try:
        from twisted.internet.selectreactor import SelectReactor  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return SelectReactor()


def _threaded_runtime_available() -> bool:
    return hasattr(kcont, "Runtime")


SKIP_THREADED = "skipped: threaded runtime not available (kcont.Runtime)"
SKIP_UVLOOP = "skipped: uvloop not installed (pip install -e .[bench])"
SKIP_TWISTED = "skipped: Twisted not installed (pip install -e .[bench])"


@contextmanager
def _event_loop(factory: Callable[[], asyncio.AbstractEventLoop]) -> Iterator[asyncio.AbstractEventLoop]:
    loop = factory()
    try:
        yield loop
    finally:
        loop.close()


def _loop_factories() -> list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]]:
    factories: list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]] = [
        ("asyncio", asyncio.new_event_loop)
    ]
    uv = _uvloop()
    if uv is not None:
        factories.append(("uvloop", uv.new_event_loop))
    return factories


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
            "kcont sim: SimRuntime(ncpu=1); the public API (kc.schedule() + rt.step() / "
            "rt.run_until_idle()) is the headline; 'kcont_schedule' is the C-style call (returns an errno).",
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

    samples = run_cases(cases, cfg.rounds)
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

    def depth1(k: int) -> tuple[float, int]:
        done.clear()
        state["left"] = k
        t0 = perf()
        a.schedule()
        if not done.wait(120):
            raise RuntimeError("threaded depth 1: timed out")
        rt.wait_idle(30)
        _check_hits(k, "kcont threaded depth 1")
        return state["t_end"] - t0, k

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


# -- cross-thread ------------------------------------------------------------------------


class _Finish:
    """Counts callbacks from any thread; records the time of the last one."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.t_end = 0.0
        self.target = 0
        self.counter: Iterator[int] = itertools.count(1)

    def reset(self, target: int) -> None:
        self.done.clear()
        self.target = target
        self.counter = itertools.count(1)  # next() is atomic

    def hit(self, i: Any = None) -> None:
        if next(self.counter) == self.target:
            self.t_end = perf()
            self.done.set()

    def khit(self, arg: Any, kc: Any) -> None:
        if next(self.counter) == self.target:
            self.t_end = perf()
            self.done.set()

    def wait(self, what: str, timeout: float = 120) -> None:
        if not self.done.wait(timeout):
            raise RuntimeError(f"{what}: timed out")


def _run_producers(nprod: int, produce: Callable[[int], None], finish: _Finish, what: str) -> float:
    """Start ``nprod`` threads running ``produce(index)`` at a common go
    signal; return the time from the go to the last callback."""
    go = threading.Event()

    def body(index: int) -> None:
        go.wait()
        produce(index)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(nprod)]
    for t in threads:
        t.start()
    t0 = perf()
    go.set()
    finish.wait(what)
    for t in threads:
        t.join()
    return finish.t_end - t0


def bench_cross(cfg: Config, stack: ExitStack) -> Group:
    n = cfg.n_cross
    n_tpe = max(100, n // 10)
    g = Group(
        "cross",
        "Cross-thread: producer threads schedule onto worker threads (throughput)",
        {"n": n, "n_threadpool": n_tpe, "rounds": cfg.rounds},
        notes=[
            "time from the first schedule to the last invocation, per item; thread start excluded.",
            "floor: queue.SimpleQueue put -> one consumer thread get + call; ThreadPoolExecutor(2) "
            f"runs {n_tpe} items per round (it is ~50x slower).",
            "kcont: Runtime(ncpu=2), a pool of n pre-created continuations each scheduled once per "
            "round; producer i is bound to CPU i.",
        ],
    )
    finish = _Finish()
    cases: list[Case] = []
    tpe = stack.enter_context(ThreadPoolExecutor(max_workers=2))
    loops: list[tuple[str, asyncio.AbstractEventLoop]] = []
    for label, factory in _loop_factories():
        loop = stack.enter_context(_event_loop(factory))
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        stack.callback(thread.join)
        stack.callback(loop.call_soon_threadsafe, loop.stop)
        loops.append((label, loop))
    if _uvloop() is None:
        g.skipped.append(f"uvloop call_soon_threadsafe: {SKIP_UVLOOP}")

    rt = None
    pool: list[Any] = []
    if _threaded_runtime_available():
        rt = stack.enter_context(kcont.Runtime(ncpu=2, hz=1000))  # type: ignore[attr-defined,unused-ignore]
        pool = [rt.continuation(kcont.wq_softnet, finish.khit, i) for i in range(n)]
    else:
        g.skipped.append(f"kcont threaded: {SKIP_THREADED}")

    for nprod in (1, 2):
        sfx = f", {nprod} producer{'s' if nprod > 1 else ''}"
        floor = "SimpleQueue" + sfx + " (floor)"

        def simplequeue(k: int, nprod: int = nprod) -> tuple[float, int]:
            q: queue.SimpleQueue[Any] = queue.SimpleQueue()

            def consumer() -> None:
                get = q.get
                while True:
                    item = get()
                    if item is None:
                        return
                    item[0](item[1])

            ct = threading.Thread(target=consumer, daemon=True)
            ct.start()
            finish.reset(k)

            def produce(index: int) -> None:
                put, hit = q.put, finish.hit
                for i in range(index, k, nprod):
                    put((hit, i))

            t = _run_producers(nprod, produce, finish, "SimpleQueue")
            q.put(None)
            ct.join()
            return t, k

        def threadpool(k: int, nprod: int = nprod) -> tuple[float, int]:
            k = max(1, k // 10)
            finish.reset(k)

            def produce(index: int) -> None:
                submit, hit = tpe.submit, finish.hit
                for i in range(index, k, nprod):
                    submit(hit, i)

            return _run_producers(nprod, produce, finish, "ThreadPoolExecutor"), k

        cases += [
            Case(floor, "floor", "floor", simplequeue, n),
            Case(
                "ThreadPoolExecutor(2).submit" + sfx,
                "threadpool",
                "competitor",
                threadpool,
                n,
                floor=floor,
            ),
        ]
        for label, loop in loops:

            def threadsafe(
                k: int, nprod: int = nprod, loop: asyncio.AbstractEventLoop = loop
            ) -> tuple[float, int]:
                finish.reset(k)

                def produce(index: int) -> None:
                    cst, hit = loop.call_soon_threadsafe, finish.hit
                    for i in range(index, k, nprod):
                        cst(hit, i)

                return _run_producers(nprod, produce, finish, "call_soon_threadsafe"), k

            cases.append(
                Case(
                    f"{label} call_soon_threadsafe" + sfx,
                    label,
                    "competitor" if label == "asyncio" else "reference",
                    threadsafe,
                    n,
                    floor=floor,
                    versus="ThreadPoolExecutor(2).submit" + sfx,
                )
            )
        if rt is not None:

            def kthreaded(k: int, nprod: int = nprod) -> tuple[float, int]:
                assert rt is not None
                finish.reset(k)
                part = pool[:k]
                cpus = rt.cpus

                def produce(index: int) -> None:
                    with kcont.bind_cpu(cpus[index % len(cpus)]):
                        for kc in part[index::nprod]:
                            kc.schedule()

                t = _run_producers(nprod, produce, finish, "kcont threaded")
                rt.wait_idle(30)
                return t, k

            cases.append(
                Case(
                    "kcont threaded" + sfx,
                    "kcont",
                    "kcont",
                    kthreaded,
                    n,
                    floor=floor,
                    versus="ThreadPoolExecutor(2).submit" + sfx,
                    also=("asyncio call_soon_threadsafe" + sfx, "uvloop call_soon_threadsafe" + sfx),
                )
            )
    samples = run_cases(cases, cfg.rounds)
    g.rows = summarize(cases, samples)
    for row in g.rows:
        row["ops_per_s"] = 1e9 / row["ns_per_op"] if row["ns_per_op"] else None
    return g


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
                    "(the slowest to set up; not a target)"
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
        samples = run_cases(cases, rounds, full_gc=full_gc)
        for fin in g.finalizers:
            fin()
        g.rows = summarize(cases, samples)
        del cases
    if _fired:
        g.notes.append(f"WARNING: {_fired} timers fired during the run; the figures are not churn only")
    gc.collect()
    return g


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
    samples = run_cases(cases, cfg.rounds)
    g.rows = summarize(cases, samples)
    return g


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
    return g


# -- wake-up latency ---------------------------------------------------------------------


class _Poster:
    """A way to hand ``probe(t_post)`` to another thread."""

    name = ""
    impl = ""

    def __init__(self, sink: list[int]) -> None:
        self.sink = sink

    def probe(self, t_post: int) -> None:
        self.sink.append(perf_ns() - t_post)

    def post(self, t_post: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _SimpleQueuePoster(_Poster):
    name = "SimpleQueue hand-off (floor)"
    impl = "floor"

    def __init__(self, sink: list[int]) -> None:
        super().__init__(sink)
        self.q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._consume, daemon=True)
        self.thread.start()

    def _consume(self) -> None:
        get = self.q.get
        while True:
            item = get()
            if item is None:
                return
            item[0](item[1])

    def post(self, t_post: int) -> None:
        self.q.put((self.probe, t_post))

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()


class _LoopPoster(_Poster):
    def __init__(self, sink: list[int], label: str, factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        super().__init__(sink)
        self.name = f"{label} call_soon_threadsafe"
        self.impl = label
        self.loop = factory()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def post(self, t_post: int) -> None:
        self.loop.call_soon_threadsafe(self.probe, t_post)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class _KcontPoster(_Poster):
    name = "kcont threaded"
    impl = "kcont"

    def __init__(self, sink: list[int]) -> None:
        super().__init__(sink)
        self.rt = kcont.Runtime(ncpu=1, hz=1000)  # type: ignore[attr-defined,unused-ignore]
        self.rt.__enter__()
        self.box = [0]
        self.kc = self.rt.continuation(kcont.wq_softnet, self._kprobe, None)

    def _kprobe(self, arg: Any, kc: Any) -> None:
        self.sink.append(perf_ns() - self.box[0])

    def post(self, t_post: int) -> None:
        self.box[0] = t_post
        self.kc.schedule()

    def close(self) -> None:
        self.rt.__exit__(None, None, None)


class _KcontSaturatedPoster(_KcontPoster):
    """The probe on ``wq_softnet`` while ``wq_prilow`` on the same CPU is kept
    saturated by continuations that sleep (soft-level work must not wait
    behind blocked thread-level work)."""

    name = "kcont threaded, wq_prilow saturated by sleepers"
    impl = "kcont"
    SLEEPERS = 4
    SLEEP_S = 0.002

    def __init__(self, sink: list[int]) -> None:
        super().__init__(sink)
        self.stopping = threading.Event()
        self.sleepers = [
            self.rt.continuation(kcont.wq_prilow, self._sleep, None) for _ in range(self.SLEEPERS)
        ]
        for sleeper in self.sleepers:
            sleeper.schedule()

    def _sleep(self, arg: Any, kc: Any) -> None:
        time.sleep(self.SLEEP_S)
        if not self.stopping.is_set():
            kc.schedule(ack=True)

    def close(self) -> None:
        self.stopping.set()
        super().close()


def _percentile(values: list[int], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k] / 1000


def bench_latency(cfg: Config) -> Group:
    total = cfg.latency_samples
    per_round = max(10, total // cfg.rounds)
    g = Group(
        "latency",
        "Wake-up latency: from schedule to the start of the function (idle consumer thread)",
        {"samples": per_round * cfg.rounds, "rounds": cfg.rounds},
        kind="latency",
        notes=[
            "t_post is taken just before the post; the producer sleeps 100-300 us between posts and "
            "waits for the probe; samples of all rounds pooled (rounds interleave the mechanisms).",
            "saturated: 4 wq_prilow continuations on the same CPU each sleep 2 ms and re-arm "
            "themselves for the whole measurement; the probe is on wq_softnet.",
        ],
    )
    sinks: dict[str, list[int]] = {}
    posters: list[_Poster] = []
    try:
        sink: list[int] = []
        posters.append(_SimpleQueuePoster(sink))
        for label, factory in _loop_factories():
            posters.append(_LoopPoster([], label, factory))
        if _threaded_runtime_available():
            posters.append(_KcontPoster([]))
            posters.append(_KcontSaturatedPoster([]))
        else:
            g.skipped.append(f"kcont threaded: {SKIP_THREADED}")
        for p in posters:
            sinks[p.name] = p.sink
        rng = random.Random(cfg.seed)
        for r in range(-1, cfg.rounds):
            shift = r % len(posters) if r >= 0 else 0
            for p in posters[shift:] + posters[:shift]:
                gc.collect()
                count = per_round if r >= 0 else 5
                start = len(p.sink)
                for s in range(count):
                    p.post(perf_ns())
                    time.sleep(rng.uniform(100e-6, 300e-6))
                    deadline = perf() + 5
                    while len(p.sink) < start + s + 1:
                        if perf() > deadline:
                            raise RuntimeError(f"latency {p.name}: probe lost")
                        time.sleep(50e-6)
                if r < 0:
                    del p.sink[start:]
    finally:
        for p in posters:
            p.close()
    floor_lat = sinks[posters[0].name]
    floor_p50, floor_p99 = _percentile(floor_lat, 50), _percentile(floor_lat, 99)
    for p in posters:
        lat = sinks[p.name]
        row: dict[str, Any] = {
            "case": p.name,
            "impl": p.impl,
            "role": "floor" if p.impl == "floor" else ("kcont" if p.impl == "kcont" else "reference"),
            "samples": len(lat),
            "p50_us": _percentile(lat, 50),
            "p90_us": _percentile(lat, 90),
            "p99_us": _percentile(lat, 99),
            "max_us": max(lat) / 1000 if lat else float("nan"),
            "floor": posters[0].name,
        }
        row["x_floor_p50"] = row["p50_us"] / floor_p50 if floor_p50 else None
        row["x_floor_p99"] = row["p99_us"] / floor_p99 if floor_p99 else None
        g.rows.append(row)
    return g


# -- targets -------------------------------------------------------------------------------


def _find(groups: list[Group], name: str, **params: Any) -> Group | None:
    for g in groups:
        if g.name == name and all(g.params.get(k) == v for k, v in params.items()):
            return g
    return None


def _ratio(g: Group | None, case: str, ref: str) -> float | None:
    if g is None:
        return None
    row = g.row(case)
    if row is None:
        return None
    value = row.get("ratios", {}).get(ref)
    return float(value) if value is not None else None


def evaluate_targets(groups: list[Group]) -> list[dict[str, Any]]:
    """Issue 7's targets, each met / not met / not measured."""
    out: list[dict[str, Any]] = []

    def add(target: str, value: float | None, limit: float, *, at_most: bool = True, unit: str = "x") -> None:
        met = None if value is None else (value <= limit if at_most else value >= limit)
        out.append(
            {"target": target, "value": value, "limit": limit, "at_most": at_most, "unit": unit, "met": met}
        )

    imm = _find(groups, "immediate")
    if imm is not None:
        for case, floor, comp in (
            ("kcont sim depth 1", "deque depth 1 (floor)", "asyncio call_soon depth 1"),
            ("kcont sim batch", "deque batch (floor)", "asyncio call_soon batch"),
            ("kcont threaded depth 1", "deque depth 1 (floor)", "asyncio call_soon depth 1"),
            ("kcont threaded batch", "deque batch (floor)", "asyncio call_soon batch"),
        ):
            if imm.row(case) is None and "threaded" in case:
                add(f"immediate: {case} <= 0.6x asyncio call_soon", None, 0.6)
                add(f"immediate: {case} <= 3x deque floor", None, 3.0)
                continue
            add(f"immediate: {case} <= 0.6x asyncio call_soon", _ratio(imm, case, comp), 0.6)
            add(f"immediate: {case} <= 3x deque floor", _ratio(imm, case, floor), 3.0)
    cross = _find(groups, "cross")
    if cross is not None:
        for nprod in (1, 2):
            sfx = f", {nprod} producer{'s' if nprod > 1 else ''}"
            case = "kcont threaded" + sfx
            tpe = _ratio(cross, case, "ThreadPoolExecutor(2).submit" + sfx)
            add(
                f"cross-thread{sfx}: throughput >= 10x ThreadPoolExecutor.submit",
                None if tpe is None else 1 / tpe,
                10.0,
                at_most=False,
            )
            add(
                f"cross-thread{sfx}: time/op <= asyncio call_soon_threadsafe",
                _ratio(cross, case, "asyncio call_soon_threadsafe" + sfx),
                1.0,
            )
    for g in groups:
        if g.name != "timers":
            continue
        size = g.params["pending"]
        for case, floor in (
            ("kcont rearm later", "wheel rearm later (floor)"),
            ("kcont rearm random", "wheel rearm random (floor)"),
            ("kcont stop + schedule", "wheel cancel + re-arm (floor)"),
        ):
            add(f"timers P={size:,}: {case} <= 2x bare wheel", _ratio(g, case, floor), 2.0)
        if size >= 100_000:
            for case in ("kcont rearm later", "kcont rearm random"):
                add(
                    f"timers P={size:,}: {case} <= 0.5x asyncio call_later+cancel",
                    _ratio(g, case, "asyncio call_later + cancel"),
                    0.5,
                )
    mem = _find(groups, "memory")
    if mem is not None:
        row = mem.row("kcont pending continuation")
        add(
            "memory per pending continuation <= asyncio TimerHandle",
            None if row is None else row["x_versus"],
            1.0,
        )
    lat = _find(groups, "latency")
    if lat is not None:
        row = lat.row("kcont threaded")
        add("wake-up p99 <= 2x SimpleQueue hand-off", None if row is None else row["x_floor_p99"], 2.0)
    return out


# -- output --------------------------------------------------------------------------------


def _fmt_ns(ns: float | None) -> str:
    if ns is None:
        return "-"
    if ns >= 1e6:
        return f"{ns / 1e6:,.2f} ms"
    if ns >= 1e4:
        return f"{ns / 1e3:,.1f} us"
    return f"{ns:,.0f}"


def _short(name: str | None) -> str:
    """A reference's name without what the row already says (for the table)."""
    if not name:
        return ""
    for long, short in (
        (" (floor)", ""),
        (", 1 producer", ""),
        (", 2 producers", ""),
        ("call_soon_threadsafe", "cst"),
        ("ThreadPoolExecutor(2).submit", "TPE.submit"),
    ):
        name = name.replace(long, short)
    return name


def _fmt_x(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _table(headers: list[str], rows: list[list[str]], out: TextIO) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(headers), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in rows:
        print(line(r), file=out)


def print_group(g: Group, out: TextIO) -> None:
    print(f"\n== {g.title} ==", file=out)
    params = ", ".join(f"{k}={v}" for k, v in g.params.items())
    if params:
        print(f"   ({params})", file=out)
    if g.kind == "ns":
        rows = []
        for r in g.rows:
            more = ", ".join(
                f"{v:.2f}x {_short(k)}"
                for k, v in r.get("ratios", {}).items()
                if k not in (r["floor"], r["versus"])
            )
            ops = f" [{r['ops']} ops]" if "budget" in (r.get("note") or "") else ""
            rows.append(
                [
                    r["case"] + ops,
                    _fmt_ns(r["ns_per_op"]),
                    _fmt_ns(r["ns_min"]),
                    _fmt_x(r["x_floor"]),
                    _fmt_x(r["x_versus"]),
                    _short(r["versus"]) if r["x_versus"] is not None else "",
                    more,
                ]
            )
        _table(["case", "ns/op", "min", "x floor", "x comp", "competitor", "other ratios"], rows, out)
    elif g.kind == "bytes":
        rows = [
            [
                r["case"],
                f"{r['bytes_per_object']:.0f}",
                _fmt_x(r["x_floor"]),
                _fmt_x(r["x_versus"]),
                r["note"],
            ]
            for r in g.rows
        ]
        _table(["object", "bytes", "x floor", "x asyncio", "note"], rows, out)
    else:
        rows = [
            [
                r["case"],
                str(r["samples"]),
                f"{r['p50_us']:.1f}",
                f"{r['p90_us']:.1f}",
                f"{r['p99_us']:.1f}",
                f"{r['max_us']:.1f}",
                _fmt_x(r["x_floor_p50"]),
                _fmt_x(r["x_floor_p99"]),
            ]
            for r in g.rows
        ]
        _table(["mechanism", "n", "p50 us", "p90 us", "p99 us", "max us", "p50 x fl", "p99 x fl"], rows, out)
    for note in g.notes:
        print(f"   note: {note}", file=out)
    for skip in g.skipped:
        print(f"   {skip}", file=out)
    out.flush()


def print_targets(targets: list[dict[str, Any]], out: TextIO) -> None:
    print("\n== Targets (issue 7; ratios from this run) ==", file=out)
    rows = []
    for t in targets:
        verdict = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT MET")
        op = "<=" if t["at_most"] else ">="
        rows.append([t["target"], _fmt_x(t["value"]), f"{op} {t['limit']:g}", verdict])
    _table(["target", "value", "limit", "verdict"], rows, out)
    met = sum(1 for t in targets if t["met"])
    measured = sum(1 for t in targets if t["met"] is not None)
    print(f"   {met} of {measured} measured targets met ({len(targets) - measured} not measured)", file=out)


def write_plot(groups: list[Group], path: str) -> str | None:
    """ns/op against pending timers, log-log, one line per implementation and
    operation.  Returns None, or why it could not."""
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "matplotlib not installed (pip install -e .[bench]): no plot"
    series: dict[str, list[tuple[int, float]]] = {}
    for g in groups:
        if g.name != "timers":
            continue
        for r in g.rows:
            if r["impl"] == "harness":
                continue
            series.setdefault(r["case"].replace(" (floor)", ""), []).append(
                (g.params["pending"], r["ns_per_op"])
            )
    if not series:
        return "no timer results to plot"
    fig, ax = plt.subplots(figsize=(11, 6))
    cmap = plt.get_cmap("tab20")
    for i, (label, points) in enumerate(sorted(series.items())):
        points.sort()
        style = "-o" if label.startswith("kcont") else ("--s" if label.startswith("wheel") else ":^")
        width = 2.2 if label.startswith("kcont") else 1.2
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, style, label=label, color=cmap(i % 20), linewidth=width)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("pending timers")
    ax.set_ylabel("ns per operation (median)")
    ax.set_title("Timer re-arm cost against pending timers")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# -- driver ---------------------------------------------------------------------------------


def _meta(cfg: Config) -> dict[str, Any]:
    return {
        "kcont": kcont.__version__,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "gc": "on",
        "quick": cfg.quick,
        "rounds": cfg.rounds,
        "sizes": cfg.sizes,
        "benchmarks": list(cfg.only),
        "threaded_runtime": _threaded_runtime_available(),
        "uvloop": _uvloop() is not None,
        "twisted": importlib.util.find_spec("twisted") is not None,
        "switchinterval": sys.getswitchinterval(),
        "loadavg_at_start": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run(cfg: Config) -> dict[str, Any]:
    """Run the selected benchmarks, print their tables, return the results."""
    out = cfg.out
    meta = _meta(cfg)
    print(
        f"kcont {meta['kcont']} benchmarks: Python {meta['python']} on {meta['platform']}, "
        f"{meta['cpus']} CPUs; GC on; {cfg.rounds} rounds{' (quick)' if cfg.quick else ''}; "
        "median of rounds, ratios = median of per-round ratios",
        file=out,
    )
    if meta["loadavg_at_start"]:
        print(f"load average at start: {meta['loadavg_at_start']} (others' load skews absolute ns)", file=out)
    groups: list[Group] = []
    started = perf()
    for name in cfg.only:
        t0 = perf()
        if name == "timers":
            for size in cfg.sizes:
                t1 = perf()
                g = bench_timers(cfg, size)
                groups.append(g)
                print_group(g, out)
                print(f"   (timers P={size:,}: {perf() - t1:.1f} s)", file=out)
        else:
            with ExitStack() as stack:
                if name == "immediate":
                    g = bench_immediate(cfg, stack)
                elif name == "cross":
                    g = bench_cross(cfg, stack)
                elif name == "create":
                    g = bench_create(cfg, stack)
                elif name == "memory":
                    g = bench_memory(cfg)
                else:
                    g = bench_latency(cfg)
            groups.append(g)
            print_group(g, out)
        gc.collect()
        print(f"   ({name}: {perf() - t0:.1f} s)", file=out)
    targets = evaluate_targets(groups)
    print_targets(targets, out)
    meta["seconds"] = round(perf() - started, 1)
    meta["loadavg_at_end"] = _loadavg()
    print(f"\ntotal {meta['seconds']} s", file=out)
    return {"meta": meta, "groups": [g.as_dict() for g in groups], "targets": targets}


def _parse_sizes(text: str) -> list[int]:
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if part:
            value = int(float(part))
            if value < 1:
                raise argparse.ArgumentTypeError(f"size must be >= 1: {part}")
            sizes.append(value)
    if not sizes:
        raise argparse.ArgumentTypeError("no sizes given")
    return sizes


def _parse_only(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    aliases = {"cross-thread": "cross", "timer": "timers", "mem": "memory", "wakeup": "latency"}
    names = tuple(aliases.get(n, n) for n in names)
    bad = [n for n in names if n not in BENCHMARKS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown benchmark(s) {bad}; choose from {', '.join(BENCHMARKS)}")
    return tuple(n for n in BENCHMARKS if n in names)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark options to ``parser`` (``python -m kcont bench``)."""
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds (what CI runs)")
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds (default 5; quick 2)")
    parser.add_argument(
        "--sizes",
        type=_parse_sizes,
        default=None,
        help="pending timers, e.g. 1e3,1e4,1e5,1e6 (default; quick 1e3,1e4)",
    )
    parser.add_argument(
        "--only",
        type=_parse_only,
        default=None,
        help=f"comma-separated subset of: {','.join(BENCHMARKS)}",
    )
    parser.add_argument("--n", type=int, default=None, help="items per round for immediate and cross-thread")
    parser.add_argument("--timer-ops", type=int, default=None, help="operations per timer measurement")
    parser.add_argument(
        "--sched-max", type=float, default=None, help="largest pending size measured with sched (default 1e5)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the workloads")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the results as JSON")
    parser.add_argument("--plot", metavar="FILE", default=None, help="write a PNG of timer cost (matplotlib)")


def config_from_args(args: argparse.Namespace, out: TextIO | None = None) -> Config:
    cfg = Config.quick_config() if args.quick else Config()
    if args.rounds is not None:
        if args.rounds < 1:
            raise SystemExit("--rounds must be >= 1")
        cfg.rounds = args.rounds
    if args.sizes is not None:
        cfg.sizes = args.sizes
    if args.only is not None:
        cfg.only = args.only
    if args.n is not None:
        cfg.n_immediate = cfg.n_cross = args.n
    if args.timer_ops is not None:
        cfg.timer_ops = args.timer_ops
    if args.sched_max is not None:
        cfg.sched_max = int(args.sched_max)
    cfg.seed = args.seed
    if out is not None:
        cfg.out = out
    return cfg


def run_from_args(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """The ``bench`` command's handler: run, print, write ``--json``/``--plot``."""
    cfg = config_from_args(args, out)
    results = run(cfg)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
        print(f"wrote {args.json}", file=cfg.out)
    if args.plot:
        groups = [Group(**g) for g in results["groups"]]
        problem = write_plot(groups, args.plot)
        print(problem or f"wrote {args.plot}", file=cfg.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/run.py [options]``."""
    parser = argparse.ArgumentParser(
        prog="kcont bench", description="kcont beside asyncio, uvloop, sched, Twisted and threads."
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

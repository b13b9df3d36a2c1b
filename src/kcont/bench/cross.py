"""The ``cross`` benchmark: producer threads handing work to the threaded
runtime, against a ``queue.SimpleQueue`` hand-off (the floor),
``ThreadPoolExecutor.submit`` and asyncio ``call_soon_threadsafe``.

Each measurement waits for the last item with a :class:`_Finish` (an event
and a counter under its own lock).
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import kcont

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
    samples = run_cases(cases, cfg.rounds, stop=cfg.stop, turn=cfg.turn)
    g.rows = summarize(cases, samples)
    for row in g.rows:
        row["ops_per_s"] = 1e9 / row["ns_per_op"] if row["ns_per_op"] else None
    return g

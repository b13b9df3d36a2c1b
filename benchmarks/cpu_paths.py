"""Thread CPU time of kcont's hot paths beside asyncio and a deque, best of 15.

Usage: python benchmarks/cpu_paths.py SRC_DIR   (the kcont package's parent)

Thread CPU time is less disturbed than wall time by the other load of a shared
machine; the figures are ns per operation (a continuation scheduled and run,
or a pending timer re-armed).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import random
import sys
import time
from collections.abc import Callable

sys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else "src")

import kcont

N = 20_000


def best_ns(fn: Callable[[], None], reps: int = 15) -> float:
    best = float("inf")
    for _ in range(reps):
        gc.collect()
        start = time.thread_time_ns()
        fn()
        best = min(best, time.thread_time_ns() - start)
    return best / N


def main() -> None:
    def noop(arg: object, kc: object) -> None:
        pass

    def cb(arg: object) -> None:
        pass

    rt = kcont.SimRuntime(ncpu=1)
    kc = rt.continuation(kcont.wq_softnet, noop, None)
    kcs = [rt.continuation(kcont.wq_softnet, noop, None) for _ in range(N)]
    timers = [rt.continuation(kcont.wq_softclock, noop, None) for _ in range(1000)]
    for timer in timers:
        timer.schedule(50_000)
    picks = [timers[random.randrange(len(timers))] for _ in range(N)]
    loop = asyncio.new_event_loop()

    def depth1() -> None:
        schedule, step = kc.schedule, rt.step
        for _ in range(N):
            schedule()
            step()

    def batch() -> None:
        for k in kcs:
            k.schedule()
        rt.run_until_idle()

    def rearm() -> None:
        for timer in picks:
            timer.schedule(30_000)

    def asyncio_batch() -> None:
        for i in range(N):
            loop.call_soon(cb, i)
        loop.call_soon(loop.stop)
        loop.run_forever()

    def deque_batch() -> None:
        queue: collections.deque[tuple[Callable[[object], None], int]] = collections.deque()
        for i in range(N):
            queue.append((cb, i))
        while queue:
            func, arg = queue.popleft()
            func(arg)

    for name, fn in (
        ("kcont sim depth 1", depth1),
        ("kcont sim batch", batch),
        ("kcont re-arm (1,000 pending)", rearm),
        ("asyncio call_soon batch", asyncio_batch),
        ("deque batch (floor)", deque_batch),
    ):
        print(f"  {name:30s} {best_ns(fn):7.0f} ns")
    loop.close()


if __name__ == "__main__":
    main()

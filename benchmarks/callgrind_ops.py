"""One kind of operation, N times, for instruction counting under callgrind.

Usage: python benchmarks/callgrind_ops.py MODE N   (see benchmarks/callgrind.sh)

Instruction counts are repeatable on a shared machine where nanoseconds are
not; the difference between N and 0 operations, divided by N, is the cost of
one operation (docs/performance.md, "Why: the profile").
"""

from __future__ import annotations

import asyncio
import collections
import gc
import sys

import kcont
from kcont._core.dispatch import dispatch
from kcont._core.workqueue import ALL_BANDS


def _noop(arg: object, kc: object) -> None:
    pass


def _cb(arg: object) -> None:
    pass


POOL = 10_000  # the same set-up whatever N, so that it cancels out


def main(mode: str, n: int) -> None:
    if n > POOL:
        raise SystemExit(f"N must be at most {POOL}")
    rt = kcont.SimRuntime(ncpu=1)
    cpu = rt.cpus[0]
    kcs = [rt.continuation(kcont.wq_softnet, _noop, None) for _ in range(POOL)]
    timers = [rt.continuation(kcont.wq_softclock, _noop, None) for _ in range(POOL)]
    for timer in timers:
        timer.schedule(5000)
    loop = asyncio.new_event_loop()
    gc.collect()
    gc.disable()
    if mode == "immediate-depth1":
        kc = kcs[0]
        for _ in range(n):
            kc.schedule()
            rt.step()
    elif mode == "schedule":
        for kc in kcs[:n]:
            kc.schedule()
    elif mode == "schedule+dispatch":
        for kc in kcs[:n]:
            kc.schedule()
        dispatch(rt, cpu, ALL_BANDS, n)
    elif mode == "rearm":
        for timer in timers[:n]:
            timer.schedule(3000)
    elif mode == "asyncio":
        for i in range(n):
            loop.call_soon(_cb, i)
        loop.call_soon(loop.stop)
        loop.run_forever()
    elif mode == "deque":
        queue: collections.deque[tuple[object, int]] = collections.deque()
        for i in range(n):
            queue.append((_cb, i))
        while queue:
            func, arg = queue.popleft()
            func(arg)  # type: ignore[operator]
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    loop.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))

"""One kind of operation, N times, for instruction counting under callgrind.

Usage: python benchmarks/callgrind_ops.py MODE N   (see benchmarks/callgrind.sh)

Instruction counts are repeatable on a shared machine where nanoseconds are
not; the difference between N and 0 operations, divided by N, is the cost of
one operation (docs/performance.md, "Why: the profile").  The core counted is
the one this process runs: the compiled one when built, the pure one with
``KCONT_PURE_PYTHON=1``; ``python benchmarks/callgrind_ops.py --modes`` lists
the modes, and the script says which core ran on standard error.

The ``capi-*`` modes are the ``kc.schedule()`` modes through the C-style
``kcont.capi.kcont_schedule(kc, None, 0)``, whose errno return the run checks.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import gc
import sys
import threading

import kcont
from kcont._core.dispatch import dispatch
from kcont._core.runtime import _tls
from kcont._core.workqueue import ALL_BANDS
from kcont.bench import HashedWheel, WheelTimer
from kcont.capi import kcont_schedule


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
    wheel = HashedWheel()  # the benchmark's floor: a bare hashed wheel, no semantics
    bare = [WheelTimer(_cb, None) for _ in range(POOL)]
    for t in bare:
        wheel.schedule(t, 5000)
    loop = asyncio.new_event_loop()
    gc.collect()
    gc.disable()
    if mode == "immediate-depth1":
        kc = kcs[0]
        for _ in range(n):
            kc.schedule()
            rt.step()
    elif mode == "capi-depth1":
        kc = kcs[0]
        failed = 0
        for _ in range(n):
            failed |= kcont_schedule(kc, None, 0)
            rt.step()
        if failed:
            raise SystemExit("kcont_schedule refused a schedule")
    elif mode == "schedule":
        for kc in kcs[:n]:
            kc.schedule()
    elif mode == "capi-schedule":
        if any([kcont_schedule(kc, None, 0) for kc in kcs[:n]]):
            raise SystemExit("kcont_schedule refused a schedule")
    elif mode == "capi-schedule+dispatch":
        if any([kcont_schedule(kc, None, 0) for kc in kcs[:n]]):
            raise SystemExit("kcont_schedule refused a schedule")
        dispatch(rt, cpu, ALL_BANDS, n)
    elif mode == "schedule+dispatch":
        for kc in kcs[:n]:
            kc.schedule()
        dispatch(rt, cpu, ALL_BANDS, n)
    elif mode == "rearm":
        for timer in timers[:n]:
            timer.schedule(3000)
    elif mode == "wheel-rearm":
        schedule = wheel.schedule
        for t in bare[:n]:
            schedule(t, 3000)
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
    elif mode in PRIMITIVES:
        primitive(mode, n)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    loop.close()


MODES = (
    "immediate-depth1",
    "capi-depth1",
    "schedule",
    "capi-schedule",
    "schedule+dispatch",
    "capi-schedule+dispatch",
    "rearm",
    "wheel-rearm",
    "asyncio",
    "deque",
)

# CPython primitives that any implementation of kcont's semantics pays for
# (docs/performance.md): each mode runs one in a loop; subtract the `loop` mode.
PRIMITIVES = ("loop", "call", "lock", "with-lock", "copy-context", "ctx-run", "thread-local")


def primitive(mode: str, n: int) -> None:
    lock = threading.Lock()
    ctx = contextvars.copy_context()
    copy_context = contextvars.copy_context
    tls = _tls  # what Continuation.schedule reads to find the caller's CPU
    if mode == "loop":
        for _ in range(n):
            pass
    elif mode == "call":
        for _ in range(n):
            _noop(None, None)
    elif mode == "lock":
        for _ in range(n):
            lock.acquire()
            lock.release()
    elif mode == "with-lock":
        for _ in range(n):
            with lock:
                pass
    elif mode == "copy-context":
        for _ in range(n):
            copy_context()
    elif mode == "ctx-run":
        for _ in range(n):
            ctx.run(_noop, None, None)
    elif mode == "thread-local":
        for _ in range(n):
            tls.cpu  # noqa: B018 - the read is the measurement


if __name__ == "__main__":
    if sys.argv[1:] == ["--modes"]:
        print(" ".join(MODES + PRIMITIVES))
        raise SystemExit(0)
    print(f"kcont core: {kcont.implementation}", file=sys.stderr)
    main(sys.argv[1], int(sys.argv[2]))

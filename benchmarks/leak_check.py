"""Memory must stay flat over many continuation life cycles.

Each cycle, on a SimRuntime: create a continuation, schedule(0) and dispatch
it, schedule(n) and re-arm it (a replaced timer and context), stop it, arm it
again and destroy it while pending; every 7th cycle, run a function that raises,
handled by the exception handler; let a tick pass.  At each 10 % checkpoint the script prints the
traced Python memory (tracemalloc, current size) and the resident set
(/proc/self/statm), and at the end it fails (exit status 1) if either grew
beyond a small bound after the warm-up (the first checkpoint).

    python benchmarks/leak_check.py --cycles 1000000
    KCONT_PURE_PYTHON=1 python benchmarks/leak_check.py --cycles 200000
    PYTHONMALLOC=malloc valgrind --tool=memcheck --errors-for-leak-kinds=definite \\
        --leak-check=full python benchmarks/leak_check.py --cycles 2000 \\
        --no-tracemalloc --max-rss-growth-kib=1000000

Under valgrind the RSS bound means nothing (hence the last option), and
CPython 3.11 itself reports a few uses of uninitialised values while it
starts (int.from_bytes, the import machinery), so ``--error-exitcode=1``
fails on any interpreter: read the report (tests/test_memory.py does).
"""

from __future__ import annotations

import argparse
import contextvars
import gc
import os
import sys
import time
import tracemalloc
from typing import Any

import kcont

VAR: contextvars.ContextVar[int] = contextvars.ContextVar("leak_var", default=0)


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux
        return 0


def run(
    cycles: int, use_tracemalloc: bool, max_growth_kib: int, max_rss_growth_kib: int, top: int = 0
) -> int:
    handled = [0]
    ran = [0]

    def handler(kc: Any, exc: BaseException) -> None:
        handled[0] += 1

    def work(arg: Any, kc: Any) -> None:
        ran[0] += 1

    def fail(arg: Any, kc: Any) -> None:
        raise ValueError(f"expected failure {arg}")

    rt = kcont.SimRuntime(ncpu=2, hz=100, name="leak")
    rt.exception_handler = handler
    if use_tracemalloc:
        tracemalloc.start()
    checkpoints = 10
    every = max(1, cycles // checkpoints)
    samples: list[tuple[int, int, int]] = []
    snapshots: list[tracemalloc.Snapshot] = []
    start = time.perf_counter()
    with rt:
        shared = rt.workqueue(kcont.PRI_SOFTNET)
        percpu = rt.workqueue(kcont.PRI_SOFTCLOCK, percpu=True)
        failing = rt.continuation(shared, fail, 0, name="failing")
        lock = kcont.Mutex("leak")
        for n in range(1, cycles + 1):
            wq = shared if n & 1 else percpu
            kc = kcont.Continuation(wq, work, [n], lock=lock if n & 2 else None, name="cycle")
            VAR.set(n)
            kc.schedule(0)
            rt.step()
            kc.ack()
            kc.schedule(3)
            VAR.set(-n)
            kc.schedule(5)  # re-arm: replaces the deadline and the context
            kc.stop()
            kc.schedule(1, rt.cpus[1] if wq is percpu else None)
            if kc.mutex is None:
                kc.set_arg((n, "replaced"))
            else:
                with lock:
                    kc.set_arg((n, "replaced"))
            kc.destroy()  # while pending
            if n % 7 == 0:
                failing.set_arg(n)
                failing.schedule(0)
                rt.step()
            # A tick per cycle: the timer wheel's 1024 near buckets are all
            # used within the warm-up (a bucket keeps its table once used).
            rt.advance(1)
            del kc
            if n % every == 0 or n == cycles:
                gc.collect()
                traced = tracemalloc.get_traced_memory()[0] if use_tracemalloc else 0
                samples.append((n, traced, rss_bytes()))
                if top and use_tracemalloc and (len(samples) == 1 or n == cycles):
                    snapshots.append(tracemalloc.take_snapshot())
                print(
                    f"{n:>9} cycles  tracemalloc {traced / 1024:9.1f} KiB  rss {rss_bytes() / 1024:9.1f} KiB"
                    f"  ({time.perf_counter() - start:.1f} s)",
                    flush=True,
                )
        failing.destroy()
    if len(snapshots) == 2:
        print(f"largest growths from the first checkpoint to the last (top {top}):")
        for stat in snapshots[1].compare_to(snapshots[0], "lineno")[:top]:
            print(f"  {stat}")
    expected_failures = cycles // 7
    problems: list[str] = []
    if handled[0] != expected_failures:
        problems.append(f"the handler saw {handled[0]} failures, not {expected_failures}")
    if ran[0] != cycles:
        problems.append(f"{ran[0]} invocations ran, not {cycles}")
    if len(samples) >= 3:
        _, traced0, rss0 = samples[0]  # after warm-up
        _, traced1, rss1 = samples[-1]
        growth = (traced1 - traced0) / 1024
        rss_growth = (rss1 - rss0) / 1024
        print(f"growth after warm-up: tracemalloc {growth:+.1f} KiB, rss {rss_growth:+.1f} KiB")
        if use_tracemalloc and growth > max_growth_kib:
            problems.append(f"traced memory grew by {growth:.1f} KiB (bound {max_growth_kib} KiB)")
        if rss0 and rss_growth > max_rss_growth_kib:
            problems.append(f"RSS grew by {rss_growth:.1f} KiB (bound {max_rss_growth_kib} KiB)")
    print(f"implementation: {kcont.implementation}; {cycles} cycles in {time.perf_counter() - start:.1f} s")
    for problem in problems:
        print(f"FAIL: {problem}")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=float, default=1e6, help="number of cycles (default: 1e6)")
    parser.add_argument(
        "--no-tracemalloc", action="store_true", help="do not trace allocations (for valgrind)"
    )
    parser.add_argument("--max-growth-kib", type=int, default=64, help="traced growth allowed after warm-up")
    parser.add_argument(
        "--max-rss-growth-kib", type=int, default=1024, help="RSS growth allowed after warm-up"
    )
    parser.add_argument("--top", type=int, default=0, help="print the N allocation sites that grew most")
    args = parser.parse_args()
    return run(
        int(args.cycles), not args.no_tracemalloc, args.max_growth_kib, args.max_rss_growth_kib, args.top
    )


if __name__ == "__main__":
    sys.exit(main())

"""The timer wheel's cost with many far timers armed: re-arm, expiry, next_deadline.

Usage: python benchmarks/far_timers.py [SRC_DIR] [--sizes 1e3,1e5,1e6] [--no-threaded]

SRC_DIR is the kcont package's parent (default ``src``): point it at a copy of
an older tree to compare.  For each size N, N "far" timers are armed with
deadlines spread at random between 2**20 and 2**40 ticks (nearly one occupied
1024-tick epoch per timer, none of them due during the run), then:

* re-arm: one pending timer re-armed (to the same tick, to another tick of
  the current epoch, to another far epoch), on the bare wheel and through
  ``Continuation.schedule`` on a ``SimRuntime``;
* next_deadline: with nothing due in the current epoch (the timer thread's
  question after each wake-up);
* expiry: 2,000 timers due over the next 200,000 ticks expired the way the
  tickless timer thread does (``expire_until(next_deadline())``), and 20,000
  timers due over the next 20,000 ticks expired one tick at a time (the
  simulator's ``advance``);
* threaded: a 1-tick periodic timer on a ``Runtime`` at hz=1000 for one second
  (N <= 1e5 only): how many times it ran, and the timer thread's wake-ups.

Figures are thread CPU time (less disturbed than wall time on a shared
machine), best of several rounds, per operation.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Callable
from typing import Any

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("src", nargs="?", default="src", help="the kcont package's parent directory")
parser.add_argument("--sizes", default="1e3,1e5,1e6", help="far timers armed, comma-separated")
parser.add_argument("--no-threaded", action="store_true", help="skip the threaded runtime measurement")
parser.add_argument("--rounds", type=int, default=5, help="rounds per figure (the best is kept)")
ARGS = parser.parse_args()
sys.path.insert(0, ARGS.src)

import kcont  # noqa: E402
from kcont._core.timerwheel import NEAR_SIZE, TimerWheel  # noqa: E402

FAR_LOW = 1 << 20
FAR_HIGH = 1 << 40
REARM_OPS = 200_000
EXPIRE_TIMERS = 20_000
TICKLESS_TIMERS = 2_000
TICKLESS_SPAN = 200_000


class Entry:
    """The slots the wheel uses on a continuation."""

    __slots__ = ("_bucket", "_deadline")

    def __init__(self) -> None:
        self._bucket: Any = None
        self._deadline = 0


def best_ns(run: Callable[[], int], rounds: int) -> float:
    """Best thread CPU time per operation of ``run`` (which returns its operation count)."""
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        start = time.thread_time_ns()
        ops = run()
        best = min(best, (time.thread_time_ns() - start) / ops)
    return best


def far_deadlines(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(FAR_LOW, FAR_HIGH) for _ in range(n)]


def fill(wheel: TimerWheel, deadlines: list[int]) -> list[Entry]:
    entries = [Entry() for _ in deadlines]
    for entry, deadline in zip(entries, deadlines, strict=True):
        wheel.arm(entry, deadline)
    return entries


def measure_rearm(wheel: TimerWheel, rounds: int) -> dict[str, float]:
    entry: Any = Entry()
    base = wheel.now
    wheel.arm(entry, base + 500)
    near = [base + 1 + (i * 37) % (NEAR_SIZE - 1) for i in range(REARM_OPS)]
    # Deadlines in 1,000 distinct far epochs, none of them occupied by the fill.
    far = [(1 << 45) + (i % 1000) * NEAR_SIZE + 5 for i in range(REARM_OPS)]

    def same() -> int:
        arm, d = wheel.arm, base + 500
        for _ in range(REARM_OPS):
            arm(entry, d)
        return REARM_OPS

    def near_ticks() -> int:
        arm = wheel.arm
        for d in near:
            arm(entry, d)
        return REARM_OPS

    def far_epochs() -> int:
        arm = wheel.arm
        for d in far:
            arm(entry, d)
        return REARM_OPS

    result = {
        "re-arm, same tick (wheel)": best_ns(same, rounds),
        "re-arm, near ticks (wheel)": best_ns(near_ticks, rounds),
        "re-arm, far epochs (wheel)": best_ns(far_epochs, rounds),
    }
    wheel.disarm(entry)
    return result


def measure_schedule(deadlines: list[int], rounds: int) -> dict[str, float]:
    """Re-arm through Continuation.schedule; the far timers are bare entries in
    the runtime's wheel (never due here), which is all the wheel sees of them."""
    rt = kcont.SimRuntime(ncpu=1)
    keep = fill(rt._wheel, deadlines)
    kc = rt.continuation(kcont.wq_softclock, lambda arg, k: None, None)

    def same() -> int:
        schedule = kc.schedule
        for _ in range(REARM_OPS):
            schedule(30_000)
        return REARM_OPS

    def varying() -> int:
        schedule = kc.schedule
        for i in range(REARM_OPS):
            schedule(1 + (i & 511))
        return REARM_OPS

    result = {
        "re-arm, same tick (schedule)": best_ns(same, rounds),
        "re-arm, near ticks (schedule)": best_ns(varying, rounds),
    }
    kc.stop()
    for entry in keep:
        rt._wheel.disarm(entry)
    return result


def measure_next_deadline(wheel: TimerWheel, rounds: int) -> float:
    calls = 1
    while True:  # enough calls for a measurable time, not more
        start = time.thread_time_ns()
        for _ in range(calls):
            wheel.next_deadline()
        if time.thread_time_ns() - start > 20_000_000 or calls >= 100_000:
            break
        calls *= 4

    def run() -> int:
        nd = wheel.next_deadline
        for _ in range(calls):
            nd()
        return calls

    return best_ns(run, rounds)


def measure_expiry(wheel: TimerWheel, rounds: int) -> dict[str, float]:
    rng = random.Random(7)

    def tickless() -> int:
        base = wheel.now
        for _ in range(TICKLESS_TIMERS):
            wheel.arm(Entry(), base + rng.randrange(1, TICKLESS_SPAN))
        out: list[Any] = []
        end = base + TICKLESS_SPAN
        gc.collect()
        start = time.thread_time_ns()
        nd, expire = wheel.next_deadline, wheel.expire_until
        while wheel.now < end:
            deadline = nd()
            expire(end if deadline is None or deadline > end else deadline, out)
        elapsed = time.thread_time_ns() - start
        assert len(out) == TICKLESS_TIMERS, len(out)
        return elapsed

    def every_tick() -> int:
        base = wheel.now
        for _ in range(EXPIRE_TIMERS):
            wheel.arm(Entry(), base + rng.randrange(1, EXPIRE_TIMERS))
        out: list[Any] = []
        gc.collect()
        start = time.thread_time_ns()
        expire = wheel.expire_until
        for t in range(base + 1, base + EXPIRE_TIMERS):
            expire(t, out)
        elapsed = time.thread_time_ns() - start
        assert len(out) == EXPIRE_TIMERS, len(out)
        return elapsed

    return {
        "expiry, tickless (per timer)": repeat(tickless, rounds) / TICKLESS_TIMERS,
        "expiry, every tick (per timer)": repeat(every_tick, rounds) / EXPIRE_TIMERS,
    }


def repeat(run: Callable[[], int], rounds: int) -> int:
    """Best of ``rounds`` runs, or fewer once they took 5 s (a slow wheel)."""
    best = spent = run()
    for _ in range(rounds - 1):
        if spent > 5_000_000_000:
            break
        elapsed = run()
        best, spent = min(best, elapsed), spent + elapsed
    return best


def measure_threaded(n: int) -> tuple[int, int]:
    """Runs of a 1-tick periodic timer in one second at hz=1000, and timer thread wake-ups."""
    runs = 0

    def periodic(arg: object, kc: kcont.Continuation[Any]) -> None:
        nonlocal runs
        runs += 1
        kc.ack()
        kc.schedule(1)

    rng = random.Random(3)
    with kcont.Runtime(ncpu=1, hz=1000) as rt:
        far = [rt.continuation(kcont.wq_softclock, lambda arg, k: None, None) for _ in range(n)]
        for kc in far:
            kc.schedule(rng.randrange(1 << 22, 1 << 40))
        tick = rt.continuation(kcont.wq_softclock, periodic, None)
        wakeups = rt.stats()["timer_wakeups"]
        tick.schedule(1)
        time.sleep(1.0)
        tick.stop()
        seen = runs
        wakeups = rt.stats()["timer_wakeups"] - wakeups
        for kc in far:
            kc.stop()
    return seen, wakeups


def main() -> None:
    sizes = [int(float(s)) for s in ARGS.sizes.split(",")]
    print(f"kcont from {ARGS.src}; Python {sys.version.split()[0]}; best of {ARGS.rounds}, thread CPU time")
    rows: dict[str, dict[int, str]] = {}
    for n in sizes:
        deadlines = far_deadlines(n, seed=n)
        wheel = TimerWheel()
        keep = fill(wheel, deadlines)
        figures = measure_rearm(wheel, ARGS.rounds)
        figures.update(measure_schedule(deadlines, ARGS.rounds))
        figures["next_deadline (nothing near)"] = measure_next_deadline(wheel, ARGS.rounds)
        figures.update(measure_expiry(wheel, max(1, min(ARGS.rounds, 3))))
        assert len(wheel) == n
        for name, ns in figures.items():
            rows.setdefault(name, {})[n] = f"{ns:,.0f} ns"
        if not ARGS.no_threaded and n <= 100_000:
            runs, wakeups = measure_threaded(n)
            rows.setdefault("threaded: 1-tick timer runs in 1 s", {})[n] = f"{runs:,}"
            rows.setdefault("threaded: timer thread wake-ups", {})[n] = f"{wakeups:,}"
        del keep, wheel
        gc.collect()
    width = max(len(name) for name in rows)
    print(f"  {'far timers armed':{width}s}" + "".join(f"{n:>14,}" for n in sizes))
    for name, cells in rows.items():
        print(f"  {name:{width}s}" + "".join(f"{cells.get(n, '-'):>14s}" for n in sizes))


if __name__ == "__main__":
    main()

"""The threaded stress run: :func:`run_stress` starts a :class:`kcont.Runtime`,
runs the producer threads for the configured duration, shuts down with a
timeout and reconciles the ledger.  Bounded in time whatever kcont does.

Locking: the producer threads share only the harness (see
:mod:`kcont.stress.ledger`); ``stop`` is set from the SIGINT handler and
read by the joining thread, which then sets ``harness.stopping``.
"""

from __future__ import annotations

import faulthandler
import random
import threading
import time
import traceback
from collections.abc import Callable

from .._core.runtime import RuntimeCore, ShutdownAccount
from ..threaded import Runtime
from .config import StressConfig
from .ledger import COUNTERS
from .report import StressResult
from .workload import Harness

# -- the threaded run ------------------------------------------------------------------


def run_stress(
    config: StressConfig,
    *,
    progress: Callable[[str], None] | None = None,
    progress_interval: float = 10.0,
    stop: threading.Event | None = None,
) -> StressResult:
    """Run the threaded stress harness and return its figures and violations.

    ``progress`` receives a line every ``progress_interval`` seconds of load.
    Setting ``stop`` ends the load early: the producers stop, and the run
    still shuts down and checks its accounting (the result says it was
    interrupted).

    Bounded in time whatever kcont does: producers are joined with a
    deadline, the shutdown has a timeout, and a faulthandler dump of every
    thread is armed for ``hang_timeout`` seconds (default: duration + 120)."""
    hang = config.hang_timeout if config.hang_timeout is not None else config.duration + 120.0
    faulthandler.dump_traceback_later(hang, exit=False)
    rng = random.Random(config.seed)
    cancel = config.shutdown_cancel if config.shutdown_cancel is not None else rng.random() < 0.5
    rt = Runtime(ncpu=config.ncpu, hz=config.hz, name=f"stress{config.seed}")
    started = time.monotonic()
    account: ShutdownAccount | None = None
    interrupted = False
    # Entered as the current runtime, but left without Runtime.__exit__: its
    # shutdown() has no timeout, and the harness must end even if kcont hangs.
    rt.__enter__()
    try:
        harness = Harness(rt, config)
        interrupted = _load(harness, config, started, progress, progress_interval, stop)
        harness.stopping = True
        harness._reap(harness._counters_for_thread())
        harness.final_check_before_shutdown()
        harness.check_release_busy()
        harness.closing = True
        account = rt.shutdown(cancel=cancel, timeout=60)
        figures = harness.finish(account, rt.stats())
        harness.teardown()
        figures = harness.figures() | {k: v for k, v in figures.items() if k not in COUNTERS}
    finally:
        if not rt.closed or account is None:
            rt.shutdown(cancel=True, timeout=10)
        RuntimeCore.__exit__(rt)
        faulthandler.cancel_dump_traceback_later()
    figures["violations"] = harness.violation_count
    return StressResult(
        config=config,
        seconds=time.monotonic() - started,
        figures=figures,
        account=account,
        violations=harness.violations,
        violation_count=harness.violation_count,
        runtime="threaded Runtime",
        interrupted=interrupted,
    )


def _load(
    harness: Harness,
    config: StressConfig,
    started: float,
    progress: Callable[[str], None] | None,
    interval: float,
    stop: threading.Event | None,
) -> bool:
    """The producer threads, for ``config.duration`` seconds or until ``stop``
    is set; returns whether ``stop`` ended the load."""
    stop_at = time.monotonic() + config.duration
    errors: list[str] = []

    def producer(index: int) -> None:
        prng = random.Random(config.seed * 7919 + index)
        try:
            while not harness.stopping and time.monotonic() < stop_at:
                harness.producer_op(prng)
        except BaseException:
            errors.append(traceback.format_exc())

    threads = [
        threading.Thread(target=producer, args=(i,), name=f"stress-producer{i}", daemon=True)
        for i in range(config.threads)
    ]
    for t in threads:
        t.start()
    next_report = time.monotonic() + interval
    interrupted = False
    while any(t.is_alive() for t in threads):
        if stop is not None and stop.is_set() and not interrupted:
            interrupted = True
            harness.stopping = True  # the producers finish their operation and return
            stop_at = min(stop_at, time.monotonic())
        for t in threads:
            t.join(0.1)
        if progress is not None and time.monotonic() >= next_report:
            next_report += interval
            f = harness.figures()
            progress(
                f"  {time.monotonic() - started:6.0f} s  {f['ops'] + f['fn_ops']} ops  "
                f"{f['starts']} invocations  {f['violations']} violations"
            )
        if time.monotonic() > stop_at + 60:
            harness.violation(None, "producer threads still running 60 s after the end (hang?)")
            harness.stopping = True
            break
    for text in errors:
        harness.violation(None, f"a producer raised:\n{text}")
    return interrupted

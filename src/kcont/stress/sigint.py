"""``python -m kcont stress --sigint``: Ctrl-C at random instants.

What it does
    A helper thread sends SIGINT to the main thread at random instants (on
    average every ``mean_interval`` seconds) while the main thread
    schedules, re-arms, stops, acknowledges, halts, flushes, waits for idle
    and takes continuation locks, at random, on a threaded runtime.  The main
    thread catches each KeyboardInterrupt and goes on.  At the end it checks:

    * every scheduling accounted for, exactly: on the queues used only by
      immediate schedulings, each queue's committed invocations equal those
      run plus those a stop (or halt) cancelled, with nothing left queued;
      over the runtime, the invocations counted by kcont equal those the
      functions saw, and the shutdown account agrees;
    * every continuation's flags match where it is (a QUEUED continuation is
      on a run queue, a PENDING one in the timer wheel);
    * no Mutex left locked, every worker alive, and the shutdown completes
      promptly;
    * interrupts surfaced (at least one, never more than were sent).

    Ctrl-C cannot end this mode early (it is the load): ``--duration`` does.

Locking
    The main thread owns the run; the sender thread only reads ``_Sender.stop``
    (an Event) and counts what it sent (read after it is joined).  Each
    continuation's own counter is written only by its invocations, which
    never overlap.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._core import ki
from .._core.mutex import Mutex
from .._core.workqueue import WQ_PERCPU
from ..errors import BusyError, HaltTimeoutError, KcontError
from ..threaded import Runtime

SCHEMA = "kcont.stress.sigint/1"
_SHUTDOWN_LIMIT = 3.0  # seconds: "promptly"


@dataclass
class SigintResult:
    """Figures and violations of a ``--sigint`` run."""

    seconds: float
    sent: int
    caught: int
    ops: int
    invoked: int
    shutdown_seconds: float
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        verdict = "OK" if self.ok else f"{len(self.violations)} VIOLATIONS"
        lines = [
            f"kcont stress --sigint: {verdict}: {self.seconds:.1f} s, {self.sent} SIGINTs sent, "
            f"{self.caught} KeyboardInterrupts caught, {self.ops} operations, {self.invoked} invocations, "
            f"shutdown in {self.shutdown_seconds:.3f} s"
        ]
        lines.extend(f"  violation: {v}" for v in self.violations)
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "ok": self.ok,
            "seconds": self.seconds,
            "sigints_sent": self.sent,
            "interrupts_caught": self.caught,
            "ops": self.ops,
            "invoked": self.invoked,
            "shutdown_seconds": self.shutdown_seconds,
            "violations": list(self.violations),
        }


class _Sender(threading.Thread):
    """Sends SIGINT to the main thread at random instants until stopped."""

    def __init__(self, main: int, mean_interval: float, seed: int) -> None:
        super().__init__(name="kcont/stress/sigint", daemon=True)
        self.main = main
        self.mean_interval = mean_interval
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.sent = 0

    def run(self) -> None:
        while not self.stop.wait(self.rng.expovariate(1.0 / self.mean_interval)):
            signal.pthread_kill(self.main, signal.SIGINT)
            self.sent += 1


def run_sigint(
    duration: float, seed: int = 1, ncpu: int = 2, hz: int = 1000, mean_interval: float = 0.002
) -> SigintResult:
    """Run the ``--sigint`` mode on the main thread (see module docstring).

    Raises:
        RuntimeError: not called from the main thread, SIGINT has a handler
            of the caller's own, or the platform cannot send SIGINT to a
            thread.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("stress --sigint runs on the main thread (signals are delivered there)")
    if not hasattr(signal, "pthread_kill"):
        raise RuntimeError("stress --sigint needs signal.pthread_kill (POSIX)")
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler and not ki.installed():
        raise RuntimeError(
            "stress --sigint needs Python's default SIGINT handler (kcont protects only that one)"
        )
    rng = random.Random(seed)
    rt = Runtime(ncpu=ncpu, hz=hz, name="sigint")
    counts: list[int] = []

    def counting(index: int, sleep: float) -> Callable[[int, Any], None]:
        def func(arg: int, kc: Any) -> None:
            counts[arg] += 1  # this continuation's invocations never overlap
            if sleep:
                time.sleep(sleep)

        return func

    # Immediate schedulings only: their queues' counters balance exactly.
    soft_now = rt.acquire_workqueue(200, WQ_PERCPU)
    thread_now = rt.acquire_workqueue(40, 0)
    timers = rt.acquire_workqueue(150, WQ_PERCPU)
    lock = Mutex("sigint")
    kcs: list[Any] = []
    immediate: list[Any] = []
    timed: list[Any] = []
    for i in range(12):
        counts.append(0)
        wq, group, sleep = [
            (soft_now, immediate, 0.0),
            (thread_now, immediate, 0.0005),
            (timers, timed, 0.0),
        ][i % 3]
        kc = rt.continuation(wq, counting(i, sleep), i, lock=lock if i % 4 == 0 else None, name=f"sig{i}")
        kcs.append(kc)
        group.append(kc)

    def operate() -> None:
        op = rng.random()
        if op < 0.30:
            kc = rng.choice(immediate)
            try:
                kc.schedule(cpu=rng.choice(rt.cpus) if kc.wq.percpu else None)
            except BusyError:
                pass
        elif op < 0.45:
            kc = rng.choice(timed)
            try:
                kc.schedule(rng.randint(0, 5), ack=rng.random() < 0.5)
            except BusyError:
                pass
        elif op < 0.65:
            rng.choice(kcs).stop()
        elif op < 0.70:
            rng.choice(timed).ack()
        elif op < 0.78:
            rng.choice(kcs).halt(timeout=5)
        elif op < 0.86:
            rng.choice(kcs).flush(timeout=5)
        elif op < 0.90:
            rt.wait_idle(timeout=5)
        else:
            with lock:
                pass

    ops = 0
    caught = 0
    violations: list[str] = []
    sender = _Sender(threading.get_ident(), mean_interval, seed)
    started = time.monotonic()
    end = started + duration
    # The harness's own loop runs with SIGINT blocked, and each operation
    # with it deliverable (_exposed): an interrupt landing between two
    # statements of the loop itself would escape every handler and end the
    # run (and a test runner around it), which says nothing about kcont.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGINT)
    try:
        sender.start()
        try:
            while time.monotonic() < end:
                try:
                    surfaced = _exposed(operate)
                except (HaltTimeoutError, TimeoutError) as exc:
                    violations.append(f"a wait timed out under interrupts: {exc}")
                    continue
                caught += surfaced
                ops += not surfaced
        finally:
            sender.stop.set()
            sender.join()
        seconds = time.monotonic() - started
        for _ in range(3):  # a last interrupt, deferred or pending, surfaces here
            caught += _exposed(_pause)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    try:
        violations += _check(rt, kcs, counts, lock, (soft_now, thread_now))
    except KcontError as exc:
        violations.append(f"the runtime no longer works: {exc!r}")
    invoked = rt.stats()["totals"]["invoked"]
    shutdown_started = time.monotonic()
    account = rt.shutdown(timeout=_SHUTDOWN_LIMIT)
    shutdown_seconds = time.monotonic() - shutdown_started
    if shutdown_seconds > _SHUTDOWN_LIMIT:
        violations.append(f"shutdown took {shutdown_seconds:.2f} s")
    if account.ran != sum(counts) or account.unfinished:
        violations.append(f"shutdown account {account} does not match {sum(counts)} invocations seen")
    if caught == 0 or caught > sender.sent:
        violations.append(f"{caught} interrupts surfaced for {sender.sent} sent")
    return SigintResult(seconds, sender.sent, caught, ops, invoked, shutdown_seconds, violations)


_SIGINT = {signal.SIGINT}


def _block() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGINT)


def _checkpoint() -> None:
    """A function call: the interpreter raises a KeyboardInterrupt whose
    signal already arrived at the latest when it enters a function."""


def _pause() -> None:
    time.sleep(0.05)


def _exposed(operate: Callable[[], None]) -> int:
    """Run ``operate()`` with SIGINT deliverable (it is blocked around);
    return how many KeyboardInterrupts surfaced (0, 1, or 2 when a second
    one came before the first's handler blocked SIGINT again).  Returns with
    SIGINT blocked and none left to raise."""
    try:
        try:
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGINT)
                operate()
            finally:
                _block()
                _checkpoint()
        except KeyboardInterrupt:
            _block()
            _checkpoint()
            return 1
    except KeyboardInterrupt:
        _block()
        _checkpoint()
        return 2
    return 0


def _check(
    rt: Runtime, kcs: list[Any], counts: list[int], lock: Mutex, ledger_queues: tuple[Any, ...]
) -> list[str]:
    """The checks once the interrupts stopped (see module docstring)."""
    problems: list[str] = []
    if lock.locked():
        problems.append("the continuations' Mutex was left locked")
    for kc in kcs:
        kc.stop()  # the timers: nothing left to fire
    rt.wait_idle(timeout=10)
    with rt._lock:
        queued = {id(e) for wq in rt._workqueues for rq in wq.unique_rqs() for e in _entries(rq)}
        armed = {id(kc) for kc in rt._wheel}
        for kc in kcs:
            if kc.queued != (id(kc) in queued) or kc.pending != (id(kc) in armed):
                problems.append(f"{kc!r}: flags do not match the run queues and the wheel")
        for wq in ledger_queues:
            for rq in wq.unique_rqs():
                if rq.scheduled != rq.invoked + rq.stopped + rq.depth():
                    problems.append(
                        f"{wq.name}: {rq.scheduled} committed != {rq.invoked} run + {rq.stopped} cancelled "
                        f"+ {rq.depth()} queued"
                    )
        workers = list(rt._workers)
    for worker in workers:
        if worker.thread is None or not worker.thread.is_alive():
            problems.append(f"worker {worker.thread} is dead")
    per_cpu = rt.stats()["workers"]
    if any(w["soft"] != 1 or w["thread"] < 1 for w in per_cpu):
        problems.append(f"workers missing: {per_cpu}")
    invoked = rt.stats()["totals"]["invoked"]
    if invoked != sum(counts):
        problems.append(f"kcont counted {invoked} invocations, the functions {sum(counts)}")
    return problems


def _entries(rq: Any) -> list[Any]:
    entries = list(rq.fifo)
    for sub in (*rq.parked.values(), *rq.woken.values()):
        entries.extend(sub)
    return entries

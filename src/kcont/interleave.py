"""Deterministic interleavings of real threads on the simulated runtime.

What it owns
    :class:`InterleavedSim`, a :class:`~kcont.SimRuntime` whose continuations
    run on worker threads, one per (CPU, band) as on the threaded runtime, and
    whose scenarios run *user threads* (:meth:`InterleavedSim.spawn`).  They
    are real ``threading.Thread`` objects, but exactly one of them runs at any
    time: a thread hands the baton back only at a *preemption point*:

    * an explicit :meth:`InterleavedSim.yield_now` in user code;
    * a preemption point inside the core's waits (``RuntimeCore._preempt``,
      right after ``halt``, ``flush`` or ``destroy`` released the state lock
      or an interlock);
    * a wait that must sleep (``_wait_locked``), a busy
      :class:`CooperativeMutex`, and the end of the thread's work.

    The controller (the thread that calls :meth:`InterleavedSim.run_threads`)
    then draws from a seeded ``random.Random`` what happens next: resume one
    thread, start a dispatch on an idle worker whose CPU has work in its band,
    or advance virtual time by one tick.  The same seed gives the same
    interleaving, hence the same trace.

    Waits are a condition variable, as on the threaded runtime: a thread
    waiting in ``_wait_locked`` sleeps until a notification
    (``_notify_ended_locked``) and only then re-checks its predicate.  After
    every step the controller evaluates the predicate of each sleeping waiter:
    one that is true means a transition satisfied it without notifying, a
    *lost wake-up* (on real threads that waiter would sleep for ever).

Invariants
    * At most one managed thread runs; the others are parked on their own
      semaphore, and the controller waits on ``_ctl`` while one runs.
    * No thread parks with the state lock held: preemption points are called
      with no lock of the runtime held, and ``_wait_locked`` releases it first.

Locking
    The baton orders every access to the scheduling fields (``_Thread.state``,
    ``_threads``, ``_current``, ``_notified``): only the thread holding it
    touches them, and each hand-over is a semaphore release/acquire pair, so
    nothing relies on the GIL.  The runtime's own fields follow the core's
    rules (the state lock).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

from ._core.continuation import Continuation, expire_locked
from ._core.dispatch import dispatch
from ._core.mutex import Mutex
from ._core.runtime import _tls
from ._core.workqueue import ALL_BANDS
from .errors import SimDeadlockError
from .sim import SimRuntime

__all__ = ["CooperativeMutex", "InterleavedSim", "ThreadStuckError"]

_get_ident = threading.get_ident


class ThreadStuckError(SimDeadlockError):
    """A managed thread neither reached a preemption point nor ended in time:
    it blocks on something the interleaving cannot see (a real deadlock)."""


class _Thread:
    """A managed thread.  ``state``: ``runnable`` (parked at a preemption
    point), ``waiting`` (asleep in a wait until notified), ``idle`` (a worker
    between dispatches), ``running`` or ``done``."""

    __slots__ = ("band", "cpu", "error", "ident", "name", "sem", "state", "waiting_for")

    def __init__(self, name: str, state: str) -> None:
        self.name = name
        self.state = state
        self.sem = threading.Semaphore(0)
        self.error: BaseException | None = None
        self.waiting_for: tuple[Callable[[], bool], str] | None = None
        self.ident: int | None = None
        self.cpu: Any = None
        self.band = -1


class InterleavedSim(SimRuntime):
    """A simulated runtime whose continuations and user threads interleave at
    preemption points, as drawn by ``seed`` (see the module docstring).

    Args:
        ncpu, hz, trace, name: as :class:`~kcont.SimRuntime`.
        seed: draws every scheduling decision.
        stuck_timeout: seconds a managed thread may run without reaching a
            preemption point before :class:`ThreadStuckError` is raised.
    """

    def __init__(
        self,
        ncpu: int = 2,
        hz: int = 100,
        seed: int = 0,
        *,
        trace: bool = False,
        name: str | None = None,
        stuck_timeout: float = 10.0,
        p_tick: float = 0.1,
    ) -> None:
        super().__init__(ncpu, hz, None, trace=trace, name=name)
        self._sched_rng = random.Random(seed)
        self.seed = seed
        self._ctl = threading.Semaphore(0)
        self._threads: list[_Thread] = []
        self._current: _Thread | None = None
        self._stuck_timeout = stuck_timeout
        self._p_tick = p_tick
        self._closing = False
        self.lost_wakeups: list[str] = []
        self.decisions: list[str] = []
        for cpu in self.cpus:
            for band in ALL_BANDS:
                self._start_worker(cpu, band)

    # -- managed threads -----------------------------------------------------

    def spawn(self, fn: Callable[[], object], name: str) -> None:
        """Add a user thread running ``fn()``; it first runs when drawn."""
        t = _Thread(name, "runnable")

        def body() -> None:
            t.sem.acquire()
            try:
                fn()
            except BaseException as exc:  # reported by run_threads
                t.error = exc
            finally:
                t.state = "done"
                self._current = None
                self._ctl.release()

        self._launch(t, body)

    def _start_worker(self, cpu: Any, band: int) -> None:
        t = _Thread(f"cpu{cpu.index}/band{band}", "idle")
        t.cpu = cpu
        t.band = band

        def body() -> None:
            _tls.cpu = cpu
            t.sem.acquire()
            while not self._closing:
                try:
                    dispatch(self, cpu, (band,), 1)
                except BaseException as exc:  # a function's BaseException: kept, reported
                    t.error = exc
                t.state = "idle"
                self._current = None
                self._ctl.release()
                t.sem.acquire()

        self._launch(t, body)

    def _launch(self, t: _Thread, body: Callable[[], None]) -> None:
        thread = threading.Thread(target=body, name=f"kcont/{self.name}/{t.name}", daemon=True)
        self._threads.append(t)
        thread.start()
        t.ident = thread.ident  # read by the thread only once resumed (after a semaphore hand-over)

    def _managed(self) -> _Thread | None:
        t = self._current
        return t if t is not None and t.ident == _get_ident() else None

    def _park(self, t: _Thread, state: str) -> None:
        """Hand the baton back to the controller and sleep until resumed."""
        t.state = state
        self._current = None
        self._ctl.release()
        t.sem.acquire()

    def yield_now(self, where: str = "yield") -> None:
        """A preemption point: on a managed thread, let the controller draw
        what runs next.  Elsewhere (the controller itself), nothing."""
        t = self._managed()
        if t is not None:
            self._park(t, "runnable")

    def _preempt(self, where: str) -> None:
        self.yield_now(where)

    # -- waits as a condition variable ---------------------------------------

    def _wait_locked(self, done: Callable[[], bool], timeout: float | None, what: str) -> None:
        t = self._managed()
        if t is None:
            super()._wait_locked(done, timeout, what)  # the controller steps, as a SimRuntime
            return
        self._ended_waiters += 1
        try:
            while not done():
                t.waiting_for = (done, what)
                self._lock.release()
                try:
                    self._park(t, "waiting")
                finally:
                    self._lock.acquire()
        finally:
            t.waiting_for = None
            self._ended_waiters -= 1

    def _notify_ended_locked(self) -> None:
        for t in self._threads:
            if t.state == "waiting":
                t.state = "runnable"

    # -- the controller --------------------------------------------------------

    def _resume(self, t: _Thread) -> None:
        self._current = t
        t.state = "running"
        t.sem.release()
        if not self._ctl.acquire(True, self._stuck_timeout):
            raise ThreadStuckError(
                f"{t.name} ran {self._stuck_timeout} s without reaching a preemption point "
                f"(blocked outside the interleaving: a deadlock?)"
            )

    def _tick(self) -> None:
        expired: list[Continuation[Any]] = []
        with self._lock:
            self._ticks += 1
            self._wheel.expire_until(self._ticks, expired)
            for kc in expired:
                expire_locked(kc, self._ticks)
                if self._trace is not None:
                    self._record("expire", kc, kc._rq.cpu)

    def _check_waiters(self) -> None:
        with self._lock:
            for t in self._threads:
                if t.state == "waiting" and t.waiting_for is not None:
                    done, what = t.waiting_for
                    if done():
                        self.lost_wakeups.append(
                            f"lost wake-up at tick {self._ticks}: {t.name} sleeps in {what} "
                            "although what it waits for is done"
                        )
                        t.state = "runnable"  # report once, then let it go on

    def run_threads(self, max_steps: int = 2000, drain_ticks: int = 10) -> int:
        """Run the user threads and the workers to completion, drawing each
        step from the seed.  Once every user thread has ended, time still
        advances while timers are armed, for ``drain_ticks`` ticks at most
        (what fires then runs too).  Returns the number of steps.

        Raises:
            SimDeadlockError: a thread waits and nothing else can happen.
            ThreadStuckError: a thread blocked outside the interleaving.
        """
        rng = self._sched_rng
        steps = 0
        drained = 0
        while steps < max_steps:
            runnable = [t for t in self._threads if t.state == "runnable"]
            runnable += [t for t in self._threads if t.state == "idle" and t.cpu.ready[t.band]]
            users_done = all(t.state == "done" for t in self._threads if t.cpu is None)
            can_tick = len(self._wheel) > 0 and not (users_done and drained >= drain_ticks)
            if not runnable and not can_tick:
                waiting = [t for t in self._threads if t.state == "waiting"]
                if waiting:
                    assert waiting[0].waiting_for is not None
                    raise SimDeadlockError(
                        f"{waiting[0].name} waits in {waiting[0].waiting_for[1]} and nothing else can run"
                    )
                break
            steps += 1
            if can_tick and (not runnable or rng.random() < self._p_tick):
                self.decisions.append("tick")
                self._tick()
                drained += users_done
            else:
                t = runnable[rng.randrange(len(runnable))]
                self.decisions.append(t.name)
                self._resume(t)
            self._check_waiters()
        return steps

    def unfinished(self) -> list[str]:
        """The user threads that have not ended, with where they are."""
        return [
            f"{t.name} (asleep in {t.waiting_for[1]})"
            if t.waiting_for is not None
            else f"{t.name} ({t.state})"
            for t in self._threads
            if t.cpu is None and t.state != "done"
        ]

    def errors(self) -> list[tuple[str, BaseException]]:
        """Exceptions that escaped a user thread or a worker."""
        return [(t.name, t.error) for t in self._threads if t.error is not None]

    def close(self) -> None:
        """End the managed threads: run what is parked at a preemption point
        to its end, then let the idle workers exit.  A thread asleep in a wait
        that can no longer end is left parked (a daemon thread)."""
        self._closing = True
        for _ in range(10_000):
            runnable = [t for t in self._threads if t.state == "runnable"]
            if not runnable:
                break
            self._resume(runnable[0])
        for t in self._threads:
            if t.state == "idle":
                t.state = "done"
                t.sem.release()


class CooperativeMutex(Mutex):
    """A :class:`~kcont.Mutex` for user code on an :class:`InterleavedSim`: a
    blocking acquire that finds it busy yields until it is free, and a release
    is a preemption point (so an interlock release inside ``halt`` is one)."""

    def __init__(self, sim: InterleavedSim, name: str | None = None) -> None:
        super().__init__(name)
        self._sim = sim

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if super().acquire(False):
            return True
        if not blocking:
            return False
        if self._sim._managed() is None:
            raise SimDeadlockError(f"{self!r} is busy and the controller cannot wait for it")
        while not super().acquire(False):
            self._sim.yield_now(f"{self.name} busy")
        return True

    def release(self) -> None:
        super().release()
        self._sim.yield_now(f"{self.name} released")

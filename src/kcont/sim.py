"""SimRuntime: virtual CPUs and virtual ticks on the calling thread.

What it owns
    A deterministic runtime for tests, teaching and prototyping.  Nothing runs
    until it is stepped: :meth:`SimRuntime.step` runs one continuation on one
    CPU, :meth:`SimRuntime.run_until_idle` runs everything ready at the current
    tick, :meth:`SimRuntime.advance` moves time one tick at a time and runs
    what expires at each tick.  Which CPU steps next is round-robin, or drawn
    from a ``random.Random(seed)``: the same seed always gives the same
    interleaving, and so the same trace.

    It shares the state machine, the ordering rules, the timer wheel and the
    dispatch function with the threaded runtime; only time (a counter), CPU
    choice and waiting differ.  Since everything runs on one thread, a wait
    that another thread would end can never end here: such waits raise
    :class:`~kcont.SimDeadlockError` instead of hanging.

Locking
    The state lock is the shared one (uncontended here).  ``_ticks``,
    ``_rr`` and ``_stepping`` belong to the thread that steps the runtime.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, NamedTuple

from ._core.continuation import Continuation, expire_locked
from ._core.dispatch import dispatch
from ._core.runtime import ALL_BANDS, CPU, RuntimeCore, ShutdownAccount, _tls
from .errors import InvalidArgumentError, SimDeadlockError

__all__ = ["SimRuntime", "TraceEvent"]


class TraceEvent(NamedTuple):
    """One event of a simulated run.

    ``event`` is one of ``schedule`` (detail: nticks), ``expire``, ``park``,
    ``start``, ``end``, ``raise`` (detail: the exception), ``stop``,
    ``destroy``.  ``name`` is the continuation's name (or its function's
    qualified name); ``cpu`` is the CPU index, None for a shared queue.
    """

    tick: int
    event: str
    name: str
    cpu: int | None
    detail: Any = None


class SimRuntime(RuntimeCore):
    """A deterministic runtime with ``ncpu`` virtual CPUs and virtual ticks.

    Args:
        ncpu: number of virtual CPUs.
        hz: virtual ticks per virtual second (only reported; time advances
            when :meth:`advance` is called).
        seed: None for round-robin CPU choice, or a seed for a reproducible
            pseudo-random choice.
        trace: record a trace of events (see :class:`TraceEvent`), which
            :meth:`export_trace` also writes as a Chrome trace.
        reraise: re-raise an exception of a continuation's function out of
            ``step``/``run_until_idle``/``advance`` (after counting it), so
            tests fail loudly.  Exceptions that are not ``Exception`` (such as
            ``KeyboardInterrupt``) are always re-raised.
    """

    def __init__(
        self,
        ncpu: int = 2,
        hz: int = 100,
        seed: int | None = None,
        *,
        trace: bool = False,
        reraise: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(ncpu, hz, name)
        self._ticks = 0
        self._rng = random.Random(seed) if seed is not None else None
        self.seed = seed
        self._rr = 0
        self._stepping = False
        self.reraise = reraise
        self._timer_wake = 0  # no timer thread: never told of earlier deadlines
        if trace:
            self._trace = []

    def __repr__(self) -> str:
        return f"<kcont.SimRuntime {self.name} ncpu={len(self.cpus)} tick={self._ticks}>"

    # -- runtime interface ---------------------------------------------------

    def _now(self) -> int:
        return self._ticks

    def _wait_locked(self, done: Callable[[], bool], timeout: float | None, what: str) -> None:
        # Nothing else can make progress on this thread: step the runtime
        # until the wait is over (that may run unrelated continuations).
        steps = 0
        while not done():
            steps += 1
            if steps > 1_000_000:
                raise SimDeadlockError(f"{what}: still waiting after 1000000 steps")
            if self._stepping:
                raise SimDeadlockError(f"{what}: cannot wait inside a continuation on the simulated runtime")
            self._lock.release()
            try:
                progressed = self.step() is not None
            finally:
                self._lock.acquire()
            if not progressed and not done():
                raise SimDeadlockError(f"{what}: can never end (nothing left to run at tick {self._ticks})")

    def _report_exception(self, kc: Continuation[Any], exc: BaseException) -> None:
        if self.reraise or not isinstance(exc, Exception):
            raise exc
        super()._report_exception(kc, exc)

    # -- time and stepping ---------------------------------------------------

    @property
    def ticks(self) -> int:
        """The current virtual tick."""
        return self._ticks

    def step(self, cpu: CPU | None = None) -> Continuation[Any] | None:
        """Run one ready continuation, on ``cpu`` or on the next CPU (round
        robin, or drawn from the seed) that has one.  Returns it, or None if
        no CPU could start anything.

        Raises:
            SimDeadlockError: called from inside a continuation's function.
        """
        if cpu is not None and not (cpu.__class__ is CPU and cpu.rt is self):
            raise TypeError(f"{cpu!r} is not a CPU of {self!r}")
        return self._run(cpu, 1)[1]

    def run_until_idle(self, max_steps: int = 1_000_000) -> int:
        """Run every continuation that can start at the current tick (including
        those they schedule with ``nticks=0``), one step at a time as
        :meth:`step` would.  Returns how many ran.

        Raises:
            SimDeadlockError: ``max_steps`` ran and more are ready (a
                continuation that re-schedules itself forever).
        """
        if not isinstance(max_steps, int) or isinstance(max_steps, bool):
            raise TypeError(f"max_steps must be an int, not {type(max_steps).__name__}")
        ran = self._run(None, max_steps)[0]
        if ran >= max_steps and self._ready():
            raise SimDeadlockError(f"still busy after {max_steps} steps at tick {self._ticks}")
        return ran

    def _ready(self) -> bool:
        return any(any(cpu.ready) for cpu in self.cpus)

    def _run(self, cpu: CPU | None, steps: int) -> tuple[int, Continuation[Any] | None]:
        """Up to ``steps`` steps (see :meth:`step`); returns how many ran and
        the last continuation run."""
        if self._stepping:
            raise SimDeadlockError("the simulated runtime cannot be stepped from inside a continuation")
        cpus = self.cpus
        ncpu = len(cpus)
        rng = self._rng
        ran = 0
        last = None
        self._stepping = True
        previous = _tls.cpu
        try:
            while ran < steps:
                if cpu is not None:
                    order: tuple[CPU, ...] = (cpu,)
                else:
                    start = self._rr if rng is None else rng.randrange(ncpu)
                    order = cpus[start:] + cpus[:start] if start else cpus
                for candidate in order:
                    _tls.cpu = candidate
                    kc = dispatch(self, candidate, ALL_BANDS)
                    if kc is not None:
                        break
                else:
                    break
                last = kc
                ran += 1
                self._rr = candidate.index + 1 if candidate.index + 1 < ncpu else 0
        finally:
            _tls.cpu = previous
            self._stepping = False
        return ran, last

    def advance(self, nticks: int = 1) -> int:
        """Run what is ready, then move time ``nticks`` ticks forward one at a
        time, running what expires at each tick.  Returns how many ran."""
        if not isinstance(nticks, int) or isinstance(nticks, bool):
            raise TypeError(f"nticks must be an int, not {type(nticks).__name__}")
        if nticks < 0:
            raise InvalidArgumentError(f"nticks must be >= 0, not {nticks}")
        ran = self.run_until_idle()
        expired: list[Continuation[Any]] = []
        for _ in range(nticks):
            with self._lock:
                self._ticks += 1
                self._wheel.expire_until(self._ticks, expired)
                for kc in expired:
                    expire_locked(kc, self._ticks)
                    if self._trace is not None:
                        self._record("expire", kc, kc._rq.cpu)
            expired.clear()
            ran += self.run_until_idle()
        return ran

    def next_deadline(self) -> int | None:
        """The earliest tick a timer is armed for (or a lower bound of it), or None."""
        with self._lock:
            return self._wheel.next_deadline()

    def run_until(self, predicate: Callable[[], bool], max_ticks: int = 1_000_000) -> int:
        """Advance tick by tick until ``predicate()`` is true; return the tick."""
        self.run_until_idle()
        for _ in range(max_ticks):
            if predicate():
                return self._ticks
            self.advance(1)
        raise SimDeadlockError(f"predicate still false after {max_ticks} ticks")

    # -- trace -----------------------------------------------------------------

    @property
    def trace(self) -> list[TraceEvent]:
        """The recorded events (empty unless created with ``trace=True``)."""
        if self._trace is None:
            return []
        return [TraceEvent(*event[:5]) for event in self._trace]  # the rest serves export_trace

    # -- shutdown --------------------------------------------------------------

    def shutdown(self, *, cancel: bool = False) -> ShutdownAccount:
        """Refuse new work, stop pending timers, run (or with ``cancel``,
        cancel) committed invocations, and account for everything.

        Entries that cannot run (parked on a lock the caller holds) are
        cancelled and counted as such.  Called from inside a continuation, it
        closes the runtime and returns the account of that moment; a later call
        (outside) runs what was committed and returns the final account.
        Calling it again is allowed.
        """
        if not isinstance(cancel, bool):
            raise TypeError(f"cancel must be a bool, not {type(cancel).__name__}")
        kept: list[Any] = []  # what shutdown dropped, released with no lock held
        with self._lock:
            kept += self._close_locked(cancel)
        if not self._stepping:
            self.run_until_idle()
            with self._lock:
                # What is still queued now waits for a lock nobody will
                # release while this thread is here: cancel and count it.
                kept += self._close_locked(True)
        return self._account()

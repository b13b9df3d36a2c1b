"""SimRuntime: virtual CPUs and virtual ticks on the calling thread.

What it owns
    A deterministic runtime for tests, teaching and prototyping.  Nothing runs
    until it is stepped: :meth:`SimRuntime.step` runs one continuation on one
    CPU, :meth:`SimRuntime.run_until_idle` runs everything ready at the current
    tick, :meth:`SimRuntime.advance` moves time forward and runs what expires
    at each tick.  Which CPU steps next is round-robin, or drawn from a
    ``random.Random(seed)``: the same seed always gives the same interleaving,
    and so the same trace.

Virtual time jumps
    Between two timer deadlines nothing can happen on the simulator (nothing
    is ready once ``run_until_idle`` returned, and only an expiry makes
    something ready), so :meth:`SimRuntime.advance` and
    :meth:`SimRuntime.run_until` move the clock straight from one deadline to
    the next: an hour of virtual time with one timer costs a few wheel
    operations, not 3.6 million.  The trace is exactly the one of stepping
    every tick; :attr:`SimRuntime.step_every_tick` (a testing hook) switches
    the tick-by-tick reference back on, and the test suite compares both on
    every exploration scenario.  With ``autojump=True``, a wait that cannot
    make progress at the current tick (``flush``, ``halt``, ``destroy``,
    :meth:`SimRuntime.wait_idle`) also jumps to the next deadline instead of
    raising :class:`~kcont.SimDeadlockError`.

    It shares the state machine, the ordering rules, the timer wheel and the
    dispatch function with the threaded runtime; only time (a counter), CPU
    choice and waiting differ.  Since everything runs on one thread, a wait
    that another thread would end can never end here: such waits raise
    :class:`~kcont.SimDeadlockError` instead of hanging.

Locking
    The state lock is the shared one (uncontended here).  ``_ticks`` and the
    wheel's position change together under it; ``_rr``, ``_stepping``,
    ``_stepper`` and ``_wakeups`` belong to the thread that steps the runtime.

After os.fork()
    A simulated runtime has no threads of its own: in the child it goes on as
    a copy, stepped by the child's thread.  Unless a thread of the parent
    other than the one that forked was stepping it: that thread does not
    exist in the child, and the continuation it was running would stay
    RUNNING for ever, so the child's copy refuses every use with
    :class:`~kcont.ForkedRuntimeError`, as a threaded runtime does.

Interrupts
    The simulator runs on the caller's thread, usually the main one: its
    methods that take the state lock, and the dispatch function, are
    ``@ki.protected`` (a KeyboardInterrupt arriving in them is raised once
    they are out of their critical section), but a continuation's function
    is user code: an interrupt arriving there is raised at once, inside it,
    and re-raised by the step, as before.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

from ._core import ki
from ._core.continuation import Continuation, expire_locked
from ._core.dispatch import dispatch, reference_dispatch
from ._core.runtime import ALL_BANDS, CPU, ForkedLock, RuntimeCore, ShutdownAccount, _tls, check_timeout
from ._core.timerwheel import NEAR_SIZE
from .errors import InvalidArgumentError, SimDeadlockError

__all__ = ["SimRuntime", "TraceEvent"]

# The dispatch function runs on the main thread here: its critical sections
# are protected (a continuation's function it calls is not: an interrupt
# there is raised at once, as before).  The compiled one has no bytecode
# between its own steps, and the Python helpers it calls under the state lock
# are protected where they are defined.
ki.protected(reference_dispatch)

# How far the wheel is moved per call on a jump shorter than _SHORT_JUMP (see
# SimRuntime._expire_at_locked): below the wheel's own catch-up threshold, and
# two wheel turns, beyond which no armed entry can lie before the next deadline.
_STRIDE = 64
_SHORT_JUMP = 2 * NEAR_SIZE


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
            :meth:`~kcont.RuntimeCore.export_trace` also writes as a Chrome trace.
        reraise: re-raise an exception of a continuation's function out of
            ``step``/``run_until_idle``/``advance`` (after counting it), so
            tests fail loudly.  Exceptions that are not ``Exception`` (such as
            ``KeyboardInterrupt``) are always re-raised.
        autojump: a wait that finds nothing to run at the current tick
            (``flush``, ``halt``, ``destroy``, :meth:`wait_idle`) moves
            virtual time to the next timer deadline, expires what is due there
            and goes on, instead of raising :class:`~kcont.SimDeadlockError`
            (which it still raises when no timer is armed either).  As trio's
            ``MockClock(autojump_threshold=0)``: tests that wait on timers
            need not advance time themselves.
    """

    #: A testing hook.  True makes :meth:`advance` and :meth:`run_until` stop at
    #: every tick instead of jumping from deadline to deadline.  The result
    #: (trace, return values, state) is the same, only slower; the test suite
    #: sets it (class-wide, for runtimes created inside an exploration) to
    #: check that jumping changes nothing.  Leave it False otherwise.
    step_every_tick: ClassVar[bool] = False

    def __init__(
        self,
        ncpu: int = 2,
        hz: int = 100,
        seed: int | None = None,
        *,
        trace: bool = False,
        reraise: bool = False,
        autojump: bool = False,
        name: str | None = None,
    ) -> None:
        if not isinstance(autojump, bool):
            raise TypeError(f"autojump must be a bool, not {type(autojump).__name__}")
        super().__init__(ncpu, hz, name)
        self._ticks = 0
        self._rng = random.Random(seed) if seed is not None else None
        self.seed = seed
        self._rr = 0
        self._stepping = False
        self._stepper: int | None = None  # the thread stepping it, while _stepping
        self.reraise = reraise
        self.autojump = autojump
        self._wakeups = 0  # ticks at which time stopped to expire timers
        self._timer_wake = 0  # no timer thread: never told of earlier deadlines
        if trace:
            self._trace = []

    def __repr__(self) -> str:
        return f"<kcont.SimRuntime {self.name} ncpu={len(self.cpus)} tick={self._ticks}>"

    # -- runtime interface ---------------------------------------------------

    def _now(self) -> int:
        return self._ticks

    @ki.protected
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
            if progressed or done():
                continue
            deadline = self._wheel.next_deadline()
            if deadline is None or not self.autojump:
                hint = "" if deadline is None else " (a timer is armed: autojump=True would wait for it)"
                raise SimDeadlockError(
                    f"{what}: can never end (nothing left to run at tick {self._ticks}){hint}"
                )
            self._expire_at_locked(max(deadline, self._ticks + 1))

    def _after_fork_in_child(self, consistent: bool) -> None:
        if self._stepping and self._stepper != threading.get_ident():
            # Another thread of the parent was stepping it: in the child, that
            # thread does not exist, and what it was running stays RUNNING for
            # ever.  Refused, as a threaded runtime is, rather than stuck.
            self._forked = True
            self._closed = True
            for cpu in self.cpus:
                cpu.ready[:] = [0] * len(cpu.ready)
            self._lock = ForkedLock(  # type: ignore[assignment]
                f"kcont.SimRuntime {self.name} was being stepped by another thread of the parent "
                "process when os.fork() copied it into this child, without that thread: what it "
                "was running can never end here; create a new kcont.SimRuntime in the child"
            )
            return
        super()._after_fork_in_child(consistent)

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
            if self._forked:
                self._lock.acquire()  # a ForkedLock: raises ForkedRuntimeError
            raise SimDeadlockError("the simulated runtime cannot be stepped from inside a continuation")
        cpus = self.cpus
        ncpu = len(cpus)
        rng = self._rng
        ran = 0
        last = None
        self._stepping = True
        self._stepper = threading.get_ident()
        previous = _tls.cpu
        try:
            while ran < steps:
                if cpu is not None:
                    order: tuple[CPU, ...] = (cpu,)
                else:
                    if rng is not None and not self._ready():
                        # Draw nothing when nothing can start: the seed's
                        # sequence must not depend on how many idle ticks
                        # time stopped at (jumping and stepping agree).
                        break
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
            self._stepper = None
        return ran, last

    def advance(self, nticks: int = 1) -> int:
        """Run what is ready, then move time ``nticks`` ticks forward, running
        what expires at each tick.  Returns how many ran.

        Time goes straight from one timer deadline to the next (see the
        module docstring): the cost is in deadlines, not in ticks."""
        if not isinstance(nticks, int) or isinstance(nticks, bool):
            raise TypeError(f"nticks must be an int, not {type(nticks).__name__}")
        if nticks < 0:
            raise InvalidArgumentError(f"nticks must be >= 0, not {nticks}")
        ran = self.run_until_idle()
        target = self._ticks + nticks
        while self._ticks < target:
            ran += self._advance_to(self._next_stop(target))
        return ran

    @ki.protected
    def _next_stop(self, limit: int) -> int:
        """The next tick, at most ``limit``, at which a timer may expire: the
        wheel's next deadline (or a lower bound of it), else ``limit``."""
        if self.step_every_tick:
            return self._ticks + 1
        with self._lock:
            deadline = self._wheel.next_deadline()
        if deadline is None or deadline >= limit:
            return limit
        return max(deadline, self._ticks + 1)

    @ki.protected
    def _advance_to(self, tick: int) -> int:
        """Move time to ``tick`` (no timer due before it), expire what is due
        then, and run what is ready.  Returns how many ran."""
        with self._lock:
            self._expire_at_locked(tick)
        return self.run_until_idle()

    def _expire_at_locked(self, tick: int) -> None:
        expired: list[Continuation[Any]] = []
        self._ticks = tick
        self._wakeups += 1
        wheel = self._wheel
        if tick - wheel.now <= _SHORT_JUMP:
            # A short jump may cross ticks while the wheel still holds entries
            # due later in its turn: catching up more than _STRIDE ticks in
            # one call would make the wheel look for a long jump at each of
            # them.  Long jumps only happen with no such entry (nothing is due
            # before ``tick``) and are one call.
            while wheel.now < tick:
                wheel.expire_until(min(tick, wheel.now + _STRIDE), expired)
        else:
            wheel.expire_until(tick, expired)
        for kc in expired:
            expire_locked(kc, tick)
            if self._trace is not None:
                self._record("expire", kc, kc._rq.cpu)

    @property
    def wakeups(self) -> int:
        """How many ticks virtual time stopped at to expire timers (each
        deadline, plus, for a deadline more than a wheel turn away, possibly
        the first tick of its wheel epoch).  With :attr:`step_every_tick`,
        every tick."""
        return self._wakeups

    @ki.protected
    def next_deadline(self) -> int | None:
        """The earliest tick a timer is armed for (or a lower bound of it), or None."""
        with self._lock:
            return self._wheel.next_deadline()

    def run_until(self, until: Callable[[], bool] | int, max_ticks: int = 1_000_000) -> int:
        """Advance time until ``until`` holds; return the tick.

        ``until`` is either a tick (an ``int``): run up to that tick, as
        :meth:`run_until_tick`; or a predicate, called after what is ready ran
        at the current tick and then after each tick at which timers expired
        (the only ticks at which the simulator's state can change): time jumps
        between them, so a predicate must not depend on the tick number
        itself (pass a tick for that).

        Raises:
            SimDeadlockError: the predicate is still false ``max_ticks`` ticks
                later.
            InvalidArgumentError: ``until`` is a tick in the past.
        """
        if isinstance(until, int) and not isinstance(until, bool):
            return self.run_until_tick(until)
        if not callable(until):
            raise TypeError(f"until must be a predicate or a tick (int), not {type(until).__name__}")
        if not isinstance(max_ticks, int) or isinstance(max_ticks, bool):
            raise TypeError(f"max_ticks must be an int, not {type(max_ticks).__name__}")
        self.run_until_idle()
        limit = self._ticks + max_ticks
        while self._ticks < limit:
            if until():
                return self._ticks
            self._advance_to(self._next_stop(limit))
        raise SimDeadlockError(f"predicate still false after {max_ticks} ticks")

    def run_until_tick(self, tick: int) -> int:
        """Run what is ready, then advance time to ``tick`` (the current tick
        or a later one), running what expires on the way.  Returns ``tick``.

        Raises:
            InvalidArgumentError: ``tick`` is in the past.
        """
        if not isinstance(tick, int) or isinstance(tick, bool):
            raise TypeError(f"tick must be an int, not {type(tick).__name__}")
        if tick < self._ticks:
            raise InvalidArgumentError(f"tick {tick} is in the past (now {self._ticks})")
        self.advance(tick - self._ticks)
        return self._ticks

    @ki.protected
    def wait_idle(self, timeout: float | None = None) -> None:
        """Run until nothing is queued or running (as :meth:`kcont.Runtime.wait_idle`;
        armed timers do not count).  ``timeout`` is accepted for the same
        signature and ignored: virtual time does not pass while waiting.

        Raises:
            SimDeadlockError: queued entries can never start (parked on a lock
                nobody will release); with ``autojump``, only once no timer is
                armed either.
        """
        check_timeout(timeout)
        with self._lock:
            self._wait_locked(self._idle_locked, timeout, f"wait_idle of {self!r}")

    def _idle_locked(self) -> bool:
        return not self._running and not self._queued_locked()

    # -- trace -----------------------------------------------------------------

    @property
    def trace(self) -> list[TraceEvent]:
        """The recorded events (empty unless created with ``trace=True``)."""
        if self._trace is None:
            return []
        return [TraceEvent(*event[:5]) for event in self._trace]  # the rest serves export_trace

    # -- shutdown --------------------------------------------------------------

    @ki.protected
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
            ki.detach(self)
        return self._account()

"""Periodic timers: a function run every ``period`` ticks, on any runtime.

What it owns
    :class:`Periodic`: one continuation whose function re-arms itself with
    ``schedule(nticks, ack=True)`` (NetBSD's ``callout_schedule`` idiom), and
    the *ideal* schedule it keeps: the tick each run is due at.  The next
    deadline is computed from the previous ideal deadline, never from the
    tick the function happened to run at, so a periodic timer does not drift
    however late its runs are.  A run is late when it starts after its
    deadline (the previous run overran its period, or the CPU was busy); it
    still runs at once, and the missed-tick policy places the run after it,
    as Tokio's ``MissedTickBehavior`` (``now`` is the tick the late run
    started at, ``D`` its deadline):

    * ``"burst"`` (default): ``D + period``; the missed deadlines run back to
      back until the schedule has caught up; the phase is kept.
    * ``"delay"``: ``now + period``; the schedule shifts by the delay.
    * ``"skip"``: the first deadline of the original schedule after ``now``;
      the deadlines in between are dropped (counted); the phase is kept.

    Each run receives a :class:`PeriodicRun` saying how late it is and how many
    deadlines were skipped before it; the :class:`Periodic` keeps totals.

    Why a class and not a ``schedule_every`` function: stopping, halting,
    restarting and the counters need a handle, and the handle must know its
    own ideal schedule to stop it cleanly from any thread.

Invariants
    * While started, either the continuation is armed for (or committed to)
      the ideal deadline ``_next``, or its function is running and re-arms it
      for ``_next`` before returning (at once if that tick has passed).
    * A run never re-arms after :meth:`Periodic.stop` (or a restart) since it
      began: each start opens a new *generation*, and a run re-arms only if
      its generation is still current.
    * A run belongs to the generation that armed (or committed) it, not to
      the one current when it takes ``_guard``: the generation rides in the
      context variable ``_committed_by``, captured by ``schedule`` together
      with the arming and handed to the invocation that arming commits.  A
      run of a stopped or replaced generation returns without running the
      function, even when a restart came between its start and ``_guard``.
    * The timer is armed for the ideal deadline itself: ``schedule`` reads
      the clock again, and a tick boundary crossed since the deadline was
      computed is corrected by arming again (``_arm_locked``).

Locking
    ``_guard`` (a plain lock of this object) covers the ideal schedule, the
    generation and the counters.  It is taken before the runtime's state
    lock (``schedule`` and ``stop`` are called with it held), never the other
    way round, and the user's function never runs with it held.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from ._core.continuation import Continuation, check_func
from ._core.mutex import Mutex
from ._core.runtime import CPU
from .errors import DestroyedError, InvalidArgumentError, ShutdownError

__all__ = ["MissedTick", "Periodic", "PeriodicRun"]

A = TypeVar("A")

MissedTick = Literal["burst", "delay", "skip"]
_POLICIES = ("burst", "delay", "skip")

# The generation that armed or committed the invocation running (see the
# module docstring): a unique object per start() of each Periodic.
_committed_by: ContextVar[object] = ContextVar("kcont.Periodic generation")
# Arming again because a tick boundary fell between our reading of the clock
# and schedule()'s needs two boundaries in a row to fail twice.
_ARM_TRIES = 3


@dataclass(frozen=True)
class PeriodicRun:
    """What one run of a periodic timer is told.

    Attributes:
        periodic: the timer (e.g. to ``stop()`` it from its own function).
        number: 1 for the first run since ``start()``, then 2, 3...
        deadline: the tick this run was due at, on the ideal schedule.
        tick: the tick it started at.
        late: ``tick - deadline`` (0 when on time).
        skipped: deadlines dropped just before this one (``"skip"`` only).
    """

    periodic: Periodic[Any]
    number: int
    deadline: int
    tick: int
    late: int
    skipped: int


class Periodic(Generic[A]):
    """Run ``func(arg, run)`` every ``period`` ticks once started.

    Args:
        wq: the workqueue it runs on (a queue or a predefined handle, as for
            :class:`~kcont.Continuation`).
        func: called as ``func(arg, run)`` with a :class:`PeriodicRun`; a
            plain function (see :func:`kcont.check_func`).
        arg: the first argument of ``func``.
        period: ticks between deadlines (>= 1).
        missed: where the run after a late run goes: ``"burst"``,
            ``"delay"`` or ``"skip"`` (see the module docstring).
        lock: a :class:`~kcont.Mutex` held while ``func`` runs, or None.
        cpu: the CPU to run on (per-CPU queues only), or None.
        name: a label for traces and statistics.

    An exception raised by ``func`` goes to the runtime's exception handler
    like any continuation's; the timer keeps running.
    """

    def __init__(
        self,
        wq: Any,
        func: Callable[[A, PeriodicRun], object],
        arg: A,
        period: int,
        *,
        missed: MissedTick = "burst",
        lock: Mutex | None = None,
        cpu: CPU | None = None,
        name: str | None = None,
    ) -> None:
        check_func(func, "func(arg, run)")
        if not isinstance(period, int) or isinstance(period, bool):
            raise TypeError(f"period must be an int (ticks), not {type(period).__name__}")
        if period < 1:
            raise InvalidArgumentError(f"period must be >= 1 tick, not {period}")
        if missed not in _POLICIES:
            raise InvalidArgumentError(f"missed must be one of {', '.join(_POLICIES)}, not {missed!r}")
        if cpu is not None and not isinstance(cpu, CPU):
            raise TypeError(f"cpu must be a kcont CPU handle or None, not {type(cpu).__name__}")
        self._func = func
        self._arg = arg
        self.period = period
        self.missed: MissedTick = missed
        self._cpu = cpu
        self._guard = threading.Lock()
        self._active = False  # _guard
        self._generation = object()  # _guard: replaced by each start and stop
        self._next = 0  # _guard: the ideal deadline of the next run
        self._skipped_before = 0  # _guard: skipped deadlines reported to the next run
        self._number = 0  # _guard
        self.runs = 0  # _guard (here and below): runs since creation
        self.late_runs = 0
        self.late_ticks = 0
        self.max_late = 0
        self.skipped = 0
        label = name if name is not None else getattr(func, "__qualname__", None)
        self._kc: Continuation[None] = Continuation(
            wq, self._run, None, lock=lock, name=label if isinstance(label, str) else None
        )
        if cpu is not None and cpu.rt is not self._kc.runtime:
            raise InvalidArgumentError(f"{cpu!r} belongs to another runtime than {wq!r}")

    def __repr__(self) -> str:
        state = f"next={self._next}" if self._active else "stopped"
        return f"<kcont.Periodic {self._kc.name} every {self.period} ticks, {self.missed}, {state}>"

    # -- control --------------------------------------------------------------

    def start(self, delay: int | None = None) -> None:
        """Start (or restart) the schedule: the first run is due ``delay``
        ticks from now (default: one period), then every period after it.

        Restarting a running timer replaces its schedule; a run in progress
        finishes and does not re-arm, and a run of the old schedule starting
        at this moment returns without calling the function.

        Raises:
            DestroyedError: the timer was destroyed.
            ShutdownError: the runtime is shut down.
        """
        if delay is None:
            delay = self.period
        if not isinstance(delay, int) or isinstance(delay, bool):
            raise TypeError(f"delay must be an int (ticks) or None, not {type(delay).__name__}")
        if delay < 0:
            raise InvalidArgumentError(f"delay must be >= 0, not {delay}")
        with self._guard:
            self._generation = generation = object()
            self._active = True
            self._number = 0
            self._skipped_before = 0
            self._next = self._kc.runtime.ticks + delay
            try:
                self._arm_locked(generation, self._next)
            except BaseException:
                self._active = False
                raise

    def stop(self) -> bool:
        """Stop the schedule: no run starts after it unless restarted, and a
        run in progress does not re-arm (it is not waited for: see
        :meth:`halt`).  Returns True if the timer was started."""
        with self._guard:
            was = self._active
            self._active = False
            self._generation = object()
            self._kc.stop()
        return was

    def halt(self, timeout: float | None = None) -> bool:
        """:meth:`stop`, then wait until no run is in progress (returns at
        once when called from the timer's own function)."""
        was = self.stop()
        self._kc.halt(timeout=timeout)
        return was

    def destroy(self, timeout: float | None = None) -> None:
        """Stop for good and release the continuation (see
        :meth:`kcont.Continuation.destroy`)."""
        self.stop()
        self._kc.destroy(timeout=timeout)

    # -- state ------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Started and not stopped."""
        return self._active

    @property
    def next_deadline(self) -> int | None:
        """The tick the next run is due at (None if stopped).  During a run,
        the one after it, already placed by the missed-tick policy."""
        with self._guard:
            return self._next if self._active else None

    @property
    def continuation(self) -> Continuation[None]:
        """The continuation that carries the timer (flags, name, statistics)."""
        return self._kc

    # -- the continuation's function ----------------------------------------------

    def _arm_locked(self, generation: object, deadline: int) -> None:
        """Arm the timer for tick ``deadline`` (at once if it has passed), for
        ``generation`` (``_guard`` held)."""
        kc = self._kc
        rt = kc.runtime
        token = _committed_by.set(generation)  # captured by schedule() with the arming
        try:
            for _ in range(_ARM_TRIES):
                # ack: a run of this or a previous generation may be INVOKING.
                nticks = deadline - rt.ticks
                if nticks <= 0:
                    kc.schedule(0, self._cpu, ack=True)
                    return
                kc.schedule(nticks, self._cpu, ack=True)
                armed = kc.deadline
                # schedule() read the clock again: a tick boundary crossed
                # since our reading armed it one tick late.
                if armed is None or armed <= deadline:
                    return
        finally:
            _committed_by.reset(token)

    def _run(self, _: None, kc: Continuation[None]) -> None:
        rt = kc.runtime
        generation = _committed_by.get(None)
        with self._guard:
            if not self._active or generation is not self._generation:
                return  # stopped or restarted after this invocation was committed
            deadline = self._next
            tick = rt.ticks
            late = max(0, tick - deadline)
            following = deadline + self.period
            skipped = 0
            if late:
                # A late run (started late, or its predecessor overran) always
                # runs now; the policy places the one after it, as Tokio does.
                if self.missed == "delay":
                    following = tick + self.period
                elif self.missed == "skip" and following <= tick:
                    skipped = (tick - following) // self.period + 1
                    following += skipped * self.period
                self.late_runs += 1
                self.late_ticks += late
                self.max_late = max(self.max_late, late)
            self._next = following
            self._number += 1
            self.runs += 1
            run = PeriodicRun(self, self._number, deadline, tick, late, self._skipped_before)
            self._skipped_before = skipped
            self.skipped += skipped
        try:
            self._func(self._arg, run)
        finally:
            self._rearm(kc, generation, following)

    def _rearm(self, kc: Continuation[None], generation: object, following: int) -> None:
        with self._guard:
            if not self._active or self._generation is not generation:
                return  # stopped or restarted while the function ran
            try:
                # Due already (the function overran): runs at once, late.
                self._arm_locked(generation, following)
            except (DestroyedError, ShutdownError):
                self._active = False  # destroyed or shut down from its own function

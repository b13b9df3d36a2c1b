"""The continuation and its state machine: the one place where flags change.

What it owns
    :class:`Continuation` (the seed's ``kcont_t``) and every transition of its
    flags.  Both runtimes share it; a runtime only supplies CPUs, a clock and a
    way to wait (:mod:`kcont._core.runtime`), and calls :func:`begin_locked` /
    :func:`end_locked` from the one dispatch function.

Transition table (docs/semantics.md gives the reason for each row)

    ==========================  ==================================================
    event                       effect
    ==========================  ==================================================
    schedule(nticks=0)          EBUSY if INVOKING.  Disarm if PENDING, leave the
                                run queue if QUEUED (a replaced scheduling);
                                set EXPIRED|INVOKING|QUEUED, enqueue.
    schedule(nticks>0)          EBUSY if INVOKING.  Leave the run queue if QUEUED;
                                arm or re-arm (new deadline and CPU); set PENDING,
                                clear EXPIRED.
    timer expiry                PENDING -> EXPIRED|INVOKING|QUEUED, enqueue.
    dispatch begins             QUEUED -> RUNNING (lock taken, func/arg snapshot).
    dispatch ends               clear RUNNING; clear INVOKING unless a new
                                invocation was committed during the call.
    ack()                       clear INVOKING, return its previous value.
    stop()                      disarm if PENDING; dequeue if QUEUED (then also
                                clear INVOKING|EXPIRED: the function never ran);
                                clear PENDING|EXPIRED; return the EXPIRED left,
                                i.e. True iff the invocation of the current
                                scheduling could not be prevented.
    halt()                      stop() and register as halting, in one critical
                                section; then wait while RUNNING (unless called
                                from the function itself), every invocation
                                that ends meanwhile being stopped again; stop
                                once more when the wait ends.
    flush()                     wait until no invocation committed by the time
                                of the call (serials up to ``_commits``) is
                                QUEUED or RUNNING.  Every transition that
                                ends, cancels or replaces a committed
                                invocation notifies the waiters.
    destroy()                   set DESTROYED (refuses schedule and setters),
                                halt; DETACHED from the workqueue once not
                                RUNNING.
    ==========================  ==================================================

    At most one invocation of a continuation runs at a time: an entry whose
    continuation is still RUNNING waits (see :mod:`kcont._core.runqueue`).

Locking
    S: ``_flags``, ``_rq``, ``_bucket``, ``_deadline``, ``_fired``, ``_commits``, ``_started``,
    ``_ctx``, ``_runner``, ``_release`` and the function, argument and lock
    fields are written only with the runtime's state lock held.  Predicates
    read ``_flags`` without it (one attribute read: atomic, possibly stale, as
    NetBSD's ``callout_pending``).  Functions named ``*_locked`` require the
    state lock; the others take it.  A wait registers itself (``rt._halting``,
    ``rt._ended_waiters``, a callback waiter of :mod:`kcont._core.waiters`)
    in the same critical section as the decision to wait, before it releases
    any lock, so no transition can fall between them unseen.  A :class:`~kcont.Mutex` is never released
    with the state lock held (its waiters take that lock).

    Interrupts (KeyboardInterrupt, :mod:`kcont._core.ki`): every method
    that takes the state lock is ``@protected``, so an interrupt arriving
    between the lock's acquire and release, or between two writes of one
    transition, is raised only when the method returns; the helpers it calls
    (``*_locked``) inherit that.  A wait sleeps in ``ki.block`` (its only
    interruptible part) with the state lock released, and takes the lock back
    and unregisters, protected, before the interrupt leaves; a halt takes its
    interlock back even if an interrupt ends that wait (``_retake``).  A
    lock taken with a bare ``acquire()`` before its ``try`` is therefore
    safe in these methods, and only in them.

    A continuation collected without ``destroy()`` unbinds from its queue
    through ``rt._collected``, a ``collections.deque`` (whose ``append`` and
    ``popleft`` are documented thread-safe, on free-threaded CPython too):
    its ``__del__`` may run in a thread that holds the state lock, so it
    takes no lock; the count is settled under the state lock by the next
    operation that reads it.

    No user code runs with the state lock held: labels and messages read no
    user attribute (``label_of``), contexts are compared by identity, and a
    reference that may be the last one to a user object (a replaced function,
    argument or context, a detached continuation's) is kept in a local or in
    ``rt._dropped`` until the lock is released, so ``__del__`` runs outside.
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading
from collections.abc import Callable
from contextvars import Context, copy_context
from types import BuiltinFunctionType, FunctionType, MethodType
from typing import TYPE_CHECKING, Any, Generic, NoReturn, SupportsIndex, TypeVar

from ..errors import (
    BusyError,
    DestroyedError,
    InvalidArgumentError,
    MutexError,
    NoPerCPUQueueError,
    ShutdownError,
    WorkqueueReleasedError,
    WouldDeadlockError,
)
from .flags import (
    DESTROYED,
    DETACHED,
    EXPIRED,
    INVOKING,
    PENDING,
    QUEUED,
    RUNNING,
    SHARED_CTX,
    flag_names,
)
from .ki import protected
from .layout import COMPILED, ContinuationFields
from .mutex import Mutex
from .runtime import CPU, _tls, check_timeout, current_runtime, label_of
from .timerwheel import MAX_TICKS
from .waiters import fire_locked
from .workqueue import PredefinedQueue, Workqueue

if TYPE_CHECKING:
    from .runqueue import RunQueue
    from .runtime import RuntimeCore

_get_ident = threading.get_ident

A = TypeVar("A")

# Why a schedule is refused; Continuation._refusal turns a code into the
# exception (whose errno the C-style API returns).
R_BUSY = 1
R_NOPERCPU = 2
R_NEGATIVE = 3
R_FOREIGN_CPU = 4
R_DESTROYED = 5
R_SHUTDOWN = 6

# Flag combinations of the hot paths, folded once (names are not constants to
# the compiler).
_REFUSE = INVOKING | DESTROYED  # schedule is refused
_ARMED = PENDING | SHARED_CTX  # set by arming a timer
_COMMITTED = EXPIRED | INVOKING | QUEUED  # set when an invocation is committed


class Continuation(ContinuationFields, Generic[A]):
    """A cheap, reusable handle on deferred work: a function, an argument, a
    workqueue and an optional lock (the seed's ``kcont_t``).

    Args:
        wq: a :class:`Workqueue` of a runtime, or a predefined queue handle
            such as ``kcont.wq_softnet`` (bound to the current runtime).
        func: called as ``func(arg, kc)`` each time the continuation runs.
        arg: the first argument of ``func``.
        lock: a :class:`~kcont.Mutex` taken before ``func`` runs and released
            after it returns, or None.
        name: a label for traces, ``repr`` and statistics.

    Raises:
        TypeError: ``func`` is not callable or is a coroutine, async
            generator or generator function (:func:`check_func`), ``lock`` is
            not a Mutex, ``wq`` is not a workqueue.
        WorkqueueReleasedError: ``wq`` was freed.
        NoRuntimeError: ``wq`` is predefined and no runtime is current.
        ShutdownError: the runtime is shut down.

    Context:
        Any thread, including a continuation's function.
    """

    __slots__ = ()  # the fields are in its base (kcont._core.layout)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Run queues, the timer wheel and the waiter tables find a continuation
        # by identity (dict keys, deque.remove): a value-based __eq__ would let
        # stop() remove another, equal continuation, and would run user code
        # under the state lock.
        super().__init_subclass__(**kwargs)
        for name in ("__eq__", "__hash__"):
            if name in cls.__dict__:
                raise TypeError(
                    f"{cls.__qualname__} may not define {name}: a continuation is equal only to itself"
                )

    @protected
    def __init__(
        self,
        wq: Workqueue | PredefinedQueue,
        func: Callable[[A, Continuation[A]], object],
        arg: A = None,  # type: ignore[assignment]
        *,
        lock: Mutex | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(wq, PredefinedQueue):
            wq = wq.resolve(current_runtime())
        elif not isinstance(wq, Workqueue):
            raise TypeError(f"wq must be a kcont workqueue, not {type(wq).__name__}")
        check_func(func)
        if lock is not None and not isinstance(lock, Mutex):
            raise TypeError(f"lock must be a kcont.Mutex or None, not {type(lock).__name__}")
        self._wq = wq
        self._func = func
        self._arg = arg
        self._lock = lock
        self._flags = DETACHED  # not bound to wq yet: __del__ has nothing to undo
        self._rq: RunQueue = wq.rqs[0]
        self._bucket: dict[Continuation[Any], None] | None = None
        self._deadline = 0
        self._fired: int | None = None  # S: deadline of the latest invocation's timer
        self._commits = 0  # S: invocations committed so far (their serial numbers)
        self._started = 0  # S: serial of the invocation running, or of the last one run
        self._ctx: Context | None = None
        self._runner: int | None = None
        self._release: Mutex | None = None
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        self.name = name if name is None else str(name)  # an exact str: labels run no user code
        rt = wq.rt
        with rt._lock:
            if wq.freed:
                raise WorkqueueReleasedError(f"{wq!r} was released and freed")
            if rt._closed:
                raise ShutdownError(f"{rt!r} is shut down")
            wq.bound += 1
            rt._created += 1
            self._flags = 0
            if rt._collected:  # keeps it short where nothing else reads it
                rt._reap_collected_locked()

    def __del__(self, _detached: int = DETACHED) -> None:  # (a default: no global lookup at exit)
        # Collected without destroy() (so idle: a PENDING, QUEUED or RUNNING
        # continuation is referenced by the runtime): its queue must not stay
        # bound for ever.  Garbage collection runs this at any point of any
        # thread, maybe one holding the state lock, so it takes no lock: the
        # queue goes to rt._collected, and whoever next needs the count
        # (release, stats) takes it off under the state lock (_reap_collected_locked).
        try:
            flags = self._flags
        except AttributeError:  # __init__ raised before setting it
            return
        if not flags & _detached:
            wq = self._wq
            wq.rt._collected.append(wq)

    # -- scheduling ---------------------------------------------------------

    @protected
    def schedule(self, nticks: int = 0, cpu: CPU | None = None, *, ack: bool = False) -> None:
        """Commit an invocation now (``nticks=0``) or arm the timer.

        Re-scheduling a PENDING continuation replaces its deadline and CPU.

        Args:
            nticks: 0 to run without delay, else the number of ticks to wait.
            cpu: the CPU to run on (per-CPU queues only); None means the
                calling thread's CPU for a per-CPU queue, or the first CPU
                free for a shared queue.
            ack: clear INVOKING first, atomically (``ack()`` then
                ``schedule()`` with no window between them: NetBSD's
                ``callout_schedule``, for a function that re-arms itself).

        Raises:
            BusyError: INVOKING is set (EBUSY); ``ack()`` it first.
            NoPerCPUQueueError: ``cpu`` given on a shared queue (ENOENT).
            InvalidArgumentError: ``nticks < 0``, ``nticks >= 2**61``, or
                ``cpu`` of another runtime.
            DestroyedError: the continuation was destroyed.
            ShutdownError: the runtime is shut down.
        """
        # The whole transition is in this one method (a wrapper frame cost
        # ≈ 4 % of every schedule and re-arm: docs/performance.md); the
        # C-style layer turns its exceptions back into errno values.
        if ack is not False and ack is not True:
            raise TypeError(f"ack must be a bool, not {type(ack).__name__}")
        if nticks.__class__ is not int:  # a wrong type is misuse: raised before any errno
            nticks = _check_ticks(nticks)
        wq = self._wq
        rt = wq.rt
        if cpu is None:
            if wq.percpu:
                here = _tls.cpu
                rq = wq.rqs[here.index] if here is not None and here.rt is rt else wq.rqs[0]
            else:
                rq = wq.rqs[0]
        else:
            target = self._rq_for(cpu)
            if target.__class__ is int:
                raise self._refusal(target, cpu, nticks)
            rq = target  # type: ignore[assignment]
        if nticks < 0 or nticks >= MAX_TICKS:
            raise self._refusal(R_NEGATIVE, cpu, nticks)
        ctx = copy_context()
        lock = rt._lock
        lock.acquire()
        flags = self._flags
        if ack:
            flags &= ~INVOKING
        if flags & _REFUSE or rt._closed:
            refused = self._refused_locked(rq)  # counts only: cannot raise
            lock.release()
            raise self._refusal(refused, cpu, nticks)  # built with the lock released
        try:
            if flags & QUEUED or (not nticks and flags & PENDING):
                self._leave_locked(flags)  # an acked entry, or a timer made immediate: replaced
                flags = self._flags
            self._rq = rq
            _replaced = self._ctx  # dies after the lock is released, at return
            if nticks:
                # A capture holding the very same values as the last one shares
                # its object, so a pending timer costs no Context of its own;
                # the dispatcher runs a copy (SHARED_CTX), so nothing leaks
                # between invocations.
                cached = rt._ctx_cache
                if cached is not None and ((not ctx and not cached) or _same_values(ctx, cached)):
                    ctx = cached
                else:
                    rt._ctx_cache = ctx
                self._ctx = ctx
                wheel = rt._wheel
                clock = rt._clock
                if clock is None:  # virtual time: the wheel's position is the time
                    deadline = wheel.now + nticks
                else:
                    deadline = clock() + nticks
                    if deadline <= wheel.now:
                        deadline = wheel.now + 1
                wheel.arm(self, deadline)  # a re-arm if PENDING: O(1), no allocation
                self._flags = (flags & ~EXPIRED) | _ARMED
                rq.armed += 1
                if deadline < rt._timer_wake:
                    rt._kick_timer(deadline)
            else:
                # Immediate: the softint/workqueue path.  The context is this
                # scheduling's own copy, run as is by the dispatcher.
                self._ctx = ctx
                self._flags = (flags & ~SHARED_CTX) | _COMMITTED
                self._commits += 1
                # RunQueue.enqueue_locked, inlined on this hot path.
                fifo = rq.fifo
                fifo.append(self)
                rq.scheduled += 1
                if len(fifo) > rq.depth_hwm:
                    rq.depth_hwm = len(fifo)
                here = rq.cpu
                if here is not None:
                    here.ready[rq.band] |= rq.bit
                else:
                    rq.mark_ready_locked()
                if rt._kick is not None:
                    rt._kick(rq)
            if rt._trace is not None:
                rt._record("schedule", self, rq.cpu, nticks)
        finally:
            lock.release()

    def _rq_for(self, cpu: object) -> RunQueue | int:
        """The run queue of ``cpu`` for this continuation, or a refusal code."""
        if cpu.__class__ is not CPU:
            raise TypeError(f"cpu must be a kcont CPU handle or None, not {type(cpu).__name__}")
        wq = self._wq
        cpus = wq.rt.cpus
        index = cpu.index
        if not (0 <= index < len(cpus) and cpus[index] is cpu):
            return R_FOREIGN_CPU
        if not wq.percpu:
            return R_NOPERCPU
        return wq.rqs[cpu.index]

    def _refused_locked(self, rq: RunQueue) -> int:
        flags = self._flags
        if flags & DESTROYED:
            return R_DESTROYED
        if self._wq.rt._closed:
            return R_SHUTDOWN
        rq.ebusy += 1
        return R_BUSY

    def _leave_locked(self, flags: int) -> None:
        """Leave the wheel (PENDING) or the run queue (QUEUED, only reachable
        after ``ack()``): the new scheduling replaces the old one."""
        if flags & PENDING:
            self._wq.rt._wheel.disarm(self)
            self._flags = flags & ~PENDING
        else:
            self._rq.remove_locked(self)
            self._flags = flags & ~QUEUED
            rt = self._wq.rt
            if rt._ended_waiters:
                rt._notify_ended_locked()  # a flush may wait for the replaced invocation
                if rt._callback_waiters:
                    fire_locked(rt, self, kick=True)

    def _refusal(self, code: int, cpu: CPU | None, nticks: int) -> Exception:
        if code == R_BUSY:
            if self._runner == _get_ident():
                return BusyError(
                    f"{self!r} is INVOKING (its own function is running); "
                    "re-arm it with schedule(..., ack=True)"
                )
            return BusyError(
                f"{self!r} is INVOKING; call ack() first, or schedule(..., ack=True), to schedule it again"
            )
        if code == R_NOPERCPU:
            return NoPerCPUQueueError(f"{self._wq!r} has no per-CPU queues; pass cpu=None")
        if code == R_NEGATIVE:
            if nticks >= 0:
                return InvalidArgumentError(
                    f"nticks must be below 2**61 (the timer wheel's range), not {nticks}"
                )
            return InvalidArgumentError(f"nticks must be >= 0, not {nticks}")
        if code == R_FOREIGN_CPU:
            return InvalidArgumentError(f"{cpu!r} belongs to another runtime than {self!r}")
        if code == R_DESTROYED:
            return DestroyedError(f"{self!r} was destroyed")
        return ShutdownError(f"{self._wq.rt!r} is shut down; {self!r} cannot be scheduled")

    # -- stop, halt, destroy ------------------------------------------------

    @protected
    def stop(self) -> bool:
        """Disarm the timer and cancel a committed invocation that has not
        started.

        Returns:
            True iff the invocation of the current scheduling could not be
            prevented (it is running or has run): the seed's "was EXPIRED".

        Context:
            Any thread.  If the continuation has a lock and the caller holds
            it, no invocation starts after ``stop`` returns.  ``stop`` does not
            wait for a running invocation: use :meth:`halt`.
        """
        lock = self._wq.rt._lock
        lock.acquire()
        try:
            return self._stop_locked()
        finally:
            lock.release()

    def _stop_locked(self) -> bool:
        flags = self._flags
        rq = self._rq
        if flags & PENDING:
            self._wq.rt._wheel.disarm(self)
            rq.stopped += 1
        elif flags & QUEUED:
            rq.remove_locked(self)
            flags &= ~(QUEUED | INVOKING | EXPIRED)
            rq.stopped += 1
            rt = self._wq.rt
            if rt._ended_waiters:
                rt._notify_ended_locked()  # a flush may be waiting for it
                if rt._callback_waiters:
                    self._flags = flags & ~(PENDING | EXPIRED)  # as below: what the waiters check
                    fire_locked(rt, self, kick=True)
        else:
            self._flags = flags & ~EXPIRED
            return bool(flags & EXPIRED)
        self._flags = flags & ~(PENDING | EXPIRED)
        rt = self._wq.rt
        if rt._trace is not None:
            rt._record("stop", self, rq.cpu)
        return bool(flags & EXPIRED)

    @protected
    def halt(self, interlock: Mutex | None = None, timeout: float | None = None) -> bool:
        """Stop, then wait until no invocation of this continuation runs.

        Called from the continuation's own function, it stops and returns at
        once (waiting would deadlock).  ``interlock``, if given, is released
        while waiting and taken again before returning (NetBSD
        ``callout_halt``).  Do not hold a lock that the function takes.

        Returns:
            As :meth:`stop`.

        Raises:
            HaltTimeoutError: ``timeout`` seconds passed with the function
                still running (it is stopped, not interrupted).
        """
        timeout = check_timeout(timeout)
        if interlock is not None and not (hasattr(interlock, "acquire") and hasattr(interlock, "release")):
            raise TypeError(f"interlock must be a lock (kcont.Mutex) or None, not {type(interlock).__name__}")
        rt = self._wq.rt
        with rt._lock:
            expired = self._stop_locked()
            if not self._flags & RUNNING or self._runner == _get_ident():
                return expired
            self._halting_locked()
        self._wait_halted(interlock, timeout, "halt")
        return expired

    @protected
    def _wait_halted(self, interlock: Mutex | None, timeout: float | None, what: str) -> None:
        """Wait until no invocation runs, for a halt or a destroy that the
        caller registered in ``rt._halting`` under the state lock, *before*
        releasing it: from then on every invocation that ends is stopped
        again (``end_locked``), so a function that re-arms itself cannot slip
        a new arming between the stop and the wait.  Unregisters, and stops
        once more (a schedule made meanwhile by another thread is cancelled),
        before taking ``interlock`` back."""
        rt = self._wq.rt
        released = False
        try:
            rt._preempt(f"{what}: state lock released")
            if interlock is not None:
                interlock.release()
                released = True
                rt._preempt(f"{what}: interlock released")
            with rt._lock:
                rt._wait_locked(self._not_running_locked, timeout, f"{what} of {self!r}")
        finally:
            with rt._lock:
                self._halted_locked()
            if released:
                # Taken back whatever happens (an interrupt raised by the
                # wait included): the caller's `with interlock:` releases it.
                _retake(interlock)  # type: ignore[arg-type]

    def _halting_locked(self) -> None:
        """Register a halt (or destroy) about to wait: from now on every
        invocation that ends is stopped again (``end_locked``).  Called in the
        critical section of the halt's stop, before any lock is released."""
        halting = self._wq.rt._halting
        halting[self] = halting.get(self, 0) + 1

    def _halted_locked(self) -> None:
        """Unregister a halt whose wait ended (or gave up), and stop once
        more: a schedule another thread made meanwhile is cancelled."""
        halting = self._wq.rt._halting
        left = halting[self] - 1
        if left:
            halting[self] = left
        else:
            del halting[self]
        self._stop_locked()

    def _flushed_locked(self, target: int) -> bool:
        """True once no invocation committed by serial ``target`` is queued
        or running (what a flush decided when ``_commits == target`` waits for)."""
        flags = self._flags
        if flags & QUEUED and self._commits <= target:
            return False
        return not (flags & RUNNING and self._started <= target)

    def _not_running_locked(self) -> bool:
        return not self._flags & RUNNING

    @protected
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the invocations committed when it is called (a running
        one, a queued one) have finished (Linux ``flush_work``; NetBSD
        ``workqueue_wait``).  Nothing is cancelled and a pending timer is left
        alone; an invocation committed later is not waited for, so a function
        that re-schedules itself cannot keep ``flush`` waiting.  Called from the
        continuation's own function, it returns at once.  On the simulated
        runtime it steps the runtime until done.

        Returns:
            True if there was something to wait for.

        Raises:
            HaltTimeoutError: ``timeout`` seconds passed.
        """
        timeout = check_timeout(timeout)
        rt = self._wq.rt
        with rt._lock:
            flags = self._flags
            if not flags & (QUEUED | RUNNING) or self._runner == _get_ident():
                return False
            # Invocations are numbered as they are committed, and the queued
            # one is always the latest: wait until neither the queued nor the
            # running invocation is one committed by now.  It ends, or is
            # cancelled, or replaced by a new scheduling; each of those wakes
            # the waiters.
            target = self._commits
            deadlock = rt._flush_would_deadlock_locked(self)
            if deadlock is not None:
                raise WouldDeadlockError(f"flush of {self!r} {deadlock}")
            rt._wait_locked(lambda: self._flushed_locked(target), timeout, f"flush of {self!r}")
            return True

    @property
    def running_here(self) -> bool:
        """True when called from this continuation's own function (the
        calling thread is running it)."""
        return self._runner == _get_ident()

    @protected
    def destroy(self, timeout: float | None = None) -> None:
        """Halt and retire the continuation: every later schedule, setfunc,
        setarg or setmutex is refused with :class:`DestroyedError`.

        Called from its own function, it refuses re-arming at once and
        finishes after the function returns.

        Raises:
            DestroyedError: already destroyed.
            HaltTimeoutError: ``timeout`` seconds passed with the function
                still running (the continuation stays destroyed and is
                released when the function returns).
        """
        timeout = check_timeout(timeout)
        rt = self._wq.rt
        with rt._lock:
            flags = self._flags
            if flags & DESTROYED:
                raise DestroyedError(f"{self!r} was already destroyed")
            self._flags = flags | DESTROYED
            self._stop_locked()
            if rt._trace is not None:
                rt._record("destroy", self, self._rq.cpu)
            if not self._flags & RUNNING:
                self._detach_locked()
                _dropped = rt._take_dropped_locked()  # dies after the lock is released
                return
            if self._runner == _get_ident():
                return  # end_locked detaches it after the function returns
            self._halting_locked()
        self._wait_halted(None, timeout, "destroy")

    def _detach_locked(self) -> None:
        self._flags |= DETACHED
        self._wq.bound -= 1
        # Drop references so a destroyed continuation pins nothing; keep its
        # label for messages and traces.
        if self.name is None:
            self.name = label_of(self)
        self._wq.rt._dropped.append((self._func, self._arg, self._ctx))
        self._func = _destroyed_func
        self._arg = None  # type: ignore[assignment]
        self._ctx = None

    # -- acknowledgement and predicates -----------------------------------

    @protected
    def ack(self) -> bool:
        """Clear INVOKING and return its previous value (the seed's
        ``kcont_ack``).  A function that re-arms itself calls ``ack()`` first."""
        lock = self._wq.rt._lock
        lock.acquire()
        flags = self._flags
        self._flags = flags & ~INVOKING
        lock.release()
        return bool(flags & INVOKING)

    @property
    def pending(self) -> bool:
        """The timer is armed and has not expired."""
        return bool(self._flags & PENDING)

    @property
    def expired(self) -> bool:
        """The current scheduling was committed to invocation (the function
        may not have started yet)."""
        return bool(self._flags & EXPIRED)

    @property
    def active(self) -> bool:
        """PENDING or EXPIRED (NetBSD's ``callout_active``)."""
        return bool(self._flags & (PENDING | EXPIRED))

    @property
    def invoking(self) -> bool:
        """An invocation is committed and not yet acknowledged or finished."""
        return bool(self._flags & INVOKING)

    @property
    def queued(self) -> bool:
        """Committed and waiting for a CPU or its lock (not started)."""
        return bool(self._flags & QUEUED)

    @property
    def running(self) -> bool:
        """The function is executing."""
        return bool(self._flags & RUNNING)

    @property
    def destroyed(self) -> bool:
        return bool(self._flags & DESTROYED)

    @property
    def flags(self) -> str:
        """All flags by name, e.g. ``'EXPIRED|INVOKING|QUEUED'``."""
        return flag_names(self._flags)

    # -- function, argument, lock ------------------------------------------

    @property
    def wq(self) -> Workqueue:
        return self._wq

    @property
    def runtime(self) -> Any:
        return self._wq.rt

    @property
    def cpu(self) -> CPU | None:
        """The CPU of the current (or last) scheduling; None on a shared queue."""
        return self._rq.cpu

    @property
    def deadline(self) -> int | None:
        """The tick the timer is armed for, or None if not PENDING."""
        return self._deadline if self._flags & PENDING else None

    @property
    def fired_deadline(self) -> int | None:
        """The tick the timer of the current invocation was armed for, or
        None if that invocation was committed by ``schedule(nticks=0)``.

        Inside the function, where :attr:`deadline` is None (the timer
        expired) or already the next one (after a re-arm), this is the
        deadline that fired: ``runtime.ticks - kc.fired_deadline`` is how late
        the invocation started, and ``fired_deadline + period`` the next
        deadline of a timer that must not drift.  Outside, it is the latest
        invocation's (None before the first one).
        """
        return self._fired

    @property
    def func(self) -> Callable[[A, Continuation[A]], object]:
        return self._func

    @property
    def mutex(self) -> Mutex | None:
        """The lock currently associated (the seed's ``kcont_getmutex``)."""
        return self._lock

    @property
    def arg(self) -> A:
        return self._arg

    @arg.setter
    def arg(self, arg: A) -> None:
        self.set_arg(arg)

    @protected
    def set_arg(self, arg: A) -> None:
        """Change the argument (the seed's ``kcont_setarg``).

        Without a lock: any time; an invocation already started keeps the old
        one.  With a lock: the caller must hold it.

        Raises:
            MutexError: the continuation has a lock the caller does not hold.
            DestroyedError: the continuation was destroyed.
        """
        rt = self._wq.rt
        with rt._lock:
            self._check_settable_locked("setarg")
            replaced = self._arg  # dies after the lock is released (module doc, Locking)
            self._arg = arg
        del replaced

    @protected
    def set_func(self, func: Callable[[A, Continuation[A]], object], arg: A) -> None:
        """Change the function and argument (the seed's ``kcont_setfunc``,
        with the signature of ``kcont_create``: ``func(arg, kc)``).

        With a lock: the caller must hold it.  Without a lock: only while the
        continuation is neither PENDING nor INVOKING, so that a new function
        never runs concurrently with the old one (docs/semantics.md).

        Raises:
            TypeError: ``func`` is not callable, or is a coroutine, async
                generator or generator function (see :func:`check_func`).
            BusyError: lock-less and PENDING or INVOKING (EBUSY).
            MutexError: the continuation has a lock the caller does not hold.
            DestroyedError: the continuation was destroyed.
        """
        check_func(func)
        rt = self._wq.rt
        with rt._lock:
            self._check_settable_locked("setfunc")
            if self._lock is None and self._flags & (PENDING | INVOKING):
                raise BusyError(
                    f"{self!r} has no lock and is {flag_names(self._flags)}: its function "
                    "can only change while it is neither PENDING nor INVOKING"
                )
            replaced = (self._func, self._arg)  # dies after the lock is released
            self._func = func
            self._arg = arg
        del replaced

    @protected
    def set_mutex(self, lock: Mutex | None) -> Mutex | None:
        """Replace the associated lock and return the previous one (the
        seed's ``kcont_setmutex``).

        The caller must hold the current lock.  Called from the continuation's
        own function, it also changes which lock the dispatcher releases when
        the function returns: the function must have released the old lock,
        and hold the new one (if any), by then.  A queued continuation moves
        behind the entries already ready for its new ``{wq, lock, ci}``.

        Raises:
            MutexError: the continuation has no lock and ``lock`` is not None
                (the seed's assertion failure), or the caller does not hold
                the current lock.
            TypeError: ``lock`` is neither a Mutex nor None.
            DestroyedError: the continuation was destroyed.
        """
        if lock is not None and not isinstance(lock, Mutex):
            raise TypeError(f"lock must be a kcont.Mutex or None, not {type(lock).__name__}")
        rt = self._wq.rt
        with rt._lock:
            old = self._lock
            if old is None:
                if lock is not None:
                    raise MutexError(
                        f"{self!r} was created without a lock and cannot be given one "
                        "(the seed makes this an assertion failure)"
                    )
                if self._flags & DESTROYED:
                    raise DestroyedError(f"{self!r} was destroyed")
                return None
            self._check_settable_locked("setmutex")
            self._lock = lock
            if self._runner == _get_ident():
                self._release = lock
            if self._flags & QUEUED and lock is not old:
                rq = self._rq
                rq.remove_locked(self)
                rq.requeue_locked(self)
                if rt._kick is not None:
                    rt._kick(rq)
            return old

    def _check_settable_locked(self, what: str) -> None:
        if self._flags & DESTROYED:
            raise DestroyedError(f"{what}: {self!r} was destroyed")
        lock = self._lock
        if lock is not None and not lock.owned():
            raise MutexError(f"{what}: the caller must hold {lock!r}, the lock of {self!r}")

    def __repr__(self) -> str:
        return f"<kcont.Continuation {label_of(self)} {flag_names(self._flags)} on {self._wq.name}>"

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        # A copy would share the original's queue binding without holding one
        # (its collection would unbind the original's queue), and a pickle
        # could not carry the runtime it belongs to: create another instead.
        raise TypeError(
            f"{self!r} cannot be copied or pickled: it belongs to its runtime; create a new Continuation"
        )


if COMPILED:
    # The compiled core's schedule, stop and ack (kcont._core._ckcont): the same
    # transitions for the common case, which hand every other case (a
    # refusal, a replacement, a cpu argument, a traced runtime, a wrong type)
    # to these reference methods before changing anything.
    Continuation._py_schedule = Continuation.schedule  # type: ignore[attr-defined]
    Continuation._py_ack = Continuation.ack  # type: ignore[attr-defined]
    Continuation._py_stop = Continuation.stop  # type: ignore[attr-defined]
    Continuation.schedule = ContinuationFields._c_schedule  # type: ignore[attr-defined,method-assign]
    Continuation.ack = ContinuationFields._c_ack  # type: ignore[attr-defined,method-assign]
    Continuation.stop = ContinuationFields._c_stop  # type: ignore[attr-defined,method-assign]

# Code flags of functions whose call only creates an object (a coroutine, an
# async generator, a generator) and runs none of their body.
_NOT_RUN_BY_A_CALL = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_GENERATOR
# inspect.markcoroutinefunction (3.12+) marks a plain function as a coroutine function.
_MARKERS = sys.version_info >= (3, 12)


def check_func(func: Any, call: str = "func(arg, kc)") -> None:
    """Refuse a ``func`` that kcont cannot run: not callable, or a coroutine,
    async generator or generator function (also behind ``functools.partial``,
    as a bound method, or as the ``__call__`` of a callable object), whose
    call would build an object that nobody awaits or iterates, silently.

    It may run user code (a metaclass's attribute lookup of ``__call__``):
    call it before taking any lock.  ``call`` is how the caller's layer calls
    the function, for the message.

    Raises:
        TypeError: says which kind of function, and what to do instead.
    """
    if type(func) is FunctionType:
        if not func.__code__.co_flags & _NOT_RUN_BY_A_CALL and (
            not _MARKERS or getattr(func, "_is_coroutine_marker", None) is None
        ):
            return  # the common case, cheaply (inspect's checks take about 1 us)
    elif not callable(func):
        raise TypeError(f"func must be callable, not {type(func).__name__}")
    target: Any = func
    while isinstance(target, functools.partial):
        target = target.func
    if not isinstance(target, (FunctionType, MethodType, BuiltinFunctionType, type)):
        # A callable object: its class's __call__ (never an attribute of the
        # object itself, whose __getattr__ is user code that may misbehave).
        target = getattr(type(target), "__call__", None)  # noqa: B004 - not a test of callability
    if inspect.iscoroutinefunction(target):
        kind = "a coroutine function"
        instead = "wrap the call (asyncio.run_coroutine_threadsafe) or use a plain function"
    elif inspect.isasyncgenfunction(target):
        kind = "an async generator function"
        instead = "use a plain function"
    elif inspect.isgeneratorfunction(target):
        kind = "a generator function"
        instead = "use a plain function (a generator's body runs only when it is iterated)"
    else:
        return
    raise TypeError(f"func is {kind}: kcont calls {call} and never awaits or iterates the result; {instead}")


def _retake(interlock: Mutex) -> None:
    """Take ``interlock`` back after a wait, even if an interrupt ends its
    own wait for the lock (then raised once it is held)."""
    interrupted: KeyboardInterrupt | None = None
    while True:
        try:
            interlock.acquire()
            break
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted


def _destroyed_func(arg: object, kc: Continuation[Any]) -> None:
    raise DestroyedError(f"{kc!r} was destroyed")  # never dispatched: stop dequeued it


@protected
def _same_values(ctx: Context, cached: Context) -> bool:
    """True if both contexts hold the same variables bound to the same objects.

    Identity, not ``==``: ``Context.__eq__`` compares values with their own
    ``__eq__``, which is user code (under the state lock here), may raise
    (numpy arrays) and may call distinct objects equal (two empty dicts), in
    which case a shared context would hand the function the wrong object."""
    if len(ctx) != len(cached):
        return False
    for var, value in ctx.items():  # noqa: SIM110 - all() would allocate a generator per re-arm
        if cached.get(var, _MISSING) is not value:
            return False
    return True


_MISSING = object()


def _check_ticks(nticks: object) -> int:
    if isinstance(nticks, int) and not isinstance(nticks, bool):
        return int(nticks)
    raise TypeError(f"nticks must be an int, not {type(nticks).__name__}")


# -- invocation (called by the dispatch function only) ----------------------


def begin_locked(kc: Continuation[Any], runner: int) -> Context:
    """QUEUED -> RUNNING on thread ``runner``; the lock (if any) was taken by
    the run queue.  Returns the context the function must run in."""
    flags = kc._flags
    kc._flags = (flags & ~QUEUED) | RUNNING
    kc._runner = runner
    kc._release = kc._lock
    kc._started = kc._commits  # the queued invocation is always the latest committed
    # SHARED_CTX is set by arming and cleared by an immediate schedule: the
    # invocation was committed by the timer iff it is set.
    kc._fired = kc._deadline if flags & SHARED_CTX else None
    ctx = kc._ctx
    return ctx.copy() if flags & SHARED_CTX else ctx  # type: ignore[union-attr,return-value]


def end_locked(kc: Continuation[Any]) -> bool:
    """The function returned (or raised): clear RUNNING, and INVOKING unless
    a new invocation was committed meanwhile (QUEUED again: the function, or
    another thread, acked and re-scheduled it; that INVOKING is the new one's).
    Returns True if callback waiters fired: the caller wakes them
    (:mod:`kcont._core.waiters`) once it has released the state lock."""
    flags = kc._flags & ~RUNNING
    if not flags & QUEUED:
        flags &= ~INVOKING
    kc._flags = flags
    kc._runner = None
    kc._release = None
    rt = kc._wq.rt
    if rt._run_waiters or rt._halting or rt._ended_waiters or flags & DESTROYED:
        return _ended_slow_locked(rt, kc, flags)
    return False


@protected
def _ended_slow_locked(rt: RuntimeCore, kc: Continuation[Any], flags: int) -> bool:
    """The rare consequences of an invocation's end: wake sub-queues that
    waited for it, re-stop it for a halt, finish a destroy, notify waiters.
    Returns True if callback waiters fired (see :func:`end_locked`)."""
    waiters = rt._run_waiters.pop(kc, None)
    if waiters:
        for rq, key in waiters:
            if rq.wake_locked(key) and rt._kick is not None:
                rt._kick(rq)
    if kc in rt._halting:
        kc._stop_locked()  # a halt waits: no new invocation may slip in
    if flags & DESTROYED and not flags & DETACHED:
        kc._detach_locked()
    if rt._ended_waiters:
        rt._notify_ended_locked()
        if rt._callback_waiters:
            fire_locked(rt, kc, kick=False)
    return bool(rt._callbacks_ready)  # a re-stop above may have fired some too


def expire_locked(kc: Continuation[Any], now: int) -> None:
    """Timer expiry: PENDING -> EXPIRED|INVOKING|QUEUED, in expiry order."""
    kc._flags = (kc._flags & ~PENDING) | _COMMITTED
    kc._commits += 1
    rq = kc._rq
    late = now - kc._deadline
    if late > 0:
        rq.late += 1
        rq.late_ticks += late
    rq.enqueue_locked(kc)

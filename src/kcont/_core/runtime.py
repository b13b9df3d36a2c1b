"""What every runtime shares: the state lock, CPUs, the clock interface, the
timer wheel, the workqueue registry, statistics and "current" lookups.

What it owns
    :class:`RuntimeCore` is the base of :class:`kcont.SimRuntime` and
    :class:`kcont.Runtime`.  A concrete runtime only supplies how time is read
    (:meth:`RuntimeCore._now`), how a CPU is told it has work
    (``RuntimeCore._kick``), how the timer is told of an earlier deadline
    (:meth:`RuntimeCore._kick_timer`) and how a thread waits for an invocation
    to end (:meth:`RuntimeCore._wait_locked`).  Everything else, the
    state machine, the ordering rules and the dispatch function, is shared.

Current CPU and runtime
    A thread is "on" a CPU while it runs a continuation (the dispatch function
    sets it), while it is bound with ``with bind_cpu(ci):``, or else on CPU 0
    of the runtime concerned.  :func:`current_runtime` is, in order: the
    runtime of the thread's current CPU; the innermost runtime the thread
    entered with ``with rt:``; the runtime most recently entered by any thread
    and not yet exited.

Locking
    ``_lock`` (S, "the state lock") guards every mutable field of the runtime
    and of its continuations, run queues, workqueues and timer wheel.  It is
    never held while a continuation's function, an exception handler or a
    mutex waiter runs.  Lock order: S -> ``Mutex._wlock``.  ``_registry_lock``
    guards the process-wide list of entered runtimes and ``_every_runtime``
    (taken alone, except by the forking thread: see "os.fork()" below).
    ``_collected`` takes no lock (see :mod:`kcont._core.continuation`).

    Interrupts: every method here that takes the state lock or the registry
    lock is ``@ki.protected`` (a KeyboardInterrupt arriving inside is raised
    when it returns; see :mod:`kcont._core.ki`), and so are the fork hooks.
    A runtime's creation installs kcont's SIGINT handler (``ki.attach``);
    the concrete runtimes' shutdown removes it once no runtime is left.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextvars import Context
from dataclasses import dataclass
from types import BuiltinFunctionType, FunctionType, MethodType
from typing import TYPE_CHECKING, Any, cast

from ..errors import ForkedRuntimeError, InvalidArgumentError, NoRuntimeError, ShutdownError
from . import ki
from . import mutex as _mutex
from .flags import DESTROYED, PENDING, QUEUED
from .instruments import Hook, SlowReporter, Watch, hook_for, make_watch
from .layout import CPUFields, RuntimeFields, compiled_module, new_state_lock
from .runqueue import COUNTERS
from .stats import QueueTiming, RuntimeStats
from .timerwheel import TimerWheel
from .workqueue import (
    ALL_BANDS,
    BAND_NAMES,
    BAND_SOFT,
    BAND_THREAD,
    PREDEFINED,
    WQ_PERCPU,
    PredefinedQueue,
    Workqueue,
    check_pri,
    check_wq_flags,
)

if TYPE_CHECKING:
    from .continuation import Continuation
    from .mutex import Mutex
    from .runqueue import RunQueue
    from .waiters import CallbackWaiter

logger = logging.getLogger("kcont")

_WQ_PRILOW = next(handle for handle in PREDEFINED if handle.name == "wq_prilow")  # submit's default

ExceptionHandler = Callable[["Continuation[Any]", BaseException], None]


_ckcont = compiled_module()


class _ThreadState(threading.local):
    cpu: CPU | None = None  # the CPU this thread runs on (dispatch or bind_cpu)
    entered: list[RuntimeCore] | None = None  # runtimes entered with `with`


# The compiled core keeps the same two fields in the thread's own state (one
# dict probe from C: Continuation.schedule reads the CPU on every call).
_tls: _ThreadState = _ThreadState() if _ckcont is None else _ckcont.ThreadState()

_registry_lock = threading.Lock()
_entered: list[RuntimeCore] = []  # process-wide, most recent last
_runtime_ids = itertools.count(1)
_serials = itertools.count()
# Every runtime not yet collected (fork, interpreter exit).
_every_runtime: weakref.WeakSet[RuntimeCore] = weakref.WeakSet()


class CPU(CPUFields):
    """A virtual CPU of a runtime: the seed's ``struct cpu_info *ci``.

    ``rqs[band]`` lists the run queues this CPU serves in that band (its own
    per-CPU queues and the shared queues), highest priority first;
    ``ready[band]`` has bit ``i`` set iff ``rqs[band][i]`` has an entry that
    may start (see the run queue module, ``kcont._core.runqueue``).  Both are S.
    """

    __slots__ = ()  # the fields are in its base (kcont._core.layout)

    def __init__(self, rt: RuntimeCore, index: int) -> None:
        self.rt = rt
        self.index = index
        self.rqs: tuple[list[RunQueue], list[RunQueue]] = ([], [])
        self.ready = [0, 0]

    @property
    def runtime(self) -> RuntimeCore:
        return self.rt

    def __repr__(self) -> str:
        return f"<kcont.CPU {self.index} of {self.rt.name}>"


class RuntimeCore(RuntimeFields):
    """Shared state and behaviour of every runtime (see module docstring)."""

    def __init__(self, ncpu: int, hz: int, name: str | None = None) -> None:
        if not isinstance(ncpu, int) or isinstance(ncpu, bool):
            raise TypeError(f"ncpu must be an int, not {type(ncpu).__name__}")
        if ncpu < 1:
            raise InvalidArgumentError(f"ncpu must be >= 1, not {ncpu}")
        if not isinstance(hz, int) or isinstance(hz, bool):
            raise TypeError(f"hz must be an int, not {type(hz).__name__}")
        if hz < 1:
            raise InvalidArgumentError(f"hz must be >= 1, not {hz}")
        self.name = name or f"{type(self).__name__.lower()}{next(_runtime_ids)}"
        self.hz = hz
        self._lock = new_state_lock()
        self._serial = next(_serials)  # fork takes state locks in this order
        self._forked = False  # copied into a child by os.fork(): refuses everything
        self.cpus: tuple[CPU, ...] = tuple(CPU(self, i) for i in range(ncpu))
        self._wheel = TimerWheel()
        self._created = 0  # S: continuations created
        self._closed = False  # S: no new continuation or scheduling
        self._running = 0  # S: invocations in progress
        self._invoked_on_freed = 0  # S: invocations counted by queues since freed
        self._pending_at_close = 0  # S: timers stopped by shutdown
        self._cancelled_at_close = 0  # S: committed invocations cancelled by shutdown
        self._ctx_cache: Context | None = None  # S: see Continuation.schedule
        # S: objects whose last reference was dropped under the state lock,
        # kept until it is released (see _take_dropped_locked).
        self._dropped: list[Any] = []
        # S: recorded events (``_record``); not None means events are
        # recorded: kept in this list if ``_trace_kept``, and fed to
        # ``_timing`` if histograms are on.
        self._trace: list[Any] | None = None
        self._trace_kept = True
        self._trace_clock: Callable[[], int] = self._now  # stamps of trace events
        self._timing: QueueTiming | None = None  # S: histograms (Runtime(histograms=True))
        self._thread_names: dict[int, str] = {}  # S: worker thread idents, for exported traces
        # S: waits that hold no thread (kcont.aio, submit), per continuation
        # (None: the whole runtime), and those fired and not yet woken: see
        # kcont._core.waiters.
        self._callback_waiters: dict[Continuation[Any] | None, dict[CallbackWaiter, None]] = {}
        self._callbacks_ready: list[CallbackWaiter] = []
        self._hooks: tuple[Hook, ...] = ()  # S: instruments (kcont._core.instruments)
        self._slow_ns: int | None = None  # S
        self._slow = SlowReporter()
        # S: run queues parked until a given continuation stops RUNNING.
        self._run_waiters: dict[Continuation[Any], list[tuple[RunQueue, Any]]] = {}
        # S: continuations some thread halts: stopped again whenever a run ends.
        self._halting: dict[Continuation[Any], int] = {}
        self._ended_waiters = 0  # S: threads waiting for an invocation to end
        self._timer_wake = 1 << 62  # S: tick the timer will next look at
        self._wq_order = itertools.count()
        self._acquired: dict[tuple[int, int], Workqueue] = {}  # S
        self._workqueues: list[Workqueue] = []  # S: every live queue
        # Lock-free: queues whose continuation was collected without destroy(),
        # one entry per continuation (Continuation.__del__; taken off under S).
        self._collected: deque[Workqueue] = deque()
        self._predefined: tuple[Workqueue, ...] = tuple(
            self._add_workqueue_locked(p.name, p.pri, WQ_PERCPU, predefined=True) for p in PREDEFINED
        )
        self._failed = 0  # S: functions that raised
        # S: True to time the functions (real time only), or the Watch of
        # the instruments and slow threshold (see _set_watch_locked).
        self._time_funcs: bool | Watch = False
        # The tick source for arming timers; None: virtual time, where the
        # wheel's position (``_wheel.now``) is the current tick.
        self._clock: Callable[[], int] | None = None
        # Called as _kick(rq), state lock held, when rq gets new work; None
        # when nobody needs telling (the simulator steps by itself).
        self._kick: Callable[[RunQueue], None] | None = None
        self.exception_handler: ExceptionHandler = self.default_exception_handler
        with _registry_lock:
            _every_runtime.add(self)
        ki.attach(self)  # KeyboardInterrupt safety (see kcont._core.ki)

    # -- what a concrete runtime provides ----------------------------------

    def _now(self) -> int:
        """The current tick.  Called with the state lock held."""
        raise NotImplementedError

    def _kick_timer(self, deadline: int) -> None:
        """A deadline earlier than ``_timer_wake`` was armed (state lock held)."""

    def _wait_locked(self, done: Callable[[], bool], timeout: float | None, what: str) -> None:
        """Wait, releasing the state lock, until ``done()`` (called with the
        state lock held) is true.  ``what`` names the wait in errors.

        Raises:
            HaltTimeoutError: ``timeout`` seconds passed.
        """
        raise NotImplementedError

    def _flush_would_deadlock_locked(self, kc: Continuation[Any]) -> str | None:
        """Why a flush of ``kc`` that must wait could never end (the caller
        itself is the only thread that could run what it waits for), or None.
        Called with the state lock held, before the wait."""
        return None

    def _notify_ended_locked(self) -> None:
        """An invocation ended or a queued entry was cancelled, and
        ``_ended_waiters`` is non-zero."""

    def _kick_callbacks_locked(self) -> None:
        """Callback waiters fired outside the dispatch function (a stop, a
        replacement): have them woken soon (see ``kcont._core.waiters``).
        By default a call of the dispatch function that finds nothing to run
        does it (the simulator: ``run_until_idle`` and ``advance`` end with
        one)."""

    def _preempt(self, where: str) -> None:
        """A preemption point inside a wait (``halt``, ``flush``,
        ``destroy``): called with no lock of the runtime held, right after one
        was released.  Real threads may be preempted there anyway, so nothing
        happens; the interleaving explorer (:mod:`kcont.interleave`) switches
        threads there, to reach every window a wait leaves open."""

    @ki.protected
    def _wake_parked(self, waiter: tuple[RunQueue, Any]) -> None:
        """Mutex waiter: the lock a sub-queue parked on was released.
        Called with no lock held (from ``Mutex.release``)."""
        rq, key = waiter
        with self._lock:
            if rq.wake_locked(key) and self._kick is not None:
                self._kick(rq)

    def _after_fork_in_child(self, consistent: bool) -> None:
        """In a child made by ``os.fork()``.  ``consistent``: the forking
        thread held the state lock, and has released it in the child.  By
        default the runtime goes on, with a fresh state lock if another
        thread may have held it; a runtime that cannot sets ``_forked`` and
        a :class:`ForkedLock`."""
        if not consistent:
            self._lock = new_state_lock()

    # -- context manager and current runtime --------------------------------

    @ki.protected
    def __enter__(self) -> Any:
        entered = _tls.entered
        if entered is None:
            entered = _tls.entered = []
        entered.append(self)
        with _registry_lock:
            _entered.append(self)
        return self

    @ki.protected
    def __exit__(self, *exc: object) -> None:
        entered = _tls.entered
        if entered and self in entered:
            # remove the innermost occurrence
            del entered[len(entered) - 1 - entered[::-1].index(self)]
        with _registry_lock, contextlib.suppress(ValueError):
            _entered.reverse()
            _entered.remove(self)
            _entered.reverse()

    # -- workqueues --------------------------------------------------------

    def _add_workqueue_locked(self, name: str, pri: int, flags: int, *, predefined: bool) -> Workqueue:
        wq = Workqueue(self, name, pri, flags, predefined=predefined, order=next(self._wq_order))
        self._workqueues.append(wq)
        for i, cpu in enumerate(self.cpus):
            cpu.rqs[wq.band].append(wq.rqs[i])
        self._rank_locked(wq.band)
        return wq

    def _rank_locked(self, band: int) -> None:
        """Sort each CPU's run queues of ``band`` by priority (then creation)
        and give each its ready bit; rebuild the ready masks."""
        for cpu in self.cpus:
            rqs = cpu.rqs[band]
            rqs.sort(key=lambda rq: (-rq.pri, rq.wq.order))
            mask = 0
            for rank, rq in enumerate(rqs):
                rq.bit = 1 << rank
                if rq.fifo or rq.woken:
                    mask |= rq.bit
            cpu.ready[band] = mask

    def workqueue(self, pri: int, *, percpu: bool = False) -> Workqueue:
        """Acquire the queue at priority ``pri`` (Pythonic form of
        ``kcont_workqueue_acquire``).  The same ``(pri, percpu)`` returns the
        same queue; release it with ``wq.release()`` or ``with``."""
        if not isinstance(percpu, bool):
            raise TypeError(f"percpu must be a bool, not {type(percpu).__name__}")
        return self.acquire_workqueue(pri, WQ_PERCPU if percpu else 0)

    @ki.protected
    def acquire_workqueue(self, pri: int, flags: int = 0) -> Workqueue:
        """``kcont_workqueue_acquire(pri, flags)`` for this runtime."""
        pri = check_pri(pri)
        flags = check_wq_flags(flags)
        with self._lock:
            if self._closed:
                raise ShutdownError(f"{self!r} is shut down")
            wq = self._acquired.get((pri, flags))
            if wq is None:
                kind = "percpu" if flags & WQ_PERCPU else "shared"
                wq = self._add_workqueue_locked(f"wq{pri}{kind}", pri, flags, predefined=False)
                self._acquired[(pri, flags)] = wq
            wq.acquired += 1
            return wq

    @ki.protected
    def _release_workqueue(self, wq: Workqueue) -> int:
        """``kcont_workqueue_release``: 0, EBUSY or EINVAL."""
        if not isinstance(wq, Workqueue):
            raise TypeError(f"expected a kcont workqueue, not {type(wq).__name__}")
        with self._lock:
            if wq.predefined or wq.freed or wq.acquired <= 0 or wq.rt is not self:
                return errno.EINVAL
            self._reap_collected_locked()
            if wq.acquired == 1:
                if wq.bound:
                    return errno.EBUSY
                self._free_workqueue_locked(wq)
            wq.acquired -= 1
            return 0

    def _reap_collected_locked(self) -> None:
        """Unbind the continuations collected without ``destroy()``."""
        collected = self._collected
        while collected:  # only S holders take entries off: none vanishes under us
            collected.popleft().bound -= 1

    def _free_workqueue_locked(self, wq: Workqueue) -> None:
        wq.freed = True
        self._invoked_on_freed += sum(rq.invoked for rq in wq.unique_rqs())
        del self._acquired[(wq.pri, wq.flags)]
        self._workqueues.remove(wq)
        for i, cpu in enumerate(self.cpus):
            cpu.rqs[wq.band].remove(wq.rqs[i])
        self._rank_locked(wq.band)
        if self._timing is not None:
            self._timing.forget_locked(wq)

    @property
    @ki.protected
    def workqueues(self) -> tuple[Workqueue, ...]:
        """Every live queue, predefined ones first."""
        with self._lock:
            return tuple(self._workqueues)

    def predefined(self, name: str) -> Workqueue:
        """This runtime's predefined queue called ``name`` (e.g. ``'wq_softnet'``)."""
        for wq in self._predefined:
            if wq.name == name:
                return wq
        raise KeyError(name)

    # -- continuations -----------------------------------------------------

    def continuation(
        self,
        wq: Any,
        func: Callable[[Any, Continuation[Any]], object],
        arg: Any = None,
        *,
        lock: Any = None,
        name: str | None = None,
    ) -> Continuation[Any]:
        """Create a continuation on ``wq`` (a queue of this runtime or a
        predefined handle, resolved here rather than in the current runtime)."""
        from .continuation import Continuation
        from .workqueue import PredefinedQueue

        if isinstance(wq, PredefinedQueue):
            wq = wq.resolve(self)
        elif isinstance(wq, Workqueue) and wq.rt is not self:
            raise InvalidArgumentError(f"{wq!r} belongs to another runtime than {self!r}")
        return Continuation(wq, func, arg, lock=lock, name=name)

    # -- exceptions ----------------------------------------------------------

    def default_exception_handler(self, kc: Continuation[Any], exc: BaseException) -> None:
        """Log the exception with its traceback on the ``kcont`` logger."""
        logger.error("exception in %r on %s", kc, self.name, exc_info=exc)

    def _report_exception(self, kc: Continuation[Any], exc: BaseException) -> None:
        """Hand ``exc`` (raised by ``kc``'s function) to the exception handler.
        Never raises: a failing handler is logged, whatever it raised (a
        handler that re-raises a function's KeyboardInterrupt must not kill
        the worker that called it)."""
        try:
            self.exception_handler(kc, exc)
        except BaseException:
            logger.exception("kcont exception handler %r failed", self.exception_handler)

    # -- instruments and slow invocations ------------------------------------

    def add_instrument(self, instrument: object) -> None:
        """Call ``instrument.before_invocation(kc, cpu)`` before and
        ``instrument.after_invocation(kc, cpu, elapsed_ns, exc)`` after every
        invocation (either method may be missing; see
        :class:`~kcont.Instrument`), on the thread that runs it, with no lock
        of the runtime held.  An instrument that raises is logged and
        removed.  Adding one already added does nothing.  Takes effect from
        the next call of the dispatch function (a worker's next batch of at
        most 64 invocations).

        Raises:
            TypeError: ``instrument`` has neither method, or one is not callable.
        """
        hook = hook_for(instrument)  # user code (getattr): before taking the lock
        with self._lock:
            if any(h.instrument is instrument for h in self._hooks):
                return
            self._set_watch_locked((*self._hooks, hook), self._slow_ns)

    def remove_instrument(self, instrument: object) -> None:
        """Stop calling ``instrument``: no call of it begins once this
        returns (one already begun on another thread may still be running).

        Raises:
            KeyError: it is not an instrument of this runtime.
        """
        with self._lock:
            hooks = tuple(hook for hook in self._hooks if hook.instrument is not instrument)
            if len(hooks) == len(self._hooks):
                raise KeyError(instrument)
            for hook in self._hooks:
                if hook.instrument is instrument:
                    hook.alive = False  # for the batches running with the old watch
            self._set_watch_locked(hooks, self._slow_ns)

    @property
    def instruments(self) -> tuple[object, ...]:
        """The instruments, in the order they were added."""
        with self._lock:
            return tuple(hook.instrument for hook in self._hooks)

    @property
    def slow_threshold(self) -> float | None:
        """Seconds (real time, on every runtime) after which a function is
        reported as slow by a WARNING on the ``kcont`` logger, at most once a
        minute per continuation name; None (the default) reports nothing."""
        slow_ns = self._slow_ns
        return None if slow_ns is None else slow_ns / 1e9

    @slow_threshold.setter
    def slow_threshold(self, seconds: float | None) -> None:
        slow_ns = None
        if seconds is not None:
            checked = check_timeout(seconds)
            if checked is None or checked <= 0:
                raise InvalidArgumentError(f"slow_threshold must be a number of seconds > 0, not {seconds!r}")
            slow_ns = int(checked * 1e9)
        with self._lock:
            self._set_watch_locked(self._hooks, slow_ns)

    def _set_watch_locked(self, hooks: tuple[Hook, ...], slow_ns: int | None) -> None:
        self._hooks = hooks
        self._slow_ns = slow_ns
        real_time = self._clock is not None
        watch = make_watch(hooks, slow_ns, count_time=real_time)
        # One attribute for the dispatch function to test, which it did anyway.
        self._time_funcs = real_time if watch is None else watch

    def _drop_hook(self, hook: Hook, method: str, exc: BaseException) -> None:
        """An instrument raised (no lock held): log it and remove it."""
        hook.alive = False
        with self._lock:
            removed = hook in self._hooks
            if removed:
                self._set_watch_locked(tuple(h for h in self._hooks if h is not hook), self._slow_ns)
        if removed:
            logger.error(
                "kcont instrument %r raised in %s and was removed from %s",
                hook.instrument,
                method,
                self.name,
                exc_info=exc,
            )

    # -- one-shot work -------------------------------------------------------

    def submit(
        self,
        func: Callable[[Any], Any],
        arg: Any = None,
        *,
        wq: Workqueue | PredefinedQueue = _WQ_PRILOW,
        lock: Mutex | None = None,
        cpu: CPU | None = None,
        name: str | None = None,
    ) -> Future[Any]:
        """Run ``func(arg)`` once on a workqueue and return a
        :class:`concurrent.futures.Future` of its result (or exception), as
        ``Executor.submit`` does; ``await asyncio.wrap_future(...)`` it from
        asyncio.  A one-shot continuation carries it, destroyed once it ran.

        Cancelling the future before the function starts stops the
        continuation: the function never runs.  If the invocation is stopped
        otherwise (``shutdown(cancel=True)``), the future is cancelled.

        Args:
            func: called as ``func(arg)`` (use ``functools.partial`` for more
                arguments).
            arg: its argument.
            wq: the workqueue (a queue of this runtime or a predefined
                handle); default ``wq_prilow``, a thread-level queue whose
                functions may block.
            lock: a :class:`~kcont.Mutex` held while ``func`` runs.
            cpu: the CPU, for a per-CPU queue (default: the caller's).
            name: the label in traces and logs (default: ``func``'s name).

        Raises:
            TypeError: ``func`` is not callable.
            ShutdownError: the runtime is shut down.
        """
        from .submit import submit

        return submit(self, func, arg, wq=wq, lock=lock, cpu=cpu, name=name)

    # -- trace -------------------------------------------------------------

    def _record(self, event: str, kc: Continuation[Any] | None, cpu: CPU | None, detail: Any = None) -> None:
        """Record a trace event (state lock held, ``_trace`` not None).

        An event is ``(stamp, event, label, cpu index, detail, key, thread,
        queue)``: the stamp of ``_trace_clock`` (ticks on the simulator,
        ``perf_counter_ns`` on the threaded runtime), ``id(kc)`` as the key
        that pairs an invocation's events, the recording thread's ident and
        the workqueue's name."""
        trace = self._trace
        if trace is None:
            return
        stamp = self._trace_clock()
        if kc is not None and self._timing is not None:
            self._timing.feed_locked(event, kc, detail, stamp)
        if self._trace_kept:
            trace.append(
                (
                    stamp,
                    event,
                    label_of(kc),
                    None if cpu is None else cpu.index,
                    detail,
                    0 if kc is None else id(kc),
                    threading.get_ident(),
                    "" if kc is None else kc._wq.name,
                )
            )

    def export_trace(self, path: str | os.PathLike[str], *, instants: bool = True) -> int:
        """Write the recorded trace as Chrome trace event JSON, which
        https://ui.perfetto.dev ("Open trace file") and ``chrome://tracing``
        open: one span per invocation on the track of the thread (threaded
        runtime) or CPU (simulator) that ran it, with its queue wait and lock
        wait; schedules, expiries, parks, stops and destroys as instant
        events if ``instants``.  Returns the number of spans written.

        Raises:
            InvalidArgumentError: the runtime was not created with ``trace=True``.
        """
        from .tracing import write_chrome_trace

        live = {thread.ident: thread.name for thread in threading.enumerate() if thread.ident is not None}
        with self._lock:
            if self._trace is None or not self._trace_kept:
                raise InvalidArgumentError(f"{self!r} records no trace: create it with trace=True")
            events = list(self._trace)
            thread_names = {**live, **self._thread_names}  # workers that exited keep their names
        return write_chrome_trace(
            path,
            events,
            runtime=self.name,
            virtual=self._clock is None,
            hz=self.hz,
            origin=self._trace_origin,
            thread_names=thread_names,
            instants=instants,
        )

    @property
    def _trace_origin(self) -> int:
        """The stamp drawn as time 0 in an exported trace."""
        return 0

    # -- statistics ----------------------------------------------------------

    @ki.protected
    def stats(self) -> RuntimeStats:
        """Counters per queue, per CPU and in total (a snapshot).

        Per queue and per CPU: ``scheduled``, ``armed``, ``invoked``,
        ``ebusy``, ``stopped``, ``lock_waits``, ``reentry_waits``, ``late``,
        ``late_ticks``, ``exceptions``, ``depth`` (now), ``depth_hwm`` and
        ``func_ns``.  Per queue also ``pri``, ``percpu``, ``bound`` and, with
        histograms on, ``queue_wait_ns`` and ``run_ns`` (log2 histograms, see
        ``kcont._core.stats``).  The types are :class:`~kcont.RuntimeStats`
        and its parts.
        """
        with self._lock:
            self._reap_collected_locked()
            names = (*COUNTERS, "depth")
            queues: dict[str, dict[str, Any]] = {}
            cpus = [dict.fromkeys(names, 0) for _ in self.cpus]
            totals = dict.fromkeys(names, 0)
            for wq in self._workqueues:
                q = queues[wq.name] = dict.fromkeys(names, 0)
                for rq in wq.unique_rqs():
                    sample = {name: getattr(rq, name) for name in COUNTERS}
                    sample["depth"] = rq.depth()
                    _fold(q, sample)
                    if rq.cpu is not None:
                        _fold(cpus[rq.cpu.index], sample)
                _fold(totals, q)
                q["pri"] = wq.pri
                q["percpu"] = int(wq.percpu)
                q["bound"] = wq.bound
                if self._timing is not None:
                    q["queue_wait_ns"], q["run_ns"] = self._timing.histograms_locked(wq)
            stats = {
                "runtime": self.name,
                "ticks": self._now(),
                "hz": self.hz,
                "ncpu": len(self.cpus),
                "continuations_created": self._created,
                "pending_timers": len(self._wheel),
                "queues": queues,
                "cpus": cpus,
                "totals": totals,
            }
            return cast(RuntimeStats, stats)

    # -- shutdown helpers ----------------------------------------------------

    def _invoked_total_locked(self) -> int:
        live = sum(rq.invoked for wq in self._workqueues for rq in wq.unique_rqs())
        return live + self._invoked_on_freed

    @ki.protected
    def _account(self) -> ShutdownAccount:
        """The shutdown account so far (final once nothing runs)."""
        with self._lock:
            return ShutdownAccount(
                ran=self._invoked_total_locked(),
                failed=self._failed,
                cancelled=self._cancelled_at_close,
                pending=self._pending_at_close,
                unfinished=self._running,
            )

    @ki.protected
    def _take_dropped_locked(self) -> list[Any]:
        """Hand over the objects dropped under the state lock.  The caller
        keeps the list until it has released the lock, so that their
        ``__del__`` or weakref callbacks, which are user code and may use the
        runtime, never run with the lock held."""
        dropped = self._dropped
        if dropped:
            self._dropped = []
        return dropped

    def _close_locked(self, cancel: bool) -> list[Any]:
        """Refuse new work; stop every pending timer and, if ``cancel``, every
        queued invocation, adding them to the shutdown account.  Idempotent.
        Returns what was dropped (``_take_dropped_locked``): keep it until the
        lock is released."""
        self._closed = True
        pending = list(self._wheel)
        for kc in pending:
            kc._stop_locked()
        self._pending_at_close += len(pending)
        self._dropped.extend(pending)  # the wheel may have held their last reference
        if cancel:
            for wq in self._workqueues:
                for rq in wq.unique_rqs():
                    queued = _queued_entries(rq)
                    for kc in queued:
                        kc._stop_locked()
                        self._cancelled_at_close += 1
                    self._dropped.extend(queued)
        return self._take_dropped_locked()

    def _queued_locked(self) -> int:
        """Entries committed and not started, parked ones included."""
        return sum(rq.depth() for wq in self._workqueues for rq in wq.unique_rqs())

    @ki.protected
    def pending_dump(self) -> list[dict[str, Any]]:
        """What is armed or queued now, like ``/proc/timer_list``: one entry per
        continuation with its name, queue, CPU, state and deadline."""
        with self._lock:
            rows = []
            now = self._now()
            for kc in self._wheel:
                rows.append(_describe(kc, now))
            for wq in self._workqueues:
                for rq in wq.unique_rqs():
                    rows.extend(_describe(kc, now) for kc in _queued_entries(rq))
            return rows


def _fold(into: dict[str, Any], sample: dict[str, Any]) -> None:
    """Add counters of ``sample`` into ``into``; a high-water mark takes the max."""
    for name, value in sample.items():
        into[name] = max(into[name], value) if name == "depth_hwm" else into[name] + value


@dataclass(frozen=True)
class ShutdownAccount:
    """What ``shutdown()`` found and did.

    Attributes:
        ran: invocations over the runtime's life (including those that raised).
        failed: invocations whose function raised.
        cancelled: committed invocations cancelled by ``shutdown(cancel=True)``.
        pending: armed timers stopped by the shutdown (they never fired).
        unfinished: invocations still running when shutdown stopped waiting.
    """

    ran: int
    failed: int
    cancelled: int
    pending: int
    unfinished: int


# Callables whose __qualname__ is read without running user code.
_PLAIN_FUNCTIONS = (FunctionType, MethodType, BuiltinFunctionType)


def label_of(kc: Continuation[Any] | None) -> str:
    """A continuation's name, or its function's qualified name (its type's for
    any other callable).  Traces and error messages are built under the state
    lock, so this runs no user code (no ``__repr__``, ``__getattr__`` or
    ``__bool__`` of a user object): code that uses the runtime would deadlock
    there."""
    if kc is None:
        return ""
    name = kc.name
    if name is not None and type(name) is str and name:
        return name
    func = kc._func
    if type(func) in _PLAIN_FUNCTIONS:
        return func.__qualname__
    return type(func).__qualname__


def _queued_entries(rq: RunQueue) -> list[Continuation[Any]]:
    entries = list(rq.fifo)
    for sub in (*rq.parked.values(), *rq.woken.values()):
        entries.extend(sub)
    return entries


def _describe(kc: Continuation[Any], now: int) -> dict[str, Any]:
    return {
        "continuation": repr(kc),
        "queue": kc._wq.name,
        "cpu": None if kc._rq.cpu is None else kc._rq.cpu.index,
        "flags": kc.flags,
        "deadline": kc._deadline if kc._flags & PENDING else None,
        "in_ticks": kc._deadline - now if kc._flags & PENDING else None,
        "queued": bool(kc._flags & QUEUED),
        "destroyed": bool(kc._flags & DESTROYED),
    }


# -- os.fork() -------------------------------------------------------------------------
#
# The forking thread takes every runtime's state lock (in creation order, so
# two threads forking at once cannot deadlock), then the registry locks, as
# CPython does for its own locks: the child's copies are then consistent (no
# transition half done), and the parent's threads only wait a moment.  No
# thread ever waits for another lock while holding a state lock, and no user
# code runs under one, so the forking thread can always get them; a bounded
# wait still guards against the unforeseen (a lock not taken is replaced in
# the child all the same).  In the child, every lock a parent's thread may
# have held is replaced: the threaded runtimes refuse everything
# (ForkedRuntimeError, see kcont.threaded), the simulated ones go on, unless
# a thread other than the forking one was stepping them (see kcont.sim).

_FORK_LOCK_WAIT = 2.0  # seconds


class ForkedLock:
    """The state lock of a runtime that cannot run in a child process made
    by ``os.fork()``: every use raises :class:`~kcont.ForkedRuntimeError`
    with ``message``, so nothing waits on a lock or a thread that does not
    exist in the child."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        raise ForkedRuntimeError(self.message)

    def release(self) -> None:
        raise ForkedRuntimeError(self.message)

    def locked(self) -> bool:
        return False

    def __enter__(self) -> bool:
        raise ForkedRuntimeError(self.message)

    def __exit__(self, *exc: object) -> None:
        raise ForkedRuntimeError(self.message)


_fork_held: list[threading.Lock] = []  # state locks the forking thread holds
# The runtimes whose state locks the forking thread takes, kept alive until
# the fork is over: one collected meanwhile (any allocation in another fork
# hook may run the garbage collector) would run its finalizer while the
# forking thread holds its lock.
_fork_runtimes: list[RuntimeCore] = []
_fork_pruning_held = False  # the forking thread holds the Mutex registry's prune lock


@ki.protected
def _before_fork() -> None:
    global _fork_pruning_held
    # First: a prune never waits for a state lock, and a fork must not copy
    # one in the middle (see kcont._core.mutex).
    _fork_pruning_held = _mutex.before_fork()
    with _registry_lock:
        runtimes = sorted(_every_runtime, key=lambda rt: rt._serial)
    _fork_runtimes[:] = runtimes
    del runtimes
    for rt in _fork_runtimes:
        lock = rt._lock
        if lock.acquire(True, _FORK_LOCK_WAIT):
            _fork_held.append(lock)
    _registry_lock.acquire()


@ki.protected
def _after_fork_in_parent() -> None:
    _registry_lock.release()
    while _fork_held:
        _fork_held.pop().release()
    _fork_runtimes.clear()  # a runtime collected now finds its state lock free
    _mutex.after_fork(_fork_pruning_held, in_child=False)


@ki.protected
def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    # Released, not just replaced: the forking thread may be inside a
    # continuation, and the dispatch function it returns to takes its runtime's
    # lock again (a threaded runtime's dispatch then finds nothing to run).
    held = {id(lock) for lock in _fork_held}
    while _fork_held:
        _fork_held.pop().release()
    forked: set[int] = set()
    runtimes = list(_every_runtime)  # alive while their ids are compared
    for rt in runtimes:
        rt._after_fork_in_child(id(rt._lock) in held)
        if rt._forked:
            forked.add(id(rt))
            _every_runtime.discard(rt)  # nothing to shut down at exit: no thread of it here

    def dead_waiter(waiter: tuple[Callable[[Any], None], Any]) -> bool:
        # A waiter is a runtime's _wake_parked (kcont's own bound method).
        return id(getattr(waiter[0], "__self__", None)) in forked

    _mutex.after_fork_in_child(dead_waiter)
    _mutex.after_fork(_fork_pruning_held, in_child=True)
    cpu = _tls.cpu
    if cpu is not None and cpu.rt._forked:
        # Forked from inside a continuation: the child is no CPU's worker, and
        # its current runtime is whatever it enters.
        _tls.cpu = None
    _fork_runtimes.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )


def check_timeout(timeout: object) -> float | None:
    """``timeout`` as seconds (None: no limit); raises before any side effect."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    if timeout != timeout or timeout < 0:  # NaN or negative
        raise InvalidArgumentError(f"timeout must be >= 0 seconds, not {timeout!r}")
    # Longer than a lock can wait (inf, 1e12...) is as good as no limit, but
    # must not reach Lock.acquire, which raises OverflowError beyond it.
    return min(float(timeout), threading.TIMEOUT_MAX)


def current_runtime() -> RuntimeCore:
    """The runtime the calling thread works with (see module docstring).

    Raises:
        NoRuntimeError: none is current.
    """
    cpu = _tls.cpu
    if cpu is not None:
        return cpu.rt
    entered = _tls.entered
    if entered:
        return entered[-1]
    with _registry_lock:
        if _entered:
            return _entered[-1]
    raise NoRuntimeError("no kcont runtime is current: use `with runtime:` or pass a runtime's workqueue")


def curcpu() -> CPU:
    """The CPU the calling thread is on: the CPU running the current
    continuation, the CPU bound with :func:`bind_cpu`, or CPU 0 of the
    current runtime."""
    cpu = _tls.cpu
    if cpu is not None:
        return cpu
    return current_runtime().cpus[0]


@contextlib.contextmanager
def bind_cpu(cpu: CPU) -> Iterator[CPU]:
    """Run the body on ``cpu``, like an interrupt with that CPU's affinity:
    ``schedule(cpu=None)`` on a per-CPU queue then targets ``cpu``."""
    if not isinstance(cpu, CPU):
        raise TypeError(f"bind_cpu expects a kcont CPU handle, not {type(cpu).__name__}")
    previous = _tls.cpu
    _tls.cpu = cpu
    try:
        yield cpu
    finally:
        _tls.cpu = previous


__all__ = [
    "ALL_BANDS",
    "BAND_NAMES",
    "BAND_SOFT",
    "BAND_THREAD",
    "CPU",
    "RuntimeCore",
    "ShutdownAccount",
    "bind_cpu",
    "curcpu",
    "current_runtime",
]

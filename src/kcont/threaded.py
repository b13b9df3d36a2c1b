"""Runtime: the threaded runtime, with real worker threads and real time.

What it owns
    Worker threads, the clock and the timer thread.  The state machine, the
    ordering rules, the timer wheel and the dispatch function are the shared
    core's; this module only decides *which thread* calls the dispatch
    function *when*.  docs/runtime.md describes the model.

Threads (names: ``kcont/<runtime>/<cpu>/<band>[<n>]``)
    * per CPU, one **soft worker** serves the soft-level queues (priority >=
      ``PRI_SOFT_MIN``: ``wq_soft*``), highest priority first, like NetBSD's
      softint LWPs.  It never waits behind thread-level work.
    * per CPU, **thread workers** serve the thread-level queues (``wq_pri*``),
      whose functions may block.  One is permanent.  When thread-level work
      waits on a CPU while every thread worker of that CPU has been inside the
      same invocation for ``stall_threshold`` seconds, the manager starts
      another one (up to ``max_thread_workers``); an extra worker idle for
      ``idle_timeout`` seconds exits (Linux's concurrency-managed workqueues
      keep one runnable worker per CPU in the same spirit).
    * one **timer thread** expires due timers and runs the manager.  It is
      tickless: it sleeps until the earliest deadline (or until a worker
      stall must be checked), and is woken only when an earlier deadline is
      armed.

Time
    Tick ``t`` begins ``t/hz`` seconds after the runtime started, on
    ``time.monotonic_ns()``.  A timer armed for tick ``d`` expires once the
    clock has reached tick ``d``: never early; how late is counted
    (``stats()``: ``late``, ``late_ticks``).

Waking workers
    An idle worker sleeps on its own binary semaphore (a ``threading.Lock``
    it holds).  ``_kick_worker_locked`` (state lock held) takes one idle worker of the right
    CPU and band off the idle list and releases its semaphore: exactly one
    release per sleep, no lost wake-up because a worker re-checks for work
    under the state lock before it declares itself idle.

Lifetime
    The threads reference the runtime weakly (``_worker_main`` and
    ``_timer_main`` are functions given a ``weakref.ref``, and a worker knows
    its CPU by index, since a CPU references its runtime).  Awake, a thread
    holds the runtime strongly; before it sleeps it drops every reference, so
    a runtime nobody else references (not current, no continuation of it
    alive) is collected even though its threads run.  Its finalizer
    (``_collected``) warns with a ``ResourceWarning``, as an unclosed file
    does, and wakes the sleeping threads, which find the runtime gone and
    exit.  The hot path is unchanged: a worker looks the runtime up once per
    wake-up, and then runs batches until its band is empty.  ``shutdown()``
    detaches the finalizer.  At interpreter exit, every runtime still running
    is warned about and shut down with ``cancel=True``, all at once
    (``_shutdown_at_exit``: about one second at most in all).

Locking
    S (the core's state lock) guards the idle lists, ``_starved``,
    ``_threads.timer_sleeping``, ``_stopping``, the worker lists and every
    counter here.  ``_ended`` is a ``ki.Condition`` on S (halt, destroy,
    flush, wait_idle, shutdown's drain): its waiters sleep on their own
    token, so a KeyboardInterrupt ends the sleep but never the re-take of S
    (``threading.Condition.wait`` takes the lock back in a ``finally`` that an
    interrupt can break).  The main thread's entry points that take S are
    ``@ki.protected`` (creation, ``__exit__``, ``shutdown``, the waits,
    ``wait_ticks``'s expiry); joining threads (``_join_thread``) is
    interruptible (see :mod:`kcont._core.ki`).
    Worker semaphores are released with S held (a release never blocks).
    The finalizer runs wherever garbage collection runs, maybe in a thread
    that holds S: it only tries S; when S is busy, it lists the threads in
    ``_unwoken`` (lock-free), which the timer threads and the fork hooks
    drain once they no longer hold a state lock (see ``_collected``).

After os.fork()
    A child process has none of the parent's threads.  Every threaded
    runtime of the parent refuses every use in the child with
    :class:`~kcont.ForkedRuntimeError` (its state lock becomes a
    ``ForkedLock``, which raises instead of locking, so nothing can wait on a
    lock a parent's thread held or for a worker that does not exist);
    predicates still read.  Leaving its ``with`` block does nothing, and
    interpreter exit does not wait for it.  A new Runtime created in the
    child works normally.  A child forked inside a continuation is a copy
    of a worker thread: when the function returns (or calls ``sys.exit``),
    that thread is back in the worker loop of the parent's runtime, which
    finds nothing to run (the child's copy has no ready work), and the child
    process ends (``_exit_forked_child``) with the status ``sys.exit`` gave,
    or 1 if the function raised (reported first).  (Refused rather than
    rebuilt: a rebuilt runtime would silently lose the work the parent had
    queued, and run the parent's continuations twice, once in each process.)
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ._core import ki
from ._core import runtime as _core_runtime
from ._core.continuation import Continuation, expire_locked
from ._core.dispatch import dispatch
from ._core.flags import QUEUED
from ._core.runqueue import RunQueue
from ._core.runtime import CPU, ForkedLock, RuntimeCore, ShutdownAccount, _tls, check_timeout, logger
from ._core.stats import QueueTiming, ThreadedRuntimeStats
from ._core.waiters import deliver
from ._core.workqueue import BAND_NAMES, BAND_SOFT, BAND_THREAD
from .errors import ForkedRuntimeError, HaltTimeoutError, InvalidArgumentError, WouldDeadlockError

__all__ = ["Runtime"]

_FAR = 1 << 62
_EXIT = -1  # _timer_pass: the timer thread must exit
# Seconds shutdown waits for threads once the drain is over or given up (a
# worker still inside a function is left behind, a daemon), and at least for
# the timer thread.
_JOIN_GRACE = 0.5
_TIMER_JOIN = 2.0
# Seconds interpreter exit lets the runtimes still running drain, all at once.
_EXIT_DRAIN = 1.0
# Invocations a worker runs per call of the dispatch function (the end of one
# and the pick of the next share a critical section); between batches it
# re-checks shutdown.
_BATCH = 64
_NS = 1_000_000_000


class _Worker:
    """One worker thread: a CPU (its index: a CPU references its runtime), a
    band and a semaphore to sleep on."""

    __slots__ = ("band", "cpu_index", "idle", "permanent", "sem", "thread")

    def __init__(self, cpu_index: int, band: int, permanent: bool) -> None:
        self.cpu_index = cpu_index
        self.band = band
        self.permanent = permanent
        self.sem = threading.Lock()
        self.sem.acquire()  # held while awake; released by a kick
        self.idle = False  # S
        self.thread: threading.Thread | None = None


class _Threads:
    """What a runtime's threads and its finalizer keep: never the Runtime
    itself, so that a runtime nobody references can be collected."""

    __slots__ = ("idle", "lock", "name", "timer_sem", "timer_sleeping", "workers")

    def __init__(self, name: str, lock: threading.Lock, ncpu: int) -> None:
        self.name = name
        self.lock = lock  # the runtime's state lock, S
        self.workers: list[_Worker] = []  # S: live workers
        # S: idle workers, per CPU and band
        self.idle: list[tuple[list[_Worker], list[_Worker]]] = [([], []) for _ in range(ncpu)]
        self.timer_sem = threading.Lock()
        self.timer_sem.acquire()  # held while the timer thread is awake
        self.timer_sleeping = False  # S

    def wake_timer_locked(self) -> None:
        if self.timer_sleeping:
            self.timer_sleeping = False
            self.timer_sem.release()

    def wake_all_locked(self) -> None:
        for per_cpu in self.idle:
            for idle in per_cpu:
                while idle:
                    _wake_one_locked(idle)
        self.wake_timer_locked()


class Runtime(RuntimeCore):
    """The threaded runtime: ``ncpu`` virtual CPUs served by worker threads.

    Args:
        ncpu: virtual CPUs; default: the CPUs this process may run on.
        hz: ticks per second for ``nticks``.
        name: used in thread names and ``repr``.
        pin: pin each virtual CPU's workers to an OS CPU (Linux): True maps
            CPU ``i`` to the ``i``-th allowed OS CPU (modulo their number); a
            sequence gives the OS CPU of each virtual CPU.
        max_thread_workers: thread workers per CPU at most.
        stall_threshold: seconds a thread worker may stay inside one
            invocation, while thread-level work waits, before another worker
            is started.
        idle_timeout: seconds after which an extra idle thread worker exits.
        trace: record every schedule, expiry, start and end, with
            ``time.perf_counter_ns`` stamps and thread idents, for
            :meth:`~kcont.RuntimeCore.export_trace` (the list grows with every event: for
            bounded runs).
        histograms: keep per-queue log2 histograms of queue wait and run
            time, in ``stats()`` (``queue_wait_ns``, ``run_ns``).
        slow_threshold: seconds; a function that runs longer is reported by
            a WARNING on the ``kcont`` logger (see ``slow_threshold``).

    Tracing, histograms, instruments and the slow threshold cost nothing
    when off.

    Context manager: inside ``with rt:`` it is the current runtime; leaving
    the block shuts it down (``shutdown(wait=True)``).
    """

    @ki.protected
    def __init__(
        self,
        ncpu: int | None = None,
        hz: int = 1000,
        *,
        name: str | None = None,
        pin: bool | Sequence[int] = False,
        max_thread_workers: int = 4,
        stall_threshold: float = 0.02,
        idle_timeout: float = 5.0,
        trace: bool = False,
        histograms: bool = False,
        slow_threshold: float | None = None,
    ) -> None:
        if ncpu is None:
            ncpu = _available_cpus()
        if not isinstance(max_thread_workers, int) or isinstance(max_thread_workers, bool):
            raise TypeError(f"max_thread_workers must be an int, not {type(max_thread_workers).__name__}")
        if max_thread_workers < 1:
            raise InvalidArgumentError(f"max_thread_workers must be >= 1, not {max_thread_workers}")
        seconds = {}
        for label, value in (("stall_threshold", stall_threshold), ("idle_timeout", idle_timeout)):
            checked = check_timeout(value)  # clamped to what a lock can wait: inf never retires
            if checked is None or checked <= 0:
                raise InvalidArgumentError(f"{label} must be a number of seconds > 0, not {value!r}")
            seconds[label] = checked
        if not isinstance(trace, bool) or not isinstance(histograms, bool):
            raise TypeError("trace and histograms must be bools")
        self._pin_map = _pin_map(pin, ncpu)
        super().__init__(ncpu, hz, name)
        self._trace_t0 = time.perf_counter_ns()
        self._trace_clock = time.perf_counter_ns
        if trace or histograms:
            self._trace = []
            self._trace_kept = trace
        if histograms:
            self._timing = QueueTiming()
        self.max_thread_workers = max_thread_workers
        self.stall_threshold = seconds["stall_threshold"]
        self.idle_timeout = seconds["idle_timeout"]
        self._kick = self._kick_worker_locked
        self._time_funcs = True
        self._clock = self._now
        if slow_threshold is not None:
            self.slow_threshold = slow_threshold  # after _clock: it counts real time
        self._t0 = time.monotonic_ns()
        self._ended = ki.Condition(self._lock)  # its wait is interruptible, its re-take is not
        self._stopping = False  # S: workers exit once their band is drained
        self._abandon = False  # S: shutdown gave up waiting: exit even with work left
        self._shutdown_lock = threading.Lock()
        self._threads = _Threads(self.name, self._lock, ncpu)
        self._idle = self._threads.idle  # S: idle workers, per CPU and band
        self._workers = self._threads.workers  # S: live workers
        self._thread_workers = [0] * ncpu  # S: live thread workers per CPU
        # S: dispatch calls of each CPU's thread workers that ran something
        # (see _band_progress_locked).
        self._thread_progress = [0] * ncpu
        self._starved: dict[int, tuple[float, int]] = {}  # S: see _check_stalls_locked
        self._spawned_extra = 0  # S
        self._timer_wakeups = 0  # S
        # The threads reference the runtime weakly: see "Lifetime" above.
        self._ref = weakref.ref(self)
        self._timer_thread = threading.Thread(
            target=_timer_main, args=(self._ref, self._threads), name=f"kcont/{self.name}/timer", daemon=True
        )
        self._finalizer = weakref.finalize(self, _collected, self._threads)
        self._finalizer.atexit = False  # _shutdown_at_exit does it, for every runtime at once
        with self._lock:
            for cpu in self.cpus:
                self._spawn_locked(cpu, BAND_SOFT, permanent=True)
                self._spawn_locked(cpu, BAND_THREAD, permanent=True)
        self._timer_thread.start()

    def __repr__(self) -> str:
        state = " forked (the parent's)" if self._forked else " shut down" if self._closed else ""
        return f"<kcont.Runtime {self.name} ncpu={len(self.cpus)} hz={self.hz}{state}>"

    @ki.protected
    def __exit__(self, *exc: object) -> None:
        try:
            if not self._forked:  # the parent shuts it down, not the child
                self.shutdown()
        finally:
            super().__exit__(*exc)

    def _after_fork_in_child(self, consistent: bool) -> None:
        forked = ForkedLock(
            f"kcont.Runtime {self.name} belongs to the parent process: os.fork() copied it into "
            "this child without its threads, so it can run nothing here; create a new "
            "kcont.Runtime in the child"
        )
        self._forked = True
        self._closed = True
        # Nothing of the parent's runs here, not even in a dispatch call the
        # forking thread returns to (forked inside a continuation).
        for cpu in self.cpus:
            cpu.ready[:] = [0] * len(cpu.ready)
        self._kick = None
        self._run_waiters.clear()  # (their sub-queues would be made ready again)
        self._halting.clear()
        self._ended_waiters = 0  # the waiting threads do not exist here
        # Every operation takes the state lock first: each now raises.
        self._lock = forked  # type: ignore[assignment]
        self._shutdown_lock = threading.Lock()
        # (Forked while another thread was still in __init__: some are missing.)
        threads = getattr(self, "_threads", None)
        if threads is not None:
            threads.lock = forked
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer.detach()  # collected in the child: nothing to warn about or wake

    def _report_exception(self, kc: Continuation[Any], exc: BaseException) -> None:
        if self._forked and isinstance(exc, SystemExit):
            # sys.exit() in the child of a fork made inside kc's function: the
            # child exits (_worker_main), it is no failure of the function.
            raise exc
        super()._report_exception(kc, exc)
        if self._forked:
            # The function failed in such a child: reported, then the child
            # exits with status 1, as a multiprocessing child that raised.
            raise SystemExit(1)

    # -- clock ---------------------------------------------------------------

    @ki.protected
    def _now(self) -> int:
        return (time.monotonic_ns() - self._t0) * self.hz // _NS

    @property
    def ticks(self) -> int:
        """The current tick."""
        return self._now()

    def _tick_start_ns(self, tick: int) -> int:
        return self._t0 + -(-tick * _NS // self.hz)

    # -- workers ---------------------------------------------------------------

    def _spawn_locked(self, cpu: CPU, band: int, *, permanent: bool) -> None:
        worker = _Worker(cpu.index, band, permanent)
        suffix = BAND_NAMES[band]
        if band == BAND_THREAD:
            self._thread_workers[cpu.index] += 1
            suffix += str(self._thread_workers[cpu.index] - 1)
        thread = threading.Thread(
            target=_worker_main,
            args=(self._ref, worker),
            name=f"kcont/{self.name}/{cpu.index}/{suffix}",
            daemon=True,
        )
        worker.thread = thread
        try:
            thread.start()
        except BaseException:  # e.g. "can't start new thread": no trace of it may stay
            if band == BAND_THREAD:
                self._thread_workers[cpu.index] -= 1
            raise
        if self._trace is not None and thread.ident is not None:
            self._thread_names[thread.ident] = thread.name  # tracks of an exported trace
        # Listed after it started (shutdown waits for every listed worker); it
        # cannot end before, since ending takes the state lock we hold.
        self._workers.append(worker)

    def _worker_ended_locked(self, worker: _Worker) -> None:
        if worker.idle:
            worker.idle = False
            self._idle[worker.cpu_index][worker.band].remove(worker)
        self._workers.remove(worker)
        if worker.band == BAND_THREAD:
            self._thread_workers[worker.cpu_index] -= 1
        self._ended.notify_all()

    def _serve(self, worker: _Worker) -> bool:
        """Run the worker's band of its CPU until nothing is left, then list
        the worker as idle (it goes to sleep on its semaphore).  Returns False
        if the worker must exit instead.  Everything it holds of the runtime
        dies with this frame (see "Lifetime")."""
        index = worker.cpu_index
        band = worker.band
        cpu = self.cpus[index]
        bands = (band,)
        ready = cpu.ready
        idle_list = self._idle[index][band]
        thread_level = band == BAND_THREAD
        _tls.cpu = cpu  # this thread is this CPU's worker while it is awake
        try:
            while True:
                ran = dispatch(self, cpu, bands, _BATCH) is not None
                with self._lock:
                    if ran and thread_level:
                        self._thread_progress[index] += 1
                    if not ready[band]:
                        if self._abandon or (self._stopping and not any(rq.depth() for rq in cpu.rqs[band])):
                            return False
                        worker.idle = True
                        idle_list.append(worker)
                        return True
        finally:
            _tls.cpu = None

    def _retire_locked(self, worker: _Worker) -> bool:
        """An extra worker's sleep timed out: True if it leaves the idle list
        and exits, False if a kick raced the timeout."""
        if worker.idle:
            worker.idle = False
            self._idle[worker.cpu_index][worker.band].remove(worker)
            return True
        return False

    @ki.protected
    def _kick_worker_locked(self, rq: RunQueue) -> None:
        band = rq.wq.band
        cpu = rq.cpu
        if cpu is not None:
            idle = self._idle[cpu.index][band]
            if idle:
                _wake_one_locked(idle)
            elif band == BAND_THREAD:
                self._note_starved_locked(cpu.index)
            return
        for per_cpu in self._idle:  # a shared queue: the first CPU free
            if per_cpu[band]:
                _wake_one_locked(per_cpu[band])
                return
        if band == BAND_THREAD:
            for index in range(len(self.cpus)):
                self._note_starved_locked(index)

    def _wake_all_locked(self) -> None:
        self._threads.wake_all_locked()

    # -- concurrency management -------------------------------------------------

    def _note_starved_locked(self, index: int) -> None:
        """Thread-level work waits on CPU ``index`` and no thread worker is
        idle: have the manager check for a stall after ``stall_threshold``."""
        if index in self._starved:
            return
        self._starved[index] = (time.monotonic() + self.stall_threshold, self._band_progress_locked(index))
        self._wake_timer_locked()

    def _band_progress_locked(self, index: int) -> int:
        """Progress of CPU ``index``'s thread workers: invocations ended by its
        own per-CPU queues, plus its workers' dispatch calls that ran something
        (which covers the shared queues: their counters also move when other
        CPUs run them, and must not hide a stall here)."""
        cpu = self.cpus[index]
        own = sum(rq.invoked for rq in cpu.rqs[BAND_THREAD] if rq.cpu is cpu)
        return own + self._thread_progress[index]

    def _check_stalls_locked(self) -> float | None:
        """Start a thread worker on each CPU whose thread-level queues ended
        no invocation for ``stall_threshold`` while work waited (its workers
        are all stuck inside functions).  Returns the monotonic time of the
        next check, or None."""
        now = time.monotonic()
        next_check = None
        for index, (due, progress) in list(self._starved.items()):
            cpu = self.cpus[index]
            waiting = cpu.ready[BAND_THREAD]
            if not waiting or self._idle[index][BAND_THREAD] or self._stopping:
                del self._starved[index]
                continue
            if now < due:
                next_check = due if next_check is None else min(next_check, due)
                continue
            current = self._band_progress_locked(index)
            if current == progress and self._thread_workers[index] < self.max_thread_workers:
                try:
                    self._spawn_locked(cpu, BAND_THREAD, permanent=False)
                    self._spawned_extra += 1
                except Exception:  # the timer thread must survive: retry at the next check
                    logger.exception("kcont could not start an extra worker on CPU %d", index)
            due = now + self.stall_threshold
            self._starved[index] = (due, current)
            next_check = due if next_check is None else min(next_check, due)
        return next_check

    # -- timers ----------------------------------------------------------------

    @ki.protected
    def _kick_timer(self, deadline: int) -> None:
        self._timer_wake = deadline
        self._wake_timer_locked()

    def _wake_timer_locked(self) -> None:
        self._threads.wake_timer_locked()

    def _expire_due_locked(self) -> None:
        now = self._now()
        if now <= self._wheel.now:
            return
        expired: list[Continuation[Any]] = []
        self._wheel.expire_until(now, expired)
        for kc in expired:
            expire_locked(kc, now)
            if self._trace is not None:
                self._record("expire", kc, kc._rq.cpu)
            self._kick_worker_locked(kc._rq)

    def _timer_pass(self) -> int | None:
        """One pass of the timer thread: expire due timers, check stalls, then
        (no lock held) deliver the callback waiters that became ready.
        Returns the monotonic time (ns) to wake at, None for no deadline, or
        ``_EXIT``."""
        wake_ns = self._timer_pass_locked()
        if self._callbacks_ready:  # see _kick_callbacks_locked
            deliver(self)
        return wake_ns

    def _timer_pass_locked(self) -> int | None:
        with self._lock:
            if self._abandon or (self._stopping and not self._workers):
                return _EXIT
            self._timer_wakeups += 1
            self._expire_due_locked()
            deadline = self._wheel.next_deadline()
            self._timer_wake = _FAR if deadline is None else deadline
            next_check = self._check_stalls_locked() if self._starved else None
            wake_ns = None if deadline is None else self._tick_start_ns(deadline)
            if next_check is not None:
                check_ns = time.monotonic_ns() + max(0, int((next_check - time.monotonic()) * _NS))
                wake_ns = check_ns if wake_ns is None else min(wake_ns, check_ns)
            if self._stopping:
                wake_ns = time.monotonic_ns() + _NS // 100 if wake_ns is None else wake_ns
            self._threads.timer_sleeping = True
            return wake_ns

    # -- waiting -------------------------------------------------------------

    @ki.protected
    def _wait_locked(self, done: Callable[[], bool], timeout: float | None, what: str) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        self._ended_waiters += 1
        try:
            while not done():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise HaltTimeoutError(f"{what}: still waiting after {timeout} s")
                self._ended.wait(remaining)
        finally:
            self._ended_waiters -= 1

    def _notify_ended_locked(self) -> None:
        self._ended.notify_all()

    def _kick_callbacks_locked(self) -> None:
        # The timer thread wakes them: it looks after every wake-up, once it
        # released the state lock, and a kick made while it works is seen by
        # that look or wakes it again.
        self._wake_timer_locked()

    def _worker_locked(self) -> _Worker | None:
        """The calling thread's worker (it is inside a function), or None."""
        me = threading.current_thread()
        for worker in self._workers:
            if worker.thread is me:
                return worker
        return None

    def _flush_would_deadlock_locked(self, kc: Continuation[Any]) -> str | None:
        # Only the soft worker of a CPU runs that CPU's soft-level entries (no
        # second one is ever started, unlike thread workers): if it is the
        # caller, an entry queued there waits for the flush that waits for it.
        if not kc._flags & QUEUED:
            return None  # running on another thread: it can end
        rq = kc._rq
        if rq.wq.band != BAND_SOFT:
            return None
        worker = self._worker_locked()
        if worker is None or worker.band != BAND_SOFT:
            return None
        if rq.cpu is None:
            if len(self.cpus) > 1:
                return None  # another CPU's soft worker may take it
        elif rq.cpu.index != worker.cpu_index:
            return None
        return (
            f"called from a soft-level function on CPU {worker.cpu_index}: the invocation waited "
            "for is queued for that CPU's soft worker, the calling thread itself, which cannot run "
            "it before the flush returns"
        )

    @ki.protected
    def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until nothing is queued or running (parked entries count as
        queued).  Raises ``TimeoutError`` after ``timeout`` seconds."""
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self._worker_locked() is not None:
                raise WouldDeadlockError(
                    f"wait_idle of {self!r} called from inside one of its continuations' functions: "
                    "it would wait for that very function to return"
                )
            self._ended_waiters += 1
            try:
                while self._running or self._queued_locked():
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(
                            f"{self!r} still busy after {timeout} s: "
                            f"{self._running} running, {self._queued_locked()} queued"
                        )
                    # An entry may become runnable without any invocation
                    # ending (a lock released by a user thread): re-check often.
                    self._ended.wait(0.005 if remaining is None else min(remaining, 0.005))
            finally:
                self._ended_waiters -= 1

    def wait_ticks(self, nticks: int, timeout: float | None = None) -> None:
        """Sleep until ``nticks`` ticks have passed and every timer due by then
        has been expired (committed to its run queue)."""
        target = self._now() + nticks
        limit = None if timeout is None else time.monotonic() + timeout
        while True:
            delay = (self._tick_start_ns(target) - time.monotonic_ns()) / _NS
            if delay <= 0:
                break
            if limit is not None and time.monotonic() + delay > limit:
                raise TimeoutError(f"tick {target} would come after the {timeout} s timeout")
            time.sleep(min(delay, 3600.0))  # time.sleep overflows on huge delays: loop instead
        self._expire_due()

    @ki.protected
    def _expire_due(self) -> None:
        with self._lock:
            self._expire_due_locked()

    # -- shutdown ------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """bool: True once shutdown began; schedules raise ShutdownError."""
        return self._closed

    @ki.protected
    def shutdown(
        self, wait: bool = True, *, cancel: bool = False, timeout: float | None = None
    ) -> ShutdownAccount:
        """Stop accepting work and wind down.

        Refuses new schedules (``ShutdownError``), stops every pending timer,
        cancels the committed invocations if ``cancel`` else lets them run,
        then (``wait``) joins every worker and the timer thread.

        Called from inside one of this runtime's continuations, it cannot wait
        for itself: it closes the runtime and returns at once; the workers
        exit once drained, and a later ``shutdown()`` from another thread (or
        leaving the ``with`` block) joins them.  Calling it again is allowed
        and returns the final account once everything stopped.

        Args:
            wait: join the threads before returning.
            cancel: cancel committed invocations that have not started.
            timeout: seconds to wait for the drain; after that, remaining
                queued entries are cancelled and a function that does not
                return is reported in ``unfinished`` (its thread is a daemon
                and cannot outlive the process).

        Returns:
            A :class:`~kcont.ShutdownAccount` (ran, failed, cancelled,
            pending, unfinished).
        """
        timeout = check_timeout(timeout)
        if not isinstance(cancel, bool) or not isinstance(wait, bool):
            raise TypeError("wait and cancel must be bools")
        kept: list[Any] = []  # what shutdown dropped, released with no lock held
        with self._lock:
            inside = any(w.thread is threading.current_thread() for w in self._workers)
            if inside:
                # Never wait for _shutdown_lock here: an outside shutdown holds
                # it while it waits for this very worker to finish.
                kept += self._begin_close_locked(cancel)
        if inside:
            return self._account()
        with self._shutdown_lock:
            with self._lock:
                kept += self._begin_close_locked(cancel)
            if wait:
                deadline = None if timeout is None else time.monotonic() + timeout
                kept += self._drain(deadline)
                self._join(time.monotonic() + _JOIN_GRACE)
                deliver(self)  # waiters fired by the last cancellations, if the timer thread had gone
        ki.detach(self)  # closed: SIGINT's default handler is back once no runtime is left
        return self._account()

    @ki.protected
    def _drain(self, deadline: float | None) -> list[Any]:
        """Wait (shutdown lock held) until every worker exited, or until
        ``deadline``; then give up: cancel what never started and let idle
        workers go.  Returns what was dropped."""
        with self._lock:
            while self._workers and (deadline is None or time.monotonic() < deadline):
                remaining = None if deadline is None else deadline - time.monotonic()
                self._ended.wait(remaining)
            if not self._workers:
                return []
            dropped = self._close_locked(True)
            self._abandon = True
            self._wake_all_locked()
            return dropped

    @ki.protected
    def _join(self, grace: float) -> None:
        """Join the threads until the monotonic time ``grace`` (shutdown lock
        held).  A worker stuck in a function is left behind (a daemon)."""
        for worker in list(self._workers):
            if worker.thread is not None:
                _join_thread(worker.thread, max(0.0, grace - time.monotonic()))
        with self._lock:
            self._wake_timer_locked()
        _join_thread(self._timer_thread, max(_TIMER_JOIN, grace - time.monotonic()))

    def _begin_close_locked(self, cancel: bool) -> list[Any]:
        """Close (once, or again to cancel) and tell every thread to drain and
        exit.  Returns what was dropped, to be released with no lock held."""
        if self._closed and not cancel:
            return []
        self._finalizer.detach()  # shut down: collecting it is no leak
        dropped = self._close_locked(cancel)
        self._stopping = True
        self._wake_all_locked()
        return dropped

    # -- statistics ------------------------------------------------------------

    def stats(self) -> ThreadedRuntimeStats:
        stats = super().stats()
        with self._lock:
            return {
                **stats,
                "workers": [
                    {
                        "cpu": cpu.index,
                        "soft": sum(
                            1 for w in self._workers if w.cpu_index == cpu.index and w.band == BAND_SOFT
                        ),
                        "thread": self._thread_workers[cpu.index],
                    }
                    for cpu in self.cpus
                ],
                "extra_workers_started": self._spawned_extra,
                "timer_wakeups": self._timer_wakeups,
                "running": self._running,
            }

    @property
    def _trace_origin(self) -> int:
        return self._trace_t0


@ki.interruptible
def _join_thread(thread: threading.Thread, timeout: float) -> None:
    """Join ``thread`` for at most ``timeout`` seconds; an interrupt ends the
    wait (the thread is a daemon: interpreter exit does not wait for it)."""
    thread.join(timeout)


def _wake_one_locked(idle: list[_Worker]) -> None:
    """Take one worker off a non-empty idle list and wake it (state lock held):
    exactly one release of its semaphore per sleep."""
    worker = idle.pop()
    worker.idle = False
    worker.sem.release()


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _pin_map(pin: bool | Sequence[int], ncpu: int) -> list[int] | None:
    if pin is False:
        return None
    if not isinstance(ncpu, int):
        return None  # RuntimeCore reports the bad ncpu
    if not hasattr(os, "sched_setaffinity"):
        raise InvalidArgumentError("pinning needs os.sched_setaffinity (Linux)")
    allowed = sorted(os.sched_getaffinity(0))
    if pin is True:
        return [allowed[i % len(allowed)] for i in range(ncpu)]
    if not isinstance(pin, Sequence) or isinstance(pin, str):
        raise TypeError(f"pin must be a bool or a sequence of OS CPU numbers, not {type(pin).__name__}")
    mapping = list(pin)
    if len(mapping) != ncpu:
        raise InvalidArgumentError(f"pin gives {len(mapping)} OS CPUs for {ncpu} virtual CPUs")
    for os_cpu in mapping:
        if not isinstance(os_cpu, int) or isinstance(os_cpu, bool):
            raise TypeError(f"pin: OS CPU numbers must be ints, not {type(os_cpu).__name__}")
        if os_cpu not in allowed:
            raise InvalidArgumentError(f"pin: OS CPU {os_cpu} is not one this process may use ({allowed})")
    return mapping


# -- what the threads run (functions, not methods: a bound method would hold
# the runtime) -----------------------------------------------------------------


def _worker_main(ref: weakref.ref[Runtime], worker: _Worker) -> None:
    try:
        _work(ref, worker)
    except ForkedRuntimeError:
        _exit_forked_child(None)
    except SystemExit as exc:  # only from _report_exception, in such a child
        _exit_forked_child(exc.code)
    except BaseException:  # a bug of ours: never leave shutdown waiting for a dead worker
        logger.exception("kcont worker %s died", threading.current_thread().name)
    finally:
        rt = ref()
        if rt is not None and not rt._forked:
            with rt._lock:
                rt._worker_ended_locked(worker)


def _exit_forked_child(code: object) -> NoReturn:
    """End a child process forked inside a continuation, once the function
    returned (or raised SystemExit): its only thread is back in a worker loop
    of the parent's runtime, which runs nothing here.  As a multiprocessing
    child ends: standard streams flushed, then ``os._exit`` with the status
    ``sys.exit`` would give."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken stream: exit all the same
            pass
    os._exit(status)


def _work(ref: weakref.ref[Runtime], worker: _Worker) -> None:
    """The worker loop.  Awake, it holds its runtime; asleep, only a weak
    reference: the runtime is looked up once per wake-up, never per
    invocation (``_serve`` runs batches until the band is empty)."""
    rt = ref()
    if rt is None:
        return
    if rt._pin_map is not None:
        try:
            os.sched_setaffinity(threading.get_native_id(), {rt._pin_map[worker.cpu_index]})
        except OSError:  # pinning is best effort (containers may forbid it)
            pass
    timeout = -1 if worker.permanent else rt.idle_timeout
    sem = worker.sem
    while True:
        if not rt._serve(worker):
            return
        del rt  # asleep, hold nothing: a runtime nobody references can be collected
        if sem.acquire(True, timeout):
            rt = ref()
            if rt is None:
                return
            continue
        rt = ref()  # timed out (an extra worker): retire, unless a kick raced the timeout
        if rt is None:
            return
        with rt._lock:
            if rt._retire_locked(worker):
                return
        sem.acquire()  # the racing kick released it: consume and go on


def _timer_main(ref: weakref.ref[Runtime], threads: _Threads) -> None:
    sem = threads.timer_sem
    while True:
        rt = ref()
        if rt is None:
            # Collected: the finalizer may have found the state lock busy
            # (held right here), and left waking the workers to us.
            with threads.lock:
                threads.wake_all_locked()
            _wake_unwoken()
            return
        wake_ns = rt._timer_pass()
        del rt  # asleep, hold nothing (as the workers)
        if wake_ns == _EXIT:
            return
        timeout = -1 if wake_ns is None else max(0.0, (wake_ns - time.monotonic_ns()) / _NS)
        # A deadline further than a lock can wait (a timer armed for
        # 10**13 ticks): wake at the limit and look again.
        if not sem.acquire(True, min(timeout, threading.TIMEOUT_MAX)):
            with threads.lock:
                if not threads.timer_sleeping:
                    sem.acquire()  # a kick raced the timeout: consume it
                threads.timer_sleeping = False


# -- runtimes nobody shut down ----------------------------------------------------


def _warn_not_shut_down(name: str) -> None:
    warnings.warn(f"kcont.Runtime {name} was never shut down", ResourceWarning, stacklevel=2)


# Lock-free (a deque): the threads of collected runtimes whose finalizer
# found the state lock busy, waiting to be woken by a thread that holds none.
_unwoken: deque[_Threads] = deque()


def _collected(threads: _Threads) -> None:
    """The finalizer of a runtime collected while running (nobody called
    ``shutdown()`` and nothing references it): let its sleeping threads go
    (awake, they find the runtime gone and exit), then warn (last: a warning
    filter may turn the warning into an exception).

    Garbage collection runs it at any point of any thread, maybe one that
    holds this very state lock: it only tries the lock.  An unreachable
    runtime's state lock may still be held by its timer thread, between two
    passes, or by a thread forking the process, between the fork hooks (which
    keep every runtime alive until then, as a second guard).  When the try
    fails, the threads are listed in ``_unwoken``: the timer thread drains
    that list as it finds its runtime gone (``_timer_main``), and so does
    the fork hook once it has released the state locks
    (``_wake_unwoken_after_fork``)."""
    if threads.lock.acquire(False):
        try:
            threads.wake_all_locked()
        finally:
            threads.lock.release()
    else:
        _unwoken.append(threads)
    _warn_not_shut_down(threads.name)


def _wake_unwoken() -> None:
    """Wake the threads the finalizer could not (no state lock held here)."""
    while True:
        try:
            threads = _unwoken.popleft()
        except IndexError:
            return
        with threads.lock:
            threads.wake_all_locked()


def _wake_unwoken_after_fork() -> None:
    # Registered after the core's fork hooks (this module imports the core
    # first), and after-fork hooks run in registration order: the core has
    # released every state lock when this runs.
    _wake_unwoken()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_parent=_wake_unwoken_after_fork, after_in_child=_unwoken.clear)


def _has_threads(rt: Runtime) -> bool:
    """True if a thread of ``rt`` may still run (False for a runtime whose
    __init__ failed before it had any)."""
    timer = getattr(rt, "_timer_thread", None)
    return bool(getattr(rt, "_workers", None)) or (timer is not None and timer.is_alive())


# Runtimes still running at interpreter exit are warned about and shut down
# (cancelling what has not started), all at once, so that no function is cut
# in the middle without notice and the exit waits about one second at most.
@atexit.register
def _shutdown_at_exit() -> None:
    with _core_runtime._registry_lock:
        runtimes = list(_core_runtime._every_runtime)
    live = [rt for rt in runtimes if isinstance(rt, Runtime) and _has_threads(rt)]
    never_shut_down = [rt.name for rt in live if not rt.closed]
    deadline = time.monotonic() + _EXIT_DRAIN
    mine = []
    for rt in live:
        # Another thread (a daemon) may be shutting it down: it waits for it.
        if rt._shutdown_lock.acquire(True, max(0.0, deadline - time.monotonic())):
            mine.append(rt)
    try:
        for rt in mine:
            with rt._lock:
                dropped = rt._begin_close_locked(True)
            del dropped  # released with no lock held
        for rt in mine:
            rt._drain(deadline)
        grace = time.monotonic() + _JOIN_GRACE
        for rt in mine:
            rt._join(grace)
    finally:
        for rt in mine:
            rt._shutdown_lock.release()
    # Warned last, each once: a warning filter may turn a warning into an
    # exception, which must neither stop the shutdown nor hide the others.
    failure: Exception | None = None
    for name in never_shut_down:
        try:
            _warn_not_shut_down(name)
        except Exception as exc:
            failure = failure or exc
    if failure is not None:
        raise failure

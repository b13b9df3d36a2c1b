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

Locking
    S (the core's state lock) guards the idle lists, ``_starved``,
    ``_timer_sleeping``, ``_stopping``, the worker lists and every counter
    here.  ``_ended`` is a Condition on S (halt, destroy, wait_idle).
    Worker semaphores are released with S held (a release never blocks).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ._core.continuation import Continuation, expire_locked
from ._core.dispatch import dispatch
from ._core.runqueue import RunQueue
from ._core.runtime import CPU, RuntimeCore, ShutdownAccount, _tls, check_timeout, logger
from ._core.stats import QueueTiming, ThreadedRuntimeStats
from ._core.waiters import deliver
from ._core.workqueue import BAND_NAMES, BAND_SOFT, BAND_THREAD
from .errors import HaltTimeoutError, InvalidArgumentError, ShutdownError

__all__ = ["Runtime"]

_FAR = 1 << 62
# Invocations a worker runs per call of the dispatch function (the end of one
# and the pick of the next share a critical section); between batches it
# re-checks shutdown.
_BATCH = 64
_NS = 1_000_000_000


class _Worker:
    """One worker thread: a CPU, a band and a semaphore to sleep on."""

    __slots__ = ("band", "cpu", "idle", "permanent", "sem", "thread")

    def __init__(self, cpu: CPU, band: int, permanent: bool) -> None:
        self.cpu = cpu
        self.band = band
        self.permanent = permanent
        self.sem = threading.Lock()
        self.sem.acquire()  # held while awake; released by a kick
        self.idle = False  # S
        self.thread: threading.Thread | None = None


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
            :meth:`export_trace` (the list grows with every event: for
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
        self._ended = threading.Condition(self._lock)
        self._stopping = False  # S: workers exit once their band is drained
        self._abandon = False  # S: shutdown gave up waiting: exit even with work left
        self._shutdown_lock = threading.Lock()
        # S: idle workers, per CPU and band
        self._idle: list[tuple[list[_Worker], list[_Worker]]] = [([], []) for _ in self.cpus]
        self._workers: list[_Worker] = []  # S: live workers
        self._thread_workers = [0] * ncpu  # S: live thread workers per CPU
        # S: dispatch calls of each CPU's thread workers that ran something
        # (see _band_progress_locked).
        self._thread_progress = [0] * ncpu
        self._starved: dict[int, tuple[float, int]] = {}  # S: see _check_stalls_locked
        self._spawned_extra = 0  # S
        self._timer_sem = threading.Lock()
        self._timer_sem.acquire()
        self._timer_sleeping = False  # S
        self._timer_wakeups = 0  # S
        self._timer_thread = threading.Thread(
            target=self._timer_main, name=f"kcont/{self.name}/timer", daemon=True
        )
        with self._lock:
            for cpu in self.cpus:
                self._spawn_locked(cpu, BAND_SOFT, permanent=True)
                self._spawn_locked(cpu, BAND_THREAD, permanent=True)
        self._timer_thread.start()
        with _live_lock:
            _live_runtimes.add(self)

    def __repr__(self) -> str:
        state = " shut down" if self._closed else ""
        return f"<kcont.Runtime {self.name} ncpu={len(self.cpus)} hz={self.hz}{state}>"

    def __exit__(self, *exc: object) -> None:
        try:
            self.shutdown()
        finally:
            super().__exit__(*exc)

    # -- clock ---------------------------------------------------------------

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
        worker = _Worker(cpu, band, permanent)
        suffix = BAND_NAMES[band]
        if band == BAND_THREAD:
            self._thread_workers[cpu.index] += 1
            suffix += str(self._thread_workers[cpu.index] - 1)
        thread = threading.Thread(
            target=self._worker_main,
            args=(worker,),
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

    def _worker_main(self, worker: _Worker) -> None:
        try:
            self._work(worker)
        except BaseException:  # a bug of ours: never leave shutdown waiting for a dead worker
            logger.exception("kcont worker %s died", threading.current_thread().name)
        finally:
            with self._lock:
                if worker.idle:
                    worker.idle = False
                    self._idle[worker.cpu.index][worker.band].remove(worker)
                self._workers.remove(worker)
                if worker.band == BAND_THREAD:
                    self._thread_workers[worker.cpu.index] -= 1
                self._ended.notify_all()

    def _work(self, worker: _Worker) -> None:
        cpu = worker.cpu
        band = worker.band
        if self._pin_map is not None:
            try:
                os.sched_setaffinity(threading.get_native_id(), {self._pin_map[cpu.index]})
            except OSError:  # pinning is best effort (containers may forbid it)
                pass
        _tls.cpu = cpu  # for good: this thread is this CPU's worker
        bands = (band,)
        ready = cpu.ready
        idle_list = self._idle[cpu.index][band]
        sem = worker.sem
        timeout = -1 if worker.permanent else self.idle_timeout
        thread_level = band == BAND_THREAD
        while True:
            ran = dispatch(self, cpu, bands, _BATCH)
            with self._lock:
                if ran is not None and thread_level:
                    self._thread_progress[cpu.index] += 1
                more = bool(ready[band])
                if not more:
                    if self._abandon or (self._stopping and not any(rq.depth() for rq in cpu.rqs[band])):
                        return
                    worker.idle = True
                    idle_list.append(worker)
            if more or sem.acquire(True, timeout):
                continue
            # Timed out (an extra worker): retire, unless a kick raced the timeout.
            with self._lock:
                if worker.idle:
                    worker.idle = False
                    idle_list.remove(worker)
                    return
            sem.acquire()  # the racing kick released it: consume and go on

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
        for per_cpu in self._idle:
            for idle in per_cpu:
                while idle:
                    _wake_one_locked(idle)
        self._wake_timer_locked()

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

    def _kick_timer(self, deadline: int) -> None:
        self._timer_wake = deadline
        self._wake_timer_locked()

    def _wake_timer_locked(self) -> None:
        if self._timer_sleeping:
            self._timer_sleeping = False
            self._timer_sem.release()

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

    def _timer_main(self) -> None:
        sem = self._timer_sem
        while True:
            with self._lock:
                if self._abandon or (self._stopping and not self._workers):
                    return
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
                self._timer_sleeping = True
            if self._callbacks_ready:  # see _kick_callbacks_locked
                deliver(self)
            timeout = -1 if wake_ns is None else max(0.0, (wake_ns - time.monotonic_ns()) / _NS)
            # A deadline further than a lock can wait (a timer armed for
            # 10**13 ticks): wake at the limit and look again.
            if not sem.acquire(True, min(timeout, threading.TIMEOUT_MAX)):
                with self._lock:
                    if not self._timer_sleeping:
                        sem.acquire()  # a kick raced the timeout: consume it
                    self._timer_sleeping = False

    # -- waiting -------------------------------------------------------------

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

    def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until nothing is queued or running (parked entries count as
        queued).  Raises ``TimeoutError`` after ``timeout`` seconds."""
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
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
        with self._lock:
            self._expire_due_locked()

    # -- shutdown ------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once shutdown began: schedules raise ShutdownError."""
        return self._closed

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
            if not wait:
                return self._account()
            deadline = None if timeout is None else time.monotonic() + timeout
            with self._lock:
                while self._workers and (deadline is None or time.monotonic() < deadline):
                    remaining = None if deadline is None else deadline - time.monotonic()
                    self._ended.wait(remaining)
                if self._workers:
                    # Gave up: cancel what never started, let idle workers go.
                    kept += self._close_locked(True)
                    self._abandon = True
                    self._wake_all_locked()
            for worker in list(self._workers):
                if worker.thread is not None:
                    worker.thread.join(0.5)
            with self._lock:
                self._wake_timer_locked()
            self._timer_thread.join(2.0)
            with _live_lock:
                _live_runtimes.discard(self)
            deliver(self)  # waiters fired by the last cancellations, if the timer thread had gone
            return self._account()

    def _begin_close_locked(self, cancel: bool) -> list[Any]:
        """Close (once, or again to cancel) and tell every thread to drain and
        exit.  Returns what was dropped, to be released with no lock held."""
        if self._closed and not cancel:
            return []
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
                        "soft": sum(1 for w in self._workers if w.cpu is cpu and w.band == BAND_SOFT),
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


# Runtimes still running at interpreter exit are shut down (cancelling what
# has not started), so that no function is cut in the middle without notice.
# (Worker threads keep a runtime alive until its shutdown, so a weak set would
# not let one go any sooner.)
_live_runtimes: set[Runtime] = set()
_live_lock = threading.Lock()


@atexit.register
def _shutdown_live_runtimes() -> None:
    with _live_lock:
        live = list(_live_runtimes)
    for rt in live:
        try:
            rt.shutdown(cancel=True, timeout=1.0)
        except ShutdownError:
            pass

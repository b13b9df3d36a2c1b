"""Run queues and the ordering rules: which ready continuation starts next.

What it owns
    A :class:`RunQueue` holds the continuations of one workqueue that are
    committed to run (QUEUED) on one CPU, or on any CPU for a shared queue.
    This module is the one place where the seed's ordering rule lives:

        "all continuations sharing the same set of {wq, lock, [ci]} need to be
        processed in the order they were scheduled"; "if acquiring lock would
        block, other pending kernel continuations which depend on other locks
        may be dispatched in the meantime".

Model
    * ``fifo`` holds ready continuations in ready order (the order in which
      they were enqueued: expiry tick, then schedule order).  While nothing is
      parked, dispatch is a plain FIFO.
    * When the head cannot start, because its lock is busy or because the same
      continuation is still RUNNING elsewhere (non-reentrancy), its sub-queue
      (key: its lock, or None) is *parked*: the head and every later entry with
      the same key move to ``parked[key]``, in order, and a waiter is
      registered (on the :class:`~kcont.Mutex`, or on the running
      continuation).  Other keys keep running.
    * The waiter moves ``parked[key]`` to ``woken[key]``.  Woken sub-queues hold
      older entries than ``fifo`` and start first, in the order they were
      woken: ready order is kept within every key and, when nothing waits,
      across keys too.

Ready masks
    Each CPU keeps, per band, a bitmask of the run queues it serves that have
    an entry that may start (``fifo`` or ``woken`` non-empty); bit ``rank`` is
    the queue's position in the CPU's band list, highest priority at bit 0.
    The dispatcher finds the highest-priority queue with work in O(1) (lowest
    set bit), and an idle CPU costs one test.  A shared queue has the same
    rank, and so the same bit, on every CPU.

Invariants (state lock held)
    * A key is in at most one of ``parked`` and ``woken``; their deques are
      never empty.
    * Every entry of ``parked``/``woken`` is older than every entry of ``fifo``
      (only the head of ``fifo`` is ever moved aside).
    * ``rq.bit`` is set in the ready mask of every CPU serving ``rq`` iff
      ``fifo or woken``.

Locking
    S: every field is guarded by the owning runtime's state lock
    (``Runtime._lock``); functions named ``*_locked`` require it.  A lock try
    (``Mutex._try_acquire*``) is made under it; lock order is state lock ->
    ``Mutex._wlock``.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from .flags import RUNNING
from .ki import protected
from .layout import RunQueueFields

if TYPE_CHECKING:
    from .continuation import Continuation
    from .runtime import CPU, RuntimeCore
    from .workqueue import Workqueue

# Counters kept per run queue (per workqueue and CPU), in the spirit of
# NetBSD's evcnt(9) and Linux's wq_monitor.py.  Summed per queue and per CPU
# by Runtime.stats().
COUNTERS = (
    "scheduled",  # invocations committed (immediate schedules and expiries)
    "armed",  # timer arms and re-arms (schedule with nticks > 0)
    "invoked",  # functions called
    "ebusy",  # schedules refused because the continuation was INVOKING
    "stopped",  # stops that prevented an invocation (disarmed or dequeued)
    "lock_waits",  # times a sub-queue parked on a busy lock
    "reentry_waits",  # times a sub-queue waited for the same continuation to finish
    "late",  # timers that expired after their deadline tick
    "late_ticks",  # sum of how late, in ticks
    "exceptions",  # functions that raised
    "depth_hwm",  # longest the ready FIFO has been
    "func_ns",  # time spent in functions, in nanoseconds (threaded runtime)
)


class RunQueue(RunQueueFields):
    """Committed continuations of one workqueue on one CPU (or shared)."""

    __slots__ = ()  # the fields are in its base (kcont._core.layout)

    def __init__(self, rt: RuntimeCore, wq: Workqueue, cpu: CPU | None) -> None:
        self.rt = rt
        self.wq = wq
        self.cpu = cpu  # None: shared by every CPU
        self.pri = wq.pri
        self.band = wq.band
        self.bit = 0  # S: set by RuntimeCore._rank_locked
        self.fifo: deque[Continuation[Any]] = deque()
        self.parked: dict[Any, deque[Continuation[Any]]] = {}
        self.woken: dict[Any, deque[Continuation[Any]]] = {}
        # Counters (see COUNTERS), all S.
        self.scheduled = 0
        self.armed = 0
        self.invoked = 0
        self.ebusy = 0
        self.stopped = 0
        self.lock_waits = 0
        self.reentry_waits = 0
        self.late = 0
        self.late_ticks = 0
        self.exceptions = 0
        self.depth_hwm = 0
        self.func_ns = 0

    def __repr__(self) -> str:
        where = "shared" if self.cpu is None else f"cpu{self.cpu.index}"
        return f"<RunQueue {self.wq.name} {where} depth={self.depth()}>"

    def depth(self) -> int:
        """Entries queued: ready, parked or woken."""
        n = len(self.fifo)
        for sub in self.parked.values():
            n += len(sub)
        for sub in self.woken.values():
            n += len(sub)
        return n

    # -- ready masks -------------------------------------------------------

    @protected
    def mark_ready_locked(self) -> None:
        """Set this queue's bit in the ready mask of the CPUs serving it."""
        cpu = self.cpu
        if cpu is not None:
            cpu.ready[self.band] |= self.bit
        else:
            for cpu in self.rt.cpus:
                cpu.ready[self.band] |= self.bit

    @protected
    def clear_ready_locked(self) -> None:
        cpu = self.cpu
        if cpu is not None:
            cpu.ready[self.band] &= ~self.bit
        else:
            for cpu in self.rt.cpus:
                cpu.ready[self.band] &= ~self.bit

    # -- enqueue / dequeue -------------------------------------------------

    def enqueue_locked(self, kc: Continuation[Any]) -> None:
        """Append ``kc`` (flags already set by the state machine) in ready
        order, and count it as committed."""
        fifo = self.fifo
        fifo.append(kc)
        self.scheduled += 1
        if len(fifo) > self.depth_hwm:
            self.depth_hwm = len(fifo)
        self.mark_ready_locked()

    def requeue_locked(self, kc: Continuation[Any]) -> None:
        """Append ``kc`` again (it moved: not a new commitment)."""
        self.fifo.append(kc)
        self.mark_ready_locked()

    def remove_locked(self, kc: Continuation[Any]) -> None:
        """Take a queued ``kc`` out before it started (stop, replace)."""
        try:
            self.fifo.remove(kc)
        except ValueError:
            if not (_remove_from(self.parked, kc) or _remove_from(self.woken, kc)):
                raise AssertionError(f"{kc!r} is QUEUED but not on {self!r}") from None
        if not (self.fifo or self.woken):
            self.clear_ready_locked()

    def take_locked(self) -> Continuation[Any] | None:
        """Remove and return the next continuation that can start now, with
        its lock (if any) taken for the calling thread; or None.

        Continuations that cannot start are parked by key (see module doc).
        Clears the queue's ready bit when nothing startable is left.
        """
        fifo = self.fifo
        if not (self.parked or self.woken) and fifo:
            # Fast path: nothing waits, so ready order is plain FIFO.
            kc = fifo[0]
            lock = kc._lock
            if not (kc._flags & RUNNING or (lock is not None and not lock._try_acquire())):
                fifo.popleft()
                if not fifo:
                    cpu = self.cpu
                    if cpu is not None:  # clear_ready_locked, inlined
                        cpu.ready[self.band] &= ~self.bit
                    else:
                        self.clear_ready_locked()
                return kc
        return self._take_slow_locked()

    @protected
    def _take_slow_locked(self) -> Continuation[Any] | None:
        fifo = self.fifo
        parked = self.parked
        woken = self.woken
        while True:
            # Every parked or woken entry is older than every fifo entry (the
            # fifo is consumed from its head, and only its head is ever moved
            # aside), so woken sub-queues go first: ready order is kept within
            # every key, and across keys but among several woken sub-queues.
            if woken:
                key, sub = next(iter(woken.items()))
                kc = sub[0]
                if self._blocked_locked(kc):
                    del woken[key]
                    parked[key] = sub
                    continue
                sub.popleft()
                if not sub:
                    del woken[key]
            elif fifo:
                kc = fifo.popleft()
                key = kc._lock
                waiting = parked.get(key)
                if waiting is not None:
                    # An older entry of the same {wq, lock, ci} waits: queue behind it.
                    waiting.append(kc)
                    continue
                if self._blocked_locked(kc):
                    parked[key] = deque((kc,))
                    continue
            else:
                self.clear_ready_locked()
                return None
            if not (fifo or woken):
                self.clear_ready_locked()
            return kc

    def _blocked_locked(self, kc: Continuation[Any]) -> bool:
        """False if ``kc`` can start now (its lock, if any, is then taken);
        True if its sub-queue must park (a waiter is then registered)."""
        rt = self.rt
        lock = kc._lock
        if kc._flags & RUNNING:
            # Never two invocations at once: wait for the running one to end.
            self.reentry_waits += 1
            rt._run_waiters.setdefault(kc, []).append((self, lock))
        elif lock is None or lock._try_acquire():
            return False
        elif lock._try_acquire_or_wait(rt._wake_parked, (self, lock)):
            # Released since the first try; the second try, under the
            # mutex's waiter lock, cannot miss a release.
            return False
        else:
            self.lock_waits += 1
        if rt._trace is not None:
            rt._record("park", kc, self.cpu)
        return True

    def wake_locked(self, key: Any) -> bool:
        """The blocker of ``parked[key]`` went away: make it runnable again."""
        sub = self.parked.pop(key, None)
        if sub is None:
            return False
        self.woken[key] = sub
        self.mark_ready_locked()
        return True


def _remove_from(subs: dict[Any, deque[Continuation[Any]]], kc: Continuation[Any]) -> bool:
    for key, sub in subs.items():
        try:
            sub.remove(kc)
        except ValueError:
            continue
        if not sub:
            del subs[key]
        return True
    return False


__all__ = ["COUNTERS", "RunQueue"]

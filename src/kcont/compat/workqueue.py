"""workqueue(9) on kcont: work items processed in order by a per-queue callback.

Overview
    :func:`workqueue_create` returns a :class:`Workqueue` (NetBSD's ``struct
    workqueue``): a callback ``func(wk, arg)`` shared by every work item, and
    one *queue* (one per CPU with ``WQ_PERCPU``).  Each queue is a FIFO of
    work items plus one *worker*: a :class:`kcont.Continuation` on a kcont
    queue acquired at the workqueue's priority (``rt.workqueue(prio,
    percpu=...)``), released by :func:`workqueue_destroy`.

How a work item maps to continuations
    Not one continuation per item: ``workqueue_enqueue`` appends ``wk`` to the
    FIFO of its queue and schedules that queue's worker without delay; the
    worker drains the FIFO, calling ``func(wk, arg)`` for each item in order.
    This is NetBSD's design (one worker per queue takes the pending list and
    runs it FIFO); it costs no allocation per item, keeps each queue serial
    (kcont never runs two invocations of one continuation at once) and FIFO,
    and frees nothing behind the caller's back: ``wk`` is any object the
    caller owns (for example a :class:`Work`, or its own softc), identified
    by identity while it is enqueued.

    The worker calls ``kc.ack()`` first thing, so that an enqueue made while
    it runs commits a new invocation (run after this one) instead of being
    refused with EBUSY; an enqueue refused before that ``ack`` appended its
    item before the drain loop, which takes it.  No item is left behind.

Priorities and flags
    ``prio`` is a kcont/NetBSD priority (0..``kcont.MAXPRI``); ``PRI_NONE``
    (-1: a timeshared thread in NetBSD) maps to ``kcont.PRI_LOW`` (63,
    ``MAXPRI_USER``).  A priority at or above ``kcont.PRI_SOFT_MIN`` gives a
    soft-level kcont queue, whose functions should not block (NetBSD's
    worker is a thread and may).  ``ipl`` is accepted and ignored (it sizes a
    spin lock in NetBSD).  ``WQ_MPSAFE`` and ``WQ_FPU`` are accepted (no
    kernel lock, no FPU context in Python).  Note that this module's
    ``WQ_PERCPU`` is NetBSD's 0x02, not ``kcont.WQ_PERCPU``.

Waiting
    ``workqueue_wait`` finds the queue whose FIFO holds ``wk`` or whose
    callback runs it, and calls ``flush()`` on that queue's worker: it
    returns once the worker's committed run (which takes ``wk`` if it is
    still enqueued) has happened and the worker runs no more, which includes
    the batch ``wk`` is in.  NetBSD's contract (subr_workqueue.c) makes that
    wait bounded: "The caller must ensure that no new work will be enqueued
    before calling workqueue_wait" (on that queue); NetBSD >= 9 waits for
    ``wk``'s batch only, so under a stream of new work the layer waits
    longer (``flush()`` waits until the worker is idle).  On the simulated
    runtime ``flush()`` steps the simulation.  From that queue's own
    callback it returns at once, as NetBSD does ("we can't wait for it
    either, so do nothing"): ``flush()`` does so from the continuation's own
    function.  From a callback of another queue it waits, as NetBSD does.

Invariant
    While ``wk`` is in a queue's FIFO, that queue's worker is QUEUED (the
    enqueue committed it) or RUNNING (its drain loop will take ``wk``, or,
    if a callback raised, it committed a new run first).  So a ``flush()``
    of the worker cannot end before ``wk``'s callback has returned.

Locking
    Q: ``Workqueue._lock`` (a ``threading.Lock``) guards every FIFO,
    ``_enqueued``, each queue's ``current`` and ``_destroyed``.  It is never
    held while a callback runs or while waiting (``flush``/``destroy``), and
    is taken before kcont's internal lock (inside ``schedule``), never after.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import kcont

from . import KassertError

__all__ = [
    "IPL_NONE",
    "PRI_NONE",
    "WQ_FPU",
    "WQ_MPSAFE",
    "WQ_PERCPU",
    "Work",
    "Workqueue",
    "workqueue_create",
    "workqueue_destroy",
    "workqueue_enqueue",
    "workqueue_wait",
]

# NetBSD sys/workqueue.h values (WQ_PERCPU differs from kcont.WQ_PERCPU).
WQ_MPSAFE = 0x01
WQ_PERCPU = 0x02
WQ_FPU = 0x04
_KNOWN_FLAGS = WQ_MPSAFE | WQ_PERCPU | WQ_FPU

PRI_NONE = -1  # NetBSD: "no priority": a timeshared worker thread
IPL_NONE = 0  # accepted; any int is

Callback = Callable[[Any, Any], object]  # func(wk, arg)


class Work:
    """A work item (NetBSD's ``struct work``).

    Any object can be enqueued; this empty class is a convenient one to
    subclass or to give attributes, as C code embeds ``struct work`` in its
    own structure.
    """


class _Queue:
    """One FIFO of work items and the worker continuation that drains it."""

    __slots__ = ("cpu", "current", "fifo", "kc", "wq")

    def __init__(self, wq: Workqueue, cpu: kcont.CPU | None) -> None:
        self.wq = wq
        self.cpu = cpu  # None: shared queue (no WQ_PERCPU)
        self.fifo: deque[Any] = deque()  # Q
        self.current: Any = None  # Q: the work whose callback runs now
        name = wq.name if cpu is None else f"{wq.name}/{cpu.index}"
        self.kc: kcont.Continuation[_Queue] = kcont.Continuation(wq.kcont_queue, _worker, self, name=name)


class Workqueue:
    """A workqueue (NetBSD's ``struct workqueue``), made by :func:`workqueue_create`."""

    __slots__ = (
        "__weakref__",
        "_destroyed",
        "_enqueued",
        "_lock",
        "_queues",
        "arg",
        "flags",
        "func",
        "ipl",
        "kcont_queue",
        "name",
        "prio",
    )

    def __init__(self, name: str, func: Callback, arg: Any, prio: int, ipl: int, flags: int) -> None:
        self.name = name
        self.func = func
        self.arg = arg
        self.prio = prio
        self.ipl = ipl
        self.flags = flags
        self._lock = threading.Lock()
        self._enqueued: dict[int, _Queue] = {}  # Q: id() of every work in a FIFO -> its queue
        self._destroyed = False  # Q
        pri = kcont.PRI_LOW if prio == PRI_NONE else prio
        rt = kcont.current_runtime()
        self.kcont_queue: kcont.Workqueue = rt.workqueue(pri, percpu=bool(flags & WQ_PERCPU))
        if flags & WQ_PERCPU:
            self._queues = tuple(_Queue(self, cpu) for cpu in rt.cpus)
        else:
            self._queues = (_Queue(self, None),)

    @property
    def percpu(self) -> bool:
        return bool(self.flags & WQ_PERCPU)

    @property
    def continuations(self) -> tuple[kcont.Continuation[Any], ...]:
        """The worker continuations, one per queue (per CPU with ``WQ_PERCPU``)."""
        return tuple(q.kc for q in self._queues)

    def __repr__(self) -> str:
        kind = "per-CPU" if self.flags & WQ_PERCPU else "shared"
        state = " destroyed" if self._destroyed else ""
        return f"<kcont.compat.Workqueue {self.name!r} prio={self.prio} {kind}{state}>"


def _worker(q: _Queue, kc: kcont.Continuation[_Queue]) -> None:
    """The continuation function of every queue: run its FIFO in order."""
    kc.ack()  # from now on an enqueue commits a new run instead of EBUSY
    wq = q.wq
    lock = wq._lock
    try:
        while True:
            with lock:
                if not q.fifo:
                    return
                wk = q.fifo.popleft()
                del wq._enqueued[id(wk)]  # "until the callback is called"
                q.current = wk
            try:
                wq.func(wk, wq.arg)
            finally:
                with lock:
                    q.current = None
    except BaseException:
        # The callback raised (kcont reports it): run the rest later.
        with lock:
            left = bool(q.fifo)
        if left:
            try:
                kc.schedule(0, q.cpu)
            except kcont.BusyError:
                pass  # an enqueue already committed the next run
        raise


def _check(wq: object) -> Workqueue:
    if not isinstance(wq, Workqueue):
        raise TypeError(f"expected a Workqueue from workqueue_create, not {type(wq).__name__}")
    return wq


def _own_callback(wq: Workqueue) -> bool:
    """True if the caller is running one of ``wq``'s callbacks."""
    return any(q.kc.running_here for q in wq._queues)


def workqueue_create(name: str, func: Callback, arg: Any, prio: int, ipl: int, flags: int) -> Workqueue:
    """Create a workqueue calling ``func(wk, arg)`` for each work.

    Args:
        name: its name (kcont continuation names: ``name`` or ``name/N``).
        func: the callback, per workqueue.
        arg: its second argument.
        prio: the priority of the work (0..``kcont.MAXPRI``, or ``PRI_NONE``).
        ipl: accepted and ignored.
        flags: ``WQ_MPSAFE``, ``WQ_PERCPU``, ``WQ_FPU`` ORed.

    Returns:
        The workqueue (C fills ``*wqp`` and returns 0).

    Raises:
        kcont.InvalidArgumentError: unknown flags or a priority out of range
            (errno ``EINVAL``, what C would return).
        TypeError: ``func`` is not callable or is a coroutine, async
            generator or generator function (``kcont.check_func``), or an
            argument has a wrong type.
        kcont.NoRuntimeError: no runtime is current.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    kcont.check_func(func, "func(wk, arg)")
    for label, value in (("prio", prio), ("ipl", ipl), ("flags", flags)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{label} must be an int, not {type(value).__name__}")
    if flags & ~_KNOWN_FLAGS or flags < 0:
        raise kcont.InvalidArgumentError(
            f"workqueue_create: unknown flags {flags:#x} (WQ_MPSAFE, WQ_PERCPU, WQ_FPU)"
        )
    if prio != PRI_NONE and not 0 <= prio <= kcont.MAXPRI:
        raise kcont.InvalidArgumentError(f"workqueue_create: prio {prio} out of range 0..{kcont.MAXPRI}")
    return Workqueue(name, func, arg, prio, ipl, flags)


def workqueue_enqueue(wq: Workqueue, wk: Any, ci: kcont.CPU | None = None) -> None:
    """Enqueue the work ``wk``; ``func(wk, arg)`` will be called once.

    Args:
        wq: the workqueue.
        wk: the work item (any object; its identity names it).
        ci: ``WQ_PERCPU`` only: the CPU whose queue takes the work; None for
            the caller's CPU (``kcont.curcpu()``).  Must be None otherwise.

    Raises:
        KassertError: ``wk`` is already enqueued ("A work must not be enqueued
            again until the callback is called"), ``ci`` given without
            ``WQ_PERCPU``, or the workqueue was destroyed.
        TypeError: ``ci`` is not a kcont CPU.
        kcont.InvalidArgumentError: ``ci`` belongs to another runtime.
    """
    wq = _check(wq)
    rt = wq.kcont_queue.rt
    if wq.flags & WQ_PERCPU:
        if ci is None:
            ci = kcont.curcpu()
        elif not isinstance(ci, kcont.CPU):
            raise TypeError(f"ci must be a kcont.CPU or None, not {type(ci).__name__}")
        if ci.rt is not rt:
            raise kcont.InvalidArgumentError(f"{ci!r} is not a CPU of {wq!r}'s runtime")
        q = wq._queues[ci.index]
    elif ci is not None:
        raise KassertError(f"workqueue_enqueue: {wq!r} has no WQ_PERCPU, so ci must be None")
    else:
        q = wq._queues[0]
    with wq._lock:
        destroyed = wq._destroyed
        again = not destroyed and id(wk) in wq._enqueued
        if not (destroyed or again):
            wq._enqueued[id(wk)] = q
            q.fifo.append(wk)
            try:
                q.kc.schedule(0, q.cpu)
            except kcont.BusyError:
                pass  # the worker is committed and has not started: it will take wk
            except BaseException:
                # Refused (shut down...): wk was never committed, so it must
                # not stay recorded, or it could neither run nor be enqueued again.
                q.fifo.pop()
                del wq._enqueued[id(wk)]
                raise
    # The messages are built after the lock is released: wk's repr is user code.
    if destroyed:
        raise KassertError(f"workqueue_enqueue: {wq!r} was destroyed")
    if again:
        raise KassertError(
            f"workqueue_enqueue: {wk!r} is already enqueued on {wq!r}; a work must not be "
            "enqueued again until the callback is called"
        )


def workqueue_wait(wq: Workqueue, wk: Any) -> None:
    """Wait until the work ``wk`` is neither enqueued nor running.

    Returns at once if ``wk`` is idle, and when ``wk`` is on the queue whose
    callback the caller is running (waiting there would deadlock; NetBSD
    does nothing either).  As in NetBSD, the caller must ensure that no new
    work is enqueued on ``wk``'s queue meanwhile: the wait also covers the
    work run in the same batch, and lasts until that queue's worker is idle.

    Raises:
        kcont.SimDeadlockError: simulated runtime: ``wk`` can never finish,
            or the call comes from inside another continuation while ``wk``
            is busy.
        kcont.WouldDeadlockError: threaded runtime: a soft-level queue's
            ``wk`` is enqueued for the CPU whose soft-level function calls
            (only the caller's thread could run it).
    """
    wq = _check(wq)
    with wq._lock:
        q = wq._enqueued.get(id(wk))
        if q is None:
            q = next((running for running in wq._queues if running.current is wk), None)
    if q is not None:
        # Enqueued: the worker is committed (or running and will take it);
        # running: the worker runs.  Either way flush() returns after wk's
        # callback has; from q's own callback it returns at once.
        q.kc.flush()


def workqueue_destroy(wq: Workqueue) -> None:
    """Destroy the workqueue and release its kcont queue.

    Waits for a callback still running; every later enqueue raises.

    Raises:
        KassertError: work is still enqueued ("The caller should ensure that
            the workqueue has no work enqueued beforehand"), the workqueue
            was already destroyed, or the call comes from its own callback.
    """
    wq = _check(wq)
    with wq._lock:
        if wq._destroyed:
            raise KassertError(f"workqueue_destroy: {wq!r} was already destroyed")
        if _own_callback(wq):
            raise KassertError(f"workqueue_destroy: called from a callback of {wq!r} (would deadlock)")
        if wq._enqueued:
            raise KassertError(
                f"workqueue_destroy: {len(wq._enqueued)} work(s) still enqueued on {wq!r}; "
                "the caller should ensure that the workqueue has no work enqueued beforehand"
            )
        wq._destroyed = True
    for q in wq._queues:
        q.kc.destroy()  # cancels an idle run still queued; waits for a running callback
    wq.kcont_queue.release()

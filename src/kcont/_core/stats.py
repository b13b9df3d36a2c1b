"""The shape of ``stats()`` and the optional per-queue timing histograms.

What it owns
    The :class:`~typing.TypedDict` types of what ``RuntimeCore.stats()`` and
    ``Runtime.stats()`` return, and :class:`QueueTiming`, the log2 histograms
    of queue wait and run time per workqueue that ``Runtime(histograms=True)``
    keeps.

Histograms
    A histogram is a list of :data:`HIST_BUCKETS` counts; bucket ``i`` counts
    the durations ``d`` (in nanoseconds) with ``d.bit_length() == i``, that is
    ``2**(i-1) <= d < 2**i`` (bucket 0: ``d == 0``).  Queue wait runs from the
    commit of an invocation (an immediate ``schedule``, a timer's expiry) to
    the start of its function, parked time included; run time from that start
    to the end of the invocation (the function, and the release of its lock).
    :class:`QueueTiming` is fed by the trace events (``RuntimeCore._record``),
    so that it costs nothing when off: the hot paths already test whether
    events are recorded.

Locking
    S (the runtime's state lock): every field of :class:`QueueTiming`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from .continuation import Continuation
    from .workqueue import Workqueue

HIST_BUCKETS = 64  # bit lengths of durations up to 2**63 ns (292 years)


class CounterStats(TypedDict):
    """Counters of a queue, of a CPU, or of the whole runtime (see
    ``kcont._core.runqueue.COUNTERS`` for their meaning)."""

    scheduled: int
    armed: int
    invoked: int
    ebusy: int
    stopped: int
    lock_waits: int
    reentry_waits: int
    late: int
    late_ticks: int
    exceptions: int
    depth_hwm: int
    func_ns: int
    depth: int


class _QueueHistograms(TypedDict, total=False):
    queue_wait_ns: list[int]  # only with Runtime(histograms=True)
    run_ns: list[int]  # only with Runtime(histograms=True)


class QueueStats(CounterStats, _QueueHistograms):
    """One workqueue: its counters (summed over its run queues), its
    priority, whether it is per-CPU, how many continuations it holds and,
    with ``histograms=True``, its timing histograms."""

    pri: int
    percpu: int
    bound: int


class RuntimeStats(TypedDict):
    """What ``stats()`` returns on every runtime."""

    runtime: str
    ticks: int
    hz: int
    ncpu: int
    continuations_created: int
    pending_timers: int
    queues: dict[str, QueueStats]
    cpus: list[CounterStats]
    totals: CounterStats


class WorkerStats(TypedDict):
    """Worker threads of one CPU of the threaded runtime."""

    cpu: int
    soft: int
    thread: int


class ThreadedRuntimeStats(RuntimeStats):
    """What ``Runtime.stats()`` returns: :class:`RuntimeStats` and its threads."""

    workers: list[WorkerStats]
    extra_workers_started: int
    timer_wakeups: int
    running: int


def bucket(duration_ns: int) -> int:
    """The histogram bucket of a duration (negative counts as 0)."""
    if duration_ns <= 0:
        return 0
    return min(duration_ns.bit_length(), HIST_BUCKETS - 1)


class QueueTiming:
    """Queue wait and run time histograms per workqueue, fed with trace
    events (``feed_locked``, state lock held).

    In-flight stamps are keyed by ``id(kc)``, never by the continuation
    itself, so that this table never holds (and never drops, under the state
    lock) the last reference to one; a stamp leaves when its invocation
    starts, ends or is stopped, so an identifier is never reused while
    stamped.
    """

    __slots__ = ("committed", "queue_wait", "run", "started")

    def __init__(self) -> None:
        self.committed: dict[int, int] = {}  # S: id(kc) -> stamp of its queued invocation's commit
        self.started: dict[int, int] = {}  # S: id(kc) -> stamp of its running invocation's start
        self.queue_wait: dict[Workqueue, list[int]] = {}  # S
        self.run: dict[Workqueue, list[int]] = {}  # S

    def feed_locked(self, event: str, kc: Continuation[Any], detail: Any, stamp: int) -> None:
        key = id(kc)
        if event == "start":
            committed = self.committed.pop(key, None)
            if committed is not None:
                _count(self.queue_wait, kc._wq, stamp - committed)
            self.started[key] = stamp
        elif event == "end" or event == "raise":
            started = self.started.pop(key, None)
            if started is not None:
                _count(self.run, kc._wq, stamp - started)
        elif event == "expire" or (event == "schedule" and detail == 0):
            self.committed[key] = stamp
        elif event in ("schedule", "stop", "destroy"):
            # Armed again, or stopped: the queued invocation, if any, is gone.
            self.committed.pop(key, None)

    def forget_locked(self, wq: Workqueue) -> None:
        """``wq`` was freed: drop its histograms."""
        self.queue_wait.pop(wq, None)
        self.run.pop(wq, None)

    def histograms_locked(self, wq: Workqueue) -> tuple[list[int], list[int]]:
        """Copies of ``wq``'s queue wait and run time histograms."""
        empty = [0] * HIST_BUCKETS
        return list(self.queue_wait.get(wq, empty)), list(self.run.get(wq, empty))


def _count(table: dict[Workqueue, list[int]], wq: Workqueue, duration_ns: int) -> None:
    hist = table.get(wq)
    if hist is None:
        hist = table[wq] = [0] * HIST_BUCKETS
    hist[bucket(duration_ns)] += 1

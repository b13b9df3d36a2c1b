"""The harness's accounting: tickets, slots, counters and the online ledger.

Owns :class:`Ticket` (one successful scheduling and what became of it),
:class:`Slot` (a continuation and its harness state), the per-thread counters
(:data:`COUNTERS`, :data:`QCOUNTERS`) and :class:`Ledger`, the base of
:class:`~kcont.stress.Harness` that records every scheduling, start, stop,
halt and destroy and reports what contradicts kcont's semantics as it
happens (see the package docstring for the design).

Locking: a slot's fields and its tickets are guarded by the slot's harness
lock ``h``; the ``_on_*`` and ``_issue`` methods are called with ``h`` held.
Each counter row is written by its own thread only and merged at the end; the
registries (counter rows, queue indexes, live slots, violations, exception
tallies) each have their own small ``threading.Lock``, never held while
calling kcont.  Lock order: a continuation's lock -> ``h`` -> kcont's state
lock.
"""

from __future__ import annotations

import collections
import itertools
import random
import threading
import traceback
from typing import Any

from .._core.continuation import Continuation
from .._core.mutex import Mutex
from .._core.runtime import CPU
from .._core.workqueue import PRI_SOFT_MIN, Workqueue
from ..sim import SimRuntime
from ..threaded import Runtime
from .config import StressConfig


class Fault(Exception):
    """The exception the harness's functions raise on purpose."""


# -- counters ------------------------------------------------------------------

COUNTERS = (
    "ops",  # producer operations
    "fn_ops",  # operations made by functions on their own continuation
    "tickets_now",  # successful immediate schedulings
    "tickets_timer",  # successful timed schedulings (arms and re-arms)
    "ebusy",  # schedulings refused with EBUSY
    "refused_destroyed",  # schedulings refused because the continuation was destroyed
    "refused_shutdown",  # schedulings refused by the shutdown
    "starts",  # invocations (recorded by the functions)
    "faults",  # exceptions raised on purpose
    "stops",
    "stops_true",
    "halts",
    "halts_waited",  # halts that found the function running
    "destroys",
    "self_destroys",
    "creates",
    "setargs",
    "setfuncs",
    "setfunc_busy",
    "setmutex",
    "handovers",
    "setmutex_refused",  # set_mutex(lock) on a lock-less continuation: MutexError
    "acks",
    "extra_locks",  # a function took another continuation's lock
    "sleeps",
    "lock_skips",  # a lock could not be taken in time: the operation was skipped
    "predicates",
    "temp_queues",
    "releases_ebusy",
    "releases_ok",
    "replaced",  # tickets replaced by a re-arm before expiry
    "cancelled_stop",  # tickets cancelled by stop() (or halt's stop) returning False
    "cancelled_halt",  # tickets cancelled by a halt's re-stop (inferred, certain)
    "cancelled_destroy",
    "replaced_or_halted",  # a timer re-armed while a halt waited: replaced or re-stopped
    "order_checked",  # invocations whose start order was checked
    "timer_checked",  # timed invocations checked for earliness
    "flushes",
    "external_runs",  # invocations of continuations the ledger does not follow (explorer actors)
)
_C = {name: i for i, name in enumerate(COUNTERS)}
(
    C_OPS,
    C_FN_OPS,
    C_TNOW,
    C_TTIMER,
    C_EBUSY,
    C_REF_DESTROYED,
    C_REF_SHUTDOWN,
    C_STARTS,
    C_FAULTS,
    C_STOPS,
    C_STOPS_TRUE,
    C_HALTS,
    C_HALTS_WAITED,
    C_DESTROYS,
    C_SELF_DESTROYS,
    C_CREATES,
    C_SETARGS,
    C_SETFUNCS,
    C_SETFUNC_BUSY,
    C_SETMUTEX,
    C_HANDOVERS,
    C_SETMUTEX_REFUSED,
    C_ACKS,
    C_EXTRA_LOCKS,
    C_SLEEPS,
    C_LOCK_SKIPS,
    C_PREDICATES,
    C_TEMP_QUEUES,
    C_REL_EBUSY,
    C_REL_OK,
    C_REPLACED,
    C_CANC_STOP,
    C_CANC_HALT,
    C_CANC_DESTROY,
    C_AMBIGUOUS,
    C_ORDER,
    C_TIMER_CHECKED,
    C_FLUSHES,
    C_EXTERNAL,
) = range(len(COUNTERS))

# The counter row of queues freed and forgotten (see Ledger._wqi).
_FREED_WQI = -1

# Per-queue counters, compared with ``stats()["queues"]`` at the end.
QCOUNTERS = ("invoked", "exceptions", "ebusy", "armed", "stopped")
Q_INVOKED, Q_EXC, Q_EBUSY, Q_ARMED, Q_STOPPED = range(len(QCOUNTERS))


class _Counters:
    """One thread's counters (only that thread writes them)."""

    __slots__ = ("c", "q")

    def __init__(self, nqueues: int) -> None:
        self.c = [0] * len(COUNTERS)
        self.q: dict[int, list[int]] = {}

    def qc(self, wqi: int) -> list[int]:
        row = self.q.get(wqi)
        if row is None:
            row = self.q[wqi] = [0] * len(QCOUNTERS)
        return row


# -- the ledger ------------------------------------------------------------------


class Ticket:
    """One successful scheduling and what became of it (guarded by its slot's ``h``)."""

    __slots__ = (
        "a",
        "b",
        "deadline",
        "expect_run",
        "halting",
        "key",
        "maybe",
        "n",
        "nticks",
        "outcome",
        "started",
        "t0",
        "version",
    )

    def __init__(self, n: int, nticks: int, t0: int, b: int, a: int, version: int, halting: bool) -> None:
        self.n = n
        self.nticks = nticks
        self.t0 = t0  # tick read before schedule()
        self.b = b  # harness sequence number before schedule()
        self.a = a  # ... and after it returned
        self.deadline: int | None = None
        self.key: tuple[int, int, int] = (0, 0, 0)
        self.version = version  # the argument version current at schedule()
        self.halting = halting  # issued while a halt of the slot was waiting
        self.started = False
        self.expect_run = False  # a stop reported it could not be prevented
        # A stop returned False while a halt or destroy whose own stop result is
        # not known yet may have cleared EXPIRED first: cancelled, or running.
        self.maybe = False
        self.outcome: str | None = None  # why it will never run

    def __repr__(self) -> str:
        state = "started" if self.started else (self.outcome or ("expect-run" if self.expect_run else "open"))
        extra = (" halting" if self.halting else "") + (" maybe" if self.maybe else "")
        return f"T{self.n}(nticks={self.nticks}, b={self.b}, a={self.a}, {state}{extra})"


class Slot:
    """A continuation and its harness state (guarded by ``h``)."""

    __slots__ = (
        "body",
        "current",
        "destroyed",
        "destroying",
        "h",
        "halters",
        "history",
        "id",
        "in_body",
        "kc",
        "percpu",
        "released",
        "sm_a",
        "sm_b",
        "soft",
        "temp",
        "variant",
        "version",
        "wq",
        "wqi",
    )

    def __init__(self, sid: int, wq: Workqueue, wqi: int, temp: bool) -> None:
        self.id = sid
        self.h = Mutex(f"h{sid}")
        self.kc: Continuation[Any] = None  # type: ignore[assignment]
        self.wq = wq
        self.wqi = wqi
        self.soft = wq.pri >= PRI_SOFT_MIN
        self.percpu = wq.percpu
        self.temp = temp  # holds an acquisition of a temporary queue
        self.released = False
        self.current: Ticket | None = None
        self.body: Ticket | None = None  # the ticket whose function body runs
        self.in_body = 0
        self.halters = 0
        self.destroying = False
        self.destroyed = False
        self.version = 0
        self.variant = 0
        self.sm_b = -1  # sequence numbers around the last set_mutex
        self.sm_a = -1
        self.history: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=16)


def _alive(kc: Continuation[Any]) -> bool:
    """The current scheduling can still run.  Read in the order the states
    are entered (PENDING -> QUEUED -> RUNNING), so that a scheduling making
    progress meanwhile is never missed."""
    return kc.pending or kc.queued or kc.running


_PREDEFINED_NAMES = (
    "wq_softserial",
    "wq_softnet",
    "wq_softbio",
    "wq_softclock",
    "wq_prihigh",
    "wq_primedhigh",
    "wq_primedlow",
    "wq_prilow",
)


class Ledger:
    """The ledger and the state it needs: slots, tickets, counters, violations."""

    def __init__(
        self, rt: SimRuntime | Runtime, config: StressConfig, *, sim_rng: random.Random | None = None
    ) -> None:
        self.rt = rt
        self.cfg = config
        self.sim = isinstance(rt, SimRuntime)
        self._sim_rng = sim_rng
        self.seq = itertools.count(1)
        self._ticket_ids = itertools.count(1)
        self._slot_ids = itertools.count(1)
        self.locks = [Mutex(f"L{i}") for i in range(config.locks)]
        self._lock_index = {id(lock): i + 1 for i, lock in enumerate(self.locks)}
        self.queues: list[Workqueue] = [rt.predefined(name) for name in _PREDEFINED_NAMES]
        self.acquired: list[Workqueue] = []
        for pri, flags in config.acquired_queues:
            wq = rt.acquire_workqueue(pri, flags)
            self.acquired.append(wq)
            self.queues.append(wq)
        self._counters: list[_Counters] = []
        self._counters_lock = threading.Lock()
        self._wq_index: dict[int, int] = {}  # id(wq) -> its index in the counters
        # The queues with counters, by index; a freed queue leaves (with its
        # counters and order marks, see _forget_wq), so memory stays flat
        # however many temporary queues a long run acquires and frees.
        self._wq_objects: dict[int, Workqueue] = {}
        self._wq_ids = itertools.count()
        for wq in self.queues:
            self._wqi(wq)
        self.wq_lock = threading.Lock()  # serialises acquire/release of temporary queues
        self._temp_acq: dict[tuple[int, int], int] = {}  # our acquisitions per temporary queue
        self._to_release: list[Slot] = []  # destroyed temporary slots awaiting release (wq_lock)
        self.slots: list[Slot] = []
        # Slots not yet destroyed (and those whose function still runs): the
        # final checks need them; destroyed ones are dropped, to bound memory.
        self.all_slots: dict[int, Slot] = {}
        self._pool_lock = threading.Lock()
        self._tls = threading.local()
        self._rng_seeds = itertools.count(config.seed * 1_000_003 + 17)
        self._violations: list[str] = []
        self._freed_invoked = 0  # invocations on temporary queues since freed
        self._lost = 0  # tickets found lost (each is also a violation)
        self._violation_count = 0
        self._violation_lock = threading.Lock()
        self._order_now: dict[tuple[int, int, int], int] = {}
        self._order_timer: dict[tuple[int, int, int], tuple[int, int]] = {}
        self.stopping = False  # functions stop re-arming; producers stop
        self.closing = False  # shutdown has begun: ShutdownError is expected
        self._handler_seen = 0
        self._handler_unexpected = 0
        self._handler_lock = threading.Lock()
        self._ops = [k for k, v in config.weights.items() if v > 0]
        self._op_weights = [config.weights[k] for k in self._ops]
        rt.exception_handler = self._exception_handler

    def _counters_for_thread(self) -> _Counters:
        ctr: _Counters | None = getattr(self._tls, "ctr", None)
        if ctr is None:
            ctr = _Counters(len(self.queues))
            with self._counters_lock:
                self._counters.append(ctr)
            self._tls.ctr = ctr
        return ctr

    def _rng(self) -> random.Random:
        if self._sim_rng is not None:
            return self._sim_rng
        rng: random.Random | None = getattr(self._tls, "rng", None)
        if rng is None:
            rng = self._tls.rng = random.Random(next(self._rng_seeds))
        return rng

    def note_external(self, wq: Workqueue, *, invoked: int = 0, armed: int = 0, stopped: int = 0) -> None:
        """Account for a continuation the ledger does not follow (so that the
        shutdown account and the statistics still balance)."""
        ctr = self._counters_for_thread()
        row = ctr.qc(self._wqi(wq))
        row[Q_INVOKED] += invoked
        row[Q_ARMED] += armed
        row[Q_STOPPED] += stopped
        ctr.c[C_EXTERNAL] += invoked

    def _wqi(self, wq: Workqueue) -> int:
        i = self._wq_index.get(id(wq))
        if i is None:
            if wq.freed:
                # A late look-up (a producer still holding a slot of a queue
                # already freed and forgotten): one shared row, never tracked
                # again, so a freed queue cannot come back to the ledger.
                return _FREED_WQI
            with self._counters_lock:
                i = self._wq_index.get(id(wq))
                if i is None:
                    i = next(self._wq_ids)  # never reused: a late write cannot land on another queue
                    self._wq_objects[i] = wq  # keeps it alive: id() stays unique
                    self._wq_index[id(wq)] = i
        return i

    def _forget_wq(self, wq: Workqueue) -> None:
        """A freed queue: its counters are no longer compared (their
        invocations were added to ``_freed_invoked``), a new queue that reuses
        its ``id()`` gets a new index, and its counter rows and start-order
        marks are dropped (nothing can run on it any more)."""
        with self._counters_lock:
            i = self._wq_index.pop(id(wq), None)
            if i is None:
                return
            del self._wq_objects[i]
            counters = list(self._counters)
        for ctr in counters:
            ctr.q.pop(i, None)
        for marks in (self._order_now, self._order_timer):
            for key in [key for key in list(marks) if key[0] == i]:
                marks.pop(key, None)

    def violation(self, slot: Slot | None, message: str) -> None:
        with self._violation_lock:
            self._violation_count += 1
            if len(self._violations) < self.cfg.max_reported:
                if slot is not None:
                    hist = "\n".join(repr(e) for e in list(slot.history))
                    kc = slot.kc
                    message = (
                        f"slot {slot.id} {kc!r}: {message}\n  current={slot.current!r}\n  history:\n{hist}"
                    )
                self._violations.append(message)

    @property
    def violation_count(self) -> int:
        return self._violation_count

    @property
    def violations(self) -> list[str]:
        return list(self._violations)

    def _exception_handler(self, kc: Continuation[Any], exc: BaseException) -> None:
        with self._handler_lock:
            if isinstance(exc, Fault):
                self._handler_seen += 1
                return
            self._handler_unexpected += 1
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.violation(None, f"unexpected exception from the function of {kc!r}:\n{text}")

    def _live_slots(self) -> list[Slot]:
        with self._pool_lock:
            return list(self.all_slots.values())

    def _forget(self, slot: Slot) -> None:
        with self._pool_lock:
            self.all_slots.pop(slot.id, None)

    def _key(self, slot: Slot, lock: Mutex | None, cpu: CPU | None) -> tuple[int, int, int]:
        return (
            slot.wqi,
            0 if lock is None else self._lock_index.get(id(lock), -1),
            -1 if cpu is None else cpu.index,
        )

    def _issue(self, slot: Slot, ctr: _Counters, nticks: int, t0: int, b: int, a: int) -> Ticket:
        """A schedule() succeeded (``h`` held): a new ticket replaces the current one."""
        kc = slot.kc
        t = Ticket(next(self._ticket_ids), nticks, t0, b, a, slot.version, slot.halters > 0)
        t.key = self._key(slot, kc.mutex, kc.cpu)
        q = ctr.qc(slot.wqi)
        if nticks:
            t.deadline = kc.deadline  # None if it already expired
            ctr.c[C_TTIMER] += 1
            q[Q_ARMED] += 1
        else:
            ctr.c[C_TNOW] += 1
        old = slot.current
        if old is not None and not old.started and old.outcome is None:
            if old.expect_run:
                self.violation(slot, f"schedule succeeded while {old!r} was reported running (INVOKING lost)")
            elif slot.halters > 0 or old.halting or old.maybe:
                if old.nticks:
                    # Re-armed before expiry, or re-stopped by the halt: one of the two.
                    old.outcome = "replaced-or-halted"
                    ctr.c[C_AMBIGUOUS] += 1
                else:
                    old.outcome = "halt"  # an immediate one can only have been stopped
                    ctr.c[C_CANC_HALT] += 1
                    ctr.qc(slot.wqi)[Q_STOPPED] += 1
            elif old.nticks == 0:
                self.violation(
                    slot,
                    f"schedule succeeded while immediate {old!r} was committed and not started "
                    "(it should have been EBUSY)",
                )
                old.outcome = "lost"
                self._lost += 1
            else:
                old.outcome = "replaced"
                ctr.c[C_REPLACED] += 1
        slot.current = t
        slot.history.append((a, "issue", t.n, nticks, t.deadline, t.key))
        return t

    def _on_stop(self, slot: Slot, ctr: _Counters, result: bool, what: str) -> None:
        """stop() (or halt's stop) returned ``result`` with ``h`` held.

        False is conclusive ("prevented") unless a halt is waiting or a destroy
        is under way: their own stop, whose result the harness does not know
        yet, may have cleared EXPIRED of an invocation already dispatched."""
        t = slot.current
        slot.history.append((next(self.seq), what, result, None if t is None else t.n))
        if t is None:
            if result:
                self.violation(slot, f"{what} returned True but the continuation was never scheduled")
            return
        if t.started or t.outcome is not None:
            return
        if result:
            t.expect_run = True
        elif t.expect_run:
            pass
        elif slot.halters > 0 or slot.destroying:
            t.maybe = True
            self._settle(slot, ctr)
        else:
            t.outcome = what
            ctr.c[C_CANC_STOP] += 1
            ctr.qc(slot.wqi)[Q_STOPPED] += 1

    def _on_start(
        self,
        slot: Slot,
        ctr: _Counters,
        variant: int,
        arg: Any,
        tick: int,
        lock: Mutex | None,
        cpu: CPU | None,
    ) -> Ticket | None:
        """A function starts (``h`` held): check everything about the invocation."""
        ctr.c[C_STARTS] += 1
        ctr.qc(slot.wqi)[Q_INVOKED] += 1
        slot.in_body += 1
        t = slot.current
        slot.history.append((next(self.seq), "start", None if t is None else t.n, tick, arg))
        if slot.in_body > 1:
            self.violation(slot, "two invocations of one continuation run at once")
        if slot.destroyed:
            self.violation(slot, "an invocation started after destroy() returned")
        if t is None:
            self.violation(slot, "an invocation without any scheduling")
            return None
        if t.started:
            self.violation(slot, f"{t!r} ran twice")
            return t
        if t.outcome is not None:
            self.violation(slot, f"{t!r} ran although it was cancelled ({t.outcome})")
        t.started = True
        slot.body = t
        # The function and argument are read together, after the lock is taken.
        version, arg_variant = arg
        if arg_variant != variant:
            self.violation(
                slot, f"function variant {variant} called with the argument of variant {arg_variant}"
            )
        if lock is not None:
            if version != slot.version:
                self.violation(
                    slot, f"argument version {version} while {slot.version} was set under the lock before"
                )
        elif not t.version <= version <= slot.version:
            self.violation(
                slot, f"argument version {version} outside [{t.version}, {slot.version}] (schedule, now)"
            )
        if slot.percpu and (cpu is None or t.key[2] != cpu.index):
            self.violation(slot, f"{t!r} scheduled on CPU {t.key[2]} ran on {cpu!r}")
        if t.nticks:
            ctr.c[C_TIMER_CHECKED] += 1
            if tick < t.t0 + t.nticks:
                self.violation(slot, f"{t!r} started at tick {tick}, before {t.t0} + {t.nticks}")
        # Start order per {wq, lock, ci}.  Recording order is start order
        # where starts are serialised: under the continuation's lock, on a
        # per-CPU soft queue (one soft worker per CPU), or on the simulator.
        if lock is not None or self.sim or (slot.soft and slot.percpu):
            key = self._key(slot, lock, cpu if slot.percpu else None)
            b, a = t.b, t.a
            rekeyed = slot.sm_b > t.b  # set_mutex since: moved to a new key
            if rekeyed:
                b, a = slot.sm_b, slot.sm_a
            ctr.c[C_ORDER] += 1
            if t.nticks == 0:
                later = self._order_now.get(key, -1)
                if later > a:
                    self.violation(
                        slot,
                        f"order on {key}: {t!r} became ready (by seq {a}) before a continuation "
                        f"scheduled at seq {later} that started first",
                    )
            elif not rekeyed and t.deadline is not None:
                mark = (t.deadline, t.a)
                before = self._order_timer.get(key)
                if before is not None and before > mark:
                    self.violation(
                        slot, f"timer order on {key}: {t!r} (deadline {t.deadline}) started after {before}"
                    )
                self._order_timer[key] = (
                    max(before, (t.deadline, t.b)) if before is not None else (t.deadline, t.b)
                )
            if b > self._order_now.get(key, -1):
                self._order_now[key] = b
        return t

    def _on_halt_return(
        self,
        slot: Slot,
        ctr: _Counters,
        t0: Ticket | None,
        result: bool,
        begin: int,
        what: str,
        ambiguous: bool,
    ) -> None:
        """halt() returned ``result`` (``h`` held again).  ``ambiguous``: another
        halt or a destroy had begun before it (see :meth:`_on_stop`)."""
        slot.history.append((next(self.seq), what, result, None if t0 is None else t0.n))
        if t0 is not None and not t0.expect_run:
            if result:
                if t0.outcome is not None and not t0.started:
                    self.violation(slot, f"{what} returned True but {t0!r} had been cancelled meanwhile")
                elif not t0.started:
                    t0.expect_run = True
            elif t0.started:
                # h was held from before the halt until its stop: the start came after.
                if not ambiguous:
                    self.violation(slot, f"{what} returned False but {t0!r} ran")
            elif ambiguous:
                t0.maybe = True
            elif t0.outcome is None or t0.outcome == "replaced-or-halted":
                if t0.outcome is not None:
                    ctr.c[C_AMBIGUOUS] -= 1
                t0.outcome = what
                ctr.c[C_CANC_STOP] += 1
                ctr.qc(slot.wqi)[Q_STOPPED] += 1
        if slot.in_body and slot.body is not None and slot.body.b < begin:
            self.violation(slot, f"{what} returned while {slot.body!r}, scheduled before it, still ran")
        self._settle(slot, ctr)

    def _settle(self, slot: Slot, ctr: _Counters) -> None:
        """A ticket issued while a halt waited may have been re-stopped by it;
        one a stop answered ambiguously may have been cancelled: once it can no
        longer run (neither pending, queued nor running), it was cancelled."""
        t = slot.current
        if t is None or t.started or t.outcome is not None or t.expect_run:
            return
        if not (t.halting or t.maybe):
            return
        if not _alive(slot.kc):
            t.outcome = "halt"
            ctr.c[C_CANC_HALT] += 1
            ctr.qc(slot.wqi)[Q_STOPPED] += 1

    def _on_destroyed(self, slot: Slot, ctr: _Counters, *, inside: bool) -> None:
        """destroy() returned (``h`` held)."""
        kc = slot.kc
        t = slot.current
        slot.history.append((next(self.seq), "destroyed", inside, None if t is None else t.n))
        slot.destroyed = True
        if not kc.destroyed:
            self.violation(slot, "destroy() returned but the continuation is not destroyed")
        if t is not None and not t.started and t.outcome is None:
            if t.expect_run and not inside:
                self.violation(slot, f"{t!r} was reported running but never ran before destroy() returned")
            elif _alive(kc):
                self.violation(slot, f"{t!r} can still run after destroy() returned ({kc.flags})")
            else:
                t.outcome = "destroy"
                ctr.c[C_CANC_DESTROY] += 1
                ctr.qc(slot.wqi)[Q_STOPPED] += 1
        if not inside:
            if slot.in_body:
                self.violation(slot, f"destroy() returned while {slot.body!r} still ran")
            if kc.running or kc.pending or kc.queued:
                self.violation(slot, f"destroy() returned with the continuation {kc.flags}")
            self._forget(slot)

    def figures(self) -> dict[str, int]:
        totals = [0] * len(COUNTERS)
        for ctr in self._counters:
            for i, v in enumerate(ctr.c):
                totals[i] += v
        figures = dict(zip(COUNTERS, totals, strict=True))
        figures["handler_seen"] = self._handler_seen
        figures["handler_unexpected"] = self._handler_unexpected
        figures["violations"] = self._violation_count
        # What the harness itself keeps per queue: bounded by the live queues,
        # not by the temporary queues a run went through.
        figures["tracked_queues"] = len(self._wq_objects)
        figures["counter_rows"] = max((len(ctr.q) for ctr in self._counters), default=0)
        return figures

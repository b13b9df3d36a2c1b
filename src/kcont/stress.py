"""Stress harness with exact accounting: ``python -m kcont stress``.

Several producer threads create, schedule (immediate and timed), re-arm,
stop, halt, flush, setarg, setfunc, setmutex and destroy continuations at random on
predefined and acquired queues, while the continuations' functions take locks,
raise, re-arm, stop, halt or destroy themselves, hand their lock over and
sometimes sleep.  At the end the harness checks, exactly:

* no invocation lost: every successful scheduling (a *ticket*) ran once, or
  was cancelled by a stop/halt/destroy that reported so (or by a re-arm, or
  by the shutdown, which counts it);
* none ran twice, none ran concurrently with another invocation of the same
  continuation, none ran after a stop/halt that reported it prevented, or
  after ``destroy`` returned;
* order per ``{wq, lock, ci}``: start order equals ready order (immediate
  schedulings bracketed by the harness's sequence numbers, timers by deadline);
* no timer early (start tick >= tick read before ``schedule`` + ``nticks``);
* every exception counted (raised = seen by the handler = ``stats()`` =
  ``ShutdownAccount.failed``);
* the shutdown account and the per-queue statistics equal the journal.

Design: tickets and the harness lock
------------------------------------
Each continuation has a *slot* with a harness lock ``h`` (a
:class:`kcont.Mutex`).  Every call that can start or end a scheduling
(``schedule``, ``stop``, ``halt``'s stop, ``set_mutex``) is made with ``h``
held, together with the recording of its outcome, and a function records its
start under ``h`` first thing.  The ticket an invocation serves is then the
slot's current ticket: between the dispatch of an invocation and its
recording, INVOKING is set, so no other scheduling can succeed (EBUSY), and
only the function itself acknowledges (producers never call ``ack``).

Lock order: a continuation's lock (``kc.mutex``) -> ``h`` -> kcont's state
lock.  Functions run with their lock held by the dispatcher and take ``h``;
producers take a continuation's lock (for ``setarg``/``setmutex``) before
``h``.  Never the reverse: nobody blocks on a continuation's lock while
holding ``h`` (the lock hand-over inside a function uses a non-blocking try).
``halt`` waits with ``interlock=h`` (released while waiting, so the running
function can record itself); ``destroy`` is called without ``h``.

What cannot be observed directly is inferred, and only where kcont's
semantics make it certain:

* a ``halt`` that waits re-stops the continuation at every invocation end
  (docs/semantics.md §8), which silently cancels a scheduling made
  meanwhile; when the halt returns, a ticket issued during it that is no
  longer pending, queued or running was so cancelled;
* ``halt`` and ``destroy`` stop before the harness learns their result (halt
  returns it only after waiting, destroy never), and a stop clears EXPIRED:
  a later ``stop`` then rightly returns False for an invocation already
  dispatched.  So while a halt waits or a destroy runs, False from a stop is
  not taken as "prevented": the ticket is settled once it can no longer run
  (then it was cancelled) or when it starts;
* a ``destroy`` cancels whatever it finds.

Everything else must be reported by a return value.  Start order is checked
where the recording order is the start order: continuations with a lock
(their lock is held from dispatch to the recording), per-CPU soft-level
queues (one soft worker per CPU), and everything on the simulator.

A small public hook would make the harness simpler and the check stronger:
the scheduling an invocation serves (a generation number taken by the
dispatcher at start), readable inside the function.  The function would no
longer need to take ``h`` first, and producers could call ``ack`` too.

The journal
-----------
Every operation is journaled cheaply: per-thread counters (merged at the
end) and, per continuation, a bounded history of its last events (printed
with a violation).  The checks themselves run online, under ``h``, against
the slot's ticket ledger, so the memory needed does not grow with the run.
"""

from __future__ import annotations

import argparse
import collections
import errno
import faulthandler
import itertools
import json
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import capi
from ._core.continuation import Continuation
from ._core.mutex import Mutex
from ._core.runtime import CPU, RuntimeCore, ShutdownAccount, bind_cpu, curcpu, current_runtime
from ._core.workqueue import PRI_SOFT_MIN, WQ_PERCPU, Workqueue
from .errors import (
    BusyError,
    DestroyedError,
    HaltTimeoutError,
    MutexError,
    NoRuntimeError,
    ShutdownError,
    WorkqueueReleasedError,
)
from .sim import SimRuntime
from .threaded import Runtime

__all__ = [
    "Fault",
    "Harness",
    "StressConfig",
    "StressResult",
    "add_arguments",
    "main",
    "run",
    "run_stress",
]


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


# -- configuration and result ------------------------------------------------


@dataclass
class StressConfig:
    """What the harness does.  Probabilities are per operation or per call."""

    threads: int = 4  # producer threads
    continuations: int = 64  # continuations alive at any time
    duration: float = 5.0  # seconds of load
    seed: int = 1
    ncpu: int = 2
    hz: int = 1000
    locks: int = 4  # continuation locks shared by the continuations
    acquired_queues: Sequence[tuple[int, int]] = ((200, 0), (150, WQ_PERCPU), (90, 0), (40, WQ_PERCPU))
    temp_priorities: Sequence[int] = (5, 160, 199)  # queues acquired and released during the run
    p_locked: float = 0.6  # a new continuation has a lock
    max_nticks: int = 20
    p_raise: float = 0.04  # at each raise point of a function
    p_rearm: float = 0.3
    p_self_stop: float = 0.03
    p_self_halt: float = 0.03
    p_self_destroy: float = 0.005
    p_handover: float = 0.05
    p_self_setarg: float = 0.05
    p_extra_lock: float = 0.1
    p_sleep: float = 0.05  # thread-level functions only
    max_sleep: float = 0.002
    p_capi: float = 0.3  # use the kcont_* API for an operation
    p_bind: float = 0.3  # a producer binds itself to a CPU for an operation
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    shutdown_cancel: bool | None = None  # None: drawn from the seed
    lock_timeout: float = 10.0  # producers; 0 = non-blocking (simulated runtime)
    halt_timeout: float = 30.0
    hang_timeout: float | None = None  # faulthandler dump after this many seconds (None: duration + 120)
    max_reported: int = 20  # violations kept with details


DEFAULT_WEIGHTS: dict[str, float] = {
    "schedule_now": 20,
    "schedule_timer": 20,
    "stop": 12,
    "halt": 4,
    "setarg": 8,
    "setfunc": 3,
    "setmutex": 4,
    "destroy": 2,
    "temp_queue": 0.5,
    "predicates": 4,
    "queue_churn": 0.5,
    "flush": 2,
}


@dataclass
class StressResult:
    """Figures and violations of a run (``ok`` iff there is no violation)."""

    config: StressConfig
    seconds: float
    figures: dict[str, int]
    account: ShutdownAccount | None
    violations: list[str]
    violation_count: int
    runtime: str

    @property
    def ok(self) -> bool:
        return self.violation_count == 0

    def summary(self) -> str:
        f = self.figures
        c = self.config
        acc = self.account
        lines = [
            f"kcont stress: {self.runtime}, {c.threads} producer threads, {c.continuations} continuations, "
            f"{c.ncpu} CPUs, hz={c.hz}, seed={c.seed}",
            f"  seconds            {self.seconds:.1f}",
            f"  operations         {f['ops'] + f['fn_ops']} "
            f"({f['ops']} by producers, {f['fn_ops']} by functions)",
            f"  tickets            {f['tickets_now'] + f['tickets_timer']} "
            f"({f['tickets_now']} immediate, {f['tickets_timer']} timed)",
            f"  invocations        {f['starts']} (order checked {f['order_checked']}, "
            f"timers checked {f['timer_checked']})",
            f"  cancelled          stop {f['cancelled_stop']}, halt re-stop {f['cancelled_halt']}, "
            f"destroy {f['cancelled_destroy']}, replaced by re-arm {f['replaced']}, "
            f"re-arm during halt {f['replaced_or_halted']}",
            f"  at shutdown        pending {acc.pending if acc else '?'}, "
            f"cancelled {acc.cancelled if acc else '?'}, unfinished {acc.unfinished if acc else '?'}",
            f"  EBUSY              {f['ebusy']}",
            f"  exceptions         {f['faults']} raised = {f['handler_seen']} seen = "
            f"{acc.failed if acc else '?'} in the account",
            f"  stops/halts        {f['stops']} stops ({f['stops_true']} too late), {f['halts']} halts "
            f"({f['halts_waited']} waited)",
            f"  destroys/creates   {f['destroys']} destroys ({f['self_destroys']} from inside), "
            f"{f['creates']} creates, {f['temp_queues']} temporary queues",
            f"  setarg/func/mutex  {f['setargs']}/{f['setfuncs']}/{f['setmutex']} "
            f"({f['handovers']} hand-overs inside functions)",
            f"  ShutdownAccount    {acc}",
            f"  violations         {self.violation_count}",
        ]

        for v in self.violations:
            lines.append("  VIOLATION " + v.replace("\n", "\n    "))
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "threads": self.config.threads,
            "continuations": self.config.continuations,
            "ncpu": self.config.ncpu,
            "hz": self.config.hz,
            "seed": self.config.seed,
            "seconds": round(self.seconds, 2),
            "figures": self.figures,
            "account": None if self.account is None else self.account.__dict__,
            "violations": self.violation_count,
            "violation_details": self.violations,
        }


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


# -- the harness ---------------------------------------------------------------------


class Harness:
    """The shared machinery of the threaded stress run and the simulated
    explorer: slots, operations, functions and the online checker."""

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
        self._wq_index: dict[int, int] = {}
        self._wq_objects: list[Workqueue | None] = []
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
        setup_rng = random.Random(config.seed)
        for _ in range(config.continuations):
            self.slots.append(self._new_slot(setup_rng, self._counters_for_thread()))

    # -- per-thread state ------------------------------------------------------

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
            with self._counters_lock:
                i = self._wq_index.get(id(wq))
                if i is None:
                    i = len(self._wq_objects)
                    self._wq_objects.append(wq)  # keeps it alive: id() stays unique
                    self._wq_index[id(wq)] = i
        return i

    # -- violations ------------------------------------------------------------

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

    # -- slots -----------------------------------------------------------------

    def _new_slot(self, rng: random.Random, ctr: _Counters, wq: Workqueue | None = None) -> Slot:
        temp = wq is not None
        if wq is None:
            wq = rng.choice(self.queues)
        slot = Slot(next(self._slot_ids), wq, self._wqi(wq), temp)
        lock = rng.choice(self.locks) if self.locks and rng.random() < self.cfg.p_locked else None
        func = self._make_func(slot, 0)
        arg = (0, 0)
        how = rng.randrange(3)
        if how == 0:
            kc: Continuation[Any] = Continuation(wq, func, arg, lock=lock, name=f"s{slot.id}")
        elif how == 1:
            kc = self.rt.continuation(wq, func, arg, lock=lock, name=f"s{slot.id}")
        else:
            kc = capi.kcont_create(wq, lock, func, arg, 0)
            kc.name = f"s{slot.id}"
        slot.kc = kc
        ctr.c[C_CREATES] += 1
        with self._pool_lock:
            self.all_slots[slot.id] = slot
        return slot

    def _make_func(self, slot: Slot, variant: int) -> Callable[[Any, Continuation[Any]], None]:
        body = self._body

        def func(arg: Any, kc: Continuation[Any]) -> None:
            body(slot, variant, arg, kc)

        func.__qualname__ = f"stress_fn{variant}"
        return func

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

    # -- the ledger --------------------------------------------------------------

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

    # -- the function --------------------------------------------------------------

    def _body(self, slot: Slot, variant: int, arg: Any, kc: Continuation[Any]) -> None:
        cfg = self.cfg
        ctr = self._counters_for_thread()
        rng = self._rng()
        tick = self.rt.ticks
        lock = kc.mutex  # held for us by the dispatcher (read before any hand-over)
        cpu = curcpu()
        if not kc.running_here:
            self.violation(slot, "running_here is False inside the function")
        h = slot.h
        release_after: Mutex | None = None
        h.acquire()
        try:
            try:
                self._on_start(slot, ctr, variant, arg, tick, lock, cpu)
                if rng.random() < cfg.p_raise:
                    raise self._fault(ctr, slot, "start")
                release_after = self._body_action(slot, ctr, rng, kc, lock)
            finally:
                h.release()
            if release_after is not None:
                release_after.release()  # the old lock, after the hand-over
            if lock is None and self.locks and rng.random() < cfg.p_extra_lock:
                extra = rng.choice(self.locks)
                if not (self.sim and extra.locked()) and extra.acquire(
                    not self.sim, -1 if self.sim else 0.05
                ):
                    ctr.c[C_EXTRA_LOCKS] += 1
                    try:
                        if rng.random() < cfg.p_raise:
                            raise self._fault(ctr, slot, "holding another lock")
                    finally:
                        extra.release()
            if not slot.soft and not self.sim and rng.random() < cfg.p_sleep:
                ctr.c[C_SLEEPS] += 1
                time.sleep(rng.random() * cfg.max_sleep)
            if rng.random() < cfg.p_raise:
                raise self._fault(ctr, slot, "end")
        finally:
            with h:
                slot.in_body -= 1
                slot.body = None
                if slot.destroyed:
                    self._forget(slot)

    def _fault(self, ctr: _Counters, slot: Slot, where: str) -> Fault:
        ctr.c[C_FAULTS] += 1
        ctr.qc(slot.wqi)[Q_EXC] += 1
        return Fault(f"injected at {where} of {slot.kc!r}")

    def _body_action(
        self, slot: Slot, ctr: _Counters, rng: random.Random, kc: Continuation[Any], lock: Mutex | None
    ) -> Mutex | None:
        """What the function does with ``h`` held; returns a lock to release after."""
        cfg = self.cfg
        r = rng.random()
        if r < cfg.p_rearm:
            if self.stopping:
                return None
            ctr.c[C_FN_OPS] += 1
            ctr.c[C_ACKS] += 1
            atomic = rng.random() < 0.3  # schedule(ack=True): NetBSD's callout_schedule
            if not atomic:
                acked = capi.kcont_ack(kc) if rng.random() < cfg.p_capi else kc.ack()
                if not acked:
                    self.violation(slot, "ack() inside the function found INVOKING clear")
            self._schedule_locked(slot, ctr, rng, rng.random() < 0.5, None, ack=atomic)
            if rng.random() < cfg.p_raise:
                raise self._fault(ctr, slot, "after re-arm")
            return None
        r -= cfg.p_rearm
        if r < cfg.p_self_stop:
            ctr.c[C_FN_OPS] += 1
            ctr.c[C_STOPS] += 1
            self._on_stop(slot, ctr, kc.stop(), "stop-inside")
            return None
        r -= cfg.p_self_stop
        if r < cfg.p_self_halt:
            ctr.c[C_FN_OPS] += 1
            ctr.c[C_HALTS] += 1
            result = kc.halt(interlock=slot.h) if rng.random() < 0.5 else kc.halt()
            # From its own function, halt is a stop that does not wait.
            self._on_stop(slot, ctr, result, "halt-inside")
            return None
        r -= cfg.p_self_halt
        if r < cfg.p_self_destroy:
            if slot.destroying:
                return None
            ctr.c[C_FN_OPS] += 1
            ctr.c[C_SELF_DESTROYS] += 1
            slot.destroying = True
            if rng.random() < cfg.p_capi:
                capi.kcont_destroy(kc)
            else:
                kc.destroy()
            self._on_destroyed(slot, ctr, inside=True)
            if slot.temp:
                with self.wq_lock:
                    self._to_release.append(slot)
            return None
        r -= cfg.p_self_destroy
        if r < cfg.p_handover:
            if lock is None or slot.destroying:
                return None
            new = rng.choice(self.locks)
            # (locked() first: on the simulator every holder is this thread.)
            if new is lock or new.locked() or not new.acquire(False):
                ctr.c[C_LOCK_SKIPS] += 1
                return None
            ctr.c[C_FN_OPS] += 1
            ctr.c[C_HANDOVERS] += 1
            slot.sm_b = next(self.seq)
            old = capi.kcont_setmutex(kc, new) if rng.random() < cfg.p_capi else kc.set_mutex(new)
            slot.sm_a = next(self.seq)
            slot.history.append((slot.sm_a, "handover", self._lock_index.get(id(new))))
            if old is not lock:
                self.violation(slot, f"set_mutex returned {old!r}, not the lock held {lock!r}")
            return lock
        r -= cfg.p_handover
        if r < cfg.p_self_setarg and not slot.destroying:
            ctr.c[C_FN_OPS] += 1
            ctr.c[C_SETARGS] += 1
            slot.version += 1
            kc.set_arg((slot.version, slot.variant))
        return None

    # -- producer operations -------------------------------------------------------

    def producer_op(self, rng: random.Random, op: str | None = None) -> str:
        """One random operation on a random continuation."""
        ctr = self._counters_for_thread()
        if op is None:
            op = rng.choices(self._ops, self._op_weights)[0]
        ctr.c[C_OPS] += 1
        index = rng.randrange(len(self.slots))
        slot = self.slots[index]
        if self.rt.cpus and rng.random() < self.cfg.p_bind:
            with bind_cpu(rng.choice(self.rt.cpus)):
                self._dispatch_op(op, slot, index, rng, ctr)
        else:
            self._dispatch_op(op, slot, index, rng, ctr)
        return op

    def _dispatch_op(self, op: str, slot: Slot, index: int, rng: random.Random, ctr: _Counters) -> None:
        if op == "schedule_now" or op == "schedule_timer":
            if slot.destroyed:
                self._replace_slot(index, slot, rng, ctr)
                return
            cpu = rng.choice(self.rt.cpus) if slot.percpu and rng.random() < 0.5 else None
            with slot.h:
                self._schedule_locked(slot, ctr, rng, op == "schedule_now", cpu)
        elif op == "stop":
            ctr.c[C_STOPS] += 1
            with slot.h:
                result = capi.kcont_stop(slot.kc) if rng.random() < self.cfg.p_capi else slot.kc.stop()
                if result:
                    ctr.c[C_STOPS_TRUE] += 1
                self._on_stop(slot, ctr, result, "stop")
        elif op == "halt":
            self._op_halt(slot, rng, ctr)
        elif op == "setarg":
            self._op_setarg(slot, rng, ctr, func=False)
        elif op == "setfunc":
            self._op_setarg(slot, rng, ctr, func=True)
        elif op == "setmutex":
            self._op_setmutex(slot, rng, ctr)
        elif op == "destroy":
            self._op_destroy(slot, index, rng, ctr)
        elif op == "temp_queue":
            self._op_destroy(slot, index, rng, ctr, temp=True)
        elif op == "predicates":
            self._op_predicates(slot, ctr)
        elif op == "queue_churn":
            self._op_queue_churn(rng, ctr)
        elif op == "flush":
            self._op_flush(slot, ctr)
        else:
            raise ValueError(f"unknown operation {op!r}")

    def _schedule_locked(
        self, slot: Slot, ctr: _Counters, rng: random.Random, now: bool, cpu: CPU | None, ack: bool = False
    ) -> None:
        kc = slot.kc
        nticks = 0 if now else rng.randint(1, self.cfg.max_nticks)
        t0 = self.rt.ticks
        b = next(self.seq)
        use_capi = not ack and rng.random() < self.cfg.p_capi
        try:
            if use_capi:
                code = capi.kcont_schedule(kc, cpu, nticks)
            else:
                kc.schedule(nticks, cpu, ack=ack)
                code = 0
        except BusyError:
            code = errno.EBUSY
        except DestroyedError:
            code = errno.EINVAL
        except ShutdownError:
            code = -1
        a = next(self.seq)
        if code == 0:
            self._issue(slot, ctr, nticks, t0, b, a)
        elif code == errno.EBUSY:
            ctr.c[C_EBUSY] += 1
            ctr.qc(slot.wqi)[Q_EBUSY] += 1
            if slot.current is None:
                self.violation(slot, "EBUSY from a continuation never scheduled")
        elif code == errno.EINVAL:
            ctr.c[C_REF_DESTROYED] += 1
            if not slot.destroying:
                self.violation(slot, "schedule refused as destroyed, but nobody destroyed it")
        elif code == -1:
            ctr.c[C_REF_SHUTDOWN] += 1
            if not self.closing:
                self.violation(slot, "ShutdownError before the shutdown")
        else:
            self.violation(slot, f"schedule returned {code}")

    def _op_halt(self, slot: Slot, rng: random.Random, ctr: _Counters) -> None:
        ctr.c[C_HALTS] += 1
        kc = slot.kc
        h = slot.h
        h.acquire()
        try:
            begin = next(self.seq)
            t0 = slot.current
            if t0 is not None and (t0.started or t0.outcome is not None):
                t0 = None
            ambiguous = slot.halters > 0 or slot.destroying
            slot.halters += 1
            waited = kc.running
            try:
                if rng.random() < self.cfg.p_capi:
                    result = capi.kcont_halt(kc, h)
                else:
                    result = kc.halt(interlock=h, timeout=self.cfg.halt_timeout)
            except HaltTimeoutError:
                self.violation(slot, f"halt() still waiting after {self.cfg.halt_timeout} s")
                return
            finally:
                slot.halters -= 1
            if waited:
                ctr.c[C_HALTS_WAITED] += 1
            self._on_halt_return(slot, ctr, t0, result, begin, "halt", ambiguous)
        finally:
            h.release()

    def _op_flush(self, slot: Slot, ctr: _Counters) -> None:
        """flush() (without ``h``: it waits for the function, which needs it):
        an immediate ticket current when it began has run, or was cancelled,
        by the time it returns."""
        ctr.c[C_FLUSHES] += 1
        with slot.h:
            t0 = slot.current
            if t0 is None or t0.started or t0.outcome is not None or t0.nticks:
                t0 = None
        try:
            slot.kc.flush(timeout=self.cfg.halt_timeout)
        except HaltTimeoutError:
            self.violation(slot, f"flush() still waiting after {self.cfg.halt_timeout} s")
            return
        if t0 is None:
            return
        with slot.h:
            self._settle(slot, ctr)
            if not t0.started and t0.outcome is None:
                if slot.halters or (slot.destroying and not slot.destroyed):
                    return  # a halt or destroy under way may have cancelled it: resolved when it returns
                self.violation(slot, f"flush() returned before {t0!r} ran or was cancelled")

    def _take_lock(self, slot: Slot, ctr: _Counters) -> tuple[bool, Mutex | None]:
        """Take the continuation's lock (before ``h``).  Returns (taken, lock):
        (True, None) if it has none, (False, lock) if it could not be taken."""
        lock = slot.kc.mutex
        if lock is None:
            return True, None
        timeout = self.cfg.lock_timeout
        if lock.acquire(timeout > 0, timeout if timeout > 0 else -1):
            return True, lock
        ctr.c[C_LOCK_SKIPS] += 1
        if timeout > 0:
            self.violation(slot, f"{lock!r} could not be taken in {timeout} s")
        return False, lock

    def _op_setarg(self, slot: Slot, rng: random.Random, ctr: _Counters, *, func: bool) -> None:
        taken, lock = self._take_lock(slot, ctr)
        if not taken:
            return
        try:
            with slot.h:
                kc = slot.kc
                if kc.mutex is not lock:
                    ctr.c[C_LOCK_SKIPS] += 1  # re-associated meanwhile
                    return
                version = slot.version + 1
                use_capi = rng.random() < self.cfg.p_capi
                if func:
                    ctr.c[C_SETFUNCS] += 1
                    variant = rng.randrange(2)
                    new = self._make_func(slot, variant)
                    try:
                        if use_capi:
                            code = capi.kcont_setfunc(kc, new, (version, variant))
                        else:
                            kc.set_func(new, (version, variant))
                            code = 0
                    except BusyError:
                        code = errno.EBUSY
                    except DestroyedError:
                        code = errno.EINVAL
                    if code == errno.EBUSY:
                        ctr.c[C_SETFUNC_BUSY] += 1
                        if lock is not None:
                            self.violation(slot, "set_func refused EBUSY although the lock is held")
                        return
                else:
                    ctr.c[C_SETARGS] += 1
                    variant = slot.variant
                    try:
                        code = capi.kcont_setarg(kc, (version, variant)) if use_capi else 0
                        if not use_capi:
                            kc.set_arg((version, variant))
                    except DestroyedError:
                        code = errno.EINVAL
                if code == errno.EINVAL:
                    if not slot.destroying:
                        self.violation(slot, "setarg/setfunc refused as destroyed, but nobody destroyed it")
                    return
                if code:
                    self.violation(slot, f"setarg/setfunc returned {code}")
                    return
                slot.version = version
                slot.variant = variant
                slot.history.append((next(self.seq), "setfunc" if func else "setarg", version, variant))
        finally:
            if lock is not None:
                lock.release()

    def _op_setmutex(self, slot: Slot, rng: random.Random, ctr: _Counters) -> None:
        taken, lock = self._take_lock(slot, ctr)
        if not taken:
            return
        ctr.c[C_SETMUTEX] += 1
        new = rng.choice(self.locks) if self.locks and rng.random() < 0.9 else None
        try:
            with slot.h:
                kc = slot.kc
                if kc.mutex is not lock:
                    ctr.c[C_LOCK_SKIPS] += 1
                    return
                sm_b = next(self.seq)
                try:
                    old = (
                        capi.kcont_setmutex(kc, new) if rng.random() < self.cfg.p_capi else kc.set_mutex(new)
                    )
                except MutexError:
                    if lock is None and new is not None:
                        ctr.c[C_SETMUTEX_REFUSED] += 1  # the seed's assertion: lock-less stays lock-less
                    else:
                        self.violation(slot, f"set_mutex({new!r}) refused with the lock {lock!r} held")
                    return
                except DestroyedError:
                    if not slot.destroying:
                        self.violation(slot, "set_mutex refused as destroyed, but nobody destroyed it")
                    return
                finally:
                    sm_a = next(self.seq)
                if new is not lock:
                    slot.sm_b, slot.sm_a = sm_b, sm_a  # moved to a new {wq, lock, ci}
                if lock is None and new is not None:
                    self.violation(slot, "set_mutex gave a lock to a lock-less continuation")
                if old is not lock:
                    self.violation(slot, f"set_mutex returned {old!r}, not {lock!r}")
                slot.history.append((sm_a, "setmutex", self._lock_index.get(id(new), 0)))
        finally:
            if lock is not None:
                lock.release()

    def _op_destroy(
        self, slot: Slot, index: int, rng: random.Random, ctr: _Counters, *, temp: bool = False
    ) -> None:
        """Destroy a continuation (without ``h``: destroy waits), check that
        nothing of it can run any more, and put a new one in its place (on a
        temporary queue if ``temp``)."""
        with slot.h:
            if slot.destroying:
                return
            slot.destroying = True
            slot.history.append((next(self.seq), "destroy-begin"))
        ctr.c[C_DESTROYS] += 1
        try:
            if rng.random() < self.cfg.p_capi:
                capi.kcont_destroy(slot.kc)
            else:
                slot.kc.destroy(timeout=self.cfg.halt_timeout)
        except HaltTimeoutError:
            self.violation(slot, f"destroy() still waiting after {self.cfg.halt_timeout} s")
            return
        except DestroyedError:
            # We marked it first, and a function destroys itself only if unmarked.
            self.violation(slot, "destroy() raised DestroyedError although this was the first destroy")
            return
        with slot.h:
            self._on_destroyed(slot, ctr, inside=False)
        if slot.temp and not self._release_temp(slot, ctr):
            self.violation(slot, "destroy() returned but the continuation is not detached from its queue")
        self._replace_slot(index, slot, rng, ctr, temp=temp)

    def _replace_slot(
        self, index: int, slot: Slot, rng: random.Random, ctr: _Counters, *, temp: bool = False
    ) -> None:
        if self.stopping or self.closing:
            return
        with self._pool_lock:
            if self.slots[index] is not slot:
                return
        fresh = self._new_temp_slot(rng, ctr) if temp else self._new_slot(rng, ctr)
        with self._pool_lock:
            if self.slots[index] is slot:
                self.slots[index] = fresh
                return
        # Another producer replaced it first: destroy the spare at once.
        with fresh.h:
            fresh.destroying = True
        fresh.kc.destroy()
        with fresh.h:
            self._on_destroyed(fresh, ctr, inside=False)
        if fresh.temp:
            self._release_temp(fresh, ctr)

    def _new_temp_slot(self, rng: random.Random, ctr: _Counters) -> Slot:
        """Acquire a temporary queue and bind a new continuation to it; while it
        is the only acquisition, its release must be EBUSY and change nothing."""
        self._reap(ctr)
        pri = rng.choice(list(self.cfg.temp_priorities))
        flags = rng.choice((0, WQ_PERCPU))
        with self.wq_lock:
            if self.rt is _current_or_none():
                wq = capi.kcont_workqueue_acquire(pri, flags)
            else:
                wq = self.rt.acquire_workqueue(pri, flags)
            n = self._temp_acq.get((pri, flags), 0) + 1
            self._temp_acq[(pri, flags)] = n
            if n == 1 and wq.acquired != 1:
                self.violation(None, f"{wq!r} acquired {wq.acquired} times, expected 1")
            ctr.c[C_TEMP_QUEUES] += 1
            slot = self._new_slot(rng, ctr, wq)
            if n == 1:
                code = capi.kcont_workqueue_release(wq)
                if code != errno.EBUSY or wq.acquired != 1 or wq.freed:
                    self.violation(
                        slot, f"last release of {wq!r} with a continuation bound returned {code}, not EBUSY"
                    )
                else:
                    ctr.c[C_REL_EBUSY] += 1
        return slot

    def _release_temp(self, slot: Slot, ctr: _Counters) -> bool:
        """Release the temporary queue of a destroyed slot: 0, and freed with
        the last acquisition.  Returns False if it must be retried (EBUSY: the
        continuation destroyed itself and its function has not returned)."""
        wq = slot.wq
        with self.wq_lock:
            if slot.released:
                return True
            if "DETACHED" not in slot.kc.flags:
                return False  # destroyed from inside: detached once its function returns
            key = (wq.pri, wq.flags)
            last = self._temp_acq[key] == 1
            code = capi.kcont_workqueue_release(wq)
            if code == errno.EBUSY and last:
                self.violation(slot, f"release of {wq!r} EBUSY after its last continuation was destroyed")
                return False
            if code:
                self.violation(slot, f"release of {wq!r} returned {code}")
                return True
            slot.released = True
            ctr.c[C_REL_OK] += 1
            self._temp_acq[key] -= 1
            if last:
                wqi = self._wqi(wq)
                with self._counters_lock:
                    counters = list(self._counters)
                self._freed_invoked += sum(
                    row[Q_INVOKED] for row in (c.q.get(wqi) for c in counters) if row is not None
                )
                self._forget_wq(wq)
                if not wq.freed:
                    self.violation(slot, f"{wq!r} not freed by its last release")
                try:
                    Continuation(wq, _never, None)
                    self.violation(slot, f"a continuation was created on the freed {wq!r}")
                except WorkqueueReleasedError:
                    pass
                if capi.kcont_workqueue_release(wq) != errno.EINVAL:
                    self.violation(slot, f"release of the freed {wq!r} did not return EINVAL")
            return True

    def _forget_wq(self, wq: Workqueue) -> None:
        """A freed queue: its counters are no longer compared, and a new queue
        that reuses its ``id()`` gets a new index."""
        with self._counters_lock:
            i = self._wq_index.pop(id(wq), None)
            if i is not None:
                self._wq_objects[i] = None

    def _reap(self, ctr: _Counters) -> None:
        with self.wq_lock:
            pending = self._to_release
            self._to_release = []
        keep = [slot for slot in pending if not self._release_temp(slot, ctr)]
        if keep:
            with self.wq_lock:
                self._to_release.extend(keep)

    def _op_predicates(self, slot: Slot, ctr: _Counters) -> None:
        """One snapshot of the flags must satisfy the state machine's invariants."""
        ctr.c[C_PREDICATES] += 1
        kc = slot.kc
        if kc.running_here:
            self.violation(slot, "running_here is True outside its function")
        names = set(kc.flags.split("|"))
        problems = []
        if "PENDING" in names and names & {"EXPIRED", "QUEUED", "INVOKING"}:
            problems.append("PENDING with EXPIRED/QUEUED/INVOKING")
        if "DETACHED" in names and ("DESTROYED" not in names or names & {"PENDING", "QUEUED", "RUNNING"}):
            problems.append("DETACHED but not quiescent")
        if "QUEUED" in names and "DESTROYED" in names and "RUNNING" not in names and slot.destroyed:
            problems.append("QUEUED after destroy returned")
        if problems:
            self.violation(slot, f"flags {kc.flags}: {', '.join(problems)}")
        # The C-style predicates agree with the properties they wrap (values may
        # move between reads, so only the types are compared).
        for fn in (capi.kcont_pending, capi.kcont_expired, capi.kcont_active, capi.kcont_invoking):
            if not isinstance(fn(kc), bool):
                self.violation(slot, f"{fn.__name__} did not return a bool")

    def _op_queue_churn(self, rng: random.Random, ctr: _Counters) -> None:
        """Acquire one of the run's queues again and release it: never the last
        acquisition, so the release must return 0 and free nothing."""
        wq = rng.choice(self.acquired) if self.acquired else None
        if wq is None:
            return
        with self.wq_lock:
            again = self.rt.acquire_workqueue(wq.pri, wq.flags)
            if again is not wq:
                self.violation(None, f"acquire({wq.pri}, {wq.flags}) returned {again!r}, not {wq!r}")
            code = capi.kcont_workqueue_release(again)
            if code != 0 or wq.freed:
                self.violation(None, f"release of a queue acquired twice returned {code}")
            else:
                ctr.c[C_REL_OK] += 1

    # -- the end -----------------------------------------------------------------------

    def final_check_before_shutdown(self) -> None:
        """Producers have stopped and functions no longer re-arm: every open
        ticket must still be able to run (pending, queued or running)."""
        ctr = self._counters_for_thread()
        for slot in self._live_slots():
            with slot.h:
                t = slot.current
                if t is None or t.started or t.outcome is not None or t.expect_run:
                    continue
                if _alive(slot.kc):
                    continue
                if t.halting or t.maybe:
                    t.outcome = "halt"
                    ctr.c[C_CANC_HALT] += 1
                    ctr.qc(slot.wqi)[Q_STOPPED] += 1
                    continue
                if slot.destroying and not slot.destroyed:
                    continue
                self.violation(slot, f"{t!r} LOST: not started, not cancelled, and no longer scheduled")
                t.outcome = "lost"
                self._lost += 1

    def finish(self, account: ShutdownAccount, stats: Mapping[str, Any]) -> dict[str, int]:
        """After shutdown: reconcile the journal with the account and stats;
        returns the merged figures."""
        ctr = self._counters_for_thread()
        open_tickets: list[tuple[Slot, Ticket]] = []
        for slot in self._live_slots():
            with slot.h:
                t = slot.current
                if slot.in_body:
                    self.violation(slot, "a function body still runs after shutdown")
                if t is None or t.started or t.outcome is not None:
                    continue
                if t.expect_run:
                    self.violation(slot, f"{t!r} was reported running by a stop but never ran")
                    continue
                open_tickets.append((slot, t))
                t.outcome = "shutdown"
                ctr.qc(slot.wqi)[Q_STOPPED] += 1
        figures = self.figures()
        expected_failed = figures["faults"] + self._handler_unexpected
        ran = figures["starts"] + figures["external_runs"]
        if account.ran != ran:
            self.violation(
                None,
                f"account.ran = {account.ran}, but {ran} invocations ran "
                f"({self._freed_invoked} of them on queues freed since)",
            )
        if account.failed != expected_failed or self._handler_seen != figures["faults"]:
            self.violation(
                None,
                f"exceptions: {figures['faults']} raised, {self._handler_seen} seen by the handler, "
                f"{account.failed} in the account",
            )
        if account.pending + account.cancelled != len(open_tickets):
            self.violation(
                None,
                f"shutdown stopped {account.pending} timers and cancelled {account.cancelled} invocations, "
                f"but {len(open_tickets)} tickets were open: "
                + ", ".join(f"s{s.id}:{t!r}" for s, t in open_tickets[:10]),
            )
        if account.unfinished:
            self.violation(None, f"{account.unfinished} invocations unfinished at shutdown")
        # Every ticket has exactly one outcome.
        tickets = figures["tickets_now"] + figures["tickets_timer"]
        outcomes = (
            figures["starts"]
            + figures["cancelled_stop"]
            + figures["cancelled_halt"]
            + figures["cancelled_destroy"]
            + figures["replaced"]
            + figures["replaced_or_halted"]
            + self._lost
            + len(open_tickets)
        )
        if tickets != outcomes:
            self.violation(None, f"ticket balance: {tickets} tickets issued, {outcomes} outcomes")
        self._check_stats(stats, figures)
        return figures

    def _check_stats(self, stats: Mapping[str, Any], figures: dict[str, int]) -> None:
        expected: dict[int, list[int]] = {}
        for ctr in self._counters:
            for wqi, row in ctr.q.items():
                acc = expected.setdefault(wqi, [0] * len(QCOUNTERS))
                for i, v in enumerate(row):
                    acc[i] += v
        live = {wq.name: wq for wq in self.rt.workqueues}
        ambiguous = figures["replaced_or_halted"]
        for wqi, wq in enumerate(self._wq_objects):
            if wq is None or wq.freed or live.get(wq.name) is not wq:
                continue
            got = stats["queues"][wq.name]
            want = expected.get(wqi, [0] * len(QCOUNTERS))
            for i, name in enumerate(QCOUNTERS):
                if name == "stopped":
                    ok = want[i] <= got[name] <= want[i] + ambiguous
                else:
                    ok = got[name] == want[i]
                if not ok:
                    self.violation(None, f"stats {wq.name}.{name} = {got[name]}, journal says {want[i]}")

    def figures(self) -> dict[str, int]:
        totals = [0] * len(COUNTERS)
        for ctr in self._counters:
            for i, v in enumerate(ctr.c):
                totals[i] += v
        figures = dict(zip(COUNTERS, totals, strict=True))
        figures["handler_seen"] = self._handler_seen
        figures["handler_unexpected"] = self._handler_unexpected
        figures["violations"] = self._violation_count
        return figures

    def teardown(self) -> None:
        """Destroy every continuation and release every queue acquired (after
        shutdown): the last releases must free the queues."""
        ctr = self._counters_for_thread()
        for slot in self._live_slots():
            if not slot.kc.destroyed:
                slot.kc.destroy(timeout=self.cfg.halt_timeout)
            if slot.temp and not self._release_temp(slot, ctr):
                self.violation(slot, "temporary queue could not be released after shutdown")
        self._reap(ctr)
        if self._to_release:
            self.violation(None, f"{len(self._to_release)} temporary queues could not be released")
        for wq in self.acquired:
            code = capi.kcont_workqueue_release(wq)
            if code != 0 or not wq.freed:
                self.violation(None, f"final release of {wq!r} returned {code} (freed={wq.freed})")

    def check_release_busy(self) -> None:
        """The last release of a queue with continuations bound is EBUSY and
        changes nothing."""
        for wq in self.acquired:
            if wq.bound and wq.acquired == 1:
                code = capi.kcont_workqueue_release(wq)
                if code != errno.EBUSY or wq.freed or wq.acquired != 1:
                    self.violation(None, f"last release of {wq!r} with {wq.bound} bound returned {code}")


def _never(arg: object, kc: Continuation[Any]) -> None:
    raise AssertionError("never scheduled")


def _current_or_none() -> Any:
    try:
        return current_runtime()
    except NoRuntimeError:
        return None


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


# -- the threaded run ------------------------------------------------------------------


def run_stress(config: StressConfig, *, progress: Callable[[str], None] | None = None) -> StressResult:
    """Run the threaded stress harness and return its figures and violations.

    Bounded in time whatever kcont does: producers are joined with a
    deadline, the shutdown has a timeout, and a faulthandler dump of every
    thread is armed for ``hang_timeout`` seconds (default: duration + 120)."""
    hang = config.hang_timeout if config.hang_timeout is not None else config.duration + 120.0
    faulthandler.dump_traceback_later(hang, exit=False)
    rng = random.Random(config.seed)
    cancel = config.shutdown_cancel if config.shutdown_cancel is not None else rng.random() < 0.5
    rt = Runtime(ncpu=config.ncpu, hz=config.hz, name=f"stress{config.seed}")
    started = time.monotonic()
    account: ShutdownAccount | None = None
    # Entered as the current runtime, but left without Runtime.__exit__: its
    # shutdown() has no timeout, and the harness must end even if kcont hangs.
    rt.__enter__()
    try:
        harness = Harness(rt, config)
        _load(harness, config, started, progress)
        harness.stopping = True
        harness._reap(harness._counters_for_thread())
        harness.final_check_before_shutdown()
        harness.check_release_busy()
        harness.closing = True
        account = rt.shutdown(cancel=cancel, timeout=60)
        figures = harness.finish(account, rt.stats())
        harness.teardown()
        figures = harness.figures() | {k: v for k, v in figures.items() if k not in COUNTERS}
    finally:
        if not rt.closed or account is None:
            rt.shutdown(cancel=True, timeout=10)
        RuntimeCore.__exit__(rt)
        faulthandler.cancel_dump_traceback_later()
    figures["violations"] = harness.violation_count
    return StressResult(
        config=config,
        seconds=time.monotonic() - started,
        figures=figures,
        account=account,
        violations=harness.violations,
        violation_count=harness.violation_count,
        runtime="threaded Runtime",
    )


def _load(
    harness: Harness, config: StressConfig, started: float, progress: Callable[[str], None] | None
) -> None:
    """The producer threads, for ``config.duration`` seconds."""
    stop_at = time.monotonic() + config.duration
    errors: list[str] = []

    def producer(index: int) -> None:
        prng = random.Random(config.seed * 7919 + index)
        try:
            while not harness.stopping and time.monotonic() < stop_at:
                harness.producer_op(prng)
        except BaseException:
            errors.append(traceback.format_exc())

    threads = [
        threading.Thread(target=producer, args=(i,), name=f"stress-producer{i}", daemon=True)
        for i in range(config.threads)
    ]
    for t in threads:
        t.start()
    next_report = time.monotonic() + 10
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(0.2)
        if progress is not None and time.monotonic() >= next_report:
            next_report += 10
            f = harness.figures()
            progress(
                f"  {time.monotonic() - started:6.0f} s  {f['ops'] + f['fn_ops']} ops  "
                f"{f['starts']} invocations  {f['violations']} violations"
            )
        if time.monotonic() > stop_at + 60:
            harness.violation(None, "producer threads still running 60 s after the end (hang?)")
            harness.stopping = True
            break
    for text in errors:
        harness.violation(None, f"a producer raised:\n{text}")


# -- command line --------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m kcont stress``."""
    d = StressConfig()
    parser.add_argument("--threads", type=int, default=4, help="producer threads (default: 4)")
    parser.add_argument(
        "--continuations", type=int, default=64, help="continuations alive at any time (default: 64)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of load (default: $KCONT_STRESS_SECONDS, else 20)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the producers' choices (default: 1)")
    parser.add_argument("--ncpu", type=int, default=d.ncpu, help=f"virtual CPUs (default: {d.ncpu})")
    parser.add_argument("--hz", type=int, default=d.hz, help=f"ticks per second (default: {d.hz})")
    parser.add_argument("--locks", type=int, default=d.locks, help=f"continuation locks (default: {d.locks})")
    parser.add_argument("--p-raise", type=float, default=d.p_raise, help="probability of each raise point")
    parser.add_argument(
        "--cancel",
        choices=("yes", "no", "seed"),
        default="seed",
        help="shutdown(cancel=...) at the end (default: drawn from the seed)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")

    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    """Run from parsed arguments; prints the figures; 0 iff no violation."""
    import os

    duration = args.duration
    if duration is None:
        duration = float(os.environ.get("KCONT_STRESS_SECONDS", "20"))
    config = StressConfig(
        threads=args.threads,
        continuations=args.continuations,
        duration=duration,
        seed=args.seed,
        ncpu=args.ncpu,
        hz=args.hz,
        locks=args.locks,
        p_raise=args.p_raise,
        shutdown_cancel=None if args.cancel == "seed" else args.cancel == "yes",
    )
    # Hang detector: dump every thread's stack and exit if the run overstays.
    faulthandler.dump_traceback_later(duration + 300, exit=True)
    try:
        result = run_stress(config, progress=None if args.quiet else lambda s: print(s, flush=True))
    finally:
        faulthandler.cancel_dump_traceback_later()
    print(result.summary())
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kcont.stress", description="kcont stress harness with exact accounting"
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

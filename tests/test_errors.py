"""Bad input catalogue for the core (docs/semantics.md §14): each misuse raises a specific
exception at the call, with a message naming the problem, and the runtime keeps working."""

from __future__ import annotations

import copy
import errno
import gc
import pickle
import threading
from collections.abc import Callable
from typing import Any

import pytest

import kcont
from kcont import (
    BusyError,
    Continuation,
    DestroyedError,
    InvalidArgumentError,
    KcontError,
    Mutex,
    MutexError,
    NoPerCPUQueueError,
    ShutdownError,
    SimDeadlockError,
    SimRuntime,
    WorkqueueReleasedError,
)


def noop(arg: Any, kc: Continuation[Any]) -> None:
    pass


def assert_still_works(rt: SimRuntime) -> None:
    """A fresh continuation can still be created, scheduled and run on ``rt``."""
    ran: list[int] = []
    kc = rt.continuation(kcont.wq_softnet, lambda a, k: ran.append(a), 1)
    kc.schedule(1)
    rt.advance(1)
    assert ran == [1]
    kc.destroy()


class Fixture:
    """What the catalogue's callables get: the runtime and ready-made objects."""

    def __init__(self, rt: SimRuntime) -> None:
        self.rt = rt
        self.kc = rt.continuation(kcont.wq_softnet, noop)
        self.shared_wq = rt.workqueue(100)
        self.shared_kc = rt.continuation(self.shared_wq, noop)
        self.lock = Mutex()
        self.locked_kc = rt.continuation(kcont.wq_softnet, noop, lock=self.lock)
        self.other = SimRuntime()

    def destroyed(self) -> Continuation[Any]:
        kc = self.rt.continuation(kcont.wq_softnet, noop)
        kc.destroy()
        return kc

    def freed_wq(self) -> kcont.Workqueue:
        wq = self.rt.workqueue(42)
        wq.release()
        return wq


Case = tuple[str, Callable[[Fixture], object], type[BaseException], str]

CASES: list[Case] = [
    # create
    ("func not callable", lambda f: Continuation(kcont.wq_softnet, "nope"), TypeError, "callable"),
    ("func None", lambda f: Continuation(kcont.wq_softnet, None), TypeError, "callable"),
    (
        "lock is threading.Lock",
        lambda f: Continuation(kcont.wq_softnet, noop, lock=threading.Lock()),
        TypeError,
        "Mutex",
    ),
    (
        "lock is threading.RLock",
        lambda f: Continuation(kcont.wq_softnet, noop, lock=threading.RLock()),
        TypeError,
        "Mutex",
    ),
    ("wq not a queue", lambda f: Continuation("wq_softnet", noop), TypeError, "workqueue"),
    ("wq is None", lambda f: Continuation(None, noop), TypeError, "workqueue"),
    (
        "wq of another runtime via rt.continuation",
        lambda f: f.rt.continuation(f.other.workqueue(100), noop),
        InvalidArgumentError,
        "another runtime",
    ),
    ("wq released", lambda f: Continuation(f.freed_wq(), noop), WorkqueueReleasedError, "released"),
    (
        "capi create flags != 0",
        lambda f: kcont.kcont_create(kcont.wq_softnet, None, noop, None, 1),
        InvalidArgumentError,
        "flags",
    ),
    (
        "capi create flags not int",
        lambda f: kcont.kcont_create(kcont.wq_softnet, None, noop, None, "0"),
        TypeError,
        "flags",
    ),
    (
        "capi create flags bool",
        lambda f: kcont.kcont_create(kcont.wq_softnet, None, noop, None, False),
        TypeError,
        "flags",
    ),
    # schedule
    ("nticks str", lambda f: f.kc.schedule("1"), TypeError, "int"),
    ("nticks float", lambda f: f.kc.schedule(1.0), TypeError, "int"),
    ("nticks bool", lambda f: f.kc.schedule(True), TypeError, "int"),
    ("nticks None", lambda f: f.kc.schedule(None), TypeError, "int"),
    ("nticks negative", lambda f: f.kc.schedule(-1), InvalidArgumentError, "nticks"),
    ("cpu is an int", lambda f: f.kc.schedule(0, cpu=1), TypeError, "CPU"),
    ("cpu is a runtime", lambda f: f.kc.schedule(0, cpu=f.rt), TypeError, "CPU"),
    (
        "cpu of another runtime",
        lambda f: f.kc.schedule(0, cpu=f.other.cpus[0]),
        InvalidArgumentError,
        "another runtime",
    ),
    (
        "cpu on shared queue",
        lambda f: f.shared_kc.schedule(0, cpu=f.rt.cpus[0]),
        NoPerCPUQueueError,
        "per-CPU",
    ),
    ("schedule destroyed", lambda f: f.destroyed().schedule(0), DestroyedError, "destroyed"),
    (
        "capi schedule not a continuation",
        lambda f: kcont.kcont_schedule("kc", None, 0),
        TypeError,
        "continuation",
    ),
    ("capi schedule nticks str", lambda f: kcont.kcont_schedule(f.kc, None, "0"), TypeError, "int"),
    # setters
    ("setfunc not callable", lambda f: f.kc.set_func(42, None), TypeError, "callable"),
    ("setfunc destroyed", lambda f: f.destroyed().set_func(noop, None), DestroyedError, "destroyed"),
    ("setarg destroyed", lambda f: f.destroyed().set_arg(1), DestroyedError, "destroyed"),
    ("setarg lock not held", lambda f: f.locked_kc.set_arg(1), MutexError, "hold"),
    ("setfunc lock not held", lambda f: f.locked_kc.set_func(noop, 1), MutexError, "hold"),
    ("setmutex lock not held", lambda f: f.locked_kc.set_mutex(None), MutexError, "hold"),
    ("setmutex non-Mutex", lambda f: f.kc.set_mutex(threading.Lock()), TypeError, "Mutex"),
    ("setmutex on lock-less kc", lambda f: f.kc.set_mutex(Mutex()), MutexError, "without a lock"),
    ("destroy twice", lambda f: f.destroyed().destroy(), DestroyedError, "destroyed"),
    # workqueues
    (
        "acquire pri too high",
        lambda f: f.rt.acquire_workqueue(kcont.MAXPRI + 1, 0),
        InvalidArgumentError,
        "range",
    ),
    ("acquire pri negative", lambda f: f.rt.acquire_workqueue(-1, 0), InvalidArgumentError, "range"),
    ("acquire pri str", lambda f: f.rt.acquire_workqueue("high", 0), TypeError, "priority"),
    ("acquire pri bool", lambda f: f.rt.acquire_workqueue(True, 0), TypeError, "priority"),
    ("acquire unknown flag", lambda f: f.rt.acquire_workqueue(100, 0x2), InvalidArgumentError, "flags"),
    ("acquire negative flags", lambda f: f.rt.acquire_workqueue(100, -1), InvalidArgumentError, "flags"),
    ("acquire flags str", lambda f: f.rt.acquire_workqueue(100, "WQ_PERCPU"), TypeError, "flags"),
    (
        "capi acquire unknown flag",
        lambda f: kcont.kcont_workqueue_acquire(100, 0x10),
        InvalidArgumentError,
        "flags",
    ),
    (
        "release predefined",
        lambda f: f.rt.predefined("wq_prilow").release(),
        InvalidArgumentError,
        "predefined",
    ),
    ("release freed", lambda f: f.freed_wq().release(), WorkqueueReleasedError, "freed"),
    ("last release with bound kc", lambda f: f.shared_wq.release(), BusyError, "bound"),
    ("capi release not a queue", lambda f: kcont.kcont_workqueue_release("wq"), TypeError, "workqueue"),
    ("unknown predefined name", lambda f: f.rt.predefined("wq_nope"), KeyError, "wq_nope"),
    # runtime and CPUs
    ("bind_cpu non-CPU", lambda f: kcont.bind_cpu(0).__enter__(), TypeError, "CPU"),
    ("step on foreign CPU", lambda f: f.rt.step(f.other.cpus[0]), TypeError, "not a CPU"),
    ("advance negative", lambda f: f.rt.advance(-1), ValueError, "nticks"),
    ("SimRuntime ncpu 0", lambda f: SimRuntime(ncpu=0), InvalidArgumentError, "ncpu"),
    ("SimRuntime ncpu str", lambda f: SimRuntime(ncpu="2"), TypeError, "ncpu"),
    ("SimRuntime hz 0", lambda f: SimRuntime(hz=0), InvalidArgumentError, "hz"),
    ("SimRuntime hz float", lambda f: SimRuntime(hz=100.0), TypeError, "hz"),
]


@pytest.mark.parametrize(("call", "exc_type", "word"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_misuse_raises_at_the_call(
    rt: SimRuntime, call: Callable[[Fixture], object], exc_type: type[BaseException], word: str
) -> None:
    """§14: misuse raises a specific exception at the call; the runtime keeps working."""
    f = Fixture(rt)
    with pytest.raises(exc_type) as info:
        call(f)
    assert word.lower() in str(info.value).lower()
    assert f.kc.flags == "IDLE" and f.shared_kc.flags == "IDLE" and f.locked_kc.flags == "IDLE"
    assert rt.run_until_idle() == 0
    assert_still_works(rt)


def test_seed_conditions_carry_errno(rt: SimRuntime) -> None:
    """§14: exceptions for conditions the seed names carry the errno the C layer returns."""
    assert BusyError.errno == errno.EBUSY
    assert NoPerCPUQueueError.errno == errno.ENOENT
    assert InvalidArgumentError.errno == errno.EINVAL
    assert DestroyedError.errno == errno.EINVAL
    assert WorkqueueReleasedError.errno == errno.EINVAL
    assert MutexError.errno is None and ShutdownError.errno is None
    assert issubclass(InvalidArgumentError, ValueError)
    for exc in (BusyError, NoPerCPUQueueError, MutexError, ShutdownError, SimDeadlockError):
        assert issubclass(exc, KcontError)


def test_schedule_errors_leave_pending_timer_untouched(rt: SimRuntime) -> None:
    """§14: a refused re-schedule does not disturb the armed timer."""
    ran: list[int] = []
    kc = rt.continuation(kcont.wq_softnet, lambda a, k: ran.append(rt.ticks))
    kc.schedule(3)
    for bad in (-1, "2", True):
        with pytest.raises((TypeError, InvalidArgumentError)):
            kc.schedule(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        kc.schedule(1, cpu=SimRuntime().cpus[0])
    assert kc.deadline == 3 and kc.flags == "PENDING"
    rt.advance(3)
    assert ran == [3]


@pytest.mark.timeout(30)
def test_messages_and_traces_never_call_user_repr(rt: SimRuntime) -> None:
    """Refusal messages and trace labels are built under the state lock: they
    label a callable object by its type, never by its ``__repr__`` (which may
    use the runtime and would deadlock there)."""
    calls: list[str] = []

    class Handler:
        def __call__(self, arg: object, kc: object) -> None:
            pass

        def __repr__(self) -> str:
            calls.append("repr")
            rt.stats()  # takes the state lock
            return "Handler()"

    kc = rt.continuation(kcont.wq_softnet, Handler())
    kc.schedule()
    with pytest.raises(BusyError, match=r"Handler .*INVOKING"):
        kc.schedule()
    assert kcont.capi.kcont_schedule(kc, None, 0) == errno.EBUSY
    assert rt.stats()["totals"]["ebusy"] == 2
    assert rt.run_until_idle() == 1
    kc.destroy()
    with pytest.raises(DestroyedError, match=r"Handler"):
        kc.set_arg(1)
    assert "Handler" in repr(kc) and calls == []


@pytest.mark.timeout(30)
def test_labels_run_no_user_attribute_lookup(rt: SimRuntime) -> None:
    """Labels (traces, messages, the name a destroyed continuation keeps) read
    no attribute of a callable object through its ``__getattr__``, which may
    use the runtime under the state lock."""
    looked_up: list[str] = []

    class Handler:
        def __call__(self, arg: object, kc: object) -> None:
            pass

        def __getattr__(self, attr: str) -> Any:
            looked_up.append(attr)
            rt.stats()  # takes the state lock
            raise AttributeError(attr)

    kc = rt.continuation(kcont.wq_softnet, Handler())
    kc.schedule()
    rt.run_until_idle()
    kc.destroy()
    assert looked_up == [] and "Handler" in repr(kc)
    with pytest.raises(TypeError, match="name must be a str"):
        rt.continuation(kcont.wq_softnet, Handler(), name=42)  # type: ignore[arg-type]


# -- shut-down runtime -----------------------------------------------------------------------------


def test_shutdown_runtime_refuses_new_work() -> None:
    """§14: after shutdown, create, schedule and acquire raise ShutdownError (both APIs)."""
    rt = SimRuntime(reraise=True)
    kc = rt.continuation(kcont.wq_softnet, noop)
    rt.shutdown()
    with pytest.raises(ShutdownError, match="shut down"):
        rt.continuation(kcont.wq_softnet, noop)
    with pytest.raises(ShutdownError, match="shut down"):
        kc.schedule()
    with pytest.raises(ShutdownError, match="shut down"):
        kc.schedule(5)
    with pytest.raises(ShutdownError, match="shut down"):
        kcont.kcont_schedule(kc, None, 0)
    with pytest.raises(ShutdownError, match="shut down"):
        rt.workqueue(100)
    assert kc.stop() is False  # stop and destroy still work
    kc.destroy()


def test_shutdown_runs_committed_work_and_stops_timers() -> None:
    """sim.shutdown(): committed invocations run, pending timers are stopped, all accounted."""
    rt = SimRuntime(reraise=True)
    ran: list[str] = []
    now = rt.continuation(kcont.wq_softnet, lambda a, k: ran.append(a), "now")
    later = rt.continuation(kcont.wq_softnet, lambda a, k: ran.append(a), "later")
    now.schedule()
    later.schedule(5)
    account = rt.shutdown()
    assert ran == ["now"]
    assert (account.ran, account.pending, account.cancelled, account.unfinished, account.failed) == (
        1,
        1,
        0,
        0,
        0,
    )
    assert not later.pending
    rt.advance(10)
    assert ran == ["now"]


def test_shutdown_cancel_drops_committed_work() -> None:
    """sim.shutdown(cancel=True) cancels committed invocations instead of running them."""
    rt = SimRuntime(reraise=True)
    ran: list[str] = []
    kc = rt.continuation(kcont.wq_softnet, lambda a, k: ran.append(a), "x")
    kc.schedule()
    account = rt.shutdown(cancel=True)
    assert ran == [] and account.cancelled == 1 and account.ran == 0
    assert kc.flags == "IDLE"


def test_shutdown_accounts_for_entry_parked_on_a_held_lock() -> None:
    """sim.shutdown() "accounts for everything": a committed invocation that cannot start
    (its lock is held by the caller) is reported (SimDeadlockError, as every wait that can
    never end on the simulator) or cancelled and counted; it never runs after shutdown returned."""
    rt = SimRuntime(reraise=True)
    lock = Mutex()
    ran: list[int] = []
    kc = rt.continuation(kcont.wq_softnet, lambda a, k: ran.append(1), lock=lock)
    account = None
    with lock:
        kc.schedule()
        rt.run_until_idle()  # parks on the held lock
        try:
            account = rt.shutdown()
        except SimDeadlockError:
            return  # reported: fine
    assert account is not None
    assert account.cancelled + account.unfinished == 1
    rt.run_until_idle()
    assert ran == []


# -- the simulator's own misuse --------------------------------------------------------------------


def test_stepping_from_inside_a_function_raises(rt: SimRuntime) -> None:
    """sim: step() from inside a continuation's function is a SimDeadlockError (re-raised)."""
    kc = Continuation(kcont.wq_softnet, lambda a, k: rt.step())
    kc.schedule()
    with pytest.raises(SimDeadlockError, match="inside"):
        rt.run_until_idle()
    assert kc.flags == "EXPIRED"
    assert_still_works(rt)


def test_endless_rescheduling_is_reported(rt: SimRuntime) -> None:
    """sim: run_until_idle() stops a continuation that re-schedules itself forever."""

    def forever(arg: Any, kc: Continuation[Any]) -> None:
        kc.ack()
        kc.schedule(0)

    kc = Continuation(kcont.wq_softnet, forever)
    kc.schedule()
    with pytest.raises(SimDeadlockError, match="100 steps"):
        rt.run_until_idle(max_steps=100)
    kc.stop()
    assert rt.run_until_idle() == 0
    assert_still_works(rt)


def test_mutex_misuse_in_func_does_not_break_the_runtime(rt: SimRuntime) -> None:
    """§14: a func that re-acquires its own lock gets MutexError; the lock is still released."""
    lock = Mutex()
    kc = Continuation(kcont.wq_softnet, lambda a, k: lock.acquire(), lock=lock)
    kc.schedule()
    with pytest.raises(MutexError, match="not recursive"):
        rt.run_until_idle()
    assert not lock.locked()
    assert_still_works(rt)


def test_a_failed_lock_release_after_a_failing_func_loses_neither_error() -> None:
    """§14: func released its own lock (no set_mutex) and raised: the handler
    gets the dispatcher's MutexError chained to func's exception, as a
    ``finally`` clause would chain them; the invocation counts as one failure."""
    rt = SimRuntime(ncpu=1)
    seen: list[BaseException] = []
    rt.exception_handler = lambda kc, exc: seen.append(exc)
    lock = Mutex("m")

    def func(arg: object, kc: object) -> None:
        lock.release()
        raise ValueError("func failed too")

    with rt:
        Continuation(kcont.wq_softnet, func, lock=lock).schedule()
        rt.run_until_idle()
    assert [type(e) for e in seen] == [MutexError]
    assert isinstance(seen[0].__context__, ValueError)
    assert rt.stats()["totals"]["exceptions"] == 1 and not lock.locked()


def test_a_continuation_subclass_cannot_redefine_equality() -> None:
    """Continuations are found by identity (run queues, the wheel): a subclass
    with a value-based ``__eq__`` would let ``stop()`` remove another one."""
    with pytest.raises(TypeError, match="may not define __eq__"):

        class ByName(Continuation[Any]):
            def __eq__(self, other: object) -> bool:
                return True

    class Named(Continuation[Any]):  # other subclasses are allowed
        pass

    rt = SimRuntime(ncpu=1)
    with rt:
        kc = Named(kcont.wq_softnet, lambda a, k: None)
        kc.schedule()
        assert rt.run_until_idle() == 1


# -- copies and pickles ----------------------------------------------------------


@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
def test_a_continuation_or_mutex_cannot_be_copied_or_pickled(rt: kcont.SimRuntime, how: str) -> None:
    """A copy of a continuation would share its queue binding without holding
    one: collecting the copy unbound the original's queue, which could then be
    released and freed under it (its next scheduling then never ran)."""
    wq = rt.workqueue(100)
    kc = kcont.Continuation(wq, lambda arg, kc: None, None)
    do = {"copy": copy.copy, "deepcopy": copy.deepcopy, "pickle": pickle.dumps}[how]
    with pytest.raises(TypeError, match="cannot be copied or pickled"):
        do(kc)
    with pytest.raises(TypeError, match="cannot be copied or pickled"):
        do(kcont.Mutex("m"))
    gc.collect()
    assert wq.bound == 1
    assert kcont.kcont_workqueue_release(wq) == errno.EBUSY  # still bound: not freed under kc
    kc.schedule()
    assert rt.run_until_idle() == 1

"""The bad-input catalogue: every public name of ``kcont`` and ``kcont.capi``
given wrong types, out-of-range values, objects of another runtime, destroyed
continuations and released queues.

Each case must get a clear error *at the call* (the exception the docs name,
or the errno the C-style API returns) and leave the runtime working: after
every case, fresh continuations on a soft-level, a thread-level and an
acquired queue run, and the case's continuations still behave.  Every case
runs on both runtimes.

The catalogue is keyed by public name, and :func:`test_every_public_name_has_an_entry`
fails when ``kcont.__all__`` or ``kcont.capi.__all__`` gains a name without
one.  Cases that currently fail are bugs: they are marked xfail(strict) and
reproduced in tests/test_regressions.py.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import kcont
from kcont import (
    BusyError,
    Continuation,
    DestroyedError,
    InvalidArgumentError,
    Mutex,
    MutexError,
    NoPerCPUQueueError,
    NoRuntimeError,
    Runtime,
    RuntimeCore,
    ShutdownError,
    SimDeadlockError,
    SimRuntime,
    WorkqueueReleasedError,
    capi,
)

KINDS = ("sim", "threaded")


def _f(arg: Any, kc: Any) -> None:
    pass


class Env:
    """A runtime (current), another runtime of the same kind, and objects in
    every state a bad call can meet."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.rt: Any = self.make()
        self.other: Any = self.make()
        self.rt.__enter__()
        self.ran: list[str] = []
        rt = self.rt
        self.lock = Mutex("L")
        self.kc = rt.continuation(kcont.wq_softnet, self.record, "kc")
        self.locked = rt.continuation(kcont.wq_prilow, self.record, "locked", lock=self.lock)
        self.wq = rt.acquire_workqueue(10, 0)  # shared, acquired once
        self.shared = rt.continuation(self.wq, self.record, "shared")
        self.pending = rt.continuation(kcont.wq_softclock, self.record, "pending")
        self.pending.schedule(100_000)
        # INVOKING and QUEUED: its lock is held here, so it waits, on both runtimes.
        self.blocker = Mutex("blocker")
        self.blocker.acquire()
        self.invoking = rt.continuation(kcont.wq_softbio, self.record, "invoking", lock=self.blocker)
        self.invoking.schedule()
        self.destroyed = rt.continuation(kcont.wq_softnet, self.record, "destroyed")
        self.destroyed.destroy()
        self.freed = rt.acquire_workqueue(20, kcont.WQ_PERCPU)
        self.freed.release()
        self.other_wq = self.other.acquire_workqueue(30, kcont.WQ_PERCPU)
        self.other_kc = self.other.continuation(self.other_wq, _f)

    def make(self) -> Any:
        return SimRuntime(ncpu=2, hz=100) if self.kind == "sim" else Runtime(ncpu=2, hz=100)

    def record(self, arg: str, kc: Any) -> None:
        self.ran.append(arg)

    def wait_for(self, done: Callable[[], bool]) -> None:
        """Run (simulator) or wait (threaded, at most 10 s) until ``done()``.
        Not wait_idle(): the INVOKING continuation stays queued on purpose."""
        if self.kind == "sim":
            self.rt.run_until_idle()
            return
        deadline = time.monotonic() + 10
        while not done() and time.monotonic() < deadline:
            time.sleep(0.002)

    def closed_runtime(self) -> Any:
        """A runtime of the same kind, shut down, with a continuation made before."""
        rt = self.make()
        kc = rt.continuation(kcont.wq_softnet, _f)
        rt.shutdown()
        return rt, kc

    def without_runtime(self, call: Callable[[], Any]) -> Any:
        """Run ``call`` with no runtime current (the test's runtime is left
        without shutting it down, and entered again after)."""
        RuntimeCore.__exit__(self.rt)
        try:
            try:
                kcont.current_runtime()
            except NoRuntimeError:
                pass
            else:
                pytest.skip("another runtime is current in this process")
            return call()
        finally:
            self.rt.__enter__()

    def works(self) -> None:
        """The runtime still works, and the case's objects still behave."""
        ran: list[int] = []
        for i, wq in enumerate((kcont.wq_softnet, kcont.wq_prilow, self.wq)):
            self.rt.continuation(wq, lambda a, k: ran.append(a), i).schedule()
        self.wait_for(lambda: len(ran) == 3)
        assert sorted(ran) == [0, 1, 2], "the runtime no longer runs new continuations"
        assert self.rt.stats()["totals"]["invoked"] >= 3
        assert not self.lock.owned() and not self.lock.locked()
        self.ran.clear()
        expected = set()
        for kc, name in ((self.kc, "kc"), (self.shared, "shared")):
            if not kc.destroyed and not kc.invoking and not kc.pending:
                kc.schedule()
                expected.add(name)
        self.wait_for(lambda: expected <= set(self.ran))
        assert expected <= set(self.ran), "a continuation of the case no longer runs"
        assert self.pending.destroyed or self.pending.pending
        assert self.invoking.destroyed or (self.invoking.invoking and self.invoking.queued)

    def close(self) -> None:
        self.blocker.release()
        if self.kind == "sim":
            self.rt.shutdown()
            self.other.shutdown()
        else:
            self.rt.shutdown(timeout=10)
            self.other.shutdown(timeout=10)
        RuntimeCore.__exit__(self.rt)


# -- the catalogue ---------------------------------------------------------------------


@dataclass(frozen=True)
class Returns:
    """The call must return this value (the C-style API's errno, a bool)."""

    value: Any


@dataclass(frozen=True)
class Value:
    """Not callable with arguments: a constant, checked by ``check``."""

    check: Callable[[Any], bool]


Expect = Any  # an exception type or tuple of them, Returns or Value


@dataclass(frozen=True)
class Case:
    label: str
    call: Callable[[Env], Any]
    expect: Expect
    bug: str | None = None  # xfail reason: see tests/test_regressions.py
    kinds: tuple[str, ...] = KINDS


CATALOGUE: dict[str, list[Case]] = {}


def add(name: str, label: str, call: Callable[[Env], Any], expect: Expect, **kw: Any) -> None:
    CATALOGUE.setdefault(name, []).append(Case(label, call, expect, **kw))


# Exceptions: each is what a bad call gets; a case shows one such call.
_ERRNO = {
    "BusyError": errno.EBUSY,
    "NoPerCPUQueueError": errno.ENOENT,
    "InvalidArgumentError": errno.EINVAL,
    "DestroyedError": errno.EINVAL,
    "WorkqueueReleasedError": errno.EINVAL,
}


def _is_kcont_error(cls: Any) -> bool:
    return issubclass(cls, kcont.KcontError) and cls.errno == _ERRNO.get(cls.__name__)


for _name in kcont.errors.__all__:
    add(
        _name,
        "is a KcontError with the errno the docs give",
        lambda e, n=_name: getattr(kcont, n),
        Value(_is_kcont_error),
    )
add("BusyError", "schedule while INVOKING", lambda e: e.invoking.schedule(), BusyError)
add("DestroyedError", "schedule a destroyed continuation", lambda e: e.destroyed.schedule(), DestroyedError)
add(
    "HaltTimeoutError",
    "halt(timeout) of a function that never returns",
    lambda e: _halt_stuck(e),
    Returns(True),
)
add("InvalidArgumentError", "negative ticks", lambda e: e.kc.schedule(-1), InvalidArgumentError)
add("KcontError", "every kcont error is one", lambda e: e.destroyed.schedule(), kcont.KcontError)
add("MutexError", "release a Mutex not held", lambda e: e.lock.release(), MutexError)
add(
    "NoPerCPUQueueError",
    "CPU given on a shared queue",
    lambda e: e.shared.schedule(0, e.rt.cpus[0]),
    NoPerCPUQueueError,
)
add(
    "NoRuntimeError",
    "a predefined queue with no runtime current",
    lambda e: e.without_runtime(lambda: Continuation(kcont.wq_softnet, _f)),
    NoRuntimeError,
)
add(
    "ShutdownError",
    "schedule on a shut-down runtime",
    lambda e: e.closed_runtime()[1].schedule(),
    ShutdownError,
)
add(
    "SimDeadlockError",
    "a wait that can never end on the simulator",
    lambda e: SimRuntime().run_until(lambda: False, max_ticks=3),
    SimDeadlockError,
)
add(
    "WorkqueueReleasedError",
    "a continuation on a freed queue",
    lambda e: Continuation(e.freed, _f),
    WorkqueueReleasedError,
)


def _halt_stuck(e: Env) -> bool:
    """On the threaded runtime: halt(timeout) raises HaltTimeoutError for a
    function that does not return; on the simulator nothing can be running
    while another caller halts, so it returns at once."""
    if e.kind == "sim":
        kc = e.rt.continuation(kcont.wq_softnet, _f)
        kc.schedule()
        return not kc.halt(timeout=0.01)  # stopped before it ran
    go = threading.Event()
    entered = threading.Event()
    kc = e.rt.continuation(kcont.wq_prilow, lambda a, k: (entered.set(), go.wait(10)))
    kc.schedule()
    assert entered.wait(10)
    try:
        kc.halt(timeout=0.05)
    except kcont.HaltTimeoutError:
        return True
    finally:
        go.set()
    return False


# Constants.
for _name in ("MAXPRI", "PRI_SOFT_MIN", *[n for n in kcont.__all__ if n.startswith("PRI_")]):
    add(
        _name,
        "an int priority in 0..MAXPRI",
        lambda e, n=_name: getattr(kcont, n),
        Value(lambda v: type(v) is int and 0 <= v <= kcont.MAXPRI),
    )
add(
    "MAXPRI", "acquire above MAXPRI", lambda e: e.rt.acquire_workqueue(kcont.MAXPRI + 1), InvalidArgumentError
)
add("PRI_LOW", "acquire below 0", lambda e: kcont.kcont_workqueue_acquire(-1), InvalidArgumentError)
add("WQ_PERCPU", "an int flag", lambda e: kcont.WQ_PERCPU, Value(lambda v: v == 1))
add(
    "WQ_PERCPU",
    "unknown flag",
    lambda e: kcont.kcont_workqueue_acquire(10, kcont.WQ_PERCPU << 1),
    InvalidArgumentError,
)
add("__version__", "a version string", lambda e: kcont.__version__, Value(lambda v: isinstance(v, str) and v))
add(
    "implementation",
    "which core runs",
    lambda e: kcont.implementation,
    Value(lambda v: v in ("compiled", "python")),
)
add(
    "capi",
    "the C-style layer, all of it re-exported",
    lambda e: capi,
    Value(lambda m: set(m.__all__) <= set(kcont.__all__)),
)

# Predefined queue handles.
for _name in (n for n in kcont.__all__ if n.startswith("wq_")):
    add(
        _name,
        "release a predefined queue: EINVAL",
        lambda e, n=_name: kcont.kcont_workqueue_release(getattr(kcont, n)),
        Returns(errno.EINVAL),
    )
    add(
        _name,
        "Pythonic release of its runtime queue",
        lambda e, n=_name: e.rt.predefined(n).release(),
        InvalidArgumentError,
    )
    add(
        _name,
        "a continuation with a non-callable function",
        lambda e, n=_name: Continuation(getattr(kcont, n), "not callable"),
        TypeError,
    )
add(
    "PredefinedQueue",
    "resolve() of something not a runtime",
    lambda e: kcont.wq_softnet.resolve("rt"),
    (TypeError, InvalidArgumentError),
)
add(
    "PredefinedQueue",
    "resolves per runtime",
    lambda e: kcont.wq_softnet.resolve(e.other) is e.other.predefined("wq_softnet"),
    Returns(True),
)

# CPUs.
add("CPU", "a CPU of another runtime", lambda e: e.kc.schedule(0, e.other.cpus[0]), InvalidArgumentError)
add("CPU", "not a CPU", lambda e: e.kc.schedule(0, 0), TypeError)
add(
    "CPU",
    "a hand-made CPU out of range",
    lambda e: e.kc.schedule(0, kcont.CPU(e.rt, 99)),
    (TypeError, InvalidArgumentError),
)
add("bind_cpu", "not a CPU", lambda e: kcont.bind_cpu("cpu0").__enter__(), TypeError)
add("bind_cpu", "None", lambda e: kcont.bind_cpu(None).__enter__(), TypeError)
add("curcpu", "no runtime current", lambda e: e.without_runtime(kcont.curcpu), NoRuntimeError)
add("curcpu", "on a bound CPU of another runtime", lambda e: _bound_curcpu(e), Returns(True))
add(
    "current_runtime",
    "no runtime current",
    lambda e: e.without_runtime(kcont.current_runtime),
    NoRuntimeError,
)


def _bound_curcpu(e: Env) -> bool:
    with kcont.bind_cpu(e.other.cpus[1]):
        return kcont.curcpu() is e.other.cpus[1]


# Continuation: constructor.
add("Continuation", "wq not a queue", lambda e: Continuation(5, _f), TypeError)
add("Continuation", "func not callable", lambda e: Continuation(kcont.wq_softnet, None), TypeError)
add(
    "Continuation",
    "lock a threading.Lock",
    lambda e: Continuation(kcont.wq_softnet, _f, lock=threading.Lock()),
    TypeError,
)
add("Continuation", "a freed queue", lambda e: Continuation(e.freed, _f), WorkqueueReleasedError)
add(
    "Continuation",
    "a shut-down runtime's queue",
    lambda e: Continuation(e.closed_runtime()[0].predefined("wq_softnet"), _f),
    ShutdownError,
)
# Continuation: schedule.
add("Continuation", "schedule(-1)", lambda e: e.kc.schedule(-1), InvalidArgumentError)
add("Continuation", "schedule(1.5)", lambda e: e.kc.schedule(1.5), TypeError)
add("Continuation", "schedule('1')", lambda e: e.kc.schedule("1"), TypeError)
add("Continuation", "schedule(True)", lambda e: e.kc.schedule(True), TypeError)
add("Continuation", "schedule(None)", lambda e: e.kc.schedule(None), TypeError)
add(
    "Continuation",
    "schedule on another runtime's CPU",
    lambda e: e.kc.schedule(1, e.other.cpus[1]),
    InvalidArgumentError,
)
add(
    "Continuation",
    "schedule with a CPU on a shared queue",
    lambda e: e.shared.schedule(1, e.rt.cpus[1]),
    NoPerCPUQueueError,
)
add("Continuation", "schedule while INVOKING", lambda e: e.invoking.schedule(5), BusyError)
add("Continuation", "schedule a destroyed one", lambda e: e.destroyed.schedule(), DestroyedError)
add("Continuation", "schedule(ack=str)", lambda e: e.kc.schedule(0, ack="no"), TypeError)
add(
    "Continuation",
    "schedule(ack=True) of a destroyed one",
    lambda e: e.destroyed.schedule(0, ack=True),
    DestroyedError,
)
add("Continuation", "flush(timeout=str)", lambda e: e.kc.flush(timeout="soon"), TypeError)
add("Continuation", "flush(timeout<0)", lambda e: e.kc.flush(timeout=-1), (InvalidArgumentError, ValueError))
add("Continuation", "flush a destroyed one", lambda e: e.destroyed.flush(), Returns(False))
add(
    "Continuation",
    "flush from inside another continuation on the simulator",
    lambda e: _flush_inside(e),
    Returns(True),
    kinds=("sim",),
)
add("Continuation", "running_here outside its function", lambda e: e.invoking.running_here, Returns(False))
# Continuation: stop, halt, destroy, ack.
add("Continuation", "stop a destroyed one", lambda e: e.destroyed.stop(), Returns(False))
add("Continuation", "ack a destroyed one", lambda e: e.destroyed.ack(), Returns(False))
add("Continuation", "halt a destroyed one", lambda e: e.destroyed.halt(), Returns(False))
add("Continuation", "halt(interlock=str)", lambda e: e.kc.halt(interlock="m"), TypeError)
add("Continuation", "halt(timeout=str)", lambda e: e.kc.halt(timeout="soon"), TypeError)
add("Continuation", "destroy twice", lambda e: e.destroyed.destroy(), DestroyedError)
add("Continuation", "destroy(timeout=str)", lambda e: e.kc.destroy(timeout="soon"), TypeError)
# Continuation: setters.
add("Continuation", "set_arg on a destroyed one", lambda e: e.destroyed.set_arg(1), DestroyedError)
add("Continuation", "arg = on a destroyed one", lambda e: setattr(e.destroyed, "arg", 1), DestroyedError)
add("Continuation", "set_arg without its lock", lambda e: e.locked.set_arg(1), MutexError)
add("Continuation", "set_func not callable", lambda e: e.kc.set_func(5, None), TypeError)
add("Continuation", "set_func while PENDING (no lock)", lambda e: e.pending.set_func(_f, None), BusyError)
add("Continuation", "set_func without its lock", lambda e: e.locked.set_func(_f, None), MutexError)
add("Continuation", "set_func on a destroyed one", lambda e: e.destroyed.set_func(_f, None), DestroyedError)
add("Continuation", "set_mutex(str)", lambda e: e.kc.set_mutex("lock"), TypeError)
add("Continuation", "set_mutex(lock) on a lock-less one", lambda e: e.kc.set_mutex(Mutex()), MutexError)
add("Continuation", "set_mutex without the current lock", lambda e: e.locked.set_mutex(Mutex()), MutexError)
add("Continuation", "set_mutex on a destroyed one", lambda e: e.destroyed.set_mutex(None), DestroyedError)

# Mutex.
add("Mutex", "release when not held", lambda e: Mutex().release(), MutexError)
add("Mutex", "release a continuation's lock held by its function", lambda e: _release_held(e), MutexError)
add("Mutex", "acquire twice (not recursive)", lambda e: _twice(), MutexError)
add("Mutex", "non-blocking with a timeout", lambda e: Mutex().acquire(False, 1), ValueError)
add("Mutex", "timeout not a number", lambda e: Mutex().acquire(timeout="soon"), TypeError)


def _twice() -> None:
    m = Mutex()
    with m:
        m.acquire()


def _release_held(e: Env) -> None:
    """The invoking continuation's lock is held by this thread (the env):
    from another thread, releasing it is refused."""
    errors: list[BaseException] = []

    def other() -> None:
        try:
            e.blocker.release()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert e.blocker.owned()
    raise errors[0]


# Workqueue.
add("Workqueue", "release a freed queue", lambda e: e.freed.release(), WorkqueueReleasedError)
add("Workqueue", "last release with continuations bound", lambda e: e.wq.release(), BusyError)
add(
    "Workqueue",
    "release a predefined queue",
    lambda e: e.rt.predefined("wq_prilow").release(),
    InvalidArgumentError,
)
add(
    "Workqueue",
    "constructed from something not a runtime",
    lambda e: kcont.Workqueue("rt", "q", 10, 0, predefined=False, order=0),
    (TypeError, InvalidArgumentError),
)

# RuntimeCore (both runtimes).
add("RuntimeCore", "ncpu a string", lambda e: RuntimeCore("2", 100), TypeError)
add("RuntimeCore", "workqueue(str)", lambda e: e.rt.workqueue("10"), TypeError)
add("RuntimeCore", "workqueue out of range", lambda e: e.rt.workqueue(kcont.MAXPRI + 1), InvalidArgumentError)
add(
    "RuntimeCore",
    "workqueue(percpu=str)",
    lambda e: e.rt.workqueue(10, percpu="yes"),
    TypeError,
)
add(
    "RuntimeCore",
    "acquire_workqueue unknown flag",
    lambda e: e.rt.acquire_workqueue(10, 4),
    InvalidArgumentError,
)
add("RuntimeCore", "acquire_workqueue flags=True", lambda e: e.rt.acquire_workqueue(10, True), TypeError)
add(
    "RuntimeCore",
    "acquire on a shut-down runtime",
    lambda e: e.closed_runtime()[0].acquire_workqueue(10),
    ShutdownError,
)
add("RuntimeCore", "predefined unknown name", lambda e: e.rt.predefined("wq_nope"), KeyError)
add(
    "RuntimeCore",
    "continuation on another runtime's queue",
    lambda e: e.rt.continuation(e.other_wq, _f),
    InvalidArgumentError,
)
add(
    "RuntimeCore",
    "continuation with a bad function",
    lambda e: e.rt.continuation(kcont.wq_softnet, 1),
    TypeError,
)

# Runtime (constructor cases are independent of the env's kind: run once).
_T = ("threaded",)
add("Runtime", "ncpu=0", lambda e: Runtime(ncpu=0), InvalidArgumentError, kinds=_T)
add("Runtime", "ncpu='2'", lambda e: Runtime(ncpu="2"), TypeError, kinds=_T)
add("Runtime", "ncpu=True", lambda e: Runtime(ncpu=True), TypeError, kinds=_T)
add("Runtime", "hz=0", lambda e: Runtime(ncpu=1, hz=0), InvalidArgumentError, kinds=_T)
add("Runtime", "hz=1.5", lambda e: Runtime(ncpu=1, hz=1.5), TypeError, kinds=_T)
add(
    "Runtime",
    "max_thread_workers=0",
    lambda e: Runtime(ncpu=1, max_thread_workers=0),
    InvalidArgumentError,
    kinds=_T,
)
add("Runtime", "pin of the wrong length", lambda e: Runtime(ncpu=2, pin=[0]), InvalidArgumentError, kinds=_T)
add("Runtime", "pin=['0']", lambda e: _runtime_or_shutdown(pin=["0"]), TypeError, kinds=_T)
add(
    "Runtime",
    "stall_threshold=-1",
    lambda e: _runtime_or_shutdown(stall_threshold=-1.0),
    InvalidArgumentError,
    kinds=_T,
)
add(
    "Runtime",
    "stall_threshold='x'",
    lambda e: Runtime(ncpu=1, stall_threshold="x"),
    (TypeError, ValueError),
    kinds=_T,
)
add("Runtime", "wait_idle(timeout=str)", lambda e: e.rt.wait_idle("soon"), TypeError, kinds=_T)
add("Runtime", "wait_ticks(str)", lambda e: e.rt.wait_ticks("1"), TypeError, kinds=_T)
add(
    "Runtime",
    "shutdown(timeout=str)",
    lambda e: _shutdown_bad_timeout(e),
    TypeError,
    kinds=_T,
)


def _runtime_or_shutdown(**kwargs: Any) -> None:
    rt = Runtime(ncpu=1, **kwargs)
    rt.shutdown(timeout=2)


def _shutdown_bad_timeout(e: Env) -> None:
    rt = Runtime(ncpu=1)
    try:
        rt.shutdown(timeout="soon")
    finally:
        closed = rt.closed
        rt.shutdown(timeout=5)
    assert not closed


# SimRuntime.
_S = ("sim",)
add("SimRuntime", "ncpu=0", lambda e: SimRuntime(ncpu=0), InvalidArgumentError, kinds=_S)
add("SimRuntime", "hz='100'", lambda e: SimRuntime(hz="100"), TypeError, kinds=_S)
add(
    "SimRuntime",
    "step on another runtime's CPU",
    lambda e: e.rt.step(e.other.cpus[0]),
    (TypeError, InvalidArgumentError),
    kinds=_S,
)
add("SimRuntime", "step(str)", lambda e: e.rt.step("cpu0"), TypeError, kinds=_S)
add("SimRuntime", "advance(-1)", lambda e: e.rt.advance(-1), ValueError, kinds=_S)
add("SimRuntime", "advance('1')", lambda e: e.rt.advance("1"), (TypeError, ValueError), kinds=_S)
add(
    "SimRuntime",
    "advance(True)",
    lambda e: e.rt.advance(True),
    (TypeError, ValueError),
    kinds=_S,
)
add("SimRuntime", "run_until(not callable)", lambda e: e.rt.run_until("done"), TypeError, kinds=_S)
add(
    "SimRuntime",
    "run_until_idle(str)",
    lambda e: e.rt.run_until_idle("many"),
    (TypeError, ValueError),
    kinds=_S,
)
add("SimRuntime", "step from inside a continuation", lambda e: _step_inside(e), Returns(True), kinds=_S)
add("SimRuntime", "run_until_tick(past)", lambda e: e.rt.run_until_tick(-1), InvalidArgumentError, kinds=_S)
add("SimRuntime", "run_until_tick(str)", lambda e: e.rt.run_until_tick("9"), TypeError, kinds=_S)
add("SimRuntime", "autojump=1", lambda e: SimRuntime(autojump=1), TypeError, kinds=_S)

# Periodic timers.
add("Periodic", "period=0", lambda e: kcont.Periodic(kcont.wq_softclock, _f, None, 0), InvalidArgumentError)
add("Periodic", "period='5'", lambda e: kcont.Periodic(kcont.wq_softclock, _f, None, "5"), TypeError)
add(
    "Periodic",
    "unknown missed-tick policy",
    lambda e: kcont.Periodic(kcont.wq_softclock, _f, None, 5, missed="later"),
    InvalidArgumentError,
)
add(
    "Periodic",
    "a destroyed continuation's queue",
    lambda e: kcont.Periodic(e.freed, _f, None, 5),
    WorkqueueReleasedError,
)
add(
    "Periodic",
    "cpu of another runtime",
    lambda e: kcont.Periodic(e.other_wq, _f, None, 5, cpu=e.rt.cpus[0]),
    InvalidArgumentError,
)
add("PeriodicRun", "missing fields", lambda e: kcont.PeriodicRun(), TypeError)


def _flush_inside(e: Env) -> bool:
    """flush() of another continuation from inside a function cannot wait on
    the simulator: SimDeadlockError, a clear error, and nothing breaks."""
    seen: list[BaseException] = []
    target = e.rt.continuation(kcont.wq_prilow, _f)

    def inside(arg: Any, kc: Any) -> None:
        target.schedule()
        try:
            target.flush()
        except SimDeadlockError as exc:
            seen.append(exc)

    e.rt.continuation(kcont.wq_softnet, inside).schedule()
    e.rt.run_until_idle()
    return len(seen) == 1 and not target.queued


def _step_inside(e: Env) -> bool:
    seen: list[BaseException] = []

    def inside(arg: Any, kc: Any) -> None:
        try:
            e.rt.step()
        except SimDeadlockError as exc:
            seen.append(exc)

    e.rt.continuation(kcont.wq_softnet, inside).schedule()
    e.rt.run_until_idle()
    return len(seen) == 1


# Records.
add("ShutdownAccount", "missing fields", lambda e: kcont.ShutdownAccount(), TypeError)
add(
    "ShutdownAccount",
    "frozen",
    lambda e: setattr(kcont.ShutdownAccount(0, 0, 0, 0, 0), "ran", 1),
    dataclasses.FrozenInstanceError,
)
add("TraceEvent", "missing fields", lambda e: kcont.TraceEvent(), TypeError)

# Types of stats() (TypedDicts: plain dicts at run time) and the instrument base.
for _name in ("CounterStats", "QueueStats", "RuntimeStats", "ThreadedRuntimeStats", "WorkerStats"):
    add(_name, "not a mapping", lambda e, n=_name: getattr(kcont, n)(1), TypeError)
    add(_name, "a shape of stats()", lambda e, n=_name: getattr(kcont, n)(cpu=0), Returns({"cpu": 0}))
add("Instrument", "arguments", lambda e: kcont.Instrument(1), TypeError)

# Instruments, slow threshold, trace export and submit (both runtimes).
add("RuntimeCore", "add_instrument without methods", lambda e: e.rt.add_instrument(object()), TypeError)
add(
    "RuntimeCore",
    "add_instrument of an Instrument overriding nothing",
    lambda e: e.rt.add_instrument(kcont.Instrument()),
    TypeError,
)
add("RuntimeCore", "remove_instrument never added", lambda e: e.rt.remove_instrument(object()), KeyError)
add("RuntimeCore", "slow_threshold=-1", lambda e: setattr(e.rt, "slow_threshold", -1), InvalidArgumentError)
add("RuntimeCore", "slow_threshold='x'", lambda e: setattr(e.rt, "slow_threshold", "x"), TypeError)
add(
    "RuntimeCore",
    "export_trace without trace=True",
    lambda e: e.rt.export_trace("/nonexistent/trace.json"),
    InvalidArgumentError,
)
add("RuntimeCore", "submit(not callable)", lambda e: e.rt.submit(1), TypeError)
add(
    "RuntimeCore",
    "submit on another runtime's queue",
    lambda e: e.rt.submit(_f, wq=e.other_wq),
    InvalidArgumentError,
)
add("RuntimeCore", "submit on a shut-down runtime", lambda e: e.closed_runtime()[0].submit(_f), ShutdownError)
add("Runtime", "trace='yes'", lambda e: Runtime(ncpu=1, trace="yes"), TypeError, kinds=_T)
add(
    "Runtime",
    "slow_threshold=0",
    lambda e: _runtime_or_shutdown(slow_threshold=0),
    InvalidArgumentError,
    kinds=_T,
)

# The C-style API: every function refuses a non-continuation, then its own cases.
for _name in capi.__all__:
    if _name.startswith("kcont_") and _name not in {
        "kcont_create",
        "kcont_workqueue_acquire",
        "kcont_workqueue_release",
    }:
        _nargs = {"kcont_schedule": 3, "kcont_setfunc": 3, "kcont_setarg": 2, "kcont_setmutex": 2}.get(
            _name, 1
        )
        add(
            _name,
            "not a continuation",
            lambda e, n=_name, k=_nargs: getattr(kcont, n)(
                "kc", *([None, 0, None][: k - 1] if n == "kcont_schedule" else [None] * (k - 1))
            ),
            TypeError,
        )
add("kcont_create", "wq not a queue", lambda e: kcont.kcont_create("wq", None, _f, None), TypeError)
add(
    "kcont_create",
    "lock not a Mutex",
    lambda e: kcont.kcont_create(kcont.wq_softnet, threading.Lock(), _f, None),
    TypeError,
)
add(
    "kcont_create",
    "func not callable",
    lambda e: kcont.kcont_create(kcont.wq_softnet, None, 1, None),
    TypeError,
)
add(
    "kcont_create",
    "flags != 0",
    lambda e: kcont.kcont_create(kcont.wq_softnet, None, _f, None, 1),
    InvalidArgumentError,
)
add(
    "kcont_create",
    "flags=True",
    lambda e: kcont.kcont_create(kcont.wq_softnet, None, _f, None, True),
    TypeError,
)
add(
    "kcont_create",
    "a freed queue",
    lambda e: kcont.kcont_create(e.freed, None, _f, None),
    WorkqueueReleasedError,
)
add("kcont_schedule", "negative ticks", lambda e: kcont.kcont_schedule(e.kc, None, -1), Returns(errno.EINVAL))
add("kcont_schedule", "ticks a string", lambda e: kcont.kcont_schedule(e.kc, None, "1"), TypeError)
add(
    "kcont_schedule",
    "another runtime's CPU",
    lambda e: kcont.kcont_schedule(e.kc, e.other.cpus[0], 0),
    Returns(errno.EINVAL),
)
add(
    "kcont_schedule",
    "CPU on a shared queue",
    lambda e: kcont.kcont_schedule(e.shared, e.rt.cpus[0], 0),
    Returns(errno.ENOENT),
)
add("kcont_schedule", "INVOKING", lambda e: kcont.kcont_schedule(e.invoking, None, 0), Returns(errno.EBUSY))
add(
    "kcont_schedule", "destroyed", lambda e: kcont.kcont_schedule(e.destroyed, None, 0), Returns(errno.EINVAL)
)
add(
    "kcont_schedule",
    "shut-down runtime",
    lambda e: kcont.kcont_schedule(e.closed_runtime()[1], None, 0),
    ShutdownError,
)
add("kcont_destroy", "destroyed", lambda e: kcont.kcont_destroy(e.destroyed), DestroyedError)
add("kcont_setarg", "destroyed", lambda e: kcont.kcont_setarg(e.destroyed, 1), Returns(errno.EINVAL))
add("kcont_setarg", "lock not held", lambda e: kcont.kcont_setarg(e.locked, 1), MutexError)
add("kcont_setfunc", "destroyed", lambda e: kcont.kcont_setfunc(e.destroyed, _f, 1), Returns(errno.EINVAL))
add(
    "kcont_setfunc",
    "PENDING without a lock",
    lambda e: kcont.kcont_setfunc(e.pending, _f, 1),
    Returns(errno.EBUSY),
)
add("kcont_setfunc", "func not callable", lambda e: kcont.kcont_setfunc(e.kc, 1, 1), TypeError)
add("kcont_setmutex", "lock not a Mutex", lambda e: kcont.kcont_setmutex(e.locked, "m"), TypeError)
add("kcont_setmutex", "a lock for a lock-less one", lambda e: kcont.kcont_setmutex(e.kc, Mutex()), MutexError)
add("kcont_setmutex", "destroyed", lambda e: kcont.kcont_setmutex(e.destroyed, None), DestroyedError)
add("kcont_getmutex", "of a destroyed one", lambda e: kcont.kcont_getmutex(e.destroyed), Returns(None))
add("kcont_stop", "destroyed", lambda e: kcont.kcont_stop(e.destroyed), Returns(False))
add("kcont_halt", "interlock not a Mutex", lambda e: kcont.kcont_halt(e.kc, "m"), TypeError)
add("kcont_halt", "destroyed", lambda e: kcont.kcont_halt(e.destroyed), Returns(False))
for _name in ("kcont_pending", "kcont_expired", "kcont_active", "kcont_invoking", "kcont_ack"):
    add(_name, "destroyed", lambda e, n=_name: getattr(kcont, n)(e.destroyed), Returns(False))
add("kcont_workqueue_acquire", "priority a string", lambda e: kcont.kcont_workqueue_acquire("10"), TypeError)
add(
    "kcont_workqueue_acquire",
    "priority out of range",
    lambda e: kcont.kcont_workqueue_acquire(1000),
    InvalidArgumentError,
)
add("kcont_workqueue_acquire", "flags=True", lambda e: kcont.kcont_workqueue_acquire(10, True), TypeError)
add(
    "kcont_workqueue_acquire",
    "unknown flags",
    lambda e: kcont.kcont_workqueue_acquire(10, 0x10),
    InvalidArgumentError,
)
add(
    "kcont_workqueue_acquire",
    "no runtime current",
    lambda e: e.without_runtime(lambda: kcont.kcont_workqueue_acquire(10)),
    NoRuntimeError,
)
add("kcont_workqueue_release", "not a queue", lambda e: kcont.kcont_workqueue_release("wq"), TypeError)
add(
    "kcont_workqueue_release",
    "freed",
    lambda e: kcont.kcont_workqueue_release(e.freed),
    Returns(errno.EINVAL),
)
add(
    "kcont_workqueue_release",
    "bound, last",
    lambda e: kcont.kcont_workqueue_release(e.wq),
    Returns(errno.EBUSY),
)
add(
    "kcont_workqueue_release",
    "predefined",
    lambda e: kcont.kcont_workqueue_release(kcont.wq_prilow),
    Returns(errno.EINVAL),
)


# -- functions kcont would call without running them --------------------------------------
# A coroutine, async generator or generator function returns an object and runs
# none of its body when called: refused where a function is given, with a
# TypeError that says why.


async def _coroutine_func(arg: Any, kc: Any) -> None:
    pass


async def _async_generator_func(arg: Any, kc: Any) -> Any:
    yield arg


def _generator_func(arg: Any, kc: Any) -> Any:
    yield arg


class _AsyncCallable:
    async def __call__(self, arg: Any, kc: Any) -> None:
        pass


class _AsyncMethods:
    async def handler(self, arg: Any, kc: Any) -> None:
        pass


# label -> (func, the kind the message names)
NOT_RUN_BY_A_CALL: dict[str, tuple[Any, str]] = {
    "coroutine function": (_coroutine_func, "a coroutine function"),
    "async generator function": (_async_generator_func, "an async generator function"),
    "generator function": (_generator_func, "a generator function"),
    "partial of a coroutine function": (functools.partial(_coroutine_func, 1), "a coroutine function"),
    "bound async method": (_AsyncMethods().handler, "a coroutine function"),
    "object with an async __call__": (_AsyncCallable(), "a coroutine function"),
    "partial of an object with an async __call__": (
        functools.partial(_AsyncCallable()),
        "a coroutine function",
    ),
}

for _label, (_func, _kind) in NOT_RUN_BY_A_CALL.items():
    add("Continuation", f"func a {_label}", lambda e, f=_func: Continuation(kcont.wq_softnet, f), TypeError)
    add("Continuation", f"set_func to a {_label}", lambda e, f=_func: e.kc.set_func(f, None), TypeError)
    add(
        "kcont_create",
        f"func a {_label}",
        lambda e, f=_func: kcont.kcont_create(kcont.wq_prilow, None, f, 1),
        TypeError,
    )
    add("kcont_setfunc", f"func a {_label}", lambda e, f=_func: kcont.kcont_setfunc(e.kc, f, None), TypeError)
    add("check_func", f"a {_label}", lambda e, f=_func: kcont.check_func(f), TypeError)
add("check_func", "not callable", lambda e: kcont.check_func(3), TypeError)
add("check_func", "a plain function", lambda e: kcont.check_func(_f), Returns(None))


@pytest.mark.parametrize("label", sorted(NOT_RUN_BY_A_CALL))
def test_a_function_that_a_call_would_not_run_is_refused_with_the_reason(rt: SimRuntime, label: str) -> None:
    """The message names the kind of function and what to do, and a refused
    set_func leaves the continuation's function as it was."""
    func, kind = NOT_RUN_BY_A_CALL[label]
    with pytest.raises(TypeError, match=f"func is {kind}: kcont calls func\\(arg, kc\\) and never awaits"):
        Continuation(kcont.wq_softnet, func)
    ran: list[int] = []
    kc = Continuation(kcont.wq_softnet, lambda arg, kc: ran.append(arg), 1)
    with pytest.raises(TypeError, match="never awaits or iterates"):
        kc.set_func(func, 2)
    kc.schedule()
    rt.run_until_idle()
    assert ran == [1]


def test_a_plain_callable_is_still_accepted(rt: SimRuntime) -> None:
    """Builtins, partials of plain functions, callable objects, classes and
    bound methods with a plain body are accepted."""

    class Callable_:
        def __call__(self, arg: Any, kc: Any) -> None:
            ran.append(arg)

    ran: list[Any] = []
    for func in (print, functools.partial(_f), Callable_(), dict, Callable_().__call__):
        Continuation(kcont.wq_softnet, func)
    kc = Continuation(kcont.wq_softnet, Callable_(), "x")
    kc.schedule()
    rt.run_until_idle()
    assert ran == ["x"]


@pytest.mark.parametrize(
    "label", ["coroutine function", "generator function", "object with an async __call__"]
)
def test_compat_layers_refuse_a_function_that_a_call_would_not_run(rt: SimRuntime, label: str) -> None:
    """callout_setfunc, callout_reset, softint_establish and workqueue_create
    refuse it too (their functions are called through a kcont trampoline, so
    the continuation itself never sees them)."""
    from kcont.compat import callout, softint, workqueue

    func = NOT_RUN_BY_A_CALL[label][0]
    c = callout.callout_init(0)
    with pytest.raises(TypeError, match=r"kcont calls func\(arg\) and never awaits"):
        callout.callout_setfunc(c, func, None)
    with pytest.raises(TypeError, match=r"kcont calls func\(arg\) and never awaits"):
        callout.callout_reset(c, 5, func, None)
    assert not callout.callout_pending(c)
    with pytest.raises(TypeError, match=r"kcont calls func\(arg\) and never awaits"):
        softint.softint_establish(softint.SOFTINT_NET, func, None)
    with pytest.raises(TypeError, match=r"kcont calls func\(wk, arg\) and never awaits"):
        workqueue.workqueue_create("w", func, None, kcont.PRI_LOW, 0, 0)
    callout.callout_destroy(c)


# -- the tests ---------------------------------------------------------------------------------


def test_every_public_name_has_an_entry() -> None:
    public = set(kcont.__all__) | set(capi.__all__)
    missing = sorted(public - set(CATALOGUE))
    assert not missing, f"public names without a bad-input catalogue entry: {missing}"
    stale = sorted(set(CATALOGUE) - public)
    assert not stale, f"catalogue entries for names that are not public: {stale}"
    # Every callable public name gets at least one call that must fail or answer.
    for name in public:
        obj = getattr(kcont, name, None) or getattr(capi, name)
        if callable(obj) and not (isinstance(obj, type) and issubclass(obj, BaseException)):
            assert any(not isinstance(c.expect, Value) for c in CATALOGUE[name]), name


def _params() -> Iterator[Any]:
    for name in sorted(CATALOGUE):
        for case in CATALOGUE[name]:
            for kind in case.kinds:
                marks = [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
                yield pytest.param(kind, name, case, id=f"{kind}-{name}-{case.label}", marks=marks)


@pytest.fixture
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    e = Env(request.param)
    try:
        yield e
    finally:
        e.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("env", "name", "case"), list(_params()), indirect=["env"])
def test_bad_input(env: Env, name: str, case: Case) -> None:
    expect = case.expect
    if isinstance(expect, Value):
        assert expect.check(case.call(env)), f"{name}: unexpected value"
    elif isinstance(expect, Returns):
        assert case.call(env) == expect.value
    else:
        with pytest.raises(expect) as info:
            case.call(env)
        assert str(info.value) or isinstance(info.value, KeyError), "an error without a message"
    env.works()

"""Fault injection: exceptions at every point of a continuation's life, a
function that never returns, shutdown from inside a continuation, a mutex
released by the wrong thread, a runtime left without shutdown.

Every test is bounded: blocked functions wait on events with a timeout, and
every wait of the test itself has one.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import kcont
from kcont import Continuation, HaltTimeoutError, Mutex, MutexError, Runtime, ShutdownError, SimRuntime

SRC = Path(__file__).resolve().parents[1] / "src"
BLOCK_LIMIT = 20.0  # no test function blocks longer than this, whatever happens


class Env:
    """A runtime of either kind that records what its exception handler sees."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.rt: Any = SimRuntime(ncpu=2, hz=100) if kind == "sim" else Runtime(ncpu=2, hz=100)
        self.seen: list[BaseException] = []
        self.rt.exception_handler = lambda kc, exc: self.seen.append(exc)

    def settle(self, ticks: int = 0) -> None:
        if self.kind == "sim":
            self.rt.advance(ticks) if ticks else self.rt.run_until_idle()
        else:
            if ticks:
                self.rt.wait_ticks(ticks, timeout=10)
            self.rt.wait_idle(timeout=10)

    def wait_seen(self, n: int, timeout: float = 10) -> None:
        """The handler runs after the invocation is accounted for, so on the
        threaded runtime wait_idle() may return just before it: poll."""
        deadline = time.monotonic() + timeout
        while len(self.seen) < n and time.monotonic() < deadline:
            time.sleep(0.005)

    def works(self) -> None:
        """A fresh continuation on each band still runs."""
        ran: list[str] = []
        for wq in (kcont.wq_softnet, kcont.wq_prilow):
            self.rt.continuation(wq, lambda a, kc: ran.append(a), wq.name).schedule()
        self.settle()
        assert sorted(ran) == ["wq_prilow", "wq_softnet"]


@pytest.fixture(params=["sim", "threaded"])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    e = Env(request.param)
    with e.rt:
        yield e
    if request.param == "sim":
        e.rt.shutdown()


class Fault(Exception):
    pass


# -- exceptions at every point -------------------------------------------------------


def _raise_at_start(env: Env, lock: Mutex) -> Callable[[Any, Continuation[Any]], None]:
    def f(arg: Any, kc: Continuation[Any]) -> None:
        raise Fault("start")

    return f


def _raise_after_rearm(env: Env, lock: Mutex) -> Callable[[Any, Continuation[Any]], None]:
    def f(arg: list[int], kc: Continuation[Any]) -> None:
        arg.append(1)
        if len(arg) == 1:
            kc.ack()
            kc.schedule(0)  # the re-arm stands: the next invocation runs
        raise Fault("after re-arm")

    return f


def _raise_after_handover(env: Env, lock: Mutex) -> Callable[[Any, Continuation[Any]], None]:
    new = Mutex("new")

    def f(arg: list[int], kc: Continuation[Any]) -> None:
        arg.append(1)
        assert new.acquire(timeout=5)
        kc.set_mutex(new)
        lock.release()  # the old lock: the function's duty after a hand-over
        raise Fault("after hand-over")

    return f


def _raise_holding_another_lock(env: Env, lock: Mutex) -> Callable[[Any, Continuation[Any]], None]:
    other = Mutex("other")

    def f(arg: list[Any], kc: Continuation[Any]) -> None:
        arg.append(other)
        with other:
            raise Fault("holding another lock")

    return f


def _raise_in_timer(env: Env, lock: Mutex) -> Callable[[Any, Continuation[Any]], None]:
    def f(arg: Any, kc: Continuation[Any]) -> None:
        raise Fault("timer")

    return f


def _release_own_lock(env: Env, lock: Mutex) -> Callable[[Any, Continuation[Any]], None]:
    def f(arg: Any, kc: Continuation[Any]) -> None:
        lock.release()  # wrong: the dispatcher releases it after the function

    return f


POINTS = {
    "start": (_raise_at_start, 0, 1),  # (factory, nticks, invocations expected)
    "after re-arm": (_raise_after_rearm, 0, 2),
    "after set_mutex hand-over": (_raise_after_handover, 0, 1),
    "holding another lock": (_raise_holding_another_lock, 0, 1),
    "timer expiry": (_raise_in_timer, 2, 1),
    "function releases its own lock": (_release_own_lock, 0, 1),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("point", list(POINTS))
@pytest.mark.parametrize("queue", ["wq_softnet", "wq_prilow"])
def test_an_exception_anywhere_is_counted_once_and_leaves_everything_usable(
    env: Env, point: str, queue: str
) -> None:
    factory, nticks, runs = POINTS[point]
    lock = Mutex("kc lock")
    arg: list[Any] = []
    kc = env.rt.continuation(getattr(kcont, queue), factory(env, lock), arg, lock=lock)
    bystander: list[int] = []
    other = env.rt.continuation(getattr(kcont, queue), lambda a, k: bystander.append(1))
    kc.schedule(nticks)
    other.schedule(nticks)
    env.settle(nticks + 1)
    env.wait_seen(runs)
    assert len(env.seen) == runs, env.seen
    if point == "function releases its own lock":
        assert isinstance(env.seen[0], MutexError)  # the dispatcher's release, reported
    else:
        assert all(isinstance(e, Fault) for e in env.seen)
    stats = env.rt.stats()
    assert stats["queues"][queue]["exceptions"] == runs
    assert stats["queues"][queue]["invoked"] == runs + 1
    assert bystander == [1]
    # Nothing is left held, and the continuation is schedulable again.
    assert not lock.locked()
    assert all(not m.locked() for m in arg if isinstance(m, Mutex))
    if kc.mutex is not None:
        assert not kc.mutex.locked()
    assert not kc.invoking and not kc.running and not kc.queued
    before = len(env.seen)
    kc.set_func(lambda a, k: bystander.append(2), None) if kc.mutex is None else None
    if kc.mutex is not None:
        with kc.mutex:
            kc.set_func(lambda a, k: bystander.append(2), None)
    kc.schedule()
    env.settle()
    env.wait_seen(before + 1, timeout=0.05)  # none expected: give a wrong one a chance to show
    assert bystander[-1] == 2 and len(env.seen) == before
    env.works()


@pytest.mark.timeout(60)
def test_an_exception_handler_that_raises_is_logged_and_ignored(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    def handler(kc: Any, exc: BaseException) -> None:
        raise RuntimeError("the handler fails too")

    env.rt.exception_handler = handler
    for wq in (kcont.wq_softnet, kcont.wq_prilow):
        env.rt.continuation(wq, lambda a, k: 1 / 0).schedule()
    with caplog.at_level(logging.ERROR, logger="kcont"):
        env.settle()
        # The handler runs after the invocation is accounted for: wait_idle()
        # may return just before it.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if sum("exception handler" in r.getMessage() for r in caplog.records) >= 2:
                break
            time.sleep(0.01)
    assert sum("exception handler" in r.getMessage() for r in caplog.records) == 2
    assert env.rt.stats()["totals"]["exceptions"] == 2
    env.rt.exception_handler = lambda kc, exc: env.seen.append(exc)
    env.works()


@pytest.mark.timeout(60)
def test_a_base_exception_never_kills_a_worker() -> None:
    """SystemExit or KeyboardInterrupt raised by a function is reported like
    any exception on the threaded runtime: the worker survives."""
    with Runtime(ncpu=1, hz=100) as rt:
        seen: list[BaseException] = []
        rt.exception_handler = lambda kc, exc: seen.append(exc)
        workers = {t.name for t in threading.enumerate() if t.name.startswith(f"kcont/{rt.name}/")}
        for exc in (SystemExit(3), KeyboardInterrupt()):
            for wq in (kcont.wq_softnet, kcont.wq_prilow):

                def boom(e: BaseException, kc: Any) -> None:
                    raise e

                rt.continuation(wq, boom, exc).schedule()
        rt.wait_idle(timeout=10)
        assert [type(e) for e in seen].count(SystemExit) == 2
        assert [type(e) for e in seen].count(KeyboardInterrupt) == 2
        assert workers <= {t.name for t in threading.enumerate()}
        ran: list[int] = []
        rt.continuation(kcont.wq_softnet, lambda a, k: ran.append(1)).schedule()
        rt.continuation(kcont.wq_prilow, lambda a, k: ran.append(1)).schedule()
        rt.wait_idle(timeout=10)
        assert ran == [1, 1]
    assert rt.shutdown().failed == 4


def test_the_simulator_reraises_a_base_exception_after_counting_it() -> None:
    rt = SimRuntime()
    with rt:
        kc = rt.continuation(kcont.wq_softnet, lambda a, k: (_ for _ in ()).throw(KeyboardInterrupt()))
        kc.schedule()
        with pytest.raises(KeyboardInterrupt):
            rt.run_until_idle()
        assert rt.stats()["totals"]["exceptions"] == 1
        assert not kc.invoking and not kc.running
        assert rt.shutdown().failed == 1


# -- a function that never returns ----------------------------------------------------


@pytest.fixture
def stuck() -> Iterator[tuple[Runtime, Continuation[Any], threading.Event, threading.Event]]:
    """A threaded runtime whose continuation blocks until released (at most
    BLOCK_LIMIT seconds, so that nothing hangs if the test fails)."""
    rt = Runtime(ncpu=2, hz=100)
    entered = threading.Event()
    release = threading.Event()

    def never_returns(arg: Any, kc: Continuation[Any]) -> None:
        entered.set()
        release.wait(BLOCK_LIMIT)

    kc = rt.continuation(kcont.wq_prilow, never_returns)
    kc.schedule()
    assert entered.wait(10)
    try:
        yield rt, kc, entered, release
    finally:
        release.set()
        rt.shutdown(timeout=10)


@pytest.mark.timeout(60)
def test_halt_with_a_timeout_reports_a_function_that_does_not_return(stuck: Any) -> None:
    _, kc, _, release = stuck
    started = time.monotonic()
    with pytest.raises(HaltTimeoutError):
        kc.halt(timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 5
    assert kc.running  # stopped, not interrupted
    interlock = Mutex("interlock")
    interlock.acquire()
    with pytest.raises(HaltTimeoutError):
        kc.halt(interlock=interlock, timeout=0.1)
    assert interlock.owned()  # taken again before raising
    interlock.release()
    release.set()
    # The first halt stopped it (a HaltTimeoutError itself says "too late"), so
    # EXPIRED is clear: a later halt reports nothing left to prevent.
    assert kc.halt(timeout=10) is False
    assert not kc.running


@pytest.mark.timeout(60)
def test_destroy_with_a_timeout_reports_it_and_finishes_when_the_function_returns(stuck: Any) -> None:
    rt, kc, _, release = stuck
    wq = kc.wq
    bound = wq.bound
    with pytest.raises(HaltTimeoutError):
        kc.destroy(timeout=0.2)
    assert kc.destroyed
    with pytest.raises(kcont.DestroyedError):
        kc.schedule()
    assert wq.bound == bound  # still bound while its function runs
    release.set()
    rt.wait_idle(timeout=10)
    assert wq.bound == bound - 1
    assert "DETACHED" in kc.flags


@pytest.mark.timeout(60)
def test_shutdown_with_a_timeout_reports_the_function_unfinished(stuck: Any) -> None:
    rt, kc, _, _ = stuck
    queued: list[int] = []
    rt.continuation(kcont.wq_prilow, lambda a, k: queued.append(1), lock=None).schedule(cpu=kc.cpu)
    rt.continuation(kcont.wq_prilow, lambda a, k: queued.append(2)).schedule(500)
    started = time.monotonic()
    account = rt.shutdown(timeout=0.5)
    assert time.monotonic() - started < 8
    assert account.unfinished == 1
    assert account.pending == 1
    assert account.ran + account.cancelled >= 1
    with pytest.raises(ShutdownError):
        kc.ack()
        kc.schedule()


# -- shutdown from inside ---------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cancel", [False, True])
def test_shutdown_called_from_inside_a_continuation_returns_at_once(cancel: bool) -> None:
    rt = Runtime(ncpu=2, hz=100)
    accounts: list[Any] = []
    refused: list[BaseException] = []
    ran: list[int] = []
    go = threading.Event()

    def closer(arg: Any, kc: Continuation[Any]) -> None:
        go.wait(10)
        accounts.append(rt.shutdown(cancel=cancel))
        try:
            kc.ack()
            kc.schedule()
        except ShutdownError as exc:
            refused.append(exc)

    closer_kc = rt.continuation(kcont.wq_prilow, closer)
    closer_kc.schedule(cpu=rt.cpus[0])
    # Work queued behind the closer on the same CPU, and a pending timer.
    for i in range(5):
        rt.continuation(kcont.wq_prilow, lambda a, k: ran.append(a), i).schedule(cpu=rt.cpus[0])
    rt.continuation(kcont.wq_softnet, lambda a, k: ran.append(99)).schedule(1000)
    go.set()
    deadline = time.monotonic() + 10
    while not accounts and time.monotonic() < deadline:
        time.sleep(0.01)
    assert accounts, "shutdown() from inside did not return"
    assert refused and isinstance(refused[0], ShutdownError)
    final = rt.shutdown(timeout=10)
    assert final.pending == 1  # the timer never fired
    assert 99 not in ran
    if cancel:
        assert final.cancelled + len(ran) == 5
    else:
        assert sorted(ran) == [0, 1, 2, 3, 4]
    assert final.ran == 1 + len(ran)
    assert not [t for t in threading.enumerate() if t.name.startswith(f"kcont/{rt.name}/")]


def test_shutdown_from_inside_the_simulator_returns_and_a_later_one_finishes() -> None:
    """As on the threaded runtime: from inside a continuation, shutdown closes
    the runtime and returns the account of that moment; the later shutdown
    from outside runs what was committed and returns the final account."""
    rt = SimRuntime()
    inside: list[Any] = []
    with rt:
        ran: list[int] = []
        rt.continuation(kcont.wq_softnet, _noop).schedule(50)

        def closer(arg: Any, kc: Continuation[Any]) -> None:
            inside.append(rt.shutdown())
            with pytest.raises(ShutdownError):
                kc.schedule(0, ack=True)

        rt.continuation(kcont.wq_softnet, closer).schedule()
        rt.continuation(kcont.wq_prilow, lambda a, k: ran.append(1)).schedule()
        rt.step(rt.cpus[0])  # the closer first: wq_softnet outranks wq_prilow
        assert len(inside) == 1 and inside[0].pending == 1
        with pytest.raises(ShutdownError):
            rt.continuation(kcont.wq_softnet, _noop)
        account = rt.shutdown()
        assert ran == [1]
        assert account.ran == 2 and account.pending == 1 and account.failed == 0


def _noop(arg: Any, kc: Any) -> None:
    pass


# -- a mutex released by the wrong thread ----------------------------------------------


@pytest.mark.timeout(60)
def test_a_mutex_released_by_another_thread_is_refused_at_the_call() -> None:
    lock = Mutex("held")
    inside = threading.Event()
    release = threading.Event()
    with Runtime(ncpu=1, hz=100) as rt:
        seen: list[BaseException] = []
        rt.exception_handler = lambda kc, exc: seen.append(exc)

        def hold(arg: Any, kc: Continuation[Any]) -> None:
            inside.set()
            release.wait(BLOCK_LIMIT)

        kc = rt.continuation(kcont.wq_prilow, hold, lock=lock)
        kc.schedule()
        assert inside.wait(10)
        with pytest.raises(MutexError):
            lock.release()  # held by the worker, not by us
        assert lock.locked()
        # From another continuation: refused there, reported, nothing broken.
        rt.continuation(kcont.wq_softnet, lambda a, k: lock.release()).schedule()
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen and isinstance(seen[0], MutexError)
        assert lock.locked()
        release.set()
        rt.wait_idle(timeout=10)
        assert not lock.locked()
        kc.schedule()
        release.set()
        rt.wait_idle(timeout=10)
        assert rt.stats()["queues"]["wq_prilow"]["invoked"] == 2
    # A plain thread, too.
    holder_has_it = threading.Event()
    done = threading.Event()

    def holder() -> None:
        with lock:
            holder_has_it.set()
            done.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert holder_has_it.wait(10)
    with pytest.raises(MutexError):
        lock.release()
    done.set()
    t.join(10)
    assert not lock.locked()


# -- a runtime left without shutdown ------------------------------------------------------

LEFT_RUNNING = {
    "a function sleeping": """
        kc = rt.continuation(kcont.wq_prilow, lambda a, k: time.sleep(600))
        kc.schedule()
        time.sleep(0.2)
        assert kc.running
    """,
    "a function blocked for ever": """
        ev = threading.Event()
        kc = rt.continuation(kcont.wq_prilow, lambda a, k: ev.wait())
        kc.schedule()
        time.sleep(0.2)
    """,
    "queued work and timers": """
        for i in range(100):
            rt.continuation(kcont.wq_prilow, lambda a, k: time.sleep(0.05)).schedule()
            rt.continuation(kcont.wq_softnet, lambda a, k: None).schedule(100000)
    """,
    "idle, never referenced again": """
        del rt
    """,
    "an exception at top level": """
        rt.continuation(kcont.wq_prilow, lambda a, k: time.sleep(600)).schedule()
        raise SystemExit(3)
    """,
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(LEFT_RUNNING))
def test_a_runtime_left_without_shutdown_does_not_keep_the_process_alive(case: str) -> None:
    script = "import threading, time, kcont\nrt = kcont.Runtime(ncpu=2)\n" + textwrap.dedent(
        LEFT_RUNNING[case]
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == (3 if "SystemExit" in script else 0), proc.stderr
    assert elapsed < 15, f"the process took {elapsed:.1f} s to exit"

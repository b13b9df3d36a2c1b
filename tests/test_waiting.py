"""flush(), running_here and schedule(ack=True): the pieces the NetBSD
compatibility layers needed (docs/compat.md, "Gaps found and closed in kcont")."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from conftest import Driver

import kcont
from kcont import Continuation, SimRuntime


def test_schedule_with_ack_rearms_from_the_function_itself(driver: Driver) -> None:
    """NetBSD callout_schedule: a handler re-arms itself without a separate ack()."""
    runs: list[int] = []

    def func(arg: None, kc: Continuation[None]) -> None:
        runs.append(1)
        if len(runs) < 3:
            kc.schedule(ack=True)

    kc = Continuation(kcont.wq_softclock, func, None)
    kc.schedule()
    for _ in range(3):
        driver.settle()
    assert len(runs) == 3


def test_schedule_without_ack_from_the_function_is_ebusy(rt: SimRuntime) -> None:
    seen: list[str] = []

    def func(arg: None, kc: Continuation[None]) -> None:
        try:
            kc.schedule()
        except kcont.BusyError:
            seen.append("EBUSY")

    Continuation(kcont.wq_softnet, func, None).schedule()
    rt.run_until_idle()
    assert seen == ["EBUSY"]


def test_schedule_with_ack_replaces_a_queued_invocation(rt: SimRuntime) -> None:
    """An acked re-schedule of a queued continuation moves it (it runs once)."""
    ran: list[int] = []
    kc = Continuation(kcont.wq_softnet, lambda a, kc: ran.append(kcont.curcpu().index), None)
    kc.schedule(cpu=rt.cpus[0])
    kc.schedule(cpu=rt.cpus[1], ack=True)
    rt.run_until_idle()
    assert ran == [1]


def test_running_here_only_inside_the_function(driver: Driver) -> None:
    inside: list[bool] = []
    kc = Continuation(kcont.wq_softnet, lambda a, kc: inside.append(kc.running_here), None)
    assert not kc.running_here
    kc.schedule()
    driver.settle()
    assert inside == [True]
    assert not kc.running_here


def test_flush_on_the_simulator_steps_until_the_invocation_ran(rt: SimRuntime) -> None:
    ran: list[str] = []
    other = Continuation(kcont.wq_softserial, lambda a, kc: ran.append("other"), None)
    kc = Continuation(kcont.wq_softnet, lambda a, kc: ran.append("kc"), None)
    other.schedule()
    kc.schedule()
    assert kc.flush() is True
    assert "kc" in ran
    assert kc.flush() is False  # nothing committed any more


def test_flush_leaves_a_pending_timer_alone(rt: SimRuntime) -> None:
    kc = Continuation(kcont.wq_softclock, lambda a, kc: None, None)
    kc.schedule(nticks=5)
    assert kc.flush() is False
    assert kc.pending


def test_flush_from_the_function_itself_returns_at_once(driver: Driver) -> None:
    results: list[bool] = []
    kc = Continuation(kcont.wq_softnet, lambda a, kc: results.append(kc.flush()), None)
    kc.schedule()
    driver.settle()
    assert results == [False]


def test_flush_of_a_parked_entry_cannot_end_on_the_simulator(rt: SimRuntime) -> None:
    lock = kcont.Mutex()
    kc = Continuation(kcont.wq_softnet, lambda a, kc: None, None, lock=lock)
    with lock:
        kc.schedule()
        with pytest.raises(kcont.SimDeadlockError):
            kc.flush()
    assert kc.flush() is True


@pytest.mark.threaded
def test_flush_waits_for_a_running_function_on_threads() -> None:
    entered = threading.Event()
    done: list[Any] = []

    def slow(arg: None, kc: Continuation[None]) -> None:
        entered.set()
        time.sleep(0.05)
        done.append(1)

    with kcont.Runtime(ncpu=1) as rt:
        kc = Continuation(kcont.wq_prilow, slow, None)
        kc.schedule()
        assert entered.wait(5)
        assert kc.flush(timeout=5) is True
        assert done == [1]
        blocker = threading.Event()
        stuck = Continuation(kcont.wq_prilow, lambda a, kc: blocker.wait(5), None)
        stuck.schedule()
        with pytest.raises(kcont.HaltTimeoutError):
            stuck.flush(timeout=0.05)
        blocker.set()
        rt.wait_idle(timeout=5)


@pytest.mark.threaded
def test_flush_returns_when_a_stop_cancels_the_entry() -> None:
    lock = kcont.Mutex()
    with kcont.Runtime(ncpu=1) as rt:
        kc = Continuation(kcont.wq_softnet, lambda a, kc: None, None, lock=lock)
        results: list[bool] = []
        lock.acquire()
        kc.schedule()
        waiter = threading.Thread(target=lambda: results.append(kc.flush(timeout=5)))
        waiter.start()
        time.sleep(0.02)
        kc.stop()
        lock.release()
        waiter.join(5)
        assert results == [True]
        rt.wait_idle(timeout=5)


def test_flush_does_not_wait_for_invocations_committed_later(driver: Driver) -> None:
    """Linux flush_work: only the instance queued when flush is called is waited for,
    so a continuation that keeps re-scheduling itself cannot keep flush waiting."""
    runs: list[int] = []
    stop = threading.Event()

    def again(arg: None, kc: Continuation[None]) -> None:
        runs.append(1)
        if not stop.is_set():
            kc.schedule(ack=True)

    kc = Continuation(kcont.wq_prilow, again, None)
    kc.schedule()
    try:
        assert kc.flush(timeout=5) is True
        assert runs
    finally:
        stop.set()
    driver.settle()

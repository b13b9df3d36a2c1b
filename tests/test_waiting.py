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


# -- halt and flush against the transitions they wait for (real threads) -------
#
# Each test opens the window it is about deterministically: a hook runs at the
# moment the waiting thread releases a lock (an interlock's release, or the
# runtime's preemption point), and lets the other thread act before the wait
# goes on, exactly as if the waiting thread were preempted there.


def _wait_until(predicate: Any, what: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.001)


@pytest.mark.threaded
@pytest.mark.parametrize("nticks", [0, 50])
def test_halt_stops_a_function_that_rearms_itself_while_the_interlock_is_released(nticks: int) -> None:
    """NetBSD callout_halt: once it returns, the callout is neither pending nor
    running, even if the handler re-armed itself meanwhile."""
    may_rearm = threading.Event()
    started: list[int] = []

    def fn(arg: None, kc: Continuation[None]) -> None:
        started.append(rt.ticks)
        assert may_rearm.wait(5)
        kc.schedule(nticks, ack=True)

    class HookedInterlock(kcont.Mutex):
        def release(self) -> None:
            super().release()
            # The halting thread is here, between its stop and its wait: the
            # function re-arms itself and returns.
            may_rearm.set()
            _wait_until(lambda: not kc.running, "the function to return")

    with kcont.Runtime(ncpu=1, hz=100) as rt:
        kc = Continuation(kcont.wq_prilow, fn, None)
        kc.schedule()
        _wait_until(lambda: started, "the function to start")
        interlock = HookedInterlock("interlock")
        with interlock:
            kc.halt(interlock, timeout=5)
            assert interlock.owned()
            assert not (kc.pending or kc.queued or kc.running), kc.flags
        assert started and len(started) == 1
        rt.wait_idle(timeout=5)
        assert len(started) == 1


@pytest.mark.threaded
@pytest.mark.parametrize("operation", ["halt", "destroy"])
def test_halt_and_destroy_stop_a_rearm_made_at_their_preemption_point(operation: str) -> None:
    may_rearm = threading.Event()
    started: list[int] = []

    class HookedRuntime(kcont.Runtime):
        def _preempt(self, where: str) -> None:
            may_rearm.set()
            _wait_until(lambda: not kc.running, "the function to return")

    def fn(arg: None, kc: Continuation[None]) -> None:
        started.append(1)
        assert may_rearm.wait(5)
        try:
            kc.schedule(0, ack=True)
        except kcont.DestroyedError:
            assert operation == "destroy"

    with HookedRuntime(ncpu=1, hz=100) as rt:
        kc = Continuation(kcont.wq_prilow, fn, None)
        kc.schedule()
        _wait_until(lambda: started, "the function to start")
        getattr(kc, operation)(timeout=5)
        assert not (kc.pending or kc.queued or kc.running), kc.flags
        rt.wait_idle(timeout=5)
        assert started == [1]


@pytest.mark.threaded
@pytest.mark.parametrize("replacement", ["timer", "new invocation"])
def test_flush_returns_when_its_invocation_is_replaced(replacement: str) -> None:
    """Linux flush_work after mod_delayed_work: what the flush waited for is
    gone, so it returns at once (not when its timeout expires, nor after the
    replacement runs)."""
    lock = kcont.Mutex("held elsewhere")
    ran: list[int] = []
    with kcont.Runtime(ncpu=1, hz=100) as rt:
        kc = Continuation(kcont.wq_prilow, lambda arg, kc: ran.append(1), None, lock=lock)
        results: list[bool] = []
        with lock:
            kc.schedule()  # committed, waiting for the lock
            flusher = threading.Thread(target=lambda: results.append(kc.flush(timeout=10)))
            flusher.start()
            _wait_until(lambda: rt._ended_waiters == 1, "the flush to sleep")
            kc.schedule(100_000 if replacement == "timer" else 0, ack=True)
            flusher.join(2)
            assert not flusher.is_alive(), "flush still waits for an invocation that was replaced"
            assert results == [True]
            assert ran == []
        kc.halt(timeout=5)
        flusher.join(10)


# -- waits that could never end are refused (WouldDeadlockError) ----------------------


def _inside(rt: Any, wq: Any, action: Any) -> list[Any]:
    """Run ``action()`` inside a function on ``wq`` of ``rt``; returns what it
    returned or raised (as [exception type] or ["returned", value])."""
    outcome: list[Any] = []

    def func(arg: None, kc: Continuation[None]) -> None:
        try:
            outcome.extend(["returned", action()])
        except Exception as exc:
            outcome.append(type(exc))

    kc = rt.continuation(wq, func)
    kc.schedule(cpu=rt.cpus[0])
    if isinstance(rt, SimRuntime):
        rt.run_until_idle()
    else:
        rt.wait_idle(timeout=10)
    return outcome


def test_flush_from_a_soft_function_of_work_queued_for_its_own_soft_worker_is_refused() -> None:
    """Only CPU 0's soft worker (the caller) could run the entry: refused at
    once, nothing changed, and the entry runs once the caller returns."""
    ran: list[int] = []
    with kcont.Runtime(ncpu=1) as rt:
        other = rt.continuation(kcont.wq_softserial, lambda arg, kc: ran.append(1))

        def flush_it() -> bool:
            other.schedule()
            return other.flush(timeout=3)

        started = time.monotonic()
        assert _inside(rt, kcont.wq_softnet, flush_it) == [kcont.WouldDeadlockError]
        assert time.monotonic() - started < 2
        other.flush(timeout=5)
        assert ran == [1]


def test_flush_from_a_soft_function_of_work_another_worker_runs_waits() -> None:
    """Another CPU's soft work, or this CPU's thread-level work, can end: flush waits."""
    with kcont.Runtime(ncpu=2) as rt:
        remote = rt.continuation(kcont.wq_softserial, lambda arg, kc: None)
        thread_level = rt.continuation(kcont.wq_prilow, lambda arg, kc: None)

        def flush_remote() -> bool:
            remote.schedule(cpu=rt.cpus[1])
            return remote.flush(timeout=5)

        def flush_thread_level() -> bool:
            thread_level.schedule()
            return thread_level.flush(timeout=5)

        assert _inside(rt, kcont.wq_softnet, flush_remote) == ["returned", True]
        assert _inside(rt, kcont.wq_softnet, flush_thread_level) == ["returned", True]


def test_flush_from_a_thread_level_function_of_its_cpus_soft_work_waits() -> None:
    with kcont.Runtime(ncpu=1) as rt:
        soft = rt.continuation(kcont.wq_softnet, lambda arg, kc: None)

        def flush_soft() -> bool:
            soft.schedule()
            return soft.flush(timeout=5)

        assert _inside(rt, kcont.wq_prilow, flush_soft) == ["returned", True]


@pytest.mark.parametrize("wq", [kcont.wq_softnet, kcont.wq_prilow])
def test_wait_idle_from_inside_a_function_is_refused_on_threads(wq: Any) -> None:
    with kcont.Runtime(ncpu=1) as rt:
        started = time.monotonic()
        assert _inside(rt, wq, lambda: rt.wait_idle(timeout=3)) == [kcont.WouldDeadlockError]
        assert time.monotonic() - started < 2


def test_the_simulators_refusals_are_would_deadlock_errors(rt: SimRuntime) -> None:
    """One exception to catch on both runtimes: SimDeadlockError is a WouldDeadlockError."""
    other = Continuation(kcont.wq_softserial, lambda arg, kc: None)

    def flush_it() -> bool:
        other.schedule()
        return other.flush()

    assert _inside(rt, kcont.wq_softnet, flush_it) == [kcont.SimDeadlockError]
    assert _inside(rt, kcont.wq_softnet, rt.wait_idle) == [kcont.SimDeadlockError]
    assert issubclass(kcont.SimDeadlockError, kcont.WouldDeadlockError)


def test_softint_disestablish_from_a_soft_function_with_a_trigger_pending_on_its_cpu() -> None:
    from kcont.compat import softint as si

    with kcont.Runtime(ncpu=1) as rt:
        cookie = si.softint_establish(si.SOFTINT_NET, lambda arg: None, None)

        def disestablish() -> None:
            si.softint_schedule(cookie)
            si.softint_disestablish(cookie)

        assert _inside(rt, kcont.wq_softserial, disestablish) == [kcont.WouldDeadlockError]
        rt.wait_idle(timeout=5)


def test_workqueue_wait_from_a_soft_function_of_soft_work_on_its_cpu_is_refused() -> None:
    from kcont.compat import workqueue as nwq

    done: list[object] = []
    with kcont.Runtime(ncpu=1) as rt:
        wq = nwq.workqueue_create("soft", lambda wk, arg: done.append(wk), None, kcont.PRI_SOFT_MIN, 0, 0)

        def enqueue_and_wait() -> None:
            nwq.workqueue_enqueue(wq, "wk")
            nwq.workqueue_wait(wq, "wk")

        assert _inside(rt, kcont.wq_softnet, enqueue_and_wait) == [kcont.WouldDeadlockError]
        rt.wait_idle(timeout=5)
        assert done == ["wk"]
        nwq.workqueue_destroy(wq)

"""Every seed function through the Pythonic API, one behaviour per test.

Each test checks a sentence of the seed (shared/seed/kernel_continuations.mdwn)
or of docs/semantics.md (section numbers in the docstrings).  Tests that only
look at outcomes use ``driver`` (they will also run on the threaded runtime);
tests that look at flags between steps, exact ticks or traces use ``rt``.
"""

from __future__ import annotations

import contextvars
import errno
import logging
import pickle
import threading
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
    SimDeadlockError,
    SimRuntime,
    WorkqueueReleasedError,
)

PREDEFINED = [
    ("wq_softserial", kcont.PRI_SOFTSERIAL),
    ("wq_softnet", kcont.PRI_SOFTNET),
    ("wq_softbio", kcont.PRI_SOFTBIO),
    ("wq_softclock", kcont.PRI_SOFTCLOCK),
    ("wq_prihigh", kcont.PRI_HIGH),
    ("wq_primedhigh", kcont.PRI_MEDHIGH),
    ("wq_primedlow", kcont.PRI_MEDLOW),
    ("wq_prilow", kcont.PRI_LOW),
]


def recorder() -> tuple[list[Any], Any]:
    """A function that appends its argument to a list."""
    ran: list[Any] = []

    def func(arg: Any, kc: Continuation[Any]) -> None:
        ran.append(arg)

    return ran, func


def noop(arg: Any, kc: Continuation[Any]) -> None:
    pass


# -- create ----------------------------------------------------------------------------------------


def test_create_starts_idle_with_its_attributes(rt: SimRuntime) -> None:
    """A new continuation has no flags, its func/arg/lock, and a repr naming its queue."""
    lock = Mutex("m")
    kc = Continuation(kcont.wq_softnet, noop, "a", lock=lock, name="net0")
    assert kc.flags == "IDLE"
    assert not (kc.pending or kc.expired or kc.invoking or kc.active or kc.queued or kc.running)
    assert not kc.destroyed
    assert kc.func is noop and kc.arg == "a" and kc.mutex is lock
    assert kc.deadline is None
    assert "net0" in repr(kc) and "IDLE" in repr(kc) and "wq_softnet" in repr(kc)


def test_create_binds_predefined_handle_to_current_runtime(rt: SimRuntime) -> None:
    """§16: a predefined handle resolves to the current runtime's queue of that name."""
    kc = Continuation(kcont.wq_softbio, noop)
    assert kc.wq is rt.predefined("wq_softbio")
    assert kc.runtime is rt


def test_create_counts_and_binds_to_workqueue(rt: SimRuntime) -> None:
    """§12: each continuation holds its queue; creations are counted."""
    wq = rt.workqueue(100)
    before = rt.stats()["continuations_created"]
    kcs = [Continuation(wq, noop), Continuation(wq, noop)]  # a collected one unbinds
    assert wq.bound == len(kcs) == 2
    assert rt.stats()["continuations_created"] == before + 2
    assert rt.stats()["queues"][wq.name]["bound"] == 2


def test_create_rejects_non_callable_func(rt: SimRuntime) -> None:
    """§14: misuse raises at create, not later in a worker."""
    with pytest.raises(TypeError, match="callable"):
        Continuation(kcont.wq_softnet, 42)  # type: ignore[arg-type]


def test_rt_continuation_resolves_predefined_in_that_runtime(rt: SimRuntime) -> None:
    """rt.continuation() binds a predefined handle to rt even when another runtime is current."""
    other = SimRuntime()
    with other:
        kc = rt.continuation(kcont.wq_softnet, noop)
    assert kc.runtime is rt


# -- schedule: immediate -------------------------------------------------------------------------


def test_schedule_now_runs_func_once_with_arg_and_kc(driver: Any) -> None:
    """nticks=0: invoked without delay, as func(arg, kc), once per scheduling."""
    seen: list[Any] = []
    kc = Continuation(kcont.wq_softnet, lambda arg, k: seen.append((arg, k)), "payload")
    kc.schedule()
    driver.settle()
    assert seen == [("payload", kc)]
    driver.settle()
    assert len(seen) == 1


def test_schedule_now_sets_expired_invoking_queued(rt: SimRuntime) -> None:
    """§2/§3/§4: an immediate scheduling is EXPIRED|INVOKING (and QUEUED), never PENDING."""
    kc = Continuation(kcont.wq_softnet, noop)
    kc.schedule(0)
    assert kc.flags == "EXPIRED|INVOKING|QUEUED"
    assert kc.expired and kc.invoking and kc.queued and kc.active
    assert not kc.pending and not kc.running


def test_schedule_now_disarms_pending_timer(rt: SimRuntime) -> None:
    """Seed: nticks=0 clears PENDING; the armed timer is gone and the function runs once, now."""
    ran, func = recorder()
    kc = Continuation(kcont.wq_softnet, func, "x")
    kc.schedule(5)
    kc.schedule(0)
    assert not kc.pending
    assert rt.stats()["pending_timers"] == 0
    rt.run_until_idle()
    assert ran == ["x"]
    rt.advance(10)
    assert ran == ["x"]


def test_invoking_cleared_when_func_returns(rt: SimRuntime) -> None:
    """§2: INVOKING is cleared automatically when func returns; EXPIRED stays."""
    kc = Continuation(kcont.wq_softnet, noop)
    kc.schedule()
    rt.run_until_idle()
    assert kc.flags == "EXPIRED"
    assert not kc.invoking and kc.expired and kc.active


def test_invoking_makes_schedule_busy(rt: SimRuntime) -> None:
    """Seed: schedule returns EBUSY while INVOKING; the refusal is counted and changes nothing."""
    ran, func = recorder()
    kc = Continuation(kcont.wq_softnet, func, 1)
    kc.schedule()
    with pytest.raises(BusyError, match="INVOKING") as info:
        kc.schedule()
    assert info.value.errno == errno.EBUSY
    with pytest.raises(BusyError):
        kc.schedule(3)
    assert kc.flags == "EXPIRED|INVOKING|QUEUED"
    assert rt.stats()["queues"]["wq_softnet"]["ebusy"] == 2
    rt.advance(5)
    assert ran == [1]


def test_invoking_after_timer_expiry_makes_schedule_busy(rt: SimRuntime) -> None:
    """Seed: at expiry the continuation is INVOKING, so schedule is EBUSY until it runs."""
    lock = Mutex()
    kc = Continuation(kcont.wq_softnet, noop, lock=lock)
    kc.schedule(1)
    with lock:
        rt.advance(1)  # expires, parks on the held lock
        assert kc.flags == "EXPIRED|INVOKING|QUEUED"
        with pytest.raises(BusyError):
            kc.schedule(0)
    rt.run_until_idle()
    kc.schedule(0)  # accepted once the invocation ended


def test_invoking_makes_schedule_from_handler_busy_without_ack(rt: SimRuntime) -> None:
    """§2: a handler that re-arms itself without ack() gets EBUSY."""
    errors: list[BaseException] = []

    def func(arg: Any, kc: Continuation[Any]) -> None:
        try:
            kc.schedule(0)
        except BusyError as exc:
            errors.append(exc)

    kc = Continuation(kcont.wq_softnet, func)
    kc.schedule()
    assert rt.run_until_idle() == 1
    assert len(errors) == 1
    assert kc.flags == "EXPIRED"


def test_rearm_from_handler_needs_ack(driver: Any) -> None:
    """§2: ack() then schedule() inside func re-arms; each scheduling runs once."""
    ran: list[int] = []

    def func(arg: Any, kc: Continuation[Any]) -> None:
        ran.append(len(ran))
        if len(ran) < 3:
            assert kc.ack() is True
            kc.schedule(0)

    kc = Continuation(kcont.wq_softnet, func)
    kc.schedule(0, cpu=driver.cpus[0])
    driver.settle()
    assert ran == [0, 1, 2]
    assert not kc.invoking


def test_rescheduled_in_handler_keeps_invoking_for_new_invocation(rt: SimRuntime) -> None:
    """§2: INVOKING is not cleared at return when func scheduled the continuation again."""
    calls: list[str] = []

    def func(arg: Any, kc: Continuation[Any]) -> None:
        calls.append(kc.flags)
        if len(calls) == 1:
            kc.ack()
            kc.schedule(0)
            calls.append(kc.flags)

    kc = Continuation(kcont.wq_softnet, func)
    kc.schedule()
    rt.step()
    assert calls == ["EXPIRED|INVOKING|RUNNING", "EXPIRED|INVOKING|QUEUED|RUNNING"]
    assert kc.flags == "EXPIRED|INVOKING|QUEUED"
    rt.step()
    assert kc.flags == "EXPIRED"


def test_ack_then_rearm_timer_from_handler(rt: SimRuntime) -> None:
    """A handler that acks and arms a timer leaves PENDING only (EXPIRED cleared by schedule)."""
    ticks: list[int] = []

    def func(arg: Any, kc: Continuation[Any]) -> None:
        ticks.append(rt.ticks)
        if len(ticks) < 3:
            kc.ack()
            kc.schedule(2)

    kc = Continuation(kcont.wq_softnet, func)
    kc.schedule(1)
    rt.advance(1)
    assert ticks == [1]
    assert kc.flags == "PENDING"
    rt.advance(10)
    assert ticks == [1, 3, 5]


def test_ack_returns_previous_invoking(rt: SimRuntime) -> None:
    """§13: ack() clears INVOKING and returns its previous value."""
    inside: list[bool] = []

    def func(arg: Any, kc: Continuation[Any]) -> None:
        inside.append(kc.ack())
        inside.append(kc.ack())
        inside.append(kc.invoking)

    kc = Continuation(kcont.wq_softnet, func)
    assert kc.ack() is False
    kc.schedule()
    rt.run_until_idle()
    assert inside == [True, False, False]
    kc.schedule()
    assert kc.ack() is True
    assert kc.flags == "EXPIRED|QUEUED"


def test_schedule_after_external_ack_replaces_queued_invocation(rt: SimRuntime) -> None:
    """§5: scheduling a QUEUED continuation (after ack) replaces the committed invocation."""
    ran, func = recorder()
    kc = Continuation(kcont.wq_softnet, func, "a")
    kc.schedule(0, cpu=rt.cpus[0])
    kc.ack()
    kc.schedule(0, cpu=rt.cpus[1])
    assert rt.stats()["queues"]["wq_softnet"]["depth"] == 1
    assert rt.step(rt.cpus[0]) is None
    assert rt.step(rt.cpus[1]) is kc
    assert rt.run_until_idle() == 0
    assert ran == ["a"]


def test_schedule_after_external_ack_can_turn_queued_into_timer(rt: SimRuntime) -> None:
    """§5: a continuation is on at most one queue and in the wheel at most once."""
    ran, func = recorder()
    kc = Continuation(kcont.wq_softnet, func, "a")
    kc.schedule(0)
    kc.ack()
    kc.schedule(3)
    assert kc.flags == "PENDING"
    assert rt.stats()["queues"]["wq_softnet"]["depth"] == 0
    rt.advance(2)
    assert ran == []
    rt.advance(1)
    assert ran == ["a"]


# -- schedule: timers ------------------------------------------------------------------------------


def test_timer_sets_pending_and_clears_expired(rt: SimRuntime) -> None:
    """Seed: nticks>0 marks PENDING while EXPIRED is cleared."""
    kc = Continuation(kcont.wq_softnet, noop)
    kc.schedule()
    rt.run_until_idle()
    assert kc.expired
    kc.schedule(3)
    assert kc.flags == "PENDING"
    assert kc.pending and kc.active and not kc.expired and not kc.invoking
    assert kc.deadline == 3


def test_timer_runs_at_its_deadline(rt: SimRuntime) -> None:
    """§5: armed with nticks at tick t, it expires at t+nticks."""
    ticks: list[int] = []
    kc = Continuation(kcont.wq_softnet, lambda a, k: ticks.append(rt.ticks), name="t")
    rt.advance(4)
    kc.schedule(3)
    rt.advance(2)
    assert ticks == []
    rt.advance(1)
    assert ticks == [7]
    events = [(e.tick, e.event) for e in rt.trace if e.name == "t"]
    assert events == [(4, "schedule"), (7, "expire"), (7, "start"), (7, "end")]


def test_timer_expiry_sets_expired_invoking_and_clears_pending(rt: SimRuntime) -> None:
    """Seed: once the timer expires, EXPIRED and INVOKING are set and PENDING cleared."""
    target = Continuation(kcont.wq_prilow, noop)
    seen: list[str] = []
    observer = Continuation(kcont.wq_softserial, lambda a, k: seen.append(target.flags))
    target.schedule(2)
    observer.schedule(2)
    rt.advance(2)
    assert seen == ["EXPIRED|INVOKING|QUEUED"]
    assert target.flags == "EXPIRED"


def test_rearm_replaces_deadline_later(rt: SimRuntime) -> None:
    """§5: re-scheduling a PENDING continuation replaces its deadline (no earlier run)."""
    ticks: list[int] = []
    kc = Continuation(kcont.wq_softnet, lambda a, k: ticks.append(rt.ticks))
    kc.schedule(2)
    kc.schedule(5)
    assert kc.deadline == 5
    rt.advance(10)
    assert ticks == [5]


def test_rearm_replaces_deadline_earlier(rt: SimRuntime) -> None:
    """§5: re-arming earlier fires at the new deadline, once."""
    ticks: list[int] = []
    kc = Continuation(kcont.wq_softnet, lambda a, k: ticks.append(rt.ticks))
    kc.schedule(8)
    kc.schedule(3)
    rt.advance(10)
    assert ticks == [3]
    assert rt.stats()["queues"]["wq_softnet"]["armed"] == 2


def test_rearm_replaces_cpu(rt: SimRuntime) -> None:
    """§5: re-scheduling a PENDING continuation replaces its target CPU."""
    where: list[int] = []
    kc = Continuation(kcont.wq_softnet, lambda a, k: where.append(kcont.curcpu().index))
    kc.schedule(5, cpu=rt.cpus[0])
    kc.schedule(2, cpu=rt.cpus[1])
    assert kc.cpu is rt.cpus[1]
    rt.advance(6)
    assert where == [1]


# -- schedule: CPUs --------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1])
def test_schedule_on_given_cpu_runs_there(driver: Any, index: int) -> None:
    """Seed: with ci on a per-CPU queue, the continuation is invoked on that CPU."""
    where: list[int] = []
    kc = Continuation(kcont.wq_softnet, lambda a, k: where.append(kcont.curcpu().index))
    kc.schedule(0, cpu=driver.cpus[index])
    driver.settle()
    assert where == [index]


def test_schedule_cpu_on_shared_queue_is_enoent(rt: SimRuntime) -> None:
    """Seed: ci given on a queue without per-CPU queues is ENOENT; nothing changes."""
    wq = rt.workqueue(100)
    kc = Continuation(wq, noop)
    with pytest.raises(NoPerCPUQueueError, match="per-CPU") as info:
        kc.schedule(0, cpu=rt.cpus[1])
    assert info.value.errno == errno.ENOENT
    assert kc.flags == "IDLE"
    kc.schedule(0)  # ci=None is fine
    assert kc.cpu is None


def test_schedule_cpu_of_other_runtime_is_einval(rt: SimRuntime) -> None:
    """§5: ci of another runtime is EINVAL."""
    kc = Continuation(kcont.wq_softnet, noop)
    with pytest.raises(InvalidArgumentError, match="another runtime") as info:
        kc.schedule(0, cpu=SimRuntime().cpus[0])
    assert info.value.errno == errno.EINVAL
    assert kc.flags == "IDLE"


def test_schedule_none_from_handler_targets_running_cpu(driver: Any) -> None:
    """§5: ci=None on a per-CPU queue is the CPU whose continuation the caller runs."""
    where: list[int] = []
    child = Continuation(kcont.wq_softbio, lambda a, k: where.append(kcont.curcpu().index))
    parent = Continuation(kcont.wq_softnet, lambda a, k: child.schedule())
    parent.schedule(0, cpu=driver.cpus[1])
    driver.settle()
    assert where == [1]


def test_schedule_none_under_bind_cpu_targets_bound_cpu(driver: Any) -> None:
    """§5: ci=None from a thread bound with kcont.bind_cpu targets that CPU."""
    where: list[int] = []
    kc = Continuation(kcont.wq_softnet, lambda a, k: where.append(kcont.curcpu().index))
    with kcont.bind_cpu(driver.cpus[1]) as cpu:
        assert cpu is driver.cpus[1]
        assert kcont.curcpu() is driver.cpus[1]
        kc.schedule()
    assert kc.cpu is driver.cpus[1]
    driver.settle()
    assert where == [1]


def test_schedule_none_from_unbound_thread_targets_cpu0(driver: Any) -> None:
    """§5: a thread neither running a continuation nor bound is on CPU 0."""
    where: list[int] = []
    kc = Continuation(kcont.wq_prilow, lambda a, k: where.append(kcont.curcpu().index))
    kc.schedule()
    assert kc.cpu is driver.cpus[0]
    driver.settle()
    assert where == [0]


def test_timer_keeps_cpu_captured_at_schedule(driver: Any) -> None:
    """§5: a timer keeps the CPU captured at schedule time until expiry."""
    where: list[int] = []
    kc = Continuation(kcont.wq_softclock, lambda a, k: where.append(kcont.curcpu().index))
    with kcont.bind_cpu(driver.cpus[1]):
        kc.schedule(2)
    driver.advance(3)
    assert where == [1]


def test_schedule_none_bound_to_other_runtime_cpu_targets_cpu0(rt: SimRuntime) -> None:
    """A binding to a CPU of another runtime does not leak into this runtime's choice."""
    kc = rt.continuation(kcont.wq_softnet, noop)
    with kcont.bind_cpu(SimRuntime().cpus[1]):
        kc.schedule()
    assert kc.cpu is rt.cpus[0]


def test_curcpu_outside_continuation(rt: SimRuntime) -> None:
    """curcpu(): CPU 0 of the current runtime, or the bound CPU."""
    assert kcont.curcpu() is rt.cpus[0]
    with kcont.bind_cpu(rt.cpus[1]):
        assert kcont.curcpu() is rt.cpus[1]
    assert kcont.curcpu() is rt.cpus[0]


def test_shared_queue_continuation_has_no_cpu(rt: SimRuntime) -> None:
    """kc.cpu is None on a shared queue, the CPU handle on a per-CPU queue."""
    shared = Continuation(rt.workqueue(90), noop)
    shared.schedule()
    assert shared.cpu is None
    percpu = Continuation(rt.workqueue(90, percpu=True), noop)
    percpu.schedule(0, cpu=rt.cpus[1])
    assert percpu.cpu is rt.cpus[1]


# -- flags: the transition table -------------------------------------------------------------------


def test_flags_through_immediate_lifecycle(rt: SimRuntime) -> None:
    """Table rows schedule(0), dispatch begins/ends, stop: flags at each step."""
    inside: list[str] = []
    kc = Continuation(kcont.wq_softnet, lambda a, k: inside.append(k.flags))
    assert kc.flags == "IDLE"
    kc.schedule(0)
    assert kc.flags == "EXPIRED|INVOKING|QUEUED"
    rt.step()
    assert inside == ["EXPIRED|INVOKING|RUNNING"]
    assert kc.flags == "EXPIRED"
    assert kc.stop() is True
    assert kc.flags == "IDLE"


def test_flags_through_timer_lifecycle(rt: SimRuntime) -> None:
    """Table rows schedule(n), timer expiry, dispatch: PENDING -> EXPIRED|INVOKING|QUEUED -> EXPIRED."""
    inside: list[str] = []
    kc = Continuation(kcont.wq_softnet, lambda a, k: inside.append(k.flags))
    kc.schedule(1)
    assert kc.flags == "PENDING"
    assert kc.active and not kc.expired
    rt.advance(1)
    assert inside == ["EXPIRED|INVOKING|RUNNING"]
    assert kc.flags == "EXPIRED"
    assert kc.active


def test_active_is_pending_or_expired(rt: SimRuntime) -> None:
    """§3: active == PENDING or EXPIRED."""
    kc = Continuation(kcont.wq_softnet, noop)
    assert not kc.active
    kc.schedule(2)
    assert kc.active and kc.pending
    kc.stop()
    assert not kc.active
    kc.schedule(0)
    assert kc.active and kc.expired
    rt.run_until_idle()
    assert kc.active and kc.expired
    kc.stop()
    assert not kc.active


def test_expired_is_set_before_the_function_starts(rt: SimRuntime) -> None:
    """§3: EXPIRED means committed; queued/running tell whether the function started."""
    lock = Mutex()
    kc = Continuation(kcont.wq_softnet, noop, lock=lock)
    with lock:
        kc.schedule(0)
        rt.run_until_idle()
        assert kc.expired and kc.queued and not kc.running


# -- stop ----------------------------------------------------------------------------------------


def test_stop_idle_returns_false(rt: SimRuntime) -> None:
    """Seed: stop is safe on a continuation that is not pending; returns False."""
    kc = Continuation(kcont.wq_softnet, noop)
    assert kc.stop() is False
    assert kc.flags == "IDLE"


def test_stop_pending_disarms_and_returns_false(rt: SimRuntime) -> None:
    """§7: stop disarms a timer at once; it never runs; counted as stopped."""
    ran, func = recorder()
    kc = Continuation(kcont.wq_softnet, func, 1)
    kc.schedule(3)
    assert kc.stop() is False
    assert kc.flags == "IDLE"
    assert rt.stats()["pending_timers"] == 0
    rt.advance(5)
    assert ran == []
    assert rt.stats()["queues"]["wq_softnet"]["stopped"] == 1


def test_stop_queued_dequeues_and_returns_false(rt: SimRuntime) -> None:
    """§7: stop removes a committed invocation that has not started, clearing INVOKING|EXPIRED."""
    ran, func = recorder()
    kc = Continuation(kcont.wq_softnet, func, 1)
    kc.schedule(0)
    assert kc.stop() is False
    assert kc.flags == "IDLE"
    assert rt.stats()["queues"]["wq_softnet"]["depth"] == 0
    assert rt.run_until_idle() == 0
    assert ran == []
    kc.schedule(0)  # not INVOKING any more: no EBUSY
    rt.run_until_idle()
    assert ran == [1]


def test_stop_after_expiry_before_start_returns_false(rt: SimRuntime) -> None:
    """§7: an expired timer waiting on its lock can still be prevented."""
    ran, func = recorder()
    lock = Mutex()
    kc = Continuation(kcont.wq_softnet, func, 1, lock=lock)
    kc.schedule(1)
    with lock:
        rt.advance(1)
        assert kc.expired and kc.queued
        assert kc.stop() is False
    rt.advance(2)
    assert ran == []


def test_stop_after_run_returns_true_once(driver: Any) -> None:
    """Seed: stop returns True if EXPIRED (the run could not be prevented), then clears it."""
    kc = Continuation(kcont.wq_softnet, noop)
    kc.schedule()
    driver.settle()
    assert kc.stop() is True
    assert kc.stop() is False
    assert not kc.active


def test_stop_from_own_func_returns_true(rt: SimRuntime) -> None:
    """§7: while running, the invocation cannot be prevented: stop returns True."""
    results: list[bool] = []
    kc = Continuation(kcont.wq_softnet, lambda a, k: results.append(k.stop()))
    kc.schedule()
    rt.run_until_idle()
    assert results == [True]
    assert kc.flags == "IDLE"


def test_stop_from_func_cancels_its_own_rearm(rt: SimRuntime) -> None:
    """§7: a re-scheduling made inside func is the current one, and stop prevents it."""
    results: list[Any] = []

    def func(arg: Any, kc: Continuation[Any]) -> None:
        kc.ack()
        kc.schedule(0)
        results.append(kc.stop())
        results.append(kc.flags)

    kc = Continuation(kcont.wq_softnet, func)
    kc.schedule()
    assert rt.run_until_idle() == 1
    assert results == [False, "RUNNING"]
    assert kc.flags == "IDLE"


def test_stop_never_raises_even_destroyed(rt: SimRuntime) -> None:
    """§7: stop never raises (idempotent), in any state."""
    kc = Continuation(kcont.wq_softnet, noop)
    kc.destroy()
    assert kc.stop() is False
    assert kc.stop() is False


# -- halt ----------------------------------------------------------------------------------------


def test_halt_not_running_acts_as_stop(rt: SimRuntime) -> None:
    """§8: halt stops; with nothing running it returns at once with stop's result."""
    ran, func = recorder()
    kc = Continuation(kcont.wq_softnet, func, 1)
    kc.schedule(2)
    assert kc.halt() is False
    kc.schedule(0)
    assert kc.halt() is False
    rt.advance(3)
    assert ran == []
    kc.schedule(0)
    rt.run_until_idle()
    assert kc.halt() is True


def test_halt_from_own_func_returns_at_once(rt: SimRuntime) -> None:
    """§8: a self-halt stops and returns at once (NetBSD callout_halt), no deadlock."""
    results: list[bool] = []
    kc = Continuation(kcont.wq_softnet, lambda a, k: results.append(k.halt(timeout=1)))
    kc.schedule()
    rt.run_until_idle()
    assert results == [True]
    assert kc.flags == "IDLE"


def test_self_halt_cancels_own_rearm(rt: SimRuntime) -> None:
    """§8: a function that acks, re-arms and then halts itself is not run again."""
    calls: list[bool] = []

    def func(arg: Any, kc: Continuation[Any]) -> None:
        kc.ack()
        kc.schedule(0)
        calls.append(kc.halt())

    kc = Continuation(kcont.wq_softnet, func)
    kc.schedule()
    rt.run_until_idle()
    assert calls == [False]


def test_halt_with_interlock_not_waiting_keeps_it_held(rt: SimRuntime) -> None:
    """§8: with nothing running, halt(interlock) returns with the interlock still held."""
    interlock = Mutex("interlock")
    kc = Continuation(kcont.wq_softnet, noop)
    kc.schedule()
    with interlock:
        assert kc.halt(interlock) is False
        assert interlock.owned()
    assert rt.run_until_idle() == 0


def test_halt_from_own_func_with_interlock_keeps_it(rt: SimRuntime) -> None:
    """§8: a self-halt with an interlock neither waits nor drops the interlock."""
    interlock = Mutex()
    seen: list[Any] = []

    def func(arg: Any, kc: Continuation[Any]) -> None:
        with interlock:
            seen.append(kc.halt(interlock))
            seen.append(interlock.owned())

    kc = Continuation(kcont.wq_softnet, func)
    kc.schedule()
    rt.run_until_idle()
    assert seen == [True, True]
    assert not interlock.locked()


class _LoggingMutex(Mutex):
    """A Mutex that logs each acquire/release with whether ``watched`` was running then."""

    __slots__ = ("log", "watched")

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        taken = super().acquire(blocking, timeout)
        self.log.append(("acquire", self.watched is not None and self.watched.running))
        return taken

    def release(self) -> None:
        self.log.append(("release", self.watched is not None and self.watched.running))
        super().release()


def test_halt_releases_interlock_while_waiting_and_retakes_it(rt: SimRuntime) -> None:
    """§8: a halt that must wait for a running invocation drops the interlock first and takes
    it again before returning.  On the simulator the wait, from another thread while the
    function runs, cannot end and raises SimDeadlockError; the interlock is still retaken."""
    interlock = _LoggingMutex("interlock")
    interlock.log = []
    interlock.watched = None
    outcome: list[Any] = []

    def halter(kc: Continuation[Any]) -> None:
        interlock.acquire()
        try:
            kc.halt(interlock)
        except SimDeadlockError as exc:
            outcome.append(type(exc))
        outcome.append(interlock.owned())
        interlock.release()

    def func(arg: Any, kc: Continuation[Any]) -> None:
        interlock.watched = kc
        t = threading.Thread(target=halter, args=(kc,))
        t.start()
        t.join(10)
        assert not t.is_alive()

    kc = Continuation(kcont.wq_softnet, func)
    kc.schedule()
    rt.run_until_idle()
    assert outcome == [SimDeadlockError, True]
    # taken by the halter, dropped by halt while kc runs, retaken by halt, released by the halter
    assert interlock.log == [("acquire", True), ("release", True), ("acquire", True), ("release", True)]
    assert kc.flags == "IDLE"  # the halt's stop cleared EXPIRED


def test_halt_not_waiting_leaves_interlock_alone(rt: SimRuntime) -> None:
    """§8: a halt with nothing running neither releases nor retakes the interlock."""
    interlock = _LoggingMutex()
    interlock.log = []
    interlock.watched = None
    kc = Continuation(kcont.wq_softnet, noop)
    kc.schedule()
    interlock.acquire()
    assert kc.halt(interlock) is False
    assert interlock.log == [("acquire", False)]
    interlock.release()


# -- flush (§8a) and schedule(ack=True) (§8b) ------------------------------------------------------


def test_flush_waits_for_committed_invocation(driver: Any) -> None:
    """§8a: flush() returns once the committed invocation has run; it cancels nothing."""
    ran, func = recorder()
    kc = Continuation(kcont.wq_softnet, func, "x")
    kc.schedule(0, cpu=driver.cpus[1])
    waited = kc.flush(timeout=10)
    # On real threads the soft worker may have run it before flush() looked.
    assert waited is True or not driver.exact_time
    assert ran == ["x"]
    assert kc.flush(timeout=10) is False  # nothing left to wait for


def test_flush_leaves_pending_timer_alone(rt: SimRuntime) -> None:
    """§8a: flush() does not wait for, nor cancel, a pending timer."""
    ran, func = recorder()
    kc = Continuation(kcont.wq_softnet, func, "x")
    kc.schedule(3)
    assert kc.flush() is False
    assert kc.flags == "PENDING" and rt.ticks == 0
    rt.advance(3)
    assert ran == ["x"]


def test_flush_from_own_func_returns_at_once(rt: SimRuntime) -> None:
    """§8a: called from the continuation's own function, flush returns at once."""
    results: list[bool] = []

    def func(arg: Any, kc: Continuation[Any]) -> None:
        kc.ack()
        kc.schedule(0)
        results.append(kc.flush())

    kc = Continuation(kcont.wq_softnet, func)
    kc.schedule()
    rt.step()
    assert results == [False]
    assert kc.queued  # the re-arm was neither run nor cancelled by the flush


def test_flush_of_entry_waiting_for_callers_lock_is_sim_deadlock(rt: SimRuntime) -> None:
    """§8a: on the simulator, a flush that can never end (the entry waits for a lock the
    caller holds) raises SimDeadlockError instead of hanging."""
    lock = Mutex()
    kc = Continuation(kcont.wq_softnet, noop, lock=lock)
    with lock:
        kc.schedule()
        with pytest.raises(SimDeadlockError):
            kc.flush()
        assert kc.queued
    assert kc.flush() is True
    assert not kc.queued


def test_schedule_with_ack_rearms_from_handler(rt: SimRuntime) -> None:
    """§8b: schedule(..., ack=True) clears INVOKING and re-arms in one step."""
    ticks: list[int] = []

    def func(arg: Any, kc: Continuation[Any]) -> None:
        ticks.append(rt.ticks)
        if len(ticks) < 3:
            kc.schedule(2, ack=True)

    kc = Continuation(kcont.wq_softnet, func)
    kc.schedule(1)
    rt.advance(10)
    assert ticks == [1, 3, 5]
    assert kc.flags == "EXPIRED"


def test_schedule_with_ack_replaces_committed_invocation(rt: SimRuntime) -> None:
    """§8b/§5: ack=True on a committed (queued) continuation replaces that invocation."""
    ran, func = recorder()
    kc = Continuation(kcont.wq_softnet, func, "a")
    kc.schedule(0, cpu=rt.cpus[0])
    kc.schedule(0, cpu=rt.cpus[1], ack=True)
    assert kc.cpu is rt.cpus[1]
    assert rt.run_until_idle() == 1
    assert ran == ["a"]


def test_running_here_only_inside_own_function(rt: SimRuntime) -> None:
    """§8b: running_here is true only when called from the continuation's own function."""
    seen: list[tuple[str, bool]] = []
    other = Continuation(kcont.wq_prilow, noop)
    kc = Continuation(
        kcont.wq_softnet, lambda a, k: seen.extend([("self", k.running_here), ("other", other.running_here)])
    )
    observer = Continuation(kcont.wq_prilow, lambda a, k: seen.append(("observer", kc.running_here)))
    assert kc.running_here is False
    kc.schedule(0, cpu=rt.cpus[0])
    other.schedule(0, cpu=rt.cpus[0])
    observer.schedule(0, cpu=rt.cpus[0])
    rt.run_until_idle()
    assert seen == [("self", True), ("other", False), ("observer", False)]


# -- destroy ---------------------------------------------------------------------------------------


def test_destroy_refuses_every_later_change(rt: SimRuntime) -> None:
    """§9: after destroy, schedule/setfunc/setarg/setmutex raise DestroyedError (EINVAL)."""
    lock = Mutex()
    kc = Continuation(kcont.wq_softnet, noop, lock=lock)
    kc.destroy()
    assert kc.destroyed and "DESTROYED" in kc.flags
    with pytest.raises(DestroyedError, match="destroyed") as info:
        kc.schedule()
    assert info.value.errno == errno.EINVAL
    with pytest.raises(DestroyedError):
        kc.schedule(5)
    with lock:
        with pytest.raises(DestroyedError):
            kc.set_func(noop, 1)
        with pytest.raises(DestroyedError):
            kc.set_arg(1)
        with pytest.raises(DestroyedError):
            kc.set_mutex(None)
    assert rt.stats()["pending_timers"] == 0


def test_destroy_lockless_refuses_setmutex_none(rt: SimRuntime) -> None:
    """§9: setmutex(None) on a destroyed lock-less continuation is refused too."""
    kc = Continuation(kcont.wq_softnet, noop)
    kc.destroy()
    with pytest.raises(DestroyedError):
        kc.set_mutex(None)


def test_destroy_twice_raises(rt: SimRuntime) -> None:
    """§9: destroying twice raises DestroyedError."""
    kc = Continuation(kcont.wq_softnet, noop)
    kc.destroy()
    with pytest.raises(DestroyedError, match="already destroyed"):
        kc.destroy()


@pytest.mark.parametrize("nticks", [0, 3])
def test_destroy_cancels_committed_or_armed_invocation(rt: SimRuntime, nticks: int) -> None:
    """§9: destroy stops a queued or pending continuation: it never runs."""
    ran, func = recorder()
    kc = Continuation(kcont.wq_softnet, func, 1)
    kc.schedule(nticks)
    kc.destroy()
    rt.advance(5)
    assert ran == []
    assert rt.stats()["queues"]["wq_softnet"]["depth"] == 0
    assert rt.stats()["pending_timers"] == 0


def test_destroy_drops_workqueue_binding_func_and_arg(rt: SimRuntime) -> None:
    """§9/§12: once destroyed, the continuation no longer holds its queue, function or argument."""
    wq = rt.workqueue(100)
    kc = Continuation(wq, noop, object())
    assert wq.bound == 1
    kc.destroy()
    assert wq.bound == 0
    assert kc.arg is None and kc.func is not noop
    wq.release()
    assert wq.freed


def test_destroy_from_own_func_finishes_after_return(rt: SimRuntime) -> None:
    """§9: called from its own function, destroy refuses re-arming at once and finishes later."""
    wq = rt.workqueue(100, percpu=True)
    seen: list[Any] = []

    def func(arg: Any, kc: Continuation[Any]) -> None:
        kc.destroy()
        seen.append(kc.destroyed)
        seen.append(wq.bound)
        kc.ack()
        try:
            kc.schedule(0)
        except DestroyedError:
            seen.append("refused")

    kc = Continuation(wq, func)
    kc.schedule()
    assert rt.run_until_idle() == 1
    assert seen == [True, 1, "refused"]
    assert wq.bound == 0
    assert kc.flags == "DESTROYED|DETACHED"


def test_destroy_from_other_thread_refuses_rearm_at_once(rt: SimRuntime) -> None:
    """§9: destroy marks DESTROYED before waiting, so the running function cannot re-arm.

    On the simulator the wait for the running function raises SimDeadlockError in the
    destroying thread; the continuation stays destroyed and is released when func returns."""
    wq = rt.workqueue(100, percpu=True)
    seen: list[Any] = []

    def destroyer(kc: Continuation[Any]) -> None:
        try:
            kc.destroy()
        except SimDeadlockError:
            seen.append("waited")

    def func(arg: Any, kc: Continuation[Any]) -> None:
        t = threading.Thread(target=destroyer, args=(kc,))
        t.start()
        t.join(10)
        kc.ack()
        try:
            kc.schedule(0)
        except DestroyedError:
            seen.append("refused")
        seen.append(wq.bound)

    kc = Continuation(wq, func)
    kc.schedule()
    rt.run_until_idle()
    assert seen == ["waited", "refused", 1]
    assert wq.bound == 0
    assert rt.run_until_idle() == 0


# -- setfunc / setarg ------------------------------------------------------------------------------


def test_setfunc_uses_create_signature(rt: SimRuntime) -> None:
    """§1: setfunc's function is called as func(arg, kc), like create's."""
    calls: list[Any] = []
    kc = Continuation(kcont.wq_softnet, noop, "old")
    kc.set_func(lambda arg, k: calls.append((arg, k)), "new")
    assert kc.arg == "new"
    kc.schedule()
    rt.run_until_idle()
    assert calls == [("new", kc)]


@pytest.mark.parametrize("nticks", [0, 2])
def test_setfunc_lockless_refused_while_pending_or_invoking(rt: SimRuntime, nticks: int) -> None:
    """§11: without a lock, setfunc is EBUSY while PENDING or INVOKING; the old function runs."""
    ran, func = recorder()
    kc = Continuation(kcont.wq_softnet, func, "old")
    kc.schedule(nticks)
    with pytest.raises(BusyError, match="neither PENDING nor INVOKING") as info:
        kc.set_func(noop, "new")
    assert info.value.errno == errno.EBUSY
    rt.advance(3)
    assert ran == ["old"]


def test_setfunc_lockless_refused_inside_func_until_ack(rt: SimRuntime) -> None:
    """§11: inside func (INVOKING) setfunc is EBUSY; after ack() it is accepted."""
    results: list[Any] = []
    new_ran: list[Any] = []

    def func(arg: Any, kc: Continuation[Any]) -> None:
        try:
            kc.set_func(noop, None)
        except BusyError:
            results.append("busy")
        kc.ack()
        kc.set_func(lambda a, k: new_ran.append(a), "second")
        results.append("set")

    kc = Continuation(kcont.wq_softnet, func)
    kc.schedule()
    rt.run_until_idle()
    assert results == ["busy", "set"]
    kc.schedule()
    rt.run_until_idle()
    assert new_ran == ["second"]


def test_setfunc_with_lock_requires_holding_it(rt: SimRuntime) -> None:
    """§11: with a lock, setfunc needs the caller to hold it, and then works even when PENDING."""
    ran, func = recorder()
    lock = Mutex()
    kc = Continuation(kcont.wq_softnet, noop, "old", lock=lock)
    kc.schedule(2)
    with pytest.raises(MutexError, match="must hold"):
        kc.set_func(func, "new")
    with lock:
        kc.set_func(func, "new")
    rt.advance(2)
    assert ran == ["new"]


def test_setarg_lockless_any_time_picked_up_at_start(rt: SimRuntime) -> None:
    """Seed: without a lock, arg may change at any time; a queued entry reads it when it starts."""
    ran, func = recorder()
    kc = Continuation(kcont.wq_softnet, func, 1)
    kc.schedule()
    kc.set_arg(2)
    rt.run_until_idle()
    kc.schedule(1)
    kc.arg = 3
    rt.advance(1)
    assert ran == [2, 3]


def test_setarg_inside_func_not_seen_by_running_invocation(rt: SimRuntime) -> None:
    """Seed: an invocation already started keeps the old argument."""
    seen: list[Any] = []

    def func(arg: Any, kc: Continuation[Any]) -> None:
        kc.set_arg(arg + 1)
        seen.append((arg, kc.arg))

    kc = Continuation(kcont.wq_softnet, func, 1)
    kc.schedule()
    rt.run_until_idle()
    kc.schedule()
    rt.run_until_idle()
    assert seen == [(1, 2), (2, 3)]


def test_setarg_with_lock_requires_holding_it(rt: SimRuntime) -> None:
    """Seed: with a lock, setarg must only be called when the lock is held (MutexError otherwise)."""
    lock = Mutex()
    kc = Continuation(kcont.wq_softnet, noop, 1, lock=lock)
    with pytest.raises(MutexError, match="setarg"):
        kc.set_arg(2)
    assert kc.arg == 1
    with lock:
        kc.set_arg(2)
    assert kc.arg == 2


def test_getmutex_returns_current_lock(rt: SimRuntime) -> None:
    """Seed: getmutex returns the lock currently associated."""
    a, b = Mutex(), Mutex()
    kc = Continuation(kcont.wq_softnet, noop, lock=a)
    assert kc.mutex is a
    with a:
        assert kc.set_mutex(b) is a
    assert kc.mutex is b


# -- exceptions in func ----------------------------------------------------------------------------


def test_exception_reraised_by_sim_after_bookkeeping(rt: SimRuntime) -> None:
    """§14: reraise=True re-raises out of step() after counting it and clearing INVOKING."""
    lock = Mutex()

    def boom(arg: Any, kc: Continuation[Any]) -> None:
        raise ValueError("boom")

    kc = Continuation(kcont.wq_softnet, boom, lock=lock)
    kc.schedule()
    with pytest.raises(ValueError, match="boom"):
        rt.step()
    assert kc.flags == "EXPIRED"
    assert not lock.locked()
    stats = rt.stats()["queues"]["wq_softnet"]
    assert stats["exceptions"] == 1 and stats["invoked"] == 1
    assert [e.event for e in rt.trace][-1] == "raise"
    kc.schedule()  # schedulable again


def test_exception_goes_to_handler_and_others_keep_running() -> None:
    """§14: func's exception goes to exception_handler(kc, exc), is counted, and never stops others."""
    rt = SimRuntime(reraise=False)
    handled: list[tuple[Any, BaseException]] = []
    rt.exception_handler = lambda kc, exc: handled.append((kc, exc))
    ran, func = recorder()
    err = RuntimeError("x")

    def boom(arg: Any, kc: Continuation[Any]) -> None:
        raise err

    bad = rt.continuation(kcont.wq_softnet, boom)
    good = rt.continuation(kcont.wq_softnet, func, "ok")
    bad.schedule(0, cpu=rt.cpus[0])
    good.schedule(0, cpu=rt.cpus[0])
    assert rt.run_until_idle() == 2
    assert handled == [(bad, err)]
    assert ran == ["ok"]
    assert rt.stats()["totals"]["exceptions"] == 1
    assert rt.stats()["cpus"][0]["exceptions"] == 1
    assert not bad.invoking
    bad.schedule()
    rt.run_until_idle()
    assert len(handled) == 2
    assert rt.shutdown().failed == 2


def test_default_exception_handler_logs_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """§14: the default handler logs the exception with its traceback on the 'kcont' logger."""
    rt = SimRuntime(reraise=False)

    def boom(arg: Any, kc: Continuation[Any]) -> None:
        raise KeyError("lost")

    kc = rt.continuation(kcont.wq_softnet, boom, name="boomer")
    kc.schedule()
    with caplog.at_level(logging.ERROR, logger="kcont"):
        rt.run_until_idle()
    records = [r for r in caplog.records if r.name == "kcont"]
    assert len(records) == 1
    assert records[0].exc_info is not None and records[0].exc_info[0] is KeyError
    assert "boomer" in records[0].getMessage()


def test_failing_exception_handler_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """§14: a handler that raises is itself logged; the runtime keeps going."""
    rt = SimRuntime(reraise=False)

    def bad_handler(kc: Any, exc: BaseException) -> None:
        raise RuntimeError("handler broke")

    rt.exception_handler = bad_handler

    def boom(arg: Any, kc: Continuation[Any]) -> None:
        raise ValueError

    ran, func = recorder()
    rt.continuation(kcont.wq_softnet, boom).schedule()
    rt.continuation(kcont.wq_softnet, func, 1).schedule()
    with caplog.at_level(logging.ERROR, logger="kcont"):
        assert rt.run_until_idle() == 2
    assert ran == [1]
    assert any("handler" in r.getMessage() for r in caplog.records)


def test_base_exception_always_reraised_by_sim() -> None:
    """§14: exceptions that are not Exception are re-raised even with reraise=False, after bookkeeping."""
    rt = SimRuntime(reraise=False)
    rt.exception_handler = lambda kc, exc: pytest.fail("handler must not see KeyboardInterrupt")

    def interrupt(arg: Any, kc: Continuation[Any]) -> None:
        raise KeyboardInterrupt

    kc = rt.continuation(kcont.wq_softnet, interrupt)
    kc.schedule()
    with pytest.raises(KeyboardInterrupt):
        rt.run_until_idle()
    assert kc.flags == "EXPIRED"
    assert rt.stats()["totals"]["exceptions"] == 1


# -- workqueues ------------------------------------------------------------------------------------


def test_acquire_same_criteria_returns_same_queue(rt: SimRuntime) -> None:
    """Seed/§12: same (pri, flags) -> same queue, with acquisitions counted."""
    a = kcont.kcont_workqueue_acquire(100, 0)
    b = rt.workqueue(100)
    assert a is b
    assert a.acquired == 2
    c = rt.workqueue(100, percpu=True)
    assert c is not a and c.percpu and not a.percpu
    assert c is rt.acquire_workqueue(100, kcont.WQ_PERCPU)
    assert rt.workqueue(101) is not a
    assert a in rt.workqueues and c in rt.workqueues


def test_acquired_queue_distinct_from_predefined_at_same_priority(rt: SimRuntime) -> None:
    """§12: acquired queues are distinct from the predefined ones, even at the same priority."""
    wq = rt.workqueue(kcont.PRI_SOFTNET, percpu=True)
    assert wq is not rt.predefined("wq_softnet")
    assert not wq.predefined and rt.predefined("wq_softnet").predefined


def test_release_counts_down_and_frees_on_last(rt: SimRuntime) -> None:
    """Seed: on the last release the queue is freed; the same criteria then give a new queue."""
    wq = rt.workqueue(100)
    rt.workqueue(100)
    wq.release()
    assert not wq.freed and wq.acquired == 1
    wq.release()
    assert wq.freed and wq.acquired == 0
    assert wq not in rt.workqueues
    assert wq.name not in rt.stats()["queues"]
    again = rt.workqueue(100)
    assert again is not wq and not again.freed


def test_last_release_with_bound_continuation_is_busy_and_changes_nothing(rt: SimRuntime) -> None:
    """§12: last release while continuations are bound is EBUSY and the queue stays usable."""
    ran, func = recorder()
    wq = rt.workqueue(100)
    kc = Continuation(wq, func, 1)
    with pytest.raises(BusyError, match="still bound") as info:
        wq.release()
    assert info.value.errno == errno.EBUSY
    assert wq.acquired == 1 and wq.bound == 1 and not wq.freed
    kc.schedule()
    second = Continuation(wq, func, 2)  # referenced: a collected one unbinds
    second.schedule()
    rt.run_until_idle()
    assert sorted(ran) == [1, 2]
    assert rt.workqueue(100) is wq  # still the registered queue
    wq.release()
    for k in [kc]:
        k.destroy()
    with pytest.raises(BusyError):
        wq.release()  # the second continuation is still bound


def test_release_after_destroying_bound_continuations_frees(rt: SimRuntime) -> None:
    """§12: destroy the bound continuations, then the last release frees the queue."""
    wq = rt.workqueue(100)
    kcs = [Continuation(wq, noop) for _ in range(3)]
    for kc in kcs:
        kc.destroy()
    wq.release()
    assert wq.freed


def test_release_predefined_is_einval(rt: SimRuntime) -> None:
    """§12: releasing a predefined queue is EINVAL."""
    with pytest.raises(InvalidArgumentError, match="predefined") as info:
        rt.predefined("wq_softnet").release()
    assert info.value.errno == errno.EINVAL


def test_over_release_is_refused(rt: SimRuntime) -> None:
    """§12: releasing more often than acquired is refused (EINVAL)."""
    wq = rt.workqueue(100)
    wq.release()
    with pytest.raises(WorkqueueReleasedError) as info:
        wq.release()
    assert info.value.errno == errno.EINVAL


def test_freed_queue_refuses_create(rt: SimRuntime) -> None:
    """§12: creating a continuation on a freed queue raises WorkqueueReleasedError."""
    wq = rt.workqueue(100)
    wq.release()
    with pytest.raises(WorkqueueReleasedError, match="released"):
        Continuation(wq, noop)
    assert wq.bound == 0


def test_workqueue_context_manager_releases(rt: SimRuntime) -> None:
    """A workqueue used with `with` is released on exit."""
    with rt.workqueue(100) as wq:
        assert not wq.freed
    assert wq.freed


@pytest.mark.parametrize(("name", "pri"), PREDEFINED)
def test_each_predefined_queue_dispatches_its_own(rt: SimRuntime, name: str, pri: int) -> None:
    """§6: each predefined queue has its priority and dispatches its own entries (no cross-wiring)."""
    handle = getattr(kcont, name)
    assert handle.name == name and handle.pri == pri and handle.percpu
    kc = Continuation(handle, noop, name=name)
    assert kc.wq.name == name and kc.wq.pri == pri and kc.wq.percpu
    kc.schedule(0, cpu=rt.cpus[1])
    rt.run_until_idle()
    queues = rt.stats()["queues"]
    assert queues[name]["invoked"] == 1 and queues[name]["scheduled"] == 1
    assert sum(q["invoked"] for q in queues.values()) == 1
    assert rt.stats()["cpus"][1]["invoked"] == 1


def test_predefined_queues_accept_any_cpu(rt: SimRuntime) -> None:
    """§6: all eight predefined queues are per-CPU, so ci never gets ENOENT on them."""
    for name, _ in PREDEFINED:
        for cpu in rt.cpus:
            kc = Continuation(getattr(kcont, name), noop)
            kc.schedule(0, cpu=cpu)
            assert kc.cpu is cpu
    assert rt.run_until_idle() == 16


def test_predefined_queue_handle_pickles_to_itself() -> None:
    """Predefined handles are runtime-independent constants; __reduce__ says they pickle by name."""
    assert pickle.loads(pickle.dumps(kcont.wq_softnet)) is kcont.wq_softnet


# -- context variables -----------------------------------------------------------------------------

_var: contextvars.ContextVar[str] = contextvars.ContextVar("kcont_test_var", default="unset")


def test_func_runs_in_context_captured_at_schedule(driver: Any) -> None:
    """§15: func sees the context of the caller of schedule."""
    seen: list[str] = []
    kc = Continuation(kcont.wq_softnet, lambda a, k: seen.append(_var.get()))
    token = _var.set("producer")
    try:
        kc.schedule()
    finally:
        _var.reset(token)
    driver.settle()
    assert seen == ["producer"]


def test_timer_keeps_context_of_the_arming_schedule(driver: Any) -> None:
    """§15: a timer runs in the context of the schedule that (last) armed it."""
    seen: list[str] = []
    kc = Continuation(kcont.wq_softnet, lambda a, k: seen.append(_var.get()))
    token = _var.set("first")
    kc.schedule(3)
    _var.set("second")
    kc.schedule(2)
    _var.set("later")
    driver.advance(4)
    _var.reset(token)
    assert seen == ["second"]


def test_context_changes_do_not_leak_between_invocations(driver: Any) -> None:
    """§15: each invocation runs in a fresh copy: its changes leak neither to the next nor out."""
    seen: list[str] = []

    def func(arg: Any, kc: Continuation[Any]) -> None:
        seen.append(_var.get())
        _var.set(f"changed{len(seen)}")

    kc = Continuation(kcont.wq_softnet, func)
    kc2 = Continuation(kcont.wq_softnet, func)
    token = _var.set("base")
    kc.schedule(0, cpu=driver.cpus[0])
    kc2.schedule(0, cpu=driver.cpus[0])
    driver.settle()
    kc.schedule(0, cpu=driver.cpus[0])
    driver.settle()
    assert _var.get() == "base"
    _var.reset(token)
    assert seen == ["base", "base", "base"]


_obj_var: contextvars.ContextVar[object] = contextvars.ContextVar("kcont_test_obj_var")


class _NoEquality:
    """A value whose ``==`` raises, as a numpy array's truth value does."""

    def __eq__(self, other: object) -> bool:
        raise ValueError("the truth value of this comparison is ambiguous")

    __hash__ = object.__hash__


def test_timers_get_the_captured_objects_not_equal_ones(driver: Any) -> None:
    """§15: captures are shared only when they bind the very same objects: two
    timers armed with distinct but equal values each get their own."""
    seen: list[tuple[str, object]] = []
    first, second = {}, {}  # equal, not identical
    a = Continuation(kcont.wq_softnet, lambda arg, k: seen.append(("a", _obj_var.get())))
    b = Continuation(kcont.wq_softnet, lambda arg, k: seen.append(("b", _obj_var.get())))
    token = _obj_var.set(first)
    a.schedule(2)
    _obj_var.set(second)
    b.schedule(2)
    _obj_var.reset(token)
    driver.advance(3)
    got = dict(seen)
    assert len(seen) == 2 and got["a"] is first and got["b"] is second


def test_context_values_are_never_compared_with_eq(driver: Any) -> None:
    """§15: re-arming with a context value whose ``==`` raises neither raises
    nor loses the value: the timer runs with the object of the last arming."""
    seen: list[object] = []
    kc = Continuation(kcont.wq_softnet, lambda arg, k: seen.append(_obj_var.get()))
    old, new = _NoEquality(), _NoEquality()
    token = _obj_var.set(old)
    kc.schedule(3)
    _obj_var.set(new)
    kc.schedule(2)
    _obj_var.reset(token)
    driver.advance(3)
    assert len(seen) == 1 and seen[0] is new


def test_context_captured_inside_func_is_the_func_context(rt: SimRuntime) -> None:
    """§15: a schedule made inside func captures func's (modified) context."""
    seen: list[str] = []
    child = Continuation(kcont.wq_softnet, lambda a, k: seen.append(_var.get()))

    def parent(arg: Any, kc: Continuation[Any]) -> None:
        _var.set("from-parent")
        child.schedule()

    Continuation(kcont.wq_softnet, parent).schedule()
    rt.run_until_idle()
    assert seen == ["from-parent"]
    assert _var.get() == "unset"


# -- current runtime -------------------------------------------------------------------------------


def test_no_runtime_is_an_error() -> None:
    """§16: with no runtime entered, current_runtime() and predefined-queue creation raise."""
    with pytest.raises(NoRuntimeError):
        kcont.current_runtime()
    with pytest.raises(NoRuntimeError):
        Continuation(kcont.wq_softnet, noop)
    with pytest.raises(NoRuntimeError):
        kcont.kcont_workqueue_acquire(100, 0)


def test_innermost_entered_runtime_is_current() -> None:
    """§16: inside `with rt:` it is current; nested `with` wins; leaving restores the outer one."""
    a, b = SimRuntime(name="a"), SimRuntime(name="b")
    with a:
        assert kcont.current_runtime() is a
        with b:
            assert kcont.current_runtime() is b
            assert Continuation(kcont.wq_softnet, noop).runtime is b
        assert kcont.current_runtime() is a
    with pytest.raises(NoRuntimeError):
        kcont.current_runtime()


def test_runtime_entered_by_another_thread_is_current() -> None:
    """§16: a thread that entered nothing sees the runtime most recently entered by any thread."""
    rt = SimRuntime()
    entered, done = threading.Event(), threading.Event()

    def owner() -> None:
        with rt:
            entered.set()
            done.wait(10)

    t = threading.Thread(target=owner)
    t.start()
    try:
        assert entered.wait(10)
        assert kcont.current_runtime() is rt
    finally:
        done.set()
        t.join(10)
    with pytest.raises(NoRuntimeError):
        kcont.current_runtime()


def test_function_runs_in_its_continuations_runtime() -> None:
    """§16: a thread running a continuation is in that continuation's runtime."""
    a, b = SimRuntime(), SimRuntime()
    seen: list[Any] = []
    kc = a.continuation(kcont.wq_softnet, lambda arg, k: seen.append((kcont.current_runtime(), k.cpu)))
    kc.schedule(0, cpu=a.cpus[1])
    with b:
        a.run_until_idle()
        assert kcont.current_runtime() is b
    assert seen == [(a, a.cpus[1])]


def test_leaving_sim_runtime_does_not_shut_it_down() -> None:
    """§16: after `with SimRuntime()` the runtime can still be scheduled and stepped."""
    ran, func = recorder()
    rt = SimRuntime()
    with rt:
        kc = Continuation(kcont.wq_softnet, func, 1)
    kc.schedule(1)
    rt.advance(1)
    assert ran == [1]


# -- SimRuntime determinism ------------------------------------------------------------------------


def test_round_robin_is_the_default_cpu_choice(rt: SimRuntime) -> None:
    """sim: without a seed, step() serves CPUs round robin."""
    where: list[int] = []
    wq = rt.workqueue(100)
    for i in range(4):
        Continuation(wq, lambda a, k: where.append(kcont.curcpu().index), i).schedule()
    rt.run_until_idle()
    assert where == [0, 1, 0, 1]


def _scenario(seed: int | None) -> list[kcont.TraceEvent]:
    rt = SimRuntime(ncpu=3, seed=seed, trace=True, reraise=True)
    lock = Mutex()
    shared = rt.workqueue(100)
    for i in range(6):
        kc = rt.continuation(shared, noop, name=f"s{i}", lock=lock if i % 2 else None)
        kc.schedule(i % 3)
        per = rt.continuation(kcont.wq_softnet, noop, name=f"p{i}")
        with kcont.bind_cpu(rt.cpus[i % 3]):
            per.schedule(i % 2)
    rt.advance(4)
    return rt.trace


def test_same_seed_gives_same_trace() -> None:
    """sim: the same seed always gives the same interleaving, hence the same trace."""
    for seed in (None, 1, 7):
        assert _scenario(seed) == _scenario(seed)


def test_seeds_change_the_interleaving() -> None:
    """sim: the seed does drive the CPU choice (some seeds give different traces)."""
    traces = {tuple(_scenario(seed)) for seed in range(8)}
    assert len(traces) > 1
    for trace in traces:
        assert sorted(e.name for e in trace if e.event == "start") == sorted(
            [f"s{i}" for i in range(6)] + [f"p{i}" for i in range(6)]
        )


def test_trace_records_lifecycle_events(rt: SimRuntime) -> None:
    """sim: the trace records schedule, expire, park, start, end, stop, destroy with tick and CPU."""
    lock = Mutex()
    kc = Continuation(kcont.wq_softnet, noop, lock=lock, name="k")
    kc.schedule(1, cpu=rt.cpus[1])
    with lock:
        rt.advance(1)
    rt.run_until_idle()
    kc.schedule(2)
    kc.stop()
    kc.destroy()
    events = [(e.tick, e.event, e.cpu) for e in rt.trace if e.name == "k"]
    assert events == [
        (0, "schedule", 1),
        (1, "expire", 1),
        (1, "park", 1),
        (1, "start", 1),
        (1, "end", 1),
        (1, "schedule", 0),
        (1, "stop", 0),
        (1, "destroy", 0),
    ]
    assert rt.trace[0].detail == 1

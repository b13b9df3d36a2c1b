"""Ordering rules (docs/semantics.md §6, §10, §11): FIFO per {wq, lock, ci}, timers by
(expiry tick, schedule order), priorities, lock-aware parking, shared queues, non-reentrancy."""

from __future__ import annotations

from typing import Any

import pytest

import kcont
from kcont import Continuation, Mutex, SimRuntime
from kcont._core import dispatch as _dispatch
from kcont._core import workqueue as _workqueue


def worker_pass(rt: SimRuntime, cpu: kcont.CPU) -> Any:
    """One pass of a (simulated) second worker of ``cpu``: the shared dispatch function,
    called on ``cpu`` while the simulator is inside another continuation's function."""
    with kcont.bind_cpu(cpu):
        if hasattr(_dispatch, "dispatch"):
            return _dispatch.dispatch(rt, cpu, _workqueue.ALL_BANDS)
        return _dispatch.run_one(rt, cpu, cpu.rqs)  # type: ignore[attr-defined]  # older core


def make(wq: Any, log: list[Any], name: str, lock: Mutex | None = None) -> Continuation[Any]:
    """A continuation that appends its name to ``log`` when it starts."""
    return Continuation(wq, lambda arg, kc: log.append(arg), name, lock=lock, name=name)


# -- FIFO per {wq, lock, ci} -----------------------------------------------------------------------


def test_fifo_same_lock_starts_in_schedule_order(driver: Any) -> None:
    """Seed: continuations sharing {wq, lock, ci} are processed in the order they were scheduled."""
    log: list[str] = []
    lock = Mutex()
    kcs = [make(kcont.wq_prihigh, log, f"k{i}", lock) for i in range(8)]
    for kc in reversed(kcs[4:]):
        kc.schedule(0, cpu=driver.cpus[1])
    for kc in kcs[:4]:
        kc.schedule(0, cpu=driver.cpus[1])
    driver.settle()
    assert log == ["k7", "k6", "k5", "k4", "k0", "k1", "k2", "k3"]


def test_fifo_lockless_per_cpu_soft_queue(driver: Any) -> None:
    """§10: lock=None is one group per {wq, ci}: start order is schedule order."""
    log: list[str] = []
    kcs = [make(kcont.wq_softnet, log, f"k{i}") for i in range(6)]
    for i in (3, 1, 4, 0, 5, 2):
        kcs[i].schedule(0, cpu=driver.cpus[0])
    driver.settle()
    assert log == ["k3", "k1", "k4", "k0", "k5", "k2"]


def test_ready_order_holds_across_keys_when_nothing_waits(rt: SimRuntime) -> None:
    """§10: while nothing waits, a run queue is a plain FIFO across locks too."""
    log: list[str] = []
    l1, l2 = Mutex(), Mutex()
    order = [("a", l1), ("b", l2), ("c", None), ("d", l1), ("e", None), ("f", l2)]
    for name, lock in order:
        make(kcont.wq_softnet, log, name, lock).schedule(0, cpu=rt.cpus[0])
    rt.run_until_idle()
    assert log == ["a", "b", "c", "d", "e", "f"]


def test_reschedule_moves_to_back_of_its_key(rt: SimRuntime) -> None:
    """§10: order is the order of the last schedule (ack + re-schedule of a queued entry)."""
    log: list[str] = []
    a, b, c = (make(kcont.wq_softnet, log, n) for n in "abc")
    for kc in (a, b, c):
        kc.schedule(0)
    a.ack()
    a.schedule(0)
    rt.run_until_idle()
    assert log == ["b", "c", "a"]


# -- timers ----------------------------------------------------------------------------------------


def test_timers_ready_order_is_expiry_tick_then_schedule_order(rt: SimRuntime) -> None:
    """§10: same key: expiry tick first, then the order of their last schedule."""
    log: list[str] = []
    a, b, c, d = (make(kcont.wq_softnet, log, n) for n in "abcd")
    a.schedule(3)
    b.schedule(2)
    c.schedule(3)
    d.schedule(2)
    a.schedule(3)  # re-armed last: behind c at tick 3
    rt.advance(3)
    assert log == ["b", "d", "c", "a"]


def test_timer_expiring_runs_after_entries_already_ready(rt: SimRuntime) -> None:
    """§10: ready order: entries made ready earlier start first, whatever their kind."""
    log: list[str] = []
    timer, later = make(kcont.wq_softnet, log, "timer"), make(kcont.wq_softnet, log, "later")
    stall = Mutex()
    first = make(kcont.wq_softnet, log, "first", stall)
    timer.schedule(1)
    with stall:
        first.schedule(0)
        rt.advance(1)  # first parks, timer runs
    later.schedule(0)
    rt.run_until_idle()
    assert log == ["timer", "first", "later"]


def test_same_tick_order_survives_epoch_cascade(rt: SimRuntime) -> None:
    """§10/§17: a far timer (cascaded) and a near timer due at the same tick keep arming order."""
    log: list[str] = []
    far, near = make(kcont.wq_softnet, log, "far"), make(kcont.wq_softnet, log, "near")
    far.schedule(2000)  # armed in a later epoch of the 1024-tick wheel
    rt.advance(1100)
    near.schedule(900)  # same deadline, armed after the cascade
    assert far.deadline == near.deadline == 2000
    rt.advance(900)
    assert log == ["far", "near"]


def test_timers_of_different_priority_same_tick_by_priority(rt: SimRuntime) -> None:
    """§6: at one tick, the higher-priority queue's timer starts first even if armed later."""
    log: list[str] = []
    make(kcont.wq_prilow, log, "low").schedule(2)
    make(kcont.wq_softserial, log, "high").schedule(2)
    rt.advance(2)
    assert log == ["high", "low"]


# -- priorities ----------------------------------------------------------------------------------


def test_priority_higher_first_on_a_cpu(rt: SimRuntime) -> None:
    """§6: on a CPU, the ready entry of the highest-priority queue starts first."""
    log: list[str] = []
    names = ["wq_prilow", "wq_primedlow", "wq_primedhigh", "wq_prihigh"]
    names += ["wq_softclock", "wq_softbio", "wq_softnet", "wq_softserial"]
    for name in names:  # lowest first
        make(getattr(kcont, name), log, name).schedule(0, cpu=rt.cpus[0])
    while rt.step(rt.cpus[0]) is not None:
        pass
    assert log == list(reversed(names))


def test_priority_is_per_cpu(rt: SimRuntime) -> None:
    """§6: a high-priority entry on another CPU does not delay this CPU's low-priority one."""
    log: list[str] = []
    make(kcont.wq_softserial, log, "high1").schedule(0, cpu=rt.cpus[1])
    make(kcont.wq_prilow, log, "low0").schedule(0, cpu=rt.cpus[0])
    assert rt.step(rt.cpus[0]) is not None
    assert log == ["low0"]


def test_priority_equal_queues_served_in_creation_order(rt: SimRuntime) -> None:
    """§6: queues of equal priority are served in creation order, predefined first."""
    log: list[str] = []
    first = rt.workqueue(100)  # shared
    second = rt.workqueue(100, percpu=True)
    make(second, log, "second").schedule(0, cpu=rt.cpus[0])
    make(first, log, "first").schedule(0)
    mine = rt.workqueue(kcont.PRI_SOFTNET, percpu=True)
    make(mine, log, "acquired-softnet").schedule(0, cpu=rt.cpus[0])
    make(kcont.wq_softnet, log, "wq_softnet").schedule(0, cpu=rt.cpus[0])
    while rt.step(rt.cpus[0]) is not None:
        pass
    assert log == ["wq_softnet", "acquired-softnet", "first", "second"]


def test_priority_acquired_queue_between_predefined(rt: SimRuntime) -> None:
    """§6: one integer scale: an acquired queue at pri 150 runs between prihigh and softclock."""
    log: list[str] = []
    make(kcont.wq_prihigh, log, "prihigh").schedule(0, cpu=rt.cpus[0])
    make(rt.workqueue(150, percpu=True), log, "p150").schedule(0, cpu=rt.cpus[0])
    make(kcont.wq_softclock, log, "softclock").schedule(0, cpu=rt.cpus[0])
    make(rt.workqueue(kcont.PRI_SOFT_MIN), log, "softmin").schedule(0)
    while rt.step(rt.cpus[0]) is not None:
        pass
    assert log == ["softclock", "softmin", "p150", "prihigh"]


# -- lock-aware dispatch: parking ------------------------------------------------------------------


def test_busy_lock_parks_only_its_own_subqueue(rt: SimRuntime) -> None:
    """Seed: if acquiring the lock would block, continuations depending on other locks run meanwhile."""
    log: list[str] = []
    busy, other = Mutex("busy"), Mutex("other")
    with busy:
        for name, lock in [("a", busy), ("b", None), ("c", busy), ("d", other)]:
            make(kcont.wq_softnet, log, name, lock).schedule(0, cpu=rt.cpus[0])
        assert rt.run_until_idle() == 2
        assert log == ["b", "d"]
        assert rt.stats()["queues"]["wq_softnet"]["lock_waits"] == 1
        assert rt.stats()["queues"]["wq_softnet"]["depth"] == 2
    rt.run_until_idle()
    assert log == ["b", "d", "a", "c"]


def test_parked_subqueue_resumes_ahead_of_younger_entries(rt: SimRuntime) -> None:
    """§10: a woken sub-queue resumes ahead of entries that became ready after it."""
    log: list[str] = []
    busy = Mutex()
    with busy:
        make(kcont.wq_softnet, log, "a", busy).schedule(0)
        make(kcont.wq_softnet, log, "c", busy).schedule(0)
        rt.run_until_idle()
        make(kcont.wq_softnet, log, "e", busy).schedule(0)  # same key, younger
        make(kcont.wq_softnet, log, "f").schedule(0)  # other key, younger
    make(kcont.wq_softnet, log, "g", busy).schedule(0)
    rt.run_until_idle()
    assert log == ["a", "c", "e", "f", "g"]


def test_parked_entries_are_not_retried_while_lock_held(rt: SimRuntime) -> None:
    """§10: no polling: a parked sub-queue is not retried until the Mutex is released."""
    log: list[str] = []
    busy = Mutex()
    with busy:
        make(kcont.wq_softnet, log, "a", busy).schedule(0)
        for _ in range(3):
            rt.run_until_idle()
        rt.advance(3)
        assert rt.stats()["queues"]["wq_softnet"]["lock_waits"] == 1
        assert rt.step() is None
    assert rt.step() is not None  # the release alone made it runnable
    assert log == ["a"]


def test_releasing_another_mutex_does_not_wake(rt: SimRuntime) -> None:
    """§10: only the release of the lock a sub-queue parked on wakes it."""
    log: list[str] = []
    busy, unrelated = Mutex(), Mutex()
    with busy:
        make(kcont.wq_softnet, log, "a", busy).schedule(0)
        rt.run_until_idle()
        with unrelated:
            pass
        assert rt.run_until_idle() == 0
    assert rt.run_until_idle() == 1


def test_lock_retaken_before_dispatch_parks_again(rt: SimRuntime) -> None:
    """§10: a woken sub-queue whose lock was taken again parks again, in order."""
    log: list[str] = []
    busy = Mutex()
    with busy:
        make(kcont.wq_softnet, log, "a", busy).schedule(0)
        make(kcont.wq_softnet, log, "b", busy).schedule(0)
        rt.run_until_idle()
    with busy:  # released and re-acquired with no dispatch in between
        make(kcont.wq_softnet, log, "x").schedule(0)
        assert rt.run_until_idle() == 1
        assert log == ["x"]
    rt.run_until_idle()
    assert log == ["x", "a", "b"]
    assert rt.stats()["queues"]["wq_softnet"]["lock_waits"] == 2


def test_lock_held_by_a_function_parks_others(rt: SimRuntime) -> None:
    """§10: a Mutex kept by a continuation's function parks the sub-queue until it is released."""
    log: list[str] = []
    shared = Mutex()
    taker = Continuation(kcont.wq_softserial, lambda a, k: shared.acquire())
    giver = Continuation(kcont.wq_prilow, lambda a, k: shared.release())
    waiter = make(kcont.wq_softnet, log, "w", shared)
    taker.schedule(0, cpu=rt.cpus[0])
    rt.run_until_idle()
    waiter.schedule(0, cpu=rt.cpus[0])
    assert rt.run_until_idle() == 0
    giver.schedule(0, cpu=rt.cpus[1])
    rt.run_until_idle()
    assert log == ["w"]


def test_same_lock_on_two_cpus_parks_both_and_both_resume(rt: SimRuntime) -> None:
    """§10: the release wakes every sub-queue parked on that Mutex, on every CPU."""
    log: list[str] = []
    busy = Mutex()
    with busy:
        make(kcont.wq_softnet, log, "c0", busy).schedule(0, cpu=rt.cpus[0])
        make(kcont.wq_softnet, log, "c1", busy).schedule(0, cpu=rt.cpus[1])
        rt.run_until_idle()
        assert rt.stats()["totals"]["lock_waits"] == 2
    rt.run_until_idle()
    assert sorted(log) == ["c0", "c1"]


# -- shared queues ---------------------------------------------------------------------------------


def test_shared_queue_served_by_any_cpu(rt: SimRuntime) -> None:
    """Seed: ci=None on a queue without per-CPU queues runs on the next available CPU."""
    where: list[tuple[str, int]] = []
    wq = rt.workqueue(100)
    for name in "abc":
        Continuation(wq, lambda arg, kc: where.append((arg, kcont.curcpu().index)), name).schedule()
    assert rt.step(rt.cpus[1]) is not None
    assert rt.step(rt.cpus[0]) is not None
    assert rt.step(rt.cpus[1]) is not None
    assert where == [("a", 1), ("b", 0), ("c", 1)]


def test_shared_queue_all_entries_run(driver: Any) -> None:
    """§5: a shared queue's entries all run once, on some CPU (first free)."""
    seen: list[tuple[int, int]] = []
    wq = driver.rt.workqueue(100)
    for i in range(10):
        Continuation(wq, lambda arg, kc: seen.append((arg, kcont.curcpu().index)), i).schedule()
    driver.settle()
    assert sorted(i for i, _ in seen) == list(range(10))
    assert {cpu for _, cpu in seen} <= {c.index for c in driver.cpus}


# -- non-reentrancy --------------------------------------------------------------------------------


def test_rescheduled_continuation_does_not_start_twice_at_once(rt: SimRuntime) -> None:
    """§2/§11: a continuation that acks and re-schedules itself starts again only after it returns."""
    count = 0

    def func(arg: Any, kc: Continuation[Any]) -> None:
        nonlocal count
        count += 1
        if count < 4:
            kc.ack()
            kc.schedule(0, cpu=rt.cpus[count % 2])
            assert kc.running and kc.queued

    kc = Continuation(kcont.wq_softnet, func, name="self")
    kc.schedule(0, cpu=rt.cpus[0])
    rt.run_until_idle()
    events = [(e.event, e.cpu) for e in rt.trace if e.name == "self" and e.event in ("start", "end")]
    assert events == [("start", 0), ("end", 0), ("start", 1), ("end", 1)] * 2


def test_entry_waits_while_its_continuation_runs_elsewhere(rt: SimRuntime) -> None:
    """§11: an entry whose continuation is still RUNNING parks its sub-queue; other keys run.

    A second CPU worker is simulated by calling the shared dispatch function from inside func."""
    log: list[str] = []
    other_lock = Mutex()
    same_key = make(kcont.wq_softnet, log, "same-key")
    other_key = make(kcont.wq_softnet, log, "other-key", other_lock)
    observed: list[Any] = []

    def func(arg: Any, kc: Continuation[Any]) -> None:
        log.append("self")
        if log.count("self") > 1:
            return
        kc.ack()
        kc.schedule(0, cpu=rt.cpus[1])
        same_key.schedule(0, cpu=rt.cpus[1])
        other_key.schedule(0, cpu=rt.cpus[1])
        observed.append(worker_pass(rt, rt.cpus[1]))
        observed.append(worker_pass(rt, rt.cpus[1]))
        assert kcont.curcpu() is rt.cpus[0]

    kc = Continuation(kcont.wq_softnet, func, name="self")
    kc.schedule(0, cpu=rt.cpus[0])
    rt.step(rt.cpus[0])
    assert observed == [other_key, None]
    assert log == ["self", "other-key"]
    assert rt.stats()["queues"]["wq_softnet"]["reentry_waits"] == 1
    rt.run_until_idle()  # the end of the first run woke the sub-queue
    assert log == ["self", "other-key", "self", "same-key"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_starts_and_ends_never_interleave_for_one_continuation(seed: int) -> None:
    """§2: one continuation never has two invocations running at once, whatever the CPU choice."""
    rt = SimRuntime(ncpu=3, seed=seed, trace=True, reraise=True)
    counts: dict[str, int] = {}

    def func(arg: Any, kc: Continuation[Any]) -> None:
        counts[arg] = counts.get(arg, 0) + 1
        if counts[arg] < 5:
            kc.ack()
            kc.schedule(counts[arg] % 2, cpu=rt.cpus[counts[arg] % 3])

    for name in "xyz":
        rt.continuation(kcont.wq_softnet, func, name, name=name).schedule()
    rt.advance(10)
    assert counts == {"x": 5, "y": 5, "z": 5}
    running: set[str] = set()
    for event in rt.trace:
        if event.event == "start":
            assert event.name not in running
            running.add(event.name)
        elif event.event == "end":
            running.remove(event.name)


def test_priority_order_kept_when_queues_come_and_go(rt: SimRuntime) -> None:
    """§6: creating or freeing a queue while entries wait keeps every CPU's priority order."""
    log: list[str] = []
    low = rt.workqueue(80, percpu=True)
    lowest = rt.workqueue(70)  # shared
    for_low, for_lowest = make(low, log, "pri80"), make(lowest, log, "pri70")
    for_low.schedule(0, cpu=rt.cpus[0])
    for_lowest.schedule()
    mid = rt.workqueue(90, percpu=True)  # ranks above the waiting entries shift
    for_mid = make(mid, log, "pri90")
    for_mid.schedule(0, cpu=rt.cpus[0])
    while rt.step(rt.cpus[0]) is not None:
        pass
    assert log == ["pri90", "pri80", "pri70"]
    log.clear()
    gone = rt.workqueue(85, percpu=True)
    for kc in (for_lowest, for_low, for_mid):
        kc.schedule(0, cpu=None if kc is for_lowest else rt.cpus[0])
    gone.release()  # freed while entries of lower queues wait
    make(rt.workqueue(95), log, "pri95").schedule()
    while rt.step(rt.cpus[0]) is not None:
        pass
    assert log == ["pri95", "pri90", "pri80", "pri70"]
    assert rt.run_until_idle() == 0

"""Timers: the hashed timing wheel on its own, then timers through the runtime
(docs/semantics.md §5 "never earlier", §10 "(expiry tick, schedule order)", §17)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kcont
from kcont import Continuation, SimRuntime
from kcont._core.timerwheel import NEAR_SIZE
from kcont._core.timerwheel import PyTimerWheel as TimerWheel  # the reference, with stand-in entries


class Entry:
    """The slots the wheel uses on a continuation."""

    __slots__ = ("_bucket", "_deadline", "name")

    def __init__(self, name: str) -> None:
        self._bucket: Any = None
        self._deadline = 0
        self.name = name

    def __repr__(self) -> str:
        return self.name


def expire(wheel: TimerWheel, tick: int) -> list[str]:
    out: list[Any] = []
    wheel.expire_until(tick, out)
    assert wheel.now == tick
    return [e.name for e in out]


def stored(wheel: TimerWheel) -> int:
    """Entries physically held in the buckets."""
    return sum(len(b) for b in wheel.near) + sum(len(b) for b in wheel.far.values())


# -- TimerWheel ------------------------------------------------------------------------------------


def test_wheel_never_early_and_exact_tick() -> None:
    """An entry expires exactly at its deadline tick, not one tick earlier."""
    wheel = TimerWheel()
    wheel.arm(Entry("a"), 5)
    assert expire(wheel, 4) == []
    assert expire(wheel, 5) == ["a"]
    assert expire(wheel, 100) == []
    assert len(wheel) == 0 and stored(wheel) == 0


def test_wheel_same_tick_in_arming_order() -> None:
    """Entries due at one tick expire in the order they were armed."""
    wheel = TimerWheel()
    for name in "cab":
        wheel.arm(Entry(name), 7)
    assert expire(wheel, 7) == ["c", "a", "b"]


def test_wheel_rearm_same_tick_moves_to_end() -> None:
    """Re-arming moves an entry behind those armed since (order of the last schedule)."""
    wheel = TimerWheel()
    a, b = Entry("a"), Entry("b")
    wheel.arm(a, 3)
    wheel.arm(b, 3)
    wheel.arm(a, 3)
    assert len(wheel) == 2
    assert expire(wheel, 3) == ["b", "a"]


def test_wheel_collects_in_deadline_order_over_a_span() -> None:
    """One expire_until over many ticks returns entries by deadline, then arming order."""
    wheel = TimerWheel()
    for name, deadline in [("x", 9), ("y", 2), ("z", 9), ("w", 5)]:
        wheel.arm(Entry(name), deadline)
    assert expire(wheel, 10) == ["y", "w", "x", "z"]


def test_wheel_rearm_earlier_and_later() -> None:
    """Re-arming replaces the deadline, earlier or later; the count does not change."""
    wheel = TimerWheel()
    early, late = Entry("early"), Entry("late")
    wheel.arm(early, 50)
    wheel.arm(late, 10)
    wheel.arm(early, 5)
    wheel.arm(late, 60)
    assert len(wheel) == 2 and stored(wheel) == 2
    assert expire(wheel, 10) == ["early"]
    assert expire(wheel, 59) == []
    assert expire(wheel, 60) == ["late"]


@pytest.mark.parametrize("deadline", [3, NEAR_SIZE - 1, NEAR_SIZE, 5000, 10**6])
def test_wheel_disarm_removes_at_once(deadline: int) -> None:
    """Disarm removes the entry at once: count and buckets are empty, nothing fires."""
    wheel = TimerWheel()
    e = Entry("e")
    wheel.arm(e, deadline)
    wheel.disarm(e)
    assert len(wheel) == 0 and stored(wheel) == 0
    assert wheel.far == {}
    assert list(wheel) == []
    assert e._bucket is None
    assert wheel.next_deadline() is None
    assert expire(wheel, deadline + 1) == []


def test_wheel_disarm_keeps_others_of_the_same_bucket() -> None:
    """Disarming one entry of a far bucket keeps the others and their order."""
    wheel = TimerWheel()
    a, b, c = Entry("a"), Entry("b"), Entry("c")
    for e in (a, b, c):
        wheel.arm(e, 3000)
    wheel.disarm(b)
    assert len(wheel) == 2
    assert expire(wheel, 3000) == ["a", "c"]


@pytest.mark.parametrize(
    "deadline", [NEAR_SIZE - 1, NEAR_SIZE, NEAR_SIZE + 1, 2 * NEAR_SIZE - 1, 2 * NEAR_SIZE, 5000, 123_457]
)
def test_wheel_far_deadline_cascades_exactly(deadline: int) -> None:
    """Deadlines beyond the current 1024-tick epoch fire exactly at their tick."""
    wheel = TimerWheel()
    wheel.arm(Entry("far"), deadline)
    assert expire(wheel, deadline - 1) == []
    assert len(wheel) == 1
    assert expire(wheel, deadline) == ["far"]
    assert len(wheel) == 0 and stored(wheel) == 0


def test_wheel_far_entries_keep_arming_order_within_a_tick() -> None:
    """The cascade keeps arming order: far entries, then near ones armed after entering the epoch."""
    wheel = TimerWheel()
    for name in ("f1", "f2", "f3"):
        wheel.arm(Entry(name), 3000)
    wheel.arm(Entry("other"), 3001)
    assert expire(wheel, 2100) == []  # the epoch of 3000 is entered: cascaded
    wheel.arm(Entry("n1"), 3000)
    wheel.arm(Entry("n0"), 2999)
    assert expire(wheel, 3001) == ["n0", "f1", "f2", "f3", "n1", "other"]


def test_wheel_jumps_over_long_idle_gaps() -> None:
    """Catching up over a long empty stretch does not skip a far entry, nor fire early."""
    wheel = TimerWheel()
    wheel.arm(Entry("a"), 5000)
    wheel.arm(Entry("b"), 10**7)
    assert expire(wheel, 10**7 - 1) == ["a"]
    wheel.arm(Entry("c"), 10**7)
    assert expire(wheel, 10**7) == ["b", "c"]
    wheel.arm(Entry("d"), 10**7 + 1)  # near again after the jump
    assert expire(wheel, 10**9) == ["d"]


def test_wheel_created_mid_epoch() -> None:
    """A wheel starting at an arbitrary tick handles near and far deadlines."""
    wheel = TimerWheel(now=1500)
    wheel.arm(Entry("near"), 1600)
    wheel.arm(Entry("far"), 2100)
    assert expire(wheel, 2047) == ["near"]
    assert expire(wheel, 2100) == ["far"]


def test_wheel_next_deadline() -> None:
    """next_deadline: None when empty; exact in the current epoch; else the first tick of its epoch."""
    wheel = TimerWheel()
    assert wheel.next_deadline() is None
    wheel.arm(Entry("far"), 5000)
    assert wheel.next_deadline() == 4 * NEAR_SIZE
    wheel.arm(Entry("near"), 40)
    assert wheel.next_deadline() == 40
    expire(wheel, 40)
    assert wheel.next_deadline() == 4 * NEAR_SIZE
    expire(wheel, 4 * NEAR_SIZE)
    assert wheel.next_deadline() == 5000


def test_wheel_rearm_of_far_entry_leaves_no_empty_bucket() -> None:
    """Re-arming a far entry elsewhere removes its old far bucket (as disarm does), so
    next_deadline stays the first tick of the earliest entry's epoch."""
    wheel = TimerWheel()
    e = Entry("e")
    wheel.arm(e, 3000)
    wheel.arm(e, 5000)
    assert list(wheel.far) == [4]
    assert wheel.next_deadline() == 4 * NEAR_SIZE


operations = st.lists(
    st.one_of(
        st.tuples(st.just("arm"), st.integers(0, 7), st.integers(1, 5000)),
        st.tuples(st.just("disarm"), st.integers(0, 7), st.just(0)),
        st.tuples(st.just("expire"), st.just(0), st.integers(0, 3000)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(operations)
def test_wheel_matches_reference(ops: list[tuple[str, int, int]]) -> None:
    """Against a dict model: expiry at the exact tick, in (deadline, last arm) order; count and
    next_deadline (a lower bound, never past the earliest deadline, never in the past)."""
    wheel = TimerWheel()
    entries = [Entry(f"e{i}") for i in range(8)]
    model: dict[int, tuple[int, int]] = {}  # index -> (deadline, arm sequence)
    seq = 0
    for op, i, value in ops:
        if op == "arm":
            deadline = wheel.now + value
            wheel.arm(entries[i], deadline)
            seq += 1
            model[i] = (deadline, seq)
        elif op == "disarm" and i in model:
            wheel.disarm(entries[i])
            del model[i]
        elif op == "expire":
            tick = wheel.now + value
            due = sorted((d, s, i) for i, (d, s) in model.items() if d <= tick)
            assert expire(wheel, tick) == [f"e{i}" for _, _, i in due]
            for _, _, i in due:
                del model[i]
        assert len(wheel) == len(model) == stored(wheel)
        nd = wheel.next_deadline()
        if model:
            assert nd is not None and wheel.now < nd <= min(d for d, _ in model.values())
        else:
            assert nd is None


# -- timers through the runtime --------------------------------------------------------------------


@pytest.mark.parametrize("nticks", [1, 2, 7, NEAR_SIZE - 1, NEAR_SIZE, NEAR_SIZE + 1, 3000])
def test_timer_fires_exactly_nticks_later(rt: SimRuntime, nticks: int) -> None:
    """§5: armed at tick t with nticks, it runs at t+nticks, never earlier."""
    ticks: list[int] = []
    kc = Continuation(kcont.wq_softclock, lambda a, k: ticks.append(rt.ticks))
    rt.advance(3)
    kc.schedule(nticks)
    rt.advance(nticks - 1)
    assert ticks == []
    rt.advance(1)
    assert ticks == [3 + nticks]


def test_nticks_one_means_next_tick(rt: SimRuntime) -> None:
    """§5: nticks=1 means at the next tick boundary."""
    ticks: list[int] = []
    kc = Continuation(kcont.wq_softclock, lambda a, k: ticks.append(rt.ticks))
    kc.schedule(1)
    assert rt.run_until_idle() == 0
    rt.advance(1)
    assert ticks == [1]


def test_timer_armed_from_func_counts_from_the_current_tick(rt: SimRuntime) -> None:
    """§5: a periodic handler re-arming with nticks=n runs every n ticks."""
    ticks: list[int] = []

    def tick(arg: Any, kc: Continuation[Any]) -> None:
        ticks.append(rt.ticks)
        kc.ack()
        kc.schedule(4)

    kc = Continuation(kcont.wq_softclock, tick)
    kc.schedule(4)
    rt.advance(17)
    assert ticks == [4, 8, 12, 16]
    assert kc.deadline == 20


def test_late_counter_is_zero_in_the_simulator(rt: SimRuntime) -> None:
    """sim: virtual time never makes a timer late."""
    kcs = [Continuation(kcont.wq_softnet, lambda a, k: None) for _ in range(20)]
    for i, kc in enumerate(kcs):
        kc.schedule(1 + (i * 97) % 2100, cpu=rt.cpus[i % 2])
    rt.advance(2200)
    totals = rt.stats()["totals"]
    assert totals["invoked"] == 20
    assert totals["late"] == 0 and totals["late_ticks"] == 0


def test_many_rearms_keep_one_timer(rt: SimRuntime) -> None:
    """§17: re-arming a pending continuation keeps one entry; it fires once; arms are counted."""
    ran: list[int] = []
    kc = Continuation(kcont.wq_softnet, lambda a, k: ran.append(rt.ticks))
    for n in range(1, 1001):
        kc.schedule(n % 50 + 1)
        assert rt.stats()["pending_timers"] == 1
    rt.advance(60)
    assert ran == [1000 % 50 + 1]
    assert rt.stats()["queues"]["wq_softnet"]["armed"] == 1000
    assert rt.stats()["queues"]["wq_softnet"]["scheduled"] == 1


def test_stopped_timers_do_not_pile_up(rt: SimRuntime) -> None:
    """§17: stopped timers are removed at once (nothing left in the wheel)."""
    kcs = [Continuation(kcont.wq_softnet, lambda a, k: None) for _ in range(50)]
    for i, kc in enumerate(kcs):
        kc.schedule(1 + i * 40)
    for kc in kcs:
        kc.stop()
    assert rt.stats()["pending_timers"] == 0
    assert rt.next_deadline() is None
    assert rt.pending_dump() == []


def test_runtime_next_deadline_and_pending_dump(rt: SimRuntime) -> None:
    """sim.next_deadline() and pending_dump() describe the armed timers."""
    kc = Continuation(kcont.wq_softnet, lambda a, k: None, name="probe")
    rt.advance(2)
    kc.schedule(5, cpu=rt.cpus[1])
    assert rt.next_deadline() == 7
    (row,) = rt.pending_dump()
    assert row["deadline"] == 7 and row["in_ticks"] == 5 and row["cpu"] == 1
    assert row["flags"] == "PENDING" and not row["queued"]


def test_run_until_advances_to_the_predicate(rt: SimRuntime) -> None:
    """sim.run_until(predicate) advances tick by tick and returns the tick it became true."""
    ran: list[int] = []
    Continuation(kcont.wq_softnet, lambda a, k: ran.append(1)).schedule(9)
    assert rt.run_until(lambda: bool(ran)) == 9


def test_timer_with_lock_held_at_expiry_runs_after_release(rt: SimRuntime) -> None:
    """Seed: a timer may expire without being invoked while its lock cannot be acquired."""
    ran: list[int] = []
    lock = kcont.Mutex()
    kc = Continuation(kcont.wq_softnet, lambda a, k: ran.append(rt.ticks), lock=lock)
    kc.schedule(2)
    with lock:
        rt.advance(3)
        assert ran == [] and kc.expired and not kc.pending
    rt.run_until_idle()
    assert ran == [3]
    assert rt.stats()["totals"]["late"] == 0  # late counts expiry, not start

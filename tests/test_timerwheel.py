"""The timing wheel against a sorted-list model, and the cost of its far part:
finding the earliest far epoch never looks at every occupied far epoch
(docs/runtime.md "Time"; docs/semantics.md §5 "never earlier", §10 "(expiry
tick, schedule order)")."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_timers import Entry

from kcont._core import timerwheel
from kcont._core.layout import compiled_module
from kcont._core.timerwheel import _STALE_SLACK, NEAR_BITS, NEAR_MASK, NEAR_SIZE
from kcont._core.timerwheel import PyTimerWheel as TimerWheel  # the reference, with stand-in entries

HUGE = 10**13


def check_structure(wheel: TimerWheel, entries: list[Entry]) -> None:
    """The invariants of the module docstring, checked from the outside."""
    held = [kc for bucket in wheel.near for kc in bucket] + [kc for b in wheel.far.values() for kc in b]
    assert len(held) == len(set(map(id, held))) == wheel.count
    for index, bucket in enumerate(wheel.near):
        for kc in bucket:
            assert kc._bucket is bucket and kc._deadline & NEAR_MASK == index
            assert kc._deadline > wheel.now and kc._deadline >> NEAR_BITS == wheel.now >> NEAR_BITS
    for epoch, bucket in wheel.far.items():
        assert bucket and epoch > wheel.now >> NEAR_BITS
        for kc in bucket:
            assert kc._bucket is bucket and kc._deadline >> NEAR_BITS == epoch
    for e in entries:
        assert (e._bucket is not None) == any(e is kc for kc in held)
    epochs = wheel._epochs
    assert set(wheel.far) <= set(epochs)
    assert not epochs or (epochs[0] == min(epochs) and epochs[0] in wheel.far)


deltas = st.one_of(
    st.integers(1, 2 * NEAR_SIZE),  # near, and just past the epoch
    st.integers(1, 10**6),  # far epochs
    st.integers(HUGE - 2 * NEAR_SIZE, HUGE + 2 * NEAR_SIZE),  # huge, around one epoch boundary
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("arm"), st.integers(0, 9), deltas),
        st.tuples(st.just("disarm"), st.integers(0, 9), st.just(0)),
        st.tuples(st.just("expire"), st.just(0), st.one_of(st.just(0), deltas)),
        st.tuples(st.just("wake"), st.just(0), st.just(0)),  # what the timer thread does
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0, NEAR_MASK, 1500, HUGE]), st.sampled_from([0, _STALE_SLACK]), operations)
def test_wheel_matches_sorted_list_model(start: int, slack: int, ops: list[tuple[str, int, int]]) -> None:
    """Random arm/re-arm/disarm/expire with near, far and huge deadlines and long jumps:
    the wheel expires what a sorted list says, at the same tick and in (deadline, last arm)
    order, and next_deadline is the earliest deadline, or the first tick of its epoch when
    that epoch is not the current one.  (A slack of 0 rebuilds the epoch index often.)"""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(timerwheel, "_STALE_SLACK", slack)
        check_against_model(TimerWheel(now=start), ops)


def check_against_model(
    wheel: Any,
    ops: list[tuple[str, int, int]],
    entry: Callable[[str], Any] = Entry,
    structure: Callable[[Any, list[Any]], None] = check_structure,
) -> None:
    entries = [entry(f"e{i}") for i in range(10)]
    model: list[tuple[int, int, int]] = []  # (deadline, arm sequence, entry index), kept sorted
    seq = 0

    def expire_to(tick: int) -> None:
        due = [row for row in model if row[0] <= tick]
        del model[: len(due)]
        out: list[Any] = []
        wheel.expire_until(tick, out)
        assert wheel.now == tick
        assert out == [entries[i] for _, _, i in due]

    for op, i, value in ops:
        if op == "arm":
            model[:] = [row for row in model if row[2] != i]
            seq += 1
            model.append((wheel.now + value, seq, i))
            model.sort()
            wheel.arm(entries[i], wheel.now + value)
        elif op == "disarm" and any(row[2] == i for row in model):
            model[:] = [row for row in model if row[2] != i]
            wheel.disarm(entries[i])
        elif op == "expire":
            expire_to(wheel.now + value)
        elif op == "wake" and model:
            expire_to(wheel.next_deadline())
        assert len(wheel) == len(model)
        structure(wheel, entries)
        deadline = wheel.next_deadline()
        if not model:
            assert deadline is None
        elif model[0][0] >> NEAR_BITS == wheel.now >> NEAR_BITS:
            assert deadline == model[0][0]
        else:
            assert deadline == model[0][0] >> NEAR_BITS << NEAR_BITS
    expire_to(wheel.now + 2 * HUGE)
    assert model == [] and len(wheel) == 0
    structure(wheel, entries)
    if isinstance(wheel, TimerWheel):
        assert wheel.far == {} and wheel._epochs == []


_ckcont = compiled_module()


def _compiled_entry(name: str) -> Any:
    assert _ckcont is not None
    entry = _ckcont.ContinuationFields()  # the compiled layout, nothing more
    entry.name = name
    return entry


def _compiled_structure(wheel: Any, entries: list[Any]) -> None:
    held = list(wheel)
    assert len(held) == len(set(map(id, held))) == wheel.count == len(wheel)
    for e in entries:
        assert (e._bucket is not None) == any(e is kc for kc in held)


@pytest.mark.skipif(_ckcont is None, reason="the compiled core is not in use")
@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0, NEAR_MASK, 1500, HUGE]), operations)
def test_compiled_wheel_matches_the_same_model(start: int, ops: list[tuple[str, int, int]]) -> None:
    """The compiled wheel (intrusive lists) against the model the reference
    passes: same expiries, same order, same next_deadline, same count."""
    assert _ckcont is not None
    check_against_model(_ckcont.TimerWheel(now=start), ops, _compiled_entry, _compiled_structure)


@pytest.mark.skipif(_ckcont is None, reason="the compiled core is not in use")
def test_compiled_wheel_refuses_stand_ins_and_out_of_range_deadlines() -> None:
    assert _ckcont is not None
    wheel = _ckcont.TimerWheel()
    with pytest.raises(TypeError, match="holds continuations"):
        wheel.arm(Entry("x"), 5)
    with pytest.raises(OverflowError):
        wheel.arm(_compiled_entry("y"), timerwheel.MAX_DEADLINE)
    assert len(wheel) == 0


def test_wheel_wake_loop_reaches_each_deadline_exactly() -> None:
    """Waking at next_deadline() and expiring, as the timer thread does, returns each entry
    at its own tick, across far epochs and a jump of 10**13 ticks."""
    wheel = TimerWheel()
    deadlines = [5, 1023, 1024, 5000, 5001, 10**6, HUGE, HUGE + 1, 2 * HUGE]
    for d in deadlines:
        wheel.arm(Entry(str(d)), d)
    fired: list[tuple[int, str]] = []
    wakeups = 0
    while (deadline := wheel.next_deadline()) is not None:
        wakeups += 1
        assert wakeups < 3 * len(deadlines)  # at most one early wake-up per far epoch
        out: list[Any] = []
        wheel.expire_until(deadline, out)
        fired += [(deadline, e.name) for e in out]
    assert fired == [(d, str(d)) for d in deadlines]


class CountingDict(dict[int, Any]):
    """A dict that counts the keys its iteration yields."""

    yielded = 0

    def __iter__(self) -> Iterator[int]:
        for key in super().__iter__():
            CountingDict.yielded += 1
            yield key

    def keys(self) -> Any:
        return list(iter(self))


def test_far_epochs_are_not_scanned() -> None:
    """Finding the earliest far timer, for next_deadline and for a jump over an idle
    stretch, looks at no other occupied far epoch: with many far timers armed, the
    timer thread's wake-ups cost no more under the runtime lock."""
    wheel = TimerWheel()
    rng = random.Random(1)
    entries = [Entry(f"f{i}") for i in range(20_000)]
    for e in entries:
        wheel.arm(e, rng.randrange(1 << 20, 1 << 40))
    wheel.far = CountingDict(wheel.far)
    CountingDict.yielded = 0
    earliest = min(e._deadline for e in entries)
    assert wheel.next_deadline() == earliest >> NEAR_BITS << NEAR_BITS
    out: list[Any] = []
    wheel.expire_until(earliest - 1, out)  # one jump over the idle stretch
    assert out == [] and wheel.next_deadline() == earliest
    wheel.expire_until(earliest, out)
    assert len(out) == 1 and out[0]._deadline == earliest
    for e in entries[:30]:  # re-arms and disarms (fewer than an index rebuild needs)
        if e._bucket is not None:
            wheel.arm(e, e._deadline + NEAR_SIZE)
            wheel.disarm(e)
    wheel.next_deadline()
    assert CountingDict.yielded == 0


def test_epoch_index_stays_bounded_under_churn() -> None:
    """Far timers armed and stopped in ever new epochs leave stale keys in the epoch
    index, which is rebuilt before they outnumber the live epochs (plus a slack)."""
    wheel = TimerWheel()
    rng = random.Random(2)
    resident = [Entry(f"r{i}") for i in range(10)]
    for e in resident:
        wheel.arm(e, rng.randrange(1 << 20, 1 << 30))
    lone = Entry("lone")
    largest = 0
    for _ in range(20_000):
        wheel.arm(lone, rng.randrange(1 << 12, 1 << 40))
        if rng.random() < 0.5:
            wheel.disarm(lone)
        largest = max(largest, len(wheel._epochs))
    assert largest <= 2 * (len(resident) + 1) + _STALE_SLACK + 1
    assert (
        wheel.next_deadline()
        == min(e._deadline for e in [*resident, lone] if e._bucket) >> NEAR_BITS << NEAR_BITS
    )


def test_rearm_within_a_far_epoch_keeps_its_bucket() -> None:
    """Re-arming the only entry of a far epoch to another tick of that epoch reuses the
    bucket (no allocation on the protocol-timer path), and the entry still fires at its tick."""
    wheel = TimerWheel()
    e = Entry("e")
    wheel.arm(e, 5000)
    bucket = e._bucket
    wheel.arm(e, 5001)
    wheel.arm(e, 4097)
    assert e._bucket is bucket and list(wheel.far) == [4] and wheel._epochs == [4]
    out: list[Any] = []
    wheel.expire_until(4096, out)
    assert out == []
    wheel.expire_until(4097, out)
    assert out == [e]

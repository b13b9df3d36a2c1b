"""The edges of the compiled core's fast paths, on both cores.

The compiled core (``kcont.implementation == "compiled"``) handles the common
case of ``schedule``, ``kcont_schedule``, the timer wheel and dispatch in C,
and hands every other case to the pure-Python reference before changing
anything.  These tests drive each boundary: the same observable behaviour is
required whichever core runs them (CI runs the suite on both).
"""

from __future__ import annotations

import contextvars
import sys
from typing import Any

import pytest

import kcont
from kcont import Continuation, SimRuntime, capi
from kcont._core.dispatch import dispatch
from kcont._core.timerwheel import MAX_TICKS


@pytest.fixture
def sim() -> Any:
    rt = SimRuntime(ncpu=2)
    with rt:
        yield rt
    rt.shutdown()


def test_more_queues_in_a_band_than_bits_in_a_machine_word_keep_priority_order(sim: SimRuntime) -> None:
    """A band's ready mask has one bit per queue: past 63 queues it no longer
    fits a machine word, and dispatch must still take the highest priority."""
    ran: list[int] = []
    queues = [sim.workqueue(pri) for pri in range(100)]
    kcs = [Continuation(wq, lambda arg, kc: ran.append(arg), wq.pri) for wq in queues]
    for kc in kcs:  # lowest priority first: dispatch must reorder
        kc.schedule()
    assert sim.cpus[0].ready[1] >= 1 << 99
    assert sim.run_until_idle() == 100
    assert ran == sorted(ran, reverse=True)


def test_ticks_up_to_the_wheel_range_are_armed_and_beyond_are_refused(sim: SimRuntime) -> None:
    """Both cores take nticks below 2**61 (far beyond any real use: 73
    million years at hz=1000) and refuse more with EINVAL, before changing
    anything."""
    kc = Continuation(kcont.wq_softclock, lambda arg, kc: None)
    sim.advance(5)
    kc.schedule(MAX_TICKS - 1)
    assert kc.pending and kc.deadline == sim.ticks + MAX_TICKS - 1
    for huge in (MAX_TICKS, 1 << 63, 1 << 70):
        with pytest.raises(kcont.InvalidArgumentError, match="below 2\\*\\*61"):
            kc.schedule(huge)
        assert capi.kcont_schedule(kc, None, huge) == capi.errno.EINVAL
        assert kc.pending and kc.deadline == sim.ticks + MAX_TICKS - 1
    kc.schedule(3)  # back from the farthest epoch
    assert kc.deadline == sim.ticks + 3
    sim.advance(3)
    assert not kc.pending and kc.expired
    assert len(sim._wheel) == 0


def test_a_subclass_overriding_schedule_is_called_by_kcont_schedule(sim: SimRuntime) -> None:
    calls: list[tuple[Any, ...]] = []

    class Counted(Continuation[None]):
        def schedule(self, *args: Any, **kwargs: Any) -> None:
            calls.append(args)
            super().schedule(*args, **kwargs)

    kc = Counted(kcont.wq_softnet, lambda arg, kc: None)
    assert capi.kcont_schedule(kc, None, 0) == 0
    assert calls == [(0, None)]
    assert capi.kcont_schedule(kc, None, 0) == capi.errno.EBUSY


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda kc: kc.schedule(1, nticks=2), TypeError, "multiple values for argument 'nticks'"),
        (lambda kc: kc.schedule(bogus=1), TypeError, "unexpected keyword argument 'bogus'"),
        (lambda kc: kc.schedule(1, None, True), TypeError, "positional argument"),
        (lambda kc: kc.schedule(1.5), TypeError, "nticks must be an int, not float"),
        (lambda kc: kc.schedule(True), TypeError, "nticks must be an int, not bool"),
        (lambda kc: kc.schedule(ack=1), TypeError, "ack must be a bool, not int"),
        (lambda kc: kc.schedule(-1), kcont.InvalidArgumentError, "nticks must be >= 0, not -1"),
        (lambda kc: kc.schedule(0, object()), TypeError, "cpu must be a kcont CPU handle or None"),
    ],
)
def test_bad_calls_get_the_reference_errors(sim: SimRuntime, call: Any, error: type, message: str) -> None:
    kc = Continuation(kcont.wq_softnet, lambda arg, kc: None)
    with pytest.raises(error, match=message):
        call(kc)
    assert kc.flags == "IDLE"


def test_keywords_reach_the_fast_path(sim: SimRuntime) -> None:
    kc = Continuation(kcont.wq_softnet, lambda arg, kc: None)
    kc.schedule(nticks=4, cpu=None, ack=False)
    assert kc.deadline == 4
    kc.schedule(nticks=0)
    assert kc.queued
    kc.schedule(0, ack=True)
    assert kc.queued and sim.run_until_idle() == 1


def test_a_traced_runtime_records_what_the_fast_paths_would_skip() -> None:
    rt = SimRuntime(ncpu=1, trace=True)
    with rt:
        kc = Continuation(kcont.wq_softnet, lambda arg, kc: None, name="traced")
        kc.schedule()
        kc.schedule(ack=True)
        rt.run_until_idle()
    events = [event.event for event in rt.trace if event.name == "traced"]
    assert events == ["schedule", "schedule", "start", "end"]
    rt.shutdown()


def test_a_failed_rearm_keeps_the_context_it_had() -> None:
    """A re-arm that fails while comparing contexts (here: out of stack)
    changes nothing: the continuation keeps its own context, alive."""
    var: contextvars.ContextVar[list[int]] = contextvars.ContextVar("var")
    rt = SimRuntime(ncpu=1)
    seen: list[Any] = []
    with rt:
        kc1 = Continuation(kcont.wq_softclock, lambda arg, kc: seen.append(var.get()))
        kc2 = Continuation(kcont.wq_softclock, lambda arg, kc: None)
        var.set([1])
        kc1.schedule(5)
        var.set([2])
        kc2.schedule(5)  # the runtime's cached context is now kc2's
        failed: list[bool] = []

        def rearm_at_the_stack_limit(depth: int) -> None:
            try:
                rearm_at_the_stack_limit(depth + 1)
            except RecursionError:
                pass
            if not failed:
                try:
                    kc1.schedule(7)
                except RecursionError:
                    failed.append(True)

        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(200)
        try:
            rearm_at_the_stack_limit(0)
        finally:
            sys.setrecursionlimit(limit)
        garbage = [contextvars.copy_context() for _ in range(100)]  # reuses freed contexts, if any
        del garbage
        rt.advance(10)
    assert seen and seen[0] == [1]
    rt.shutdown()


def test_bad_bands_get_the_reference_errors(sim: SimRuntime) -> None:
    kc = Continuation(kcont.wq_softnet, lambda arg, kc: None)
    kc.schedule()
    cpu = sim.cpus[0]
    with pytest.raises(IndexError):
        dispatch(sim, cpu, [0, 10**6], 3)
    with pytest.raises(TypeError):
        dispatch(sim, cpu, [0, "x"], 3)
    assert not kc.queued and sim.run_until_idle() == 0  # it ran before the bad band was reached

"""Periodic timers: kcont.Periodic keeps an ideal schedule (no drift), places
the run after a late one by its missed-tick policy (burst, delay, skip, as
Tokio), reports lateness; and the two continuation features it relies on:
``fired_deadline`` inside the function and the BusyError that names
``schedule(..., ack=True)``.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest

import kcont
from kcont import Periodic, PeriodicRun, SimRuntime
from kcont.periodic import MissedTick


def _recorder() -> tuple[list[tuple[int, int, int, int]], Any]:
    """A periodic function that records (deadline, tick, late, skipped)."""
    runs: list[tuple[int, int, int, int]] = []

    def record(arg: None, run: PeriodicRun) -> None:
        runs.append((run.deadline, run.tick, run.late, run.skipped))

    return runs, record


# -- no drift ------------------------------------------------------------------------


def test_ten_thousand_periods_drift_by_zero_ticks(rt: SimRuntime) -> None:
    runs, record = _recorder()
    periodic = Periodic(kcont.wq_softclock, record, None, 7)
    periodic.start()
    rt.advance(70_000)
    assert len(runs) == 10_000
    assert [tick for _, tick, _, _ in runs] == [7 * k for k in range(1, 10_001)]
    assert periodic.next_deadline == 70_007
    assert periodic.late_runs == periodic.skipped == 0


def _hold_lock_while(rt: SimRuntime, lock: kcont.Mutex, nticks: int) -> None:
    """The CPU is busy for ``nticks``: the timer's lock is held, so its run
    waits (parked) and starts when the lock is released."""
    lock.acquire()
    rt.advance(nticks)
    lock.release()
    rt.run_until_idle()


def test_a_late_run_does_not_shift_the_schedule_unlike_a_naive_rearm(rt: SimRuntime) -> None:
    """The naive idiom (re-arm ``period`` ticks after the run) drifts by the
    lateness; Periodic re-arms from the ideal deadline."""
    lock = kcont.Mutex()
    naive_ticks: list[int] = []

    def naive(arg: None, kc: kcont.Continuation[None]) -> None:
        naive_ticks.append(rt.ticks)
        kc.schedule(10, ack=True)

    naive_kc = rt.continuation(kcont.wq_softclock, naive, lock=lock)
    naive_kc.schedule(10)
    runs, record = _recorder()
    periodic = Periodic(kcont.wq_softclock, record, None, 10, lock=lock)
    periodic.start()
    rt.advance(19)
    _hold_lock_while(rt, lock, 5)  # tick 20's runs start at 24
    rt.advance(100 - rt.ticks)
    assert [tick for _, tick, _, _ in runs] == [10, 24, 30, 40, 50, 60, 70, 80, 90, 100]
    assert naive_ticks == [10, 24, 34, 44, 54, 64, 74, 84, 94]  # drifted by 4


def test_the_first_run_can_be_immediate_or_delayed(rt: SimRuntime) -> None:
    runs, record = _recorder()
    periodic = Periodic(kcont.wq_softclock, record, None, 5)
    periodic.start(0)
    rt.run_until_idle()
    periodic.stop()
    periodic.start(2)
    rt.advance(8)
    assert [(d, t) for d, t, _, _ in runs] == [(0, 0), (2, 2), (7, 7)]


# -- missed-tick policies: late runs on the simulator ------------------------------------


@pytest.mark.parametrize(
    ("missed", "expected"),
    [
        # deadline 10 runs at 35 (late 25); then:
        # burst: 20 and 30 at once, back on the schedule at 40
        ("burst", [(10, 35, 25, 0), (20, 35, 15, 0), (30, 35, 5, 0), (40, 40, 0, 0), (50, 50, 0, 0)]),
        # delay: one period after the late run, then every period from there
        ("delay", [(10, 35, 25, 0), (45, 45, 0, 0), (55, 55, 0, 0)]),
        # skip: 20 and 30 dropped, next multiple of the period after 35
        ("skip", [(10, 35, 25, 0), (40, 40, 0, 2), (50, 50, 0, 0)]),
    ],
)
def test_a_run_late_by_more_than_a_period_follows_its_policy(
    rt: SimRuntime, missed: MissedTick, expected: list[tuple[int, int, int, int]]
) -> None:
    lock = kcont.Mutex()
    runs, record = _recorder()
    periodic = Periodic(kcont.wq_softclock, record, None, 10, missed=missed, lock=lock)
    periodic.start()
    _hold_lock_while(rt, lock, 35)
    rt.run_until(lambda: len(runs) >= len(expected))
    assert runs == expected
    assert periodic.late_runs == sum(1 for run in expected if run[2])
    assert periodic.max_late == 25
    assert periodic.skipped == sum(run[3] for run in expected)


@pytest.mark.parametrize("missed", ["burst", "delay", "skip"])
def test_a_run_late_by_less_than_a_period_keeps_the_phase_except_with_delay(
    rt: SimRuntime, missed: MissedTick
) -> None:
    lock = kcont.Mutex()
    runs, record = _recorder()
    periodic = Periodic(kcont.wq_softclock, record, None, 10, missed=missed, lock=lock)
    periodic.start()
    _hold_lock_while(rt, lock, 13)
    rt.run_until(lambda: len(runs) >= 2)
    assert runs[0] == (10, 13, 3, 0)
    assert runs[1] == ((23, 23, 0, 0) if missed == "delay" else (20, 20, 0, 0))


# -- missed-tick policies: a function that overruns, on real threads -----------------------


@pytest.mark.threaded
@pytest.mark.timeout(30)
@pytest.mark.parametrize("missed", ["burst", "delay", "skip"])
def test_a_function_that_overruns_its_period_follows_its_policy(missed: MissedTick) -> None:
    """Period 10 ticks (10 ms); the third run sleeps 35 ms.  Whatever the
    machine's load, the deadlines the runs report obey the policy."""
    period = 10
    runs: list[PeriodicRun] = []
    done = threading.Event()

    def work(arg: None, run: PeriodicRun) -> None:
        runs.append(run)
        if run.number == 3:
            time.sleep(0.035)
        if run.number == 8:
            run.periodic.stop()
            done.set()

    with kcont.Runtime(ncpu=1, hz=1000) as runtime:
        periodic = Periodic(runtime.workqueue(50), work, None, period, missed=missed)
        periodic.start()
        assert done.wait(20)
        periodic.halt(timeout=10)
    assert [run.number for run in runs] == list(range(1, 9))
    first = runs[0].deadline
    for before, after in itertools.pairwise(runs):
        assert after.tick >= before.tick and after.tick >= after.deadline - 1
        if not before.late:
            assert after.deadline == before.deadline + period, (before, after)
        elif missed == "burst":
            assert after.deadline == before.deadline + period
        elif missed == "delay":
            assert after.deadline == before.tick + period
        else:
            assert (after.deadline - first) % period == 0
            assert after.deadline > before.tick
            assert after.skipped == (after.deadline - before.deadline) // period - 1
    # The overrun made the fourth run late by more than two periods.
    assert runs[3].late >= 2 * period, runs[3]
    if missed == "burst":
        assert runs[4].late > 0  # caught up at once, not at its own deadline
    if missed == "skip":
        assert periodic.skipped >= 2


# -- control -----------------------------------------------------------------------------


def test_stop_from_the_function_ends_the_schedule(rt: SimRuntime) -> None:
    def three_times(arg: None, run: PeriodicRun) -> None:
        if run.number == 3:
            assert run.periodic.stop() is True

    periodic = Periodic(kcont.wq_softclock, three_times, None, 4, name="three")
    periodic.start()
    rt.advance(100)
    assert periodic.runs == 3
    assert not periodic.active and periodic.next_deadline is None
    assert not periodic.continuation.pending
    assert "stopped" in repr(periodic)


def test_stop_after_expiry_prevents_the_committed_run(rt: SimRuntime) -> None:
    lock = kcont.Mutex()
    runs, record = _recorder()
    periodic = Periodic(kcont.wq_softclock, record, None, 5, lock=lock)
    periodic.start()
    lock.acquire()
    rt.advance(5)  # expired and parked on the lock
    periodic.stop()
    lock.release()
    rt.advance(20)
    assert runs == []


def test_restart_while_running_replaces_the_schedule(rt: SimRuntime) -> None:
    runs, record = _recorder()

    def restart_once(arg: None, run: PeriodicRun) -> None:
        record(arg, run)
        if run.number == 2 and len(runs) == 2:
            run.periodic.start(3)  # from inside: the old run must not re-arm too

    periodic = Periodic(kcont.wq_softclock, restart_once, None, 10)
    periodic.start()
    rt.advance(45)
    assert [(d, t) for d, t, _, _ in runs] == [(10, 10), (20, 20), (23, 23), (33, 33), (43, 43)]


class _RestartAtFirstGuard:
    """A Periodic's guard that restarts the timer, as another thread could,
    the first time it is taken: by a run, between its start and its guard."""

    def __init__(self, restart: Any) -> None:
        self.lock = threading.Lock()
        self.restart = restart

    def __enter__(self) -> None:
        restart, self.restart = self.restart, None
        if restart is not None:
            restart()
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def test_a_run_started_before_a_restart_belongs_to_the_old_schedule(rt: SimRuntime) -> None:
    """The run the old schedule started returns without running the function
    or re-arming: the restarted schedule's first run is at its own deadline."""
    runs, record = _recorder()
    periodic = Periodic(kcont.wq_softclock, record, None, 10)
    periodic.start(5)
    periodic._guard = _RestartAtFirstGuard(lambda: periodic.start(100))  # type: ignore[assignment]
    rt.advance(150)
    assert [(d, t) for d, t, _, _ in runs] == [(105, 105), (115, 115), (125, 125), (135, 135), (145, 145)]
    assert periodic.runs == 5 and periodic.late_runs == 0


def test_halt_and_destroy(rt: SimRuntime) -> None:
    runs, record = _recorder()
    periodic = Periodic(kcont.wq_softclock, record, None, 3)
    periodic.start()
    rt.advance(6)
    assert periodic.halt() is True
    rt.advance(30)
    assert len(runs) == 2
    periodic.start()
    periodic.destroy()
    assert periodic.continuation.destroyed
    with pytest.raises(kcont.DestroyedError):
        periodic.start()
    assert not periodic.active


def test_an_exception_goes_to_the_handler_and_the_timer_goes_on() -> None:
    rt = SimRuntime()
    failures: list[BaseException] = []
    rt.exception_handler = lambda kc, exc: failures.append(exc)

    def fails_twice(arg: None, run: PeriodicRun) -> None:
        if run.number <= 2:
            raise RuntimeError(run.number)

    with rt:
        periodic = Periodic(kcont.wq_softclock, fails_twice, None, 5)
        periodic.start()
        rt.advance(25)
    assert [str(exc) for exc in failures] == ["1", "2"]
    assert periodic.runs == 5


def test_on_a_per_cpu_queue_it_runs_on_its_cpu() -> None:
    rt = SimRuntime(ncpu=3, reraise=True)
    cpus: list[int] = []
    with rt:
        wq = rt.workqueue(40, percpu=True)
        periodic = Periodic(wq, lambda a, run: cpus.append(kcont.curcpu().index), None, 2, cpu=rt.cpus[2])
        periodic.start()
        rt.advance(6)
    assert cpus == [2, 2, 2]


async def _a_coroutine_function(arg: None, run: PeriodicRun) -> None:
    """Calling it would only build a coroutine: every run would do nothing."""


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"period": 0}, kcont.InvalidArgumentError),
        ({"period": 2.5}, TypeError),
        ({"period": True}, TypeError),
        ({"missed": "catch_up"}, kcont.InvalidArgumentError),
        ({"func": "f"}, TypeError),
        ({"func": _a_coroutine_function}, TypeError),
        ({"cpu": 0}, TypeError),
    ],
)
def test_bad_arguments_are_refused(rt: SimRuntime, kwargs: dict[str, Any], error: type[Exception]) -> None:
    args: dict[str, Any] = {"func": lambda a, run: None, "period": 5, **kwargs}
    with pytest.raises(error):
        Periodic(kcont.wq_softclock, args.pop("func"), None, **args)


def test_bad_start_delays_are_refused(rt: SimRuntime) -> None:
    periodic = Periodic(kcont.wq_softclock, lambda a, run: None, None, 5)
    with pytest.raises(kcont.InvalidArgumentError):
        periodic.start(-1)
    with pytest.raises(TypeError):
        periodic.start("1")  # type: ignore[arg-type]
    assert not periodic.active


# -- the continuation features it relies on ---------------------------------------------


def test_fired_deadline_is_the_deadline_of_the_current_invocation(rt: SimRuntime) -> None:
    seen: list[tuple[int | None, int | None, int]] = []

    def rearm(arg: None, kc: kcont.Continuation[None]) -> None:
        before = kc.deadline
        kc.schedule(10, ack=True)
        seen.append((before, kc.fired_deadline, rt.ticks))

    kc = rt.continuation(kcont.wq_softclock, rearm)
    assert kc.fired_deadline is None
    kc.schedule(5)
    rt.advance(15)
    # deadline is None inside (the timer expired); fired_deadline stays the
    # one that fired even after the function re-armed.
    assert seen == [(None, 5, 5), (None, 15, 15)]
    kc.stop()
    kc.schedule()  # immediate: no timer fired
    rt.run_until_idle()
    assert seen[-1] == (None, None, 15)
    assert kc.fired_deadline is None


def test_fired_deadline_shows_how_late_an_invocation_is(rt: SimRuntime) -> None:
    lock = kcont.Mutex()
    lateness: list[int] = []
    kc = rt.continuation(
        kcont.wq_softclock, lambda a, kc: lateness.append(rt.ticks - (kc.fired_deadline or 0)), lock=lock
    )
    kc.schedule(4)
    _hold_lock_while(rt, lock, 9)
    assert lateness == [5]


def test_scheduling_itself_without_ack_says_to_use_ack(rt: SimRuntime) -> None:
    errors: list[str] = []

    def forgets_ack(arg: None, kc: kcont.Continuation[None]) -> None:
        try:
            kc.schedule(10)
        except kcont.BusyError as exc:
            errors.append(str(exc))

    kc = rt.continuation(kcont.wq_softclock, forgets_ack)
    kc.schedule(1)
    rt.advance(1)
    assert len(errors) == 1
    assert "its own function is running" in errors[0]
    assert "schedule(..., ack=True)" in errors[0]


def test_scheduling_an_invoking_continuation_from_outside_names_both_remedies(rt: SimRuntime) -> None:
    lock = kcont.Mutex()
    kc = rt.continuation(kcont.wq_softclock, lambda a, kc: None, lock=lock)
    with lock:
        kc.schedule()
        with pytest.raises(kcont.BusyError, match=r"call ack\(\) first, or schedule\(\.\.\., ack=True\)"):
            kc.schedule(3)


class _OneTickBoundaryRuntime(kcont.Runtime):
    """A threaded runtime whose clock crosses a tick boundary right after the
    next reading by a given thread: between two readings of the clock that
    arming a timer makes (one tick is a second, so the real clock does not
    cross one meanwhile)."""

    stepping_thread: int | None = None
    offset = 0

    def _now(self) -> int:
        now = super()._now() + self.offset
        if self.stepping_thread == threading.get_ident():
            self.stepping_thread = None
            self.offset += 1
        return now


@pytest.mark.threaded
@pytest.mark.timeout(60)
def test_the_timer_is_armed_for_the_ideal_deadline_even_across_a_tick_boundary() -> None:
    """A tick boundary between computing a deadline and arming the timer
    does not make the run one tick late, neither on start nor on re-arm."""
    armed: list[tuple[int | None, int | None]] = []
    rearmed = threading.Event()
    rt = _OneTickBoundaryRuntime(ncpu=1, hz=1)

    def cross_a_boundary_before_the_rearm(arg: None, run: PeriodicRun) -> None:
        rt.stepping_thread = threading.get_ident()

    with rt:
        periodic = Periodic(kcont.wq_softclock, cross_a_boundary_before_the_rearm, None, 100)
        rt.stepping_thread = threading.get_ident()
        periodic.start(50)
        armed.append((periodic.continuation.deadline, periodic.next_deadline))
        periodic.start(0)  # the first run at once; its function crosses a boundary before the re-arm
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not rearmed.is_set():
            with periodic._guard:  # the re-arm is done under it
                if periodic.runs == 1 and periodic.continuation.deadline is not None:
                    armed.append((periodic.continuation.deadline, periodic._next))
                    rearmed.set()
            time.sleep(0.005)
        periodic.stop()
    assert rt.offset == 2  # both boundaries were crossed where intended
    assert len(armed) == 2
    for deadline, ideal in armed:
        assert deadline == ideal

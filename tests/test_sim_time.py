"""Virtual time on the simulator: advance and run_until jump from deadline to
deadline, with exactly the trace of stepping every tick; run_until(tick);
autojump for waits that only a timer can end.

``KCONT_JUMP_SEEDS`` (default 100) seeds, each running every exploration
scenario twice (jumping, then stepping every tick).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

import kcont
from kcont import explore
from kcont.sim import SimRuntime

# Its own budget: CI explores many more seeds than this comparison needs.
EXPLORE_SEEDS = int(os.environ.get("KCONT_JUMP_SEEDS", "100"))
# The interleaved scenarios move time themselves, one tick at a time.
STEPPED_SCENARIOS = [name for name, sc in explore.SCENARIOS.items() if sc.runner is None]


@pytest.fixture
def stepping() -> Iterator[None]:
    """Every SimRuntime steps tick by tick (the reference) for the test."""
    assert SimRuntime.step_every_tick is False
    SimRuntime.step_every_tick = True
    try:
        yield
    finally:
        SimRuntime.step_every_tick = False


def _plain(trace: list[Any]) -> list[tuple[Any, ...]]:
    """A trace with exceptions as their repr (exceptions compare by identity)."""
    return [(e.tick, e.event, e.name, e.cpu, repr(e.detail)) for e in trace]


def _both_ways(run: Any) -> tuple[Any, Any]:
    """``run()`` jumping, then ``run()`` stepping every tick."""
    jumped = run()
    SimRuntime.step_every_tick = True
    try:
        stepped = run()
    finally:
        SimRuntime.step_every_tick = False
    return jumped, stepped


# -- jumping is invisible --------------------------------------------------------


@pytest.mark.timeout(600)
def test_every_exploration_scenario_traces_the_same_jumping_and_stepping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every scenario at every seed, as explored (one tick per advance), and
    stretched: each of the explorer's advance(1) becomes an advance of a
    drawn length (up to a few wheel turns), so that time really jumps over
    idle ticks, over armed timers and across wheel epochs."""
    real_advance = SimRuntime.advance
    stretch: list[random.Random | None] = [None]

    def stretched_advance(self: SimRuntime, nticks: int = 1) -> int:
        rng = stretch[0]
        if rng is not None and nticks == 1:
            nticks = rng.choice((1, 1, 1, 2, 3, 5, 40, 300, 1100))
        return real_advance(self, nticks)

    monkeypatch.setattr(SimRuntime, "advance", stretched_advance)  # both ways alike
    compared = 0
    for seed in range(EXPLORE_SEEDS):
        for name in STEPPED_SCENARIOS:
            for stretched in (False, True):

                def run(name: str = name, seed: int = seed, stretched: bool = stretched) -> Any:
                    stretch[0] = random.Random(f"{name}:{seed}:stretch") if stretched else None
                    return explore.run_scenario(name, seed, trace=True)

                jumped, stepped = _both_ways(run)
                where = f"{name} seed {seed} stretched={stretched}"
                assert jumped.trace, where
                assert _plain(jumped.trace) == _plain(stepped.trace), where
                assert jumped.violations == stepped.violations, where
                assert jumped.figures == stepped.figures, where
                if not stretched:
                    assert jumped.ok, (where, jumped.violations)
                compared += 1
    assert compared == 2 * EXPLORE_SEEDS * len(STEPPED_SCENARIOS)


def _random_timers(seed: int) -> tuple[list[tuple[Any, ...]], list[int], int]:
    """Self-rearming timers with near and far periods (up to several wheel
    turns), stopped and re-armed from outside, driven by advance,
    run_until(tick) and run_until(predicate) of drawn lengths."""
    rng = random.Random(seed)
    rt = SimRuntime(ncpu=rng.randint(1, 3), hz=1000, seed=seed, trace=True, reraise=True)
    returns: list[int] = []
    counts: dict[int, int] = {}
    with rt:

        def tick(index: int, kc: kcont.Continuation[int]) -> None:
            counts[index] = counts.get(index, 0) + 1
            if counts[index] % 4:
                kc.schedule((index * 37) % 3000 + 1, ack=True)

        kcs = [
            rt.continuation(rng.choice((kcont.wq_softclock, kcont.wq_prihigh)), tick, i, name=f"t{i}")
            for i in range(rng.randint(1, 6))
        ]
        for kc in kcs:
            kc.schedule(rng.randint(1, 5000))
        for _ in range(40):
            r = rng.random()
            if r < 0.3:
                returns.append(rt.advance(rng.choice((0, 1, 7, 500, 1024, 4000))))
            elif r < 0.5:
                returns.append(rt.run_until(rt.ticks + rng.randint(0, 3000)))
            elif r < 0.7:
                goal = sum(counts.values()) + rng.randint(1, 3)
                try:
                    returns.append(rt.run_until(lambda goal=goal: sum(counts.values()) >= goal, 6000))
                except kcont.SimDeadlockError:
                    returns.append(-rt.ticks)
            else:
                kc = rng.choice(kcs)
                if rng.random() < 0.5:
                    kc.stop()
                else:
                    kc.schedule(rng.randint(1, 2500))
        rt.shutdown()
    return _plain(rt.trace), returns, rt.ticks


@pytest.mark.parametrize("seed", range(12))
def test_far_timers_and_every_way_of_advancing_trace_the_same_jumping_and_stepping(seed: int) -> None:
    jumped, stepped = _both_ways(lambda: _random_timers(seed))
    assert jumped[0] == stepped[0]
    assert jumped[1:] == stepped[1:]
    assert any(event == "expire" for _, event, *_ in jumped[0])


def test_the_switch_is_what_the_fixture_says(stepping: None) -> None:
    """The reference really steps: one wake-up per tick, not per deadline."""
    rt = SimRuntime(hz=1000)
    with rt:
        rt.advance(3000)
    assert rt.wakeups == 3000


# -- jumping is cheap ----------------------------------------------------------------


def test_an_hour_with_one_timer_costs_a_few_wakeups() -> None:
    rt = SimRuntime(hz=1000)
    fired: list[int] = []
    with rt:
        kc = rt.continuation(kcont.wq_softclock, lambda arg, kc: fired.append(rt.ticks))
        kc.schedule(1_800_000)
        started = time.perf_counter()
        rt.advance(3_600_000)
        elapsed = time.perf_counter() - started
    assert fired == [1_800_000]
    assert rt.ticks == 3_600_000
    # One stop for the deadline, at most one for the first tick of its wheel
    # epoch (next_deadline may be a lower bound), one for the end.
    assert rt.wakeups <= 3, rt.wakeups
    assert elapsed < 1.0, f"{elapsed:.3f} s"


def test_wakeups_grow_with_deadlines_not_with_ticks() -> None:
    """A timer re-armed every 1000 ticks for 100 periods: time stops about
    once per deadline (twice when the deadline is in the next wheel epoch),
    whatever the number of ticks in between."""
    rt = SimRuntime(hz=1000)
    with rt:
        kc = rt.continuation(kcont.wq_softclock, lambda arg, kc: kc.schedule(1000, ack=True))
        kc.schedule(1000)
        rt.advance(100_000)
        assert kc.pending
    assert 100 <= rt.wakeups <= 2 * 100 + 1, rt.wakeups


# -- run_until -------------------------------------------------------------------------


def test_run_until_a_tick_runs_what_expires_on_the_way(rt: SimRuntime) -> None:
    seen: list[int] = []
    kc = rt.continuation(kcont.wq_softclock, lambda arg, kc: seen.append(rt.ticks))
    kc.schedule(40)
    assert rt.run_until(25) == 25
    assert seen == []
    assert rt.run_until_tick(40) == 40
    assert seen == [40]
    assert rt.run_until(40) == 40  # now is allowed: runs what is ready
    with pytest.raises(kcont.InvalidArgumentError, match="in the past"):
        rt.run_until(39)
    with pytest.raises(TypeError):
        rt.run_until_tick(True)  # type: ignore[arg-type]


def test_run_until_a_predicate_stops_at_the_tick_it_became_true(rt: SimRuntime) -> None:
    ran: list[int] = []
    kc = rt.continuation(kcont.wq_softclock, lambda arg, kc: ran.append(rt.ticks))
    kc.schedule(5000)
    assert rt.run_until(lambda: bool(ran)) == 5000
    assert rt.wakeups <= 2
    with pytest.raises(kcont.SimDeadlockError, match="still false after 100 ticks"):
        rt.run_until(lambda: False, max_ticks=100)
    assert rt.ticks == 5100


# -- autojump ----------------------------------------------------------------------------


def _parked_behind_a_timer(rt: SimRuntime) -> tuple[kcont.Continuation[None], list[str]]:
    """``waiter`` is queued and parked on a lock that only a timer's
    function (running 30 ticks later) releases."""
    order: list[str] = []
    lock = kcont.Mutex()

    def release(arg: None, kc: kcont.Continuation[None]) -> None:
        order.append(f"release@{rt.ticks}")
        lock.release()

    releaser = rt.continuation(kcont.wq_softclock, release, name="releaser")
    waiter = rt.continuation(kcont.wq_prihigh, lambda a, kc: order.append(f"waiter@{rt.ticks}"), lock=lock)
    lock.acquire()  # the simulator runs functions on this thread: the timer may release it
    releaser.schedule(30)
    waiter.schedule()
    return waiter, order


def test_without_autojump_a_wait_only_a_timer_can_end_is_a_deadlock() -> None:
    rt = SimRuntime(reraise=True)
    with rt:
        waiter, order = _parked_behind_a_timer(rt)
        with pytest.raises(kcont.SimDeadlockError, match="autojump=True"):
            waiter.flush()
        assert rt.ticks == 0 and order == []


@pytest.mark.parametrize("wait", ["flush", "wait_idle"])
def test_autojump_moves_time_to_the_next_deadline_when_a_wait_is_stuck(wait: str) -> None:
    rt = SimRuntime(reraise=True, autojump=True)
    with rt:
        waiter, order = _parked_behind_a_timer(rt)
        if wait == "flush":
            assert waiter.flush() is True
        else:
            rt.wait_idle()
        assert order == ["release@30", "waiter@30"]
        assert rt.ticks == 30


def test_autojump_still_reports_a_wait_no_timer_can_end() -> None:
    rt = SimRuntime(reraise=True, autojump=True)
    with rt:
        lock = kcont.Mutex()
        waiter = rt.continuation(kcont.wq_prihigh, lambda a, kc: None, lock=lock)
        lock.acquire()
        waiter.schedule()
        with pytest.raises(kcont.SimDeadlockError, match="can never end"):
            waiter.flush()
        lock.release()
        waiter.flush()


def test_autojump_is_a_bool() -> None:
    with pytest.raises(TypeError, match="autojump"):
        SimRuntime(autojump=1)  # type: ignore[arg-type]

"""Instruments, the slow-invocation warning, per-queue histograms and the
typed shape of stats()."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

import kcont
from kcont import Continuation, Runtime, SimRuntime
from kcont._core.stats import HIST_BUCKETS


class Recorder(kcont.Instrument):
    """Logs each call, and whether the runtime's state lock was free then."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.calls: list[tuple[Any, ...]] = []

    def before_invocation(self, kc: Continuation[Any], cpu: kcont.CPU) -> None:
        self.calls.append(("before", kc.name, cpu.index, self.rt._lock.locked(), kc.running))

    def after_invocation(
        self, kc: Continuation[Any], cpu: kcont.CPU, elapsed_ns: int, exc: BaseException | None
    ) -> None:
        self.calls.append(("after", kc.name, cpu.index, self.rt._lock.locked(), type(exc).__name__))
        assert elapsed_ns >= 0


def test_instruments_run_around_each_invocation_outside_the_state_lock() -> None:
    """Simulator (one thread, so the state lock is free iff nobody holds it):
    before, the function, after; the exception the function raised is handed
    to after_invocation, then to the exception handler as usual."""
    rt = SimRuntime(ncpu=2)
    handled: list[BaseException] = []
    rt.exception_handler = lambda kc, exc: handled.append(exc)
    recorder = Recorder(rt)
    rt.add_instrument(recorder)
    rt.add_instrument(recorder)  # added once
    assert rt.instruments == (recorder,)
    order: list[str] = []
    with rt:
        Continuation(kcont.wq_softnet, lambda a, k: order.append("ok"), None, name="ok").schedule(
            cpu=rt.cpus[1]
        )
        rt.run_until_idle()
        Continuation(kcont.wq_softnet, lambda a, k: 1 / 0, None, name="bad").schedule()
        rt.run_until_idle()
    assert recorder.calls == [
        ("before", "ok", 1, False, True),
        ("after", "ok", 1, False, "NoneType"),
        ("before", "bad", 0, False, True),
        ("after", "bad", 0, False, "ZeroDivisionError"),
    ]
    assert order == ["ok"] and len(handled) == 1
    rt.remove_instrument(recorder)
    assert rt.instruments == ()
    with pytest.raises(KeyError):
        rt.remove_instrument(recorder)


def test_an_instrument_that_raises_is_logged_and_removed(caplog: pytest.LogCaptureFixture) -> None:
    """Threaded runtime: the invocation and the worker go on; the instrument
    is removed after its first failure; the others stay."""

    class Broken:
        def after_invocation(self, kc: Any, cpu: Any, elapsed_ns: int, exc: Any) -> None:
            raise RuntimeError("instrument bug")

    counted: list[str] = []

    class Counter(kcont.Instrument):
        def before_invocation(self, kc: Any, cpu: Any) -> None:
            counted.append(kc.name)

    ran: list[int] = []
    with Runtime(ncpu=2) as rt:
        broken = Broken()
        rt.add_instrument(broken)
        rt.add_instrument(Counter())
        with caplog.at_level(logging.ERROR, logger="kcont"):
            for i in range(20):
                rt.continuation(kcont.wq_softnet, lambda a, k: ran.append(a), i, name="k").schedule()
            rt.wait_idle(timeout=10)
        assert sorted(ran) == list(range(20))
        assert len(counted) == 20
        assert broken not in rt.instruments and len(rt.instruments) == 1
        failures = [r for r in caplog.records if "instrument" in r.getMessage()]
        assert len(failures) == 1 and "after_invocation" in failures[0].getMessage()
        assert all(w["soft"] == 1 for w in rt.stats()["workers"])  # no worker died


def test_slow_threshold_warns_once_per_continuation_name(caplog: pytest.LogCaptureFixture) -> None:
    """A function slower than slow_threshold gets one WARNING naming it; its
    next slow runs within a minute are not reported again; fast ones never."""
    with Runtime(ncpu=1, slow_threshold=0.005) as rt, caplog.at_level(logging.WARNING, logger="kcont"):
        slow = rt.continuation(kcont.wq_prilow, lambda a, k: time.sleep(0.01), None, name="slowpoke")
        fast = rt.continuation(kcont.wq_prilow, lambda a, k: None, None, name="quick")
        for _ in range(3):
            slow.schedule()
            fast.schedule()
            rt.wait_idle(timeout=10)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "slowpoke" in warnings[0] and "slow_threshold" in warnings[0]
    assert rt.slow_threshold == pytest.approx(0.005)


def test_slow_threshold_counts_real_time_on_the_simulator(caplog: pytest.LogCaptureFixture) -> None:
    rt = SimRuntime(ncpu=1)
    rt.slow_threshold = 0.005
    with rt, caplog.at_level(logging.WARNING, logger="kcont"):
        Continuation(kcont.wq_softnet, lambda a, k: time.sleep(0.01), None, name="sleepy").schedule()
        rt.run_until_idle()
    assert any("sleepy" in r.getMessage() for r in caplog.records)
    rt.slow_threshold = None
    assert rt._time_funcs is False  # nothing left for the dispatch function to do


def test_histograms_count_every_invocation_per_queue() -> None:
    """Runtime(histograms=True): per queue, log2 histograms of queue wait and
    run time, each holding one count per invocation."""
    with Runtime(ncpu=2, histograms=True) as rt:
        for _ in range(30):
            rt.continuation(kcont.wq_softnet, lambda a, k: None, None).schedule()
            rt.continuation(kcont.wq_prilow, lambda a, k: time.sleep(0.001), None).schedule()
        timer = rt.continuation(kcont.wq_softclock, lambda a, k: None, None)
        timer.schedule(1)
        rt.wait_ticks(2, timeout=10)
        rt.wait_idle(timeout=10)
        stats = rt.stats()
    for name in ("wq_softnet", "wq_prilow", "wq_softclock"):
        queue = stats["queues"][name]
        assert len(queue["queue_wait_ns"]) == len(queue["run_ns"]) == HIST_BUCKETS
        assert sum(queue["queue_wait_ns"]) == sum(queue["run_ns"]) == queue["invoked"]
    # time.sleep(0.001): every run of wq_prilow took at least 2**19 ns (0.52 ms)
    assert sum(stats["queues"]["wq_prilow"]["run_ns"][20:]) == 30
    with Runtime(ncpu=1) as plain:
        assert "queue_wait_ns" not in plain.stats()["queues"]["wq_softnet"]


def test_stats_have_the_typed_shape() -> None:
    """stats() has exactly the keys its TypedDicts declare."""
    with Runtime(ncpu=1) as rt:
        threaded = rt.stats()
    sim = SimRuntime(ncpu=1).stats()
    assert set(sim) == kcont.RuntimeStats.__required_keys__
    assert set(threaded) == kcont.ThreadedRuntimeStats.__required_keys__
    assert set(sim["totals"]) == kcont.CounterStats.__required_keys__
    assert set(threaded["workers"][0]) == kcont.WorkerStats.__required_keys__
    for queue in sim["queues"].values():
        assert set(queue) == kcont.QueueStats.__required_keys__


def test_current_runtime_is_typed_as_a_runtime() -> None:
    rt = SimRuntime()
    with rt:
        current: kcont.RuntimeCore = kcont.current_runtime()
        assert current is rt


def test_watch_is_read_once_per_dispatch_call_and_applies_to_later_ones() -> None:
    """An instrument added while a function runs sees the next invocations."""
    rt = SimRuntime(ncpu=1)
    recorder = Recorder(rt)

    def adds(arg: None, kc: Any) -> None:
        rt.add_instrument(recorder)

    with rt:
        Continuation(kcont.wq_softnet, adds, None, name="adds").schedule()
        Continuation(kcont.wq_softnet, lambda a, k: None, None, name="next").schedule()
        rt.run_until_idle()
    assert [c[:2] for c in recorder.calls] == [("before", "next"), ("after", "next")]


def test_a_removed_instrument_is_not_called_again() -> None:
    """Removed from inside an invocation, an instrument does not even see
    that invocation's end: removal applies at once, not at the next batch."""
    rt = SimRuntime(ncpu=1)
    recorder = Recorder(rt)
    rt.add_instrument(recorder)

    def removes(arg: None, kc: Any) -> None:
        rt.remove_instrument(recorder)

    with rt:
        Continuation(kcont.wq_softnet, removes, None, name="removes").schedule()
        Continuation(kcont.wq_softnet, lambda a, k: None, None, name="next").schedule()
        rt.run_until_idle()
    assert [c[:2] for c in recorder.calls] == [("before", "removes")]

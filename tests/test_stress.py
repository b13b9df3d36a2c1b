"""The threaded stress harness (``python -m kcont stress``): a short run with
exact accounting, and proof that its checks fail when kcont misbehaves.

The run's length comes from ``KCONT_STRESS_SECONDS`` (default 5; CI sets
about 20).  Everything is bounded: the harness joins its producers with a
timeout, shuts the runtime down with a timeout and arms a faulthandler dump.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import kcont
from kcont import stress
from kcont.stress import StressConfig, run_stress

pytestmark = [pytest.mark.threaded, pytest.mark.stress]

STRESS_SECONDS = float(os.environ.get("KCONT_STRESS_SECONDS", "5"))
SRC = Path(__file__).resolve().parents[1] / "src"


def _kcont_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("kcont/")]


@pytest.mark.timeout(STRESS_SECONDS + 180)
def test_stress_run_has_no_violation_and_balances_exactly() -> None:
    before = len(_kcont_threads())
    config = StressConfig(threads=4, continuations=48, duration=STRESS_SECONDS, seed=20261128)
    result = run_stress(config)
    print(result.summary())
    assert result.ok, result.summary()
    f = result.figures
    acc = result.account
    assert acc is not None
    # The load was real: every kind of operation and outcome happened.
    for name in (
        "tickets_now",
        "tickets_timer",
        "starts",
        "faults",
        "ebusy",
        "cancelled_stop",
        "cancelled_destroy",
        "replaced",
        "halts",
        "destroys",
        "self_destroys",
        "setargs",
        "setfuncs",
        "setmutex",
        "handovers",
        "temp_queues",
        "order_checked",
        "timer_checked",
    ):
        assert f[name] > 0, (name, f)
    # Each ticket has exactly one outcome (the harness checks it too).
    outcomes = (
        f["starts"]
        + f["cancelled_stop"]
        + f["cancelled_halt"]
        + f["cancelled_destroy"]
        + f["replaced"]
        + f["replaced_or_halted"]
        + acc.pending
        + acc.cancelled
    )
    assert f["tickets_now"] + f["tickets_timer"] == outcomes
    # Every exception counted, once, everywhere.
    assert f["faults"] == f["handler_seen"] == acc.failed
    assert acc.unfinished == 0
    # The account equals the journal (queues freed during the run included).
    assert acc.ran == f["starts"]
    # No worker outlives the run.
    assert len(_kcont_threads()) == before
    # The harness's own memory is flat: it keeps counters for the queues that
    # can be live at once only (the 8 predefined, the acquired ones, one per
    # temporary priority and kind), not for every temporary queue the run
    # acquired and freed.  (A producer still holding a slot of a freed queue
    # may add a counter row back, rarely: a few at most.)
    live = 8 + len(config.acquired_queues) + 2 * len(config.temp_priorities)
    assert f["tracked_queues"] <= live, f
    assert f["counter_rows"] <= live + 4 < f["temp_queues"], f


@pytest.mark.timeout(120)
def test_stress_detects_a_swallowed_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    """Harness self-test: a runtime that drops one exception in three before
    its handler sees it is reported."""
    original = kcont.RuntimeCore._report_exception
    counter = itertools.count()

    def lossy(self: Any, kc: Any, exc: BaseException) -> None:
        if next(counter) % 3 == 0:
            return
        original(self, kc, exc)

    monkeypatch.setattr(kcont.RuntimeCore, "_report_exception", lossy)
    result = run_stress(StressConfig(threads=2, continuations=16, duration=1.0, seed=3, p_raise=0.2))
    assert not result.ok
    assert any("exceptions:" in v for v in result.violations), result.violations


@pytest.mark.timeout(120)
def test_stress_detects_a_stop_that_does_not_dequeue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Harness self-test: stop() that reports a queued invocation prevented but
    leaves it queued makes it run after a successful stop."""
    from kcont._core.continuation import Continuation
    from kcont._core.flags import DESTROYED, EXPIRED, PENDING, QUEUED

    original = Continuation._stop_locked

    def leaky(self: Any) -> bool:
        flags = self._flags
        if flags & QUEUED and not flags & (PENDING | DESTROYED):
            self._flags = flags & ~EXPIRED
            return False
        return original(self)  # type: ignore[no-any-return]

    monkeypatch.setattr(Continuation, "_stop_locked", leaky)
    result = run_stress(StressConfig(threads=2, continuations=16, duration=1.0, seed=4))
    assert not result.ok
    assert any("cancelled" in v or "stopped" in v for v in result.violations), result.violations


@pytest.mark.timeout(120)
def test_command_line_prints_the_figures_and_exits_zero() -> None:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.run(
        [sys.executable, "-m", "kcont.stress", "--duration", "1", "--threads", "2", "--quiet", "--json"],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # ``--json`` alone: the JSON document on standard output, the text report on standard error.
    assert "violations         0" in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "kcont.stress/1" and doc["violations"] == 0 and doc["ok"] is True


def test_add_arguments_and_run_are_the_cli_entry_points() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    stress.add_arguments(parser)
    args = parser.parse_args(["--duration", "0.5", "--threads", "1", "--continuations", "8", "--quiet"])
    assert args.duration == 0.5 and args.threads == 1 and args.continuations == 8
    assert stress.run(args) == 0

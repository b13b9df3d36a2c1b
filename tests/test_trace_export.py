"""export_trace: a recorded run as Chrome trace event JSON (Perfetto,
chrome://tracing), on both runtimes."""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

import kcont
from kcont import Continuation, Mutex, Runtime, SimRuntime


def load(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        trace: dict[str, Any] = json.load(f)
    assert isinstance(trace["traceEvents"], list)
    return trace


def spans(trace: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in trace["traceEvents"] if e["ph"] == "X"]


def assert_tracks_never_overlap(trace: dict[str, Any]) -> None:
    tracks: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for span in spans(trace):
        tracks[(span["pid"], span["tid"])].append(span)
    for track in tracks.values():
        track.sort(key=lambda s: s["ts"])
        for before, after in itertools.pairwise(track):
            assert before["ts"] + before["dur"] <= after["ts"], (before, after)


def invoked(rt: Any) -> int:
    return sum(q["invoked"] for q in rt.stats()["queues"].values())


def noop(arg: object, kc: object) -> None:
    pass


def test_sim_trace_has_one_span_per_invocation_with_its_waits(tmp_path: Path) -> None:
    """Simulator: one span per invocation on its CPU's track, none overlapping,
    as many as stats() counts; queue and lock waits in ticks."""
    rt = SimRuntime(ncpu=2, hz=100, trace=True, seed=3)
    rt.exception_handler = lambda kc, exc: None
    lock = Mutex("L")
    with rt:
        for i in range(10):
            Continuation(kcont.wq_softnet, noop, None, name=f"soft{i}").schedule(cpu=rt.cpus[i % 2])
            Continuation(kcont.wq_prilow, noop, None, name=f"thread{i}").schedule(cpu=rt.cpus[i % 2])
        timer = Continuation(kcont.wq_softclock, noop, None, name="timer")
        timer.schedule(3)
        locked = Continuation(kcont.wq_softnet, noop, None, lock=lock, name="locked")
        lock.acquire()
        locked.schedule(cpu=rt.cpus[0])
        rt.advance(2)  # parked on the lock for two ticks
        lock.release()
        rt.advance(5)
        Continuation(kcont.wq_softnet, lambda a, k: 1 / 0, None, name="fails").schedule()
        rt.run_until_idle()
        path = tmp_path / "sim.json"
        written = rt.export_trace(path)
    trace = load(path)
    by_name = {s["name"]: s for s in spans(trace)}
    assert written == len(spans(trace)) == invoked(rt) == 23
    assert_tracks_never_overlap(trace)
    assert by_name["locked"]["args"]["lock_wait_ticks"] == 2
    assert by_name["locked"]["args"]["queue_wait_ticks"] == 2
    assert by_name["timer"]["args"]["queue_wait_ticks"] == 0  # from its expiry
    assert by_name["soft0"]["args"]["queue"] == "wq_softnet"
    assert by_name["fails"]["args"]["outcome"] == "ZeroDivisionError"
    assert by_name["soft1"]["args"]["outcome"] == "end"
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    assert {"CPU 0", "CPU 1"} <= names
    assert {e["cat"] for e in trace["traceEvents"] if e["ph"] == "i"} >= {"schedule", "expire", "park"}
    assert rt.trace[0] == kcont.TraceEvent(0, "schedule", "soft0", 0, 0)  # TraceEvent unchanged


def test_sim_trace_is_deterministic(tmp_path: Path) -> None:
    """The same seed gives the same exported trace."""

    def run(path: Path) -> str:
        rt = SimRuntime(ncpu=3, trace=True, seed=11, name="same")
        with rt:
            for i in range(20):
                Continuation(kcont.wq_softnet, noop, None, name=f"k{i}").schedule(cpu=rt.cpus[i % 3])
            rt.run_until_idle()
            rt.export_trace(path)
        return path.read_text()

    assert run(tmp_path / "a.json") == run(tmp_path / "b.json")


def test_threaded_trace_spans_sit_on_their_worker_threads(tmp_path: Path) -> None:
    """Threaded runtime: spans on the worker thread tracks (named like the
    threads), none overlapping, as many as stats() counts, waits in µs."""
    with Runtime(ncpu=2, trace=True) as rt:
        lock = Mutex("L")

        def submitter(base: int) -> None:
            for i in range(50):
                wq = kcont.wq_softnet if i % 2 else kcont.wq_prilow
                rt.continuation(
                    wq, noop, None, name=f"t{base}-{i}", lock=lock if i % 5 == 0 else None
                ).schedule()

        threads = [threading.Thread(target=submitter, args=(b,)) for b in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        timer = rt.continuation(kcont.wq_softclock, noop, None, name="timer")
        timer.schedule(2)
        rt.wait_ticks(3, timeout=10)
        rt.wait_idle(timeout=10)
        path = tmp_path / "threaded.json"
        written = rt.export_trace(path)
        count = invoked(rt)
    trace = load(path)
    assert written == len(spans(trace)) == count == 201
    assert_tracks_never_overlap(trace)
    thread_names = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    for span in spans(trace):
        assert thread_names[span["tid"]].startswith(f"kcont/{rt.name}/")
        assert span["args"]["queue_wait_us"] >= 0 and span["args"]["lock_wait_us"] >= 0
        assert span["dur"] >= 0
    assert any(s["name"] == "timer" for s in spans(trace))
    assert trace["otherData"]["clock"] == "perf_counter_ns"


def test_export_needs_a_trace(tmp_path: Path) -> None:
    with Runtime(ncpu=1, histograms=True) as rt, pytest.raises(kcont.InvalidArgumentError):
        rt.export_trace(tmp_path / "none.json")
    with pytest.raises(kcont.InvalidArgumentError):
        SimRuntime().export_trace(tmp_path / "none.json")


@pytest.mark.parametrize("page", ["howto-asyncio.md", "howto-tracing.md", "howto-instrumentation.md"])
def test_howto_examples_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every python block of the how-to pages runs as printed."""
    text = (Path(__file__).resolve().parent.parent / "docs" / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)  # the tracing examples write their files here
    for block in blocks:
        exec(compile(block, page, "exec"), {"__name__": "__main__"})

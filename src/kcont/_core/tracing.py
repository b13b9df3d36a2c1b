"""Trace export: recorded events as Chrome trace event JSON.

What it owns
    :func:`chrome_trace` turns the events a runtime recorded
    (``RuntimeCore._record``) into the Chrome trace event format, which
    https://ui.perfetto.dev and ``chrome://tracing`` open; :func:`write_chrome_trace`
    writes it to a file.  It runs on a copy of the events, with no lock held.

What a trace shows
    * One process (``pid`` 1) named after the runtime.
    * One track (``tid``) per thread that ran continuations on the threaded
      runtime (named like the thread, ``kcont/<runtime>/<cpu>/<band>``), or
      per CPU on the simulator.  A thread runs one invocation at a time, so
      the spans of a track never overlap.
    * One complete span (``"ph": "X"``) per invocation, from the start of its
      function to the end of the invocation, named by the continuation's
      label, with ``args``: ``queue`` (the workqueue), ``cpu``,
      ``queue_wait`` (from the commit of the invocation, an immediate
      schedule or a timer's expiry, to its start), ``lock_wait`` (from the
      moment the dispatcher found its lock busy, or the continuation still
      running elsewhere, and parked it, to its start; 0 if it was never the
      entry found blocked: those queued behind it count that time in
      ``queue_wait`` only) and
      ``outcome`` (``end``, or the name of the exception it raised).
    * Optionally, instant events (``"ph": "i"``) for ``schedule``,
      ``expire``, ``park``, ``stop`` and ``destroy``, on the track of the
      thread (or CPU) that made them.

Time
    Threaded runtime: ``time.perf_counter_ns`` stamps, drawn in microseconds
    from the runtime's creation; waits in ``args`` are in microseconds
    (``queue_wait_us``, ``lock_wait_us``).  Simulator: virtual time has no
    duration, so each tick is drawn as a slot of :data:`SIM_TICK_US`
    microseconds (wider if one tick holds more events) in which the events
    follow one another 1 µs apart, in the order they happened; waits in
    ``args`` are in ticks (``queue_wait_ticks``, ``lock_wait_ticks``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

SIM_TICK_US = 1000  # a simulated tick is drawn as 1 ms unless it holds more events

_INSTANTS = ("schedule", "expire", "park", "stop", "destroy")


def chrome_trace(
    events: Sequence[tuple[Any, ...]],
    *,
    runtime: str,
    virtual: bool,
    hz: int,
    origin: int,
    thread_names: dict[int, str],
    instants: bool = True,
) -> dict[str, Any]:
    """The Chrome trace (a JSON-ready dict) of ``events`` (see module docstring)."""
    times = _sim_times(events) if virtual else [(e[0] - origin) / 1000 for e in events]
    unit = "ticks" if virtual else "us"

    def wait(since: int, until: int) -> float:
        return until - since if virtual else (until - since) / 1000

    tracks: dict[Any, int] = {}  # thread ident (threaded) or CPU index (simulator) -> tid

    def track(event: tuple[Any, ...]) -> int:
        key = event[3] if virtual else event[6]
        tid = tracks.get(key)
        if tid is None:
            tid = tracks[key] = len(tracks) + 1
        return tid

    out: list[dict[str, Any]] = []
    committed: dict[int, int] = {}  # key -> stamp of its queued invocation's commit
    parked: dict[int, int] = {}  # key -> stamp of its first park since that commit
    running: dict[int, tuple[int, float, dict[str, Any], int]] = {}  # key -> (stamp, ts, args, tid)
    for event, ts in zip(events, times, strict=True):
        stamp, kind, label, cpu, detail, key, _thread, queue = event[:8]
        if kind == "start":
            since = committed.pop(key, stamp)
            parked_at = parked.pop(key, stamp)
            args = {
                "queue": queue,
                "cpu": cpu,
                f"queue_wait_{unit}": wait(since, stamp),
                f"lock_wait_{unit}": wait(parked_at, stamp),
            }
            running[key] = (stamp, ts, args, track(event))
            continue
        if kind in ("end", "raise"):
            begun = running.pop(key, None)
            if begun is not None:
                _, start_ts, args, tid = begun
                args["outcome"] = "end" if kind == "end" else type(detail).__qualname__
                out.append(
                    {
                        "ph": "X",
                        "pid": 1,
                        "tid": tid,
                        "ts": start_ts,
                        "dur": max(ts - start_ts, 0),
                        "name": label,
                        "cat": queue,
                        "args": args,
                    }
                )
            continue
        if kind == "expire" or (kind == "schedule" and detail == 0):
            committed[key] = stamp
            parked.pop(key, None)
        elif kind == "park":
            parked.setdefault(key, stamp)
        elif kind in ("schedule", "stop", "destroy"):
            committed.pop(key, None)
            parked.pop(key, None)
        if instants and kind in _INSTANTS:
            args = {"queue": queue, "cpu": cpu}
            if kind == "schedule":
                args["nticks"] = detail
            out.append(
                {
                    "ph": "i",
                    "s": "t",
                    "pid": 1,
                    "tid": track(event),
                    "ts": ts,
                    "name": f"{kind} {label}",
                    "cat": kind,
                    "args": args,
                }
            )
    meta: list[dict[str, Any]] = [
        {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": f"kcont {runtime}"}},
    ]
    for key, tid in tracks.items():
        if virtual:
            name = "shared queues (no CPU)" if key is None else f"CPU {key}"
        else:
            name = thread_names.get(key, f"thread {key}")
        meta.append({"ph": "M", "pid": 1, "tid": tid, "name": "thread_name", "args": {"name": name}})
        meta.append(
            {"ph": "M", "pid": 1, "tid": tid, "name": "thread_sort_index", "args": {"sort_index": tid}}
        )
    return {
        "traceEvents": meta + out,
        "displayTimeUnit": "ms",
        "otherData": {
            "runtime": runtime,
            "clock": "virtual ticks" if virtual else "perf_counter_ns",
            "hz": hz,
        },
    }


def _sim_times(events: Sequence[tuple[Any, ...]]) -> list[float]:
    """Microseconds for virtual events: tick slots, events 1 µs apart within one."""
    per_tick: dict[int, int] = {}
    for event in events:
        per_tick[event[0]] = per_tick.get(event[0], 0) + 1
    slot = max(SIM_TICK_US, max(per_tick.values(), default=0) + 1)
    times: list[float] = []
    seq = 0
    previous = None
    for event in events:
        tick = event[0]
        seq = seq + 1 if tick == previous else 0
        previous = tick
        times.append(float(tick * slot + seq))
    return times


def write_chrome_trace(
    path: str | os.PathLike[str], events: Sequence[tuple[Any, ...]], **options: Any
) -> int:
    """Write :func:`chrome_trace` of ``events`` to ``path``; returns the number of spans."""
    trace = chrome_trace(events, **options)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(trace, f)
    return sum(1 for e in trace["traceEvents"] if e["ph"] == "X")

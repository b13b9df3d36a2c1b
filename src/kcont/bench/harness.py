"""How a benchmark is measured: :class:`Config` (sizes, rounds), :class:`Case`
(one measured cell), :func:`run_cases` (round-robin rounds with a warm-up and
a rotated order, the GC collected before each measurement), :func:`summarize`
(medians and median per-round ratios) and :class:`Group` (one table).

No shared state: each benchmark builds its cases and runs them from the
calling thread.
"""

from __future__ import annotations

import gc
import statistics
import sys
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, TextIO

BENCHMARKS = ("immediate", "cross", "timers", "pipeline", "create", "memory", "latency")

Turn = Callable[[], AbstractContextManager[Any]]


# -- configuration --------------------------------------------------------------


@dataclass
class Config:
    """What to run and how long (``--quick`` shrinks every size)."""

    quick: bool = False
    rounds: int = 5
    sizes: list[int] = field(default_factory=lambda: [1_000, 10_000, 100_000, 1_000_000])
    only: tuple[str, ...] = BENCHMARKS
    n_immediate: int = 100_000
    n_cross: int = 50_000
    timer_ops: int = 50_000
    slow_budget: float = 0.3
    sched_max: int = 100_000
    create_size: int = 50_000
    mem_size: int = 100_000
    latency_samples: int = 2000
    seed: int = 1
    out: TextIO = sys.stdout
    stop: threading.Event | None = None  # set (by Ctrl-C): stop at the next measurement
    progress: bool = False  # say which benchmark starts (its table comes when it ends)
    # Wraps every measured round: the side-by-side run passes the turn between
    # the two cores' processes here, so that only one of them measures at a time.
    turn: Turn = nullcontext
    other_core: bool = True  # also run the other core, in a subprocess (--this-core-only: False)
    pipeline_rounds: int = 3
    pipeline_duration: float = 2.0
    pipeline_rate: int = 8_000
    pipeline_high_rate: int = 100_000

    @classmethod
    def quick_config(cls) -> Config:
        return cls(
            quick=True,
            rounds=2,
            sizes=[1_000, 10_000],
            n_immediate=5_000,
            n_cross=2_000,
            timer_ops=4_000,
            slow_budget=0.02,
            sched_max=10_000,
            create_size=2_000,
            mem_size=2_000,
            latency_samples=60,
            pipeline_rounds=1,
            pipeline_duration=0.3,
            pipeline_rate=2_000,
            pipeline_high_rate=20_000,
        )


# -- cases, rounds, ratios --------------------------------------------------------

Measure = Callable[[int], "tuple[float, int]"]  # n -> (seconds, operations done)


@dataclass
class Case:
    """One measured cell.  ``measure(n)`` runs ``n`` operations (fewer if it
    hits its time budget) and returns ``(seconds, operations)``."""

    name: str
    impl: str
    role: str  # "kcont", "floor", "competitor", "reference", "variant" (kcont through another API)
    measure: Measure
    n: int
    floor: str | None = None
    versus: str | None = None
    also: tuple[str, ...] = ()
    op: str = ""
    note: str = ""


def _gc_prep(full: bool) -> None:
    gc.collect() if full else gc.collect(1)


class Interrupted(Exception):
    """The run was asked to stop (Ctrl-C); raised between two measurements."""


def check_stop(stop: threading.Event | None) -> None:
    """Raise :class:`Interrupted` if ``stop`` is set (a point where stopping is clean)."""
    if stop is not None and stop.is_set():
        raise Interrupted


def run_cases(
    cases: Sequence[Case],
    rounds: int,
    *,
    full_gc: bool = True,
    stop: threading.Event | None = None,
    turn: Turn = nullcontext,
) -> dict[str, list[tuple[float, int]]]:
    """Round-robin: one shorter warm-up round, then ``rounds`` rounds with the
    order rotated each round, each round inside ``turn()``.  Returns per case
    the (ns/op, ops) of each round.

    Raises:
        Interrupted: ``stop`` was set (checked before each measurement).
    """
    samples: dict[str, list[tuple[float, int]]] = {c.name: [] for c in cases}
    step = max(1, len(cases) // max(1, rounds))  # spread the starting points over the list
    for r in range(-1, rounds):
        shift = (r * step) % len(cases) if r >= 0 else 0
        order = list(cases[shift:]) + list(cases[:shift])
        if not full_gc:
            gc.collect()
        with turn():
            for case in order:
                check_stop(stop)
                _gc_prep(full_gc)
                n = case.n if r >= 0 else max(1, case.n // 5)
                seconds, ops = case.measure(n)
                if r >= 0:
                    samples[case.name].append((seconds * 1e9 / max(ops, 1), ops))
    return samples


def _median_ratio(a: list[tuple[float, int]], b: list[tuple[float, int]]) -> float | None:
    if not a or not b or len(a) != len(b):
        return None
    return statistics.median(x[0] / y[0] for x, y in zip(a, b, strict=False) if y[0] > 0)


def summarize(cases: Sequence[Case], samples: dict[str, list[tuple[float, int]]]) -> list[dict[str, Any]]:
    """Rows: median ns/op, min, and the median of per-round ratios to the
    case's floor, main competitor and other references."""
    rows = []
    for c in cases:
        s = samples[c.name]
        ns = [x[0] for x in s]
        ratios = {}
        for ref in (c.floor, c.versus, *c.also):
            if ref is not None and ref in samples and ref != c.name:
                value = _median_ratio(s, samples[ref])
                if value is not None:
                    ratios[ref] = value
        rows.append(
            {
                "case": c.name,
                "impl": c.impl,
                "role": c.role,
                "op": c.op,
                "ns_per_op": statistics.median(ns),
                "ns_min": min(ns),
                "ns_rounds": ns,
                "ops": min(x[1] for x in s),
                "floor": c.floor,
                "x_floor": ratios.get(c.floor) if c.floor else None,
                "versus": c.versus,
                "x_versus": ratios.get(c.versus) if c.versus else None,
                "ratios": ratios,
                "note": c.note,
            }
        )
    return rows


@dataclass
class Group:
    """The result of one benchmark (one table)."""

    name: str
    title: str
    params: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    kind: str = "ns"  # "ns", "bytes", "latency" or "pipeline"
    implementation: str = ""  # the kcont core measured: "compiled" or "python"
    finalizers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def row(self, case: str) -> dict[str, Any] | None:
        for r in self.rows:
            if r["case"] == case:
                return r
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "kind": self.kind,
            "params": self.params,
            "rows": self.rows,
            "notes": self.notes,
            "skipped": self.skipped,
            "implementation": self.implementation,
        }

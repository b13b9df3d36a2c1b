"""kcont's benchmark suite: kcont beside what a Python user would pick instead.

``python -m kcont bench`` (or ``python benchmarks/run.py``) measures, in one
run, both kcont cores (the compiled one and the pure-Python reference; see
:mod:`.cores`) side by side, each next to:

* ``immediate``: schedule + dispatch of a reused continuation, at depth 1
  (schedule one, run it) and as a batch (schedule N, run them all), on the
  simulated runtime and, when present, on the threaded runtime from the same
  thread; against the ``collections.deque`` floors and asyncio ``call_soon``
  (uvloop too when installed).
* ``cross``: producer threads scheduling onto the threaded runtime, against a
  ``queue.SimpleQueue`` hand-off (the floor), ``ThreadPoolExecutor.submit``
  and asyncio ``call_soon_threadsafe``.
* ``timers``: re-arming a pending continuation and stop + re-schedule with P
  continuations pending, against a bare hashed timing wheel (the floor),
  asyncio ``call_later`` + ``cancel``, ``sched`` and Twisted
  ``DelayedCall.reset``.
* ``pipeline``: the packet pipeline of ``python -m kcont demo`` against the
  same pipeline on asyncio, on the same traffic: process CPU per packet at a
  moderate offered rate, packets per second at a high one.
* ``create`` and ``memory``: the cost of creating (and arming) a continuation,
  and the memory per pending continuation (tracemalloc), against asyncio's
  ``TimerHandle``.
* ``latency``: wake-up latency from ``schedule`` to the start of the function,
  p50/p99, against a bare ``queue.SimpleQueue`` hand-off between two threads.

Both cores
    The process of the command runs its own core and starts a partner
    process on the other (``KCONT_PURE_PYTHON``); the two take turns round by
    round, so that only one measures at a time (:mod:`.cores`).  Without a
    compiled core, the pure core runs alone and the run says so.

Method
    The cases of a benchmark run round-robin inside one process, the order
    rotated each round, after one shorter warm-up round.  A cell is the median
    over rounds, and a ratio is the **median of the per-round ratios** to the
    reference measured in the same round, so that the noise of a shared
    machine cancels out.  The cyclic GC stays on; ``gc.collect()`` runs before
    every measurement (with a million timers pending, a full collection takes
    most of a second: there it runs once per round, and a young-generation
    collection before each measurement).

Optional competitors (uvloop, Twisted) and ``--plot`` (matplotlib) come with
the ``bench`` extra (``pip install 'kcont[bench]'``) and are imported lazily;
a missing competitor is skipped with a note, and ``--plot`` without
matplotlib is refused before the run.  The suite needs only the standard library.

Layout: ``harness`` (configuration, rounds, ratios), ``competitors`` (the
bare wheel floor and the optional competitors), one module per benchmark
(``immediate``, ``cross``, ``timers``, ``pipeline``, ``create``, ``memory``,
``latency``), ``report`` (tables, comparisons, plot), ``cores`` and
``_worker`` (the other core's process), ``driver`` (the run) and ``cli``
(the command).
"""

from __future__ import annotations

from .cli import add_arguments, config_from_args, main, run_from_args
from .competitors import SKIP_THREADED, SKIP_TWISTED, SKIP_UVLOOP, WHEEL_BUCKETS, HashedWheel, WheelTimer
from .create import bench_create
from .cross import bench_cross
from .driver import run
from .harness import BENCHMARKS, Case, Config, Group, Measure, run_cases, summarize
from .immediate import bench_immediate
from .latency import bench_latency
from .memory import bench_memory
from .pipeline import bench_pipeline
from .report import evaluate_comparisons, print_comparisons, print_group, print_groups, write_plot
from .timers import (
    CHUNK,
    D_TICKS,
    FULL_GC_MAX_PENDING,
    LATER_TICKS,
    SEC_PER_TICK,
    SLOW_CHUNK,
    UVLOOP_TIMERS_MAX,
    bench_timers,
)

__all__ = [
    "BENCHMARKS",
    "CHUNK",
    "D_TICKS",
    "FULL_GC_MAX_PENDING",
    "LATER_TICKS",
    "SEC_PER_TICK",
    "SKIP_THREADED",
    "SKIP_TWISTED",
    "SKIP_UVLOOP",
    "SLOW_CHUNK",
    "UVLOOP_TIMERS_MAX",
    "WHEEL_BUCKETS",
    "Case",
    "Config",
    "Group",
    "HashedWheel",
    "Measure",
    "WheelTimer",
    "add_arguments",
    "bench_create",
    "bench_cross",
    "bench_immediate",
    "bench_latency",
    "bench_memory",
    "bench_pipeline",
    "bench_timers",
    "config_from_args",
    "evaluate_comparisons",
    "main",
    "print_comparisons",
    "print_group",
    "print_groups",
    "run",
    "run_cases",
    "run_from_args",
    "summarize",
    "write_plot",
]

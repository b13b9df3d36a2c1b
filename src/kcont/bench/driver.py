"""The benchmark run: :func:`run` runs the selected benchmarks in order, prints
their tables and the comparisons, and returns the results (the JSON
document).

Locking: none; runs in the calling thread.  ``cfg.stop`` is set from the
SIGINT handler and only read here.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import platform
import sys
import time
from contextlib import ExitStack
from typing import Any

import kcont

from .._cli import core_description
from .competitors import _threaded_runtime_available, _uvloop
from .create import bench_create
from .cross import bench_cross
from .harness import Config, Group, Interrupted, check_stop
from .immediate import bench_immediate
from .latency import bench_latency
from .memory import bench_memory
from .report import evaluate_comparisons, print_comparisons, print_group
from .timers import bench_timers

perf = time.perf_counter


# -- driver ---------------------------------------------------------------------------------


SCHEMA = "kcont.bench/1"  # the JSON document's format and version


def _meta(cfg: Config) -> dict[str, Any]:
    return {
        "kcont": kcont.__version__,
        "implementation": kcont.implementation,  # kcont's core: "compiled" or "python"
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "gc": "on",
        "quick": cfg.quick,
        "rounds": cfg.rounds,
        "sizes": cfg.sizes,
        "benchmarks": list(cfg.only),
        "threaded_runtime": _threaded_runtime_available(),
        "uvloop": _uvloop() is not None,
        "twisted": importlib.util.find_spec("twisted") is not None,
        "switchinterval": sys.getswitchinterval(),
        "loadavg_at_start": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run(cfg: Config) -> dict[str, Any]:
    """Run the selected benchmarks, print their tables, return the results
    (the JSON document).  If ``cfg.stop`` is set meanwhile (Ctrl-C), the
    benchmark running stops at its next measurement, cleans up, and the
    results hold the benchmarks finished, with ``"interrupted": true``."""
    out = cfg.out
    meta = _meta(cfg)
    print(
        f"kcont {meta['kcont']} benchmarks ({core_description()}): "
        f"Python {meta['python']} on {meta['platform']}, "
        f"{meta['cpus']} CPUs; GC on; {cfg.rounds} rounds{' (quick)' if cfg.quick else ''}; "
        "median of rounds, ratios = median of per-round ratios",
        file=out,
    )
    if meta["loadavg_at_start"]:
        print(f"load average at start: {meta['loadavg_at_start']} (others' load skews absolute ns)", file=out)
    out.flush()
    groups: list[Group] = []
    started = perf()
    interrupted = False
    try:
        for name in cfg.only:
            check_stop(cfg.stop)
            t0 = perf()
            if name == "timers":
                for size in cfg.sizes:
                    check_stop(cfg.stop)
                    if cfg.progress:
                        print(f"\n... timers with {size:,} pending", file=out, flush=True)
                    t1 = perf()
                    g = bench_timers(cfg, size)
                    groups.append(g)
                    print_group(g, out)
                    print(f"   (timers P={size:,}: {perf() - t1:.1f} s)", file=out)
            else:
                if cfg.progress:
                    print(f"\n... {name}", file=out, flush=True)
                with ExitStack() as stack:
                    if name == "immediate":
                        g = bench_immediate(cfg, stack)
                    elif name == "cross":
                        g = bench_cross(cfg, stack)
                    elif name == "create":
                        g = bench_create(cfg, stack)
                    elif name == "memory":
                        g = bench_memory(cfg)
                    else:
                        g = bench_latency(cfg)
                groups.append(g)
                print_group(g, out)
            gc.collect()
            print(f"   ({name}: {perf() - t0:.1f} s)", file=out, flush=True)
    except Interrupted:
        interrupted = True
        print("\ninterrupted: the benchmark running was stopped; the results above are complete", file=out)
    comparisons = evaluate_comparisons(groups, quick=cfg.quick)
    print_comparisons(comparisons, out)
    meta["seconds"] = round(perf() - started, 1)
    meta["loadavg_at_end"] = _loadavg()
    print(f"\ntotal {meta['seconds']} s", file=out, flush=True)
    return {
        "schema": SCHEMA,
        "interrupted": interrupted,
        "meta": meta,
        "groups": [g.as_dict() for g in groups],
        "comparisons": comparisons,
    }

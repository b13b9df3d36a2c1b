"""The benchmark run: :func:`run` runs the selected benchmarks in order, prints
their tables and the comparisons, and returns the results (the JSON
document).
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

from .competitors import _threaded_runtime_available, _uvloop
from .create import bench_create
from .cross import bench_cross
from .harness import Config, Group
from .immediate import bench_immediate
from .latency import bench_latency
from .memory import bench_memory
from .report import evaluate_targets, print_group, print_targets
from .timers import bench_timers

perf = time.perf_counter


# -- driver ---------------------------------------------------------------------------------


def _meta(cfg: Config) -> dict[str, Any]:
    return {
        "kcont": kcont.__version__,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
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
    """Run the selected benchmarks, print their tables, return the results."""
    out = cfg.out
    meta = _meta(cfg)
    print(
        f"kcont {meta['kcont']} benchmarks: Python {meta['python']} on {meta['platform']}, "
        f"{meta['cpus']} CPUs; GC on; {cfg.rounds} rounds{' (quick)' if cfg.quick else ''}; "
        "median of rounds, ratios = median of per-round ratios",
        file=out,
    )
    if meta["loadavg_at_start"]:
        print(f"load average at start: {meta['loadavg_at_start']} (others' load skews absolute ns)", file=out)
    groups: list[Group] = []
    started = perf()
    for name in cfg.only:
        t0 = perf()
        if name == "timers":
            for size in cfg.sizes:
                t1 = perf()
                g = bench_timers(cfg, size)
                groups.append(g)
                print_group(g, out)
                print(f"   (timers P={size:,}: {perf() - t1:.1f} s)", file=out)
        else:
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
        print(f"   ({name}: {perf() - t0:.1f} s)", file=out)
    targets = evaluate_targets(groups)
    print_targets(targets, out)
    meta["seconds"] = round(perf() - started, 1)
    meta["loadavg_at_end"] = _loadavg()
    print(f"\ntotal {meta['seconds']} s", file=out)
    return {"meta": meta, "groups": [g.as_dict() for g in groups], "targets": targets}

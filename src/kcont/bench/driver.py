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
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import kcont

from .._cli import core_description
from .competitors import _threaded_runtime_available, _uvloop
from .cores import Partner
from .create import bench_create
from .cross import bench_cross
from .harness import Config, Group, Interrupted, check_stop
from .immediate import bench_immediate
from .latency import bench_latency
from .memory import bench_memory
from .pipeline import bench_pipeline
from .report import CORE_LABELS, core_label, evaluate_comparisons, print_comparisons, print_groups
from .timers import bench_timers

perf = time.perf_counter


# -- driver ---------------------------------------------------------------------------------


SCHEMA = "kcont.bench/2"  # the JSON document's format and version


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


def run_meta(cfg: Config) -> dict[str, Any]:
    """What describes this process's run (its core, the machine, the sizes)."""
    return _meta(cfg)


def run_groups(cfg: Config, on_group: Callable[[Group], None]) -> None:
    """Run the selected benchmarks on this process's core, handing each
    table to ``on_group`` as it ends.

    Raises:
        Interrupted: ``cfg.stop`` was set.
    """
    for name in cfg.only:
        check_stop(cfg.stop)
        if name == "timers":
            for size in cfg.sizes:
                check_stop(cfg.stop)
                if cfg.progress:
                    print(f"\n... timers with {size:,} pending", file=cfg.out, flush=True)
                _finish(bench_timers(cfg, size), on_group)
            continue
        if cfg.progress:
            print(f"\n... {name}", file=cfg.out, flush=True)
        with ExitStack() as stack:
            if name == "immediate":
                g = bench_immediate(cfg, stack)
            elif name == "cross":
                g = bench_cross(cfg, stack)
            elif name == "create":
                g = bench_create(cfg, stack)
            elif name == "memory":
                g = bench_memory(cfg)
            elif name == "pipeline":
                g = bench_pipeline(cfg)
            else:
                g = bench_latency(cfg)
        _finish(g, on_group)
        gc.collect()


def _finish(g: Group, on_group: Callable[[Group], None]) -> None:
    g.implementation = kcont.implementation
    on_group(g)


def _in_column_order(groups: list[Group]) -> list[Group]:
    order = list(CORE_LABELS)
    return sorted(groups, key=lambda g: order.index(g.implementation) if g.implementation in order else 9)


def run(cfg: Config) -> dict[str, Any]:
    """Run the selected benchmarks on both cores (the other one in a partner
    process, round by round), print their tables side by side and the
    comparisons, and return the results (the JSON document).  If
    ``cfg.stop`` is set meanwhile (Ctrl-C), the benchmark running stops at
    its next measurement, cleans up, and the results hold the benchmarks
    finished, with ``"interrupted": true``."""
    out = cfg.out
    meta = _meta(cfg)
    partner = Partner(cfg) if cfg.other_core else None
    if partner is not None and partner.alive:
        cfg.turn = partner.turn
        labels = [core_label(c) for c in sorted({kcont.implementation, partner.implementation})]
        cores = f"{labels[0]} and {labels[1]} cores side by side"
    else:
        cores = core_description()
    print(
        f"kcont {meta['kcont']} benchmarks ({cores}): "
        f"Python {meta['python']} on {meta['platform']}, "
        f"{meta['cpus']} CPUs; GC on; {cfg.rounds} rounds{' (quick)' if cfg.quick else ''}; "
        "median of rounds, ratios = median of per-round ratios",
        file=out,
    )
    if partner is not None and partner.alive:
        print(
            f"the {core_label(partner.implementation)} core runs in a second process; the two take turns, "
            "round by round (never measuring at the same time)",
            file=out,
        )
    elif partner is not None:
        print(f"{partner.problem}: the {core_label(kcont.implementation)} core only", file=out)
    if meta["loadavg_at_start"]:
        print(f"load average at start: {meta['loadavg_at_start']} (others' load skews absolute ns)", file=out)
    out.flush()
    groups: list[Group] = []
    started = perf()
    interrupted = False
    t_last = [perf()]

    def on_group(g: Group) -> None:
        shown = [g]
        if partner is not None and partner.alive:
            other = partner.group()
            if other is not None:
                shown.append(other)
            elif partner.problem:
                print(
                    f"\n{partner.problem}: the {core_label(kcont.implementation)} core only from here",
                    file=out,
                )
        shown = _in_column_order(shown)
        groups.extend(shown)
        print_groups(shown, out)
        what = f"timers P={g.params['pending']:,}" if g.name == "timers" else g.name
        print(f"   ({what}: {perf() - t_last[0]:.1f} s)", file=out, flush=True)
        t_last[0] = perf()

    partner_meta: dict[str, Any] | None = None
    try:
        run_groups(cfg, on_group)
        if partner is not None and partner.alive:
            partner_meta = partner.finish()
    except Interrupted:
        interrupted = True
        print("\ninterrupted: the benchmark running was stopped; the results above are complete", file=out)
    finally:
        if partner is not None:
            partner.close()
    comparisons: list[dict[str, Any]] = []
    for core in dict.fromkeys(g.implementation for g in groups):
        mine = [g for g in groups if g.implementation == core]
        for c in evaluate_comparisons(mine, quick=cfg.quick):
            c["implementation"] = core
            comparisons.append(c)
    print_comparisons(comparisons, out)
    meta["seconds"] = round(perf() - started, 1)
    meta["loadavg_at_end"] = _loadavg()
    meta["cores"] = list(dict.fromkeys(g.implementation for g in groups)) or [kcont.implementation]
    meta["other_core"] = (
        {
            "implementation": partner.implementation,
            "description": partner.description,
            "problem": partner.problem,
        }
        if partner is not None
        else None
    )
    if partner_meta is not None:
        meta["other_core"]["meta"] = partner_meta
    print(f"\ntotal {meta['seconds']} s", file=out, flush=True)
    return {
        "schema": SCHEMA,
        "interrupted": interrupted,
        "meta": meta,
        "groups": [g.as_dict() for g in groups],
        "comparisons": comparisons,
    }

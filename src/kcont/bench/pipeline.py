"""The ``pipeline`` benchmark: the job kcont is built for, the packet pipeline
of ``python -m kcont demo`` (UDP on loopback, per-flow continuations, a
re-armed idle timer and a delayed ACK per flow), on kcont and on the same
pipeline written with asyncio, on the same traffic.

Two offered rates: a moderate one, where both keep up and the figure is the
process CPU time per packet processed, and a high one, where the figure is
the packets processed per second.  Each round runs kcont and asyncio once
each at each rate, the order alternating between rounds.

Locking: none here; each run of the pipeline starts and joins its own
threads (see :mod:`kcont.netstack`).
"""

from __future__ import annotations

import gc
import statistics
from typing import Any

from ..netstack import Config as PipelineConfig
from ..netstack import run_pipeline
from .harness import Config, Group, check_stop

IMPLS = ("kcont", "asyncio")


def bench_pipeline(cfg: Config) -> Group:
    rounds = cfg.pipeline_rounds
    rates = {"moderate": cfg.pipeline_rate, "high": cfg.pipeline_high_rate}
    g = Group(
        "pipeline",
        "Packet pipeline (the demo): kcont beside the same pipeline on asyncio, same traffic",
        {
            "rounds": rounds,
            "duration_s": cfg.pipeline_duration,
            "flows": 128,
            **{f"{k}_rate": v for k, v in rates.items()},
        },
        kind="pipeline",
        notes=[
            "process CPU time (every thread: traffic source, receive threads, pipeline) per packet "
            "processed, and packets processed per second (first datagram sent to last processed); "
            "median over rounds; ratios are medians of per-round kcont / asyncio.",
        ],
    )
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {
        (rate, impl): [] for rate in rates for impl in IMPLS
    }
    for r in range(rounds):
        for rate_name, rate in rates.items():
            order = IMPLS if (r % 2 == 0) else IMPLS[::-1]
            with cfg.turn():
                for impl in order:
                    check_stop(cfg.stop)
                    gc.collect()
                    pc = PipelineConfig(
                        flows=128, rate=rate, duration=cfg.pipeline_duration, seed=cfg.seed, drain_timeout=3.0
                    )
                    report = run_pipeline(pc, impl=impl, stop=cfg.stop)
                    cpu_us = 1e6 * report.cpu_s / max(1, report.processed)
                    samples[(rate_name, impl)].append((cpu_us, report.pps))
    for rate_name, rate in rates.items():
        kc, aio = samples[(rate_name, "kcont")], samples[(rate_name, "asyncio")]
        for impl, own in (("kcont", kc), ("asyncio", aio)):
            row: dict[str, Any] = {
                "case": f"{impl}, {rate:,} pkt/s offered",
                "impl": impl,
                "role": "kcont" if impl == "kcont" else "competitor",
                "rate": rate_name,
                "offered_pps": rate,
                "cpu_us_per_packet": statistics.median(x[0] for x in own),
                "pps": statistics.median(x[1] for x in own),
                "cpu_us_rounds": [x[0] for x in own],
                "pps_rounds": [x[1] for x in own],
                "versus": f"asyncio, {rate:,} pkt/s offered",
                "x_cpu": None,
                "x_pps": None,
            }
            if impl == "kcont":
                row["x_cpu"] = statistics.median(
                    a[0] / b[0] for a, b in zip(kc, aio, strict=True) if b[0] > 0
                )
                row["x_pps"] = statistics.median(
                    a[1] / b[1] for a, b in zip(kc, aio, strict=True) if b[1] > 0
                )
            g.rows.append(row)
    return g

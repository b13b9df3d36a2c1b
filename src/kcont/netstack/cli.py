"""The ``demo`` command: ``python -m kcont demo [options]``.

What it owns
    The command's options (:func:`add_arguments`) and what it prints
    (:func:`run`): a header, live progress, the report of each pipeline, the
    side-by-side table, and the JSON file if asked.  The exit status is 0 when
    every check of every run passed, 1 otherwise.

Locking
    None (runs in the main thread).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from .common import Config
from .report import Report, compare_table, render, write_json
from .runner import run_pipeline

__all__ = ["DESCRIPTION", "add_arguments", "run"]

DESCRIPTION = """\
Runs an SMP UDP packet pipeline on kcont, on loopback (127.0.0.1) only, and
by default the same pipeline on asyncio on the same traffic, then prints both
reports and a side-by-side table.

A source thread sends numbered datagrams for many flows at a fixed rate.  RX
threads (one per RX queue, bound to a kcont CPU) read them, steer each flow to
a CPU by an RSS hash and schedule the flow's wq_softnet continuation there;
it checks per-flow order, re-arms the flow's idle timer for every packet and
arms a delayed-ACK continuation that sends a real ACK back (the source
measures the round trip).  Idle flows are torn down by their timer; the
teardown bookkeeping runs on wq_prilow.  The run stops by itself after
--duration seconds of traffic and a short drain (about 4 s per pipeline with
the defaults).

Exit status: 0 if every check passed (no order violation, every packet
accounted for, every flow torn down, every flow's last packet ACKed, no
exception, clean shutdown), 1 otherwise."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to ``parser``."""
    d = Config()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = DESCRIPTION
    add = parser.add_argument
    add("--flows", type=int, default=d.flows, help=f"number of flows (default: {d.flows})")
    add("--rate", type=int, default=d.rate, help=f"data datagrams per second, all flows (default: {d.rate})")
    add(
        "--duration",
        type=float,
        default=d.duration,
        help=f"seconds of traffic per pipeline; the run then drains and stops (default: {d.duration})",
    )
    add("--cpus", type=int, default=d.cpus, help=f"kcont virtual CPUs (default: {d.cpus})")
    add(
        "--rx-queues",
        type=int,
        default=d.rx_queues,
        help=f"receive sockets, one RX thread each, bound to CPU q mod --cpus (default: {d.rx_queues})",
    )
    add("--hz", type=int, default=d.hz, help=f"kcont ticks per second (default: {d.hz})")
    add(
        "--idle-ticks",
        type=int,
        default=d.idle_ticks,
        help=f"a flow silent this many ticks is torn down (default: {d.idle_ticks})",
    )
    add(
        "--delack-ticks",
        type=int,
        default=d.delack_ticks,
        help=f"ticks from the first unACKed packet to its ACK (default: {d.delack_ticks})",
    )
    add(
        "--malformed-rate",
        type=float,
        default=d.malformed_rate,
        help="fraction of extra malformed datagrams injected (truncated, wrong magic, absurd "
        f"length, unknown type), counted and dropped (default: {d.malformed_rate})",
    )
    add("--payload", type=int, default=d.payload, help=f"payload bytes per datagram (default: {d.payload})")
    add(
        "--budget",
        type=int,
        default=d.budget,
        help=f"packets a flow's continuation processes before yielding the CPU (default: {d.budget})",
    )
    add("--seed", type=int, default=d.seed, help=f"seed of the flow ids (default: {d.seed})")
    add(
        "--compare",
        choices=("asyncio", "none"),
        default="asyncio",
        help="also run the asyncio pipeline on the same traffic and print both side by side "
        "(default: asyncio; 'none' runs kcont only)",
    )
    add("--json", metavar="FILE", default=None, help="write the reports as JSON to FILE ('-': stdout)")
    add("--quiet", action="store_true", help="no live progress lines (the reports are still printed)")


def config_from(args: argparse.Namespace) -> Config:
    """The :class:`Config` the options describe (ValueError if invalid)."""
    return Config(
        flows=args.flows,
        rate=args.rate,
        duration=args.duration,
        cpus=args.cpus,
        rx_queues=args.rx_queues,
        hz=args.hz,
        idle_ticks=args.idle_ticks,
        delack_ticks=args.delack_ticks,
        malformed_rate=args.malformed_rate,
        payload=args.payload,
        budget=args.budget,
        seed=args.seed,
    )


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the demo the options describe; 0 if every check passed."""
    out = out or sys.stdout
    try:
        config = config_from(args)
    except ValueError as exc:
        print(f"kcont demo: {exc}", file=sys.stderr)
        return 2
    impls = ["kcont"] + (["asyncio"] if args.compare == "asyncio" else [])
    json_to_stdout = args.json == "-"
    text = sys.stderr if json_to_stdout else out
    print(
        f"kcont demo: {config.flows} flows, {config.rate:,} pkt/s for {config.duration:g} s "
        f"({config.packets:,} packets, malformed rate {config.malformed_rate:g}) on 127.0.0.1; "
        f"{config.cpus} CPUs, {config.rx_queues} RX queues, hz {config.hz}, idle {config.idle_ticks} ticks, "
        f"delayed ACK {config.delack_ticks} ticks; pipelines: {', '.join(impls)}",
        file=text,
    )

    def progress(line: str) -> None:
        print(line, file=text, flush=True)

    reports: list[Report] = []
    for impl in impls:
        report = run_pipeline(config, impl=impl, progress=None if args.quiet else progress)
        render(report, text)
        reports.append(report)
    if len(reports) > 1:
        compare_table(reports, text)
    if args.json:
        write_json(reports, args.json, out)
    return 0 if all(r.ok for r in reports) else 1

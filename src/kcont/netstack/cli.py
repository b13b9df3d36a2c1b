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

from .._cli import (
    EXIT_INTERRUPTED,
    MAX_NCPU,
    StopRequest,
    add_output_options,
    core_description,
    float_in,
    int_in,
    progress_wanted,
    text_stream,
)
from .common import Config
from .report import Report, compare_table, render, write_json
from .runner import run_pipeline

__all__ = ["DESCRIPTION", "add_arguments", "run"]

MAX_RATE = 100_000_000  # datagrams per second asked of the source (it says when it cannot)
MAX_DURATION = 86_400.0

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
the defaults); Ctrl-C stops it early, cleanly.

Exit status: 0 if every check passed (no order violation, every packet
accounted for, every flow torn down, every flow's last packet ACKed, no
exception, clean shutdown), 1 otherwise, 2 for a bad option, 130 if
interrupted."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to ``parser`` (each checked before the run)."""
    d = Config()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = DESCRIPTION
    add = parser.add_argument
    add(
        "--flows",
        type=int_in(1, 1_000_000),
        default=d.flows,
        help=f"number of flows, 1-1000000 (default: {d.flows})",
    )
    add(
        "--rate",
        type=int_in(1, MAX_RATE),
        default=d.rate,
        help=f"data datagrams per second, all flows; the source stops at --duration even if it could "
        f"not reach the rate, and says so (default: {d.rate})",
    )
    add(
        "--duration",
        type=float_in(0, MAX_DURATION, low_open=True),
        default=d.duration,
        help=f"seconds of traffic per pipeline, > 0; the run then drains and stops (default: {d.duration})",
    )
    add(
        "--ncpu",
        type=int_in(1, MAX_NCPU),
        default=d.cpus,
        help=f"kcont virtual CPUs, 1-{MAX_NCPU} (default: {d.cpus})",
    )
    add("--cpus", type=int_in(1, MAX_NCPU), dest="ncpu", help=argparse.SUPPRESS)  # the former name
    add(
        "--rx-queues",
        type=int_in(1, 64),
        default=d.rx_queues,
        help=f"receive sockets, one RX thread each, bound to CPU q mod --ncpu, 1-64 (default: {d.rx_queues})",
    )
    add(
        "--hz",
        type=int_in(1, 10_000),
        default=d.hz,
        help=f"kcont ticks per second, 1-10000 (default: {d.hz})",
    )
    add(
        "--idle-ticks",
        type=int_in(1, 10_000_000),
        default=d.idle_ticks,
        help=f"a flow silent this many ticks is torn down (default: {d.idle_ticks})",
    )
    add(
        "--delack-ticks",
        type=int_in(1, 10_000_000),
        default=d.delack_ticks,
        help=f"ticks from the first unACKed packet to its ACK (default: {d.delack_ticks})",
    )
    add(
        "--malformed-rate",
        type=float_in(0, 0.5),
        default=d.malformed_rate,
        help="fraction of extra malformed datagrams injected (truncated, wrong magic, absurd "
        f"length, unknown type), counted and dropped, 0-0.5 (default: {d.malformed_rate})",
    )
    add(
        "--payload",
        type=int_in(0, 1400),
        default=d.payload,
        help=f"payload bytes per datagram, 0-1400 (default: {d.payload})",
    )
    add(
        "--budget",
        type=int_in(1, 1_000_000),
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
    add_output_options(parser, what="the reports")


# The option of each Config field, for messages.
_OPTIONS = {
    "flows": "--flows",
    "rate": "--rate",
    "duration": "--duration",
    "cpus": "--ncpu",
    "rx_queues": "--rx-queues",
    "hz": "--hz",
    "idle_ticks": "--idle-ticks",
    "delack_ticks": "--delack-ticks",
    "malformed_rate": "--malformed-rate",
    "payload": "--payload",
    "budget": "--budget",
    "seed": "--seed",
}


def config_from(args: argparse.Namespace) -> Config:
    """The :class:`Config` the options describe (ValueError if invalid, the
    message naming the option)."""
    try:
        return Config(
            flows=args.flows,
            rate=args.rate,
            duration=args.duration,
            cpus=args.ncpu,
            rx_queues=args.rx_queues,
            hz=args.hz,
            idle_ticks=args.idle_ticks,
            delack_ticks=args.delack_ticks,
            malformed_rate=args.malformed_rate,
            payload=args.payload,
            budget=args.budget,
            seed=args.seed,
        )
    except ValueError as exc:
        message = str(exc)
        for field_name, option in sorted(_OPTIONS.items(), key=lambda item: -len(item[0])):
            if message.startswith(field_name + " "):
                message = option + message[len(field_name) :]
                break
        raise ValueError(message) from None


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the demo the options describe; 0 if every check passed, 2 if an
    option is invalid, 130 if interrupted (Ctrl-C)."""
    try:
        config = config_from(args)
    except ValueError as exc:
        print(f"kcont demo: error: {exc}", file=sys.stderr)
        return 2
    impls = ["kcont"] + (["asyncio"] if args.compare == "asyncio" else [])
    text = text_stream(args, out)
    print(
        f"kcont demo ({core_description()}): "
        f"{config.flows} flows, {config.rate:,} pkt/s for {config.duration:g} s "
        f"({config.packets:,} packets, malformed rate {config.malformed_rate:g}) on 127.0.0.1; "
        f"{config.cpus} CPUs, {config.rx_queues} RX queues, hz {config.hz}, idle {config.idle_ticks} ticks, "
        f"delayed ACK {config.delack_ticks} ticks; pipelines: {', '.join(impls)}",
        file=text,
        flush=True,
    )

    def progress(line: str) -> None:
        print(line, file=text, flush=True)

    show = progress_wanted(args, text)
    reports: list[Report] = []
    with StopRequest() as stop:
        for impl in impls:
            if stop.requested:
                break
            report = run_pipeline(config, impl=impl, progress=progress if show else None, stop=stop.event)
            render(report, text)
            reports.append(report)
        interrupted = stop.requested
    if len(reports) > 1:
        compare_table(reports, text)
    if args.json:
        write_json(reports, args.json, sys.stdout if args.json == "-" else text, interrupted=interrupted)
    if interrupted:
        done = ", ".join(f"{r.impl} {r.processed:,} packets in {r.wall_s:.1f} s" for r in reports)
        print(f"kcont demo: interrupted ({done or 'nothing run'})", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if all(r.ok for r in reports) else 1

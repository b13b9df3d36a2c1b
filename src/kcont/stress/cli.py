"""The ``python -m kcont stress`` command: its options, their validation and
the printing of the result (text and ``--json``).

Locking: none (the main thread).
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from .._cli import (
    EXIT_INTERRUPTED,
    MAX_NCPU,
    StopRequest,
    add_output_options,
    float_in,
    int_in,
    progress_wanted,
    text_stream,
    write_json,
)
from .config import StressConfig
from .driver import run_stress
from .sigint import run_sigint

MAX_DURATION = 7 * 86_400.0  # a week of load: beyond that, a typo
MAX_HZ = 10_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m kcont stress`` (each checked before the run)."""
    d = StressConfig()
    parser.add_argument(
        "--threads", type=int_in(1, 256), default=4, help="producer threads, 1-256 (default: 4)"
    )
    parser.add_argument(
        "--continuations",
        type=int_in(1, 100_000),
        default=64,
        help="continuations alive at any time, 1-100000 (default: 64)",
    )
    parser.add_argument(
        "--duration",
        type=float_in(0, MAX_DURATION, low_open=True),
        # A string default goes through ``type`` too: a bad $KCONT_STRESS_SECONDS is refused.
        default=os.environ.get("KCONT_STRESS_SECONDS", "20"),
        help="seconds of load, > 0 (default: $KCONT_STRESS_SECONDS, else 20); Ctrl-C ends it early",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the producers' choices (default: 1)")
    parser.add_argument(
        "--ncpu",
        type=int_in(1, MAX_NCPU),
        default=d.ncpu,
        help=f"virtual CPUs of the runtime, 1-{MAX_NCPU} (default: {d.ncpu})",
    )
    parser.add_argument("--cpus", type=int_in(1, MAX_NCPU), dest="ncpu", help=argparse.SUPPRESS)
    parser.add_argument(
        "--hz", type=int_in(1, MAX_HZ), default=d.hz, help=f"ticks per second, 1-{MAX_HZ} (default: {d.hz})"
    )
    parser.add_argument(
        "--locks",
        type=int_in(0, 10_000),
        default=d.locks,
        help=f"continuation locks shared by the continuations, 0-10000 (default: {d.locks})",
    )
    parser.add_argument(
        "--p-raise",
        type=float_in(0, 1),
        default=d.p_raise,
        help=f"probability that a function raises at each raise point, 0-1 (default: {d.p_raise})",
    )
    parser.add_argument(
        "--cancel",
        choices=("yes", "no", "seed"),
        default="seed",
        help="shutdown(cancel=...) at the end (default: drawn from the seed)",
    )
    parser.add_argument(
        "--sigint",
        action="store_true",
        help="instead: send SIGINT to the main thread at random instants while it uses the runtime, "
        "catch each KeyboardInterrupt and check that nothing was left half-done (Ctrl-C cannot end it)",
    )
    add_output_options(parser, what="the figures")
    # ``--json`` alone (no FILE) prints the JSON on standard output, as it always did.
    for action in parser._actions:
        if action.dest == "json":
            action.nargs = "?"
            action.const = "-"
            action.help = f"{action.help}; --json alone is --json -"


def run(args: argparse.Namespace) -> int:
    """Run from parsed arguments; prints the figures; 0 iff no violation, 130 if
    interrupted (Ctrl-C)."""
    config = StressConfig(
        threads=args.threads,
        continuations=args.continuations,
        duration=args.duration,
        seed=args.seed,
        ncpu=args.ncpu,
        hz=args.hz,
        locks=args.locks,
        p_raise=args.p_raise,
        shutdown_cancel=None if args.cancel == "seed" else args.cancel == "yes",
    )
    text = text_stream(args)
    if args.sigint:
        return _run_sigint(args, text)
    show = progress_wanted(args, text)

    def progress(line: str) -> None:
        print(line, file=text, flush=True)

    if show:
        progress(
            f"kcont stress: {config.duration:g} s of load, {config.threads} producer threads, "
            f"{config.continuations} continuations, {config.ncpu} CPUs, seed {config.seed} "
            "(Ctrl-C ends it early)"
        )
    # Hang detector: dump every thread's stack and exit if the run overstays.
    faulthandler.dump_traceback_later(config.duration + 300, exit=True)
    try:
        with StopRequest() as stop:
            result = run_stress(
                config,
                progress=progress if show else None,
                progress_interval=min(10.0, max(1.0, config.duration / 10)),
                stop=stop.event,
            )
    finally:
        faulthandler.cancel_dump_traceback_later()
    print(result.summary(), file=text, flush=True)
    if args.json:
        write_json(result.as_dict(), args.json, None if args.json == "-" else text)
    if result.interrupted:
        f = result.figures
        print(
            f"kcont stress: interrupted after {result.seconds:.1f} s: {f['ops'] + f['fn_ops']} operations, "
            f"{f['starts']} invocations, {result.violation_count} violations (accounting checked)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0 if result.ok else 1


def _run_sigint(args: argparse.Namespace, text: TextIO) -> int:
    """``--sigint``: 0 iff nothing was left half-done (see kcont.stress.sigint)."""
    if progress_wanted(args, text):
        print(
            f"kcont stress --sigint: {args.duration:g} s of SIGINTs at random instants, "
            f"{args.ncpu} CPUs, seed {args.seed}",
            file=text,
            flush=True,
        )
    faulthandler.dump_traceback_later(args.duration + 300, exit=True)
    try:
        result = run_sigint(args.duration, seed=args.seed, ncpu=args.ncpu, hz=args.hz)
    finally:
        faulthandler.cancel_dump_traceback_later()
    print(result.summary(), file=text, flush=True)
    if args.json:
        write_json(result.as_dict(), args.json, None if args.json == "-" else text)
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kcont.stress", description="kcont stress harness with exact accounting"
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))

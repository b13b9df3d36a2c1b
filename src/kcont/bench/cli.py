"""The ``python -m kcont bench`` command: its options, their validation, and the
writing of ``--json`` and ``--plot``.

Locking: none (the main thread).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from .._cli import (
    EXIT_INTERRUPTED,
    PLOT_INSTALL,
    StopRequest,
    int_in,
    int_list,
    output_file,
    plot_file,
    progress_wanted,
    text_stream,
    write_json,
)
from .driver import run
from .harness import BENCHMARKS, Config, Group
from .report import write_plot

MAX_SIZE = 10_000_000  # pending timers: 10**7 is already gigabytes of timers
MAX_COUNT = 10_000_000  # items or operations per measurement

_parse_sizes = int_list(1, MAX_SIZE)


def _parse_only(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    aliases = {"cross-thread": "cross", "timer": "timers", "mem": "memory", "wakeup": "latency"}
    names = tuple(aliases.get(n, n) for n in names)
    bad = [n for n in names if n not in BENCHMARKS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown benchmark(s) {bad}; choose from {', '.join(BENCHMARKS)}")
    return tuple(n for n in BENCHMARKS if n in names)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark options to ``parser`` (``python -m kcont bench``); each
    is checked before the run."""
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds (what CI runs)")
    parser.add_argument(
        "--rounds", type=int_in(1, 1000), default=None, help="measured rounds, 1-1000 (default 5; quick 2)"
    )
    parser.add_argument(
        "--sizes",
        type=_parse_sizes,
        default=None,
        help="pending timers, comma-separated integers up to 1e7, e.g. 1e3,1e4,1e5,1e6 (the default; "
        "quick 1e3,1e4)",
    )
    parser.add_argument(
        "--only",
        type=_parse_only,
        default=None,
        help=f"comma-separated subset of: {','.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--n",
        type=int_in(1, MAX_COUNT),
        default=None,
        help="items per round for immediate and cross-thread, up to 1e7",
    )
    parser.add_argument(
        "--timer-ops",
        type=int_in(1, MAX_COUNT),
        default=None,
        help="operations per timer measurement, up to 1e7",
    )
    parser.add_argument(
        "--sched-max",
        type=int_in(1, MAX_SIZE),
        default=None,
        help="largest pending size measured with sched (default 1e5)",
    )
    parser.add_argument(
        "--this-core-only",
        action="store_true",
        help="measure only the core of this process (by default the other core runs too, in a second "
        "process taking turns with this one; KCONT_PURE_PYTHON=1 makes this process's core the pure one)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the workloads")
    parser.add_argument(
        "--json",
        metavar="FILE",
        type=output_file,
        default=None,
        help="also write the results as JSON to FILE ('-': standard output, the tables then go to "
        "standard error); FILE's folder must exist",
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        help="say which benchmark starts even when the output is not a terminal (its table comes when "
        "it ends)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not say which benchmark starts")
    parser.add_argument(
        "--plot",
        metavar="FILE",
        type=plot_file,
        default=None,
        help=f"write a PNG of timer cost against pending timers; needs matplotlib ({PLOT_INSTALL}); "
        "FILE's folder must exist",
    )


def config_from_args(args: argparse.Namespace, out: TextIO | None = None) -> Config:
    cfg = Config.quick_config() if args.quick else Config()
    if args.rounds is not None:
        cfg.rounds = args.rounds
    if args.sizes is not None:
        cfg.sizes = args.sizes
    if args.only is not None:
        cfg.only = args.only
    if args.n is not None:
        cfg.n_immediate = cfg.n_cross = args.n
    if args.timer_ops is not None:
        cfg.timer_ops = args.timer_ops
    if args.sched_max is not None:
        cfg.sched_max = int(args.sched_max)
    cfg.seed = args.seed
    cfg.other_core = not args.this_core_only
    if out is not None:
        cfg.out = out
    return cfg


def run_from_args(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """The ``bench`` command's handler: run, print, write ``--json``/``--plot``.
    Returns 0, or 130 if interrupted (Ctrl-C; the JSON then holds the
    benchmarks finished)."""
    text = text_stream(args, out)
    cfg = config_from_args(args, text)
    cfg.progress = progress_wanted(args, text)
    with StopRequest() as stop:
        cfg.stop = stop.event
        results = run(cfg)
    if args.json:
        write_json(results, args.json, None if args.json == "-" else text)
    if args.plot and results["groups"]:
        groups = [Group(**g) for g in results["groups"]]
        problem = write_plot(groups, args.plot)
        print(problem or f"wrote {args.plot}", file=text)
    if results["interrupted"]:
        done = ", ".join(g["name"] for g in results["groups"]) or "none"
        print(f"kcont bench: interrupted (benchmarks finished: {done})", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/run.py [options]``."""
    parser = argparse.ArgumentParser(
        prog="kcont bench",
        description="kcont's compiled and pure cores beside asyncio, uvloop, sched, Twisted and threads.",
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

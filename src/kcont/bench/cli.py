"""The ``python -m kcont bench`` command: its options, their validation, and the
writing of ``--json`` and ``--plot``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TextIO

from .driver import run
from .harness import BENCHMARKS, Config, Group
from .report import write_plot


def _parse_sizes(text: str) -> list[int]:
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if part:
            value = int(float(part))
            if value < 1:
                raise argparse.ArgumentTypeError(f"size must be >= 1: {part}")
            sizes.append(value)
    if not sizes:
        raise argparse.ArgumentTypeError("no sizes given")
    return sizes


def _parse_only(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    aliases = {"cross-thread": "cross", "timer": "timers", "mem": "memory", "wakeup": "latency"}
    names = tuple(aliases.get(n, n) for n in names)
    bad = [n for n in names if n not in BENCHMARKS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown benchmark(s) {bad}; choose from {', '.join(BENCHMARKS)}")
    return tuple(n for n in BENCHMARKS if n in names)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark options to ``parser`` (``python -m kcont bench``)."""
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds (what CI runs)")
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds (default 5; quick 2)")
    parser.add_argument(
        "--sizes",
        type=_parse_sizes,
        default=None,
        help="pending timers, e.g. 1e3,1e4,1e5,1e6 (default; quick 1e3,1e4)",
    )
    parser.add_argument(
        "--only",
        type=_parse_only,
        default=None,
        help=f"comma-separated subset of: {','.join(BENCHMARKS)}",
    )
    parser.add_argument("--n", type=int, default=None, help="items per round for immediate and cross-thread")
    parser.add_argument("--timer-ops", type=int, default=None, help="operations per timer measurement")
    parser.add_argument(
        "--sched-max", type=float, default=None, help="largest pending size measured with sched (default 1e5)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the workloads")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the results as JSON")
    parser.add_argument("--plot", metavar="FILE", default=None, help="write a PNG of timer cost (matplotlib)")


def config_from_args(args: argparse.Namespace, out: TextIO | None = None) -> Config:
    cfg = Config.quick_config() if args.quick else Config()
    if args.rounds is not None:
        if args.rounds < 1:
            raise SystemExit("--rounds must be >= 1")
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
    if out is not None:
        cfg.out = out
    return cfg


def run_from_args(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """The ``bench`` command's handler: run, print, write ``--json``/``--plot``."""
    cfg = config_from_args(args, out)
    results = run(cfg)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
        print(f"wrote {args.json}", file=cfg.out)
    if args.plot:
        groups = [Group(**g) for g in results["groups"]]
        problem = write_plot(groups, args.plot)
        print(problem or f"wrote {args.plot}", file=cfg.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/run.py [options]``."""
    parser = argparse.ArgumentParser(
        prog="kcont bench", description="kcont beside asyncio, uvloop, sched, Twisted and threads."
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

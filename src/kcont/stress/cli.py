"""The ``python -m kcont stress`` command: its options, their validation and
the printing of the result (text and ``--json``).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import sys
from collections.abc import Sequence

from .config import StressConfig
from .driver import run_stress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m kcont stress``."""
    d = StressConfig()
    parser.add_argument("--threads", type=int, default=4, help="producer threads (default: 4)")
    parser.add_argument(
        "--continuations", type=int, default=64, help="continuations alive at any time (default: 64)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of load (default: $KCONT_STRESS_SECONDS, else 20)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the producers' choices (default: 1)")
    parser.add_argument("--ncpu", type=int, default=d.ncpu, help=f"virtual CPUs (default: {d.ncpu})")
    parser.add_argument("--hz", type=int, default=d.hz, help=f"ticks per second (default: {d.hz})")
    parser.add_argument("--locks", type=int, default=d.locks, help=f"continuation locks (default: {d.locks})")
    parser.add_argument("--p-raise", type=float, default=d.p_raise, help="probability of each raise point")
    parser.add_argument(
        "--cancel",
        choices=("yes", "no", "seed"),
        default="seed",
        help="shutdown(cancel=...) at the end (default: drawn from the seed)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")

    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    """Run from parsed arguments; prints the figures; 0 iff no violation."""
    import os

    duration = args.duration
    if duration is None:
        duration = float(os.environ.get("KCONT_STRESS_SECONDS", "20"))
    config = StressConfig(
        threads=args.threads,
        continuations=args.continuations,
        duration=duration,
        seed=args.seed,
        ncpu=args.ncpu,
        hz=args.hz,
        locks=args.locks,
        p_raise=args.p_raise,
        shutdown_cancel=None if args.cancel == "seed" else args.cancel == "yes",
    )
    # Hang detector: dump every thread's stack and exit if the run overstays.
    faulthandler.dump_traceback_later(duration + 300, exit=True)
    try:
        result = run_stress(config, progress=None if args.quiet else lambda s: print(s, flush=True))
    finally:
        faulthandler.cancel_dump_traceback_later()
    print(result.summary())
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kcont.stress", description="kcont stress harness with exact accounting"
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

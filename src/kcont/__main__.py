"""The kcont command line: ``python -m kcont <command>`` (or ``kcont <command>``).

Each command lives in its own module and registers itself here; ``--help``
lists them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

Command = Callable[[argparse.Namespace], int]


def _cmd_example(args: argparse.Namespace) -> int:
    from .examples import simulated_tour

    return simulated_tour(seed=args.seed, ncpu=args.ncpu, out=sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kcont",
        description="kcont: kernel continuations (callouts, softints and workqueues in one framework).",
    )
    sub = parser.add_subparsers(dest="command", metavar="command")
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="the main job (for now: the simulated tour; the packet pipeline replaces it)",
        description="Runs kcont's main demonstration.",
    )
    demo.add_argument("--seed", type=int, default=None, help="CPU interleaving seed (default: round robin)")
    demo.add_argument("--ncpu", type=int, default=2, help="number of virtual CPUs (default: 2)")
    demo.set_defaults(handler=_cmd_example)

    example = sub.add_parser(
        "tour",
        help="a guided tour on the simulated runtime: timers, priorities, locks, stop/halt, trace",
        description="Runs a short scenario on SimRuntime and prints its deterministic trace.",
    )
    example.add_argument(
        "--seed", type=int, default=None, help="CPU interleaving seed (default: round robin)"
    )
    example.add_argument("--ncpu", type=int, default=2, help="number of virtual CPUs (default: 2)")
    example.set_defaults(handler=_cmd_example)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Command = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())

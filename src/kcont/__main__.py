"""The kcont command line: ``python -m kcont <command>`` (or ``kcont <command>``).

Each command lives in its own module, which provides ``add_arguments(parser)``
and a runner taking the parsed arguments and returning the exit status;
``--help`` lists them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

Command = Callable[[argparse.Namespace], int]

# (command, module under kcont, runner attribute, one-line help)
COMMANDS = (
    (
        "demo",
        "netstack.cli",
        "run",
        "the main job: an SMP UDP packet pipeline on kcont (loopback), side by side with asyncio",
    ),
    (
        "tour",
        "examples",
        "run_tour",
        "a guided tour on the simulated runtime: timers, priorities, locks, trace",
    ),
    (
        "bench",
        "bench",
        "run_from_args",
        "benchmarks: kcont beside the deque floor, asyncio, uvloop, sched, Twisted and threads",
    ),
    (
        "stress",
        "stress",
        "run",
        "stress and fault harness on real threads, with exact accounting (non-zero exit on a violation)",
    ),
    (
        "explore",
        "explore",
        "run",
        "explore seeded interleavings of racy scenarios on the simulator (prints a failing seed)",
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kcont",
        description="kcont: kernel continuations (callouts, softints and workqueues in one framework).",
    )
    sub = parser.add_subparsers(dest="command", metavar="command")
    sub.required = True
    for name, module_name, runner, help_text in COMMANDS:
        module = importlib.import_module(f"kcont.{module_name}")
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(handler=getattr(module, runner))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Command = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())

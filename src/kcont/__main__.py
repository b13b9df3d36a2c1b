"""The kcont command line: ``python -m kcont <command>`` (or ``kcont <command>``).

Each command lives in its own module, which provides ``add_arguments(parser)``
and a runner taking the parsed arguments and returning the exit status;
``--help`` lists them.  What the commands share (checked options, ``--json``,
progress, Ctrl-C) is in :mod:`kcont._cli`.

Exit status: 0 success, 1 a check failed, 2 bad options, 130 interrupted
(Ctrl-C: the command stops its threads, sockets and runtime, prints what it
did and writes partial JSON if asked).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Callable, Sequence

from ._cli import EXIT_INTERRUPTED, core_description

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
        "benchmarks: kcont's compiled and pure cores side by side, beside asyncio, sched, threads and more",
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


def version() -> str:
    """kcont's version: from the installed package's metadata, else the module's."""
    try:
        return importlib.metadata.version("kcont")
    except importlib.metadata.PackageNotFoundError:
        import kcont

        return str(getattr(kcont, "__version__", "unknown"))


class _PrintVersion(argparse.Action):
    """``--version``: the version and which core runs, on one line (argparse's
    own version action would wrap a long reason for the pure core)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            default=argparse.SUPPRESS,
            help="print the version and which core runs",
        )

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"kcont {version()} ({core_description()})")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kcont",
        description="kcont: kernel continuations (callouts, softints and workqueues in one framework).",
        epilog="Exit status: 0 success, 1 a check failed, 2 bad options, 130 interrupted (Ctrl-C).",
    )
    parser.add_argument("--version", action=_PrintVersion)
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
    try:
        return handler(args)
    except KeyboardInterrupt:
        # A command that cannot stop at a check (or a second Ctrl-C): its
        # cleanup ran on the way out; no traceback.
        print(f"kcont {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

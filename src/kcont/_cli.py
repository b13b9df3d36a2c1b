"""What every ``python -m kcont`` command shares: checked option types, output
files, ``--json``, live progress and Ctrl-C.

What it owns
    * argparse ``type=`` functions that check a value before any work and say
      what is wrong (argparse prefixes the option's name and exits with
      status 2): :func:`int_in`, :func:`float_in`, :func:`int_list`,
      :func:`output_file`, :func:`plot_file`, and :func:`env_default` for
      defaults read from the environment;
    * :func:`core_description`: which core runs (``kcont --version`` and the
      headers of the reports);
    * the common options :func:`add_output_options` (``--json FILE``,
      ``--progress``, ``--quiet``) and what they mean: :func:`text_stream`,
      :func:`progress_wanted`, :func:`write_json`;
    * :class:`StopRequest`: the first Ctrl-C (SIGINT) asks the running command
      to stop at its next check, so that it can shut its threads, sockets and
      runtime down, print what it did and write partial JSON; a second Ctrl-C
      raises :class:`KeyboardInterrupt` as usual.

Output files
    A missing folder is an error (the command creates no folders): the path
    is checked when the options are parsed, before the run, as is a path that
    cannot be written (a folder, a file or folder without write permission).
    ``-`` means standard output; the text report then goes to standard error
    so that standard output holds the JSON document alone.

Exit status
    0 success, 1 a check failed, 2 bad options (argparse), 130 interrupted.

Locking
    :class:`StopRequest` sets a :class:`threading.Event` from the signal
    handler (which runs in the main thread); other threads only read it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, TextIO

__all__ = [
    "EXIT_INTERRUPTED",
    "MAX_NCPU",
    "StopRequest",
    "add_output_options",
    "core_description",
    "env_default",
    "float_in",
    "int_in",
    "int_list",
    "output_file",
    "plot_file",
    "progress_wanted",
    "text_stream",
    "write_json",
]

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C
# Virtual CPUs of a threaded runtime: each has its own worker threads.
MAX_NCPU = 256
SIGINT_REPEAT_S = 1.0  # a second SIGINT sooner than this repeats the first
PLOT_INSTALL = "pip install 'kcont[bench]' (or pip install matplotlib)"


def _whole_number(text: str) -> int | None:
    """``text`` as an integer (``1e5`` is accepted for 100000), or None."""
    text = text.strip()
    try:
        return int(text, 10)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number) or not number.is_integer():
        return None
    return int(number)


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer within ``[low, high]`` (``1e5`` is
    accepted for 100000)."""

    def parse(text: str) -> int:
        value = _whole_number(text)
        if value is None:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(_range_message(value, low, high))
        return value

    parse.__name__ = "integer"
    return parse


def float_in(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number within ``[low, high]`` (``(low, high]``
    with ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if (value <= low if low_open else value < low) or value > high:
            lower = f"> {low:g}" if low_open else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"must be {lower} and <= {high:g}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def int_list(low: int, high: int) -> Callable[[str], list[int]]:
    """An argparse type: comma-separated integers within ``[low, high]``;
    ``1e5`` is accepted for 100000 (a whole number written in exponent form)."""

    def parse(text: str) -> list[int]:
        values: list[int] = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            value = _whole_number(part)
            if value is None:
                raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
            if not low <= value <= high:
                raise argparse.ArgumentTypeError(f"{part}: {_range_message(value, low, high)}")
            values.append(value)
        if not values:
            raise argparse.ArgumentTypeError("expected comma-separated integers, got nothing")
        return values

    parse.__name__ = "integer list"
    return parse


def _range_message(value: int, low: int, high: int) -> str:
    return f"must be between {low:,} and {high:,}, got {value:,}"


def output_file(text: str) -> str:
    """An argparse type: a file the command will write, or ``-`` (standard
    output).  Its folder must exist and the file must be writable."""
    if text == "-":
        return text
    problem = _unwritable(text)
    if problem:
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: {problem}")
    return text


def plot_file(text: str) -> str:
    """An argparse type: a PNG file to write with matplotlib, which must be
    installed."""
    if importlib.util.find_spec("matplotlib") is None:
        raise argparse.ArgumentTypeError(f"needs matplotlib, which is not installed: {PLOT_INSTALL}")
    if text == "-":
        raise argparse.ArgumentTypeError("a plot goes to a file, not to standard output")
    return output_file(text)


def _unwritable(path: str) -> str | None:
    """Why ``path`` cannot be written, or None."""
    if not path:
        return "empty path"
    if os.path.isdir(path):
        return "it is a folder"
    if os.path.exists(path):
        return None if os.access(path, os.W_OK) else "no permission to write it"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            return f"{folder!r} is not a folder"
        return f"folder {folder!r} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"no permission to create a file in {folder!r}"
    return None


def env_default(
    parser: argparse.ArgumentParser, variable: str, fallback: str, parse: Callable[[str], Any]
) -> Any:
    """The value of environment ``variable`` (else ``fallback``) through the
    option type ``parse``; a bad value is a usage error naming the variable."""
    text = os.environ.get(variable, fallback)
    try:
        return parse(text)
    except argparse.ArgumentTypeError as exc:
        parser.error(f"environment variable {variable}: {exc}")


def core_description() -> str:
    """Which core runs, for people: ``"compiled core"``, or ``"pure-Python
    core: <why>"`` (no compiled core was built, or ``KCONT_PURE_PYTHON`` is
    set)."""
    from ._core import layout

    if layout.COMPILED:
        return "compiled core"
    return f"pure-Python core: {layout.FALLBACK_REASON}"


def add_output_options(parser: argparse.ArgumentParser, *, what: str) -> None:
    """``--json FILE``, ``--progress`` and ``--quiet``, the same on every command."""
    parser.add_argument(
        "--json",
        metavar="FILE",
        type=output_file,
        default=None,
        help=f"also write {what} as JSON to FILE ('-': standard output, the text report then goes "
        "to standard error); FILE's folder must exist",
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        help="print live progress lines even when the output is not a terminal",
    )
    parser.add_argument("--quiet", action="store_true", help="no live progress lines")


def text_stream(args: argparse.Namespace, out: TextIO | None = None) -> TextIO:
    """Where the text report goes: standard error when the JSON goes to
    standard output, else ``out`` (standard output by default)."""
    if getattr(args, "json", None) == "-":
        return sys.stderr
    return out if out is not None else sys.stdout


def progress_wanted(args: argparse.Namespace, stream: TextIO) -> bool:
    """Live progress: asked with ``--progress``, or by default on a terminal
    (never with ``--quiet``)."""
    if getattr(args, "quiet", False):
        return False
    if getattr(args, "progress", False):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def write_json(doc: dict[str, Any], path: str, text: TextIO | None = None) -> None:
    """Write ``doc`` to ``path`` (``-``: standard output) and say so on ``text``."""
    data = json.dumps(doc, indent=2, default=str)
    if path == "-":
        sys.stdout.write(data + "\n")
        sys.stdout.flush()
        return
    with open(path, "w", encoding="utf-8") as f:
        f.write(data + "\n")
    if text is not None:
        print(f"wrote {path}", file=text)


class StopRequest:
    """Ctrl-C as a request to stop: ``with StopRequest() as stop:`` installs a
    SIGINT handler that sets ``stop.event`` (the command checks it and ends
    early, cleanly); a second Ctrl-C raises :class:`KeyboardInterrupt`.  Outside
    the main thread it installs nothing (``event`` is then only set by hand).

    A SIGINT within :data:`SIGINT_REPEAT_S` of the first is the same request:
    ``timeout -s INT`` signals both the command and its process group, so one
    request often arrives twice.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: Any = None
        self._installed = False
        self._first_at = 0.0  # time.monotonic() of the first SIGINT

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if not self.event.is_set():
            self._first_at = time.monotonic()
            self.event.set()
        elif time.monotonic() - self._first_at > SIGINT_REPEAT_S:
            raise KeyboardInterrupt

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

"""Both kcont cores in one benchmark run: the process of ``kcont bench`` runs
its own core (``kcont.implementation``) and starts a partner process on the
other core (``KCONT_PURE_PYTHON=1`` set or unset), which runs the same
benchmarks with the same configuration and sends its results back.

The turn
    The two processes never measure at the same time: every measured round
    (``Config.turn``) is a turn passed between them over the partner's
    standard input and output, so a round of one core is followed by the
    same round of the other and the machine's noise hits both alike.  The
    partner says ``ready`` when it reaches a round, then waits for ``go``;
    the parent measures its own round either before or after the partner's
    (alternating), and waits for the partner's ``done``.  After each
    benchmark the partner sends its table (``group``), at the end its
    description (``result``).  Setup and teardown run outside turns.

Failure
    If the partner ends, says ``error``, writes anything else or stays
    silent for :data:`ANSWER_TIMEOUT` seconds, the parent stops it and goes
    on with its own core alone, and says why; the partner ignores Ctrl-C and
    ends when its standard input closes.

Locking: the parent writes to its partner from its measuring thread only; a
reader thread hands the partner's lines over a ``queue.SimpleQueue`` (no
other shared state).  The partner talks from its main thread only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import kcont

from .harness import Config, Group

WORKER_MODULE = "kcont.bench._worker"
# The longest the partner may take between two lines: its slowest stretch is
# setting up and running a round at a million timers on the pure core.
ANSWER_TIMEOUT = 900.0
# Config fields that are not sent to the partner (streams, events, hooks).
_LOCAL_FIELDS = frozenset({"out", "stop", "turn", "progress", "other_core"})


def config_to_json(cfg: Config) -> str:
    return json.dumps(
        {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in _LOCAL_FIELDS}
    )


def config_from_json(text: str) -> Config:
    values = json.loads(text)
    values["only"] = tuple(values["only"])
    return Config(**values)


def other_core_env() -> dict[str, str]:
    """The environment of a process running the core this one does not."""
    env = dict(os.environ)
    if kcont.implementation == "compiled":
        env["KCONT_PURE_PYTHON"] = "1"
    else:
        env.pop("KCONT_PURE_PYTHON", None)
    return env


class Partner:
    """The process running the other core, seen from the parent."""

    worker_module = WORKER_MODULE

    def __init__(self, cfg: Config) -> None:
        self.problem = ""  # why the partner stopped taking part ("" while it does)
        self.implementation = ""
        self.description = ""
        self._turns = 0
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by close()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", self.worker_module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=other_core_env(),
            text=True,
            bufsize=1,
        )
        self._lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, name="kcont-bench-partner-reader", daemon=True)
        self._reader.start()
        self._send(config_to_json(cfg))
        hello = self._expect("hello")
        if hello is not None:
            info = json.loads(hello)
            self.implementation = info["implementation"]
            self.description = info["description"]
            if self.implementation == kcont.implementation:
                self.stop(f"the other core is not available ({self.description})")

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put("")  # the end of its output

    @property
    def alive(self) -> bool:
        return not self.problem

    def _send(self, line: str) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.stop("the other core's process ended")

    def _expect(self, kind: str) -> str | None:
        """The payload of the partner's next line, which must be ``kind``;
        None (and the partner stopped) otherwise."""
        if not self.alive:
            return None
        try:
            line = self._lines.get(timeout=ANSWER_TIMEOUT)
        except queue.Empty:
            self.stop(f"the other core's process did not answer in {ANSWER_TIMEOUT:.0f} s")
            return None
        word, _, payload = line.rstrip("\n").partition(" ")
        if word == kind:
            return payload
        if word == "error":
            self.stop(f"the other core's run failed: {payload}")
        elif not line:
            self._proc.wait()  # its output ended: so did it (or it is about to)
            self.stop(f"the other core's process ended{self._stderr_tail()}")
        else:
            self.stop(f"the other core's process said {word[:20]!r} where {kind!r} was due")
        return None

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        lines = [x for x in self._stderr.read().splitlines() if x.strip()]
        return f" ({lines[-1].strip()})" if lines else ""

    @contextmanager
    def turn(self) -> Iterator[None]:
        """One measured round of each core, the partner's first every other time."""
        self._turns += 1
        partner_first = self._turns % 2 == 0
        if self._expect("ready") is None:
            yield
            return
        if partner_first:
            self._send("go")
            self._expect("done")
        yield
        if not partner_first and self.alive:
            self._send("go")
            self._expect("done")

    def group(self) -> Group | None:
        """The partner's table of the benchmark both just ran."""
        payload = self._expect("group")
        return None if payload is None else Group(**json.loads(payload))

    def finish(self) -> dict[str, Any] | None:
        """The partner's description of its run (its ``meta``), then its end."""
        payload = self._expect("result")
        self.close()
        return None if payload is None else dict(json.loads(payload))

    def stop(self, why: str) -> None:
        if not self.problem:
            self.problem = why
        self.close()

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.close()
            except OSError:
                pass
            try:
                self._proc.wait(0 if self.problem else 10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._reader.join(10)
        if self._proc.stdout is not None and not self._reader.is_alive():
            self._proc.stdout.close()
        if not self._stderr.closed:
            self._stderr.close()


class PartnerSide:
    """The partner process's end of the protocol (see the module docstring)."""

    def __init__(self, channel: IO[str], commands: IO[str]) -> None:
        self._channel = channel
        self._commands = commands

    def send(self, kind: str, payload: str = "") -> None:
        self._channel.write(f"{kind} {payload}\n" if payload else f"{kind}\n")
        self._channel.flush()

    @contextmanager
    def turn(self) -> Iterator[None]:
        self.send("ready")
        if self._commands.readline().strip() != "go":
            raise SystemExit(0)  # the parent is gone or stopped: end quietly
        yield
        self.send("done")

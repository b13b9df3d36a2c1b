"""The command line (``python -m kcont <command>``), run in subprocesses as a
user runs it: bad options and output paths are refused before any work with
exit status 2 and the option's name, ``--version`` answers, ``--json -`` is a
JSON document on standard output, and Ctrl-C stops a run cleanly (exit 130,
no traceback).  Every subprocess is bounded in time."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = dict(os.environ, PYTHONPATH=str(SRC), PYTHONUNBUFFERED="1")
COMMANDS = ("demo", "tour", "bench", "stress", "explore")


def kcont(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kcont", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["stress", "--duration", "0"], "argument --duration: must be > 0"),
        (["stress", "--duration", "nan"], "argument --duration: expected a finite number"),
        (["stress", "--threads", "0"], "argument --threads: must be between 1"),
        (["stress", "--continuations", "0"], "argument --continuations: must be between 1"),
        (["stress", "--ncpu", "0"], "argument --ncpu: must be between 1"),
        (["stress", "--ncpu", "100000"], "argument --ncpu: must be between 1 and 256"),
        (["stress", "--hz", "0"], "argument --hz: must be between 1"),
        (["explore", "--seeds", "0"], "argument --seeds: must be between 1"),
        (["tour", "--ncpu", "0"], "argument --ncpu: must be between 1"),
        (["bench", "--n", "0"], "argument --n: must be between 1"),
        (["bench", "--sizes", "1e12"], "argument --sizes: 1e12: must be between 1 and 10,000,000"),
        (["bench", "--sizes", "abc"], "argument --sizes: expected comma-separated integers"),
        (["demo", "--rx-queues", "0"], "argument --rx-queues: must be between 1"),
        (["demo", "--ncpu", "0"], "argument --ncpu: must be between 1"),
        (["demo", "--rate", "0"], "argument --rate: must be between 1"),
    ],
)
def test_a_bad_option_is_refused_naming_the_option(argv: list[str], expected: str) -> None:
    proc = kcont(*argv, timeout=30)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "_" not in proc.stderr.rsplit("error:", 1)[1].split(":")[0]  # an option, not a field name


def test_a_bad_environment_default_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kcont", "stress"],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(ENV, KCONT_STRESS_SECONDS="0"),
    )
    assert proc.returncode == 2 and "--duration" in proc.stderr, proc.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_json_into_a_missing_folder_is_refused_before_the_run(command: str, tmp_path: Path) -> None:
    started = time.monotonic()
    proc = kcont(command, "--json", str(tmp_path / "missing" / "out.json"), timeout=30)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "argument --json" in proc.stderr and "does not exist" in proc.stderr
    assert proc.stdout == ""  # nothing ran
    assert time.monotonic() - started < 20


def test_json_onto_a_folder_is_refused(tmp_path: Path) -> None:
    proc = kcont("stress", "--json", str(tmp_path), timeout=30)
    assert proc.returncode == 2 and "is a folder" in proc.stderr, proc.stderr


def test_plot_needs_matplotlib_and_says_how_to_install_it(tmp_path: Path) -> None:
    proc = kcont("bench", "--plot", str(tmp_path / "missing" / "timers.png"), timeout=30)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "argument --plot" in proc.stderr and proc.stdout == ""
    if importlib.util.find_spec("matplotlib") is None:
        assert "pip install 'kcont[bench]'" in proc.stderr and "pip install matplotlib" in proc.stderr
    else:
        assert "does not exist" in proc.stderr


def test_version_is_the_package_version() -> None:
    proc = kcont("--version", timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"kcont {importlib.metadata.version('kcont')} (")


@pytest.mark.parametrize(
    ("argv", "schema"),
    [
        (["tour"], "kcont.tour/1"),
        (["explore", "--seeds", "1"], "kcont.explore/1"),
        (["stress", "--duration", "0.5", "--threads", "1", "--continuations", "8"], "kcont.stress/1"),
        (["bench", "--quick", "--only", "memory"], "kcont.bench/2"),
        (
            [
                *("demo", "--flows", "8", "--rate", "1000", "--duration", "0.3"),
                *("--idle-ticks", "50", "--compare", "none"),
            ],
            "kcont.demo/1",
        ),
    ],
)
def test_json_to_stdout_is_one_document_with_a_schema(argv: list[str], schema: str) -> None:
    """``--json -``: standard output holds the JSON document alone (the text
    report goes to standard error)."""
    quiet = ["--quiet"] if argv[0] in ("demo", "stress", "explore") else []
    proc = kcont(*argv, "--json", "-", *quiet, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == schema
    assert proc.stderr.strip(), "the text report goes to standard error"


def test_ctrl_c_stops_stress_cleanly_with_partial_json(tmp_path: Path) -> None:
    """SIGINT once progress is shown: the load ends, the runtime shuts down,
    the accounting is still checked; exit 130, a one-line summary, partial
    JSON, no traceback."""
    out = tmp_path / "stress.json"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "kcont", "stress", "--duration", "30", "--threads", "2"),
            *("--continuations", "16", "--progress", "--json", str(out)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 20
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while not any(" ops " in line for line in lines):
                assert time.monotonic() < deadline, f"no progress line in 20 s: {lines}"
                if sel.select(timeout=0.5):
                    line = proc.stdout.readline()
                    assert line, f"the run ended before showing progress: {lines}"
                    lines.append(line)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stdout + stderr
    assert time.monotonic() - sent < 30
    assert "Traceback" not in stderr
    assert "kcont stress: interrupted after" in stderr
    assert "violations         0" in stdout
    doc = json.loads(out.read_text())
    assert doc["schema"] == "kcont.stress/1" and doc["interrupted"] is True and doc["violations"] == 0


def test_a_repeated_sigint_is_one_request_and_a_later_one_raises() -> None:
    """``timeout -s INT`` signals the command and its process group: the two
    SIGINTs of one request must not abort the clean stop; a Ctrl-C pressed
    again later does raise KeyboardInterrupt."""
    from kcont._cli import SIGINT_REPEAT_S, StopRequest

    before = signal.getsignal(signal.SIGINT)  # kcont's while a runtime of an earlier test exists
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs in this (main) thread between bytecodes
        assert stop.requested
        stop._first_at -= SIGINT_REPEAT_S + 1  # as if the first request were older
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is before

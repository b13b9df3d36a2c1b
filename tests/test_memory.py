"""Memory and references: nothing leaks, and no user __del__ runs under the state lock.

* ``benchmarks/leak_check.py`` (many create/schedule/dispatch/re-arm/stop/
  destroy cycles and handled exceptions on a SimRuntime) keeps its memory
  flat after warm-up: RSS over ``KCONT_LEAK_CYCLES`` cycles (default 1e5)
  and the traced Python memory over ``KCONT_LEAK_TRACED_CYCLES`` (default
  2e4), on the core this process runs.
* The same script under valgrind's memcheck (no definite leak, no invalid
  access) when valgrind is installed and ``KCONT_VALGRIND=1`` (a few minutes).
* A user object whose ``__del__`` uses the runtime dies with the state lock
  released, wherever the runtime drops the last reference to it: the
  function, argument or context of an invocation at the end of its dispatch,
  a replaced argument, a context replaced by a re-arm, and destroy.  These
  run under either core (the compiled dispatch and schedule included).
"""

from __future__ import annotations

import contextvars
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import kcont

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "leak_check.py"
CYCLES = os.environ.get("KCONT_LEAK_CYCLES", "1e5")
TRACED_CYCLES = os.environ.get("KCONT_LEAK_TRACED_CYCLES", "2e4")


def _leak_check(*args: str, timeout: float = 300, prefix: list[str] | None = None, **env: str) -> str:
    proc = subprocess.run(
        [*(prefix or []), sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        check=False,
    )
    assert proc.returncode == 0, f"leak_check {args} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout + proc.stderr


@pytest.mark.timeout(300)
def test_rss_stays_flat() -> None:
    out = _leak_check("--cycles", CYCLES, "--no-tracemalloc")
    assert f"implementation: {kcont.implementation}" in out


@pytest.mark.timeout(300)
def test_traced_memory_stays_flat() -> None:
    out = _leak_check("--cycles", TRACED_CYCLES)
    assert "growth after warm-up: tracemalloc" in out


def test_leak_check_detects_a_leak() -> None:
    """The bound above is a real one: a run whose functions keep every
    argument they see fails it."""
    code = (
        "import runpy, sys; kept = [];"
        "sys.argv = ['leak_check', '--cycles', '3000'];"
        "import kcont; original = kcont.Continuation.__init__\n"
        "def init(self, wq, func, arg=None, **kw):\n"
        "    kept.append([0] * 64)\n"
        "    original(self, wq, func, arg, **kw)\n"
        "kcont.Continuation.__init__ = init\n"
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL: traced memory grew" in proc.stdout


@pytest.mark.timeout(1800)
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
@pytest.mark.skipif(os.environ.get("KCONT_VALGRIND", "") != "1", reason="long: set KCONT_VALGRIND=1")
def test_valgrind_memcheck_clean() -> None:
    """No definite leak, and no memcheck error in a stack through the
    compiled core.  (CPython 3.11 itself reports a few uses of uninitialised
    values while it starts, in int.from_bytes and the import machinery: not
    ours, so the exit status of --error-exitcode is not used.)"""
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=memcheck",
            "--errors-for-leak-kinds=definite",
            "--leak-check=full",
            "--show-leak-kinds=definite",
            "--num-callers=40",
            sys.executable,
            str(SCRIPT),
            "--cycles",
            os.environ.get("KCONT_VALGRIND_CYCLES", "2000"),
            "--no-tracemalloc",
            "--max-rss-growth-kib=1000000",  # (valgrind's own heap: not a measure)
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "PYTHONMALLOC": "malloc"},
        check=False,
    )
    report = proc.stderr
    assert proc.returncode == 0, proc.stdout + report[-4000:]
    assert "definitely lost: 0 bytes" in report or "no leaks are possible" in report, report[-4000:]
    ours = [
        line
        for line in report.splitlines()
        if "_ckcont" in line
        or any(f"({name}.c:" in line for name in ("schedule", "dispatch", "wheel", "module"))
    ]
    assert not ours, "memcheck errors through the compiled core:\n" + report[-8000:]


# -- __del__ of user objects never runs under the state lock ---------------------

VAR: contextvars.ContextVar[Any] = contextvars.ContextVar("memory_var", default=None)


class Probe:
    """Records, when it dies, whether the state lock was held, and then uses
    the runtime (schedules a continuation) if it was not."""

    def __init__(self, rt: kcont.SimRuntime, sink: Any, deaths: list[tuple[str, bool]], name: str) -> None:
        self.rt = rt
        self.sink = sink
        self.deaths = deaths
        self.name = name

    def __call__(self, arg: Any, kc: Any) -> None:  # a Probe can be a function too
        pass

    def __del__(self) -> None:
        held = self.rt._lock.locked()
        self.deaths.append((self.name, held))
        if not held and not self.sink.destroyed:
            self.sink.ack()
            self.sink.schedule(0)


@pytest.fixture
def world() -> Any:
    rt = kcont.SimRuntime(ncpu=2, hz=100, reraise=True)
    deaths: list[tuple[str, bool]] = []
    with rt:
        wq = rt.workqueue(kcont.PRI_SOFTNET)
        sink = rt.continuation(wq, lambda arg, kc: None, name="sink")
        yield rt, wq, sink, deaths
        rt.run_until_idle()


def _evict_context_cache(rt: kcont.SimRuntime, wq: Any) -> None:
    """The runtime keeps its last timer capture (to share it with the next
    one holding the same values): another capture replaces it."""
    other = rt.continuation(wq, lambda a, k: None, name="evictor")
    token = VAR.set(object())
    other.schedule(50)
    VAR.reset(token)
    other.destroy()


def _died(deaths: list[tuple[str, bool]], name: str) -> bool:
    return any(n == name for n, _ in deaths)


def _assert_died_unlocked(deaths: list[tuple[str, bool]], *names: str) -> None:
    for name in names:
        assert _died(deaths, name), f"{name} is still alive: the test did not drop the last reference"
    held = [n for n, locked in deaths if locked]
    assert not held, f"__del__ ran with the state lock held: {held}"


def test_probe_sees_a_held_lock(world: Any) -> None:
    """The probe can fail: dropped under the lock, it says so."""
    rt, _wq, sink, deaths = world
    probe = Probe(rt, sink, deaths, "control")
    with rt._lock:
        del probe
    assert deaths == [("control", True)]


@pytest.mark.parametrize("path", ["immediate", "timer", "percpu"])
def test_function_argument_and_context_die_unlocked_after_dispatch(world: Any, path: str) -> None:
    """The invocation holds the last references to its function, argument
    and context (the function replaces them while it runs)."""
    rt, wq, sink, deaths = world
    if path == "percpu":
        wq = rt.workqueue(kcont.PRI_SOFTCLOCK, percpu=True)

    def replace_everything(arg: Any, kc: Any) -> None:
        kc.ack()
        kc.set_func(lambda a, k: None, None)

    kc = rt.continuation(wq, Probe(rt, sink, deaths, "func"), Probe(rt, sink, deaths, "arg"), name="victim")
    kc.set_func(replace_everything, Probe(rt, sink, deaths, "arg2"))
    _assert_died_unlocked(deaths, "func", "arg")
    token = VAR.set(Probe(rt, sink, deaths, "ctx"))
    kc.schedule(0 if path != "timer" else 2)
    VAR.reset(token)
    assert not _died(deaths, "arg2")
    if path == "timer":
        _evict_context_cache(rt, wq)
        rt.advance(2)
    rt.run_until_idle()
    _assert_died_unlocked(deaths, "arg2")
    kc.destroy()  # (the continuation keeps the context of its last invocation)
    _evict_context_cache(rt, wq)
    _assert_died_unlocked(deaths, "ctx")
    rt.run_until_idle()
    assert sink.invoking or sink.expired  # the probes scheduled it


def test_replaced_argument_dies_unlocked(world: Any) -> None:
    rt, wq, sink, deaths = world
    kc = rt.continuation(wq, lambda a, k: None, Probe(rt, sink, deaths, "arg"), name="victim")
    kc.set_arg(None)
    _assert_died_unlocked(deaths, "arg")
    lock = kcont.Mutex("m")
    locked = rt.continuation(
        wq, lambda a, k: None, Probe(rt, sink, deaths, "locked arg"), lock=lock, name="lv"
    )
    with lock:
        locked.set_arg(None)
        locked.set_func(lambda a, k: None, Probe(rt, sink, deaths, "func arg"))
        locked.set_func(lambda a, k: None, None)
    _assert_died_unlocked(deaths, "locked arg", "func arg")


@pytest.mark.parametrize("second", [0, 3])
def test_context_replaced_by_a_rearm_dies_unlocked(world: Any, second: int) -> None:
    """schedule(n) then schedule(m) with other context values: the first
    capture dies in the second schedule (the compiled fast path re-arms)."""
    rt, wq, sink, deaths = world
    kc = rt.continuation(wq, lambda a, k: None, name="victim")
    token = VAR.set(Probe(rt, sink, deaths, "ctx"))
    kc.schedule(5)
    VAR.reset(token)
    assert not _died(deaths, "ctx")
    token = VAR.set("replacement")
    kc.schedule(second)
    VAR.reset(token)
    if second == 0:
        _evict_context_cache(rt, wq)
    _assert_died_unlocked(deaths, "ctx")


def test_context_replaced_by_an_immediate_reschedule_dies_unlocked(world: Any) -> None:
    rt, wq, sink, deaths = world
    kc = rt.continuation(wq, lambda a, k: None, name="victim")
    token = VAR.set(Probe(rt, sink, deaths, "ctx"))
    kc.schedule(0)
    VAR.reset(token)
    kc.schedule(0, ack=True)  # replaces the queued invocation and its context
    _assert_died_unlocked(deaths, "ctx")


@pytest.mark.parametrize("state", ["idle", "pending", "queued", "running"])
def test_destroy_drops_everything_unlocked(world: Any, state: str) -> None:
    rt, wq, sink, deaths = world

    def destroy_self(arg: Any, kc: Any) -> None:
        kc.destroy()

    kc = rt.continuation(wq, Probe(rt, sink, deaths, "func"), Probe(rt, sink, deaths, "arg"), name="victim")
    if state == "running":
        kc.set_func(destroy_self, Probe(rt, sink, deaths, "arg"))
    token = VAR.set(Probe(rt, sink, deaths, "ctx"))
    if state == "pending":
        kc.schedule(4)
    elif state in ("queued", "running"):
        kc.schedule(0)
    VAR.reset(token)
    if state == "running":
        rt.run_until_idle()
    else:
        kc.destroy()
    del kc
    _evict_context_cache(rt, wq)
    names = ("func", "arg") + (("ctx",) if state != "idle" else ())
    _assert_died_unlocked(deaths, *names)


def test_shutdown_cancel_drops_everything_unlocked(world: Any) -> None:
    rt, wq, sink, deaths = world
    kc = rt.continuation(wq, lambda a, k: None, Probe(rt, sink, deaths, "arg"), name="victim")
    token = VAR.set(Probe(rt, sink, deaths, "ctx"))
    kc.schedule(3)
    VAR.reset(token)
    sink.destroy()  # (a probe cannot schedule on a shut-down runtime)
    _evict_context_cache(rt, wq)
    rt.shutdown(cancel=True)
    del kc
    _assert_died_unlocked(deaths, "arg", "ctx")

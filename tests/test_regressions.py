"""Bugs found by the reliability tooling (stress harness, explorer, bad-input
catalogue), each as a minimal deterministic reproduction.

A test states the behaviour kcont promises.  While a bug stands it is marked
``xfail(strict=True, reason="BUG: ...")``; once the core is fixed the mark
goes and the test stays as a regression test.  Tests without a mark are bugs
fixed in commit bee1f46 (found by the first stress runs and the bad-input
catalogue); each docstring says what was wrong.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import kcont
from kcont import InvalidArgumentError, Runtime, SimRuntime

SRC = Path(__file__).resolve().parents[1] / "src"


def _noop(arg: Any, kc: Any) -> None:
    pass


# -- accounting ----------------------------------------------------------------------------


def test_account_counts_invocations_on_a_queue_freed_before_shutdown() -> None:
    """Found by the stress harness (account.ran < journal): the account summed
    ``rq.invoked`` over the live queues only, so a released and freed queue
    took its invocations with it (RuntimeCore._account)."""
    rt = SimRuntime()
    with rt:
        wq = rt.acquire_workqueue(100, 0)
        kc = rt.continuation(wq, _noop)
        kc.schedule()
        rt.run_until_idle()
        kc.destroy()
        assert kcont.kcont_workqueue_release(wq) == 0 and wq.freed
        rt.continuation(kcont.wq_softnet, _noop).schedule()
        rt.run_until_idle()
        # "ran: invocations over the runtime's life" (docs/runtime.md)
        assert rt.shutdown().ran == 2


def test_sim_shutdown_account_is_final_when_called_again() -> None:
    """SimRuntime.shutdown() recomputed pending/cancelled at each call: a second
    call reported 0 for the timers the first one stopped (Runtime kept them)."""
    rt = SimRuntime()
    with rt:
        for _ in range(3):
            rt.continuation(kcont.wq_softnet, _noop).schedule(5)
        first = rt.shutdown()
        assert first.pending == 3
        assert rt.shutdown() == first


def test_sim_shutdown_after_an_attempt_from_inside_reports_the_stopped_timers() -> None:
    """A shutdown attempted from inside a continuation on the simulator closes
    the runtime and stops the timers before SimDeadlockError; the shutdown from
    outside then reported pending=0."""
    rt = SimRuntime()
    with rt:
        rt.continuation(kcont.wq_softnet, _noop).schedule(5)

        def closer(arg: Any, kc: Any) -> None:
            with contextlib.suppress(kcont.SimDeadlockError):
                rt.shutdown()

        rt.continuation(kcont.wq_softnet, closer).schedule()
        rt.run_until_idle()
        assert rt.shutdown().pending == 1


# -- dead workers --------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_runtime_pin_is_validated_at_construction() -> None:
    """Runtime(pin=["0"]) was accepted: every worker died at start (TypeError in
    os.sched_setaffinity, which only OSError was caught for), the runtime
    silently ran nothing, and shutdown() without a timeout waited for ever."""
    rt = None
    try:
        with pytest.raises(TypeError):
            rt = Runtime(ncpu=1, pin=["0"])  # type: ignore[list-item]
    finally:
        if rt is not None:
            time.sleep(0.1)
            rt.shutdown(timeout=1)


@pytest.mark.timeout(60)
def test_shutdown_returns_even_if_a_worker_died() -> None:
    """A worker thread that died was never removed from Runtime._workers, so
    shutdown() without a timeout never returned (holding _shutdown_lock, so
    the atexit shutdown blocked too).  A worker is killed here by making its
    pinning raise something else than OSError; in a subprocess, so that the
    test process cannot depend on the fix to exit."""
    script = textwrap.dedent(
        """
        import os, threading, time, kcont

        def broken(pid, cpus):
            raise RuntimeError("no affinity today")

        os.sched_setaffinity = broken
        rt = kcont.Runtime(ncpu=1, pin=[0])
        time.sleep(0.3)
        print(sum(t.name.startswith(f"kcont/{rt.name}/0/") for t in threading.enumerate()), "workers")
        done = threading.Event()
        threading.Thread(target=lambda: (rt.shutdown(), done.set()), daemon=True).start()
        print("returned" if done.wait(10) else "still waiting", flush=True)
        os._exit(0)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=50,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    assert proc.stdout.split() == ["0", "workers", "returned"], proc.stdout + proc.stderr


# -- arguments validated after side effects, or not at all ----------------------------------
#
# docs/semantics.md §14: misuse raises a specific exception *at the call*.
# These calls accepted a wrong argument, or rejected it only after changing state.


def _sim_kc() -> Any:
    rt = SimRuntime()
    return rt, rt.continuation(kcont.wq_softnet, _noop)


@pytest.mark.parametrize("api", ["method", "capi"])
def test_halt_rejects_an_interlock_that_is_not_a_mutex(api: str) -> None:
    """halt() did not check interlock: accepted when nothing ran; when the
    function ran, AttributeError after the stop (_wait_not_running)."""
    _, kc = _sim_kc()
    with pytest.raises(TypeError):
        if api == "method":
            kc.halt(interlock="not a mutex")
        else:
            kcont.kcont_halt(kc, "not a mutex")  # type: ignore[arg-type]


@pytest.mark.parametrize("call", ["halt", "destroy"])
def test_halt_and_destroy_reject_a_timeout_that_is_not_a_number(call: str) -> None:
    """halt/destroy(timeout="soon") were accepted when nothing ran; when the
    function ran, TypeError after the stop (destroy: after DESTROYED was set)."""
    _, kc = _sim_kc()
    with pytest.raises(TypeError):
        getattr(kc, call)(timeout="soon")
    assert not kc.destroyed


@pytest.mark.timeout(30)
def test_shutdown_rejects_a_bad_timeout_before_closing() -> None:
    """Runtime.shutdown(timeout="soon") closed the runtime and woke the workers,
    then raised TypeError."""
    rt = Runtime(ncpu=1)
    try:
        with pytest.raises(TypeError):
            rt.shutdown(timeout="soon")  # type: ignore[arg-type]
        assert not rt.closed
    finally:
        rt.shutdown(timeout=5)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"stall_threshold": -1.0}, InvalidArgumentError),
        ({"idle_timeout": -1.0}, InvalidArgumentError),
        ({"max_thread_workers": True}, TypeError),
    ],
    ids=["stall_threshold<0", "idle_timeout<0", "max_thread_workers=True"],
)
def test_runtime_checks_its_tuning_arguments(kwargs: dict[str, Any], error: type[Exception]) -> None:
    """Negative stall_threshold/idle_timeout and a bool max_thread_workers
    were accepted."""
    rt = None
    try:
        with pytest.raises(error):
            rt = Runtime(ncpu=1, **kwargs)
    finally:
        if rt is not None:
            rt.shutdown(timeout=5)


@pytest.mark.parametrize(
    "case",
    ["foreign CPU index", "resolve(str)", "Workqueue(str)", "percpu str", "advance(bool)", "max_steps str"],
)
def test_public_helpers_reject_wrong_types_and_values(case: str) -> None:
    """Public constructors and helpers validated nothing: a hand-made
    CPU(rt, 99) gave IndexError at schedule, PredefinedQueue.resolve("x") and
    Workqueue("x", ...) AttributeError; rt.workqueue(percpu="yes"),
    SimRuntime.advance(True) and run_until_idle("x") were accepted."""
    rt, kc = _sim_kc()
    with pytest.raises((TypeError, InvalidArgumentError)):
        if case == "foreign CPU index":
            kc.schedule(cpu=kcont.CPU(rt, 99))
        elif case == "resolve(str)":
            kcont.wq_softnet.resolve("rt")  # type: ignore[arg-type]
        elif case == "Workqueue(str)":
            kcont.Workqueue("rt", "q", 10, 0, predefined=False, order=0)  # type: ignore[arg-type]
        elif case == "percpu str":
            rt.workqueue(10, percpu="yes")  # type: ignore[arg-type]
        elif case == "advance(bool)":
            rt.advance(True)
        else:
            rt.run_until_idle("many")  # type: ignore[arg-type]


@pytest.mark.parametrize("ack", ["no", 0, None, ""])
def test_schedule_rejects_an_ack_that_is_not_a_bool(ack: Any) -> None:
    _, kc = _sim_kc()
    with pytest.raises(TypeError, match="ack must be a bool"):
        kc.schedule(0, ack=ack)
    assert not kc.queued


# -- user code run by dropping the last reference under the state lock -----------------------------
# Found by an audit for user code under locks: the last reference to a
# function, argument or context value was dropped with the state lock held, so
# its __del__ (user code, which may use the runtime and would then deadlock)
# ran there.


class _Tracked:
    """Records, when it dies, whether its runtime's state lock was held."""

    def __init__(self, rt: Any, log: list[tuple[str, bool]], tag: str) -> None:
        self.rt, self.log, self.tag = rt, log, tag

    def __call__(self, arg: Any, kc: Any) -> None:
        pass

    def __del__(self) -> None:
        self.log.append((self.tag, self.rt._lock.locked()))


def test_no_object_dies_under_the_state_lock() -> None:
    log: list[tuple[str, bool]] = []
    var: contextvars.ContextVar[Any] = contextvars.ContextVar("tracked")
    gc_was_enabled = gc.isenabled()
    gc.disable()  # deaths by reference count only, at a known point
    try:
        rt = SimRuntime(ncpu=1)
        with rt:
            kc = rt.continuation(kcont.wq_softnet, _noop, _Tracked(rt, log, "destroy"))
            kc.destroy()
            kc = rt.continuation(kcont.wq_softnet, _noop, _Tracked(rt, log, "set_arg"))
            kc.set_arg(None)
            kc = rt.continuation(kcont.wq_softnet, _Tracked(rt, log, "set_func"))
            kc.set_func(_noop, None)

            def arm() -> None:
                var.set(_Tracked(rt, log, "context"))
                kc.schedule()

            contextvars.copy_context().run(arm)
            rt.run_until_idle()
            kc.schedule()  # its new context replaces the one holding the value
            rt.run_until_idle()
            for i in range(2):  # fire and forget: the dispatcher holds the last reference
                rt.continuation(kcont.wq_softnet, _noop, _Tracked(rt, log, f"fire{i}")).schedule()
            rt.run_until_idle()
            rt.continuation(kcont.wq_softnet, _noop, _Tracked(rt, log, "pending")).schedule(5)
            rt.shutdown()
    finally:
        if gc_was_enabled:
            gc.enable()
    tags = {tag for tag, _ in log}
    assert {"destroy", "set_arg", "set_func", "context", "fire0", "fire1", "pending"} <= tags
    assert [tag for tag, held in log if held] == []

"""os.fork() while runtimes exist.

In the child, every threaded runtime of the parent refuses every use with
ForkedRuntimeError (a clear error, not a hang and not work that silently
never runs), a new Runtime works normally, and the child exits promptly.  The
parent is not disturbed.  Each child runs under a deadline: a child that
hangs is killed, and the test fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from typing import IO, Any

import pytest

import kcont

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    pytest.mark.threaded,
]

CHILD_SECONDS = 20.0


def _fork_and_wait(child: Callable[[IO[str]], None]) -> tuple[int, str]:
    """Run ``child(out)`` in a forked child; return its exit code and what it
    wrote.  The child leaves with os._exit (never back into pytest): 0 if
    ``child`` returned, 1 if it raised.  A child still running after
    CHILD_SECONDS is killed: the test fails."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # 3.12+: "This process is multi-threaded, use of fork() may lead to deadlocks"
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(read_end)
            with os.fdopen(write_end, "w") as out:
                try:
                    child(out)
                    code = 0
                except BaseException:
                    traceback.print_exc(file=out)
        finally:
            os._exit(code)
    os.close(write_end)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.append(_read_all(read_end)), daemon=True)
    reader.start()
    deadline = time.monotonic() + CHILD_SECONDS
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail(f"the child hung for {CHILD_SECONDS} s")
        time.sleep(0.01)
    reader.join(5)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode()


def _read_all(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as stream:
        return stream.read()


class _Busy:
    """Continuations that keep scheduling each other on a threaded runtime:
    soft-level and thread-level, with and without a lock, plus a far timer."""

    def __init__(self, rt: kcont.Runtime, lock: kcont.Mutex) -> None:
        self.rt = rt
        self.runs = 0
        self.stopping = False
        self.count_lock = threading.Lock()
        queues = (kcont.wq_softnet, kcont.wq_prilow, kcont.wq_softclock, kcont.wq_prihigh)
        self.kcs = [
            rt.continuation(queues[i % 4], self.bounce, i, lock=lock if i < 3 else None) for i in range(8)
        ]
        self.timer = rt.continuation(kcont.wq_softclock, self.bounce, -1)
        self.timer.schedule(100_000)
        for kc in self.kcs:
            kc.schedule()

    def bounce(self, i: int, kc: kcont.Continuation[int]) -> None:
        with self.count_lock:
            self.runs += 1
        time.sleep(0.0002)
        if not self.stopping:
            nxt = self.kcs[(i + 1) % len(self.kcs)]
            try:
                nxt.schedule()
            except kcont.BusyError:
                pass  # already committed: it runs anyway
            try:
                kc.schedule(ack=True)
            except kcont.BusyError:
                pass

    def stop(self) -> None:
        self.stopping = True
        for kc in self.kcs:
            kc.halt(timeout=10)


def _refused(out: IO[str], what: str, call: Callable[[], Any]) -> None:
    try:
        call()
    except kcont.ForkedRuntimeError as exc:
        message = str(exc)
        assert "belongs to the parent process" in message, message
        assert "create a new kcont.Runtime in the child" in message, message
        assert isinstance(exc, kcont.ShutdownError)
        out.write(f"refused {what}\n")
    else:
        raise AssertionError(f"{what}: not refused in the child")


def _new_runtime_works(out: IO[str], lock: kcont.Mutex) -> None:
    """A Runtime created in the child runs soft-level, thread-level, timed and
    locked work (with a Mutex created by the parent), and shuts down."""
    ran: list[str] = []
    done = threading.Event()

    def record(arg: str, kc: Any) -> None:
        ran.append(arg)
        if len(ran) == 4:
            done.set()

    with kcont.Runtime(ncpu=2, hz=100) as fresh:
        fresh.continuation(kcont.wq_softnet, record, "soft").schedule()
        fresh.continuation(kcont.wq_prilow, record, "thread").schedule()
        fresh.continuation(kcont.wq_prihigh, record, "locked", lock=lock).schedule()
        fresh.continuation(kcont.wq_softclock, record, "timer").schedule(2)
        assert done.wait(10), ran
    account = fresh.shutdown()
    assert sorted(ran) == ["locked", "soft", "thread", "timer"] and account.ran == 4, (ran, account)
    out.write("new runtime ok\n")


@pytest.mark.timeout(120)
def test_in_the_child_the_parents_runtime_refuses_and_a_new_one_works() -> None:
    lock = kcont.Mutex("shared with the child")
    rt = kcont.Runtime(ncpu=2, hz=100)
    sim = kcont.SimRuntime(ncpu=1)
    sim_ran: list[int] = []
    sim_kc = sim.continuation(kcont.wq_softnet, lambda arg, kc: sim_ran.append(arg), 7)
    held_by_worker = kcont.Mutex("held by a parent's worker at the fork")
    holding, let_go = threading.Event(), threading.Event()

    def hold(arg: None, kc: Any) -> None:
        holding.set()
        let_go.wait(30)

    with rt:
        rt.continuation(kcont.wq_primedhigh, hold, lock=held_by_worker).schedule()
        assert holding.wait(10)
        busy = _Busy(rt, lock)  # (started after: its thread-level work would starve `hold`)
        time.sleep(0.05)  # well under way

        def child(out: IO[str]) -> None:
            kc, timer = busy.kcs[1], busy.timer
            _refused(out, "schedule", lambda: kc.schedule(5))
            _refused(out, "kcont_schedule", lambda: kcont.kcont_schedule(kc, None, 0))
            _refused(out, "halt", lambda: kc.halt())
            _refused(out, "flush", lambda: kc.flush())
            _refused(out, "stop", lambda: timer.stop())
            _refused(out, "destroy", lambda: kc.destroy())
            _refused(out, "ack", lambda: kc.ack())
            _refused(out, "create", lambda: rt.continuation(kcont.wq_softnet, busy.bounce, 0))
            _refused(out, "acquire", lambda: rt.workqueue(10))
            _refused(out, "stats", lambda: rt.stats())
            _refused(out, "wait_idle", lambda: rt.wait_idle(timeout=1))
            _refused(out, "shutdown", lambda: rt.shutdown(timeout=1))
            # Predicates still read; the runtime says what it is.
            assert timer.pending and not kc.destroyed
            assert rt.closed and "forked" in repr(rt)
            rt.__exit__(None, None, None)  # leaving its with-block is no use of it
            # Its holder does not exist here: the Mutex is free in the child.
            assert held_by_worker.acquire(timeout=5), "a Mutex held by a parent's worker stays held"
            held_by_worker.release()
            _new_runtime_works(out, lock)
            # A simulated runtime has no threads: it goes on in the child.
            sim_kc.schedule()
            sim.run_until_idle()
            assert sim_ran == [7]
            out.write("sim ok\n")

        before = busy.runs
        results = [_fork_and_wait(child) for _ in range(3)]
        assert held_by_worker.locked()  # the parent's is still held, by its worker
        let_go.set()
        busy.stop()
        after = busy.runs
    account = rt.shutdown(timeout=10)
    for code, output in results:
        assert code == 0, output
        assert output.count("refused") == 12, output
        assert "new runtime ok" in output and "sim ok" in output, output
    # The parent went on working while its children ran, and lost nothing.
    assert after > before
    assert account.failed == 0 and account.unfinished == 0
    assert sim_ran == [] and not sim_kc.queued  # the child's run was the child's


_SYS_EXIT_SCRIPT = textwrap.dedent(
    """
    import gc, os, sys, time, warnings
    import kcont
    warnings.simplefilter("ignore", DeprecationWarning)
    rt = kcont.Runtime(ncpu=2, hz=1000)
    def bounce(arg, kc):
        time.sleep(0.0002)
        try:
            kc.schedule(ack=True)
        except kcont.ShutdownError:
            pass                        # the parent shuts down at the end
    kcs = [rt.continuation(kcont.wq_prilow if i % 2 else kcont.wq_softnet, bounce) for i in range(6)]
    for kc in kcs:
        kc.schedule()
    rt.continuation(kcont.wq_softclock, bounce).schedule(100_000)
    time.sleep(0.05)
    codes, seconds = [], []
    for mode in ("live", "dropped") * 3:
        forked = time.monotonic()
        pid = os.fork()
        if pid == 0:
            if mode == "dropped":
                del rt, kc, kcs
                gc.collect()
            sys.exit(0)                 # atexit handlers run: nothing may wait for the parent's threads
        deadline = time.monotonic() + 10
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes.append(os.waitstatus_to_exitcode(status))
                seconds.append(time.monotonic() - forked)
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                codes.append("hung")
                break
            time.sleep(0.01)
    for kc in kcs:
        kc.stop()
    rt.shutdown(cancel=True, timeout=10)
    print(codes)
    print(max(seconds))
    """
)


@pytest.mark.timeout(120)
def test_the_child_exits_promptly_with_sys_exit() -> None:
    """sys.exit(0) in the child of a busy parent: exit handlers neither wait
    for the parent's threads nor warn about its runtime (kept or dropped)."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", _SYS_EXIT_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    codes, slowest = proc.stdout.splitlines()
    assert codes == "[0, 0, 0, 0, 0, 0]", proc.stdout + proc.stderr
    assert "ResourceWarning" not in proc.stderr, proc.stderr
    # Promptly: no wait for threads that do not exist in the child (a child
    # that waited for them took over a second).
    assert float(slowest) < 0.8, f"a child took {float(slowest):.2f} s to exit"
    assert time.monotonic() - started < 30


@pytest.mark.timeout(120)
def test_a_child_forked_inside_a_continuation_uses_its_own_runtime() -> None:
    """The child is a copy of the worker thread that forked: it is no CPU's
    worker there, so the runtime it enters is its current one."""
    results: list[Any] = []

    def child(out: IO[str]) -> None:
        ran = threading.Event()
        with kcont.Runtime(ncpu=1, hz=100) as fresh:
            assert kcont.current_runtime() is fresh
            kcont.Continuation(kcont.wq_softnet, lambda arg, kc: ran.set()).schedule()
            assert ran.wait(10)
        out.write("ok\n")

    def forks(arg: None, kc: Any) -> None:
        try:
            results.append(_fork_and_wait(child))
        except BaseException as exc:  # pytest.fail: reported by the test thread
            results.append(exc)

    with kcont.Runtime(ncpu=1, hz=100) as rt:
        rt.continuation(kcont.wq_prilow, forks).schedule()
        rt.wait_idle(timeout=CHILD_SECONDS + 10)
    ((code, output),) = results
    assert code == 0 and output == "ok\n", output


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("ending", "status"), [("return", 0), ("sys.exit(3)", 3)])
def test_a_child_forked_inside_a_continuation_ends_with_its_function(ending: str, status: int) -> None:
    """When the function returns (or calls sys.exit) in the child, the
    child's only thread is back in the parent's runtime, which runs nothing
    there: the child ends, with sys.exit's status, and the work queued
    behind the function runs in the parent only."""
    read_end, write_end = os.pipe()
    parent = os.getpid()
    statuses: list[Any] = []

    def queued_behind(arg: None, kc: Any) -> None:
        os.write(write_end, f"queued work ran in {'parent' if os.getpid() == parent else 'child'}\n".encode())

    def forks(arg: None, kc: Any) -> None:
        rt.continuation(kcont.wq_prilow, queued_behind).schedule()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            os.write(write_end, b"child ran\n")
            if ending == "return":
                return
            sys.exit(3)
        deadline = time.monotonic() + CHILD_SECONDS
        while True:
            done, wait_status = os.waitpid(pid, os.WNOHANG)
            if done:
                statuses.append(os.waitstatus_to_exitcode(wait_status))
                return
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                statuses.append("hung")
                return
            time.sleep(0.01)

    with kcont.Runtime(ncpu=1, hz=100) as rt:
        failures: list[BaseException] = []
        rt.exception_handler = lambda kc, exc: failures.append(exc)
        rt.continuation(kcont.wq_prilow, forks).schedule()
        deadline = time.monotonic() + CHILD_SECONDS + 10
        while not statuses and time.monotonic() < deadline:
            time.sleep(0.01)
        rt.wait_idle(timeout=10)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as stream:
        lines = sorted(stream.read().decode().splitlines())
    assert statuses == [status]
    assert lines == ["child ran", "queued work ran in parent"]
    assert failures == []

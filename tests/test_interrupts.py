"""Behaviour: a KeyboardInterrupt (Ctrl-C) in the main thread never leaves kcont
half-way: no state lock, Mutex or wait half-taken, no transition half-done,
and the interrupt surfaces once, to the caller, at a safe point.

The interrupt is requested at every line of kcont's critical sections in
turn: a tracer calls ``_thread.interrupt_main()`` when the main thread
reaches the chosen line (the tracer is compiled under a ``<frozen ...>``
file name, as the standard library's frozen modules are, so that it counts
as library code and not as the caller's: the interrupt is seen as arriving
in the traced function itself).  Waits are interrupted with a real SIGINT
sent to the main thread by a helper thread.  A tracer being active, the
deferred interrupt is then delivered by a signal sent again; without one (the
tests that hold the state lock from a helper thread, the whole programs), by
the return of the protected call.
"""

from __future__ import annotations

import _thread
import gc
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from types import CodeType, FrameType
from typing import Any

import pytest

import kcont
from kcont import Continuation, Mutex, SimRuntime

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "pthread_kill"), reason="sends SIGINT to the main thread (POSIX)"
)

_TRACER_SOURCE = """
def make_tracer(code, line, fire):
    fired = []

    def local(frame, event, arg):
        if event == "line" and frame.f_lineno == line and not fired:
            fired.append(True)
            fire()
        return local

    def tracer(frame, event, arg):
        if frame.f_code is code:
            return local
        return None

    return tracer, fired
"""
_namespace: dict[str, Any] = {}
exec(compile(_TRACER_SOURCE, "<frozen kcont-tests interrupt tracer>", "exec"), _namespace)
make_tracer = _namespace["make_tracer"]


def reference(cls: type, name: str) -> Callable[..., Any]:
    """The pure-Python method ``name`` of ``cls``: the method itself on the
    pure core; on the compiled one, the reference its compiled fast path
    hands rare cases to (kept as ``_py_<name>``), which runs on the same
    objects.  The compiled path has no line to interrupt: no bytecode runs
    between its steps, and the Python helpers it calls under the state lock
    are protected (see the tests of the worker kick below)."""
    return getattr(cls, f"_py_{name}", getattr(cls, name))  # type: ignore[no-any-return]


def body_lines(func: Callable[..., Any]) -> list[int]:
    """Every line of ``func``'s code that holds an instruction."""
    code: CodeType = func.__code__
    return sorted({line for _, _, line in code.co_lines() if line is not None and line > code.co_firstlineno})


def interrupted_at(func: Callable[..., Any], line: int, call: Callable[[], Any]) -> tuple[bool, bool, int]:
    """Run ``call()`` with an interrupt requested when ``func`` reaches
    ``line``, then give a deferred interrupt half a second to surface.
    Returns (the line was reached, the call returned, interrupts caught)."""
    tracer, fired = make_tracer(func.__code__, line, _thread.interrupt_main)
    caught = 0
    returned = False
    try:
        sys.settrace(tracer)
        try:
            call()
            returned = True
        finally:
            sys.settrace(None)
        if fired:
            time.sleep(0.5)
    except KeyboardInterrupt:
        caught += 1
    try:
        time.sleep(0.02)  # a second one would surface here
    except KeyboardInterrupt:
        caught += 1
    return bool(fired), returned, caught


def queued_entries(rt: Any) -> set[int]:
    found: set[int] = set()
    for wq in rt._workqueues:
        for rq in wq.unique_rqs():
            entries = list(rq.fifo)
            for sub in (*rq.parked.values(), *rq.woken.values()):
                entries.extend(sub)
            found.update(id(kc) for kc in entries)
    return found


def check_consistent(rt: Any, *kcs: Continuation[Any]) -> None:
    """The state lock is free and every flag matches where the continuation is."""
    held = rt._lock.locked()
    if held:
        rt._lock.release()  # let the test end instead of hanging
    assert not held, "the state lock was left held"
    queued = queued_entries(rt)
    armed = {id(kc) for kc in rt._wheel}
    for kc in kcs:
        assert kc.queued == (id(kc) in queued), f"{kc!r}: QUEUED does not match the run queues"
        assert kc.pending == (id(kc) in armed), f"{kc!r}: PENDING does not match the timer wheel"


@pytest.fixture
def sim() -> Iterator[SimRuntime]:
    rt = SimRuntime(ncpu=2)
    with rt:
        yield rt


def test_handler_installed_while_a_runtime_exists_and_user_handler_left_alone() -> None:
    """The protection is installed only over Python's default SIGINT handler,
    and removed when the last runtime is shut down."""
    gc.collect()  # runtimes of earlier tests, unreferenced but in cycles
    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with kcont.Runtime(ncpu=1):
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored at shutdown

        def mine(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGINT, mine)
        with kcont.Runtime(ncpu=1):
            assert signal.getsignal(signal.SIGINT) is mine
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("case", ["now", "timer", "rearm", "ack"])
def test_schedule_interrupted_at_any_line_completes_and_raises_once(sim: SimRuntime, case: str) -> None:
    kc = Continuation(kcont.wq_softnet, lambda arg, kc: None)
    schedule = reference(Continuation, "schedule")
    tested = 0
    for line in body_lines(schedule):
        kc.stop()
        kc.ack()
        if case == "rearm":
            kc.schedule(5)
        elif case == "ack":
            kc.schedule()
        call = {
            "now": lambda: schedule(kc),
            "timer": lambda: schedule(kc, 3),
            "rearm": lambda: schedule(kc, 7),
            "ack": lambda: schedule(kc, ack=True),
        }[case]
        reached, returned, caught = interrupted_at(schedule, line, call)
        check_consistent(sim, kc)
        if reached:
            tested += 1
            assert returned, f"line {line}: schedule was cut short"
            assert caught == 1, f"line {line}: the interrupt surfaced {caught} times"
            assert kc.queued if case in ("now", "ack") else kc.pending
    assert tested >= 10
    kc.stop()
    kc.ack()
    kc.schedule()
    assert sim.run_until_idle() == 1


@pytest.mark.parametrize("what", ["stop", "ack"])
def test_stop_and_ack_interrupted_at_any_line(sim: SimRuntime, what: str) -> None:
    kc = Continuation(kcont.wq_softnet, lambda arg, kc: None)
    method = reference(Continuation, what)
    tested = 0
    for line in body_lines(method):
        for armed in (0, 4):
            kc.stop()
            kc.ack()
            kc.schedule(armed)
            reached, returned, caught = interrupted_at(method, line, lambda: method(kc))
            check_consistent(sim, kc)
            if reached:
                tested += 1
                assert returned and caught == 1, f"line {line}"
                if what == "stop":
                    assert not kc.queued and not kc.pending
                else:
                    assert not kc.invoking
    assert tested >= 2


def test_the_worker_kick_interrupted_at_any_line_still_wakes_a_worker() -> None:
    """``schedule`` (the compiled one too) calls the threaded runtime's worker
    kick with the state lock held: an interrupt at any line of it is deferred
    until ``schedule`` has returned, so the work is queued *and* a worker is
    woken, and the interrupt surfaces once."""
    ran = threading.Event()
    rt = kcont.Runtime(ncpu=1)
    try:
        kc = rt.continuation(kcont.wq_softnet, lambda arg, kc: ran.set())
        kick = type(rt)._kick_worker_locked
        tested = 0
        for line in body_lines(kick):
            ran.clear()
            rt.wait_idle(timeout=5)  # every worker idle: the kick has one to wake
            reached, returned, caught = interrupted_at(kick, line, kc.schedule)
            if reached:
                tested += 1
                assert returned and caught == 1, f"line {line}"
                assert ran.wait(5), f"line {line}: the work was queued but no worker woke"
            else:
                kc.flush(timeout=5)
        assert tested >= 2
    finally:
        rt.shutdown()


def test_the_stop_helper_interrupted_between_two_writes(sim: SimRuntime) -> None:
    """An interrupt inside a helper the protected call runs (a frame of kcont's
    own, not marked) is deferred too: the dequeue and the flags change together."""
    kc = Continuation(kcont.wq_softnet, lambda arg, kc: None)
    for line in body_lines(Continuation._stop_locked):
        kc.stop()
        kc.schedule()
        reached, returned, caught = interrupted_at(Continuation._stop_locked, line, kc.stop)
        check_consistent(sim, kc)
        if reached:
            assert returned and caught == 1, f"line {line}"


@pytest.mark.parametrize("what", ["acquire", "release", "__enter__", "__exit__"])
def test_mutex_interrupted_at_any_line_is_held_with_its_owner_or_free(sim: SimRuntime, what: str) -> None:
    m = Mutex("m")
    method = getattr(Mutex, what)
    tested = 0
    for line in body_lines(method):
        if what in ("release", "__exit__"):
            m.acquire()
            call = m.release if what == "release" else (lambda: m.__exit__(None, None, None))
        else:
            call = m.acquire if what == "acquire" else m.__enter__
        reached, returned, caught = interrupted_at(method, line, call)
        if reached:
            tested += 1
            assert returned and caught == 1, f"line {line}"
        if what in ("release", "__exit__"):
            assert not m.locked(), f"line {line}: the Mutex was left locked"
        else:
            assert m.locked() and m.owned(), f"line {line}: the Mutex is locked without an owner"
            m.release()
    assert tested >= 1


def _signal_main_after(delay: float, main: int) -> threading.Thread:
    """Send SIGINT to the main thread ``delay`` seconds after it entered the
    library (left this file's code)."""

    def send() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            frame = sys._current_frames().get(main)
            if frame is not None and frame.f_code.co_filename != __file__:
                break
            time.sleep(0.001)
        time.sleep(delay)
        signal.pthread_kill(main, signal.SIGINT)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    return t


def test_ctrl_c_during_a_long_halt_surfaces_promptly_and_leaves_no_registration() -> None:
    release = threading.Event()
    ran = []

    def slow(arg: Any, kc: Continuation[Any]) -> None:
        ran.append(1)
        release.wait(10)

    with kcont.Runtime(ncpu=1) as rt:
        kc = rt.continuation(kcont.wq_prilow, slow)
        kc.schedule()
        while not kc.running:
            time.sleep(0.001)
        sender = _signal_main_after(0.1, threading.get_ident())
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            kc.halt()
        assert time.monotonic() - started < 1.0
        sender.join()
        check_consistent(rt, kc)
        assert not rt._halting and rt._ended_waiters == 0
        release.set()
        kc.flush(timeout=5)
        kc.schedule()
        kc.flush(timeout=5)
        assert len(ran) == 2
    assert rt._account().ran == 2


@pytest.mark.parametrize("wait", ["flush", "halt", "wait_idle"])
def test_ctrl_c_while_the_wait_takes_the_state_lock_back(wait: str) -> None:
    """The interrupt arrives while the waiting main thread blocks on taking the
    state lock back (another thread holds it): the wait holds the lock again,
    unregisters, and only then raises; the other thread's lock is never released."""
    release = threading.Event()

    def slow(arg: Any, kc: Continuation[Any]) -> None:
        release.wait(10)

    with kcont.Runtime(ncpu=1) as rt:
        kc = rt.continuation(kcont.wq_prilow, slow)
        kc.schedule()
        while not kc.running:
            time.sleep(0.001)
        main = threading.get_ident()
        errors: list[BaseException] = []

        def holder() -> None:
            try:
                while rt._ended_waiters == 0:  # the main thread is waiting, S released
                    time.sleep(0.001)
                with rt._lock:
                    rt._notify_ended_locked()  # wakes the main thread: it blocks on S
                    time.sleep(0.05)
                    signal.pthread_kill(main, signal.SIGINT)
                    time.sleep(0.1)
            except BaseException as exc:  # e.g. "release unlocked lock"
                errors.append(exc)

        t = threading.Thread(target=holder)
        t.start()
        with pytest.raises(KeyboardInterrupt):
            if wait == "flush":
                kc.flush(timeout=5)
            elif wait == "halt":
                kc.halt(timeout=5)
            else:
                rt.wait_idle(timeout=5)
        t.join(5)
        assert not errors
        check_consistent(rt, kc)
        assert not rt._halting and rt._ended_waiters == 0
        release.set()
        kc.flush(timeout=5)
    assert rt._account().unfinished == 0


def _hold_state_lock_and_signal(
    rt: Any, main: int, hold: float, where: Callable[..., Any]
) -> threading.Thread:
    """Take the state lock, then send SIGINT to the main thread once it blocks
    on that lock in ``where``, and release the lock ``hold`` seconds later.
    A compiled ``where`` has no frame to wait for: the main thread is given
    50 ms to reach the lock instead."""
    taken = threading.Event()
    code = getattr(where, "__code__", None)

    def holder() -> None:
        with rt._lock:
            taken.set()
            deadline = time.monotonic() + (5 if code is not None else 0.05)
            while time.monotonic() < deadline:
                frame = sys._current_frames().get(main)
                if frame is not None and frame.f_code is code:
                    break
                time.sleep(0.001)
            time.sleep(0.01)  # inside the lock's acquire by now
            signal.pthread_kill(main, signal.SIGINT)
            time.sleep(hold)

    t = threading.Thread(target=holder)
    t.start()
    taken.wait(5)
    return t


def test_ctrl_c_while_stop_waits_for_the_state_lock_lets_the_stop_finish_first(sim: SimRuntime) -> None:
    """Deferred without any tracer: the interrupt is raised at the caller's
    next line, stop's result assigned, the entry dequeued and the lock free."""
    assert sys.gettrace() is None or pytest.skip("a tracer (coverage, debugger) is active")
    kc = Continuation(kcont.wq_softnet, lambda arg, kc: None)
    kc.schedule()
    t = _hold_state_lock_and_signal(sim, threading.get_ident(), 0.1, Continuation.stop)
    result = None
    with pytest.raises(KeyboardInterrupt):
        result = kc.stop()
        time.sleep(2)  # never reached: the interrupt comes first
    assert result is False  # the stop prevented the invocation, and said so
    t.join(5)
    check_consistent(sim, kc)
    assert not kc.queued and sim.run_until_idle() == 0


def test_an_interrupt_deferred_before_a_long_wait_ends_the_wait() -> None:
    """Deferred while halt takes the state lock, the interrupt is raised as
    soon as halt starts sleeping, not when the function finally returns."""
    release = threading.Event()

    def slow(arg: Any, kc: Continuation[Any]) -> None:
        release.wait(10)

    with kcont.Runtime(ncpu=1) as rt:
        kc = rt.continuation(kcont.wq_prilow, slow)
        kc.schedule()
        while not kc.running:
            time.sleep(0.001)
        started = time.monotonic()
        t = _hold_state_lock_and_signal(rt, threading.get_ident(), 0.1, Continuation.halt)
        with pytest.raises(KeyboardInterrupt):
            kc.halt()
        assert time.monotonic() - started < 2.0 and kc.running
        t.join(5)
        check_consistent(rt, kc)
        assert not rt._halting and rt._ended_waiters == 0
        release.set()
        kc.flush(timeout=5)


def test_ctrl_c_deferred_while_with_mutex_takes_it_comes_inside_the_block() -> None:
    """Deferred inside ``Mutex.__enter__`` (blocked on the Mutex's internal
    lock), the interrupt is raised inside the ``with`` block, whose exit
    releases the Mutex; never between taking it and entering the block."""
    assert sys.gettrace() is None or pytest.skip("a tracer (coverage, debugger) is active")
    m = Mutex("m")
    main = threading.get_ident()
    ready = threading.Event()

    def holder() -> None:
        m.acquire()
        with m._wlock:
            ready.set()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # until the main thread waits for _wlock
                frame = sys._current_frames().get(main)
                if frame is not None and frame.f_code is Mutex._try_acquire_or_wait.__code__:
                    break
                time.sleep(0.001)
            time.sleep(0.01)
            signal.pthread_kill(main, signal.SIGINT)
            time.sleep(0.05)
            m._owner = None  # released by hand: release() would take _wlock again
            m._lock.release()

    with kcont.Runtime(ncpu=1):
        t = threading.Thread(target=holder)
        t.start()
        ready.wait(5)
        inside = []
        with pytest.raises(KeyboardInterrupt), m:
            inside.append(m.owned())
            time.sleep(2)
        t.join(5)
        assert not m.locked(), "the Mutex was left locked"


def test_ctrl_c_during_a_contended_mutex_wait_leaves_it_to_its_holder() -> None:
    m = Mutex("m")
    taken = threading.Event()
    done = threading.Event()

    def holder() -> None:
        with m:
            taken.set()
            done.wait(5)

    with kcont.Runtime(ncpu=1):
        t = threading.Thread(target=holder)
        t.start()
        taken.wait(5)
        _signal_main_after(0.1, threading.get_ident())
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            m.acquire()
        assert time.monotonic() - started < 1.0
        assert m.locked() and not m.owned()
        done.set()
        t.join(5)
        assert m.acquire(timeout=1)
        m.release()


def test_an_interrupt_in_a_simulated_function_surfaces_at_once(sim: SimRuntime) -> None:
    """The simulator runs functions on the main thread: an interrupt there is
    raised inside the function, as without kcont, and the runtime goes on."""
    after = []

    def func(arg: Any, kc: Continuation[Any]) -> None:
        signal.raise_signal(signal.SIGINT)
        after.append(1)  # never reached

    kc = Continuation(kcont.wq_softnet, func)
    kc.schedule()
    with pytest.raises(KeyboardInterrupt):
        sim.run_until_idle()
    assert after == []
    check_consistent(sim, kc)
    assert not (kc.queued or kc.running or kc.invoking)
    assert sim.stats()["totals"]["exceptions"] == 1


# -- whole programs ------------------------------------------------------------------

_LOOP = textwrap.dedent(
    """
    import sys
    import kcont

    counted = [0]

    def func(arg, kc):
        counted[0] += 1  # one continuation: its invocations never overlap

    with kcont.Runtime(ncpu=2) as rt:
        kc = rt.continuation(kcont.wq_softnet, func)
        print("ready", flush=True)
        try:
            while True:
                try:
                    kc.schedule()
                except kcont.BusyError:
                    pass
                kc.stop()
        except KeyboardInterrupt:
            if sys.argv[1] == "raise":
                raise
        # Caught: the runtime still works, and its ledger is exact.
        for _ in range(100):
            try:
                kc.schedule()
            except kcont.BusyError:
                pass
        rt.wait_idle(timeout=5)
        totals = rt.stats()["totals"]
        assert totals["scheduled"] == totals["invoked"] + totals["stopped"], totals
        assert totals["invoked"] == counted[0], (totals, counted)
        assert all(w["soft"] == 1 and w["thread"] >= 1 for w in rt.stats()["workers"])
    print("ok", flush=True)
    """
)


def run_loop_and_interrupt(
    mode: str, rng: random.Random, limit: float
) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOOP, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    time.sleep(rng.uniform(0.0, 0.05))
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return float("inf"), subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return time.monotonic() - sent, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


RUNS = int(os.environ.get("KCONT_SIGINT_RUNS", "6"))


@pytest.mark.timeout(120)
def test_a_program_looping_on_schedule_exits_after_one_ctrl_c() -> None:
    """With Python's default handling: the KeyboardInterrupt ends the program
    (through the runtime's shutdown) within a second, every time.
    ``KCONT_SIGINT_RUNS`` sets the number of runs."""
    rng = random.Random(1)
    for run in range(RUNS):
        elapsed, done = run_loop_and_interrupt("raise", rng, 5.0)
        assert elapsed < 2.0, f"run {run}: still running {elapsed:.2f} s after Ctrl-C\n{done.stderr}"
        assert done.returncode == -signal.SIGINT, done.stderr
        assert "KeyboardInterrupt" in done.stderr


@pytest.mark.timeout(120)
def test_a_program_that_catches_ctrl_c_finds_the_runtime_working() -> None:
    rng = random.Random(2)
    for run in range(RUNS):
        elapsed, done = run_loop_and_interrupt("catch", rng, 5.0)
        assert elapsed < 5.0, f"run {run}: hung after Ctrl-C\n{done.stderr}"
        assert done.returncode == 0 and done.stdout.endswith("ok\n"), done.stderr


# -- the stress mode -----------------------------------------------------------------

STRESS_SECONDS = float(os.environ.get("KCONT_STRESS_SECONDS", "5"))


@pytest.mark.stress
@pytest.mark.timeout(STRESS_SECONDS + 120)
def test_sigint_stress_leaves_nothing_half_done() -> None:
    """SIGINT at random instants while the main thread uses the runtime: the
    ledger is exact, every worker alive, no lock left taken, shutdown prompt."""
    from kcont.stress.sigint import run_sigint

    result = run_sigint(STRESS_SECONDS, seed=20261201)
    print(result.summary())
    assert result.ok, result.summary()
    assert result.caught >= 10 and result.invoked > 0


@pytest.mark.timeout(120)
def test_sigint_stress_command() -> None:
    import json

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run(
        [sys.executable, "-m", "kcont", "stress", "--sigint", "--duration", "1", "--quiet", "--json", "-"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["schema"] == "kcont.stress.sigint/1" and doc["ok"] and doc["interrupts_caught"] > 0


def test_an_interrupt_deferred_in_the_main_thread_never_surfaces_in_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker (or any other thread) that starts to wait while the main
    thread has an interrupt deferred waits normally: the interrupt is the main
    thread's."""
    from kcont._core import ki

    monkeypatch.setattr(ki._state, "deferred", True)
    outcome: list[object] = []

    def other() -> None:
        try:
            outcome.append(ki.block(ki.new_token(), 0.01))
        except BaseException as exc:
            outcome.append(type(exc))

    t = threading.Thread(target=other)
    t.start()
    t.join(5)
    assert outcome == [False]

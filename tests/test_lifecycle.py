"""What happens to what nobody shut down or destroyed.

* A threaded runtime that nobody references any more, or that is still
  running at interpreter exit, warns with a ``ResourceWarning`` (as an
  unclosed file does) and its threads end; at exit, every such runtime is
  shut down at once, not one after another.
* A continuation collected without ``destroy()`` no longer keeps its queue
  bound: the queue can be released.
"""

from __future__ import annotations

import errno
import gc
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from typing import Any

import pytest

import kcont


def _threads_of(name: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"kcont/{name}/")]


def _busy_then_quiet(rt: kcont.Runtime) -> None:
    """Wake every kind of thread once: soft and thread workers, the timer."""
    ran: list[int] = []
    for i, wq in enumerate((kcont.wq_softnet, kcont.wq_prilow)):
        rt.continuation(wq, lambda arg, kc: ran.append(arg), i).schedule()
    rt.continuation(kcont.wq_softclock, lambda arg, kc: ran.append(arg), 2).schedule(1)
    deadline = time.monotonic() + 10
    while len(ran) < 3 and time.monotonic() < deadline:
        time.sleep(0.002)
    assert sorted(ran) == [0, 1, 2]
    rt.wait_idle(timeout=10)


def _collect_until(done: Any, seconds: float = 10.0) -> bool:
    """gc.collect() until ``done()`` (a thread that just went to sleep may
    still hold its runtime for an instant)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        gc.collect()
        if done():
            return True
        time.sleep(0.01)
    return bool(done())


@pytest.mark.threaded
@pytest.mark.timeout(60)
def test_a_dropped_runtime_warns_and_its_threads_end() -> None:
    rt = kcont.Runtime(ncpu=2, hz=100)
    name = rt.name
    _busy_then_quiet(rt)
    assert len(_threads_of(name)) == 5  # 2 soft, 2 thread workers, the timer
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del rt
        assert _collect_until(lambda: any(name in str(w.message) for w in caught)), "no ResourceWarning"
    (warning,) = [w for w in caught if name in str(w.message)]
    assert warning.category is ResourceWarning
    assert str(warning.message) == f"kcont.Runtime {name} was never shut down"
    deadline = time.monotonic() + 10
    while _threads_of(name) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _threads_of(name) == [], "the threads of a collected runtime still run"


@pytest.mark.threaded
@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_threads_end_even_if_the_warning_is_an_error() -> None:
    """With ResourceWarning made an error, the finalizer's warning raises
    (reported as unraisable, as for an unclosed file): the threads end all
    the same."""
    rt = kcont.Runtime(ncpu=1, hz=100)
    name = rt.name
    _busy_then_quiet(rt)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        del rt
        assert _collect_until(lambda: not _threads_of(name)), "the threads of a collected runtime still run"


@pytest.mark.threaded
@pytest.mark.timeout(60)
def test_a_runtime_shut_down_and_dropped_does_not_warn() -> None:
    rt = kcont.Runtime(ncpu=1, hz=100)
    name = rt.name
    _busy_then_quiet(rt)
    rt.shutdown(wait=False)  # the threads end by themselves
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del rt
        assert _collect_until(lambda: not _threads_of(name))
    assert not [w for w in caught if name in str(w.message)]


@pytest.mark.threaded
@pytest.mark.timeout(60)
def test_a_runtime_still_referenced_keeps_running() -> None:
    """Referenced only by a continuation, or only as the current runtime,
    a runtime is not collected: its work still runs."""
    ran: list[str] = []
    kc = kcont.Runtime(ncpu=1, hz=100).continuation(kcont.wq_softnet, lambda arg, kc: ran.append(arg), "kc")
    current = kcont.Runtime(ncpu=1, hz=100)
    current.__enter__()
    current_name = current.name
    del current
    try:
        gc.collect()
        time.sleep(0.05)
        gc.collect()
        kc.schedule()
        kcont.Continuation(kcont.wq_prilow, lambda arg, kc: ran.append(arg), "current").schedule()
        deadline = time.monotonic() + 10
        while len(ran) < 2 and time.monotonic() < deadline:
            time.sleep(0.002)
        assert sorted(ran) == ["current", "kc"]
    finally:
        rt = kcont.current_runtime()
        assert rt.name == current_name
        rt.__exit__(None, None, None)
        kc.runtime.shutdown(timeout=10)


_EXIT_SCRIPT = textwrap.dedent(
    """
    import threading, time, kcont
    started = threading.Barrier({n} + 2)
    def stuck(arg, kc):
        started.wait()
        time.sleep(60)                       # never returns before exit
    def finishing(arg, kc):
        started.wait()
        time.sleep(0.3)                      # the exit lets it finish
        print("finished", flush=True)
    runtimes = [kcont.Runtime(ncpu=1, hz=100) for _ in range({n})]
    for rt in runtimes:
        rt.continuation(kcont.wq_prilow, stuck).schedule()
        rt.continuation(kcont.wq_softclock, stuck).schedule(10_000)   # pending: stopped at exit
    runtimes[0].continuation(kcont.wq_softnet, finishing).schedule()
    started.wait(timeout=20)
    print("exiting", flush=True)
    """
)


@pytest.mark.threaded
@pytest.mark.timeout(60)
@pytest.mark.parametrize("action", ["always", "error"])
def test_runtimes_left_running_at_exit_warn_and_shut_down_together(action: str) -> None:
    """Each warns once; the exit waits about one second for all of them
    together (a function that never returns is left behind), not about a
    second and a half for each in turn; a function about to return is let
    finish.  A warning made an error stops neither the shutdown nor the exit."""
    n = 6
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-W", f"{action}::ResourceWarning", "-c", _EXIT_SCRIPT.format(n=n)],
        capture_output=True,
        text=True,
        timeout=50,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "exiting\nfinished\n", proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "ResourceWarning: kcont.Runtime" in line]
    assert len(warned) == (n if action == "always" else 1), proc.stderr
    assert all(line.endswith("was never shut down") for line in warned)
    assert elapsed < 6.0, f"exit took {elapsed:.1f} s for {n} runtimes"


# -- continuations collected without destroy() ---------------------------------------


@pytest.mark.parametrize("kind", ["sim", "threaded"])
@pytest.mark.timeout(60)
def test_a_collected_continuation_no_longer_keeps_its_queue_bound(kind: str) -> None:
    rt: Any = kcont.SimRuntime(ncpu=2) if kind == "sim" else kcont.Runtime(ncpu=2, hz=100)
    try:
        with rt:
            wq = kcont.kcont_workqueue_acquire(10, kcont.WQ_PERCPU)
            kept = kcont.kcont_create(wq, None, lambda arg, kc: None, None)
            for _ in range(3):
                kcont.kcont_create(wq, None, lambda arg, kc: None, None)  # dropped at once
            ran = kcont.Continuation(wq, lambda arg, kc: None)
            ran.schedule()
            if kind == "sim":
                rt.run_until_idle()
            else:
                rt.wait_idle(timeout=10)
            del ran  # ran once, then idle and dropped
            gc.collect()
            assert rt.stats()["queues"][wq.name]["bound"] == 1
            assert kcont.kcont_workqueue_release(wq) == errno.EBUSY  # `kept` is still bound
            kcont.kcont_destroy(kept)
            del kept  # destroyed, then collected: not unbound twice
            gc.collect()
            assert kcont.kcont_workqueue_release(wq) == 0
            assert wq.freed
    finally:
        rt.shutdown()


@pytest.mark.timeout(60)
def test_a_continuation_in_a_cycle_is_unbound_when_the_cycle_is_collected(rt: kcont.SimRuntime) -> None:
    wq = rt.workqueue(10)
    holder: dict[str, Any] = {}
    holder["kc"] = kcont.Continuation(wq, lambda arg, kc: None, holder)  # kc -> arg -> kc
    del holder
    gc.collect()
    wq.release()
    assert wq.freed


@pytest.mark.timeout(60)
def test_a_refused_continuation_does_not_unbind_its_queue(rt: kcont.SimRuntime) -> None:
    """A Continuation() that raised was never bound: its collection changes
    no count."""
    wq = rt.workqueue(10)
    kc = kcont.Continuation(wq, lambda arg, kc: None)
    with pytest.raises(TypeError):
        kcont.Continuation(wq, lambda arg, kc: None, lock=threading.Lock())  # type: ignore[arg-type]
    other = rt.workqueue(11)
    other.release()  # freed
    with pytest.raises(kcont.WorkqueueReleasedError):
        kcont.Continuation(other, lambda arg, kc: None)
    gc.collect()
    assert rt.stats()["queues"][wq.name]["bound"] == 1
    with pytest.raises(kcont.BusyError):
        wq.release()
    kc.destroy()
    wq.release()


@pytest.mark.timeout(60)
def test_many_collected_continuations_leave_no_trace(rt: kcont.SimRuntime) -> None:
    """Continuations created and dropped in a loop: the bookkeeping of their
    collection stays small (it is settled whenever one is created)."""
    wq = rt.predefined("wq_softnet")
    for _ in range(10_000):
        kcont.Continuation(wq, lambda arg, kc: None)
    assert len(rt._collected) <= 1
    assert rt.stats()["queues"]["wq_softnet"]["bound"] == 0


def test_the_registry_of_mutexes_stays_small() -> None:
    """Every Mutex is listed (weakly) for os.fork(); dead ones are pruned."""
    from kcont._core import mutex

    for _ in range(20_000):
        kcont.Mutex()
    kept = kcont.Mutex()
    assert len(mutex._mutexes) <= 2 * mutex._PRUNE_MIN
    assert any(ref() is kept for ref in mutex._mutexes)


@pytest.mark.threaded
@pytest.mark.timeout(60)
def test_the_finalizer_never_waits_for_the_state_lock() -> None:
    """Garbage collection may run a runtime's finalizer in a thread that holds
    that runtime's state lock: it returns at once all the same."""
    from kcont import threaded

    rt = kcont.Runtime(ncpu=1, hz=100)
    _busy_then_quiet(rt)
    threads = rt._threads
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = time.monotonic()
        with threads.lock:
            threaded._collected(threads)  # as if rt had just been collected here
        assert time.monotonic() - started < 5
    assert any("was never shut down" in str(w.message) for w in caught)
    _busy_then_quiet(rt)  # (in fact alive: nothing was disturbed)
    rt.shutdown(timeout=10)


@pytest.mark.threaded
@pytest.mark.timeout(60)
def test_when_the_finalizer_finds_the_lock_busy_the_timer_thread_wakes_the_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once a runtime is unreachable, only its timer thread can hold its state
    lock (between two passes), so a finalizer that found the lock busy left
    the workers asleep: the timer thread, finding the runtime gone, wakes
    them, and every thread ends."""
    from kcont import threaded

    monkeypatch.setattr(threaded, "_collected", lambda threads: None)  # the lock was busy
    rt = kcont.Runtime(ncpu=2, hz=100)
    name = rt.name
    _busy_then_quiet(rt)
    threads = rt._threads
    ref = rt._ref
    del rt
    assert _collect_until(lambda: ref() is None)
    assert len(_threads_of(name)) == 5  # all asleep: nobody woke them
    with threads.lock:
        threads.wake_timer_locked()  # as the timer thread would be, awake between two passes
    deadline = time.monotonic() + 10
    while _threads_of(name) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _threads_of(name) == []


def test_continuations_alive_at_interpreter_exit_are_collected_quietly() -> None:
    """Continuations (and their runtimes) still referenced by module globals
    when the interpreter exits print nothing."""
    script = textwrap.dedent(
        """
        import kcont
        sim = kcont.SimRuntime()
        rt = kcont.Runtime(ncpu=1, hz=100)
        kcs = [r.continuation(r.workqueue(10), lambda arg, kc: None) for r in (sim, rt) for _ in range(3)]
        holder = {"kc": sim.continuation(kcont.wq_softnet, lambda arg, kc: None)}
        holder["kc"].arg = holder                    # a cycle
        rt.shutdown()
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr

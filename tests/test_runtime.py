"""The threaded runtime on real threads: accounting, ordering, timers,
priorities, halt, exceptions, shutdown.  Every test bounds its time and its
loops, and asserts exact accounting rather than timings."""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from collections import defaultdict
from typing import Any

import pytest

import kcont
from kcont import Continuation, Mutex, Runtime

pytestmark = pytest.mark.threaded


@pytest.fixture
def trt() -> Any:
    runtime = Runtime(ncpu=2, hz=1000, name="t")
    errors: list[BaseException] = []
    runtime.exception_handler = lambda kc, exc: errors.append(exc)
    with runtime:
        yield runtime
    assert not errors, errors


def kcont_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("kcont/")]


def test_workers_are_named_after_runtime_cpu_and_band(trt: Runtime) -> None:
    names = {t.name for t in kcont_threads() if t.name.startswith("kcont/t/")}
    assert {
        "kcont/t/0/soft",
        "kcont/t/0/thread0",
        "kcont/t/1/soft",
        "kcont/t/1/thread0",
        "kcont/t/timer",
    } <= names


def test_no_continuation_lost_or_run_twice_with_several_producers(trt: Runtime) -> None:
    """4 producers schedule 4 x 300 continuations (each several times, retrying
    on EBUSY); every successful schedule runs exactly once."""
    runs: dict[int, int] = defaultdict(int)
    runs_lock = threading.Lock()
    running: set[int] = set()
    overlap: list[int] = []

    def work(key: int, kc: Continuation[int]) -> None:
        with runs_lock:
            if key in running:
                overlap.append(key)
            running.add(key)
            runs[key] += 1
        with runs_lock:
            running.discard(key)

    kcs = [Continuation(kcont.wq_softnet if i % 2 else kcont.wq_prihigh, work, i) for i in range(1200)]
    accepted = [0] * 4

    def producer(p: int) -> None:
        for round_ in range(3):
            for i in range(p, len(kcs), 4):
                while True:
                    try:
                        kcs[i].schedule(cpu=trt.cpus[(i + round_) % 2])
                        accepted[p] += 1
                        break
                    except kcont.BusyError:
                        time.sleep(0)

    threads = [threading.Thread(target=producer, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    trt.wait_idle(timeout=20)
    assert sum(accepted) == 3600
    assert sum(runs.values()) == 3600
    assert all(count == 3 for count in runs.values())
    assert not overlap
    totals = trt.stats()["totals"]
    assert totals["invoked"] == 3600
    assert totals["scheduled"] == 3600


def test_order_per_wq_lock_cpu_kept_under_concurrency(trt: Runtime) -> None:
    """Continuations sharing {wq, lock, ci} start in schedule order, while
    other threads hold and release the lock concurrently."""
    lock = Mutex("ordered")
    started: list[int] = []
    kcs = [Continuation(kcont.wq_softnet, lambda i, kc: started.append(i), i, lock=lock) for i in range(400)]
    stop = threading.Event()

    def contender() -> None:
        while not stop.is_set():
            with lock:
                time.sleep(0.0002)
            time.sleep(0.0002)

    holder = threading.Thread(target=contender)
    holder.start()
    try:
        for kc in kcs:
            kc.schedule(cpu=trt.cpus[1])
        trt.wait_idle(timeout=20)
    finally:
        stop.set()
        holder.join(5)
    assert started == list(range(400))
    assert trt.stats()["queues"]["wq_softnet"]["lock_waits"] >= 0


def test_timers_never_fire_early(trt: Runtime) -> None:
    """A timer armed for n ticks runs no earlier than the start of its tick."""
    fired: dict[int, tuple[int, int]] = {}
    done = threading.Event()
    count = 60

    def on_timer(i: int, kc: Continuation[int]) -> None:
        fired[i] = (trt.ticks, time.monotonic_ns())
        if len(fired) == count:
            done.set()

    armed = {}
    for i in range(count):
        kc = Continuation(kcont.wq_softclock, on_timer, i)
        before = trt.ticks
        kc.schedule(nticks=1 + i % 20)
        armed[i] = (kc, before)
    assert done.wait(10)
    for i, (_kc, before) in armed.items():
        tick_at_fire, _ = fired[i]
        # The deadline is at least before + n; the function sees a tick >= it.
        assert tick_at_fire >= before + 1 + i % 20
    assert trt.stats()["totals"]["late"] <= count


def test_rearming_keeps_pushing_the_deadline(trt: Runtime) -> None:
    """A timer re-armed before it expires (the protocol-timer pattern) fires
    once, after the last re-arm's deadline."""
    fired: list[int] = []
    kc = Continuation(kcont.wq_softclock, lambda a, kc: fired.append(trt.ticks), None)
    last = 0
    # 250 ms of slack per re-arm: the loop's 2 ms pauses may stretch a lot on
    # a loaded machine without letting the timer expire in between.
    for _ in range(20):
        last = trt.ticks
        kc.schedule(nticks=250)
        time.sleep(0.002)
    trt.wait_ticks(500, timeout=5)
    trt.wait_idle(timeout=5)
    assert len(fired) == 1
    assert fired[0] >= last + 250


def test_sleeping_thread_level_work_does_not_hold_back_softnet(trt: Runtime) -> None:
    """While wq_prilow continuations sleep on CPU 0, softnet work on CPU 0 runs."""
    release = threading.Event()
    started = threading.Event()

    def sleeper(arg: None, kc: Continuation[None]) -> None:
        started.set()
        release.wait(5)

    sleepers = [Continuation(kcont.wq_prilow, sleeper, None) for _ in range(3)]
    for kc in sleepers:
        kc.schedule(cpu=trt.cpus[0])
    assert started.wait(5)
    done = threading.Event()
    net = Continuation(kcont.wq_softnet, lambda a, kc: done.set(), None)
    net.schedule(cpu=trt.cpus[0])
    try:
        assert done.wait(2), "softnet waited behind sleeping thread-level work"
    finally:
        release.set()
    trt.wait_idle(timeout=10)


def test_blocked_thread_worker_gets_a_helper(trt: Runtime) -> None:
    """A thread-level continuation that blocks does not stop other
    thread-level continuations of its CPU for ever: another worker starts."""
    release = threading.Event()
    blocked = Continuation(kcont.wq_prilow, lambda a, kc: release.wait(5), None)
    blocked.schedule(cpu=trt.cpus[0])
    time.sleep(0.01)
    done = threading.Event()
    other = Continuation(kcont.wq_prilow, lambda a, kc: done.set(), None)
    other.schedule(cpu=trt.cpus[0])
    try:
        assert done.wait(3)
    finally:
        release.set()
    trt.wait_idle(timeout=10)
    assert trt.stats()["extra_workers_started"] >= 1


def test_halt_really_waits_for_a_running_function(trt: Runtime) -> None:
    entered = threading.Event()
    finished = threading.Event()

    def slow(arg: None, kc: Continuation[None]) -> None:
        entered.set()
        time.sleep(0.05)
        finished.set()

    kc = Continuation(kcont.wq_prihigh, slow, None)
    kc.schedule()
    assert entered.wait(5)
    assert kc.halt() is True  # the invocation could not be prevented
    assert finished.is_set()
    assert not kc.running


def test_halt_releases_and_retakes_the_interlock(trt: Runtime) -> None:
    interlock = Mutex("interlock")
    entered = threading.Event()
    took_interlock = threading.Event()

    def func(arg: None, kc: Continuation[None]) -> None:
        entered.set()
        with interlock:  # would deadlock if halt kept the interlock
            took_interlock.set()

    kc = Continuation(kcont.wq_prihigh, func, None)
    with interlock:
        kc.schedule()
        assert entered.wait(5)
        kc.halt(interlock)
        assert interlock.owned()
    assert took_interlock.is_set()


def test_halt_with_timeout_reports_a_function_that_does_not_return(trt: Runtime) -> None:
    release = threading.Event()
    entered = threading.Event()

    def stuck(arg: None, kc: Continuation[None]) -> None:
        entered.set()
        release.wait(5)

    kc = Continuation(kcont.wq_prilow, stuck, None)
    kc.schedule()
    assert entered.wait(5)
    with pytest.raises(kcont.HaltTimeoutError):
        kc.halt(timeout=0.05)
    release.set()
    kc.halt(timeout=5)


def test_self_halt_and_self_destroy_return_at_once(trt: Runtime) -> None:
    results: list[Any] = []
    done = threading.Event()

    def func(arg: None, kc: Continuation[None]) -> None:
        results.append(kc.halt())
        kc.destroy()
        results.append(kc.destroyed)
        done.set()

    kc = Continuation(kcont.wq_softnet, func, None)
    kc.schedule()
    assert done.wait(5)
    trt.wait_idle(timeout=5)
    assert results == [True, True]
    with pytest.raises(kcont.DestroyedError):
        kc.schedule()


def test_stop_with_lock_held_prevents_the_start(trt: Runtime) -> None:
    """FreeBSD callout_init_mtx: with the lock held, stop() prevents a queued
    invocation, repeatedly, under real concurrency."""
    lock = Mutex()
    ran: list[int] = []
    for i in range(200):
        kc = Continuation(kcont.wq_softnet, lambda a, kc: ran.append(a), i, lock=lock)
        with lock:
            kc.schedule(cpu=trt.cpus[i % 2])
            time.sleep(0) if i % 7 == 0 else None
            assert kc.stop() is False
        kc.destroy()
    trt.wait_idle(timeout=5)
    assert ran == []


def test_exceptions_are_contained_counted_and_reported() -> None:
    seen: list[tuple[str, str]] = []
    with Runtime(ncpu=2, hz=1000) as rt:
        rt.exception_handler = lambda kc, exc: seen.append((kc.name or "", str(exc)))
        ok = threading.Event()

        def boom(arg: int, kc: Continuation[int]) -> None:
            raise ValueError(f"boom {arg}")

        kcs = [Continuation(kcont.wq_softnet, boom, i, name=f"k{i}") for i in range(10)]
        for kc in kcs:
            kc.schedule()
        Continuation(kcont.wq_softnet, lambda a, kc: ok.set(), None).schedule()
        assert ok.wait(5)
        rt.wait_idle(timeout=5)
        assert rt.stats()["totals"]["exceptions"] == 10
        # Still schedulable after raising.
        kcs[0].schedule()
        rt.wait_idle(timeout=5)
    assert len(seen) == 11
    assert ("k3", "boom 3") in seen


def test_default_exception_handler_logs_with_traceback(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="kcont"), Runtime(ncpu=1) as rt:
        kc = Continuation(kcont.wq_softnet, lambda a, kc: 1 / 0, None, name="divider")
        kc.schedule()
        rt.wait_idle(timeout=5)
    records = [r for r in caplog.records if r.name == "kcont"]
    assert records and "divider" in records[0].getMessage()
    assert records[0].exc_info is not None


@pytest.mark.timeout(30)
def test_a_handler_that_raises_a_base_exception_does_not_kill_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A handler re-raising a function's KeyboardInterrupt is logged like any
    failing handler; the worker that called it keeps running later work."""

    def handler(kc: Continuation[Any], exc: BaseException) -> None:
        raise exc

    def interrupt(arg: object, kc: Continuation[Any]) -> None:
        raise KeyboardInterrupt("from func")

    ran: list[int] = []
    with caplog.at_level(logging.ERROR, logger="kcont"), Runtime(ncpu=1) as rt:
        rt.exception_handler = handler
        Continuation(kcont.wq_softnet, interrupt).schedule()
        rt.wait_idle(timeout=5)
        later = Continuation(kcont.wq_softnet, lambda a, kc: ran.append(1))
        later.schedule()
        rt.wait_idle(timeout=5)
        assert ran == [1] and rt.stats()["workers"][0]["soft"] == 1
    assert any("exception handler" in r.getMessage() for r in caplog.records)
    assert not any("died" in r.getMessage() for r in caplog.records)


def test_context_of_the_scheduler_is_the_context_of_the_function(trt: Runtime) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []
    kc = Continuation(kcont.wq_softnet, lambda a, kc: seen.append(var.get()), None)

    def producer(value: str) -> None:
        var.set(value)
        while True:
            try:
                kc.schedule()
                return
            except kcont.BusyError:
                time.sleep(0.001)

    for value in ("a", "b"):
        t = threading.Thread(target=producer, args=(value,))
        t.start()
        t.join(5)
        trt.wait_idle(timeout=5)
    assert seen == ["a", "b"]


def test_cpu_of_a_foreign_thread_is_its_bound_cpu_or_cpu0(trt: Runtime) -> None:
    where: list[int] = []
    kc = Continuation(kcont.wq_softnet, lambda a, kc: where.append(kcont.curcpu().index), None)

    def rx_thread() -> None:
        with kcont.bind_cpu(trt.cpus[1]):
            kc.schedule()

    kc.schedule()
    trt.wait_idle(timeout=5)
    t = threading.Thread(target=rx_thread)
    t.start()
    t.join(5)
    trt.wait_idle(timeout=5)
    assert where == [0, 1]


def test_schedule_from_a_worker_targets_its_cpu(trt: Runtime) -> None:
    where: list[int] = []
    follow = Continuation(kcont.wq_softbio, lambda a, kc: where.append(kcont.curcpu().index), None)
    first = Continuation(kcont.wq_softnet, lambda a, kc: follow.schedule(), None)
    first.schedule(cpu=trt.cpus[1])
    trt.wait_idle(timeout=5)
    assert where == [1]


def test_shared_queue_is_served_by_any_free_cpu() -> None:
    # No extra worker may start (it would be a second free worker on CPU 0),
    # however slowly CPU 1's worker wakes on a loaded machine.
    with Runtime(ncpu=2, hz=1000, stall_threshold=30.0) as trt:
        wq = trt.workqueue(kcont.PRI_MEDHIGH)  # shared
        cpus: set[int] = set()
        barrier = threading.Barrier(2, timeout=10)

        def func(arg: None, kc: Continuation[None]) -> None:
            cpus.add(kcont.curcpu().index)
            barrier.wait()  # both must run at once: two CPUs serve the queue

        kcs = [Continuation(wq, func, None) for _ in range(2)]
        for kc in kcs:
            kc.schedule()
        trt.wait_idle(timeout=20)
        assert cpus == {0, 1}
        for kc in kcs:
            kc.destroy()
        wq.release()


def test_shutdown_accounts_for_everything_and_leaves_no_thread() -> None:
    before = {t.ident for t in threading.enumerate()}
    rt = Runtime(ncpu=2, hz=1000)
    gate = threading.Event()
    ran = []
    with rt:
        blocker = Continuation(kcont.wq_prilow, lambda a, kc: gate.wait(5), None)
        blocker.schedule(cpu=rt.cpus[0])
        queued = [Continuation(kcont.wq_primedlow, lambda a, kc: ran.append(a), i) for i in range(5)]
        for kc in queued:
            kc.schedule(cpu=rt.cpus[0])
        timers = [Continuation(kcont.wq_softclock, lambda a, kc: ran.append(a), None) for _ in range(7)]
        for kc in timers:
            kc.schedule(nticks=100_000)
        threading.Timer(0.05, gate.set).start()
        account = rt.shutdown()
    assert account.pending == 7
    assert account.cancelled == 0
    assert account.ran == 6
    assert account.failed == 0
    assert account.unfinished == 0
    assert sorted(ran) == list(range(5))
    assert all(not kc.pending for kc in timers)
    time.sleep(0.01)
    left = [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("kcont/")]
    assert not left


def test_shutdown_cancel_cancels_what_has_not_started() -> None:
    rt = Runtime(ncpu=1, hz=1000)
    gate = threading.Event()
    entered = threading.Event()

    def blocker(arg: None, kc: Continuation[None]) -> None:
        entered.set()
        gate.wait(5)

    with rt:
        Continuation(kcont.wq_prilow, blocker, None).schedule()
        assert entered.wait(5)
        later = [Continuation(kcont.wq_prilow, lambda a, kc: None, None) for _ in range(4)]
        for kc in later:
            kc.schedule()
        threading.Timer(0.05, gate.set).start()
    # leaving the block waited; now check with an explicit second call
    account = rt.shutdown()
    assert account.ran >= 1
    assert account.ran + account.cancelled == 5


def test_schedule_after_shutdown_is_a_clear_error() -> None:
    rt = Runtime(ncpu=1)
    with rt:
        kc = Continuation(kcont.wq_softnet, lambda a, kc: None, None)
    with pytest.raises(kcont.ShutdownError, match="shut down"):
        kc.schedule()
    with pytest.raises(kcont.ShutdownError):
        kcont.kcont_schedule(kc, None, 0)


def test_shutdown_from_inside_a_continuation_does_not_deadlock() -> None:
    rt = Runtime(ncpu=2, hz=1000)
    accounts: list[kcont.ShutdownAccount] = []
    done = threading.Event()

    def quit_(arg: None, kc: Continuation[None]) -> None:
        accounts.append(rt.shutdown())
        done.set()

    with rt:
        Continuation(kcont.wq_softnet, quit_, None).schedule()
        assert done.wait(5)
    assert accounts and accounts[0].unfinished >= 1  # itself
    final = rt.shutdown()
    assert final.unfinished == 0
    assert final.ran == 1


def test_a_stuck_function_is_reported_by_shutdown_timeout() -> None:
    rt = Runtime(ncpu=1, hz=1000)
    release = threading.Event()
    entered = threading.Event()

    def stuck(arg: None, kc: Continuation[None]) -> None:
        entered.set()
        release.wait(10)

    rt.__enter__()
    try:
        Continuation(kcont.wq_prilow, stuck, None).schedule()
        assert entered.wait(5)
        account = rt.shutdown(timeout=0.1)
        assert account.unfinished == 1
    finally:
        release.set()
        rt.__exit__(None, None, None)


def test_tickless_timer_thread_sleeps_when_nothing_is_due(trt: Runtime) -> None:
    """With no timer armed, the timer thread does not wake up every tick."""
    time.sleep(0.05)
    before = trt.stats()["timer_wakeups"]
    time.sleep(0.1)  # 100 ticks at hz=1000
    assert trt.stats()["timer_wakeups"] - before <= 2


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_pinned_workers_run_on_their_os_cpu() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    seen: list[set[int]] = []
    with Runtime(ncpu=1, pin=[allowed[-1]]) as rt:
        Continuation(kcont.wq_softnet, lambda a, kc: seen.append(os.sched_getaffinity(0)), None).schedule()
        rt.wait_idle(timeout=5)
    assert seen == [{allowed[-1]}]


def test_stats_count_per_queue_and_cpu(trt: Runtime) -> None:
    gate = threading.Event()

    def func(arg: None, kc: Continuation[None]) -> None:
        gate.wait(5)
        time.sleep(0.001)

    kc = Continuation(kcont.wq_softbio, func, None)
    gate.set()
    kc.schedule(cpu=trt.cpus[1])
    trt.wait_idle(timeout=5)
    gate.clear()
    kc.schedule()
    with pytest.raises(kcont.BusyError):
        kc.schedule()
    gate.set()
    trt.wait_idle(timeout=5)
    stats = trt.stats()
    q = stats["queues"]["wq_softbio"]
    assert q["invoked"] == 2 and q["scheduled"] == 2 and q["ebusy"] == 1
    assert q["func_ns"] >= 1_000_000
    assert stats["cpus"][1]["invoked"] >= 1
    assert stats["workers"][0]["soft"] == 1


@pytest.mark.timeout(30)
def test_waits_longer_than_a_lock_can_wait_are_clamped() -> None:
    """A timer armed for 10**13 ticks, ``flush(timeout=inf)`` and
    ``idle_timeout=inf``: waits beyond ``threading.TIMEOUT_MAX`` used to raise
    OverflowError (in the timer thread, which then died with every timer)."""
    fired: list[str] = []
    with Runtime(ncpu=1, hz=1000, idle_timeout=float("inf")) as rt:
        far = Continuation(kcont.wq_softclock, lambda a, kc: fired.append("far"))
        far.schedule(10**13)
        near = Continuation(kcont.wq_softclock, lambda a, kc: fired.append("near"))
        near.schedule(2)
        deadline = time.monotonic() + 10
        while "near" not in fired and time.monotonic() < deadline:
            time.sleep(0.005)
        assert fired == ["near"] and far.pending
        near.schedule(0)
        near.flush(timeout=float("inf"))
        assert rt.stats()["workers"][0]["soft"] == 1
        account = rt.shutdown(timeout=float("inf"))
    assert account.pending == 1 and account.ran == 2


@pytest.mark.timeout(30)
def test_shutdown_from_inside_while_an_outside_shutdown_waits_returns_at_once() -> None:
    """An outside shutdown() waits for the workers while holding the shutdown
    lock; a continuation calling shutdown() meanwhile must not wait for that
    lock (it used to: both waited for each other for ever)."""
    started, release = threading.Event(), threading.Event()
    inner: list[Any] = []

    def func(arg: object, kc: Continuation[Any]) -> None:
        started.set()
        release.wait(10)
        inner.append(rt.shutdown())

    rt = Runtime(ncpu=1)
    with rt:
        Continuation(kcont.wq_softnet, func).schedule()
        assert started.wait(5)
        timer = threading.Timer(0.2, release.set)
        timer.start()
        # Waits for func, which calls shutdown() from inside.  The timeout only
        # turns the old deadlock into a failure (unfinished=1) instead of a hang.
        outer = rt.shutdown(timeout=10)
        timer.join()
    assert len(inner) == 1 and inner[0].unfinished == 1
    assert outer.ran == 1 and outer.unfinished == 0


@pytest.mark.timeout(30)
def test_a_worker_that_cannot_start_leaves_the_runtime_working(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Fault injection: starting an extra thread worker fails ("can't start
    new thread").  The timer thread used to die of it, and the unstarted
    worker stayed listed, so shutdown() waited for it for ever."""
    real_start = threading.Thread.start

    def failing_start(thread: threading.Thread) -> None:
        if thread.name.endswith("/thread1"):  # the first extra thread worker
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", failing_start)
    release = threading.Event()
    fired = threading.Event()
    with caplog.at_level(logging.ERROR, logger="kcont"):
        rt = Runtime(ncpu=1, stall_threshold=0.02)
        try:
            rt.continuation(kcont.wq_prihigh, lambda a, kc: release.wait(5)).schedule()
            rt.continuation(kcont.wq_prilow, lambda a, kc: None).schedule()  # waits: a stall
            deadline = time.monotonic() + 5
            while not any("could not start" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "no spawn was attempted"
                time.sleep(0.01)
            rt.continuation(kcont.wq_softclock, lambda a, kc: fired.set()).schedule(5)
            assert fired.wait(5), "the timer thread died"
        finally:
            release.set()
            account = rt.shutdown(timeout=10)
    assert account.unfinished == 0 and account.ran == 3


@pytest.mark.timeout(30)
def test_shared_queue_traffic_on_another_cpu_does_not_hide_a_stall() -> None:
    """CPU 0's only thread worker blocks while a shared thread-level queue
    keeps running on CPU 1: CPU 0's waiting work still gets an extra worker
    (the shared queue's counters used to count as CPU 0's progress)."""
    stop, blocking, victim_ran = threading.Event(), threading.Event(), threading.Event()

    def ticker(arg: object, kc: Continuation[Any]) -> None:
        time.sleep(0.002)
        if not stop.is_set():
            kc.schedule(ack=True)

    def blocker(arg: object, kc: Continuation[Any]) -> None:
        blocking.set()
        stop.wait(5)

    rt = Runtime(ncpu=2, stall_threshold=0.02)
    try:
        rt.continuation(kcont.wq_prihigh, blocker).schedule(0, rt.cpus[0])
        assert blocking.wait(5)
        ticking = rt.continuation(rt.workqueue(kcont.PRI_MEDLOW), ticker)
        with kcont.bind_cpu(rt.cpus[1]):
            ticking.schedule()
        time.sleep(0.05)
        rt.continuation(kcont.wq_prilow, lambda a, kc: victim_ran.set()).schedule(0, rt.cpus[0])
        assert victim_ran.wait(2.5), "CPU 0's work waited behind the blocked worker"
        assert rt.stats()["extra_workers_started"] >= 1
    finally:
        stop.set()
        rt.shutdown(timeout=10)

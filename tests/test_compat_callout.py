"""callout(9) rebuilt on kcont (:mod:`kcont.compat.callout`).

Each test quotes the sentence of NetBSD's callout.9 (rev 1.27, 2014) it checks,
or, where the manual is silent, the line of ``sys/kern/kern_timeout.c`` whose
behaviour it reproduces.  Tests taking ``driver`` run on every runtime and
assert exact ticks only when ``driver.exact_time``; tests taking ``rt`` need
the simulated runtime's exact ticks and ordering.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import kcont
from kcont.compat import KassertError
from kcont.compat.callout import (
    CALLOUT_MPSAFE,
    Callout,
    callout_ack,
    callout_active,
    callout_bind,
    callout_destroy,
    callout_expired,
    callout_halt,
    callout_init,
    callout_invoking,
    callout_pending,
    callout_reset,
    callout_schedule,
    callout_setfunc,
    callout_stop,
)


def _advance_until(driver: Any, predicate: Any, limit: int = 200) -> None:
    """Let ticks pass, one at a time, until ``predicate()`` holds."""
    for _ in range(limit):
        if predicate():
            return
        driver.advance(1)
    raise AssertionError("condition never held")


# -- starting, expiring, the function and its argument -------------------------


def test_reset_calls_func_with_arg_after_ticks(rt: kcont.SimRuntime) -> None:
    """ "When the timer expires after ticks/hz seconds, the function specified by
    func will be called with the argument arg." """
    calls: list[tuple[object, int]] = []
    c = callout_init(0)
    callout_reset(c, 3, lambda arg: calls.append((arg, rt.ticks)), "softc")
    rt.advance(2)
    assert calls == []
    rt.advance(1)
    assert calls == [("softc", 3)]
    rt.advance(10)
    assert calls == [("softc", 3)]  # once per arming


def test_reset_calls_func_on_any_runtime(driver: Any) -> None:
    """ "the function specified by func will be called with the argument arg"
    (any runtime: once, with its argument)."""
    calls: list[object] = []
    c = callout_init(CALLOUT_MPSAFE)
    callout_reset(c, 2, calls.append, "softc")
    _advance_until(driver, lambda: calls)
    driver.advance(3)
    assert calls == ["softc"]


def test_reset_of_pending_callout_reschedules_it(rt: kcont.SimRuntime) -> None:
    """ "If the timer associated with the callout handle is already running, the
    callout will simply be rescheduled to execute at the newly specified time." """
    calls: list[tuple[str, int]] = []
    c = callout_init(0)
    callout_reset(c, 5, lambda arg: calls.append((arg, rt.ticks)), "first")
    rt.advance(1)
    callout_reset(c, 2, lambda arg: calls.append((arg, rt.ticks)), "second")
    rt.advance(10)
    assert calls == [("second", 3)]


def test_setfunc_then_schedule(driver: Any) -> None:
    """ "callout_setfunc ... sets the function and argument of the callout handle c
    to func and arg respectively" and is "used in conjunction with
    callout_schedule"."""
    calls: list[object] = []
    c = callout_init(0)
    callout_setfunc(c, calls.append, 1)
    callout_schedule(c, 1)
    _advance_until(driver, lambda: len(calls) == 1)
    callout_setfunc(c, calls.append, 2)
    callout_schedule(c, 1)
    _advance_until(driver, lambda: len(calls) == 2)
    assert calls == [1, 2]


def test_schedule_without_function_is_refused(rt: kcont.SimRuntime) -> None:
    """kern_timeout.c ``callout_schedule_locked``: "The function and argument must
    already be set in the callout structure" (``KASSERT(c->c_func != NULL)``)."""
    c = callout_init(0)
    with pytest.raises(KassertError, match="no function"):
        callout_schedule(c, 1)
    assert not callout_pending(c)


def test_zero_ticks_runs_at_next_tick(rt: kcont.SimRuntime) -> None:
    """kern_timeout.c: ``KASSERT(to_ticks >= 0)``; a callout scheduled for 0 ticks
    is put on the softclock's list and runs at the next tick, never
    synchronously (unlike kcont's ``nticks=0``, which commits at once)."""
    calls: list[int] = []
    c = callout_init(0)
    callout_reset(c, 0, lambda arg: calls.append(rt.ticks), None)
    assert callout_pending(c) and not callout_invoking(c)
    rt.run_until_idle()
    assert calls == []
    rt.advance(1)
    assert calls == [1]
    with pytest.raises(KassertError, match="to_ticks >= 0"):
        callout_schedule(c, -1)


# -- PENDING, EXPIRED, INVOKING, active ----------------------------------------


def test_flags_pending_then_expired_and_invoking(driver: Any) -> None:
    """ "Once the timer is started, the callout handle is marked as PENDING. Once
    the timer expires, the handle is marked as EXPIRED and INVOKING, and the
    PENDING status is cleared." """
    seen: list[tuple[bool, bool, bool]] = []
    c = callout_init(CALLOUT_MPSAFE)
    callout_reset(
        c, 2, lambda arg: seen.append((callout_pending(c), callout_expired(c), callout_invoking(c))), 0
    )
    assert (callout_pending(c), callout_expired(c), callout_invoking(c)) == (True, False, False)
    _advance_until(driver, lambda: seen)
    assert seen == [(False, True, True)]
    assert not callout_pending(c) and callout_expired(c)


def test_expired_means_timer_expired_and_function_called(driver: Any) -> None:
    """ "The callout_expired function tests to see if the callout's timer has
    expired and its function called." """
    calls: list[object] = []
    c = callout_init(0)
    callout_reset(c, 1, calls.append, None)
    assert not callout_expired(c)
    _advance_until(driver, lambda: calls)
    driver.settle()
    assert callout_expired(c)
    callout_schedule(c, 5)  # a new scheduling clears it
    assert not callout_expired(c)
    callout_halt(c)


def test_active_is_pending_or_expired(driver: Any) -> None:
    """ "callout_active(foo) is logically the same as callout_pending(foo) ||
    callout_expired(foo)"; "returns true if a timer has been started but not
    explicitly stopped, even if it has already fired." """
    calls: list[object] = []
    c = callout_init(0)
    assert not callout_active(c)
    callout_reset(c, 1, calls.append, None)
    assert callout_active(c) and callout_pending(c)
    _advance_until(driver, lambda: calls)
    driver.settle()
    assert callout_active(c) and callout_expired(c) and not callout_pending(c)
    callout_stop(c)
    assert not callout_active(c)


def test_invoking_stays_set_until_ack(driver: Any) -> None:
    """ "For this handshake protocol to work, the callout function will have to use
    the callout_ack function to clear this flag." (kcont alone clears INVOKING
    when the function returns; the layer keeps NetBSD's flag.)"""
    calls: list[object] = []
    c = callout_init(0)
    callout_reset(c, 1, calls.append, None)
    _advance_until(driver, lambda: calls)
    driver.settle()
    assert callout_invoking(c)  # the function did not ack
    callout_stop(c)  # "The PENDING and EXPIRED status ... is cleared": not INVOKING
    assert callout_invoking(c) and not callout_expired(c)
    callout_ack(c)
    assert not callout_invoking(c)

    def acking(arg: object) -> None:
        callout_ack(c)
        calls.append(arg)

    callout_reset(c, 1, acking, "acked")
    _advance_until(driver, lambda: "acked" in calls)
    driver.settle()
    assert not callout_invoking(c)


def test_invoking_handshake_defers_deallocation(rt: kcont.SimRuntime) -> None:
    """ "one technique to prevent references to deallocated storage would be to
    test whether any callout functions are in the INVOKING state using
    callout_invoking, and if so, to mark the data structure and defer storage
    deallocation until the callout function is allowed to run." """
    cpu0 = rt.cpus[0]
    softc: dict[str, Any] = {"dying": False, "freed": False}
    c = callout_init(CALLOUT_MPSAFE)

    def tick(sc: dict[str, Any]) -> None:
        callout_ack(c)
        if sc["dying"]:
            sc["freed"] = True  # the deferred deallocation

    def detach(sc: dict[str, Any], kc: kcont.Continuation[Any]) -> None:
        # Higher-priority code running between the expiry and the callout function.
        if callout_invoking(c):
            sc["dying"] = True
        else:
            sc["freed"] = True

    with kcont.bind_cpu(cpu0):
        callout_reset(c, 1, tick, softc)
        kcont.Continuation(kcont.wq_softnet, detach, softc, name="detach").schedule(1)
    rt.advance(1)
    order = [e.name for e in rt.trace if e.event == "start"]
    assert order == ["detach", "callout:test_invoking_handshake_defers_deallocation.<locals>.tick"]
    assert softc == {"dying": True, "freed": True}


def test_schedule_clears_invoking_so_a_handler_may_rearm_itself(driver: Any) -> None:
    """kern_timeout.c ``callout_schedule_locked``: ``c->c_flags &= ~(CALLOUT_FIRED |
    CALLOUT_INVOKING)``: a handler re-arms itself with callout_schedule, no
    callout_ack needed (raw kcont would refuse with EBUSY)."""
    runs: list[int] = []
    c = callout_init(CALLOUT_MPSAFE)

    def tick(arg: object) -> None:
        runs.append(driver.rt.ticks)
        if len(runs) < 3:
            callout_schedule(c, 2)
            assert not callout_invoking(c) and callout_pending(c)

    callout_reset(c, 2, tick, None)
    _advance_until(driver, lambda: len(runs) == 3)
    if driver.exact_time:
        assert runs == [2, 4, 6]


# -- stop ---------------------------------------------------------------------


def test_stop_pending_prevents_the_call(driver: Any) -> None:
    """ "The PENDING and EXPIRED status for the callout handle is cleared." and
    "callout_stop will return a non-zero value if the callout was EXPIRED." """
    calls: list[object] = []
    c = callout_init(0)
    callout_reset(c, 3, calls.append, None)
    assert callout_stop(c) is False
    assert not callout_pending(c) and not callout_expired(c)
    driver.advance(5)
    assert calls == []


def test_stop_after_expiry_returns_true_and_clears_expired(driver: Any) -> None:
    """ "callout_stop will return a non-zero value if the callout was EXPIRED." """
    calls: list[object] = []
    c = callout_init(0)
    callout_reset(c, 1, calls.append, None)
    _advance_until(driver, lambda: calls)
    driver.settle()
    assert callout_stop(c) is True
    assert not callout_expired(c) and not callout_active(c)
    assert callout_stop(c) is False


def test_stop_of_due_callout_not_yet_run_prevents_it(rt: kcont.SimRuntime) -> None:
    """ "It can only be said to prevent the callout from firing in the future":
    a callout that is due but whose function has not been called yet is
    stopped before it runs, and callout_stop returns false."""
    calls: list[object] = []
    c = callout_init(0)
    with kcont.bind_cpu(rt.cpus[0]):
        callout_reset(c, 1, calls.append, None)
    stopped: list[bool] = []

    def stopper(arg: None, kc: kcont.Continuation[Any]) -> None:
        stopped.append(callout_stop(c))  # higher priority, same tick, same CPU

    with kcont.bind_cpu(rt.cpus[0]):
        kcont.Continuation(kcont.wq_softnet, stopper, None).schedule(1)
    rt.advance(1)
    assert stopped == [False] and calls == []


def test_stop_is_safe_on_a_callout_not_pending(rt: kcont.SimRuntime) -> None:
    """ "It is safe to call callout_stop on a callout handle that is not pending,
    so long as it is initialized." """
    c = callout_init(0)
    assert callout_stop(c) is False
    assert callout_stop(c) is False


# -- halt -----------------------------------------------------------------------


def test_halt_stops_a_pending_callout(driver: Any) -> None:
    """ "callout_halt acts much like callout_stop" (no handler in flight: it
    returns at once)."""
    calls: list[object] = []
    c = callout_init(0)
    callout_reset(c, 3, calls.append, None)
    assert callout_halt(c) is False
    driver.advance(5)
    assert calls == []


def test_halt_without_wait_keeps_the_interlock(driver: Any) -> None:
    """ "If no wait is required, interlock will not be released." """
    released: list[bool] = []

    class SpyMutex(kcont.Mutex):
        def release(self) -> None:
            released.append(True)
            super().release()

    interlock = SpyMutex("interlock")
    c = callout_init(0)
    callout_reset(c, 3, lambda arg: None, None)
    with interlock:
        callout_halt(c, interlock)
        assert interlock.owned() and released == []


def test_halt_from_own_handler_returns_at_once(driver: Any) -> None:
    """kern_timeout.c ``callout_halt``: it waits only while
    ``cc->cc_active == c && cc->cc_lwp != curlwp``, so the handler itself may
    halt its callout, even after re-arming it (the re-arm is cancelled)."""
    results: list[bool] = []
    c = callout_init(CALLOUT_MPSAFE)

    def tick(arg: object) -> None:
        callout_schedule(c, 1)  # "a common design pattern for callouts to re-schedule themselves"
        results.append(callout_halt(c))

    callout_reset(c, 1, tick, None)
    _advance_until(driver, lambda: results)
    driver.advance(3)
    assert results == [False]  # re-arming had cleared EXPIRED
    assert not callout_pending(c)


def test_halt_waits_for_running_handler_and_drops_interlock(driver: Any) -> None:
    """ "callout_halt acts much like callout_stop, but waits for the callout to
    complete if it is currently in-flight." and "If interlock is not NULL and
    the calling thread must wait for the callout to complete, interlock will be
    released before waiting and re-acquired before returning." """
    if driver.exact_time:
        pytest.skip("real threads only: on the simulated runtime no handler runs while another caller waits")
    started, release, holding = threading.Event(), threading.Event(), threading.Event()
    finished: list[bool] = []

    def slow(arg: object) -> None:
        started.set()
        release.wait(10)
        finished.append(True)

    c = callout_init(CALLOUT_MPSAFE)
    callout_reset(c, 1, slow, None)
    assert started.wait(10)
    interlock = kcont.Mutex("interlock")
    result: dict[str, bool] = {}

    def halter() -> None:
        with interlock:
            holding.set()
            result["expired"] = callout_halt(c, interlock)
            result["owned"] = interlock.owned()
            result["finished"] = bool(finished)

    thread = threading.Thread(target=halter)
    thread.start()
    assert holding.wait(10)
    assert interlock.acquire(timeout=10)  # possible only once callout_halt released it to wait
    interlock.release()
    release.set()
    thread.join(10)
    assert result == {"expired": True, "owned": True, "finished": True}


@pytest.mark.threaded
def test_halt_stops_a_handler_that_reschedules_itself_while_the_interlock_is_released() -> None:
    """NetBSD callout_halt: on return the callout is neither pending nor in
    flight, even when its handler calls callout_schedule() while the halting
    thread is between its stop and its wait (opened here with a hook in the
    interlock's release, where the halting thread is by definition)."""
    may_reschedule = threading.Event()
    ran: list[int] = []

    def handler(arg: object) -> None:
        ran.append(1)
        assert may_reschedule.wait(5)
        callout_schedule(c, 30)

    class HookedInterlock(kcont.Mutex):
        def release(self) -> None:
            super().release()
            may_reschedule.set()
            deadline = time.monotonic() + 5
            while c._kc.running and time.monotonic() < deadline:
                time.sleep(0.001)

    with kcont.Runtime(ncpu=1, hz=100) as rt:
        c = callout_init(CALLOUT_MPSAFE)
        callout_reset(c, 1, handler, None)
        deadline = time.monotonic() + 5
        while not ran and time.monotonic() < deadline:
            time.sleep(0.001)
        interlock = HookedInterlock("interlock")
        with interlock:
            callout_halt(c, interlock)
            assert not callout_pending(c)
        rt.wait_idle(timeout=5)
        assert ran == [1]


def test_never_multiple_concurrent_invocations(driver: Any) -> None:
    """CONCURRENCY: "any given callout will never have multiple concurrent
    invocations." (The handler re-arms for the next tick and, on real threads,
    stays busy for several ticks.)"""
    inside: list[int] = []
    overlaps: list[int] = []
    runs: list[int] = []
    c = callout_init(CALLOUT_MPSAFE)
    rt = driver.rt

    def busy(arg: object) -> None:
        inside.append(1)
        if len(inside) > 1:
            overlaps.append(len(inside))
        runs.append(1)
        if len(runs) < 3:
            callout_schedule(c, 1)
        if not driver.exact_time:
            start, deadline = rt.ticks, time.monotonic() + 2
            while rt.ticks < start + 3 and time.monotonic() < deadline:
                pass
        inside.pop()

    callout_reset(c, 1, busy, None)
    _advance_until(driver, lambda: len(runs) == 3)
    driver.settle()
    assert overlaps == []


# -- level, CPU, destroy, init ---------------------------------------------------


def test_function_is_called_at_softclock_level(rt: kcont.SimRuntime) -> None:
    """ "The function is called at softclock interrupt level.": after softnet
    work and before thread-level work due at the same tick on the same CPU."""
    c = callout_init(0)
    assert isinstance(c, Callout)
    assert c.continuation.wq.pri == kcont.PRI_SOFTCLOCK
    with kcont.bind_cpu(rt.cpus[0]):
        kcont.Continuation(kcont.wq_prilow, lambda a, kc: None, None, name="thread").schedule(1)
        callout_reset(c, 1, lambda arg: None, None)
        kcont.Continuation(kcont.wq_softnet, lambda a, kc: None, None, name="softnet").schedule(1)
    rt.advance(1)
    order = [e.name for e in rt.trace if e.event == "start"]
    assert order == [
        "softnet",
        "callout:test_function_is_called_at_softclock_level.<locals>.<lambda>",
        "thread",
    ]


def test_bind_runs_on_the_bound_cpu(driver: Any) -> None:
    """kern_timeout.c ``callout_bind``: "Bind a callout so that it will only
    execute on one CPU. The callout must be stopped, and must be MPSAFE." """
    where: list[int] = []
    c = callout_init(CALLOUT_MPSAFE)
    callout_setfunc(c, lambda arg: where.append(kcont.curcpu().index), None)
    callout_bind(c, driver.cpus[1])
    with kcont.bind_cpu(driver.cpus[0]):
        callout_schedule(c, 1)
    _advance_until(driver, lambda: where)
    assert where == [1]
    callout_schedule(c, 5)
    with pytest.raises(KassertError, match="stopped"):
        callout_bind(c, driver.cpus[0])
    callout_halt(c)
    with pytest.raises(KassertError, match="MPSAFE"):
        callout_bind(callout_init(0), driver.cpus[0])


def test_unbound_callout_runs_on_the_scheduling_cpu(driver: Any) -> None:
    """kern_timeout.c ``callout_schedule_locked``: a callout that is not pending
    and not bound moves to the CPU of the caller ("Move to this CPU")."""
    where: list[int] = []
    c = callout_init(CALLOUT_MPSAFE)
    callout_setfunc(c, lambda arg: where.append(kcont.curcpu().index), None)
    with kcont.bind_cpu(driver.cpus[1]):
        callout_schedule(c, 1)
    _advance_until(driver, lambda: len(where) == 1)
    with kcont.bind_cpu(driver.cpus[0]):
        callout_schedule(c, 1)
    _advance_until(driver, lambda: len(where) == 2)
    assert where == [1, 0]


def test_rearming_a_pending_callout_leaves_it_on_its_cpu(driver: Any) -> None:
    """kern_timeout.c ``callout_schedule_locked``: "If this timeout is already
    scheduled and now is moved earlier, reschedule it now." with the comment
    "Leave on existing CPU." (kcont alone would move it to the caller's CPU)."""
    where: list[int] = []
    c = callout_init(CALLOUT_MPSAFE)
    callout_setfunc(c, lambda arg: where.append(kcont.curcpu().index), None)
    with kcont.bind_cpu(driver.cpus[1]):
        callout_schedule(c, 50)
    with kcont.bind_cpu(driver.cpus[0]):
        callout_schedule(c, 1)
    _advance_until(driver, lambda: where)
    assert where == [1]


def test_destroy_of_pending_callout_is_refused(driver: Any) -> None:
    """ "The callout should be stopped before callout_destroy is called by calling
    callout_halt." (kern_timeout.c: ``KASSERT((c->c_flags & CALLOUT_PENDING) ==
    0)``); "callout_destroy destroys the callout, preventing further use." """
    c = callout_init(0)
    callout_reset(c, 5, lambda arg: None, None)
    with pytest.raises(KassertError, match="callout_halt"):
        callout_destroy(c)
    assert callout_pending(c)  # refused: nothing changed
    callout_halt(c)
    callout_destroy(c)
    with pytest.raises(kcont.DestroyedError):
        callout_reset(c, 1, lambda arg: None, None)
    with pytest.raises(kcont.DestroyedError):
        callout_schedule(c, 1)
    with pytest.raises(kcont.DestroyedError):
        callout_destroy(c)


def test_destroy_from_own_handler(driver: Any) -> None:
    """kern_timeout.c ``callout_destroy``: ``KASSERT(c->c_cpu->cc_lwp == curlwp ||
    c->c_cpu->cc_active != c)``: a handler may destroy its own callout."""
    done: list[bool] = []
    c = callout_init(CALLOUT_MPSAFE)

    def last(arg: object) -> None:
        callout_destroy(c)
        done.append(True)

    callout_reset(c, 1, last, None)
    _advance_until(driver, lambda: done)
    driver.settle()
    assert c.continuation.destroyed


def test_init_flags(rt: kcont.SimRuntime) -> None:
    """ "If the flags argument is CALLOUT_MPSAFE, the handler will be called
    without getting the global kernel lock." (accepted; kcont has no kernel
    lock); kern_timeout.c ``KASSERT((flags & ~CALLOUT_FLAGMASK) == 0)``."""
    assert callout_init(CALLOUT_MPSAFE).flags == CALLOUT_MPSAFE
    with pytest.raises(KassertError, match="FLAGMASK"):
        callout_init(0x1)
    with pytest.raises(TypeError):
        callout_stop("not a callout")  # type: ignore[arg-type]


# -- atomic re-arm: kcont's schedule(ack=True) -------------------------------------


def _softclock_ebusy(rt: Any) -> int:
    return int(rt.stats()["queues"]["wq_softclock"]["ebusy"])


def test_rearm_racing_expiries_is_never_refused(driver: Any) -> None:
    """kern_timeout.c ``callout_schedule_locked`` clears INVOKING and re-arms
    under the callout lock, so a re-arm is never refused.  The layer uses
    ``schedule(..., ack=True)``: one transition under kcont's state lock, so
    an expiry of the previous arming cannot fall between "acknowledge" and
    "arm" (the old ``ack()`` then ``schedule()`` was refused with EBUSY there
    and retried)."""
    if driver.exact_time:
        pytest.skip("real threads only: the timer must expire while another thread re-arms")
    rt = driver.rt
    runs: list[int] = []
    c = callout_init(CALLOUT_MPSAFE)
    callout_setfunc(c, runs.append, 1)
    arms = 0
    deadline = time.monotonic() + 0.3  # ~30 tick boundaries, each racing a re-arm
    while time.monotonic() < deadline:
        callout_schedule(c, 1)
        arms += 1
    callout_halt(c)
    driver.settle()
    assert arms > 100
    assert _softclock_ebusy(rt) == 0
    assert not callout_pending(c) and not c.continuation.running


def test_handler_rearms_itself_without_ebusy(driver: Any) -> None:
    """kern_timeout.c ``callout_schedule_locked``: ``c->c_flags &=
    ~(CALLOUT_FIRED | CALLOUT_INVOKING)``: the re-arm from the handler is one
    kcont call that is never refused (no EBUSY counted)."""
    runs: list[int] = []
    c = callout_init(CALLOUT_MPSAFE)

    def tick(arg: object) -> None:
        runs.append(1)
        if len(runs) < 5:
            callout_schedule(c, 1)

    callout_reset(c, 1, tick, None)
    _advance_until(driver, lambda: len(runs) == 5)
    driver.settle()
    assert _softclock_ebusy(driver.rt) == 0
    assert not callout_pending(c)


def test_rearm_of_a_due_callout_replaces_it_and_keeps_its_cpu(rt: kcont.SimRuntime) -> None:
    """kern_timeout.c ``callout_schedule_locked``: a due callout not yet picked
    by softclock is still PENDING, so re-arming it moves its deadline and
    "Leave[s] on existing CPU"; its due call does not happen."""
    where: list[tuple[int, int]] = []
    c = callout_init(CALLOUT_MPSAFE)
    callout_setfunc(c, lambda arg: where.append((kcont.curcpu().index, rt.ticks)), None)
    seen: list[tuple[bool, bool]] = []

    def rearm(arg: None, kc: kcont.Continuation[Any]) -> None:
        # Higher priority, same tick, same CPU: the callout is due, not run.
        seen.append((callout_expired(c), callout_pending(c)))
        with kcont.bind_cpu(rt.cpus[0]):  # a caller on another CPU
            callout_schedule(c, 2)

    with kcont.bind_cpu(rt.cpus[1]):
        callout_schedule(c, 1)
        kcont.Continuation(kcont.wq_softnet, rearm, None).schedule(1)
    rt.advance(1)
    assert seen == [(True, False)] and where == []
    assert callout_pending(c) and c.continuation.cpu is rt.cpus[1]
    rt.advance(2)
    assert where == [(1, 3)]
    assert _softclock_ebusy(rt) == 0


def test_reset_of_a_due_callout_never_calls_the_new_pair_for_it(rt: kcont.SimRuntime) -> None:
    """callout.9: "If the timer associated with the callout handle is already
    running, the callout will simply be rescheduled to execute at the newly
    specified time.": the due call of the previous arming does not happen, and
    the new pair is called once, at the new time."""
    calls: list[tuple[str, int]] = []
    c = callout_init(CALLOUT_MPSAFE)

    def reset(arg: None, kc: kcont.Continuation[Any]) -> None:
        callout_reset(c, 3, lambda arg: calls.append((arg, rt.ticks)), "new")

    with kcont.bind_cpu(rt.cpus[0]):
        callout_reset(c, 1, lambda arg: calls.append((arg, rt.ticks)), "old")
        kcont.Continuation(kcont.wq_softnet, reset, None).schedule(1)
    rt.advance(10)
    assert calls == [("new", 4)]


def test_reset_racing_an_expiry_never_calls_the_new_pair_early(driver: Any, monkeypatch: Any) -> None:
    """kern_timeout.c ``callout_reset`` sets ``c_func``/``c_arg`` and re-arms
    under one lock: the previous arming, if it fires, calls the *old* pair.
    kcont has no "set the argument and schedule" in one call; the layer stops
    the previous arming before ``set_arg``, so an expiry cannot fall in
    between.  The test holds the layer right after ``set_arg`` for several
    ticks, during which the previous arming (1 tick) is due."""
    if driver.exact_time:
        pytest.skip("real threads only: the timer must expire while callout_reset runs")
    calls: list[str] = []
    fired = threading.Event()

    def record(arg: str) -> None:
        calls.append(arg)
        fired.set()

    c = callout_init(CALLOUT_MPSAFE)
    original = kcont.Continuation.set_arg

    def slow_set_arg(self: kcont.Continuation[Any], arg: Any) -> None:
        original(self, arg)
        if self is c.continuation and arg[2] == "new":
            fired.wait(0.1)  # 10 ticks: an un-stopped previous arming would fire here

    callout_reset(c, 1, record, "old")
    monkeypatch.setattr(kcont.Continuation, "set_arg", slow_set_arg)
    callout_reset(c, 500, record, "new")
    monkeypatch.undo()
    assert callout_pending(c)
    callout_halt(c)
    driver.settle()
    assert "new" not in calls
    assert calls in ([], ["old"])  # "old" only if it fired before callout_reset began


@pytest.mark.timeout(30)
def test_reset_runs_no_user_repr_under_the_callout_lock(rt: kcont.SimRuntime) -> None:
    """kcont's own rule: the trace name of a callout is taken from a plain
    function's ``__qualname__`` or the callable's type, never its ``repr``,
    which may raise (the old arming would be lost) or use the callout (a
    deadlock on the callout's lock)."""
    calls: list[Any] = []
    c = callout_init(CALLOUT_MPSAFE)

    class Handler:
        def __init__(self, tag: str) -> None:
            self.tag = tag

        def __call__(self, arg: Any) -> None:
            calls.append((self.tag, arg, rt.ticks))

        def __repr__(self) -> str:
            callout_invoking(c)  # takes the callout's lock
            raise RuntimeError("repr failed")

    callout_reset(c, 10, Handler("old"), "a")
    callout_reset(c, 5, Handler("new"), "b")
    assert callout_pending(c)
    rt.advance(10)
    assert calls == [("new", "b", 5)]
    assert c.continuation.name is not None and c.continuation.name.endswith("<locals>.Handler")

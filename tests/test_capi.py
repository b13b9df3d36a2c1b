"""The seed's C-style layer (kcont.capi): exact return values (docs/semantics.md §13)."""

from __future__ import annotations

import errno
from typing import Any

import pytest

import kcont
from kcont import Mutex, SimRuntime
from kcont.capi import (
    PRI_HIGH,
    PRI_LOW,
    PRI_MEDHIGH,
    PRI_MEDLOW,
    PRI_SOFTBIO,
    PRI_SOFTCLOCK,
    PRI_SOFTNET,
    PRI_SOFTSERIAL,
    WQ_PERCPU,
    kcont_ack,
    kcont_active,
    kcont_create,
    kcont_destroy,
    kcont_expired,
    kcont_getmutex,
    kcont_halt,
    kcont_invoking,
    kcont_pending,
    kcont_schedule,
    kcont_setarg,
    kcont_setfunc,
    kcont_setmutex,
    kcont_stop,
    kcont_workqueue_acquire,
    kcont_workqueue_release,
)


def noop(arg: Any, kc: Any) -> None:
    pass


def is_int(value: object, expected: int) -> bool:
    return type(value) is int and value == expected


def is_bool(value: object, expected: bool) -> bool:
    return type(value) is bool and value is expected


# -- constants -------------------------------------------------------------------------------------


def test_priority_constants_order() -> None:
    """Seed: softserial > softnet > softbio > softclock > high > medhigh > medlow > low."""
    order = [
        PRI_SOFTSERIAL,
        PRI_SOFTNET,
        PRI_SOFTBIO,
        PRI_SOFTCLOCK,
        PRI_HIGH,
        PRI_MEDHIGH,
        PRI_MEDLOW,
        PRI_LOW,
    ]
    assert order == sorted(order, reverse=True) and len(set(order)) == 8
    assert order == [223, 219, 215, 211, 127, 111, 79, 63]  # §6: NetBSD's values
    assert all(p >= kcont.PRI_SOFT_MIN for p in order[:4])
    assert all(p < kcont.PRI_SOFT_MIN for p in order[4:])
    assert kcont.MAXPRI == PRI_SOFTSERIAL


def test_predefined_wq_constants() -> None:
    """Seed: the eight predefined queues, sorted from highest priority to lowest."""
    names = ["softserial", "softnet", "softbio", "softclock", "prihigh", "primedhigh", "primedlow", "prilow"]
    handles = [getattr(kcont.capi, f"wq_{n}") for n in names]
    assert [h.name for h in handles] == [f"wq_{n}" for n in names]
    assert [h.pri for h in handles] == sorted((h.pri for h in handles), reverse=True)
    assert all(isinstance(h, kcont.PredefinedQueue) and h.percpu for h in handles)
    assert WQ_PERCPU == 1


# -- create, schedule ----------------------------------------------------------------------------


def test_create_positional_seed_signature(rt: SimRuntime) -> None:
    """Seed: kcont_create(wq, lock, func, arg, flags) makes a continuation calling func(arg, kc)."""
    seen: list[Any] = []
    lock = Mutex()
    kc = kcont_create(kcont.wq_softnet, lock, lambda a, k: seen.append((a, k, lock.owned())), "arg", 0)
    assert isinstance(kc, kcont.Continuation)
    assert kcont_getmutex(kc) is lock
    assert is_int(kcont_schedule(kc, None, 0), 0)
    rt.run_until_idle()
    assert seen == [("arg", kc, True)]


def test_create_flags_must_be_zero(rt: SimRuntime) -> None:
    """Seed: flags must be 0."""
    with pytest.raises(kcont.InvalidArgumentError):
        kcont_create(kcont.wq_softnet, None, noop, None, 4)


def test_schedule_returns_zero_ebusy_enoent_einval(rt: SimRuntime) -> None:
    """Seed/§13: kcont_schedule returns 0, EBUSY (INVOKING), ENOENT (ci on shared), EINVAL."""
    kc = kcont_create(kcont.wq_softnet, None, noop, None, 0)
    assert is_int(kcont_schedule(kc, rt.cpus[1], 0), 0)
    assert is_int(kcont_schedule(kc, None, 0), errno.EBUSY)
    assert is_int(kcont_schedule(kc, None, 4), errno.EBUSY)
    rt.run_until_idle()
    assert is_int(kcont_schedule(kc, None, 3), 0)
    assert is_int(kcont_schedule(kc, None, -1), errno.EINVAL)
    assert is_int(kcont_schedule(kc, SimRuntime().cpus[0], 1), errno.EINVAL)
    assert kcont_pending(kc)  # refusals changed nothing
    shared = kcont_create(kcont_workqueue_acquire(100, 0), None, noop, None, 0)
    assert is_int(kcont_schedule(shared, rt.cpus[0], 0), errno.ENOENT)
    assert is_int(kcont_schedule(shared, None, 0), 0)
    kcont_destroy(kc)
    assert is_int(kcont_schedule(kc, None, 0), errno.EINVAL)
    assert is_int(kcont_schedule(kc, None, 2), errno.EINVAL)


def test_schedule_with_a_wrong_type_raises_whatever_ci_is(rt: SimRuntime) -> None:
    """§5/§14: a wrong nticks type is misuse and raises, before ci is looked
    at: it is never turned into the errno a refused ci would get."""
    shared = kcont_create(kcont_workqueue_acquire(100, 0), None, noop, None, 0)
    percpu = kcont_create(kcont.wq_softnet, None, noop, None, 0)
    for kc, ci in ((shared, rt.cpus[0]), (percpu, SimRuntime().cpus[0])):
        for bad in ("5", 1.5):
            with pytest.raises(TypeError, match="nticks must be an int"):
                kcont_schedule(kc, ci, bad)  # type: ignore[arg-type]


def test_schedule_percpu_acquired_queue_accepts_ci(rt: SimRuntime) -> None:
    """Seed: with WQ_PERCPU, ci selects the CPU."""
    where: list[int] = []
    wq = kcont_workqueue_acquire(100, WQ_PERCPU)
    kc = kcont_create(wq, None, lambda a, k: where.append(kcont.curcpu().index), None, 0)
    assert kcont_schedule(kc, rt.cpus[1], 0) == 0
    rt.run_until_idle()
    assert where == [1]


# -- predicates, stop, halt, ack -------------------------------------------------------------------


def test_predicates_return_bools_through_lifecycle(rt: SimRuntime) -> None:
    """§13: pending/expired/active/invoking return bools matching the flags."""
    inside: list[tuple[bool, bool, bool, bool]] = []

    def func(arg: Any, kc: Any) -> None:
        inside.append((kcont_pending(kc), kcont_expired(kc), kcont_active(kc), kcont_invoking(kc)))

    kc = kcont_create(kcont.wq_softnet, None, func, None, 0)

    def state() -> tuple[bool, ...]:
        values = (kcont_pending(kc), kcont_expired(kc), kcont_active(kc), kcont_invoking(kc))
        assert all(type(v) is bool for v in values)
        return values

    assert state() == (False, False, False, False)
    kcont_schedule(kc, None, 2)
    assert state() == (True, False, True, False)
    rt.advance(2)
    assert inside == [(False, True, True, True)]
    assert state() == (False, True, True, False)


def test_stop_returns_bool(rt: SimRuntime) -> None:
    """§13: kcont_stop returns True iff the run could not be prevented."""
    kc = kcont_create(kcont.wq_softnet, None, noop, None, 0)
    assert is_bool(kcont_stop(kc), False)
    kcont_schedule(kc, None, 3)
    assert is_bool(kcont_stop(kc), False)
    kcont_schedule(kc, None, 0)
    rt.run_until_idle()
    assert is_bool(kcont_stop(kc), True)
    assert is_bool(kcont_stop(kc), False)


def test_halt_returns_bool(rt: SimRuntime) -> None:
    """§13: kcont_halt returns as kcont_stop; from the continuation's own function it returns at once."""
    results: list[Any] = []
    interlock = Mutex()
    kc = kcont_create(kcont.wq_softnet, None, lambda a, k: results.append(kcont_halt(k)), None, 0)
    kcont_schedule(kc, None, 0)
    rt.run_until_idle()
    assert len(results) == 1 and is_bool(results[0], True)
    kcont_schedule(kc, None, 0)
    with interlock:
        assert is_bool(kcont_halt(kc, interlock), False)
        assert interlock.owned()
    assert rt.run_until_idle() == 0


def test_ack_returns_previous_invoking(rt: SimRuntime) -> None:
    """§13: kcont_ack returns the previous INVOKING as a bool."""
    kc = kcont_create(kcont.wq_softnet, None, noop, None, 0)
    assert is_bool(kcont_ack(kc), False)
    kcont_schedule(kc, None, 0)
    assert is_bool(kcont_ack(kc), True)
    assert is_bool(kcont_ack(kc), False)
    assert is_int(kcont_schedule(kc, None, 0), 0)  # acked: no EBUSY


# -- setarg, setfunc, setmutex ---------------------------------------------------------------------


def test_setarg_returns_zero_or_einval(rt: SimRuntime) -> None:
    """§13: kcont_setarg returns 0, or EINVAL on a destroyed continuation."""
    seen: list[Any] = []
    kc = kcont_create(kcont.wq_softnet, None, lambda a, k: seen.append(a), 1, 0)
    assert is_int(kcont_setarg(kc, 2), 0)
    kcont_schedule(kc, None, 0)
    rt.run_until_idle()
    assert seen == [2]
    kcont_destroy(kc)
    assert is_int(kcont_setarg(kc, 3), errno.EINVAL)


def test_setarg_lock_not_held_raises(rt: SimRuntime) -> None:
    """§14: breaking a mutex rule is misuse: it raises in the C layer too."""
    lock = Mutex()
    kc = kcont_create(kcont.wq_softnet, lock, noop, 1, 0)
    with pytest.raises(kcont.MutexError):
        kcont_setarg(kc, 2)
    with lock:
        assert kcont_setarg(kc, 2) == 0


def test_setfunc_returns_zero_ebusy_einval(rt: SimRuntime) -> None:
    """§13: kcont_setfunc returns 0, EBUSY (lock-less and PENDING/INVOKING) or EINVAL (destroyed)."""
    seen: list[Any] = []
    kc = kcont_create(kcont.wq_softnet, None, noop, None, 0)
    assert is_int(kcont_setfunc(kc, lambda a, k: seen.append(a), "x"), 0)
    kcont_schedule(kc, None, 2)
    assert is_int(kcont_setfunc(kc, noop, "y"), errno.EBUSY)
    kcont_stop(kc)
    kcont_schedule(kc, None, 0)
    assert is_int(kcont_setfunc(kc, noop, "y"), errno.EBUSY)
    rt.run_until_idle()
    assert seen == ["x"]
    kcont_destroy(kc)
    assert is_int(kcont_setfunc(kc, noop, "z"), errno.EINVAL)


def test_setmutex_returns_previous(rt: SimRuntime) -> None:
    """Seed: kcont_setmutex updates the lock and returns the previous one."""
    a, b = Mutex(), Mutex()
    kc = kcont_create(kcont.wq_softnet, a, noop, None, 0)
    with a:
        assert kcont_setmutex(kc, b) is a
    assert kcont_getmutex(kc) is b
    lockless = kcont_create(kcont.wq_softnet, None, noop, None, 0)
    assert kcont_setmutex(lockless, None) is None
    with pytest.raises(kcont.MutexError):
        kcont_setmutex(lockless, a)


# -- workqueues ----------------------------------------------------------------------------------


def test_workqueue_acquire_same_criteria_same_queue(rt: SimRuntime) -> None:
    """Seed: multiple requesters with the same criteria get the same workqueue."""
    a = kcont_workqueue_acquire(PRI_MEDLOW, 0)
    b = kcont_workqueue_acquire(PRI_MEDLOW, 0)
    c = kcont_workqueue_acquire(PRI_MEDLOW, WQ_PERCPU)
    assert a is b and a is not c
    assert a.runtime is rt and not a.percpu and c.percpu


def test_workqueue_release_returns_zero_ebusy_einval(rt: SimRuntime) -> None:
    """§13: kcont_workqueue_release returns 0, EBUSY (bound, nothing changes) or EINVAL."""
    wq = kcont_workqueue_acquire(100, 0)
    assert kcont_workqueue_acquire(100, 0) is wq  # a second acquisition
    assert is_int(kcont_workqueue_release(wq), 0)
    assert wq.acquired == 1 and not wq.freed
    kc = kcont_create(wq, None, noop, None, 0)
    assert is_int(kcont_workqueue_release(wq), errno.EBUSY)
    assert not wq.freed and wq.acquired == 1
    assert kcont_schedule(kc, None, 0) == 0
    kcont_destroy(kc)
    assert is_int(kcont_workqueue_release(wq), 0)
    assert wq.freed
    assert is_int(kcont_workqueue_release(wq), errno.EINVAL)


def test_workqueue_release_predefined_is_einval(rt: SimRuntime) -> None:
    """§12: releasing a predefined queue (handle or resolved queue) is EINVAL."""
    assert is_int(kcont_workqueue_release(kcont.wq_softnet), errno.EINVAL)
    assert is_int(kcont_workqueue_release(rt.predefined("wq_prilow")), errno.EINVAL)
    kc = kcont_create(kcont.wq_softnet, None, noop, None, 0)
    assert kcont_schedule(kc, rt.cpus[1], 0) == 0  # still usable


def test_destroy_twice_raises_in_capi(rt: SimRuntime) -> None:
    """§9: kcont_destroy twice raises DestroyedError (misuse)."""
    kc = kcont_create(kcont.wq_softnet, None, noop, None, 0)
    assert kcont_destroy(kc) is None
    with pytest.raises(kcont.DestroyedError):
        kcont_destroy(kc)

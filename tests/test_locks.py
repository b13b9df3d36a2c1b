"""kcont.Mutex and lock-aware continuations (seed: create/setarg/setmutex/setfunc;
docs/semantics.md §7 (stop with the lock held), §11)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import kcont
from kcont import Continuation, Mutex, MutexError, SimRuntime


def noop(arg: Any, kc: Continuation[Any]) -> None:
    pass


def in_thread(fn: Any) -> Any:
    """Run ``fn`` in another thread and return its result (or raise its exception)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join(10)
    assert not t.is_alive()
    if "error" in box:
        raise box["error"]
    return box["value"]


# -- Mutex -----------------------------------------------------------------------------------------


def test_mutex_tracks_its_owner() -> None:
    """Mutex: owned() is true only in the holder's thread; locked() in every thread."""
    m = Mutex("m")
    assert not m.locked() and not m.owned()
    assert m.acquire() is True
    assert m.owned() and m.locked()
    assert in_thread(m.owned) is False
    assert in_thread(m.locked) is True
    m.release()
    assert not m.locked() and not m.owned()


def test_mutex_is_not_recursive() -> None:
    """Mutex: acquiring it again from its holder raises MutexError instead of deadlocking."""
    m = Mutex()
    with m:
        with pytest.raises(MutexError, match="not recursive"):
            m.acquire()
        with pytest.raises(MutexError):
            m.acquire(blocking=False)
        assert m.owned()


def test_mutex_release_by_non_owner_raises() -> None:
    """Mutex: release by a thread that does not hold it raises MutexError; the lock stays held."""
    m = Mutex()
    with pytest.raises(MutexError, match="does not hold"):
        m.release()
    m.acquire()
    with pytest.raises(MutexError, match="does not hold"):
        in_thread(m.release)
    assert m.owned()
    m.release()


def test_mutex_try_acquire_from_other_thread_fails_while_held() -> None:
    """Mutex: a non-blocking acquire fails while another thread holds it."""
    m = Mutex()
    with m:
        assert in_thread(lambda: m.acquire(blocking=False)) is False
        assert in_thread(lambda: m.acquire(timeout=0.01)) is False
    assert in_thread(lambda: (m.acquire(blocking=False), m.release())[0]) is True


def test_mutex_context_manager_releases_on_exception() -> None:
    """Mutex: `with m:` acquires and releases, also when the body raises."""
    m = Mutex("ctx")
    with pytest.raises(ZeroDivisionError), m:
        assert m.owned()
        1 / 0  # noqa: B018
    assert not m.locked()
    assert "ctx" in repr(m) and "unlocked" in repr(m)


# -- the lock around func --------------------------------------------------------------------------


def test_lock_held_while_func_runs_and_released_after(driver: Any) -> None:
    """Seed: lock is locked before calling func(arg) and released afterwards."""
    lock = Mutex()
    seen: list[bool] = []
    kc = Continuation(kcont.wq_softnet, lambda a, k: seen.append(lock.owned()), lock=lock)
    kc.schedule()
    driver.settle()
    assert seen == [True]
    assert not lock.locked()


def test_lock_released_after_func_raises(rt: SimRuntime) -> None:
    """§14: the lock is released even when func raises."""
    lock = Mutex()

    def boom(arg: Any, kc: Continuation[Any]) -> None:
        raise RuntimeError("x")

    Continuation(kcont.wq_softnet, boom, lock=lock).schedule()
    with pytest.raises(RuntimeError):
        rt.run_until_idle()
    assert not lock.locked()


def test_func_releasing_its_lock_without_setmutex_is_reported(rt: SimRuntime) -> None:
    """Seed/§11: releasing the lock in func without setmutex is misuse: the dispatcher's release
    fails and the MutexError goes to the exception handler (re-raised here), after bookkeeping."""
    lock = Mutex()
    kc = Continuation(kcont.wq_softnet, lambda a, k: lock.release(), lock=lock)
    kc.schedule()
    with pytest.raises(MutexError):
        rt.run_until_idle()
    assert not lock.locked()
    assert kc.flags == "EXPIRED"
    assert rt.stats()["totals"]["exceptions"] == 1


# -- stop with the lock held (FreeBSD guarantee) ---------------------------------------------------


def test_stop_with_lock_held_prevents_start_of_parked_entry(rt: SimRuntime) -> None:
    """§7: with the kc's lock held, an entry parked on it is removed by stop and never starts."""
    ran: list[int] = []
    lock = Mutex()
    kc = Continuation(kcont.wq_softnet, lambda a, k: ran.append(1), lock=lock)
    with lock:
        kc.schedule()
        rt.run_until_idle()
        assert kc.queued
        assert kc.stop() is False
        assert kc.flags == "IDLE"
    rt.advance(2)
    assert ran == []


def test_stop_with_lock_held_prevents_start_of_expired_timer(rt: SimRuntime) -> None:
    """§7: an expired timer not yet started is stopped for good while its lock is held."""
    ran: list[int] = []
    lock = Mutex()
    kc = Continuation(kcont.wq_softnet, lambda a, k: ran.append(1), lock=lock)
    kc.schedule(1)
    with lock:
        rt.advance(1)
        assert kc.stop() is False
    rt.advance(2)
    assert ran == []
    assert rt.stats()["queues"]["wq_softnet"]["stopped"] == 1


def test_stop_with_lock_held_prevents_start(driver: Any) -> None:
    """§7: if the caller holds the kc's lock, no invocation starts after stop returns."""
    ran: list[int] = []
    lock = Mutex()
    kc = Continuation(kcont.wq_softnet, lambda a, k: ran.append(1), lock=lock)
    with lock:
        kc.schedule(0, cpu=driver.cpus[1])
        assert kc.stop() is False
    driver.settle()
    assert ran == []
    assert not kc.active


# -- setarg / setfunc under the lock ---------------------------------------------------------------


def test_setarg_under_lock_picked_up_by_parked_entry(rt: SimRuntime) -> None:
    """§11: func/arg are read after the lock is taken, so a setarg made under the lock is honoured."""
    seen: list[Any] = []
    lock = Mutex()
    kc = Continuation(kcont.wq_softnet, lambda a, k: seen.append(a), "old", lock=lock)
    with lock:
        kc.schedule()
        rt.run_until_idle()
        kc.set_arg("new")
    rt.run_until_idle()
    assert seen == ["new"]


def test_setfunc_under_lock_picked_up_by_parked_entry(rt: SimRuntime) -> None:
    """§11: a setfunc made under the lock while the entry waited replaces the function called."""
    seen: list[Any] = []
    lock = Mutex()
    kc = Continuation(kcont.wq_softnet, lambda a, k: seen.append(("old", a)), 1, lock=lock)
    with lock:
        kc.schedule()
        rt.run_until_idle()
        kc.set_func(lambda a, k: seen.append(("new", a)), 2)
    rt.run_until_idle()
    assert seen == [("new", 2)]


def test_setarg_inside_func_allowed_with_lock_held_by_dispatcher(rt: SimRuntime) -> None:
    """Seed: inside func the dispatcher holds the lock for it, so setarg is allowed there."""
    lock = Mutex()
    seen: list[Any] = []

    def func(arg: int, kc: Continuation[Any]) -> None:
        seen.append(arg)
        kc.set_arg(arg + 1)

    kc = Continuation(kcont.wq_softnet, func, 1, lock=lock)
    for _ in range(3):
        kc.schedule()
        rt.run_until_idle()
    assert seen == [1, 2, 3]


# -- setmutex --------------------------------------------------------------------------------------


def test_setmutex_returns_previous_and_persists(rt: SimRuntime) -> None:
    """Seed/§11: setmutex replaces the association for good and returns the previous lock."""
    a, b = Mutex("a"), Mutex("b")
    seen: list[tuple[bool, bool]] = []
    kc = Continuation(kcont.wq_softnet, lambda x, k: seen.append((a.locked(), b.owned())), lock=a)
    with a:
        assert kc.set_mutex(b) is a
    assert kc.mutex is b
    kc.schedule()
    rt.run_until_idle()
    assert seen == [(False, True)]
    assert not b.locked()


def test_setmutex_without_holding_current_lock_raises(rt: SimRuntime) -> None:
    """Seed: setmutex must be called only when the existing lock is locked (by the caller)."""
    a, b = Mutex(), Mutex()
    kc = Continuation(kcont.wq_softnet, noop, lock=a)
    with pytest.raises(MutexError, match="must hold"):
        kc.set_mutex(b)
    with b, pytest.raises(MutexError):
        kc.set_mutex(b)
    a.acquire()
    with pytest.raises(MutexError):
        in_thread(lambda: kc.set_mutex(b))  # held, but by another thread
    a.release()
    assert kc.mutex is a


def test_setmutex_on_lockless_kc_with_a_lock_raises(rt: SimRuntime) -> None:
    """Seed: setting a lock on a continuation without one is the seed's assertion failure."""
    kc = Continuation(kcont.wq_softnet, noop)
    m = Mutex()
    with m, pytest.raises(MutexError, match="without a lock"):
        kc.set_mutex(m)
    assert kc.mutex is None
    assert kc.set_mutex(None) is None


def test_setmutex_none_makes_kc_lockless_for_good(rt: SimRuntime) -> None:
    """§11: a locked continuation may become lock-less; it can then never regain a lock."""
    a = Mutex()
    seen: list[bool] = []
    kc = Continuation(kcont.wq_softnet, lambda x, k: seen.append(a.locked()), lock=a)
    with a:
        assert kc.set_mutex(None) is a
    with a:
        with pytest.raises(MutexError):
            kc.set_mutex(a)
        kc.schedule()
        rt.run_until_idle()  # runs although `a` is held: no lock any more
    assert seen == [True]


def test_setmutex_rejects_non_mutex(rt: SimRuntime) -> None:
    """§11: a lock that is not a kcont.Mutex is a TypeError."""
    a = Mutex()
    kc = Continuation(kcont.wq_softnet, noop, lock=a)
    with a, pytest.raises(TypeError, match="Mutex"):
        kc.set_mutex(threading.Lock())  # type: ignore[arg-type]
    assert kc.mutex is a


def test_setmutex_handover_inside_func(rt: SimRuntime) -> None:
    """Seed: after setmutex in func, func releases the old lock and holds the new one on return;
    the dispatcher then releases the new lock."""
    a, b = Mutex("a"), Mutex("b")
    seen: list[Any] = []

    def func(arg: Any, kc: Continuation[Any]) -> None:
        seen.append(("held", kc.mutex is a and a.owned()))
        assert kc.set_mutex(b) is a
        a.release()
        b.acquire()

    kc = Continuation(kcont.wq_softnet, func, lock=a)
    kc.schedule()
    rt.run_until_idle()
    assert seen == [("held", True)]
    assert not a.locked() and not b.locked()
    assert kc.mutex is b
    with b:  # setfunc on a locked kc needs its (new) lock
        kc.set_func(lambda x, k: seen.append(("second", b.owned(), a.locked())), None)
    kc.schedule()
    rt.run_until_idle()
    assert seen[-1] == ("second", True, False)


def test_setmutex_to_none_inside_func(rt: SimRuntime) -> None:
    """Seed: func may replace its lock by NULL; it releases the old one and the dispatcher releases none."""
    a = Mutex()

    def func(arg: Any, kc: Continuation[Any]) -> None:
        kc.set_mutex(None)
        a.release()

    kc = Continuation(kcont.wq_softnet, func, lock=a)
    kc.schedule()
    rt.run_until_idle()  # no MutexError from a double release
    assert not a.locked()
    assert kc.mutex is None


def test_setmutex_moves_queued_kc_behind_ready_entries_of_new_key(rt: SimRuntime) -> None:
    """§11: a queued continuation that gets a new lock moves behind the entries already ready."""
    log: list[str] = []
    a, b = Mutex("a"), Mutex("b")
    mover = Continuation(kcont.wq_softnet, lambda x, k: log.append("mover"), lock=a)
    b1 = Continuation(kcont.wq_softnet, lambda x, k: log.append("b1"), lock=b)
    b2 = Continuation(kcont.wq_softnet, lambda x, k: log.append("b2"), lock=b)
    mover.schedule()
    b1.schedule()
    b2.schedule()
    with a:
        mover.set_mutex(b)
    rt.run_until_idle()
    assert log == ["b1", "b2", "mover"]
    assert rt.stats()["queues"]["wq_softnet"]["scheduled"] == 3  # a move is not a scheduling


def test_setmutex_moves_parked_kc_out_of_old_subqueue(rt: SimRuntime) -> None:
    """§11: an entry parked on its old lock runs under its new lock while the old one stays held."""
    log: list[Any] = []
    a, b = Mutex("a"), Mutex("b")
    kc = Continuation(kcont.wq_softnet, lambda x, k: log.append(("ran", b.owned())), lock=a)
    stays = Continuation(kcont.wq_softnet, lambda x, k: log.append("stays"), lock=a)
    with a:
        kc.schedule()
        stays.schedule()
        rt.run_until_idle()
        assert log == []
        kc.set_mutex(b)
        rt.run_until_idle()
        assert log == [("ran", True)]
    rt.run_until_idle()
    assert log == [("ran", True), "stays"]


def test_getmutex_via_capi(rt: SimRuntime) -> None:
    """Seed: kcont_getmutex returns the lock currently associated."""
    a = Mutex()
    kc = kcont.kcont_create(kcont.wq_softnet, a, noop, None, 0)
    assert kcont.kcont_getmutex(kc) is a
    with a:
        assert kcont.kcont_setmutex(kc, None) is a
    assert kcont.kcont_getmutex(kc) is None

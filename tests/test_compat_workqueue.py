"""workqueue(9) rebuilt on kcont (:mod:`kcont.compat.workqueue`).

Each test quotes the sentence of NetBSD's workqueue.9 (rev 1.12, 2017) it
checks or, where the manual is silent, the comment of
``sys/kern/subr_workqueue.c`` whose behaviour it reproduces.  Tests taking
``driver`` run on every runtime; on real threads, work is held back where an
order matters by a first callback that waits on an event (which the simulated
runtime never needs: nothing runs there until it is stepped).
"""

from __future__ import annotations

import errno
import threading
from typing import Any

import pytest

import kcont
from kcont.compat import KassertError
from kcont.compat.workqueue import (
    IPL_NONE,
    PRI_NONE,
    WQ_MPSAFE,
    WQ_PERCPU,
    Work,
    Workqueue,
    workqueue_create,
    workqueue_destroy,
    workqueue_enqueue,
    workqueue_wait,
)


class Item(Work):
    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"Item({self.n})"


def test_callback_gets_each_work_and_the_queue_argument(driver: Any) -> None:
    """workqueue.9: func is "The function to be called for each work."; arg is
    "An argument to be passed as a second argument of func." """
    calls: list[tuple[int, object]] = []
    wq = workqueue_create(
        "test", lambda wk, arg: calls.append((wk.n, arg)), "sc", kcont.PRI_MEDLOW, IPL_NONE, 0
    )
    assert isinstance(wq, Workqueue)
    for n in range(3):
        workqueue_enqueue(wq, Item(n), None)
    driver.settle()
    assert sorted(calls) == [(0, "sc"), (1, "sc"), (2, "sc")]
    workqueue_destroy(wq)


def test_work_is_processed_in_order_one_at_a_time(driver: Any) -> None:
    """workqueue.9: "The enqueued work will be processed in a thread context."
    subr_workqueue.c: one worker per queue runs the pending list in order, so
    callbacks of one queue never overlap and keep enqueue order."""
    order: list[int] = []
    inside: list[int] = []
    overlaps: list[int] = []

    def callback(wk: Item, arg: object) -> None:
        inside.append(wk.n)
        if len(inside) > 1:
            overlaps.append(wk.n)
        order.append(wk.n)
        inside.pop()

    wq = workqueue_create("fifo", callback, None, kcont.PRI_MEDHIGH, IPL_NONE, WQ_MPSAFE)
    for n in range(20):
        workqueue_enqueue(wq, Item(n), None)
    driver.settle()
    assert order == list(range(20)) and overlaps == []
    workqueue_destroy(wq)


def test_priority_is_the_kcont_queue_priority(rt: kcont.SimRuntime) -> None:
    """workqueue.9: prio is "The priority level for the worker threads.": work of
    a higher-priority workqueue runs first on a CPU; PRI_NONE (a timeshared
    thread) maps to kcont.PRI_LOW."""
    order: list[str] = []
    low = workqueue_create("low", lambda wk, arg: order.append("low"), None, PRI_NONE, IPL_NONE, WQ_PERCPU)
    high = workqueue_create(
        "high", lambda wk, arg: order.append("high"), None, kcont.PRI_HIGH, IPL_NONE, WQ_PERCPU
    )
    assert low.kcont_queue.pri == kcont.PRI_LOW and high.kcont_queue.pri == kcont.PRI_HIGH
    workqueue_enqueue(low, Work(), rt.cpus[0])
    workqueue_enqueue(high, Work(), rt.cpus[0])
    rt.run_until_idle()
    assert order == ["high", "low"]


def test_percpu_work_runs_on_the_given_cpu(driver: Any) -> None:
    """workqueue.9: "If the WQ_PERCPU flag was set on workqueue creation, the ci
    argument may be used to specify the CPU on which the work should be
    enqueued." """
    where: list[tuple[int, int]] = []
    wq = workqueue_create(
        "pcpu",
        lambda wk, arg: where.append((wk.n, kcont.curcpu().index)),
        None,
        kcont.PRI_MEDLOW,
        0,
        WQ_PERCPU,
    )
    assert wq.percpu and len(wq.continuations) == len(driver.cpus)
    workqueue_enqueue(wq, Item(0), driver.cpus[1])
    workqueue_enqueue(wq, Item(1), driver.cpus[0])
    driver.settle()
    assert sorted(where) == [(0, 1), (1, 0)]
    workqueue_destroy(wq)


def test_percpu_null_ci_means_current_cpu(driver: Any) -> None:
    """workqueue.9: "Also it may be NULL, then work will be enqueued on the
    current CPU." """
    where: list[int] = []
    wq = workqueue_create("cur", lambda wk, arg: where.append(kcont.curcpu().index), None, 79, 0, WQ_PERCPU)
    with kcont.bind_cpu(driver.cpus[1]):
        workqueue_enqueue(wq, Work(), None)
    driver.settle()
    assert where == [1]
    workqueue_destroy(wq)


def test_ci_must_be_null_without_percpu(driver: Any) -> None:
    """workqueue.9: "If WQ_PERCPU flag was not set, ci must be NULL." """
    calls: list[object] = []
    wq = workqueue_create("shared", lambda wk, arg: calls.append(wk), None, kcont.PRI_MEDLOW, 0, 0)
    wk = Work()
    with pytest.raises(KassertError, match="ci must be None"):
        workqueue_enqueue(wq, wk, driver.cpus[0])
    driver.settle()
    assert calls == []
    workqueue_destroy(wq)


def test_work_must_not_be_enqueued_again_before_its_callback(driver: Any) -> None:
    """workqueue.9: "A work must not be enqueued again until the callback is
    called by the workqueue framework." (refused; once the callback is called,
    even from the callback itself, it may be enqueued again)"""
    calls: list[int] = []
    holder: list[Workqueue] = []
    wk = Item(7)
    gate = threading.Event()

    def callback(w: Item, arg: object) -> None:
        if not driver.exact_time and not calls:
            gate.wait(10)  # real threads: keep the second enqueue below pending
        calls.append(w.n)
        if len(calls) == 1:
            workqueue_enqueue(holder[0], w, None)  # allowed: the callback was called

    wq = workqueue_create("again", callback, None, kcont.PRI_MEDLOW, 0, 0)
    holder.append(wq)
    blocker = Item(0)
    workqueue_enqueue(wq, blocker, None)
    workqueue_enqueue(wq, wk, None)
    with pytest.raises(KassertError, match="enqueued again"):
        workqueue_enqueue(wq, wk, None)
    gate.set()
    driver.settle()
    assert calls == [0, 7, 0]  # the blocker re-enqueued itself once, from its callback
    workqueue_destroy(wq)


def test_wait_returns_once_the_work_has_finished(driver: Any) -> None:
    """workqueue.9: "workqueue_wait waits for a specified work wk on the workqueue
    wq to finish." (on the simulated runtime, waiting runs the simulation)"""
    calls: list[int] = []
    wq = workqueue_create("wait", lambda wk, arg: calls.append(wk.n), None, kcont.PRI_MEDLOW, 0, WQ_PERCPU)
    first, second = Item(1), Item(2)
    workqueue_enqueue(wq, first, driver.cpus[0])
    workqueue_enqueue(wq, second, driver.cpus[0])
    workqueue_wait(wq, second)
    assert calls == [1, 2]
    workqueue_wait(wq, Item(3))  # never enqueued: nothing to wait for
    workqueue_destroy(wq)


def test_wait_waits_for_a_running_callback(driver: Any) -> None:
    """workqueue.9: "workqueue_wait waits for a specified work wk on the workqueue
    wq to finish." (the work has started and is still running)"""
    if driver.exact_time:
        pytest.skip("real threads only: on the simulated runtime no callback runs while another caller waits")
    started, release = threading.Event(), threading.Event()
    finished: list[bool] = []

    def slow(wk: Work, arg: object) -> None:
        started.set()
        release.wait(10)
        finished.append(True)

    wq = workqueue_create("slow", slow, None, kcont.PRI_MEDLOW, 0, 0)
    wk = Work()
    workqueue_enqueue(wq, wk, None)
    assert started.wait(10)
    observed: list[bool] = []

    def waiter() -> None:
        workqueue_wait(wq, wk)
        observed.append(bool(finished))

    thread = threading.Thread(target=waiter)
    thread.start()
    release.set()
    thread.join(10)
    assert observed == [True]
    workqueue_destroy(wq)


def test_wait_from_own_callback_returns_at_once(driver: Any) -> None:
    """subr_workqueue.c ``workqueue_q_wait``: "Avoid a deadlock scenario. We can't
    guarantee that wk_target has completed at this point, but we can't wait for
    it either, so do nothing." """
    returned: list[int] = []
    holder: list[Workqueue] = []
    other = Item(2)

    def callback(wk: Item, arg: object) -> None:
        if wk.n == 1:
            workqueue_wait(holder[0], wk)  # itself, running
            workqueue_wait(holder[0], other)  # enqueued behind it
            returned.append(wk.n)

    wq = workqueue_create("self", callback, None, kcont.PRI_MEDLOW, 0, 0)
    holder.append(wq)
    workqueue_enqueue(wq, Item(1), None)
    workqueue_enqueue(wq, other, None)
    driver.settle()
    assert returned == [1]
    workqueue_destroy(wq)


def test_destroy_with_work_enqueued_is_refused(driver: Any) -> None:
    """workqueue.9: "The caller should ensure that the workqueue has no work
    enqueued beforehand." (subr_workqueue.c asserts it: refused, nothing
    changed)"""
    gate = threading.Event()
    calls: list[int] = []

    def callback(wk: Item, arg: object) -> None:
        if not driver.exact_time and wk.n == 0:
            gate.wait(10)  # real threads: keep Item(1) enqueued
        calls.append(wk.n)

    wq = workqueue_create("busy", callback, None, kcont.PRI_MEDLOW, 0, 0)
    workqueue_enqueue(wq, Item(0), None)
    workqueue_enqueue(wq, Item(1), None)
    with pytest.raises(KassertError, match="no work enqueued"):
        workqueue_destroy(wq)
    gate.set()
    driver.settle()
    assert calls == [0, 1]
    workqueue_destroy(wq)
    with pytest.raises(KassertError, match="destroyed"):
        workqueue_enqueue(wq, Item(2), None)


def test_destroy_frees_associated_resources(rt: kcont.SimRuntime) -> None:
    """workqueue.9: "workqueue_destroy destroys a workqueue and frees associated
    resources.": its worker continuations are destroyed and the kcont queue it
    acquired is released (freed on the last release)."""
    before = rt.workqueues
    wq = workqueue_create("res", lambda wk, arg: None, None, 100, 0, WQ_PERCPU)
    kq = wq.kcont_queue
    assert kq in rt.workqueues
    workqueue_enqueue(wq, Work(), rt.cpus[1])
    rt.run_until_idle()
    workqueue_destroy(wq)
    assert all(kc.destroyed for kc in wq.continuations)
    assert rt.workqueues == before and kq.freed
    with pytest.raises(KassertError, match="already destroyed"):
        workqueue_destroy(wq)


def test_two_workqueues_share_a_kcont_queue_but_not_their_work(rt: kcont.SimRuntime) -> None:
    """workqueue.9: "func: The function to be called for each work." is per
    workqueue: two workqueues at one priority share one acquired kcont queue,
    each keeps its own callback, and destroying one leaves the other working."""
    calls: list[tuple[str, int]] = []
    a = workqueue_create("a", lambda wk, arg: calls.append(("a", wk.n)), None, 90, 0, 0)
    b = workqueue_create("b", lambda wk, arg: calls.append(("b", wk.n)), None, 90, 0, 0)
    assert a.kcont_queue is b.kcont_queue
    workqueue_enqueue(a, Item(1), None)
    workqueue_enqueue(b, Item(2), None)
    rt.run_until_idle()
    workqueue_destroy(a)
    workqueue_enqueue(b, Item(3), None)
    rt.run_until_idle()
    assert calls == [("a", 1), ("b", 2), ("b", 3)]
    workqueue_destroy(b)
    assert b.kcont_queue.freed


def test_callback_exception_does_not_lose_later_work(rt: kcont.SimRuntime) -> None:
    """workqueue.9: "The enqueued work will be processed": a callback that raises
    (reported by kcont) does not drop the work queued behind it."""
    calls: list[int] = []

    def callback(wk: Item, arg: object) -> None:
        calls.append(wk.n)
        if wk.n == 0:
            raise ValueError("boom")

    wq = workqueue_create("raise", callback, None, kcont.PRI_MEDLOW, 0, 0)
    workqueue_enqueue(wq, Item(0), None)
    workqueue_enqueue(wq, Item(1), None)
    with pytest.raises(ValueError, match="boom"):
        rt.run_until_idle()
    rt.run_until_idle()
    assert calls == [0, 1]
    workqueue_destroy(wq)


def test_create_arguments(rt: kcont.SimRuntime) -> None:
    """workqueue.9: "workqueue_create returns 0 on success. Otherwise, it returns
    an errno." (Python returns the workqueue and raises an exception carrying
    that errno); WQ_MPSAFE and WQ_PERCPU are the documented flags."""
    wq = workqueue_create("ok", lambda wk, arg: None, None, kcont.PRI_MEDLOW, IPL_NONE, WQ_MPSAFE | WQ_PERCPU)
    assert wq.flags == WQ_MPSAFE | WQ_PERCPU and wq.percpu
    workqueue_destroy(wq)
    with pytest.raises(kcont.InvalidArgumentError) as bad_flags:
        workqueue_create("bad", lambda wk, arg: None, None, kcont.PRI_MEDLOW, IPL_NONE, 0x80)
    assert bad_flags.value.errno == errno.EINVAL
    with pytest.raises(kcont.InvalidArgumentError):
        workqueue_create("bad", lambda wk, arg: None, None, kcont.MAXPRI + 1, IPL_NONE, 0)
    with pytest.raises(TypeError):
        workqueue_create("bad", None, None, kcont.PRI_MEDLOW, IPL_NONE, 0)  # type: ignore[arg-type]


# -- workqueue_wait with kcont's flush() -------------------------------------------


def test_wait_waits_for_a_work_enqueued_behind_a_running_one(driver: Any) -> None:
    """workqueue.9: "workqueue_wait waits for a specified work wk on the workqueue
    wq to finish." (``wk`` has not started: it is behind a running callback,
    and the wait lasts until its own callback has returned)"""
    if driver.exact_time:
        pytest.skip("real threads only: on the simulated runtime no callback runs while another caller waits")
    started, release = threading.Event(), threading.Event()
    done: list[int] = []

    def callback(wk: Item, arg: object) -> None:
        if wk.n == 0:
            started.set()
            release.wait(10)
        done.append(wk.n)

    wq = workqueue_create("behind", callback, None, kcont.PRI_MEDLOW, 0, 0)
    target = Item(1)
    workqueue_enqueue(wq, Item(0), None)
    workqueue_enqueue(wq, target, None)
    assert started.wait(10)
    observed: list[list[int]] = []

    def waiter() -> None:
        workqueue_wait(wq, target)
        observed.append(list(done))

    thread = threading.Thread(target=waiter)
    thread.start()
    release.set()
    thread.join(10)
    assert observed == [[0, 1]]
    workqueue_destroy(wq)


def test_wait_from_a_callback_waits_for_another_cpus_queue(driver: Any) -> None:
    """subr_workqueue.c ``workqueue_q_wait`` skips only the caller's own queue
    (``if (q->q_worker == curlwp) goto out``): from a callback on CPU 0, a work
    on CPU 1's queue is waited for."""
    if driver.exact_time:
        pytest.skip("real threads only: on the simulated runtime a callback cannot wait for another")
    started, release = threading.Event(), threading.Event()
    done: list[int] = []
    observed: list[list[int]] = []
    holder: list[Workqueue] = []
    slow = Item(1)

    def callback(wk: Item, arg: object) -> None:
        if wk is slow:
            started.set()
            release.wait(10)
        else:
            timer = threading.Timer(0.05, release.set)  # slow ends while this callback waits
            timer.start()
            workqueue_wait(holder[0], slow)
            observed.append(list(done))
            timer.join()
        done.append(wk.n)

    wq = workqueue_create("pcpu-wait", callback, None, kcont.PRI_MEDLOW, 0, WQ_PERCPU)
    holder.append(wq)
    workqueue_enqueue(wq, slow, driver.cpus[1])
    assert started.wait(10)
    workqueue_enqueue(wq, Item(0), driver.cpus[0])
    driver.settle()
    assert observed == [[1]]
    workqueue_destroy(wq)


def test_wait_from_a_callback_for_another_queue_cannot_wait_on_the_simulator(
    rt: kcont.SimRuntime,
) -> None:
    """subr_workqueue.c ``workqueue_q_wait`` waits for a work on another queue
    even from a callback; on the simulated runtime a continuation cannot wait
    for another one, so kcont's ``flush()`` raises ``SimDeadlockError`` (the
    layer no longer returns at once, pretending the work had finished)."""
    errors: list[BaseException] = []
    done: list[int] = []
    holder: list[Workqueue] = []
    other = Item(1)

    def callback(wk: Item, arg: object) -> None:
        if wk.n == 0:
            try:
                workqueue_wait(holder[0], other)
            except kcont.SimDeadlockError as exc:
                errors.append(exc)
        done.append(wk.n)

    wq = workqueue_create("pcpu-sim", callback, None, kcont.PRI_MEDLOW, 0, WQ_PERCPU)
    holder.append(wq)
    workqueue_enqueue(wq, other, rt.cpus[1])
    workqueue_enqueue(wq, Item(0), rt.cpus[0])
    assert rt.step(rt.cpus[0]) is not None
    assert len(errors) == 1 and done == [0]
    workqueue_wait(wq, other)  # from the test thread: the simulation is stepped
    assert done == [0, 1]
    workqueue_destroy(wq)


def test_wait_on_the_simulator_steps_until_the_work_has_run(rt: kcont.SimRuntime) -> None:
    """workqueue.9: "workqueue_wait waits for a specified work wk on the workqueue
    wq to finish.": on the simulated runtime, waiting is running the
    simulation (kcont's ``flush()`` of the work's queue), on whichever CPU."""
    done: list[tuple[int, int]] = []
    wq = workqueue_create(
        "sim", lambda wk, arg: done.append((wk.n, kcont.curcpu().index)), None, 90, 0, WQ_PERCPU
    )
    target = Item(1)
    with kcont.bind_cpu(rt.cpus[0]):
        workqueue_enqueue(wq, target, rt.cpus[1])
        workqueue_wait(wq, target)
    assert done == [(1, 1)]
    assert not any(kc.queued or kc.running for kc in wq.continuations)
    workqueue_destroy(wq)


def test_an_enqueue_refused_by_a_shut_down_runtime_leaves_nothing_recorded() -> None:
    """kcont's own rule (the manual is silent): an enqueue that raises was not
    made.  The work is not left recorded as enqueued, where it could neither
    run nor be enqueued again, and the queue can still be destroyed."""
    rt = kcont.SimRuntime(ncpu=1)
    with rt:
        wq = workqueue_create("w", lambda wk, arg: None, None, PRI_NONE, IPL_NONE, 0)
        rt.shutdown()
        wk = Item(1)
        for _ in range(2):  # the second attempt is refused the same way, not as "already enqueued"
            with pytest.raises(kcont.ShutdownError):
                workqueue_enqueue(wq, wk)
        workqueue_destroy(wq)


@pytest.mark.timeout(30)
def test_the_already_enqueued_message_is_built_outside_the_queue_lock(rt: kcont.SimRuntime) -> None:
    """A work's ``__repr__`` is user code: it may use the layer (here, enqueue
    another work on the same queue) without deadlocking the KASSERT message."""
    wq = workqueue_create("w", lambda wk, arg: None, None, PRI_NONE, IPL_NONE, 0)
    other = Item(2)

    class Chatty(Work):
        def __repr__(self) -> str:
            workqueue_enqueue(wq, other)
            return "Chatty()"

    chatty = Chatty()
    workqueue_enqueue(wq, chatty)
    with pytest.raises(KassertError, match=r"Chatty\(\) is already enqueued"):
        workqueue_enqueue(wq, chatty)
    assert rt.run_until_idle() >= 1

"""softint(9) rebuilt on kcont (:mod:`kcont.compat.softint`).

Each test quotes the sentence it checks: from NetBSD's softint.9 where the
manual says it, otherwise from the comments of ``sys/kern/kern_softint.c``
(rev 1.41 and later), which document the per-CPU rule, coalescing and
disestablish.  Tests taking ``driver`` run on every runtime; to make an order
deterministic on real threads they trigger from inside a softint handler, so
that the CPU's soft-level worker is busy and the triggers queue up.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import kcont
from kcont.compat import KassertError
from kcont.compat.softint import (
    SOFTINT_BIO,
    SOFTINT_CLOCK,
    SOFTINT_MPSAFE,
    SOFTINT_NET,
    SOFTINT_RCPU,
    SOFTINT_SERIAL,
    Softint,
    softint_disestablish,
    softint_establish,
    softint_schedule,
    softint_schedule_cpu,
)


def test_handler_is_called_with_its_argument(driver: Any) -> None:
    """softint.9: ``softint_establish(u_int flags, void (*func)(void *), void
    *arg)``: "softint_schedule ... Trigger a software interrupt" calls
    ``func(arg)``."""
    calls: list[object] = []
    sh = softint_establish(SOFTINT_NET | SOFTINT_MPSAFE, calls.append, "sc")
    assert isinstance(sh, Softint)
    softint_schedule(sh)
    driver.settle()
    assert calls == ["sc"]


def test_trigger_while_pending_coalesces(driver: Any) -> None:
    """kern_softint.c ``softint_schedule``: "If it's already pending there's
    nothing to do.": triggered twice before it runs, the handler runs once."""
    calls: list[object] = []
    sh = softint_establish(SOFTINT_NET, calls.append, "net")

    def trigger_twice(arg: object) -> None:  # the soft worker of this CPU is busy here
        softint_schedule(sh)
        softint_schedule(sh)

    irq = softint_establish(SOFTINT_SERIAL, trigger_twice, None)
    softint_schedule(irq)
    driver.settle()
    assert calls == ["net"]
    assert sh.continuations[0].runtime.stats()["queues"]["wq_softnet"]["ebusy"] == 1


def test_trigger_while_running_runs_it_again(driver: Any) -> None:
    """kern_softint.c ``softint_execute`` clears SOFTINT_PENDING before it calls
    the handler (``sh->sh_flags ^= (SOFTINT_PENDING | SOFTINT_ACTIVE)``): a
    trigger while the handler runs is not lost, the handler runs again."""
    calls: list[int] = []
    holder: list[Softint] = []

    def handler(arg: object) -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            softint_schedule(holder[0])

    holder.append(softint_establish(SOFTINT_BIO, handler, None))
    softint_schedule(holder[0])
    driver.settle()
    assert calls == [0, 1]


def test_dispatched_only_on_the_triggering_cpu(driver: Any) -> None:
    """kern_softint.c: "If a soft interrupt is triggered on a CPU, it can only be
    dispatched on the same CPU." """
    where: list[int] = []
    sh = softint_establish(SOFTINT_CLOCK, lambda arg: where.append(kcont.curcpu().index), None)
    for cpu in (driver.cpus[1], driver.cpus[0], driver.cpus[1]):
        with kcont.bind_cpu(cpu):
            softint_schedule(sh)
        driver.settle()
    assert where == [1, 0, 1]


def test_pending_on_several_cpus_at_once(driver: Any) -> None:
    """kern_softint.c ``softint_establish``: "Set up the handler on each CPU.":
    one softint is pending on each CPU it was triggered on, and runs once on
    each (no coalescing across CPUs)."""
    where: list[int] = []
    sh = softint_establish(SOFTINT_NET | SOFTINT_RCPU, lambda arg: where.append(kcont.curcpu().index), None)

    def trigger_both(arg: object) -> None:
        for cpu in driver.cpus:
            softint_schedule_cpu(sh, cpu)

    with kcont.bind_cpu(driver.cpus[0]):
        hold = softint_establish(SOFTINT_SERIAL, trigger_both, None)
        softint_schedule(hold)
    driver.settle()
    assert sorted(where) == [0, 1]


def test_levels_run_in_priority_order(driver: Any) -> None:
    """softint.9: "Four priority levels are provided. In order of priority
    (lowest to highest) the levels are: clock, bio, net, serial." """
    order: list[str] = []
    handlers = {
        name: softint_establish(level, order.append, name)
        for name, level in (
            ("clock", SOFTINT_CLOCK),
            ("bio", SOFTINT_BIO),
            ("net", SOFTINT_NET),
            ("serial", SOFTINT_SERIAL),
        )
    }

    def trigger_all(arg: object) -> None:  # one CPU, its soft worker busy: all four pend
        for name in ("clock", "bio", "net", "serial"):
            softint_schedule(handlers[name])

    with kcont.bind_cpu(driver.cpus[0]):
        softint_schedule(softint_establish(SOFTINT_SERIAL, trigger_all, None))
    driver.settle()
    assert order == ["serial", "net", "bio", "clock"]


def test_levels_map_to_the_predefined_soft_queues(rt: kcont.SimRuntime) -> None:
    """softint.9: "The four priority levels map directly to scheduler priority
    levels": kcont's ``wq_soft*`` queues, at NetBSD's ``PRI_SOFT*``."""
    expected = {
        SOFTINT_CLOCK: ("wq_softclock", kcont.PRI_SOFTCLOCK),
        SOFTINT_BIO: ("wq_softbio", kcont.PRI_SOFTBIO),
        SOFTINT_NET: ("wq_softnet", kcont.PRI_SOFTNET),
        SOFTINT_SERIAL: ("wq_softserial", kcont.PRI_SOFTSERIAL),
    }
    for level, (name, pri) in expected.items():
        sh = softint_establish(level, lambda arg: None, None)
        assert sh.level == level
        assert len(sh.continuations) == len(rt.cpus)
        assert {(kc.wq.name, kc.wq.pri) for kc in sh.continuations} == {(name, pri)}


def test_same_level_runs_in_trigger_order(driver: Any) -> None:
    """kern_softint.c ``softint_execute``: "Pick the longest waiting handler to
    run." """
    order: list[int] = []
    handlers = [softint_establish(SOFTINT_NET, order.append, i) for i in range(4)]

    def trigger(arg: object) -> None:
        for i in (2, 0, 3, 1):
            softint_schedule(handlers[i])

    softint_schedule(softint_establish(SOFTINT_SERIAL, trigger, None))
    driver.settle()
    assert order == [2, 0, 3, 1]


def test_schedule_cpu_remote_needs_rcpu(driver: Any) -> None:
    """kern_softint.c ``softint_schedule_cpu``: "Trigger a software interrupt on a
    target CPU." and, for a remote CPU, ``KASSERT((sh->sh_flags & SOFTINT_RCPU)
    != 0)``."""
    where: list[int] = []
    local_only = softint_establish(SOFTINT_NET, lambda arg: where.append(kcont.curcpu().index), None)
    remote = softint_establish(
        SOFTINT_NET | SOFTINT_RCPU, lambda arg: where.append(kcont.curcpu().index), None
    )
    with kcont.bind_cpu(driver.cpus[0]):
        with pytest.raises(KassertError, match="SOFTINT_RCPU"):
            softint_schedule_cpu(local_only, driver.cpus[1])
        softint_schedule_cpu(local_only, driver.cpus[0])  # the caller's own CPU: fine
        driver.settle()
        softint_schedule_cpu(remote, driver.cpus[1])
        driver.settle()
    assert where == [0, 1]


def test_disestablish_runs_pending_trigger_first(driver: Any) -> None:
    """kern_softint.c ``softint_disestablish`` (NetBSD >= 9): "Run a dummy softint
    at the same level on all CPUs and wait for completion, to make sure this
    softint is no longer running anywhere.": the dummy runs behind a trigger
    already pending, so that trigger is handled before disestablish returns."""
    calls: list[object] = []
    sh = softint_establish(SOFTINT_BIO, calls.append, "last")
    with kcont.bind_cpu(driver.cpus[1]):
        softint_schedule(sh)
    softint_disestablish(sh)
    assert calls == ["last"]
    assert all(kc.destroyed for kc in sh.continuations)


def test_no_trigger_after_disestablish(driver: Any) -> None:
    """kern_softint.c: "The soft interrupt could still be active at this point,
    but the caller commits not to try and trigger it again once this call is
    made." (a trigger afterwards is refused, not silently dropped)"""
    sh = softint_establish(SOFTINT_CLOCK, lambda arg: None, None)
    softint_disestablish(sh)
    with pytest.raises(KassertError, match="disestablished"):
        softint_schedule(sh)
    with pytest.raises(KassertError, match="already disestablished"):
        softint_disestablish(sh)


def test_disestablish_waits_until_handler_runs_nowhere(driver: Any) -> None:
    """kern_softint.c: "we will wait for the softint to complete if it's still
    running." """
    if driver.exact_time:
        pytest.skip("real threads only: on the simulated runtime no handler runs while another caller waits")
    started, release = threading.Event(), threading.Event()
    finished: list[bool] = []

    def slow(arg: object) -> None:
        started.set()
        release.wait(10)
        finished.append(True)

    sh = softint_establish(SOFTINT_NET, slow, None)
    with kcont.bind_cpu(driver.cpus[1]):
        softint_schedule(sh)
    assert started.wait(10)
    observed: list[bool] = []

    def disestablisher() -> None:
        softint_disestablish(sh)
        observed.append(bool(finished))

    thread = threading.Thread(target=disestablisher)
    thread.start()
    release.set()
    thread.join(10)
    assert observed == [True]


def test_disestablish_from_own_handler(driver: Any) -> None:
    """kern_softint.c: disestablish waits "if it's still running"; from the
    handler itself that wait would never end, so the layer does not wait for
    the caller's own invocation."""
    done: list[bool] = []
    holder: list[Softint] = []

    def handler(arg: object) -> None:
        softint_disestablish(holder[0])
        done.append(True)

    holder.append(softint_establish(SOFTINT_NET, handler, None))
    softint_schedule(holder[0])
    driver.settle()
    assert done == [True]
    assert all(kc.destroyed for kc in holder[0].continuations)


def test_establish_flags(rt: kcont.SimRuntime) -> None:
    """kern_softint.c ``softint_establish``: ``KASSERT(level < SOFTINT_COUNT)``;
    softint.9: SOFTINT_MPSAFE is accepted (kcont has no kernel lock)."""
    assert softint_establish(SOFTINT_SERIAL | SOFTINT_MPSAFE, lambda arg: None, None).level == SOFTINT_SERIAL
    with pytest.raises(KassertError, match="SOFTINT_COUNT"):
        softint_establish(0x4, lambda arg: None, None)
    with pytest.raises(KassertError):
        softint_establish(0x1000, lambda arg: None, None)
    with pytest.raises(TypeError):
        softint_establish(SOFTINT_NET, "not callable", None)  # type: ignore[arg-type]


# -- disestablish waits with kcont's flush() -------------------------------------


def test_disestablish_runs_the_triggers_pending_on_every_cpu(driver: Any) -> None:
    """kern_softint.c ``softint_disestablish``: "Run a dummy softint at the same
    level on all CPUs and wait for completion": a trigger pending on any CPU
    is handled before disestablish returns (the layer flushes each CPU's
    continuation)."""
    where: list[int] = []
    sh = softint_establish(SOFTINT_NET | SOFTINT_RCPU, lambda arg: where.append(kcont.curcpu().index), None)
    with kcont.bind_cpu(driver.cpus[0]):
        for cpu in driver.cpus:
            softint_schedule_cpu(sh, cpu)
        softint_disestablish(sh)
    assert sorted(where) == [0, 1]
    assert all(kc.destroyed and not kc.queued for kc in sh.continuations)


def test_disestablish_waits_for_a_trigger_made_while_the_handler_runs(driver: Any) -> None:
    """kern_softint.c: a trigger while the handler runs makes it run again
    (PENDING was cleared before the call), and disestablish's barrier queues
    behind that trigger: both runs end before disestablish returns."""
    if driver.exact_time:
        pytest.skip("real threads only: on the simulated runtime no handler runs while another caller waits")
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []

    def slow(arg: object) -> None:
        started.set()
        if not runs:
            release.wait(10)
        runs.append(1)

    sh = softint_establish(SOFTINT_NET, slow, None)
    with kcont.bind_cpu(driver.cpus[1]):
        softint_schedule(sh)
        assert started.wait(10)
        softint_schedule(sh)  # while the handler runs: commits a second run
    observed: list[int] = []

    def disestablisher() -> None:
        softint_disestablish(sh)
        observed.append(len(runs))

    thread = threading.Thread(target=disestablisher)
    thread.start()
    release.set()
    thread.join(10)
    assert observed == [2]


def test_disestablish_inside_another_continuation_cannot_wait_on_the_simulator(
    rt: kcont.SimRuntime,
) -> None:
    """kern_softint.c: disestablish "will wait for the softint to complete";
    on the simulated runtime a continuation cannot wait for another one (kcont's
    ``flush()`` raises ``SimDeadlockError`` rather than hang)."""
    calls: list[object] = []
    sh = softint_establish(SOFTINT_BIO, calls.append, "pending")
    with kcont.bind_cpu(rt.cpus[1]):
        softint_schedule(sh)
    errors: list[BaseException] = []

    def disestablisher(arg: None, kc: kcont.Continuation[Any]) -> None:
        try:
            softint_disestablish(sh)
        except kcont.SimDeadlockError as exc:
            errors.append(exc)

    kcont.Continuation(kcont.wq_softserial, disestablisher, None).schedule(0, rt.cpus[0])
    assert rt.step(rt.cpus[0]) is not None
    assert len(errors) == 1 and calls == []
    with pytest.raises(KassertError, match="disestablished"):
        softint_schedule(sh)  # the caller committed not to trigger it again

"""Stateful test: the continuation state machine on a SimRuntime against a reference model.

The model (plain dicts and lists) predicts, after every operation, each continuation's
flags, the return values of schedule/stop/ack, the counters of ``rt.stats()``, and
which continuation a step starts (docs/semantics.md §2-§7, §10, §11):

* the CPU: the one asked for, or the first in round-robin order that can start something;
* the run queue: the highest-priority queue of that CPU with an entry whose lock is free;
* the entry: the oldest of its {wq, lock, ci} key, with a free lock, and the oldest such
  entry of the queue, unless both it and that oldest one were passed over while their lock
  was busy (woken sub-queues resume ahead of younger entries; among themselves the
  semantics fix no order, so the model accepts either).
"""

from __future__ import annotations

import errno
import os
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import kcont
from kcont import Continuation, DestroyedError, Mutex, MutexError, SimRuntime

ORDER = ["PENDING", "EXPIRED", "INVOKING", "QUEUED", "RUNNING", "DESTROYED", "DETACHED"]
MAX_KCS = 6
MAX_DESTROYED = 1  # keep most continuations alive and useful
NCPU = 2

LOCKS = st.sampled_from([None, 0, 0, 1])
QUEUES = st.sampled_from([0, 0, 1, 2])  # softnet (per-CPU), shared at 150, prihigh (per-CPU)
CPUS = st.sampled_from([None, 0, 0, 1])  # None is CPU 0 too: most entries share a queue
NTICKS = st.one_of(st.just(0), st.integers(1, 4))  # half of the schedulings are immediate
BATCH = st.lists(st.tuples(st.integers(0, MAX_KCS - 1), NTICKS, CPUS), min_size=2, max_size=5)
Rq = tuple[int, Any]  # (queue index, cpu index or None for a shared queue)
Record = tuple[int, Any, int, str]  # (kc index, arg, cpu index, flags inside func)


def flag_string(flags: set[str]) -> str:
    return "|".join(f for f in ORDER if f in flags) or "IDLE"


class KcModel:
    def __init__(self, index: int, queue: int, lock: int | None, arg: int) -> None:
        self.index = index
        self.queue = queue
        self.lock = lock
        self.arg = arg
        self.flags: set[str] = set()
        self.rq: Rq | None = None
        self.deadline = 0
        self.armseq = 0


class ContinuationMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.rt = SimRuntime(ncpu=NCPU, hz=100, reraise=True)
        rt = self.rt
        shared = rt.workqueue(150)  # between the two predefined ones, not per-CPU
        self.queues = [rt.predefined("wq_softnet"), shared, rt.predefined("wq_prihigh")]
        self.percpu = [True, False, True]
        self.mutexes = [Mutex("m0"), Mutex("m1")]
        self.held: set[int] = set()
        self.kcs: list[Continuation[Any]] = []
        self.models: list[KcModel] = []
        self.ran: list[Record] = []
        self.checked = 0  # records of self.ran already replayed against the model
        # model state
        self.ticks = 0
        self.rr = 0
        self.armseq = 0
        self.entries: dict[Rq, list[int]] = {}
        self.passed_over: set[int] = set()  # entries examined while their lock was busy
        self.counts = {name: [0, 0, 0] for name in ("invoked", "scheduled", "armed", "ebusy", "stopped")}

    def teardown(self) -> None:
        for i in sorted(self.held):
            self.mutexes[i].release()

    # -- model helpers -----------------------------------------------------------------------------

    def cpu_rqs(self, cpu: int) -> list[Rq]:
        """The run queues CPU ``cpu`` serves, highest priority first."""
        return [(q, cpu if self.percpu[q] else None) for q in range(len(self.queues))]

    def busy(self, k: int) -> bool:
        lock = self.models[k].lock
        return lock is not None and lock in self.held

    def remove_entry(self, m: KcModel) -> None:
        assert m.rq is not None
        self.entries[m.rq].remove(m.index)
        self.passed_over.discard(m.index)

    def enqueue(self, m: KcModel) -> None:
        assert m.rq is not None
        self.entries.setdefault(m.rq, []).append(m.index)
        self.counts["scheduled"][m.queue] += 1

    def model_stop(self, m: KcModel) -> bool:
        if "PENDING" in m.flags:
            self.counts["stopped"][m.queue] += 1
            m.flags -= {"PENDING", "EXPIRED"}
            return False
        if "QUEUED" in m.flags:
            self.remove_entry(m)
            self.counts["stopped"][m.queue] += 1
            m.flags -= {"QUEUED", "INVOKING", "EXPIRED"}
            return False
        expired = "EXPIRED" in m.flags
        m.flags.discard("EXPIRED")
        return expired

    def replay_step(self, cpu: int | None, record: Record | None) -> None:
        """Check that one step of the simulator (``record``: what it started, or None) is one
        the model allows, then apply it."""
        order = [cpu] if cpu is not None else [(self.rr + i) % NCPU for i in range(NCPU)]
        for c in order:
            for rq in self.cpu_rqs(c):
                queued = self.entries.get(rq, [])
                free = [k for k in queued if not self.busy(k)]
                if not free:
                    self.passed_over.update(queued)  # examined: every entry is busy
                    continue
                assert record is not None, f"nothing started but {free} could start on CPU {c}"
                k, arg, ran_cpu, flags = record
                assert ran_cpu == c, f"{k} started on CPU {ran_cpu}, expected CPU {c}"
                assert k in free, f"{k} started, but the queue of CPU {c} to serve is {rq}: {queued}"
                m = self.models[k]
                same_key = [j for j in queued if self.models[j].lock == m.lock]
                assert same_key[0] == k, f"{k} overtook {same_key[0]} of its key {{wq, lock, ci}}"
                oldest = free[0]
                assert k == oldest or (k in self.passed_over and oldest in self.passed_over), (
                    f"{k} started ahead of the older ready entry {oldest} ({queued})"
                )
                position = queued.index(k)
                self.passed_over.update(j for j in queued[:position] if self.busy(j))
                expected_flags = flag_string((m.flags - {"QUEUED"}) | {"RUNNING"})
                assert flags == expected_flags, f"flags inside func {flags}, expected {expected_flags}"
                assert arg == m.arg, f"func got arg {arg}, expected {m.arg}"
                self.remove_entry(m)
                m.flags -= {"QUEUED", "INVOKING"}
                self.counts["invoked"][m.queue] += 1
                self.rr = (c + 1) % NCPU
                return
        assert record is None, f"{record} started but the model has nothing that can start"

    def replay(self, cpu: int | None, *, until_idle: bool) -> None:
        """Replay the records the simulator produced since the last replay."""
        new = self.ran[self.checked :]
        self.checked = len(self.ran)
        for record in new:
            self.replay_step(cpu, record)
        if until_idle or not new:
            self.replay_step(cpu, None)

    # -- rules -----------------------------------------------------------------------------------------

    def add(self, queue: int, lock: int | None) -> None:
        index = len(self.kcs)

        def func(arg: Any, kc: Continuation[Any]) -> None:
            self.ran.append((index, arg, kcont.curcpu().index, kc.flags))

        mutex = None if lock is None else self.mutexes[lock]
        kc = self.rt.continuation(self.queues[queue], func, 0, lock=mutex, name=f"k{index}")
        self.kcs.append(kc)
        self.models.append(KcModel(index, queue, lock, 0))

    @initialize(specs=st.lists(st.tuples(QUEUES, LOCKS), min_size=4, max_size=5))
    def start(self, specs: list[tuple[int, int | None]]) -> None:
        for queue, lock in specs:
            self.add(queue, lock)

    @precondition(lambda self: len(self.kcs) < MAX_KCS)
    @rule(queue=QUEUES, lock=LOCKS)
    def create(self, queue: int, lock: int | None) -> None:
        self.add(queue, lock)

    @rule(which=st.integers(0, MAX_KCS - 1), nticks=NTICKS, cpu=CPUS)
    def schedule(self, which: int, nticks: int, cpu: int | None) -> None:
        self.do_schedule(which % len(self.kcs), nticks, cpu)

    @rule(batch=BATCH)
    def schedule_several(self, batch: list[tuple[int, int, int | None]]) -> None:
        """Several schedulings in a row, so run queues hold several entries."""
        self.schedule_batch(batch)

    def schedule_batch(self, batch: list[tuple[int, int, int | None]]) -> None:
        for which, nticks, cpu in batch:
            k = which % len(self.kcs)
            self.do_schedule(k, nticks, cpu if self.percpu[self.models[k].queue] else None)

    def do_schedule(self, k: int, nticks: int, cpu: int | None) -> None:
        m = self.models[k]
        ci = None if cpu is None else self.rt.cpus[cpu]
        code = kcont.kcont_schedule(self.kcs[k], ci, nticks)
        if cpu is not None and not self.percpu[m.queue]:
            assert code == errno.ENOENT
            return
        if "DESTROYED" in m.flags:
            assert code == errno.EINVAL
            return
        if "INVOKING" in m.flags:
            assert code == errno.EBUSY
            self.counts["ebusy"][m.queue] += 1
            return
        assert code == 0
        if "QUEUED" in m.flags:  # acknowledged earlier: the new scheduling replaces it
            self.remove_entry(m)
        m.rq = (m.queue, (0 if cpu is None else cpu) if self.percpu[m.queue] else None)
        if nticks == 0:
            m.flags = (m.flags - {"PENDING"}) | {"EXPIRED", "INVOKING", "QUEUED"}
            self.enqueue(m)
        else:
            m.flags = (m.flags - {"EXPIRED", "QUEUED"}) | {"PENDING"}
            m.deadline = self.ticks + nticks
            self.armseq += 1
            m.armseq = self.armseq
            self.counts["armed"][m.queue] += 1

    @rule(which=st.integers(0, MAX_KCS - 1))
    def stop(self, which: int) -> None:
        k = which % len(self.kcs)
        expected = self.model_stop(self.models[k])
        assert self.kcs[k].stop() is expected

    @rule(which=st.integers(0, MAX_KCS - 1))
    def ack(self, which: int) -> None:
        k = which % len(self.kcs)
        m = self.models[k]
        expected = "INVOKING" in m.flags
        m.flags.discard("INVOKING")
        assert self.kcs[k].ack() is expected

    @precondition(lambda self: sum("DESTROYED" in m.flags for m in self.models) < MAX_DESTROYED)
    @rule(which=st.integers(0, MAX_KCS - 1))
    def destroy(self, which: int) -> None:
        k = which % len(self.kcs)
        m = self.models[k]
        if "DESTROYED" in m.flags:
            try:
                self.kcs[k].destroy()
            except DestroyedError:
                return
            raise AssertionError("destroying twice must raise DestroyedError")
        self.model_stop(m)
        m.flags |= {"DESTROYED", "DETACHED"}
        self.kcs[k].destroy()

    @rule(which=st.integers(0, MAX_KCS - 1), value=st.integers(1, 1000))
    def set_arg(self, which: int, value: int) -> None:
        k = which % len(self.kcs)
        m = self.models[k]
        try:
            self.kcs[k].set_arg(value)
        except DestroyedError:
            assert "DESTROYED" in m.flags
            return
        except MutexError:
            assert m.lock is not None and m.lock not in self.held and "DESTROYED" not in m.flags
            return
        assert "DESTROYED" not in m.flags and (m.lock is None or m.lock in self.held)
        m.arg = value

    @rule(lock=st.integers(0, 1))
    def toggle_lock(self, lock: int) -> None:
        """The test thread takes the Mutex, or releases it (which wakes what parked on it)."""
        self.toggle(lock)

    def toggle(self, lock: int) -> None:
        if lock in self.held:
            self.mutexes[lock].release()
            self.held.discard(lock)
        else:
            self.mutexes[lock].acquire()
            self.held.add(lock)

    @rule(lock=st.integers(0, 1), batch=BATCH)
    def contend(self, lock: int, batch: list[tuple[int, int, int | None]]) -> None:
        """Hold a Mutex while entries are scheduled and dispatched (they park), then release it."""
        if lock not in self.held:
            self.toggle(lock)
        self.schedule_batch(batch)
        self.settle()
        self.toggle(lock)

    @rule(cpu=CPUS)
    def step(self, cpu: int | None) -> None:
        kc = self.rt.step(None if cpu is None else self.rt.cpus[cpu])
        if kc is None:
            assert len(self.ran) == self.checked
        else:
            assert self.kcs.index(kc) == self.ran[-1][0]
        self.replay(cpu, until_idle=False)

    @rule()
    def run_until_idle(self) -> None:
        self.settle()

    def settle(self) -> None:
        self.rt.run_until_idle()
        self.replay(None, until_idle=True)

    @rule()
    def advance(self) -> None:
        self.settle()
        self.rt.advance(1)  # nothing left to run before the tick: ticks, expires, runs
        self.ticks += 1
        due = sorted(
            (m for m in self.models if "PENDING" in m.flags and m.deadline == self.ticks),
            key=lambda m: m.armseq,
        )
        for m in due:
            m.flags = (m.flags - {"PENDING"}) | {"EXPIRED", "INVOKING", "QUEUED"}
            self.enqueue(m)
        self.replay(None, until_idle=True)

    # -- invariants ----------------------------------------------------------------------------------

    @invariant()
    def flags_match_the_model(self) -> None:
        for kc, m in zip(self.kcs, self.models, strict=True):
            assert kc.flags == flag_string(m.flags), f"k{m.index}: {kc.flags} != {flag_string(m.flags)}"
            assert kc.deadline == (m.deadline if "PENDING" in m.flags else None)
            if "DESTROYED" not in m.flags:
                assert kc.arg == m.arg

    @invariant()
    def stats_match_the_model(self) -> None:
        stats = self.rt.stats()
        assert self.rt.ticks == self.ticks
        assert stats["totals"]["invoked"] == len(self.ran) == sum(self.counts["invoked"])
        for q, wq in enumerate(self.queues):
            got = stats["queues"][wq.name]
            for name, per_queue in self.counts.items():
                assert got[name] == per_queue[q], f"{wq.name} {name}: {got[name]} != {per_queue[q]}"
            depth = sum(len(v) for rq, v in self.entries.items() if rq[0] == q)
            assert got["depth"] == depth
            alive = sum(1 for m in self.models if m.queue == q and "DESTROYED" not in m.flags)
            assert got["bound"] == alive
        pending = sum(1 for m in self.models if "PENDING" in m.flags)
        assert stats["pending_timers"] == pending
        assert stats["totals"]["late"] == 0 and stats["totals"]["exceptions"] == 0


ContinuationMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("KCONT_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    stateful_step_count=40,
)
TestContinuationModel = ContinuationMachine.TestCase

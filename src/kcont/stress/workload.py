"""The load: :class:`Harness`, the producers' random operations (schedule,
stop, halt, flush, setarg, setfunc, setmutex, destroy, temporary queues,
predicates) and the continuations' functions (raise, re-arm, stop, halt or
destroy themselves, hand their lock over, sleep), each recorded in the ledger
it inherits.

Locking: every call that can start or end a scheduling is made with the
slot's harness lock ``h`` held, together with the recording of its outcome;
nobody blocks on a continuation's lock while holding ``h`` (see the package
docstring).  ``wq_lock`` serialises the acquisition and release of temporary
queues.
"""

from __future__ import annotations

import errno
import random
import time
from collections.abc import Callable
from typing import Any

from .. import capi
from .._core.continuation import Continuation
from .._core.mutex import Mutex
from .._core.runtime import CPU, bind_cpu, curcpu, current_runtime
from .._core.workqueue import WQ_PERCPU, Workqueue
from ..errors import (
    BusyError,
    DestroyedError,
    HaltTimeoutError,
    MutexError,
    NoRuntimeError,
    ShutdownError,
    WorkqueueReleasedError,
)
from ..sim import SimRuntime
from ..threaded import Runtime
from .checker import Checker
from .config import StressConfig
from .ledger import (
    C_ACKS,
    C_CREATES,
    C_DESTROYS,
    C_EBUSY,
    C_EXTRA_LOCKS,
    C_FAULTS,
    C_FLUSHES,
    C_FN_OPS,
    C_HALTS,
    C_HALTS_WAITED,
    C_HANDOVERS,
    C_LOCK_SKIPS,
    C_OPS,
    C_PREDICATES,
    C_REF_DESTROYED,
    C_REF_SHUTDOWN,
    C_REL_EBUSY,
    C_REL_OK,
    C_SELF_DESTROYS,
    C_SETARGS,
    C_SETFUNC_BUSY,
    C_SETFUNCS,
    C_SETMUTEX,
    C_SETMUTEX_REFUSED,
    C_SLEEPS,
    C_STOPS,
    C_STOPS_TRUE,
    C_TEMP_QUEUES,
    Q_EBUSY,
    Q_EXC,
    Q_INVOKED,
    Fault,
    Slot,
    _Counters,
)


class Harness(Checker):
    """The shared machinery of the threaded stress run and the simulated
    explorer: slots, operations, functions and the online checker."""

    def __init__(
        self, rt: SimRuntime | Runtime, config: StressConfig, *, sim_rng: random.Random | None = None
    ) -> None:
        super().__init__(rt, config, sim_rng=sim_rng)
        setup_rng = random.Random(config.seed)
        for _ in range(config.continuations):
            self.slots.append(self._new_slot(setup_rng, self._counters_for_thread()))

    def _new_slot(self, rng: random.Random, ctr: _Counters, wq: Workqueue | None = None) -> Slot:
        temp = wq is not None
        if wq is None:
            wq = rng.choice(self.queues)
        slot = Slot(next(self._slot_ids), wq, self._wqi(wq), temp)
        lock = rng.choice(self.locks) if self.locks and rng.random() < self.cfg.p_locked else None
        func = self._make_func(slot, 0)
        arg = (0, 0)
        how = rng.randrange(3)
        if how == 0:
            kc: Continuation[Any] = Continuation(wq, func, arg, lock=lock, name=f"s{slot.id}")
        elif how == 1:
            kc = self.rt.continuation(wq, func, arg, lock=lock, name=f"s{slot.id}")
        else:
            kc = capi.kcont_create(wq, lock, func, arg, 0)
            kc.name = f"s{slot.id}"
        slot.kc = kc
        ctr.c[C_CREATES] += 1
        with self._pool_lock:
            self.all_slots[slot.id] = slot
        return slot

    def _make_func(self, slot: Slot, variant: int) -> Callable[[Any, Continuation[Any]], None]:
        body = self._body

        def func(arg: Any, kc: Continuation[Any]) -> None:
            body(slot, variant, arg, kc)

        func.__qualname__ = f"stress_fn{variant}"
        return func

    def _body(self, slot: Slot, variant: int, arg: Any, kc: Continuation[Any]) -> None:
        cfg = self.cfg
        ctr = self._counters_for_thread()
        rng = self._rng()
        tick = self.rt.ticks
        lock = kc.mutex  # held for us by the dispatcher (read before any hand-over)
        cpu = curcpu()
        if not kc.running_here:
            self.violation(slot, "running_here is False inside the function")
        h = slot.h
        release_after: Mutex | None = None
        h.acquire()
        try:
            try:
                self._on_start(slot, ctr, variant, arg, tick, lock, cpu)
                if rng.random() < cfg.p_raise:
                    raise self._fault(ctr, slot, "start")
                release_after = self._body_action(slot, ctr, rng, kc, lock)
            finally:
                h.release()
            if release_after is not None:
                release_after.release()  # the old lock, after the hand-over
            if lock is None and self.locks and rng.random() < cfg.p_extra_lock:
                extra = rng.choice(self.locks)
                if not (self.sim and extra.locked()) and extra.acquire(
                    not self.sim, -1 if self.sim else 0.05
                ):
                    ctr.c[C_EXTRA_LOCKS] += 1
                    try:
                        if rng.random() < cfg.p_raise:
                            raise self._fault(ctr, slot, "holding another lock")
                    finally:
                        extra.release()
            if not slot.soft and not self.sim and rng.random() < cfg.p_sleep:
                ctr.c[C_SLEEPS] += 1
                time.sleep(rng.random() * cfg.max_sleep)
            if rng.random() < cfg.p_raise:
                raise self._fault(ctr, slot, "end")
        finally:
            with h:
                slot.in_body -= 1
                slot.body = None
                if slot.destroyed:
                    self._forget(slot)

    def _fault(self, ctr: _Counters, slot: Slot, where: str) -> Fault:
        ctr.c[C_FAULTS] += 1
        ctr.qc(slot.wqi)[Q_EXC] += 1
        return Fault(f"injected at {where} of {slot.kc!r}")

    def _body_action(
        self, slot: Slot, ctr: _Counters, rng: random.Random, kc: Continuation[Any], lock: Mutex | None
    ) -> Mutex | None:
        """What the function does with ``h`` held; returns a lock to release after."""
        cfg = self.cfg
        r = rng.random()
        if r < cfg.p_rearm:
            if self.stopping:
                return None
            ctr.c[C_FN_OPS] += 1
            ctr.c[C_ACKS] += 1
            atomic = rng.random() < 0.3  # schedule(ack=True): NetBSD's callout_schedule
            if not atomic:
                acked = capi.kcont_ack(kc) if rng.random() < cfg.p_capi else kc.ack()
                if not acked:
                    self.violation(slot, "ack() inside the function found INVOKING clear")
            self._schedule_locked(slot, ctr, rng, rng.random() < 0.5, None, ack=atomic)
            if rng.random() < cfg.p_raise:
                raise self._fault(ctr, slot, "after re-arm")
            return None
        r -= cfg.p_rearm
        if r < cfg.p_self_stop:
            ctr.c[C_FN_OPS] += 1
            ctr.c[C_STOPS] += 1
            self._on_stop(slot, ctr, kc.stop(), "stop-inside")
            return None
        r -= cfg.p_self_stop
        if r < cfg.p_self_halt:
            ctr.c[C_FN_OPS] += 1
            ctr.c[C_HALTS] += 1
            result = kc.halt(interlock=slot.h) if rng.random() < 0.5 else kc.halt()
            # From its own function, halt is a stop that does not wait.
            self._on_stop(slot, ctr, result, "halt-inside")
            return None
        r -= cfg.p_self_halt
        if r < cfg.p_self_destroy:
            if slot.destroying:
                return None
            ctr.c[C_FN_OPS] += 1
            ctr.c[C_SELF_DESTROYS] += 1
            slot.destroying = True
            if rng.random() < cfg.p_capi:
                capi.kcont_destroy(kc)
            else:
                kc.destroy()
            self._on_destroyed(slot, ctr, inside=True)
            if slot.temp:
                with self.wq_lock:
                    self._to_release.append(slot)
            return None
        r -= cfg.p_self_destroy
        if r < cfg.p_handover:
            if lock is None or slot.destroying:
                return None
            new = rng.choice(self.locks)
            # (locked() first: on the simulator every holder is this thread.)
            if new is lock or new.locked() or not new.acquire(False):
                ctr.c[C_LOCK_SKIPS] += 1
                return None
            ctr.c[C_FN_OPS] += 1
            ctr.c[C_HANDOVERS] += 1
            slot.sm_b = next(self.seq)
            old = capi.kcont_setmutex(kc, new) if rng.random() < cfg.p_capi else kc.set_mutex(new)
            slot.sm_a = next(self.seq)
            slot.history.append((slot.sm_a, "handover", self._lock_index.get(id(new))))
            if old is not lock:
                self.violation(slot, f"set_mutex returned {old!r}, not the lock held {lock!r}")
            return lock
        r -= cfg.p_handover
        if r < cfg.p_self_setarg and not slot.destroying:
            ctr.c[C_FN_OPS] += 1
            ctr.c[C_SETARGS] += 1
            slot.version += 1
            kc.set_arg((slot.version, slot.variant))
        return None

    def producer_op(self, rng: random.Random, op: str | None = None) -> str:
        """One random operation on a random continuation."""
        ctr = self._counters_for_thread()
        if op is None:
            op = rng.choices(self._ops, self._op_weights)[0]
        ctr.c[C_OPS] += 1
        index = rng.randrange(len(self.slots))
        slot = self.slots[index]
        if self.rt.cpus and rng.random() < self.cfg.p_bind:
            with bind_cpu(rng.choice(self.rt.cpus)):
                self._dispatch_op(op, slot, index, rng, ctr)
        else:
            self._dispatch_op(op, slot, index, rng, ctr)
        return op

    def _dispatch_op(self, op: str, slot: Slot, index: int, rng: random.Random, ctr: _Counters) -> None:
        if op == "schedule_now" or op == "schedule_timer":
            if slot.destroyed:
                self._replace_slot(index, slot, rng, ctr)
                return
            cpu = rng.choice(self.rt.cpus) if slot.percpu and rng.random() < 0.5 else None
            with slot.h:
                self._schedule_locked(slot, ctr, rng, op == "schedule_now", cpu)
        elif op == "stop":
            ctr.c[C_STOPS] += 1
            with slot.h:
                result = capi.kcont_stop(slot.kc) if rng.random() < self.cfg.p_capi else slot.kc.stop()
                if result:
                    ctr.c[C_STOPS_TRUE] += 1
                self._on_stop(slot, ctr, result, "stop")
        elif op == "halt":
            self._op_halt(slot, rng, ctr)
        elif op == "setarg":
            self._op_setarg(slot, rng, ctr, func=False)
        elif op == "setfunc":
            self._op_setarg(slot, rng, ctr, func=True)
        elif op == "setmutex":
            self._op_setmutex(slot, rng, ctr)
        elif op == "destroy":
            self._op_destroy(slot, index, rng, ctr)
        elif op == "temp_queue":
            self._op_destroy(slot, index, rng, ctr, temp=True)
        elif op == "predicates":
            self._op_predicates(slot, ctr)
        elif op == "queue_churn":
            self._op_queue_churn(rng, ctr)
        elif op == "flush":
            self._op_flush(slot, ctr)
        else:
            raise ValueError(f"unknown operation {op!r}")

    def _schedule_locked(
        self, slot: Slot, ctr: _Counters, rng: random.Random, now: bool, cpu: CPU | None, ack: bool = False
    ) -> None:
        kc = slot.kc
        nticks = 0 if now else rng.randint(1, self.cfg.max_nticks)
        t0 = self.rt.ticks
        b = next(self.seq)
        use_capi = not ack and rng.random() < self.cfg.p_capi
        try:
            if use_capi:
                code = capi.kcont_schedule(kc, cpu, nticks)
            else:
                kc.schedule(nticks, cpu, ack=ack)
                code = 0
        except BusyError:
            code = errno.EBUSY
        except DestroyedError:
            code = errno.EINVAL
        except ShutdownError:
            code = -1
        a = next(self.seq)
        if code == 0:
            self._issue(slot, ctr, nticks, t0, b, a)
        elif code == errno.EBUSY:
            ctr.c[C_EBUSY] += 1
            ctr.qc(slot.wqi)[Q_EBUSY] += 1
            if slot.current is None:
                self.violation(slot, "EBUSY from a continuation never scheduled")
        elif code == errno.EINVAL:
            ctr.c[C_REF_DESTROYED] += 1
            if not slot.destroying:
                self.violation(slot, "schedule refused as destroyed, but nobody destroyed it")
        elif code == -1:
            ctr.c[C_REF_SHUTDOWN] += 1
            if not self.closing:
                self.violation(slot, "ShutdownError before the shutdown")
        else:
            self.violation(slot, f"schedule returned {code}")

    def _op_halt(self, slot: Slot, rng: random.Random, ctr: _Counters) -> None:
        ctr.c[C_HALTS] += 1
        kc = slot.kc
        h = slot.h
        h.acquire()
        try:
            begin = next(self.seq)
            t0 = slot.current
            if t0 is not None and (t0.started or t0.outcome is not None):
                t0 = None
            ambiguous = slot.halters > 0 or slot.destroying
            slot.halters += 1
            waited = kc.running
            try:
                if rng.random() < self.cfg.p_capi:
                    result = capi.kcont_halt(kc, h)
                else:
                    result = kc.halt(interlock=h, timeout=self.cfg.halt_timeout)
            except HaltTimeoutError:
                self.violation(slot, f"halt() still waiting after {self.cfg.halt_timeout} s")
                return
            finally:
                slot.halters -= 1
            if waited:
                ctr.c[C_HALTS_WAITED] += 1
            self._on_halt_return(slot, ctr, t0, result, begin, "halt", ambiguous)
        finally:
            h.release()

    def _op_flush(self, slot: Slot, ctr: _Counters) -> None:
        """flush() (without ``h``: it waits for the function, which needs it):
        an immediate ticket current when it began has run, or was cancelled,
        by the time it returns."""
        ctr.c[C_FLUSHES] += 1
        with slot.h:
            t0 = slot.current
            if t0 is None or t0.started or t0.outcome is not None or t0.nticks:
                t0 = None
        try:
            slot.kc.flush(timeout=self.cfg.halt_timeout)
        except HaltTimeoutError:
            self.violation(slot, f"flush() still waiting after {self.cfg.halt_timeout} s")
            return
        if t0 is None:
            return
        with slot.h:
            self._settle(slot, ctr)
            if not t0.started and t0.outcome is None:
                if slot.halters or (slot.destroying and not slot.destroyed):
                    return  # a halt or destroy under way may have cancelled it: resolved when it returns
                self.violation(slot, f"flush() returned before {t0!r} ran or was cancelled")

    def _take_lock(self, slot: Slot, ctr: _Counters) -> tuple[bool, Mutex | None]:
        """Take the continuation's lock (before ``h``).  Returns (taken, lock):
        (True, None) if it has none, (False, lock) if it could not be taken."""
        lock = slot.kc.mutex
        if lock is None:
            return True, None
        timeout = self.cfg.lock_timeout
        if lock.acquire(timeout > 0, timeout if timeout > 0 else -1):
            return True, lock
        ctr.c[C_LOCK_SKIPS] += 1
        if timeout > 0:
            self.violation(slot, f"{lock!r} could not be taken in {timeout} s")
        return False, lock

    def _op_setarg(self, slot: Slot, rng: random.Random, ctr: _Counters, *, func: bool) -> None:
        taken, lock = self._take_lock(slot, ctr)
        if not taken:
            return
        try:
            with slot.h:
                kc = slot.kc
                if kc.mutex is not lock:
                    ctr.c[C_LOCK_SKIPS] += 1  # re-associated meanwhile
                    return
                version = slot.version + 1
                use_capi = rng.random() < self.cfg.p_capi
                if func:
                    ctr.c[C_SETFUNCS] += 1
                    variant = rng.randrange(2)
                    new = self._make_func(slot, variant)
                    try:
                        if use_capi:
                            code = capi.kcont_setfunc(kc, new, (version, variant))
                        else:
                            kc.set_func(new, (version, variant))
                            code = 0
                    except BusyError:
                        code = errno.EBUSY
                    except DestroyedError:
                        code = errno.EINVAL
                    if code == errno.EBUSY:
                        ctr.c[C_SETFUNC_BUSY] += 1
                        if lock is not None:
                            self.violation(slot, "set_func refused EBUSY although the lock is held")
                        return
                else:
                    ctr.c[C_SETARGS] += 1
                    variant = slot.variant
                    try:
                        code = capi.kcont_setarg(kc, (version, variant)) if use_capi else 0
                        if not use_capi:
                            kc.set_arg((version, variant))
                    except DestroyedError:
                        code = errno.EINVAL
                if code == errno.EINVAL:
                    if not slot.destroying:
                        self.violation(slot, "setarg/setfunc refused as destroyed, but nobody destroyed it")
                    return
                if code:
                    self.violation(slot, f"setarg/setfunc returned {code}")
                    return
                slot.version = version
                slot.variant = variant
                slot.history.append((next(self.seq), "setfunc" if func else "setarg", version, variant))
        finally:
            if lock is not None:
                lock.release()

    def _op_setmutex(self, slot: Slot, rng: random.Random, ctr: _Counters) -> None:
        taken, lock = self._take_lock(slot, ctr)
        if not taken:
            return
        ctr.c[C_SETMUTEX] += 1
        new = rng.choice(self.locks) if self.locks and rng.random() < 0.9 else None
        try:
            with slot.h:
                kc = slot.kc
                if kc.mutex is not lock:
                    ctr.c[C_LOCK_SKIPS] += 1
                    return
                sm_b = next(self.seq)
                try:
                    old = (
                        capi.kcont_setmutex(kc, new) if rng.random() < self.cfg.p_capi else kc.set_mutex(new)
                    )
                except MutexError:
                    if lock is None and new is not None:
                        ctr.c[C_SETMUTEX_REFUSED] += 1  # the seed's assertion: lock-less stays lock-less
                    else:
                        self.violation(slot, f"set_mutex({new!r}) refused with the lock {lock!r} held")
                    return
                except DestroyedError:
                    if not slot.destroying:
                        self.violation(slot, "set_mutex refused as destroyed, but nobody destroyed it")
                    return
                finally:
                    sm_a = next(self.seq)
                if new is not lock:
                    slot.sm_b, slot.sm_a = sm_b, sm_a  # moved to a new {wq, lock, ci}
                if lock is None and new is not None:
                    self.violation(slot, "set_mutex gave a lock to a lock-less continuation")
                if old is not lock:
                    self.violation(slot, f"set_mutex returned {old!r}, not {lock!r}")
                slot.history.append((sm_a, "setmutex", self._lock_index.get(id(new), 0)))
        finally:
            if lock is not None:
                lock.release()

    def _op_destroy(
        self, slot: Slot, index: int, rng: random.Random, ctr: _Counters, *, temp: bool = False
    ) -> None:
        """Destroy a continuation (without ``h``: destroy waits), check that
        nothing of it can run any more, and put a new one in its place (on a
        temporary queue if ``temp``)."""
        with slot.h:
            if slot.destroying:
                return
            slot.destroying = True
            slot.history.append((next(self.seq), "destroy-begin"))
        ctr.c[C_DESTROYS] += 1
        try:
            if rng.random() < self.cfg.p_capi:
                capi.kcont_destroy(slot.kc)
            else:
                slot.kc.destroy(timeout=self.cfg.halt_timeout)
        except HaltTimeoutError:
            self.violation(slot, f"destroy() still waiting after {self.cfg.halt_timeout} s")
            return
        except DestroyedError:
            # We marked it first, and a function destroys itself only if unmarked.
            self.violation(slot, "destroy() raised DestroyedError although this was the first destroy")
            return
        with slot.h:
            self._on_destroyed(slot, ctr, inside=False)
        if slot.temp and not self._release_temp(slot, ctr):
            self.violation(slot, "destroy() returned but the continuation is not detached from its queue")
        self._replace_slot(index, slot, rng, ctr, temp=temp)

    def _replace_slot(
        self, index: int, slot: Slot, rng: random.Random, ctr: _Counters, *, temp: bool = False
    ) -> None:
        if self.stopping or self.closing:
            return
        with self._pool_lock:
            if self.slots[index] is not slot:
                return
        fresh = self._new_temp_slot(rng, ctr) if temp else self._new_slot(rng, ctr)
        with self._pool_lock:
            if self.slots[index] is slot:
                self.slots[index] = fresh
                return
        # Another producer replaced it first: destroy the spare at once.
        with fresh.h:
            fresh.destroying = True
        fresh.kc.destroy()
        with fresh.h:
            self._on_destroyed(fresh, ctr, inside=False)
        if fresh.temp:
            self._release_temp(fresh, ctr)

    def _new_temp_slot(self, rng: random.Random, ctr: _Counters) -> Slot:
        """Acquire a temporary queue and bind a new continuation to it; while it
        is the only acquisition, its release must be EBUSY and change nothing."""
        self._reap(ctr)
        pri = rng.choice(list(self.cfg.temp_priorities))
        flags = rng.choice((0, WQ_PERCPU))
        with self.wq_lock:
            if self.rt is _current_or_none():
                wq = capi.kcont_workqueue_acquire(pri, flags)
            else:
                wq = self.rt.acquire_workqueue(pri, flags)
            n = self._temp_acq.get((pri, flags), 0) + 1
            self._temp_acq[(pri, flags)] = n
            if n == 1 and wq.acquired != 1:
                self.violation(None, f"{wq!r} acquired {wq.acquired} times, expected 1")
            ctr.c[C_TEMP_QUEUES] += 1
            slot = self._new_slot(rng, ctr, wq)
            if n == 1:
                code = capi.kcont_workqueue_release(wq)
                if code != errno.EBUSY or wq.acquired != 1 or wq.freed:
                    self.violation(
                        slot, f"last release of {wq!r} with a continuation bound returned {code}, not EBUSY"
                    )
                else:
                    ctr.c[C_REL_EBUSY] += 1
        return slot

    def _release_temp(self, slot: Slot, ctr: _Counters) -> bool:
        """Release the temporary queue of a destroyed slot: 0, and freed with
        the last acquisition.  Returns False if it must be retried (EBUSY: the
        continuation destroyed itself and its function has not returned)."""
        wq = slot.wq
        with self.wq_lock:
            if slot.released:
                return True
            if "DETACHED" not in slot.kc.flags:
                return False  # destroyed from inside: detached once its function returns
            key = (wq.pri, wq.flags)
            last = self._temp_acq[key] == 1
            code = capi.kcont_workqueue_release(wq)
            if code == errno.EBUSY and last:
                self.violation(slot, f"release of {wq!r} EBUSY after its last continuation was destroyed")
                return False
            if code:
                self.violation(slot, f"release of {wq!r} returned {code}")
                return True
            slot.released = True
            ctr.c[C_REL_OK] += 1
            self._temp_acq[key] -= 1
            if last:
                wqi = self._wqi(wq)
                with self._counters_lock:
                    counters = list(self._counters)
                self._freed_invoked += sum(
                    row[Q_INVOKED] for row in (c.q.get(wqi) for c in counters) if row is not None
                )
                self._forget_wq(wq)
                if not wq.freed:
                    self.violation(slot, f"{wq!r} not freed by its last release")
                try:
                    Continuation(wq, _never, None)
                    self.violation(slot, f"a continuation was created on the freed {wq!r}")
                except WorkqueueReleasedError:
                    pass
                if capi.kcont_workqueue_release(wq) != errno.EINVAL:
                    self.violation(slot, f"release of the freed {wq!r} did not return EINVAL")
            return True

    def _reap(self, ctr: _Counters) -> None:
        with self.wq_lock:
            pending = self._to_release
            self._to_release = []
        keep = [slot for slot in pending if not self._release_temp(slot, ctr)]
        if keep:
            with self.wq_lock:
                self._to_release.extend(keep)

    def _op_predicates(self, slot: Slot, ctr: _Counters) -> None:
        """One snapshot of the flags must satisfy the state machine's invariants."""
        ctr.c[C_PREDICATES] += 1
        kc = slot.kc
        if kc.running_here:
            self.violation(slot, "running_here is True outside its function")
        names = set(kc.flags.split("|"))
        problems = []
        if "PENDING" in names and names & {"EXPIRED", "QUEUED", "INVOKING"}:
            problems.append("PENDING with EXPIRED/QUEUED/INVOKING")
        if "DETACHED" in names and ("DESTROYED" not in names or names & {"PENDING", "QUEUED", "RUNNING"}):
            problems.append("DETACHED but not quiescent")
        if "QUEUED" in names and "DESTROYED" in names and "RUNNING" not in names and slot.destroyed:
            problems.append("QUEUED after destroy returned")
        if problems:
            self.violation(slot, f"flags {kc.flags}: {', '.join(problems)}")
        # The C-style predicates agree with the properties they wrap (values may
        # move between reads, so only the types are compared).
        for fn in (capi.kcont_pending, capi.kcont_expired, capi.kcont_active, capi.kcont_invoking):
            if not isinstance(fn(kc), bool):
                self.violation(slot, f"{fn.__name__} did not return a bool")

    def _op_queue_churn(self, rng: random.Random, ctr: _Counters) -> None:
        """Acquire one of the run's queues again and release it: never the last
        acquisition, so the release must return 0 and free nothing."""
        wq = rng.choice(self.acquired) if self.acquired else None
        if wq is None:
            return
        with self.wq_lock:
            again = self.rt.acquire_workqueue(wq.pri, wq.flags)
            if again is not wq:
                self.violation(None, f"acquire({wq.pri}, {wq.flags}) returned {again!r}, not {wq!r}")
            code = capi.kcont_workqueue_release(again)
            if code != 0 or wq.freed:
                self.violation(None, f"release of a queue acquired twice returned {code}")
            else:
                ctr.c[C_REL_OK] += 1

    def teardown(self) -> None:
        """Destroy every continuation and release every queue acquired (after
        shutdown): the last releases must free the queues."""
        ctr = self._counters_for_thread()
        for slot in self._live_slots():
            if not slot.kc.destroyed:
                slot.kc.destroy(timeout=self.cfg.halt_timeout)
            if slot.temp and not self._release_temp(slot, ctr):
                self.violation(slot, "temporary queue could not be released after shutdown")
        self._reap(ctr)
        if self._to_release:
            self.violation(None, f"{len(self._to_release)} temporary queues could not be released")
        for wq in self.acquired:
            code = capi.kcont_workqueue_release(wq)
            if code != 0 or not wq.freed:
                self.violation(None, f"final release of {wq!r} returned {code} (freed={wq.freed})")


def _never(arg: object, kc: Continuation[Any]) -> None:
    raise AssertionError("never scheduled")


def _current_or_none() -> Any:
    try:
        return current_runtime()
    except NoRuntimeError:
        return None

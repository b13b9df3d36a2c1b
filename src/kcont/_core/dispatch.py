"""The dispatch function: the only place where continuation functions are called.

What it owns
    :func:`dispatch` picks the next continuation a CPU may start, runs it and
    accounts for it, and repeats up to a limit.  Both runtimes call it (the
    simulated runtime once per ``step()``, each worker thread of the threaded
    runtime in its loop), so the ordering and the state transitions are the
    same everywhere.

Sequence (FreeBSD ``softclock_call_cc`` is the model)
    1. Under the state lock: scan the CPU's run queues highest priority first;
       the run queue's ordering rules pick the oldest entry whose lock can be
       taken *without blocking* (busy sub-queues park, see
       :mod:`kcont._core.runqueue`).  Because the lock is tried under the
       state lock, a ``stop()`` made by a holder of that lock always finds the
       entry still queued and removes it: no invocation starts after it.
    2. Still under the state lock: QUEUED -> RUNNING, and snapshot ``func``,
       ``arg`` and the context *after* the lock was taken, so a ``setarg``
       made under the lock while the entry waited is honoured.
    3. Without any lock of ours: call ``func(arg, kc)`` in a fresh copy of the
       context captured by ``schedule`` (as asyncio's ``call_soon``); with
       instruments or a slow threshold set (``rt._time_funcs`` is then a
       ``Watch``), through
       :func:`kcont._core.instruments.watched_call`, which calls the
       instruments around it, still without any lock.
    4. Under the state lock, end the invocation and count it; then release
       the lock this invocation must release (its own, or the one handed over
       by ``set_mutex`` inside ``func``), so that whoever takes it next finds
       the invocation over; then (if the limit allows) pick the next one.  Nothing but the continuation
       object itself, which the runtime keeps alive, is touched after ``func``
       returns.
    4a. Callback waiters (:mod:`kcont._core.waiters`) that the end fired are
       woken with no lock held, once the invocation is fully accounted (and
       traced), before the next one starts; those fired elsewhere (by a
       stop) are woken by a call that finds nothing to run.
    5. An exception from ``func`` (or from releasing its lock; if both
       raise, the release's, chained to ``func``'s as by a ``finally``
       clause, so neither is lost) goes to the runtime's exception handler,
       after the bookkeeping and with no lock held, and never escapes to the
       worker (the simulator may re-raise it).

Context
    The caller runs it on a thread whose current CPU (``kcont.curcpu()``) is
    ``cpu``: a worker sets that once, the simulator around each step.

Locking
    Takes the state lock once per invocation (plus once to start), never
    across ``func``.
"""

from __future__ import annotations

from collections.abc import Sequence
from threading import get_ident
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

from .continuation import Continuation, _ended_slow_locked, _same_values, begin_locked, end_locked
from .instruments import watched_call
from .layout import compiled_module
from .waiters import deliver, take_ready_locked, wake_all

if TYPE_CHECKING:
    from .runtime import CPU, RuntimeCore


def dispatch(rt: RuntimeCore, cpu: CPU, bands: Sequence[int], limit: int = 1) -> Continuation[Any] | None:
    """Run up to ``limit`` continuations that ``cpu`` may start from its run
    queues of ``bands`` (band indices, in order: ``ALL_BANDS`` for the
    simulator, one band for a worker).  Returns the last one run, or None if
    none could start."""
    ready = cpu.ready
    for band in bands:
        if ready[band]:
            break
    else:
        if rt._callbacks_ready:  # fired by a stop or a replacement: a CPU with time wakes them
            deliver(rt)
        return None  # a hint read without the lock: callers re-check under it
    lock = rt._lock
    trace = rt._trace
    # False, True (a real-time runtime: time the functions) or a Watch
    # (instruments or a slow threshold: see kcont._core.instruments).
    time_funcs = rt._time_funcs
    # Continuations run by this call, kept until the state lock is released
    # for good: a continuation nobody else references dies with our last
    # reference, and the __del__ of its function, argument or context values
    # (user code, which may use the runtime) must not run with the lock held.
    finished: list[Continuation[Any]] = []
    me = get_ident()
    lock.acquire()
    try:
        while limit:
            kc = None
            for band in bands:
                rqs = cpu.rqs[band]
                mask = ready[band]
                while mask:
                    # Lowest set bit: the highest-priority queue with work.  A
                    # take that finds nothing startable clears its bit.
                    kc = rqs[(mask & -mask).bit_length() - 1].take_locked()
                    if kc is not None:
                        break
                    mask = ready[band]
                if kc is not None:
                    break
            if kc is None:
                break
            limit -= 1
            ctx = begin_locked(kc, me)
            rt._running += 1
            func = kc._func
            arg = kc._arg
            rq = kc._rq
            if trace is not None:
                rt._record("start", kc, cpu)
            lock.release()
            failure: BaseException | None = None
            elapsed = 0
            if time_funcs:
                if time_funcs is True:
                    started = perf_counter_ns()
                    try:
                        ctx.run(func, arg, kc)
                    except BaseException as exc:  # contained, reported below
                        failure = exc
                    elapsed = perf_counter_ns() - started
                else:
                    failure, elapsed = watched_call(rt, time_funcs, cpu, kc, ctx, func, arg)
            else:
                try:
                    ctx.run(func, arg, kc)
                except BaseException as exc:  # contained, reported below
                    failure = exc
            # Our references to what func may have replaced (set_arg, set_func,
            # variables of a context copy) are dropped before the lock is taken.
            del ctx, func, arg
            held = kc._release  # only this thread changes it while RUNNING
            lock.acquire()
            rt._running -= 1  # before end_locked: a waiter for idleness it fires must see it
            fired = end_locked(kc)
            rq.invoked += 1
            if elapsed:
                rq.func_ns += elapsed
            finished.append(kc)
            if held is not None:
                # Released only now, so that whoever takes it next sees the
                # invocation ended (INVOKING clear), and never under the state
                # lock, since a release wakes parked sub-queues, which take it.
                lock.release()
                try:
                    held.release()
                except BaseException as exc:  # e.g. func released it without set_mutex
                    if failure is not None and exc.__context__ is None:
                        exc.__context__ = failure  # chained as a `finally` clause would
                    failure = exc
                lock.acquire()
            if failure is None:
                if trace is not None:
                    rt._record("end", kc, cpu)
            else:
                rq.exceptions += 1
                rt._failed += 1
                if trace is not None:
                    rt._record("raise", kc, cpu, failure)
            if fired:
                # Waiters of this invocation's end (kcont.aio, submit): woken
                # once it is fully accounted, before the next one starts, and
                # with no lock held.
                woken = take_ready_locked(rt)
                lock.release()
                try:
                    wake_all(woken)
                    del woken  # the last references to them go with no lock held
                finally:
                    lock.acquire()
            if failure is not None:
                lock.release()
                try:
                    rt._report_exception(kc, failure)
                finally:
                    # The exception's traceback holds this frame: keeping it
                    # would keep every continuation run here alive until the
                    # garbage collector breaks the cycle.
                    del failure
                    lock.acquire()
    finally:
        _dropped = rt._take_dropped_locked()  # dies after the release below
        lock.release()
    return finished[-1] if finished else None


#: The pure-Python dispatch function, whichever core runs (the compiled one
#: hands traced and instrumented runtimes to it).
reference_dispatch = dispatch

_ckcont = compiled_module()
if _ckcont is not None:
    # The compiled dispatch runs the same sequence, handing the rare parts
    # (parking, the consequences of an end, waiters, exceptions) to these
    # functions, and a traced or instrumented runtime to the reference.
    _ckcont._setup(
        {
            "same_values": _same_values,
            "dispatch": dispatch,
            "ended_slow_locked": _ended_slow_locked,
            "take_ready_locked": take_ready_locked,
            "wake_all": wake_all,
            "deliver": deliver,
            "Continuation": Continuation,
        }
    )
    dispatch = _ckcont.dispatch

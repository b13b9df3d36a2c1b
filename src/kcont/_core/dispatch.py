"""The dispatch function: the only place where continuation functions are called.

What it owns
    :func:`run_one` picks the next continuation a CPU may start, runs it and
    accounts for it.  Both runtimes call it (the simulated runtime from
    ``step()``, each worker thread of the threaded runtime from its loop), so
    the ordering and the state transitions are the same everywhere.

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
       context captured by ``schedule`` (as asyncio's ``call_soon``), with the
       thread's current CPU set to ``cpu``.
    4. Release the lock this invocation must release (its own, or the one
       handed over by ``set_mutex`` inside ``func``), then, under the state
       lock, end the invocation and count it.  Nothing but the continuation
       object itself, which the runtime keeps alive, is touched after ``func``
       returns.
    5. An exception from ``func`` (or from releasing its lock) goes to the
       runtime's exception handler, after the bookkeeping, and never escapes
       to the worker.

Locking
    Takes the state lock twice per invocation, never across ``func``.
"""

from __future__ import annotations

from collections.abc import Sequence
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

from .continuation import begin_locked, end_locked
from .runtime import _tls

if TYPE_CHECKING:
    from .continuation import Continuation
    from .runqueue import RunQueue
    from .runtime import CPU, RuntimeCore


def run_one(rt: RuntimeCore, cpu: CPU, bands: Sequence[list[RunQueue]]) -> Continuation[Any] | None:
    """Run the next continuation ``cpu`` may start from ``bands`` (lists of run
    queues, highest priority first).  Returns it, or None if none could start."""
    with rt._lock:
        kc = None
        for rqs in bands:
            for rq in rqs:
                if rq.fifo or rq.woken:
                    kc = rq.take_locked()
                    if kc is not None:
                        break
            if kc is not None:
                break
        else:
            return None
        begin_locked(kc)
        rt._running += 1
        func = kc._func
        arg = kc._arg
        ctx = kc._ctx
        nsched = kc._nsched
        rq = kc._rq
        if rt._trace is not None:
            rt._record("start", kc, cpu)
    previous_cpu = _tls.cpu
    _tls.cpu = cpu
    failure: BaseException | None = None
    started = perf_counter_ns()
    try:
        ctx.copy().run(func, arg, kc)  # type: ignore[union-attr]
    except BaseException as exc:
        failure = exc
    elapsed = perf_counter_ns() - started
    _tls.cpu = previous_cpu
    lock = kc._release  # only this thread changes it while RUNNING
    if lock is not None:
        try:
            lock.release()
        except BaseException as exc:
            if failure is None:
                failure = exc
    with rt._lock:
        end_locked(kc, nsched)
        rt._running -= 1
        rq.invoked += 1
        rq.func_ns += elapsed
        if failure is not None:
            rq.exceptions += 1
            rt._failed += 1
        if rt._trace is not None:
            rt._record("end" if failure is None else "raise", kc, cpu, failure)
    if failure is not None:
        rt._report_exception(kc, failure)
    return kc

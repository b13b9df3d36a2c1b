"""kcont: kernel continuations for Python.

Callouts (timers), softints and workqueues in one cheap framework, after the
NetBSD "Kernel continuations" proposal.  A continuation is a reusable handle on
deferred work: a function, an argument, a workqueue (priority, per-CPU or
shared) and an optional lock.  Schedule it to run now or in ``nticks`` ticks,
on a given CPU; stop, halt or destroy it; the same state machine, ordering
rules and dispatch function run on a deterministic simulated runtime
(:class:`SimRuntime`) and on real threads (:class:`Runtime`).

The Pythonic API is the primary one; the seed's ``kcont_*`` names live in
:mod:`kcont.capi` and are re-exported here.  :mod:`kcont.aio` (imported on
its own, as it imports asyncio) awaits flushes, halts and idleness from
asyncio.

The hot paths (scheduling, the timer wheel, dispatch) run on a compiled core
when ``pip install`` could build it with a C compiler, else on the pure-Python
one; both behave the same.  :data:`implementation` says which runs, and the
environment variable ``KCONT_PURE_PYTHON=1`` forces the pure one.
"""

from __future__ import annotations

from . import capi
from ._core import layout as _layout
from ._core.continuation import Continuation, check_func
from ._core.instruments import Instrument
from ._core.mutex import Mutex
from ._core.runtime import CPU, RuntimeCore, ShutdownAccount, bind_cpu, curcpu, current_runtime
from ._core.stats import CounterStats, QueueStats, RuntimeStats, ThreadedRuntimeStats, WorkerStats
from ._core.workqueue import (
    MAXPRI,
    PRI_SOFT_MIN,
    PredefinedQueue,
    Workqueue,
)
from .capi import (
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
    wq_prihigh,
    wq_prilow,
    wq_primedhigh,
    wq_primedlow,
    wq_softbio,
    wq_softclock,
    wq_softnet,
    wq_softserial,
)
from .errors import (
    BusyError,
    DestroyedError,
    ForkedRuntimeError,
    HaltTimeoutError,
    InvalidArgumentError,
    KcontError,
    MutexError,
    NoPerCPUQueueError,
    NoRuntimeError,
    ShutdownError,
    SimDeadlockError,
    WorkqueueReleasedError,
    WouldDeadlockError,
)
from .periodic import Periodic, PeriodicRun
from .sim import SimRuntime, TraceEvent
from .threaded import Runtime

__version__ = "0.1.0"

#: Which core runs the hot paths in this process, ``"compiled"`` (the C
#: extension built at install time) or ``"python"`` (the pure-Python core,
#: used when no C compiler was found at install time, or when the environment
#: variable ``KCONT_PURE_PYTHON=1`` is set).  ``kcont --version`` says which,
#: and why the pure core runs.
implementation: str = _layout.IMPLEMENTATION

__all__ = [
    "CPU",
    "MAXPRI",
    "PRI_HIGH",
    "PRI_LOW",
    "PRI_MEDHIGH",
    "PRI_MEDLOW",
    "PRI_SOFTBIO",
    "PRI_SOFTCLOCK",
    "PRI_SOFTNET",
    "PRI_SOFTSERIAL",
    "PRI_SOFT_MIN",
    "WQ_PERCPU",
    "BusyError",
    "Continuation",
    "CounterStats",
    "DestroyedError",
    "ForkedRuntimeError",
    "HaltTimeoutError",
    "Instrument",
    "InvalidArgumentError",
    "KcontError",
    "Mutex",
    "MutexError",
    "NoPerCPUQueueError",
    "NoRuntimeError",
    "Periodic",
    "PeriodicRun",
    "PredefinedQueue",
    "QueueStats",
    "Runtime",
    "RuntimeCore",
    "RuntimeStats",
    "ShutdownAccount",
    "ShutdownError",
    "SimDeadlockError",
    "SimRuntime",
    "ThreadedRuntimeStats",
    "TraceEvent",
    "WorkerStats",
    "Workqueue",
    "WorkqueueReleasedError",
    "WouldDeadlockError",
    "__version__",
    "bind_cpu",
    "capi",
    "check_func",
    "curcpu",
    "current_runtime",
    "implementation",
    "kcont_ack",
    "kcont_active",
    "kcont_create",
    "kcont_destroy",
    "kcont_expired",
    "kcont_getmutex",
    "kcont_halt",
    "kcont_invoking",
    "kcont_pending",
    "kcont_schedule",
    "kcont_setarg",
    "kcont_setfunc",
    "kcont_setmutex",
    "kcont_stop",
    "kcont_workqueue_acquire",
    "kcont_workqueue_release",
    "wq_prihigh",
    "wq_prilow",
    "wq_primedhigh",
    "wq_primedlow",
    "wq_softbio",
    "wq_softclock",
    "wq_softnet",
    "wq_softserial",
]

"""The seed's C-style API: ``kcont_*`` functions, ``wq_*`` queues, ``WQ_PERCPU``.

A thin layer over the Pythonic API (:class:`kcont.Continuation`,
:class:`kcont.Workqueue`, the runtimes).  It returns what the seed says:

* ``kcont_schedule`` and ``kcont_workqueue_release`` return 0 or an errno
  value (``errno.EBUSY``, ``errno.ENOENT``, ``errno.EINVAL``);
* ``kcont_setarg`` and ``kcont_setfunc`` (``void`` in the seed) return 0, or
  ``EINVAL`` on a destroyed continuation and ``EBUSY`` where the Pythonic API
  raises :class:`~kcont.BusyError`;
* the predicates, ``kcont_stop``, ``kcont_halt`` and ``kcont_ack`` return bools.

Misuse (wrong types, a mutex rule broken, a shut-down runtime) raises, as it
does in the Pythonic API: an errno is for conditions a correct caller handles,
not for bugs (docs/semantics.md, "Errors").
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

from ._core.continuation import Continuation
from ._core.layout import compiled_module
from ._core.mutex import Mutex
from ._core.runtime import CPU, current_runtime
from ._core.workqueue import (
    PREDEFINED,
    PRI_HIGH,
    PRI_LOW,
    PRI_MEDHIGH,
    PRI_MEDLOW,
    PRI_SOFTBIO,
    PRI_SOFTCLOCK,
    PRI_SOFTNET,
    PRI_SOFTSERIAL,
    WQ_PERCPU,
    PredefinedQueue,
    Workqueue,
)
from .errors import BusyError, DestroyedError, InvalidArgumentError, KcontError

__all__ = [
    "PRI_HIGH",
    "PRI_LOW",
    "PRI_MEDHIGH",
    "PRI_MEDLOW",
    "PRI_SOFTBIO",
    "PRI_SOFTCLOCK",
    "PRI_SOFTNET",
    "PRI_SOFTSERIAL",
    "WQ_PERCPU",
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

(
    wq_softserial,
    wq_softnet,
    wq_softbio,
    wq_softclock,
    wq_prihigh,
    wq_primedhigh,
    wq_primedlow,
    wq_prilow,
) = PREDEFINED

Func = Callable[[Any, Continuation[Any]], object]


def _kc(kc: object) -> Continuation[Any]:
    if not isinstance(kc, Continuation):
        raise TypeError(f"expected a kcont continuation, not {type(kc).__name__}")
    return kc


def kcont_create(
    wq: Workqueue | PredefinedQueue, lock: Mutex | None, func: Func, arg: Any, flags: int = 0
) -> Continuation[Any]:
    """Create a continuation on ``wq`` calling ``func(arg, kc)`` under ``lock``.

    ``flags`` must be 0 (reserved for extensibility): anything else raises
    :class:`~kcont.InvalidArgumentError`.
    """
    if not isinstance(flags, int) or isinstance(flags, bool):
        raise TypeError(f"flags must be an int, not {type(flags).__name__}")
    if flags != 0:
        raise InvalidArgumentError(f"kcont_create flags must be 0, not {flags:#x}")
    return Continuation(wq, func, arg, lock=lock)


def kcont_schedule(kc: Continuation[Any], ci: CPU | None, nticks: int) -> int:
    """Schedule ``kc`` on ``ci`` in ``nticks`` ticks (0: without delay).

    Returns 0, ``EBUSY`` (INVOKING), ``ENOENT`` (``ci`` given on a queue
    without per-CPU queues) or ``EINVAL`` (negative ticks, ``ci`` of another
    runtime, destroyed continuation).  A shut-down runtime raises
    :class:`~kcont.ShutdownError`, wrong types ``TypeError``, as in the
    Pythonic API.
    """
    try:
        _kc(kc).schedule(nticks, ci)
    except KcontError as refused:
        if refused.errno is None:  # misuse (ShutdownError...): raised, as in the Pythonic API
            raise
        return refused.errno
    return 0


_ckcont = compiled_module()
if _ckcont is not None:
    # The compiled core's kcont_schedule: the same fast path as
    # Continuation.schedule for an exact Continuation and ci None; everything
    # else (a refusal's errno included) is this reference function's.
    _ckcont._setup({"kcont_schedule": kcont_schedule})
    kcont_schedule = _ckcont.kcont_schedule


def kcont_destroy(kc: Continuation[Any]) -> None:
    """Halt ``kc`` and refuse every later schedule or change."""
    _kc(kc).destroy()


def kcont_getmutex(kc: Continuation[Any]) -> Mutex | None:
    """The lock currently associated with ``kc``."""
    return _kc(kc).mutex


def kcont_setarg(kc: Continuation[Any], arg: Any) -> int:
    """Update ``arg``; the caller must hold ``kc``'s lock if it has one.
    Returns 0, or ``EINVAL`` if ``kc`` was destroyed."""
    try:
        _kc(kc).set_arg(arg)
    except DestroyedError:
        return errno.EINVAL
    return 0


def kcont_setmutex(kc: Continuation[Any], lock: Mutex | None) -> Mutex | None:
    """Replace ``kc``'s lock and return the previous one (see
    :meth:`kcont.Continuation.set_mutex` for the rules)."""
    return _kc(kc).set_mutex(lock)


def kcont_setfunc(kc: Continuation[Any], func: Func, arg: Any) -> int:
    """Update ``func`` and ``arg`` (``func(arg, kc)``, as ``kcont_create``).
    Returns 0, ``EBUSY`` (lock-less and PENDING or INVOKING) or ``EINVAL``
    (destroyed)."""
    try:
        _kc(kc).set_func(func, arg)
    except BusyError:
        return errno.EBUSY
    except DestroyedError:
        return errno.EINVAL
    return 0


def kcont_stop(kc: Continuation[Any]) -> bool:
    """Stop the timer and cancel an invocation that has not started.  True
    iff the invocation of the current scheduling could not be prevented."""
    return _kc(kc).stop()


def kcont_halt(kc: Continuation[Any], interlock: Mutex | None = None) -> bool:
    """Stop, then wait until no invocation runs (returns at once from ``kc``'s
    own function); ``interlock`` is released while waiting.  As ``kcont_stop``."""
    return _kc(kc).halt(interlock)


def kcont_pending(kc: Continuation[Any]) -> bool:
    return _kc(kc).pending


def kcont_expired(kc: Continuation[Any]) -> bool:
    return _kc(kc).expired


def kcont_active(kc: Continuation[Any]) -> bool:
    return _kc(kc).active


def kcont_invoking(kc: Continuation[Any]) -> bool:
    return _kc(kc).invoking


def kcont_ack(kc: Continuation[Any]) -> bool:
    """Clear INVOKING; returns its previous value."""
    return _kc(kc).ack()


def kcont_workqueue_acquire(pri: int, flags: int = 0) -> Workqueue:
    """The current runtime's queue for ``(pri, flags)``: the same criteria
    give the same queue.  ``flags`` may be ``WQ_PERCPU``."""
    return current_runtime().acquire_workqueue(pri, flags)


def kcont_workqueue_release(wq: Workqueue) -> int:
    """Release an acquired queue.  Returns 0 (freed on the last release),
    ``EBUSY`` (last release while continuations are bound: nothing changes)
    or ``EINVAL`` (predefined queue, or released more often than acquired)."""
    if isinstance(wq, PredefinedQueue):
        return errno.EINVAL
    if not isinstance(wq, Workqueue):
        raise TypeError(f"expected a kcont workqueue, not {type(wq).__name__}")
    return wq.rt._release_workqueue(wq)

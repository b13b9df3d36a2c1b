"""Exceptions raised by kcont.

Three tiers (see docs/semantics.md, "Errors"):

* Caller misuse (a non-callable function, a lock of the wrong type, a mutex
  rule broken) raises a specific exception at the call, in both the Pythonic
  and the C-style API.  Nothing is deferred to a worker.
* Conditions the seed names (``EBUSY``, ``ENOENT``, ``EINVAL``) raise an
  exception carrying ``errno`` in the Pythonic API; the C-style layer
  (:mod:`kcont.capi`) returns that errno instead.
* An exception raised *by a continuation function* is never raised here: it
  goes to the runtime's exception handler and is counted.
"""

from __future__ import annotations

import errno as _errno

__all__ = [
    "BusyError",
    "DestroyedError",
    "ForkedRuntimeError",
    "HaltTimeoutError",
    "InvalidArgumentError",
    "KcontError",
    "MutexError",
    "NoPerCPUQueueError",
    "NoRuntimeError",
    "ShutdownError",
    "SimDeadlockError",
    "WorkqueueReleasedError",
    "WouldDeadlockError",
]


class KcontError(Exception):
    """Base class of every kcont exception.

    ``errno`` is the value the C-style layer returns for this condition, or
    ``None`` when the condition is misuse that the C-style layer raises too.
    """

    errno: int | None = None


class BusyError(KcontError):
    """The continuation is INVOKING: an invocation is committed and not yet
    acknowledged or finished (``EBUSY``).  Call ``ack()`` first to re-arm from
    the continuation's own function."""

    errno = _errno.EBUSY


class NoPerCPUQueueError(KcontError):
    """A CPU was given but the workqueue has no per-CPU queues (``ENOENT``)."""

    errno = _errno.ENOENT


class InvalidArgumentError(KcontError, ValueError):
    """An argument has the right type but an invalid value (``EINVAL``):
    negative ticks, a CPU of another runtime, a priority out of range..."""

    errno = _errno.EINVAL


class DestroyedError(KcontError):
    """The continuation was destroyed; it refuses every later change (``EINVAL``)."""

    errno = _errno.EINVAL


class WorkqueueReleasedError(KcontError):
    """The workqueue was released and freed; it can no longer be used (``EINVAL``)."""

    errno = _errno.EINVAL


class MutexError(KcontError, RuntimeError):
    """A :class:`kcont.Mutex` rule was broken: released by a thread that does
    not own it, acquired again by its owner, or a continuation's lock not held
    where the seed requires it."""


class ShutdownError(KcontError, RuntimeError):
    """The runtime is shut down (or shutting down) and accepts no new work."""


class ForkedRuntimeError(ShutdownError):
    """The runtime belongs to the parent process: ``os.fork()`` copied it
    into this child without its threads, so it can run nothing here.  Every
    operation on it (and on its continuations and queues) raises this;
    predicates still read.  Create a new runtime in the child."""


class NoRuntimeError(KcontError, RuntimeError):
    """No runtime is current: create continuations inside ``with runtime:`` or
    on a workqueue acquired from a runtime."""


class HaltTimeoutError(KcontError, TimeoutError):
    """``halt()``, ``destroy()`` or ``flush()`` gave up waiting for an invocation."""


class WouldDeadlockError(KcontError, RuntimeError):
    """A wait that could never end, because the caller itself blocks what it
    waits for, is refused instead of hanging: ``flush()`` from a soft-level
    function on an invocation queued for its own CPU's soft worker (the
    calling thread), ``wait_idle()`` from inside a continuation's function.
    Nothing was changed."""


class SimDeadlockError(WouldDeadlockError):
    """The simulated runtime was asked to wait for something that can never
    happen on its single thread (for example a re-entrant step, or a wait
    inside a continuation's function)."""

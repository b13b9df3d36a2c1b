"""Callback waiters: waits that hold no thread, completed by the transition
that satisfies them.

What it owns
    A :class:`CallbackWaiter` waits for a condition on the runtime's state (a
    continuation flushed or no longer running, the runtime idle, a one-shot
    invocation over) with no thread blocked on it.  :mod:`kcont.aio` completes
    an asyncio future with one; ``RuntimeCore.submit`` cancels the future of an
    invocation that was stopped before it ran.

How a wait is registered and completed
    1. Under the state lock, in the same critical section as the decision to
       wait (the rule of every wait, see :mod:`kcont._core.continuation`),
       :func:`register_locked` files the waiter under its continuation (None:
       the runtime as a whole) in ``rt._callback_waiters`` and counts it in
       ``rt._ended_waiters``, so that every transition that ends, cancels or
       replaces an invocation takes the path that notifies waiters.
    2. That transition calls :func:`fire_locked`, state lock held: each waiter
       of the continuation concerned, and each waiter of the whole runtime,
       whose ``ready_locked()`` is now true leaves the registry and joins
       ``rt._callbacks_ready``.  ``ready_locked`` reads kcont's own state only:
       no user code runs under the lock.
    3. Once the lock is released, each fired waiter's ``wake()`` (which calls
       into an event loop or a future's callbacks) runs exactly once: the
       dispatch function wakes the waiters of the invocation that just ended
       before it starts another one; a transition made elsewhere (a stop, a
       replacement, a shutdown) asks the runtime to deliver them
       (``RuntimeCore._kick_callbacks_locked``: the threaded runtime's timer
       thread does it), and a call of the dispatch function that finds
       nothing to run delivers what is left (on the simulated runtime:
       ``run_until_idle`` and ``advance`` always end with one).

    A waiter given up (its task was cancelled) leaves with
    :func:`unregister_locked`; one already fired is woken all the same, and
    its ``wake`` must then do nothing harmful (an asyncio future already
    cancelled is left alone).

Cost
    Nothing while no callback waiter is registered: the core only looks at
    ``rt._callback_waiters`` on its slow path (``rt._ended_waiters`` non-zero);
    the dispatch function tests one local per invocation, and
    ``rt._callbacks_ready`` only when it finds nothing to run.

Locking
    S (the state lock): ``rt._callback_waiters``, ``rt._callbacks_ready``,
    ``rt._ended_waiters`` and ``CallbackWaiter.registered``.  ``wake()`` is
    called with no lock of the runtime held.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .ki import protected

if TYPE_CHECKING:
    from .continuation import Continuation
    from .runtime import RuntimeCore

logger = logging.getLogger("kcont")


class CallbackWaiter:
    """A wait completed by a callback: subclasses define ``ready_locked``
    (the condition, state lock held, no user code) and ``wake`` (what to do
    once it holds, no lock held).

    ``kc`` is the continuation whose transitions can satisfy the condition,
    or None if any continuation's can (the runtime becoming idle).
    """

    __slots__ = ("kc", "registered")

    def __init__(self, kc: Continuation[Any] | None) -> None:
        self.kc = kc
        self.registered = False  # S

    def ready_locked(self) -> bool:
        raise NotImplementedError

    def wake(self) -> None:
        raise NotImplementedError


def register_locked(rt: RuntimeCore, waiter: CallbackWaiter) -> None:
    """File ``waiter`` until a transition satisfies it (state lock held).
    The caller has just checked, in the same critical section, that it does
    not hold yet."""
    waiters = rt._callback_waiters.get(waiter.kc)
    if waiters is None:
        rt._callback_waiters[waiter.kc] = {waiter: None}
    else:
        waiters[waiter] = None
    waiter.registered = True
    rt._ended_waiters += 1


def unregister_locked(rt: RuntimeCore, waiter: CallbackWaiter) -> bool:
    """Withdraw ``waiter`` (state lock held).  Returns False if it was no
    longer registered (it fired, or was withdrawn already)."""
    if not waiter.registered:
        return False
    waiters = rt._callback_waiters[waiter.kc]
    del waiters[waiter]
    if not waiters:
        del rt._callback_waiters[waiter.kc]
    waiter.registered = False
    rt._ended_waiters -= 1
    return True


def fire_locked(rt: RuntimeCore, kc: Continuation[Any], kick: bool) -> bool:
    """``kc`` ended, or an invocation of it was cancelled or replaced (state
    lock held): move every waiter now satisfied to ``rt._callbacks_ready``.
    With ``kick``, the caller will not wake them itself: the runtime is asked
    to.  Returns True if any waiter fired."""
    registry = rt._callback_waiters
    fired = False
    for key in (kc, None):
        waiters = registry.get(key)
        if not waiters:
            continue
        ready = [waiter for waiter in waiters if waiter.ready_locked()]
        if not ready:
            continue
        for waiter in ready:
            del waiters[waiter]
            waiter.registered = False
        if not waiters:
            del registry[key]
        rt._ended_waiters -= len(ready)
        rt._callbacks_ready.extend(ready)
        fired = True
    if fired and kick:
        rt._kick_callbacks_locked()
    return fired


@protected
def take_ready_locked(rt: RuntimeCore) -> list[CallbackWaiter]:
    """Hand over the fired waiters (state lock held); wake them with
    :func:`wake_all` once it is released."""
    ready = rt._callbacks_ready
    if ready:
        rt._callbacks_ready = []
    return ready


def wake_all(ready: list[CallbackWaiter]) -> None:
    """Wake fired waiters (no lock held).  A ``wake`` that raises is logged:
    it never kills the worker or timer thread that delivers it."""
    for waiter in ready:
        try:
            waiter.wake()
        except BaseException:
            logger.exception("kcont could not wake %r", waiter)


def deliver(rt: RuntimeCore) -> None:
    """Wake the waiters fired so far (no lock held)."""
    with rt._lock:
        ready = take_ready_locked(rt)
    if ready:
        wake_all(ready)

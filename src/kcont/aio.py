"""asyncio on kcont: await a flush, a halt or an idle runtime without
blocking the event loop.

What it owns
    :func:`flush`, :func:`halt` and :func:`idle`, the coroutine forms of
    ``Continuation.flush()``, ``Continuation.halt()`` (without an interlock)
    and ``Runtime.wait_idle()``, with the same semantics (docs/semantics.md,
    "Halt" and "Flush").  To run a function on a workqueue and await its
    result, use ``await asyncio.wrap_future(rt.submit(func, arg))``.

How an await waits
    No thread blocks and none is started: under the runtime's state lock, in
    the same critical section as the decision to wait, the coroutine
    registers a callback waiter holding an asyncio future
    (``kcont._core.waiters``).  The transition that satisfies it (the
    invocation's end, its cancellation by a stop, its replacement by a new
    scheduling) fires it under the state lock; once that lock is released,
    the thread that made the transition (or the threaded runtime's timer
    thread, for a stop) wakes the loop with ``loop.call_soon_threadsafe``.
    Thousands of awaits cost thousands of small objects, not threads.

Timeouts and cancellation
    There is no ``timeout`` argument: use ``asyncio.wait_for`` (or
    ``asyncio.timeout``).  Cancelling the awaiting task withdraws its waiter;
    a cancelled :func:`halt` also leaves the halting set and stops the
    continuation once more, as a ``halt`` that timed out does.

On the simulated runtime
    A :class:`~kcont.SimRuntime` makes progress only when it is stepped.  An
    await registers its waiter as on the threaded runtime and completes when
    some code steps the simulator (``step``, ``run_until_idle``, ``advance``),
    typically another task of the same loop that drives it: at the step that
    ends the invocation, or, for a stop or a replacement made outside
    ``kcont.aio``, at the next step that finds a CPU with nothing to run
    (``run_until_idle`` and ``advance`` always end with one).  Nothing steps
    it for you, and an await nobody drives waits for ever (give it a
    timeout).
    The synchronous ``kc.flush()`` / ``kc.halt()``, which step the simulator
    themselves, remain the simple choice there.

Context
    Coroutines: await them from a task of a running event loop, never from a
    continuation's function.  Any loop, any number of loops: each waiter
    wakes its own.

Locking
    Takes the state lock briefly to decide and register, and again to
    withdraw; never calls the loop or user code with it held.
"""

from __future__ import annotations

import asyncio
from threading import get_ident
from typing import Any

from ._core.continuation import Continuation
from ._core.flags import QUEUED, RUNNING
from ._core.runtime import RuntimeCore
from ._core.waiters import CallbackWaiter, deliver, register_locked, unregister_locked

__all__ = ["flush", "halt", "idle"]


class _LoopWaiter(CallbackWaiter):
    """A callback waiter that completes an asyncio future of its loop.
    Created before the state lock is taken: ``create_future`` is the loop's
    code."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, kc: Continuation[Any] | None) -> None:
        super().__init__(kc)
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()

    def wake(self) -> None:
        try:
            self.loop.call_soon_threadsafe(_resolve, self.future)
        except RuntimeError:
            pass  # the loop is closed: nobody awaits any more


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # cancelled meanwhile: nothing to do
        future.set_result(None)


class _FlushWaiter(_LoopWaiter):
    """Until no invocation committed by serial ``target`` (set under the
    state lock, when the wait is decided) is queued or running."""

    __slots__ = ("target",)

    def __init__(self, loop: asyncio.AbstractEventLoop, kc: Continuation[Any]) -> None:
        super().__init__(loop, kc)
        self.target = 0

    def ready_locked(self) -> bool:
        kc: Continuation[Any] = self.kc  # type: ignore[assignment]
        return kc._flushed_locked(self.target)


class _NotRunningWaiter(_LoopWaiter):
    """Until the continuation is not RUNNING (a halt's wait)."""

    __slots__ = ()

    def ready_locked(self) -> bool:
        return not self.kc._flags & RUNNING  # type: ignore[union-attr]


class _IdleWaiter(_LoopWaiter):
    """Until nothing is queued (parked entries included) or running."""

    __slots__ = ("rt",)

    def __init__(self, loop: asyncio.AbstractEventLoop, rt: RuntimeCore) -> None:
        super().__init__(loop, None)
        self.rt = rt

    def ready_locked(self) -> bool:
        rt = self.rt
        return not rt._running and not rt._queued_locked()


def _check_kc(kc: object) -> Continuation[Any]:
    if not isinstance(kc, Continuation):
        raise TypeError(f"expected a kcont.Continuation, not {type(kc).__name__}")
    return kc


async def _wait(rt: RuntimeCore, waiter: _LoopWaiter) -> None:
    """Await ``waiter``, registered by the caller; withdraw it if the await
    ends otherwise (the task was cancelled)."""
    try:
        await waiter.future
    except BaseException:
        with rt._lock:
            unregister_locked(rt, waiter)
        raise


def _wake_fired(rt: RuntimeCore) -> None:
    """Wake waiters fired by a stop made here (no lock held): the runtime
    would too, but the simulator only at its next step."""
    if rt._callbacks_ready:
        deliver(rt)


async def flush(kc: Continuation[Any]) -> bool:
    """Wait until the invocations of ``kc`` committed when it is called (a
    running one, a queued one) are over: ended, cancelled or replaced
    (``Continuation.flush``).  Nothing is cancelled; a pending timer is left
    alone.

    Returns:
        True if there was something to wait for.

    Raises:
        TypeError: ``kc`` is not a continuation.
    """
    kc = _check_kc(kc)
    waiter = _FlushWaiter(asyncio.get_running_loop(), kc)
    rt: RuntimeCore = kc._wq.rt
    with rt._lock:
        if not kc._flags & (QUEUED | RUNNING) or kc._runner == get_ident():
            return False
        waiter.target = kc._commits  # invocations are numbered: see Continuation.flush
        register_locked(rt, waiter)
    await _wait(rt, waiter)
    return True


async def halt(kc: Continuation[Any]) -> bool:
    """Stop ``kc``, then wait until no invocation of it runs
    (``Continuation.halt`` without an interlock): registered as halting in
    the same critical section as the stop, so every invocation that ends
    meanwhile is stopped again, and stopped once more when the wait ends.

    Returns:
        As ``Continuation.stop``: True iff the invocation of the current
        scheduling could not be prevented.

    Raises:
        TypeError: ``kc`` is not a continuation.
    """
    kc = _check_kc(kc)
    waiter = _NotRunningWaiter(asyncio.get_running_loop(), kc)
    rt: RuntimeCore = kc._wq.rt
    with rt._lock:
        expired = kc._stop_locked()
        wait = bool(kc._flags & RUNNING) and kc._runner != get_ident()
        if wait:
            kc._halting_locked()
            register_locked(rt, waiter)
    if not wait:
        _wake_fired(rt)
        return expired
    try:
        await _wait(rt, waiter)
    finally:
        with rt._lock:
            kc._halted_locked()
        _wake_fired(rt)
    return expired


async def idle(rt: RuntimeCore) -> None:
    """Wait until nothing is queued (entries parked on a lock included) or
    running on ``rt`` (``Runtime.wait_idle``).  Pending timers do not count.

    Raises:
        TypeError: ``rt`` is not a kcont runtime.
    """
    if not isinstance(rt, RuntimeCore):
        raise TypeError(f"expected a kcont runtime, not {type(rt).__name__}")
    waiter = _IdleWaiter(asyncio.get_running_loop(), rt)
    with rt._lock:
        if waiter.ready_locked():
            return
        register_locked(rt, waiter)
    await _wait(rt, waiter)

"""One-shot work with a future: ``RuntimeCore.submit``.

What it owns
    :func:`submit` runs ``func(arg)`` once on a workqueue, through a one-shot
    continuation, and returns a :class:`concurrent.futures.Future` of its
    result, like ``Executor.submit``.  The function takes one argument (not
    the ``(arg, kc)`` of a continuation): the continuation is an internal
    detail, destroyed after it ran, that the function could not re-schedule.

Life of a one-shot
    * The continuation is created and scheduled immediately; then a callback
      waiter (:mod:`kcont._core.waiters`) is registered for the end of that
      invocation, whatever ends it.
    * It runs: ``set_running_or_notify_cancel`` decides, atomically with a
      ``cancel()``, whether the function runs; its result or exception goes
      to the future; the continuation destroys itself on the way out.
    * The future is cancelled first: its done-callback stops the
      continuation, so the function never runs.
    * The invocation is stopped otherwise (``shutdown(cancel=True)``): the
      waiter fires, and its wake cancels the future, so nobody awaits for
      ever, and destroys the continuation.  That wake runs on whichever
      thread delivers it (the threaded runtime's timer thread, the thread
      that steps the simulator), and so do the future's done-callbacks.

Locking
    The waiter is registered under the state lock, like every wait; futures
    are completed and continuations stopped or destroyed with no lock held.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from types import BuiltinFunctionType, FunctionType, MethodType
from typing import TYPE_CHECKING, Any

from ..errors import DestroyedError
from .flags import QUEUED, RUNNING
from .waiters import CallbackWaiter, register_locked

if TYPE_CHECKING:
    from .continuation import Continuation
    from .mutex import Mutex
    from .runtime import CPU, RuntimeCore


class _Job:
    __slots__ = ("arg", "func", "future")

    def __init__(self, func: Callable[[Any], Any], arg: Any, future: Future[Any]) -> None:
        self.func = func
        self.arg = arg
        self.future = future


def _run(job: _Job, kc: Continuation[_Job]) -> None:
    """The one-shot continuation's function."""
    future = job.future
    try:
        if future.set_running_or_notify_cancel():
            try:
                result = job.func(job.arg)
            except BaseException as exc:  # goes to the future, as in Executor.submit
                future.set_exception(exc)
            else:
                future.set_result(result)
    finally:
        _destroy(kc)  # from its own function: finished once it returns


def _destroy(kc: Continuation[Any]) -> None:
    try:
        kc.destroy()
    except DestroyedError:
        pass  # the function and a stop's wake may both get here


class _EndWaiter(CallbackWaiter):
    """Fires when the one-shot's invocation is over: ran, or stopped."""

    __slots__ = ("future",)

    def __init__(self, kc: Continuation[Any], future: Future[Any]) -> None:
        super().__init__(kc)
        self.future = future

    def ready_locked(self) -> bool:
        return not self.kc._flags & (QUEUED | RUNNING)  # type: ignore[union-attr]

    def wake(self) -> None:
        # A function that ran has finished the future, so cancel() does
        # nothing; one stopped before it ran leaves it pending: cancelled.
        self.future.cancel()
        _destroy(self.kc)  # type: ignore[arg-type]


def _on_done(kc: Continuation[Any], future: Future[Any]) -> None:
    if future.cancelled():
        kc.stop()  # never waits; a function already started sees the cancel and returns


def _callable_name(func: Callable[..., Any]) -> str:
    if type(func) in (FunctionType, MethodType, BuiltinFunctionType):
        return str(func.__qualname__)
    return type(func).__qualname__


def submit(
    rt: RuntimeCore,
    func: Callable[[Any], Any],
    arg: Any,
    *,
    wq: Any,
    lock: Mutex | None,
    cpu: CPU | None,
    name: str | None,
) -> Future[Any]:
    """See ``RuntimeCore.submit``."""
    if not callable(func):
        raise TypeError(f"func must be callable, not {type(func).__name__}")
    future: Future[Any] = Future()
    kc = rt.continuation(
        wq,
        _run,
        _Job(func, arg, future),
        lock=lock,
        name=_callable_name(func) if name is None else name,
    )
    try:
        kc.schedule(cpu=cpu)
    except BaseException:
        _destroy(kc)
        raise
    waiter = _EndWaiter(kc, future)
    with rt._lock:
        over = waiter.ready_locked()
        if not over:
            register_locked(rt, waiter)
    if over:
        waiter.wake()
    future.add_done_callback(partial(_on_done, kc))
    return future

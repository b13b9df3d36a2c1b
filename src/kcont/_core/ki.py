"""KeyboardInterrupt safety: Ctrl-C never leaves kcont half-way through.

What it owns
    The rule that no state lock, :class:`~kcont.Mutex` or wait is ever left
    half-taken, and no transition half-done, whatever instant a
    ``KeyboardInterrupt`` arrives in the main thread (the only thread that
    Python's signal handlers run in).  As trio's "KI protection", the
    decision is made when the interrupt arrives, by looking at what the main
    thread was doing:

    * :func:`protected` marks a function of kcont's own critical sections
      (its code object joins a set, once, at import: a call costs nothing
      more).  An interrupt that arrives inside one, or inside the code it
      calls (kcont's helpers, the standard library), is *deferred*:
      recorded, and delivered again as soon as the main thread is out of
      protected code.
    * :func:`interruptible` marks the blocking part of a wait (the sleep on
      a waiter's token), inside a protected function: an interrupt there is
      raised at once, and the protected caller takes its locks back and
      unregisters before the exception reaches the user.
    * The compiled core's fast paths (``kcont._core._ckcont``) have no
      Python frame: each counts itself in a per-thread depth while it runs
      (but not while it calls user code), which the handler reads; an
      interrupt arriving then (during a wait for the state lock, say) is
      deferred to the next line of the frame that called the fast path, as
      after a protected method of the pure core.
    * Anything else (user code, including a continuation's function run by
      the simulator on the main thread) gets the interrupt at once, as
      without kcont.

    The handler walks the interrupted frame and its callers: the innermost
    frame that is protected, interruptible or outside kcont and the
    standard library decides.  A deferred interrupt is raised at the first
    safe point: the next line of the caller once the outermost protected
    frame of the region has returned (so a result is assigned, and the block
    of ``with mutex:`` entered, whose exit releases it), or a call from the
    region into user code (the simulator's dispatch calling a function), or
    the start of a wait's blocking part.  That is watched by a trace function set on the main
    thread only while an interrupt is deferred (``sys.settrace``, with a
    ``f_trace`` on that frame).  When a tracer is already active (a debugger,
    coverage), it is left alone and the interrupt is delivered again by
    :func:`_redeliver_main`, a thread (started the first time it is needed)
    that sends SIGINT to the main thread a couple of milliseconds later (a real signal, so that it also
    ends a blocking wait), until the handler raises it.  The calls
    themselves never check anything, so scheduling is not slower.

Installation
    :func:`attach` (a runtime being created) installs the handler only if
    SIGINT's handler is Python's default one (``signal.default_int_handler``)
    and only from the main thread (where ``signal.signal`` may be called).
    A handler of the user's own (``signal.signal(SIGINT, ...)``, asyncio's)
    is left alone: kcont is then not protected, and the user's handler
    decides.  :func:`detach` (a runtime shut down) puts the default handler
    back once no runtime is attached.

Locking
    ``_attached`` (a WeakSet of runtimes) and the install/restore are used by
    the main thread only (``signal.signal`` requires it).  ``_state`` is
    written by the main thread (the handler, the trace functions, ``block``)
    and read by the redelivery thread: each field is one attribute (a stale
    read only delays or repeats a redelivery, which the handler tells apart).  ``_wake`` is a plain lock
    used as a binary semaphore: the handler releases it (never blocks; a
    second release is ignored), the redelivery thread acquires it.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import sysconfig
import threading
import time
import weakref
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any, NoReturn, TypeVar

from .layout import compiled_module

F = TypeVar("F", bound=Callable[..., Any])

_ckcont = compiled_module()
# The compiled core's probe: is the calling thread inside one of its critical
# sections (which have no Python frame to mark)?
_compiled_section: Callable[[], bool] | None = None if _ckcont is None else _ckcont._in_critical_section

_protected: set[CodeType] = set()
_interruptible: set[CodeType] = set()


def protected(func: F) -> F:
    """Mark ``func`` (a plain function or method) as a critical section of
    kcont: an interrupt arriving in it is delivered once it has returned.
    Returns ``func`` itself (no wrapper, no cost per call)."""
    _protected.add(func.__code__)
    return func


def interruptible(func: F) -> F:
    """Mark ``func`` as the blocking part of a wait: an interrupt arriving in
    it is raised at once, even inside a protected caller."""
    _interruptible.add(func.__code__)
    return func


@interruptible
def block(token: _thread.LockType, timeout: float | None) -> bool:
    """Sleep until ``token`` is released (True) or ``timeout`` seconds pass
    (False); an interrupt ends the sleep.  A token is a fresh lock its waiter
    holds: losing its release to an interrupt harms nobody."""
    if _state.deferred and _thread.get_ident() == _state.main_ident:
        _deliver()  # deferred by the protected code just before: the wait ends it
    return token.acquire(True, -1 if timeout is None else timeout)


def new_token() -> _thread.LockType:
    """A fresh waiter token, held (see :func:`block`)."""
    token = _thread.allocate_lock()
    token.acquire()
    return token


def release_token(token: _thread.LockType) -> None:
    """Wake the waiter of ``token`` (as a Mutex waiter callback)."""
    token.release()


class Condition:
    """A condition variable on a plain lock (the state lock) whose wait can
    be interrupted and yet never leaves the lock or its registration
    half-taken (``threading.Condition.wait`` takes the lock back in a
    ``finally``, where an interrupt leaves it free while its caller believes
    it holds it).

    ``wait`` and ``notify_all`` are called with the lock held.  The lock
    guards ``_tokens``.
    """

    __slots__ = ("_lock", "_tokens")

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self._tokens: list[_thread.LockType] = []

    @protected
    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, sleep until notified or ``timeout`` seconds, take
        the lock back.  An interrupt ends the sleep (it is raised after the
        lock is held again).  Returns False on a timeout."""
        token = new_token()
        self._tokens.append(token)
        lock = self._lock
        lock.release()
        try:
            return block(token, timeout)
        finally:
            lock.acquire()
            try:
                self._tokens.remove(token)  # not notified (timeout, interrupt)
            except ValueError:
                pass

    def notify_all(self) -> None:
        tokens = self._tokens
        if tokens:
            self._tokens = []
            for token in tokens:
                token.release()


# -- where the interrupted code is -------------------------------------------------

_KCONT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _library_dirs() -> tuple[tuple[str, ...], tuple[str, ...]]:
    paths = sysconfig.get_paths()
    stdlib = {paths[key] for key in ("stdlib", "platstdlib") if key in paths}
    site = {paths[key] for key in ("purelib", "platlib") if key in paths}
    return (
        tuple(os.path.abspath(p) + os.sep for p in stdlib),
        tuple(os.path.abspath(p) + os.sep for p in site),
    )


_STDLIB_DIRS, _SITE_DIRS = _library_dirs()
_transparent_files: dict[str, bool] = {}


def _transparent(filename: str) -> bool:
    """True for kcont's own files and the standard library's: frames that
    neither decide nor stop the walk (a kcont helper inherits its caller's
    protection; so does ``threading`` code called from a protected section)."""
    known = _transparent_files.get(filename)
    if known is None:
        if filename.startswith("<frozen"):
            known = True
        else:
            path = os.path.abspath(filename)
            known = path.startswith(_KCONT_DIR) or (
                path.startswith(_STDLIB_DIRS) and not path.startswith(_SITE_DIRS)
            )
        _transparent_files[filename] = known
    return known


def in_protected_code(frame: FrameType | None) -> bool:
    """True if an interrupt arriving in ``frame`` must be deferred."""
    return _deferral_target(frame) is not None


# -- the handler and the delivery of a deferred interrupt ------------------------


class _State:
    deferred = False  # an interrupt waits to be delivered (main thread writes)
    traced: FrameType | None = None  # the protected frame whose return delivers it
    redeliverer = False  # the redelivery thread was started
    main_ident = threading.main_thread().ident


_state = _State()
_wake = _thread.allocate_lock()
_wake.acquire()
_attached: weakref.WeakSet[Any] = weakref.WeakSet()
# Seconds between a deferral and the signal that delivers it again (when a
# tracer of the user's, a debugger or coverage, is active): longer than any of
# kcont's critical sections, short enough to be instant to a person.
REDELIVERY_DELAY = 0.002


def _handler(signum: int, frame: FrameType | None) -> None:
    """SIGINT's handler while a runtime exists (see module docstring)."""
    target = _deferral_target(frame)
    if target is not None and _defer(target):
        return
    if target is None and frame is not None and _in_compiled_section() and _defer(frame, caller=True):
        # Inside a fast path of the compiled core (waiting for the state
        # lock, say), which has no frame of its own: ``frame`` is its
        # caller's, which gets the interrupt at its next line, as it would
        # after a protected method of the pure core.
        return
    _deliver()


def _in_compiled_section() -> bool:
    """True while the main thread runs a critical section of the compiled
    core (never with the pure core)."""
    return _compiled_section is not None and _compiled_section()


def _deferral_target(frame: FrameType | None) -> FrameType | None:
    """The outermost protected frame of the protected region the main thread
    is in (its return ends the region), or None if the interrupt must be
    raised now."""
    target = None
    while frame is not None:
        code = frame.f_code
        if code in _protected:
            target = frame
        elif code in _interruptible or not _transparent(code.co_filename):
            break
        frame = frame.f_back
    return target


def _defer(target: FrameType, *, caller: bool = False) -> bool:
    """Record the interrupt and arrange its delivery: when ``target`` returns
    (with ``caller``: at ``target``'s next line, ``target`` being the caller
    of a compiled critical section), or when the main thread calls user code
    or a wait's blocking part before that (a trace function on the main
    thread, only while an interrupt is deferred); with a tracer of the
    user's already active, by a signal sent again shortly.  False if neither
    is possible (raise now)."""
    _state.deferred = True
    traced = _state.traced
    if traced is not None:
        frame: FrameType | None = target
        while frame is not None:
            if frame is traced:
                return True  # this region's return is watched already
            frame = frame.f_back
        _unwatch()  # left without its return being seen (a tracer of the user's replaced ours)
    if sys.gettrace() is None:
        target.f_trace = _in_caller if caller else _on_return
        target.f_trace_lines = caller
        _state.traced = target
        sys.settrace(_on_call)
        return True
    if not _state.redeliverer:
        try:
            # The low-level call takes none of threading's locks, which the
            # interrupted code may hold; the thread lives until the process ends.
            _thread.start_new_thread(_redeliver_main, ())
        except RuntimeError:  # the interpreter is shutting down: raise now
            return False
        _state.redeliverer = True
    try:
        _wake.release()
    except RuntimeError:  # already released: a redelivery is on its way
        pass
    return True


def _deliver() -> NoReturn:
    """Raise the interrupt now (no longer deferred, nothing watched)."""
    _state.deferred = False
    _unwatch()
    raise KeyboardInterrupt


def _on_return(frame: FrameType, event: str, arg: object) -> Any:
    """Trace function of the protected frame watched: when it returns (or
    ends with an exception), the caller is watched instead."""
    if event == "return" and frame is _state.traced:
        caller = frame.f_back
        if not _state.deferred or caller is None:
            if _state.deferred:
                _deliver()
            _unwatch()
            return None
        frame.f_trace = None
        caller.f_trace = _in_caller
        caller.f_trace_lines = True
        _state.traced = caller
        return None
    return _on_return


def _in_caller(frame: FrameType, event: str, arg: object) -> Any:
    """Trace function of the caller of the protected call: the interrupt is
    raised at its next line (or its return), not in place of the call's
    result, so that ``x = kc.stop()`` has assigned ``x``, and ``with mutex:``
    has entered its block (whose exit releases the Mutex) before it comes."""
    if frame is _state.traced and event in ("line", "return"):
        _deliver()
    return _in_caller


def _on_call(frame: FrameType, event: str, arg: object) -> Any:
    """Global trace function while an interrupt is deferred: a call from the
    protected region into user code leaves it (a simulated continuation's
    function, an exception handler): deliver the interrupt there."""
    if event == "call" and frame.f_code.co_name != "__del__" and _deferral_target(frame) is None:
        _deliver()
    return None


def _unwatch() -> None:
    traced = _state.traced
    if traced is not None:
        _state.traced = None
        traced.f_trace = None
        sys.settrace(None)


def _ours(handler: object) -> bool:
    return handler is _handler or handler is signal.default_int_handler


def _redeliver_main() -> None:
    """The redelivery thread: after each deferral, signal the main thread
    again until the handler has raised the interrupt."""
    pthread_kill = getattr(signal, "pthread_kill", None)
    while True:
        _wake.acquire()
        time.sleep(REDELIVERY_DELAY)
        if not _state.deferred:
            continue
        if not _ours(signal.getsignal(signal.SIGINT)):
            _state.deferred = False  # the user's handler took over: it decides
            continue
        try:
            if pthread_kill is not None and _state.main_ident is not None:
                pthread_kill(_state.main_ident, signal.SIGINT)
            else:
                _thread.interrupt_main()
        except (OSError, RuntimeError, ValueError):  # the main thread is gone: exiting
            return


def attach(rt: Any) -> None:
    """A runtime was created: install the handler (see "Installation")."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal.signal works only there; a later runtime may install it
    _attached.add(rt)
    try:
        current = signal.getsignal(signal.SIGINT)
    except ValueError:  # no signals here (a sub-interpreter)
        return
    if current is _handler:
        return
    if current is not signal.default_int_handler:
        return  # the user's own handler: left alone
    _state.main_ident = threading.get_ident()
    signal.signal(signal.SIGINT, _handler)


def detach(rt: Any) -> None:
    """A runtime was shut down: restore the default handler once no runtime
    is attached (an interrupt deferred meanwhile is still delivered)."""
    _attached.discard(rt)
    if _attached or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is _handler:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def installed() -> bool:
    """True if kcont's SIGINT handler is the current one."""
    return signal.getsignal(signal.SIGINT) is _handler


def _after_fork_in_child() -> None:
    # The redelivery thread does not exist in the child: started again if needed.
    _state.redeliverer = False
    _state.deferred = False
    _state.main_ident = threading.get_ident()
    global _wake
    _wake = _thread.allocate_lock()
    _wake.acquire()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = [
    "Condition",
    "attach",
    "block",
    "detach",
    "in_protected_code",
    "installed",
    "interruptible",
    "new_token",
    "protected",
    "release_token",
]

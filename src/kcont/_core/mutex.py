"""kcont.Mutex: an owner-tracking, non-recursive lock that wakes parked sub-queues.

What it owns
    The lock a continuation is associated with (the seed's ``kmutex_t``).  A
    continuation's lock is taken by the dispatcher before its function runs and
    released after it returns.  The dispatcher never blocks on it: when the
    lock is busy, the continuation's ``{wq, lock, ci}`` sub-queue is *parked*
    and registers a waiter here; :meth:`Mutex.release` wakes the waiters, so
    nothing polls.

Invariants
    * ``_owner`` is the ``threading.get_ident()`` of the holder, or ``None``.
      Only the holder writes its own ident and clears it, so a racy read of
      ``_owner`` can never claim ownership falsely.
    * A waiter is registered only after a ``try`` of the lock failed under
      ``_wlock``, and release takes ``_wlock`` after unlocking: a release can
      therefore never slip between the failed try and the registration (no
      lost wake-up), without relying on the GIL.

Locking
    ``_lock``  the mutual exclusion itself (a ``threading.Lock``).
    ``_wlock`` W: guards ``_waiters``.
    Lock order: a runtime's state lock may be held when ``_wlock`` is taken
    (the dispatcher parks under it); waiters are *called* with no lock held,
    because a waiter takes the runtime's state lock.
    ``_mutexes`` (weak references to every Mutex) takes no lock: it is a
    ``collections.deque``, whose appends and pops are documented
    thread-safe (free-threaded CPython too), so creating a Mutex takes no
    lock that garbage collection, run at that moment, could need again.
    ``_prune_lock`` P is held by the one thread pruning ``_mutexes`` (only
    tried: a prune never waits) and by a thread forking the process, from
    its first fork hook to the last: a prune moves each reference out of
    the deque and back, and a fork must never copy a moment when one is
    out.  Lock order: P -> a runtime's state lock (fork).

Interrupts
    ``acquire``, ``release``, ``__enter__``, ``__exit__`` and the
    dispatcher's tries are ``@protected`` (:mod:`kcont._core.ki`): the lock
    and ``_owner`` change together, whatever instant a KeyboardInterrupt
    arrives, and ``with mutex:`` is entered holding the lock or not at all.
    A blocking ``acquire`` in the main thread (the only thread Python
    interrupts) sleeps on a waiter token registered like a parked sub-queue,
    never on ``_lock`` itself: an interrupt ends the sleep promptly and can
    never leave ``_lock`` taken without an owner.  Other threads block on
    ``_lock`` directly.

After os.fork()
    Every Mutex alive is listed (weakly) so that the child process can make
    each usable (:func:`after_fork_in_child`): a fresh ``_wlock`` (a parent's
    thread may have held it), no waiter of a runtime that cannot run in the
    child, and free if it was held by a thread other than the one that
    forked (that thread does not exist in the child, and only the holder may
    release a Mutex; what it guards may be half-updated).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, NoReturn, SupportsIndex

from ..errors import MutexError
from .ki import block, new_token, protected, release_token

_get_ident = threading.get_ident
# Only the main thread receives KeyboardInterrupt (Python runs signal handlers there).
_main_thread_ident = threading.main_thread().ident

# A waiter is called as ``waiter(arg)`` once, after the mutex is next released.
Waiter = tuple[Callable[[Any], None], Any]


class Mutex:
    """A non-recursive mutual-exclusion lock that knows its owner.

    Use it as a ``threading.Lock``::

        m = kcont.Mutex("flow table")
        with m:
            ...

    It is the only lock type a continuation accepts, because the seed's rules
    ("``kcont_setarg`` must only be called when the associated lock is
    locked") need to know *who* holds it, and because the dispatcher must be
    told when it is released.

    Context:
        Any thread.  Releasing from a thread that does not hold it raises
        :class:`~kcont.MutexError`; so does acquiring it again from its holder
        (which would deadlock a plain lock).
    """

    __slots__ = ("__weakref__", "_lock", "_owner", "_waiters", "_wlock", "name")

    def __init__(self, name: str | None = None) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._wlock = threading.Lock()
        self._waiters: list[Waiter] = []  # W
        self.name = name
        _mutexes.append(weakref.ref(self))
        if len(_mutexes) >= _prune_at:
            _prune()

    @protected
    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock; return True if taken (as ``threading.Lock.acquire``).

        A KeyboardInterrupt in the main thread ends a blocking wait (as it
        ends ``threading.Lock.acquire``'s) but never leaves the lock taken
        without an owner (see "Interrupts" in the module docstring)."""
        me = _get_ident()
        if self._owner == me:
            raise MutexError(f"{self!r} is already held by this thread (kcont.Mutex is not recursive)")
        if me != _main_thread_ident or not blocking:
            if self._lock.acquire(blocking, timeout):
                self._owner = me
                return True
            return False
        if timeout != -1:
            _check_timeout(timeout)  # as threading.Lock.acquire would, even if the lock is free
        if self._lock.acquire(False):
            self._owner = me
            return True
        return self._wait_interruptibly(me, timeout)

    @protected
    def _wait_interruptibly(self, me: int, timeout: float) -> bool:
        """The main thread waits for the lock: it sleeps on a token that the
        next release wakes (registered as a waiter, so no release can be
        missed), not on the lock itself, so that an interrupt raised during
        the sleep can never have taken the lock."""
        deadline = None if timeout < 0 else time.monotonic() + timeout
        while True:
            token = new_token()
            if self._try_acquire_or_wait(release_token, token):
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            block(token, remaining)

    @protected
    def release(self) -> None:
        """Release the lock and wake the sub-queues parked on it."""
        if self._owner != _get_ident():
            raise MutexError(f"{self!r} released by a thread that does not hold it")
        with self._wlock:
            self._owner = None
            self._lock.release()
            waiters = self._waiters
            if waiters:
                self._waiters = []
        for callback, arg in waiters:
            callback(arg)

    def owned(self) -> bool:
        """True if the calling thread holds the lock."""
        return self._owner == _get_ident()

    def locked(self) -> bool:
        """True if some thread holds the lock."""
        return self._lock.locked()

    @protected
    def __enter__(self) -> bool:
        # A method, not an alias of acquire: mypyc cannot compile a class
        # attribute bound to a method (benchmarks/mypyc_experiment.sh).
        return self.acquire()

    @protected
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        state = "locked" if self._lock.locked() else "unlocked"
        return f"<kcont.Mutex{label} {state} at {id(self):#x}>"

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        # A copy would share the original's lock and waiters.
        raise TypeError(f"{self!r} cannot be copied or pickled: create a new kcont.Mutex")

    # -- dispatcher side ---------------------------------------------------

    @protected
    def _try_acquire(self) -> bool:
        """Take the lock without blocking, for the calling thread."""
        if self._lock.acquire(False):
            self._owner = _get_ident()
            return True
        return False

    @protected
    def _try_acquire_or_wait(self, callback: Callable[[Any], None], arg: Any) -> bool:
        """Take the lock without blocking, or register ``callback(arg)`` to be
        called after the next release.  Returns True if the lock was taken."""
        with self._wlock:
            if self._lock.acquire(False):
                self._owner = _get_ident()
                return True
            self._waiters.append((callback, arg))
            return False


def _check_timeout(timeout: object) -> None:
    """Refuse a timeout as ``threading.Lock.acquire`` does."""
    if not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    if timeout < 0:
        raise ValueError("timeout value must be a non-negative number")
    if timeout > threading.TIMEOUT_MAX:
        raise OverflowError("timeout value is too large")


# -- os.fork() -----------------------------------------------------------------------

# Every Mutex alive (and some dead, until the next prune), for the child.
_mutexes: deque[weakref.ref[Mutex]] = deque()
_PRUNE_MIN = 1024
_prune_at = _PRUNE_MIN  # a hint: racy updates only move the next prune
_prune_lock = threading.Lock()  # P: see module docstring
_FORK_PRUNE_WAIT = 2.0  # seconds a fork waits for a prune (a bound against the unforeseen)


def _prune() -> None:
    """Drop the references to dead mutexes: one rotation through the deque
    (another thread may add meanwhile; a reference appended during the
    rotation is seen twice, harmlessly), unless another thread is pruning or
    forking (``_prune_lock`` busy: it is only tried, so that a collection
    run here, which may create a Mutex, never waits for itself)."""
    global _prune_at
    if not _prune_lock.acquire(False):
        return
    try:
        for _ in range(len(_mutexes)):
            ref = _mutexes.popleft()
            if ref() is not None:
                _mutexes.append(ref)
        _prune_at = max(_PRUNE_MIN, 2 * len(_mutexes))
    finally:
        _prune_lock.release()


def before_fork() -> bool:
    """Called by the first fork hook: wait for a prune in progress to end, and
    keep others out until :func:`after_fork` (so the child's copy of
    ``_mutexes`` lists every Mutex).  Returns True if the lock was taken."""
    return _prune_lock.acquire(True, _FORK_PRUNE_WAIT)


def after_fork(taken: bool, *, in_child: bool) -> None:
    """Called by the last fork hook (in the parent and in the child)."""
    global _prune_lock
    if in_child:
        _prune_lock = threading.Lock()  # a parent's thread may have held it
    elif taken:
        _prune_lock.release()


def after_fork_in_child(dead_waiter: Callable[[Waiter], bool]) -> None:
    """Make every Mutex usable in the child (see module docstring).  The
    child has one thread, the one that forked: it may hold a Mutex, which
    stays held.  ``dead_waiter(waiter)`` tells a waiter to drop."""
    global _main_thread_ident
    me = _main_thread_ident = _get_ident()  # the child's only thread is its main one
    for ref in list(_mutexes):
        mutex = ref()
        if mutex is None:
            continue
        mutex._wlock = threading.Lock()
        mutex._waiters = [w for w in mutex._waiters if not dead_waiter(w)]
        if mutex._owner != me and mutex._lock.locked():
            mutex._lock = threading.Lock()
            mutex._owner = None

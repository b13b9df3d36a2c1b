"""softint(9) on kcont: per-CPU software interrupts at four levels.

Overview
    :func:`softint_establish` returns a :class:`Softint` cookie holding one
    :class:`kcont.Continuation` per CPU of the current runtime (NetBSD
    replicates the handler record on every CPU), each on the predefined
    kcont queue of the softint's level.  A trigger on a CPU schedules that
    CPU's continuation without delay on that CPU.

Priority levels
    ``SOFTINT_CLOCK < SOFTINT_BIO < SOFTINT_NET < SOFTINT_SERIAL`` map to
    ``wq_softclock``, ``wq_softbio``, ``wq_softnet``, ``wq_softserial``, whose
    priorities are NetBSD's ``PRI_SOFT*`` values: on a CPU, a pending handler
    of a higher level runs first; handlers of one level run in trigger order
    (NetBSD: "Pick the longest waiting handler to run").

Per-CPU operation
    "If a soft interrupt is triggered on a CPU, it can only be dispatched on
    the same CPU" (kern_softint.c): ``softint_schedule`` targets
    ``kcont.curcpu()`` (the CPU whose continuation the caller runs, or the one
    it bound itself to with ``kcont.bind_cpu``), ``softint_schedule_cpu``
    the given CPU.  A softint may be pending on several CPUs at once: one
    continuation per CPU.

Coalescing
    NetBSD: "If it's already pending there's nothing to do."  kcont refuses a
    schedule with EBUSY while INVOKING, i.e. from the trigger until the
    invocation is acknowledged or ends: EBUSY *is* "already pending", and the
    layer ignores it.  NetBSD clears PENDING just before calling the handler,
    so a trigger while the handler runs makes it run again; the trampoline
    therefore calls ``kc.ack()`` before the handler, after which a trigger
    commits a new invocation (kcont runs it after the current one: never two
    at once).  A trigger refused before that ``ack`` is covered by the
    handler call that follows it: no trigger is lost.

Disestablish
    Marks the cookie dead (later triggers raise :class:`~kcont.compat.KassertError`: the
    caller "commits not to try and trigger it again"), lets triggers already
    pending run and waits until the handler runs nowhere (NetBSD >= 9 runs a
    barrier softint at the same level behind them): that is kcont's
    ``flush()`` of each per-CPU continuation, which on the simulated runtime
    steps the simulation.  ``flush()`` returns at once for the caller's own
    continuation when called from the handler.  Then it destroys the
    continuations (``destroy`` cancels a trigger still pending on the
    caller's own CPU, which could only run after the caller returns).  Since
    the cookie is dead, nothing can commit a new invocation meanwhile, so the
    flushes end.

Flags
    ``SOFTINT_MPSAFE`` is accepted (kcont has no kernel lock).
    ``SOFTINT_RCPU`` is required by ``softint_schedule_cpu`` for another
    CPU, as NetBSD's ``KASSERT``.

Locking
    S: ``Softint._lock`` (a ``threading.Lock``) guards ``_dead``.  Triggers
    hold it while scheduling, so none slips in after disestablish began.  It
    is never held while a handler runs or while disestablish waits, and is
    taken before kcont's internal lock, never after.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import kcont

from . import KassertError

__all__ = [
    "SOFTINT_BIO",
    "SOFTINT_CLOCK",
    "SOFTINT_COUNT",
    "SOFTINT_LVLMASK",
    "SOFTINT_MPSAFE",
    "SOFTINT_NET",
    "SOFTINT_RCPU",
    "SOFTINT_SERIAL",
    "Softint",
    "softint_disestablish",
    "softint_establish",
    "softint_schedule",
    "softint_schedule_cpu",
]

# NetBSD sys/intr.h values.
SOFTINT_BIO = 0x0000
SOFTINT_CLOCK = 0x0001
SOFTINT_SERIAL = 0x0002
SOFTINT_NET = 0x0003
SOFTINT_MPSAFE = 0x0100
SOFTINT_RCPU = 0x0200
SOFTINT_COUNT = 0x0004
SOFTINT_LVLMASK = 0x00FF
_KNOWN_FLAGS = SOFTINT_LVLMASK | SOFTINT_MPSAFE | SOFTINT_RCPU

# Level -> predefined kcont queue.
_LEVEL_QUEUE: dict[int, kcont.PredefinedQueue] = {
    SOFTINT_CLOCK: kcont.wq_softclock,
    SOFTINT_BIO: kcont.wq_softbio,
    SOFTINT_NET: kcont.wq_softnet,
    SOFTINT_SERIAL: kcont.wq_softserial,
}

Handler = Callable[[Any], object]


class Softint:
    """A softint cookie (NetBSD's ``void *``), made by :func:`softint_establish`."""

    __slots__ = ("__weakref__", "_dead", "_kcs", "_label", "_lock", "_rt", "arg", "flags", "func")

    def __init__(self, flags: int, func: Handler, arg: Any) -> None:
        self.flags = flags
        self.func = func
        self.arg = arg
        self._lock = threading.Lock()
        self._dead = False  # S: disestablished
        rt = kcont.current_runtime()
        self._rt = rt
        queue = _LEVEL_QUEUE[flags & SOFTINT_LVLMASK]
        self._label = f"softint:{getattr(func, '__qualname__', repr(func))}"
        self._kcs: tuple[kcont.Continuation[Softint], ...] = tuple(
            rt.continuation(queue, _softint_handler, self, name=f"{self._label}/{cpu.index}")
            for cpu in rt.cpus
        )

    @property
    def level(self) -> int:
        """``SOFTINT_CLOCK``, ``SOFTINT_BIO``, ``SOFTINT_NET`` or ``SOFTINT_SERIAL``."""
        return self.flags & SOFTINT_LVLMASK

    @property
    def continuations(self) -> tuple[kcont.Continuation[Any], ...]:
        """The kcont continuations behind the cookie, indexed by CPU."""
        return self._kcs

    def __repr__(self) -> str:
        state = " disestablished" if self._dead else ""
        return f"<kcont.compat.Softint {self._label}{state}>"


def _softint_handler(sh: Softint, kc: kcont.Continuation[Softint]) -> None:
    """The continuation function of every softint, on every CPU."""
    # NetBSD clears PENDING before calling the handler: from here on, a new
    # trigger must run the handler again rather than coalesce.
    kc.ack()
    sh.func(sh.arg)


def _check(cookie: object) -> Softint:
    if not isinstance(cookie, Softint):
        raise TypeError(f"expected a cookie from softint_establish, not {type(cookie).__name__}")
    return cookie


def _trigger(sh: Softint, ci: kcont.CPU) -> None:
    with sh._lock:
        if sh._dead:
            raise KassertError(f"{sh!r} was disestablished: its caller committed not to trigger it again")
        try:
            sh._kcs[ci.index].schedule(0, ci)
        except kcont.BusyError:
            pass  # already pending on that CPU: NetBSD coalesces, "nothing to do"


def softint_establish(flags: int, func: Handler, arg: Any) -> Softint:
    """Register ``func(arg)`` as a software interrupt handler.

    Args:
        flags: one level (``SOFTINT_CLOCK``, ``SOFTINT_BIO``, ``SOFTINT_NET``,
            ``SOFTINT_SERIAL``), optionally ORed with ``SOFTINT_MPSAFE``
            (accepted) and ``SOFTINT_RCPU`` (allows remote triggers).
        func: called as ``func(arg)``.
        arg: its argument.

    Returns:
        The cookie to trigger and disestablish it with.

    Raises:
        KassertError: a level >= ``SOFTINT_COUNT`` or an unknown flag.
        TypeError: ``func`` is not callable, or is a coroutine, async
            generator or generator function (``kcont.check_func``).
        kcont.NoRuntimeError: no runtime is current.

    Context:
        Thread context, inside ``with runtime:``.
    """
    if not isinstance(flags, int) or isinstance(flags, bool):
        raise TypeError(f"flags must be an int, not {type(flags).__name__}")
    if flags & ~_KNOWN_FLAGS or (flags & SOFTINT_LVLMASK) >= SOFTINT_COUNT:
        raise KassertError(
            f"softint_establish: bad flags {flags:#x} (KASSERT(level < SOFTINT_COUNT), "
            "known flags: a level, SOFTINT_MPSAFE, SOFTINT_RCPU)"
        )
    kcont.check_func(func, "func(arg)")
    return Softint(flags, func, arg)


def softint_schedule(cookie: Softint) -> None:
    """Trigger the softint on the caller's CPU (``kcont.curcpu()``).

    Coalesces with a trigger already pending on that CPU; a trigger while
    the handler runs makes it run again.

    Raises:
        KassertError: the softint was disestablished.
        kcont.InvalidArgumentError: the caller's CPU belongs to another
            runtime than the softint.

    Context:
        Any thread; inside a continuation its CPU is the one it runs on,
        elsewhere the CPU bound with ``kcont.bind_cpu`` (else CPU 0).
    """
    sh = _check(cookie)
    ci = kcont.curcpu()
    if ci.rt is not sh._rt:
        raise kcont.InvalidArgumentError(f"the caller's {ci!r} is not a CPU of {sh!r}'s runtime")
    _trigger(sh, ci)


def softint_schedule_cpu(cookie: Softint, ci: kcont.CPU) -> None:
    """Trigger the softint on CPU ``ci``.

    Raises:
        KassertError: ``ci`` is not the caller's CPU and the softint was not
            established with ``SOFTINT_RCPU``; or it was disestablished.
        TypeError: ``ci`` is not a kcont CPU.
        kcont.InvalidArgumentError: ``ci`` belongs to another runtime.
    """
    sh = _check(cookie)
    if not isinstance(ci, kcont.CPU):
        raise TypeError(f"ci must be a kcont.CPU, not {type(ci).__name__}")
    if ci.rt is not sh._rt:
        raise kcont.InvalidArgumentError(f"{ci!r} is not a CPU of {sh!r}'s runtime")
    if ci is not kcont.curcpu() and not sh.flags & SOFTINT_RCPU:
        raise KassertError(
            f"softint_schedule_cpu: {sh!r} targets remote {ci!r} but was not established with SOFTINT_RCPU"
        )
    _trigger(sh, ci)


def softint_disestablish(cookie: Softint) -> None:
    """Unregister the softint: run the triggers already pending, then wait
    until the handler runs on no CPU.

    Raises:
        KassertError: already disestablished.
        kcont.SimDeadlockError: simulated runtime, called from inside a
            continuation while a trigger is still pending on another CPU
            (the softint stays disestablished; its continuations are not
            destroyed).
        kcont.WouldDeadlockError: threaded runtime, called from another
            soft-level continuation while a trigger is pending on its own
            CPU (that trigger could only run after the caller returns; the
            softint stays disestablished, as above).

    Context:
        Thread context, not while holding a lock the handler takes.  From the
        handler itself it does not wait for that invocation (a trigger still
        pending on the caller's CPU is cancelled: it could only run after the
        caller returns).  Not from another soft-level continuation while a
        trigger is pending on its CPU: that trigger could never start.
    """
    sh = _check(cookie)
    with sh._lock:
        if sh._dead:
            raise KassertError(f"softint_disestablish: {sh!r} was already disestablished")
        sh._dead = True  # from here on, nothing commits a new invocation
    for kc in sh._kcs:
        # NetBSD >= 9's barrier: the pending trigger runs, then no handler
        # runs.  From the handler, flush() returns at once for its own
        # continuation (it cannot wait for itself).
        kc.flush()
    for kc in sh._kcs:
        kc.destroy()  # nothing queued or running any more, except the caller's own invocation

"""callout(9) on kcont: timers that call ``func(arg)`` at softclock level.

What it owns
    :class:`Callout` (NetBSD's ``callout_t``) and the ``callout_*``
    functions.  A callout is one :class:`kcont.Continuation` on
    ``kcont.wq_softclock`` (priority ``PRI_SOFTCLOCK``, per-CPU), whose
    argument is the tuple ``(callout, func, arg)`` and whose function is the
    trampoline ``_softclock``, which calls ``func(arg)``: NetBSD's
    one-argument signature.  ``callout_setfunc``/``callout_reset`` change the
    tuple with ``set_arg``, which kcont snapshots when the invocation starts,
    as NetBSD's ``callout_softclock`` snapshots ``c_func``/``c_arg``.

Where NetBSD and kcont differ, and what this layer does about it
    * Scheduling clears INVOKING in NetBSD (``callout_schedule_locked``:
      ``c->c_flags &= ~(CALLOUT_FIRED | CALLOUT_INVOKING)``), so a handler may
      simply re-arm itself; kcont alone refuses ``schedule`` with EBUSY while
      INVOKING (docs/semantics.md §2).  ``callout_schedule`` is therefore
      ``kc.schedule(ticks, cpu, ack=True)``, which clears INVOKING and arms
      the timer under kcont's state lock, as NetBSD does under the callout
      lock: no window, no retry.  If the previous arming is due but has not
      run yet (QUEUED), the new arming replaces that invocation (§5), which
      is what NetBSD does to a callout not yet picked by softclock.
    * ``callout_reset`` sets ``func``/``arg`` and re-arms under one lock in
      NetBSD.  kcont has no "set the argument and schedule" in one call, so
      the layer first ``stop()``s the previous arming (a due invocation that
      has not started is cancelled, as the re-arm would replace it anyway;
      one already started keeps its snapshot of the old pair), then calls
      ``set_arg`` and ``schedule(..., ack=True)``: nothing of the previous
      arming can expire in between, so the new pair is never called for it.
    * NetBSD keeps INVOKING set after the handler returns, until
      ``callout_ack`` or a new schedule ("the callout function will have to
      use the ``callout_ack`` function to clear this flag"); kcont clears it
      when the function returns.  The layer keeps a *sticky* INVOKING bit
      (``_sticky``): set by the trampoline when the handler starts (only if
      kcont's INVOKING is still set, i.e. nobody acknowledged meanwhile),
      cleared by ``callout_ack`` and ``callout_schedule``/``callout_reset``.
      ``callout_invoking`` is kcont's INVOKING or the sticky bit.
    * ``ticks == 0``: NetBSD runs the callout at the next softclock; kcont's
      ``nticks=0`` would commit it at once (and set INVOKING).  The layer
      arms it for 1 tick: "at the next tick".  Negative ticks violate
      ``KASSERT(to_ticks >= 0)``.
    * PENDING/EXPIRED: kcont marks EXPIRED|INVOKING at timer expiry, NetBSD at
      the moment softclock picks the callout; between the two (a due callout
      waiting for its CPU) kcont's callout is EXPIRED, NetBSD's still PENDING.
      After the run, both agree.  ``callout_stop`` of a callout in that window
      prevents the call and returns False in both.
    * CPU: re-scheduling a PENDING callout (or one due and not yet run,
      which NetBSD still calls PENDING) leaves it on its CPU, as NetBSD does;
      kcont alone would move it to the caller's CPU, so the layer passes
      ``kc.cpu`` explicitly.  A callout that is not pending moves to the
      caller's CPU (kcont's ``cpu=None``), a bound one stays on its CPU.
    * ``CALLOUT_MPSAFE`` is accepted; kcont has no kernel lock, so a callout
      without it is not serialised with other non-MPSAFE code.

Invariants
    * A callout never has two invocations running at once (kcont's
      non-reentrancy; callout(9) CONCURRENCY: "any given callout will never
      have multiple concurrent invocations").
    * "Is the caller the handler?" (``callout_destroy``'s KASSERT) is
      kcont's ``kc.running_here``: the layer keeps no bookkeeping of its own.

Locking
    C: ``Callout._lock`` (a ``threading.Lock``) guards ``_sticky`` and
    serialises ``callout_schedule``/``callout_reset``/``callout_ack`` with
    each other and with the trampoline's start.  It is taken before kcont's
    internal lock (inside ``stop``/``set_arg``/``ack``/``schedule``), never
    while a handler runs or while waiting (``callout_halt``).  ``_cpu`` is
    written by ``callout_bind`` only (a rule of callout(9): bind before use).
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable
from typing import Any

import kcont

from . import KassertError

__all__ = [
    "CALLOUT_FLAGMASK",
    "CALLOUT_MPSAFE",
    "Callout",
    "callout_ack",
    "callout_active",
    "callout_bind",
    "callout_destroy",
    "callout_expired",
    "callout_halt",
    "callout_init",
    "callout_invoking",
    "callout_pending",
    "callout_reset",
    "callout_schedule",
    "callout_setfunc",
    "callout_stop",
]

# NetBSD sys/callout.h values.
CALLOUT_MPSAFE = 0x0100  # does not need kernel_lock (accepted; kcont has none)
CALLOUT_FLAGMASK = 0xFF00  # end-user flags; callout_init KASSERTs nothing else is set

Handler = Callable[[Any], object]
# The continuation's argument: the callout itself, then NetBSD's func and arg.
_Call = tuple["Callout", "Handler | None", Any]


class Callout:
    """A callout handle (NetBSD ``callout_t``), made by :func:`callout_init`.

    Use the ``callout_*`` functions on it.  ``continuation`` is the kcont
    continuation behind it (for inspection: its flags, queue, trace name).
    """

    __slots__ = ("__weakref__", "_cpu", "_flags", "_kc", "_lock", "_sticky")

    def __init__(self, flags: int = 0) -> None:
        if not isinstance(flags, int) or isinstance(flags, bool):
            raise TypeError(f"flags must be an int, not {type(flags).__name__}")
        if flags & ~CALLOUT_FLAGMASK:
            raise KassertError(
                f"callout_init: flags {flags:#x} outside CALLOUT_FLAGMASK ({CALLOUT_FLAGMASK:#x})"
            )
        self._flags = flags
        self._lock = threading.Lock()
        self._sticky = False  # C: INVOKING as NetBSD keeps it (see module docstring)
        self._cpu: kcont.CPU | None = None  # bound CPU (callout_bind), else None
        call: _Call = (self, None, None)
        self._kc: kcont.Continuation[_Call] = kcont.Continuation(
            kcont.wq_softclock, _softclock, call, name="callout"
        )

    @property
    def flags(self) -> int:
        """The flags given to :func:`callout_init`."""
        return self._flags

    @property
    def continuation(self) -> kcont.Continuation[Any]:
        """The kcont continuation that implements this callout."""
        return self._kc

    @property
    def cpu(self) -> kcont.CPU | None:
        """The CPU given to :func:`callout_bind`, or None (unbound)."""
        return self._cpu

    def __repr__(self) -> str:
        return f"<kcont.compat.Callout {self._kc.name} {self._kc.flags or 'idle'}>"


def _softclock(call: _Call, kc: kcont.Continuation[_Call]) -> None:
    """The continuation function of every callout: NetBSD's ``func(arg)``."""
    c, func, arg = call
    with c._lock:
        # NetBSD sets INVOKING "just before a callout's function is being
        # called" and keeps it until callout_ack; kcont would clear it when we
        # return.  Keep it, unless someone acknowledged since the expiry.
        if kc.invoking:
            c._sticky = True
    if func is None:  # unreachable: callout_schedule refuses a callout without a function
        raise KassertError(f"{c!r} fired without a function")
    func(arg)


def _check(c: object) -> Callout:
    if not isinstance(c, Callout):
        raise TypeError(f"expected a Callout from callout_init, not {type(c).__name__}")
    return c


def _check_func(func: object) -> None:
    if not callable(func):
        raise TypeError(f"func must be callable (KASSERT(func != NULL)), not {type(func).__name__}")
    kcont.check_func(func, "func(arg)")  # refuses coroutine and generator functions


def callout_init(flags: int = 0) -> Callout:
    """Initialise and return a callout (``callout_init(c, flags)``).

    Args:
        flags: 0 or ``CALLOUT_MPSAFE`` (accepted: kcont has no kernel lock).

    Raises:
        KassertError: a flag outside ``CALLOUT_FLAGMASK``.
        kcont.NoRuntimeError: no runtime is current.

    Context:
        Thread context, inside ``with runtime:`` (the callout belongs to the
        current runtime).
    """
    return Callout(flags)


def callout_setfunc(c: Callout, func: Handler, arg: Any) -> None:
    """Set the function and argument: ``func(arg)`` will be called.

    Like kcont's ``set_arg``, an invocation already started keeps the old
    pair; the next one uses the new pair.

    Raises:
        TypeError: ``func`` is not callable, or is a coroutine, async
            generator or generator function (``kcont.check_func``).
        kcont.DestroyedError: the callout was destroyed.
    """
    _check(c)
    _check_func(func)
    _set_call(c, func, arg, _label(func))


def _label(func: Handler) -> str:
    """The trace name of a callout running ``func``, computed before any lock
    is taken: a plain function's qualified name, or its type's (never
    ``repr``, which is user code that may raise or use the callout)."""
    if type(func) in (types.FunctionType, types.MethodType, types.BuiltinFunctionType):
        return f"callout:{func.__qualname__}"
    return f"callout:{type(func).__qualname__}"


def _set_call(c: Callout, func: Handler, arg: Any, label: str) -> None:
    kc = c._kc
    kc.set_arg((c, func, arg))
    kc.name = label


def _check_ticks(ticks: object, what: str) -> int:
    """NetBSD's ``KASSERT(to_ticks >= 0)``; returns the kcont ``nticks``."""
    if not isinstance(ticks, int) or isinstance(ticks, bool):
        raise TypeError(f"ticks must be an int, not {type(ticks).__name__}")
    if ticks < 0:
        raise KassertError(f"{what}: ticks {ticks} < 0 (KASSERT(to_ticks >= 0))")
    return ticks or 1  # 0: "at the next tick", never kcont's immediate commit


def _target_cpu(c: Callout) -> kcont.CPU | None:
    """Where ``callout_schedule`` arms the callout (``C`` held).

    A bound callout runs on its CPU.  NetBSD leaves a pending callout on its
    CPU ("Leave on existing CPU"), and a callout that is due and not yet run
    is still PENDING there; kcont would move it to the caller's CPU, so pass
    it explicitly.  Otherwise the caller's CPU (``None``).
    """
    kc = c._kc
    if c._cpu is None and (kc.pending or kc.queued):
        return kc.cpu
    return c._cpu


def callout_schedule(c: Callout, ticks: int) -> None:
    """(Re)arm the timer for ``ticks`` ticks with the function already set.

    Clears EXPIRED and INVOKING and sets PENDING, as NetBSD's
    ``callout_schedule_locked`` does; so a handler may re-arm itself without
    ``callout_ack``.  ``ticks == 0`` means the next tick.  Re-arming a
    PENDING callout moves its deadline and leaves it on its CPU; otherwise an
    unbound callout moves to the caller's CPU (``kcont.curcpu()``), and a
    bound one runs on its CPU.

    Raises:
        KassertError: ``ticks < 0`` or no function set.
        TypeError: ``ticks`` is not an int.
        kcont.DestroyedError: the callout was destroyed.
    """
    _check(c)
    nticks = _check_ticks(ticks, "callout_schedule")
    kc = c._kc
    if not kc.destroyed and kc.arg[1] is None:  # destroyed: kcont raises DestroyedError below
        raise KassertError("callout_schedule: no function set (KASSERT(c->c_func != NULL))")
    with c._lock:
        c._sticky = False
        # Clears INVOKING and arms under kcont's state lock: NetBSD's
        # callout_schedule_locked, with no window for an expiry in between.
        kc.schedule(nticks, _target_cpu(c), ack=True)


def callout_reset(c: Callout, ticks: int, func: Handler, arg: Any) -> None:
    """Set ``func(arg)`` and (re)arm the timer for ``ticks`` ticks.

    As in NetBSD, the previous arming never calls the new pair: if it is due
    and has not started, it is cancelled (the new arming replaces it); if it
    has started, it keeps the old pair.

    Raises:
        As :func:`callout_setfunc` and :func:`callout_schedule`.
    """
    _check(c)
    nticks = _check_ticks(ticks, "callout_reset")
    _check_func(func)
    label = _label(func)
    kc = c._kc
    with c._lock:
        cpu = _target_cpu(c)  # before stop(), which clears PENDING
        # kcont has no "set the argument and schedule" in one call: stop the
        # previous arming first, so that no expiry of it can fall between
        # set_arg and schedule and call the new pair.
        kc.stop()
        _set_call(c, func, arg, label)  # DestroyedError here if destroyed (stop changed nothing)
        c._sticky = False
        kc.schedule(nticks, cpu, ack=True)


def callout_stop(c: Callout) -> bool:
    """Stop the timer; clear PENDING and EXPIRED (not INVOKING).

    Returns:
        bool: True if the callout was EXPIRED: its function has run, runs now, or
        (threaded runtime) is about to run and could not be prevented.  Does
        not wait: see :func:`callout_halt`.
    """
    return _check(c)._kc.stop()


def callout_halt(c: Callout, interlock: kcont.Mutex | None = None) -> bool:
    """Stop the timer and wait until the handler is not running.

    ``interlock``, if given, is released while waiting and taken again
    before returning; it is not released if no wait is needed.  Called from
    the callout's own handler, it stops and returns at once.

    Returns:
        As :func:`callout_stop`.

    Context:
        Not while holding a lock the handler takes (other than
        ``interlock``): they would deadlock.
    """
    return _check(c)._kc.halt(interlock)


def callout_pending(c: Callout) -> bool:
    """PENDING: the timer is armed and has not expired."""
    return _check(c)._kc.pending


def callout_expired(c: Callout) -> bool:
    """EXPIRED: the timer expired (and the function was, or is about to be,
    called) since the last schedule or stop."""
    return _check(c)._kc.expired


def callout_active(c: Callout) -> bool:
    """``callout_pending(c) or callout_expired(c)`` (use not recommended)."""
    return _check(c)._kc.active


def callout_invoking(c: Callout) -> bool:
    """INVOKING: set just before the function is called, cleared only by
    :func:`callout_ack` or a new schedule (as in NetBSD)."""
    c = _check(c)
    with c._lock:
        return c._kc.invoking or c._sticky


def callout_ack(c: Callout) -> None:
    """Clear INVOKING (the handshake of ``callout_invoking``)."""
    c = _check(c)
    with c._lock:
        c._kc.ack()
        c._sticky = False


def callout_destroy(c: Callout) -> None:
    """Destroy the callout: every later use raises.

    NetBSD asserts that the callout is neither PENDING nor running (except
    from its own handler): "The callout should be stopped before
    callout_destroy is called by calling callout_halt."

    Raises:
        KassertError: the callout is pending (or due and not yet run), or its
            handler runs on another thread.
        kcont.DestroyedError: already destroyed.
    """
    c = _check(c)
    kc = c._kc
    if kc.pending or kc.queued:
        raise KassertError(f"callout_destroy: {c!r} is pending; call callout_halt() first")
    if kc.running and not kc.running_here:
        raise KassertError(f"callout_destroy: {c!r} is running on another thread; call callout_halt() first")
    kc.destroy()


def callout_bind(c: Callout, ci: kcont.CPU) -> None:
    """Bind the callout to CPU ``ci``: it will only execute there.

    Raises:
        KassertError: the callout is not ``CALLOUT_MPSAFE``, is pending, or
            is running (NetBSD's ``KASSERT`` checks).
        TypeError: ``ci`` is not a kcont CPU.
        kcont.InvalidArgumentError: ``ci`` belongs to another runtime.
    """
    c = _check(c)
    if not isinstance(ci, kcont.CPU):
        raise TypeError(f"ci must be a kcont.CPU, not {type(ci).__name__}")
    kc = c._kc
    if ci.rt is not kc.runtime:
        raise kcont.InvalidArgumentError(f"{ci!r} belongs to another runtime than {c!r}")
    if not c._flags & CALLOUT_MPSAFE:
        raise KassertError("callout_bind: the callout must be CALLOUT_MPSAFE")
    if kc.pending or kc.queued or kc.running:
        raise KassertError(f"callout_bind: {c!r} must be stopped and not running")
    c._cpu = ci

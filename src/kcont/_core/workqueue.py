"""Workqueues: priorities, per-CPU and shared queues, the predefined queues and
the acquire/release registry.

Priorities
    One integer scale, higher runs first, borrowed from NetBSD's ``pri_t``
    (``sys/sys/param.h``): the four soft interrupt levels sit at the top of the
    kernel real-time band (``PRI_SOFTSERIAL`` 223 down to ``PRI_SOFTCLOCK``
    211), above every thread-level priority.  A queue whose priority is at or
    above ``PRI_SOFT_MIN`` is *soft-level* (served like a softint: never
    behind thread-level work and not expected to block); below it, the queue
    is *thread-level* (its functions may block).

Predefined queues
    ``wq_softserial`` ... ``wq_prilow`` are module-level :class:`PredefinedQueue`
    handles.  They are not bound to a runtime: a continuation created on one
    uses the current runtime's queue of that name.  All eight are per-CPU
    (docs/semantics.md, "Predefined queues"), so ``ci`` never gets ENOENT on
    them.  The table below is the single source of their names and priorities
    (the historical kcont wired softclock to the softnet queue by hand).

Registry
    ``acquire(pri, flags)`` returns the same queue for the same ``(pri,
    flags)`` and counts acquisitions; each continuation also holds its queue.
    The last release returns EBUSY (and changes nothing) while continuations
    are bound; otherwise the queue is freed.  Predefined queues cannot be
    released.

Locking
    S: a :class:`Workqueue`'s counters (``acquired``, ``bound``, ``freed``)
    and the registry are guarded by the owning runtime's state lock.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError, WorkqueueReleasedError
from .layout import WorkqueueFields

if TYPE_CHECKING:
    from .runqueue import RunQueue
    from .runtime import RuntimeCore

# -- priorities (NetBSD pri_t values) ---------------------------------------

MAXPRI = 223
PRI_SOFTSERIAL = 223
PRI_SOFTNET = 219
PRI_SOFTBIO = 215
PRI_SOFTCLOCK = 211
PRI_SOFT_MIN = 192  # NetBSD PRI_KERNEL_RT: the soft-interrupt band starts here
PRI_HIGH = 127  # top of NetBSD's PRI_KTHREAD band (96..127)
PRI_MEDHIGH = 111
PRI_MEDLOW = 79  # in NetBSD's PRI_KERNEL band (64..95)
PRI_LOW = 63  # below the kernel bands

BAND_SOFT = 0
BAND_THREAD = 1
BAND_NAMES = ("soft", "thread")
ALL_BANDS = (BAND_SOFT, BAND_THREAD)  # a CPU's bands, in dispatch order

WQ_PERCPU = 0x1
_KNOWN_FLAGS = WQ_PERCPU


def band_of(pri: int) -> int:
    return BAND_SOFT if pri >= PRI_SOFT_MIN else BAND_THREAD


def check_pri(pri: object) -> int:
    if not isinstance(pri, int) or isinstance(pri, bool):
        raise TypeError(f"priority must be an int, not {type(pri).__name__}")
    if not 0 <= pri <= MAXPRI:
        raise InvalidArgumentError(f"priority {pri} out of range 0..{MAXPRI}")
    return pri


def check_wq_flags(flags: object) -> int:
    if not isinstance(flags, int) or isinstance(flags, bool):
        raise TypeError(f"flags must be an int, not {type(flags).__name__}")
    if flags & ~_KNOWN_FLAGS or flags < 0:
        raise InvalidArgumentError(f"unknown workqueue flags {flags:#x} (only WQ_PERCPU is defined)")
    return flags


class PredefinedQueue:
    """A runtime-independent handle on one of the eight predefined queues.

    ``kcont.wq_softnet`` and friends are instances.  Creating a continuation on
    one binds it to the current runtime's queue of that name.
    """

    __slots__ = ("index", "name", "pri")

    def __init__(self, index: int, name: str, pri: int) -> None:
        self.index = index
        self.name = name
        self.pri = pri

    @property
    def percpu(self) -> bool:
        return True

    def resolve(self, rt: RuntimeCore) -> Workqueue:
        """The queue of this name in runtime ``rt``."""
        from .runtime import RuntimeCore

        if not isinstance(rt, RuntimeCore):
            raise TypeError(f"expected a kcont runtime, not {type(rt).__name__}")
        return rt._predefined[self.index]

    def __repr__(self) -> str:
        return f"<kcont predefined queue {self.name} pri={self.pri}>"

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return predefined_queue, (self.name,)


# The single table of predefined queues, highest priority first.
PREDEFINED: tuple[PredefinedQueue, ...] = tuple(
    PredefinedQueue(i, name, pri)
    for i, (name, pri) in enumerate(
        (
            ("wq_softserial", PRI_SOFTSERIAL),
            ("wq_softnet", PRI_SOFTNET),
            ("wq_softbio", PRI_SOFTBIO),
            ("wq_softclock", PRI_SOFTCLOCK),
            ("wq_prihigh", PRI_HIGH),
            ("wq_primedhigh", PRI_MEDHIGH),
            ("wq_primedlow", PRI_MEDLOW),
            ("wq_prilow", PRI_LOW),
        )
    )
)


def predefined_queue(name: str) -> PredefinedQueue:
    """The predefined queue handle called ``name`` (e.g. ``'wq_softnet'``)."""
    for handle in PREDEFINED:
        if handle.name == name:
            return handle
    raise KeyError(name)


class Workqueue(WorkqueueFields):
    """A queue of continuations at one priority, per-CPU or shared.

    Obtained from a runtime (``rt.workqueue(pri, percpu=...)`` or
    ``kcont_workqueue_acquire``) or, for the predefined queues, by resolving a
    :class:`PredefinedQueue`.  Not thread-affine: a queue is served by whichever
    worker of the right CPU and band is free ("workqueue items are not tied to
    a specific kernel thread").
    """

    __slots__ = ()  # the fields are in its base (kcont._core.layout)

    def __init__(
        self,
        rt: RuntimeCore,
        name: str,
        pri: int,
        flags: int,
        *,
        predefined: bool,
        order: int,
    ) -> None:
        from .runqueue import RunQueue
        from .runtime import RuntimeCore

        if not isinstance(rt, RuntimeCore):
            raise TypeError(f"expected a kcont runtime, not {type(rt).__name__}")
        self.rt = rt
        self.name = name
        self.pri = pri
        self.flags = flags
        self.percpu = bool(flags & WQ_PERCPU)
        self.band = band_of(pri)
        self.predefined = predefined
        self.order = order  # creation order: breaks priority ties, FIFO
        self.acquired = 0  # S: outstanding acquisitions
        self.bound = 0  # S: continuations created on it and not destroyed
        self.freed = False  # S
        # One run queue per CPU, or the same shared one at every index.
        if flags & WQ_PERCPU:
            self.rqs: tuple[RunQueue, ...] = tuple(RunQueue(rt, self, cpu) for cpu in rt.cpus)
        else:
            shared = RunQueue(rt, self, None)
            self.rqs = (shared,) * len(rt.cpus)

    @property
    def runtime(self) -> RuntimeCore:
        return self.rt

    def unique_rqs(self) -> tuple[RunQueue, ...]:
        return self.rqs if self.flags & WQ_PERCPU else self.rqs[:1]

    def release(self) -> None:
        """Release one acquisition (Pythonic form of ``kcont_workqueue_release``).

        Raises:
            BusyError: the last acquisition, and continuations are still bound
                (nothing changes; destroy them and release again).
            InvalidArgumentError: a predefined queue, or released more often
                than acquired.
        """
        from ..errors import BusyError

        code = self.rt._release_workqueue(self)
        if code == errno.EBUSY:
            raise BusyError(f"{self!r}: {self.bound} continuation(s) still bound to it")
        if code:
            if self.predefined:
                raise InvalidArgumentError(f"{self!r} is predefined and cannot be released")
            if self.freed:
                raise WorkqueueReleasedError(f"{self!r} was already freed")
            raise InvalidArgumentError(f"{self!r} released more often than acquired")

    def __enter__(self) -> Workqueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        kind = "per-CPU" if self.flags & WQ_PERCPU else "shared"
        state = " freed" if self.freed else ""
        return f"<kcont.Workqueue {self.name} pri={self.pri} {kind}{state}>"

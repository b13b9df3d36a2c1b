"""Which core runs, and the field layouts of the hot objects.

What it owns
    The choice between the two implementations of the hot paths, made once
    at import: the compiled core (the C extension ``kcont._core._ckcont``,
    built by ``pip install`` where a C compiler is available) or the
    pure-Python reference.  The compiled core is used when it was built and
    imports; the pure one otherwise, or when the environment variable
    ``KCONT_PURE_PYTHON`` is set to anything but ``""`` or ``"0"``.
    :data:`IMPLEMENTATION` says which (``kcont.implementation``).

    It also owns the field lists of the objects the compiled core lays out
    in C: a continuation, a run queue, a CPU, a workqueue and the runtime's
    hot fields.  (The timer wheel is replaced as a whole: see
    :mod:`kcont._core.timerwheel`.)  Each class of the core derives from the
    matching ``*Fields`` base here, which is either a pure-Python class with
    exactly these ``__slots__`` or the compiled type exposing the same names,
    so that the pure code (every slow path) runs unchanged on both.

Invariants
    The compiled types expose exactly the names of the pure bases
    (``tests/test_implementation.py`` checks it); their fast paths hand every
    case they do not handle to the pure method, kept as ``_py_<name>``, before
    changing anything, so behaviour and messages are the reference's.

Locking
    None: the choice is made at import, and the fields are guarded as their
    owners' docstrings say.
"""

from __future__ import annotations

import os
import threading
from types import ModuleType
from typing import TYPE_CHECKING

#: "compiled" or "python": which core this process runs.
IMPLEMENTATION: str
#: Why the pure core runs ("" when the compiled one does).
FALLBACK_REASON: str = ""
_ckcont: ModuleType | None = None

if os.environ.get("KCONT_PURE_PYTHON", "") not in ("", "0"):
    FALLBACK_REASON = "KCONT_PURE_PYTHON is set"
else:
    try:
        from . import _ckcont  # type: ignore[attr-defined,no-redef]
    except ImportError as exc:  # built for another Python, say
        FALLBACK_REASON = f"the compiled core is not available ({exc})"
    else:
        if getattr(_ckcont, "__file__", None) is None:  # only the folder of its C sources: not built
            _ckcont = None
            FALLBACK_REASON = "the compiled core is not built (no C compiler at install time)"
IMPLEMENTATION = "python" if _ckcont is None else "compiled"
COMPILED = _ckcont is not None


class _ContinuationFields:
    __slots__ = (
        "_arg",
        "_bucket",
        "_commits",
        "_ctx",
        "_deadline",
        "_fired",
        "_flags",
        "_func",
        "_lock",
        "_release",
        "_rq",
        "_runner",
        "_started",
        "_wq",
        "name",
    )


class _RunQueueFields:
    __slots__ = (
        "armed",
        "band",
        "bit",
        "cpu",
        "depth_hwm",
        "ebusy",
        "exceptions",
        "fifo",
        "func_ns",
        "invoked",
        "late",
        "late_ticks",
        "lock_waits",
        "parked",
        "pri",
        "reentry_waits",
        "rt",
        "scheduled",
        "stopped",
        "woken",
        "wq",
    )


class _CPUFields:
    __slots__ = ("__weakref__", "index", "ready", "rqs", "rt")


class _WorkqueueFields:
    __slots__ = (
        "__weakref__",
        "acquired",
        "band",
        "bound",
        "flags",
        "freed",
        "name",
        "order",
        "percpu",
        "predefined",
        "pri",
        "rqs",
        "rt",
    )


class _RuntimeFields:
    __slots__ = (
        "_callback_waiters",
        "_callbacks_ready",
        "_clock",
        "_closed",
        "_ctx_cache",
        "_dropped",
        "_ended_waiters",
        "_failed",
        "_halting",
        "_kick",
        "_lock",
        "_run_waiters",
        "_running",
        "_time_funcs",
        "_timer_wake",
        "_trace",
        "_wheel",
    )


PURE_FIELDS: dict[str, type] = {
    "ContinuationFields": _ContinuationFields,
    "RunQueueFields": _RunQueueFields,
    "CPUFields": _CPUFields,
    "WorkqueueFields": _WorkqueueFields,
    "RuntimeFields": _RuntimeFields,
}

if TYPE_CHECKING or _ckcont is None:
    # (The type checker sees the pure classes: the compiled types have the
    # same fields.)
    ContinuationFields = _ContinuationFields
    RunQueueFields = _RunQueueFields
    CPUFields = _CPUFields
    WorkqueueFields = _WorkqueueFields
    RuntimeFields = _RuntimeFields
else:
    ContinuationFields = _ckcont.ContinuationFields
    RunQueueFields = _ckcont.RunQueueFields
    CPUFields = _ckcont.CPUFields
    WorkqueueFields = _ckcont.WorkqueueFields
    RuntimeFields = _ckcont.RuntimeFields


def new_state_lock() -> threading.Lock:
    """A runtime's state lock: a ``threading.Lock``, or on the compiled core
    its ``StateLock`` (the same interface and behaviour, which the compiled
    fast paths take without a Python call)."""
    if _ckcont is None:
        return threading.Lock()
    return _ckcont.StateLock()  # type: ignore[no-any-return]


def compiled_module() -> ModuleType | None:
    """The compiled core's module, or None when the pure core runs."""
    return _ckcont


__all__ = ["COMPILED", "FALLBACK_REASON", "IMPLEMENTATION", "compiled_module", "new_state_lock"]

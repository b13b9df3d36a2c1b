"""Continuation state flags: names and meanings.

The seed's public states are PENDING, EXPIRED and INVOKING; the others are
internal.  Only :mod:`kcont._core.continuation` (the state machine) and the
dispatch function write them; see its docstring for the transition table.
"""

from __future__ import annotations

PENDING = 0x01  # armed in the timer wheel
EXPIRED = 0x02  # the current scheduling was committed to invocation
INVOKING = 0x04  # an invocation is committed and not yet acknowledged or finished
QUEUED = 0x08  # on a run queue, not started
RUNNING = 0x10  # the function is executing
DESTROYED = 0x20  # refuses every later change
DETACHED = 0x40  # destroyed and no longer counted as bound to its workqueue
SHARED_CTX = 0x80  # its context object may be shared: run a copy of it

FLAG_NAMES: dict[int, str] = {
    PENDING: "PENDING",
    EXPIRED: "EXPIRED",
    INVOKING: "INVOKING",
    QUEUED: "QUEUED",
    RUNNING: "RUNNING",
    DESTROYED: "DESTROYED",
    DETACHED: "DETACHED",
}

FLAG_DESCRIPTIONS: dict[int, str] = {
    PENDING: "its timer is armed and has not expired",
    EXPIRED: "the current scheduling has been committed to invocation",
    INVOKING: "an invocation is committed and not yet acknowledged or finished",
    QUEUED: "waiting on a run queue for a CPU (and its lock)",
    RUNNING: "its function is executing",
    DESTROYED: "destroyed: every later schedule or change is refused",
    DETACHED: "destroyed and released from its workqueue",
    SHARED_CTX: "its captured context is shared: each invocation runs a copy",
}


def flag_names(flags: int) -> str:
    """``'PENDING|INVOKING'``-style rendering of ``flags`` (``'IDLE'`` if none)."""
    names = [name for bit, name in FLAG_NAMES.items() if flags & bit]
    return "|".join(names) if names else "IDLE"

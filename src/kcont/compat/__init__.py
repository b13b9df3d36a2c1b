"""NetBSD compatibility layers: callout(9), softint(9) and workqueue(9) on kcont.

What it owns
    Three small modules of functions with NetBSD's names, each written only
    in terms of kcont's public API (names exported by :mod:`kcont`), as the
    proof that one framework replaces three:

    * :mod:`kcont.compat.callout`: ``callout_init``, ``callout_reset``,
      ``callout_schedule``, ``callout_stop``, ``callout_halt``, ... A callout
      is one continuation on ``wq_softclock``.
    * :mod:`kcont.compat.softint`: ``softint_establish``,
      ``softint_schedule``, ``softint_schedule_cpu``,
      ``softint_disestablish``.  A softint is one continuation per CPU on the
      predefined queue of its level.
    * :mod:`kcont.compat.workqueue`: ``workqueue_create``,
      ``workqueue_enqueue``, ``workqueue_wait``, ``workqueue_destroy``.  A
      workqueue is one *worker* continuation per queue (per CPU with
      ``WQ_PERCPU``) on an acquired kcont queue of its priority, draining a
      FIFO of work items.

    docs/compat.md maps every NetBSD call to the kcont calls behind it and
    lists what is not one to one, and why.

Argument conventions
    A call that fills caller storage in C returns the object in Python
    (``c = callout_init(0)``, ``wq = workqueue_create(...)``).  An ``int``
    error return stays an errno ``int`` where the man page documents one; a
    condition NetBSD checks with ``KASSERT`` or ``panic`` raises
    :class:`KassertError` with a message naming the rule, never a bare
    ``assert``.  kcont's own exceptions (``DestroyedError``, ``TypeError``
    for a wrong argument type, ``InvalidArgumentError``) pass through.

Waiting (the softint and workqueue layers)
    ``softint_disestablish`` and ``workqueue_wait`` wait with kcont's public
    ``Continuation.flush()``: it waits until the committed invocation (if
    any) has run and no invocation runs, returns at once from the
    continuation's own function, and on a :class:`kcont.SimRuntime` steps
    the simulation (raising :class:`kcont.SimDeadlockError` when that cannot
    end).  No layer keeps a condition variable or tests the runtime's type.

Locking
    Each layer object has its own lock (documented in its module); the
    layers never hold one of them while calling a handler or waiting in
    ``flush``/``halt``/``destroy``, and take them before kcont's internal
    lock, never after.
"""

from __future__ import annotations

import kcont

__all__ = ["KassertError"]


class KassertError(kcont.KcontError, RuntimeError):
    """A rule that NetBSD enforces with ``KASSERT`` or ``panic`` was broken
    (destroying a pending callout, enqueueing a work twice, triggering a
    disestablished softint, ...).  The message names the rule.  The C kernel
    would crash or corrupt memory; the compatibility layers refuse the call
    and change nothing."""

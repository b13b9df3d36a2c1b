"""Stress harness with exact accounting: ``python -m kcont stress``.

Several producer threads create, schedule (immediate and timed), re-arm,
stop, halt, flush, setarg, setfunc, setmutex and destroy continuations at random on
predefined and acquired queues, while the continuations' functions take locks,
raise, re-arm, stop, halt or destroy themselves, hand their lock over and
sometimes sleep.  At the end the harness checks, exactly:

* no invocation lost: every successful scheduling (a *ticket*) ran once, or
  was cancelled by a stop/halt/destroy that reported so (or by a re-arm, or
  by the shutdown, which counts it);
* none ran twice, none ran concurrently with another invocation of the same
  continuation, none ran after a stop/halt that reported it prevented, or
  after ``destroy`` returned;
* order per ``{wq, lock, ci}``: start order equals ready order (immediate
  schedulings bracketed by the harness's sequence numbers, timers by deadline);
* no timer early (start tick >= tick read before ``schedule`` + ``nticks``);
* every exception counted (raised = seen by the handler = ``stats()`` =
  ``ShutdownAccount.failed``);
* the shutdown account and the per-queue statistics equal the journal.

Design: tickets and the harness lock
------------------------------------
Each continuation has a *slot* with a harness lock ``h`` (a
:class:`kcont.Mutex`).  Every call that can start or end a scheduling
(``schedule``, ``stop``, ``halt``'s stop, ``set_mutex``) is made with ``h``
held, together with the recording of its outcome, and a function records its
start under ``h`` first thing.  The ticket an invocation serves is then the
slot's current ticket: between the dispatch of an invocation and its
recording, INVOKING is set, so no other scheduling can succeed (EBUSY), and
only the function itself acknowledges (producers never call ``ack``).

Lock order: a continuation's lock (``kc.mutex``) -> ``h`` -> kcont's state
lock.  Functions run with their lock held by the dispatcher and take ``h``;
producers take a continuation's lock (for ``setarg``/``setmutex``) before
``h``.  Never the reverse: nobody blocks on a continuation's lock while
holding ``h`` (the lock hand-over inside a function uses a non-blocking try).
``halt`` waits with ``interlock=h`` (released while waiting, so the running
function can record itself); ``destroy`` is called without ``h``.

What cannot be observed directly is inferred, and only where kcont's
semantics make it certain:

* a ``halt`` that waits re-stops the continuation at every invocation end
  (docs/semantics.md §8), which silently cancels a scheduling made
  meanwhile; when the halt returns, a ticket issued during it that is no
  longer pending, queued or running was so cancelled;
* ``halt`` and ``destroy`` stop before the harness learns their result (halt
  returns it only after waiting, destroy never), and a stop clears EXPIRED:
  a later ``stop`` then rightly returns False for an invocation already
  dispatched.  So while a halt waits or a destroy runs, False from a stop is
  not taken as "prevented": the ticket is settled once it can no longer run
  (then it was cancelled) or when it starts;
* a ``destroy`` cancels whatever it finds.

Everything else must be reported by a return value.  Start order is checked
where the recording order is the start order: continuations with a lock
(their lock is held from dispatch to the recording), per-CPU soft-level
queues (one soft worker per CPU), and everything on the simulator.

A small public hook would make the harness simpler and the check stronger:
the scheduling an invocation serves (a generation number taken by the
dispatcher at start), readable inside the function.  The function would no
longer need to take ``h`` first, and producers could call ``ack`` too.

The journal
-----------
Every operation is journaled cheaply: per-thread counters (merged at the
end) and, per continuation, a bounded history of its last events (printed
with a violation).  The checks themselves run online, under ``h``, against
the slot's ticket ledger, so the memory needed does not grow with the run.

Layout
------
``config`` (what a run does), ``ledger`` (tickets, slots, counters, the
online ledger), ``checker`` (end-of-run invariants), ``workload`` (the
operations and the functions: :class:`Harness`), ``driver`` (the threaded
run), ``report`` (the result) and ``cli`` (the command).  ``sigint`` is a
separate mode (``--sigint``): SIGINT delivered to the main thread at random
instants while it uses the runtime, then the same kind of exact ledger.
"""

from __future__ import annotations

from .cli import add_arguments, main, run
from .config import DEFAULT_WEIGHTS, StressConfig
from .driver import run_stress
from .ledger import COUNTERS, QCOUNTERS, Fault, Slot, Ticket
from .report import StressResult
from .workload import Harness

__all__ = [
    "COUNTERS",
    "DEFAULT_WEIGHTS",
    "QCOUNTERS",
    "Fault",
    "Harness",
    "Slot",
    "StressConfig",
    "StressResult",
    "Ticket",
    "add_arguments",
    "main",
    "run",
    "run_stress",
]

"""The end-of-run invariants: :class:`Checker` adds to the ledger the checks
made once the producers have stopped (every open ticket can still run, the
last release of a bound queue is EBUSY) and after the shutdown (the
shutdown account, the exception tallies, the ticket balance and the per-queue
statistics all equal the journal).

Locking: called from the thread that runs the harness, with no kcont lock
held; each slot is read under its harness lock ``h``.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from typing import Any

from .. import capi
from .._core.runtime import ShutdownAccount
from .ledger import C_CANC_HALT, Q_STOPPED, QCOUNTERS, Ledger, Slot, Ticket, _alive


class Checker(Ledger):
    """The checks made at the end of a run, on top of the online ledger."""

    def final_check_before_shutdown(self) -> None:
        """Producers have stopped and functions no longer re-arm: every open
        ticket must still be able to run (pending, queued or running)."""
        ctr = self._counters_for_thread()
        for slot in self._live_slots():
            with slot.h:
                t = slot.current
                if t is None or t.started or t.outcome is not None or t.expect_run:
                    continue
                if _alive(slot.kc):
                    continue
                if t.halting or t.maybe:
                    t.outcome = "halt"
                    ctr.c[C_CANC_HALT] += 1
                    ctr.qc(slot.wqi)[Q_STOPPED] += 1
                    continue
                if slot.destroying and not slot.destroyed:
                    continue
                self.violation(slot, f"{t!r} LOST: not started, not cancelled, and no longer scheduled")
                t.outcome = "lost"
                self._lost += 1

    def finish(self, account: ShutdownAccount, stats: Mapping[str, Any]) -> dict[str, int]:
        """After shutdown: reconcile the journal with the account and stats;
        returns the merged figures."""
        ctr = self._counters_for_thread()
        open_tickets: list[tuple[Slot, Ticket]] = []
        for slot in self._live_slots():
            with slot.h:
                t = slot.current
                if slot.in_body:
                    self.violation(slot, "a function body still runs after shutdown")
                if t is None or t.started or t.outcome is not None:
                    continue
                if t.expect_run:
                    self.violation(slot, f"{t!r} was reported running by a stop but never ran")
                    continue
                open_tickets.append((slot, t))
                t.outcome = "shutdown"
                ctr.qc(slot.wqi)[Q_STOPPED] += 1
        figures = self.figures()
        expected_failed = figures["faults"] + self._handler_unexpected
        ran = figures["starts"] + figures["external_runs"]
        if account.ran != ran:
            self.violation(
                None,
                f"account.ran = {account.ran}, but {ran} invocations ran "
                f"({self._freed_invoked} of them on queues freed since)",
            )
        if account.failed != expected_failed or self._handler_seen != figures["faults"]:
            self.violation(
                None,
                f"exceptions: {figures['faults']} raised, {self._handler_seen} seen by the handler, "
                f"{account.failed} in the account",
            )
        if account.pending + account.cancelled != len(open_tickets):
            self.violation(
                None,
                f"shutdown stopped {account.pending} timers and cancelled {account.cancelled} invocations, "
                f"but {len(open_tickets)} tickets were open: "
                + ", ".join(f"s{s.id}:{t!r}" for s, t in open_tickets[:10]),
            )
        if account.unfinished:
            self.violation(None, f"{account.unfinished} invocations unfinished at shutdown")
        # Every ticket has exactly one outcome.
        tickets = figures["tickets_now"] + figures["tickets_timer"]
        outcomes = (
            figures["starts"]
            + figures["cancelled_stop"]
            + figures["cancelled_halt"]
            + figures["cancelled_destroy"]
            + figures["replaced"]
            + figures["replaced_or_halted"]
            + self._lost
            + len(open_tickets)
        )
        if tickets != outcomes:
            self.violation(None, f"ticket balance: {tickets} tickets issued, {outcomes} outcomes")
        self._check_stats(stats, figures)
        return figures

    def _check_stats(self, stats: Mapping[str, Any], figures: dict[str, int]) -> None:
        expected: dict[int, list[int]] = {}
        for ctr in self._counters:
            for wqi, row in ctr.q.items():
                acc = expected.setdefault(wqi, [0] * len(QCOUNTERS))
                for i, v in enumerate(row):
                    acc[i] += v
        live = {wq.name: wq for wq in self.rt.workqueues}
        ambiguous = figures["replaced_or_halted"]
        for wqi, wq in list(self._wq_objects.items()):
            if wq.freed or live.get(wq.name) is not wq:
                continue
            got = stats["queues"][wq.name]
            want = expected.get(wqi, [0] * len(QCOUNTERS))
            for i, name in enumerate(QCOUNTERS):
                if name == "stopped":
                    ok = want[i] <= got[name] <= want[i] + ambiguous
                else:
                    ok = got[name] == want[i]
                if not ok:
                    self.violation(None, f"stats {wq.name}.{name} = {got[name]}, journal says {want[i]}")

    def check_release_busy(self) -> None:
        """The last release of a queue with continuations bound is EBUSY and
        changes nothing."""
        for wq in self.acquired:
            if wq.bound and wq.acquired == 1:
                code = capi.kcont_workqueue_release(wq)
                if code != errno.EBUSY or wq.freed or wq.acquired != 1:
                    self.violation(None, f"last release of {wq!r} with {wq.bound} bound returned {code}")

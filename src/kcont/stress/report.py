"""The outcome of a stress run: :class:`StressResult`, its text summary and
its JSON form.  Built once the run is over; no shared state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._core.runtime import ShutdownAccount
from .config import StressConfig

SCHEMA = "kcont.stress/1"  # the JSON document's format and version


@dataclass
class StressResult:
    """Figures and violations of a run (``ok`` iff there is no violation)."""

    config: StressConfig
    seconds: float
    figures: dict[str, int]
    account: ShutdownAccount | None
    violations: list[str]
    violation_count: int
    runtime: str
    interrupted: bool = False  # the load was ended early (Ctrl-C)

    @property
    def ok(self) -> bool:
        return self.violation_count == 0

    def summary(self) -> str:
        f = self.figures
        c = self.config
        acc = self.account
        lines = [
            f"kcont stress: {self.runtime}, {c.threads} producer threads, {c.continuations} continuations, "
            f"{c.ncpu} CPUs, hz={c.hz}, seed={c.seed}",
            f"  seconds            {self.seconds:.1f}"
            + (" (interrupted: load ended early, accounting checked)" if self.interrupted else ""),
            f"  operations         {f['ops'] + f['fn_ops']} "
            f"({f['ops']} by producers, {f['fn_ops']} by functions)",
            f"  tickets            {f['tickets_now'] + f['tickets_timer']} "
            f"({f['tickets_now']} immediate, {f['tickets_timer']} timed)",
            f"  invocations        {f['starts']} (order checked {f['order_checked']}, "
            f"timers checked {f['timer_checked']})",
            f"  cancelled          stop {f['cancelled_stop']}, halt re-stop {f['cancelled_halt']}, "
            f"destroy {f['cancelled_destroy']}, replaced by re-arm {f['replaced']}, "
            f"re-arm during halt {f['replaced_or_halted']}",
            f"  at shutdown        pending {acc.pending if acc else '?'}, "
            f"cancelled {acc.cancelled if acc else '?'}, unfinished {acc.unfinished if acc else '?'}",
            f"  EBUSY              {f['ebusy']}",
            f"  exceptions         {f['faults']} raised = {f['handler_seen']} seen = "
            f"{acc.failed if acc else '?'} in the account",
            f"  stops/halts        {f['stops']} stops ({f['stops_true']} too late), {f['halts']} halts "
            f"({f['halts_waited']} waited)",
            f"  destroys/creates   {f['destroys']} destroys ({f['self_destroys']} from inside), "
            f"{f['creates']} creates, {f['temp_queues']} temporary queues",
            f"  setarg/func/mutex  {f['setargs']}/{f['setfuncs']}/{f['setmutex']} "
            f"({f['handovers']} hand-overs inside functions)",
            f"  ShutdownAccount    {acc}",
            f"  violations         {self.violation_count}",
        ]

        for v in self.violations:
            lines.append("  VIOLATION " + v.replace("\n", "\n    "))
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "ok": self.ok,
            "interrupted": self.interrupted,
            "runtime": self.runtime,
            "threads": self.config.threads,
            "continuations": self.config.continuations,
            "ncpu": self.config.ncpu,
            "hz": self.config.hz,
            "seed": self.config.seed,
            "seconds": round(self.seconds, 2),
            "figures": self.figures,
            "account": None if self.account is None else self.account.__dict__,
            "violations": self.violation_count,
            "violation_details": self.violations,
        }

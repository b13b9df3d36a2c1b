"""Figures of a run: the live :class:`Snapshot`, the final :class:`Report`, and
how they are printed (a progress line, a report, a side-by-side table, JSON).

What it owns
    The vocabulary of the figures and their accounting rules:

    * ``datagrams_sent = sent + malformed_sent`` (source side);
    * ``datagrams_sent = received + not_received``: ``not_received`` is what
      the kernel dropped; it is attributed to the sockets (``socket_drops``)
      as far as ``/proc/net/snmp`` ``RcvbufErrors`` grew during the run, and
      the rest is ``lost``;
    * ``received = processed + malformed + lost_in_stack``: a valid datagram
      read and never processed is ``lost`` too;
    * ``lost`` must be 0, ``order_violations`` must be 0; ``seq_gaps`` (per
      flow, sequence numbers never seen) match the data datagrams dropped.

Invariants
    A report is plain data (numbers, strings, lists, dicts): ``as_dict()`` is
    JSON-serialisable.

Locking
    None (values).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import kcont

__all__ = ["Report", "Snapshot", "compare_table", "progress_line", "render", "write_json"]


@dataclass
class Snapshot:
    """Counters of a running pipeline (cumulative since its start)."""

    received: int = 0
    malformed: dict[str, int] = field(default_factory=dict)
    processed: int = 0
    per_cpu: list[int] = field(default_factory=list)
    rearms: int = 0
    rearm_busy: int = 0
    idle_fired: int = 0
    idle_rechecks: int = 0
    delack_fired: int = 0
    acks_sent: int = 0
    ack_errors: int = 0
    coalesced: int = 0
    late_schedules: int = 0
    flows_created: int = 0
    flows_open: int = 0
    flows_torn_down: int = 0
    teardowns_started: int = 0
    order_violations: int = 0
    seq_gaps: int = 0
    exceptions: int = 0

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())


@dataclass
class Report:
    """The final figures of one pipeline run (see the module docstring)."""

    impl: str
    config: dict[str, Any]
    wall_s: float  # the whole run: start, traffic, drain, shutdown
    traffic_s: float  # first datagram sent to last datagram processed
    sent: int  # data datagrams
    malformed_sent: int
    received: int  # datagrams read from the sockets
    malformed: dict[str, int]
    processed: int
    pps: float  # processed / traffic_s
    order_violations: int
    seq_gaps: int
    not_received: int
    socket_drops: int
    rcvbuf_errors: int | None  # growth of /proc/net/snmp RcvbufErrors during the run
    lost: int
    flows_created: int
    flows_torn_down: int
    idle_fired: int
    idle_rechecks: int
    timer_rearms: int
    rearm_busy: int  # re-arms refused (EBUSY): the expiry was already committed, the handler re-checks
    rearms_per_s: float
    delack_fired: int
    acks_sent: int
    acks_received: int
    ack_errors: int
    unacked_flows: int
    rtt_samples: int
    rtt_p50_us: float | None
    rtt_p99_us: float | None
    rtt_max_us: float | None
    per_cpu: list[int]
    coalesced: int
    exceptions: int
    rcvbuf: int
    cpu_s: float  # process CPU time during the run (every thread: source, stack, runtime)
    runtime_stats: dict[str, Any] | None = None
    shutdown: dict[str, Any] | None = None  # kcont's ShutdownAccount
    threads_left: list[str] = field(default_factory=list)  # this run's threads alive after it
    sockets_left: int = 0  # this run's sockets still open after it
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False  # stopped early (Ctrl-C): the checks do not apply

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())

    @property
    def checks(self) -> dict[str, bool]:
        """The properties a correct run has."""
        return {
            "no order violations": self.order_violations == 0,
            "every packet accounted for": self.lost == 0
            and self.received == self.processed + self.malformed_total,
            "gaps only where the socket dropped": self.seq_gaps <= self.socket_drops,
            "malformed datagrams counted": self.malformed_total == self.malformed_sent
            if self.not_received == 0
            else self.malformed_total <= self.malformed_sent,
            "every flow torn down by its idle timer": self.flows_torn_down == self.flows_created,
            # A flow whose last packets the kernel dropped cannot have them ACKed.
            "every ACK sent arrived, every flow's last packet ACKed": self.acks_received == self.acks_sent
            and self.ack_errors == 0
            and (self.unacked_flows == 0 or self.not_received > 0),
            "no exception in a continuation": self.exceptions == 0,
            "clean shutdown": not self.threads_left
            and self.sockets_left == 0
            and (
                self.shutdown is None
                or not any(self.shutdown[key] for key in ("pending", "unfinished", "cancelled"))
            ),
        }

    @property
    def ok(self) -> bool:
        return all(self.checks.values())

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["malformed_total"] = self.malformed_total
        data["checks"] = self.checks
        data["ok"] = self.ok
        return data


def _share(per_cpu: Sequence[int]) -> str:
    total = sum(per_cpu)
    if not total or len(per_cpu) < 2:
        return "-" if len(per_cpu) < 2 else "/".join("0%" for _ in per_cpu)
    return "/".join(f"{100 * n / total:.0f}%" for n in per_cpu)


def progress_line(impl: str, elapsed: float, now: Snapshot, before: Snapshot, interval: float) -> str:
    """One line of live progress: totals, rates over the last interval, the
    per-CPU share of that interval, timers re-armed and fired."""
    dt = max(interval, 1e-9)
    delta = [a - b for a, b in zip(now.per_cpu, before.per_cpu, strict=True)]
    rate = (now.processed - before.processed) / dt
    return (
        f"[{elapsed:5.1f}s] {impl:<7} {now.processed:>9,} pkts {rate:>9,.0f} pkt/s"
        f"  cpu {_share(delta):<9}  re-arms {(now.rearms - before.rearms) / dt:>8,.0f}/s"
        f"  fired: delack {now.delack_fired:>7,} idle {now.idle_fired:>5,}"
        f"  flows {now.flows_open:>4} open {now.flows_torn_down:>4} down"
        f"  malformed {now.malformed_total:,}"
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value / 1000:,.1f}"


def _rows(r: Report, compact: bool = False) -> list[tuple[str, str]]:
    """(label, value) rows; ``compact`` drops details for the side-by-side table."""
    drops = f"{r.socket_drops:,}"
    if r.rcvbuf_errors is not None:
        drops += f" (RcvbufErrors +{r.rcvbuf_errors:,})"
    malformed = f"{r.malformed_total:,}"
    if not compact:
        drops += f", SO_RCVBUF {r.rcvbuf // 1024:,} KiB"
        details = ", ".join(f"{k} {v}" for k, v in r.malformed.items() if v)
        malformed += f" ({details or 'none'})"
    else:
        malformed += f" of {r.malformed_sent:,}"
    rtt = f"{_ms(r.rtt_p50_us)} / {_ms(r.rtt_p99_us)} / {_ms(r.rtt_max_us)} ms"
    rows = [
        ("datagrams sent", f"{r.sent:,} data + {r.malformed_sent:,} malformed"),
        ("received by the stack", f"{r.received:,}"),
        ("processed", f"{r.processed:,}"),
        ("packets per second", f"{r.pps:,.0f}"),
        ("order violations", f"{r.order_violations:,}"),
        ("packets lost", f"{r.lost:,}"),
        ("dropped by the socket", drops),
        ("sequence gaps", f"{r.seq_gaps:,}"),
        ("malformed dropped", malformed),
        ("ACKs sent / received", f"{r.acks_sent:,} / {r.acks_received:,}"),
        ("ACK RTT p50 / p99 / max", rtt),
        ("idle-timer re-arms", f"{r.timer_rearms:,} ({r.rearms_per_s:,.0f}/s), {r.rearm_busy:,} EBUSY"),
        ("timers fired", f"delack {r.delack_fired:,}, idle {r.idle_fired:,} ({r.idle_rechecks:,} re-checks)"),
        ("flows created / torn down", f"{r.flows_created:,} / {r.flows_torn_down:,}"),
        ("per-CPU packets", " ".join(f"{n:,}" for n in r.per_cpu) + f" ({_share(r.per_cpu)})"),
        ("coalesced schedules (EBUSY)", f"{r.coalesced:,}"),
        ("exceptions", f"{r.exceptions:,}"),
        ("threads / sockets left", f"{len(r.threads_left)} / {r.sockets_left}"),
        ("wall time", f"{r.wall_s:.2f} s (traffic {r.traffic_s:.2f} s)"),
        ("process CPU time", f"{r.cpu_s:.2f} s ({1e6 * r.cpu_s / max(1, r.processed):,.0f} us per packet)"),
    ]
    return rows


def render(r: Report, out: TextIO) -> None:
    """The final report of one run."""
    print(f"\n== {r.impl} pipeline ==", file=out)
    for name, value in _rows(r):
        print(f"  {name:<30} {value}", file=out)
    if r.runtime_stats is not None:
        s = r.runtime_stats
        t = s["totals"]
        print("  rt.stats():", file=out)
        print(
            f"    totals: scheduled {t['scheduled']:,}  armed {t['armed']:,}  invoked {t['invoked']:,}"
            f"  ebusy {t['ebusy']:,}  stopped {t['stopped']:,}  lock_waits {t['lock_waits']:,}"
            f"  late {t['late']:,}  exceptions {t['exceptions']:,}  depth_hwm {t['depth_hwm']:,}",
            file=out,
        )
        for name, q in s["queues"].items():
            if q["scheduled"] or q["armed"]:
                print(
                    f"    {name:<13} scheduled {q['scheduled']:>9,}  armed {q['armed']:>9,}"
                    f"  invoked {q['invoked']:>9,}  ebusy {q['ebusy']:>7,}  late {q['late']:>6,}"
                    f"  func {q['func_ns'] / 1e6:>8,.0f} ms",
                    file=out,
                )
        for i, c in enumerate(s["cpus"]):
            print(
                f"    cpu{i}: invoked {c['invoked']:,}  func {c['func_ns'] / 1e6:,.0f} ms",
                file=out,
            )
        print(
            f"    timer wakeups {s.get('timer_wakeups', 0):,}"
            f"  extra workers {s.get('extra_workers_started', 0)}"
            f"  pending timers at end {s['pending_timers']}",
            file=out,
        )
    if r.shutdown is not None:
        print(f"  shutdown: {r.shutdown}", file=out)
    for note in r.notes:
        print(f"  note: {note}", file=out)
    if r.interrupted:
        print("  checks: not judged (the run was interrupted)", file=out)
        return
    checks = r.checks
    failed = [name for name, ok in checks.items() if not ok]
    print(f"  checks: {'all passed' if not failed else 'FAILED: ' + ', '.join(failed)}", file=out)


def compare_table(reports: Sequence[Report], out: TextIO) -> None:
    """The figures of several runs side by side."""
    columns = [_rows(r, compact=True) for r in reports]
    width = [max(len(r.impl), *(len(v) for _, v in col)) for r, col in zip(reports, columns, strict=True)]
    print("\n== side by side (same traffic) ==", file=out)
    header = f"  {'':<30}" + "".join(f" | {r.impl:<{w}}" for r, w in zip(reports, width, strict=True))
    print(header, file=out)
    print("  " + "-" * (len(header) - 2), file=out)
    for i, (name, _) in enumerate(columns[0]):
        cells = "".join(f" | {col[i][1]:<{w}}" for col, w in zip(columns, width, strict=True))
        print(f"  {name:<30}{cells}", file=out)
    oks = "".join(
        f" | {('interrupted' if r.interrupted else 'ok' if r.ok else 'FAILED'):<{w}}"
        for r, w in zip(reports, width, strict=True)
    )
    print(f"  {'checks':<30}{oks}", file=out)


SCHEMA = "kcont.demo/1"  # the JSON document's format and version


def write_json(reports: Sequence[Report], path: str, out: TextIO, *, interrupted: bool = False) -> None:
    """Write ``{"schema": ..., "implementation": "compiled" or "python", "runs":
    [...], "ok": bool, "interrupted": bool}``; ``path`` ``-`` is ``out``."""
    doc = {
        "schema": SCHEMA,
        "implementation": kcont.implementation,
        "runs": [r.as_dict() for r in reports],
        "ok": all(r.ok for r in reports) and not interrupted,
        "interrupted": interrupted,
    }
    text = json.dumps(doc, indent=2, sort_keys=False, default=str)
    if path == "-":
        print(text, file=out)
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text + "\n")

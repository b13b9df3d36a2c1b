"""Runs one pipeline (kcont or asyncio) on the run's traffic, from start to a
clean stop, and builds its :class:`~.report.Report`.

What it owns
    The life of a run: the runtime (kcont), the stack, the traffic source, the
    live progress, the drain and the shutdown, and the accounting of what
    was sent, received, processed, dropped and lost.

Phases (bounded in packets and in time; the run stops by itself)
    1. traffic: the source sends ``rate * duration`` data datagrams (and the
       malformed ones) at the configured rate; a progress line per interval;
    2. drain: wait until every datagram sent was read and handled, or until
       nothing moved for 0.5 s (the kernel dropped some: they are counted);
    3. teardown: wait until every flow was torn down by its idle timer and the
       ACKs sent have arrived (at most ``drain_timeout`` for 2 and 3);
    4. stop: close the source, stop the RX threads, close every socket, shut
       the runtime down (its account goes in the report).

    Setting the ``stop`` event (Ctrl-C) skips to phase 4 from wherever the
    run is; the report then says it was interrupted.

Locking
    None of its own; it reads the stack's and the source's counters (racy
    snapshots while running, exact after the stop).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import kcont

from .asyncio_stack import AsyncioStack
from .common import Config, percentile, udp_rcvbuf_errors
from .report import Report, Snapshot, progress_line
from .source import TrafficSource
from .stack import Stack

__all__ = ["IMPLEMENTATIONS", "run_pipeline"]

IMPLEMENTATIONS = ("kcont", "asyncio")

Progress = Callable[[str], None]

_STOP_POLL = 0.1  # seconds: how often the traffic phase looks at the stop event


class _Monitor:
    """Prints a progress line every ``interval`` seconds."""

    def __init__(
        self, stack: Stack | AsyncioStack, progress: Progress | None, interval: float, t0: float
    ) -> None:
        self.stack = stack
        self.progress = progress
        self.interval = interval
        self.t0 = t0
        self.last = stack.snapshot()
        self.last_t = time.monotonic()
        self.next = self.last_t + interval

    def timeout(self) -> float:
        return max(0.0, self.next - time.monotonic())

    def maybe_tick(self) -> None:
        if time.monotonic() >= self.next:
            self.tick()

    def tick(self) -> None:
        now = time.monotonic()
        snap = self.stack.snapshot()
        if self.progress is not None:
            self.progress(progress_line(self.stack.impl, now - self.t0, snap, self.last, now - self.last_t))
        self.last, self.last_t = snap, now
        while self.next <= now:
            self.next += self.interval


def run_pipeline(
    config: Config | None = None,
    *,
    impl: str = "kcont",
    progress: Progress | None = None,
    interval: float = 1.0,
    name: str = "netstack",
    stop: threading.Event | None = None,
) -> Report:
    """Run the pipeline ``impl`` (``"kcont"`` or ``"asyncio"``) on the traffic
    of ``config`` and return its report.  ``progress`` receives one line per
    ``interval`` seconds.  Setting ``stop`` ends the run early (the report
    says so).  Every thread it started is joined and every socket closed when
    it returns (or raises)."""
    config = config or Config()
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"impl must be one of {IMPLEMENTATIONS}, not {impl!r}")
    t0 = time.monotonic()
    cpu0 = time.process_time()
    snmp_before = udp_rcvbuf_errors()
    rt: kcont.Runtime | None = None
    stack: Stack | AsyncioStack
    if impl == "kcont":
        rt = kcont.Runtime(ncpu=config.cpus, hz=config.hz)
        try:
            stack = Stack(config, rt, name)
        except BaseException:
            rt.shutdown(cancel=True, timeout=5)
            raise
        rt.exception_handler = stack.on_exception
    else:
        stack = AsyncioStack(config, name)
    source: TrafficSource | None = None
    runtime_stats: dict[str, Any] | None = None
    account: kcont.ShutdownAccount | None = None
    t_done = t0
    drained = True
    rcvbuf = 0
    notes: list[str] = []
    stop = stop if stop is not None else threading.Event()
    try:
        stack.start()
        source = TrafficSource(config, stack.targets, name)
        monitor = _Monitor(stack, progress, interval, t0)
        source.start()
        while not source.sent.wait(min(monitor.timeout(), _STOP_POLL)) and not stop.is_set():
            monitor.maybe_tick()
        t_done, drained = _drain(stack, source, monitor, config, stop)
        outstanding = _wait_teardown(stack, source, monitor, config, t_done, stop)
        if outstanding and not stop.is_set():
            notes.append(outstanding)
        rcvbuf = stack.rcvbuf
    finally:
        if source is not None:
            source.close()
        stack.close()
        if rt is not None:
            runtime_stats = dict(rt.stats())
            account = rt.shutdown(timeout=5)
    assert source is not None
    snap = stack.snapshot()
    snmp_after = udp_rcvbuf_errors()
    rcvbuf_errors = None if snmp_before is None or snmp_after is None else snmp_after - snmp_before
    report = _report(impl, config, snap, source, t0, t_done, rcvbuf_errors, runtime_stats, account, rcvbuf)
    report.cpu_s = time.process_time() - cpu0
    report.interrupted = stop.is_set()
    if report.interrupted:
        notes.insert(0, "interrupted: the run was stopped early, the checks do not apply")
    elif source.stats.cut_short:
        stats = source.stats
        seconds = max(1e-9, (stats.tx_end_ns - stats.tx_start_ns) / 1e9)
        notes.insert(
            0,
            f"the source sent {stats.data_sent:,} of {config.packets:,} datagrams in {seconds:.2f} s "
            f"({stats.data_sent / seconds:,.0f} pkt/s): it could not reach the asked rate "
            f"({config.rate:,} pkt/s) on this machine, and stopped at the duration",
        )
    if not drained and report.lost and not report.interrupted:
        notes.insert(0, "the drain ended (no progress for 0.5 s, or drain_timeout) with datagrams unhandled")
    if isinstance(stack, Stack) and stack.shutdown_refusals:
        notes.append(f"{stack.shutdown_refusals} schedules refused by the runtime's shutdown")
    report.notes.extend(notes)
    report.threads_left, report.sockets_left = _leaks(stack, source, rt)
    return report


def _drain(
    stack: Stack | AsyncioStack,
    source: TrafficSource,
    monitor: _Monitor,
    config: Config,
    stop: threading.Event,
) -> tuple[float, bool]:
    """Wait until everything sent was read and handled, or nothing moved for
    0.5 s, or ``drain_timeout``.  Returns when the last datagram was handled,
    and whether everything sent was."""
    deadline = time.monotonic() + config.drain_timeout
    sent = source.stats.datagrams_sent
    last_key = (-1, -1)
    last_change = time.monotonic()
    while True:
        snap = stack.snapshot()
        now = time.monotonic()
        handled = snap.processed + snap.malformed_total
        key = (snap.received, handled)
        if key != last_key:
            last_key, last_change = key, now
        if snap.received >= sent and handled >= snap.received:
            return now, True
        if now - last_change > 0.5 or now > deadline or stop.is_set():
            return last_change, False
        monitor.maybe_tick()
        time.sleep(0.002)


def _wait_teardown(
    stack: Stack | AsyncioStack,
    source: TrafficSource,
    monitor: _Monitor,
    config: Config,
    since: float,
    stop: threading.Event,
) -> str | None:
    """Wait until every flow was torn down and the ACKs sent have arrived.
    Returns None, or what is still outstanding when ``drain_timeout`` passed."""
    deadline = since + config.drain_timeout
    while True:
        snap = stack.snapshot()
        acks = source.stats.acks
        if stack.quiescent() and acks >= snap.acks_sent:
            return None
        if time.monotonic() >= deadline or stop.is_set():
            return (
                f"{config.drain_timeout:g} s after the traffic: {snap.flows_open} flows open, "
                f"{snap.flows_created - snap.flows_torn_down} not torn down, "
                f"{snap.acks_sent - acks} ACKs sent and not received"
            )
        monitor.maybe_tick()
        time.sleep(0.005)


def _report(
    impl: str,
    config: Config,
    snap: Snapshot,
    source: TrafficSource,
    t0: float,
    t_done: float,
    rcvbuf_errors: int | None,
    runtime_stats: dict[str, Any] | None,
    account: kcont.ShutdownAccount | None,
    rcvbuf: int,
) -> Report:
    stats = source.stats
    sent_total = stats.datagrams_sent
    not_received = max(0, sent_total - snap.received)
    socket_drops = min(not_received, max(0, rcvbuf_errors)) if rcvbuf_errors is not None else 0
    lost = (not_received - socket_drops) + max(0, snap.received - snap.processed - snap.malformed_total)
    traffic_s = max(1e-9, t_done - stats.tx_start_ns / 1e9) if stats.tx_start_ns else 0.0
    rtt = sorted(stats.rtt_ns)

    def pct(fraction: float) -> float | None:
        value = percentile(rtt, fraction)
        return None if value is None else value / 1000

    return Report(
        impl=impl,
        config=config.as_dict(),
        wall_s=time.monotonic() - t0,
        traffic_s=traffic_s,
        sent=stats.data_sent,
        malformed_sent=stats.malformed_sent,
        received=snap.received,
        malformed=snap.malformed,
        processed=snap.processed,
        pps=snap.processed / traffic_s if traffic_s else 0.0,
        order_violations=snap.order_violations,
        seq_gaps=snap.seq_gaps,
        not_received=not_received,
        socket_drops=socket_drops,
        rcvbuf_errors=rcvbuf_errors,
        lost=lost,
        flows_created=snap.flows_created,
        flows_torn_down=snap.flows_torn_down,
        idle_fired=snap.idle_fired,
        idle_rechecks=snap.idle_rechecks,
        timer_rearms=snap.rearms,
        rearm_busy=snap.rearm_busy,
        rearms_per_s=snap.rearms / traffic_s if traffic_s else 0.0,
        delack_fired=snap.delack_fired,
        acks_sent=snap.acks_sent,
        acks_received=stats.acks,
        ack_errors=snap.ack_errors,
        unacked_flows=stats.unacked_flows(),
        rtt_samples=len(rtt),
        rtt_p50_us=pct(0.50),
        rtt_p99_us=pct(0.99),
        rtt_max_us=rtt[-1] / 1000 if rtt else None,
        per_cpu=snap.per_cpu,
        coalesced=snap.coalesced,
        exceptions=snap.exceptions,
        rcvbuf=rcvbuf,
        cpu_s=0.0,
        runtime_stats=runtime_stats,
        shutdown=None if account is None else dataclasses.asdict(account),
    )


def _leaks(
    stack: Stack | AsyncioStack, source: TrafficSource, rt: kcont.Runtime | None
) -> tuple[list[str], int]:
    """This run's threads still alive and sockets still open (there should be none)."""
    prefixes = [f"{stack.name}/"]
    if rt is not None:
        prefixes.append(f"kcont/{rt.name}/")
    threads = [t.name for t in threading.enumerate() if t.name.startswith(tuple(prefixes))]
    socks = [rxq.sock for rxq in stack.rxqs] if isinstance(stack, Stack) else list(stack.socks)
    socks.append(source.sock)
    return threads, sum(1 for s in socks if s.fileno() != -1)

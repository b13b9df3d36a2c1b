"""The traffic source: numbered datagrams for many flows, at a rate, to real
UDP sockets on loopback; it receives the ACKs and measures round-trip time.

What it owns
    One UDP socket (it sends from it and receives the ACKs on it), a transmit
    thread and an ACK thread, and what they count (:class:`SourceStats`).

The traffic (deterministic: it depends on the :class:`~.common.Config` only,
so the kcont and asyncio pipelines see exactly the same datagrams)
    * ``config.flows`` flow ids drawn from ``config.seed``.  A flow always goes
      to the same receive socket (flow index modulo the number of sockets),
      as a flow always lands on the same NIC RX queue.
    * Flows have lifetimes, so flows start and end while the pipeline runs:
      one in four is *short* (first half of the run only; its idle timer tears
      it down mid-run), one in four starts *late* (second quarter on), the
      others last the whole run.  Packet ``i`` (at nominal time
      ``i / rate``) goes to the next flow, round robin, among those active.
    * Per flow, sequence numbers count from 0 without gaps.
    * Every ``1 / malformed_rate`` data datagrams, one extra malformed datagram
      (truncated, wrong magic, absurd length, unknown type, in rotation) is
      sent; it has no sequence number and must be counted and dropped.
    * The source stops at ``duration`` (plus a short grace) whatever the
      rate: a rate this machine cannot reach sends fewer datagrams, and
      ``SourceStats.cut_short`` says so.

RTT
    An ACK echoes the send timestamp of the oldest packet it acknowledges
    (RFC 7323), so ``now - echoed`` is the time from sending that packet to
    receiving its acknowledgement: the pipeline's latency plus the
    delayed-ACK timer.

Locking
    The transmit thread alone writes ``data_sent``, ``malformed_sent``,
    ``tx_retries``, ``last_seq`` and the times; the ACK thread alone writes
    ``acks``, ``acks_malformed``, ``rtt_ns`` and ``acked``.  Other threads read
    them (racy snapshots of ints, final after :meth:`TrafficSource.close`).
"""

from __future__ import annotations

import random
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

from . import wire
from .common import Config, open_udp

__all__ = ["SourceStats", "TrafficSource", "flow_ids", "flow_target"]

# Seconds the source may send past the run's duration (late wake-ups of a
# loaded machine) before it stops with datagrams left unsent.
_GRACE_S = 0.25


def flow_ids(config: Config) -> list[int]:
    """The flow ids of a run (distinct, non-zero, 31-bit)."""
    return random.Random(config.seed).sample(range(1, 1 << 31), config.flows)


def flow_target(index: int, nqueues: int) -> int:
    """The receive socket (RX queue) a flow's datagrams go to."""
    return index % nqueues


@dataclass
class SourceStats:
    """What the source sent and what came back (see module docstring for who writes what)."""

    data_sent: int = 0
    malformed_sent: int = 0
    tx_retries: int = 0
    tx_start_ns: int = 0
    tx_end_ns: int = 0
    acks: int = 0
    acks_malformed: int = 0
    rtt_ns: list[int] = field(default_factory=list)
    last_seq: dict[int, int] = field(default_factory=dict)  # flow id -> last sequence number sent
    acked: dict[int, int] = field(default_factory=dict)  # flow id -> highest sequence number ACKed
    # The source stopped at the run's duration (plus a grace) before sending
    # every datagram: the machine could not reach the asked rate.
    cut_short: bool = False

    @property
    def datagrams_sent(self) -> int:
        return self.data_sent + self.malformed_sent

    def unacked_flows(self) -> int:
        """Flows whose last packet was never acknowledged."""
        acked = self.acked
        return sum(1 for flow, last in self.last_seq.items() if acked.get(flow, -1) < last)


class TrafficSource:
    """Sends the run's traffic to ``targets`` (one address per RX queue) and
    collects the ACKs.

    Use: ``start()``; wait for ``sent`` (an Event set when the last datagram
    is out); keep it open while ACKs may come; ``close()`` joins both threads
    and closes the socket.
    """

    def __init__(self, config: Config, targets: list[tuple[str, int]], name: str = "netstack") -> None:
        if not targets:
            raise ValueError("the source needs at least one target")
        self.config = config
        self.targets = list(targets)
        self.stats = SourceStats()
        self.sent = threading.Event()
        self._stop = False
        self._end_ns = 0  # set when the transmit thread starts (monotonic ns)
        self._sock = open_udp(rcvbuf=config.rcvbuf)
        self.address: tuple[str, int] = self._sock.getsockname()
        self._tx = threading.Thread(target=self._tx_main, name=f"{name}/source-tx", daemon=True)
        self._rx = threading.Thread(target=self._ack_main, name=f"{name}/source-ack", daemon=True)

    # -- traffic plan ----------------------------------------------------------

    def _plan(self) -> tuple[list[int], list[list[int]]]:
        """Flow ids, and for each quarter of the run the indices of the active flows."""
        ids = flow_ids(self.config)
        n = len(ids)
        if n < 4:
            everyone = list(range(n))
            return ids, [everyone] * 4
        short = [i for i in range(n) if i % 4 == 0]
        late = [i for i in range(n) if i % 4 == 1]
        full = [i for i in range(n) if i % 4 >= 2]
        quarters = [
            sorted(short + full),
            sorted(short + late + full),
            sorted(late + full),
            sorted(late + full),
        ]
        return ids, quarters

    # -- threads -------------------------------------------------------------

    def start(self) -> None:
        self._rx.start()
        self._tx.start()

    def _tx_main(self) -> None:
        config = self.config
        stats = self.stats
        ids, quarters = self._plan()
        nq = len(self.targets)
        dest = [self.targets[flow_target(i, nq)] for i in range(len(ids))]
        seqs = [0] * len(ids)
        rr = [0, 0, 0, 0]
        total = config.packets
        rate = config.rate
        every = round(1 / config.malformed_rate) if config.malformed_rate > 0 else 0
        kinds = wire.MALFORMED_KINDS
        payload = bytes(config.payload)
        build = wire.build
        data = wire.DATA
        monotonic_ns = time.monotonic_ns
        stats.tx_start_ns = t0 = monotonic_ns()
        self._end_ns = end_ns = t0 + int((config.duration + _GRACE_S) * 1e9)
        i = 0
        try:
            while i < total and not self._stop:
                due = min(total, (monotonic_ns() - t0) * rate // 1_000_000_000 + 1)
                while i < due:
                    if monotonic_ns() >= end_ns:
                        stats.cut_short = True
                        return
                    quarter = min(3, i * 4 // total)
                    active = quarters[quarter]
                    index = active[rr[quarter] % len(active)]
                    rr[quarter] += 1
                    flow = ids[index]
                    seq = seqs[index]
                    seqs[index] = seq + 1
                    if every and i % every == every - 1:
                        kind = kinds[(i // every) % len(kinds)]
                        if not self._send(
                            wire.malformed(kind, flow, 0, monotonic_ns(), payload), dest[index]
                        ):
                            stats.cut_short = not self._stop
                            return
                        stats.malformed_sent += 1
                    if not self._send(build(data, flow, seq, monotonic_ns(), payload), dest[index]):
                        stats.cut_short = not self._stop
                        return
                    stats.last_seq[flow] = seq
                    stats.data_sent += 1
                    i += 1
                if i < total:
                    delay = (t0 + i * 1_000_000_000 // rate - monotonic_ns()) / 1e9
                    time.sleep(max(delay, 0.0002))
        finally:
            stats.tx_end_ns = monotonic_ns()
            self.sent.set()

    def _send(self, datagram: bytes, dest: tuple[str, int]) -> bool:
        """Send ``datagram``, waiting while the send buffer is full; False if
        the source was stopped or reached its end time meanwhile (not sent)."""
        while True:
            try:
                self._sock.sendto(datagram, dest)
                return True
            except BlockingIOError:  # send buffer full: wait a little (counted)
                self.stats.tx_retries += 1
                if self._stop or time.monotonic_ns() >= self._end_ns:
                    return False
                time.sleep(0.0001)

    def _ack_main(self) -> None:
        stats = self.stats
        sock = self._sock
        acked = stats.acked
        rtt = stats.rtt_ns
        parse = wire.parse
        ack = wire.ACK
        monotonic_ns = time.monotonic_ns
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ)
            while True:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    if self._stop:
                        return
                    sel.select(0.05)
                    continue
                except OSError:
                    return
                now = monotonic_ns()
                try:
                    header = parse(data)
                except wire.Malformed:
                    stats.acks_malformed += 1
                    continue
                if header.kind != ack:
                    stats.acks_malformed += 1
                    continue
                stats.acks += 1
                rtt.append(now - header.ts)
                if header.seq > acked.get(header.flow, -1):
                    acked[header.flow] = header.seq

    # -- end -------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Stop sending (if still sending), stop receiving ACKs, join both
        threads and close the socket.  Idempotent."""
        self._stop = True
        for thread in (self._tx, self._rx):
            if thread.is_alive():
                thread.join(timeout)
        self._sock.close()

    @property
    def sock(self) -> socket.socket:
        return self._sock

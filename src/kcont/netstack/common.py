"""What both pipelines and the traffic source share: the configuration, the
UDP sockets (loopback only, tracked so tests can prove they were closed), the
kernel's UDP drop counter, and small numeric helpers.

What it owns
    :class:`Config` (every knob of a run, validated once), :func:`open_udp`
    (the only place the demo creates a socket), :func:`open_sockets` (the
    demo's sockets still open), :func:`udp_rcvbuf_errors` (``/proc/net/snmp``
    ``Udp: RcvbufErrors``), :func:`percentile` and :func:`rss_cpu`.

Invariants
    * Every socket is bound to ``127.0.0.1``: the demo never leaves loopback.
    * Every socket is non-blocking; threads wait for it with a selector, with
      a timeout, so that they notice a stop request.

Locking
    ``_sockets_lock`` guards ``_sockets`` (taken alone, never with another lock).
"""

from __future__ import annotations

import os
import socket
import threading
import weakref
from dataclasses import asdict, dataclass
from typing import Any

from .._stats import percentile_sorted

__all__ = [
    "LOOPBACK",
    "Config",
    "open_sockets",
    "open_udp",
    "percentile",
    "rss_cpu",
    "rss_hash",
    "rss_table",
    "udp_rcvbuf_errors",
]

LOOPBACK = "127.0.0.1"


def _default_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Config:
    """One run of the pipeline (the same traffic for kcont and asyncio).

    Attributes:
        flows: number of flows (distinct flow ids).
        rate: data datagrams per second the source sends (all flows together).
        duration: seconds of traffic; the run sends ``rate * duration``
            datagrams, then drains and stops by itself.
        cpus: kcont virtual CPUs (per-CPU softnet queues).
        rx_queues: receive sockets, each read by its own thread (the NIC's RX
            queues); a flow always arrives on the same one.
        hz: kcont ticks per second.
        idle_ticks: a flow silent for this many ticks is torn down.
        delack_ticks: an acknowledgement is sent this many ticks after the
            first unacknowledged packet (delayed ACK; 40 ms at the default
            ``hz``, Linux's ``TCP_DELACK_MIN``).
        malformed_rate: fraction of extra, malformed datagrams injected.
        payload: payload bytes per data datagram.
        budget: packets a flow's continuation processes before yielding the
            CPU to other flows (NAPI's budget).
        rcvbuf: ``SO_RCVBUF`` requested for each receive socket.
        drain_timeout: seconds to wait, after the traffic, for the last
            packets, ACKs and teardowns.
        seed: the traffic's seed (flow ids).
    """

    flows: int = 128
    rate: int = 8_000
    duration: float = 3.0
    cpus: int = 2
    rx_queues: int = 2
    hz: int = 1000
    idle_ticks: int = 200
    delack_ticks: int = 40
    malformed_rate: float = 0.002
    payload: int = 32
    budget: int = 64
    rcvbuf: int = 4 << 20
    drain_timeout: float = 5.0
    seed: int = 1

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.flows >= 1, "flows must be >= 1"),
            (self.rate >= 1, "rate must be >= 1"),
            (self.duration > 0, "duration must be > 0"),
            (self.cpus >= 1, "cpus must be >= 1"),
            (self.rx_queues >= 1, "rx_queues must be >= 1"),
            (self.hz >= 1, "hz must be >= 1"),
            (self.idle_ticks >= 1, "idle_ticks must be >= 1"),
            (self.delack_ticks >= 1, "delack_ticks must be >= 1"),
            (0.0 <= self.malformed_rate <= 0.5, "malformed_rate must be within [0, 0.5]"),
            (0 <= self.payload <= 1400, "payload must be within [0, 1400]"),
            (self.budget >= 1, "budget must be >= 1"),
            (self.rcvbuf >= 4096, "rcvbuf must be >= 4096"),
            (self.drain_timeout > 0, "drain_timeout must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def packets(self) -> int:
        """Data datagrams the source sends."""
        return max(1, round(self.rate * self.duration))

    @property
    def idle_seconds(self) -> float:
        return self.idle_ticks / self.hz

    @property
    def delack_seconds(self) -> float:
        return self.delack_ticks / self.hz

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def default_cpus() -> int:
        """The CPUs this process may run on."""
        return _default_cpus()


_sockets_lock = threading.Lock()
_sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()


def open_udp(rcvbuf: int | None = None) -> socket.socket:
    """A non-blocking UDP socket bound to an ephemeral port of 127.0.0.1.

    ``rcvbuf`` is requested with ``SO_RCVBUF`` (the kernel caps it at
    ``net.core.rmem_max``).  The socket is tracked until closed.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((LOOPBACK, 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    with _sockets_lock:
        _sockets.add(sock)
    return sock


def open_sockets() -> list[socket.socket]:
    """The demo's sockets that are still open (for leak checks)."""
    with _sockets_lock:
        return [s for s in _sockets if s.fileno() != -1]


def udp_rcvbuf_errors() -> int | None:
    """``Udp: RcvbufErrors`` of ``/proc/net/snmp`` (datagrams the kernel
    dropped because a receive buffer was full), or None where unavailable.
    The counter is per network namespace, so other processes can add to it."""
    try:
        with open("/proc/net/snmp", encoding="ascii") as f:
            lines = [line.split() for line in f if line.startswith("Udp:")]
    except OSError:
        return None
    if len(lines) < 2 or "RcvbufErrors" not in lines[0]:
        return None
    try:
        return int(lines[1][lines[0].index("RcvbufErrors")])
    except (ValueError, IndexError):
        return None


# The nearest-rank percentile of an already sorted list (None if empty): the
# one definition kcont uses everywhere.
percentile = percentile_sorted


# RSS: a multiplicative hash of the flow id and an indirection table, as a
# NIC's RSS maps a packet's hash to a receive queue and so to a CPU.
_RSS_TABLE_SIZE = 128


def rss_hash(flow: int) -> int:
    """A 32-bit mix of the flow id (Knuth's multiplicative hash, then xorshift)."""
    h = (flow * 2654435761) & 0xFFFFFFFF
    return (h ^ (h >> 16)) & 0xFFFFFFFF


def rss_table(ncpu: int) -> list[int]:
    """The indirection table: hash bucket -> CPU index, spread round robin."""
    return [i % ncpu for i in range(_RSS_TABLE_SIZE)]


def rss_cpu(flow: int, table: list[int]) -> int:
    """The CPU index RSS steers ``flow`` to."""
    return table[rss_hash(flow) % len(table)]

"""kcont.netstack: an SMP UDP packet pipeline on kcont, on loopback, with the
same pipeline on asyncio to compare (``python -m kcont demo``).

The pipeline
    A traffic source (:mod:`.source`) sends numbered datagrams for many flows
    at a rate to real UDP sockets on 127.0.0.1.  The receive side
    (:mod:`.stack`) plays the NIC: one thread per RX queue, bound to a CPU
    with :func:`kcont.bind_cpu`, reads datagrams, hashes each flow to a CPU
    (RSS), appends the packet to the flow's queue and schedules the flow's
    ``wq_softnet`` continuation on that CPU (EBUSY: already scheduled, the
    packet is coalesced into that run, as NAPI batches).  The continuation
    processes the flow's packets under the flow's lock, checks per-flow order,
    re-arms the flow's idle timer for every packet (the hot path: O(1), no
    allocation) and arms a delayed-ACK continuation that sends a real ACK
    datagram back; the source measures the round trip.  Idle flows are torn
    down by their timer, and the teardown bookkeeping runs on ``wq_prilow``,
    never on the softnet path.  Malformed datagrams (truncated, wrong magic,
    absurd lengths) are counted and dropped by the RX thread
    (:mod:`.wire`).

    :mod:`.asyncio_stack` is the same pipeline written as an asyncio user
    would: a ``DatagramProtocol``, ``call_later`` timers cancelled and
    re-created for every packet.  :mod:`.report` holds the figures,
    :mod:`.runner` the life of a run, :mod:`.cli` the ``demo`` command.

Use::

    from kcont.netstack import Config, run_pipeline
    report = run_pipeline(Config(flows=64, rate=5000, duration=1.0))
    assert report.ok, report.checks

A run is bounded in packets (``rate * duration``) and in time (plus
``drain_timeout``), stops by itself, joins every thread it started and closes
every socket it opened.
"""

from __future__ import annotations

from .common import Config, open_sockets
from .report import Report, Snapshot, compare_table, render, write_json
from .runner import IMPLEMENTATIONS, run_pipeline

__all__ = [
    "IMPLEMENTATIONS",
    "Config",
    "Report",
    "Snapshot",
    "compare_table",
    "open_sockets",
    "render",
    "run_pipeline",
    "write_json",
]

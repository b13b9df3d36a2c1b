"""The receive side on kcont: RX threads playing the NIC, RSS to per-CPU
softnet continuations, per-flow idle and delayed-ACK timers, teardown on a
thread-level queue.

What it owns
    The receive sockets and their threads (:class:`RxQueue`), the flow table
    (one shard per RX queue), each flow's state and continuations
    (:class:`Flow`), and the per-CPU counters (:class:`CpuCounters`).

The path of a datagram
    1. An RX thread (``netstack/rx<q>``, bound to CPU ``q mod ncpu`` with
       :func:`kcont.bind_cpu`, like an interrupt with an affinity) reads a
       datagram and parses it (:func:`.wire.parse`); a malformed one is
       counted and dropped there.  It looks the flow up (creating it on its
       first packet; RSS chose its CPU), appends ``(seq, ts)`` to the flow's
       queue and schedules the flow's ``rx`` continuation on ``wq_softnet``
       on that CPU with the C-style ``kcont_schedule`` (no exception on the
       hot path).  EBUSY means an invocation is already committed and will see
       the packet: coalescing, as NAPI batches.
    2. ``rx`` (softnet, flow lock held) pops up to ``budget`` packets, checks
       each sequence number against the next expected one (lower: an order
       violation; higher: a gap, i.e. loss), **re-arms the idle timer for every
       packet** (``kcont_schedule(idle, cpu, idle_ticks)``: O(1), no
       allocation), and arms the delayed-ACK timer if it is not armed.  Then
       it ``ack()``\\ s itself and re-checks its queue, scheduling itself again
       if packets are left (see "No lost wake-up").
    3. ``delack`` (softnet, flow lock) fires ``delack_ticks`` after the first
       unacknowledged packet and sends a real ACK datagram (cumulative
       sequence number, echoed timestamp) from the RX socket to the source.
    4. ``idle`` (softclock, flow lock) fires when the flow was silent
       ``idle_ticks``.  If the flow saw traffic since (a re-arm that got
       EBUSY because this expiry was already committed), it re-arms itself for
       the rest of the period: the classic callout idiom.  Otherwise it
       removes the flow from its shard, sends a final ACK if one is owed, and
       schedules ``teardown`` on ``wq_prilow``.
    5. ``teardown`` (thread level, may block) destroys the flow's
       continuations (waiting for a running one), folds the flow's counters
       into the totals and destroys itself.  It never runs on the softnet
       path.

No lost wake-up (the coalescing handshake)
    INVOKING stays set until ``rx`` returns, so an RX thread that appends a
    packet after ``rx``'s last look at the queue but before it returns would
    get EBUSY and the packet would wait for the next one.  ``rx`` therefore
    calls ``kc.ack()`` *before* its final look at the queue: a packet
    appended after that look gets a successful schedule (a new invocation,
    which waits for this one to end), and a packet appended before it is seen.
    Timer functions ``ack()`` first thing, under the flow lock: the
    dispatcher releases the lock before it clears INVOKING, so without it a
    lock holder could be refused (EBUSY) by an invocation that has ended.

Locking
    * ``Flow.lock`` (a :class:`kcont.Mutex`, held by the dispatcher around
      ``rx``, ``idle`` and ``delack``) guards every ``Flow`` field except
      ``q``: ``next_seq``, ``highest``, ``acked``, ``unacked_ts``,
      ``delack_armed``, ``last_tick``, ``closed``, ``packets``, ``gaps``,
      ``violations``.  After ``closed`` is set they no longer change, and
      ``teardown`` reads them without the lock.
    * ``Flow.q`` is a ``collections.deque``: one producer (the flow's RX
      thread, which appends while holding ``RxQueue.lock``), one consumer
      (``rx``); ``append``/``popleft`` are atomic.
    * ``RxQueue.lock`` (a ``threading.Lock``) guards ``RxQueue.table`` and
      ``RxQueue.graveyard``, and makes "the queue is empty" and "remove from
      the table" one step for ``idle``.  Lock order: ``Flow.lock`` ->
      ``RxQueue.lock`` -> the runtime's state lock (creating a flow's
      continuations takes it under ``RxQueue.lock``).  RX threads never take
      a flow lock; the dispatcher only *tries* a flow lock (never blocks).
    * ``CpuCounters`` of CPU ``i`` are written only by CPU ``i``'s soft
      worker (``rx``, ``idle`` and ``delack`` of the flows RSS put there);
      ``RxQueue`` counters only by its RX thread; ``Stack._totals`` under
      ``Stack._totals_lock`` (``teardown``).  Readers take racy snapshots.

Shutdown
    The runner shuts the runtime down only once every flow was torn down.  If
    it shuts down earlier (a run cut short), a continuation's schedule raises
    ``kcont.ShutdownError``: it is counted (``shutdown_refusals``), not
    reported as a failure, and an RX thread that meets it stops reading.
"""

from __future__ import annotations

import errno
import functools
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kcont
from kcont import Continuation, Mutex, kcont_schedule

from . import wire
from .common import Config, open_udp, rss_cpu, rss_table
from .report import Snapshot

__all__ = ["CpuCounters", "Flow", "RxQueue", "Stack"]

_EBUSY = errno.EBUSY


class CpuCounters:
    """Counters of one CPU, written only by its soft worker."""

    __slots__ = (
        "ack_errors",
        "acks_sent",
        "batches",
        "delack_fired",
        "gaps",
        "idle_fired",
        "idle_rechecks",
        "processed",
        "rearm_busy",
        "rearms",
        "teardowns",
        "violations",
    )

    def __init__(self) -> None:
        self.processed = 0
        self.batches = 0
        self.rearms = 0
        self.rearm_busy = 0
        self.idle_fired = 0
        self.idle_rechecks = 0
        self.delack_fired = 0
        self.acks_sent = 0
        self.ack_errors = 0
        self.teardowns = 0
        self.gaps = 0
        self.violations = 0


class Flow:
    """One flow's state and continuations (see the module docstring for locking)."""

    __slots__ = (
        "acked",
        "closed",
        "cpu",
        "delack",
        "delack_armed",
        "gaps",
        "highest",
        "id",
        "idle",
        "last_tick",
        "lock",
        "next_seq",
        "packets",
        "peer",
        "q",
        "rx",
        "rxq",
        "teardown",
        "unacked_ts",
        "violations",
    )

    def __init__(self, fid: int, rxq: RxQueue, cpu: kcont.CPU, peer: tuple[str, int], next_seq: int) -> None:
        self.id = fid
        self.rxq = rxq
        self.cpu = cpu
        self.peer = peer
        self.lock = Mutex(f"flow {fid}")
        self.q: deque[tuple[int, int]] = deque()
        self.next_seq = next_seq
        self.highest = next_seq - 1
        self.acked = next_seq - 1
        self.unacked_ts = 0
        self.delack_armed = False
        self.last_tick = 0
        self.closed = False
        self.packets = 0
        self.gaps = 0
        self.violations = 0
        # Set by Stack._new_flow right after construction.
        self.rx: Continuation[Flow]
        self.idle: Continuation[Flow]
        self.delack: Continuation[Flow]
        self.teardown: Continuation[Flow]


class RxQueue:
    """One receive socket, its thread and its shard of the flow table."""

    def __init__(self, index: int, cpu: kcont.CPU, rcvbuf: int) -> None:
        self.index = index
        self.cpu = cpu
        self.sock = open_udp(rcvbuf=rcvbuf)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.lock = threading.Lock()
        self.table: dict[int, Flow] = {}  # lock
        self.graveyard: dict[int, int] = {}  # lock: flow id -> next expected seq of a closed flow
        self.thread: threading.Thread | None = None
        # Written by the RX thread only.
        self.received = 0
        self.malformed: dict[str, int] = dict.fromkeys(wire.REASONS, 0)
        self.coalesced = 0  # kcont_schedule answered EBUSY
        self.late_schedules = 0  # the flow was torn down between append and schedule
        self.flows_created = 0


@dataclass
class _Totals:
    """What teardown folded in, and schedules refused at shutdown (Stack._totals_lock)."""

    flows_torn_down: int = 0
    packets: int = 0
    shutdown_refusals: int = 0


_Func = Callable[["Stack", Flow, Continuation[Flow]], None]


def _tolerate_shutdown(func: _Func) -> _Func:
    """A continuation function that may run while the runtime shuts down:
    its schedules then raise ShutdownError, which is counted, not reported
    as a failure (only a run cut short by its drain timeout gets there)."""

    @functools.wraps(func)
    def wrapper(self: Stack, flow: Flow, kc: Continuation[Flow]) -> None:
        try:
            func(self, flow, kc)
        except kcont.ShutdownError:
            self._note_shutdown_refusal()

    return wrapper


class Stack:
    """The kcont pipeline: ``Stack(config, rt)``, ``start()``, then
    :meth:`snapshot` while it runs, :meth:`stop_rx` once drained.

    ``rt`` is a running :class:`kcont.Runtime`; the stack creates its
    continuations on it and never shuts it down.
    """

    impl = "kcont"

    def __init__(self, config: Config, rt: kcont.Runtime, name: str = "netstack") -> None:
        self.config = config
        self.rt = rt
        self.name = name
        self._stopping = False
        self._rss = rss_table(len(rt.cpus))
        self._cpu = [CpuCounters() for _ in rt.cpus]
        self._totals = _Totals()
        self._totals_lock = threading.Lock()
        self._exceptions: list[BaseException] = []
        self.rxqs: list[RxQueue] = []
        try:
            for q in range(config.rx_queues):
                self.rxqs.append(RxQueue(q, rt.cpus[q % len(rt.cpus)], config.rcvbuf))
        except BaseException:
            self.close()
            raise
        self._softnet = rt.predefined("wq_softnet")
        self._softclock = rt.predefined("wq_softclock")
        self._prilow = rt.predefined("wq_prilow")

    @property
    def targets(self) -> list[tuple[str, int]]:
        """The address of each RX queue (where the source sends)."""
        return [rxq.address for rxq in self.rxqs]

    @property
    def rcvbuf(self) -> int:
        """The receive buffer the kernel granted (SO_RCVBUF as read back)."""
        return int(self.rxqs[0].sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    # -- RX threads ------------------------------------------------------------

    def start(self) -> None:
        for rxq in self.rxqs:
            rxq.thread = threading.Thread(
                target=self._rx_main, args=(rxq,), name=f"{self.name}/rx{rxq.index}", daemon=True
            )
            rxq.thread.start()

    def _rx_main(self, rxq: RxQueue) -> None:
        sock = rxq.sock
        recvfrom = sock.recvfrom
        parse = wire.parse
        malformed = rxq.malformed
        table = rxq.table
        lock = rxq.lock
        data_kind = wire.DATA
        new_flow = self._new_flow
        with kcont.bind_cpu(rxq.cpu), selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ)
            while True:
                try:
                    data, peer = recvfrom(2048)
                except BlockingIOError:
                    if self._stopping:
                        return
                    sel.select(0.05)
                    continue
                except OSError:
                    return  # closed under us
                rxq.received += 1
                try:
                    header = parse(data)
                except wire.Malformed as bad:
                    malformed[bad.reason] += 1
                    continue
                if header.kind != data_kind:  # an ACK sent to the stack: not ours to process
                    malformed["bad_type"] += 1
                    continue
                fid = header.flow
                with lock:
                    flow = table.get(fid)
                    if flow is None:
                        flow = new_flow(rxq, fid, peer)
                    flow.q.append((header.seq, header.ts))
                try:
                    code = kcont_schedule(flow.rx, flow.cpu, 0)
                except kcont.ShutdownError:  # the runtime was shut down under us: stop reading
                    self._note_shutdown_refusal()
                    return
                if code:
                    if code == _EBUSY:
                        rxq.coalesced += 1  # already committed: it will see the packet
                    else:  # EINVAL: destroyed by a teardown that drained the queue already
                        rxq.late_schedules += 1

    def _new_flow(self, rxq: RxQueue, fid: int, peer: tuple[str, int]) -> Flow:
        """Create a flow on its RSS CPU (``rxq.lock`` held)."""
        rt = self.rt
        cpu = rt.cpus[rss_cpu(fid, self._rss)]
        flow = Flow(fid, rxq, cpu, peer, rxq.graveyard.pop(fid, 0))
        flow.last_tick = rt.ticks
        flow.rx = Continuation(self._softnet, self._rx_func, flow, lock=flow.lock, name=f"rx:{fid}")
        flow.idle = Continuation(self._softclock, self._idle_func, flow, lock=flow.lock, name=f"idle:{fid}")
        flow.delack = Continuation(
            self._softnet, self._delack_func, flow, lock=flow.lock, name=f"delack:{fid}"
        )
        flow.teardown = Continuation(self._prilow, self._teardown_func, flow, name=f"teardown:{fid}")
        rxq.table[fid] = flow
        rxq.flows_created += 1
        return flow

    # -- continuations -----------------------------------------------------------

    @_tolerate_shutdown
    def _rx_func(self, flow: Flow, kc: Continuation[Flow]) -> None:
        """softnet, flow lock held: process up to ``budget`` packets."""
        counters = self._cpu[flow.cpu.index]
        q = flow.q
        if flow.closed:  # only reachable through a late schedule: nothing is queued
            return
        config = self.config
        idle = flow.idle
        cpu = flow.cpu
        idle_ticks = config.idle_ticks
        popleft = q.popleft
        # Activity is stamped with the tick *before* the re-arms, so the idle
        # timer (armed at this tick or later) never finds the flow "active"
        # at its own deadline.
        now = self.rt.ticks
        n = 0
        rearms = 0
        busy = 0
        gaps = 0
        violations = 0
        expected = flow.next_seq
        for _ in range(config.budget):
            try:
                seq, ts = popleft()
            except IndexError:
                break
            n += 1
            if seq != expected:
                if seq > expected:
                    gaps += seq - expected
                    expected = seq + 1
                else:
                    violations += 1
            else:
                expected = seq + 1
            if not flow.delack_armed:
                flow.unacked_ts = ts
                if kcont_schedule(flow.delack, cpu, config.delack_ticks) == 0:
                    flow.delack_armed = True
            # The hot path: re-arm the idle timer for every packet.
            if kcont_schedule(idle, cpu, idle_ticks):
                busy += 1  # its expiry is committed: it will re-check last_tick
            else:
                rearms += 1
        flow.next_seq = expected
        flow.highest = expected - 1
        flow.last_tick = now
        flow.packets += n
        flow.gaps += gaps
        flow.violations += violations
        counters.processed += n
        counters.gaps += gaps
        counters.violations += violations
        counters.batches += 1
        counters.rearms += rearms
        counters.rearm_busy += busy
        kc.ack()
        if q:  # budget used up, or a packet arrived before the ack: run again
            kcont_schedule(kc, cpu, 0)

    @_tolerate_shutdown
    def _delack_func(self, flow: Flow, kc: Continuation[Flow]) -> None:
        """softnet, flow lock held: send the delayed ACK."""
        kc.ack()
        counters = self._cpu[flow.cpu.index]
        counters.delack_fired += 1
        flow.delack_armed = False
        if not flow.closed and flow.highest > flow.acked:
            self._send_ack(flow, counters)

    def _send_ack(self, flow: Flow, counters: CpuCounters) -> None:
        try:
            flow.rxq.sock.sendto(wire.build(wire.ACK, flow.id, flow.highest, flow.unacked_ts), flow.peer)
        except OSError:  # full send buffer or closed socket: the ACK is lost, and counted
            counters.ack_errors += 1
            return
        flow.acked = flow.highest
        counters.acks_sent += 1

    @_tolerate_shutdown
    def _idle_func(self, flow: Flow, kc: Continuation[Flow]) -> None:
        """softclock, flow lock held: tear the flow down if it stayed idle."""
        kc.ack()
        counters = self._cpu[flow.cpu.index]
        counters.idle_fired += 1
        if flow.closed:
            return
        idle_ticks = self.config.idle_ticks
        idle_for = self.rt.ticks - flow.last_tick
        rxq = flow.rxq
        if idle_for >= idle_ticks and not flow.q:
            with rxq.lock:
                if not flow.q:  # the RX thread appends under this lock: nothing can slip in
                    del rxq.table[flow.id]
                    rxq.graveyard[flow.id] = flow.next_seq
                    flow.closed = True
        if not flow.closed:
            # Traffic since the expiry was committed: re-arm for the rest.
            counters.idle_rechecks += 1
            kcont_schedule(kc, flow.cpu, max(1, idle_ticks - idle_for))
            return
        flow.delack.stop()
        flow.delack_armed = False
        if flow.highest > flow.acked:
            self._send_ack(flow, counters)  # the final ACK
        counters.teardowns += 1
        kcont_schedule(flow.teardown, flow.cpu, 0)

    @_tolerate_shutdown
    def _teardown_func(self, flow: Flow, kc: Continuation[Flow]) -> None:
        """wq_prilow (thread level, may block): retire the flow."""
        for continuation in (flow.rx, flow.delack, flow.idle):
            continuation.destroy()  # waits for the idle function that scheduled us
        with self._totals_lock:
            totals = self._totals
            totals.flows_torn_down += 1
            totals.packets += flow.packets
        kc.destroy()

    # -- observation -------------------------------------------------------------

    def _note_shutdown_refusal(self) -> None:
        with self._totals_lock:
            self._totals.shutdown_refusals += 1

    @property
    def shutdown_refusals(self) -> int:
        """Schedules refused because the runtime was shutting down."""
        with self._totals_lock:
            return self._totals.shutdown_refusals

    def on_exception(self, kc: Continuation[Any], exc: BaseException) -> None:
        """The runtime's exception handler while the stack runs: remember it."""
        self._exceptions.append(exc)

    @property
    def exceptions(self) -> list[BaseException]:
        return list(self._exceptions)

    def snapshot(self) -> Snapshot:
        """Counters now (racy reads of ints: each is exact once the run stopped)."""
        cpus = self._cpu
        malformed = dict.fromkeys(wire.REASONS, 0)
        received = coalesced = created = flows_open = late = 0
        for rxq in self.rxqs:
            received += rxq.received
            coalesced += rxq.coalesced
            created += rxq.flows_created
            late += rxq.late_schedules
            for reason, count in list(rxq.malformed.items()):
                malformed[reason] += count
            flows_open += len(rxq.table)
        with self._totals_lock:
            torn_down = self._totals.flows_torn_down
        return Snapshot(
            received=received,
            malformed=malformed,
            processed=sum(c.processed for c in cpus),
            per_cpu=[c.processed for c in cpus],
            rearms=sum(c.rearms for c in cpus),
            rearm_busy=sum(c.rearm_busy for c in cpus),
            idle_fired=sum(c.idle_fired for c in cpus),
            idle_rechecks=sum(c.idle_rechecks for c in cpus),
            delack_fired=sum(c.delack_fired for c in cpus),
            acks_sent=sum(c.acks_sent for c in cpus),
            ack_errors=sum(c.ack_errors for c in cpus),
            coalesced=coalesced,
            late_schedules=late,
            flows_created=created,
            flows_open=flows_open,
            flows_torn_down=torn_down,
            teardowns_started=sum(c.teardowns for c in cpus),
            order_violations=sum(c.violations for c in cpus),
            seq_gaps=sum(c.gaps for c in cpus),
            exceptions=len(self._exceptions),
        )

    def quiescent(self) -> bool:
        """Every flow created was torn down and its teardown has finished."""
        snap = self.snapshot()
        return snap.flows_open == 0 and snap.flows_torn_down == snap.flows_created

    # -- end ---------------------------------------------------------------------

    def stop_rx(self, timeout: float = 5.0) -> None:
        """Stop the RX threads (they notice within 50 ms) and join them."""
        self._stopping = True
        deadline = time.monotonic() + timeout
        for rxq in self.rxqs:
            if rxq.thread is not None and rxq.thread.is_alive():
                rxq.thread.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Stop the RX threads and close the sockets.  Idempotent."""
        self.stop_rx()
        for rxq in self.rxqs:
            rxq.sock.close()

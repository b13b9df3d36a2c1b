"""The same receive pipeline written the way an asyncio user would write it,
for the side-by-side comparison (``python -m kcont demo --compare asyncio``).

What it owns
    One event-loop thread (``netstack/asyncio``), one
    :class:`asyncio.DatagramProtocol` endpoint per RX socket (the same
    sockets, ``SO_RCVBUF`` and traffic as the kcont pipeline), the flow table
    and its counters.

The pipeline, callback for callback
    * ``datagram_received`` parses (malformed: counted, dropped), looks the
      flow up (creating it), checks the sequence number, and processes the
      packet inline: one loop, one CPU, no RSS.
    * The idle timer is what asyncio offers: ``TimerHandle.cancel()`` then a
      new ``loop.call_later(idle, ...)`` for every packet (asyncio has no
      re-arm; the cancelled handle stays in the heap until the loop purges
      it).
    * The delayed ACK is a ``call_later(delack, ...)`` made when the first
      unacknowledged packet arrives; it sends a real ACK with
      ``transport.sendto``.
    * An idle flow is removed by its timer (final ACK if one is owed) and the
      teardown bookkeeping is a ``loop.call_soon`` (there is no lower
      priority to give it).

Invariants
    The same accounting as the kcont pipeline (:class:`.report.Snapshot`),
    so the two reports compare field by field.

Locking
    None inside: every field is written by the loop thread only.  Other
    threads read counters (racy snapshots of ints, exact once stopped) and
    stop the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any, cast

from . import wire
from .common import Config, open_udp
from .report import Snapshot

__all__ = ["AsyncioStack"]


class _Flow:
    __slots__ = (
        "acked",
        "delack",
        "highest",
        "id",
        "idle",
        "next_seq",
        "packets",
        "peer",
        "transport",
        "unacked_ts",
    )

    def __init__(
        self, fid: int, peer: tuple[str, int], transport: asyncio.DatagramTransport, next_seq: int
    ) -> None:
        self.id = fid
        self.peer = peer
        self.transport = transport
        self.next_seq = next_seq
        self.highest = next_seq - 1
        self.acked = next_seq - 1
        self.unacked_ts = 0
        self.packets = 0
        self.idle: asyncio.TimerHandle | None = None
        self.delack: asyncio.TimerHandle | None = None


class _RxProtocol(asyncio.DatagramProtocol):
    def __init__(self, stack: AsyncioStack) -> None:
        self.stack = stack
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (CPython's selector datagram transport does not subclass DatagramTransport.)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        stack = self.stack
        stack.received += 1
        try:
            header = wire.parse(data)
        except wire.Malformed as bad:
            stack.malformed[bad.reason] += 1
            return
        if header.kind != wire.DATA:
            stack.malformed["bad_type"] += 1
            return
        flow = stack.flows.get(header.flow)
        if flow is None:
            assert self.transport is not None
            flow = _Flow(header.flow, addr, self.transport, stack.graveyard.pop(header.flow, 0))
            stack.flows[header.flow] = flow
            stack.flows_created += 1
        seq = header.seq
        if seq != flow.next_seq:
            if seq > flow.next_seq:
                stack.gaps += seq - flow.next_seq
                flow.next_seq = seq + 1
            else:
                stack.violations += 1
        else:
            flow.next_seq = seq + 1
        flow.highest = flow.next_seq - 1
        flow.packets += 1
        stack.processed += 1
        loop = stack.loop
        if flow.delack is None:
            flow.unacked_ts = header.ts
            flow.delack = loop.call_later(stack.delack_s, stack.on_delack, flow)
        # What asyncio offers for a protocol timer: cancel and re-create.
        if flow.idle is not None:
            flow.idle.cancel()
        flow.idle = loop.call_later(stack.idle_s, stack.on_idle, flow)
        stack.rearms += 1

    def error_received(self, exc: Exception) -> None:
        self.stack.socket_errors += 1


class AsyncioStack:
    """The asyncio pipeline: ``start()``, :meth:`snapshot` while it runs,
    :meth:`close` once drained (same interface as :class:`.stack.Stack`)."""

    impl = "asyncio"

    def __init__(self, config: Config, name: str = "netstack") -> None:
        self.config = config
        self.name = name
        self.idle_s = config.idle_seconds
        self.delack_s = config.delack_seconds
        self.socks = []
        try:
            for _ in range(config.rx_queues):
                self.socks.append(open_udp(rcvbuf=config.rcvbuf))
        except BaseException:
            for sock in self.socks:
                sock.close()
            raise
        self.flows: dict[int, _Flow] = {}
        self.graveyard: dict[int, int] = {}
        self.received = 0
        self.malformed = dict.fromkeys(wire.REASONS, 0)
        self.processed = 0
        self.gaps = 0
        self.violations = 0
        self.rearms = 0
        self.idle_fired = 0
        self.delack_fired = 0
        self.acks_sent = 0
        self.ack_errors = 0
        self.socket_errors = 0
        self.flows_created = 0
        self.flows_torn_down = 0
        self.teardowns_started = 0
        self.exceptions = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future[None] | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._closing = False  # the loop is stopping: no more ACKs, every timer cancelled

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    @property
    def targets(self) -> list[tuple[str, int]]:
        return [sock.getsockname() for sock in self.socks]

    @property
    def rcvbuf(self) -> int:
        """The receive buffer the kernel granted (SO_RCVBUF as read back)."""
        return int(self.socks[0].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    # -- loop thread -------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=f"{self.name}/asyncio", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._failure is not None:
            raise RuntimeError("the asyncio pipeline failed to start") from self._failure

    def _main(self) -> None:
        try:
            asyncio.run(self._amain())
        except BaseException as exc:
            self._failure = exc
            self._ready.set()

    async def _amain(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        loop.set_exception_handler(self._on_exception)
        self._stop = loop.create_future()
        transports: list[asyncio.DatagramTransport] = []
        try:
            for sock in self.socks:
                transport, _ = await loop.create_datagram_endpoint(lambda: _RxProtocol(self), sock=sock)
                transports.append(transport)
            self._ready.set()
            await self._stop
        finally:
            # Stopped early (Ctrl-C), flows may still have timers: cancel them
            # before the transports close, or each would fire on a closed one.
            self._closing = True
            for flow in self.flows.values():
                for handle in (flow.idle, flow.delack):
                    if handle is not None:
                        handle.cancel()
            for each in transports:
                each.close()
            await asyncio.sleep(0)  # let the transports' close callbacks run

    def _on_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.exceptions += 1
        loop.default_exception_handler(context)

    # -- timers --------------------------------------------------------------------

    def on_delack(self, flow: _Flow) -> None:
        self.delack_fired += 1
        flow.delack = None
        if flow.highest > flow.acked:
            self._send_ack(flow)

    def _send_ack(self, flow: _Flow) -> None:
        if self._closing or flow.transport.is_closing():
            return  # stopping: the transport is (being) closed
        try:
            flow.transport.sendto(wire.build(wire.ACK, flow.id, flow.highest, flow.unacked_ts), flow.peer)
        except OSError:
            self.ack_errors += 1
            return
        flow.acked = flow.highest
        self.acks_sent += 1

    def on_idle(self, flow: _Flow) -> None:
        self.idle_fired += 1
        del self.flows[flow.id]
        self.graveyard[flow.id] = flow.next_seq
        if flow.delack is not None:
            flow.delack.cancel()
            flow.delack = None
        if flow.highest > flow.acked:
            self._send_ack(flow)  # the final ACK
        self.teardowns_started += 1
        self.loop.call_soon(self._teardown, flow)

    def _teardown(self, flow: _Flow) -> None:
        flow.idle = None
        self.flows_torn_down += 1

    # -- observation ---------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return Snapshot(
            received=self.received,
            malformed=dict(self.malformed),
            processed=self.processed,
            per_cpu=[self.processed],
            rearms=self.rearms,
            rearm_busy=0,
            idle_fired=self.idle_fired,
            idle_rechecks=0,
            delack_fired=self.delack_fired,
            acks_sent=self.acks_sent,
            ack_errors=self.ack_errors,
            coalesced=0,
            late_schedules=0,
            flows_created=self.flows_created,
            flows_open=len(self.flows),
            flows_torn_down=self.flows_torn_down,
            teardowns_started=self.teardowns_started,
            order_violations=self.violations,
            seq_gaps=self.gaps,
            exceptions=self.exceptions,
        )

    def quiescent(self) -> bool:
        return not self.flows and self.flows_torn_down == self.flows_created

    # -- end -----------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Stop the loop (closing the transports, hence the sockets), join
        its thread, and close any socket left.  Idempotent."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(_resolve, stop)
            except RuntimeError:  # the loop closed meanwhile
                pass
        if self._thread is not None:
            self._thread.join(timeout)
        for sock in self.socks:
            sock.close()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)

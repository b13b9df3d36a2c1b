"""The datagram format of the demo pipeline, and its validating parser.

What it owns
    The wire format of a data datagram and of an acknowledgement, how to
    build them, how to parse them (validating every field), and the
    deliberately malformed datagrams the traffic source injects to show that
    they are counted and dropped.

Format (network byte order, 24-byte header, then ``length`` payload bytes)

    ======  =====  ===========================================================
    offset  size   field
    ======  =====  ===========================================================
    0       2      magic ``0x4B43`` (``b"KC"``)
    2       1      version (1)
    3       1      type: 1 DATA (source -> stack), 2 ACK (stack -> source)
    4       4      flow id
    8       4      sequence number (DATA: this packet's; ACK: the highest
                   sequence number processed, cumulative)
    12      8      timestamp, ``time.monotonic_ns()`` (DATA: when sent; ACK:
                   the echoed send time of the oldest packet it acknowledges,
                   RFC 7323 style)
    20      2      payload length (must equal the bytes that follow, and be at
                   most :data:`MAX_PAYLOAD`)
    22      2      reserved, zero
    ======  =====  ===========================================================

Invariants
    :func:`parse` either returns a :class:`Header` whose fields were all
    checked, or raises :class:`Malformed` with one of :data:`REASONS`.  It never
    raises anything else, whatever the bytes: a malformed datagram is counted
    and dropped by the receive thread and never reaches a continuation.

Locking
    None: pure functions and immutable constants.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = [
    "ACK",
    "DATA",
    "HEADER",
    "MAGIC",
    "MALFORMED_KINDS",
    "MAX_PAYLOAD",
    "REASONS",
    "VERSION",
    "Header",
    "Malformed",
    "build",
    "malformed",
    "parse",
]

MAGIC = 0x4B43
VERSION = 1
DATA = 1
ACK = 2
MAX_PAYLOAD = 1400  # a loopback "MTU" for the demo; anything longer is absurd

HEADER = struct.Struct("!HBBIIQHH")
HEADER_SIZE = HEADER.size  # 24

#: Why :func:`parse` refused a datagram (the keys of the malformed counters).
REASONS = ("truncated", "bad_magic", "bad_version", "bad_type", "bad_length")

#: The kinds of malformed datagrams :func:`malformed` builds, in rotation.
MALFORMED_KINDS = ("truncated", "bad_magic", "bad_length", "bad_type")


class Header(NamedTuple):
    """A validated header."""

    kind: int
    flow: int
    seq: int
    ts: int
    length: int


class Malformed(ValueError):
    """The datagram is not a valid frame; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_unpack_from = HEADER.unpack_from
_pack = HEADER.pack


def parse(data: bytes) -> Header:
    """Parse and validate one datagram.

    Raises:
        Malformed: truncated, wrong magic or version, unknown type, or a
            payload length that is absurd or does not match the datagram.
    """
    size = len(data)
    if size < HEADER_SIZE:
        raise Malformed("truncated")
    magic, version, kind, flow, seq, ts, length, _reserved = _unpack_from(data)
    if magic != MAGIC:
        raise Malformed("bad_magic")
    if version != VERSION:
        raise Malformed("bad_version")
    if kind != DATA and kind != ACK:
        raise Malformed("bad_type")
    if length > MAX_PAYLOAD or length != size - HEADER_SIZE:
        raise Malformed("bad_length")
    return Header(kind, flow, seq, ts, length)


def build(kind: int, flow: int, seq: int, ts: int, payload: bytes = b"") -> bytes:
    """One valid datagram."""
    return _pack(MAGIC, VERSION, kind, flow, seq, ts, len(payload), 0) + payload


def malformed(kind: str, flow: int, seq: int, ts: int, payload: bytes = b"") -> bytes:
    """A datagram :func:`parse` must refuse with reason ``kind`` (see
    :data:`MALFORMED_KINDS`)."""
    good = build(DATA, flow, seq, ts, payload)
    if kind == "truncated":
        return good[: HEADER_SIZE // 2]
    if kind == "bad_magic":
        return b"XX" + good[2:]
    if kind == "bad_length":  # claims 60 000 bytes of payload
        return _pack(MAGIC, VERSION, DATA, flow, seq, ts, 60_000, 0) + payload
    if kind == "bad_type":
        return _pack(MAGIC, VERSION, 9, flow, seq, ts, len(payload), 0) + payload
    if kind == "bad_version":
        return _pack(MAGIC, VERSION + 1, DATA, flow, seq, ts, len(payload), 0) + payload
    raise ValueError(f"unknown malformed kind {kind!r}")

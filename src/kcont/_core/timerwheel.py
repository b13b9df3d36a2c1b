"""The timer structure: a two-level hashed timing wheel in integer ticks.

What it owns
    The PENDING continuations of one runtime, keyed by their deadline tick.
    Arming, re-arming a pending entry and disarming are O(1) and allocate
    nothing (an entry is the continuation itself, kept in a ``dict`` used as an
    insertion-ordered set), and a disarmed entry is removed at once, so
    cancelled timers never pile up (unlike asyncio's heap, which keeps
    cancelled handles until it purges).

Layout
    * ``near``: ``NEAR_SIZE`` buckets; bucket ``d & NEAR_MASK`` holds exactly
      the entries due at tick ``d``, for every ``d`` in the wheel's current
      *epoch* (``d >> NEAR_BITS == now >> NEAR_BITS``).  Expiring a tick pops
      one bucket; nothing that is not due is ever scanned.
    * ``far``: ``{epoch: bucket}`` for later deadlines.  When the wheel enters
      an epoch, that epoch's bucket is spread over ``near`` (each entry moves
      at most once per arming: a lazy, one-level cascade as in NetBSD's
      ``callout_softclock``, but exact, so no timer is ever late because of the
      wheel).

Ordering invariant
    Within a bucket, entries are in arming order.  Far entries of an epoch are
    all armed before the wheel enters it, and near entries of that epoch only
    after, so the cascade preserves arming order: entries due at the same tick
    expire in the order they were (last) scheduled.  This is the "(expiry
    tick, schedule order)" rule of docs/semantics.md.

Locking
    None of its own: every method is called with the owning runtime's state
    lock held (``_locked`` is implied for the whole class).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .continuation import Continuation

# 1024 one-tick buckets: a second of exact near future at hz=1000, and the
# size at which the research's bare wheel was measured.
NEAR_BITS = 10
NEAR_SIZE = 1 << NEAR_BITS
NEAR_MASK = NEAR_SIZE - 1

# When the wheel must catch up more than this many ticks, it first checks
# whether the near wheel is empty and jumps instead of stepping tick by tick.
_JUMP_THRESHOLD = 64

Bucket = dict["Continuation[Any]", None]


class TimerWheel:
    """Deadlines of pending continuations.  All methods need the runtime lock."""

    __slots__ = ("count", "far", "near", "now")

    def __init__(self, now: int = 0) -> None:
        self.near: list[Bucket] = [{} for _ in range(NEAR_SIZE)]
        self.far: dict[int, Bucket] = {}
        self.now = now  # last tick whose expirations were collected
        self.count = 0  # entries armed

    def arm(self, kc: Continuation[Any], deadline: int) -> None:
        """Arm (or re-arm) ``kc`` for ``deadline`` (which is > ``now``)."""
        epoch = self.now >> NEAR_BITS
        old = kc._bucket
        if old is not None:
            del old[kc]
            if not old and kc._deadline >> NEAR_BITS != epoch:
                del self.far[kc._deadline >> NEAR_BITS]  # an emptied far bucket
        else:
            self.count += 1
        bucket: Bucket | None
        if deadline >> NEAR_BITS == epoch:
            bucket = self.near[deadline & NEAR_MASK]
        else:
            bucket = self.far.get(deadline >> NEAR_BITS)
            if bucket is None:
                bucket = self.far[deadline >> NEAR_BITS] = {}
        bucket[kc] = None
        kc._bucket = bucket
        kc._deadline = deadline

    def disarm(self, kc: Continuation[Any]) -> None:
        """Remove ``kc``, which must be armed."""
        bucket = kc._bucket
        assert bucket is not None
        del bucket[kc]
        kc._bucket = None
        self.count -= 1
        if not bucket and kc._deadline >> NEAR_BITS != self.now >> NEAR_BITS:
            # An emptied far bucket would otherwise stay until its epoch.
            del self.far[kc._deadline >> NEAR_BITS]

    def expire_until(self, tick: int, out: list[Continuation[Any]]) -> None:
        """Append to ``out``, in expiry order, every entry due at or before
        ``tick``, and advance ``now`` to ``tick``."""
        near = self.near
        while self.now < tick:
            if tick - self.now > _JUMP_THRESHOLD and not any(near):
                # Nothing due in this epoch: jump to the next epoch that has
                # entries (its first tick is processed normally, cascade first).
                target = tick
                if self.far:
                    target = min(target, (min(self.far) << NEAR_BITS) - 1)
                if target > self.now:
                    self.now = target
                    continue
            t = self.now + 1
            if not t & NEAR_MASK:
                later = self.far.pop(t >> NEAR_BITS, None)
                if later:
                    for kc in later:
                        bucket = near[kc._deadline & NEAR_MASK]
                        bucket[kc] = None
                        kc._bucket = bucket
            bucket = near[t & NEAR_MASK]
            if bucket:
                out.extend(bucket)
                self.count -= len(bucket)
                for kc in bucket:
                    kc._bucket = None
                bucket.clear()
            self.now = t

    def next_deadline(self) -> int | None:
        """A tick at or before the earliest deadline, or None if nothing is
        armed.  Exact when the earliest entry is in the current epoch;
        otherwise the first tick of its epoch (waking there cascades it)."""
        if not self.count:
            return None
        near = self.near
        end = (self.now | NEAR_MASK) + 1
        for t in range(self.now + 1, end):
            if near[t & NEAR_MASK]:
                return t
        return min(self.far) << NEAR_BITS

    def __iter__(self) -> Iterator[Continuation[Any]]:
        """Every armed entry (for shutdown and introspection)."""
        for bucket in self.near:
            yield from bucket
        for bucket in self.far.values():
            yield from bucket

    def __len__(self) -> int:
        return self.count

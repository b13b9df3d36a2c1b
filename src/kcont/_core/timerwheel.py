"""The timer structure: a hashed timing wheel in integer ticks, with an index
of its occupied far epochs.

What it owns
    The PENDING continuations of one runtime, keyed by their deadline tick.
    Arming, re-arming a pending entry and disarming are O(1) and allocate
    nothing (an entry is the continuation itself, kept in a ``dict`` used as an
    insertion-ordered set), and a disarmed entry is removed at once, so
    cancelled timers never pile up (unlike asyncio's heap, which keeps
    cancelled handles until it purges).  Only arming into a far epoch that
    holds nothing yet costs more: a new bucket and an O(log E) push on the
    epoch index (E: occupied far epochs).

Layout
    * ``near``: ``NEAR_SIZE`` buckets; bucket ``d & NEAR_MASK`` holds exactly
      the entries due at tick ``d``, for every ``d`` in the wheel's current
      *epoch* (``d >> NEAR_BITS == now >> NEAR_BITS``).  Expiring a tick
      empties one bucket; no entry that is not due is ever looked at.
    * ``far``: ``{epoch: bucket}`` for later deadlines, one non-empty bucket
      per occupied epoch.  When the wheel enters an epoch, that epoch's bucket
      is spread over ``near`` (each entry moves at most once per arming: a
      lazy, one-level cascade as in NetBSD's ``callout_softclock``, but exact,
      so no timer is ever late because of the wheel).
    * ``_epochs``: a binary heap (``heapq``) of the keys of ``far``, so the
      earliest occupied far epoch is ``_epochs[0]`` and no operation looks at
      every far epoch.  An epoch whose bucket empties stays in the heap as a
      stale key (removing an arbitrary heap item would cost O(E)); a stale key
      is popped as soon as it reaches the top, and the heap is rebuilt from
      ``far`` once the stale keys outnumber the epochs occupied at the last
      rebuild plus ``_STALE_SLACK`` (``_stale_room`` counts down to it).  So
      the heap never holds more stale keys than that, and each O(E) rebuild
      follows at least E epochs emptied or newly occupied: O(1) amortized.

Complexity (E occupied far epochs)
    arm, re-arm, disarm: O(1); plus an O(log E) heap push when a far epoch
    gets its first entry, and amortized O(1) when one loses its last.
    ``next_deadline``: O(NEAR_SIZE) at worst (the rest of the current epoch's
    buckets, scanned at C speed), then O(1) for the far part.
    ``expire_until``: O(entries expired) plus, per epoch it crosses, one
    C-speed pass over the buckets of the span (a span shorter than
    ``_SCAN_SPAN`` ticks is stepped tick by tick instead); an idle stretch is
    jumped over to the earliest occupied far epoch, whatever its distance.

Invariants
    * ``count`` is the number of entries in all buckets; every entry ``kc``
      has ``kc._bucket`` its bucket and ``kc._deadline`` its tick.
    * ``near`` holds nothing due at or before ``now``, and every ``far`` key
      is after ``now``'s epoch; no ``far`` bucket is empty (between calls).
    * Every key of ``far`` is in ``_epochs``, and ``_epochs[0]``, if any, is
      a key of ``far`` (the top is never stale).
    * ``_stale_room`` is ``_STALE_SLACK`` plus the epochs occupied at the
      last rebuild, minus the stale keys in ``_epochs``.

Ordering invariant
    Within a bucket, entries are in arming order.  Far entries of an epoch are
    all armed before the wheel enters it, and near entries of that epoch only
    after, so the cascade preserves arming order: entries due at the same tick
    expire in the order they were (last) scheduled.  This is the "(expiry
    tick, schedule order)" rule of docs/semantics.md.

``next_deadline`` is exact when the earliest entry is in the current epoch;
otherwise it is the first tick of that entry's epoch, a lower bound: a caller
that wakes there and calls ``expire_until`` cascades the epoch, after which
the answer is exact (the threaded timer thread wakes at most once more per
1024 ticks because of it; the simulator's ``next_deadline`` says "lower
bound").

Locking
    None of its own: every method is called with the owning runtime's state
    lock held (``_locked`` is implied for the whole class).
"""

from __future__ import annotations

from collections.abc import Iterator
from heapq import heapify, heappop, heappush
from itertools import compress, islice
from typing import TYPE_CHECKING, Any

from .ki import protected
from .layout import compiled_module

if TYPE_CHECKING:
    from .continuation import Continuation

# 1024 one-tick buckets: a second of exact near future at hz=1000, and the
# size of the bare Python wheel the benchmarks compare with.
NEAR_BITS = 10
NEAR_SIZE = 1 << NEAR_BITS
NEAR_MASK = NEAR_SIZE - 1

# Deadlines are below this (2**62 ticks: the compiled wheel's range); a
# schedule asks for fewer than MAX_TICKS ticks (Continuation.schedule).
MAX_DEADLINE = 1 << 62
MAX_TICKS = 1 << 61

# expire_until looks at each tick of a span shorter than this (the simulator
# advances one tick at a time); a longer span is scanned for its next occupied
# bucket at C speed, which costs more to start and less per tick.
_SCAN_SPAN = 32

# Stale keys the epoch heap may hold beyond the live ones before a rebuild: a
# few emptied epochs never cost a rebuild of a small heap.
_STALE_SLACK = 64

Bucket = dict["Continuation[Any]", None]


class TimerWheel:
    """Deadlines of pending continuations.  All methods need the runtime lock."""

    __slots__ = ("_epochs", "_stale_room", "count", "far", "near", "now")

    def __init__(self, now: int = 0) -> None:
        self.near: list[Bucket] = [{} for _ in range(NEAR_SIZE)]
        self.far: dict[int, Bucket] = {}
        self._epochs: list[int] = []  # heap of the keys of far, with stale keys
        self._stale_room = _STALE_SLACK  # stale keys _epochs may take before a rebuild
        self.now = now  # last tick whose expirations were collected
        self.count = 0  # entries armed

    def arm(self, kc: Continuation[Any], deadline: int) -> None:
        """Arm (or re-arm) ``kc`` for ``deadline`` (which is > ``now``)."""
        epoch = self.now >> NEAR_BITS
        old = kc._bucket
        if old is not None:
            del old[kc]
            if not old and kc._deadline >> NEAR_BITS != epoch:
                # An emptied far bucket goes, unless kc is re-armed into it.
                old_epoch = kc._deadline >> NEAR_BITS
                if old_epoch != deadline >> NEAR_BITS:
                    del self.far[old_epoch]
                    self._stale_room -= 1
                    if self._stale_room < 0 or self._epochs[0] == old_epoch:
                        self._settle_epochs()
        else:
            self.count += 1
        bucket: Bucket | None
        if deadline >> NEAR_BITS == epoch:
            bucket = self.near[deadline & NEAR_MASK]
        else:
            bucket = self.far.get(deadline >> NEAR_BITS)
            if bucket is None:
                bucket = self.far[deadline >> NEAR_BITS] = {}
                heappush(self._epochs, deadline >> NEAR_BITS)
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
            epoch = kc._deadline >> NEAR_BITS
            del self.far[epoch]
            self._stale_room -= 1
            if self._stale_room < 0 or self._epochs[0] == epoch:
                self._settle_epochs()

    @protected
    def _settle_epochs(self) -> None:
        """Restore the epoch heap's invariants after keys left ``far``: pop
        stale keys off the top; rebuild once there is no room for more."""
        far, epochs = self.far, self._epochs
        while epochs and epochs[0] not in far:
            heappop(epochs)
            self._stale_room += 1
        if self._stale_room < 0:
            epochs[:] = far
            heapify(epochs)
            self._stale_room = len(far) + _STALE_SLACK

    def expire_until(self, tick: int, out: list[Continuation[Any]]) -> None:
        """Append to ``out``, in expiry order, every entry due at or before
        ``tick``, and advance ``now`` to ``tick``."""
        near = self.near
        now = self.now
        while now < tick:
            t = now + 1
            if not t & NEAR_MASK:
                self._enter_epoch(t >> NEAR_BITS)
            if tick - t < _SCAN_SPAN:  # a short span (the simulator's one tick): each tick
                bucket = near[t & NEAR_MASK]
                if bucket:  # _collect, inlined on the simulator's path
                    out.extend(bucket)
                    self.count -= len(bucket)
                    for kc in bucket:
                        kc._bucket = None
                    bucket.clear()
                now = t
                continue
            last = min(tick, t | NEAR_MASK)  # the last tick to collect in this epoch
            start, stop = t & NEAR_MASK, (last & NEAR_MASK) + 1
            # compress reads each bucket when it moves past it, after the
            # previous occupied one was collected: nothing else changes them.
            for slot in compress(range(start, stop), islice(near, start, stop)):
                self._collect(near[slot], out)
            now = last
            if last < tick:
                # The epoch is over, and the near wheel empty: jump to the eve
                # of the earliest far epoch (its first tick is then entered
                # normally, cascade first) or to ``tick``.
                now = tick
                if self._epochs:
                    now = min(tick, (self._epochs[0] << NEAR_BITS) - 1)
        self.now = now

    def _collect(self, bucket: Bucket, out: list[Continuation[Any]]) -> None:
        """Move the entries of a due near bucket to ``out``."""
        out.extend(bucket)
        self.count -= len(bucket)
        for kc in bucket:
            kc._bucket = None
        bucket.clear()

    def _enter_epoch(self, epoch: int) -> None:
        """Spread the far bucket of ``epoch``, which the wheel enters, over ``near``."""
        later = self.far.pop(epoch, None)
        if later is not None:
            self._stale_room -= 1
            self._settle_epochs()
            near = self.near
            for kc in later:
                bucket = near[kc._deadline & NEAR_MASK]
                bucket[kc] = None
                kc._bucket = bucket

    def next_deadline(self) -> int | None:
        """A tick at or before the earliest deadline, or None if nothing is
        armed.  Exact when the earliest entry is in the current epoch;
        otherwise the first tick of its epoch (waking there cascades it)."""
        if not self.count:
            return None
        now = self.now
        start = (now & NEAR_MASK) + 1
        for found in compress(range(start, NEAR_SIZE), islice(self.near, start, None)):
            return now + found - start + 1
        return self._epochs[0] << NEAR_BITS

    def __iter__(self) -> Iterator[Continuation[Any]]:
        """Every armed entry (for shutdown and introspection)."""
        for bucket in self.near:
            yield from bucket
        for bucket in self.far.values():
            yield from bucket

    def __len__(self) -> int:
        return self.count


#: The pure-Python wheel, the reference, whichever core runs.
PyTimerWheel = TimerWheel

_ckcont = compiled_module()
if _ckcont is not None:
    # The compiled wheel: this algorithm and layout with intrusive lists as
    # buckets (kcont/_core/_ckcont/cwheel.c).  It holds continuations only,
    # with deadlines below MAX_DEADLINE.
    TimerWheel = _ckcont.TimerWheel  # type: ignore[misc]

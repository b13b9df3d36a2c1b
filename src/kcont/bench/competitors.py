"""What kcont is measured against, when it is not kcont: the bare hashed timing
wheel (:class:`HashedWheel`, the floor of the timer benchmarks) and the
optional competitors, imported lazily (uvloop, Twisted) with the notes printed
when one is missing.  The standard library competitors (asyncio, ``sched``,
``ThreadPoolExecutor``, ``queue.SimpleQueue``) are used directly by each
benchmark.

Locking: none; a :class:`HashedWheel` is used from one thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import kcont

# Buckets of the bare hashed wheel.
WHEEL_BUCKETS = 1024


# -- the floor of the timer benchmarks: a bare hashed timing wheel ------------


class WheelTimer:
    """A timer of :class:`HashedWheel`: no state machine, no semantics."""

    __slots__ = ("arg", "bucket", "deadline", "func")

    def __init__(self, func: Callable[[Any], object], arg: Any) -> None:
        self.func = func
        self.arg = arg
        self.bucket: set[WheelTimer] | None = None
        self.deadline = 0


class HashedWheel:
    """The floor: a hashed timing wheel in a few lines of Python (1024
    buckets, a ``set`` per bucket; ``tick()`` scans one bucket): what any
    timer with kcont's semantics costs at least."""

    __slots__ = ("buckets", "now")

    def __init__(self) -> None:
        self.buckets: list[set[WheelTimer]] = [set() for _ in range(WHEEL_BUCKETS)]
        self.now = 0

    def schedule(self, t: WheelTimer, deadline: int) -> None:
        b = t.bucket
        if b is not None:
            b.discard(t)
        b = self.buckets[deadline % WHEEL_BUCKETS]
        b.add(t)
        t.bucket = b
        t.deadline = deadline

    def cancel(self, t: WheelTimer) -> None:
        b = t.bucket
        if b is not None:
            b.discard(t)
            t.bucket = None

    def tick(self) -> None:
        now = self.now = self.now + 1
        b = self.buckets[now % WHEEL_BUCKETS]
        if b:
            due = [t for t in b if t.deadline <= now]
            for t in due:
                b.discard(t)
                t.bucket = None
                t.func(t.arg)


# -- optional competitors (imported lazily) ------------------------------------------


def _uvloop() -> Any:
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return uvloop


def _twisted_reactor() -> Any:
    """A fresh, never-run Twisted reactor (its timed calls only), or None."""
    try:
        from twisted.internet.epollreactor import EPollReactor  # type: ignore[import-not-found,unused-ignore]

        return EPollReactor()  # type: ignore[no-untyped-call,unused-ignore]
    except ImportError:
        pass
    try:
        from twisted.internet.selectreactor import SelectReactor  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return SelectReactor()


def _threaded_runtime_available() -> bool:
    return hasattr(kcont, "Runtime")


SKIP_THREADED = "skipped: threaded runtime not available (kcont.Runtime)"
SKIP_UVLOOP = "skipped: uvloop not installed (pip install 'kcont[bench]')"
SKIP_TWISTED = "skipped: Twisted not installed (pip install 'kcont[bench]')"


@contextmanager
def _event_loop(factory: Callable[[], asyncio.AbstractEventLoop]) -> Iterator[asyncio.AbstractEventLoop]:
    loop = factory()
    try:
        yield loop
    finally:
        loop.close()


def _loop_factories() -> list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]]:
    factories: list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]] = [
        ("asyncio", asyncio.new_event_loop)
    ]
    uv = _uvloop()
    if uv is not None:
        factories.append(("uvloop", uv.new_event_loop))
    return factories

"""The ``latency`` benchmark: wake-up latency from ``schedule`` to the start of
the function on an idle (or busy) consumer thread, p50/p90/p99, against a bare
``queue.SimpleQueue`` hand-off and asyncio ``call_soon_threadsafe``.

Each poster owns its consumer thread; its sink list is appended by that thread
only and read by the producer after each probe (a list append is atomic on
every CPython, free-threaded included).
"""

from __future__ import annotations

import asyncio
import gc
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import kcont

from .._stats import percentile
from .competitors import SKIP_THREADED, _loop_factories, _threaded_runtime_available
from .harness import Config, Group, check_stop

perf = time.perf_counter
perf_ns = time.perf_counter_ns


# -- wake-up latency ---------------------------------------------------------------------


class _Poster:
    """A way to hand ``probe(t_post)`` to another thread."""

    name = ""
    impl = ""

    def __init__(self, sink: list[int]) -> None:
        self.sink = sink

    def probe(self, t_post: int) -> None:
        self.sink.append(perf_ns() - t_post)

    def post(self, t_post: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _SimpleQueuePoster(_Poster):
    name = "SimpleQueue hand-off (floor)"
    impl = "floor"

    def __init__(self, sink: list[int]) -> None:
        super().__init__(sink)
        self.q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._consume, daemon=True)
        self.thread.start()

    def _consume(self) -> None:
        get = self.q.get
        while True:
            item = get()
            if item is None:
                return
            item[0](item[1])

    def post(self, t_post: int) -> None:
        self.q.put((self.probe, t_post))

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()


class _LoopPoster(_Poster):
    def __init__(self, sink: list[int], label: str, factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        super().__init__(sink)
        self.name = f"{label} call_soon_threadsafe"
        self.impl = label
        self.loop = factory()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def post(self, t_post: int) -> None:
        self.loop.call_soon_threadsafe(self.probe, t_post)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class _KcontPoster(_Poster):
    name = "kcont threaded"
    impl = "kcont"

    def __init__(self, sink: list[int]) -> None:
        super().__init__(sink)
        self.rt = kcont.Runtime(ncpu=1, hz=1000)  # type: ignore[attr-defined,unused-ignore]
        self.rt.__enter__()
        self.box = [0]
        self.kc = self.rt.continuation(kcont.wq_softnet, self._kprobe, None)

    def _kprobe(self, arg: Any, kc: Any) -> None:
        self.sink.append(perf_ns() - self.box[0])

    def post(self, t_post: int) -> None:
        self.box[0] = t_post
        self.kc.schedule()

    def close(self) -> None:
        self.rt.__exit__(None, None, None)


class _KcontSaturatedPoster(_KcontPoster):
    """The probe on ``wq_softnet`` while ``wq_prilow`` on the same CPU is kept
    saturated by continuations that sleep (soft-level work must not wait
    behind blocked thread-level work)."""

    name = "kcont threaded, wq_prilow saturated by sleepers"
    impl = "kcont"
    SLEEPERS = 4
    SLEEP_S = 0.002

    def __init__(self, sink: list[int]) -> None:
        super().__init__(sink)
        self.stopping = threading.Event()
        self.sleepers = [
            self.rt.continuation(kcont.wq_prilow, self._sleep, None) for _ in range(self.SLEEPERS)
        ]
        for sleeper in self.sleepers:
            sleeper.schedule()

    def _sleep(self, arg: Any, kc: Any) -> None:
        time.sleep(self.SLEEP_S)
        if not self.stopping.is_set():
            kc.schedule(ack=True)

    def close(self) -> None:
        self.stopping.set()
        super().close()


def _percentile_us(values: list[int], fraction: float) -> float:
    """The nearest-rank percentile of latencies in ns, in us (NaN if none)."""
    value = percentile(values, fraction)
    return float("nan") if value is None else value / 1000


def bench_latency(cfg: Config) -> Group:
    total = cfg.latency_samples
    per_round = max(10, total // cfg.rounds)
    g = Group(
        "latency",
        "Wake-up latency: from schedule to the start of the function (idle consumer thread)",
        {"samples": per_round * cfg.rounds, "rounds": cfg.rounds},
        kind="latency",
        notes=[
            "t_post is taken just before the post; the producer sleeps 100-300 us between posts and "
            "waits for the probe; samples of all rounds pooled (rounds interleave the mechanisms).",
            "saturated: 4 wq_prilow continuations on the same CPU each sleep 2 ms and re-arm "
            "themselves for the whole measurement; the probe is on wq_softnet.",
        ],
    )
    sinks: dict[str, list[int]] = {}
    posters: list[_Poster] = []
    try:
        sink: list[int] = []
        posters.append(_SimpleQueuePoster(sink))
        for label, factory in _loop_factories():
            posters.append(_LoopPoster([], label, factory))
        if _threaded_runtime_available():
            posters.append(_KcontPoster([]))
            posters.append(_KcontSaturatedPoster([]))
        else:
            g.skipped.append(f"kcont threaded: {SKIP_THREADED}")
        for p in posters:
            sinks[p.name] = p.sink
        rng = random.Random(cfg.seed)
        for r in range(-1, cfg.rounds):
            shift = r % len(posters) if r >= 0 else 0
            with cfg.turn():
                for p in posters[shift:] + posters[:shift]:
                    check_stop(cfg.stop)
                    gc.collect()
                    count = per_round if r >= 0 else 5
                    start = len(p.sink)
                    for s in range(count):
                        p.post(perf_ns())
                        time.sleep(rng.uniform(100e-6, 300e-6))
                        deadline = perf() + 5
                        while len(p.sink) < start + s + 1:
                            if perf() > deadline:
                                raise RuntimeError(f"latency {p.name}: probe lost")
                            time.sleep(50e-6)
                    if r < 0:
                        del p.sink[start:]
    finally:
        for p in posters:
            p.close()
    floor_lat = sinks[posters[0].name]
    floor_p50, floor_p99 = _percentile_us(floor_lat, 0.50), _percentile_us(floor_lat, 0.99)
    for p in posters:
        lat = sinks[p.name]
        row: dict[str, Any] = {
            "case": p.name,
            "impl": p.impl,
            "role": "floor" if p.impl == "floor" else ("kcont" if p.impl == "kcont" else "reference"),
            "samples": len(lat),
            "p50_us": _percentile_us(lat, 0.50),
            "p90_us": _percentile_us(lat, 0.90),
            "p99_us": _percentile_us(lat, 0.99),
            "max_us": max(lat) / 1000 if lat else float("nan"),
            "floor": posters[0].name,
        }
        row["x_floor_p50"] = row["p50_us"] / floor_p50 if floor_p50 else None
        row["x_floor_p99"] = row["p99_us"] / floor_p99 if floor_p99 else None
        g.rows.append(row)
    return g

"""What a stress run does: :class:`StressConfig` (sizes, probabilities,
timeouts) and :data:`DEFAULT_WEIGHTS` (how often each producer operation is
drawn).  Plain data, no shared state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .._core.workqueue import WQ_PERCPU


@dataclass
class StressConfig:
    """What the harness does.  Probabilities are per operation or per call."""

    threads: int = 4  # producer threads
    continuations: int = 64  # continuations alive at any time
    duration: float = 5.0  # seconds of load
    seed: int = 1
    ncpu: int = 2
    hz: int = 1000
    locks: int = 4  # continuation locks shared by the continuations
    acquired_queues: Sequence[tuple[int, int]] = ((200, 0), (150, WQ_PERCPU), (90, 0), (40, WQ_PERCPU))
    temp_priorities: Sequence[int] = (5, 160, 199)  # queues acquired and released during the run
    p_locked: float = 0.6  # a new continuation has a lock
    max_nticks: int = 20
    p_raise: float = 0.04  # at each raise point of a function
    p_rearm: float = 0.3
    p_self_stop: float = 0.03
    p_self_halt: float = 0.03
    p_self_destroy: float = 0.005
    p_handover: float = 0.05
    p_self_setarg: float = 0.05
    p_extra_lock: float = 0.1
    p_sleep: float = 0.05  # thread-level functions only
    max_sleep: float = 0.002
    p_capi: float = 0.3  # use the kcont_* API for an operation
    p_bind: float = 0.3  # a producer binds itself to a CPU for an operation
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    shutdown_cancel: bool | None = None  # None: drawn from the seed
    lock_timeout: float = 10.0  # producers; 0 = non-blocking (simulated runtime)
    halt_timeout: float = 30.0
    hang_timeout: float | None = None  # faulthandler dump after this many seconds (None: duration + 120)
    max_reported: int = 20  # violations kept with details


DEFAULT_WEIGHTS: dict[str, float] = {
    "schedule_now": 20,
    "schedule_timer": 20,
    "stop": 12,
    "halt": 4,
    "setarg": 8,
    "setfunc": 3,
    "setmutex": 4,
    "destroy": 2,
    "temp_queue": 0.5,
    "predicates": 4,
    "queue_churn": 0.5,
    "flush": 2,
}

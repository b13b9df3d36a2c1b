"""Instruments and the slow-invocation warning: what the dispatch function
calls around an invocation when asked to.

What it owns
    :class:`Watch`, an immutable snapshot of the instruments of a runtime
    (``RuntimeCore.add_instrument``) and of its ``slow_threshold``, and
    :func:`watched_call`, which the dispatch function uses instead of a bare
    call while a watch is set.  With no instrument and no threshold there is
    no watch, and the dispatch function pays nothing for them.

Instruments (trio's ``Instrument`` is the model)
    Any object with a ``before_invocation(kc, cpu)`` method, an
    ``after_invocation(kc, cpu, elapsed_ns, exc)`` method, or both.  They are
    called on the thread that runs the invocation, with no lock of the
    runtime held: ``before_invocation`` right before the function (its
    continuation is RUNNING and holds its lock, if it has one),
    ``after_invocation`` right after it returned or raised (``exc``: what it
    raised, or None), before the invocation's end is accounted.  An
    instrument that raises is logged on the ``kcont`` logger and removed;
    the invocation and the worker go on.

Slow invocations
    With ``slow_threshold`` set (seconds of real time, on every runtime: a
    function takes real time even on the simulator), a function that ran
    longer is reported by one WARNING on the ``kcont`` logger naming the
    continuation (its name, or its function's qualified name), at most once
    per name every :data:`SLOW_REPORT_INTERVAL` seconds, so that a
    continuation that is always slow does not flood the log.

Locking
    The watch is replaced (never changed in place) under the state lock, in
    ``RuntimeCore._time_funcs``, which the dispatch function already reads
    once per call and tests once per invocation (True there means "time the
    function", on a real-time runtime); so an
    instrument added or removed meanwhile takes effect at its next call.
    :class:`SlowReporter` has its own lock, taken alone, never across the
    logging call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextvars import Context
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .continuation import Continuation
    from .runtime import CPU, RuntimeCore

logger = logging.getLogger("kcont")

# A continuation whose function is slow is reported at most once per this
# many seconds: enough to notice a regression, not enough to flood the log.
SLOW_REPORT_INTERVAL = 60.0
# Names remembered at most; past this, those not reported for an interval
# are forgotten (bounded memory whatever the number of distinct names).
_SLOW_NAMES_MAX = 1024


class Instrument:
    """A base for instruments (optional: any object with either method
    will do).  Override one or both methods; one left as inherited is not
    called at all.

    Context: both run on the thread that runs the invocation, with no lock
    of the runtime held; they should be quick, as they delay the next
    invocation of that thread.
    """

    __slots__ = ()

    def before_invocation(self, kc: Continuation[Any], cpu: CPU) -> None:
        """Called right before ``kc``'s function runs on ``cpu``."""

    def after_invocation(
        self, kc: Continuation[Any], cpu: CPU, elapsed_ns: int, exc: BaseException | None
    ) -> None:
        """Called right after ``kc``'s function returned (``exc`` None) or
        raised ``exc``, having run ``elapsed_ns`` nanoseconds."""


def hook_for(instrument: object) -> Hook:
    """The hook of ``instrument``: its methods, those inherited unchanged
    from :class:`Instrument` left out.  Runs user code (``getattr``): never
    under the state lock.

    Raises:
        TypeError: it has neither method, or one is not callable.
    """
    methods = []
    for name in ("before_invocation", "after_invocation"):
        method = getattr(instrument, name, None)
        if method is not None and getattr(type(instrument), name, None) is getattr(Instrument, name):
            method = None  # the base's no-op: not worth a call per invocation
        if method is not None and not callable(method):
            raise TypeError(f"{type(instrument).__name__}.{name} must be callable")
        methods.append(method)
    before, after = methods
    if before is None and after is None:
        raise TypeError(f"{type(instrument).__name__} defines neither before_invocation nor after_invocation")
    return Hook(instrument, before, after)


class Hook:
    """One instrument and its bound methods (resolved once, when added)."""

    __slots__ = ("after", "alive", "before", "instrument")

    def __init__(
        self,
        instrument: object,
        before: Callable[[Continuation[Any], CPU], object] | None,
        after: Callable[[Continuation[Any], CPU, int, BaseException | None], object] | None,
    ) -> None:
        self.instrument = instrument
        self.before = before
        self.after = after
        # Cleared when the instrument is removed (or raised), so that the
        # watches taken before stop calling it; read without a lock: a stale
        # read costs at most one more call.
        self.alive = True


class Watch:
    """What :func:`watched_call` does around each invocation (immutable).
    ``count_time``: the runtime counts functions' time in ``func_ns`` (real
    time runtimes only)."""

    __slots__ = ("after", "before", "count_time", "hooks", "slow_ns")

    def __init__(self, hooks: tuple[Hook, ...], slow_ns: int | None, count_time: bool) -> None:
        self.hooks = hooks
        self.before = tuple(h for h in hooks if h.before is not None)
        self.after = tuple(h for h in hooks if h.after is not None)
        self.slow_ns = slow_ns
        self.count_time = count_time


def make_watch(hooks: tuple[Hook, ...], slow_ns: int | None, count_time: bool) -> Watch | None:
    """The watch for these settings, or None if there is nothing to do."""
    if not hooks and slow_ns is None:
        return None
    return Watch(hooks, slow_ns, count_time)


def watched_call(
    rt: RuntimeCore, watch: Watch, cpu: CPU, kc: Continuation[Any], ctx: Context, func: Any, arg: Any
) -> tuple[BaseException | None, int]:
    """Call ``func(arg, kc)`` in ``ctx`` with the instruments around it, and
    report it if slow.  Returns what it raised (or None) and how long it ran
    in nanoseconds, for ``func_ns`` (0 unless ``watch.count_time``).  Called
    with no lock held."""
    for hook in watch.before:
        if hook.alive:
            try:
                hook.before(kc, cpu)  # type: ignore[misc]
            except BaseException as exc:
                rt._drop_hook(hook, "before_invocation", exc)
    failure: BaseException | None = None
    started = perf_counter_ns()
    try:
        ctx.run(func, arg, kc)
    except BaseException as exc:  # contained: the dispatch function reports it
        failure = exc
    elapsed = perf_counter_ns() - started
    for hook in watch.after:
        if hook.alive:
            try:
                hook.after(kc, cpu, elapsed, failure)  # type: ignore[misc]
            except BaseException as exc:
                rt._drop_hook(hook, "after_invocation", exc)
    slow_ns = watch.slow_ns
    if slow_ns is not None and elapsed > slow_ns:
        rt._slow.report(rt, kc, elapsed, slow_ns)
    return failure, elapsed if watch.count_time else 0


class SlowReporter:
    """Rate-limits slow-invocation warnings per continuation name."""

    __slots__ = ("_last", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}  # name -> monotonic time of its last report

    def report(self, rt: RuntimeCore, kc: Continuation[Any], elapsed_ns: int, slow_ns: int) -> None:
        from .runtime import label_of  # runtime imports this module

        name = label_of(kc)
        now = time.monotonic()
        with self._lock:
            last = self._last.get(name)
            if last is not None and now - last < SLOW_REPORT_INTERVAL:
                return
            if len(self._last) >= _SLOW_NAMES_MAX:
                self._last = {n: t for n, t in self._last.items() if now - t < SLOW_REPORT_INTERVAL}
            self._last[name] = now
        logger.warning(
            "%s on %s ran %.1f ms, longer than slow_threshold (%.1f ms); "
            "further slow runs of %s are not reported for %.0f s",
            name,
            rt.name,
            elapsed_ns / 1e6,
            slow_ns / 1e6,
            name,
            SLOW_REPORT_INTERVAL,
        )

"""kcont's pytest plugin: fixtures for testing code built on kcont.

What it owns
    Fixtures that hand a test a runtime, current for the test's duration,
    and check it after the test:

    * ``kcont_sim``: a :class:`~kcont.SimRuntime` (``reraise=True``,
      ``trace=True``): exceptions of continuations fail the test where they
      happen; virtual time moves only when the test advances it.  Arguments
      come from the ``kcont_sim`` marker, e.g.
      ``@pytest.mark.kcont_sim(ncpu=4, hz=1000, seed=3, autojump=True)``.
    * ``kcont_sim_factory``: makes more simulated runtimes (same defaults,
      keyword arguments override them), each current until the test ends.
    * ``kcont_runtime``: a threaded :class:`~kcont.Runtime` (arguments from
      the ``kcont_runtime`` marker; default ``ncpu=2, hz=1000``).  After the
      test it must be idle (nothing queued or running within
      ``idle_timeout`` seconds), it is shut down, every one of its threads
      must have exited, and an exception raised by one of its continuations
      fails the test (unless the test installed its own
      ``exception_handler``).  Armed timers left at the end are not an error:
      shutdown stops them.

    It is registered through the ``pytest11`` entry point, so installing
    kcont makes the fixtures available to every pytest run, with no
    conftest.  ``import kcont`` never imports this module (nor pytest).

Locking
    None of its own: a fixture runs on the test's thread.  Exceptions raised
    by continuations on worker threads are appended to a list (an atomic
    operation) and examined after shutdown.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ._core.continuation import Continuation
from .sim import SimRuntime
from .threaded import Runtime

__all__ = ["kcont_runtime", "kcont_sim", "kcont_sim_factory", "pytest_configure"]

# Seconds the teardown of kcont_runtime waits for work left running, then
# for the runtime's threads to exit.
IDLE_TIMEOUT = 10.0
THREAD_EXIT_TIMEOUT = 10.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kcont_sim(**kwargs): keyword arguments of the SimRuntime the kcont_sim fixture creates",
    )
    config.addinivalue_line(
        "markers",
        "kcont_runtime(**kwargs): keyword arguments of the Runtime the kcont_runtime fixture "
        "creates (plus idle_timeout: seconds it may stay busy after the test)",
    )


def _marker_kwargs(request: pytest.FixtureRequest, name: str) -> dict[str, Any]:
    marker = request.node.get_closest_marker(name)
    if marker is None:
        return {}
    if marker.args:
        raise pytest.UsageError(f"@pytest.mark.{name} takes keyword arguments only")
    return dict(marker.kwargs)


@pytest.fixture
def kcont_sim_factory() -> Iterator[Callable[..., SimRuntime]]:
    """Make simulated runtimes: ``kcont_sim_factory(ncpu=3, seed=1)``.

    Defaults: ``reraise=True, trace=True``.  Each runtime is entered (the
    current runtime, the latest made winning) until the test ends."""
    entered: list[SimRuntime] = []

    def make(**kwargs: Any) -> SimRuntime:
        kwargs.setdefault("reraise", True)
        kwargs.setdefault("trace", True)
        rt = SimRuntime(**kwargs)
        rt.__enter__()
        entered.append(rt)
        return rt

    try:
        yield make
    finally:
        for rt in reversed(entered):
            rt.__exit__(None, None, None)


@pytest.fixture
def kcont_sim(request: pytest.FixtureRequest, kcont_sim_factory: Callable[..., SimRuntime]) -> SimRuntime:
    """A simulated runtime, current for the test (``reraise=True``,
    ``trace=True``; the ``kcont_sim`` marker's keyword arguments override)."""
    return kcont_sim_factory(**_marker_kwargs(request, "kcont_sim"))


@pytest.fixture
def kcont_runtime(request: pytest.FixtureRequest) -> Iterator[Runtime]:
    """A threaded runtime, current for the test, checked and shut down after
    it (see the module docstring)."""
    kwargs = _marker_kwargs(request, "kcont_runtime")
    idle_timeout = float(kwargs.pop("idle_timeout", IDLE_TIMEOUT))
    kwargs.setdefault("ncpu", 2)
    kwargs.setdefault("hz", 1000)
    rt = Runtime(**kwargs)
    errors: list[tuple[Continuation[Any], BaseException]] = []

    def collect(kc: Continuation[Any], exc: BaseException) -> None:
        errors.append((kc, exc))

    rt.exception_handler = collect
    prefix = f"kcont/{rt.name}/"
    rt.__enter__()
    try:
        yield rt
    finally:
        problems: list[str] = []
        try:
            rt.wait_idle(timeout=idle_timeout)
        except TimeoutError as busy:
            problems.append(f"still busy after the test: {busy}; left: {rt.pending_dump()}")
        try:
            account = rt.shutdown(timeout=idle_timeout)
        finally:
            rt.__exit__(None, None, None)
        if account.unfinished:
            problems.append(f"{account.unfinished} function(s) still running at shutdown")
        left = _threads_left(prefix, THREAD_EXIT_TIMEOUT)
        if left:
            problems.append(f"threads left behind: {left}")
        if errors:
            kc, raised = errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            problems.insert(0, f"{kc!r} raised {raised!r}{more}")
            raise AssertionError(f"kcont_runtime {rt.name}: " + "; ".join(problems)) from raised
        if problems:
            pytest.fail(f"kcont_runtime {rt.name}: " + "; ".join(problems), pytrace=False)


def _threads_left(prefix: str, timeout: float) -> list[str]:
    """Names of live threads starting with ``prefix``, after waiting up to
    ``timeout`` seconds for them to exit."""
    deadline = time.monotonic() + timeout
    while True:
        left = [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]
        if not left or time.monotonic() >= deadline:
            return [t.name for t in left]
        left[0].join(min(0.1, max(0.0, deadline - time.monotonic())))

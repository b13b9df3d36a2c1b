"""Shared fixtures, and the skipping of ``pure_core_only`` tests.

``rt`` is a simulated runtime (exact virtual time), entered as the current
runtime for the duration of the test.  ``driver`` wraps a runtime behind the
few operations the runtime-independent semantics tests need, so that the same
test runs on every runtime: see :class:`Driver`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import kcont

# Stress tests and long explorations read their budget from the environment,
# so CI can shorten them.
STRESS_SECONDS = float(os.environ.get("KCONT_STRESS_SECONDS", "5"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked ``pure_core_only`` replaces functions of the pure core
    that the compiled core does not call: it runs on the pure core only."""
    if kcont.implementation != "compiled":
        return
    skip = pytest.mark.skip(reason="patches the pure core's internals")
    for item in items:
        if item.get_closest_marker("pure_core_only") is not None:
            item.add_marker(skip)


class Driver:
    """Runtime-independent test driver.

    * ``settle()``: run everything that can run now, and return when nothing
      is queued or running (the simulator runs it; a threaded runtime is
      waited for, with a bounded timeout).
    * ``advance(n)``: let ``n`` ticks pass, running what expires, then settle.
    * ``exact_time``: True if ticks are virtual (assertions on exact ticks
      are allowed).
    """

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.exact_time = isinstance(rt, kcont.SimRuntime)

    @property
    def cpus(self) -> tuple[kcont.CPU, ...]:
        return self.rt.cpus  # type: ignore[no-any-return]

    def settle(self) -> None:
        if self.exact_time:
            self.rt.run_until_idle()
        else:
            self.rt.wait_idle(timeout=10)

    def advance(self, nticks: int) -> None:
        if self.exact_time:
            self.rt.advance(nticks)
        else:
            self.rt.wait_ticks(nticks, timeout=10)
            self.rt.wait_idle(timeout=10)


@pytest.fixture
def rt() -> Iterator[kcont.SimRuntime]:
    runtime = kcont.SimRuntime(ncpu=2, hz=100, reraise=True, trace=True)
    with runtime:
        yield runtime


def _make_runtime(kind: str) -> Any:
    if kind == "sim":
        return kcont.SimRuntime(ncpu=2, hz=100, reraise=True, trace=True)
    if kind == "threaded":
        # hz=100 as the simulator, so tick counts mean the same wall time.
        return kcont.Runtime(ncpu=2, hz=100)
    raise AssertionError(kind)


RUNTIME_KINDS = ["sim", "threaded"]


@pytest.fixture(params=RUNTIME_KINDS)
def driver(request: pytest.FixtureRequest) -> Iterator[Driver]:
    """A runtime of each kind, current for the test.  On the threaded
    runtime, an exception raised by a continuation fails the test (as
    ``reraise=True`` does on the simulator) unless the test installed its own
    ``exception_handler``."""
    runtime = _make_runtime(request.param)
    errors: list[BaseException] = []
    if request.param == "threaded":
        runtime.exception_handler = lambda kc, exc: errors.append(exc)
    before = threading.active_count()
    with runtime:
        yield Driver(runtime)
    if request.param == "threaded":
        assert threading.active_count() <= before - (2 * len(runtime.cpus) + 1), "worker threads left behind"
    if errors:
        raise errors[0]

"""Same behaviour on both cores: the compiled core and the pure-Python reference.

Each test runs one deterministic program (``tests/agree_driver.py``) twice, in
child processes of ``sys.executable``: once with ``KCONT_PURE_PYTHON=1`` (the
reference) and once without (the compiled core), and compares the outputs
line by line, reporting the first difference.  The tests run under either
core (they choose the core of each child themselves) and are skipped when the
compiled core is not built.

* the explorer's scenarios, every one, for ``KCONT_AGREE_SEEDS`` seeds
  (default 200): the traced run (the trace of every event: the reference
  paths on the compiled layouts) and the untraced run (the compiled fast
  paths; the record is every function call with its tick, CPU and flags,
  the harness's figures and the final counters);
* random operation sequences (``KCONT_AGREE_PROGRAMS`` programs of
  ``KCONT_AGREE_OPS`` operations): every result or error message, the flags
  of every continuation and the counters after each operation;
* object behaviour: subclassing, weak references, copy and pickle, repr,
  context variables, exception reports, every bad argument of schedule.
"""

from __future__ import annotations

import difflib
import json
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from kcont.explore import SCENARIOS

DRIVER = Path(__file__).with_name("agree_driver.py")
SEEDS = int(os.environ.get("KCONT_AGREE_SEEDS", "200"))
PROGRAMS = int(os.environ.get("KCONT_AGREE_PROGRAMS", "12"))
OPS = int(os.environ.get("KCONT_AGREE_OPS", "400"))
CHILD_TIMEOUT = 600


def _env(pure: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KCONT_PURE_PYTHON", None)
    if pure:
        env["KCONT_PURE_PYTHON"] = "1"
    return env


def _run(pure: bool, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, str(DRIVER), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=_env(pure),
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, f"driver {args} (pure={pure}) failed:\n{proc.stderr[-3000:]}"
    return proc.stdout


def _both(*args: str, stdin: str | None = None) -> tuple[str, str]:
    """(reference output, compiled output), the two children run side by side."""
    with ThreadPoolExecutor(2) as pool:
        pure = pool.submit(_run, True, *args, stdin=stdin)
        compiled = pool.submit(_run, False, *args, stdin=stdin)
        return pure.result(), compiled.result()


@pytest.fixture(scope="module", autouse=True)
def _compiled_core_built() -> None:
    """Asked of a child without KCONT_PURE_PYTHON: this process may run either core."""
    if _run(False, "implementation").strip() != "compiled":
        pytest.skip("the compiled core is not built here (kcont.implementation is not 'compiled')")


def first_difference(reference: str, compiled: str, context: int = 6) -> str:
    ref_lines, c_lines = reference.splitlines(), compiled.splitlines()
    i = next(
        (n for n, (a, b) in enumerate(zip(ref_lines, c_lines, strict=False)) if a != b),
        min(len(ref_lines), len(c_lines)),
    )
    start = max(0, i - context)
    diff = difflib.unified_diff(
        ref_lines[start : i + context],
        c_lines[start : i + context],
        "pure",
        "compiled",
        lineterm="",
        n=context,
    )
    return f"first difference at line {i + 1}:\n" + "\n".join(diff)


def assert_same(reference: str, compiled: str) -> None:
    assert reference, "the driver printed nothing"
    if reference != compiled:
        pytest.fail(first_difference(reference, compiled), pytrace=False)


# -- a: the explorer's scenarios -------------------------------------------------


@pytest.mark.timeout(CHILD_TIMEOUT)
@pytest.mark.parametrize("mode", ["traced", "fast"])
def test_explorer_runs_agree(mode: str) -> None:
    """Every scenario, SEEDS seeds: the same digest per seed on both cores;
    a differing seed is reported with the first difference of its record."""
    script = "\n".join(f"{name} 0 {SEEDS} {mode}" for name in SCENARIOS)
    reference, compiled = _both("explore-batch", stdin=script)
    assert len(reference.splitlines()) == SEEDS * len(SCENARIOS)
    if reference == compiled:
        return
    for a, b in zip(reference.splitlines(), compiled.splitlines(), strict=False):
        if a != b:
            scenario, seed = a.split()[:2]
            ref_dump, c_dump = _both("explore-dump", scenario, seed, mode)
            pytest.fail(
                f"{scenario} seed {seed} ({mode}) differs; {first_difference(ref_dump, c_dump)}",
                pytrace=False,
            )
    pytest.fail("outputs differ in length", pytrace=False)


def test_explorer_digest_is_deterministic() -> None:
    """The comparison above can fail: a record holds what a change of
    behaviour changes (two seeds differ; one seed run twice does not)."""
    first = _run(False, "explore-dump", "mixed", "3", "fast")
    again = _run(False, "explore-dump", "mixed", "3", "fast")
    other = _run(False, "explore-dump", "mixed", "4", "fast")
    assert first == again
    assert first != other
    assert first.count("\nbody ") > 5


# -- b: random operation sequences -----------------------------------------------

_NTICKS = [0, 0, 0, 1, 1, 2, 3, 5, 40, 1500, -1, "1", ["float", 1.5], True, None]
_CPUS: list[Any] = [None, None, None, 0, 1, 2, "foreign", "bad"]
_ACKS: list[Any] = [None, None, False, True, "yes"]


def generate_program(rng: random.Random, length: int) -> list[list[Any]]:
    """A list of operations on 6 continuation slots, 4 queues (shared and
    per-CPU), 2 mutexes and the simulator's clock; bad inputs included."""
    nslots = 6
    ops: list[list[Any]] = []
    for i in range(nslots):
        ops.append(
            [
                "create",
                i,
                rng.randrange(4),
                rng.choice([None, None, 0, 1]),
                rng.randrange(3),
                0,
                rng.randrange(3),
            ]
        )
    shutdown_at = rng.randrange(length * 3 // 4, length * 2) if rng.random() < 0.5 else -1
    for n in range(length):
        if n == shutdown_at:
            ops.append(["shutdown", rng.randrange(2)])
            continue
        slot = rng.randrange(nslots)
        kind = rng.choices(
            [
                "schedule",
                "capi_schedule",
                "schedule_kw",
                "ack",
                "capi_ack",
                "stop",
                "capi_stop",
                "halt",
                "capi_halt",
                "flush",
                "destroy",
                "capi_destroy",
                "create",
                "create_bad",
                "drop",
                "setarg",
                "capi_setarg",
                "setfunc",
                "capi_setfunc",
                "setmutex",
                "capi_setmutex",
                "predicates",
                "var",
                "step",
                "advance",
                "idle",
                "hold",
                "acquire_temp",
                "release_temp",
            ],
            [30, 8, 3, 6, 2, 5, 2, 2, 1, 2, 2, 1, 4, 1, 1, 4, 2, 2, 1, 2, 1, 2, 3, 14, 8, 3, 3, 1, 1],
        )[0]
        if kind in ("schedule",):
            ops.append([kind, slot, rng.choice(_NTICKS), rng.choice(_CPUS), rng.choice(_ACKS)])
        elif kind == "capi_schedule":
            ops.append([kind, slot, rng.choice(_NTICKS), rng.choice(_CPUS)])
        elif kind == "schedule_kw":
            ops.append([kind, slot, rng.choice(_NTICKS)])
        elif kind == "create":
            ops.append(
                [
                    kind,
                    slot,
                    rng.randrange(4),
                    rng.choice([None, None, 0, 1]),
                    rng.randrange(4),
                    rng.randrange(10),
                    rng.randrange(3),
                ]
            )
        elif kind == "create_bad":
            ops.append([kind, rng.randrange(5)])
        elif kind in ("setarg", "capi_setarg"):
            ops.append([kind, slot, rng.random() < 0.5, rng.randrange(10)])
        elif kind in ("setfunc", "capi_setfunc"):
            ops.append([kind, slot, rng.random() < 0.5, rng.randrange(20)])
        elif kind in ("setmutex", "capi_setmutex"):
            ops.append([kind, slot, rng.random() < 0.5, rng.choice([None, 0, 1])])
        elif kind == "var":
            ops.append([kind, f"v{n}"])
        elif kind == "step":
            ops.append([kind, rng.choice([None, None, 0, 1, 2])])
        elif kind == "advance":
            ops.append([kind, rng.choice([1, 1, 2, 3, 7, 0, -1])])
        elif kind == "idle":
            ops.append([kind])
        elif kind == "hold":
            ops.append([kind, rng.randrange(2)])
        elif kind == "acquire_temp":
            ops.append([kind, rng.choice([5, 120, 210]), rng.choice([0, 1])])
        elif kind == "release_temp":
            ops.append([kind])
        else:
            ops.append([kind, slot])
    return ops


@pytest.mark.timeout(CHILD_TIMEOUT)
def test_operation_sequences_agree() -> None:
    """PROGRAMS random programs (seeded, reproducible: the seed is in the
    failure) give the same line for every operation on both cores."""
    base = int(os.environ.get("KCONT_AGREE_OPS_SEED", "20261201"))
    programs = [generate_program(random.Random(base + k), OPS) for k in range(PROGRAMS)]
    reference, compiled = _both("ops", stdin=json.dumps(programs))
    assert reference.count("== program") == PROGRAMS
    assert reference.count(" -> ") == sum(len(p) for p in programs)
    assert_same(reference, compiled)


def test_operation_sequences_reach_the_interesting_states() -> None:
    """The programs above are not vacuous: functions run, raise and re-arm,
    schedules are refused for every reason, timers fire."""
    programs = [generate_program(random.Random(20261201 + k), OPS) for k in range(3)]
    out = _run(False, "ops", stdin=json.dumps(programs))
    for needle in (
        "  run ",
        "handler ",
        "BusyError",
        "DestroyedError",
        "InvalidArgumentError",
        "NoPerCPUQueueError",
        "TypeError: nticks must be an int",
        "MutexError",
        "-> 16",  # EBUSY from the C-style API
        "PENDING",
        "EXPIRED|INVOKING|QUEUED",
        "var=v",
    ):
        assert needle in out, needle


# -- c: object behaviour ---------------------------------------------------------


def test_object_behaviour_agrees() -> None:
    """Subclasses (and the refusal of __eq__/__hash__), weak references, copy
    and pickle refusals, repr, context variables on the immediate and timer
    paths with no leak between invocations, exception reports and the errors
    of every bad argument of schedule: the same on both cores."""
    reference, compiled = _both("objects")
    for needle in (
        "may not define __eq__",
        "cannot be copied or pickled",
        "handler obj1 KeyError",
        "var=timer",
    ):
        assert needle in reference
    assert_same(reference, compiled)


# -- differences found: each the smallest program showing one ---------------------


def _run_code(pure: bool, code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(pure), timeout=120, check=False
    )
    return proc.stdout + (f"exit status {proc.returncode}\n{proc.stderr[-2000:]}" if proc.returncode else "")


def _assert_code_agrees(code: str) -> None:
    prelude = (
        "import kcont\n"
        "def show(label, call):\n"
        "    try:\n"
        "        result = call()\n"
        "    except Exception as exc:\n"
        "        result = f'{type(exc).__name__}: {exc}'\n"
        "    print(label, result)\n"
        "rt = kcont.SimRuntime(ncpu=2, hz=100)\n"
        "rt.__enter__()\n"
        "wq = rt.workqueue(kcont.PRI_SOFTNET)\n"
        "kc = rt.continuation(wq, lambda a, k: None, name='k')\n"
    )
    reference, compiled = _run_code(True, prelude + code), _run_code(False, prelude + code)
    assert_same(reference, compiled)


def test_a_deadline_beyond_the_wheel_range_is_refused_alike() -> None:
    _assert_code_agrees(
        "rt.advance(5)\n"
        "show('schedule', lambda: kc.schedule((1 << 63) - 3))\n"
        "show('state', lambda: (kc.flags, kc.deadline, len(rt._wheel)))\n"
        "show('stop', kc.stop)\n"
        "show('state', lambda: (kc.flags, kc.deadline, len(rt._wheel)))\n"
        "show('again', lambda: (kc.schedule(0), kc.ack(), kc.schedule(4), kc.flags))\n"
    )


def test_a_rearm_beyond_the_wheel_range_is_refused_alike() -> None:
    _assert_code_agrees(
        "kc.schedule(3)\n"
        "show('capi', lambda: kcont.capi.kcont_schedule(kc, None, 1 << 64))\n"
        "show('state', lambda: (kc.flags, kc.deadline, len(rt._wheel)))\n"
    )


def test_wrong_calls_of_ack_report_alike() -> None:
    _assert_code_agrees("show('ack(1)', lambda: kc.ack(1))\n")


def test_a_dropped_continuation_whose_function_raised_is_freed_at_once() -> None:
    _assert_code_agrees(
        "rt.exception_handler = lambda kc, exc: None\n"
        "def fail(arg, kc):\n"
        "    raise ValueError('x')\n"
        "kc.set_func(fail, None)\n"
        "kc.schedule(0)\n"
        "rt.run_until_idle()\n"
        "del kc\n"
        "show('bound', lambda: rt.stats()['queues'][wq.name]['bound'])\n"
    )

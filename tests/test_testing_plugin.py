"""The pytest plugin (kcont.testing): an installed kcont gives any project the
kcont_sim, kcont_sim_factory and kcont_runtime fixtures with no conftest, and
kcont_runtime fails a test that leaves its runtime busy or whose
continuations raised.

Each test runs pytest in a subprocess on a tiny project made in tmp_path (a
test file only), with this interpreter, where kcont is installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import kcont

pytestmark = pytest.mark.timeout(120)

USES_THE_FIXTURES = """
import json, os, threading

import pytest

import kcont


def note(**fields):
    with open(os.environ["KCONT_PLUGIN_LOG"], "a") as log:
        log.write(json.dumps(fields) + "\\n")


def test_sim(kcont_sim):
    assert kcont.current_runtime() is kcont_sim
    assert kcont_sim.reraise and kcont_sim.trace == []
    ran = []
    kc = kcont.Continuation(kcont.wq_softclock, lambda arg, kc: ran.append(kcont_sim.ticks))
    kc.schedule(3_600_000)
    kcont_sim.advance(3_600_000)
    note(fixture="kcont_sim", ran=ran, events=len(kcont_sim.trace))


@pytest.mark.kcont_sim(ncpu=3, hz=1000, seed=5, autojump=True)
def test_sim_marker(kcont_sim, kcont_sim_factory):
    other = kcont_sim_factory(ncpu=1)
    assert kcont.current_runtime() is other
    note(fixture="marker", ncpu=len(kcont_sim.cpus), hz=kcont_sim.hz, seed=kcont_sim.seed,
         autojump=kcont_sim.autojump, other=len(other.cpus))


def test_sim_reraises(kcont_sim):
    kc = kcont.Continuation(kcont.wq_softnet, lambda arg, kc: 1 / 0)
    kc.schedule()
    with pytest.raises(ZeroDivisionError):
        kcont_sim.run_until_idle()


@pytest.mark.kcont_runtime(ncpu=1)
def test_runtime(kcont_runtime):
    assert kcont.current_runtime() is kcont_runtime
    done = threading.Event()
    kc = kcont.Continuation(kcont.wq_prilow, lambda arg, kc: done.set())
    kc.schedule(2)
    assert done.wait(10)
    kcont.Continuation(kcont.wq_softclock, lambda arg, kc: None).schedule(100_000)  # left armed: fine
    note(fixture="kcont_runtime", name=kcont_runtime.name, ncpu=len(kcont_runtime.cpus))
"""

BREAKS_THE_RULES = """
import threading

import pytest

import kcont


def test_a_continuation_raises(kcont_runtime):
    done = threading.Event()

    def fails(arg, kc):
        done.set()
        raise ValueError("boom in a continuation")

    kcont.Continuation(kcont.wq_prilow, fails).schedule()
    assert done.wait(10)


@pytest.mark.kcont_runtime(idle_timeout=0.2)
def test_left_busy(kcont_runtime):
    release = threading.Event()
    kcont.Continuation(kcont.wq_prilow, lambda arg, kc: release.wait(1.0)).schedule()
    kcont.Continuation(kcont.wq_prilow, lambda arg, kc: None).schedule()
"""


def _run_pytest(project: Path, log: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KCONT_PLUGIN_LOG=str(log))
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_PLUGINS", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(project)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )


def _project(tmp_path: Path, source: str) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_uses_kcont.py").write_text(textwrap.dedent(source))
    return project


def test_the_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    found = [e.value for e in entry_points(group="pytest11") if e.name == "kcont"]
    assert found == ["kcont.testing"], "reinstall kcont (pip install -e .) to register the entry point"


def test_importing_kcont_does_not_import_pytest() -> None:
    code = "import sys, kcont; print('pytest' in sys.modules, 'kcont.testing' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_a_project_without_conftest_gets_the_fixtures(tmp_path: Path) -> None:
    project = _project(tmp_path, USES_THE_FIXTURES)
    assert not list(project.glob("conftest.py"))
    log = tmp_path / "log.jsonl"
    result = _run_pytest(project, log)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout, result.stdout
    notes = {n["fixture"]: n for n in map(json.loads, log.read_text().splitlines())}
    assert notes["kcont_sim"]["ran"] == [3_600_000]
    assert notes["kcont_sim"]["events"] >= 2  # schedule and expire (trace on)
    assert notes["marker"] == {
        "fixture": "marker",
        "ncpu": 3,
        "hz": 1000,
        "seed": 5,
        "autojump": True,
        "other": 1,
    }
    assert notes["kcont_runtime"]["ncpu"] == 1


def test_kcont_runtime_fails_a_test_whose_continuation_raised_or_that_left_it_busy(tmp_path: Path) -> None:
    project = _project(tmp_path, BREAKS_THE_RULES)
    result = _run_pytest(project, tmp_path / "log.jsonl")
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "2 passed, 2 errors" in out, out
    assert "ERROR at teardown of test_a_continuation_raises" in out, out
    assert "ERROR at teardown of test_left_busy" in out, out
    assert "ValueError('boom in a continuation')" in out, out
    assert "still busy after the test" in out, out


def test_kcont_is_importable_here_from_this_checkout() -> None:
    """The subprocesses above use this interpreter's kcont: the one under test."""
    assert Path(kcont.__file__).resolve().parent == Path(__file__).resolve().parent.parent / "src" / "kcont"

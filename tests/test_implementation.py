"""Which core runs: the compiled one (the C extension built at install time)
or the pure-Python one, how a process chooses, and how it says so.

The compiled core's types must expose exactly the fields of the pure
classes they replace, since the pure code of every slow path runs unchanged
on them.  CI runs the suite on both cores and sets
``KCONT_EXPECT_IMPLEMENTATION`` to the core each run must be on, so that a
failed build cannot pass unnoticed as a second run on the pure core.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import kcont
from kcont._cli import core_description
from kcont._core import layout

SRC = Path(__file__).resolve().parents[1] / "src"


def _run_python(*args: str, **env: str | None) -> str:
    """Run ``python *args`` on this tree; ``env`` sets (or, with None,
    removes) environment variables.  Returns its standard output."""
    environ = dict(os.environ, PYTHONPATH=str(SRC))
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, env=environ, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


SHOW_CORE = (
    "-c",
    "import kcont, kcont._core.layout as l; print(kcont.implementation, repr(l.FALLBACK_REASON))",
)


def _member_names(compiled: type) -> set[str]:
    """The fields a compiled type exposes: its own member and get-set descriptors."""
    descriptors = (types.MemberDescriptorType, types.GetSetDescriptorType)
    return {name for name, value in vars(compiled).items() if isinstance(value, descriptors)} - {
        "__weakref__",
        "__dict__",
    }


@pytest.mark.parametrize("name", sorted(layout.PURE_FIELDS))
def test_a_compiled_type_exposes_exactly_the_fields_of_its_pure_class(name: str) -> None:
    module = layout.compiled_module()
    if module is None:
        pytest.skip(f"the pure-Python core runs: {layout.FALLBACK_REASON}")
    pure = layout.PURE_FIELDS[name]
    compiled = getattr(module, name)
    assert getattr(layout, name) is compiled
    assert _member_names(compiled) == set(pure.__slots__) - {"__weakref__"}
    # A static C type has no __weakref__ descriptor: its weak reference
    # support is its weaklist offset.
    assert (compiled.__weakrefoffset__ != 0) == ("__weakref__" in pure.__slots__)
    assert compiled.__dictoffset__ == 0, f"{name} has a __dict__, its pure class has none"


def test_the_pure_core_uses_the_pure_classes() -> None:
    if layout.COMPILED:
        pytest.skip("the compiled core runs")
    for name, pure in layout.PURE_FIELDS.items():
        assert getattr(layout, name) is pure
    assert kcont.implementation == "python" and layout.FALLBACK_REASON


def test_the_implementation_is_one_of_two_and_agrees_with_the_layout() -> None:
    assert kcont.implementation in ("compiled", "python")
    assert (kcont.implementation == "compiled") == layout.COMPILED == (layout.compiled_module() is not None)
    assert (layout.FALLBACK_REASON == "") == layout.COMPILED


def test_kcont_pure_python_forces_the_pure_core_and_says_why() -> None:
    assert _run_python(*SHOW_CORE, KCONT_PURE_PYTHON="1") == "python 'KCONT_PURE_PYTHON is set'"


def test_kcont_pure_python_empty_or_zero_does_not_force_the_pure_core() -> None:
    unset = _run_python(*SHOW_CORE, KCONT_PURE_PYTHON=None)
    assert _run_python(*SHOW_CORE, KCONT_PURE_PYTHON="0") == unset
    assert _run_python(*SHOW_CORE, KCONT_PURE_PYTHON="") == unset
    assert "KCONT_PURE_PYTHON" not in unset


def test_the_core_is_the_one_ci_expects() -> None:
    """CI sets KCONT_EXPECT_IMPLEMENTATION for each run of the suite."""
    expected = os.environ.get("KCONT_EXPECT_IMPLEMENTATION")
    if not expected:
        pytest.skip("KCONT_EXPECT_IMPLEMENTATION is not set")
    assert expected in ("compiled", "python"), f"KCONT_EXPECT_IMPLEMENTATION={expected!r}"
    assert kcont.implementation == expected, f"the {core_description()} runs, not the {expected} one"


def test_version_names_the_core() -> None:
    from kcont.__main__ import version

    described = "compiled core" if layout.COMPILED else f"pure-Python core: {layout.FALLBACK_REASON}"
    assert _run_python("-m", "kcont", "--version") == f"kcont {version()} ({described})"
    forced = _run_python("-m", "kcont", "--version", KCONT_PURE_PYTHON="1")
    assert forced == f"kcont {version()} (pure-Python core: KCONT_PURE_PYTHON is set)"


@pytest.mark.pure_core_only
def test_a_pure_core_only_test_is_skipped_on_the_compiled_core() -> None:
    assert kcont.implementation == "python"

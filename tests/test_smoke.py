"""Smoke tests: the package imports, the public surface is what __all__ says,
the README example runs, the CLI answers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import kcont
import kcont.capi

ROOT = Path(__file__).resolve().parent.parent


def test_public_surface_is_exported() -> None:
    for name in kcont.__all__:
        assert hasattr(kcont, name), name
    for name in kcont.capi.__all__:
        assert getattr(kcont, name) is getattr(kcont.capi, name), name


def test_readme_example_runs() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_cli_help_lists_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kcont", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("demo", "tour"):
        assert command in out


def test_cli_tour_runs_and_traces() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kcont", "tour", "--seed", "3"], capture_output=True, text=True, check=True
    ).stdout
    assert "teardown of flow-a" in out
    assert "park" in out

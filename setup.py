"""Builds kcont's compiled core, the C extension ``kcont._core._ckcont``.

Everything else about the package is declared in pyproject.toml.  The
extension is optional: where no C compiler works, setuptools says once that
building it failed and installs the package with the pure-Python core, which
``kcont.implementation`` and ``kcont --version`` then report.
"""

from __future__ import annotations

from glob import glob

from setuptools import Extension, setup

CKCONT = "src/kcont/_core/_ckcont"

setup(
    ext_modules=[
        Extension(
            "kcont._core._ckcont",
            sources=sorted(glob(f"{CKCONT}/*.c")),
            depends=[f"{CKCONT}/ckcont.h"],
            optional=True,
        )
    ]
)

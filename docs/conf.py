"""Sphinx configuration: the API reference comes from the docstrings (autodoc,
Google style through napoleon); the pages are Markdown (MyST)."""

from __future__ import annotations

from typing import Any

import kcont

project = "kcont"
author = "The kcont authors"
copyright = "2026, The kcont authors"
release = kcont.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]

myst_heading_anchors = 3
myst_enable_extensions = ["deflist"]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Context:" says from which thread a call may be made and which locks it takes.
napoleon_custom_sections = ["Context"]

# Without network access there is no intersphinx inventory for the standard
# library: nitpicky mode (-n) would flag every reference to a builtin or a
# standard-library type in a signature.  Only those are ignored; a broken
# reference to a kcont name still fails the build.
nitpick_ignore_regex = [
    ("py:class", r"(int|str|bool|float|bytes|object|type|dict|list|tuple|set|frozenset|None|Any)"),
    ("py:class", r"(typing|collections\.abc|threading|contextvars|logging|types|errno|socket)\..*"),
    ("py:class", r"(concurrent\.futures\.|asyncio\.|os\.)?(Future|PathLike|AbstractEventLoop)"),
    ("py:class", r"(Callable|Iterator|Iterable|Mapping|Sequence|Generator|NamedTuple|Generic)"),
    ("py:(exc|class)", r"(Exception|BaseException|RuntimeError|ValueError|TypeError|OSError|TimeoutError)"),
    # The type variable of a continuation's argument (Continuation[A]).
    ("py:(class|obj)", r"kcont\.(_core\.continuation|periodic)\.A"),
    ("py:(exc|class)", r"(KeyboardInterrupt|SystemExit|OverflowError|IndexError|AttributeError)"),
]


def _hide_layout_bases(app: object, name: str, obj: object, options: object, bases: list[type]) -> None:
    """A core class's base holding its fields (kcont._core.layout) is an
    implementation detail, different per core: not shown as a base."""
    bases[:] = [b for b in bases if b.__module__ != "kcont._core.layout"]


def setup(app: Any) -> None:
    app.connect("autodoc-process-bases", _hide_layout_bases)


html_theme = "alabaster"
html_title = f"kcont {release}"

"""The documentation's examples run: each ```python block of every page of
docs/ (the tutorial, the how-to guides, the design records that have
examples), in order, in one namespace per page (as a reader types them into
one session), so that the docs cannot drift from the library."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
PAGES = sorted(page for page in DOCS.glob("*.md") if BLOCK.search(page.read_text()))


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """The page's ```python blocks with the line each starts on."""
    text = page.read_text()
    return [(text.count("\n", 0, match.start()) + 2, match.group(1)) for match in BLOCK.finditer(text)]


def test_tutorial_and_howtos_have_examples() -> None:
    names = {page.name for page in PAGES}
    assert "tutorial.md" in names
    assert any(name.startswith("howto") for name in names), "no how-to page with examples"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # files an example writes (a trace) stay out of the checkout
    namespace: dict[str, object] = {"__name__": f"docs.{page.stem}"}
    for line, block in python_blocks(page):
        # Blank lines keep the traceback's line numbers those of the page.
        code = compile("\n" * (line - 1) + block, str(page), "exec")
        exec(code, namespace)

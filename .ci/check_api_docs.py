"""Fails unless the built API reference documents every public name.

Public: kcont.__all__, kcont.capi.__all__ and the __all__ of each
kcont.compat module.  A name that kcont re-exports from kcont.capi counts as
documented under kcont.capi.  Usage: check_api_docs.py docs/_build/html
"""

from __future__ import annotations

import sys
from pathlib import Path

from sphinx.util.inventory import InventoryFile

import kcont
import kcont.capi
import kcont.compat
import kcont.compat.callout
import kcont.compat.softint
import kcont.compat.workqueue


def main() -> int:
    html = Path(sys.argv[1])
    with open(html / "objects.inv", "rb") as stream:
        inventory = InventoryFile.load(stream, "", lambda base, uri: uri)
    documented = {name for kind, entries in inventory.items() if kind.startswith("py:") for name in entries}
    wanted = {f"kcont.{name}" for name in kcont.__all__ if name not in kcont.capi.__all__ and name != "capi"}
    wanted |= {"kcont.capi"} | {f"kcont.capi.{name}" for name in kcont.capi.__all__}
    for module in (kcont.compat, kcont.compat.callout, kcont.compat.softint, kcont.compat.workqueue):
        wanted |= {module.__name__} | {f"{module.__name__}.{name}" for name in module.__all__}
    missing = sorted(wanted - documented)
    if missing:
        print("public names missing from the API reference:", *missing, sep="\n  ")
        return 1
    print(f"API reference: all {len(wanted)} public names documented")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run kcont's benchmark suite: ``python benchmarks/run.py [--quick] [--json F] [--plot F]``.

The same code as ``python -m kcont bench``; it lives in :mod:`kcont.bench`.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from kcont.bench import main
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from kcont.bench import main

if __name__ == "__main__":
    sys.exit(main())

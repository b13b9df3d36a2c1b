"""``python -m kcont.bench``: the same command as ``python -m kcont bench``."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())

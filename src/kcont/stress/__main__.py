"""``python -m kcont.stress``: the same command as ``python -m kcont stress``."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())

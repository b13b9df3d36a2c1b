"""The partner process of a side-by-side ``kcont bench`` run (see
:mod:`kcont.bench.cores`): reads the configuration on its standard input,
runs the same benchmarks on its own core, passing the turn with the parent
for every measured round, and writes its tables and description on its
standard output, which carries nothing else.

Locking: none (the main thread).
"""

from __future__ import annotations

import json
import os
import signal
import sys


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it then closes our input
    # The protocol keeps the real standard output; anything else printed goes nowhere.
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole process
    os.dup2(devnull.fileno(), sys.stdout.fileno())

    import kcont

    from .._cli import core_description
    from .cores import PartnerSide, config_from_json
    from .driver import run_groups, run_meta

    side = PartnerSide(channel, sys.stdin)
    cfg = config_from_json(sys.stdin.readline())
    cfg.out = devnull
    cfg.turn = side.turn
    side.send(
        "hello", json.dumps({"implementation": kcont.implementation, "description": core_description()})
    )
    try:
        run_groups(cfg, lambda g: side.send("group", json.dumps(g.as_dict())))
    except SystemExit:
        raise
    except BaseException as exc:  # every failure is reported to the parent, which goes on alone
        side.send("error", f"{type(exc).__name__}: {exc}".replace("\n", " "))
        return 1
    side.send("result", json.dumps(run_meta(cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

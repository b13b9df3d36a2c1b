#!/usr/bin/env bash
# An experiment, not a supported build: compile kcont's core with mypyc (part
# of mypy, in the dev extra) into a scratch folder, then time the immediate and
# re-arm paths with the pure-Python and the compiled core side by side
# (docs/performance.md, "What would meet them").
# Usage: benchmarks/mypyc_experiment.sh   (needs a C compiler and the Python headers)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r "$root/src/kcont" "$scratch/"
(cd "$scratch" && "$(dirname "$py")/mypyc" kcont/_core/*.py kcont/sim.py kcont/threaded.py >/dev/null)
echo "pure Python core:"
"$py" "$root/benchmarks/cpu_paths.py" "$root/src"
echo "mypyc-compiled core:"
PYTHONPATH="$scratch" "$py" "$root/benchmarks/cpu_paths.py" "$scratch"

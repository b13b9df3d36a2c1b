#!/usr/bin/env bash
# Instructions per operation of one MODE of benchmarks/callgrind_ops.py, under
# valgrind's callgrind (repeatable where wall-clock time is not).
# Usage: benchmarks/callgrind.sh MODE [N]   e.g. benchmarks/callgrind.sh rearm 5000
# The core counted is the one the Python runs: the compiled one when built;
# KCONT_PURE_PYTHON=1 benchmarks/callgrind.sh capi-depth1 counts the pure one.
# Modes: python benchmarks/callgrind_ops.py --modes
set -euo pipefail
mode=$1
n=${2:-5000}
py=${PYTHON:-python3}
here=$(dirname "$0")
refs() {
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        "$py" "$here/callgrind_ops.py" "$mode" "$1" 2>&1 | grep -o "refs: *[0-9,]*" | tr -d ',' | awk '{print $2}'
}
base=$(refs 0)
full=$(refs "$n")
core=$("$py" -c 'import kcont; print(kcont.implementation)')
echo "$mode ($core core): $(( (full - base) / n )) instructions per operation"

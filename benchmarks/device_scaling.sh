#!/usr/bin/env bash
# The whole scaling measurement in one short run, for a machine of 16 cores (or more):
# benchmarks.cpu_scaling at 2, 4, 8 and 16 workers with 400 CPU tasks of ~50 ms (speed-up over
# serial, worker utilisation, the machine's ceiling) and the no-op throughput at each count
# (create_many and a create loop), through run_all so that the JSON carries the machine facts
# and the targets.  About 4 minutes on 16 cores; a watchdog stops it at LIMIT_S (330 s).
#
#   bash benchmarks/device_scaling.sh            # from anywhere; OUT=dir to keep the files
#
# Writes $OUT/scaling.json (run_all's document) and $OUT/scaling.md (its summary) when OUT is
# set, else benchmarks/results/scaling-<host>.json and .md.  Sizes: WORKERS, TASKS, ROUNDS,
# NOOP_TASKS, LIMIT_S.
#
# No network is assumed.  The script needs a Python (3.11 or newer) that can import the
# engine's dependencies (attrs, cloudpickle, psutil, cronsim); the engine itself runs from this
# working tree through PYTHONPATH, and cpu_scaling needs none of the bench extra's peers.  It
# tries, in order: $BENCH_PYTHON, the tree's .venv (when it was carried and its interpreter
# exists there), a venv left in /tmp by an earlier run, python3; then it installs the wheels
# of a .whl folder beside the tree (WHEELS=dir to point elsewhere) into /tmp; then, as a last
# resort, a venv in /tmp with `pip install -e .[bench]` (which needs an index).  Without any
# of these it says what is missing and exits with status 3.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORKERS=${WORKERS:-2,4,8,16}
TASKS=${TASKS:-400}
ROUNDS=${ROUNDS:-3}
NOOP_TASKS=${NOOP_TASKS:-2000}
LIMIT_S=${LIMIT_S:-330}
WHEELS=${WHEELS:-$ROOT/.whl}
VENV=/tmp/taskengine-bench-venv
SITE=/tmp/taskengine-bench-site
NEEDS="import sys; assert sys.version_info >= (3, 11); import attrs, cloudpickle, psutil, cronsim"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

find_python() {
    local py
    for py in "${BENCH_PYTHON:-}" "$ROOT/.venv/bin/python" "$VENV/bin/python" python3; do
        [ -n "$py" ] || continue
        if "$py" -c "$NEEDS" 2>/dev/null; then
            echo "$py"
            return 0
        fi
    done
    return 1
}

PY=$(find_python) || PY=""
if [ -z "$PY" ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "installing the wheels of $WHEELS into $SITE" >&2
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEELS"/*.whl
    export PYTHONPATH="$SITE:$PYTHONPATH"
    PY=$(find_python) || PY=""
fi
if [ -z "$PY" ]; then
    echo "no Python here imports attrs, cloudpickle, psutil and cronsim; trying a venv in $VENV" >&2
    if python3 -m venv "$VENV" \
        && timeout 120 "$VENV/bin/pip" install -q -e "$ROOT[bench]" >&2; then
        PY=$(find_python) || PY=""
    fi
fi
if [ -z "$PY" ]; then
    cat >&2 <<EOF
device_scaling.sh: no usable Python.  It needs Python >= 3.11 with attrs, cloudpickle, psutil
and cronsim importable.  Without network access, carry their wheels in a .whl folder at the
repository root (pip download --no-deps --only-binary=:all: -d .whl cronsim attrs ... for the
target's Python version), or set BENCH_PYTHON to an interpreter that has them.
EOF
    exit 3
fi
echo "python: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])')), $(nproc) cores" >&2

DEST=${OUT:-$ROOT/benchmarks/results}
STEM=scaling
[ -n "${OUT:-}" ] || STEM="scaling-$(hostname -s)"
WORK=$(mktemp -d /tmp/taskengine-scaling.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
began=$(date +%s)
status=0
timeout "$LIMIT_S" "$PY" -m benchmarks.run_all --only cpu_scaling --out "$WORK" \
    --cpu-workers "$WORKERS" --cpu-tasks "$TASKS" --cpu-rounds "$ROUNDS" \
    --cpu-noop-tasks "$NOOP_TASKS" >"$WORK/stdout.json" || status=$?
echo "run_all took $(($(date +%s) - began)) s, exit status $status" >&2
if [ "$status" = 124 ]; then
    echo "device_scaling.sh: stopped after LIMIT_S=$LIMIT_S s; try ROUNDS=2 or TASKS=200" >&2
fi
mkdir -p "$DEST"
if [ -f "$WORK/latest.json" ]; then
    cp "$WORK/latest.json" "$DEST/$STEM.json"
    cp "$WORK/summary.md" "$DEST/$STEM.md"
    echo "wrote $DEST/$STEM.json and $DEST/$STEM.md" >&2
    cat "$WORK/summary.md"
fi
exit "$status"

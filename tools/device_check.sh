#!/usr/bin/env bash
# The GPU device check (docs/development.md, "Device check (GPU)"); `make device-check` runs it.
#
#   bash tools/device_check.sh            here: download the wheels a lent GPU machine lacks into
#                                         .whl/, check the preparation, print the one command to
#                                         run there; with no GPU here it says so and exits 0 (with
#                                         one, it runs the check here, in this venv)
#   bash tools/device_check.sh --check    the same without downloading (WHEELS=DIR: another folder)
#   (PYTHON, SUITE, BUDGET_S, OUT: the interpreter, suite, seconds and output folder of --remote)
#   bash tools/device_check.sh --remote   on the lent machine: install the wheels into /tmp/site
#                                         (no registry), then CUDA tests, suites/gpu.yaml, report,
#                                         one archive in $OUT, in about 6 minutes
#   bash tools/device_check.sh --rehearse here, before a lease: the machine's Python 3.12 and
#                                         package versions in a venv (REHEARSAL_VENV), the wheels
#                                         installed as --remote does, the whole test suite on the
#                                         CPU (about 5 minutes to install, 20 to test)
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
MODE=${1:-prepare}
WHEELS=${WHEELS:-.whl}
BUDGET_S=${BUDGET_S:-360}
VENV_PY=.venv/bin/python
HERE_PY=$([ -x "$VENV_PY" ] && echo "$VENV_PY" || command -v python3)

gpu_here() {  # an NVIDIA GPU that this machine's torch sees (nvidia-smi first: no torch import)
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 &&
        "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
}

install() {  # $1: the python that has torch; $2: the log. The wheels into /tmp/site
    local py=$1 log=$2 full
    ls "$WHEELS"/*.whl >/dev/null 2>&1 || {
        echo "device-check: FAILED: no wheels in $WHEELS: name .whl in the run's carry" \
             "(make device-check fills it)" | tee -a "$log"
        return 1; }
    echo "device-check: installing $(ls "$WHEELS"/*.whl | wc -l) wheels into /tmp/site"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$WHEELS"/*.whl 2>&1 | tee -a "$log" || {
        echo "device-check: FAILED: the wheels did not install" | tee -a "$log"
        return 1; }
    # modelopt itself from this tree, against the machine's own torch; a `modelopt` command
    # and a `python` beside it, as an installed venv has them, for the tests and examples
    # that start one (with any PATH: the interpreter by its full path)
    full=$("$py" -c 'import sys; print(sys.executable)')
    mkdir -p /tmp/site/bin
    printf '#!/bin/sh\nPYTHONPATH="/tmp/site:%s${PYTHONPATH:+:$PYTHONPATH}" exec %s "$@"\n' \
        "$PWD" "$full" >/tmp/site/bin/python
    printf '#!/bin/sh\nexec /tmp/site/bin/python -m modelopt "$@"\n' >/tmp/site/bin/modelopt
    chmod +x /tmp/site/bin/python /tmp/site/bin/modelopt
    ln -sf python /tmp/site/bin/python3  # `python3` is this one too, as on the lent machine
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/site/bin:$PATH"
}

remote() {  # $1: the python that has torch; $2: install the wheels first (yes/no)
    local py=$1
    export OUT=${OUT:-/tmp/device_check_out}
    mkdir -p "$OUT"
    command -v nvidia-smi >/dev/null && nvidia-smi 2>&1 | tee -a "$OUT/device_check.log"
    if [ "$2" = yes ]; then
        install "$py" "$OUT/device_check.log" || return 1
    fi
    "$py" tools/device_check.py remote --out "$OUT" --suite "${SUITE:-suites/gpu.yaml}" \
        --deadline $((START + BUDGET_S))
}

rehearse() {  # the lent machine's software on this CPU: its Python and versions, the wheels
    local venv=${REHEARSAL_VENV:-/tmp/modelopt-device-venv} py312="" c
    for c in ${PY312:-} python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
        # one that runs (a pyenv shim of a version not selected is found, and fails)
        "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null &&
            { py312=$c; break; }
    done
    [ -n "$py312" ] || { echo "device-check: --rehearse needs a python3.12 (PY312=...)" >&2
                         return 2; }
    if [ ! -x "$venv/bin/python" ]; then
        "$py312" -m venv "$venv" || return 1
        # the machine's own versions where KINDS.md gives them, the rest as the registry has
        # them; then without what the wheels bring and the machine lacks (pydantic)
        "$venv/bin/python" -m pip install -q $("$HERE_PY" tools/device_check.py stack) || return 1
        "$venv/bin/python" -m pip uninstall -q -y $("$HERE_PY" tools/device_check.py lacks) \
            2>/dev/null || true
    fi
    install "$venv/bin/python" /dev/null || return 1
    echo "device-check: rehearsal: the whole test suite on $("$venv/bin/python" -c 'import sys, \
torch; print("Python", sys.version.split()[0], "torch", torch.__version__)') (CUDA tests skip here)"
    "$venv/bin/python" -m pytest -q -rfs -p no:cacheprovider tests
}

case "$MODE" in
    --remote)
        remote "${PYTHON:-python3}" yes ;;
    --rehearse)
        rehearse ;;
    prepare | --check)
        if [ "$MODE" = prepare ]; then
            "$HERE_PY" tools/device_check.py download --wheels "$WHEELS" || exit 1
        else
            "$HERE_PY" tools/device_check.py check --wheels "$WHEELS" || exit 1
        fi
        if gpu_here "$HERE_PY"; then
            if [ "$MODE" = prepare ]; then
                echo "device-check: a GPU is here: running the check in this venv"
                remote "$HERE_PY" no
            else
                echo "device-check: a GPU is here; 'make device-check' runs the check on it"
            fi
        else
            echo "device-check: no GPU here (no NVIDIA GPU that torch sees): nothing to run on" \
                 "this machine; run the command above on a lent GPU machine"
        fi ;;
    *)
        echo "usage: $0 [--check | --remote | --rehearse]" >&2
        exit 2 ;;
esac

#!/usr/bin/env bash
# The GPU check, in one command from the repository root of a GPU machine:
#
#   bash benchmarks/device_check.sh [SECONDS]        # default 480: within 8 minutes
#
# It needs the repository and, for every package the machine lacks, a folder .whl/ of
# wheels, sslrun's own among them (`pip wheel --no-deps -w .whl .`; pydantic and optuna
# with their dependencies on the usual GPU image). They are installed with
# `pip install --target` and PYTHONPATH, not into a virtual environment: on such images
# python3 is often itself a virtual environment holding torch, and a venv made from it
# does not see torch. No stage stops the next; each writes its outcome as it ends to
# $OUT (default /tmp/sslrun-device): device.log (every stage's output and exit code)
# and results.md (docs/results.md with the sections the GPU stages wrote).
#
# Stages: install; the GPU and torch; one step eager and as a CUDA graph
# (benchmarks/gpu_throughput.py steps); the CUDA tests (pytest -m cuda); many runs on
# one GPU, with and without CUDA MPS (gpu_throughput.py runs). With
# SSLRUN_SEARCH_SECONDS set, the MNIST-20 studies of benchmarks/mnist20_search.py run
# for that long between the step timing and the tests, SSLRUN_GPU_RUNS runs each at a
# time (default 12), and their small files are packed into $OUT/tunes.tgz.
set -u
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/sslrun-device}
mkdir -p "$out"
log="$out/device.log"
budget=${1:-480}
start=$(date +%s)

left() { echo $((budget - ($(date +%s) - start))); }

stage() { # stage NAME SECONDS COMMAND...: run it within its time and the budget; go on
    local name=$1 limit=$2
    shift 2
    local available
    available=$(left)
    ((limit > available)) && limit=$available
    if ((limit < 10)); then
        echo "== $name: skipped, no time left" >>"$log"
        return 0
    fi
    echo "== $name: $(date +%T), up to ${limit} s" >>"$log"
    timeout -s INT -k 30 "$limit" "$@" >>"$log" 2>&1
    echo "== $name: exit $?" >>"$log"
    cp docs/results.md "$out/results.md" 2>/dev/null
    return 0
}

site=${SSLRUN_SITE:-/tmp/sslrun-site}
stage install 120 python3 -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target "$site" .whl/*.whl
export PYTHONPATH="$site" PYTHONUNBUFFERED=1 SSLRUN_DATA_DIR="$PWD/data"
stage gpu 60 python3 -c "import torch, ssl_core, optuna, pydantic; \
print(torch.__version__, torch.cuda.get_device_name(0), optuna.__version__)"
stage steps 120 python3 benchmarks/gpu_throughput.py steps --rounds 1 --steps 150 --compare 30

if [ -n "${SSLRUN_SEARCH_SECONDS:-}" ]; then
    runs=${SSLRUN_GPU_RUNS:-12}
    mps=()
    if python3 -c "from ssl_plugins.launchers.local import start_mps, stop_mps; \
stop_mps(start_mps())" >>"$log" 2>&1; then
        mps=(--mps)
        echo "== CUDA MPS works here" >>"$log"
    fi
    seconds=$SSLRUN_SEARCH_SECONDS
    new_trials=$((seconds * 2 / 3))
    pids=()
    for method in fat vat; do
        stage "search-$method" "$seconds" python3 benchmarks/mnist20_search.py search "$method" \
            --trials 400 --gpu-runs "$runs" "${mps[@]}" --timeout "$new_trials" &
        pids+=($!)
    done
    wait "${pids[@]}"
    for method in fat vat; do
        stage "report-$method" 60 python3 -m ssl_core tune report "tunes/mnist20-$method"
        stage "keep-$method" 60 python3 benchmarks/mnist20_search.py keep "$method"
    done
    tar -czf "$out/tunes.tgz" docs/results/tune 2>>"$log"
fi

stage cuda-tests 150 python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py
stage runs 240 python3 benchmarks/gpu_throughput.py runs --counts 1 4 12 24 --iterations 600 --mps
echo "== done after $(($(date +%s) - start)) s" >>"$log"

#!/usr/bin/env bash
# The GPU check, in one command from the repository root (under 8 minutes on one GPU):
#
#   bash benchmarks/device_check.sh
#
# 1. the CUDA-marked tests (tests/test_cuda.py: training in fp32 and bf16, and steps
#    that raise on any host synchronisation, torch.cuda.set_sync_debug_mode("error"));
# 2. step time in fp32 and bf16 on CUDA (docs/results.md, precision_timing_cuda);
# 3. FAT and VAT on MNIST-100 in fp32 and bf16 at equal steps on CUDA, a short budget
#    (precision_accuracy_cuda).
#
# It installs sslrun into a virtual environment that sees the machine's own packages
# (torch included) and needs no network: wheels of packages the machine lacks
# (pydantic on the usual GPU image) are taken from .whl/ when that folder exists.
# Results land in docs/results.md and, copied, in $OUT when that is set.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${SSLRUN_DEVICE_VENV:-/tmp/sslrun-device-venv}
python3 -m venv --system-site-packages "$venv"
if [ -d .whl ]; then
    "$venv/bin/pip" install -q --no-index --no-deps .whl/*.whl
fi
"$venv/bin/pip" install -q --no-index --no-deps --no-build-isolation -e .
python="$venv/bin/python"
"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__)"
export PYTHONUNBUFFERED=1
"$python" -m pytest -q -m cuda tests/test_cuda.py
"$python" benchmarks/precision.py --device cuda --parts timing --rounds 3 --timing-steps 50 --threads 1
"$python" benchmarks/precision.py --device cuda --parts accuracy --seeds 1 2 3 --epochs 3 --jobs 3
if [ -n "${OUT:-}" ]; then
    cp docs/results.md "$OUT/results.md"
fi

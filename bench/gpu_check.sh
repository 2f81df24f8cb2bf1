#!/usr/bin/env bash
# GPU check of the CUDA kernels, on a fresh GPU machine holding only this checkout (target: under 5 minutes):
#     bash bench/gpu_check.sh
# 1. a CUDA build of torch 2.14.1 (pip-installed unless one is already importable) and the test dependencies;
# 2. the extension built in place with its CUDA kernels (sm_90 only, for speed; TORCH_CUDA_ARCH_LIST overrides);
# 3. the CUDA tests against the pure-PyTorch reference (`pytest tests -k cuda`);
# 4. bench/dwconv_cuda.py: our kernel vs F.conv2d(groups=C) on the sliced weight, ratios > 1 = ours faster;
# 5. bench/latency_accuracy.py on cuda:0: build a GPU latency table (CUDA events) at batch 1 and 4 and
#    validate it on 100 random subnets (target: >= 95% within 10%, Kendall tau >= 0.9).
# PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
SECONDS=0
stamp() { echo "== gpu_check: $1 (${SECONDS} s)"; }

if ! "$py" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.14.1") and torch.version.cuda else 1)' \
    2>/dev/null; then
  "$py" -m pip install -q torch==2.14.1
fi
# Build and test dependencies (the project's own pins are skipped: its pyproject pins the CPU torch 2.13.0).
"$py" -m pip install -q setuptools wheel ninja numpy tqdm matplotlib thop pytest hypothesis pytest-benchmark \
  || echo "gpu_check: pip could not install every dependency; going on with what is there"
"$py" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device visible"; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'
stamp "torch ready"

if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME=/usr/local/cuda
fi
rm -f supernet/_C*.so  # a CPU build left here would otherwise be loaded
ONESHOT_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}" \
  "$py" setup.py -q build_ext --inplace
"$py" -c 'import supernet.kernels as k; assert k._DWCONV_CUDA, "extension built without its CUDA kernels"'
stamp "extension built"

status=0
"$py" -m pytest tests -k cuda -q -p no:cacheprovider || status=$?
stamp "CUDA tests done (exit ${status})"

"$py" bench/dwconv_cuda.py
stamp "bench done"

"$py" bench/latency_accuracy.py --device cuda:0 --batch-sizes 1,4 --out runs/bench-latency-gpu || status=$?
stamp "latency table validated (exit ${status})"
exit "$status"

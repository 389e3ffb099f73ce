#!/usr/bin/env bash
# On a GPU host with torch/onnx/onnxruntime but no TVM and no network: install what
# .ci/pack-tvm-for-gpu-host.sh packed, then the gpu tests and the two GPU benches. Logs under
# ${OUT:-/tmp/anychip-gpu}. This is how the 2026-11-23 H100 figures in README.md were taken.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/anychip-gpu}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/anychip-site
mkdir -p /tmp/anychip-site
tar -xJf .dev/tvmrest.tar.xz -C /tmp/anychip-site
xz -dc .dev/libtvm_compiler.so.xz > /tmp/anychip-site/tvm/lib/libtvm_compiler.so
python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/anychip-site .dev/wheels/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1
export PATH="$(dirname "$(python3 -c 'import sys; print(sys.executable)')"):$PATH"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -m pytest -m runs_on tests/backends/cuda -n "${NPROC:-10}" -p no:cacheprovider -rA -q \
  > "$OUT/pytest.log" 2>&1; echo "pytest rc=$?"
grep -E "PASSED|FAILED|ERROR|passed|failed" "$OUT/pytest.log" | tail -30
for m in resnet50 bert; do
  anychip bench "zoo:$m" --target nvidia-h100 --against ort,torch | tee "$OUT/bench_$m.txt"
done

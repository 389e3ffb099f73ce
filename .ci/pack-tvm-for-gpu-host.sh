#!/usr/bin/env bash
# Pack the pinned TVM wheels (and the few pure-Python deps a bare GPU image lacks) into .dev/ so
# that a GPU host without network access can run the gpu tests (.ci/gpu-host-run.sh).
# The apache-tvm wheel (100 MB) is over a 64 MiB transfer limit we met: libtvm_compiler.so is
# recompressed with xz's x86 filter (58 MB, ~4 min on 2 cores) and the rest goes in a tarball.
# Usage: bash .ci/pack-tvm-for-gpu-host.sh [python-version, default 3.12]
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-3.12}"; tag="cp${py/./}"
tvm=$(grep -o 'apache-tvm==[^"]*' pyproject.toml); ffi=$(grep -o 'apache-tvm-ffi==[^"]*' pyproject.toml)
mkdir -p .dev/wheels; grep -qx '/.dev/' .git/info/exclude 2>/dev/null || echo '/.dev/' >> .git/info/exclude
dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" \
         --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
         --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 -d "$1" "${@:2}"; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
dl "$tmp" "$tvm"
dl .dev/wheels "$ffi" jsonschema jsonschema-specifications referencing rpds-py onnx2torch
(cd "$tmp" && unzip -q apache_tvm-*.whl && rm apache_tvm-*.whl)
xz -T1 --x86 --lzma2=preset=9e,dict=256MiB -c "$tmp/tvm/lib/libtvm_compiler.so" > .dev/libtvm_compiler.so.xz
(cd "$tmp" && tar --exclude=tvm/lib/libtvm_compiler.so --exclude=tvm/3rdparty/cutlass -cf - . ) \
  | xz -T2 -9 > .dev/tvmrest.tar.xz
du -ch .dev/* .dev/wheels/* | tail -1

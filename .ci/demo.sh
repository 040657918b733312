#!/usr/bin/env bash
# Quick start: installs what is missing, builds and runs the demo.
#   bash .ci/demo.sh [demo options...]   (--help lists them)
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/deps.sh libsqlite3-dev
cmake -S . -B build >/dev/null
cmake --build build -j "$(nproc)" --target uvt-demo >/dev/null
exec ./build/examples/uvt-demo "$@"

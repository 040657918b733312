#!/usr/bin/env bash
# Quick start: installs what is missing, builds, runs the whole test suite.
#   bash .ci/test.sh [build-dir] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/deps.sh libsqlite3-dev
build=${1:-build}
shift || true
cmake -S . -B "$build" -DUVT_WERROR=ON "$@" >/dev/null
cmake --build "$build" -j "$(nproc)"
ctest --test-dir "$build" --output-on-failure -j 2

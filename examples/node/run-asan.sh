#!/usr/bin/env bash
# Builds the addon and the library's sources with AddressSanitizer+UBSan
# (Debug: the library's assertions are live) and runs the JS tests in node.
#
#   bash examples/node/run-asan.sh                      # the whole test.js
#   UVT_NODE_WORKER_CYCLES=150 bash examples/node/run-asan.sh --test-name-pattern=worker_threads
#
# node itself is not instrumented, so the ASan runtime must be the first
# library in the process: it is preloaded (LD_PRELOAD), the one of the
# compiler that built the addon (CC, default gcc: `gcc -print-file-name=libasan.so`).
# Leak detection is off: node does not free everything at exit, by design.
# Exits 77 (skip) when node, node's headers or libasan are missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=${UVT_NODE_ASAN_BUILD:-$here/build-asan}
cc=${CC:-gcc}
node=${NODE:-node}

command -v "$node" >/dev/null || { echo "run-asan.sh: skipped: no node"; exit 77; }
libasan=$("$cc" -print-file-name=libasan.so)
if [ ! -e "$libasan" ]; then
  echo "run-asan.sh: skipped: $cc has no libasan.so"
  exit 77
fi

cmake -S "$here" -B "$build" -DUVT_NODE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug \
      -DCMAKE_C_COMPILER="$cc" >/dev/null
cmake --build "$build" -j2 >/dev/null
addon=$build/uvthreads.node
if [ ! -e "$addon" ]; then
  echo "run-asan.sh: skipped: the addon was not built (node's headers missing?)"
  exit 77
fi
if ! readelf -d "$addon" | grep -q 'libasan'; then
  echo "run-asan.sh: $addon is not linked with ASan" >&2
  exit 1
fi

export LD_PRELOAD=$libasan
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export UVT_NODE_ADDON=$addon
echo "run-asan.sh: $addon with LD_PRELOAD=$libasan ASAN_OPTIONS=$ASAN_OPTIONS"
# Loading fails ("ASan runtime does not come first") unless the preload worked.
"$node" -e 'require(process.env.UVT_NODE_ADDON); console.log("run-asan.sh: addon loaded under ASan")'
exec "$node" --test "$@" "$here/test.js"

#!/usr/bin/env bash
# Builds an outside program against uvthreads every way a user can: an
# installed copy with pkg-config alone, with find_package (shared and
# static), and the source tree with add_subdirectory. Each one runs a job.
#   check.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
pc=$(dirname "$(find "$tmp/prefix" -name uvthreads.pc | head -n1)")
libdir=$(dirname "$pc")

echo "-- pkg-config"
PKG_CONFIG_PATH="$pc" cc -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror \
  "$src/test/consumer/consumer.c" -o "$tmp/consumer-pc" \
  $(PKG_CONFIG_PATH="$pc" pkg-config --cflags --libs uvthreads) -Wl,-rpath,"$libdir"
"$tmp/consumer-pc"

echo "-- pkg-config, static"
PKG_CONFIG_PATH="$pc" cc -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror \
  "$src/test/consumer/consumer.c" -o "$tmp/consumer-pc-static" \
  $(PKG_CONFIG_PATH="$pc" pkg-config --cflags uvthreads) "$libdir/libuvthreads.a" \
  $(pkg-config --libs libuv) -lpthread
! ldd "$tmp/consumer-pc-static" | grep -q libuvthreads
"$tmp/consumer-pc-static"

for kind in shared static; do
  echo "-- find_package, $kind"
  cmake -S "$src/test/consumer" -B "$tmp/cmake-$kind" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
    -DUSE_STATIC=$([ $kind = static ] && echo ON || echo OFF) -DCMAKE_BUILD_RPATH="$libdir" >/dev/null
  cmake --build "$tmp/cmake-$kind" >/dev/null
  "$tmp/cmake-$kind/consumer"
done

echo "-- add_subdirectory"
cmake -S "$src/test/consumer" -B "$tmp/subdir" -DUVT_SOURCE_DIR="$src" >/dev/null
cmake --build "$tmp/subdir" >/dev/null
"$tmp/subdir/consumer"

#!/usr/bin/env bash
# Installs the built library into a temporary prefix and builds an outside
# program against it twice: with pkg-config alone, and with find_package.
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

echo "-- find_package"
cmake -S "$src/test/consumer" -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
  -DCMAKE_BUILD_RPATH="$libdir" >/dev/null
cmake --build "$tmp/cmake" >/dev/null
"$tmp/cmake/consumer"

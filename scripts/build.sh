#!/usr/bin/env bash
# The one build recoveryd has: CI (scripts/test.sh), the demo (scripts/demo.sh)
# and the container image (Dockerfile) all call it.
# usage: scripts/build.sh BUILD_DIR BUILD_TYPE [extra cmake -D options...]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?build directory}
type=${2:?build type (Debug, Release, RelWithDebInfo)}
shift 2
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"

#!/usr/bin/env bash
# Set up and run every test (unit, integration, end-to-end, fuzz) under
# AddressSanitizer and UndefinedBehaviorSanitizer; ends with ctest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
# The optimised build (the demo's and the image's) warns about more than the
# debug one, and -Werror makes that fatal: build it too.
bash scripts/build.sh build-release RelWithDebInfo -DRECOVERYD_TESTS=OFF >/dev/null
bash scripts/build.sh build-test Debug -DRECOVERYD_SANITIZE=ON
# The libFuzzer targets (clang), built once here; ctest's fuzz.<target>
# tests only run them (scripts/fuzz.sh --no-build, docs/fuzzing.md).
CC=clang CXX=clang++ bash scripts/build.sh build-fuzz RelWithDebInfo -DRECOVERYD_FUZZ=ON -DRECOVERYD_TESTS=OFF >/dev/null
# ctest's pg fixture runs a private PostgreSQL cluster in build-test/tests/pg
# (scripts/pg.sh) and stops it after the pg tests; if ctest is interrupted,
# it is stopped here. A start also stops what an earlier killed run left.
root=$PWD
trap 'bash "$root/scripts/pg.sh" stop "$root/build-test/tests/pg" >/dev/null 2>&1 || true' EXIT
cd build-test
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --output-on-failure -j2 --timeout 600

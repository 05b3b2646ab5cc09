#!/usr/bin/env bash
# Set up and run recoveryd on its embedded default: SQLite journal, the demo
# config and playbook, dry-run, listening on 127.0.0.1:9095.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh build-release RelWithDebInfo -DRECOVERYD_TESTS=OFF >/dev/null
exec ./build-release/recoveryd --config scripts/demo/config.lua "$@"

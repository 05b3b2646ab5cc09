#!/usr/bin/env bash
# One command for the side-by-side benchmark (bench/README.md):
#   bash bench/run.sh [--smoke] [BINARY] [compare.py options...]
# Installs wrk, nginx-light and webhook (Debian packages, with sudo when not
# root) if missing, builds build-release/recoveryd when no BINARY is given,
# and runs bench/compare.py. Results: tables on stdout, JSON in bench/out/.
set -euo pipefail
cd "$(dirname "$0")/.."

args=()
binary=""
for a in "$@"; do
  if [ -z "$binary" ] && [ "${a#-}" = "$a" ] && [ -x "$a" ] && [ ! -d "$a" ]; then
    binary=$a
  else
    args+=("$a")
  fi
done

pkgs=(wrk nginx-light webhook)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ -z "$binary" ]; then
  bash scripts/deps.sh
  bash scripts/build.sh build-release RelWithDebInfo -DRECOVERYD_TESTS=OFF
  binary=build-release/recoveryd
fi

exec python3 bench/compare.py "$binary" ${args[@]+"${args[@]}"}

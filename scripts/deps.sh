#!/usr/bin/env bash
# Install the Debian 12 packages recoveryd builds and tests with.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libmicrohttpd-dev libcjson-dev libcurl4-openssl-dev
      liblua5.4-dev lua5.4 libsqlite3-dev libpq-dev libre2-dev libcmocka-dev python3 curl jq prometheus
      # the PostgreSQL journal's tests start a private cluster (scripts/pg.sh)
      postgresql-15
      prometheus-alertmanager yamllint python3-yaml
      # fuzz/: clang, and libFuzzer's runtime (libclang_rt.fuzzer-x86_64.a),
      # which only libclang-rt-14-dev ships (clang merely recommends it).
      clang libclang-rt-14-dev
      # bench/ (the bench.smoke test): the load generator and the servers
      # recoveryd is compared with.
      wrk nginx-light webhook
      # tests/browser/: the web console in headless Chromium
      chromium chromium-driver python3-selenium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"

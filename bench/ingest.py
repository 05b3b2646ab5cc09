#!/usr/bin/env python3
"""Webhook ingest benchmark: group commit against one transaction per request.

Starts two recoveryd daemons side by side in one run, on journals in the same
directory: one with the default group commit (--journal-group-max 0) and one
with it turned off (--journal-group-max 1). Each gets the same load: CLIENTS
keep-alive connections posting distinct firing alerts (so every request
commits a new job) for at most REQUESTS requests or SECONDS seconds. The
playbook matches and finishes at once, so the runner's own journal writes are
part of the load, as in production.

Prints requests/s and latency percentiles for both and the ratio; machines
here are noisy, so only the ratio within one run means anything.

usage: bench/ingest.py BUILD/recoveryd [--clients 16] [--requests 2000] [--seconds 20]
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

PLAYBOOK = """return {
  name = "bench", match = { 'alertname="BenchAlert"' },
  retries = 0, timeout = 10, cooldown = 0, budget = { runs = 0, per = 1 },
  run = function(ctx) end,
  verify = function(ctx) return true end,
}
"""


def start(binary, workdir, name, group_max):
    d = os.path.join(workdir, name)
    os.makedirs(os.path.join(d, "playbooks"))
    with open(os.path.join(d, "playbooks", "bench.lua"), "w") as f:
        f.write(PLAYBOOK)
    log = open(os.path.join(d, "stderr.log"), "w+")
    p = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--insecure-no-auth",
                          "--playbooks", os.path.join(d, "playbooks"),
                          "--state", os.path.join(d, "journal.db"),
                          "--journal-group-max", str(group_max), "--log-level", "info",
                          "--queue-max", "1000000", "--max-jobs", "64"],
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 10
    port = None
    while time.time() < deadline and port is None:
        line = p.stderr.readline()
        if not line:
            break
        log.write(line)
        m = re.search(r'"msg":"listening".*"port":"(\d+)"', line)
        if m:
            port = int(m.group(1))
    if port is None:
        p.kill()
        sys.exit("%s: recoveryd did not start" % name)
    # Keep draining stderr so the daemon never blocks on a full pipe.
    threading.Thread(target=lambda: shutil.copyfileobj(p.stderr, log), daemon=True).start()
    return p, port


def body(i, tag):
    return json.dumps({
        "version": "4", "status": "firing", "receiver": "bench", "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "alerts": [{"status": "firing",
                    "labels": {"alertname": "BenchAlert", "instance": "%s-%d" % (tag, i)},
                    "annotations": {}, "startsAt": "2026-01-01T00:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": ""}],
    }).encode()


def load(port, tag, clients, requests, seconds):
    lat = []
    lock = threading.Lock()
    counter = [0]
    errors = [0]
    stop_at = time.time() + seconds

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                i = counter[0]
                counter[0] += 1
            if i >= requests or time.time() >= stop_at:
                break
            t0 = time.perf_counter()
            conn.request("POST", "/webhook", body(i, tag), {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            dt = time.perf_counter() - t0
            with lock:
                if r.status == 202:
                    lat.append(dt)
                else:
                    errors[0] += 1
        conn.close()

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")
    return {"ok": len(lat), "errors": errors[0], "wall": wall, "rps": len(lat) / wall,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=20)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="recoveryd-bench-")
    procs = []
    try:
        group, gport = start(a.binary, work, "group", 0)
        procs.append(group)
        single, sport = start(a.binary, work, "single", 1)
        procs.append(single)
        # Interleave two rounds each so drift on the machine hits both.
        res = {"group": [], "single": []}
        for rnd in range(2):
            res["group"].append(load(gport, "g%d" % rnd, a.clients, a.requests // 2, a.seconds / 2))
            res["single"].append(load(sport, "s%d" % rnd, a.clients, a.requests // 2, a.seconds / 2))
        out = {}
        for k, rs in res.items():
            ok = sum(r["ok"] for r in rs)
            wall = sum(r["wall"] for r in rs)
            out[k] = {"ok": ok, "errors": sum(r["errors"] for r in rs), "rps": ok / wall,
                      "p50_ms": max(r["p50_ms"] for r in rs), "p99_ms": max(r["p99_ms"] for r in rs)}
        print("mode     requests errors  req/s   p50 ms  p99 ms")
        for k in ("group", "single"):
            o = out[k]
            print("%-8s %8d %6d %7.0f %8.2f %7.2f" % (k, o["ok"], o["errors"], o["rps"], o["p50_ms"],
                                                       o["p99_ms"]))
        print("ratio group/single req/s: %.2f" % (out["group"]["rps"] / out["single"]["rps"]))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

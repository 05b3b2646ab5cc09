#!/usr/bin/env python3
"""Does retention hold ingest back? recoveryd on a SQLite journal that holds
OLD jobs which ended 40 days ago (EVENTS events each), ingesting with wrk
(bench/new_alert.lua, CONNS connections, DURATION seconds) right after
start-up, with --retain 0 (nothing deleted) and --retain 30 (the clean-up
runs during the load), alternated in one run so the machine's noise falls on
both. Prints medians: acknowledged requests/s, p99 latency, and the jobs the
clean-up deleted during the load; and the ratio of --retain 30 to 0.

usage: bench/retention.py BUILD/recoveryd [--reps 3] [--old 100000] [--events 5]
       [--duration 8] [--conns 16]
"""
import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402

DAY = 86400.0


def seed(binary, path, old, events):
    """A journal at this build's schema holding `old` ended jobs."""
    subprocess.run([binary, "migrate", "--state", path], check=True, stdout=subprocess.DEVNULL, timeout=60)
    db = sqlite3.connect(path, isolation_level=None)
    t = time.time() - 40 * DAY
    db.execute("BEGIN")
    db.executemany("INSERT INTO jobs (id, playbook, key, trigger, alert_json, state, outcome, attempts, "
                   "max_attempts, notifications, created_at, updated_at, started_at, ended_at) "
                   "VALUES (?, 'bench', ?, 'webhook', '{\"labels\":{\"alertname\":\"Old\"}}', "
                   "'succeeded', 'succeeded', 1, 1, 1, ?, ?, ?, ?)",
                   (("old%08d" % i, "bench/old%d" % i, t + i * 0.01, t + i * 0.01 + 1, t + i * 0.01,
                     t + i * 0.01 + 1) for i in range(old)))
    db.executemany("INSERT INTO events (job_id, ts, attempt, type, detail) VALUES (?, ?, 1, 'log', "
                   "'{\"level\":\"info\",\"msg\":\"ran\"}')",
                   (("old%08d" % (k // events), t) for k in range(old * events)))
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def one(root, binary, seed_path, name, retain, a):
    d = compare.Recoveryd(root, name, binary, {"bench": compare.playbook("bench", "BenchRetain")},
                          ["--retain", retain])
    shutil.copy(seed_path, os.path.join(d.dir, "journal.db"))
    d.start()
    try:
        time.sleep(1.2)  # the clean-up's first round starts a second after start-up
        env = {"BENCH_TAG": name, "BENCH_TOKEN": d.token, "BENCH_ALERTNAME": "BenchRetain"}
        r = compare.wrk("http://127.0.0.1:%d/webhook" % d.port, "new_alert.lua", a.conns, a.duration, env)
        deleted = compare.msum(compare.metrics(d.port), "recoveryd_retention_deleted_total", what="jobs")
    finally:
        d.stop()
    return {"rps": (r["requests"] - r["errors"]["status"]) / (r["duration_us"] / 1e6),
            "p99_ms": r["latency_us"]["p99"] / 1000.0, "errors": r["errors_total"], "deleted": deleted}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--old", type=int, default=100000)
    ap.add_argument("--events", type=int, default=5)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--conns", type=int, default=16)
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    if not shutil.which("wrk"):
        sys.exit("retention.py: wrk is needed (scripts/deps.sh)")
    root = tempfile.mkdtemp(prefix="recoveryd-bench-retention-")
    rows = []
    try:
        seed_path = os.path.join(root, "seed.db")
        t0 = time.monotonic()
        seed(binary, seed_path, a.old, a.events)
        print("seed: %d ended jobs, %d events, %.1f MB (%.1f s)" % (a.old, a.old * a.events,
              os.path.getsize(seed_path) / 1e6, time.monotonic() - t0), flush=True)
        for rep in range(a.reps):
            for retain in ("0", "30"):
                r = one(root, binary, seed_path, "r%s-%d" % (retain, rep), retain, a)
                r.update(retain=retain, rep=rep)
                rows.append(r)
                print("  --retain %-2s rep %d: %.0f req/s, p99 %.1f ms, %d errors, %d old jobs deleted"
                      % (retain, rep, r["rps"], r["p99_ms"], r["errors"], r["deleted"]), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def med(retain, key):
        return statistics.median(r[key] for r in rows if r["retain"] == retain)
    print("\nmedians of %d repetitions (2 cores: recoveryd and wrk share them)" % a.reps)
    print("%-36s %12s %12s %8s" % ("", "--retain 0", "--retain 30", "30/0"))
    for label, key in (("ingest: acknowledged requests/s", "rps"), ("ingest: p99 ms", "p99_ms"),
                       ("old jobs deleted during the load", "deleted")):
        z, t = med("0", key), med("30", key)
        print("%-36s %12s %12s %8s" % (label, compare.fmt(z, "%.1f"), compare.fmt(t, "%.1f"),
                                       compare.fmt(t / z if z else None, "%.2f")))


if __name__ == "__main__":
    main()

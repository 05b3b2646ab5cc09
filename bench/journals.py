#!/usr/bin/env python3
"""The journal backends side by side: recoveryd on SQLite, on PostgreSQL, and
three replicas sharing one PostgreSQL journal, alternated in one run, so the
machine's noise falls on all.

For each repetition and backend: a fresh journal (a new file; a new database
on a private PostgreSQL 15 cluster that scripts/pg.sh starts for the run),
then
  ingest   wrk posting a new firing alert per request (bench/new_alert.lua)
           for DURATION seconds at CONNS connections: acknowledged requests/s
           (each 202 comes after the decision's commit);
  backlog  BACKLOG jobs of the empty playbook posted at once (notifications
           of 1,000 alerts): jobs completed per second until all ended.
With three replicas the load is spread over them (a wrk per replica, CONNS
split between them; backlog notifications round-robin) and their counts are
summed. Prints medians and the ratios to SQLite; --json writes the rows.

With --baseline OTHER/recoveryd, every repetition runs both binaries too
(baseline first), and the medians are printed for each: a before/after
measured side by side in one run.

usage: bench/journals.py BUILD/recoveryd [--reps 3] [--duration 5] [--conns 16]
       [--backlog 2000] [--baseline OTHER/recoveryd]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Cluster:
    """A private PostgreSQL cluster (scripts/pg.sh) with a database per run."""

    def __init__(self, root):
        self.dir = os.path.join(root, "pg")
        subprocess.run(["bash", os.path.join(SOURCE_DIR, "scripts", "pg.sh"), "start", self.dir],
                       check=True, stdout=subprocess.DEVNULL, timeout=180)
        with open(os.path.join(self.dir, "url")) as f:
            self.url = f.read().strip()
        os.environ["PGPASSFILE"] = os.path.join(self.dir, "pgpass")
        self.n = 0

    def database(self):
        self.n += 1
        name = "bench_%d" % self.n
        subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", self.url, "-c", "CREATE DATABASE " + name],
                       check=True, capture_output=True, timeout=60)
        return self.url.rsplit("/", 1)[0] + "/" + name

    def stop(self):
        subprocess.run(["bash", os.path.join(SOURCE_DIR, "scripts", "pg.sh"), "stop", self.dir],
                       stdout=subprocess.DEVNULL, timeout=120)


class Daemon(compare.Recoveryd):
    """compare.Recoveryd with the journal at state (a file or a URL)."""

    def __init__(self, root, name, binary, playbooks, state):
        super().__init__(root, name, binary, playbooks)
        i = self.argv.index("--state")
        self.argv[i + 1] = state


class Replicas:
    """Daemons sharing one journal, counted together."""

    def __init__(self, ds):
        self.ds = ds

    def counts(self):
        c = [d.counts() for d in self.ds]
        return sum(x[0] for x in c), sum(x[1] for x in c), None

    wait_ended = compare.Recoveryd.wait_ended
    wait_drained = compare.Recoveryd.wait_drained

    def stop(self):
        for d in self.ds:
            d.stop()


def ingest(ds, a):
    """A wrk per daemon at once, the connections split between them."""
    res = [None] * len(ds)
    tag = "j%d" % time.monotonic_ns()

    def load(i):
        env = {"BENCH_TAG": "%s-%d" % (tag, i), "BENCH_TOKEN": ds[i].token, "BENCH_ALERTNAME": "BenchJournal"}
        res[i] = compare.wrk("http://127.0.0.1:%d/webhook" % ds[i].port, "new_alert.lua",
                             max(1, a.conns // len(ds)), a.duration, env)
    threads = [threading.Thread(target=load, args=(i,)) for i in range(len(ds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    acked = sum(r["requests"] - r["errors"]["status"] for r in res)
    secs = max(r["duration_us"] for r in res) / 1e6
    drained = Replicas(ds).wait_drained(a.drain_limit)
    return {"rps": acked / secs, "p99_ms": max(r["latency_us"]["p99"] for r in res) / 1000.0,
            "errors": sum(r["errors_total"] for r in res), "drain_s": drained}


def backlog(ds, a):
    t0 = time.monotonic()
    for k, start in enumerate(range(0, a.backlog, 1000)):
        body = compare.notification([compare.alert({"alertname": "BenchJournal", "instance": "b%d" % i})
                                     for i in range(start, min(a.backlog, start + 1000))])
        st, _ = ds[k % len(ds)].post(body, timeout=120)
        if st != 202:
            raise RuntimeError("backlog post answered %d" % st)
    done = Replicas(ds).wait_ended(a.backlog, t0, a.drain_limit, 0.02)
    return {"jobs_per_s": a.backlog / done if done else None, "all_ended_s": done}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--backlog", type=int, default=2000)
    ap.add_argument("--drain-limit", type=int, default=300)
    ap.add_argument("--baseline", help="a second binary, run alternately with the first")
    ap.add_argument("--json")
    a = ap.parse_args()
    a.binary = os.path.abspath(a.binary)
    binaries = [("", a.binary)]
    if a.baseline:
        binaries.insert(0, ("baseline ", os.path.abspath(a.baseline)))
    for tool in ("wrk", "psql"):
        if not shutil.which(tool):
            sys.exit("journals.py: %s is needed (scripts/deps.sh)" % tool)
    root = tempfile.mkdtemp(prefix="recoveryd-bench-journals-")
    cluster = Cluster(root)
    pb = {"bench": compare.playbook("bench", "BenchJournal")}
    rows = []
    try:
        for rep in range(a.reps):
            for tag, binary in binaries:
                for backend in ("sqlite", "postgres", "postgres-3"):
                    for part in ("ingest", "backlog"):
                        name = "%s%s-%s-%d" % (tag.strip() + "-" if tag else "", backend, part, rep)
                        state = (os.path.join(root, name + ".db") if backend == "sqlite"
                                 else cluster.database())
                        n = 3 if backend == "postgres-3" else 1
                        ds = []
                        try:
                            for i in range(n):
                                d = Daemon(root, "%s-r%d" % (name, i), binary, pb, state)
                                if backend != "sqlite":
                                    d.argv += ["--replica-id", "%s-r%d" % (name, i)]
                                ds.append(d.start())
                            r = ingest(ds, a) if part == "ingest" else backlog(ds, a)
                        finally:
                            Replicas(ds).stop()
                        r.update(backend=backend, part=part, rep=rep, binary=tag.strip() or "this")
                        rows.append(r)
                        print("  %s%-8s %-7s rep %d: %s" % (tag, backend, part, rep,
                              ", ".join("%s %s" % (k, compare.fmt(v, "%.1f")) for k, v in r.items()
                                        if k not in ("backend", "part", "rep", "binary"))), flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)

    def med(binary, backend, part, key):
        v = [r[key] for r in rows if r["binary"] == binary and r["backend"] == backend and r["part"] == part
             and r.get(key)]
        return statistics.median(v) if v else None
    print("\nmedians of %d repetitions (2 cores: recoveryd, wrk and PostgreSQL share them)" % a.reps)
    print("%-45s %10s %10s %10s %8s %8s" % ("", "SQLite", "PG 1", "PG 3", "PG1/SQL", "PG3/SQL"))
    for tag, _ in binaries:
        for label, part, key in (("ingest: acknowledged requests/s", "ingest", "rps"),
                                 ("ingest: p99 ms", "ingest", "p99_ms"),
                                 ("backlog: jobs completed/s", "backlog", "jobs_per_s")):
            b = tag.strip() or "this"
            s, p, p3 = (med(b, "sqlite", part, key), med(b, "postgres", part, key),
                        med(b, "postgres-3", part, key))
            print("%-45s %10s %10s %10s %8s %8s" % (tag + label, compare.fmt(s), compare.fmt(p), compare.fmt(p3),
                                                    compare.fmt(p / s if s and p else None, "%.2f"),
                                                    compare.fmt(p3 / s if s and p3 else None, "%.2f")))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

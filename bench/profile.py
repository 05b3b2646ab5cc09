#!/usr/bin/env python3
"""Where the time goes: recoveryd under callgrind, with a fixed amount of work.

Runs the release binary under `valgrind --tool=callgrind --separate-threads=yes`
with the benchmark's HTTP playbook (one recovery.http POST to a loopback
nginx sink), posts REQUESTS webhooks (each one new firing alert, CLIENTS
keep-alive connections), waits until every job has ended, stops the daemon
and prints, per thread, the functions with the most instructions (inclusive
of nothing: self cost). Instruction counts do not depend on the machine's
noise, so two runs of this script (before and after a change) compare
directly.

usage: bench/profile.py BUILD/recoveryd [--requests 2000] [--clients 4] [--top 15]
       [--playbook http|empty] [--keep DIR]
"""
import argparse
import glob
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--playbook", choices=("http", "empty"), default="http")
    ap.add_argument("--keep", help="keep the callgrind files in this directory")
    a = ap.parse_args()
    if not shutil.which("valgrind") or not shutil.which("callgrind_annotate"):
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    root = tempfile.mkdtemp(prefix="recoveryd-profile-")
    sink = rd = None
    try:
        sink = compare.Nginx(root, "sink", count_log=True).start()
        url = compare.lua_str("http://127.0.0.1:%d/sink" % sink.port)
        run = compare.http_post(url) if a.playbook == "http" else ""
        rd = compare.Recoveryd(root, "recoveryd", os.path.abspath(a.binary),
                               {"bench": compare.playbook("bench", "BenchAlert", run=run)})
        out = os.path.join(root, "callgrind.out")
        rd.argv = ["valgrind", "--tool=callgrind", "--separate-threads=yes",
                   "--callgrind-out-file=" + out + ".%p"] + rd.argv
        rd.start_timeout = 60
        rd.start()
        lock = threading.Lock()
        nxt = [0]
        errors = [0]

        def client(k):
            c = http.client.HTTPConnection("127.0.0.1", rd.port, timeout=60)
            while True:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= a.requests:
                    break
                body = compare.notification([compare.alert({"alertname": "BenchAlert",
                                                            "instance": "p%d" % i})])
                c.request("POST", "/webhook", body, rd.headers())
                r = c.getresponse()
                r.read()
                if r.status != 202:
                    with lock:
                        errors[0] += 1
            c.close()

        t0 = time.monotonic()
        ts = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        t_load = time.monotonic() - t0
        drained = rd.wait_drained(600)
        created, ended, _ = rd.counts()
        print("requests %d (errors %d) in %.1f s under callgrind; jobs created %d, ended %d, "
              "drain %.1f s; sink saw %d" % (a.requests, errors[0], t_load, created, ended,
                                              drained or -1, sink.count()))
        rd.stop(grace=120)
        files = sorted(glob.glob(out + ".*"))
        if a.keep:
            os.makedirs(a.keep, exist_ok=True)
            for f in files:
                shutil.copy(f, a.keep)
        totals = []
        for f in files:
            p = subprocess.run(["callgrind_annotate", "--threshold=99", f], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
            m = re.search(r"^([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", p.stdout, re.M)
            total = int(m.group(1).replace(",", "")) if m else 0
            totals.append((total, f, p.stdout))
        grand = sum(t for t, _, _ in totals) or 1
        print("instructions, all threads: %d (%.0f per request)" % (grand, grand / a.requests))
        for total, f, text in sorted(totals, reverse=True):
            if total < grand * 0.01:
                continue
            print()
            print("== thread %s: %d instructions, %.1f %% of all, %.0f per request"
                  % (f.rsplit("-", 1)[-1], total, 100.0 * total / grand, total / a.requests))
            n = 0
            for line in text.splitlines():
                m = re.match(r"^\s*([\d,]+) \(\s*([\d.]+)%\)\s+(\S.*)$", line)
                if not m or "PROGRAM TOTALS" in line:
                    continue
                fn = m.group(3)
                fn = re.sub(r"^.*?:", "", fn) if ":" in fn else fn
                fn = fn.replace(" [", "  [")
                print("  %6s %%  %s" % (m.group(2), fn))
                n += 1
                if n >= a.top:
                    break
        return 0
    finally:
        for s in (rd, sink):
            if s is not None:
                s.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Print the results JSON of compare.py as the Markdown tables of RESULTS.md.

usage: bench/report.py [bench/out/compare.json]
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ORDER = {"nginx": 0, "webhook": 1, "recoveryd-empty": 2, "recoveryd-http": 3}


def f(v, fmt="%.0f"):
    return "-" if v is None else fmt % v


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "out", "compare.json")
    with open(path) as fh:
        d = json.load(fh)
    i = d["info"]
    print("Machine: %s cores (nproc). %s; %s; %s; %s, tree `%s`." % (
        i["nproc"], i["wrk"], i["nginx"], i["webhook"], i["recoveryd"], i["git"]))
    s = i["settings"]
    print("Settings: %d s per wrk run, %d repetitions, connections %s; wall time %.0f s."
          % (s["duration_s"], s["reps"], ",".join(map(str, s["conns"])), d["wall_s"]))
    print()
    for case, title in (("new", "Every request a new alert (`new_alert.lua`)"),
                        ("same", "The same notification repeated (`same_alert.lua`)")):
        rows = sorted((x for x in d["summary"] if x["case"] == case),
                      key=lambda x: (ORDER.get(x["server"], 9), x["conns"]))
        if not rows:
            continue
        print("%s:" % title)
        print()
        print("| server | conns | req/s (median) | range | p50 ms | p99 ms | peak RSS MiB | peak threads "
              "| acked | completed | done | drain jobs/s |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for x in rows:
            done = "-"
            if "completed" in x and x["acked"] and case == "new":
                done = "%.0f %%" % (100.0 * x["completed"] / x["acked"])
            print("| %s | %d | %s | %s–%s | %.2f | %.2f | %.1f | %d | %d | %s | %s | %s |" % (
                x["server"], x["conns"], f(x["rps"]), f(x["rps_min"]), f(x["rps_max"]), x["p50_ms"],
                x["p99_ms"], x["rss_mib"], x["threads"], x["acked"], f(x.get("completed"), "%d"),
                done, f(x.get("drain_jobs_per_s"))))
        print()
    if d.get("ratios"):
        print("| ratio (req/s, same run) | value |")
        print("|---|---:|")
        for k, v in sorted(d["ratios"].items()):
            print("| %s | %.3f |" % (k, v))
        print()
    fa, st, w = d.get("first_action"), d.get("storm"), d.get("waiting")
    if fa:
        print("- First action (idle daemon, %d webhooks one after the other): p50 %.2f ms, p99 %.2f ms, "
              "max %.2f ms; the 202 itself: p50 %.2f ms, p99 %.2f ms." % (
                  fa["n"], fa["p50_ms"], fa["p99_ms"], fa["max_ms"], fa["ack_p50_ms"], fa["ack_p99_ms"]))
    bl = d.get("backlog")
    if bl:
        parts = []
        for k in ("empty", "http", "exec"):
            if k in bl:
                parts.append("%s %s jobs/s (%s s)" % (k, f(bl[k].get("jobs_per_s")),
                                                     f(bl[k].get("all_ended_s"), "%.2f")))
        n = next(iter(bl.values()))["jobs"]
        print("- Completion from a backlog of %d jobs posted at once, until all ended: %s."
              % (n, ", ".join(parts)))
    gaps = [(x.get("queue_depth_gap_at"), x["queue_depth_gap"]) for x in d.get("runs", [])
            if x.get("queue_depth_gap") is not None]
    gaps += [(v.get("queue_depth_gap_at"), v["queue_depth_gap"]) for v in (bl or {}).values()]
    if gaps:
        at, gap = max(gaps, key=lambda g: g[1])
        print("- `recoveryd_queue_depth` against the jobs in state queued, at every scrape of the "
              "drain waits: largest gap %d%s." % (
                  gap, (" (the metric read %d while %d were queued)" % tuple(at)) if at else ""))
    if st:
        print("- Storm (one notification, %d firing alerts, empty playbook): answered in %.1f ms, "
              "all jobs ended after %s s." % (st["alerts"], st.get("answer_ms", float("nan")),
                                              f(st.get("all_ended_s"), "%.2f")))
    if w:
        print("- Waiting (%d jobs in `recovery.sleep(%d)`, `--max-jobs %d`): %d running at once after "
              "%.1f s, %d threads, RSS %.0f MiB (idle %.0f MiB): %.1f KiB per job over idle, "
              "%.1f KiB per job in total." % (
                  w["jobs"], w["sleep_s"], w["jobs"], w["running"], w.get("after_s", 0), w["threads"],
                  w["rss_kib"] / 1024, w["idle_rss_kib"] / 1024, w.get("kib_per_job", 0),
                  w.get("kib_per_job_total", 0)))
    ic = d.get("idle")
    if ic:
        print("- Idle connections (%d keep-alive connections left idle): %d still open, %d threads, "
              "RSS %.0f MiB (idle daemon %.0f MiB): %.1f KiB per connection; a webhook next to them "
              "answered %s." % (ic["connections"], ic.get("open", 0), ic["threads"], ic["rss_kib"] / 1024,
                                ic["idle_rss_kib"] / 1024, ic.get("kib_per_conn", 0), ic.get("webhook_status")))
    if d.get("problems"):
        print()
        print("Problems: " + "; ".join(d["problems"]))


if __name__ == "__main__":
    main()

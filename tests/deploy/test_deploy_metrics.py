"""Every recoveryd_* metric the alert rules and the Grafana dashboard use
exists in a real recoveryd's /metrics: the built binary is started with the
integration harness (tests/integration/harness.py) and its exposition
parsed. A family is known from its `# TYPE` line (labelled series appear only
on first use); histogram families also provide NAME_bucket, NAME_sum and
NAME_count."""

import json
import os
import re
import sys
import tempfile
import unittest

import deploy_support as ds

sys.path.insert(0, os.path.join(ds.ROOT, "tests", "integration"))
import harness  # noqa: E402  (tests/integration/harness.py)


def exposed_names(text):
    names = set()
    for line in text.splitlines():
        m = re.match(r"#\s*TYPE\s+(\S+)\s+(\S+)", line)
        if m:
            name, typ = m.group(1), m.group(2)
            names.add(name)
            if typ in ("histogram", "summary"):
                names |= {name + "_sum", name + "_count"}
            if typ == "histogram":
                names.add(name + "_bucket")
    for name, _, _ in harness.parse_metrics(text):
        names.add(name)
    return names


def used_names():
    """{metric name: [where]} over the rules file and the dashboard."""
    used = {}
    for g in ds.load_yaml("k8s", "monitoring", "alert-rules.yml")["groups"]:
        for r in g["rules"]:
            for n in ds.metric_names(r["expr"]):
                used.setdefault(n, []).append("rule " + r["alert"])
    with open(ds.path("k8s", "monitoring", "grafana-dashboard.json"), encoding="utf-8") as f:
        dash = json.load(f)
    for p in dash["panels"]:
        for t in p.get("targets", []):
            for n in ds.metric_names(t.get("expr", "")):
                used.setdefault(n, []).append("panel " + p["title"])
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        for n in ds.metric_names(q):
            used.setdefault(n, []).append("variable " + v["name"])
    return used


class MetricNamesTest(unittest.TestCase):

    def setUp(self):
        harness.require_binary(self)
        self._tmp = tempfile.TemporaryDirectory(prefix="recoveryd-deploy-")
        self.addCleanup(self._tmp.cleanup)
        self.d = harness.Recoveryd(self._tmp.name)
        self.addCleanup(self.d.stop)

    def test_metric_names_exist(self):
        text = self.d.metrics()
        exposed = exposed_names(text)
        self.assertIn("recoveryd_jobs_total", exposed, "sanity: /metrics lists the families")
        used = used_names()
        self.assertIn("recoveryd_job_duration_seconds_bucket", used)
        self.assertIn("recoveryd_escalations_total", used)
        missing = {n: where for n, where in used.items() if n not in exposed}
        self.assertEqual(missing, {}, "metric names used in k8s/monitoring that recoveryd does not export")


if __name__ == "__main__":
    unittest.main()

"""Monitoring kit in k8s/monitoring/: the alert rules (promtool check + unit
tests), prometheusrule.yaml generated from them, the Alertmanager
configuration (amtool check-config, routing of every alert) and the Grafana
dashboard."""

import json
import os
import re
import sys
import unittest

import deploy_support as ds

RULES = "k8s/monitoring/alert-rules.yml"
RULES_TEST = "k8s/monitoring/alert-rules.test.yml"
PROMRULE = "k8s/monitoring/prometheusrule.yaml"
AM = "k8s/monitoring/alertmanager.yml"
DASH = "k8s/monitoring/grafana-dashboard.json"

PLAN_ALERTS = {"SettingsSyncJobFailure", "GatewayLatencyHigh", "EventValidationFailureSpike",
               "CrossModuleEventFlowStopped"}
SELF_ALERTS = {"RecoverydDown", "RecoverydEscalationsFailing", "RecoverydAutoRecoveryRatioLow",
               "RecoverydRunBudgetExhausted", "RecoverydJournalErrors", "RecoverydQueueBacklog"}


def rules():
    out = {}
    for g in ds.load_yaml(RULES)["groups"]:
        for r in g["rules"]:
            out[r["alert"]] = r
    return out


def playbook_alerts():
    """{alertname: [playbook files]} from the shipped playbooks' match."""
    out = {}
    d = ds.path("playbooks")
    for n in sorted(os.listdir(d)):
        if n.endswith(".lua"):
            with open(os.path.join(d, n), encoding="utf-8") as f:
                for a in ds.playbook_alertnames(f.read()):
                    out.setdefault(a, []).append(n)
    return out


class RulesTest(unittest.TestCase):

    def test_promtool_check_rules(self):
        p = ds.run([ds.tool("promtool"), "check", "rules", RULES])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_promtool_unit_tests(self):
        p = ds.run([ds.tool("promtool"), "test", "rules", os.path.basename(RULES_TEST)], cwd=ds.MONITORING)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        t = ds.read(RULES_TEST)
        for a in ("SettingsSyncJobFailure", "RecoverydAutoRecoveryRatioLow"):
            self.assertIn("alertname: " + a, t, "unit tests must cover " + a)

    def test_expected_alerts_and_labels(self):
        r = rules()
        self.assertEqual(set(r), PLAN_ALERTS | SELF_ALERTS)
        for name, rule in r.items():
            self.assertIn(rule["labels"]["severity"], ("warning", "critical"), name)
            self.assertTrue(rule["labels"].get("component"), name)
            for k in ("summary", "description", "runbook_url"):
                self.assertTrue(rule["annotations"].get(k), "%s: annotation %s" % (name, k))
            self.assertTrue(rule["annotations"]["runbook_url"].startswith("https://"), name)
        for name in SELF_ALERTS:
            self.assertEqual(r[name]["labels"]["component"], "recoveryd", name)
        for name in PLAN_ALERTS:
            self.assertNotEqual(r[name]["labels"]["component"], "recoveryd", name)
            self.assertTrue(r[name]["labels"].get("runbook"), "the plan's runbook label stays: " + name)
        # the plan's `for` and severities
        plan = {"SettingsSyncJobFailure": ("2m", "warning"), "GatewayLatencyHigh": ("5m", "warning"),
                "EventValidationFailureSpike": ("2m", "critical"), "CrossModuleEventFlowStopped": ("10m", "critical")}
        for name, (f, sev) in plan.items():
            self.assertEqual((r[name]["for"], r[name]["labels"]["severity"]), (f, sev), name)
        self.assertIn('recoveryd_admissions_total{decision="budget_exhausted"}', r["RecoverydRunBudgetExhausted"]["expr"])
        self.assertIn("< 0.8", r["RecoverydAutoRecoveryRatioLow"]["expr"])
        self.assertIn("[1d]", r["RecoverydAutoRecoveryRatioLow"]["expr"])
        self.assertEqual(r["RecoverydQueueBacklog"]["for"], "10m")

    def test_prometheusrule_is_generated_from_the_rules(self):
        p = ds.run([sys.executable, ds.path("scripts", "gen-prometheusrule.py"), "--check", "--root", ds.ROOT])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        pr = ds.load_yaml(PROMRULE)
        self.assertEqual((pr["apiVersion"], pr["kind"]), ("monitoring.coreos.com/v1", "PrometheusRule"))
        self.assertEqual(pr["spec"]["groups"], ds.load_yaml(RULES)["groups"])


class AlertmanagerTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.cfg = ds.load_yaml(AM)

    def routes_to(self, *labels):
        p = ds.run([ds.tool("amtool"), "config", "routes", "test", "--config.file=" + AM] + list(labels))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return set(p.stdout.strip().split(","))

    def test_amtool_check_config(self):
        p = ds.run([ds.tool("amtool"), "check-config", AM])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_recoveryd_receiver(self):
        recv = {r["name"]: r for r in self.cfg["receivers"]}["recoveryd"]
        self.assertEqual(len(recv["webhook_configs"]), 1)
        wh = recv["webhook_configs"][0]
        self.assertRegex(wh["url"], r"^http://recoveryd\.[a-z0-9-]+\.svc:9095/webhook$")
        self.assertIs(wh["send_resolved"], True)
        self.assertEqual(wh["max_alerts"], 0)
        self.assertTrue(wh["http_config"]["authorization"]["credentials_file"])
        self.assertNotIn("credentials", wh["http_config"]["authorization"], "the token comes from a file")

    def test_every_playbook_alert_reaches_recoveryd_and_humans(self):
        alerts = playbook_alerts()
        r = rules()
        for a in ("SettingsSyncJobFailure", "EventValidationFailureSpike", "GatewayLatencyHigh"):
            self.assertIn(a, alerts, "a shipped playbook handles " + a)
        for a in alerts:
            labels = ["alertname=" + a]
            if a in r:
                labels += ["severity=" + r[a]["labels"]["severity"], "component=" + r[a]["labels"]["component"]]
            got = self.routes_to(*labels)
            self.assertIn("recoveryd", got, "%s (playbook %s) is not sent to recoveryd" % (a, alerts[a]))
            self.assertTrue(got - {"recoveryd"}, "%s must also reach a human receiver" % a)

    def test_alerts_without_playbook_and_self_alerts_skip_recoveryd(self):
        r = rules()
        handled = playbook_alerts()
        for a, rule in r.items():
            if a in handled:
                continue
            got = self.routes_to("alertname=" + a, "severity=" + rule["labels"]["severity"],
                                 "component=" + rule["labels"]["component"])
            self.assertNotIn("recoveryd", got, a)
            self.assertTrue(got, a)
            if rule["labels"]["severity"] == "critical":
                self.assertIn("ops-pagerduty", got, "critical %s pages" % a)

    def test_recoveryd_route_timing(self):
        route = [x for x in self.cfg["route"]["routes"] if x.get("receiver") == "recoveryd"]
        self.assertEqual(len(route), 1)
        route = route[0]
        self.assertIs(route.get("continue"), True)
        self.assertIn("alertname", route["group_by"])
        self.assertGreater(len(route["group_by"]), 1, "group per target, not per alertname")
        self.assertLessEqual(_seconds(route["group_wait"]), 30)

    def test_inhibitions_spare_recoveryd_alerts(self):
        handled = set(playbook_alerts())
        for rule in self.cfg.get("inhibit_rules", []):
            src = " ".join(rule.get("source_matchers", []))
            self.assertNotRegex(src, r'alertname="RecoverydDown"', "RecoverydDown inhibits nothing")
            self.assertIn('alertname!="RecoverydDown"', src)
            tgt = " ".join(rule.get("target_matchers", []))
            m = re.search(r'alertname!~"([^"]+)"', tgt)
            self.assertTrue(m, "inhibition targets must exclude the alerts with playbooks")
            self.assertEqual(handled - set(m.group(1).split("|")), set())


def _seconds(d):
    m = re.fullmatch(r"(\d+)([smh])", d)
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]


class DashboardTest(unittest.TestCase):

    def test_dashboard(self):
        with open(ds.path(DASH), encoding="utf-8") as f:
            d = json.load(f)
        self.assertGreaterEqual(d["schemaVersion"], 36)
        self.assertTrue(d["uid"])
        var = {v["name"]: v for v in d["templating"]["list"]}
        self.assertEqual(var["DS_PROMETHEUS"]["type"], "datasource")
        ids = [p["id"] for p in d["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids are unique")
        exprs = []
        for p in d["panels"]:
            if p["type"] == "row":
                continue
            self.assertEqual(p["datasource"]["uid"], "${DS_PROMETHEUS}", p["title"])
            self.assertTrue(p["targets"], p["title"])
            for t in p["targets"]:
                self.assertEqual(t["datasource"]["uid"], "${DS_PROMETHEUS}")
                self.assertTrue(t["expr"].strip())
                exprs.append(t["expr"])
        text = "\n".join(exprs)
        for m in ("recoveryd_jobs_total", "recoveryd_job_duration_seconds_bucket", "recoveryd_queue_depth",
                  "recoveryd_jobs_in_flight", "recoveryd_admissions_total", "recoveryd_escalations_total",
                  "recoveryd_escalation_outbox_depth", "recoveryd_escalation_delivery_seconds_bucket",
                  "recoveryd_webhook_requests_total", "recoveryd_config_reloads_total"):
            self.assertIn(m, text, "a panel for " + m)
        self.assertIn("[1d]", text)
        self.assertIn("[1h]", text)
        self.assertIn("histogram_quantile", text)


if __name__ == "__main__":
    unittest.main()

"""End to end: a failing settings sync job, seen by the REAL Prometheus
(shipped rule), routed by the REAL Alertmanager (shipped route) to the real
recoveryd (shipped playbook), repaired through the Kubernetes fake, verified
in Prometheus, resolved. See docs/e2e.md.

Prometheus, Alertmanager and the exporter start once for the class; each
scenario gets its own recoveryd (fresh journal, on the same port, so the
route needs no change), Kubernetes fake, settings registry, PagerDuty and
Slack fakes, and its own series of the error counter (label `pod`). Every
scenario leaves no active alert behind.
"""

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import unittest

import e2e_support as es
from e2e_support import ChainError, Timeline, wait_until

from harness import find_actions  # noqa: E402  (on sys.path through e2e_support)

TARGET_NS = "settings"
TARGET_NAME = "settings-sync-job"
DEPLOYMENT_PATH = "/apis/apps/v1/namespaces/%s/deployments/%s" % (TARGET_NS, TARGET_NAME)

# Bounds of the waits (seconds). Scaled timing: rule for: 2m -> 2s, rate
# window 5m -> 5s, Alertmanager group_wait/interval in seconds.
FIRE_TIMEOUT = 60        # counter climbs -> recoveryd queues the job
RESOLVE_TIMEOUT = 60     # condition clears -> resolved notification in recoveryd


def _iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)


class ChainTest(unittest.TestCase):
    maxDiff = None

    # ------------------------------------------------------------ class set-up
    @classmethod
    def setUpClass(cls):
        why = es.missing_prerequisites()
        if why:
            raise unittest.SkipTest("end-to-end chain skipped: " + "; ".join(why))
        from k8s_fake import K8sFake  # noqa: F401  (fail early if the fakes are broken)
        from settings_registry import SettingsRegistry  # noqa: F401
        cls.t_start = time.monotonic()
        cls.tmpdir = tempfile.mkdtemp(prefix="recoveryd-e2e-")
        if os.environ.get("RECOVERYD_KEEP_TMP") != "1":
            cls.addClassCleanup(shutil.rmtree, cls.tmpdir, ignore_errors=True)
        cls.notes = []

        # The shipped rule, scaled. Prometheus loads the whole shipped file.
        groups, form = es.load_rule_groups()
        cls.rule_group, cls.shipped_rule = es.find_rule(groups)
        cls.scaled_groups = es.scale_rule_groups(groups)
        _, cls.rule = es.find_rule(cls.scaled_groups)
        cls.notes.append("rules: %s (%s); %s: expr %r for %s -> expr %r for %s" % (
            os.path.relpath(es.RULES_FILE, es.SOURCE_DIR), form, es.ALERTNAME, cls.shipped_rule["expr"],
            cls.shipped_rule.get("for"), cls.rule["expr"], cls.rule.get("for")))
        job, labels = es.series_labels(cls.rule["expr"])
        cls.scrape_job = job or TARGET_NAME
        cls.series_base = labels

        # Tokens and the port of recoveryd: fixed for the class, so the
        # Alertmanager route is written once.
        cls.tokens = {"webhook": secrets.token_urlsafe(24), "operator": secrets.token_urlsafe(24)}
        cls.recoveryd_port = es.free_port()
        cls.recoveryd_url = "http://127.0.0.1:%d" % cls.recoveryd_port
        am_dir = os.path.join(cls.tmpdir, "alertmanager")
        os.makedirs(am_dir)
        cls.am_token_file = os.path.join(am_dir, "recoveryd-webhook-token")
        with open(cls.am_token_file, "w") as f:
            f.write(cls.tokens["webhook"] + "\n")
        os.chmod(cls.am_token_file, 0o600)

        shipped_am, am_form = es.load_alertmanager_config()
        cls.shipped_am = shipped_am
        am_cfg, am_notes, targets = es.rewrite_alertmanager_config(shipped_am, cls.recoveryd_url, cls.am_token_file)
        cls.notes.append("alertmanager: %s (%s)" % (os.path.relpath(es.ALERTMANAGER_FILE, es.SOURCE_DIR), am_form))
        cls.notes += ["alertmanager: " + n for n in am_notes]
        if not targets:
            raise ChainError("no webhook_config of %s points at recoveryd (a host containing 'recoveryd', or a "
                             "path /webhook or /trigger/...): the route cannot reach recoveryd"
                             % os.path.relpath(es.ALERTMANAGER_FILE, es.SOURCE_DIR))
        cls.am_targets = targets
        cls.recoveryd_receivers = {name for name, _, _ in targets}
        cls.notes += ["alertmanager: receiver %s -> %s (auth: %s)" % (n, u, "yes" if a else "NONE")
                      for n, u, a in targets]

        # Exporter: one series per scenario, created at 0 so that the first
        # error is an increase.
        cls.exporter = es.Exporter().start()
        cls.addClassCleanup(cls.exporter.stop)
        cls.sync_jobs = {}
        for scen in ("success", "escalation", "dryrun"):
            lbl = dict(cls.series_base)
            # its own target, like another pod of the sync job: the shipped
            # route groups by instance, so each scenario is its own group
            lbl["instance"] = "settings-sync-job-e2e-" + scen
            cls.sync_jobs[scen] = es.SyncJob(cls.exporter, lbl)

        cls.am = es.Alertmanager(am_dir, am_cfg)
        ok, out = cls.am.check_config()
        if not ok:
            raise ChainError("amtool check-config rejects the rewritten copy of the shipped route:\n" + out)
        cls.am.start()
        cls.addClassCleanup(cls.am.stop)

        import yaml
        rules_text = yaml.safe_dump({"groups": cls.scaled_groups}, sort_keys=False)
        cls.prom = es.ChainPrometheus(os.path.join(cls.tmpdir, "prometheus"), cls.exporter.address,
                                      cls.scrape_job, rules_text, cls.am.address)
        cls.prom.start()
        cls.addClassCleanup(cls.prom.stop)
        # Prometheus scrapes the exporter and knows the Alertmanager.
        wait_until(lambda: cls.prom.query('%s{instance="settings-sync-job-e2e-success"}' % es.METRIC)
                   ["data"]["result"], 30, "Prometheus scrapes the exporter", detail=cls.prom.log_tail)
        wait_until(lambda: es.http_json(cls.prom.url + "/api/v1/alertmanagers")["data"]["activeAlertmanagers"],
                   30, "Prometheus discovers the Alertmanager", detail=cls.prom.log_tail)
        cls.setup_seconds = time.monotonic() - cls.t_start
        print("\n[e2e] " + "\n[e2e] ".join(cls.notes), flush=True)
        print("[e2e] Prometheus %s, Alertmanager %s, recoveryd %s; set-up %.1fs"
              % (cls.prom.url, cls.am.url, cls.recoveryd_url, cls.setup_seconds), flush=True)

    @classmethod
    def tearDownClass(cls):
        print("[e2e] class total %.1fs (temp dir %s)" % (time.monotonic() - cls.t_start, cls.tmpdir), flush=True)

    # ------------------------------------------------------------ per scenario
    def setUp(self):
        from k8s_fake import K8sFake
        from settings_registry import SettingsRegistry
        from pagerduty_fake import PagerDutyFake
        from slack_fake import SlackFake
        self.t0 = time.monotonic()
        self.dir = tempfile.mkdtemp(prefix=self._testMethodName + "-", dir=self.tmpdir)
        self.timeline = Timeline()
        self.k8s_token = "k8s-" + secrets.token_hex(12)
        k8s_token_file = os.path.join(self.dir, "k8s-token")
        with open(k8s_token_file, "w") as f:
            f.write(self.k8s_token + "\n")
        self.k8s = K8sFake(token_file=k8s_token_file, seed={"objects": [
            {"kind": "Deployment", "metadata": {"name": TARGET_NAME, "namespace": TARGET_NS,
                                                "labels": {"app": TARGET_NAME}},
             "spec": {"replicas": 1, "selector": {"matchLabels": {"app": TARGET_NAME}},
                      "template": {"metadata": {"labels": {"app": TARGET_NAME}},
                                   "spec": {"containers": [{"name": "sync", "image": "settings-sync:1"}]}}}},
        ]}).start()
        self.addCleanup(self.k8s.stop)
        self.registry = SettingsRegistry().start()
        self.addCleanup(self.registry.stop)
        self.pd = PagerDutyFake().start()
        self.addCleanup(self.pd.stop)
        self.slack = SlackFake().start()
        self.addCleanup(self.slack.stop)
        self.routing_key = secrets.token_hex(16)
        self.daemon = None
        self.watcher = None
        self.sync = None

    def tearDown(self):
        if self.watcher:
            self.watcher.stop()
        if self.sync is not None:
            # Leave no active alert behind for the next scenario.
            self.sync.heal()
            try:
                wait_until(lambda: not self.my_prom_alerts() and not self.my_am_alerts(), 45,
                           "the scenario's alert to clear in Prometheus and Alertmanager")
            except ChainError as e:
                print("[e2e] tearDown: %s" % e, flush=True)
        if self.daemon:
            self.daemon.stop(grace=10)
        print("[e2e] %s took %.1fs" % (self._testMethodName, time.monotonic() - self.t0), flush=True)

    def start_scenario(self, scen, dry_run=False, verify_wait=30, heal_on_patch=True):
        """recoveryd for this scenario, the hook on the Kubernetes fake, and
        the watcher. Returns the SyncJob."""
        self.sync = self.sync_jobs[scen]
        self.patches = []

        def on_request(req):
            if req.method in ("PATCH", "PUT", "POST", "DELETE"):
                self.timeline.add("k8s fake: %s %s -> %s" % (req.method, req.path, req.status), req.t)
            if req.method == "PATCH" and req.path == DEPLOYMENT_PATH and req.status == 200:
                self.patches.append(req)
                if heal_on_patch:
                    self.sync.heal()
                    self.timeline.add("exporter: error counter stops (restart healed the job)")
        self.k8s.on_request = on_request

        settings = {
            "registry_health_url": self.registry.health_url,
            "registry_timeout": 5,
            "restart_method": "rollout",
            "target_kind": "deployment",
            "target_name": TARGET_NAME,
            "target_namespace": TARGET_NS,
            "rollout_timeout": 20,
            "wait_interval": 0.2,
            "k8s_api_url": self.k8s.url,
            "k8s_token_secret": "k8s-token",
            "k8s_timeout": 5,
            "prometheus_url": self.prom.url,
            "prometheus_timeout": 5,
            "verify_use_alert_expr": True,
            "verify_wait": verify_wait,
            # Scaled down with the rule: the verify sees the condition clear
            # from the same scrapes as Prometheus' rule, and must not lose
            # the race to the resolved notification by a whole poll.
            "verify_interval": 0.25,
        }
        # The playbook's own backoff (15-30 s, then 30-60 s) scaled down like
        # the rule's intervals, through the deployment overrides.
        overrides = {"backoff": {"initial": 2, "factor": 2, "max": 4}}
        cfg = es.write_config_lua(os.path.join(self.dir, "config.lua"), settings, overrides)
        with open(os.path.join(self.dir, "slack-url"), "w") as f:
            f.write(self.slack.webhook_url + "\n")
        with open(os.path.join(self.dir, "pd-key"), "w") as f:
            f.write(self.routing_key + "\n")
        args = ["--config", cfg,
                "--slack-webhook-url-file", os.path.join(self.dir, "slack-url"),
                "--pagerduty-routing-key-file", os.path.join(self.dir, "pd-key"),
                "--pagerduty-url", self.pd.enqueue_url,
                "--external-url", self.recoveryd_url,
                "--escalation-retry-initial", "0.2", "--escalation-retry-max", "2"]
        if dry_run:
            args.append("--dry-run")
        d = es.ChainRecoveryd(self.dir, self.recoveryd_port, extra_args=args, tokens=dict(self.tokens),
                              secrets={"k8s-token": self.k8s_token})
        shutil.copyfile(es.PLAYBOOK_FILE, os.path.join(d.playbooks_dir, es.PLAYBOOK + ".lua"))
        self.daemon = d
        d.start(timeout=15)
        self.assertEqual(d.playbook_names(), [es.PLAYBOOK])
        self.watcher = es.ChainWatcher(self.prom, self.am, d, self.sync.labels).start()
        self.am_failed_before = self.am_failed()
        return self.sync

    # ------------------------------------------------------------ helpers
    def am_failed(self):
        return self.am.metric("alertmanager_notifications_failed_total", {"integration": "webhook"})

    def my_prom_alerts(self):
        return [a for a in self.prom.alerts() if self.watcher._mine(a["labels"])] if self.watcher else []

    def my_am_alerts(self):
        return [a for a in self.am.alerts() if self.watcher._mine(a.get("labels") or {})] if self.watcher else []

    def seen(self, what):
        return self.watcher.seen.has(what)

    def chain_state(self):
        """What every system says now (for failure messages)."""
        parts = ["events so far:\n" + self.timeline.render("  "),
                 "watcher saw:\n" + (self.watcher.seen.render("  ") if self.watcher else "-")]
        try:
            parts.append("Prometheus alerts: %s" % json.dumps(self.prom.alerts()))
            parts.append("Alertmanager alerts: %s" % json.dumps(self.am.alerts()))
        except Exception as e:
            parts.append("(cannot read Prometheus/Alertmanager: %r)" % (e,))
        parts.append("Alertmanager log (notifications):\n" + self.am.log_tail(15, grep="otif"))
        if self.watcher:
            parts.append("watcher: webhook answers %s; errors %s" % (self.watcher.webhook_posts, self.watcher.errors))
        if self.daemon:
            parts.append(self.daemon.log_tail(40))
        return "\n".join(parts)

    def wait(self, pred, timeout, what):
        return wait_until(pred, timeout, what, detail=self.chain_state)

    def start_failing(self):
        self.t_fail = time.time()
        self.timeline.add("exporter: error counter starts climbing", detail=es.METRIC + str(self.sync.labels))
        self.sync.fail()

    def wait_job_queued(self):
        """The job recoveryd queued from the Alertmanager notification."""
        rec = self.wait(lambda: self.daemon.ts_of("job queued", playbook=es.PLAYBOOK) and
                        [r for r in self.daemon.log_records() if r.get("msg") == "job queued"][0],
                        FIRE_TIMEOUT, "recoveryd to queue a job from the Alertmanager notification")
        t = es.parse_ts(rec["ts"])
        self.timeline.add("recoveryd: webhook received, job queued", t, "log line 'job queued', job %s" % rec["job"])
        return rec["job"]

    def wait_job_end(self, job_id, timeout):
        return self.daemon.wait_job(job_id, timeout=timeout, interval=0.2)

    def wait_resolved_notification(self):
        """The condition cleared: Prometheus resolves the alert, Alertmanager
        notifies recoveryd, recoveryd accepts the notification."""
        self.wait(lambda: self.seen("recoveryd resolved"), RESOLVE_TIMEOUT,
                  "Alertmanager's resolved notification to reach recoveryd")
        self.timeline.add("recoveryd: resolved notification received", self.watcher.seen.first("recoveryd resolved"),
                          "recoveryd_alerts_received_total{status=\"resolved\"} went up (polled every 0.1s)")

    def add_exact_events(self, rec):
        """Prometheus' ALERTS samples, Alertmanager's log, recoveryd's log."""
        pe, ae = es.chain_events(self.timeline, self.prom, self.am, self.sync.labels, rec["alert"]["fingerprint"],
                                 self.recoveryd_receivers, since=self.t_fail - 1)
        started = 0
        for r in self.daemon.log_records():
            if r.get("job") != rec["id"]:
                continue
            if r.get("msg") == "attempt started":
                started += 1
                self.timeline.add("recoveryd: attempt started", es.parse_ts(r["ts"]), "attempt %d" % started)
            elif r.get("msg") == "attempt ended":
                self.timeline.add("recoveryd: attempt ended", es.parse_ts(r["ts"]),
                                  "attempt %s: %s" % (r.get("attempt"), r.get("result")))
        return pe, ae

    def check_alert_path(self, rec):
        """The job's alert came from Prometheus through Alertmanager."""
        alert = rec["alert"]
        labels = alert["labels"]
        self.assertEqual(rec["trigger"], "webhook", rec)
        self.assertEqual(labels.get("alertname"), es.ALERTNAME)
        for k, v in self.shipped_rule.get("labels", {}).items():
            self.assertEqual(labels.get(k), v, "rule label %s" % k)
        for k, v in self.sync.labels.items():
            if k in labels:
                self.assertEqual(labels[k], v)
        self.assertTrue(alert["generatorURL"].startswith(self.prom.url + "/graph?g0.expr="), alert["generatorURL"])
        self.assertEqual(rec["key"], "%s/%s" % (es.PLAYBOOK, alert["fingerprint"]))
        # Alertmanager routed the alert to the receiver that targets recoveryd
        self.assertTrue(self.watcher.am_receivers & self.recoveryd_receivers,
                        "Alertmanager receivers of the alert %s, recoveryd receivers %s"
                        % (sorted(self.watcher.am_receivers), sorted(self.recoveryd_receivers)))
        # ... with the bearer token: no 401 ever
        codes = {c for _, c, _ in self.watcher.webhook_posts}
        self.assertNotIn("401", codes, "Alertmanager's webhook was refused: %s" % self.watcher.webhook_posts)

    def restart_patches(self, rec, planned):
        return [a for a in find_actions(rec, method="PATCH", url_contains=DEPLOYMENT_PATH)
                if bool(a.get("planned")) == planned]

    def show_timeline(self, title, name):
        """Print the timeline and write it to the class's temp dir."""
        text = self.timeline.render(title)
        path = os.path.join(self.tmpdir, name)
        with open(path, "w") as f:
            f.write(text)
        print("\n" + text + "(written to %s)" % path, flush=True)
        return text

    # ------------------------------------------------------------ 0: the shipped files
    def test_0_shipped_files_load_in_the_real_tools(self):
        """promtool accepts the scaled rules; amtool routes the alert's
        labels to the receiver that targets recoveryd."""
        import yaml
        path = os.path.join(self.dir, "scaled-rules.yml")
        with open(path, "w") as f:
            yaml.safe_dump({"groups": self.scaled_groups}, f, sort_keys=False)
        promtool = shutil.which("promtool")
        if promtool:
            r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        labels = {"alertname": es.ALERTNAME}
        labels.update({k: v for k, v in self.shipped_rule.get("labels", {}).items()})
        labels.update(self.series_base)
        out = self.am.routes_test(labels)
        if out is not None:
            got = {x.strip() for x in out.splitlines()[-1].split(",")}
            self.assertTrue(got & self.recoveryd_receivers,
                            "amtool routes %s to %s, not to a recoveryd receiver %s" %
                            (labels, out, sorted(self.recoveryd_receivers)))
        # the URL path Alertmanager posts to
        for name, url, auth in self.am_targets:
            self.assertTrue(url.endswith("/webhook"), "receiver %s posts to %s, not /webhook" % (name, url))
            self.assertTrue(auth, "receiver %s sends no credentials: recoveryd will answer 401" % name)

    # ------------------------------------------------------------ 1: success
    def test_1_restart_heals_and_the_alert_resolves(self):
        window = max([es.parse_duration(w) for w in re.findall(r"\[(\w+)\]", self.rule["expr"])] or [5])
        self.start_scenario("success", verify_wait=int(window) + 25)
        self.start_failing()
        job_id = self.wait_job_queued()

        rec = self.wait_job_end(job_id, timeout=90)
        if rec["state"] != "succeeded":
            self.fail("job %s ended %s (%s), want succeeded\n%s\n%s" % (
                job_id, rec["state"], rec.get("error"), json.dumps(rec.get("attempts"), indent=1),
                self.chain_state()))
        self.timeline.add("recoveryd: job succeeded (verify passed)", es.parse_ts(rec["ended_at"]),
                          "verify: %s" % (rec["attempts"][-1].get("verify") or {}).get("reason"))
        self.wait_resolved_notification()
        self.wait(lambda: self.seen("prometheus resolved") and self.seen("alertmanager resolved"), 15,
                  "the alert to be resolved in Prometheus and Alertmanager")
        self.add_exact_events(rec)
        self.show_timeline("Timeline, scenario 1 (restart heals the sync job)", "timeline-success.txt")

        # Every step, from the systems themselves, in order.
        tl = self.timeline
        order = ["exporter: error counter starts climbing", "Prometheus: rule pending", "Prometheus: rule firing",
                 "Alertmanager: alert received from Prometheus", "Alertmanager: notification sent to recoveryd",
                 "recoveryd: webhook received, job queued", "recoveryd: attempt started",
                 "k8s fake: PATCH %s -> 200" % DEPLOYMENT_PATH, "recoveryd: job succeeded (verify passed)",
                 "Prometheus: alert resolved", "Alertmanager: resolved alert received from Prometheus",
                 "Alertmanager: resolved notification sent to recoveryd",
                 "recoveryd: resolved notification received"]
        missing = [l for l in order if not tl.has(l)]
        self.assertEqual(missing, [], self.chain_state())
        slack = 0.02  # clocks of different processes, rounded to the millisecond
        for a, b in zip(order, order[1:]):
            if (a, b) == ("recoveryd: job succeeded (verify passed)", "Prometheus: alert resolved"):
                continue  # verify and the rule see the same data: either may notice first
            self.assertLessEqual(tl.first(a), tl.first(b) + slack, "%r after %r\n%s" % (a, b, tl.render("")))
        # the rule waited its scaled `for:` between pending and firing
        for_s = es.parse_duration(self.rule.get("for", "0s"))
        self.assertGreaterEqual(tl.first(order[2]) - tl.first(order[1]), for_s - 0.01)

        self.check_alert_path(rec)
        self.assertEqual(rec["attempts_made"], 1, rec)
        self.assertTrue(rec["attempts"][0]["verify"]["ok"], rec["attempts"][0])
        self.assertIn(self.rule["expr"], rec["attempts"][0]["verify"]["reason"],
                      "verify re-evaluated the alert's own (scaled) expression")
        # the restart: one PATCH, really sent, with the token, restartedAt stamped
        self.assertEqual(len(self.restart_patches(rec, planned=False)), 1, rec["actions"])
        self.assertEqual(len(self.patches), 1, self.k8s.writes())
        p = self.patches[0]
        self.assertEqual(p.header("Authorization"), "Bearer " + self.k8s_token)
        self.assertIn("restartedAt", p.body.decode())
        self.assertEqual([r.method for r in self.k8s.writes()], ["PATCH"])
        self.assertGreaterEqual(len(self.registry.requests(path="/api/settings/health")), 1)
        # nobody was paged; Alertmanager delivered everything
        self.assertEqual(self.pd.count(), 0, self.pd.requests())
        self.assertEqual(self.slack.count(), 0, self.slack.requests())
        self.assertEqual(rec.get("escalations") or [], [])
        self.assertEqual([j["id"] for j in self.daemon.jobs(playbook=es.PLAYBOOK)], [job_id])
        self.assertEqual(self.am_failed() - self.am_failed_before, 0, self.am.log_tail(20))
        self.assertEqual(self.daemon.metric("recoveryd_jobs_total", {"playbook": es.PLAYBOOK,
                                                                     "outcome": "succeeded"}), 1)

    # ------------------------------------------------------------ 2: escalation
    def test_2_restart_does_not_help_escalates_then_resolves(self):
        self.start_scenario("escalation", verify_wait=4, heal_on_patch=False)
        self.start_failing()
        job_id = self.wait_job_queued()
        # retries with the playbook's backoff, scaled down by playbook_overrides (1-2 s, then 2-4 s)
        rec = self.wait_job_end(job_id, timeout=200)
        self.timeline.add("recoveryd: job %s" % rec["state"], es.parse_ts(rec["ended_at"]), rec.get("error") or "")
        self.assertEqual(rec["state"], "failed", "%s\n%s" % (json.dumps(rec.get("attempts"), indent=1),
                                                             self.chain_state()))
        self.assertEqual(rec["attempts_made"], rec["max_attempts"], rec)
        self.assertGreater(rec["max_attempts"], 1, "the playbook retries")
        for a in rec["attempts"]:
            self.assertEqual(a["result"], "failed", a)
            self.assertFalse((a.get("verify") or {}).get("ok", True), a)
            self.assertIn("still holds", (a.get("verify") or {}).get("reason") or "", a)
        # one real restart per attempt, none helped
        self.assertEqual(len(self.patches), rec["max_attempts"], self.k8s.writes())
        self.assertEqual(len(self.restart_patches(rec, planned=False)), rec["max_attempts"])
        self.check_alert_path(rec)

        dedup = "recoveryd/" + rec["key"]
        trig = self.pd.wait_count(1, action="trigger", status=202, timeout=30)
        self.timeline.add("PagerDuty fake: trigger", trig[0].t, trig[0].dedup_key)
        self.slack.wait_count(1, status=200, timeout=30)
        self.timeline.add("Slack fake: failure message", self.slack.requests(status=200)[0].t)
        self.assertEqual(trig[0].dedup_key, dedup)
        self.assertEqual(self.pd.incidents_opened, 1, self.pd.incidents)
        self.assertIn(job_id, json.dumps(trig[0].event))

        # the condition clears: resolved end to end, and PagerDuty resolved
        self.sync.heal()
        self.timeline.add("exporter: error counter stops (the test)")
        self.wait_resolved_notification()
        res = self.pd.wait_count(1, action="resolve", status=202, timeout=30)
        self.timeline.add("PagerDuty fake: resolve", res[0].t, res[0].dedup_key)
        self.assertEqual(res[0].dedup_key, dedup)
        self.assertEqual(self.pd.incidents_opened, 1, self.pd.incidents)
        self.assertEqual(self.pd.open_incidents(), [])
        self.slack.wait_count(2, status=200, timeout=30)
        self.timeline.add("Slack fake: resolved follow-up", self.slack.requests(status=200)[1].t)
        self.assertIn("RESOLVED", self.slack.messages()[1].get("text", ""))
        self.assertEqual(self.pd.count(action="trigger"), 1, self.pd.requests())
        # repeated notifications never started a second job
        self.assertEqual([j["id"] for j in self.daemon.jobs(playbook=es.PLAYBOOK)], [job_id])
        self.assertEqual(self.am_failed() - self.am_failed_before, 0, self.am.log_tail(20))
        want = [("pagerduty", "resolve", "delivered"), ("pagerduty", "trigger", "delivered"),
                ("slack", "resolve", "delivered"), ("slack", "trigger", "delivered")]

        def rows():
            rec = self.daemon.job(job_id)
            return sorted((e["sink"], e["kind"], e["state"]) for e in rec.get("escalations") or [])
        try:
            wait_until(lambda: rows() == want, 15, "the job record to show the four escalations delivered")
        except ChainError:
            self.assertEqual(rows(), want)
        self.add_exact_events(rec)
        self.show_timeline("Timeline, scenario 2 (restart does not help)", "timeline-escalation.txt")

    # ------------------------------------------------------------ 3: dry-run
    def test_3_dry_run_plans_the_restart_and_changes_nothing(self):
        """recoveryd --dry-run: the registry and Prometheus are read, the
        rollout restart is only planned, the Kubernetes fake gets no write.
        Nothing heals, so the playbook's dry-run verify (which reports the
        current state instead of waiting for a repair that cannot happen)
        says the condition still holds and returns true: the outcome is
        dry_run_succeeded, meaning "the plan could be made and every read
        worked", never "the problem is fixed"."""
        self.start_scenario("dryrun", dry_run=True, verify_wait=10)
        self.start_failing()
        job_id = self.wait_job_queued()
        rec = self.wait_job_end(job_id, timeout=60)
        self.timeline.add("recoveryd: job ended %s" % rec.get("outcome"), es.parse_ts(rec["ended_at"]))
        self.assertTrue(rec["dry_run"], rec)
        self.assertEqual(rec["outcome"], "dry_run_succeeded", "%s\n%s" % (
            json.dumps(rec.get("attempts"), indent=1), self.chain_state()))
        self.check_alert_path(rec)
        planned = self.restart_patches(rec, planned=True)
        self.assertEqual(len(planned), 1, rec["actions"])
        self.assertEqual(self.restart_patches(rec, planned=False), [])
        self.assertEqual(self.k8s.writes(), [], "the Kubernetes fake received writes in dry-run")
        self.assertEqual(self.patches, [])
        self.assertGreaterEqual(len(self.registry.requests(path="/api/settings/health")), 1, "reads still run")
        self.assertGreaterEqual(len(self.k8s.requests(method="GET", path=DEPLOYMENT_PATH)), 1, "reads still run")
        verify = rec["attempts"][-1]["verify"]
        self.assertIn("dry-run", verify["reason"])
        self.assertIn("still holds", verify["reason"], "verify read the real, unhealed condition")
        # the sync job is still failing: the alert keeps firing
        self.assertTrue(self.my_prom_alerts(), "the alert should still fire after a dry-run")
        self.assertEqual(self.pd.count(), 0)
        self.assertEqual(self.slack.count(), 0)
        # clean up through the chain: the condition clears, resolved arrives
        self.sync.heal()
        self.timeline.add("exporter: error counter stops (the test)")
        self.wait_resolved_notification()
        self.assertEqual(self.pd.count(), 0)
        self.assertEqual(self.slack.count(), 0)
        self.assertEqual(self.am_failed() - self.am_failed_before, 0, self.am.log_tail(20))
        self.add_exact_events(rec)
        self.show_timeline("Timeline, scenario 3 (dry-run)", "timeline-dryrun.txt")


if __name__ == "__main__":
    unittest.main()

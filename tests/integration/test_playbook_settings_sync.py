"""The shipped settings-sync-recovery playbook (playbooks/settings-sync-recovery.lua)
run by the real daemon against fakes: the Kubernetes API (tests/fakes/k8s_fake.py),
the settings registry (tests/fakes/settings_registry.py), the decK stand-in
(tests/fakes/deck), and Prometheus: Debian's real one scraping a test exporter
(one per class) or the scripted query API (tests/fakes/prom.py).

The playbook is copied unchanged (only its backoff is shortened where a test
goes through retries); its settings come from a config file with
`playbook_settings`, passed with --config."""

import json
import os
import secrets
import shutil
import tempfile
import threading
import time
import unittest

from harness import LUA_PATH, RecoverydTestCase, find_actions
from playbook_support import (DECK, FAST_BACKOFF, FIXTURES_DIR, DeckFake, alert_doc, capture, log_text, shipped_playbook,
                              write_config)

import prom  # noqa: E402  (tests/fakes, on sys.path through harness)
from k8s_fake import K8sFake  # noqa: E402
from settings_registry import SettingsRegistry  # noqa: E402

NAME = "settings-sync-recovery"
FIXTURE = "settings-sync-failure.json"
EXPR = "rate(settings_sync_errors_total[5m]) > 0"
SERIES = {"namespace": "settings", "job": "settings-sync-job", "instance": "10.42.0.17:8080"}
DEPLOY_PATH = "/apis/apps/v1/namespaces/settings/deployments/settings-sync-job"
DRIFT = ("updating plugin rate-limiting (global)  {\n-  \"config\": {\"minute\": 100}\n+  \"config\": {\"minute\": 5}\n}\n"
         "Summary:\n  Created: 0\n  Updated: 1\n  Deleted: 0\n")


def cluster():
    tmpl = {"metadata": {"labels": {"app": "settings-sync-job"}},
            "spec": {"containers": [{"name": "sync", "image": "freshplan/settings-sync-job:1.4.2"}]}}
    cj_tmpl = {"metadata": {"labels": {"app": "settings-sync-job"}},
               "spec": {"backoffLimit": 1, "template": {"spec": {
                   "restartPolicy": "Never",
                   "containers": [{"name": "sync", "image": "freshplan/settings-sync-job:1.4.2",
                                   "args": ["--mode=recovery", "--max-retries=3"]}]}}}}
    return [
        {"kind": "Deployment", "metadata": {"name": "settings-sync-job", "namespace": "settings",
                                            "labels": {"app": "settings-sync-job"}},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "settings-sync-job"}}, "template": tmpl}},
        {"kind": "Deployment", "metadata": {"name": "settings-sync-job", "namespace": "settings-b"},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "settings-sync-job"}}, "template": tmpl}},
        {"kind": "Deployment", "metadata": {"name": "settings-sync-job", "namespace": "kube-system"},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "settings-sync-job"}}, "template": tmpl}},
        {"kind": "Pod", "metadata": {"name": "settings-sync-job-7d9f-a", "namespace": "settings",
                                     "labels": {"app": "settings-sync-job"}}},
        {"kind": "Pod", "metadata": {"name": "settings-sync-job-7d9f-b", "namespace": "settings",
                                     "labels": {"app": "settings-sync-job"}}},
        {"kind": "CronJob", "metadata": {"name": "settings-sync", "namespace": "settings"},
         "spec": {"schedule": "*/5 * * * *", "jobTemplate": cj_tmpl}},
    ]


class SettingsSyncBase(RecoverydTestCase):
    """Fakes for one test; self.prom_url is set by the subclass."""

    def setUp(self):
        super().setUp()
        sa_dir = tempfile.mkdtemp(prefix="sa-", dir=self.tmpdir)
        self.token_file = os.path.join(sa_dir, "token")
        with open(self.token_file, "w") as f:
            f.write("k8s-" + secrets.token_hex(12) + "\n")
        self.sa_dir = sa_dir
        self.k8s = K8sFake(token_file=self.token_file, seed=cluster(), job_delay=0.3).start()
        self.addCleanup(self.k8s.stop)
        self.registry_token = "reg-" + secrets.token_hex(12)
        reg_token_file = os.path.join(self.tmpdir, "registry.token")
        with open(reg_token_file, "w") as f:
            f.write(self.registry_token + "\n")
        self.registry = SettingsRegistry(token_file=reg_token_file).start()
        self.addCleanup(self.registry.stop)
        self.deck = DeckFake(os.path.join(self.tmpdir, "deck"))
        self.addCleanup(self.deck.stop)
        self.policy_file = os.path.join(self.tmpdir, "gateway-policies.yaml")
        with open(self.policy_file, "w") as f:
            f.write('_format_version: "3.0"\n')
        self.repaired = threading.Event()

    def settings(self, **over):
        s = {"registry_health_url": self.registry.health_url,
             "registry_token_secret": "settings-registry-token",
             "k8s_api_url": self.k8s.url, "k8s_token_file": self.token_file,
             "prometheus_url": self.prom_url,
             "rollout_timeout": 15, "wait_interval": 0.1,
             "verify_wait": 2, "verify_interval": 0.2,
             "deck_state_files": [self.policy_file], "deck_bin": DECK, "deck_env": self.deck.env(),
             "kong_admin_url": "http://127.0.0.1:1", "kong_admin_token_secret": "kong-admin-token"}
        s.update(over)
        return s

    def config(self, name="config.lua", **over):
        return write_config(os.path.join(self.tmpdir, name), {NAME: self.settings(**over)},
                            exec_allow=[DECK], read_allow=[self.sa_dir])

    def secrets(self):
        return {"settings-registry-token": self.registry_token + "\n", "kong-admin-token": "kong-tok-1234\n"}

    def start(self, extra_args=(), fields=None, **over):
        cfg = self.config(**over)
        return self.daemon({NAME: shipped_playbook(NAME, fields)}, extra_args=["--config", cfg] + list(extra_args),
                           secrets=self.secrets())

    def fire(self, d, doc=None, timeout=60):
        ans = d.webhook(doc or alert_doc(FIXTURE))
        self.assertEqual(len(ans["jobs"]), 1, ans)
        self.assertEqual(ans["jobs"][0]["playbook"], NAME)
        return d.wait_job(ans["jobs"][0]["id"], timeout=timeout)

    def patches(self, path=DEPLOY_PATH):
        return self.k8s.requests("PATCH", path)

    def dump(self, rec):
        return json.dumps(rec, indent=1)[:4000]


# ---------------------------------------------------------------- real Prometheus

class SettingsSyncRealPrometheusTest(SettingsSyncBase):
    """Debian's Prometheus scrapes an exporter whose error counter grows until
    the fake API server sees the rollout restart; verify re-evaluates the
    alert's expression (a 5 s rate window, so the test stays short) there."""

    GEN_EXPR = "rate(settings_sync_errors_total[5s]) > 0"

    @classmethod
    def setUpClass(cls):
        if not os.environ.get("RECOVERYD_BIN"):
            raise unittest.SkipTest("RECOVERYD_BIN is not set (run through ctest)")
        prom.skip_without_prometheus()
        cls.exporter = prom.Exporter().start()
        cls.exporter.set("settings_sync_errors_total", 0, {"namespace": "settings"}, kind="counter")
        cls.promdir = tempfile.mkdtemp(prefix="recoveryd-prom-")
        cls.prom = prom.RealPrometheus(cls.promdir, targets=[cls.exporter.address], job="settings-sync-job")
        try:
            cls.prom.start()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "prom", None) is not None:
            cls.prom.stop()
        if getattr(cls, "exporter", None) is not None:
            cls.exporter.stop()
        if getattr(cls, "promdir", None):
            shutil.rmtree(cls.promdir, ignore_errors=True)

    def setUp(self):
        super().setUp()
        self.prom_url = self.prom.url

    def test_rollout_restart_verified_by_real_prometheus(self):
        labels = {"namespace": "settings", "job": "settings-sync-job"}
        stop = threading.Event()
        self.addCleanup(stop.set)

        def failing():  # the sync job keeps failing until it is restarted
            deadline = time.monotonic() + 80
            while not stop.is_set() and not self.repaired.is_set() and time.monotonic() < deadline:
                self.exporter.inc("settings_sync_errors_total", 1, labels={"namespace": "settings"})
                time.sleep(0.25)

        threading.Thread(target=failing, daemon=True).start()
        self.prom.wait_for(self.GEN_EXPR, timeout=20)

        def on_request(req):
            if req.method == "PATCH" and req.path == DEPLOY_PATH and req.status == 200:
                self.repaired.set()
        self.k8s.on_request = on_request

        d = self.start(verify_wait=25, verify_interval=0.5)
        doc = alert_doc(FIXTURE, labels={"instance": self.exporter.address}, generator_expr=self.GEN_EXPR)
        rec = self.fire(d, doc)
        capture("settings-sync-success", rec)
        self.assertEqual(rec["state"], "succeeded", self.dump(rec))
        self.assertEqual(len(rec["attempts"]), 1)
        reason = rec["attempts"][0]["verify"]["reason"]
        self.assertIn("alert condition cleared: " + self.GEN_EXPR, reason)
        self.assertIn("gateway policies in sync", reason)

        # the restart: one strategic-merge patch of the restartedAt annotation
        p = self.patches()
        self.assertEqual(len(p), 1, self.k8s.requests())
        self.assertEqual(p[0].header("Content-Type"), "application/strategic-merge-patch+json")
        ann = p[0].json()["spec"]["template"]["metadata"]["annotations"]
        self.assertIn("kubectl.kubernetes.io/restartedAt", ann)
        self.assertEqual(self.k8s.writes(), p, "nothing but the patch was written")
        # the registry was checked first, with the bearer token
        h = self.registry.requests("GET", "/api/settings/health")
        self.assertEqual(len(h), 1)
        self.assertEqual(h[0].header("Authorization"), "Bearer " + self.registry_token)
        self.assertLess(h[0].t, p[0].t)
        # verify ran deck diff (read-only) against the policy file, with the admin token
        diffs = self.deck.calls("diff")
        self.assertEqual(len(diffs), 1, self.deck.calls())
        self.assertEqual(diffs[0]["files"], [self.policy_file])
        self.assertIn("Kong-Admin-Token:kong-tok-1234", diffs[0]["argv"])
        self.assertEqual(self.deck.calls("sync"), [])
        self.assertNotIn("kong-tok-1234", json.dumps(rec), "secrets are redacted in the record")
        self.assertNotIn(self.registry_token, json.dumps(rec))
        self.assertTrue(find_actions(rec, "GET", self.prom.url + "/api/v1/query?query="))
        self.assertIn("rollout restart of deployment/settings-sync-job in namespace settings", log_text(rec))


# ---------------------------------------------------------------- scripted Prometheus

class SettingsSyncTest(SettingsSyncBase):

    def setUp(self):
        super().setUp()
        self.api = prom.FakePromAPI().start()
        self.addCleanup(self.api.stop)
        self.prom_url = self.api.url
        self.api.answer(EXPR, prom.vector([(SERIES, 0.2)]))

    def clear_alert(self):
        self.repaired.set()
        self.api.answer(EXPR, prom.vector([]))

    # ---------------------------------------------------------------- methods

    def test_rollout_restart_of_a_statefulset_label_override(self):
        """rollout of a StatefulSet in a namespace taken from an allowed alert
        label; a label outside the allow-list, or not a DNS-1123 label, fails
        at once without a write."""
        self.k8s.add({"kind": "StatefulSet", "metadata": {"name": "settings-sync-job", "namespace": "settings-b"},
                      "spec": {"replicas": 2, "serviceName": "s", "selector": {"matchLabels": {"app": "s"}},
                               "template": {"metadata": {"labels": {"app": "s"}}, "spec": {}}}})
        path_b = "/apis/apps/v1/namespaces/settings-b/statefulsets/settings-sync-job"
        self.k8s.on_request = lambda r: r.method == "PATCH" and r.status == 200 and self.clear_alert()
        d = self.start(target_kind="statefulset", namespace_label="namespace",
                       allowed_namespaces=["settings-b"])
        rec = self.fire(d, alert_doc(FIXTURE, labels={"namespace": "settings-b"}))
        self.assertEqual(rec["state"], "succeeded", self.dump(rec))
        self.assertEqual(len(self.k8s.requests("PATCH", path_b)), 1, self.k8s.requests())
        self.assertEqual(self.patches(), [], "the default namespace was not touched")
        self.assertIn("statefulset", log_text(rec))

        # a namespace that is valid but not allowed: failed at once, nothing written
        rec = self.fire(d, alert_doc(FIXTURE, labels={"namespace": "kube-system"}))
        self.assertEqual(rec["state"], "failed", self.dump(rec))
        self.assertEqual(len(rec["attempts"]), 1)
        self.assertIn('alert label namespace="kube-system" names a namespace that is not in allowed_namespaces',
                      rec["attempts"][0]["error"])
        # not a DNS-1123 label
        rec = self.fire(d, alert_doc(FIXTURE, labels={"namespace": "../settings"}))
        self.assertEqual(rec["state"], "failed", self.dump(rec))
        self.assertIn("is not a valid namespace (DNS-1123 label)", rec["attempts"][0]["error"])
        self.assertEqual(len(self.k8s.writes()), 1, "only the first job wrote anything")

    def test_delete_pods_waits_for_replacements(self):
        deleted = []

        def on_request(req):  # the ReplicaSet controller: a new pod for each deleted one
            if req.method == "DELETE" and "/pods/" in req.path and req.status == 200:
                deleted.append(req.path.rsplit("/", 1)[1])
                self.k8s.add({"kind": "Pod", "metadata": {"name": "settings-sync-job-8c1e-%d" % len(deleted),
                                                          "namespace": "settings",
                                                          "labels": {"app": "settings-sync-job"}}})
                if len(deleted) == 2:
                    self.clear_alert()
        self.k8s.on_request = on_request
        d = self.start(restart_method="delete_pods", delete_grace=10)
        rec = self.fire(d)
        capture("settings-sync-delete-pods", rec)
        self.assertEqual(rec["state"], "succeeded", self.dump(rec))
        self.assertEqual(sorted(deleted), ["settings-sync-job-7d9f-a", "settings-sync-job-7d9f-b"])
        dels = self.k8s.requests("DELETE")
        self.assertEqual(len(dels), 2)
        body = dels[0].json()
        self.assertEqual(body["gracePeriodSeconds"], 10)
        self.assertEqual(body["propagationPolicy"], "Background")
        self.assertIn("uid", body["preconditions"])
        self.assertEqual(self.patches(), [])
        self.assertIn("2 of 2 replacement pod(s) ready", log_text(rec))

    def test_cronjob_creates_a_job_and_waits_for_it(self):
        self.k8s.on_request = lambda r: r.method == "POST" and r.status == 201 and self.clear_alert()
        d = self.start(restart_method="cronjob", target_name="settings-sync")
        rec = self.fire(d)
        self.assertEqual(rec["state"], "succeeded", self.dump(rec))
        posts = self.k8s.requests("POST", "/apis/batch/v1/namespaces/settings/jobs")
        self.assertEqual(len(posts), 1)
        job = posts[0].json()
        self.assertTrue(job["metadata"]["name"].startswith("settings-sync-manual-"), job["metadata"])
        self.assertEqual(job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"], "manual")
        self.assertEqual(job["metadata"]["ownerReferences"][0]["name"], "settings-sync")
        self.assertEqual(job["spec"]["template"]["spec"]["containers"][0]["args"], ["--mode=recovery", "--max-retries=3"])
        self.assertIn("completed", log_text(rec))

    # ---------------------------------------------------------------- failures

    def test_verification_failing_retries_then_fails(self):
        """The errors do not stop: every attempt restarts again (a rollout
        restart is safe to repeat), verify gives up after verify_wait, and
        after 1 + retries attempts the job fails."""
        d = self.start(fields=FAST_BACKOFF, verify_wait=0.6, verify_interval=0.2)
        rec = self.fire(d)
        capture("settings-sync-verify-failed", rec)
        self.assertEqual(rec["state"], "failed", self.dump(rec))
        self.assertEqual(rec["outcome"], "failed")
        self.assertEqual(len(rec["attempts"]), 3, "retries = 2")
        for a in rec["attempts"]:
            self.assertEqual(a["result"], "failed")
            self.assertIn("verify: timed out after 0.6s: alert condition still holds: " + EXPR, a["error"])
            self.assertIn('instance="10.42.0.17:8080"', a["error"])
        self.assertEqual(len(self.patches()), 3)
        self.assertEqual(self.deck.calls("diff"), [], "deck diff only runs once the alert condition is gone")

    def test_gateway_policy_drift_fails_verify(self):
        self.k8s.on_request = lambda r: r.method == "PATCH" and r.status == 200 and self.clear_alert()
        self.deck.set_scenario({"diff": [{"exit": 2, "stdout": DRIFT}]})
        d = self.start(fields=FAST_BACKOFF, deck_select_tags=["settings-sync"])
        rec = self.fire(d)
        self.assertEqual(rec["state"], "failed", self.dump(rec))
        err = rec["attempts"][0]["error"]
        self.assertIn("verify: gateway policies drift from " + self.policy_file, err)
        self.assertIn("updating plugin rate-limiting (global) ...; created 0, updated 1, deleted 0", err)
        diff = self.deck.calls("diff")[0]
        self.assertIn("--non-zero-exit-code", diff["argv"])
        self.assertEqual(diff["argv"][diff["argv"].index("--select-tag") + 1], "settings-sync")
        self.assertEqual(self.deck.calls("sync"), [], "verify never syncs")

    def test_registry_down_fails_at_once_without_restarting(self):
        self.registry.set_up(False)
        d = self.start()
        rec = self.fire(d)
        capture("settings-sync-registry-down", rec)
        self.assertEqual(rec["state"], "failed", self.dump(rec))
        self.assertEqual(len(rec["attempts"]), 1, "recovery.fail: no retries")
        err = rec["attempts"][0]["error"]
        self.assertTrue(err.startswith("settings registry unhealthy: HTTP 503 (status DOWN)"), err)
        self.assertEqual(self.k8s.requests(), [], "not even a read of the cluster")
        self.assertEqual(self.deck.calls(), [])
        self.assertEqual(len(self.registry.requests()), 1)

    def test_registry_unreachable_or_wrong_token_is_unhealthy(self):
        d = self.start(registry_health_url="http://127.0.0.1:1/api/settings/health")
        rec = self.fire(d)
        self.assertEqual(len(rec["attempts"]), 1)
        self.assertIn("settings registry unhealthy: ", rec["attempts"][0]["error"])
        self.assertEqual(self.k8s.requests(), [])
        d.stop()
        d2 = self.daemon({NAME: shipped_playbook(NAME)},
                         extra_args=["--config", self.config("config2.lua")],
                         secrets={"settings-registry-token": "wrong-token\n", "kong-admin-token": "k\n"},
                         subdir="second")
        rec = self.fire(d2)
        self.assertEqual(len(rec["attempts"]), 1)
        self.assertIn("settings registry unhealthy: HTTP 401", rec["attempts"][0]["error"])
        self.assertEqual(self.k8s.requests(), [])

    # ---------------------------------------------------------------- dry-run

    def test_dry_run_plans_the_patch_and_sends_no_write(self):
        d = self.start(extra_args=["--dry-run"])
        rec = self.fire(d)
        capture("settings-sync-dry-run", rec)
        self.assertEqual(rec["outcome"], "dry_run_succeeded", self.dump(rec))
        planned = [(a.get("method"), a.get("url", "").replace(self.k8s.url, "")) for a in rec["actions"]
                   if a.get("planned")]
        self.assertEqual(planned, [("PATCH", DEPLOY_PATH + "?fieldManager=kubectl-rollout")])
        self.assertEqual(self.k8s.writes(), [], "the API server received no write")
        self.assertEqual(len(self.k8s.requests("GET", DEPLOY_PATH)), 1, "the read before the patch runs")
        self.assertEqual(self.deck.subs(), ["diff"], "deck diff is read-only: it runs in dry-run")
        self.assertIn("dry-run: nothing was changed", rec["attempts"][0]["verify"]["reason"])
        self.assertIn("alert condition still holds", rec["attempts"][0]["verify"]["reason"])

    def test_cli_run_dry_run_offline(self):
        d = self.daemon({NAME: shipped_playbook(NAME)}, start=False, secrets=self.secrets())
        cfg = self.config()
        p = d.run_cli(["run", NAME, "--alert", os.path.join(FIXTURES_DIR, FIXTURE),
                       "--config", cfg, "--dry-run", "--playbooks", d.playbooks_dir, "--lua-path", LUA_PATH,
                       "--secrets-dir", d.secrets_dir], timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("(dry-run)", p.stdout.splitlines()[0])
        planned = [l for l in p.stdout.splitlines() if "PLANNED" in l]
        self.assertEqual(len(planned), 1, p.stdout)
        self.assertIn("PATCH ", planned[0])
        self.assertIn("deployments/settings-sync-job", planned[0])
        self.assertIn("outcome dry_run_succeeded", p.stdout)
        self.assertEqual(self.k8s.writes(), [])
        if os.environ.get("RECOVERYD_CAPTURE_DIR"):
            with open(os.path.join(os.environ["RECOVERYD_CAPTURE_DIR"], "settings-sync-cli-run.txt"), "w") as f:
                f.write(p.stdout)


if __name__ == "__main__":
    unittest.main()

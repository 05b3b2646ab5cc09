"""The shipped schema-rollback playbook (playbooks/schema-rollback.lua) run by
the real daemon against a fake schema registry (tests/fakes/schema_registry.py)
and a fake Prometheus query API (schema_rollback_support.py).

Each test copies the shipped file unchanged (only its backoff line is shortened,
for speed) and passes its settings (registry and Prometheus URLs, short verify
waits) in a config file with playbook_settings (--config)."""

import json
import os
import re
import time
import unittest

from harness import LUA_PATH, RecoverydTestCase, find_actions, fixture
from playbook_support import capture, write_config
from schema_rollback_support import ALERT_FIXTURE, FakePrometheus, config_file, shipped_playbook
from schema_registry import ORDER_V1, ORDER_V2, SchemaRegistry, seed

SUBJECT = "orders-value"
FAST = {"backoff": {"initial": 0.1, "factor": 1, "max": 0.1}}


class SchemaRollbackTest(RecoverydTestCase):

    def setUp(self):
        super().setUp()
        self.reg = SchemaRegistry().start()
        self.addCleanup(self.reg.stop)
        self.prom = FakePrometheus(self.reg, rates=[0.0]).start()
        self.addCleanup(self.prom.stop)

    def config(self, **settings):
        base = {"registry_url": self.reg.url, "prometheus_url": self.prom.url,
                "verify_wait": 1, "verify_interval": 0.2}
        base.update(settings)
        return config_file(os.path.join(self.tmpdir, "config.lua"), **base)

    def start(self, extra_args=(), secrets=None, fields=FAST, **settings):
        return self.daemon({"schema-rollback": shipped_playbook(fields=fields)},
                           extra_args=["--config", self.config(**settings)] + list(extra_args), secrets=secrets)

    def fire(self, d, doc=None):
        ans = d.webhook(doc or fixture("event-validation-spike.json"))
        self.assertEqual(len(ans["jobs"]), 1, ans)
        self.assertEqual(ans["jobs"][0]["playbook"], "schema-rollback")
        return d.wait_job(ans["jobs"][0]["id"], timeout=30)

    def registrations(self):
        return self.reg.requests("POST", "/subjects/%s/versions" % SUBJECT)

    def deletes(self):
        return self.reg.requests("DELETE")

    def log_text(self, rec):
        return "\n".join(l.get("msg", "") for l in rec.get("log") or [])

    # ---------------------------------------------------------------- success

    def test_rolls_back_a_recent_version_and_verifies(self):
        v1_id, _ = self.reg.add(SUBJECT, ORDER_V1, created=time.time() - 30 * 86400)
        v2_id, _ = self.reg.add(SUBJECT, ORDER_V2, created=time.time() - 60)
        self.reg.auth = ("reg-api-key", "reg-api-secret-123")
        self.prom.rates = [0.4, 0.0]  # the first verify check still sees errors, the second not
        d = self.start(registry_auth="basic",
                       secrets={"schema-registry-username": "reg-api-key\n",
                                "schema-registry-password": "reg-api-secret-123\n"})
        rec = self.fire(d)
        capture("schema-rollback-success", rec)
        self.assertEqual(rec["state"], "succeeded", json.dumps(rec, indent=1)[:3000])
        self.assertEqual(rec["outcome"], "succeeded")
        self.assertEqual(len(rec["attempts"]), 1)
        self.assertTrue(rec["attempts"][0]["verify"]["ok"], rec["attempts"][0])
        self.assertIn("no longer matches", rec["attempts"][0]["verify"]["reason"])

        # the previous schema was registered again (Confluent: existing id,
        # no new version), then the bad version was soft-deleted
        regs = self.registrations()
        self.assertEqual(len(regs), 1, regs)
        self.assertEqual(regs[0].json()["schema"], ORDER_V1)
        self.assertNotIn("schemaType", regs[0].json(), "AVRO is the default and is left out")
        self.assertEqual(regs[0].header("Content-Type"), "application/vnd.schemaregistry.v1+json")
        self.assertEqual([r.path for r in self.deletes()], ["/subjects/%s/versions/2" % SUBJECT])
        compat = self.reg.requests("POST", "/compatibility/subjects/%s/versions/2" % SUBJECT)
        self.assertEqual(len(compat), 1)
        self.assertLess(compat[0].t, regs[0].t, "compatibility is checked before registering")
        latest = self.reg.latest(SUBJECT)
        self.assertEqual((latest["version"], latest["id"]), (1, v1_id))
        self.assertNotEqual(v1_id, v2_id)

        # what the record says
        log = self.log_text(rec)
        self.assertIn("rolling orders-value back from version 2", log)
        self.assertIn("version 2 soft-deleted", log)
        done = [l for l in rec["log"] if l.get("msg", "").startswith("rolled ")]
        self.assertEqual(len(done), 1, rec["log"])
        self.assertNotIn("reg-api-secret-123", json.dumps(rec))
        posts = [a for a in find_actions(rec, "POST", planned=False) if a["url"].endswith("/subjects/orders-value/versions")]
        self.assertEqual(len(posts), 1, rec["actions"])
        self.assertEqual(len(find_actions(rec, "DELETE", "/subjects/orders-value/versions/2", planned=False)), 1)
        # verify re-evaluated the alert's own expression
        self.assertIn("rate(event_validation_errors_total[5m]) > 0.1", self.prom.rate_queries())

    def test_approval_gated_rollback_waits_shows_its_plan_and_runs_after_approval(self):
        """As the production overlay ships it (k8s/overlays/production): the
        rollback changes shared state, so a human approves its plan first."""
        v1_id, _ = self.reg.add(SUBJECT, ORDER_V1, created=time.time() - 30 * 86400)
        self.reg.add(SUBJECT, ORDER_V2, created=time.time() - 60)
        settings = {"registry_url": self.reg.url, "prometheus_url": self.prom.url,
                    "verify_wait": 1, "verify_interval": 0.2}
        cfg = write_config(os.path.join(self.tmpdir, "config.lua"), {"schema-rollback": settings},
                           playbook_overrides={"schema-rollback": {"approval": {"required": True,
                                                                                "timeout": 900}}})
        d = self.daemon({"schema-rollback": shipped_playbook(fields=FAST)}, extra_args=["--config", cfg])
        job = d.webhook(fixture("event-validation-spike.json"))["jobs"][0]["id"]
        rec = d.wait_job(job, {"awaiting_approval"}, timeout=30)
        capture("schema-rollback-awaiting-approval", rec)
        # the plan: register v1 again, soft-delete v2; nothing changed yet
        versions = self.reg.url + "/subjects/%s/versions" % SUBJECT
        self.assertIn("http POST " + versions, rec["plan"])
        self.assertIn("http DELETE " + versions + "/2", rec["plan"])
        self.assertEqual(self.registrations(), [])
        self.assertEqual(self.deletes(), [])
        self.assertEqual(self.reg.latest(SUBJECT)["version"], 2)
        time.sleep(0.5)
        self.assertEqual(d.job(job)["state"], "awaiting_approval")

        st, _, doc = d.api("POST", "/api/v1/jobs/%s/approve" % job, {"reason": "v2 broke validation"})
        self.assertStatus(st, 200, d, doc)
        rec = d.wait_job(job, timeout=30)
        self.assertEqual(rec["state"], "succeeded", json.dumps(rec, indent=1)[:3000])
        self.assertEqual(rec["approval"]["approved_by"], "operator")
        self.assertEqual(len(self.registrations()), 1)
        self.assertEqual([r.path for r in self.deletes()], ["/subjects/%s/versions/2" % SUBJECT])
        latest = self.reg.latest(SUBJECT)
        self.assertEqual((latest["version"], latest["id"]), (1, v1_id))
        self.assertTrue(rec["plan_diff"]["matches"], rec["plan_diff"])

    def test_apicurio_registration_time_source(self):
        seed(self.reg, SUBJECT, latest_age=120)
        d = self.start(registered_at_source="apicurio",
                       apicurio_meta_url=self.reg.url + "/apis/registry/v3/groups/default/artifacts/{subject}/versions/{version}")
        rec = self.fire(d)
        self.assertEqual(rec["state"], "succeeded", json.dumps(rec, indent=1)[:3000])
        self.assertEqual(len(self.reg.requests("GET", "/apis/registry/v3/groups/default/artifacts/orders-value/versions/2")), 1)
        self.assertEqual(self.reg.latest(SUBJECT)["version"], 1)

    # ---------------------------------------------------------------- failures

    def test_verification_failing_retries_once_and_fails_without_a_second_rollback(self):
        seed(self.reg, SUBJECT, latest_age=60)
        self.prom.rates = [0.5]
        d = self.start()
        rec = self.fire(d)
        self.assertEqual(rec["state"], "failed", json.dumps(rec, indent=1)[:3000])
        self.assertEqual(rec["outcome"], "failed")
        self.assertEqual(len(rec["attempts"]), 2, "retries = 1")
        for a in rec["attempts"]:
            self.assertEqual(a["result"], "failed")
            self.assertIn("still 0.5 errors/s", a["error"])
        # attempt 2 saw the rollback in place and did not roll back further
        self.assertEqual(len(self.registrations()), 1)
        self.assertEqual(len(self.deletes()), 1)
        self.assertEqual(self.reg.versions(SUBJECT), [1])
        self.assertIn("the rollback is in place", self.log_text(rec))

    def test_old_latest_version_is_not_a_schema_problem(self):
        seed(self.reg, SUBJECT, latest_age=3 * 86400)
        d = self.start()
        rec = self.fire(d)
        self.assertEqual(rec["state"], "failed")
        self.assertEqual(len(rec["attempts"]), 1, "recovery.fail: a precondition failure is not retried")
        first = rec["attempts"][0]
        self.assertEqual(first["result"], "failed")
        self.assertTrue(first["error"].startswith(
            "version 2 of orders-value was registered 3d 0h ago, outside the 1h 0m window"), first["error"])
        self.assertIn("not caused by a recent schema change", first["error"])
        self.assertEqual(self.reg.writes(), [], "nothing registered or deleted")
        self.assertEqual(self.reg.requests("POST"), [], "not even a compatibility check")
        self.assertEqual(self.reg.latest(SUBJECT)["version"], 2)

    def test_unknown_registration_time_does_not_roll_back_blindly(self):
        seed(self.reg, SUBJECT, latest_age=60)
        self.prom.created_known = False
        d = self.start()
        rec = self.fire(d)
        self.assertEqual(rec["state"], "failed")
        self.assertEqual(len(rec["attempts"]), 1)
        self.assertIn("cannot tell when version 2 of orders-value was registered", rec["attempts"][0]["error"])
        self.assertIn("not rolling back blindly", rec["attempts"][0]["error"])
        self.assertEqual(self.reg.writes(), [])

    def test_incompatible_previous_schema_registers_nothing(self):
        seed(self.reg, SUBJECT, latest_age=60)
        self.reg.compatible = False
        d = self.start()
        rec = self.fire(d)
        self.assertEqual(rec["state"], "failed")
        self.assertEqual(len(rec["attempts"]), 1)
        err = rec["attempts"][0]["error"]
        self.assertIn("incompatible with version 2", err)
        self.assertIn("nothing was registered", err)
        self.assertEqual(len(self.reg.requests("POST", "/compatibility/")), len(rec["attempts"]))
        self.assertEqual(self.reg.writes(), [])
        self.assertEqual(self.reg.latest(SUBJECT)["version"], 2)

    def test_subject_label_is_validated(self):
        seed(self.reg, SUBJECT, latest_age=60)
        doc = fixture("event-validation-spike.json")
        doc["alerts"][0]["labels"]["subject"] = "../config"
        doc["alerts"][0]["fingerprint"] = "0123456789abcdef"
        d = self.start()
        rec = self.fire(d, doc)
        self.assertEqual(rec["state"], "failed")
        self.assertEqual(len(rec["attempts"]), 1)
        self.assertIn("subject: '../config' must contain only", rec["attempts"][0]["error"])
        self.assertEqual(self.reg.requests(), [], "no request with an invalid subject")

    # ---------------------------------------------------------------- dry-run

    def test_dry_run_plans_the_writes_and_sends_none(self):
        seed(self.reg, SUBJECT, latest_age=60)
        self.prom.rates = [0.5]
        d = self.start(extra_args=["--dry-run"])
        rec = self.fire(d)
        capture("schema-rollback-dry-run", rec)
        self.assertEqual(rec["outcome"], "dry_run_succeeded", json.dumps(rec, indent=1)[:3000])
        planned = [(a["method"], a["url"].replace(self.reg.url, "")) for a in rec["actions"] if a.get("planned")]
        self.assertEqual(planned, [
            ("POST", "/subjects/orders-value/versions"),
            ("DELETE", "/subjects/orders-value/versions/2"),
        ])
        # The compatibility check only reads (mutates = false): it runs in dry-run too.
        self.assertEqual([r.path for r in self.reg.requests("POST")],
                         ["/compatibility/subjects/orders-value/versions/2"], "the registry received no write")
        self.assertEqual(self.reg.requests("DELETE"), [])
        self.assertEqual(self.reg.latest(SUBJECT)["version"], 2)
        self.assertIn("dry-run: would register the schema of version 1 of orders-value again", self.log_text(rec))
        self.assertIn("dry-run: nothing was changed", rec["attempts"][0]["verify"]["reason"])

    def test_cli_run_dry_run_offline(self):
        seed(self.reg, SUBJECT, latest_age=60)
        d = self.daemon({"schema-rollback": shipped_playbook()}, start=False)
        p = d.run_cli(["run", "schema-rollback", "--alert", ALERT_FIXTURE, "--dry-run", "--config", self.config(),
                       "--playbooks", d.playbooks_dir, "--lua-path", LUA_PATH, "--secrets-dir", d.secrets_dir],
                      timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("(dry-run)", p.stdout.splitlines()[0])
        planned = [l for l in p.stdout.splitlines() if "PLANNED" in l]
        self.assertEqual(len(planned), 2, p.stdout)
        self.assertTrue(any(re.search(r"POST \S+/subjects/orders-value/versions PLANNED$", l) for l in planned),
                        p.stdout)
        self.assertIn("outcome dry_run_succeeded", p.stdout)
        self.assertEqual(self.reg.writes(), [])


if __name__ == "__main__":
    unittest.main()

"""What the Alertmanager (webhook) token may reach, and how manual triggers
and Alertmanager notifications stay out of each other's jobs."""

import time
import unittest

from escalation_support import EscalationTestCase
from harness import FP_SINGLE, RecoverydTestCase, fixture, fixture_bytes, playbook

SETTINGS = 'alertname="SettingsSyncJobFailure"'

RUN_SLOW = 'recovery.sleep(2)'


def labels_single():
    return dict(fixture("firing-single.json")["alerts"][0]["labels"])


class WebhookTokenScopeTest(RecoverydTestCase):

    def test_trigger_needs_the_operator_token(self):
        d = self.daemon({"p": playbook("p", "return", match=[SETTINGS], cooldown=3600,
                                       budget={"runs": 2, "per": 3600})})
        manual = {"labels": {"alertname": "Other"}, "annotations": {}, "reason": "r"}
        # The webhook token is valid but not enough: 403, nothing started.
        for body in (manual, fixture_bytes("firing-single.json")):
            for query in ("", "?wait=5", "?dry_run=1"):
                doc = self.assertError(d.post("/trigger/p" + query, body, token="webhook"),
                                       403, "forbidden")
                self.assertIn("operator", doc["message"])
        # Unknown playbook: still 403 (a webhook token learns nothing about names).
        self.assertError(d.post("/trigger/nope", manual, token="webhook"), 403, "forbidden")
        # No token or a wrong one: 401.
        self.assertError(d.post("/trigger/p", manual, token=None), 401, "unauthorized")
        self.assertError(d.post("/trigger/p", manual, token="x" * 40), 401, "unauthorized")
        self.assertEqual(d.jobs(), [], "a refused trigger must not create jobs")

        # The webhook token on the operator API: 403 as well, with a clear message.
        for path in ("/api/v1/jobs", "/api/v1/playbooks", "/api/v1/jobs/whatever"):
            self.assertError(d.get(path, token="webhook"), 403, "forbidden")
        self.assertError(d.post("/api/v1/jobs/whatever/cancel", None, token="webhook"), 403, "forbidden")
        self.assertGreaterEqual(d.metric("recoveryd_requests_rejected_total", {"reason": "forbidden"}), 10)

        # The budget stays for Alertmanager: its notifications are admitted as usual.
        doc = d.webhook("firing-single.json")
        self.assertEqual(doc["jobs"][0]["state"], "queued", doc)
        # The operator may still trigger by hand.
        st, _, doc = d.trigger("p", manual, token="operator")
        self.assertStatus(st, 202, d, doc)

    def test_webhook_answers_never_carry_job_records(self):
        d = self.daemon({"p": playbook("p", "return", match=[SETTINGS])})
        st, _, doc = d.post("/webhook?wait=5", fixture_bytes("firing-single.json"), token="webhook")
        self.assertStatus(st, 202, d, doc)
        self.assertEqual(set(doc), {"jobs", "unmatched"}, doc)
        for j in doc["jobs"]:
            self.assertEqual(set(j), {"id", "playbook", "key", "state"}, doc)


class ManualVersusAlertmanagerTest(RecoverydTestCase):

    def test_manual_form_cannot_cancel_or_join_an_alertmanager_job(self):
        d = self.daemon({"p": playbook("p", RUN_SLOW, match=[SETTINGS], cooldown=0)})
        job = d.webhook("firing-single.json")["jobs"][0]
        self.assertEqual((job["state"], job["key"]), ("queued", "p/" + FP_SINGLE))

        # "resolved" in the manual form, with the alert's fingerprint: refused.
        body = {"labels": labels_single(), "fingerprint": FP_SINGLE, "status": "resolved", "reason": "x"}
        doc = self.assertError(d.trigger("p", body, token="operator"), 409, "conflict")
        self.assertIn(job["id"], doc["message"])
        # The same alert fired by hand does not join the Alertmanager job.
        body = {"labels": labels_single(), "fingerprint": FP_SINGLE, "reason": "x"}
        doc = self.assertError(d.trigger("p", body, token="operator", query="wait=1"), 409, "conflict")
        self.assertIn(job["id"], doc["message"])

        rec = d.wait_job(job["id"], timeout=15)
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(len(d.jobs(playbook="p")), 1)

        # Once it ended, a manual run is fine, under its own key.
        st, _, doc = d.trigger("p", body, token="operator")
        self.assertStatus(st, 202, d, doc)
        self.assertEqual(doc["jobs"][0]["state"], "queued", doc)
        self.assertEqual(doc["jobs"][0]["key"], "p/manual/" + FP_SINGLE, doc)
        self.assertEqual(d.job(doc["jobs"][0]["id"])["trigger"], "manual")

    def test_alertmanager_does_not_cancel_or_duplicate_a_manual_job(self):
        d = self.daemon({"p": playbook("p", RUN_SLOW, match=[SETTINGS], cooldown=0)})
        body = {"labels": labels_single(), "reason": "by hand"}
        st, _, doc = d.trigger("p", body, token="operator")
        self.assertStatus(st, 202, d, doc)
        mine = doc["jobs"][0]
        # The alert fires: folded into the running manual job, no second run.
        doc = d.webhook("firing-single.json")
        self.assertEqual([(j["id"], j["state"]) for j in doc["jobs"]], [(mine["id"], "coalesced")], doc)
        # The alert resolves: the manual job is not cancelled.
        doc = d.webhook("resolved.json")
        self.assertEqual(doc["jobs"], [], doc)
        rec = d.wait_job(mine["id"], timeout=15)
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(len(d.jobs(playbook="p")), 1)

    def test_manual_resolved_cancels_its_own_manual_job(self):
        d = self.daemon({"p": playbook("p", 'recovery.sleep(5)', match=[SETTINGS], cooldown=0)})
        labels = {"alertname": "Manual", "instance": "a"}
        st, _, doc = d.trigger("p", {"labels": labels, "reason": "r"}, token="operator")
        self.assertStatus(st, 202, d, doc)
        mine = doc["jobs"][0]
        time.sleep(0.3)
        st, _, doc = d.trigger("p", {"labels": labels, "status": "resolved"}, token="operator")
        self.assertStatus(st, 202, d, doc)
        self.assertEqual([(j["id"], j["state"]) for j in doc["jobs"]], [(mine["id"], "cancelled")], doc)
        self.assertEqual(d.wait_job(mine["id"], timeout=15)["state"], "cancelled")


class ManualIncidentTest(EscalationTestCase):

    def test_resolved_notification_resolves_a_failed_manual_run(self):
        pd = self.pagerduty()
        failing = playbook("p", "return", 'return false, "still broken"', match=[SETTINGS],
                           backoff={"initial": 0.05, "factor": 1, "max": 0.1})
        d = self.esc_daemon({"p": failing}, pd=pd)
        st, _, doc = d.trigger("p", {"labels": labels_single(), "reason": "by hand"})
        self.assertStatus(st, 202, d, doc)
        job_id = doc["jobs"][0]["id"]
        self.wait_states(d, job_id, {"pagerduty": "delivered"})
        trig = pd.events("trigger")[0]
        self.assertEqual(trig["dedup_key"], "recoveryd/p/manual/" + FP_SINGLE)
        self.assertTrue(pd.incident(trig["dedup_key"]).open)
        # The alert resolves in Alertmanager: the manual run's incident closes too.
        d.webhook("resolved.json")
        res = pd.wait_count(1, action="resolve", timeout=10)[0]
        self.assertEqual(res.event["dedup_key"], trig["dedup_key"])
        self.assertFalse(pd.incident(trig["dedup_key"]).open)


if __name__ == "__main__":
    unittest.main()

"""Admission: coalescing, cooldown, run budget, resolved alerts, cancel."""

import time
import unittest

from harness import FP_SINGLE, RecoverydTestCase, playbook, variant

SETTINGS = 'alertname="SettingsSyncJobFailure"'

RUN_SLOW = '''
must(recovery.http{method = "POST", url = FAKE .. "/restart", json = {job = ctx.job.id, attempt = ctx.job.attempt}})
recovery.sleep(1.5)
'''

RUN_QUICK = '''
must(recovery.http{method = "POST", url = FAKE .. "/restart", json = {job = ctx.job.id, attempt = ctx.job.attempt,
  instance = ctx.alert.labels.instance}})
'''

VERIFY_HEALTH = '''
local resp = must(recovery.http{method = "GET", url = FAKE .. "/health"})
if resp.status == 200 then return true end
return false, "still broken"
'''

VERIFY_SLOW_HEALTH = '''
must(recovery.http{method = "POST", url = FAKE .. "/verifying", json = {job = ctx.job.id}})
recovery.sleep(1.5)
local resp = must(recovery.http{method = "GET", url = FAKE .. "/health"})
if resp.status == 200 then return true, "health answered 200" end
return false, "still broken"
'''

RUN_STARTED_SLEEP = '''
must(recovery.http{method = "POST", url = FAKE .. "/started", json = {job = ctx.job.id, attempt = ctx.job.attempt}})
recovery.sleep(3)
must(recovery.http{method = "POST", url = FAKE .. "/after-sleep", json = {job = ctx.job.id}})
'''


class AdmissionTest(RecoverydTestCase):

    def test_repeated_notifications_coalesce_then_cooldown(self):
        fake = self.fake()
        d = self.daemon({"p": playbook("p", RUN_SLOW, "return true", match=[SETTINGS], fake=fake, cooldown=60)})
        answers = [d.webhook("firing-single.json")["jobs"] for _ in range(3)]
        for a in answers:
            self.assertEqual(len(a), 1, answers)
        states = [a[0]["state"] for a in answers]
        self.assertEqual(states, ["queued", "coalesced", "coalesced"], answers)
        ids = {a[0]["id"] for a in answers}
        self.assertEqual(len(ids), 1, answers)
        self.assertEqual({a[0]["key"] for a in answers}, {"p/" + FP_SINGLE})
        job_id = ids.pop()
        self.assertEqual([j["id"] for j in d.jobs(playbook="p")], [job_id])

        text = d.metrics()
        self.assertEqual(d.metric_value(text, "recoveryd_admissions_total",
                                        {"playbook": "p", "decision": "coalesced"}), 2)
        self.assertEqual(d.metric_value(text, "recoveryd_admissions_total",
                                        {"playbook": "p", "decision": "queued"}), 1)

        rec = d.wait_job(job_id, timeout=10)
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(len(rec["attempts"]), 1)
        self.assertEqual(fake.count("POST", "/restart"), 1)

        # the key now rests: a new notification starts nothing
        doc = d.webhook("firing-single.json")
        self.assertEqual(len(doc["jobs"]), 1, doc)
        self.assertEqual(doc["jobs"][0]["state"], "cooldown", doc)
        self.assertEqual(doc["jobs"][0]["key"], "p/" + FP_SINGLE)
        time.sleep(0.5)
        self.assertEqual(fake.count("POST", "/restart"), 1, fake.requests())
        self.assertEqual(d.metric("recoveryd_admissions_total", {"playbook": "p", "decision": "cooldown"}), 1)
        self.assertEqual(len([j for j in d.jobs(playbook="p") if j["state"] != "cooldown"]), 1)

    def test_cooldown_expires(self):
        fake = self.fake()
        d = self.daemon({"p": playbook("p", RUN_QUICK, "return true", match=[SETTINGS], fake=fake, cooldown=1.0)})
        first = d.webhook("firing-single.json")["jobs"][0]
        self.assertEqual(first["state"], "queued")
        d.wait_job(first["id"])
        doc = d.webhook("firing-single.json")
        self.assertEqual(doc["jobs"][0]["state"], "cooldown", doc)
        time.sleep(1.4)
        doc = d.webhook("firing-single.json")
        second = doc["jobs"][0]
        self.assertEqual(second["state"], "queued", doc)
        self.assertNotEqual(second["id"], first["id"])
        self.assertEqual(d.wait_job(second["id"])["state"], "succeeded")
        self.assertEqual(fake.count("POST", "/restart"), 2)

    def test_budget_exhausted(self):
        fake = self.fake()
        d = self.daemon({"p": playbook("p", RUN_QUICK, "return true", match=[SETTINGS], fake=fake,
                                       budget={"runs": 1, "per": 60})})
        first = d.webhook("firing-single.json")["jobs"][0]
        self.assertEqual(first["state"], "queued")
        other = variant("firing-single.json", instance="settings-sync-job-other")
        doc = d.webhook(other)
        self.assertEqual(len(doc["jobs"]), 1, doc)
        second = doc["jobs"][0]
        self.assertEqual(second["state"], "budget_exhausted", doc)
        self.assertEqual(second["key"], "p/" + other["alerts"][0]["fingerprint"])
        self.assertEqual(d.wait_job(first["id"])["state"], "succeeded")
        time.sleep(0.5)
        posts = fake.requests("POST", "/restart")
        self.assertEqual([p.json()["instance"] for p in posts], ["settings-sync-job-7f9c"])
        self.assertEqual(d.metric("recoveryd_admissions_total", {"playbook": "p", "decision": "budget_exhausted"}), 1)

    def test_jobs_wait_concurrently(self):
        # sleeping jobs yield: three 1 s jobs end well before 3 s
        d = self.daemon({"gw": playbook("gw", "recovery.sleep(1)", "return true",
                                        match=['alertname="GatewayLatencyHigh"'])})
        t0 = time.monotonic()
        doc = d.webhook("firing-grouped.json")
        self.assertEqual(len(doc["jobs"]), 3)
        for j in doc["jobs"]:
            self.assertEqual(d.wait_job(j["id"], timeout=10)["state"], "succeeded")
        self.assertLess(time.monotonic() - t0, 2.5, "jobs that sleep must not block each other")


class ResolvedTest(RecoverydTestCase):

    def _failing_daemon(self, fake, backoff):
        fake.set_responses("GET", "/health", [(503, {}, {"healthy": False})])
        return self.daemon({"p": playbook("p", RUN_QUICK, VERIFY_HEALTH, match=[SETTINGS], fake=fake,
                                          retries=3, backoff=backoff)})

    def test_resolved_cancels_job_in_retry_wait(self):
        fake = self.fake()
        d = self._failing_daemon(fake, {"initial": 3, "factor": 1, "max": 3})
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        d.wait_job(job_id, {"retry_wait"}, timeout=10)
        t_first = fake.requests("POST", "/restart")[0].t

        doc = d.webhook("resolved.json")
        mine = [j for j in doc["jobs"] if j.get("id") == job_id]
        self.assertEqual(len(mine), 1, doc)
        self.assertEqual(mine[0]["state"], "cancelled", doc)
        self.assertEqual(mine[0]["key"], "p/" + FP_SINGLE)
        rec = d.wait_job(job_id, timeout=5)
        self.assertEqual(rec["state"], "cancelled", rec)

        # the backoff timer (at most 3 s) has passed: no further attempt
        time.sleep(max(0.0, t_first + 3.5 - time.time()))
        self.assertEqual(fake.count("POST", "/restart"), 1, fake.requests())
        rec = d.job(job_id)
        self.assertEqual(rec["state"], "cancelled")
        self.assertEqual(len(rec["attempts"]), 1, rec["attempts"])
        self.assertEqual(d.metric("recoveryd_alerts_received_total", {"status": "resolved"}), 1)

    def test_resolved_cancels_running_job(self):
        fake = self.fake()
        d = self.daemon({"p": playbook("p", RUN_STARTED_SLEEP, "return false, 'still broken'",
                                       match=[SETTINGS], fake=fake, retries=2,
                                       backoff={"initial": 0.1, "factor": 1, "max": 0.1})})
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        fake.wait_count(1, "POST", "/started", timeout=5)
        self.assertEqual(d.job(job_id)["state"], "running")
        t_started = fake.requests("POST", "/started")[0].t
        d.webhook("resolved.json")
        rec = d.wait_job(job_id, timeout=6)
        self.assertEqual(rec["state"], "cancelled", rec)
        # no attempt after the running one
        time.sleep(max(0.0, t_started + 3.6 - time.time()))
        self.assertEqual(fake.count("POST", "/started"), 1, fake.requests())

    def test_resolve_during_verify_lets_verify_decide(self):
        """The resolve is what a working repair makes Alertmanager send:
        it must not cut the verify that is about to see the repair."""
        fake = self.fake()
        d = self.daemon({"p": playbook("p", RUN_QUICK, VERIFY_SLOW_HEALTH, match=[SETTINGS], fake=fake, retries=2,
                                       backoff={"initial": 0.1, "factor": 1, "max": 0.1})})
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        fake.wait_count(1, "POST", "/verifying", timeout=5)
        d.webhook("resolved.json")
        rec = d.wait_job(job_id, timeout=10)
        self.assertEqual((rec["state"], rec["outcome"]), ("succeeded", "succeeded"), rec)
        self.assertEqual(rec["attempts"][0]["verify"], {"ok": True, "reason": "health answered 200"})
        self.assertEqual(fake.count("GET", "/health"), 1)

        # The same, but verify fails: the alert is gone, so no retry; the job
        # ends cancelled, with verify's reason on the attempt.
        fake.set_responses("GET", "/health", [(503, {}, {"healthy": False})])
        job_id = d.webhook(variant("firing-single.json", instance="other"))["jobs"][0]["id"]
        fake.wait_count(2, "POST", "/verifying", timeout=5)
        d.webhook(variant("resolved.json", instance="other"))
        rec = d.wait_job(job_id, timeout=10)
        self.assertEqual((rec["state"], rec["error"]), ("cancelled", "alert resolved"), rec)
        self.assertEqual(len(rec["attempts"]), 1, rec["attempts"])
        self.assertEqual(rec["attempts"][0]["verify"], {"ok": False, "reason": "still broken"})

    def test_resolved_alert_without_job_starts_nothing(self):
        fake = self.fake()
        d = self.daemon({"p": playbook("p", RUN_QUICK, "return true", match=[SETTINGS], fake=fake)})
        doc = d.webhook("resolved.json")
        self.assertFalse([j for j in doc["jobs"] if j.get("state") == "queued"], doc)
        time.sleep(0.5)
        self.assertEqual(d.jobs(), [])
        self.assertEqual(fake.requests(), [])
        # and the alert firing later still works normally
        first = d.webhook("firing-single.json")["jobs"][0]
        self.assertEqual(first["state"], "queued")
        self.assertEqual(d.wait_job(first["id"])["state"], "succeeded")

    def test_cancel_api(self):
        fake = self.fake()
        d = self._failing_daemon(fake, {"initial": 3, "factor": 1, "max": 3})
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        d.wait_job(job_id, {"retry_wait"}, timeout=10)

        st, _, doc = d.post("/api/v1/jobs/%s/cancel" % job_id, None, token="webhook")
        self.assertError((st, _, doc), 403, "forbidden")
        # a cancel says why
        st, _, doc = d.post("/api/v1/jobs/%s/cancel" % job_id, None, token="operator")
        self.assertError((st, _, doc), 400, "invalid_request")
        self.assertIn("reason", doc["message"])
        st, _, doc = d.post("/api/v1/jobs/%s/cancel" % job_id, {"reason": "fixing it by hand"},
                            token="operator")
        self.assertStatus(st, 200, d, doc)
        self.assertEqual(doc["id"], job_id)
        self.assertIn(doc["state"], ("cancelled", "retry_wait", "running"), doc)
        rec = d.wait_job(job_id, timeout=5)
        self.assertEqual(rec["state"], "cancelled")
        self.assertEqual(rec["cancelled_by"], "operator")
        self.assertEqual(rec["error"], "cancelled by operator: fixing it by hand")
        audit = [e for e in rec["events"] if e["type"] == "audit"]
        self.assertEqual([(e["action"], e["principal"], e["reason"]) for e in audit],
                         [("cancel", "operator", "fixing it by hand")])
        self.assertError(d.post("/api/v1/jobs/%s/cancel" % job_id, {"reason": "again"}, token="operator"),
                         409, "conflict")
        self.assertError(d.post("/api/v1/jobs/nope/cancel", {"reason": "x"}, token="operator"), 404,
                         "not_found")
        self.assertEqual(fake.count("POST", "/restart"), 1)


if __name__ == "__main__":
    unittest.main()

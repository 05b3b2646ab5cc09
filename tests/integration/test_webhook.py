"""Webhook and trigger to a verified recovery: the happy path, retries with
backoff, dry-run, manual triggers with ?wait, grouped notifications."""

import time
import unittest

from harness import (FP_GROUPED, FP_SINGLE, FP_TRUNCATED, RecoverydTestCase, find_actions,
                     fixture_bytes, playbook)

SETTINGS = 'alertname="SettingsSyncJobFailure"'
GATEWAY = 'alertname="GatewayLatencyHigh"'

RESTART_RUN = '''
local resp = must(recovery.http{method = "POST", url = FAKE .. "/restart",
  json = {alertname = ctx.alert.labels.alertname, instance = ctx.alert.labels.instance,
          job = ctx.job.id, attempt = ctx.job.attempt, fingerprint = ctx.alert.fingerprint}})
if resp.status ~= 200 then error("restart answered " .. tostring(resp.status)) end
local doc = resp:json()
if type(doc) ~= "table" or doc.ok ~= true then error("restart answer is not {ok:true}") end
recovery.log.info("restart requested", {status = resp.status})
'''

HEALTH_VERIFY = '''
local resp, err = recovery.http{method = "GET", url = FAKE .. "/health"}
if not resp then return false, "health check failed: " .. tostring(err) end
if resp.status == 200 then return true end
return false, "still broken"
'''

# Reads, writes, then reports what it saw to GET /observed (a read, so it
# runs in dry-run too).
DRY_RUN_RUN = '''
local st = must(recovery.http{method = "GET", url = FAKE .. "/status"})
local w = must(recovery.http{method = "POST", url = FAKE .. "/restart", json = {job = ctx.job.id}})
must(recovery.http{method = "GET", url = FAKE .. "/observed?write_status=" .. tostring(w.status)
  .. "&ctx_dry_run=" .. tostring(ctx.dry_run) .. "&module_dry_run=" .. tostring(recovery.dry_run)})
'''


def manual(labels, reason="manual test", annotations=None):
    return {"labels": labels, "annotations": annotations or {}, "reason": reason}


class WebhookTest(RecoverydTestCase):

    def test_webhook_job_succeeds(self):
        fake = self.fake()
        fake.set_responses("GET", "/health", [(200, {}, {"healthy": True})])
        d = self.daemon({"settings-sync": playbook("settings-sync", RESTART_RUN, HEALTH_VERIFY,
                                                   match=[SETTINGS], fake=fake)})
        st, hdrs, doc = d.post("/webhook", fixture_bytes("firing-single.json"))
        self.assertStatus(st, 202, d, doc)
        self.assertIn("application/json", hdrs.get("Content-Type", ""))
        self.assertEqual(doc.get("unmatched"), 0, doc)
        self.assertEqual(len(doc["jobs"]), 1, doc)
        j = doc["jobs"][0]
        self.assertIsInstance(j.get("id"), str)
        self.assertTrue(j["id"])
        self.assertEqual(j["playbook"], "settings-sync")
        self.assertEqual(j["key"], "settings-sync/" + FP_SINGLE)
        self.assertEqual(j["state"], "queued")

        rec = d.wait_job(j["id"])
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertIn("succeeded", str(rec.get("outcome")), rec)
        self.assertEqual(rec["id"], j["id"])
        self.assertEqual(rec["playbook"], "settings-sync")
        self.assertEqual(rec["key"], "settings-sync/" + FP_SINGLE)
        self.assertEqual(rec["trigger"], "webhook")
        self.assertIs(rec["dry_run"], False)
        self.assertEqual(rec["alert"]["labels"]["alertname"], "SettingsSyncJobFailure")
        self.assertEqual(rec["alert"]["fingerprint"], FP_SINGLE)

        # the remote service saw exactly one restart, carrying the context
        posts = fake.requests("POST", "/restart")
        self.assertEqual(len(posts), 1, fake.requests())
        body = posts[0].json()
        self.assertEqual(body["alertname"], "SettingsSyncJobFailure")
        self.assertEqual(body["instance"], "settings-sync-job-7f9c")
        self.assertEqual(body["job"], j["id"])
        self.assertEqual(body["attempt"], 1)
        self.assertEqual(body["fingerprint"], FP_SINGLE)
        self.assertIn("application/json", posts[0].header("Content-Type", ""))
        gets = fake.requests("GET", "/health")
        self.assertGreaterEqual(len(gets), 1)
        self.assertLess(posts[0].t, gets[-1].t, "verify must run after run()")

        # the record: one attempt, verified, with both calls in the action log
        self.assertEqual(len(rec["attempts"]), 1, rec["attempts"])
        a = rec["attempts"][0]
        self.assertEqual(a["result"], "succeeded", a)
        self.assertIs(a["verify"]["ok"], True, a)
        post_actions = find_actions(rec, "POST", "/restart")
        self.assertTrue(post_actions, rec.get("actions"))
        self.assertFalse(post_actions[0].get("planned"), post_actions)
        self.assertTrue(find_actions(rec, "GET", "/health"), rec.get("actions"))

        # the job list shows it, with filters
        listed = d.jobs(state="succeeded", playbook="settings-sync")
        self.assertEqual([x["id"] for x in listed], [j["id"]])
        self.assertEqual(d.jobs(state="failed"), [])

    def test_verify_false_retries_with_backoff_then_fails(self):
        fake = self.fake()
        fake.set_responses("GET", "/health", [(503, {}, {"healthy": False})])
        d = self.daemon({"settings-sync": playbook(
            "settings-sync", RESTART_RUN, HEALTH_VERIFY, match=[SETTINGS], fake=fake,
            retries=2, backoff={"initial": 0.3, "factor": 2, "max": 5}, timeout=5)})
        doc = d.webhook("firing-single.json")
        job_id = doc["jobs"][0]["id"]
        rec = d.wait_job(job_id, timeout=20)
        self.assertEqual(rec["state"], "failed", rec)
        self.assertEqual(len(rec["attempts"]), 3, rec["attempts"])
        for i, a in enumerate(rec["attempts"]):
            self.assertEqual(a["n"], i + 1, a)
            self.assertEqual(a["result"], "failed", a)
            self.assertIn("still broken", str(a.get("error")), a)
            self.assertIs(a["verify"]["ok"], False, a)
        self.assertIn("still broken", str(rec.get("error")), rec)

        posts = fake.requests("POST", "/restart")
        self.assertEqual([p.json()["attempt"] for p in posts], [1, 2, 3])
        gap1 = posts[1].t - posts[0].t
        gap2 = posts[2].t - posts[1].t
        # backoff d1 = 0.3, d2 = 0.6, jitter in [d/2, d]; generous upper bounds
        self.assertGreaterEqual(gap1, 0.15 - 0.02, (gap1, gap2))
        self.assertGreaterEqual(gap2, 0.30 - 0.02, (gap1, gap2))
        self.assertLess(gap1, 0.3 + 1.5, (gap1, gap2))
        self.assertLess(gap2, 0.6 + 1.5, (gap1, gap2))
        self.assertGreater(gap2, gap1 - 0.05, "backoff must grow: %.3f then %.3f" % (gap1, gap2))

        text = d.metrics()
        self.assertEqual(d.metric_value(text, "recoveryd_job_attempts_total",
                                        {"playbook": "settings-sync", "result": "failed"}), 3)
        self.assertEqual(d.metric_value(text, "recoveryd_jobs_total",
                                        {"playbook": "settings-sync", "outcome": "failed"}), 1)

    def test_run_error_is_a_failed_attempt(self):
        fake = self.fake()
        run = RESTART_RUN + '\nerror("restart did not help")\n'
        d = self.daemon({"p": playbook("p", run, "return true", match=[SETTINGS], fake=fake, retries=1,
                                       backoff={"initial": 0.05, "factor": 1, "max": 0.1})})
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        rec = d.wait_job(job_id)
        self.assertEqual(rec["state"], "failed", rec)
        self.assertEqual(len(rec["attempts"]), 2)
        for a in rec["attempts"]:
            self.assertEqual(a["result"], "failed", a)
            self.assertIn("restart did not help", str(a.get("error")), a)
        self.assertEqual(fake.count("POST", "/restart"), 2)

    def _check_dry_run_record(self, d, fake, rec):
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertIn("succeeded", str(rec.get("outcome")), rec)
        self.assertIs(rec["dry_run"], True, rec)
        self.assertEqual(fake.count("POST"), 0, fake.requests())
        self.assertEqual(fake.count("GET", "/status"), 1, fake.requests())
        obs = fake.requests("GET", "/observed")
        self.assertEqual(len(obs), 1, fake.requests())
        q = {k: v[0] for k, v in obs[0].params.items()}
        self.assertEqual(q["write_status"], "200", "a planned write answers a synthetic 200")
        self.assertEqual(q["ctx_dry_run"], "true")
        self.assertEqual(q["module_dry_run"], "true")
        planned = find_actions(rec, "POST", "/restart", planned=True)
        self.assertTrue(planned, rec.get("actions"))
        reads = find_actions(rec, "GET", "/status")
        self.assertTrue(reads, rec.get("actions"))
        self.assertFalse(reads[0].get("planned"), reads)

    def test_dry_run_flag(self):
        fake = self.fake()
        d = self.daemon({"settings-sync": playbook("settings-sync", DRY_RUN_RUN, HEALTH_VERIFY,
                                                   match=[SETTINGS], fake=fake)},
                        extra_args=["--dry-run"])
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        rec = d.wait_job(job_id)
        self._check_dry_run_record(d, fake, rec)
        self.assertGreaterEqual(fake.count("GET", "/health"), 1, "verify reads run in dry-run")

    def test_dry_run_query_on_trigger_is_per_job(self):
        fake = self.fake()
        d = self.daemon({"settings-sync": playbook("settings-sync", DRY_RUN_RUN, HEALTH_VERIFY,
                                                   match=[SETTINGS], fake=fake)})
        st, _, doc = d.trigger("settings-sync", manual({"alertname": "X", "instance": "a"}), "dry_run=1")
        self.assertStatus(st, 202, d, doc)
        rec = d.wait_job(doc["jobs"][0]["id"])
        self._check_dry_run_record(d, fake, rec)
        self.assertEqual(rec["trigger"], "manual")

        # the next job (different labels, so a different key) is real
        st, _, doc = d.trigger("settings-sync", manual({"alertname": "X", "instance": "b"}))
        self.assertStatus(st, 202, d, doc)
        rec2 = d.wait_job(doc["jobs"][0]["id"])
        self.assertEqual(rec2["state"], "succeeded", rec2)
        self.assertIs(rec2["dry_run"], False)
        self.assertEqual(fake.count("POST", "/restart"), 1, fake.requests())
        self.assertFalse(find_actions(rec2, "POST", "/restart", planned=True), rec2.get("actions"))

    def test_trigger_wait_returns_finished_record(self):
        fake = self.fake()
        d = self.daemon({"settings-sync": playbook("settings-sync", RESTART_RUN, "return true",
                                                   match=[SETTINGS], fake=fake)})
        t0 = time.monotonic()
        st, _, rec = d.trigger("settings-sync",
                               {"labels": {"alertname": "X", "instance": "a"}, "annotations": {},
                                "reason": "manual test"}, "wait=10")
        self.assertStatus(st, 200, d, rec)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(rec["trigger"], "manual")
        self.assertEqual(rec["reason"], "manual test")
        self.assertEqual(rec["playbook"], "settings-sync")
        self.assertTrue(rec["key"].startswith("settings-sync/"), rec["key"])
        self.assertEqual(rec["alert"]["labels"], {"alertname": "X", "instance": "a"})
        self.assertEqual(len(rec["attempts"]), 1)
        self.assertEqual(fake.count("POST", "/restart"), 1)
        self.assertEqual(fake.requests("POST", "/restart")[0].json()["instance"], "a")
        # the same record through the API
        self.assertEqual(d.job(rec["id"])["state"], "succeeded")

    def test_trigger_wait_times_out_with_202_and_manual_key_is_label_order_independent(self):
        run = 'recovery.sleep(3)'
        d = self.daemon({"slow": playbook("slow", run, "return true", match=[SETTINGS])})
        t0 = time.monotonic()
        st, _, doc = d.trigger("slow", manual({"alertname": "X", "instance": "a", "zone": "z1"}), "wait=1")
        elapsed = time.monotonic() - t0
        self.assertStatus(st, 202, d, doc)
        self.assertGreaterEqual(elapsed, 0.8)
        self.assertLess(elapsed, 2.9)
        jobs = d.jobs(playbook="slow")
        self.assertEqual(len(jobs), 1, jobs)
        first = jobs[0]

        # same labels in another order: same key, folded into the same job
        body = '{"reason":"again","annotations":{},"labels":{"zone":"z1","instance":"a","alertname":"X"}}'
        st, _, doc2 = d.trigger("slow", body)
        self.assertStatus(st, 202, d, doc2)
        j2 = doc2["jobs"][0]
        self.assertEqual(j2["key"], first["key"])
        self.assertEqual(j2["state"], "coalesced", doc2)
        self.assertEqual(j2["id"], first["id"])
        self.assertEqual(len(d.jobs(playbook="slow")), 1)
        rec = d.wait_job(first["id"], timeout=10)
        self.assertEqual(rec["state"], "succeeded", rec)


class RoutingTest(RecoverydTestCase):

    def test_grouped_and_truncated_notifications(self):
        fake = self.fake()
        d = self.daemon({"gw": playbook("gw", RESTART_RUN, "return true", match=[GATEWAY], fake=fake)})
        doc = d.webhook("firing-grouped.json")
        self.assertEqual(doc["unmatched"], 0, doc)
        self.assertEqual(len(doc["jobs"]), 3, doc)
        self.assertEqual(sorted(j["key"] for j in doc["jobs"]), sorted("gw/" + fp for fp in FP_GROUPED))
        self.assertEqual(len({j["id"] for j in doc["jobs"]}), 3)
        self.assertTrue(all(j["state"] == "queued" for j in doc["jobs"]), doc)
        for j in doc["jobs"]:
            self.assertEqual(d.wait_job(j["id"])["state"], "succeeded")
        self.assertEqual(sorted(r.json()["instance"] for r in fake.requests("POST", "/restart")),
                         ["gw-1", "gw-2", "gw-3"])

        doc = d.webhook("truncated.json")
        self.assertEqual(doc["unmatched"], 0, doc)
        self.assertEqual(len(doc["jobs"]), 2, doc)
        self.assertEqual(sorted(j["key"] for j in doc["jobs"]), sorted("gw/" + fp for fp in FP_TRUNCATED))
        self.assertTrue(all(j["state"] == "queued" for j in doc["jobs"]), doc)

    def test_unmatched_alerts_are_counted(self):
        fake = self.fake()
        d = self.daemon({"gw1": playbook("gw1", RESTART_RUN, "return true",
                                         match=[GATEWAY, 'instance="gw-1"'], fake=fake)})
        doc = d.webhook("firing-grouped.json")
        self.assertEqual(doc["unmatched"], 2, doc)
        self.assertEqual([j["key"] for j in doc["jobs"]], ["gw1/" + FP_GROUPED[0]])
        doc = d.webhook("firing-critical.json")
        self.assertEqual((doc["jobs"], doc["unmatched"]), ([], 1), doc)
        time.sleep(0.5)
        self.assertEqual([r.json()["instance"] for r in fake.requests("POST", "/restart")], ["gw-1"])
        self.assertEqual(len(d.jobs()), 1)

    def test_alert_matching_two_playbooks_gets_two_jobs(self):
        d = self.daemon({
            "a": playbook("a", "return", match=[SETTINGS]),
            "b": playbook("b", "return", match=['severity=~"warn.*"', 'job!="other"']),
            "c": playbook("c", "return", match=['alertname="SettingsSync"']),  # anchored: no match
        })
        doc = d.webhook("firing-single.json")
        self.assertEqual(doc["unmatched"], 0)
        self.assertEqual(sorted(j["key"] for j in doc["jobs"]), ["a/" + FP_SINGLE, "b/" + FP_SINGLE])
        doc = d.webhook("firing-critical.json")
        self.assertEqual((doc["jobs"], doc["unmatched"]), ([], 1), doc)


if __name__ == "__main__":
    unittest.main()

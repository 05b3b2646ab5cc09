"""Approval against a dry-run plan (docs/playbook-guide.md "Approval"): a
job of a playbook with approval.required first makes its plan, waits for a
human, and runs for real only once approved; rejected and timed-out plans
change nothing, and the sinks are asked for a human with the plan."""

import signal
import time
import unittest

from escalation_support import EscalationTestCase, job_url
from harness import lua_value, playbook
from test_people import PRINCIPALS

SETTINGS = 'alertname="SettingsSyncJobFailure"'

# Reads run in the plan; the write is only planned there.
RUN = '''
if ctx.settings.slow then recovery.sleep(ctx.settings.slow) end
must(recovery.http{method = "GET", url = FAKE .. "/state"})
local path = ctx.dry_run and "/rollback" or (ctx.settings.real_path or "/rollback")
must(recovery.http{method = "POST", url = FAKE .. path, json = {job = ctx.job.id}})
'''


def with_field(src, name, value):
    marker = "return {\n"
    return src.replace(marker, marker + "  %s = %s,\n" % (name, lua_value(value)), 1)


def gated(fake, timeout=900, real_path=None, slow=None):
    src = playbook("gated", RUN, fake=fake, match=[SETTINGS], cooldown=0, budget={"runs": 0, "per": 60})
    src = with_field(src, "approval", {"required": True, "timeout": timeout})
    settings = {k: v for k, v in (("real_path", real_path), ("slow", slow)) if v}
    if settings:
        src = with_field(src, "settings", settings)
    return src


class ApprovalTest(EscalationTestCase):

    def start(self, fake, slack=None, pd=None, **kw):
        d = self.esc_daemon({"gated": gated(fake, **kw)}, slack=slack, pd=pd, start=False)
        d.set_principals(PRINCIPALS)
        d.start()
        return d

    def held(self, d):
        job = d.webhook("firing-single.json")["jobs"][0]["id"]
        rec = d.wait_job(job, {"awaiting_approval"}, timeout=10)
        return job, rec

    def test_approved_plan_runs_for_real(self):
        fake, slack, pd = self.fake(), self.slack(), self.pagerduty()
        d = self.start(fake, slack=slack, pd=pd)
        job, rec = self.held(d)
        # the plan: the write it would make; the read ran, the write did not
        self.assertEqual(rec["plan"], ["http POST %s/rollback" % fake.url])
        self.assertEqual(rec["approval"], {"state": "pending", "approved_by": None, "plan_attempt": 1})
        self.assertEqual(fake.count("GET", "/state"), 1)
        self.assertEqual(fake.count("POST", "/rollback"), 0)
        self.assertEqual([a["planned"] for a in rec["actions"] if a.get("method") == "POST"], [True])
        self.assertIsNotNone(rec["next_attempt_at"])  # the approval deadline

        # the sinks are asked for a human, with the plan and the link
        rows = self.wait_states(d, job, {"slack": "delivered", "pagerduty": "delivered"})
        self.assertEqual(rows["slack"]["reason"], "approval_needed")
        text = slack.requests()[0].json()["blocks"]
        body = str(text)
        self.assertIn("APPROVAL NEEDED", slack.requests()[0].json()["text"])
        self.assertIn("POST %s/rollback" % fake.url, body)
        self.assertIn(job_url(job), body)
        ev = pd.events("trigger")[0]
        self.assertEqual(ev["payload"]["custom_details"]["plan"], ["http POST %s/rollback" % fake.url])
        self.assertEqual(ev["payload"]["custom_details"]["reason"], "approval_needed")

        # a viewer may not approve; an operator may
        self.assertError(d.api("POST", "/api/v1/jobs/%s/approve" % job, {}, token="vic"), 403, "forbidden")
        st, _, doc = d.api("POST", "/api/v1/jobs/%s/approve" % job, {"reason": "plan looks right"}, token="olga")
        self.assertStatus(st, 200, d, doc)
        self.assertEqual(doc, {"id": job, "state": "queued"})
        rec = d.wait_job(job)
        self.assertEqual((rec["state"], rec["outcome"]), ("succeeded", "succeeded"), rec)
        self.assertEqual(fake.count("POST", "/rollback"), 1)
        self.assertEqual(rec["approval"], {"state": "approved", "approved_by": "olga", "plan_attempt": 1})
        self.assertEqual([a["n"] for a in rec["attempts"]], [1, 2])
        self.assertEqual(rec["plan_diff"], {"unplanned": [], "not_run": [], "run_attempt": 2, "matches": True})
        real = [a for a in rec["actions"] if a["attempt"] == 2 and a.get("method") == "POST"]
        self.assertEqual([(a["planned"], a["in_plan"]) for a in real], [(False, True)])
        # the approval page is answered
        pd.wait_for(lambda reqs: [r for r in reqs if (r.event or {}).get("event_action") == "resolve"], timeout=5)
        audit = [(e["action"], e["principal"]) for e in rec["events"] if e["type"] == "audit"]
        self.assertEqual(audit, [("approve", "olga")])
        # approving again: it is not waiting any more
        self.assertError(d.api("POST", "/api/v1/jobs/%s/approve" % job, {}, token="olga"), 409, "conflict")

    def test_a_run_that_differs_from_its_plan_is_marked(self):
        fake = self.fake()
        d = self.start(fake, real_path="/something-else")
        job, rec = self.held(d)
        self.assertEqual(rec["plan"], ["http POST %s/rollback" % fake.url])
        self.assertStatus(d.api("POST", "/api/v1/jobs/%s/approve" % job, {}, token="olga")[0], 200)
        rec = d.wait_job(job)
        self.assertEqual(rec["state"], "succeeded", rec)
        diff = rec["plan_diff"]
        self.assertFalse(diff["matches"])
        self.assertEqual(diff["unplanned"], ["http POST %s/something-else" % fake.url])
        self.assertEqual(diff["not_run"], ["http POST %s/rollback" % fake.url])
        real = [a for a in rec["actions"] if a["attempt"] == 2 and a.get("method") == "POST"]
        self.assertEqual([a["in_plan"] for a in real], [False])

    def test_rejected_plan_changes_nothing(self):
        fake, pd = self.fake(), self.pagerduty()
        d = self.start(fake, pd=pd)
        job, _ = self.held(d)
        self.wait_states(d, job, {"pagerduty": "delivered"})
        doc = self.assertError(d.api("POST", "/api/v1/jobs/%s/reject" % job, {}, token="olga"), 400,
                               "invalid_request")
        self.assertIn("reason", doc["message"])
        st, _, doc = d.api("POST", "/api/v1/jobs/%s/reject" % job, {"reason": "wrong subject"}, token="olga")
        self.assertStatus(st, 200, d, doc)
        rec = d.wait_job(job)
        self.assertEqual((rec["state"], rec["outcome"], rec["cancelled_by"]), ("cancelled", "rejected", "olga"))
        self.assertEqual(rec["error"], "rejected by olga: wrong subject")
        pd.wait_for(lambda reqs: [r for r in reqs if (r.event or {}).get("event_action") == "resolve"], timeout=5)
        time.sleep(0.3)
        self.assertEqual(fake.count("POST", "/rollback"), 0)
        self.assertEqual(d.metric("recoveryd_jobs_total", {"playbook": "gated", "outcome": "rejected"}), 1)

    def test_nobody_approves_in_time(self):
        fake, slack = self.fake(), self.slack()
        d = self.start(fake, slack=slack, timeout=1)
        job, _ = self.held(d)
        rec = d.wait_job(job, timeout=10)
        self.assertEqual((rec["state"], rec["outcome"]), ("failed", "approval_timeout"), rec)
        self.assertIn("no approval within 1s", rec["error"])
        rows = self.wait_escalations(d, job, lambda rows: [r for r in rows if r["reason"] == "approval_timeout"])
        self.assertEqual([r["reason"] for r in rows], ["approval_needed", "approval_timeout"])
        self.assertEqual(fake.count("POST", "/rollback"), 0)

    def test_the_wait_survives_kill_9_and_coalesces_and_resolves(self):
        fake = self.fake()
        d = self.start(fake)
        job, _ = self.held(d)
        d.kill(signal.SIGKILL)
        d.wait_exit(10)
        d.start()
        rec = d.job(job)
        self.assertEqual(rec["state"], "awaiting_approval", rec)
        # the same alert again: folded into the waiting job
        again = d.webhook("firing-single.json")["jobs"][0]
        self.assertEqual((again["id"], again["state"]), (job, "coalesced"))
        self.assertEqual(fake.count("POST", "/rollback"), 0)
        # approved after the restart: it runs once
        self.assertStatus(d.api("POST", "/api/v1/jobs/%s/approve" % job, {}, token="ada")[0], 200)
        self.assertEqual(d.wait_job(job)["state"], "succeeded")
        self.assertEqual(fake.count("POST", "/rollback"), 1)

        # a resolved alert cancels a waiting job
        job2, _ = self.held(d)
        d.webhook("resolved.json")
        rec = d.wait_job(job2)
        self.assertEqual((rec["state"], rec["outcome"]), ("cancelled", "cancelled"), rec)
        self.assertEqual(fake.count("POST", "/rollback"), 1)

    def test_a_cancelled_plan_answers_its_page(self):
        fake, pd = self.fake(), self.pagerduty()
        d = self.start(fake, pd=pd)
        job, _ = self.held(d)
        self.wait_states(d, job, {"pagerduty": "delivered"})
        st, _, doc = d.api("POST", "/api/v1/jobs/%s/cancel" % job, {"reason": "handled by hand"}, token="olga")
        self.assertStatus(st, 200, d, doc)
        self.assertEqual(doc["state"], "cancelled")
        rec = d.wait_job(job)
        self.assertEqual((rec["state"], rec["outcome"], rec["cancelled_by"]), ("cancelled", "cancelled", "olga"))
        pd.wait_for(lambda reqs: [r for r in reqs if (r.event or {}).get("event_action") == "resolve"], timeout=5)
        self.assertEqual(fake.count("POST", "/rollback"), 0)

    def test_a_plan_cut_by_kill_9_is_made_again(self):
        """A plan attempt only reads: unlike a real attempt of a playbook
        that is not idempotent, it runs again after a crash."""
        fake = self.fake()
        d = self.start(fake, slow=1.5)
        job = d.webhook("firing-single.json")["jobs"][0]["id"]
        d.wait_job(job, {"running"}, timeout=5)
        d.kill(signal.SIGKILL)
        d.wait_exit(10)
        d.start()
        rec = d.wait_job(job, {"awaiting_approval"}, timeout=10)
        # the interrupted attempt does not count (its row is reused), as for
        # an idempotent playbook
        self.assertEqual([a["result"] for a in rec["attempts"]], ["succeeded"])
        self.assertEqual(rec["approval"]["plan_attempt"], 1)
        self.assertEqual(fake.count("POST", "/rollback"), 0)

    def test_dry_run_jobs_need_no_approval(self):
        fake = self.fake()
        d = self.start(fake)
        st, _, doc = d.trigger("gated", {"labels": {"alertname": "SettingsSyncJobFailure"}, "annotations": {},
                                         "reason": "look"}, "dry_run=1&wait=10", token="olga")
        self.assertStatus(st, 200, d, doc)
        self.assertEqual(doc["outcome"], "dry_run_succeeded", doc)
        self.assertIsNone(doc["approval"])
        self.assertEqual(fake.count("POST", "/rollback"), 0)


if __name__ == "__main__":
    unittest.main()

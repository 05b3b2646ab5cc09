"""Grafana annotations and the Slack start and success notices
(docs/escalation.md): every job that runs is one region in Grafana, opened
when its first attempt starts and closed with its outcome when it ends,
through the outbox (retried, journaled, kept over a restart); dry-runs are
planned only; notify.on_start / notify.on_success post to Slack; bad notify
tables stop the load.

Grafana is the validating fake tests/fakes/grafana_fake.py, Slack
tests/fakes/slack_fake.py."""

import json
import os
import signal
import unittest
import urllib.request

from escalation_support import EscalationTestCase, contains_url, job_url, strings_of, with_notify
from harness import playbook
from grafana_fake import GrafanaFake  # noqa: E402  (harness puts tests/fakes on sys.path)

SETTINGS = 'alertname="SettingsSyncJobFailure"'
ALERTNAME = "SettingsSyncJobFailure"


def quick(name, ok=True, **kw):
    """A playbook whose run takes a moment (so that a region has a length)
    and whose verify says ok."""
    kw.setdefault("match", [SETTINGS])
    verify = "return true" if ok else 'return false, "still broken"'
    return playbook(name, "recovery.sleep(0.05)", verify, **kw)


def manual(instance, alertname=ALERTNAME):
    return {"labels": {"alertname": alertname, "instance": instance}, "reason": "grafana test"}


class GrafanaTest(EscalationTestCase):

    def grafana(self, **kw):
        fake = GrafanaFake(**kw).start()
        self.addCleanup(fake.stop)
        return fake

    def g_daemon(self, playbooks, grafana, slack=None, extra_args=(), subdir=None):
        d_dir = self.tmpdir if subdir is None else os.path.join(self.tmpdir, subdir)
        os.makedirs(d_dir, exist_ok=True)
        token_file = os.path.join(d_dir, "grafana-token")
        with open(token_file, "w") as f:
            f.write(grafana.token + "\n")
        os.chmod(token_file, 0o600)
        args = ["--grafana-url", grafana.url + "/", "--grafana-token-file", token_file]
        return self.esc_daemon(playbooks, slack=slack, extra_args=args + list(extra_args), subdir=subdir)

    def run_job(self, d, name, instance, query=""):
        st, _, doc = d.trigger(name, manual(instance), query)
        self.assertStatus(st, 202, d, doc)
        job_id = doc["jobs"][0]["id"]
        return job_id, d.wait_job(job_id)

    def wait_region(self, d, job_id, state="delivered", timeout=10):
        """Both annotation rows of the job in state; returns {reason: row}."""
        def pred(rows):
            mine = {e["reason"]: e for e in rows if e["sink"] == "grafana"}
            if set(mine) == {"started", "ended"} and all(e["state"] == state for e in mine.values()):
                return mine
            return None
        rows = self.wait_escalations(d, job_id, pred, timeout, "grafana rows %s" % state)
        for reason, row in pred(rows).items():
            self.assertEscalationRow(row, "grafana", "annotation", reason, state)
        return pred(rows)

    def check_region(self, grafana, job_id, playbook_name, outcome):
        """The fake holds exactly one annotation for the job: a region with
        its tags and link."""
        mine = [a for a in grafana.annotations() if job_id in a["text"]]
        self.assertEqual(len(mine), 1, json.dumps(grafana.annotations(), indent=1))
        a = mine[0]
        self.assertEqual(set(a["tags"]), {"recoveryd", "playbook:" + playbook_name, "alertname:" + ALERTNAME,
                                          "outcome:" + outcome}, a)
        self.assertLess(a["time"], a["timeEnd"], a)
        self.assertIn(job_url(job_id), a["text"])
        return a

    # ------------------------------------------------------------ tests
    def test_succeeded_job_is_one_region(self):
        grafana = self.grafana()
        d = self.g_daemon({"fix": quick("fix"),
                           "quiet": with_notify(quick("quiet"), {"grafana": False})}, grafana)
        job_id, rec = self.run_job(d, "fix", "host-1")
        self.assertEqual(rec["state"], "succeeded", rec)
        rows = self.wait_region(d, job_id)
        self.assertEqual(rows["started"]["attempts"], 1)
        a = self.check_region(grafana, job_id, "fix", "succeeded")
        # opened with a POST at the start, closed with a PATCH of that id
        posts, patches = grafana.requests("POST"), grafana.requests("PATCH")
        self.assertEqual(len(posts), 1, posts)
        self.assertEqual([r.path for r in patches], ["/api/annotations/%d" % a["id"]])
        self.assertNotIn("timeEnd", posts[0].json())
        self.assertEqual(posts[0].json()["time"], a["time"])
        self.assertIn("outcome:succeeded", patches[0].json()["tags"])
        self.assertEqual(patches[0].status, 200, patches[0])
        # the token goes on the wire only
        for r in posts + patches:
            self.assertEqual(r.header("Authorization"), "Bearer " + grafana.token)
        self.assertNotIn(grafana.token, json.dumps(d.job(job_id)))
        self.assertNotIn(grafana.token, d.log_text())

        # a playbook that opts out has no region
        quiet_id, rec = self.run_job(d, "quiet", "host-2")
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertQuiet([grafana], 0.5)
        self.assertEqual(self.escalations(d, quiet_id, sink="grafana"), [])

    def test_failed_job_region_says_failed(self):
        grafana = self.grafana()
        d = self.g_daemon({"broken": quick("broken", ok=False, retries=1,
                                           backoff={"initial": 0.05, "factor": 1, "max": 0.1})}, grafana)
        job_id, rec = self.run_job(d, "broken", "host-3")
        self.assertEqual(rec["state"], "failed", rec)
        self.wait_region(d, job_id)
        a = self.check_region(grafana, job_id, "broken", "failed")
        self.assertIn("still broken", a["text"])
        self.assertIn("2 attempts", a["text"])
        # one region for the job, not one per attempt
        self.assertEqual(grafana.count("POST"), 1)

    def test_grafana_down_then_up_is_delivered_after_retries(self):
        grafana = self.grafana()
        grafana.fail(2, status=500)
        grafana.rate_limit(1, retry_after=1)
        d = self.g_daemon({"fix": quick("fix")}, grafana)
        job_id, rec = self.run_job(d, "fix", "host-4")
        self.assertEqual(rec["state"], "succeeded", rec)
        rows = self.wait_region(d, job_id, timeout=15)
        self.assertEqual(rows["started"]["attempts"], 4, rows)
        self.assertEqual(rows["ended"]["attempts"], 1, rows)
        self.check_region(grafana, job_id, "fix", "succeeded")
        # the end waited for the start: it patched, never posted a second annotation
        self.assertEqual(len(grafana.annotations()), 1)
        self.assertEqual(grafana.count("PATCH", status=200), 1)
        forced = grafana.requests(forced=True)
        self.assertEqual([r.status for r in forced], [500, 500, 429])
        self.assertTrue(all(r.method == "POST" for r in forced), forced)

    def test_start_that_never_got_through_is_posted_whole_at_the_end(self):
        grafana = self.grafana()
        grafana.fail(1, status=403, message="Forbidden")
        d = self.g_daemon({"fix": quick("fix")}, grafana)
        job_id, rec = self.run_job(d, "fix", "host-5")
        self.assertEqual(rec["state"], "succeeded", rec)
        rows = self.wait_escalations(
            d, job_id, lambda rows: len([e for e in rows if e["state"] in ("failed", "delivered")]) == 2)
        by = {e["reason"]: e for e in rows}
        self.assertEqual(by["started"]["state"], "failed", by)
        self.assertTrue(by["started"]["last_answer"].startswith("403 "), by)
        self.assertEqual(by["ended"]["state"], "delivered", by)
        self.check_region(grafana, job_id, "fix", "succeeded")
        self.assertEqual(grafana.count("PATCH"), 0)
        self.assertIn("timeEnd", grafana.requests("POST", status=200)[0].json())

    def test_a_region_deleted_in_grafana_is_made_anew_at_the_end(self):
        grafana = self.grafana()
        slow = playbook("slow", "recovery.sleep(1.5)", match=[SETTINGS])
        d = self.g_daemon({"slow": slow}, grafana)
        st, _, doc = d.trigger("slow", manual("host-8"))
        self.assertStatus(st, 202, d, doc)
        job_id = doc["jobs"][0]["id"]
        self.wait_states(d, job_id, {"grafana": "delivered"}, kind="annotation")
        # Someone cleans the dashboard up while the job runs.
        start = [a for a in grafana.annotations() if job_id in a["text"]][0]
        req = urllib.request.Request("%s/api/annotations/%d" % (grafana.url, start["id"]), method="DELETE",
                                     headers={"Authorization": "Bearer " + grafana.token})
        with urllib.request.urlopen(req, timeout=5) as r:
            self.assertEqual(r.status, 200)
        self.assertEqual(d.wait_job(job_id)["state"], "succeeded")
        self.wait_region(d, job_id)
        # The PATCH found nothing; the end posted the region whole.
        self.assertEqual([r.status for r in grafana.requests("PATCH")], [404])
        a = self.check_region(grafana, job_id, "slow", "succeeded")
        self.assertEqual(a["time"], start["time"], "the region still starts at the first attempt")

    def test_region_is_closed_after_a_restart(self):
        grafana = self.grafana()
        slow = playbook("slow", "recovery.sleep(30)", match=[SETTINGS], idempotent=False, timeout=60)
        d = self.g_daemon({"slow": slow}, grafana)
        st, _, doc = d.trigger("slow", manual("host-6"))
        self.assertStatus(st, 202, d, doc)
        job_id = doc["jobs"][0]["id"]
        self.wait_states(d, job_id, {"grafana": "delivered"}, kind="annotation")
        d.kill(signal.SIGKILL)
        self.assertEqual(d.wait_exit(5), -signal.SIGKILL)
        d.restart()
        self.assertEqual(d.wait_job(job_id, timeout=10)["outcome"], "interrupted")
        self.wait_region(d, job_id)
        a = self.check_region(grafana, job_id, "slow", "interrupted")
        # the id came back from the journal: the same annotation was patched
        self.assertEqual([r.path for r in grafana.requests("PATCH")], ["/api/annotations/%d" % a["id"]])
        self.assertEqual(grafana.count("POST"), 1)

    def test_dry_run_regions_are_planned_and_never_sent(self):
        grafana = self.grafana()
        d = self.g_daemon({"fix": quick("fix")}, grafana)
        job_id, rec = self.run_job(d, "fix", "host-7", "dry_run=1")
        self.assertIs(rec["dry_run"], True)
        self.wait_region(d, job_id, state="planned")
        self.assertQuiet([grafana], 1.0, counts=[0])
        self.assertEqual(grafana.annotations(), [])

    def test_slack_start_and_success_notices(self):
        grafana, slack = self.grafana(), self.slack()
        src = with_notify(quick("fix"), {"on_start": ["slack"], "on_success": ["slack"]})
        d = self.g_daemon({"fix": src, "plain": quick("plain")}, grafana, slack=slack)
        job_id, rec = self.run_job(d, "fix", "host-8")
        self.assertEqual(rec["state"], "succeeded", rec)
        rows = self.wait_escalations(
            d, job_id, lambda rows: {e["reason"] for e in rows if e["kind"] == "notice"
                                     and e["state"] == "delivered"} == {"started", "recovered"})
        notices = [e for e in rows if e["kind"] == "notice"]
        self.assertEqual(len(notices), 2, notices)
        for e in notices:
            self.assertEscalationRow(e, "slack", "notice", state="delivered")
        msgs = [r.json() for r in slack.wait_count(2, status=200)]
        start, success = msgs
        self.assertIn("started", start["text"].lower())
        self.assertIn("Recovered", success["text"])
        for m in msgs:
            text = m["text"] + "\n" + "\n".join(strings_of(m["blocks"]))
            for word in (ALERTNAME, "host-8", "fix"):
                self.assertIn(word, text)
            self.assertTrue(contains_url(text, job_url(job_id)), text)

        # without notify: no notice at all
        plain_id, rec = self.run_job(d, "plain", "host-9")
        self.wait_region(d, plain_id)
        self.assertQuiet([slack], 0.5)
        self.assertEqual(self.escalations(d, plain_id, sink="slack"), [])

    def test_bad_notify_tables_fail_to_load(self):
        cases = [
            ("pagerduty-start", {"on_start": ["pagerduty"]}, ("notify.on_start", 'only "slack"')),
            ("unknown-key", {"on_begin": ["slack"]}, ("notify: unknown key 'on_begin'", "on_start")),
            ("grafana-type", {"grafana": "no"}, ("notify.grafana", "boolean")),
        ]
        for name, notify, words in cases:
            with self.subTest(case=name):
                d = self.daemon({"fix": with_notify(quick("fix"), notify)}, start=False, subdir=name)
                p = d.run_cli(d.base_args(listen=False) + ["--check-config"], timeout=30)
                out = p.stdout + p.stderr
                self.assertNotEqual(p.returncode, 0, out)
                for w in words:
                    self.assertIn(w, out)

    def test_grafana_url_needs_its_token(self):
        d = self.daemon({"fix": quick("fix")}, start=False)
        p = d.run_cli(d.base_args(listen=False) + ["--grafana-url", "http://127.0.0.1:9", "--check-config"],
                      timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--grafana-token-file", p.stdout + p.stderr)


if __name__ == "__main__":
    unittest.main()

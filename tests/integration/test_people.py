"""People in the loop: named principals and their roles, the closed budget
bypass, the audit trail, and the pause switch (docs/security.md,
docs/http-api.md)."""

import json
import signal
import time
import unittest

from escalation_support import EscalationTestCase
from harness import RecoverydTestCase, fixture_bytes, playbook

PRINCIPALS = {
    "am": ("alertmanager", "am-token-0123456789abcdef"),
    "vic": ("viewer", "viewer-token-0123456789abcdef"),
    "olga": ("operator", "operator-token-0123456789abcdef"),
    "ada": ("admin", "admin-token-0123456789abcdef"),
    "sam": ("operator", "scoped-token-0123456789abcdef", "alpha"),
}
ROLES = ("anonymous", "bad", "am", "vic", "olga", "ada")
BAD_TOKEN = "not-a-token-of-anybody-4242"

SETTINGS = 'alertname="SettingsSyncJobFailure"'


def manual(alertname="Manual", reason="on-call test", **labels):
    return {"labels": dict(alertname=alertname, **labels), "annotations": {}, "reason": reason}


def unmatched_payload():
    doc = json.loads(fixture_bytes("firing-single.json"))
    for a in doc["alerts"]:
        a["labels"]["alertname"] = "NothingMatchesThis"
    return doc


def people_daemon(tc, playbooks, extra_args=(), start=True, **kw):
    """A daemon with the legacy token pair and the PRINCIPALS tokens file."""
    d = tc.daemon(playbooks, extra_args=extra_args, start=False, **kw)
    d.set_principals(PRINCIPALS)
    if start:
        d.start()
    return d


def who(role):
    return {"anonymous": None, "bad": BAD_TOKEN}.get(role, role)


# The role matrix: what each principal gets on every endpoint. Targets that
# do not exist keep it free of side effects: a status past the auth check
# (404, 409, 400) shows the principal was let through.
def matrix():
    deny = {"anonymous": 401, "bad": 401}
    read = dict(deny, am=403, vic=200, olga=200, ada=200)
    act = dict(deny, am=403, vic=403)
    return [
        ("GET", "/api/v1/jobs", None, read),
        ("GET", "/api/v1/jobs/nosuchjob", None, dict(read, vic=404, olga=404, ada=404)),
        ("GET", "/api/v1/playbooks", None, read),
        ("GET", "/api/v1/audit", None, read),
        ("GET", "/api/v1/whoami", None, read),
        ("POST", "/webhook", unmatched_payload(), dict(deny, am=202, vic=403, olga=202, ada=202)),
        ("POST", "/trigger/nope", manual(), dict(act, olga=404, ada=404)),
        ("POST", "/trigger/nope?force=1", manual(), dict(act, olga=403, ada=404)),
        ("POST", "/api/v1/jobs/nosuchjob/cancel", {"reason": "x"}, dict(act, olga=404, ada=404)),
        ("POST", "/api/v1/jobs/nosuchjob/approve", {}, dict(act, olga=404, ada=404)),
        ("POST", "/api/v1/jobs/nosuchjob/reject", {"reason": "x"}, dict(act, olga=404, ada=404)),
        ("POST", "/api/v1/playbooks/nope/pause", {"reason": "x"}, dict(act, olga=404, ada=404)),
        ("POST", "/api/v1/playbooks/nope/resume", {}, dict(act, olga=409, ada=409)),
        ("POST", "/api/v1/pause", {}, dict(act, olga=400, ada=400)),  # no reason
        ("POST", "/api/v1/resume", {}, dict(act, olga=409, ada=409)),  # not paused
        ("GET", "/metrics", None, {r: 200 for r in ROLES}),
        ("GET", "/healthz", None, {r: 200 for r in ROLES}),
        ("GET", "/readyz", None, {r: 200 for r in ROLES}),
    ]


class RoleMatrixTest(RecoverydTestCase):

    def test_every_role_on_every_endpoint(self):
        d = people_daemon(self, {"alpha": playbook("alpha", "return", match=['alertname="Alpha"'])})
        got, want = {}, {}
        for method, path, body, expect in matrix():
            for role in ROLES:
                st, _, doc = d.request(method, path, body, token=who(role))
                got[(method, path, role)] = st
                want[(method, path, role)] = expect[role]
                if st in (401, 403):
                    self.assertEqual(doc["error"], "unauthorized" if st == 401 else "forbidden", doc)
        wrong = {k: (got[k], want[k]) for k in got if got[k] != want[k]}
        self.assertEqual(wrong, {}, "principal x endpoint -> (got, want)")
        self.assertEqual(d.jobs(), [], "nothing in the matrix may start a job")

    def test_whoami_names_the_principal_its_role_and_scope(self):
        d = people_daemon(self, {"alpha": playbook("alpha", "return", match=[SETTINGS])})
        for name, want in (("vic", {"name": "vic", "role": "viewer", "playbooks": None}),
                           ("ada", {"name": "ada", "role": "admin", "playbooks": None}),
                           ("sam", {"name": "sam", "role": "operator", "playbooks": ["alpha"]})):
            st, _, doc = d.get("/api/v1/whoami", token=name)
            self.assertEqual((st, doc), (200, want))
        # Without any principal (--insecure-no-auth), everybody is the admin anonymous.
        o = self.daemon({"alpha": playbook("alpha", "return", match=[SETTINGS])}, tokens=False,
                        extra_args=["--insecure-no-auth"], subdir="open")
        st, _, doc = o.get("/api/v1/whoami", token=None)
        self.assertEqual((st, doc), (200, {"name": "anonymous", "role": "admin", "playbooks": None}))

    def test_failed_authentication_is_logged_and_counted_never_the_token(self):
        d = people_daemon(self, {"alpha": playbook("alpha", "return", match=['alertname="Alpha"'])})
        self.assertError(d.get("/api/v1/jobs", token=BAD_TOKEN), 401, "unauthorized")
        self.assertError(d.get("/api/v1/jobs", token=None), 401, "unauthorized")
        self.assertError(d.get("/api/v1/jobs", token="am"), 403, "forbidden")
        line = d.wait_log(lambda r: r.get("msg", "").startswith("authentication failed"))
        self.assertEqual(line.get("remote"), "127.0.0.1", line)
        text = d.metrics()
        self.assertEqual(d.metric_value(text, "recoveryd_auth_failures_total", {"reason": "invalid_token"}), 1)
        self.assertEqual(d.metric_value(text, "recoveryd_auth_failures_total", {"reason": "unauthorized"}), 2)
        self.assertEqual(d.metric_value(text, "recoveryd_auth_failures_total", {"reason": "forbidden"}), 1)
        with open(d.stderr_path) as f:
            log = f.read()
        for name, spec in PRINCIPALS.items():
            self.assertNotIn(spec[1], log)
        self.assertNotIn(BAD_TOKEN, log)

    def test_a_principal_acts_only_on_its_playbooks(self):
        d = people_daemon(self, {"alpha": playbook("alpha", "return", match=['alertname="Alpha"']),
                                 "beta": playbook("beta", "return", match=['alertname="Beta"'])})
        st, _, doc = d.trigger("alpha", manual(), token="sam")
        self.assertStatus(st, 202, d, doc)
        doc = self.assertError(d.trigger("beta", manual(), token="sam"), 403, "forbidden")
        self.assertIn("beta", doc["message"])
        self.assertError(d.api("POST", "/api/v1/playbooks/beta/pause", {"reason": "x"}, token="sam"),
                         403, "forbidden")
        self.assertError(d.api("POST", "/api/v1/pause", {"reason": "x"}, token="sam"), 403, "forbidden")
        # through /webhook too: an alert of beta is unmatched for sam
        doc = unmatched_payload()
        doc["alerts"][0]["labels"]["alertname"] = "Beta"
        st, _, ans = d.post("/webhook", doc, token="sam")
        self.assertStatus(st, 202, d, ans)
        self.assertEqual((ans["jobs"], ans["unmatched"]), ([], 1))
        st, _, doc = d.trigger("beta", manual(), token="olga")
        self.assertStatus(st, 202, d, doc)
        beta_job = doc["jobs"][0]["id"]
        self.assertError(d.api("POST", "/api/v1/jobs/%s/cancel" % beta_job, {"reason": "x"}, token="sam"),
                         403, "forbidden")

    def test_the_scope_holds_for_an_ended_job_too(self):
        # A principal limited to other playbooks gets 403 for a job of
        # this one whatever its state: an ended job once answered 409.
        d = people_daemon(self, {"beta": playbook("beta", "return", match=['alertname="Beta"'])})
        st, _, doc = d.trigger("beta", manual(), token="olga")
        self.assertStatus(st, 202, d, doc)
        beta_job = doc["jobs"][0]["id"]
        self.assertEqual(d.wait_job(beta_job)["state"], "succeeded")
        self.assertError(d.api("POST", "/api/v1/jobs/%s/cancel" % beta_job, {"reason": "x"}, token="sam"),
                         403, "forbidden")
        # one that may act on it still learns that it ended
        self.assertError(d.api("POST", "/api/v1/jobs/%s/cancel" % beta_job, {"reason": "x"}, token="olga"),
                         409, "conflict")

    def test_tokens_file_errors_stop_the_start(self):
        d = self.daemon({}, start=False)
        with open(d.tmpdir + "/bad-tokens", "w") as f:
            f.write("alice operator abc\n")
        p = d.run_cli(d.base_args(listen=False) + ["--check-config", "--tokens-file", d.tmpdir + "/bad-tokens"])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("line 1", p.stderr)
        self.assertIn("SHA-256", p.stderr)

    def test_reload_swaps_the_principals(self):
        d = people_daemon(self, {})
        self.assertEqual(d.get("/api/v1/jobs", token="vic")[0], 200)
        d.set_principals({"vic2": ("viewer", "another-viewer-token-0123456789")})
        ok0 = d.metric("recoveryd_config_reloads_total", {"result": "success"})
        d.kill(signal.SIGHUP)
        d.wait_metric("recoveryd_config_reloads_total", {"result": "success"}, lambda v: v >= ok0 + 1)
        self.assertEqual(d.get("/api/v1/jobs", token=PRINCIPALS["vic"][1])[0], 401)
        self.assertEqual(d.get("/api/v1/jobs", token="vic2")[0], 200)
        # the legacy files still work next to the tokens file
        self.assertEqual(d.get("/api/v1/jobs", token="operator")[0], 200)


class BypassTest(RecoverydTestCase):
    """The run budget cannot be bypassed with manual triggers."""

    def test_alertmanager_principal_cannot_trigger(self):
        d = people_daemon(self, {"settings-sync-recovery": playbook(
            "settings-sync-recovery", "return", match=[SETTINGS], budget={"runs": 3, "per": 3600})})
        for token in ("am", "webhook"):
            doc = self.assertError(d.trigger("settings-sync-recovery", manual(), token=token), 403, "forbidden")
            self.assertIn("operator", doc["message"])
        self.assertEqual(d.jobs(), [])

    def test_budget_holds_for_repeated_manual_triggers(self):
        d = people_daemon(self, {"settings-sync-recovery": playbook(
            "settings-sync-recovery", "return", match=[SETTINGS], cooldown=0,
            budget={"runs": 3, "per": 3600})})
        states = []
        for i in range(5):
            st, _, doc = d.trigger("settings-sync-recovery", manual(instance="host-%d" % i), token="olga")
            self.assertStatus(st, 202, d, doc)
            states.append(doc["jobs"][0]["state"])
        self.assertEqual(states, ["queued"] * 3 + ["budget_exhausted"] * 2)
        # force needs an admin, and a reason
        self.assertError(d.trigger("settings-sync-recovery", manual(instance="h"), "force=1", token="olga"),
                         403, "forbidden")
        self.assertError(d.trigger("settings-sync-recovery", manual(instance="h", reason=""), "force=1",
                                   token="ada"), 400, "invalid_request")
        st, _, doc = d.trigger("settings-sync-recovery", manual(instance="h", reason="INC-42: rerun"),
                               "force=1", token="ada")
        self.assertStatus(st, 202, d, doc)
        self.assertEqual(doc["jobs"][0]["state"], "queued")
        job = doc["jobs"][0]["id"]
        rec = d.wait_job(job)
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(rec["triggered_by"], "ada")
        _, _, audit = d.get("/api/v1/audit?action=force")
        self.assertEqual([(e["principal"], e["job_id"], e["reason"]) for e in audit["entries"]],
                         [("ada", job, "INC-42: rerun")])

    def test_cooldown_holds_for_manual_triggers(self):
        d = people_daemon(self, {"p": playbook("p", "return", match=[SETTINGS], cooldown=3600)})
        st, _, doc = d.trigger("p", manual(), "wait=10", token="olga")
        self.assertStatus(st, 200, d, doc)
        st, _, doc = d.trigger("p", manual(), token="olga")
        self.assertStatus(st, 202, d, doc)
        self.assertEqual(doc["jobs"][0]["state"], "cooldown")


class AuditTest(RecoverydTestCase):

    def test_every_action_leaves_a_row(self):
        d = people_daemon(self, {"alpha": playbook("alpha", "recovery.sleep(30)", match=['alertname="Alpha"'],
                                                   cooldown=0, budget={"runs": 0, "per": 60})})
        st, _, doc = d.trigger("alpha", manual("Alpha", reason="try it"), token="olga")
        self.assertStatus(st, 202, d, doc)
        job = doc["jobs"][0]["id"]
        self.assertStatus(d.api("POST", "/api/v1/jobs/%s/cancel" % job, {"reason": "wrong host"},
                                token="ada")[0], 200)
        rec = d.wait_job(job)
        self.assertEqual((rec["state"], rec["triggered_by"], rec["cancelled_by"]), ("cancelled", "olga", "ada"))
        self.assertEqual(rec["error"], "cancelled by ada: wrong host")
        self.assertStatus(d.api("POST", "/api/v1/playbooks/alpha/pause", {"reason": "maintenance", "for": 600},
                                token="olga")[0], 200)
        self.assertStatus(d.api("POST", "/api/v1/playbooks/alpha/resume", {"reason": "done"}, token="ada")[0], 200)
        self.assertStatus(d.api("POST", "/api/v1/pause", {"reason": "incident INC-7"}, token="olga")[0], 200)
        self.assertStatus(d.api("POST", "/api/v1/resume", {}, token="olga")[0], 200)
        ok0 = d.metric("recoveryd_config_reloads_total", {"result": "success"})
        d.kill(signal.SIGHUP)
        d.wait_metric("recoveryd_config_reloads_total", {"result": "success"}, lambda v: v >= ok0 + 1)

        # the reload's audit row commits a moment after the counter moves
        deadline = time.monotonic() + 5
        while True:
            st, _, doc = d.get("/api/v1/audit", token="vic")
            if st != 200 or len(doc["entries"]) >= 7 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertStatus(st, 200, d, doc)
        rows = doc["entries"]
        self.assertEqual([r["action"] for r in rows],
                         ["reload", "resume", "pause", "resume", "pause", "cancel", "trigger"])
        by = {r["action"] + ":" + str(r["playbook"]): r for r in rows}
        self.assertEqual(by["trigger:alpha"]["principal"], "olga")
        self.assertEqual(by["trigger:alpha"]["job_id"], job)
        self.assertEqual(by["trigger:alpha"]["reason"], "try it")
        self.assertEqual(by["cancel:alpha"]["principal"], "ada")
        self.assertEqual(by["cancel:alpha"]["role"], "admin")
        self.assertEqual(by["cancel:alpha"]["reason"], "wrong host")
        self.assertEqual(by["pause:*"]["reason"], "incident INC-7")
        self.assertEqual(by["reload:None"]["principal"], "system")
        for r in rows:
            self.assertTrue(r["ts"].endswith("Z"), r)
            if r["action"] != "reload":
                self.assertEqual(r["address"], "127.0.0.1", r)
        # the same on the job
        events = [(e["action"], e["principal"]) for e in rec["events"] if e["type"] == "audit"]
        self.assertEqual(events, [("trigger", "olga"), ("cancel", "ada")])

        # filters and pages
        _, _, doc = d.get("/api/v1/audit?principal=ada")
        self.assertEqual([r["action"] for r in doc["entries"]], ["resume", "cancel"])
        _, _, doc = d.get("/api/v1/audit?action=pause")
        self.assertEqual(len(doc["entries"]), 2)
        _, _, page1 = d.get("/api/v1/audit?limit=3")
        self.assertEqual(len(page1["entries"]), 3)
        self.assertIsNotNone(page1["next"])
        _, _, page2 = d.get("/api/v1/audit?limit=3&before=%s" % page1["next"])
        _, _, page3 = d.get("/api/v1/audit?limit=3&before=%s" % page2["next"])
        ids = [r["id"] for p in (page1, page2, page3) for r in p["entries"]]
        self.assertEqual(ids, [r["id"] for r in rows])
        self.assertIsNone(page3["next"])
        ts = rows[3]["ts"]
        _, _, doc = d.get("/api/v1/audit?since=%s" % ts)
        self.assertEqual([r["id"] for r in doc["entries"]], [r["id"] for r in rows[:4]])
        self.assertError(d.get("/api/v1/audit?action=explode"), 400, "invalid_request")
        self.assertError(d.get("/api/v1/audit?since=yesterday"), 400, "invalid_request")

    def test_reasons_are_required(self):
        d = people_daemon(self, {"alpha": playbook("alpha", "recovery.sleep(30)", match=['alertname="Alpha"'])})
        st, _, doc = d.trigger("alpha", manual("Alpha"), token="olga")
        job = doc["jobs"][0]["id"]
        for path in ("/api/v1/jobs/%s/cancel" % job, "/api/v1/playbooks/alpha/pause", "/api/v1/pause"):
            for body in (None, {}, {"reason": ""}):
                doc = self.assertError(d.api("POST", path, body), 400, "invalid_request")
                self.assertIn("reason", doc["message"])
        self.assertError(d.api("POST", "/api/v1/pause", {"reason": "x", "until": "2001-01-01T00:00:00Z"}),
                         400, "invalid_request")
        self.assertError(d.api("POST", "/api/v1/pause", {"reason": "x", "colour": "red"}), 400,
                         "invalid_request")
        st, _, doc = d.request("POST", "/api/v1/pause", "reason=x", content_type="text/plain")
        self.assertEqual(st, 415, doc)
        self.assertEqual(d.get("/api/v1/audit")[2]["entries"][0]["action"], "trigger")


class PauseTest(EscalationTestCase):

    def pb(self):
        return {"alpha": playbook("alpha", "return", match=[SETTINGS], cooldown=0,
                                  budget={"runs": 0, "per": 60})}

    def test_a_paused_playbook_holds_alerts_and_says_so(self):
        slack = self.slack()
        d = self.esc_daemon(self.pb(), slack=slack, start=False)
        d.set_principals(PRINCIPALS)
        d.start()
        self.assertEqual(d.metric("recoveryd_paused", {"playbook": "alpha"}), 0)
        st, _, doc = d.api("POST", "/api/v1/playbooks/alpha/pause", {"reason": "DB migration"}, token="olga")
        self.assertStatus(st, 200, d, doc)
        self.assertEqual((doc["scope"], doc["by"], doc["reason"], doc["until"]), ("alpha", "olga", "DB migration", None))
        self.assertEqual(d.metric("recoveryd_paused", {"playbook": "alpha"}), 1)
        pbs = {p["name"]: p for p in d.get("/api/v1/playbooks")[2]}
        self.assertEqual(pbs["alpha"]["paused"]["by"], "olga")
        self.assertEqual(pbs["alpha"]["paused"]["reason"], "DB migration")

        job = d.webhook("firing-single.json")["jobs"][0]
        self.assertEqual(job["state"], "paused")
        rec = d.wait_job(job["id"])
        self.assertEqual((rec["state"], rec["outcome"], rec["attempts"]), ("paused", "paused", []))
        self.assertIn("paused by olga: DB migration", rec["error"])
        row = self.wait_states(d, job["id"], {"slack": "delivered"})["slack"]
        self.assertEqual(row["reason"], "paused")
        self.assertIn("PAUSED", slack.requests()[0].json()["text"])
        # a human's trigger is refused while paused
        doc = self.assertError(d.trigger("alpha", manual(), token="olga"), 409, "conflict")
        self.assertIn("/api/v1/playbooks/alpha/resume", doc["message"])

        # survives kill -9 and a reload
        d.kill(signal.SIGKILL)
        d.wait_exit(10)
        d.start()
        self.assertEqual(d.metric("recoveryd_paused", {"playbook": "alpha"}), 1)
        self.assertEqual(d.webhook("firing-single.json")["jobs"][0]["state"], "paused")
        ok0 = d.metric("recoveryd_config_reloads_total", {"result": "success"})
        d.kill(signal.SIGHUP)
        d.wait_metric("recoveryd_config_reloads_total", {"result": "success"}, lambda v: v >= ok0 + 1)
        self.assertEqual(d.webhook("firing-single.json")["jobs"][0]["state"], "paused")
        self.assertEqual(d.metric("recoveryd_paused", {"playbook": "alpha"}), 1)

        # resumed: the alert runs (a paused job spent neither budget nor cooldown)
        st, _, doc = d.api("POST", "/api/v1/playbooks/alpha/resume", {"reason": "migration done"}, token="ada")
        self.assertStatus(st, 200, d, doc)
        self.assertEqual(d.metric("recoveryd_paused", {"playbook": "alpha"}), 0)
        job = d.webhook("firing-single.json")["jobs"][0]
        self.assertEqual(job["state"], "queued")
        self.assertEqual(d.wait_job(job["id"])["state"], "succeeded")

    def test_pause_everything_and_expiry(self):
        d = people_daemon(self, self.pb())
        st, _, doc = d.api("POST", "/api/v1/pause", {"reason": "stop all automation", "for": 1.5}, token="olga")
        self.assertStatus(st, 200, d, doc)
        self.assertEqual(doc["scope"], "*")
        self.assertIsNotNone(doc["until"])
        self.assertEqual(d.metric("recoveryd_paused", {"playbook": "alpha"}), 1)
        self.assertEqual(d.webhook("firing-single.json")["jobs"][0]["state"], "paused")
        # the pause ends by itself; the gauge follows
        d.wait_metric("recoveryd_paused", {"playbook": "alpha"}, lambda v: v == 0, timeout=5)
        job = d.webhook("firing-single.json")["jobs"][0]
        self.assertEqual(job["state"], "queued")
        self.assertEqual(d.wait_job(job["id"])["state"], "succeeded")
        self.assertIsNone({p["name"]: p for p in d.get("/api/v1/playbooks")[2]}["alpha"]["paused"])

    def test_a_running_attempt_finishes_when_paused(self):
        d = people_daemon(self, {"slow": playbook("slow", "recovery.sleep(1)", match=[SETTINGS])})
        job = d.webhook("firing-single.json")["jobs"][0]["id"]
        d.wait_job(job, {"running"}, timeout=5)
        self.assertStatus(d.api("POST", "/api/v1/pause", {"reason": "stop"}, token="olga")[0], 200)
        self.assertEqual(d.wait_job(job)["state"], "succeeded")


if __name__ == "__main__":
    unittest.main()

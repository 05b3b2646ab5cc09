"""Errors a retry cannot fix fail the job at once: a program outside
--exec-allow, a bad argument or an unknown option key, to the `recovery` API
or to the helper library. The attempt fails with the message and no retry
is scheduled, whatever `retries` says; errors another attempt may fix are
still retried."""

import os
import time

from harness import LUA_PATH, RecoverydTestCase, find_actions, playbook

ANY = ['alertname="PermanentTest"']
NOT_ALLOWED = "recovery.exec: program /usr/local/bin/deck is not allowed (see --exec-allow)"
NOT_RETRIED = "not retried (a retry cannot change this)"
# A retry would wait 5 to 10 s (equal jitter of a 10 s backoff).
SLOW_BACKOFF = {"initial": 10, "factor": 1, "max": 10}

DECK_SYNC = '''
local r, err = recovery.exec{"/usr/local/bin/deck", "gateway", "sync"}
if not r then error(err) end
'''


def manual():
    return {"labels": {"alertname": "PermanentTest", "instance": "a"}, "annotations": {}, "reason": "test"}


class PermanentErrorTest(RecoverydTestCase):

    def run_job(self, d, name, timeout=15):
        t0 = time.monotonic()
        st, _, doc = d.trigger(name, manual())
        self.assertStatus(st, 202, d, doc)
        rec = d.wait_job(doc["jobs"][0]["id"], timeout=timeout)
        return rec, time.monotonic() - t0

    def assertFailedOnce(self, rec, elapsed, *texts):
        self.assertEqual((rec["state"], rec["outcome"]), ("failed", "failed"), rec)
        self.assertEqual(len(rec["attempts"]), 1, rec["attempts"])
        self.assertEqual(rec["attempts"][0]["result"], "failed", rec["attempts"])
        self.assertLess(elapsed, 4, "the job waited for a retry")
        for t in texts + (NOT_RETRIED,):
            self.assertIn(t, rec["attempts"][0]["error"])
            self.assertIn(t, rec["error"])

    def test_exec_not_allowed_fails_at_once(self):
        d = self.daemon({"deck": playbook("deck", DECK_SYNC, match=ANY, retries=3, backoff=SLOW_BACKOFF)},
                        extra_args=["--exec-allow", "/bin/echo"])
        rec, elapsed = self.run_job(d, "deck")
        self.assertFailedOnce(rec, elapsed, "run: deck.lua:", NOT_ALLOWED)
        # the refused call is an action with its error, recorded once
        acts = find_actions(rec, None, "/usr/local/bin/deck")
        self.assertEqual(len(acts), 1, rec.get("actions"))
        self.assertIn("is not allowed", acts[0].get("error", ""))
        d.wait_log(lambda r: r.get("msg") == "attempt ended" and NOT_ALLOWED in r.get("error", ""))

    def test_dry_run_too(self):
        d = self.daemon({"deck": playbook("deck", DECK_SYNC, match=ANY, retries=3, backoff=SLOW_BACKOFF)},
                        extra_args=["--exec-allow", "/bin/echo", "--dry-run"])
        rec, elapsed = self.run_job(d, "deck")
        self.assertEqual((rec["state"], rec["outcome"]), ("failed", "dry_run_failed"), rec)
        self.assertEqual(len(rec["attempts"]), 1, rec["attempts"])
        self.assertLess(elapsed, 4)
        self.assertIn(NOT_ALLOWED, rec["error"])

    def test_in_verify(self):
        d = self.daemon({"v": playbook("v", "return", 'recovery.sleep("soon")', match=ANY, retries=3,
                                       backoff=SLOW_BACKOFF)})
        rec, elapsed = self.run_job(d, "v")
        self.assertFailedOnce(rec, elapsed, "verify: v.lua:",
                              "recovery.sleep: bad argument #1 (number expected, got string)")

    def test_unknown_option_key_fails_at_once(self):
        run = '''
recovery.http{url = FAKE .. "/x", tmeout = 5}
'''
        fake = self.fake()
        d = self.daemon({"h": playbook("h", run, match=ANY, fake=fake, retries=3, backoff=SLOW_BACKOFF)})
        rec, elapsed = self.run_job(d, "h")
        self.assertFailedOnce(rec, elapsed, 'recovery.http: unknown option "tmeout" (allowed: url, method, ')
        self.assertEqual(fake.requests(), [], "nothing was sent")

    def test_library_unknown_option_key_fails_at_once(self):
        """k8s wait_rollout(kind, name, {namespace = ns}) silently used the
        client's namespace: the key is ns."""
        fake = self.fake()
        run = '''
local k8s = require "recovery.k8s"
local c = k8s.client{ base_url = FAKE, token = "t", namespace = "default" }
c:wait_rollout("deployment", "web", { namespace = "prod", timeout = 5 })
'''
        d = self.daemon({"k": playbook("k", run, match=ANY, fake=fake, retries=3, backoff=SLOW_BACKOFF)})
        rec, elapsed = self.run_job(d, "k")
        self.assertFailedOnce(rec, elapsed, "run: k.lua:",
                              'wait_rollout: unknown option "namespace" (allowed: ns, timeout, interval)')
        self.assertEqual(fake.requests(), [], "nothing was sent")

    def test_caught_permanent_error_reads_as_its_message(self):
        """pcall still catches it; tostring gives the message, and the
        playbook decides."""
        fake = self.fake()
        run = '''
local ok, e = pcall(recovery.exec, {"/usr/local/bin/deck", "ping"})
must(recovery.http{method = "POST", url = FAKE .. "/report", json = {ok = ok, e = tostring(e)}})
'''
        d = self.daemon({"c": playbook("c", run, match=ANY, fake=fake, retries=3)},
                        extra_args=["--exec-allow", "/bin/echo"])
        rec, _ = self.run_job(d, "c")
        self.assertEqual(rec["state"], "succeeded", rec)
        got = fake.requests("POST", "/report")[0].json()
        self.assertIs(got["ok"], False)
        self.assertIn(NOT_ALLOWED, got["e"])

    def test_retryable_error_is_still_retried(self):
        """A command that exits non-zero may succeed next time."""
        run = '''
local r = must(recovery.exec{"/bin/false"})
if r.code ~= 0 then error("false exited " .. r.code) end
'''
        d = self.daemon({"f": playbook("f", run, match=ANY, retries=2,
                                       backoff={"initial": 0.1, "factor": 1, "max": 0.1})},
                        extra_args=["--exec-allow", "/bin/false"])
        rec, _ = self.run_job(d, "f")
        self.assertEqual(rec["state"], "failed", rec)
        self.assertEqual(len(rec["attempts"]), 3, rec["attempts"])
        for a in rec["attempts"]:
            self.assertIn("false exited 1", a["error"])
            self.assertNotIn("not retried", a["error"])

    def test_cli_run_reports_it_once(self):
        d = self.daemon({"deck": playbook("deck", DECK_SYNC, match=ANY, retries=3, backoff=SLOW_BACKOFF)},
                        start=False)
        alert = os.path.join(self.tmpdir, "alert.json")
        with open(alert, "w") as f:
            f.write('{"labels": {"alertname": "PermanentTest"}}')
        t0 = time.monotonic()
        p = d.run_cli(["run", "deck", "--alert", alert, "--playbooks", d.playbooks_dir, "--lua-path", LUA_PATH,
                       "--exec-allow", "/bin/echo"], timeout=60)
        elapsed = time.monotonic() - t0
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertLess(elapsed, 4, "recoveryd run waited for a retry")
        attempts = [ln for ln in p.stdout.splitlines() if ln.startswith("attempt ")]
        self.assertEqual(len(attempts), 1, p.stdout)
        results = [ln.strip() for ln in p.stdout.splitlines() if ln.strip().startswith("result ")]
        self.assertEqual(len(results), 1, p.stdout)
        self.assertRegex(results[0], r"^result\s+failed: run: deck\.lua:")
        self.assertIn(NOT_ALLOWED, results[0])
        self.assertIn(NOT_RETRIED, results[0])
        self.assertEqual(p.stdout.count("is not allowed"), 3,
                         "the job's error, the action and the attempt, once each:\n" + p.stdout)
        self.assertIn("outcome failed", p.stdout)

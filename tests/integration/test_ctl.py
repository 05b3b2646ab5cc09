"""`recoveryd ctl`, the command-line client of the HTTP API (docs/ctl.md),
against the real daemon: every command, its exit codes, -o json, and that
the token never shows."""

import http.server
import json
import os
import pty
import re
import select
import socket
import subprocess
import threading
import time
import unittest

from harness import RecoverydTestCase, playbook
from test_approval import gated, SETTINGS
from test_people import PRINCIPALS

BAD_TOKEN = "not-a-token-of-anybody-4242"
SANITIZER = re.compile(r"AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:")


def manual(alertname="Manual", **labels):
    return {"labels": dict(alertname=alertname, **labels), "annotations": {}, "reason": "ctl test"}


class CtlTestCase(RecoverydTestCase):

    def start(self, playbooks, extra_args=()):
        d = self.daemon(playbooks, extra_args=extra_args, start=False)
        d.set_principals(PRINCIPALS)
        d.start()
        return d

    def token_file(self, token):
        path = os.path.join(self.tmpdir, "ctl-%s.token" % token)
        with open(path, "w") as f:
            f.write(self.d.principal_tokens.get(token, token) + "\n")
        return path

    def ctl(self, *args, token="olga", url=None, env=None, timeout=60, stdout=None):
        """Run `recoveryd ctl ARGS` against self.d; CompletedProcess (text)."""
        argv = [self.d.bin, "ctl", "--url", url or "http://127.0.0.1:%d" % self.d.port]
        if token is not None:
            argv += ["--token-file", self.token_file(token)]
        e = dict(os.environ, COLUMNS="250")
        e.pop("NO_COLOR", None)
        e.pop("RECOVERYD_URL", None)
        e.pop("RECOVERYD_TOKEN_FILE", None)
        e.update(env or {})
        p = subprocess.run(argv + list(args), stdin=subprocess.DEVNULL, capture_output=stdout is None,
                           stdout=stdout, stderr=subprocess.PIPE if stdout is not None else None,
                           text=True, timeout=timeout, env=e, cwd=self.tmpdir)
        for stream in (p.stdout or "", p.stderr or ""):
            self.assertIsNone(SANITIZER.search(stream), stream)
            for spec in PRINCIPALS.values():
                self.assertNotIn(spec[1], stream, "a token in the output")
            self.assertNotIn(BAD_TOKEN, stream)
        return p

    def assertExit(self, p, code, stderr_has=None):
        self.assertEqual(p.returncode, code, "stdout:\n%s\nstderr:\n%s" % (p.stdout, p.stderr))
        if stderr_has is not None:
            self.assertIn(stderr_has, p.stderr)
            self.assertTrue(p.stderr.startswith("recoveryd ctl: "), p.stderr)

    def trigger(self, name, body=None, query=""):
        st, _, doc = self.d.trigger(name, body or manual(), query=query, token="olga")
        self.assertStatus(st, 202, self.d, doc)
        return doc["jobs"][0]["id"]


STEPS = '''
must(recovery.http{method = "GET", url = FAKE .. "/health"})
must(recovery.http{method = "POST", url = FAKE .. "/restart", json = {svc = "checkout"}})
must(recovery.exec{"/bin/echo", "hi", mutates = false})
recovery.sleep(0.1)
recovery.log.info("restarted", {svc = "checkout"})
'''


class CtlReadTest(CtlTestCase):

    def setUp(self):
        super().setUp()
        self.fake_ = self.fake()
        self.d = self.start({"steps": playbook("steps", STEPS, fake=self.fake_, match=['alertname="Steps"'],
                                               cooldown=0, verify='return true, "health answered"'),
                             "boom": playbook("boom", 'error("' + "x" * 150 + ' boom")', cooldown=0)},
                            extra_args=["--exec-allow", "/bin/echo"])

    def test_job_prints_the_timeline(self):
        job = self.trigger("steps", manual("Steps", service="checkout"))
        self.d.wait_job(job)
        p = self.ctl("job", job)
        self.assertExit(p, 0)
        out = p.stdout
        for want in ("job " + job, "steps", "succeeded", "alertname=Steps service=checkout",
                     "manual by olga: ctl test", "attempt 1, started",
                     "GET %s/health -> 200" % self.fake_.url, "POST %s/restart -> 200" % self.fake_.url,
                     "exec [/bin/echo hi] -> exit 0", "sleep 0.1s", "restarted  svc=checkout",
                     "health answered"):
            self.assertIn(want, out)
        # in the order they happened
        order = [out.index(s) for s in ("/health", "/restart", "exec [", "sleep", "restarted", "verify",
                                        "result")]
        self.assertEqual(order, sorted(order), out)
        self.assertNotIn("\033[", out, "colour only on a terminal")
        doc = json.loads(self.ctl("job", job, "-o", "json").stdout)
        self.assertEqual(doc, self.d.job(job))

    def test_jobs_table_filters_json_and_pages(self):
        ids = [self.trigger("steps", manual("Steps", n=str(i))) for i in range(3)]
        other = self.trigger("boom", manual("Boom"))
        for j in ids + [other]:
            self.d.wait_job(j)
        p = self.ctl("jobs")
        self.assertExit(p, 0)
        lines = p.stdout.splitlines()
        self.assertEqual(lines[0].split(), ["ID", "PLAYBOOK", "ALERT", "STATE", "OUTCOME", "ATT", "CREATED", "ERROR"])
        self.assertEqual([ln.split()[0] for ln in lines[1:]], [j[:12] for j in [other] + ids[::-1]])
        self.assertIn("Steps", lines[2])
        self.assertIn("1/1", lines[2])
        wide = self.ctl("jobs", "-o", "wide").stdout
        for j in ids:
            self.assertIn(j, wide)
        got = json.loads(self.ctl("jobs", "--playbook", "steps", "-o", "json").stdout)
        self.assertEqual([j["id"] for j in got], ids[::-1])
        got = json.loads(self.ctl("jobs", "--state", "failed", "-o", "json").stdout)
        self.assertEqual([j["id"] for j in got], [other])
        got = json.loads(self.ctl("jobs", "--alertname", "Boom", "--since", "1h", "-o", "json").stdout)
        self.assertEqual([j["id"] for j in got], [other])
        # one page, and the hint that there is more; --all follows the Link header
        p = self.ctl("jobs", "--limit", "1")
        self.assertEqual(len(p.stdout.splitlines()), 2, p.stdout)
        self.assertIn("--all", p.stderr)
        got = json.loads(self.ctl("jobs", "--limit", "1", "--all", "-o", "json").stdout)
        self.assertEqual([j["id"] for j in got], [other] + ids[::-1])
        self.assertExit(self.ctl("jobs", "--limit", "0"), 3, "limit")

    def test_tables_fit_the_terminal(self):
        self.d.wait_job(self.trigger("boom", manual("Boom")))
        p = self.ctl("jobs", env={"COLUMNS": "70"})
        self.assertExit(p, 0)
        for ln in p.stdout.splitlines():
            self.assertLessEqual(len(ln), 70, ln)
        self.assertIn("\u2026", p.stdout, "the long error is cut with an ellipsis")
        p = self.ctl("jobs", "-o", "wide", env={"COLUMNS": "70"})
        self.assertIn(" boom", p.stdout, "wide mode cuts nothing")

    def test_colour_only_on_a_terminal_without_no_color(self):
        job = self.trigger("steps", manual("Steps"))
        self.d.wait_job(job)

        def on_tty(env):
            master, slave = pty.openpty()
            try:
                p = self.ctl("jobs", env=env, stdout=slave)
                os.close(slave)
                slave = None
                out = b""
                while select.select([master], [], [], 1)[0]:
                    try:
                        chunk = os.read(master, 65536)
                    except OSError:
                        break
                    if not chunk:
                        break
                    out += chunk
                self.assertEqual(p.returncode, 0, p.stderr)
                return out.decode()
            finally:
                if slave is not None:
                    os.close(slave)
                os.close(master)

        self.assertIn("\033[32msucceeded\033[0m", on_tty({}))
        self.assertNotIn("\033[", on_tty({"NO_COLOR": "1"}))

    def test_playbooks_and_a_viewer_reads(self):
        p = self.ctl("playbooks", token="vic")
        self.assertExit(p, 0)
        lines = p.stdout.splitlines()
        self.assertEqual(lines[0].split()[:2], ["NAME", "MATCH"])
        row = [ln for ln in lines if ln.startswith("steps ")][0]
        self.assertIn('alertname="Steps"', row)
        self.assertIn("5s", row)  # the timeout
        self.assertRegex(row, r" (\d+/)?100 per 1m ")  # the run budget (used/runs with stats)
        # with a job: the budget used and the last job, when the server reports them
        self.d.wait_job(self.trigger("steps", manual("Steps")))
        pbs = json.loads(self.ctl("playbooks", "-o", "json").stdout)
        row = [ln for ln in self.ctl("playbooks").stdout.splitlines() if ln.startswith("steps ")][0]
        self.assertEqual(pbs[1]["stats"]["budget_used"], 1)
        self.assertIn(" 1/100 per 1m ", row)
        self.assertRegex(row, r" succeeded \d+s ago$")
        self.assertEqual([pb["name"] for pb in json.loads(self.ctl("playbooks", "-o", "json").stdout)],
                         ["boom", "steps"])
        self.assertExit(self.ctl("jobs", token="vic"), 0)
        p = self.ctl("whoami", token="vic")
        self.assertExit(p, 0)
        self.assertEqual(p.stdout, "vic (viewer)\n")
        self.assertEqual(json.loads(self.ctl("whoami", "-o", "json").stdout),
                         {"name": "olga", "role": "operator", "playbooks": None})


class CtlActTest(CtlTestCase):

    def setUp(self):
        super().setUp()
        self.fake_ = self.fake()
        self.d = self.start({
            "steps": playbook("steps", STEPS, fake=self.fake_, cooldown=0, verify='return true, "health answered"'),
            "slow": playbook("slow", 'recovery.sleep(2.5)\nrecovery.log.info("woke up")', cooldown=0, timeout=10),
            "boom": playbook("boom", 'error("it broke")', cooldown=0),
            "gated": gated(self.fake_)}, extra_args=["--exec-allow", "/bin/echo"])

    def test_trigger_dry_run_wait_prints_planned_writes_and_verify(self):
        p = self.ctl("trigger", "steps", "--label", "alertname=Steps", "--label", "service=checkout",
                     "--reason", "INC-1", "--dry-run", "--wait", "30")
        self.assertExit(p, 0)
        self.assertIn("POST %s/restart PLANNED" % self.fake_.url, p.stdout)
        self.assertIn("GET %s/health -> 200" % self.fake_.url, p.stdout)
        self.assertIn("verify", p.stdout)
        self.assertIn("health answered", p.stdout)
        self.assertIn("dry_run_succeeded", p.stdout)
        self.assertEqual(self.fake_.count("POST", "/restart"), 0)
        rec = self.d.jobs(playbook="steps")[0]
        self.assertEqual((rec["reason"], rec["dry_run"]), ("INC-1", True))
        # -o json: the record of the job, as GET /api/v1/jobs/{id} gives it
        p = self.ctl("trigger", "steps", "--label", "alertname=Other", "--dry-run", "--wait", "-o", "json")
        self.assertExit(p, 0)
        doc = json.loads(p.stdout)
        self.assertEqual((doc["outcome"], doc["alert"]["labels"]), ("dry_run_succeeded", {"alertname": "Other"}))

    def test_trigger_without_wait_and_a_failed_wait(self):
        p = self.ctl("trigger", "steps", "--label", "alertname=Steps")
        self.assertExit(p, 0)
        m = re.match(r"steps: queued job ([0-9a-f]{32})$", p.stdout.strip())
        self.assertIsNotNone(m, p.stdout)
        self.d.wait_job(m.group(1))
        p = self.ctl("trigger", "boom", "--label", "alertname=Boom", "--wait", "30")
        self.assertExit(p, 1)
        self.assertIn("it broke", p.stdout)
        self.assertIn("failed", p.stdout)

    def test_watch_follows_a_job_to_its_end(self):
        job = self.trigger("slow")
        p = self.ctl("watch", job)
        self.assertExit(p, 0)
        out = p.stdout
        self.assertIn("state       running", out)
        self.assertIn("state       succeeded, outcome succeeded", out)
        self.assertLess(out.index("running"), out.index("woke up"))
        self.assertLess(out.index("woke up"), out.index("outcome succeeded"))
        self.assertEqual(out.count("job " + job), 1, "each line once")
        self.assertEqual(out.count("sleep 2.5s"), 1, out)
        # a failing one: exit 1; --wait that runs out first: 5
        self.assertExit(self.ctl("watch", self.trigger("boom")), 1)
        self.assertExit(self.ctl("watch", self.trigger("slow"), "--wait", "1"), 5, "has not ended")

    def test_cancel_approve_reject(self):
        job = self.trigger("slow")
        self.d.wait_job(job, {"running"})
        self.assertExit(self.ctl("cancel", job), 2, "--reason")
        p = self.ctl("cancel", job, "--reason", "INC-9: by hand")
        self.assertExit(p, 0)
        self.assertEqual(p.stdout.strip(), "job %s: cancelling" % job)
        self.assertEqual(self.d.wait_job(job)["outcome"], "cancelled")
        # 409: it already ended
        self.assertExit(self.ctl("cancel", job, "--reason", "again"), 3, "job already ended")

        # a plan: trigger --wait stops when it waits for a human
        p = self.ctl("trigger", "gated", "--label", "alertname=SettingsSyncJobFailure", "--wait", "30")
        self.assertExit(p, 5)
        self.assertIn("awaits approval", p.stdout)
        self.assertIn("plan (attempt 1)", p.stdout)
        self.assertIn("http POST %s/rollback" % self.fake_.url, p.stdout)
        held = self.d.jobs(playbook="gated")[0]["id"]
        p = self.ctl("approve", held, "--reason", "plan checked")
        self.assertExit(p, 0)
        self.assertEqual(p.stdout.strip(), "job %s: queued" % held)
        self.assertEqual(self.d.wait_job(held)["outcome"], "succeeded")
        self.assertIn("plan_diff (attempt 2): the run matches the plan", self.ctl("job", held).stdout)

        held = self.trigger("gated", manual("SettingsSyncJobFailure", n="2"))
        self.d.wait_job(held, {"awaiting_approval"})
        self.assertExit(self.ctl("reject", held), 2, "--reason")
        p = self.ctl("reject", held, "--reason", "not now", "-o", "json")
        self.assertExit(p, 0)
        self.assertEqual(json.loads(p.stdout), {"id": held, "state": "cancelled"})
        out = self.ctl("job", held).stdout
        self.assertIn("outcome rejected", out)
        self.assertRegex(out, r"reject by olga \(operator\) from 127\.0\.0\.1: not now")

    def test_pause_resume_and_audit(self):
        p = self.ctl("pause", "steps", "--reason", "Kong upgrade", "--for", "1h")
        self.assertExit(p, 0)
        self.assertRegex(p.stdout, r"^paused steps by olga until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d: Kong upgrade\n$")
        rows = self.ctl("playbooks").stdout.splitlines()
        row = [ln for ln in rows if ln.startswith("steps ")][0]
        self.assertIn("by olga: Kong upgrade", row)
        self.assertIn(" unlimited ", [ln for ln in rows if ln.startswith("gated ")][0])  # budget runs 0
        p = self.ctl("trigger", "steps", "--label", "alertname=Steps")
        self.assertExit(p, 3, "paused")
        self.assertIn("(409 conflict)", p.stderr)
        self.assertEqual(self.ctl("resume", "steps", "--reason", "done").stdout, "resumed steps\n")
        self.assertExit(self.ctl("resume", "steps"), 3, "(409 conflict)")
        p = self.ctl("pause", "--reason", "INC-77", "-o", "json")
        self.assertExit(p, 0)
        doc = json.loads(p.stdout)
        self.assertEqual((doc["scope"], doc["by"], doc["until"]), ("*", "olga", None))
        self.assertIn("(all) by olga: INC-77", self.ctl("playbooks").stdout)
        self.assertEqual(self.ctl("resume").stdout, "resumed *\n")
        self.assertExit(self.ctl("pause", "--reason", "x", "--for", "soon"), 2, "--for")

        p = self.ctl("audit", "--principal", "olga", "--action", "pause")
        self.assertExit(p, 0)
        lines = p.stdout.splitlines()
        self.assertEqual(lines[0].split(), ["TIME", "PRINCIPAL", "ACTION", "PLAYBOOK", "JOB", "REASON"])
        self.assertEqual(len(lines), 3, p.stdout)
        self.assertIn("olga (operator)", lines[1])
        self.assertIn("INC-77", lines[1])
        self.assertIn("Kong upgrade", lines[2])
        doc = json.loads(self.ctl("audit", "--since", "1h", "--limit", "2", "-o", "json").stdout)
        self.assertEqual([e["action"] for e in doc["entries"]], ["resume", "pause"])

    def test_watch_follows_through_a_restart(self):
        # A fixed port, so the restarted daemon is where watch looks.
        with socket.socket() as sk:
            sk.bind(("127.0.0.1", 0))
            port = sk.getsockname()[1]
        self.d.stop()
        self.d.extra_args += ["--listen", "127.0.0.1:%d" % port]
        self.d.start()
        job = self.trigger("slow")
        argv = [self.d.bin, "ctl", "--url", "http://127.0.0.1:%d" % port, "--token-file", self.token_file("olga"),
                "watch", job]
        w = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=dict(os.environ, COLUMNS="250"))
        try:
            self.d.wait_job(job, {"running"}, timeout=10)
            time.sleep(1.0)  # watch has read the job
            self.d.stop()
            time.sleep(1.5)  # a poll or two fail
            self.d.start()
            out, err = w.communicate(timeout=60)
        finally:
            if w.poll() is None:
                w.kill()
        # The stop drained the running attempt; watch lost the server while
        # it was down, kept trying, and saw the end after the restart.
        self.assertEqual(w.returncode, 0, out + err)
        self.assertIn("retrying in 1s (for up to 60s)", err)
        self.assertIn("outcome succeeded", out)
        self.assertEqual(out.count("job " + job), 1, "each line once")


class CtlRefusalTest(CtlTestCase):

    def setUp(self):
        super().setUp()
        self.d = self.start({"steps": playbook("steps", "return", cooldown=0)})

    def test_exit_codes(self):
        # 401: no token, and a wrong one
        p = self.ctl("jobs", token=None)
        self.assertExit(p, 3, "a valid bearer token is required (401 unauthorized)")
        self.assertIn("--token-file", p.stderr)
        self.assertExit(self.ctl("jobs", token=BAD_TOKEN), 3, "(401 unauthorized)")
        # 403: a viewer may not act, an alertmanager may not read
        p = self.ctl("trigger", "steps", "--label", "alertname=X", token="vic")
        self.assertExit(p, 3, "(403 forbidden)")
        self.assertIn("operator", p.stderr)
        self.assertExit(self.ctl("playbooks", token="am"), 3, "(403 forbidden)")
        # 404
        self.assertExit(self.ctl("job", "0" * 32), 3, "(404 not_found)")
        self.assertExit(self.ctl("trigger", "nope", "--label", "a=b"), 3, "(404 unknown_playbook)")
        # 409
        job = self.trigger("steps")
        self.d.wait_job(job)
        self.assertExit(self.ctl("approve", job), 3, "(409 conflict)")
        # usage errors: 2, nothing sent
        for args, msg in ((["nope"], "unknown command"), (["jobs", "--bogus"], "unknown option"),
                          (["job"], "usage"), (["trigger", "steps"], "--label"),
                          (["trigger", "steps", "--label", "novalue"], "NAME=VALUE"),
                          (["jobs", "-o", "yaml"], "-o")):
            self.assertExit(self.ctl(*args), 2, msg)
        self.assertExit(self.ctl("jobs", "--token-file", "/nonexistent/token", token=None), 2, "token file")
        p = self.ctl("-h")
        self.assertExit(p, 0)
        self.assertIn("Exit codes", p.stdout)
        self.assertIn("usage: recoveryd ctl trigger PLAYBOOK", self.ctl("trigger", "-h").stdout)

    def test_environment_gives_url_and_token(self):
        env = {"RECOVERYD_URL": "http://127.0.0.1:%d/" % self.d.port,
               "RECOVERYD_TOKEN_FILE": self.token_file("vic")}
        p = subprocess.run([self.d.bin, "ctl", "playbooks", "-o", "json"], capture_output=True, text=True,
                           timeout=30, env=dict(os.environ, **env))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)[0]["name"], "steps")

    def test_an_unavailable_server_is_4(self):
        self.d.stop()
        p = self.ctl("jobs")
        self.assertExit(p, 4, "GET http://127.0.0.1:%d/api/v1/jobs" % self.d.port)
        self.assertExit(self.ctl("watch", "0" * 32), 4)


class FakeApi(http.server.BaseHTTPRequestHandler):
    """Answers from the class's script: path -> (status, headers, body)."""

    script = {}
    seen = []

    def do_GET(self):
        self.seen.append((self.path, self.headers.get("Authorization")))
        status, headers, body = self.script.get(self.path, (404, {}, {"error": "not_found", "message": "no"}))
        data = json.dumps(body).encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


class CtlAgainstAFakeTest(CtlTestCase):
    """What the daemon does not readily answer: a 503, and a next link to
    another origin."""

    def setUp(self):
        super().setUp()
        self.d = self.start({})
        self.srv = http.server.HTTPServer(("127.0.0.1", 0), FakeApi)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.addCleanup(self.srv.server_close)
        self.addCleanup(self.srv.shutdown)
        self.url = "http://127.0.0.1:%d" % self.srv.server_address[1]
        FakeApi.seen = []

    def test_503_is_unavailable(self):
        FakeApi.script = {"/api/v1/jobs": (503, {"Retry-After": "1"},
                                           {"error": "unavailable", "message": "the job journal cannot be read"})}
        p = self.ctl("jobs", url=self.url)
        self.assertExit(p, 4, "the job journal cannot be read (503 unavailable)")

    def test_all_follows_only_links_of_the_same_origin(self):
        job = {"id": "a" * 32, "playbook": "p", "state": "succeeded", "outcome": "succeeded",
               "attempts_made": 1, "max_attempts": 1, "created_at": "2026-12-02T10:00:00.000Z", "error": None}
        FakeApi.script = {
            "/api/v1/jobs": (200, {"Link": '</api/v1/jobs?before=2>; rel="next"'}, [job]),
            "/api/v1/jobs?before=2": (200, {"Link": '<http://127.0.0.2:1/api/v1/jobs?before=1>; rel="next"'},
                                      [dict(job, id="b" * 32)])}
        p = self.ctl("jobs", "--all", "-o", "json", url=self.url)
        self.assertExit(p, 0)
        self.assertEqual([j["id"] for j in json.loads(p.stdout)], ["a" * 32, "b" * 32])
        self.assertIn("not following the next page: its link leaves " + self.url, p.stderr)
        self.assertEqual([s[0] for s in FakeApi.seen], ["/api/v1/jobs", "/api/v1/jobs?before=2"])
        self.assertTrue(all(s[1] == "Bearer " + PRINCIPALS["olga"][1] for s in FakeApi.seen))


if __name__ == "__main__":
    unittest.main()

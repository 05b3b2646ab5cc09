"""recovery.exec, recovery.secret, the Lua sandbox and its deadline."""

import json
import os
import random
import re
import secrets
import time
import unittest

from harness import RecoverydTestCase, find_actions, flat_strings, lua_str, playbook

ANY = ['alertname="SandboxTest"']  # the playbooks here are triggered by name
TIMEOUT_RE = re.compile(r"tim(e|ed)[ _-]?out", re.I)


def manual(labels=None, reason="test"):
    return {"labels": labels or {"alertname": "SandboxTest", "instance": "a"}, "annotations": {}, "reason": reason}


def report(expr):
    """Lua: POST the table expr to FAKE/report."""
    return 'must(recovery.http{method = "POST", url = FAKE .. "/report", json = %s})' % expr


def report_get(expr):
    """Lua: GET FAKE/report?data=<json of expr> (a read: it runs in dry-run too)."""
    return ('local _data = recovery.json.encode(%s):gsub("[^%%w%%-_%%.~]", '
            'function(c) return string.format("%%%%%%02X", c:byte()) end)\n'
            'must(recovery.http{method = "GET", url = FAKE .. "/report?data=" .. _data})' % expr)


def reported(fake):
    """Tables sent by report() and report_get(), oldest first."""
    out = []
    for r in fake.requests(path="/report"):
        out.append(json.loads(r.params["data"][0]) if r.method == "GET" else r.json())
    return out


class ExecTest(RecoverydTestCase):

    def start(self, fake, run, allow=("/bin/echo",), timeout=10, extra=()):
        args = []
        for p in allow:
            args += ["--exec-allow", p]
        return self.daemon({"x": playbook("x", run, "return true", match=ANY, fake=fake, timeout=timeout)},
                           extra_args=args + list(extra))

    def run_job(self, d, labels=None, timeout=15):
        st, _, doc = d.trigger("x", manual(labels))
        self.assertStatus(st, 202, d, doc)
        return d.wait_job(doc["jobs"][0]["id"], timeout=timeout)

    def test_exec_echo(self):
        fake = self.fake()
        run = '''
local r, err = recovery.exec{"/bin/echo", "hi"}
if not r then error("exec failed: " .. tostring(err)) end
''' + report("{code = r.code, stdout = r.stdout, stderr = r.stderr}") + '''
if r.code ~= 0 or r.stdout ~= "hi\\n" then error("unexpected exec result") end
'''
        d = self.start(fake, run)
        rec = self.run_job(d)
        self.assertEqual(rec["state"], "succeeded", rec)
        got = fake.requests("POST", "/report")[0].json()
        self.assertEqual(got, {"code": 0, "stdout": "hi\n", "stderr": ""})
        self.assertTrue(find_actions(rec, None, "/bin/echo"), rec.get("actions"))

    def test_exec_cannot_start(self):
        """A program that cannot be executed (its interpreter is missing) is
        nil, err naming it, not a result with some exit code."""
        fake = self.fake()
        prog = os.path.join(self.tmpdir, "broken-script")
        with open(prog, "w") as f:
            f.write("#!/nonexistent/interpreter\n")
        os.chmod(prog, 0o755)
        run = "local r, err = recovery.exec{%s}\n" % lua_str(prog) + \
            report("{got_nil = (r == nil), err = tostring(err)}")
        d = self.start(fake, run, allow=(prog,))
        rec = self.run_job(d)
        self.assertEqual(rec["state"], "succeeded", rec)
        got = fake.requests("POST", "/report")[0].json()
        self.assertTrue(got["got_nil"], got)
        self.assertIn("cannot start " + prog, got["err"])

    def test_exec_not_allowed(self):
        """A program outside --exec-allow raises a permanent error (see
        test_permanent_errors.py): the job fails without retries."""
        fake = self.fake()
        mark = os.path.join(self.tmpdir, "not-allowed-ran")
        run = '''
local ok, err = pcall(recovery.exec, {"/usr/bin/touch", %s})
''' % lua_str(mark) + report("{ok = ok, err = tostring(err)}") + '''
if not ok then error(err) end
'''
        d = self.start(fake, run, allow=("/bin/echo",))
        rec = self.run_job(d)
        self.assertEqual(rec["state"], "failed", rec)
        got = fake.requests("POST", "/report")[0].json()
        self.assertIs(got["ok"], False, got)
        self.assertIn("program /usr/bin/touch is not allowed (see --exec-allow)", got["err"])
        self.assertEqual(len(rec["attempts"]), 1)
        self.assertEqual(rec["attempts"][0]["result"], "failed")
        self.assertIn(got["err"], str(rec["attempts"][0].get("error")))
        self.assertFalse(os.path.exists(mark), "a program outside --exec-allow ran")

    def test_shell_metacharacters_are_not_interpreted(self):
        fake = self.fake()
        marks = [os.path.join(self.tmpdir, "pwned%d" % i) for i in range(5)]
        instance = "; touch %s" % marks[0]
        payload = "$(touch %s) `touch %s` | touch %s && touch %s" % tuple(marks[1:])
        run = '''
local r = must(recovery.exec{"/bin/echo", ctx.alert.labels.instance, ctx.alert.labels.payload})
''' + report("{code = r.code, stdout = r.stdout}")
        d = self.start(fake, run)
        rec = self.run_job(d, {"alertname": "SandboxTest", "instance": instance, "payload": payload})
        self.assertEqual(rec["state"], "succeeded", rec)
        got = fake.requests("POST", "/report")[0].json()
        self.assertEqual(got, {"code": 0, "stdout": instance + " " + payload + "\n"})
        time.sleep(0.2)
        for m in marks:
            self.assertFalse(os.path.exists(m), "shell metacharacters were interpreted: %s" % m)

    def test_hung_command_is_killed(self):
        fake = self.fake()
        # a unique duration so the process can be found in /proc
        dur = "29.%04d" % random.randint(0, 9999)
        run = '''
local r, err = recovery.exec{"/bin/sleep", %s, timeout = 1}
''' % lua_str(dur) + report("{got_nil = (r == nil), err = tostring(err)}") + '''
if r == nil then error(err) end
'''
        d = self.start(fake, run, allow=("/bin/sleep",), timeout=10)
        t0 = time.monotonic()
        rec = self.run_job(d, timeout=15)
        elapsed = time.monotonic() - t0
        self.assertEqual(rec["state"], "failed", rec)
        self.assertLess(elapsed, 6, "the 1 s exec timeout was not enforced")
        a = rec["attempts"][0]
        self.assertIn(a["result"], ("failed", "timeout"), a)
        self.assertRegex(str(a.get("error")), TIMEOUT_RE)
        for r in fake.requests("POST", "/report"):
            self.assertIs(r.json()["got_nil"], True)
        # the child is gone
        deadline = time.monotonic() + 2
        while _find_process(["/bin/sleep", dur]) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(_find_process(["/bin/sleep", dur]), [], "timed-out child still running")

    def test_exec_in_dry_run(self):
        fake = self.fake()
        mark = os.path.join(self.tmpdir, "dry-run-wrote")
        run = '''
local r = must(recovery.exec{"/bin/echo", "read-only", mutates = false})
local w, werr = recovery.exec{"/usr/bin/touch", %s}
''' % lua_str(mark) + report_get("{stdout = r.stdout}") + "\n" + report("{posted = true}")
        d = self.start(fake, run, allow=("/bin/echo", "/usr/bin/touch"), extra=["--dry-run"])
        rec = self.run_job(d)
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertIs(rec["dry_run"], True)
        self.assertEqual(reported(fake), [{"stdout": "read-only\n"}], "read-only exec runs, the POST is planned")
        self.assertFalse(os.path.exists(mark), "a mutating exec ran in dry-run")
        self.assertTrue(find_actions(rec, None, "/usr/bin/touch", planned=True), rec.get("actions"))
        ran = find_actions(rec, None, "/bin/echo")
        self.assertTrue(ran, rec.get("actions"))
        self.assertFalse(ran[0].get("planned"), ran)


def _find_process(argv_prefix):
    want = [a.encode() for a in argv_prefix]
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args[:len(want)] == want:
            found.append(int(pid))
    return found


class SecretTest(RecoverydTestCase):

    def _check_absent(self, d, rec, value):
        self.assertNotIn(value, json.dumps(rec), "secret in the job record")
        self.assertNotIn(value, "\n".join(flat_strings(d.jobs())), "secret in the job list")
        self.assertNotIn(value, d.log_text(), "secret in the log")
        with open(d.stderr_path, "rb") as f:
            self.assertNotIn(value.encode(), f.read(), "secret in the log file")
        for suffix in ("", "-wal", "-journal"):
            p = d.journal + suffix
            if os.path.exists(p):
                with open(p, "rb") as f:
                    self.assertNotIn(value.encode(), f.read(), "secret written to the journal " + suffix)

    def test_secret_in_header_is_not_recorded(self):
        fake = self.fake()
        value = "s3cr3t-" + secrets.token_hex(20)
        run = '''
local tok = recovery.secret("api-token")
local r = must(recovery.http{method = "POST", url = FAKE .. "/secure",
  headers = {Authorization = "Bearer " .. tok, ["X-Api-Token"] = tok}, json = {ping = true}})
recovery.log.info("called the secure endpoint", {status = r.status})
'''
        d = self.daemon({"s": playbook("s", run, "return true", match=ANY, fake=fake)},
                        secrets={"api-token": value + "\n"})
        st, _, doc = d.trigger("s", manual())
        self.assertStatus(st, 202, d, doc)
        rec = d.wait_job(doc["jobs"][0]["id"])
        self.assertEqual(rec["state"], "succeeded", rec)
        req = fake.requests("POST", "/secure")[0]
        self.assertEqual(req.header("Authorization"), "Bearer " + value, "secret must be read (trimmed) and used")
        self.assertEqual(req.header("X-Api-Token"), value)
        self.assertTrue(find_actions(rec, "POST", "/secure"), rec.get("actions"))
        self._check_absent(d, rec, value)

    def test_secret_logged_by_playbook_is_redacted(self):
        fake = self.fake()
        value = "s3cr3t-" + secrets.token_hex(20)
        run = '''
local tok = recovery.secret("api-token")
recovery.log.info("token is " .. tok, {token = tok})
error("giving up with " .. tok)
'''
        d = self.daemon({"s": playbook("s", run, "return true", match=ANY, fake=fake)},
                        secrets={"api-token": value})
        st, _, doc = d.trigger("s", manual())
        self.assertStatus(st, 202, d, doc)
        rec = d.wait_job(doc["jobs"][0]["id"])
        self.assertEqual(rec["state"], "failed", rec)
        self.assertIn("giving up with", str(rec["attempts"][0].get("error")))
        self._check_absent(d, rec, value)

    def test_secret_name_cannot_escape_the_secrets_dir(self):
        fake = self.fake()
        run = '''
local ok, v = pcall(recovery.secret, "../webhook.token")
''' + report("{ok = ok, value = tostring(v)}")
        d = self.daemon({"s": playbook("s", run, "return true", match=ANY, fake=fake)})
        st, _, doc = d.trigger("s", manual())
        self.assertStatus(st, 202, d, doc)
        d.wait_job(doc["jobs"][0]["id"])
        for r in fake.requests():
            self.assertNotIn(d.tokens["webhook"].encode(), r.body, "secret() read outside the secrets dir")


class SandboxTest(RecoverydTestCase):

    def test_runaway_lua_hits_the_deadline(self):
        d = self.daemon({
            "spin": playbook("spin", "while true do end", "return true", match=ANY, timeout=1),
            "ok": playbook("ok", "return", "return true", match=ANY),
        })
        t0 = time.monotonic()
        st, _, doc = d.trigger("spin", manual())
        self.assertStatus(st, 202, d, doc)
        job_id = doc["jobs"][0]["id"]
        # the HTTP side stays responsive while the job spins
        st, _, _ = d.get("/healthz", token=None, timeout=5)
        self.assertEqual(st, 200)
        rec = d.wait_job(job_id, timeout=10)
        self.assertLess(time.monotonic() - t0, 6)
        self.assertEqual(rec["state"], "failed", rec)
        self.assertEqual(rec["attempts"][0]["result"], "timeout", rec["attempts"])
        self.assertTrue(d.alive())
        st, _, _ = d.get("/healthz", token=None, timeout=5)
        self.assertEqual(st, 200)
        st, _, rec2 = d.trigger("ok", manual(), "wait=10")
        self.assertStatus(st, 200, d, rec2)
        self.assertEqual(rec2["state"], "succeeded")

    def test_standard_library_is_restricted(self):
        fake = self.fake()
        run = '''
local bin_loaded = false
if string.dump then
  local okd, bin = pcall(string.dump, function() return 1 end)
  if okd and bin then bin_loaded = (load(bin) ~= nil) end
end
''' + report('''{
  io = type(io), debug = type(debug), dofile = type(dofile), loadfile = type(loadfile),
  os_execute = type(os and os.execute), os_getenv = type(os and os.getenv),
  os_remove = type(os and os.remove), os_exit = type(os and os.exit),
  loadlib = type(package and package.loadlib), os_time = type(os and os.time),
  string = type(string), table = type(table), math = type(math),
  bin_loaded = bin_loaded, text_load = type(load("return 1")),
}''')
        d = self.daemon({"sb": playbook("sb", run, "return true", match=ANY, fake=fake)})
        st, _, doc = d.trigger("sb", manual())
        self.assertStatus(st, 202, d, doc)
        rec = d.wait_job(doc["jobs"][0]["id"])
        self.assertEqual(rec["state"], "succeeded", rec)
        got = fake.requests("POST", "/report")[0].json()
        for name in ("io", "debug", "dofile", "loadfile", "os_execute", "os_getenv", "os_remove", "os_exit",
                     "loadlib"):
            self.assertEqual(got[name], "nil", "%s is reachable from a playbook: %r" % (name, got))
        self.assertEqual(got["os_time"], "function")
        self.assertEqual((got["string"], got["table"], got["math"]), ("table", "table", "table"))
        self.assertEqual(got["text_load"], "function")
        self.assertIs(got["bin_loaded"], False, "binary chunks must not load")


if __name__ == "__main__":
    unittest.main()

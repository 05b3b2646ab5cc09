"""Hostile playbooks against the real daemon: each finding of the security
review (memory corruption in the Lua<->JSON bridge, finalizers that escape the
deadline, NUL bytes cut off at the C boundary) and the sandbox abuses that
already held, so that they stay held. Every test ends by checking that the
daemon is still alive and still runs a harmless job."""

import json
import os
import signal
import time
import unittest

from harness import LUA_PATH, RecoverydTestCase, lua_str, playbook

ANY = ['alertname="Hostile"']

# Finding 1: to_json recursed without checking the Lua stack.
DEEP_ENCODE = '''
local v = recovery.json.decode(string.rep('{"k":', 40) .. '1' .. string.rep('}', 40))
for i = 1, 2000 do
  local junk = {}
  for j = 1, 20 do junk[j] = {j} end
  recovery.json.encode(v)
end
local deep = {}
local cur = deep
for i = 1, 60 do cur.k = {} cur = cur.k end
assert(recovery.json.encode(deep))
local too_deep = {}
cur = too_deep
for i = 1, 100 do cur.k = {} cur = cur.k end
local s, err = recovery.json.encode(too_deep)
assert(s == nil and err:find("too deep"), "deeper than the cap must fail cleanly: " .. tostring(err))
local cyc = {} cyc.self = cyc
s, err = recovery.json.encode(cyc)
assert(s == nil and err, "a cycle must fail cleanly")
recovery.log.info("deep", {v = v})
'''

# Finding 2: metatables handed to Lua by C must be protected, or a playbook
# adds a __gc that C later attaches with lua_setmetatable (hooks off).
GC_ESCAPES = {
    "json_array": '''
local mt = getmetatable(recovery.json.array())
if type(mt) == "table" then pcall(function() mt.__gc = function() while true do end end end) end
for i = 1, 50 do recovery.json.array({}) end
collectgarbage() collectgarbage()
''',
    "json_decode": '''
local mt = getmetatable(recovery.json.decode("[1,2]"))
if type(mt) == "table" then pcall(rawset, mt, "__gc", function() while true do end end) end
for i = 1, 50 do local a = recovery.json.decode("[]") end
collectgarbage() collectgarbage()
''',
    "string": '''
local mt = getmetatable("")
if type(mt) == "table" then pcall(rawset, mt, "__gc", function() while true do end end) end
collectgarbage()
''',
    "gc_false_then_function": '''
local mt = {__gc = false}
local ok = pcall(setmetatable, {}, mt)
assert(not ok, "a __gc field of any value is refused")
''',
    "setmetatable_on_protected": '''
local a = recovery.json.array()
local ok = pcall(setmetatable, a, {__gc = function() while true do end end})
assert(not ok)
ok = pcall(setmetatable, a, nil)
assert(not ok, "a protected metatable cannot be removed")
''',
}

# Finding 6: a NUL byte in a Lua string must not be cut off where C takes it.
NUL_CHECKS = r"""
local out = {}
local function refused(name, f)
  local ok, a, b = pcall(f)
  local err = ok and b or a
  out[name] = {ok = ok and a ~= nil, err = tostring(err)}
end
refused("exec_argv", function() return recovery.exec{"/bin/echo", "a\0b"} end)
refused("exec_env_name", function() return recovery.exec{"/bin/echo", env = {["A\0B"] = "x"}} end)
refused("exec_env_value", function() return recovery.exec{"/bin/echo", env = {LD_X = "y\0z"}} end)
refused("exec_env_equals", function() return recovery.exec{"/bin/echo", env = {["A=B"] = "x"}} end)
refused("http_url", function() return recovery.http{url = FAKE .. "/x\0y"} end)
refused("http_header", function() return recovery.http{url = FAKE .. "/h", headers = {["X-A"] = "1\0 2"}} end)
refused("http_method", function() return recovery.http{url = FAKE .. "/m", method = "GET\0POST"} end)
refused("log", function() return recovery.log.info("a\0b") end)
refused("secret", function() return recovery.secret("tok\0en") end)
refused("require", function() return require("recovery\0evil") end)
refused("json_encode", function() return recovery.json.encode({k = "a\0b"}) end)
refused("json_encode_key", function() return recovery.json.encode({["a\0b"] = 1}) end)
refused("json_decode", function() return recovery.json.decode('{"k":"a\\u0000b"}') end)
must(recovery.http{method = "POST", url = FAKE .. "/report", json = out})
error("tail\0kept")
"""


# What the security review found held; kept here so that it stays held. Each
# runs as a job with a 2 s timeout and must end by the deadline.
DEADLINE_ESCAPES = {
    "xpcall_handler": "xpcall(function() error('x') end, function() while true do end end)",
    "gsub_callback": "string.gsub(string.rep('a', 100), 'a', function() while true do end end)",
    "coroutine_wrap_in_pcall": "pcall(coroutine.wrap(function() while true do end end))",
    "close_metamethod": "do local x <close> = setmetatable({}, {__close = function() while true do end end}) end",
    "sort_comparator": "local t = {} for i = 1, 100 do t[i] = i end table.sort(t, function(a, b) while true do end end)",
    "tostring_metamethod": "tostring(setmetatable({}, {__tostring = function() while true do end end}))",
    "resume_loop": "local co = coroutine.create(function() while true do coroutine.yield() end end) while true do coroutine.resume(co) end",
    "coroutine_close": "local co = coroutine.create(function() local x <close> = setmetatable({}, {__close = function() while true do end end}) coroutine.yield() end) coroutine.resume(co) coroutine.close(co)",
    "error_object_tostring": "error(setmetatable({}, {__tostring = function() while true do end end}))",
    "index_loop": "local t = setmetatable({}, {__index = function(t, k) while true do end end}) local _ = t.x",
    "pcall_loop": "while true do pcall(function() while true do end end) end",
}
UNREACHABLE = r"""
local out = {}
local function gone(name, f) local ok, v = pcall(f) out[name] = ok and v ~= nil end
gone("string.dump", function() return string.dump end)
gone("io", function() return io end)
gone("debug", function() return debug end)
gone("package", function() return package end)
gone("os.execute", function() return os.execute end)
gone("os.getenv", function() return os.getenv end)
gone("binary_chunk", function() return load("\27Lua") end)
gone("secret_traversal", function() return recovery.secret("../x") end)
gone("read_file_outside", function() return recovery.read_file("/etc/passwd") end)
gone("exec_relative", function() return recovery.exec{"echo", "x"} end)
gone("exec_not_listed", function() return recovery.exec{"/bin/sh", "-c", "true"} end)
local r = recovery.exec{"/usr/bin/env", env = {ONLY = "this"}}
out.child_env = r.stdout
local ok, err = pcall(function() local t = {} for i = 1, 1e9 do t[i] = string.rep("x", 1024) .. i end end)
out.memory_bomb = tostring(err)
must(recovery.http{method = "POST", url = FAKE .. "/report", json = out})
"""


def manual(reason="hostile"):
    return {"labels": {"alertname": "Hostile", "instance": "x%d" % time.monotonic_ns()},
            "annotations": {}, "reason": reason}


class HostileTest(RecoverydTestCase):

    def start(self, playbooks, extra=()):
        return self.daemon(playbooks, extra_args=list(extra))

    def run_job(self, d, name, timeout=20):
        st, _, doc = d.trigger(name, manual(), token="operator")
        self.assertStatus(st, 202, d, doc)
        return d.wait_job(doc["jobs"][0]["id"], timeout=timeout)

    def assert_still_serving(self, d):
        """The daemon is alive and runs a harmless job to the end."""
        self.assertTrue(d.alive(), d.log_tail())
        rec = self.run_job(d, "harmless")
        self.assertEqual(rec["state"], "succeeded", rec)
        st, _, _ = d.get("/healthz", token=None)
        self.assertEqual(st, 200)

    def harmless(self):
        return playbook("harmless", "recovery.log.info('fine')", match=['alertname="Harmless"'])

    # ---- finding 1 ---------------------------------------------------------
    def test_deep_json_encode_in_jobs(self):
        d = self.start({"deep": playbook("deep", DEEP_ENCODE, match=ANY, timeout=30),
                        "harmless": self.harmless()})
        ids = []
        for _ in range(8):
            st, _, doc = d.trigger("deep", manual(), token="operator")
            self.assertStatus(st, 202, d, doc)
            ids.append(doc["jobs"][0]["id"])
        for i in ids:
            rec = d.wait_job(i, timeout=60)
            self.assertEqual(rec["state"], "succeeded", rec)
        self.assert_still_serving(d)

    def test_deep_json_encode_in_run_command(self):
        d = self.daemon({"deep": playbook("deep", DEEP_ENCODE, match=ANY, timeout=30)}, start=False)
        alert = os.path.join(self.tmpdir, "alert.json")
        with open(alert, "w") as f:
            json.dump({"labels": {"alertname": "Hostile"}, "annotations": {}}, f)
        p = d.run_cli(["run", "deep", "--alert", alert, "--playbooks", d.playbooks_dir,
                       "--lua-path", LUA_PATH], timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout[-2000:] + p.stderr[-4000:])

    # ---- what held -----------------------------------------------------------
    def test_deadline_escapes_stopped(self):
        pbs = {"harmless": self.harmless()}
        for name, body in DEADLINE_ESCAPES.items():
            pn = "esc-" + name.replace("_", "-")
            pbs[pn] = playbook(pn, body, match=ANY, timeout=2)
        d = self.start(pbs)
        t0 = time.monotonic()
        ids = {}
        for name in DEADLINE_ESCAPES:
            st, _, doc = d.trigger("esc-" + name.replace("_", "-"), manual(), token="operator")
            self.assertStatus(st, 202, d, doc)
            ids[name] = doc["jobs"][0]["id"]
        for name, i in ids.items():
            rec = d.wait_job(i, timeout=30)
            self.assertEqual(rec["state"], "failed", "%s: %r" % (name, rec))
            self.assertRegex(rec["error"], "deadline|timed out", name)
        # 11 jobs of 2 s each on one thread: the preemptible ones share it,
        # the ones stuck where Lua cannot yield (sort comparator, gsub
        # callback, __tostring, handlers) hold it in turn until their deadline
        self.assertLess(time.monotonic() - t0, 20)
        self.assert_still_serving(d)

    def test_busy_playbook_does_not_starve_others(self):
        """A CPU-bound attempt with a long timeout shares the loop: other jobs
        run meanwhile, /healthz stays up, and code that cannot be preempted
        (a sort comparator) fails after holding the loop 2 s (half the
        watchdog's unhealthy threshold), long before its 60 s timeout."""
        d = self.start({"spin": playbook("spin", "while true do end", match=ANY, timeout=60),
                        "spin-sort": playbook("spin-sort", DEADLINE_ESCAPES["sort_comparator"],
                                              match=ANY, timeout=60),
                        "spin-pattern": playbook("spin-pattern",
                                                 'string.rep("a", 100000):find(".-.-.-.-.-.-b")',
                                                 match=ANY, timeout=60),
                        "harmless": self.harmless()},
                       extra=["--watchdog-unhealthy", "4", "--watchdog-exit", "10"])
        st, _, doc = d.trigger("spin", manual(), token="operator")
        self.assertStatus(st, 202, d, doc)
        spin = doc["jobs"][0]["id"]
        st, _, doc = d.trigger("spin-sort", manual(), token="operator")
        self.assertStatus(st, 202, d, doc)
        sort_job = doc["jobs"][0]["id"]
        st, _, doc = d.trigger("spin-pattern", manual(), token="operator")
        self.assertStatus(st, 202, d, doc)
        pattern_job = doc["jobs"][0]["id"]
        t0 = time.monotonic()
        self.assert_still_serving(d)
        self.assertLess(time.monotonic() - t0, 5, "a harmless job waited behind a busy one")
        for job in (sort_job, pattern_job):
            rec = d.wait_job(job, timeout=15)
            self.assertEqual(rec["state"], "failed", rec)
            self.assertIn("held the event loop", rec["error"])
        self.assertLess(time.monotonic() - t0, 12)
        for _ in range(10):
            st, _, _ = d.get("/healthz", token=None)
            self.assertEqual(st, 200)
            time.sleep(0.3)
        self.assertEqual(d.job(spin)["state"], "running")
        st, _, doc = d.api("POST", "/api/v1/jobs/%s/cancel" % spin, {"reason": "test"})
        self.assertIn(st, (200, 202), doc)
        rec = d.wait_job(spin, timeout=10)
        self.assertEqual(rec["state"], "cancelled", rec)

    def test_unreachable_and_refused(self):
        fake = self.fake()
        d = self.start({"probe": playbook("probe", UNREACHABLE, match=ANY, fake=fake, timeout=20),
                        "harmless": self.harmless()},
                       extra=["--exec-allow", "/usr/bin/env", "--lua-memory", "8388608"])
        rec = self.run_job(d, "probe", timeout=40)
        self.assertEqual(rec["state"], "succeeded", rec)
        got = fake.requests("POST", "/report")[0].json()
        for name in ("string.dump", "io", "debug", "package", "os.execute", "os.getenv", "binary_chunk",
                     "secret_traversal", "read_file_outside", "exec_relative", "exec_not_listed"):
            self.assertIs(got[name], False, name)
        self.assertEqual(sorted(got["child_env"].split()), ["ONLY=this", "PATH=/usr/local/bin:/usr/bin:/bin"])
        self.assertIn("memory", got["memory_bomb"])
        self.assert_still_serving(d)

    def test_playbook_error_kinds(self):
        """recoveryd_playbook_errors_total{kind} counts what ended the attempt
        (the Lua status of a memory error, the deadline, the load), not what
        the error text says: a playbook's own error that mentions "not enough
        memory" is a plain failure."""
        flags = os.path.join(self.tmpdir, "flags")
        os.makedirs(flags)
        bomb = "local t = {} while true do t[#t + 1] = string.rep('x', 1e5) end"

        def once_flagged(flag, body):
            # the file is absent when the set loads at start-up, present
            # when the attempt loads it again
            return "if recovery.read_file(%s) then %s end" % (lua_str(os.path.join(flags, flag)), body)

        pbs = {
            "harmless": self.harmless(),
            "mem-run": playbook("mem-run", bomb, match=ANY),
            "mem-verify": playbook("mem-verify", "return", verify=bomb, match=ANY),
            "says-mem": playbook("says-mem", "error('not enough memory')", match=ANY),
            "mem-load": playbook("mem-load", "return", match=ANY, prelude=once_flagged("mem", bomb)),
            "bad-load": playbook("bad-load", "return", match=ANY,
                                 prelude=once_flagged("load", "error('broken on purpose', 0)")),
            "slow": playbook("slow", "recovery.sleep(5)", match=ANY, timeout=0.3),
        }
        d = self.start(pbs, extra=["--lua-memory", "8388608", "--read-allow", flags])
        for flag in ("mem", "load"):
            with open(os.path.join(flags, flag), "w") as f:
                f.write("1")
        want = {  # playbook: (the error matches, the kind counted)
            "mem-run": ("run: not enough memory", "memory"),
            "mem-verify": ("verify: not enough memory", "memory"),
            "says-mem": ("run: .*says-mem.lua:[0-9]+: not enough memory", None),
            "mem-load": ("loading the playbook: not enough memory", "memory"),
            "bad-load": ("loading the playbook: broken on purpose", "load"),
            "slow": ("attempt timed out after 0[.]3s", "timeout"),
        }
        for name, (error, kind) in want.items():
            rec = self.run_job(d, name)
            self.assertEqual((rec["state"], rec["outcome"]), ("failed", "failed"), rec)
            self.assertRegex(rec["error"], "^" + error, rec)
            self.assertEqual([a["result"] for a in rec["attempts"]],
                             ["timeout" if kind == "timeout" else "failed"], rec)
        text = d.metrics()
        for name, (_, kind) in want.items():
            for k in ("timeout", "memory", "load"):
                got = d.metric_value(text, "recoveryd_playbook_errors_total", {"playbook": name, "kind": k})
                self.assertEqual(got or 0, 1 if k == kind else 0, (name, k))
            got = d.metric_value(text, "recoveryd_job_attempts_total", {"playbook": name})
            self.assertEqual(got, 1, name)
        self.assert_still_serving(d)

    # ---- finding 6 ---------------------------------------------------------
    def test_nul_bytes_refused_in_lua(self):
        fake = self.fake()
        d = self.start({"nul": playbook("nul", NUL_CHECKS, match=ANY, fake=fake),
                        "harmless": self.harmless()},
                       extra=["--exec-allow", "/bin/echo"])
        rec = self.run_job(d, "nul")
        self.assertEqual(rec["state"], "failed", rec)
        # an error message keeps what follows a NUL
        self.assertIn("tail\\0kept", rec["error"])
        got = fake.requests("POST", "/report")[0].json()
        for name, r in sorted(got.items()):
            self.assertFalse(r["ok"], "%s was accepted: %r" % (name, r))
            want = "=" if name == "exec_env_equals" else "NUL"
            self.assertIn(want, r["err"], "%s: %r" % (name, r))
        self.assertEqual(len(got), 13)
        # nothing reached the fake with a cut-off path
        self.assertEqual([q.path for q in fake.requests() if q.path != "/report"], [])
        self.assert_still_serving(d)

    def test_nul_in_playbook_fields(self):
        src = playbook("nulname", "return", match=['alertname="Hostile\0x"'])
        d = self.daemon({"nulname": src}, start=False)
        p = d.run_cli(["--check-config", "--playbooks", d.playbooks_dir, "--lua-path", LUA_PATH,
                       "--insecure-no-auth"], timeout=30)
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("NUL", p.stdout + p.stderr)

    # ---- finding 2 ---------------------------------------------------------
    def test_protected_metatables(self):
        pbs = {"harmless": self.harmless()}
        for name, body in GC_ESCAPES.items():
            pn = "gc-" + name.replace("_", "-")
            pbs[pn] = playbook(pn, body, match=ANY, timeout=3)
        d = self.start(pbs)
        for name in GC_ESCAPES:
            rec = self.run_job(d, "gc-" + name.replace("_", "-"), timeout=15)
            self.assertIn(rec["state"], ("succeeded", "failed"), rec)
            self.assertEqual(rec["state"], "succeeded", "%s: %s" % (name, rec.get("error")))
        self.assert_still_serving(d)

    def test_protected_metatable_at_load_time(self):
        """The same trick at a playbook's top level: --check-config ends."""
        src = ('local mt = getmetatable(recovery.json.array())\n'
               'mt.__gc = function() while true do end end\n'
               'recovery.json.array({})\ncollectgarbage()\n' +
               playbook("toplevel", "return", match=ANY))
        d = self.daemon({"toplevel": src}, start=False)
        t0 = time.monotonic()
        p = d.run_cli(["--check-config", "--playbooks", d.playbooks_dir, "--lua-path", LUA_PATH,
                       "--insecure-no-auth"], timeout=60)
        took = time.monotonic() - t0
        self.assertLess(took, 15, "check-config must end within the load deadline")
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("toplevel", p.stdout + p.stderr)


class ClientRaceTest(RecoverydTestCase):

    def test_cancel_as_the_job_ends(self):
        """A cancel that reaches the runner after the job ended must find
        nothing, not a freed job (a heap use-after-free under ASan)."""
        d = self.daemon({"quick": playbook("quick", "recovery.sleep(0.002)", match=['alertname="Q"'],
                                           cooldown=0, budget={"runs": 0, "per": 60})})
        t0 = time.monotonic()
        ids = []
        for n in range(200):
            if time.monotonic() - t0 > 20:
                break
            st, _, doc = d.trigger("quick", {"labels": {"alertname": "Q", "i": str(n)}, "reason": "r"},
                                   token="operator")
            self.assertStatus(st, 202, d, doc)
            jid = doc["jobs"][0]["id"]
            ids.append(jid)
            for delay in (0, 0.001, 0.002, 0.003):
                time.sleep(delay)
                st, _, _ = d.api("POST", "/api/v1/jobs/%s/cancel" % jid, {"reason": "race"})
                self.assertIn(st, (200, 202, 404, 409), d.log_tail())
        self.assertGreater(len(ids), 50)
        self.assertTrue(d.alive(), d.log_tail())
        for jid in ids[-5:]:
            self.assertIn(d.wait_job(jid, timeout=10)["state"], ("succeeded", "cancelled"))


STALL = '''
must(recovery.http{method = "POST", url = FAKE .. "/started", json = {job = ctx.job.id}})
recovery._test_stall(600)
'''
WATCHDOG_ARGS = ["--watchdog-unhealthy", "1", "--watchdog-exit", "4"]
WATCHDOG_EXIT = 70


class WatchdogTest(RecoverydTestCase):
    """The defence behind the sandbox: a loop that stops turning makes
    /healthz fail, then ends the process with status 70 naming the job; the
    job is interrupted under the crash rules, and twice is poison.
    RECOVERYD_TEST_FAULTS=1 gives playbooks recovery._test_stall, a C call
    that blocks where no hook reaches, standing in for the next sandbox
    hole."""

    def start_stuck(self, idempotent):
        fake = self.fake()
        d = self.daemon({"stuck": playbook("stuck", STALL, match=ANY, fake=fake, timeout=2,
                                           idempotent=idempotent, retries=3),
                         "harmless": playbook("harmless", "return", match=['alertname="Harmless"'])},
                        extra_args=WATCHDOG_ARGS, start=False)
        d.env = {"RECOVERYD_TEST_FAULTS": "1"}
        d.start()
        return d, fake

    def stall_and_exit(self, d, fake, starts, sigterm=False):
        """Wait for the stall to show on /healthz, then for exit status 70
        (also when a SIGTERM drain is waiting for the stuck loop)."""
        deadline = time.monotonic() + 10
        while len(fake.requests("POST", "/started")) < starts:
            self.assertLess(time.monotonic(), deadline, d.log_tail())
            time.sleep(0.05)
        t0 = time.monotonic()
        while True:
            st, _, doc = d.get("/healthz", token=None, timeout=2)
            if st == 503:
                break
            self.assertLess(time.monotonic() - t0, 3.5, "healthz still %s: %r" % (st, doc))
            time.sleep(0.1)
        self.assertIn("event loop", doc.get("message", ""))
        self.assertGreater(d.metric("recoveryd_event_loop_stall_seconds"), 0.7)
        st, _, _ = d.get("/readyz", token=None, timeout=2)
        self.assertEqual(st, 503)
        if sigterm:
            d.kill(signal.SIGTERM)
        rc = d.wait_exit(15)
        self.assertEqual(rc, WATCHDOG_EXIT, d.log_tail())
        recs = [r for r in d.log_records() if "watchdog" in r.get("msg", "") and r.get("level") == "error"]
        self.assertTrue(recs, d.log_tail())
        self.assertEqual(recs[-1].get("playbook"), "stuck")
        return recs[-1]

    def run_harmless(self, d):
        st, _, doc = d.trigger("harmless", {"labels": {"alertname": "Harmless"}, "reason": "x"},
                               token="operator")
        self.assertStatus(st, 202, d, doc)
        rec = d.wait_job(doc["jobs"][0]["id"], timeout=10)
        self.assertEqual(rec["state"], "succeeded", rec)
        return rec

    def test_stuck_loop_exits_then_poison(self):
        d, fake = self.start_stuck(idempotent=True)
        st, _, doc = d.trigger("stuck", manual(), token="operator")
        self.assertStatus(st, 202, d, doc)
        job = doc["jobs"][0]["id"]
        rec = self.stall_and_exit(d, fake, 1)
        self.assertEqual(rec.get("job"), job)
        # first restart: idempotent, so it runs again and stalls again
        d.start()
        self.stall_and_exit(d, fake, 2)
        # second restart: a poison job, failed and never run again
        d.start()
        rec = d.wait_job(job, timeout=10)
        self.assertEqual(rec["state"], "failed", rec)
        self.assertEqual(rec["outcome"], "poisoned", rec)
        self.assertIn("poisoned", rec["error"])
        self.run_harmless(d)
        self.assertEqual(len(fake.requests("POST", "/started")), 2)
        self.assertEqual(d.metric("recoveryd_jobs_total", {"playbook": "stuck", "outcome": "poisoned"}), 1)

    def test_stuck_non_idempotent_is_interrupted(self):
        d, fake = self.start_stuck(idempotent=False)
        st, _, doc = d.trigger("stuck", manual(), token="operator")
        self.assertStatus(st, 202, d, doc)
        job = doc["jobs"][0]["id"]
        self.stall_and_exit(d, fake, 1, sigterm=True)
        d.start()
        rec = d.wait_job(job, timeout=10)
        self.assertEqual(rec["state"], "failed", rec)
        self.assertEqual(rec["outcome"], "interrupted", rec)
        self.assertIn("watchdog", rec["error"])
        self.run_harmless(d)
        self.assertEqual(len(fake.requests("POST", "/started")), 1)

    def test_healthy_when_idle(self):
        """An idle loop still turns: no false alarm past the threshold."""
        d = self.daemon({"harmless": playbook("harmless", "return", match=['alertname="Harmless"'])},
                        extra_args=WATCHDOG_ARGS)
        time.sleep(2.5)
        st, _, _ = d.get("/healthz", token=None)
        self.assertEqual(st, 200)
        self.assertLess(d.metric("recoveryd_event_loop_stall_seconds"), 1.5)
        self.assertTrue(d.alive())

    def test_no_stall_hook_without_the_variable(self):
        fake = self.fake()
        d = self.daemon({"stuck": playbook("stuck", STALL, match=ANY, fake=fake, timeout=2)})
        st, _, doc = d.trigger("stuck", manual(), token="operator")
        self.assertStatus(st, 202, d, doc)
        rec = d.wait_job(doc["jobs"][0]["id"], timeout=10)
        self.assertEqual(rec["state"], "failed", rec)
        self.assertIn("_test_stall", rec["error"])


if __name__ == "__main__":
    unittest.main()

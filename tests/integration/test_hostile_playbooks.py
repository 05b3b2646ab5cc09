"""Hostile playbooks against the real daemon: each finding of the security
review (memory corruption in the Lua<->JSON bridge, finalizers that escape the
deadline, NUL bytes cut off at the C boundary) and the sandbox abuses that
already held, so that they stay held. Every test ends by checking that the
daemon is still alive and still runs a harmless job."""

import json
import os
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


if __name__ == "__main__":
    unittest.main()

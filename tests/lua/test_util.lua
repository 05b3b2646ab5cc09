-- Unit tests of recovery.util (run with lua5.4, `recovery` stubbed).
local t = require "stub"
local util = require "recovery.util"

-- A fake clock: recovery.sleep advances recovery.now.
local function fake_clock(start)
  local clock = { now = start or 1000, sleeps = {} }
  recovery.now = function() return clock.now end
  recovery.sleep = function(s)
    assert(type(s) == "number" and s >= 0, "bad sleep")
    clock.sleeps[#clock.sleeps + 1] = s
    clock.now = clock.now + s
  end
  return clock
end

local function raises(fn, pattern)
  local ok, err = pcall(fn)
  t.ok(not ok, "expected an error")
  if pattern then t.ok(tostring(err):find(pattern), "error '" .. tostring(err) .. "' does not match " .. pattern) end
  return err
end

t.run{
  check_opts = function()
    local o = { timeout = 1 }
    t.eq(util.check_opts(o, { "timeout", "interval" }, "f"), o, "returns opts")
    t.eq(next(util.check_opts(nil, { "timeout" }, "f")), nil, "nil is {}")
    -- (not tail calls: those leave no frame to blame)
    local function f(opts) local r = util.check_opts(opts, { "ns", "timeout" }, "f") return r end
    local m = t.permanent(function() f({ namespace = "x" }) end, 'f: unknown option "namespace" (allowed: ns, timeout)')
    t.ok(m:find("test_util%.lua:%d+: f: "), "blames the caller of f: " .. m)
    t.permanent(function() f({ "x" }) end, "f: unknown option [1]")
    t.permanent(function() f({ [true] = 1 }) end, "f: unknown option of type boolean")
    t.permanent(function() f("ns") end, "f: options must be a table, got string")
    -- level 2: one more function up
    local function g(opts) local r = util.check_opts(opts, { "a" }, "g", 2) return r end
    local function h(opts) local r = g(opts) return r end
    m = t.permanent(function() h({ b = 1 }) end, 'g: unknown option "b" (allowed: a)')
    t.ok(m:find("test_util%.lua:%d+: g: "), m)
  end,

  wait_until_unknown_option = function()
    fake_clock()
    t.permanent(function() util.wait_until(function() return true end, { timout = 5 }) end,
                'wait_until: unknown option "timout" (allowed: timeout, interval)')
  end,

  wait_until_immediate = function()
    local clock = fake_clock()
    local ok, reason = util.wait_until(function() return true, "ready" end)
    t.eq(ok, true); t.eq(reason, "ready"); t.eq(#clock.sleeps, 0, "no sleep")
  end,

  wait_until_eventually = function()
    local clock = fake_clock()
    local n = 0
    local ok, reason = util.wait_until(function() n = n + 1; return n >= 3, "n=" .. n end, { timeout = 60, interval = 2 })
    t.eq(ok, true); t.eq(reason, "n=3"); t.eq(n, 3)
    t.eq(#clock.sleeps, 2); t.eq(clock.sleeps[1], 2)
  end,

  wait_until_timeout = function()
    local clock = fake_clock()
    local n = 0
    local ok, reason = util.wait_until(function() n = n + 1; return false, "still " .. n end, { timeout = 5, interval = 2 })
    t.eq(ok, false)
    t.eq(reason, "timed out after 5s: still " .. n)
    t.eq(clock.now, 1005, "never sleeps past the deadline")
    t.eq(clock.sleeps[#clock.sleeps], 1, "last sleep cut to the time left")
    t.eq(n, 4)
  end,

  wait_until_defaults = function()
    local clock = fake_clock()
    local ok, reason = util.wait_until(function() return false end)
    t.eq(ok, false)
    t.eq(reason, "timed out after 60s: condition not met")
    t.eq(clock.sleeps[1], 2)
    t.eq(#clock.sleeps, 30)
  end,

  wait_until_stop = function()
    local clock = fake_clock()
    local ok, reason = util.wait_until(function() return false, "broken", true end)
    t.eq(ok, false); t.eq(reason, "broken"); t.eq(#clock.sleeps, 0)
  end,

  wait_until_zero_timeout = function()
    fake_clock()
    local n = 0
    local ok = util.wait_until(function() n = n + 1; return false end, { timeout = 0 })
    t.eq(ok, false); t.eq(n, 1, "called once")
  end,

  wait_until_misuse = function()
    raises(function() util.wait_until("x") end, "expected a function")
    raises(function() util.wait_until(function() end, { timeout = -1 }) end, "timeout")
    raises(function() util.wait_until(function() end, { interval = "2" }) end, "interval")
  end,

  wait_until_propagates = function()
    fake_clock()
    raises(function() util.wait_until(function() error("boom") end) end, "boom")
  end,

  urlencode = function()
    t.eq(util.urlencode("app=kong,tier!=canary"), "app%3Dkong%2Ctier%21%3Dcanary")
    t.eq(util.urlencode("key in (a,b)"), "key%20in%20%28a%2Cb%29")
    t.eq(util.urlencode("AZaz09-._~"), "AZaz09-._~")
    t.eq(util.urlencode("a/b?c&d#e%"), "a%2Fb%3Fc%26d%23e%25")
    t.eq(util.urlencode("é"), "%C3%A9")
    t.eq(util.urlencode(""), "")
    t.eq(util.urlencode(42), "42")
  end,

  query = function()
    t.eq(util.query({ labelSelector = "app=web", limit = 500 }), "labelSelector=app%3Dweb&limit=500")
    t.eq(util.query({ b = "2", a = "1", c = true }), "a=1&b=2&c=true")
    t.eq(util.query({ x = { "1", "2" } }), "x=1&x=2")
    t.eq(util.query({}), "")
    t.eq(util.query(nil), "")
    t.eq(util.query({ ["a b"] = "c d" }), "a%20b=c%20d")
  end,

  merge = function()
    local a, b = { x = 1, y = 2 }, { y = 3, z = 4 }
    local m = util.merge(a, b)
    t.eq(m.x, 1); t.eq(m.y, 3); t.eq(m.z, 4)
    t.eq(a.y, 2, "a unchanged"); t.ok(m ~= a)
    local nested = { t = {} }
    t.ok(util.merge(nested).t == nested.t, "shallow")
    t.eq(next(util.merge(nil, nil)), nil)
  end,

  trim = function()
    t.eq(util.trim("  a b \n\t"), "a b")
    t.eq(util.trim("tok\n"), "tok")
    t.eq(util.trim(""), "")
    t.eq(util.trim(" \n "), "")
  end,

  dns1123 = function()
    for _, ok in ipairs({ "a", "web", "web-1", "0abc", "a-b-c", string.rep("a", 63), "x9" }) do
      t.eq(util.dns1123(ok), true, ok)
    end
    for _, bad in ipairs({ "", "-a", "a-", "A", "web_1", "web.1", "a b", string.rep("a", 64), "é" }) do
      t.eq(util.dns1123(bad), false, bad)
    end
    t.eq(util.dns1123(nil), false); t.eq(util.dns1123(5), false)
  end,

  rfc3339 = function()
    t.eq(util.rfc3339(0), "1970-01-01T00:00:00Z")
    t.eq(util.rfc3339(1740823500), "2025-03-01T10:05:00Z")
    t.eq(util.rfc3339(1740823500.9), "2025-03-01T10:05:00Z", "fractions truncated")
    t.eq(util.rfc3339(951782400), "2000-02-29T00:00:00Z")
    t.ok(util.rfc3339():match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$"), "now")
  end,

  short = function()
    t.eq(util.short("  abc \n"), "abc", "trimmed")
    t.eq(util.short(nil), ""); t.eq(util.short(false), "")
    t.eq(util.short(42), "42")
    t.eq(util.short(string.rep("x", 300)), string.rep("x", 300), "300 bytes kept whole by default")
    t.eq(util.short(string.rep("x", 301)), string.rep("x", 300) .. "...", "cut at 300 by default")
    t.eq(util.short("abcdef", 3), "abc...")
    t.eq(util.short("abc", 3), "abc")
  end,

  opt = function()
    for _, unset in ipairs({ false, "", recovery.json.null }) do
      t.eq(util.opt(unset), nil, tostring(unset))
    end
    t.eq(util.opt(nil), nil)
    local tbl = {}
    t.eq(util.opt(tbl), tbl); t.eq(util.opt(0), 0, "0 is set"); t.eq(util.opt("x"), "x"); t.eq(util.opt(true), true)
  end,

  list = function()
    for _, unset in ipairs({ false, "", recovery.json.null }) do
      t.eq(next(util.list(unset)), nil, "not set: empty list")
    end
    t.eq(next(util.list(nil)), nil)
    local one = util.list("/etc/a.yaml")
    t.eq(#one, 1); t.eq(one[1], "/etc/a.yaml", "a single value becomes a list")
    local l = { "a", "b" }
    t.eq(util.list(l), l, "a list is returned as it is")
  end,

  secret = function()
    local asked = {}
    recovery.secret = function(name)
      asked[#asked + 1] = name
      if name == "kong-token" then return "s3cret" end
      return nil, "no such file"
    end
    local S = { tok = "kong-token", off = false, empty = "", missing = "gone" }
    t.eq(util.secret(S, "tok"), "s3cret")
    t.eq(util.secret(S, "off"), nil, "false: not set")
    t.eq(util.secret(S, "empty"), nil, "empty: not set")
    t.eq(util.secret(S, "absent"), nil, "absent: not set")
    t.eq(#asked, 1, "only a set name is read")
    local ok, e = pcall(util.secret, S, "missing")
    t.ok(not ok, "an unreadable secret raises")
    t.ok(type(e) == "table" and e.recoveryd_final, "recovery.fail: no retries: " .. tostring(e))
    t.eq(e.reason, "settings: missing: no such file")
  end,

  errorf = function()
    local function caller() util.errorf("bad %s: %d", "thing", 7) end
    local err = raises(caller, "bad thing: 7")
    t.ok(tostring(err):find("test_util.lua:%d+:"), "blames the caller: " .. tostring(err))
  end,
}

-- Pure argv building of recovery.kong (no daemon).
local t = require "stub"
local kong = require "recovery.kong"

local function same(got, want, msg)
  local g, w = table.concat(got, " | "), table.concat(want, " | ")
  if g ~= w or #got ~= #want then
    error(string.format("%s:\n  got  %s\n  want %s", msg or "argv", g, w), 2)
  end
end

local OPTS = {
  bin = "/opt/deck/deck",
  kong_addr = "http://kong-admin:8001",
  headers = { "Kong-Admin-Token:tok", "X-Extra:1" },
  select_tags = { "recoveryd", "settings" },
}

local function with(extra)
  local o = {}
  for k, v in pairs(OPTS) do o[k] = v end
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

local G = { "--kong-addr", "http://kong-admin:8001", "--headers", "Kong-Admin-Token:tok",
            "--headers", "X-Extra:1" }
local TAGS = { "--select-tag", "recoveryd", "--select-tag", "settings" }
local TAIL = { "--no-color", "--analytics=false" }

local function cat(...)
  local out = {}
  for _, l in ipairs({ ... }) do
    for _, v in ipairs(l) do out[#out + 1] = v end
  end
  return out
end

t.run{
  unknown_option_keys = function()
    local m = t.permanent(function() kong.deck(with({ select_tag = "x" })) end,
                          'kong.deck: unknown option "select_tag" (allowed: bin, kong_addr, headers, select_tags, ' ..
                          'timeout, legacy, env, flags)')
    t.ok(m:find("test_kong%.lua:%d+: kong%.deck: "), "blames the caller: " .. m)
    t.permanent(function() kong.deck_argv(with({ kong_url = "x" }), "ping") end,
                'deck_argv: unknown option "kong_url"')
    t.permanent(function() kong.deck_argv(OPTS, "dump", { out = "-" }) end,
                'deck_argv: args: unknown option "out" (allowed: files, output)')
    t.permanent(function() kong.admin{ url = "http://kong:8001", token = "x" } end,
                'kong.admin: unknown option "token" (allowed: url, headers, timeout)')
    local d = kong.deck(OPTS)
    t.permanent(function() d:diff({ stdin = "x", file = "y" }) end, 'deck diff: unknown option "file" (allowed: stdin)')
  end,

  new_layout = function()
    same(kong.deck_argv(OPTS, "ping"), cat({ "/opt/deck/deck", "gateway", "ping" }, G, TAIL), "ping (no --select-tag)")
    same(kong.deck_argv(OPTS, "dump"), cat({ "/opt/deck/deck", "gateway", "dump", "-o", "-" }, G, TAGS, TAIL), "dump")
    same(kong.deck_argv(OPTS, "diff", { files = { "a.yaml", "b.yaml" } }),
         cat({ "/opt/deck/deck", "gateway", "diff", "--non-zero-exit-code" }, G, TAGS, TAIL, { "a.yaml", "b.yaml" }), "diff")
    same(kong.deck_argv(OPTS, "sync", { files = { "-" } }),
         cat({ "/opt/deck/deck", "gateway", "sync" }, G, TAGS, TAIL, { "-" }), "sync stdin")
  end,

  legacy_layout = function()
    local o = with{ legacy = true }
    same(kong.deck_argv(o, "ping"), cat({ "/opt/deck/deck", "ping" }, G, TAIL), "ping")
    same(kong.deck_argv(o, "dump"), cat({ "/opt/deck/deck", "dump", "-o", "-" }, G, TAGS, TAIL), "dump")
    same(kong.deck_argv(o, "diff", { files = { "a.yaml", "b.yaml" } }),
         cat({ "/opt/deck/deck", "diff", "--non-zero-exit-code", "-s", "a.yaml", "-s", "b.yaml" }, G, TAGS, TAIL), "diff")
    same(kong.deck_argv(o, "sync", { files = { "-" } }),
         cat({ "/opt/deck/deck", "sync", "-s", "-" }, G, TAGS, TAIL), "sync")
  end,

  defaults_and_minimal = function()
    same(kong.deck_argv({}, "ping"), { "/usr/local/bin/deck", "gateway", "ping", "--no-color", "--analytics=false" })
    same(kong.deck_argv({ select_tags = "one" }, "sync", { files = "k.yaml" }),
         { "/usr/local/bin/deck", "gateway", "sync", "--select-tag", "one", "--no-color", "--analytics=false", "k.yaml" })
  end,

  header_map_is_sorted = function()
    local argv = kong.deck_argv({ headers = { ["X-B"] = "2", ["Kong-Admin-Token"] = "t" } }, "ping")
    same(argv, { "/usr/local/bin/deck", "gateway", "ping", "--headers", "Kong-Admin-Token:t", "--headers", "X-B:2",
                 "--no-color", "--analytics=false" })
  end,

  extra_flags = function()
    local argv = kong.deck_argv({ flags = { "--timeout", "5" } }, "dump")
    same(argv, { "/usr/local/bin/deck", "gateway", "dump", "-o", "-", "--no-color", "--analytics=false", "--timeout", "5" })
  end,

  misuse_raises = function()
    t.ok(not pcall(kong.deck_argv, OPTS, "reset"), "unknown subcommand")
    t.ok(not pcall(kong.deck_argv, with{ bin = "deck" }, "ping"), "relative bin")
    t.ok(not pcall(kong.deck_argv, with{ headers = { "no-colon" } }, "ping"), "header without colon")
    t.ok(not pcall(kong.deck_argv, with{ headers = { "A:b\nC:d" } }, "ping"), "CR/LF in header")
    t.ok(not pcall(kong.deck_argv, with{ select_tags = { {} } }, "sync", { files = "-" }), "bad tag")
    t.ok(not pcall(kong.deck, { bin = "relative/deck" }), "kong.deck validates at construction")
    t.ok(not pcall(kong.admin, { url = "kong:8001" }), "admin url scheme")
  end,

  deck_object = function()
    local d = kong.deck{ kong_addr = "http://k:8001", env = { A = "1" } }
    t.eq(d.timeout, 60)
    t.eq(d.bin, "/usr/local/bin/deck")
    t.eq(d.env.A, "1")
    -- a missing state source raises before any exec
    local ok, err = pcall(d.diff, d, nil)
    t.ok(not ok and tostring(err):find("state file"), tostring(err))
    ok, err = pcall(d.sync, d, {})
    t.ok(not ok and tostring(err):find("state file"), tostring(err))
  end,

  diff_summary = function()
    local drift = "updating plugin rate-limiting (global)  {\n   \"config\": {\n-    \"minute\": 100\n+    \"minute\": 5\n" ..
                  "   }\n }\n\nSummary:\n  Created: 0\n  Updated: 1\n  Deleted: 0\n"
    t.eq(kong.diff_summary(drift), "updating plugin rate-limiting (global) ...; created 0, updated 1, deleted 0")
    t.eq(kong.diff_summary("Summary:\n  Created: 0\n  Updated: 0\n  Deleted: 0\n"), "created 0, updated 0, deleted 0")
    t.eq(kong.diff_summary("creating service orders\n"), "creating service orders", "no counts: no ...")
    t.eq(kong.diff_summary("  something\n  else  happened \n"), "something else happened", "neither: one line")
    t.eq(kong.diff_summary(nil), "")
    local long = "deleting route " .. string.rep("r", 300) .. "\nSummary:\n  Deleted: 1\n"
    t.eq(kong.diff_summary(long), ("deleting route " .. string.rep("r", 300)):sub(1, 200) .. "... ...; deleted 1",
         "the change is cut at 200 bytes")
    t.eq(#kong.diff_summary(string.rep("x ", 400)), 303, "other output: cut at 300 bytes")
  end,

  admin_object = function()
    local a = kong.admin{ url = "http://kong:8001/", headers = { "Kong-Admin-Token: t" } }
    t.eq(a.url, "http://kong:8001")
    t.eq(a.headers["Kong-Admin-Token"], "t")
    a = kong.admin{ url = "http://kong:8001", headers = { ["Kong-Admin-Token"] = "u" } }
    t.eq(a.headers["Kong-Admin-Token"], "u")
  end,
}

-- recovery.kong: decK (diff, sync, dump, ping) and the Kong Admin API's
-- health endpoints.
--
--   local kong = require "recovery.kong"
--   local token = assert(recovery.secret("kong-admin-token"))
--   local d = kong.deck{ kong_addr = "http://kong-admin.kong.svc:8001",
--                        headers = { "Kong-Admin-Token:" .. token },
--                        select_tags = { "settings" } }
--   local in_sync, out = d:diff({ "/etc/recoveryd/kong/settings.yaml" })
--   if in_sync == false then assert(d:sync({ "/etc/recoveryd/kong/settings.yaml" })) end
--
-- decK >= 1.28 layout (`deck gateway diff|sync|dump|ping`) by default;
-- legacy = true gives the old one (`deck diff -s FILE`). Header values are
-- secrets: they only ever go into argv (which recoveryd redacts when they were
-- read with recovery.secret) and never into log fields or error messages.

local recovery = require "recovery"
local util = require "recovery.util"

local M = {}

local DEFAULT_BIN = "/usr/local/bin/deck"
local SUBCOMMANDS = { ping = true, dump = true, diff = true, sync = true }
-- Options tables refuse other keys (util.check_opts: a permanent error).
local DECK_OPTS = { "bin", "kong_addr", "headers", "select_tags", "timeout", "legacy", "env", "flags" }

local function check_type(v, want, what, level)
  if type(v) ~= want then
    error(string.format("%s: expected a %s, got %s", what, want, type(v)), (level or 2) + 1)
  end
end

-- A list of strings, a single string, or nil -> a list of strings.
local function string_list(v, what)
  if v == nil then return {} end
  if type(v) == "string" then return { v } end
  check_type(v, "table", what, 3)
  local out = {}
  for i, s in ipairs(v) do
    if type(s) ~= "string" and type(s) ~= "number" then
      error(string.format("%s[%d]: expected a string, got %s", what, i, type(s)), 3)
    end
    out[#out + 1] = tostring(s)
  end
  return out
end

-- Headers as "Name:value" strings. Accepts a list of such strings or a map
-- {Name = value} (emitted in name order so argv is deterministic).
local function header_list(h, what)
  if h == nil then return {} end
  check_type(h, "table", what, 3)
  local out = {}
  for i, s in ipairs(h) do
    if type(s) ~= "string" or not s:find(":", 1, true) then
      error(string.format("%s[%d]: expected a \"Name:value\" string", what, i), 3)
    end
    out[#out + 1] = s
  end
  local names = {}
  for k in pairs(h) do
    if type(k) == "string" then names[#names + 1] = k end
  end
  table.sort(names)
  for _, k in ipairs(names) do
    if type(h[k]) ~= "string" then error(string.format("%s.%s: expected a string", what, k), 3) end
    out[#out + 1] = k .. ":" .. h[k]
  end
  for _, s in ipairs(out) do
    if s:find("[\r\n]") then error(what .. ": CR/LF in a header", 3) end
  end
  return out
end

-- What to diff/sync: a file name, a list of file names, or {stdin = text}
-- (decK reads the state from "-"). Returns files, stdin.
local function state_source(v, what)
  if type(v) == "table" and v.stdin ~= nil then
    util.check_opts(v, { "stdin" }, what, 2)
    check_type(v.stdin, "string", what .. ": stdin", 3)
    return { "-" }, v.stdin
  end
  local files = string_list(v, what)
  if #files == 0 then error(what .. ": give a state file, a list of files or {stdin = text}", 3) end
  return files, nil
end

-- kong.deck_argv(opts, sub, args) -> argv list (PURE).
-- opts: bin, kong_addr, headers, select_tags, legacy, flags (extra global
-- flags appended as given), and kong.deck's timeout and env (not used
-- here). sub: "ping", "dump", "diff" or "sync".
-- args.files: state files for diff/sync ("-" = stdin); args.output for dump
-- (default "-").
function M.deck_argv(opts, sub, args)
  check_type(opts, "table", "deck_argv: opts")
  util.check_opts(opts, DECK_OPTS, "deck_argv")
  check_type(sub, "string", "deck_argv: sub")
  if not SUBCOMMANDS[sub] then error("deck_argv: unknown subcommand " .. sub, 2) end
  args = util.check_opts(args, { "files", "output" }, "deck_argv: args")
  local bin = opts.bin or DEFAULT_BIN
  check_type(bin, "string", "deck: bin")
  if bin:sub(1, 1) ~= "/" then error("deck: bin must be an absolute path", 2) end
  local argv = { bin }
  local function add(...)
    for _, a in ipairs({ ... }) do argv[#argv + 1] = a end
  end
  if opts.legacy then add(sub) else add("gateway", sub) end

  local files = string_list(args.files, "deck_argv: files")
  if sub == "dump" then
    add("-o", args.output or "-")
  elseif sub == "diff" then
    add("--non-zero-exit-code")
  end
  if opts.legacy and (sub == "diff" or sub == "sync") then
    for _, f in ipairs(files) do add("-s", f) end
  end

  -- global flags
  if opts.kong_addr ~= nil then
    check_type(opts.kong_addr, "string", "deck: kong_addr")
    add("--kong-addr", opts.kong_addr)
  end
  for _, h in ipairs(header_list(opts.headers, "deck: headers")) do add("--headers", h) end
  -- `ping` has no --select-tag flag (decK would reject it).
  if sub ~= "ping" then
    for _, t in ipairs(string_list(opts.select_tags, "deck: select_tags")) do add("--select-tag", t) end
  end
  add("--no-color", "--analytics=false")
  for _, f in ipairs(string_list(opts.flags, "deck: flags")) do add(f) end

  if not opts.legacy and (sub == "diff" or sub == "sync") then
    for _, f in ipairs(files) do add(f) end
  end
  return argv
end

-- ------------------------------------------------------------------ deck

local Deck = {}
Deck.__index = Deck

-- kong.deck{bin=, kong_addr=, headers=, select_tags=, timeout=60, legacy=false,
--           env=, flags=} -> d
function M.deck(opts)
  opts = opts or {}
  check_type(opts, "table", "kong.deck")
  util.check_opts(opts, DECK_OPTS, "kong.deck")
  if opts.timeout ~= nil then check_type(opts.timeout, "number", "kong.deck: timeout") end
  if opts.env ~= nil then check_type(opts.env, "table", "kong.deck: env") end
  -- validate everything once, so that misuse raises at construction
  M.deck_argv(opts, "sync", { files = { "-" } })
  local d = {}
  for k, v in pairs(opts) do d[k] = v end
  d.bin = opts.bin or DEFAULT_BIN
  d.timeout = opts.timeout or 60
  return setmetatable(d, Deck)
end

local function trim(s)
  return (tostring(s or ""):gsub("^%s+", ""):gsub("%s+$", ""))
end

-- The last non-empty line of stderr (cobra prints "Error: ..."), shortened.
local function stderr_summary(r)
  local text = trim(r.stderr)
  if text == "" then text = trim(r.stdout) end
  if #text > 400 then text = "..." .. text:sub(-400) end
  return text
end

function Deck:_exec(sub, args, stdin, mutates)
  local argv = M.deck_argv(self, sub, args)
  argv.timeout = self.timeout
  argv.env = self.env
  argv.stdin = stdin
  argv.mutates = mutates
  local r, err = recovery.exec(argv)
  if not r then return nil, "deck " .. sub .. ": " .. tostring(err) end
  return r
end

local function failed(sub, r)
  local msg = stderr_summary(r)
  return string.format("deck %s exited %d%s", sub, r.code, msg ~= "" and (": " .. msg) or "")
end

-- d:ping() -> true or nil, err (read-only: runs in dry-run too)
function Deck:ping()
  local r, err = self:_exec("ping", nil, nil, false)
  if not r then return nil, err end
  if r.code ~= 0 then return nil, failed("ping", r) end
  return true, trim(r.stdout)
end

-- d:dump() -> the dumped state (decK's YAML on stdout) or nil, err
function Deck:dump()
  local r, err = self:_exec("dump", { output = "-" }, nil, false)
  if not r then return nil, err end
  if r.code ~= 0 then return nil, failed("dump", r) end
  if r.truncated then return nil, "deck dump: output larger than the exec limit (truncated)" end
  return r.stdout
end

-- d:diff(files_or_stdin) -> in_sync, output; or nil, err
--   exit 0: true (no changes); exit 2: false (drift; output lists it);
--   anything else: nil, err.
function Deck:diff(source)
  local files, stdin = state_source(source, "deck diff")
  local r, err = self:_exec("diff", { files = files }, stdin, false)
  if not r then return nil, err end
  if r.code == 0 then return true, r.stdout end
  if r.code == 2 then return false, r.stdout end
  return nil, failed("diff", r)
end

-- d:sync(files_or_stdin) -> true, output; or nil, err. Mutating: in dry-run
-- it is only planned (true, "" with recovery's planned result).
function Deck:sync(source)
  local files, stdin = state_source(source, "deck sync")
  local r, err = self:_exec("sync", { files = files }, stdin, true)
  if not r then return nil, err end
  if r.code ~= 0 then return nil, failed("sync", r) end
  return true, r.stdout, r.planned == true
end

-- kong.diff_summary(out) -> one line (PURE): the first change and decK's
-- summary counts of a diff or sync output,
-- "updating plugin rate-limiting (global) ...; created 0, updated 1, deleted 0";
-- an output without either: the output on one line, cut to 300 bytes.
function M.diff_summary(out)
  out = tostring(out or "")
  local first
  for line in out:gmatch("[^\n]+") do
    local l = util.trim(line)
    if l:find("^creating ") or l:find("^updating ") or l:find("^deleting ") then
      first = l:gsub("%s*{%s*$", "")
      break
    end
  end
  local counts = {}
  for _, k in ipairs({ "Created", "Updated", "Deleted" }) do
    local n = out:match(k .. ":%s*(%d+)")
    if n then counts[#counts + 1] = k:lower() .. " " .. n end
  end
  local parts = {}
  if first then parts[#parts + 1] = util.short(first, 200) .. (#counts > 0 and " ..." or "") end
  if #counts > 0 then parts[#parts + 1] = table.concat(counts, ", ") end
  if #parts == 0 then return util.short(out:gsub("%s+", " "), 300) end
  return table.concat(parts, "; ")
end

-- ------------------------------------------------------------------ Admin API

local Admin = {}
Admin.__index = Admin

-- Admin API headers: a map {Name = value} or a list of "Name:value".
local function header_map(h)
  if h == nil then return nil end
  check_type(h, "table", "kong.admin: headers", 3)
  local out = {}
  for k, v in pairs(h) do
    if type(k) == "string" then
      out[k] = v
    elseif type(v) == "string" then
      local name, value = v:match("^([^:]+):%s*(.*)$")
      if not name then error("kong.admin: headers: expected \"Name:value\" strings", 3) end
      out[name] = value
    end
  end
  return out
end

-- kong.admin{url=, headers=, timeout=} -> a
function M.admin(opts)
  check_type(opts, "table", "kong.admin")
  util.check_opts(opts, { "url", "headers", "timeout" }, "kong.admin")
  check_type(opts.url, "string", "kong.admin: url")
  if not opts.url:match("^https?://") then error("kong.admin: url must start with http:// or https://", 2) end
  if opts.timeout ~= nil then check_type(opts.timeout, "number", "kong.admin: timeout") end
  return setmetatable({
    url = (opts.url:gsub("/+$", "")),
    headers = header_map(opts.headers),
    timeout = opts.timeout or 10,
  }, Admin)
end

-- Kong's error bodies are {"message": "..."}.
local function error_message(resp)
  local doc = resp:json()
  if type(doc) == "table" and type(doc.message) == "string" then return doc.message end
  local body = trim(resp.body)
  if #body > 200 then body = body:sub(1, 200) .. "..." end
  return body
end

local function http_error(what, resp)
  local msg = error_message(resp)
  return string.format("%s: HTTP %d%s", what, resp.status, msg ~= "" and (": " .. msg) or "")
end

-- a:status() -> decoded GET /status, or nil, err
function Admin:status()
  local resp, err = recovery.http{ url = self.url .. "/status", headers = self.headers, timeout = self.timeout }
  if not resp then return nil, "kong /status: " .. tostring(err) end
  if resp.status ~= 200 then return nil, http_error("kong /status", resp) end
  local doc, jerr = resp:json()
  if type(doc) ~= "table" then return nil, "kong /status: " .. tostring(jerr or "not a JSON object") end
  return doc
end

-- a:healthy() -> true/false, reason: /status answers 200 and the database
-- is not reported unreachable.
function Admin:healthy()
  local st, err = self:status()
  if not st then return false, err end
  local db = st.database
  if type(db) == "table" and db.reachable == false then
    return false, "kong database unreachable"
  end
  return true, "kong /status ok"
end

-- a:ready([status_url]) -> true/false, reason via GET /status/ready on the
-- Status API (status_url, default: the Admin API url). 200 ready, 503 not.
function Admin:ready(status_url)
  local base = self.url
  if status_url ~= nil then
    check_type(status_url, "string", "ready: status_url")
    base = status_url:gsub("/+$", "")
  end
  local resp, err = recovery.http{ url = base .. "/status/ready", headers = self.headers, timeout = self.timeout }
  if not resp then return false, "kong /status/ready: " .. tostring(err) end
  if resp.status == 200 then return true, "ready" end
  if resp.status == 503 then
    local msg = error_message(resp)
    return false, "not ready" .. (msg ~= "" and (": " .. msg) or "")
  end
  return false, http_error("kong /status/ready", resp)
end

return M

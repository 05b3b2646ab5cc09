-- recovery.util: small helpers shared by the playbook helper library.
--
--   local util = require "recovery.util"
--   util.wait_until(fn, {timeout = 60, interval = 2})  -> true, reason | false, "timed out after 60s: <reason>"
--   util.urlencode(s)        percent-encoding of everything but A-Z a-z 0-9 - . _ ~
--   util.query(t)            "a=1&b=x%20y" with sorted keys (a list value repeats its key)
--   util.merge(a, b)         new table: a's fields, then b's (shallow)
--   util.trim(s)             without leading and trailing white space
--   util.short(s[, n])       trimmed, cut to n bytes (default 300) with "..." appended
--   util.opt(v)              nil for nil, false, "" and JSON null ("not set"), else v
--   util.list(v)             opt(v) as a list: {} when not set, {v} for a single value
--   util.secret(S, key)      the secret whose file name is the setting S[key]; nil when
--                            the setting is not set; recovery.fail (no retries) with
--                            "settings: <key>: <why>" when it cannot be read
--   util.dns1123(s)          true when s is a valid Kubernetes name (DNS-1123 label)
--   util.rfc3339(epoch)      "YYYY-MM-DDTHH:MM:SSZ" in UTC (default: now)
--   util.errorf(fmt, ...)    raises string.format(fmt, ...) blaming the caller
--   util.check_opts(opts, allowed, what[, level])
--                            opts (or {} for nil) when every key of it is in the
--                            list allowed; else a permanent error (recovery.fatal:
--                            the job fails without retries) blaming the caller's
--                            caller: what .. ': unknown option "x" (allowed: a, b)'
--
-- Only wait_until (recovery.now and recovery.sleep, so call it from
-- run/verify, not from a coroutine) and secret (recovery.secret) touch the
-- outside world; the rest is pure.
local recovery = require "recovery"

local M = {}

function M.errorf(fmt, ...)
  error(string.format(fmt, ...), 2)
end

-- An options table with a misspelt key ({namespace = ns} for {ns = ns})
-- would silently use the default: another attempt cannot fix that, so it
-- is a permanent error. level 1 (the default) blames the code that called
-- the function calling check_opts.
function M.check_opts(opts, allowed, what, level)
  level = (level or 1) + 2
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    recovery.fatal(string.format("%s: options must be a table, got %s", what, type(opts)), level)
  end
  local known = {}
  for _, k in ipairs(allowed) do known[k] = true end
  for k in next, opts do
    if not known[k] then
      local name = type(k) == "string" and string.format("%q", k)
        or (type(k) == "number" and "[" .. tostring(k) .. "]" or "of type " .. type(k))
      recovery.fatal(string.format("%s: unknown option %s (allowed: %s)", what, name, table.concat(allowed, ", ")),
                     level)
    end
  end
  return opts
end

-- Calls fn() until its first result is truthy or `timeout` seconds have
-- passed, sleeping `interval` seconds in between (never past the deadline).
-- fn returns ok[, reason[, stop]]: a truthy third value ends the wait at once
-- with false, reason (a condition that will never become true).
-- Returns true, reason or false, reason. Errors raised by fn propagate.
function M.wait_until(fn, opts)
  if type(fn) ~= "function" then M.errorf("wait_until: expected a function, got %s", type(fn)) end
  opts = M.check_opts(opts, { "timeout", "interval" }, "wait_until")
  local timeout = opts.timeout or 60
  local interval = opts.interval or 2
  if type(timeout) ~= "number" or timeout < 0 then M.errorf("wait_until: timeout must be a number >= 0") end
  if type(interval) ~= "number" or interval < 0 then M.errorf("wait_until: interval must be a number >= 0") end
  local deadline = recovery.now() + timeout
  local reason
  while true do
    local ok, r, stop = fn()
    reason = r
    if ok then return true, reason end
    if stop then return false, reason end
    local left = deadline - recovery.now()
    if left <= 0 then break end
    recovery.sleep(math.min(interval, left))
  end
  return false, string.format("timed out after %gs: %s", timeout, tostring(reason or "condition not met"))
end

function M.urlencode(s)
  return (tostring(s):gsub("[^A-Za-z0-9%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- t: name -> string | number | boolean | list of those. nil values are skipped.
function M.query(t)
  local keys, parts = {}, {}
  for k in pairs(t or {}) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = t[k]
    local list = type(v) == "table" and v or { v }
    for _, x in ipairs(list) do
      parts[#parts + 1] = M.urlencode(k) .. "=" .. M.urlencode(tostring(x))
    end
  end
  return table.concat(parts, "&")
end

function M.merge(a, b)
  local out = {}
  for k, v in pairs(a or {}) do out[k] = v end
  for k, v in pairs(b or {}) do out[k] = v end
  return out
end

function M.trim(s)
  return (tostring(s):gsub("^%s+", ""):gsub("%s+$", ""))
end

-- For messages and log fields: a long output must not flood the job record.
function M.short(s, n)
  s = M.trim(tostring(s or ""))
  n = n or 300
  if #s > n then return s:sub(1, n) .. "..." end
  return s
end

-- Settings switch an optional value off with false; a config file may also
-- give "" or a JSON null. All of them mean "not set".
function M.opt(v)
  if v == nil or v == false or v == "" or v == recovery.json.null then return nil end
  return v
end

function M.list(v)
  v = M.opt(v)
  if v == nil then return {} end
  if type(v) ~= "table" then return { v } end
  return v
end

-- A secret named by a setting that cannot be read is a configuration error
-- another attempt will not fix: the job fails at once.
function M.secret(S, key)
  local name = M.opt(S[key])
  if not name then return nil end
  local v, err = recovery.secret(name)
  if not v then recovery.fail(string.format("settings: %s: %s", key, tostring(err))) end
  return v
end

-- A DNS-1123 label: 1 to 63 characters of [a-z0-9-], alphanumeric at both ends.
function M.dns1123(s)
  return type(s) == "string" and #s >= 1 and #s <= 63
    and s:find("^[a-z0-9]") ~= nil and s:find("[a-z0-9]$") ~= nil
    and s:find("^[a-z0-9%-]+$") ~= nil
end

function M.rfc3339(epoch)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(epoch or os.time()))
end

return M

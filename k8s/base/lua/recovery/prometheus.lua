-- recovery.prometheus: instant queries against the Prometheus HTTP API, and
-- re-evaluation of the expression an alert came from (its generatorURL).
--
--   local prometheus = require "recovery.prometheus"
--   local c = prometheus.client{ url = "http://prometheus.monitoring.svc:9090" }
--   local v, err = c:value('sum(up{job="settings-sync"})')
--
--   verify = function(ctx)
--     return prometheus.alert_cleared(ctx, { url = "http://prometheus.monitoring.svc:9090", wait = 60 })
--   end
--
-- Conventions follow `recovery`: expected failures return nil, err; misuse
-- (wrong argument types) raises; a key an options table does not know is a
-- permanent error (util.check_opts: the job fails without retries).

local recovery = require "recovery"
local util = require "recovery.util"

local M = {}

-- ------------------------------------------------------------------ helpers

local function check_type(v, want, what, level)
  if type(v) ~= want then
    error(string.format("%s: expected a %s, got %s", what, want, type(v)), (level or 2) + 1)
  end
end

-- Percent-encode everything but RFC 3986 unreserved characters.
function M.urlencode(s)
  return (tostring(s):gsub("[^%w%-_%.~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- Decode a query-string component: '+' is a space, %XX a byte. A malformed
-- escape is kept as it is.
function M.urldecode(s)
  s = s:gsub("%+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- Prometheus sends sample values as strings: "1", "0.5", "NaN", "+Inf", "-Inf".
local function sample_number(s)
  if type(s) == "number" then return s end
  if type(s) ~= "string" then return nil end
  if s == "NaN" then return 0 / 0 end
  if s == "+Inf" or s == "Inf" then return math.huge end
  if s == "-Inf" then return -math.huge end
  return tonumber(s)
end

local function is_null(v) return v == nil or v == recovery.json.null end

local function labels_of(m)
  local out = {}
  if type(m) == "table" then
    for k, v in pairs(m) do
      if type(k) == "string" and type(v) == "string" then out[k] = v end
    end
  end
  return out
end

-- {a="1", b="2"} -> '{a="1", b="2"}' (sorted; for messages)
function M.format_labels(metric)
  local keys = {}
  for k in pairs(metric or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    if k == "__name__" then
      -- printed in front
    else
      local v = metric[k]:gsub('[\\"]', "\\%0"):gsub("\n", "\\n")
      parts[#parts + 1] = k .. '="' .. v .. '"'
    end
  end
  return (metric and metric.__name__ or "") .. "{" .. table.concat(parts, ", ") .. "}"
end

local function format_value(v)
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if math.type(v) == "float" and v == math.floor(v) and math.abs(v) < 2^53 then
    return string.format("%d", v)
  end
  return tostring(v)
end

local function short(s, n)
  s = tostring(s or "")
  n = n or 200
  if #s > n then return s:sub(1, n) .. "..." end
  return s
end

-- Turn the API envelope's `data` into {type=, samples={...}}.
--   vector: samples = { {metric={...}, value=n, ts=t}, ... }
--   scalar: samples = { {metric={}, value=n, ts=t} }
--   string: samples = { {metric={}, value=<the string>, ts=t} }
--   matrix: samples = { {metric={...}, value=<last>, ts=<last>, values={{ts=, value=}, ...}}, ... }
function M.parse_data(data)
  if type(data) ~= "table" then return nil, "response has no data object" end
  local rtype = data.resultType
  local res = data.result
  if type(rtype) ~= "string" then return nil, "response has no resultType" end
  local out = { type = rtype, samples = {} }
  if rtype == "vector" or rtype == "matrix" then
    if is_null(res) then return out end  -- some versions send null for "empty"
    if type(res) ~= "table" then return nil, "result of a " .. rtype .. " is not a list" end
    for i, s in ipairs(res) do
      if type(s) ~= "table" then return nil, "result entry " .. i .. " is not an object" end
      local sample = { metric = labels_of(s.metric) }
      if rtype == "vector" then
        local pair = s.value
        if type(pair) ~= "table" then return nil, "vector entry " .. i .. " has no value" end
        sample.ts = sample_number(pair[1])
        sample.value = sample_number(pair[2])
        if sample.value == nil then return nil, "vector entry " .. i .. " has a bad value" end
      else
        sample.values = {}
        for _, pair in ipairs(type(s.values) == "table" and s.values or {}) do
          local v = sample_number(pair[2])
          if v == nil then return nil, "matrix entry " .. i .. " has a bad value" end
          sample.values[#sample.values + 1] = { ts = sample_number(pair[1]), value = v }
        end
        local last = sample.values[#sample.values]
        if last then sample.ts, sample.value = last.ts, last.value end
      end
      out.samples[#out.samples + 1] = sample
    end
    return out
  elseif rtype == "scalar" or rtype == "string" then
    if type(res) ~= "table" then return nil, "result of a " .. rtype .. " is not a pair" end
    local v = res[2]
    if rtype == "scalar" then
      v = sample_number(v)
      if v == nil then return nil, "scalar has a bad value" end
    elseif type(v) ~= "string" then
      return nil, "string result has no string"
    end
    out.samples[1] = { metric = {}, ts = sample_number(res[1]), value = v }
    return out
  end
  return nil, "unknown resultType " .. rtype
end

-- Parse a Prometheus API response (status code + body text).
-- Returns the `data` object or nil, err; errors carry the errorType:
-- "bad_data: 1:6: parse error: ..." (HTTP 400).
function M.parse_envelope(status, body)
  local doc = recovery.json.decode(body or "")
  if type(doc) ~= "table" or type(doc.status) ~= "string" then
    return nil, string.format("HTTP %s from Prometheus, not an API response: %s", tostring(status), short(body, 120))
  end
  if doc.status ~= "success" then
    local etype = type(doc.errorType) == "string" and doc.errorType or "error"
    local emsg = type(doc.error) == "string" and doc.error or "unknown error"
    return nil, etype .. ": " .. emsg
  end
  if status ~= 200 then
    return nil, string.format("HTTP %s from Prometheus", tostring(status))
  end
  return doc.data, nil, doc.warnings
end

-- ------------------------------------------------------------------ client

local Client = {}
Client.__index = Client

-- prometheus.client{url=, headers=, timeout=10}
function M.client(opts)
  check_type(opts, "table", "prometheus.client")
  util.check_opts(opts, { "url", "headers", "timeout" }, "prometheus.client")
  check_type(opts.url, "string", "prometheus.client: url")
  if not opts.url:match("^https?://") then
    error("prometheus.client: url must start with http:// or https://", 2)
  end
  if opts.headers ~= nil then check_type(opts.headers, "table", "prometheus.client: headers") end
  if opts.timeout ~= nil then check_type(opts.timeout, "number", "prometheus.client: timeout") end
  return setmetatable({
    url = (opts.url:gsub("/+$", "")),
    headers = opts.headers,
    timeout = opts.timeout or 10,
  }, Client)
end

-- c:query(expr, {time=, timeout=}) -> {type=, samples=}, or nil, err.
-- An instant query (GET /api/v1/query); GET also runs in dry-run.
local QUERY_OPTS = { "time", "timeout" }

function Client:query(expr, opts)
  check_type(expr, "string", "query: expr")
  opts = util.check_opts(opts, QUERY_OPTS, "query")
  local q = "query=" .. M.urlencode(expr)
  if opts.time ~= nil then q = q .. "&time=" .. M.urlencode(opts.time) end
  if opts.timeout ~= nil then q = q .. "&timeout=" .. M.urlencode(opts.timeout) end
  local resp, err = recovery.http{
    method = "GET",
    url = self.url .. "/api/v1/query?" .. q,
    headers = self.headers,
    timeout = self.timeout,
  }
  if not resp then return nil, "prometheus query: " .. tostring(err) end
  local data, perr = M.parse_envelope(resp.status, resp.body)
  if not data then return nil, "prometheus query: " .. perr end
  local result, derr = M.parse_data(data)
  if not result then return nil, "prometheus query: " .. derr end
  return result
end

-- c:value(expr) -> the first sample's value (a number, or a string for a
-- string result), or nil, err ("no data" when the result is empty).
function Client:value(expr, opts)
  util.check_opts(opts, QUERY_OPTS, "value")
  local r, err = self:query(expr, opts)
  if not r then return nil, err end
  local s = r.samples[1]
  if not s or s.value == nil then return nil, "no data" end
  return s.value, s
end

-- c:holds(expr) -> true/false, samples: does the expression return a
-- non-empty instant vector (which is how an alerting rule fires)?
-- nil, err on a query error or a result that is not a vector.
function Client:holds(expr, opts)
  util.check_opts(opts, QUERY_OPTS, "holds")
  local r, err = self:query(expr, opts)
  if not r then return nil, err end
  if r.type ~= "vector" then
    return nil, "expression returns a " .. r.type .. ", not an instant vector"
  end
  return #r.samples > 0, r.samples
end

-- ------------------------------------------------------------------ generatorURL

-- prometheus.parse_generator_url(url) -> {base=, expr=, path=}, or nil, err.
-- http://host:9090/graph?g0.expr=up%3D%3D0&g0.tab=1 -> base http://host:9090
-- http://host/prometheus/graph?g0.expr=... -> base http://host/prometheus
function M.parse_generator_url(url)
  if type(url) ~= "string" or url == "" then return nil, "no generatorURL" end
  local scheme, rest = url:match("^(https?)://(.*)$")
  if not scheme then return nil, "generatorURL is not an http(s) URL: " .. short(url, 120) end
  rest = rest:gsub("#.*$", "")
  local authority, path, query = rest:match("^([^/?]*)([^?]*)%??(.*)$")
  if not authority or authority == "" then return nil, "generatorURL has no host: " .. short(url, 120) end
  -- The UI page is the last path segment (normally /graph); the base is what
  -- comes before it.
  local prefix = path:gsub("/+$", "")
  prefix = prefix:gsub("/[^/]*$", "")
  local base = scheme .. "://" .. authority .. prefix
  -- The & may have arrived raw, HTML-escaped, or as a literal \u0026.
  query = query:gsub("\\u0026", "&"):gsub("&amp;", "&")
  local expr
  for pair in query:gmatch("[^&;]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    if M.urldecode(k) == "g0.expr" then
      expr = M.urldecode(v)
      break
    end
  end
  if not expr then return nil, "generatorURL has no g0.expr parameter: " .. short(url, 120) end
  if expr:match("^%s*$") then return nil, "generatorURL has an empty g0.expr" end
  return { base = base, expr = expr, path = path }
end

-- ------------------------------------------------------------------ alert helpers

local function describe(samples, limit)
  limit = limit or 3
  local parts = {}
  for i, s in ipairs(samples) do
    if i > limit then
      parts[#parts + 1] = string.format("... (%d more)", #samples - limit)
      break
    end
    parts[#parts + 1] = M.format_labels(s.metric) .. " = " .. format_value(s.value)
  end
  return table.concat(parts, "; ")
end

local function alert_client(ctx, opts)
  check_type(ctx, "table", "alert_holds: ctx")
  opts = opts or {}
  check_type(opts, "table", "alert_holds: opts")
  local alert = ctx.alert or {}
  local g, err = M.parse_generator_url(alert.generatorURL)
  if not g then return nil, err end
  local c = M.client{ url = opts.url or g.base, headers = opts.headers, timeout = opts.timeout }
  return c, g.expr
end

-- prometheus.alert_holds(ctx, {url=, headers=, timeout=}) -> holds, detail, samples
-- Re-evaluates the alert's own expression (from ctx.alert.generatorURL).
-- opts.url replaces the base taken from the generatorURL (for instance the
-- in-cluster service name). holds is true while the condition still holds,
-- false once the expression returns nothing, nil (with the error as detail)
-- when it cannot be evaluated.
function M.alert_holds(ctx, opts)
  util.check_opts(opts, { "url", "headers", "timeout" }, "alert_holds")
  local c, expr = alert_client(ctx, opts)
  if not c then return nil, expr end
  local holds, samples = c:holds(expr)
  if holds == nil then return nil, samples end
  if holds then
    return true, string.format("%s still returns %d series: %s", expr, #samples, describe(samples)), samples
  end
  return false, expr .. " returns no data", samples
end

-- prometheus.alert_cleared(ctx, {url=, headers=, timeout=, wait=0, interval=5})
--   -> ok, reason
-- A ready-made verify: true once the alert's expression no longer holds.
-- With wait > 0 it polls until then (Prometheus needs a scrape or two to
-- see a repair). An evaluation error counts as not cleared.
function M.alert_cleared(ctx, opts)
  opts = util.check_opts(opts, { "url", "headers", "timeout", "wait", "interval" }, "alert_cleared")
  local wait = opts.wait or 0
  local interval = opts.interval or 5
  check_type(wait, "number", "alert_cleared: wait")
  check_type(interval, "number", "alert_cleared: interval")
  if interval <= 0 then error("alert_cleared: interval must be > 0", 2) end
  local deadline = recovery.now() + wait
  local holds, detail
  local hopts = { url = opts.url, headers = opts.headers, timeout = opts.timeout }
  for _ = 1, 100000 do
    holds, detail = M.alert_holds(ctx, hopts)
    if holds == false then return true, "alert condition cleared: " .. detail end
    local left = deadline - recovery.now()
    if left <= 0 then break end
    recovery.sleep(math.min(interval, left))
  end
  if holds == nil then return false, "cannot evaluate the alert condition: " .. tostring(detail) end
  return false, "alert condition still holds: " .. detail
end

return M

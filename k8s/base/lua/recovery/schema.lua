-- recovery.schema: a client for a schema registry with the Confluent-compatible
-- REST API (Confluent Schema Registry, Apicurio's ccompat API, Karapace,
-- Redpanda), plus the pieces the schema-rollback playbook needs: subject
-- resolution, version choice, registration times and a tiny Prometheus query.
--
--   local schema = require "recovery.schema"
--   local r = schema.registry{ url = "http://schema-registry:8081", headers = {...}, timeout = 10 }
--   local latest, err = r:latest("orders-value")
--
-- Convention (as for `recovery`): expected failures return nil, err; misuse
-- raises; a key an options table does not know is a permanent error
-- (util.check_opts: the job fails without retries). Registry errors are tables {status, code, message, method, path}
-- with a __tostring, so tostring(err) gives a readable line.
--
-- Functions that only compute (subject_for, previous_version, parse_time,
-- urlencode, ...) do no I/O and are unit-tested with the stock interpreter.

local recovery = require "recovery"
local util = require "recovery.util"

local M = {}

M.CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
M.ACCEPT = "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json"
M.SUBJECT_MAX = 255 -- longest subject name accepted (see valid_subject)
M.TOPIC_MAX = 249   -- Kafka's topic name limit

---------------------------------------------------------------- errors

local Err = {}
Err.__index = Err
Err.__tostring = function(e)
  local parts = {}
  if e.method and e.path then parts[#parts + 1] = e.method .. " " .. e.path end
  if e.status then
    local st = "HTTP " .. tostring(e.status)
    if e.code and e.code ~= e.status then st = st .. " error " .. tostring(e.code) end
    parts[#parts + 1] = st
  end
  if e.message and e.message ~= "" then parts[#parts + 1] = e.message end
  if #parts == 0 then return "schema registry error" end
  return table.concat(parts, ": ")
end

-- An error value: {status=, code=, message=, method=, path=} with __tostring.
function M.error(fields)
  return setmetatable(fields or {}, Err)
end

function M.is_error(v)
  return getmetatable(v) == Err
end

local function toint(v)
  if type(v) == "number" then return math.tointeger(v) end
  return nil
end

local function is_null(v)
  return v == nil or v == recovery.json.null
end

local function decode(text)
  if type(text) ~= "string" or text == "" then return nil end
  local ok, v = pcall(recovery.json.decode, text)
  if ok then return v end
  return nil
end

-- Map a non-2xx answer to an error value. Registry bodies look like
-- {"error_code":40401,"message":"Subject 'x' not found."}; anything else keeps
-- the HTTP status as the code and (a prefix of) the body as the message.
function M.map_error(status, body, method, path)
  local doc = decode(body)
  local code, msg = status, nil
  if type(doc) == "table" then
    if type(doc.error_code) == "number" then code = toint(doc.error_code) or doc.error_code end
    if type(doc.message) == "string" then msg = doc.message end
    -- Apicurio's native API: {"error_code":..,"message":..} too, or RFC 7807 {"title","detail"}
    if not msg and type(doc.detail) == "string" then msg = doc.detail end
    if not msg and type(doc.title) == "string" then msg = doc.title end
  end
  if not msg then
    msg = type(body) == "string" and body:sub(1, 200):gsub("%s+$", "") or ""
  end
  return M.error{ status = status, code = code, message = msg, method = method, path = path }
end

---------------------------------------------------------------- pure helpers

-- Percent-encode everything but the RFC 3986 unreserved characters, so a
-- subject is exactly one path segment.
function M.urlencode(s)
  return (tostring(s):gsub("[^A-Za-z0-9%-%._~]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

function M.urldecode(s)
  s = s:gsub("%+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- Subjects this module accepts from an alert: 1..255 characters of
-- [A-Za-z0-9._-]. That covers TopicNameStrategy (<topic>-value / -key, Kafka
-- topics use the same characters), RecordNameStrategy (com.example.Order) and
-- TopicRecordNameStrategy. Registry contexts (":.ctx:subject") and other
-- exotic names are refused on purpose: the name comes from an alert label.
function M.valid_subject(s)
  if type(s) ~= "string" then return false, "subject: expected a string, got " .. type(s) end
  if #s < 1 or #s > M.SUBJECT_MAX then
    return false, string.format("subject: must be 1-%d characters, got %d", M.SUBJECT_MAX, #s)
  end
  if not s:match("^[A-Za-z0-9._%-]+$") then
    return false, "subject: '" .. s .. "' must contain only [A-Za-z0-9._-]"
  end
  return true
end

function M.valid_topic(s)
  if type(s) ~= "string" or #s < 1 or #s > M.TOPIC_MAX or not s:match("^[A-Za-z0-9._%-]+$")
      or s == "." or s == ".." then
    return false, "topic: '" .. tostring(s) .. "' is not a valid Kafka topic name (1-249 of [A-Za-z0-9._-])"
  end
  return true
end

-- Which subject an alert is about. opts:
--   subject_label    label holding a subject name           (default "subject")
--   topic_label      label holding a Kafka topic            (default "topic")
--   subject_suffix   appended to the topic (TopicNameStrategy, default "-value")
--   event_type_label label holding an event type           (default "event_type")
--   event_types      map event type -> subject, or -> {topic = ...}
--   default_subject  used when no label resolves (default none)
--   allowed_subjects optional list; the subject must be one of them
-- Returns subject, how (a short text) or nil, err.
function M.subject_for(labels, opts)
  opts = util.check_opts(opts, { "subject_label", "topic_label", "subject_suffix", "event_type_label", "event_types",
                                 "default_subject", "allowed_subjects" }, "subject_for")
  labels = labels or {}
  local subject, how
  local sl = opts.subject_label or "subject"
  local tl = opts.topic_label or "topic"
  local el = opts.event_type_label or "event_type"
  local suffix = opts.subject_suffix or "-value"
  if labels[sl] ~= nil and labels[sl] ~= "" then
    subject, how = labels[sl], "label " .. sl
  elseif labels[tl] ~= nil and labels[tl] ~= "" then
    local ok, err = M.valid_topic(labels[tl])
    if not ok then return nil, err end
    subject, how = labels[tl] .. suffix, "label " .. tl .. " + '" .. suffix .. "'"
  elseif labels[el] ~= nil and labels[el] ~= "" then
    local m = opts.event_types and opts.event_types[labels[el]]
    if type(m) == "string" then
      subject, how = m, "event_types[" .. labels[el] .. "]"
    elseif type(m) == "table" and type(m.topic) == "string" then
      subject, how = m.topic .. (m.suffix or suffix), "event_types[" .. labels[el] .. "].topic"
    else
      return nil, "no subject is configured for " .. el .. " '" .. tostring(labels[el]) ..
        "' (settings.event_types)"
    end
  elseif opts.default_subject then
    subject, how = opts.default_subject, "default_subject"
  else
    return nil, "cannot tell which subject to roll back: the alert has no '" .. sl .. "', '" .. tl ..
      "' or '" .. el .. "' label and no default_subject is set"
  end
  local ok, err = M.valid_subject(subject)
  if not ok then return nil, err end
  if opts.allowed_subjects then
    local found = false
    for _, s in ipairs(opts.allowed_subjects) do
      if s == subject then found = true break end
    end
    if not found then return nil, "subject '" .. subject .. "' is not in allowed_subjects" end
  end
  return subject, how
end

-- The version to roll back to: the highest version below `latest` in the
-- list (the registry lists live versions only, so soft-deleted ones are
-- skipped). Returns the version number or nil, err.
function M.previous_version(versions, latest)
  if type(versions) ~= "table" then return nil, "versions: expected a list" end
  local best
  for _, v in ipairs(versions) do
    if type(v) == "number" and v < latest and (best == nil or v > best) then best = v end
  end
  if not best then
    return nil, string.format("version %s is the only version: there is nothing to roll back to", tostring(latest))
  end
  return best
end

-- Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = (153 * mp + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

-- A registration time as seconds since the epoch. Accepts numbers (seconds,
-- or milliseconds when larger than 1e11), numeric strings, and ISO 8601 /
-- RFC 3339 date-times such as 2023-10-11T14:15:28Z, 2023-10-11T14:15:28.123+0000
-- or 2023-10-11 14:15:28+02:00. A time without a zone is UTC.
function M.parse_time(v)
  if type(v) == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return nil, "not a finite number" end
    if v > 1e11 then return v / 1000 end
    return v
  end
  if type(v) ~= "string" then return nil, "expected a time, got " .. type(v) end
  local n = tonumber(v)
  if n then return M.parse_time(n) end
  local y, mo, d, h, mi, s, rest = v:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(.*)$")
  if not y then return nil, "'" .. v .. "' is not an ISO 8601 date-time" end
  y, mo, d, h, mi, s = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(s)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or s > 60 then
    return nil, "'" .. v .. "' is out of range"
  end
  local frac = 0
  local f, after = rest:match("^%.(%d+)(.*)$")
  if f then frac = tonumber("0." .. f); rest = after end
  local off = 0
  if rest == "" or rest == "Z" or rest == "z" then
    off = 0
  else
    local sign, oh, om = rest:match("^([+-])(%d%d):?(%d%d)$")
    if not sign then return nil, "'" .. v .. "' has an unknown time zone '" .. rest .. "'" end
    off = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == "-" and -1 or 1)
  end
  return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s + frac - off
end

-- "3d 2h", "5m 3s", "42s": for messages.
function M.human_duration(sec)
  sec = math.floor(math.abs(sec) + 0.5)
  local d, h, m, s = sec // 86400, sec % 86400 // 3600, sec % 3600 // 60, sec % 60
  if d > 0 then return string.format("%dd %dh", d, h) end
  if h > 0 then return string.format("%dh %dm", h, m) end
  if m > 0 then return string.format("%dm %ds", m, s) end
  return string.format("%ds", s)
end

-- Fill {subject} and {version} in a template. esc(value) escapes each value
-- (PromQL string literal or URL segment).
function M.fill(template, values, esc)
  return (template:gsub("{([%w_]+)}", function(k)
    local v = values[k]
    if v == nil then return nil end -- keep unknown placeholders as they are
    v = tostring(v)
    return esc and esc(v) or v
  end))
end

-- Escape for the inside of a PromQL double-quoted string.
function M.promql_escape(s)
  return (s:gsub("\\", "\\\\"):gsub('"', '\\"'):gsub("\n", "\\n"))
end

-- The PromQL expression of a Prometheus generatorURL (...graph?g0.expr=...), or nil.
function M.expr_from_generator_url(url)
  if type(url) ~= "string" or url == "" then return nil end
  local q = url:match("%?(.*)$")
  if not q then return nil end
  q = q:gsub("#.*$", "")
  for pair in q:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=(.*)$")
    if k and M.urldecode(k) == "g0.expr" then
      local e = M.urldecode(v)
      if e ~= "" then return e end
    end
  end
  return nil
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

function M.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1, c2, c3, c4 = n >> 18, (n >> 12) & 63, (n >> 6) & 63, n & 63
    out[#out + 1] = B64:sub(c1 + 1, c1 + 1) .. B64:sub(c2 + 1, c2 + 1) ..
      (b and B64:sub(c3 + 1, c3 + 1) or "=") .. (c and B64:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end

-- "Basic ..." header value for a registry API key / secret (Confluent Cloud) or user / password.
function M.basic_auth(user, password)
  return "Basic " .. M.base64(user .. ":" .. password)
end

-- Normalise a version record from GET /subjects/{s}/versions/{v}.
function M.normalize_version(doc, subject)
  if type(doc) ~= "table" or type(doc.schema) ~= "string" or not toint(doc.version) or not toint(doc.id) then
    return nil
  end
  local refs = {}
  if type(doc.references) == "table" then
    for _, r in ipairs(doc.references) do refs[#refs + 1] = r end
  end
  return {
    subject = type(doc.subject) == "string" and doc.subject or subject,
    version = toint(doc.version),
    id = toint(doc.id),
    schema = doc.schema,
    schemaType = (not is_null(doc.schemaType) and doc.schemaType ~= "") and doc.schemaType or "AVRO",
    references = refs,
  }
end

-- The request body that registers / checks a schema object. AVRO is the
-- registry's default and is left out (registries older than 5.5 do not know
-- schemaType); empty references are left out (an empty Lua table would be
-- encoded as {} instead of []).
function M.schema_body(obj)
  if type(obj) == "string" then obj = { schema = obj } end
  if type(obj) ~= "table" or type(obj.schema) ~= "string" then
    error("schema object: expected {schema = <string>, schemaType = ..., references = ...}", 3)
  end
  local b = { schema = obj.schema }
  if obj.schemaType and obj.schemaType ~= "AVRO" then b.schemaType = obj.schemaType end
  if type(obj.references) == "table" and #obj.references > 0 then b.references = obj.references end
  return b
end

---------------------------------------------------------------- the client

local R = {}
R.__index = R

-- schema.registry{url=, headers=, timeout=10, dry_run=recovery.dry_run}
function M.registry(opts)
  if type(opts) ~= "table" then error("schema.registry: expected a table {url = ...}", 2) end
  util.check_opts(opts, { "url", "headers", "timeout", "dry_run" }, "schema.registry")
  if type(opts.url) ~= "string" or not opts.url:match("^https?://") then
    error("schema.registry: url must start with http:// or https://", 2)
  end
  if opts.headers ~= nil and type(opts.headers) ~= "table" then
    error("schema.registry: headers must be a table", 2)
  end
  local dry = opts.dry_run
  if dry == nil then dry = recovery.dry_run end
  return setmetatable({
    url = opts.url:gsub("/+$", ""),
    headers = opts.headers or {},
    timeout = opts.timeout or 10,
    dry_run = dry and true or false,
  }, R)
end

-- One request. Returns the decoded JSON body (or true for an empty 2xx
-- body), or nil, err. A dry-run write returns true, resp (resp.planned).
function R:request(method, path, body, readonly)
  local headers = { Accept = M.ACCEPT }
  for k, v in pairs(self.headers) do headers[k] = v end
  local req = { method = method, url = self.url .. path, headers = headers, timeout = self.timeout }
  if readonly then req.mutates = false end
  if body ~= nil then
    headers["Content-Type"] = M.CONTENT_TYPE
    req.json = body
  end
  local resp, err = recovery.http(req)
  if not resp then
    return nil, M.error{ message = tostring(err), method = method, path = path }
  end
  if resp.planned then return true, resp end
  if resp.status < 200 or resp.status > 299 then
    return nil, M.map_error(resp.status, resp.body, method, path)
  end
  if resp.body == nil or resp.body:match("^%s*$") then return true, resp end
  local doc, jerr = resp:json()
  if doc == nil then
    return nil, M.error{ status = resp.status, message = "invalid JSON in the answer: " .. tostring(jerr),
                         method = method, path = path }
  end
  return doc, resp
end

local function subject_path(subject)
  return "/subjects/" .. M.urlencode(subject)
end

local function version_ref(v)
  if v == nil or v == "latest" then return "latest" end
  if math.type(v) == "integer" or (type(v) == "number" and v == math.floor(v)) then
    return string.format("%d", v)
  end
  if type(v) == "string" and v:match("^%-?%d+$") then return v end
  error("schema: version must be an integer or \"latest\", got " .. tostring(v), 3)
end

function R:subjects()
  local doc, err = self:request("GET", "/subjects")
  if not doc then return nil, err end
  if type(doc) ~= "table" then return nil, M.error{ message = "GET /subjects: expected a list" } end
  return doc
end

-- Version numbers of a subject, ascending. opts.deleted = true also lists
-- soft-deleted versions (Confluent's ?deleted=true; registries that do not
-- know the parameter ignore it and list the live versions).
function R:versions(subject, opts)
  opts = util.check_opts(opts, { "deleted" }, "versions")
  local path = subject_path(subject) .. "/versions"
  if opts.deleted then path = path .. "?deleted=true" end
  local doc, err = self:request("GET", path)
  if not doc then return nil, err end
  if type(doc) ~= "table" then return nil, M.error{ message = "GET " .. path .. ": expected a list", path = path } end
  local out = {}
  for _, v in ipairs(doc) do
    local n = toint(v)
    if n then out[#out + 1] = n end
  end
  table.sort(out)
  return out
end

function R:get(subject, version)
  local path = subject_path(subject) .. "/versions/" .. version_ref(version)
  local doc, err = self:request("GET", path)
  if not doc then return nil, err end
  local rec = M.normalize_version(doc, subject)
  if not rec then
    return nil, M.error{ message = "GET " .. path .. ": no schema, version or id in the answer", path = path }
  end
  return rec
end

function R:latest(subject)
  return self:get(subject, "latest")
end

-- Is schema_obj compatible with version (default "latest") of subject under
-- the subject's compatibility level? Returns true/false, messages (a list,
-- possibly empty) or nil, err. The POST only reads, so it also runs in
-- dry-run (mutates = false).
function R:compatible(subject, schema_obj, version)
  local path = "/compatibility" .. subject_path(subject) .. "/versions/" .. version_ref(version) .. "?verbose=true"
  local doc, info = self:request("POST", path, M.schema_body(schema_obj), true)
  if not doc then return nil, info end
  if type(info) == "table" and info.planned then return true, { planned = true } end
  if type(doc) ~= "table" or type(doc.is_compatible) ~= "boolean" then
    return nil, M.error{ message = "POST " .. path .. ": no is_compatible in the answer", path = path }
  end
  local msgs = {}
  if type(doc.messages) == "table" then
    for _, m in ipairs(doc.messages) do msgs[#msgs + 1] = tostring(m) end
  end
  return doc.is_compatible, msgs
end

-- Register schema_obj under subject. Returns the schema id (and the decoded
-- answer), or nil, err. Registering a schema that is already registered
-- under the subject returns its existing id and creates no new version
-- (Confluent semantics, shared by Karapace, Redpanda and Apicurio's ccompat
-- API), so the call is idempotent. In dry-run the POST is only planned and
-- the call returns "planned", {planned = true}.
function R:register(subject, schema_obj)
  local path = subject_path(subject) .. "/versions"
  local doc, info = self:request("POST", path, M.schema_body(schema_obj))
  if not doc then return nil, info end
  if type(info) == "table" and info.planned then return "planned", { planned = true } end
  if type(doc) ~= "table" or toint(doc.id) == nil then
    return nil, M.error{ message = "POST " .. path .. ": no id in the answer", path = path }
  end
  return toint(doc.id), doc
end

-- Soft-delete one version (DELETE /subjects/{s}/versions/{v}). The schema id
-- stays readable (GET /schemas/ids/{id}), so data written with it still
-- decodes. Returns the deleted version number, or nil, err; in dry-run
-- "planned", {planned = true}.
function R:delete_version(subject, version)
  local path = subject_path(subject) .. "/versions/" .. version_ref(version)
  local doc, info = self:request("DELETE", path)
  if not doc then return nil, info end
  if type(info) == "table" and info.planned then return "planned", { planned = true } end
  return toint(doc) or version
end

-- (subject, version) pairs that use schema id (GET /schemas/ids/{id}/versions).
function R:id_versions(id)
  local path = string.format("/schemas/ids/%d/versions", id)
  local doc, err = self:request("GET", path)
  if not doc then return nil, err end
  if type(doc) ~= "table" then return nil, M.error{ message = "GET " .. path .. ": expected a list", path = path } end
  local out = {}
  for _, p in ipairs(doc) do
    if type(p) == "table" and type(p.subject) == "string" and toint(p.version) then
      out[#out + 1] = { subject = p.subject, version = toint(p.version) }
    end
  end
  return out
end

-- Roll subject back to the schema of the version before the latest.
--
-- 1. latest L and previous P (opts.latest / opts.previous may pass the
--    records the caller already read);
-- 2. compatibility of P's schema against L (incompatible: nil, err and
--    nothing is changed);
-- 3. register P's schema again. A registry that appends a version for it
--    makes P's schema the latest: done (method "registered"). Confluent-
--    compatible registries instead return P's existing id and keep L as the
--    latest; then
-- 4. with opts.on_existing = "soft_delete" (the default), soft-delete version
--    L so that P is the latest again (method "soft_deleted"); with "fail",
--    return nil, err.
--
-- Returns {from = L.version, to_schema_of = P.version, id = <schema id now
-- latest>, version = <latest version now>, method = ...} or nil, err. In
-- dry-run nothing is written and the plan {planned = true, from, to_schema_of,
-- ...} is returned (the writes appear as planned actions in the job record).
function R:rollback(subject, opts)
  opts = util.check_opts(opts, { "on_existing", "latest", "previous" }, "rollback")
  local on_existing = opts.on_existing or "soft_delete"
  if on_existing ~= "soft_delete" and on_existing ~= "fail" then
    error("rollback: on_existing must be \"soft_delete\" or \"fail\"", 2)
  end
  local latest, prev, err = opts.latest, opts.previous, nil
  if not latest then
    latest, err = self:latest(subject)
    if not latest then return nil, err end
  end
  if not prev then
    local vs
    vs, err = self:versions(subject)
    if not vs then return nil, err end
    local pv, perr = M.previous_version(vs, latest.version)
    if not pv then return nil, M.error{ message = perr } end
    prev, err = self:get(subject, pv)
    if not prev then return nil, err end
  end
  if prev.version >= latest.version then
    return nil, M.error{ message = string.format("previous version %d is not older than the latest %d",
      prev.version, latest.version) }
  end
  if prev.id == latest.id then
    return nil, M.error{ message = string.format(
      "versions %d and %d have the same schema (id %d): nothing to roll back", prev.version, latest.version, latest.id) }
  end

  local ok, msgs = self:compatible(subject, prev, latest.version)
  if ok == nil then return nil, msgs end
  if not ok then
    local why = (#msgs > 0) and (": " .. table.concat(msgs, "; ")) or ""
    return nil, M.error{ code = "incompatible", message = string.format(
      "the schema of version %d is incompatible with version %d of %s under its compatibility level%s; nothing was registered",
      prev.version, latest.version, subject, why) }
  end

  local id, rerr = self:register(subject, prev)
  if not id then return nil, rerr end
  if self.dry_run then
    local plan = { planned = true, from = latest.version, to_schema_of = prev.version, id = prev.id }
    if on_existing == "soft_delete" then
      -- Every Confluent-compatible registry keeps L as the latest here (the
      -- schema of P is registered already), so the real run soft-deletes L.
      self:delete_version(subject, latest.version)
      plan.then_soft_delete = latest.version
    end
    return plan
  end

  local now, lerr = self:latest(subject)
  if not now then return nil, lerr end
  if now.version ~= latest.version then
    if now.id == prev.id then
      return { from = latest.version, to_schema_of = prev.version, id = now.id, version = now.version,
               method = "registered" }
    end
    return nil, M.error{ message = string.format(
      "the latest version of %s changed to %d (id %d) while rolling back; not touching it", subject, now.version, now.id) }
  end
  if id ~= prev.id then
    return nil, M.error{ message = string.format(
      "registering the schema of version %d returned id %d, expected %d; version %d is still the latest",
      prev.version, id, prev.id, latest.version) }
  end
  if on_existing == "fail" then
    return nil, M.error{ code = "kept", message = string.format(
      "the registry returned the existing id %d and kept version %d as the latest (Confluent semantics); " ..
      "set on_existing = \"soft_delete\" to soft-delete version %d", id, latest.version, latest.version) }
  end
  local dv, derr = self:delete_version(subject, latest.version)
  if not dv then return nil, derr end
  local after, aerr = self:latest(subject)
  if not after then return nil, aerr end
  if after.id ~= prev.id then
    return nil, M.error{ message = string.format(
      "after soft-deleting version %d the latest version of %s is %d (id %d), expected the schema of version %d (id %d)",
      latest.version, subject, after.version, after.id, prev.version, prev.id) }
  end
  return { from = latest.version, to_schema_of = prev.version, id = after.id, version = after.version,
           method = "soft_deleted", deleted_version = latest.version }
end

---------------------------------------------------------------- registration times

-- Prometheus instant query (GET {url}/api/v1/query). Returns a list of
-- {labels = {...}, value = number} (a scalar gives one entry), or nil, err.
function M.prom_query(url, expr, opts)
  opts = util.check_opts(opts, { "headers", "timeout" }, "prom_query")
  local full = url:gsub("/+$", "") .. "/api/v1/query?query=" .. M.urlencode(expr)
  local resp, err = recovery.http{ url = full, headers = opts.headers, timeout = opts.timeout or 10 }
  if not resp then return nil, "prometheus: " .. tostring(err) end
  local doc = decode(resp.body)
  if resp.status ~= 200 or type(doc) ~= "table" or doc.status ~= "success" then
    local why = type(doc) == "table" and type(doc.error) == "string" and doc.error or (resp.body or ""):sub(1, 200)
    return nil, string.format("prometheus: HTTP %d: %s", resp.status, why)
  end
  local data = doc.data
  if type(data) ~= "table" then return nil, "prometheus: no data in the answer" end
  local out = {}
  local function num(v)
    if type(v) ~= "table" then return nil end
    local s = v[2]
    if s == "NaN" then return nil end
    return tonumber(s)
  end
  if data.resultType == "scalar" then
    local v = num(data.result)
    if v then out[1] = { labels = {}, value = v } end
  elseif data.resultType == "vector" then
    for _, s in ipairs(data.result or {}) do
      local v = num(s.value)
      if v then out[#out + 1] = { labels = type(s.metric) == "table" and s.metric or {}, value = v } end
    end
  else
    return nil, "prometheus: unsupported result type " .. tostring(data.resultType)
  end
  return out
end

-- When was version `version` of `subject` registered? The Confluent API does
-- not say, so the source is configurable (src):
--   src.kind = "prometheus": src.url (Prometheus base URL), src.query (PromQL
--     with {subject} and {version} placeholders, filled as escaped string
--     literals); the largest sample value is the time in seconds since the
--     epoch (or milliseconds).
--   src.kind = "apicurio": src.meta_url, a URL template with {subject} and
--     {version} (URL-encoded) of Apicurio's version metadata, whose
--     createdOn is the registration time.
-- Returns seconds since the epoch, or nil, err (unknown is an error: the
-- caller must not roll back blindly).
function M.registered_at(src, subject, version)
  if type(src) ~= "table" then return nil, "no registration time source is configured" end
  util.check_opts(src, { "kind", "url", "query", "meta_url", "headers", "timeout" }, "registered_at: source")
  local vals = { subject = subject, version = version }
  if src.kind == "prometheus" then
    if type(src.url) ~= "string" or type(src.query) ~= "string" then
      return nil, "registered_at: prometheus needs url and query"
    end
    local expr = M.fill(src.query, vals, M.promql_escape)
    local res, err = M.prom_query(src.url, expr, { headers = src.headers, timeout = src.timeout })
    if not res then return nil, err end
    local best
    for _, s in ipairs(res) do
      if best == nil or s.value > best then best = s.value end
    end
    if best == nil then
      return nil, "the registration time query returned no data: " .. expr
    end
    return M.parse_time(best)
  elseif src.kind == "apicurio" then
    if type(src.meta_url) ~= "string" then return nil, "registered_at: apicurio needs meta_url" end
    local url = M.fill(src.meta_url, vals, M.urlencode)
    local resp, err = recovery.http{ url = url, headers = src.headers, timeout = src.timeout or 10 }
    if not resp then return nil, "apicurio: " .. tostring(err) end
    if resp.status ~= 200 then
      return nil, "apicurio: " .. tostring(M.map_error(resp.status, resp.body, "GET", url))
    end
    local doc = decode(resp.body)
    if type(doc) ~= "table" or is_null(doc.createdOn) then
      return nil, "apicurio: no createdOn in the version metadata"
    end
    return M.parse_time(doc.createdOn)
  end
  return nil, "registered_at: unknown source kind '" .. tostring(src.kind) .. "' (prometheus or apicurio)"
end

return M

-- Unit tests of lua/recovery/schema.lua with the stock interpreter.
-- The pure helpers are tested directly; the client is driven through a
-- scripted stand-in for recovery.http (no network).
local t = require "stub"
local recovery = require "recovery"

-- The stub has no JSON codec: a small decoder for the answers below.
local function json_decode(s)
  local pos = 1
  local function ws() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end
  local value
  local function str()
    local out = {}
    pos = pos + 1
    while true do
      local c = s:sub(pos, pos)
      if c == "" then error("unterminated string") end
      if c == '"' then pos = pos + 1 break end
      if c == "\\" then
        local e = s:sub(pos + 1, pos + 1)
        local map = { n = "\n", t = "\t", r = "\r", b = "\b", f = "\f", ['"'] = '"', ["\\"] = "\\", ["/"] = "/" }
        if e == "u" then
          out[#out + 1] = utf8.char(tonumber(s:sub(pos + 2, pos + 5), 16)); pos = pos + 6
        else
          out[#out + 1] = map[e]; pos = pos + 2
        end
      else
        out[#out + 1] = c; pos = pos + 1
      end
    end
    return table.concat(out)
  end
  function value()
    ws()
    local c = s:sub(pos, pos)
    if c == "{" then
      local o = {}
      pos = pos + 1; ws()
      if s:sub(pos, pos) == "}" then pos = pos + 1 return o end
      while true do
        ws(); local k = str(); ws(); pos = pos + 1 -- ':'
        o[k] = value(); ws()
        local d = s:sub(pos, pos); pos = pos + 1
        if d == "}" then return o end
      end
    elseif c == "[" then
      local a = {}
      pos = pos + 1; ws()
      if s:sub(pos, pos) == "]" then pos = pos + 1 return a end
      while true do
        a[#a + 1] = value(); ws()
        local d = s:sub(pos, pos); pos = pos + 1
        if d == "]" then return a end
      end
    elseif c == '"' then return str()
    elseif s:sub(pos, pos + 3) == "true" then pos = pos + 4 return true
    elseif s:sub(pos, pos + 4) == "false" then pos = pos + 5 return false
    elseif s:sub(pos, pos + 3) == "null" then pos = pos + 4 return recovery.json.null
    else
      local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
      if not num or num == "" then error("invalid JSON near byte " .. pos) end
      pos = pos + #num
      return math.tointeger(tonumber(num)) or tonumber(num)
    end
  end
  return value()
end
recovery.json.decode = function(s)
  local ok, v = pcall(json_decode, s)
  if ok then return v end
  return nil, v
end

local schema = require "recovery.schema"

-- A scripted recovery.http: routes = { {method, path pattern, handler(req) -> status, body-table-or-string} }
local function fake_http(routes, opts)
  opts = opts or {}
  local log = {}
  recovery.http = function(req)
    local method = (req.method or "GET"):upper()
    local path = req.url:gsub("^https?://[^/]+", "")
    log[#log + 1] = { method = method, path = path, req = req }
    if opts.dry_run and method ~= "GET" and method ~= "HEAD" then
      log[#log].planned = true
      return { status = 200, body = "", headers = {}, planned = true }
    end
    for _, r in ipairs(routes) do
      if r[1] == method and path:match(r[2]) then
        local st, body = r[3](req, path)
        if type(body) == "table" then body = body.__raw or t.encode(body) end
        return setmetatable({ status = st, body = body or "", headers = {} },
          { __index = { json = function(self) return recovery.json.decode(self.body) end } })
      end
    end
    return nil, "no route for " .. method .. " " .. path
  end
  return log
end

-- A tiny encoder for the fake answers (enough for these tests).
function t.encode(v)
  if type(v) == "table" then
    if #v > 0 or next(v) == nil then
      local out = {}
      for _, x in ipairs(v) do out[#out + 1] = t.encode(x) end
      return "[" .. table.concat(out, ",") .. "]"
    end
    local out = {}
    for k, x in pairs(v) do out[#out + 1] = string.format("%q:%s", k, t.encode(x)) end
    return "{" .. table.concat(out, ",") .. "}"
  elseif type(v) == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
  end
  return tostring(v)
end

-- A Confluent-semantics registry in Lua for the rollback tests.
local function confluent(state)
  -- state.versions: { {version=, id=, schema=, deleted=} ... }
  local function live()
    local out = {}
    for _, v in ipairs(state.versions) do if not v.deleted then out[#out + 1] = v end end
    return out
  end
  local function rec(v)
    return { subject = "orders-value", version = v.version, id = v.id, schema = v.schema }
  end
  return {
    { "GET", "^/subjects/orders%-value/versions/latest$", function() local l = live(); return 200, rec(l[#l]) end },
    { "GET", "^/subjects/orders%-value/versions/(%d+)$", function(_, p)
      local n = tonumber(p:match("(%d+)$"))
      for _, v in ipairs(live()) do if v.version == n then return 200, rec(v) end end
      return 404, { error_code = 40402, message = "Version " .. n .. " not found." }
    end },
    { "GET", "^/subjects/orders%-value/versions$", function()
      local out = {}
      for _, v in ipairs(live()) do out[#out + 1] = v.version end
      return 200, out
    end },
    { "POST", "^/compatibility/", function() return 200, { is_compatible = state.compatible ~= false,
      messages = state.compatible == false and { "READER_FIELD_MISSING_DEFAULT_VALUE" } or nil } end },
    { "POST", "^/subjects/orders%-value/versions$", function(req)
      state.registered = (state.registered or 0) + 1
      for _, v in ipairs(live()) do
        if v.schema == req.json.schema and not state.append then return 200, { id = v.id } end
      end
      local l = live()
      local id = state.append and (function() for _, v in ipairs(live()) do if v.schema == req.json.schema then return v.id end end end)() or 99
      table.insert(state.versions, { version = l[#l].version + 1, id = id, schema = req.json.schema })
      return 200, { id = id }
    end },
    { "DELETE", "^/subjects/orders%-value/versions/(%d+)$", function(_, p)
      local n = tonumber(p:match("(%d+)$"))
      for _, v in ipairs(state.versions) do if v.version == n and not v.deleted then v.deleted = true; return 200, { __raw = tostring(n) } end end
      return 404, { error_code = 40402, message = "Version " .. n .. " not found." }
    end },
  }
end

local function two_versions()
  return { versions = {
    { version = 1, id = 10, schema = '{"type":"string"}' },
    { version = 2, id = 11, schema = '{"type":"int"}' },
  } }
end

local function count(log, method, pat)
  local n = 0
  for _, e in ipairs(log) do if e.method == method and (not pat or e.path:match(pat)) then n = n + 1 end end
  return n
end

t.run{
  urlencode = function()
    t.eq(schema.urlencode("orders-value"), "orders-value")
    t.eq(schema.urlencode("a/b c?%"), "a%2Fb%20c%3F%25")
    t.eq(schema.urlencode("com.example.Order"), "com.example.Order")
    t.eq(schema.urldecode("a%2Fb+c"), "a/b c")
  end,

  valid_subject = function()
    t.ok(schema.valid_subject("orders-value"))
    t.ok(schema.valid_subject("com.example.events.OrderCreated"))
    t.ok(not schema.valid_subject(""))
    t.ok(not schema.valid_subject(string.rep("a", 256)))
    t.ok(schema.valid_subject(string.rep("a", 255)))
    t.ok(not schema.valid_subject("orders/value"))
    t.ok(not schema.valid_subject("orders value"))
    t.ok(not schema.valid_subject(":.ctx:orders-value"))
    t.ok(not schema.valid_subject("orders\nvalue"))
    t.ok(not schema.valid_subject(nil))
  end,

  subject_from_label = function()
    local s, how = schema.subject_for({ subject = "orders-value", topic = "other" }, {})
    t.eq(s, "orders-value"); t.eq(how, "label subject")
    local bad, err = schema.subject_for({ subject = "../../config" }, {})
    t.eq(bad, nil); t.ok(err:match("only"), err)
  end,

  subject_from_topic = function()
    t.eq(schema.subject_for({ topic = "orders" }, {}), "orders-value")
    t.eq(schema.subject_for({ topic = "orders" }, { subject_suffix = "-key" }), "orders-key")
    t.eq(schema.subject_for({ kafka_topic = "orders" }, { topic_label = "kafka_topic" }), "orders-value")
    local s, err = schema.subject_for({ topic = "bad topic" }, {})
    t.eq(s, nil); t.ok(err:match("Kafka topic"), err)
    t.eq(schema.subject_for({ topic = string.rep("t", 250) }, {}), nil)
  end,

  subject_from_event_type = function()
    local opts = { event_types = { ["order.created"] = "orders-value", ["invoice.paid"] = { topic = "invoices" } } }
    t.eq(schema.subject_for({ event_type = "order.created" }, opts), "orders-value")
    t.eq(schema.subject_for({ event_type = "invoice.paid" }, opts), "invoices-value")
    local s, err = schema.subject_for({ event_type = "unknown" }, opts)
    t.eq(s, nil); t.ok(err:match("no subject is configured"), err)
  end,

  subject_missing_and_default_and_allowed = function()
    local s, err = schema.subject_for({ alertname = "EventValidationFailureSpike" }, {})
    t.eq(s, nil); t.ok(err:match("cannot tell which subject"), err)
    t.eq(schema.subject_for({}, { default_subject = "events-value" }), "events-value")
    t.eq(schema.subject_for({ subject = "a-value" }, { allowed_subjects = { "a-value" } }), "a-value")
    s, err = schema.subject_for({ subject = "b-value" }, { allowed_subjects = { "a-value" } })
    t.eq(s, nil); t.ok(err:match("allowed_subjects"), err)
  end,

  previous_version = function()
    t.eq(schema.previous_version({ 1, 2, 3 }, 3), 2)
    t.eq(schema.previous_version({ 1, 3, 7 }, 7), 3, "gaps from deleted versions")
    t.eq(schema.previous_version({ 7, 1, 3 }, 7), 3, "unsorted")
    local v, err = schema.previous_version({ 1 }, 1)
    t.eq(v, nil); t.ok(err:match("only version"), err)
    t.eq(schema.previous_version({}, 4), nil)
  end,

  map_error_registry_body = function()
    local e = schema.map_error(404, '{"error_code":40401,"message":"Subject not found"}', "GET", "/subjects/x/versions")
    t.eq(e.status, 404); t.eq(e.code, 40401); t.eq(e.message, "Subject not found")
    t.ok(schema.is_error(e))
    t.eq(tostring(e), "GET /subjects/x/versions: HTTP 404 error 40401: Subject not found")
    e = schema.map_error(409, '{"error_code":409,"message":"Schema being registered is incompatible"}')
    t.eq(e.code, 409); t.eq(tostring(e), "HTTP 409: Schema being registered is incompatible")
    e = schema.map_error(422, '{"error_code":42201,"message":"Invalid schema"}')
    t.eq(e.code, 42201)
  end,

  map_error_other_bodies = function()
    local e = schema.map_error(502, "<html>bad gateway</html>\n")
    t.eq(e.code, 502); t.eq(e.message, "<html>bad gateway</html>")
    e = schema.map_error(404, '{"title":"No artifact","status":404}')
    t.eq(e.message, "No artifact")
    t.eq(#schema.map_error(500, string.rep("x", 1000)).message, 200)
    t.eq(tostring(schema.error{ message = "connect refused", method = "GET", path = "/subjects" }),
      "GET /subjects: connect refused")
  end,

  parse_time = function()
    t.eq(schema.parse_time("1970-01-01T00:00:00Z"), 0)
    t.eq(schema.parse_time("2023-10-11T14:15:28Z"), 1697033728)
    t.eq(schema.parse_time("2023-10-11T14:15:28+0000"), 1697033728)
    t.eq(schema.parse_time("2023-10-11T16:15:28+02:00"), 1697033728)
    t.eq(schema.parse_time("2023-10-11 14:15:28.500Z"), 1697033728.5)
    t.eq(schema.parse_time("2024-02-29T00:00:00Z"), 1709164800, "leap day")
    t.eq(schema.parse_time(1697033728), 1697033728)
    t.eq(schema.parse_time(1697033728000), 1697033728.0, "milliseconds")
    t.eq(schema.parse_time("1697033728"), 1697033728)
    t.eq(schema.parse_time("yesterday"), nil)
    t.eq(schema.parse_time("2023-13-01T00:00:00Z"), nil)
    t.eq(schema.parse_time("2023-10-11T14:15:28 CEST"), nil)
    t.eq(schema.parse_time(0 / 0), nil)
  end,

  generator_url = function()
    t.eq(schema.expr_from_generator_url(
      "http://prometheus:9090/graph?g0.expr=rate%28event_validation_errors_total%5B5m%5D%29+%3E+0.1&g0.tab=1"),
      "rate(event_validation_errors_total[5m]) > 0.1")
    t.eq(schema.expr_from_generator_url(""), nil)
    t.eq(schema.expr_from_generator_url("http://x/graph"), nil)
    t.eq(schema.expr_from_generator_url("http://x/graph?g0.tab=1"), nil)
  end,

  base64_and_basic_auth = function()
    t.eq(schema.base64(""), "")
    t.eq(schema.base64("f"), "Zg==")
    t.eq(schema.base64("fo"), "Zm8=")
    t.eq(schema.base64("foo"), "Zm9v")
    t.eq(schema.basic_auth("key", "secret"), "Basic a2V5OnNlY3JldA==")
  end,

  fill_and_promql_escape = function()
    local q = 'max(x{subject="{subject}",version="{version}"})'
    t.eq(schema.fill(q, { subject = 'a"b', version = 3 }, schema.promql_escape),
      'max(x{subject="a\\"b",version="3"})')
    t.eq(schema.fill("/a/{subject}/{other}", { subject = "x y" }, schema.urlencode), "/a/x%20y/{other}")
  end,

  schema_body = function()
    local b = schema.schema_body{ schema = "s", schemaType = "AVRO", references = {} }
    t.eq(b.schema, "s"); t.eq(b.schemaType, nil); t.eq(b.references, nil)
    b = schema.schema_body{ schema = "s", schemaType = "PROTOBUF", references = { { name = "x" } } }
    t.eq(b.schemaType, "PROTOBUF"); t.eq(#b.references, 1)
    t.ok(not pcall(schema.schema_body, { schemaType = "AVRO" }))
  end,

  normalize_version_defaults = function()
    local r = schema.normalize_version({ subject = "s", version = 2, id = 7, schema = "x", schemaType = recovery.json.null }, "s")
    t.eq(r.schemaType, "AVRO"); t.eq(#r.references, 0)
    t.eq(schema.normalize_version({ version = 2, schema = "x" }, "s"), nil, "no id")
  end,

  registry_args = function()
    t.ok(not pcall(schema.registry, { url = "ftp://x" }))
    local r = schema.registry{ url = "http://reg:8081/", dry_run = false }
    t.eq(r.url, "http://reg:8081"); t.eq(r.timeout, 10)
  end,

  client_get_and_errors = function()
    local log = fake_http{
      { "GET", "^/subjects/a%%2Fb/versions/latest$", function() return 404, { error_code = 40401, message = "Subject not found" } end },
      { "GET", "^/subjects/s/versions/3$", function() return 200, { subject = "s", version = 3, id = 5, schema = "{}" } end },
    }
    local r = schema.registry{ url = "http://reg", dry_run = false }
    local v, err = r:latest("a/b")
    t.eq(v, nil); t.eq(err.code, 40401); t.eq(err.status, 404)
    t.eq(log[1].path, "/subjects/a%2Fb/versions/latest", "subject is URL-encoded")
    v = r:get("s", 3)
    t.eq(v.id, 5); t.eq(v.schemaType, "AVRO")
    v, err = r:get("s", 4)
    t.eq(v, nil); t.ok(tostring(err):match("no route"), tostring(err))
  end,

  compatible_sends_registry_content_type = function()
    local log = fake_http{ { "POST", "^/compatibility/subjects/s/versions/2", function() return 200, { is_compatible = false, messages = { "m1" } } end } }
    local r = schema.registry{ url = "http://reg", dry_run = false }
    local ok, msgs = r:compatible("s", { schema = "x", schemaType = "JSON" }, 2)
    t.eq(ok, false); t.eq(msgs[1], "m1")
    t.eq(log[1].req.headers["Content-Type"], "application/vnd.schemaregistry.v1+json")
    t.eq(log[1].req.json.schemaType, "JSON")
  end,

  rollback_confluent_soft_deletes = function()
    local st = two_versions()
    local log = fake_http(confluent(st))
    local r = schema.registry{ url = "http://reg", dry_run = false }
    local res, err = r:rollback("orders-value")
    t.ok(res, tostring(err))
    t.eq(res.from, 2); t.eq(res.to_schema_of, 1); t.eq(res.id, 10); t.eq(res.version, 1)
    t.eq(res.method, "soft_deleted"); t.eq(res.deleted_version, 2)
    t.eq(st.registered, 1, "registered once (returned the existing id)")
    t.eq(count(log, "DELETE"), 1)
  end,

  rollback_fail_mode_keeps_latest = function()
    local st = two_versions()
    local log = fake_http(confluent(st))
    local r = schema.registry{ url = "http://reg", dry_run = false }
    local res, err = r:rollback("orders-value", { on_existing = "fail" })
    t.eq(res, nil); t.eq(err.code, "kept"); t.ok(tostring(err):match("Confluent semantics"), tostring(err))
    t.eq(count(log, "DELETE"), 0)
  end,

  rollback_appending_registry = function()
    local st = two_versions()
    st.append = true
    local log = fake_http(confluent(st))
    local r = schema.registry{ url = "http://reg", dry_run = false }
    local res, err = r:rollback("orders-value")
    t.ok(res, tostring(err))
    t.eq(res.method, "registered"); t.eq(res.version, 3); t.eq(res.id, 10)
    t.eq(count(log, "DELETE"), 0)
  end,

  rollback_incompatible_registers_nothing = function()
    local st = two_versions()
    st.compatible = false
    local log = fake_http(confluent(st))
    local r = schema.registry{ url = "http://reg", dry_run = false }
    local res, err = r:rollback("orders-value")
    t.eq(res, nil); t.eq(err.code, "incompatible")
    t.ok(tostring(err):match("incompatible") and tostring(err):match("READER_FIELD_MISSING_DEFAULT_VALUE"), tostring(err))
    t.eq(count(log, "POST", "^/subjects/"), 0); t.eq(count(log, "DELETE"), 0)
  end,

  rollback_only_version = function()
    local st = { versions = { { version = 1, id = 10, schema = "{}" } } }
    fake_http(confluent(st))
    local r = schema.registry{ url = "http://reg", dry_run = false }
    local res, err = r:rollback("orders-value")
    t.eq(res, nil); t.ok(tostring(err):match("only version"), tostring(err))
  end,

  rollback_dry_run_plans = function()
    local st = two_versions()
    local log = fake_http(confluent(st), { dry_run = true })
    local r = schema.registry{ url = "http://reg", dry_run = true }
    local res, err = r:rollback("orders-value")
    t.ok(res, tostring(err))
    t.eq(res.planned, true); t.eq(res.from, 2); t.eq(res.to_schema_of, 1); t.eq(res.then_soft_delete, 2)
    t.eq(st.registered, nil, "nothing registered")
    local planned = {}
    for _, e in ipairs(log) do if e.planned then planned[#planned + 1] = e.method .. " " .. e.path end end
    t.eq(table.concat(planned, ", "),
      "POST /compatibility/subjects/orders-value/versions/2?verbose=true, POST /subjects/orders-value/versions, " ..
      "DELETE /subjects/orders-value/versions/2")
  end,

  registered_at_prometheus = function()
    local log = fake_http{ { "GET", "^/api/v1/query", function()
      return 200, { status = "success", data = { resultType = "vector", result = {
        { metric = { subject = "s" }, value = { 1700000000, "1699990000" } } } } }
    end } }
    local ts, err = schema.registered_at({ kind = "prometheus", url = "http://prom/", query = 'x{subject="{subject}",version="{version}"}' }, "s", 3)
    t.eq(ts, 1699990000, tostring(err))
    t.eq(log[1].path, "/api/v1/query?query=" .. schema.urlencode('x{subject="s",version="3"}'))
  end,

  registered_at_prometheus_empty_is_an_error = function()
    fake_http{ { "GET", "^/api/v1/query", function()
      return 200, { status = "success", data = { resultType = "vector", result = {} } }
    end } }
    local ts, err = schema.registered_at({ kind = "prometheus", url = "http://prom", query = "x" }, "s", 3)
    t.eq(ts, nil); t.ok(err:match("no data"), err)
    fake_http{ { "GET", "^/api/v1/query", function()
      return 400, { status = "error", errorType = "bad_data", error = "parse error" }
    end } }
    ts, err = schema.registered_at({ kind = "prometheus", url = "http://prom", query = "x(" }, "s", 3)
    t.eq(ts, nil); t.ok(err:match("parse error"), err)
  end,

  registered_at_apicurio = function()
    local log = fake_http{ { "GET", "^/apis/registry/v3/", function()
      return 200, { groupId = "default", artifactId = "s", version = "3", createdOn = "2023-10-11T14:15:28Z" }
    end } }
    local ts, err = schema.registered_at({ kind = "apicurio",
      meta_url = "http://apicurio/apis/registry/v3/groups/default/artifacts/{subject}/versions/{version}" }, "s", 3)
    t.eq(ts, 1697033728, tostring(err))
    t.eq(log[1].path, "/apis/registry/v3/groups/default/artifacts/s/versions/3")
    t.eq(schema.registered_at(nil, "s", 1), nil)
    t.eq(schema.registered_at({ kind = "guess" }, "s", 1), nil)
  end,

  unknown_option_keys = function()
    local log = fake_http({})
    local m = t.permanent(function() schema.subject_for({ topic = "orders" }, { suffix = "-key" }) end,
                          'subject_for: unknown option "suffix" (allowed: subject_label, topic_label, subject_suffix, ')
    t.ok(m:find("test_schema%.lua:%d+: subject_for: "), "blames the caller: " .. m)
    t.permanent(function() schema.registry{ url = "http://r", dryrun = true } end,
                'schema.registry: unknown option "dryrun" (allowed: url, headers, timeout, dry_run)')
    local r = schema.registry{ url = "http://r" }
    t.permanent(function() r:versions("s", { include_deleted = true }) end,
                'versions: unknown option "include_deleted" (allowed: deleted)')
    t.permanent(function() r:rollback("s", { on_exist = "fail" }) end,
                'rollback: unknown option "on_exist" (allowed: on_existing, latest, previous)')
    t.permanent(function() schema.prom_query("http://p", "up", { header = {} }) end,
                'prom_query: unknown option "header" (allowed: headers, timeout)')
    t.permanent(function() schema.registered_at({ kind = "prometheus", url = "http://p", querry = "x" }, "s", 1) end,
                'registered_at: source: unknown option "querry"')
    t.eq(#log, 0, "nothing was sent")
  end,

  human_duration = function()
    t.eq(schema.human_duration(42), "42s")
    t.eq(schema.human_duration(3 * 86400 + 7200), "3d 2h")
    t.eq(schema.human_duration(3600), "1h 0m")
  end,
}

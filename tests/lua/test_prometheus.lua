-- Pure functions of recovery.prometheus (no daemon).
local t = require "stub"
local prometheus = require "recovery.prometheus"

local function read_fixture_generator_urls()
  local urls = {}
  for _, name in ipairs({ "firing-single.json", "firing-critical.json", "firing-grouped.json" }) do
    local f = assert(io.open("../fixtures/" .. name, "rb"))
    local text = f:read("a")
    f:close()
    for u in text:gmatch('"generatorURL":"([^"]*)"') do
      -- the JSON parser turns \u0026 into &; do the same here
      urls[#urls + 1] = { name = name, url = (u:gsub("\\u0026", "&")) }
    end
  end
  return urls
end

local function parse_ok(url)
  local g, err = prometheus.parse_generator_url(url)
  if not g then error("parse failed: " .. tostring(err), 2) end
  return g
end

t.run{
  unknown_option_keys = function()
    local m = t.permanent(function() prometheus.client{ url = "http://prom:9090", tiemout = 5 } end,
                          'prometheus.client: unknown option "tiemout" (allowed: url, headers, timeout)')
    t.ok(m:find("test_prometheus%.lua:%d+: prometheus%.client: "), "blames the caller: " .. m)
    local c = prometheus.client{ url = "http://prom:9090" }
    t.permanent(function() c:query("up", { at = 1 }) end, 'query: unknown option "at" (allowed: time, timeout)')
    t.permanent(function() c:value("up", { at = 1 }) end, 'value: unknown option "at" (allowed: time, timeout)')
    t.permanent(function() c:holds("up", { at = 1 }) end, 'holds: unknown option "at" (allowed: time, timeout)')
    local ctx = { alert = { generatorURL = "http://prom:9090/graph?g0.expr=up" } }
    t.permanent(function() prometheus.alert_holds(ctx, { wait = 5 }) end,
                'alert_holds: unknown option "wait" (allowed: url, headers, timeout)')
    t.permanent(function() prometheus.alert_cleared(ctx, { wiat = 5 }) end,
                'alert_cleared: unknown option "wiat" (allowed: url, headers, timeout, wait, interval)')
  end,

  alert_cleared_passes_its_own_options = function()
    -- wait and interval are alert_cleared's, not alert_holds': accepted
    local saved_http, saved_decode = recovery.http, recovery.json.decode
    recovery.http = function() return { status = 200, body = "x" } end
    recovery.json.decode = function()
      return { status = "success", data = { resultType = "vector", result = {} } }
    end
    local ok, reason = prometheus.alert_cleared({ alert = { generatorURL = "http://prom:9090/graph?g0.expr=up" } },
                                                { url = "http://p:9090", wait = 0, interval = 1, timeout = 2 })
    recovery.http, recovery.json.decode = saved_http, saved_decode
    t.eq(ok, true, tostring(reason))
  end,

  fixture_urls = function()
    local urls = read_fixture_generator_urls()
    t.ok(#urls >= 3, "fixtures hold generatorURLs")
    local g = parse_ok(urls[1].url)
    t.eq(g.base, "http://127.0.0.1:9090")
    t.eq(g.expr, 'up{job="settings-sync-job"} == 0')
    for _, u in ipairs(urls) do
      local p = parse_ok(u.url)
      t.eq(p.base, "http://127.0.0.1:9090", u.name)
      t.ok(p.expr:match('^up{job="[%w%-]+"} == 0$'), u.name .. ": " .. p.expr)
    end
  end,

  literal_u0026_and_html_amp = function()
    -- if the escape was not decoded (e.g. copied out of a raw payload)
    local g = parse_ok([[http://prom:9090/graph?g0.expr=up%3D%3D0\u0026g0.tab=1]])
    t.eq(g.expr, "up==0")
    g = parse_ok("http://prom:9090/graph?g0.tab=1&amp;g0.expr=up%3D%3D0")
    t.eq(g.expr, "up==0")
  end,

  plus_is_space_and_percent_escapes = function()
    local g = parse_ok("http://prom:9090/graph?g0.expr=rate%28settings_sync_errors_total%5B30s%5D%29+%3E+0&g0.tab=1")
    t.eq(g.expr, "rate(settings_sync_errors_total[30s]) > 0")
    t.eq(g.base, "http://prom:9090")
    -- an encoded plus stays a plus
    g = parse_ok("http://prom:9090/graph?g0.expr=a+%2B+b&g0.tab=1")
    t.eq(g.expr, "a + b")
    -- UTF-8 and a malformed escape (kept as is)
    g = parse_ok("http://prom:9090/graph?g0.expr=x%7Bl%3D%22%C3%A9%22%7D%ZZ")
    t.eq(g.expr, 'x{l="\xC3\xA9"}%ZZ')
  end,

  g0_expr_not_first = function()
    local g = parse_ok("http://prom:9090/graph?g0.tab=1&g0.range_input=1h&g0.expr=up+%3D%3D+0")
    t.eq(g.expr, "up == 0")
  end,

  path_prefix = function()
    local g = parse_ok("http://monitoring.example:80/prometheus/graph?g0.expr=up+%3D%3D+0&g0.tab=1")
    t.eq(g.base, "http://monitoring.example:80/prometheus")
    t.eq(g.expr, "up == 0")
    g = parse_ok("https://host/a/b/graph?g0.expr=up")
    t.eq(g.base, "https://host/a/b")
    g = parse_ok("https://host/a/b/graph/?g0.expr=up")
    t.eq(g.base, "https://host/a/b")
    g = parse_ok("http://host:9090/graph?g0.expr=up#frag")
    t.eq(g.base, "http://host:9090")
    t.eq(g.expr, "up")
    g = parse_ok("http://host:9090?g0.expr=up")
    t.eq(g.base, "http://host:9090")
  end,

  errors = function()
    local g, err = prometheus.parse_generator_url("http://prom:9090/graph?g0.tab=1")
    t.eq(g, nil)
    t.ok(err:find("no g0.expr", 1, true), err)
    g, err = prometheus.parse_generator_url("http://prom:9090/graph")
    t.eq(g, nil)
    t.ok(err:find("no g0.expr", 1, true), err)
    g, err = prometheus.parse_generator_url("http://prom:9090/graph?g0.expr=")
    t.eq(g, nil)
    t.ok(err:find("empty", 1, true), err)
    g, err = prometheus.parse_generator_url("")
    t.eq(g, nil)
    t.ok(err, "empty URL")
    g, err = prometheus.parse_generator_url(nil)
    t.eq(g, nil)
    g, err = prometheus.parse_generator_url("ftp://prom/graph?g0.expr=up")
    t.eq(g, nil)
    t.ok(err:find("not an http", 1, true), err)
    g, err = prometheus.parse_generator_url("http:///graph?g0.expr=up")
    t.eq(g, nil)
    t.ok(err:find("no host", 1, true), err)
  end,

  urlencode_roundtrip = function()
    local s = 'rate(x{a="b c"}[5m]) > 0 & +~'
    local e = prometheus.urlencode(s)
    t.ok(not e:find("[^%w%%%-_%.~]"), e)
    t.eq(prometheus.urldecode(e), s)
  end,

  parse_data_vector = function()
    local r = assert(prometheus.parse_data{ resultType = "vector", result = {
      { metric = { __name__ = "up", job = "a" }, value = { 1700000000.5, "0" } },
      { metric = { job = "b" }, value = { 1700000000.5, "NaN" } },
      { metric = { job = "c" }, value = { 1700000000.5, "+Inf" } },
    } })
    t.eq(r.type, "vector")
    t.eq(#r.samples, 3)
    t.eq(r.samples[1].value, 0)
    t.eq(r.samples[1].metric.job, "a")
    t.eq(r.samples[1].ts, 1700000000.5)
    t.ok(r.samples[2].value ~= r.samples[2].value, "NaN")
    t.eq(r.samples[3].value, math.huge)
    t.eq(prometheus.format_labels(r.samples[1].metric), 'up{job="a"}')
  end,

  parse_data_other_types = function()
    local r = assert(prometheus.parse_data{ resultType = "scalar", result = { 1700000000, "42.5" } })
    t.eq(r.type, "scalar"); t.eq(r.samples[1].value, 42.5)
    r = assert(prometheus.parse_data{ resultType = "string", result = { 1700000000, "hello" } })
    t.eq(r.samples[1].value, "hello")
    r = assert(prometheus.parse_data{ resultType = "matrix", result = {
      { metric = { job = "a" }, values = { { 1, "1" }, { 2, "3" } } } } })
    t.eq(r.type, "matrix"); t.eq(#r.samples[1].values, 2); t.eq(r.samples[1].value, 3); t.eq(r.samples[1].ts, 2)
    r = assert(prometheus.parse_data{ resultType = "vector", result = {} })
    t.eq(#r.samples, 0)
    local bad, err = prometheus.parse_data{ resultType = "histogram", result = {} }
    t.eq(bad, nil); t.ok(err:find("unknown resultType"), err)
    bad, err = prometheus.parse_data{ resultType = "vector", result = { { metric = {}, value = { 1, "x" } } } }
    t.eq(bad, nil); t.ok(err:find("bad value"), err)
  end,

  client_misuse_raises = function()
    t.ok(not pcall(prometheus.client, { url = "prom:9090" }), "scheme required")
    t.ok(not pcall(prometheus.client, {}), "url required")
    local c = prometheus.client{ url = "http://prom:9090/" }
    t.eq(c.url, "http://prom:9090")
    t.eq(c.timeout, 10)
  end,

  alert_holds_without_generator_url = function()
    -- fails before any I/O
    local holds, err = prometheus.alert_holds({ alert = { generatorURL = "" } }, { url = "http://p:9090" })
    t.eq(holds, nil)
    t.ok(err:find("no generatorURL"), err)
  end,
}

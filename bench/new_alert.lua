-- wrk script: every request is a new firing Alertmanager v4 notification.
--
-- The alert's labels carry a run tag, the wrk thread number and a per-thread
-- counter, so every request is an alert with its own fingerprint (recoveryd
-- computes it from the labels) and therefore a new job.
--
-- Environment: BENCH_TAG (unique per run; default: the time), BENCH_ALERTNAME
-- (default BenchAlert), BENCH_TOKEN (sent as "Authorization: Bearer"; nginx and
-- webhook ignore it). done() prints one line "BENCHJSON {...}" with the
-- request count, errors and latency percentiles in microseconds.
--
-- usage: wrk -t1 -c16 -d5s -s bench/new_alert.lua http://127.0.0.1:PORT/webhook

local tag = os.getenv("BENCH_TAG") or tostring(os.time())
local alertname = os.getenv("BENCH_ALERTNAME") or "BenchAlert"
local token = os.getenv("BENCH_TOKEN") or ""

local headers = { ["Content-Type"] = "application/json" }
if token ~= "" then headers["Authorization"] = "Bearer " .. token end

local fmt = '{"version":"4","status":"firing","receiver":"recovery",' ..
  '"groupKey":"{}:{alertname=\\"%s\\"}","truncatedAlerts":0,' ..
  '"externalURL":"http://alertmanager.example.invalid:9093",' ..
  '"groupLabels":{"alertname":"%s"},"commonLabels":{},"commonAnnotations":{},' ..
  '"alerts":[{"status":"firing",' ..
  '"labels":{"alertname":"%s","instance":"%s-%d-%d","job":"bench","severity":"warning"},' ..
  '"annotations":{"summary":"benchmark alert %s-%d-%d"},' ..
  '"startsAt":"2026-11-29T10:45:43.885Z","endsAt":"0001-01-01T00:00:00Z",' ..
  '"generatorURL":"http://prometheus.example.invalid:9090/graph"}]}'

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("tid", #threads)
end

counter = 0

function request()
  counter = counter + 1
  local t = tid or 0
  local body = string.format(fmt, alertname, alertname, alertname, tag, t, counter, tag, t, counter)
  return wrk.format("POST", nil, headers, body)
end

-- done(): the BENCHJSON line, shared by both scripts
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "wrk_report.lua")

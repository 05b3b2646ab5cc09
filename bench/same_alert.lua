-- wrk script: the same firing notification, repeated (as Alertmanager resends
-- a group on every group_interval / repeat_interval). recoveryd must coalesce
-- it: one job per run, every other request answered "coalesced" or
-- "cooldown".
--
-- Environment and output as in new_alert.lua (BENCH_TAG makes the alert of
-- one run differ from the alert of the next run; within a run it is fixed).
--
-- usage: wrk -t1 -c16 -d5s -s bench/same_alert.lua http://127.0.0.1:PORT/webhook

local tag = os.getenv("BENCH_TAG") or tostring(os.time())
local alertname = os.getenv("BENCH_ALERTNAME") or "BenchSame"
local token = os.getenv("BENCH_TOKEN") or ""

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
if token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end
wrk.body = string.format('{"version":"4","status":"firing","receiver":"recovery",' ..
  '"groupKey":"{}:{alertname=\\"%s\\"}","truncatedAlerts":0,' ..
  '"externalURL":"http://alertmanager.example.invalid:9093",' ..
  '"groupLabels":{"alertname":"%s"},"commonLabels":{},"commonAnnotations":{},' ..
  '"alerts":[{"status":"firing",' ..
  '"labels":{"alertname":"%s","instance":"%s","job":"bench","severity":"warning"},' ..
  '"annotations":{"summary":"benchmark alert %s"},' ..
  '"startsAt":"2026-11-29T10:45:43.885Z","endsAt":"0001-01-01T00:00:00Z",' ..
  '"generatorURL":"http://prometheus.example.invalid:9090/graph"}]}',
  alertname, alertname, alertname, tag, tag)

-- done(): the BENCHJSON line, shared by both scripts
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "wrk_report.lua")

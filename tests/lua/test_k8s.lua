-- Unit tests of recovery.k8s (run with lua5.4, `recovery` stubbed). The pure
-- functions are tested directly; the client is driven through a scripted
-- recovery.http. The real daemon and the fake API server are exercised by
-- tests/integration/test_lib_k8s.py.
local t = require "stub"

-- The stub has no JSON codec: a small one, enough for these tests.
local null = recovery.json.null
local function json_decode(s)
  local i = 1
  local function ws() i = s:find("[^ \t\r\n]", i) or #s + 1 end
  local value
  local function str()
    local out, j = {}, i + 1
    while true do
      local c = s:sub(j, j)
      if c == "" then error("unterminated string") end
      if c == '"' then break end
      if c == "\\" then
        local e = s:sub(j + 1, j + 1)
        local map = { n = "\n", t = "\t", r = "\r", b = "\b", f = "\f", ['"'] = '"', ["\\"] = "\\", ["/"] = "/" }
        if e == "u" then
          out[#out + 1] = utf8.char(tonumber(s:sub(j + 2, j + 5), 16)); j = j + 6
        else
          out[#out + 1] = map[e]; j = j + 2
        end
      else
        out[#out + 1] = c; j = j + 1
      end
    end
    i = j + 1
    return table.concat(out)
  end
  function value()
    ws()
    local c = s:sub(i, i)
    if c == "{" then
      local o = {}; i = i + 1; ws()
      if s:sub(i, i) == "}" then i = i + 1 return o end
      while true do
        ws(); local k = str(); ws(); assert(s:sub(i, i) == ":"); i = i + 1
        o[k] = value(); ws()
        local d = s:sub(i, i); i = i + 1
        if d == "}" then return o end
        assert(d == ",", "expected , or } at " .. i)
      end
    elseif c == "[" then
      local a = {}; i = i + 1; ws()
      if s:sub(i, i) == "]" then i = i + 1 return a end
      while true do
        a[#a + 1] = value(); ws()
        local d = s:sub(i, i); i = i + 1
        if d == "]" then return a end
        assert(d == ",", "expected , or ]")
      end
    elseif c == '"' then return str()
    elseif s:sub(i, i + 3) == "true" then i = i + 4 return true
    elseif s:sub(i, i + 4) == "false" then i = i + 5 return false
    elseif s:sub(i, i + 3) == "null" then i = i + 4 return null
    else
      local n = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
      if not n or n == "" then error("invalid JSON near byte " .. i) end
      i = i + #n
      return math.tointeger(tonumber(n)) or tonumber(n)
    end
  end
  local ok, v = pcall(value)
  if not ok then return nil, tostring(v) end
  return v
end

local function json_encode(v)
  local ty = type(v)
  if v == nil or v == null then return "null" end
  if ty == "boolean" then return tostring(v) end
  if ty == "number" then return math.type(v) == "integer" and tostring(v) or string.format("%.17g", v) end
  if ty == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
  end
  local n, count = #v, 0
  for _ in pairs(v) do count = count + 1 end
  local parts = {}
  if n > 0 and n == count then
    for k = 1, n do parts[#parts + 1] = json_encode(v[k]) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for _, k in ipairs(keys) do parts[#parts + 1] = json_encode(k) .. ":" .. json_encode(v[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

recovery.json.decode = json_decode
recovery.json.encode = json_encode

local k8s = require "recovery.k8s"
local util = require "recovery.util"

local function raises(fn, pattern)
  local ok, err = pcall(fn)
  t.ok(not ok, "expected an error")
  if pattern then t.ok(tostring(err):find(pattern, 1, true), "error '" .. tostring(err) .. "' lacks " .. pattern) end
  return err
end

-- ------------------------------------------------------------- a scripted API

-- mock{ {status=, body=}, ... }: recovery.http answers in order and records
-- the requests; files: path -> content for recovery.read_file.
local function mock(responses, files, opts)
  opts = opts or {}
  local m = { requests = {}, files = files or {}, reads = {}, clock = 1000, sleeps = {} }
  recovery.dry_run = opts.dry_run or false
  recovery.now = function() return m.clock end
  recovery.sleep = function(s) m.sleeps[#m.sleeps + 1] = s; m.clock = m.clock + s end
  recovery.env = function(name)
    if name ~= "KUBERNETES_SERVICE_HOST" and name ~= "KUBERNETES_SERVICE_PORT" then
      error("recovery.env: '" .. name .. "' is not allowed (see --env-allow)")
    end
    return (opts.env or {})[name]
  end
  recovery.read_file = function(path)
    m.reads[#m.reads + 1] = path
    local v = m.files[path]
    if v == nil then return nil, path .. ": No such file or directory" end
    return v
  end
  local n = 0
  recovery.http = function(req)
    m.requests[#m.requests + 1] = req
    if recovery.dry_run and req.method ~= "GET" and req.method ~= "HEAD" then
      return { status = 200, body = "", headers = {}, planned = true }
    end
    n = n + 1
    local r = responses[math.min(n, #responses)]
    if r == nil then error("unscripted request " .. req.method .. " " .. req.url) end
    if type(r) == "function" then r = r(req) end
    if r.transport then return nil, r.transport end
    local body = type(r.body) == "table" and json_encode(r.body) or (r.body or "")
    return { status = r.status or 200, body = body, headers = {},
             json = function(self) return json_decode(self.body) end }
  end
  return m
end

local SA = k8s.SA_DIR
local function fclient(path)
  return k8s.client({ base_url = "http://k8s.test", token_file = path, namespace = "ns1" })
end
local function client(extra)
  return k8s.client(util.merge({ base_url = "http://k8s.test", token = "T", namespace = "ns1" }, extra))
end

local function status(code, reason, message, name, kind)
  return { kind = "Status", apiVersion = "v1", metadata = {}, status = "Failure", message = message,
           reason = reason, details = { name = name, kind = kind }, code = code }
end

-- ------------------------------------------------------------- rollout status tables

local function deploy(gen, spec, st, extra)
  local o = { metadata = { name = "web", generation = gen }, spec = spec, status = st }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

local DEPLOYMENT_CASES = {
  { "spec update not observed", deploy(3, { replicas = 2 }, { observedGeneration = 2, updatedReplicas = 2, replicas = 2, availableReplicas = 2 }),
    false, "Waiting for deployment spec update to be observed...", false },
  { "no status at all", deploy(1, { replicas = 1 }, nil),
    false, "Waiting for deployment spec update to be observed...", false },
  { "progress deadline exceeded", deploy(2, { replicas = 2 }, { observedGeneration = 2, updatedReplicas = 1, replicas = 3, availableReplicas = 2,
      conditions = { { type = "Available", status = "True", reason = "MinimumReplicasAvailable" },
                     { type = "Progressing", status = "False", reason = "ProgressDeadlineExceeded" } } }),
    false, 'deployment "web" exceeded its progress deadline', true },
  { "deadline ignored before observed", deploy(3, { replicas = 2 }, { observedGeneration = 2,
      conditions = { { type = "Progressing", status = "False", reason = "ProgressDeadlineExceeded" } } }),
    false, "Waiting for deployment spec update to be observed...", false },
  { "other Progressing reason is fine", deploy(2, { replicas = 2 }, { observedGeneration = 2, updatedReplicas = 2, replicas = 2, availableReplicas = 2,
      conditions = { { type = "Progressing", status = "True", reason = "NewReplicaSetAvailable" } } }),
    true, 'deployment "web" successfully rolled out', false },
  { "replicas being updated", deploy(2, { replicas = 3 }, { observedGeneration = 2, updatedReplicas = 1, replicas = 4, availableReplicas = 3 }),
    false, 'Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas have been updated...', false },
  { "old replicas terminating", deploy(2, { replicas = 3 }, { observedGeneration = 2, updatedReplicas = 3, replicas = 5, availableReplicas = 3 }),
    false, 'Waiting for deployment "web" rollout to finish: 2 old replicas are pending termination...', false },
  { "updated not available", deploy(2, { replicas = 3 }, { observedGeneration = 2, updatedReplicas = 3, replicas = 3, availableReplicas = 1 }),
    false, 'Waiting for deployment "web" rollout to finish: 1 of 3 updated replicas are available...', false },
  { "rolled out", deploy(2, { replicas = 3 }, { observedGeneration = 2, updatedReplicas = 3, replicas = 3, availableReplicas = 3 }),
    true, 'deployment "web" successfully rolled out', false },
  { "observed ahead", deploy(2, { replicas = 1 }, { observedGeneration = 5, updatedReplicas = 1, replicas = 1, availableReplicas = 1 }),
    true, 'deployment "web" successfully rolled out', false },
  { "spec.replicas absent skips rule 3", deploy(1, {}, { observedGeneration = 1, updatedReplicas = 0, replicas = 0, availableReplicas = 0 }),
    true, 'deployment "web" successfully rolled out', false },
  { "scaled to zero", deploy(4, { replicas = 0 }, { observedGeneration = 4 }),
    true, 'deployment "web" successfully rolled out', false },
}

local function sts(gen, spec, st)
  return { metadata = { name = "db", generation = gen }, spec = spec, status = st }
end
local RU = { type = "RollingUpdate", rollingUpdate = { partition = 0 } }
local STATEFULSET_CASES = {
  { "OnDelete refused", sts(1, { replicas = 3, updateStrategy = { type = "OnDelete" } }, { observedGeneration = 1 }),
    false, "rollout status is only available for RollingUpdate strategy type", true },
  { "observedGeneration 0", sts(0, { replicas = 3, updateStrategy = RU }, { observedGeneration = 0, readyReplicas = 3, updatedReplicas = 3 }),
    false, "Waiting for statefulset spec update to be observed...", false },
  { "generation ahead", sts(5, { replicas = 3, updateStrategy = RU }, { observedGeneration = 4, readyReplicas = 3, updatedReplicas = 3 }),
    false, "Waiting for statefulset spec update to be observed...", false },
  { "pods not ready", sts(2, { replicas = 3, updateStrategy = RU }, { observedGeneration = 2, readyReplicas = 1, updatedReplicas = 3 }),
    false, "Waiting for 2 pods to be ready...", false },
  { "partition 0 waiting", sts(2, { replicas = 3, updateStrategy = RU }, { observedGeneration = 2, readyReplicas = 3, updatedReplicas = 1 }),
    false, "Waiting for partitioned roll out to finish: 1 out of 3 new pods have been updated...", false },
  { "partition 0 done", sts(2, { replicas = 3, updateStrategy = RU }, { observedGeneration = 2, readyReplicas = 3, updatedReplicas = 3,
      updateRevision = "db-2", currentRevision = "db-1" }),
    true, "partitioned roll out complete: 3 new pods have been updated...", false },
  { "partition 2 done", sts(2, { replicas = 3, updateStrategy = { type = "RollingUpdate", rollingUpdate = { partition = 2 } } },
      { observedGeneration = 2, readyReplicas = 3, updatedReplicas = 1 }),
    true, "partitioned roll out complete: 1 new pods have been updated...", false },
  { "partition 1 waiting", sts(2, { replicas = 3, updateStrategy = { type = "RollingUpdate", rollingUpdate = { partition = 1 } } },
      { observedGeneration = 2, readyReplicas = 3, updatedReplicas = 1 }),
    false, "Waiting for partitioned roll out to finish: 1 out of 2 new pods have been updated...", false },
  { "rollingUpdate without partition is done", sts(2, { replicas = 3, updateStrategy = { type = "RollingUpdate", rollingUpdate = {} } },
      { observedGeneration = 2, readyReplicas = 3, updatedReplicas = 0 }),
    true, "partitioned roll out complete: 0 new pods have been updated...", false },
  { "revisions differ", sts(2, { replicas = 3, updateStrategy = { type = "RollingUpdate" } },
      { observedGeneration = 2, readyReplicas = 3, updatedReplicas = 2, updateRevision = "db-2", currentRevision = "db-1" }),
    false, "waiting for statefulset rolling update to complete 2 pods at revision db-2...", false },
  { "revisions equal", sts(2, { replicas = 3, updateStrategy = { type = "RollingUpdate" } },
      { observedGeneration = 2, readyReplicas = 3, currentReplicas = 3, updatedReplicas = 3, updateRevision = "db-2", currentRevision = "db-2" }),
    true, "statefulset rolling update complete 3 pods at revision db-2...", false },
  { "missing strategy type counts as RollingUpdate", sts(2, { replicas = 1 },
      { observedGeneration = 2, readyReplicas = 1, currentReplicas = 1, updateRevision = "r", currentRevision = "r" }),
    true, "statefulset rolling update complete 1 pods at revision r...", false },
}

local function ds(gen, spec, st)
  return { metadata = { name = "agent", generation = gen }, spec = spec, status = st }
end
local DRU = { updateStrategy = { type = "RollingUpdate" } }
local DAEMONSET_CASES = {
  { "OnDelete refused", ds(1, { updateStrategy = { type = "OnDelete" } }, { observedGeneration = 1 }),
    false, "rollout status is only available for RollingUpdate strategy type", true },
  { "not observed", ds(3, DRU, { observedGeneration = 2, desiredNumberScheduled = 2, updatedNumberScheduled = 2, numberAvailable = 2 }),
    false, "Waiting for daemon set spec update to be observed...", false },
  { "pods being updated", ds(3, DRU, { observedGeneration = 3, desiredNumberScheduled = 4, updatedNumberScheduled = 1, numberAvailable = 4 }),
    false, 'Waiting for daemon set "agent" rollout to finish: 1 out of 4 new pods have been updated...', false },
  { "updated not available", ds(3, DRU, { observedGeneration = 3, desiredNumberScheduled = 4, updatedNumberScheduled = 4, numberAvailable = 3 }),
    false, 'Waiting for daemon set "agent" rollout to finish: 3 of 4 updated pods are available...', false },
  { "rolled out", ds(3, DRU, { observedGeneration = 3, desiredNumberScheduled = 4, updatedNumberScheduled = 4, numberAvailable = 4 }),
    true, 'daemon set "agent" successfully rolled out', false },
  { "no nodes", ds(1, DRU, { observedGeneration = 1, desiredNumberScheduled = 0 }),
    true, 'daemon set "agent" successfully rolled out', false },
}

local function check_cases(kind, cases)
  for _, c in ipairs(cases) do
    local done, msg, failed = k8s.rollout_status(kind, c[2])
    t.eq(done, c[3], kind .. " '" .. c[1] .. "' done")
    t.eq(msg, c[4], kind .. " '" .. c[1] .. "' message")
    t.eq(failed, c[5], kind .. " '" .. c[1] .. "' failed")
  end
end

-- ------------------------------------------------------------- tests

t.run{
  rollout_status_deployment = function() check_cases("deployment", DEPLOYMENT_CASES) end,
  rollout_status_statefulset = function() check_cases("statefulset", STATEFULSET_CASES) end,
  rollout_status_daemonset = function() check_cases("daemonset", DAEMONSET_CASES) end,

  rollout_status_kind_aliases = function()
    local o = DEPLOYMENT_CASES[9][2]
    for _, k in ipairs({ "Deployment", "deployments", "deploy" }) do
      t.eq(k8s.rollout_status(k, o), true, k)
    end
    t.eq(k8s.rollout_status("sts", STATEFULSET_CASES[11][2]), true)
    t.eq(k8s.rollout_status("DaemonSets", DAEMONSET_CASES[5][2]), true)
  end,

  rollout_status_misuse = function()
    raises(function() k8s.rollout_status("pod", {}) end, "no rollout status for kind 'pod'")
    raises(function() k8s.rollout_status("widget", {}) end, "unknown kind 'widget'")
    raises(function() k8s.rollout_status("deployment", nil) end, "expected an object")
  end,

  resource_paths = function()
    t.eq(k8s.path("pod", "ns1"), "/api/v1/namespaces/ns1/pods")
    t.eq(k8s.path("pods", "ns1", "p-0"), "/api/v1/namespaces/ns1/pods/p-0")
    t.eq(k8s.path("deployment", "ns1", "web"), "/apis/apps/v1/namespaces/ns1/deployments/web")
    t.eq(k8s.path("statefulset", "a", "b", "scale"), "/apis/apps/v1/namespaces/a/statefulsets/b/scale")
    t.eq(k8s.path("DaemonSet", "a", "b"), "/apis/apps/v1/namespaces/a/daemonsets/b")
    t.eq(k8s.path("job", "a"), "/apis/batch/v1/namespaces/a/jobs")
    t.eq(k8s.path("cj", "a", "nightly"), "/apis/batch/v1/namespaces/a/cronjobs/nightly")
    t.eq(k8s.path("rs", "a", "x"), "/apis/apps/v1/namespaces/a/replicasets/x")
    t.eq(k8s.path("pod", "a b", "x/y"), "/api/v1/namespaces/a%20b/pods/x%2Fy")
    t.eq(k8s.resource("Deployment").kind, "Deployment")
  end,

  status_error_status_body = function()
    local body = '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
      .. '"message":"pods \\"kong-0\\" not found","reason":"NotFound","details":{"name":"kong-0","kind":"pods"},"code":404}'
    local e = k8s.status_error(404, body)
    t.eq(e.code, 404); t.eq(e.reason, "NotFound"); t.eq(e.message, 'pods "kong-0" not found')
    t.eq(e.status.details.name, "kong-0"); t.eq(e.status.kind, "Status")
    t.eq(tostring(e), 'NotFound (404): pods "kong-0" not found')
    t.ok(k8s.is_error(e))
  end,

  status_error_decoded_table = function()
    local e = k8s.status_error(409, status(409, "AlreadyExists", 'jobs.batch "x" already exists', "x", "jobs"))
    t.eq(tostring(e), 'AlreadyExists (409): jobs.batch "x" already exists')
    local c = k8s.status_error(409, status(409, "Conflict", "Operation cannot be fulfilled", "x", "pods"))
    t.eq(c.reason, "Conflict")
    local f = k8s.status_error(403, status(403, "Forbidden", "pods is forbidden", nil, "pods"))
    t.eq(tostring(f), "Forbidden (403): pods is forbidden")
  end,

  status_error_status_missing_fields = function()
    local e = k8s.status_error(422, { kind = "Status", status = "Failure" })
    t.eq(e.reason, "Invalid"); t.eq(e.message, "the server rejected our request due to an error in our request")
    t.ok(e.status ~= nil)
  end,

  status_error_non_json = function()
    local e = k8s.status_error(502, "<html>Bad Gateway</html>\n")
    t.eq(e.code, 502); t.eq(e.reason, "InternalError"); t.eq(e.message, "<html>Bad Gateway</html>"); t.eq(e.status, nil)
    t.eq(tostring(e), "InternalError (502): <html>Bad Gateway</html>")
    local long = k8s.status_error(404, string.rep("x", 2000))
    t.eq(long.reason, "NotFound"); t.eq(#long.message, 515)
    local other = k8s.status_error(400, '{"error":"nope"}')
    t.eq(other.reason, "BadRequest"); t.eq(other.message, '{"error":"nope"}')
    t.eq(k8s.status_error(418, "teapot").reason, "Unknown")
  end,

  status_error_empty = function()
    local cases = {
      { 401, "Unauthorized", "the server has asked for the client to provide credentials" },
      { 403, "Forbidden", "the server does not allow access to the requested resource" },
      { 404, "NotFound", "the server could not find the requested resource" },
      { 409, "Conflict", "the server reported a conflict" },
      { 429, "TooManyRequests", "the server has received too many requests and has asked us to try again later" },
      { 503, "ServiceUnavailable", "the server is currently unable to handle the request" },
      { 500, "InternalError", "an error on the server has prevented the request from succeeding" },
      { 599, "InternalError", "the server responded with HTTP status 599" },
    }
    for _, c in ipairs(cases) do
      local e = k8s.status_error(c[1], "")
      t.eq(e.code, c[1]); t.eq(e.reason, c[2], "reason " .. c[1]); t.eq(e.message, c[3], "message " .. c[1])
      t.eq(e.status, nil)
    end
    t.eq(k8s.status_error(404, nil).reason, "NotFound")
    t.eq(k8s.status_error(404, "  \n").message, "the server could not find the requested resource")
  end,

  manual_job_name = function()
    t.eq(k8s.manual_job_name("nightly-sync", 1740823500), "nightly-sync-manual-1740823500")
    local long = string.rep("a", 40) .. "-" .. string.rep("b", 30)
    local n = k8s.manual_job_name(long, 1740823500)
    t.eq(#n, 63); t.ok(util.dns1123(n), n); t.eq(n:sub(-18), "-manual-1740823500")
    t.eq(n, string.rep("a", 40) .. "-bbbb-manual-1740823500")
    local dash = k8s.manual_job_name(string.rep("c", 44) .. "-" .. string.rep("d", 20), 1740823500)
    t.ok(util.dns1123(dash), dash)
    t.eq(#k8s.manual_job_name(string.rep("x", 63), 1740823500.7), 63)
  end,

  job_manifest = function()
    local cj = {
      metadata = { name = "nightly-sync", namespace = "ops", uid = "cj-uid-1", labels = { team = "a" } },
      spec = { schedule = "0 3 * * *", jobTemplate = {
        metadata = { labels = { app = "sync" }, annotations = { note = "x", ["cronjob.kubernetes.io/instantiate"] = "tmpl" } },
        spec = { backoffLimit = 2, template = { spec = { restartPolicy = "Never", containers = { { name = "c", image = "busybox" } } } } },
      } },
    }
    local job = k8s.job_manifest(cj, "nightly-sync-manual-1")
    t.eq(job.apiVersion, "batch/v1"); t.eq(job.kind, "Job")
    t.eq(job.metadata.name, "nightly-sync-manual-1")
    t.eq(job.metadata.labels.app, "sync"); t.eq(job.metadata.labels.team, nil, "cronjob's own labels are not copied")
    t.eq(job.metadata.annotations.note, "x")
    t.eq(job.metadata.annotations["cronjob.kubernetes.io/instantiate"], "tmpl", "template annotations win, as kubectl")
    local ref = job.metadata.ownerReferences[1]
    t.eq(#job.metadata.ownerReferences, 1)
    t.eq(ref.apiVersion, "batch/v1"); t.eq(ref.kind, "CronJob"); t.eq(ref.name, "nightly-sync")
    t.eq(ref.uid, "cj-uid-1"); t.eq(ref.controller, true); t.eq(ref.blockOwnerDeletion, nil)
    t.ok(job.spec == cj.spec.jobTemplate.spec)
    t.eq(job.metadata.namespace, nil)

    local bare = k8s.job_manifest({ metadata = { name = "c", uid = "u" }, spec = { jobTemplate = { spec = { x = 1 } } } }, "c-1")
    t.eq(bare.metadata.annotations["cronjob.kubernetes.io/instantiate"], "manual")
    t.eq(bare.metadata.labels, nil)
  end,

  json_raw = function()
    local s = '{"kind":"CronJob","metadata":{"name":"a","annotations":{"x":"}\\"{"}},'
      .. ' "spec" : {"schedule":"* * * * *","jobTemplate":{"metadata":{},"spec":{"template":{"spec":{"containers":[{"args":[],"name":"c"}]}},"n":[1,2,{"a":[]}]}},"suspend":false}}'
    t.eq(k8s.json_raw(s, { "spec", "jobTemplate", "spec" }),
         '{"template":{"spec":{"containers":[{"args":[],"name":"c"}]}},"n":[1,2,{"a":[]}]}')
    t.eq(k8s.json_raw(s, { "kind" }), '"CronJob"')
    t.eq(k8s.json_raw(s, { "spec", "suspend" }), "false")
    t.eq(k8s.json_raw(s, { "metadata", "annotations" }), '{"x":"}\\"{"}')
    t.eq(k8s.json_raw(s, { "spec", "jobTemplate", "metadata" }), "{}")
    t.eq(k8s.json_raw(s, { "spec", "missing" }), nil)
    t.eq(k8s.json_raw(s, { "kind", "x" }), nil)
    t.eq(k8s.json_raw('{"a":', { "a" }), nil)
    t.eq(k8s.json_raw('{"a":[1,2', { "a" }), nil)
    t.eq(k8s.json_raw("", { "a" }), nil)
    t.eq(k8s.json_raw(nil, { "a" }), nil)
    t.eq(k8s.json_raw('{"a":12}', { "a" }), "12")
  end,

  -- ------------------------------------------------------------ the client, scripted

  client_in_cluster_defaults = function()
    local m = mock({ { body = { kind = "Pod" } } },
                   { [SA .. "/token"] = "tok-1\n", [SA .. "/namespace"] = "ops\n" },
                   { env = { KUBERNETES_SERVICE_HOST = "10.0.0.1", KUBERNETES_SERVICE_PORT = "443" } })
    local c = k8s.client()
    t.eq(c.base_url, "https://10.0.0.1:443"); t.eq(c.namespace, "ops"); t.eq(c.ca_file, SA .. "/ca.crt")
    t.eq(c.timeout, 15)
    t.ok(c:get("pod", "p"))
    local r = m.requests[1]
    t.eq(r.url, "https://10.0.0.1:443/api/v1/namespaces/ops/pods/p"); t.eq(r.method, "GET")
    t.eq(r.headers.Authorization, "Bearer tok-1"); t.eq(r.headers.Accept, "application/json")
    t.eq(r.ca_file, SA .. "/ca.crt"); t.eq(r.timeout, 15); t.eq(r.body, nil)
  end,

  client_ipv6_and_not_in_cluster = function()
    mock({}, {}, { env = { KUBERNETES_SERVICE_HOST = "fd00::1", KUBERNETES_SERVICE_PORT = "6443" } })
    local c = k8s.client()
    t.eq(c.base_url, "https://[fd00::1]:6443"); t.eq(c.namespace, "default")
    mock({}, {}, { env = {} })
    raises(function() k8s.client() end, "not in cluster")
    mock({}, {}, { env = { KUBERNETES_SERVICE_HOST = "h" } })
    raises(function() k8s.client() end, "not in cluster")
    local o = k8s.client({ base_url = "http://x:1/", namespace = "n", timeout = 3 })
    t.eq(o.base_url, "http://x:1"); t.eq(o.ca_file, nil); t.eq(o.timeout, 3)
    local p = k8s.client({ base_url = "https://x", ca = "PEM" })
    t.eq(p.ca, "PEM"); t.eq(p.ca_file, nil)
  end,

  client_token_reread_after_401 = function()
    local m = mock({ { status = 200, body = {} },
                     { status = 401, body = status(401, "Unauthorized", "Unauthorized") },
                     { status = 200, body = { ok = 1 } } },
                   { ["/sa/token"] = "old\n" })
    local c = fclient("/sa/token")
    t.ok(c:get("pod", "a"))
    m.files["/sa/token"] = "new\n"
    local v = c:get("pod", "b")
    t.eq(v.ok, 1)
    t.eq(#m.requests, 3)
    t.eq(m.requests[2].headers.Authorization, "Bearer old")
    t.eq(m.requests[3].headers.Authorization, "Bearer new")
    t.eq(m.requests[3].url, m.requests[2].url)
  end,

  client_token_401_twice = function()
    local m = mock({ { status = 401, body = status(401, "Unauthorized", "Unauthorized") } }, { ["/sa/token"] = "t" })
    local c = fclient("/sa/token")
    local v, err = c:get("pod", "a")
    t.eq(v, nil); t.eq(err.code, 401); t.eq(err.reason, "Unauthorized"); t.eq(#m.requests, 2, "retried once only")
  end,

  client_token_max_age = function()
    local m = mock({ { body = {} } }, { ["/sa/token"] = "one" })
    local c = fclient("/sa/token")
    c:get("pod", "a")
    m.files["/sa/token"] = "two"
    m.clock = m.clock + 59
    c:get("pod", "a")
    t.eq(m.requests[2].headers.Authorization, "Bearer one", "cached under 60 s")
    m.clock = m.clock + 1
    c:get("pod", "a")
    t.eq(m.requests[3].headers.Authorization, "Bearer two", "re-read after 60 s")
  end,

  client_token_file_missing = function()
    mock({ { body = {} } }, {})
    local c = fclient("/sa/nope")
    local v, err = c:get("pod", "a")
    t.eq(v, nil); t.eq(err.reason, "Config"); t.ok(err.message:find("No such file", 1, true))
  end,

  client_fixed_token_no_retry = function()
    local m = mock({ { status = 401, body = "" } })
    local v, err = client():get("pod", "a")
    t.eq(v, nil); t.eq(err.code, 401); t.eq(#m.requests, 1)
    t.eq(m.requests[1].headers.Authorization, "Bearer T")
  end,

  client_transport_and_bad_json = function()
    mock({ { transport = "Couldn't connect to server" } })
    local v, err = client():get("pod", "a")
    t.eq(v, nil); t.eq(err.code, 0); t.eq(err.reason, "Transport")
    t.eq(tostring(err), "Transport (0): Couldn't connect to server")
    mock({ { status = 200, body = "not json" } })
    v, err = client():get("pod", "a")
    t.eq(v, nil); t.eq(err.reason, "InvalidResponse")
    mock({ { status = 200, body = "" } })
    v = client():request("DELETE", "/x")
    t.eq(next(v), nil, "an empty 2xx body is {}")
  end,

  client_request_query_and_body = function()
    local m = mock({ { body = {} } })
    client():request("post", "/apis/x", { body = { a = 1 }, query = { b = "x y", a = "1" } })
    local r = m.requests[1]
    t.eq(r.method, "POST"); t.eq(r.url, "http://k8s.test/apis/x?a=1&b=x%20y")
    t.eq(r.body, '{"a":1}'); t.eq(r.headers["Content-Type"], "application/json")
    client():request("PATCH", "/p?x=1", { body = "raw", content_type = "application/merge-patch+json", query = { y = 2 } })
    t.eq(m.requests[2].url, "http://k8s.test/p?x=1&y=2"); t.eq(m.requests[2].body, "raw")
    t.eq(m.requests[2].headers["Content-Type"], "application/merge-patch+json")
  end,

  list_pods_paginates = function()
    local m = mock({ { body = { metadata = { continue = "c1" }, items = { { metadata = { name = "a" } }, { metadata = { name = "b" } } } } },
                     { body = { metadata = { continue = "" }, items = { { metadata = { name = "c" } } } } } })
    local items = client():list_pods("app=web,tier!=canary")
    t.eq(#items, 3); t.eq(items[3].metadata.name, "c")
    t.eq(m.requests[1].url, "http://k8s.test/api/v1/namespaces/ns1/pods?labelSelector=app%3Dweb%2Ctier%21%3Dcanary&limit=500")
    t.eq(m.requests[2].url, "http://k8s.test/api/v1/namespaces/ns1/pods?continue=c1&labelSelector=app%3Dweb%2Ctier%21%3Dcanary&limit=500")
    mock({ { status = 410, body = status(410, "Expired", "too old") } })
    local v, err = client():list_pods("", "other")
    t.eq(v, nil); t.eq(err.reason, "Expired")
  end,

  delete_pods = function()
    local pods = { items = {
      { metadata = { name = "a", uid = "ua" } }, { metadata = { name = "b", uid = "ub" } },
      { metadata = { name = "c", uid = "uc" } } }, metadata = {} }
    local m = mock({ { body = pods }, { body = {} },
                     { status = 404, body = status(404, "NotFound", 'pods "b" not found', "b", "pods") },
                     { status = 409, body = status(409, "Conflict", "Precondition failed", "c", "pods") } })
    local names, info = client():delete_pods("app=web", { grace = 5 })
    t.eq(#names, 2); t.eq(names[1], "a"); t.eq(names[2], "b")
    t.eq(info.replaced[1], "c"); t.eq(info.planned, false)
    local d = m.requests[2]
    t.eq(d.method, "DELETE"); t.eq(d.url, "http://k8s.test/api/v1/namespaces/ns1/pods/a")
    local body = json_decode(d.body)
    t.eq(body.kind, "DeleteOptions"); t.eq(body.apiVersion, "v1"); t.eq(body.propagationPolicy, "Background")
    t.eq(body.preconditions.uid, "ua"); t.eq(body.gracePeriodSeconds, 5)
    local m2 = mock({ { body = pods }, { body = {} } })
    client():delete_pods("app=web")
    t.eq(json_decode(m2.requests[2].body).gracePeriodSeconds, nil, "no grace: the pod's own")
    mock({ { body = pods }, { status = 403, body = status(403, "Forbidden", "nope", "a", "pods") } })
    local v, err, done = client():delete_pods("app=web")
    t.eq(v, nil); t.eq(err.code, 403); t.eq(#done, 0)
    raises(function() client():delete_pods("") end, "selector is required")
  end,

  delete_pods_dry_run = function()
    local m = mock({ { body = { items = { { metadata = { name = "a", uid = "ua" } } } } } }, nil, { dry_run = true })
    local names, info = client():delete_pods("app=web")
    t.eq(names[1], "a"); t.eq(info.planned, true); t.eq(#m.requests, 2)
  end,

  rollout_restart_patch = function()
    local m = mock({ { body = { metadata = { name = "web" }, spec = { template = {} } } }, { body = { metadata = { name = "web" } } } })
    m.clock = 1740823500
    local ok, obj = client():rollout_restart("deployment", "web")
    t.eq(ok, true); t.eq(obj.metadata.name, "web")
    local p = m.requests[2]
    t.eq(p.method, "PATCH")
    t.eq(p.url, "http://k8s.test/apis/apps/v1/namespaces/ns1/deployments/web?fieldManager=kubectl-rollout")
    t.eq(p.headers["Content-Type"], "application/strategic-merge-patch+json")
    t.eq(p.body, '{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2025-03-01T10:05:00Z"}}}}}')
  end,

  rollout_restart_fresh_timestamp = function()
    local obj = { metadata = { name = "db" }, spec = { template = { metadata = { annotations = {
      ["kubectl.kubernetes.io/restartedAt"] = "2025-03-01T10:05:00Z" } } } } }
    local m = mock({ { body = obj }, { body = obj } })
    m.clock = 1740823500.2
    t.eq(client():rollout_restart("statefulset", "db", "other"), true)
    t.eq(#m.sleeps, 1)
    t.ok(m.requests[2].body:find("2025-03-01T10:05:01Z", 1, true), m.requests[2].body)
    t.ok(m.requests[2].url:find("/statefulsets/db?", 1, true))
  end,

  rollout_restart_paused_and_errors = function()
    local m = mock({ { body = { metadata = { name = "web" }, spec = { paused = true } } } })
    local ok, err = client():rollout_restart("deployment", "web")
    t.eq(ok, nil); t.eq(err.reason, "Paused")
    t.eq(err.message, 'deployments.apps "web" can\'t restart paused deployment (run rollout resume first)')
    t.eq(#m.requests, 1, "no PATCH")
    mock({ { status = 404, body = status(404, "NotFound", 'deployments.apps "x" not found', "x", "deployments") } })
    ok, err = client():rollout_restart("deployment", "x")
    t.eq(ok, nil); t.eq(tostring(err), 'NotFound (404): deployments.apps "x" not found')
    raises(function() client():rollout_restart("pod", "x") end, "cannot restart")
  end,

  rollout_restart_dry_run = function()
    local m = mock({ { body = { metadata = { name = "web" }, spec = {} } } }, nil, { dry_run = true })
    local ok, info = client():rollout_restart("daemonset", "web")
    t.eq(ok, true); t.eq(info.planned, true); t.eq(#m.requests, 2)
  end,

  wait_rollout_progresses = function()
    local function d(obs, upd) return { body = { metadata = { name = "web", generation = 2 }, spec = { replicas = 2 },
      status = { observedGeneration = obs, updatedReplicas = upd, replicas = 2, availableReplicas = 2 } } } end
    local m = mock({ d(1, 2), d(2, 1), d(2, 2) })
    local ok, msg = client():wait_rollout("deployment", "web", { timeout = 30, interval = 1 })
    t.eq(ok, true); t.eq(msg, 'deployment "web" successfully rolled out'); t.eq(#m.requests, 3); t.eq(#m.sleeps, 2)
  end,

  wait_rollout_fails_fast = function()
    local m = mock({ { body = { metadata = { name = "web", generation = 2 }, spec = { replicas = 2 },
      status = { observedGeneration = 2, conditions = { { type = "Progressing", reason = "ProgressDeadlineExceeded" } } } } } })
    local ok, err = client():wait_rollout("deployment", "web", { timeout = 30, interval = 1 })
    t.eq(ok, nil); t.eq(err.reason, "ProgressDeadlineExceeded")
    t.eq(tostring(err), 'ProgressDeadlineExceeded (0): deployment "web" exceeded its progress deadline')
    t.eq(#m.requests, 1)
    mock({ { body = { metadata = { name = "s" }, spec = { updateStrategy = { type = "OnDelete" } } } } })
    ok, err = client():wait_rollout("statefulset", "s")
    t.eq(ok, nil); t.eq(err.reason, "RolloutError")
    mock({ { status = 404, body = "" } })
    ok, err = client():wait_rollout("daemonset", "s")
    t.eq(ok, nil); t.eq(err.code, 404)
  end,

  wait_rollout_timeout = function()
    local m = mock({ { status = 503, body = "" }, { body = { metadata = { name = "web", generation = 2 }, status = { observedGeneration = 1 } } } })
    local ok, err = client():wait_rollout("deployment", "web", { timeout = 4, interval = 2 })
    t.eq(ok, nil); t.eq(err.reason, "Timeout")
    t.eq(err.message, "timed out after 4s: Waiting for deployment spec update to be observed...")
    t.eq(#m.requests, 3)
  end,

  wait_rollout_dry_run = function()
    local m = mock({}, nil, { dry_run = true })
    local ok, note = client():wait_rollout("deployment", "web")
    t.eq(ok, true); t.ok(note:find("^planned"), note); t.eq(#m.requests, 0)
  end,

  job_from_cronjob_builds_job = function()
    local cj_body = '{"kind":"CronJob","apiVersion":"batch/v1","metadata":{"name":"nightly","uid":"cj-1"},'
      .. '"spec":{"schedule":"0 3 * * *","jobTemplate":{"metadata":{"labels":{"app":"n"}},'
      .. '"spec":{"template":{"spec":{"containers":[{"name":"c","image":"i","args":[]}],"restartPolicy":"Never"}}}}}}'
    local m = mock({ { body = cj_body }, { status = 201, body = { metadata = { name = "x" } } } })
    m.clock = 1740823500
    local name, obj = client():job_from_cronjob("nightly")
    t.eq(name, "nightly-manual-1740823500"); t.eq(obj.metadata.name, "x")
    t.eq(m.requests[1].url, "http://k8s.test/apis/batch/v1/namespaces/ns1/cronjobs/nightly")
    local p = m.requests[2]
    t.eq(p.method, "POST"); t.eq(p.url, "http://k8s.test/apis/batch/v1/namespaces/ns1/jobs")
    t.eq(p.headers["Content-Type"], "application/json")
    local want = '"spec":{"template":{"spec":{"containers":[{"name":"c","image":"i","args":[]}],"restartPolicy":"Never"}}}}'
    t.eq(p.body:sub(-#want), want, "spec copied byte for byte")
    local job = json_decode(p.body)
    t.eq(job.kind, "Job"); t.eq(job.apiVersion, "batch/v1"); t.eq(job.metadata.name, name)
    t.eq(job.metadata.labels.app, "n")
    t.eq(job.metadata.annotations["cronjob.kubernetes.io/instantiate"], "manual")
    t.eq(job.metadata.ownerReferences[1].uid, "cj-1"); t.eq(job.metadata.ownerReferences[1].controller, true)
  end,

  job_from_cronjob_conflicts = function()
    local cj = { body = { metadata = { name = "nightly", uid = "u" }, spec = { jobTemplate = { spec = {} } } } }
    local exists = { status = 409, body = status(409, "AlreadyExists", 'jobs.batch "n" already exists', "n", "jobs") }
    local m = mock({ cj, exists, { status = 201, body = {} } })
    local name = client():job_from_cronjob("nightly")
    t.ok(name:find("^nightly%-manual%-%d+%-%x%x%x%x$"), name); t.eq(#m.requests, 3)
    mock({ cj, exists })
    local v, err = client():job_from_cronjob("nightly", { name = "fixed" })
    t.eq(v, nil); t.eq(err.reason, "AlreadyExists"); t.eq(err.code, 409)
    raises(function() client():job_from_cronjob("nightly", { name = "Bad_Name" }) end, "invalid job name")
  end,

  job_from_cronjob_dry_run = function()
    local m = mock({ { body = { metadata = { name = "nightly", uid = "u" }, spec = { jobTemplate = { spec = {} } } } } },
                   nil, { dry_run = true })
    local name, info = client():job_from_cronjob("nightly", { name = "n1" })
    t.eq(name, "n1"); t.eq(info.planned, true); t.eq(#m.requests, 2)
  end,

  wait_job = function()
    local function j(conds) return { body = { status = { conditions = conds, active = 1 } } } end
    local m = mock({ j(nil), j({ { type = "Complete", status = "True" } }) })
    local ok, msg = client():wait_job("n1", { interval = 1, timeout = 10 })
    t.eq(ok, true); t.ok(msg:find("completed"), msg); t.eq(#m.requests, 2)
    mock({ j({ { type = "Failed", status = "True", reason = "BackoffLimitExceeded", message = "Job has reached the specified backoff limit" } }) })
    local v, err = client():wait_job("n1")
    t.eq(v, nil); t.eq(err.reason, "JobFailed")
    t.eq(err.message, "job n1 failed: BackoffLimitExceeded: Job has reached the specified backoff limit")
    mock({ j({ { type = "Complete", status = "False" } }) })
    v, err = client():wait_job("n1", { timeout = 2, interval = 1 })
    t.eq(v, nil); t.eq(err.reason, "Timeout")
    local m3 = mock({}, nil, { dry_run = true })
    t.eq(client():wait_job("n1"), true); t.eq(#m3.requests, 0)
  end,

  unknown_option_keys = function()
    -- {namespace = ns} silently used the client's namespace: the key is ns
    local m = mock({})
    local c = client()
    local msg = t.permanent(function() c:wait_rollout("deployment", "web", { namespace = "prod" }) end,
                            'wait_rollout: unknown option "namespace" (allowed: ns, timeout, interval)')
    t.ok(msg:find("test_k8s%.lua:%d+: wait_rollout: "), "blames the caller: " .. msg)
    t.permanent(function() c:wait_job("j", { namespace = "prod" }) end,
                'wait_job: unknown option "namespace" (allowed: ns, timeout, interval)')
    t.permanent(function() c:delete_pods("app=x", { namespace = "prod" }) end,
                'delete_pods: unknown option "namespace" (allowed: ns, grace)')
    t.permanent(function() c:job_from_cronjob("cj", { namespace = "prod" }) end,
                'job_from_cronjob: unknown option "namespace" (allowed: name, ns)')
    t.permanent(function() c:request("GET", "/api/v1/pods", { params = { limit = 1 } }) end,
                'request: unknown option "params" (allowed: body, content_type, query, timeout)')
    t.permanent(function() k8s.client({ base_url = "http://k8s.test", ns = "prod" }) end,
                'k8s.client: unknown option "ns" (allowed: base_url, token_file, token, ca_file, ca, namespace, ' ..
                'timeout, page_size)')
    t.eq(#m.requests, 0, "nothing was sent")
    mock({}, nil, { dry_run = true })
    t.permanent(function() c:wait_rollout("deployment", "web", { namespace = "prod" }) end, "unknown option")
  end,

  scale = function()
    local m = mock({ { body = { kind = "Scale", spec = { replicas = 5 } } } })
    local s = client():scale("deployment", "web", 5)
    t.eq(s.spec.replicas, 5)
    local r = m.requests[1]
    t.eq(r.method, "PATCH"); t.eq(r.url, "http://k8s.test/apis/apps/v1/namespaces/ns1/deployments/web/scale")
    t.eq(r.headers["Content-Type"], "application/merge-patch+json"); t.eq(r.body, '{"spec":{"replicas":5}}')
    raises(function() client():scale("deployment", "web", 1.5) end, "integer")
    raises(function() client():scale("deployment", "web", -1) end, ">= 0")
    mock({}, nil, { dry_run = true })
    t.eq(client():scale("statefulset", "db", 0).planned, true)
  end,
}

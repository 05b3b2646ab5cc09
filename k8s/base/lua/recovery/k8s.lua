-- recovery.k8s: a small Kubernetes REST client for playbooks.
--
--   local k8s = require "recovery.k8s"
--   local c = k8s.client()                        -- in-cluster (service account)
--   local ok, err = c:rollout_restart("deployment", "kong")
--   if not ok then error(tostring(err)) end
--   ok, err = c:wait_rollout("deployment", "kong", { timeout = 120 })
--
-- Client options (k8s.client(opts)):
--   base_url    default "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"
--               (read with recovery.env; IPv6 literals bracketed); raises "not in
--               cluster" when neither is available
--   token_file  default <sa>/token, read with recovery.read_file, re-read when
--               older than 60 s and right after a 401 (the request is then
--               retried once)
--   token       a fixed bearer token instead (e.g. recovery.secret("k8s-token"))
--   ca_file     default <sa>/ca.crt when base_url is the in-cluster default
--   ca          a PEM string instead of ca_file
--   namespace   default: the content of <sa>/namespace, else "default"
--   timeout     seconds per request, default 15
--   page_size   the limit of each page of a pod list, default 500
-- where <sa> = /var/run/secrets/kubernetes.io/serviceaccount.
--
-- An options table with a key not listed for it raises a permanent error
-- (util.check_opts): the job fails without retries.
--
-- Errors: every failing call returns nil, err with err a table
--   { code = <HTTP status, 0 when there is none>, reason = "NotFound",
--     message = "...", status = <the decoded Status object or nil> }
-- whose tostring is "NotFound (404): <message>". Reasons without an HTTP
-- status: Transport (no response), InvalidResponse (a 2xx that is not JSON),
-- Config (token file unreadable), Paused, ProgressDeadlineExceeded,
-- RolloutError, JobFailed, Timeout.
--
-- Dry-run: writes are not sent (recovery.http answers them as "planned").
-- Calls then return success with a {planned = true} table, and waits return
-- at once with true, "planned: ...".
--
-- Pure functions (no I/O): k8s.status_error, k8s.rollout_status,
-- k8s.resource, k8s.manual_job_name, k8s.job_manifest, k8s.json_raw.
local recovery = require "recovery"
local util = require "recovery.util"

local M = {}

local SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
M.SA_DIR = SA_DIR
M.TOKEN_MAX_AGE = 60

-- ------------------------------------------------------------------ resources

local RESOURCES = {
  deployment  = { group = "apps",  version = "v1", plural = "deployments",  kind = "Deployment" },
  statefulset = { group = "apps",  version = "v1", plural = "statefulsets", kind = "StatefulSet" },
  daemonset   = { group = "apps",  version = "v1", plural = "daemonsets",   kind = "DaemonSet" },
  replicaset  = { group = "apps",  version = "v1", plural = "replicasets",  kind = "ReplicaSet" },
  pod         = { group = "",      version = "v1", plural = "pods",         kind = "Pod" },
  job         = { group = "batch", version = "v1", plural = "jobs",         kind = "Job" },
  cronjob     = { group = "batch", version = "v1", plural = "cronjobs",     kind = "CronJob" },
}
local ALIASES = { deploy = "deployment", sts = "statefulset", ds = "daemonset", rs = "replicaset",
                  po = "pod", cj = "cronjob" }

-- k8s.resource(kind) -> {group, version, plural, kind, name}. kind is a
-- singular, plural or short name, any case ("Deployment", "deployments",
-- "deploy"). An unknown kind raises.
function M.resource(kind)
  if type(kind) ~= "string" then util.errorf("k8s: kind must be a string, got %s", type(kind)) end
  local k = kind:lower()
  k = ALIASES[k] or k
  local r = RESOURCES[k] or (k:sub(-1) == "s" and RESOURCES[k:sub(1, -2)])
  if not r then
    error(string.format("k8s: unknown kind '%s' (deployment, statefulset, daemonset, replicaset, pod, job, cronjob)",
                        kind), 3)
  end
  local out = util.merge(r, { name = r.plural:sub(1, -2) })
  return out
end

-- The API path of a resource: /api/v1/namespaces/NS/pods[/NAME[/SUB]]
function M.path(kind, ns, name, sub)
  local r = type(kind) == "table" and kind or M.resource(kind)
  local p = (r.group == "" and "/api/" .. r.version or ("/apis/" .. r.group .. "/" .. r.version))
    .. "/namespaces/" .. util.urlencode(ns) .. "/" .. r.plural
  if name then p = p .. "/" .. util.urlencode(name) end
  if sub then p = p .. "/" .. sub end
  return p
end

-- ------------------------------------------------------------------ errors

local Err = {}
Err.__index = Err
Err.__tostring = function(e)
  return string.format("%s (%s): %s", tostring(e.reason), tostring(e.code), tostring(e.message))
end

-- k8s.new_error(code, reason, message[, status]) -> an error table
function M.new_error(code, reason, message, status)
  return setmetatable({ code = code, reason = reason, message = message, status = status }, Err)
end

function M.is_error(v) return getmetatable(v) == Err end

-- What client-go says when the body is not a Status (errors.NewGenericServerResponse).
local GENERIC = {
  [400] = { "BadRequest", "the server rejected our request for an unknown reason" },
  [401] = { "Unauthorized", "the server has asked for the client to provide credentials" },
  [403] = { "Forbidden", "the server does not allow access to the requested resource" },
  [404] = { "NotFound", "the server could not find the requested resource" },
  [405] = { "MethodNotAllowed", "the server does not allow this method on the requested resource" },
  [406] = { "NotAcceptable", "the server was unable to respond with a content type that the client supports" },
  [409] = { "Conflict", "the server reported a conflict" },
  [410] = { "Gone", "the server has removed the requested resource" },
  [413] = { "RequestEntityTooLarge", "the server has rejected the request because it is too large" },
  [415] = { "UnsupportedMediaType", "the server does not support the content type of the request" },
  [422] = { "Invalid", "the server rejected our request due to an error in our request" },
  [429] = { "TooManyRequests", "the server has received too many requests and has asked us to try again later" },
  [500] = { "InternalError", "an error on the server has prevented the request from succeeding" },
  [503] = { "ServiceUnavailable", "the server is currently unable to handle the request" },
  [504] = { "Timeout", "the server was unable to return a response in the time allotted, but may still be processing the request" },
}

local function decode(text)
  local json = recovery.json
  if type(text) ~= "string" or not json or type(json.decode) ~= "function" then return nil end
  local ok, v = pcall(json.decode, text)
  if ok then return v end
  return nil
end

-- k8s.status_error(http_status, body) -> err. PURE apart from JSON decoding
-- (recovery.json.decode); body may also be an already decoded table.
--   a Status body: reason, message and code from it (missing ones from the
--     HTTP status), status = the Status object;
--   any other body: the reason for the HTTP status, message = the body
--     (white space trimmed, at most 512 bytes);
--   an empty body: the reason and client-go's generic message for the status.
function M.status_error(http_status, body)
  local code = tonumber(http_status) or 0
  local g = GENERIC[code] or { code >= 500 and "InternalError" or "Unknown",
                               string.format("the server responded with HTTP status %d", code) }
  local doc = type(body) == "table" and body or decode(body)
  if type(doc) == "table" and doc.kind == "Status" then
    local reason = type(doc.reason) == "string" and doc.reason ~= "" and doc.reason or g[1]
    local message = type(doc.message) == "string" and doc.message ~= "" and doc.message or g[2]
    return M.new_error(code, reason, message, doc)
  end
  local text = type(body) == "string" and util.trim(body) or ""
  if text == "" then return M.new_error(code, g[1], g[2], nil) end
  if #text > 512 then text = text:sub(1, 512) .. "..." end
  return M.new_error(code, g[1], text, nil)
end

-- ------------------------------------------------------------------ rollout status

local function num(v) return type(v) == "number" and v or 0 end

local function get(t, ...)
  for _, k in ipairs({ ... }) do
    if type(t) ~= "table" then return nil end
    t = t[k]
  end
  return t
end

local ROLLING_ONLY = "rollout status is only available for RollingUpdate strategy type"

-- k8s.rollout_status(kind, obj) -> done, message, failed. PURE.
-- kubectl's rules (pkg/polymorphichelpers/rollout_status.go) for a
-- Deployment, StatefulSet or DaemonSet object as the API returns it.
-- failed = true means waiting longer will not help: a Deployment past its
-- progress deadline, or a strategy rollout status does not support (an
-- updateStrategy.type other than RollingUpdate; a missing type counts as the
-- API default, RollingUpdate).
function M.rollout_status(kind, obj)
  local r = M.resource(kind)
  if type(obj) ~= "table" then util.errorf("rollout_status: expected an object, got %s", type(obj)) end
  local name = get(obj, "metadata", "name") or "?"
  local gen = num(get(obj, "metadata", "generation"))
  local st = obj.status or {}
  local spec = obj.spec or {}
  local observed = num(st.observedGeneration)
  local replicas = spec.replicas  -- nil: no check, as kubectl

  if r.plural == "deployments" then
    if gen > observed then
      return false, "Waiting for deployment spec update to be observed...", false
    end
    for _, c in ipairs(st.conditions or {}) do
      if c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded" then
        return false, string.format("deployment %q exceeded its progress deadline", name), true
      end
    end
    local updated = num(st.updatedReplicas)
    if type(replicas) == "number" and updated < replicas then
      return false, string.format("Waiting for deployment %q rollout to finish: %d out of %d new replicas have been updated...",
                                  name, updated, replicas), false
    end
    if num(st.replicas) > updated then
      return false, string.format("Waiting for deployment %q rollout to finish: %d old replicas are pending termination...",
                                  name, num(st.replicas) - updated), false
    end
    if num(st.availableReplicas) < updated then
      return false, string.format("Waiting for deployment %q rollout to finish: %d of %d updated replicas are available...",
                                  name, num(st.availableReplicas), updated), false
    end
    return true, string.format("deployment %q successfully rolled out", name), false

  elseif r.plural == "daemonsets" then
    local stype = get(spec, "updateStrategy", "type")
    if stype ~= nil and stype ~= "RollingUpdate" then return false, ROLLING_ONLY, true end
    if gen > observed then
      return false, "Waiting for daemon set spec update to be observed...", false
    end
    local desired = num(st.desiredNumberScheduled)
    if num(st.updatedNumberScheduled) < desired then
      return false, string.format("Waiting for daemon set %q rollout to finish: %d out of %d new pods have been updated...",
                                  name, num(st.updatedNumberScheduled), desired), false
    end
    if num(st.numberAvailable) < desired then
      return false, string.format("Waiting for daemon set %q rollout to finish: %d of %d updated pods are available...",
                                  name, num(st.numberAvailable), desired), false
    end
    return true, string.format("daemon set %q successfully rolled out", name), false

  elseif r.plural == "statefulsets" then
    local strategy = spec.updateStrategy or {}
    if strategy.type ~= nil and strategy.type ~= "RollingUpdate" then return false, ROLLING_ONLY, true end
    if observed == 0 or gen > observed then
      return false, "Waiting for statefulset spec update to be observed...", false
    end
    if type(replicas) == "number" and num(st.readyReplicas) < replicas then
      return false, string.format("Waiting for %d pods to be ready...", replicas - num(st.readyReplicas)), false
    end
    if type(strategy.rollingUpdate) == "table" then
      local partition = strategy.rollingUpdate.partition
      if type(replicas) == "number" and type(partition) == "number" then
        if num(st.updatedReplicas) < replicas - partition then
          return false, string.format("Waiting for partitioned roll out to finish: %d out of %d new pods have been updated...",
                                      num(st.updatedReplicas), replicas - partition), false
        end
      end
      return true, string.format("partitioned roll out complete: %d new pods have been updated...",
                                 num(st.updatedReplicas)), false
    end
    if st.updateRevision ~= st.currentRevision then
      return false, string.format("waiting for statefulset rolling update to complete %d pods at revision %s...",
                                  num(st.updatedReplicas), tostring(st.updateRevision)), false
    end
    return true, string.format("statefulset rolling update complete %d pods at revision %s...",
                               num(st.currentReplicas), tostring(st.currentRevision)), false
  end
  util.errorf("rollout_status: no rollout status for kind '%s'", kind)
end

-- ------------------------------------------------------------------ jobs from cronjobs

-- k8s.manual_job_name(cronjob, now) -> "<cronjob>-manual-<unix time>", the
-- cronjob part cut so that the whole is at most 63 characters. PURE.
function M.manual_job_name(cronjob, now)
  local suffix = "-manual-" .. string.format("%d", math.floor(now or os.time()))
  local prefix = tostring(cronjob):sub(1, 63 - #suffix)
  return prefix .. suffix
end

-- k8s.job_manifest(cj, name) -> a batch/v1 Job table as
-- `kubectl create job NAME --from=cronjob/CJ` builds it. PURE.
function M.job_manifest(cj, name)
  local tmpl = get(cj, "spec", "jobTemplate") or {}
  local tmeta = tmpl.metadata or {}
  local annotations = { ["cronjob.kubernetes.io/instantiate"] = "manual" }
  for k, v in pairs(tmeta.annotations or {}) do annotations[k] = v end
  local labels
  if type(tmeta.labels) == "table" and next(tmeta.labels) ~= nil then labels = util.merge(tmeta.labels) end
  return {
    apiVersion = "batch/v1",
    kind = "Job",
    metadata = {
      name = name,
      annotations = annotations,
      labels = labels,
      ownerReferences = { {
        apiVersion = "batch/v1", kind = "CronJob",
        name = get(cj, "metadata", "name"), uid = get(cj, "metadata", "uid"),
        controller = true,
      } },
    },
    spec = tmpl.spec or {},
  }
end

-- k8s.json_raw(text, {key, ...}) -> the raw JSON text of the value at that
-- object path, or nil. PURE. Used to copy jobTemplate.spec byte for byte
-- (a decode/encode round trip would turn [] into {}).
local function skip_ws(s, i) return s:find("[^ \t\r\n]", i) or #s + 1 end

local function string_end(s, i)
  local j = i + 1
  while j <= #s do
    local k = s:find('["\\]', j)
    if not k then return nil end
    if s:sub(k, k) == '"' then return k end
    j = k + 2
  end
  return nil
end

local function value_end(s, i)
  local c = s:sub(i, i)
  if c == '"' then return string_end(s, i) end
  if c == "{" or c == "[" then
    local depth, j = 0, i
    while j <= #s do
      local k = s:find('[{}%[%]"]', j)
      if not k then return nil end
      local ch = s:sub(k, k)
      if ch == '"' then
        k = string_end(s, k)
        if not k then return nil end
      elseif ch == "{" or ch == "[" then
        depth = depth + 1
      else
        depth = depth - 1
        if depth == 0 then return k end
      end
      j = k + 1
    end
    return nil
  end
  if c == "" then return nil end
  local k = s:find("[,}%] \t\r\n]", i)
  return k and k - 1 or #s
end

function M.json_raw(s, keys)
  if type(s) ~= "string" then return nil end
  local i = skip_ws(s, 1)
  for _, key in ipairs(keys) do
    if s:sub(i, i) ~= "{" then return nil end
    i = skip_ws(s, i + 1)
    local found = false
    while s:sub(i, i) == '"' do
      local ke = string_end(s, i)
      if not ke then return nil end
      local k = s:sub(i + 1, ke - 1)
      i = skip_ws(s, ke + 1)
      if s:sub(i, i) ~= ":" then return nil end
      i = skip_ws(s, i + 1)
      if k == key then found = true break end
      local ve = value_end(s, i)
      if not ve then return nil end
      i = skip_ws(s, ve + 1)
      if s:sub(i, i) == "," then i = skip_ws(s, i + 1) end
    end
    if not found then return nil end
  end
  local e = value_end(s, i)
  return e and s:sub(i, e) or nil
end

-- ------------------------------------------------------------------ the client

local Client = {}
Client.__index = Client

local function safe_read(path)
  local ok, v, err = pcall(recovery.read_file, path)
  if not ok then return nil, v end
  return v, err
end

-- k8s.client(opts) -> client (see the top of this file).
function M.client(opts)
  opts = util.check_opts(opts, { "base_url", "token_file", "token", "ca_file", "ca", "namespace", "timeout",
                                 "page_size" }, "k8s.client")
  local self = setmetatable({}, Client)
  local in_cluster = false
  if opts.base_url then
    self.base_url = tostring(opts.base_url):gsub("/+$", "")
  else
    local host, port = recovery.env("KUBERNETES_SERVICE_HOST"), recovery.env("KUBERNETES_SERVICE_PORT")
    if not host or host == "" or not port or port == "" then
      error("k8s: not in cluster (KUBERNETES_SERVICE_HOST/PORT unset) and no base_url given", 2)
    end
    if host:find(":", 1, true) and host:sub(1, 1) ~= "[" then host = "[" .. host .. "]" end
    self.base_url = "https://" .. host .. ":" .. port
    in_cluster = true
  end
  if opts.token ~= nil then
    self.fixed_token = tostring(opts.token)
  else
    self.token_file = opts.token_file or (SA_DIR .. "/token")
  end
  self.ca_file = opts.ca_file or (in_cluster and not opts.ca and (SA_DIR .. "/ca.crt")) or nil
  self.ca = opts.ca
  self.timeout = opts.timeout or 15
  self.page_size = opts.page_size or 500
  if opts.namespace then
    self.namespace = opts.namespace
  else
    local ns = safe_read(SA_DIR .. "/namespace")
    ns = ns and util.trim(ns)
    self.namespace = (ns and ns ~= "") and ns or "default"
  end
  return self
end

-- The bearer token: re-read from token_file when older than TOKEN_MAX_AGE
-- seconds or when force is set.
function Client:token(force)
  if self.fixed_token then return self.fixed_token end
  local now = recovery.now()
  if force or not self._token or now - (self._token_at or 0) >= M.TOKEN_MAX_AGE then
    local v, err = recovery.read_file(self.token_file)
    if not v then return nil, M.new_error(0, "Config", "reading the token: " .. tostring(err)) end
    self._token, self._token_at = util.trim(v), now
  end
  return self._token
end

-- Sends one request. Returns resp (any status) or nil, err.
function Client:_send(method, path, opts)
  opts = opts or {}
  local url = self.base_url .. path
  if opts.query then
    local q = type(opts.query) == "table" and util.query(opts.query) or tostring(opts.query)
    if q ~= "" then url = url .. (url:find("?", 1, true) and "&" or "?") .. q end
  end
  local body = opts.body
  if type(body) == "table" then
    local enc, eerr = recovery.json.encode(body)
    if not enc then util.errorf("k8s: cannot encode the request body: %s", tostring(eerr)) end
    body = enc
  end
  local retried = false
  while true do
    local token, terr = self:token(retried)
    if not token then return nil, terr end
    local headers = { Accept = "application/json", Authorization = "Bearer " .. token }
    if body then headers["Content-Type"] = opts.content_type or "application/json" end
    local resp, err = recovery.http{
      method = method, url = url, headers = headers, body = body,
      timeout = opts.timeout or self.timeout, ca_file = self.ca_file, ca = self.ca,
    }
    if not resp then return nil, M.new_error(0, "Transport", tostring(err)) end
    if resp.status ~= 401 or retried or self.fixed_token then return resp end
    retried = true  -- a rotated token: re-read it and try once more
  end
end

-- c:request(method, path, {body =, content_type =, query =, timeout =})
-- -> decoded JSON ({} for an empty body; {planned = true} for a dry-run
-- write), resp | nil, err.
function Client:request(method, path, opts)
  opts = util.check_opts(opts, { "body", "content_type", "query", "timeout" }, "request")
  local resp, err = self:_send(method:upper(), path, opts)
  if not resp then return nil, err end
  if resp.planned then return { planned = true }, resp end
  if resp.status < 200 or resp.status > 299 then
    return nil, M.status_error(resp.status, resp.body)
  end
  if resp.body == nil or resp.body == "" then return {}, resp end
  local v, derr = resp:json()
  if v == nil then
    return nil, M.new_error(resp.status, "InvalidResponse", "response is not JSON: " .. tostring(derr))
  end
  return v, resp
end

-- c:get(kind, name[, ns]) -> object | nil, err
function Client:get(kind, name, ns)
  return self:request("GET", M.path(kind, ns or self.namespace, name))
end

-- c:list_pods(selector[, ns]) -> items | nil, err (follows `continue`)
function Client:list_pods(selector, ns)
  local items, cont = {}, nil
  for _ = 1, 1000 do
    local q = { limit = self.page_size, continue = cont }
    if selector and selector ~= "" then q.labelSelector = selector end
    local list, err = self:request("GET", M.path("pod", ns or self.namespace), { query = q })
    if not list then return nil, err end
    for _, p in ipairs(list.items or {}) do items[#items + 1] = p end
    cont = get(list, "metadata", "continue")
    if type(cont) ~= "string" or cont == "" then return items end
  end
  return nil, M.new_error(0, "InvalidResponse", "pod list did not end after 1000 pages")
end

-- c:delete_pods(selector, {grace =, ns =}) -> names, info | nil, err, names_so_far
-- Lists the pods, then deletes each one (DeleteOptions with
-- preconditions.uid and propagationPolicy Background; gracePeriodSeconds when
-- grace is given). A pod already gone (404) counts as deleted. A pod whose uid
-- changed (409 Conflict: it was replaced since the list) is left alone and
-- listed in info.replaced. info.planned is true in dry-run.
function Client:delete_pods(selector, opts)
  opts = util.check_opts(opts, { "ns", "grace" }, "delete_pods")
  if type(selector) ~= "string" or selector == "" then
    util.errorf("delete_pods: a non-empty label selector is required")
  end
  local ns = opts.ns or self.namespace
  local pods, err = self:list_pods(selector, ns)
  if not pods then return nil, err, {} end
  local names, info = {}, { replaced = {}, planned = false }
  for _, p in ipairs(pods) do
    local name, uid = get(p, "metadata", "name"), get(p, "metadata", "uid")
    local body = { apiVersion = "v1", kind = "DeleteOptions", propagationPolicy = "Background",
                   gracePeriodSeconds = opts.grace, preconditions = uid and { uid = uid } or nil }
    local v, derr = self:request("DELETE", M.path("pod", ns, name), { body = body })
    if v then
      names[#names + 1] = name
      if v.planned then info.planned = true end
    elseif derr.code == 404 then
      names[#names + 1] = name
    elseif derr.code == 409 and derr.reason == "Conflict" then
      info.replaced[#info.replaced + 1] = name
    else
      return nil, derr, names
    end
  end
  return names, info
end

local RESTARTABLE = { deployments = true, statefulsets = true, daemonsets = true }

-- c:rollout_restart(kind, name[, ns]) -> true, object | true, {planned = true} | nil, err
-- kubectl rollout restart: a strategic merge patch of the pod template's
-- kubectl.kubernetes.io/restartedAt annotation, fieldManager=kubectl-rollout.
function Client:rollout_restart(kind, name, ns)
  local r = M.resource(kind)
  if not RESTARTABLE[r.plural] then util.errorf("rollout_restart: cannot restart a %s", kind) end
  ns = ns or self.namespace
  local obj, err = self:get(r, name, ns)
  if not obj then return nil, err end
  if r.plural == "deployments" and get(obj, "spec", "paused") == true then
    return nil, M.new_error(0, "Paused", string.format(
      "%s.%s %q can't restart paused deployment (run rollout resume first)", r.plural, r.group, name))
  end
  local ts = util.rfc3339(recovery.now())
  local old = get(obj, "spec", "template", "metadata", "annotations", "kubectl.kubernetes.io/restartedAt")
  if old == ts then  -- an unchanged value would be an empty patch
    recovery.sleep(1)
    ts = util.rfc3339(recovery.now())
  end
  local body = '{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"'
    .. ts .. '"}}}}}'
  local v, perr = self:request("PATCH", M.path(r, ns, name), {
    body = body, content_type = "application/strategic-merge-patch+json",
    query = { fieldManager = "kubectl-rollout" },
  })
  if not v then return nil, perr end
  return true, v
end

-- c:wait_rollout(kind, name, {timeout = 300, interval = 2, ns =}) -> true, message | nil, err
-- Polls the object and applies k8s.rollout_status; fails at once when that
-- says failed, or on 401/403/404. In dry-run it returns at once:
-- true, "planned: ...".
function Client:wait_rollout(kind, name, opts)
  opts = util.check_opts(opts, { "ns", "timeout", "interval" }, "wait_rollout")
  local r = M.resource(kind)
  local ns = opts.ns or self.namespace
  if recovery.dry_run then
    return true, string.format("planned: not waiting for the rollout of %s/%s in dry-run", r.name, name)
  end
  local final
  local ok, msg = util.wait_until(function()
    local obj, err = self:get(r, name, ns)
    if not obj then
      if err.code == 401 or err.code == 403 or err.code == 404 then final = err return false, tostring(err), true end
      return false, tostring(err)
    end
    local done, m, failed = M.rollout_status(r.name, obj)
    if failed then
      local reason = m:find("progress deadline", 1, true) and "ProgressDeadlineExceeded" or "RolloutError"
      final = M.new_error(0, reason, m)
      return false, m, true
    end
    return done, m
  end, { timeout = opts.timeout or 300, interval = opts.interval or 2 })
  if ok then return true, msg end
  return nil, final or M.new_error(0, "Timeout", msg)
end

-- c:job_from_cronjob(cronjob, {name =, ns =}) -> job_name, object | job_name, {planned = true} | nil, err
-- kubectl create job NAME --from=cronjob/CRONJOB. The default name is
-- "<cronjob>-manual-<unix time>" (k8s.manual_job_name); when that name is
-- taken (409) a short random suffix is added and the POST tried again.
function Client:job_from_cronjob(cronjob, opts)
  opts = util.check_opts(opts, { "name", "ns" }, "job_from_cronjob")
  local ns = opts.ns or self.namespace
  if opts.name ~= nil and not util.dns1123(opts.name) then
    util.errorf("job_from_cronjob: invalid job name '%s' (DNS-1123 label, at most 63 characters)", tostring(opts.name))
  end
  local cj, resp = self:get("cronjob", cronjob, ns)  -- resp: the HTTP response, or the error
  if not cj then return nil, resp end
  local err
  local raw_spec = M.json_raw(resp.body, { "spec", "jobTemplate", "spec" })
  local name = opts.name or M.manual_job_name(cronjob, recovery.now())
  for try = 1, 3 do
    local job = M.job_manifest(cj, name)
    local body
    if raw_spec then
      job.spec = nil
      local enc = recovery.json.encode(job)
      body = enc:sub(1, -2) .. ',"spec":' .. raw_spec .. "}"
    else
      body = job
    end
    local v, perr = self:request("POST", M.path("job", ns), { body = body, content_type = "application/json" })
    if v then return name, v end
    err = perr
    if opts.name or perr.code ~= 409 or perr.reason ~= "AlreadyExists" or try == 3 then break end
    local base = M.manual_job_name(cronjob, recovery.now())
    local sfx = string.format("-%04x", math.random(0, 0xffff))
    name = base:sub(1, 63 - #sfx) .. sfx
  end
  return nil, err
end

-- c:wait_job(name, {timeout = 300, interval = 2, ns =}) -> true, message | nil, err
-- Done when the Job has condition Complete=True; nil, err (reason JobFailed)
-- when Failed=True. In dry-run it returns at once: true, "planned: ...".
function Client:wait_job(name, opts)
  opts = util.check_opts(opts, { "ns", "timeout", "interval" }, "wait_job")
  local ns = opts.ns or self.namespace
  if recovery.dry_run then
    return true, string.format("planned: not waiting for job %s in dry-run", name)
  end
  local final
  local ok, msg = util.wait_until(function()
    local job, err = self:get("job", name, ns)
    if not job then
      if err.code == 401 or err.code == 403 or err.code == 404 then final = err return false, tostring(err), true end
      return false, tostring(err)
    end
    for _, c in ipairs(get(job, "status", "conditions") or {}) do
      if c.status == "True" and c.type == "Failed" then
        final = M.new_error(0, "JobFailed", string.format("job %s failed: %s%s", name, tostring(c.reason or "Failed"),
                                                          c.message and (": " .. tostring(c.message)) or ""))
        return false, final.message, true
      end
      if c.status == "True" and c.type == "Complete" then
        return true, string.format("job %s completed (%d succeeded)", name, num(get(job, "status", "succeeded")))
      end
    end
    return false, string.format("job %s: %d active, %d succeeded, %d failed", name,
      num(get(job, "status", "active")), num(get(job, "status", "succeeded")), num(get(job, "status", "failed")))
  end, { timeout = opts.timeout or 300, interval = opts.interval or 2 })
  if ok then return true, msg end
  return nil, final or M.new_error(0, "Timeout", msg)
end

-- c:scale(kind, name, replicas[, ns]) -> Scale object | {planned = true} | nil, err
-- As kubectl scale without preconditions: PATCH .../{name}/scale with
-- application/merge-patch+json {"spec":{"replicas":N}}.
function Client:scale(kind, name, replicas, ns)
  local r = M.resource(kind)
  if math.type(replicas) ~= "integer" and not (type(replicas) == "number" and replicas == math.floor(replicas)) then
    util.errorf("scale: replicas must be an integer, got %s", tostring(replicas))
  end
  if replicas < 0 then util.errorf("scale: replicas must be >= 0") end
  local body = string.format('{"spec":{"replicas":%d}}', math.floor(replicas))
  return self:request("PATCH", M.path(r, ns or self.namespace, name, "scale"),
                      { body = body, content_type = "application/merge-patch+json" })
end

M.Client = Client
return M

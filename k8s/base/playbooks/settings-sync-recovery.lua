-- settings-sync-recovery: answer SettingsSyncJobFailure by restarting the
-- settings sync job, after checking that the settings registry it reads from
-- is healthy (a restart cannot fix a registry outage: the job then fails at
-- once and escalates). Verify re-evaluates the alert's own condition in
-- Prometheus and, when configured, checks with `deck diff` that the gateway
-- policies match the expected state.
--
-- Documentation: docs/playbooks/settings-sync-recovery.md
--
-- Settings: the `settings` table below holds the defaults. A deployment
-- overrides them in recoveryd's config file, without editing this file:
--
--   playbook_settings = {
--     ["settings-sync-recovery"] = { target_namespace = "integration", restart_method = "cronjob" },
--   }
--
-- run and verify read them only from ctx.settings (defaults merged with the
-- overrides, one level deep). `false` switches an optional setting off.

local k8s = require "recovery.k8s"
local kong = require "recovery.kong"
local prometheus = require "recovery.prometheus"
local util = require "recovery.util"

local settings = {
  -- the settings registry (checked first; down or non-2xx: fail at once)
  registry_health_url = "http://settings-registry.settings.svc:8080/api/settings/health",
  registry_token_secret = false, -- file in --secrets-dir with a bearer token, or false
  registry_timeout = 10,

  -- what to restart
  restart_method = "rollout", -- "rollout", "delete_pods" or "cronjob"
  target_kind = "deployment", -- rollout: "deployment" or "statefulset" (or "daemonset")
  target_name = "settings-sync-job", -- rollout: the workload; cronjob: the CronJob
  target_namespace = "settings",
  pod_selector = "app=settings-sync-job", -- delete_pods: label selector of the pods
  delete_grace = false, -- delete_pods: gracePeriodSeconds, false = the pod's own
  -- alert labels that may name another target (false = labels are ignored).
  -- A label value is used only if it is a DNS-1123 label AND listed in the
  -- allow-list below (the configured target is always allowed); any other
  -- value fails the job without touching anything.
  target_label = false,
  namespace_label = false,
  allowed_targets = {},
  allowed_namespaces = {},
  rollout_timeout = 180, -- seconds to wait for the rollout / the pods / the Job
  wait_interval = 2,

  -- Kubernetes API access (false = in-cluster service account)
  k8s_api_url = false,
  k8s_token_file = false, -- default: the service account token (re-read every minute)
  k8s_token_secret = false, -- or a file in --secrets-dir with a token
  k8s_ca_file = false,
  k8s_timeout = 15,

  -- verify (a): the alert's own condition in Prometheus
  prometheus_url = "http://prometheus-operated.monitoring.svc:9090",
  prometheus_token_secret = false,
  prometheus_timeout = 10,
  verify_use_alert_expr = true, -- the expression of the alert's generatorURL
  verify_query = "rate(settings_sync_errors_total[5m]) > 0", -- otherwise: non-empty = still failing
  verify_wait = 330, -- rate() over 5m stays > 0 for 5 minutes after the last error, plus scrapes
  verify_interval = 15,

  -- verify (b): gateway policies in sync (only when deck_state_files is set)
  deck_state_files = {}, -- decK state files with the expected policies
  deck_bin = "/usr/local/bin/deck",
  kong_admin_url = "http://kong-admin.kong.svc:8001",
  kong_admin_token_secret = false, -- file in --secrets-dir, sent as Kong-Admin-Token
  deck_select_tags = {},
  deck_env = {}, -- extra environment for decK (name -> value)
  deck_timeout = 60,
}

local METHODS = { rollout = true, delete_pods = true, cronjob = true }

local function check_settings(S)
  if not METHODS[S.restart_method] then
    recovery.fail(string.format("settings: restart_method must be \"rollout\", \"delete_pods\" or \"cronjob\", not %q",
      tostring(S.restart_method)))
  end
  for _, key in ipairs({ "target_name", "target_namespace", "registry_health_url", "prometheus_url" }) do
    if type(S[key]) ~= "string" or S[key] == "" then recovery.fail("settings: " .. key .. " must be a non-empty string") end
  end
  if S.restart_method == "delete_pods" and (type(S.pod_selector) ~= "string" or S.pod_selector == "") then
    recovery.fail("settings: delete_pods needs a non-empty pod_selector")
  end
end

-- ------------------------------------------------------------------ target

local function allowed(v, allow)
  for _, a in ipairs(util.list(allow)) do if a == v then return true end end
  return false
end

-- The value of an alert label that may replace a configured name: absent or
-- empty -> the default; otherwise it must be a DNS-1123 label and allowed.
local function from_label(ctx, S, label_key, allow_key, default, what)
  local lname = util.opt(S[label_key])
  if not lname then return default, "settings" end
  local v = (ctx.alert.labels or {})[lname]
  if v == nil or v == "" then return default, "settings" end
  if not util.dns1123(v) then
    recovery.fail(string.format("alert label %s=%q is not a valid %s (DNS-1123 label): not acting on it",
      lname, util.short(v, 80), what))
  end
  if v ~= default and not allowed(v, S[allow_key]) then
    recovery.fail(string.format("alert label %s=%q names a %s that is not in %s: not acting on it",
      lname, v, what, allow_key))
  end
  return v, "label " .. lname
end

local function target(ctx, S)
  local ns, ns_from = from_label(ctx, S, "namespace_label", "allowed_namespaces", S.target_namespace, "namespace")
  local name, name_from = from_label(ctx, S, "target_label", "allowed_targets", S.target_name, "target")
  return { ns = ns, name = name, ns_from = ns_from, name_from = name_from }
end

local function client(S, ns)
  local o = { namespace = ns, timeout = S.k8s_timeout }
  o.base_url = util.opt(S.k8s_api_url)
  o.token_file = util.opt(S.k8s_token_file)
  o.token = util.secret(S, "k8s_token_secret")
  o.ca_file = util.opt(S.k8s_ca_file)
  local ok, c = pcall(k8s.client, o)
  if not ok then recovery.fail("settings: " .. tostring(c)) end
  return c
end

-- Errors that another attempt cannot fix: fail the job at once.
local FINAL = { NotFound = true, Forbidden = true, Paused = true, Invalid = true, Config = true }

local function k8s_error(what, err)
  local msg = what .. ": " .. tostring(err)
  if type(err) == "table" and FINAL[err.reason] then recovery.fail(msg) end
  error(msg, 0)
end

-- ------------------------------------------------------------------ registry

local function check_registry(S)
  local headers = {}
  local token = util.secret(S, "registry_token_secret")
  if token then headers.Authorization = "Bearer " .. token end
  local resp, err = recovery.http{ url = S.registry_health_url, headers = headers, timeout = S.registry_timeout }
  if not resp then
    recovery.fail("settings registry unhealthy: " .. tostring(err) .. ": not restarting the sync job")
  end
  local doc = resp:json()
  local st = type(doc) == "table" and type(doc.status) == "string" and doc.status or nil
  if resp.status < 200 or resp.status > 299 then
    recovery.fail(string.format("settings registry unhealthy: HTTP %d%s from %s: not restarting the sync job",
      resp.status, st and (" (status " .. st .. ")") or "", S.registry_health_url))
  end
  if st and st ~= "UP" then
    recovery.fail(string.format("settings registry unhealthy: status %s from %s: not restarting the sync job",
      st, S.registry_health_url))
  end
  recovery.log.info("settings registry healthy", { url = S.registry_health_url, status = resp.status })
end

-- ------------------------------------------------------------------ restart methods

local function restart_rollout(c, S, t)
  local kind = S.target_kind
  local ok, res = c:rollout_restart(kind, t.name, t.ns)
  if not ok then k8s_error(string.format("rollout restart of %s/%s in %s", kind, t.name, t.ns), res) end
  recovery.log.info(string.format("%s rollout restart of %s/%s in namespace %s", res.planned and "planned" or "sent",
    kind, t.name, t.ns), { kind = kind, name = t.name, namespace = t.ns, planned = res.planned == true })
  local done, msg = c:wait_rollout(kind, t.name, { ns = t.ns, timeout = S.rollout_timeout, interval = S.wait_interval })
  if not done then k8s_error(string.format("rollout of %s/%s in %s", kind, t.name, t.ns), msg) end
  recovery.log.info(msg, { kind = kind, name = t.name, namespace = t.ns })
end

local function pod_ready(p)
  if type(p) ~= "table" or type(p.metadata) ~= "table" or p.metadata.deletionTimestamp then return false end
  local st = p.status or {}
  if st.phase ~= "Running" and st.phase ~= "Succeeded" then return false end
  local conds = st.conditions
  if type(conds) ~= "table" or #conds == 0 then return true end
  for _, cnd in ipairs(conds) do
    if cnd.type == "Ready" then return cnd.status == "True" end
  end
  return true
end

local function restart_delete_pods(c, S, t)
  local before, lerr = c:list_pods(S.pod_selector, t.ns)
  if not before then k8s_error(string.format("listing pods %s in %s", S.pod_selector, t.ns), lerr) end
  if #before == 0 then
    recovery.fail(string.format("no pods match %s in namespace %s: nothing to restart (is the workload scaled to 0?)",
      S.pod_selector, t.ns))
  end
  local old = {}
  for _, p in ipairs(before) do old[p.metadata.uid or p.metadata.name] = true end
  local names, info, partial = c:delete_pods(S.pod_selector, { ns = t.ns, grace = util.opt(S.delete_grace) })
  if not names then
    k8s_error(string.format("deleting pods %s in %s (deleted so far: %s)", S.pod_selector, t.ns,
      table.concat(partial or {}, ", ")), info)
  end
  recovery.log.info(string.format("%s %d pod(s) matching %s in namespace %s", info.planned and "planned deleting" or "deleted",
    #names, S.pod_selector, t.ns), { pods = recovery.json.array(names), selector = S.pod_selector, namespace = t.ns,
    replaced = recovery.json.array(info.replaced), planned = info.planned })
  if recovery.dry_run then return end
  local want = #names
  local ok, msg = util.wait_until(function()
    local pods, err = c:list_pods(S.pod_selector, t.ns)
    if not pods then return false, tostring(err) end
    local fresh = 0
    for _, p in ipairs(pods) do
      if not old[p.metadata.uid or p.metadata.name] and pod_ready(p) then fresh = fresh + 1 end
    end
    return fresh >= want, string.format("%d of %d replacement pod(s) ready", fresh, want)
  end, { timeout = S.rollout_timeout, interval = S.wait_interval })
  if not ok then error(string.format("pods %s in %s: %s", S.pod_selector, t.ns, msg), 0) end
  recovery.log.info(msg, { selector = S.pod_selector, namespace = t.ns })
end

local function restart_cronjob(c, S, t)
  local job, res = c:job_from_cronjob(t.name, { ns = t.ns })
  if not job then k8s_error(string.format("creating a job from cronjob/%s in %s", t.name, t.ns), res) end
  recovery.log.info(string.format("%s job %s from cronjob/%s in namespace %s", res.planned and "planned creating" or "created",
    job, t.name, t.ns), { job = job, cronjob = t.name, namespace = t.ns, planned = res.planned == true })
  local ok, msg = c:wait_job(job, { ns = t.ns, timeout = S.rollout_timeout, interval = S.wait_interval })
  if not ok then error(string.format("job %s in %s: %s", job, t.ns, tostring(msg)), 0) end
  recovery.log.info(msg, { job = job, namespace = t.ns })
end

local RESTART = { rollout = restart_rollout, delete_pods = restart_delete_pods, cronjob = restart_cronjob }

-- ------------------------------------------------------------------ verify helpers

-- Series whose labels agree with the alert's labels (an alert's labels are
-- its series' labels plus the rule's own labels): another instance that is
-- still failing is not ours.
local function own(samples, labels)
  local out = {}
  for _, s in ipairs(samples or {}) do
    local mine = true
    for k, v in pairs(s.metric or {}) do
      if k ~= "__name__" and labels[k] ~= nil and labels[k] ~= v then mine = false break end
    end
    if mine then out[#out + 1] = s end
  end
  return out
end

local function describe(samples)
  local parts = {}
  for i, s in ipairs(samples) do
    if i > 3 then parts[#parts + 1] = "..." break end
    parts[#parts + 1] = prometheus.format_labels(s.metric) .. " = " .. tostring(s.value)
  end
  return table.concat(parts, "; ")
end

-- One evaluation: true (cleared) / false (still holds) / nil (error), reason.
local function alert_check(ctx, S)
  local headers
  local token = util.secret(S, "prometheus_token_secret")
  if token then headers = { Authorization = "Bearer " .. token } end
  local expr
  if S.verify_use_alert_expr then
    local g = prometheus.parse_generator_url(ctx.alert.generatorURL)
    expr = g and g.expr
  end
  expr = expr or S.verify_query
  local c = prometheus.client{ url = S.prometheus_url, headers = headers, timeout = S.prometheus_timeout }
  local holds, samples = c:holds(expr)
  if holds == nil then return nil, "cannot evaluate " .. expr .. ": " .. tostring(samples) end
  local mine = own(samples, ctx.alert.labels or {})
  if #mine == 0 then return true, "alert condition cleared: " .. expr .. " returns no series for this alert" end
  return false, string.format("alert condition still holds: %s returns %d series: %s", expr, #mine, describe(mine))
end

local function deck_check(S)
  local files = util.list(S.deck_state_files)
  if #files == 0 then return true, "no deck_state_files: gateway policies not checked" end
  local headers = {}
  local token = util.secret(S, "kong_admin_token_secret")
  if token then headers[1] = "Kong-Admin-Token:" .. token end
  local d = kong.deck{ bin = S.deck_bin, kong_addr = S.kong_admin_url, headers = headers,
                       select_tags = util.list(S.deck_select_tags), env = util.opt(S.deck_env), timeout = S.deck_timeout }
  local in_sync, out = d:diff(files)
  if in_sync == nil then return false, "deck diff failed: " .. tostring(out) end
  if in_sync then return true, "gateway policies in sync (deck diff: no changes)" end
  return false, "gateway policies drift from " .. table.concat(files, ", ") .. ": " .. kong.diff_summary(out)
end

return {
  name        = "settings-sync-recovery",
  description = "Restart the settings sync job (after checking the settings registry) and verify that the " ..
                "sync errors stop and the gateway policies are in sync",
  match       = { 'alertname="SettingsSyncJobFailure"' },
  retries     = 2,      -- a slow rollout or a transient API error; a precondition failure is final (recovery.fail)
  backoff     = { initial = 30, factor = 2, max = 120 }, -- 15-30 s, then 30-60 s
  timeout     = 630,    -- registry check + rollout_timeout (180) + verify_wait (330) + deck diff (60)
  cooldown    = 1800,   -- a recovered sync job rests 30 minutes before another restart
  budget      = { runs = 3, per = 3600 },
  escalate    = { "slack", "pagerduty" },
  -- A rollout restart only stamps a new restartedAt annotation: repeating it
  -- after a crash rolls the pods once more and converges. Deleting pods and
  -- creating a Job from the CronJob are just as safe to repeat.
  idempotent  = true,
  settings    = settings,

  run = function(ctx)
    local S = ctx.settings
    check_settings(S)
    local t = target(ctx, S)
    recovery.log.info(string.format("settings-sync recovery: %s of %s in namespace %s", S.restart_method,
      S.restart_method == "delete_pods" and S.pod_selector or t.name, t.ns),
      { method = S.restart_method, name = t.name, namespace = t.ns, name_from = t.name_from,
        namespace_from = t.ns_from, attempt = ctx.job.attempt })
    check_registry(S)
    local c = client(S, t.ns)
    RESTART[S.restart_method](c, S, t)
  end,

  verify = function(ctx)
    local S = ctx.settings
    if ctx.dry_run then
      -- Nothing was repaired, so the condition is reported, not judged; but
      -- a read that fails (a wrong prometheus_url in staging) fails the plan.
      local cleared, now = alert_check(ctx, S)
      if cleared == nil then return false, "dry-run: " .. tostring(now) end
      local _, deck_now = deck_check(S)
      return true, "dry-run: nothing was changed; now: " .. tostring(now) .. "; " .. tostring(deck_now)
    end
    local ok, reason = util.wait_until(function()
      local cleared, why = alert_check(ctx, S)
      return cleared == true, why
    end, { timeout = S.verify_wait, interval = S.verify_interval })
    if not ok then return false, reason end
    local in_sync, why = deck_check(S)
    if not in_sync then return false, why end
    return true, reason .. "; " .. why
  end,
}

-- schema-rollback: answer EventValidationFailureSpike by rolling the event's
-- schema-registry subject back to its previous schema, but only when the
-- latest version was registered recently (otherwise the spike is not caused
-- by a schema change and a human must look: the job fails and escalates).
--
-- Documentation: docs/playbooks/schema-rollback.md
--
-- Settings: the `settings` table below holds the defaults. A deployment
-- overrides them in recoveryd's config file, without editing this file:
--
--   playbook_settings = {
--     ["schema-rollback"] = { registry_url = "http://schema-registry.events.svc:8081", window = 1800 },
--   }
--
-- run and verify read them only from ctx.settings (defaults merged with the
-- overrides, one level deep). `false` switches an optional setting off.

local schema = require "recovery.schema"

local settings = {
  registry_url = "http://schema-registry.event-schemas.svc:8081",
  registry_auth = "none", -- "none", "basic" (user/password or API key/secret) or "bearer"
  registry_username_secret = "schema-registry-username", -- file names in --secrets-dir
  registry_password_secret = "schema-registry-password",
  registry_token_secret = "schema-registry-token",
  registry_timeout = 10,
  on_existing = "soft_delete", -- the registry kept the bad version as latest: "soft_delete" it, or "fail"
  subject_label = "subject",
  topic_label = "topic",
  subject_suffix = "-value",
  event_type_label = "event_type",
  event_types = {}, -- event type -> subject, e.g. { ["order.created"] = "orders-value" }
  default_subject = false, -- the subject when no label resolves, or false
  allowed_subjects = false, -- false = any valid subject; or a list of subject names
  window = 3600, -- roll back only if the latest version was registered at most this many seconds ago
  future_tolerance = 300,
  registered_at_source = "prometheus", -- "prometheus" or "apicurio"
  registered_at_query = 'max(schema_registry_subject_version_created_timestamp_seconds{subject="{subject}",version="{version}"})',
  apicurio_meta_url = "http://apicurio-registry.event-schemas.svc:8080/apis/registry/v3/groups/default/artifacts/{subject}/versions/{version}",
  prometheus_url = "http://prometheus-operated.monitoring.svc:9090",
  prometheus_token_secret = false, -- a file in --secrets-dir holding a bearer token, or false
  prometheus_timeout = 10,
  verify_use_alert_expr = true, -- re-evaluate the expression of the alert's generatorURL
  verify_query = "sum(rate(event_validation_errors_total[5m]))",
  verify_threshold = 0.1, -- errors per second
  verify_wait = 300, -- seconds verify keeps checking before it gives up
  verify_interval = 30,
}

local function secret(name)
  local v, err = recovery.secret(name)
  if not v then error("secret " .. name .. ": " .. tostring(err), 0) end
  return v
end

local function registry_headers(S)
  if S.registry_auth == "basic" then
    return { Authorization = schema.basic_auth(secret(S.registry_username_secret), secret(S.registry_password_secret)) }
  elseif S.registry_auth == "bearer" then
    return { Authorization = "Bearer " .. secret(S.registry_token_secret) }
  elseif S.registry_auth == "none" or S.registry_auth == nil then
    return {}
  end
  error("settings.registry_auth must be \"none\", \"basic\" or \"bearer\"", 0)
end

local function prometheus_opts(S)
  local o = { timeout = S.prometheus_timeout }
  if S.prometheus_token_secret then
    o.headers = { Authorization = "Bearer " .. secret(S.prometheus_token_secret) }
  end
  return o
end

-- The settings schema.subject_for reads (it refuses other keys).
local function subject_opts(S)
  return { subject_label = S.subject_label, topic_label = S.topic_label, subject_suffix = S.subject_suffix,
           event_type_label = S.event_type_label, event_types = S.event_types, default_subject = S.default_subject,
           allowed_subjects = S.allowed_subjects }
end

-- Where registration times come from (see the doc page).
local function time_source(S, reg)
  if S.registered_at_source == "apicurio" then
    return { kind = "apicurio", meta_url = S.apicurio_meta_url, headers = reg.headers, timeout = S.registry_timeout }
  end
  local o = prometheus_opts(S)
  o.kind, o.url, o.query = "prometheus", S.prometheus_url, S.registered_at_query
  return o
end

-- Is a rollback for this incident already in place (an earlier attempt of
-- this job, a crash-interrupted run, or an operator)? Then run must not roll
-- back once more.
local function already_rolled_back(reg, S, src, subject, latest, live)
  -- (a) a registry that appends versions: the latest re-registers an older schema
  local pairs_, err = reg:id_versions(latest.id)
  if pairs_ then
    for _, p in ipairs(pairs_) do
      if p.subject == subject and p.version < latest.version then
        return true, string.format("version %d of %s carries the schema of version %d (id %d): already rolled back",
          latest.version, subject, p.version, latest.id)
      end
    end
  else
    recovery.log.warn("cannot list the versions that use schema id " .. latest.id, { error = tostring(err) })
  end
  -- (b) Confluent semantics: a soft-deleted version above the latest that was
  -- registered within the window
  local all = reg:versions(subject, { deleted = true })
  if not all then return false end
  local is_live, top = {}, nil
  for _, v in ipairs(live) do is_live[v] = true end
  for _, v in ipairs(all) do
    if not is_live[v] and v > latest.version and (top == nil or v > top) then top = v end
  end
  if not top then return false end
  local ts = schema.registered_at(src, subject, top)
  if ts and recovery.now() - ts <= S.window then
    return true, string.format("version %d of %s (registered %s ago) is soft-deleted and version %d is the latest: " ..
      "the rollback is in place", top, subject, schema.human_duration(recovery.now() - ts), latest.version)
  end
  return false
end

-- Series of res whose labels agree with the alert's labels (an alert's
-- labels are its series' labels plus the rule's labels).
local function own_series(res, alert_labels)
  local out = {}
  for _, s in ipairs(res) do
    local mine = true
    for k, v in pairs(s.labels) do
      if k ~= "__name__" and alert_labels[k] ~= nil and alert_labels[k] ~= v then mine = false break end
    end
    if mine then out[#out + 1] = s end
  end
  return out
end

local function max_value(res)
  local m
  for _, s in ipairs(res) do if m == nil or s.value > m then m = s.value end end
  return m
end

return {
  name        = "schema-rollback",
  description = "Roll a schema-registry subject back to its previous schema when event validation errors " ..
                "spike right after a new schema version was registered",
  match       = { 'alertname="EventValidationFailureSpike"' },
  retries     = 1,    -- one more attempt for transient registry/Prometheus errors; never a second rollback
  backoff     = { initial = 20, factor = 2, max = 60 }, -- 10-20 s before the second attempt
  timeout     = 480,  -- run (a dozen requests) + verify_wait
  cooldown    = 1800, -- a rolled-back subject rests 30 minutes
  budget      = { runs = 2, per = 3600 },
  escalate    = { "slack", "pagerduty" },
  -- Safe to run again after a crash: registering the previous schema again
  -- returns its existing id, and run detects a rollback already in place.
  idempotent  = true,
  settings    = settings,

  run = function(ctx)
    local S = ctx.settings
    local subject, how = schema.subject_for(ctx.alert.labels, subject_opts(S))
    if not subject then recovery.fail(how) end -- a bad or unknown subject: no request is sent
    local reg = schema.registry{ url = S.registry_url, headers = registry_headers(S), timeout = S.registry_timeout }
    local src = time_source(S, reg)

    local latest, err = reg:latest(subject)
    if not latest then error("reading the latest version of " .. subject .. ": " .. tostring(err), 0) end
    local live
    live, err = reg:versions(subject)
    if not live then error("listing the versions of " .. subject .. ": " .. tostring(err), 0) end
    recovery.log.info("subject " .. subject .. " (from " .. how .. "): latest version " .. latest.version,
      { subject = subject, latest_version = latest.version, latest_id = latest.id, versions = #live })

    local done, why = already_rolled_back(reg, S, src, subject, latest, live)
    if done then
      recovery.log.info(why .. "; nothing to do, verifying", { subject = subject })
      return
    end

    -- Preconditions: a previous version exists, and the latest one is recent.
    -- They are deterministic, so a failure ends the job at once (recovery.fail)
    -- and escalates instead of using the retry.
    local pv, perr = schema.previous_version(live, latest.version)
    if not pv then recovery.fail(subject .. ": " .. perr) end
    local ts, terr = schema.registered_at(src, subject, latest.version)
    if not ts then
      recovery.fail(string.format("cannot tell when version %d of %s was registered (%s): not rolling back blindly",
        latest.version, subject, tostring(terr)))
    end
    local age = recovery.now() - ts
    if age > S.window then
      recovery.fail(string.format("version %d of %s was registered %s ago, outside the %s window: the validation " ..
        "errors are not caused by a recent schema change, not rolling back", latest.version, subject,
        schema.human_duration(age), schema.human_duration(S.window)))
    end
    if age < -S.future_tolerance then
      recovery.fail(string.format("version %d of %s has a registration time %s in the future: not rolling back",
        latest.version, subject, schema.human_duration(-age)))
    end

    local prev
    prev, err = reg:get(subject, pv)
    if not prev then error("reading version " .. pv .. " of " .. subject .. ": " .. tostring(err), 0) end
    recovery.log.info(string.format("rolling %s back from version %d (id %d, registered %s ago) to the schema of version %d (id %d)",
      subject, latest.version, latest.id, schema.human_duration(age), prev.version, prev.id),
      { subject = subject, from = latest.version, from_id = latest.id, to_schema_of = prev.version, to_id = prev.id,
        registered_age_seconds = math.floor(age) })

    local res, rerr = reg:rollback(subject, { latest = latest, previous = prev, on_existing = S.on_existing })
    if not res then
      local msg = "rollback of " .. subject .. ": " .. tostring(rerr)
      -- the registry refused the previous schema (incompatible, or it keeps the
      -- bad version and on_existing = "fail"): another attempt would too
      if type(rerr) == "table" and (rerr.code == "incompatible" or rerr.code == "kept") then recovery.fail(msg) end
      error(msg, 0)
    end
    if res.planned then
      recovery.log.info(string.format("dry-run: would register the schema of version %d of %s again%s", res.to_schema_of,
        subject, res.then_soft_delete and (" and soft-delete version " .. res.then_soft_delete) or ""),
        { subject = subject, from = res.from, to_schema_of = res.to_schema_of, planned = true })
    else
      recovery.log.info(string.format("rolled %s back: version %d now serves schema id %d (%s)", subject, res.version,
        res.id, res.method == "soft_deleted" and ("version " .. res.deleted_version .. " soft-deleted") or "new version registered"),
        { subject = subject, from = res.from, to_schema_of = res.to_schema_of, id = res.id, version = res.version,
          method = res.method, deleted_version = res.deleted_version })
    end
  end,

  verify = function(ctx)
    local S = ctx.settings
    local expr, from_alert = nil, false
    if S.verify_use_alert_expr then expr = schema.expr_from_generator_url(ctx.alert.generatorURL) end
    if expr then from_alert = true else expr = S.verify_query end
    local popts = prometheus_opts(S)

    local function check()
      local res, err = schema.prom_query(S.prometheus_url, expr, popts)
      if not res then return false, tostring(err) end
      if from_alert then
        res = own_series(res, ctx.alert.labels)
        if #res == 0 then return true, "the alert expression no longer matches: " .. expr end
        return false, string.format("still %.4g errors/s (the alert expression %s still matches)", max_value(res), expr)
      end
      local v = max_value(res)
      if v == nil then return false, "no data for " .. expr end
      if v < S.verify_threshold then
        return true, string.format("%.4g errors/s, below %g", v, S.verify_threshold)
      end
      return false, string.format("still %.4g errors/s (threshold %g)", v, S.verify_threshold)
    end

    if ctx.dry_run then
      local _, now = check()
      return true, "dry-run: nothing was changed; now: " .. now
    end
    local deadline = recovery.now() + S.verify_wait
    local ok, reason
    for _ = 1, 1000 do -- bounded; the deadline ends it much earlier
      ok, reason = check()
      if ok then return true, reason end
      if recovery.now() + S.verify_interval > deadline then break end
      recovery.sleep(S.verify_interval)
    end
    return false, reason
  end,
}

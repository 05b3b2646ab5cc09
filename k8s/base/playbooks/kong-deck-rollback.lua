-- kong-deck-rollback: answer gateway alerts (GatewayLatencyHigh,
-- KongPolicyDeploymentFailed) by rolling Kong's configuration back to the
-- last known-good decK state, but only when the live configuration differs
-- from it (a policy deploy happened). Without drift the alert is not caused
-- by a bad deploy: the job fails at once and escalates.
--
-- Before it changes anything it dumps the current state (`deck gateway dump`)
-- into the job log (size, SHA-256 and the text, truncated), so the rollback
-- can be undone. Verify: `deck diff` is clean, Kong's /status (and
-- /status/ready) are healthy, and latency is back under its threshold.
--
-- Documentation: docs/playbooks/kong-deck-rollback.md
--
-- Settings: the `settings` table below holds the defaults; override them in
-- recoveryd's config file (playbook_settings = { ["kong-deck-rollback"] =
-- { ... } }). run and verify read them only from ctx.settings. `false`
-- switches an optional setting off.

local kong = require "recovery.kong"
local prometheus = require "recovery.prometheus"
local util = require "recovery.util"

local settings = {
  good_state_files = { "/etc/recoveryd/kong/last-known-good.yaml" }, -- decK state file(s) to roll back to
  deck_bin = "/usr/local/bin/deck",
  kong_admin_url = "http://kong-admin.kong.svc:8001",
  kong_admin_token_secret = false, -- file in --secrets-dir, sent as Kong-Admin-Token (decK and /status)
  kong_status_url = false, -- Status API base URL for GET /status/ready, false = not checked
  deck_select_tags = {}, -- restrict dump/diff/sync to entities with all these tags
  deck_env = {}, -- extra environment for decK (name -> value)
  deck_timeout = 60, -- seconds per decK command
  dump_log_max = 16384, -- bytes of the pre-rollback dump kept in the job log (0 = size and hash only)

  -- optional second precondition: a policy deploy within deploy_window seconds
  deploy_time_query = false, -- PromQL whose largest value is the last deploy time (epoch seconds)
  deploy_window = 3600,

  -- verify
  prometheus_url = "http://prometheus-operated.monitoring.svc:9090",
  prometheus_token_secret = false,
  prometheus_timeout = 10,
  verify_use_alert_expr = true, -- re-evaluate the expression of the alert's generatorURL
  verify_query = 'histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{service=~"api.*"}[5m])))',
  verify_threshold = 0.2, -- verify_query must be below this (seconds of p95 latency)
  verify_wait = 300, -- latency over 5m windows lags behind the rollback
  verify_interval = 15,
}

-- ------------------------------------------------------------------ SHA-256

local K = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}

local function ror(x, n) return ((x >> n) | (x << (32 - n))) & 0xffffffff end

local function sha256(msg)
  local H = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 }
  local len = #msg
  msg = msg .. "\128" .. string.rep("\0", (55 - len) % 64) .. string.pack(">I8", len * 8)
  local w = {}
  for i = 1, #msg, 64 do
    for j = 1, 16 do w[j] = string.unpack(">I4", msg, i + (j - 1) * 4) end
    for j = 17, 64 do
      local x, y = w[j - 15], w[j - 2]
      local s0 = ror(x, 7) ~ ror(x, 18) ~ (x >> 3)
      local s1 = ror(y, 17) ~ ror(y, 19) ~ (y >> 10)
      w[j] = (w[j - 16] + s0 + w[j - 7] + s1) & 0xffffffff
    end
    local a, b, c, d, e, f, g, h = H[1], H[2], H[3], H[4], H[5], H[6], H[7], H[8]
    for j = 1, 64 do
      local t1 = (h + (ror(e, 6) ~ ror(e, 11) ~ ror(e, 25)) + ((e & f) ~ (~e & g)) + K[j] + w[j]) & 0xffffffff
      local t2 = ((ror(a, 2) ~ ror(a, 13) ~ ror(a, 22)) + ((a & b) ~ (a & c) ~ (b & c))) & 0xffffffff
      h, g, f, e, d, c, b, a = g, f, e, (d + t1) & 0xffffffff, c, b, a, (t1 + t2) & 0xffffffff
    end
    H[1], H[2], H[3], H[4] = (H[1] + a) & 0xffffffff, (H[2] + b) & 0xffffffff, (H[3] + c) & 0xffffffff, (H[4] + d) & 0xffffffff
    H[5], H[6], H[7], H[8] = (H[5] + e) & 0xffffffff, (H[6] + f) & 0xffffffff, (H[7] + g) & 0xffffffff, (H[8] + h) & 0xffffffff
  end
  return string.format(string.rep("%08x", 8), table.unpack(H))
end

-- ------------------------------------------------------------------ clients

local function deck(S)
  local headers = {}
  local token = util.secret(S, "kong_admin_token_secret")
  if token then headers[1] = "Kong-Admin-Token:" .. token end
  local ok, d = pcall(kong.deck, { bin = S.deck_bin, kong_addr = S.kong_admin_url, headers = headers,
                                   select_tags = util.list(S.deck_select_tags), env = util.opt(S.deck_env),
                                   timeout = S.deck_timeout })
  if not ok then recovery.fail("settings: " .. tostring(d)) end
  return d
end

local function prom_client(S)
  local headers
  local token = util.secret(S, "prometheus_token_secret")
  if token then headers = { Authorization = "Bearer " .. token } end
  return prometheus.client{ url = S.prometheus_url, headers = headers, timeout = S.prometheus_timeout }
end

local function good_files(S)
  local files = util.list(S.good_state_files)
  if #files == 0 then recovery.fail("settings: good_state_files is empty: nothing to roll back to") end
  return files
end

local function human(sec)
  sec = math.floor(sec)
  if sec >= 3600 then return string.format("%dh %dm", sec // 3600, sec % 3600 // 60) end
  if sec >= 60 then return string.format("%dm %ds", sec // 60, sec % 60) end
  return sec .. "s"
end

-- Optional precondition: the last policy deploy is recent.
local function check_deploy_window(S)
  local q = util.opt(S.deploy_time_query)
  if not q then return end
  local res, err = prom_client(S):query(q)
  if not res then error("deploy_time_query: " .. tostring(err), 0) end
  local ts
  for _, s in ipairs(res.samples) do
    if type(s.value) == "number" and s.value == s.value and (ts == nil or s.value > ts) then ts = s.value end
  end
  if ts == nil then recovery.fail("no policy deploy recorded (" .. q .. " returns no data): not a bad deploy, not rolling back") end
  if ts > 1e12 then ts = ts / 1000 end -- milliseconds
  local age = recovery.now() - ts
  if age > S.deploy_window then
    recovery.fail(string.format("the last policy deploy was %s ago, outside the %s window: not a bad deploy, not rolling back",
      human(age), human(S.deploy_window)))
  end
  recovery.log.info(string.format("last policy deploy %s ago (window %s)", human(math.max(age, 0)), human(S.deploy_window)),
    { deploy_time = ts, age_seconds = math.floor(age) })
end

-- ------------------------------------------------------------------ verify helpers

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

-- One evaluation of the latency condition: true / false / nil (error), reason.
local function latency_check(ctx, S)
  local c = prom_client(S)
  local g = S.verify_use_alert_expr and prometheus.parse_generator_url(ctx.alert.generatorURL) or nil
  if g then
    local holds, samples = c:holds(g.expr)
    if holds == nil then return nil, "cannot evaluate " .. g.expr .. ": " .. tostring(samples) end
    local mine = own(samples, ctx.alert.labels or {})
    if #mine == 0 then return true, "alert condition cleared: " .. g.expr .. " returns no series for this alert" end
    return false, string.format("alert condition still holds: %s = %s", g.expr, tostring(mine[1].value))
  end
  local q = util.opt(S.verify_query)
  if not q then return true, "no generatorURL expression and no verify_query: latency not checked" end
  local res, err = c:query(q)
  if not res then return nil, "cannot evaluate verify_query: " .. tostring(err) end
  local v
  for _, s in ipairs(res.samples) do
    if type(s.value) == "number" and s.value == s.value and (v == nil or s.value > v) then v = s.value end
  end
  if v == nil then return nil, "verify_query returns no data" end
  if v < S.verify_threshold then return true, string.format("%s = %.4g, below %g", q, v, S.verify_threshold) end
  return false, string.format("%s = %.4g, not below %g", q, v, S.verify_threshold)
end

local function kong_check(S)
  local headers
  local token = util.secret(S, "kong_admin_token_secret")
  if token then headers = { ["Kong-Admin-Token"] = token } end
  local a = kong.admin{ url = S.kong_admin_url, headers = headers, timeout = 10 }
  local ok, why = a:healthy()
  if not ok then return false, why end
  local status_url = util.opt(S.kong_status_url)
  if status_url then
    local ready, rwhy = a:ready(status_url)
    if not ready then return false, "kong /status/ready: " .. rwhy end
    return true, "kong /status ok and ready"
  end
  return true, why
end

return {
  name        = "kong-deck-rollback",
  description = "Roll Kong's configuration back to the last known-good decK state when a gateway alert " ..
                "follows a policy change (the live state drifts from the known-good one)",
  match       = { 'alertname=~"GatewayLatencyHigh|KongPolicyDeploymentFailed"' },
  retries     = 1,     -- one more attempt: a sync that failed half-way converges when re-run
  backoff     = { initial = 20, factor = 2, max = 60 }, -- 10-20 s before the second attempt
  timeout     = 600,   -- dump + diff + sync (deck_timeout each) + verify_wait (300)
  cooldown    = 3600,  -- a rolled-back gateway rests an hour: no flapping between states
  budget      = { runs = 2, per = 3600 },
  escalate    = { "slack", "pagerduty" },
  -- Syncing to a fixed state converges: running it again after a crash
  -- changes nothing that the first run did not already change.
  idempotent  = true,
  settings    = settings,

  run = function(ctx)
    local S = ctx.settings
    local files = good_files(S)
    local d = deck(S)

    -- 1. keep the current state for undo
    local dump, derr = d:dump()
    if not dump then error("dumping the current state: " .. tostring(derr), 0) end
    local max = tonumber(S.dump_log_max) or 0
    local kept = max > 0 and dump:sub(1, max) or ""
    local digest = sha256(dump)
    recovery.log.info(string.format("current Kong state before the rollback: %d bytes, sha256 %s%s", #dump, digest,
      #dump > #kept and (max > 0 and string.format(" (first %d bytes below)", #kept) or "") or ""),
      { bytes = #dump, sha256 = digest, truncated = #dump > #kept, state = kept,
        select_tags = recovery.json.array(util.list(S.deck_select_tags)) })

    -- 2. preconditions: a (recent) policy change
    local in_sync, out = d:diff(files)
    if in_sync == nil then error("deck diff against the known-good state: " .. tostring(out), 0) end
    if in_sync then
      if ctx.job.attempt > 1 then
        recovery.log.info("no drift from the known-good state: an earlier attempt already rolled back; verifying")
        return
      end
      recovery.fail("no policy drift: not a bad deploy (the live configuration matches " .. table.concat(files, ", ") ..
        "), not rolling back")
    end
    recovery.log.info("drift from the known-good state: " .. kong.diff_summary(out),
      { files = recovery.json.array(files), diff = util.short(out, 4000) })
    check_deploy_window(S)

    -- 3. roll back
    local ok, sout, planned = d:sync(files)
    if not ok then error("deck sync of " .. table.concat(files, ", ") .. ": " .. tostring(sout), 0) end
    if planned then
      recovery.log.info("dry-run: would deck sync " .. table.concat(files, ", "), { files = recovery.json.array(files), planned = true })
    else
      recovery.log.info("synced the known-good state " .. table.concat(files, ", ") .. ": " .. kong.diff_summary(sout),
        { files = recovery.json.array(files), output = util.short(sout, 4000) })
    end
  end,

  verify = function(ctx)
    local S = ctx.settings
    local files = good_files(S)
    local d = deck(S)
    if ctx.dry_run then
      local cleared, lat = latency_check(ctx, S)
      if cleared == nil then return false, "dry-run: " .. tostring(lat) end
      local _, k = kong_check(S)
      return true, "dry-run: nothing was changed; now: " .. tostring(lat) .. "; " .. tostring(k)
    end
    local in_sync, out = d:diff(files)
    if in_sync == nil then return false, "deck diff failed: " .. tostring(out) end
    if not in_sync then return false, "still drifting from the known-good state after the sync: " .. kong.diff_summary(out) end
    local healthy, kwhy = kong_check(S)
    if not healthy then return false, "kong unhealthy: " .. kwhy end
    local ok, reason = util.wait_until(function()
      local cleared, why = latency_check(ctx, S)
      return cleared == true, why
    end, { timeout = S.verify_wait, interval = S.verify_interval })
    if not ok then return false, reason end
    return true, "deck diff clean; " .. kwhy .. "; " .. reason
  end,
}

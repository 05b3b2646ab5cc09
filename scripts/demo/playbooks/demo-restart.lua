-- Demo playbook: shows the shape of a recovery without touching anything.
-- It reads recoveryd's own health endpoint (reads run even in dry-run),
-- "restarts" a pretend service with a POST (recorded as planned in dry-run),
-- and verifies by reading /readyz.
local base = "http://127.0.0.1:9095"

return {
  name        = "demo-restart",
  description = "Restart the demo service and check that it is ready again",
  match       = { 'alertname="DemoServiceDown"' },
  retries     = 1,
  backoff     = { initial = 2, factor = 2, max = 10 },
  timeout     = 30,
  cooldown    = 10,
  budget      = { runs = 20, per = 3600 },

  run = function(ctx)
    local service = ctx.alert.labels.service or "demo"
    local health, err = recovery.http{ url = base .. "/healthz", timeout = 5 }
    if not health then error("health check failed: " .. err) end
    recovery.log.info("service looks down, restarting", { service = service })
    local resp, rerr = recovery.http{
      method = "POST",
      url = base .. "/demo/services/" .. service .. "/restart",
      json = { reason = ctx.job.reason, job = ctx.job.id },
    }
    if not resp then error("restart failed: " .. rerr) end
    if not resp.planned and resp.status >= 300 then
      error("restart answered " .. resp.status)
    end
  end,

  verify = function(ctx)
    local r, err = recovery.http{ url = base .. "/readyz", timeout = 5 }
    if not r then return false, err end
    return r.status == 200, "readyz answered " .. r.status
  end,
}

-- recoveryd configuration for PRODUCTION (k8s/overlays/production/): the
-- base's k8s/base/config/config.lua plus playbook_overrides requiring approval for
-- kong-deck-rollback and schema-rollback. Keep everything else equal to the
-- base (CI compares them: tests/deploy/test_deploy_overlays.py).
--
-- EXAMPLE VALUES: the names, namespaces and URLs below describe an example
-- cluster. Adjust them to yours before deploying.
--
-- Keys are recoveryd's long flags with "_" for "-" (docs/configuration.md).
-- Paths, the listen address and the secret files are flags in
-- k8s/base/deployment.yaml, which win over this file; keep them there.
-- playbook_settings overrides the `settings` table of a playbook by name
-- (one level deep; each playbook documents its keys). A name that is not a
-- loaded playbook is an error, so --check-config catches typos.
return {
  max_jobs = 8,            -- attempts at once; deployment.yaml's memory limit assumes 8
  log_level = "info",

  playbook_settings = {
    -- playbooks/settings-sync-recovery.lua: restart the settings sync job.
    -- The Role in rbac-settings-sync-recovery.yaml grants exactly what this
    -- needs in target_namespace; keep the two in step.
    ["settings-sync-recovery"] = {
      target_namespace = "settings",
      target_name = "settings-sync-job",
      restart_method = "rollout",       -- "rollout", "delete_pods" or "cronjob"
      target_kind = "deployment",
      registry_health_url = "http://settings-registry.settings.svc:8080/api/settings/health",
      prometheus_url = "http://prometheus-operated.monitoring.svc:9090",
    },
    -- playbooks/schema-rollback.lua: roll an event schema back after a
    -- validation-failure spike. Needs no Kubernetes permission.
    ["schema-rollback"] = {
      registry_url = "http://schema-registry.event-schemas.svc:8081",
      registry_auth = "basic",  -- schema-registry-username / -password of recoveryd-playbook-secrets
      prometheus_url = "http://prometheus-operated.monitoring.svc:9090",
    },
    -- playbooks/kong-deck-rollback.lua: roll Kong back to the last known-good
    -- decK state. The state file comes from the ConfigMap recoveryd-kong-state
    -- (docs/operations.md, "Kong known-good state"); without it the playbook
    -- fails and escalates instead of syncing anything.
    ["kong-deck-rollback"] = {
      kong_admin_url = "http://kong-admin.kong.svc:8001",
      kong_admin_token_secret = "kong-admin-token",  -- key of recoveryd-playbook-secrets
      good_state_files = { "/etc/recoveryd/kong/last-known-good.yaml" },
      prometheus_url = "http://prometheus-operated.monitoring.svc:9090",
    },
  },

  -- Approval. A job of these playbooks first runs as a dry-run plan (reads
  -- done, writes listed), then waits in state awaiting_approval: Slack and
  -- PagerDuty are told "approval needed" with the plan, and an operator
  -- approves (POST /api/v1/jobs/ID/approve) or rejects it (.../reject).
  --   kong-deck-rollback  syncs the whole gateway configuration (no
  --                       deck_select_tags) back to the saved known-good
  --                       state: every route and plugin of every team, and a
  --                       stale state file undoes intended changes.
  --   schema-rollback     rolls a shared event schema, which every producer
  --                       and consumer validates against, back to its
  --                       previous version.
  -- Both change shared state that other teams own, and undoing either is
  -- manual work. settings-sync-recovery needs no approval: restarting the
  -- sync job is low-risk and reversible, and waiting for a human would only
  -- delay a repair that needs none.
  -- timeout = 900: 15 minutes to acknowledge the page and read the plan.
  -- Longer, and the plan (made from the state at the time of the alert)
  -- grows stale. Unapproved by then, the job fails (outcome
  -- approval_timeout) and escalates; trigger it again by hand for a fresh
  -- plan. While it waits, repeats of the alert join the job, and the alert
  -- resolving cancels it.
  playbook_overrides = {
    ["kong-deck-rollback"] = { approval = { required = true, timeout = 900 } },
    ["schema-rollback"] = { approval = { required = true, timeout = 900 } },
  },
}

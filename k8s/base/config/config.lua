-- recoveryd configuration for the Kubernetes deployment
-- (k8s/base/deployment.yaml mounts this file as /etc/recoveryd/config.lua).
-- The overlays replace it with their own copy plus their settings:
-- k8s/overlays/production/config.lua (approval) and
-- k8s/overlays/staging/config.lua (dry_run). Change the three together (CI
-- compares them: tests/deploy/test_deploy_overlays.py).
--
-- EXAMPLE VALUES: the names, namespaces and URLs below describe an example
-- cluster. Adjust them to yours before deploying.
--
-- Keys are recoveryd's long flags with "_" for "-" (docs/configuration.md).
-- Paths, the listen address and the secret files are flags in
-- deployment.yaml, which win over this file; keep them there.
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
}

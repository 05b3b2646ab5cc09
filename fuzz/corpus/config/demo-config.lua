-- The embedded default: SQLite journal in the working directory, the demo
-- playbook, everything in dry-run, no tokens (loopback only).
return {
  listen = "127.0.0.1:9095",
  playbooks = "scripts/demo/playbooks",
  lua_path = "lua",
  state = "recoveryd-demo.db",
  dry_run = true,
  insecure_no_auth = true,
}

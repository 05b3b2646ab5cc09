/* Settings from the command line and the Lua config file (DESIGN.md §6).
 * The file's keys are the long flags with '_' for '-'; flags win. */
#ifndef RECOVERYD_CONFIG_H
#define RECOVERYD_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "recoveryd/common.h"

#define CONFIG_EXEC_ALLOW_MAX 64

struct config {
	char *config;
	char *listen;
	char *playbooks;
	char *lua_path;
	char *state;
	int dry_run;
	char *tokens_file;
	char *webhook_token_file;
	char *operator_token_file;
	int insecure_no_auth;
	char *slack_webhook_url_file;
	char *pagerduty_routing_key_file;
	char *pagerduty_url;
	char *grafana_url;        /* annotations: Grafana's base URL */
	char *grafana_token_file;
	char *grafana_dashboard_uid;
	char *secrets_dir;
	char *exec_allow[CONFIG_EXEC_ALLOW_MAX + 1]; /* NULL-terminated */
	char *env_allow[CONFIG_EXEC_ALLOW_MAX + 1];
	char *read_allow[CONFIG_EXEC_ALLOW_MAX + 1];
	char *escalate_default[CONFIG_EXEC_ALLOW_MAX + 1];
	char *external_url;
	double escalation_retry_initial; /* seconds */
	double escalation_retry_max;     /* seconds */
	int check_config;
	double body_max;          /* bytes */
	double max_jobs;          /* attempts running at once */
	double queue_max;         /* unfinished jobs before 503 */
	double drain_timeout;     /* seconds */
	double watchdog_unhealthy; /* seconds the loop may stand still before /healthz fails */
	double watchdog_exit;     /* seconds before the process exits (status 70) */
	double lua_memory;        /* bytes per attempt */
	double conn_limit;
	double conn_timeout;      /* seconds */
	double conn_per_ip;       /* simultaneous connections per client address */
	double request_timeout;   /* seconds for a request's headers and body */
	double http_timeout;      /* recovery.http default, seconds */
	double journal_group_max; /* batches per journal transaction; 0 = all */
	char *replica_id;         /* shared journal: this replica's name (NULL: HOSTNAME-PID) */
	double lease_timeout;     /* seconds */
	double poll_interval;     /* seconds */
	double retain;            /* days ended jobs and audit rows are kept; 0 = forever */
	char *log_level;
	char *alert;              /* `run`: the alert file */
	char *output;             /* `run`: "text" (default) or "json" */
	int no_retries;           /* `run`: one attempt, whatever the playbook's retries */
	int verbose;              /* `run`: the daemon's log lines on stderr too */
	char *playbook_settings;  /* config file only: JSON {"<playbook>": {settings}} */
	char *playbook_overrides; /* config file only: JSON {"<playbook>": {retries, ...}} */
	int version;
	int help;
};

/* Fill cfg with defaults, then the config file (if --config is given), then
 * the flags. Returns 0, or -1 with err explaining (unknown flag, bad value,
 * unreadable or invalid config file). args are the arguments after the
 * program name (and after `run PLAYBOOK`). */
int config_load(struct config *cfg, int argc, char **argv, char *err, size_t errlen);
void config_free(struct config *cfg);
void config_usage(FILE *f);

#endif

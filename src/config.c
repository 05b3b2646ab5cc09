/* Flags and the Lua config file, both driven by one option table so the
 * two can never disagree on names or types. */
#include "recoveryd/config.h"

#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "recoveryd/lua_json.h"
#include "recoveryd/http.h"
#include "recoveryd/sandbox.h"

#define CONFIG_FILE_MAX (1024 * 1024)

enum opt_type { O_STR, O_BOOL, O_NUM, O_LIST };

struct opt {
	const char *name;  /* long flag, '-' separated */
	enum opt_type type;
	size_t off;
	int file_ok;       /* may be set from the config file */
	const char *arg;
	const char *help;
};

#define OFF(f) offsetof(struct config, f)

static const struct opt opts[] = {
	{"config", O_STR, OFF(config), 0, "FILE", "Lua config file (keys: the long flags with _)"},
	{"listen", O_STR, OFF(listen), 1, "ADDR:PORT", "HTTP listen address (default 127.0.0.1:9095; port 0 = any)"},
	{"playbooks", O_STR, OFF(playbooks), 1, "DIR", "playbook directory"},
	{"lua-path", O_STR, OFF(lua_path), 1, "DIR", "helper library directory for require"},
	{"state", O_STR, OFF(state), 1, "PATH|URL", "job journal: SQLite file (default recoveryd.db) or postgres://USER@HOST:PORT/DB, shared by replicas"},
	{"replica-id", O_STR, OFF(replica_id), 1, "NAME", "this replica's name in leases on a shared journal (default HOSTNAME-PID)"},
	{"lease-timeout", O_NUM, OFF(lease_timeout), 1, "SECONDS", "lease of a job or escalation on a shared journal; failover time (default 15)"},
	{"poll-interval", O_NUM, OFF(poll_interval), 1, "SECONDS", "how often a replica looks for free work on a shared journal (default 2)"},
	{"retain", O_NUM, OFF(retain), 1, "DAYS", "delete ended jobs and audit rows older than this (default 30; 0 = keep forever)"},
	{"dry-run", O_BOOL, OFF(dry_run), 1, NULL, "every job is a dry-run: reads run, writes are planned"},
	{"tokens-file", O_STR, OFF(tokens_file), 1, "F", "named principals: NAME ROLE SHA256 [PLAYBOOKS] per line"},
	{"webhook-token-file", O_STR, OFF(webhook_token_file), 1, "F", "token of an alertmanager principal (POST /webhook)"},
	{"operator-token-file", O_STR, OFF(operator_token_file), 1, "F", "token of an operator principal"},
	{"insecure-no-auth", O_BOOL, OFF(insecure_no_auth), 1, NULL, "allow running without any token"},
	{"slack-webhook-url-file", O_STR, OFF(slack_webhook_url_file), 1, "F", "Slack incoming webhook URL"},
	{"pagerduty-routing-key-file", O_STR, OFF(pagerduty_routing_key_file), 1, "F", "PagerDuty routing key"},
	{"pagerduty-url", O_STR, OFF(pagerduty_url), 1, "URL", "PagerDuty Events API v2 endpoint"},
	{"grafana-url", O_STR, OFF(grafana_url), 1, "URL", "Grafana base URL: every job that runs is marked there as a region (annotation)"},
	{"grafana-token-file", O_STR, OFF(grafana_token_file), 1, "F", "Grafana service-account token"},
	{"grafana-dashboard-uid", O_STR, OFF(grafana_dashboard_uid), 1, "UID", "put the annotations on that dashboard (default: organization-wide)"},
	{"external-url", O_STR, OFF(external_url), 1, "URL", "base URL of recoveryd for job links in escalations"},
	{"escalate-default", O_LIST, OFF(escalate_default), 1, "SINK", "sinks for playbooks without escalate (repeatable; default: every configured sink)"},
	{"escalation-retry-initial", O_NUM, OFF(escalation_retry_initial), 1, "SECONDS", "first delay before re-sending a notification (default 1)"},
	{"escalation-retry-max", O_NUM, OFF(escalation_retry_max), 1, "SECONDS", "longest delay between re-sends (default 300)"},
	{"secrets-dir", O_STR, OFF(secrets_dir), 1, "DIR", "where recovery.secret(name) reads"},
	{"exec-allow", O_LIST, OFF(exec_allow), 1, "PATH", "program recovery.exec may run (repeatable)"},
	{"env-allow", O_LIST, OFF(env_allow), 1, "NAME", "variable recovery.env may read (repeatable; default KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT)"},
	{"read-allow", O_LIST, OFF(read_allow), 1, "DIR", "directory recovery.read_file may read (repeatable; default /var/run/secrets/kubernetes.io/serviceaccount)"},
	{"check-config", O_BOOL, OFF(check_config), 0, NULL, "validate config and playbooks, then exit"},
	{"body-max", O_NUM, OFF(body_max), 1, "BYTES", "largest request body (default 4194304)"},
	{"max-jobs", O_NUM, OFF(max_jobs), 1, "N", "attempts running at once (default 16)"},
	{"queue-max", O_NUM, OFF(queue_max), 1, "N", "unfinished jobs before 503 (default 10000)"},
	{"drain-timeout", O_NUM, OFF(drain_timeout), 1, "SECONDS", "SIGTERM grace for running attempts (default 30)"},
	{"watchdog-unhealthy", O_NUM, OFF(watchdog_unhealthy), 1, "SECONDS", "/healthz fails when the event loop has not turned for this long (default 5)"},
	{"watchdog-exit", O_NUM, OFF(watchdog_exit), 1, "SECONDS", "exit with status 70 when the event loop has been stuck this long (default 30)"},
	{"lua-memory", O_NUM, OFF(lua_memory), 1, "BYTES", "Lua memory per attempt (default 67108864)"},
	{"conn-limit", O_NUM, OFF(conn_limit), 1, "N", "simultaneous HTTP connections (default 10000; lowered to fit the open-file limit)"},
	{"conn-per-ip", O_NUM, OFF(conn_per_ip), 1, "N", "simultaneous HTTP connections per client address (default 64; 0 = no limit)"},
	{"conn-timeout", O_NUM, OFF(conn_timeout), 1, "SECONDS", "idle HTTP connection timeout (default 30)"},
	{"request-timeout", O_NUM, OFF(request_timeout), 1, "SECONDS", "time a client has to send a request's headers and body (default 15)"},
	{"http-timeout", O_NUM, OFF(http_timeout), 1, "SECONDS", "default recovery.http timeout (default 30)"},
	{"journal-group-max", O_NUM, OFF(journal_group_max), 1, "N", "batches per journal transaction (default 0 = all queued; 1 = no group commit)"},
	{"log-level", O_STR, OFF(log_level), 1, "LEVEL", "debug, info, warn or error (default info)"},
	{"alert", O_STR, OFF(alert), 0, "FILE", "run: the alert (v4 payload or one alert object)"},
	{"output", O_STR, OFF(output), 0, "FORMAT", "run: text (the timeline, default) or json (the job records)"},
	{"no-retries", O_BOOL, OFF(no_retries), 0, NULL, "run: one attempt, whatever the playbook's retries"},
	{"verbose", O_BOOL, OFF(verbose), 0, NULL, "run: also print the log lines (JSON, stderr)"},
	{"version", O_BOOL, OFF(version), 0, NULL, "print the version"},
	{"help", O_BOOL, OFF(help), 0, NULL, "this text"},
};

#define NOPTS (sizeof(opts) / sizeof(opts[0]))

void config_usage(FILE *f)
{
	fprintf(f, "usage: recoveryd [OPTIONS]      (-h, help: this text; -V, version: the version)\n"
	           "       recoveryd run PLAYBOOK --alert FILE [--dry-run] [--no-retries] [--output json] [OPTIONS]\n"
	           "       recoveryd check [PLAYBOOK_DIR...] [OPTIONS]   (every problem; sinks and tokens warn)\n"
	           "       recoveryd migrate --state PATH|postgres://... [--config F]\n"
	           "       recoveryd ctl COMMAND [ARGS]   (the HTTP API's client; recoveryd ctl -h)\n\n");
	for (size_t i = 0; i < NOPTS; i++) {
		char left[64];
		snprintf(left, sizeof(left), "--%s%s%s", opts[i].name, opts[i].arg ? " " : "",
		         opts[i].arg ? opts[i].arg : "");
		fprintf(f, "  %-34s %s\n", left, opts[i].help);
	}
}

static char **str_at(struct config *c, const struct opt *o)
{
	return (char **)((char *)c + o->off);
}

static int set_value(struct config *c, const struct opt *o, const char *v, char *err, size_t errlen)
{
	char *end;
	double d;

	switch (o->type) {
	case O_STR:
		free(*str_at(c, o));
		*str_at(c, o) = strdup(v);
		return 0;
	case O_BOOL:
		if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes"))
			*(int *)((char *)c + o->off) = 1;
		else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no"))
			*(int *)((char *)c + o->off) = 0;
		else
			goto bad;
		return 0;
	case O_NUM:
		errno = 0;
		d = strtod(v, &end);
		if (errno || end == v || *end || !isfinite(d) || d < 0)
			goto bad;
		*(double *)((char *)c + o->off) = d;
		return 0;
	case O_LIST: {
		char **l = (char **)((char *)c + o->off);
		size_t n = 0;
		while (l[n])
			n++;
		if (n >= CONFIG_EXEC_ALLOW_MAX) {
			snprintf(err, errlen, "--%s: at most %d entries", o->name, CONFIG_EXEC_ALLOW_MAX);
			return -1;
		}
		if (o->off == OFF(escalate_default) && strcmp(v, "slack") && strcmp(v, "pagerduty")) {
			snprintf(err, errlen, "--%s %s: expected slack or pagerduty", o->name, v);
			return -1;
		}
		if (o->off != OFF(env_allow) && o->off != OFF(escalate_default) && v[0] != '/') {
			snprintf(err, errlen, "--%s %s: must be an absolute path", o->name, v);
			return -1;
		}
		l[n] = strdup(v);
		return 0;
	}
	}
bad:
	snprintf(err, errlen, "--%s: invalid value '%s'", o->name, v);
	return -1;
}

static const struct opt *find_opt(const char *name, int underscores)
{
	char buf[64];
	snprintf(buf, sizeof(buf), "%s", name);
	if (underscores)
		for (char *p = buf; *p; p++)
			if (*p == '_')
				*p = '-';
	for (size_t i = 0; i < NOPTS; i++)
		if (strcmp(opts[i].name, buf) == 0)
			return &opts[i];
	return NULL;
}

static void clear_list(char **l)
{
	for (size_t i = 0; l[i]; i++) {
		free(l[i]);
		l[i] = NULL;
	}
}

static char **list_at(struct config *c, const struct opt *o)
{
	return (char **)((char *)c + o->off);
}

/* Evaluate the config file in a sandbox; it returns a table of settings. */
static int load_file(struct config *c, const char *path, char *err, size_t errlen)
{
	struct sandbox sb = {.mem_max = 16 << 20};
	size_t len;
	char *src = rd_read_file(path, CONFIG_FILE_MAX, &len, 0);
	lua_State *L = NULL;
	int rc = -1;
	char chunk[300];

	if (!src) {
		snprintf(err, errlen, "config %s: %s", path, strerror(errno));
		return -1;
	}
	L = sandbox_new(&sb);
	if (!L) {
		snprintf(err, errlen, "config %s: out of memory", path);
		goto out;
	}
	snprintf(chunk, sizeof(chunk), "@%s", path);
	sb.deadline = rd_mono() + 5;
	if (sandbox_load(L, src, len, chunk) != LUA_OK || sandbox_call(L, 0, 1) != LUA_OK) {
		snprintf(err, errlen, "config: %s", lua_tostring(L, -1));
		goto out;
	}
	if (!lua_istable(L, -1)) {
		snprintf(err, errlen, "config %s: must return a table of settings", path);
		goto out;
	}
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
		const struct opt *o = k ? find_opt(k, 1) : NULL;
		char vbuf[64];
		/* Lua strings may hold NUL bytes; C strings end at the first one,
		 * so "listen\0x" would read as listen. Refuse rather than cut. */
		if (sandbox_has_nul(L, -2)) {
			snprintf(err, errlen, "config %s: a setting name contains a NUL byte", path);
			goto out;
		}
		if (k && (strcmp(k, "playbook_settings") == 0 || strcmp(k, "playbook_overrides") == 0)) {
			char **dst = strcmp(k, "playbook_settings") == 0 ? &c->playbook_settings : &c->playbook_overrides;
			/* Per-playbook overrides of `settings`: kept as JSON. */
			const char *jerr = NULL;
			cJSON *v;
			if (!lua_istable(L, -1)) {
				snprintf(err, errlen, "config %s: %s must be a table of tables", path, k);
				goto out;
			}
			v = lua_json_from(L, -1, &jerr);
			if (!v || !cJSON_IsObject(v)) {
				snprintf(err, errlen, "config %s: %s: %s", path, k,
				         jerr ? jerr : "must be a table keyed by playbook name");
				cJSON_Delete(v);
				goto out;
			}
			for (cJSON *c = v->child; c; c = c->next)
				if (!cJSON_IsObject(c)) {
					snprintf(err, errlen, "config %s: %s[\"%s\"] must be a table", path, k,
					         c->string);
					cJSON_Delete(v);
					goto out;
				}
			free(*dst);
			*dst = cJSON_PrintUnformatted(v);
			cJSON_Delete(v);
			lua_pop(L, 1);
			continue;
		}
		if (!o || !o->file_ok || strchr(k, '-')) {
			snprintf(err, errlen, "config %s: unknown setting '%s'", path, k ? k : "(non-string key)");
			goto out;
		}
		if (o->type == O_LIST) {
			if (!lua_istable(L, -1)) {
				snprintf(err, errlen, "config %s: %s must be a list of paths", path, k);
				goto out;
			}
			clear_list(list_at(c, o));
			for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, -1); i++) {
				lua_rawgeti(L, -1, i);
				if (lua_type(L, -1) != LUA_TSTRING) {
					snprintf(err, errlen, "config %s: %s[%lld] must be a string", path, k,
					         (long long)i);
					goto out;
				}
				const char *v = lua_tostring(L, -1);
				if (sandbox_has_nul(L, -1)) {
					snprintf(err, errlen, "config %s: %s[%lld] contains a NUL byte", path, k,
					         (long long)i);
					goto out;
				}
				if (set_value(c, o, v, err, errlen) < 0)
					goto out;
				lua_pop(L, 1);
			}
		} else {
			const char *v;
			if (o->type == O_BOOL && lua_isboolean(L, -1)) {
				v = lua_toboolean(L, -1) ? "true" : "false";
			} else if (o->type == O_NUM && lua_type(L, -1) == LUA_TNUMBER) {
				snprintf(vbuf, sizeof(vbuf), "%.17g", lua_tonumber(L, -1));
				v = vbuf;
			} else if (o->type == O_STR && lua_type(L, -1) == LUA_TSTRING) {
				v = lua_tostring(L, -1);
				if (sandbox_has_nul(L, -1)) {
					snprintf(err, errlen, "config %s: %s contains a NUL byte", path, k);
					goto out;
				}
			} else {
				snprintf(err, errlen, "config %s: %s has the wrong type (%s)", path, k,
				         luaL_typename(L, -1));
				goto out;
			}
			if (set_value(c, o, v, err, errlen) < 0)
				goto out;
		}
		lua_pop(L, 1);
	}
	rc = 0;
out:
	if (L)
		lua_close(L);
	free(src);
	return rc;
}

static void defaults(struct config *c)
{
	memset(c, 0, sizeof(*c));
	c->listen = strdup("127.0.0.1:9095");
	c->playbooks = strdup(RECOVERYD_DEFAULT_PLAYBOOKS);
	c->lua_path = strdup(RECOVERYD_DEFAULT_LUA_PATH);
	c->state = strdup("recoveryd.db");
	c->pagerduty_url = strdup("https://events.pagerduty.com/v2/enqueue");
	c->body_max = (double)HTTP_BODY_MAX_DEFAULT;
	c->max_jobs = 16;
	c->queue_max = 10000;
	c->drain_timeout = 30;
	c->lease_timeout = 15;
	c->poll_interval = 2;
	c->retain = 30;
	c->watchdog_unhealthy = 5;
	c->watchdog_exit = 30;
	c->lua_memory = 64 * 1024 * 1024;
	c->conn_limit = HTTP_CONN_LIMIT_DEFAULT;
	c->request_timeout = HTTP_REQUEST_TIMEOUT_DEFAULT;
	c->conn_timeout = HTTP_CONN_TIMEOUT_DEFAULT;
	c->conn_per_ip = 64;
	c->http_timeout = 30;
	c->escalation_retry_initial = 1;
	c->escalation_retry_max = 300;
	c->log_level = strdup("info");
	c->env_allow[0] = strdup("KUBERNETES_SERVICE_HOST");
	c->env_allow[1] = strdup("KUBERNETES_SERVICE_PORT");
	c->read_allow[0] = strdup("/var/run/secrets/kubernetes.io/serviceaccount");
}

int config_load(struct config *c, int argc, char **argv, char *err, size_t errlen)
{
	defaults(c);
	/* The file first, wherever --config appears, so flags override it. */
	for (int i = 0; i < argc; i++) {
		const char *v = NULL;
		if (!strcmp(argv[i], "--config") && i + 1 < argc)
			v = argv[i + 1];
		else if (!strncmp(argv[i], "--config=", 9))
			v = argv[i] + 9;
		if (v) {
			free(c->config);
			c->config = strdup(v);
		}
	}
	if (c->config && load_file(c, c->config, err, errlen) < 0)
		return -1;
	unsigned long long lists_from_flags = 0; /* bit per option: flags replace the file's list */
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *eq, *v;
		char name[64];
		const struct opt *o;

		if (strncmp(a, "--", 2) != 0) {
			snprintf(err, errlen, "unexpected argument '%s' (see --help)", a);
			return -1;
		}
		eq = strchr(a, '=');
		snprintf(name, sizeof(name), "%.*s", eq ? (int)(eq - a - 2) : (int)strlen(a + 2), a + 2);
		o = find_opt(name, 0);
		if (!o) {
			snprintf(err, errlen, "unknown option '--%s' (see --help)", name);
			return -1;
		}
		if (o->type == O_BOOL && !eq) {
			v = "true";
		} else if (eq) {
			v = eq + 1;
		} else if (i + 1 < argc) {
			v = argv[++i];
		} else {
			snprintf(err, errlen, "--%s needs a value", name);
			return -1;
		}
		if (o->type == O_LIST && !(lists_from_flags & (1ULL << (o - opts)))) {
			clear_list(list_at(c, o));
			lists_from_flags |= 1ULL << (o - opts);
		}
		if (set_value(c, o, v, err, errlen) < 0)
			return -1;
	}
	if (strcmp(c->log_level, "debug") && strcmp(c->log_level, "info") && strcmp(c->log_level, "warn") &&
	    strcmp(c->log_level, "error")) {
		snprintf(err, errlen, "--log-level: expected debug, info, warn or error");
		return -1;
	}
	if (c->output && strcmp(c->output, "text") && strcmp(c->output, "json")) {
		snprintf(err, errlen, "--output: expected text or json");
		return -1;
	}
	if (c->body_max < 1024) {
		snprintf(err, errlen, "--body-max: at least 1024 bytes");
		return -1;
	}
	if (c->max_jobs < 1 || c->queue_max < 1) {
		snprintf(err, errlen, "--max-jobs and --queue-max must be at least 1");
		return -1;
	}
	if (c->request_timeout < 1 || c->conn_limit < 1) {
		snprintf(err, errlen, "--request-timeout and --conn-limit must be at least 1");
		return -1;
	}
	/* Under an hour would cut into cooldowns and run budgets, which count
	 * the jobs the journal still holds. */
	if (c->retain != 0 && (c->retain < 1.0 / 24 || c->retain > 36500)) {
		snprintf(err, errlen, "--retain must be 0 (keep forever) or from 0.042 (an hour) to 36500 days");
		return -1;
	}
	if (c->lease_timeout < 1 || c->poll_interval <= 0 || c->poll_interval > c->lease_timeout) {
		snprintf(err, errlen, "--lease-timeout must be at least 1 second and --poll-interval between 0 and it");
		return -1;
	}
	if (c->replica_id) {
		size_t n = strlen(c->replica_id);
		/* application_name holds "recoveryd/" and it: 63 bytes at most */
		if (n < 1 || n > 48 || strspn(c->replica_id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		                                              "0123456789._-") != n) {
			snprintf(err, errlen, "--replica-id: 1 to 48 of A-Z a-z 0-9 . _ -");
			return -1;
		}
	}
	if (!c->grafana_url != !c->grafana_token_file) {
		snprintf(err, errlen, "--grafana-url and --grafana-token-file go together");
		return -1;
	}
	if (c->grafana_url && strncmp(c->grafana_url, "http://", 7) != 0 && strncmp(c->grafana_url, "https://", 8) != 0) {
		snprintf(err, errlen, "--grafana-url %s: expected an http:// or https:// URL", c->grafana_url);
		return -1;
	}
	if (c->lua_memory < 1024 * 1024) {
		snprintf(err, errlen, "--lua-memory: at least 1048576 bytes");
		return -1;
	}
	return 0;
}

void config_free(struct config *c)
{
	for (size_t i = 0; i < NOPTS; i++)
		if (opts[i].type == O_STR) {
			free(*str_at(c, &opts[i]));
			*str_at(c, &opts[i]) = NULL;
		} else if (opts[i].type == O_LIST) {
			clear_list(list_at(c, &opts[i]));
		}
	free(c->playbook_settings);
	c->playbook_settings = NULL;
	free(c->playbook_overrides);
	c->playbook_overrides = NULL;
}

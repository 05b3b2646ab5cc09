/* recoveryd: flags and config, signals (SIGTERM drains, SIGHUP reloads),
 * wiring of journal, engine and HTTP; also `run PLAYBOOK --alert FILE` and
 * --check-config. */
#include <curl/curl.h>
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "recoveryd/alert.h"
#include "recoveryd/config.h"
#include "recoveryd/ctl.h"
#include "recoveryd/engine.h"
#include "recoveryd/escalate.h"
#include "recoveryd/http.h"
#include "recoveryd/log.h"
#include "recoveryd/lua_api.h"
#include "recoveryd/auth.h"
#include "recoveryd/metrics.h"
#include "recoveryd/playbook.h"
#include "recoveryd/retain.h"
#include "recoveryd/store.h"
#include "recoveryd/watchdog.h"

#define TOKEN_MAX 4096
#define ALERT_FILE_MAX (4 * 1024 * 1024)

struct tokens {
	char *webhook, *operator_;
	char *slack_url, *pd_key; /* escalation sinks: secrets too */
	char *grafana_token;
	struct auth *auth;        /* the principals: tokens file and the two legacy files */
};

static void tokens_free(struct tokens *t)
{
	if (t->webhook)
		explicit_bzero(t->webhook, strlen(t->webhook));
	if (t->operator_)
		explicit_bzero(t->operator_, strlen(t->operator_));
	if (t->slack_url)
		explicit_bzero(t->slack_url, strlen(t->slack_url));
	if (t->pd_key)
		explicit_bzero(t->pd_key, strlen(t->pd_key));
	if (t->grafana_token)
		explicit_bzero(t->grafana_token, strlen(t->grafana_token));
	free(t->grafana_token);
	t->grafana_token = NULL;
	free(t->webhook);
	free(t->operator_);
	free(t->slack_url);
	free(t->pd_key);
	t->webhook = t->operator_ = t->slack_url = t->pd_key = NULL;
	auth_free(t->auth);
	t->auth = NULL;
}

/* Read the token files; an empty file is an error, not "no auth". */
static int tokens_load(const struct config *c, struct tokens *t, char *err, size_t errlen)
{
	const char *files[2] = {c->webhook_token_file, c->operator_token_file};
	char **dst[2] = {&t->webhook, &t->operator_};

	for (int i = 0; i < 2; i++) {
		if (!files[i])
			continue;
		*dst[i] = rd_read_file(files[i], TOKEN_MAX, NULL, 1);
		if (!*dst[i]) {
			snprintf(err, errlen, "token file %s: %s", files[i], strerror(errno));
			return -1;
		}
		if (!**dst[i]) {
			snprintf(err, errlen, "token file %s is empty", files[i]);
			return -1;
		}
	}
	const char *sink_files[3] = {c->slack_webhook_url_file, c->pagerduty_routing_key_file,
	                             c->grafana_token_file};
	char **sink_dst[3] = {&t->slack_url, &t->pd_key, &t->grafana_token};
	static const char *const sink_what[3] = {"Slack webhook URL file", "PagerDuty routing key file",
	                                         "Grafana token file"};
	for (int i = 0; i < 3; i++) {
		if (!sink_files[i])
			continue;
		*sink_dst[i] = rd_read_file(sink_files[i], TOKEN_MAX, NULL, 1);
		if (!*sink_dst[i] || !**sink_dst[i]) {
			snprintf(err, errlen, "%s %s: %s", sink_what[i], sink_files[i],
			         *sink_dst[i] ? "empty" : strerror(errno));
			return -1;
		}
	}
	if (!(t->auth = auth_new())) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (c->tokens_file && auth_load_file(t->auth, c->tokens_file, err, errlen) < 0)
		return -1;
	/* The legacy files: one alertmanager and one operator principal. */
	if ((t->webhook && auth_add_token(t->auth, "alertmanager", ROLE_ALERTMANAGER, t->webhook) < 0) ||
	    (t->operator_ && auth_add_token(t->auth, "operator", ROLE_OPERATOR, t->operator_) < 0)) {
		snprintf(err, errlen, "the tokens file names a principal \"alertmanager\" or \"operator\", "
		         "the names of the legacy token files' principals: rename it or drop the legacy file");
		return -1;
	}
	if (auth_count(t->auth) == 0 && !c->insecure_no_auth) {
		snprintf(err, errlen,
		         "no token configured: give --tokens-file (or --webhook-token-file and "
		         "--operator-token-file), or --insecure-no-auth to run without authentication");
		return -1;
	}
	return 0;
}

static int check_readable(const char *what, const char *path, char *err, size_t errlen)
{
	if (path && access(path, R_OK) != 0) {
		snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
		return -1;
	}
	return 0;
}

/* Everything --check-config validates besides the playbooks. */
static int check_files(const struct config *c, char *err, size_t errlen)
{
	struct stat st;

	if (check_readable("slack webhook URL file", c->slack_webhook_url_file, err, errlen) < 0 ||
	    check_readable("PagerDuty routing key file", c->pagerduty_routing_key_file, err, errlen) < 0 ||
	    check_readable("Grafana token file", c->grafana_token_file, err, errlen) < 0)
		return -1;
	if (c->secrets_dir && (stat(c->secrets_dir, &st) != 0 || !S_ISDIR(st.st_mode))) {
		snprintf(err, errlen, "secrets directory %s: not a directory", c->secrets_dir);
		return -1;
	}
	for (size_t i = 0; c->exec_allow[i]; i++)
		if (access(c->exec_allow[i], X_OK) != 0) {
			snprintf(err, errlen, "--exec-allow %s: %s", c->exec_allow[i], strerror(errno));
			return -1;
		}
	return 0;
}

static enum log_level level_of(const char *s)
{
	if (!strcmp(s, "debug"))
		return LOG_DEBUG;
	if (!strcmp(s, "warn"))
		return LOG_WARN;
	if (!strcmp(s, "error"))
		return LOG_ERROR;
	return LOG_INFO;
}

static unsigned bound_port; /* for job links without --external-url */

static void configure_sinks(const struct config *c, const struct tokens *t)
{
	char ext[300];
	struct escalate_conf ec = {t->slack_url, t->pd_key, c->pagerduty_url, c->external_url,
	                           c->escalate_default[0] ? (const char *const *)c->escalate_default : NULL,
	                           c->escalation_retry_initial, c->escalation_retry_max,
	                           c->grafana_url, t->grafana_token, c->grafana_dashboard_uid};
	if (!c->external_url) {
		/* Without --external-url, links point at the bound address. */
		const char *colon = strrchr(c->listen, ':');
		int hl = colon ? (int)(colon - c->listen) : (int)strlen(c->listen);
		const char *host = hl == 0 || (hl == 7 && strncmp(c->listen, "0.0.0.0", 7) == 0) ? "127.0.0.1" : c->listen;
		if (host != c->listen)
			hl = (int)strlen(host);
		snprintf(ext, sizeof(ext), "http://%.*s:%u", hl, host,
		         bound_port ? bound_port : (unsigned)(colon ? atoi(colon + 1) : 9095));
		ec.external_url = ext;
	}
	escalate_configure(&ec);
}

/* A problem found by a check: told to report(arg, msg), counted. */
typedef void report_fn(void *arg, const char *msg);

/* playbook_settings or playbook_overrides for a playbook that is not
 * loaded is a typo. Returns the number of problems. */
static int check_playbook_settings(const struct config *c, struct playbook_set *set, report_fn *report,
                                   void *arg)
{
	const char *json[2] = {c->playbook_settings, c->playbook_overrides};
	const char *what[2] = {"playbook_settings", "playbook_overrides"};
	char msg[512];
	int n = 0;

	for (int i = 0; i < 2; i++) {
		cJSON *o = json[i] ? cJSON_Parse(json[i]) : NULL;
		for (cJSON *k = o ? o->child : NULL; k; k = k->next)
			if (!playbook_set_find(set, k->string)) {
				snprintf(msg, sizeof(msg), "%s[\"%s\"]: no playbook of that name is loaded", what[i],
				         k->string);
				report(arg, msg);
				n++;
			}
		cJSON_Delete(o);
	}
	return n;
}

static const char *sink_flag(const char *sink)
{
	return strcmp(sink, "slack") == 0 ? "slack-webhook-url-file" : "pagerduty-routing-key-file";
}

/* Playbooks escalating to or notifying a sink that is not configured.
 * Returns the number of problems. */
static int check_sinks(const struct config *c, struct playbook_set *set, report_fn *report, void *arg)
{
	char msg[512];
	int n = 0;

	for (size_t k = 0; c->escalate_default[k]; k++)
		if (!escalate_sink_configured(c->escalate_default[k])) {
			snprintf(msg, sizeof(msg), "--escalate-default %s: that sink is not configured (--%s)",
			         c->escalate_default[k], sink_flag(c->escalate_default[k]));
			report(arg, msg);
			n++;
		}
	for (size_t i = 0; i < set->n; i++) {
		const struct playbook *pb = set->v[i];
		char **lists[3] = {pb->escalate, pb->notify_success, pb->notify_start};
		size_t ns[3] = {pb->n_escalate, pb->n_notify_success, pb->n_notify_start};
		for (int l = 0; l < 3; l++)
			for (size_t k = 0; k < ns[l]; k++)
				if (!escalate_sink_configured(lists[l][k])) {
					snprintf(msg, sizeof(msg),
					         "playbook %s (%s) %s sink '%s', which is not configured (--%s)",
					         pb->name, pb->file, l ? "notifies" : "escalates to", lists[l][k],
					         sink_flag(lists[l][k]));
					report(arg, msg);
					n++;
				}
	}
	return n;
}

static void report_warn_log(void *arg, const char *msg)
{
	log_kv(LOG_WARN, NULL, arg, "error", msg, NULL);
}

static void configure_lua(const struct config *c)
{
	const char *tf = getenv("RECOVERYD_TEST_FAULTS");
	struct lua_api_conf lc = {c->secrets_dir, (const char *const *)c->exec_allow, c->http_timeout,
	                          (const char *const *)c->env_allow, (const char *const *)c->read_allow,
	                          tf && strcmp(tf, "1") == 0};

	if (lc.test_faults)
		log_kv(LOG_WARN, NULL, "RECOVERYD_TEST_FAULTS=1: test fault injection is on; never in production",
		       NULL);
	lua_api_configure(&lc);
	lua_api_set_playbook_settings(c->playbook_settings);
}

#define CHECK_CONFIG_LIMIT 120 /* seconds */

static void check_config_expired(int sig)
{
	static const char msg[] = "recoveryd: --check-config did not finish within 120 s: a playbook's "
	                          "top-level code escaped the load deadline\n";
	(void)sig;
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0) {
		/* nothing left to tell */
	}
	_exit(WATCHDOG_EXIT_STATUS);
}

/* How the configuration loads the playbooks of dir. */
static struct playbook_load_opts load_opts(const struct config *c, const char *dir)
{
	return (struct playbook_load_opts){.dir = dir, .lua_path = c->lua_path, .mem_max = (size_t)c->lua_memory,
	                                   .overrides_json = c->playbook_overrides};
}

static struct playbook_set *load_playbooks(const struct config *c, char *err, size_t errlen)
{
	struct playbook_load_opts po = load_opts(c, c->playbooks);
	struct playbook_set *set = NULL;

	if (playbook_set_load(&po, &set, err, errlen) != RD_OK)
		return NULL;
	return set;
}

/* ---------- check [DIR...] and --check-config ---------- */

struct check {
	const char *dir;
	int errors, warnings;
	int soft;   /* `check`: sinks and tokens are warnings */
};

static void check_error(void *arg, const char *msg)
{
	struct check *k = arg;

	fprintf(stderr, "error: %s\n", msg);
	k->errors++;
}

static void check_soft(void *arg, const char *msg)
{
	struct check *k = arg;

	fprintf(stderr, "%s: %s\n", k->soft ? "warning" : "error", msg);
	if (k->soft)
		k->warnings++;
	else
		k->errors++;
}

/* A playbook that does not load: "DIR/FILE:LINE: error: ..." where Lua
 * gives the line, as compilers do, so editors can jump to it. */
static void check_playbook_problem(void *arg, const char *file, const char *msg)
{
	struct check *k = arg;
	size_t fl = strlen(file);
	const char *sep = k->dir[0] && k->dir[strlen(k->dir) - 1] == '/' ? "" : "/";

	if (strncmp(msg, file, fl) == 0 && msg[fl] == ':' && isdigit((unsigned char)msg[fl + 1])) {
		const char *rest = strchr(msg + fl + 1, ':');
		if (rest) {
			fprintf(stderr, "%s%s%.*s: error:%s\n", k->dir, sep, (int)(rest - msg), msg, rest + 1);
			k->errors++;
			return;
		}
	}
	fprintf(stderr, "%s%s%s: error: %s\n", k->dir, sep, file, msg);
	k->errors++;
}

/* Every problem in one run: each playbook of each directory, the files and
 * tokens of the configuration, the sinks the playbooks name. soft (`check`):
 * missing tokens and sinks are warnings, so playbooks can be linted
 * without any secret. Returns the exit status. */
static int cmd_check(struct config *c, char **dirs, int ndirs, int soft)
{
	struct check k = {.soft = soft};
	struct tokens tok = {0};
	struct playbook_set *set = NULL;
	char err[1024];
	size_t total = 0;
	char *conf_dir[1] = {c->playbooks};

	if (ndirs == 0) {
		dirs = conf_dir;
		ndirs = 1;
	}
	if (check_files(c, err, sizeof(err)) < 0)
		check_error(&k, err);
	if (tokens_load(c, &tok, err, sizeof(err)) < 0)
		check_soft(&k, err);
	configure_sinks(c, &tok);
	for (int d = 0; d < ndirs; d++) {
		struct playbook_load_opts po = load_opts(c, dirs[d]);
		po.problem = check_playbook_problem;
		po.problem_arg = &k;
		k.dir = dirs[d];
		if (playbook_set_load(&po, &set, err, sizeof(err)) != RD_OK) {
			check_error(&k, err);
			continue;
		}
		total += set->n;
		check_sinks(c, set, check_soft, &k);
		/* Settings name the playbooks of the configured directory. */
		if (dirs[d] == c->playbooks)
			check_playbook_settings(c, set, check_error, &k);
		printf("%s: %zu playbook%s loaded", dirs[d], set->n, set->n == 1 ? "" : "s");
		for (size_t i = 0; i < set->n; i++)
			printf("%s%s", i ? ", " : " (", set->v[i]->name);
		printf("%s\n", set->n ? ")" : "");
		playbook_set_unref(set);
		set = NULL;
	}
	if (tok.pd_key && strlen(tok.pd_key) != 32) {
		fprintf(stderr, "warning: the PagerDuty routing key is %zu characters, PagerDuty expects 32\n",
		        strlen(tok.pd_key));
		k.warnings++;
	}
	tokens_free(&tok);
	if (k.errors) {
		printf("%d error%s, %d warning%s\n", k.errors, k.errors == 1 ? "" : "s", k.warnings,
		       k.warnings == 1 ? "" : "s");
		return 1;
	}
	printf("config ok: %zu playbook%s, %d warning%s\n", total, total == 1 ? "" : "s", k.warnings,
	       k.warnings == 1 ? "" : "s");
	return 0;
}

/* ---------- run PLAYBOOK --alert FILE ---------- */

/* `run`'s exit status: 0 when every job succeeded (or would have, dry). */
static int run_outcome_ok(const cJSON *rec)
{
	const cJSON *o = cJSON_GetObjectItem(rec, "outcome");

	return cJSON_IsString(o) &&
	       (strcmp(o->valuestring, "succeeded") == 0 || strcmp(o->valuestring, "dry_run_succeeded") == 0);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmd_run(const char *playbook, struct config *c, struct playbook_set *set)
{
	struct store *st = NULL;
	struct engine *e = NULL;
	struct payload p = {0};
	char err[512];
	char *body = NULL;
	size_t len;
	cJSON *answer = NULL, *rec = NULL, *recs = NULL;
	struct engine_reply reply;
	int rc = 1, json_out = c->output && strcmp(c->output, "json") == 0;

	if (!c->alert) {
		fprintf(stderr, "recoveryd run: --alert FILE is required\n");
		playbook_set_unref(set);
		return 2;
	}
	body = rd_read_file(c->alert, ALERT_FILE_MAX, &len, 0);
	if (!body) {
		fprintf(stderr, "recoveryd run: %s: %s\n", c->alert, strerror(errno));
		playbook_set_unref(set);
		return 2;
	}
	if (alert_parse(body, len, ALERT_ALLOW_MANUAL, &p, err, sizeof(err)) != ALERT_OK) {
		fprintf(stderr, "recoveryd run: %s: %s\n", c->alert, err);
		playbook_set_unref(set);
		goto out;
	}
	if (store_open(":memory:", &st, err, sizeof(err)) != RD_OK) {
		fprintf(stderr, "recoveryd run: %s\n", err);
		playbook_set_unref(set);
		goto out;
	}
	struct engine_opts eo = {st, set, c->dry_run, (size_t)c->queue_max, 1, (size_t)c->lua_memory,
	                         c->lua_path, 1, c->watchdog_unhealthy, c->watchdog_exit, NULL, 0, 0};
	e = engine_new(&eo);
	if (!e || engine_start(e) != RD_OK) {
		fprintf(stderr, "recoveryd run: cannot start the engine\n");
		goto out;
	}
	struct playbook *pb = playbook_set_find(set, playbook);
	if (!pb) {
		/* What the person could have meant. */
		fprintf(stderr, "recoveryd run: no playbook named '%s' in %s; loaded: ", playbook,
		        c->playbooks ? c->playbooks : "the playbook directory");
		const char **names = calloc(set->n ? set->n : 1, sizeof(*names));
		for (size_t i = 0; names && i < set->n; i++)
			names[i] = set->v[i]->name;
		if (names)
			qsort(names, set->n, sizeof(*names), cmp_str);
		for (size_t i = 0; names && i < set->n; i++)
			fprintf(stderr, "%s%s", i ? ", " : "", names[i]);
		fprintf(stderr, "%s\n", set->n ? "" : "none");
		free(names);
		goto out;
	}
	if (c->no_retries)
		pb->retries = 0;
	if (pb->approval_required && !c->dry_run) {
		fprintf(stderr, "recoveryd run: playbook %s requires approval: run it through the daemon "
		        "(POST /trigger, then /approve), or add --dry-run to see its plan\n", playbook);
		goto out;
	}
	/* A person at the terminal: an admin, past cooldown and budget. */
	struct actor cli;
	actor_init(&cli, "cli", ROLE_ADMIN, "");
	struct engine_submit_opts so = {.playbook = playbook, .dry_run = c->dry_run, .force = 1, .who = &cli};
	if (engine_submit(e, &p, &so, &reply) != ENGINE_ACCEPTED) {
		fprintf(stderr, "recoveryd run: %s\n", reply.message[0] ? reply.message : "refused");
		goto out;
	}
	answer = reply.body;
	/* Every job the payload started: one per alert the playbook took. */
	cJSON *jobs = cJSON_GetObjectItem(answer, "jobs"), *j;
	size_t started = 0;
	if (!(recs = cJSON_CreateArray()))
		goto out;
	rc = 0;
	cJSON_ArrayForEach(j, jobs)
	{
		const cJSON *id = cJSON_GetObjectItem(j, "id"), *state = cJSON_GetObjectItem(j, "state");
		if (!cJSON_IsString(id) || !cJSON_IsString(state) || strcmp(state->valuestring, "queued") != 0) {
			if (!json_out)
				printf("job %s: %s, not run\n", cJSON_IsString(id) ? id->valuestring : "-",
				       cJSON_IsString(state) ? state->valuestring : "?");
			rc = 1;
			continue;
		}
		while (engine_wait(e, id->valuestring, 3600) == 0)
			;
		if (engine_job_json(e, id->valuestring, &rec) != RD_OK || !rec) {
			fprintf(stderr, "recoveryd run: job %s: record not found\n", id->valuestring);
			rc = 1;
			continue;
		}
		if (!run_outcome_ok(rec))
			rc = 1;
		if (!json_out) {
			if (started)
				printf("\n");
			ctl_print_job(rec, stdout, isatty(STDOUT_FILENO) && !getenv("NO_COLOR"));
		}
		cJSON_AddItemToArray(recs, rec);
		rec = NULL;
		started++;
	}
	if (!started) {
		fprintf(stderr, "recoveryd run: no job was started\n");
		rc = 1;
	}
	if (json_out) {
		char *txt = cJSON_Print(recs);
		if (txt)
			printf("%s\n", txt);
		free(txt);
	}
out:
	cJSON_Delete(rec);
	cJSON_Delete(recs);
	cJSON_Delete(answer);
	if (e) {
		engine_drain(e, 0);
		engine_free(e);
	}
	store_close(st);
	payload_free(&p);
	free(body);
	return rc;
}

/* ---------- daemon ---------- */

static int reload(int argc, char **argv, struct config *cur, struct engine *e, struct http *h)
{
	struct config next;
	struct tokens t = {0};
	struct playbook_set *set = NULL;
	char err[1024];

	if (config_load(&next, argc, argv, err, sizeof(err)) < 0 || tokens_load(&next, &t, err, sizeof(err)) < 0 ||
	    check_files(&next, err, sizeof(err)) < 0 || !(set = load_playbooks(&next, err, sizeof(err)))) {
		log_kv(LOG_ERROR, NULL, "reload rejected: keeping the running configuration", "error", err, NULL);
		metrics_add(M_CONFIG_RELOADS, "failure", NULL, 1);
		if (!set && strncmp(err, "playbook ", 9) == 0) {
			/* "playbook FILE: why": its alerts run the old version; say so once. */
			char file[256];
			if (sscanf(err + 9, "%255[^:]", file) == 1)
				engine_playbook_broken(e, file, err);
		}
		tokens_free(&t);
		config_free(&next);
		return -1;
	}
	if (strcmp(next.listen, cur->listen) || strcmp(next.state, cur->state) ||
	    strcmp(next.lua_path, cur->lua_path) || next.dry_run != cur->dry_run ||
	    next.max_jobs != cur->max_jobs || next.queue_max != cur->queue_max ||
	    next.lua_memory != cur->lua_memory || next.body_max != cur->body_max ||
	    next.conn_limit != cur->conn_limit || next.conn_timeout != cur->conn_timeout ||
	    next.conn_per_ip != cur->conn_per_ip || next.request_timeout != cur->request_timeout ||
	    next.watchdog_unhealthy != cur->watchdog_unhealthy || next.watchdog_exit != cur->watchdog_exit ||
	    next.journal_group_max != cur->journal_group_max || next.insecure_no_auth != cur->insecure_no_auth)
		log_kv(LOG_WARN, NULL,
		       "reload: listen, state, lua_path, dry_run, insecure_no_auth, max_jobs, queue_max, "
		       "lua_memory, body_max, conn_limit, conn_per_ip, conn_timeout, request_timeout, watchdog_unhealthy, watchdog_exit and journal_group_max take effect "
		       "at the next restart; everything else (playbooks, playbook_settings, tokens, sinks, "
		       "allow-lists, secrets_dir, http_timeout, drain_timeout, log_level) is applied now",
		       NULL);
	/* Keep the running values of restart-only settings, so that the next
	 * reload compares against what is really in effect. */
	{
		char **strs[][2] = {{&next.listen, &cur->listen},
		                    {&next.state, &cur->state},
		                    {&next.lua_path, &cur->lua_path}};
		for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
			char *tmp = *strs[i][0];
			*strs[i][0] = *strs[i][1];
			*strs[i][1] = tmp;
		}
		next.dry_run = cur->dry_run;
		next.max_jobs = cur->max_jobs;
		next.queue_max = cur->queue_max;
		next.lua_memory = cur->lua_memory;
		next.body_max = cur->body_max;
		next.conn_limit = cur->conn_limit;
		next.conn_timeout = cur->conn_timeout;
		next.conn_per_ip = cur->conn_per_ip;
		next.request_timeout = cur->request_timeout;
		next.watchdog_unhealthy = cur->watchdog_unhealthy;
		next.watchdog_exit = cur->watchdog_exit;
		next.journal_group_max = cur->journal_group_max;
		next.insecure_no_auth = cur->insecure_no_auth;
	}
	configure_lua(&next);
	configure_sinks(&next, &t);
	engine_playbook_broken(e, NULL, NULL);
	http_set_auth(h, t.auth);
	t.auth = NULL;
	engine_set_playbooks(e, set);
	log_set_level(level_of(next.log_level));
	{
		char n[16];
		snprintf(n, sizeof(n), "%zu", set->n);
		log_kv(LOG_INFO, NULL, "reloaded", "playbooks", n, NULL);
	}
	metrics_add(M_CONFIG_RELOADS, "success", NULL, 1);
	engine_audit(e, NULL, "reload", "SIGHUP");
	tokens_free(&t);
	config_free(cur);
	*cur = next;
	return 0;
}

int main(int argc, char **argv)
{
	struct config cfg;
	struct tokens tok = {0};
	struct playbook_set *set = NULL;
	struct store *st = NULL;
	struct engine *e = NULL;
	struct http *h = NULL;
	struct retain *rt = NULL;
	char err[1024], replica[64] = "", state_url[2048];
	const char *run_playbook = NULL;
	int args_from = 1, rc = 1, migrate = 0, check_only = 0, n_check_dirs = 0;
	char **check_dirs = NULL;
	sigset_t sigs;

	/* The HTTP API's client: its own options, no daemon state. */
	if (argc >= 2 && strcmp(argv[1], "ctl") == 0)
		return ctl_main(argc - 2, argv + 2);
	/* As people type them, besides --help and --version. */
	if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0)) {
		config_usage(stdout);
		return 0;
	}
	if (argc == 2 && (strcmp(argv[1], "-V") == 0 || strcmp(argv[1], "version") == 0)) {
		printf("recoveryd %s\n", RECOVERYD_VERSION);
		return 0;
	}
	if (argc >= 2 && strcmp(argv[1], "migrate") == 0) {
		/* Create or bring the journal's schema up to this version, then
		 * exit: the step before rolling out a new version to replicas. */
		migrate = 1;
		args_from = 2;
	} else if (argc >= 2 && strcmp(argv[1], "check") == 0) {
		/* check [PLAYBOOK_DIR...] [OPTIONS] */
		check_dirs = argv + 2;
		for (args_from = 2; args_from < argc && argv[args_from][0] != '-'; args_from++)
			n_check_dirs++;
		check_only = 1;
	} else if (argc >= 2 && strcmp(argv[1], "run") == 0) {
		if (argc < 3 || argv[2][0] == '-') {
			fprintf(stderr, "usage: recoveryd run PLAYBOOK --alert FILE [--dry-run] [OPTIONS]\n");
			return 2;
		}
		run_playbook = argv[2];
		args_from = 3;
	}
	if (config_load(&cfg, argc - args_from, argv + args_from, err, sizeof(err)) < 0) {
		fprintf(stderr, "recoveryd: %s\n", err);
		config_free(&cfg);
		return 2;
	}
	if (cfg.help) {
		config_usage(stdout);
		config_free(&cfg);
		return 0;
	}
	if (cfg.version) {
		printf("recoveryd %s\n", RECOVERYD_VERSION);
		config_free(&cfg);
		return 0;
	}
	/* `run` is for a person: the timeline, not the daemon's log lines. */
	log_set_level(run_playbook && !cfg.verbose ? LOG_OFF : level_of(cfg.log_level));
	metrics_init();
	if (migrate) {
		if (store_open(cfg.state, &st, err, sizeof(err)) != RD_OK) {
			fprintf(stderr, "recoveryd migrate: %s\n", err);
			config_free(&cfg);
			return 1;
		}
		store_close(st);
		printf("journal schema at version %d\n", store_schema_version());
		config_free(&cfg);
		return 0;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	configure_lua(&cfg);

	if (cfg.check_config || check_only) {
		/* Each playbook's top level has a load deadline; this catches a
		 * hole in it, as the loop watchdog does for the daemon. */
		signal(SIGALRM, check_config_expired);
		alarm(CHECK_CONFIG_LIMIT);
		rc = cmd_check(&cfg, check_dirs, n_check_dirs, check_only);
		goto out;
	}
	if (check_files(&cfg, err, sizeof(err)) < 0 || !(set = load_playbooks(&cfg, err, sizeof(err)))) {
		fprintf(stderr, "recoveryd: %s\n", err);
		goto out;
	}
	if (run_playbook) {
		/* `run` never pages anyone: its jobs live in a throwaway journal. */
		struct tokens none = {0};
		configure_sinks(&cfg, &none);
		rc = cmd_run(run_playbook, &cfg, set);
		set = NULL;
		goto out;
	}
	if (tokens_load(&cfg, &tok, err, sizeof(err)) < 0) {
		fprintf(stderr, "recoveryd: %s\n", err);
		goto out;
	}
	configure_sinks(&cfg, &tok);

	/* Signals are taken synchronously by this thread only; every thread
	 * started from here on inherits the mask. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	check_sinks(&cfg, set, report_warn_log,
	            "escalation sink missing: such escalations are recorded as failed");
	check_playbook_settings(&cfg, set, report_warn_log, "config");
	if (store_is_shared(cfg.state)) {
		/* Several replicas: each needs a name of its own in the leases,
		 * and its connections carry it (pg_stat_activity). */
		if (!cfg.replica_id) {
			char host[64] = "recoveryd";
			gethostname(host, sizeof(host) - 1);
			host[strcspn(host, ".")] = '\0';
			snprintf(replica, sizeof(replica), "%.40s-%ld", host, (long)getpid());
		} else {
			snprintf(replica, sizeof(replica), "%s", cfg.replica_id);
		}
		snprintf(state_url, sizeof(state_url), "%s%sapplication_name=recoveryd/%s", cfg.state,
		         strchr(cfg.state, '?') ? "&" : "?", replica);
	} else {
		snprintf(state_url, sizeof(state_url), "%s", cfg.state);
	}
	if (store_open(state_url, &st, err, sizeof(err)) != RD_OK) {
		fprintf(stderr, "recoveryd: %s\n", err);
		goto out;
	}
	store_set_group_max(st, (unsigned)cfg.journal_group_max);
	struct engine_opts eo = {st,
	                         set,
	                         cfg.dry_run,
	                         (size_t)cfg.queue_max,
	                         (size_t)cfg.max_jobs,
	                         (size_t)cfg.lua_memory,
	                         cfg.lua_path,
	                         0,
	                         cfg.watchdog_unhealthy,
	                         cfg.watchdog_exit,
	                         replica[0] ? replica : NULL,
	                         cfg.lease_timeout,
	                         cfg.poll_interval};
	e = engine_new(&eo);
	set = NULL;
	if (!e || engine_start(e) != RD_OK) {
		fprintf(stderr, "recoveryd: cannot start the engine (journal replay failed)\n");
		goto out;
	}
	if (cfg.retain > 0) {
		struct retain_opts ro = {.store = st, .seconds = cfg.retain * 86400.0};
		if (!(rt = retain_start(&ro)))
			log_kv(LOG_WARN, NULL, "retention: cannot start; nothing is deleted", NULL);
	}
	struct http_config hc = {cfg.listen, (size_t)cfg.body_max, tok.auth, cfg.insecure_no_auth,
	                         (unsigned)cfg.conn_limit, (unsigned)cfg.conn_per_ip, (unsigned)cfg.conn_timeout,
	                         cfg.request_timeout, NULL};
	tok.auth = NULL; /* http_start takes it */
	unsigned port = 0;
	if (http_start(&hc, e, &h, &port, err, sizeof(err)) != RD_OK) {
		fprintf(stderr, "recoveryd: %s\n", err);
		goto out;
	}
	bound_port = port;
	configure_sinks(&cfg, &tok);
	{
		char addr[160], p[16];
		const char *colon = strrchr(cfg.listen, ':');
		snprintf(addr, sizeof(addr), "%.*s:%u", colon ? (int)(colon - cfg.listen) : 0, cfg.listen, port);
		snprintf(p, sizeof(p), "%u", port);
		log_kv(LOG_INFO, NULL, "listening", "addr", addr, "port", p, "version", RECOVERYD_VERSION,
		       "dry_run", cfg.dry_run ? "true" : "false", "state", cfg.state, NULL);
		if (cfg.insecure_no_auth && !tok.webhook && !tok.operator_)
			log_kv(LOG_WARN, NULL, "running without authentication (--insecure-no-auth)", NULL);
	}

	for (;;) {
		int sig = 0;
		if (sigwait(&sigs, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			log_kv(LOG_INFO, NULL, "SIGHUP: reloading configuration and playbooks", NULL);
			reload(argc - args_from, argv + args_from, &cfg, e, h);
			continue;
		}
		char g[32];
		snprintf(g, sizeof(g), "%g", cfg.drain_timeout);
		log_kv(LOG_INFO, NULL, "draining: new work is refused with 503", "signal",
		       sig == SIGTERM ? "SIGTERM" : "SIGINT", "grace_seconds", g, NULL);
		engine_drain(e, cfg.drain_timeout);
		break;
	}
	http_stop(h);
	h = NULL;
	log_kv(LOG_INFO, NULL, "stopped", NULL);
	rc = 0;
out:
	http_stop(h);
	retain_stop(rt);
	engine_free(e);
	store_close(st);
	playbook_set_unref(set);
	tokens_free(&tok);
	config_free(&cfg);
	curl_global_cleanup();
	return rc;
}

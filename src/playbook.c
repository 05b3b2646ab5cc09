/* Loading and validating playbooks. Each file is evaluated in a sandbox of
 * its own (with a deadline, so a runaway top level cannot hang a reload) and
 * must return a table with the fields of DESIGN.md §4. */
#include "recoveryd/playbook.h"

#include <dirent.h>
#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recoveryd/escalate.h"
#include "recoveryd/lua_api.h"
#include "recoveryd/lua_json.h"
#include "recoveryd/matcher.h"
#include "recoveryd/sandbox.h"

#define PLAYBOOK_MAX_SIZE (1024 * 1024)
#define LOAD_DEADLINE 5.0
#define LIST_MAX 64

static pthread_mutex_t refs_lock = PTHREAD_MUTEX_INITIALIZER;

static void playbook_free(struct playbook *pb)
{
	if (!pb)
		return;
	free(pb->name);
	free(pb->description);
	free(pb->file);
	free(pb->source);
	free(pb->chunk);
	matcher_set_free(pb->match);
	for (size_t i = 0; i < pb->n_escalate; i++)
		free(pb->escalate[i]);
	free(pb->escalate);
	for (size_t i = 0; i < pb->n_notify_success; i++)
		free(pb->notify_success[i]);
	free(pb->notify_success);
	for (size_t i = 0; i < pb->n_notify_start; i++)
		free(pb->notify_start[i]);
	free(pb->notify_start);
	free(pb);
}

static void set_free(struct playbook_set *set)
{
	if (!set)
		return;
	for (size_t i = 0; i < set->n; i++)
		playbook_free(set->v[i]);
	free(set->v);
	free(set);
}

void playbook_set_ref(struct playbook_set *set)
{
	pthread_mutex_lock(&refs_lock);
	set->refs++;
	pthread_mutex_unlock(&refs_lock);
}

void playbook_set_unref(struct playbook_set *set)
{
	int last;

	if (!set)
		return;
	pthread_mutex_lock(&refs_lock);
	last = --set->refs == 0;
	pthread_mutex_unlock(&refs_lock);
	if (last)
		set_free(set);
}

struct playbook *playbook_set_find(struct playbook_set *set, const char *name)
{
	for (size_t i = 0; set && i < set->n; i++)
		if (strcmp(set->v[i]->name, name) == 0)
			return set->v[i];
	return NULL;
}

static int valid_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 64)
		return 0;
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' ||
		      *p == '.' || (*p >= 'A' && *p <= 'Z')))
			return 0;
	return 1;
}

/* Read an optional number field; -1 on a wrong type. */
static int opt_number(lua_State *L, int t, const char *field, double def, double min, double *out,
                      char *err, size_t errlen)
{
	lua_getfield(L, t, field);
	if (lua_isnil(L, -1)) {
		*out = def;
	} else if (lua_type(L, -1) != LUA_TNUMBER) {
		snprintf(err, errlen, "%s: expected a number, got %s", field, luaL_typename(L, -1));
		lua_pop(L, 1);
		return -1;
	} else {
		*out = lua_tonumber(L, -1);
		if (!isfinite(*out) || *out < min) {
			snprintf(err, errlen, "%s: must be a number >= %g", field, min);
			lua_pop(L, 1);
			return -1;
		}
	}
	lua_pop(L, 1);
	return 0;
}

static char *opt_string(lua_State *L, int t, const char *field, int required, char *err, size_t errlen,
                        int *bad)
{
	char *r = NULL;

	lua_getfield(L, t, field);
	if (sandbox_has_nul(L, -1)) {
		snprintf(err, errlen, "%s: must not contain a NUL byte", field);
		*bad = 1;
	} else if (lua_type(L, -1) == LUA_TSTRING) {
		r = strdup(lua_tostring(L, -1));
	} else if (!lua_isnil(L, -1) || required) {
		snprintf(err, errlen, "%s: expected a string, got %s", field, luaL_typename(L, -1));
		*bad = 1;
	}
	lua_pop(L, 1);
	return r;
}

/* The list of sink names on top of L into *out. */
static int sink_list(lua_State *L, const char *what, char ***out, size_t *n_out, char *err, size_t errlen)
{
	lua_Integer n = (lua_Integer)lua_rawlen(L, -1);

	if (n > LIST_MAX) {
		snprintf(err, errlen, "%s: at most %d sinks", what, LIST_MAX);
		return -1;
	}
	*out = calloc((size_t)n + 1, sizeof(char *));
	if (!*out) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (lua_Integer i = 1; i <= n; i++) {
		lua_rawgeti(L, -1, i);
		const char *s = lua_tostring(L, -1);
		if (lua_type(L, -1) != LUA_TSTRING || sandbox_has_nul(L, -1) || (strcmp(s, "slack") != 0 && strcmp(s, "pagerduty") != 0)) {
			snprintf(err, errlen, "%s[%lld]: expected \"slack\" or \"pagerduty\"%s", what, (long long)i,
			         lua_type(L, -1) == LUA_TSTRING && strcmp(s, "grafana") == 0
			                 ? " (Grafana annotations are not notifications: every job is annotated "
			                   "when --grafana-url is set; notify = { grafana = false } opts out)"
			                 : "");
			return -1;
		}
		(*out)[(*n_out)++] = strdup(s);
		lua_pop(L, 1);
	}
	return 0;
}

/* "did you mean 'x'? " for an unknown key near one of known, else "". */
static const char *did_you_mean(const char *word, const char *const *known, char *buf, size_t len)
{
	const char *near = rd_closest(word, known);

	if (!near)
		return "";
	snprintf(buf, len, "did you mean '%s'? ", near);
	return buf;
}

/* notify (on the stack top): on_start and on_success notices (Slack only:
 * a PagerDuty event would open an incident), grafana = false. A typo must
 * not silently turn a notice off. */
static int parse_notify(lua_State *L, struct playbook *pb, char *err, size_t errlen)
{
	static const char *const lists[] = {"on_start", "on_success"};
	char ***dst[] = {&pb->notify_start, &pb->notify_success};
	size_t *n_dst[] = {&pb->n_notify_start, &pb->n_notify_success};

	lua_pushnil(L);
	while (lua_next(L, -2)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING && !sandbox_has_nul(L, -2) ? lua_tostring(L, -2) : NULL;
		lua_pop(L, 1);
		static const char *const keys[] = {"on_start", "on_success", "grafana", NULL};
		int known = 0;
		for (const char *const *n = keys; k && *n && !known; n++)
			known = strcmp(*n, k) == 0;
		if (!known) {
			char hint[64];
			snprintf(err, errlen, "notify: unknown key '%s' (%skeys: on_start, on_success, grafana)",
			         k ? k : "(non-string key)", did_you_mean(k, keys, hint, sizeof(hint)));
			lua_pop(L, 1);
			return -1;
		}
	}
	for (size_t l = 0; l < 2; l++) {
		char what[32];
		snprintf(what, sizeof(what), "notify.%s", lists[l]);
		lua_getfield(L, -1, lists[l]);
		if (lua_type(L, -1) == LUA_TTABLE) {
			if (sink_list(L, what, dst[l], n_dst[l], err, errlen) < 0)
				return -1;
			for (size_t i = 0; i < *n_dst[l]; i++)
				if (strcmp((*dst[l])[i], "slack") != 0) {
					snprintf(err, errlen, "%s: only \"slack\" is supported "
					                      "(a PagerDuty event would open an incident)", what);
					return -1;
				}
		} else if (!lua_isnil(L, -1)) {
			snprintf(err, errlen, "%s: expected a list of sink names", what);
			return -1;
		}
		lua_pop(L, 1);
	}
	lua_getfield(L, -1, "grafana");
	if (!lua_isnil(L, -1) && !lua_isboolean(L, -1)) {
		snprintf(err, errlen, "notify.grafana: expected a boolean, got %s", luaL_typename(L, -1));
		return -1;
	}
	pb->no_annotations = lua_isboolean(L, -1) && !lua_toboolean(L, -1);
	lua_pop(L, 1);
	return 0;
}

/* A typo such as "retires" must not silently fall back to a default. */
static int check_fields(lua_State *L, int t, char *err, size_t errlen)
{
	static const char *const known[] = {"name",     "description", "match",    "retries",
	                                    "backoff",  "timeout",     "cooldown", "budget",
	                                    "escalate", "idempotent",  "run",      "verify",
	                                    "notify",   "settings",    "approval", NULL};
	lua_pushnil(L);
	while (lua_next(L, t)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING && !sandbox_has_nul(L, -2) ? lua_tostring(L, -2) : NULL;
		int ok = k && k[0] == '_'; /* private helpers of the playbook */
		for (const char *const *n = known; k && *n && !ok; n++)
			ok = strcmp(*n, k) == 0;
		if (!ok) {
			const char *near = rd_closest(k, known);
			if (near)
				snprintf(err, errlen, "unknown field '%s' (did you mean '%s'?)", k, near);
			else
				snprintf(err, errlen, "unknown field '%s' (fields: name, description, match, retries, "
				         "backoff, timeout, cooldown, budget, escalate, idempotent, run, verify, "
				         "notify, settings, approval, or _private)", k ? k : "(non-string key)");
			lua_pop(L, 2);
			return -1;
		}
		lua_pop(L, 1);
	}
	return 0;
}

/* retries, timeout, cooldown, backoff and budget from the table at t; what
 * the table leaves out keeps pb's current value (the defaults, or the
 * playbook's own when t holds deployment overrides). */
static int parse_limits(lua_State *L, int t, struct playbook *pb, char *err, size_t errlen)
{
	double v;

	if (opt_number(L, t, "retries", pb->retries, 0, &v, err, errlen) < 0)
		return -1;
	if (v > 100) {
		snprintf(err, errlen, "retries: at most 100");
		return -1;
	}
	pb->retries = (int)v;
	if (opt_number(L, t, "timeout", pb->timeout, 0.001, &pb->timeout, err, errlen) < 0 ||
	    opt_number(L, t, "cooldown", pb->cooldown, 0, &pb->cooldown, err, errlen) < 0)
		return -1;

	lua_getfield(L, t, "backoff");
	if (lua_type(L, -1) == LUA_TTABLE) {
		int b = lua_gettop(L);
		if (opt_number(L, b, "initial", pb->backoff_initial, 0, &pb->backoff_initial, err, errlen) < 0 ||
		    opt_number(L, b, "factor", pb->backoff_factor, 1, &pb->backoff_factor, err, errlen) < 0 ||
		    opt_number(L, b, "max", pb->backoff_max, 0, &pb->backoff_max, err, errlen) < 0) {
			char tmp[256];
			snprintf(tmp, sizeof(tmp), "backoff.%s", err);
			snprintf(err, errlen, "%s", tmp);
			return -1;
		}
	} else if (!lua_isnil(L, -1)) {
		snprintf(err, errlen, "backoff: expected a table {initial, factor, max}");
		return -1;
	}
	lua_pop(L, 1);

	lua_getfield(L, t, "budget");
	if (lua_type(L, -1) == LUA_TTABLE) {
		int b = lua_gettop(L);
		if (opt_number(L, b, "runs", pb->budget_runs, 0, &v, err, errlen) < 0 ||
		    opt_number(L, b, "per", pb->budget_per, 0.001, &pb->budget_per, err, errlen) < 0) {
			char tmp[256];
			snprintf(tmp, sizeof(tmp), "budget.%s", err);
			snprintf(err, errlen, "%s", tmp);
			return -1;
		}
		pb->budget_runs = (int)v;
	} else if (!lua_isnil(L, -1)) {
		snprintf(err, errlen, "budget: expected a table {runs, per}");
		return -1;
	}
	lua_pop(L, 1);

	lua_getfield(L, t, "approval");
	if (lua_type(L, -1) == LUA_TTABLE) {
		int b = lua_gettop(L);
		lua_pushnil(L);
		while (lua_next(L, b)) {
			const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
			lua_pop(L, 1);
			if (strcmp(k, "required") != 0 && strcmp(k, "timeout") != 0) {
				static const char *const keys[] = {"required", "timeout", NULL};
				char hint[64];
				snprintf(err, errlen, "approval.%s: unknown (%srequired, timeout)", k,
				         did_you_mean(k, keys, hint, sizeof(hint)));
				return -1;
			}
		}
		lua_getfield(L, b, "required");
		if (!lua_isnil(L, -1) && !lua_isboolean(L, -1)) {
			snprintf(err, errlen, "approval.required: expected a boolean, got %s", luaL_typename(L, -1));
			return -1;
		}
		if (!lua_isnil(L, -1))
			pb->approval_required = lua_toboolean(L, -1);
		lua_pop(L, 1);
		if (opt_number(L, b, "timeout", pb->approval_timeout, 1, &pb->approval_timeout, err, errlen) < 0) {
			char tmp[256];
			snprintf(tmp, sizeof(tmp), "approval.%s", err);
			snprintf(err, errlen, "%s", tmp);
			return -1;
		}
	} else if (!lua_isnil(L, -1)) {
		snprintf(err, errlen, "approval: expected a table {required, timeout}");
		return -1;
	}
	lua_pop(L, 1);
	return 0;
}

/* Validate the table on top of L into pb. */
static int parse_table(lua_State *L, struct playbook *pb, char *err, size_t errlen)
{
	int t = lua_gettop(L), bad = 0;

	if (check_fields(L, t, err, errlen) < 0)
		return -1;

	pb->name = opt_string(L, t, "name", 1, err, errlen, &bad);
	if (bad)
		return -1;
	if (!valid_name(pb->name)) {
		snprintf(err, errlen, "name: '%s' must be 1-64 characters of [A-Za-z0-9._-]", pb->name);
		return -1;
	}
	pb->description = opt_string(L, t, "description", 0, err, errlen, &bad);
	if (bad)
		return -1;
	if (!pb->description)
		pb->description = strdup("");

	pb->match = matcher_set_new();
	lua_getfield(L, t, "match");
	if (lua_type(L, -1) == LUA_TSTRING) {
		if (sandbox_has_nul(L, -1)) {
			snprintf(err, errlen, "match: must not contain a NUL byte");
			return -1;
		}
		if (matcher_set_add(pb->match, lua_tostring(L, -1), err, errlen) < 0)
			return -1;
	} else if (lua_type(L, -1) == LUA_TTABLE) {
		lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
		if (n > LIST_MAX) {
			snprintf(err, errlen, "match: at most %d matchers", LIST_MAX);
			return -1;
		}
		for (lua_Integer i = 1; i <= n; i++) {
			lua_rawgeti(L, -1, i);
			if (lua_type(L, -1) != LUA_TSTRING || sandbox_has_nul(L, -1)) {
				snprintf(err, errlen, "match[%lld]: expected a matcher string (without NUL bytes)",
				         (long long)i);
				return -1;
			}
			char merr[256];
			if (matcher_set_add(pb->match, lua_tostring(L, -1), merr, sizeof(merr)) < 0) {
				snprintf(err, errlen, "match[%lld]: %s", (long long)i, merr);
				return -1;
			}
			lua_pop(L, 1);
		}
	} else if (!lua_isnil(L, -1)) {
		snprintf(err, errlen, "match: expected a list of matcher strings");
		return -1;
	}
	lua_pop(L, 1);

	pb->retries = 2;
	pb->timeout = 300;
	pb->cooldown = 900;
	pb->backoff_initial = 10;
	pb->backoff_factor = 2;
	pb->backoff_max = 120;
	pb->budget_runs = 3;
	pb->budget_per = 3600;
	pb->approval_required = 0;
	pb->approval_timeout = 900;
	if (parse_limits(L, t, pb, err, errlen) < 0)
		return -1;

	lua_getfield(L, t, "escalate");
	if (lua_type(L, -1) == LUA_TTABLE) {
		pb->escalate_set = 1;
		if (sink_list(L, "escalate", &pb->escalate, &pb->n_escalate, err, errlen) < 0)
			return -1;
	} else if (!lua_isnil(L, -1)) {
		snprintf(err, errlen, "escalate: expected a list of sink names");
		return -1;
	}
	lua_pop(L, 1);

	lua_getfield(L, t, "notify");
	if (lua_type(L, -1) == LUA_TTABLE) {
		if (parse_notify(L, pb, err, errlen) < 0)
			return -1;
	} else if (!lua_isnil(L, -1)) {
		snprintf(err, errlen, "notify: expected a table { on_start = {...}, on_success = {...}, grafana = false }");
		return -1;
	}
	lua_pop(L, 1);

	lua_getfield(L, t, "idempotent");
	if (!lua_isnil(L, -1) && !lua_isboolean(L, -1)) {
		snprintf(err, errlen, "idempotent: expected a boolean, got %s", luaL_typename(L, -1));
		return -1;
	}
	pb->idempotent = lua_toboolean(L, -1);
	lua_pop(L, 1);

	static const char *const fns[] = {"run", "verify"};
	for (size_t i = 0; i < 2; i++) {
		lua_getfield(L, t, fns[i]);
		if (lua_type(L, -1) != LUA_TFUNCTION) {
			snprintf(err, errlen, "%s: expected a function, got %s", fns[i], luaL_typename(L, -1));
			return -1;
		}
		lua_pop(L, 1);
	}
	return 0;
}

struct parse_args {
	struct playbook *pb;
	char *err;
	size_t errlen;
	int rc;
	const cJSON *overrides; /* {"<playbook>": {retries, timeout, ...}} or NULL */
};

/* The deployment's overrides of this playbook's limits (config key
 * playbook_overrides): the same validation as in the playbook file. */
static int apply_overrides(lua_State *L, struct parse_args *pa)
{
	static const char *const known[] = {"retries", "timeout", "cooldown", "backoff", "budget",
	                                    "approval", NULL};
	const cJSON *o = cJSON_GetObjectItemCaseSensitive(pa->overrides, pa->pb->name);
	char msg[256];

	if (!o)
		return 0;
	for (const cJSON *c = o->child; c; c = c->next) {
		int ok = 0;
		for (const char *const *k = known; *k && !ok; k++)
			ok = strcmp(*k, c->string) == 0;
		if (!ok) {
			char hint[64];
			snprintf(pa->err, pa->errlen, "playbook_overrides[\"%s\"].%s: unknown (%sretries, "
			         "timeout, cooldown, backoff, budget, approval)", pa->pb->name, c->string,
			         did_you_mean(c->string, known, hint, sizeof(hint)));
			return -1;
		}
	}
	lua_json_push(L, o);
	if (parse_limits(L, lua_gettop(L), pa->pb, msg, sizeof(msg)) < 0) {
		snprintf(pa->err, pa->errlen, "playbook_overrides[\"%s\"].%s", pa->pb->name, msg);
		return -1;
	}
	lua_pop(L, 1);
	return 0;
}

static int parse_cfn(lua_State *L)
{
	struct parse_args *pa = lua_touserdata(L, 2);
	lua_settop(L, 1);
	pa->rc = parse_table(L, pa->pb, pa->err, pa->errlen);
	if (pa->rc == 0 && pa->overrides)
		pa->rc = apply_overrides(L, pa);
	return 0;
}

static struct playbook *load_one(const struct playbook_load_opts *o, const cJSON *overrides,
                                 const char *file, char *err, size_t errlen)
{
	struct playbook *pb = calloc(1, sizeof(*pb));
	struct sandbox sb = {.mem_max = o->mem_max, .lua_path = o->lua_path};
	lua_State *L = NULL;
	char path[4096], chunk[300], msg[512] = "";

	if (!pb)
		goto fail_nomem;
	pb->file = strdup(file);
	snprintf(path, sizeof(path), "%s/%s", o->dir, file);
	pb->source = rd_read_file(path, PLAYBOOK_MAX_SIZE, &pb->source_len, 0);
	if (!pb->source) {
		snprintf(msg, sizeof(msg), "cannot read: %s", strerror(errno));
		goto fail;
	}
	L = sandbox_new(&sb);
	if (!L)
		goto fail_nomem;
	lua_api_open(L, NULL);
	snprintf(chunk, sizeof(chunk), "@%s", file);
	sb.deadline = rd_mono() + LOAD_DEADLINE;
	if (sandbox_load(L, pb->source, pb->source_len, chunk) != LUA_OK ||
	    sandbox_call(L, 0, 1) != LUA_OK) {
		int final, permanent;
		const char *m;
		sb.no_limit = 1; /* unprotected calls */
		/* also the reason of recovery.fail or a permanent error */
		m = lua_api_error_text(L, -1, &final, &permanent);
		snprintf(msg, sizeof(msg), "%s", m ? m : "error");
		goto fail;
	}
	if (!lua_istable(L, -1)) {
		snprintf(msg, sizeof(msg), "must return a table, returned %s", luaL_typename(L, -1));
		goto fail;
	}
	if (lua_getmetatable(L, -1)) {
		snprintf(msg, sizeof(msg), "must return a plain table (without a metatable)");
		goto fail;
	}
	/* Fields may still hold hostile tables (metamethods, loops): validate
	 * under a protected call so that their errors are load errors. */
	{
		struct parse_args pa = {pb, msg, sizeof(msg), 0, overrides};
		lua_pushcfunction(L, parse_cfn);
		lua_insert(L, -2);
		lua_pushlightuserdata(L, &pa);
		if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
			snprintf(msg, sizeof(msg), "%s",
			         sb.timed_out ? "validation did not finish before the deadline"
			                      : (lua_tostring(L, -1) ? lua_tostring(L, -1) : "error"));
			goto fail;
		}
		if (pa.rc < 0)
			goto fail;
	}
	/* Attempts load this instead of parsing the text again. */
	pb->chunk = sandbox_compile(pb->source, pb->source_len, chunk, &pb->chunk_len, msg, sizeof(msg));
	if (!pb->chunk)
		goto fail;
	lua_close(L);
	return pb;
fail_nomem:
	snprintf(msg, sizeof(msg), "out of memory");
fail:
	snprintf(err, errlen, "playbook %s: %s", file, msg);
	if (L)
		lua_close(L);
	playbook_free(pb);
	return NULL;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

enum rd_status playbook_set_load(const struct playbook_load_opts *o, struct playbook_set **out,
                                 char *err, size_t errlen)
{
	struct playbook_set *set = calloc(1, sizeof(*set));
	char **names = NULL;
	cJSON *overrides = NULL;
	size_t n = 0, cap = 0;
	enum rd_status rc = RD_ERR;
	DIR *d = opendir(o->dir);
	struct dirent *de;

	if (!set)
		goto out;
	if (!d) {
		snprintf(err, errlen, "playbook directory %s: %s", o->dir, strerror(errno));
		goto out;
	}
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		if (de->d_name[0] == '.' || l < 5 || strcmp(de->d_name + l - 4, ".lua") != 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			char **nn = realloc(names, cap * sizeof(char *));
			if (!nn)
				goto out;
			names = nn;
		}
		names[n++] = strdup(de->d_name);
	}
	if (n)
		qsort(names, n, sizeof(char *), cmp_str);
	if (o->overrides_json && !(overrides = cJSON_Parse(o->overrides_json))) {
		snprintf(err, errlen, "playbook_overrides: invalid");
		goto out;
	}
	set->v = calloc(n ? n : 1, sizeof(struct playbook *));
	if (!set->v)
		goto out;
	for (size_t i = 0; i < n; i++) {
		struct playbook *pb = load_one(o, overrides, names[i], err, errlen);
		struct playbook *dup = pb ? playbook_set_find(set, pb->name) : NULL;
		if (dup) {
			snprintf(err, errlen, "playbook %s: name '%s' is already used by %s", names[i], pb->name,
			         dup->file);
			playbook_free(pb);
			pb = NULL;
		}
		if (!pb && !o->problem)
			goto out;
		if (!pb) {
			/* err is "playbook FILE: what"; the callback gets "what". */
			size_t skip = strlen("playbook ") + strlen(names[i]) + 2;
			o->problem(o->problem_arg, names[i], strlen(err) > skip ? err + skip : err);
			continue;
		}
		set->v[set->n++] = pb;
	}
	set->refs = 1;
	*out = set;
	set = NULL;
	rc = RD_OK;
out:
	if (d)
		closedir(d);
	cJSON_Delete(overrides);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	set_free(set);
	return rc;
}

cJSON *playbook_json(const struct playbook *pb)
{
	cJSON *o = cJSON_CreateObject(), *m = cJSON_AddArrayToObject(o, "match"), *b, *e;

	cJSON_AddStringToObject(o, "name", pb->name);
	cJSON_AddStringToObject(o, "description", pb->description);
	cJSON_AddStringToObject(o, "file", pb->file);
	for (size_t i = 0; i < matcher_set_count(pb->match); i++)
		cJSON_AddItemToArray(m, cJSON_CreateString(matcher_set_text(pb->match, i)));
	cJSON_AddNumberToObject(o, "retries", pb->retries);
	b = cJSON_AddObjectToObject(o, "backoff");
	cJSON_AddNumberToObject(b, "initial", pb->backoff_initial);
	cJSON_AddNumberToObject(b, "factor", pb->backoff_factor);
	cJSON_AddNumberToObject(b, "max", pb->backoff_max);
	cJSON_AddNumberToObject(o, "timeout", pb->timeout);
	cJSON_AddNumberToObject(o, "cooldown", pb->cooldown);
	b = cJSON_AddObjectToObject(o, "budget");
	cJSON_AddNumberToObject(b, "runs", pb->budget_runs);
	cJSON_AddNumberToObject(b, "per", pb->budget_per);
	if (pb->escalate_set) {
		e = cJSON_AddArrayToObject(o, "escalate");
		for (size_t i = 0; i < pb->n_escalate; i++)
			cJSON_AddItemToArray(e, cJSON_CreateString(pb->escalate[i]));
	} else {
		const char **d = escalate_default_sinks();
		e = cJSON_AddArrayToObject(o, "escalate");
		for (size_t i = 0; d && d[i]; i++)
			cJSON_AddItemToArray(e, cJSON_CreateString(d[i]));
		free(d);
		cJSON_AddTrueToObject(o, "escalate_default");
	}
	if (pb->n_notify_success || pb->n_notify_start || pb->no_annotations) {
		cJSON *n = cJSON_AddObjectToObject(o, "notify");
		if (pb->n_notify_start) {
			e = cJSON_AddArrayToObject(n, "on_start");
			for (size_t i = 0; i < pb->n_notify_start; i++)
				cJSON_AddItemToArray(e, cJSON_CreateString(pb->notify_start[i]));
		}
		if (pb->n_notify_success) {
			e = cJSON_AddArrayToObject(n, "on_success");
			for (size_t i = 0; i < pb->n_notify_success; i++)
				cJSON_AddItemToArray(e, cJSON_CreateString(pb->notify_success[i]));
		}
		if (pb->no_annotations)
			cJSON_AddFalseToObject(n, "grafana");
	}
	cJSON_AddBoolToObject(o, "idempotent", pb->idempotent);
	{
		cJSON *ap = cJSON_AddObjectToObject(o, "approval");
		if (ap) {
			cJSON_AddBoolToObject(ap, "required", pb->approval_required);
			cJSON_AddNumberToObject(ap, "timeout", pb->approval_timeout);
		}
	}
	return o;
}

double playbook_backoff(const struct playbook *pb, int n, double rnd)
{
	double d = pb->backoff_initial;

	for (int i = 1; i < n && d < pb->backoff_max; i++)
		d *= pb->backoff_factor;
	if (d > pb->backoff_max)
		d = pb->backoff_max;
	/* "Equal jitter": never less than half the nominal delay, so retries
	 * stay spaced, but replicas and keys do not retry in lockstep. */
	return d / 2 + d / 2 * rnd;
}

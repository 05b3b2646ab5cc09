/* The `recovery` module: the module table, sleep, log, json, secret, env,
 * read_file, fail, fatal, now, dry_run; http is in lua_http.c, exec in
 * lua_exec.c. Expected failures return nil, err; misuse raises (Redis /
 * HAProxy convention), and since another attempt cannot change misuse
 * (a bad argument, an unknown option, a program or path outside the
 * allow-lists, no --secrets-dir) it raises a permanent error: the job
 * fails without retries. Every binding checks its arguments with the
 * lua_api_check* helpers below for that. http, exec and sleep yield the
 * job's coroutine to the runner, which they reach through job->host only. */
#include "recoveryd/lua_api.h"

#include <ctype.h>
#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lua_api_impl.h"
#include "recoveryd/common.h"
#include "recoveryd/job.h"
#include "recoveryd/log.h"
#include "recoveryd/lua_json.h"
#include "recoveryd/sandbox.h"

#define SECRET_MAX (64 * 1024)

static const char JOB_KEY[] = "recoveryd.job";
static const char FINAL_MT[] = "recoveryd.final";

static pthread_mutex_t conf_lock = PTHREAD_MUTEX_INITIALIZER;
static char *conf_secrets_dir;
static char **conf_exec_allow;
static double conf_http_timeout = 30;
static char **conf_env_allow;
static char **conf_read_allow;

static char **strv_dup(const char *const *v)
{
	size_t n = 0;
	char **r;
	while (v && v[n])
		n++;
	r = calloc(n + 1, sizeof(char *));
	for (size_t i = 0; r && i < n; i++)
		r[i] = strdup(v[i]);
	return r;
}

static void strv_free(char **v)
{
	for (char **p = v; p && *p; p++)
		free(*p);
	free(v);
}

static cJSON *conf_pb_settings;

void lua_api_set_playbook_settings(const char *json)
{
	pthread_mutex_lock(&conf_lock);
	cJSON_Delete(conf_pb_settings);
	conf_pb_settings = json ? cJSON_Parse(json) : NULL;
	pthread_mutex_unlock(&conf_lock);
}

void lua_api_push_settings(lua_State *L, const char *playbook)
{
	pthread_mutex_lock(&conf_lock);
	const cJSON *o = cJSON_GetObjectItemCaseSensitive(conf_pb_settings, playbook);
	if (cJSON_IsObject(o))
		lua_json_push(L, o);
	else
		lua_newtable(L);
	pthread_mutex_unlock(&conf_lock);
}

static int conf_test_faults;

/* recovery._test_stall(seconds): only with RECOVERYD_TEST_FAULTS=1. Blocks
 * the calling thread in C, out of the deadline hook's reach, so that tests
 * can prove the watchdog catches what the sandbox does not. */
static int l_test_stall(lua_State *L)
{
	double s = luaL_checknumber(L, 1);
	struct timespec ts;

	if (s < 0 || s > 600)
		return luaL_argerror(L, 1, "0 to 600 seconds");
	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
	return 0;
}

void lua_api_configure(const struct lua_api_conf *c)
{
	pthread_mutex_lock(&conf_lock);
	free(conf_secrets_dir);
	conf_secrets_dir = c->secrets_dir ? strdup(c->secrets_dir) : NULL;
	strv_free(conf_exec_allow);
	conf_exec_allow = strv_dup(c->exec_allow);
	strv_free(conf_env_allow);
	conf_env_allow = strv_dup(c->env_allow);
	strv_free(conf_read_allow);
	conf_read_allow = strv_dup(c->read_allow);
	conf_http_timeout = c->http_timeout > 0 ? c->http_timeout : 30;
	conf_test_faults = c->test_faults;
	pthread_mutex_unlock(&conf_lock);
}

struct job *lua_api_job(lua_State *L)
{
	struct job *j;
	lua_getfield(L, LUA_REGISTRYINDEX, JOB_KEY);
	j = lua_touserdata(L, -1);
	lua_pop(L, 1);
	return j;
}

struct job *lua_api_yielding_job(lua_State *L, const char *fn)
{
	struct job *j = lua_api_job(L);
	if (!j)
		lua_api_fatal(L, "recovery.%s is only available inside run and verify", fn);
	if (!j->host || j->host->thread(j) != L)
		lua_api_fatal(L, "recovery.%s must be called from the playbook itself, not from a coroutine", fn);
	return j;
}

void lua_api_record(struct job *j, const char *type, cJSON *detail, int planned)
{
	if (j && j->host)
		j->host->record(j, type, detail, planned);
	else
		cJSON_Delete(detail);
}

int lua_api_begin(struct job *j, struct op *op, char *err, size_t errlen)
{
	if (!j->host) {
		snprintf(err, errlen, "no attempt is running");
		return -1;
	}
	return j->host->begin(j, op, err, errlen);
}

int lua_api_submit(lua_State *L, struct job *j, struct op *op, void (*discard)(struct op *op))
{
	char err[256];

	if (lua_api_begin(j, op, err, sizeof(err)) < 0) {
		discard(op);
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	return lua_yield(L, 0);
}

double lua_api_deadline(struct job *j)
{
	return j->host ? j->host->deadline(j) : rd_mono();
}

double lua_api_http_timeout(void)
{
	double t;

	pthread_mutex_lock(&conf_lock);
	t = conf_http_timeout;
	pthread_mutex_unlock(&conf_lock);
	return t;
}

int lua_api_exec_allowed(const char *prog)
{
	int ok = 0;
	pthread_mutex_lock(&conf_lock);
	for (char **p = conf_exec_allow; p && *p && !ok; p++)
		ok = strcmp(*p, prog) == 0;
	pthread_mutex_unlock(&conf_lock);
	return ok;
}

/* ---------- permanent errors ---------- */

/* The message on top becomes the error value that ends the job without
 * retries: {reason, recoveryd_final = true[, permanent = true]}, which the
 * attempt driver recognises (and a pcall catches like any error). Its
 * tostring is the reason, so a playbook that catches and logs it reads the
 * message. */
static int raise_final(lua_State *L, int permanent)
{
	lua_newtable(L);
	lua_insert(L, -2);
	lua_setfield(L, -2, "reason");
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, "recoveryd_final");
	if (permanent) {
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, "permanent");
	}
	luaL_setmetatable(L, FINAL_MT);
	return lua_error(L);
}

static int final_tostring(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_pushliteral(L, "reason");
	lua_rawget(L, 1);
	if (lua_type(L, -1) != LUA_TSTRING)
		lua_pushliteral(L, "failed");
	return 1;
}

int lua_api_fatal(lua_State *L, const char *fmt, ...)
{
	va_list ap;

	luaL_where(L, 1);
	va_start(ap, fmt);
	lua_pushvfstring(L, fmt, ap);
	va_end(ap);
	lua_concat(L, 2);
	return raise_final(L, 1);
}

const char *lua_api_error_text(lua_State *L, int idx, int *final, int *permanent)
{
	const char *s = NULL;

	*final = *permanent = 0;
	if (lua_type(L, idx) == LUA_TSTRING)
		return lua_tostring(L, idx);
	if (lua_type(L, idx) != LUA_TTABLE)
		return NULL;
	idx = lua_absindex(L, idx);
	/* Raw reads: no metamethod runs. */
	lua_pushliteral(L, "recoveryd_final");
	*final = lua_rawget(L, idx) != LUA_TNIL && lua_toboolean(L, -1);
	lua_pop(L, 1);
	if (!*final)
		return NULL;
	lua_pushliteral(L, "permanent");
	*permanent = lua_rawget(L, idx) != LUA_TNIL && lua_toboolean(L, -1);
	lua_pop(L, 1);
	lua_pushliteral(L, "reason");
	if (lua_rawget(L, idx) == LUA_TSTRING)
		s = lua_tostring(L, -1); /* kept alive by the marker */
	lua_pop(L, 1);
	return s;
}

int lua_api_argerror(lua_State *L, const char *fn, int arg, const char *msg)
{
	return lua_api_fatal(L, "recovery.%s: bad argument #%d (%s)", fn, arg, msg);
}

static int type_error(lua_State *L, const char *fn, int arg, const char *want)
{
	return lua_api_argerror(L, fn, arg, lua_pushfstring(L, "%s expected, got %s", want, luaL_typename(L, arg)));
}

void lua_api_checktype(lua_State *L, const char *fn, int arg, int t)
{
	if (lua_type(L, arg) != t)
		type_error(L, fn, arg, lua_typename(L, t));
}

const char *lua_api_checklstring(lua_State *L, const char *fn, int arg, size_t *len)
{
	if (lua_type(L, arg) != LUA_TSTRING && lua_type(L, arg) != LUA_TNUMBER)
		type_error(L, fn, arg, "string");
	return lua_tolstring(L, arg, len);
}

const char *lua_api_checkcstr(lua_State *L, const char *fn, int arg)
{
	size_t len;
	const char *s = lua_api_checklstring(L, fn, arg, &len);

	if (memchr(s, '\0', len))
		lua_api_argerror(L, fn, arg, "must not contain a NUL byte");
	return s;
}

lua_Number lua_api_checknumber(lua_State *L, const char *fn, int arg)
{
	int isnum;
	lua_Number n = lua_tonumberx(L, arg, &isnum);

	if (!isnum)
		type_error(L, fn, arg, "number");
	return n;
}

const char *lua_api_tolstring(lua_State *L, int idx, const char *what, size_t *len)
{
	if (lua_type(L, idx) != LUA_TSTRING && lua_type(L, idx) != LUA_TNUMBER)
		lua_api_fatal(L, "%s: expected a string, got %s", what, luaL_typename(L, idx));
	return lua_tolstring(L, idx, len);
}

const char *lua_api_tocstr(lua_State *L, int idx, const char *what)
{
	size_t len;
	const char *s = lua_api_tolstring(L, idx, what, &len);

	if (memchr(s, '\0', len))
		lua_api_fatal(L, "%s: must not contain a NUL byte", what);
	return s;
}

lua_Number lua_api_optnumber(lua_State *L, int idx, const char *what, lua_Number def)
{
	int isnum;
	lua_Number n;

	if (lua_isnoneornil(L, idx))
		return def;
	n = lua_tonumberx(L, idx, &isnum);
	if (!isnum)
		lua_api_fatal(L, "%s: expected a number, got %s", what, luaL_typename(L, idx));
	return n;
}

void lua_api_checkfield(lua_State *L, int idx, const char *what, int t)
{
	if (lua_type(L, idx) != t)
		lua_api_fatal(L, "%s: expected a %s, got %s", what, lua_typename(L, t), luaL_typename(L, idx));
}

static int allowed_key(lua_State *L, const char *const *keys, lua_Integer n_list)
{
	if (lua_isinteger(L, -2)) {
		lua_Integer i = lua_tointeger(L, -2);
		return i >= 1 && i <= n_list;
	}
	if (lua_type(L, -2) != LUA_TSTRING)
		return 0;
	for (const char *const *k = keys; *k; k++)
		if (strcmp(lua_tostring(L, -2), *k) == 0)
			return 1;
	return 0;
}

void lua_api_check_keys(lua_State *L, int idx, const char *fn, const char *const *keys, lua_Integer n_list)
{
	idx = lua_absindex(L, idx);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		if (!allowed_key(L, keys, n_list)) {
			luaL_Buffer b;
			/* The key as written: "name", or [value] for any other type. */
			if (lua_type(L, -2) == LUA_TSTRING) {
				lua_pushfstring(L, "\"%s\"", lua_tostring(L, -2));
			} else if (lua_type(L, -2) == LUA_TNUMBER) {
				lua_pushvalue(L, -2); /* converted on the copy, not on the key */
				lua_pushfstring(L, "[%s]", lua_tostring(L, -1));
				lua_remove(L, -2);
			} else {
				lua_pushfstring(L, "of type %s", luaL_typename(L, -2));
			}
			luaL_buffinit(L, &b);
			if (n_list > 0) {
				lua_pushfstring(L, "[1] to [%I], ", n_list);
				luaL_addvalue(&b);
			}
			for (const char *const *k = keys; *k; k++) {
				if (k != keys)
					luaL_addstring(&b, ", ");
				luaL_addstring(&b, *k);
			}
			luaL_pushresult(&b);
			lua_api_fatal(L, "recovery.%s: unknown option %s (allowed: %s)", fn, lua_tostring(L, -2),
			              lua_tostring(L, -1));
		}
		lua_pop(L, 1);
	}
}

/* ---------- log ---------- */

static int do_log(lua_State *L, enum log_level lvl)
{
	const char *msg = lua_api_checkcstr(L, "log", 1);
	struct job *j = lua_api_job(L);
	cJSON *fields = NULL, *detail;
	const char *err = NULL;

	if (!lua_isnoneornil(L, 2)) {
		lua_api_checktype(L, "log", 2, LUA_TTABLE);
		fields = lua_json_from(L, 2, &err);
		if (!fields)
			return lua_api_fatal(L, "recovery.log: fields: %s", err);
	}
	detail = cJSON_CreateObject();
	cJSON_AddStringToObject(detail, "level", log_level_name(lvl));
	cJSON_AddStringToObject(detail, "msg", msg);
	if (fields)
		cJSON_AddItemToObject(detail, "fields", fields);
	if (j)
		job_redact_json(j, detail);
	log_json(lvl, j ? j->id : NULL, cJSON_GetObjectItem(detail, "msg")->valuestring,
	         cJSON_GetObjectItem(detail, "fields"));
	if (j)
		lua_api_record(j, "log", detail, 0);
	else
		cJSON_Delete(detail);
	return 0;
}

static int l_log_info(lua_State *L) { return do_log(L, LOG_INFO); }
static int l_log_warn(lua_State *L) { return do_log(L, LOG_WARN); }
static int l_log_error(lua_State *L) { return do_log(L, LOG_ERROR); }

/* print() goes to the job log, never to stdout. */
static int l_print(lua_State *L)
{
	luaL_Buffer b;
	int n = lua_gettop(L);
	luaL_buffinit(L, &b);
	for (int i = 1; i <= n; i++) {
		if (i > 1)
			luaL_addchar(&b, '\t');
		luaL_tolstring(L, i, NULL);
		luaL_addvalue(&b);
	}
	luaL_pushresult(&b);
	lua_replace(L, 1);
	lua_settop(L, 1);
	return do_log(L, LOG_INFO);
}

/* ---------- misc ---------- */

/* recovery.fail(reason): fail this attempt and the job at once, without
 * retries (a precondition does not hold: escalate now). */
static int l_fail(lua_State *L)
{
	lua_api_checkcstr(L, "fail", 1);
	lua_settop(L, 1);
	return raise_final(L, 0);
}

/* recovery.fatal(message [, level]): error(message, level) made permanent,
 * for the helper library's misuse checks (an unknown option key). */
static int l_fatal(lua_State *L)
{
	const char *msg = lua_api_checkcstr(L, "fatal", 1);
	int level = lua_isnoneornil(L, 2) ? 1 : (int)lua_api_checknumber(L, "fatal", 2);

	if (level > 0) {
		luaL_where(L, level);
		lua_pushstring(L, msg);
		lua_concat(L, 2);
	} else {
		lua_settop(L, 1);
	}
	return raise_final(L, 1);
}

static int l_now(lua_State *L)
{
	lua_pushnumber(L, rd_now());
	return 1;
}

static void add_secret(struct job *j, const char *v)
{
	if (!j || strlen(v) < 4)
		return;
	char **ns = realloc(j->secrets, (j->n_secrets + 1) * sizeof(char *));
	if (ns) {
		j->secrets = ns;
		j->secrets[j->n_secrets++] = strdup(v);
	}
}

static int valid_secret_name(const char *s)
{
	if (!*s || *s == '.' || strlen(s) > 128)
		return 0;
	for (; *s; s++)
		if (!(isalnum((unsigned char)*s) || *s == '-' || *s == '_' || *s == '.'))
			return 0;
	return 1;
}

/* recovery.secret(name): a file of --secrets-dir, or nil, err when it
 * cannot be read (it may appear later). No --secrets-dir is permanent. */
static int l_secret(lua_State *L)
{
	const char *name = lua_api_checkcstr(L, "secret", 1);
	struct job *j = lua_api_job(L);
	char path[4096];
	char *v;

	if (!valid_secret_name(name))
		return lua_api_fatal(L, "recovery.secret: invalid name '%s' (letters, digits, . _ -)", name);
	pthread_mutex_lock(&conf_lock);
	if (!conf_secrets_dir) {
		pthread_mutex_unlock(&conf_lock);
		return lua_api_fatal(L, "recovery.secret: no secrets directory is configured (--secrets-dir)");
	}
	snprintf(path, sizeof(path), "%s/%s", conf_secrets_dir, name);
	pthread_mutex_unlock(&conf_lock);
	v = rd_read_file(path, SECRET_MAX, NULL, 1);
	if (!v) {
		lua_pushnil(L);
		lua_pushfstring(L, "secret '%s': %s", name, strerror(errno));
		return 2;
	}
	add_secret(j, v);
	lua_pushstring(L, v);
	explicit_bzero(v, strlen(v));
	free(v);
	return 1;
}

/* recovery.env(name): only variables named by --env-allow. */
static int l_env(lua_State *L)
{
	const char *name = lua_api_checkcstr(L, "env", 1);
	int ok = 0;

	pthread_mutex_lock(&conf_lock);
	for (char **p = conf_env_allow; p && *p && !ok; p++)
		ok = strcmp(*p, name) == 0;
	pthread_mutex_unlock(&conf_lock);
	if (!ok)
		return lua_api_fatal(L, "recovery.env: '%s' is not allowed (see --env-allow)", name);
	const char *v = getenv(name);
	if (!v)
		return 0;
	lua_pushstring(L, v);
	return 1;
}

int lua_api_read_allowed(const char *path)
{
	int ok = 0;

	size_t pl = strlen(path);
	if (path[0] != '/' || strstr(path, "/../") || strstr(path, "/./") ||
	    (pl >= 3 && strcmp(path + pl - 3, "/..") == 0) || (pl >= 2 && strcmp(path + pl - 2, "/.") == 0))
		return 0;
	pthread_mutex_lock(&conf_lock);
	for (char **p = conf_read_allow; p && *p && !ok; p++) {
		size_t n = strlen(*p);
		while (n > 1 && (*p)[n - 1] == '/')
			n--;
		ok = strncmp(path, *p, n) == 0 && path[n] == '/' && path[n + 1];
	}
	pthread_mutex_unlock(&conf_lock);
	return ok;
}

/* recovery.read_file(path): small files under --read-allow (a service
 * account token, a CA bundle); the content is redacted like a secret. */
static int l_read_file(lua_State *L)
{
	static const char *const keys[] = {"secret", NULL};
	const char *path = lua_api_checkcstr(L, "read_file", 1);
	size_t len;
	char *v;
	int secret = 1;

	/* {secret = false}: a namespace name or a CA bundle, which would
	 * otherwise be masked wherever it appears (URLs included). */
	if (!lua_isnoneornil(L, 2)) {
		lua_api_checktype(L, "read_file", 2, LUA_TTABLE);
		lua_api_check_keys(L, 2, "read_file", keys, 0);
		lua_getfield(L, 2, "secret");
		if (!lua_isnil(L, -1))
			secret = lua_toboolean(L, -1);
		lua_pop(L, 1);
	}

	if (!lua_api_read_allowed(path))
		return lua_api_fatal(L, "recovery.read_file: %s is outside the allowed directories (see --read-allow)",
		                     path);
	v = rd_read_file(path, SECRET_MAX, &len, 0);
	if (!v) {
		lua_pushnil(L);
		lua_pushfstring(L, "%s: %s", path, strerror(errno));
		return 2;
	}
	char *trimmed = secret ? strdup(v) : NULL;
	if (trimmed) {
		size_t n = strlen(trimmed);
		while (n && strchr(" \t\r\n", trimmed[n - 1]))
			trimmed[--n] = '\0';
		add_secret(lua_api_job(L), trimmed);
		free(trimmed);
	}
	lua_pushlstring(L, v, len);
	explicit_bzero(v, len);
	free(v);
	return 1;
}

/* ---------- sleep ---------- */

static int finish_nothing(lua_State *co, struct op *op)
{
	(void)co;
	(void)op;
	return 0;
}

static int l_sleep(lua_State *L)
{
	double s = lua_api_checknumber(L, "sleep", 1);
	struct job *j;
	struct op *op;
	char err[128];

	if (!(s >= 0 && isfinite(s)))
		lua_api_argerror(L, "sleep", 1, "seconds must be >= 0");
	j = lua_api_yielding_job(L, "sleep");
	op = calloc(1, sizeof(*op));
	if (!op)
		return luaL_error(L, "out of memory");
	op->kind = OP_SLEEP;
	op->pidfd = op->out_fd = op->err_fd = -1;
	op->deadline = rd_mono() + s;
	op->finish = finish_nothing;
	cJSON *d = cJSON_CreateObject();
	cJSON_AddStringToObject(d, "kind", "sleep");
	cJSON_AddNumberToObject(d, "seconds", s);
	lua_api_record(j, "action", d, 0);
	if (lua_api_begin(j, op, err, sizeof(err)) < 0) {
		free(op);
		return luaL_error(L, "recovery.sleep: %s", err);
	}
	return lua_yield(L, 0);
}

/* ---------- module ---------- */

void lua_api_open(lua_State *L, struct job *job)
{
	static const luaL_Reg fns[] = {{"http", lua_http_request},  {"exec", lua_exec_run}, {"sleep", l_sleep},
	                               {"secret", l_secret},         {"now", l_now},         {"env", l_env},
	                               {"read_file", l_read_file},   {"fail", l_fail},       {"fatal", l_fatal},
	                               {NULL, NULL}};
	static const luaL_Reg logf[] = {
		{"info", l_log_info}, {"warn", l_log_warn}, {"error", l_log_error}, {NULL, NULL}};

	lua_pushlightuserdata(L, job);
	lua_setfield(L, LUA_REGISTRYINDEX, JOB_KEY);
	/* Attached by C: protected, as every such metatable. */
	if (luaL_newmetatable(L, FINAL_MT)) {
		lua_pushcfunction(L, final_tostring);
		lua_setfield(L, -2, "__tostring");
		sandbox_protect_metatable(L, -1);
	}
	lua_pop(L, 1);
	lua_http_open(L);
	luaL_newlib(L, fns);
	pthread_mutex_lock(&conf_lock);
	if (conf_test_faults) {
		lua_pushcfunction(L, l_test_stall);
		lua_setfield(L, -2, "_test_stall");
	}
	pthread_mutex_unlock(&conf_lock);
	luaL_newlib(L, logf);
	lua_setfield(L, -2, "log");
	lua_json_open(L);
	lua_setfield(L, -2, "json");
	lua_pushboolean(L, job ? job_plans_only(job) : 0);
	lua_setfield(L, -2, "dry_run");
	lua_pushvalue(L, -1);
	lua_setglobal(L, "recovery");
	sandbox_preload(L, "recovery");
	lua_register(L, "print", l_print);
}

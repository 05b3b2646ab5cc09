/* The `recovery` module: http, exec, sleep, log, json, secret, now,
 * dry_run. Every binding checks its arguments with luaL_check*; expected
 * failures return nil, err; misuse raises (Redis / HAProxy convention).
 * http, exec and sleep yield the job's coroutine to the runner. */
#include "recoveryd/lua_api.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "recoveryd/common.h"
#include "recoveryd/job.h"
#include "recoveryd/log.h"
#include "recoveryd/lua_json.h"
#include "recoveryd/runner.h"
#include "recoveryd/sandbox.h"

#define HTTP_BODY_MAX (8 * 1024 * 1024)
#define EXEC_OUT_MAX (1024 * 1024)
#define EXEC_ARGS_MAX 256
#define RECORD_OUT_MAX 4096 /* stdout/stderr bytes kept in the job record */
#define SECRET_MAX (64 * 1024)

static const char JOB_KEY[] = "recoveryd.job";
static const char RESP_MT[] = "recoveryd.response";

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

static struct job *job_of(lua_State *L)
{
	struct job *j;
	lua_getfield(L, LUA_REGISTRYINDEX, JOB_KEY);
	j = lua_touserdata(L, -1);
	lua_pop(L, 1);
	return j;
}

/* The job, and a check that we may yield to the runner from here. */
static struct job *yielding_job(lua_State *L, const char *fn)
{
	struct job *j = job_of(L);
	if (!j)
		luaL_error(L, "recovery.%s is only available inside run and verify", fn);
	if (runner_job_thread(j) != L)
		luaL_error(L, "recovery.%s must be called from the playbook itself, not from a coroutine", fn);
	return j;
}

/* ---------- log ---------- */

static int do_log(lua_State *L, enum log_level lvl)
{
	const char *msg = sandbox_checkcstr(L, 1);
	struct job *j = job_of(L);
	cJSON *fields = NULL, *detail;
	const char *err = NULL;

	if (!lua_isnoneornil(L, 2)) {
		luaL_checktype(L, 2, LUA_TTABLE);
		fields = lua_json_from(L, 2, &err);
		if (!fields)
			return luaL_error(L, "log fields: %s", err);
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
		runner_record(j, "log", detail, 0);
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
 * retries (a precondition does not hold: escalate now). The marker table
 * is recognised by the attempt driver. */
static int l_fail(lua_State *L)
{
	const char *why = sandbox_checkcstr(L, 1);
	lua_newtable(L);
	lua_pushstring(L, why);
	lua_setfield(L, -2, "reason");
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, "recoveryd_final");
	return lua_error(L);
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

static int l_secret(lua_State *L)
{
	const char *name = sandbox_checkcstr(L, 1);
	struct job *j = job_of(L);
	char path[4096];
	char *v;

	if (!valid_secret_name(name))
		return luaL_error(L, "recovery.secret: invalid name '%s' (letters, digits, . _ -)", name);
	pthread_mutex_lock(&conf_lock);
	if (!conf_secrets_dir) {
		pthread_mutex_unlock(&conf_lock);
		lua_pushnil(L);
		lua_pushstring(L, "no secrets directory is configured (--secrets-dir)");
		return 2;
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
	const char *name = sandbox_checkcstr(L, 1);
	int ok = 0;

	pthread_mutex_lock(&conf_lock);
	for (char **p = conf_env_allow; p && *p && !ok; p++)
		ok = strcmp(*p, name) == 0;
	pthread_mutex_unlock(&conf_lock);
	if (!ok)
		return luaL_error(L, "recovery.env: '%s' is not allowed (see --env-allow)", name);
	const char *v = getenv(name);
	if (!v)
		return 0;
	lua_pushstring(L, v);
	return 1;
}

/* Is path inside one of the --read-allow directories (no "..")? */
static int read_allowed(const char *path)
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
	const char *path = sandbox_checkcstr(L, 1);
	size_t len;
	char *v;
	int secret = 1;

	/* {secret = false}: a namespace name or a CA bundle, which would
	 * otherwise be masked wherever it appears (URLs included). */
	if (!lua_isnoneornil(L, 2)) {
		luaL_checktype(L, 2, LUA_TTABLE);
		lua_getfield(L, 2, "secret");
		if (!lua_isnil(L, -1))
			secret = lua_toboolean(L, -1);
		lua_pop(L, 1);
	}

	if (!read_allowed(path))
		return luaL_error(L, "recovery.read_file: %s is outside the allowed directories (see --read-allow)",
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
		add_secret(job_of(L), trimmed);
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
	double s = luaL_checknumber(L, 1);
	struct job *j;
	struct op *op;
	char err[128];

	luaL_argcheck(L, s >= 0 && isfinite(s), 1, "seconds must be >= 0");
	j = yielding_job(L, "sleep");
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
	runner_record(j, "action", d, 0);
	if (runner_begin_op(j, op, err, sizeof(err)) < 0) {
		free(op);
		return luaL_error(L, "recovery.sleep: %s", err);
	}
	return lua_yield(L, 0);
}

/* ---------- http ---------- */

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
	struct rbuf *b = ud;
	return rbuf_append(b, p, sz * n) == 0 ? sz * n : 0; /* 0 aborts: over the cap */
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
	struct rbuf *b = ud;
	/* A new status line (redirect or 100-continue) restarts the headers. */
	if (sz * n >= 5 && strncmp(p, "HTTP/", 5) == 0)
		b->len = 0;
	rbuf_append(b, p, sz * n);
	return sz * n;
}

static int resp_json(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_getfield(L, 1, "body");
	lua_replace(L, 1);
	lua_settop(L, 1);
	if (lua_type(L, 1) != LUA_TSTRING) {
		lua_pushnil(L);
		lua_pushstring(L, "response has no body");
		return 2;
	}
	return lua_json_decode(L);
}

static void push_response(lua_State *L, long status, const char *body, size_t len, const char *hdrs,
                          int planned)
{
	lua_newtable(L);
	lua_pushinteger(L, status);
	lua_setfield(L, -2, "status");
	lua_pushlstring(L, body ? body : "", body ? len : 0);
	lua_setfield(L, -2, "body");
	lua_newtable(L);
	for (const char *p = hdrs; p && *p;) {
		const char *eol = strstr(p, "\r\n");
		size_t linelen = eol ? (size_t)(eol - p) : strlen(p);
		const char *colon = memchr(p, ':', linelen);
		if (colon && strncmp(p, "HTTP/", 5) != 0) {
			char name[128];
			size_t nl = (size_t)(colon - p) < sizeof(name) - 1 ? (size_t)(colon - p) : sizeof(name) - 1;
			for (size_t i = 0; i < nl; i++)
				name[i] = (char)tolower((unsigned char)p[i]);
			name[nl] = '\0';
			const char *v = colon + 1;
			while (v < p + linelen && (*v == ' ' || *v == '\t'))
				v++;
			lua_pushlstring(L, v, (size_t)(p + linelen - v));
			lua_setfield(L, -2, name);
		}
		p += linelen + (eol ? 2 : 0);
	}
	lua_setfield(L, -2, "headers");
	if (planned) {
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, "planned");
	}
	luaL_setmetatable(L, RESP_MT);
}

struct http_ctx {
	cJSON *detail;
	int planned;
};

static void free_http_ctx(void *p)
{
	struct http_ctx *c = p;
	if (c) {
		cJSON_Delete(c->detail);
		free(c);
	}
}

static int finish_http(lua_State *co, struct op *op)
{
	struct http_ctx *c = op->ctx;
	long status = 0;
	double dur = rd_mono() - op->started;

	cJSON_AddNumberToObject(c->detail, "duration_seconds", dur);
	if (op->cc != CURLE_OK) {
		const char *why = op->errbuf[0] ? op->errbuf : curl_easy_strerror(op->cc);
		char msg[CURL_ERROR_SIZE + 64];
		if (op->cc == CURLE_WRITE_ERROR && op->resp.truncated)
			why = "response body larger than 8 MiB";
		snprintf(msg, sizeof(msg), "%s", why);
		cJSON_AddStringToObject(c->detail, "error", msg);
		runner_record(op->job, "action", c->detail, 0);
		c->detail = NULL;
		lua_pushnil(co);
		lua_pushstring(co, msg);
		return 2;
	}
	curl_easy_getinfo(op->easy, CURLINFO_RESPONSE_CODE, &status);
	cJSON_AddNumberToObject(c->detail, "status", (double)status);
	runner_record(op->job, "action", c->detail, 0);
	c->detail = NULL;
	push_response(co, status, op->resp.p, op->resp.len, op->resp_headers.p, 0);
	return 1;
}

/* Release an HTTP op that never reached the runner. */
static void http_op_discard(struct op *op)
{
	if (!op)
		return;
	if (op->easy)
		curl_easy_cleanup(op->easy);
	free(op->body);
	free_http_ctx(op->ctx);
	curl_slist_free_all(op->headers);
	free(op);
}

static int l_http(lua_State *L)
{
	struct job *j;
	const char *url, *method, *body = NULL, *jerr = NULL;
	size_t body_len = 0;
	double timeout, remaining;
	struct op *op = NULL;
	struct http_ctx *c = NULL;
	char *json_body = NULL, err[256], mbuf[16];
	int has_ct = 0;

	luaL_checktype(L, 1, LUA_TTABLE);
	lua_getfield(L, 1, "url");
	url = sandbox_tocstr(L, -1, "recovery.http: url");
	if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
		return luaL_error(L, "recovery.http: url must start with http:// or https://");
	lua_getfield(L, 1, "method");
	method = lua_isnil(L, -1) ? "GET" : sandbox_tocstr(L, -1, "recovery.http: method");
	size_t ml = strlen(method);
	luaL_argcheck(L, ml > 0 && ml < sizeof(mbuf), 1, "method: invalid");
	for (size_t i = 0; i <= ml; i++)
		mbuf[i] = (char)toupper((unsigned char)method[i]);
	for (size_t i = 0; i < ml; i++)
		luaL_argcheck(L, mbuf[i] >= 'A' && mbuf[i] <= 'Z', 1, "method: letters only");
	lua_getfield(L, 1, "body");
	if (!lua_isnil(L, -1))
		body = luaL_checklstring(L, -1, &body_len);
	lua_getfield(L, 1, "timeout");
	pthread_mutex_lock(&conf_lock);
	timeout = luaL_optnumber(L, -1, conf_http_timeout);
	pthread_mutex_unlock(&conf_lock);
	/* mutates=false: a POST that only reads (a compatibility check, a
	 * query) runs in dry-run like a GET. */
	lua_getfield(L, 1, "mutates");
	int mutates = lua_isnil(L, -1) ? strcmp(mbuf, "GET") != 0 && strcmp(mbuf, "HEAD") != 0
	                               : lua_toboolean(L, -1);
	lua_pop(L, 1);
	lua_getfield(L, 1, "ca_file");
	const char *ca_file = lua_isnil(L, -1) ? NULL : sandbox_tocstr(L, -1, "recovery.http: ca_file");
	if (ca_file && !read_allowed(ca_file))
		return luaL_error(L, "recovery.http: ca_file %s is outside the allowed directories (see --read-allow)",
		                  ca_file);
	lua_getfield(L, 1, "ca");
	size_t ca_len = 0;
	const char *ca_pem = lua_isnil(L, -1) ? NULL : luaL_checklstring(L, -1, &ca_len);
	lua_pop(L, 2);
	lua_getfield(L, 1, "headers");
	if (!lua_isnil(L, -1)) {
		luaL_checktype(L, -1, LUA_TTABLE);
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			if (sandbox_has_nul(L, -2) || sandbox_has_nul(L, -1))
				return luaL_error(L, "recovery.http: header names and values must not contain a NUL byte");
			lua_pop(L, 1);
		}
	}

	j = yielding_job(L, "http");
	/* Allocate only after every check that can raise. */
	lua_getfield(L, 1, "json");
	if (!lua_isnil(L, -1)) {
		cJSON *v = lua_json_from(L, -1, &jerr);
		if (!v)
			return luaL_error(L, "recovery.http: json: %s", jerr);
		json_body = cJSON_PrintUnformatted(v);
		cJSON_Delete(v);
		if (!json_body)
			return luaL_error(L, "out of memory");
		body = json_body;
		body_len = strlen(json_body);
	}
	lua_pop(L, 1);
	c = calloc(1, sizeof(*c));
	if (!c)
		goto nomem;
	c->detail = cJSON_CreateObject();
	cJSON_AddStringToObject(c->detail, "kind", "http");
	cJSON_AddStringToObject(c->detail, "method", mbuf);
	cJSON_AddStringToObject(c->detail, "url", url);

	/* Dry-run: reads run, writes are recorded and answered with a 200. */
	if (!mutates)
		cJSON_AddBoolToObject(c->detail, "mutates", 0);
	if (j->dry_run && mutates) {
		cJSON_AddNumberToObject(c->detail, "body_bytes", (double)body_len);
		runner_record(j, "action", c->detail, 1);
		c->detail = NULL;
		free_http_ctx(c);
		free(json_body);
		push_response(L, 200, "", 0, NULL, 1);
		return 1;
	}

	op = calloc(1, sizeof(*op));
	if (!op)
		goto nomem;
	op->kind = OP_HTTP;
	op->pidfd = op->out_fd = op->err_fd = -1;
	op->ctx = c;
	op->free_ctx = free_http_ctx;
	c = NULL;
	op->finish = finish_http;
	op->resp.max = HTTP_BODY_MAX;
	op->resp_headers.max = 64 * 1024;
	op->easy = curl_easy_init();
	if (!op->easy)
		goto nomem;
	remaining = runner_attempt_deadline(j) - rd_mono();
	if (timeout > remaining)
		timeout = remaining;
	if (timeout < 0.001)
		timeout = 0.001;
	curl_easy_setopt(op->easy, CURLOPT_URL, url);
	curl_easy_setopt(op->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(op->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(op->easy, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
	curl_easy_setopt(op->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout * 1000));
	curl_easy_setopt(op->easy, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(op->easy, CURLOPT_WRITEDATA, &op->resp);
	curl_easy_setopt(op->easy, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(op->easy, CURLOPT_HEADERDATA, &op->resp_headers);
	curl_easy_setopt(op->easy, CURLOPT_ERRORBUFFER, op->errbuf);
	curl_easy_setopt(op->easy, CURLOPT_USERAGENT, "recoveryd/" RECOVERYD_VERSION);
	if (ca_file)
		curl_easy_setopt(op->easy, CURLOPT_CAINFO, ca_file);
	if (ca_pem) {
		struct curl_blob blob = {(void *)ca_pem, ca_len, CURL_BLOB_COPY};
		curl_easy_setopt(op->easy, CURLOPT_CAINFO_BLOB, &blob);
	}
	if (strcmp(mbuf, "HEAD") == 0)
		curl_easy_setopt(op->easy, CURLOPT_NOBODY, 1L);
	else if (strcmp(mbuf, "GET") != 0)
		curl_easy_setopt(op->easy, CURLOPT_CUSTOMREQUEST, mbuf);
	if (body) {
		op->body = malloc(body_len + 1);
		if (!op->body)
			goto nomem;
		memcpy(op->body, body, body_len);
		op->body[body_len] = '\0';
		curl_easy_setopt(op->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
		curl_easy_setopt(op->easy, CURLOPT_POSTFIELDS, op->body);
	}
	if (lua_istable(L, -1)) {
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
				const char *k = lua_tostring(L, -2), *v = lua_tostring(L, -1);
				if (strpbrk(k, "\r\n:") || strpbrk(v, "\r\n")) {
					lua_pop(L, 2);
					http_op_discard(op);
					free(json_body);
					return luaL_error(L, "recovery.http: header names and values cannot contain CR, LF (or ':' in names)");
				}
				if (strcasecmp(k, "content-type") == 0)
					has_ct = 1;
				char *line = malloc(strlen(k) + strlen(v) + 3);
				if (line) {
					sprintf(line, "%s: %s", k, v);
					op->headers = curl_slist_append(op->headers, line);
					free(line);
				}
			}
			lua_pop(L, 1);
		}
	}
	if (json_body && !has_ct)
		op->headers = curl_slist_append(op->headers, "Content-Type: application/json");
	/* No "Expect: 100-continue" round trip for small bodies. */
	op->headers = curl_slist_append(op->headers, "Expect:");
	curl_easy_setopt(op->easy, CURLOPT_HTTPHEADER, op->headers);
	free(json_body);
	json_body = NULL;
	if (runner_begin_op(j, op, err, sizeof(err)) < 0) {
		http_op_discard(op);
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	return lua_yield(L, 0);
nomem:
	free(json_body);
	free_http_ctx(c);
	http_op_discard(op);
	return luaL_error(L, "out of memory");
}

/* ---------- exec ---------- */

struct exec_ctx {
	cJSON *detail;
	double timeout;
};

static void free_exec_ctx(void *p)
{
	struct exec_ctx *c = p;
	if (c) {
		cJSON_Delete(c->detail);
		free(c);
	}
}

/* The head of a command's output for the job record, marked when cut. */
static void record_output(cJSON *detail, const char *name, const struct rbuf *b)
{
	char buf[RECORD_OUT_MAX + 64];
	size_t n = b->len > RECORD_OUT_MAX ? RECORD_OUT_MAX : b->len;

	memcpy(buf, b->p ? b->p : "", n);
	if (b->len > RECORD_OUT_MAX || b->truncated)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\n...[truncated: %zu bytes in all]",
		                      b->len);
	buf[n] = '\0';
	cJSON_AddStringToObject(detail, name, buf);
}

static int finish_exec(lua_State *co, struct op *op)
{
	struct exec_ctx *c = op->ctx;
	int code = -1, sig = 0;

	if (WIFEXITED(op->wstatus))
		code = WEXITSTATUS(op->wstatus);
	else if (WIFSIGNALED(op->wstatus))
		sig = WTERMSIG(op->wstatus);
	cJSON_AddNumberToObject(c->detail, "duration_seconds", rd_mono() - op->started);
	if (op->timed_out) {
		char msg[96];
		snprintf(msg, sizeof(msg), "timeout after %gs (process group killed)", c->timeout);
		cJSON_AddStringToObject(c->detail, "error", msg);
		runner_record(op->job, "action", c->detail, 0);
		c->detail = NULL;
		lua_pushnil(co);
		lua_pushstring(co, msg);
		return 2;
	}
	cJSON_AddNumberToObject(c->detail, "code", sig ? 128 + sig : code);
	if (sig)
		cJSON_AddNumberToObject(c->detail, "signal", sig);
	record_output(c->detail, "stdout", &op->out);
	record_output(c->detail, "stderr", &op->err);
	runner_record(op->job, "action", c->detail, 0);
	c->detail = NULL;
	lua_newtable(co);
	lua_pushinteger(co, sig ? 128 + sig : code);
	lua_setfield(co, -2, "code");
	if (sig) {
		lua_pushinteger(co, sig);
		lua_setfield(co, -2, "signal");
	}
	lua_pushlstring(co, op->out.p ? op->out.p : "", op->out.len);
	lua_setfield(co, -2, "stdout");
	lua_pushlstring(co, op->err.p ? op->err.p : "", op->err.len);
	lua_setfield(co, -2, "stderr");
	if (op->out.truncated || op->err.truncated) {
		lua_pushboolean(co, 1);
		lua_setfield(co, -2, "truncated");
	}
	return 1;
}

static int allowed(const char *prog)
{
	int ok = 0;
	pthread_mutex_lock(&conf_lock);
	for (char **p = conf_exec_allow; p && *p && !ok; p++)
		ok = strcmp(*p, prog) == 0;
	pthread_mutex_unlock(&conf_lock);
	return ok;
}

static void free_strv(char **v)
{
	for (char **p = v; p && *p; p++)
		free(*p);
	free(v);
}

/* Start argv[0] in a process group of its own, with in/out/err as its
 * stdin/stdout/stderr, no other descriptor, default signal dispositions and
 * an empty mask. posix_spawn (glibc: clone with CLONE_VM|CLONE_VFORK) does
 * not copy the daemon's page tables as fork would, and reports a failed
 * exec as its result. Returns 0 or an errno value. */
static int spawn(char **argv, char **envp, int in, int out, int errfd, pid_t *pid)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, all;
	int rc;

	if ((rc = posix_spawn_file_actions_init(&fa)) != 0)
		return rc;
	if ((rc = posix_spawnattr_init(&at)) != 0) {
		posix_spawn_file_actions_destroy(&fa);
		return rc;
	}
	sigemptyset(&none);
	sigfillset(&all);
	if ((rc = posix_spawn_file_actions_adddup2(&fa, in, 0)) != 0 ||
	    (rc = posix_spawn_file_actions_adddup2(&fa, out, 1)) != 0 ||
	    (rc = posix_spawn_file_actions_adddup2(&fa, errfd, 2)) != 0 ||
	    (rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3)) != 0 ||
	    (rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
	                                            POSIX_SPAWN_SETSIGDEF)) != 0 ||
	    (rc = posix_spawnattr_setpgroup(&at, 0)) != 0 ||
	    (rc = posix_spawnattr_setsigmask(&at, &none)) != 0 ||
	    (rc = posix_spawnattr_setsigdefault(&at, &all)) != 0)
		goto out;
	rc = posix_spawn(pid, argv[0], &fa, &at, argv, envp);
out:
	posix_spawnattr_destroy(&at);
	posix_spawn_file_actions_destroy(&fa);
	return rc;
}

static int l_exec(lua_State *L)
{
	struct job *j;
	char **argv = NULL, **envp = NULL, err[256];
	size_t argc, envc = 0, stdin_len = 0;
	const char *stdin_data = NULL;
	double timeout, remaining;
	int mutates, out[2] = {-1, -1}, errp[2] = {-1, -1}, in_fd = -1, rc;
	struct op *op = NULL;
	struct exec_ctx *c = NULL;
	cJSON *argj;
	pid_t pid;

	luaL_checktype(L, 1, LUA_TTABLE);
	argc = lua_rawlen(L, 1);
	luaL_argcheck(L, argc >= 1 && argc <= EXEC_ARGS_MAX, 1, "argv: 1 to 256 strings");
	for (size_t i = 1; i <= argc; i++) {
		lua_rawgeti(L, 1, (lua_Integer)i);
		if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
			return luaL_error(L, "recovery.exec: argv[%d] must be a string", (int)i);
		if (sandbox_has_nul(L, -1))
			return luaL_error(L, "recovery.exec: argv[%d] must not contain a NUL byte", (int)i);
		lua_pop(L, 1);
	}
	lua_getfield(L, 1, "mutates");
	mutates = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
	lua_getfield(L, 1, "stdin");
	if (!lua_isnil(L, -1))
		stdin_data = luaL_checklstring(L, -1, &stdin_len);
	lua_getfield(L, 1, "env");
	if (!lua_isnil(L, -1)) {
		luaL_checktype(L, -1, LUA_TTABLE);
		lua_pushnil(L);
		size_t n = 0;
		while (lua_next(L, -2)) {
			/* Refuse what cannot be passed whole, rather than drop it. */
			if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
				return luaL_error(L, "recovery.exec: env must map names to strings");
			if (sandbox_has_nul(L, -2) || sandbox_has_nul(L, -1))
				return luaL_error(L, "recovery.exec: env names and values must not contain a NUL byte");
			if (!*lua_tostring(L, -2) || strchr(lua_tostring(L, -2), '='))
				return luaL_error(L, "recovery.exec: env name '%s' is empty or holds '='",
				                  lua_tostring(L, -2));
			if (++n >= EXEC_ARGS_MAX)
				return luaL_error(L, "recovery.exec: at most %d env entries", EXEC_ARGS_MAX - 1);
			lua_pop(L, 1);
		}
	}
	lua_getfield(L, 1, "timeout");
	j = yielding_job(L, "exec");
	remaining = runner_attempt_deadline(j) - rd_mono();
	timeout = luaL_optnumber(L, -1, remaining);
	if (timeout > remaining)
		timeout = remaining;
	lua_pop(L, 1);

	argv = calloc(argc + 1, sizeof(char *));
	if (!argv)
		goto nomem;
	argj = cJSON_CreateArray();
	for (size_t i = 0; i < argc; i++) {
		lua_rawgeti(L, 1, (lua_Integer)i + 1);
		argv[i] = strdup(lua_tostring(L, -1));
		lua_pop(L, 1);
		if (!argv[i]) {
			cJSON_Delete(argj);
			goto nomem;
		}
		cJSON_AddItemToArray(argj, cJSON_CreateString(argv[i]));
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		cJSON_Delete(argj);
		goto nomem;
	}
	c->timeout = timeout;
	c->detail = cJSON_CreateObject();
	cJSON_AddStringToObject(c->detail, "kind", "exec");
	cJSON_AddItemToObject(c->detail, "argv", argj);
	if (!mutates)
		cJSON_AddBoolToObject(c->detail, "mutates", 0);

	if (argv[0][0] != '/' || !allowed(argv[0])) {
		snprintf(err, sizeof(err), "program %s is not allowed (see --exec-allow)", argv[0]);
		cJSON_AddStringToObject(c->detail, "error", err);
		runner_record(j, "action", c->detail, 0);
		c->detail = NULL;
		goto fail;
	}
	if (j->dry_run && mutates) {
		runner_record(j, "action", c->detail, 1);
		c->detail = NULL;
		free_exec_ctx(c);
		free_strv(argv);
		lua_newtable(L);
		lua_pushinteger(L, 0);
		lua_setfield(L, -2, "code");
		lua_pushliteral(L, "");
		lua_setfield(L, -2, "stdout");
		lua_pushliteral(L, "");
		lua_setfield(L, -2, "stderr");
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, "planned");
		return 1;
	}

	/* A minimal environment: the daemon's own (tokens, paths) is not passed. */
	envp = calloc(EXEC_ARGS_MAX + 2, sizeof(char *));
	if (!envp)
		goto nomem;
	envp[envc++] = strdup("PATH=/usr/local/bin:/usr/bin:/bin");
	lua_getfield(L, 1, "env");
	if (lua_istable(L, -1)) {
		/* Checked above: string names without '=' or NUL, string values,
		 * fewer than EXEC_ARGS_MAX of them. */
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			const char *k = lua_tostring(L, -2), *v = lua_tostring(L, -1);
			char *e = malloc(strlen(k) + strlen(v) + 2);
			if (!e)
				goto nomem;
			sprintf(e, "%s=%s", k, v);
			envp[envc++] = e;
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);

	if (stdin_data) {
		in_fd = memfd_create("recoveryd-stdin", MFD_CLOEXEC);
		if (in_fd < 0 || write(in_fd, stdin_data, stdin_len) != (ssize_t)stdin_len ||
		    lseek(in_fd, 0, SEEK_SET) != 0) {
			snprintf(err, sizeof(err), "cannot prepare stdin: %s", strerror(errno));
			goto fail;
		}
	} else {
		in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	if (pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
		snprintf(err, sizeof(err), "pipe: %s", strerror(errno));
		goto fail;
	}
	if ((rc = spawn(argv, envp, in_fd, out[1], errp[1], &pid)) != 0) {
		snprintf(err, sizeof(err), "cannot start %s: %s", argv[0], strerror(rc));
		goto fail;
	}
	close(out[1]);
	close(errp[1]);
	close(in_fd);
	in_fd = -1;
	op = calloc(1, sizeof(*op));
	if (!op) {
		kill(-pid, SIGKILL);
		waitpid(pid, NULL, 0);
		close(out[0]);
		close(errp[0]);
		goto nomem;
	}
	op->kind = OP_EXEC;
	op->pid = pid;
	op->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	op->out_fd = out[0];
	op->err_fd = errp[0];
	fcntl(op->out_fd, F_SETFL, O_NONBLOCK);
	fcntl(op->err_fd, F_SETFL, O_NONBLOCK);
	op->out.max = op->err.max = EXEC_OUT_MAX;
	op->deadline = rd_mono() + timeout;
	op->ctx = c;
	op->free_ctx = free_exec_ctx;
	op->finish = finish_exec;
	c = NULL;
	free_strv(argv);
	free_strv(envp);
	if (runner_begin_op(j, op, err, sizeof(err)) < 0) {
		kill(-pid, SIGKILL);
		waitpid(pid, NULL, 0);
		close(op->out_fd);
		close(op->err_fd);
		if (op->pidfd >= 0)
			close(op->pidfd);
		free_exec_ctx(op->ctx);
		free(op);
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	return lua_yield(L, 0);
fail:
	for (int i = 0; i < 2; i++) {
		if (out[i] >= 0)
			close(out[i]);
		if (errp[i] >= 0)
			close(errp[i]);
	}
	if (in_fd >= 0)
		close(in_fd);
	free_strv(argv);
	free_strv(envp);
	if (c && c->detail) {
		cJSON_AddStringToObject(c->detail, "error", err);
		runner_record(j, "action", c->detail, 0);
		c->detail = NULL;
	}
	free_exec_ctx(c);
	lua_pushnil(L);
	lua_pushstring(L, err);
	return 2;
nomem:
	free_strv(argv);
	free_strv(envp);
	free_exec_ctx(c);
	if (in_fd >= 0)
		close(in_fd);
	return luaL_error(L, "out of memory");
}

/* ---------- module ---------- */

void lua_api_open(lua_State *L, struct job *job)
{
	static const luaL_Reg fns[] = {{"http", l_http},     {"exec", l_exec}, {"sleep", l_sleep},
	                               {"secret", l_secret}, {"now", l_now},   {"env", l_env},
	                               {"read_file", l_read_file},             {"fail", l_fail},
	                               {NULL, NULL}};
	static const luaL_Reg logf[] = {
		{"info", l_log_info}, {"warn", l_log_warn}, {"error", l_log_error}, {NULL, NULL}};

	lua_pushlightuserdata(L, job);
	lua_setfield(L, LUA_REGISTRYINDEX, JOB_KEY);
	/* Attached by C (lua_setmetatable, which skips the sandbox's __gc
	 * check), so Lua must never reach it: a __gc added there would run
	 * with hooks off. */
	if (luaL_newmetatable(L, RESP_MT)) {
		lua_newtable(L);
		lua_pushcfunction(L, resp_json);
		lua_setfield(L, -2, "json");
		lua_setfield(L, -2, "__index");
		sandbox_protect_metatable(L, -1);
	}
	lua_pop(L, 1);
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
	lua_pushboolean(L, job ? job->dry_run : 0);
	lua_setfield(L, -2, "dry_run");
	lua_pushvalue(L, -1);
	lua_setglobal(L, "recovery");
	sandbox_preload(L, "recovery");
	lua_register(L, "print", l_print);
}

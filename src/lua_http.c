/* recovery.http{method, url, headers, body, json, timeout, mutates,
 * ca_file, ca} (DESIGN.md §4) in three steps: parse the arguments into a
 * struct http_req (every check that can raise, before anything is
 * allocated), build the transfer (or, in dry-run, record a write as planned
 * and answer it with a synthetic 200), submit it to the job's runner. The
 * coroutine then waits until the runner calls finish_http, which records
 * the action and pushes the response (or nil, err). */
#include <ctype.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lua_api_impl.h"
#include "recoveryd/common.h"
#include "recoveryd/job.h"
#include "recoveryd/lua_json.h"
#include "recoveryd/sandbox.h"

#define HTTP_BODY_MAX (8 * 1024 * 1024)
#define HTTP_HEADERS_MAX (64 * 1024)

static const char RESP_MT[] = "recoveryd.response";

/* ---------- the response ---------- */

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
	lua_api_checktype(L, "response:json", 1, LUA_TTABLE);
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
		lua_api_record(op->job, "action", c->detail, 0);
		c->detail = NULL;
		lua_pushnil(co);
		lua_pushstring(co, msg);
		return 2;
	}
	curl_easy_getinfo(op->easy, CURLINFO_RESPONSE_CODE, &status);
	cJSON_AddNumberToObject(c->detail, "status", (double)status);
	lua_api_record(op->job, "action", c->detail, 0);
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


/* ---------- parse ---------- */

/* One call's arguments, checked. The strings are borrowed from values the
 * call keeps on its Lua stack; json_body is owned until http_build. */
struct http_req {
	const char *url;
	char method[16];        /* upper case, letters only */
	const char *body;       /* body, or the JSON text of json; NULL = none */
	size_t body_len;
	char *json_body;        /* json encoded, or NULL */
	double timeout;         /* seconds; the attempt's deadline caps it later */
	int mutates;            /* recorded as planned in dry-run */
	const char *ca_file;    /* inside --read-allow */
	const char *ca_pem;
	size_t ca_len;
	int headers;            /* stack index of the headers table, or 0 */
};

/* Check the arguments of recovery.http into q and return the job; misuse
 * raises a permanent error (nothing is allocated before the last check that
 * can raise). */
static struct job *http_parse(lua_State *L, struct http_req *q)
{
	static const char *const keys[] = {"url",     "method", "headers", "body", "json",
	                                   "timeout", "mutates", "ca_file", "ca",  NULL};
	const char *method, *jerr = NULL;
	struct job *j;
	size_t ml;

	memset(q, 0, sizeof(*q));
	lua_api_checktype(L, "http", 1, LUA_TTABLE);
	lua_api_check_keys(L, 1, "http", keys, 0);
	lua_getfield(L, 1, "url");
	q->url = lua_api_tocstr(L, -1, "recovery.http: url");
	if (strncmp(q->url, "http://", 7) != 0 && strncmp(q->url, "https://", 8) != 0)
		lua_api_fatal(L, "recovery.http: url must start with http:// or https://");
	lua_getfield(L, 1, "method");
	method = lua_isnil(L, -1) ? "GET" : lua_api_tocstr(L, -1, "recovery.http: method");
	ml = strlen(method);
	if (ml == 0 || ml >= sizeof(q->method))
		lua_api_fatal(L, "recovery.http: method: invalid");
	for (size_t i = 0; i <= ml; i++)
		q->method[i] = (char)toupper((unsigned char)method[i]);
	for (size_t i = 0; i < ml; i++)
		if (q->method[i] < 'A' || q->method[i] > 'Z')
			lua_api_fatal(L, "recovery.http: method: letters only");
	lua_getfield(L, 1, "body");
	if (!lua_isnil(L, -1))
		q->body = lua_api_tolstring(L, -1, "recovery.http: body", &q->body_len);
	lua_getfield(L, 1, "timeout");
	/* The default is read first: lua_api_optnumber raises on a bad value. */
	q->timeout = lua_api_http_timeout();
	q->timeout = lua_api_optnumber(L, -1, "recovery.http: timeout", q->timeout);
	/* mutates=false: a POST that only reads (a compatibility check, a
	 * query) runs in dry-run like a GET. */
	lua_getfield(L, 1, "mutates");
	q->mutates = lua_isnil(L, -1) ? strcmp(q->method, "GET") != 0 && strcmp(q->method, "HEAD") != 0
	                              : lua_toboolean(L, -1);
	lua_pop(L, 1);
	/* ca_file and ca stay on the stack: a number converted to a string
	 * there lives only there. */
	lua_getfield(L, 1, "ca_file");
	q->ca_file = lua_isnil(L, -1) ? NULL : lua_api_tocstr(L, -1, "recovery.http: ca_file");
	if (q->ca_file && !lua_api_read_allowed(q->ca_file))
		lua_api_fatal(L, "recovery.http: ca_file %s is outside the allowed directories (see --read-allow)",
		              q->ca_file);
	lua_getfield(L, 1, "ca");
	q->ca_pem = lua_isnil(L, -1) ? NULL : lua_api_tolstring(L, -1, "recovery.http: ca", &q->ca_len);
	lua_getfield(L, 1, "headers");
	if (!lua_isnil(L, -1)) {
		lua_api_checkfield(L, -1, "recovery.http: headers", LUA_TTABLE);
		q->headers = lua_gettop(L);
		lua_pushnil(L);
		while (lua_next(L, q->headers)) {
			if (sandbox_has_nul(L, -2) || sandbox_has_nul(L, -1))
				lua_api_fatal(L, "recovery.http: header names and values must not contain a NUL byte");
			lua_pop(L, 1);
		}
	}

	j = lua_api_yielding_job(L, "http");
	/* Allocate only after every check that can raise. */
	lua_getfield(L, 1, "json");
	if (!lua_isnil(L, -1)) {
		cJSON *v = lua_json_from(L, -1, &jerr);
		if (!v)
			lua_api_fatal(L, "recovery.http: json: %s", jerr);
		q->json_body = cJSON_PrintUnformatted(v);
		cJSON_Delete(v);
		if (!q->json_body)
			luaL_error(L, "out of memory");
		q->body = q->json_body;
		q->body_len = strlen(q->json_body);
	}
	lua_pop(L, 1);
	return j;
}

/* ---------- build ---------- */

enum http_built {
	HTTP_BUILT,             /* *opp is the transfer, ready to submit */
	HTTP_PLANNED,           /* dry-run: recorded as planned, no transfer */
	HTTP_BAD_HEADER,        /* a header holds CR or LF (or ':' in its name) */
	HTTP_NOMEM,
};

/* Make q's transfer: the action's record detail, the easy handle with the
 * body and headers, the timeout within the attempt's deadline. Dry-run
 * runs reads; a write is only recorded as planned. Frees q->json_body in
 * every case; on HTTP_BUILT *opp is the caller's. */
static enum http_built http_build(lua_State *L, struct job *j, struct http_req *q, struct op **opp)
{
	struct http_ctx *c;
	struct op *op = NULL;
	double remaining, timeout = q->timeout;
	enum http_built rc = HTTP_NOMEM;
	int has_ct = 0;

	*opp = NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		goto out;
	c->detail = cJSON_CreateObject();
	cJSON_AddStringToObject(c->detail, "kind", "http");
	cJSON_AddStringToObject(c->detail, "method", q->method);
	cJSON_AddStringToObject(c->detail, "url", q->url);

	/* Dry-run: reads run, writes are recorded and answered with a 200. */
	if (!q->mutates)
		cJSON_AddBoolToObject(c->detail, "mutates", 0);
	if (job_plans_only(j) && q->mutates) {
		cJSON_AddNumberToObject(c->detail, "body_bytes", (double)q->body_len);
		lua_api_record(j, "action", c->detail, 1);
		c->detail = NULL;
		rc = HTTP_PLANNED;
		goto out;
	}

	op = calloc(1, sizeof(*op));
	if (!op)
		goto out;
	op->kind = OP_HTTP;
	op->pidfd = op->out_fd = op->err_fd = -1;
	op->ctx = c;
	op->free_ctx = free_http_ctx;
	c = NULL;
	op->finish = finish_http;
	op->resp.max = HTTP_BODY_MAX;
	op->resp_headers.max = HTTP_HEADERS_MAX;
	op->easy = curl_easy_init();
	if (!op->easy)
		goto out;
	remaining = lua_api_deadline(j) - rd_mono();
	if (timeout > remaining)
		timeout = remaining;
	if (timeout < 0.001)
		timeout = 0.001;
	curl_easy_setopt(op->easy, CURLOPT_URL, q->url);
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
	if (q->ca_file)
		curl_easy_setopt(op->easy, CURLOPT_CAINFO, q->ca_file);
	if (q->ca_pem) {
		struct curl_blob blob = {(void *)q->ca_pem, q->ca_len, CURL_BLOB_COPY};
		curl_easy_setopt(op->easy, CURLOPT_CAINFO_BLOB, &blob);
	}
	if (strcmp(q->method, "HEAD") == 0)
		curl_easy_setopt(op->easy, CURLOPT_NOBODY, 1L);
	else if (strcmp(q->method, "GET") != 0)
		curl_easy_setopt(op->easy, CURLOPT_CUSTOMREQUEST, q->method);
	if (q->body) {
		op->body = malloc(q->body_len + 1);
		if (!op->body)
			goto out;
		memcpy(op->body, q->body, q->body_len);
		op->body[q->body_len] = '\0';
		curl_easy_setopt(op->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
		curl_easy_setopt(op->easy, CURLOPT_POSTFIELDS, op->body);
	}
	if (q->headers) {
		lua_pushnil(L);
		while (lua_next(L, q->headers)) {
			if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
				const char *k = lua_tostring(L, -2), *v = lua_tostring(L, -1);
				if (strpbrk(k, "\r\n:") || strpbrk(v, "\r\n")) {
					lua_pop(L, 2);
					rc = HTTP_BAD_HEADER;
					goto out;
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
	if (q->json_body && !has_ct)
		op->headers = curl_slist_append(op->headers, "Content-Type: application/json");
	/* No "Expect: 100-continue" round trip for small bodies. */
	op->headers = curl_slist_append(op->headers, "Expect:");
	curl_easy_setopt(op->easy, CURLOPT_HTTPHEADER, op->headers);
	*opp = op;
	op = NULL;
	rc = HTTP_BUILT;
out:
	free(q->json_body);
	q->json_body = NULL;
	free_http_ctx(c);
	http_op_discard(op);
	return rc;
}

/* ---------- submit ---------- */

int lua_http_request(lua_State *L)
{
	struct http_req q;
	struct op *op;
	struct job *j = http_parse(L, &q);

	switch (http_build(L, j, &q, &op)) {
	case HTTP_BUILT:
		return lua_api_submit(L, j, op, http_op_discard);
	case HTTP_PLANNED:
		push_response(L, 200, "", 0, NULL, 1);
		return 1;
	case HTTP_BAD_HEADER:
		return lua_api_fatal(L, "recovery.http: header names and values cannot contain CR, LF (or ':' in names)");
	case HTTP_NOMEM:
		break;
	}
	return luaL_error(L, "out of memory");
}

void lua_http_open(lua_State *L)
{
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
}

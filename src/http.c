/* The HTTP API of DESIGN.md §3 on libmicrohttpd: routing, bearer auth, body
 * limits, JSON errors and per-request metrics. Every connection has its own
 * thread, so handlers may block in the engine (group commit, ?wait=). Checks
 * that need only the headers (route, auth, method, size, type, drain) answer
 * on the first callback so a rejected body is never read. */
#include "recoveryd/http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "recoveryd/alert.h"
#include "recoveryd/engine.h"
#include "recoveryd/log.h"
#include "recoveryd/metrics.h"

#define BODY_MAX_DEFAULT ((size_t)1 << 20)
#define CONN_LIMIT_DEFAULT 256
#define CONN_TIMEOUT_DEFAULT 30        /* 0 would mean "never" to MHD */
#define WAIT_MAX 300                   /* seconds /trigger?wait= may block */
#define WAIT_SLICE 1.0                 /* re-check for shutdown this often */
#define DRAIN_RETRY_AFTER "5"
#define UNAVAILABLE_RETRY_AFTER "1"
#define ID_MAX 64
#define PLAYBOOK_MAX 128
#define LIMIT_DEFAULT 50
#define LIMIT_MAX 1000
#define DISCARD_MAX ((size_t)4 << 20) /* excess of an oversized chunked body read before hanging up */
#define MSG_MAX 512
#define LOG_URL_MAX 200
#define LISTEN_MAX 128

#define CT_JSON "application/json"
#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"

/* Who a request is, from its bearer token. Named principals with roles
 * (issue 10) extend this enum and the table in authorize(). */
enum principal { P_ANONYMOUS, P_WEBHOOK, P_OPERATOR, P__COUNT };

/* What a route asks for. */
enum auth_need { AUTH_OPEN, AUTH_WEBHOOK, AUTH_OPERATOR };

enum auth_verdict { AUTH_PASS, AUTH_UNAUTHORIZED, AUTH_FORBIDDEN };

enum route {
	R_OTHER,
	R_WEBHOOK,
	R_TRIGGER,
	R_JOBS,
	R_JOB,
	R_CANCEL,
	R_PLAYBOOKS,
	R_METRICS,
	R_HEALTHZ,
	R_READYZ,
};

static const struct route_info {
	const char *tmpl;  /* metrics "path" label: a fixed set keeps cardinality bounded */
	const char *allow; /* for 405 */
	enum auth_need auth;
	int post;          /* 1: POST only; 0: GET or HEAD */
	int body;          /* 1: the handler reads the request body */
} routes[] = {
	[R_OTHER] = { "other", NULL, AUTH_OPEN, 0, 0 },
	[R_WEBHOOK] = { "/webhook", "POST", AUTH_WEBHOOK, 1, 1 },
	[R_TRIGGER] = { "/trigger", "POST", AUTH_OPERATOR, 1, 1 },
	[R_JOBS] = { "/api/v1/jobs", "GET, HEAD", AUTH_OPERATOR, 0, 0 },
	[R_JOB] = { "/api/v1/jobs/{id}", "GET, HEAD", AUTH_OPERATOR, 0, 0 },
	[R_CANCEL] = { "/api/v1/jobs/{id}/cancel", "POST", AUTH_OPERATOR, 1, 0 },
	[R_PLAYBOOKS] = { "/api/v1/playbooks", "GET, HEAD", AUTH_OPERATOR, 0, 0 },
	[R_METRICS] = { "/metrics", "GET, HEAD", AUTH_OPEN, 0, 0 },
	[R_HEALTHZ] = { "/healthz", "GET, HEAD", AUTH_OPEN, 0, 0 },
	[R_READYZ] = { "/readyz", "GET, HEAD", AUTH_OPEN, 0, 0 },
};

static const char *const job_states[] = {
	"queued", "running", "retry_wait", "succeeded", "failed", "cancelled", "budget_exhausted",
};

struct http {
	struct MHD_Daemon *d;
	struct engine *e;
	size_t body_max;
	int insecure;           /* --insecure-no-auth */
	atomic_int stopping;    /* http_stop began: blocked waits give up */
	pthread_mutex_t lock;   /* guards the tokens: SIGHUP swaps them */
	char *webhook_token;    /* NULL = none */
	char *operator_token;
};

/* Per-request state, in *req_cls from the first callback to completion. */
struct request {
	enum route route;
	enum principal who;          /* from the bearer token */
	int bad_arg;                 /* id / playbook in the path is malformed */
	char arg[PLAYBOOK_MAX + 1];  /* job id or playbook name */
	int dry_run;
	int wait;                    /* seconds, /trigger only */
	char method[16];             /* for logs */
	char url[LOG_URL_MAX + 1];   /* for logs, truncated */
	char *body;                  /* only for routes[].body */
	size_t len, cap;             /* bytes received (counted even when not kept) */
	size_t discarded;            /* bytes dropped after too_large */
	int too_large;
	int answered;                /* a response is queued */
};

/* ---- responses ---- */

/* Queue buf (malloc'd, consumed) as the answer and count the request. */
static enum MHD_Result reply(struct MHD_Connection *c, struct request *rq, unsigned status,
                             const char *ctype, char *buf, size_t len, const char *hname,
                             const char *hval)
{
	struct MHD_Response *r;
	enum MHD_Result ret = MHD_NO;
	char code[8];

	r = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(buf);
		goto out;
	}
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) != MHD_YES ||
	    (hname && MHD_add_response_header(r, hname, hval) != MHD_YES)) {
		MHD_destroy_response(r);
		goto out;
	}
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	if (ret != MHD_YES)
		goto out;
	rq->answered = 1;
	snprintf(code, sizeof(code), "%u", status);
	metrics_add(M_WEBHOOK_REQUESTS, routes[rq->route].tmpl, code, 1);
out:
	return ret;
}

/* Answer with body (consumed), one line of compact JSON. */
static enum MHD_Result reply_json(struct MHD_Connection *c, struct request *rq, unsigned status,
                                  cJSON *body, const char *hname, const char *hval)
{
	char *txt = body ? cJSON_PrintUnformatted(body) : NULL;
	char *buf = NULL;
	size_t n;

	cJSON_Delete(body);
	if (!txt)
		return MHD_NO; /* out of memory: MHD closes the connection */
	/* Copy into our own malloc'd buffer: MHD frees it with free(), while
	 * cJSON may have been given other allocation hooks. */
	n = strlen(txt);
	buf = malloc(n + 2);
	if (buf) {
		memcpy(buf, txt, n);
		buf[n] = '\n';
		buf[n + 1] = '\0';
	}
	cJSON_free(txt);
	if (!buf)
		return MHD_NO;
	return reply(c, rq, status, CT_JSON, buf, n + 1, hname, hval);
}

static enum MHD_Result reply_error(struct MHD_Connection *c, struct request *rq, unsigned status,
                                   const char *code, const char *msg, const char *hname,
                                   const char *hval)
{
	cJSON *o = cJSON_CreateObject();

	if (!o || !cJSON_AddStringToObject(o, "error", code) ||
	    !cJSON_AddStringToObject(o, "message", msg)) {
		cJSON_Delete(o);
		return MHD_NO;
	}
	return reply_json(c, rq, status, o, hname, hval);
}

static void client_ip(struct MHD_Connection *c, char *buf, size_t len)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

	snprintf(buf, len, "-");
	if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ci->client_addr;
		inet_ntop(AF_INET, &sin->sin_addr, buf, (socklen_t)len);
	}
}

/* Answer an error the HTTP layer decided on, log it and, when reason is
 * set, count it in recoveryd_requests_rejected_total{reason}. Never logs
 * headers: the Authorization value must not reach the logs. */
static enum MHD_Result reject(struct MHD_Connection *c, struct request *rq, unsigned status,
                              const char *code, const char *reason, const char *hname,
                              const char *hval, const char *fmt, ...)
	__attribute__((format(printf, 8, 9)));

static enum MHD_Result reject(struct MHD_Connection *c, struct request *rq, unsigned status,
                              const char *code, const char *reason, const char *hname,
                              const char *hval, const char *fmt, ...)
{
	char msg[MSG_MAX], st[8], ip[INET_ADDRSTRLEN + 1];
	va_list ap;
	/* 404/405 are what scanners produce: keep them out of the warn stream. */
	enum log_level lvl = (status == MHD_HTTP_NOT_FOUND || status == MHD_HTTP_METHOD_NOT_ALLOWED)
	                             ? LOG_INFO
	                             : LOG_WARN;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(st, sizeof(st), "%u", status);
	client_ip(c, ip, sizeof(ip));
	if (reason)
		metrics_add(M_REJECTED, reason, NULL, 1);
	log_kv(lvl, NULL, "request rejected", "method", rq->method, "url", rq->url, "route",
	       routes[rq->route].tmpl, "status", st, "error", code, "message", msg, "remote", ip,
	       NULL);
	return reply_error(c, rq, status, code, msg, hname, hval);
}

/* ---- request inspection ---- */

/* 1 when s is 1..max characters of [A-Za-z0-9_-] (plus '.' when dot). */
static int valid_name(const char *s, size_t max, int dot)
{
	size_t n = 0;

	for (; s[n]; n++) {
		unsigned char ch = (unsigned char)s[n];
		if (n >= max || !(isalnum(ch) || ch == '_' || ch == '-' || (dot && ch == '.')))
			return 0;
	}
	return n > 0;
}

/* Map the (already unescaped) path to a route; fills rq->arg. */
static void match_route(const char *url, struct request *rq)
{
	static const char jobs[] = "/api/v1/jobs/", trig[] = "/trigger/";
	static const struct {
		const char *path;
		enum route r;
	} fixed[] = {
		{ "/webhook", R_WEBHOOK },     { "/api/v1/jobs", R_JOBS }, { "/api/v1/playbooks", R_PLAYBOOKS },
		{ "/metrics", R_METRICS },     { "/healthz", R_HEALTHZ },  { "/readyz", R_READYZ },
	};
	const char *rest, *slash;
	size_t n;

	rq->route = R_OTHER;
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		if (strcmp(url, fixed[i].path) == 0) {
			rq->route = fixed[i].r;
			return;
		}
	if (strncmp(url, trig, sizeof(trig) - 1) == 0) {
		rest = url + sizeof(trig) - 1;
		if (!*rest || strchr(rest, '/'))
			return;
		rq->route = R_TRIGGER;
		rq->bad_arg = !valid_name(rest, PLAYBOOK_MAX, 1);
		if (!rq->bad_arg)
			snprintf(rq->arg, sizeof(rq->arg), "%s", rest);
		return;
	}
	if (strncmp(url, jobs, sizeof(jobs) - 1) != 0)
		return;
	rest = url + sizeof(jobs) - 1;
	slash = strchr(rest, '/');
	if (!slash) {
		rq->route = R_JOB;
		n = strlen(rest);
	} else if (strcmp(slash, "/cancel") == 0) {
		rq->route = R_CANCEL;
		n = (size_t)(slash - rest);
	} else {
		return;
	}
	/* Ids are [A-Za-z0-9_-]{1,64}; anything else cannot name a job. */
	if (n == 0 || n > ID_MAX) {
		rq->bad_arg = 1;
		return;
	}
	memcpy(rq->arg, rest, n);
	rq->arg[n] = '\0';
	rq->bad_arg = !valid_name(rq->arg, ID_MAX, 0);
}

/* Token of an "Authorization: Bearer <token>" value, or NULL. */
static const char *bearer_token(const char *hdr, size_t *len)
{
	size_t n;

	if (!hdr || strncasecmp(hdr, "Bearer", 6) != 0 || (hdr[6] != ' ' && hdr[6] != '\t'))
		return NULL;
	hdr += 6;
	while (*hdr == ' ' || *hdr == '\t')
		hdr++;
	n = strlen(hdr);
	while (n > 0 && (hdr[n - 1] == ' ' || hdr[n - 1] == '\t'))
		n--;
	if (n == 0)
		return NULL;
	*len = n;
	return hdr;
}

/* The principal of the request's bearer token. Both tokens are always
 * compared (constant time, no early exit). With no token configured at all
 * (--insecure-no-auth) every caller is the operator. */
static enum principal authenticate(struct http *h, struct MHD_Connection *c)
{
	const char *tok;
	size_t n = 0;
	int op = 0, wh = 0;
	enum principal who = P_ANONYMOUS;

	tok = bearer_token(MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	                                               MHD_HTTP_HEADER_AUTHORIZATION),
	                   &n);
	pthread_mutex_lock(&h->lock);
	if (!h->webhook_token && !h->operator_token) {
		who = h->insecure ? P_OPERATOR : P_ANONYMOUS;
	} else if (tok) {
		if (h->operator_token)
			op = rd_ct_equal(tok, n, h->operator_token, strlen(h->operator_token));
		if (h->webhook_token)
			wh = rd_ct_equal(tok, n, h->webhook_token, strlen(h->webhook_token));
		who = op ? P_OPERATOR : wh ? P_WEBHOOK : P_ANONYMOUS;
	}
	pthread_mutex_unlock(&h->lock);
	return who;
}

/* May who use a route that needs need? Anonymous callers get 401 (ask for
 * a token); a known principal without the right gets 403. */
static enum auth_verdict authorize(enum auth_need need, enum principal who)
{
	static const unsigned char admits[][P__COUNT] = {
		[AUTH_OPEN] = { [P_ANONYMOUS] = 1, [P_WEBHOOK] = 1, [P_OPERATOR] = 1 },
		[AUTH_WEBHOOK] = { [P_WEBHOOK] = 1, [P_OPERATOR] = 1 },
		[AUTH_OPERATOR] = { [P_OPERATOR] = 1 },
	};

	if (admits[need][who])
		return AUTH_PASS;
	return who == P_ANONYMOUS ? AUTH_UNAUTHORIZED : AUTH_FORBIDDEN;
}

/* application/json, optionally followed by parameters, any case. */
static int is_json_type(const char *ct)
{
	static const char want[] = "application/json";

	if (!ct)
		return 0;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	if (strncasecmp(ct, want, sizeof(want) - 1) != 0)
		return 0;
	ct += sizeof(want) - 1;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	return *ct == '\0' || *ct == ';';
}

/* Strict decimal integer in [lo, hi]: no sign, no blanks, no junk. */
static int parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	if (!s || !isdigit((unsigned char)*s))
		return 0;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return 0;
	*out = v;
	return 1;
}

/* Query argument: 1 when present (*v may be NULL for "?key"), 0 otherwise. */
static int query_arg(struct MHD_Connection *c, const char *key, const char **v)
{
	size_t vlen = 0;

	*v = NULL;
	return MHD_lookup_connection_value_n(c, MHD_GET_ARGUMENT_KIND, key, strlen(key), v,
	                                     &vlen) == MHD_YES;
}

/* dry_run and wait of /trigger; 0 with msg filled on a bad value. */
static int trigger_query(struct MHD_Connection *c, struct request *rq, char *msg, size_t len)
{
	const char *v;
	long w;

	if (query_arg(c, "dry_run", &v)) {
		/* A bare "?dry_run" asks for a dry run: err on the safe side. */
		if (!v || !*v || strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0) {
			rq->dry_run = 1;
		} else if (strcmp(v, "0") == 0 || strcasecmp(v, "false") == 0) {
			rq->dry_run = 0;
		} else {
			snprintf(msg, len, "dry_run must be 1, true, 0 or false");
			return 0;
		}
	}
	if (query_arg(c, "wait", &v)) {
		if (!parse_long(v, 0, WAIT_MAX, &w)) {
			snprintf(msg, len, "wait must be a whole number of seconds from 0 to %d",
			         WAIT_MAX);
			return 0;
		}
		rq->wait = (int)w;
	}
	return 1;
}

/* Filters of GET /api/v1/jobs; 0 with msg filled on a bad value. */
static int jobs_query(struct MHD_Connection *c, const char **state, const char **playbook,
                      int *limit, char *msg, size_t len)
{
	const char *v;
	long l;
	int known = 0;

	*state = NULL;
	*playbook = NULL;
	*limit = LIMIT_DEFAULT;
	if (query_arg(c, "state", &v) && v && *v) {
		for (size_t i = 0; i < sizeof(job_states) / sizeof(job_states[0]); i++)
			known |= strcmp(v, job_states[i]) == 0;
		if (!known) {
			snprintf(msg, len,
			         "state must be one of queued, running, retry_wait, succeeded, "
			         "failed, cancelled, budget_exhausted");
			return 0;
		}
		*state = v;
	}
	if (query_arg(c, "playbook", &v) && v && *v) {
		if (strlen(v) > PLAYBOOK_MAX) {
			snprintf(msg, len, "playbook must be at most %d characters", PLAYBOOK_MAX);
			return 0;
		}
		*playbook = v;
	}
	if (query_arg(c, "limit", &v)) {
		if (!parse_long(v, 1, LIMIT_MAX, &l)) {
			snprintf(msg, len, "limit must be a whole number from 1 to %d", LIMIT_MAX);
			return 0;
		}
		*limit = (int)l;
	}
	return 1;
}

/* ---- handlers (final callback, body complete) ---- */

/* Id of the job a /trigger?wait= should wait for: the first job when it was
 * queued or coalesced into a running one. */
static const char *waitable_job(const cJSON *body)
{
	const cJSON *j = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(body, "jobs"), 0);
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
	const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "state");

	if (!cJSON_IsString(id) || !cJSON_IsString(st))
		return NULL;
	if (strcmp(st->valuestring, "queued") != 0 && strcmp(st->valuestring, "coalesced") != 0)
		return NULL;
	return id->valuestring;
}

/* Wait in slices so http_stop is never held up by a 300 s wait. */
static int wait_job(struct http *h, const char *id, int seconds)
{
	double deadline = rd_mono() + seconds, left;
	int r = 0;

	while (!atomic_load(&h->stopping) && (left = deadline - rd_mono()) > 0) {
		r = engine_wait(h->e, id, left < WAIT_SLICE ? left : WAIT_SLICE);
		if (r != 0)
			break;
	}
	return r;
}

static enum MHD_Result handle_submit(struct http *h, struct MHD_Connection *c, struct request *rq)
{
	struct payload p;
	char err[MSG_MAX], ra[16];
	cJSON *body = NULL, *rec = NULL;
	int status = 0, retry_after = 0, parsed = 0;
	enum alert_result ar;
	enum MHD_Result ret;
	const char *id;

	memset(&p, 0, sizeof(p));
	if (rq->len == 0) {
		ret = reject(c, rq, MHD_HTTP_BAD_REQUEST, "invalid_json", "invalid_json", NULL, NULL,
		             "empty body: expected a JSON object");
		goto out;
	}
	err[0] = '\0';
	ar = alert_parse(rq->body, rq->len, rq->route == R_TRIGGER ? ALERT_ALLOW_MANUAL : 0, &p, err,
	                 sizeof(err));
	if (ar == ALERT_INVALID_JSON || ar == ALERT_INVALID_PAYLOAD) {
		const char *code = ar == ALERT_INVALID_JSON ? "invalid_json" : "invalid_payload";
		ret = reject(c, rq, MHD_HTTP_BAD_REQUEST, code, code, NULL, NULL, "%s",
		             err[0] ? err : "malformed request body");
		goto out;
	}
	if (ar != ALERT_OK) {
		ret = reply_error(c, rq, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable", "out of memory",
		                  MHD_HTTP_HEADER_RETRY_AFTER, UNAVAILABLE_RETRY_AFTER);
		goto out;
	}
	parsed = 1;
	engine_submit(h->e, &p, rq->route == R_TRIGGER ? rq->arg : NULL, rq->dry_run, &status, &body,
	              &retry_after);
	if (!body || status < 100 || status > 599) {
		cJSON_Delete(body);
		ret = reply_error(c, rq, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
		                  "the engine gave no answer", NULL, NULL);
		goto out;
	}
	if (status == MHD_HTTP_SERVICE_UNAVAILABLE) {
		snprintf(ra, sizeof(ra), "%d", retry_after > 0 ? retry_after : 1);
		ret = reply_json(c, rq, (unsigned)status, body, MHD_HTTP_HEADER_RETRY_AFTER, ra);
		goto out;
	}
	/* Only the operator may read job records: a webhook-token caller gets
	 * the ids and states of the submit answer, never a record. */
	if (status == MHD_HTTP_ACCEPTED && rq->wait > 0 && rq->who == P_OPERATOR &&
	    (id = waitable_job(body)) &&
	    wait_job(h, id, rq->wait) == 1 && engine_job_json(h->e, id, &rec) == RD_OK && rec) {
		cJSON_Delete(body);
		ret = reply_json(c, rq, MHD_HTTP_OK, rec, NULL, NULL);
		goto out;
	}
	ret = reply_json(c, rq, (unsigned)status, body, NULL, NULL);
out:
	if (parsed)
		payload_free(&p);
	return ret;
}

static enum MHD_Result handle_jobs(struct http *h, struct MHD_Connection *c, struct request *rq)
{
	const char *state, *playbook;
	char msg[MSG_MAX];
	cJSON *out = NULL;
	int limit;

	if (!jobs_query(c, &state, &playbook, &limit, msg, sizeof(msg)))
		return reject(c, rq, MHD_HTTP_BAD_REQUEST, "invalid_request", NULL, NULL, NULL, "%s",
		              msg);
	if (engine_jobs_json(h->e, state, playbook, limit, &out) != RD_OK || !out) {
		cJSON_Delete(out);
		return reply_error(c, rq, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
		                   "the job journal cannot be read", MHD_HTTP_HEADER_RETRY_AFTER,
		                   UNAVAILABLE_RETRY_AFTER);
	}
	return reply_json(c, rq, MHD_HTTP_OK, out, NULL, NULL);
}

static enum MHD_Result handle_job(struct http *h, struct MHD_Connection *c, struct request *rq)
{
	cJSON *out = NULL;

	if (engine_job_json(h->e, rq->arg, &out) != RD_OK) {
		cJSON_Delete(out);
		return reply_error(c, rq, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
		                   "the job journal cannot be read", MHD_HTTP_HEADER_RETRY_AFTER,
		                   UNAVAILABLE_RETRY_AFTER);
	}
	if (!out)
		return reject(c, rq, MHD_HTTP_NOT_FOUND, "not_found", NULL, NULL, NULL,
		              "no job with id %s", rq->arg);
	return reply_json(c, rq, MHD_HTTP_OK, out, NULL, NULL);
}

static enum MHD_Result handle_cancel(struct http *h, struct MHD_Connection *c, struct request *rq)
{
	cJSON *body = NULL;
	int status = 0;

	engine_cancel(h->e, rq->arg, &status, &body);
	if (!body || status < 100 || status > 599) {
		cJSON_Delete(body);
		return reply_error(c, rq, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
		                   "the engine gave no answer", NULL, NULL);
	}
	if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
		return reply_json(c, rq, (unsigned)status, body, MHD_HTTP_HEADER_RETRY_AFTER,
		                  UNAVAILABLE_RETRY_AFTER);
	return reply_json(c, rq, (unsigned)status, body, NULL, NULL);
}

static enum MHD_Result handle_playbooks(struct http *h, struct MHD_Connection *c,
                                        struct request *rq)
{
	cJSON *out = engine_playbooks_json(h->e);

	if (!out)
		return reply_error(c, rq, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
		                   "playbooks are not loaded", MHD_HTTP_HEADER_RETRY_AFTER,
		                   UNAVAILABLE_RETRY_AFTER);
	return reply_json(c, rq, MHD_HTTP_OK, out, NULL, NULL);
}

static enum MHD_Result handle_metrics(struct MHD_Connection *c, struct request *rq)
{
	size_t len = 0;
	char *txt = metrics_render(&len);

	if (!txt)
		return reply_error(c, rq, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
		                   "cannot render metrics", NULL, NULL);
	return reply(c, rq, MHD_HTTP_OK, CT_METRICS, txt, len, NULL, NULL);
}

static enum MHD_Result handle_status(struct MHD_Connection *c, struct request *rq,
                                     const char *status)
{
	cJSON *o = cJSON_CreateObject();

	if (!o || !cJSON_AddStringToObject(o, "status", status)) {
		cJSON_Delete(o);
		return MHD_NO;
	}
	return reply_json(c, rq, MHD_HTTP_OK, o, NULL, NULL);
}

static enum MHD_Result handle_readyz(struct http *h, struct MHD_Connection *c, struct request *rq)
{
	char why[MSG_MAX];

	why[0] = '\0';
	if (engine_ready(h->e, why, sizeof(why)))
		return handle_status(c, rq, "ready");
	why[sizeof(why) - 1] = '\0';
	return reply_error(c, rq, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
	                   why[0] ? why : "not ready", MHD_HTTP_HEADER_RETRY_AFTER,
	                   UNAVAILABLE_RETRY_AFTER);
}

static enum MHD_Result dispatch(struct http *h, struct MHD_Connection *c, struct request *rq)
{
	if (rq->too_large)
		return reject(c, rq, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
		              "payload_too_large", NULL, NULL, "request body exceeds %zu bytes",
		              h->body_max);
	switch (rq->route) {
	case R_WEBHOOK:
	case R_TRIGGER:
		return handle_submit(h, c, rq);
	case R_JOBS:
		return handle_jobs(h, c, rq);
	case R_JOB:
		return handle_job(h, c, rq);
	case R_CANCEL:
		return handle_cancel(h, c, rq);
	case R_PLAYBOOKS:
		return handle_playbooks(h, c, rq);
	case R_METRICS:
		return handle_metrics(c, rq);
	case R_HEALTHZ:
		return handle_status(c, rq, "ok");
	case R_READYZ:
		return handle_readyz(h, c, rq);
	case R_OTHER:
		break;
	}
	return MHD_NO;
}

/* ---- libmicrohttpd callbacks ---- */

/* First callback: only headers are known. Returns MHD_YES either with a
 * response queued (rejected) or to go on reading the body. */
static enum MHD_Result on_headers(struct http *h, struct MHD_Connection *c, struct request *rq,
                                  const char *url, const char *method)
{
	const struct route_info *ri;
	const char *v;
	char msg[MSG_MAX];
	unsigned long long clen = 0;
	int is_get, is_post;

	snprintf(rq->method, sizeof(rq->method), "%s", method);
	snprintf(rq->url, sizeof(rq->url), "%s", url);
	match_route(url, rq);
	ri = &routes[rq->route];
	if (rq->route == R_OTHER)
		return reject(c, rq, MHD_HTTP_NOT_FOUND, "not_found", NULL, NULL, NULL,
		              "no such endpoint");
	/* Auth before anything that depends on the request (method, body):
	 * an unauthenticated client learns nothing else. */
	rq->who = authenticate(h, c);
	switch (authorize(ri->auth, rq->who)) {
	case AUTH_PASS:
		break;
	case AUTH_UNAUTHORIZED:
		return reject(c, rq, MHD_HTTP_UNAUTHORIZED, "unauthorized", "unauthorized",
		              MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"recoveryd\"",
		              "a valid bearer token is required");
	case AUTH_FORBIDDEN:
		return reject(c, rq, MHD_HTTP_FORBIDDEN, "forbidden", "forbidden", NULL, NULL,
		              "this endpoint needs the operator token; the webhook token admits "
		              "POST /webhook only");
	}
	is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
	is_post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
	if (ri->post ? !is_post : !is_get)
		return reject(c, rq, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed", NULL,
		              MHD_HTTP_HEADER_ALLOW, ri->allow, "%s is not allowed here; use %s",
		              rq->method, ri->allow);
	if (rq->bad_arg) {
		if (rq->route == R_TRIGGER)
			return reject(c, rq, MHD_HTTP_NOT_FOUND, "unknown_playbook", NULL, NULL,
			              NULL, "no such playbook");
		return reject(c, rq, MHD_HTTP_NOT_FOUND, "not_found", NULL, NULL, NULL,
		              "no such job");
	}
	v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (v) {
		char *end;
		errno = 0;
		clen = strtoull(v, &end, 10);
		if (errno || *end)
			clen = 0; /* MHD has validated it; a chunked body is counted later */
	}
	if (clen > h->body_max)
		return reject(c, rq, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
		              "payload_too_large", NULL, NULL,
		              "request body of %llu bytes exceeds %zu bytes", clen, h->body_max);
	if (!ri->body)
		return MHD_YES;
	/* New work while draining: 503 is what Alertmanager retries, and the
	 * body is not worth reading. */
	if (engine_draining(h->e))
		return reject(c, rq, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable", "draining",
		              MHD_HTTP_HEADER_RETRY_AFTER, DRAIN_RETRY_AFTER,
		              "shutting down; retry against another replica");
	v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
	if (!is_json_type(v))
		return reject(c, rq, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
		              "unsupported_media_type", NULL, NULL,
		              "Content-Type must be application/json");
	if (rq->route == R_TRIGGER && !trigger_query(c, rq, msg, sizeof(msg)))
		return reject(c, rq, MHD_HTTP_BAD_REQUEST, "invalid_request", NULL, NULL, NULL, "%s",
		              msg);
	if (clen > 0) {
		/* Known length within the cap: one allocation. */
		rq->body = malloc((size_t)clen);
		if (!rq->body)
			return MHD_NO;
		rq->cap = (size_t)clen;
	}
	return MHD_YES;
}

/* Take n more body bytes; 0 to hang up (out of memory, endless body). */
static int take_body(struct http *h, struct request *rq, const char *data, size_t n)
{
	size_t ncap;
	char *nb;

	if (rq->too_large) {
		rq->discarded += n;
		return rq->discarded <= DISCARD_MAX;
	}
	if (n > h->body_max - rq->len) {
		/* Over the cap without a Content-Length (chunked): drop what we
		 * have and discard the rest. libmicrohttpd 0.9.75 refuses a
		 * response queued mid-body, so the 413 goes out after the last
		 * chunk; a body that goes on past DISCARD_MAX is hung up on. */
		rq->too_large = 1;
		free(rq->body);
		rq->body = NULL;
		rq->cap = 0;
		rq->discarded = n;
		return 1;
	}
	if (!routes[rq->route].body) {
		rq->len += n;
		return 1;
	}
	if (n > rq->cap - rq->len) {
		ncap = rq->cap ? rq->cap : 4096;
		while (ncap - rq->len < n)
			ncap *= 2;
		if (ncap > h->body_max)
			ncap = h->body_max;
		nb = realloc(rq->body, ncap);
		if (!nb)
			return 0;
		rq->body = nb;
		rq->cap = ncap;
	}
	memcpy(rq->body + rq->len, data, n);
	rq->len += n;
	return 1;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
	struct http *h = cls;
	struct request *rq = *req_cls;
	size_t n;

	(void)version;
	if (!rq) {
		rq = calloc(1, sizeof(*rq));
		if (!rq)
			return MHD_NO;
		*req_cls = rq;
		return on_headers(h, c, rq, url, method);
	}
	if (*upload_data_size > 0) {
		n = *upload_data_size;
		*upload_data_size = 0;
		if (rq->answered)
			return MHD_YES;
		if (!take_body(h, rq, upload_data, n))
			return MHD_NO;
		return MHD_YES;
	}
	if (rq->answered)
		return MHD_YES;
	return dispatch(h, c, rq);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct request *rq = *req_cls;

	(void)cls;
	(void)c;
	(void)toe;
	if (!rq)
		return;
	free(rq->body);
	free(rq);
	*req_cls = NULL;
}

/* libmicrohttpd's own complaints go to the structured log. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[MSG_MAX];
	size_t n;

	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	log_kv(LOG_WARN, NULL, "libmicrohttpd", "detail", msg, NULL);
}

/* ---- public ---- */

/* "ADDR:PORT" with an IPv4 ADDR, "localhost" or nothing (all addresses). */
static int parse_listen(const char *s, struct sockaddr_in *sa, char *err, size_t errlen)
{
	char host[LISTEN_MAX];
	const char *colon;
	long port;

	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	colon = s ? strrchr(s, ':') : NULL;
	if (!colon || (size_t)(colon - s) >= sizeof(host))
		goto bad;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	if (!parse_long(colon + 1, 0, 65535, &port) || strlen(colon + 1) > 5)
		goto bad;
	sa->sin_port = htons((uint16_t)port);
	if (!host[0])
		sa->sin_addr.s_addr = htonl(INADDR_ANY);
	else if (strcmp(host, "localhost") == 0)
		sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
		goto bad;
	return 1;
bad:
	snprintf(err, errlen, "invalid listen address \"%.64s\": expected IPv4 ADDR:PORT, e.g. 127.0.0.1:9095 or :9095",
	         s ? s : "");
	return 0;
}

/* Copy of a token, NULL for none or empty: an empty token would let
 * "Bearer " through. */
static char *token_dup(const char *t)
{
	return t && *t ? strdup(t) : NULL;
}

enum rd_status http_start(const struct http_config *cfg, struct engine *e, struct http **out,
                          unsigned *port, char *err, size_t errlen)
{
	struct http *h = NULL;
	struct sockaddr_in sa;
	const union MHD_DaemonInfo *di;
	enum rd_status st = RD_ERR;
	int locked = 0;

	*out = NULL;
	if (!parse_listen(cfg->listen, &sa, err, errlen))
		goto out;
	if (!(cfg->webhook_token && *cfg->webhook_token) &&
	    !(cfg->operator_token && *cfg->operator_token) && !cfg->insecure_no_auth) {
		snprintf(err, errlen,
		         "no webhook or operator token configured; set a token file or "
		         "--insecure-no-auth");
		goto out;
	}
	h = calloc(1, sizeof(*h));
	if (!h || pthread_mutex_init(&h->lock, NULL) != 0) {
		snprintf(err, errlen, "out of memory");
		free(h);
		h = NULL;
		st = RD_NOMEM;
		goto out;
	}
	locked = 1;
	h->e = e;
	h->body_max = cfg->body_max ? cfg->body_max : BODY_MAX_DEFAULT;
	h->insecure = cfg->insecure_no_auth;
	atomic_init(&h->stopping, 0);
	h->webhook_token = token_dup(cfg->webhook_token);
	h->operator_token = token_dup(cfg->operator_token);
	if ((cfg->webhook_token && *cfg->webhook_token && !h->webhook_token) ||
	    (cfg->operator_token && *cfg->operator_token && !h->operator_token)) {
		snprintf(err, errlen, "out of memory");
		st = RD_NOMEM;
		goto out;
	}
	/* Thread per connection: handlers block on the journal commit and on
	 * ?wait=. poll() instead of select() so fds above FD_SETSIZE work. */
	errno = 0;
	h->d = MHD_start_daemon(
		MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
			MHD_USE_ERROR_LOG,
		0, NULL, NULL, on_request, h,
		/* The logger first, or MHD prints its early messages itself. */
		MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
		MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)&sa,
		MHD_OPTION_CONNECTION_LIMIT, cfg->conn_limit ? cfg->conn_limit : CONN_LIMIT_DEFAULT,
		MHD_OPTION_PER_IP_CONNECTION_LIMIT, cfg->per_ip_limit,
		MHD_OPTION_CONNECTION_TIMEOUT,
		cfg->conn_timeout ? cfg->conn_timeout : CONN_TIMEOUT_DEFAULT,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_END);
	if (!h->d) {
		snprintf(err, errlen, "cannot listen on %s: %s", cfg->listen,
		         errno ? strerror(errno) : "libmicrohttpd refused to start");
		goto out;
	}
	di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
	if (port)
		*port = di ? di->port : 0;
	*out = h;
	h = NULL;
	st = RD_OK;
out:
	if (h) {
		free(h->webhook_token);
		free(h->operator_token);
		if (locked)
			pthread_mutex_destroy(&h->lock);
		free(h);
	}
	return st;
}

void http_set_tokens(struct http *h, const char *webhook_token, const char *operator_token)
{
	char *w, *o;

	if (!h)
		return;
	w = token_dup(webhook_token);
	o = token_dup(operator_token);
	pthread_mutex_lock(&h->lock);
	/* Keep the old token when the copy failed: better than opening up. */
	if (w || !(webhook_token && *webhook_token)) {
		free(h->webhook_token);
		h->webhook_token = w;
	}
	if (o || !(operator_token && *operator_token)) {
		free(h->operator_token);
		h->operator_token = o;
	}
	pthread_mutex_unlock(&h->lock);
}

void http_stop(struct http *h)
{
	if (!h)
		return;
	atomic_store(&h->stopping, 1);
	MHD_stop_daemon(h->d);
	pthread_mutex_destroy(&h->lock);
	free(h->webhook_token);
	free(h->operator_token);
	free(h);
}

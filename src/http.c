/* The HTTP API of DESIGN.md §3 on libmicrohttpd: routing, bearer auth, body
 * limits, JSON errors and per-request metrics.
 *
 * libmicrohttpd runs event-driven (epoll, a couple of threads), so an idle or
 * slow connection costs only its memory pool, never a thread. Checks that
 * need only the headers (route, auth, method, size, type, drain) answer on
 * the first callback so a rejected body is never read. Work that may block
 * (the journal commit of a submit, journal reads, cancel) runs on a small
 * worker pool: the connection is suspended, a worker prepares the answer in
 * the request, resumes the connection, and the next callback queues it.
 * ?wait= requests park on a wait list that one thread checks; they hold no
 * worker. A sweep closes connections whose request is not complete within
 * --request-timeout of its start (libmicrohttpd only has an idle timeout),
 * and the same thread drains what a client still sends after an early
 * answer (a 413 on Content-Length) so that it can read the answer. */
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
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "recoveryd/alert.h"
#include "recoveryd/auth.h"
#include "recoveryd/engine.h"
#include "recoveryd/log.h"
#include "recoveryd/metrics.h"
#include "recoveryd/ui.h"

#define CONN_MEMORY 16384              /* per-connection pool: headers and read buffer */
#define FD_RESERVE 512                 /* descriptors kept for the journal, curl, children */
#define WORKERS 2                      /* threads for journal reads and cancels */
#define WAIT_MAX 300                   /* seconds /trigger?wait= may take */
#define WAITS_MAX 128                  /* ?wait= requests parked at once; more answer at once */
#define WAIT_POLL 0.1                  /* the wait list is checked this often (seconds) */
#define LINGER_MAX 256                 /* sockets drained at once after an early answer */
#define LINGER_SECONDS 5.0             /* ... for at most this long */
#define LINGER_BYTES ((size_t)64 << 20) /* ... and at most this much */
#define DRAIN_RETRY_AFTER "5"
#define BUSY_RETRY_AFTER "5"           /* queue full, journal commit failed */
#define UNAVAILABLE_RETRY_AFTER "1"
#define ID_MAX 64
#define PLAYBOOK_MAX 128
#define ALERTNAME_MAX 256 /* ?alertname= of /api/v1/jobs */
#define LIMIT_DEFAULT 50
#define LIMIT_MAX 1000
#define DISCARD_MAX ((size_t)32 << 20) /* excess of an oversized chunked body read before hanging up */
#define MSG_MAX 512
#define LOG_URL_MAX 200
#define LISTEN_MAX 128

#define CT_JSON "application/json"
#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"

enum auth_verdict { AUTH_PASS, AUTH_UNAUTHORIZED, AUTH_FORBIDDEN };

/* How the body of a route is taken. */
enum body_use {
	BODY_NONE,     /* read and dropped */
	BODY_JSON,     /* required: application/json */
	BODY_OPTIONAL, /* an action's {"reason","until","for"}: may be empty */
};

enum route {
	R_OTHER,
	R_WEBHOOK,
	R_TRIGGER,
	R_JOBS,
	R_JOB,
	R_CANCEL,
	R_APPROVE,
	R_REJECT,
	R_PLAYBOOKS,
	R_PB_PAUSE,
	R_PB_RESUME,
	R_PAUSE,
	R_RESUME,
	R_AUDIT,
	R_WHOAMI,
	R_METRICS,
	R_HEALTHZ,
	R_READYZ,
	R_UI,      /* the web console: /ui/ and every path under it */
	R_UI_ROOT, /* /ui: redirected to /ui/ */
};

static const struct route_info {
	const char *tmpl;  /* metrics "path" label: a fixed set keeps cardinality bounded */
	const char *allow; /* for 405 */
	enum role need;    /* the least role that may use it (auth_role_admits) */
	int post;          /* 1: POST only; 0: GET or HEAD */
	enum body_use body;
	enum engine_action act; /* BODY_OPTIONAL routes: what they ask the engine */
} routes[] = {
	[R_OTHER] = { "other", NULL, ROLE_NONE, 0, BODY_NONE, 0 },
	[R_WEBHOOK] = { "/webhook", "POST", ROLE_ALERTMANAGER, 1, BODY_JSON, 0 },
	[R_TRIGGER] = { "/trigger", "POST", ROLE_OPERATOR, 1, BODY_JSON, 0 },
	[R_JOBS] = { "/api/v1/jobs", "GET, HEAD", ROLE_VIEWER, 0, BODY_NONE, 0 },
	[R_JOB] = { "/api/v1/jobs/{id}", "GET, HEAD", ROLE_VIEWER, 0, BODY_NONE, 0 },
	[R_CANCEL] = { "/api/v1/jobs/{id}/cancel", "POST", ROLE_OPERATOR, 1, BODY_OPTIONAL, EA_CANCEL },
	[R_APPROVE] = { "/api/v1/jobs/{id}/approve", "POST", ROLE_OPERATOR, 1, BODY_OPTIONAL, EA_APPROVE },
	[R_REJECT] = { "/api/v1/jobs/{id}/reject", "POST", ROLE_OPERATOR, 1, BODY_OPTIONAL, EA_REJECT },
	[R_PLAYBOOKS] = { "/api/v1/playbooks", "GET, HEAD", ROLE_VIEWER, 0, BODY_NONE, 0 },
	[R_PB_PAUSE] = { "/api/v1/playbooks/{name}/pause", "POST", ROLE_OPERATOR, 1, BODY_OPTIONAL, EA_PAUSE },
	[R_PB_RESUME] = { "/api/v1/playbooks/{name}/resume", "POST", ROLE_OPERATOR, 1, BODY_OPTIONAL, EA_RESUME },
	[R_PAUSE] = { "/api/v1/pause", "POST", ROLE_OPERATOR, 1, BODY_OPTIONAL, EA_PAUSE },
	[R_RESUME] = { "/api/v1/resume", "POST", ROLE_OPERATOR, 1, BODY_OPTIONAL, EA_RESUME },
	[R_AUDIT] = { "/api/v1/audit", "GET, HEAD", ROLE_VIEWER, 0, BODY_NONE, 0 },
	[R_WHOAMI] = { "/api/v1/whoami", "GET, HEAD", ROLE_VIEWER, 0, BODY_NONE, 0 },
	[R_METRICS] = { "/metrics", "GET, HEAD", ROLE_NONE, 0, BODY_NONE, 0 },
	[R_HEALTHZ] = { "/healthz", "GET, HEAD", ROLE_NONE, 0, BODY_NONE, 0 },
	[R_READYZ] = { "/readyz", "GET, HEAD", ROLE_NONE, 0, BODY_NONE, 0 },
	/* The console's files hold no data: its script sends the token. */
	[R_UI] = { "/ui/", "GET, HEAD", ROLE_NONE, 0, BODY_NONE, 0 },
	[R_UI_ROOT] = { "/ui", "GET, HEAD", ROLE_NONE, 0, BODY_NONE, 0 },
};

static const char *const job_states[] = {
	"queued", "running", "retry_wait", "succeeded", "failed", "cancelled", "budget_exhausted",
	"paused", "awaiting_approval",
};

/* One tracked connection (MHD socket context): when its current request
 * began, for the --request-timeout sweep. [h->conn_lock] */
struct conn {
	struct conn *prev, *next;
	int fd;
	double since;  /* accept, or the end of the previous response */
	int busy;      /* request complete (or answered): no deadline */
	int cut;       /* the sweep shut it down */
	int linger;    /* answered before the body was read */
};

/* A socket drained after an early answer (lingering close). */
struct lingering {
	int fd;
	double until;
	size_t left;
};

struct request;

struct http {
	struct MHD_Daemon *d;
	struct engine *e;
	size_t body_max;
	double request_timeout;
	int insecure;           /* --insecure-no-auth */
	atomic_int stopping;    /* http_stop began */
	pthread_mutex_t lock;   /* guards the principals: SIGHUP swaps them */
	struct auth *auth;      /* NULL or empty = none configured */

	/* worker pool */
	pthread_mutex_t work_lock;
	pthread_cond_t work_cond;
	struct request *work_head, *work_tail; /* [work_lock] */
	int work_closed;                       /* [work_lock] no more work accepted */
	int submits_out;                       /* [work_lock] submits the engine has not answered */
	pthread_t workers[WORKERS];
	int n_workers;

	/* ?wait= list */
	pthread_mutex_t wait_lock;
	struct request *waiting; /* [wait_lock] checked by the sweeper */
	size_t n_waiting;        /* [wait_lock] */
	int wait_closed;         /* [wait_lock] */

	/* connection deadline sweep and lingering close */
	pthread_mutex_t conn_lock;
	pthread_cond_t conn_cond;
	struct conn *conns;      /* [conn_lock] */
	struct lingering lingers[LINGER_MAX]; /* [conn_lock] fd -1 = free */
	size_t n_lingers;        /* [conn_lock] */
	int conn_closed;         /* [conn_lock] */
	pthread_t sweeper;
	int has_sweeper;
	double last_limit_log;   /* [conn_lock] */
	unsigned long limit_drops; /* [conn_lock] not yet logged */
};

/* A prepared answer: built wherever the work ran, queued by the MHD thread. */
struct answer {
	int ready;
	int failed;              /* out of memory: hang up */
	const char *cache;       /* a console file: its Cache-Control, and ui_headers */
	unsigned status;
	const char *ctype;
	char *buf;               /* malloc'd; MHD takes it when queued */
	size_t len;
	const char *hname;       /* one extra header, or NULL */
	char hval[64];
	char *link;              /* malloc'd Link header value, or NULL */
};

/* Per-request state, in *req_cls from the first callback to completion. */
struct request {
	enum route route;
	/* Who, from the bearer token: the name and role only; the playbook list
	 * is looked up when needed (request_actor), which keeps this struct
	 * small enough for malloc's fast bins. */
	char who_name[ACTOR_NAME_MAX + 1];
	enum role who_role;
	int who_scoped;              /* its tokens-file entry names playbooks */
	int force;                   /* /trigger?force=1 */
	double q_since, q_until;     /* GET /api/v1/audit and /jobs filters; the audit's
	                              * principal and action go into q_playbook and q_state */
	char *q_alertname;           /* GET /api/v1/jobs, malloc'd */
	long long q_before;
	int bad_arg;                 /* id / playbook in the path is malformed */
	char arg[PLAYBOOK_MAX + 1];  /* job id or playbook name */
	int dry_run;
	int wait;                    /* seconds, /trigger only */
	char q_state[24];            /* GET /api/v1/jobs filters ("" = none) */
	char q_playbook[PLAYBOOK_MAX + 1];
	int q_limit;
	char method[16];             /* for logs */
	char url[LOG_URL_MAX + 1];   /* for logs, truncated */
	char ip[INET_ADDRSTRLEN + 1];
	char *body;                  /* only for routes[].body */
	size_t len, cap;             /* bytes received (counted even when not kept) */
	size_t discarded;            /* bytes dropped after too_large */
	int too_large;
	int answered;                /* a response is queued */
	struct answer ans;
	struct MHD_Connection *c;    /* for resuming */
	struct http *h;              /* for an answer that comes from another thread */
	struct request *next;        /* work queue / wait list */
	/* ?wait= */
	double wait_until;
	char wait_id[ID_MAX + 1];
	cJSON *wait_body;            /* the submit answer, sent if the job is still running */
};

/* One calloc per request: small enough for glibc's per-thread cache
 * (requests up to 1032 bytes), which the profile showed matters. */
_Static_assert(sizeof(struct request) <= 1000, "struct request outgrew a small chunk");

/* ---- responses ---- */

/* Prepare buf (malloc'd, consumed) as the answer. */
static void answer(struct request *rq, unsigned status, const char *ctype, char *buf, size_t len,
                   const char *hname, const char *hval)
{
	struct answer *a = &rq->ans;

	free(a->buf);
	free(a->link);
	memset(a, 0, sizeof(*a));
	a->ready = 1;
	if (!buf) {
		a->failed = 1;
		return;
	}
	a->status = status;
	a->ctype = ctype;
	a->buf = buf;
	a->len = len;
	if (hname) {
		a->hname = hname;
		snprintf(a->hval, sizeof(a->hval), "%s", hval);
	}
}

/* Answer with body (consumed), one line of compact JSON. */
static void answer_json(struct request *rq, unsigned status, cJSON *body, const char *hname,
                        const char *hval)
{
	char *txt = body ? cJSON_PrintUnformatted(body) : NULL;
	char *buf = NULL;
	size_t n = 0;

	cJSON_Delete(body);
	/* Copy into our own malloc'd buffer: MHD frees it with free(), while
	 * cJSON may have been given other allocation hooks. */
	if (txt) {
		n = strlen(txt);
		buf = malloc(n + 2);
		if (buf) {
			memcpy(buf, txt, n);
			buf[n] = '\n';
			buf[n + 1] = '\0';
		}
		cJSON_free(txt);
	}
	answer(rq, status, CT_JSON, buf, n + 1, hname, hval);
}

static void answer_error(struct request *rq, unsigned status, const char *code, const char *msg,
                         const char *hname, const char *hval)
{
	cJSON *o = cJSON_CreateObject();

	if (!o || !cJSON_AddStringToObject(o, "error", code) ||
	    !cJSON_AddStringToObject(o, "message", msg)) {
		cJSON_Delete(o);
		o = NULL;
	}
	answer_json(rq, status, o, hname, hval);
}

/* Queue the prepared answer on c and count the request. */
static enum MHD_Result answer_queue(struct MHD_Connection *c, struct request *rq)
{
	struct answer *a = &rq->ans;
	struct MHD_Response *r;
	enum MHD_Result ret;
	char code[8];

	if (!a->ready || a->failed)
		return MHD_NO; /* out of memory: MHD closes the connection */
	r = MHD_create_response_from_buffer(a->len, a->buf, MHD_RESPMEM_MUST_FREE);
	if (!r)
		return MHD_NO;
	a->buf = NULL; /* the response owns it now */
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, a->ctype) != MHD_YES ||
	    (a->hname && MHD_add_response_header(r, a->hname, a->hval) != MHD_YES) ||
	    (a->link && MHD_add_response_header(r, "Link", a->link) != MHD_YES)) {
		MHD_destroy_response(r);
		return MHD_NO;
	}
	for (const struct ui_header *u = ui_headers; a->cache && u->name; u++)
		if (MHD_add_response_header(r, u->name, u->value) != MHD_YES) {
			MHD_destroy_response(r);
			return MHD_NO;
		}
	if (a->cache && MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, a->cache) != MHD_YES) {
		MHD_destroy_response(r);
		return MHD_NO;
	}
	ret = MHD_queue_response(c, a->status, r);
	MHD_destroy_response(r);
	if (ret != MHD_YES)
		return MHD_NO;
	rq->answered = 1;
	snprintf(code, sizeof(code), "%u", a->status);
	metrics_add(M_WEBHOOK_REQUESTS, routes[rq->route].tmpl, code, 1);
	return MHD_YES;
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

/* Prepare an error the HTTP layer decided on, log it and, when reason is
 * set, count it in recoveryd_requests_rejected_total{reason}. Never logs
 * headers: the Authorization value must not reach the logs. */
static void reject(struct request *rq, unsigned status, const char *code, const char *reason,
                   const char *hname, const char *hval, const char *fmt, ...)
	__attribute__((format(printf, 7, 8)));

static void reject(struct request *rq, unsigned status, const char *code, const char *reason,
                   const char *hname, const char *hval, const char *fmt, ...)
{
	char msg[MSG_MAX], st[8];
	va_list ap;
	/* 404/405 are what scanners produce: keep them out of the warn stream. */
	enum log_level lvl = (status == MHD_HTTP_NOT_FOUND || status == MHD_HTTP_METHOD_NOT_ALLOWED)
	                             ? LOG_INFO
	                             : LOG_WARN;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(st, sizeof(st), "%u", status);
	if (reason)
		metrics_add(M_REJECTED, reason, NULL, 1);
	log_kv(lvl, NULL, "request rejected", "method", rq->method, "url", rq->url, "route",
	       routes[rq->route].tmpl, "status", st, "error", code, "message", msg, "remote", rq->ip,
	       NULL);
	answer_error(rq, status, code, msg, hname, hval);
}

/* How an engine result is answered. */
struct engine_http {
	unsigned status;
	const char *error;       /* error code of the body built here; NULL: the engine's body */
	const char *retry_after; /* NULL: no Retry-After */
};

/* The one place engine results become HTTP (docs/http-api.md, "Errors").
 * No default: a new result does not compile until it is mapped here. */
static struct engine_http engine_http_of(enum engine_result r)
{
	switch (r) {
	case ENGINE_ACCEPTED:
		return (struct engine_http){ MHD_HTTP_ACCEPTED, NULL, NULL };
	case ENGINE_CANCEL_REQUESTED:
	case ENGINE_DONE:
		return (struct engine_http){ MHD_HTTP_OK, NULL, NULL };
	case ENGINE_INVALID:
		return (struct engine_http){ MHD_HTTP_BAD_REQUEST, "invalid_request", NULL };
	case ENGINE_FORBIDDEN:
		return (struct engine_http){ MHD_HTTP_FORBIDDEN, "forbidden", NULL };
	case ENGINE_UNKNOWN_PLAYBOOK:
		return (struct engine_http){ MHD_HTTP_NOT_FOUND, "unknown_playbook", NULL };
	case ENGINE_NOT_FOUND:
		return (struct engine_http){ MHD_HTTP_NOT_FOUND, "not_found", NULL };
	case ENGINE_CONFLICT:
		return (struct engine_http){ MHD_HTTP_CONFLICT, "conflict", NULL };
	/* 503 is what Alertmanager retries: every "not now" is one. */
	case ENGINE_DRAINING:
		return (struct engine_http){ MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable", DRAIN_RETRY_AFTER };
	case ENGINE_QUEUE_FULL:
	case ENGINE_UNAVAILABLE:
	case ENGINE_NOMEM:
		return (struct engine_http){ MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable", BUSY_RETRY_AFTER };
	}
	return (struct engine_http){ MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, NULL }; /* not a result */
}

/* Answer what engine_submit or engine_cancel returned (r->body taken). */
static void answer_engine(struct request *rq, enum engine_result res, struct engine_reply *r)
{
	struct engine_http m = engine_http_of(res);
	cJSON *body = r->body;

	r->body = NULL;
	if (m.error) {
		cJSON_Delete(body);
		answer_error(rq, m.status, m.error, r->message,
		             m.retry_after ? MHD_HTTP_HEADER_RETRY_AFTER : NULL, m.retry_after);
	} else if (m.status == MHD_HTTP_INTERNAL_SERVER_ERROR || !body) {
		cJSON_Delete(body);
		answer_error(rq, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "the engine gave no answer",
		             NULL, NULL);
	} else {
		answer_json(rq, m.status, body, NULL, NULL);
	}
}

/* ---- request inspection ---- */

/* 1 when s is 1..max characters of [A-Za-z0-9_-] (plus '.' when dot). */
static int valid_path_arg(const char *s, size_t max, int dot)
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
	static const char jobs[] = "/api/v1/jobs/", trig[] = "/trigger/", pbs[] = "/api/v1/playbooks/";
	static const struct {
		const char *path;
		enum route r;
	} fixed[] = {
		{ "/webhook", R_WEBHOOK },     { "/api/v1/jobs", R_JOBS }, { "/api/v1/playbooks", R_PLAYBOOKS },
		{ "/metrics", R_METRICS },     { "/healthz", R_HEALTHZ },  { "/readyz", R_READYZ },
		{ "/api/v1/pause", R_PAUSE },  { "/api/v1/resume", R_RESUME }, { "/api/v1/audit", R_AUDIT },
		{ "/api/v1/whoami", R_WHOAMI },
	};
	const char *rest, *slash;
	size_t n;

	rq->route = R_OTHER;
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		if (strcmp(url, fixed[i].path) == 0) {
			rq->route = fixed[i].r;
			return;
		}
	/* The console routes in the browser: any path under /ui/ is served
	 * (its page, or the file of that name; a long path is no file). */
	if (strcmp(url, "/ui") == 0) {
		rq->route = R_UI_ROOT;
		return;
	}
	if (strncmp(url, "/ui/", 4) == 0) {
		rq->route = R_UI;
		snprintf(rq->arg, sizeof(rq->arg), "%s", url + 4);
		return;
	}
	if (strncmp(url, trig, sizeof(trig) - 1) == 0) {
		rest = url + sizeof(trig) - 1;
		if (!*rest || strchr(rest, '/'))
			return;
		rq->route = R_TRIGGER;
		rq->bad_arg = !valid_path_arg(rest, PLAYBOOK_MAX, 1);
		if (!rq->bad_arg)
			snprintf(rq->arg, sizeof(rq->arg), "%s", rest);
		return;
	}
	if (strncmp(url, pbs, sizeof(pbs) - 1) == 0) {
		rest = url + sizeof(pbs) - 1;
		slash = strchr(rest, '/');
		if (!slash)
			return;
		if (strcmp(slash, "/pause") == 0)
			rq->route = R_PB_PAUSE;
		else if (strcmp(slash, "/resume") == 0)
			rq->route = R_PB_RESUME;
		else
			return;
		n = (size_t)(slash - rest);
		rq->bad_arg = n == 0 || n > PLAYBOOK_MAX;
		if (!rq->bad_arg) {
			memcpy(rq->arg, rest, n);
			rq->arg[n] = '\0';
			rq->bad_arg = !valid_path_arg(rq->arg, PLAYBOOK_MAX, 1);
		}
		return;
	}
	if (strncmp(url, jobs, sizeof(jobs) - 1) != 0)
		return;
	rest = url + sizeof(jobs) - 1;
	slash = strchr(rest, '/');
	if (!slash) {
		rq->route = R_JOB;
		n = strlen(rest);
	} else if (strcmp(slash, "/cancel") == 0 || strcmp(slash, "/approve") == 0 ||
	           strcmp(slash, "/reject") == 0) {
		rq->route = slash[1] == 'c' ? R_CANCEL : slash[1] == 'a' ? R_APPROVE : R_REJECT;
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
	rq->bad_arg = !valid_path_arg(rq->arg, ID_MAX, 0);
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

/* Who the request is, from its bearer token (auth_find compares every
 * principal in constant time). With no principal configured at all
 * (--insecure-no-auth) every caller is an admin named "anonymous". A token
 * that matches nobody is logged with the client address, never itself. */
static void authenticate(struct http *h, struct MHD_Connection *c, struct request *rq)
{
	const char *tok;
	size_t n = 0;
	int found;
	struct actor a;

	tok = bearer_token(MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	                                               MHD_HTTP_HEADER_AUTHORIZATION),
	                   &n);
	actor_init(&a, "anonymous", ROLE_NONE, NULL);
	pthread_mutex_lock(&h->lock);
	if (auth_count(h->auth) == 0) {
		if (h->insecure)
			a.role = ROLE_ADMIN;
		found = 1;
	} else {
		found = tok && auth_find(h->auth, tok, n, &a) == 0;
	}
	pthread_mutex_unlock(&h->lock);
	memcpy(rq->who_name, a.name, sizeof(rq->who_name));
	rq->who_role = a.role;
	rq->who_scoped = a.scope[0] != '\0';
	if (tok && !found) {
		metrics_add(M_AUTH_FAILURES, "invalid_token", NULL, 1);
		log_kv(LOG_WARN, NULL, "authentication failed: the bearer token matches no principal",
		       "remote", rq->ip, "url", rq->url, NULL);
	}
}

/* May the request's principal use a route that needs role need? Anonymous
 * callers get 401 (ask for a token); a known principal without the right
 * gets 403. */
static enum auth_verdict authorize(enum role need, enum role have)
{
	if (auth_role_admits(have, need))
		return AUTH_PASS;
	return have == ROLE_NONE ? AUTH_UNAUTHORIZED : AUTH_FORBIDDEN;
}

/* The request's principal as the engine records it. A scoped one gets its
 * playbook list as the principals are now (a principal a reload removed
 * meanwhile may act on no playbook); the rest (every webhook of the
 * alertmanager principal) skip the look-up. */
static void request_actor(struct http *h, const struct request *rq, struct actor *a)
{
	actor_init(a, rq->who_name, rq->who_role, rq->ip);
	if (!rq->who_scoped)
		return;
	pthread_mutex_lock(&h->lock);
	auth_scope(h->auth, rq->who_name, a->scope, sizeof(a->scope));
	pthread_mutex_unlock(&h->lock);
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

/* Strict decimal integer in [lo, hi]: no sign, no blanks, no junk.
 * 0, or -1 (*out untouched) when s is not one. */
static int parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	if (!s || !isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

/* Query argument: 1 when present (*v may be NULL for "?key"), 0 otherwise. */
static int query_arg(struct MHD_Connection *c, const char *key, const char **v)
{
	size_t vlen = 0;

	*v = NULL;
	return MHD_lookup_connection_value_n(c, MHD_GET_ARGUMENT_KIND, key, strlen(key), v,
	                                     &vlen) == MHD_YES;
}

/* dry_run and wait of /trigger; 0, or -1 with msg filled on a bad value. */
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
			return -1;
		}
	}
	if (query_arg(c, "force", &v)) {
		if (!v || !*v || strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0) {
			rq->force = 1;
		} else if (strcmp(v, "0") != 0 && strcasecmp(v, "false") != 0) {
			snprintf(msg, len, "force must be 1, true, 0 or false");
			return -1;
		}
	}
	if (query_arg(c, "wait", &v)) {
		if (parse_long(v, 0, WAIT_MAX, &w) < 0) {
			snprintf(msg, len, "wait must be a whole number of seconds from 0 to %d",
			         WAIT_MAX);
			return -1;
		}
		rq->wait = (int)w;
	}
	return 0;
}

/* ?limit= of a list into rq->q_limit (kept when absent); 0, or -1. */
static int limit_query(struct MHD_Connection *c, struct request *rq, char *msg, size_t len)
{
	const char *v;
	long l;

	if (query_arg(c, "limit", &v)) {
		if (parse_long(v, 1, LIMIT_MAX, &l) < 0) {
			snprintf(msg, len, "limit must be a whole number from 1 to %d", LIMIT_MAX);
			return -1;
		}
		rq->q_limit = (int)l;
	}
	return 0;
}

static int utf8_ok(const char *s);

/* ?since= and ?until= of a list; 0, or -1 with msg filled. */
static int time_query(struct MHD_Connection *c, struct request *rq, char *msg, size_t len)
{
	const char *v;

	if (query_arg(c, "since", &v) && v && *v && rd_parse_time(v, &rq->q_since) < 0) {
		snprintf(msg, len, "since must be an RFC 3339 time or epoch seconds");
		return -1;
	}
	if (query_arg(c, "until", &v) && v && *v && rd_parse_time(v, &rq->q_until) < 0) {
		snprintf(msg, len, "until must be an RFC 3339 time or epoch seconds");
		return -1;
	}
	return 0;
}

/* ?before= (the cursor of a page); 0, or -1 with msg filled. */
static int cursor_query(struct MHD_Connection *c, struct request *rq, char *msg, size_t len)
{
	const char *v;
	char *end;

	if (query_arg(c, "before", &v) && v && *v) {
		errno = 0;
		rq->q_before = strtoll(v, &end, 10);
		if (errno || *end || rq->q_before <= 0 || !isdigit((unsigned char)*v)) {
			snprintf(msg, len, "before must be the cursor of a previous page");
			return -1;
		}
	}
	return 0;
}

/* Filters of GET /api/v1/jobs into rq; 0, or -1 with msg filled on a bad value. */
static int jobs_query(struct MHD_Connection *c, struct request *rq, char *msg, size_t len)
{
	const char *v;
	int known = 0;

	rq->q_state[0] = '\0';
	rq->q_playbook[0] = '\0';
	rq->q_limit = LIMIT_DEFAULT;
	if (query_arg(c, "state", &v) && v && *v) {
		for (size_t i = 0; i < sizeof(job_states) / sizeof(job_states[0]); i++)
			known |= strcmp(v, job_states[i]) == 0;
		if (!known) {
			snprintf(msg, len,
			         "state must be one of queued, running, retry_wait, succeeded, "
			         "failed, cancelled, budget_exhausted, paused, awaiting_approval");
			return -1;
		}
		snprintf(rq->q_state, sizeof(rq->q_state), "%s", v);
	}
	if (query_arg(c, "playbook", &v) && v && *v) {
		if (strlen(v) > PLAYBOOK_MAX) {
			snprintf(msg, len, "playbook must be at most %d characters", PLAYBOOK_MAX);
			return -1;
		}
		snprintf(rq->q_playbook, sizeof(rq->q_playbook), "%s", v);
	}
	if (query_arg(c, "alertname", &v) && v && *v) {
		if (strlen(v) > ALERTNAME_MAX || !utf8_ok(v)) {
			snprintf(msg, len, "alertname must be UTF-8, at most %d bytes", ALERTNAME_MAX);
			return -1;
		}
		if (!(rq->q_alertname = strdup(v))) {
			snprintf(msg, len, "out of memory");
			return -1;
		}
	}
	if (time_query(c, rq, msg, len) < 0 || cursor_query(c, rq, msg, len) < 0)
		return -1;
	return limit_query(c, rq, msg, len);
}

/* Filters of GET /api/v1/audit; 0, or -1 with msg filled. */
static int audit_query(struct MHD_Connection *c, struct request *rq, char *msg, size_t len)
{
	const char *v;

	rq->q_limit = LIMIT_DEFAULT;
	if (query_arg(c, "principal", &v) && v && *v) {
		if (strlen(v) > ACTOR_NAME_MAX) {
			snprintf(msg, len, "principal must be at most %d characters", ACTOR_NAME_MAX);
			return -1;
		}
		snprintf(rq->q_playbook, sizeof(rq->q_playbook), "%s", v);
	}
	if (query_arg(c, "action", &v) && v && *v) {
		if (!engine_audit_action_known(v)) {
			snprintf(msg, len, "action must be one of %s", ENGINE_AUDIT_ACTIONS);
			return -1;
		}
		snprintf(rq->q_state, sizeof(rq->q_state), "%s", v);
	}
	if (time_query(c, rq, msg, len) < 0 || cursor_query(c, rq, msg, len) < 0)
		return -1;
	return limit_query(c, rq, msg, len);
}

/* ---- handlers (body complete; an answer goes into rq->ans) ---- */

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
	if (strlen(id->valuestring) > ID_MAX)
		return NULL;
	return id->valuestring;
}

/* Park rq on the wait list with the submit answer body (taken): 0. -1
 * (body not taken) when the list is full or closed: the caller answers at
 * once. */
static int wait_park(struct http *h, struct request *rq, const char *id, cJSON *body)
{
	int rc = -1;

	pthread_mutex_lock(&h->wait_lock);
	if (!h->wait_closed && h->n_waiting < WAITS_MAX) {
		snprintf(rq->wait_id, sizeof(rq->wait_id), "%s", id);
		rq->wait_until = rd_mono() + rq->wait;
		rq->wait_body = body;
		rq->next = h->waiting;
		h->waiting = rq;
		h->n_waiting++;
		rc = 0;
	}
	pthread_mutex_unlock(&h->wait_lock);
	if (rc == 0) {
		/* the sweeper checks waits every WAIT_POLL from now on */
		pthread_mutex_lock(&h->conn_lock);
		pthread_cond_signal(&h->conn_cond);
		pthread_mutex_unlock(&h->conn_lock);
	}
	return rc;
}

static void finish(struct request *rq);

/* The engine's answer to a submit: on the journal writer's thread once
 * the decisions are committed, or on the submitting thread for a refusal. */
static void submit_done(enum engine_result res, struct engine_reply *r, void *arg)
{
	struct request *rq = arg;
	struct http *h = rq->h;
	const char *id;

	/* Only the operator may read job records: a webhook-token caller gets
	 * the ids and states of the submit answer, never a record. */
	if (!(res == ENGINE_ACCEPTED && r->body && rq->wait > 0 && auth_role_admits(rq->who_role, ROLE_VIEWER) &&
	      (id = waitable_job(r->body)) && wait_park(h, rq, id, r->body) == 0)) {
		answer_engine(rq, res, r);
		finish(rq);
	}
	pthread_mutex_lock(&h->work_lock);
	if (--h->submits_out == 0)
		pthread_cond_broadcast(&h->work_cond);
	pthread_mutex_unlock(&h->work_lock);
}

/* A complete /webhook or /trigger request, on a libmicrohttpd thread, its
 * connection suspended: parse it, and hand it to the engine. No thread
 * waits for the journal: the answer comes from submit_done. */
static void submit_start(struct http *h, struct request *rq)
{
	struct payload p;
	char err[MSG_MAX];
	enum alert_result ar;

	memset(&p, 0, sizeof(p));
	if (rq->len == 0) {
		reject(rq, MHD_HTTP_BAD_REQUEST, "invalid_json", "invalid_json", NULL, NULL,
		       "empty body: expected a JSON object");
		finish(rq);
		return;
	}
	err[0] = '\0';
	ar = alert_parse(rq->body, rq->len, rq->route == R_TRIGGER ? ALERT_ALLOW_MANUAL : 0, &p, err,
	                 sizeof(err));
	if (ar == ALERT_INVALID_JSON || ar == ALERT_INVALID_PAYLOAD) {
		const char *code = ar == ALERT_INVALID_JSON ? "invalid_json" : "invalid_payload";
		reject(rq, MHD_HTTP_BAD_REQUEST, code, code, NULL, NULL, "%s",
		       err[0] ? err : "malformed request body");
		finish(rq);
		return;
	}
	if (ar != ALERT_OK) {
		answer_error(rq, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable", "out of memory",
		             MHD_HTTP_HEADER_RETRY_AFTER, UNAVAILABLE_RETRY_AFTER);
		finish(rq);
		return;
	}
	if (rq->force && !(p.reason && p.reason[0])) {
		payload_free(&p);
		reject(rq, MHD_HTTP_BAD_REQUEST, "invalid_request", NULL, NULL, NULL,
		       "force=1 needs a reason: send the {\"labels\":...,\"reason\":\"...\"} form");
		finish(rq);
		return;
	}
	pthread_mutex_lock(&h->work_lock);
	h->submits_out++;
	pthread_mutex_unlock(&h->work_lock);
	rq->h = h;
	struct actor who;
	request_actor(h, rq, &who);
	struct engine_submit_opts so = {.playbook = rq->route == R_TRIGGER ? rq->arg : NULL,
	                                 .dry_run = rq->dry_run, .force = rq->force, .who = &who};
	engine_submit_async(h->e, &p, &so, submit_done, rq);
	payload_free(&p);
}

/* The Link header to the next page: this request's filters and the cursor
 * (RFC 8288), values percent-encoded. NULL when out of memory. */
static char *jobs_next_link(const struct request *rq, long long next)
{
	/* Bounded: each value is at most ALERTNAME_MAX bytes, 3 per byte encoded. */
	size_t cap = 256 + 3 * (PLAYBOOK_MAX + ALERTNAME_MAX), n;
	char *b = malloc(cap);
	const char *vals[2] = {rq->q_playbook[0] ? rq->q_playbook : NULL, rq->q_alertname};
	static const char *const names[2] = {"playbook", "alertname"};

	if (!b)
		return NULL;
	n = (size_t)snprintf(b, cap, "</api/v1/jobs?limit=%d", rq->q_limit);
	if (rq->q_state[0])
		n += (size_t)snprintf(b + n, cap - n, "&state=%s", rq->q_state);
	for (int k = 0; k < 2; k++) {
		if (!vals[k])
			continue;
		n += (size_t)snprintf(b + n, cap - n, "&%s=", names[k]);
		for (const unsigned char *p = (const unsigned char *)vals[k]; *p; p++) {
			if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~')
				n += (size_t)snprintf(b + n, cap - n, "%c", *p);
			else
				n += (size_t)snprintf(b + n, cap - n, "%%%02X", *p);
		}
	}
	if (rq->q_since != 0)
		n += (size_t)snprintf(b + n, cap - n, "&since=%.3f", rq->q_since);
	if (rq->q_until != 0)
		n += (size_t)snprintf(b + n, cap - n, "&until=%.3f", rq->q_until);
	snprintf(b + n, cap - n, "&before=%lld>; rel=\"next\"", next);
	return b;
}

static void handle_jobs(struct http *h, struct request *rq)
{
	struct jobs_query q = {.state = rq->q_state[0] ? rq->q_state : NULL,
	                       .playbook = rq->q_playbook[0] ? rq->q_playbook : NULL,
	                       .alertname = rq->q_alertname, .since = rq->q_since,
	                       .until = rq->q_until, .before = rq->q_before, .limit = rq->q_limit};
	cJSON *out = NULL;
	long long next = 0;
	char *link = NULL;

	if (engine_jobs_page(h->e, &q, &out, &next) != RD_OK || !out ||
	    (next && !(link = jobs_next_link(rq, next)))) {
		cJSON_Delete(out);
		answer_error(rq, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
		             "the job journal cannot be read", MHD_HTTP_HEADER_RETRY_AFTER,
		             UNAVAILABLE_RETRY_AFTER);
		return;
	}
	answer_json(rq, MHD_HTTP_OK, out, NULL, NULL);
	rq->ans.link = link;
}

static void handle_job(struct http *h, struct request *rq)
{
	cJSON *out = NULL;

	if (engine_job_json(h->e, rq->arg, &out) != RD_OK) {
		cJSON_Delete(out);
		answer_error(rq, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
		             "the job journal cannot be read", MHD_HTTP_HEADER_RETRY_AFTER,
		             UNAVAILABLE_RETRY_AFTER);
		return;
	}
	if (!out) {
		reject(rq, MHD_HTTP_NOT_FOUND, "not_found", NULL, NULL, NULL, "no job with id %s",
		       rq->arg);
		return;
	}
	answer_json(rq, MHD_HTTP_OK, out, NULL, NULL);
}

static int utf8_ok(const char *s)
{
	size_t n = strlen(s), k;

	for (size_t i = 0; i < n; i += k)
		if (!(k = rd_utf8_len((const unsigned char *)s + i, n - i)))
			return 0;
	return 1;
}

/* The optional body of an action: {"reason": "...", "until": TIME, "for":
 * SECONDS}. 0, or -1 with msg filled. */
static int action_body(struct request *rq, char *reason, size_t rlen, double *until, char *msg,
                       size_t mlen)
{
	cJSON *o, *it;
	int rc = 0, pause = rq->route == R_PAUSE || rq->route == R_PB_PAUSE;

	reason[0] = '\0';
	*until = 0;
	if (rq->len == 0)
		return 0;
	o = cJSON_ParseWithLength(rq->body, rq->len);
	if (!cJSON_IsObject(o)) {
		snprintf(msg, mlen, "the body must be a JSON object such as {\"reason\":\"...\"}");
		cJSON_Delete(o);
		return -1;
	}
	cJSON_ArrayForEach(it, o) {
		if (strcmp(it->string, "reason") == 0) {
			if (!cJSON_IsString(it) || strlen(it->valuestring) >= rlen ||
			    !utf8_ok(it->valuestring)) {
				snprintf(msg, mlen, "reason must be a UTF-8 string of at most %zu bytes", rlen - 1);
				rc = -1;
				break;
			}
			snprintf(reason, rlen, "%s", it->valuestring);
		} else if (strcmp(it->string, "until") == 0 && pause) {
			if (!cJSON_IsString(it) || rd_parse_time(it->valuestring, until) < 0) {
				snprintf(msg, mlen, "until must be an RFC 3339 time, e.g. \"2026-12-02T18:00:00Z\"");
				rc = -1;
				break;
			}
		} else if (strcmp(it->string, "for") == 0 && pause) {
			if (!cJSON_IsNumber(it) || it->valuedouble <= 0 || it->valuedouble > 366 * 86400.0) {
				snprintf(msg, mlen, "for must be a number of seconds from 1 to a year");
				rc = -1;
				break;
			}
			*until = rd_now() + it->valuedouble;
		} else {
			snprintf(msg, mlen, "unknown field \"%.64s\" (allowed: reason%s)", it->string,
			         pause ? ", until, for" : "");
			rc = -1;
			break;
		}
	}
	cJSON_Delete(o);
	return rc;
}

/* cancel, approve, reject, pause, resume: journaled with who and why. */
static void handle_action(struct http *h, struct request *rq)
{
	struct engine_reply r = {0};
	char reason[AUTH_REASON_MAX + 1], msg[MSG_MAX];
	struct actor who;
	struct engine_act a = {.action = routes[rq->route].act, .who = &who, .reason = reason};
	enum engine_result res;

	request_actor(h, rq, &who);
	if (action_body(rq, reason, sizeof(reason), &a.until, msg, sizeof(msg)) < 0) {
		reject(rq, MHD_HTTP_BAD_REQUEST, "invalid_request", NULL, NULL, NULL, "%s", msg);
		return;
	}
	if (rq->route != R_PAUSE && rq->route != R_RESUME)
		a.target = rq->arg;
	res = engine_act(h->e, &a, &r);
	answer_engine(rq, res, &r);
}

static void handle_audit(struct http *h, struct request *rq)
{
	struct audit_query q = {.principal = rq->q_playbook[0] ? rq->q_playbook : NULL,
	                        .action = rq->q_state[0] ? rq->q_state : NULL,
	                        .since = rq->q_since, .until = rq->q_until, .before = rq->q_before,
	                        .limit = rq->q_limit};
	cJSON *out = NULL;

	if (engine_audit_json(h->e, &q, &out) != RD_OK || !out) {
		cJSON_Delete(out);
		answer_error(rq, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
		             "the job journal cannot be read", MHD_HTTP_HEADER_RETRY_AFTER,
		             UNAVAILABLE_RETRY_AFTER);
		return;
	}
	answer_json(rq, MHD_HTTP_OK, out, NULL, NULL);
}

/* Who the token is: the console shows actions only to those who may act. */
static void handle_whoami(struct http *h, struct request *rq)
{
	struct actor who;
	cJSON *o = cJSON_CreateObject(), *pbs = NULL;
	int bad = !o;

	request_actor(h, rq, &who);
	bad |= !cJSON_AddStringToObject(o, "name", who.name) ||
	       !cJSON_AddStringToObject(o, "role", role_name(who.role));
	if (who.scope[0]) {
		/* ",a,b," */
		bad |= !(pbs = cJSON_AddArrayToObject(o, "playbooks"));
		for (char *p = who.scope + 1, *e; !bad && (e = strchr(p, ',')); p = e + 1) {
			*e = '\0';
			bad |= !cJSON_AddItemToArray(pbs, cJSON_CreateString(p));
		}
	} else {
		bad |= !cJSON_AddNullToObject(o, "playbooks");
	}
	if (bad) {
		cJSON_Delete(o);
		o = NULL;
	}
	answer_json(rq, MHD_HTTP_OK, o, NULL, NULL);
}

static void handle_playbooks(struct http *h, struct request *rq)
{
	cJSON *out = engine_playbooks_json(h->e);

	if (!out) {
		answer_error(rq, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
		             "playbooks are not loaded", MHD_HTTP_HEADER_RETRY_AFTER,
		             UNAVAILABLE_RETRY_AFTER);
		return;
	}
	answer_json(rq, MHD_HTTP_OK, out, NULL, NULL);
}

static void handle_metrics(struct request *rq)
{
	size_t len = 0;
	char *txt = metrics_render(&len);

	if (!txt) {
		answer_error(rq, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "cannot render metrics",
		             NULL, NULL);
		return;
	}
	answer(rq, MHD_HTTP_OK, CT_METRICS, txt, len, NULL, NULL);
}

static void handle_status(struct request *rq, const char *status)
{
	cJSON *o = cJSON_CreateObject();

	if (!o || !cJSON_AddStringToObject(o, "status", status)) {
		cJSON_Delete(o);
		o = NULL;
	}
	answer_json(rq, MHD_HTTP_OK, o, NULL, NULL);
}

/* Liveness: the event loop turns (the watchdog's view). */
static void handle_healthz(struct http *h, struct request *rq)
{
	char why[MSG_MAX];

	why[0] = '\0';
	if (engine_live(h->e, why, sizeof(why))) {
		handle_status(rq, "ok");
		return;
	}
	answer_error(rq, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable", why, NULL, NULL);
}

static void handle_readyz(struct http *h, struct request *rq)
{
	char why[MSG_MAX];

	why[0] = '\0';
	if (engine_ready(h->e, why, sizeof(why))) {
		handle_status(rq, "ready");
		return;
	}
	why[sizeof(why) - 1] = '\0';
	answer_error(rq, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable", why[0] ? why : "not ready",
	             MHD_HTTP_HEADER_RETRY_AFTER, UNAVAILABLE_RETRY_AFTER);
}

/* GET /ui/<path>: a file of the console, or its page for a deep link. */
static void handle_ui(struct request *rq)
{
	const struct ui_asset *f = ui_find(rq->arg);
	char *buf = malloc(f->len + 1); /* answers own their body */

	if (buf)
		memcpy(buf, f->data, f->len);
	answer(rq, MHD_HTTP_OK, f->ctype, buf, f->len, NULL, NULL);
	rq->ans.cache = ui_cache_control(f);
}

/* Routes whose handler may block (journal commit or read): on a worker,
 * connection suspended, never on the thread that takes the webhooks. The
 * playbooks' stats are journal reads. */
static int blocking_route(enum route r)
{
	return r == R_JOBS || r == R_JOB || r == R_AUDIT || r == R_PLAYBOOKS || routes[r].body == BODY_OPTIONAL;
}

/* Run the handler of a complete request. Returns 0 when rq was parked on
 * the wait list. */
static int dispatch(struct http *h, struct request *rq)
{
	if (rq->too_large) {
		reject(rq, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large", "payload_too_large", NULL,
		       NULL, "request body exceeds %zu bytes", h->body_max);
		return 1;
	}
	switch (rq->route) {
	case R_WEBHOOK:
	case R_TRIGGER:
		break; /* submit_start, never dispatched */
	case R_JOBS:
		handle_jobs(h, rq);
		break;
	case R_JOB:
		handle_job(h, rq);
		break;
	case R_CANCEL:
	case R_APPROVE:
	case R_REJECT:
	case R_PAUSE:
	case R_RESUME:
	case R_PB_PAUSE:
	case R_PB_RESUME:
		handle_action(h, rq);
		break;
	case R_AUDIT:
		handle_audit(h, rq);
		break;
	case R_WHOAMI:
		handle_whoami(h, rq);
		break;
	case R_PLAYBOOKS:
		handle_playbooks(h, rq);
		break;
	case R_METRICS:
		handle_metrics(rq);
		break;
	case R_HEALTHZ:
		handle_healthz(h, rq);
		break;
	case R_READYZ:
		handle_readyz(h, rq);
		break;
	case R_UI:
		handle_ui(rq);
		break;
	case R_UI_ROOT:
		/* the console lives under /ui/: a link without the slash still finds it */
		answer(rq, MHD_HTTP_MOVED_PERMANENTLY, "text/plain; charset=utf-8", strdup(""), 0,
		       MHD_HTTP_HEADER_LOCATION, "/ui/");
		break;
	case R_OTHER:
		answer(rq, 0, NULL, NULL, 0, NULL, NULL); /* unreachable: hang up */
		break;
	}
	return 1;
}

/* ---- worker pool and wait list ---- */

/* The answer is in rq->ans: let MHD call us again to queue it. */
static void finish(struct request *rq)
{
	MHD_resume_connection(rq->c);
}

static void *worker_main(void *arg)
{
	struct http *h = arg;
	struct request *rq;

	for (;;) {
		pthread_mutex_lock(&h->work_lock);
		while (!h->work_head && !h->work_closed)
			pthread_cond_wait(&h->work_cond, &h->work_lock);
		rq = h->work_head;
		if (rq) {
			h->work_head = rq->next;
			if (!h->work_head)
				h->work_tail = NULL;
			rq->next = NULL;
		}
		pthread_mutex_unlock(&h->work_lock);
		if (!rq)
			return NULL; /* closed and drained */
		if (dispatch(h, rq))
			finish(rq);
	}
}

/* Hand a suspended request to the pool: 0, or -1 when the pool is closed. */
static int work_push(struct http *h, struct request *rq)
{
	int rc = -1;

	pthread_mutex_lock(&h->work_lock);
	if (!h->work_closed) {
		rq->next = NULL;
		if (h->work_tail)
			h->work_tail->next = rq;
		else
			h->work_head = rq;
		h->work_tail = rq;
		pthread_cond_signal(&h->work_cond);
		rc = 0;
	}
	pthread_mutex_unlock(&h->work_lock);
	return rc;
}

/* Answer a parked ?wait= request: the job record when the job ended (r == 1),
 * the submit answer otherwise. */
static void wait_answer(struct http *h, struct request *rq, int r)
{
	cJSON *rec = NULL;

	if (r == 1 && engine_job_json(h->e, rq->wait_id, &rec) == RD_OK && rec) {
		cJSON_Delete(rq->wait_body);
		answer_json(rq, MHD_HTTP_OK, rec, NULL, NULL);
	} else {
		answer_json(rq, MHD_HTTP_ACCEPTED, rq->wait_body, NULL, NULL);
	}
	rq->wait_body = NULL;
	finish(rq);
}

/* Answer the parked ?wait= requests whose job ended or whose time ran out
 * (all of them once the list is closed). The sweeper calls it every
 * WAIT_POLL while any wait: cheap (a map look-up under the engine lock),
 * and a 300 s wait holds no thread. Returns 1 while some still wait. */
static int wait_check(struct http *h)
{
	struct request *done = NULL, **pp;
	double now = rd_mono();
	int closed, left;

	pthread_mutex_lock(&h->wait_lock);
	closed = h->wait_closed;
	for (pp = &h->waiting; *pp;) {
		struct request *rq = *pp;
		int r = closed ? 0 : engine_wait(h->e, rq->wait_id, 0);
		if (r != 0 || closed || now >= rq->wait_until) {
			*pp = rq->next;
			h->n_waiting--;
			rq->next = done;
			rq->wait = r; /* reuse: the outcome */
			done = rq;
		} else {
			pp = &rq->next;
		}
	}
	left = h->waiting != NULL;
	pthread_mutex_unlock(&h->wait_lock);
	while (done) {
		struct request *rq = done;
		done = rq->next;
		rq->next = NULL;
		wait_answer(h, rq, rq->wait);
	}
	return left;
}

/* ---- connection deadline and lingering close ---- */

static struct conn *conn_of(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci ? ci->socket_context : NULL;
}

static void conn_set_busy(struct http *h, struct MHD_Connection *c, int busy)
{
	struct conn *cn = conn_of(c);

	if (!cn)
		return;
	pthread_mutex_lock(&h->conn_lock);
	cn->busy = busy;
	if (!busy)
		cn->since = rd_mono();
	pthread_mutex_unlock(&h->conn_lock);
}

/* The request announced a body (Content-Length > 0 or chunked). */
static int has_body(struct MHD_Connection *c)
{
	const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	                                             MHD_HTTP_HEADER_CONTENT_LENGTH);
	const char *te = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
	                                             MHD_HTTP_HEADER_TRANSFER_ENCODING);

	return (cl && strcmp(cl, "0") != 0) || te;
}

/* Answered before its body was read: MHD closes this connection after the
 * answer; drain the rest of the body then (lingering close). */
static void conn_set_linger(struct http *h, struct MHD_Connection *c)
{
	struct conn *cn = conn_of(c);

	if (!cn)
		return;
	pthread_mutex_lock(&h->conn_lock);
	cn->linger = 1;
	pthread_mutex_unlock(&h->conn_lock);
}

static void linger_add(struct http *h, int fd);

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
	struct http *h = cls;
	struct conn *cn = *socket_context;
	const union MHD_ConnectionInfo *ci;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		cn = calloc(1, sizeof(*cn));
		if (!cn || !ci) {
			free(cn);
			return; /* untracked: only MHD's idle timeout applies */
		}
		cn->fd = ci->connect_fd;
		cn->since = rd_mono();
		pthread_mutex_lock(&h->conn_lock);
		cn->next = h->conns;
		if (h->conns)
			h->conns->prev = cn;
		h->conns = cn;
		pthread_mutex_unlock(&h->conn_lock);
		*socket_context = cn;
		return;
	}
	/* MHD_CONNECTION_NOTIFY_CLOSED: MHD closes the fd after this returns,
	 * so the sweep (which holds conn_lock) never touches a reused fd. */
	if (!cn)
		return;
	pthread_mutex_lock(&h->conn_lock);
	if (cn->linger && !cn->cut) {
		/* Our duplicate keeps the socket open after MHD closes its
		 * descriptor; the sweeper drains it, then closes. */
		int fd = fcntl(cn->fd, F_DUPFD_CLOEXEC, 0);
		if (fd >= 0) {
			pthread_mutex_unlock(&h->conn_lock);
			shutdown(fd, SHUT_WR);
			linger_add(h, fd);
			pthread_mutex_lock(&h->conn_lock);
		}
	}
	if (cn->prev)
		cn->prev->next = cn->next;
	else
		h->conns = cn->next;
	if (cn->next)
		cn->next->prev = cn->prev;
	pthread_mutex_unlock(&h->conn_lock);
	free(cn);
	*socket_context = NULL;
}

/* Keep reading (and dropping) what a client still sends after an early
 * answer, so that closing does not reset the connection before the client
 * read the answer. Takes fd. */
static void linger_add(struct http *h, int fd)
{
	int added = 0;

	pthread_mutex_lock(&h->conn_lock);
	for (size_t i = 0; i < LINGER_MAX && !h->conn_closed; i++)
		if (h->lingers[i].fd < 0) {
			h->lingers[i] = (struct lingering){ fd, rd_mono() + LINGER_SECONDS, LINGER_BYTES };
			h->n_lingers++;
			added = 1;
			pthread_cond_signal(&h->conn_cond);
			break;
		}
	pthread_mutex_unlock(&h->conn_lock);
	if (!added)
		close(fd);
}

/* Drain lingering sockets for up to wait seconds. conn_lock held on entry
 * and exit; dropped while polling. */
static void linger_drain(struct http *h, double wait)
{
	struct pollfd pfd[LINGER_MAX];
	size_t idx[LINGER_MAX], n = 0;
	static char sink[16384];
	double now = rd_mono();

	for (size_t i = 0; i < LINGER_MAX; i++) {
		struct lingering *l = &h->lingers[i];
		if (l->fd < 0)
			continue;
		if (now >= l->until || l->left == 0 || h->conn_closed) {
			close(l->fd);
			l->fd = -1;
			h->n_lingers--;
			continue;
		}
		pfd[n] = (struct pollfd){ .fd = l->fd, .events = POLLIN };
		idx[n++] = i;
	}
	if (n == 0)
		return;
	pthread_mutex_unlock(&h->conn_lock);
	if (poll(pfd, n, (int)(wait * 1000)) > 0) {
		for (size_t k = 0; k < n; k++) {
			struct lingering *l = &h->lingers[idx[k]];
			ssize_t got;
			if (!pfd[k].revents)
				continue;
			got = recv(l->fd, sink, sizeof(sink), MSG_DONTWAIT);
			if (got > 0)
				l->left = (size_t)got >= l->left ? 0 : l->left - (size_t)got;
			else if (got == 0 || (errno != EAGAIN && errno != EINTR))
				l->left = 0; /* the client closed: done */
		}
	}
	pthread_mutex_lock(&h->conn_lock);
}

/* Shut down connections whose request is not complete within the request
 * deadline (counted from accept, or from the end of the previous response
 * on a kept-alive connection). MHD sees the socket end and closes it. */
static void sweep(struct http *h)
{
	double now = rd_mono();
	unsigned long cut = 0;
	char n[24];

	for (struct conn *cn = h->conns; cn; cn = cn->next) {
		if (cn->busy || cn->cut || now - cn->since < h->request_timeout)
			continue;
		shutdown(cn->fd, SHUT_RDWR);
		cn->cut = 1;
		cut++;
	}
	if (cut) {
		metrics_add(M_CONN_DROPPED, "request_timeout", NULL, (double)cut);
		snprintf(n, sizeof(n), "%lu", cut);
		log_kv(LOG_WARN, NULL, "closed connections past the request deadline", "connections", n,
		       NULL);
	}
	if (h->limit_drops && now - h->last_limit_log >= 1.0) {
		snprintf(n, sizeof(n), "%lu", h->limit_drops);
		log_kv(LOG_WARN, NULL, "refused connections: connection limit reached", "connections", n,
		       NULL);
		h->limit_drops = 0;
		h->last_limit_log = now;
	}
}

static void *sweeper_main(void *arg)
{
	struct http *h = arg;
	struct timespec ts;
	double tick = h->request_timeout / 8;

	if (tick > 0.5)
		tick = 0.5;
	if (tick < 0.05)
		tick = 0.05;
	pthread_mutex_lock(&h->conn_lock);
	while (!h->conn_closed) {
		double t = tick;
		sweep(h);
		pthread_mutex_unlock(&h->conn_lock);
		if (wait_check(h) && t > WAIT_POLL)
			t = WAIT_POLL;
		pthread_mutex_lock(&h->conn_lock);
		if (h->n_lingers) {
			linger_drain(h, t);
			continue;
		}
		rd_timespec_in(CLOCK_MONOTONIC, t, &ts);
		pthread_cond_timedwait(&h->conn_cond, &h->conn_lock, &ts);
	}
	linger_drain(h, 0); /* closes them all */
	pthread_mutex_unlock(&h->conn_lock);
	return NULL;
}

/* ---- libmicrohttpd callbacks ---- */

/* The checks of on_headers; a rejection leaves its answer in rq->ans. */
#define REJECTED(...) (reject(__VA_ARGS__), MHD_YES)
static enum MHD_Result prepare(struct http *h, struct MHD_Connection *c, struct request *rq,
                               const char *url, const char *method)
{
	const struct route_info *ri;
	const char *v;
	char msg[MSG_MAX];
	unsigned long long clen = 0;
	int is_get, is_post;

	snprintf(rq->method, sizeof(rq->method), "%s", method);
	client_ip(c, rq->ip, sizeof(rq->ip));
	snprintf(rq->url, sizeof(rq->url), "%s", url);
	match_route(url, rq);
	ri = &routes[rq->route];
	if (rq->route == R_OTHER)
		return REJECTED(rq, MHD_HTTP_NOT_FOUND, "not_found", NULL, NULL, NULL,
		              "no such endpoint");
	/* Auth before anything that depends on the request (method, body):
	 * an unauthenticated client learns nothing else. */
	authenticate(h, c, rq);
	switch (authorize(ri->need, rq->who_role)) {
	case AUTH_PASS:
		break;
	case AUTH_UNAUTHORIZED:
		if (ri->need != ROLE_NONE)
			metrics_add(M_AUTH_FAILURES, "unauthorized", NULL, 1);
		return REJECTED(rq, MHD_HTTP_UNAUTHORIZED, "unauthorized", "unauthorized",
		              MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"recoveryd\"",
		              "a valid bearer token is required");
	case AUTH_FORBIDDEN:
		metrics_add(M_AUTH_FAILURES, "forbidden", NULL, 1);
		return REJECTED(rq, MHD_HTTP_FORBIDDEN, "forbidden", "forbidden", NULL, NULL,
		              "%s has role %s; %s %s needs %s%s", rq->who_name, role_name(rq->who_role),
		              ri->post ? "POST" : "GET", ri->tmpl, role_name(ri->need),
		              ri->need == ROLE_ALERTMANAGER ? ", operator or admin" : " or above");
	}
	is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
	is_post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
	if (ri->post ? !is_post : !is_get)
		return REJECTED(rq, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed", NULL,
		              MHD_HTTP_HEADER_ALLOW, ri->allow, "%s is not allowed here; use %s",
		              rq->method, ri->allow);
	if (rq->bad_arg) {
		if (rq->route == R_TRIGGER || rq->route == R_PB_PAUSE || rq->route == R_PB_RESUME)
			return REJECTED(rq, MHD_HTTP_NOT_FOUND, "unknown_playbook", NULL, NULL,
			              NULL, "no such playbook");
		return REJECTED(rq, MHD_HTTP_NOT_FOUND, "not_found", NULL, NULL, NULL,
		              "no such job");
	}
	if (rq->route == R_JOBS && jobs_query(c, rq, msg, sizeof(msg)) < 0)
		return REJECTED(rq, MHD_HTTP_BAD_REQUEST, "invalid_request", NULL, NULL, NULL, "%s",
		                msg);
	if (rq->route == R_AUDIT && audit_query(c, rq, msg, sizeof(msg)) < 0)
		return REJECTED(rq, MHD_HTTP_BAD_REQUEST, "invalid_request", NULL, NULL, NULL, "%s",
		                msg);
	v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (v) {
		char *end;
		errno = 0;
		clen = strtoull(v, &end, 10);
		if (errno || *end)
			clen = 0; /* MHD has validated it; a chunked body is counted later */
	}
	if (clen > h->body_max)
		return REJECTED(rq, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
		              "payload_too_large", NULL, NULL,
		              "request body of %llu bytes exceeds %zu bytes", clen, h->body_max);
	if (ri->body == BODY_NONE)
		return MHD_YES;
	if (ri->body == BODY_OPTIONAL) {
		/* Actions work while draining (a cancel must); a body is optional. */
		v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
		if (has_body(c) && !is_json_type(v))
			return REJECTED(rq, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
			              "unsupported_media_type", NULL, NULL,
			              "Content-Type must be application/json");
		goto take;
	}
	/* New work while draining: 503 is what Alertmanager retries, and the
	 * body is not worth reading. */
	if (engine_draining(h->e))
		return REJECTED(rq, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable", "draining",
		              MHD_HTTP_HEADER_RETRY_AFTER, DRAIN_RETRY_AFTER,
		              "shutting down; retry against another replica");
	v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
	if (!is_json_type(v))
		return REJECTED(rq, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
		              "unsupported_media_type", NULL, NULL,
		              "Content-Type must be application/json");
	if (rq->route == R_TRIGGER && trigger_query(c, rq, msg, sizeof(msg)) < 0)
		return REJECTED(rq, MHD_HTTP_BAD_REQUEST, "invalid_request", NULL, NULL, NULL, "%s",
		              msg);
	if (rq->force && !auth_role_admits(rq->who_role, ROLE_ADMIN)) {
		metrics_add(M_AUTH_FAILURES, "forbidden", NULL, 1);
		return REJECTED(rq, MHD_HTTP_FORBIDDEN, "forbidden", "forbidden", NULL, NULL,
		              "%s has role %s; force=1 needs admin", rq->who_name, role_name(rq->who_role));
	}
	if (rq->route == R_TRIGGER) {
		struct actor who;
		request_actor(h, rq, &who);
		if (!actor_may_playbook(&who, rq->arg)) {
			metrics_add(M_AUTH_FAILURES, "forbidden", NULL, 1);
			return REJECTED(rq, MHD_HTTP_FORBIDDEN, "forbidden", "forbidden", NULL, NULL,
			              "%s may not act on playbook %s", rq->who_name, rq->arg);
		}
	}
take:
	if (clen > 0) {
		/* Known length within the cap: one allocation. */
		rq->body = malloc((size_t)clen);
		if (!rq->body)
			return MHD_NO;
		rq->cap = (size_t)clen;
	}
	return MHD_YES;
}
#undef REJECTED

/* First callback: only headers are known. Returns MHD_YES either with a
 * response queued (rejected) or to go on reading the body. */
static enum MHD_Result on_headers(struct http *h, struct MHD_Connection *c, struct request *rq,
                                  const char *url, const char *method)
{
	enum MHD_Result ret = prepare(h, c, rq, url, method);

	if (rq->ans.ready) {
		/* Answered before the body was read: what the client still sends
		 * is drained on close (lingering), so it can read the answer. */
		conn_set_busy(h, c, 1);
		if (has_body(c))
			conn_set_linger(h, c);
		return answer_queue(c, rq);
	}
	return ret;
}

/* Take n more body bytes: 0, or -1 to hang up (out of memory, endless
 * body). */
static int take_body(struct http *h, struct request *rq, const char *data, size_t n)
{
	size_t ncap;
	char *nb;

	if (rq->too_large) {
		rq->discarded += n;
		return rq->discarded <= DISCARD_MAX ? 0 : -1;
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
		return 0;
	}
	if (routes[rq->route].body == BODY_NONE) {
		rq->len += n;
		return 0;
	}
	if (n > rq->cap - rq->len) {
		ncap = rq->cap ? rq->cap : 4096;
		while (ncap - rq->len < n)
			ncap *= 2;
		if (ncap > h->body_max)
			ncap = h->body_max;
		nb = realloc(rq->body, ncap);
		if (!nb)
			return -1;
		rq->body = nb;
		rq->cap = ncap;
	}
	memcpy(rq->body + rq->len, data, n);
	rq->len += n;
	return 0;
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
		rq->c = c;
		*req_cls = rq;
		return on_headers(h, c, rq, url, method);
	}
	if (*upload_data_size > 0) {
		n = *upload_data_size;
		*upload_data_size = 0;
		if (rq->answered)
			return MHD_YES;
		if (take_body(h, rq, upload_data, n) < 0)
			return MHD_NO;
		return MHD_YES;
	}
	if (rq->answered)
		return MHD_YES;
	if (rq->ans.ready) /* back from a worker or the wait list */
		return answer_queue(c, rq);
	/* The request is complete: its deadline no longer applies. */
	conn_set_busy(h, c, 1);
	int submit = rq->route == R_WEBHOOK || rq->route == R_TRIGGER;
	if (rq->too_large || (!submit && !blocking_route(rq->route))) {
		dispatch(h, rq); /* quick: never parks */
		return answer_queue(c, rq);
	}
	if (atomic_load(&h->stopping)) {
		answer_error(rq, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
		             "shutting down; retry against another replica",
		             MHD_HTTP_HEADER_RETRY_AFTER, DRAIN_RETRY_AFTER);
		return answer_queue(c, rq);
	}
	MHD_suspend_connection(c);
	if (submit) {
		submit_start(h, rq);
		return MHD_YES;
	}
	if (work_push(h, rq) < 0) {
		/* The pool closed meanwhile: answer on the next callback. */
		answer_error(rq, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
		             "shutting down; retry against another replica",
		             MHD_HTTP_HEADER_RETRY_AFTER, DRAIN_RETRY_AFTER);
		MHD_resume_connection(c);
	}
	return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct http *h = cls;
	struct request *rq = *req_cls;

	(void)toe;
	if (!rq)
		return;
	/* A kept-alive connection's next request is timed from here. */
	conn_set_busy(h, c, 0);
	free(rq->body);
	free(rq->ans.buf);
	free(rq->ans.link);
	free(rq->q_alertname);
	cJSON_Delete(rq->wait_body);
	free(rq);
	*req_cls = NULL;
}

/* libmicrohttpd's own complaints go to the structured log. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[MSG_MAX];
	size_t n;

	struct http *h = cls;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	/* A flood of refused connections is counted, and logged by the sweeper
	 * at most once a second. */
	if (strstr(msg, "reached connection limit")) {
		metrics_add(M_CONN_DROPPED, "conn_limit", NULL, 1);
		pthread_mutex_lock(&h->conn_lock);
		h->limit_drops++;
		pthread_mutex_unlock(&h->conn_lock);
		return;
	}
	log_kv(LOG_WARN, NULL, "libmicrohttpd", "detail", msg, NULL);
}

/* ---- public ---- */

/* "ADDR:PORT" with an IPv4 ADDR, "localhost" or nothing (all addresses):
 * 0, or -1 with err filled. */
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
	if (parse_long(colon + 1, 0, 65535, &port) < 0 || strlen(colon + 1) > 5)
		goto bad;
	sa->sin_port = htons((uint16_t)port);
	if (!host[0])
		sa->sin_addr.s_addr = htonl(INADDR_ANY);
	else if (strcmp(host, "localhost") == 0)
		sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
		goto bad;
	return 0;
bad:
	snprintf(err, errlen, "invalid listen address \"%.64s\": expected IPv4 ADDR:PORT, e.g. 127.0.0.1:9095 or :9095",
	         s ? s : "");
	return -1;
}

/* Raise the soft open-file limit to the hard one and return how many
 * connections fit next to FD_RESERVE other descriptors. */
static unsigned fd_room(unsigned long *nofile)
{
	struct rlimit rl;
	rlim_t soft;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		*nofile = 0;
		return 0;
	}
	if (rl.rlim_cur != rl.rlim_max) {
		struct rlimit want = rl;
		want.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &want) == 0)
			rl = want;
	}
	soft = rl.rlim_cur;
	if (soft == RLIM_INFINITY || soft > 1u << 30)
		soft = 1u << 30;
	*nofile = (unsigned long)soft;
	/* Small limits keep a quarter for the rest of the process. */
	if (soft < 4 * FD_RESERVE)
		return (unsigned)(soft - soft / 4);
	return (unsigned)(soft - FD_RESERVE);
}

static void threads_stop(struct http *h)
{
	/* Parked waits are answered at once, queued work is still done (a
	 * draining engine answers quickly), then the threads end. */
	pthread_mutex_lock(&h->wait_lock);
	h->wait_closed = 1;
	pthread_mutex_unlock(&h->wait_lock);
	pthread_mutex_lock(&h->work_lock);
	h->work_closed = 1;
	pthread_cond_broadcast(&h->work_cond);
	pthread_mutex_unlock(&h->work_lock);
	/* Submits in the journal's hands are answered before the daemon goes. */
	pthread_mutex_lock(&h->work_lock);
	while (h->submits_out)
		pthread_cond_wait(&h->work_cond, &h->work_lock);
	pthread_mutex_unlock(&h->work_lock);
	for (int i = 0; i < h->n_workers; i++)
		pthread_join(h->workers[i], NULL);
	h->n_workers = 0;
	wait_check(h); /* closed: answers every parked wait */
}

static void sweeper_stop(struct http *h)
{
	pthread_mutex_lock(&h->conn_lock);
	h->conn_closed = 1;
	pthread_cond_broadcast(&h->conn_cond);
	pthread_mutex_unlock(&h->conn_lock);
	if (h->has_sweeper)
		pthread_join(h->sweeper, NULL);
	h->has_sweeper = 0;
}

/* Free h and what it owns; the daemon and threads are stopped. */
static void http_free(struct http *h)
{
	pthread_mutex_destroy(&h->lock);
	pthread_mutex_destroy(&h->work_lock);
	pthread_cond_destroy(&h->work_cond);
	pthread_mutex_destroy(&h->wait_lock);
	pthread_mutex_destroy(&h->conn_lock);
	pthread_cond_destroy(&h->conn_cond);
	auth_free(h->auth);
	free(h);
}

enum rd_status http_start(const struct http_config *cfg, struct engine *e, struct http **out,
                          unsigned *port, char *err, size_t errlen)
{
	struct http *h = NULL;
	struct sockaddr_in sa;
	const union MHD_DaemonInfo *di;
	enum rd_status st = RD_ERR;
	unsigned limit, room;
	unsigned long nofile = 0;
	char a[24], b[24], c[24];
	pthread_condattr_t ca;

	*out = NULL;
	if (parse_listen(cfg->listen, &sa, err, errlen) < 0)
		goto out;
	if (auth_count(cfg->auth) == 0 && !cfg->insecure_no_auth) {
		snprintf(err, errlen,
		         "no principal configured; give --tokens-file (or the webhook and operator token "
		         "files), or --insecure-no-auth");
		auth_free(cfg->auth);
		goto out;
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		auth_free(cfg->auth);
		snprintf(err, errlen, "out of memory");
		st = RD_NOMEM;
		goto out;
	}
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_mutex_init(&h->lock, NULL);
	pthread_mutex_init(&h->work_lock, NULL);
	pthread_cond_init(&h->work_cond, &ca);
	pthread_mutex_init(&h->wait_lock, NULL);
	pthread_mutex_init(&h->conn_lock, NULL);
	pthread_cond_init(&h->conn_cond, &ca);
	pthread_condattr_destroy(&ca);
	for (size_t i = 0; i < LINGER_MAX; i++)
		h->lingers[i].fd = -1;
	h->e = e;
	h->body_max = cfg->body_max ? cfg->body_max : HTTP_BODY_MAX_DEFAULT;
	h->request_timeout = cfg->request_timeout > 0 ? cfg->request_timeout : HTTP_REQUEST_TIMEOUT_DEFAULT;
	h->insecure = cfg->insecure_no_auth;
	atomic_init(&h->stopping, 0);
	h->auth = cfg->auth;
	/* Each connection needs a descriptor: fit the limit to what we have. */
	limit = cfg->conn_limit ? cfg->conn_limit : HTTP_CONN_LIMIT_DEFAULT;
	room = fd_room(&nofile);
	snprintf(b, sizeof(b), "%u", limit);
	snprintf(c, sizeof(c), "%lu", nofile);
	if (room && limit > room) {
		limit = room;
		snprintf(a, sizeof(a), "%u", limit);
		log_kv(LOG_WARN, NULL, "connection limit lowered to fit the open-file limit",
		       "conn_limit", a, "requested", b, "nofile", c, NULL);
	} else {
		log_kv(LOG_INFO, NULL, "http connection limit", "conn_limit", b, "nofile", c, NULL);
	}
	for (int i = 0; i < WORKERS; i++) {
		if (pthread_create(&h->workers[i], NULL, worker_main, h) != 0)
			break;
		h->n_workers++;
	}
	if (h->n_workers == 0) {
		snprintf(err, errlen, "cannot start the HTTP worker threads");
		goto out;
	}
	if (pthread_create(&h->sweeper, NULL, sweeper_main, h) != 0) {
		snprintf(err, errlen, "cannot start the HTTP connection sweeper");
		goto out;
	}
	h->has_sweeper = 1;
	/* Event-driven (epoll), one internal thread: idle connections cost
	 * their memory pool only; a submit waits suspended for its commit, and
	 * journal reads are suspended to the workers. */
	errno = 0;
	h->d = MHD_start_daemon(
		MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, NULL,
		NULL, on_request, h,
		/* The logger first, or MHD prints its early messages itself. */
		MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
		MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)&sa,
		MHD_OPTION_CONNECTION_LIMIT, limit,
		MHD_OPTION_PER_IP_CONNECTION_LIMIT, cfg->per_ip_limit,
		MHD_OPTION_CONNECTION_TIMEOUT,
		cfg->conn_timeout ? cfg->conn_timeout : HTTP_CONN_TIMEOUT_DEFAULT,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY,
		MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
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
		threads_stop(h);
		sweeper_stop(h);
		http_free(h);
	}
	return st;
}

void http_set_auth(struct http *h, struct auth *auth)
{
	struct auth *old;

	if (!h) {
		auth_free(auth);
		return;
	}
	pthread_mutex_lock(&h->lock);
	old = h->auth;
	h->auth = auth;
	pthread_mutex_unlock(&h->lock);
	auth_free(old);
}

void http_stop(struct http *h)
{
	if (!h)
		return;
	atomic_store(&h->stopping, 1);
	/* Every suspended connection is resumed before the daemon stops. */
	threads_stop(h);
	MHD_stop_daemon(h->d);
	sweeper_stop(h);
	http_free(h);
}

/* http.c over loopback with libcurl, against a fake engine defined here
 * (scripted answers, recorded calls). alert, metrics, log and common are
 * the real modules. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "recoveryd/engine.h"
#include "recoveryd/auth.h"
#include "recoveryd/http.h"
#include "recoveryd/log.h"
#include "recoveryd/metrics.h"
#include "recoveryd/ui.h"

#define WH_TOKEN "wh-secret-token"
#define OP_TOKEN "op-secret-token"
#define BODY_MAX 1024

static const char v4_payload[] =
	"{\"receiver\":\"recovery\",\"status\":\"firing\",\"alerts\":[{\"status\":\"firing\","
	"\"labels\":{\"alertname\":\"SettingsSyncJobFailure\",\"job\":\"settings-sync-job\"},"
	"\"annotations\":{\"summary\":\"sync failed\"},\"startsAt\":\"2026-11-29T10:45:43.885Z\","
	"\"endsAt\":\"0001-01-01T00:00:00Z\",\"generatorURL\":\"http://prom/graph\","
	"\"fingerprint\":\"38b819126bb9adce\"}],\"groupLabels\":{},\"commonLabels\":{},"
	"\"commonAnnotations\":{},\"externalURL\":\"http://am\",\"version\":\"4\","
	"\"groupKey\":\"{}:{alertname=\\\"SettingsSyncJobFailure\\\"}\",\"truncatedAlerts\":0}\n";

static const char submit_queued[] =
	"{\"jobs\":[{\"id\":\"job-1\",\"playbook\":\"pb\",\"key\":\"pb/38b819126bb9adce\","
	"\"state\":\"queued\"}],\"unmatched\":0}";

/* ---- fake engine ---- */

struct engine {
	int unused;
};

static struct fake {
	pthread_mutex_t lock;
	int draining;
	int ready;
	/* engine_submit */
	enum engine_result submit_result;
	int submit_calls, submit_dry_run;
	size_t submit_n_alerts;
	int submit_manual;
	int submit_force;
	char submit_who[80];
	char submit_playbook[64]; /* "" for NULL */
	char submit_body[512];    /* the body of ENGINE_ACCEPTED and ENGINE_CANCEL_REQUESTED */
	char submit_message[256]; /* the message of the other results */
	/* engine_wait */
	int wait_result, wait_calls;
	char wait_id[80];
	/* engine_job_json */
	char job_json[256]; /* "" = no such job */
	char job_id[80];
	/* engine_jobs_json */
	int jobs_calls, jobs_limit;
	char jobs_state[32], jobs_playbook[64], jobs_alertname[64];
	double jobs_since, jobs_until;
	long long jobs_before, jobs_next; /* the cursor asked for, the one answered */
	/* engine_act */
	enum engine_result cancel_result;
	char cancel_id[80];
	int act_action;
	char act_reason[128], act_who[80];
	double act_until;
} fk = { .lock = PTHREAD_MUTEX_INITIALIZER };

static struct engine fake_engine;

static void fake_reset(void)
{
	pthread_mutex_lock(&fk.lock);
	fk.draining = 0;
	fk.ready = 1;
	fk.submit_result = ENGINE_ACCEPTED;
	fk.submit_calls = 0;
	fk.submit_dry_run = -1;
	fk.submit_n_alerts = 0;
	fk.submit_manual = -1;
	snprintf(fk.submit_playbook, sizeof(fk.submit_playbook), "<none>");
	snprintf(fk.submit_body, sizeof(fk.submit_body), "%s", submit_queued);
	snprintf(fk.submit_message, sizeof(fk.submit_message), "refused by the fake");
	fk.wait_result = 1;
	fk.wait_calls = 0;
	fk.wait_id[0] = '\0';
	snprintf(fk.job_json, sizeof(fk.job_json),
	         "{\"id\":\"job-1\",\"playbook\":\"pb\",\"state\":\"succeeded\"}");
	fk.job_id[0] = '\0';
	fk.jobs_calls = 0;
	fk.jobs_limit = -1;
	fk.jobs_state[0] = fk.jobs_playbook[0] = fk.jobs_alertname[0] = '\0';
	fk.jobs_since = fk.jobs_until = 0;
	fk.jobs_before = fk.jobs_next = 0;
	fk.cancel_result = ENGINE_CANCEL_REQUESTED;
	fk.cancel_id[0] = '\0';
	fk.act_action = -1;
	fk.act_reason[0] = fk.act_who[0] = '\0';
	fk.act_until = 0;
	fk.submit_force = -1;
	fk.submit_who[0] = '\0';
	pthread_mutex_unlock(&fk.lock);
}

/* Results that come with a body (the others with a message). */
static int has_body(enum engine_result r)
{
	return r == ENGINE_ACCEPTED || r == ENGINE_CANCEL_REQUESTED || r == ENGINE_DONE;
}

enum engine_result engine_submit(struct engine *e, const struct payload *p,
                                 const struct engine_submit_opts *o, struct engine_reply *r)
{
	enum engine_result res;
	const char *playbook = o->playbook;

	(void)e;
	pthread_mutex_lock(&fk.lock);
	fk.submit_calls++;
	fk.submit_dry_run = o->dry_run;
	fk.submit_force = o->force;
	snprintf(fk.submit_who, sizeof(fk.submit_who), "%s", o->who ? o->who->name : "");
	fk.submit_n_alerts = p->n_alerts;
	fk.submit_manual = p->manual;
	snprintf(fk.submit_playbook, sizeof(fk.submit_playbook), "%s", playbook ? playbook : "");
	res = fk.submit_result;
	r->body = has_body(res) ? cJSON_Parse(fk.submit_body) : NULL;
	snprintf(r->message, sizeof(r->message), "%s", has_body(res) ? "" : fk.submit_message);
	pthread_mutex_unlock(&fk.lock);
	return res;
}

/* As the real one: a refusal at once, an acceptance from another thread
 * (the journal writer's) a moment later. */
struct fake_submit {
	engine_submit_fn *done;
	void *arg;
	enum engine_result res;
	struct engine_reply r;
};

static void *fake_writer(void *arg)
{
	struct fake_submit *fs = arg;

	usleep(1000);
	fs->done(fs->res, &fs->r, fs->arg);
	free(fs);
	return NULL;
}

void engine_submit_async(struct engine *e, const struct payload *p, const struct engine_submit_opts *o,
                         engine_submit_fn *done, void *arg)
{
	struct fake_submit *fs = calloc(1, sizeof(*fs));
	pthread_t t;

	assert_non_null(fs);
	fs->done = done;
	fs->arg = arg;
	fs->res = engine_submit(e, p, o, &fs->r);
	if (fs->res != ENGINE_ACCEPTED || pthread_create(&t, NULL, fake_writer, fs) != 0) {
		done(fs->res, &fs->r, arg);
		free(fs);
		return;
	}
	pthread_detach(t);
}

int engine_wait(struct engine *e, const char *id, double timeout)
{
	int r;

	(void)e;
	pthread_mutex_lock(&fk.lock);
	fk.wait_calls++;
	snprintf(fk.wait_id, sizeof(fk.wait_id), "%s", id);
	r = fk.wait_result;
	pthread_mutex_unlock(&fk.lock);
	if (r == 0) /* a real engine blocks until the timeout */
		usleep((useconds_t)(timeout * 1e6));
	return r;
}

enum rd_status engine_job_json(struct engine *e, const char *id, cJSON **out)
{
	(void)e;
	pthread_mutex_lock(&fk.lock);
	snprintf(fk.job_id, sizeof(fk.job_id), "%s", id);
	*out = fk.job_json[0] ? cJSON_Parse(fk.job_json) : NULL;
	pthread_mutex_unlock(&fk.lock);
	return RD_OK;
}

enum rd_status engine_jobs_page(struct engine *e, const struct jobs_query *q, cJSON **out,
                                long long *next)
{
	(void)e;
	pthread_mutex_lock(&fk.lock);
	fk.jobs_calls++;
	fk.jobs_limit = q->limit;
	snprintf(fk.jobs_state, sizeof(fk.jobs_state), "%s", q->state ? q->state : "");
	snprintf(fk.jobs_playbook, sizeof(fk.jobs_playbook), "%s", q->playbook ? q->playbook : "");
	snprintf(fk.jobs_alertname, sizeof(fk.jobs_alertname), "%s", q->alertname ? q->alertname : "");
	fk.jobs_since = q->since;
	fk.jobs_until = q->until;
	fk.jobs_before = q->before;
	*next = fk.jobs_next;
	pthread_mutex_unlock(&fk.lock);
	*out = cJSON_Parse("[{\"id\":\"job-1\",\"state\":\"running\"}]");
	return RD_OK;
}

enum engine_result engine_act(struct engine *e, const struct engine_act *a, struct engine_reply *r)
{
	enum engine_result res;
	const char *id = a->target ? a->target : "*";

	(void)e;
	pthread_mutex_lock(&fk.lock);
	snprintf(fk.cancel_id, sizeof(fk.cancel_id), "%s", id);
	fk.act_action = a->action;
	snprintf(fk.act_reason, sizeof(fk.act_reason), "%s", a->reason ? a->reason : "");
	snprintf(fk.act_who, sizeof(fk.act_who), "%s", a->who->name);
	fk.act_until = a->until;
	res = fk.cancel_result;
	r->body = NULL;
	r->message[0] = '\0';
	if (has_body(res)) {
		r->body = cJSON_CreateObject();
		cJSON_AddStringToObject(r->body, "id", id);
		cJSON_AddStringToObject(r->body, "state", "cancelled");
	} else {
		snprintf(r->message, sizeof(r->message), "%s", fk.submit_message);
	}
	pthread_mutex_unlock(&fk.lock);
	return res;
}

enum rd_status engine_audit_json(struct engine *e, const struct audit_query *q, cJSON **out)
{
	(void)e;
	*out = cJSON_CreateObject();
	cJSON_AddArrayToObject(*out, "entries");
	cJSON_AddStringToObject(*out, "principal", q->principal ? q->principal : "");
	cJSON_AddStringToObject(*out, "action", q->action ? q->action : "");
	cJSON_AddNumberToObject(*out, "since", q->since);
	cJSON_AddNumberToObject(*out, "before", (double)q->before);
	cJSON_AddNumberToObject(*out, "limit", q->limit);
	return RD_OK;
}

int engine_audit_action_known(const char *action)
{
	return strcmp(action, "cancel") == 0 || strcmp(action, "pause") == 0;
}

cJSON *engine_playbooks_json(struct engine *e)
{
	(void)e;
	return cJSON_Parse("[{\"name\":\"pb\",\"retries\":3}]");
}

int engine_ready(struct engine *e, char *why, size_t len)
{
	int r;

	(void)e;
	pthread_mutex_lock(&fk.lock);
	r = fk.ready;
	pthread_mutex_unlock(&fk.lock);
	if (!r)
		snprintf(why, len, "journal not writable");
	return r;
}

int engine_live(struct engine *e, char *why, size_t len)
{
	(void)e;
	(void)why;
	(void)len;
	return 1;
}

int engine_draining(struct engine *e)
{
	int r;

	(void)e;
	pthread_mutex_lock(&fk.lock);
	r = fk.draining;
	pthread_mutex_unlock(&fk.lock);
	return r;
}

/* Lifecycle: http.c never calls these; faked so the fake is the whole
 * interface. */
struct engine *engine_new(const struct engine_opts *o)
{
	(void)o;
	return &fake_engine;
}

enum rd_status engine_start(struct engine *e)
{
	(void)e;
	return RD_OK;
}

void engine_set_playbooks(struct engine *e, struct playbook_set *set)
{
	(void)e;
	(void)set;
}

void engine_drain(struct engine *e, double grace)
{
	(void)e;
	(void)grace;
	pthread_mutex_lock(&fk.lock);
	fk.draining = 1;
	pthread_mutex_unlock(&fk.lock);
}

void engine_free(struct engine *e)
{
	(void)e;
}

size_t engine_active(struct engine *e)
{
	(void)e;
	return 0;
}

/* ---- client side ---- */

struct resp {
	long status;
	char body[8192];
	size_t len;
	char ctype[128];
	char allow[64];
	char retry_after[16];
	char www_auth[128];
	char cache[64], csp[512], location[64], nosniff[32], frame[32], referrer[32]; /* /ui/ */
	char link[512];
	long connects;
	CURLcode rc;
};

struct req {
	const char *method;   /* "GET", "POST", ... */
	const char *path;     /* with query */
	const char *token;    /* NULL: no Authorization */
	const char *ctype;    /* NULL: no Content-Type for POST */
	const char *body;     /* NULL: none */
	long body_len;        /* -1: strlen(body) */
	size_t chunked;       /* > 0: send this many bytes chunked instead */
	size_t step;          /* chunk size; 0: 100 bytes */
	int expect;           /* add Expect: 100-continue */
};

static unsigned port;
static struct http *srv;

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
	struct resp *r = ud;
	size_t len = sz * n, room = sizeof(r->body) - 1 - r->len;

	if (len > room)
		len = room;
	memcpy(r->body + r->len, p, len);
	r->len += len;
	r->body[r->len] = '\0';
	return sz * n;
}

static void grab(const char *line, size_t n, const char *name, char *dst, size_t dlen)
{
	size_t k = strlen(name);

	if (n <= k || strncasecmp(line, name, k) != 0)
		return;
	line += k;
	n -= k;
	while (n > 0 && *line == ' ')
		line++, n--;
	while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n'))
		n--;
	if (n >= dlen)
		n = dlen - 1;
	memcpy(dst, line, n);
	dst[n] = '\0';
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
	struct resp *r = ud;
	size_t len = sz * n;

	grab(p, len, "Content-Type:", r->ctype, sizeof(r->ctype));
	grab(p, len, "Allow:", r->allow, sizeof(r->allow));
	grab(p, len, "Retry-After:", r->retry_after, sizeof(r->retry_after));
	grab(p, len, "WWW-Authenticate:", r->www_auth, sizeof(r->www_auth));
	grab(p, len, "Link:", r->link, sizeof(r->link));
	grab(p, len, "Cache-Control:", r->cache, sizeof(r->cache));
	grab(p, len, "Content-Security-Policy:", r->csp, sizeof(r->csp));
	grab(p, len, "Location:", r->location, sizeof(r->location));
	grab(p, len, "X-Content-Type-Options:", r->nosniff, sizeof(r->nosniff));
	grab(p, len, "X-Frame-Options:", r->frame, sizeof(r->frame));
	grab(p, len, "Referrer-Policy:", r->referrer, sizeof(r->referrer));
	return len;
}

struct chunk_src {
	size_t left;
	size_t step; /* bytes per chunk */
};

static size_t on_read(char *buf, size_t sz, size_t n, void *ud)
{
	struct chunk_src *s = ud;
	size_t len = sz * n;

	if (len > s->step)
		len = s->step;
	if (len > s->left)
		len = s->left;
	memset(buf, 'x', len);
	s->left -= len;
	return len;
}

/* Run one request on cu (kept for reuse) or a fresh handle. */
static void run(CURL *cu, const struct req *rq, struct resp *r)
{
	struct curl_slist *hdrs = NULL;
	struct chunk_src src = { rq->chunked, rq->step ? rq->step : 100 };
	char url[512], line[256];
	int own = !cu;

	memset(r, 0, sizeof(*r));
	if (own)
		cu = curl_easy_init();
	assert_non_null(cu);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, rq->path);
	curl_easy_setopt(cu, CURLOPT_URL, url);
	curl_easy_setopt(cu, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(cu, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(cu, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(cu, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(cu, CURLOPT_TIMEOUT, 20L);
	curl_easy_setopt(cu, CURLOPT_NOSIGNAL, 1L);
	if (rq->token) {
		snprintf(line, sizeof(line), "Authorization: Bearer %s", rq->token);
		hdrs = curl_slist_append(hdrs, line);
	}
	if (rq->ctype) {
		snprintf(line, sizeof(line), "Content-Type: %s", rq->ctype);
		hdrs = curl_slist_append(hdrs, line);
	}
	hdrs = curl_slist_append(hdrs, rq->expect ? "Expect: 100-continue" : "Expect:");
	if (rq->chunked) {
		hdrs = curl_slist_append(hdrs, "Transfer-Encoding: chunked");
		curl_easy_setopt(cu, CURLOPT_POST, 1L);
		curl_easy_setopt(cu, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(cu, CURLOPT_READDATA, &src);
	} else if (strcmp(rq->method, "POST") == 0) {
		const char *b = rq->body ? rq->body : "";
		curl_easy_setopt(cu, CURLOPT_POSTFIELDS, b);
		curl_easy_setopt(cu, CURLOPT_POSTFIELDSIZE,
		                 rq->body_len >= 0 ? rq->body_len : (long)strlen(b));
	} else if (strcmp(rq->method, "GET") == 0) {
		curl_easy_setopt(cu, CURLOPT_HTTPGET, 1L);
	} else {
		curl_easy_setopt(cu, CURLOPT_CUSTOMREQUEST, rq->method);
	}
	if (!rq->ctype && strcmp(rq->method, "POST") == 0 && !rq->chunked)
		hdrs = curl_slist_append(hdrs, "Content-Type:"); /* drop curl's form type */
	curl_easy_setopt(cu, CURLOPT_HTTPHEADER, hdrs);
	r->rc = curl_easy_perform(cu);
	curl_easy_getinfo(cu, CURLINFO_RESPONSE_CODE, &r->status);
	curl_easy_getinfo(cu, CURLINFO_NUM_CONNECTS, &r->connects);
	curl_easy_setopt(cu, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(cu, CURLOPT_CUSTOMREQUEST, NULL);
	curl_slist_free_all(hdrs);
	if (own)
		curl_easy_cleanup(cu);
}

static void get(const char *path, const char *token, struct resp *r)
{
	struct req q = { .method = "GET", .path = path, .token = token, .body_len = -1 };
	run(NULL, &q, r);
}

static void post(const char *path, const char *token, const char *body, struct resp *r)
{
	struct req q = { .method = "POST", .path = path, .token = token, .ctype = "application/json",
		         .body = body, .body_len = -1 };
	run(NULL, &q, r);
}

/* The "error" member of a JSON error body. */
static void assert_error(const struct resp *r, long status, const char *code)
{
	cJSON *o = cJSON_Parse(r->body);
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "message");

	if (r->status != status)
		fprintf(stderr, "want %ld got %ld: %s\n", status, r->status, r->body);
	assert_int_equal(r->status, status);
	assert_non_null(o);
	assert_true(cJSON_IsString(e));
	assert_string_equal(e->valuestring, code);
	assert_true(cJSON_IsString(m));
	assert_string_equal(r->ctype, "application/json");
	cJSON_Delete(o);
}

/* ---- fixtures ---- */

/* The legacy pair of principals, as main.c makes them from the two token
 * files; plus a viewer, an admin and an operator scoped to playbook pb. */
#define VIEW_TOKEN "view-secret-token"
#define ADMIN_TOKEN "admin-secret-token"
#define SCOPED_TOKEN "scoped-secret-token"
static struct auth *principals(const char *wh, const char *op)
{
	struct auth *a = auth_new();
	char path[] = "/tmp/test_http_tokensXXXXXX", line[256];
	unsigned char d[32];
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");
	const char *rows[][3] = {{"vera", "viewer", VIEW_TOKEN}, {"ada", "admin", ADMIN_TOKEN},
	                         {"sam", "operator", SCOPED_TOKEN}};
	char err[256];

	assert_non_null(f);
	for (size_t i = 0; i < 3; i++) {
		rd_sha256(rows[i][2], strlen(rows[i][2]), d);
		fprintf(f, "%s %s ", rows[i][0], rows[i][1]);
		for (int k = 0; k < 32; k++)
			fprintf(f, "%02x", d[k]);
		fprintf(f, "%s\n", i == 2 ? " pb" : "");
	}
	fclose(f);
	(void)line;
	assert_int_equal(auth_load_file(a, path, err, sizeof(err)), 0);
	unlink(path);
	assert_int_equal(auth_add_token(a, "alertmanager", ROLE_ALERTMANAGER, wh), 0);
	assert_int_equal(auth_add_token(a, "operator", ROLE_OPERATOR, op), 0);
	return a;
}

static int start_default(void **state)
{
	struct http_config cfg = {
		.listen = "127.0.0.1:0",
		.body_max = BODY_MAX,
		.auth = principals(WH_TOKEN, OP_TOKEN),
		.conn_limit = 64,
		.per_ip_limit = 32,
		.conn_timeout = 1,
	};
	char err[256];

	(void)state;
	fake_reset();
	metrics_reset();
	if (http_start(&cfg, &fake_engine, &srv, &port, err, sizeof(err)) != RD_OK) {
		fprintf(stderr, "http_start: %s\n", err);
		return -1;
	}
	return port ? 0 : -1;
}

static int stop_default(void **state)
{
	(void)state;
	http_stop(srv);
	srv = NULL;
	return 0;
}

/* ---- tests ---- */

static void test_open_endpoints(void **state)
{
	struct resp r;

	(void)state;
	get("/healthz", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.ctype, "application/json");
	assert_non_null(strstr(r.body, "\"status\":\"ok\""));

	get("/readyz", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "\"status\":\"ready\""));

	fk.ready = 0;
	get("/readyz", NULL, &r);
	assert_error(&r, 503, "unavailable");
	assert_non_null(strstr(r.body, "journal not writable"));
	assert_true(r.retry_after[0] != '\0');
	fk.ready = 1;

	get("/metrics", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.ctype, "text/plain; version=0.0.4; charset=utf-8");
	/* The two requests above were counted with their route template. */
	assert_non_null(strstr(r.body, "recoveryd_webhook_requests_total"));
	assert_true(metrics_get(M_WEBHOOK_REQUESTS, "/readyz", "503") >= 1);
	assert_true(metrics_get(M_WEBHOOK_REQUESTS, "/healthz", "200") >= 1);
}

static void test_auth(void **state)
{
	struct resp r;

	(void)state;
	/* No token. */
	post("/webhook", NULL, v4_payload, &r);
	assert_error(&r, 401, "unauthorized");
	assert_string_equal(r.www_auth, "Bearer realm=\"recoveryd\"");
	/* Wrong token, and a prefix of the right one. */
	post("/webhook", "nope", v4_payload, &r);
	assert_error(&r, 401, "unauthorized");
	post("/webhook", "wh-secret", v4_payload, &r);
	assert_error(&r, 401, "unauthorized");
	assert_int_equal(fk.submit_calls, 0);
	assert_true(metrics_get(M_REJECTED, "unauthorized", NULL) >= 3);
	assert_true(metrics_get(M_WEBHOOK_REQUESTS, "/webhook", "401") >= 3);

	/* The webhook token admits /webhook only; elsewhere it is known but
	 * not allowed: 403. */
	post("/webhook", WH_TOKEN, v4_payload, &r);
	assert_int_equal(r.status, 202);
	post("/trigger/pb", WH_TOKEN, v4_payload, &r);
	assert_error(&r, 403, "forbidden");
	get("/api/v1/jobs", WH_TOKEN, &r);
	assert_error(&r, 403, "forbidden");
	get("/api/v1/playbooks", WH_TOKEN, &r);
	assert_error(&r, 403, "forbidden");
	assert_true(metrics_get(M_REJECTED, "forbidden", NULL) >= 3);
	get("/api/v1/jobs", NULL, &r);
	assert_error(&r, 401, "unauthorized");

	/* The operator token admits everything. */
	post("/webhook", OP_TOKEN, v4_payload, &r);
	assert_int_equal(r.status, 202);
	post("/trigger/pb", OP_TOKEN, v4_payload, &r);
	assert_int_equal(r.status, 202);
	get("/api/v1/jobs", OP_TOKEN, &r);
	assert_int_equal(r.status, 200);
	get("/api/v1/jobs/job-1", OP_TOKEN, &r);
	assert_int_equal(r.status, 200);
	get("/api/v1/playbooks", OP_TOKEN, &r);
	assert_int_equal(r.status, 200);
	post("/api/v1/jobs/job-1/cancel", OP_TOKEN, NULL, &r);
	assert_int_equal(r.status, 200);

	/* A reload swaps the tokens. */
	http_set_auth(srv, principals("wh-new", "op-new"));
	get("/api/v1/jobs", OP_TOKEN, &r);
	assert_error(&r, 401, "unauthorized");
	get("/api/v1/jobs", "op-new", &r);
	assert_int_equal(r.status, 200);
	post("/webhook", "wh-new", v4_payload, &r);
	assert_int_equal(r.status, 202);
	http_set_auth(srv, principals(WH_TOKEN, OP_TOKEN));
}

static void test_routes(void **state)
{
	struct resp r;
	cJSON *o;

	(void)state;
	post("/webhook", WH_TOKEN, v4_payload, &r);
	assert_int_equal(r.status, 202);
	assert_string_equal(r.ctype, "application/json");
	o = cJSON_Parse(r.body);
	assert_non_null(o);
	assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "jobs"), 0)->child->valuestring,
	                    "job-1");
	cJSON_Delete(o);
	assert_int_equal(fk.submit_calls, 1);
	assert_string_equal(fk.submit_playbook, "");
	assert_int_equal(fk.submit_dry_run, 0);
	assert_int_equal(fk.submit_n_alerts, 1);

	/* /trigger: playbook from the path, dry_run from the query, manual form. */
	post("/trigger/settings-sync-recovery?dry_run=true", OP_TOKEN,
	     "{\"labels\":{\"alertname\":\"X\"},\"reason\":\"test\"}", &r);
	assert_int_equal(r.status, 202);
	assert_string_equal(fk.submit_playbook, "settings-sync-recovery");
	assert_int_equal(fk.submit_dry_run, 1);
	assert_int_equal(fk.submit_manual, 1);
	assert_int_equal(fk.wait_calls, 0);

	/* The manual form is for /trigger only. */
	post("/webhook", WH_TOKEN, "{\"labels\":{\"alertname\":\"X\"}}", &r);
	assert_error(&r, 400, "invalid_payload");

	/* Engine refusals become errors (404 unknown_playbook). */
	fk.submit_result = ENGINE_UNKNOWN_PLAYBOOK;
	snprintf(fk.submit_message, sizeof(fk.submit_message), "no playbook named 'nope' is loaded");
	post("/trigger/nope", OP_TOKEN, v4_payload, &r);
	assert_error(&r, 404, "unknown_playbook");
	assert_string_equal(r.body, "{\"error\":\"unknown_playbook\",\"message\":"
	                            "\"no playbook named 'nope' is loaded\"}\n");
	/* A name no playbook can have is refused without asking the engine. */
	fk.submit_calls = 0;
	post("/trigger/bad%20name", OP_TOKEN, v4_payload, &r);
	assert_error(&r, 404, "unknown_playbook");
	assert_int_equal(fk.submit_calls, 0);
	fake_reset();

	/* Engine 503 (queue full) with its Retry-After. */
	fk.submit_result = ENGINE_QUEUE_FULL;
	snprintf(fk.submit_message, sizeof(fk.submit_message), "the job queue is full");
	post("/webhook", WH_TOKEN, v4_payload, &r);
	assert_error(&r, 503, "unavailable");
	assert_string_equal(r.retry_after, "5");
	fake_reset();

	/* Jobs API. */
	get("/api/v1/jobs?state=running&playbook=pb&limit=10", OP_TOKEN, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(fk.jobs_limit, 10);
	assert_string_equal(fk.jobs_state, "running");
	assert_string_equal(fk.jobs_playbook, "pb");
	get("/api/v1/jobs", OP_TOKEN, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(fk.jobs_limit, 50);
	assert_string_equal(fk.jobs_state, "");
	get("/api/v1/jobs?limit=0", OP_TOKEN, &r);
	assert_error(&r, 400, "invalid_request");
	get("/api/v1/jobs?limit=1001", OP_TOKEN, &r);
	assert_error(&r, 400, "invalid_request");
	get("/api/v1/jobs?limit=abc", OP_TOKEN, &r);
	assert_error(&r, 400, "invalid_request");
	get("/api/v1/jobs?state=bogus", OP_TOKEN, &r);
	assert_error(&r, 400, "invalid_request");
	assert_non_null(strstr(r.body, "awaiting_approval"));
	/* No next page: no Link. */
	assert_string_equal(r.link, "");
	get("/api/v1/jobs?state=awaiting_approval", OP_TOKEN, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(fk.jobs_state, "awaiting_approval");
	assert_string_equal(r.link, "");

	/* History: time range, alertname, and the cursor of the next page in a
	 * Link header that repeats the filters, values percent-encoded. */
	fk.jobs_next = 42;
	get("/api/v1/jobs?alertname=Disk%20full%26more&since=2026-12-01T00:00:00Z&until=1796169600"
	    "&playbook=pb&limit=2&before=99", OP_TOKEN, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(fk.jobs_alertname, "Disk full&more");
	assert_true(fk.jobs_since == 1796083200.0);
	assert_true(fk.jobs_until == 1796169600.0);
	assert_int_equal(fk.jobs_before, 99);
	assert_string_equal(r.link, "</api/v1/jobs?limit=2&playbook=pb&alertname=Disk%20full%26more"
	                            "&since=1796083200.000&until=1796169600.000&before=42>; "
	                            "rel=\"next\"");
	fk.jobs_next = 0;
	get("/api/v1/jobs?since=yesterday", OP_TOKEN, &r);
	assert_error(&r, 400, "invalid_request");
	assert_non_null(strstr(r.body, "since must be"));
	get("/api/v1/jobs?before=-3", OP_TOKEN, &r);
	assert_error(&r, 400, "invalid_request");
	assert_non_null(strstr(r.body, "before must be"));

	get("/api/v1/jobs/job-1", OP_TOKEN, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(fk.job_id, "job-1");
	assert_non_null(strstr(r.body, "succeeded"));
	fk.job_json[0] = '\0';
	get("/api/v1/jobs/job-2", OP_TOKEN, &r);
	assert_error(&r, 404, "not_found");
	fake_reset();
	/* Malformed ids never reach the engine. */
	get("/api/v1/jobs/a.b", OP_TOKEN, &r);
	assert_error(&r, 404, "not_found");
	get("/api/v1/jobs/"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", /* 65 */
	    OP_TOKEN, &r);
	assert_error(&r, 404, "not_found");
	assert_string_equal(fk.job_id, "");

	post("/api/v1/jobs/job-9/cancel", OP_TOKEN, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(fk.cancel_id, "job-9");
	assert_non_null(strstr(r.body, "cancelled"));
	fk.cancel_result = ENGINE_CONFLICT;
	snprintf(fk.submit_message, sizeof(fk.submit_message), "job already ended (succeeded)");
	post("/api/v1/jobs/job-9/cancel", OP_TOKEN, NULL, &r);
	assert_error(&r, 409, "conflict");
	assert_string_equal(r.body,
	                    "{\"error\":\"conflict\",\"message\":\"job already ended (succeeded)\"}\n");

	get("/api/v1/playbooks", OP_TOKEN, &r);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "\"name\":\"pb\""));
	assert_true(metrics_get(M_WEBHOOK_REQUESTS, "/api/v1/jobs/{id}", "200") >= 1);
	assert_true(metrics_get(M_WEBHOOK_REQUESTS, "/api/v1/jobs/{id}/cancel", "409") >= 1);
	assert_true(metrics_get(M_WEBHOOK_REQUESTS, "/trigger", "202") >= 1);
}

/* docs/http-api.md, "Errors" and its 503 table: what each engine result
 * answers. Sized by ENGINE_RESULT_COUNT: a result added to engine.h and
 * not here fails the test (its status is 0). */
static const struct {
	long status;
	const char *error;       /* NULL: the engine's body is sent */
	const char *retry_after; /* "": no Retry-After */
} documented[ENGINE_RESULT_COUNT] = {
	[ENGINE_ACCEPTED] = { 202, NULL, "" },
	[ENGINE_CANCEL_REQUESTED] = { 200, NULL, "" },
	[ENGINE_DONE] = { 200, NULL, "" },
	[ENGINE_INVALID] = { 400, "invalid_request", "" },
	[ENGINE_FORBIDDEN] = { 403, "forbidden", "" },
	[ENGINE_UNKNOWN_PLAYBOOK] = { 404, "unknown_playbook", "" },
	[ENGINE_NOT_FOUND] = { 404, "not_found", "" },
	[ENGINE_CONFLICT] = { 409, "conflict", "" },
	[ENGINE_DRAINING] = { 503, "unavailable", "5" },
	[ENGINE_QUEUE_FULL] = { 503, "unavailable", "5" },
	[ENGINE_UNAVAILABLE] = { 503, "unavailable", "5" },
	[ENGINE_NOMEM] = { 503, "unavailable", "5" },
};

/* r is the answer to engine result i whose body (if any) was body. */
static void assert_engine_answer(const struct resp *r, int i, const char *body)
{
	char want[512];

	if (r->status != documented[i].status)
		fprintf(stderr, "engine result %d: want %ld got %ld: %s\n", i, documented[i].status,
		        r->status, r->body);
	assert_int_equal(r->status, documented[i].status);
	assert_string_equal(r->retry_after, documented[i].retry_after);
	assert_string_equal(r->ctype, "application/json");
	if (documented[i].error)
		snprintf(want, sizeof(want), "{\"error\":\"%s\",\"message\":\"refused: %d\"}\n",
		         documented[i].error, i);
	else
		snprintf(want, sizeof(want), "%s\n", body);
	assert_string_equal(r->body, want);
}

/* Every engine_result, from submit and from cancel, answers its documented
 * status, error body and Retry-After. */
static void test_engine_results(void **state)
{
	struct resp r;

	(void)state;
	for (int i = 0; i < ENGINE_RESULT_COUNT; i++) {
		assert_true(documented[i].status != 0);
		fake_reset();
		pthread_mutex_lock(&fk.lock);
		fk.submit_result = fk.cancel_result = (enum engine_result)i;
		snprintf(fk.submit_message, sizeof(fk.submit_message), "refused: %d", i);
		pthread_mutex_unlock(&fk.lock);
		post("/webhook", WH_TOKEN, v4_payload, &r);
		assert_int_equal(fk.submit_calls, 1);
		assert_engine_answer(&r, i, submit_queued);
		post("/trigger/pb", OP_TOKEN, v4_payload, &r);
		assert_int_equal(fk.submit_calls, 2);
		assert_engine_answer(&r, i, submit_queued);
		post("/api/v1/jobs/job-9/cancel", OP_TOKEN, NULL, &r);
		assert_string_equal(fk.cancel_id, "job-9");
		assert_engine_answer(&r, i, "{\"id\":\"job-9\",\"state\":\"cancelled\"}");
	}

	/* Not a result, or a success without its body: the engine gave no answer. */
	fake_reset();
	fk.submit_result = (enum engine_result)ENGINE_RESULT_COUNT;
	post("/webhook", WH_TOKEN, v4_payload, &r);
	assert_error(&r, 500, "internal");
	assert_string_equal(r.retry_after, "");
	fk.submit_result = ENGINE_ACCEPTED;
	fk.submit_body[0] = '\0'; /* cJSON_Parse fails: no body */
	post("/webhook", WH_TOKEN, v4_payload, &r);
	assert_error(&r, 500, "internal");
	assert_non_null(strstr(r.body, "the engine gave no answer"));
}

/* The web console's answer r is file name of ui/: its type, caching and
 * the headers that fence the console in. */
static void assert_console_file(const struct resp *r, const char *name, const char *ctype)
{
	const struct ui_asset *a = ui_find(name);

	assert_int_equal(r->status, 200);
	assert_string_equal(r->ctype, ctype);
	assert_string_equal(r->cache, strcmp(name, "index.html") == 0 ? "no-cache"
	                                                             : "public, max-age=31536000, immutable");
	assert_non_null(strstr(r->csp, "default-src 'self'"));
	assert_non_null(strstr(r->csp, "frame-ancestors 'none'"));
	assert_null(strstr(r->csp, "unsafe"));
	assert_string_equal(r->nosniff, "nosniff");
	assert_string_equal(r->frame, "DENY");
	assert_string_equal(r->referrer, "no-referrer");
	assert_string_equal(a->name, name);
	assert_int_equal(r->len, a->len < sizeof(r->body) - 1 ? a->len : sizeof(r->body) - 1);
	assert_memory_equal(r->body, a->data, r->len);
}

/* GET /ui/...: the console's files need no token; any other path under
 * /ui/ is its page, which routes in the browser (deep links). */
static void test_console(void **state)
{
	struct resp r;
	char want[64];

	(void)state;
	get("/ui/", NULL, &r);
	assert_console_file(&r, "index.html", "text/html; charset=utf-8");
	/* The page names its files by version: a new build is a new URL. */
	snprintf(want, sizeof(want), "/ui/app.js?v=%s", ui_version);
	assert_non_null(strstr(r.body, want));
	assert_null(strstr(r.body, "@UI_VERSION@"));
	get("/ui/jobs/0123456789abcdef0123456789abcdef", NULL, &r);
	assert_console_file(&r, "index.html", "text/html; charset=utf-8");
	get("/ui/playbooks", "a-wrong-token", &r); /* a token plays no part */
	assert_console_file(&r, "index.html", "text/html; charset=utf-8");
	get("/ui/app.js", NULL, &r);
	assert_console_file(&r, "app.js", "text/javascript; charset=utf-8");
	get("/ui/app.css?v=whatever", NULL, &r);
	assert_console_file(&r, "app.css", "text/css; charset=utf-8");
	get("/ui/favicon.svg", NULL, &r);
	assert_console_file(&r, "favicon.svg", "image/svg+xml");
	assert_true(metrics_get(M_WEBHOOK_REQUESTS, "/ui/", "200") >= 6);

	/* Without the slash: sent to the console. */
	get("/ui", NULL, &r);
	assert_int_equal(r.status, 301);
	assert_string_equal(r.location, "/ui/");
	post("/ui/", OP_TOKEN, "{}", &r);
	assert_error(&r, 405, "method_not_allowed");
	assert_string_equal(r.allow, "GET, HEAD");
	/* Only /ui and what is under /ui/. */
	get("/uix", NULL, &r);
	assert_error(&r, 404, "not_found");
	assert_string_equal(r.csp, "");
	/* The API's answers are not the console's. */
	get("/api/v1/jobs", OP_TOKEN, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.cache, "");
	assert_string_equal(r.csp, "");
}

static void test_not_found_and_method(void **state)
{
	struct resp r;
	struct req q = { .method = "DELETE", .path = "/webhook", .token = OP_TOKEN, .body_len = -1 };

	(void)state;
	get("/nope", OP_TOKEN, &r);
	assert_error(&r, 404, "not_found");
	get("/webhook/extra", OP_TOKEN, &r);
	assert_error(&r, 404, "not_found");
	get("/api/v1/jobs/x/y", OP_TOKEN, &r);
	assert_error(&r, 404, "not_found");
	assert_true(metrics_get(M_WEBHOOK_REQUESTS, "other", "404") >= 3);

	get("/webhook", OP_TOKEN, &r);
	assert_error(&r, 405, "method_not_allowed");
	assert_string_equal(r.allow, "POST");
	run(NULL, &q, &r);
	assert_error(&r, 405, "method_not_allowed");
	assert_string_equal(r.allow, "POST");
	post("/metrics", NULL, "{}", &r);
	assert_error(&r, 405, "method_not_allowed");
	assert_string_equal(r.allow, "GET, HEAD");
	get("/api/v1/jobs/job-1/cancel", OP_TOKEN, &r);
	assert_error(&r, 405, "method_not_allowed");
	assert_string_equal(r.allow, "POST");
	assert_int_equal(fk.submit_calls, 0);
}

static void test_media_type(void **state)
{
	struct resp r;
	struct req q = { .method = "POST", .path = "/webhook", .token = WH_TOKEN,
		         .ctype = "text/plain", .body = v4_payload, .body_len = -1 };

	(void)state;
	run(NULL, &q, &r);
	assert_error(&r, 415, "unsupported_media_type");
	q.ctype = NULL;
	run(NULL, &q, &r);
	assert_error(&r, 415, "unsupported_media_type");
	q.ctype = "application/jsonx";
	run(NULL, &q, &r);
	assert_error(&r, 415, "unsupported_media_type");
	assert_int_equal(fk.submit_calls, 0);
	assert_true(metrics_get(M_REJECTED, "unsupported_media_type", NULL) >= 3);

	q.ctype = "Application/JSON; charset=utf-8";
	run(NULL, &q, &r);
	assert_int_equal(r.status, 202);
	assert_int_equal(fk.submit_calls, 1);
}

static void test_too_large(void **state)
{
	char *big = malloc(4 * BODY_MAX + 1);
	struct resp r;
	struct req q = { .method = "POST", .path = "/webhook", .token = WH_TOKEN,
		         .ctype = "application/json", .body_len = -1 };

	(void)state;
	assert_non_null(big);
	memset(big, ' ', 4 * BODY_MAX);
	big[4 * BODY_MAX] = '\0';
	big[0] = '{';

	/* Content-Length over the cap: answered before the body is read. With
	 * Expect: 100-continue this is observable: curl gets 413 instead of
	 * 100 Continue and never uploads. */
	q.body = big;
	q.expect = 1;
	run(NULL, &q, &r);
	assert_error(&r, 413, "payload_too_large");
	/* Without Expect the client has already sent the body. */
	q.expect = 0;
	run(NULL, &q, &r);
	assert_error(&r, 413, "payload_too_large");

	/* Chunked: counted while it arrives. */
	q.body = NULL;
	q.chunked = 4 * BODY_MAX;
	run(NULL, &q, &r);
	assert_error(&r, 413, "payload_too_large");
	assert_int_equal(fk.submit_calls, 0);
	assert_true(metrics_get(M_REJECTED, "payload_too_large", NULL) >= 3);

	/* A chunked body that never ends is hung up on, not read forever. */
	q.chunked = (size_t)64 << 20;
	q.step = 64 << 10;
	run(NULL, &q, &r);
	assert_int_not_equal(r.rc, CURLE_OK);
	q.step = 0;

	/* A chunked body within the cap is read (and is not JSON). */
	q.chunked = BODY_MAX / 2;
	run(NULL, &q, &r);
	assert_error(&r, 400, "invalid_json");

	/* Exactly at the cap is fine. */
	big[BODY_MAX] = '\0';
	q.chunked = 0;
	q.body = big;
	run(NULL, &q, &r);
	assert_error(&r, 400, "invalid_json");
	free(big);
}

static void test_bad_body(void **state)
{
	struct resp r;

	(void)state;
	post("/webhook", WH_TOKEN, "", &r);
	assert_error(&r, 400, "invalid_json");
	post("/webhook", WH_TOKEN, "{\"version\":", &r);
	assert_error(&r, 400, "invalid_json");
	assert_true(metrics_get(M_REJECTED, "invalid_json", NULL) >= 2);

	post("/webhook", WH_TOKEN,
	     "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{\"status\":\"firing\","
	     "\"labels\":{\"job\":5}}]}",
	     &r);
	assert_error(&r, 400, "invalid_payload");
	assert_non_null(strstr(r.body, "alerts[0].labels"));
	assert_true(metrics_get(M_REJECTED, "invalid_payload", NULL) >= 1);
	assert_int_equal(fk.submit_calls, 0);

	/* Bad query values on /trigger. */
	post("/trigger/pb?wait=301", OP_TOKEN, v4_payload, &r);
	assert_error(&r, 400, "invalid_request");
	post("/trigger/pb?wait=-1", OP_TOKEN, v4_payload, &r);
	assert_error(&r, 400, "invalid_request");
	post("/trigger/pb?wait=soon", OP_TOKEN, v4_payload, &r);
	assert_error(&r, 400, "invalid_request");
	post("/trigger/pb?dry_run=maybe", OP_TOKEN, v4_payload, &r);
	assert_error(&r, 400, "invalid_request");
	assert_int_equal(fk.submit_calls, 0);
}

static void test_draining(void **state)
{
	struct resp r;

	(void)state;
	fk.draining = 1;
	post("/webhook", WH_TOKEN, v4_payload, &r);
	assert_error(&r, 503, "unavailable");
	assert_true(atoi(r.retry_after) > 0);
	/* Before parsing: even junk gets 503, which Alertmanager retries. */
	post("/trigger/pb", OP_TOKEN, "junk", &r);
	assert_error(&r, 503, "unavailable");
	assert_int_equal(fk.submit_calls, 0);
	assert_true(metrics_get(M_REJECTED, "draining", NULL) >= 2);
	/* Reads still work. */
	get("/api/v1/jobs", OP_TOKEN, &r);
	assert_int_equal(r.status, 200);
	fk.draining = 0;
}

static void test_trigger_wait(void **state)
{
	struct resp r;
	double t0;

	(void)state;
	post("/trigger/pb?wait=1", OP_TOKEN, v4_payload, &r);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "\"state\":\"succeeded\""));
	assert_string_equal(fk.wait_id, "job-1");
	assert_string_equal(fk.job_id, "job-1");

	/* Coalesced into an existing job: wait on that one. */
	snprintf(fk.submit_body, sizeof(fk.submit_body),
	         "{\"jobs\":[{\"id\":\"job-old\",\"playbook\":\"pb\",\"key\":\"k\","
	         "\"state\":\"coalesced\"}],\"unmatched\":0}");
	post("/trigger/pb?wait=2", OP_TOKEN, v4_payload, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(fk.wait_id, "job-old");

	/* Still running at the deadline: 202 with the submit answer. */
	fake_reset();
	fk.wait_result = 0;
	t0 = rd_mono();
	post("/trigger/pb?wait=1", OP_TOKEN, v4_payload, &r);
	assert_int_equal(r.status, 202);
	assert_non_null(strstr(r.body, "\"state\":\"queued\""));
	assert_true(rd_mono() - t0 >= 0.9);

	/* Cooldown: nothing to wait for. */
	fake_reset();
	snprintf(fk.submit_body, sizeof(fk.submit_body),
	         "{\"jobs\":[{\"id\":\"job-2\",\"playbook\":\"pb\",\"key\":\"k\","
	         "\"state\":\"cooldown\"}],\"unmatched\":0}");
	post("/trigger/pb?wait=5", OP_TOKEN, v4_payload, &r);
	assert_int_equal(r.status, 202);
	assert_int_equal(fk.wait_calls, 0);
	/* wait=0 does not wait. */
	fake_reset();
	post("/trigger/pb?wait=0", OP_TOKEN, v4_payload, &r);
	assert_int_equal(r.status, 202);
	assert_int_equal(fk.wait_calls, 0);
}

static void test_keepalive(void **state)
{
	CURL *cu = curl_easy_init();
	struct req q = { .method = "GET", .path = "/healthz", .body_len = -1 };
	struct req p = { .method = "POST", .path = "/webhook", .token = WH_TOKEN,
		         .ctype = "application/json", .body = v4_payload, .body_len = -1 };
	struct resp r;

	(void)state;
	assert_non_null(cu);
	run(cu, &q, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.connects, 1);
	run(cu, &q, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.connects, 0);
	run(cu, &p, &r);
	assert_int_equal(r.status, 202);
	assert_int_equal(r.connects, 0);
	/* A rejection that did not read the body must not break the next request. */
	p.ctype = "text/plain";
	run(cu, &p, &r);
	assert_int_equal(r.status, 415);
	q.path = "/metrics";
	run(cu, &q, &r);
	assert_int_equal(r.status, 200);
	curl_easy_cleanup(cu);
}

static void test_slow_client(void **state)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct timeval tv = { .tv_sec = 5 };
	struct resp r;
	char buf[64];
	double t0, took;
	ssize_t n;
	int fd;

	(void)state;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	t0 = rd_mono();
	/* Others are served while the idle connection hangs around. */
	get("/healthz", NULL, &r);
	assert_int_equal(r.status, 200);
	/* The server hangs up on the silent client after conn_timeout (1 s). */
	n = recv(fd, buf, sizeof(buf), 0);
	took = rd_mono() - t0;
	assert_true(n == 0 || (n < 0 && errno == ECONNRESET));
	assert_true(took >= 0.5 && took < 4.0);
	close(fd);

	/* A client that sends half a request line is cut off as well. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(send(fd, "POST /webhook HTTP/1.1\r\nHost: x\r\n", 33, MSG_NOSIGNAL), 33);
	t0 = rd_mono();
	get("/healthz", NULL, &r);
	assert_int_equal(r.status, 200);
	n = recv(fd, buf, sizeof(buf), 0);
	took = rd_mono() - t0;
	assert_true(n == 0 || (n < 0 && errno == ECONNRESET));
	assert_true(took < 4.0);
	close(fd);
}

static void *wait_client(void *arg)
{
	struct resp *r = arg;

	post("/trigger/pb?wait=300", OP_TOKEN, v4_payload, r);
	return NULL;
}

/* A request blocked in ?wait= neither stops others being served nor holds
 * up http_stop for its 300 s. */
static void test_stop_during_wait(void **state)
{
	static struct resp blocked;
	struct resp r;
	pthread_t t;
	double t0;
	int calls;

	assert_int_equal(start_default(state), 0);
	fk.wait_result = 0;
	assert_int_equal(pthread_create(&t, NULL, wait_client, &blocked), 0);
	for (int i = 0; i < 100; i++) {
		pthread_mutex_lock(&fk.lock);
		calls = fk.wait_calls;
		pthread_mutex_unlock(&fk.lock);
		if (calls > 0)
			break;
		usleep(20000);
	}
	assert_true(calls > 0);
	get("/healthz", NULL, &r);
	assert_int_equal(r.status, 200);
	t0 = rd_mono();
	stop_default(state);
	assert_true(rd_mono() - t0 < 3.0);
	pthread_join(t, NULL);
}

static void test_start_config(void **state)
{
	struct http_config cfg = { .listen = "127.0.0.1:0", .body_max = BODY_MAX, .conn_timeout = 1 };
	struct http *h = NULL;
	unsigned p = 0, saved = port;
	char err[256];
	struct resp r;

	(void)state;
	/* No token and no insecure_no_auth: refused. */
	assert_int_equal(http_start(&cfg, &fake_engine, &h, &p, err, sizeof(err)), RD_ERR);
	assert_null(h);
	assert_non_null(strstr(err, "principal"));
	/* An empty table counts as none. */
	cfg.auth = auth_new();
	assert_int_equal(http_start(&cfg, &fake_engine, &h, &p, err, sizeof(err)), RD_ERR);
	cfg.auth = NULL;

	/* Junk listen addresses. */
	cfg.insecure_no_auth = 1;
	const char *junk[] = { "nonsense", "127.0.0.1", "127.0.0.1:", "127.0.0.1:99999",
		               "1.2.3:80", "127.0.0.1:80x", "127.0.0.1:-1", ":+80", "[::1]:80" };
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		cfg.listen = junk[i];
		err[0] = '\0';
		assert_int_equal(http_start(&cfg, &fake_engine, &h, &p, err, sizeof(err)), RD_ERR);
		assert_null(h);
		assert_non_null(strstr(err, "listen"));
	}
	/* ":PORT" binds all addresses. */
	cfg.listen = ":0";
	assert_int_equal(http_start(&cfg, &fake_engine, &h, &p, err, sizeof(err)), RD_OK);
	assert_true(p > 0);
	http_stop(h);

	/* insecure_no_auth without tokens: everything open. */
	cfg.listen = "127.0.0.1:0";
	assert_int_equal(http_start(&cfg, &fake_engine, &h, &p, err, sizeof(err)), RD_OK);
	port = p;
	get("/api/v1/jobs", NULL, &r);
	assert_int_equal(r.status, 200);
	post("/webhook", NULL, v4_payload, &r);
	assert_int_equal(r.status, 202);
	/* The port in use: a clear error. */
	{
		char addr[32];
		struct http *h2 = NULL;
		snprintf(addr, sizeof(addr), "127.0.0.1:%u", p);
		cfg.listen = addr;
		assert_int_equal(http_start(&cfg, &fake_engine, &h2, &p, err, sizeof(err)), RD_ERR);
		assert_null(h2);
		assert_non_null(strstr(err, addr));
	}
	http_stop(h);
	http_stop(NULL);
	port = saved;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_endpoints, start_default, stop_default),
		cmocka_unit_test_setup_teardown(test_auth, start_default, stop_default),
		cmocka_unit_test_setup_teardown(test_routes, start_default, stop_default),
		cmocka_unit_test_setup_teardown(test_console, start_default, stop_default),
		cmocka_unit_test_setup_teardown(test_engine_results, start_default, stop_default),
		cmocka_unit_test_setup_teardown(test_not_found_and_method, start_default, stop_default),
		cmocka_unit_test_setup_teardown(test_media_type, start_default, stop_default),
		cmocka_unit_test_setup_teardown(test_too_large, start_default, stop_default),
		cmocka_unit_test_setup_teardown(test_bad_body, start_default, stop_default),
		cmocka_unit_test_setup_teardown(test_draining, start_default, stop_default),
		cmocka_unit_test_setup_teardown(test_trigger_wait, start_default, stop_default),
		cmocka_unit_test_setup_teardown(test_keepalive, start_default, stop_default),
		cmocka_unit_test_setup_teardown(test_slow_client, start_default, stop_default),
		cmocka_unit_test(test_stop_during_wait),
		cmocka_unit_test(test_start_config),
	};
	int rc;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	metrics_init();
	log_set_level(LOG_ERROR); /* rejections are logged at warn: keep the output readable */
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}

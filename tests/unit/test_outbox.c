/* Unit tests of src/outbox.c: deciding, journaling, delivering, retrying,
 * resolving (docs/escalation.md).
 *
 * The outbox runs against the recording fakes of tests/unit/fakes/: the
 * store applies batches in memory (and can hold them back, or fail them),
 * the runner keeps the transfers and timers the outbox starts until a test
 * completes or fires them. A completed transfer is performed for real
 * (curl_easy_perform) against a small HTTP server this file runs on
 * 127.0.0.1, which answers what each test scripts (202, 400, 429 with
 * Retry-After, 500) and keeps every request it received, so the wire is
 * checked as PagerDuty and Slack would see it. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "fake_runner.h"
#include "fake_store.h"
#include "recoveryd/common.h"
#include "recoveryd/escalate.h"
#include "recoveryd/job.h"
#include "recoveryd/log.h"
#include "recoveryd/metrics.h"
#include "recoveryd/outbox.h"
#include "recoveryd/playbook.h"

#define PD_KEY "0123456789abcdef0123456789abcdef"
#define SLACK_SECRET "T0000/B0000/XXXXslacksecretXXXX"
#define J1 "11111111111111111111111111111111"
#define J2 "22222222222222222222222222222222"
#define J3 "33333333333333333333333333333333"
#define KEY1 "disk-cleanup/0123456789abcdef"
#define KEY2 "disk-cleanup/fedcba9876543210"
#define ALERT_JSON                                                                                 \
	"{\"status\":\"firing\",\"labels\":{\"alertname\":\"DiskFull\",\"instance\":\"db-1\","  \
	"\"severity\":\"critical\"},\"annotations\":{\"runbook_url\":\"https://runbooks.example/disk\"}," \
	"\"fingerprint\":\"0123456789abcdef\"}"

/* ---------- a scripted HTTP server on 127.0.0.1 ---------- */

#define MAX_REQS 64
#define MAX_REPLIES 16

struct reply {
	int status;
	char headers[128]; /* extra header lines, each ending in \r\n */
	char body[256];
};

struct request {
	char path[512];
	char *body;
};

struct srv {
	int fd, port;
	pthread_t th;
	atomic_int stop;
	pthread_mutex_t mu;
	struct reply replies[MAX_REPLIES]; /* scripted answers, in order */
	int n_replies, next_reply;
	struct request reqs[MAX_REQS];
	int n_reqs;
};

/* Answer the next request with status, extra headers and body (otherwise:
 * Slack's 200 "ok", PagerDuty's 202). */
static void srv_script(struct srv *s, int status, const char *headers, const char *body)
{
	pthread_mutex_lock(&s->mu);
	assert_true(s->n_replies < MAX_REPLIES);
	struct reply *r = &s->replies[s->n_replies++];
	r->status = status;
	snprintf(r->headers, sizeof(r->headers), "%s", headers ? headers : "");
	snprintf(r->body, sizeof(r->body), "%s", body ? body : "");
	pthread_mutex_unlock(&s->mu);
}

static int srv_requests(struct srv *s)
{
	int n;
	pthread_mutex_lock(&s->mu);
	n = s->n_reqs;
	pthread_mutex_unlock(&s->mu);
	return n;
}

/* Request i as received (path and body; the body parsed as JSON). */
static cJSON *srv_body(struct srv *s, int i, char *path, size_t pathlen)
{
	cJSON *b;
	pthread_mutex_lock(&s->mu);
	assert_true(i < s->n_reqs);
	snprintf(path, pathlen, "%s", s->reqs[i].path);
	b = cJSON_Parse(s->reqs[i].body ? s->reqs[i].body : "");
	pthread_mutex_unlock(&s->mu);
	return b;
}

static void srv_serve(struct srv *s, int c)
{
	char buf[65536];
	size_t got = 0;
	char *eoh = NULL;
	long clen = 0;
	struct timeval tv = { .tv_sec = 5 };

	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (got < sizeof(buf) - 1) {
		ssize_t n = recv(c, buf + got, sizeof(buf) - 1 - got, 0);
		if (n <= 0)
			return;
		got += (size_t)n;
		buf[got] = '\0';
		if (!eoh && (eoh = strstr(buf, "\r\n\r\n"))) {
			char *cl = strcasestr(buf, "\r\ncontent-length:");
			clen = cl && cl < eoh ? strtol(cl + 17, NULL, 10) : 0;
		}
		if (eoh && got >= (size_t)(eoh + 4 - buf) + (size_t)clen)
			break;
	}
	if (!eoh)
		return;

	struct reply r = { 0 };
	char path[512] = "";
	sscanf(buf, "%*s %511s", path);
	pthread_mutex_lock(&s->mu);
	if (s->n_reqs < MAX_REQS) {
		snprintf(s->reqs[s->n_reqs].path, sizeof(s->reqs[0].path), "%s", path);
		s->reqs[s->n_reqs].body = strndup(eoh + 4, (size_t)clen);
		s->n_reqs++;
	}
	if (s->next_reply < s->n_replies)
		r = s->replies[s->next_reply++];
	else if (strncmp(path, "/slack/", 7) == 0)
		r = (struct reply){ .status = 200, .body = "ok" };
	else
		r = (struct reply){ .status = 202,
			                .body = "{\"status\":\"success\",\"message\":\"Event processed\"}" };
	pthread_mutex_unlock(&s->mu);

	char out[1024];
	int n = snprintf(out, sizeof(out),
	                 "HTTP/1.1 %d Scripted\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
	                 "Connection: close\r\n%s\r\n%s",
	                 r.status, strlen(r.body), r.headers, r.body);
	if (send(c, out, (size_t)n, MSG_NOSIGNAL) < 0)
		return;
}

static void *srv_main(void *arg)
{
	struct srv *s = arg;

	while (!atomic_load(&s->stop)) {
		struct pollfd p = { .fd = s->fd, .events = POLLIN };
		if (poll(&p, 1, 100) <= 0)
			continue;
		int c = accept(s->fd, NULL, NULL);
		if (c < 0)
			continue;
		srv_serve(s, c);
		close(c);
	}
	return NULL;
}

static struct srv *srv_start(void)
{
	struct srv *s = calloc(1, sizeof(*s));
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);

	assert_non_null(s);
	pthread_mutex_init(&s->mu, NULL);
	s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s->fd >= 0);
	assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(s->fd, 16), 0);
	assert_int_equal(getsockname(s->fd, (struct sockaddr *)&a, &len), 0);
	s->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&s->th, NULL, srv_main, s), 0);
	return s;
}

static void srv_stop(struct srv *s)
{
	atomic_store(&s->stop, 1);
	pthread_join(s->th, NULL);
	close(s->fd);
	for (int i = 0; i < s->n_reqs; i++)
		free(s->reqs[i].body);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

/* ---------- fixture ---------- */

struct fx {
	struct srv *srv;
	struct store *store;
	struct outbox *ob;
	FILE *log;
	char slack_url[128], pd_url[128];
	int not_durable;
	struct playbook pb_default, pb_pd_only, pb_notify;
};

static char *pb_pd[] = { "pagerduty" };
static char *pb_slack[] = { "slack" };

static const char *str(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static void configure(struct fx *f, int slack, int pd)
{
	struct escalate_conf ec = { .slack_url = slack ? f->slack_url : NULL,
		                        .pd_routing_key = pd ? PD_KEY : NULL,
		                        .pd_url = f->pd_url,
		                        .external_url = "https://recoveryd.example.com",
		                        .retry_initial = 1, .retry_max = 300 };
	escalate_configure(&ec);
}

/* The runner is told of a transfer only for a row the journal holds as
 * waiting to be sent (pending or retrying) on that sink. */
static void check_durable(const cJSON *call, void *arg)
{
	struct fx *f = arg;
	const char *url = str(call, "url");
	int ok = 0;

	if (strcmp(str(call, "call"), "deliver") != 0)
		return;
	const char *sink = url && strstr(url, "/slack/") ? "slack" : "pagerduty";
	cJSON *rows = fake_store_escalations(f->store), *it;
	cJSON_ArrayForEach(it, rows)
	{
		const char *st = str(it, "state");
		ok |= strcmp(str(it, "sink"), sink) == 0 &&
		      (strcmp(st, "pending") == 0 || strcmp(st, "retrying") == 0);
	}
	cJSON_Delete(rows);
	if (!ok) {
		print_error("transfer started before its row was committed: %s\n", url ? url : "");
		f->not_durable++;
	}
}

static struct outbox *new_outbox(struct fx *f)
{
	struct outbox_opts o = { .store = f->store, .runner = NULL };
	struct outbox *ob = outbox_new(&o);
	assert_non_null(ob);
	return ob;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	fake_runner_reset();
	metrics_reset();
	f->srv = srv_start();
	snprintf(f->slack_url, sizeof(f->slack_url), "http://127.0.0.1:%d/slack/" SLACK_SECRET,
	         f->srv->port);
	snprintf(f->pd_url, sizeof(f->pd_url), "http://127.0.0.1:%d/v2/enqueue", f->srv->port);
	configure(f, 1, 1);
	f->log = tmpfile();
	assert_non_null(f->log);
	log_set_fd(fileno(f->log));
	f->store = fake_store_new();
	assert_non_null(f->store);
	f->ob = new_outbox(f);
	fake_runner_set_hook(check_durable, f);
	/* playbooks as the loader leaves them: without escalate (the default
	 * sinks), escalate = {"pagerduty"}, notify.on_success = {"slack"} */
	f->pb_default = (struct playbook){ .name = "disk-cleanup" };
	f->pb_pd_only = (struct playbook){ .name = "disk-cleanup", .escalate = pb_pd, .n_escalate = 1,
		                               .escalate_set = 1 };
	f->pb_notify = (struct playbook){ .name = "disk-cleanup", .notify_success = pb_slack,
		                              .n_notify_success = 1 };
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	int bad = f->not_durable;

	outbox_free(f->ob);
	fake_runner_reset();
	store_close(f->store);
	srv_stop(f->srv);
	log_set_fd(2);
	fclose(f->log);
	free(f);
	assert_int_equal(bad, 0);
	return 0;
}

/* The log written so far. */
static char *log_text(struct fx *f)
{
	long n;
	char *s;

	fflush(f->log);
	n = lseek(fileno(f->log), 0, SEEK_END);
	s = calloc(1, (size_t)n + 1);
	assert_non_null(s);
	assert_int_equal(pread(fileno(f->log), s, (size_t)n, 0), n);
	return s;
}

/* A job that ended (its committed record seeded into the journal). */
static struct job ended(struct fx *f, const char *id, const char *key, struct playbook *pb,
                        enum job_state st, enum job_outcome out, int dry_run)
{
	struct job j = { .key = (char *)key, .playbook_name = pb->name, .pb = pb, .state = st,
		             .outcome = out, .dry_run = dry_run, .attempts = 3, .max_attempts = 3 };
	double now = rd_now();
	struct job_row r = { .id = id, .playbook = pb->name, .key = key, .trigger = "webhook",
		                 .alert_json = ALERT_JSON, .dry_run = dry_run,
		                 .state = job_state_name(st), .outcome = job_outcome_name(out),
		                 .error = out == OUT_SUCCEEDED ? NULL : "verify: still full",
		                 .attempts = 3, .max_attempts = 3, .created_at = now - 60,
		                 .updated_at = now, .started_at = now - 50, .ended_at = now };

	snprintf(j.id, sizeof(j.id), "%s", id);
	fake_store_seed_job(f->store, &r);
	return j;
}

/* The end of j, decided and sent as the engine does. */
static void end_job(struct fx *f, const struct job *j)
{
	struct outbox_notes ns = { 0 };
	outbox_job_ended(f->ob, &ns, j);
	outbox_send(f->ob, &ns);
	assert_null(ns.head);
}

/* The committed escalation rows (current state) of job_id, kind, sink
 * (NULL: any): a new array. */
static cJSON *rows(struct fx *f, const char *job_id, const char *kind, const char *sink)
{
	cJSON *all = fake_store_escalations(f->store), *out = cJSON_CreateArray(), *it;
	cJSON_ArrayForEach(it, all)
	{
		if ((job_id && strcmp(str(it, "job_id"), job_id) != 0) ||
		    (kind && strcmp(str(it, "kind"), kind) != 0) ||
		    (sink && strcmp(str(it, "sink"), sink) != 0))
			continue;
		cJSON_AddItemToArray(out, cJSON_Duplicate(it, 1));
	}
	cJSON_Delete(all);
	return out;
}

/* The one row of job_id, kind and sink. */
static cJSON *row1(struct fx *f, const char *job_id, const char *kind, const char *sink)
{
	cJSON *r = rows(f, job_id, kind, sink);
	assert_int_equal(cJSON_GetArraySize(r), 1);
	cJSON *one = cJSON_DetachItemFromArray(r, 0);
	cJSON_Delete(r);
	return one;
}

static int count_calls(const char *call)
{
	cJSON *c = fake_runner_calls(call);
	int n = cJSON_GetArraySize(c);
	cJSON_Delete(c);
	return n;
}

/* The "in" of the last timer set. */
static double last_timer_in(void)
{
	cJSON *c = fake_runner_calls("timer");
	int n = cJSON_GetArraySize(c);
	assert_true(n > 0);
	double in = num(cJSON_GetArrayItem(c, n - 1), "in");
	cJSON_Delete(c);
	return in;
}

/* Nothing in the payload a row journals is a secret. */
static void assert_no_secrets(const char *payload)
{
	assert_non_null(payload);
	assert_null(strstr(payload, PD_KEY));
	assert_null(strstr(payload, "routing_key"));
	assert_null(strstr(payload, SLACK_SECRET));
}

/* ---------- deciding ---------- */

/* A failed job: one trigger row per sink of the playbook, reason "failed",
 * journaled with its payload and sent to each sink's endpoint; a playbook
 * with its own escalate list gets only those sinks. */
static void test_failed_job_triggers_each_sink(void **state)
{
	struct fx *f = *state;
	struct job j1 = ended(f, J1, KEY1, &f->pb_default, JS_FAILED, OUT_FAILED, 0);
	struct job j2 = ended(f, J2, KEY2, &f->pb_pd_only, JS_FAILED, OUT_FAILED, 0);

	end_job(f, &j1);
	cJSON *r = rows(f, J1, NULL, NULL), *it;
	assert_int_equal(cJSON_GetArraySize(r), 2);
	cJSON_ArrayForEach(it, r)
	{
		assert_string_equal(str(it, "kind"), "trigger");
		assert_string_equal(str(it, "reason"), "failed");
		assert_string_equal(str(it, "state"), "pending");
		assert_string_equal(str(it, "incident_key"), KEY1);
		assert_int_equal((int)num(it, "attempts"), 0);
		assert_no_secrets(str(it, "payload"));
	}
	cJSON_Delete(r);
	cJSON *pd = row1(f, J1, "trigger", "pagerduty");
	cJSON *ev = cJSON_Parse(str(pd, "payload"));
	assert_string_equal(str(ev, "event_action"), "trigger");
	assert_string_equal(str(ev, "dedup_key"), "recoveryd/" KEY1);
	cJSON_Delete(ev);
	cJSON_Delete(pd);
	assert_int_equal(fake_runner_xfers(), 2);

	end_job(f, &j2);
	r = rows(f, J2, NULL, NULL);
	assert_int_equal(cJSON_GetArraySize(r), 1);
	assert_string_equal(str(cJSON_GetArrayItem(r, 0), "sink"), "pagerduty");
	cJSON_Delete(r);
	assert_int_equal(fake_runner_xfers(), 3);

	/* the sends go to each sink's configured endpoint */
	cJSON *sent = fake_runner_calls("deliver");
	int slack = 0, pdn = 0;
	cJSON_ArrayForEach(it, sent)
	{
		slack += strcmp(str(it, "url"), f->slack_url) == 0;
		pdn += strcmp(str(it, "url"), f->pd_url) == 0;
	}
	cJSON_Delete(sent);
	assert_int_equal(slack, 1);
	assert_int_equal(pdn, 2);
}

/* An interrupted job escalates with reason "interrupted"; escalate = {}
 * turns escalation off. */
static void test_interrupted_job_and_escalation_off(void **state)
{
	struct fx *f = *state;
	struct playbook off = { .name = "quiet", .escalate_set = 1 };
	struct job j1 = ended(f, J1, KEY1, &f->pb_pd_only, JS_FAILED, OUT_INTERRUPTED, 0);
	struct job j2 = ended(f, J2, KEY2, &off, JS_FAILED, OUT_FAILED, 0);

	end_job(f, &j1);
	cJSON *r = row1(f, J1, "trigger", "pagerduty");
	assert_string_equal(str(r, "reason"), "interrupted");
	cJSON_Delete(r);

	end_job(f, &j2);
	r = rows(f, J2, NULL, NULL);
	assert_int_equal(cJSON_GetArraySize(r), 0);
	cJSON_Delete(r);
	assert_int_equal(fake_runner_xfers(), 1);
}

/* A later success of an escalated key resolves its incident on the sinks
 * it was opened on (the rows on the escalating job, reason "recovered");
 * a second success sends nothing more; a never-escalated key gets
 * nothing. notify.on_success adds a Slack notice on the succeeding job. */
static void test_success_resolves_and_notifies(void **state)
{
	struct fx *f = *state;
	struct job fail = ended(f, J1, KEY1, &f->pb_default, JS_FAILED, OUT_FAILED, 0);
	struct job ok = ended(f, J2, KEY1, &f->pb_notify, JS_SUCCEEDED, OUT_SUCCEEDED, 0);
	struct job other = ended(f, J3, KEY2, &f->pb_default, JS_SUCCEEDED, OUT_SUCCEEDED, 0);

	end_job(f, &fail);
	end_job(f, &other);
	cJSON *r = rows(f, J3, NULL, NULL);
	assert_int_equal(cJSON_GetArraySize(r), 0);
	cJSON_Delete(r);

	end_job(f, &ok);
	r = rows(f, J1, "resolve", NULL);
	assert_int_equal(cJSON_GetArraySize(r), 2);
	cJSON *it;
	cJSON_ArrayForEach(it, r)
	{
		assert_string_equal(str(it, "reason"), "recovered");
		assert_string_equal(str(it, "state"), "pending");
		assert_string_equal(str(it, "incident_key"), KEY1);
		assert_no_secrets(str(it, "payload"));
	}
	cJSON_Delete(r);
	cJSON *pd = row1(f, J1, "resolve", "pagerduty");
	cJSON *ev = cJSON_Parse(str(pd, "payload"));
	assert_string_equal(str(ev, "event_action"), "resolve");
	assert_string_equal(str(ev, "dedup_key"), "recoveryd/" KEY1);
	cJSON_Delete(ev);
	cJSON_Delete(pd);
	cJSON *notice = row1(f, J2, "notice", "slack");
	assert_string_equal(str(notice, "reason"), "recovered");
	cJSON_Delete(notice);
	r = rows(f, J2, NULL, NULL);
	assert_int_equal(cJSON_GetArraySize(r), 1); /* no PagerDuty notice */
	cJSON_Delete(r);

	/* closed: the next success resolves nothing */
	struct job again = ended(f, J3, KEY1, &f->pb_default, JS_SUCCEEDED, OUT_SUCCEEDED, 0);
	end_job(f, &again);
	r = rows(f, NULL, "resolve", NULL);
	assert_int_equal(cJSON_GetArraySize(r), 2);
	cJSON_Delete(r);
}

/* Dry-run: rows "planned", counted, never sent, no incident opened (a
 * later success resolves nothing); a dry-run success resolves nothing. */
static void test_dry_run_is_planned_only(void **state)
{
	struct fx *f = *state;
	struct job dry = ended(f, J1, KEY1, &f->pb_default, JS_FAILED, OUT_DRY_RUN_FAILED, 1);

	end_job(f, &dry);
	cJSON *r = rows(f, J1, NULL, NULL), *it;
	assert_int_equal(cJSON_GetArraySize(r), 2);
	cJSON_ArrayForEach(it, r)
	{
		assert_string_equal(str(it, "kind"), "trigger");
		assert_string_equal(str(it, "reason"), "failed");
		assert_string_equal(str(it, "state"), "planned");
	}
	cJSON_Delete(r);
	assert_int_equal(count_calls("deliver"), 0);
	assert_int_equal(count_calls("timer"), 0);
	assert_true(metrics_get(M_ESCALATIONS, "slack", "planned") == 1);
	assert_true(metrics_get(M_ESCALATIONS, "pagerduty", "planned") == 1);

	struct job ok = ended(f, J2, KEY1, &f->pb_default, JS_SUCCEEDED, OUT_SUCCEEDED, 0);
	end_job(f, &ok);
	r = rows(f, NULL, "resolve", NULL);
	assert_int_equal(cJSON_GetArraySize(r), 0);
	cJSON_Delete(r);

	/* a real incident is not closed by a dry-run success */
	struct job fail = ended(f, J3, KEY2, &f->pb_pd_only, JS_FAILED, OUT_FAILED, 0);
	end_job(f, &fail);
	struct job dry_ok = ended(f, J2, KEY2, &f->pb_notify, JS_SUCCEEDED, OUT_DRY_RUN_SUCCEEDED, 1);
	dry_ok.state = JS_SUCCEEDED;
	end_job(f, &dry_ok);
	r = rows(f, NULL, "resolve", NULL);
	assert_int_equal(cJSON_GetArraySize(r), 0);
	cJSON_Delete(r);
	cJSON *notice = row1(f, J2, "notice", "slack");
	assert_string_equal(str(notice, "state"), "planned");
	cJSON_Delete(notice);
	assert_int_equal(count_calls("deliver"), 1); /* the real trigger only */
}

/* ---------- journaling ---------- */

/* Nothing is sent and no incident is open until the rows are committed;
 * then both happen. */
static void test_journal_first(void **state)
{
	struct fx *f = *state;
	struct job fail = ended(f, J1, KEY1, &f->pb_default, JS_FAILED, OUT_FAILED, 0);
	struct outbox_notes ns = { 0 };

	fake_store_defer(f->store, 1);
	end_job(f, &fail);
	assert_int_equal(count_calls("deliver"), 0);
	cJSON *r = rows(f, NULL, NULL, NULL);
	assert_int_equal(cJSON_GetArraySize(r), 0);
	cJSON_Delete(r);
	outbox_close_incident(f->ob, &ns, KEY1, ER_ALERT_RESOLVED);
	assert_null(ns.head); /* not open yet */

	assert_int_equal(fake_store_flush(f->store), 1);
	assert_int_equal(count_calls("deliver"), 2);
	outbox_close_incident(f->ob, &ns, KEY1, ER_ALERT_RESOLVED);
	assert_non_null(ns.head);
	outbox_send(f->ob, &ns);
	assert_int_equal(fake_store_flush(f->store), 1);
	r = rows(f, J1, "resolve", NULL);
	assert_int_equal(cJSON_GetArraySize(r), 2);
	assert_string_equal(str(cJSON_GetArrayItem(r, 0), "reason"), "alert resolved");
	cJSON_Delete(r);
}

/* The rows of one send go out in the order they were decided: a resolve
 * decided before a new trigger of the same incident is sent first, not
 * held back behind it. */
static void test_one_send_keeps_decision_order(void **state)
{
	struct fx *f = *state;
	struct job old = ended(f, J1, KEY1, &f->pb_default, JS_FAILED, OUT_FAILED, 0);
	struct job now = ended(f, J2, KEY1, &f->pb_default, JS_FAILED, OUT_FAILED, 0);
	struct outbox_notes ns = { 0 };

	outbox_note(&ns, old.id, KEY1, EK_RESOLVE, ER_ALERT_RESOLVED, SINK_SLACK, 0);
	outbox_note(&ns, now.id, KEY1, EK_TRIGGER, ER_FAILED, SINK_SLACK, 0);
	outbox_send(f->ob, &ns);
	/* both on their way, the resolve not waiting on the newer trigger */
	assert_int_equal(count_calls("deliver"), 2);
	assert_int_equal(fake_runner_timers(), 0);
}

/* Shutdown: outbox_quiesce returns only once every batch handed to the
 * journal has been reported, so no report reaches a freed runner. */
struct quiesce_arg {
	struct outbox *ob;
	atomic_int done;
};

static void *quiesce_thread(void *arg)
{
	struct quiesce_arg *q = arg;

	outbox_quiesce(q->ob);
	atomic_store(&q->done, 1);
	return NULL;
}

static void test_quiesce_waits_for_the_journal(void **state)
{
	struct fx *f = *state;
	struct job fail = ended(f, J1, KEY1, &f->pb_default, JS_FAILED, OUT_FAILED, 0);
	struct quiesce_arg q = {.ob = f->ob};
	pthread_t t;

	fake_store_defer(f->store, 1);
	end_job(f, &fail);
	assert_int_equal(pthread_create(&t, NULL, quiesce_thread, &q), 0);
	usleep(100 * 1000);
	assert_int_equal(atomic_load(&q.done), 0); /* the batch is still out */
	assert_int_equal(fake_store_flush(f->store), 1);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(atomic_load(&q.done), 1);
	assert_int_equal(count_calls("deliver"), 2); /* reported before quiesce returned */
}

/* A failed commit sends nothing, opens no incident, and says so in the
 * log. */
static void test_failed_commit_sends_nothing(void **state)
{
	struct fx *f = *state;
	struct job fail = ended(f, J1, KEY1, &f->pb_default, JS_FAILED, OUT_FAILED, 0);
	struct outbox_notes ns = { 0 };

	fake_store_fail_commits(f->store, 1);
	end_job(f, &fail);
	assert_int_equal(fake_store_failed_commits(f->store), 1);
	assert_int_equal(count_calls("deliver"), 0);
	assert_int_equal(fake_runner_timers(), 0);
	cJSON *r = rows(f, NULL, NULL, NULL);
	assert_int_equal(cJSON_GetArraySize(r), 0);
	cJSON_Delete(r);
	outbox_close_incident(f->ob, &ns, KEY1, ER_ALERT_RESOLVED);
	assert_null(ns.head);
	char *log = log_text(f);
	assert_non_null(strstr(log, "journal commit failed"));
	assert_non_null(strstr(log, J1));
	free(log);
}

/* A resolve whose decision was not committed is abandoned: the incident
 * is open again, and the next close resolves it. */
static void test_abandon_reopens(void **state)
{
	struct fx *f = *state;
	struct job fail = ended(f, J1, KEY1, &f->pb_pd_only, JS_FAILED, OUT_FAILED, 0);
	struct outbox_notes ns = { 0 };

	end_job(f, &fail);
	outbox_close_incident(f->ob, &ns, KEY1, ER_ALERT_RESOLVED);
	assert_non_null(ns.head);
	outbox_abandon(f->ob, &ns);
	assert_null(ns.head);
	cJSON *r = rows(f, NULL, "resolve", NULL);
	assert_int_equal(cJSON_GetArraySize(r), 0);
	cJSON_Delete(r);

	outbox_close_incident(f->ob, &ns, KEY1, ER_ALERT_RESOLVED);
	assert_non_null(ns.head);
	outbox_send(f->ob, &ns);
	r = row1(f, J1, "resolve", "pagerduty");
	cJSON_Delete(r);
	r = rows(f, NULL, "resolve", NULL);
	assert_int_equal(cJSON_GetArraySize(r), 1); /* on the sink it was opened on */
	cJSON_Delete(r);
}

/* A sink that is not configured: its row is "failed", "sink not
 * configured", counted, not sent; the configured sink still goes. */
static void test_unconfigured_sink(void **state)
{
	struct fx *f = *state;
	struct job fail = ended(f, J1, KEY1, &f->pb_notify, JS_FAILED, OUT_FAILED, 0);
	static char *both[] = { "slack", "pagerduty" };

	configure(f, 1, 0);
	f->pb_notify.escalate = both;
	f->pb_notify.n_escalate = 2;
	f->pb_notify.escalate_set = 1;
	end_job(f, &fail);
	cJSON *pd = row1(f, J1, "trigger", "pagerduty");
	assert_string_equal(str(pd, "state"), "failed");
	assert_string_equal(str(pd, "last_answer"), "sink not configured");
	cJSON_Delete(pd);
	cJSON *sl = row1(f, J1, "trigger", "slack");
	assert_string_equal(str(sl, "state"), "pending");
	cJSON_Delete(sl);
	/* journaled as failed at once, never as waiting to be sent */
	cJSON *ins = fake_store_ops(f->store, "escalation", J1), *it;
	assert_int_equal(cJSON_GetArraySize(ins), 2);
	cJSON_ArrayForEach(it, ins)
		if (strcmp(str(it, "sink"), "pagerduty") == 0)
			assert_string_equal(str(it, "state"), "failed");
	cJSON_Delete(ins);
	assert_true(metrics_get(M_ESCALATIONS, "pagerduty", "not_configured") == 1);
	/* no incident on the sink never paged: the resolve goes to Slack only */
	struct outbox_notes ns = { 0 };
	outbox_close_incident(f->ob, &ns, KEY1, ER_ALERT_RESOLVED);
	outbox_send(f->ob, &ns);
	cJSON *res = row1(f, J1, "resolve", "slack");
	cJSON_Delete(res);
	res = rows(f, J1, "resolve", "pagerduty");
	assert_int_equal(cJSON_GetArraySize(res), 0);
	cJSON_Delete(res);
	assert_int_equal(fake_runner_complete("/slack/"), 0); /* the trigger; then its resolve goes */
	assert_int_equal(fake_runner_fire(), 0);
	cJSON *sent = fake_runner_calls("deliver");
	assert_int_equal(cJSON_GetArraySize(sent), 2); /* Slack's trigger, Slack's resolve */
	cJSON_ArrayForEach(it, sent)
		assert_string_equal(str(it, "url"), f->slack_url);
	cJSON_Delete(sent);
}

/* A sink configured when the row was journaled but not any more when it
 * is sent (a reload removed it): "failed", "sink not configured", no
 * request. */
static void test_sink_removed_before_send(void **state)
{
	struct fx *f = *state;
	struct job fail = ended(f, J1, KEY1, &f->pb_default, JS_FAILED, OUT_FAILED, 0);

	fake_store_defer(f->store, 1);
	end_job(f, &fail);
	configure(f, 1, 0);
	assert_int_equal(fake_store_flush(f->store), 1);
	cJSON *pd = row1(f, J1, "trigger", "pagerduty");
	assert_string_equal(str(pd, "state"), "failed");
	assert_string_equal(str(pd, "last_answer"), "sink not configured");
	cJSON_Delete(pd);
	assert_true(metrics_get(M_ESCALATIONS, "pagerduty", "not_configured") == 1);
	assert_int_equal(fake_runner_xfers(), 1);
	assert_int_equal(fake_runner_complete("/slack/"), 0);
	assert_int_equal(srv_requests(f->srv), 1);
}

/* ---------- delivering and retrying ---------- */

/* 2xx: "delivered" with its time, the answer and one attempt recorded,
 * counted; the secrets go on the wire but were never journaled. */
static void test_delivered(void **state)
{
	struct fx *f = *state;
	struct job fail = ended(f, J1, KEY1, &f->pb_default, JS_FAILED, OUT_FAILED, 0);
	double t0 = rd_now();
	char path[512];

	end_job(f, &fail);
	assert_int_equal(fake_runner_complete("/v2/enqueue"), 0);
	assert_int_equal(fake_runner_complete("/slack/"), 0);
	assert_int_equal(fake_runner_xfers(), 0);
	assert_int_equal(fake_runner_timers(), 0);

	cJSON *pd = row1(f, J1, "trigger", "pagerduty");
	assert_string_equal(str(pd, "state"), "delivered");
	assert_int_equal((int)num(pd, "attempts"), 1);
	assert_true(num(pd, "delivered_at") >= t0 && num(pd, "delivered_at") <= rd_now());
	assert_non_null(strstr(str(pd, "last_answer"), "202 "));
	assert_non_null(strstr(str(pd, "last_answer"), "Event processed"));
	cJSON *sl = row1(f, J1, "trigger", "slack");
	assert_string_equal(str(sl, "state"), "delivered");
	assert_string_equal(str(sl, "last_answer"), "200 ok");
	assert_true(metrics_get(M_ESCALATIONS, "pagerduty", "delivered") == 1);
	assert_true(metrics_get(M_ESCALATIONS, "slack", "delivered") == 1);

	/* on the wire: the journaled PagerDuty body plus the routing key; the
	 * Slack body as journaled, to the secret URL */
	assert_int_equal(srv_requests(f->srv), 2);
	cJSON *w = srv_body(f->srv, 0, path, sizeof(path));
	assert_string_equal(path, "/v2/enqueue");
	assert_string_equal(str(w, "routing_key"), PD_KEY);
	assert_string_equal(str(w, "dedup_key"), "recoveryd/" KEY1);
	cJSON *journaled = cJSON_Parse(str(pd, "payload"));
	cJSON_DeleteItemFromObjectCaseSensitive(w, "routing_key");
	assert_true(cJSON_Compare(w, journaled, 1));
	cJSON_Delete(journaled);
	cJSON_Delete(w);
	w = srv_body(f->srv, 1, path, sizeof(path));
	assert_string_equal(path, "/slack/" SLACK_SECRET);
	journaled = cJSON_Parse(str(sl, "payload"));
	assert_true(cJSON_Compare(w, journaled, 1));
	assert_non_null(strstr(str(w, "text"), "DiskFull"));
	cJSON_Delete(journaled);
	cJSON_Delete(w);
	cJSON_Delete(pd);
	cJSON_Delete(sl);
}

/* Another 4xx: "failed" for good with the answer; no retry. Slack's 200
 * with a body other than "ok" too. */
static void test_4xx_fails_permanently(void **state)
{
	struct fx *f = *state;
	struct job fail = ended(f, J1, KEY1, &f->pb_default, JS_FAILED, OUT_FAILED, 0);

	end_job(f, &fail);
	srv_script(f->srv, 400, NULL, "{\"status\":\"invalid event\"}");
	srv_script(f->srv, 200, NULL, "invalid_payload");
	assert_int_equal(fake_runner_complete("/v2/enqueue"), 0);
	assert_int_equal(fake_runner_complete("/slack/"), 0);
	cJSON *pd = row1(f, J1, "trigger", "pagerduty");
	assert_string_equal(str(pd, "state"), "failed");
	assert_string_equal(str(pd, "last_answer"), "400 {\"status\":\"invalid event\"}");
	assert_true(num(pd, "delivered_at") == 0);
	cJSON_Delete(pd);
	cJSON *sl = row1(f, J1, "trigger", "slack");
	assert_string_equal(str(sl, "state"), "failed");
	assert_string_equal(str(sl, "last_answer"), "200 invalid_payload");
	cJSON_Delete(sl);
	assert_true(metrics_get(M_ESCALATIONS, "pagerduty", "failed") == 1);
	assert_true(metrics_get(M_ESCALATIONS, "slack", "failed") == 1);
	assert_true(metrics_get(M_ESCALATIONS, "pagerduty", "delivered") == 0);
	assert_int_equal(fake_runner_timers(), 0);
	assert_int_equal(fake_runner_xfers(), 0);
	assert_int_equal(count_calls("deliver"), 2);
}

/* 429 with Retry-After: "retrying", next attempt not sooner than the
 * header says (the backoff alone would be at most 1 s), a timer at that
 * delay; the retry goes when it fires, and succeeds. */
static void test_429_honours_retry_after(void **state)
{
	struct fx *f = *state;
	struct job fail = ended(f, J1, KEY1, &f->pb_pd_only, JS_FAILED, OUT_FAILED, 0);

	end_job(f, &fail);
	srv_script(f->srv, 429, "Retry-After: 7\r\n", "{\"status\":\"throttled\"}");
	double t0 = rd_now();
	assert_int_equal(fake_runner_complete(NULL), 0);
	cJSON *pd = row1(f, J1, "trigger", "pagerduty");
	assert_string_equal(str(pd, "state"), "retrying");
	assert_int_equal((int)num(pd, "attempts"), 1);
	assert_non_null(strstr(str(pd, "last_answer"), "429 "));
	assert_true(num(pd, "next_attempt_at") >= t0 + 7 && num(pd, "next_attempt_at") <= rd_now() + 7);
	cJSON_Delete(pd);
	assert_true(metrics_get(M_ESCALATIONS, "pagerduty", "retried") == 1);
	assert_int_equal(fake_runner_timers(), 1);
	assert_int_equal(fake_runner_xfers(), 0);
	double in = last_timer_in();
	assert_true(in > 6.5 && in <= 7.0);

	assert_int_equal(fake_runner_fire(), 0);
	assert_int_equal(fake_runner_xfers(), 1);
	assert_int_equal(fake_runner_complete(NULL), 0);
	pd = row1(f, J1, "trigger", "pagerduty");
	assert_string_equal(str(pd, "state"), "delivered");
	assert_int_equal((int)num(pd, "attempts"), 2);
	cJSON_Delete(pd);
	assert_int_equal(srv_requests(f->srv), 2);
	assert_int_equal(fake_runner_timers(), 0);
}

/* 5xx: "retrying" after the backoff (jittered into [d/2, d], d = 1 s
 * first), then doubled; a later success delivers. */
static void test_5xx_retries_with_backoff(void **state)
{
	struct fx *f = *state;
	struct job fail = ended(f, J1, KEY1, &f->pb_notify, JS_FAILED, OUT_FAILED, 0);
	static char *sl[] = { "slack" };

	f->pb_notify.escalate = sl;
	f->pb_notify.n_escalate = 1;
	f->pb_notify.escalate_set = 1;
	end_job(f, &fail);
	srv_script(f->srv, 500, NULL, "internal");
	srv_script(f->srv, 503, NULL, "unavailable");
	assert_int_equal(fake_runner_complete(NULL), 0);
	cJSON *r = row1(f, J1, "trigger", "slack");
	assert_string_equal(str(r, "state"), "retrying");
	assert_string_equal(str(r, "last_answer"), "500 internal");
	assert_true(num(r, "next_attempt_at") > rd_now());
	cJSON_Delete(r);
	double in = last_timer_in();
	assert_true(in > 0.4 && in <= 1.0);

	assert_int_equal(fake_runner_fire(), 0);
	assert_int_equal(fake_runner_complete(NULL), 0);
	r = row1(f, J1, "trigger", "slack");
	assert_string_equal(str(r, "state"), "retrying");
	assert_int_equal((int)num(r, "attempts"), 2);
	cJSON_Delete(r);
	in = last_timer_in();
	assert_true(in > 0.9 && in <= 2.0);
	assert_true(metrics_get(M_ESCALATIONS, "slack", "retried") == 2);

	assert_int_equal(fake_runner_fire(), 0);
	assert_int_equal(fake_runner_complete(NULL), 0);
	r = row1(f, J1, "trigger", "slack");
	assert_string_equal(str(r, "state"), "delivered");
	assert_int_equal((int)num(r, "attempts"), 3);
	cJSON_Delete(r);
	assert_int_equal(srv_requests(f->srv), 3);
	assert_true(metrics_get(M_ESCALATIONS, "slack", "delivered") == 1);
}

/* ---------- resolving ---------- */

/* A resolve waits (a timer, no transfer) while the trigger for the same
 * incident and sink is undelivered, and goes once that trigger is
 * delivered; per sink. */
static void test_resolve_waits_for_its_trigger(void **state)
{
	struct fx *f = *state;
	struct job fail = ended(f, J1, KEY1, &f->pb_default, JS_FAILED, OUT_FAILED, 0);
	struct job ok = ended(f, J2, KEY1, &f->pb_default, JS_SUCCEEDED, OUT_SUCCEEDED, 0);

	end_job(f, &fail);
	assert_int_equal(fake_runner_xfers(), 2); /* both triggers in flight */
	end_job(f, &ok);
	cJSON *r = rows(f, J1, "resolve", NULL);
	assert_int_equal(cJSON_GetArraySize(r), 2);
	cJSON_Delete(r);
	assert_int_equal(fake_runner_xfers(), 2); /* no resolve sent */
	assert_int_equal(fake_runner_timers(), 2);

	/* still waiting: the timers fire, the resolves wait again */
	assert_int_equal(fake_runner_fire(), 0);
	assert_int_equal(fake_runner_fire(), 0);
	assert_int_equal(fake_runner_xfers(), 2);
	assert_int_equal(fake_runner_timers(), 2);

	/* Slack's trigger delivered: Slack's resolve goes, PagerDuty's waits */
	assert_int_equal(fake_runner_complete("/slack/"), 0);
	assert_int_equal(fake_runner_fire(), 0);
	assert_int_equal(fake_runner_fire(), 0);
	assert_int_equal(fake_runner_xfers(), 2); /* PagerDuty's trigger and Slack's resolve */
	assert_int_equal(fake_runner_timers(), 1);
	assert_int_equal(fake_runner_complete("/slack/"), 0);
	cJSON *sl = row1(f, J1, "resolve", "slack");
	assert_string_equal(str(sl, "state"), "delivered");
	cJSON_Delete(sl);
	cJSON *pd = row1(f, J1, "resolve", "pagerduty");
	assert_string_equal(str(pd, "state"), "pending");
	cJSON_Delete(pd);

	/* PagerDuty's trigger retried, then delivered: the resolve follows it */
	srv_script(f->srv, 502, NULL, "bad gateway");
	assert_int_equal(fake_runner_complete("/v2/enqueue"), 0);
	assert_int_equal(fake_runner_timers(), 2);
	assert_int_equal(fake_runner_fire(), 0); /* the resolve's: waits again */
	assert_int_equal(fake_runner_xfers(), 0);
	assert_int_equal(fake_runner_fire(), 0); /* the trigger's retry */
	assert_int_equal(fake_runner_complete("/v2/enqueue"), 0);
	assert_int_equal(fake_runner_fire(), 0); /* the resolve's */
	assert_int_equal(fake_runner_complete("/v2/enqueue"), 0);
	pd = row1(f, J1, "resolve", "pagerduty");
	assert_string_equal(str(pd, "state"), "delivered");
	cJSON_Delete(pd);

	/* on the wire, each resolve after its trigger */
	char path[512];
	int n = srv_requests(f->srv), pd_trigger = -1, pd_resolve = -1;
	for (int i = 0; i < n; i++) {
		cJSON *w = srv_body(f->srv, i, path, sizeof(path));
		const char *act = str(w, "event_action");
		if (act && strcmp(act, "trigger") == 0)
			pd_trigger = i;
		if (act && strcmp(act, "resolve") == 0)
			pd_resolve = i;
		cJSON_Delete(w);
	}
	assert_true(pd_trigger >= 0 && pd_resolve > pd_trigger);
	assert_int_equal(fake_runner_timers(), 0);
}

/* ---------- start-up ---------- */

/* outbox_load: incidents left open by the previous process are restored
 * (a later close resolves them on their sinks), undelivered rows are sent
 * again, delivered and planned ones are not. */
static void test_load_restores(void **state)
{
	struct fx *f = *state;
	double t = rd_now() - 100;

	outbox_free(f->ob);
	f->ob = NULL;
	ended(f, J1, KEY1, &f->pb_default, JS_FAILED, OUT_FAILED, 0);
	ended(f, J2, KEY2, &f->pb_default, JS_FAILED, OUT_FAILED, 0);
	ended(f, J3, "other/1", &f->pb_default, JS_FAILED, OUT_DRY_RUN_FAILED, 1);
	/* KEY1: escalated to PagerDuty, delivered */
	fake_store_seed_escalation(f->store, &(struct escalation_row){
		.id = "e1", .job_id = J1, .incident_key = KEY1, .sink = "pagerduty", .kind = "trigger",
		.reason = "failed", .state = "delivered", .attempts = 1, .last_answer = "202",
		.created_at = t, .updated_at = t, .delivered_at = t,
		.payload = "{\"event_action\":\"trigger\",\"dedup_key\":\"recoveryd/" KEY1 "\"}" });
	/* KEY2: escalated to Slack (pending) and PagerDuty (retrying) */
	fake_store_seed_escalation(f->store, &(struct escalation_row){
		.id = "e2", .job_id = J2, .incident_key = KEY2, .sink = "slack", .kind = "trigger",
		.reason = "failed", .state = "pending", .created_at = t, .updated_at = t,
		.payload = "{\"text\":\"seeded\"}" });
	fake_store_seed_escalation(f->store, &(struct escalation_row){
		.id = "e3", .job_id = J2, .incident_key = KEY2, .sink = "pagerduty", .kind = "trigger",
		.reason = "failed", .state = "retrying", .attempts = 2, .last_answer = "500 x",
		.created_at = t, .updated_at = t, .next_attempt_at = t + 1,
		.payload = "{\"event_action\":\"trigger\",\"dedup_key\":\"recoveryd/" KEY2 "\"}" });
	/* a dry-run's planned row: neither an incident nor a send */
	fake_store_seed_escalation(f->store, &(struct escalation_row){
		.id = "e4", .job_id = J3, .incident_key = "other/1", .sink = "slack", .kind = "trigger",
		.reason = "failed", .state = "planned", .created_at = t, .updated_at = t,
		.payload = "{}" });

	f->ob = new_outbox(f);
	assert_int_equal(outbox_load(f->ob), RD_OK);
	assert_int_equal(fake_runner_xfers(), 2);
	assert_int_equal(fake_runner_complete("/slack/"), 0);
	assert_int_equal(fake_runner_complete("/v2/enqueue"), 0);
	assert_string_equal(str(fake_store_escalation(f->store, "e2"), "state"), "delivered");
	assert_string_equal(str(fake_store_escalation(f->store, "e3"), "state"), "delivered");
	assert_int_equal((int)num(fake_store_escalation(f->store, "e3"), "attempts"), 3);
	char path[512];
	cJSON *w = srv_body(f->srv, 0, path, sizeof(path));
	assert_string_equal(str(w, "text"), "seeded");
	cJSON_Delete(w);

	struct outbox_notes ns = { 0 };
	outbox_close_incident(f->ob, &ns, "other/1", ER_ALERT_RESOLVED);
	assert_null(ns.head);
	outbox_close_incident(f->ob, &ns, KEY1, ER_ALERT_RESOLVED);
	outbox_close_incident(f->ob, &ns, KEY2, ER_ALERT_RESOLVED);
	outbox_send(f->ob, &ns);
	cJSON *r = rows(f, J1, "resolve", NULL);
	assert_int_equal(cJSON_GetArraySize(r), 1);
	assert_string_equal(str(cJSON_GetArrayItem(r, 0), "sink"), "pagerduty");
	assert_string_equal(str(cJSON_GetArrayItem(r, 0), "reason"), "alert resolved");
	cJSON_Delete(r);
	r = rows(f, J2, "resolve", NULL);
	assert_int_equal(cJSON_GetArraySize(r), 2);
	cJSON_Delete(r);
	assert_int_equal(fake_runner_xfers(), 3);
}

/* outbox_free with transfers in flight and retries waiting frees
 * everything (the leak check of ASan says so); the rows stay pending or
 * retrying in the journal for the next start. */
static void test_free_with_deliveries_in_flight(void **state)
{
	struct fx *f = *state;
	struct job j1 = ended(f, J1, KEY1, &f->pb_default, JS_FAILED, OUT_FAILED, 0);
	struct job j2 = ended(f, J2, KEY2, &f->pb_pd_only, JS_FAILED, OUT_FAILED, 0);
	struct job ok = ended(f, J3, KEY1, &f->pb_default, JS_SUCCEEDED, OUT_SUCCEEDED, 0);

	end_job(f, &j1);
	end_job(f, &j2);
	srv_script(f->srv, 503, "Retry-After: 30\r\n", "busy");
	assert_int_equal(fake_runner_complete(NULL), 0);
	end_job(f, &ok); /* resolves waiting behind their triggers */
	assert_int_equal(fake_runner_xfers(), 2);
	assert_int_equal(fake_runner_timers(), 3);

	outbox_free(f->ob);
	f->ob = NULL;
	fake_runner_reset();
	cJSON *r = rows(f, NULL, NULL, NULL), *it;
	assert_int_equal(cJSON_GetArraySize(r), 5);
	cJSON_ArrayForEach(it, r)
	{
		const char *st = str(it, "state");
		assert_true(strcmp(st, "pending") == 0 || strcmp(st, "retrying") == 0);
	}
	cJSON_Delete(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_failed_job_triggers_each_sink, setup, teardown),
		cmocka_unit_test_setup_teardown(test_interrupted_job_and_escalation_off, setup, teardown),
		cmocka_unit_test_setup_teardown(test_success_resolves_and_notifies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dry_run_is_planned_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_first, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quiesce_waits_for_the_journal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_one_send_keeps_decision_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_commit_sends_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abandon_reopens, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unconfigured_sink, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sink_removed_before_send, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delivered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_4xx_fails_permanently, setup, teardown),
		cmocka_unit_test_setup_teardown(test_429_honours_retry_after, setup, teardown),
		cmocka_unit_test_setup_teardown(test_5xx_retries_with_backoff, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolve_waits_for_its_trigger, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_restores, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_with_deliveries_in_flight, setup, teardown),
	};
	struct escalate_conf none = { 0 };
	int rc;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	metrics_init();
	log_set_level(LOG_INFO);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	escalate_configure(&none);
	fake_runner_reset();
	curl_global_cleanup();
	return rc;
}

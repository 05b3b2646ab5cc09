/* Unit tests for src/engine.c against recording fakes of the runner and the
 * store (tests/unit/fakes/): routing of alerts to playbooks, admission
 * (coalesce, cooldown, budget, queue full), resolved alerts cancelling their
 * job, the rule that nothing is acknowledged or acted on before it is in the
 * journal, the start-up replay's crash rules (docs/playbook-guide.md,
 * "Crashes and shutdown"), escalations the engine journals, and dry-run.
 * Playbooks are real, loaded from files; alerts go through the real parser.
 * Built by its own target in tests/CMakeLists.txt. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "fake_runner.h"
#include "fake_store.h"
#include "recoveryd/alert.h"
#include "recoveryd/common.h"
#include "recoveryd/engine.h"
#include "recoveryd/escalate.h"
#include "recoveryd/log.h"
#include "recoveryd/metrics.h"
#include "recoveryd/playbook.h"

#define MEM_MAX (16u * 1024 * 1024)
#define PD_KEY "0123456789abcdef0123456789abcdef"
#define PD_URL "http://127.0.0.1:1/v2/enqueue"
#define SLACK_URL "https://hooks.slack.com/services/T0SECRET/B0SECRET/xyzSECRETxyz"

/* ---- playbooks ------------------------------------------------------------ */

#define BODY "run = function() end, verify = function() return true end }\n"

/* escalates to both sinks; no budget to speak of */
static const char pb_disk[] =
	"return { name = 'disk', match = { 'alertname=\"DiskFull\"' }, retries = 2, cooldown = 600,\n"
	"  budget = { runs = 100, per = 60 }, escalate = { 'slack', 'pagerduty' },\n" BODY;
static const char pb_critical[] =
	"return { name = 'critical', match = { 'severity=\"critical\"', 'alertname!=\"Watchdog\"' },\n"
	"  budget = { runs = 100, per = 60 }, " BODY;
/* two starts an hour */
static const char pb_tight[] =
	"return { name = 'tight', match = { 'alertname=\"Tight\"' }, cooldown = 0,\n"
	"  budget = { runs = 2, per = 3600 }, escalate = { 'slack', 'pagerduty' },\n" BODY;
static const char pb_idem[] =
	"return { name = 'idem', match = { 'alertname=\"Idem\"' }, idempotent = true,\n"
	"  budget = { runs = 100, per = 60 }, " BODY;
static const char pb_plain[] =
	"return { name = 'plain', match = { 'alertname=\"Plain\"' }, escalate = { 'slack', 'pagerduty' },\n"
	"  budget = { runs = 100, per = 60 }, " BODY;

/* ---- payloads ------------------------------------------------------------- */

#define FP1 "f000000000000001"
#define FP2 "f000000000000002"
#define FP3 "f000000000000003"
#define FP4 "f000000000000004"

#define ALERT(st, fp, labels)                                                                    \
	"{\"status\":\"" st "\",\"labels\":{" labels "},\"annotations\":{\"runbook_url\":"           \
	"\"https://runbooks.example.invalid/x\"},\"startsAt\":\"2026-11-29T10:45:43.885Z\","         \
	"\"endsAt\":\"0001-01-01T00:00:00Z\",\"generatorURL\":\"http://prom/graph\","               \
	"\"fingerprint\":\"" fp "\"}"
#define V4(st, alerts)                                                                           \
	"{\"receiver\":\"recovery\",\"status\":\"" st "\",\"alerts\":[" alerts "],"                 \
	"\"groupLabels\":{},\"commonLabels\":{},\"commonAnnotations\":{},\"externalURL\":"          \
	"\"http://am\",\"version\":\"4\",\"groupKey\":\"{}:{}\",\"truncatedAlerts\":0}"
#define FIRING(fp, labels) V4("firing", ALERT("firing", fp, labels))
#define RESOLVED(fp, labels) V4("resolved", ALERT("resolved", fp, labels))

#define DISK "\"alertname\":\"DiskFull\",\"instance\":\"db-1\""

/* ---- fixture -------------------------------------------------------------- */

struct fx {
	struct store *store;
	struct engine *e;
	int not_durable; /* runner calls made before what they act on was committed */
	int seeded_rows; /* escalation rows put in the journal by the test itself */
	char why[200];
};

struct answer {
	enum engine_result r;
	cJSON *body;                      /* ENGINE_ACCEPTED */
	char message[ENGINE_MESSAGE_MAX]; /* otherwise */
};

static const char *str(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	assert_true(cJSON_IsNumber(v));
	return v->valuedouble;
}

static int has(const cJSON *list, const char *k, const char *v)
{
	const cJSON *it;
	cJSON_ArrayForEach(it, list)
	{
		if (str(it, k) && strcmp(str(it, k), v) == 0)
			return 1;
	}
	return 0;
}

/* The runner must only hear of what the journal holds: a job it is handed
 * is committed (and no longer "running" after a replay), a cancellation's
 * admission event is committed, a notification's row is committed. */
static void check_durable(const cJSON *call, void *arg)
{
	struct fx *f = arg;
	const char *c = str(call, "call"), *id = str(call, "id");
	int ok = 1;

	if (strcmp(c, "schedule") == 0) {
		const cJSON *row = fake_store_job(f->store, id);
		ok = row && str(row, "state") && strcmp(str(row, "state"), "running") != 0;
	} else if (strcmp(c, "cancel") == 0) {
		cJSON *ev = fake_store_ops(f->store, "event", id), *it;
		ok = 0;
		cJSON_ArrayForEach(it, ev)
		{
			const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "detail");
			const char *d = str(dt, "decision"), *act = str(dt, "action");
			/* a resolve's admission, or a person's audited cancel/reject */
			ok |= (d && strcmp(d, "cancelled") == 0) ||
			      (act && (strcmp(act, "cancel") == 0 || strcmp(act, "reject") == 0));
		}
		cJSON_Delete(ev);
	} else if (strcmp(c, "deliver") == 0) {
		/* every row sent is a committed one: never more sends than rows */
		cJSON *rows = fake_store_ops(f->store, "escalation", NULL);
		cJSON *sent = fake_runner_calls("deliver");
		ok = cJSON_GetArraySize(sent) <= cJSON_GetArraySize(rows) + f->seeded_rows;
		cJSON_Delete(rows);
		cJSON_Delete(sent);
	}
	if (!ok) {
		print_error("runner told before the journal: %s %s\n", c, id ? id : "");
		f->not_durable++;
	}
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct escalate_conf ec = { .slack_url = SLACK_URL, .pd_routing_key = PD_KEY,
		                        .pd_url = PD_URL,
		                        .external_url = "https://recoveryd.example.com",
		                        .retry_initial = 1, .retry_max = 300 };

	assert_non_null(f);
	fake_runner_reset();
	metrics_reset();
	escalate_configure(&ec);
	f->store = fake_store_new();
	assert_non_null(f->store);
	fake_runner_set_hook(check_durable, f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	int bad = f->not_durable;

	/* a test that failed while holding commits: the engine waits for them */
	fake_store_defer(f->store, 0);
	fake_store_flush(f->store);
	engine_free(f->e);
	store_close(f->store);
	fake_runner_reset();
	free(f);
	assert_int_equal(bad, 0);
	return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Load the playbooks (NULL-terminated texts) through the real loader. */
static struct playbook_set *load_set(const char *const *texts)
{
	const char *tmp = getenv("TMPDIR");
	char dir[256], path[512], err[512];
	struct playbook_set *set = NULL;

	snprintf(dir, sizeof(dir), "%s/rd-engine-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(dir));
	for (int i = 0; texts[i]; i++) {
		snprintf(path, sizeof(path), "%s/%02d.lua", dir, i);
		FILE *fp = fopen(path, "w");
		assert_non_null(fp);
		assert_true(fputs(texts[i], fp) >= 0);
		assert_int_equal(fclose(fp), 0);
	}
	struct playbook_load_opts o = { .dir = dir, .mem_max = MEM_MAX };
	enum rd_status rc = playbook_set_load(&o, &set, err, sizeof(err));
	assert_int_equal(nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS), 0);
	if (rc != RD_OK)
		fail_msg("playbooks: %s", err);
	return set;
}

static struct engine *new_engine(struct fx *f, const char *const *texts, int dry_run, size_t queue_max)
{
	struct engine_opts o = { .store = f->store, .set = load_set(texts), .dry_run = dry_run,
		                     .queue_max = queue_max, .max_in_flight = 4, .mem_max = MEM_MAX };
	f->e = engine_new(&o);
	assert_non_null(f->e);
	return f->e;
}

/* engine_new + engine_start (the replay), as the daemon does. */
static void start(struct fx *f, const char *const *texts, int dry_run, size_t queue_max)
{
	new_engine(f, texts, dry_run, queue_max);
	assert_int_equal(engine_start(f->e), RD_OK);
}

static const struct actor tester = {.name = "tester", .role = ROLE_OPERATOR, .address = "127.0.0.1"};

/* An operator's cancel, with a reason. */
static enum engine_result cancel(struct fx *f, const char *id, struct engine_reply *rp)
{
	struct engine_act a = {.action = EA_CANCEL, .target = id, .reason = "test", .who = &tester};
	return engine_act(f->e, &a, rp);
}

static void submit(struct fx *f, const char *json, const char *playbook, int dry_run, struct answer *a)
{
	struct payload p;
	char err[256];

	if (alert_parse(json, strlen(json), playbook ? ALERT_ALLOW_MANUAL : 0, &p, err, sizeof(err)) !=
	    ALERT_OK)
		fail_msg("payload: %s", err);
	struct engine_reply rp;
	memset(&rp, 0xa5, sizeof(rp)); /* the engine sets every field */
	struct engine_submit_opts so = {.playbook = playbook, .dry_run = dry_run, .who = &tester};
	a->r = engine_submit(f->e, &p, &so, &rp);
	a->body = rp.body;
	memcpy(a->message, rp.message, sizeof(a->message));
	payload_free(&p);
	if (a->r == ENGINE_ACCEPTED) {
		assert_non_null(a->body);
	} else {
		assert_null(a->body);
		assert_non_null(memchr(a->message, '\0', sizeof(a->message)));
		assert_true(a->message[0] != '\0');
	}
}

/* POST /webhook expecting 202: the answer's jobs array. */
static const cJSON *accepted(struct fx *f, const char *json, struct answer *a)
{
	submit(f, json, NULL, 0, a);
	assert_int_equal(a->r, ENGINE_ACCEPTED);
	const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(a->body, "jobs");
	assert_true(cJSON_IsArray(jobs));
	return jobs;
}

/* A refusal: the result and the exact message the API sends (http.c adds
 * the status, the error code and Retry-After). */
static void assert_refused(const struct answer *a, enum engine_result r, const char *message)
{
	assert_int_equal(a->r, r);
	assert_null(a->body);
	assert_string_equal(a->message, message);
}

static int count_calls(const char *call)
{
	cJSON *c = fake_runner_calls(call);
	int n = cJSON_GetArraySize(c);
	cJSON_Delete(c);
	return n;
}

static int count_ops(struct fx *f, const char *op, const char *job_id)
{
	cJSON *c = fake_store_ops(f->store, op, job_id);
	int n = cJSON_GetArraySize(c);
	cJSON_Delete(c);
	return n;
}

/* The decision of the admission events of job id, in order, joined by ','. */
static void decisions(struct fx *f, const char *id, char *buf, size_t len)
{
	cJSON *ev = fake_store_ops(f->store, "event", id), *it;
	size_t o = 0;

	buf[0] = '\0';
	cJSON_ArrayForEach(it, ev)
	{
		if (strcmp(str(it, "type"), "admission") != 0)
			continue;
		const char *d = str(cJSON_GetObjectItemCaseSensitive(it, "detail"), "decision");
		o += (size_t)snprintf(buf + o, len - o, "%s%s", o ? "," : "", d ? d : "?");
		if (o >= len)
			break;
	}
	cJSON_Delete(ev);
}

static void assert_no_secrets(const char *payload)
{
	assert_non_null(payload);
	assert_null(strstr(payload, PD_KEY));
	assert_null(strstr(payload, "routing_key"));
	assert_null(strstr(payload, "T0SECRET"));
	assert_null(strstr(payload, "hooks.slack.com"));
}

static void seed(struct fx *f, const char *id, const char *playbook, const char *key, const char *state,
                 int attempts, double created, double ended, int stalls, int dry_run)
{
	char alert[256];
	const char *fp = strrchr(key, '/') + 1;
	snprintf(alert, sizeof(alert),
	         "{\"labels\":{\"alertname\":\"X\",\"instance\":\"db-1\"},\"annotations\":{},"
	         "\"fingerprint\":\"%s\"}", fp);
	struct job_row r = {
		.id = id, .playbook = playbook, .key = key, .trigger = "webhook", .alert_json = alert,
		.dry_run = dry_run, .state = state, .attempts = attempts, .max_attempts = 3,
		.notifications = 1, .created_at = created, .updated_at = created + 1,
		.started_at = attempts ? created + 1 : 0, .ended_at = ended, .stalls = stalls,
		.outcome = ended ? state : NULL,
	};
	fake_store_seed_job(f->store, &r);
}

/* ---- routing -------------------------------------------------------------- */

static void test_alerts_routed_by_match(void **state)
{
	struct fx *f = *state;
	static const char *const pbs[] = { pb_disk, pb_critical, NULL };
	struct answer a;
	char d[64];

	start(f, pbs, 0, 0);
	int base = fake_store_commits(f->store);
	const cJSON *jobs = accepted(f,
		V4("firing", ALERT("firing", FP1, "\"alertname\":\"DiskFull\",\"severity\":\"warning\"") ","
		             ALERT("firing", FP2, "\"alertname\":\"DiskFull\",\"severity\":\"critical\"") ","
		             ALERT("firing", FP3, "\"alertname\":\"Watchdog\",\"severity\":\"critical\"") ","
		             ALERT("firing", FP4, "\"alertname\":\"Other\",\"severity\":\"info\"")), &a);

	/* DiskFull/critical starts one job per matching playbook; Watchdog
	 * (excluded by !=) and Other match none */
	assert_int_equal(cJSON_GetArraySize(jobs), 3);
	static const char *const want[][2] = { { "disk", "disk/" FP1 }, { "disk", "disk/" FP2 },
		                                   { "critical", "critical/" FP2 } };
	cJSON *sched = fake_runner_calls("schedule");
	assert_int_equal(cJSON_GetArraySize(sched), 3);
	for (int i = 0; i < 3; i++) {
		const cJSON *j = cJSON_GetArrayItem(jobs, i);
		assert_string_equal(str(j, "playbook"), want[i][0]);
		assert_string_equal(str(j, "key"), want[i][1]);
		assert_string_equal(str(j, "state"), "queued");
		assert_int_equal(strlen(str(j, "id")), 32);
		/* handed to the runner in that order, once committed */
		const cJSON *s = cJSON_GetArrayItem(sched, i);
		assert_string_equal(str(s, "id"), str(j, "id"));
		assert_string_equal(str(s, "state"), "queued");
		assert_int_equal((int)num(s, "dry_run"), 0);
		/* the journal row */
		const cJSON *row = fake_store_job(f->store, str(j, "id"));
		assert_non_null(row);
		assert_string_equal(str(row, "state"), "queued");
		assert_string_equal(str(row, "trigger"), "webhook");
		assert_string_equal(str(row, "key"), want[i][1]);
		assert_int_equal((int)num(row, "max_attempts"), 3); /* 1 + retries (2) */
		assert_non_null(strstr(str(row, "alert_json"), i ? FP2 : FP1));
		decisions(f, str(j, "id"), d, sizeof(d));
		assert_string_equal(d, "queued");
	}
	cJSON_Delete(sched);
	assert_string_not_equal(str(cJSON_GetArrayItem(jobs, 1), "id"), str(cJSON_GetArrayItem(jobs, 2), "id"));
	assert_int_equal((int)num(a.body, "unmatched"), 2);
	/* one notification, one atomic batch: 3 jobs + 3 admission events */
	assert_int_equal(fake_store_commits(f->store), base + 1);
	assert_int_equal(cJSON_GetArraySize(fake_store_batch(f->store, base)), 6);
	assert_int_equal(engine_active(f->e), 3);
	assert_true(metrics_get(M_ADMISSIONS, "disk", "queued") == 2);
	assert_true(metrics_get(M_ALERTS_RECEIVED, "firing", NULL) == 4);
	cJSON_Delete(a.body);
}

static void test_trigger_names_the_playbook(void **state)
{
	struct fx *f = *state;
	static const char *const pbs[] = { pb_disk, pb_critical, NULL };
	struct answer a;

	start(f, pbs, 0, 0);
	/* /trigger/disk: the alert goes to disk whatever its labels */
	submit(f, FIRING(FP4, "\"alertname\":\"Other\""), "disk", 0, &a);
	assert_int_equal(a.r, ENGINE_ACCEPTED);
	const cJSON *j = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(a.body, "jobs"), 0);
	assert_string_equal(str(j, "key"), "disk/" FP4);
	assert_int_equal(count_calls("schedule"), 1);
	cJSON_Delete(a.body);

	/* the manual form: a key of its own, the reason kept */
	submit(f, "{\"labels\":{\"alertname\":\"Other\"},\"reason\":\"on-call check\",\"fingerprint\":\"" FP3 "\"}",
	       "disk", 0, &a);
	assert_int_equal(a.r, ENGINE_ACCEPTED);
	j = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(a.body, "jobs"), 0);
	assert_string_equal(str(j, "key"), "disk/manual/" FP3);
	assert_string_equal(str(j, "state"), "queued");
	const cJSON *row = fake_store_job(f->store, str(j, "id"));
	assert_string_equal(str(row, "trigger"), "manual");
	assert_string_equal(str(row, "reason"), "on-call check");
	assert_int_equal(count_calls("schedule"), 2);
	cJSON_Delete(a.body);

	/* a human may not join the Alertmanager job of the same alert: 409 */
	struct answer c;
	accepted(f, FIRING(FP1, DISK), &c);
	const char *am = str(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(c.body, "jobs"), 0), "id");
	int commits = fake_store_commits(f->store);
	submit(f, "{\"labels\":{" DISK "},\"fingerprint\":\"" FP1 "\"}", "disk", 0, &a);
	assert_int_equal(a.r, ENGINE_CONFLICT);
	assert_null(a.body);
	char want[512];
	snprintf(want, sizeof(want),
	         "job %s for this alert was started by Alertmanager and has not ended; a manual "
	         "trigger does not join it: wait for it, or cancel it with POST "
	         "/api/v1/jobs/%s/cancel and trigger again", am, am);
	assert_string_equal(a.message, want);
	assert_int_equal(fake_store_commits(f->store), commits);
	/* nor cancel it */
	submit(f, "{\"labels\":{" DISK "},\"fingerprint\":\"" FP1 "\",\"status\":\"resolved\"}", "disk", 0, &a);
	snprintf(want, sizeof(want),
	         "job %s for this alert was started by Alertmanager; a manual trigger cannot "
	         "cancel it: use POST /api/v1/jobs/%s/cancel", am, am);
	assert_refused(&a, ENGINE_CONFLICT, want);
	assert_int_equal(fake_store_commits(f->store), commits);
	assert_int_equal(count_calls("cancel"), 0);
	cJSON_Delete(c.body);

	/* an unknown playbook: 404, nothing journaled or started */
	int scheduled = count_calls("schedule");
	submit(f, FIRING(FP1, DISK), "no-such-playbook", 0, &a);
	assert_refused(&a, ENGINE_UNKNOWN_PLAYBOOK, "no playbook named 'no-such-playbook' is loaded");
	assert_int_equal(fake_store_commits(f->store), commits);
	assert_int_equal(count_calls("schedule"), scheduled);
	cJSON_Delete(a.body);
}

/* ---- admission ------------------------------------------------------------ */

static void test_repeated_alert_coalesces(void **state)
{
	struct fx *f = *state;
	static const char *const pbs[] = { pb_disk, NULL };
	struct answer a1, a2;
	char d[64];

	start(f, pbs, 0, 0);
	const cJSON *j1 = cJSON_GetArrayItem(accepted(f, FIRING(FP1, DISK), &a1), 0);
	const cJSON *j2 = cJSON_GetArrayItem(accepted(f, FIRING(FP1, DISK), &a2), 0);

	/* the repeat joins the active job: same id, nothing new to run */
	assert_string_equal(str(j2, "state"), "coalesced");
	assert_string_equal(str(j2, "id"), str(j1, "id"));
	assert_string_equal(str(j2, "key"), "disk/" FP1);
	assert_int_equal(count_calls("schedule"), 1);
	assert_int_equal(count_ops(f, "insert_job", NULL), 1);
	assert_int_equal(engine_active(f->e), 1);
	/* and is journaled on that job */
	assert_int_equal((int)num(fake_store_job(f->store, str(j1, "id")), "notifications"), 2);
	decisions(f, str(j1, "id"), d, sizeof(d));
	assert_string_equal(d, "queued,coalesced");
	assert_true(metrics_get(M_ADMISSIONS, "disk", "coalesced") == 1);
	cJSON_Delete(a1.body);
	cJSON_Delete(a2.body);
}

/* A ?wait answer shows the escalations a job's end decided: engine_wait
 * holds until they are journaled, not only until the job left the books
 * (the answer read "escalations": [] and a GET right after showed two). */
static void test_wait_holds_until_the_end_is_escalated(void **state)
{
	struct fx *f = *state;
	static const char *const pbs[] = { pb_disk, NULL };
	struct answer a;
	char id[40];

	start(f, pbs, 0, 0);
	const cJSON *j = cJSON_GetArrayItem(accepted(f, FIRING(FP1, DISK), &a), 0);
	snprintf(id, sizeof(id), "%s", str(j, "id"));
	cJSON_Delete(a.body);
	assert_int_equal(engine_wait(f->e, id, 0), 0);

	fake_store_defer(f->store, 1); /* the writer has not got to the escalation yet */
	assert_int_equal(fake_runner_end(id, 1), 0);
	assert_int_equal(engine_active(f->e), 0);
	assert_int_equal(engine_wait(f->e, id, 0), 0);
	assert_int_equal(fake_store_flush(f->store), 1);
	assert_int_equal(engine_wait(f->e, id, 0), 1);
	cJSON *rows = fake_store_ops(f->store, "escalation", id);
	assert_int_equal(cJSON_GetArraySize(rows), 2);
	cJSON_Delete(rows);
	fake_store_defer(f->store, 0);
}

static void test_cooldown_survives_a_restart(void **state)
{
	struct fx *f = *state;
	static const char *const pbs[] = { pb_disk, NULL };
	struct answer a;
	double now = rd_now();
	char d[64];

	/* disk/FP1's job ended a minute ago (cooldown 600 s); disk/FP2's ended
	 * before its cooldown */
	seed(f, "0000000000000000000000000000c001", "disk", "disk/" FP1, "succeeded", 1, now - 120, now - 60, 0, 0);
	seed(f, "0000000000000000000000000000c002", "disk", "disk/" FP2, "succeeded", 1, now - 800, now - 700, 0, 0);
	start(f, pbs, 0, 0);

	const cJSON *j = cJSON_GetArrayItem(accepted(f, FIRING(FP1, DISK), &a), 0);
	assert_string_equal(str(j, "state"), "cooldown");
	assert_string_equal(str(j, "id"), "0000000000000000000000000000c001"); /* the job that rests the key */
	assert_int_equal(count_calls("schedule"), 0);
	assert_int_equal(count_ops(f, "insert_job", NULL), 0);
	decisions(f, "0000000000000000000000000000c001", d, sizeof(d));
	assert_string_equal(d, "cooldown");
	assert_int_equal(engine_active(f->e), 0);
	cJSON_Delete(a.body);

	j = cJSON_GetArrayItem(accepted(f, FIRING(FP2, DISK), &a), 0);
	assert_string_equal(str(j, "state"), "queued");
	assert_int_equal(count_calls("schedule"), 1);
	cJSON_Delete(a.body);
}

static void test_budget_exhausted_is_recorded_and_escalated(void **state)
{
	struct fx *f = *state;
	static const char *const pbs[] = { pb_tight, NULL };
	struct answer a;
	double now = rd_now();

	/* one start of the two an hour was made before the restart */
	seed(f, "0000000000000000000000000000b001", "tight", "tight/" FP3, "succeeded", 1, now - 600, now - 590, 0, 0);
	start(f, pbs, 0, 0);
	const cJSON *j = cJSON_GetArrayItem(accepted(f, FIRING(FP1, "\"alertname\":\"Tight\""), &a), 0);
	assert_string_equal(str(j, "state"), "queued");
	cJSON_Delete(a.body);

	j = cJSON_GetArrayItem(accepted(f, FIRING(FP2, "\"alertname\":\"Tight\",\"instance\":\"db-2\""), &a), 0);
	assert_string_equal(str(j, "state"), "budget_exhausted");
	assert_non_null(str(j, "id"));
	char id[40];
	snprintf(id, sizeof(id), "%s", str(j, "id"));
	cJSON_Delete(a.body);

	/* recorded as a job that humans see, never run */
	const cJSON *row = fake_store_job(f->store, id);
	assert_non_null(row);
	assert_string_equal(str(row, "state"), "budget_exhausted");
	assert_string_equal(str(row, "outcome"), "budget_exhausted");
	assert_string_equal(str(row, "error"), "run budget of 2 per 3600s exhausted");
	assert_int_equal(count_calls("schedule"), 1);
	assert_int_equal(engine_active(f->e), 1);
	assert_true(metrics_get(M_JOBS, "tight", "budget_exhausted") == 1);

	/* escalated to both sinks, journaled without secrets, then sent */
	cJSON *rows = fake_store_ops(f->store, "escalation", id), *it;
	assert_int_equal(cJSON_GetArraySize(rows), 2);
	assert_true(has(rows, "sink", "slack"));
	assert_true(has(rows, "sink", "pagerduty"));
	cJSON_ArrayForEach(it, rows)
	{
		assert_string_equal(str(it, "kind"), "trigger");
		assert_string_equal(str(it, "reason"), "budget_exhausted");
		assert_string_equal(str(it, "state"), "pending");
		assert_string_equal(str(it, "incident_key"), "tight/" FP2);
		assert_no_secrets(str(it, "payload"));
		if (strcmp(str(it, "sink"), "pagerduty") == 0) {
			cJSON *ev = cJSON_Parse(str(it, "payload"));
			assert_string_equal(str(ev, "event_action"), "trigger");
			assert_string_equal(str(ev, "dedup_key"), "recoveryd/tight/" FP2);
			const cJSON *p = cJSON_GetObjectItemCaseSensitive(ev, "payload");
			assert_string_equal(str(p, "source"), "db-2");
			assert_non_null(strstr(str(p, "summary"), "budget"));
			cJSON_Delete(ev);
		}
	}
	/* both sent, each to its sink's endpoint */
	cJSON *sent = fake_runner_calls("deliver");
	assert_int_equal(cJSON_GetArraySize(sent), 2);
	assert_true(has(sent, "url", SLACK_URL));
	assert_true(has(sent, "url", PD_URL));
	cJSON_Delete(sent);
	cJSON_Delete(rows);
}

/* A paused playbook: its alert gets a job in state paused, escalated with
 * reason paused, that spends no budget; the pause is journaled and comes
 * back with a restart; a trigger is refused. */
static void test_pause_holds_alerts_across_a_restart(void **state)
{
	struct fx *f = *state;
	static const char *const pbs[] = { pb_tight, NULL };
	struct answer a;
	struct engine_reply rp;
	struct engine_act pause = {.action = EA_PAUSE, .target = "tight", .reason = "migration",
	                           .who = &tester};
	char id[40];

	start(f, pbs, 0, 0);
	assert_int_equal(engine_act(f->e, &pause, &rp), ENGINE_DONE);
	assert_string_equal(str(rp.body, "by"), "tester");
	cJSON_Delete(rp.body);
	assert_true(metrics_get(M_PAUSED, "tight", NULL) == 1);
	cJSON *ops = fake_store_ops(f->store, "pause", NULL);
	assert_int_equal(cJSON_GetArraySize(ops), 1);
	assert_string_equal(str(cJSON_GetArrayItem(ops, 0), "reason"), "migration");
	cJSON_Delete(ops);

	/* three alerts against a budget of two: all paused, none run */
	for (int i = 0; i < 3; i++) {
		const char *fps[] = { FP1, FP2, FP3 };
		char json[1024];
		snprintf(json, sizeof(json), FIRING("%s", "\"alertname\":\"Tight\""), fps[i]);
		const cJSON *j = cJSON_GetArrayItem(accepted(f, json, &a), 0);
		assert_string_equal(str(j, "state"), "paused");
		snprintf(id, sizeof(id), "%s", str(j, "id"));
		cJSON_Delete(a.body);
	}
	const cJSON *row = fake_store_job(f->store, id);
	assert_string_equal(str(row, "state"), "paused");
	assert_string_equal(str(row, "outcome"), "paused");
	assert_string_equal(str(row, "error"), "playbook paused by tester: migration");
	assert_int_equal(count_calls("schedule"), 0);
	cJSON *rows = fake_store_ops(f->store, "escalation", id);
	assert_int_equal(cJSON_GetArraySize(rows), 2);
	assert_string_equal(str(cJSON_GetArrayItem(rows, 0), "reason"), "paused");
	cJSON_Delete(rows);
	/* a person's trigger is refused while paused */
	submit(f, "{\"labels\":{\"alertname\":\"Tight\"},\"reason\":\"r\"}", "tight", 0, &a);
	assert_int_equal(a.r, ENGINE_CONFLICT);
	assert_non_null(strstr(a.message, "resume"));

	/* a restart finds the pause in the journal (and sends the pending
	 * rows again: the fake never delivers them) */
	cJSON *all = fake_store_ops(f->store, "escalation", NULL);
	f->seeded_rows += cJSON_GetArraySize(all);
	cJSON_Delete(all);
	engine_free(f->e);
	f->e = NULL;
	metrics_reset();
	start(f, pbs, 0, 0);
	assert_true(metrics_get(M_PAUSED, "tight", NULL) == 1);
	const cJSON *j = cJSON_GetArrayItem(accepted(f, FIRING(FP4, "\"alertname\":\"Tight\""), &a), 0);
	assert_string_equal(str(j, "state"), "paused");
	cJSON_Delete(a.body);

	/* resumed: the budget is whole */
	struct engine_act resume = {.action = EA_RESUME, .target = "tight", .who = &tester};
	assert_int_equal(engine_act(f->e, &resume, &rp), ENGINE_DONE);
	cJSON_Delete(rp.body);
	assert_true(metrics_get(M_PAUSED, "tight", NULL) == 0);
	assert_int_equal(engine_act(f->e, &resume, &rp), ENGINE_CONFLICT);
	for (int i = 0; i < 2; i++) {
		j = cJSON_GetArrayItem(accepted(f, i ? FIRING(FP2, "\"alertname\":\"Tight\"")
		                                     : FIRING(FP1, "\"alertname\":\"Tight\""), &a), 0);
		assert_string_equal(str(j, "state"), "queued");
		cJSON_Delete(a.body);
	}
}

/* Approve and reject act only on a job that awaits approval, and only once
 * the act is journaled. */
static void test_approve_and_reject(void **state)
{
	struct fx *f = *state;
	static const char *const pbs[] = { pb_disk, NULL };
	struct engine_reply rp;
	double now = rd_now();
	const struct actor scoped = {.name = "sam", .role = ROLE_OPERATOR, .scope = ",other,"};
	struct engine_act a = {.action = EA_APPROVE, .target = "0000000000000000000000000000a001", .reason = "ok", .who = &tester};

	seed(f, "0000000000000000000000000000a001", "disk", "disk/" FP1, "queued", 0, now - 5, 0, 0, 0);
	seed(f, "0000000000000000000000000000a002", "disk", "disk/" FP2, "awaiting_approval", 1, now - 5, 0, 0, 0);
	seed(f, "0000000000000000000000000000a003", "disk", "disk/" FP3, "awaiting_approval", 1, now - 5, 0, 0, 0);
	start(f, pbs, 0, 0);
	/* the waiting jobs are unfinished: resumed into the runner */
	assert_int_equal(count_calls("schedule"), 3);

	assert_int_equal(engine_act(f->e, &a, &rp), ENGINE_CONFLICT);
	assert_non_null(strstr(rp.message, "queued"));
	a.target = "0000000000000000000000000000a002";
	a.who = &scoped;
	assert_int_equal(engine_act(f->e, &a, &rp), ENGINE_FORBIDDEN);
	a.who = &tester;
	fake_store_fail_commits(f->store, 1);
	assert_int_equal(engine_act(f->e, &a, &rp), ENGINE_UNAVAILABLE);
	assert_int_equal(count_calls("approve"), 0);
	assert_int_equal(engine_act(f->e, &a, &rp), ENGINE_DONE);
	assert_string_equal(str(rp.body, "state"), "queued");
	cJSON_Delete(rp.body);
	assert_int_equal(count_calls("approve"), 1);

	/* reject needs a reason; it is a cancel marked as a rejection */
	struct engine_act rj = {.action = EA_REJECT, .target = "0000000000000000000000000000a003", .who = &tester};
	assert_int_equal(engine_act(f->e, &rj, &rp), ENGINE_INVALID);
	rj.reason = "wrong subject";
	assert_int_equal(engine_act(f->e, &rj, &rp), ENGINE_DONE);
	assert_string_equal(str(rp.body, "state"), "cancelled");
	cJSON_Delete(rp.body);
	assert_int_equal(count_calls("cancel"), 1);
	cJSON *au = fake_store_ops(f->store, "audit", NULL);
	assert_int_equal(cJSON_GetArraySize(au), 2);
	assert_string_equal(str(cJSON_GetArrayItem(au, 0), "action"), "approve");
	assert_string_equal(str(cJSON_GetArrayItem(au, 1), "action"), "reject");
	assert_string_equal(str(cJSON_GetArrayItem(au, 1), "reason"), "wrong subject");
	cJSON_Delete(au);
}

static void test_queue_full_is_503(void **state)
{
	struct fx *f = *state;
	static const char *const pbs[] = { pb_disk, NULL };
	struct answer a;

	start(f, pbs, 0, 2);
	cJSON *jobs = (cJSON *)accepted(f, V4("firing", ALERT("firing", FP1, DISK) "," ALERT("firing", FP2, DISK)), &a);
	assert_int_equal(cJSON_GetArraySize(jobs), 2);
	cJSON_Delete(a.body);
	int commits = fake_store_commits(f->store);

	submit(f, FIRING(FP3, DISK), NULL, 0, &a);
	assert_refused(&a, ENGINE_QUEUE_FULL, "the job queue is full");
	cJSON_Delete(a.body);
	/* nothing journaled, nothing started: Alertmanager retries a 503 */
	assert_int_equal(fake_store_commits(f->store), commits);
	assert_int_equal(count_calls("schedule"), 2);
	assert_int_equal(engine_active(f->e), 2);
	assert_true(metrics_get(M_REJECTED, "queue_full", NULL) == 1);
}

/* ---- resolved alerts -------------------------------------------------------- */

static void test_resolved_alert_cancels_its_job(void **state)
{
	struct fx *f = *state;
	static const char *const pbs[] = { pb_disk, NULL };
	struct answer a;
	char id[40], d[64];

	start(f, pbs, 0, 0);
	snprintf(id, sizeof(id), "%s", str(cJSON_GetArrayItem(accepted(f, FIRING(FP1, DISK), &a), 0), "id"));
	cJSON_Delete(a.body);

	const cJSON *j = cJSON_GetArrayItem(accepted(f, RESOLVED(FP1, DISK), &a), 0);
	assert_string_equal(str(j, "id"), id);
	assert_string_equal(str(j, "state"), "cancelled");
	cJSON_Delete(a.body);
	cJSON *c = fake_runner_calls("cancel");
	assert_int_equal(cJSON_GetArraySize(c), 1);
	assert_string_equal(str(cJSON_GetArrayItem(c, 0), "id"), id);
	cJSON_Delete(c);
	decisions(f, id, d, sizeof(d));
	assert_string_equal(d, "queued,cancelled");

	/* Alertmanager repeats resolved notifications: answered, not re-sent */
	j = cJSON_GetArrayItem(accepted(f, RESOLVED(FP1, DISK), &a), 0);
	assert_string_equal(str(j, "state"), "cancelled");
	cJSON_Delete(a.body);
	assert_int_equal(count_calls("cancel"), 1);

	/* a resolved alert never starts a job */
	assert_int_equal(cJSON_GetArraySize(accepted(f, RESOLVED(FP2, DISK), &a)), 0);
	cJSON_Delete(a.body);
	assert_int_equal(count_calls("schedule"), 1);
	assert_int_equal(count_ops(f, "insert_job", NULL), 1);
	assert_int_equal(count_calls("cancel"), 1);
}

/* ---- the journal fails -------------------------------------------------------- */

static void test_journal_failure_acknowledges_nothing(void **state)
{
	struct fx *f = *state;
	static const char *const pbs[] = { pb_tight, NULL };
	struct answer a;
	char why[200];

	start(f, pbs, 0, 0);
	fake_store_fail_commits(f->store, 1);
	submit(f, FIRING(FP1, "\"alertname\":\"Tight\""), NULL, 0, &a);
	assert_refused(&a, ENGINE_UNAVAILABLE, "the job journal cannot commit; retry later");
	cJSON_Delete(a.body);
	assert_int_equal(count_calls("schedule"), 0);
	assert_int_equal(engine_active(f->e), 0);
	assert_int_equal(count_ops(f, "insert_job", NULL), 0);
	assert_true(metrics_get(M_REJECTED, "journal_error", NULL) == 1);
	assert_int_equal(engine_ready(f->e, why, sizeof(why)), 0);

	/* Alertmanager's retry: a fresh start, neither coalesced into the job
	 * that was never journaled nor charged twice to the budget (2 an hour) */
	static const char *const again[] = { FIRING(FP1, "\"alertname\":\"Tight\""),
		                                 FIRING(FP2, "\"alertname\":\"Tight\"") };
	for (int i = 0; i < 2; i++) {
		const cJSON *j = cJSON_GetArrayItem(accepted(f, again[i], &a), 0);
		assert_string_equal(str(j, "state"), "queued");
		cJSON_Delete(a.body);
	}
	assert_int_equal(count_calls("schedule"), 2);
	assert_int_equal(engine_ready(f->e, why, sizeof(why)), 1);
}

/* A resolved notification whose cancellation could not be journaled is
 * answered 503; when Alertmanager sends it again, it must cancel the job. */
static void test_journal_failure_on_resolve_then_retry_cancels(void **state)
{
	struct fx *f = *state;
	static const char *const pbs[] = { pb_disk, NULL };
	struct answer a;
	char id[40];

	start(f, pbs, 0, 0);
	snprintf(id, sizeof(id), "%s", str(cJSON_GetArrayItem(accepted(f, FIRING(FP1, DISK), &a), 0), "id"));
	cJSON_Delete(a.body);

	fake_store_fail_commits(f->store, 1);
	submit(f, RESOLVED(FP1, DISK), NULL, 0, &a);
	assert_refused(&a, ENGINE_UNAVAILABLE, "the job journal cannot commit; retry later");
	cJSON_Delete(a.body);
	assert_int_equal(count_calls("cancel"), 0);
	assert_int_equal(engine_active(f->e), 1);

	const cJSON *j = cJSON_GetArrayItem(accepted(f, RESOLVED(FP1, DISK), &a), 0);
	assert_string_equal(str(j, "state"), "cancelled");
	cJSON_Delete(a.body);
	cJSON *c = fake_runner_calls("cancel");
	assert_int_equal(cJSON_GetArraySize(c), 1);
	assert_string_equal(str(cJSON_GetArrayItem(c, 0), "id"), id);
	cJSON_Delete(c);
}

/* ---- start-up replay ---------------------------------------------------------- */

#define J_QUEUED "00000000000000000000000000000001"
#define J_WAIT "00000000000000000000000000000002"
#define J_RUN_IDEM "00000000000000000000000000000003"
#define J_RUN_PLAIN "00000000000000000000000000000004"
#define J_STALLED "00000000000000000000000000000005"
#define J_POISON "00000000000000000000000000000006"
#define J_ORPHAN "00000000000000000000000000000007"
#define J_DONE "00000000000000000000000000000008"
#define J_RUN_DRY "00000000000000000000000000000009"

static const cJSON *find_call(const cJSON *calls, const char *id)
{
	const cJSON *it;
	cJSON_ArrayForEach(it, calls)
	{
		if (strcmp(str(it, "id"), id) == 0)
			return it;
	}
	return NULL;
}

static const cJSON *attempt_op(const cJSON *ops, int n)
{
	const cJSON *it;
	cJSON_ArrayForEach(it, ops)
	{
		if ((int)num(it, "n") == n)
			return it;
	}
	return NULL;
}

static void test_replay_applies_the_crash_rules(void **state)
{
	struct fx *f = *state;
	static const char *const pbs[] = { pb_idem, pb_plain, NULL };
	double now = rd_now();
	struct job_row w;

	seed(f, J_QUEUED, "idem", "idem/" FP1, "queued", 0, now - 50, 0, 0, 0);
	seed(f, J_RUN_IDEM, "idem", "idem/" FP2, "running", 2, now - 50, 0, 0, 0);
	seed(f, J_RUN_PLAIN, "plain", "plain/" FP1, "running", 1, now - 50, 0, 0, 0);
	seed(f, J_STALLED, "idem", "idem/" FP3, "running", 1, now - 50, 0, 1, 0);
	seed(f, J_POISON, "idem", "idem/" FP4, "running", 1, now - 50, 0, 2, 0);
	seed(f, J_ORPHAN, "gone", "gone/" FP1, "queued", 0, now - 50, 0, 0, 0);
	seed(f, J_DONE, "plain", "plain/" FP3, "succeeded", 1, now - 50, now - 40, 0, 0);
	/* waiting for its second attempt in 30 s */
	w = (struct job_row){ .id = J_WAIT, .playbook = "plain", .key = "plain/" FP2, .trigger = "webhook",
		                  .alert_json = "{\"labels\":{\"alertname\":\"Plain\"}}", .state = "retry_wait",
		                  .attempts = 1, .max_attempts = 3, .notifications = 1, .created_at = now - 50,
		                  .started_at = now - 49, .next_run_at = now + 30 };
	fake_store_seed_job(f->store, &w);

	start(f, pbs, 0, 0);

	/* resumed: queued, retry_wait (at its time), the idempotent running
	 * job and the one the watchdog stopped once */
	cJSON *sched = fake_runner_calls("schedule");
	assert_int_equal(cJSON_GetArraySize(sched), 4);
	const cJSON *s = find_call(sched, J_QUEUED);
	assert_non_null(s);
	assert_string_equal(str(s, "state"), "queued");
	s = find_call(sched, J_WAIT);
	assert_non_null(s);
	assert_string_equal(str(s, "state"), "retry_wait");
	assert_true(num(s, "next_run_at") == now + 30);
	assert_int_equal((int)num(s, "attempts"), 1);
	s = find_call(sched, J_RUN_IDEM);
	assert_non_null(s);
	assert_string_equal(str(s, "state"), "queued");
	assert_int_equal((int)num(s, "attempts"), 1); /* the interrupted attempt does not count */
	s = find_call(sched, J_STALLED);
	assert_non_null(s);
	assert_string_equal(str(s, "state"), "queued");
	assert_int_equal(engine_active(f->e), 4);
	cJSON_Delete(sched);

	/* the interrupted attempts are recorded */
	cJSON *ops = fake_store_ops(f->store, "attempt", J_RUN_IDEM);
	const cJSON *at = attempt_op(ops, 2);
	assert_non_null(at);
	assert_string_equal(str(at, "result"), "interrupted");
	assert_string_equal(str(at, "error"), "interrupted: recoveryd stopped during the attempt");
	cJSON_Delete(ops);
	assert_string_equal(str(fake_store_job(f->store, J_RUN_IDEM), "state"), "queued");
	ops = fake_store_ops(f->store, "attempt", J_STALLED);
	assert_string_equal(str(attempt_op(ops, 1), "error"),
	                    "interrupted: the watchdog restarted recoveryd during the attempt");
	cJSON_Delete(ops);

	/* not idempotent: failed, outcome interrupted, escalated */
	const cJSON *row = fake_store_job(f->store, J_RUN_PLAIN);
	assert_string_equal(str(row, "state"), "failed");
	assert_string_equal(str(row, "outcome"), "interrupted");
	assert_true(num(row, "ended_at") >= now);
	ops = fake_store_ops(f->store, "attempt", J_RUN_PLAIN);
	assert_string_equal(str(attempt_op(ops, 1), "result"), "interrupted");
	cJSON_Delete(ops);
	ops = fake_store_ops(f->store, "escalation", J_RUN_PLAIN);
	assert_int_equal(cJSON_GetArraySize(ops), 2);
	const cJSON *it;
	cJSON_ArrayForEach(it, ops)
	{
		assert_string_equal(str(it, "kind"), "trigger");
		assert_string_equal(str(it, "reason"), "interrupted");
		assert_string_equal(str(it, "state"), "pending");
		assert_no_secrets(str(it, "payload"));
	}
	cJSON_Delete(ops);

	/* stalled the loop twice: poisoned, idempotent or not, never run again */
	row = fake_store_job(f->store, J_POISON);
	assert_string_equal(str(row, "state"), "failed");
	assert_string_equal(str(row, "outcome"), "poisoned");
	assert_true(strncmp(str(row, "error"), "poisoned", 8) == 0);
	ops = fake_store_ops(f->store, "escalation", J_POISON);
	assert_int_equal(cJSON_GetArraySize(ops), 2); /* default sinks: both configured */
	assert_string_equal(str(cJSON_GetArrayItem(ops, 0), "reason"), "poisoned");
	cJSON_Delete(ops);

	/* its playbook is gone: failed with a reason, not run */
	row = fake_store_job(f->store, J_ORPHAN);
	assert_string_equal(str(row, "state"), "failed");
	assert_string_equal(str(row, "error"), "playbook 'gone' is no longer loaded");

	/* an ended job is left alone */
	assert_int_equal(count_ops(f, "update_job", J_DONE), 0);

	/* what the runner was told came after the replay batch, and it was
	 * started last */
	cJSON *sent = fake_runner_calls("deliver");
	assert_true(cJSON_GetArraySize(sent) >= 4);
	cJSON_Delete(sent);
	assert_int_equal(count_ops(f, "escalation", J_RUN_PLAIN), 2);
	assert_int_equal(count_ops(f, "escalation", J_POISON), 2);
	const cJSON *log = fake_runner_log();
	assert_string_equal(str(cJSON_GetArrayItem(log, cJSON_GetArraySize(log) - 1), "call"), "start");
}

static void test_replay_commit_failure_starts_nothing(void **state)
{
	struct fx *f = *state;
	static const char *const pbs[] = { pb_idem, pb_plain, NULL };
	double now = rd_now();

	seed(f, J_QUEUED, "idem", "idem/" FP1, "queued", 0, now - 50, 0, 0, 0);
	seed(f, J_RUN_IDEM, "idem", "idem/" FP2, "running", 1, now - 50, 0, 0, 0);
	seed(f, J_RUN_PLAIN, "plain", "plain/" FP1, "running", 1, now - 50, 0, 0, 0);
	new_engine(f, pbs, 0, 0);
	fake_store_fail_commits(f->store, 1);
	assert_int_not_equal(engine_start(f->e), RD_OK);
	/* the replay's decisions are not durable: nothing runs, nothing is sent */
	assert_int_equal(count_calls("schedule"), 0);
	assert_int_equal(count_calls("deliver"), 0);
	assert_int_equal(count_calls("start"), 0);
	assert_string_equal(str(fake_store_job(f->store, J_RUN_PLAIN), "state"), "running");
}

/* Open incidents and undelivered notifications are in the journal, so a
 * restart keeps them: the resolve still goes out. */
static void test_incident_resolved_after_restart(void **state)
{
	struct fx *f = *state;
	static const char *const pbs[] = { pb_disk, NULL };
	double now = rd_now();
	struct answer a;

	seed(f, J_RUN_PLAIN, "disk", "disk/" FP1, "failed", 3, now - 300, now - 200, 0, 0);
	static const char *const sinks[] = { "slack", "pagerduty" };
	for (int i = 0; i < 2; i++) {
		struct escalation_row e = { .id = i ? "e0000000000000000000000000000002" : "e0000000000000000000000000000001",
			                        .job_id = J_RUN_PLAIN, .incident_key = "disk/" FP1, .sink = sinks[i],
			                        .kind = "trigger", .reason = "failed", .state = "delivered",
			                        .attempts = 1, .created_at = now - 200, .payload = "{}" };
		fake_store_seed_escalation(f->store, &e);
		f->seeded_rows++;
	}
	/* still to send after the restart */
	struct escalation_row pending = { .id = "e0000000000000000000000000000003", .job_id = J_RUN_PLAIN,
		                              .incident_key = "disk/" FP1, .sink = "slack", .kind = "notice",
		                              .reason = "recovered", .state = "retrying", .attempts = 2,
		                              .created_at = now - 100, .payload = "{\"text\":\"x\"}" };
	fake_store_seed_escalation(f->store, &pending);
	f->seeded_rows++;
	start(f, pbs, 0, 0);
	/* only the undelivered notice (to Slack) is sent again */
	cJSON *sent = fake_runner_calls("deliver");
	assert_int_equal(cJSON_GetArraySize(sent), 1);
	assert_string_equal(str(cJSON_GetArrayItem(sent, 0), "url"), SLACK_URL);
	cJSON_Delete(sent);

	assert_int_equal(cJSON_GetArraySize(accepted(f, RESOLVED(FP1, DISK), &a)), 0);
	cJSON_Delete(a.body);
	cJSON *rows = fake_store_ops(f->store, "escalation", J_RUN_PLAIN), *it;
	assert_int_equal(cJSON_GetArraySize(rows), 2);
	cJSON_ArrayForEach(it, rows)
	{
		assert_string_equal(str(it, "kind"), "resolve");
		assert_string_equal(str(it, "reason"), "alert resolved");
		assert_string_equal(str(it, "incident_key"), "disk/" FP1);
		assert_string_equal(str(it, "state"), "pending");
		assert_no_secrets(str(it, "payload"));
		if (strcmp(str(it, "sink"), "pagerduty") == 0) {
			cJSON *ev = cJSON_Parse(str(it, "payload"));
			cJSON *want = cJSON_Parse("{\"event_action\":\"resolve\",\"dedup_key\":\"recoveryd/disk/" FP1 "\"}");
			assert_true(cJSON_Compare(ev, want, 1));
			cJSON_Delete(ev);
			cJSON_Delete(want);
		}
	}
	cJSON_Delete(rows);
	assert_int_equal(count_calls("deliver"), 3);

	/* a second resolved notification sends nothing more */
	accepted(f, RESOLVED(FP1, DISK), &a);
	cJSON_Delete(a.body);
	assert_int_equal(count_ops(f, "escalation", NULL), 2);
	assert_int_equal(count_calls("deliver"), 3);
}

/* ---- dry-run ------------------------------------------------------------------ */

static void test_dry_run_jobs(void **state)
{
	struct fx *f = *state;
	static const char *const pbs[] = { pb_disk, pb_tight, NULL };
	struct answer a;

	start(f, pbs, 0, 0);
	/* ?dry_run=1 on /trigger: this job only */
	submit(f, FIRING(FP1, DISK), "disk", 1, &a);
	assert_int_equal(a.r, ENGINE_ACCEPTED);
	const char *id = str(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(a.body, "jobs"), 0), "id");
	assert_int_equal((int)num(fake_store_job(f->store, id), "dry_run"), 1);
	cJSON_Delete(a.body);
	const cJSON *j = cJSON_GetArrayItem(accepted(f, FIRING(FP2, DISK), &a), 0);
	assert_int_equal((int)num(fake_store_job(f->store, str(j, "id")), "dry_run"), 0);
	cJSON_Delete(a.body);
	cJSON *sched = fake_runner_calls("schedule");
	assert_int_equal((int)num(cJSON_GetArrayItem(sched, 0), "dry_run"), 1);
	assert_int_equal((int)num(cJSON_GetArrayItem(sched, 1), "dry_run"), 0);
	cJSON_Delete(sched);

	/* a dry-run escalation is planned, never sent, and opens no incident */
	static const char *const tight[] = { FIRING(FP1, "\"alertname\":\"Tight\""),
		                                 FIRING(FP2, "\"alertname\":\"Tight\""),
		                                 FIRING(FP3, "\"alertname\":\"Tight\"") };
	for (int i = 0; i < 3; i++) {
		submit(f, tight[i], "tight", 1, &a);
		assert_int_equal(a.r, ENGINE_ACCEPTED);
		cJSON_Delete(a.body);
	}
	cJSON *rows = fake_store_ops(f->store, "escalation", NULL), *it;
	assert_int_equal(cJSON_GetArraySize(rows), 2); /* the third start, over budget */
	cJSON_ArrayForEach(it, rows)
	{
		assert_string_equal(str(it, "reason"), "budget_exhausted");
		assert_string_equal(str(it, "state"), "planned");
		assert_no_secrets(str(it, "payload"));
	}
	cJSON_Delete(rows);
	assert_int_equal(count_calls("deliver"), 0);
	assert_true(metrics_get(M_ESCALATIONS, "pagerduty", "planned") == 1);
	accepted(f, RESOLVED(FP3, "\"alertname\":\"Tight\""), &a);
	cJSON_Delete(a.body);
	assert_int_equal(count_ops(f, "escalation", NULL), 2);
}

static void test_global_dry_run(void **state)
{
	struct fx *f = *state;
	static const char *const pbs[] = { pb_disk, NULL };
	struct answer a;

	start(f, pbs, 1, 0);
	const cJSON *j = cJSON_GetArrayItem(accepted(f, FIRING(FP1, DISK), &a), 0);
	assert_string_equal(str(j, "state"), "queued");
	assert_int_equal((int)num(fake_store_job(f->store, str(j, "id")), "dry_run"), 1);
	cJSON *sched = fake_runner_calls("schedule");
	assert_int_equal((int)num(cJSON_GetArrayItem(sched, 0), "dry_run"), 1);
	cJSON_Delete(sched);
	cJSON_Delete(a.body);
}

/* ---- operator cancel and drain ---------------------------------------------------- */

static void test_operator_cancel(void **state)
{
	struct fx *f = *state;
	static const char *const pbs[] = { pb_disk, NULL };
	struct answer a;
	struct engine_reply rp;
	char id[40], d[64];

	seed(f, J_DONE, "disk", "disk/" FP4, "succeeded", 1, rd_now() - 50, rd_now() - 40, 0, 0);
	start(f, pbs, 0, 0);
	snprintf(id, sizeof(id), "%s", str(cJSON_GetArrayItem(accepted(f, FIRING(FP1, DISK), &a), 0), "id"));
	cJSON_Delete(a.body);

	assert_int_equal(cancel(f, id, &rp), ENGINE_CANCEL_REQUESTED);
	assert_string_equal(str(rp.body, "id"), id);
	assert_string_equal(str(rp.body, "state"), "cancelled"); /* queued: it ends without running */
	cJSON_Delete(rp.body);
	assert_int_equal(count_calls("cancel"), 1);
	decisions(f, id, d, sizeof(d));
	assert_string_equal(d, "queued");
	/* who, from where and why: an audit row and the same on the job */
	cJSON *au = fake_store_ops(f->store, "audit", NULL);
	assert_int_equal(cJSON_GetArraySize(au), 1);
	assert_string_equal(str(cJSON_GetArrayItem(au, 0), "action"), "cancel");
	assert_string_equal(str(cJSON_GetArrayItem(au, 0), "principal"), "tester");
	assert_string_equal(str(cJSON_GetArrayItem(au, 0), "address"), "127.0.0.1");
	assert_string_equal(str(cJSON_GetArrayItem(au, 0), "reason"), "test");
	assert_string_equal(str(cJSON_GetArrayItem(au, 0), "job_id"), id);
	cJSON_Delete(au);

	assert_int_equal(cancel(f, J_DONE, &rp), ENGINE_CONFLICT);
	assert_null(rp.body);
	assert_string_equal(rp.message, "job already ended (succeeded)");
	assert_int_equal(cancel(f, "ffffffffffffffffffffffffffffffff", &rp), ENGINE_NOT_FOUND);
	assert_null(rp.body);
	assert_string_equal(rp.message, "no such job");
	assert_int_equal(count_calls("cancel"), 1);
}

static void test_draining_is_503(void **state)
{
	struct fx *f = *state;
	static const char *const pbs[] = { pb_disk, NULL };
	struct answer a;
	char why[200];

	start(f, pbs, 0, 0);
	engine_drain(f->e, 0);
	assert_int_equal(count_calls("drain"), 1);
	assert_true(engine_draining(f->e));
	assert_int_equal(engine_ready(f->e, why, sizeof(why)), 0);
	int commits = fake_store_commits(f->store);
	submit(f, FIRING(FP1, DISK), NULL, 0, &a);
	assert_refused(&a, ENGINE_DRAINING, "recoveryd is shutting down; retry on another replica");
	cJSON_Delete(a.body);
	assert_int_equal(fake_store_commits(f->store), commits);
	assert_int_equal(count_calls("schedule"), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_alerts_routed_by_match, setup, teardown),
		cmocka_unit_test_setup_teardown(test_trigger_names_the_playbook, setup, teardown),
		cmocka_unit_test_setup_teardown(test_repeated_alert_coalesces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wait_holds_until_the_end_is_escalated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cooldown_survives_a_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_budget_exhausted_is_recorded_and_escalated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pause_holds_alerts_across_a_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_approve_and_reject, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_full_is_503, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolved_alert_cancels_its_job, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_failure_acknowledges_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_journal_failure_on_resolve_then_retry_cancels, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replay_applies_the_crash_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replay_commit_failure_starts_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_incident_resolved_after_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dry_run_jobs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_global_dry_run, setup, teardown),
		cmocka_unit_test_setup_teardown(test_operator_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_draining_is_503, setup, teardown),
	};
	struct escalate_conf none = { 0 };
	int rc;

	metrics_init();
	log_set_level(LOG_ERROR); /* refusals are logged at warn: keep the output readable */
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	escalate_configure(&none);
	fake_runner_reset();
	return rc;
}

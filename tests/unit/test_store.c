/* Unit tests of the job journal: the job record JSON, list and scan
 * queries, audit and pauses, plans, group commit with per-batch isolation,
 * durability across reopen, concurrent readers and open errors, and the
 * leases of several replicas (claims, takeovers, fencing, renewals,
 * releases, the outbox claimed once, two journal handles racing, ending a
 * replica's leases, the v2 migration), and decisions inside the writer's
 * transaction (store_batch_call: what a call reads, what it queues, a call
 * that fails) on both backends.
 *
 * One binary, two backends. By default each test opens a SQLite file in a
 * temporary directory. With RECOVERYD_TEST_PG_URL set (ctest's
 * pg.test_store, against the cluster of scripts/pg.sh; its password in
 * PGPASSFILE) the same tests open that PostgreSQL database, emptied before
 * each test (DROP SCHEMA public CASCADE). Tests of what only SQLite has (the
 * file, WAL, ":memory:", the v1 migration, raw sqlite3 checks) skip under
 * PostgreSQL, and the test_pg_* tests, which skip under SQLite, cover the
 * same ground there: schema and version table, a newer schema refused, open
 * errors, a lost connection; test_pg_admission_serialized (the admission
 * lock of two journal handles) is PostgreSQL's alone. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "recoveryd/common.h"
#include "recoveryd/log.h"
#include "recoveryd/metrics.h"
#include "recoveryd/store.h"
#include "../../src/store_impl.h"

#include <cjson/cJSON.h>

/* Stand-ins for a standalone build before src/log.c or src/metrics.c
 * exist; never defined in the CMake build. */
#ifdef STORE_TEST_STUB_LOG
void log_kv(enum log_level lvl, const char *job, const char *msg, ...)
{
	(void)lvl;
	(void)job;
	(void)msg;
}
void log_set_fd(int fd)
{
	(void)fd;
}
#endif
#ifdef STORE_TEST_STUB_METRICS
static atomic_int stub_journal_errors;
void metrics_init(void)
{
}
void metrics_add(enum metric_id id, const char *l1, const char *l2, double v)
{
	(void)l1;
	(void)l2;
	if (id == M_JOURNAL_ERRORS)
		atomic_fetch_add(&stub_journal_errors, (int)v);
}
double metrics_get(enum metric_id id, const char *l1, const char *l2)
{
	(void)l1;
	(void)l2;
	return id == M_JOURNAL_ERRORS ? atomic_load(&stub_journal_errors) : 0;
}
#endif

/* 2023-11-14T22:13:20Z */
#define T0 1700000000.0

/* The PostgreSQL database under test (RECOVERYD_TEST_PG_URL), or NULL for
 * SQLite. */
static const char *pg_url;

/* A test of what only one backend has skips under the other. */
#define SQLITE_ONLY() do { if (pg_url) skip(); } while (0)
#define PG_ONLY() do { if (!pg_url) skip(); } while (0)

/* ---- PostgreSQL, directly (libpq) ---- */

static void pg_quiet(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

/* A connection of our own to the database under test, or NULL with the
 * reason in err. */
static PGconn *pg_try_connect(char *err, size_t errlen)
{
	PGconn *c = PQconnectdb(pg_url);

	if (!c || PQstatus(c) != CONNECTION_OK) {
		snprintf(err, errlen, "%s", c ? PQerrorMessage(c) : "out of memory");
		PQfinish(c);
		return NULL;
	}
	/* DROP ... CASCADE lists what it drops as notices */
	PQsetNoticeProcessor(c, pg_quiet, NULL);
	return c;
}

/* The connections a test opened with pg_connect: a test that fails
 * leaves them to teardown. */
static PGconn *pg_conns[4];

static PGconn *pg_connect(void)
{
	char err[512];
	PGconn *c = pg_try_connect(err, sizeof(err));

	if (!c)
		fail_msg("connect to %s: %s", pg_url, err);
	for (size_t i = 0; i < sizeof(pg_conns) / sizeof(pg_conns[0]); i++) {
		if (!pg_conns[i]) {
			pg_conns[i] = c;
			return c;
		}
	}
	PQfinish(c);
	fail_msg("pg_connect: too many connections");
	return NULL;
}

/* c, or every connection of the test when NULL. */
static void pg_close(PGconn *c)
{
	for (size_t i = 0; i < sizeof(pg_conns) / sizeof(pg_conns[0]); i++) {
		if (pg_conns[i] && (!c || pg_conns[i] == c)) {
			PQfinish(pg_conns[i]);
			pg_conns[i] = NULL;
		}
	}
}

/* Runs sql (statements separated by ;); 0, or -1 with the error in err. */
static int pg_try_exec(PGconn *c, const char *sql, char *err, size_t errlen)
{
	PGresult *r = PQexec(c, sql);
	ExecStatusType st = PQresultStatus(r);
	int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;

	if (!ok)
		snprintf(err, errlen, "%s", PQerrorMessage(c));
	PQclear(r);
	return ok ? 0 : -1;
}

static void pg_exec(PGconn *c, const char *sql)
{
	char err[512];

	if (pg_try_exec(c, sql, err, sizeof(err)) < 0)
		fail_msg("%s: %s", sql, err);
}

/* The first column of the one row sql returns, as text (NULL for NULL),
 * into buf. */
static const char *pg_value(PGconn *c, const char *sql, char *buf, size_t len)
{
	PGresult *r = PQexec(c, sql);

	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
		char e[512];

		snprintf(e, sizeof(e), "%s",
		         PQresultStatus(r) == PGRES_TUPLES_OK ? "not one row" : PQerrorMessage(c));
		PQclear(r);
		fail_msg("%s: %s", sql, e);
	}
	if (PQgetisnull(r, 0, 0)) {
		PQclear(r);
		return NULL;
	}
	snprintf(buf, len, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	return buf;
}

static long long pg_int(PGconn *c, const char *sql)
{
	char buf[64];
	const char *v = pg_value(c, sql, buf, sizeof(buf));

	if (!v)
		fail_msg("%s: NULL", sql);
	return atoll(v);
}

/* An empty database: whatever a test (or the journal) made is dropped. */
static const char pg_reset_sql[] = "DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;";

static int pg_reset(char *err, size_t errlen)
{
	PGconn *c = pg_try_connect(err, errlen);
	int rc;

	if (!c)
		return -1;
	rc = pg_try_exec(c, pg_reset_sql, err, errlen);
	PQfinish(c);
	return rc;
}

/* ---- fixture ---- */

struct fix {
	char dir[256];
	char db[300];  /* the journal: a SQLite file in dir, or pg_url */
};

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	const char *tmp = getenv("TMPDIR");
	char err[512];

	if (!f)
		return -1;
	if (pg_url && pg_reset(err, sizeof(err)) < 0) {
		print_error("cannot empty %s: %s\n", pg_url, err);
		free(f);
		return -1;
	}
	snprintf(f->dir, sizeof(f->dir), "%s/recoveryd-store-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(f->dir)) {
		free(f);
		return -1;
	}
	snprintf(f->db, sizeof(f->db), "%s/journal.db", f->dir);
	if (pg_url)
		snprintf(f->db, sizeof(f->db), "%s", pg_url);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fix *f = *state;
	DIR *d = opendir(f->dir);
	struct dirent *e;
	char p[600];

	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", f->dir, e->d_name);
		unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(f->dir);
	free(f);
	pg_close(NULL);
	return 0;
}

static struct store *open_ok(const char *path)
{
	struct store *s = NULL;
	char err[512];

	if (store_open(path, &s, err, sizeof(err)) != RD_OK)
		fail_msg("store_open: %s", err);
	assert_non_null(s);
	return s;
}

static struct job_row job(const char *id, const char *playbook, const char *state, double created)
{
	struct job_row j = {
		.id = id,
		.playbook = playbook,
		.key = "k",
		.trigger = "webhook",
		.alert_json = "{\"labels\":{\"alertname\":\"X\"}}",
		.state = state,
		.max_attempts = 3,
		.created_at = created,
		.updated_at = created,
	};
	return j;
}

static void insert(struct store *s, const struct job_row *j)
{
	struct store_batch *b = store_batch_new();

	assert_non_null(b);
	assert_int_equal(store_batch_insert_job(b, j), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
}

static cJSON *record(struct store *s, const char *id)
{
	cJSON *rec = NULL;

	assert_int_equal(store_job_json(s, id, &rec), RD_OK);
	assert_non_null(rec);
	return rec;
}

static const char *str(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	if (!cJSON_IsString(v))
		fail_msg("field %s is not a string", name);
	return v->valuestring;
}

static int has_null(const cJSON *o, const char *name)
{
	return cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, name));
}

static double num(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	if (!cJSON_IsNumber(v))
		fail_msg("field %s is not a number", name);
	return v->valuedouble;
}

static const cJSON *arr(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	if (!cJSON_IsArray(v))
		fail_msg("field %s is not an array", name);
	return v;
}

static int exists(struct store *s, const char *id)
{
	cJSON *rec = NULL;

	assert_int_equal(store_job_json(s, id, &rec), RD_OK);
	cJSON_Delete(rec);
	return rec != NULL;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* ---- tests ---- */

/* SQLite only; test_pg_schema is its PostgreSQL counterpart. */
static void test_open_wal_schema(void **state)
{
	struct fix *f = *state;
	struct store *s;
	struct job_row j = job("w1", "pb", "queued", T0);
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	char wal[320];
	int n = 0;

	SQLITE_ONLY();
	s = open_ok(f->db);
	insert(s, &j);
	assert_int_equal(store_healthy(s), 1);
	/* A WAL journal keeps its -wal file next to the database. */
	snprintf(wal, sizeof(wal), "%s-wal", f->db);
	assert_int_equal(access(wal, F_OK), 0);

	assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), 4);
	sqlite3_finalize(st);
	assert_int_equal(sqlite3_prepare_v2(db,
	                                    "SELECT count(*) FROM sqlite_schema WHERE type='table' AND "
	                                    "name IN ('jobs','attempts','events','escalations')",
	                                    -1, &st, NULL),
	                 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	n = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	assert_int_equal(n, 4);
	/* The committed row is visible to another process-level reader. */
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT state FROM jobs WHERE id='w1'", -1, &st, NULL),
	                 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "queued");
	sqlite3_finalize(st);
	sqlite3_close(db);
	store_close(s);
}

static void test_job_record(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct job_row j = job("job-1", "pb", "queued", T0 + 0.25);
	struct attempt_row a1 = { .n = 1, .started_at = T0 + 1.5, .verify_ok = -1 };
	struct attempt_row a2 = { .n = 2, .started_at = T0 + 20, .verify_ok = -1 };
	struct store_batch *b;
	cJSON *rec;
	const cJSON *atts, *acts, *logs, *evs, *v, *e;

	j.key = "pb/fp1";
	j.dry_run = 1;
	j.alert_json = "{\"labels\":{\"alertname\":\"SettingsSyncJobFailure\"},\"fingerprint\":\"fp1\"}";
	insert(s, &j);

	/* The attempt starts: job update, attempt row and three kinds of event. */
	b = store_batch_new();
	j.state = "running";
	j.attempts = 1;
	j.started_at = T0 + 1.5;
	j.updated_at = T0 + 1.5;
	assert_int_equal(store_batch_update_job(b, &j), 0);
	assert_int_equal(store_batch_attempt(b, "job-1", &a1), 0);
	assert_int_equal(store_batch_event(b, "job-1", 0, "admission", "{\"decision\":\"queued\"}", 0,
	                                   T0 + 0.25),
	                 0);
	assert_int_equal(store_batch_event(b, "job-1", 1, "action",
	                                   "{\"primitive\":\"http\",\"method\":\"POST\","
	                                   "\"ts\":\"spoofed\"}",
	                                   1, T0 + 2),
	                 0);
	assert_int_equal(store_batch_event(b, "job-1", 1, "log",
	                                   "{\"level\":\"info\",\"msg\":\"hello\"}", 0, T0 + 3),
	                 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);

	/* Attempt 1 fails verification, attempt 2 succeeds without verify. */
	b = store_batch_new();
	a1.ended_at = T0 + 10;
	a1.result = "failed";
	a1.error = "verify failed";
	a1.verify_ok = 0;
	a1.verify_reason = "still firing";
	a2.ended_at = T0 + 30;
	a2.result = "succeeded";
	assert_int_equal(store_batch_attempt(b, "job-1", &a1), 0);
	assert_int_equal(store_batch_attempt(b, "job-1", &a2), 0);
	j.state = "succeeded";
	j.outcome = "succeeded";
	j.attempts = 2;
	j.ended_at = T0 + 30;
	j.updated_at = T0 + 30;
	assert_int_equal(store_batch_update_job(b, &j), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);

	rec = record(s, "job-1");
	assert_string_equal(str(rec, "id"), "job-1");
	assert_string_equal(str(rec, "playbook"), "pb");
	assert_string_equal(str(rec, "key"), "pb/fp1");
	assert_string_equal(str(rec, "trigger"), "webhook");
	assert_true(has_null(rec, "reason"));
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, "dry_run")));
	assert_string_equal(str(rec, "state"), "succeeded");
	assert_string_equal(str(rec, "outcome"), "succeeded");
	assert_true(has_null(rec, "error"));
	assert_int_equal((int)num(rec, "attempts_made"), 2);
	assert_int_equal((int)num(rec, "max_attempts"), 3);
	assert_int_equal((int)num(rec, "notifications"), 0);
	assert_string_equal(str(rec, "created_at"), "2023-11-14T22:13:20.250Z");
	assert_string_equal(str(rec, "started_at"), "2023-11-14T22:13:21.500Z");
	assert_string_equal(str(rec, "ended_at"), "2023-11-14T22:13:50.000Z");
	assert_true(has_null(rec, "next_attempt_at"));
	v = cJSON_GetObjectItemCaseSensitive(rec, "alert");
	assert_true(cJSON_IsObject(v));
	assert_string_equal(str(cJSON_GetObjectItemCaseSensitive(v, "labels"), "alertname"),
	                    "SettingsSyncJobFailure");

	atts = arr(rec, "attempts");
	assert_int_equal(cJSON_GetArraySize(atts), 2);
	e = cJSON_GetArrayItem(atts, 0);
	assert_int_equal((int)num(e, "n"), 1);
	assert_string_equal(str(e, "result"), "failed");
	assert_string_equal(str(e, "error"), "verify failed");
	assert_string_equal(str(e, "ended_at"), "2023-11-14T22:13:30.000Z");
	v = cJSON_GetObjectItemCaseSensitive(e, "verify");
	assert_true(cJSON_IsObject(v));
	assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(v, "ok")));
	assert_string_equal(str(v, "reason"), "still firing");
	e = cJSON_GetArrayItem(atts, 1);
	assert_int_equal((int)num(e, "n"), 2);
	assert_true(has_null(e, "verify"));
	assert_true(has_null(e, "error"));

	acts = arr(rec, "actions");
	assert_int_equal(cJSON_GetArraySize(acts), 1);
	e = cJSON_GetArrayItem(acts, 0);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "planned")));
	assert_string_equal(str(e, "primitive"), "http");
	assert_string_equal(str(e, "method"), "POST");
	assert_int_equal((int)num(e, "attempt"), 1);
	/* The journal's own ts wins over a detail key of the same name. */
	assert_string_equal(str(e, "ts"), "2023-11-14T22:13:22.000Z");

	logs = arr(rec, "log");
	assert_int_equal(cJSON_GetArraySize(logs), 1);
	e = cJSON_GetArrayItem(logs, 0);
	assert_string_equal(str(e, "msg"), "hello");
	assert_string_equal(str(e, "level"), "info");
	assert_null(cJSON_GetObjectItemCaseSensitive(e, "type"));

	evs = arr(rec, "events");
	assert_int_equal(cJSON_GetArraySize(evs), 1);
	e = cJSON_GetArrayItem(evs, 0);
	assert_string_equal(str(e, "type"), "admission");
	assert_string_equal(str(e, "decision"), "queued");
	assert_true(has_null(e, "attempt"));

	assert_int_equal(cJSON_GetArraySize(arr(rec, "escalations")), 0);
	assert_null(cJSON_GetObjectItemCaseSensitive(rec, "events_truncated"));
	cJSON_Delete(rec);

	/* Unknown ids are not an error, just no record. */
	rec = (cJSON *)1;
	assert_int_equal(store_job_json(s, "nope", &rec), RD_OK);
	assert_null(rec);
	store_close(s);
}

static void test_events_capped(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct job_row j = job("chatty", "pb", "running", T0);
	struct store_batch *b;
	char detail[64];
	cJSON *rec;
	const cJSON *logs;

	insert(s, &j);
	b = store_batch_new();
	for (int i = 0; i < 1005; i++) {
		snprintf(detail, sizeof(detail), "{\"i\":%d}", i);
		assert_int_equal(store_batch_event(b, "chatty", 1, "log", detail, 0, T0 + i), 0);
	}
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	rec = record(s, "chatty");
	logs = arr(rec, "log");
	assert_int_equal(cJSON_GetArraySize(logs), 1000);
	/* The newest 1000, oldest first. */
	assert_int_equal((int)num(cJSON_GetArrayItem(logs, 0), "i"), 5);
	assert_int_equal((int)num(cJSON_GetArrayItem(logs, 999), "i"), 1004);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, "events_truncated")));
	cJSON_Delete(rec);
	store_close(s);
}

static void check_ids(struct store *s, const char *st, const char *pb, int limit,
                      const char *const *want, int nwant)
{
	cJSON *list = NULL;

	assert_int_equal(store_jobs_json(s, st, pb, limit, &list), RD_OK);
	assert_true(cJSON_IsArray(list));
	assert_int_equal(cJSON_GetArraySize(list), nwant);
	for (int i = 0; i < nwant; i++) {
		const cJSON *e = cJSON_GetArrayItem(list, i);

		assert_string_equal(str(e, "id"), want[i]);
		assert_string_equal(str(e, "created_at"), "2023-11-14T22:13:20.000Z");
		assert_null(cJSON_GetObjectItemCaseSensitive(e, "alert"));
		assert_null(cJSON_GetObjectItemCaseSensitive(e, "attempts"));
	}
	cJSON_Delete(list);
}

static void test_list(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	static const struct {
		const char *id, *pb, *st;
	} rows[] = {
		{ "a", "pb1", "queued" }, { "b", "pb2", "running" }, { "c", "pb1", "succeeded" },
		{ "d", "pb1", "queued" }, { "e", "pb2", "queued" },
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct job_row j = job(rows[i].id, rows[i].pb, rows[i].st, T0);
		insert(s, &j);
	}
	check_ids(s, NULL, NULL, 100, (const char *[]){ "e", "d", "c", "b", "a" }, 5);
	check_ids(s, "queued", NULL, 100, (const char *[]){ "e", "d", "a" }, 3);
	check_ids(s, NULL, "pb1", 100, (const char *[]){ "d", "c", "a" }, 3);
	check_ids(s, "queued", "pb1", 100, (const char *[]){ "d", "a" }, 2);
	check_ids(s, "failed", NULL, 100, NULL, 0);
	check_ids(s, NULL, NULL, 2, (const char *[]){ "e", "d" }, 2);
	/* Out-of-range limits are clamped, not rejected. */
	check_ids(s, NULL, NULL, 0, (const char *[]){ "e" }, 1);
	check_ids(s, NULL, NULL, -5, (const char *[]){ "e" }, 1);
	check_ids(s, NULL, NULL, 1000000, (const char *[]){ "e", "d", "c", "b", "a" }, 5);
	store_close(s);
}

/* One page of store_jobs_page as "id,id,...|next-or-0". */
static void list_page(struct store *s, const struct jobs_query *q, char *out, size_t len,
                     long long *next)
{
	cJSON *list = NULL;
	size_t n = 0;

	assert_int_equal(store_jobs_page(s, q, &list, next), RD_OK);
	out[0] = '\0';
	for (const cJSON *e = list ? list->child : NULL; e; e = e->next)
		n += (size_t)snprintf(out + n, len - n, "%s%s:%s", n ? "," : "", str(e, "id"),
		                      cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(e, "alertname"))
		                              ? "-"
		                              : str(e, "alertname"));
	cJSON_Delete(list);
}

/* History: a page and the cursor of the next, time range and alertname,
 * with and without the indexed filters. */
static void test_list_pages(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	static const struct {
		const char *id, *pb, *st, *alert;
		double at;
	} rows[] = {
		{ "a", "pb1", "failed", "{\"labels\":{\"alertname\":\"Disk\"}}", T0 },
		{ "b", "pb2", "failed", "{\"labels\":{\"alertname\":\"Cpu\"}}", T0 + 10 },
		{ "c", "pb1", "failed", "{\"labels\":{\"alertname\":\"Disk\"}}", T0 + 20 },
		{ "d", "pb1", "succeeded", "{\"labels\":{}}", T0 + 30 },
		{ "e", "pb1", "failed", "{\"labels\":{\"alertname\":\"Disk\"}}", T0 + 40 },
	};
	struct jobs_query q = {.limit = 2};
	char got[256];
	long long next, first;

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct job_row j = job(rows[i].id, rows[i].pb, rows[i].st, rows[i].at);
		j.alert_json = rows[i].alert;
		insert(s, &j);
	}
	list_page(s, &q, got, sizeof(got), &next);
	assert_string_equal(got, "e:Disk,d:-");
	assert_true(next > 0);
	first = next;
	q.before = next;
	list_page(s, &q, got, sizeof(got), &next);
	assert_string_equal(got, "c:Disk,b:Cpu");
	assert_true(next > 0 && next < first);
	q.before = next;
	list_page(s, &q, got, sizeof(got), &next);
	assert_string_equal(got, "a:Disk");
	assert_int_equal(next, 0);
	/* A page that ends exactly at the last row has no next. */
	q = (struct jobs_query){.limit = 5};
	list_page(s, &q, got, sizeof(got), &next);
	assert_int_equal(next, 0);

	/* Filters, alone and with the indexed state and playbook. */
	q = (struct jobs_query){.limit = 10, .alertname = "Disk"};
	list_page(s, &q, got, sizeof(got), &next);
	assert_string_equal(got, "e:Disk,c:Disk,a:Disk");
	q = (struct jobs_query){.limit = 10, .since = T0 + 10, .until = T0 + 30};
	list_page(s, &q, got, sizeof(got), &next);
	assert_string_equal(got, "d:-,c:Disk,b:Cpu");
	q = (struct jobs_query){.limit = 1, .state = "failed", .playbook = "pb1", .alertname = "Disk",
	                        .until = T0 + 30};
	list_page(s, &q, got, sizeof(got), &next);
	assert_string_equal(got, "c:Disk");
	q.before = next;
	list_page(s, &q, got, sizeof(got), &next);
	assert_string_equal(got, "a:Disk");
	assert_int_equal(next, 0);
	q = (struct jobs_query){.limit = 10, .state = "failed", .alertname = "Cpu"};
	list_page(s, &q, got, sizeof(got), &next);
	assert_string_equal(got, "b:Cpu");
	q = (struct jobs_query){.limit = 10, .playbook = "pb2", .alertname = "Disk"};
	list_page(s, &q, got, sizeof(got), &next);
	assert_string_equal(got, "");
	store_close(s);
}

/* GET /api/v1/playbooks' stats: what admission counts, from the journal. */
static void test_playbook_stats(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	static const struct {
		const char *id, *key, *st, *trigger;
		double created, ended;
	} rows[] = {
		{ "j1", "pb/a", "succeeded", "webhook", T0, T0 + 5 },
		{ "j2", "pb/b", "failed", "webhook", T0 + 100, T0 + 110 },
		{ "j3", "pb/a", "budget_exhausted", "webhook", T0 + 120, T0 + 120 },
		{ "j4", "pb/manual/c", "succeeded", "manual", T0 + 130, T0 + 140 },
		{ "j5", "pb/d", "paused", "webhook", T0 + 150, T0 + 150 },
		{ "j6", "pb/e", "running", "webhook", T0 + 160, 0 },
	};
	cJSON *pb = cJSON_CreateObject(), *st, *c;

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct job_row j = job(rows[i].id, "pb", rows[i].st, rows[i].created);
		j.key = rows[i].key;
		j.trigger = rows[i].trigger;
		j.ended_at = rows[i].ended;
		insert(s, &j);
	}
	/* Budget since T0 + 50: j2, j4, j6 (not exhausted, not paused).
	 * Cooldown 60 s since T0 + 80: pb/b until T0 + 170, pb/a (T0 + 120:
	 * exhausted still ends a key's run); not the manual key, nor paused. */
	assert_int_equal(store_playbook_stats(s, "pb", T0 + 50, T0 + 80, 60, pb), RD_OK);
	st = cJSON_GetObjectItemCaseSensitive(pb, "stats");
	assert_int_equal((int)num(st, "budget_used"), 3);
	c = cJSON_GetObjectItemCaseSensitive(st, "cooldowns");
	assert_int_equal(cJSON_GetArraySize(c), 2);
	assert_string_equal(str(cJSON_GetArrayItem(c, 0), "key"), "pb/a");
	assert_string_equal(str(cJSON_GetArrayItem(c, 1), "key"), "pb/b");
	assert_string_equal(str(cJSON_GetArrayItem(c, 1), "until"), "2023-11-14T22:16:10.000Z");
	assert_string_equal(str(cJSON_GetObjectItemCaseSensitive(st, "last_job"), "id"), "j6");
	cJSON_Delete(pb);
	/* No budget, no cooldown, no job. */
	pb = cJSON_CreateObject();
	assert_int_equal(store_playbook_stats(s, "other", 0, 0, 0, pb), RD_OK);
	st = cJSON_GetObjectItemCaseSensitive(pb, "stats");
	assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(st, "budget_used")));
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(st, "cooldowns")), 0);
	assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(st, "last_job")));
	cJSON_Delete(pb);
	store_close(s);
}

static void audit_seven(struct store *s);

struct pruned {
	int calls, jobs, audit;
};

static void on_pruned(int jobs, int audit, void *arg)
{
	struct pruned *p = arg;

	p->calls++;
	p->jobs = jobs;
	p->audit = audit;
}

static struct pruned prune(struct store *s, double before, int max)
{
	struct store_batch *b = store_batch_new();
	struct pruned p = {0};

	assert_non_null(b);
	assert_int_equal(store_batch_prune(b, before, max, on_pruned, &p), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	assert_int_equal(p.calls, 1);
	return p;
}

static void escalation(struct store *s, const char *id, const char *job_id, const char *kind,
                       const char *state, const char *incident)
{
	struct store_batch *b = store_batch_new();
	struct escalation_row e = {.id = id, .job_id = job_id, .incident_key = incident,
	                           .sink = "slack", .kind = kind, .reason = "failed", .state = state,
	                           .created_at = T0, .updated_at = T0};

	assert_non_null(b);
	assert_int_equal(store_batch_escalation(b, &e), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
}

/* Retention: ended jobs go oldest first in bounded batches, with their
 * rows; unfinished jobs, unsent escalations and open incidents stay. */
static void test_prune(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	static const struct {
		const char *id, *st;
		double ended;
	} rows[] = {
		{ "old1", "succeeded", T0 + 1 }, { "old2", "failed", T0 + 2 },
		{ "old3", "cancelled", T0 + 3 }, { "open", "failed", T0 + 4 },
		{ "unsent", "failed", T0 + 5 }, { "closed", "failed", T0 + 6 },
		{ "fixer", "succeeded", T0 + 7 }, { "live", "running", 0 },
		{ "new", "succeeded", T0 + 500 },
	};
	struct pruned p;
	char got[256];
	long long next;
	struct jobs_query q = {.limit = 100};
	cJSON *rec;

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct job_row j = job(rows[i].id, "pb", rows[i].st, T0);
		j.ended_at = rows[i].ended;
		insert(s, &j);
	}
	/* old1 has an attempt and an event: they go with it (cascade). */
	{
		struct store_batch *b = store_batch_new();
		struct attempt_row a = {.n = 1, .started_at = T0, .ended_at = T0 + 1, .result = "succeeded"};
		assert_int_equal(store_batch_attempt(b, "old1", &a), 0);
		assert_int_equal(store_batch_event(b, "old1", 1, "log", "{\"msg\":\"hi\"}", 0, T0), 0);
		assert_int_equal(store_commit(s, b, 1), RD_OK);
	}
	escalation(s, "e1", "old2", "trigger", "failed", "pb/a");          /* permanently failed: done */
	escalation(s, "e2", "open", "trigger", "delivered", "pb/open");    /* incident still open */
	escalation(s, "e3", "unsent", "trigger", "retrying", "pb/unsent"); /* still to send */
	escalation(s, "e4", "closed", "trigger", "delivered", "pb/closed");
	escalation(s, "e5", "fixer", "resolve", "delivered", "pb/closed"); /* closes e4 */
	audit_seven(s);

	/* Bounded: two at a time, oldest first. */
	p = prune(s, T0 + 100, 2);
	assert_int_equal(p.jobs, 2);
	assert_int_equal(p.audit, 2);
	rec = (cJSON *)1;
	assert_int_equal(store_job_json(s, "old1", &rec), RD_OK);
	assert_null(rec);
	p = prune(s, T0 + 100, 100);
	assert_int_equal(p.jobs, 3); /* old3, closed, fixer */
	assert_int_equal(p.audit, 5);
	p = prune(s, T0 + 100, 100);
	assert_int_equal(p.jobs, 0);
	assert_int_equal(p.audit, 0);
	list_page(s, &q, got, sizeof(got), &next);
	assert_string_equal(got, "new:X,live:X,unsent:X,open:X");
	store_close(s);
}

struct seen {
	char *ids[16];
	int n;
	int dry_run_of_q;
	char *playbook_of_q;
};

static void scan_cb(const struct job_row *j, void *arg)
{
	struct seen *seen = arg;

	if (seen->n < 16)
		seen->ids[seen->n++] = strdup(j->id);
	if (strcmp(j->id, "q") == 0) {
		seen->dry_run_of_q = j->dry_run;
		seen->playbook_of_q = strdup(j->playbook);
	}
}

/* A callback may use the journal itself: the scan holds no lock. */
static void scan_cb_commit(const struct job_row *j, void *arg)
{
	struct store *s = arg;
	struct store_batch *b = store_batch_new();

	assert_int_equal(store_batch_event(b, j->id, 0, "replay", NULL, 0, T0), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
}

static void test_scan(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	double now = rd_now();
	struct job_row j;
	struct seen seen = { 0 };
	const char *want[] = { "q", "r", "w", "recent", "recent-start" };
	cJSON *rec;

	j = job("q", "pbq", "queued", now - 50);
	j.dry_run = 1;
	insert(s, &j);
	j = job("r", "pb", "running", now - 40);
	j.started_at = now - 40;
	insert(s, &j);
	j = job("w", "pb", "retry_wait", now - 9000);
	j.started_at = now - 9000;
	j.next_run_at = now + 10;
	insert(s, &j);
	j = job("old", "pb", "succeeded", now - 9000);
	j.started_at = now - 8000;
	j.ended_at = now - 7200;
	insert(s, &j);
	j = job("recent", "pb", "failed", now - 100);
	j.started_at = now - 100;
	j.ended_at = now - 10;
	insert(s, &j);
	j = job("recent-start", "pb", "cancelled", now - 9000);
	j.started_at = now - 30;
	insert(s, &j);
	j = job("old-cancelled", "pb", "cancelled", now - 9000);
	insert(s, &j);

	assert_int_equal(store_scan_jobs(s, now - 3600, scan_cb, &seen), RD_OK);
	assert_int_equal(seen.n, 5);
	for (int i = 0; i < seen.n; i++)
		assert_string_equal(seen.ids[i], want[i]);
	assert_int_equal(seen.dry_run_of_q, 1);
	assert_string_equal(seen.playbook_of_q, "pbq");
	for (int i = 0; i < seen.n; i++)
		free(seen.ids[i]);
	free(seen.playbook_of_q);

	assert_int_equal(store_scan_jobs(s, now - 3600, scan_cb_commit, s), RD_OK);
	rec = record(s, "recent");
	assert_int_equal(cJSON_GetArraySize(arr(rec, "events")), 1);
	cJSON_Delete(rec);
	store_close(s);
}

#define GC_THREADS 8
#define GC_COMMITS 50

struct gc_arg {
	struct store *s;
	int t;
	atomic_int *failures;
};

static void *gc_thread(void *p)
{
	struct gc_arg *a = p;
	char id[32];

	for (int i = 0; i < GC_COMMITS; i++) {
		struct store_batch *b = store_batch_new();
		struct job_row j;

		snprintf(id, sizeof(id), "g-%d-%d", a->t, i);
		j = job(id, "group", "queued", T0);
		if (!b || store_batch_insert_job(b, &j) < 0 ||
		    store_batch_event(b, id, 0, "admission", "{\"decision\":\"queued\"}", 0, T0) < 0 ||
		    store_commit(a->s, b, 1) != RD_OK)
			atomic_fetch_add(a->failures, 1);
	}
	return NULL;
}

static void test_group_commit(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	pthread_t th[GC_THREADS];
	struct gc_arg args[GC_THREADS];
	atomic_int failures = 0;
	unsigned long t0, b0, t1, b1;
	cJSON *list = NULL;

	store_stats(s, &t0, &b0);
	for (int i = 0; i < GC_THREADS; i++) {
		args[i] = (struct gc_arg){ s, i, &failures };
		assert_int_equal(pthread_create(&th[i], NULL, gc_thread, &args[i]), 0);
	}
	for (int i = 0; i < GC_THREADS; i++)
		pthread_join(th[i], NULL);
	store_stats(s, &t1, &b1);
	assert_int_equal(atomic_load(&failures), 0);
	assert_int_equal(b1 - b0, GC_THREADS * GC_COMMITS);
	print_message("group commit: %lu batches in %lu transactions\n", b1 - b0, t1 - t0);
	assert_true(t1 - t0 < b1 - b0);

	assert_int_equal(store_jobs_json(s, NULL, "group", 1000, &list), RD_OK);
	assert_int_equal(cJSON_GetArraySize(list), GC_THREADS * GC_COMMITS);
	cJSON_Delete(list);
	for (int t = 0; t < GC_THREADS; t++) {
		for (int i = 0; i < GC_COMMITS; i += 7) {
			char id[32];
			cJSON *rec;

			snprintf(id, sizeof(id), "g-%d-%d", t, i);
			rec = record(s, id);
			assert_int_equal(cJSON_GetArraySize(arr(rec, "events")), 1);
			cJSON_Delete(rec);
		}
	}
	store_close(s);
}

struct one_commit {
	struct store *s;
	struct store_batch *b;
	enum rd_status r;
};

/* Another connection holding the journal's write lock, so that the
 * writer waits: SQLite's BEGIN IMMEDIATE, or PostgreSQL's lock on the jobs
 * table (reads go on, writes to jobs wait). */
struct outside_lock {
	sqlite3 *db;
	PGconn *pg;
};

static void lock_writes(const struct fix *f, struct outside_lock *l)
{
	memset(l, 0, sizeof(*l));
	if (pg_url) {
		l->pg = pg_connect();
		pg_exec(l->pg, "BEGIN; LOCK TABLE jobs IN EXCLUSIVE MODE");
		return;
	}
	assert_int_equal(sqlite3_open_v2(f->db, &l->db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(l->db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
}

static void unlock_writes(struct outside_lock *l, const char *how)
{
	if (l->pg) {
		pg_exec(l->pg, how);
		pg_close(l->pg);
	} else {
		assert_int_equal(sqlite3_exec(l->db, how, NULL, NULL, NULL), SQLITE_OK);
		sqlite3_close(l->db);
	}
	memset(l, 0, sizeof(*l));
}

static void *commit_thread(void *p)
{
	struct one_commit *c = p;

	c->r = store_commit(c->s, c->b, 1);
	return NULL;
}

/* A batch that violates a constraint fails alone: it shares a transaction
 * with a good batch, which commits. To make them share one, an outside
 * connection holds the write lock while both are queued. */
/* store_commit_cb's callbacks come in the order the batches were handed
 * over, also when one transaction commits several. */
struct order_log {
	pthread_mutex_t mu;
	char seen[16];
	int n;
};

struct order_arg {
	struct order_log *log;
	char name;
};

static void order_done(enum rd_status r, void *arg)
{
	struct order_arg *a = arg;

	assert_int_equal(r, RD_OK);
	pthread_mutex_lock(&a->log->mu);
	a->log->seen[a->log->n++] = a->name;
	pthread_mutex_unlock(&a->log->mu);
}

static void test_callbacks_in_order(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct order_log log = {.mu = PTHREAD_MUTEX_INITIALIZER};
	struct order_arg args[5];
	struct outside_lock lock;
	struct store_batch *pilot;
	struct job_row j;
	char id[8];

	lock_writes(f, &lock);
	/* The writer takes the pilot and waits for the lock; the five that
	 * follow queue up and go in one transaction. */
	pilot = store_batch_new();
	j = job("pilot", "pb", "queued", T0);
	assert_int_equal(store_batch_insert_job(pilot, &j), 0);
	assert_int_equal(store_commit(s, pilot, 0), RD_OK);
	sleep_ms(100);
	for (int i = 0; i < 5; i++) {
		struct store_batch *b = store_batch_new();
		snprintf(id, sizeof(id), "o%d", i);
		j = job(id, "pb", "queued", T0);
		assert_int_equal(store_batch_insert_job(b, &j), 0);
		args[i] = (struct order_arg){&log, (char)('A' + i)};
		assert_int_equal(store_commit_cb(s, b, order_done, &args[i]), RD_OK);
	}
	sleep_ms(100);
	unlock_writes(&lock, "COMMIT");
	store_close(s); /* commits what is queued, reports it */
	assert_int_equal(log.n, 5);
	assert_memory_equal(log.seen, "ABCDE", 5);
}

static void test_bad_batch_isolated(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct job_row dup = job("dup", "pb", "queued", T0), j;
	struct one_commit bad = { s, NULL, RD_OK }, good = { s, NULL, RD_ERR };
	struct store_batch *pilot;
	pthread_t tb, tg;
	unsigned long t0, b0, t1, b1;
	struct outside_lock lock;
	cJSON *rec;

	insert(s, &dup);
	lock_writes(f, &lock);
	store_stats(s, &t0, &b0);

	/* The writer takes the pilot and waits for the lock (in BEGIN with
	 * SQLite, in the pilot's insert with PostgreSQL). */
	pilot = store_batch_new();
	j = job("pilot", "pb", "queued", T0);
	assert_int_equal(store_batch_insert_job(pilot, &j), 0);
	assert_int_equal(store_commit(s, pilot, 0), RD_OK);
	sleep_ms(100);

	bad.b = store_batch_new();
	j = job("fresh", "pb", "queued", T0);
	assert_int_equal(store_batch_insert_job(bad.b, &j), 0);
	assert_int_equal(store_batch_insert_job(bad.b, &dup), 0); /* UNIQUE(id) */
	good.b = store_batch_new();
	j = job("good", "pb", "queued", T0);
	assert_int_equal(store_batch_insert_job(good.b, &j), 0);
	assert_int_equal(store_batch_event(good.b, "good", 0, "admission", NULL, 0, T0), 0);
	assert_int_equal(pthread_create(&tb, NULL, commit_thread, &bad), 0);
	assert_int_equal(pthread_create(&tg, NULL, commit_thread, &good), 0);
	sleep_ms(200);
	unlock_writes(&lock, "COMMIT");
	pthread_join(tb, NULL);
	pthread_join(tg, NULL);

	assert_int_equal(bad.r, RD_ERR);
	assert_int_equal(good.r, RD_OK);
	store_stats(s, &t1, &b1);
	/* pilot alone, then bad + good in one transaction */
	assert_int_equal(t1 - t0, 2);
	assert_int_equal(b1 - b0, 2);
	assert_int_equal(store_healthy(s), 1);

	assert_true(exists(s, "pilot"));
	assert_true(exists(s, "good"));
	/* The bad batch is all or nothing: its first insert is gone too. */
	assert_false(exists(s, "fresh"));
	rec = record(s, "good");
	assert_int_equal(cJSON_GetArraySize(arr(rec, "events")), 1);
	cJSON_Delete(rec);
	store_close(s);
}

static void test_bad_batches(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct job_row j = job("x", "pb", "queued", T0), ghost = job("ghost", "pb", "running", T0);
	struct attempt_row a = { .n = 1, .started_at = T0, .verify_ok = -1 };
	struct store_batch *b;
	double errs0 = metrics_get(M_JOURNAL_ERRORS, NULL, NULL);

	insert(s, &j);
	/* wait=0 returns at once; the failure is logged and counted. */
	b = store_batch_new();
	assert_int_equal(store_batch_insert_job(b, &j), 0);
	assert_int_equal(store_commit(s, b, 0), RD_OK);
	b = store_batch_new();
	assert_int_equal(store_commit(s, b, 1), RD_OK); /* an empty batch is fine */
	assert_true(metrics_get(M_JOURNAL_ERRORS, NULL, NULL) >= errs0 + 1);

	b = store_batch_new();
	assert_int_equal(store_batch_update_job(b, &ghost), 0);
	assert_int_equal(store_commit(s, b, 1), RD_ERR);
	b = store_batch_new();
	assert_int_equal(store_batch_attempt(b, "ghost", &a), 0); /* foreign key */
	assert_int_equal(store_commit(s, b, 1), RD_ERR);
	b = store_batch_new();
	assert_int_equal(store_batch_event(b, "x", 0, "log", "{not json", 0, T0), 0);
	assert_int_equal(store_commit(s, b, 1), RD_ERR);
	b = store_batch_new();
	assert_int_equal(store_batch_event(b, "x", 0, "log", "[1,2]", 0, T0), 0);
	assert_int_equal(store_commit(s, b, 1), RD_ERR);
	b = store_batch_new();
	j.alert_json = "{broken";
	j.id = "y";
	assert_int_equal(store_batch_insert_job(b, &j), 0);
	assert_int_equal(store_commit(s, b, 1), RD_ERR);
	assert_false(exists(s, "y"));

	/* Constraint failures are the caller's, not the journal's. */
	assert_int_equal(store_healthy(s), 1);
	assert_int_equal(store_commit(NULL, store_batch_new(), 1), RD_ERR);
	store_batch_free(NULL);
	store_close(s);
}

/* A transaction that cannot start (the lock is held past busy_timeout)
 * fails every batch in it and makes the journal unhealthy until the next
 * transaction commits. SQLite only: with PostgreSQL a transaction always
 * starts (a lock is waited for by a statement, inside it);
 * test_pg_connection_lost is its counterpart. */
static void test_unhealthy_when_locked(void **state)
{
	struct fix *f = *state;
	struct store *s;
	struct job_row j = job("h1", "pb", "queued", T0);
	struct store_batch *b;
	struct outside_lock lock;
	unsigned long t0, b0, t1, b1;

	SQLITE_ONLY();
	s = open_ok(f->db);
	insert(s, &j);
	assert_int_equal(store_healthy(s), 1);
	lock_writes(f, &lock);
	store_stats(s, &t0, &b0);
	b = store_batch_new();
	j.id = "h2";
	assert_int_equal(store_batch_insert_job(b, &j), 0);
	assert_int_equal(store_commit(s, b, 1), RD_ERR);
	assert_int_equal(store_healthy(s), 0);
	store_stats(s, &t1, &b1);
	assert_int_equal(t1, t0);
	assert_int_equal(b1, b0);
	unlock_writes(&lock, "ROLLBACK");

	assert_false(exists(s, "h2"));
	insert(s, &j);
	assert_int_equal(store_healthy(s), 1);
	assert_true(exists(s, "h2"));
	store_close(s);
}

static void test_reopen(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct job_row j = job("p1", "pb", "retry_wait", T0);
	struct attempt_row a = { .n = 1, .started_at = T0, .ended_at = T0 + 1, .result = "timeout",
		                 .verify_ok = 1, .verify_reason = NULL };
	struct store_batch *b = store_batch_new();
	cJSON *rec, *list = NULL;
	const cJSON *v;

	j.next_run_at = T0 + 60;
	assert_int_equal(store_batch_insert_job(b, &j), 0);
	assert_int_equal(store_batch_attempt(b, "p1", &a), 0);
	assert_int_equal(store_batch_event(b, "p1", 1, "action", "{\"primitive\":\"exec\"}", 0, T0),
	                 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	/* Queued without waiting, then closed: close must commit them. */
	for (int i = 0; i < 20; i++) {
		char id[16];

		snprintf(id, sizeof(id), "late-%d", i);
		j = job(id, "late", "queued", T0);
		b = store_batch_new();
		assert_int_equal(store_batch_insert_job(b, &j), 0);
		assert_int_equal(store_commit(s, b, 0), RD_OK);
	}
	store_close(s);

	s = open_ok(f->db);
	rec = record(s, "p1");
	assert_string_equal(str(rec, "state"), "retry_wait");
	assert_string_equal(str(rec, "next_attempt_at"), "2023-11-14T22:14:20.000Z");
	v = cJSON_GetArrayItem(arr(rec, "attempts"), 0);
	assert_string_equal(str(v, "result"), "timeout");
	v = cJSON_GetObjectItemCaseSensitive(v, "verify");
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v, "ok")));
	assert_true(has_null(v, "reason"));
	v = cJSON_GetArrayItem(arr(rec, "actions"), 0);
	assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(v, "planned")));
	cJSON_Delete(rec);
	assert_int_equal(store_jobs_json(s, NULL, "late", 100, &list), RD_OK);
	assert_int_equal(cJSON_GetArraySize(list), 20);
	cJSON_Delete(list);
	store_close(s);
}

struct mem_writer {
	struct store *s;
	atomic_int failures;
	atomic_int done;
};

static void *mem_writer_thread(void *p)
{
	struct mem_writer *w = p;

	for (int i = 0; i < 200; i++) {
		struct store_batch *b = store_batch_new();
		char id[16];
		struct job_row j;

		snprintf(id, sizeof(id), "m-%d", i);
		j = job(id, "mem", "queued", T0);
		if (store_batch_insert_job(b, &j) < 0 ||
		    store_batch_event(b, id, 0, "log", "{\"msg\":\"x\"}", 0, T0) < 0 ||
		    store_commit(w->s, b, 1) != RD_OK)
			atomic_fetch_add(&w->failures, 1);
	}
	atomic_store(&w->done, 1);
	return NULL;
}

/* SQLite only; test_concurrent_readers is the same contention on the
 * journal under test. */
static void test_memory(void **state)
{
	struct store *s1, *s2;
	struct job_row j = job("mem-1", "pb", "queued", T0);
	struct mem_writer w = { 0 };
	cJSON *rec = NULL, *list = NULL;
	pthread_t th;
	int reads = 0;

	(void)state;
	SQLITE_ONLY();
	s1 = open_ok(":memory:");
	s2 = open_ok(":memory:");
	w.s = s1;
	insert(s1, &j);
	rec = record(s1, "mem-1");
	assert_string_equal(str(rec, "state"), "queued");
	cJSON_Delete(rec);
	/* Each ":memory:" store is its own database. */
	assert_int_equal(store_job_json(s2, "mem-1", &rec), RD_OK);
	assert_null(rec);

	/* Readers and the writer contend for shared-cache table locks. */
	assert_int_equal(pthread_create(&th, NULL, mem_writer_thread, &w), 0);
	while (!atomic_load(&w.done)) {
		assert_int_equal(store_jobs_json(s1, "queued", "mem", 1000, &list), RD_OK);
		cJSON_Delete(list);
		assert_int_equal(store_job_json(s1, "mem-1", &rec), RD_OK);
		assert_non_null(rec);
		cJSON_Delete(rec);
		reads++;
	}
	pthread_join(th, NULL);
	assert_int_equal(atomic_load(&w.failures), 0);
	assert_true(reads > 0);
	assert_int_equal(store_jobs_json(s1, NULL, "mem", 1000, &list), RD_OK);
	assert_int_equal(cJSON_GetArraySize(list), 200);
	cJSON_Delete(list);
	assert_int_equal(store_healthy(s1), 1);
	store_close(s1);
	store_close(s2);
}

/* Reads while the writer commits: every read succeeds and sees whole
 * batches (a job with its event), never fewer jobs than the read before;
 * nothing is lost. */
static void test_concurrent_readers(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct job_row j = job("mem-1", "pb", "queued", T0);
	struct mem_writer w = { .s = s };
	cJSON *rec = NULL, *list = NULL;
	pthread_t th;
	int reads = 0, last = 0;

	insert(s, &j);
	assert_int_equal(pthread_create(&th, NULL, mem_writer_thread, &w), 0);
	while (!atomic_load(&w.done)) {
		int n;

		assert_int_equal(store_jobs_json(s, "queued", "mem", 1000, &list), RD_OK);
		n = cJSON_GetArraySize(list);
		assert_true(n >= last && n <= 200);
		last = n;
		if (n > 0) {
			rec = record(s, str(cJSON_GetArrayItem(list, 0), "id"));
			assert_int_equal(cJSON_GetArraySize(arr(rec, "log")), 1);
			cJSON_Delete(rec);
		}
		cJSON_Delete(list);
		assert_int_equal(store_job_json(s, "mem-1", &rec), RD_OK);
		assert_non_null(rec);
		cJSON_Delete(rec);
		reads++;
	}
	pthread_join(th, NULL);
	assert_int_equal(atomic_load(&w.failures), 0);
	assert_true(reads > 0);
	assert_int_equal(store_jobs_json(s, NULL, "mem", 1000, &list), RD_OK);
	assert_int_equal(cJSON_GetArraySize(list), 200);
	cJSON_Delete(list);
	rec = record(s, "m-199");
	assert_int_equal(cJSON_GetArraySize(arr(rec, "log")), 1);
	cJSON_Delete(rec);
	assert_int_equal(store_healthy(s), 1);
	store_close(s);
}

/* SQLite only; test_pg_open_errors is its PostgreSQL counterpart. */
static void test_open_errors(void **state)
{
	struct fix *f = *state;
	struct store *s = (struct store *)1;
	char path[400], notdir[320], err[512];
	int fd;

	SQLITE_ONLY();
	/* A path below a regular file cannot be created, even by root. */
	snprintf(notdir, sizeof(notdir), "%s/plain-file", f->dir);
	fd = open(notdir, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	snprintf(path, sizeof(path), "%s/journal.db", notdir);
	err[0] = '\0';
	assert_int_equal(store_open(path, &s, err, sizeof(err)), RD_ERR);
	assert_null(s);
	assert_non_null(strstr(err, "journal "));
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "unable to open database file"));

	/* Not a database at all. */
	fd = open(f->db, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "this is not sqlite, just some text padding to be long enough "
	                           "for a header check.................................",
	                       113),
	                 113);
	close(fd);
	assert_int_equal(store_open(f->db, &s, err, sizeof(err)), RD_ERR);
	assert_null(s);
	assert_non_null(strstr(err, f->db));
	store_close(NULL);
}

/* ---- audit trail ---- */

static void audit_add(struct store *s, double ts, const char *principal, const char *role,
                      const char *action, const char *job_id, const char *playbook,
                      const char *reason, const char *detail)
{
	struct audit_row a = { .ts = ts, .principal = principal, .role = role,
		               .address = "192.0.2.10", .action = action, .job_id = job_id,
		               .playbook = playbook, .reason = reason, .detail = detail };
	struct store_batch *b = store_batch_new();

	assert_non_null(b);
	assert_int_equal(store_batch_audit(b, &a), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
}

static cJSON *audit(struct store *s, const struct audit_query *q)
{
	cJSON *out = NULL;

	assert_int_equal(store_audit_json(s, q, &out), RD_OK);
	assert_non_null(out);
	assert_true(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(out, "entries")));
	return out;
}

/* The ids of a page, newest first, into ids; returns how many. */
static int page_ids(const cJSON *page, long long *ids, int max)
{
	const cJSON *e;
	int n = 0;

	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(page, "entries")) {
		assert_true(n < max);
		ids[n++] = (long long)num(e, "id");
	}
	return n;
}

static void check_audit(struct store *s, const struct audit_query *q, const long long *want, int nwant)
{
	cJSON *page = audit(s, q);
	long long got[16];
	int n = page_ids(page, got, 16);

	if (n != nwant)
		fail_msg("%d entries, want %d", n, nwant);
	for (int i = 0; i < n; i++)
		if (got[i] != want[i])
			fail_msg("entry %d: id %lld, want %lld", i, got[i], want[i]);
	cJSON_Delete(page);
}

/* Seven rows: ids 1..7 at T0+10 .. T0+70. */
static void audit_seven(struct store *s)
{
	audit_add(s, T0 + 10, "olga", "operator", "trigger", "j1", "pb1", "disk full", "{\"force\":false}");
	audit_add(s, T0 + 20, "olga", "operator", "cancel", "j1", "pb1", "wrong one", NULL);
	audit_add(s, T0 + 30, "root", "admin", "pause", NULL, "*", "maintenance", NULL);
	audit_add(s, T0 + 40, "root", "admin", "resume", NULL, "*", NULL, NULL);
	audit_add(s, T0 + 50, "olga", "operator", "trigger", "j2", "pb2", "again", NULL);
	audit_add(s, T0 + 60, "vic", "viewer", "reload", NULL, NULL, NULL, "{\"playbooks\":3}");
	audit_add(s, T0 + 70, "olga", "operator", "approve", "j2", "pb2", "looks right", NULL);
}

static void test_audit_rows(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct audit_query q = { .limit = 100 };
	const cJSON *e, *d;
	cJSON *page;

	audit_seven(s);
	page = audit(s, &q);
	assert_true(has_null(page, "next"));
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(page, "entries")), 7);
	/* newest first: the last row written heads the list */
	e = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(page, "entries"), 0);
	assert_int_equal((int)num(e, "id"), 7);
	assert_string_equal(str(e, "ts"), "2023-11-14T22:14:30.000Z");
	assert_string_equal(str(e, "principal"), "olga");
	assert_string_equal(str(e, "role"), "operator");
	assert_string_equal(str(e, "address"), "192.0.2.10");
	assert_string_equal(str(e, "action"), "approve");
	assert_string_equal(str(e, "job_id"), "j2");
	assert_string_equal(str(e, "playbook"), "pb2");
	assert_string_equal(str(e, "reason"), "looks right");
	assert_true(has_null(e, "detail"));
	/* what is not set reads null; detail is an object, not text */
	e = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(page, "entries"), 1);
	assert_string_equal(str(e, "action"), "reload");
	assert_true(has_null(e, "job_id"));
	assert_true(has_null(e, "playbook"));
	assert_true(has_null(e, "reason"));
	d = cJSON_GetObjectItemCaseSensitive(e, "detail");
	assert_true(cJSON_IsObject(d));
	assert_int_equal((int)num(d, "playbooks"), 3);
	e = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(page, "entries"), 4);
	assert_string_equal(str(e, "action"), "pause");
	assert_string_equal(str(e, "playbook"), "*");
	e = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(page, "entries"), 6);
	assert_int_equal((int)num(e, "id"), 1);
	assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(e, "detail"),
	                                                            "force")));
	cJSON_Delete(page);
	store_close(s);

	/* the trail outlives the process */
	s = open_ok(f->db);
	check_audit(s, &q, (const long long[]){ 7, 6, 5, 4, 3, 2, 1 }, 7);

	/* a detail that is not an object is refused with its batch */
	{
		struct audit_row bad = { .ts = T0, .principal = "x", .action = "trigger", .detail = "[1]" };
		struct store_batch *b = store_batch_new();
		assert_int_equal(store_batch_audit(b, &bad), 0);
		assert_int_equal(store_commit(s, b, 1), RD_ERR);
	}
	check_audit(s, &q, (const long long[]){ 7, 6, 5, 4, 3, 2, 1 }, 7);
	store_close(s);
}

static void test_audit_filters(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct audit_query q;

	audit_seven(s);
	q = (struct audit_query){ .principal = "olga", .limit = 100 };
	check_audit(s, &q, (const long long[]){ 7, 5, 2, 1 }, 4);
	q = (struct audit_query){ .principal = "nobody", .limit = 100 };
	check_audit(s, &q, NULL, 0);
	q = (struct audit_query){ .action = "trigger", .limit = 100 };
	check_audit(s, &q, (const long long[]){ 5, 1 }, 2);
	q = (struct audit_query){ .principal = "root", .action = "pause", .limit = 100 };
	check_audit(s, &q, (const long long[]){ 3 }, 1);
	q = (struct audit_query){ .principal = "olga", .action = "pause", .limit = 100 };
	check_audit(s, &q, NULL, 0);
	/* since and until are inclusive */
	q = (struct audit_query){ .since = T0 + 50, .limit = 100 };
	check_audit(s, &q, (const long long[]){ 7, 6, 5 }, 3);
	q = (struct audit_query){ .until = T0 + 20, .limit = 100 };
	check_audit(s, &q, (const long long[]){ 2, 1 }, 2);
	q = (struct audit_query){ .since = T0 + 25, .until = T0 + 55, .limit = 100 };
	check_audit(s, &q, (const long long[]){ 5, 4, 3 }, 3);
	q = (struct audit_query){ .since = T0 + 71, .limit = 100 };
	check_audit(s, &q, NULL, 0);
	q = (struct audit_query){ .principal = "olga", .action = "trigger", .since = T0 + 11,
		                  .until = T0 + 70, .limit = 100 };
	check_audit(s, &q, (const long long[]){ 5 }, 1);
	/* the cursor alone: rows older than it */
	q = (struct audit_query){ .before = 4, .limit = 100 };
	check_audit(s, &q, (const long long[]){ 3, 2, 1 }, 3);
	q = (struct audit_query){ .before = 1, .limit = 100 };
	check_audit(s, &q, NULL, 0);
	/* a limit out of range is the default page, not an error */
	q = (struct audit_query){ .limit = 0 };
	check_audit(s, &q, (const long long[]){ 7, 6, 5, 4, 3, 2, 1 }, 7);
	q = (struct audit_query){ .limit = 1000000 };
	check_audit(s, &q, (const long long[]){ 7, 6, 5, 4, 3, 2, 1 }, 7);
	store_close(s);
}

/* Pages through q (its before is overwritten) and returns every id seen,
 * in order; each page's next is the cursor of the one after. */
static int audit_pages(struct store *s, struct audit_query q, long long *ids, int max, int *pages)
{
	int n = 0;

	*pages = 0;
	for (;;) {
		cJSON *page = audit(s, &q);
		const cJSON *next = cJSON_GetObjectItemCaseSensitive(page, "next");
		int k = page_ids(page, ids + n, max - n);

		(*pages)++;
		assert_true(*pages <= 10);
		assert_true(k <= q.limit);
		n += k;
		if (cJSON_IsNull(next)) {
			cJSON_Delete(page);
			return n;
		}
		/* a full page points past its own last row */
		assert_true(cJSON_IsString(next));
		assert_int_equal(k, q.limit);
		q.before = atoll(next->valuestring);
		assert_int_equal(q.before, ids[n - 1]);
		cJSON_Delete(page);
	}
}

static void test_audit_paging(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct audit_query q = { .limit = 3 };
	long long ids[16];
	int n, pages;

	audit_seven(s);
	/* 3 + 3 + 1 */
	n = audit_pages(s, q, ids, 16, &pages);
	assert_int_equal(pages, 3);
	assert_int_equal(n, 7);
	for (int i = 0; i < n; i++)
		assert_int_equal(ids[i], 7 - i);

	/* filters hold across pages: olga's 7, 5 | 2, 1 */
	q = (struct audit_query){ .principal = "olga", .limit = 2 };
	n = audit_pages(s, q, ids, 16, &pages);
	assert_int_equal(n, 4);
	assert_int_equal(pages, 2);
	assert_int_equal(ids[0], 7);
	assert_int_equal(ids[1], 5);
	assert_int_equal(ids[2], 2);
	assert_int_equal(ids[3], 1);

	/* a trail that fills its pages exactly: the last full page is the
	 * last page */
	q = (struct audit_query){ .limit = 7 };
	n = audit_pages(s, q, ids, 16, &pages);
	assert_int_equal(n, 7);
	assert_int_equal(pages, 1);
	q = (struct audit_query){ .since = T0 + 30, .limit = 5 };
	n = audit_pages(s, q, ids, 16, &pages);
	assert_int_equal(n, 5);
	assert_int_equal(pages, 1);
	q = (struct audit_query){ .action = "trigger", .limit = 1 };
	n = audit_pages(s, q, ids, 16, &pages);
	assert_int_equal(n, 2);
	assert_int_equal(pages, 2);
	store_close(s);
}

/* ---- pauses ---- */

struct pauses_seen {
	int n;
	char scope[4][32], principal[4][32], reason[4][32];
	double since[4], until[4];
};

static void pause_cb(const struct pause_row *p, void *arg)
{
	struct pauses_seen *ps = arg;

	assert_true(ps->n < 4);
	snprintf(ps->scope[ps->n], 32, "%s", p->scope);
	snprintf(ps->principal[ps->n], 32, "%s", p->principal ? p->principal : "(null)");
	snprintf(ps->reason[ps->n], 32, "%s", p->reason ? p->reason : "(null)");
	ps->since[ps->n] = p->since;
	ps->until[ps->n] = p->until;
	ps->n++;
}

static struct pauses_seen scan_pauses(struct store *s)
{
	struct pauses_seen ps;

	memset(&ps, 0, sizeof(ps));
	assert_int_equal(store_scan_pauses(s, pause_cb, &ps), RD_OK);
	return ps;
}

static void pause_set(struct store *s, const char *scope, const char *who, const char *why,
                      double since, double until)
{
	struct pause_row p = { .scope = scope, .principal = who, .reason = why, .since = since,
		               .until = until };
	struct store_batch *b = store_batch_new();

	assert_int_equal(store_batch_pause(b, &p), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
}

static void pause_clear(struct store *s, const char *scope)
{
	struct store_batch *b = store_batch_new();

	assert_int_equal(store_batch_unpause(b, scope), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
}

static void test_pauses(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct pauses_seen ps;

	ps = scan_pauses(s);
	assert_int_equal(ps.n, 0);

	pause_set(s, "pb1", "olga", "DB migration", T0, T0 + 3600);
	pause_set(s, "*", "root", "freeze", T0 + 5, 0);
	ps = scan_pauses(s);
	assert_int_equal(ps.n, 2);
	/* by scope: "*" sorts first */
	assert_string_equal(ps.scope[0], "*");
	assert_string_equal(ps.principal[0], "root");
	assert_string_equal(ps.reason[0], "freeze");
	assert_true(ps.since[0] == T0 + 5);
	assert_true(ps.until[0] == 0); /* until resumed */
	assert_string_equal(ps.scope[1], "pb1");
	assert_string_equal(ps.principal[1], "olga");
	assert_string_equal(ps.reason[1], "DB migration");
	assert_true(ps.since[1] == T0);
	assert_true(ps.until[1] == T0 + 3600);

	/* a second pause of a scope replaces the first */
	pause_set(s, "pb1", "root", "longer", T0 + 10, T0 + 7200);
	ps = scan_pauses(s);
	assert_int_equal(ps.n, 2);
	assert_string_equal(ps.scope[1], "pb1");
	assert_string_equal(ps.principal[1], "root");
	assert_string_equal(ps.reason[1], "longer");
	assert_true(ps.since[1] == T0 + 10);
	assert_true(ps.until[1] == T0 + 7200);
	store_close(s);

	/* pauses outlive the process */
	s = open_ok(f->db);
	ps = scan_pauses(s);
	assert_int_equal(ps.n, 2);
	pause_clear(s, "pb1");
	ps = scan_pauses(s);
	assert_int_equal(ps.n, 1);
	assert_string_equal(ps.scope[0], "*");
	/* clearing what is not paused is no error and changes nothing */
	pause_clear(s, "pb1");
	pause_clear(s, "never");
	ps = scan_pauses(s);
	assert_int_equal(ps.n, 1);
	pause_clear(s, "*");
	ps = scan_pauses(s);
	assert_int_equal(ps.n, 0);
	/* a pause with no reason keeps it NULL */
	pause_set(s, "pb2", "root", NULL, T0, 0);
	ps = scan_pauses(s);
	assert_int_equal(ps.n, 1);
	assert_string_equal(ps.reason[0], "(null)");
	store_close(s);
}

/* ---- schema v1 journals ---- */

/* The jobs table of schema version 1 (before principals and approval). */
static const char v1_schema[] =
	"CREATE TABLE jobs ("
	" seq INTEGER PRIMARY KEY AUTOINCREMENT,"
	" id TEXT UNIQUE NOT NULL,"
	" playbook TEXT, key TEXT, trigger TEXT, reason TEXT,"
	" alert_json TEXT CHECK (alert_json IS NULL OR json_valid(alert_json)),"
	" dry_run INTEGER NOT NULL DEFAULT 0,"
	" state TEXT, outcome TEXT, error TEXT,"
	" attempts INTEGER NOT NULL DEFAULT 0,"
	" max_attempts INTEGER NOT NULL DEFAULT 0,"
	" notifications INTEGER NOT NULL DEFAULT 0,"
	" created_at REAL, updated_at REAL, started_at REAL, ended_at REAL,"
	" next_run_at REAL);"
	"CREATE INDEX jobs_key ON jobs(key);"
	"CREATE INDEX jobs_state ON jobs(state);"
	"CREATE INDEX jobs_playbook ON jobs(playbook);"
	"CREATE TABLE attempts ("
	" job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	" n INTEGER NOT NULL,"
	" started_at REAL, ended_at REAL, result TEXT, error TEXT,"
	" verify_ok INTEGER, verify_reason TEXT,"
	" PRIMARY KEY (job_id, n));"
	"CREATE TABLE events ("
	" seq INTEGER PRIMARY KEY AUTOINCREMENT,"
	" job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	" ts REAL, attempt INTEGER, type TEXT NOT NULL,"
	" detail TEXT NOT NULL CHECK (json_type(detail) = 'object'),"
	" planned INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE escalations ("
	" seq INTEGER PRIMARY KEY AUTOINCREMENT,"
	" id TEXT UNIQUE NOT NULL,"
	" job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	" incident_key TEXT, sink TEXT NOT NULL, kind TEXT NOT NULL, reason TEXT,"
	" state TEXT, attempts INTEGER NOT NULL DEFAULT 0, last_answer TEXT,"
	" created_at REAL, updated_at REAL, next_attempt_at REAL, delivered_at REAL,"
	" payload TEXT);"
	"PRAGMA user_version = 1;";

static void exec_sql(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	char *msg = NULL;

	if (pg_url)
		fail_msg("exec_sql: a SQLite file in a PostgreSQL run");
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s", msg);
	sqlite3_close(db);
}

static int user_version(const char *path)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int v;

	if (pg_url)
		fail_msg("user_version: a SQLite file in a PostgreSQL run");
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

struct one_row {
	int n;
	char id[40], state[40];
	int null_triggered_by, null_cancelled_by, null_approval, null_approved_by;
	int plan_attempts, stalls, max_attempts;
};

static void one_row_cb(const struct job_row *j, void *arg)
{
	struct one_row *r = arg;

	r->n++;
	snprintf(r->id, sizeof(r->id), "%s", j->id);
	snprintf(r->state, sizeof(r->state), "%s", j->state);
	r->null_triggered_by = j->triggered_by == NULL;
	r->null_cancelled_by = j->cancelled_by == NULL;
	r->null_approval = j->approval == NULL;
	r->null_approved_by = j->approved_by == NULL;
	r->plan_attempts = j->plan_attempts;
	r->stalls = j->stalls;
	r->max_attempts = j->max_attempts;
}

/* A journal of the previous release opens: the jobs table gains the new
 * columns (NULL, 0 for its rows), audit and pauses are created, and the
 * old rows read back as they were; it goes on to version 3 (leases) at
 * once. SQLite only: PostgreSQL journals begin at version 2
 * (test_migrate_v2 covers both). */
static void test_migrate_v1(void **state)
{
	struct fix *f = *state;
	struct store *s;
	struct one_row row = { 0 };
	struct job_row j;
	struct store_batch *b;
	cJSON *rec;
	const cJSON *a;

	SQLITE_ONLY();
	exec_sql(f->db, v1_schema);
	exec_sql(f->db,
	         "INSERT INTO jobs (id, playbook, key, trigger, alert_json, state, attempts, "
	         "max_attempts, created_at, updated_at, started_at, next_run_at) VALUES "
	         "('old-1', 'pb', 'pb/fp', 'webhook', '{\"labels\":{\"alertname\":\"X\"}}', "
	         "'retry_wait', 1, 3, 1700000000, 1700000010, 1700000001, 1700000060);"
	         "INSERT INTO attempts (job_id, n, started_at, ended_at, result, error) VALUES "
	         "('old-1', 1, 1700000001, 1700000009, 'failed', 'boom');"
	         "INSERT INTO events (job_id, ts, attempt, type, detail, planned) VALUES "
	         "('old-1', 1700000002, 1, 'action', '{\"kind\":\"http\",\"method\":\"POST\"}', 0);");
	assert_int_equal(user_version(f->db), 1);

	s = open_ok(f->db);
	assert_int_equal(user_version(f->db), 4);
	rec = record(s, "old-1");
	assert_string_equal(str(rec, "state"), "retry_wait");
	assert_string_equal(str(rec, "key"), "pb/fp");
	assert_int_equal((int)num(rec, "attempts_made"), 1);
	assert_string_equal(str(rec, "next_attempt_at"), "2023-11-14T22:14:20.000Z");
	assert_true(has_null(rec, "triggered_by"));
	assert_true(has_null(rec, "cancelled_by"));
	assert_true(has_null(rec, "approval"));
	assert_null(cJSON_GetObjectItemCaseSensitive(rec, "plan"));
	a = cJSON_GetArrayItem(arr(rec, "attempts"), 0);
	assert_string_equal(str(a, "error"), "boom");
	assert_int_equal(cJSON_GetArraySize(arr(rec, "actions")), 1);
	cJSON_Delete(rec);

	/* an unfinished job of the old journal is replayed */
	assert_int_equal(store_scan_jobs(s, T0 + 1e6, one_row_cb, &row), RD_OK);
	assert_int_equal(row.n, 1);
	assert_string_equal(row.id, "old-1");
	assert_string_equal(row.state, "retry_wait");
	assert_int_equal(row.max_attempts, 3);
	assert_true(row.null_triggered_by && row.null_cancelled_by && row.null_approval &&
	            row.null_approved_by);
	assert_int_equal(row.plan_attempts, 0);
	assert_int_equal(row.stalls, 0);

	/* the new columns and tables take writes */
	j = job("old-1", "pb", "cancelled", T0);
	j.key = "pb/fp";
	j.cancelled_by = "olga";
	j.ended_at = T0 + 100;
	b = store_batch_new();
	assert_int_equal(store_batch_update_job(b, &j), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	audit_add(s, T0, "olga", "operator", "cancel", "old-1", "pb", NULL, NULL);
	pause_set(s, "pb", "olga", "after the cancel", T0, 0);
	store_close(s);

	/* a second open does not migrate again */
	s = open_ok(f->db);
	assert_int_equal(user_version(f->db), 4);
	rec = record(s, "old-1");
	assert_string_equal(str(rec, "cancelled_by"), "olga");
	cJSON_Delete(rec);
	{
		struct audit_query q = { .limit = 10 };
		check_audit(s, &q, (const long long[]){ 1 }, 1);
	}
	assert_int_equal(scan_pauses(s).n, 1);
	store_close(s);
}

/* A journal of a newer release is not opened (nor changed). SQLite only;
 * test_pg_newer_schema_refused is its PostgreSQL counterpart. */
static void test_newer_schema_refused(void **state)
{
	struct fix *f = *state;
	struct store *s = (struct store *)1;
	char err[512] = "";

	SQLITE_ONLY();
	exec_sql(f->db, "CREATE TABLE future (x); PRAGMA user_version = 5;");
	assert_int_equal(store_open(f->db, &s, err, sizeof(err)), RD_ERR);
	assert_null(s);
	assert_non_null(strstr(err, "schema version 5 is newer than supported 4"));
	assert_int_equal(user_version(f->db), 5);
}

/* ---- principals and approval in the job record ---- */

static void event(struct store *s, const char *id, int attempt, int planned, const char *detail)
{
	struct store_batch *b = store_batch_new();

	assert_int_equal(store_batch_event(b, id, attempt, "action", detail, planned, T0 + attempt), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
}

static void test_record_principals(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct job_row j = job("p-1", "pb", "queued", T0);
	struct store_batch *b;
	cJSON *rec, *list = NULL;
	const cJSON *ap;

	j.trigger = "manual";
	j.triggered_by = "olga";
	insert(s, &j);
	rec = record(s, "p-1");
	assert_string_equal(str(rec, "triggered_by"), "olga");
	assert_true(has_null(rec, "cancelled_by"));
	/* no approval required: null, and no plan */
	assert_true(has_null(rec, "approval"));
	assert_null(cJSON_GetObjectItemCaseSensitive(rec, "plan"));
	assert_null(cJSON_GetObjectItemCaseSensitive(rec, "plan_diff"));
	cJSON_Delete(rec);

	/* the plan is made and waits */
	j.state = "awaiting_approval";
	j.approval = "pending";
	j.attempts = 1;
	j.plan_attempts = 1;
	b = store_batch_new();
	assert_int_equal(store_batch_update_job(b, &j), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	rec = record(s, "p-1");
	assert_string_equal(str(rec, "state"), "awaiting_approval");
	ap = cJSON_GetObjectItemCaseSensitive(rec, "approval");
	assert_true(cJSON_IsObject(ap));
	assert_string_equal(str(ap, "state"), "pending");
	assert_true(has_null(ap, "approved_by"));
	assert_int_equal((int)num(ap, "plan_attempt"), 1);
	/* a plan with no writes is an empty plan, not none */
	assert_int_equal(cJSON_GetArraySize(arr(rec, "plan")), 0);
	assert_null(cJSON_GetObjectItemCaseSensitive(rec, "plan_diff"));
	cJSON_Delete(rec);

	/* approved, then cancelled by someone else */
	j.approval = "approved";
	j.approved_by = "root";
	j.state = "cancelled";
	j.cancelled_by = "vic";
	b = store_batch_new();
	assert_int_equal(store_batch_update_job(b, &j), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	rec = record(s, "p-1");
	assert_string_equal(str(rec, "triggered_by"), "olga");
	assert_string_equal(str(rec, "cancelled_by"), "vic");
	ap = cJSON_GetObjectItemCaseSensitive(rec, "approval");
	assert_string_equal(str(ap, "state"), "approved");
	assert_string_equal(str(ap, "approved_by"), "root");
	cJSON_Delete(rec);

	/* the list shows the same scalars */
	assert_int_equal(store_jobs_json(s, "cancelled", NULL, 10, &list), RD_OK);
	assert_int_equal(cJSON_GetArraySize(list), 1);
	ap = cJSON_GetArrayItem(list, 0);
	assert_string_equal(str(ap, "cancelled_by"), "vic");
	assert_string_equal(str(cJSON_GetObjectItemCaseSensitive(ap, "approval"), "approved_by"), "root");
	cJSON_Delete(list);
	store_close(s);
}

#define READ_HEALTH "{\"kind\":\"http\",\"method\":\"GET\",\"url\":\"http://svc/health\",\"mutates\":false}"
#define POST_RESTART "{\"kind\":\"http\",\"method\":\"POST\",\"url\":\"http://svc/restart\",\"body_bytes\":2}"
#define EXEC_ROLLOUT "{\"kind\":\"exec\",\"argv\":[\"/usr/bin/kubectl\",\"rollout\",\"restart\",\"deploy/x\"]}"
#define EXEC_OTHER "{\"kind\":\"exec\",\"argv\":[\"/usr/bin/kubectl\",\"delete\",\"pod\",\"x-1\"]}"
#define EXEC_READ "{\"kind\":\"exec\",\"argv\":[\"/usr/bin/kubectl\",\"get\",\"pods\"],\"mutates\":false}"
#define SLEEP "{\"kind\":\"sleep\",\"seconds\":5}"
#define SIG_POST "http POST http://svc/restart"
#define SIG_ROLLOUT "exec [\"/usr/bin/kubectl\",\"rollout\",\"restart\",\"deploy/x\"]"
#define SIG_OTHER "exec [\"/usr/bin/kubectl\",\"delete\",\"pod\",\"x-1\"]"

/* An approved job: plan_attempts plans, then attempts up to `attempts`. */
static void approved_job(struct store *s, const char *id, int plan_attempts, int attempts)
{
	struct job_row j = job(id, "pb", "succeeded", T0);

	j.approval = "approved";
	j.approved_by = "root";
	j.plan_attempts = plan_attempts;
	j.attempts = attempts;
	insert(s, &j);
}

static void assert_strings(const cJSON *a, const char *const *want, int n)
{
	if (cJSON_GetArraySize(a) != n)
		fail_msg("%d strings, want %d", cJSON_GetArraySize(a), n);
	for (int i = 0; i < n; i++) {
		const cJSON *v = cJSON_GetArrayItem(a, i);
		if (!cJSON_IsString(v) || strcmp(v->valuestring, want[i]) != 0)
			fail_msg("string %d: %s, want %s", i, cJSON_IsString(v) ? v->valuestring : "(not a string)",
			         want[i]);
	}
}

/* The in_plan marks of the actions, in order: 1 true, 0 false, -1 absent. */
static void assert_in_plan(const cJSON *rec, const int *want, int n)
{
	const cJSON *acts = arr(rec, "actions");

	assert_int_equal(cJSON_GetArraySize(acts), n);
	for (int i = 0; i < n; i++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(acts, i), "in_plan");
		int got = v ? cJSON_IsTrue(v) : -1;
		if (v && !cJSON_IsBool(v))
			fail_msg("action %d: in_plan is not a boolean", i);
		if (got != want[i])
			fail_msg("action %d: in_plan %d, want %d", i, got, want[i]);
	}
}

static void test_plan_matches(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	const cJSON *d;
	cJSON *rec;

	approved_job(s, "m", 1, 2);
	/* the plan: a read, two writes, a sleep */
	event(s, "m", 1, 0, READ_HEALTH);
	event(s, "m", 1, 1, POST_RESTART);
	event(s, "m", 1, 0, SLEEP);
	event(s, "m", 1, 1, EXEC_ROLLOUT);
	/* the run: the same writes in another order, reads around them */
	event(s, "m", 2, 0, READ_HEALTH);
	event(s, "m", 2, 0, EXEC_ROLLOUT);
	event(s, "m", 2, 0, EXEC_READ);
	event(s, "m", 2, 0, POST_RESTART);
	rec = record(s, "m");
	assert_strings(arr(rec, "plan"), (const char *const[]){ SIG_POST, SIG_ROLLOUT }, 2);
	d = cJSON_GetObjectItemCaseSensitive(rec, "plan_diff");
	assert_true(cJSON_IsObject(d));
	assert_int_equal((int)num(d, "run_attempt"), 2);
	assert_int_equal(cJSON_GetArraySize(arr(d, "unplanned")), 0);
	assert_int_equal(cJSON_GetArraySize(arr(d, "not_run")), 0);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "matches")));
	/* only the writes of the run are marked */
	assert_in_plan(rec, (const int[]){ -1, -1, -1, -1, -1, 1, -1, 1 }, 8);
	cJSON_Delete(rec);
	store_close(s);
}

static void test_plan_differs(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	const cJSON *d;
	cJSON *rec;

	approved_job(s, "d", 1, 2);
	event(s, "d", 1, 1, POST_RESTART);
	event(s, "d", 1, 1, EXEC_ROLLOUT);
	/* the run restarts, then deletes a pod instead of the rollout, and
	 * posts the restart a second time */
	event(s, "d", 2, 0, POST_RESTART);
	event(s, "d", 2, 0, EXEC_OTHER);
	event(s, "d", 2, 0, POST_RESTART);
	rec = record(s, "d");
	assert_strings(arr(rec, "plan"), (const char *const[]){ SIG_POST, SIG_ROLLOUT }, 2);
	d = cJSON_GetObjectItemCaseSensitive(rec, "plan_diff");
	assert_int_equal((int)num(d, "run_attempt"), 2);
	/* each planned write covers one write of the run */
	assert_strings(arr(d, "unplanned"), (const char *const[]){ SIG_OTHER, SIG_POST }, 2);
	assert_strings(arr(d, "not_run"), (const char *const[]){ SIG_ROLLOUT }, 1);
	assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(d, "matches")));
	assert_in_plan(rec, (const int[]){ -1, -1, 1, 0, 0 }, 5);
	cJSON_Delete(rec);

	/* a run that does less: nothing unplanned, but not a match */
	approved_job(s, "less", 1, 2);
	event(s, "less", 1, 1, POST_RESTART);
	event(s, "less", 1, 1, EXEC_ROLLOUT);
	event(s, "less", 2, 0, EXEC_ROLLOUT);
	rec = record(s, "less");
	d = cJSON_GetObjectItemCaseSensitive(rec, "plan_diff");
	assert_int_equal(cJSON_GetArraySize(arr(d, "unplanned")), 0);
	assert_strings(arr(d, "not_run"), (const char *const[]){ SIG_POST }, 1);
	assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(d, "matches")));
	cJSON_Delete(rec);

	/* a write made a read: the run is compared on its writes only */
	approved_job(s, "r", 1, 2);
	event(s, "r", 1, 1, POST_RESTART);
	event(s, "r", 2, 0, READ_HEALTH);
	rec = record(s, "r");
	d = cJSON_GetObjectItemCaseSensitive(rec, "plan_diff");
	assert_int_equal(cJSON_GetArraySize(arr(d, "unplanned")), 0);
	assert_strings(arr(d, "not_run"), (const char *const[]){ SIG_POST }, 1);
	assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(d, "matches")));
	assert_in_plan(rec, (const int[]){ -1, -1 }, 2);
	cJSON_Delete(rec);
	store_close(s);
}

/* The plan is that of attempt plan_attempt (the last plan, when it was
 * made again); the run compared is the newest attempt after it. */
static void test_plan_attempts(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	const cJSON *d;
	cJSON *rec;

	approved_job(s, "again", 2, 4);
	event(s, "again", 1, 1, EXEC_OTHER);   /* an older plan */
	event(s, "again", 2, 1, POST_RESTART); /* the plan approved */
	event(s, "again", 3, 0, EXEC_OTHER);   /* a failed run */
	event(s, "again", 4, 0, POST_RESTART); /* its retry */
	rec = record(s, "again");
	assert_strings(arr(rec, "plan"), (const char *const[]){ SIG_POST }, 1);
	d = cJSON_GetObjectItemCaseSensitive(rec, "plan_diff");
	assert_int_equal((int)num(d, "run_attempt"), 4);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "matches")));
	assert_in_plan(rec, (const int[]){ -1, -1, -1, 1 }, 4);
	cJSON_Delete(rec);

	/* approved but not run yet: a plan, no diff */
	approved_job(s, "waiting", 1, 1);
	event(s, "waiting", 1, 1, POST_RESTART);
	event(s, "waiting", 1, 1, EXEC_ROLLOUT);
	rec = record(s, "waiting");
	assert_strings(arr(rec, "plan"), (const char *const[]){ SIG_POST, SIG_ROLLOUT }, 2);
	assert_null(cJSON_GetObjectItemCaseSensitive(rec, "plan_diff"));
	assert_in_plan(rec, (const int[]){ -1, -1 }, 2);
	cJSON_Delete(rec);
	store_close(s);
}

/* Replay: jobs awaiting approval are unfinished; stalls counts the
 * watchdog events of each job. */
static void test_scan_approval_and_stalls(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	double now = rd_now();
	struct job_row j;
	struct store_batch *b;
	struct one_row row = { 0 };

	j = job("held", "pb", "awaiting_approval", now - 9000);
	j.approval = "pending";
	j.plan_attempts = 1;
	j.attempts = 1;
	j.started_at = now - 9000;
	j.triggered_by = "olga";
	insert(s, &j);
	/* a paused job is final: an old one is not replayed */
	j = job("paused-old", "pb", "paused", now - 9000);
	insert(s, &j);
	b = store_batch_new();
	for (int i = 0; i < 3; i++)
		assert_int_equal(store_batch_event(b, "held", 1, "watchdog", "{\"action\":\"interrupted\"}", 0,
		                                   now - 8000 + i),
		                 0);
	/* other events are no stall */
	assert_int_equal(store_batch_event(b, "held", 1, "log", "{\"msg\":\"watchdog\"}", 0, now - 7000), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);

	assert_int_equal(store_scan_jobs(s, now - 3600, one_row_cb, &row), RD_OK);
	assert_int_equal(row.n, 1);
	assert_string_equal(row.id, "held");
	assert_string_equal(row.state, "awaiting_approval");
	assert_int_equal(row.stalls, 3);
	assert_int_equal(row.plan_attempts, 1);
	assert_false(row.null_approval);
	assert_false(row.null_triggered_by);
	assert_true(row.null_approved_by);
	assert_int_equal(row.max_attempts, 3);
	store_close(s);
}

/* ---- leases: claims, fencing, renewals ---- */

#define CLAIMS_MAX 512
#define LEASE 60.0

/* What a claim handed over (copied on the writer thread). */
struct claimed_row {
	char id[40], state[24], owner[40], prev[40];
	int takeover;
	long long token;
	double until;
};

struct claims {
	int n, overflow;
	struct claimed_row v[CLAIMS_MAX];
};

static struct claimed_row *claims_next(struct claims *c)
{
	if (c->n >= CLAIMS_MAX) {
		c->overflow = 1;
		return NULL;
	}
	return &c->v[c->n++];
}

static void claim_job_cb(const struct job_row *j, const char *prev_owner, void *arg)
{
	struct claimed_row *d = claims_next(arg);

	if (!d)
		return;
	snprintf(d->id, sizeof(d->id), "%s", j->id);
	snprintf(d->state, sizeof(d->state), "%s", j->state ? j->state : "");
	snprintf(d->owner, sizeof(d->owner), "%s", j->owner ? j->owner : "");
	snprintf(d->prev, sizeof(d->prev), "%s", prev_owner ? prev_owner : "");
	d->takeover = prev_owner != NULL;
	d->token = j->lease_token;
	d->until = j->lease_until;
}

static void claim_esc_cb(const struct escalation_row *e, const char *prev_owner, void *arg)
{
	struct claimed_row *d = claims_next(arg);

	if (!d)
		return;
	snprintf(d->id, sizeof(d->id), "%s", e->id);
	snprintf(d->state, sizeof(d->state), "%s", e->state ? e->state : "");
	snprintf(d->owner, sizeof(d->owner), "%s", e->owner ? e->owner : "");
	snprintf(d->prev, sizeof(d->prev), "%s", prev_owner ? prev_owner : "");
	d->takeover = prev_owner != NULL;
	d->until = e->lease_until;
}

/* Claim up to max jobs (or escalation rows) for owner at now, for LEASE
 * seconds: the batch's result; c gets what was claimed. */
static enum rd_status claim(struct store *s, const char *owner, double now, int max, struct claims *c)
{
	struct store_batch *b = store_batch_new();

	assert_non_null(b);
	assert_int_equal(store_batch_claim_jobs(b, owner, now, now + LEASE, max, claim_job_cb, c), 0);
	return store_commit(s, b, 1);
}

static enum rd_status claim_outbox(struct store *s, const char *owner, double now, int max,
                                   struct claims *c)
{
	struct store_batch *b = store_batch_new();

	assert_non_null(b);
	assert_int_equal(store_batch_claim_outbox(b, owner, now, now + LEASE, max, claim_esc_cb, c), 0);
	return store_commit(s, b, 1);
}

static const struct claimed_row *claimed(const struct claims *c, const char *id)
{
	for (int i = 0; i < c->n; i++)
		if (strcmp(c->v[i].id, id) == 0)
			return &c->v[i];
	return NULL;
}

/* The claimed ids, in order, are want[0..n). */
static void claimed_are(const struct claims *c, const char *const *want, int n)
{
	assert_false(c->overflow);
	if (c->n != n)
		fail_msg("claimed %d rows, want %d (first: %s)", c->n, n, c->n ? c->v[0].id : "-");
	for (int i = 0; i < n; i++)
		assert_string_equal(c->v[i].id, want[i]);
}

/* A job's row as the journal has it now (store_scan_jobs). */
struct lease_seen {
	const char *want;
	int found;
	char state[24], owner[40];
	double until;
	long long token;
};

static void lease_seen_cb(const struct job_row *j, void *arg)
{
	struct lease_seen *r = arg;

	if (strcmp(j->id, r->want) != 0)
		return;
	r->found = 1;
	snprintf(r->state, sizeof(r->state), "%s", j->state ? j->state : "");
	snprintf(r->owner, sizeof(r->owner), "%s", j->owner ? j->owner : "");
	r->until = j->lease_until;
	r->token = j->lease_token;
}

static struct lease_seen lease_of(struct store *s, const char *id)
{
	struct lease_seen r = {.want = id};

	/* since 0: every job that started or ended, and the unfinished */
	assert_int_equal(store_scan_jobs(s, 0, lease_seen_cb, &r), RD_OK);
	if (!r.found)
		fail_msg("job %s not in the scan", id);
	return r;
}

static struct job_row held(const char *id, const char *state, const char *owner, double until,
                           long long token)
{
	struct job_row j = job(id, "pb", state, T0 - 100);

	j.owner = owner;
	j.lease_until = until;
	j.lease_token = token;
	return j;
}

static enum rd_status commit_update(struct store *s, const struct job_row *j)
{
	struct store_batch *b = store_batch_new();

	assert_int_equal(store_batch_update_job(b, j), 0);
	return store_commit(s, b, 1);
}

/* Ready jobs are claimed oldest first, at most max, with token 1; live
 * leases, final jobs and retries not yet due are left alone; what a claim
 * wrote reads back; bad arguments are refused. */
static void test_claim_ready(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct job_row j;
	struct claims c = {0}, c2 = {0}, none = {0};
	struct store_batch *b;
	struct lease_seen r;

	j = job("q1", "pb", "queued", T0 - 50);
	insert(s, &j);
	j = held("b-queued", "queued", "B", T0 + 30, 1); /* inserted already claimed */
	insert(s, &j);
	j = job("q2", "pb", "queued", T0 - 40);
	insert(s, &j);
	j = job("rw-due", "pb", "retry_wait", T0 - 30);
	j.next_run_at = T0 - 1;
	insert(s, &j);
	j = job("rw-later", "pb", "retry_wait", T0 - 30);
	j.next_run_at = T0 + 100;
	insert(s, &j);
	j = job("legacy", "pb", "running", T0 - 20); /* written without leases */
	j.started_at = T0 - 20;
	insert(s, &j);
	j = job("done", "pb", "succeeded", T0 - 10);
	j.ended_at = T0 - 5;
	insert(s, &j);
	j = held("b-approval", "awaiting_approval", "B", T0 + 30, 4);
	insert(s, &j);
	j = held("b-running", "running", "B", T0, 2); /* lease_until == now: still live */
	insert(s, &j);
	j = held("b-retry", "retry_wait", "B", T0 + 30, 1);
	j.next_run_at = T0 - 1; /* due, but held */
	insert(s, &j);

	assert_int_equal(claim(s, "A", T0, 2, &c), RD_OK);
	claimed_are(&c, (const char *const[]){"q1", "q2"}, 2);
	for (int i = 0; i < c.n; i++) {
		assert_string_equal(c.v[i].owner, "A");
		assert_string_equal(c.v[i].state, "queued");
		assert_int_equal(c.v[i].token, 1);
		assert_true(c.v[i].until == T0 + LEASE);
		assert_false(c.v[i].takeover);
	}
	assert_int_equal(claim(s, "A", T0, 100, &c2), RD_OK);
	claimed_are(&c2, (const char *const[]){"rw-due", "legacy"}, 2);
	assert_string_equal(claimed(&c2, "legacy")->state, "running");
	assert_false(claimed(&c2, "legacy")->takeover);
	assert_string_equal(claimed(&c2, "rw-due")->state, "retry_wait");

	/* everything left is held, finished or not due */
	assert_int_equal(claim(s, "B", T0, 100, &none), RD_OK);
	assert_int_equal(none.n, 0);

	r = lease_of(s, "q1");
	assert_string_equal(r.owner, "A");
	assert_true(r.until == T0 + LEASE);
	assert_int_equal(r.token, 1);
	assert_string_equal(r.state, "queued");
	r = lease_of(s, "b-approval");
	assert_string_equal(r.owner, "B");
	assert_true(r.until == T0 + 30);
	assert_int_equal(r.token, 4);
	r = lease_of(s, "rw-later");
	assert_string_equal(r.owner, "");
	assert_true(r.until == 0);
	assert_int_equal(r.token, 0);

	/* a claim without a callback */
	b = store_batch_new();
	assert_int_equal(store_batch_claim_jobs(b, "A", T0 + 200, T0 + 260, 100, NULL, NULL), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	assert_string_equal(lease_of(s, "rw-later").owner, "A"); /* due at T0 + 100 */

	b = store_batch_new();
	assert_int_equal(store_batch_claim_jobs(b, NULL, T0, T0 + 1, 1, claim_job_cb, &none), -1);
	assert_int_equal(store_batch_claim_jobs(b, "", T0, T0 + 1, 1, claim_job_cb, &none), -1);
	assert_int_equal(store_batch_claim_jobs(b, "A", T0, T0 + 1, 0, claim_job_cb, &none), -1);
	assert_int_equal(store_batch_claim_jobs(b, "A", T0, T0 - 1, 1, claim_job_cb, &none), -1);
	assert_int_equal(store_batch_claim_outbox(b, "A", T0, T0 + 1, 0, claim_esc_cb, &none), -1);
	assert_int_equal(store_batch_renew(b, NULL, T0, NULL, NULL), -1);
	assert_int_equal(store_batch_claim_jobs(NULL, "A", T0, T0 + 1, 1, claim_job_cb, &none), -1);
	store_batch_free(b);
	store_close(s);
}

/* An expired lease is taken over: the token goes up by one, the claim
 * says whose it was and leaves the state as it was; a lease is live up to
 * and including lease_until. A retry not yet due is taken over from an
 * expired owner but not claimed when free. */
static void test_claim_takeover(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct job_row j;
	struct claims c = {0}, none = {0};
	const struct claimed_row *r;

	j = held("run", "running", "A", T0 + 10, 3);
	insert(s, &j);
	j = held("aw", "awaiting_approval", "A", T0 + 10, 1);
	insert(s, &j);
	j = held("rw", "retry_wait", "A", T0 + 10, 2);
	j.next_run_at = T0 + 1000;
	insert(s, &j);
	j = job("rw-free", "pb", "retry_wait", T0);
	j.next_run_at = T0 + 1000;
	insert(s, &j);
	j = held("q", "queued", "A", T0 + 10, 5);
	insert(s, &j);

	assert_int_equal(claim(s, "B", T0 + 5, 100, &none), RD_OK);
	assert_int_equal(none.n, 0);
	assert_int_equal(claim(s, "B", T0 + 10, 100, &none), RD_OK);
	assert_int_equal(none.n, 0);

	assert_int_equal(claim(s, "B", T0 + 10.5, 100, &c), RD_OK);
	claimed_are(&c, (const char *const[]){"run", "aw", "rw", "q"}, 4);
	for (int i = 0; i < c.n; i++) {
		assert_true(c.v[i].takeover);
		assert_string_equal(c.v[i].prev, "A");
		assert_string_equal(c.v[i].owner, "B");
		assert_true(c.v[i].until == T0 + 10.5 + LEASE);
	}
	r = claimed(&c, "run");
	assert_int_equal(r->token, 4);
	assert_string_equal(r->state, "running");
	assert_int_equal(claimed(&c, "aw")->token, 2);
	assert_string_equal(claimed(&c, "aw")->state, "awaiting_approval");
	assert_int_equal(claimed(&c, "rw")->token, 3);
	assert_int_equal(claimed(&c, "q")->token, 6);
	assert_int_equal(lease_of(s, "run").token, 4);
	assert_string_equal(lease_of(s, "run").owner, "B");
	assert_string_equal(lease_of(s, "run").state, "running");

	/* B's leases are live now */
	assert_int_equal(claim(s, "A", T0 + 20, 100, &none), RD_OK);
	assert_int_equal(none.n, 0);
	store_close(s);
}

static atomic_int done_fenced, done_ok, done_other;

static void count_done(enum rd_status r, void *arg)
{
	(void)arg;
	if (r == RD_FENCED)
		atomic_fetch_add(&done_fenced, 1);
	else if (r == RD_OK)
		atomic_fetch_add(&done_ok, 1);
	else
		atomic_fetch_add(&done_other, 1);
}

static int log_fd_null = -1;

/* A write with a token older than the job's is refused as RD_FENCED and
 * changes nothing, the rest of its batch included; the current token and
 * an unfenced write (0) apply; store_batch_fence guards attempt and event
 * writes; an unknown job is an error, not fencing; a fenced batch nobody
 * waits for is logged ("fenced: ... held by ...") and not counted as a
 * journal error. */
static void test_fenced_update(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct job_row j = job("j", "pb", "queued", T0), stale;
	struct attempt_row a = {.n = 1, .started_at = T0 + 1, .verify_ok = -1};
	struct claims c = {0};
	struct store_batch *b;
	struct lease_seen r;
	cJSON *rec;
	double errs0;
	char logpath[320], buf[4096];
	int fd;
	ssize_t n;

	insert(s, &j);
	assert_int_equal(claim(s, "A", T0, 1, &c), RD_OK);
	assert_int_equal(c.v[0].token, 1);
	/* A is late: its lease expired and B took the job over */
	assert_int_equal(claim(s, "B", T0 + LEASE + 1, 1, &c), RD_OK);
	assert_int_equal(c.n, 2);
	assert_int_equal(c.v[1].token, 2);

	stale = held("j", "running", "A", T0 + LEASE, 1);
	stale.attempts = 1;
	stale.started_at = T0 + 1;
	b = store_batch_new();
	assert_int_equal(store_batch_update_job(b, &stale), 0);
	assert_int_equal(store_batch_attempt(b, "j", &a), 0);
	assert_int_equal(store_commit(s, b, 1), RD_FENCED);
	r = lease_of(s, "j");
	assert_string_equal(r.state, "queued");
	assert_string_equal(r.owner, "B");
	assert_int_equal(r.token, 2);
	rec = record(s, "j");
	assert_int_equal(cJSON_GetArraySize(arr(rec, "attempts")), 0);
	cJSON_Delete(rec);

	/* attempts and events behind a fence */
	b = store_batch_new();
	assert_int_equal(store_batch_fence(b, "j", 1), 0);
	assert_int_equal(store_batch_attempt(b, "j", &a), 0);
	assert_int_equal(store_batch_event(b, "j", 1, "log", "{\"msg\":\"late\"}", 0, T0 + 2), 0);
	assert_int_equal(store_commit(s, b, 1), RD_FENCED);
	b = store_batch_new();
	assert_int_equal(store_batch_fence(b, "j", 2), 0);
	assert_int_equal(store_batch_event(b, "j", 0, "log", "{\"msg\":\"b holds it\"}", 0, T0 + 2), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	b = store_batch_new();
	assert_int_equal(store_batch_fence(b, "j", 0), 0); /* no check */
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	rec = record(s, "j");
	assert_int_equal(cJSON_GetArraySize(arr(rec, "attempts")), 0);
	assert_int_equal(cJSON_GetArraySize(arr(rec, "log")), 1);
	cJSON_Delete(rec);

	/* the holder writes */
	j = held("j", "running", "B", T0 + LEASE + 1 + LEASE, 2);
	j.attempts = 1;
	j.started_at = T0 + LEASE + 2;
	b = store_batch_new();
	assert_int_equal(store_batch_update_job(b, &j), 0);
	assert_int_equal(store_batch_attempt(b, "j", &a), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	r = lease_of(s, "j");
	assert_string_equal(r.state, "running");
	assert_string_equal(r.owner, "B");

	/* unknown jobs are errors, whatever the token */
	stale.id = "ghost";
	assert_int_equal(commit_update(s, &stale), RD_ERR);
	b = store_batch_new();
	assert_int_equal(store_batch_fence(b, "ghost", 1), 0);
	assert_int_equal(store_commit(s, b, 1), RD_ERR);
	stale.id = "j";

	/* nobody waits: logged as fenced, not counted; done says RD_FENCED */
	errs0 = metrics_get(M_JOURNAL_ERRORS, NULL, NULL);
	snprintf(logpath, sizeof(logpath), "%s/log", f->dir);
	fd = open(logpath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	log_set_fd(fd);
	b = store_batch_new();
	assert_int_equal(store_batch_update_job(b, &stale), 0);
	assert_int_equal(store_commit(s, b, 0), RD_OK);
	atomic_store(&done_fenced, 0);
	atomic_store(&done_ok, 0);
	atomic_store(&done_other, 0);
	b = store_batch_new();
	assert_int_equal(store_batch_update_job(b, &stale), 0);
	assert_int_equal(store_commit_cb(s, b, count_done, NULL), RD_OK);
	b = store_batch_new();
	assert_int_equal(store_batch_event(b, "j", 1, "log", "{\"msg\":\"next\"}", 0, T0 + 3), 0);
	assert_int_equal(store_commit_cb(s, b, count_done, NULL), RD_OK);
	for (int i = 0; i < 500 && atomic_load(&done_fenced) + atomic_load(&done_ok) < 2; i++)
		sleep_ms(10);
	log_set_fd(log_fd_null);
	assert_int_equal(atomic_load(&done_fenced), 1);
	assert_int_equal(atomic_load(&done_ok), 1);
	assert_int_equal(atomic_load(&done_other), 0);
	assert_true(metrics_get(M_JOURNAL_ERRORS, NULL, NULL) == errs0);
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	assert_true(n > 0);
	buf[n] = '\0';
	if (!strstr(buf, "journal batch fenced") || !strstr(buf, "fenced: job j is held by B"))
		fail_msg("log: %s", buf);

	/* unfenced (a single replica): applies, and releases */
	j = job("j", "pb", "queued", T0);
	assert_int_equal(commit_update(s, &j), RD_OK);
	r = lease_of(s, "j");
	assert_string_equal(r.owner, "");
	assert_true(r.until == 0);
	assert_int_equal(r.token, 2);
	store_close(s);
}

struct renewed {
	int n;
	char id[8][40];
	long long token[8];
};

static void renew_cb(const char *job_id, long long token, void *arg)
{
	struct renewed *r = arg;

	if (r->n < 8) {
		snprintf(r->id[r->n], sizeof(r->id[0]), "%s", job_id);
		r->token[r->n++] = token;
	}
}

static enum rd_status renew(struct store *s, const char *owner, double until, struct renewed *r)
{
	struct store_batch *b = store_batch_new();

	memset(r, 0, sizeof(*r));
	assert_int_equal(store_batch_renew(b, owner, until, renew_cb, r), 0);
	return store_commit(s, b, 1);
}

static void esc_insert(struct store *s, const char *id, const char *job_id, const char *st, double next,
                       const char *owner, double until)
{
	struct escalation_row e = {
		.id = id, .job_id = job_id, .incident_key = "pb/fp", .sink = "slack", .kind = "trigger",
		.reason = "failed", .state = st, .created_at = T0 - 100, .updated_at = T0 - 100,
		.next_attempt_at = next, .payload = "{}", .owner = owner, .lease_until = until,
	};
	struct store_batch *b = store_batch_new();

	assert_int_equal(store_batch_escalation(b, &e), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
}

/* A renewal keeps a lease past its first expiry, never shortens it, and
 * tells which jobs it renewed; a lease taken over is not renewed. A lease
 * that expired with nobody claiming it is renewed. Escalation rows are
 * renewed too. */
static void test_renew(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct job_row j;
	struct claims c = {0}, none = {0}, e = {0};
	struct renewed rn;

	j = job("a", "pb", "queued", T0);
	insert(s, &j);
	j = job("b", "pb", "queued", T0);
	insert(s, &j);
	j = job("other", "pb", "queued", T0);
	j.owner = "B";
	j.lease_until = T0 + 1000;
	insert(s, &j);
	esc_insert(s, "e1", "a", "pending", 0, NULL, 0);
	assert_int_equal(claim(s, "A", T0, 2, &c), RD_OK);
	assert_int_equal(c.n, 2);
	assert_int_equal(claim_outbox(s, "A", T0, 10, &e), RD_OK);
	assert_int_equal(e.n, 1);

	assert_int_equal(renew(s, "A", T0 + 120, &rn), RD_OK);
	assert_int_equal(rn.n, 2);
	assert_true((strcmp(rn.id[0], "a") == 0 && strcmp(rn.id[1], "b") == 0) ||
	            (strcmp(rn.id[0], "b") == 0 && strcmp(rn.id[1], "a") == 0));
	assert_int_equal(rn.token[0], 1);
	assert_int_equal(rn.token[1], 1);
	assert_true(lease_of(s, "a").until == T0 + 120);
	assert_true(lease_of(s, "other").until == T0 + 1000);
	/* past the first expiry, still A's */
	assert_int_equal(claim(s, "B", T0 + 90, 10, &none), RD_OK);
	assert_int_equal(claim_outbox(s, "B", T0 + 90, 10, &none), RD_OK);
	assert_int_equal(none.n, 0);

	/* never shorter */
	assert_int_equal(renew(s, "A", T0 + 100, &rn), RD_OK);
	assert_int_equal(rn.n, 2);
	assert_true(lease_of(s, "a").until == T0 + 120);

	/* b is ended (released), a is taken over: nothing left to renew */
	j = held("b", "succeeded", NULL, 0, 1);
	j.ended_at = T0 + 100;
	assert_int_equal(commit_update(s, &j), RD_OK);
	assert_int_equal(claim(s, "B", T0 + 121, 10, &c), RD_OK);
	assert_int_equal(c.n, 3);
	assert_string_equal(c.v[2].id, "a");
	assert_string_equal(c.v[2].prev, "A");
	assert_int_equal(c.v[2].token, 2);
	assert_int_equal(renew(s, "A", T0 + 300, &rn), RD_OK);
	assert_int_equal(rn.n, 0);
	assert_string_equal(lease_of(s, "a").owner, "B");
	assert_true(lease_of(s, "a").until == T0 + 121 + LEASE);

	/* expired, not taken over: renewed, token unchanged */
	assert_int_equal(renew(s, "B", T0 + 5000, &rn), RD_OK);
	assert_int_equal(rn.n, 2); /* a, other */
	assert_true(lease_of(s, "other").until == T0 + 5000);
	assert_int_equal(lease_of(s, "a").token, 2);

	/* a renewal without a callback */
	{
		struct store_batch *b = store_batch_new();
		assert_int_equal(store_batch_renew(b, "B", T0 + 6000, NULL, NULL), 0);
		assert_int_equal(store_commit(s, b, 1), RD_OK);
	}
	assert_true(lease_of(s, "a").until == T0 + 6000);
	store_close(s);
}

/* The final update releases a job (no owner, no expiry; the token stays);
 * so does going back to queued, and the next claim is no takeover but
 * raises the token, which fences the old holder. An update by the holder
 * keeps a renewal that committed after its row was made. */
static void test_release(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct job_row j = job("j", "pb", "queued", T0);
	struct claims c = {0}, none = {0};
	struct renewed rn;
	struct lease_seen r;

	insert(s, &j);
	j = job("k", "pb", "queued", T0);
	insert(s, &j);
	assert_int_equal(claim(s, "A", T0, 10, &c), RD_OK);
	assert_int_equal(c.n, 2);

	j = held("j", "running", "A", T0 + LEASE, 1);
	j.started_at = T0 + 1;
	assert_int_equal(commit_update(s, &j), RD_OK);
	assert_int_equal(renew(s, "A", T0 + 200, &rn), RD_OK);
	/* a row made before the renewal: the later expiry stays */
	j.attempts = 1;
	assert_int_equal(commit_update(s, &j), RD_OK);
	r = lease_of(s, "j");
	assert_true(r.until == T0 + 200);
	assert_string_equal(r.owner, "A");
	/* and a later one is taken */
	j.lease_until = T0 + 300;
	assert_int_equal(commit_update(s, &j), RD_OK);
	assert_true(lease_of(s, "j").until == T0 + 300);
	/* and 0 keeps it */
	j.lease_until = 0;
	assert_int_equal(commit_update(s, &j), RD_OK);
	assert_true(lease_of(s, "j").until == T0 + 300);

	j = held("j", "succeeded", NULL, 0, 1);
	j.started_at = T0 + 1;
	j.ended_at = T0 + 10;
	j.outcome = "succeeded";
	assert_int_equal(commit_update(s, &j), RD_OK);
	r = lease_of(s, "j");
	assert_string_equal(r.state, "succeeded");
	assert_string_equal(r.owner, "");
	assert_true(r.until == 0);
	assert_int_equal(r.token, 1);

	/* back to queued: released, claimed afresh */
	j = held("k", "queued", NULL, T0 + LEASE, 1);
	assert_int_equal(commit_update(s, &j), RD_OK);
	r = lease_of(s, "k");
	assert_string_equal(r.owner, "");
	assert_true(r.until == 0);
	memset(&c, 0, sizeof(c));
	assert_int_equal(claim(s, "B", T0 + 1, 10, &c), RD_OK);
	claimed_are(&c, (const char *const[]){"k"}, 1);
	assert_false(c.v[0].takeover);
	assert_int_equal(c.v[0].token, 2);
	j = held("k", "running", "A", T0 + LEASE, 1);
	assert_int_equal(commit_update(s, &j), RD_FENCED);
	assert_int_equal(claim(s, "C", T0 + 2, 10, &none), RD_OK);
	assert_int_equal(none.n, 0);
	store_close(s);
}

/* Two replicas (two journal handles on one database) claiming at once. */
#define RACE_ROWS 300

struct racer {
	struct store *s;
	const char *owner;
	int outbox;
	int failures, rounds;
	struct claims got;
};

static void *race_thread(void *p)
{
	struct racer *r = p;

	for (r->rounds = 0; r->rounds < RACE_ROWS; r->rounds++) {
		struct store_batch *b = store_batch_new();
		int before = r->got.n, rc;

		if (!b) {
			r->failures++;
			break;
		}
		if (r->outbox)
			rc = store_batch_claim_outbox(b, r->owner, T0, T0 + LEASE, 7, claim_esc_cb, &r->got);
		else
			rc = store_batch_claim_jobs(b, r->owner, T0, T0 + LEASE, 7, claim_job_cb, &r->got);
		if (rc < 0 || store_commit(r->s, b, 1) != RD_OK) {
			r->failures++;
			break;
		}
		if (r->got.n == before)
			break; /* nothing left for this one */
		sleep_ms(1); /* let the other in: SQLite's busy wait is a sleep */
	}
	return NULL;
}

/* Each of RACE_ROWS rows was claimed by exactly one of the racers. */
static void race(const char *db, int outbox)
{
	struct store *s1 = open_ok(db), *s2 = open_ok(db), *s3;
	struct racer *r = calloc(2, sizeof(*r));
	unsigned char *seen_rows = calloc(RACE_ROWS, 1);
	struct claims none = {0};
	pthread_t t[2];
	struct store_batch *b = store_batch_new();
	char id[32];

	assert_non_null(r);
	assert_non_null(seen_rows);
	if (outbox) {
		struct job_row j = job("j", "pb", "failed", T0);
		j.ended_at = T0;
		insert(s1, &j);
	}
	for (int i = 0; i < RACE_ROWS; i++) {
		snprintf(id, sizeof(id), "r-%03d", i);
		if (outbox) {
			struct escalation_row e = {.id = id, .job_id = "j", .sink = "pagerduty", .kind = "trigger",
			                           .state = i % 2 ? "pending" : "retrying", .payload = "{}",
			                           .next_attempt_at = i % 3 ? 0 : T0 - 1};
			assert_int_equal(store_batch_escalation(b, &e), 0);
		} else {
			struct job_row j = job(id, "pb", "queued", T0 + i);
			assert_int_equal(store_batch_insert_job(b, &j), 0);
		}
	}
	assert_int_equal(store_commit(s1, b, 1), RD_OK);

	r[0] = (struct racer){.s = s1, .owner = "A", .outbox = outbox};
	r[1] = (struct racer){.s = s2, .owner = "B", .outbox = outbox};
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, race_thread, &r[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	print_message("%s race: A claimed %d, B %d\n", outbox ? "outbox" : "jobs", r[0].got.n, r[1].got.n);
	for (int k = 0; k < 2; k++) {
		assert_int_equal(r[k].failures, 0);
		assert_false(r[k].got.overflow);
		for (int i = 0; i < r[k].got.n; i++) {
			int n = atoi(r[k].got.v[i].id + 2);
			assert_true(n >= 0 && n < RACE_ROWS);
			if (seen_rows[n])
				fail_msg("%s claimed twice", r[k].got.v[i].id);
			seen_rows[n] = 1;
			assert_string_equal(r[k].got.v[i].owner, r[k].owner);
			assert_false(r[k].got.v[i].takeover);
		}
	}
	assert_int_equal(r[0].got.n + r[1].got.n, RACE_ROWS);
	s3 = open_ok(db);
	if (outbox)
		assert_int_equal(claim_outbox(s3, "C", T0, 1000, &none), RD_OK);
	else
		assert_int_equal(claim(s3, "C", T0, 1000, &none), RD_OK);
	assert_int_equal(none.n, 0);
	store_close(s3);
	store_close(s2);
	store_close(s1);
	free(seen_rows);
	free(r);
}

static void test_claim_concurrent(void **state)
{
	struct fix *f = *state;

	race(f->db, 0);
}

/* Escalation rows due to be sent are claimed once: pending or retrying,
 * due, not held; an expired claim is taken over. Updates are fenced by
 * owner and release the claim; an unknown id changes nothing, as before. */
static void test_outbox_claim(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct job_row j = job("j", "pb", "failed", T0);
	struct claims c = {0}, none = {0}, again = {0};
	struct escalation_row u = {.id = "e1", .state = "delivered", .attempts = 1, .last_answer = "200",
	                           .updated_at = T0 + 1, .delivered_at = T0 + 1};
	struct store_batch *b;

	j.ended_at = T0;
	insert(s, &j);
	esc_insert(s, "e1", "j", "pending", 0, NULL, 0);
	esc_insert(s, "e2", "j", "retrying", T0 - 5, NULL, 0);
	esc_insert(s, "e3", "j", "retrying", T0 + 100, NULL, 0); /* not due */
	esc_insert(s, "e4", "j", "delivered", 0, NULL, 0);
	esc_insert(s, "e5", "j", "pending", 0, "B", T0 + 30);    /* held */
	esc_insert(s, "e6", "j", "pending", 0, "B", T0 - 1);     /* expired */

	assert_int_equal(claim_outbox(s, "A", T0, 10, &c), RD_OK);
	claimed_are(&c, (const char *const[]){"e1", "e2", "e6"}, 3);
	assert_false(claimed(&c, "e1")->takeover);
	assert_true(claimed(&c, "e6")->takeover);
	assert_string_equal(claimed(&c, "e6")->prev, "B");
	for (int i = 0; i < c.n; i++) {
		assert_string_equal(c.v[i].owner, "A");
		assert_true(c.v[i].until == T0 + LEASE);
	}
	assert_int_equal(claim_outbox(s, "B", T0 + 1, 10, &none), RD_OK);
	assert_int_equal(none.n, 0);

	/* not A's: refused */
	u.owner = "B";
	b = store_batch_new();
	assert_int_equal(store_batch_escalation_update(b, &u), 0);
	assert_int_equal(store_commit(s, b, 1), RD_FENCED);
	u.owner = NULL;
	b = store_batch_new();
	assert_int_equal(store_batch_escalation_update(b, &u), 0);
	assert_int_equal(store_commit(s, b, 1), RD_FENCED);
	/* A's: applied, released */
	u.owner = "A";
	b = store_batch_new();
	assert_int_equal(store_batch_escalation_update(b, &u), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	u = (struct escalation_row){.id = "e2", .state = "retrying", .attempts = 2, .owner = "A",
	                            .updated_at = T0 + 1, .next_attempt_at = T0 + 30};
	b = store_batch_new();
	assert_int_equal(store_batch_escalation_update(b, &u), 0);
	u.id = "nope"; /* unknown: nothing, as ever */
	assert_int_equal(store_batch_escalation_update(b, &u), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	/* A's stale update after the release: refused */
	u.id = "e1";
	b = store_batch_new();
	assert_int_equal(store_batch_escalation_update(b, &u), 0);
	assert_int_equal(store_commit(s, b, 1), RD_FENCED);

	/* e2 is due again at T0 + 30, free: no takeover */
	assert_int_equal(claim_outbox(s, "B", T0 + 31, 10, &again), RD_OK);
	claimed_are(&again, (const char *const[]){"e2", "e5"}, 2); /* e5's claim expired at T0 + 30 */
	assert_false(again.v[0].takeover);
	assert_true(again.v[1].takeover);
	{
		cJSON *rec = record(s, "j");
		const cJSON *e;
		int delivered = 0;
		cJSON_ArrayForEach(e, arr(rec, "escalations")) {
			if (strcmp(str(e, "id"), "e1") == 0) {
				assert_string_equal(str(e, "state"), "delivered");
				delivered = 1;
			}
		}
		assert_true(delivered);
		cJSON_Delete(rec);
	}
	store_close(s);
}

struct outbox_seen {
	int n;
	char id[8][40], owner[8][40];
	double until[8];
};

static void outbox_cb(const struct escalation_row *e, void *arg)
{
	struct outbox_seen *o = arg;

	if (o->n < 8) {
		snprintf(o->id[o->n], sizeof(o->id[0]), "%s", e->id);
		snprintf(o->owner[o->n], sizeof(o->owner[0]), "%s", e->owner ? e->owner : "");
		o->until[o->n++] = e->lease_until;
	}
}

/* The outbox scan shows who holds a row. */
static void test_outbox_scan_owner(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct job_row j = job("j", "pb", "failed", T0);
	struct claims c = {0};
	struct outbox_seen o = {0};

	insert(s, &j);
	esc_insert(s, "e1", "j", "pending", 0, NULL, 0);
	esc_insert(s, "e2", "j", "pending", 0, NULL, 0);
	assert_int_equal(claim_outbox(s, "A", T0, 1, &c), RD_OK);
	assert_int_equal(store_scan_outbox(s, outbox_cb, &o), RD_OK);
	assert_int_equal(o.n, 2);
	assert_string_equal(o.id[0], "e1");
	assert_string_equal(o.owner[0], "A");
	assert_true(o.until[0] == T0 + LEASE);
	assert_string_equal(o.owner[1], "");
	assert_true(o.until[1] == 0);
	store_close(s);
}

static void test_outbox_claim_concurrent(void **state)
{
	struct fix *f = *state;

	race(f->db, 1);
}

/* ---- decisions inside the transaction (store_batch_call) ---- */

#define SEEN_MAX 16

/* The rows one read of a call got, copied in fn. fn runs on the writer
 * thread: it records, and the test asserts once the commit is back. */
struct txn_seen {
	int n, overflow;
	char id[SEEN_MAX][40], state[SEEN_MAX][24], key[SEEN_MAX][24], playbook[SEEN_MAX][24];
	double created[SEEN_MAX], ended[SEEN_MAX];
};

static void txn_seen_cb(const struct job_row *j, void *arg)
{
	struct txn_seen *t = arg;
	int i = t->n;

	if (i >= SEEN_MAX) {
		t->overflow = 1;
		return;
	}
	snprintf(t->id[i], sizeof(t->id[i]), "%s", j->id ? j->id : "(null)");
	snprintf(t->state[i], sizeof(t->state[i]), "%s", j->state ? j->state : "(null)");
	snprintf(t->key[i], sizeof(t->key[i]), "%s", j->key ? j->key : "(null)");
	snprintf(t->playbook[i], sizeof(t->playbook[i]), "%s", j->playbook ? j->playbook : "(null)");
	t->created[i] = j->created_at;
	t->ended[i] = j->ended_at;
	t->n++;
}

/* One store_txn_jobs of a call, and what it answered. */
struct txn_read {
	enum store_txn_read q;
	const char *name;
	double since;
	int rc;
	struct txn_seen seen;
};

/* What a call does: its reads in order, then (if only_if_none, only when
 * the first read found nothing) the writes it queues on more: a job and
 * an admission event of it; then it answers ret. */
struct call_plan {
	int calls;                    /* times fn ran */
	int n;
	struct txn_read r[6];
	int only_if_none;
	const struct job_row *insert; /* queued on more; NULL: none */
	int queued;                   /* fn queued its writes */
	int more_rc;                  /* what queueing them answered */
	int more_was_empty;           /* more was empty when fn got it */
	int ret;                      /* fn's answer: 0 or -1 */
	/* store_txn_pauses, when read_pauses is set */
	int read_pauses, pauses_rc;
	struct pauses_seen pauses;
	int pauses_overflow;
	double sleep_ms_after_reads;  /* test_pg_admission_serialized */
	/* monotonic times fn began, its reads answered (on a server, the
	 * first waits for the admission lock), and it ended */
	double entered, answered, left;
};

static double now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* store_txn_pauses' rows; no asserts on the writer thread. */
static void txn_pause_cb(const struct pause_row *p, void *arg)
{
	struct call_plan *c = arg;
	struct pauses_seen *ps = &c->pauses;

	if (ps->n >= 4) {
		c->pauses_overflow = 1;
		return;
	}
	snprintf(ps->scope[ps->n], 32, "%s", p->scope);
	snprintf(ps->principal[ps->n], 32, "%s", p->principal ? p->principal : "(null)");
	snprintf(ps->reason[ps->n], 32, "%s", p->reason ? p->reason : "(null)");
	ps->since[ps->n] = p->since;
	ps->until[ps->n] = p->until;
	ps->n++;
}

static int call_fn(struct store_txn *t, struct store_batch *more, void *arg)
{
	struct call_plan *p = arg;

	p->entered = now_mono();
	p->calls++;
	p->more_was_empty = store_batch_empty(more);
	for (int i = 0; i < p->n; i++) {
		memset(&p->r[i].seen, 0, sizeof(p->r[i].seen));
		p->r[i].rc = store_txn_jobs(t, p->r[i].q, p->r[i].name, p->r[i].since, txn_seen_cb,
		                            &p->r[i].seen);
	}
	if (p->read_pauses) {
		memset(&p->pauses, 0, sizeof(p->pauses));
		p->pauses_rc = store_txn_pauses(t, txn_pause_cb, p);
	}
	p->answered = now_mono();
	if (p->sleep_ms_after_reads > 0)
		usleep((useconds_t)(p->sleep_ms_after_reads * 1000));
	if (p->insert && (!p->only_if_none || (p->n > 0 && p->r[0].rc == 0 && p->r[0].seen.n == 0))) {
		p->more_rc |= store_batch_insert_job(more, p->insert);
		p->more_rc |= store_batch_event(more, p->insert->id, 0, "admission",
		                                "{\"decision\":\"queued\"}", 0, p->insert->created_at);
		p->queued = 1;
	}
	p->left = now_mono();
	return p->ret;
}

/* A read of a call got exactly the jobs want[0..n), in that order. */
static void seen_are(const struct txn_read *r, const char *const *want, int n)
{
	char got[512] = "", exp[512] = "";
	int same = r->seen.n == n && !r->seen.overflow;

	for (int i = 0; i < r->seen.n; i++) {
		strncat(got, r->seen.id[i], sizeof(got) - strlen(got) - 2);
		strcat(got, " ");
		if (i < n && strcmp(r->seen.id[i], want[i]) != 0)
			same = 0;
	}
	for (int i = 0; i < n; i++) {
		strncat(exp, want[i], sizeof(exp) - strlen(exp) - 2);
		strcat(exp, " ");
	}
	if (r->rc != 0)
		fail_msg("read %d of %s answered %d", (int)r->q, r->name ? r->name : "(null)", r->rc);
	if (!same)
		fail_msg("read %d of %s: got [%s], want [%s]%s", (int)r->q, r->name ? r->name : "(null)", got,
		         exp, r->seen.overflow ? " (overflow)" : "");
}

/* The same, in any order (a read whose order the API leaves open). */
static void seen_set_is(const struct txn_read *r, const char *const *want, int n)
{
	int ok = r->rc == 0 && !r->seen.overflow && r->seen.n == n;

	for (int i = 0; ok && i < n; i++) {
		int found = 0;
		for (int g = 0; g < r->seen.n; g++)
			found += strcmp(r->seen.id[g], want[i]) == 0;
		ok = found == 1;
	}
	if (!ok)
		seen_are(r, want, n); /* fails, listing what was read */
}

/* The index of id in a read's rows, or fails. */
static int seen_at(const struct txn_read *r, const char *id)
{
	for (int i = 0; i < r->seen.n; i++)
		if (strcmp(r->seen.id[i], id) == 0)
			return i;
	fail_msg("%s not among the rows read", id);
	return -1;
}

static struct job_row keyed(const char *id, const char *playbook, const char *key, const char *state,
                            double created, double ended)
{
	struct job_row j = job(id, playbook, state, created);

	j.key = key;
	j.ended_at = ended;
	return j;
}

/* A call sees the journal as its transaction has it: jobs committed by
 * earlier batches and the job an earlier op of its own batch inserted.
 * STR_ACTIVE: the unfinished jobs of the key (queued, running, retry_wait,
 * awaiting_approval), oldest first; STR_LAST_ENDED: the one of the key
 * with the greatest ended_at, a paused one never; STR_STARTS: the jobs of
 * the playbook created after since, paused and budget_exhausted aside. */
static void test_call_reads(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct job_row j;
	struct store_batch *b;
	struct call_plan p = {
		.n = 6,
		.r = {
			{.q = STR_ACTIVE, .name = "K"},
			{.q = STR_LAST_ENDED, .name = "K"},
			{.q = STR_STARTS, .name = "pb", .since = T0 - 75},
			{.q = STR_LAST_ENDED, .name = "O"},
			{.q = STR_ACTIVE, .name = "nokey"},
			{.q = STR_LAST_ENDED, .name = "X"},
		},
	};
	struct call_plan late = {
		.n = 3,
		.r = {
			{.q = STR_STARTS, .name = "pb", .since = T0},
			{.q = STR_STARTS, .name = "pb2", .since = 0},
			{.q = STR_ACTIVE, .name = "K"},
		},
	};
	const struct txn_read *r;
	int i;

	/* committed before, one batch each; seq order = created order */
	j = keyed("k-done", "pb", "K", "succeeded", T0 - 100, T0 - 50);
	insert(s, &j);
	j = keyed("k-q", "pb", "K", "queued", T0 - 90, 0);
	insert(s, &j);
	j = keyed("k-run", "pb", "K", "running", T0 - 80, 0);
	j.started_at = T0 - 79;
	j.owner = "A";
	j.lease_until = T0 + 1000;
	j.lease_token = 1;
	insert(s, &j);
	j = keyed("k-failed", "pb", "K", "failed", T0 - 75, T0 - 20); /* created exactly at since */
	insert(s, &j);
	j = keyed("k-paused", "pb", "K", "paused", T0 - 70, T0 - 10); /* ended last, but paused */
	insert(s, &j);
	j = keyed("k-rw", "pb", "K", "retry_wait", T0 - 65, 0);
	j.next_run_at = T0 + 30;
	insert(s, &j);
	j = keyed("k-budget", "pb", "K", "budget_exhausted", T0 - 60, T0 - 60);
	insert(s, &j);
	j = keyed("k-aw", "pb", "K", "awaiting_approval", T0 - 55, 0);
	j.approval = "pending";
	insert(s, &j);
	j = keyed("k-cancel", "pb", "K", "cancelled", T0 - 50, T0 - 30);
	insert(s, &j);
	j = keyed("o-q", "pb", "O", "queued", T0 - 45, 0);
	insert(s, &j);
	j = keyed("o-done", "pb", "O", "succeeded", T0 - 44, T0 - 1); /* ended last of all */
	insert(s, &j);
	j = keyed("x-q", "pb2", "X", "queued", T0 - 40, 0);
	insert(s, &j);
	j = keyed("x-paused", "pb2", "X", "paused", T0 - 39, T0 - 39); /* X's only ended job */
	insert(s, &j);

	/* an earlier op of the same batch, then the call */
	b = store_batch_new();
	assert_non_null(b);
	j = keyed("k-new", "pb", "K", "queued", T0 - 5, 0);
	assert_int_equal(store_batch_insert_job(b, &j), 0);
	assert_int_equal(store_batch_call(b, call_fn, &p), 0);
	assert_int_equal(store_batch_empty(b), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);

	assert_int_equal(p.calls, 1);
	assert_int_equal(p.more_was_empty, 1);
	r = &p.r[0];
	seen_are(r, (const char *const[]){"k-q", "k-run", "k-rw", "k-aw", "k-new"}, 5);
	{
		static const char *const st[] = {"queued", "running", "retry_wait", "awaiting_approval",
		                                 "queued"};
		for (i = 0; i < 5; i++) {
			assert_string_equal(r->seen.state[i], st[i]);
			assert_string_equal(r->seen.key[i], "K");
			assert_string_equal(r->seen.playbook[i], "pb");
		}
	}
	assert_true(r->seen.created[4] == T0 - 5);
	r = &p.r[1];
	seen_are(r, (const char *const[]){"k-failed"}, 1);
	assert_string_equal(r->seen.state[0], "failed");
	assert_true(r->seen.ended[0] == T0 - 20);
	r = &p.r[2];
	seen_set_is(r, (const char *const[]){"k-rw", "k-aw", "k-cancel", "o-q", "o-done", "k-new"}, 6);
	assert_true(r->seen.created[seen_at(r, "k-new")] == T0 - 5);
	assert_string_equal(r->seen.playbook[seen_at(r, "o-q")], "pb");
	seen_are(&p.r[3], (const char *const[]){"o-done"}, 1);
	seen_are(&p.r[4], NULL, 0);
	seen_are(&p.r[5], NULL, 0); /* a paused job is never the last ended */
	assert_true(exists(s, "k-new"));

	/* nothing created after T0; another playbook; a later transaction
	 * sees the same active list */
	b = store_batch_new();
	assert_int_equal(store_batch_call(b, call_fn, &late), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	assert_int_equal(late.calls, 1);
	seen_are(&late.r[0], NULL, 0);
	seen_set_is(&late.r[1], (const char *const[]){"x-q"}, 1);
	seen_are(&late.r[2], (const char *const[]){"k-q", "k-run", "k-rw", "k-aw", "k-new"}, 5);
	store_close(s);
}

/* What a call queues on more is applied right after it, in the same
 * transaction: the batch's next op (an event of the job it inserted) and
 * the next call already see it, and it is committed with the batch. */
static void test_call_writes(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct job_row made = keyed("made", "pb", "K2", "queued", T0, 0);
	struct job_row made2 = keyed("made-2", "pb", "K2", "queued", T0 + 1, 0);
	struct job_row made3 = keyed("made-3", "pb", "K2", "queued", T0 + 2, 0);
	struct call_plan p1 = {.n = 1, .r = {{.q = STR_ACTIVE, .name = "K2"}}, .only_if_none = 1,
	                       .insert = &made};
	struct call_plan p2 = {.n = 1, .r = {{.q = STR_ACTIVE, .name = "K2"}}, .only_if_none = 1,
	                       .insert = &made2};
	struct call_plan p3 = {.n = 1, .r = {{.q = STR_ACTIVE, .name = "K2"}}, .only_if_none = 1,
	                       .insert = &made3};
	struct store_batch *b = store_batch_new();
	const cJSON *ev, *lg;
	cJSON *rec;

	assert_int_equal(store_batch_call(b, call_fn, &p1), 0);
	/* the batch's own op after the call: the job must exist by then
	 * (events reference jobs) */
	assert_int_equal(store_batch_event(b, "made", 0, "log", "{\"msg\":\"after\"}", 0, T0 + 1), 0);
	assert_int_equal(store_batch_call(b, call_fn, &p2), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);

	assert_int_equal(p1.calls, 1);
	seen_are(&p1.r[0], NULL, 0);
	assert_int_equal(p1.queued, 1);
	assert_int_equal(p1.more_rc, 0);
	assert_int_equal(p2.calls, 1);
	seen_are(&p2.r[0], (const char *const[]){"made"}, 1);
	assert_string_equal(p2.r[0].seen.state[0], "queued");
	assert_int_equal(p2.queued, 0);

	rec = record(s, "made");
	assert_string_equal(str(rec, "id"), "made");
	assert_string_equal(str(rec, "key"), "K2");
	assert_string_equal(str(rec, "playbook"), "pb");
	assert_string_equal(str(rec, "state"), "queued");
	ev = arr(rec, "events");
	assert_int_equal(cJSON_GetArraySize(ev), 1);
	assert_string_equal(str(cJSON_GetArrayItem(ev, 0), "type"), "admission");
	assert_string_equal(str(cJSON_GetArrayItem(ev, 0), "decision"), "queued");
	lg = arr(rec, "log");
	assert_int_equal(cJSON_GetArraySize(lg), 1);
	assert_string_equal(str(cJSON_GetArrayItem(lg, 0), "msg"), "after");
	cJSON_Delete(rec);
	assert_false(exists(s, "made-2"));

	/* a later transaction's call sees it committed */
	b = store_batch_new();
	assert_int_equal(store_batch_call(b, call_fn, &p3), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	seen_are(&p3.r[0], (const char *const[]){"made"}, 1);
	assert_int_equal(p3.queued, 0);
	assert_false(exists(s, "made-3"));
	store_close(s);

	/* and it is durable */
	s = open_ok(f->db);
	assert_true(exists(s, "made"));
	store_close(s);
}

struct done_log {
	atomic_int n;
	enum rd_status r[4];
};

struct done_slot {
	struct done_log *log;
	int i;
};

static void done_record(enum rd_status r, void *arg)
{
	struct done_slot *d = arg;

	d->log->r[d->i] = r;
	atomic_fetch_add(&d->log->n, 1);
}

/* fn's -1 fails its batch as a whole: the ops before the call and what it
 * queued on more are rolled back, store_commit says RD_ERR, a batch nobody
 * waits for is logged with "the decision failed" and counted. The journal
 * stays healthy. In a group, the batches before and after it commit; the
 * call saw the earlier batch's job (same transaction), and a later call
 * does not see what the failed batch wrote. */
static void test_call_fails(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct job_row early = keyed("early", "pb", "KF", "queued", T0, 0);
	struct job_row from_more = keyed("from-more", "pb", "KF", "queued", T0 + 1, 0);
	struct job_row gb = keyed("g-before", "pb", "KG", "queued", T0, 0);
	struct job_row bad_early = keyed("bad-early", "pb", "KG", "queued", T0 + 1, 0);
	struct job_row bad_more = keyed("bad-more", "pb", "KG", "queued", T0 + 2, 0);
	struct job_row g_after = keyed("g-after", "pb", "KG", "queued", T0 + 3, 0);
	struct job_row j;
	struct call_plan p = {.n = 1, .r = {{.q = STR_ACTIVE, .name = "KF"}}, .insert = &from_more,
	                      .ret = -1};
	struct call_plan pb = {.n = 1, .r = {{.q = STR_ACTIVE, .name = "KG"}}, .insert = &bad_more,
	                       .ret = -1};
	struct call_plan pc = {.n = 1, .r = {{.q = STR_ACTIVE, .name = "KG"}}, .insert = &g_after};
	struct done_log dl = {0};
	struct done_slot slots[3] = {{&dl, 0}, {&dl, 1}, {&dl, 2}};
	struct outside_lock lock;
	struct store_batch *b, *pilot;
	unsigned long t0, b0, t1, b1;
	double errs0;
	char logpath[320], buf[4096];
	int fd;
	ssize_t n;

	/* alone */
	b = store_batch_new();
	assert_int_equal(store_batch_insert_job(b, &early), 0);
	assert_int_equal(store_batch_call(b, call_fn, &p), 0);
	assert_int_equal(store_commit(s, b, 1), RD_ERR);
	assert_int_equal(p.calls, 1);
	seen_are(&p.r[0], (const char *const[]){"early"}, 1);
	assert_int_equal(p.queued, 1);
	assert_int_equal(p.more_rc, 0);
	assert_false(exists(s, "early"));
	assert_false(exists(s, "from-more"));
	assert_int_equal(store_healthy(s), 1);

	/* nobody waits: logged and counted */
	errs0 = metrics_get(M_JOURNAL_ERRORS, NULL, NULL);
	snprintf(logpath, sizeof(logpath), "%s/log", f->dir);
	fd = open(logpath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	log_set_fd(fd);
	memset(&p, 0, sizeof(p));
	p.ret = -1;
	b = store_batch_new();
	assert_int_equal(store_batch_insert_job(b, &early), 0);
	assert_int_equal(store_batch_call(b, call_fn, &p), 0);
	assert_int_equal(store_commit(s, b, 0), RD_OK);
	b = store_batch_new(); /* behind it: when this one is back, it was reported */
	j = keyed("marker", "pb", "KM", "queued", T0, 0);
	assert_int_equal(store_batch_insert_job(b, &j), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	log_set_fd(log_fd_null);
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	assert_int_equal(p.calls, 1);
	assert_true(metrics_get(M_JOURNAL_ERRORS, NULL, NULL) == errs0 + 1);
	assert_true(n > 0);
	buf[n] = '\0';
	if (!strstr(buf, "journal batch failed") || !strstr(buf, "the decision failed"))
		fail_msg("log: %s", buf);
	assert_false(exists(s, "early"));
	assert_true(exists(s, "marker"));

	/* the same batch with fn answering 0 commits both */
	memset(&p, 0, sizeof(p));
	p.insert = &from_more;
	b = store_batch_new();
	assert_int_equal(store_batch_insert_job(b, &early), 0);
	assert_int_equal(store_batch_call(b, call_fn, &p), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	assert_true(exists(s, "early"));
	assert_true(exists(s, "from-more"));

	/* in a group: three batches queued while an outside connection holds
	 * the write lock commit in one transaction after the pilot */
	lock_writes(f, &lock);
	store_stats(s, &t0, &b0);
	pilot = store_batch_new();
	j = job("pilot", "pb", "queued", T0);
	assert_int_equal(store_batch_insert_job(pilot, &j), 0);
	assert_int_equal(store_commit(s, pilot, 0), RD_OK);
	sleep_ms(100);
	b = store_batch_new();
	assert_int_equal(store_batch_insert_job(b, &gb), 0);
	assert_int_equal(store_commit_cb(s, b, done_record, &slots[0]), RD_OK);
	b = store_batch_new();
	assert_int_equal(store_batch_insert_job(b, &bad_early), 0);
	assert_int_equal(store_batch_call(b, call_fn, &pb), 0);
	assert_int_equal(store_commit_cb(s, b, done_record, &slots[1]), RD_OK);
	b = store_batch_new();
	assert_int_equal(store_batch_call(b, call_fn, &pc), 0);
	assert_int_equal(store_commit_cb(s, b, done_record, &slots[2]), RD_OK);
	sleep_ms(100);
	unlock_writes(&lock, "COMMIT");
	for (int i = 0; i < 500 && atomic_load(&dl.n) < 3; i++)
		sleep_ms(10);
	assert_int_equal(atomic_load(&dl.n), 3);
	assert_int_equal(dl.r[0], RD_OK);
	assert_int_equal(dl.r[1], RD_ERR);
	assert_int_equal(dl.r[2], RD_OK);
	store_stats(s, &t1, &b1);
	/* pilot alone, then the three in one transaction (two committed) */
	assert_int_equal(t1 - t0, 2);
	assert_int_equal(b1 - b0, 3);
	assert_int_equal(store_healthy(s), 1);

	assert_int_equal(pb.calls, 1);
	seen_are(&pb.r[0], (const char *const[]){"g-before", "bad-early"}, 2);
	assert_int_equal(pc.calls, 1);
	seen_are(&pc.r[0], (const char *const[]){"g-before"}, 1);
	assert_true(exists(s, "pilot"));
	assert_true(exists(s, "g-before"));
	assert_true(exists(s, "g-after"));
	assert_false(exists(s, "bad-early"));
	assert_false(exists(s, "bad-more"));
	store_close(s);
}

/* struct pauses_seen sorted by scope (store_txn_pauses' order is open). */
static void pauses_sort(struct pauses_seen *ps)
{
	for (int i = 1; i < ps->n; i++) {
		for (int k = i; k > 0 && strcmp(ps->scope[k - 1], ps->scope[k]) > 0; k--) {
			struct pauses_seen t;

			memcpy(t.scope[0], ps->scope[k], 32);
			memcpy(t.principal[0], ps->principal[k], 32);
			memcpy(t.reason[0], ps->reason[k], 32);
			t.since[0] = ps->since[k];
			t.until[0] = ps->until[k];
			memcpy(ps->scope[k], ps->scope[k - 1], 32);
			memcpy(ps->principal[k], ps->principal[k - 1], 32);
			memcpy(ps->reason[k], ps->reason[k - 1], 32);
			ps->since[k] = ps->since[k - 1];
			ps->until[k] = ps->until[k - 1];
			memcpy(ps->scope[k - 1], t.scope[0], 32);
			memcpy(ps->principal[k - 1], t.principal[0], 32);
			memcpy(ps->reason[k - 1], t.reason[0], 32);
			ps->since[k - 1] = t.since[0];
			ps->until[k - 1] = t.until[0];
		}
	}
}

/* store_txn_pauses gives the pauses as the transaction has them: those
 * committed before, those set or cleared by earlier ops of the batch. */
static void test_call_pauses(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct call_plan p = {.read_pauses = 1}, none = {.read_pauses = 1}, later = {.read_pauses = 1};
	struct pause_row star = {.scope = "*", .principal = "root", .reason = NULL, .since = T0 + 5};
	struct pause_row longer = {.scope = "pb1", .principal = "root", .reason = "longer",
	                           .since = T0 + 10, .until = T0 + 7200};
	struct store_batch *b;
	struct pauses_seen ps;

	/* none yet */
	b = store_batch_new();
	assert_int_equal(store_batch_call(b, call_fn, &none), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	assert_int_equal(none.calls, 1);
	assert_int_equal(none.pauses_rc, 0);
	assert_int_equal(none.pauses.n, 0);

	pause_set(s, "pb1", "olga", "DB migration", T0, T0 + 3600);
	pause_set(s, "old", "root", "gone soon", T0, 0);
	pause_set(s, "pb3", "ivan", "kept", T0 + 1, T0 + 60);

	b = store_batch_new();
	assert_int_equal(store_batch_pause(b, &star), 0);
	assert_int_equal(store_batch_unpause(b, "old"), 0);
	assert_int_equal(store_batch_pause(b, &longer), 0); /* replaces pb1's */
	assert_int_equal(store_batch_call(b, call_fn, &p), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	assert_int_equal(p.calls, 1);
	assert_int_equal(p.pauses_rc, 0);
	assert_false(p.pauses_overflow);
	pauses_sort(&p.pauses);
	assert_int_equal(p.pauses.n, 3);
	assert_string_equal(p.pauses.scope[0], "*");
	assert_string_equal(p.pauses.principal[0], "root");
	assert_string_equal(p.pauses.reason[0], "(null)");
	assert_true(p.pauses.since[0] == T0 + 5);
	assert_true(p.pauses.until[0] == 0);
	assert_string_equal(p.pauses.scope[1], "pb1");
	assert_string_equal(p.pauses.principal[1], "root");
	assert_string_equal(p.pauses.reason[1], "longer");
	assert_true(p.pauses.since[1] == T0 + 10);
	assert_true(p.pauses.until[1] == T0 + 7200);
	assert_string_equal(p.pauses.scope[2], "pb3");
	assert_string_equal(p.pauses.principal[2], "ivan");
	assert_string_equal(p.pauses.reason[2], "kept");
	assert_true(p.pauses.since[2] == T0 + 1);
	assert_true(p.pauses.until[2] == T0 + 60);

	/* committed as read; a later call reads the same */
	ps = scan_pauses(s);
	assert_int_equal(ps.n, 3);
	b = store_batch_new();
	assert_int_equal(store_batch_call(b, call_fn, &later), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	pauses_sort(&later.pauses);
	assert_int_equal(later.pauses.n, 3);
	assert_string_equal(later.pauses.scope[0], "*");
	assert_string_equal(later.pauses.scope[1], "pb1");
	assert_string_equal(later.pauses.reason[1], "longer");
	assert_string_equal(later.pauses.scope[2], "pb3");
	store_close(s);
}

/* ---- ending a replica's leases (store_batch_expire) ---- */

/* After store_batch_expire(owner) commits, owner holds nothing: its jobs
 * (queued, running, awaiting_approval; a retry once due) and its
 * escalation rows are free, claimed at once by another owner or by owner
 * itself with prev_owner NULL and the token raised, so owner's old writes
 * are fenced and its renewals renew nothing. The rows of other owners keep
 * their live leases. */
static void test_expire(void **state)
{
	struct fix *f = *state;
	struct store *s = open_ok(f->db);
	struct job_row j;
	struct claims c = {0}, e = {0}, none = {0}, due = {0}, self = {0}, self_e = {0};
	struct store_batch *b;
	struct lease_seen r;
	struct renewed rn;

	j = held("a-q", "queued", "A", T0 + 1000, 1);
	insert(s, &j);
	j = held("a-run", "running", "A", T0 + 1000, 3);
	j.started_at = T0 - 90;
	insert(s, &j);
	j = held("b-run", "running", "B", T0 + 1000, 2);
	insert(s, &j);
	j = held("a-rw", "retry_wait", "A", T0 + 1000, 2);
	j.next_run_at = T0 + 30; /* not due yet */
	insert(s, &j);
	j = held("a-aw", "awaiting_approval", "A", T0 + 1000, 1);
	insert(s, &j);
	j = held("b-q", "queued", "B", T0 + 1000, 1);
	insert(s, &j);
	j = held("a-done", "succeeded", NULL, 0, 4); /* ended and released */
	j.ended_at = T0 - 50;
	insert(s, &j);
	esc_insert(s, "ea1", "a-done", "pending", 0, "A", T0 + 1000);
	esc_insert(s, "eb1", "a-done", "pending", 0, "B", T0 + 1000);
	esc_insert(s, "ea2", "a-done", "retrying", T0 - 5, "A", T0 + 1000);

	/* all live */
	assert_int_equal(claim(s, "C", T0, 100, &none), RD_OK);
	assert_int_equal(claim_outbox(s, "C", T0, 100, &none), RD_OK);
	assert_int_equal(none.n, 0);

	b = store_batch_new();
	assert_int_equal(store_batch_expire(b, "A"), 0);
	assert_int_equal(store_batch_empty(b), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	/* A's are free now, their state and token as they were */
	r = lease_of(s, "a-run");
	assert_string_equal(r.owner, "");
	assert_true(r.until == 0);
	assert_int_equal(r.token, 3);
	assert_string_equal(r.state, "running");
	r = lease_of(s, "b-run");
	assert_string_equal(r.owner, "B");
	assert_true(r.until == T0 + 1000);
	assert_int_equal(r.token, 2);
	/* A's old life renews nothing */
	assert_int_equal(renew(s, "A", T0 + 2000, &rn), RD_OK);
	assert_int_equal(rn.n, 0);
	assert_string_equal(lease_of(s, "a-q").owner, "");

	assert_int_equal(claim(s, "C", T0, 100, &c), RD_OK);
	claimed_are(&c, (const char *const[]){"a-q", "a-run", "a-aw"}, 3);
	for (int i = 0; i < c.n; i++) {
		assert_false(c.v[i].takeover);
		assert_string_equal(c.v[i].prev, "");
		assert_string_equal(c.v[i].owner, "C");
		assert_true(c.v[i].until == T0 + LEASE);
	}
	assert_string_equal(claimed(&c, "a-run")->state, "running");
	assert_int_equal(claimed(&c, "a-run")->token, 4);
	assert_int_equal(claimed(&c, "a-q")->token, 2);
	assert_string_equal(claimed(&c, "a-aw")->state, "awaiting_approval");
	assert_int_equal(claimed(&c, "a-aw")->token, 2);
	assert_int_equal(claim_outbox(s, "C", T0, 100, &e), RD_OK);
	claimed_are(&e, (const char *const[]){"ea1", "ea2"}, 2);
	for (int i = 0; i < e.n; i++) {
		assert_false(e.v[i].takeover);
		assert_string_equal(e.v[i].owner, "C");
		assert_true(e.v[i].until == T0 + LEASE);
	}
	/* A's old write is fenced */
	j = held("a-run", "failed", NULL, 0, 3);
	j.ended_at = T0 + 1;
	assert_int_equal(commit_update(s, &j), RD_FENCED);
	assert_string_equal(lease_of(s, "a-run").state, "running");

	/* B's rows untouched: live, not claimable; the free retry waits for
	 * its time */
	r = lease_of(s, "b-q");
	assert_string_equal(r.owner, "B");
	assert_true(r.until == T0 + 1000);
	assert_int_equal(r.token, 1);
	assert_int_equal(claim(s, "D", T0 + 1, 100, &none), RD_OK);
	assert_int_equal(claim_outbox(s, "D", T0 + 1, 100, &none), RD_OK);
	assert_int_equal(none.n, 0);
	r = lease_of(s, "a-rw");
	assert_string_equal(r.owner, "");
	assert_int_equal(r.token, 2);
	assert_int_equal(claim(s, "D", T0 + 30, 100, &due), RD_OK); /* C's still live */
	claimed_are(&due, (const char *const[]){"a-rw"}, 1);
	assert_false(due.v[0].takeover);
	assert_int_equal(due.v[0].token, 3);
	assert_string_equal(due.v[0].state, "retry_wait");

	/* an owner with nothing: no error, nothing changes */
	b = store_batch_new();
	assert_int_equal(store_batch_expire(b, "nobody"), 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	memset(&none, 0, sizeof(none));
	assert_int_equal(claim(s, "D", T0 + 2, 100, &none), RD_OK);
	assert_int_equal(claim_outbox(s, "D", T0 + 2, 100, &none), RD_OK);
	assert_int_equal(none.n, 0);

	/* B starting again under its name: expire first, then claim, in one
	 * batch; it gets its own back */
	b = store_batch_new();
	assert_int_equal(store_batch_expire(b, "B"), 0);
	assert_int_equal(store_batch_claim_jobs(b, "B", T0 + 3, T0 + 3 + LEASE, 100, claim_job_cb, &self), 0);
	assert_int_equal(store_batch_claim_outbox(b, "B", T0 + 3, T0 + 3 + LEASE, 100, claim_esc_cb, &self_e),
	                 0);
	assert_int_equal(store_commit(s, b, 1), RD_OK);
	claimed_are(&self, (const char *const[]){"b-run", "b-q"}, 2);
	for (int i = 0; i < self.n; i++) {
		assert_false(self.v[i].takeover);
		assert_string_equal(self.v[i].owner, "B");
		assert_true(self.v[i].until == T0 + 3 + LEASE);
	}
	assert_int_equal(claimed(&self, "b-run")->token, 3);
	assert_string_equal(claimed(&self, "b-run")->state, "running");
	assert_int_equal(claimed(&self, "b-q")->token, 2);
	claimed_are(&self_e, (const char *const[]){"eb1"}, 1);
	assert_false(self_e.v[0].takeover);
	/* C's and D's leases, taken a moment ago, are live and theirs */
	r = lease_of(s, "a-run");
	assert_string_equal(r.owner, "C");
	assert_true(r.until == T0 + LEASE);
	assert_string_equal(lease_of(s, "a-rw").owner, "D");

	b = store_batch_new();
	assert_int_equal(store_batch_expire(b, NULL), -1);
	assert_int_equal(store_batch_expire(b, ""), -1);
	assert_int_equal(store_batch_empty(b), 1);
	store_batch_free(b);
	assert_int_equal(store_batch_expire(NULL, "A"), -1);
	store_close(s);
}

/* ---- the writer's plans (PostgreSQL) ----
 *
 * The writer plans each statement once per connection (store_pg.c), so a
 * plan made while the journal was empty must still touch only the rows
 * the statement is about once the journal is large. Each statement is
 * prepared and run on an empty journal as the writer would, then run
 * again on PLAN_ENDED ended jobs and PLAN_HELD unfinished jobs this
 * replica holds: one that finds its row by id must touch a handful of
 * rows, the others no more than the unfinished ones (never the ended
 * jobs, which are most of a journal). Found: the release went through
 * the owner's index (all the jobs a replica holds, per job), and the
 * claim through the whole table in seq order. */
#define PLAN_ENDED 20000
#define PLAN_HELD 300

/* Rows a plan node and those below it read: returned, and removed by a
 * filter or a recheck, times the node's loops. *seq: a whole-table scan
 * of a journal table. */
static double plan_rows_read(const cJSON *node, int *seq, char *why, size_t whylen)
{
	const cJSON *plans = cJSON_GetObjectItemCaseSensitive(node, "Plans"), *child;
	const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(node, "Node Type"));
	const char *rel = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(node, "Relation Name"));
	double loops = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(node, "Actual Loops"));
	double n = 0;

	if (type && strstr(type, "Scan") && !strstr(type, "Bitmap Index")) {
		const char *keys[] = {"Actual Rows", "Rows Removed by Filter", "Rows Removed by Index Recheck"};
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
			const cJSON *v = cJSON_GetObjectItemCaseSensitive(node, keys[i]);
			if (cJSON_IsNumber(v))
				n += v->valuedouble * (loops > 0 ? loops : 1);
		}
	}
	if (type && strcmp(type, "Seq Scan") == 0 && rel && strcmp(rel, "pauses") != 0) {
		*seq = 1;
		snprintf(why, whylen, "a whole-table scan of %s", rel);
	}
	cJSON_ArrayForEach(child, plans)
		n += plan_rows_read(child, seq, why, whylen);
	return n;
}

/* Run statement id (prepared as name) in a transaction rolled back, with
 * the values v; the rows its plan read, or -1 when it does not apply. */
static double plan_run(PGconn *c, int id, const char *name, int n, const char *const *v, int *seq, char *why,
                       size_t whylen)
{
	char sql[512];
	size_t len;
	PGresult *r;
	cJSON *doc;
	double rows;

	len = (size_t)snprintf(sql, sizeof(sql), "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE %s", name);
	for (int k = 0; k < n; k++)
		len += (size_t)snprintf(sql + len, sizeof(sql) - len, "%s'%s'", k ? ", " : "(", v[k]);
	if (n)
		snprintf(sql + len, sizeof(sql) - len, ")");
	pg_exec(c, "BEGIN");
	r = PQexec(c, sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		char e[512];
		snprintf(e, sizeof(e), "%s", PQerrorMessage(c));
		PQclear(r);
		pg_exec(c, "ROLLBACK");
		fail_msg("writer statement %d: %s: %s", id, sql, e);
	}
	doc = cJSON_Parse(PQgetvalue(r, 0, 0));
	PQclear(r);
	pg_exec(c, "ROLLBACK");
	assert_non_null(doc);
	rows = plan_rows_read(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(doc, 0), "Plan"), seq, why,
	                      whylen);
	cJSON_Delete(doc);
	return rows;
}

static void test_pg_writer_plans(void **state)
{
	struct fix *f = *state;
	const char *keys[] = {"options", "dbname", NULL};
	const char *vals[] = {store_pg_writer_options, pg_url, NULL};
	int prepared[W__COUNT] = {0};
	struct store *s;
	PGconn *c;
	char sql[256];

	PG_ONLY();
	s = open_ok(f->db); /* the schema */
	store_close(s);
	c = PQconnectdbParams(keys, vals, 1);
	if (PQstatus(c) != CONNECTION_OK) {
		char e[512];
		snprintf(e, sizeof(e), "%s", PQerrorMessage(c));
		PQfinish(c);
		fail_msg("connect with the writer's settings: %s", e);
	}
	for (size_t i = 0; i < sizeof(pg_conns) / sizeof(pg_conns[0]); i++)
		if (!pg_conns[i]) {
			pg_conns[i] = c;
			break;
		}
	/* Statements that look rows up (not the inserts, not transaction
	 * control), planned on the empty journal: text values are this
	 * replica's name, times 1 (no lease has expired), counts 10. */
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1) {
			snprintf(sql, sizeof(sql),
			         "INSERT INTO jobs (id, playbook, key, state, created_at, ended_at) "
			         "SELECT 'e' || g, 'pb', 'pb/e' || g, 'succeeded', g, g + 1 FROM generate_series(1, %d) g",
			         PLAN_ENDED);
			pg_exec(c, sql);
			snprintf(sql, sizeof(sql),
			         "INSERT INTO jobs (id, playbook, key, state, created_at, owner, lease_until, lease_token) "
			         "SELECT 'h' || g, 'pb', 'pb/h' || g, 'running', g, 'r0', 1e12, 1 "
			         "FROM generate_series(1, %d) g",
			         PLAN_HELD);
			pg_exec(c, sql);
			pg_exec(c, "INSERT INTO escalations (id, job_id, sink, kind, state) "
			           "SELECT 'x' || g, 'e' || g, 'slack', 'trigger', 'delivered' "
			           "FROM generate_series(1, 5000) g");
		}
		for (int id = 0; id < W__COUNT; id++) {
			const char *types, *q = store_pg_writer_sql(id, &types);
			const char *v[32];
			char name[16], why[128] = "";
			int n = (int)strlen(types), seq = 0;
			double rows, limit;

			if (!q || strncmp(q, "INSERT", 6) == 0 || (!n && strncmp(q, "SELECT", 6) != 0) ||
			    id == W_ADMIT_LOCK)
				continue;
			snprintf(name, sizeof(name), "plan%d", id);
			if (!prepared[id]) {
				Oid oids[32];
				PGresult *r;
				for (int k = 0; k < n; k++)
					oids[k] = types[k] == 'R' ? 701 : types[k] == 'I' ? 20 : 25;
				r = PQprepare(c, name, q, n, oids);
				if (PQresultStatus(r) != PGRES_COMMAND_OK)
					fail_msg("prepare %s: %s", q, PQerrorMessage(c));
				PQclear(r);
				prepared[id] = 1;
			}
			for (int k = 0; k < n; k++)
				v[k] = types[k] == 'T' ? "r0" : types[k] == 'R' ? "1" : "10";
			rows = plan_run(c, id, name, n, v, &seq, why, sizeof(why));
			if (pass == 0)
				continue;
			limit = strstr(q, "WHERE id = $1") ? 5 : PLAN_HELD * 4;
			if (seq || rows > limit)
				fail_msg("writer statement %d reads %.0f rows of a journal of %d (at most %.0f)%s%s: %s", id,
				         rows, PLAN_ENDED + PLAN_HELD, limit, seq ? ", " : "", why, q);
		}
	}
	pg_close(c);
}

/* PostgreSQL: the calls of two journal handles (two replicas) decide one
 * transaction at a time. Each reads the active jobs of K, waits 300 ms,
 * and inserts a job of K if there was none: the second, held at the
 * admission lock until the first committed, sees its job and inserts
 * nothing. */
#define ADMIT_SLEEP_MS 300

struct admitter {
	struct store *s;
	const char *lock;             /* store_batch_lock's name */
	struct job_row j;
	struct call_plan p;
	pthread_barrier_t *go;
	enum rd_status r;
	atomic_int done;
};

static void *admit_thread(void *arg)
{
	struct admitter *a = arg;
	struct store_batch *b = store_batch_new();

	a->r = RD_ERR;
	pthread_barrier_wait(a->go);
	if (b && store_batch_lock(b, a->lock) == 0 && store_batch_call(b, call_fn, &a->p) == 0)
		a->r = store_commit(a->s, b, 1);
	else
		store_batch_free(b);
	atomic_store(&a->done, 1);
	return NULL;
}

/* Two admitters (two journal handles: two replicas). Each reads the
 * unfinished jobs of its key, waits ADMIT_SLEEP_MS and inserts its job if
 * there was none, under the admission lock of its name. */
static struct admitter *admitters_new(struct fix *f, pthread_barrier_t *go, const char *const lock[2],
                                      const char *const key[2], const char *const id[2])
{
	/* heap, not stack: on a timeout the threads outlive the test's frame */
	struct admitter *a = calloc(2, sizeof(*a));

	assert_non_null(a);
	assert_int_equal(pthread_barrier_init(go, NULL, 3), 0);
	for (int i = 0; i < 2; i++) {
		a[i].s = open_ok(f->db);
		a[i].lock = lock[i];
		a[i].j = keyed(id[i], "pb", key[i], "queued", T0 + i, 0);
		a[i].p = (struct call_plan){.n = 1, .r = {{.q = STR_ACTIVE, .name = key[i]}}, .only_if_none = 1,
		                            .sleep_ms_after_reads = ADMIT_SLEEP_MS};
		a[i].p.insert = &a[i].j;
		a[i].go = go;
	}
	return a;
}

/* Run both admitters at once; the seconds until both committed. */
static double admit_both(struct admitter *a, pthread_barrier_t *go)
{
	pthread_t t[2];
	double t_start, elapsed;

	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, admit_thread, &a[i]), 0);
	t_start = now_mono();
	pthread_barrier_wait(go);
	/* bounded: 10 s for what takes 0.6 s */
	for (int i = 0; i < 1000 && !(atomic_load(&a[0].done) && atomic_load(&a[1].done)); i++)
		sleep_ms(10);
	if (!(atomic_load(&a[0].done) && atomic_load(&a[1].done)))
		fail_msg("the two admissions did not commit within 10 s");
	elapsed = now_mono() - t_start;
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(go);
	return elapsed;
}

static void test_pg_admission_serialized(void **state)
{
	struct fix *f = *state;
	struct admitter *a;
	pthread_barrier_t go;
	PGconn *c;
	double elapsed;
	int first, second;

	PG_ONLY();
	a = admitters_new(f, &go, (const char *const[]){"pb/K", "pb/K"}, (const char *const[]){"K", "K"},
	                  (const char *const[]){"adm-A", "adm-B"});
	elapsed = admit_both(a, &go);

	assert_int_equal(a[0].r, RD_OK);
	assert_int_equal(a[1].r, RD_OK);
	assert_int_equal(a[0].p.calls, 1);
	assert_int_equal(a[1].p.calls, 1);
	assert_int_equal(a[0].p.r[0].rc, 0);
	assert_int_equal(a[1].p.r[0].rc, 0);
	first = a[0].p.answered <= a[1].p.answered ? 0 : 1;
	second = 1 - first;
	print_message("admission: first %s, second read %.0f ms after the first left; %.0f ms in all\n",
	              a[first].j.id, (a[second].p.answered - a[first].p.left) * 1000, elapsed * 1000);
	/* the first saw nothing and inserted; the second saw its job */
	seen_are(&a[first].p.r[0], NULL, 0);
	assert_int_equal(a[first].p.queued, 1);
	assert_int_equal(a[first].p.more_rc, 0);
	seen_are(&a[second].p.r[0], (const char *const[]){a[first].j.id}, 1);
	assert_int_equal(a[second].p.queued, 0);
	/* one after the other: the second decided after the first had left fn */
	assert_true(a[second].p.answered >= a[first].p.left);
	assert_true(elapsed >= 2 * ADMIT_SLEEP_MS / 1000.0);

	c = pg_connect();
	assert_int_equal(pg_int(c, "SELECT count(*) FROM jobs WHERE key = 'K'"), 1);
	{
		char q[128];
		snprintf(q, sizeof(q), "SELECT count(*) FROM jobs WHERE id = '%s' AND key = 'K'",
		         a[first].j.id);
		assert_int_equal(pg_int(c, q), 1);
	}
	pg_close(c);
	store_close(a[0].s);
	store_close(a[1].s);
	free(a);
}

/* ... while admissions about different names (two keys) decide at once:
 * each read before the other left its call, and each inserted its job. */
static void test_pg_admission_parallel(void **state)
{
	struct fix *f = *state;
	struct admitter *a;
	pthread_barrier_t go;
	PGconn *c;

	PG_ONLY();
	a = admitters_new(f, &go, (const char *const[]){"pb/K1", "pb/K2"}, (const char *const[]){"K1", "K2"},
	                  (const char *const[]){"par-A", "par-B"});
	admit_both(a, &go);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(a[i].r, RD_OK);
		assert_int_equal(a[i].p.queued, 1);
		/* the other had read too when this one left its call */
		assert_true(a[1 - i].p.answered < a[i].p.left);
	}
	c = pg_connect();
	assert_int_equal(pg_int(c, "SELECT count(*) FROM jobs WHERE id IN ('par-A', 'par-B')"), 2);
	pg_close(c);
	store_close(a[0].s);
	store_close(a[1].s);
	free(a);
}

/* ---- schema v2 journals ---- */

/* What a version 2 journal adds to version 1 (SQLite). */
static const char v2_sqlite_sql[] =
	"ALTER TABLE jobs ADD COLUMN triggered_by TEXT;"
	"ALTER TABLE jobs ADD COLUMN cancelled_by TEXT;"
	"ALTER TABLE jobs ADD COLUMN approval TEXT;"
	"ALTER TABLE jobs ADD COLUMN approved_by TEXT;"
	"ALTER TABLE jobs ADD COLUMN plan_attempts INTEGER NOT NULL DEFAULT 0;"
	"CREATE TABLE audit ("
	" seq INTEGER PRIMARY KEY AUTOINCREMENT,"
	" ts REAL NOT NULL, principal TEXT NOT NULL, role TEXT, address TEXT,"
	" action TEXT NOT NULL, job_id TEXT, playbook TEXT, reason TEXT,"
	" detail TEXT CHECK (detail IS NULL OR json_type(detail) = 'object'));"
	"CREATE TABLE pauses ("
	" scope TEXT PRIMARY KEY, principal TEXT, reason TEXT, since REAL, until REAL);"
	"PRAGMA user_version = 2;";

/* A version 2 journal on PostgreSQL, as the previous release made it. */
static const char v2_pg_sql[] =
	"CREATE TABLE jobs ("
	" seq BIGSERIAL PRIMARY KEY,"
	" id TEXT UNIQUE NOT NULL,"
	" playbook TEXT, key TEXT, trigger TEXT, reason TEXT,"
	" alert_json TEXT CHECK (alert_json IS NULL OR alert_json::json IS NOT NULL),"
	" dry_run INTEGER NOT NULL DEFAULT 0,"
	" state TEXT, outcome TEXT, error TEXT,"
	" attempts INTEGER NOT NULL DEFAULT 0,"
	" max_attempts INTEGER NOT NULL DEFAULT 0,"
	" notifications INTEGER NOT NULL DEFAULT 0,"
	" created_at DOUBLE PRECISION, updated_at DOUBLE PRECISION, started_at DOUBLE PRECISION,"
	" ended_at DOUBLE PRECISION, next_run_at DOUBLE PRECISION, triggered_by TEXT,"
	" cancelled_by TEXT, approval TEXT, approved_by TEXT,"
	" plan_attempts INTEGER NOT NULL DEFAULT 0);"
	"CREATE INDEX jobs_key ON jobs(key);"
	"CREATE INDEX jobs_state ON jobs(state);"
	"CREATE INDEX jobs_playbook ON jobs(playbook);"
	"CREATE TABLE attempts ("
	" job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	" n INTEGER NOT NULL,"
	" started_at DOUBLE PRECISION, ended_at DOUBLE PRECISION, result TEXT, error TEXT,"
	" verify_ok INTEGER, verify_reason TEXT,"
	" PRIMARY KEY (job_id, n));"
	"CREATE TABLE events ("
	" seq BIGSERIAL PRIMARY KEY,"
	" job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	" ts DOUBLE PRECISION, attempt INTEGER, type TEXT NOT NULL,"
	" detail TEXT NOT NULL CHECK (json_typeof(detail::json) = 'object'),"
	" planned INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE escalations ("
	" seq BIGSERIAL PRIMARY KEY,"
	" id TEXT UNIQUE NOT NULL,"
	" job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	" incident_key TEXT, sink TEXT NOT NULL, kind TEXT NOT NULL, reason TEXT,"
	" state TEXT, attempts INTEGER NOT NULL DEFAULT 0, last_answer TEXT,"
	" created_at DOUBLE PRECISION, updated_at DOUBLE PRECISION,"
	" next_attempt_at DOUBLE PRECISION, delivered_at DOUBLE PRECISION, payload TEXT);"
	"CREATE TABLE audit ("
	" seq BIGSERIAL PRIMARY KEY,"
	" ts DOUBLE PRECISION NOT NULL, principal TEXT NOT NULL, role TEXT, address TEXT,"
	" action TEXT NOT NULL, job_id TEXT, playbook TEXT, reason TEXT,"
	" detail TEXT CHECK (detail IS NULL OR json_typeof(detail::json) = 'object'));"
	"CREATE TABLE pauses ("
	" scope TEXT PRIMARY KEY, principal TEXT, reason TEXT, since DOUBLE PRECISION,"
	" until DOUBLE PRECISION);"
	"CREATE TABLE recoveryd_schema (version INTEGER NOT NULL);"
	"INSERT INTO recoveryd_schema VALUES (2);";

/* Rows of the previous release, the same text on both. */
static const char v2_rows_sql[] =
	"INSERT INTO jobs (id, playbook, key, trigger, alert_json, state, attempts, max_attempts, "
	"created_at, updated_at, started_at, triggered_by) VALUES "
	"('old-run', 'pb', 'pb/fp', 'webhook', '{}', 'running', 1, 3, 1700000000, 1700000001, "
	"1700000001, 'am');"
	"INSERT INTO jobs (id, playbook, key, trigger, alert_json, state, attempts, max_attempts, "
	"created_at, updated_at, ended_at) VALUES "
	"('old-done', 'pb', 'pb/fp2', 'webhook', '{}', 'failed', 1, 1, 1700000000, 1700000009, 1700000009);"
	"INSERT INTO escalations (id, job_id, incident_key, sink, kind, reason, state, attempts, "
	"created_at, updated_at, payload) VALUES "
	"('old-esc', 'old-done', 'pb/fp2', 'slack', 'trigger', 'failed', 'pending', 0, "
	"1700000009, 1700000009, '{}');";

/* A version 2 journal opens at version 3: its jobs and escalation rows
 * are nobody's (token 0), and they are claimed, fenced and read as new
 * ones; a second open changes nothing. SQLite: a file made by hand;
 * PostgreSQL: a schema made by hand. */
static void test_migrate_v2(void **state)
{
	struct fix *f = *state;
	struct store *s;
	struct claims c = {0}, e = {0};
	struct job_row j;
	struct lease_seen r;
	PGconn *pc = NULL;

	if (pg_url) {
		pc = pg_connect();
		pg_exec(pc, v2_pg_sql);
		pg_exec(pc, v2_rows_sql);
	} else {
		exec_sql(f->db, v1_schema);
		exec_sql(f->db, v2_sqlite_sql);
		exec_sql(f->db, v2_rows_sql);
		assert_int_equal(user_version(f->db), 2);
	}

	s = open_ok(f->db);
	if (pg_url)
		assert_int_equal(pg_int(pc, "SELECT version FROM recoveryd_schema"), 4);
	else
		assert_int_equal(user_version(f->db), 4);
	r = lease_of(s, "old-run");
	assert_string_equal(r.state, "running");
	assert_string_equal(r.owner, "");
	assert_int_equal(r.token, 0);
	{
		cJSON *rec = record(s, "old-run");
		assert_string_equal(str(rec, "triggered_by"), "am");
		cJSON_Delete(rec);
	}

	assert_int_equal(claim(s, "A", T0 + 10, 10, &c), RD_OK);
	claimed_are(&c, (const char *const[]){"old-run"}, 1);
	assert_false(c.v[0].takeover);
	assert_int_equal(c.v[0].token, 1);
	assert_int_equal(claim_outbox(s, "A", T0 + 10, 10, &e), RD_OK);
	claimed_are(&e, (const char *const[]){"old-esc"}, 1);
	j = held("old-run", "failed", NULL, 0, 7);
	j.ended_at = T0 + 20;
	assert_int_equal(commit_update(s, &j), RD_FENCED);
	j.lease_token = 1;
	assert_int_equal(commit_update(s, &j), RD_OK);
	store_close(s);

	s = open_ok(f->db);
	if (pg_url) {
		assert_int_equal(pg_int(pc, "SELECT version FROM recoveryd_schema"), 4);
		assert_int_equal(pg_int(pc, "SELECT count(*) FROM recoveryd_schema"), 1);
		assert_int_equal(pg_int(pc, "SELECT lease_token FROM jobs WHERE id = 'old-run'"), 1);
		assert_int_equal(pg_int(pc, "SELECT count(*) FROM pg_indexes WHERE indexname = 'jobs_owner'"), 1);
	} else {
		assert_int_equal(user_version(f->db), 4);
	}
	r = lease_of(s, "old-run");
	assert_string_equal(r.state, "failed");
	assert_int_equal(r.token, 1);
	store_close(s);
	if (pc)
		pg_close(pc);
}

/* ---- PostgreSQL only ---- */

/* The schema is made in the database the URL names, its version in
 * recoveryd_schema (one row); rows committed are another connection's to
 * read; a second open changes nothing; postgresql:// is the same. */
static void test_pg_schema(void **state)
{
	struct fix *f = *state;
	struct store *s;
	struct job_row j = job("w1", "pb", "queued", T0);
	char url[320], buf[64];
	const char *v;
	PGconn *c;

	PG_ONLY();
	s = open_ok(f->db);
	insert(s, &j);
	assert_int_equal(store_healthy(s), 1);
	c = pg_connect();
	assert_int_equal(pg_int(c, "SELECT count(*) FROM unnest(ARRAY['jobs', 'attempts', 'events', "
	                           "'escalations', 'audit', 'pauses', 'recoveryd_schema']) AS t(name) "
	                           "WHERE to_regclass(name) IS NOT NULL"),
	                 7);
	assert_int_equal(pg_int(c, "SELECT count(*) FROM recoveryd_schema"), 1);
	assert_int_equal(pg_int(c, "SELECT version FROM recoveryd_schema"), 4);
	v = pg_value(c, "SELECT state FROM jobs WHERE id = 'w1'", buf, sizeof(buf));
	assert_non_null(v);
	assert_string_equal(v, "queued");
	store_close(s);

	s = open_ok(f->db);
	assert_true(exists(s, "w1"));
	assert_int_equal(pg_int(c, "SELECT count(*) FROM recoveryd_schema"), 1);
	assert_int_equal(pg_int(c, "SELECT version FROM recoveryd_schema"), 4);
	store_close(s);

	if (strncmp(pg_url, "postgres://", 11) == 0)
		snprintf(url, sizeof(url), "postgresql://%s", pg_url + 11);
	else
		snprintf(url, sizeof(url), "postgres://%s", pg_url + strlen("postgresql://"));
	s = open_ok(url);
	assert_true(exists(s, "w1"));
	store_close(s);
	pg_close(c);
}

static void pg_refused(const char *url, const char *want)
{
	struct store *s = (struct store *)1;
	char err[512] = "";

	assert_int_equal(store_open(url, &s, err, sizeof(err)), RD_ERR);
	assert_null(s);
	if (!strstr(err, want))
		fail_msg("error \"%s\" does not say \"%s\"", err, want);
}

/* A journal of a newer release is not opened, nor changed: made so by
 * hand, or by this release and then marked newer. */
static void test_pg_newer_schema_refused(void **state)
{
	struct fix *f = *state;
	struct store *s;
	PGconn *c;

	PG_ONLY();
	c = pg_connect();
	pg_exec(c, "CREATE TABLE future (x integer);"
	           "CREATE TABLE recoveryd_schema (version INTEGER NOT NULL);"
	           "INSERT INTO recoveryd_schema VALUES (5);");
	pg_refused(f->db, "schema version 5 is newer than supported 4");
	assert_int_equal(pg_int(c, "SELECT count(*) FROM recoveryd_schema"), 1);
	assert_int_equal(pg_int(c, "SELECT version FROM recoveryd_schema"), 5);
	assert_int_equal(pg_int(c, "SELECT count(*) FROM unnest(ARRAY['jobs', 'attempts', 'events', "
	                           "'escalations', 'audit', 'pauses']) AS t(name) "
	                           "WHERE to_regclass(name) IS NOT NULL"),
	                 0);

	pg_exec(c, pg_reset_sql);
	s = open_ok(f->db);
	store_close(s);
	pg_exec(c, "UPDATE recoveryd_schema SET version = 5");
	pg_refused(f->db, "schema version 5 is newer than supported 4");
	assert_int_equal(pg_int(c, "SELECT version FROM recoveryd_schema"), 5);
	pg_close(c);
}

/* The password of the pgpass line for the URL's port, or NULL. */
static const char *pgpass_password(const char *port, char *buf, size_t len)
{
	const char *path = getenv("PGPASSFILE");
	char line[512];
	FILE *fp;
	const char *pw = NULL;

	if (!path || !(fp = fopen(path, "r")))
		return NULL;
	while (!pw && fgets(line, sizeof(line), fp)) {
		char host[128], prt[16], db[128], user[128], pass[256];

		if (sscanf(line, "%127[^:]:%15[^:]:%127[^:]:%127[^:]:%255[^\n]", host, prt, db, user,
		           pass) == 5 &&
		    strcmp(prt, port) == 0) {
			snprintf(buf, len, "%s", pass);
			pw = buf;
		}
	}
	fclose(fp);
	return pw;
}

/* A port on 127.0.0.1 where nobody listens (bound, so nobody else takes
 * it, but not listening: a connection is refused at once). */
static int closed_port(int *fd)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	*fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(*fd >= 0);
	assert_int_equal(bind(*fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(*fd, (struct sockaddr *)&a, &len), 0);
	return ntohs(a.sin_port);
}

/* Errors say which journal (host, port, database) and why, but never its
 * password. */
static void test_pg_open_errors(void **state)
{
	struct store *s = (struct store *)1;
	char user[128], host[128], port[16], db[128], url[600], where[800], err[512], pwbuf[256];
	const char *pw;
	double t;
	int fd, closed;

	(void)state;
	PG_ONLY();
	if (sscanf(strstr(pg_url, "://") ? strstr(pg_url, "://") + 3 : "",
	           "%127[^@:/]@%127[^:/]:%15[0-9]/%127[^?]", user, host, port, db) != 4)
		fail_msg("RECOVERYD_TEST_PG_URL %s: want postgres://USER@HOST:PORT/DB", pg_url);

	/* a password in the URL: refused before connecting, masked */
	snprintf(url, sizeof(url), "postgres://%s:Wrong-Pass-1234@%s:%s/%s", user, host, port, db);
	snprintf(where, sizeof(where), "%s:****@%s:%s/%s", user, host, port, db);
	err[0] = '\0';
	assert_int_equal(store_open(url, &s, err, sizeof(err)), RD_ERR);
	assert_null(s);
	print_message("password in the URL: %s\n", err);
	assert_non_null(strstr(err, where));
	assert_non_null(strstr(err, "a password in the URL is refused"));
	assert_null(strstr(err, "Wrong-Pass-1234"));

	/* a wrong password, from a password file named in the URL */
	{
		char pf[] = "/tmp/recoveryd-pgpass-XXXXXX";
		int pfd = mkstemp(pf);
		assert_true(pfd >= 0);
		dprintf(pfd, "%s:%s:%s:%s:Wrong-Pass-1234\n", host, port, db, user);
		close(pfd);
		snprintf(url, sizeof(url), "postgres://%s@%s:%s/%s?passfile=%s", user, host, port, db, pf);
		snprintf(where, sizeof(where), "%s:%s/%s", host, port, db);
		err[0] = '\0';
		assert_int_equal(store_open(url, &s, err, sizeof(err)), RD_ERR);
		unlink(pf);
		assert_null(s);
		print_message("wrong password: %s\n", err);
		assert_non_null(strstr(err, "journal "));
		assert_non_null(strstr(err, where));
		assert_non_null(strstr(err, "password authentication failed"));
		assert_null(strstr(err, "Wrong-Pass-1234"));
	}

	/* the right password (PGPASSFILE), a database that does not exist */
	pw = pgpass_password(port, pwbuf, sizeof(pwbuf));
	snprintf(url, sizeof(url), "postgresql://%s@%s:%s/no_such_db", user, host, port);
	snprintf(where, sizeof(where), "%s:%s/no_such_db", host, port);
	err[0] = '\0';
	assert_int_equal(store_open(url, &s, err, sizeof(err)), RD_ERR);
	assert_null(s);
	print_message("no such database: %s\n", err);
	assert_non_null(strstr(err, where));
	assert_non_null(strstr(err, "no_such_db"));
	if (pw)
		assert_null(strstr(err, pw));

	/* nobody listens: refused at once, not waited for */
	closed = closed_port(&fd);
	snprintf(url, sizeof(url), "postgres://%s@127.0.0.1:%d/%s", user, closed, db);
	snprintf(where, sizeof(where), "127.0.0.1:%d/%s", closed, db);
	err[0] = '\0';
	t = rd_now();
	assert_int_equal(store_open(url, &s, err, sizeof(err)), RD_ERR);
	close(fd);
	assert_null(s);
	print_message("nobody listens: %s\n", err);
	assert_true(rd_now() - t < 10);
	assert_non_null(strstr(err, "journal "));
	assert_non_null(strstr(err, where));
	store_close(NULL);
}

static enum rd_status commit_job(struct store *s, const char *id)
{
	struct job_row j = job(id, "pb", "queued", T0);
	struct store_batch *b = store_batch_new();

	assert_int_equal(store_batch_insert_job(b, &j), 0);
	return store_commit(s, b, 1);
}

/* The server drops the journal's connections (a restart, a failover): a
 * transaction that finds its connection gone fails as a whole and the
 * journal is unhealthy, until the journal connects again and a
 * transaction commits; then it reads and writes as before, and nothing of
 * what failed is in it. */
static void test_pg_connection_lost(void **state)
{
	struct fix *f = *state;
	struct store *s;
	char id[32];
	enum rd_status r = RD_ERR;
	cJSON *rec = NULL;
	PGconn *c;
	int failed = 0;

	PG_ONLY();
	s = open_ok(f->db);
	assert_int_equal(commit_job(s, "before"), RD_OK);
	assert_true(exists(s, "before"));
	c = pg_connect();
	/* every other client of the database as our role (the journal's
	 * reader and writer); waits until they have ended */
	assert_true(pg_int(c, "WITH others AS MATERIALIZED (SELECT pid FROM pg_stat_activity "
	                      "WHERE datname = current_database() AND usename = current_user "
	                      "AND backend_type = 'client backend' AND pid <> pg_backend_pid()) "
	                      "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) "
	                      "FROM others") >= 1);
	pg_close(c);

	for (int i = 0; i < 20 && r != RD_OK; i++) {
		snprintf(id, sizeof(id), "after-%d", i);
		r = commit_job(s, id);
		if (r != RD_OK) {
			failed++;
			assert_int_equal(store_healthy(s), 0);
			sleep_ms(250);
		}
	}
	print_message("lost connections: %d commit(s) failed before one succeeded\n", failed);
	if (r != RD_OK)
		fail_msg("no commit in 20 tries after the connections were lost (no reconnection?)");
	assert_int_equal(store_healthy(s), 1);

	/* the read connection was dropped too */
	for (int i = 0; i < 20 && (store_job_json(s, id, &rec) != RD_OK || !rec); i++) {
		rec = NULL;
		sleep_ms(250);
	}
	if (!rec)
		fail_msg("%s not readable after the connections were lost", id);
	cJSON_Delete(rec);
	assert_true(exists(s, "before"));
	for (int i = 0; i < failed; i++) {
		snprintf(id, sizeof(id), "after-%d", i);
		assert_false(exists(s, id));
	}
	assert_int_equal(commit_job(s, "later"), RD_OK);
	assert_true(exists(s, "later"));
	store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_wal_schema, setup, teardown),
		cmocka_unit_test_setup_teardown(test_job_record, setup, teardown),
		cmocka_unit_test_setup_teardown(test_events_capped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_pages, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prune, setup, teardown),
		cmocka_unit_test_setup_teardown(test_playbook_stats, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scan, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_batch_isolated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_callbacks_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_batches, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unhealthy_when_locked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
		cmocka_unit_test(test_memory),
		cmocka_unit_test_setup_teardown(test_concurrent_readers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_audit_rows, setup, teardown),
		cmocka_unit_test_setup_teardown(test_audit_filters, setup, teardown),
		cmocka_unit_test_setup_teardown(test_audit_paging, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pauses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migrate_v1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_record_principals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_plan_matches, setup, teardown),
		cmocka_unit_test_setup_teardown(test_plan_differs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_plan_attempts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scan_approval_and_stalls, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claim_ready, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claim_takeover, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fenced_update, setup, teardown),
		cmocka_unit_test_setup_teardown(test_renew, setup, teardown),
		cmocka_unit_test_setup_teardown(test_release, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claim_concurrent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_outbox_claim, setup, teardown),
		cmocka_unit_test_setup_teardown(test_outbox_scan_owner, setup, teardown),
		cmocka_unit_test_setup_teardown(test_outbox_claim_concurrent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_call_reads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_call_writes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_call_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_call_pauses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expire, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pg_admission_serialized, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pg_admission_parallel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pg_writer_plans, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migrate_v2, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pg_schema, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pg_newer_schema_refused, setup, teardown),
		cmocka_unit_test(test_pg_open_errors),
		cmocka_unit_test_setup_teardown(test_pg_connection_lost, setup, teardown),
	};
	const char *url = getenv("RECOVERYD_TEST_PG_URL");

	if (url && *url) {
		char err[512];

		pg_url = url;
		/* Can we reach it at all? Else one clear message, not one per test. */
		if (pg_reset(err, sizeof(err)) < 0) {
			fprintf(stderr, "test_store: RECOVERYD_TEST_PG_URL %s: %s", pg_url, err);
			return 1;
		}
	}
	metrics_init();
	/* Expected failures are logged; keep the test output readable. */
	log_fd_null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (log_fd_null >= 0)
		log_set_fd(log_fd_null);
	return cmocka_run_group_tests_name(pg_url ? "store (PostgreSQL)" : "store (SQLite)", tests, NULL,
	                                   NULL);
}

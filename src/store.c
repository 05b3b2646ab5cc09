/* The job journal: SQLite in WAL mode with group commit.
 *
 * One writer thread owns the write connection. store_commit queues a batch;
 * the writer takes every queued batch at once, opens one transaction and
 * applies each batch inside its own SAVEPOINT, so one bad batch is rolled
 * back alone while the others share the single fsync of the COMMIT.
 * Reads use a second connection behind a mutex; in WAL mode they see the
 * last committed state and never block the writer. */
#include "recoveryd/store.h"
#include "recoveryd/log.h"
#include "recoveryd/metrics.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define SCHEMA_VERSION 2
/* Same bound as busy_timeout, for the shared-cache table locks of
 * ":memory:" that busy_timeout does not cover (SQLITE_LOCKED). */
#define LOCK_WAIT_SECS 5.0
#define LIST_MAX 1000
/* A looping playbook can log without end; the record shows the newest. */
#define EVENTS_MAX 1000
#define ERR_MAX 256

static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS jobs ("
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
	" next_run_at REAL, triggered_by TEXT, cancelled_by TEXT, approval TEXT,"
	" approved_by TEXT, plan_attempts INTEGER NOT NULL DEFAULT 0);"
	"CREATE INDEX IF NOT EXISTS jobs_key ON jobs(key);"
	"CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);"
	"CREATE INDEX IF NOT EXISTS jobs_playbook ON jobs(playbook);"
	"CREATE TABLE IF NOT EXISTS attempts ("
	" job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	" n INTEGER NOT NULL,"
	" started_at REAL, ended_at REAL, result TEXT, error TEXT,"
	" verify_ok INTEGER, verify_reason TEXT,"
	" PRIMARY KEY (job_id, n));"
	"CREATE TABLE IF NOT EXISTS events ("
	" seq INTEGER PRIMARY KEY AUTOINCREMENT,"
	" job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	" ts REAL, attempt INTEGER, type TEXT NOT NULL,"
	" detail TEXT NOT NULL CHECK (json_type(detail) = 'object'),"
	" planned INTEGER NOT NULL DEFAULT 0);"
	"CREATE INDEX IF NOT EXISTS events_job ON events(job_id);"
	/* The escalation outbox: written before delivery, updated after
	 * each attempt; the job record lists its rows. */
	"CREATE TABLE IF NOT EXISTS escalations ("
	" seq INTEGER PRIMARY KEY AUTOINCREMENT,"
	" id TEXT UNIQUE NOT NULL,"
	" job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	" incident_key TEXT, sink TEXT NOT NULL, kind TEXT NOT NULL, reason TEXT,"
	" state TEXT, attempts INTEGER NOT NULL DEFAULT 0, last_answer TEXT,"
	" created_at REAL, updated_at REAL, next_attempt_at REAL, delivered_at REAL,"
	" payload TEXT);"
	"CREATE INDEX IF NOT EXISTS escalations_job ON escalations(job_id);"
	"CREATE INDEX IF NOT EXISTS escalations_state ON escalations(state);"
	"CREATE INDEX IF NOT EXISTS escalations_incident ON escalations(incident_key);"
	/* Who did what (docs/http-api.md "Audit"). Kept as long as the jobs:
	 * nothing prunes either. */
	"CREATE TABLE IF NOT EXISTS audit ("
	" seq INTEGER PRIMARY KEY AUTOINCREMENT,"
	" ts REAL NOT NULL, principal TEXT NOT NULL, role TEXT, address TEXT,"
	" action TEXT NOT NULL, job_id TEXT, playbook TEXT, reason TEXT,"
	" detail TEXT CHECK (detail IS NULL OR json_type(detail) = 'object'));"
	"CREATE INDEX IF NOT EXISTS audit_principal ON audit(principal);"
	"CREATE INDEX IF NOT EXISTS audit_action ON audit(action);"
	"CREATE INDEX IF NOT EXISTS audit_ts ON audit(ts);"
	"CREATE TABLE IF NOT EXISTS pauses ("
	" scope TEXT PRIMARY KEY, principal TEXT, reason TEXT, since REAL, until REAL);";

/* Version 1 journals gain the columns of principals and approval. */
static const char migrate_v2_sql[] =
	"ALTER TABLE jobs ADD COLUMN triggered_by TEXT;"
	"ALTER TABLE jobs ADD COLUMN cancelled_by TEXT;"
	"ALTER TABLE jobs ADD COLUMN approval TEXT;"
	"ALTER TABLE jobs ADD COLUMN approved_by TEXT;"
	"ALTER TABLE jobs ADD COLUMN plan_attempts INTEGER NOT NULL DEFAULT 0;";

/* Job columns in struct job_row order; bound as ?1..?18 and read back at
 * the same offsets, so insert, update and every select share one layout. */
#define JOB_COLS                                                                             \
	"id, playbook, key, trigger, reason, alert_json, dry_run, state, outcome, error, "   \
	"attempts, max_attempts, notifications, created_at, updated_at, started_at, "        \
	"ended_at, next_run_at, triggered_by, cancelled_by, approval, approved_by, "            \
	"plan_attempts"
enum job_col {
	JC_ID, JC_PLAYBOOK, JC_KEY, JC_TRIGGER, JC_REASON, JC_ALERT, JC_DRY_RUN, JC_STATE,
	JC_OUTCOME, JC_ERROR, JC_ATTEMPTS, JC_MAX_ATTEMPTS, JC_NOTIFICATIONS, JC_CREATED,
	JC_UPDATED, JC_STARTED, JC_ENDED, JC_NEXT_RUN, JC_TRIGGERED_BY, JC_CANCELLED_BY,
	JC_APPROVAL, JC_APPROVED_BY, JC_PLAN_ATTEMPTS
};

enum wstmt {
	W_BEGIN, W_COMMIT, W_ROLLBACK, W_SAVEPOINT, W_RELEASE, W_ROLLBACK_TO,
	W_INSERT_JOB, W_UPDATE_JOB, W_ATTEMPT, W_EVENT, W_AUDIT, W_PAUSE, W_UNPAUSE, W__COUNT
};

static const char *const wsql[W__COUNT] = {
	[W_BEGIN] = "BEGIN IMMEDIATE",
	[W_COMMIT] = "COMMIT",
	[W_ROLLBACK] = "ROLLBACK",
	[W_SAVEPOINT] = "SAVEPOINT batch",
	[W_RELEASE] = "RELEASE batch",
	[W_ROLLBACK_TO] = "ROLLBACK TO batch",
	[W_INSERT_JOB] = "INSERT INTO jobs (" JOB_COLS ") VALUES "
	                 "(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,"
	                 "?21,?22,?23)",
	[W_UPDATE_JOB] = "UPDATE jobs SET state=?8, outcome=?9, error=?10, attempts=?11, "
	                 "max_attempts=?12, notifications=?13, created_at=?14, updated_at=?15, "
	                 "started_at=?16, ended_at=?17, next_run_at=?18, cancelled_by=?20, "
	                 "approval=?21, approved_by=?22, plan_attempts=?23 WHERE id=?1",
	[W_ATTEMPT] = "INSERT INTO attempts (job_id, n, started_at, ended_at, result, error, "
	              "verify_ok, verify_reason) VALUES (?1,?2,?3,?4,?5,?6,?7,?8) "
	              "ON CONFLICT (job_id, n) DO UPDATE SET started_at=excluded.started_at, "
	              "ended_at=excluded.ended_at, result=excluded.result, error=excluded.error, "
	              "verify_ok=excluded.verify_ok, verify_reason=excluded.verify_reason",
	[W_EVENT] = "INSERT INTO events (job_id, ts, attempt, type, detail, planned) "
	            "VALUES (?1,?2,?3,?4,?5,?6)",
	[W_AUDIT] = "INSERT INTO audit (ts, principal, role, address, action, job_id, playbook, "
	            "reason, detail) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
	[W_PAUSE] = "INSERT OR REPLACE INTO pauses (scope, principal, reason, since, until) "
	            "VALUES (?1,?2,?3,?4,?5)",
	[W_UNPAUSE] = "DELETE FROM pauses WHERE scope = ?1",
};

enum rstmt {
	Q_BEGIN, Q_END, Q_JOB, Q_ATTEMPTS, Q_EVENTS, Q_ESCALATIONS, Q_SCAN,
	Q_LIST, Q_LIST_STATE, Q_LIST_PLAYBOOK, Q_LIST_BOTH, Q_PAUSES, Q_AUDIT, Q__COUNT
};

static const char *const rsql[Q__COUNT] = {
	[Q_BEGIN] = "BEGIN",
	[Q_END] = "COMMIT",
	[Q_JOB] = "SELECT " JOB_COLS " FROM jobs WHERE id = ?1",
	[Q_ATTEMPTS] = "SELECT n, started_at, ended_at, result, error, verify_ok, verify_reason "
	               "FROM attempts WHERE job_id = ?1 ORDER BY n",
	/* Newest ?2 rows, returned oldest first. */
	[Q_EVENTS] = "SELECT ts, attempt, type, detail, planned FROM "
	             "(SELECT seq, ts, attempt, type, detail, planned FROM events "
	             " WHERE job_id = ?1 ORDER BY seq DESC LIMIT ?2) ORDER BY seq",
	[Q_ESCALATIONS] = "SELECT sink, state, attempts, last_answer, created_at, updated_at, "
	                  "id, kind, reason, delivered_at, next_attempt_at "
	                  "FROM escalations WHERE job_id = ?1 ORDER BY seq",
	[Q_SCAN] = "SELECT " JOB_COLS ", (SELECT count(*) FROM events WHERE events.job_id = jobs.id "
	           "AND events.type = 'watchdog') FROM jobs WHERE state IN ('queued','running','retry_wait',"
	           "'awaiting_approval') "
	           "OR started_at >= ?1 OR ended_at >= ?1 ORDER BY seq",
	/* One statement per filter combination so each can use its index. */
	[Q_LIST] = "SELECT " JOB_COLS " FROM jobs ORDER BY seq DESC LIMIT ?3",
	[Q_LIST_STATE] = "SELECT " JOB_COLS " FROM jobs WHERE state = ?1 ORDER BY seq DESC LIMIT ?3",
	[Q_LIST_PLAYBOOK] = "SELECT " JOB_COLS " FROM jobs WHERE playbook = ?2 "
	                    "ORDER BY seq DESC LIMIT ?3",
	[Q_LIST_BOTH] = "SELECT " JOB_COLS " FROM jobs WHERE state = ?1 AND playbook = ?2 "
	                "ORDER BY seq DESC LIMIT ?3",
	[Q_PAUSES] = "SELECT scope, principal, reason, since, until FROM pauses ORDER BY scope",
	/* NULL parameters are no filter. */
	[Q_AUDIT] = "SELECT seq, ts, principal, role, address, action, job_id, playbook, reason, "
	            "detail FROM audit WHERE (?1 IS NULL OR principal = ?1) "
	            "AND (?2 IS NULL OR action = ?2) AND (?3 IS NULL OR ts >= ?3) "
	            "AND (?4 IS NULL OR ts <= ?4) AND (?5 IS NULL OR seq < ?5) "
	            "ORDER BY seq DESC LIMIT ?6",
};

enum write_kind {
	WK_INSERT_JOB, WK_UPDATE_JOB, WK_ATTEMPT, WK_EVENT, WK_ESC_INSERT, WK_ESC_UPDATE,
	WK_AUDIT, WK_PAUSE, WK_UNPAUSE
};

/* The text fields of an audit or pause row, owned. */
#define ROW_STRS 8

/* One queued write; strings are owned copies. */
struct write_op {
	struct write_op *next;
	enum write_kind kind;
	char *job_id;                  /* WK_ATTEMPT, WK_EVENT */
	struct job_row job;            /* WK_INSERT_JOB, WK_UPDATE_JOB */
	struct attempt_row att;        /* WK_ATTEMPT */
	char *type, *detail;           /* WK_EVENT */
	int attempt, planned;
	double ts;
	struct escalation_row esc;     /* WK_ESC_INSERT, WK_ESC_UPDATE */
	char *strs[ROW_STRS];          /* WK_AUDIT, WK_PAUSE, WK_UNPAUSE: bound as text */
	double t1, t2;                 /* WK_AUDIT ts; WK_PAUSE since, until */
};

struct store_batch {
	struct write_op *head, *tail;
	struct store_batch *next;      /* queue link */
	int detached;                  /* wait == 0: the writer frees it */
	int done;
	store_done_fn on_done;         /* store_commit_cb: called by the writer */
	void *on_done_arg;
	enum rd_status result;
	char err[ERR_MAX];
};

struct store {
	char *path;                    /* as given, for messages */
	int mem;
	sqlite3 *wdb, *rdb;
	sqlite3_stmt *w[W__COUNT];
	sqlite3_stmt *r[Q__COUNT];

	pthread_mutex_t mu;            /* queue, results, stats, healthy */
	pthread_cond_t work_cv;        /* writer: batches queued or stopping */
	pthread_cond_t done_cv;        /* committers: results are in */
	struct store_batch *qhead, *qtail;
	int stopping;
	int healthy;
	unsigned long txns, batches;
	pthread_t writer;
	int writer_started;
	unsigned group_max;            /* batches per transaction; 0 = all queued */

	pthread_mutex_t rmu;           /* the read connection */
};

/* ---- small helpers ---- */

static char *dup_or_null(const char *s, int *fail)
{
	char *d;

	if (!s)
		return NULL;
	d = strdup(s);
	if (!d)
		*fail = 1;
	return d;
}

static void job_strings_free(struct job_row *j)
{
	free((char *)j->id);
	free((char *)j->playbook);
	free((char *)j->key);
	free((char *)j->trigger);
	free((char *)j->reason);
	free((char *)j->alert_json);
	free((char *)j->state);
	free((char *)j->outcome);
	free((char *)j->error);
	free((char *)j->triggered_by);
	free((char *)j->cancelled_by);
	free((char *)j->approval);
	free((char *)j->approved_by);
}

/* Deep copy: dst's strings are owned afterwards (freed on failure too). */
static int job_copy(struct job_row *dst, const struct job_row *src)
{
	int fail = 0;

	*dst = *src;
	dst->id = dup_or_null(src->id, &fail);
	dst->playbook = dup_or_null(src->playbook, &fail);
	dst->key = dup_or_null(src->key, &fail);
	dst->trigger = dup_or_null(src->trigger, &fail);
	dst->reason = dup_or_null(src->reason, &fail);
	dst->alert_json = dup_or_null(src->alert_json, &fail);
	dst->state = dup_or_null(src->state, &fail);
	dst->outcome = dup_or_null(src->outcome, &fail);
	dst->error = dup_or_null(src->error, &fail);
	dst->triggered_by = dup_or_null(src->triggered_by, &fail);
	dst->cancelled_by = dup_or_null(src->cancelled_by, &fail);
	dst->approval = dup_or_null(src->approval, &fail);
	dst->approved_by = dup_or_null(src->approved_by, &fail);
	if (fail) {
		job_strings_free(dst);
		memset(dst, 0, sizeof(*dst));
		return -1;
	}
	return 0;
}

static void esc_strings_free(struct escalation_row *e)
{
	free((char *)e->id);
	free((char *)e->job_id);
	free((char *)e->incident_key);
	free((char *)e->sink);
	free((char *)e->kind);
	free((char *)e->reason);
	free((char *)e->state);
	free((char *)e->last_answer);
	free((char *)e->payload);
}

static int esc_copy(struct escalation_row *d, const struct escalation_row *src)
{
	int fail = 0;

	*d = *src;
	d->id = dup_or_null(src->id, &fail);
	d->job_id = dup_or_null(src->job_id, &fail);
	d->incident_key = dup_or_null(src->incident_key, &fail);
	d->sink = dup_or_null(src->sink, &fail);
	d->kind = dup_or_null(src->kind, &fail);
	d->reason = dup_or_null(src->reason, &fail);
	d->state = dup_or_null(src->state, &fail);
	d->last_answer = dup_or_null(src->last_answer, &fail);
	d->payload = dup_or_null(src->payload, &fail);
	if (fail) {
		esc_strings_free(d);
		memset(d, 0, sizeof(*d));
		return -1;
	}
	return 0;
}

static void write_op_free(struct write_op *op)
{
	job_strings_free(&op->job);
	free(op->job_id);
	free((char *)op->att.result);
	free((char *)op->att.error);
	free((char *)op->att.verify_reason);
	free(op->type);
	free(op->detail);
	esc_strings_free(&op->esc);
	for (int i = 0; i < ROW_STRS; i++)
		free(op->strs[i]);
	free(op);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* sqlite3_step, waiting out the shared-cache table locks of ":memory:"
 * (SQLITE_LOCKED is not covered by busy_timeout). The lock is taken before
 * the first row, so resetting and stepping again is safe. */
static int step_retry(sqlite3_stmt *st)
{
	double deadline = 0;
	int rc;

	while (((rc = sqlite3_step(st)) & 0xff) == SQLITE_LOCKED) {
		if (deadline == 0)
			deadline = rd_mono() + LOCK_WAIT_SECS;
		else if (rd_mono() > deadline)
			break;
		sqlite3_reset(st);
		sleep_ms(1);
	}
	return rc;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
	if (v)
		sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

/* Times: 0 means unset and is stored as NULL. */
static void bind_time(sqlite3_stmt *st, int i, double t)
{
	if (t != 0)
		sqlite3_bind_double(st, i, t);
	else
		sqlite3_bind_null(st, i);
}

static void bind_job(sqlite3_stmt *st, const struct job_row *j)
{
	bind_text(st, JC_ID + 1, j->id);
	bind_text(st, JC_PLAYBOOK + 1, j->playbook);
	bind_text(st, JC_KEY + 1, j->key);
	bind_text(st, JC_TRIGGER + 1, j->trigger);
	bind_text(st, JC_REASON + 1, j->reason);
	bind_text(st, JC_ALERT + 1, j->alert_json);
	sqlite3_bind_int(st, JC_DRY_RUN + 1, j->dry_run != 0);
	bind_text(st, JC_STATE + 1, j->state);
	bind_text(st, JC_OUTCOME + 1, j->outcome);
	bind_text(st, JC_ERROR + 1, j->error);
	sqlite3_bind_int(st, JC_ATTEMPTS + 1, j->attempts);
	sqlite3_bind_int(st, JC_MAX_ATTEMPTS + 1, j->max_attempts);
	sqlite3_bind_int(st, JC_NOTIFICATIONS + 1, j->notifications);
	bind_time(st, JC_CREATED + 1, j->created_at);
	bind_time(st, JC_UPDATED + 1, j->updated_at);
	bind_time(st, JC_STARTED + 1, j->started_at);
	bind_time(st, JC_ENDED + 1, j->ended_at);
	bind_time(st, JC_NEXT_RUN + 1, j->next_run_at);
	bind_text(st, JC_TRIGGERED_BY + 1, j->triggered_by);
	bind_text(st, JC_CANCELLED_BY + 1, j->cancelled_by);
	bind_text(st, JC_APPROVAL + 1, j->approval);
	bind_text(st, JC_APPROVED_BY + 1, j->approved_by);
	sqlite3_bind_int(st, JC_PLAN_ATTEMPTS + 1, j->plan_attempts);
}

/* A view of the current row; its strings live until the next step. */
static void job_from_stmt(sqlite3_stmt *st, struct job_row *j)
{
	j->id = (const char *)sqlite3_column_text(st, JC_ID);
	j->playbook = (const char *)sqlite3_column_text(st, JC_PLAYBOOK);
	j->key = (const char *)sqlite3_column_text(st, JC_KEY);
	j->trigger = (const char *)sqlite3_column_text(st, JC_TRIGGER);
	j->reason = (const char *)sqlite3_column_text(st, JC_REASON);
	j->alert_json = (const char *)sqlite3_column_text(st, JC_ALERT);
	j->dry_run = sqlite3_column_int(st, JC_DRY_RUN);
	j->state = (const char *)sqlite3_column_text(st, JC_STATE);
	j->outcome = (const char *)sqlite3_column_text(st, JC_OUTCOME);
	j->error = (const char *)sqlite3_column_text(st, JC_ERROR);
	j->attempts = sqlite3_column_int(st, JC_ATTEMPTS);
	j->max_attempts = sqlite3_column_int(st, JC_MAX_ATTEMPTS);
	j->notifications = sqlite3_column_int(st, JC_NOTIFICATIONS);
	j->created_at = sqlite3_column_double(st, JC_CREATED);
	j->updated_at = sqlite3_column_double(st, JC_UPDATED);
	j->started_at = sqlite3_column_double(st, JC_STARTED);
	j->ended_at = sqlite3_column_double(st, JC_ENDED);
	j->next_run_at = sqlite3_column_double(st, JC_NEXT_RUN);
	j->triggered_by = (const char *)sqlite3_column_text(st, JC_TRIGGERED_BY);
	j->cancelled_by = (const char *)sqlite3_column_text(st, JC_CANCELLED_BY);
	j->approval = (const char *)sqlite3_column_text(st, JC_APPROVAL);
	j->approved_by = (const char *)sqlite3_column_text(st, JC_APPROVED_BY);
	j->plan_attempts = sqlite3_column_int(st, JC_PLAN_ATTEMPTS);
	j->stalls = 0;
}

static void stmt_done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

/* ---- batches ---- */

struct store_batch *store_batch_new(void)
{
	return calloc(1, sizeof(struct store_batch));
}

void store_batch_free(struct store_batch *b)
{
	struct write_op *op, *next;

	if (!b)
		return;
	for (op = b->head; op; op = next) {
		next = op->next;
		write_op_free(op);
	}
	free(b);
}

static void batch_push(struct store_batch *b, struct write_op *op)
{
	if (b->tail)
		b->tail->next = op;
	else
		b->head = op;
	b->tail = op;
}

static int batch_add_job(struct store_batch *b, enum write_kind kind, const struct job_row *j)
{
	struct write_op *op;

	if (!b || !j || !(op = calloc(1, sizeof(*op))))
		return -1;
	op->kind = kind;
	if (job_copy(&op->job, j) < 0) {
		free(op);
		return -1;
	}
	batch_push(b, op);
	return 0;
}

int store_batch_insert_job(struct store_batch *b, const struct job_row *j)
{
	return batch_add_job(b, WK_INSERT_JOB, j);
}

int store_batch_update_job(struct store_batch *b, const struct job_row *j)
{
	return batch_add_job(b, WK_UPDATE_JOB, j);
}

/* A row of text fields (NULLs kept) and two times. */
static int batch_add_strs(struct store_batch *b, enum write_kind kind, const char *const *v, int n,
                          double t1, double t2)
{
	struct write_op *op;
	int fail = 0;

	if (!b || n > ROW_STRS || !(op = calloc(1, sizeof(*op))))
		return -1;
	op->kind = kind;
	for (int i = 0; i < n; i++)
		op->strs[i] = dup_or_null(v[i], &fail);
	op->t1 = t1;
	op->t2 = t2;
	if (fail) {
		write_op_free(op);
		return -1;
	}
	batch_push(b, op);
	return 0;
}

int store_batch_audit(struct store_batch *b, const struct audit_row *a)
{
	const char *v[] = {a->principal, a->role, a->address, a->action,
	                   a->job_id,    a->playbook, a->reason, a->detail};
	return batch_add_strs(b, WK_AUDIT, v, 8, a->ts, 0);
}

int store_batch_pause(struct store_batch *b, const struct pause_row *p)
{
	const char *v[] = {p->scope, p->principal, p->reason};
	return batch_add_strs(b, WK_PAUSE, v, 3, p->since, p->until);
}

int store_batch_unpause(struct store_batch *b, const char *scope)
{
	const char *v[] = {scope};
	return batch_add_strs(b, WK_UNPAUSE, v, 1, 0, 0);
}

int store_batch_attempt(struct store_batch *b, const char *job_id, const struct attempt_row *a)
{
	struct write_op *op;
	int fail = 0;

	if (!b || !a || !(op = calloc(1, sizeof(*op))))
		return -1;
	op->kind = WK_ATTEMPT;
	op->att = *a;
	op->job_id = dup_or_null(job_id, &fail);
	op->att.result = dup_or_null(a->result, &fail);
	op->att.error = dup_or_null(a->error, &fail);
	op->att.verify_reason = dup_or_null(a->verify_reason, &fail);
	if (fail) {
		write_op_free(op);
		return -1;
	}
	batch_push(b, op);
	return 0;
}

int store_batch_event(struct store_batch *b, const char *job_id, int attempt, const char *type,
                      const char *detail_json, int planned, double ts)
{
	struct write_op *op;
	int fail = 0;

	if (!b || !(op = calloc(1, sizeof(*op))))
		return -1;
	op->kind = WK_EVENT;
	op->job_id = dup_or_null(job_id, &fail);
	op->type = dup_or_null(type, &fail);
	op->detail = dup_or_null(detail_json ? detail_json : "{}", &fail);
	op->attempt = attempt;
	op->planned = planned != 0;
	op->ts = ts;
	if (fail) {
		write_op_free(op);
		return -1;
	}
	batch_push(b, op);
	return 0;
}

static int batch_add_esc(struct store_batch *b, enum write_kind kind, const struct escalation_row *e)
{
	struct write_op *op;

	if (!b || !e || !(op = calloc(1, sizeof(*op))))
		return -1;
	op->kind = kind;
	if (esc_copy(&op->esc, e) < 0) {
		free(op);
		return -1;
	}
	batch_push(b, op);
	return 0;
}

int store_batch_escalation(struct store_batch *b, const struct escalation_row *e)
{
	return batch_add_esc(b, WK_ESC_INSERT, e);
}

int store_batch_escalation_update(struct store_batch *b, const struct escalation_row *e)
{
	return batch_add_esc(b, WK_ESC_UPDATE, e);
}

/* ---- the writer ---- */

/* Run a cached writer statement to completion; on failure copy sqlite's
 * message into err. Returns the sqlite result code. */
static int wexec(struct store *s, sqlite3_stmt *st, char *err, size_t errlen)
{
	int rc = step_retry(st);

	if (rc == SQLITE_ROW || rc == SQLITE_DONE)
		rc = SQLITE_OK;
	else if (err)
		snprintf(err, errlen, "%s", sqlite3_errmsg(s->wdb));
	stmt_done(st);
	return rc;
}

/* Escalation writes are rare next to job writes: prepared on use. */
static int apply_esc(struct store *s, struct write_op *op, char *err, size_t errlen)
{
	static const char ins[] =
		"INSERT INTO escalations (id, job_id, incident_key, sink, kind, reason, state, attempts, "
		"last_answer, created_at, updated_at, next_attempt_at, delivered_at, payload) VALUES "
		"(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)";
	static const char upd[] =
		"UPDATE escalations SET state=?7, attempts=?8, last_answer=?9, updated_at=?11, "
		"next_attempt_at=?12, delivered_at=?13 WHERE id=?1";
	const struct escalation_row *e = &op->esc;
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(s->wdb, op->kind == WK_ESC_INSERT ? ins : upd, -1, &st, NULL);

	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "%s", sqlite3_errmsg(s->wdb));
		return rc;
	}
	bind_text(st, 1, e->id);
	if (op->kind == WK_ESC_INSERT) {
		bind_text(st, 2, e->job_id);
		bind_text(st, 3, e->incident_key);
		bind_text(st, 4, e->sink);
		bind_text(st, 5, e->kind);
		bind_text(st, 6, e->reason);
		bind_time(st, 10, e->created_at);
		bind_text(st, 14, e->payload);
	}
	bind_text(st, 7, e->state);
	sqlite3_bind_int(st, 8, e->attempts);
	bind_text(st, 9, e->last_answer);
	bind_time(st, 11, e->updated_at);
	bind_time(st, 12, e->next_attempt_at);
	bind_time(st, 13, e->delivered_at);
	rc = step_retry(st);
	if (rc == SQLITE_DONE)
		rc = SQLITE_OK;
	else
		snprintf(err, errlen, "%s", sqlite3_errmsg(s->wdb));
	sqlite3_finalize(st);
	return rc;
}

static int apply_op(struct store *s, struct write_op *op, char *err, size_t errlen)
{
	sqlite3_stmt *st;
	int rc;

	switch (op->kind) {
	case WK_INSERT_JOB:
	case WK_UPDATE_JOB:
		st = s->w[op->kind == WK_INSERT_JOB ? W_INSERT_JOB : W_UPDATE_JOB];
		bind_job(st, &op->job);
		rc = wexec(s, st, err, errlen);
		/* An update of an unknown job is a caller bug; failing the batch
		 * beats silently journaling nothing. */
		if (rc == SQLITE_OK && op->kind == WK_UPDATE_JOB && sqlite3_changes(s->wdb) == 0) {
			snprintf(err, errlen, "update of unknown job %s", op->job.id ? op->job.id : "(null)");
			rc = SQLITE_NOTFOUND;
		}
		return rc;
	case WK_ATTEMPT:
		st = s->w[W_ATTEMPT];
		bind_text(st, 1, op->job_id);
		sqlite3_bind_int(st, 2, op->att.n);
		bind_time(st, 3, op->att.started_at);
		bind_time(st, 4, op->att.ended_at);
		bind_text(st, 5, op->att.result);
		bind_text(st, 6, op->att.error);
		if (op->att.verify_ok < 0)
			sqlite3_bind_null(st, 7);
		else
			sqlite3_bind_int(st, 7, op->att.verify_ok != 0);
		bind_text(st, 8, op->att.verify_reason);
		return wexec(s, st, err, errlen);
	case WK_EVENT:
		st = s->w[W_EVENT];
		bind_text(st, 1, op->job_id);
		bind_time(st, 2, op->ts);
		if (op->attempt > 0)
			sqlite3_bind_int(st, 3, op->attempt);
		else
			sqlite3_bind_null(st, 3);
		bind_text(st, 4, op->type);
		bind_text(st, 5, op->detail);
		sqlite3_bind_int(st, 6, op->planned);
		return wexec(s, st, err, errlen);
	case WK_ESC_INSERT:
	case WK_ESC_UPDATE:
		return apply_esc(s, op, err, errlen);
	case WK_AUDIT:
		st = s->w[W_AUDIT];
		sqlite3_bind_double(st, 1, op->t1);
		for (int i = 0; i < 8; i++)
			bind_text(st, i + 2, op->strs[i]);
		return wexec(s, st, err, errlen);
	case WK_PAUSE:
		st = s->w[W_PAUSE];
		for (int i = 0; i < 3; i++)
			bind_text(st, i + 1, op->strs[i]);
		bind_time(st, 4, op->t1);
		bind_time(st, 5, op->t2);
		return wexec(s, st, err, errlen);
	case WK_UNPAUSE:
		st = s->w[W_UNPAUSE];
		bind_text(st, 1, op->strs[0]);
		return wexec(s, st, err, errlen);
	}
	snprintf(err, errlen, "unknown journal operation");
	return SQLITE_MISUSE;
}

static void fail_all(struct store_batch *list, const char *why)
{
	/* A batch that failed on its own keeps its own message. */
	for (struct store_batch *b = list; b; b = b->next) {
		if (b->result == RD_OK || !b->err[0])
			snprintf(b->err, sizeof(b->err), "%s", why);
		b->result = RD_ERR;
	}
}

/* Apply every batch of list in one transaction. Sets each batch's result;
 * returns RD_OK when the transaction committed, else RD_ERR. */
static enum rd_status run_txn(struct store *s, struct store_batch *list)
{
	char err[ERR_MAX + 32];
	struct store_batch *b;

	err[0] = '\0';
	if (wexec(s, s->w[W_BEGIN], err, sizeof(err)) != SQLITE_OK) {
		fail_all(list, err);
		return RD_ERR;
	}
	for (b = list; b; b = b->next) {
		int ok = wexec(s, s->w[W_SAVEPOINT], err, sizeof(err)) == SQLITE_OK;

		if (!ok)
			goto abort;
		for (struct write_op *op = b->head; op && ok; op = op->next)
			ok = apply_op(s, op, b->err, sizeof(b->err)) == SQLITE_OK;
		if (ok) {
			b->result = RD_OK;
			if (wexec(s, s->w[W_RELEASE], err, sizeof(err)) != SQLITE_OK)
				goto abort;
			continue;
		}
		b->result = RD_ERR;
		/* Some errors (I/O, full disk) make sqlite roll back the whole
		 * transaction: then nothing of this round survives. */
		if (sqlite3_get_autocommit(s->wdb)) {
			snprintf(err, sizeof(err), "transaction rolled back: %s", b->err);
			fail_all(list, err);
			return RD_ERR;
		}
		if (wexec(s, s->w[W_ROLLBACK_TO], err, sizeof(err)) != SQLITE_OK ||
		    wexec(s, s->w[W_RELEASE], err, sizeof(err)) != SQLITE_OK)
			goto abort;
	}
	if (wexec(s, s->w[W_COMMIT], err, sizeof(err)) == SQLITE_OK)
		return RD_OK;
abort:
	if (!sqlite3_get_autocommit(s->wdb))
		wexec(s, s->w[W_ROLLBACK], NULL, 0);
	fail_all(list, err[0] ? err : "transaction failed");
	return RD_ERR;
}

static const char *batch_job(const struct store_batch *b)
{
	const struct write_op *op = b->head;

	if (!op)
		return NULL;
	return op->kind == WK_INSERT_JOB || op->kind == WK_UPDATE_JOB ? op->job.id : op->job_id;
}

static void *writer_main(void *arg)
{
	struct store *s = arg;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		struct store_batch *list, *b, *next, *detached = NULL;
		unsigned long nok = 0;
		int committed;

		while (!s->qhead && !s->stopping)
			pthread_cond_wait(&s->work_cv, &s->mu);
		if (!s->qhead)
			break; /* stopping and drained */
		list = s->qhead;
		if (s->group_max) {
			/* Bounded group: cut the queue after group_max batches. */
			struct store_batch *last = list;
			for (unsigned n = 1; n < s->group_max && last->next; n++)
				last = last->next;
			s->qhead = last->next;
			if (!s->qhead)
				s->qtail = NULL;
			last->next = NULL;
		} else {
			s->qhead = s->qtail = NULL;
		}
		pthread_mutex_unlock(&s->mu);

		committed = run_txn(s, list) == RD_OK;
		if (!committed)
			log_kv(LOG_ERROR, batch_job(list), "journal transaction failed", "path", s->path,
			       "error", list->err, NULL);
		/* Nobody else reads a detached batch: report it before the
		 * waiters are woken, so a later wait=1 commit sees the count. */
		for (b = list; b; b = b->next) {
			if (b->result == RD_OK) {
				nok++;
			} else if (b->detached) {
				log_kv(LOG_ERROR, batch_job(b), "journal batch failed", "error", b->err,
				       NULL);
				metrics_add(M_JOURNAL_ERRORS, NULL, NULL, 1);
			}
		}

		pthread_mutex_lock(&s->mu);
		s->healthy = committed;
		if (committed) {
			s->txns++;
			s->batches += nok;
		}
		for (b = list; b; b = next) {
			next = b->next; /* a woken waiter frees b */
			if (b->detached) {
				b->next = detached;
				detached = b;
			} else {
				b->next = NULL;
				b->done = 1;
			}
		}
		pthread_cond_broadcast(&s->done_cv);
		pthread_mutex_unlock(&s->mu);

		for (b = detached; b; b = next) {
			next = b->next;
			if (b->on_done)
				b->on_done(b->result, b->on_done_arg);
			store_batch_free(b);
		}
		pthread_mutex_lock(&s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

static enum rd_status commit(struct store *s, struct store_batch *b, int wait, store_done_fn done,
                             void *arg)
{
	enum rd_status r = RD_OK;

	if (!s || !b) {
		store_batch_free(b);
		return RD_ERR;
	}
	pthread_mutex_lock(&s->mu);
	if (s->stopping) {
		pthread_mutex_unlock(&s->mu);
		log_kv(LOG_ERROR, batch_job(b), "journal closed, batch dropped", NULL);
		store_batch_free(b);
		return RD_ERR;
	}
	b->next = NULL;
	b->detached = !wait;
	b->done = 0;
	b->on_done = done;
	b->on_done_arg = arg;
	b->err[0] = '\0';
	if (s->qtail)
		s->qtail->next = b;
	else
		s->qhead = b;
	s->qtail = b;
	pthread_cond_signal(&s->work_cv);
	if (!wait)
		goto out;
	while (!b->done)
		pthread_cond_wait(&s->done_cv, &s->mu);
	r = b->result;
	store_batch_free(b);
out:
	pthread_mutex_unlock(&s->mu);
	return r;
}

enum rd_status store_commit(struct store *s, struct store_batch *b, int wait)
{
	return commit(s, b, wait, NULL, NULL);
}

enum rd_status store_commit_cb(struct store *s, struct store_batch *b, store_done_fn done, void *arg)
{
	return commit(s, b, 0, done, arg);
}

int store_healthy(struct store *s)
{
	int h;

	if (!s)
		return 0;
	pthread_mutex_lock(&s->mu);
	h = s->healthy;
	pthread_mutex_unlock(&s->mu);
	return h;
}

void store_stats(struct store *s, unsigned long *txns, unsigned long *batches)
{
	unsigned long t = 0, n = 0;

	if (s) {
		pthread_mutex_lock(&s->mu);
		t = s->txns;
		n = s->batches;
		pthread_mutex_unlock(&s->mu);
	}
	if (txns)
		*txns = t;
	if (batches)
		*batches = n;
}

/* ---- open / close ---- */

static int open_conn(struct store *s, const char *name, int flags, sqlite3 **db, char *err,
                     size_t errlen)
{
	int rc = sqlite3_open_v2(name, db, flags, NULL);

	if (rc == SQLITE_OK)
		rc = sqlite3_busy_timeout(*db, 5000);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(*db, "PRAGMA foreign_keys=ON", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		snprintf(err, errlen, "journal %s: %s", s->path,
		         *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
	return rc;
}

/* WAL lets readers see committed data without blocking the writer;
 * FULL syncs the WAL on every commit (acknowledged means durable). */
static int setup_writer(struct store *s, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	const char *what = NULL;
	int rc, version;

	rc = sqlite3_prepare_v2(s->wdb, "PRAGMA journal_mode=WAL", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = step_retry(st);
	if (rc != SQLITE_ROW)
		goto sqlerr;
	if (!s->mem && strcasecmp((const char *)sqlite3_column_text(st, 0), "wal") != 0) {
		snprintf(err, errlen, "journal %s: cannot enable WAL mode (journal_mode is %s)",
		         s->path, (const char *)sqlite3_column_text(st, 0));
		rc = SQLITE_ERROR;
		goto out;
	}
	sqlite3_finalize(st);
	st = NULL;
	rc = sqlite3_exec(s->wdb, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		goto sqlerr;

	rc = sqlite3_prepare_v2(s->wdb, "PRAGMA user_version", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = step_retry(st);
	if (rc != SQLITE_ROW)
		goto sqlerr;
	version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	st = NULL;
	if (version > SCHEMA_VERSION) {
		snprintf(err, errlen, "journal %s: schema version %d is newer than supported %d",
		         s->path, version, SCHEMA_VERSION);
		rc = SQLITE_ERROR;
		goto out;
	}
	what = "BEGIN IMMEDIATE";
	rc = sqlite3_exec(s->wdb, what, NULL, NULL, NULL);
	if (rc == SQLITE_OK && version == 1)
		rc = sqlite3_exec(s->wdb, migrate_v2_sql, NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(s->wdb, schema_sql, NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(s->wdb, "PRAGMA user_version = 2", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(s->wdb, "COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "journal %s: %s", s->path, sqlite3_errmsg(s->wdb));
		if (!sqlite3_get_autocommit(s->wdb))
			sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
		goto out;
	}
	for (int i = 0; i < W__COUNT; i++) {
		rc = sqlite3_prepare_v3(s->wdb, wsql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->w[i], NULL);
		if (rc != SQLITE_OK)
			goto sqlerr;
	}
	goto out;
sqlerr:
	snprintf(err, errlen, "journal %s: %s", s->path, sqlite3_errmsg(s->wdb));
out:
	sqlite3_finalize(st);
	return rc == SQLITE_OK || rc == SQLITE_ROW ? 0 : -1;
}

static int setup_reader(struct store *s, char *err, size_t errlen)
{
	int rc = sqlite3_exec(s->rdb, "PRAGMA query_only=ON", NULL, NULL, NULL);

	for (int i = 0; rc == SQLITE_OK && i < Q__COUNT; i++)
		rc = sqlite3_prepare_v3(s->rdb, rsql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->r[i], NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "journal %s: %s", s->path, sqlite3_errmsg(s->rdb));
		return -1;
	}
	return 0;
}

static void close_conns(struct store *s)
{
	for (int i = 0; i < W__COUNT; i++)
		sqlite3_finalize(s->w[i]);
	for (int i = 0; i < Q__COUNT; i++)
		sqlite3_finalize(s->r[i]);
	/* Reader first: for ":memory:" the writer's close frees the database. */
	sqlite3_close(s->rdb);
	sqlite3_close(s->wdb);
	s->rdb = s->wdb = NULL;
}

enum rd_status store_open(const char *path, struct store **out, char *err, size_t errlen)
{
	static atomic_ulong mem_seq;
	struct store *s = NULL;
	char name[128], hex[17];
	const char *dbname = path;
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
	enum rd_status r = RD_ERR;
	int locks = 0;

	if (errlen)
		err[0] = '\0';
	*out = NULL;
	if (!path || !*path) {
		snprintf(err, errlen, "journal: empty path");
		return RD_ERR;
	}
	s = calloc(1, sizeof(*s));
	if (!s || !(s->path = strdup(path))) {
		snprintf(err, errlen, "journal %s: out of memory", path);
		r = RD_NOMEM;
		goto out;
	}
	/* Both connections must reach one in-memory database: a named
	 * shared-cache URI, unique per store so two stores never meet. */
	if (strcmp(path, ":memory:") == 0) {
		s->mem = 1;
		rd_random_hex(hex, 8);
		snprintf(name, sizeof(name), "file:recoveryd-mem-%ld-%lu-%s?mode=memory&cache=shared",
		         (long)getpid(), atomic_fetch_add(&mem_seq, 1) + 1, hex);
		dbname = name;
		flags |= SQLITE_OPEN_URI;
	}
	if (pthread_mutex_init(&s->mu, NULL) != 0 || pthread_mutex_init(&s->rmu, NULL) != 0 ||
	    pthread_cond_init(&s->work_cv, NULL) != 0 || pthread_cond_init(&s->done_cv, NULL) != 0) {
		snprintf(err, errlen, "journal %s: cannot create locks", path);
		goto out;
	}
	locks = 1;
	if (open_conn(s, dbname, flags, &s->wdb, err, errlen) != SQLITE_OK ||
	    setup_writer(s, err, errlen) < 0)
		goto out;
	/* The writer created the file and schema; the reader needs neither. */
	flags &= ~SQLITE_OPEN_CREATE;
	if (open_conn(s, dbname, flags, &s->rdb, err, errlen) != SQLITE_OK ||
	    setup_reader(s, err, errlen) < 0)
		goto out;
	s->healthy = 1;
	if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
		snprintf(err, errlen, "journal %s: cannot start the writer thread", path);
		goto out;
	}
	s->writer_started = 1;
	*out = s;
	s = NULL;
	r = RD_OK;
out:
	if (s) {
		close_conns(s);
		if (locks) {
			pthread_mutex_destroy(&s->mu);
			pthread_mutex_destroy(&s->rmu);
			pthread_cond_destroy(&s->work_cv);
			pthread_cond_destroy(&s->done_cv);
		}
		free(s->path);
		free(s);
	}
	return r;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	s->stopping = 1;
	pthread_cond_signal(&s->work_cv);
	pthread_mutex_unlock(&s->mu);
	/* The writer commits everything queued before it exits. */
	if (s->writer_started)
		pthread_join(s->writer, NULL);
	close_conns(s);
	pthread_mutex_destroy(&s->mu);
	pthread_mutex_destroy(&s->rmu);
	pthread_cond_destroy(&s->work_cv);
	pthread_cond_destroy(&s->done_cv);
	free(s->path);
	free(s);
}

/* ---- reads ---- */

/* A file journal reads several tables in one snapshot. The shared cache of
 * ":memory:" locks whole tables, so there every statement stands alone and
 * no table lock is held while waiting for another (no lock cycle). */
static int read_begin(struct store *s)
{
	int rc;

	if (s->mem)
		return 0;
	rc = step_retry(s->r[Q_BEGIN]);
	stmt_done(s->r[Q_BEGIN]);
	return rc == SQLITE_DONE ? 0 : -1;
}

static void read_end(struct store *s)
{
	if (s->mem || sqlite3_get_autocommit(s->rdb))
		return;
	step_retry(s->r[Q_END]);
	stmt_done(s->r[Q_END]);
}

static int add_text(cJSON *o, const char *name, sqlite3_stmt *st, int col)
{
	const char *v = (const char *)sqlite3_column_text(st, col);

	return (v ? cJSON_AddStringToObject(o, name, v) : cJSON_AddNullToObject(o, name)) ? 0 : -1;
}

static int add_time(cJSON *o, const char *name, double t)
{
	char buf[40];

	if (t == 0)
		return cJSON_AddNullToObject(o, name) ? 0 : -1;
	rd_time_format(t, buf, sizeof(buf));
	return cJSON_AddStringToObject(o, name, buf) ? 0 : -1;
}

static int add_time_col(cJSON *o, const char *name, sqlite3_stmt *st, int col)
{
	return add_time(o, name, sqlite3_column_double(st, col));
}

static int add_int_or_null(cJSON *o, const char *name, sqlite3_stmt *st, int col)
{
	if (sqlite3_column_type(st, col) == SQLITE_NULL)
		return cJSON_AddNullToObject(o, name) ? 0 : -1;
	return cJSON_AddNumberToObject(o, name, sqlite3_column_int(st, col)) ? 0 : -1;
}

/* The scalar fields of a job record from a JOB_COLS row. */
static cJSON *job_scalars(sqlite3_stmt *st)
{
	cJSON *o = cJSON_CreateObject();
	int bad = !o;

	if (bad)
		return NULL;
	bad |= add_text(o, "id", st, JC_ID);
	bad |= add_text(o, "playbook", st, JC_PLAYBOOK);
	bad |= add_text(o, "key", st, JC_KEY);
	bad |= add_text(o, "trigger", st, JC_TRIGGER);
	bad |= add_text(o, "reason", st, JC_REASON);
	bad |= !cJSON_AddBoolToObject(o, "dry_run", sqlite3_column_int(st, JC_DRY_RUN));
	bad |= add_text(o, "state", st, JC_STATE);
	bad |= add_text(o, "outcome", st, JC_OUTCOME);
	bad |= add_text(o, "error", st, JC_ERROR);
	bad |= !cJSON_AddNumberToObject(o, "attempts_made", sqlite3_column_int(st, JC_ATTEMPTS));
	bad |= !cJSON_AddNumberToObject(o, "max_attempts", sqlite3_column_int(st, JC_MAX_ATTEMPTS));
	bad |= !cJSON_AddNumberToObject(o, "notifications",
	                                sqlite3_column_int(st, JC_NOTIFICATIONS));
	bad |= add_time_col(o, "created_at", st, JC_CREATED);
	bad |= add_time_col(o, "updated_at", st, JC_UPDATED);
	bad |= add_time_col(o, "started_at", st, JC_STARTED);
	bad |= add_time_col(o, "ended_at", st, JC_ENDED);
	bad |= add_time_col(o, "next_attempt_at", st, JC_NEXT_RUN);
	bad |= add_text(o, "triggered_by", st, JC_TRIGGERED_BY);
	bad |= add_text(o, "cancelled_by", st, JC_CANCELLED_BY);
	if (sqlite3_column_type(st, JC_APPROVAL) != SQLITE_NULL) {
		cJSON *ap = cJSON_AddObjectToObject(o, "approval");
		bad |= !ap || add_text(ap, "state", st, JC_APPROVAL) ||
		       add_text(ap, "approved_by", st, JC_APPROVED_BY) ||
		       !cJSON_AddNumberToObject(ap, "plan_attempt", sqlite3_column_int(st, JC_PLAN_ATTEMPTS));
	} else {
		bad |= !cJSON_AddNullToObject(o, "approval");
	}
	if (bad) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

/* Move the members of the JSON object text into o; keys o already has
 * (ts, attempt, type, planned) win. */
static int merge_detail(cJSON *o, const char *text)
{
	cJSON *d = text ? cJSON_Parse(text) : NULL;
	int r = 0;

	if (!cJSON_IsObject(d))
		goto out;
	while (d->child) {
		cJSON *c = cJSON_DetachItemViaPointer(d, d->child);

		if (!c->string || cJSON_GetObjectItemCaseSensitive(o, c->string)) {
			cJSON_Delete(c);
			continue;
		}
		if (!cJSON_AddItemToObject(o, c->string, c)) {
			cJSON_Delete(c);
			r = -1;
			goto out;
		}
	}
out:
	cJSON_Delete(d);
	return r;
}

static int read_attempts(struct store *s, const char *id, cJSON *arr)
{
	sqlite3_stmt *st = s->r[Q_ATTEMPTS];
	int rc, bad = 0;

	bind_text(st, 1, id);
	while (!bad && (rc = step_retry(st)) == SQLITE_ROW) {
		cJSON *a = cJSON_CreateObject(), *v;

		if (!a || !cJSON_AddItemToArray(arr, a)) {
			cJSON_Delete(a);
			bad = 1;
			break;
		}
		bad |= !cJSON_AddNumberToObject(a, "n", sqlite3_column_int(st, 0));
		bad |= add_time_col(a, "started_at", st, 1);
		bad |= add_time_col(a, "ended_at", st, 2);
		bad |= add_text(a, "result", st, 3);
		bad |= add_text(a, "error", st, 4);
		if (sqlite3_column_type(st, 5) == SQLITE_NULL) {
			bad |= !cJSON_AddNullToObject(a, "verify");
		} else if ((v = cJSON_AddObjectToObject(a, "verify"))) {
			bad |= !cJSON_AddBoolToObject(v, "ok", sqlite3_column_int(st, 5));
			bad |= add_text(v, "reason", st, 6);
		} else {
			bad = 1;
		}
	}
	if (!bad && rc != SQLITE_DONE)
		bad = 1;
	stmt_done(st);
	return bad ? -1 : 0;
}

static int read_events(struct store *s, const char *id, cJSON *rec)
{
	sqlite3_stmt *st = s->r[Q_EVENTS];
	cJSON *actions, *logs, *events, *first = NULL;
	int rc, n = 0, bad = 0;

	actions = cJSON_AddArrayToObject(rec, "actions");
	logs = cJSON_AddArrayToObject(rec, "log");
	events = cJSON_AddArrayToObject(rec, "events");
	if (!actions || !logs || !events)
		return -1;
	/* One row more than the cap tells whether older ones were left out. */
	bind_text(st, 1, id);
	sqlite3_bind_int(st, 2, EVENTS_MAX + 1);
	while (!bad && (rc = step_retry(st)) == SQLITE_ROW) {
		const char *type = (const char *)sqlite3_column_text(st, 2);
		cJSON *e, *arr = events;

		if (type && strcmp(type, "action") == 0)
			arr = actions;
		else if (type && strcmp(type, "log") == 0)
			arr = logs;
		e = cJSON_CreateObject();
		if (!e || !cJSON_AddItemToArray(arr, e)) {
			cJSON_Delete(e);
			bad = 1;
			break;
		}
		if (n++ == 0)
			first = arr;
		bad |= add_time_col(e, "ts", st, 0);
		bad |= add_int_or_null(e, "attempt", st, 1);
		if (arr == actions)
			bad |= !cJSON_AddBoolToObject(e, "planned", sqlite3_column_int(st, 4));
		else if (arr == events)
			bad |= !cJSON_AddStringToObject(e, "type", type ? type : "");
		bad |= merge_detail(e, (const char *)sqlite3_column_text(st, 3));
	}
	if (!bad && rc != SQLITE_DONE)
		bad = 1;
	stmt_done(st);
	/* The oldest row is the extra one: it heads its array. */
	if (!bad && n > EVENTS_MAX) {
		cJSON_DeleteItemFromArray(first, 0);
		bad |= !cJSON_AddTrueToObject(rec, "events_truncated");
	}
	return bad ? -1 : 0;
}

static int read_escalations(struct store *s, const char *id, cJSON *rec)
{
	sqlite3_stmt *st = s->r[Q_ESCALATIONS];
	cJSON *arr = cJSON_AddArrayToObject(rec, "escalations");
	int rc, bad = !arr;

	if (bad)
		return -1;
	bind_text(st, 1, id);
	while (!bad && (rc = step_retry(st)) == SQLITE_ROW) {
		cJSON *e = cJSON_CreateObject();

		if (!e || !cJSON_AddItemToArray(arr, e)) {
			cJSON_Delete(e);
			bad = 1;
			break;
		}
		bad |= add_text(e, "sink", st, 0);
		bad |= add_text(e, "state", st, 1);
		bad |= !cJSON_AddNumberToObject(e, "attempts", sqlite3_column_int(st, 2));
		bad |= add_text(e, "last_answer", st, 3);
		bad |= add_time_col(e, "created_at", st, 4);
		bad |= add_time_col(e, "updated_at", st, 5);
		bad |= add_text(e, "id", st, 6);
		bad |= add_text(e, "kind", st, 7);
		bad |= add_text(e, "reason", st, 8);
		bad |= add_time_col(e, "delivered_at", st, 9);
		bad |= add_time_col(e, "next_attempt_at", st, 10);
	}
	if (!bad && rc != SQLITE_DONE)
		bad = 1;
	stmt_done(st);
	return bad ? -1 : 0;
}

/* What an action writes, to compare a plan with a run: "http METHOD URL"
 * or "exec [argv]". NULL for a read (mutates false) or an unknown kind. */
static char *action_sig(const cJSON *a)
{
	const cJSON *kind = cJSON_GetObjectItemCaseSensitive(a, "kind");
	const cJSON *mut = cJSON_GetObjectItemCaseSensitive(a, "mutates");
	char *argv, *sig = NULL;
	size_t n;

	if (cJSON_IsFalse(mut) || !cJSON_IsString(kind))
		return NULL;
	if (strcmp(kind->valuestring, "http") == 0) {
		const char *m = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "method"));
		const char *u = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "url"));
		n = strlen(m ? m : "") + strlen(u ? u : "") + 8;
		if ((sig = malloc(n)))
			snprintf(sig, n, "http %s %s", m ? m : "", u ? u : "");
	} else if (strcmp(kind->valuestring, "exec") == 0 &&
	           (argv = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(a, "argv")))) {
		n = strlen(argv) + 8;
		if ((sig = malloc(n)))
			snprintf(sig, n, "exec %s", argv);
		cJSON_free(argv);
	}
	return sig;
}

static int attempt_of(const cJSON *a)
{
	const cJSON *n = cJSON_GetObjectItemCaseSensitive(a, "attempt");
	return cJSON_IsNumber(n) ? n->valueint : 0;
}

/* An approval job's record shows its plan (the writes of the plan attempt)
 * and marks each write of the later run with in_plan; plan_diff lists what
 * the run did beyond the plan and what of the plan it did not do. */
static int add_plan(cJSON *rec)
{
	cJSON *ap = cJSON_GetObjectItemCaseSensitive(rec, "approval");
	cJSON *actions = cJSON_GetObjectItemCaseSensitive(rec, "actions"), *a;
	int plan_n = cJSON_IsObject(ap) ? cJSON_GetObjectItemCaseSensitive(ap, "plan_attempt")->valueint : 0;
	int run_n = 0, bad = 0;
	cJSON *plan, *diff, *unplanned, *not_run;
	char **sigs = NULL;
	size_t n_sigs = 0, cap = 0;
	unsigned char *used = NULL;

	if (plan_n <= 0)
		return 0;
	plan = cJSON_AddArrayToObject(rec, "plan");
	if (!plan)
		return -1;
	cJSON_ArrayForEach(a, actions) {
		char *sig;
		if (attempt_of(a) > run_n)
			run_n = attempt_of(a);
		if (attempt_of(a) != plan_n || !(sig = action_sig(a)))
			continue;
		if (n_sigs == cap) {
			char **nv = realloc(sigs, (cap = cap ? 2 * cap : 8) * sizeof(*nv));
			if (!nv) {
				free(sig);
				bad = 1;
				break;
			}
			sigs = nv;
		}
		sigs[n_sigs++] = sig;
		bad |= !cJSON_AddItemToArray(plan, cJSON_CreateString(sig));
	}
	if (bad || run_n <= plan_n || !(used = calloc(n_sigs + 1, 1)))
		goto out;
	/* The run: the newest attempt after the plan. */
	diff = cJSON_AddObjectToObject(rec, "plan_diff");
	unplanned = diff ? cJSON_AddArrayToObject(diff, "unplanned") : NULL;
	not_run = diff ? cJSON_AddArrayToObject(diff, "not_run") : NULL;
	if (!unplanned || !not_run) {
		bad = 1;
		goto out;
	}
	bad |= !cJSON_AddNumberToObject(diff, "run_attempt", run_n);
	cJSON_ArrayForEach(a, actions) {
		char *sig;
		size_t k;
		if (attempt_of(a) != run_n || !(sig = action_sig(a)))
			continue;
		for (k = 0; k < n_sigs && (used[k] || strcmp(sigs[k], sig) != 0); k++)
			;
		if (k < n_sigs)
			used[k] = 1;
		else
			bad |= !cJSON_AddItemToArray(unplanned, cJSON_CreateString(sig));
		bad |= !cJSON_AddBoolToObject(a, "in_plan", k < n_sigs);
		free(sig);
	}
	for (size_t k = 0; k < n_sigs; k++)
		if (!used[k])
			bad |= !cJSON_AddItemToArray(not_run, cJSON_CreateString(sigs[k]));
	bad |= !cJSON_AddBoolToObject(diff, "matches",
	                              !cJSON_GetArraySize(unplanned) && !cJSON_GetArraySize(not_run));
out:
	for (size_t k = 0; k < n_sigs; k++)
		free(sigs[k]);
	free(sigs);
	free(used);
	return bad ? -1 : 0;
}

enum rd_status store_job_json(struct store *s, const char *id, cJSON **out)
{
	sqlite3_stmt *st;
	cJSON *rec = NULL, *alert, *arr;
	enum rd_status r = RD_ERR;
	int rc;

	*out = NULL;
	if (!s || !id)
		return RD_ERR;
	pthread_mutex_lock(&s->rmu);
	if (read_begin(s) < 0)
		goto out;
	st = s->r[Q_JOB];
	bind_text(st, 1, id);
	rc = step_retry(st);
	if (rc == SQLITE_ROW) {
		const char *aj = (const char *)sqlite3_column_text(st, JC_ALERT);

		rec = job_scalars(st);
		alert = aj ? cJSON_Parse(aj) : NULL;
		if (rec && !alert)
			alert = cJSON_CreateNull();
		if (!rec || !alert || !cJSON_AddItemToObject(rec, "alert", alert)) {
			cJSON_Delete(alert);
			r = RD_NOMEM;
		}
	}
	stmt_done(st);
	if (rc == SQLITE_DONE)
		r = RD_OK; /* no such job */
	if (rc != SQLITE_ROW || r == RD_NOMEM)
		goto out;
	arr = cJSON_AddArrayToObject(rec, "attempts");
	if (!arr || read_attempts(s, id, arr) < 0 || read_events(s, id, rec) < 0 ||
	    read_escalations(s, id, rec) < 0 || add_plan(rec) < 0)
		goto out;
	*out = rec;
	rec = NULL;
	r = RD_OK;
out:
	read_end(s);
	pthread_mutex_unlock(&s->rmu);
	cJSON_Delete(rec);
	return r;
}

enum rd_status store_jobs_json(struct store *s, const char *state, const char *playbook, int limit,
                               cJSON **out)
{
	sqlite3_stmt *st;
	cJSON *arr = NULL;
	enum rd_status r = RD_ERR;
	int rc;

	*out = NULL;
	if (!s)
		return RD_ERR;
	if (limit < 1)
		limit = 1;
	if (limit > LIST_MAX)
		limit = LIST_MAX;
	if (!(arr = cJSON_CreateArray()))
		return RD_NOMEM;
	pthread_mutex_lock(&s->rmu);
	st = s->r[state ? (playbook ? Q_LIST_BOTH : Q_LIST_STATE)
	                : (playbook ? Q_LIST_PLAYBOOK : Q_LIST)];
	bind_text(st, 1, state);
	bind_text(st, 2, playbook);
	sqlite3_bind_int(st, 3, limit);
	while ((rc = step_retry(st)) == SQLITE_ROW) {
		cJSON *j = job_scalars(st);

		if (!j || !cJSON_AddItemToArray(arr, j)) {
			cJSON_Delete(j);
			r = RD_NOMEM;
			break;
		}
	}
	if (rc == SQLITE_DONE) {
		*out = arr;
		arr = NULL;
		r = RD_OK;
	}
	stmt_done(st);
	pthread_mutex_unlock(&s->rmu);
	cJSON_Delete(arr);
	return r;
}

/* Rows are copied out and the callbacks run after the read connection is
 * released, so cb may commit or read the journal itself. */
enum rd_status store_scan_jobs(struct store *s, double since,
                               void (*cb)(const struct job_row *j, void *arg), void *arg)
{
	sqlite3_stmt *st;
	struct job_row *rows = NULL, view;
	size_t n = 0, cap = 0;
	enum rd_status r = RD_ERR;
	int rc;

	if (!s || !cb)
		return RD_ERR;
	pthread_mutex_lock(&s->rmu);
	st = s->r[Q_SCAN];
	sqlite3_bind_double(st, 1, since);
	while ((rc = step_retry(st)) == SQLITE_ROW) {
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			struct job_row *nr = realloc(rows, ncap * sizeof(*rows));

			if (!nr)
				break;
			rows = nr;
			cap = ncap;
		}
		job_from_stmt(st, &view);
		view.stalls = sqlite3_column_int(st, JC_PLAN_ATTEMPTS + 1);
		if (job_copy(&rows[n], &view) < 0)
			break;
		n++;
	}
	stmt_done(st);
	pthread_mutex_unlock(&s->rmu);
	if (rc == SQLITE_ROW) {
		r = RD_NOMEM;
		goto out;
	}
	if (rc != SQLITE_DONE)
		goto out;
	for (size_t i = 0; i < n; i++)
		cb(&rows[i], arg);
	r = RD_OK;
out:
	for (size_t i = 0; i < n; i++)
		job_strings_free(&rows[i]);
	free(rows);
	return r;
}

void store_set_group_max(struct store *s, unsigned n)
{
	pthread_mutex_lock(&s->mu);
	s->group_max = n;
	pthread_mutex_unlock(&s->mu);
}

/* Read escalation rows matching sql (one optional text parameter) and call
 * cb for each after the read connection is released. */
static enum rd_status scan_esc(struct store *s, const char *sql, const char *param,
                               void (*cb)(const struct escalation_row *e, void *arg), void *arg)
{
	sqlite3_stmt *st = NULL;
	struct escalation_row *rows = NULL;
	size_t n = 0, cap = 0;
	enum rd_status r = RD_ERR;
	int rc;

	if (!s || !cb)
		return RD_ERR;
	pthread_mutex_lock(&s->rmu);
	if (sqlite3_prepare_v2(s->rdb, sql, -1, &st, NULL) != SQLITE_OK) {
		pthread_mutex_unlock(&s->rmu);
		return RD_ERR;
	}
	if (param)
		bind_text(st, 1, param);
	while ((rc = step_retry(st)) == SQLITE_ROW) {
		struct escalation_row v = {0};
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 32;
			struct escalation_row *nr = realloc(rows, ncap * sizeof(*rows));
			if (!nr)
				break;
			rows = nr;
			cap = ncap;
		}
		v.id = (const char *)sqlite3_column_text(st, 0);
		v.job_id = (const char *)sqlite3_column_text(st, 1);
		v.incident_key = (const char *)sqlite3_column_text(st, 2);
		v.sink = (const char *)sqlite3_column_text(st, 3);
		v.kind = (const char *)sqlite3_column_text(st, 4);
		v.reason = (const char *)sqlite3_column_text(st, 5);
		v.state = (const char *)sqlite3_column_text(st, 6);
		v.attempts = sqlite3_column_int(st, 7);
		v.last_answer = (const char *)sqlite3_column_text(st, 8);
		v.created_at = sqlite3_column_double(st, 9);
		v.updated_at = sqlite3_column_double(st, 10);
		v.next_attempt_at = sqlite3_column_double(st, 11);
		v.delivered_at = sqlite3_column_double(st, 12);
		v.payload = (const char *)sqlite3_column_text(st, 13);
		if (esc_copy(&rows[n], &v) < 0)
			break;
		n++;
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&s->rmu);
	if (rc == SQLITE_ROW) {
		r = RD_NOMEM;
		goto out;
	}
	if (rc != SQLITE_DONE)
		goto out;
	for (size_t i = 0; i < n; i++)
		cb(&rows[i], arg);
	r = RD_OK;
out:
	for (size_t i = 0; i < n; i++)
		esc_strings_free(&rows[i]);
	free(rows);
	return r;
}

#define ESC_COLS                                                                              \
	"id, job_id, incident_key, sink, kind, reason, state, attempts, last_answer, created_at, " \
	"updated_at, next_attempt_at, delivered_at, payload"

enum rd_status store_scan_outbox(struct store *s,
                                 void (*cb)(const struct escalation_row *e, void *arg), void *arg)
{
	return scan_esc(s,
	                "SELECT " ESC_COLS " FROM escalations WHERE state IN ('pending','retrying') "
	                "ORDER BY seq",
	                NULL, cb, arg);
}

enum rd_status store_scan_open_incidents(struct store *s,
                                         void (*cb)(const struct escalation_row *e, void *arg),
                                         void *arg)
{
	/* A trigger that went (or is going) out, with no resolve after it. */
	return scan_esc(s,
	                "SELECT " ESC_COLS " FROM escalations t WHERE t.kind = 'trigger' "
	                "AND t.state IN ('pending','retrying','delivered') AND NOT EXISTS ("
	                " SELECT 1 FROM escalations r WHERE r.kind = 'resolve' "
	                " AND r.incident_key = t.incident_key AND r.sink = t.sink AND r.seq > t.seq) "
	                "ORDER BY t.seq",
	                NULL, cb, arg);
}

enum rd_status store_scan_pauses(struct store *s, void (*cb)(const struct pause_row *p, void *arg),
                                 void *arg)
{
	sqlite3_stmt *st;
	enum rd_status r = RD_OK;
	int rc;

	pthread_mutex_lock(&s->rmu);
	if (read_begin(s) < 0) {
		r = RD_ERR;
		goto out;
	}
	st = s->r[Q_PAUSES];
	while ((rc = step_retry(st)) == SQLITE_ROW) {
		struct pause_row p = {
			.scope = (const char *)sqlite3_column_text(st, 0),
			.principal = (const char *)sqlite3_column_text(st, 1),
			.reason = (const char *)sqlite3_column_text(st, 2),
			.since = sqlite3_column_double(st, 3),
			.until = sqlite3_column_double(st, 4),
		};
		if (p.scope)
			cb(&p, arg);
	}
	if (rc != SQLITE_DONE)
		r = RD_ERR;
	stmt_done(st);
out:
	read_end(s);
	pthread_mutex_unlock(&s->rmu);
	return r;
}

enum rd_status store_audit_json(struct store *s, const struct audit_query *q, cJSON **out)
{
	sqlite3_stmt *st;
	cJSON *o = cJSON_CreateObject(), *arr = o ? cJSON_AddArrayToObject(o, "entries") : NULL;
	enum rd_status r = RD_ERR;
	long long last = 0;
	int rc, n = 0, more = 0, bad = !arr, limit = q->limit > 0 && q->limit <= LIST_MAX ? q->limit : 100;

	*out = NULL;
	if (bad) {
		cJSON_Delete(o);
		return RD_NOMEM;
	}
	pthread_mutex_lock(&s->rmu);
	if (read_begin(s) < 0)
		goto out;
	st = s->r[Q_AUDIT];
	bind_text(st, 1, q->principal);
	bind_text(st, 2, q->action);
	bind_time(st, 3, q->since);
	bind_time(st, 4, q->until);
	if (q->before > 0)
		sqlite3_bind_int64(st, 5, q->before);
	else
		sqlite3_bind_null(st, 5);
	/* One row more than the page tells whether there is a next one. */
	sqlite3_bind_int(st, 6, limit + 1);
	while (!bad && (rc = step_retry(st)) == SQLITE_ROW) {
		cJSON *e;
		if (n == limit) {
			more = 1;
			rc = SQLITE_DONE;
			break;
		}
		e = cJSON_CreateObject();
		if (!e || !cJSON_AddItemToArray(arr, e)) {
			cJSON_Delete(e);
			bad = 1;
			break;
		}
		last = sqlite3_column_int64(st, 0);
		n++;
		bad |= !cJSON_AddNumberToObject(e, "id", (double)last);
		bad |= add_time_col(e, "ts", st, 1);
		bad |= add_text(e, "principal", st, 2);
		bad |= add_text(e, "role", st, 3);
		bad |= add_text(e, "address", st, 4);
		bad |= add_text(e, "action", st, 5);
		bad |= add_text(e, "job_id", st, 6);
		bad |= add_text(e, "playbook", st, 7);
		bad |= add_text(e, "reason", st, 8);
		if (sqlite3_column_type(st, 9) == SQLITE_NULL) {
			bad |= !cJSON_AddNullToObject(e, "detail");
		} else {
			cJSON *d = cJSON_Parse((const char *)sqlite3_column_text(st, 9));
			bad |= !d || !cJSON_AddItemToObject(e, "detail", d);
		}
	}
	if (!bad && rc != SQLITE_DONE)
		bad = 1;
	stmt_done(st);
	if (!bad) {
		char cur[24];
		snprintf(cur, sizeof(cur), "%lld", last);
		bad |= !(more ? cJSON_AddStringToObject(o, "next", cur) : cJSON_AddNullToObject(o, "next"));
	}
	if (!bad) {
		*out = o;
		o = NULL;
		r = RD_OK;
	}
out:
	read_end(s);
	pthread_mutex_unlock(&s->rmu);
	cJSON_Delete(o);
	return r;
}

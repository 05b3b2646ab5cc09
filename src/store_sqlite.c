/* The SQLite backend of the journal (the embedded default): WAL mode and
 * synchronous=FULL, a write connection for the writer thread and a read
 * connection; in WAL mode reads see the last committed state and never
 * block the writer. ":memory:" is one shared in-memory database. */
#include "store_impl.h"

#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "recoveryd/common.h"

/* Same bound as busy_timeout, for the shared-cache table locks of
 * ":memory:" that busy_timeout does not cover (SQLITE_LOCKED). */
#define LOCK_WAIT_SECS 5.0

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
	" approved_by TEXT, plan_attempts INTEGER NOT NULL DEFAULT 0,"
	" owner TEXT, lease_until REAL, lease_token INTEGER NOT NULL DEFAULT 0);"
	"CREATE INDEX IF NOT EXISTS jobs_key ON jobs(key);"
	"CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner);"
	"CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);"
	"CREATE INDEX IF NOT EXISTS jobs_playbook ON jobs(playbook);"
	"CREATE INDEX IF NOT EXISTS jobs_ended ON jobs(ended_at);"
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
	" payload TEXT, owner TEXT, lease_until REAL);"
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

/* Version 2 journals gain the leases (nobody holds their jobs). */
static const char migrate_v3_sql[] =
	"ALTER TABLE jobs ADD COLUMN owner TEXT;"
	"ALTER TABLE jobs ADD COLUMN lease_until REAL;"
	"ALTER TABLE jobs ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE escalations ADD COLUMN owner TEXT;"
	"ALTER TABLE escalations ADD COLUMN lease_until REAL;";

/* Where a job may be claimed at time ?1 (store.h, store_batch_claim_jobs). */
#define CLAIMABLE_JOB                                                                          \
	"((state IN ('queued','retry_wait','running','awaiting_approval') "                      \
	"AND (owner IS NULL OR coalesce(lease_until, 0) < ?1) "                                 \
	"AND (state <> 'retry_wait' OR coalesce(next_run_at, 0) <= ?1 OR owner IS NOT NULL)) "  \
	"OR (owner IS NOT NULL AND coalesce(lease_until, 0) < ?1 AND state IN "                 \
	"('succeeded','failed','cancelled','budget_exhausted','paused')))"

/* Retention: a job whose escalations are all sent, and that opened no
 * incident still open (a trigger with no resolve after it), may go. */
#define PRUNABLE_JOB                                                                           \
	"NOT EXISTS (SELECT 1 FROM escalations x WHERE x.job_id = jobs.id AND (x.state IN "     \
	"('pending','retrying') OR (x.kind = 'trigger' AND x.state = 'delivered' AND NOT EXISTS "\
	"(SELECT 1 FROM escalations r WHERE r.kind = 'resolve' AND r.incident_key = "            \
	"x.incident_key AND r.sink = x.sink AND r.seq > x.seq))))"

static const char *const wsql[W__COUNT] = {
	[W_BEGIN] = "BEGIN IMMEDIATE",
	[W_COMMIT] = "COMMIT",
	[W_ROLLBACK] = "ROLLBACK",
	[W_SAVEPOINT] = "SAVEPOINT batch",
	[W_RELEASE] = "RELEASE batch",
	[W_ROLLBACK_TO] = "ROLLBACK TO batch",
	[W_INSERT_JOB] = "INSERT INTO jobs (" STORE_JOB_COLS ") VALUES "
	                 "(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,"
	                 "?21,?22,?23,?24,?25,?26)",
	/* Fenced by the token ?26 (0: unfenced). The right-hand sides see the
	 * row as it was: the same owner keeps the later expiry, no owner
	 * releases. */
	[W_UPDATE_JOB] = "UPDATE jobs SET state=?8, outcome=?9, error=?10, attempts=?11, "
	                 "max_attempts=?12, notifications=max(notifications, ?13), created_at=?14, updated_at=?15, "
	                 "started_at=?16, ended_at=?17, next_run_at=?18, cancelled_by=coalesce(?20, cancelled_by), "
	                 "approval=?21, approved_by=coalesce(?22, approved_by), plan_attempts=?23, "
	                 "lease_until=CASE WHEN ?24 IS NULL THEN NULL WHEN owner IS ?24 THEN "
	                 "max(coalesce(lease_until, ?25), coalesce(?25, lease_until)) ELSE ?25 END, "
	                 "owner=?24 WHERE id=?1 AND (?26 = 0 OR lease_token = ?26)",
	[W_ATTEMPT] = "INSERT INTO attempts (job_id, n, started_at, ended_at, result, error, "
	              "verify_ok, verify_reason) VALUES (?1,?2,?3,?4,?5,?6,?7,?8) "
	              "ON CONFLICT (job_id, n) DO UPDATE SET started_at=excluded.started_at, "
	              "ended_at=excluded.ended_at, result=excluded.result, error=excluded.error, "
	              "verify_ok=excluded.verify_ok, verify_reason=excluded.verify_reason",
	[W_EVENT] = "INSERT INTO events (job_id, ts, attempt, type, detail, planned) "
	            "VALUES (?1,?2,?3,?4,?5,?6)",
	[W_ESC_INSERT] = "INSERT INTO escalations (" STORE_ESC_COLS ") VALUES "
	                 "(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)",
	/* Fenced by the owner ?15 (NULL: a row nobody holds); releases. */
	[W_ESC_UPDATE] = "UPDATE escalations SET state=?7, attempts=?8, last_answer=?9, updated_at=?11, "
	                 "next_attempt_at=?12, delivered_at=?13, "
	                 "owner=CASE WHEN ?16 IS NULL THEN NULL ELSE owner END, lease_until=?16 "
	                 "WHERE id=?1 AND owner IS ?15",
	[W_AUDIT] = "INSERT INTO audit (ts, principal, role, address, action, job_id, playbook, "
	            "reason, detail) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
	[W_PAUSE] = "INSERT OR REPLACE INTO pauses (scope, principal, reason, since, until) "
	            "VALUES (?1,?2,?3,?4,?5)",
	[W_UNPAUSE] = "DELETE FROM pauses WHERE scope = ?1",
	[W_JOB_LEASE] = "SELECT owner, lease_token FROM jobs WHERE id = ?1",
	/* One writer at a time: what is read here is still so at the update. */
	[W_CLAIM_JOBS] = "SELECT " STORE_JOB_COLS ", (SELECT count(*) FROM events WHERE "
	                 "events.job_id = jobs.id AND events.type = 'watchdog') FROM jobs WHERE " CLAIMABLE_JOB
	                 " ORDER BY seq LIMIT ?2",
	[W_CLAIM_JOB] = "UPDATE jobs SET owner=?2, lease_until=?3, lease_token=?4 "
	                "WHERE id=?1 AND lease_token=?5",
	[W_CLAIM_ESCS] = "SELECT " STORE_ESC_COLS " FROM escalations WHERE state IN ('pending','retrying') "
	                 "AND (next_attempt_at IS NULL OR next_attempt_at <= ?1) "
	                 "AND (owner IS NULL OR coalesce(lease_until, 0) < ?1) ORDER BY seq LIMIT ?2",
	[W_CLAIM_ESC] = "UPDATE escalations SET owner=?2, lease_until=?3 WHERE id=?1",
	[W_RENEW_JOBS] = "UPDATE jobs SET lease_until=max(coalesce(lease_until, ?2), ?2) WHERE owner = ?1 "
	                 "AND state IN ('queued','running','retry_wait','awaiting_approval') "
	                 "RETURNING id, lease_token",
	[W_RENEW_ESCS] = "UPDATE escalations SET lease_until=max(coalesce(lease_until, ?2), ?2) "
	                 "WHERE owner = ?1 AND state IN ('pending','retrying')",
	[W_ESC_OWNER] = "SELECT owner FROM escalations WHERE id = ?1",
	[W_EXPIRE_JOBS] = "UPDATE jobs SET lease_until = CASE WHEN state IN ('succeeded','failed','cancelled','budget_exhausted','paused') THEN 0 END, "
	                  "owner = CASE WHEN state IN ('succeeded','failed','cancelled','budget_exhausted','paused') THEN owner END WHERE owner = ?1",
	[W_RELEASE_JOB] = "UPDATE jobs SET owner = NULL, lease_until = NULL WHERE id = ?1 AND owner = ?2",
	[W_EXPIRE_ESCS] = "UPDATE escalations SET owner = NULL, lease_until = NULL WHERE owner = ?1 "
	                  "AND state IN ('pending','retrying')",
	[W_ADMIT_LOCK] = "SELECT ?1", /* one writer at a time already */
	[W_ACTIVE_KEY] = "SELECT " STORE_JOB_COLS " FROM jobs WHERE key = ?1 AND state IN "
	                 "('queued','running','retry_wait','awaiting_approval') ORDER BY seq",
	[W_LAST_ENDED] = "SELECT " STORE_JOB_COLS " FROM jobs WHERE key = ?1 AND ended_at IS NOT NULL "
	                 "AND state <> 'paused' ORDER BY ended_at DESC LIMIT 1",
	[W_STARTS] = "SELECT " STORE_JOB_COLS " FROM jobs WHERE playbook = ?1 AND created_at > ?2 "
	             "AND state NOT IN ('paused','budget_exhausted') ORDER BY created_at",
	[W_PAUSES] = "SELECT scope, principal, reason, since, until FROM pauses",
	[W_ADMIT_FACTS] = "SELECT * FROM (SELECT " STORE_JOB_COLS ", 'a' FROM jobs WHERE key IN (?1, ?2) "
	                  "AND state IN ('queued','running','retry_wait','awaiting_approval')) UNION ALL "
	                  "SELECT * FROM (SELECT " STORE_JOB_COLS ", 'e' FROM jobs WHERE key = ?1 AND "
	                  "ended_at IS NOT NULL AND state <> 'paused' ORDER BY ended_at DESC LIMIT 1) UNION ALL "
	                  "SELECT * FROM (SELECT " STORE_JOB_COLS ", 'k' FROM jobs WHERE key = ?1 LIMIT 1)",
	[W_NOTIFIED] = "UPDATE jobs SET notifications = notifications + 1 WHERE id = ?1",
	[W_CANCEL_REQ] = "UPDATE jobs SET cancelled_by = coalesce(cancelled_by, ?2) WHERE id = ?1 "
	                 "AND state IN ('queued','running','retry_wait','awaiting_approval')",
	[W_CANCEL_REQS] = "SELECT id, cancelled_by, approved_by FROM jobs WHERE owner = ?1 AND "
	                  "((cancelled_by IS NOT NULL AND state IN ('queued','running','retry_wait',"
	                  "'awaiting_approval')) OR (approved_by IS NOT NULL AND state = 'awaiting_approval'))",
	[W_NOTIFY] = "SELECT 1", /* one process: nobody else to wake */
	/* No pipeline here (no send): for the table's sake. */
	[W_SAVEPOINT_ALL] = "SAVEPOINT round",
	[W_ROLLBACK_TO_ALL] = "ROLLBACK TO round",
	[W_FENCE_ROW] = "SELECT 1 FROM jobs WHERE id = ?1 AND lease_token = ?2",
	[W_PRUNE_JOBS] = "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE ended_at < ?1 AND "
	                 PRUNABLE_JOB " ORDER BY ended_at LIMIT ?2) RETURNING 1",
	[W_PRUNE_AUDIT] = "DELETE FROM audit WHERE seq IN (SELECT seq FROM audit WHERE ts < ?1 "
	                  "ORDER BY ts LIMIT ?2) RETURNING 1",
	[W_APPROVE_REQ] = "UPDATE jobs SET approved_by = coalesce(approved_by, ?2) WHERE id = ?1 "
	                  "AND state = 'awaiting_approval'",
};

/* GET /api/v1/jobs (store_jobs_page): a job, its seq and its alertname. */
#define LIST_ALERTNAME "json_extract(alert_json, '$.labels.alertname')"
#define LIST_COLS STORE_JOB_COLS ", seq, " LIST_ALERTNAME
#define LIST_PAGE                                                                              \
	"seq < coalesce(?4, 9223372036854775807) AND (?5 IS NULL OR created_at >= ?5) "        \
	"AND (?6 IS NULL OR created_at <= ?6) AND (?7 IS NULL OR " LIST_ALERTNAME " = ?7) "   \
	"ORDER BY seq DESC LIMIT ?3"

static const char *const rsql[Q__COUNT] = {
	[Q_JOB] = "SELECT " STORE_JOB_COLS " FROM jobs WHERE id = ?1",
	[Q_ATTEMPTS] = "SELECT n, started_at, ended_at, result, error, verify_ok, verify_reason "
	               "FROM attempts WHERE job_id = ?1 ORDER BY n",
	/* Newest ?2 rows, returned oldest first. */
	[Q_EVENTS] = "SELECT ts, attempt, type, detail, planned FROM "
	             "(SELECT seq, ts, attempt, type, detail, planned FROM events "
	             " WHERE job_id = ?1 ORDER BY seq DESC LIMIT ?2) ORDER BY seq",
	[Q_ESCALATIONS] = "SELECT sink, state, attempts, last_answer, created_at, updated_at, "
	                  "id, kind, reason, delivered_at, next_attempt_at "
	                  "FROM escalations WHERE job_id = ?1 ORDER BY seq",
	[Q_SCAN] = "SELECT " STORE_JOB_COLS ", (SELECT count(*) FROM events WHERE events.job_id = jobs.id "
	           "AND events.type = 'watchdog') FROM jobs WHERE state IN ('queued','running','retry_wait',"
	           "'awaiting_approval') OR started_at >= ?1 OR ended_at >= ?1 ORDER BY seq",
	/* One statement per filter combination so each can use its index;
	 * the cursor bounds the seq range, the rest filter the rows. */
	[Q_LIST] = "SELECT " LIST_COLS " FROM jobs WHERE " LIST_PAGE,
	[Q_LIST_STATE] = "SELECT " LIST_COLS " FROM jobs WHERE state = ?1 AND " LIST_PAGE,
	[Q_LIST_PLAYBOOK] = "SELECT " LIST_COLS " FROM jobs WHERE playbook = ?2 AND " LIST_PAGE,
	[Q_LIST_BOTH] = "SELECT " LIST_COLS " FROM jobs WHERE state = ?1 AND playbook = ?2 AND " LIST_PAGE,
	[Q_PAUSES] = "SELECT scope, principal, reason, since, until FROM pauses ORDER BY scope",
	/* GET /api/v1/playbooks: what admission counts (W_STARTS, W_LAST_ENDED). */
	[Q_PB_STARTS] = "SELECT count(*) FROM jobs WHERE playbook = ?1 AND created_at > ?2 "
	                "AND state NOT IN ('paused','budget_exhausted')",
	[Q_PB_LAST] = "SELECT id, state, outcome, created_at, ended_at FROM jobs WHERE playbook = ?1 "
	              "ORDER BY seq DESC LIMIT 1",
	[Q_PB_COOLING] = "SELECT key, max(ended_at) FROM jobs WHERE playbook = ?1 AND ended_at > ?2 "
	                 "AND state <> 'paused' AND trigger = 'webhook' GROUP BY key "
	                 "ORDER BY 2 DESC LIMIT ?3",
	/* NULL parameters are no filter. */
	[Q_AUDIT] = "SELECT seq, ts, principal, role, address, action, job_id, playbook, reason, "
	            "detail FROM audit WHERE (?1 IS NULL OR principal = ?1) "
	            "AND (?2 IS NULL OR action = ?2) AND (?3 IS NULL OR ts >= ?3) "
	            "AND (?4 IS NULL OR ts <= ?4) AND (?5 IS NULL OR seq < ?5) "
	            "ORDER BY seq DESC LIMIT ?6",
	[Q_OUTBOX] = "SELECT " STORE_ESC_COLS " FROM escalations WHERE state IN ('pending','retrying') "
	             "ORDER BY seq",
	/* A trigger that went (or is going) out, with no resolve after it. */
	[Q_OPEN_INCIDENTS] = "SELECT " STORE_ESC_COLS " FROM escalations t WHERE t.kind = 'trigger' "
	                     "AND t.state IN ('pending','retrying','delivered') AND NOT EXISTS ("
	                     " SELECT 1 FROM escalations r WHERE r.kind = 'resolve' "
	                     " AND r.incident_key = t.incident_key AND r.sink = t.sink AND r.seq > t.seq) "
	                     "ORDER BY t.seq",
	[Q_OPEN_INCIDENT_KEY] = "SELECT " STORE_ESC_COLS " FROM escalations t WHERE t.incident_key = ?1 "
	                        "AND t.kind = 'trigger' AND t.state IN ('pending','retrying','delivered') "
	                        "AND NOT EXISTS (SELECT 1 FROM escalations r WHERE r.kind = 'resolve' "
	                        " AND r.incident_key = t.incident_key AND r.sink = t.sink AND r.seq > t.seq) "
	                        "ORDER BY t.seq",
};

struct sq {
	int mem;                       /* ":memory:" */
	sqlite3 *wdb, *rdb;
	sqlite3_stmt *w[W__COUNT];
	sqlite3_stmt *r[Q__COUNT];
	sqlite3_stmt *rbegin, *rend;
};

static struct sq *sq_of(struct store *s)
{
	return s->db;
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

static void stmt_done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

static void bind_all(sqlite3_stmt *st, const struct sval *v, int n)
{
	for (int i = 0; i < n; i++) {
		switch (v[i].t) {
		case SV_NULL:
			sqlite3_bind_null(st, i + 1);
			break;
		case SV_TEXT:
			sqlite3_bind_text(st, i + 1, v[i].s, -1, SQLITE_STATIC);
			break;
		case SV_REAL:
			sqlite3_bind_double(st, i + 1, v[i].d);
			break;
		case SV_INT:
			sqlite3_bind_int64(st, i + 1, v[i].i);
			break;
		}
	}
}

/* A writer statement, each row of it handed to fn (NULL: rows are
 * ignored; a statement that changes rows is stepped to its end anyway). */
static int sq_wrun(struct store *s, enum wstmt id, const struct sval *v, int n, long long *changes,
                   srow_fn fn, void *arg, char *err, size_t errlen)
{
	struct sq *q = sq_of(s);
	sqlite3_stmt *st = q->w[id];
	int rc;

	bind_all(st, v, n);
	rc = step_retry(st);
	while (rc == SQLITE_ROW) {
		if (fn && fn((const struct srow *)st, arg) < 0) {
			if (err)
				snprintf(err, errlen, "out of memory");
			stmt_done(st);
			return -1;
		}
		rc = sqlite3_step(st);
	}
	if (rc == SQLITE_DONE) {
		rc = SQLITE_OK;
		if (changes)
			*changes = sqlite3_changes(q->wdb);
	} else if (err) {
		snprintf(err, errlen, "%s", sqlite3_errmsg(q->wdb));
	}
	stmt_done(st);
	return rc == SQLITE_OK ? 0 : -1;
}

static int sq_exec(struct store *s, enum wstmt id, const struct sval *v, int n, long long *changes,
                   char *err, size_t errlen)
{
	return sq_wrun(s, id, v, n, changes, NULL, NULL, err, errlen);
}

static int sq_wquery(struct store *s, enum wstmt id, const struct sval *v, int n, srow_fn fn,
                     void *arg, char *err, size_t errlen)
{
	return sq_wrun(s, id, v, n, NULL, fn, arg, err, errlen);
}

/* Some errors (I/O, a full disk) make SQLite roll back the whole
 * transaction: then nothing of this round survives. */
static int sq_txn_lost(struct store *s)
{
	return sqlite3_get_autocommit(sq_of(s)->wdb);
}

/* A file journal reads several tables in one snapshot. The shared cache of
 * ":memory:" locks whole tables, so there every statement stands alone and
 * no table lock is held while waiting for another (no lock cycle). */
static int sq_read_begin(struct store *s)
{
	struct sq *q = sq_of(s);
	int rc;

	if (q->mem)
		return 0;
	rc = step_retry(q->rbegin);
	stmt_done(q->rbegin);
	return rc == SQLITE_DONE ? 0 : -1;
}

static void sq_read_end(struct store *s)
{
	struct sq *q = sq_of(s);

	if (q->mem || sqlite3_get_autocommit(q->rdb))
		return;
	step_retry(q->rend);
	stmt_done(q->rend);
}

static int sq_query(struct store *s, enum rstmt id, const struct sval *v, int n, srow_fn fn, void *arg)
{
	sqlite3_stmt *st = sq_of(s)->r[id];
	int rc, stop = 0;

	bind_all(st, v, n);
	while ((rc = step_retry(st)) == SQLITE_ROW)
		if (fn((const struct srow *)st, arg) < 0) {
			stop = 1;
			break;
		}
	stmt_done(st);
	return !stop && rc == SQLITE_DONE ? 0 : -1;
}

static const char *sq_text(const struct srow *r, int col)
{
	return (const char *)sqlite3_column_text((sqlite3_stmt *)r, col);
}

static double sq_real(const struct srow *r, int col)
{
	return sqlite3_column_double((sqlite3_stmt *)r, col);
}

static long long sq_integer(const struct srow *r, int col)
{
	return sqlite3_column_int64((sqlite3_stmt *)r, col);
}

static int sq_is_null(const struct srow *r, int col)
{
	return sqlite3_column_type((sqlite3_stmt *)r, col) == SQLITE_NULL;
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
static int setup_writer(struct store *s, struct sq *q, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	const char *what = NULL;
	int rc, version;
	char pragma[40];

	rc = sqlite3_prepare_v2(q->wdb, "PRAGMA journal_mode=WAL", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = step_retry(st);
	if (rc != SQLITE_ROW)
		goto sqlerr;
	if (!q->mem && strcasecmp((const char *)sqlite3_column_text(st, 0), "wal") != 0) {
		snprintf(err, errlen, "journal %s: cannot enable WAL mode (journal_mode is %s)",
		         s->path, (const char *)sqlite3_column_text(st, 0));
		rc = SQLITE_ERROR;
		goto out;
	}
	sqlite3_finalize(st);
	st = NULL;
	rc = sqlite3_exec(q->wdb, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		goto sqlerr;

	rc = sqlite3_prepare_v2(q->wdb, "PRAGMA user_version", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = step_retry(st);
	if (rc != SQLITE_ROW)
		goto sqlerr;
	version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	st = NULL;
	if (version > STORE_SCHEMA_VERSION) {
		snprintf(err, errlen, "journal %s: schema version %d is newer than supported %d",
		         s->path, version, STORE_SCHEMA_VERSION);
		rc = SQLITE_ERROR;
		goto out;
	}
	what = "BEGIN IMMEDIATE";
	rc = sqlite3_exec(q->wdb, what, NULL, NULL, NULL);
	if (rc == SQLITE_OK && version == 1)
		rc = sqlite3_exec(q->wdb, migrate_v2_sql, NULL, NULL, NULL);
	if (rc == SQLITE_OK && (version == 1 || version == 2))
		rc = sqlite3_exec(q->wdb, migrate_v3_sql, NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(q->wdb, schema_sql, NULL, NULL, NULL);
	snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", STORE_SCHEMA_VERSION);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(q->wdb, pragma, NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(q->wdb, "COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "journal %s: %s", s->path, sqlite3_errmsg(q->wdb));
		if (!sqlite3_get_autocommit(q->wdb))
			sqlite3_exec(q->wdb, "ROLLBACK", NULL, NULL, NULL);
		goto out;
	}
	for (int i = 0; i < W__COUNT; i++) {
		rc = sqlite3_prepare_v3(q->wdb, wsql[i], -1, SQLITE_PREPARE_PERSISTENT, &q->w[i], NULL);
		if (rc != SQLITE_OK)
			goto sqlerr;
	}
	goto out;
sqlerr:
	snprintf(err, errlen, "journal %s: %s", s->path, sqlite3_errmsg(q->wdb));
out:
	sqlite3_finalize(st);
	return rc == SQLITE_OK || rc == SQLITE_ROW ? 0 : -1;
}

static int setup_reader(struct store *s, struct sq *q, char *err, size_t errlen)
{
	int rc = sqlite3_exec(q->rdb, "PRAGMA query_only=ON", NULL, NULL, NULL);

	for (int i = 0; rc == SQLITE_OK && i < Q__COUNT; i++)
		rc = sqlite3_prepare_v3(q->rdb, rsql[i], -1, SQLITE_PREPARE_PERSISTENT, &q->r[i], NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v3(q->rdb, "BEGIN", -1, SQLITE_PREPARE_PERSISTENT, &q->rbegin, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v3(q->rdb, "COMMIT", -1, SQLITE_PREPARE_PERSISTENT, &q->rend, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "journal %s: %s", s->path, sqlite3_errmsg(q->rdb));
		return -1;
	}
	return 0;
}

static void sq_close(struct store *s)
{
	struct sq *q = sq_of(s);

	if (!q)
		return;
	for (int i = 0; i < W__COUNT; i++)
		sqlite3_finalize(q->w[i]);
	for (int i = 0; i < Q__COUNT; i++)
		sqlite3_finalize(q->r[i]);
	sqlite3_finalize(q->rbegin);
	sqlite3_finalize(q->rend);
	/* Reader first: for ":memory:" the writer's close frees the database. */
	sqlite3_close(q->rdb);
	sqlite3_close(q->wdb);
	free(q);
	s->db = NULL;
}

static int sq_open(struct store *s, char *err, size_t errlen)
{
	static atomic_ulong mem_seq;
	struct sq *q = calloc(1, sizeof(*q));
	char name[128], hex[17];
	const char *dbname = s->path;
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;

	if (!q) {
		snprintf(err, errlen, "journal %s: out of memory", s->path);
		return -1;
	}
	s->db = q;
	/* Both connections must reach one in-memory database: a named
	 * shared-cache URI, unique per store so two stores never meet. */
	if (strcmp(s->path, ":memory:") == 0) {
		q->mem = 1;
		rd_random_hex(hex, 8);
		snprintf(name, sizeof(name), "file:recoveryd-mem-%ld-%lu-%s?mode=memory&cache=shared",
		         (long)getpid(), atomic_fetch_add(&mem_seq, 1) + 1, hex);
		dbname = name;
		flags |= SQLITE_OPEN_URI;
	}
	if (open_conn(s, dbname, flags, &q->wdb, err, errlen) != SQLITE_OK ||
	    setup_writer(s, q, err, errlen) < 0)
		goto fail;
	/* The writer created the file and schema; the reader needs neither. */
	flags &= ~SQLITE_OPEN_CREATE;
	if (open_conn(s, dbname, flags, &q->rdb, err, errlen) != SQLITE_OK ||
	    setup_reader(s, q, err, errlen) < 0)
		goto fail;
	return 0;
fail:
	sq_close(s);
	return -1;
}

const struct store_backend store_sqlite_backend = {
	.name = "sqlite",
	.open = sq_open,
	.close = sq_close,
	.exec = sq_exec,
	.wquery = sq_wquery,
	.txn_lost = sq_txn_lost,
	.read_begin = sq_read_begin,
	.read_end = sq_read_end,
	.query = sq_query,
	.text = sq_text,
	.real = sq_real,
	.integer = sq_integer,
	.is_null = sq_is_null,
};

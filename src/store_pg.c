/* The PostgreSQL backend of the journal (--state postgres://...): the
 * shared journal of several replicas. A write connection for the writer
 * thread and a read connection, each with every statement prepared once;
 * parameters go as text with declared types, results come back as text.
 * The password comes from a file (PGPASSFILE, or passfile= in the URL),
 * never from the URL itself. A connection that broke is reset at the next
 * transaction or read, and its statements are prepared again. */
#include "store_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recoveryd/log.h"

/* Parameter types of a statement, one letter per $n: T text, R float8,
 * I int8. A NULL value is sent with its declared type, so a statement may
 * leave a parameter unused. */
struct pg_sql {
	const char *sql;
	const char *types;
};

#define T_JOB "TTTTTTITTTIIIRRRRRTTTTITRI"
#define T_ESC "TTTTTTTITRRRRTTR"

static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS jobs ("
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
	" plan_attempts INTEGER NOT NULL DEFAULT 0,"
	" owner TEXT, lease_until DOUBLE PRECISION, lease_token BIGINT NOT NULL DEFAULT 0);"
	"CREATE INDEX IF NOT EXISTS jobs_key ON jobs(key);"
	"CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner);"
	"CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);"
	"CREATE INDEX IF NOT EXISTS jobs_playbook ON jobs(playbook);"
	"CREATE INDEX IF NOT EXISTS jobs_ended ON jobs(ended_at);"
	"CREATE TABLE IF NOT EXISTS attempts ("
	" job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	" n INTEGER NOT NULL,"
	" started_at DOUBLE PRECISION, ended_at DOUBLE PRECISION, result TEXT, error TEXT,"
	" verify_ok INTEGER, verify_reason TEXT,"
	" PRIMARY KEY (job_id, n));"
	"CREATE TABLE IF NOT EXISTS events ("
	" seq BIGSERIAL PRIMARY KEY,"
	" job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	" ts DOUBLE PRECISION, attempt INTEGER, type TEXT NOT NULL,"
	" detail TEXT NOT NULL CHECK (json_typeof(detail::json) = 'object'),"
	" planned INTEGER NOT NULL DEFAULT 0);"
	"CREATE INDEX IF NOT EXISTS events_job ON events(job_id);"
	"CREATE TABLE IF NOT EXISTS escalations ("
	" seq BIGSERIAL PRIMARY KEY,"
	" id TEXT UNIQUE NOT NULL,"
	" job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
	" incident_key TEXT, sink TEXT NOT NULL, kind TEXT NOT NULL, reason TEXT,"
	" state TEXT, attempts INTEGER NOT NULL DEFAULT 0, last_answer TEXT,"
	" created_at DOUBLE PRECISION, updated_at DOUBLE PRECISION,"
	" next_attempt_at DOUBLE PRECISION, delivered_at DOUBLE PRECISION, payload TEXT,"
	" owner TEXT, lease_until DOUBLE PRECISION);"
	"CREATE INDEX IF NOT EXISTS escalations_job ON escalations(job_id);"
	"CREATE INDEX IF NOT EXISTS escalations_state ON escalations(state);"
	"CREATE INDEX IF NOT EXISTS escalations_incident ON escalations(incident_key);"
	"CREATE TABLE IF NOT EXISTS audit ("
	" seq BIGSERIAL PRIMARY KEY,"
	" ts DOUBLE PRECISION NOT NULL, principal TEXT NOT NULL, role TEXT, address TEXT,"
	" action TEXT NOT NULL, job_id TEXT, playbook TEXT, reason TEXT,"
	" detail TEXT CHECK (detail IS NULL OR json_typeof(detail::json) = 'object'));"
	"CREATE INDEX IF NOT EXISTS audit_principal ON audit(principal);"
	"CREATE INDEX IF NOT EXISTS audit_action ON audit(action);"
	"CREATE INDEX IF NOT EXISTS audit_ts ON audit(ts);"
	"CREATE TABLE IF NOT EXISTS pauses ("
	" scope TEXT PRIMARY KEY, principal TEXT, reason TEXT, since DOUBLE PRECISION,"
	" until DOUBLE PRECISION);";

/* Version 2 journals gain the leases (nobody holds their jobs). */
static const char migrate_v3_sql[] =
	"ALTER TABLE jobs ADD COLUMN IF NOT EXISTS owner TEXT,"
	" ADD COLUMN IF NOT EXISTS lease_until DOUBLE PRECISION,"
	" ADD COLUMN IF NOT EXISTS lease_token BIGINT NOT NULL DEFAULT 0;"
	"ALTER TABLE escalations ADD COLUMN IF NOT EXISTS owner TEXT,"
	" ADD COLUMN IF NOT EXISTS lease_until DOUBLE PRECISION;";

/* Where a job may be claimed at time $1 (store.h, store_batch_claim_jobs). */
/* A state tested on the row, not through the state index: a statement
 * that finds its rows by id, key or owner must use that index, and a plan
 * made while the journal was empty cannot tell the indexes apart (the
 * writer's plans are made once: see pg_open). */
#define ACTIVE_ON_ROW "(state || '') IN ('queued','running','retry_wait','awaiting_approval')"

#define CLAIMABLE_JOB                                                                          \
	"((state IN ('queued','retry_wait','running','awaiting_approval') "                      \
	"AND (owner IS NULL OR coalesce(lease_until, 0) < $1) "                                 \
	"AND (state <> 'retry_wait' OR coalesce(next_run_at, 0) <= $1 OR owner IS NOT NULL)) "  \
	"OR (owner IS NOT NULL AND coalesce(lease_until, 0) < $1 AND (state || '') IN "         \
	"('succeeded','failed','cancelled','budget_exhausted','paused')))"

/* Retention: a job whose escalations are all sent, and that opened no
 * incident still open (a trigger with no resolve after it), may go. */
#define PRUNABLE_JOB                                                                           \
	"NOT EXISTS (SELECT 1 FROM escalations x WHERE x.job_id = jobs.id AND (x.state IN "     \
	"('pending','retrying') OR (x.kind = 'trigger' AND x.state = 'delivered' AND NOT EXISTS "\
	"(SELECT 1 FROM escalations r WHERE r.kind = 'resolve' AND r.incident_key = "            \
	"x.incident_key AND r.sink = x.sink AND r.seq > x.seq))))"

static const struct pg_sql wsql[W__COUNT] = {
	[W_BEGIN] = {"BEGIN", ""},
	[W_COMMIT] = {"COMMIT", ""},
	[W_ROLLBACK] = {"ROLLBACK", ""},
	[W_SAVEPOINT] = {"SAVEPOINT batch", ""},
	[W_RELEASE] = {"RELEASE SAVEPOINT batch", ""},
	[W_ROLLBACK_TO] = {"ROLLBACK TO SAVEPOINT batch", ""},
	[W_INSERT_JOB] = {"INSERT INTO jobs (" STORE_JOB_COLS ") VALUES "
	                  "($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,"
	                  "$21,$22,$23,$24,$25,$26)", T_JOB},
	/* Fenced by the token $26 (0: unfenced). The right-hand sides see the
	 * row as it was: the same owner keeps the later expiry, no owner
	 * releases. A row a claim holds is waited for, then read again. */
	[W_UPDATE_JOB] = {"UPDATE jobs SET state=$8, outcome=$9, error=$10, attempts=$11, "
	                  "max_attempts=$12, notifications=GREATEST(notifications, $13), created_at=$14, updated_at=$15, "
	                  "started_at=$16, ended_at=$17, next_run_at=$18, cancelled_by=COALESCE($20, cancelled_by), "
	                  "approval=$21, approved_by=COALESCE($22, approved_by), plan_attempts=$23, "
	                  "lease_until=CASE WHEN $24 IS NULL THEN NULL WHEN owner IS NOT DISTINCT FROM $24 "
	                  "THEN GREATEST(lease_until, $25) ELSE $25 END, "
	                  "owner=$24 WHERE id=$1 AND ($26 = 0 OR lease_token = $26)", T_JOB},
	[W_ATTEMPT] = {"INSERT INTO attempts (job_id, n, started_at, ended_at, result, error, "
	               "verify_ok, verify_reason) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) "
	               "ON CONFLICT (job_id, n) DO UPDATE SET started_at=excluded.started_at, "
	               "ended_at=excluded.ended_at, result=excluded.result, error=excluded.error, "
	               "verify_ok=excluded.verify_ok, verify_reason=excluded.verify_reason", "TIRRTTIT"},
	[W_EVENT] = {"INSERT INTO events (job_id, ts, attempt, type, detail, planned) "
	             "VALUES ($1,$2,$3,$4,$5,$6)", "TRITTI"},
	[W_ESC_INSERT] = {"INSERT INTO escalations (" STORE_ESC_COLS ") VALUES "
	                  "($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)", T_ESC},
	/* Fenced by the owner $15 (NULL: a row nobody holds); releases. */
	[W_ESC_UPDATE] = {"UPDATE escalations SET state=$7, attempts=$8, last_answer=$9, updated_at=$11, "
	                  "next_attempt_at=$12, delivered_at=$13, "
	                  "owner=CASE WHEN $16::float8 IS NULL THEN NULL ELSE owner END, lease_until=$16 "
	                  "WHERE id=$1 AND owner IS NOT DISTINCT FROM $15", T_ESC},
	[W_AUDIT] = {"INSERT INTO audit (ts, principal, role, address, action, job_id, playbook, "
	             "reason, detail) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)", "RTTTTTTTT"},
	[W_PAUSE] = {"INSERT INTO pauses (scope, principal, reason, since, until) VALUES ($1,$2,$3,$4,$5) "
	             "ON CONFLICT (scope) DO UPDATE SET principal=excluded.principal, "
	             "reason=excluded.reason, since=excluded.since, until=excluded.until", "TTTRR"},
	[W_UNPAUSE] = {"DELETE FROM pauses WHERE scope = $1", "T"},
	/* Locked until the commit: a claim skips the row, and a claim that
	 * holds it is waited for (then its token is read). */
	[W_JOB_LEASE] = {"SELECT owner, lease_token FROM jobs WHERE id = $1 FOR SHARE", "T"},
	/* Replicas claiming at once take different rows: each skips the rows
	 * another has locked (claiming, or writing them). */
	/* Through the indexes, unfinished jobs by state and held ones by
	 * owner: never the ended jobs, which are most of the journal (seq + 0:
	 * not in the primary key's order, which reads them all). */
	[W_CLAIM_JOBS] = {"SELECT " STORE_JOB_COLS ", (SELECT count(*) FROM events WHERE "
	                  "events.job_id = jobs.id AND events.type = 'watchdog') FROM jobs WHERE " CLAIMABLE_JOB
	                  " ORDER BY seq + 0 LIMIT $2 FOR UPDATE SKIP LOCKED", "RI"},
	[W_CLAIM_JOB] = {"UPDATE jobs SET owner=$2, lease_until=$3, lease_token=$4 "
	                 "WHERE id=$1 AND lease_token=$5", "TTRII"},
	[W_CLAIM_ESCS] = {"SELECT " STORE_ESC_COLS " FROM escalations WHERE state IN ('pending','retrying') "
	                  "AND (next_attempt_at IS NULL OR next_attempt_at <= $1) "
	                  "AND (owner IS NULL OR coalesce(lease_until, 0) < $1) ORDER BY seq LIMIT $2 "
	                  "FOR UPDATE SKIP LOCKED", "RI"},
	[W_CLAIM_ESC] = {"UPDATE escalations SET owner=$2, lease_until=$3 WHERE id=$1", "TTR"},
	/* A row another replica has locked is skipped (it is being claimed:
	 * its lease expired); so renewals never wait for claims and two
	 * replicas' rounds cannot deadlock over them. */
	[W_RENEW_JOBS] = {"UPDATE jobs SET lease_until=GREATEST(lease_until, $2) WHERE id IN ("
	                  "SELECT id FROM jobs WHERE owner = $1 "
	                  "AND state IN ('queued','running','retry_wait','awaiting_approval') "
	                  "FOR UPDATE SKIP LOCKED) RETURNING id, lease_token", "TR"},
	[W_RENEW_ESCS] = {"UPDATE escalations SET lease_until=GREATEST(lease_until, $2) WHERE id IN ("
	                  "SELECT id FROM escalations WHERE owner = $1 AND state IN ('pending','retrying') "
	                  "FOR UPDATE SKIP LOCKED)", "TR"},
	[W_ESC_OWNER] = {"SELECT owner FROM escalations WHERE id = $1", "T"},
	/* An ended job keeps its owner, expired: what its end causes is owed. */
	[W_EXPIRE_JOBS] = {"UPDATE jobs SET lease_until = CASE WHEN state IN ('succeeded','failed','cancelled','budget_exhausted','paused') THEN 0 END, "
	                   "owner = CASE WHEN state IN ('succeeded','failed','cancelled','budget_exhausted','paused') THEN owner END WHERE owner = $1", "T"},
	[W_RELEASE_JOB] = {"UPDATE jobs SET owner = NULL, lease_until = NULL WHERE id = $1 "
	                   "AND owner IS NOT DISTINCT FROM $2", "TT"}, /* by id, not owner's index */
	/* Only a pending row is ever claimed: the state's index finds them. */
	[W_EXPIRE_ESCS] = {"UPDATE escalations SET owner = NULL, lease_until = NULL WHERE owner = $1 "
	                   "AND state IN ('pending','retrying')", "T"},
	/* The admission locks of names (store_batch_lock), in the order
	 * given: one transaction at a time decides about a key or a budget,
	 * so coalescing, cooldown and budget hold across replicas. */
	[W_ADMIT_LOCK] = {"SELECT pg_advisory_xact_lock(k) FROM unnest(string_to_array($1, ',')::int8[]) AS k",
	                  "T"},
	[W_ACTIVE_KEY] = {"SELECT " STORE_JOB_COLS " FROM jobs WHERE key = $1 AND " ACTIVE_ON_ROW
	                  " ORDER BY seq", "T"},
	[W_LAST_ENDED] = {"SELECT " STORE_JOB_COLS " FROM jobs WHERE key = $1 AND ended_at IS NOT NULL "
	                  "AND state <> 'paused' ORDER BY ended_at DESC LIMIT 1", "T"},
	[W_STARTS] = {"SELECT " STORE_JOB_COLS " FROM jobs WHERE playbook = $1 AND created_at > $2 "
	              "AND state NOT IN ('paused','budget_exhausted') ORDER BY created_at", "TR"},
	[W_PAUSES] = {"SELECT scope, principal, reason, since, until FROM pauses", ""},
	[W_ADMIT_FACTS] = {"(SELECT " STORE_JOB_COLS ", 'a' FROM jobs WHERE key IN ($1, $2) AND " ACTIVE_ON_ROW
	                   ") UNION ALL "
	                   "(SELECT " STORE_JOB_COLS ", 'e' FROM jobs WHERE key = $1 AND ended_at IS NOT NULL "
	                   "AND state <> 'paused' ORDER BY ended_at DESC LIMIT 1) UNION ALL "
	                   "(SELECT " STORE_JOB_COLS ", 'k' FROM jobs WHERE key = $1 LIMIT 1)", "TT"},
	[W_NOTIFIED] = {"UPDATE jobs SET notifications = notifications + 1 WHERE id = $1", "T"},
	[W_CANCEL_REQ] = {"UPDATE jobs SET cancelled_by = COALESCE(cancelled_by, $2) WHERE id = $1 "
	                  "AND " ACTIVE_ON_ROW, "TT"},
	[W_CANCEL_REQS] = {"SELECT id, cancelled_by, approved_by FROM jobs WHERE owner = $1 AND "
	                   "((cancelled_by IS NOT NULL AND state IN ('queued','running','retry_wait',"
	                   "'awaiting_approval')) OR (approved_by IS NOT NULL AND state = 'awaiting_approval'))", "T"},
	[W_NOTIFY] = {"SELECT pg_notify('recoveryd_work', '')", ""},
	[W_APPROVE_REQ] = {"UPDATE jobs SET approved_by = COALESCE(approved_by, $2) WHERE id = $1 "
	                   "AND (state || '') = 'awaiting_approval'", "TT"},
	[W_SAVEPOINT_ALL] = {"SAVEPOINT round", ""},
	[W_ROLLBACK_TO_ALL] = {"ROLLBACK TO SAVEPOINT round", ""},
	[W_FENCE_ROW] = {"SELECT 1 FROM jobs WHERE id = $1 AND lease_token = $2 FOR SHARE", "TI"},
	[W_PRUNE_JOBS] = {"DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE ended_at < $1 AND "
	                  PRUNABLE_JOB " ORDER BY ended_at LIMIT $2) RETURNING 1", "RI"},
	[W_PRUNE_AUDIT] = {"DELETE FROM audit WHERE seq IN (SELECT seq FROM audit WHERE ts < $1 "
	                   "ORDER BY ts LIMIT $2) RETURNING 1", "RI"},
};

/* GET /api/v1/jobs (store_jobs_page): a job, its seq and its alertname. */
#define LIST_ALERTNAME "(alert_json::json -> 'labels' ->> 'alertname')"
#define LIST_COLS STORE_JOB_COLS ", seq, " LIST_ALERTNAME
#define LIST_PAGE                                                                              \
	"seq < coalesce($4, 9223372036854775807) AND ($5::float8 IS NULL OR created_at >= $5) "  \
	"AND ($6::float8 IS NULL OR created_at <= $6) AND ($7::text IS NULL OR " LIST_ALERTNAME  \
	" = $7) ORDER BY seq DESC LIMIT $3"
#define LIST_TYPES "TTIIRRT"

static const struct pg_sql rsql[Q__COUNT] = {
	[Q_JOB] = {"SELECT " STORE_JOB_COLS " FROM jobs WHERE id = $1", "T"},
	[Q_ATTEMPTS] = {"SELECT n, started_at, ended_at, result, error, verify_ok, verify_reason "
	                "FROM attempts WHERE job_id = $1 ORDER BY n", "T"},
	/* Newest $2 rows, returned oldest first. */
	[Q_EVENTS] = {"SELECT ts, attempt, type, detail, planned FROM "
	              "(SELECT seq, ts, attempt, type, detail, planned FROM events "
	              " WHERE job_id = $1 ORDER BY seq DESC LIMIT $2) AS newest ORDER BY seq", "TI"},
	[Q_ESCALATIONS] = {"SELECT sink, state, attempts, last_answer, created_at, updated_at, "
	                   "id, kind, reason, delivered_at, next_attempt_at "
	                   "FROM escalations WHERE job_id = $1 ORDER BY seq", "T"},
	[Q_SCAN] = {"SELECT " STORE_JOB_COLS ", (SELECT count(*) FROM events WHERE events.job_id = jobs.id "
	            "AND events.type = 'watchdog') FROM jobs WHERE state IN ('queued','running','retry_wait',"
	            "'awaiting_approval') OR started_at >= $1 OR ended_at >= $1 ORDER BY seq", "R"},
	[Q_LIST] = {"SELECT " LIST_COLS " FROM jobs WHERE " LIST_PAGE, LIST_TYPES},
	[Q_LIST_STATE] = {"SELECT " LIST_COLS " FROM jobs WHERE state = $1 AND " LIST_PAGE, LIST_TYPES},
	[Q_LIST_PLAYBOOK] = {"SELECT " LIST_COLS " FROM jobs WHERE playbook = $2 AND " LIST_PAGE,
	                     LIST_TYPES},
	[Q_LIST_BOTH] = {"SELECT " LIST_COLS " FROM jobs WHERE state = $1 AND playbook = $2 AND " LIST_PAGE,
	                 LIST_TYPES},
	[Q_PAUSES] = {"SELECT scope, principal, reason, since, until FROM pauses ORDER BY scope COLLATE \"C\"", ""},
	/* GET /api/v1/playbooks: what admission counts (W_STARTS, W_LAST_ENDED). */
	[Q_PB_STARTS] = {"SELECT count(*) FROM jobs WHERE playbook = $1 AND created_at > $2 "
	                 "AND state NOT IN ('paused','budget_exhausted')", "TR"},
	[Q_PB_LAST] = {"SELECT id, state, outcome, created_at, ended_at FROM jobs WHERE playbook = $1 "
	               "ORDER BY seq DESC LIMIT 1", "T"},
	[Q_PB_COOLING] = {"SELECT key, max(ended_at) FROM jobs WHERE playbook = $1 AND ended_at > $2 "
	                  "AND state <> 'paused' AND trigger = 'webhook' GROUP BY key "
	                  "ORDER BY 2 DESC LIMIT $3", "TRI"},
	[Q_AUDIT] = {"SELECT seq, ts, principal, role, address, action, job_id, playbook, reason, "
	             "detail FROM audit WHERE ($1::text IS NULL OR principal = $1) "
	             "AND ($2::text IS NULL OR action = $2) AND ($3::float8 IS NULL OR ts >= $3) "
	             "AND ($4::float8 IS NULL OR ts <= $4) AND ($5::int8 IS NULL OR seq < $5) "
	             "ORDER BY seq DESC LIMIT $6", "TTRRII"},
	[Q_OUTBOX] = {"SELECT " STORE_ESC_COLS " FROM escalations WHERE state IN ('pending','retrying') "
	              "ORDER BY seq", ""},
	[Q_OPEN_INCIDENTS] = {"SELECT " STORE_ESC_COLS " FROM escalations t WHERE t.kind = 'trigger' "
	                      "AND t.state IN ('pending','retrying','delivered') AND NOT EXISTS ("
	                      " SELECT 1 FROM escalations r WHERE r.kind = 'resolve' "
	                      " AND r.incident_key = t.incident_key AND r.sink = t.sink AND r.seq > t.seq) "
	                      "ORDER BY t.seq", ""},
	[Q_OPEN_INCIDENT_KEY] = {"SELECT " STORE_ESC_COLS " FROM escalations t WHERE t.incident_key = $1 "
	                         "AND t.kind = 'trigger' AND t.state IN ('pending','retrying','delivered') "
	                         "AND NOT EXISTS (SELECT 1 FROM escalations r WHERE r.kind = 'resolve' "
	                         " AND r.incident_key = t.incident_key AND r.sink = t.sink AND r.seq > t.seq) "
	                         "ORDER BY t.seq", "T"},
};

#define PG_PARAMS_MAX 32
#define OID_TEXT 25
#define OID_FLOAT8 701
#define OID_INT8 20

struct pg {
	char *conninfo;          /* the URL as given */
	PGconn *w, *r;           /* writer, reader */
	int w_ready, r_ready;    /* statements prepared on this connection */
	/* LISTEN recoveryd_work on a connection of its own, in a thread */
	pthread_t listener;
	int listening;
	int stop_fd[2];          /* a byte on [1] stops the listener */
	void (*on_notify)(void *arg);
	void *notify_arg;
	struct store *s;
	/* The writer's pipeline: statements sent whose answers are unread. */
	int piped;
	size_t unread;
};

/* Answers read back at least this often: a server whose answers nobody
 * reads stops reading, and a client that only sends then waits forever. */
#define PIPE_UNREAD_MAX 256

struct srow {
	PGresult *res;
	int row;
};

static struct pg *pg_of(struct store *s)
{
	return s->db;
}

/* libpq's message, one line, without the trailing newline. */
static void pg_msg(char *err, size_t errlen, const char *msg)
{
	size_t n;

	if (!err || !errlen)
		return;
	snprintf(err, errlen, "%s", msg && *msg ? msg : "unknown error");
	n = strlen(err);
	while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
		err[--n] = '\0';
	for (char *p = err; *p; p++)
		if (*p == '\n' || *p == '\t')
			*p = ' ';
}

static Oid oid_of(char t)
{
	return t == 'R' ? OID_FLOAT8 : t == 'I' ? OID_INT8 : OID_TEXT;
}

/* A writer statement that must change (or find) a row, pipelined: in its
 * strict form (prepared as x<id>) finding none is an error of the
 * database's, so the COMMIT sent after it in the same pipeline is skipped
 * and the transaction can go back to its savepoint. 'U': an UPDATE, 'S':
 * a SELECT, 0: no strict form. */
static char strict_kind(int id)
{
	switch (id) {
	case W_UPDATE_JOB:
	case W_ESC_UPDATE:
	case W_CLAIM_JOB:
	case W_CLAIM_ESC:
		return 'U';
	case W_FENCE_ROW:
		return 'S';
	default:
		return 0;
	}
}

/* A reader query planned with its values at each run, not once: a plan
 * made while the journal was small scans the whole table once it is not
 * (until an ANALYZE). Those that find their rows by id keep theirs. */
static int read_fresh(int id)
{
	switch (id) {
	case Q_SCAN:
	case Q_LIST_STATE:
	case Q_LIST_PLAYBOOK:
	case Q_LIST_BOTH:
	case Q_AUDIT:
	case Q_OPEN_INCIDENT_KEY:
	case Q_PB_STARTS:
	case Q_PB_COOLING:
		return 1;
	default:
		return 0;
	}
}

static int prepare_one(PGconn *c, const char *name, const char *sql, const char *types_s, char *err,
                       size_t errlen)
{
	Oid types[PG_PARAMS_MAX];
	int np = (int)strlen(types_s), ok;
	PGresult *res;

	for (int k = 0; k < np; k++)
		types[k] = oid_of(types_s[k]);
	res = PQprepare(c, name, sql, np, types);
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	if (!ok)
		pg_msg(err, errlen, PQresultErrorMessage(res));
	PQclear(res);
	return ok ? 0 : -1;
}

static int prepare_all(PGconn *c, const struct pg_sql *v, int n, char prefix, char *err, size_t errlen)
{
	for (int i = 0; i < n; i++) {
		char name[16], strict = prefix == 'w' ? strict_kind(i) : 0;

		if (prefix == 'q' && read_fresh(i))
			continue;
		snprintf(name, sizeof(name), "%c%d", prefix, i);
		if (prepare_one(c, name, v[i].sql, v[i].types, err, errlen) < 0)
			return -1;
		if (strict) {
			size_t len = strlen(v[i].sql) + 96;
			char *sql = malloc(len);
			int rc;
			if (!sql) {
				pg_msg(err, errlen, "out of memory");
				return -1;
			}
			snprintf(sql, len, strict == 'U' ? "WITH t AS (%s RETURNING 1) SELECT 1 / count(*) FROM t"
			                                 : "SELECT 1 / count(*) FROM (%s) t", v[i].sql);
			snprintf(name, sizeof(name), "x%d", i);
			rc = prepare_one(c, name, sql, v[i].types, err, errlen);
			free(sql);
			if (rc < 0)
				return -1;
		}
	}
	return 0;
}

/* A usable connection with its statements prepared, reconnecting when it
 * broke. 0, or -1 with err. */
static int ready(struct store *s, PGconn **c, int *prepared, const struct pg_sql *v, int n, char prefix,
                 char *err, size_t errlen)
{
	if (*c && PQstatus(*c) == CONNECTION_OK && *prepared)
		return 0;
	if (*c && PQstatus(*c) != CONNECTION_OK) {
		PQreset(*c);
		*prepared = 0;
		if (PQstatus(*c) == CONNECTION_OK)
			log_kv(LOG_WARN, NULL, "journal: reconnected to PostgreSQL", "path", s->path, NULL);
	}
	if (!*c || PQstatus(*c) != CONNECTION_OK) {
		pg_msg(err, errlen, *c ? PQerrorMessage(*c) : "no connection");
		return -1;
	}
	if (prepare_all(*c, v, n, prefix, err, errlen) < 0)
		return -1;
	*prepared = 1;
	return 0;
}

static int params(const struct sval *v, int n, const char *types, char bufs[][32], const char **out)
{
	if (n > PG_PARAMS_MAX || n != (int)strlen(types))
		return -1;
	for (int i = 0; i < n; i++) {
		switch (v[i].t) {
		case SV_NULL:
			out[i] = NULL;
			break;
		case SV_TEXT:
			out[i] = v[i].s;
			break;
		case SV_REAL:
			snprintf(bufs[i], 32, "%.17g", v[i].d);
			out[i] = bufs[i];
			break;
		case SV_INT:
			snprintf(bufs[i], 32, "%lld", v[i].i);
			out[i] = bufs[i];
			break;
		}
	}
	return 0;
}

/* Run reader query id: prepared, or planned afresh (read_fresh). */
static PGresult *run_read(PGconn *c, int id, int n, const char *const *vals)
{
	char name[16];

	if (read_fresh(id)) {
		Oid types[PG_PARAMS_MAX];
		for (int k = 0; k < n; k++)
			types[k] = oid_of(rsql[id].types[k]);
		return PQexecParams(c, rsql[id].sql, n, types, vals, NULL, NULL, 0);
	}
	snprintf(name, sizeof(name), "q%d", id);
	return PQexecPrepared(c, name, n, vals, NULL, NULL, 0);
}

/* Writer statement id, prepared as prefix+id (w, or x: strict_kind). */
static PGresult *run_write(PGconn *c, char prefix, int id, int n, const char *const *vals)
{
	char name[16];

	snprintf(name, sizeof(name), "%c%d", prefix, id);
	return PQexecPrepared(c, name, n, vals, NULL, NULL, 0);
}

static int send_write(PGconn *c, char prefix, int id, int n, const char *const *vals)
{
	char name[16];

	snprintf(name, sizeof(name), "%c%d", prefix, id);
	return PQsendQueryPrepared(c, name, n, vals, NULL, NULL, 0);
}

/* Read the answers of what was sent, in order; the last one's result goes
 * to *last (the caller's to clear) when asked for. 0, or -1 with err (the
 * first failure). A broken connection leaves the answers unread. */
static int collect(struct pg *p, PGresult **last, char *err, size_t errlen)
{
	int rc = 0;

	if (last)
		*last = NULL;
	if (!p->unread)
		return 0;
	if (!PQsendFlushRequest(p->w) || PQflush(p->w) != 0) {
		pg_msg(err, errlen, PQerrorMessage(p->w));
		p->unread = 0;
		return -1;
	}
	for (size_t i = 0; i < p->unread; i++) {
		PGresult *res = PQgetResult(p->w), *end;
		ExecStatusType st;

		if (!res) {
			if (rc == 0)
				pg_msg(err, errlen, PQerrorMessage(p->w));
			rc = -1;
			break;
		}
		st = PQresultStatus(res);
		if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
			if (rc == 0)
				pg_msg(err, errlen, st == PGRES_PIPELINE_ABORTED ? "pipeline aborted"
				                    : PQresultErrorMessage(res));
			rc = -1;
		}
		if (last && i + 1 == p->unread && rc == 0)
			*last = res;
		else
			PQclear(res);
		/* each statement's answers end with a NULL */
		while ((end = PQgetResult(p->w)) != NULL)
			PQclear(end);
	}
	p->unread = 0;
	return rc;
}

static int pg_send(struct store *s, enum wstmt id, const struct sval *v, int n, int must_change, char *err,
                   size_t errlen)
{
	struct pg *p = pg_of(s);
	char bufs[PG_PARAMS_MAX][32];
	const char *vals[PG_PARAMS_MAX];

	if (params(v, n, wsql[id].types, bufs, vals) < 0) {
		pg_msg(err, errlen, "internal: wrong parameter count");
		return -1;
	}
	/* Checked by the server (strict_kind), before any COMMIT. */
	if (must_change && !strict_kind(id)) {
		pg_msg(err, errlen, "internal: a statement without a strict form");
		return -1;
	}
	if (!send_write(p->w, must_change ? 'x' : 'w', (int)id, n, vals)) {
		pg_msg(err, errlen, PQerrorMessage(p->w));
		return -1;
	}
	p->unread++;
	return p->unread >= PIPE_UNREAD_MAX ? collect(p, NULL, err, errlen) : 0;
}

static int pg_pipe(struct store *s, int on, char *err, size_t errlen)
{
	struct pg *p = pg_of(s);
	char tmp[256];
	int rc;

	if (!err) {
		err = tmp;
		errlen = sizeof(tmp);
	}
	if (on) {
		/* A connection is only reset between transactions. */
		if (ready(s, &p->w, &p->w_ready, wsql, W__COUNT, 'w', err, errlen) < 0)
			return -1;
		if (!PQenterPipelineMode(p->w)) {
			pg_msg(err, errlen, PQerrorMessage(p->w));
			return -1;
		}
		p->piped = 1;
		p->unread = 0;
		return 0;
	}
	if (!p->piped)
		return 0;
	p->piped = 0;
	if (!PQpipelineSync(p->w)) {
		pg_msg(err, errlen, PQerrorMessage(p->w));
		rc = -1;
	} else {
		PGresult *res;

		rc = collect(p, NULL, err, errlen);
		/* then the sync's own answer */
		while ((res = PQgetResult(p->w)) != NULL) {
			int sync = PQresultStatus(res) == PGRES_PIPELINE_SYNC;
			PQclear(res);
			if (sync)
				break;
		}
	}
	if (!PQexitPipelineMode(p->w)) {
		/* answers left unread: the connection cannot be trusted */
		if (rc == 0)
			pg_msg(err, errlen, PQerrorMessage(p->w));
		PQreset(p->w);
		p->w_ready = 0;
		rc = -1;
	}
	return rc;
}

/* A writer statement: its result (the caller's to clear), or NULL with err. */
static PGresult *pg_wrun(struct store *s, enum wstmt id, const struct sval *v, int n, char *err,
                         size_t errlen)
{
	struct pg *p = pg_of(s);
	char bufs[PG_PARAMS_MAX][32], tmp[256];
	const char *vals[PG_PARAMS_MAX];
	PGresult *res;
	ExecStatusType st;

	if (p->piped) {
		/* In the pipeline: it waits for what was sent before it. */
		if (pg_send(s, id, v, n, 0, err, errlen) < 0 || collect(p, &res, err, errlen) < 0)
			return NULL;
		if (!res)
			pg_msg(err, errlen, "no answer");
		return res;
	}
	/* A connection is only reset between transactions. */
	if (id == W_BEGIN && ready(s, &p->w, &p->w_ready, wsql, W__COUNT, 'w', err ? err : tmp,
	                           err ? errlen : sizeof(tmp)) < 0)
		return NULL;
	if (params(v, n, wsql[id].types, bufs, vals) < 0) {
		pg_msg(err, errlen, "internal: wrong parameter count");
		return NULL;
	}
	res = run_write(p->w, 'w', (int)id, n, vals);
	st = PQresultStatus(res);
	/* libpq notices a connection cut while idle (a server restart) only on
	 * its next use: then BEGIN is tried once more on a new connection. */
	if (id == W_BEGIN && st != PGRES_COMMAND_OK && PQstatus(p->w) != CONNECTION_OK) {
		PQclear(res);
		if (ready(s, &p->w, &p->w_ready, wsql, W__COUNT, 'w', err ? err : tmp,
		          err ? errlen : sizeof(tmp)) < 0)
			return NULL;
		res = run_write(p->w, 'w', (int)id, n, vals);
		st = PQresultStatus(res);
	}
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		pg_msg(err, errlen, PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res) : PQerrorMessage(p->w));
		PQclear(res);
		return NULL;
	}
	return res;
}

static int pg_exec(struct store *s, enum wstmt id, const struct sval *v, int n, long long *changes,
                   char *err, size_t errlen)
{
	PGresult *res = pg_wrun(s, id, v, n, err, errlen);

	if (!res)
		return -1;
	if (changes)
		*changes = atoll(PQcmdTuples(res));
	PQclear(res);
	return 0;
}

static int pg_wquery(struct store *s, enum wstmt id, const struct sval *v, int n, srow_fn fn, void *arg,
                     char *err, size_t errlen)
{
	PGresult *res = pg_wrun(s, id, v, n, err, errlen);
	struct srow row = {.res = res};
	int rc = 0;

	if (!res)
		return -1;
	for (row.row = 0; row.row < PQntuples(res) && rc == 0; row.row++)
		rc = fn(&row, arg);
	PQclear(res);
	if (rc < 0)
		pg_msg(err, errlen, "out of memory");
	return rc < 0 ? -1 : 0;
}

/* In a failed transaction PostgreSQL waits for ROLLBACK TO SAVEPOINT; a
 * broken connection or an ended transaction leaves nothing to save. */
static int pg_txn_lost(struct store *s)
{
	struct pg *p = pg_of(s);

	if (p->piped)
		return PQstatus(p->w) != CONNECTION_OK;
	return PQstatus(p->w) != CONNECTION_OK || PQtransactionStatus(p->w) == PQTRANS_IDLE ||
	       PQtransactionStatus(p->w) == PQTRANS_UNKNOWN;
}

static int simple(PGconn *c, const char *sql, char *err, size_t errlen)
{
	PGresult *res = PQexec(c, sql);
	int ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;

	if (!ok)
		pg_msg(err, errlen, PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res) : PQerrorMessage(c));
	PQclear(res);
	return ok ? 0 : -1;
}

/* A statement on the read connection, tried once more on a new one when
 * the connection was found cut. 0, or -1 with err. */
static int reader_simple(struct store *s, const char *sql, char *err, size_t errlen)
{
	struct pg *p = pg_of(s);

	for (int round = 0; round < 2; round++) {
		if (ready(s, &p->r, &p->r_ready, rsql, Q__COUNT, 'q', err, errlen) < 0)
			return -1;
		if (simple(p->r, sql, err, errlen) == 0)
			return 0;
		if (PQstatus(p->r) == CONNECTION_OK)
			return -1; /* not a cut connection: trying again will not help */
	}
	return -1;
}

/* Several queries of one record see one snapshot. */
static int pg_read_begin(struct store *s)
{
	char err[256];

	if (reader_simple(s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err, sizeof(err)) == 0)
		return 0;
	log_kv(LOG_ERROR, NULL, "journal: cannot read", "path", s->path, "error", err, NULL);
	return -1;
}

static void pg_read_end(struct store *s)
{
	struct pg *p = pg_of(s);

	if (p->r && PQstatus(p->r) == CONNECTION_OK && PQtransactionStatus(p->r) != PQTRANS_IDLE)
		simple(p->r, "ROLLBACK", NULL, 0); /* read only: nothing to keep */
}

static int pg_query(struct store *s, enum rstmt id, const struct sval *v, int n, srow_fn fn, void *arg)
{
	struct pg *p = pg_of(s);
	char bufs[PG_PARAMS_MAX][32], err[256];
	const char *vals[PG_PARAMS_MAX];
	struct srow row;
	PGresult *res;
	int rc = 0, in_snapshot;

	if (ready(s, &p->r, &p->r_ready, rsql, Q__COUNT, 'q', err, sizeof(err)) < 0) {
		log_kv(LOG_ERROR, NULL, "journal: cannot read", "path", s->path, "error", err, NULL);
		return -1;
	}
	if (params(v, n, rsql[id].types, bufs, vals) < 0)
		return -1;
	in_snapshot = PQtransactionStatus(p->r) != PQTRANS_IDLE;
	res = run_read(p->r, (int)id, n, vals);
	/* Outside a snapshot, a query on a connection that was cut meanwhile
	 * is tried once more on a new one. */
	if (PQresultStatus(res) != PGRES_TUPLES_OK && PQstatus(p->r) != CONNECTION_OK && !in_snapshot &&
	    ready(s, &p->r, &p->r_ready, rsql, Q__COUNT, 'q', err, sizeof(err)) == 0) {
		PQclear(res);
		res = run_read(p->r, (int)id, n, vals);
	}
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pg_msg(err, sizeof(err), PQresultErrorMessage(res));
		log_kv(LOG_ERROR, NULL, "journal: query failed", "path", s->path, "error", err, NULL);
		PQclear(res);
		return -1;
	}
	row.res = res;
	for (row.row = 0; row.row < PQntuples(res) && rc == 0; row.row++)
		rc = fn(&row, arg);
	PQclear(res);
	return rc;
}

static const char *pg_text(const struct srow *r, int col)
{
	return PQgetisnull(r->res, r->row, col) ? NULL : PQgetvalue(r->res, r->row, col);
}

static double pg_real(const struct srow *r, int col)
{
	return PQgetisnull(r->res, r->row, col) ? 0 : strtod(PQgetvalue(r->res, r->row, col), NULL);
}

static long long pg_integer(const struct srow *r, int col)
{
	return PQgetisnull(r->res, r->row, col) ? 0 : strtoll(PQgetvalue(r->res, r->row, col), NULL, 10);
}

static int pg_is_null(const struct srow *r, int col)
{
	return PQgetisnull(r->res, r->row, col);
}

static int pg_ping(struct store *s)
{
	char err[256];

	return reader_simple(s, "SELECT 1", err, sizeof(err));
}

/* ---- open / close ---- */

/* A password in the URL would reach the process list, the logs and every
 * error message: refuse it. */
static int url_has_password(const char *url)
{
	const char *p = strstr(url, "://"), *at, *colon;

	if (!p)
		return 0;
	p += 3;
	at = strchr(p, '@');
	if (!at || (strchr(p, '/') && strchr(p, '/') < at))
		return 0;
	colon = memchr(p, ':', (size_t)(at - p));
	return colon != NULL;
}

/* The server's notices ("relation already exists, skipping") are not
 * ours to print on stderr. */
static void no_notices(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

/* options: server settings for the connection's session, or "". */
static PGconn *connect_one(struct store *s, const char *conninfo, const char *options, char *err,
                           size_t errlen)
{
	/* application_name shows which process holds a connection; one in
	 * the URL (a replica's name) comes later and wins. */
	const char *keys[] = {"application_name", "options", "dbname", "connect_timeout", NULL};
	const char *vals[] = {"recoveryd", options, conninfo, "10", NULL};
	PGconn *c = PQconnectdbParams(keys, vals, 1);

	if (!c || PQstatus(c) != CONNECTION_OK) {
		char msg[512];
		pg_msg(msg, sizeof(msg), c ? PQerrorMessage(c) : "out of memory");
		snprintf(err, errlen, "journal %s: %s", s->path, msg);
		PQfinish(c);
		return NULL;
	}
	PQsetNoticeProcessor(c, no_notices, NULL);
	return c;
}

/* The schema, created once under a transaction-level advisory lock, so
 * replicas starting together do not race; a newer version is refused. */
static int setup_schema(struct store *s, PGconn *c, char *err, size_t errlen)
{
	char msg[512], sql[128];
	PGresult *res;
	int version = 0;

	if (simple(c, "BEGIN", msg, sizeof(msg)) < 0 ||
	    simple(c, "SELECT pg_advisory_xact_lock(7236040513042)", msg, sizeof(msg)) < 0 ||
	    simple(c, "CREATE TABLE IF NOT EXISTS recoveryd_schema (version INTEGER NOT NULL)", msg,
	           sizeof(msg)) < 0)
		goto fail;
	res = PQexec(c, "SELECT max(version) FROM recoveryd_schema");
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pg_msg(msg, sizeof(msg), PQresultErrorMessage(res));
		PQclear(res);
		goto fail;
	}
	if (!PQgetisnull(res, 0, 0))
		version = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	if (version > STORE_SCHEMA_VERSION) {
		simple(c, "ROLLBACK", NULL, 0);
		snprintf(err, errlen, "journal %s: schema version %d is newer than supported %d", s->path,
		         version, STORE_SCHEMA_VERSION);
		return -1;
	}
	if (version < STORE_SCHEMA_VERSION) {
		/* 2 -> 3: the new columns first, then whatever schema_sql adds
		 * (the index on owner). 0: a new database. */
		if (version == 2 && simple(c, migrate_v3_sql, msg, sizeof(msg)) < 0)
			goto fail;
		if (simple(c, schema_sql, msg, sizeof(msg)) < 0)
			goto fail;
		snprintf(sql, sizeof(sql), "DELETE FROM recoveryd_schema; INSERT INTO recoveryd_schema VALUES (%d)",
		         STORE_SCHEMA_VERSION);
		if (simple(c, sql, msg, sizeof(msg)) < 0)
			goto fail;
	}
	if (simple(c, "COMMIT", msg, sizeof(msg)) < 0)
		goto fail;
	return 0;
fail:
	simple(c, "ROLLBACK", NULL, 0);
	snprintf(err, errlen, "journal %s: %s", s->path, msg);
	return -1;
}

/* The listener: wait on the connection's socket (and the stop pipe);
 * each notification, and each reconnect, calls on_notify. */
static void *listen_main(void *arg)
{
	struct pg *p = arg;
	PGconn *c = NULL;
	char err[512];

	for (;;) {
		struct pollfd fds[2] = {{.fd = p->stop_fd[0], .events = POLLIN}, {.fd = -1, .events = POLLIN}};
		int woke = 0;

		if (!c) {
			PGresult *res;
			if ((c = connect_one(p->s, p->conninfo, "", err, sizeof(err)))) {
				res = PQexec(c, "LISTEN recoveryd_work");
				if (PQresultStatus(res) != PGRES_COMMAND_OK) {
					PQfinish(c);
					c = NULL;
				}
				PQclear(res);
			}
			if (c)
				p->on_notify(p->notify_arg); /* what was missed meanwhile */
		}
		fds[1].fd = c ? PQsocket(c) : -1;
		if (poll(fds, 2, c ? -1 : 1000) < 0 && errno != EINTR)
			break;
		if (fds[0].revents)
			break;
		if (c && fds[1].revents) {
			PGnotify *n;
			if (!PQconsumeInput(c) || PQstatus(c) != CONNECTION_OK) {
				PQfinish(c);
				c = NULL; /* reconnect after a pause */
				poll(fds, 1, 1000);
				continue;
			}
			while ((n = PQnotifies(c))) {
				woke = 1;
				PQfreemem(n);
			}
			if (woke)
				p->on_notify(p->notify_arg);
		}
	}
	PQfinish(c);
	return NULL;
}

static void listen_stop(struct pg *p)
{
	char b = 0;

	if (!p->listening)
		return;
	if (write(p->stop_fd[1], &b, 1) < 0)
		log_kv(LOG_ERROR, NULL, "journal: cannot stop the listener", NULL);
	pthread_join(p->listener, NULL);
	close(p->stop_fd[0]);
	close(p->stop_fd[1]);
	p->listening = 0;
}

static int pg_listen(struct store *s, void (*cb)(void *arg), void *arg)
{
	struct pg *p = pg_of(s);

	if (p && !cb) {
		listen_stop(p);
		return 0;
	}
	if (!p || p->listening || pipe2(p->stop_fd, O_CLOEXEC) < 0)
		return -1;
	p->on_notify = cb;
	p->notify_arg = arg;
	p->s = s;
	if (pthread_create(&p->listener, NULL, listen_main, p) != 0) {
		close(p->stop_fd[0]);
		close(p->stop_fd[1]);
		return -1;
	}
	p->listening = 1;
	return 0;
}

static void pg_close(struct store *s)
{
	struct pg *p = pg_of(s);

	if (!p)
		return;
	listen_stop(p);
	PQfinish(p->r);
	PQfinish(p->w);
	free(p->conninfo);
	free(p);
	s->db = NULL;
}

static int pg_open(struct store *s, char *err, size_t errlen)
{
	struct pg *p;
	char msg[512];

	if (url_has_password(s->path)) {
		/* Keep the password out of every message: user:****@host. */
		const char *user = strstr(s->path, "://") + 3;
		const char *colon = strchr(user, ':'), *at = strchr(user, '@');
		snprintf(err, errlen, "journal %.*s:****%s: a password in the URL is refused; put it in a "
		         "file (PGPASSFILE, or passfile=FILE in the URL)", (int)(colon - s->path), s->path, at);
		return -1;
	}
	p = calloc(1, sizeof(*p));
	if (!p || !(p->conninfo = strdup(s->path))) {
		free(p);
		snprintf(err, errlen, "journal %s: out of memory", s->path);
		return -1;
	}
	s->db = p;
	/* The writer touches a few rows at a time, always through an index
	 * (by id, key, owner, state): each statement is planned once, not at
	 * every run, and never as a scan of the whole table, which a plan
	 * made while the journal was small would keep doing once it is not
	 * (until an ANALYZE). */
	if (!(p->w = connect_one(s, p->conninfo, store_pg_writer_options, err, errlen)) ||
	    setup_schema(s, p->w, err, errlen) < 0 || !(p->r = connect_one(s, p->conninfo, "", err, errlen)))
		goto fail;
	if (prepare_all(p->w, wsql, W__COUNT, 'w', msg, sizeof(msg)) < 0 ||
	    prepare_all(p->r, rsql, Q__COUNT, 'q', msg, sizeof(msg)) < 0) {
		snprintf(err, errlen, "journal %s: %s", s->path, msg);
		goto fail;
	}
	p->w_ready = p->r_ready = 1;
	return 0;
fail:
	pg_close(s);
	return -1;
}

const char store_pg_writer_options[] = "-c plan_cache_mode=force_generic_plan -c enable_seqscan=off";

const char *store_pg_writer_sql(int id, const char **types)
{
	if (id < 0 || id >= W__COUNT)
		return NULL;
	*types = wsql[id].types;
	return wsql[id].sql;
}

const struct store_backend store_pg_backend = {
	.name = "postgres",
	.open = pg_open,
	.close = pg_close,
	.exec = pg_exec,
	.wquery = pg_wquery,
	.txn_lost = pg_txn_lost,
	.read_begin = pg_read_begin,
	.read_end = pg_read_end,
	.query = pg_query,
	.text = pg_text,
	.real = pg_real,
	.integer = pg_integer,
	.is_null = pg_is_null,
	.ping = pg_ping,
	.listen = pg_listen,
	.pipe = pg_pipe,
	.send = pg_send,
};

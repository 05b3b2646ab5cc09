/* What store.c (batches, the writer thread, the job record JSON) shares
 * with the backends that speak SQL to a database (store_sqlite.c,
 * store_pg.c). A backend knows statements by id and runs them with bound
 * values; it never sees a batch, a job or JSON. */
#ifndef RECOVERYD_STORE_IMPL_H
#define RECOVERYD_STORE_IMPL_H

#include <pthread.h>

#include "recoveryd/store.h"

/* Writer statements. A backend has the SQL of each, with parameters bound
 * by position (1-based, as listed in store.c where each is run). */
enum wstmt {
	W_BEGIN, W_COMMIT, W_ROLLBACK, W_SAVEPOINT, W_RELEASE, W_ROLLBACK_TO,
	W_INSERT_JOB, W_UPDATE_JOB, W_ATTEMPT, W_EVENT, W_ESC_INSERT, W_ESC_UPDATE,
	W_AUDIT, W_PAUSE, W_UNPAUSE,
	/* Leases. Those that return rows run with wquery. */
	W_JOB_LEASE,      /* rows: owner, lease_token of job ?1 (PostgreSQL: FOR SHARE) */
	W_CLAIM_JOBS,     /* rows: STORE_JOB_COLS and the stalls of up to ?2 claimable jobs at
	                     time ?1, by seq */
	W_CLAIM_JOB,      /* job ?1: owner ?2, lease_until ?3, token ?4 where the token is ?5 */
	W_CLAIM_ESCS,     /* rows: STORE_ESC_COLS of up to ?2 claimable escalations at ?1 */
	W_CLAIM_ESC,      /* escalation ?1: owner ?2, lease_until ?3 */
	W_RENEW_JOBS,     /* rows: id, lease_token of the jobs of owner ?1 renewed to ?2 */
	W_RENEW_ESCS,     /* the escalations of owner ?1 renewed to ?2 */
	W_ESC_OWNER,      /* rows: owner of escalation ?1 */
	W_EXPIRE_JOBS,    /* the leases of owner ?1 on jobs end now */
	W_EXPIRE_ESCS,    /* ... and on escalations */
	W_RELEASE_JOB,    /* job ?1 is nobody's, if owner ?2 held it */
	/* Admission (store_batch_call): the lock every replica's admission
	 * takes first, and what it reads. */
	W_ADMIT_LOCK,     /* the locks of the names hashed ?1 ("h1,h2,..."); rows: none that matter */
	W_ACTIVE_KEY,     /* rows: STORE_JOB_COLS of the unfinished jobs of key ?1 */
	W_LAST_ENDED,     /* rows: STORE_JOB_COLS of the job of key ?1 that ended last (not paused) */
	W_STARTS,         /* rows: STORE_JOB_COLS of the jobs of playbook ?1 created after ?2
	                     that started or will (not paused, not budget_exhausted) */
	W_PAUSES,         /* rows: scope, principal, reason, since, until */
	W_ADMIT_FACTS,    /* rows: STORE_JOB_COLS and 'a' of the unfinished jobs of keys ?1, ?2;
	                     'e' of the job of key ?1 that ended last (not paused); and 'k'
	                     of one job of key ?1, any */
	W_NOTIFIED,       /* one more notification folded into job ?1 */
	W_CANCEL_REQ,     /* ask the holder of job ?1 to cancel it (cancelled_by ?2) */
	W_CANCEL_REQS,    /* rows: id, cancelled_by, approved_by of the jobs of owner ?1 asked
	                     to cancel or approve */
	W_APPROVE_REQ,    /* ask the holder of job ?1 to approve it (approved_by ?2) */
	W_NOTIFY,         /* wake the replicas listening (at the commit) */
	/* A pipelined transaction (the backend's send): its savepoint, and the
	 * fence as a statement that finds one row when job ?1 holds token ?2. */
	W_SAVEPOINT_ALL, W_ROLLBACK_TO_ALL,
	W_FENCE_ROW,      /* rows: one if job ?1 has lease token ?2 (PostgreSQL: FOR SHARE) */
	/* Retention (store_batch_prune). */
	W_PRUNE_JOBS,     /* rows: one per job deleted: up to ?2 that ended before ?1, oldest
	                     first, with no escalation to send and no incident open */
	W_PRUNE_AUDIT,    /* rows: one per audit row deleted: up to ?2 older than ?1 */
	W__COUNT
};

/* Reader statements; their columns are listed in store.c. */
enum rstmt {
	Q_JOB, Q_ATTEMPTS, Q_EVENTS, Q_ESCALATIONS, Q_SCAN, Q_LIST, Q_LIST_STATE, Q_LIST_PLAYBOOK,
	Q_LIST_BOTH, Q_PAUSES, Q_AUDIT, Q_OUTBOX, Q_OPEN_INCIDENTS, Q_OPEN_INCIDENT_KEY,
	Q_PB_STARTS, Q_PB_LAST, Q_PB_COOLING, Q__COUNT
};

/* Job columns in struct job_row order, as every job statement binds and
 * every job query returns them. */
#define STORE_JOB_COLS                                                                       \
	"id, playbook, key, trigger, reason, alert_json, dry_run, state, outcome, error, "   \
	"attempts, max_attempts, notifications, created_at, updated_at, started_at, "        \
	"ended_at, next_run_at, triggered_by, cancelled_by, approval, approved_by, "            \
	"plan_attempts, owner, lease_until, lease_token"
enum job_col {
	JC_ID, JC_PLAYBOOK, JC_KEY, JC_TRIGGER, JC_REASON, JC_ALERT, JC_DRY_RUN, JC_STATE,
	JC_OUTCOME, JC_ERROR, JC_ATTEMPTS, JC_MAX_ATTEMPTS, JC_NOTIFICATIONS, JC_CREATED,
	JC_UPDATED, JC_STARTED, JC_ENDED, JC_NEXT_RUN, JC_TRIGGERED_BY, JC_CANCELLED_BY,
	JC_APPROVAL, JC_APPROVED_BY, JC_PLAN_ATTEMPTS, JC_OWNER, JC_LEASE_UNTIL, JC_LEASE_TOKEN,
	JC__COUNT
};

/* Escalation columns in struct escalation_row order, likewise. */
#define STORE_ESC_COLS                                                                        \
	"id, job_id, incident_key, sink, kind, reason, state, attempts, last_answer, created_at, " \
	"updated_at, next_attempt_at, delivered_at, payload, owner, lease_until"
enum esc_col {
	EC_ID, EC_JOB_ID, EC_INCIDENT_KEY, EC_SINK, EC_KIND, EC_REASON, EC_STATE, EC_ATTEMPTS,
	EC_LAST_ANSWER, EC_CREATED, EC_UPDATED, EC_NEXT_ATTEMPT, EC_DELIVERED, EC_PAYLOAD, EC_OWNER,
	EC_LEASE_UNTIL, EC__COUNT
};

/* A value to bind. Times are SV_REAL; 0 times are bound as SV_NULL by the
 * caller (sv_time). */
enum sv_type { SV_NULL, SV_TEXT, SV_REAL, SV_INT };
struct sval {
	enum sv_type t;
	const char *s;
	double d;
	long long i;
};

/* One row of a query, valid during the row callback only. */
struct srow;
/* Return 0 to go on, -1 to stop (the query then fails). */
typedef int (*srow_fn)(const struct srow *r, void *arg);

struct store_backend {
	const char *name;
	/* Connect (writer and reader), create or migrate the schema (a newer
	 * schema is refused). 0, or -1 with err. */
	int (*open)(struct store *s, char *err, size_t errlen);
	void (*close)(struct store *s);
	/* Writer connection (the writer thread only). 0, or -1 with err (may
	 * be NULL); *changes, if given, receives the rows the statement changed. */
	int (*exec)(struct store *s, enum wstmt id, const struct sval *v, int n, long long *changes,
	            char *err, size_t errlen);
	/* A writer statement that returns rows (the writer thread only, in
	 * the writer's transaction): fn per row, as query. 0, or -1 with err
	 * (fn's -1 stops it and fails it). */
	int (*wquery)(struct store *s, enum wstmt id, const struct sval *v, int n, srow_fn fn, void *arg,
	              char *err, size_t errlen);
	/* After a failed statement: 1 when the database ended the whole
	 * transaction (nothing of it survives), 0 when it is still open. */
	int (*txn_lost)(struct store *s);
	/* Reader connection (callers hold s->rmu): a snapshot over several
	 * queries, then a query with a callback per row. */
	int (*read_begin)(struct store *s);
	void (*read_end)(struct store *s);
	int (*query)(struct store *s, enum rstmt id, const struct sval *v, int n, srow_fn fn, void *arg);
	/* Columns of the row; NULL reads as NULL text, 0. */
	const char *(*text)(const struct srow *r, int col);
	double (*real)(const struct srow *r, int col);
	long long (*integer)(const struct srow *r, int col);
	int (*is_null)(const struct srow *r, int col);
	/* Optional: can the database be reached now (a server that may go away
	 * while nothing is written)? 0, or -1. Reader connection, s->rmu held. */
	int (*ping)(struct store *s);
	/* Optional: call cb(arg) from a thread of the backend's whenever a
	 * committed transaction ran W_NOTIFY (of any replica), and now and
	 * then after a lost connection (work may have been missed). 0, or -1.
	 * Stopped by close. */
	int (*listen)(struct store *s, void (*cb)(void *arg), void *arg);
	/* Optional: a pipeline on the writer connection (a server, where each
	 * statement waited for is a round trip). pipe(s, 1) enters it; send
	 * then queues a statement without waiting, one with must_change to
	 * change (or find) at least one row, and exec and wquery first
	 * collect every answer queued before theirs. pipe(s, 0) collects the
	 * rest and leaves the pipeline. A failed or short statement fails the
	 * transaction in the database, so that nothing sent after it runs (a
	 * COMMIT among them), and the next collect (0, or -1 with err). */
	int (*pipe)(struct store *s, int on, char *err, size_t errlen);
	int (*send)(struct store *s, enum wstmt id, const struct sval *v, int n, int must_change, char *err,
	            size_t errlen);
};

extern const struct store_backend store_sqlite_backend;
extern const struct store_backend store_pg_backend;

/* For the test of the writer's plans: its session settings, and the SQL
 * and parameter types (T text, R float8, I int8) of statement id. */
extern const char store_pg_writer_options[];
const char *store_pg_writer_sql(int id, const char **types);

struct store_batch;

struct store {
	char *path;                    /* as given, for messages (a URL without its password) */
	const struct store_backend *be;
	void *db;                      /* the backend's own state */

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
	double retry_at, retry_wait;   /* [mu] the journal is away: kept batches wait */
	int keep_tries;                /* [mu] failed rounds since close began */
	double away_since, away_logged; /* [writer] for the log */
	unsigned long txn_seq;         /* [writer] transactions begun */
	int piped;                     /* [writer] in the backend's pipeline (be->send) */

	pthread_mutex_t rmu;           /* the read connection */
	double pinged;                 /* [rmu] rd_mono() of the last ping */
	int ping_ok;                   /* [rmu] its answer */
};

/* 3: leases (jobs: owner, lease_until, lease_token; escalations: owner,
 * lease_until). */
/* 4: an index on jobs(ended_at), for retention. */
#define STORE_SCHEMA_VERSION 4

#endif

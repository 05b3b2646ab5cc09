/* The job journal: SQLite in WAL mode. One writer thread applies queued
 * batches many at a time in one transaction (group commit); readers use
 * their own connection. A batch is either fully committed or not at all.
 *
 * Ownership: store_commit takes the batch; every string handed to a
 * store_batch_* function is copied. JSON returned by reads is the caller's. */
#ifndef RECOVERYD_STORE_H
#define RECOVERYD_STORE_H

#include <cjson/cJSON.h>
#include "recoveryd/common.h"

struct store;
struct store_batch;

/* One row of the jobs table. Times are epoch seconds, 0 = unset (NULL).
 * String pointers may be NULL (stored as NULL). */
struct job_row {
	const char *id;
	const char *playbook;
	const char *key;
	const char *trigger;     /* "webhook" | "manual" | "cli" */
	const char *reason;      /* manual trigger reason */
	const char *alert_json;  /* the alert object as JSON text */
	int dry_run;
	const char *state;       /* queued running retry_wait succeeded failed
	                            cancelled budget_exhausted */
	const char *outcome;     /* set when the job ends */
	const char *error;       /* last error, or the reason of the outcome */
	int attempts;            /* attempts started so far */
	int max_attempts;        /* 1 + retries */
	int notifications;       /* notifications folded into this job */
	double created_at, updated_at, started_at, ended_at, next_run_at;
	int stalls;              /* store_scan_jobs only: "watchdog" events of the job */
	const char *triggered_by; /* principal that posted it */
	const char *cancelled_by;
	const char *approval;     /* NULL (not required), "pending", "approved" */
	const char *approved_by;
	int plan_attempts;        /* attempts that were approval plans */
};

/* One row of the audit trail: who did what, from where, when and why. */
struct audit_row {
	double ts;
	const char *principal;
	const char *role;
	const char *address;
	const char *action;       /* trigger cancel pause resume approve reject force reload */
	const char *job_id;       /* NULL when it concerns no job */
	const char *playbook;     /* NULL, or "*" for everything */
	const char *reason;
	const char *detail;       /* JSON object text or NULL */
};

struct audit_query {
	const char *principal, *action; /* NULL: any */
	double since, until;            /* 0: unbounded */
	long long before;               /* 0: newest; else rows older than this cursor */
	int limit;                      /* 1..1000 */
};

/* A pause in force: scope is a playbook name or "*" for everything. */
struct pause_row {
	const char *scope;
	const char *principal;
	const char *reason;
	double since, until;      /* until 0 = until resumed */
};

struct attempt_row {
	int n;                   /* 1-based */
	double started_at, ended_at;
	const char *result;      /* NULL while running; succeeded failed timeout
	                            cancelled interrupted */
	const char *error;
	int verify_ok;           /* -1 not run, 0 false, 1 true */
	const char *verify_reason;
};

/* One notification of the escalation outbox (DESIGN.md §5). payload is the
 * body without secrets (routing key, webhook URL are added at send time). */
struct escalation_row {
	const char *id;
	const char *job_id;
	const char *incident_key;  /* the job key: one incident per key */
	const char *sink;          /* slack | pagerduty */
	const char *kind;          /* trigger | resolve | notice */
	const char *reason;        /* failed | interrupted | budget_exhausted | ... */
	const char *state;         /* pending retrying delivered failed planned */
	int attempts;
	const char *last_answer;
	double created_at, updated_at, next_attempt_at, delivered_at;
	const char *payload;
};

/* Open (creating if needed) the journal at path; ":memory:" works for the
 * foreground `run` command and tests. */
enum rd_status store_open(const char *path, struct store **out, char *err, size_t errlen);
/* The schema version this build creates and migrates to; a journal with a
 * newer one is refused at open. */
int store_schema_version(void);
/* Commit whatever is queued, stop the writer, close. NULL is fine. */
void store_close(struct store *s);

struct store_batch *store_batch_new(void);
void store_batch_free(struct store_batch *b);
/* Queue operations; return 0, or -1 on allocation failure. */
int store_batch_insert_job(struct store_batch *b, const struct job_row *j);
/* Update every mutable column (state .. next_run_at) of job j->id. */
int store_batch_update_job(struct store_batch *b, const struct job_row *j);
/* Insert or replace attempt a->n of job_id. */
int store_batch_attempt(struct store_batch *b, const char *job_id, const struct attempt_row *a);
/* Append an event: type is "action", "log" or "admission" (others allowed);
 * detail_json is a JSON object text (NULL = {}); attempt 0 = none. */
int store_batch_event(struct store_batch *b, const char *job_id, int attempt, const char *type,
                      const char *detail_json, int planned, double ts);

/* Append an audit row. */
int store_batch_audit(struct store_batch *b, const struct audit_row *a);
/* Set (insert or replace) or clear the pause of a scope. */
int store_batch_pause(struct store_batch *b, const struct pause_row *p);
int store_batch_unpause(struct store_batch *b, const char *scope);

/* Insert an escalation row; update its state .. delivered_at by id. */
int store_batch_escalation(struct store_batch *b, const struct escalation_row *e);
int store_batch_escalation_update(struct store_batch *b, const struct escalation_row *e);

/* This batch must not be lost to a journal that is away for a while (a
 * database restart, a lost connection): when its transaction fails as a
 * whole, the writer tries it again (after 0.1 s, doubling up to 1 s) until
 * it commits, and only then reports it; batches not kept fail at once
 * meanwhile (their callers answer 503). Its own errors (a constraint)
 * still fail it. At store_close a journal still away loses it after three
 * more tries (logged). */
void store_batch_keep(struct store_batch *b);

/* Hand the batch to the writer. wait != 0: block until it is committed and
 * return RD_OK or RD_ERR. wait == 0: return RD_OK at once (errors are logged
 * and counted in recoveryd_journal_errors_total). */
enum rd_status store_commit(struct store *s, struct store_batch *b, int wait);

/* Hand the batch to the writer without waiting: done(result, arg) is
 * called on the writer thread once the batch's transaction has committed
 * (RD_OK) or failed (RD_ERR; the failure is the callback's to report), in
 * the order batches were handed over. done must be quick; it may read and
 * hand over new batches (they commit in a later transaction) but never
 * wait for a commit. Returns RD_ERR at once, without calling done, when
 * the journal is closed or b is NULL. */
typedef void (*store_done_fn)(enum rd_status result, void *arg);
enum rd_status store_commit_cb(struct store *s, struct store_batch *b, store_done_fn done, void *arg);

/* At most n batches per transaction (0 = every queued batch, the default).
 * n = 1 turns group commit off: one transaction and fsync per batch. */
void store_set_group_max(struct store *s, unsigned n);
/* 1 when the last transaction committed (readiness). */
int store_healthy(struct store *s);
/* Transactions and batches committed so far (group-commit ratio). */
void store_stats(struct store *s, unsigned long *txns, unsigned long *batches);

/* Call cb for every job that is unfinished (queued, running, retry_wait) or
 * that started or ended at or after since, oldest first. cb's row is only
 * valid during the call. */
enum rd_status store_scan_jobs(struct store *s, double since,
                               void (*cb)(const struct job_row *j, void *arg), void *arg);

/* Every pause row. */
enum rd_status store_scan_pauses(struct store *s, void (*cb)(const struct pause_row *p, void *arg),
                                 void *arg);
/* GET /api/v1/audit: {"entries":[{id, ts, principal, role, address, action,
 * job_id, playbook, reason, detail}], "next": "<cursor>" | null}, newest
 * first. */
enum rd_status store_audit_json(struct store *s, const struct audit_query *q, cJSON **out);

/* Undelivered notifications (pending, retrying), oldest first. */
enum rd_status store_scan_outbox(struct store *s,
                                 void (*cb)(const struct escalation_row *e, void *arg), void *arg);
/* Triggers not followed by a resolve for the same incident key and sink. */
enum rd_status store_scan_open_incidents(struct store *s,
                                         void (*cb)(const struct escalation_row *e, void *arg),
                                         void *arg);

/* The full job record (DESIGN.md §3) or *out = NULL when no such job:
 * {id, playbook, key, trigger, reason, dry_run, state, outcome, error,
 *  attempts_made, max_attempts, notifications, created_at, updated_at,
 *  started_at, ended_at, next_attempt_at (RFC 3339 strings or null), alert,
 *  attempts:[{n, started_at, ended_at, result, error,
 *             verify:{ok, reason} | null}],
 *  actions:[{ts, attempt, planned, ...detail}], log:[{ts, attempt, ...detail}],
 *  events:[{ts, attempt, type, ...detail}] (admissions and the rest),
 *  escalations:[]} */
enum rd_status store_job_json(struct store *s, const char *id, cJSON **out);
/* Newest first; state / playbook may be NULL (no filter); limit 1..1000.
 * Elements carry the scalar fields of the record (no alert, attempts, events). */
enum rd_status store_jobs_json(struct store *s, const char *state, const char *playbook, int limit,
                               cJSON **out);

#endif

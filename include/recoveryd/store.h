/* The job journal: SQLite in WAL mode, or PostgreSQL shared by several
 * replicas. One writer thread applies queued batches many at a time in one
 * transaction (group commit); readers use their own connection. A batch is
 * either fully committed or not at all.
 *
 * Leases (several replicas on one journal): a replica, named by an owner
 * string, claims jobs ready to run and undelivered escalation rows for a
 * while (the lease, until an epoch time it renews). Claiming a job raises
 * its lease token; a write that carries the token of an older claim is
 * refused (fenced), so a replica whose lease was taken over cannot change
 * the job any more. Times of leases are the callers' wall clocks: the
 * replicas' clocks must agree to well within a lease.
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
	int stalls;              /* store_scan_jobs and claims only: "watchdog" events of the job */
	const char *triggered_by; /* principal that posted it */
	const char *cancelled_by;
	const char *approval;     /* NULL (not required), "pending", "approved" */
	const char *approved_by;
	int plan_attempts;        /* attempts that were approval plans */
	/* The lease. owner NULL: nobody holds the job (lease_until is then
	 * stored NULL). lease_token counts the claims of the job; a write
	 * carrying it is fenced (store_batch_update_job), 0 = unfenced. */
	const char *owner;
	double lease_until;
	long long lease_token;
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

/* GET /api/v1/jobs: NULL / 0 fields are no filter. */
struct jobs_query {
	const char *state, *playbook, *alertname;
	double since, until;            /* created_at bounds, inclusive */
	long long before;               /* 0: newest; else jobs older than this cursor */
	int limit;                      /* 1..1000 */
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
	/* The replica that claimed the row to send it (store_batch_claim_outbox)
	 * and until when; NULL, 0: nobody. */
	const char *owner;
	double lease_until;
};

/* Open (creating if needed) the journal at path; ":memory:" works for the
 * foreground `run` command and tests. */
enum rd_status store_open(const char *path, struct store **out, char *err, size_t errlen);
/* 1 when path names a journal shared by several replicas (PostgreSQL). */
int store_is_shared(const char *path);
/* The schema version this build creates and migrates to; a journal with a
 * newer one is refused at open. */
int store_schema_version(void);
/* Commit whatever is queued, stop the writer, close. NULL is fine. */
void store_close(struct store *s);

struct store_batch *store_batch_new(void);
void store_batch_free(struct store_batch *b);
/* 1 when nothing was queued on b (NULL too). */
int store_batch_empty(const struct store_batch *b);
/* Queue operations; return 0, or -1 on allocation failure. */
/* Insert job j; owner, lease_until and lease_token are written as given
 * (a job may be inserted already claimed by its first owner). */
int store_batch_insert_job(struct store_batch *b, const struct job_row *j);
/* Update every mutable column (state .. plan_attempts, owner, lease_until)
 * of job j->id (notifications never go down, and a cancelled_by or
 * approved_by already set stays: other replicas may have written them);
 * the fencing and the lease as follows.
 * Fencing: with j->lease_token != 0 the update only applies while the job's
 * token is still j->lease_token; otherwise the batch fails as RD_FENCED
 * ("fenced: job ... is held by ...") and nothing of it is committed.
 * j->lease_token == 0 is unfenced (a single replica).
 * The lease: j->owner NULL releases the job (owner and lease_until become
 * NULL: do so when it ends or goes back to queued). An update naming the
 * job's current owner never shortens its lease: the later of j->lease_until
 * and the journal's stays (a renewal committed since the row was made is
 * kept; 0 keeps the journal's). The token itself only changes by a claim. */
int store_batch_update_job(struct store_batch *b, const struct job_row *j);
/* Refuse the whole batch (RD_FENCED) unless job job_id's lease token is
 * still token; put it ahead of the attempt and event writes of a job whose
 * batch has no job update. token 0: no check. On PostgreSQL the job's row
 * stays locked until the commit, so no claim can slip in between. */
int store_batch_fence(struct store_batch *b, const char *job_id, long long token);
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
/* The update is fenced by owner: it only applies while the row's owner is
 * e->owner (NULL: the row has no owner); otherwise the batch fails as
 * RD_FENCED. It releases the claim (owner and lease_until become NULL):
 * one claim, one send; unless e->lease_until is set: the owner keeps the
 * row until then (a retry it will send itself). An update of an unknown id
 * changes nothing. */
int store_batch_escalation_update(struct store_batch *b, const struct escalation_row *e);

/* This batch must not be lost to a journal that is away for a while (a
 * database restart, a lost connection): when its transaction fails as a
 * whole, the writer tries it again (after 0.1 s, doubling up to 1 s) until
 * it commits, and only then reports it; batches not kept fail at once
 * meanwhile (their callers answer 503). Its own errors (a constraint)
 * still fail it. At store_close a journal still away loses it after three
 * more tries (logged). */
void store_batch_keep(struct store_batch *b);

/* ---- decisions inside the transaction ----
 *
 * A call runs fn on the writer thread inside the transaction, at its place
 * in the batch: fn reads through t what the journal holds now (including
 * what earlier batches of the same transaction wrote) and queues writes on
 * more, which are applied right after it in the same transaction. fn's -1
 * fails the batch (with t's message, if fn set none: "the decision
 * failed"). The batch names with store_batch_lock what its call decides
 * about. fn must not
 * wait on anything but the journal, and must change nothing before its
 * first read answers: on a server, statements go pipelined and the first
 * read answers for all sent before it, so a round that fails is redone
 * batch by batch, asking again a call whose first read failed and
 * replaying (not asking again) one that got further. */
struct store_txn;
typedef int (*store_call_fn)(struct store_txn *t, struct store_batch *more, void *arg);
int store_batch_call(struct store_batch *b, store_call_fn fn, void *arg);
/* A transaction holding b first takes the admission lock of name (a job
 * key, a playbook's budget; PostgreSQL: a transaction-level advisory lock
 * on its hash): the calls of every replica that decide about one name do
 * so one transaction at a time, those about different names at once. A
 * transaction takes all its locks at its start, in one order for every
 * replica, so none waits on another in a circle. 0, or -1 (out of memory). */
int store_batch_lock(struct store_batch *b, const char *name);

enum store_txn_read {
	STR_ACTIVE,     /* the unfinished jobs of key name, oldest first */
	STR_LAST_ENDED, /* the job of key name that ended last (paused ones aside) */
	STR_STARTS,     /* the jobs of playbook name created after since that count
	                   against its budget (not paused, not budget_exhausted) */
};
/* cb per row (valid during the call only). 0, or -1 (the call should fail). */
int store_txn_jobs(struct store_txn *t, enum store_txn_read q, const char *name, double since,
                   void (*cb)(const struct job_row *j, void *arg), void *arg);
int store_txn_pauses(struct store_txn *t, void (*cb)(const struct pause_row *p, void *arg), void *arg);
/* The number of the transaction a call runs in: calls that get the same
 * number share one transaction (what one read, the next need not). */
unsigned long store_txn_seq(const struct store_txn *t);
/* What admission needs of a key in one round trip: the unfinished jobs of
 * key and of mkey (NULL: key only), ended 0, in no given order; the job
 * of key that ended last (paused ones aside), ended 1; and one job of key
 * in any state, ended 2 (none: the key is new to the journal). */
int store_txn_admission(struct store_txn *t, const char *key, const char *mkey,
                        void (*cb)(int ended, const struct job_row *j, void *arg), void *arg);
/* The jobs of owner that another replica asked to cancel (unfinished,
 * store_batch_cancel_request) or to approve (awaiting approval,
 * store_batch_approve_request), with who asked (NULL: not that). */
int store_txn_cancel_requests(struct store_txn *t, const char *owner,
                              void (*cb)(const char *job_id, const char *cancel_by, const char *approve_by,
                                         void *arg),
                              void *arg);
/* Wake the replicas listening on the journal once this batch commits
 * (PostgreSQL NOTIFY; nothing on SQLite). */
int store_batch_notify(struct store_batch *b);
/* Call cb(arg) from a thread of the journal's whenever a transaction with
 * store_batch_notify commits (any replica's), and after the listening
 * connection was lost and made again. SQLite: never (0). cb NULL: stop
 * (returns once no call is under way). 0, or -1. */
int store_listen(struct store *s, void (*cb)(void *arg), void *arg);
/* Ask whoever holds job job_id, awaiting approval, to approve it: its
 * approved_by becomes by unless set (an update of the job keeps it). */
int store_batch_approve_request(struct store_batch *b, const char *job_id, const char *by);
/* Job job_id is nobody's from now on, if owner held it. An ended job keeps
 * its owner (its lease no longer renewed) until what its end causes is
 * journaled with this in the same batch; an ended job whose lease ran out
 * is claimable (a claim of it reports its final state: escalate it). */
int store_batch_release(struct store_batch *b, const char *job_id, const char *owner);
/* One more notification was folded into job job_id (held by another
 * replica: an update of the job never lowers the count). */
int store_batch_notified(struct store_batch *b, const char *job_id);
/* Ask whoever holds the unfinished job job_id to cancel it: its
 * cancelled_by becomes by unless set (an update of the job keeps it). */
int store_batch_cancel_request(struct store_batch *b, const char *job_id, const char *by);

/* ---- claims and leases ----
 *
 * A claim is an operation of a batch: it runs in the writer's transaction,
 * at its place in the batch, and hands what it claimed to cb only once the
 * transaction has committed: on the writer thread, one call per row,
 * before the batch's done callback runs or its store_commit(wait=1)
 * returns. A batch that fails (or is fenced) claims nothing and calls no
 * cb. cb's rows are valid during the call only; like a done callback, cb
 * must be quick and never wait for a commit. Renewals report likewise.
 * now is the caller's wall clock (a lease is live while now <= lease_until);
 * until is the new lease's expiry; max is capped at 1000. Leases compare
 * the clocks of different replicas. Return 0, or -1 on allocation failure
 * or a bad argument (owner NULL or empty, max < 1, until < now). */

/* j: the job as claimed, its owner, lease_until and new lease_token
 * (the old + 1) set; j->state is unchanged (the state it was left in).
 * prev_owner: the owner whose lease expired (a takeover: the job was
 * another claim's, apply the crash rules to a running one) or NULL (the
 * job was free). */
typedef void (*store_claim_job_fn)(const struct job_row *j, const char *prev_owner, void *arg);
/* Claim up to max jobs for owner, oldest first. Claimable is a job whose
 * lease is free (no owner, or lease_until < now) and that is
 *  - queued, or
 *  - retry_wait with next_run_at <= now, or with an expired owner, or
 *  - running or awaiting_approval (with an expired owner, or none: a
 *    journal written without leases; crash rules apply).
 * A live lease is never claimed. PostgreSQL: SELECT ... FOR UPDATE SKIP
 * LOCKED, so replicas claiming at once take different jobs; SQLite has one
 * writer at a time. */
int store_batch_claim_jobs(struct store_batch *b, const char *owner, double now, double until,
                           int max, store_claim_job_fn cb, void *arg);

/* Claim up to max escalation rows to send, oldest first: pending or
 * retrying, next_attempt_at NULL or <= now, lease free (no owner, or
 * lease_until < now). e: the row as claimed (owner, lease_until set);
 * prev_owner as for jobs (its send may or may not have gone out). Send,
 * then store_batch_escalation_update with e->owner. */
typedef void (*store_claim_esc_fn)(const struct escalation_row *e, const char *prev_owner, void *arg);
int store_batch_claim_outbox(struct store_batch *b, const char *owner, double now, double until,
                             int max, store_claim_esc_fn cb, void *arg);

/* Renew every lease owner still holds: its unfinished jobs and its
 * pending or retrying escalation rows get lease_until = until (never
 * earlier than it was). A lease that expired but nobody claimed since is
 * renewed too (nobody else wrote the job: its token is unchanged); one
 * that was taken over is not, as its owner changed. On PostgreSQL a row
 * another replica's transaction holds at that moment (a claim taking it
 * over) is skipped, so renewals never wait for claims. cb, if not NULL,
 * gets each renewed job's id and token after the commit (as for claims).
 * A job the owner holds that is not among them was taken over, released,
 * or skipped: its lease is as it was, so an owner should act on a job only
 * while the last expiry it learnt (from the claim or a renewal) is ahead. */
/* Let go of every lease owner holds: its jobs and escalation rows become
 * free, claimable at once (prev_owner NULL; the crash rules still apply to
 * a running job). A replica starting again under its old name does so
 * first: its previous life is gone, and its renewals must not keep those
 * leases alive. */
int store_batch_expire(struct store_batch *b, const char *owner);

typedef void (*store_renew_fn)(const char *job_id, long long lease_token, void *arg);
/* Retention: delete up to max jobs that ended before `before` (with their
 * attempts, events and escalations), oldest first, and up to max audit
 * rows older than it. A job keeps its rows while an escalation of it is
 * still to be sent or an incident it opened is not resolved. cb (may be
 * NULL) gets the counts after the commit, on the writer thread. */
typedef void (*store_prune_fn)(int jobs, int audit, void *arg);
int store_batch_prune(struct store_batch *b, double before, int max, store_prune_fn cb, void *arg);
int store_batch_renew(struct store_batch *b, const char *owner, double until, store_renew_fn cb,
                      void *arg);

/* Hand the batch to the writer. wait != 0: block until it is committed and
 * return RD_OK, RD_FENCED (a fenced write refused it; nothing of it was
 * committed) or RD_ERR. wait == 0: return RD_OK at once (errors are logged
 * and counted in recoveryd_journal_errors_total; a fenced batch is logged
 * as a warning and not counted). */
enum rd_status store_commit(struct store *s, struct store_batch *b, int wait);

/* Hand the batch to the writer without waiting: done(result, arg) is
 * called on the writer thread once the batch's transaction has committed
 * (RD_OK) or failed (RD_ERR, or RD_FENCED when a fenced write refused
 * the batch; the failure is the callback's to report), in
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
/* Triggers not followed by a resolve for the same incident key and sink;
 * of key only, unless it is NULL. */
enum rd_status store_scan_open_incidents(struct store *s, const char *key,
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
/* The same with every filter of struct jobs_query; each element also has
 * "alertname" (null when the alert has none). *next is the cursor of the
 * next page (a later q->before), or 0 on the last page. */
enum rd_status store_jobs_page(struct store *s, const struct jobs_query *q, cJSON **out,
                               long long *next);
/* GET /api/v1/playbooks: adds "stats" to pb: {budget_used (jobs started
 * since budget_since, as the run budget counts them; null when
 * budget_since is 0), cooldowns: [{key, until}] (the newest 20 keys whose
 * last job ended after cooldown_since, until = that end + cooldown; [] when
 * cooldown_since is 0), last_job: {id, state, outcome, created_at,
 * ended_at} | null}. */
enum rd_status store_playbook_stats(struct store *s, const char *playbook, double budget_since,
                                    double cooldown_since, double cooldown, cJSON *pb);

#endif

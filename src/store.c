/* The job journal: batches, the writer thread with group commit, and the
 * job record JSON, over a backend that speaks SQL (store_impl.h): SQLite
 * (store_sqlite.c, the default) or PostgreSQL (store_pg.c).
 *
 * One writer thread owns the write connection. store_commit queues a batch;
 * the writer takes every queued batch at once, opens one transaction and
 * applies each batch inside its own SAVEPOINT, so one bad batch is rolled
 * back alone while the others share the single sync of the COMMIT. Reads
 * use a second connection behind a mutex. On a database server, where
 * every statement waited for is a round trip, the round is first sent
 * pipelined and without savepoints (run_piped); only when something in it
 * fails is it redone batch by batch as above.
 *
 * Leases are batch operations too: a claim or renewal keeps the rows it
 * got with its batch, and the writer hands them to their callbacks once
 * the transaction has committed. A fenced write fails its batch as
 * RD_FENCED (apply_op's OP_FENCED), rolled back to its savepoint like any
 * failing batch. */
#include "store_impl.h"

#include "recoveryd/log.h"
#include "recoveryd/metrics.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LIST_MAX 1000
/* A looping playbook can log without end; the record shows the newest. */
#define EVENTS_MAX 1000
#define ERR_MAX 256

enum write_kind {
	WK_INSERT_JOB, WK_UPDATE_JOB, WK_ATTEMPT, WK_EVENT, WK_ESC_INSERT, WK_ESC_UPDATE,
	WK_AUDIT, WK_PAUSE, WK_UNPAUSE, WK_FENCE, WK_CLAIM_JOBS, WK_CLAIM_ESC, WK_RENEW, WK_EXPIRE,
	WK_CALL, WK_CANCEL_REQ, WK_NOTIFIED, WK_RELEASE, WK_APPROVE_REQ, WK_NOTIFY, WK_PRUNE
};

/* What apply_op answers besides 0 and -1: the batch was fenced. */
#define OP_FENCED (-2)

/* A row a claim or renew got, kept (owned) until the commit hands it on. */
struct got {
	struct job_row job;            /* WK_CLAIM_JOBS; WK_RENEW: id and lease_token */
	struct escalation_row esc;     /* WK_CLAIM_ESC */
	char *prev_owner;              /* claims: the owner before (expired), or NULL */
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
	char *strs[ROW_STRS];          /* WK_AUDIT, WK_PAUSE, WK_UNPAUSE: bound as text;
	                                  claims, WK_RENEW: strs[0] the owner */
	double t1, t2;                 /* WK_AUDIT ts; WK_PAUSE since, until;
	                                  claims: now, until; WK_RENEW: t2 until */
	long long token;               /* WK_FENCE */
	int max;                       /* claims */
	union {                        /* claims, WK_RENEW: called after the commit */
		store_claim_job_fn job;
		store_claim_esc_fn esc;
		store_renew_fn renew;
		store_call_fn call;
		store_prune_fn prune;
	} cb;
	void *cb_arg;
	struct got *got;               /* what the op got, for cb */
	size_t n_got, cap_got;
	/* WK_CALL: it ran in this round (called), with its answer and what it
	 * queued, applied again when a pipelined round is redone. */
	int called, call_rc;
	struct store_batch *more;
};

struct store_batch {
	struct write_op *head, *tail;
	struct store_batch *next;      /* queue link */
	int detached;                  /* wait == 0: the writer frees it */
	int keep;                      /* store_batch_keep: retried while the journal is away */
	unsigned long long *locks;     /* store_batch_lock: names' hashes, taken at the BEGIN */
	size_t n_locks, cap_locks;
	int done;
	store_done_fn on_done;         /* store_commit_cb: called by the writer */
	void *on_done_arg;
	enum rd_status result;
	char err[ERR_MAX];
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
	free((char *)j->owner);
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
	dst->owner = dup_or_null(src->owner, &fail);
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
	free((char *)e->owner);
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
	d->owner = dup_or_null(src->owner, &fail);
	if (fail) {
		esc_strings_free(d);
		memset(d, 0, sizeof(*d));
		return -1;
	}
	return 0;
}

/* Forget what a claim or renewal got (its round is redone). */
static void got_reset(struct write_op *op)
{
	for (size_t i = 0; i < op->n_got; i++) {
		job_strings_free(&op->got[i].job);
		esc_strings_free(&op->got[i].esc);
		free(op->got[i].prev_owner);
	}
	op->n_got = 0;
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
	got_reset(op);
	free(op->got);
	store_batch_free(op->more);
	free(op);
}

/* ---- values ---- */

static struct sval sv_text(const char *v)
{
	return v ? (struct sval){.t = SV_TEXT, .s = v} : (struct sval){.t = SV_NULL};
}

/* Times: 0 means unset and is stored as NULL. */
static struct sval sv_time(double t)
{
	return t != 0 ? (struct sval){.t = SV_REAL, .d = t} : (struct sval){.t = SV_NULL};
}

static struct sval sv_int(long long i)
{
	return (struct sval){.t = SV_INT, .i = i};
}

static void job_values(struct sval v[JC__COUNT], const struct job_row *j)
{
	v[JC_ID] = sv_text(j->id);
	v[JC_PLAYBOOK] = sv_text(j->playbook);
	v[JC_KEY] = sv_text(j->key);
	v[JC_TRIGGER] = sv_text(j->trigger);
	v[JC_REASON] = sv_text(j->reason);
	v[JC_ALERT] = sv_text(j->alert_json);
	v[JC_DRY_RUN] = sv_int(j->dry_run != 0);
	v[JC_STATE] = sv_text(j->state);
	v[JC_OUTCOME] = sv_text(j->outcome);
	v[JC_ERROR] = sv_text(j->error);
	v[JC_ATTEMPTS] = sv_int(j->attempts);
	v[JC_MAX_ATTEMPTS] = sv_int(j->max_attempts);
	v[JC_NOTIFICATIONS] = sv_int(j->notifications);
	v[JC_CREATED] = sv_time(j->created_at);
	v[JC_UPDATED] = sv_time(j->updated_at);
	v[JC_STARTED] = sv_time(j->started_at);
	v[JC_ENDED] = sv_time(j->ended_at);
	v[JC_NEXT_RUN] = sv_time(j->next_run_at);
	v[JC_TRIGGERED_BY] = sv_text(j->triggered_by);
	v[JC_CANCELLED_BY] = sv_text(j->cancelled_by);
	v[JC_APPROVAL] = sv_text(j->approval);
	v[JC_APPROVED_BY] = sv_text(j->approved_by);
	v[JC_PLAN_ATTEMPTS] = sv_int(j->plan_attempts);
	v[JC_OWNER] = sv_text(j->owner);
	/* Nobody's lease has no expiry. */
	v[JC_LEASE_UNTIL] = j->owner ? sv_time(j->lease_until) : (struct sval){.t = SV_NULL};
	v[JC_LEASE_TOKEN] = sv_int(j->lease_token);
}

static void esc_values(struct sval v[EC__COUNT], const struct escalation_row *e)
{
	v[EC_ID] = sv_text(e->id);
	v[EC_JOB_ID] = sv_text(e->job_id);
	v[EC_INCIDENT_KEY] = sv_text(e->incident_key);
	v[EC_SINK] = sv_text(e->sink);
	v[EC_KIND] = sv_text(e->kind);
	v[EC_REASON] = sv_text(e->reason);
	v[EC_STATE] = sv_text(e->state);
	v[EC_ATTEMPTS] = sv_int(e->attempts);
	v[EC_LAST_ANSWER] = sv_text(e->last_answer);
	v[EC_CREATED] = sv_time(e->created_at);
	v[EC_UPDATED] = sv_time(e->updated_at);
	v[EC_NEXT_ATTEMPT] = sv_time(e->next_attempt_at);
	v[EC_DELIVERED] = sv_time(e->delivered_at);
	v[EC_PAYLOAD] = sv_text(e->payload);
	v[EC_OWNER] = sv_text(e->owner);
	v[EC_LEASE_UNTIL] = e->owner ? sv_time(e->lease_until) : (struct sval){.t = SV_NULL};
}

/* ---- rows ---- */

static const char *col_text(const struct store *s, const struct srow *r, int col)
{
	return s->be->text(r, col);
}

static double col_real(const struct store *s, const struct srow *r, int col)
{
	return s->be->real(r, col);
}

static int col_int(const struct store *s, const struct srow *r, int col)
{
	return (int)s->be->integer(r, col);
}

static long long col_ll(const struct store *s, const struct srow *r, int col)
{
	return s->be->integer(r, col);
}

/* A view of a job row; its strings live until the next row. */
static void job_from_row(const struct store *s, const struct srow *r, struct job_row *j)
{
	j->id = col_text(s, r, JC_ID);
	j->playbook = col_text(s, r, JC_PLAYBOOK);
	j->key = col_text(s, r, JC_KEY);
	j->trigger = col_text(s, r, JC_TRIGGER);
	j->reason = col_text(s, r, JC_REASON);
	j->alert_json = col_text(s, r, JC_ALERT);
	j->dry_run = col_int(s, r, JC_DRY_RUN);
	j->state = col_text(s, r, JC_STATE);
	j->outcome = col_text(s, r, JC_OUTCOME);
	j->error = col_text(s, r, JC_ERROR);
	j->attempts = col_int(s, r, JC_ATTEMPTS);
	j->max_attempts = col_int(s, r, JC_MAX_ATTEMPTS);
	j->notifications = col_int(s, r, JC_NOTIFICATIONS);
	j->created_at = col_real(s, r, JC_CREATED);
	j->updated_at = col_real(s, r, JC_UPDATED);
	j->started_at = col_real(s, r, JC_STARTED);
	j->ended_at = col_real(s, r, JC_ENDED);
	j->next_run_at = col_real(s, r, JC_NEXT_RUN);
	j->triggered_by = col_text(s, r, JC_TRIGGERED_BY);
	j->cancelled_by = col_text(s, r, JC_CANCELLED_BY);
	j->approval = col_text(s, r, JC_APPROVAL);
	j->approved_by = col_text(s, r, JC_APPROVED_BY);
	j->plan_attempts = col_int(s, r, JC_PLAN_ATTEMPTS);
	j->owner = col_text(s, r, JC_OWNER);
	j->lease_until = col_real(s, r, JC_LEASE_UNTIL);
	j->lease_token = col_ll(s, r, JC_LEASE_TOKEN);
	j->stalls = 0;
}

/* A view of an escalation row (STORE_ESC_COLS); its strings live until the
 * next row. */
static void esc_from_row(const struct store *s, const struct srow *r, struct escalation_row *e)
{
	e->id = col_text(s, r, EC_ID);
	e->job_id = col_text(s, r, EC_JOB_ID);
	e->incident_key = col_text(s, r, EC_INCIDENT_KEY);
	e->sink = col_text(s, r, EC_SINK);
	e->kind = col_text(s, r, EC_KIND);
	e->reason = col_text(s, r, EC_REASON);
	e->state = col_text(s, r, EC_STATE);
	e->attempts = col_int(s, r, EC_ATTEMPTS);
	e->last_answer = col_text(s, r, EC_LAST_ANSWER);
	e->created_at = col_real(s, r, EC_CREATED);
	e->updated_at = col_real(s, r, EC_UPDATED);
	e->next_attempt_at = col_real(s, r, EC_NEXT_ATTEMPT);
	e->delivered_at = col_real(s, r, EC_DELIVERED);
	e->payload = col_text(s, r, EC_PAYLOAD);
	e->owner = col_text(s, r, EC_OWNER);
	e->lease_until = col_real(s, r, EC_LEASE_UNTIL);
}

/* ---- batches ---- */

void store_batch_keep(struct store_batch *b)
{
	if (b)
		b->keep = 1;
}

struct store_batch *store_batch_new(void)
{
	return calloc(1, sizeof(struct store_batch));
}

int store_batch_empty(const struct store_batch *b)
{
	return !b || !b->head;
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
	free(b->locks);
	free(b);
}

int store_batch_lock(struct store_batch *b, const char *name)
{
	unsigned long long h = 1469598103934665603ULL; /* FNV-1a */

	if (!b || !name)
		return -1;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 1099511628211ULL;
	if (b->n_locks == b->cap_locks) {
		size_t ncap = b->cap_locks ? 2 * b->cap_locks : 4;
		unsigned long long *nv = realloc(b->locks, ncap * sizeof(*nv));
		if (!nv)
			return -1;
		b->locks = nv;
		b->cap_locks = ncap;
	}
	b->locks[b->n_locks++] = h >> 1; /* a positive bigint */
	return 0;
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

int store_batch_fence(struct store_batch *b, const char *job_id, long long token)
{
	struct write_op *op;
	int fail = 0;

	if (!b || !job_id || !(op = calloc(1, sizeof(*op))))
		return -1;
	op->kind = WK_FENCE;
	op->job_id = dup_or_null(job_id, &fail);
	op->token = token;
	if (fail) {
		write_op_free(op);
		return -1;
	}
	batch_push(b, op);
	return 0;
}

/* At most this many rows per claim. */
#define CLAIM_MAX 1000

/* A claim or renew op of owner; NULL on a bad argument or no memory. */
static struct write_op *lease_op(enum write_kind kind, const char *owner, double now, double until,
                                 int max, void *arg)
{
	struct write_op *op;
	int fail = 0;

	if (!owner || !*owner || until < now || max < 1 || !(op = calloc(1, sizeof(*op))))
		return NULL;
	op->kind = kind;
	op->strs[0] = dup_or_null(owner, &fail);
	op->t1 = now;
	op->t2 = until;
	op->max = max < CLAIM_MAX ? max : CLAIM_MAX;
	op->cb_arg = arg;
	if (fail) {
		write_op_free(op);
		return NULL;
	}
	return op;
}

int store_batch_claim_jobs(struct store_batch *b, const char *owner, double now, double until,
                           int max, store_claim_job_fn cb, void *arg)
{
	struct write_op *op = b ? lease_op(WK_CLAIM_JOBS, owner, now, until, max, arg) : NULL;

	if (!op)
		return -1;
	op->cb.job = cb;
	batch_push(b, op);
	return 0;
}

int store_batch_claim_outbox(struct store_batch *b, const char *owner, double now, double until,
                             int max, store_claim_esc_fn cb, void *arg)
{
	struct write_op *op = b ? lease_op(WK_CLAIM_ESC, owner, now, until, max, arg) : NULL;

	if (!op)
		return -1;
	op->cb.esc = cb;
	batch_push(b, op);
	return 0;
}

int store_batch_call(struct store_batch *b, store_call_fn fn, void *arg)
{
	struct write_op *op = b && fn ? calloc(1, sizeof(*op)) : NULL;

	if (!op)
		return -1;
	op->kind = WK_CALL;
	op->cb.call = fn;
	op->cb_arg = arg;
	batch_push(b, op);
	return 0;
}

/* What a call reads through: the writer's connection, in its transaction. */
struct store_txn {
	struct store *s;
	char *err;
	size_t errlen;
	int reads;                     /* reads that answered */
	int first_failed;              /* the first read failed: the call decided nothing */
};

/* A read of a call: the writer's query. Pipelined, the first also answers
 * for every statement sent before it. */
static int txn_read(struct store_txn *t, enum wstmt id, const struct sval *v, int n, srow_fn fn, void *arg)
{
	if (t->s->be->wquery(t->s, id, v, n, fn, arg, t->err, t->errlen) < 0) {
		t->first_failed = t->reads == 0;
		return -1;
	}
	t->reads++;
	return 0;
}

unsigned long store_txn_seq(const struct store_txn *t)
{
	return t->s->txn_seq;
}

struct txn_rows {
	struct store *s;
	void (*job)(const struct job_row *j, void *arg);
	void (*pause)(const struct pause_row *p, void *arg);
	void *arg;
};

static int txn_job_row(const struct srow *r, void *arg)
{
	struct txn_rows *t = arg;
	struct job_row j;

	job_from_row(t->s, r, &j);
	t->job(&j, t->arg);
	return 0;
}

static int txn_pause_row(const struct srow *r, void *arg)
{
	struct txn_rows *t = arg;
	struct pause_row p = {
		.scope = col_text(t->s, r, 0),
		.principal = col_text(t->s, r, 1),
		.reason = col_text(t->s, r, 2),
		.since = col_real(t->s, r, 3),
		.until = col_real(t->s, r, 4),
	};

	if (p.scope)
		t->pause(&p, t->arg);
	return 0;
}

int store_txn_jobs(struct store_txn *t, enum store_txn_read q, const char *name, double since,
                   void (*cb)(const struct job_row *j, void *arg), void *arg)
{
	static const enum wstmt ids[] = {[STR_ACTIVE] = W_ACTIVE_KEY, [STR_LAST_ENDED] = W_LAST_ENDED,
	                                 [STR_STARTS] = W_STARTS};
	struct sval v[2] = {sv_text(name), {.t = SV_REAL, .d = since}};
	struct txn_rows rows = {.s = t->s, .job = cb, .arg = arg};

	if ((unsigned)q >= sizeof(ids) / sizeof(ids[0]) || !name)
		return -1;
	return txn_read(t, ids[q], v, q == STR_STARTS ? 2 : 1, txn_job_row, &rows);
}

struct txn_facts {
	struct store *s;
	void (*cb)(int ended, const struct job_row *j, void *arg);
	void *arg;
};

static int txn_fact_row(const struct srow *r, void *arg)
{
	struct txn_facts *f = arg;
	struct job_row j;
	const char *kind = col_text(f->s, r, JC__COUNT);

	job_from_row(f->s, r, &j);
	f->cb(kind && kind[0] == 'e' ? 1 : kind && kind[0] == 'k' ? 2 : 0, &j, f->arg);
	return 0;
}

int store_txn_admission(struct store_txn *t, const char *key, const char *mkey,
                        void (*cb)(int ended, const struct job_row *j, void *arg), void *arg)
{
	struct sval v[2] = {sv_text(key), sv_text(mkey ? mkey : key)};
	struct txn_facts f = {t->s, cb, arg};

	if (!key)
		return -1;
	return txn_read(t, W_ADMIT_FACTS, v, 2, txn_fact_row, &f);
}

int store_txn_pauses(struct store_txn *t, void (*cb)(const struct pause_row *p, void *arg), void *arg)
{
	struct txn_rows rows = {.s = t->s, .pause = cb, .arg = arg};

	return txn_read(t, W_PAUSES, NULL, 0, txn_pause_row, &rows);
}

static int apply_op(struct store *s, struct write_op *op, char *err, size_t errlen);

static int ignore_row(const struct srow *r, void *arg)
{
	(void)r;
	(void)arg;
	return 0;
}

/* A call decides in the transaction; what it queues runs right after.
 * A call that decided in a pipelined round being redone is not asked
 * again (it changed the caller's state): its answer and writes are
 * replayed, in the same transaction and under the same admission lock, so
 * they still hold. One whose first read failed decided nothing (an earlier
 * statement may have failed) and is asked again. */
static int apply_call(struct store *s, struct write_op *op, char *err, size_t errlen)
{
	struct store_txn t = {s, err, errlen, 0, 0};
	int rc;

	if (op->called) {
		rc = op->call_rc;
		if (rc < 0)
			snprintf(err, errlen, "the decision failed");
	} else {
		if (!op->more && !(op->more = store_batch_new())) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		err[0] = '\0';
		rc = op->cb.call(&t, op->more, op->cb_arg);
		if (rc < 0 && !err[0])
			snprintf(err, errlen, "the decision failed");
		if (rc == 0 || !t.first_failed) {
			op->called = 1;
			op->call_rc = rc;
		} else {
			store_batch_free(op->more);
			op->more = NULL;
		}
	}
	for (struct write_op *m = op->more ? op->more->head : NULL; m && rc == 0; m = m->next)
		rc = apply_op(s, m, err, errlen);
	return rc;
}

int store_batch_release(struct store_batch *b, const char *job_id, const char *owner)
{
	const char *v[2] = {job_id, owner};

	return batch_add_strs(b, WK_RELEASE, v, 2, 0, 0);
}

int store_batch_notified(struct store_batch *b, const char *job_id)
{
	const char *v[1] = {job_id};

	return batch_add_strs(b, WK_NOTIFIED, v, 1, 0, 0);
}

int store_batch_cancel_request(struct store_batch *b, const char *job_id, const char *by)
{
	const char *v[2] = {job_id, by};

	return batch_add_strs(b, WK_CANCEL_REQ, v, 2, 0, 0);
}

int store_batch_notify(struct store_batch *b)
{
	return batch_add_strs(b, WK_NOTIFY, NULL, 0, 0, 0);
}

int store_listen(struct store *s, void (*cb)(void *arg), void *arg)
{
	return s && s->be->listen ? s->be->listen(s, cb, arg) : 0;
}

int store_batch_approve_request(struct store_batch *b, const char *job_id, const char *by)
{
	const char *v[2] = {job_id, by};

	return batch_add_strs(b, WK_APPROVE_REQ, v, 2, 0, 0);
}

struct txn_cancels {
	struct store *s;
	void (*cb)(const char *job_id, const char *cancel_by, const char *approve_by, void *arg);
	void *arg;
};

static int txn_cancel_row(const struct srow *r, void *arg)
{
	struct txn_cancels *c = arg;
	const char *id = col_text(c->s, r, 0);

	if (id)
		c->cb(id, col_text(c->s, r, 1), col_text(c->s, r, 2), c->arg);
	return 0;
}

int store_txn_cancel_requests(struct store_txn *t, const char *owner,
                              void (*cb)(const char *job_id, const char *cancel_by, const char *approve_by,
                                         void *arg),
                              void *arg)
{
	struct sval v[1] = {sv_text(owner)};
	struct txn_cancels c = {t->s, cb, arg};

	return txn_read(t, W_CANCEL_REQS, v, 1, txn_cancel_row, &c);
}

int store_batch_expire(struct store_batch *b, const char *owner)
{
	struct write_op *op = b ? lease_op(WK_EXPIRE, owner, 0, 0, 1, NULL) : NULL;

	if (!op)
		return -1;
	batch_push(b, op);
	return 0;
}

int store_batch_prune(struct store_batch *b, double before, int max, store_prune_fn cb, void *arg)
{
	struct write_op *op;

	if (!b || max < 1 || !(op = calloc(1, sizeof(*op))))
		return -1;
	op->kind = WK_PRUNE;
	op->t1 = before;
	op->max = max;
	op->cb.prune = cb;
	op->cb_arg = arg;
	batch_push(b, op);
	return 0;
}

int store_batch_renew(struct store_batch *b, const char *owner, double until, store_renew_fn cb,
                      void *arg)
{
	struct write_op *op = b ? lease_op(WK_RENEW, owner, until, until, 1, arg) : NULL;

	if (!op)
		return -1;
	op->cb.renew = cb;
	batch_push(b, op);
	return 0;
}

/* ---- the writer ---- */

/* Run a writer statement: 0, or -1 with the database's message in err. */
static int wexec(struct store *s, enum wstmt id, const struct sval *v, int n, char *err, size_t errlen)
{
	if (s->piped)
		return s->be->send(s, id, v, n, 0, err, errlen);
	return s->be->exec(s, id, v, n, NULL, err, errlen);
}

/* A statement that must change (or find) at least one row, or its batch
 * fails. Pipelined: sent, and one that does not fails in the database (the
 * round is redone batch by batch, which says which failed and why); else
 * 1 when it did, 0 when it did not, -1 with err. */
static int wexpect(struct store *s, enum wstmt id, const struct sval *v, int n, char *err, size_t errlen)
{
	long long changes = 0;

	if (s->piped)
		return s->be->send(s, id, v, n, 1, err, errlen) < 0 ? -1 : 1;
	if (s->be->exec(s, id, v, n, &changes, err, errlen) < 0)
		return -1;
	return changes > 0;
}

/* The next free slot of op's rows, zeroed; NULL when out of memory. */
static struct got *got_next(struct write_op *op)
{
	if (op->n_got == op->cap_got) {
		size_t ncap = op->cap_got ? op->cap_got * 2 : 8;
		struct got *nv = realloc(op->got, ncap * sizeof(*nv));
		if (!nv)
			return NULL;
		op->got = nv;
		op->cap_got = ncap;
	}
	memset(&op->got[op->n_got], 0, sizeof(op->got[0]));
	return &op->got[op->n_got];
}

/* A writer query's rows into an op. */
struct grab {
	struct store *s;
	struct write_op *op;
};

/* W_CLAIM_JOBS: the job as it is, its owner kept as prev_owner. */
static int grab_job(const struct srow *r, void *arg)
{
	struct grab *g = arg;
	struct got *dst = got_next(g->op);
	struct job_row view;

	if (!dst)
		return -1;
	job_from_row(g->s, r, &view);
	view.stalls = col_int(g->s, r, JC__COUNT); /* the poison rule at a takeover */
	if (job_copy(&dst->job, &view) < 0)
		return -1;
	dst->prev_owner = (char *)dst->job.owner;
	dst->job.owner = NULL;
	g->op->n_got++;
	return 0;
}

static int grab_esc(const struct srow *r, void *arg)
{
	struct grab *g = arg;
	struct got *dst = got_next(g->op);
	struct escalation_row view;

	if (!dst)
		return -1;
	esc_from_row(g->s, r, &view);
	if (esc_copy(&dst->esc, &view) < 0)
		return -1;
	dst->prev_owner = (char *)dst->esc.owner;
	dst->esc.owner = NULL;
	g->op->n_got++;
	return 0;
}

/* W_RENEW_JOBS: id, lease_token. */
static int grab_renewed(const struct srow *r, void *arg)
{
	struct grab *g = arg;
	struct got *dst;
	int fail = 0;

	if (!g->op->cb.renew)
		return 0; /* nobody asks which */
	if (!(dst = got_next(g->op)))
		return -1;
	dst->job.id = dup_or_null(col_text(g->s, r, 0), &fail);
	dst->job.lease_token = col_ll(g->s, r, 1);
	if (fail)
		return -1;
	g->op->n_got++;
	return 0;
}

static int count_row(const struct srow *r, void *arg)
{
	(void)r;
	(*(long long *)arg)++;
	return 0;
}

/* Retention: the counts go into op->t2 (jobs) and op->token (audit). */
static int apply_prune(struct store *s, struct write_op *op, char *err, size_t errlen)
{
	struct sval v[2] = {{.t = SV_REAL, .d = op->t1}, sv_int(op->max)};
	long long jobs = 0, audit = 0;

	if (s->be->wquery(s, W_PRUNE_JOBS, v, 2, count_row, &jobs, err, errlen) < 0 ||
	    s->be->wquery(s, W_PRUNE_AUDIT, v, 2, count_row, &audit, err, errlen) < 0)
		return -1;
	op->t2 = (double)jobs;
	op->token = audit;
	return 0;
}

/* Who holds a row: W_JOB_LEASE (owner, lease_token), W_ESC_OWNER (owner). */
struct lease {
	const struct store *s;
	int found;
	long long token;
	char owner[128];
};

static int owner_row(const struct srow *r, void *arg)
{
	struct lease *l = arg;
	const char *o = col_text(l->s, r, 0);

	l->found = 1;
	snprintf(l->owner, sizeof(l->owner), "%s", o ? o : "");
	return 0;
}

static int lease_row(const struct srow *r, void *arg)
{
	struct lease *l = arg;

	l->token = col_ll(l->s, r, 1);
	return owner_row(r, arg);
}

/* Is job id still held with token? 0 yes; OP_FENCED (err says by whom)
 * no; -1 with err: no such job (what: the operation), or the database's
 * error. */
static int check_lease(struct store *s, const char *what, const char *id, long long token, char *err,
                       size_t errlen)
{
	struct sval v[1] = {sv_text(id)};
	struct lease l = {.s = s};

	if (s->be->wquery(s, W_JOB_LEASE, v, 1, lease_row, &l, err, errlen) < 0)
		return -1;
	if (!l.found) {
		snprintf(err, errlen, "%s of unknown job %s", what, id ? id : "(null)");
		return -1;
	}
	if (l.token == token)
		return 0;
	snprintf(err, errlen, "fenced: job %s is held by %s (lease token %lld; this write holds %lld)",
	         id, l.owner[0] ? l.owner : "nobody", l.token, token);
	return OP_FENCED;
}

/* The claimed rows take owner and the new lease. */
static int claim_jobs(struct store *s, struct write_op *op, char *err, size_t errlen)
{
	struct sval v[5] = {{.t = SV_REAL, .d = op->t1}, sv_int(op->max)};
	struct grab g = {s, op};
	int rc;

	got_reset(op);
	if (s->be->wquery(s, W_CLAIM_JOBS, v, 2, grab_job, &g, err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < op->n_got; i++) {
		struct job_row *j = &op->got[i].job;
		int fail = 0;

		v[0] = sv_text(j->id);
		v[1] = sv_text(op->strs[0]);
		v[2] = (struct sval){.t = SV_REAL, .d = op->t2};
		v[3] = sv_int(j->lease_token + 1);
		v[4] = sv_int(j->lease_token);
		if ((rc = wexpect(s, W_CLAIM_JOB, v, 5, err, errlen)) < 0)
			return -1;
		if (rc == 0) {
			snprintf(err, errlen, "claim of job %s: its row changed meanwhile", j->id);
			return -1;
		}
		j->owner = dup_or_null(op->strs[0], &fail);
		if (fail) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		j->lease_until = op->t2;
		j->lease_token++;
	}
	return 0;
}

static int claim_escs(struct store *s, struct write_op *op, char *err, size_t errlen)
{
	struct sval v[3] = {{.t = SV_REAL, .d = op->t1}, sv_int(op->max)};
	struct grab g = {s, op};
	int rc;

	got_reset(op);
	if (s->be->wquery(s, W_CLAIM_ESCS, v, 2, grab_esc, &g, err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < op->n_got; i++) {
		struct escalation_row *e = &op->got[i].esc;
		int fail = 0;

		v[0] = sv_text(e->id);
		v[1] = sv_text(op->strs[0]);
		v[2] = (struct sval){.t = SV_REAL, .d = op->t2};
		if ((rc = wexpect(s, W_CLAIM_ESC, v, 3, err, errlen)) < 0)
			return -1;
		if (rc == 0) {
			snprintf(err, errlen, "claim of escalation %s: its row changed meanwhile", e->id);
			return -1;
		}
		e->owner = dup_or_null(op->strs[0], &fail);
		if (fail) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		e->lease_until = op->t2;
	}
	return 0;
}

/* 0, -1 with err, or OP_FENCED with err. */
static int apply_op(struct store *s, struct write_op *op, char *err, size_t errlen)
{
	struct sval v[(int)JC__COUNT > (int)EC__COUNT ? (int)JC__COUNT : (int)EC__COUNT];
	const struct escalation_row *e = &op->esc;

	switch (op->kind) {
	case WK_INSERT_JOB:
		job_values(v, &op->job);
		return wexec(s, W_INSERT_JOB, v, JC__COUNT, err, errlen);
	case WK_UPDATE_JOB: {
		int rc;
		job_values(v, &op->job);
		if ((rc = wexpect(s, W_UPDATE_JOB, v, JC__COUNT, err, errlen)) != 0)
			return rc < 0 ? -1 : 0;
		/* Another claim's token, or an unknown job: a caller bug that is
		 * better failed than silently journaling nothing. */
		if (op->job.lease_token != 0) {
			int rc = check_lease(s, "update", op->job.id, op->job.lease_token, err, errlen);
			if (rc != 0)
				return rc;
			snprintf(err, errlen, "update of job %s changed nothing", op->job.id);
			return -1;
		}
		snprintf(err, errlen, "update of unknown job %s", op->job.id ? op->job.id : "(null)");
		return -1;
	}
	case WK_FENCE:
		if (!op->token)
			return 0;
		if (s->piped) {
			v[0] = sv_text(op->job_id);
			v[1] = sv_int(op->token);
			return wexpect(s, W_FENCE_ROW, v, 2, err, errlen) < 0 ? -1 : 0;
		}
		return check_lease(s, "fence", op->job_id, op->token, err, errlen);
	case WK_ATTEMPT:
		v[0] = sv_text(op->job_id);
		v[1] = sv_int(op->att.n);
		v[2] = sv_time(op->att.started_at);
		v[3] = sv_time(op->att.ended_at);
		v[4] = sv_text(op->att.result);
		v[5] = sv_text(op->att.error);
		v[6] = op->att.verify_ok < 0 ? (struct sval){.t = SV_NULL} : sv_int(op->att.verify_ok != 0);
		v[7] = sv_text(op->att.verify_reason);
		return wexec(s, W_ATTEMPT, v, 8, err, errlen);
	case WK_EVENT:
		v[0] = sv_text(op->job_id);
		v[1] = sv_time(op->ts);
		v[2] = op->attempt > 0 ? sv_int(op->attempt) : (struct sval){.t = SV_NULL};
		v[3] = sv_text(op->type);
		v[4] = sv_text(op->detail);
		v[5] = sv_int(op->planned);
		return wexec(s, W_EVENT, v, 6, err, errlen);
	case WK_ESC_INSERT:
		/* One layout for both: the update binds what it sets and the id
		 * and owner; the rest is bound and unused. */
		esc_values(v, e);
		return wexec(s, W_ESC_INSERT, v, EC__COUNT, err, errlen);
	case WK_ESC_UPDATE: {
		struct lease l = {.s = s};
		int rc;
		esc_values(v, e);
		if ((rc = wexpect(s, W_ESC_UPDATE, v, EC__COUNT, err, errlen)) != 0)
			return rc < 0 ? -1 : 0;
		v[0] = sv_text(e->id);
		if (s->be->wquery(s, W_ESC_OWNER, v, 1, owner_row, &l, err, errlen) < 0)
			return -1;
		if (!l.found)
			return 0; /* an unknown id: nothing to update, as ever */
		snprintf(err, errlen, "fenced: escalation %s is held by %s, not %s", e->id,
		         l.owner[0] ? l.owner : "nobody", e->owner ? e->owner : "nobody");
		return OP_FENCED;
	}
	case WK_AUDIT:
		v[0] = (struct sval){.t = SV_REAL, .d = op->t1};
		for (int i = 0; i < 8; i++)
			v[i + 1] = sv_text(op->strs[i]);
		return wexec(s, W_AUDIT, v, 9, err, errlen);
	case WK_PAUSE:
		for (int i = 0; i < 3; i++)
			v[i] = sv_text(op->strs[i]);
		v[3] = sv_time(op->t1);
		v[4] = sv_time(op->t2);
		return wexec(s, W_PAUSE, v, 5, err, errlen);
	case WK_UNPAUSE:
		v[0] = sv_text(op->strs[0]);
		return wexec(s, W_UNPAUSE, v, 1, err, errlen);
	case WK_CLAIM_JOBS:
		return claim_jobs(s, op, err, errlen);
	case WK_CLAIM_ESC:
		return claim_escs(s, op, err, errlen);
	case WK_CALL:
		return apply_call(s, op, err, errlen);
	case WK_RELEASE:
		v[0] = sv_text(op->strs[0]);
		v[1] = sv_text(op->strs[1]);
		return wexec(s, W_RELEASE_JOB, v, 2, err, errlen);
	case WK_NOTIFY:
		if (s->piped)
			return wexec(s, W_NOTIFY, NULL, 0, err, errlen);
		return s->be->wquery(s, W_NOTIFY, NULL, 0, ignore_row, NULL, err, errlen);
	case WK_NOTIFIED:
		v[0] = sv_text(op->strs[0]);
		return wexec(s, W_NOTIFIED, v, 1, err, errlen);
	case WK_CANCEL_REQ:
	case WK_APPROVE_REQ:
		v[0] = sv_text(op->strs[0]);
		v[1] = sv_text(op->strs[1]);
		return wexec(s, op->kind == WK_CANCEL_REQ ? W_CANCEL_REQ : W_APPROVE_REQ, v, 2, err, errlen);
	case WK_EXPIRE:
		v[0] = sv_text(op->strs[0]);
		if (wexec(s, W_EXPIRE_JOBS, v, 1, err, errlen) < 0)
			return -1;
		return wexec(s, W_EXPIRE_ESCS, v, 1, err, errlen);
	case WK_PRUNE:
		return apply_prune(s, op, err, errlen);
	case WK_RENEW: {
		struct grab g = {s, op};
		got_reset(op);
		v[0] = sv_text(op->strs[0]);
		v[1] = (struct sval){.t = SV_REAL, .d = op->t2};
		if (s->be->wquery(s, W_RENEW_JOBS, v, 2, grab_renewed, &g, err, errlen) < 0)
			return -1;
		return wexec(s, W_RENEW_ESCS, v, 2, err, errlen);
	}
	}
	snprintf(err, errlen, "unknown journal operation");
	return -1;
}

/* After the commit, on the writer thread: what the claims and renewals of
 * a committed batch got goes to their callbacks. */
static void deliver(struct store_batch *b)
{
	for (struct write_op *op = b->head; op; op = op->next) {
		if (op->kind == WK_PRUNE && op->cb.prune)
			op->cb.prune((int)op->t2, (int)op->token, op->cb_arg);
		for (size_t i = 0; i < op->n_got; i++) {
			const struct got *g = &op->got[i];
			if (op->kind == WK_CLAIM_JOBS && op->cb.job)
				op->cb.job(&g->job, g->prev_owner, op->cb_arg);
			else if (op->kind == WK_CLAIM_ESC && op->cb.esc)
				op->cb.esc(&g->esc, g->prev_owner, op->cb_arg);
			else if (op->kind == WK_RENEW && op->cb.renew)
				op->cb.renew(g->job.id, g->job.lease_token, op->cb_arg);
		}
	}
}

static void fail_all(struct store_batch *list, const char *why)
{
	/* A batch that failed on its own keeps its own message, and a fenced
	 * one its result: nothing of it would have been committed anyway. */
	for (struct store_batch *b = list; b; b = b->next) {
		if (b->result == RD_OK || !b->err[0])
			snprintf(b->err, sizeof(b->err), "%s", why);
		if (b->result != RD_FENCED)
			b->result = RD_ERR;
	}
}

/* A new round: what a call decided in an earlier transaction is asked
 * again (kept batches), and no batch has a result yet. */
static void round_reset(struct store_batch *list, int calls_too)
{
	for (struct store_batch *b = list; b; b = b->next) {
		b->result = RD_OK;
		b->err[0] = '\0';
		for (struct write_op *op = b->head; op && calls_too; op = op->next) {
			if (op->kind != WK_CALL)
				continue;
			op->called = 0;
			store_batch_free(op->more);
			op->more = NULL;
		}
	}
}

static int decided(const struct store_batch *list)
{
	for (const struct store_batch *b = list; b; b = b->next)
		for (const struct write_op *op = b->head; op; op = op->next)
			if (op->kind == WK_CALL && op->called)
				return 1;
	return 0;
}

static int cmp_lock(const void *a, const void *b)
{
	unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;

	return x < y ? -1 : x > y;
}

/* The admission locks of every batch of list, in one order for every
 * replica (so none waits on another in a circle): "h1,h2,...", or NULL
 * with *fail 0 when there are none, 1 when out of memory. */
static char *lock_list(const struct store_batch *list, int *fail)
{
	unsigned long long *v;
	size_t n = 0, len = 0;
	char *out;

	*fail = 0;
	for (const struct store_batch *b = list; b; b = b->next)
		n += b->n_locks;
	if (!n)
		return NULL;
	if (!(v = malloc(n * sizeof(*v))) || !(out = malloc(n * 21 + 1))) {
		free(v);
		*fail = 1;
		return NULL;
	}
	n = 0;
	for (const struct store_batch *b = list; b; b = b->next)
		for (size_t i = 0; i < b->n_locks; i++)
			v[n++] = b->locks[i];
	qsort(v, n, sizeof(*v), cmp_lock);
	out[0] = '\0';
	for (size_t i = 0; i < n; i++)
		if (i == 0 || v[i] != v[i - 1])
			len += (size_t)sprintf(out + len, "%s%llu", len ? "," : "", v[i]);
	free(v);
	return out;
}

/* The pipelined try (a database server, where each statement waited for
 * is a round trip): every statement sent without waiting, except where a
 * claim or a call needs rows, with the COMMIT, and no savepoint per batch.
 * 0: all applied and committed; 1: something failed or was fenced,
 * and the round is rolled back to its start with the transaction and the
 * admission lock still held, to be redone batch by batch; -1 with err:
 * the transaction is lost. */
static int run_piped(struct store *s, struct store_batch *list, const char *locks, char *err, size_t errlen)
{
	char perr[ERR_MAX];
	struct sval lv[1] = {sv_text(locks)};
	int rc;

	if (s->be->pipe(s, 1, err, errlen) < 0)
		return -1;
	s->piped = 1;
	rc = wexec(s, W_BEGIN, NULL, 0, err, errlen);
	if (rc == 0 && locks)
		rc = wexec(s, W_ADMIT_LOCK, lv, 1, err, errlen);
	if (rc == 0)
		rc = wexec(s, W_SAVEPOINT_ALL, NULL, 0, err, errlen);
	for (struct store_batch *b = list; b && rc == 0; b = b->next)
		for (struct write_op *op = b->head; op && rc == 0; op = op->next)
			rc = apply_op(s, op, b->err, sizeof(b->err));
	/* Skipped by the database if anything before it failed (send). */
	if (rc == 0)
		rc = wexec(s, W_COMMIT, NULL, 0, err, errlen);
	s->piped = 0;
	if (s->be->pipe(s, 0, perr, sizeof(perr)) < 0 && rc == 0) {
		snprintf(err, errlen, "%s", perr);
		rc = -1;
	}
	if (rc == 0)
		return 0;
	if (s->be->txn_lost(s)) {
		if (!err[0])
			snprintf(err, errlen, "transaction rolled back: %s", perr);
		return -1;
	}
	if (wexec(s, W_ROLLBACK_TO_ALL, NULL, 0, err, errlen) < 0) {
		if (!s->be->txn_lost(s))
			wexec(s, W_ROLLBACK, NULL, 0, NULL, 0);
		return -1;
	}
	return 1;
}

/* Apply every batch of list in one transaction. Sets each batch's result;
 * returns RD_OK when the journal worked (the transaction committed, or a
 * batch alone failed on its own and was rolled back), else RD_ERR. */
static enum rd_status run_txn(struct store *s, struct store_batch *list)
{
	char err[ERR_MAX + 32];
	struct store_batch *b;
	/* A batch alone needs no savepoint: if it fails, so does the
	 * transaction, and nothing else is in it (two round trips fewer on a
	 * database server). */
	int alone = list && !list->next, redo = 0, nomem;
	char *locks = lock_list(list, &nomem);
	struct sval lv[1] = {sv_text(locks)};
	enum rd_status res = RD_ERR;

	err[0] = '\0';
	s->txn_seq++;
	round_reset(list, 1);
	if (nomem) {
		fail_all(list, "out of memory");
		return RD_ERR;
	}
	if (s->be->send) {
		int rc = run_piped(s, list, locks, err, sizeof(err));

		if (rc == 0) {
			res = RD_OK;
			goto out;
		}
		round_reset(list, 0);
		if (rc < 0 && decided(list)) {
			fail_all(list, err);
			goto out;
		}
		/* Lost before anything was decided (a connection that broke while
		 * idle): begun again, on a new connection. */
		redo = rc > 0;
		err[0] = '\0';
	}
	if (!redo && wexec(s, W_BEGIN, NULL, 0, err, sizeof(err)) < 0) {
		fail_all(list, err);
		goto out;
	}
	/* The admission locks, from the start of the transaction: it holds no
	 * row lock yet that another's could wait on. */
	if (!redo && locks && s->be->wquery(s, W_ADMIT_LOCK, lv, 1, ignore_row, NULL, err, sizeof(err)) < 0)
		goto abort;
	for (b = list; b; b = b->next) {
		int rc = 0;

		if (!alone && wexec(s, W_SAVEPOINT, NULL, 0, err, sizeof(err)) < 0)
			goto abort;
		for (struct write_op *op = b->head; op && rc == 0; op = op->next)
			rc = apply_op(s, op, b->err, sizeof(b->err));
		if (rc == 0) {
			b->result = RD_OK;
			if (!alone && wexec(s, W_RELEASE, NULL, 0, err, sizeof(err)) < 0)
				goto abort;
			continue;
		}
		b->result = rc == OP_FENCED ? RD_FENCED : RD_ERR;
		if (alone) {
			/* The batch failed, not the journal (unless the database
			 * ended the transaction itself): still healthy. */
			int lost = s->be->txn_lost(s);
			if (!lost)
				wexec(s, W_ROLLBACK, NULL, 0, NULL, 0);
			res = lost ? RD_ERR : RD_OK;
			goto out;
		}
		/* Some errors end the whole transaction in the database (I/O, a
		 * full disk, a lost connection): nothing of this round survives. */
		if (s->be->txn_lost(s)) {
			snprintf(err, sizeof(err), "transaction rolled back: %s", b->err);
			fail_all(list, err);
			goto out;
		}
		if (wexec(s, W_ROLLBACK_TO, NULL, 0, err, sizeof(err)) < 0 ||
		    wexec(s, W_RELEASE, NULL, 0, err, sizeof(err)) < 0)
			goto abort;
	}
	if (wexec(s, W_COMMIT, NULL, 0, err, sizeof(err)) == 0) {
		res = RD_OK;
		goto out;
	}
abort:
	if (!s->be->txn_lost(s))
		wexec(s, W_ROLLBACK, NULL, 0, NULL, 0);
	fail_all(list, err[0] ? err : "transaction failed");
out:
	free(locks);
	return res;
}

static const char *batch_job(const struct store_batch *b)
{
	const struct write_op *op = b->head;

	if (!op)
		return NULL;
	return op->kind == WK_INSERT_JOB || op->kind == WK_UPDATE_JOB ? op->job.id : op->job_id;
}

#define KEEP_RETRY_FIRST 0.1  /* seconds before a kept batch is tried again */
#define KEEP_RETRY_MAX 1.0
#define KEEP_TRIES_STOPPING 3 /* at close, a journal still away loses them */
#define AWAY_LOG_EVERY 10.0   /* seconds between "still away" lines */

/* Put the kept batches of a failed round back at the head of the queue, in
 * their order; the others are reported failed. s->mu held. Returns how many
 * were kept. */
static size_t requeue_kept(struct store *s, struct store_batch **list)
{
	struct store_batch *keep = NULL, **ktail = &keep, *rest = NULL, **rtail = &rest, *b, *next;
	size_t n = 0;

	for (b = *list; b; b = next) {
		next = b->next;
		b->next = NULL;
		if (b->keep && (!s->stopping || s->keep_tries < KEEP_TRIES_STOPPING)) {
			b->err[0] = '\0';
			b->result = RD_OK;
			*ktail = b;
			ktail = &b->next;
			n++;
		} else {
			*rtail = b;
			rtail = &b->next;
		}
	}
	if (keep) {
		*ktail = s->qhead;
		s->qhead = keep;
		if (!s->qtail)
			s->qtail = (struct store_batch *)((char *)ktail - offsetof(struct store_batch, next));
	}
	*list = rest;
	return n;
}

static void wait_until(struct store *s, double mono)
{
	struct timespec ts;
	double left = mono - rd_mono();

	if (left <= 0)
		return;
	rd_timespec_in(CLOCK_REALTIME, left, &ts); /* work_cv keeps the default clock */
	pthread_cond_timedwait(&s->work_cv, &s->mu, &ts);
}

static void *writer_main(void *arg)
{
	struct store *s = arg;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		struct store_batch *list, *b, *next, *detached = NULL, **detached_tail = &detached;
		unsigned long nok = 0;
		int committed;
		size_t kept = 0;

		while (!s->qhead && !s->stopping)
			pthread_cond_wait(&s->work_cv, &s->mu);
		if (!s->qhead)
			break; /* stopping and drained */
		/* The journal was away: a pause before the next try (new work
		 * that arrives meanwhile waits with the kept batches). */
		if (s->retry_at > rd_mono()) {
			wait_until(s, s->retry_at);
			if (s->retry_at > rd_mono() && !s->stopping)
				continue;
		}
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
		if (!committed) {
			metrics_add(M_STORE_ERRORS, NULL, NULL, 1);
			/* The journal is away (a database restart, a lost connection):
			 * what must not be lost waits for it; the rest fails now. */
			pthread_mutex_lock(&s->mu);
			s->keep_tries += s->stopping;
			kept = requeue_kept(s, &list);
			if (kept) {
				s->retry_wait = s->retry_wait > 0 ? s->retry_wait * 2 : KEEP_RETRY_FIRST;
				if (s->retry_wait > KEEP_RETRY_MAX)
					s->retry_wait = KEEP_RETRY_MAX;
				s->retry_at = rd_mono() + s->retry_wait;
			}
			pthread_mutex_unlock(&s->mu);
			if (!s->away_since || rd_mono() - s->away_logged >= AWAY_LOG_EVERY) {
				char n[24];
				snprintf(n, sizeof(n), "%zu", kept);
				log_kv(LOG_ERROR, list ? batch_job(list) : NULL, "journal transaction failed", "path",
				       s->path, "error", list ? list->err : "", "kept_batches", n, NULL);
				if (!s->away_since)
					s->away_since = rd_mono();
				s->away_logged = rd_mono();
			}
		} else if (s->away_since) {
			char secs[24];
			snprintf(secs, sizeof(secs), "%.1f", rd_mono() - s->away_since);
			log_kv(LOG_WARN, NULL, "journal back: kept batches committed", "path", s->path, "away_seconds",
			       secs, NULL);
			s->away_since = 0;
			pthread_mutex_lock(&s->mu);
			s->retry_wait = 0;
			s->retry_at = 0;
			pthread_mutex_unlock(&s->mu);
		}
		/* Nobody else reads a detached batch: report it before the
		 * waiters are woken, so a later wait=1 commit sees the count.
		 * What the claims got goes out before anyone learns the batch
		 * committed. */
		for (b = list; b; b = b->next) {
			if (b->result == RD_OK) {
				nok++;
				deliver(b);
			} else if (b->detached && b->result == RD_FENCED) {
				/* a lease lost, not a journal failure */
				log_kv(LOG_WARN, batch_job(b), "journal batch fenced", "error", b->err,
				       NULL);
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
		/* Detached batches are reported in the order they were handed
		 * over (store_commit_cb promises it). */
		for (b = list; b; b = next) {
			next = b->next; /* a woken waiter frees b */
			b->next = NULL;
			if (b->detached) {
				*detached_tail = b;
				detached_tail = &b->next;
			} else {
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

#define PING_EVERY 1.0 /* seconds a ping's answer is reused (readiness probes) */

int store_healthy(struct store *s)
{
	int h;

	if (!s)
		return 0;
	pthread_mutex_lock(&s->mu);
	h = s->healthy;
	pthread_mutex_unlock(&s->mu);
	if (h && s->be->ping) {
		/* A database server can go away while nothing is written. */
		pthread_mutex_lock(&s->rmu);
		if (rd_mono() - s->pinged >= PING_EVERY) {
			s->ping_ok = s->be->ping(s) == 0;
			s->pinged = rd_mono();
		}
		h = s->ping_ok;
		pthread_mutex_unlock(&s->rmu);
	}
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

int store_schema_version(void)
{
	return STORE_SCHEMA_VERSION;
}

static int is_pg_url(const char *path)
{
	return strncmp(path, "postgres://", 11) == 0 || strncmp(path, "postgresql://", 13) == 0;
}

int store_is_shared(const char *path)
{
	return path && is_pg_url(path);
}

enum rd_status store_open(const char *path, struct store **out, char *err, size_t errlen)
{
	struct store *s = NULL;
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
	s->be = is_pg_url(path) ? &store_pg_backend : &store_sqlite_backend;
	if (pthread_mutex_init(&s->mu, NULL) != 0 || pthread_mutex_init(&s->rmu, NULL) != 0 ||
	    pthread_cond_init(&s->work_cv, NULL) != 0 || pthread_cond_init(&s->done_cv, NULL) != 0) {
		snprintf(err, errlen, "journal %s: cannot create locks", path);
		goto out;
	}
	locks = 1;
	if (s->be->open(s, err, errlen) < 0)
		goto out;
	s->healthy = 1;
	if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
		snprintf(err, errlen, "journal %s: cannot start the writer thread", path);
		s->be->close(s);
		goto out;
	}
	s->writer_started = 1;
	*out = s;
	s = NULL;
	r = RD_OK;
out:
	if (s) {
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
	s->be->close(s);
	pthread_mutex_destroy(&s->mu);
	pthread_mutex_destroy(&s->rmu);
	pthread_cond_destroy(&s->work_cv);
	pthread_cond_destroy(&s->done_cv);
	free(s->path);
	free(s);
}

/* ---- reads ---- */

/* Column values into JSON: text or null, a time as RFC 3339 or null, an
 * integer or null. */
static int add_text(const struct store *s, cJSON *o, const char *name, const struct srow *r, int col)
{
	const char *v = col_text(s, r, col);

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

static int add_time_col(const struct store *s, cJSON *o, const char *name, const struct srow *r, int col)
{
	return add_time(o, name, col_real(s, r, col));
}

static int add_int_or_null(const struct store *s, cJSON *o, const char *name, const struct srow *r,
                           int col)
{
	if (s->be->is_null(r, col))
		return cJSON_AddNullToObject(o, name) ? 0 : -1;
	return cJSON_AddNumberToObject(o, name, col_int(s, r, col)) ? 0 : -1;
}

/* The scalar fields of a job record from a job row. */
static cJSON *job_scalars(const struct store *s, const struct srow *r)
{
	cJSON *o = cJSON_CreateObject();
	int bad = !o;

	if (bad)
		return NULL;
	bad |= add_text(s, o, "id", r, JC_ID);
	bad |= add_text(s, o, "playbook", r, JC_PLAYBOOK);
	bad |= add_text(s, o, "key", r, JC_KEY);
	bad |= add_text(s, o, "trigger", r, JC_TRIGGER);
	bad |= add_text(s, o, "reason", r, JC_REASON);
	bad |= !cJSON_AddBoolToObject(o, "dry_run", col_int(s, r, JC_DRY_RUN));
	bad |= add_text(s, o, "state", r, JC_STATE);
	bad |= add_text(s, o, "outcome", r, JC_OUTCOME);
	bad |= add_text(s, o, "error", r, JC_ERROR);
	bad |= !cJSON_AddNumberToObject(o, "attempts_made", col_int(s, r, JC_ATTEMPTS));
	bad |= !cJSON_AddNumberToObject(o, "max_attempts", col_int(s, r, JC_MAX_ATTEMPTS));
	bad |= !cJSON_AddNumberToObject(o, "notifications", col_int(s, r, JC_NOTIFICATIONS));
	bad |= add_time_col(s, o, "created_at", r, JC_CREATED);
	bad |= add_time_col(s, o, "updated_at", r, JC_UPDATED);
	bad |= add_time_col(s, o, "started_at", r, JC_STARTED);
	bad |= add_time_col(s, o, "ended_at", r, JC_ENDED);
	bad |= add_time_col(s, o, "next_attempt_at", r, JC_NEXT_RUN);
	bad |= add_text(s, o, "triggered_by", r, JC_TRIGGERED_BY);
	bad |= add_text(s, o, "cancelled_by", r, JC_CANCELLED_BY);
	/* The replica holding its lease (a shared journal), else null. */
	bad |= add_text(s, o, "owner", r, JC_OWNER);
	if (!s->be->is_null(r, JC_APPROVAL)) {
		cJSON *ap = cJSON_AddObjectToObject(o, "approval");
		bad |= !ap || add_text(s, ap, "state", r, JC_APPROVAL) ||
		       add_text(s, ap, "approved_by", r, JC_APPROVED_BY) ||
		       !cJSON_AddNumberToObject(ap, "plan_attempt", col_int(s, r, JC_PLAN_ATTEMPTS));
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

/* A read in progress: the store and where its rows go. */
struct reading {
	struct store *s;
	cJSON *rec, *arr, *actions, *logs, *events, *first;
	int n;
	int limit;  /* audit: the page size */
	long long last; /* audit: the id of the page's last row */
};

static int attempt_row(const struct srow *r, void *arg)
{
	struct reading *rd = arg;
	const struct store *s = rd->s;
	cJSON *a = cJSON_CreateObject(), *v;
	int bad = 0;

	if (!a || !cJSON_AddItemToArray(rd->arr, a)) {
		cJSON_Delete(a);
		return -1;
	}
	bad |= !cJSON_AddNumberToObject(a, "n", col_int(s, r, 0));
	bad |= add_time_col(s, a, "started_at", r, 1);
	bad |= add_time_col(s, a, "ended_at", r, 2);
	bad |= add_text(s, a, "result", r, 3);
	bad |= add_text(s, a, "error", r, 4);
	if (s->be->is_null(r, 5)) {
		bad |= !cJSON_AddNullToObject(a, "verify");
	} else if ((v = cJSON_AddObjectToObject(a, "verify"))) {
		bad |= !cJSON_AddBoolToObject(v, "ok", col_int(s, r, 5));
		bad |= add_text(s, v, "reason", r, 6);
	} else {
		bad = 1;
	}
	return bad ? -1 : 0;
}

static int read_attempts(struct store *s, const char *id, cJSON *arr)
{
	struct reading rd = {.s = s, .arr = arr};
	struct sval v[1] = {sv_text(id)};

	return s->be->query(s, Q_ATTEMPTS, v, 1, attempt_row, &rd);
}

static int event_row(const struct srow *r, void *arg)
{
	struct reading *rd = arg;
	const struct store *s = rd->s;
	const char *type = col_text(s, r, 2);
	cJSON *e, *arr = rd->events;
	int bad = 0;

	if (type && strcmp(type, "action") == 0)
		arr = rd->actions;
	else if (type && strcmp(type, "log") == 0)
		arr = rd->logs;
	e = cJSON_CreateObject();
	if (!e || !cJSON_AddItemToArray(arr, e)) {
		cJSON_Delete(e);
		return -1;
	}
	if (rd->n++ == 0)
		rd->first = arr;
	bad |= add_time_col(s, e, "ts", r, 0);
	bad |= add_int_or_null(s, e, "attempt", r, 1);
	if (arr == rd->actions)
		bad |= !cJSON_AddBoolToObject(e, "planned", col_int(s, r, 4));
	else if (arr == rd->events)
		bad |= !cJSON_AddStringToObject(e, "type", type ? type : "");
	bad |= merge_detail(e, col_text(s, r, 3));
	return bad ? -1 : 0;
}

static int read_events(struct store *s, const char *id, cJSON *rec)
{
	struct reading rd = {.s = s, .rec = rec};
	struct sval v[2] = {sv_text(id), sv_int(EVENTS_MAX + 1)};

	rd.actions = cJSON_AddArrayToObject(rec, "actions");
	rd.logs = cJSON_AddArrayToObject(rec, "log");
	rd.events = cJSON_AddArrayToObject(rec, "events");
	if (!rd.actions || !rd.logs || !rd.events)
		return -1;
	/* One row more than the cap tells whether older ones were left out. */
	if (s->be->query(s, Q_EVENTS, v, 2, event_row, &rd) < 0)
		return -1;
	/* The oldest row is the extra one: it heads its array. */
	if (rd.n > EVENTS_MAX) {
		cJSON_DeleteItemFromArray(rd.first, 0);
		if (!cJSON_AddTrueToObject(rec, "events_truncated"))
			return -1;
	}
	return 0;
}

static int escalation_row(const struct srow *r, void *arg)
{
	struct reading *rd = arg;
	const struct store *s = rd->s;
	cJSON *e = cJSON_CreateObject();
	int bad = 0;

	if (!e || !cJSON_AddItemToArray(rd->arr, e)) {
		cJSON_Delete(e);
		return -1;
	}
	bad |= add_text(s, e, "sink", r, 0);
	bad |= add_text(s, e, "state", r, 1);
	bad |= !cJSON_AddNumberToObject(e, "attempts", col_int(s, r, 2));
	bad |= add_text(s, e, "last_answer", r, 3);
	bad |= add_time_col(s, e, "created_at", r, 4);
	bad |= add_time_col(s, e, "updated_at", r, 5);
	bad |= add_text(s, e, "id", r, 6);
	bad |= add_text(s, e, "kind", r, 7);
	bad |= add_text(s, e, "reason", r, 8);
	bad |= add_time_col(s, e, "delivered_at", r, 9);
	bad |= add_time_col(s, e, "next_attempt_at", r, 10);
	return bad ? -1 : 0;
}

static int read_escalations(struct store *s, const char *id, cJSON *rec)
{
	struct reading rd = {.s = s, .arr = cJSON_AddArrayToObject(rec, "escalations")};
	struct sval v[1] = {sv_text(id)};

	if (!rd.arr)
		return -1;
	return s->be->query(s, Q_ESCALATIONS, v, 1, escalation_row, &rd);
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

/* The job row of Q_JOB as a record with its alert. */
static int job_row_json(const struct srow *r, void *arg)
{
	struct reading *rd = arg;
	const char *aj = col_text(rd->s, r, JC_ALERT);
	cJSON *alert;

	rd->rec = job_scalars(rd->s, r);
	alert = aj ? cJSON_Parse(aj) : NULL;
	if (rd->rec && !alert)
		alert = cJSON_CreateNull();
	if (!rd->rec || !alert || !cJSON_AddItemToObject(rd->rec, "alert", alert)) {
		cJSON_Delete(alert);
		return -1;
	}
	return 0;
}

enum rd_status store_job_json(struct store *s, const char *id, cJSON **out)
{
	struct reading rd = {.s = s};
	struct sval v[1] = {sv_text(id)};
	enum rd_status r = RD_ERR;
	cJSON *arr;

	*out = NULL;
	if (!s || !id)
		return RD_ERR;
	pthread_mutex_lock(&s->rmu);
	if (s->be->read_begin(s) < 0)
		goto out;
	if (s->be->query(s, Q_JOB, v, 1, job_row_json, &rd) < 0) {
		r = rd.rec ? RD_NOMEM : RD_ERR;
		goto out;
	}
	if (!rd.rec) {
		r = RD_OK; /* no such job */
		goto out;
	}
	arr = cJSON_AddArrayToObject(rd.rec, "attempts");
	if (!arr || read_attempts(s, id, arr) < 0 || read_events(s, id, rd.rec) < 0 ||
	    read_escalations(s, id, rd.rec) < 0 || add_plan(rd.rec) < 0)
		goto out;
	*out = rd.rec;
	rd.rec = NULL;
	r = RD_OK;
out:
	s->be->read_end(s);
	pthread_mutex_unlock(&s->rmu);
	cJSON_Delete(rd.rec);
	return r;
}

/* A list row: the job's columns, then its seq and alertname. */
static int list_row(const struct srow *r, void *arg)
{
	struct reading *rd = arg;
	cJSON *j;

	/* The row past the page only says there is a next page. */
	if (++rd->n > rd->limit)
		return 0;
	j = job_scalars(rd->s, r);
	rd->last = col_int(rd->s, r, JC__COUNT);
	if (!j || add_text(rd->s, j, "alertname", r, JC__COUNT + 1) ||
	    !cJSON_AddItemToArray(rd->arr, j)) {
		cJSON_Delete(j);
		return -1;
	}
	return 0;
}

enum rd_status store_jobs_page(struct store *s, const struct jobs_query *q, cJSON **out,
                               long long *next)
{
	struct reading rd = {.s = s};
	int limit = q->limit < 1 ? 1 : q->limit > LIST_MAX ? LIST_MAX : q->limit;
	/* The page's row past the limit tells whether there is a next one. */
	struct sval v[7] = {sv_text(q->state), sv_text(q->playbook), sv_int(limit + 1),
	                    q->before > 0 ? sv_int(q->before) : (struct sval){.t = SV_NULL},
	                    sv_time(q->since), sv_time(q->until), sv_text(q->alertname)};
	enum rd_status r = RD_ERR;
	int id = q->state ? (q->playbook ? Q_LIST_BOTH : Q_LIST_STATE)
	                  : (q->playbook ? Q_LIST_PLAYBOOK : Q_LIST);

	*out = NULL;
	*next = 0;
	if (!s)
		return RD_ERR;
	if (!(rd.arr = cJSON_CreateArray()))
		return RD_NOMEM;
	rd.limit = limit;
	pthread_mutex_lock(&s->rmu);
	if (s->be->query(s, id, v, 7, list_row, &rd) == 0) {
		*out = rd.arr;
		rd.arr = NULL;
		*next = rd.n > limit ? rd.last : 0;
		r = RD_OK;
	}
	pthread_mutex_unlock(&s->rmu);
	cJSON_Delete(rd.arr);
	return r;
}

enum rd_status store_jobs_json(struct store *s, const char *state, const char *playbook, int limit,
                               cJSON **out)
{
	struct jobs_query q = {.state = state, .playbook = playbook, .limit = limit};
	long long next;

	return store_jobs_page(s, &q, out, &next);
}

/* store_playbook_stats: one callback per statement. */
struct pb_stats {
	const struct store *s;
	cJSON *o;        /* the stats object */
	cJSON *cool;     /* its cooldowns array */
	double cooldown;
	int bad;
};

static int pb_starts_row(const struct srow *r, void *arg)
{
	struct pb_stats *p = arg;

	p->bad |= !cJSON_AddNumberToObject(p->o, "budget_used", (double)col_int(p->s, r, 0));
	return 0;
}

static int pb_last_row(const struct srow *r, void *arg)
{
	struct pb_stats *p = arg;
	cJSON *j = cJSON_AddObjectToObject(p->o, "last_job");

	p->bad |= !j || add_text(p->s, j, "id", r, 0) || add_text(p->s, j, "state", r, 1) ||
	          add_text(p->s, j, "outcome", r, 2) || add_time_col(p->s, j, "created_at", r, 3) ||
	          add_time_col(p->s, j, "ended_at", r, 4);
	return 0;
}

static int pb_cool_row(const struct srow *r, void *arg)
{
	struct pb_stats *p = arg;
	cJSON *c = cJSON_CreateObject();

	if (!c || !cJSON_AddItemToArray(p->cool, c)) {
		cJSON_Delete(c);
		p->bad = 1;
		return 0;
	}
	p->bad |= add_text(p->s, c, "key", r, 0) ||
	          add_time(c, "until", col_real(p->s, r, 1) + p->cooldown);
	return 0;
}

enum rd_status store_playbook_stats(struct store *s, const char *playbook, double budget_since,
                                    double cooldown_since, double cooldown, cJSON *pb)
{
	struct pb_stats p = {.s = s, .cooldown = cooldown};
	struct sval v[3] = {sv_text(playbook), {.t = SV_REAL, .d = budget_since}, sv_int(20)};
	int rc = 0;

	if (!s || !(p.o = cJSON_AddObjectToObject(pb, "stats")) ||
	    !(p.cool = cJSON_CreateArray()))
		return RD_NOMEM;
	pthread_mutex_lock(&s->rmu);
	if (s->be->read_begin(s) < 0) {
		rc = -1;
		goto out;
	}
	if (budget_since > 0)
		rc = s->be->query(s, Q_PB_STARTS, v, 2, pb_starts_row, &p);
	else
		p.bad |= !cJSON_AddNullToObject(p.o, "budget_used");
	if (rc == 0 && cooldown_since > 0) {
		v[1].d = cooldown_since;
		rc = s->be->query(s, Q_PB_COOLING, v, 3, pb_cool_row, &p);
	}
	if (rc == 0)
		rc = s->be->query(s, Q_PB_LAST, v, 1, pb_last_row, &p);
out:
	s->be->read_end(s);
	pthread_mutex_unlock(&s->rmu);
	if (!cJSON_AddItemToObject(p.o, "cooldowns", p.cool)) {
		cJSON_Delete(p.cool);
		p.bad = 1;
	}
	if (rc == 0 && !p.bad && !cJSON_GetObjectItemCaseSensitive(p.o, "last_job"))
		p.bad |= !cJSON_AddNullToObject(p.o, "last_job");
	return rc < 0 ? RD_ERR : p.bad ? RD_NOMEM : RD_OK;
}

/* Rows copied out of a scan, handed to the callback once the read
 * connection is released (so the callback may commit or read itself). */
struct copied {
	struct store *s;
	void *v;
	size_t n, cap, size;
};

static void *copied_next(struct copied *c)
{
	if (c->n == c->cap) {
		size_t ncap = c->cap ? c->cap * 2 : 64;
		void *nv = realloc(c->v, ncap * c->size);
		if (!nv)
			return NULL;
		c->v = nv;
		c->cap = ncap;
	}
	return (char *)c->v + c->n * c->size;
}

static int scan_job_row(const struct srow *r, void *arg)
{
	struct copied *c = arg;
	struct job_row view, *dst = copied_next(c);

	if (!dst)
		return -1;
	job_from_row(c->s, r, &view);
	view.stalls = col_int(c->s, r, JC__COUNT);
	if (job_copy(dst, &view) < 0)
		return -1;
	c->n++;
	return 0;
}

enum rd_status store_scan_jobs(struct store *s, double since,
                               void (*cb)(const struct job_row *j, void *arg), void *arg)
{
	struct copied c = {.s = s, .size = sizeof(struct job_row)};
	struct sval v[1] = {{.t = SV_REAL, .d = since}};
	struct job_row *rows;
	int rc;

	if (!s || !cb)
		return RD_ERR;
	pthread_mutex_lock(&s->rmu);
	rc = s->be->query(s, Q_SCAN, v, 1, scan_job_row, &c);
	pthread_mutex_unlock(&s->rmu);
	rows = c.v;
	if (rc == 0)
		for (size_t i = 0; i < c.n; i++)
			cb(&rows[i], arg);
	for (size_t i = 0; i < c.n; i++)
		job_strings_free(&rows[i]);
	free(rows);
	return rc == 0 ? RD_OK : RD_ERR;
}

void store_set_group_max(struct store *s, unsigned n)
{
	pthread_mutex_lock(&s->mu);
	s->group_max = n;
	pthread_mutex_unlock(&s->mu);
}

static int scan_esc_row(const struct srow *r, void *arg)
{
	struct copied *c = arg;
	struct escalation_row v = {0}, *dst = copied_next(c);

	if (!dst)
		return -1;
	esc_from_row(c->s, r, &v);
	if (esc_copy(dst, &v) < 0)
		return -1;
	c->n++;
	return 0;
}

/* Escalation rows of query id, handed to cb after the read connection is
 * released. */
static enum rd_status scan_esc(struct store *s, enum rstmt id, const char *key,
                               void (*cb)(const struct escalation_row *e, void *arg), void *arg)
{
	struct sval v[1] = {sv_text(key)};
	struct copied c = {.s = s, .size = sizeof(struct escalation_row)};
	struct escalation_row *rows;
	int rc;

	if (!s || !cb)
		return RD_ERR;
	pthread_mutex_lock(&s->rmu);
	rc = s->be->query(s, id, v, key ? 1 : 0, scan_esc_row, &c);
	pthread_mutex_unlock(&s->rmu);
	rows = c.v;
	if (rc == 0)
		for (size_t i = 0; i < c.n; i++)
			cb(&rows[i], arg);
	for (size_t i = 0; i < c.n; i++)
		esc_strings_free(&rows[i]);
	free(rows);
	return rc == 0 ? RD_OK : RD_ERR;
}

enum rd_status store_scan_outbox(struct store *s,
                                 void (*cb)(const struct escalation_row *e, void *arg), void *arg)
{
	return scan_esc(s, Q_OUTBOX, NULL, cb, arg);
}

enum rd_status store_scan_open_incidents(struct store *s, const char *key,
                                         void (*cb)(const struct escalation_row *e, void *arg),
                                         void *arg)
{
	return key ? scan_esc(s, Q_OPEN_INCIDENT_KEY, key, cb, arg) : scan_esc(s, Q_OPEN_INCIDENTS, NULL, cb, arg);
}

struct pause_scan {
	struct store *s;
	void (*cb)(const struct pause_row *p, void *arg);
	void *arg;
};

static int pause_row(const struct srow *r, void *arg)
{
	struct pause_scan *ps = arg;
	const struct store *s = ps->s;
	struct pause_row p = {
		.scope = col_text(s, r, 0),
		.principal = col_text(s, r, 1),
		.reason = col_text(s, r, 2),
		.since = col_real(s, r, 3),
		.until = col_real(s, r, 4),
	};

	if (p.scope)
		ps->cb(&p, ps->arg);
	return 0;
}

/* Few rows, read at start-up only: the callback runs during the read. */
enum rd_status store_scan_pauses(struct store *s, void (*cb)(const struct pause_row *p, void *arg),
                                 void *arg)
{
	struct pause_scan ps = {s, cb, arg};
	int rc = -1;

	pthread_mutex_lock(&s->rmu);
	if (s->be->read_begin(s) == 0)
		rc = s->be->query(s, Q_PAUSES, NULL, 0, pause_row, &ps);
	s->be->read_end(s);
	pthread_mutex_unlock(&s->rmu);
	return rc == 0 ? RD_OK : RD_ERR;
}

static int audit_row(const struct srow *r, void *arg)
{
	struct reading *rd = arg;
	const struct store *s = rd->s;
	cJSON *e;
	int bad = 0;

	/* One row past the page: it only says that another page follows. */
	if (rd->n++ == rd->limit)
		return 0;
	e = cJSON_CreateObject();
	if (!e || !cJSON_AddItemToArray(rd->arr, e)) {
		cJSON_Delete(e);
		return -1;
	}
	rd->last = s->be->integer(r, 0);
	bad |= !cJSON_AddNumberToObject(e, "id", (double)rd->last);
	bad |= add_time_col(s, e, "ts", r, 1);
	bad |= add_text(s, e, "principal", r, 2);
	bad |= add_text(s, e, "role", r, 3);
	bad |= add_text(s, e, "address", r, 4);
	bad |= add_text(s, e, "action", r, 5);
	bad |= add_text(s, e, "job_id", r, 6);
	bad |= add_text(s, e, "playbook", r, 7);
	bad |= add_text(s, e, "reason", r, 8);
	if (s->be->is_null(r, 9)) {
		bad |= !cJSON_AddNullToObject(e, "detail");
	} else {
		cJSON *d = cJSON_Parse(col_text(s, r, 9));
		bad |= !d || !cJSON_AddItemToObject(e, "detail", d);
	}
	return bad ? -1 : 0;
}

enum rd_status store_audit_json(struct store *s, const struct audit_query *q, cJSON **out)
{
	struct reading rd = {.s = s};
	int limit = q->limit > 0 && q->limit <= LIST_MAX ? q->limit : 100, rc = -1;
	struct sval v[6] = {sv_text(q->principal), sv_text(q->action), sv_time(q->since),
	                    sv_time(q->until),
	                    q->before > 0 ? sv_int(q->before) : (struct sval){.t = SV_NULL},
	                    sv_int(limit + 1)};
	cJSON *o = cJSON_CreateObject();

	*out = NULL;
	rd.arr = o ? cJSON_AddArrayToObject(o, "entries") : NULL;
	rd.limit = limit;
	if (!rd.arr) {
		cJSON_Delete(o);
		return RD_NOMEM;
	}
	pthread_mutex_lock(&s->rmu);
	if (s->be->read_begin(s) == 0)
		rc = s->be->query(s, Q_AUDIT, v, 6, audit_row, &rd);
	s->be->read_end(s);
	pthread_mutex_unlock(&s->rmu);
	if (rc < 0) {
		cJSON_Delete(o);
		return RD_ERR;
	}
	/* A full page with a row behind it: the cursor for the next. */
	if (rd.n > limit) {
		char cur[24];
		snprintf(cur, sizeof(cur), "%lld", rd.last);
		if (!cJSON_AddStringToObject(o, "next", cur)) {
			cJSON_Delete(o);
			return RD_NOMEM;
		}
	} else if (!cJSON_AddNullToObject(o, "next")) {
		cJSON_Delete(o);
		return RD_NOMEM;
	}
	*out = o;
	return RD_OK;
}

/* The in-memory journal of fake_store.h. Rows live as cJSON objects; the
 * real store's SQL is mirrored only as far as callers can see it (which
 * columns an update touches, which jobs a scan returns, what a record
 * holds). */
#include "fake_store.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recoveryd/common.h"

struct store {
	pthread_mutex_t mu;
	cJSON *jobs;        /* id -> row (+ "_attempts", "_events", "stalls") */
	cJSON *escalations; /* rows in insertion order */
	cJSON *log;         /* committed batches */
	cJSON *pauses;      /* scope -> pause row */
	cJSON *audit;       /* audit rows in order */
	int fail, commits, failed;
	int healthy;
	int defer;          /* store_commit_cb holds batches until fake_store_flush */
	struct held *held;  /* oldest first */
};

/* A batch handed to store_commit_cb while deferring. */
struct held {
	struct store_batch *b;
	store_done_fn done;
	void *arg;
	struct held *next;
};

struct store_batch {
	cJSON *ops;
};

/* ---- helpers ---- */

static void put_str(cJSON *o, const char *k, const char *v)
{
	if (v)
		cJSON_AddStringToObject(o, k, v);
	else
		cJSON_AddNullToObject(o, k);
}

static const char *get_str(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double get_num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* Replace (or add) o[k] with v. */
static void set_item(cJSON *o, const char *k, cJSON *v)
{
	if (cJSON_GetObjectItemCaseSensitive(o, k))
		cJSON_ReplaceItemInObjectCaseSensitive(o, k, v);
	else
		cJSON_AddItemToObject(o, k, v);
}

static const char *const job_mutable[] = {
	"state", "outcome", "error", "attempts", "max_attempts", "notifications",
	"created_at", "updated_at", "started_at", "ended_at", "next_run_at",
	"cancelled_by", "approval", "approved_by", "plan_attempts",
};

static cJSON *job_json(const char *op, const struct job_row *j)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "op", op);
	put_str(o, "id", j->id);
	put_str(o, "playbook", j->playbook);
	put_str(o, "key", j->key);
	put_str(o, "trigger", j->trigger);
	put_str(o, "reason", j->reason);
	put_str(o, "alert_json", j->alert_json);
	cJSON_AddNumberToObject(o, "dry_run", j->dry_run);
	put_str(o, "state", j->state);
	put_str(o, "outcome", j->outcome);
	put_str(o, "error", j->error);
	cJSON_AddNumberToObject(o, "attempts", j->attempts);
	cJSON_AddNumberToObject(o, "max_attempts", j->max_attempts);
	cJSON_AddNumberToObject(o, "notifications", j->notifications);
	cJSON_AddNumberToObject(o, "created_at", j->created_at);
	cJSON_AddNumberToObject(o, "updated_at", j->updated_at);
	cJSON_AddNumberToObject(o, "started_at", j->started_at);
	cJSON_AddNumberToObject(o, "ended_at", j->ended_at);
	cJSON_AddNumberToObject(o, "next_run_at", j->next_run_at);
	put_str(o, "triggered_by", j->triggered_by);
	put_str(o, "cancelled_by", j->cancelled_by);
	put_str(o, "approval", j->approval);
	put_str(o, "approved_by", j->approved_by);
	cJSON_AddNumberToObject(o, "plan_attempts", j->plan_attempts);
	return o;
}

static cJSON *esc_json(const char *op, const struct escalation_row *e)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "op", op);
	put_str(o, "id", e->id);
	put_str(o, "job_id", e->job_id);
	put_str(o, "incident_key", e->incident_key);
	put_str(o, "sink", e->sink);
	put_str(o, "kind", e->kind);
	put_str(o, "reason", e->reason);
	put_str(o, "state", e->state);
	cJSON_AddNumberToObject(o, "attempts", e->attempts);
	put_str(o, "last_answer", e->last_answer);
	cJSON_AddNumberToObject(o, "created_at", e->created_at);
	cJSON_AddNumberToObject(o, "updated_at", e->updated_at);
	cJSON_AddNumberToObject(o, "next_attempt_at", e->next_attempt_at);
	cJSON_AddNumberToObject(o, "delivered_at", e->delivered_at);
	put_str(o, "payload", e->payload);
	return o;
}

/* A job_row view of a row object (pointers into it). */
static void row_view(const cJSON *o, struct job_row *j)
{
	*j = (struct job_row){
		.id = get_str(o, "id"), .playbook = get_str(o, "playbook"), .key = get_str(o, "key"),
		.trigger = get_str(o, "trigger"), .reason = get_str(o, "reason"),
		.alert_json = get_str(o, "alert_json"), .dry_run = (int)get_num(o, "dry_run"),
		.state = get_str(o, "state"), .outcome = get_str(o, "outcome"), .error = get_str(o, "error"),
		.attempts = (int)get_num(o, "attempts"), .max_attempts = (int)get_num(o, "max_attempts"),
		.notifications = (int)get_num(o, "notifications"), .created_at = get_num(o, "created_at"),
		.updated_at = get_num(o, "updated_at"), .started_at = get_num(o, "started_at"),
		.ended_at = get_num(o, "ended_at"), .next_run_at = get_num(o, "next_run_at"),
		.stalls = (int)get_num(o, "stalls"), .triggered_by = get_str(o, "triggered_by"),
		.cancelled_by = get_str(o, "cancelled_by"), .approval = get_str(o, "approval"),
		.approved_by = get_str(o, "approved_by"), .plan_attempts = (int)get_num(o, "plan_attempts"),
	};
}

static void esc_view(const cJSON *o, struct escalation_row *e)
{
	*e = (struct escalation_row){
		.id = get_str(o, "id"), .job_id = get_str(o, "job_id"),
		.incident_key = get_str(o, "incident_key"), .sink = get_str(o, "sink"),
		.kind = get_str(o, "kind"), .reason = get_str(o, "reason"), .state = get_str(o, "state"),
		.attempts = (int)get_num(o, "attempts"), .last_answer = get_str(o, "last_answer"),
		.created_at = get_num(o, "created_at"), .updated_at = get_num(o, "updated_at"),
		.next_attempt_at = get_num(o, "next_attempt_at"), .delivered_at = get_num(o, "delivered_at"),
		.payload = get_str(o, "payload"),
	};
}

static void add_job(struct store *s, cJSON *row)
{
	cJSON_DeleteItemFromObjectCaseSensitive(row, "op");
	cJSON_AddArrayToObject(row, "_attempts");
	cJSON_AddArrayToObject(row, "_events");
	if (!cJSON_GetObjectItemCaseSensitive(row, "stalls"))
		cJSON_AddNumberToObject(row, "stalls", 0);
	cJSON_DeleteItemFromObjectCaseSensitive(s->jobs, get_str(row, "id"));
	cJSON_AddItemToObject(s->jobs, get_str(row, "id"), row);
}

static cJSON *find_esc(struct store *s, const char *id)
{
	cJSON *it;
	cJSON_ArrayForEach(it, s->escalations)
	{
		const char *v = get_str(it, "id");
		if (v && id && strcmp(v, id) == 0)
			return it;
	}
	return NULL;
}

/* Apply one committed op to the tables. s->mu held. */
static void apply(struct store *s, const cJSON *op)
{
	const char *kind = get_str(op, "op");
	cJSON *job;

	if (strcmp(kind, "insert_job") == 0) {
		add_job(s, cJSON_Duplicate(op, 1));
	} else if (strcmp(kind, "update_job") == 0) {
		if (!(job = cJSON_GetObjectItemCaseSensitive(s->jobs, get_str(op, "id"))))
			return; /* UPDATE of no row */
		for (size_t i = 0; i < sizeof(job_mutable) / sizeof(job_mutable[0]); i++)
			set_item(job, job_mutable[i],
			         cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(op, job_mutable[i]), 1));
	} else if (strcmp(kind, "attempt") == 0) {
		if (!(job = cJSON_GetObjectItemCaseSensitive(s->jobs, get_str(op, "job_id"))))
			return;
		cJSON *list = cJSON_GetObjectItemCaseSensitive(job, "_attempts"), *it;
		int i = 0, n = (int)get_num(op, "n");
		cJSON_ArrayForEach(it, list)
		{
			if ((int)get_num(it, "n") == n)
				break;
			i++;
		}
		if (it) /* insert or replace */
			cJSON_ReplaceItemInArray(list, i, cJSON_Duplicate(op, 1));
		else
			cJSON_AddItemToArray(list, cJSON_Duplicate(op, 1));
	} else if (strcmp(kind, "event") == 0) {
		if (!(job = cJSON_GetObjectItemCaseSensitive(s->jobs, get_str(op, "job_id"))))
			return;
		cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(job, "_events"), cJSON_Duplicate(op, 1));
		if (strcmp(get_str(op, "type"), "watchdog") == 0)
			set_item(job, "stalls", cJSON_CreateNumber(get_num(job, "stalls") + 1));
	} else if (strcmp(kind, "audit") == 0) {
		cJSON_AddItemToArray(s->audit, cJSON_Duplicate(op, 1));
	} else if (strcmp(kind, "pause") == 0) {
		cJSON_DeleteItemFromObjectCaseSensitive(s->pauses, get_str(op, "scope"));
		cJSON_AddItemToObject(s->pauses, get_str(op, "scope"), cJSON_Duplicate(op, 1));
	} else if (strcmp(kind, "unpause") == 0) {
		cJSON_DeleteItemFromObjectCaseSensitive(s->pauses, get_str(op, "scope"));
	} else if (strcmp(kind, "escalation") == 0) {
		cJSON_AddItemToArray(s->escalations, cJSON_Duplicate(op, 1));
	} else if (strcmp(kind, "escalation_update") == 0) {
		cJSON *row = find_esc(s, get_str(op, "id"));
		static const char *const cols[] = { "state", "attempts", "last_answer", "updated_at",
			                                "next_attempt_at", "delivered_at" };
		for (size_t i = 0; row && i < sizeof(cols) / sizeof(cols[0]); i++)
			set_item(row, cols[i], cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(op, cols[i]), 1));
	}
}

static int final_state(const char *st)
{
	return !st || !(strcmp(st, "queued") == 0 || strcmp(st, "running") == 0 ||
	                strcmp(st, "retry_wait") == 0 || strcmp(st, "awaiting_approval") == 0);
}

/* ---- store.h ---- */

struct store *fake_store_new(void)
{
	struct store *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	pthread_mutex_init(&s->mu, NULL);
	s->jobs = cJSON_CreateObject();
	s->escalations = cJSON_CreateArray();
	s->log = cJSON_CreateArray();
	s->pauses = cJSON_CreateObject();
	s->audit = cJSON_CreateArray();
	s->healthy = 1;
	return s;
}

enum rd_status store_open(const char *path, struct store **out, char *err, size_t errlen)
{
	(void)path;
	*out = fake_store_new();
	if (!*out) {
		snprintf(err, errlen, "out of memory");
		return RD_NOMEM;
	}
	return RD_OK;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	while (s->held) { /* never committed: dropped like a closed journal's */
		struct held *h = s->held;
		s->held = h->next;
		store_batch_free(h->b);
		free(h);
	}
	cJSON_Delete(s->jobs);
	cJSON_Delete(s->escalations);
	cJSON_Delete(s->log);
	cJSON_Delete(s->pauses);
	cJSON_Delete(s->audit);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

struct store_batch *store_batch_new(void)
{
	struct store_batch *b = calloc(1, sizeof(*b));
	if (b && !(b->ops = cJSON_CreateArray())) {
		free(b);
		return NULL;
	}
	return b;
}

int store_batch_empty(const struct store_batch *b)
{
	return !b || cJSON_GetArraySize(b->ops) == 0;
}

/* The engine's unit tests run a single replica: nothing here is leased.
 * Leases are tested on the real backends (tests/unit/test_store.c). */
int store_batch_fence(struct store_batch *b, const char *job_id, long long token)
{
	(void)b;
	(void)job_id;
	return token ? -1 : 0;
}

int store_batch_claim_jobs(struct store_batch *b, const char *owner, double now, double until, int max,
                           store_claim_job_fn cb, void *arg)
{
	(void)b, (void)owner, (void)now, (void)until, (void)max, (void)cb, (void)arg;
	return -1;
}

int store_batch_claim_outbox(struct store_batch *b, const char *owner, double now, double until, int max,
                             store_claim_esc_fn cb, void *arg)
{
	(void)b, (void)owner, (void)now, (void)until, (void)max, (void)cb, (void)arg;
	return -1;
}

int store_batch_call(struct store_batch *b, store_call_fn fn, void *arg)
{
	(void)b, (void)fn, (void)arg;
	return -1;
}

int store_batch_lock(struct store_batch *b, const char *name)
{
	(void)b, (void)name;
	return -1;
}

int store_batch_release(struct store_batch *b, const char *job_id, const char *owner)
{
	(void)b, (void)job_id, (void)owner;
	return -1;
}

int store_batch_notified(struct store_batch *b, const char *job_id)
{
	(void)b, (void)job_id;
	return -1;
}

int store_batch_cancel_request(struct store_batch *b, const char *job_id, const char *by)
{
	(void)b, (void)job_id, (void)by;
	return -1;
}

int store_txn_jobs(struct store_txn *t, enum store_txn_read q, const char *name, double since,
                   void (*cb)(const struct job_row *j, void *arg), void *arg)
{
	(void)t, (void)q, (void)name, (void)since, (void)cb, (void)arg;
	return -1;
}

int store_txn_admission(struct store_txn *t, const char *key, const char *mkey,
                        void (*cb)(int ended, const struct job_row *j, void *arg), void *arg)
{
	(void)t, (void)key, (void)mkey, (void)cb, (void)arg;
	return -1;
}

unsigned long store_txn_seq(const struct store_txn *t)
{
	(void)t;
	return 0;
}

int store_txn_pauses(struct store_txn *t, void (*cb)(const struct pause_row *p, void *arg), void *arg)
{
	(void)t, (void)cb, (void)arg;
	return -1;
}

int store_batch_notify(struct store_batch *b)
{
	(void)b;
	return -1;
}

int store_listen(struct store *s, void (*cb)(void *arg), void *arg)
{
	(void)s, (void)cb, (void)arg;
	return 0;
}

int store_batch_approve_request(struct store_batch *b, const char *job_id, const char *by)
{
	(void)b, (void)job_id, (void)by;
	return -1;
}

int store_txn_cancel_requests(struct store_txn *t, const char *owner,
                              void (*cb)(const char *job_id, const char *cancel_by, const char *approve_by,
                                         void *arg),
                              void *arg)
{
	(void)t, (void)owner, (void)cb, (void)arg;
	return -1;
}

int store_batch_expire(struct store_batch *b, const char *owner)
{
	(void)b, (void)owner;
	return -1;
}

int store_batch_renew(struct store_batch *b, const char *owner, double until, store_renew_fn cb, void *arg)
{
	(void)b, (void)owner, (void)until, (void)cb, (void)arg;
	return -1;
}

void store_batch_free(struct store_batch *b)
{
	if (!b)
		return;
	cJSON_Delete(b->ops);
	free(b);
}

static int push(struct store_batch *b, cJSON *op)
{
	if (!op)
		return -1;
	cJSON_AddItemToArray(b->ops, op);
	return 0;
}

int store_batch_insert_job(struct store_batch *b, const struct job_row *j)
{
	return push(b, job_json("insert_job", j));
}

int store_batch_update_job(struct store_batch *b, const struct job_row *j)
{
	return push(b, job_json("update_job", j));
}

int store_batch_attempt(struct store_batch *b, const char *job_id, const struct attempt_row *a)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "op", "attempt");
	put_str(o, "job_id", job_id);
	cJSON_AddNumberToObject(o, "n", a->n);
	cJSON_AddNumberToObject(o, "started_at", a->started_at);
	cJSON_AddNumberToObject(o, "ended_at", a->ended_at);
	put_str(o, "result", a->result);
	put_str(o, "error", a->error);
	cJSON_AddNumberToObject(o, "verify_ok", a->verify_ok);
	put_str(o, "verify_reason", a->verify_reason);
	return push(b, o);
}

int store_batch_event(struct store_batch *b, const char *job_id, int attempt, const char *type,
                      const char *detail_json, int planned, double ts)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *d = cJSON_Parse(detail_json ? detail_json : "{}");
	cJSON_AddStringToObject(o, "op", "event");
	put_str(o, "job_id", job_id);
	cJSON_AddNumberToObject(o, "attempt", attempt);
	put_str(o, "type", type);
	/* the real store keeps the text; a detail that is not JSON shows here */
	cJSON_AddItemToObject(o, "detail", d ? d : cJSON_CreateString(detail_json));
	cJSON_AddNumberToObject(o, "planned", planned);
	cJSON_AddNumberToObject(o, "ts", ts);
	return push(b, o);
}

void store_batch_keep(struct store_batch *b)
{
	(void)b; /* the fake never loses its journal */
}

int store_batch_audit(struct store_batch *b, const struct audit_row *a)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "op", "audit");
	cJSON_AddNumberToObject(o, "ts", a->ts);
	put_str(o, "principal", a->principal);
	put_str(o, "role", a->role);
	put_str(o, "address", a->address);
	put_str(o, "action", a->action);
	put_str(o, "job_id", a->job_id);
	put_str(o, "playbook", a->playbook);
	put_str(o, "reason", a->reason);
	return push(b, o);
}

int store_batch_pause(struct store_batch *b, const struct pause_row *p)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "op", "pause");
	put_str(o, "scope", p->scope);
	put_str(o, "principal", p->principal);
	put_str(o, "reason", p->reason);
	cJSON_AddNumberToObject(o, "since", p->since);
	cJSON_AddNumberToObject(o, "until", p->until);
	return push(b, o);
}

int store_batch_unpause(struct store_batch *b, const char *scope)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "op", "unpause");
	put_str(o, "scope", scope);
	return push(b, o);
}

enum rd_status store_scan_pauses(struct store *s, void (*cb)(const struct pause_row *p, void *arg),
                                 void *arg)
{
	cJSON *copy, *it;

	pthread_mutex_lock(&s->mu);
	copy = cJSON_Duplicate(s->pauses, 1);
	pthread_mutex_unlock(&s->mu);
	cJSON_ArrayForEach(it, copy)
	{
		struct pause_row p = {get_str(it, "scope"), get_str(it, "principal"), get_str(it, "reason"),
		                      get_num(it, "since"), get_num(it, "until")};
		cb(&p, arg);
	}
	cJSON_Delete(copy);
	return RD_OK;
}

/* The audit rows as committed, newest first (no filters: the real query is
 * tested against SQLite in test_store). */
enum rd_status store_audit_json(struct store *s, const struct audit_query *q, cJSON **out)
{
	cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "entries");
	int n;

	(void)q;
	pthread_mutex_lock(&s->mu);
	n = cJSON_GetArraySize(s->audit);
	for (int i = n - 1; i >= 0; i--)
		cJSON_AddItemToArray(arr, cJSON_Duplicate(cJSON_GetArrayItem(s->audit, i), 1));
	pthread_mutex_unlock(&s->mu);
	cJSON_AddNullToObject(o, "next");
	*out = o;
	return RD_OK;
}

int store_batch_escalation(struct store_batch *b, const struct escalation_row *e)
{
	return push(b, esc_json("escalation", e));
}

int store_batch_escalation_update(struct store_batch *b, const struct escalation_row *e)
{
	return push(b, esc_json("escalation_update", e));
}

enum rd_status store_commit(struct store *s, struct store_batch *b, int wait)
{
	const cJSON *op;
	(void)wait;

	pthread_mutex_lock(&s->mu);
	if (s->fail > 0) {
		s->fail--;
		s->failed++;
		s->healthy = 0;
		pthread_mutex_unlock(&s->mu);
		store_batch_free(b);
		return RD_ERR;
	}
	s->commits++;
	s->healthy = 1;
	cJSON_ArrayForEach(op, b->ops)
		apply(s, op);
	cJSON_AddItemToArray(s->log, b->ops);
	b->ops = NULL;
	pthread_mutex_unlock(&s->mu);
	store_batch_free(b);
	return RD_OK;
}

enum rd_status store_commit_cb(struct store *s, struct store_batch *b, store_done_fn done, void *arg)
{
	int defer;

	pthread_mutex_lock(&s->mu);
	defer = s->defer;
	pthread_mutex_unlock(&s->mu);
	if (defer) {
		struct held *h = calloc(1, sizeof(*h)), **pp;
		if (!h)
			return RD_ERR;
		*h = (struct held){ .b = b, .done = done, .arg = arg };
		pthread_mutex_lock(&s->mu);
		for (pp = &s->held; *pp; pp = &(*pp)->next)
			;
		*pp = h;
		pthread_mutex_unlock(&s->mu);
		return RD_OK;
	}
	done(store_commit(s, b, 0), arg); /* the writer, at once */
	return RD_OK;
}

void fake_store_defer(struct store *s, int on)
{
	pthread_mutex_lock(&s->mu);
	s->defer = on;
	pthread_mutex_unlock(&s->mu);
}

int fake_store_flush(struct store *s)
{
	int n = 0;

	for (;;) {
		struct held *h;
		pthread_mutex_lock(&s->mu);
		h = s->held;
		if (h)
			s->held = h->next;
		pthread_mutex_unlock(&s->mu);
		if (!h)
			return n;
		h->done(store_commit(s, h->b, 0), h->arg);
		free(h);
		n++;
	}
}

void store_set_group_max(struct store *s, unsigned n)
{
	(void)s;
	(void)n;
}

int store_healthy(struct store *s)
{
	int h;
	pthread_mutex_lock(&s->mu);
	h = s->healthy;
	pthread_mutex_unlock(&s->mu);
	return h;
}

void store_stats(struct store *s, unsigned long *txns, unsigned long *batches)
{
	pthread_mutex_lock(&s->mu);
	*txns = *batches = (unsigned long)s->commits;
	pthread_mutex_unlock(&s->mu);
}

/* The callbacks run on a copy, outside the lock: they may call back in. */
enum rd_status store_scan_jobs(struct store *s, double since,
                               void (*cb)(const struct job_row *j, void *arg), void *arg)
{
	cJSON *copy, *it;

	pthread_mutex_lock(&s->mu);
	copy = cJSON_Duplicate(s->jobs, 1);
	pthread_mutex_unlock(&s->mu);
	cJSON_ArrayForEach(it, copy)
	{
		struct job_row r;
		row_view(it, &r);
		if (!final_state(r.state) || (r.started_at && r.started_at >= since) ||
		    (r.ended_at && r.ended_at >= since))
			cb(&r, arg);
	}
	cJSON_Delete(copy);
	return RD_OK;
}

enum rd_status store_scan_outbox(struct store *s, void (*cb)(const struct escalation_row *e, void *arg),
                                 void *arg)
{
	cJSON *copy, *it;

	pthread_mutex_lock(&s->mu);
	copy = cJSON_Duplicate(s->escalations, 1);
	pthread_mutex_unlock(&s->mu);
	cJSON_ArrayForEach(it, copy)
	{
		struct escalation_row e;
		esc_view(it, &e);
		if (strcmp(e.state, "pending") == 0 || strcmp(e.state, "retrying") == 0)
			cb(&e, arg);
	}
	cJSON_Delete(copy);
	return RD_OK;
}

enum rd_status store_scan_open_incidents(struct store *s, const char *key,
                                         void (*cb)(const struct escalation_row *e, void *arg),
                                         void *arg)
{
	cJSON *copy, *it, *later;

	pthread_mutex_lock(&s->mu);
	copy = cJSON_Duplicate(s->escalations, 1);
	pthread_mutex_unlock(&s->mu);
	cJSON_ArrayForEach(it, copy)
	{
		struct escalation_row e, r;
		int open = 1;
		esc_view(it, &e);
		if (key && strcmp(e.incident_key, key) != 0)
			continue;
		if (strcmp(e.kind, "trigger") != 0 || !(strcmp(e.state, "pending") == 0 ||
		                                        strcmp(e.state, "retrying") == 0 ||
		                                        strcmp(e.state, "delivered") == 0))
			continue;
		for (later = it->next; later; later = later->next) {
			esc_view(later, &r);
			if (strcmp(r.kind, "resolve") == 0 && strcmp(r.incident_key, e.incident_key) == 0 &&
			    strcmp(r.sink, e.sink) == 0)
				open = 0;
		}
		if (open)
			cb(&e, arg);
	}
	cJSON_Delete(copy);
	return RD_OK;
}

static void add_time(cJSON *o, const char *k, double t)
{
	char buf[40];
	if (!t) {
		cJSON_AddNullToObject(o, k);
		return;
	}
	rd_time_format(t, buf, sizeof(buf));
	cJSON_AddStringToObject(o, k, buf);
}

/* The parts of the DESIGN.md §3 record the callers read. */
enum rd_status store_job_json(struct store *s, const char *id, cJSON **out)
{
	const cJSON *row, *it;
	cJSON *r, *list;

	*out = NULL;
	pthread_mutex_lock(&s->mu);
	row = cJSON_GetObjectItemCaseSensitive(s->jobs, id);
	if (!row) {
		pthread_mutex_unlock(&s->mu);
		return RD_OK;
	}
	r = cJSON_CreateObject();
	static const char *const strs[] = { "id", "playbook", "key", "trigger", "reason",
		                                "state", "outcome", "error" };
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		put_str(r, strs[i], get_str(row, strs[i]));
	cJSON_AddBoolToObject(r, "dry_run", get_num(row, "dry_run") != 0);
	cJSON_AddNumberToObject(r, "attempts_made", get_num(row, "attempts"));
	cJSON_AddNumberToObject(r, "max_attempts", get_num(row, "max_attempts"));
	cJSON_AddNumberToObject(r, "notifications", get_num(row, "notifications"));
	add_time(r, "created_at", get_num(row, "created_at"));
	add_time(r, "updated_at", get_num(row, "updated_at"));
	add_time(r, "started_at", get_num(row, "started_at"));
	add_time(r, "ended_at", get_num(row, "ended_at"));
	add_time(r, "next_attempt_at", get_num(row, "next_run_at"));
	cJSON *alert = get_str(row, "alert_json") ? cJSON_Parse(get_str(row, "alert_json")) : NULL;
	cJSON_AddItemToObject(r, "alert", alert ? alert : cJSON_CreateObject());
	list = cJSON_AddArrayToObject(r, "attempts");
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(row, "_attempts"))
	{
		cJSON *a = cJSON_CreateObject();
		cJSON_AddNumberToObject(a, "n", get_num(it, "n"));
		put_str(a, "result", get_str(it, "result"));
		put_str(a, "error", get_str(it, "error"));
		if (get_num(it, "verify_ok") >= 0) {
			cJSON *v = cJSON_AddObjectToObject(a, "verify");
			cJSON_AddBoolToObject(v, "ok", get_num(it, "verify_ok") > 0);
			put_str(v, "reason", get_str(it, "verify_reason"));
		} else {
			cJSON_AddNullToObject(a, "verify");
		}
		cJSON_AddItemToArray(list, a);
	}
	list = cJSON_AddArrayToObject(r, "events");
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(row, "_events"))
		cJSON_AddItemToArray(list, cJSON_Duplicate(it, 1));
	list = cJSON_AddArrayToObject(r, "escalations");
	cJSON_ArrayForEach(it, s->escalations)
	{
		const char *j = get_str(it, "job_id");
		if (j && strcmp(j, id) == 0)
			cJSON_AddItemToArray(list, cJSON_Duplicate(it, 1));
	}
	pthread_mutex_unlock(&s->mu);
	*out = r;
	return RD_OK;
}

enum rd_status store_jobs_json(struct store *s, const char *state, const char *playbook, int limit,
                               cJSON **out)
{
	const cJSON *it;
	cJSON *a = cJSON_CreateArray();
	int n = 0;

	pthread_mutex_lock(&s->mu);
	/* newest first: walk from the end */
	for (it = s->jobs->child ? s->jobs->child->prev : NULL; it && n < limit;
	     it = it == s->jobs->child ? NULL : it->prev) {
		if ((state && strcmp(state, get_str(it, "state")) != 0) ||
		    (playbook && strcmp(playbook, get_str(it, "playbook")) != 0))
			continue;
		cJSON *o = cJSON_CreateObject();
		put_str(o, "id", get_str(it, "id"));
		put_str(o, "playbook", get_str(it, "playbook"));
		put_str(o, "key", get_str(it, "key"));
		put_str(o, "state", get_str(it, "state"));
		cJSON_AddItemToArray(a, o);
		n++;
	}
	pthread_mutex_unlock(&s->mu);
	*out = a;
	return RD_OK;
}

/* The engine only passes the query through; filters past state and
 * playbook are the real store's (test_store.c). */
enum rd_status store_jobs_page(struct store *s, const struct jobs_query *q, cJSON **out,
                               long long *next)
{
	*next = 0;
	return store_jobs_json(s, q->state, q->playbook, q->limit, out);
}

enum rd_status store_playbook_stats(struct store *s, const char *playbook, double budget_since,
                                    double cooldown_since, double cooldown, cJSON *pb)
{
	(void)s, (void)playbook, (void)budget_since, (void)cooldown_since, (void)cooldown;
	return cJSON_AddObjectToObject(pb, "stats") ? RD_OK : RD_NOMEM;
}

/* ---- fake_store.h ---- */

void fake_store_fail_commits(struct store *s, int n)
{
	pthread_mutex_lock(&s->mu);
	s->fail = n;
	pthread_mutex_unlock(&s->mu);
}

int fake_store_commits(struct store *s)
{
	int n;
	pthread_mutex_lock(&s->mu);
	n = s->commits;
	pthread_mutex_unlock(&s->mu);
	return n;
}

int fake_store_failed_commits(struct store *s)
{
	int n;
	pthread_mutex_lock(&s->mu);
	n = s->failed;
	pthread_mutex_unlock(&s->mu);
	return n;
}

const cJSON *fake_store_batch(struct store *s, int i)
{
	return cJSON_GetArrayItem(s->log, i);
}

cJSON *fake_store_ops(struct store *s, const char *op, const char *job_id)
{
	cJSON *out = cJSON_CreateArray();
	const cJSON *batch, *it;

	pthread_mutex_lock(&s->mu);
	cJSON_ArrayForEach(batch, s->log)
	{
		cJSON_ArrayForEach(it, batch)
		{
			const char *k = get_str(it, "op");
			const char *j = get_str(it, strstr(k, "_job") ? "id" : "job_id");
			if (strcmp(k, op) != 0 || (job_id && (!j || strcmp(j, job_id) != 0)))
				continue;
			cJSON_AddItemToArray(out, cJSON_Duplicate(it, 1));
		}
	}
	pthread_mutex_unlock(&s->mu);
	return out;
}

const cJSON *fake_store_job(struct store *s, const char *id)
{
	const cJSON *j;
	pthread_mutex_lock(&s->mu);
	j = cJSON_GetObjectItemCaseSensitive(s->jobs, id);
	pthread_mutex_unlock(&s->mu);
	return j;
}

cJSON *fake_store_escalations(struct store *s)
{
	cJSON *copy;
	pthread_mutex_lock(&s->mu);
	copy = cJSON_Duplicate(s->escalations, 1);
	pthread_mutex_unlock(&s->mu);
	return copy;
}

const cJSON *fake_store_escalation(struct store *s, const char *id)
{
	const cJSON *e;
	pthread_mutex_lock(&s->mu);
	e = find_esc(s, id);
	pthread_mutex_unlock(&s->mu);
	return e;
}

void fake_store_seed_job(struct store *s, const struct job_row *j)
{
	cJSON *row = job_json("seed", j);
	cJSON_AddNumberToObject(row, "stalls", j->stalls);
	pthread_mutex_lock(&s->mu);
	add_job(s, row);
	pthread_mutex_unlock(&s->mu);
}

void fake_store_seed_escalation(struct store *s, const struct escalation_row *e)
{
	cJSON *row = esc_json("escalation", e);
	pthread_mutex_lock(&s->mu);
	cJSON_AddItemToArray(s->escalations, row);
	pthread_mutex_unlock(&s->mu);
}

/* The engine: routes each alert to playbooks, decides admission, commits
 * the decisions to the journal before answering, and hands new jobs to the
 * runner. It also replays the journal at start-up. */
#include "recoveryd/engine.h"
#include "recoveryd/job.h"
#include "recoveryd/store.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "map.h"
#include "recoveryd/admit.h"
#include "recoveryd/log.h"
#include "recoveryd/matcher.h"
#include "recoveryd/metrics.h"
#include "recoveryd/outbox.h"
#include "recoveryd/playbook.h"
#include "recoveryd/runner.h"
#include "recoveryd/watchdog.h"

struct runner;
struct watchdog;
struct map;
struct admit;

/* Wake the loop when a pause runs out, to set the gauge (any thread). Set
 * alarms are listed so that engine_free frees those that never rang. */
struct pause_alarm {
	struct engine *e;
	double when; /* wall clock */
	struct pause_alarm *next;
};

struct engine {
	pthread_mutex_t mu;
	pthread_cond_t ended;       /* broadcast whenever a job ends */
	struct store *store;
	struct runner *runner;
	struct watchdog *wd;
	struct playbook_set *set;   /* [mu] current set */
	int global_dry_run;
	int draining;               /* [mu] */
	int loaded;
	size_t queue_max;
	struct map *active_by_id;   /* [mu] id -> job, every unfinished job */
	struct map *escalating;     /* [mu] ended jobs whose escalation is not journaled yet */
	struct map *active_by_key;  /* [mu] key -> job */
	struct admit *admit;        /* [mu] cooldown and budget bookkeeping */
	struct job_counts counts;   /* [mu] unfinished jobs per state */
	struct outbox *outbox;
	char *broken_file;          /* [mu] playbook file the last reload could not load */
	char *broken_error;         /* [mu] */
	int broken_escalated;       /* [mu] */
	struct pause *pauses;       /* [mu] in force or expired, journaled */
	struct pause_alarm *alarms; /* [mu] timers set for the end of a pause */
	char *replica;              /* shared journal: this replica's name; NULL: alone */
	double lease;
	int claiming;               /* [mu] a claim of jobs is on its way */
	int more_work;              /* [mu] the last claim got all it asked for: more may wait */
	unsigned long pauses_txn;   /* [mu] the journal transaction that last read the pauses */
	size_t claims_out;          /* [mu] claims not finished (engine_free waits) */
	pthread_cond_t claims_cv;   /* [mu] claims_out reached 0 */
};

/* A pause: of one playbook, or of everything (scope "*"). */
struct pause {
	char *scope, *by, *reason;
	double since, until;        /* until 0 = until resumed */
	struct pause *next;
};

#define PAUSE_ALL "*"
/* A cancel request that is a rejection of the plan (principal names have
 * no ':'). */
#define REJECT_MARK "reject:"
#define RESOLVE_MARK "resolve:" /* a cancel request that is the alert's resolve */

static void pause_free(struct pause *p)
{
	free(p->scope);
	free(p->by);
	free(p->reason);
	free(p);
}

/* The pause in force for playbook (its own, else everything's), or NULL.
 * e->mu held. */
static const struct pause *paused(struct engine *e, const char *playbook, double now)
{
	const struct pause *all = NULL;

	for (const struct pause *p = e->pauses; p; p = p->next) {
		if (p->until && p->until <= now)
			continue;
		if (strcmp(p->scope, playbook) == 0)
			return p;
		if (strcmp(p->scope, PAUSE_ALL) == 0)
			all = p;
	}
	return all;
}

/* recoveryd_paused{playbook}: 1 while a pause holds it. e->mu held. */
static void pause_gauges(struct engine *e)
{
	double now = rd_now();

	for (size_t i = 0; e->set && i < e->set->n; i++)
		metrics_set(M_PAUSED, e->set->v[i]->name, NULL, paused(e, e->set->v[i]->name, now) ? 1 : 0);
}

/* Set (by != NULL) or clear the pause of scope. e->mu held. -1: no memory. */
static int pause_put(struct engine *e, const char *scope, const char *by, const char *reason,
                     double since, double until)
{
	struct pause **pp, *p;

	for (pp = &e->pauses; *pp && strcmp((*pp)->scope, scope) != 0; pp = &(*pp)->next)
		;
	if ((p = *pp)) {
		*pp = p->next;
		pause_free(p);
	}
	if (!by)
		return 0;
	p = calloc(1, sizeof(*p));
	if (!p || !(p->scope = strdup(scope)) || !(p->by = strdup(by)) ||
	    !(p->reason = strdup(reason ? reason : ""))) {
		if (p)
			pause_free(p);
		return -1;
	}
	p->since = since;
	p->until = until;
	p->next = e->pauses;
	e->pauses = p;
	return 0;
}

static cJSON *pause_json(const struct pause *p)
{
	cJSON *o = cJSON_CreateObject();
	char t[40];

	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "scope", p->scope);
	cJSON_AddStringToObject(o, "by", p->by);
	cJSON_AddStringToObject(o, "reason", p->reason);
	rd_time_format(p->since, t, sizeof(t));
	cJSON_AddStringToObject(o, "since", t);
	if (p->until) {
		rd_time_format(p->until, t, sizeof(t));
		cJSON_AddStringToObject(o, "until", t);
	} else {
		cJSON_AddNullToObject(o, "until");
	}
	return o;
}

/* ---------- the audit trail ---------- */

static const char *const audit_actions[] = {
	"trigger", "force", "cancel", "pause", "resume", "approve", "reject", "reload",
};

int engine_audit_action_known(const char *action)
{
	for (size_t i = 0; i < sizeof(audit_actions) / sizeof(audit_actions[0]); i++)
		if (strcmp(action, audit_actions[i]) == 0)
			return 1;
	return 0;
}

/* Add an audit row to b, and the same as an "audit" event on the job. */
static void audit_add(struct store_batch *b, const struct actor *who, const char *action,
                      const char *job_id, const char *playbook, const char *reason, double now)
{
	struct audit_row a = {.ts = now, .principal = who->name, .role = role_name(who->role),
	                      .address = who->address, .action = action, .job_id = job_id,
	                      .playbook = playbook, .reason = reason && *reason ? reason : NULL};
	cJSON *d;
	char *txt;

	store_batch_audit(b, &a);
	if (!job_id || !(d = cJSON_CreateObject()))
		return;
	cJSON_AddStringToObject(d, "action", action);
	cJSON_AddStringToObject(d, "principal", who->name);
	cJSON_AddStringToObject(d, "role", role_name(who->role));
	cJSON_AddStringToObject(d, "address", who->address);
	if (a.reason)
		cJSON_AddStringToObject(d, "reason", a.reason);
	if ((txt = cJSON_PrintUnformatted(d)))
		store_batch_event(b, job_id, 0, "audit", txt, 0, now);
	free(txt);
	cJSON_Delete(d);
}

static const struct actor system_actor = {.name = "system", .role = ROLE_ADMIN};

void engine_audit(struct engine *e, const struct actor *who, const char *action, const char *reason)
{
	struct store_batch *b = store_batch_new();

	if (!b)
		return;
	audit_add(b, who ? who : &system_actor, action, NULL, NULL, reason, rd_now());
	if (store_commit(e->store, b, 1) != RD_OK)
		log_kv(LOG_ERROR, NULL, "journal: cannot record an audit row", "action", action, NULL);
}

enum rd_status engine_audit_json(struct engine *e, const struct audit_query *q, cJSON **out)
{
	return store_audit_json(e->store, q, out);
}


void engine_playbook_broken(struct engine *e, const char *file, const char *error)
{
	pthread_mutex_lock(&e->mu);
	free(e->broken_file);
	free(e->broken_error);
	e->broken_file = file ? strdup(file) : NULL;
	e->broken_error = error ? strdup(error) : NULL;
	e->broken_escalated = 0;
	pthread_mutex_unlock(&e->mu);
}

/* Refuse a request: res, with the human message in r. */
static enum engine_result refuse(struct engine_reply *r, enum engine_result res, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static enum engine_result refuse(struct engine_reply *r, enum engine_result res, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->message, sizeof(r->message), fmt, ap);
	va_end(ap);
	return res;
}

/* The watchdog is about to end the process because the loop is stuck in
 * job_id: journal that, so the replay after the restart can tell a job that
 * stalls the loop every time (a poison job) from one hit by a crash. */
static void on_loop_expired(void *ud, const char *job_id, const char *playbook, double stalled)
{
	struct engine *e = ud;
	struct store_batch *b;
	char detail[256];

	if (!job_id[0] || !(b = store_batch_new()))
		return;
	snprintf(detail, sizeof(detail), "{\"playbook\":\"%s\",\"stalled_seconds\":%.1f}",
	         playbook, stalled);
	/* The playbook name passed the loader's name check: no quoting needed. */
	if (store_batch_event(b, job_id, 0, "watchdog", detail, 0, rd_now()) < 0) {
		store_batch_free(b);
		return;
	}
	if (store_commit(e->store, b, 1) != RD_OK)
		log_kv(LOG_ERROR, job_id, "watchdog: cannot journal the stall", NULL);
}

static void job_released(void *owner, struct job *j);
static int job_ends_quietly(void *owner, const struct job *j);
static void job_held(void *owner, struct job *j);
static void job_started(void *owner, struct job *j);
static void job_lost(void *owner, struct job *j);
static void engine_poll(void *owner, size_t slots);

/* The runner's job_find (e->mu held). */
static struct job *job_find(void *owner, const char *id)
{
	struct engine *e = owner;
	return map_get(e->active_by_id, id);
}

struct engine *engine_new(const struct engine_opts *o)
{
	struct engine *e = calloc(1, sizeof(*e));
	pthread_condattr_t ca;
	struct runner_opts ro = {.max_in_flight = o->max_in_flight, .mem_max = o->mem_max,
	                         .lua_path = o->lua_path, .store = o->store, .mu = &e->mu,
	                         .counts = &e->counts, .job_done = job_released, .job_find = job_find,
	                         .ends_quietly = job_ends_quietly,
	                         .job_held = job_held, .job_started = job_started,
	                         .owner = e,
	                         .replica = o->replica, .lease = o->lease, .poll = o->poll,
	                         .job_lost = job_lost, .poll_fn = engine_poll};
	struct watchdog_opts wo = {o->watchdog_unhealthy, o->watchdog_exit, on_loop_expired, e};

	if (!e)
		return NULL;
	pthread_mutex_init(&e->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&e->ended, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&e->claims_cv, NULL);
	if (o->replica && !(e->replica = strdup(o->replica))) {
		pthread_cond_destroy(&e->claims_cv);
		pthread_cond_destroy(&e->ended);
		pthread_mutex_destroy(&e->mu);
		free(e);
		return NULL;
	}
	e->lease = o->lease > 0 ? o->lease : 15;
	ro.replica = e->replica;
	ro.lease = e->lease;
	ro.poll = o->poll > 0 ? o->poll : 2;
	e->store = o->store;
	e->set = o->set;
	e->global_dry_run = o->dry_run;
	e->queue_max = o->queue_max ? o->queue_max : 10000;
	e->active_by_id = map_new();
	e->escalating = map_new();
	e->active_by_key = map_new();
	e->admit = admit_new();
	e->wd = watchdog_new(&wo);
	ro.wd = e->wd;
	e->runner = e->wd ? runner_new(&ro) : NULL;
	if (e->runner) {
		struct outbox_opts oo = {.store = o->store, .runner = e->runner,
		                         .disabled = o->no_escalation, .replica = e->replica,
		                         .lease = e->lease};
		e->outbox = outbox_new(&oo);
	}
	if (!e->active_by_id || !e->active_by_key || !e->outbox || !e->admit || !e->runner) {
		engine_free(e);
		return NULL;
	}
	e->loaded = 1;
	return e;
}

static void free_job_val(void *p)
{
	job_free(p);
}

void engine_free(struct engine *e)
{
	if (!e)
		return;
	if (e->replica)
		store_listen(e->store, NULL, NULL); /* it pokes the runner */
	/* Claims report to the runner and the outbox: let them finish. */
	pthread_mutex_lock(&e->mu);
	while (e->claims_out)
		pthread_cond_wait(&e->claims_cv, &e->mu);
	pthread_mutex_unlock(&e->mu);
	outbox_quiesce(e->outbox); /* its journal reports reach the runner */
	runner_free(e->runner);
	outbox_quiesce(e->outbox); /* what jobs ended meanwhile journal calls back here */
	watchdog_free(e->wd);
	map_free(e->active_by_key, NULL);
	map_free(e->active_by_id, free_job_val);
	map_free(e->escalating, NULL);
	outbox_free(e->outbox); /* after the runner: it let go of the transfers */
	while (e->pauses) {
		struct pause *p = e->pauses;
		e->pauses = p->next;
		pause_free(p);
	}
	while (e->alarms) { /* the loop is gone: they never rang */
		struct pause_alarm *pa = e->alarms;
		e->alarms = pa->next;
		free(pa);
	}
	free(e->broken_file);
	free(e->broken_error);
	playbook_set_unref(e->set);
	admit_free(e->admit);
	free(e->replica);
	pthread_cond_destroy(&e->claims_cv);
	pthread_cond_destroy(&e->ended);
	pthread_mutex_destroy(&e->mu);
	free(e);
}

size_t engine_active(struct engine *e)
{
	size_t n;
	pthread_mutex_lock(&e->mu);
	n = map_len(e->active_by_id);
	pthread_mutex_unlock(&e->mu);
	return n;
}

void engine_set_playbooks(struct engine *e, struct playbook_set *set)
{
	struct playbook_set *old;
	pthread_mutex_lock(&e->mu);
	old = e->set;
	e->set = set;
	pause_gauges(e);
	pthread_mutex_unlock(&e->mu);
	playbook_set_unref(old);
}

int engine_draining(struct engine *e)
{
	int d;
	pthread_mutex_lock(&e->mu);
	d = e->draining;
	pthread_mutex_unlock(&e->mu);
	return d;
}

int engine_live(struct engine *e, char *why, size_t len)
{
	double stalled = watchdog_stalled(e->wd);

	if (stalled > 0) {
		snprintf(why, len, "the event loop has not turned for %.0f s", stalled);
		return 0;
	}
	return 1;
}

int engine_ready(struct engine *e, char *why, size_t len)
{
	if (!engine_live(e, why, len))
		return 0;
	if (engine_draining(e)) {
		snprintf(why, len, "draining: shutting down");
		return 0;
	}
	if (!store_healthy(e->store)) {
		snprintf(why, len, "the journal cannot commit");
		return 0;
	}
	if (!e->loaded) {
		snprintf(why, len, "configuration not loaded");
		return 0;
	}
	return 1;
}

void engine_drain(struct engine *e, double grace)
{
	pthread_mutex_lock(&e->mu);
	e->draining = 1;
	pthread_mutex_unlock(&e->mu);
	runner_drain(e->runner, grace);
	if (e->replica) {
		/* What this replica still holds (queued, waiting for a retry or
		 * an approval) is free now, and the others are told: they take
		 * it at once instead of after the lease. */
		struct store_batch *b = store_batch_new();
		if (b && store_batch_expire(b, e->replica) == 0 && store_batch_notify(b) == 0 &&
		    store_commit(e->store, b, 1) == RD_OK)
			log_kv(LOG_INFO, NULL, "drained: unfinished jobs left to the other replicas", NULL);
		else if (b)
			log_kv(LOG_WARN, NULL, "drained: cannot free the jobs held; they are taken after the lease", NULL);
	}
}

/* ---------- job creation ---------- */

static struct job *job_new(struct playbook_set *set, struct playbook *pb, const char *key,
                           const char *trigger, const char *reason, const cJSON *alert, int dry_run,
                           const char *by, double now)
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	rd_random_hex(j->id, 16);
	j->playbook_name = strdup(pb->name);
	j->key = strdup(key);
	j->trigger = strdup(trigger);
	j->reason = reason && *reason ? strdup(reason) : NULL;
	j->alert = alert ? cJSON_Duplicate(alert, 1) : cJSON_CreateObject();
	j->alert_json = j->alert ? cJSON_PrintUnformatted(j->alert) : NULL;
	j->dry_run = dry_run;
	j->triggered_by = strdup(by);
	/* A dry-run only plans anyway: nothing to approve. */
	j->approval = pb->approval_required && !dry_run ? AP_PENDING : AP_NONE;
	j->created_at = now;
	j->max_attempts = pb->retries + 1;
	j->notifications = 1;
	j->state = JS_QUEUED;
	j->set = set;
	j->set_unref = playbook_set_unref;
	j->pb = pb;
	playbook_set_ref(set);
	if (!j->playbook_name || !j->key || !j->trigger || !j->alert_json || !j->triggered_by) {
		job_free(j);
		return NULL;
	}
	return j;
}

static void add_event(struct store_batch *b, const char *job_id, const char *type, cJSON *detail,
                      double now)
{
	char *txt = cJSON_PrintUnformatted(detail);
	if (txt)
		store_batch_event(b, job_id, 0, type, txt, 0, now);
	free(txt);
	cJSON_Delete(detail);
}

static cJSON *admission_detail(const char *decision, const char *trigger)
{
	cJSON *d = cJSON_CreateObject();
	cJSON_AddStringToObject(d, "decision", decision);
	cJSON_AddStringToObject(d, "trigger", trigger);
	return d;
}

static void add_answer(cJSON *jobs, const char *id, const char *playbook, const char *key,
                       const char *state)
{
	cJSON *o = cJSON_CreateObject();
	if (id && *id)
		cJSON_AddStringToObject(o, "id", id);
	else
		cJSON_AddNullToObject(o, "id");
	cJSON_AddStringToObject(o, "playbook", playbook);
	cJSON_AddStringToObject(o, "key", key);
	cJSON_AddStringToObject(o, "state", state);
	cJSON_AddItemToArray(jobs, o);
}

struct pending {
	struct job **v;
	size_t n, cap;
};

/* Ids of jobs to cancel once the batch committed. Ids, not jobs: by then
 * the runner may have ended and freed the job. */
struct cancel_ids {
	char (*v)[33];
	size_t n, cap;
};

static int cancel_ids_add(struct cancel_ids *c, const char *id)
{
	if (c->n == c->cap) {
		size_t ncap = c->cap ? c->cap * 2 : 8;
		char (*nv)[33] = realloc(c->v, ncap * sizeof(*nv));
		if (!nv)
			return -1;
		c->v = nv;
		c->cap = ncap;
	}
	snprintf(c->v[c->n++], sizeof(c->v[0]), "%s", id);
	return 0;
}

static int pending_add(struct pending *p, struct job *j)
{
	if (p->n == p->cap) {
		size_t ncap = p->cap ? p->cap * 2 : 8;
		struct job **nv = realloc(p->v, ncap * sizeof(*nv));
		if (!nv)
			return -1;
		p->v = nv;
		p->cap = ncap;
	}
	p->v[p->n++] = j;
	return 0;
}

/* The job key of playbook for the alert with fingerprint fp; manual
 * triggers have keys of their own. */
static void job_key(char *buf, size_t len, const char *playbook, const char *fp, int manual)
{
	snprintf(buf, len, manual ? "%s/manual/%s" : "%s/%s", playbook, fp);
}

/* A manual trigger (the {"labels":...} form of /trigger) for an alert whose
 * Alertmanager job is still active: the human may not join or cancel it
 * through the trigger. Returns that job, or NULL. e->mu held. */
static struct job *alertmanager_job(struct engine *e, const char *playbook, const struct payload *p)
{
	char key[256];

	if (!p->manual || p->n_alerts != 1)
		return NULL;
	job_key(key, sizeof(key), playbook, p->alerts[0].fingerprint, 0);
	return map_get(e->active_by_key, key);
}

/* An unfinished job another replica holds, as the journal showed it. */
struct foreign {
	int found;
	char id[33];
	int dry_run;
};

/* One (alert, playbook) pair decided in the journal's transaction (a
 * shared journal), with what the journal holds of its keys. */
struct pair {
	struct playbook *pb;
	struct alert a;            /* resolved, fingerprint and raw: copies */
	char key[256], mkey[256];
	struct foreign act, mact;  /* the unfinished job of key, of mkey */
	char last_id[33];          /* the job of key that ended last, and when */
	double last_end;
	int key_seen;              /* the journal holds a job of key */
};

/* Decide one (alert, playbook) pair. Called with e->mu held. f: what the
 * journal holds of the pair's keys (a shared journal), else NULL. */
static int admit_one(struct engine *e, struct playbook_set *set, struct playbook *pb,
                     const struct payload *p, const struct alert *a,
                     const struct engine_submit_opts *o, double now,
                     struct store_batch *b, cJSON *jobs, struct pending *fresh,
                     struct cancel_ids *cancels, struct pending *final, struct outbox_notes *notes,
                     const struct pair *f)
{
	const struct actor *who = o->who ? o->who : &system_actor;
	/* /trigger is a person's act: audited with its decision's job. */
	const char *audit = o->playbook ? (o->force ? "force" : "trigger") : NULL;
	int dry_run = o->dry_run;
	char key[256], mkey[256];
	const char *trigger = p->manual ? "manual" : "webhook";
	struct job *active;
	const struct foreign *fa = NULL;
	struct job_row row;

	/* Manual triggers have their own keys: a notification can never cancel
	 * a job a human started, and a human's trigger never joins or cancels
	 * an Alertmanager job (engine_submit refuses those with 409). */
	job_key(key, sizeof(key), pb->name, a->fingerprint, p->manual);
	job_key(mkey, sizeof(mkey), pb->name, a->fingerprint, 1);
	active = map_get(e->active_by_key, key);
	/* Another replica's job (one of ours is in the table). */
	if (!active && f && f->act.found && !map_get(e->active_by_id, f->act.id))
		fa = &f->act;

	if (a->resolved) {
		/* A resolved alert never starts a job; it closes its key's job
		 * and, if recovery had failed, the incident humans were paged for. */
		outbox_close_incident(e->outbox, notes, key, ER_ALERT_RESOLVED);
		if (!p->manual) /* the alert itself resolved: so did a manual run's incident */
			outbox_close_incident(e->outbox, notes, mkey, ER_ALERT_RESOLVED);
		if (!active && fa) {
			/* Its replica learns of the cancel from the journal. */
			char by[ACTOR_NAME_MAX + sizeof(RESOLVE_MARK)];
			snprintf(by, sizeof(by), RESOLVE_MARK "%s", o->who ? o->who->name : system_actor.name);
			store_batch_cancel_request(b, fa->id, by);
			store_batch_notify(b);
			add_event(b, fa->id, "admission", admission_detail("cancelled", trigger), now);
			add_answer(jobs, fa->id, pb->name, key, "cancelled");
			metrics_add(M_ADMISSIONS, pb->name, "cancelled", 1);
			return 0;
		}
		if (!active)
			return 0;
		/* Flagged once the decision is durable (engine_submit): a 503
		 * leaves the job as it was, for Alertmanager's retry to cancel. */
		if (!active->cancel_requested && cancel_ids_add(cancels, active->id) < 0)
			return -1;
		add_event(b, active->id, "admission", admission_detail("cancelled", trigger), now);
		add_answer(jobs, active->id, pb->name, key, "cancelled");
		metrics_add(M_ADMISSIONS, pb->name, "cancelled", 1);
		return 0;
	}

	/* The alert fires while a human's run for it is under way: fold the
	 * notification into that job rather than run the playbook twice. */
	if (!active && !fa && !p->manual) {
		active = map_get(e->active_by_key, mkey);
		if (!active && f && f->mact.found && !map_get(e->active_by_id, f->mact.id))
			fa = &f->mact;
	}

	/* Manual triggers count against cooldown and budget like any job;
	 * only an admin's force=1 (with a reason) skips them. */
	struct admit_policy pol = {pb->cooldown, pb->budget_runs, pb->budget_per, o->force};
	const char *last_id = NULL;
	enum admit_decision d = admit_firing(e->admit, pb->name, key, active || fa, &pol, now, &last_id);
	const char *dname = admit_decision_name(d);
	struct job *j;

	metrics_add(M_ADMISSIONS, pb->name, dname, 1);
	/* The playbook's file failed to load at the last reload and its alerts
	 * keep coming: the old version runs, humans must know (once). */
	if (e->broken_file && !e->broken_escalated && strcmp(e->broken_file, pb->file) == 0) {
		const char *on = d == ADMIT_COALESCED ? (active ? active->id : fa->id)
		                 : d == ADMIT_COOLDOWN ? last_id : NULL;
		e->broken_escalated = 1;
		if (on && *on)
			outbox_note(notes, on, d == ADMIT_COALESCED && active ? active->key : key, EK_TRIGGER,
			            ER_PLAYBOOK_LOAD_FAILED, outbox_playbook_sinks(pb),
			            d == ADMIT_COALESCED ? (active ? active->dry_run : fa->dry_run) : e->global_dry_run);
		else
			e->broken_escalated = 2; /* attach to the job created below */
	}
	switch (d) {
	case ADMIT_COALESCED:
		if (!active) {
			/* Into another replica's job, counted in the journal. */
			store_batch_notified(b, fa->id);
			add_event(b, fa->id, "admission", admission_detail(dname, trigger), now);
			add_answer(jobs, fa->id, pb->name, key, dname);
			if (audit)
				audit_add(b, who, audit, fa->id, pb->name, p->reason, now);
			return 0;
		}
		active->notifications++;
		job_row_of(active, &row);
		row.updated_at = now;
		store_batch_update_job(b, &row);
		add_event(b, active->id, "admission", admission_detail(dname, trigger), now);
		add_answer(jobs, active->id, pb->name, active->key, dname);
		if (audit)
			audit_add(b, who, audit, active->id, pb->name, p->reason, now);
		return 0;
	case ADMIT_COOLDOWN:
		if (last_id && *last_id)
			add_event(b, last_id, "admission", admission_detail(dname, trigger), now);
		add_answer(jobs, last_id, pb->name, key, dname);
		if (audit)
			audit_add(b, who, audit, last_id && *last_id ? last_id : NULL, pb->name, p->reason, now);
		return 0;
	case ADMIT_BUDGET_EXHAUSTED:
	case ADMIT_QUEUED:
	case ADMIT_CANCELLED:
		break;
	}
	const struct pause *pz = d == ADMIT_QUEUED ? paused(e, pb->name, now) : NULL;
	j = job_new(set, pb, key, trigger, p->reason, a->raw, dry_run || e->global_dry_run, who->name,
	            now);
	if (!j)
		return -1;
	if (e->replica) {
		/* Journaled claimed by this replica, which runs it. */
		j->key_new = f && !f->key_seen;
		j->owner = e->replica;
		j->lease_token = 1;
		j->lease_until = now + e->lease;
	}
	if (pz) {
		/* Paused: a visible record, escalated, and no run. It spends
		 * neither budget nor cooldown: after the resume it runs. */
		char msg[AUTH_REASON_MAX + 160];
		admit_unstart(e->admit, pb->name, now);
		dname = "paused";
		job_enter(&e->counts, j, JS_PAUSED);
		j->outcome = OUT_PAUSED;
		snprintf(msg, sizeof(msg), "%s paused by %s: %s",
		         strcmp(pz->scope, PAUSE_ALL) == 0 ? "all automation" : "playbook", pz->by, pz->reason);
		j->error = strdup(msg);
		j->ended_at = now;
		if (pending_add(final, j) < 0) {
			job_free(j);
			return -1;
		}
		outbox_note(notes, j->id, key, EK_TRIGGER, ER_PAUSED, outbox_playbook_sinks(pb), j->dry_run);
	} else if (d == ADMIT_BUDGET_EXHAUSTED) {
		/* Recovery is being held back: record it as a job so that humans
		 * see it (and escalation can attach to it). */
		char msg[160];
		job_enter(&e->counts, j, JS_BUDGET_EXHAUSTED);
		j->outcome = OUT_BUDGET_EXHAUSTED;
		snprintf(msg, sizeof(msg), "run budget of %d per %gs exhausted", pb->budget_runs,
		         pb->budget_per);
		j->error = strdup(msg);
		j->ended_at = now;
		if (pending_add(final, j) < 0) {
			job_free(j);
			return -1;
		}
	} else if (pending_add(fresh, j) < 0) {
		admit_unstart(e->admit, pb->name, now);
		job_free(j);
		return -1;
	} else {
		int oom1, oom2;
		map_put(e->active_by_id, j->id, j, &oom1);
		map_put(e->active_by_key, j->key, j, &oom2);
	}
	if (d == ADMIT_BUDGET_EXHAUSTED)
		outbox_note(notes, j->id, key, EK_TRIGGER, ER_BUDGET_EXHAUSTED, outbox_playbook_sinks(pb),
		            j->dry_run);
	if (e->broken_escalated == 2) {
		e->broken_escalated = 1;
		outbox_note(notes, j->id, key, EK_TRIGGER, ER_PLAYBOOK_LOAD_FAILED, outbox_playbook_sinks(pb),
		            j->dry_run);
	}
	job_row_of(j, &row);
	row.updated_at = now;
	store_batch_insert_job(b, &row);
	add_event(b, j->id, "admission", admission_detail(dname, trigger), now);
	add_answer(jobs, j->id, pb->name, key, dname);
	if (audit)
		audit_add(b, who, audit, j->id, pb->name, p->reason, now);
	return 0;
}

/* Forget cooldowns and budget starts no playbook can still need, at most
 * once a minute, so that admission memory stays bounded. e->mu held. */
static void prune(struct engine *e, double now)
{
	static double last;
	double horizon = 0;

	if (now - last < 60)
		return;
	last = now;
	for (size_t i = 0; e->set && i < e->set->n; i++) {
		if (e->set->v[i]->cooldown > horizon)
			horizon = e->set->v[i]->cooldown;
		if (e->set->v[i]->budget_per > horizon)
			horizon = e->set->v[i]->budget_per;
	}
	admit_prune(e->admit, now, horizon);
}

/* A submit between its decisions and their commit. */
struct submit {
	struct engine *e;
	engine_submit_fn *done;
	void *arg;
	struct pending fresh, final;
	struct cancel_ids cancels;
	struct outbox_notes notes;
	cJSON *answer, *jobs;
	double now;
	long unmatched;
	size_t n_alerts;
	int resolved;
	char *group_key, *playbook;
	char who[ACTOR_NAME_MAX + 1];  /* a resolve's cancels are by this principal */
	/* A shared journal: the pairs routed here, decided in the transaction
	 * (decide_call), with what the submit said. */
	struct pair *pairs;
	size_t n_pairs, cap_pairs;
	struct playbook_set *set;
	int manual, dry_run, force, has_actor;
	char *reason;
	struct actor actor;
};

static void submit_free(struct submit *sb)
{
	for (size_t i = 0; i < sb->n_pairs; i++) {
		free(sb->pairs[i].a.fingerprint);
		cJSON_Delete(sb->pairs[i].a.raw);
	}
	free(sb->pairs);
	free(sb->reason);
	if (sb->set)
		playbook_set_unref(sb->set);
	free(sb->fresh.v);
	free(sb->cancels.v);
	free(sb->final.v);
	free(sb->group_key);
	free(sb->playbook);
	free(sb);
}

/* The decisions of sb are committed (or not): put them into effect or
 * forget them, then answer. On the journal writer's thread, or the
 * submitter's when nothing was handed to the journal. */
static void submit_committed(enum rd_status committed, void *arg)
{
	struct submit *sb = arg;
	struct engine *e = sb->e;
	struct engine_reply r = {0};
	enum engine_result res;

	if (committed == RD_OK) {
		/* Durable now: queued in the books before the runner can start
		 * them. */
		pthread_mutex_lock(&e->mu);
		for (size_t i = 0; i < sb->fresh.n; i++)
			job_enter(&e->counts, sb->fresh.v[i], JS_QUEUED);
		for (size_t i = 0; i < sb->cancels.n; i++) {
			struct job *j = map_get(e->active_by_id, sb->cancels.v[i]);
			if (j && !j->cancel_requested) {
				j->cancel_requested = 1;
				j->cancel_by_resolve = 1;
				free(j->cancel_reason);
				j->cancel_reason = strdup("alert resolved");
				free(j->cancelled_by);
				j->cancelled_by = strdup(sb->who);
			}
		}
		pthread_mutex_unlock(&e->mu);
		for (size_t i = 0; i < sb->fresh.n; i++) {
			log_kv(LOG_INFO, sb->fresh.v[i]->id, "job queued", "playbook", sb->fresh.v[i]->playbook_name,
			       "key", sb->fresh.v[i]->key, "trigger", sb->fresh.v[i]->trigger, NULL);
		}
		runner_schedule(e->runner, sb->fresh.v, sb->fresh.n);
		for (size_t i = 0; i < sb->cancels.n; i++)
			runner_cancel(e->runner, sb->cancels.v[i]);
		const char **rel = sb->final.n ? calloc(sb->final.n, sizeof(*rel)) : NULL;
		char (*rel_ids)[33] = sb->final.n ? calloc(sb->final.n, sizeof(*rel_ids)) : NULL;
		size_t n_rel = 0;
		for (size_t i = 0; i < sb->final.n; i++) {
			struct job *j = sb->final.v[i];
			int held = j->state == JS_PAUSED;
			if (rel && rel_ids) {
				snprintf(rel_ids[n_rel], sizeof(rel_ids[0]), "%s", j->id);
				rel[n_rel] = rel_ids[n_rel];
				n_rel++;
			}
			log_kv(LOG_WARN, j->id, held ? "paused: job not started" : "run budget exhausted: job not started",
			       "playbook", j->playbook_name, "key", j->key, "error", j->error ? j->error : "", NULL);
			metrics_add(M_JOBS, j->playbook_name, job_outcome_name(j->outcome), 1);
			if (!held) {
				pthread_mutex_lock(&e->mu);
				admit_ended(e->admit, j->key, j->id, sb->now);
				pthread_mutex_unlock(&e->mu);
			}
			job_free(j);
		}
		cJSON_AddNumberToObject(sb->answer, "unmatched", (double)sb->unmatched);
		{
			/* One line per accepted notification, even one that starts
			 * nothing (a resolved alert, all coalesced): the audit trail. */
			char na[24], nd[24], nu[24];
			snprintf(na, sizeof(na), "%zu", sb->n_alerts);
			snprintf(nd, sizeof(nd), "%d", cJSON_GetArraySize(sb->jobs));
			snprintf(nu, sizeof(nu), "%ld", sb->unmatched);
			log_kv(LOG_INFO, NULL, "notification accepted", "status", sb->resolved ? "resolved" : "firing",
			       "alerts", na, "decisions", nd, "unmatched", nu, "group_key",
			       sb->group_key ? sb->group_key : "", "playbook", sb->playbook ? sb->playbook : "", NULL);
		}
		r.body = sb->answer;
		res = ENGINE_ACCEPTED;
		/* Jobs that ended at admission keep their lease until their
		 * escalation is journaled: released with it. */
		outbox_send_release(e->outbox, &sb->notes, rel, n_rel);
		free(rel);
		free(rel_ids);
		goto out;
	}
	/* Not committed: resolves must stay possible later. */
	outbox_abandon(e->outbox, &sb->notes);
	/* Nothing was committed: forget the jobs we were about to start. */
	pthread_mutex_lock(&e->mu);
	for (size_t i = 0; i < sb->fresh.n; i++) {
		map_del(e->active_by_id, sb->fresh.v[i]->id);
		map_del(e->active_by_key, sb->fresh.v[i]->key);
		admit_unstart(e->admit, sb->fresh.v[i]->playbook_name, sb->now);
		job_free(sb->fresh.v[i]);
	}
	pthread_mutex_unlock(&e->mu);
	for (size_t i = 0; i < sb->final.n; i++)
		job_free(sb->final.v[i]);
	cJSON_Delete(sb->answer);
	if (committed == RD_NOMEM) {
		log_kv(LOG_ERROR, NULL, "out of memory: notification refused with 503", NULL);
		res = refuse(&r, ENGINE_NOMEM, "out of memory");
	} else {
		metrics_add(M_REJECTED, "journal_error", NULL, 1);
		log_kv(LOG_ERROR, NULL, "journal commit failed: notification refused with 503", NULL);
		res = refuse(&r, ENGINE_UNAVAILABLE, "the job journal cannot commit; retry later");
	}
out:
	sb->done(res, &r, sb->arg);
	submit_free(sb);
}

/* ---- a shared journal: decisions in the transaction ---- */

static int pair_add(struct submit *sb, struct playbook *pb, const struct alert *a)
{
	struct pair *pr;

	if (sb->n_pairs == sb->cap_pairs) {
		size_t ncap = sb->cap_pairs ? 2 * sb->cap_pairs : 8;
		struct pair *nv = realloc(sb->pairs, ncap * sizeof(*nv));
		if (!nv)
			return -1;
		sb->pairs = nv;
		sb->cap_pairs = ncap;
	}
	pr = &sb->pairs[sb->n_pairs];
	memset(pr, 0, sizeof(*pr));
	pr->pb = pb;
	pr->a.resolved = a->resolved;
	pr->a.fingerprint = strdup(a->fingerprint);
	pr->a.raw = a->raw ? cJSON_Duplicate(a->raw, 1) : NULL;
	sb->n_pairs++;
	if (!pr->a.fingerprint || (a->raw && !pr->a.raw))
		return -1;
	return 0;
}

/* The oldest unfinished job of its key (one, as a rule). */
static void fact_active(struct foreign *f, double *created, const struct job_row *j)
{
	if (!j->id || (f->found && j->created_at >= *created))
		return;
	f->found = 1;
	*created = j->created_at;
	snprintf(f->id, sizeof(f->id), "%s", j->id);
	f->dry_run = j->dry_run;
}

struct facts {
	struct pair *pr;
	double act_created, mact_created;
};

static void fact_row(int ended, const struct job_row *j, void *arg)
{
	struct facts *f = arg;
	struct pair *pr = f->pr;

	if (ended == 2) {
		pr->key_seen = 1;
	} else if (ended) {
		snprintf(pr->last_id, sizeof(pr->last_id), "%s", j->id ? j->id : "");
		pr->last_end = j->ended_at;
	} else if (j->key && strcmp(j->key, pr->key) == 0) {
		fact_active(&pr->act, &f->act_created, j);
	} else {
		fact_active(&pr->mact, &f->mact_created, j);
	}
}

struct starts_fact {
	struct engine *e;
	const char *playbook;
};

static void fact_start(const struct job_row *j, void *arg)
{
	struct starts_fact *sf = arg;

	admit_started(sf->e->admit, sf->playbook, j->created_at);
}

static void fact_pause(const struct pause_row *p, void *arg)
{
	struct engine *e = arg;

	if (pause_put(e, p->scope, p->principal ? p->principal : "unknown", p->reason, p->since, p->until) < 0)
		log_kv(LOG_ERROR, NULL, "out of memory loading a pause", "scope", p->scope, NULL);
}

/* What the pairs' decisions read and write, locked for the transaction:
 * both keys of each alert (a manual run's and Alertmanager's fold into
 * each other) and the budget of a playbook that has one. */
static int admission_locks(const struct submit *sb, struct store_batch *b)
{
	char name[300];

	for (size_t i = 0; i < sb->n_pairs; i++) {
		const struct pair *pr = &sb->pairs[i];
		job_key(name, sizeof(name), pr->pb->name, pr->a.fingerprint, 0);
		if (store_batch_lock(b, name) < 0)
			return -1;
		job_key(name, sizeof(name), pr->pb->name, pr->a.fingerprint, 1);
		if (store_batch_lock(b, name) < 0)
			return -1;
		/* not a job key: those all hold a '/' after the playbook's name */
		snprintf(name, sizeof(name), "budget %s", pr->pb->name);
		if (pr->pb->budget_runs > 0 && !pr->a.resolved && store_batch_lock(b, name) < 0)
			return -1;
	}
	return 0;
}

/* Writer thread, in the transaction: read what the journal holds of the
 * pairs' keys, playbooks and the pauses (another replica may have changed
 * any), then decide as a single replica would. */
static int decide_call(struct store_txn *t, struct store_batch *more, void *arg)
{
	struct submit *sb = arg;
	struct engine *e = sb->e;
	struct payload pp = {.manual = sb->manual, .reason = sb->reason ? sb->reason : ""};
	struct engine_submit_opts o = {.playbook = sb->playbook, .dry_run = sb->dry_run, .force = sb->force,
	                               .who = sb->has_actor ? &sb->actor : NULL};
	int rc = 0;

	for (size_t i = 0; i < sb->n_pairs && rc == 0; i++) {
		struct pair *pr = &sb->pairs[i];
		job_key(pr->key, sizeof(pr->key), pr->pb->name, pr->a.fingerprint, sb->manual);
		job_key(pr->mkey, sizeof(pr->mkey), pr->pb->name, pr->a.fingerprint, 1);
		struct facts f = {pr, 0, 0};
		rc = store_txn_admission(t, pr->key, sb->manual ? NULL : pr->mkey, fact_row, &f);
	}
	if (rc < 0)
		return -1;
	pthread_mutex_lock(&e->mu);
	/* The journal's pauses (once per transaction: this replica's own
	 * changes are in e->pauses already) and budget starts replace ours. */
	if (store_txn_seq(t) != e->pauses_txn) {
		while (e->pauses) {
			struct pause *pz = e->pauses;
			e->pauses = pz->next;
			pause_free(pz);
		}
		rc = store_txn_pauses(t, fact_pause, e);
		if (rc == 0) /* else read again by the redo (store_batch_call) */
			e->pauses_txn = store_txn_seq(t);
	}
	for (size_t i = 0; i < sb->n_pairs && rc == 0; i++) {
		struct playbook *pb = sb->pairs[i].pb;
		int seen = 0;
		for (size_t k = 0; k < i && !seen; k++)
			seen = sb->pairs[k].pb == pb;
		if (seen || pb->budget_runs <= 0 || sb->pairs[i].a.resolved)
			continue;
		struct starts_fact sf = {e, pb->name};
		admit_reset_starts(e->admit, pb->name);
		rc = store_txn_jobs(t, STR_STARTS, pb->name, sb->now - pb->budget_per, fact_start, &sf);
	}
	for (size_t i = 0; i < sb->n_pairs && rc == 0; i++) {
		struct pair *pr = &sb->pairs[i];
		if (pr->last_id[0])
			admit_ended(e->admit, pr->key, pr->last_id, pr->last_end);
		rc = admit_one(e, sb->set, pr->pb, &pp, &pr->a, &o, sb->now, more, sb->jobs, &sb->fresh,
		               &sb->cancels, &sb->final, &sb->notes, pr);
	}
	pause_gauges(e);
	pthread_mutex_unlock(&e->mu);
	return rc;
}

void engine_submit_async(struct engine *e, const struct payload *p, const struct engine_submit_opts *o,
                         engine_submit_fn *done, void *arg)
{
	const char *playbook = o->playbook;
	const struct pause *pz;
	struct store_batch *b = NULL;
	struct submit *sb;
	struct playbook_set *set;
	struct engine_reply r = {0};
	struct job *am;
	int failed = 0;

	pthread_mutex_lock(&e->mu);
	if (e->draining) {
		pthread_mutex_unlock(&e->mu);
		metrics_add(M_REJECTED, "draining", NULL, 1);
		done(refuse(&r, ENGINE_DRAINING, "recoveryd is shutting down; retry on another replica"), &r, arg);
		return;
	}
	set = e->set;
	if (playbook && !playbook_set_find(set, playbook)) {
		pthread_mutex_unlock(&e->mu);
		done(refuse(&r, ENGINE_UNKNOWN_PLAYBOOK, "no playbook named '%s' is loaded", playbook), &r, arg);
		return;
	}
	if (playbook && !p->resolved && (pz = paused(e, playbook, rd_now()))) {
		int all = strcmp(pz->scope, PAUSE_ALL) == 0;
		refuse(&r, ENGINE_CONFLICT, "%s paused by %s: %s; resume first with POST /api/v1/%s%s%sresume",
		       all ? "all automation is" : "this playbook is", pz->by, pz->reason, all ? "" : "playbooks/",
		       all ? "" : playbook, all ? "" : "/");
		pthread_mutex_unlock(&e->mu);
		done(ENGINE_CONFLICT, &r, arg);
		return;
	}
	if (playbook && (am = alertmanager_job(e, playbook, p))) {
		if (p->resolved)
			refuse(&r, ENGINE_CONFLICT,
			       "job %s for this alert was started by Alertmanager; a manual trigger cannot "
			       "cancel it: use POST /api/v1/jobs/%s/cancel",
			       am->id, am->id);
		else
			refuse(&r, ENGINE_CONFLICT,
			       "job %s for this alert was started by Alertmanager and has not ended; a manual "
			       "trigger does not join it: wait for it, or cancel it with POST "
			       "/api/v1/jobs/%s/cancel and trigger again",
			       am->id, am->id);
		log_kv(LOG_INFO, NULL, "manual trigger refused: the alert has an Alertmanager job", "playbook",
		       playbook, "job", am->id, NULL);
		pthread_mutex_unlock(&e->mu);
		done(ENGINE_CONFLICT, &r, arg);
		return;
	}
	if (map_len(e->active_by_id) + p->n_alerts > e->queue_max) {
		pthread_mutex_unlock(&e->mu);
		metrics_add(M_REJECTED, "queue_full", NULL, 1);
		log_kv(LOG_WARN, NULL, "queue full: notification refused with 503", NULL);
		done(refuse(&r, ENGINE_QUEUE_FULL, "the job queue is full"), &r, arg);
		return;
	}
	sb = calloc(1, sizeof(*sb));
	if (!sb) {
		pthread_mutex_unlock(&e->mu);
		log_kv(LOG_ERROR, NULL, "out of memory: notification refused with 503", NULL);
		done(refuse(&r, ENGINE_NOMEM, "out of memory"), &r, arg);
		return;
	}
	sb->e = e;
	sb->done = done;
	sb->arg = arg;
	sb->now = rd_now();
	sb->n_alerts = p->n_alerts;
	sb->resolved = p->resolved;
	snprintf(sb->who, sizeof(sb->who), "%s", o->who ? o->who->name : system_actor.name);
	prune(e, sb->now);
	b = store_batch_new();
	sb->answer = cJSON_CreateObject();
	sb->jobs = cJSON_AddArrayToObject(sb->answer, "jobs");
	if (!b || !sb->jobs || (p->group_key && !(sb->group_key = strdup(p->group_key))) ||
	    (playbook && !(sb->playbook = strdup(playbook)))) {
		failed = 1;
		goto decided;
	}
	for (size_t i = 0; i < p->n_alerts && !failed; i++) {
		const struct alert *a = &p->alerts[i];
		int matched = 0;
		metrics_add(M_ALERTS_RECEIVED, a->resolved ? "resolved" : "firing", NULL, 1);
		for (size_t k = 0; k < set->n && !failed; k++) {
			struct playbook *pb = set->v[k];
			if (playbook ? strcmp(pb->name, playbook) != 0 : !matcher_set_matches(pb->match, &a->labels))
				continue;
			/* A principal limited to some playbooks reaches only those,
			 * through /webhook too. */
			if (o->who && !actor_may_playbook(o->who, pb->name))
				continue;
			matched = 1;
			if (e->replica ? pair_add(sb, pb, a) < 0
			               : admit_one(e, set, pb, p, a, o, sb->now, b, sb->jobs, &sb->fresh,
			                           &sb->cancels, &sb->final, &sb->notes, NULL) < 0)
				failed = 1;
		}
		sb->unmatched += !matched;
	}
	if (e->replica && !failed) {
		/* Decided in the transaction, under the admission lock every
		 * replica takes: exact across replicas. */
		sb->set = set;
		playbook_set_ref(set);
		sb->manual = p->manual;
		sb->dry_run = o->dry_run;
		sb->force = o->force;
		if (o->who) {
			sb->actor = *o->who;
			sb->has_actor = 1;
		}
		if ((p->reason && !(sb->reason = strdup(p->reason))) || admission_locks(sb, b) < 0 ||
		    store_batch_call(b, decide_call, sb) < 0)
			failed = 1;
	}
decided:
	pthread_mutex_unlock(&e->mu);
	if (failed) {
		store_batch_free(b);
		submit_committed(RD_NOMEM, sb);
		return;
	}
	/* Answer only once the decisions are durable; the writer calls back. */
	if (store_commit_cb(e->store, b, submit_committed, sb) != RD_OK)
		submit_committed(RD_ERR, sb);
}

/* engine_submit waits for its own answer. */
struct submit_wait {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;
	enum engine_result res;
	struct engine_reply *r;
};

static void submit_wake(enum engine_result res, struct engine_reply *r, void *arg)
{
	struct submit_wait *w = arg;

	pthread_mutex_lock(&w->mu);
	w->res = res;
	*w->r = *r;
	w->done = 1;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

enum engine_result engine_submit(struct engine *e, const struct payload *p,
                                 const struct engine_submit_opts *o, struct engine_reply *r)
{
	struct submit_wait w = {.r = r};

	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cv, NULL);
	engine_submit_async(e, p, o, submit_wake, &w);
	pthread_mutex_lock(&w.mu);
	while (!w.done)
		pthread_cond_wait(&w.cv, &w.mu);
	pthread_mutex_unlock(&w.mu);
	pthread_cond_destroy(&w.cv);
	pthread_mutex_destroy(&w.mu);
	return w.res;
}

struct escalating {
	struct engine *e;
	char id[33];
};

/* The escalation rows of an ended job are journaled (or failed): a ?wait
 * for it may answer now. */
static void escalated(void *arg)
{
	struct escalating *es = arg;
	struct engine *e = es->e;

	pthread_mutex_lock(&e->mu);
	if (map_get(e->escalating, es->id) == es)
		map_del(e->escalating, es->id);
	pthread_cond_broadcast(&e->ended);
	pthread_mutex_unlock(&e->mu);
	free(es);
}

/* The runner's job_done: j reached a final state and its last update is
 * committed: drop it from the tables, wake waiters, escalate, free it. */
static void job_released(void *owner, struct job *j)
{
	struct engine *e = owner;
	double dur = (j->ended_at && j->created_at) ? j->ended_at - j->created_at : 0;
	struct outbox_notes notes = {0};
	const char *outcome = job_outcome_name(j->outcome); /* NULL: it ended without one */
	struct escalating *es = calloc(1, sizeof(*es));
	char d[32];
	int oom = 0;

	outbox_job_ended(e->outbox, &notes, j);
	pthread_mutex_lock(&e->mu);
	/* A ?wait answer shows the escalations the end decided: it waits for
	 * them to be journaled too (escalated). */
	if (es) {
		es->e = e;
		snprintf(es->id, sizeof(es->id), "%s", j->id);
		map_put(e->escalating, es->id, es, &oom);
		if (oom) {
			free(es);
			es = NULL;
		}
	}
	if (map_get(e->active_by_id, j->id) == j)
		map_del(e->active_by_id, j->id);
	if (map_get(e->active_by_key, j->key) == j)
		map_del(e->active_by_key, j->key);
	admit_ended(e->admit, j->key, j->id, j->ended_at ? j->ended_at : rd_now());
	pthread_cond_broadcast(&e->ended);
	/* A slot is free and the last claim filled every one: claim again
	 * now rather than at the next poll. */
	int more = e->replica && e->more_work;
	pthread_mutex_unlock(&e->mu);
	if (more)
		runner_poke(e->runner);

	metrics_add(M_JOBS, j->playbook_name, outcome ? outcome : job_state_name(j->state), 1);
	snprintf(d, sizeof(d), "%.3f", dur);
	log_kv(j->state == JS_SUCCEEDED ? LOG_INFO : LOG_WARN, j->id,
	       "job ended", "playbook", j->playbook_name, "key", j->key, "outcome",
	       outcome ? outcome : "", "error", j->error ? j->error : "", "seconds", d,
	       "dry_run", j->dry_run ? "true" : "false", NULL);
	{
		/* Its escalation and the release of its lease, in one batch
		 * (released already by its final update when that said quiet). */
		char id[33];
		const char *ids[1] = {id};
		size_t n = j->released_at_end ? 0 : 1;
		snprintf(id, sizeof(id), "%s", j->id);
		job_free(j);
		if (es)
			outbox_send_release_then(e->outbox, &notes, ids, n, escalated, es);
		else
			outbox_send_release(e->outbox, &notes, ids, n);
	}
}

static int job_ends_quietly(void *owner, const struct job *j)
{
	struct engine *e = owner;

	return outbox_success_is_quiet(e->outbox, j);
}

/* The runner's job_lost: another replica may hold j now; it leaves our
 * books unfinished, nothing escalated (its new owner goes on with it). */
static void job_lost(void *owner, struct job *j)
{
	struct engine *e = owner;

	pthread_mutex_lock(&e->mu);
	if (map_get(e->active_by_id, j->id) == j)
		map_del(e->active_by_id, j->id);
	if (map_get(e->active_by_key, j->key) == j)
		map_del(e->active_by_key, j->key);
	job_leave(&e->counts, j);
	pthread_cond_broadcast(&e->ended);
	pthread_mutex_unlock(&e->mu);
	job_free(j);
}

/* The runner's job_held: j's plan is made and its wait for approval is
 * committed: ask the sinks for a human (the body carries the plan). */
static void job_held(void *owner, struct job *j)
{
	struct engine *e = owner;
	struct outbox_notes notes = {0};

	log_kv(LOG_WARN, j->id, "plan made: waiting for approval", "playbook", j->playbook_name, "key",
	       j->key, NULL);
	outbox_note(&notes, j->id, j->key, EK_TRIGGER, ER_APPROVAL_NEEDED, outbox_playbook_sinks(j->pb), 0);
	outbox_send(e->outbox, &notes);
}

/* The runner's job_started: the first attempt's start is committed: the
 * on_start notices and the Grafana region's start. */
static void job_started(void *owner, struct job *j)
{
	struct engine *e = owner;
	struct outbox_notes notes = {0};

	outbox_job_started(e->outbox, &notes, j);
	outbox_send(e->outbox, &notes);
}

int engine_wait(struct engine *e, const char *id, double timeout)
{
	struct timespec ts;
	double until = rd_mono() + timeout;
	int present = 0;

	pthread_mutex_lock(&e->mu);
	while (map_get(e->active_by_id, id) || map_get(e->escalating, id)) {
		present = 1;
		double left = until - rd_mono();
		if (left <= 0) {
			pthread_mutex_unlock(&e->mu);
			return 0;
		}
		rd_timespec_in(CLOCK_MONOTONIC, left, &ts);
		pthread_cond_timedwait(&e->ended, &e->mu, &ts);
	}
	pthread_mutex_unlock(&e->mu);
	if (present)
		return 1;
	cJSON *rec = NULL;
	if (store_job_json(e->store, id, &rec) != RD_OK || !rec)
		return -1;
	cJSON_Delete(rec);
	return 1;
}

enum rd_status engine_job_json(struct engine *e, const char *id, cJSON **out)
{
	return store_job_json(e->store, id, out);
}

enum rd_status engine_jobs_page(struct engine *e, const struct jobs_query *q, cJSON **out,
                                long long *next)
{
	return store_jobs_page(e->store, q, out, next);
}

static const char *const action_names[] = {
	[EA_CANCEL] = "cancel", [EA_APPROVE] = "approve", [EA_REJECT] = "reject",
	[EA_PAUSE] = "pause",   [EA_RESUME] = "resume",
};

/* Commit an audit row on its own: the act is recorded before it takes
 * effect, so nothing a person did goes unrecorded. */
/* Journal the audit row of a, with what b already holds (NULL: nothing). */
static enum engine_result audit_commit(struct engine *e, const struct engine_act *a, const char *job_id,
                                       const char *playbook, struct engine_reply *r, struct store_batch *b)
{
	if (!b)
		b = store_batch_new();
	if (!b)
		return refuse(r, ENGINE_NOMEM, "out of memory");
	audit_add(b, a->who, action_names[a->action], job_id, playbook, a->reason, rd_now());
	if (store_commit(e->store, b, 1) != RD_OK) {
		log_kv(LOG_ERROR, job_id, "journal: cannot record an action; refused with 503", "action",
		       action_names[a->action], NULL);
		return refuse(r, ENGINE_UNAVAILABLE, "the job journal cannot commit; retry later");
	}
	return ENGINE_DONE;
}

/* The job of a cancel, approve or reject that is not active: ended or
 * unknown. */
/* A job that is not in the table has ended (or is not ours: a shared
 * journal). The principal's playbook scope is checked first, whatever the
 * job's state: one that may not act on it learns nothing more of it. */
static enum engine_result not_active(struct engine *e, const struct actor *who, const char *id,
                                     struct engine_reply *r)
{
	cJSON *rec = NULL;
	const char *st, *pb;
	enum engine_result res;

	if (store_job_json(e->store, id, &rec) != RD_OK || !rec)
		return refuse(r, ENGINE_NOT_FOUND, "no such job");
	st = cJSON_GetStringValue(cJSON_GetObjectItem(rec, "state"));
	pb = cJSON_GetStringValue(cJSON_GetObjectItem(rec, "playbook"));
	if (!actor_may_playbook(who, pb ? pb : ""))
		res = refuse(r, ENGINE_FORBIDDEN, "%s may not act on playbook %s", who->name, pb ? pb : "?");
	else
		res = refuse(r, ENGINE_CONFLICT, "job already ended (%s)", st ? st : "ended");
	cJSON_Delete(rec);
	return res;
}

static cJSON *id_state(const char *id, const char *state)
{
	cJSON *o = cJSON_CreateObject();

	if (o && (!cJSON_AddStringToObject(o, "id", id) || !cJSON_AddStringToObject(o, "state", state))) {
		cJSON_Delete(o);
		o = NULL;
	}
	return o;
}

/* cancel, approve, reject. */
/* A shared journal: the job is not ours (another replica holds it, or
 * nobody yet): the request is audited and journaled, and its holder acts
 * on it at its next poll. */
static enum engine_result act_elsewhere(struct engine *e, const struct engine_act *a, struct engine_reply *r)
{
	const char *id = a->target;
	cJSON *rec = NULL;
	const char *st, *pb;
	char playbook[256], by[ACTOR_NAME_MAX + 16];
	struct store_batch *b;
	enum engine_result res;
	enum job_state state;

	if (store_job_json(e->store, id, &rec) != RD_OK)
		return refuse(r, ENGINE_UNAVAILABLE, "the job journal cannot be read; retry later");
	if (!rec)
		return refuse(r, ENGINE_NOT_FOUND, "no such job");
	st = cJSON_GetStringValue(cJSON_GetObjectItem(rec, "state"));
	pb = cJSON_GetStringValue(cJSON_GetObjectItem(rec, "playbook"));
	snprintf(playbook, sizeof(playbook), "%s", pb ? pb : "");
	if (!st || job_state_parse(st, &state) < 0 || job_state_final(state)) {
		cJSON_Delete(rec);
		return not_active(e, a->who, id, r); /* the scope first, as for a job of ours */
	}
	cJSON_Delete(rec);
	if (!actor_may_playbook(a->who, playbook))
		return refuse(r, ENGINE_FORBIDDEN, "%s may not act on playbook %s", a->who->name, playbook);
	if (a->action != EA_CANCEL && state != JS_AWAITING_APPROVAL)
		return refuse(r, ENGINE_CONFLICT, "job is %s; only a job awaiting approval can be %s",
		              job_state_name(state), a->action == EA_APPROVE ? "approved" : "rejected");
	snprintf(by, sizeof(by), "%s%s", a->action == EA_REJECT ? REJECT_MARK : "", a->who->name);
	if (!(b = store_batch_new()) ||
	    (a->action == EA_APPROVE ? store_batch_approve_request(b, id, a->who->name)
	                             : store_batch_cancel_request(b, id, by)) < 0 ||
	    store_batch_notify(b) < 0) {
		store_batch_free(b);
		return refuse(r, ENGINE_NOMEM, "out of memory");
	}
	/* The request and its audit row: one transaction. */
	if ((res = audit_commit(e, a, id, playbook, r, b)) != ENGINE_DONE)
		return res;
	log_kv(LOG_INFO, id, "request journaled for the replica holding the job", "action", action_names[a->action],
	       "principal", a->who->name, "address", a->who->address, "reason", a->reason ? a->reason : "", NULL);
	r->body = id_state(id, a->action == EA_APPROVE ? "queued" : a->action == EA_REJECT ? "cancelled" : "cancelling");
	if (!r->body)
		return refuse(r, ENGINE_NOMEM, "out of memory");
	return a->action == EA_CANCEL ? ENGINE_CANCEL_REQUESTED : ENGINE_DONE;
}

static enum engine_result act_job(struct engine *e, const struct engine_act *a, struct engine_reply *r)
{
	const char *id = a->target, *act = action_names[a->action];
	char playbook[256], key[256], by[ACTOR_NAME_MAX + AUTH_REASON_MAX + 32];
	enum engine_result res;
	struct outbox_notes notes = {0};
	struct job *j;
	const char *shown;

	if (a->action != EA_APPROVE && !(a->reason && *a->reason))
		return refuse(r, ENGINE_INVALID, "%s needs a reason: send {\"reason\":\"...\"}", act);
	pthread_mutex_lock(&e->mu);
	j = map_get(e->active_by_id, id);
	if (!j) {
		pthread_mutex_unlock(&e->mu);
		return e->replica ? act_elsewhere(e, a, r) : not_active(e, a->who, id, r);
	}
	if (!actor_may_playbook(a->who, j->playbook_name)) {
		refuse(r, ENGINE_FORBIDDEN, "%s may not act on playbook %s", a->who->name, j->playbook_name);
		pthread_mutex_unlock(&e->mu);
		return ENGINE_FORBIDDEN;
	}
	if (a->action != EA_CANCEL && j->state != JS_AWAITING_APPROVAL) {
		refuse(r, ENGINE_CONFLICT, "job is %s; only a job awaiting approval can be %s", job_state_name(j->state),
		       a->action == EA_APPROVE ? "approved" : "rejected");
		pthread_mutex_unlock(&e->mu);
		return ENGINE_CONFLICT;
	}
	snprintf(playbook, sizeof(playbook), "%s", j->playbook_name);
	snprintf(key, sizeof(key), "%s", j->key);
	pthread_mutex_unlock(&e->mu);

	if ((res = audit_commit(e, a, id, playbook, r, NULL)) != ENGINE_DONE)
		return res;

	/* Recorded: now it takes effect, if the job is still there. */
	pthread_mutex_lock(&e->mu);
	j = map_get(e->active_by_id, id);
	if (!j || (a->action != EA_CANCEL && j->state != JS_AWAITING_APPROVAL)) {
		pthread_mutex_unlock(&e->mu);
		return j ? refuse(r, ENGINE_CONFLICT, "job is %s now", job_state_name(j->state))
		         : not_active(e, a->who, id, r);
	}
	switch (a->action) {
	case EA_APPROVE:
		j->approval = AP_APPROVED;
		free(j->approved_by);
		j->approved_by = strdup(a->who->name);
		shown = "queued";
		break;
	case EA_REJECT:
	case EA_CANCEL:
	default:
		shown = a->action == EA_CANCEL && j->state == JS_RUNNING ? "cancelling" : "cancelled";
		if (!j->cancel_requested) {
			j->cancel_requested = 1;
			j->rejected = a->action == EA_REJECT;
			snprintf(by, sizeof(by), "%s by %s: %s", a->action == EA_REJECT ? "rejected" : "cancelled",
			         a->who->name, a->reason);
			free(j->cancel_reason);
			j->cancel_reason = strdup(by);
			free(j->cancelled_by);
			j->cancelled_by = strdup(a->who->name);
		}
		break;
	}
	pthread_mutex_unlock(&e->mu);
	r->body = id_state(id, shown);
	if (a->action == EA_APPROVE) {
		runner_approve(e->runner, id);
		/* The page asking for approval is answered. */
		outbox_close_incident(e->outbox, &notes, key, ER_APPROVED);
		outbox_send(e->outbox, &notes);
	} else {
		runner_cancel(e->runner, id);
	}
	log_kv(LOG_INFO, id, a->action == EA_APPROVE ? "approved" : a->action == EA_REJECT ? "rejected" : "cancel requested",
	       "principal", a->who->name, "address", a->who->address, "reason", a->reason ? a->reason : "",
	       "playbook", playbook, NULL);
	if (!r->body)
		return refuse(r, ENGINE_NOMEM, "out of memory");
	return a->action == EA_CANCEL ? ENGINE_CANCEL_REQUESTED : ENGINE_DONE;
}

static void pause_expired(struct loop *l, long long id, void *arg);

static void pause_alarm_set(void *arg)
{
	struct pause_alarm *pa = arg;
	struct engine *e = pa->e;
	double in = pa->when - rd_now();

	pthread_mutex_lock(&e->mu);
	if (runner_timer(e->runner, rd_mono() + (in > 0 ? in : 0) + 0.01, pause_expired, pa) < 0) {
		free(pa);
	} else {
		pa->next = e->alarms;
		e->alarms = pa;
	}
	pthread_mutex_unlock(&e->mu);
}

static void pause_expired(struct loop *l, long long id, void *arg)
{
	struct pause_alarm *pa = arg, **pp;
	struct engine *e = pa->e;

	(void)l;
	(void)id;
	pthread_mutex_lock(&e->mu);
	for (pp = &e->alarms; *pp && *pp != pa; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = pa->next;
	pause_gauges(e);
	pthread_mutex_unlock(&e->mu);
	log_kv(LOG_INFO, NULL, "a pause ran out", NULL);
	free(pa);
}

static void pause_alarm(struct engine *e, double until)
{
	struct pause_alarm *pa;

	if (!until || !(pa = calloc(1, sizeof(*pa))))
		return;
	pa->e = e;
	pa->when = until;
	runner_call(e->runner, pause_alarm_set, free, pa);
}

/* pause, resume: of one playbook (target) or everything. */
static enum engine_result act_pause(struct engine *e, const struct engine_act *a, struct engine_reply *r)
{
	const char *scope = a->target ? a->target : PAUSE_ALL, *act = action_names[a->action];
	double now = rd_now();
	struct store_batch *b;
	struct pause_row row = {.scope = scope, .principal = a->who->name, .reason = a->reason,
	                        .since = now, .until = a->until};
	const struct pause *pz;
	int known, was;

	if (a->action == EA_PAUSE && !(a->reason && *a->reason))
		return refuse(r, ENGINE_INVALID, "pause needs a reason: send {\"reason\":\"...\"}");
	if (a->action == EA_PAUSE && a->until && a->until <= now)
		return refuse(r, ENGINE_INVALID, "until is in the past");
	if (!a->target ? a->who->scope[0] : !actor_may_playbook(a->who, scope))
		return refuse(r, ENGINE_FORBIDDEN, "%s may not %s %s", a->who->name, act,
		              a->target ? scope : "everything (its tokens-file entry names playbooks)");
	pthread_mutex_lock(&e->mu);
	known = !a->target || playbook_set_find(e->set, scope);
	was = 0;
	for (pz = e->pauses; pz; pz = pz->next)
		was |= strcmp(pz->scope, scope) == 0 && !(pz->until && pz->until <= now);
	pthread_mutex_unlock(&e->mu);
	/* A pause of a playbook that is not loaded is refused; its resume is
	 * not, so that a stale pause can always be lifted. */
	if (!known && a->action == EA_PAUSE)
		return refuse(r, ENGINE_UNKNOWN_PLAYBOOK, "no playbook named '%s' is loaded", scope);
	if (a->action == EA_RESUME && !was)
		return refuse(r, ENGINE_CONFLICT, "%s is not paused", a->target ? scope : "everything");
	if (!(b = store_batch_new()))
		return refuse(r, ENGINE_NOMEM, "out of memory");
	audit_add(b, a->who, act, NULL, scope, a->reason, now);
	if (a->action == EA_PAUSE)
		store_batch_pause(b, &row);
	else
		store_batch_unpause(b, scope);
	if (store_commit(e->store, b, 1) != RD_OK) {
		log_kv(LOG_ERROR, NULL, "journal: cannot record a pause; refused with 503", NULL);
		return refuse(r, ENGINE_UNAVAILABLE, "the job journal cannot commit; retry later");
	}
	pthread_mutex_lock(&e->mu);
	if (pause_put(e, scope, a->action == EA_PAUSE ? a->who->name : NULL, a->reason, now, a->until) < 0) {
		pthread_mutex_unlock(&e->mu);
		return refuse(r, ENGINE_NOMEM, "out of memory");
	}
	pause_gauges(e);
	if (a->action == EA_PAUSE) {
		for (pz = e->pauses; pz && strcmp(pz->scope, scope) != 0; pz = pz->next)
			;
		r->body = pz ? pause_json(pz) : NULL;
	} else {
		r->body = cJSON_CreateObject();
		if (r->body) {
			cJSON_AddStringToObject(r->body, "scope", scope);
			cJSON_AddBoolToObject(r->body, "paused", 0);
		}
	}
	pthread_mutex_unlock(&e->mu);
	if (a->action == EA_PAUSE)
		pause_alarm(e, a->until);
	log_kv(LOG_WARN, NULL, a->action == EA_PAUSE ? "paused" : "resumed", "scope", scope, "principal",
	       a->who->name, "address", a->who->address, "reason", a->reason ? a->reason : "", NULL);
	if (!r->body)
		return refuse(r, ENGINE_NOMEM, "out of memory");
	return ENGINE_DONE;
}

enum engine_result engine_act(struct engine *e, const struct engine_act *a, struct engine_reply *r)
{
	r->body = NULL;
	r->message[0] = '\0';
	switch (a->action) {
	case EA_CANCEL:
	case EA_APPROVE:
	case EA_REJECT:
		if (!a->target)
			return refuse(r, ENGINE_NOT_FOUND, "no such job");
		return act_job(e, a, r);
	case EA_PAUSE:
	case EA_RESUME:
		return act_pause(e, a, r);
	}
	return refuse(r, ENGINE_INVALID, "unknown action");
}

cJSON *engine_playbooks_json(struct engine *e)
{
	cJSON *a = cJSON_CreateArray();
	double now = rd_now();

	pthread_mutex_lock(&e->mu);
	for (size_t i = 0; a && e->set && i < e->set->n; i++) {
		cJSON *o = playbook_json(e->set->v[i]);
		const struct pause *pz = paused(e, e->set->v[i]->name, now);
		if (!o || !cJSON_AddItemToArray(a, o)) {
			cJSON_Delete(o);
			continue;
		}
		if (pz)
			cJSON_AddItemToObject(o, "paused", pause_json(pz));
		else
			cJSON_AddNullToObject(o, "paused");
	}
	pthread_mutex_unlock(&e->mu);
	/* What admission holds against each: read from the journal (all
	 * replicas' jobs), outside the engine's lock. */
	for (cJSON *o = a ? a->child : NULL; o; o = o->next) {
		const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
		const cJSON *budget = cJSON_GetObjectItemCaseSensitive(o, "budget");
		const cJSON *per = cJSON_GetObjectItemCaseSensitive(budget, "per");
		const cJSON *runs = cJSON_GetObjectItemCaseSensitive(budget, "runs");
		const cJSON *cool = cJSON_GetObjectItemCaseSensitive(o, "cooldown");
		double cd = cJSON_IsNumber(cool) ? cool->valuedouble : 0;

		if (cJSON_IsString(name))
			store_playbook_stats(e->store, name->valuestring,
			                     cJSON_IsNumber(per) && cJSON_IsNumber(runs) && runs->valuedouble > 0
			                             ? now - per->valuedouble
			                             : 0,
			                     cd > 0 ? now - cd : 0, cd, o);
	}
	return a;
}

/* ---------- start-up replay ---------- */

#define POISON_STALLS 2
#define POISON_ERROR "poisoned: the event loop stalled in this job twice (watchdog restarts); not run again"

struct replay {
	struct engine *e;
	struct outbox_notes notes;
	struct store_batch *b;
	struct pending resume;
	size_t resumed, interrupted, orphaned;
	double now;
	/* A claim on a shared journal: the rows are this replica's now
	 * (prev_owner: the replica whose lease ran out, or NULL). */
	int claim;
	const char *prev_owner;
	char (*rel)[33];         /* claimed jobs that ended: released with their escalation */
	size_t n_rel, cap_rel;
	char (*appr)[33];        /* claimed jobs approved through another replica */
	size_t n_appr, cap_appr;
	size_t asked, got;       /* a claim: jobs asked for, rows it got */
};

static int cancel_from(struct job *j, const char *cancel_by);

static void approve_add(struct replay *rp, const char *id)
{
	if (rp->n_appr == rp->cap_appr) {
		size_t ncap = rp->cap_appr ? 2 * rp->cap_appr : 8;
		char (*nv)[33] = realloc(rp->appr, ncap * sizeof(*nv));
		if (!nv)
			return; /* its approval timer finds it approved */
		rp->appr = nv;
		rp->cap_appr = ncap;
	}
	snprintf(rp->appr[rp->n_appr++], sizeof(rp->appr[0]), "%s", id);
}

static void release_add(struct replay *rp, const char *id)
{
	if (rp->n_rel == rp->cap_rel) {
		size_t ncap = rp->cap_rel ? 2 * rp->cap_rel : 8;
		char (*nv)[33] = realloc(rp->rel, ncap * sizeof(*nv));
		if (!nv)
			return; /* its lease runs out again; the next claim escalates */
		rp->rel = nv;
		rp->cap_rel = ncap;
	}
	snprintf(rp->rel[rp->n_rel++], sizeof(rp->rel[0]), "%s", id);
}

/* A claimed job had ended, but its replica went before what the end
 * causes was journaled (the job kept its lease until then): escalate it
 * here, as job_released would have. e->mu held. */
static void claim_ended(struct replay *rp, const struct job_row *r, enum job_state st)
{
	struct engine *e = rp->e;
	struct job tmp;

	memset(&tmp, 0, sizeof(tmp));
	snprintf(tmp.id, sizeof(tmp.id), "%s", r->id);
	tmp.key = (char *)(r->key ? r->key : "");
	tmp.state = st;
	job_outcome_parse(r->outcome, &tmp.outcome);
	tmp.dry_run = r->dry_run;
	approval_parse(r->approval, &tmp.approval);
	tmp.plan_attempts = r->plan_attempts;
	tmp.attempts = r->attempts; /* whether it ran: its Grafana region ends */
	tmp.pb = playbook_set_find(e->set, r->playbook);
	log_kv(LOG_WARN, r->id, "ended job taken over: escalating what its end causes", "from",
	       rp->prev_owner ? rp->prev_owner : "", "outcome", r->outcome ? r->outcome : "", NULL);
	if (rp->prev_owner)
		metrics_add(M_TAKEOVERS, "job", NULL, 1);
	if (tmp.outcome == OUT_PAUSED || tmp.outcome == OUT_BUDGET_EXHAUSTED)
		outbox_note(&rp->notes, tmp.id, tmp.key, EK_TRIGGER,
		            tmp.outcome == OUT_PAUSED ? ER_PAUSED : ER_BUDGET_EXHAUSTED,
		            tmp.pb ? outbox_playbook_sinks(tmp.pb) : outbox_default_sinks(), tmp.dry_run);
	else if (tmp.pb)
		outbox_job_ended(e->outbox, &rp->notes, &tmp);
	else if (st == JS_FAILED)
		outbox_note(&rp->notes, tmp.id, tmp.key, EK_TRIGGER, ER_FAILED, outbox_default_sinks(), tmp.dry_run);
	release_add(rp, r->id);
}

static void replay_row(const struct job_row *r, void *arg)
{
	struct replay *rp = arg;
	struct engine *e = rp->e;
	enum job_state st;
	struct playbook *pb;
	struct job *j;
	struct job_row row;

	if (job_state_parse(r->state, &st) < 0)
		return;
	if (rp->claim && job_state_final(st)) {
		claim_ended(rp, r, st);
		return;
	}
	if (job_state_final(st)) {
		if (st == JS_PAUSED)
			return; /* spent neither budget nor cooldown */
		admit_ended(e->admit, r->key, r->id, r->ended_at ? r->ended_at : r->created_at);
		if (st != JS_BUDGET_EXHAUSTED)
			admit_started(e->admit, r->playbook, r->created_at);
		return;
	}
	if (!rp->claim)
		admit_started(e->admit, r->playbook, r->created_at);
	/* A shared journal: unfinished jobs are claimed (engine_poll), not
	 * taken at start-up; other replicas may hold them. */
	if (e->replica && !rp->claim)
		return;
	pb = playbook_set_find(e->set, r->playbook);
	j = calloc(1, sizeof(*j));
	if (!j)
		return;
	snprintf(j->id, sizeof(j->id), "%s", r->id);
	if (rp->claim) {
		j->owner = e->replica;
		j->lease_token = r->lease_token;
		j->lease_until = r->lease_until;
	}
	j->playbook_name = strdup(r->playbook);
	j->key = strdup(r->key);
	j->trigger = strdup(r->trigger ? r->trigger : "webhook");
	j->reason = r->reason ? strdup(r->reason) : NULL;
	j->alert_json = strdup(r->alert_json ? r->alert_json : "{}");
	j->alert = cJSON_Parse(j->alert_json);
	j->dry_run = r->dry_run;
	j->created_at = r->created_at;
	j->started_at = r->started_at;
	j->next_run_at = r->next_run_at;
	j->max_attempts = r->max_attempts;
	j->attempts = r->attempts;
	j->notifications = r->notifications;
	j->triggered_by = strdup(r->triggered_by ? r->triggered_by : "alertmanager");
	j->cancelled_by = r->cancelled_by ? strdup(r->cancelled_by) : NULL;
	j->approved_by = r->approved_by ? strdup(r->approved_by) : NULL;
	approval_parse(r->approval, &j->approval);
	if (rp->claim && r->cancelled_by) {
		cancel_from(j, r->cancelled_by); /* asked of its previous holder */
	} else if (rp->claim && r->approved_by && st == JS_AWAITING_APPROVAL && j->approval == AP_PENDING) {
		j->approval = AP_APPROVED;
		approve_add(rp, j->id);
	}
	j->plan_attempts = r->plan_attempts;
	job_enter(&e->counts, j, st);
	j->error = r->error ? strdup(r->error) : NULL;

	if (!pb) {
		char msg[200];
		snprintf(msg, sizeof(msg), "playbook '%s' is no longer loaded", r->playbook);
		job_set_state(&e->counts, j, JS_FAILED);
		j->outcome = OUT_FAILED;
		free(j->error);
		j->error = strdup(msg);
		j->ended_at = rp->now;
		job_row_of(j, &row);
		row.updated_at = rp->now;
		store_batch_update_job(rp->b, &row);
		admit_ended(e->admit, j->key, j->id, rp->now);
		log_kv(LOG_WARN, j->id, "journal replay: job failed", "error", msg, NULL);
		metrics_add(M_JOBS, j->playbook_name, job_outcome_name(j->outcome), 1);
		/* Nobody else will finish this recovery: tell the default sinks. */
		outbox_note(&rp->notes, j->id, j->key, EK_TRIGGER, ER_PLAYBOOK_REMOVED, outbox_default_sinks(),
		            j->dry_run);
		rp->orphaned++;
		if (rp->claim)
			release_add(rp, j->id);
		job_free(j);
		return;
	}
	j->set = e->set;
	j->set_unref = playbook_set_unref;
	j->pb = pb;
	playbook_set_ref(e->set);
	if (rp->prev_owner) {
		/* Its replica stopped renewing the lease: ours now, under the
		 * crash rules. */
		cJSON *d = cJSON_CreateObject();
		cJSON_AddStringToObject(d, "from", rp->prev_owner);
		cJSON_AddStringToObject(d, "by", e->replica);
		cJSON_AddStringToObject(d, "state", r->state);
		add_event(rp->b, j->id, "takeover", d, rp->now);
		metrics_add(M_TAKEOVERS, "job", NULL, 1);
		log_kv(LOG_WARN, j->id, "job taken over", "from", rp->prev_owner, "playbook", j->playbook_name,
		       "state", r->state, NULL);
	}
	if (st == JS_RUNNING) {
		/* The process died mid-attempt: DESIGN.md §5. A job that held the
		 * event loop until the watchdog ended the process twice would
		 * do it again: it is a poison job, never run again. */
		int poison = r->stalls >= POISON_STALLS;
		const char *why = poison ? POISON_ERROR
		                  : r->stalls ? "interrupted: the watchdog restarted recoveryd during the attempt"
		                  : rp->prev_owner ? "interrupted: the replica running it stopped holding its lease"
		                              : "interrupted: recoveryd stopped during the attempt";
		struct attempt_row a = {.n = r->attempts, .started_at = r->updated_at, .ended_at = rp->now,
		                        .result = attempt_result_name(AR_INTERRUPTED), .error = why,
		                        .verify_ok = -1};
		store_batch_attempt(rp->b, j->id, &a);
		rp->interrupted++;
		free(j->error);
		j->error = strdup(why);
		if (poison) {
			job_set_state(&e->counts, j, JS_FAILED);
			j->outcome = OUT_POISONED;
			j->ended_at = rp->now;
		} else if (pb->idempotent || j->approval == AP_PENDING) {
			/* a plan attempt only read: safe to make again */
			job_set_state(&e->counts, j, JS_QUEUED);
			j->attempts = r->attempts > 0 ? r->attempts - 1 : 0;
		} else {
			job_set_state(&e->counts, j, JS_FAILED);
			j->outcome = OUT_INTERRUPTED;
			j->ended_at = rp->now;
		}
		job_row_of(j, &row);
		row.updated_at = rp->now;
		store_batch_update_job(rp->b, &row);
		log_kv(LOG_WARN, j->id, "journal replay: attempt interrupted by a restart", "playbook",
		       j->playbook_name, "state", job_state_name(j->state), NULL);
		if (j->state == JS_FAILED) {
			enum esc_reason reason = poison ? ER_POISONED : ER_INTERRUPTED;
			metrics_add(M_JOBS, j->playbook_name, job_outcome_name(j->outcome), 1);
			outbox_note(&rp->notes, j->id, j->key, EK_TRIGGER, reason, outbox_playbook_sinks(pb),
			            j->dry_run);
			outbox_region_end(&rp->notes, j);
			admit_ended(e->admit, j->key, j->id, rp->now);
			if (rp->claim)
				release_add(rp, j->id);
			job_free(j);
			return;
		}
	}
	int oom;
	map_put(e->active_by_id, j->id, j, &oom);
	map_put(e->active_by_key, j->key, j, &oom);
	pending_add(&rp->resume, j);
	rp->resumed++;
}

static void pause_row_load(const struct pause_row *p, void *arg)
{
	struct engine *e = arg;

	pthread_mutex_lock(&e->mu);
	if (pause_put(e, p->scope, p->principal ? p->principal : "unknown", p->reason, p->since, p->until) < 0)
		log_kv(LOG_ERROR, NULL, "journal replay: out of memory loading a pause", "scope", p->scope, NULL);
	pthread_mutex_unlock(&e->mu);
	if (p->until > rd_now())
		pause_alarm(e, p->until);
	if (!p->until || p->until > rd_now())
		log_kv(LOG_WARN, NULL, "journal replay: paused", "scope", p->scope, "principal",
		       p->principal ? p->principal : "", "reason", p->reason ? p->reason : "", NULL);
}

static void on_notify(void *arg);

enum rd_status engine_start(struct engine *e)
{
	struct replay rp = {.e = e, .now = rd_now()};
	double horizon = 0;
	enum rd_status rc;

	for (size_t i = 0; e->set && i < e->set->n; i++) {
		if (e->set->v[i]->cooldown > horizon)
			horizon = e->set->v[i]->cooldown;
		if (e->set->v[i]->budget_per > horizon)
			horizon = e->set->v[i]->budget_per;
	}
	rp.b = store_batch_new();
	if (!rp.b)
		return RD_NOMEM;
	/* What this replica held before a restart is free now: claimed at
	 * the first poll (by whoever comes first) under the crash rules. */
	if (e->replica && (store_batch_expire(rp.b, e->replica) < 0 || store_batch_notify(rp.b) < 0)) {
		store_batch_free(rp.b);
		return RD_NOMEM;
	}
	/* Pauses survive restarts: in force before any alert is admitted. */
	if (store_scan_pauses(e->store, pause_row_load, e) != RD_OK) {
		store_batch_free(rp.b);
		return RD_ERR;
	}
	pthread_mutex_lock(&e->mu);
	pause_gauges(e);
	rc = store_scan_jobs(e->store, rp.now - horizon, replay_row, &rp);
	pthread_mutex_unlock(&e->mu);
	if (rc != RD_OK) {
		store_batch_free(rp.b);
		free(rp.resume.v);
		outbox_abandon(e->outbox, &rp.notes);
		return rc;
	}
	rc = store_commit(e->store, rp.b, 1);
	if (rc != RD_OK) {
		free(rp.resume.v);
		outbox_abandon(e->outbox, &rp.notes);
		return rc;
	}
	if (rp.resumed || rp.interrupted || rp.orphaned) {
		char a[16], b[16], c[16];
		snprintf(a, sizeof(a), "%zu", rp.resumed);
		snprintf(b, sizeof(b), "%zu", rp.interrupted);
		snprintf(c, sizeof(c), "%zu", rp.orphaned);
		log_kv(LOG_INFO, NULL, "journal replayed", "resumed", a, "interrupted", b, "orphaned", c,
		       NULL);
	}
	runner_schedule(e->runner, rp.resume.v, rp.resume.n);
	free(rp.resume.v);
	/* Open incidents and undelivered notifications survive restarts. */
	if (outbox_load(e->outbox) != RD_OK)
		log_kv(LOG_ERROR, NULL, "journal: cannot read the escalation outbox", NULL);
	outbox_send(e->outbox, &rp.notes); /* after the load: its rows are new */
	rc = runner_start(e->runner);
	/* Other replicas' requests and freed work wake the poll at once; the
	 * slow poll stays as the fallback. */
	if (rc == RD_OK && e->replica && store_listen(e->store, on_notify, e) < 0)
		log_kv(LOG_WARN, NULL, "journal: cannot listen for work; polling only", NULL);
	return rc;
}

static void on_notify(void *arg)
{
	struct engine *e = arg;

	runner_poke(e->runner);
}

/* ---------- claims (a journal shared by several replicas) ---------- */

/* A claim is over: the next poll may claim again, engine_free may go on. */
static void claim_over(struct engine *e)
{
	pthread_mutex_lock(&e->mu);
	e->claiming = 0;
	if (--e->claims_out == 0)
		pthread_cond_broadcast(&e->claims_cv);
	pthread_mutex_unlock(&e->mu);
}

static void claim_finish(struct replay *rp)
{
	claim_over(rp->e);
	free(rp->resume.v);
	free(rp->rel);
	free(rp->appr);
	free(rp);
}

/* Writer thread: the crash rules of the claimed jobs are committed (or
 * not: a job whose writes were fenced is lost again by the runner). */
static void takeover_committed(enum rd_status res, void *arg)
{
	struct replay *rp = arg;
	const char **ids = rp->n_rel ? calloc(rp->n_rel, sizeof(*ids)) : NULL;

	for (size_t i = 0; ids && i < rp->n_rel; i++)
		ids[i] = rp->rel[i];
	if (res == RD_OK)
		outbox_send_release(rp->e->outbox, &rp->notes, ids, ids ? rp->n_rel : 0);
	else
		outbox_abandon(rp->e->outbox, &rp->notes);
	free(ids);
	runner_schedule(rp->e->runner, rp->resume.v, rp->resume.n);
	for (size_t i = 0; i < rp->n_appr; i++)
		runner_approve(rp->e->runner, rp->appr[i]);
	claim_finish(rp);
}

/* Writer thread, after the claim committed: one call per claimed job. */
static void claim_got(const struct job_row *r, const char *prev_owner, void *arg)
{
	struct replay *rp = arg;
	struct engine *e = rp->e;

	rp->now = rd_now();
	rp->prev_owner = prev_owner;
	rp->got++;
	pthread_mutex_lock(&e->mu);
	replay_row(r, rp);
	pthread_mutex_unlock(&e->mu);
	rp->prev_owner = NULL;
}

static void claim_done(enum rd_status res, void *arg)
{
	struct replay *rp = arg;
	struct store_batch *b = rp->b;

	(void)res; /* a failed claim got nothing: the next poll tries again */
	rp->b = NULL;
	pthread_mutex_lock(&rp->e->mu);
	rp->e->more_work = rp->got >= rp->asked;
	pthread_mutex_unlock(&rp->e->mu);
	if (store_batch_empty(b)) {
		store_batch_free(b);
		takeover_committed(RD_OK, rp);
	} else if (store_commit_cb(rp->e->store, b, takeover_committed, rp) != RD_OK) {
		takeover_committed(RD_ERR, rp);
	}
}

/* A cancel (or reject) asked through another replica: cancel_by names
 * who, "reject:" ahead for a rejection, "resolve:" for the alert's
 * resolve. e->mu held. 1: it takes effect. */
static int cancel_from(struct job *j, const char *cancel_by)
{
	int reject = strncmp(cancel_by, REJECT_MARK, strlen(REJECT_MARK)) == 0;
	int resolve = strncmp(cancel_by, RESOLVE_MARK, strlen(RESOLVE_MARK)) == 0;
	const char *who = reject ? cancel_by + strlen(REJECT_MARK)
	                  : resolve ? cancel_by + strlen(RESOLVE_MARK) : cancel_by;
	char reason[ACTOR_NAME_MAX + 64];

	if (j->cancel_requested)
		return 0;
	if (resolve)
		snprintf(reason, sizeof(reason), "alert resolved");
	else
		snprintf(reason, sizeof(reason), "%s by %s through another replica", reject ? "rejected" : "cancelled",
		         who);
	j->cancel_requested = 1;
	j->cancel_by_resolve = resolve;
	j->rejected = reject;
	free(j->cancel_reason);
	j->cancel_reason = strdup(reason);
	free(j->cancelled_by);
	j->cancelled_by = strdup(who);
	return 1;
}

/* Another replica asked to cancel, reject or approve a job of ours (a
 * resolved alert it admitted, a person's request): as if it had come
 * here. Writer thread. */
static void cancel_asked(const char *job_id, const char *cancel_by, const char *approve_by, void *arg)
{
	struct engine *e = arg;
	struct outbox_notes notes = {0};
	struct job *j;
	int cancel = 0, approve = 0;
	char key[256];

	pthread_mutex_lock(&e->mu);
	j = map_get(e->active_by_id, job_id);
	if (j && approve_by && j->state == JS_AWAITING_APPROVAL && j->approval == AP_PENDING &&
	    !j->cancel_requested) {
		j->approval = AP_APPROVED;
		free(j->approved_by);
		j->approved_by = strdup(approve_by);
		snprintf(key, sizeof(key), "%s", j->key);
		approve = 1;
	} else if (j && cancel_by) {
		cancel = cancel_from(j, cancel_by);
	}
	pthread_mutex_unlock(&e->mu);
	if (approve) {
		log_kv(LOG_INFO, job_id, "approved through another replica", "by", approve_by, NULL);
		runner_approve(e->runner, job_id);
		outbox_close_incident(e->outbox, &notes, key, ER_APPROVED);
		outbox_send(e->outbox, &notes);
	}
	if (cancel) {
		log_kv(LOG_INFO, job_id, "cancel asked through another replica", "by", cancel_by, NULL);
		runner_cancel(e->runner, job_id);
	}
}

static int cancels_call(struct store_txn *t, struct store_batch *more, void *arg)
{
	struct engine *e = arg;

	(void)more;
	return store_txn_cancel_requests(t, e->replica, cancel_asked, e);
}

/* The runner's poll (loop thread): claim up to slots free jobs, the
 * outbox's free rows, and look for cancels other replicas asked for. */
static void engine_poll(void *owner, size_t slots)
{
	struct engine *e = owner;
	struct replay *rp;
	struct store_batch *b;
	double now = rd_now();

	outbox_poll(e->outbox);
	if ((b = store_batch_new()) && store_batch_call(b, cancels_call, e) == 0)
		store_commit(e->store, b, 0);
	else
		store_batch_free(b);
	if (!slots)
		return;
	pthread_mutex_lock(&e->mu);
	if (e->claiming || e->draining) {
		pthread_mutex_unlock(&e->mu);
		return;
	}
	e->claiming = 1;
	e->claims_out++;
	pthread_mutex_unlock(&e->mu);
	rp = calloc(1, sizeof(*rp));
	b = store_batch_new();
	if (rp && (rp->b = store_batch_new()))
		store_batch_keep(rp->b); /* the crash rules must not be lost to a database restart */
	if (!rp || !b || !rp->b ||
	    store_batch_claim_jobs(b, e->replica, now, now + e->lease, (int)(slots < 1000 ? slots : 1000),
	                           claim_got, rp) < 0) {
		store_batch_free(b);
		if (rp) {
			store_batch_free(rp->b);
			free(rp);
		}
		claim_over(e);
		return;
	}
	rp->e = e;
	rp->claim = 1;
	rp->asked = slots < 1000 ? slots : 1000;
	if (store_commit_cb(e->store, b, claim_done, rp) != RD_OK)
		claim_done(RD_ERR, rp);
}

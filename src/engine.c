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
	struct map *active_by_key;  /* [mu] key -> job */
	struct admit *admit;        /* [mu] cooldown and budget bookkeeping */
	struct job_counts counts;   /* [mu] unfinished jobs per state */
	struct outbox *outbox;
	char *broken_file;          /* [mu] playbook file the last reload could not load */
	char *broken_error;         /* [mu] */
	int broken_escalated;       /* [mu] */
};


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
	                         .owner = e};
	struct watchdog_opts wo = {o->watchdog_unhealthy, o->watchdog_exit, on_loop_expired, e};

	if (!e)
		return NULL;
	pthread_mutex_init(&e->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&e->ended, &ca);
	pthread_condattr_destroy(&ca);
	e->store = o->store;
	e->set = o->set;
	e->global_dry_run = o->dry_run;
	e->queue_max = o->queue_max ? o->queue_max : 10000;
	e->active_by_id = map_new();
	e->active_by_key = map_new();
	e->admit = admit_new();
	e->wd = watchdog_new(&wo);
	ro.wd = e->wd;
	e->runner = e->wd ? runner_new(&ro) : NULL;
	if (e->runner) {
		struct outbox_opts oo = {.store = o->store, .runner = e->runner,
		                         .disabled = o->no_escalation};
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
	outbox_quiesce(e->outbox); /* its journal reports reach the runner */
	runner_free(e->runner);
	watchdog_free(e->wd);
	map_free(e->active_by_key, NULL);
	map_free(e->active_by_id, free_job_val);
	outbox_free(e->outbox); /* after the runner: it let go of the transfers */
	free(e->broken_file);
	free(e->broken_error);
	playbook_set_unref(e->set);
	admit_free(e->admit);
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
}

/* ---------- job creation ---------- */

static struct job *job_new(struct playbook_set *set, struct playbook *pb, const char *key,
                           const char *trigger, const char *reason, const cJSON *alert, int dry_run,
                           double now)
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
	j->created_at = now;
	j->max_attempts = pb->retries + 1;
	j->notifications = 1;
	j->state = JS_QUEUED;
	j->set = set;
	j->set_unref = playbook_set_unref;
	j->pb = pb;
	playbook_set_ref(set);
	if (!j->playbook_name || !j->key || !j->trigger || !j->alert_json) {
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

/* Decide one (alert, playbook) pair. Called with e->mu held. */
static int admit_one(struct engine *e, struct playbook_set *set, struct playbook *pb,
                     const struct payload *p, const struct alert *a, int dry_run, double now,
                     struct store_batch *b, cJSON *jobs, struct pending *fresh,
                     struct cancel_ids *cancels, struct pending *final, struct outbox_notes *notes)
{
	char key[256], mkey[256];
	const char *trigger = p->manual ? "manual" : "webhook";
	struct job *active;
	struct job_row row;

	/* Manual triggers have their own keys: a notification can never cancel
	 * a job a human started, and a human's trigger never joins or cancels
	 * an Alertmanager job (engine_submit refuses those with 409). */
	job_key(key, sizeof(key), pb->name, a->fingerprint, p->manual);
	job_key(mkey, sizeof(mkey), pb->name, a->fingerprint, 1);
	active = map_get(e->active_by_key, key);

	if (a->resolved) {
		/* A resolved alert never starts a job; it closes its key's job
		 * and, if recovery had failed, the incident humans were paged for. */
		outbox_close_incident(e->outbox, notes, key, ER_ALERT_RESOLVED);
		if (!p->manual) /* the alert itself resolved: so did a manual run's incident */
			outbox_close_incident(e->outbox, notes, mkey, ER_ALERT_RESOLVED);
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
	if (!active && !p->manual)
		active = map_get(e->active_by_key, mkey);

	struct admit_policy pol = {pb->cooldown, pb->budget_runs, pb->budget_per, p->manual};
	const char *last_id = NULL;
	enum admit_decision d = admit_firing(e->admit, pb->name, key, active != NULL, &pol, now, &last_id);
	const char *dname = admit_decision_name(d);
	struct job *j;

	metrics_add(M_ADMISSIONS, pb->name, dname, 1);
	/* The playbook's file failed to load at the last reload and its alerts
	 * keep coming: the old version runs, humans must know (once). */
	if (e->broken_file && !e->broken_escalated && strcmp(e->broken_file, pb->file) == 0) {
		const char *on = d == ADMIT_COALESCED ? active->id : d == ADMIT_COOLDOWN ? last_id : NULL;
		e->broken_escalated = 1;
		if (on && *on)
			outbox_note(notes, on, d == ADMIT_COALESCED ? active->key : key, EK_TRIGGER,
			            ER_PLAYBOOK_LOAD_FAILED, outbox_playbook_sinks(pb),
			            d == ADMIT_COALESCED ? active->dry_run : e->global_dry_run);
		else
			e->broken_escalated = 2; /* attach to the job created below */
	}
	switch (d) {
	case ADMIT_COALESCED:
		active->notifications++;
		job_row_of(active, &row);
		row.updated_at = now;
		store_batch_update_job(b, &row);
		add_event(b, active->id, "admission", admission_detail(dname, trigger), now);
		add_answer(jobs, active->id, pb->name, active->key, dname);
		return 0;
	case ADMIT_COOLDOWN:
		if (last_id && *last_id)
			add_event(b, last_id, "admission", admission_detail(dname, trigger), now);
		add_answer(jobs, last_id, pb->name, key, dname);
		return 0;
	case ADMIT_BUDGET_EXHAUSTED:
	case ADMIT_QUEUED:
	case ADMIT_CANCELLED:
		break;
	}
	j = job_new(set, pb, key, trigger, p->reason, a->raw, dry_run || e->global_dry_run, now);
	if (!j)
		return -1;
	if (d == ADMIT_BUDGET_EXHAUSTED) {
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
};

static void submit_free(struct submit *sb)
{
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
				free(j->cancel_reason);
				j->cancel_reason = strdup("alert resolved");
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
		for (size_t i = 0; i < sb->final.n; i++) {
			struct job *j = sb->final.v[i];
			log_kv(LOG_WARN, j->id, "run budget exhausted: job not started", "playbook",
			       j->playbook_name, "key", j->key, NULL);
			metrics_add(M_JOBS, j->playbook_name, job_outcome_name(j->outcome), 1);
			pthread_mutex_lock(&e->mu);
			admit_ended(e->admit, j->key, j->id, sb->now);
			pthread_mutex_unlock(&e->mu);
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
		outbox_send(e->outbox, &sb->notes);
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

void engine_submit_async(struct engine *e, const struct payload *p, const char *playbook, int dry_run,
                         engine_submit_fn *done, void *arg)
{
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
			matched = 1;
			if (admit_one(e, set, pb, p, a, dry_run, sb->now, b, sb->jobs, &sb->fresh, &sb->cancels,
			              &sb->final, &sb->notes) < 0)
				failed = 1;
		}
		sb->unmatched += !matched;
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

enum engine_result engine_submit(struct engine *e, const struct payload *p, const char *playbook,
                                 int dry_run, struct engine_reply *r)
{
	struct submit_wait w = {.r = r};

	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cv, NULL);
	engine_submit_async(e, p, playbook, dry_run, submit_wake, &w);
	pthread_mutex_lock(&w.mu);
	while (!w.done)
		pthread_cond_wait(&w.cv, &w.mu);
	pthread_mutex_unlock(&w.mu);
	pthread_cond_destroy(&w.cv);
	pthread_mutex_destroy(&w.mu);
	return w.res;
}

/* The runner's job_done: j reached a final state and its last update is
 * committed: drop it from the tables, wake waiters, escalate, free it. */
static void job_released(void *owner, struct job *j)
{
	struct engine *e = owner;
	double dur = (j->ended_at && j->created_at) ? j->ended_at - j->created_at : 0;
	struct outbox_notes notes = {0};
	const char *outcome = job_outcome_name(j->outcome); /* NULL: it ended without one */
	char d[32];

	outbox_job_ended(e->outbox, &notes, j);
	pthread_mutex_lock(&e->mu);
	if (map_get(e->active_by_id, j->id) == j)
		map_del(e->active_by_id, j->id);
	if (map_get(e->active_by_key, j->key) == j)
		map_del(e->active_by_key, j->key);
	admit_ended(e->admit, j->key, j->id, j->ended_at ? j->ended_at : rd_now());
	pthread_cond_broadcast(&e->ended);
	pthread_mutex_unlock(&e->mu);

	metrics_add(M_JOBS, j->playbook_name, outcome ? outcome : job_state_name(j->state), 1);
	snprintf(d, sizeof(d), "%.3f", dur);
	log_kv(j->state == JS_SUCCEEDED ? LOG_INFO : LOG_WARN, j->id,
	       "job ended", "playbook", j->playbook_name, "key", j->key, "outcome",
	       outcome ? outcome : "", "error", j->error ? j->error : "", "seconds", d,
	       "dry_run", j->dry_run ? "true" : "false", NULL);
	job_free(j);
	outbox_send(e->outbox, &notes);
}

int engine_wait(struct engine *e, const char *id, double timeout)
{
	struct timespec ts;
	double until = rd_mono() + timeout;
	int present = 0;

	pthread_mutex_lock(&e->mu);
	while (map_get(e->active_by_id, id)) {
		present = 1;
		double left = until - rd_mono();
		if (left <= 0) {
			pthread_mutex_unlock(&e->mu);
			return 0;
		}
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (time_t)left;
		ts.tv_nsec += (long)((left - (double)(time_t)left) * 1e9);
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
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

enum rd_status engine_jobs_json(struct engine *e, const char *state, const char *playbook, int limit,
                                cJSON **out)
{
	return store_jobs_json(e->store, state, playbook, limit, out);
}

enum engine_result engine_cancel(struct engine *e, const char *id, struct engine_reply *r)
{
	struct job *j;
	cJSON *rec = NULL;

	r->body = NULL;
	r->message[0] = '\0';
	pthread_mutex_lock(&e->mu);
	j = map_get(e->active_by_id, id);
	if (j) {
		int first = !j->cancel_requested;
		const char *shown = j->state == JS_RUNNING ? "cancelling" : "cancelled";
		/* The answer first: a refusal must leave the job as it was. */
		r->body = cJSON_CreateObject();
		if (!r->body || !cJSON_AddStringToObject(r->body, "id", id) ||
		    !cJSON_AddStringToObject(r->body, "state", shown)) {
			pthread_mutex_unlock(&e->mu);
			cJSON_Delete(r->body);
			r->body = NULL;
			return refuse(r, ENGINE_NOMEM, "out of memory");
		}
		j->cancel_requested = 1;
		if (first) {
			free(j->cancel_reason);
			j->cancel_reason = strdup("cancelled by operator");
		}
		pthread_mutex_unlock(&e->mu);
		struct store_batch *b = store_batch_new();
		if (b) {
			add_event(b, id, "admission", admission_detail("cancelled", "operator"), rd_now());
			store_commit(e->store, b, 1);
		}
		runner_cancel(e->runner, id);
		log_kv(LOG_INFO, id, "cancel requested by operator", NULL);
		return ENGINE_CANCEL_REQUESTED;
	}
	pthread_mutex_unlock(&e->mu);
	if (store_job_json(e->store, id, &rec) == RD_OK && rec) {
		cJSON *st = cJSON_GetObjectItem(rec, "state");
		refuse(r, ENGINE_CONFLICT, "job already ended (%s)",
		       cJSON_IsString(st) ? st->valuestring : "ended");
		cJSON_Delete(rec);
		return ENGINE_CONFLICT;
	}
	return refuse(r, ENGINE_NOT_FOUND, "no such job");
}

cJSON *engine_playbooks_json(struct engine *e)
{
	cJSON *a = cJSON_CreateArray();
	pthread_mutex_lock(&e->mu);
	for (size_t i = 0; e->set && i < e->set->n; i++)
		cJSON_AddItemToArray(a, playbook_json(e->set->v[i]));
	pthread_mutex_unlock(&e->mu);
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
};

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
	if (job_state_final(st)) {
		admit_ended(e->admit, r->key, r->id, r->ended_at ? r->ended_at : r->created_at);
		if (st != JS_BUDGET_EXHAUSTED)
			admit_started(e->admit, r->playbook, r->created_at);
		return;
	}
	admit_started(e->admit, r->playbook, r->created_at);
	pb = playbook_set_find(e->set, r->playbook);
	j = calloc(1, sizeof(*j));
	if (!j)
		return;
	snprintf(j->id, sizeof(j->id), "%s", r->id);
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
		job_free(j);
		return;
	}
	j->set = e->set;
	j->set_unref = playbook_set_unref;
	j->pb = pb;
	playbook_set_ref(e->set);
	if (st == JS_RUNNING) {
		/* The process died mid-attempt: DESIGN.md §5. A job that held the
		 * event loop until the watchdog ended the process twice would
		 * do it again: it is a poison job, never run again. */
		int poison = r->stalls >= POISON_STALLS;
		const char *why = poison ? POISON_ERROR
		                  : r->stalls ? "interrupted: the watchdog restarted recoveryd during the attempt"
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
		} else if (pb->idempotent) {
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
			admit_ended(e->admit, j->key, j->id, rp->now);
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
	pthread_mutex_lock(&e->mu);
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
	return runner_start(e->runner);
}

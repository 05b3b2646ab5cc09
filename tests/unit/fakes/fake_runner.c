/* The recording runner of fake_runner.h. */
#include "fake_runner.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recoveryd/common.h"
#include "recoveryd/job.h"
#include "recoveryd/runner.h"
#include "recoveryd/store.h"

struct runner {
	struct engine *e;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static cJSON *calls;
static void (*hook_fn)(const cJSON *call, void *arg);
static void *hook_arg;

/* Transfers started and timers set, not yet completed / fired: kept so
 * that a test can finish them (the outbox owns easy and arg). */
struct pend_xfer {
	CURL *easy;
	loop_xfer_fn *done;
	void *arg;
	struct pend_xfer *next;
};
struct pend_timer {
	long long id;
	double when;
	loop_timer_fn *fn;
	void *arg;
	struct pend_timer *next;
};
static struct pend_xfer *xfers;     /* oldest first */
static struct pend_timer *timers;   /* in the order set */
static long long timer_seq;

static void pending_forget(void)
{
	while (xfers) {
		struct pend_xfer *x = xfers;
		xfers = x->next;
		free(x);
	}
	while (timers) {
		struct pend_timer *t = timers;
		timers = t->next;
		free(t);
	}
}

static void put_str(cJSON *o, const char *k, const char *v)
{
	if (v)
		cJSON_AddStringToObject(o, k, v);
	else
		cJSON_AddNullToObject(o, k);
}

static cJSON *entry(const char *call)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "call", call);
	return o;
}

static void record(cJSON *o)
{
	void (*fn)(const cJSON *, void *);
	void *arg;

	pthread_mutex_lock(&mu);
	if (!calls)
		calls = cJSON_CreateArray();
	cJSON_AddItemToArray(calls, o);
	fn = hook_fn;
	arg = hook_arg;
	pthread_mutex_unlock(&mu);
	if (fn)
		fn(o, arg);
}

void fake_runner_reset(void)
{
	pthread_mutex_lock(&mu);
	cJSON_Delete(calls);
	calls = NULL;
	hook_fn = NULL;
	hook_arg = NULL;
	pending_forget();
	pthread_mutex_unlock(&mu);
}

const cJSON *fake_runner_log(void)
{
	pthread_mutex_lock(&mu);
	if (!calls)
		calls = cJSON_CreateArray();
	pthread_mutex_unlock(&mu);
	return calls;
}

cJSON *fake_runner_calls(const char *call)
{
	cJSON *out = cJSON_CreateArray();
	const cJSON *it;

	pthread_mutex_lock(&mu);
	cJSON_ArrayForEach(it, calls)
	{
		const cJSON *c = cJSON_GetObjectItemCaseSensitive(it, "call");
		if (cJSON_IsString(c) && strcmp(c->valuestring, call) == 0)
			cJSON_AddItemToArray(out, cJSON_Duplicate(it, 1));
	}
	pthread_mutex_unlock(&mu);
	return out;
}

void fake_runner_set_hook(void (*hook)(const cJSON *call, void *arg), void *arg)
{
	pthread_mutex_lock(&mu);
	hook_fn = hook;
	hook_arg = arg;
	pthread_mutex_unlock(&mu);
}

/* ---- runner.h: the engine's half ---- */

/* The runner of the last runner_new, and the jobs scheduled on it (for
 * fake_runner_end). */
#define SCHED_MAX 64
static struct runner_opts last_opts;
static struct job *sched[SCHED_MAX];
static size_t n_sched;

struct runner *runner_new(const struct runner_opts *o)
{
	struct runner *r = calloc(1, sizeof(*r));
	cJSON *c = entry("new");

	pthread_mutex_lock(&mu);
	last_opts = *o;
	n_sched = 0;
	pthread_mutex_unlock(&mu);

	cJSON_AddNumberToObject(c, "max_in_flight", (double)o->max_in_flight);
	record(c);
	return r;
}

enum rd_status runner_start(struct runner *r)
{
	(void)r;
	record(entry("start"));
	return RD_OK;
}

void runner_schedule(struct runner *r, struct job *const *jobs, size_t n)
{
	(void)r;
	for (size_t i = 0; i < n; i++) {
		const struct job *j = jobs[i];
		cJSON *c = entry("schedule");
		put_str(c, "id", j->id);
		put_str(c, "key", j->key);
		put_str(c, "playbook", j->playbook_name);
		put_str(c, "state", job_state_name(j->state));
		cJSON_AddNumberToObject(c, "dry_run", j->dry_run);
		cJSON_AddNumberToObject(c, "attempts", j->attempts);
		cJSON_AddNumberToObject(c, "next_run_at", j->next_run_at);
		record(c);
		pthread_mutex_lock(&mu);
		if (n_sched < SCHED_MAX)
			sched[n_sched++] = jobs[i];
		pthread_mutex_unlock(&mu);
	}
}

int fake_runner_end(const char *id, int failed)
{
	struct job *j = NULL;

	pthread_mutex_lock(&mu);
	for (size_t i = 0; i < n_sched && !j; i++)
		if (strcmp(sched[i]->id, id) == 0) {
			j = sched[i];
			sched[i] = sched[--n_sched];
		}
	pthread_mutex_unlock(&mu);
	if (!j)
		return -1;
	pthread_mutex_lock(last_opts.mu);
	job_set_state(last_opts.counts, j, JS_RUNNING);
	j->attempts++;
	job_set_state(last_opts.counts, j, failed ? JS_FAILED : JS_SUCCEEDED);
	j->outcome = failed ? OUT_FAILED : OUT_SUCCEEDED;
	j->ended_at = rd_now();
	pthread_mutex_unlock(last_opts.mu);
	last_opts.job_done(last_opts.owner, j);
	return 0;
}

void runner_poke(struct runner *r)
{
	(void)r; /* a shared journal's poll: the engine's unit tests run one replica */
}

void runner_cancel(struct runner *r, const char *job_id)
{
	cJSON *c = entry("cancel");

	(void)r;
	put_str(c, "id", job_id);
	record(c);
}

void runner_approve(struct runner *r, const char *job_id)
{
	cJSON *c = entry("approve");

	(void)r;
	put_str(c, "id", job_id);
	record(c);
}

void runner_drain(struct runner *r, double grace)
{
	cJSON *c = entry("drain");

	(void)r;
	cJSON_AddNumberToObject(c, "grace", grace);
	record(c);
}

void runner_free(struct runner *r)
{
	if (!r)
		return;
	record(entry("free"));
	free(r);
}

/* ---- runner.h: the loop services (the outbox's half) ---- */

int runner_xfer(struct runner *r, CURL *easy, loop_xfer_fn *done, void *arg)
{
	cJSON *c = entry("deliver");
	char *url = NULL;
	struct pend_xfer *x = calloc(1, sizeof(*x)), **pp;

	(void)r;
	if (!x)
		return -1;
	curl_easy_getinfo(easy, CURLINFO_EFFECTIVE_URL, &url);
	put_str(c, "url", url);
	*x = (struct pend_xfer){ .easy = easy, .done = done, .arg = arg };
	pthread_mutex_lock(&mu);
	for (pp = &xfers; *pp; pp = &(*pp)->next)
		;
	*pp = x;
	pthread_mutex_unlock(&mu);
	record(c);
	return 0; /* completes only when a test says so (fake_runner_complete) */
}

int runner_timer(struct runner *r, double when, loop_timer_fn *fn, void *arg)
{
	cJSON *c = entry("timer");
	struct pend_timer *t = calloc(1, sizeof(*t)), **pp;

	(void)r;
	if (!t)
		return -1;
	cJSON_AddNumberToObject(c, "in", when - rd_mono());
	pthread_mutex_lock(&mu);
	*t = (struct pend_timer){ .id = ++timer_seq, .when = when, .fn = fn, .arg = arg };
	for (pp = &timers; *pp; pp = &(*pp)->next)
		;
	*pp = t;
	pthread_mutex_unlock(&mu);
	record(c);
	return 0; /* fires only when a test says so (fake_runner_fire) */
}

int fake_runner_xfers(void)
{
	int n = 0;
	pthread_mutex_lock(&mu);
	for (struct pend_xfer *x = xfers; x; x = x->next)
		n++;
	pthread_mutex_unlock(&mu);
	return n;
}

int fake_runner_timers(void)
{
	int n = 0;
	pthread_mutex_lock(&mu);
	for (struct pend_timer *t = timers; t; t = t->next)
		n++;
	pthread_mutex_unlock(&mu);
	return n;
}

int fake_runner_complete(const char *url_part)
{
	struct pend_xfer *x = NULL, **pp;
	CURLcode cc;

	pthread_mutex_lock(&mu);
	for (pp = &xfers; *pp; pp = &(*pp)->next) {
		char *url = NULL;
		curl_easy_getinfo((*pp)->easy, CURLINFO_EFFECTIVE_URL, &url);
		if (!url_part || (url && strstr(url, url_part))) {
			x = *pp;
			*pp = x->next;
			break;
		}
	}
	pthread_mutex_unlock(&mu);
	if (!x)
		return -1;
	cc = curl_easy_perform(x->easy); /* the real request, the real answer */
	x->done(NULL, x->easy, cc, x->arg);
	free(x);
	return 0;
}

int fake_runner_fire(void)
{
	struct pend_timer *t;

	pthread_mutex_lock(&mu);
	t = timers;
	if (t)
		timers = t->next;
	pthread_mutex_unlock(&mu);
	if (!t)
		return -1;
	t->fn(NULL, t->id, t->arg); /* may set new timers */
	free(t);
	return 0;
}

void runner_call(struct runner *r, void (*fn)(void *arg), void (*drop)(void *arg), void *arg)
{
	(void)r;
	(void)drop;
	fn(arg); /* as if the loop took it at once */
}

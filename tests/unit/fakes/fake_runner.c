/* The recording runner of fake_runner.h. */
#include "fake_runner.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

struct runner *runner_new(struct engine *e, const struct runner_opts *o)
{
	struct runner *r = calloc(1, sizeof(*r));
	cJSON *c = entry("new");

	cJSON_AddNumberToObject(c, "max_in_flight", (double)o->max_in_flight);
	record(c);
	if (r)
		r->e = e;
	return r;
}

enum rd_status runner_start(struct runner *r)
{
	(void)r;
	record(entry("start"));
	return RD_OK;
}

void runner_schedule(struct runner *r, struct job *j)
{
	cJSON *c = entry("schedule");

	(void)r;
	put_str(c, "id", j->id);
	put_str(c, "key", j->key);
	put_str(c, "playbook", j->playbook_name);
	put_str(c, "state", job_state_name(j->state));
	cJSON_AddNumberToObject(c, "dry_run", j->dry_run);
	cJSON_AddNumberToObject(c, "attempts", j->attempts);
	cJSON_AddNumberToObject(c, "next_run_at", j->next_run_at);
	record(c);
}

void runner_cancel(struct runner *r, const char *job_id)
{
	cJSON *c = entry("cancel");

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

void runner_deliver(struct runner *r, const struct escalation_row *e)
{
	cJSON *c = entry("deliver");

	(void)r;
	put_str(c, "id", e->id);
	put_str(c, "job_id", e->job_id);
	put_str(c, "incident_key", e->incident_key);
	put_str(c, "sink", e->sink);
	put_str(c, "kind", e->kind);
	put_str(c, "reason", e->reason);
	put_str(c, "state", e->state);
	put_str(c, "payload", e->payload);
	record(c);
}

/* ---- runner.h: lua_api's half (never reached: no attempt runs) ---- */

int runner_begin_op(struct job *j, struct op *op, char *err, size_t errlen)
{
	(void)j;
	(void)op;
	snprintf(err, errlen, "fake runner: no event loop");
	return -1;
}

double runner_attempt_deadline(struct job *j)
{
	(void)j;
	return 0;
}

lua_State *runner_job_thread(struct job *j)
{
	(void)j;
	return NULL;
}

int rbuf_append(struct rbuf *b, const char *p, size_t n)
{
	if (b->max && b->len + n > b->max) {
		b->truncated = 1;
		return -1;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = (b->len + n + 1) * 2;
		char *np = realloc(b->p, cap);
		if (!np)
			return -1;
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

void rbuf_free(struct rbuf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

void runner_record(struct job *j, const char *type, cJSON *detail, int planned)
{
	(void)j;
	(void)type;
	(void)planned;
	cJSON_Delete(detail);
}

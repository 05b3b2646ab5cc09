/* Retention: deletes what --retain no longer keeps, a batch per journal
 * transaction. Each batch is a small transaction grouped with the
 * writer's others, and the thread pauses between batches, so an alert
 * storm's commits are never stuck behind a large delete. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "recoveryd/common.h"
#include "recoveryd/log.h"
#include "recoveryd/metrics.h"
#include "recoveryd/retain.h"

struct retain {
	struct retain_opts o;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int stop, kicked;
};

struct counts {
	int jobs, audit;
};

static void on_pruned(int jobs, int audit, void *arg)
{
	struct counts *c = arg;

	c->jobs = jobs;
	c->audit = audit;
}

/* Sleep up to secs or until stopped or kicked; 1 when stopped. */
static int nap(struct retain *r, double secs)
{
	struct timespec ts;
	int stop;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)secs;
	ts.tv_nsec += (long)((secs - (double)(time_t)secs) * 1e9);
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&r->mu);
	while (!r->stop && !r->kicked)
		if (pthread_cond_timedwait(&r->cond, &r->mu, &ts) == ETIMEDOUT)
			break;
	r->kicked = 0;
	stop = r->stop;
	pthread_mutex_unlock(&r->mu);
	return stop;
}

/* One round: batches until one comes back short. */
static void round_once(struct retain *r)
{
	double before = rd_now() - r->o.seconds;
	long jobs = 0, audit = 0;

	for (int i = 0; i < 100000; i++) {
		struct store_batch *b = store_batch_new();
		struct counts c = {0, 0};
		enum rd_status st;

		if (!b || store_batch_prune(b, before, r->o.batch, on_pruned, &c) < 0) {
			store_batch_free(b);
			log_kv(LOG_WARN, NULL, "retention: out of memory", NULL);
			return;
		}
		st = store_commit(r->o.store, b, 1);
		if (st != RD_OK) {
			log_kv(LOG_WARN, NULL, "retention: the journal refused the delete; retried next round",
			       NULL);
			break;
		}
		jobs += c.jobs;
		audit += c.audit;
		metrics_add(M_RETAINED, "jobs", NULL, c.jobs);
		metrics_add(M_RETAINED, "audit", NULL, c.audit);
		if (c.jobs < r->o.batch && c.audit < r->o.batch)
			break;
		pthread_mutex_lock(&r->mu);
		int stop = r->stop;
		pthread_mutex_unlock(&r->mu);
		if (stop)
			break;
		struct timespec ts = {0, (long)(r->o.pause * 1e9)};
		nanosleep(&ts, NULL);
	}
	if (jobs || audit) {
		char j[24], a[24], d[32];
		snprintf(j, sizeof(j), "%ld", jobs);
		snprintf(a, sizeof(a), "%ld", audit);
		snprintf(d, sizeof(d), "%g", r->o.seconds / 86400.0);
		log_kv(LOG_INFO, NULL, "retention: deleted what ended before the retention", "jobs", j,
		       "audit_rows", a, "retain_days", d, NULL);
	}
}

static void *retain_main(void *arg)
{
	struct retain *r = arg;

	/* A short wait first: start-up (the journal replay) goes first. */
	if (nap(r, 1))
		return NULL;
	do
		round_once(r);
	while (!nap(r, r->o.interval));
	return NULL;
}

struct retain *retain_start(const struct retain_opts *opts)
{
	struct retain *r;

	if (!opts->store || opts->seconds <= 0 || !(r = calloc(1, sizeof(*r))))
		return NULL;
	r->o = *opts;
	if (r->o.interval <= 0)
		r->o.interval = 60;
	if (r->o.batch < 1)
		r->o.batch = 500;
	if (r->o.pause < 0 || r->o.pause >= 1)
		r->o.pause = 0.05;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cond, NULL);
	if (pthread_create(&r->thread, NULL, retain_main, r) != 0) {
		pthread_cond_destroy(&r->cond);
		pthread_mutex_destroy(&r->mu);
		free(r);
		return NULL;
	}
	return r;
}

void retain_kick(struct retain *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->kicked = 1;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->mu);
}

void retain_stop(struct retain *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stop = 1;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->thread, NULL);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

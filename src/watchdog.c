/* The event-loop watchdog (include/recoveryd/watchdog.h). The sandbox stops
 * what it can see; a hole in it (a finalizer with hooks off, a C function
 * that never returns) would freeze every recovery while /healthz said ok.
 * This turns such a freeze into an unhealthy probe, then an exit that
 * Kubernetes restarts, with the culprit in the log and the journal. */
#include "recoveryd/watchdog.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "recoveryd/log.h"
#include "recoveryd/metrics.h"

#define TICK_MS 200

struct watchdog {
	struct watchdog_opts o;
	_Atomic double last_beat; /* rd_mono() of the last turn */
	atomic_int armed;
	pthread_mutex_t mu;       /* job and playbook */
	char job[64];
	char playbook[128];
	pthread_t thr;
	int started;
	atomic_int stop;
};

struct watchdog *watchdog_new(const struct watchdog_opts *o)
{
	struct watchdog *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->o = *o;
	if (w->o.unhealthy_after <= 0)
		w->o.unhealthy_after = WATCHDOG_UNHEALTHY_DEFAULT;
	if (w->o.exit_after <= 0)
		w->o.exit_after = WATCHDOG_EXIT_DEFAULT;
	if (w->o.exit_after < w->o.unhealthy_after)
		w->o.exit_after = w->o.unhealthy_after;
	atomic_init(&w->last_beat, rd_mono());
	atomic_init(&w->armed, 0);
	atomic_init(&w->stop, 0);
	pthread_mutex_init(&w->mu, NULL);
	return w;
}

void watchdog_beat(struct watchdog *w)
{
	if (w)
		atomic_store(&w->last_beat, rd_mono());
}

void watchdog_enter(struct watchdog *w, const char *job_id, const char *playbook)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	snprintf(w->job, sizeof(w->job), "%s", job_id ? job_id : "");
	snprintf(w->playbook, sizeof(w->playbook), "%s", playbook ? playbook : "");
	pthread_mutex_unlock(&w->mu);
}

void watchdog_leave(struct watchdog *w)
{
	watchdog_enter(w, NULL, NULL);
}

double watchdog_stalled(struct watchdog *w)
{
	double d;

	if (!w || !atomic_load(&w->armed))
		return 0;
	d = rd_mono() - atomic_load(&w->last_beat);
	return d >= w->o.unhealthy_after ? d : 0;
}

double watchdog_unhealthy_after(const struct watchdog *w)
{
	return w ? w->o.unhealthy_after : 0;
}

static void expire(struct watchdog *w, double stalled)
{
	char job[sizeof(w->job)], pb[sizeof(w->playbook)], secs[32];

	/* The loop thread is stuck (or holds the lock forever): do not wait
	 * for it. trylock, and blame nobody when it cannot be had. */
	job[0] = pb[0] = '\0';
	if (pthread_mutex_trylock(&w->mu) == 0) {
		memcpy(job, w->job, sizeof(job));
		memcpy(pb, w->playbook, sizeof(pb));
		pthread_mutex_unlock(&w->mu);
	}
	snprintf(secs, sizeof(secs), "%.1f", stalled);
	log_kv(LOG_ERROR, job[0] ? job : NULL, "watchdog: the event loop is stuck; exiting so that it restarts",
	       "playbook", pb, "stalled_seconds", secs, NULL);
	if (w->o.on_expire)
		w->o.on_expire(w->o.ud, job, pb, stalled);
	_exit(WATCHDOG_EXIT_STATUS);
}

static void *watch(void *arg)
{
	struct watchdog *w = arg;
	struct timespec ts = {0, TICK_MS * 1000000L};
	int warned = 0;

	while (!atomic_load(&w->stop)) {
		nanosleep(&ts, NULL);
		if (!atomic_load(&w->armed))
			continue;
		double d = rd_mono() - atomic_load(&w->last_beat);
		metrics_set(M_LOOP_STALL, NULL, NULL, d < 0 ? 0 : d);
		if (d >= w->o.exit_after)
			expire(w, d);
		if (d >= w->o.unhealthy_after && !warned) {
			char secs[32];
			snprintf(secs, sizeof(secs), "%.1f", d);
			log_kv(LOG_WARN, NULL, "watchdog: the event loop has not turned; /healthz fails",
			       "stalled_seconds", secs, NULL);
			warned = 1;
		} else if (d < w->o.unhealthy_after) {
			warned = 0;
		}
	}
	return NULL;
}

enum rd_status watchdog_start(struct watchdog *w)
{
	if (!w)
		return RD_ERR;
	atomic_store(&w->last_beat, rd_mono());
	atomic_store(&w->armed, 1);
	if (w->started)
		return RD_OK;
	if (pthread_create(&w->thr, NULL, watch, w) != 0)
		return RD_ERR;
	w->started = 1;
	return RD_OK;
}

void watchdog_stop(struct watchdog *w)
{
	if (w)
		atomic_store(&w->armed, 0);
}

void watchdog_free(struct watchdog *w)
{
	if (!w)
		return;
	atomic_store(&w->armed, 0);
	atomic_store(&w->stop, 1);
	if (w->started)
		pthread_join(w->thr, NULL);
	pthread_mutex_destroy(&w->mu);
	free(w);
}

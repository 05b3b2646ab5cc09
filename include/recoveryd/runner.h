/* The runner: recovery attempts on one thread that runs the generic event
 * loop (loop.h); each attempt is a coroutine in its own sandboxed lua_State
 * that yields on sleep, HTTP and exec. It never waits on the journal: a
 * turn's writes are one batch, and jobs continue on its completion. */
#ifndef RECOVERYD_RUNNER_H
#define RECOVERYD_RUNNER_H

#include <pthread.h>
#include <stddef.h>

#include "recoveryd/common.h"
#include "recoveryd/loop.h"
#include "recoveryd/op.h"

struct job;
struct runner;
struct watchdog;

struct job_counts;
struct store;

/* What the runner needs from its owner, given at creation: the runner
 * reports up through these and never sees the owner's insides. */
struct runner_opts {
	size_t max_in_flight;   /* attempts running at once */
	size_t mem_max;         /* Lua bytes per attempt */
	const char *lua_path;
	struct watchdog *wd;    /* borrowed; beaten once per loop turn */
	struct store *store;    /* borrowed; every write goes through it, batched */
	pthread_mutex_t *mu;    /* guards the job fields job.h marks [engine lock] */
	struct job_counts *counts; /* [mu] unfinished jobs per state */
	/* A job reached a final state and that state is committed: the owner
	 * drops and frees it. Runner thread, mu not held. */
	void (*job_done)(void *owner, struct job *j);
	/* Optional, shared journal: would j, succeeding now, cause nothing to
	 * send (no resolve, no notice)? Then its final update also releases
	 * its lease, one write fewer. Runner thread, mu held. */
	int (*ends_quietly)(void *owner, const struct job *j);
	/* A job's plan is made and its wait for approval committed. Runner
	 * thread, mu not held. */
	void (*job_held)(void *owner, struct job *j);
	/* Optional: a job's first attempt started, durably (not a retry, nor
	 * an attempt made again after a restart). Runner thread, mu not held. */
	void (*job_started)(void *owner, struct job *j);
	/* The unfinished job with this id, or NULL. Called with mu held. */
	struct job *(*job_find)(void *owner, const char *id);
	void *owner;

	/* Several replicas on one journal (store.h, leases); replica NULL: a
	 * single replica, nothing below is used. The runner renews the leases
	 * of replica every lease/3 seconds; a job whose lease ran out (or whose
	 * write was fenced) is dropped at once: its attempt is aborted with
	 * nothing journaled, and job_lost hands it back (runner thread, mu not
	 * held: the owner takes it out of its books and frees it). Every poll
	 * seconds, and on runner_poke, poll(owner, free attempt slots) asks
	 * the owner to claim free work (loop thread). */
	const char *replica;
	double lease, poll;
	void (*job_lost)(void *owner, struct job *j);
	void (*poll_fn)(void *owner, size_t free_slots);
};

struct runner *runner_new(const struct runner_opts *o);
enum rd_status runner_start(struct runner *r);
/* Queue jobs (state queued, or retry_wait with next_run_at), waking the
 * loop once. Any thread. */
void runner_schedule(struct runner *r, struct job *const *jobs, size_t n);
/* Shared journal: poll for free work now (new work was announced). Any
 * thread. */
void runner_poke(struct runner *r);
/* Wake the runner to act on the cancel_requested of the job with this id
 * (nothing happens when it has ended meanwhile). Any thread. */
void runner_cancel(struct runner *r, const char *job_id);
/* Wake the runner to start the real run of an approved job (its approval
 * is set under mu). Any thread. */
void runner_approve(struct runner *r, const char *job_id);
/* Stop starting attempts; let running ones finish until grace seconds pass,
 * then interrupt them; return when the loop has exited. */
void runner_drain(struct runner *r, double grace);
void runner_free(struct runner *r);
/* Services of the event loop for its other clients (the outbox). Loop
 * thread only, except runner_call. */
/* Start a transfer on the runner's loop; done(loop, easy, result, arg) is
 * called once it completes. The caller owns easy (and frees it after done, or after
 * runner_free when done never came). 0, or -1. */
int runner_xfer(struct runner *r, CURL *easy, loop_xfer_fn *done, void *arg);
/* Call fn(loop, id, arg) once, at rd_mono() time when or soon after. 0, or -1. */
int runner_timer(struct runner *r, double when, loop_timer_fn *fn, void *arg);
/* Any thread: run fn(arg) on the loop; if the loop stops first (or there is
 * no memory to ask), drop(arg) is called instead. */
void runner_call(struct runner *r, void (*fn)(void *arg), void (*drop)(void *arg), void *arg);

#endif

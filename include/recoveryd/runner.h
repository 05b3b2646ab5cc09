/* The runner: one event loop thread built on curl_multi_poll, with timers
 * and child-process descriptors; each attempt is a coroutine in its own
 * sandboxed lua_State that yields on sleep, HTTP and exec. */
#ifndef RECOVERYD_RUNNER_H
#define RECOVERYD_RUNNER_H

#include <stddef.h>

#include "recoveryd/common.h"
#include "recoveryd/op.h"

struct engine;
struct job;
struct runner;
struct watchdog;

struct runner_opts {
	size_t max_in_flight;   /* attempts running at once */
	size_t mem_max;         /* Lua bytes per attempt */
	const char *lua_path;
	struct watchdog *wd;    /* borrowed; beaten once per loop turn */
};

struct runner *runner_new(struct engine *e, const struct runner_opts *o);
enum rd_status runner_start(struct runner *r);
/* Queue a job (state queued, or retry_wait with next_run_at). Any thread. */
void runner_schedule(struct runner *r, struct job *j);
/* Wake the runner to act on the cancel_requested of the job with this id
 * (nothing happens when it has ended meanwhile). Any thread. */
void runner_cancel(struct runner *r, const char *job_id);
/* Stop starting attempts; let running ones finish until grace seconds pass,
 * then interrupt them; return when the loop has exited. */
void runner_drain(struct runner *r, double grace);
void runner_free(struct runner *r);
struct escalation_row;
/* Send a journaled notification (copied) from the event loop, with retries.
 * Any thread. */
void runner_deliver(struct runner *r, const struct escalation_row *e);

#endif

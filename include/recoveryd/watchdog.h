/* Event-loop watchdog: the last line of defence behind the sandbox. The loop
 * beats once per turn; a thread watches the beats. When the loop has not
 * turned for unhealthy_after seconds, watchdog_stalled() says so (/healthz
 * fails); past exit_after seconds the watchdog logs which job and playbook
 * held the loop, calls on_expire (which journals it) and ends the process
 * with WATCHDOG_EXIT_STATUS, so that a supervisor restarts it. */
#ifndef RECOVERYD_WATCHDOG_H
#define RECOVERYD_WATCHDOG_H

#include "recoveryd/common.h"

#define WATCHDOG_EXIT_STATUS 70 /* EX_SOFTWARE */
#define WATCHDOG_UNHEALTHY_DEFAULT 5.0
#define WATCHDOG_EXIT_DEFAULT 30.0

struct watchdog;

struct watchdog_opts {
	double unhealthy_after;  /* seconds; 0 = default */
	double exit_after;       /* seconds; 0 = default */
	/* Called on the watchdog thread just before the process exits; job_id
	 * and playbook are "" when no job held the loop. Must not wait for the
	 * loop. */
	void (*on_expire)(void *ud, const char *job_id, const char *playbook, double stalled);
	void *ud;
};

struct watchdog *watchdog_new(const struct watchdog_opts *o);
/* Start watching (after the loop's first beat). */
enum rd_status watchdog_start(struct watchdog *w);
/* Stop watching (the loop is about to end on purpose); idempotent. */
void watchdog_stop(struct watchdog *w);
void watchdog_free(struct watchdog *w);
/* Loop thread: one turn done. */
void watchdog_beat(struct watchdog *w);
/* Loop thread: about to run code of this job (Lua, finalizers); leave when
 * it returns. The strings are copied. */
void watchdog_enter(struct watchdog *w, const char *job_id, const char *playbook);
void watchdog_leave(struct watchdog *w);
/* Seconds the loop has been stuck when that is past unhealthy_after, else 0.
 * Any thread. */
double watchdog_stalled(struct watchdog *w);
/* The unhealthy threshold in effect (seconds); 0 for NULL. */
double watchdog_unhealthy_after(const struct watchdog *w);

#endif

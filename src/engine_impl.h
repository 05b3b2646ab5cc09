/* Engine internals shared by engine.c and runner.c only. */
#ifndef RECOVERYD_ENGINE_IMPL_H
#define RECOVERYD_ENGINE_IMPL_H

#include <pthread.h>

#include "recoveryd/engine.h"
#include "recoveryd/job.h"
#include "recoveryd/store.h"

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
	struct map *cooldown;       /* [mu] key -> double* time the last job ended */
	struct map *budget;         /* [mu] playbook -> struct budget* */
	struct admit *admit;        /* [mu] cooldown and budget bookkeeping */
	size_t n_active;            /* [mu] */
	struct job_counts counts;   /* [mu] unfinished jobs per state */
	struct map *incidents;      /* [mu] job key -> struct incident*: escalated, not resolved */
	char *broken_file;          /* [mu] playbook file the last reload could not load */
	char *broken_error;         /* [mu] */
	int broken_escalated;       /* [mu] */
	int foreground;             /* `run` command: print as it goes */
	int no_escalation;
};

/* Called by the runner when j reached a final state and its last update
 * is committed: drop it from the tables, wake waiters, free it. */
void engine_job_done(struct engine *e, struct job *j);

#endif

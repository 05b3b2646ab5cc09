#ifndef RECOVERYD_RETAIN_H
#define RECOVERYD_RETAIN_H

#include "recoveryd/store.h"

/* Retention (--retain): a thread that deletes ended jobs and audit rows
 * older than the retention from the journal, in small transactions so
 * ingest never waits long behind it. */
struct retain;

struct retain_opts {
	struct store *store;
	double seconds;   /* keep this long; > 0 */
	double interval;  /* seconds between rounds when nothing is left (default 60) */
	int batch;        /* rows per transaction (default 500) */
	double pause;     /* seconds between transactions of one round (default 0.05) */
};

/* NULL when opts->seconds <= 0 (keep everything) or on failure. */
struct retain *retain_start(const struct retain_opts *opts);
/* Run a round now (tests, SIGHUP); returns at once. */
void retain_kick(struct retain *r);
void retain_stop(struct retain *r);

#endif

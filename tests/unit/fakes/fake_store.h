/* An in-memory stand-in for include/recoveryd/store.h, for unit tests of
 * the code above the journal (tests/unit/test_engine.c). It implements the
 * public store_* functions, and records what was committed:
 *
 *  - every batch operation is kept as a JSON object, {"op": "insert_job" |
 *    "update_job" | "attempt" | "event" | "escalation" |
 *    "escalation_update", ...the row's fields}, event details parsed;
 *  - store_commit appends the batch to the log of committed batches and
 *    applies it to the tables (jobs, attempts, events, escalations) that
 *    the scans and store_job_json read, or, when told to fail, drops it
 *    and answers RD_ERR;
 *  - rows can be seeded (the journal a previous process left behind).
 *
 * Ownership: as store.h; everything returned here is owned by the store
 * and valid until the next call into it. */
#ifndef RECOVERYD_TESTS_FAKE_STORE_H
#define RECOVERYD_TESTS_FAKE_STORE_H

#include <cjson/cJSON.h>

#include "recoveryd/store.h"

struct store *fake_store_new(void);
/* The next n commits fail (the batch is dropped, nothing applied). */
void fake_store_fail_commits(struct store *s, int n);
/* Commits answered RD_OK / RD_ERR so far. */
int fake_store_commits(struct store *s);
int fake_store_failed_commits(struct store *s);
/* Committed batch i (0-based, in commit order): a JSON array of ops. */
const cJSON *fake_store_batch(struct store *s, int i);
/* The committed ops of one kind ("insert_job", "event", ...), in order,
 * across batches, whose job_id (id for jobs) is job_id (NULL: any). A new
 * array the caller deletes; its items are copies. */
cJSON *fake_store_ops(struct store *s, const char *op, const char *job_id);
/* The current row of job id as committed (NULL: none): the insert_job op
 * with every later update_job applied. */
const cJSON *fake_store_job(struct store *s, const char *id);

/* The escalation row with this id, seeded or committed (NULL: none). */
const cJSON *fake_store_escalation(struct store *s, const char *id);
/* Every escalation row, seeded or committed, as it is now, in insertion
 * order: a new array the caller deletes. */
cJSON *fake_store_escalations(struct store *s);

/* on != 0: store_commit_cb holds its batches (nothing applied, done not
 * called) until fake_store_flush, like a writer that has not got to them
 * yet. fake_store_flush commits the held batches in order, calling each
 * done (failing them while fake_store_fail_commits says so); it returns
 * how many. store_close drops what is still held. */
void fake_store_defer(struct store *s, int on);
int fake_store_flush(struct store *s);

/* Seed the journal: a job row (with stalls "watchdog" events), an
 * escalation row. Not recorded as commits. */
void fake_store_seed_job(struct store *s, const struct job_row *j);
void fake_store_seed_escalation(struct store *s, const struct escalation_row *e);

#endif

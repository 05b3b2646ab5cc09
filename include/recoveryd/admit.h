/* Admission decisions for firing alerts (DESIGN.md §1, §4): coalesce into
 * an active job, rest a key in cooldown after its job ended, and hold a
 * playbook to its run budget. Pure bookkeeping: callers hold their lock. */
#ifndef RECOVERYD_ADMIT_H
#define RECOVERYD_ADMIT_H

#include <stddef.h>

enum admit_decision {
	ADMIT_QUEUED,
	ADMIT_COALESCED,
	ADMIT_COOLDOWN,
	ADMIT_BUDGET_EXHAUSTED,
	ADMIT_CANCELLED, /* a resolved alert closing its key's job */
};

struct admit_policy {
	double cooldown;   /* seconds */
	int budget_runs;   /* 0 = unlimited */
	double budget_per; /* seconds */
	int manual;        /* a human asked: cooldown and budget do not apply */
};

struct admit;

struct admit *admit_new(void);
void admit_free(struct admit *a);
/* Decide for a firing alert of playbook/key; active says whether the key
 * has an unfinished job. ADMIT_QUEUED also counts the start against the
 * budget. *last_id receives the id of the job that put the key in cooldown. */
enum admit_decision admit_firing(struct admit *a, const char *playbook, const char *key, int active,
                                 const struct admit_policy *p, double now, const char **last_id);
/* Undo the budget count of a start whose commit failed. */
void admit_unstart(struct admit *a, const char *playbook, double when);
/* Forget the starts of playbook (a shared journal: the journal's are
 * counted again with admit_started before each decision). */
void admit_reset_starts(struct admit *a, const char *playbook);
/* Count a start found in the journal at start-up. */
void admit_started(struct admit *a, const char *playbook, double when);
/* The job of key ended at when (start of its cooldown). */
void admit_ended(struct admit *a, const char *key, const char *job_id, double when);
/* Forget cooldowns and starts older than horizon seconds before now. */
void admit_prune(struct admit *a, double now, double horizon);
const char *admit_decision_name(enum admit_decision d);

#endif

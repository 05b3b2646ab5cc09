/* A recovery job as the engine and the runner share it. Fields marked
 * [engine lock] change only under engine->mu; [runner] fields belong to the
 * runner thread alone. */
#ifndef RECOVERYD_JOB_H
#define RECOVERYD_JOB_H

#include <stddef.h>
#include <cjson/cJSON.h>

#include "recoveryd/store.h"

struct playbook;
struct playbook_set;
struct attempt_rt;
struct op_host;
struct runner;

enum job_state {
	JS_QUEUED,
	JS_RUNNING,
	JS_RETRY_WAIT,
	JS_SUCCEEDED,
	JS_FAILED,
	JS_CANCELLED,
	JS_BUDGET_EXHAUSTED,
	JS_PAUSED,            /* final: the playbook was paused; no attempt ran */
	JS_AWAITING_APPROVAL, /* the plan is made; waits for a human */
	JS_COUNT
};

/* What one attempt came to: the journal's attempts.result and the result
 * label of recoveryd_job_attempts_total (docs/playbook-guide.md, "Attempts"). */
enum attempt_result {
	AR_SUCCEEDED,
	AR_FAILED,
	AR_TIMEOUT,
	AR_CANCELLED,
	AR_INTERRUPTED,
	AR_COUNT
};

/* Why an attempt failed, as far as recoveryd_playbook_errors_total{kind}
 * counts it; AE_NONE is not counted. The caller knows it from where the
 * attempt ended (the deadline, a Lua status of LUA_ERRMEM, the load), never
 * from the error text, which the playbook controls. */
enum attempt_error {
	AE_NONE,
	AE_TIMEOUT,   /* the attempt's deadline passed */
	AE_MEMORY,    /* the Lua memory budget: an error with status LUA_ERRMEM */
	AE_LOAD,      /* the playbook file failed to load in the attempt */
	AE_COUNT
};

/* How a job ended: the journal's jobs.outcome, the API's "outcome" and the
 * outcome label of recoveryd_jobs_total. OUT_NONE until it has ended. */
enum job_outcome {
	OUT_NONE,
	OUT_SUCCEEDED,
	OUT_DRY_RUN_SUCCEEDED,
	OUT_FAILED,
	OUT_DRY_RUN_FAILED,
	OUT_CANCELLED,
	OUT_INTERRUPTED,      /* a non-idempotent attempt cut by a crash or drain */
	OUT_POISONED,         /* interrupted by the watchdog twice */
	OUT_BUDGET_EXHAUSTED, /* never started: the run budget was spent */
	OUT_PAUSED,           /* never started: its playbook (or everything) was paused */
	OUT_REJECTED,         /* a human rejected the plan */
	OUT_APPROVAL_TIMEOUT, /* nobody approved the plan in time */
	OUT_COUNT
};

/* Where a job stands with approval (playbook approval.required). */
enum approval {
	AP_NONE,      /* not required */
	AP_PENDING,   /* attempts are plans (dry-run) until approved */
	AP_APPROVED,  /* attempts are real */
	AP_COUNT
};

/* Unfinished jobs per state, kept by job_enter and job_set_state; the
 * engine owns one and guards it with its lock. */
struct job_counts {
	size_t n[JS_COUNT];
};

struct job {
	char id[33];
	char *playbook_name;
	char *key;
	char *trigger;          /* webhook | manual | cli */
	char *reason;
	char *alert_json;
	cJSON *alert;
	int dry_run;
	double created_at, started_at, ended_at, next_run_at;
	int max_attempts;

	enum job_state state;   /* [engine lock] */
	int cancel_requested;   /* [engine lock] resolved alert or operator */
	int cancel_by_resolve;  /* [engine lock] the cancel is the alert's resolve */
	int rejected;           /* [engine lock] the cancel is a rejection of the plan */
	char *cancel_reason;    /* [engine lock] */
	int notifications;      /* [engine lock] */
	int attempts;           /* attempts started */
	char *triggered_by;     /* the principal that posted the alert or trigger */
	char *cancelled_by;     /* [engine lock] who cancelled: a principal, or "alertmanager" */
	enum approval approval; /* [engine lock] */
	char *approved_by;      /* [engine lock] who approved */
	int plan_attempts;      /* attempts that were plans (approval) */
	int planning;           /* [runner] the running attempt is a plan: writes are planned */
	enum job_outcome outcome; /* set when the job ends; OUT_NONE before */
	char *error;            /* last error */

	struct playbook_set *set; /* reference held for the job's life */
	/* Releases that reference in job_free; set with it by whoever took it. */
	void (*set_unref)(struct playbook_set *set);
	struct playbook *pb;

	struct runner *runner;  /* the runner it was handed to (runner_schedule) */
	const struct op_host *host; /* that runner's services to the recovery module */
	struct job *next;       /* [runner] ready queue */
	long long timer_id[8];  /* [runner] its loop timer of each kind; 0 = none */
	struct attempt_rt *rt;  /* [runner] the running attempt, or NULL */
	char **secrets;         /* [runner] values to redact */
	size_t n_secrets;

	/* The lease, when several replicas share the journal (store.h): its
	 * owner (the runner's replica id, borrowed; NULL: a single replica,
	 * writes unfenced), the token every write carries, and until when
	 * the last claim or renewal holds it (wall clock). */
	const char *owner;
	long long lease_token;
	double lease_until;       /* [engine lock] renewals set it from the journal's thread */
	struct store_batch *tb;   /* [runner] this turn's writes of the job (shared journal) */
	int tb_update;            /* [runner] tb updates the job row (fenced by its token) */
	int tconts[2];            /* [runner] their continuations (enum cont_kind), ... */
	int n_tconts;             /* [runner] ... in order */
	int commits;              /* [runner] its batches the writer has not reported */
	int lost;                 /* [runner] the lease is gone; dropped once commits is 0 */
	/* Shared journal: it held no job of this key when this one was
	 * admitted, so an incident of the key is one this replica opened (it
	 * knows) and a recovery need not look the journal up. */
	int key_new;
	int released_at_end;      /* [runner] its final update releases the lease (ends_quietly) */
	struct job *hprev, *hnext; /* [runner] every job the runner holds */
};

/* The only ways a job's state changes (caller holds the engine lock):
 * job_enter puts a job that was just committed (or replayed) into the books
 * in state st; job_set_state moves it along the transition table. A move
 * the table does not allow is refused (-1, logged; the state stays), which
 * catches a lost or doubled event rather than corrupting the counts. Both
 * keep recoveryd_queue_depth equal to the jobs in state queued. */
void job_enter(struct job_counts *c, struct job *j, enum job_state st);
int job_set_state(struct job_counts *c, struct job *j, enum job_state to);
/* j leaves the books unfinished: its lease went to another replica. */
void job_leave(struct job_counts *c, struct job *j);
const char *job_state_name(enum job_state s);
int job_state_parse(const char *s, enum job_state *out);
int job_state_final(enum job_state s);
/* Names as the journal, the API, the logs and the metric labels spell them
 * ("unknown" for a value out of range). attempt_error_name is the
 * playbook-errors kind label, NULL for AE_NONE (not counted);
 * job_outcome_name is NULL for OUT_NONE (the journal's NULL outcome). Only
 * states are parsed back: replay reads nothing else of a job row. */
const char *attempt_result_name(enum attempt_result r);
const char *attempt_error_name(enum attempt_error e);
const char *job_outcome_name(enum job_outcome o);
const char *approval_name(enum approval a);
int approval_parse(const char *s, enum approval *out);
int job_outcome_parse(const char *s, enum job_outcome *out);
/* Writes of this job's running attempt are only planned (dry-run or plan). */
int job_plans_only(const struct job *j);
/* A job_row view of j (pointers into j; valid while j lives). */
void job_row_of(const struct job *j, struct job_row *row);
void job_free(struct job *j);
/* Replace every occurrence of a secret in s (in place, NUL-terminated,
 * malloc'd) by "[REDACTED]"; returns the possibly reallocated string. */
char *job_redact(const struct job *j, char *s);
/* Redact all strings in a JSON tree. */
void job_redact_json(const struct job *j, cJSON *v);

#endif

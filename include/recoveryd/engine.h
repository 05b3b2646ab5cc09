/* The engine ties routing, admission, the journal and the runner together.
 * The HTTP layer talks only to this interface. All functions are
 * thread-safe (called from libmicrohttpd's connection threads). */
#ifndef RECOVERYD_ENGINE_H
#define RECOVERYD_ENGINE_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include "recoveryd/alert.h"
#include "recoveryd/auth.h"
#include "recoveryd/common.h"
#include "recoveryd/store.h"

struct engine;
struct store;
struct playbook_set;

struct engine_opts {
	struct store *store;          /* borrowed; outlives the engine */
	struct playbook_set *set;     /* the engine takes this reference */
	int dry_run;                  /* every job is a dry-run */
	size_t queue_max;             /* unfinished jobs before 503 */
	size_t max_in_flight;         /* attempts at once */
	size_t mem_max;               /* Lua bytes per attempt */
	const char *lua_path;
	int no_escalation;            /* `run`: nothing is escalated */
	double watchdog_unhealthy;    /* seconds; 0 = default (watchdog.h) */
	double watchdog_exit;         /* seconds; 0 = default */
	/* A journal shared by several replicas (store.h, leases): this
	 * replica's name, the lease in seconds and the poll for free work.
	 * NULL: the only replica (SQLite). */
	const char *replica;
	double lease, poll;
};

struct engine *engine_new(const struct engine_opts *o);
/* Liveness for /healthz: 0 with why set when the event loop is stuck. */
int engine_live(struct engine *e, char *why, size_t len);
/* Replay the journal (resume queued and retry_wait jobs, settle jobs found
 * running) and start the runner. */
enum rd_status engine_start(struct engine *e);
/* Swap in a new playbook set (takes the reference); running jobs keep
 * theirs. */
void engine_set_playbooks(struct engine *e, struct playbook_set *set);
/* SIGTERM: answer 503 from now on, let running attempts finish for up to
 * grace seconds, then interrupt them. Returns when the runner stopped. */
void engine_drain(struct engine *e, double grace);
void engine_free(struct engine *e);
/* The last reload failed on this playbook file (NULL: it succeeded): the
 * next alert routed to the old version escalates once. */
void engine_playbook_broken(struct engine *e, const char *file, const char *error);
/* Number of unfinished jobs (tests, `run`). */
size_t engine_active(struct engine *e);

/* What engine_submit and engine_cancel did. The engine knows nothing of
 * HTTP: http.c turns each result into a status code, an error code and
 * Retry-After in one place (engine_http_of), docs/http-api.md "Errors". */
enum engine_result {
	ENGINE_ACCEPTED,         /* submit: every decision is committed; body set */
	ENGINE_CANCEL_REQUESTED, /* cancel: the job stops; body set */
	ENGINE_DONE,             /* approve, reject, pause, resume: done; body set */
	ENGINE_INVALID,          /* an action without its required reason, a past until */
	ENGINE_FORBIDDEN,        /* the principal may not act on that playbook */
	ENGINE_UNKNOWN_PLAYBOOK, /* submit: no loaded playbook has that name */
	ENGINE_NOT_FOUND,        /* cancel: no such job */
	ENGINE_CONFLICT,         /* submit: a manual trigger meets an Alertmanager job;
	                          * cancel: the job already ended */
	ENGINE_DRAINING,         /* submit: SIGTERM started the drain */
	ENGINE_QUEUE_FULL,       /* submit: unfinished jobs + alerts > queue_max */
	ENGINE_UNAVAILABLE,      /* submit: the journal did not commit */
	ENGINE_NOMEM,            /* out of memory */
};
#define ENGINE_RESULT_COUNT (ENGINE_NOMEM + 1)

#define ENGINE_MESSAGE_MAX 512

/* The data of a result. Whatever the result, nothing of a refused request
 * was kept: a retry starts afresh. */
struct engine_reply {
	cJSON *body;                      /* ENGINE_ACCEPTED, ENGINE_CANCEL_REQUESTED:
	                                   * the answer (caller frees); else NULL */
	char message[ENGINE_MESSAGE_MAX]; /* any other result: why, for humans */
};

/* Who submits, and how. */
struct engine_submit_opts {
	const char *playbook;     /* NULL: route by each playbook's match (POST /webhook);
	                           * else every alert goes to it (POST /trigger/{p}) */
	int dry_run;              /* this request's jobs are dry-runs (the global flag also applies) */
	int force;                /* admin: skip cooldown and run budget (a reason is required) */
	const struct actor *who;  /* NULL: an unnamed caller ("system") */
};

/* Route and admit every alert of p and commit the decisions to the journal
 * before returning. Manual triggers count against cooldown and budget like
 * any job unless forced. A paused playbook's alerts get a job in state
 * paused (escalated); a trigger of a paused playbook is refused (409).
 * Returns ENGINE_ACCEPTED with body {"jobs":[{id,playbook,key,state}],"unmatched":N};
 *  ENGINE_UNKNOWN_PLAYBOOK;
 *  ENGINE_CONFLICT: a manual trigger (p->manual) for an alert whose
 *  Alertmanager job has not ended (it may neither join nor cancel it;
 *  manual jobs have keys "playbook/manual/<fp>"), or of a paused playbook;
 *  ENGINE_DRAINING, ENGINE_QUEUE_FULL, ENGINE_UNAVAILABLE, ENGINE_NOMEM. */
enum engine_result engine_submit(struct engine *e, const struct payload *p,
                                 const struct engine_submit_opts *o, struct engine_reply *r);
/* The same without waiting for the journal: done(result, reply, arg) is
 * called exactly once, on the calling thread for a refusal decided at once,
 * otherwise on the journal writer's thread once the decisions are
 * committed (or not). The reply's body is done's to free. p and o may be
 * freed as soon as this returns. */
typedef void engine_submit_fn(enum engine_result res, struct engine_reply *r, void *arg);
void engine_submit_async(struct engine *e, const struct payload *p, const struct engine_submit_opts *o,
                         engine_submit_fn *done, void *arg);

/* What a person asks of a job or a playbook. Each is journaled with who,
 * where from and why (the audit trail) before it takes effect. */
enum engine_action { EA_CANCEL, EA_APPROVE, EA_REJECT, EA_PAUSE, EA_RESUME };

struct engine_act {
	enum engine_action action;
	const char *target;       /* job id (cancel, approve, reject), playbook (pause,
	                           * resume) or NULL (pause or resume everything) */
	const char *reason;       /* required for cancel, reject and pause */
	double until;             /* pause: epoch seconds it ends by itself; 0 = never */
	const struct actor *who;
};

/* cancel: ENGINE_CANCEL_REQUESTED with body {"id","state"} (state
 * "cancelling" when an attempt runs, else "cancelled"); works while
 * draining. approve/reject: ENGINE_DONE {"id","state"} for a job awaiting
 * approval, ENGINE_CONFLICT otherwise. pause/resume: ENGINE_DONE with the
 * pause. ENGINE_NOT_FOUND, ENGINE_UNKNOWN_PLAYBOOK, ENGINE_INVALID,
 * ENGINE_FORBIDDEN, ENGINE_UNAVAILABLE, ENGINE_NOMEM. */
enum engine_result engine_act(struct engine *e, const struct engine_act *a, struct engine_reply *r);

/* Audit something that is not an engine action (a SIGHUP reload). */
void engine_audit(struct engine *e, const struct actor *who, const char *action, const char *reason);
/* GET /api/v1/audit. */
enum rd_status engine_audit_json(struct engine *e, const struct audit_query *q, cJSON **out);
#define ENGINE_AUDIT_ACTIONS "trigger, force, cancel, pause, resume, approve, reject, reload"
int engine_audit_action_known(const char *action);

/* Block until job id has ended or timeout seconds passed.
 * Returns 1 when it ended, 0 on timeout, -1 when no such job. */
int engine_wait(struct engine *e, const char *id, double timeout);

/* GET /api/v1/jobs/{id}: RD_OK with *out = NULL when there is no such job. */
enum rd_status engine_job_json(struct engine *e, const char *id, cJSON **out);
/* GET /api/v1/jobs: newest first, one page (store_jobs_page). */
enum rd_status engine_jobs_page(struct engine *e, const struct jobs_query *q, cJSON **out,
                                long long *next);
/* GET /api/v1/playbooks: array of {name, description, match, retries,
 * backoff, timeout, cooldown, budget, escalate, idempotent, approval,
 * file, paused: {by, reason, since, until, scope} | null}. */
cJSON *engine_playbooks_json(struct engine *e);
/* Readiness: 1 when config is loaded, the journal writable and not draining;
 * otherwise 0 with why filled. */
int engine_ready(struct engine *e, char *why, size_t len);
/* 1 once SIGTERM started the drain: new work is answered 503. */
int engine_draining(struct engine *e);

#endif

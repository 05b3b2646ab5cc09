/* The escalation outbox (DESIGN.md §5): it decides which notifications a
 * job's end or an alert's resolve causes, journals them, delivers them with
 * retries from the runner's event loop, and keeps the open incidents that a
 * later resolve closes. escalate.c builds the bodies and classifies the
 * answers; the runner only starts transfers and timers for it.
 *
 * Notes are collected while the caller decides (any thread, with or
 * without the caller's own lock: the outbox has its own, taken last), then
 * handed to outbox_send once the decisions are committed. */
#ifndef RECOVERYD_OUTBOX_H
#define RECOVERYD_OUTBOX_H

#include "recoveryd/common.h"

struct job;
struct playbook;
struct runner;
struct store;
struct outbox;

enum esc_kind { EK_TRIGGER, EK_RESOLVE, EK_NOTICE, EK_ANNOTATION };

enum esc_reason {
	ER_FAILED,
	ER_INTERRUPTED,
	ER_POISONED,
	ER_BUDGET_EXHAUSTED,
	ER_PLAYBOOK_LOAD_FAILED,
	ER_PLAYBOOK_REMOVED,
	ER_RECOVERED,
	ER_ALERT_RESOLVED,
	ER_PAUSED,            /* a matching alert met a pause: no run */
	ER_APPROVAL_NEEDED,   /* the plan waits for a human */
	ER_APPROVAL_TIMEOUT,  /* nobody approved in time */
	ER_APPROVED,          /* resolve: the approval page is answered */
	ER_REJECTED,          /* resolve: a human rejected the plan */
	ER_CANCELLED,         /* resolve: a waiting plan was cancelled */
	ER_STARTED,           /* notice, annotation: the job's first attempt started */
	ER_ENDED,             /* annotation: the job ended (the region closes) */
};

/* Sinks as bits of a set. */
enum esc_sink { SINK_SLACK = 1u << 0, SINK_PAGERDUTY = 1u << 1, SINK_GRAFANA = 1u << 2 };

const char *esc_kind_name(enum esc_kind k);
const char *esc_reason_name(enum esc_reason r);

struct outbox_note;
struct outbox_notes {
	struct outbox_note *head;
};

struct outbox_opts {
	struct store *store;       /* borrowed */
	struct runner *runner;     /* borrowed: deliveries run on its loop */
	int disabled;              /* --no-escalation: notes are dropped */
	/* A journal shared by several replicas: rows are claimed by replica
	 * (journaled claimed by the one that decides them; those of a replica
	 * whose lease ran out claimed by outbox_poll), and incidents are
	 * looked up in the journal, where another replica may have opened
	 * them. NULL: a single replica. */
	const char *replica;
	double lease;
};

struct outbox *outbox_new(const struct outbox_opts *o);
/* Wait until every batch outbox_send handed to the journal has been
 * reported (its rows handed to the runner, or dropped): call it before
 * the runner goes, since those reports call runner_call. NULL is fine. */
void outbox_quiesce(struct outbox *ob);
/* After the runner has stopped: undelivered notifications stay pending in
 * the journal. NULL is fine. */
void outbox_free(struct outbox *ob);

/* The sinks a playbook escalates to (its own list or the default); the
 * default sinks. */
unsigned outbox_playbook_sinks(const struct playbook *pb);
unsigned outbox_default_sinks(void);

/* Add a notification to ns. */
void outbox_note(struct outbox_notes *ns, const char *job_id, const char *key, enum esc_kind kind,
                 enum esc_reason reason, unsigned sinks, int dry_run);
/* Does the end of j, succeeding now, cause nothing to send: no notice,
 * and no incident of its key open (this replica's memory; the journal's
 * too unless j->key_new)? */
int outbox_success_is_quiet(struct outbox *ob, const struct job *j);
/* key's incident, if one is open, is closed: its resolve is added to ns. */
void outbox_close_incident(struct outbox *ob, struct outbox_notes *ns, const char *key,
                           enum esc_reason reason);
/* What the start of j's first attempt causes: the playbook's on_start
 * notices and the Grafana region's start. */
void outbox_job_started(struct outbox *ob, struct outbox_notes *ns, const struct job *j);
/* The end of the Grafana region of j, if j ran (outbox_job_ended adds it;
 * for the ends that escalate otherwise). */
void outbox_region_end(struct outbox_notes *ns, const struct job *j);
/* What the end of j causes: a trigger when recovery failed or was
 * interrupted, a resolve of the key's incident and the playbook's
 * notify_success notices when it succeeded; the Grafana region's end for
 * a job that ran. */
void outbox_job_ended(struct outbox *ob, struct outbox_notes *ns, const struct job *j);
/* The decisions behind ns were not committed: open again the incidents
 * whose resolves ns holds, then drop ns. */
void outbox_abandon(struct outbox *ob, struct outbox_notes *ns);
/* Journal ns (one row per sink, the body built from the committed job
 * record) and deliver the rows once they are committed. Never waits for the
 * journal: callable from the event loop. Consumes ns. */
void outbox_send(struct outbox *ob, struct outbox_notes *ns);
/* The same, releasing the n ended jobs ids in the same batch (a shared
 * journal: they kept their lease until now, see store_batch_release); a
 * batch is written even without notes. */
void outbox_send_release(struct outbox *ob, struct outbox_notes *ns, const char *const *ids, size_t n);
/* ... and done(arg) once that is committed (or failed), or at once when
 * there is nothing to journal: what a ?wait answer waits for. */
void outbox_send_release_then(struct outbox *ob, struct outbox_notes *ns, const char *const *ids, size_t n,
                              void (*done)(void *arg), void *arg);

/* Start-up: the open incidents and the undelivered notifications of the
 * journal (a shared journal: the incidents; outbox_poll claims the rest). */
enum rd_status outbox_load(struct outbox *ob);
/* Shared journal, loop thread: claim rows ready to send that nobody holds
 * (a retry due, a replica gone) and deliver them. */
void outbox_poll(struct outbox *ob);

#endif

/* Process-wide Prometheus registry for the families of DESIGN.md §7, plus
 * the standard process_* metrics. Thread-safe. Label values are copied. */
#ifndef RECOVERYD_METRICS_H
#define RECOVERYD_METRICS_H

#include <stddef.h>

enum metric_id {
	M_WEBHOOK_REQUESTS,   /* counter  recoveryd_webhook_requests_total{path,code} */
	M_ALERTS_RECEIVED,    /* counter  recoveryd_alerts_received_total{status} */
	M_JOBS,               /* counter  recoveryd_jobs_total{playbook,outcome} */
	M_JOB_ATTEMPTS,       /* counter  recoveryd_job_attempts_total{playbook,result} */
	M_JOB_DURATION,       /* histogram recoveryd_job_duration_seconds{playbook} */
	M_JOBS_IN_FLIGHT,     /* gauge    recoveryd_jobs_in_flight */
	M_QUEUE_DEPTH,        /* gauge    recoveryd_queue_depth */
	M_LOOP_STALL,         /* gauge    recoveryd_event_loop_stall_seconds */
	M_ADMISSIONS,         /* counter  recoveryd_admissions_total{playbook,decision} */
	M_ESCALATIONS,        /* counter  recoveryd_escalations_total{sink,result} */
	M_CONFIG_RELOADS,     /* counter  recoveryd_config_reloads_total{result} */
	M_BUILD_INFO,         /* gauge    recoveryd_build_info{version} = 1 */
	M_PLAYBOOK_ERRORS,    /* counter  recoveryd_playbook_errors_total{playbook,kind} */
	M_REJECTED,           /* counter  recoveryd_requests_rejected_total{reason} */
	M_JOURNAL_ERRORS,     /* counter  recoveryd_journal_errors_total */
	M_OUTBOX_DEPTH,       /* gauge    recoveryd_escalation_outbox_depth */
	M_ESCALATION_LATENCY, /* histogram recoveryd_escalation_delivery_seconds{sink} */
	M_CONN_DROPPED,       /* counter  recoveryd_http_connections_dropped_total{reason} */
	M_AUTH_FAILURES,      /* counter  recoveryd_auth_failures_total{reason} */
	M_PAUSED,             /* gauge    recoveryd_paused{playbook} */
	M_LEASES_HELD,        /* gauge    recoveryd_leases_held */
	M_TAKEOVERS,          /* counter  recoveryd_takeovers_total{kind} */
	M_LEASES_LOST,        /* counter  recoveryd_leases_lost_total */
	M_STORE_ERRORS,       /* counter  recoveryd_store_errors_total */
	M_RETAINED,           /* counter  recoveryd_retention_deleted_total{what} */
	M__COUNT
};

/* Called once before anything else; idempotent. */
void metrics_init(void);
/* Add v to a counter, or set a gauge to v, for the given label values (as
 * many as the family has labels; NULL for unused). Creates the series on
 * first use. */
void metrics_add(enum metric_id id, const char *l1, const char *l2, double v);
void metrics_set(enum metric_id id, const char *l1, const char *l2, double v);
/* Record one observation into a histogram family. */
void metrics_observe(enum metric_id id, const char *l1, double v);
/* Current value of a counter/gauge series (0 if absent); for tests. */
double metrics_get(enum metric_id id, const char *l1, const char *l2);
/* Render the whole registry in text format 0.0.4 into a malloc'd buffer. */
char *metrics_render(size_t *len);
/* Drop all series (tests). */
void metrics_reset(void);

#endif

/* Escalation to Slack and PagerDuty, and Grafana annotations: message
 * bodies built from a job record, the sinks' settings, and how each sink's
 * answers are classified.
 * Delivery itself (the outbox) runs in the runner's event loop. */
#ifndef RECOVERYD_ESCALATE_H
#define RECOVERYD_ESCALATE_H

#include <cjson/cJSON.h>
#include <curl/curl.h>

struct escalate_conf {
	const char *slack_url;        /* the incoming-webhook URL (a secret); NULL = off */
	const char *pd_routing_key;   /* 32 characters (a secret); NULL = off */
	const char *pd_url;           /* Events API v2 endpoint */
	const char *external_url;     /* base of job links; NULL = none */
	const char *const *default_sinks; /* NULL-terminated; NULL = every configured sink */
	double retry_initial, retry_max; /* seconds */
	const char *grafana_url;      /* Grafana's base URL; NULL = no annotations */
	const char *grafana_token;    /* service-account token (a secret) */
	const char *grafana_dashboard_uid; /* annotations on that dashboard; NULL = organization-wide */
};

enum esc_verdict { ESC_DELIVERED, ESC_RETRY, ESC_FAILED };

/* Copy the settings (thread-safe; SIGHUP calls it again). */
void escalate_configure(const struct escalate_conf *c);
int escalate_sink_configured(const char *sink);
/* The sinks used when a playbook does not name its own: a malloc'd
 * NULL-terminated array of static strings. */
const char **escalate_default_sinks(void);
/* <external-url>/api/v1/jobs/<id> into buf ("" without an external URL). */
void escalate_job_url(const char *job_id, char *buf, size_t len);

/* PagerDuty Events v2 severity for an alert's severity label. */
const char *escalate_pd_severity(const char *label);
/* Bodies for kind "trigger" (recovery failed), "resolve" (the incident is
 * over) or "notice" (recovered automatically) from a job record (the JSON
 * of GET /api/v1/jobs/{id}). The PagerDuty body has no routing_key; it is
 * added at send time so that the journal never holds it. */
cJSON *escalate_pagerduty_body(const cJSON *rec, const char *kind, const char *reason);
cJSON *escalate_slack_body(const cJSON *rec, const char *kind, const char *reason);
/* A Grafana annotation (kind "annotation") from a job record: reason
 * "started" opens a region at the job's start (time), "ended" gives both
 * ends (time, timeEnd) and the outcome tag; the ended body is what closes
 * the region with a PATCH, or makes it whole with a POST. */
cJSON *escalate_grafana_body(const cJSON *rec, const char *reason);
/* The annotation id in Grafana's answer to the POST ({"id": N, ...}) into
 * buf as digits: 0, or -1 when there is none. */
int escalate_grafana_id(const char *answer, char *buf, size_t len);

/* The request to send for a journaled payload: the endpoint URL and the
 * final body (secrets added), both malloc'd. -1 when the sink is not
 * configured any more. */
int escalate_wire(const char *sink, const char *payload, char **url, char **body);
/* The same for Grafana: ref NULL: POST {grafana}/api/annotations with the
 * payload; ref (the id the region's start got): PATCH
 * {grafana}/api/annotations/{ref} with the fields PATCH takes. *auth is the
 * Authorization header line (the token: wipe it after use). */
int escalate_grafana_wire(const char *payload, const char *ref, char **url, char **body, char **auth);
/* Classify an answer. cc != CURLE_OK: transport error. retry_after: the
 * header's seconds or -1. On ESC_RETRY *delay is the wait before attempt
 * n+1 (n >= 1 attempts made), honouring Retry-After. rnd in [0,1). */
enum esc_verdict escalate_classify(const char *sink, CURLcode cc, long status, const char *body,
                                   double retry_after, int n, double rnd, double *delay);

#endif

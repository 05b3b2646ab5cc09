/* Alertmanager webhook payload (version 4) and manual trigger bodies,
 * parsed and validated into plain structs. Everything a struct points to is
 * owned by it and released by its _free function. */
#ifndef RECOVERYD_ALERT_H
#define RECOVERYD_ALERT_H

#include <stddef.h>
#include <cjson/cJSON.h>

struct label {
	char *name;
	char *value;
};

/* A label or annotation set, sorted by name (Alertmanager sends them sorted,
 * but manual triggers may not). */
struct labels {
	size_t n;
	struct label *v;
};

struct alert {
	int resolved;          /* status == "resolved" */
	struct labels labels;
	struct labels annotations;
	char *starts_at;       /* as received, "" when absent (manual form) */
	char *ends_at;
	char *generator_url;   /* "" when absent */
	char *fingerprint;     /* 16 hex; computed from labels when absent */
	cJSON *raw;            /* the alert as a JSON object (labels, annotations,
	                          status, startsAt, endsAt, generatorURL,
	                          fingerprint), normalised; owned */
};

struct payload {
	int manual;            /* 1: manual {"labels",...} or single alert form */
	int resolved;          /* top-level status == "resolved" */
	char *receiver;        /* "" for manual */
	char *group_key;       /* "" for manual */
	char *external_url;    /* "" for manual */
	char *reason;          /* manual form "reason", "" otherwise */
	long truncated;        /* truncatedAlerts */
	size_t n_alerts;
	struct alert *alerts;
};

enum alert_result {
	ALERT_OK = 0,
	ALERT_INVALID_JSON,    /* not JSON at all -> 400 invalid_json */
	ALERT_INVALID_PAYLOAD, /* JSON but violates the schema -> 400 invalid_payload */
	ALERT_NOMEM
};

/* Accept manual / single-alert forms in addition to the v4 payload. */
#define ALERT_ALLOW_MANUAL 0x1

/* Parse body (len bytes, need not be NUL-terminated). On error, err receives a
 * message naming the offending field, e.g. "alerts[1].labels.job: expected a
 * string". On success *out is filled and must be released with payload_free. */
enum alert_result alert_parse(const char *body, size_t len, int flags,
                              struct payload *out, char *err, size_t errlen);
void payload_free(struct payload *p);

/* Value of label name, or NULL when the set has no such label. */
const char *labels_get(const struct labels *ls, const char *name);

/* Alertmanager's fingerprint: FNV-1a 64 over the sorted label set, each name
 * and value followed by 0xFF; written as 16 lowercase hex digits + NUL. */
void labels_fingerprint(const struct labels *ls, char out[17]);

#endif

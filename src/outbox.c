/* The escalation outbox: decide, journal, deliver, retry, resolve.
 *
 * Threads: notes are made and sent from any thread; the incident table is
 * guarded by ob->mu (always taken last, never held while calling out).
 * Deliveries live on the runner's event loop thread only: they are handed
 * there with runner_call once their rows are committed. */
#include "recoveryd/outbox.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "map.h"
#include "recoveryd/escalate.h"
#include "recoveryd/job.h"
#include "recoveryd/log.h"
#include "recoveryd/metrics.h"
#include "recoveryd/playbook.h"
#include "recoveryd/runner.h"
#include "recoveryd/store.h"

#define RESP_MAX (64 * 1024)
#define SEND_TIMEOUT 15L

static const char *const kind_names[] = {
	[EK_TRIGGER] = "trigger", [EK_RESOLVE] = "resolve", [EK_NOTICE] = "notice",
	[EK_ANNOTATION] = "annotation"};

static const char *const reason_names[] = {
	[ER_FAILED] = "failed",
	[ER_INTERRUPTED] = "interrupted",
	[ER_POISONED] = "poisoned",
	[ER_BUDGET_EXHAUSTED] = "budget_exhausted",
	[ER_PLAYBOOK_LOAD_FAILED] = "playbook_load_failed",
	[ER_PLAYBOOK_REMOVED] = "playbook_removed",
	[ER_RECOVERED] = "recovered",
	[ER_ALERT_RESOLVED] = "alert resolved",
	[ER_PAUSED] = "paused",
	[ER_APPROVAL_NEEDED] = "approval_needed",
	[ER_APPROVAL_TIMEOUT] = "approval_timeout",
	[ER_APPROVED] = "approved",
	[ER_REJECTED] = "rejected",
	[ER_CANCELLED] = "cancelled",
	[ER_STARTED] = "started",
	[ER_ENDED] = "ended",
};

static const struct {
	enum esc_sink bit;
	const char *name;
} sinks[] = {{SINK_SLACK, "slack"}, {SINK_PAGERDUTY, "pagerduty"}, {SINK_GRAFANA, "grafana"}};

#define N_SINKS (sizeof(sinks) / sizeof(sinks[0]))

const char *esc_kind_name(enum esc_kind k)
{
	return (unsigned)k < sizeof(kind_names) / sizeof(kind_names[0]) ? kind_names[k] : "?";
}

const char *esc_reason_name(enum esc_reason r)
{
	return (unsigned)r < sizeof(reason_names) / sizeof(reason_names[0]) ? reason_names[r] : "?";
}

static unsigned sink_bit(const char *s)
{
	for (size_t i = 0; i < N_SINKS; i++)
		if (strcmp(s, sinks[i].name) == 0)
			return sinks[i].bit;
	return 0;
}

/* A notification to send once the decisions that caused it are committed. */
struct outbox_note {
	char job_id[33];
	char *key;
	enum esc_kind kind;
	enum esc_reason reason;
	unsigned sinks;
	int dry_run;
	struct outbox_note *next;
};

/* An escalated job key whose incident is still open: where to send the
 * resolve, and which job it concerned. */
struct incident {
	char job_id[33];
	unsigned sinks;
};

/* One journaled notification on its way out (loop thread). */
struct delivery {
	struct outbox *ob;
	char *id, *job_id, *sink, *kind, *reason, *payload, *incident;
	int region_end;         /* Grafana: the end of a job's region */
	int ref_looked;         /* ... whose start was looked up in the journal */
	int patched;            /* ... sent as a PATCH of the start's annotation */
	int whole;              /* ... that annotation is gone: post the region whole */
	int attempts;
	double created_at;      /* wall clock, for the latency histogram */
	CURL *easy;             /* the transfer in flight, or NULL */
	struct curl_slist *headers;
	char *body;
	struct rbuf resp, resp_headers;
	char errbuf[CURL_ERROR_SIZE];
	struct delivery *next;  /* every delivery the outbox holds */
};

/* Rows journaled together, delivered once committed. */
struct sendset {
	struct outbox *ob;
	struct delivery *ready;   /* the pending rows, to deliver, in the order decided */
	struct delivery **tail;   /* where the next one goes */
	struct outbox_note *triggers; /* open incidents once committed */
	void (*done)(void *arg);  /* outbox_send_release_then: after the commit */
	void *done_arg;
};

struct outbox {
	struct outbox_opts o;
	pthread_mutex_t mu;
	struct map *incidents;    /* [mu] job key -> struct incident* */
	size_t journaling;        /* [mu] batches handed to the journal, not reported */
	pthread_cond_t journaled_cv; /* [mu] journaling reached 0 */
	struct delivery *deliveries; /* [loop] */
	size_t n_deliveries;      /* [loop] */
	struct map *regions;      /* [loop] job id -> the Grafana annotation id of its region's start */
	int claiming;             /* [loop] a claim is on its way */
};

/* ---------- notes and incidents ---------- */

static void note_free(struct outbox_note *n)
{
	free(n->key);
	free(n);
}

static void notes_free(struct outbox_note *n)
{
	while (n) {
		struct outbox_note *next = n->next;
		note_free(n);
		n = next;
	}
}

void outbox_note(struct outbox_notes *ns, const char *job_id, const char *key, enum esc_kind kind,
                 enum esc_reason reason, unsigned bits, int dry_run)
{
	struct outbox_note *n = calloc(1, sizeof(*n)), **pp;

	if (!n || !(n->key = strdup(key))) {
		free(n);
		log_kv(LOG_ERROR, job_id, "escalation dropped: out of memory", NULL);
		return;
	}
	snprintf(n->job_id, sizeof(n->job_id), "%s", job_id);
	n->kind = kind;
	n->reason = reason;
	n->sinks = bits;
	n->dry_run = dry_run;
	for (pp = &ns->head; *pp; pp = &(*pp)->next)
		;
	*pp = n; /* in the order decided */
}

unsigned outbox_default_sinks(void)
{
	unsigned bits = 0;
	const char **d = escalate_default_sinks();
	for (size_t i = 0; d && d[i]; i++)
		bits |= sink_bit(d[i]);
	free(d);
	return bits;
}

unsigned outbox_playbook_sinks(const struct playbook *pb)
{
	unsigned bits = 0;
	if (!pb->escalate_set)
		return outbox_default_sinks();
	for (size_t i = 0; i < pb->n_escalate; i++)
		bits |= sink_bit(pb->escalate[i]);
	return bits;
}

static void incident_open(struct outbox *ob, const char *key, const char *job_id, unsigned bits);

static void load_incident(const struct escalation_row *r, void *arg)
{
	incident_open(arg, r->incident_key, r->job_id, sink_bit(r->sink));
}

/* look: another replica may have opened it; the journal knows. */
static void close_incident(struct outbox *ob, struct outbox_notes *ns, const char *key, enum esc_reason reason,
                           int look)
{
	struct incident *inc;

	pthread_mutex_lock(&ob->mu);
	inc = map_del(ob->incidents, key);
	pthread_mutex_unlock(&ob->mu);
	if (!inc && look && ob->o.replica &&
	    store_scan_open_incidents(ob->o.store, key, load_incident, ob) == RD_OK) {
		pthread_mutex_lock(&ob->mu);
		inc = map_del(ob->incidents, key);
		pthread_mutex_unlock(&ob->mu);
	}
	if (!inc)
		return;
	outbox_note(ns, inc->job_id, key, EK_RESOLVE, reason, inc->sinks, 0);
	free(inc);
}

int outbox_success_is_quiet(struct outbox *ob, const struct job *j)
{
	int open;

	if (j->pb->n_notify_success > 0)
		return 0;
	if (j->dry_run)
		return 1; /* a dry run closes nothing */
	if (!j->key_new)
		return 0;
	pthread_mutex_lock(&ob->mu);
	open = map_get(ob->incidents, j->key) != NULL;
	pthread_mutex_unlock(&ob->mu);
	return !open;
}

void outbox_close_incident(struct outbox *ob, struct outbox_notes *ns, const char *key,
                           enum esc_reason reason)
{
	close_incident(ob, ns, key, reason, 1);
}

/* Grafana regions go to every job that ran, unless its playbook opts out;
 * they never page, so they are no escalation sink. */
static int annotated(const struct job *j)
{
	return !j->pb->no_annotations && escalate_sink_configured("grafana");
}

void outbox_job_started(struct outbox *ob, struct outbox_notes *ns, const struct job *j)
{
	unsigned bits = 0;

	(void)ob;
	if (annotated(j))
		outbox_note(ns, j->id, j->key, EK_ANNOTATION, ER_STARTED, SINK_GRAFANA, j->dry_run);
	for (size_t i = 0; i < j->pb->n_notify_start; i++)
		bits |= sink_bit(j->pb->notify_start[i]);
	if (bits)
		outbox_note(ns, j->id, j->key, EK_NOTICE, ER_STARTED, bits, j->dry_run);
}

void outbox_region_end(struct outbox_notes *ns, const struct job *j)
{
	if (j->attempts > 0 && j->pb && annotated(j))
		outbox_note(ns, j->id, j->key, EK_ANNOTATION, ER_ENDED, SINK_GRAFANA, j->dry_run);
}

void outbox_job_ended(struct outbox *ob, struct outbox_notes *ns, const struct job *j)
{
	outbox_region_end(ns, j);
	switch (j->outcome) {
	case OUT_FAILED:
	case OUT_DRY_RUN_FAILED:
	case OUT_INTERRUPTED:
	case OUT_APPROVAL_TIMEOUT:
		outbox_note(ns, j->id, j->key, EK_TRIGGER,
		            j->outcome == OUT_INTERRUPTED ? ER_INTERRUPTED
		            : j->outcome == OUT_APPROVAL_TIMEOUT ? ER_APPROVAL_TIMEOUT : ER_FAILED,
		            outbox_playbook_sinks(j->pb), j->dry_run);
		return;
	case OUT_REJECTED:
		/* A human decided: the approval page is answered. */
		outbox_close_incident(ob, ns, j->key, ER_REJECTED);
		return;
	case OUT_CANCELLED:
		/* A cancelled plan page is answered too; a resolve closed it already. */
		if (j->approval == AP_PENDING && j->plan_attempts > 0)
			outbox_close_incident(ob, ns, j->key, ER_CANCELLED);
		return;
	case OUT_PAUSED:           /* escalated at admission */
	case OUT_NONE:
	case OUT_SUCCEEDED:
	case OUT_DRY_RUN_SUCCEEDED:
	case OUT_POISONED:         /* escalated by replay, where it ends */
	case OUT_BUDGET_EXHAUSTED: /* escalated at admission */
	case OUT_COUNT:
		break;
	}
	if (j->state == JS_SUCCEEDED) {
		unsigned bits = 0;
		if (!j->dry_run)
			close_incident(ob, ns, j->key, ER_RECOVERED, !j->key_new);
		for (size_t i = 0; i < j->pb->n_notify_success; i++)
			bits |= sink_bit(j->pb->notify_success[i]);
		if (bits)
			outbox_note(ns, j->id, j->key, EK_NOTICE, ER_RECOVERED, bits, j->dry_run);
	}
}

/* Record key's incident as open on the sinks in bits, for job_id. */
static void incident_open(struct outbox *ob, const char *key, const char *job_id, unsigned bits)
{
	struct incident *inc;
	int oom = 0;

	pthread_mutex_lock(&ob->mu);
	inc = map_get(ob->incidents, key);
	if (!inc && (inc = calloc(1, sizeof(*inc)))) {
		map_put(ob->incidents, key, inc, &oom);
		if (oom) {
			free(inc);
			inc = NULL;
		}
	}
	if (inc) {
		snprintf(inc->job_id, sizeof(inc->job_id), "%s", job_id);
		inc->sinks |= bits;
	}
	pthread_mutex_unlock(&ob->mu);
	if (!inc)
		log_kv(LOG_ERROR, job_id, "escalation: out of memory: the incident's resolve will not be sent",
		       "key", key, NULL);
}

void outbox_abandon(struct outbox *ob, struct outbox_notes *ns)
{
	for (struct outbox_note *n = ns->head; n; n = n->next)
		if (n->kind == EK_RESOLVE)
			incident_open(ob, n->key, n->job_id, n->sinks);
	notes_free(ns->head);
	ns->head = NULL;
}

/* ---------- delivery (loop thread) ---------- */

/* What one send holds: the handle, headers, body and answer. */
static void transfer_release(struct delivery *d)
{
	if (d->easy)
		curl_easy_cleanup(d->easy);
	d->easy = NULL;
	curl_slist_free_all(d->headers);
	d->headers = NULL;
	free(d->body);
	d->body = NULL;
	rbuf_free(&d->resp);
	rbuf_free(&d->resp_headers);
}

static void delivery_free(struct delivery *d)
{
	if (!d)
		return;
	transfer_release(d);
	free(d->id);
	free(d->job_id);
	free(d->sink);
	free(d->kind);
	free(d->reason);
	free(d->payload);
	free(d->incident);
	free(d);
}

static struct delivery *delivery_of(struct outbox *ob, const struct escalation_row *e)
{
	struct delivery *d = calloc(1, sizeof(*d));

	if (!d || !(d->id = strdup(e->id)) || !(d->job_id = strdup(e->job_id)) ||
	    !(d->sink = strdup(e->sink)) || !(d->kind = strdup(e->kind ? e->kind : "trigger")) ||
	    !(d->reason = strdup(e->reason ? e->reason : "")) ||
	    !(d->payload = strdup(e->payload ? e->payload : "{}")) ||
	    (e->incident_key && !(d->incident = strdup(e->incident_key)))) {
		delivery_free(d);
		log_kv(LOG_ERROR, e->job_id, "escalation: out of memory: sent after the next restart", NULL);
		return NULL; /* journaled as pending */
	}
	d->ob = ob;
	d->region_end = strcmp(d->sink, "grafana") == 0 && strcmp(d->reason, "ended") == 0;
	d->attempts = e->attempts;
	d->created_at = e->created_at;
	return d;
}

static void outbox_gauge(struct outbox *ob)
{
	metrics_set(M_OUTBOX_DEPTH, NULL, NULL, (double)ob->n_deliveries);
}

static void delivery_forget(struct outbox *ob, struct delivery *d)
{
	for (struct delivery **pp = &ob->deliveries; *pp; pp = &(*pp)->next)
		if (*pp == d) {
			*pp = d->next;
			ob->n_deliveries--;
			break;
		}
	outbox_gauge(ob);
	delivery_free(d);
}

static void delivery_update(struct outbox *ob, struct delivery *d, const char *state, const char *answer,
                            double next_at, double delivered_at)
{
	struct escalation_row e = {.id = d->id, .state = state, .attempts = d->attempts,
	                           .last_answer = answer, .updated_at = rd_now(),
	                           .next_attempt_at = next_at, .delivered_at = delivered_at,
	                           .owner = ob->o.replica};
	struct store_batch *b = store_batch_new();

	/* A retry stays this replica's (renewed with its other leases). */
	if (ob->o.replica && next_at)
		e.lease_until = rd_now() + ob->o.lease;
	store_batch_keep(b); /* a delivery's state must not be lost to a database restart */
	if (b && store_batch_escalation_update(b, &e) == 0)
		store_commit(ob->o.store, b, 0); /* no wait: failures are logged and counted */
	else
		store_batch_free(b);
}

/* A resolve must not overtake its trigger: PagerDuty drops a resolve for
 * an incident it does not know, and the late trigger would then open one
 * that nobody closes. */
static int waits_for_trigger(struct outbox *ob, const struct delivery *d)
{
	if (strcmp(d->kind, "resolve") != 0 || !d->incident)
		return 0;
	for (const struct delivery *o = ob->deliveries; o; o = o->next)
		if (o != d && strcmp(o->kind, "trigger") == 0 && o->incident &&
		    strcmp(o->incident, d->incident) == 0 && strcmp(o->sink, d->sink) == 0)
			return 1;
	return 0;
}

/* A region's end needs the id Grafana gave its start: it waits while
 * that is on its way. */
static int waits_for_start(struct outbox *ob, const struct delivery *d)
{
	if (!d->region_end)
		return 0;
	for (const struct delivery *o = ob->deliveries; o; o = o->next)
		if (o != d && strcmp(o->sink, "grafana") == 0 && !o->region_end && strcmp(o->job_id, d->job_id) == 0)
			return 1;
	return 0;
}

static void region_set(struct outbox *ob, const char *job_id, const char *ref)
{
	char *v = strdup(ref);
	int oom = 0;

	if (v)
		free(map_put(ob->regions, job_id, v, &oom));
	if (!v || oom) {
		free(v);
		log_kv(LOG_ERROR, job_id, "annotation: out of memory: the region's end is posted whole", NULL);
	}
}

/* The annotation id of d's region start: what this process got back, else
 * (after a restart, or sent by another replica) the start row's journaled
 * answer. NULL: the start never got through, and the end is posted whole. */
static const char *region_ref(struct outbox *ob, struct delivery *d)
{
	const char *ref = map_get(ob->regions, d->job_id);
	cJSON *rec = NULL;
	const cJSON *e;

	if (ref || d->ref_looked)
		return ref;
	d->ref_looked = 1;
	if (store_job_json(ob->o.store, d->job_id, &rec) != RD_OK || !rec)
		return NULL;
	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(rec, "escalations"))
	{
		const cJSON *f[5] = {cJSON_GetObjectItemCaseSensitive(e, "sink"), cJSON_GetObjectItemCaseSensitive(e, "kind"),
		                     cJSON_GetObjectItemCaseSensitive(e, "reason"), cJSON_GetObjectItemCaseSensitive(e, "state"),
		                     cJSON_GetObjectItemCaseSensitive(e, "last_answer")};
		static const char *const want[4] = {"grafana", "annotation", "started", "delivered"};
		int match = 1;
		char id[32];
		for (int i = 0; i < 5 && match; i++)
			match = cJSON_IsString(f[i]) && (i == 4 || strcmp(f[i]->valuestring, want[i]) == 0);
		/* last_answer is "<status> <body>" */
		const char *body = match ? strchr(f[4]->valuestring, ' ') : NULL;
		if (body && escalate_grafana_id(body + 1, id, sizeof(id)) == 0)
			region_set(ob, d->job_id, id);
	}
	cJSON_Delete(rec);
	return map_get(ob->regions, d->job_id);
}

static size_t dl_body(char *p, size_t sz, size_t n, void *ud)
{
	rbuf_append(ud, p, sz * n); /* beyond the cap: kept short, not an error */
	return sz * n;
}

static void delivery_start(struct loop *l, long long id, void *arg);

static void delivery_later(struct delivery *d, double delay)
{
	if (runner_timer(d->ob->o.runner, rd_mono() + delay, delivery_start, d) < 0) {
		log_kv(LOG_ERROR, d->job_id, "escalation: out of memory: sent after the next restart", NULL);
		delivery_forget(d->ob, d); /* still pending in the journal */
	}
}

/* Retry-After in seconds from the raw response headers, or -1. */
static double retry_after(const struct rbuf *h)
{
	for (const char *p = h->p; p && *p;) {
		if (strncasecmp(p, "retry-after:", 12) == 0) {
			char *end;
			double v = strtod(p + 12, &end);
			return end != p + 12 && v >= 0 ? v : -1;
		}
		const char *nl = strchr(p, '\n');
		p = nl ? nl + 1 : NULL;
	}
	return -1;
}

static void delivery_done(struct loop *l, CURL *easy, CURLcode cc, void *arg)
{
	(void)l;
	struct delivery *d = arg;
	struct outbox *ob = d->ob;
	long status = 0;
	double delay = 0;
	char answer[640];
	enum esc_verdict v;

	if (cc == CURLE_OK)
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	v = escalate_classify(d->sink, cc, status, d->resp.p ? d->resp.p : "", retry_after(&d->resp_headers),
	                      d->attempts, rd_random_unit(), &delay);
	if (d->patched && cc == CURLE_OK && status == 404) {
		/* Someone deleted the region's start in Grafana: the end makes
		 * the region anew, with both times, at once. */
		free(map_del(d->ob->regions, d->job_id));
		d->whole = 1;
		v = ESC_RETRY;
		delay = 0;
	}
	if (cc != CURLE_OK)
		snprintf(answer, sizeof(answer), "%s", d->errbuf[0] ? d->errbuf : curl_easy_strerror(cc));
	else
		snprintf(answer, sizeof(answer), "%ld %.600s", status, d->resp.p ? d->resp.p : "");
	if (strcmp(d->sink, "grafana") == 0 && v != ESC_RETRY) {
		char id[32];
		if (d->region_end) /* the region is closed (or cannot be) */
			free(map_del(d->ob->regions, d->job_id));
		else if (v == ESC_DELIVERED && escalate_grafana_id(d->resp.p, id, sizeof(id)) == 0)
			region_set(d->ob, d->job_id, id);
	}
	transfer_release(d);

	switch (v) {
	case ESC_DELIVERED:
		metrics_add(M_ESCALATIONS, d->sink, "delivered", 1);
		metrics_observe(M_ESCALATION_LATENCY, d->sink, rd_now() - d->created_at);
		log_kv(LOG_INFO, d->job_id, "escalation delivered", "sink", d->sink, "kind", d->kind, "answer",
		       answer, NULL);
		delivery_update(ob, d, "delivered", answer, 0, rd_now());
		delivery_forget(ob, d);
		break;
	case ESC_FAILED:
		metrics_add(M_ESCALATIONS, d->sink, "failed", 1);
		log_kv(LOG_ERROR, d->job_id, "escalation failed permanently", "sink", d->sink, "kind", d->kind,
		       "answer", answer, NULL);
		delivery_update(ob, d, "failed", answer, 0, 0);
		delivery_forget(ob, d);
		break;
	case ESC_RETRY: {
		char dl[32];
		metrics_add(M_ESCALATIONS, d->sink, "retried", 1);
		snprintf(dl, sizeof(dl), "%.3f", delay);
		log_kv(LOG_WARN, d->job_id, "escalation will be retried", "sink", d->sink, "kind", d->kind,
		       "answer", answer, "retry_in_seconds", dl, NULL);
		delivery_update(ob, d, "retrying", answer, rd_now() + delay, 0);
		delivery_later(d, delay);
		break;
	}
	}
}

static void delivery_start(struct loop *l, long long id, void *arg)
{
	struct delivery *d = arg;
	(void)l;
	(void)id;
	struct outbox *ob = d->ob;
	char *url = NULL, *auth = NULL;
	const char *ref = NULL;
	int grafana = strcmp(d->sink, "grafana") == 0, rc;

	if (waits_for_trigger(ob, d) || waits_for_start(ob, d)) {
		delivery_later(d, 0.25);
		return;
	}
	if (grafana) {
		if (d->region_end && !d->whole)
			ref = region_ref(ob, d);
		d->patched = ref != NULL;
		rc = escalate_grafana_wire(d->payload, ref, &url, &d->body, &auth);
	} else {
		rc = escalate_wire(d->sink, d->payload, &url, &d->body);
	}
	if (rc < 0) {
		log_kv(LOG_ERROR, d->job_id, "escalation: sink is not configured", "sink", d->sink, NULL);
		metrics_add(M_ESCALATIONS, d->sink, "not_configured", 1);
		delivery_update(ob, d, "failed", "sink not configured", 0, 0);
		delivery_forget(ob, d);
		return;
	}
	if (!(d->easy = curl_easy_init()))
		goto again;
	d->resp.max = RESP_MAX;
	d->resp_headers.max = RESP_MAX;
	d->errbuf[0] = '\0';
	d->headers = curl_slist_append(NULL, "Content-Type: application/json");
	d->headers = curl_slist_append(d->headers, "Expect:");
	if (auth) {
		d->headers = curl_slist_append(d->headers, auth);
		explicit_bzero(auth, strlen(auth)); /* the token */
		free(auth);
		auth = NULL;
	}
	if (ref) /* the region's start got an id: close that region */
		curl_easy_setopt(d->easy, CURLOPT_CUSTOMREQUEST, "PATCH");
	curl_easy_setopt(d->easy, CURLOPT_URL, url);
	curl_easy_setopt(d->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(d->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(d->easy, CURLOPT_TIMEOUT, SEND_TIMEOUT);
	curl_easy_setopt(d->easy, CURLOPT_POSTFIELDS, d->body);
	curl_easy_setopt(d->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(d->body));
	curl_easy_setopt(d->easy, CURLOPT_HTTPHEADER, d->headers);
	curl_easy_setopt(d->easy, CURLOPT_WRITEFUNCTION, dl_body);
	curl_easy_setopt(d->easy, CURLOPT_WRITEDATA, &d->resp);
	curl_easy_setopt(d->easy, CURLOPT_HEADERFUNCTION, dl_body);
	curl_easy_setopt(d->easy, CURLOPT_HEADERDATA, &d->resp_headers);
	curl_easy_setopt(d->easy, CURLOPT_ERRORBUFFER, d->errbuf);
	curl_easy_setopt(d->easy, CURLOPT_USERAGENT, "recoveryd/" RECOVERYD_VERSION);
	if (runner_xfer(ob->o.runner, d->easy, delivery_done, d) < 0)
		goto again;
	explicit_bzero(url, strlen(url)); /* the Slack URL is the secret */
	free(url);
	d->attempts++;
	return;
again:
	explicit_bzero(url, strlen(url));
	free(url);
	if (auth)
		explicit_bzero(auth, strlen(auth));
	free(auth);
	transfer_release(d);
	delivery_later(d, 1); /* out of resources: try again shortly */
}

/* Take the deliveries of a committed set (loop thread). */
static void deliver_set(void *arg)
{
	struct sendset *set = arg;
	struct outbox *ob = set->ob;

	while (set->ready) {
		struct delivery *d = set->ready;
		set->ready = d->next;
		d->next = ob->deliveries;
		ob->deliveries = d;
		ob->n_deliveries++;
		outbox_gauge(ob);
		delivery_start(NULL, 0, d);
	}
	free(set);
}

/* ---------- journaling ---------- */

/* A resolve decided before a new trigger of the same incident must not be
 * sent after it: a set keeps the order of its decisions. */
static void set_append(struct sendset *set, struct delivery *d)
{
	if (!set->tail)
		set->tail = &set->ready;
	d->next = NULL;
	*set->tail = d;
	set->tail = &d->next;
}

static void sendset_free(struct sendset *set)
{
	while (set->ready) {
		struct delivery *d = set->ready;
		set->ready = d->next;
		delivery_free(d);
	}
	notes_free(set->triggers);
	free(set);
}

/* The loop stopped before it took set: the rows stay pending in the
 * journal and are sent after the next start. */
static void drop_set(void *arg)
{
	sendset_free(arg);
}

/* Writer thread: the rows of set are committed (or not). */
static void journaled(enum rd_status result, struct sendset *set)
{
	struct outbox *ob = set->ob;

	if (result != RD_OK) {
		for (struct delivery *d = set->ready; d; d = d->next)
			log_kv(LOG_ERROR, d->job_id, "escalation: journal commit failed; notification lost", "kind",
			       d->kind, NULL);
		sendset_free(set);
		return;
	}
	for (struct outbox_note *n = set->triggers; n; n = n->next)
		incident_open(ob, n->key, n->job_id, n->sinks);
	notes_free(set->triggers);
	set->triggers = NULL;
	if (!set->ready) {
		free(set);
		return;
	}
	runner_call(ob->o.runner, deliver_set, drop_set, set);
}

static void on_journaled(enum rd_status result, void *arg)
{
	struct sendset *set = arg;
	struct outbox *ob = set->ob;
	void (*done)(void *) = set->done;
	void *done_arg = set->done_arg;

	journaled(result, set); /* set is not ours after this */
	if (done)
		done(done_arg);
	pthread_mutex_lock(&ob->mu);
	if (--ob->journaling == 0)
		pthread_cond_broadcast(&ob->journaled_cv);
	pthread_mutex_unlock(&ob->mu);
}

void outbox_quiesce(struct outbox *ob)
{
	if (!ob)
		return;
	pthread_mutex_lock(&ob->mu);
	while (ob->journaling)
		pthread_cond_wait(&ob->journaled_cv, &ob->mu);
	pthread_mutex_unlock(&ob->mu);
}

/* Add n's rows (one per sink) to b; pending ones to set->ready. */
static void journal_note(struct outbox *ob, struct outbox_note *n, struct store_batch *b,
                         struct sendset *set, unsigned *opened)
{
	cJSON *rec = NULL;
	double now = rd_now();
	const char *kind = esc_kind_name(n->kind), *reason = esc_reason_name(n->reason);

	if (store_job_json(ob->o.store, n->job_id, &rec) != RD_OK || !rec) {
		log_kv(LOG_ERROR, n->job_id, "escalation: cannot read the job record", NULL);
		return;
	}
	for (size_t i = 0; i < N_SINKS; i++) {
		char id[33];
		const char *sink = sinks[i].name;
		if (!(n->sinks & sinks[i].bit))
			continue;
		int configured = escalate_sink_configured(sink);
		cJSON *body = sinks[i].bit == SINK_SLACK     ? escalate_slack_body(rec, kind, reason)
		              : sinks[i].bit == SINK_GRAFANA ? escalate_grafana_body(rec, reason)
		                                             : escalate_pagerduty_body(rec, kind, reason);
		char *payload = body ? cJSON_PrintUnformatted(body) : NULL;
		cJSON_Delete(body);
		rd_random_hex(id, 16);
		struct escalation_row row = {
			.id = id, .job_id = n->job_id, .incident_key = n->key, .sink = sink,
			.kind = kind, .reason = reason,
			.state = n->dry_run ? "planned" : configured ? "pending" : "failed",
			.last_answer = configured || n->dry_run ? NULL : "sink not configured",
			.created_at = now, .updated_at = now, .payload = payload};
		/* Journaled claimed by this replica, which sends it. */
		if (ob->o.replica && !n->dry_run && configured) {
			row.owner = ob->o.replica;
			row.lease_until = now + ob->o.lease;
		}
		if (n->dry_run)
			metrics_add(M_ESCALATIONS, sink, "planned", 1);
		else if (!configured) {
			metrics_add(M_ESCALATIONS, sink, "not_configured", 1);
			log_kv(LOG_ERROR, n->job_id, "escalation sink is not configured", "sink", sink, "kind",
			       kind, NULL);
		}
		if (store_batch_escalation(b, &row) < 0) {
			log_kv(LOG_ERROR, n->job_id, "escalation dropped: out of memory", "sink", sink, NULL);
		} else if (!n->dry_run && configured) {
			struct delivery *d = delivery_of(ob, &row);
			if (d) {
				set_append(set, d);
				*opened |= sinks[i].bit;
			}
		}
		free(payload);
	}
	cJSON_Delete(rec);
	log_kv(n->dry_run || n->kind == EK_NOTICE || n->kind == EK_ANNOTATION ? LOG_INFO : LOG_WARN, n->job_id,
	       n->dry_run ? "escalation planned (dry-run)" : "escalation journaled", "kind", kind, "reason",
	       reason, "key", n->key, NULL);
}

void outbox_send(struct outbox *ob, struct outbox_notes *ns)
{
	outbox_send_release(ob, ns, NULL, 0);
}

void outbox_send_release(struct outbox *ob, struct outbox_notes *ns, const char *const *ids, size_t n_ids)
{
	outbox_send_release_then(ob, ns, ids, n_ids, NULL, NULL);
}

void outbox_send_release_then(struct outbox *ob, struct outbox_notes *ns, const char *const *ids, size_t n_ids,
                              void (*done)(void *arg), void *arg)
{
	struct outbox_note *n, *next;
	struct store_batch *b;
	struct sendset *set;

	if (!ob->o.replica)
		n_ids = 0; /* nothing is leased */
	if (ob->o.disabled) {
		notes_free(ns->head);
		ns->head = NULL;
	}
	if (!ns->head && !n_ids) {
		if (done)
			done(arg);
		return;
	}
	b = store_batch_new();
	store_batch_keep(b); /* escalations are never dropped for a database restart */
	set = calloc(1, sizeof(*set));
	if (!b || !set) {
		for (n = ns->head; n; n = n->next)
			log_kv(LOG_ERROR, n->job_id, "escalation dropped: out of memory", "kind",
			       esc_kind_name(n->kind), NULL);
		store_batch_free(b);
		free(set);
		notes_free(ns->head);
		ns->head = NULL;
		if (done)
			done(arg);
		return;
	}
	set->ob = ob;
	set->done = done;
	set->done_arg = arg;
	for (n = ns->head; n; n = next) {
		unsigned opened = 0;
		next = n->next;
		journal_note(ob, n, b, set, &opened);
		if (n->kind == EK_TRIGGER && !n->dry_run && opened) {
			/* Open once committed: a later resolve closes it. */
			n->sinks = opened;
			n->next = set->triggers;
			set->triggers = n;
		} else {
			note_free(n);
		}
	}
	ns->head = NULL;
	for (size_t i = 0; i < n_ids; i++)
		if (store_batch_release(b, ids[i], ob->o.replica) < 0)
			log_kv(LOG_ERROR, ids[i], "journal: cannot release the job: out of memory", NULL);
	pthread_mutex_lock(&ob->mu);
	ob->journaling++;
	pthread_mutex_unlock(&ob->mu);
	if (store_commit_cb(ob->o.store, b, on_journaled, set) != RD_OK)
		on_journaled(RD_ERR, set);
}

/* ---------- start-up ---------- */

static void load_row(const struct escalation_row *r, void *arg)
{
	struct sendset *set = arg;
	struct delivery *d = delivery_of(set->ob, r);

	if (d)
		set_append(set, d);
}

enum rd_status outbox_load(struct outbox *ob)
{
	struct sendset *set = calloc(1, sizeof(*set));
	enum rd_status rc;

	if (!set)
		return RD_NOMEM;
	set->ob = ob;
	rc = store_scan_open_incidents(ob->o.store, NULL, load_incident, ob);
	if (rc == RD_OK && !ob->o.replica)
		rc = store_scan_outbox(ob->o.store, load_row, set);
	if (!set->ready) {
		free(set);
	} else if (ob->o.disabled) {
		sendset_free(set);
	} else {
		runner_call(ob->o.runner, deliver_set, drop_set, set);
	}
	return rc;
}

/* ---------- claims (a shared journal) ---------- */

#define CLAIM_MAX 32

static void claimed_row(const struct escalation_row *e, const char *prev_owner, void *arg)
{
	struct sendset *set = arg;
	struct delivery *d = delivery_of(set->ob, e);

	if (prev_owner) {
		metrics_add(M_TAKEOVERS, "escalation", NULL, 1);
		log_kv(LOG_WARN, e->job_id, "escalation taken over", "from", prev_owner, "sink", e->sink, "kind",
		       e->kind, NULL);
	}
	if (d)
		set_append(set, d);
}

/* Loop thread: the claim has reported. */
static void claim_reported(void *arg)
{
	struct sendset *set = arg;

	set->ob->claiming = 0;
	deliver_set(set);
}

static void claim_dropped(void *arg)
{
	sendset_free(arg);
}

static void claim_done(enum rd_status result, void *arg)
{
	struct sendset *set = arg;
	struct outbox *ob = set->ob; /* set is the loop's once handed over */

	(void)result; /* a failed claim got nothing; the next poll tries again */
	runner_call(ob->o.runner, claim_reported, claim_dropped, set);
	pthread_mutex_lock(&ob->mu);
	if (--ob->journaling == 0)
		pthread_cond_broadcast(&ob->journaled_cv);
	pthread_mutex_unlock(&ob->mu);
}

void outbox_poll(struct outbox *ob)
{
	struct sendset *set;
	struct store_batch *b;
	double now = rd_now();

	if (!ob || !ob->o.replica || ob->o.disabled || ob->claiming)
		return;
	set = calloc(1, sizeof(*set));
	b = store_batch_new();
	if (!set || !b ||
	    store_batch_claim_outbox(b, ob->o.replica, now, now + ob->o.lease, CLAIM_MAX, claimed_row, set) < 0) {
		free(set);
		store_batch_free(b);
		return;
	}
	set->ob = ob;
	ob->claiming = 1;
	pthread_mutex_lock(&ob->mu);
	ob->journaling++;
	pthread_mutex_unlock(&ob->mu);
	if (store_commit_cb(ob->o.store, b, claim_done, set) != RD_OK) {
		ob->claiming = 0;
		pthread_mutex_lock(&ob->mu);
		ob->journaling--;
		pthread_mutex_unlock(&ob->mu);
		free(set);
	}
}

/* ---------- life ---------- */

struct outbox *outbox_new(const struct outbox_opts *o)
{
	struct outbox *ob = calloc(1, sizeof(*ob));

	if (!ob)
		return NULL;
	ob->o = *o;
	pthread_mutex_init(&ob->mu, NULL);
	pthread_cond_init(&ob->journaled_cv, NULL);
	if (!(ob->incidents = map_new()) || !(ob->regions = map_new())) {
		map_free(ob->incidents, free);
		pthread_cond_destroy(&ob->journaled_cv);
		pthread_mutex_destroy(&ob->mu);
		free(ob);
		return NULL;
	}
	return ob;
}

void outbox_free(struct outbox *ob)
{
	if (!ob)
		return;
	/* The runner has stopped and let go of the transfers; what is left is
	 * pending in the journal and sent after the next start. */
	while (ob->deliveries) {
		struct delivery *d = ob->deliveries;
		ob->deliveries = d->next;
		delivery_free(d);
	}
	map_free(ob->incidents, free);
	map_free(ob->regions, free);
	pthread_cond_destroy(&ob->journaled_cv);
	pthread_mutex_destroy(&ob->mu);
	free(ob);
}

/* Escalation messages and answer classification for Slack incoming
 * webhooks, the PagerDuty Events API v2 and Grafana's annotations API.
 * Everything here is pure except
 * the settings, which SIGHUP may swap. */
#include "recoveryd/escalate.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recoveryd/common.h"

#define SUMMARY_MAX 1024 /* PagerDuty's limit on payload.summary */
#define SLACK_TEXT_MAX 2900 /* under Block Kit's 3000 per section */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	char *slack_url, *pd_key, *pd_url, *external_url;
	char *grafana_url, *grafana_token, *grafana_uid;
	char **defaults;
	double retry_initial, retry_max;
} conf = {.retry_initial = 1, .retry_max = 300};

static void set(char **dst, const char *v)
{
	if (*dst)
		explicit_bzero(*dst, strlen(*dst)); /* may be a secret */
	free(*dst);
	*dst = v ? strdup(v) : NULL;
}

void escalate_configure(const struct escalate_conf *c)
{
	pthread_mutex_lock(&lock);
	set(&conf.slack_url, c->slack_url);
	set(&conf.pd_key, c->pd_routing_key);
	set(&conf.pd_url, c->pd_url);
	set(&conf.external_url, c->external_url);
	set(&conf.grafana_url, c->grafana_url);
	set(&conf.grafana_token, c->grafana_token);
	set(&conf.grafana_uid, c->grafana_dashboard_uid);
	for (char **p = conf.defaults; p && *p; p++)
		free(*p);
	free(conf.defaults);
	conf.defaults = NULL;
	if (c->default_sinks) {
		size_t n = 0;
		while (c->default_sinks[n])
			n++;
		conf.defaults = calloc(n + 1, sizeof(char *));
		for (size_t i = 0; conf.defaults && i < n; i++)
			conf.defaults[i] = strdup(c->default_sinks[i]);
	}
	conf.retry_initial = c->retry_initial > 0 ? c->retry_initial : 1;
	conf.retry_max = c->retry_max >= conf.retry_initial ? c->retry_max : conf.retry_initial;
	pthread_mutex_unlock(&lock);
}

int escalate_sink_configured(const char *sink)
{
	int ok = 0;
	pthread_mutex_lock(&lock);
	if (strcmp(sink, "slack") == 0)
		ok = conf.slack_url != NULL;
	else if (strcmp(sink, "pagerduty") == 0)
		ok = conf.pd_key != NULL && conf.pd_url != NULL;
	else if (strcmp(sink, "grafana") == 0)
		ok = conf.grafana_url != NULL && conf.grafana_token != NULL;
	pthread_mutex_unlock(&lock);
	return ok;
}

const char **escalate_default_sinks(void)
{
	static const char *const all[] = {"slack", "pagerduty"};
	const char **r = calloc(3, sizeof(char *));
	size_t n = 0;

	if (!r)
		return NULL;
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < 2; i++) {
		int want;
		if (conf.defaults) {
			want = 0;
			for (char **p = conf.defaults; *p; p++)
				want |= strcmp(*p, all[i]) == 0;
		} else {
			want = i == 0 ? conf.slack_url != NULL : conf.pd_key != NULL;
		}
		if (want)
			r[n++] = all[i];
	}
	pthread_mutex_unlock(&lock);
	return r;
}

void escalate_job_url(const char *job_id, char *buf, size_t len)
{
	pthread_mutex_lock(&lock);
	if (conf.external_url) {
		size_t n = strlen(conf.external_url);
		int slash = n && conf.external_url[n - 1] == '/';
		snprintf(buf, len, "%.*s/ui/jobs/%s", (int)(slash ? n - 1 : n), conf.external_url, job_id);
	} else {
		buf[0] = '\0';
	}
	pthread_mutex_unlock(&lock);
}

const char *escalate_pd_severity(const char *label)
{
	static const char *const ok[] = {"critical", "error", "warning", "info"};
	for (size_t i = 0; label && i < 4; i++)
		if (strcmp(label, ok[i]) == 0)
			return ok[i];
	return "error";
}

/* ---------- reading the record ---------- */

static const char *str(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static const cJSON *labels_of(const cJSON *rec)
{
	return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(rec, "alert"), "labels");
}

static const char *label(const cJSON *rec, const char *k)
{
	return str(labels_of(rec), k);
}

static const char *annotation(const cJSON *rec, const char *k)
{
	return str(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(rec, "alert"),
	                                            "annotations"),
	           k);
}

/* What the alert is about: instance, else job, else "recoveryd". */
static const char *target(const cJSON *rec)
{
	const char *t = label(rec, "instance");
	if (!t)
		t = label(rec, "job");
	return t ? t : "recoveryd";
}

static const cJSON *last_attempt(const cJSON *rec)
{
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(rec, "attempts");
	int n = cJSON_GetArraySize(a);
	return n > 0 ? cJSON_GetArrayItem(a, n - 1) : NULL;
}

static const char *last_verify_reason(const cJSON *rec)
{
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(rec, "attempts");
	const cJSON *it;
	const char *r = NULL;
	cJSON_ArrayForEach(it, a)
	{
		const char *v = str(cJSON_GetObjectItemCaseSensitive(it, "verify"), "reason");
		if (v)
			r = v;
	}
	return r;
}

static const char *reason_text(const char *reason)
{
	if (!reason)
		return "recovery failed";
	if (strcmp(reason, "failed") == 0)
		return "automatic recovery failed";
	if (strcmp(reason, "interrupted") == 0)
		return "recovery was interrupted by a restart (not idempotent: not retried)";
	if (strcmp(reason, "poisoned") == 0)
		return "the job stalled recoveryd's event loop twice and the watchdog restarted it; it is not run again";
	if (strcmp(reason, "budget_exhausted") == 0)
		return "recovery held back: the playbook's run budget is exhausted";
	if (strcmp(reason, "playbook_removed") == 0)
		return "the job's playbook is no longer loaded after a restart; nothing will finish it";
	if (strcmp(reason, "playbook_load_failed") == 0)
		return "the playbook failed to load at reload; the previous version is still running";
	if (strcmp(reason, "paused") == 0)
		return "recovery held back: automation is paused";
	if (strcmp(reason, "approval_needed") == 0)
		return "approval needed: a recovery plan waits for a human";
	if (strcmp(reason, "approval_timeout") == 0)
		return "nobody approved the recovery plan in time; nothing was changed";
	return reason;
}

/* snprintf cuts bytes: drop a character it cut in half at the end of s, or
 * the body would not be UTF-8 and the receiver would refuse the event. */
static void utf8_cut_tail(char *s)
{
	size_t n = strlen(s), p = n;

	while (p > 0 && n - p < 3 && ((unsigned char)s[p - 1] & 0xC0) == 0x80)
		p--;
	if (p > 0 && rd_utf8_len((const unsigned char *)s + p - 1, n - p + 1) == 0)
		s[p - 1] = '\0';
}

static void add_link(cJSON *links, const char *href, const char *text)
{
	if (!href || !*href)
		return;
	cJSON *l = cJSON_CreateObject();
	cJSON_AddStringToObject(l, "href", href);
	cJSON_AddStringToObject(l, "text", text);
	cJSON_AddItemToArray(links, l);
}

cJSON *escalate_pagerduty_body(const cJSON *rec, const char *kind, const char *reason)
{
	char dedup[300], summary[SUMMARY_MAX + 1], url[512];
	const char *key = str(rec, "key"), *alertname = label(rec, "alertname");
	const char *playbook = str(rec, "playbook"), *id = str(rec, "id");
	const cJSON *att = cJSON_GetObjectItemCaseSensitive(rec, "attempts");
	cJSON *b = cJSON_CreateObject();

	snprintf(dedup, sizeof(dedup), "recoveryd/%s", key ? key : "");
	cJSON_AddStringToObject(b, "event_action", strcmp(kind, "resolve") == 0 ? "resolve" : "trigger");
	cJSON_AddStringToObject(b, "dedup_key", dedup);
	if (strcmp(kind, "resolve") == 0)
		return b;

	escalate_job_url(id ? id : "", url, sizeof(url));
	if (snprintf(summary, sizeof(summary), "%s on %s: %s (playbook %s, %d attempt%s, outcome %s)",
	             alertname ? alertname : "alert", target(rec), reason_text(reason),
	             playbook ? playbook : "?", cJSON_GetArraySize(att), cJSON_GetArraySize(att) == 1 ? "" : "s",
	             str(rec, "outcome") ? str(rec, "outcome") : "unknown") >= (int)sizeof(summary))
		utf8_cut_tail(summary);
	cJSON *p = cJSON_AddObjectToObject(b, "payload");
	cJSON_AddStringToObject(p, "summary", summary);
	cJSON_AddStringToObject(p, "source", target(rec));
	cJSON_AddStringToObject(p, "severity", escalate_pd_severity(label(rec, "severity")));
	if (str(rec, "ended_at"))
		cJSON_AddStringToObject(p, "timestamp", str(rec, "ended_at"));
	if (label(rec, "component"))
		cJSON_AddStringToObject(p, "component", label(rec, "component"));
	if (label(rec, "group") || label(rec, "namespace"))
		cJSON_AddStringToObject(p, "group", label(rec, "group") ? label(rec, "group") : label(rec, "namespace"));
	if (label(rec, "class") || alertname)
		cJSON_AddStringToObject(p, "class", label(rec, "class") ? label(rec, "class") : alertname);

	cJSON *d = cJSON_AddObjectToObject(p, "custom_details");
	cJSON_AddStringToObject(d, "playbook", playbook ? playbook : "");
	cJSON_AddStringToObject(d, "reason", reason ? reason : "");
	cJSON_AddStringToObject(d, "job_id", id ? id : "");
	cJSON_AddStringToObject(d, "outcome", str(rec, "outcome") ? str(rec, "outcome") : "");
	if (str(rec, "error"))
		cJSON_AddStringToObject(d, "error", str(rec, "error"));
	cJSON *list = cJSON_AddArrayToObject(d, "attempts");
	const cJSON *it;
	cJSON_ArrayForEach(it, att)
	{
		cJSON *a = cJSON_CreateObject();
		const cJSON *n = cJSON_GetObjectItemCaseSensitive(it, "n");
		cJSON_AddNumberToObject(a, "n", cJSON_IsNumber(n) ? n->valuedouble : 0);
		cJSON_AddStringToObject(a, "result", str(it, "result") ? str(it, "result") : "");
		if (str(it, "error"))
			cJSON_AddStringToObject(a, "error", str(it, "error"));
		cJSON_AddItemToArray(list, a);
	}
	if (last_verify_reason(rec))
		cJSON_AddStringToObject(d, "last_verify_reason", last_verify_reason(rec));
	if (cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(rec, "plan")))
		cJSON_AddItemToObject(d, "plan", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(rec, "plan"), 1));
	if (labels_of(rec))
		cJSON_AddItemToObject(d, "alert_labels", cJSON_Duplicate(labels_of(rec), 1));

	cJSON *links = cJSON_AddArrayToObject(b, "links");
	add_link(links, annotation(rec, "runbook_url"), "Runbook");
	add_link(links, url, "recoveryd job");
	add_link(links, str(cJSON_GetObjectItemCaseSensitive(rec, "alert"), "generatorURL"), "Alert source");
	cJSON_AddStringToObject(b, "client", "recoveryd");
	if (url[0])
		cJSON_AddStringToObject(b, "client_url", url);
	return b;
}

#define PLAN_LINES 10

static void add_section(cJSON *blocks, const char *mrkdwn)
{
	cJSON *s = cJSON_CreateObject(), *t;
	cJSON_AddStringToObject(s, "type", "section");
	t = cJSON_AddObjectToObject(s, "text");
	cJSON_AddStringToObject(t, "type", "mrkdwn");
	cJSON_AddStringToObject(t, "text", mrkdwn);
	cJSON_AddItemToArray(blocks, s);
}

/* A bounded text builder for Slack mrkdwn. Values from alerts are
 * attacker-influenced: "<!channel>" would ping a channel and "<url|x>"
 * would render a link, so &, < and > are escaped as Slack documents. */
struct mrk {
	char buf[SLACK_TEXT_MAX];
	size_t len;
};

static void mrk_raw(struct mrk *m, const char *s)
{
	size_t n = strlen(s);
	if (m->len + n >= sizeof(m->buf))
		n = sizeof(m->buf) - m->len - 1;
	memcpy(m->buf + m->len, s, n);
	m->len += n;
	m->buf[m->len] = '\0';
}

/* At most max bytes of s, escaped; a character is copied whole or not at
 * all, since a cut one would make the message invalid UTF-8. */
static void mrk_esc(struct mrk *m, const char *s, size_t max)
{
	for (size_t i = 0, n; s && s[i] && m->len + 6 < sizeof(m->buf); i += n) {
		const char *rep = s[i] == '&' ? "&amp;" : s[i] == '<' ? "&lt;" : s[i] == '>' ? "&gt;" : NULL;
		for (n = 1; !rep && n < 4 && ((unsigned char)s[i + n] & 0xC0) == 0x80; n++)
			;
		if (i + n > max)
			break;
		if (rep) {
			mrk_raw(m, rep);
		} else {
			memcpy(m->buf + m->len, s + i, n);
			m->len += n;
			m->buf[m->len] = '\0';
		}
	}
}

static void mrk_int(struct mrk *m, long v)
{
	char n[32];
	snprintf(n, sizeof(n), "%ld", v);
	mrk_raw(m, n);
}

static void mrk_link(struct mrk *m, const char *url, const char *text)
{
	if (!url || !*url)
		return;
	mrk_raw(m, "<");
	mrk_esc(m, url, 1000);
	mrk_raw(m, "|");
	mrk_esc(m, text, 200);
	mrk_raw(m, ">  ");
}

/* The writes a plan would make, for the humans asked to approve it. */
static void plan_text(struct mrk *m, const cJSON *rec, const char *reason)
{
	const cJSON *plan = cJSON_GetObjectItemCaseSensitive(rec, "plan"), *it;
	int n = 0, total = cJSON_GetArraySize(plan);

	if (!reason || strcmp(reason, "approval_needed") != 0 || !cJSON_IsArray(plan))
		return;
	mrk_raw(m, "*Plan:* ");
	mrk_int(m, total);
	mrk_raw(m, total == 1 ? " write\n" : " writes\n");
	cJSON_ArrayForEach(it, plan) {
		if (!cJSON_IsString(it))
			continue;
		if (n++ == PLAN_LINES) {
			mrk_raw(m, "...\n");
			break;
		}
		mrk_raw(m, "- ");
		mrk_esc(m, it->valuestring, 200);
		mrk_raw(m, "\n");
	}
	mrk_raw(m, "Approve or reject: POST /api/v1/jobs/");
	mrk_esc(m, str(rec, "id") ? str(rec, "id") : "", 64);
	mrk_raw(m, "/approve or /reject\n");
}

cJSON *escalate_slack_body(const cJSON *rec, const char *kind, const char *reason)
{
	char url[512];
	const char *alertname = label(rec, "alertname"), *playbook = str(rec, "playbook");
	const char *outcome = str(rec, "outcome"), *id = str(rec, "id");
	const cJSON *att = cJSON_GetObjectItemCaseSensitive(rec, "attempts");
	const cJSON *last = last_attempt(rec);
	int natt = cJSON_GetArraySize(att);
	cJSON *b = cJSON_CreateObject(), *blocks;
	struct mrk m = {.len = 0};

	escalate_job_url(id ? id : "", url, sizeof(url));
	if (strcmp(kind, "resolve") == 0) {
		mrk_raw(&m, "RESOLVED: ");
	} else if (strcmp(kind, "notice") == 0 && reason && strcmp(reason, "started") == 0) {
		mrk_raw(&m, "Recovery started: ");
	} else if (strcmp(kind, "notice") == 0) {
		mrk_raw(&m, "Recovered automatically: ");
	} else if (reason && strcmp(reason, "approval_needed") == 0) {
		mrk_raw(&m, "APPROVAL NEEDED: ");
	} else if (reason && strcmp(reason, "paused") == 0) {
		mrk_raw(&m, "Auto-recovery PAUSED: ");
	} else {
		mrk_raw(&m, "Auto-recovery FAILED: ");
	}
	mrk_esc(&m, alertname ? alertname : "alert", 200);
	mrk_raw(&m, " on ");
	mrk_esc(&m, target(rec), 200);
	if (strcmp(kind, "resolve") == 0) {
		mrk_raw(&m, " (playbook ");
		mrk_esc(&m, playbook ? playbook : "?", 100);
		mrk_raw(&m, reason && strcmp(reason, "recovered") == 0  ? "): recovered by a later recovery job"
		            : reason && strcmp(reason, "approved") == 0 ? "): the plan was approved; the recovery runs"
		            : reason && strcmp(reason, "rejected") == 0 ? "): the plan was rejected; nothing is done"
		            : reason && strcmp(reason, "cancelled") == 0 ? "): the plan was cancelled; nothing is done"
		                                                        : "): the alert resolved");
	} else if (strcmp(kind, "notice") == 0 && reason && strcmp(reason, "started") == 0) {
		const cJSON *max = cJSON_GetObjectItemCaseSensitive(rec, "max_attempts");
		int nmax = cJSON_IsNumber(max) ? max->valueint : 1;
		mrk_raw(&m, " - recoveryd is running playbook ");
		mrk_esc(&m, playbook ? playbook : "?", 100);
		mrk_raw(&m, " (up to ");
		mrk_int(&m, nmax);
		mrk_raw(&m, nmax == 1 ? " attempt)" : " attempts)");
	} else if (strcmp(kind, "notice") == 0) {
		mrk_raw(&m, " (playbook ");
		mrk_esc(&m, playbook ? playbook : "?", 100);
		mrk_raw(&m, ", ");
		mrk_int(&m, natt);
		mrk_raw(&m, natt == 1 ? " attempt)" : " attempts)");
	} else {
		mrk_raw(&m, " - ");
		mrk_esc(&m, reason_text(reason), 300);
		mrk_raw(&m, " (playbook ");
		mrk_esc(&m, playbook ? playbook : "?", 100);
		mrk_raw(&m, ", outcome ");
		mrk_esc(&m, outcome ? outcome : "unknown", 50);
		mrk_raw(&m, ")");
	}
	cJSON_AddStringToObject(b, "text", m.buf);
	blocks = cJSON_AddArrayToObject(b, "blocks");
	add_section(blocks, m.buf);

	if (strcmp(kind, "trigger") == 0) {
		m.len = 0;
		m.buf[0] = '\0';
		mrk_raw(&m, "*Alert:* ");
		mrk_esc(&m, alertname ? alertname : "?", 200);
		mrk_raw(&m, "\n*Target:* ");
		mrk_esc(&m, target(rec), 200);
		mrk_raw(&m, "\n*Severity:* ");
		mrk_esc(&m, escalate_pd_severity(label(rec, "severity")), 20);
		mrk_raw(&m, "\n*Playbook:* ");
		mrk_esc(&m, playbook ? playbook : "?", 100);
		mrk_raw(&m, ", ");
		mrk_int(&m, natt);
		mrk_raw(&m, natt == 1 ? " attempt\n" : " attempts\n");
		if (last && str(last, "error")) {
			mrk_raw(&m, "*Last error:* ");
			mrk_esc(&m, str(last, "error"), 600);
			mrk_raw(&m, "\n");
		}
		if (last_verify_reason(rec)) {
			mrk_raw(&m, "*Last verify:* ");
			mrk_esc(&m, last_verify_reason(rec), 300);
			mrk_raw(&m, "\n");
		}
		plan_text(&m, rec, reason);
		add_section(blocks, m.buf);
	}
	m.len = 0;
	m.buf[0] = '\0';
	mrk_link(&m, annotation(rec, "runbook_url"), "Runbook");
	if (url[0]) {
		char t[64];
		snprintf(t, sizeof(t), "Job %s", id ? id : "");
		mrk_link(&m, url, t);
	}
	mrk_link(&m, str(cJSON_GetObjectItemCaseSensitive(rec, "alert"), "generatorURL"), "Alert source");
	if (m.len)
		add_section(blocks, m.buf);
	return b;
}

/* ---------- Grafana annotations ---------- */

/* A record's time field as epoch milliseconds, or 0. */
static long long ms_of(const cJSON *rec, const char *k)
{
	double v;
	return rd_parse_time(str(rec, k), &v) == 0 ? (long long)(v * 1000 + 0.5) : 0;
}

static void add_tag(cJSON *tags, const char *name, const char *value)
{
	char t[300];
	if (!value)
		return;
	/* Grafana keeps tags whole; a cut one must stay UTF-8. */
	if (snprintf(t, sizeof(t), "%s:%s", name, value) >= (int)sizeof(t))
		utf8_cut_tail(t);
	cJSON_AddItemToArray(tags, cJSON_CreateString(t));
}

cJSON *escalate_grafana_body(const cJSON *rec, const char *reason)
{
	char url[512];
	const char *alertname = label(rec, "alertname"), *playbook = str(rec, "playbook");
	const char *id = str(rec, "id"), *outcome = str(rec, "outcome"), *error = str(rec, "error");
	int ended = reason && strcmp(reason, "ended") == 0;
	int natt = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(rec, "attempts"));
	long long t0 = ms_of(rec, "started_at"), t1 = ms_of(rec, "ended_at");
	cJSON *b = cJSON_CreateObject(), *tags;
	struct mrk m = {.len = 0};

	if (!t0)
		t0 = ms_of(rec, "created_at");
	if (!t0)
		t0 = (long long)(rd_now() * 1000);
	cJSON_AddNumberToObject(b, "time", (double)t0);
	if (ended) /* a region is an annotation with timeEnd; never before its start */
		cJSON_AddNumberToObject(b, "timeEnd", (double)(t1 > t0 ? t1 : t0));
	tags = cJSON_AddArrayToObject(b, "tags");
	cJSON_AddItemToArray(tags, cJSON_CreateString("recoveryd"));
	add_tag(tags, "playbook", playbook);
	add_tag(tags, "alertname", alertname);
	if (ended)
		add_tag(tags, "outcome", outcome ? outcome : "unknown");

	/* Grafana shows the text as sanitized HTML: values are escaped, the
	 * job link is an anchor. */
	mrk_raw(&m, ended ? "recoveryd ran playbook " : "recoveryd is running playbook ");
	mrk_esc(&m, playbook ? playbook : "?", 100);
	mrk_raw(&m, " for ");
	mrk_esc(&m, alertname ? alertname : "alert", 200);
	mrk_raw(&m, " on ");
	mrk_esc(&m, target(rec), 200);
	if (ended) {
		mrk_raw(&m, ": ");
		mrk_esc(&m, outcome ? outcome : "unknown", 50);
		mrk_raw(&m, " after ");
		mrk_int(&m, natt);
		mrk_raw(&m, natt == 1 ? " attempt" : " attempts");
		if (error && outcome && strstr(outcome, "succeeded") == NULL) {
			mrk_raw(&m, " (");
			mrk_esc(&m, error, 600);
			mrk_raw(&m, ")");
		}
	}
	escalate_job_url(id ? id : "", url, sizeof(url));
	if (url[0] && !strchr(url, '"')) {
		mrk_raw(&m, " - <a href=\"");
		mrk_esc(&m, url, 500);
		mrk_raw(&m, "\">job ");
		mrk_esc(&m, id ? id : "", 64);
		mrk_raw(&m, "</a>");
	}
	cJSON_AddStringToObject(b, "text", m.buf);
	pthread_mutex_lock(&lock);
	if (conf.grafana_uid)
		cJSON_AddStringToObject(b, "dashboardUID", conf.grafana_uid);
	pthread_mutex_unlock(&lock);
	return b;
}

int escalate_grafana_id(const char *answer, char *buf, size_t len)
{
	cJSON *a = answer ? cJSON_Parse(answer) : NULL;
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
	int rc = -1;

	/* Grafana's ids are positive int64s; JSON numbers hold them exactly up to 2^53. */
	if (cJSON_IsNumber(id) && id->valuedouble >= 1 && id->valuedouble < 9007199254740992.0 &&
	    id->valuedouble == (double)(long long)id->valuedouble)
		rc = snprintf(buf, len, "%lld", (long long)id->valuedouble) < (int)len ? 0 : -1;
	cJSON_Delete(a);
	return rc;
}

int escalate_grafana_wire(const char *payload, const char *ref, char **url, char **body, char **auth)
{
	cJSON *b = NULL;
	int rc = -1;

	*url = *body = *auth = NULL;
	if (ref && (!*ref || strspn(ref, "0123456789") != strlen(ref) || strlen(ref) > 20))
		return -1;
	if (ref) {
		/* PATCH takes text, tags, time and timeEnd: the region's place stays. */
		if (!(b = cJSON_Parse(payload)))
			return -1;
		cJSON_DeleteItemFromObjectCaseSensitive(b, "dashboardUID");
		cJSON_DeleteItemFromObjectCaseSensitive(b, "panelId");
		*body = cJSON_PrintUnformatted(b);
		cJSON_Delete(b);
	} else {
		*body = strdup(payload);
	}
	pthread_mutex_lock(&lock);
	if (conf.grafana_url && conf.grafana_token && *body) {
		size_t n = strlen(conf.grafana_url), ul = n + 40, al = strlen(conf.grafana_token) + 32;
		int slash = n && conf.grafana_url[n - 1] == '/';
		if ((*url = malloc(ul)) && (*auth = malloc(al))) {
			snprintf(*url, ul, "%.*s/api/annotations%s%s", (int)(slash ? n - 1 : n), conf.grafana_url,
			         ref ? "/" : "", ref ? ref : "");
			snprintf(*auth, al, "Authorization: Bearer %s", conf.grafana_token);
			rc = 0;
		}
	}
	pthread_mutex_unlock(&lock);
	if (rc < 0) {
		free(*url);
		free(*body);
		if (*auth)
			explicit_bzero(*auth, strlen(*auth));
		free(*auth);
		*url = *body = *auth = NULL;
	}
	return rc;
}

int escalate_wire(const char *sink, const char *payload, char **url, char **body)
{
	int rc = -1;

	*url = *body = NULL;
	pthread_mutex_lock(&lock);
	if (strcmp(sink, "slack") == 0 && conf.slack_url) {
		*url = strdup(conf.slack_url);
		*body = strdup(payload);
		rc = 0;
	} else if (strcmp(sink, "pagerduty") == 0 && conf.pd_key && conf.pd_url) {
		cJSON *b = cJSON_Parse(payload);
		if (b) {
			cJSON_AddStringToObject(b, "routing_key", conf.pd_key);
			*body = cJSON_PrintUnformatted(b);
			cJSON_Delete(b);
			*url = strdup(conf.pd_url);
			rc = 0;
		}
	}
	pthread_mutex_unlock(&lock);
	if (rc == 0 && (!*url || !*body)) {
		free(*url);
		free(*body);
		*url = *body = NULL;
		rc = -1;
	}
	return rc;
}

enum esc_verdict escalate_classify(const char *sink, CURLcode cc, long status, const char *body,
                                   double retry_after, int n, double rnd, double *delay)
{
	enum esc_verdict v;
	double d;

	if (cc != CURLE_OK || status == 429 || status >= 500) {
		v = ESC_RETRY;
	} else if (strcmp(sink, "slack") == 0) {
		/* Slack answers exactly "ok"; anything else is an error string. */
		v = status == 200 && body && strcmp(body, "ok") == 0 ? ESC_DELIVERED : ESC_FAILED;
	} else {
		v = status >= 200 && status < 300 ? ESC_DELIVERED : ESC_FAILED;
	}
	if (v != ESC_RETRY)
		return v;
	pthread_mutex_lock(&lock);
	d = conf.retry_initial;
	for (int i = 1; i < n && d < conf.retry_max; i++)
		d *= 2;
	if (d > conf.retry_max)
		d = conf.retry_max;
	pthread_mutex_unlock(&lock);
	d = d / 2 + d / 2 * rnd;
	if (retry_after > 0) {
		/* The service said how long to wait (at most an hour): never
		 * sooner than that, nor sooner than the backoff. */
		double ra = retry_after < 3600 ? retry_after : 3600;
		if (ra > d)
			d = ra;
	}
	*delay = d;
	return v;
}

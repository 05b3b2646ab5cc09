/* Unit tests for src/escalate.c: how each sink's answers are classified
 * (delivered, retried, failed), the retry delay (exponential, capped,
 * jittered, Retry-After honoured and capped), the PagerDuty Events v2 and
 * Slack bodies built from a job record, mrkdwn escaping, and the rule that
 * the secrets (routing key, Slack URL) are only added by escalate_wire,
 * never to the payload that is journaled (docs/escalation.md,
 * reference/protocols.md §2, §3.1). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "recoveryd/common.h"
#include "recoveryd/escalate.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define RND_TOP 0.999999

#define PD_KEY "0123456789abcdef0123456789abcdef"
#define PD_URL "http://127.0.0.1:1/v2/enqueue"
#define SLACK_URL "https://hooks.slack.com/services/T0SECRET/B0SECRET/xyzSECRETxyz"
#define EXTERNAL "https://recoveryd.example.com"
#define JOB_ID "82b5217b95795da5b59000c2770327c5"
#define JOB_URL EXTERNAL "/ui/jobs/" JOB_ID
#define RUNBOOK "https://runbooks.example.invalid/SettingsSyncJobFailure"
#define GENERATOR "http://127.0.0.1:9090/graph?g0.expr=up&g0.tab=1"
#define VERIFY "sync still failing: last success 47m ago"

/* cmocka 1.1 has no assert_double_equal. */
#define assert_near(got, want, eps) assert_near_at((got), (want), (eps), __FILE__, __LINE__)

static void assert_near_at(double got, double want, double eps, const char *file, int line)
{
	if (!(got >= want - eps && got <= want + eps)) {
		print_error("%.17g != %.17g (+/- %g)\n", got, want, eps);
		_fail(file, line);
	}
}

static void configure(double initial, double max)
{
	struct escalate_conf c = {
		.slack_url = SLACK_URL, .pd_routing_key = PD_KEY, .pd_url = PD_URL,
		.external_url = EXTERNAL, .default_sinks = NULL,
		.retry_initial = initial, .retry_max = max,
	};
	escalate_configure(&c);
}

static int setup(void **state)
{
	(void)state;
	configure(1, 300);
	return 0;
}

/* Frees the copied settings, so that LeakSanitizer sees a clean exit. */
static int teardown_all(void **state)
{
	struct escalate_conf none = {0};
	(void)state;
	escalate_configure(&none);
	return 0;
}

/* ---- the job record (GET /api/v1/jobs/{id}) -------------------------------- */

/* The record of the documented example: settings-sync-recovery, 3 failed
 * attempts, verify said VERIFY every time. */
static const char record_json[] =
	"{\"id\":\"" JOB_ID "\",\"playbook\":\"settings-sync-recovery\","
	"\"key\":\"settings-sync-recovery/38b819126bb9adce\",\"trigger\":\"webhook\","
	"\"state\":\"failed\",\"outcome\":\"failed\",\"error\":\"verify: " VERIFY "\","
	"\"ended_at\":\"2026-11-29T12:08:50.565Z\","
	"\"alert\":{\"labels\":{\"alertname\":\"SettingsSyncJobFailure\","
	"\"component\":\"settings-sync-job\",\"instance\":\"settings-sync-job-7f9c\","
	"\"job\":\"settings-sync-job\",\"severity\":\"warning\"},"
	"\"annotations\":{\"runbook_url\":\"" RUNBOOK "\",\"summary\":\"sync failed\"},"
	"\"generatorURL\":\"" GENERATOR "\",\"fingerprint\":\"38b819126bb9adce\"},"
	"\"attempts\":["
	"{\"n\":1,\"result\":\"failed\",\"error\":\"verify: " VERIFY "\",\"verify\":{\"ok\":false,\"reason\":\"" VERIFY "\"}},"
	"{\"n\":2,\"result\":\"failed\",\"error\":\"verify: " VERIFY "\",\"verify\":{\"ok\":false,\"reason\":\"" VERIFY "\"}},"
	"{\"n\":3,\"result\":\"failed\",\"error\":\"verify: " VERIFY "\",\"verify\":{\"ok\":false,\"reason\":\"" VERIFY "\"}}"
	"]}";

static cJSON *record(void)
{
	cJSON *r = cJSON_Parse(record_json);
	assert_non_null(r);
	return r;
}

static cJSON *labels_of(cJSON *rec)
{
	cJSON *l = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(rec, "alert"), "labels");
	assert_non_null(l);
	return l;
}

static void set_label(cJSON *rec, const char *name, const char *value)
{
	cJSON *l = labels_of(rec);
	cJSON_DeleteItemFromObjectCaseSensitive(l, name);
	if (value)
		assert_non_null(cJSON_AddStringToObject(l, name, value));
}

static const char *str(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static const cJSON *obj(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	assert_non_null(v);
	return v;
}

/* a == b but for trailing blanks (the link line's separators) */
static void assert_trimmed_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	while (la && a[la - 1] == ' ')
		la--;
	while (lb && b[lb - 1] == ' ')
		lb--;
	if (la != lb || memcmp(a, b, la) != 0) {
		print_error("\"%s\" != \"%s\"\n", a, b);
		fail();
	}
}

/* The text of section block i of a Slack body. */
static const char *section(const cJSON *slack, int i)
{
	const cJSON *b = cJSON_GetArrayItem(obj(slack, "blocks"), i);
	assert_non_null(b);
	assert_string_equal(str(b, "type"), "section");
	const cJSON *t = obj(b, "text");
	assert_string_equal(str(t, "type"), "mrkdwn");
	assert_non_null(str(t, "text"));
	return str(t, "text");
}

/* Strict UTF-8 check of printed JSON: a body with a cut character is
 * invalid JSON text (RFC 8259 §8.1), and strict receivers refuse it. */
static int valid_utf8(const char *s)
{
	size_t n = strlen(s);
	for (size_t i = 0; i < n;) {
		size_t k = rd_utf8_len((const unsigned char *)s + i, n - i);
		if (k == 0)
			return 0;
		i += k;
	}
	return 1;
}

/* ---- classification ---------------------------------------------------- */

struct answer {
	const char *sink;
	CURLcode cc;
	long status;
	const char *body;
	enum esc_verdict want;
};

static void test_classify_answers(void **state)
{
	static const struct answer cases[] = {
		/* PagerDuty Events v2 */
		{ "pagerduty", CURLE_OK, 202,
		  "{\"status\":\"success\",\"message\":\"Event processed\",\"dedup_key\":\"k\"}", ESC_DELIVERED },
		{ "pagerduty", CURLE_OK, 200, "{}", ESC_DELIVERED },
		{ "pagerduty", CURLE_OK, 400,
		  "{\"status\":\"invalid event\",\"message\":\"Event object is invalid\",\"errors\":[\"Length "
		  "of 'routing_key' is incorrect (should be 32 characters)\"]}", ESC_FAILED },
		{ "pagerduty", CURLE_OK, 403, "", ESC_FAILED },
		{ "pagerduty", CURLE_OK, 404, "", ESC_FAILED },
		{ "pagerduty", CURLE_OK, 429, "", ESC_RETRY },
		{ "pagerduty", CURLE_OK, 500, "{\"status\":\"error\"}", ESC_RETRY },
		{ "pagerduty", CURLE_OK, 502, NULL, ESC_RETRY },
		{ "pagerduty", CURLE_OK, 503, NULL, ESC_RETRY },
		{ "pagerduty", CURLE_OK, 504, NULL, ESC_RETRY },
		{ "pagerduty", CURLE_COULDNT_CONNECT, 0, NULL, ESC_RETRY },
		{ "pagerduty", CURLE_OPERATION_TIMEDOUT, 0, NULL, ESC_RETRY },
		{ "pagerduty", CURLE_COULDNT_RESOLVE_HOST, 0, NULL, ESC_RETRY },
		/* a transport error after a status line is still a transport error */
		{ "pagerduty", CURLE_RECV_ERROR, 202, NULL, ESC_RETRY },
		/* Slack incoming webhook: 200 and exactly "ok" */
		{ "slack", CURLE_OK, 200, "ok", ESC_DELIVERED },
		{ "slack", CURLE_OK, 200, "invalid_payload", ESC_FAILED },
		{ "slack", CURLE_OK, 200, "", ESC_FAILED },
		{ "slack", CURLE_OK, 200, NULL, ESC_FAILED },
		{ "slack", CURLE_OK, 202, "ok", ESC_FAILED },
		{ "slack", CURLE_OK, 400, "invalid_payload", ESC_FAILED },
		{ "slack", CURLE_OK, 400, "no_text", ESC_FAILED },
		{ "slack", CURLE_OK, 403, "invalid_token", ESC_FAILED },
		{ "slack", CURLE_OK, 403, "action_prohibited", ESC_FAILED },
		{ "slack", CURLE_OK, 404, "no_service", ESC_FAILED },
		{ "slack", CURLE_OK, 404, "no_team", ESC_FAILED },
		{ "slack", CURLE_OK, 410, "channel_is_archived", ESC_FAILED },
		{ "slack", CURLE_OK, 429, "rate_limited", ESC_RETRY },
		{ "slack", CURLE_OK, 500, "rollup_error", ESC_RETRY },
		{ "slack", CURLE_OK, 503, "", ESC_RETRY },
		{ "slack", CURLE_COULDNT_CONNECT, 0, NULL, ESC_RETRY },
		{ "slack", CURLE_OPERATION_TIMEDOUT, 0, NULL, ESC_RETRY },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		double delay = -1;
		enum esc_verdict v = escalate_classify(cases[i].sink, cases[i].cc, cases[i].status, cases[i].body,
		                                       -1, 1, 0, &delay);
		if (v != cases[i].want) {
			print_error("case %zu: %s cc=%d status=%ld body=%s: verdict %d, want %d\n", i, cases[i].sink,
			            (int)cases[i].cc, cases[i].status, cases[i].body ? cases[i].body : "(null)", (int)v,
			            (int)cases[i].want);
			fail();
		}
		if (v == ESC_RETRY) /* retry_initial 1, n = 1, jitter 0: 1/2 */
			assert_near(delay, 0.5, 1e-9);
	}
}

/* ---- retry delays ---------------------------------------------------------- */

static double retry_delay(const char *sink, long status, double retry_after, int n, double rnd)
{
	double d = -1;
	assert_int_equal(escalate_classify(sink, CURLE_OK, status, "", retry_after, n, rnd, &d), ESC_RETRY);
	return d;
}

static void test_backoff_doubles_to_the_cap_with_jitter(void **state)
{
	/* --escalation-retry-initial 1 --escalation-retry-max 300 (the defaults) */
	static const double nominal[] = { 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300 };

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(nominal); i++) {
		int n = (int)i + 1;
		double d = nominal[i];
		/* jitter 0: the low end, d/2 */
		assert_near(retry_delay("pagerduty", 503, -1, n, 0), d / 2, 1e-9);
		assert_near(retry_delay("slack", 500, -1, n, 0.5), d * 0.75, 1e-9);
		/* jitter ~1: just under the nominal delay, never over it */
		double hi = retry_delay("pagerduty", 429, -1, n, RND_TOP);
		assert_true(hi <= d);
		assert_true(hi > d * 0.9999);
	}
	/* far past the cap: still the cap, never inf */
	assert_near(retry_delay("pagerduty", 503, -1, 100000, 0), 150, 1e-9);
	assert_near(retry_delay("pagerduty", 503, -1, 100000, RND_TOP), 300 * (0.5 + 0.5 * RND_TOP), 1e-9);
}

static void test_backoff_follows_the_settings(void **state)
{
	(void)state;
	/* a cap that is no power of two of the start */
	configure(10, 120);
	assert_near(retry_delay("slack", 503, -1, 1, 0), 5, 1e-9);
	assert_near(retry_delay("slack", 503, -1, 2, 0), 10, 1e-9);
	assert_near(retry_delay("slack", 503, -1, 4, 0), 40, 1e-9);
	assert_near(retry_delay("slack", 503, -1, 5, 0), 60, 1e-9);
	assert_true(retry_delay("slack", 503, -1, 5, RND_TOP) <= 120);
	/* a start of 0 means 1 (docs/configuration.md) */
	configure(0, 300);
	assert_near(retry_delay("slack", 503, -1, 1, 0), 0.5, 1e-9);
	/* a cap below the start is raised to the start */
	configure(20, 5);
	assert_near(retry_delay("slack", 503, -1, 1, 0), 10, 1e-9);
	assert_near(retry_delay("slack", 503, -1, 9, 0), 10, 1e-9);
	/* a network error backs off like an HTTP answer */
	configure(2, 300);
	double d = -1;
	assert_int_equal(escalate_classify("pagerduty", CURLE_COULDNT_CONNECT, 0, NULL, -1, 3, 0, &d), ESC_RETRY);
	assert_near(d, 4, 1e-9);
}

static void test_retry_after_is_honoured_and_capped(void **state)
{
	(void)state;
	/* Slack 429 Retry-After: 30 when the backoff would wait about 1 s */
	assert_near(retry_delay("slack", 429, 30, 1, 0), 30, 1e-9);
	assert_near(retry_delay("slack", 429, 30, 1, RND_TOP), 30, 1e-9);
	/* PagerDuty 429 and a 503 carrying the header too */
	assert_near(retry_delay("pagerduty", 429, 45, 2, 0), 45, 1e-9);
	assert_near(retry_delay("pagerduty", 503, 12, 1, 0), 12, 1e-9);
	/* never sooner than the header, whatever the jitter */
	for (int n = 1; n <= 12; n++)
		for (double rnd = 0; rnd < 1; rnd += 0.125)
			assert_true(retry_delay("slack", 429, 200, n, rnd) >= 200);
	/* a header shorter than the backoff does not shorten it */
	assert_near(retry_delay("slack", 429, 1, 6, 0), 16, 1e-9);
	/* no header (-1) and 0 leave the backoff alone */
	assert_near(retry_delay("slack", 429, -1, 3, 0), 2, 1e-9);
	assert_near(retry_delay("slack", 429, 0, 3, 0), 2, 1e-9);
	/* at most an hour: a longer Retry-After is cut to 3600 */
	assert_near(retry_delay("slack", 429, 3600, 1, 0), 3600, 1e-9);
	assert_near(retry_delay("slack", 429, 7200, 1, 0), 3600, 1e-9);
	assert_near(retry_delay("pagerduty", 429, 1e9, 1, RND_TOP), 3600, 1e-9);
}

/* With --escalation-retry-max above an hour the backoff alone may exceed the
 * Retry-After cap: a header asking to wait longer must not make recoveryd
 * send sooner than the backoff would have. */
static void test_long_retry_after_never_shortens_the_backoff(void **state)
{
	(void)state;
	configure(10000, 10000);
	assert_near(retry_delay("pagerduty", 503, -1, 1, 0), 5000, 1e-9);
	assert_true(retry_delay("pagerduty", 429, 20000, 1, 0) >= 5000);
	assert_true(retry_delay("slack", 429, 4000, 1, 0) >= 5000 - 1e-9);
}

/* ---- settings -------------------------------------------------------------- */

static void test_sinks_and_job_url(void **state)
{
	char url[512];
	const char **d;

	(void)state;
	assert_true(escalate_sink_configured("slack"));
	assert_true(escalate_sink_configured("pagerduty"));
	assert_false(escalate_sink_configured("email"));
	d = escalate_default_sinks();
	assert_non_null(d);
	assert_string_equal(d[0], "slack");
	assert_string_equal(d[1], "pagerduty");
	assert_null(d[2]);
	free(d);

	escalate_job_url(JOB_ID, url, sizeof(url));
	assert_string_equal(url, JOB_URL);

	/* a trailing slash on --external-url gives no double slash */
	struct escalate_conf c = { .slack_url = NULL, .pd_routing_key = PD_KEY, .pd_url = NULL,
	                           .external_url = EXTERNAL "/", .retry_initial = 1, .retry_max = 300 };
	escalate_configure(&c);
	escalate_job_url(JOB_ID, url, sizeof(url));
	assert_string_equal(url, JOB_URL);
	/* PagerDuty needs the key and the URL; Slack is off */
	assert_false(escalate_sink_configured("pagerduty"));
	assert_false(escalate_sink_configured("slack"));
	d = escalate_default_sinks();
	assert_string_equal(d[0], "pagerduty"); /* every sink with a secret */
	assert_null(d[1]);
	free(d);

	/* --escalate-default pagerduty */
	static const char *const defaults[] = { "pagerduty", NULL };
	c = (struct escalate_conf){ .slack_url = SLACK_URL, .pd_routing_key = PD_KEY, .pd_url = PD_URL,
	                            .default_sinks = defaults, .retry_initial = 1, .retry_max = 300 };
	escalate_configure(&c);
	d = escalate_default_sinks();
	assert_string_equal(d[0], "pagerduty");
	assert_null(d[1]);
	free(d);
	/* without --external-url there is no job link */
	escalate_job_url(JOB_ID, url, sizeof(url));
	assert_string_equal(url, "");

	assert_string_equal(escalate_pd_severity("critical"), "critical");
	assert_string_equal(escalate_pd_severity("error"), "error");
	assert_string_equal(escalate_pd_severity("warning"), "warning");
	assert_string_equal(escalate_pd_severity("info"), "info");
	assert_string_equal(escalate_pd_severity("page"), "error");
	assert_string_equal(escalate_pd_severity("Critical"), "error");
	assert_string_equal(escalate_pd_severity(NULL), "error");
}

/* ---- PagerDuty bodies ------------------------------------------------------ */

static void test_pagerduty_trigger_body(void **state)
{
	cJSON *rec = record();
	cJSON *b = escalate_pagerduty_body(rec, "trigger", "failed");

	(void)state;
	assert_non_null(b);
	assert_string_equal(str(b, "event_action"), "trigger");
	assert_string_equal(str(b, "dedup_key"), "recoveryd/settings-sync-recovery/38b819126bb9adce");
	assert_null(cJSON_GetObjectItemCaseSensitive(b, "routing_key"));
	assert_string_equal(str(b, "client"), "recoveryd");
	assert_string_equal(str(b, "client_url"), JOB_URL);

	const cJSON *p = obj(b, "payload");
	assert_string_equal(str(p, "summary"),
	                    "SettingsSyncJobFailure on settings-sync-job-7f9c: automatic recovery failed "
	                    "(playbook settings-sync-recovery, 3 attempts, outcome failed)");
	assert_string_equal(str(p, "source"), "settings-sync-job-7f9c");
	assert_string_equal(str(p, "severity"), "warning");
	assert_string_equal(str(p, "timestamp"), "2026-11-29T12:08:50.565Z");
	assert_string_equal(str(p, "component"), "settings-sync-job");
	assert_string_equal(str(p, "class"), "SettingsSyncJobFailure");
	assert_null(cJSON_GetObjectItemCaseSensitive(p, "group")); /* no group or namespace label */

	const cJSON *d = obj(p, "custom_details");
	assert_string_equal(str(d, "playbook"), "settings-sync-recovery");
	assert_string_equal(str(d, "reason"), "failed");
	assert_string_equal(str(d, "job_id"), JOB_ID);
	assert_string_equal(str(d, "outcome"), "failed");
	assert_string_equal(str(d, "error"), "verify: " VERIFY);
	assert_string_equal(str(d, "last_verify_reason"), VERIFY);
	const cJSON *att = obj(d, "attempts");
	assert_int_equal(cJSON_GetArraySize(att), 3);
	for (int i = 0; i < 3; i++) {
		const cJSON *a = cJSON_GetArrayItem(att, i);
		assert_int_equal((int)obj(a, "n")->valuedouble, i + 1);
		assert_string_equal(str(a, "result"), "failed");
		assert_string_equal(str(a, "error"), "verify: " VERIFY);
	}
	const cJSON *labels = obj(d, "alert_labels");
	assert_int_equal(cJSON_GetArraySize(labels), 5);
	assert_string_equal(str(labels, "alertname"), "SettingsSyncJobFailure");
	assert_string_equal(str(labels, "severity"), "warning");

	const cJSON *links = obj(b, "links");
	assert_int_equal(cJSON_GetArraySize(links), 3);
	assert_string_equal(str(cJSON_GetArrayItem(links, 0), "href"), RUNBOOK);
	assert_string_equal(str(cJSON_GetArrayItem(links, 0), "text"), "Runbook");
	assert_string_equal(str(cJSON_GetArrayItem(links, 1), "href"), JOB_URL);
	assert_string_equal(str(cJSON_GetArrayItem(links, 2), "href"), GENERATOR);
	cJSON_Delete(b);
	cJSON_Delete(rec);
}

static void test_pagerduty_fields_from_other_labels(void **state)
{
	cJSON *rec = record(), *b;

	(void)state;
	/* source falls back to the job label, then "recoveryd"; group to
	 * namespace; class prefers the class label; unknown severity -> error */
	set_label(rec, "instance", NULL);
	set_label(rec, "namespace", "settings");
	set_label(rec, "class", "batch");
	set_label(rec, "severity", "page");
	b = escalate_pagerduty_body(rec, "trigger", "interrupted");
	const cJSON *p = obj(b, "payload");
	assert_string_equal(str(p, "source"), "settings-sync-job");
	assert_string_equal(str(p, "group"), "settings");
	assert_string_equal(str(p, "class"), "batch");
	assert_string_equal(str(p, "severity"), "error");
	assert_non_null(strstr(str(p, "summary"), "interrupted"));
	assert_string_equal(str(obj(p, "custom_details"), "reason"), "interrupted");
	cJSON_Delete(b);

	set_label(rec, "job", NULL);
	set_label(rec, "group", "team-a");
	set_label(rec, "severity", "critical");
	b = escalate_pagerduty_body(rec, "trigger", "budget_exhausted");
	p = obj(b, "payload");
	assert_string_equal(str(p, "source"), "recoveryd");
	assert_string_equal(str(p, "group"), "team-a");
	assert_string_equal(str(p, "severity"), "critical");
	assert_non_null(strstr(str(p, "summary"), "budget"));
	cJSON_Delete(b);

	/* no annotations, no generatorURL, no external URL: only what exists */
	struct escalate_conf c = { .pd_routing_key = PD_KEY, .pd_url = PD_URL, .retry_initial = 1,
	                           .retry_max = 300 };
	escalate_configure(&c);
	cJSON *alert = cJSON_GetObjectItemCaseSensitive(rec, "alert");
	cJSON_DeleteItemFromObjectCaseSensitive(alert, "annotations");
	cJSON_DeleteItemFromObjectCaseSensitive(alert, "generatorURL");
	b = escalate_pagerduty_body(rec, "trigger", "failed");
	assert_int_equal(cJSON_GetArraySize(obj(b, "links")), 0);
	assert_null(cJSON_GetObjectItemCaseSensitive(b, "client_url"));
	cJSON_Delete(b);
	cJSON_Delete(rec);
}

static void test_pagerduty_summary_is_capped(void **state)
{
	cJSON *rec = record(), *b;
	char big[3000];

	(void)state;
	memset(big, 'A', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	set_label(rec, "alertname", big);
	b = escalate_pagerduty_body(rec, "trigger", "failed");
	const char *s = str(obj(b, "payload"), "summary");
	assert_true(strlen(s) <= 1024);
	assert_true(strlen(s) >= 1000);
	cJSON_Delete(b);

	/* cut inside a 2-byte character: the summary must stay UTF-8. big is
	 * "x" then "\xC3\xA9" (U+00E9) repeated: the cut at 1024 bytes falls
	 * inside a character for big, between two for big + 1. */
	big[0] = 'x';
	for (size_t i = 1; i + 2 < sizeof(big); i += 2) {
		big[i] = (char)0xC3;
		big[i + 1] = (char)0xA9;
		big[i + 2] = '\0';
	}
	for (size_t shift = 0; shift < 2; shift++) {
		set_label(rec, "alertname", big + shift);
		b = escalate_pagerduty_body(rec, "trigger", "failed");
		s = str(obj(b, "payload"), "summary");
		assert_true(strlen(s) <= 1024);
		assert_true(strlen(s) >= 1020);
		char *txt = cJSON_PrintUnformatted(b);
		assert_true(valid_utf8(txt));
		free(txt);
		cJSON_Delete(b);
	}
	cJSON_Delete(rec);
}

static void test_pagerduty_resolve_body(void **state)
{
	cJSON *rec = record();
	cJSON *b = escalate_pagerduty_body(rec, "resolve", "alert resolved");

	(void)state;
	assert_string_equal(str(b, "event_action"), "resolve");
	assert_string_equal(str(b, "dedup_key"), "recoveryd/settings-sync-recovery/38b819126bb9adce");
	/* nothing else: PagerDuty needs no payload for a resolve */
	assert_int_equal(cJSON_GetArraySize(b), 2);
	cJSON_Delete(b);

	/* a manual run has its own incident */
	cJSON_ReplaceItemInObjectCaseSensitive(rec, "key",
	                                       cJSON_CreateString("settings-sync-recovery/manual/38b819126bb9adce"));
	b = escalate_pagerduty_body(rec, "resolve", "recovered");
	assert_string_equal(str(b, "dedup_key"), "recoveryd/settings-sync-recovery/manual/38b819126bb9adce");
	cJSON_Delete(b);
	cJSON_Delete(rec);
}

/* ---- Slack bodies ------------------------------------------------------------ */

#define LINKS "<" RUNBOOK "|Runbook>  <" JOB_URL "|Job " JOB_ID ">  <http://127.0.0.1:9090/graph?g0.expr=up&amp;g0.tab=1|Alert source>"

static void test_slack_failure_body(void **state)
{
	cJSON *rec = record();
	cJSON *b = escalate_slack_body(rec, "trigger", "failed");
	static const char head[] = "Auto-recovery FAILED: SettingsSyncJobFailure on settings-sync-job-7f9c - "
	                           "automatic recovery failed (playbook settings-sync-recovery, outcome failed)";

	(void)state;
	assert_string_equal(str(b, "text"), head);
	assert_int_equal(cJSON_GetArraySize(obj(b, "blocks")), 3);
	assert_string_equal(section(b, 0), head);
	assert_string_equal(section(b, 1), "*Alert:* SettingsSyncJobFailure\n*Target:* settings-sync-job-7f9c\n"
	                                   "*Severity:* warning\n*Playbook:* settings-sync-recovery, 3 attempts\n"
	                                   "*Last error:* verify: " VERIFY "\n*Last verify:* " VERIFY "\n");
	/* the links: the & of the generator URL is escaped like any other */
	assert_trimmed_equal(section(b, 2), LINKS);
	cJSON_Delete(b);

	/* one attempt is "1 attempt" */
	cJSON *att = cJSON_GetObjectItemCaseSensitive(rec, "attempts");
	cJSON_DeleteItemFromArray(att, 2);
	cJSON_DeleteItemFromArray(att, 1);
	b = escalate_slack_body(rec, "trigger", "poisoned");
	assert_non_null(strstr(section(b, 1), "*Playbook:* settings-sync-recovery, 1 attempt\n"));
	assert_non_null(strstr(str(b, "text"), "watchdog"));
	cJSON_Delete(b);
	cJSON_Delete(rec);
}

static void test_slack_resolve_and_notice_bodies(void **state)
{
	cJSON *rec = record(), *b;

	(void)state;
	b = escalate_slack_body(rec, "resolve", "alert resolved");
	assert_string_equal(str(b, "text"), "RESOLVED: SettingsSyncJobFailure on settings-sync-job-7f9c "
	                                    "(playbook settings-sync-recovery): the alert resolved");
	assert_int_equal(cJSON_GetArraySize(obj(b, "blocks")), 2); /* no details block */
	assert_string_equal(section(b, 0), str(b, "text"));
	assert_trimmed_equal(section(b, 1), LINKS);
	cJSON_Delete(b);

	b = escalate_slack_body(rec, "resolve", "recovered");
	assert_string_equal(str(b, "text"), "RESOLVED: SettingsSyncJobFailure on settings-sync-job-7f9c "
	                                    "(playbook settings-sync-recovery): recovered by a later recovery job");
	cJSON_Delete(b);

	b = escalate_slack_body(rec, "notice", "recovered");
	assert_string_equal(str(b, "text"), "Recovered automatically: SettingsSyncJobFailure on "
	                                    "settings-sync-job-7f9c (playbook settings-sync-recovery, 3 attempts)");
	assert_int_equal(cJSON_GetArraySize(obj(b, "blocks")), 2);
	cJSON_Delete(b);
	cJSON_Delete(rec);
}

/* Label values come from whoever exports the metric: "<!channel>" must not
 * ping a channel, "<url|text>" must not render as a link, and & must not
 * start an entity. Slack documents escaping exactly &, < and >. */
static void test_slack_escapes_label_values(void **state)
{
	cJSON *rec = record(), *b;
	char *txt;

	(void)state;
	set_label(rec, "alertname", "Disk<Full> & <!channel>");
	set_label(rec, "instance", "<https://evil.example.invalid|click me>");
	cJSON *att = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(rec, "attempts"), 2);
	cJSON_ReplaceItemInObjectCaseSensitive(att, "error", cJSON_CreateString("run: <@U123> a&b"));
	b = escalate_slack_body(rec, "trigger", "failed");
	assert_string_equal(str(b, "text"),
	                    "Auto-recovery FAILED: Disk&lt;Full&gt; &amp; &lt;!channel&gt; on "
	                    "&lt;https://evil.example.invalid|click me&gt; - automatic recovery failed "
	                    "(playbook settings-sync-recovery, outcome failed)");
	assert_non_null(strstr(section(b, 1), "*Alert:* Disk&lt;Full&gt; &amp; &lt;!channel&gt;\n"));
	assert_non_null(strstr(section(b, 1), "*Target:* &lt;https://evil.example.invalid|click me&gt;\n"));
	assert_non_null(strstr(section(b, 1), "*Last error:* run: &lt;@U123&gt; a&amp;b\n"));
	txt = cJSON_PrintUnformatted(b);
	assert_null(strstr(txt, "<!channel>"));
	assert_null(strstr(txt, "<https://evil"));
	assert_null(strstr(txt, "<@U123>"));
	free(txt);
	cJSON_Delete(b);

	/* the resolve and the notice escape too */
	b = escalate_slack_body(rec, "resolve", "alert resolved");
	txt = cJSON_PrintUnformatted(b);
	assert_null(strstr(txt, "<!channel>"));
	assert_non_null(strstr(txt, "&lt;!channel&gt;"));
	free(txt);
	cJSON_Delete(b);

	/* PagerDuty summaries are plain text: shown as they are */
	b = escalate_pagerduty_body(rec, "trigger", "failed");
	assert_string_equal(str(obj(b, "payload"), "source"), "<https://evil.example.invalid|click me>");
	cJSON_Delete(b);
	cJSON_Delete(rec);
}

/* A value cut to its cap must not end in half a character: the body would
 * not be UTF-8, and Slack would refuse the whole message. */
static void test_slack_caps_keep_utf8_whole(void **state)
{
	cJSON *rec = record(), *b;
	char err[2000];

	(void)state;
	/* "é" is 2 bytes; after the 1-byte "x" every cut at an even byte count
	 * falls inside one. The last error is cut at 600 bytes. */
	err[0] = 'x';
	for (size_t i = 1; i + 2 < sizeof(err); i += 2) {
		err[i] = (char)0xC3;
		err[i + 1] = (char)0xA9;
		err[i + 2] = '\0';
	}
	cJSON *att = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(rec, "attempts"), 2);
	cJSON_ReplaceItemInObjectCaseSensitive(att, "error", cJSON_CreateString(err));
	set_label(rec, "alertname", err + 1); /* cut at 200 bytes: even */
	set_label(rec, "instance", err);      /* odd */
	b = escalate_slack_body(rec, "trigger", "failed");
	char *txt = cJSON_PrintUnformatted(b);
	assert_true(valid_utf8(txt));
	/* still shows what fits */
	assert_non_null(strstr(section(b, 1), "*Last error:* x\xC3\xA9\xC3\xA9"));
	assert_true(strlen(section(b, 1)) < 3000); /* Block Kit's limit per section */
	free(txt);
	cJSON_Delete(b);

	/* a 3- and a 4-byte character cut anywhere */
	static const char *const wide[] = { "\xE2\x82\xAC", "\xF0\x9F\x94\xA5" }; /* euro, fire */
	for (size_t w = 0; w < ARRAY_SIZE(wide); w++) {
		for (size_t lead = 0; lead < 4; lead++) {
			size_t len = strlen(wide[w]), o = 0;
			for (; o < lead; o++)
				err[o] = 'y';
			while (o + len + 1 < sizeof(err)) {
				memcpy(err + o, wide[w], len);
				o += len;
			}
			err[o] = '\0';
			cJSON_ReplaceItemInObjectCaseSensitive(att, "error", cJSON_CreateString(err));
			set_label(rec, "alertname", err);
			b = escalate_slack_body(rec, "trigger", "failed");
			txt = cJSON_PrintUnformatted(b);
			assert_true(valid_utf8(txt));
			free(txt);
			cJSON_Delete(b);
		}
	}
	cJSON_Delete(rec);
}

/* ---- Grafana annotations ------------------------------------------------- */

#define GRAFANA "http://127.0.0.1:3000/"
#define GRAFANA_TOKEN "glsa_SECRETSECRET_0123"
#define T_START 1795954120123.0 /* 2026-11-29T12:08:40.123Z */
#define T_END 1795954130565.0   /* 2026-11-29T12:08:50.565Z */

static void configure_grafana(const char *uid)
{
	struct escalate_conf c = {
		.slack_url = SLACK_URL, .pd_routing_key = PD_KEY, .pd_url = PD_URL,
		.external_url = EXTERNAL, .retry_initial = 1, .retry_max = 300,
		.grafana_url = GRAFANA, .grafana_token = GRAFANA_TOKEN, .grafana_dashboard_uid = uid,
	};
	escalate_configure(&c);
}

/* The record when the job started, and when it ended. */
static cJSON *region_record(int ended)
{
	cJSON *rec = record();
	assert_non_null(cJSON_AddStringToObject(rec, "started_at", "2026-11-29T12:08:40.123Z"));
	assert_non_null(cJSON_AddNumberToObject(rec, "max_attempts", 3));
	if (!ended) {
		cJSON_DeleteItemFromObjectCaseSensitive(rec, "ended_at");
		cJSON_ReplaceItemInObjectCaseSensitive(rec, "outcome", cJSON_CreateNull());
	}
	return rec;
}

static void assert_tags(const cJSON *b, const char *const *want, int n)
{
	const cJSON *tags = obj(b, "tags");
	assert_int_equal(cJSON_GetArraySize(tags), n);
	for (int i = 0; i < n; i++)
		assert_string_equal(cJSON_GetArrayItem(tags, i)->valuestring, want[i]);
}

static void test_grafana_region_bodies(void **state)
{
	static const char *const start_tags[] = {"recoveryd", "playbook:settings-sync-recovery",
	                                         "alertname:SettingsSyncJobFailure"};
	static const char *const end_tags[] = {"recoveryd", "playbook:settings-sync-recovery",
	                                       "alertname:SettingsSyncJobFailure", "outcome:failed"};
	cJSON *rec = region_record(0), *b;
	const char *text;

	(void)state;
	configure_grafana(NULL);
	/* the start: a point in time, in milliseconds */
	b = escalate_grafana_body(rec, "started");
	assert_true(cJSON_IsNumber(obj(b, "time")));
	assert_near(obj(b, "time")->valuedouble, T_START, 0);
	assert_null(cJSON_GetObjectItemCaseSensitive(b, "timeEnd"));
	assert_null(cJSON_GetObjectItemCaseSensitive(b, "dashboardUID"));
	assert_tags(b, start_tags, 3);
	text = str(b, "text");
	assert_non_null(strstr(text, "is running playbook settings-sync-recovery for SettingsSyncJobFailure on "
	                             "settings-sync-job-7f9c"));
	assert_non_null(strstr(text, "<a href=\"" JOB_URL "\">job " JOB_ID "</a>"));
	cJSON_Delete(b);
	cJSON_Delete(rec);

	/* the end: both ends, the outcome, the attempts and the error */
	rec = region_record(1);
	b = escalate_grafana_body(rec, "ended");
	assert_near(obj(b, "time")->valuedouble, T_START, 0);
	assert_near(obj(b, "timeEnd")->valuedouble, T_END, 0);
	assert_tags(b, end_tags, 4);
	text = str(b, "text");
	assert_non_null(strstr(text, "ran playbook settings-sync-recovery for SettingsSyncJobFailure on "
	                             "settings-sync-job-7f9c: failed after 3 attempts (verify: " VERIFY ")"));
	assert_non_null(strstr(text, JOB_URL));
	cJSON_Delete(b);

	/* label values are text, not HTML; an end before the start is never sent */
	set_label(rec, "alertname", "<img src=x onerror=alert(1)>");
	cJSON_ReplaceItemInObjectCaseSensitive(rec, "ended_at", cJSON_CreateString("2026-11-29T12:08:30.000Z"));
	b = escalate_grafana_body(rec, "ended");
	assert_null(strstr(str(b, "text"), "<img"));
	assert_non_null(strstr(str(b, "text"), "&lt;img src=x onerror=alert(1)&gt;"));
	assert_near(obj(b, "timeEnd")->valuedouble, T_START, 0);
	cJSON_Delete(b);
	cJSON_Delete(rec);

	/* a dashboard: the annotation is placed on it */
	configure_grafana("jcIIG-07z");
	rec = region_record(0);
	b = escalate_grafana_body(rec, "started");
	assert_string_equal(str(b, "dashboardUID"), "jcIIG-07z");
	cJSON_Delete(b);
	cJSON_Delete(rec);
}

static void test_grafana_answer_id(void **state)
{
	char id[32];

	(void)state;
	assert_int_equal(escalate_grafana_id("{\"message\":\"Annotation added\",\"id\":1145}", id, sizeof(id)), 0);
	assert_string_equal(id, "1145");
	assert_int_equal(escalate_grafana_id("{\"id\": 9007199254740991}", id, sizeof(id)), 0);
	assert_string_equal(id, "9007199254740991");
	assert_int_equal(escalate_grafana_id("{\"message\":\"Annotation added\"}", id, sizeof(id)), -1);
	assert_int_equal(escalate_grafana_id("{\"id\":\"7\"}", id, sizeof(id)), -1);
	assert_int_equal(escalate_grafana_id("{\"id\":1.5}", id, sizeof(id)), -1);
	assert_int_equal(escalate_grafana_id("{\"id\":0}", id, sizeof(id)), -1);
	assert_int_equal(escalate_grafana_id("{\"id\":-3}", id, sizeof(id)), -1);
	assert_int_equal(escalate_grafana_id("ok", id, sizeof(id)), -1);
	assert_int_equal(escalate_grafana_id(NULL, id, sizeof(id)), -1);
	assert_int_equal(escalate_grafana_id("{\"id\":12345}", id, 3), -1); /* never cut */
}

static void test_grafana_wire(void **state)
{
	cJSON *rec = region_record(1), *b = NULL, *sent;
	char *payload, *url, *body, *auth;

	(void)state;
	configure_grafana("jcIIG-07z");
	b = escalate_grafana_body(rec, "ended");
	payload = cJSON_PrintUnformatted(b);
	assert_null(strstr(payload, GRAFANA_TOKEN)); /* what the journal holds */

	/* the start never got an id: one POST with both ends */
	assert_int_equal(escalate_grafana_wire(payload, NULL, &url, &body, &auth), 0);
	assert_string_equal(url, "http://127.0.0.1:3000/api/annotations");
	assert_string_equal(body, payload);
	assert_string_equal(auth, "Authorization: Bearer " GRAFANA_TOKEN);
	free(url);
	free(body);
	free(auth);

	/* the region's start has id 42: PATCH it, with the fields PATCH takes */
	assert_int_equal(escalate_grafana_wire(payload, "42", &url, &body, &auth), 0);
	assert_string_equal(url, "http://127.0.0.1:3000/api/annotations/42");
	assert_string_equal(auth, "Authorization: Bearer " GRAFANA_TOKEN);
	sent = cJSON_Parse(body);
	assert_non_null(sent);
	assert_null(cJSON_GetObjectItemCaseSensitive(sent, "dashboardUID"));
	cJSON_DeleteItemFromObjectCaseSensitive(b, "dashboardUID");
	assert_true(cJSON_Compare(sent, b, 1));
	cJSON_Delete(sent);
	free(url);
	free(body);
	free(auth);

	/* a journaled ref that is no id is not put in a path */
	url = body = auth = (char *)"x";
	assert_int_equal(escalate_grafana_wire(payload, "4/../2", &url, &body, &auth), -1);
	assert_null(url);
	assert_null(body);
	assert_null(auth);
	assert_int_equal(escalate_grafana_wire(payload, "", &url, &body, &auth), -1);

	/* not configured (any more): nothing to send */
	configure(1, 300);
	assert_false(escalate_sink_configured("grafana"));
	assert_int_equal(escalate_grafana_wire(payload, NULL, &url, &body, &auth), -1);
	assert_null(url);
	configure_grafana(NULL);
	assert_true(escalate_sink_configured("grafana"));
	/* never a default escalation sink: annotations do not page */
	const char **d = escalate_default_sinks();
	for (size_t i = 0; d[i]; i++)
		assert_string_not_equal(d[i], "grafana");
	free(d);

	/* Grafana's answers: 2xx done, 429 and 5xx again, other 4xx never */
	double delay;
	assert_int_equal(escalate_classify("grafana", CURLE_OK, 200, "{\"id\":1}", -1, 1, 0, &delay), ESC_DELIVERED);
	assert_int_equal(escalate_classify("grafana", CURLE_OK, 404, "{\"message\":\"Annotation not found\"}", -1,
	                                   1, 0, &delay), ESC_FAILED);
	assert_int_equal(escalate_classify("grafana", CURLE_OK, 401, "{\"message\":\"Unauthorized\"}", -1, 1, 0,
	                                   &delay), ESC_FAILED);
	assert_int_equal(escalate_classify("grafana", CURLE_OK, 429, "", 5, 1, 0, &delay), ESC_RETRY);
	assert_near(delay, 5, 0);
	assert_int_equal(escalate_classify("grafana", CURLE_OK, 503, "", -1, 1, 0, &delay), ESC_RETRY);

	free(payload);
	cJSON_Delete(b);
	cJSON_Delete(rec);
}

static void test_slack_start_notice(void **state)
{
	cJSON *rec = region_record(0), *b;

	(void)state;
	b = escalate_slack_body(rec, "notice", "started");
	assert_string_equal(str(b, "text"), "Recovery started: SettingsSyncJobFailure on settings-sync-job-7f9c - "
	                                    "recoveryd is running playbook settings-sync-recovery (up to 3 attempts)");
	assert_int_equal(cJSON_GetArraySize(obj(b, "blocks")), 2);
	assert_string_equal(section(b, 0), str(b, "text"));
	assert_trimmed_equal(section(b, 1), LINKS);
	cJSON_Delete(b);
	cJSON_Delete(rec);
}

/* ---- secrets --------------------------------------------------------------- */

static void test_secrets_only_on_the_wire(void **state)
{
	static const char *const kinds[] = { "trigger", "resolve", "notice" };
	cJSON *rec = record();
	char *url, *body;

	(void)state;
	for (size_t k = 0; k < ARRAY_SIZE(kinds); k++) {
		cJSON *pd = escalate_pagerduty_body(rec, kinds[k], "failed");
		cJSON *sl = escalate_slack_body(rec, kinds[k], "failed");
		char *pd_txt = cJSON_PrintUnformatted(pd), *sl_txt = cJSON_PrintUnformatted(sl);

		/* what the journal holds */
		assert_null(strstr(pd_txt, PD_KEY));
		assert_null(strstr(pd_txt, "routing_key"));
		assert_null(strstr(sl_txt, "T0SECRET"));
		assert_null(strstr(sl_txt, "hooks.slack.com"));
		assert_null(strstr(pd_txt, "hooks.slack.com"));
		assert_null(strstr(sl_txt, PD_KEY));

		/* what is sent: the routing key added to the same event */
		assert_int_equal(escalate_wire("pagerduty", pd_txt, &url, &body), 0);
		assert_string_equal(url, PD_URL);
		cJSON *sent = cJSON_Parse(body);
		assert_non_null(sent);
		assert_string_equal(str(sent, "routing_key"), PD_KEY);
		cJSON_DeleteItemFromObjectCaseSensitive(sent, "routing_key");
		assert_true(cJSON_Compare(sent, pd, 1));
		cJSON_Delete(sent);
		free(url);
		free(body);

		/* Slack: the URL is the secret; the body goes as journaled */
		assert_int_equal(escalate_wire("slack", sl_txt, &url, &body), 0);
		assert_string_equal(url, SLACK_URL);
		assert_string_equal(body, sl_txt);
		free(url);
		free(body);

		free(pd_txt);
		free(sl_txt);
		cJSON_Delete(pd);
		cJSON_Delete(sl);
	}
	cJSON_Delete(rec);

	/* a sink that is not configured any more: nothing to send */
	struct escalate_conf c = { .slack_url = SLACK_URL, .retry_initial = 1, .retry_max = 300 };
	escalate_configure(&c);
	url = body = (char *)"x";
	assert_int_equal(escalate_wire("pagerduty", "{\"event_action\":\"trigger\"}", &url, &body), -1);
	assert_null(url);
	assert_null(body);
	assert_int_equal(escalate_wire("email", "{}", &url, &body), -1);
	/* a journaled PagerDuty payload that is not JSON is not sent half-built */
	configure(1, 300);
	assert_int_equal(escalate_wire("pagerduty", "{not json", &url, &body), -1);
	assert_null(url);
	assert_null(body);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_classify_answers, setup),
		cmocka_unit_test_setup(test_backoff_doubles_to_the_cap_with_jitter, setup),
		cmocka_unit_test_setup(test_backoff_follows_the_settings, setup),
		cmocka_unit_test_setup(test_retry_after_is_honoured_and_capped, setup),
		cmocka_unit_test_setup(test_long_retry_after_never_shortens_the_backoff, setup),
		cmocka_unit_test_setup(test_sinks_and_job_url, setup),
		cmocka_unit_test_setup(test_pagerduty_trigger_body, setup),
		cmocka_unit_test_setup(test_pagerduty_fields_from_other_labels, setup),
		cmocka_unit_test_setup(test_pagerduty_summary_is_capped, setup),
		cmocka_unit_test_setup(test_pagerduty_resolve_body, setup),
		cmocka_unit_test_setup(test_slack_failure_body, setup),
		cmocka_unit_test_setup(test_slack_resolve_and_notice_bodies, setup),
		cmocka_unit_test_setup(test_slack_escapes_label_values, setup),
		cmocka_unit_test_setup(test_slack_caps_keep_utf8_whole, setup),
		cmocka_unit_test_setup(test_secrets_only_on_the_wire, setup),
		cmocka_unit_test_setup(test_grafana_region_bodies, setup),
		cmocka_unit_test_setup(test_grafana_answer_id, setup),
		cmocka_unit_test_setup(test_grafana_wire, setup),
		cmocka_unit_test_setup(test_slack_start_notice, setup),
	};
	return cmocka_run_group_tests(tests, NULL, teardown_all);
}

/* Unit tests for src/alert.c: the Alertmanager 0.25 fixtures, the fingerprint
 * (reproduced from Alertmanager's own values), and every kind of bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "recoveryd/alert.h"
#include "recoveryd/common.h"

#ifndef FIXTURES_DIR
#error "FIXTURES_DIR must point at tests/fixtures"
#endif

/* Parse from an exact-size heap copy without a NUL so ASan catches any read
 * past len. */
static enum alert_result parse_buf(const char *s, size_t len, int flags, struct payload *p,
                                   char *err, size_t errlen)
{
	char *copy = malloc(len ? len : 1);
	enum alert_result r;

	assert_non_null(copy);
	memcpy(copy, s, len);
	r = alert_parse(copy, len, flags, p, err, errlen);
	free(copy);
	return r;
}

static enum alert_result parse_str(const char *s, int flags, struct payload *p, char *err,
                                   size_t errlen)
{
	return parse_buf(s, strlen(s), flags, p, err, errlen);
}

static char *load_fixture(const char *name, size_t *len)
{
	char path[512];
	char *buf;

	snprintf(path, sizeof(path), "%s/%s", FIXTURES_DIR, name);
	buf = rd_read_file(path, 1 << 20, len, 0);
	if (!buf)
		fail_msg("cannot read fixture %s", path);
	return buf;
}

static void parse_fixture(const char *name, struct payload *p)
{
	char err[256];
	size_t len;
	char *body = load_fixture(name, &len);
	enum alert_result r = parse_buf(body, len, 0, p, err, sizeof(err));

	if (r != ALERT_OK)
		fail_msg("%s: %s", name, err);
	free(body);
}

static void assert_parse_fails(const char *body, int flags, enum alert_result want,
                               const char *fragment)
{
	struct payload p;
	char err[256] = "";
	enum alert_result r = parse_str(body, flags, &p, err, sizeof(err));

	if (r != want)
		fail_msg("body %s: result %d, want %d (err: %s)", body, r, want, err);
	if (!strstr(err, fragment))
		fail_msg("body %s: error \"%s\" lacks \"%s\"", body, err, fragment);
	/* On failure the payload is left empty and freeing it again is safe. */
	assert_int_equal(p.n_alerts, 0);
	assert_null(p.alerts);
	payload_free(&p);
}

static const char *raw_str(const struct alert *a, const char *key)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(a->raw, key);

	assert_true(cJSON_IsString(it));
	return it->valuestring;
}

static void test_firing_single(void **state)
{
	struct payload p;
	const struct alert *a;
	char fp[17];
	(void)state;

	parse_fixture("firing-single.json", &p);
	assert_int_equal(p.manual, 0);
	assert_int_equal(p.resolved, 0);
	assert_string_equal(p.receiver, "recovery");
	assert_string_equal(p.group_key, "{}:{alertname=\"SettingsSyncJobFailure\"}");
	assert_string_equal(p.external_url, "http://127.0.0.1:19093");
	assert_string_equal(p.reason, "");
	assert_int_equal(p.truncated, 0);
	assert_int_equal(p.n_alerts, 1);

	a = &p.alerts[0];
	assert_int_equal(a->resolved, 0);
	assert_int_equal(a->labels.n, 5);
	assert_string_equal(a->labels.v[0].name, "alertname");
	assert_string_equal(a->labels.v[4].name, "severity");
	assert_string_equal(labels_get(&a->labels, "alertname"), "SettingsSyncJobFailure");
	assert_string_equal(labels_get(&a->labels, "instance"), "settings-sync-job-7f9c");
	assert_null(labels_get(&a->labels, "namespace"));
	assert_int_equal(a->annotations.n, 3);
	assert_string_equal(labels_get(&a->annotations, "runbook_url"),
	                    "https://runbooks.example.invalid/SettingsSyncJobFailure");
	assert_string_equal(a->starts_at, "2026-11-29T10:45:43.885Z");
	assert_string_equal(a->ends_at, "0001-01-01T00:00:00Z");
	/* The fixture has "\u0026" (Go's escape of '&'): it must arrive decoded. */
	assert_string_equal(a->generator_url,
	                    "http://127.0.0.1:9090/graph?g0.expr=up%7Bjob%3D%22settings-sync-job%22"
	                    "%7D+%3D%3D+0&g0.tab=1");
	assert_string_equal(a->fingerprint, "38b819126bb9adce");
	labels_fingerprint(&a->labels, fp);
	assert_string_equal(fp, "38b819126bb9adce");

	/* raw: the normalised alert. */
	assert_true(cJSON_IsObject(a->raw));
	assert_string_equal(raw_str(a, "status"), "firing");
	assert_string_equal(raw_str(a, "fingerprint"), "38b819126bb9adce");
	assert_string_equal(raw_str(a, "generatorURL"), a->generator_url);
	assert_string_equal(raw_str(a, "startsAt"), a->starts_at);
	assert_string_equal(raw_str(a, "endsAt"), a->ends_at);
	assert_string_equal(
		cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(a->raw, "labels"),
		                                 "job")->valuestring,
		"settings-sync-job");
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(a->raw, "annotations")),
	                 3);
	payload_free(&p);
	payload_free(&p); /* idempotent */
}

static void test_firing_critical(void **state)
{
	struct payload p;
	(void)state;

	parse_fixture("firing-critical.json", &p);
	assert_int_equal(p.n_alerts, 1);
	assert_string_equal(labels_get(&p.alerts[0].labels, "severity"), "critical");
	assert_string_equal(labels_get(&p.alerts[0].labels, "alertname"),
	                    "EventValidationFailureSpike");
	assert_string_equal(p.alerts[0].fingerprint, "fcc06a8620c88f68");
	assert_non_null(strstr(p.alerts[0].generator_url, "0&g0.tab=1"));
	payload_free(&p);
}

static void test_firing_grouped(void **state)
{
	static const char *const inst[] = { "gw-1", "gw-2", "gw-3" };
	static const char *const fps[] = { "ac763dc0c7007516", "678b6cee1d35cc9f",
		                           "e82159be3b9c7d44" };
	struct payload p;
	(void)state;

	parse_fixture("firing-grouped.json", &p);
	assert_int_equal(p.resolved, 0);
	assert_int_equal(p.n_alerts, 3);
	for (size_t i = 0; i < 3; i++) {
		assert_string_equal(labels_get(&p.alerts[i].labels, "instance"), inst[i]);
		assert_string_equal(labels_get(&p.alerts[i].labels, "alertname"),
		                    "GatewayLatencyHigh");
		assert_string_equal(p.alerts[i].fingerprint, fps[i]);
		assert_int_equal(p.alerts[i].resolved, 0);
	}
	payload_free(&p);
}

static void test_resolved(void **state)
{
	struct payload p;
	(void)state;

	parse_fixture("resolved.json", &p);
	assert_int_equal(p.resolved, 1);
	assert_int_equal(p.n_alerts, 1);
	assert_int_equal(p.alerts[0].resolved, 1);
	assert_string_equal(p.alerts[0].ends_at, "2026-11-29T10:45:46Z");
	/* Same label set as firing-single: same fingerprint across the episode. */
	assert_string_equal(p.alerts[0].fingerprint, "38b819126bb9adce");
	assert_string_equal(raw_str(&p.alerts[0], "status"), "resolved");
	payload_free(&p);
}

static void test_truncated(void **state)
{
	struct payload p;
	(void)state;

	parse_fixture("truncated.json", &p);
	assert_string_equal(p.receiver, "recovery-truncated");
	assert_int_equal(p.truncated, 3);
	assert_int_equal(p.n_alerts, 2);
	for (size_t i = 0; i < p.n_alerts; i++) {
		assert_string_equal(labels_get(&p.alerts[i].labels, "alertname"),
		                    "GatewayLatencyHigh");
		assert_string_equal(labels_get(&p.alerts[i].labels, "capture"), "truncation");
	}
	assert_string_equal(p.alerts[0].fingerprint, "dd5aa200fbc9a131");
	assert_string_equal(p.alerts[1].fingerprint, "20f75d9f48b09cac");
	payload_free(&p);
}

/* The key proof: labels_fingerprint over each fixture alert's labels gives
 * exactly the fingerprint Alertmanager put in the body. */
static void test_fingerprint_matches_alertmanager(void **state)
{
	static const char *const files[] = { "firing-single.json", "firing-critical.json",
		                             "firing-grouped.json", "resolved.json",
		                             "truncated.json" };
	size_t checked = 0;
	(void)state;

	for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
		struct payload p;

		parse_fixture(files[f], &p);
		for (size_t i = 0; i < p.n_alerts; i++) {
			char fp[17];

			labels_fingerprint(&p.alerts[i].labels, fp);
			if (strcmp(fp, p.alerts[i].fingerprint) != 0)
				fail_msg("%s alert %zu: computed %s, Alertmanager sent %s", files[f], i,
				         fp, p.alerts[i].fingerprint);
			checked++;
		}
		payload_free(&p);
	}
	assert_int_equal(checked, 8);
}

static void test_fingerprint_computed_when_absent(void **state)
{
	struct payload p;
	char err[256];
	struct labels empty = { 0, NULL };
	char fp[17];
	(void)state;

	/* The firing-single alert without its fingerprint, labels out of order. */
	assert_int_equal(
		parse_str("{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{\"status\":\"firing\","
		          "\"labels\":{\"severity\":\"warning\",\"job\":\"settings-sync-job\","
		          "\"instance\":\"settings-sync-job-7f9c\",\"component\":\"settings-sync-job\","
		          "\"alertname\":\"SettingsSyncJobFailure\"},\"startsAt\":\"x\",\"endsAt\":\"y\","
		          "\"generatorURL\":\"\"}]}",
		          0, &p, err, sizeof(err)),
		ALERT_OK);
	assert_string_equal(p.alerts[0].labels.v[0].name, "alertname");
	assert_string_equal(p.alerts[0].labels.v[1].name, "component");
	assert_string_equal(p.alerts[0].labels.v[4].name, "severity");
	assert_string_equal(p.alerts[0].fingerprint, "38b819126bb9adce");
	assert_int_equal(p.alerts[0].annotations.n, 0);
	assert_string_equal(p.receiver, "");
	assert_string_equal(p.group_key, "");
	payload_free(&p);

	/* Empty set: the FNV-1a offset basis, as model.emptyLabelSignature. */
	labels_fingerprint(&empty, fp);
	assert_string_equal(fp, "cbf29ce484222325");

	/* Upper-case hex is accepted and normalised. */
	assert_int_equal(parse_str("{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{"
	                           "\"status\":\"firing\",\"labels\":{\"a\":\"b\"},"
	                           "\"startsAt\":\"\",\"endsAt\":\"\",\"generatorURL\":\"\","
	                           "\"fingerprint\":\"ABCDEF0123456789\"}]}",
	                           0, &p, err, sizeof(err)),
	                 ALERT_OK);
	assert_string_equal(p.alerts[0].fingerprint, "abcdef0123456789");
	payload_free(&p);
}

static void test_trailing_newline_and_unknown_fields(void **state)
{
	struct payload p;
	char err[256];
	const char *body = "{\"version\":\"4\",\"status\":\"firing\",\"receiver\":\"a\\\\.b\","
	                   "\"notification_reason\":\"first notification\",\"routeLabels\":{},"
	                   "\"truncatedAlerts\":0,\"alerts\":[{\"status\":\"firing\","
	                   "\"labels\":{\"alertname\":\"X\"},\"annotations\":{},"
	                   "\"startsAt\":\"s\",\"endsAt\":\"e\",\"generatorURL\":\"g\","
	                   "\"extra\":[1,2]}]}\n";
	(void)state;

	assert_int_equal(parse_str(body, 0, &p, err, sizeof(err)), ALERT_OK);
	assert_string_equal(p.receiver, "a\\.b");
	assert_int_equal(p.n_alerts, 1);
	payload_free(&p);

	/* Whitespace of every JSON kind after the value is fine. */
	assert_int_equal(parse_str("{\"labels\":{\"a\":\"b\"}} \r\n\t\n", ALERT_ALLOW_MANUAL, &p,
	                           err, sizeof(err)),
	                 ALERT_OK);
	payload_free(&p);
}

static void test_unicode_escapes(void **state)
{
	struct payload p;
	char err[256];
	(void)state;

	assert_int_equal(parse_str("{\"labels\":{\"alertname\":\"a\\u0026b\\u003c\\u00e9"
	                           "\\ud83d\\ude00\"},\"generatorURL\":\"http://p/g?x=1\\u0026y=2\"}",
	                           ALERT_ALLOW_MANUAL, &p, err, sizeof(err)),
	                 ALERT_OK);
	assert_string_equal(labels_get(&p.alerts[0].labels, "alertname"),
	                    "a&b<\xc3\xa9\xf0\x9f\x98\x80");
	assert_string_equal(p.alerts[0].generator_url, "http://p/g?x=1&y=2");
	payload_free(&p);
}

static void test_manual_form(void **state)
{
	struct payload p;
	char err[256];
	const struct alert *a;
	(void)state;

	assert_int_equal(parse_str("{\"labels\":{\"namespace\":\"prod\",\"alertname\":\"KongDown\"},"
	                           "\"annotations\":{\"summary\":\"by hand\"},"
	                           "\"reason\":\"on-call: proxy stuck\"}",
	                           ALERT_ALLOW_MANUAL, &p, err, sizeof(err)),
	                 ALERT_OK);
	assert_int_equal(p.manual, 1);
	assert_int_equal(p.resolved, 0);
	assert_string_equal(p.reason, "on-call: proxy stuck");
	assert_string_equal(p.receiver, "");
	assert_string_equal(p.group_key, "");
	assert_string_equal(p.external_url, "");
	assert_int_equal(p.n_alerts, 1);
	a = &p.alerts[0];
	assert_int_equal(a->resolved, 0);
	assert_string_equal(a->labels.v[0].name, "alertname"); /* sorted */
	assert_string_equal(a->labels.v[1].name, "namespace");
	assert_string_equal(labels_get(&a->annotations, "summary"), "by hand");
	assert_string_equal(a->starts_at, "");
	assert_string_equal(a->ends_at, "");
	assert_string_equal(a->generator_url, "");
	assert_int_equal(strlen(a->fingerprint), 16);
	{
		char fp[17];
		labels_fingerprint(&a->labels, fp);
		assert_string_equal(a->fingerprint, fp);
	}
	assert_string_equal(raw_str(a, "status"), "firing");
	payload_free(&p);

	/* A single alert object, as `recoveryd run --alert` may be given. */
	assert_int_equal(parse_str("{\"status\":\"resolved\",\"labels\":{\"alertname\":\"X\"},"
	                           "\"startsAt\":\"2026-01-01T00:00:00Z\","
	                           "\"generatorURL\":\"http://g\",\"fingerprint\":\"0123456789abcdef\"}",
	                           ALERT_ALLOW_MANUAL, &p, err, sizeof(err)),
	                 ALERT_OK);
	assert_int_equal(p.manual, 1);
	assert_int_equal(p.resolved, 1);
	assert_int_equal(p.alerts[0].resolved, 1);
	assert_string_equal(p.reason, "");
	assert_string_equal(p.alerts[0].starts_at, "2026-01-01T00:00:00Z");
	assert_string_equal(p.alerts[0].generator_url, "http://g");
	assert_string_equal(p.alerts[0].fingerprint, "0123456789abcdef");
	payload_free(&p);

	/* The v4 form is still accepted with the manual flag. */
	{
		size_t len;
		char *body = load_fixture("firing-grouped.json", &len);
		assert_int_equal(parse_buf(body, len, ALERT_ALLOW_MANUAL, &p, err, sizeof(err)),
		                 ALERT_OK);
		assert_int_equal(p.manual, 0);
		assert_int_equal(p.n_alerts, 3);
		payload_free(&p);
		free(body);
	}
}

static void test_invalid_inputs(void **state)
{
	static const struct {
		const char *body;
		int flags;
		enum alert_result want;
		const char *fragment;
	} cases[] = {
		/* not JSON */
		{ "", 0, ALERT_INVALID_JSON, "invalid JSON" },
		{ "not json", 0, ALERT_INVALID_JSON, "invalid JSON" },
		{ "{\"version\":\"4\"", 0, ALERT_INVALID_JSON, "invalid JSON" },
		{ "{\"version\":\"4\"} x", 0, ALERT_INVALID_JSON, "after the JSON value at byte 16" },
		{ "{}{}", 0, ALERT_INVALID_JSON, "after the JSON value" },
		/* JSON but not the schema */
		{ "[]", 0, ALERT_INVALID_PAYLOAD, "expected a JSON object, got array" },
		{ "\"x\"", 0, ALERT_INVALID_PAYLOAD, "expected a JSON object, got string" },
		{ "{\"status\":\"firing\",\"alerts\":[]}", 0, ALERT_INVALID_PAYLOAD,
		  "version: missing" },
		{ "{\"version\":4,\"status\":\"firing\",\"alerts\":[]}", 0, ALERT_INVALID_PAYLOAD,
		  "version: expected a string, got number" },
		{ "{\"version\":\"5\",\"status\":\"firing\",\"alerts\":[]}", 0, ALERT_INVALID_PAYLOAD,
		  "version: expected \"4\", got \"5\"" },
		{ "{\"version\":\"4\",\"alerts\":[]}", 0, ALERT_INVALID_PAYLOAD, "status: missing" },
		{ "{\"version\":\"4\",\"status\":\"pending\",\"alerts\":[]}", 0, ALERT_INVALID_PAYLOAD,
		  "status: expected \"firing\" or \"resolved\", got \"pending\"" },
		{ "{\"version\":\"4\",\"status\":\"firing\"}", 0, ALERT_INVALID_PAYLOAD,
		  "alerts: missing" },
		{ "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":{}}", 0, ALERT_INVALID_PAYLOAD,
		  "alerts: expected an array, got object" },
		{ "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[]}", 0, ALERT_INVALID_PAYLOAD,
		  "alerts: empty array" },
		{ "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[1]}", 0, ALERT_INVALID_PAYLOAD,
		  "alerts[0]: expected an object, got number" },
		{ "{\"version\":\"4\",\"status\":\"firing\",\"receiver\":7,\"alerts\":[]}", 0,
		  ALERT_INVALID_PAYLOAD, "receiver: expected a string, got number" },
		{ "{\"version\":\"4\",\"status\":\"firing\",\"truncatedAlerts\":-1,\"alerts\":[]}", 0,
		  ALERT_INVALID_PAYLOAD, "truncatedAlerts: expected a non-negative integer" },
		{ "{\"version\":\"4\",\"status\":\"firing\",\"truncatedAlerts\":\"3\",\"alerts\":[]}",
		  0, ALERT_INVALID_PAYLOAD, "truncatedAlerts: expected a number, got string" },
		/* per-alert */
		{ "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{\"status\":\"firing\","
		  "\"labels\":{\"a\":\"b\"},\"startsAt\":\"\",\"endsAt\":\"\",\"generatorURL\":\"\"},"
		  "{\"status\":\"firing\",\"labels\":{\"job\":5},\"startsAt\":\"\",\"endsAt\":\"\","
		  "\"generatorURL\":\"\"}]}",
		  0, ALERT_INVALID_PAYLOAD, "alerts[1].labels.job: expected a string, got number" },
		{ "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{\"status\":\"firing\","
		  "\"labels\":{\"1job\":\"x\"},\"startsAt\":\"\",\"endsAt\":\"\",\"generatorURL\":\"\"}]}",
		  0, ALERT_INVALID_PAYLOAD, "alerts[0].labels: invalid label name \"1job\"" },
		{ "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{\"status\":\"firing\","
		  "\"labels\":{\"a-b\":\"x\"},\"startsAt\":\"\",\"endsAt\":\"\",\"generatorURL\":\"\"}]}",
		  0, ALERT_INVALID_PAYLOAD, "invalid label name \"a-b\"" },
		{ "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{\"status\":\"firing\","
		  "\"labels\":{},\"startsAt\":\"\",\"endsAt\":\"\",\"generatorURL\":\"\"}]}",
		  0, ALERT_INVALID_PAYLOAD, "alerts[0].labels: must contain at least one label" },
		{ "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{\"status\":\"firing\","
		  "\"startsAt\":\"\",\"endsAt\":\"\",\"generatorURL\":\"\"}]}",
		  0, ALERT_INVALID_PAYLOAD, "alerts[0].labels: missing" },
		{ "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{\"status\":\"firing\","
		  "\"labels\":[],\"startsAt\":\"\",\"endsAt\":\"\",\"generatorURL\":\"\"}]}",
		  0, ALERT_INVALID_PAYLOAD, "alerts[0].labels: expected an object, got array" },
		{ "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{\"status\":\"firing\","
		  "\"labels\":{\"a\":\"b\",\"a\":\"c\"},\"startsAt\":\"\",\"endsAt\":\"\","
		  "\"generatorURL\":\"\"}]}",
		  0, ALERT_INVALID_PAYLOAD, "alerts[0].labels: duplicate name \"a\"" },
		{ "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{\"status\":\"firing\","
		  "\"labels\":{\"a\":\"\xff\"},\"startsAt\":\"\",\"endsAt\":\"\",\"generatorURL\":\"\"}]}",
		  0, ALERT_INVALID_PAYLOAD, "alerts[0].labels.a: value is not valid UTF-8" },
		{ "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{\"status\":\"firing\","
		  "\"labels\":{\"a\":\"b\"},\"annotations\":{\"s\":true},\"startsAt\":\"\","
		  "\"endsAt\":\"\",\"generatorURL\":\"\"}]}",
		  0, ALERT_INVALID_PAYLOAD, "alerts[0].annotations.s: expected a string, got boolean" },
		{ "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{\"labels\":{\"a\":\"b\"},"
		  "\"startsAt\":\"\",\"endsAt\":\"\",\"generatorURL\":\"\"}]}",
		  0, ALERT_INVALID_PAYLOAD, "alerts[0].status: missing" },
		{ "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{\"status\":\"ok\","
		  "\"labels\":{\"a\":\"b\"},\"startsAt\":\"\",\"endsAt\":\"\",\"generatorURL\":\"\"}]}",
		  0, ALERT_INVALID_PAYLOAD, "alerts[0].status: expected \"firing\" or \"resolved\"" },
		{ "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{\"status\":\"firing\","
		  "\"labels\":{\"a\":\"b\"},\"endsAt\":\"\",\"generatorURL\":\"\"}]}",
		  0, ALERT_INVALID_PAYLOAD, "alerts[0].startsAt: missing" },
		{ "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{\"status\":\"firing\","
		  "\"labels\":{\"a\":\"b\"},\"startsAt\":1,\"endsAt\":\"\",\"generatorURL\":\"\"}]}",
		  0, ALERT_INVALID_PAYLOAD, "alerts[0].startsAt: expected a string, got number" },
		{ "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{\"status\":\"firing\","
		  "\"labels\":{\"a\":\"b\"},\"startsAt\":\"\",\"endsAt\":\"\",\"generatorURL\":\"\","
		  "\"fingerprint\":\"xyz\"}]}",
		  0, ALERT_INVALID_PAYLOAD, "alerts[0].fingerprint: expected 16 hexadecimal digits" },
		{ "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{\"status\":\"firing\","
		  "\"labels\":{\"a\":\"b\"},\"startsAt\":\"\",\"endsAt\":\"\",\"generatorURL\":\"\","
		  "\"fingerprint\":\"0123456789abcdef0\"}]}",
		  0, ALERT_INVALID_PAYLOAD, "alerts[0].fingerprint: expected 16 hexadecimal digits" },
		/* manual form */
		{ "{\"labels\":{\"a\":\"b\"}}", 0, ALERT_INVALID_PAYLOAD, "version: missing" },
		{ "{\"annotations\":{},\"reason\":\"x\"}", ALERT_ALLOW_MANUAL, ALERT_INVALID_PAYLOAD,
		  "labels: missing" },
		{ "{\"labels\":{}}", ALERT_ALLOW_MANUAL, ALERT_INVALID_PAYLOAD,
		  "labels: must contain at least one label" },
		{ "{\"labels\":{\"ok\":\"x\",\"bad.name\":\"y\"}}", ALERT_ALLOW_MANUAL,
		  ALERT_INVALID_PAYLOAD, "labels: invalid label name \"bad.name\"" },
		{ "{\"labels\":{\"a\":\"b\"},\"reason\":3}", ALERT_ALLOW_MANUAL, ALERT_INVALID_PAYLOAD,
		  "reason: expected a string, got number" },
		{ "{\"labels\":{\"a\":\"b\"},\"status\":\"done\"}", ALERT_ALLOW_MANUAL,
		  ALERT_INVALID_PAYLOAD, "status: expected \"firing\" or \"resolved\", got \"done\"" },
		{ "[{\"labels\":{\"a\":\"b\"}}]", ALERT_ALLOW_MANUAL, ALERT_INVALID_PAYLOAD,
		  "expected a JSON object, got array" },
	};
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_parse_fails(cases[i].body, cases[i].flags, cases[i].want, cases[i].fragment);
}

/* Build a v4 body with n alerts, each with nlabels labels. */
static char *make_body(size_t n, size_t nlabels)
{
	size_t cap = 256 + n * (160 + nlabels * 24), o = 0;
	char *b = malloc(cap);

	assert_non_null(b);
	o += (size_t)snprintf(b + o, cap - o, "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[");
	for (size_t i = 0; i < n; i++) {
		o += (size_t)snprintf(b + o, cap - o, "%s{\"status\":\"firing\",\"labels\":{",
		                      i ? "," : "");
		for (size_t l = 0; l < nlabels; l++)
			o += (size_t)snprintf(b + o, cap - o, "%s\"l%zu\":\"%zu\"", l ? "," : "", l, i);
		o += (size_t)snprintf(b + o, cap - o,
		                      "},\"startsAt\":\"\",\"endsAt\":\"\",\"generatorURL\":\"\"}");
	}
	snprintf(b + o, cap - o, "]}\n");
	assert_true(strlen(b) < cap - 1);
	return b;
}

/* Finding 6 of the security review: a NUL (\u0000, or a raw 0 byte) cut a
 * label short, so "settings\u0000evil" matched ns="settings" and took the
 * genuine alert's dedup key. Refused, naming the field. */
static void test_nul_refused(void **state)
{
#define V4(labels) "{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{\"status\":\"firing\"," \
	           "\"labels\":" labels "}]}"
	static const struct {
		const char *body;
		int flags;
		const char *fragment;
	} cases[] = {
		{ V4("{\"alertname\":\"A\",\"ns\":\"settings\\u0000evil\"}"), 0, "\"ns\"" },
		{ V4("{\"alertname\":\"A\",\"ns\":\"settings\\u0000evil\"}"), 0, "NUL" },
		{ V4("{\"alertname\":\"A\",\"x\\u0000a\":\"1\",\"x\\u0000b\":\"2\"}"), 0, "NUL" },
		{ V4("{\"a\\u0000b\":\"1\"}"), 0, "NUL" },
		{ "{\"labels\":{\"alertname\":\"A\\u0000\"},\"reason\":\"r\"}", ALERT_ALLOW_MANUAL, "\"alertname\"" },
		{ "{\"labels\":{\"alertname\":\"A\"},\"reason\":\"r\\u0000x\"}", ALERT_ALLOW_MANUAL, "\"reason\"" },
		{ V4("{\"alertname\":\"A\"},\"annotations\":{\"summary\":\"\\u0000\"}"), 0, "\"summary\"" },
	};
#undef V4
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_parse_fails(cases[i].body, cases[i].flags, ALERT_INVALID_PAYLOAD, cases[i].fragment);

	/* A raw 0 byte inside a string, and an escaped backslash before u0000
	 * (which is the text \u0000, not a NUL). */
	{
		static const char raw[] = "{\"labels\":{\"alertname\":\"A\0B\"},\"reason\":\"r\"}";
		struct payload p;
		char err[256] = "";
		assert_int_not_equal(parse_buf(raw, sizeof(raw) - 1, ALERT_ALLOW_MANUAL, &p, err, sizeof(err)),
		                     ALERT_OK);
		assert_non_null(strstr(err, "NUL"));
		payload_free(&p);

		const char *ok = "{\"labels\":{\"alertname\":\"A\\\\u0000\"},\"reason\":\"r\"}";
		assert_int_equal(parse_str(ok, ALERT_ALLOW_MANUAL, &p, err, sizeof(err)), ALERT_OK);
		assert_string_equal(p.alerts[0].labels.v[0].value, "A\\u0000");
		payload_free(&p);
	}
}

static void test_caps(void **state)
{
	struct payload p;
	char err[256];
	char *body;
	(void)state;

	body = make_body(1000, 1);
	assert_int_equal(parse_str(body, 0, &p, err, sizeof(err)), ALERT_OK);
	assert_int_equal(p.n_alerts, 1000);
	assert_string_equal(labels_get(&p.alerts[999].labels, "l0"), "999");
	payload_free(&p);
	free(body);

	body = make_body(1001, 1);
	assert_parse_fails(body, 0, ALERT_INVALID_PAYLOAD, "alerts: too many alerts (1001, at most 1000)");
	free(body);

	body = make_body(1, 128);
	assert_int_equal(parse_str(body, 0, &p, err, sizeof(err)), ALERT_OK);
	assert_int_equal(p.alerts[0].labels.n, 128);
	/* Byte-order sort: l0 < l1 < l10 < l100 ... */
	assert_string_equal(p.alerts[0].labels.v[2].name, "l10");
	payload_free(&p);
	free(body);

	body = make_body(1, 129);
	assert_parse_fails(body, 0, ALERT_INVALID_PAYLOAD,
	                   "alerts[0].labels: too many entries (129, at most 128)");
	free(body);
}

static void test_err_buffer_small(void **state)
{
	struct payload p;
	char err[8];
	(void)state;

	/* A short buffer truncates the message but never overflows it. */
	assert_int_equal(parse_str("[]", 0, &p, err, sizeof(err)), ALERT_INVALID_PAYLOAD);
	assert_int_equal(strlen(err), sizeof(err) - 1);
	assert_int_equal(parse_str("[]", 0, &p, NULL, 0), ALERT_INVALID_PAYLOAD);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_firing_single),
		cmocka_unit_test(test_firing_critical),
		cmocka_unit_test(test_firing_grouped),
		cmocka_unit_test(test_resolved),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_fingerprint_matches_alertmanager),
		cmocka_unit_test(test_fingerprint_computed_when_absent),
		cmocka_unit_test(test_trailing_newline_and_unknown_fields),
		cmocka_unit_test(test_unicode_escapes),
		cmocka_unit_test(test_manual_form),
		cmocka_unit_test(test_invalid_inputs),
		cmocka_unit_test(test_nul_refused),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_err_buffer_small),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

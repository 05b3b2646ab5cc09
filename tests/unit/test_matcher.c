/* Unit tests for src/matcher.c: Alertmanager matcher text form, table driven. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "recoveryd/matcher.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Labels from "name=value|name=value" (values may hold any byte but '|'). */
struct lbuf {
	char text[256];
	struct label v[16];
	struct labels ls;
};

static const struct labels *mklabels(struct lbuf *b, const char *spec)
{
	char *save = NULL, *tok;

	memset(b, 0, sizeof(*b));
	b->ls.v = b->v;
	snprintf(b->text, sizeof(b->text), "%s", spec);
	for (tok = strtok_r(b->text, "|", &save); tok; tok = strtok_r(NULL, "|", &save)) {
		char *eq = strchr(tok, '=');

		assert_non_null(eq);
		assert_true(b->ls.n < ARRAY_SIZE(b->v));
		*eq = '\0';
		b->v[b->ls.n].name = tok;
		b->v[b->ls.n].value = eq + 1;
		b->ls.n++;
	}
	return &b->ls;
}

struct match_case {
	const char *matcher;
	const char *labels; /* "name=value|name=value" */
	bool want;
};

static void check_matches(const struct match_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct matcher_set *ms = matcher_set_new();
		struct lbuf lb;
		char err[256];

		assert_non_null(ms);
		if (matcher_set_add(ms, cases[i].matcher, err, sizeof(err)) != 0)
			fail_msg("case %zu %s: unexpected error: %s", i, cases[i].matcher, err);
		if (matcher_set_matches(ms, mklabels(&lb, cases[i].labels)) != cases[i].want)
			fail_msg("case %zu: %s against {%s}: want %s", i, cases[i].matcher,
			         cases[i].labels, cases[i].want ? "match" : "no match");
		matcher_set_free(ms);
	}
}

static void test_match_table(void **state)
{
	static const struct match_case cases[] = {
		/* = */
		{ "alertname=\"SettingsSyncJobFailure\"", "alertname=SettingsSyncJobFailure|job=x", true },
		{ "alertname=\"SettingsSyncJobFailure\"", "alertname=SettingsSyncJobFailures", false },
		{ "alertname=SettingsSyncJobFailure", "alertname=SettingsSyncJobFailure", true },
		{ "  alertname  =  \"X\"  ", "alertname=X", true },
		{ "alertname=\"x\"", "alertname=X", false },
		/* != */
		{ "severity!=\"critical\"", "severity=warning", true },
		{ "severity!=\"critical\"", "severity=critical", false },
		{ "severity!=critical", "alertname=X", true }, /* missing label is "" */
		/* =~ is fully anchored */
		{ "env=~\"prod\"", "env=prod", true },
		{ "env=~\"prod\"", "env=prod-eu", false },
		{ "env=~\"prod\"", "env=xprod", false },
		{ "env=~\"prod.*\"", "env=prod-eu", true },
		{ "env=~\"prod|staging\"", "env=staging", true },
		{ "env=~\"prod|staging\"", "env=prod-staging", false },
		{ "env=~\"prod|staging\"", "env=prodx", false },
		{ "env=~prod", "env=prod", true },
		/* !~ */
		{ "env!~\"prod\"", "env=prod-eu", true },
		{ "env!~\"prod\"", "env=prod", false },
		{ "env!~\"x\"", "alertname=A", true }, /* missing label */
		/* missing label equals "" */
		{ "foo=\"\"", "alertname=A", true },
		{ "foo=\"\"", "foo=bar", false },
		{ "foo!=\"\"", "alertname=A", false },
		{ "foo!=\"\"", "foo=bar", true },
		{ "foo=~\".*\"", "alertname=A", true },
		{ "foo=~\".+\"", "alertname=A", false },
		{ "foo=\"bar\"", "", false },
		/* \d \w \s and friends, outside and inside brackets */
		{ "code=~\"5\\\\d\\\\d\"", "code=503", true },
		{ "code=~\"5\\\\d\\\\d\"", "code=5xx", false },
		{ "code=~\"5\\\\d\\\\d\"", "code=5033", false },
		{ "code=~\"\\\\D+\"", "code=abc", true },
		{ "code=~\"\\\\D+\"", "code=ab1", false },
		{ "host=~\"\\\\w+-\\\\d\"", "host=web_a-1", true },
		{ "host=~\"\\\\W\"", "host=-", true },
		{ "host=~\"\\\\W\"", "host=a", false },
		{ "x=~\"a\\\\sb\"", "x=a b", true },
		{ "x=~\"\\\\S+\"", "x=a b", false },
		{ "x=~\"[\\\\d.]+\"", "x=1.2.3", true },
		{ "x=~\"[\\\\d.]+\"", "x=1a", false },
		{ "x=~\"[^\\\\d]\"", "x=a", true },
		{ "x=~\"[^\\\\d]\"", "x=7", false },
		{ "x=~\"[\\\\w-]+\"", "x=kong-proxy_1", true },
		/* RE2 (Go regexp) syntax */
		{ "x=~\"(?:a|b)c\"", "x=bc", true },
		{ "x=~\"(?:a|b)c\"", "x=ac|y=1", true },
		{ "x=~\"(?P<n>a)b\"", "x=ab", true },
		{ "x=~\"(?i)prod\"", "x=PrOd", true },
		{ "x=~\"prod\"", "x=PROD", false },
		{ "x=~\"a\\\\.b\"", "x=a.b", true },
		{ "x=~\"a\\\\.b\"", "x=axb", false },
		{ "x=~\"[\\\\]]\"", "x=]", true },
		{ "x=~\"[a\\\\-z]\"", "x=-", true },
		{ "x=~\"[a\\\\-z]\"", "x=b", false },
		{ "x=~\"[[:digit:]]+\"", "x=42", true },
		{ "x=~\"\\\\<a\\\\>\"", "x=<a>", true },
		{ "x=~\"[\\\\D]+\"", "x=ab", true },
		{ "x=~\"[\\\\D]+\"", "x=a1", false },
		{ "x=~\"\\\\pL+\"", "x=caf\xc3\xa9", true },
		{ "x=~\"\\\\pL+\"", "x=caf3", false },
		{ "x=~\"a+?\"", "x=aaa", true },
		{ "x=~\"\"", "y=1", true },
		{ "x=~\"\"", "x=1", false },
		/* quoting and escapes */
		{ "summary=\"say \\\"hi\\\"\"", "summary=say \"hi\"", true },
		{ "path=\"C:\\\\dir\"", "path=C:\\dir", true },
		{ "m=\"a\\nb\"", "m=a\nb", true },
		{ "m=\"a\\tb\"", "m=a\tb", true },
		{ "m=\"\\x41\\u00e9\\U0001F600\"", "m=A\xc3\xa9\xf0\x9f\x98\x80", true },
		{ "m=\"\\101\"", "m=A", true },
		{ "m=\"a,b {c} =~!\"", "m=a,b {c} =~!", true },
		{ "m=caf\xc3\xa9", "m=caf\xc3\xa9", true },
		/* lists: AND, braces, trailing comma, whitespace */
		{ "{alertname=\"X\", severity=~\"critical|page\"}", "alertname=X|severity=page", true },
		{ "{alertname=\"X\", severity=~\"critical|page\"}", "alertname=X|severity=info", false },
		{ "{alertname=\"X\", severity=~\"critical|page\",}", "alertname=X|severity=critical", true },
		{ " { alertname = X , team != \"\" } ", "alertname=X", false },
		{ "alertname=X,team=\"a\"", "alertname=X|team=a", true },
		{ "alertname=X,", "alertname=X", true },
		{ "{}", "", true },
	};
	(void)state;
	check_matches(cases, ARRAY_SIZE(cases));
}

static void test_error_table(void **state)
{
	static const struct {
		const char *matcher;
		const char *fragment;
	} cases[] = {
		{ "", "matcher '': empty matcher" },
		{ "   ", "empty matcher" },
		{ "{", "missing closing '}' at end of input" },
		{ "{a=\"b\"", "matcher '{a=\"b\"': missing closing '}'" },
		{ "{a=\"b\",", "missing closing '}'" },
		{ "a=\"b\"}", "expected ',' or end of input at column 6, got '}'" },
		{ "}", "unexpected '}' at column 1 without an opening '{'" },
		{ "a", "expected an operator (=, !=, =~, !~) after 'a' at column 2, got end of input" },
		{ "a!b", "expected an operator (=, !=, =~, !~) after 'a' at column 2, got '!'" },
		{ "a~b", "expected an operator" },
		{ "a==\"b\"", "expected a label value at column 3, got '='" },
		{ "a=", "missing value after 'a=' at column 3" },
		{ "{a=~}", "missing value after 'a=~'" },
		{ "=\"b\"", "expected a label name at column 1, got '='" },
		{ "a=\"b", "unterminated quoted string starting at column 3" },
		{ "a=\"b\\", "unterminated quoted string" },
		{ "a=\"b\\q\"", "invalid escape '\\q' at column 5" },
		{ "a=\"\\x4\"", "'\\x' needs 2 hex digits" },
		{ "a=\"\\x00\"", "NUL character not allowed" },
		{ "a=\"\\ud800\"", "invalid Unicode code point" },
		{ "a=\"\\777\"", "out of range" },
		{ "a='b'", "only double quotes are allowed" },
		{ "a=`b`", "only double quotes are allowed" },
		{ "1a=\"b\"", "invalid label name '1a' at column 1" },
		{ "foo-bar=\"x\"", "invalid label name 'foo-bar'" },
		{ "\"a.b\"=\"x\"", "invalid label name 'a.b'" },
		{ "a=\"b\" c=\"d\"", "expected ',' or end of input at column 7, got 'c'" },
		{ "{a=\"b\" c=\"d\"}", "expected ',' or '}' at column 8, got 'c'" },
		{ "{a=\"b\"} x", "unexpected 'x' at column 9 after '}'" },
		{ "a=\"b\",,c=\"d\"", "expected a label name at column 7, got ','" },
		{ "{,}", "expected a label name at column 2, got ','" },
		{ "a=b c", "got 'c'" },
		/* regexes: the message names the matcher as written */
		{ "alertname=~\"(\"", "matcher 'alertname=~\"(\"': invalid regex: " },
		{ "{a=\"b\", c=~\"[\"}", "matcher 'c=~\"[\"': invalid regex: " },
		/* Alertmanager would accept this and un-anchor it (^(?:a)|(b)$):
		 * refused, so a matcher always means the whole value. */
		{ "x=~\"a)|(b\"", "invalid regex: unexpected ): a)|(b" },
		{ "x=~\"(a\"", "invalid regex: missing ): (a" },
		{ "x=~\"\\\\1\"", "invalid regex: invalid escape sequence: \\1" },
		{ "x=~\"(?=a)\"", "invalid regex: invalid perl operator: (?=" },
		{ "x!~\"a\\\\\"", "invalid regex: trailing \\" },
		{ "x=~\"*a\"", "invalid regex: no argument for repetition operator: *" },
		/* Go's limits: repeat counts up to 1000, nested ones too; no \C */
		{ "x=~\"a{1001}\"", "invalid regex: invalid repetition size: {1001}" },
		{ "x=~\"(a{1000}){1000}\"", "invalid regex: invalid repetition size: {1000}" },
		{ "x=~\"a.\\\\C\"", "invalid regex: invalid escape sequence: \\C" },
		{ "x=~\"(?<n>a)\"", "invalid regex: invalid perl operator: (?<" },
		/* Program size is bounded (RE2_SHIM_MAX_MEM), so compile time is too. */
		{ "x=~\"\\\\pL{1000}\"", "invalid regex: pattern too large - compile failed" },
		/* RE2's message quotes the pattern: control bytes stay escaped */
		{ "x=~\"\\n(\"", "matcher 'x=~\"\\n(\"': invalid regex: missing ): \\x0a(" },
	};
	(void)state;

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct matcher_set *ms = matcher_set_new();
		char err[256] = "";

		assert_non_null(ms);
		if (matcher_set_add(ms, cases[i].matcher, err, sizeof(err)) != -1)
			fail_msg("case %zu %s: accepted, want error with \"%s\"", i, cases[i].matcher,
			         cases[i].fragment);
		if (!strstr(err, cases[i].fragment))
			fail_msg("case %zu %s: error \"%s\" lacks \"%s\"", i, cases[i].matcher, err,
			         cases[i].fragment);
		if (strncmp(err, "matcher '", 9) != 0)
			fail_msg("case %zu: error \"%s\" does not name the matcher", i, err);
		assert_int_equal(matcher_set_count(ms), 0);
		matcher_set_free(ms);
	}
}

/* Alertmanager's semantics (Go regexp, which is RE2), where POSIX ERE
 * differed: '.' stops at a newline, matches one character however many bytes
 * it takes, and (?i) folds Unicode. tests/integration/test_matcher_amtool.py
 * checks many more against the real Alertmanager. */
static void test_go_semantics(void **state)
{
	static const struct match_case cases[] = {
		/* '.' does not match '\n' unless (?s) */
		{ "ns=~\"settings.*\"", "ns=settings\nevil", false },
		{ "ns=~\"settings.*\"", "ns=settings-evil", true },
		{ "ns=~\"(?s)settings.*\"", "ns=settings\nevil", true },
		{ "ns=~\"a.b\"", "ns=a\nb", false },
		{ "ns=~\"a\\\\nb\"", "ns=a\nb", true },
		{ "ns=~\"a\\\\sb\"", "ns=a\nb", true },
		{ "ns=~\"[^x]+\"", "ns=a\nb", true }, /* a negated class does */
		/* So a !~ with .* does not see past a newline, in Alertmanager too:
		 * the matcher holds and the alert is let through; (?s) closes it. */
		{ "ns!~\".*evil.*\"", "ns=ok\nevil", true },
		{ "ns!~\".*evil.*\"", "ns=ok-evil", false },
		{ "ns!~\"(?s).*evil.*\"", "ns=ok\nevil", false },
		/* ^ and $ are the value's ends unless (?m); full match regardless */
		{ "ns=~\"(?m)^a$\"", "ns=a", true },
		{ "ns=~\"(?m)a$\\\\n^b\"", "ns=a\nb", true },
		{ "ns=~\"a$\"", "ns=a\n", false },
		{ "ns=~\"^a|b$\"", "ns=ab", false },
		{ "ns=~\"a|b\"", "ns=ab", false },
		{ "ns=~\"a|b|\"", "ns=", true },
		/* UTF-8: '.' is one character */
		{ "x=~\"caf.\"", "x=caf\xc3\xa9", true },
		{ "x=~\"caf..\"", "x=caf\xc3\xa9", false },
		{ "x=~\".\"", "x=\xf0\x9f\x98\x80", true },
		{ "x=~\"[\xc3\xa9]\"", "x=\xc3\xa9", true },
		{ "x=~\"[^a]\"", "x=\xc3\xa9", true },
		{ "x=~\"\\\\x{e9}\"", "x=\xc3\xa9", true },
		{ "x=~\"\\\\w\"", "x=\xc3\xa9", false }, /* \w is ASCII, as in Go */
		{ "x=~\"(?i)CAF\xc3\x89\"", "x=caf\xc3\xa9", true },
		{ "x=~\"(?i)k\"", "x=\xe2\x84\xaa", true }, /* KELVIN SIGN folds to k */
		{ "x=~\"\\\\Q.*\\\\E\"", "x=.*", true },
		{ "x=~\"\\\\Q.*\\\\E\"", "x=ab", false },
		{ "x=~\"\\\\Q\\\\C\\\\E\"", "x=\\C", true }, /* quoted, so not \C */
		/* Invalid UTF-8 counts as U+FFFD per byte, as Go decodes it */
		{ "x=~\".\"", "x=\xff", true },
		{ "x=~\"..\"", "x=\xc3(", true },
		{ "x=~\"\\\\x{fffd}a\"", "x=\xe2\x82" "a", false }, /* two bytes, two U+FFFD */
		{ "x=~\"\\\\x{fffd}{2}a\"", "x=\xe2\x82" "a", true },
		/* repetition up to Go's limit of 1000 */
		{ "x=~\"a{1000}\"", "x=a", false },
		{ "x=~\"((a{10}){10}){10}b?\"", "x=a", false },
	};
	(void)state;
	check_matches(cases, ARRAY_SIZE(cases));
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Compiling and matching take linear time: a playbook's matcher cannot stall
 * --check-config or a reload. Generous bounds (sanitizers, slow CI): these
 * guard against exponential blow-up, they are not benchmarks. glibc's
 * regcomp took 28 s for the 22-'+' form of the first pattern. */
static void test_linear_time(void **state)
{
	char pat[256], err[256], *text;
	struct matcher_set *ms;
	struct lbuf lb;
	struct labels ls;
	struct label l;
	double t;
	size_t n = 0;
	(void)state;

	/* ".+++...+" with 24 '+': Go and RE2 refuse stacked repetitions. */
	t = now_s();
	ms = matcher_set_new();
	assert_int_equal(matcher_set_add(ms, "x=~\".++++++++++++++++++++++++\"", err, sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "invalid regex: bad repetition operator: ++"));
	assert_int_equal(matcher_set_add(ms, "x!~\"(.+)+(.*)*(a|aa)+x{2,1000}\"", err, sizeof(err)),
	                 0);
	matcher_set_free(ms);
	if (now_s() - t > 2.0)
		fail_msg("compiling took %.1f s", now_s() - t);

	/* The same 24 levels as nested groups are valid: compile them, then
	 * match a value built to make a backtracking engine try every split. */
	n += (size_t)snprintf(pat, sizeof(pat), "x=~\"");
	for (int i = 0; i < 24; i++)
		pat[n++] = '(';
	pat[n++] = '.';
	pat[n++] = '+';
	for (int i = 0; i < 24; i++) {
		pat[n++] = ')';
		pat[n++] = '+';
	}
	snprintf(pat + n, sizeof(pat) - n, "\"");
	text = malloc(10002);
	assert_non_null(text);
	memset(text, 'a', 10000);
	text[10000] = '\n';
	text[10001] = '\0';

	t = now_s();
	ms = matcher_set_new();
	assert_int_equal(matcher_set_add(ms, pat, err, sizeof(err)), 0);
	l.name = "x";
	l.value = text;
	ls.n = 1;
	ls.v = &l;
	assert_false(matcher_set_matches(ms, &ls));
	text[10000] = 'a';
	assert_true(matcher_set_matches(ms, &ls));
	assert_false(matcher_set_matches(ms, mklabels(&lb, "x=")));
	matcher_set_free(ms);
	if (now_s() - t > 2.0)
		fail_msg("compiling and matching took %.1f s", now_s() - t);
	free(text);

	/* Past the size bound a pattern is refused quickly, not compiled slowly. */
	t = now_s();
	ms = matcher_set_new();
	assert_int_equal(matcher_set_add(ms, "x=~\"[\\\\p{L}\\\\p{N}]{1000}\\\\pL{1000}\"", err,
	                                 sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "pattern too large"));
	matcher_set_free(ms);
	if (now_s() - t > 2.0)
		fail_msg("refusing a large pattern took %.1f s", now_s() - t);
}

static void test_canonical_text(void **state)
{
	static const struct {
		const char *input;
		const char *texts[3];
	} cases[] = {
		{ "alertname=\"SettingsSyncJobFailure\"", { "alertname=\"SettingsSyncJobFailure\"" } },
		{ "alertname=SettingsSyncJobFailure", { "alertname=\"SettingsSyncJobFailure\"" } },
		{ "code=~\"5\\\\d\\\\d\"", { "code=~\"5\\\\d\\\\d\"" } },
		{ " { a = b , c!~\"x\\\"y\" , } ", { "a=\"b\"", "c!~\"x\\\"y\"" } },
		{ "{a!=\"\",b=~\".*\",c=\"\"}", { "a!=\"\"", "b=~\".*\"", "c=\"\"" } },
		{ "m=\"a\\nb\\x01\\t\"", { "m=\"a\\nb\\x01\\t\"" } },
		{ "m=\"\\xff\"", { "m=\"\\xff\"" } },
		{ "u=\"\\u00e9\"", { "u=\"\xc3\xa9\"" } },
	};
	(void)state;

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct matcher_set *ms = matcher_set_new();
		char err[256];
		size_t n = 0;

		while (n < 3 && cases[i].texts[n])
			n++;
		assert_int_equal(matcher_set_add(ms, cases[i].input, err, sizeof(err)), 0);
		assert_int_equal(matcher_set_count(ms), n);
		for (size_t k = 0; k < n; k++)
			assert_string_equal(matcher_set_text(ms, k), cases[i].texts[k]);
		assert_null(matcher_set_text(ms, n));

		/* The canonical text parses back to the same matcher. */
		{
			struct matcher_set *again = matcher_set_new();
			for (size_t k = 0; k < n; k++)
				assert_int_equal(matcher_set_add(again, matcher_set_text(ms, k), err,
				                                 sizeof(err)),
				                 0);
			for (size_t k = 0; k < n; k++)
				assert_string_equal(matcher_set_text(again, k), cases[i].texts[k]);
			matcher_set_free(again);
		}
		matcher_set_free(ms);
	}
}

static void test_set_semantics(void **state)
{
	struct matcher_set *ms = matcher_set_new();
	struct lbuf lb;
	char err[256];
	(void)state;

	/* Empty set matches everything, even no labels. */
	assert_int_equal(matcher_set_count(ms), 0);
	assert_true(matcher_set_matches(ms, mklabels(&lb, "a=b")));
	assert_true(matcher_set_matches(ms, mklabels(&lb, "")));
	assert_true(matcher_set_matches(NULL, NULL));

	/* Several add calls AND together (a playbook's match list). */
	assert_int_equal(matcher_set_add(ms, "alertname=\"KongDown\"", err, sizeof(err)), 0);
	assert_int_equal(matcher_set_add(ms, "namespace=~\"prod|staging\"", err, sizeof(err)), 0);
	assert_int_equal(matcher_set_count(ms), 2);
	assert_true(matcher_set_matches(ms, mklabels(&lb, "alertname=KongDown|namespace=prod")));
	assert_false(matcher_set_matches(ms, mklabels(&lb, "alertname=KongDown|namespace=dev")));
	assert_false(matcher_set_matches(ms, mklabels(&lb, "namespace=prod")));
	assert_false(matcher_set_matches(ms, NULL));

	/* A failing add leaves the set as it was: no half-added list. */
	assert_int_equal(matcher_set_add(ms, "{a=\"b\", c=~\"(\"}", err, sizeof(err)), -1);
	assert_int_equal(matcher_set_count(ms), 2);
	assert_int_equal(matcher_set_add(ms, "{a=\"b\", c=}", err, sizeof(err)), -1);
	assert_int_equal(matcher_set_count(ms), 2);
	assert_string_equal(matcher_set_text(ms, 1), "namespace=~\"prod|staging\"");
	assert_true(matcher_set_matches(ms, mklabels(&lb, "alertname=KongDown|namespace=staging")));

	/* Long matchers are cut in messages between characters, never inside
	 * one, and invalid UTF-8 is escaped. */
	{
		char pat[600] = "x=~\"(";

		for (int i = 0; i < 100; i++)
			strcat(pat, "\xc3\xa9");
		strcat(pat, "\xff\"");
		assert_int_equal(matcher_set_add(ms, pat, err, sizeof(err)), -1);
		assert_non_null(strstr(err, "..."));
		for (size_t i = 0; err[i]; i++) {
			unsigned char c = (unsigned char)err[i];
			if (c == 0xc3)
				assert_int_equal((unsigned char)err[i + 1], 0xa9);
			assert_true(c < 0x80 || c == 0xc3 || c == 0xa9);
		}
		assert_int_equal(matcher_set_add(ms, "x=~\"(\xff\"", err, sizeof(err)), -1);
		assert_non_null(strstr(err, "matcher 'x=~\"(\\xff\"': invalid regex: "));
	}

	/* NULL arguments are errors, not crashes; small err buffers truncate. */
	assert_int_equal(matcher_set_add(NULL, "a=b", err, sizeof(err)), -1);
	assert_int_equal(matcher_set_add(ms, NULL, err, sizeof(err)), -1);
	assert_int_equal(matcher_set_add(ms, "a=", NULL, 0), -1);
	{
		char small[10];
		assert_int_equal(matcher_set_add(ms, "a=", small, sizeof(small)), -1);
		assert_int_equal(strlen(small), sizeof(small) - 1);
	}
	assert_int_equal(matcher_set_count(ms), 2);
	matcher_set_free(ms);
	matcher_set_free(NULL);
}

/* Matchers over labels parsed from a real Alertmanager body. */
static void test_with_alert_labels(void **state)
{
	struct matcher_set *ms = matcher_set_new();
	struct payload p;
	char err[256];
	const char *body =
		"{\"labels\":{\"alertname\":\"SettingsSyncJobFailure\",\"job\":\"settings-sync-job\","
		"\"severity\":\"warning\"}}";
	(void)state;

	assert_int_equal(alert_parse(body, strlen(body), ALERT_ALLOW_MANUAL, &p, err, sizeof(err)),
	                 ALERT_OK);
	assert_int_equal(matcher_set_add(ms, "{alertname=\"SettingsSyncJobFailure\", "
	                                     "severity=~\"warning|critical\", namespace!~\"kube-.*\"}",
	                                 err, sizeof(err)),
	                 0);
	assert_true(matcher_set_matches(ms, &p.alerts[0].labels));
	assert_int_equal(matcher_set_add(ms, "job=~\"settings\"", err, sizeof(err)), 0);
	assert_false(matcher_set_matches(ms, &p.alerts[0].labels)); /* anchored */
	payload_free(&p);
	matcher_set_free(ms);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_match_table),
		cmocka_unit_test(test_error_table),
		cmocka_unit_test(test_go_semantics),
		cmocka_unit_test(test_linear_time),
		cmocka_unit_test(test_canonical_text),
		cmocka_unit_test(test_set_semantics),
		cmocka_unit_test(test_with_alert_labels),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

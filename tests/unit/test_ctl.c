/* Unit tests for the pure helpers of src/ctl.c: text made printable and cut
 * to a width, table columns fitted to the terminal, durations both ways,
 * and the next page of a Link header (never on another origin). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "recoveryd/ctl.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static void test_fit_text(void **state)
{
	static const struct {
		const char *in;
		size_t width;
		const char *want;
	} cases[] = {
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"one too long", 11, "one too lo\xe2\x80\xa6"},
		{"abc", 1, "\xe2\x80\xa6"},
		{"abc", 0, ""},
		{"", 5, ""},
		/* a code point is never cut in half; é is one column */
		{"caf\xc3\xa9 au lait", 5, "caf\xc3\xa9\xe2\x80\xa6"},
		{"caf\xc3\xa9", 4, "caf\xc3\xa9"},
		/* a label cannot move the cursor or change colours */
		{"red\x1b[31m", 20, "red?[31m"},
		{"a\nb\tc\rd", 20, "a b c d"},
		{"del\x7f", 20, "del?"},
		{"c1\xc2\x9b" "2J", 20, "c1?2J"},   /* U+009B, CSI in C1 */
		{"nbsp\xc2\xa0ok", 20, "nbsp\xc2\xa0ok"},
		{"bad\xff\xfe", 20, "bad??"},
		{"trunc\xe2\x82", 20, "trunc??"},
	};
	char out[64];

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		ctl_fit_text(cases[i].in, cases[i].width, out, sizeof(out));
		if (strcmp(out, cases[i].want) != 0)
			fail_msg("'%s' in %zu columns: got '%s', want '%s'", cases[i].in, cases[i].width, out,
			         cases[i].want);
		assert_true(ctl_display_width(out) <= cases[i].width);
	}
	/* a small buffer cuts with the ellipsis, never past its end */
	char small[8];
	ctl_fit_text("abcdefghijklmnop", 100, small, sizeof(small));
	assert_string_equal(small, "abcd\xe2\x80\xa6");
}

static void test_display_width(void **state)
{
	(void)state;
	assert_int_equal(ctl_display_width(""), 0);
	assert_int_equal(ctl_display_width("abc"), 3);
	assert_int_equal(ctl_display_width("\xe2\x80\xa6"), 1);
	assert_int_equal(ctl_display_width("caf\xc3\xa9"), 4);
	assert_int_equal(ctl_display_width("\xff\xff"), 2);
}

static void test_fit_columns(void **state)
{
	(void)state;
	{ /* fits: nothing changes */
		size_t w[3] = {5, 10, 20}, min[3] = {3, 3, 3};
		assert_int_equal(ctl_fit_columns(w, min, 3, 2, 80), 39);
		assert_int_equal(w[2], 20);
	}
	{ /* the widest gives until the table fits */
		size_t w[3] = {12, 10, 60}, min[3] = {12, 3, 5};
		assert_int_equal(ctl_fit_columns(w, min, 3, 2, 50), 50);
		assert_int_equal(w[0], 12);
		assert_int_equal(w[1], 10);
		assert_int_equal(w[2], 24);
	}
	{ /* two wide columns end up equal; the later one gives first on a tie */
		size_t w[3] = {40, 5, 41}, min[3] = {3, 3, 3};
		assert_int_equal(ctl_fit_columns(w, min, 3, 2, 50), 50);
		assert_int_equal(w[0], 21);
		assert_int_equal(w[2], 20);
	}
	{ /* the minimums hold even when the table cannot fit */
		size_t w[2] = {12, 30}, min[2] = {12, 8};
		assert_int_equal(ctl_fit_columns(w, min, 2, 2, 10), 22);
		assert_int_equal(w[0], 12);
		assert_int_equal(w[1], 8);
	}
	{ /* a column narrower than its minimum stays as it is */
		size_t w[2] = {2, 30}, min[2] = {8, 3};
		assert_int_equal(ctl_fit_columns(w, min, 2, 2, 20), 20);
		assert_int_equal(w[0], 2);
		assert_int_equal(w[1], 16);
	}
}

static void test_format_duration(void **state)
{
	static const struct {
		double in;
		const char *want;
	} cases[] = {
		{0, "0s"},       {0.4, "0s"},       {45, "45s"},      {59.6, "1m"},    {60, "1m"},
		{200, "3m20s"},  {3599, "59m59s"},  {3600, "1h"},     {3660, "1h01m"}, {7500, "2h05m"},
		{86400, "1d"},   {273600, "3d4h"},  {-90, "1m30s"},   {1e300, "11574074d1h"},
	};
	char buf[32];

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		ctl_format_duration(cases[i].in, buf, sizeof(buf));
		if (strcmp(buf, cases[i].want) != 0)
			fail_msg("%g: got '%s', want '%s'", cases[i].in, buf, cases[i].want);
	}
}

static void test_parse_duration(void **state)
{
	static const struct {
		const char *in;
		double want;
	} good[] = {{"90", 90}, {"90s", 90}, {"15m", 900}, {"2h", 7200}, {"1d", 86400}, {"3600", 3600}};
	static const char *const bad[] = {"", "0", "0s", "-5", "5x", "5mm", "1.5h", " 5", "5 ", "h",
	                                  "999999999999999999999", "100000001"};
	double got;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		if (ctl_parse_duration(good[i].in, &got) != 0 || got != good[i].want)
			fail_msg("'%s': want %g", good[i].in, good[i].want);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		if (ctl_parse_duration(bad[i], &got) == 0)
			fail_msg("'%s' read as %g, want it refused", bad[i], got);
	assert_int_equal(ctl_parse_duration(NULL, &got), -1);
}

static void test_next_link(void **state)
{
	static const char *const page = "http://127.0.0.1:9095/api/v1/jobs?limit=2";
	static const struct {
		const char *link, *want; /* want NULL: no next page; "-": refused */
	} cases[] = {
		{"</api/v1/jobs?limit=2&before=8123>; rel=\"next\"", "http://127.0.0.1:9095/api/v1/jobs?limit=2&before=8123"},
		{"<http://127.0.0.1:9095/api/v1/jobs?before=7>; rel=next", "http://127.0.0.1:9095/api/v1/jobs?before=7"},
		{"<HTTP://127.0.0.1:9095/api/v1/jobs?before=7>; rel=\"next\"", "HTTP://127.0.0.1:9095/api/v1/jobs?before=7"},
		{"<?before=5>; rel=\"next\"", "http://127.0.0.1:9095/api/v1/jobs?before=5"},
		{"</a?x=1>; rel=\"prev\", </b?before=3>; rel=\"next\"", "http://127.0.0.1:9095/b?before=3"},
		{"</b?before=3>; title=\"x\"; REL=\"prev next\"", "http://127.0.0.1:9095/b?before=3"},
		{"</a?x=1>; rel=\"prev\"", NULL},
		{"</a?x=1>; rel=\"nextpage\"", NULL},
		{"", NULL},
		{"garbage", NULL},
		{"</never-closed; rel=\"next\"", NULL},
		/* the token goes only to the origin of --url */
		{"<http://evil.example/api/v1/jobs?before=1>; rel=\"next\"", "-"},
		{"<http://127.0.0.1:9096/api/v1/jobs?before=1>; rel=\"next\"", "-"},
		{"<https://127.0.0.1:9095/api/v1/jobs?before=1>; rel=\"next\"", "-"},
		{"<http://127.0.0.1:9095.evil.example/x>; rel=\"next\"", "-"},
		{"<http://127.0.0.1:9095@evil.example/x>; rel=\"next\"", "-"},
		{"<//evil.example/api/v1/jobs>; rel=\"next\"", "-"},
		{"<jobs?before=1>; rel=\"next\"", "-"},
	};
	char out[256];

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		int want = !cases[i].want ? 0 : strcmp(cases[i].want, "-") == 0 ? -1 : 1;
		int got = ctl_next_link(cases[i].link, page, out, sizeof(out));
		if (got != want)
			fail_msg("'%s': got %d (%s), want %d", cases[i].link, got, got > 0 ? out : "", want);
		if (got > 0 && strcmp(out, cases[i].want) != 0)
			fail_msg("'%s': got '%s', want '%s'", cases[i].link, out, cases[i].want);
	}
	char tiny[16];
	assert_int_equal(ctl_next_link(cases[0].link, page, tiny, sizeof(tiny)), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fit_text),
		cmocka_unit_test(test_display_width),
		cmocka_unit_test(test_fit_columns),
		cmocka_unit_test(test_format_duration),
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_next_link),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

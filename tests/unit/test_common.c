/* Unit tests for src/common.c: rd_parse_time, the times of the audit
 * filters (since, until) and of a pause's until. A time that is not one
 * must be refused, not read as some other time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "recoveryd/common.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* 2026-12-02T10:00:00Z (date -u -d ... +%s) */
#define T_DEC2 1796205600.0

static void test_parse_time_good(void **state)
{
	static const struct {
		const char *in;
		double want;
	} cases[] = {
		{ "2026-12-02T10:00:00Z", T_DEC2 },
		{ "2026-12-02t10:00:00z", T_DEC2 },  /* RFC 3339 allows lower case */
		{ "2026-12-02T10:00:00.250Z", T_DEC2 + 0.25 },
		{ "2026-12-02T10:00:00.5Z", T_DEC2 + 0.5 },
		{ "2026-12-02T10:00:00.000000001Z", T_DEC2 + 1e-9 },
		{ "2026-12-02T10:00:00+00:00", T_DEC2 },
		{ "2026-12-02T10:00:00-00:00", T_DEC2 },
		{ "2026-12-02T12:30:00+02:30", T_DEC2 },
		{ "2026-12-02T05:00:00-05:00", T_DEC2 },
		{ "2026-12-03T09:59:00+23:59", T_DEC2 },
		{ "2026-12-02T10:00:00.750-01:00", T_DEC2 + 3600.75 },
		{ "1970-01-01T00:00:00Z", 0 },
		{ "2024-02-29T00:00:00Z", 1709164800 },  /* leap year */
		{ "2000-02-29T12:00:00Z", 951825600 },   /* divisible by 400: leap */
		{ "2026-12-31T23:59:59Z", 1798761599 },
		/* a leap second is RFC 3339; POSIX time folds it into the next */
		{ "2026-12-31T23:59:60Z", 1798761600 },
		/* epoch seconds */
		{ "1796205600", T_DEC2 },
		{ "1796205600.25", T_DEC2 + 0.25 },
		{ "0", 0 },
		{ "42", 42 },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		double got = -1;
		if (rd_parse_time(cases[i].in, &got) != 0)
			fail_msg("'%s': refused, want %.9f", cases[i].in, cases[i].want);
		if (got < cases[i].want - 1e-6 || got > cases[i].want + 1e-6)
			fail_msg("'%s': got %.9f, want %.9f", cases[i].in, got, cases[i].want);
	}
}

static void test_parse_time_garbage(void **state)
{
	static const char *const bad[] = {
		"",
		"yesterday",
		"now",
		"2026-12-02",                    /* a date is not a time */
		"2026-12-02T10:00:00",           /* no zone: local to whom? */
		"2026-12-02T10:00Z",             /* no seconds */
		"2026-12-02 10:00:00Z",
		"2026-12-02T10:00:00Zjunk",
		"2026-12-02T10:00:00Z ",
		" 2026-12-02T10:00:00Z",
		"2026-12-02T 10:00:00Z",
		"2026-1-2T3:4:5Z",               /* fields have two digits */
		"20260-12-02T10:00:00Z",
		"+2026-12-02T10:00:00Z",
		/* out of range */
		"2026-13-01T00:00:00Z",
		"2026-00-10T00:00:00Z",
		"2026-12-00T00:00:00Z",
		"2026-12-32T00:00:00Z",
		"2026-02-29T00:00:00Z",          /* 2026 is no leap year */
		"2026-02-30T00:00:00Z",
		"2026-04-31T00:00:00Z",
		"2100-02-29T00:00:00Z",          /* divisible by 100, not 400 */
		"2026-12-02T24:00:00Z",
		"2026-12-02T10:60:00Z",
		"2026-12-02T10:00:61Z",
		/* fractions are digits */
		"2026-12-02T10:00:00.Z",
		"2026-12-02T10:00:00.5e3Z",
		"2026-12-02T10:00:00.-5Z",
		"2026-12-02T10:00:00,5Z",
		/* offsets are +hh:mm within a day */
		"2026-12-02T10:00:00+0200",
		"2026-12-02T10:00:00+02",
		"2026-12-02T10:00:00+2:00",
		"2026-12-02T10:00:00+24:00",
		"2026-12-02T10:00:00+99:99",
		"2026-12-02T10:00:00+02:60",
		"2026-12-02T10:00:00Z+02:00",
		/* epoch seconds are decimal digits */
		"-5",
		"+5",
		".5",
		"1e3",
		"0x10",
		"inf",
		"nan",
		"12abc",
		"1796205600 ",
		" 1796205600",
		"1.2.3",
		"1e999",
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		double got = -1;
		if (rd_parse_time(bad[i], &got) == 0)
			fail_msg("'%s': read as %.3f, want it refused", bad[i], got);
	}
	{
		double got;
		assert_int_equal(rd_parse_time(NULL, &got), -1);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_time_good),
		cmocka_unit_test(test_parse_time_garbage),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

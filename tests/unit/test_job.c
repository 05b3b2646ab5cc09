/* Unit tests for src/job.c: the job state machine (the transition table and
 * the per-state counts behind recoveryd_queue_depth) and the state names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "recoveryd/job.h"

static void test_names_round_trip(void **state)
{
	(void)state;
	for (int s = 0; s < JS_COUNT; s++) {
		enum job_state got;
		assert_int_equal(job_state_parse(job_state_name((enum job_state)s), &got), 0);
		assert_int_equal(got, s);
	}
	enum job_state got;
	assert_int_equal(job_state_parse("exploded", &got), -1);
	assert_string_equal(job_state_name(JS_COUNT), "unknown");
}

static void test_lifecycle_counts(void **state)
{
	struct job_counts c;
	struct job j;

	(void)state;
	memset(&c, 0, sizeof(c));
	memset(&j, 0, sizeof(j));
	job_enter(&c, &j, JS_QUEUED);
	assert_int_equal(c.n[JS_QUEUED], 1);
	assert_int_equal(job_set_state(&c, &j, JS_RUNNING), 0);
	assert_int_equal(c.n[JS_QUEUED], 0);
	assert_int_equal(c.n[JS_RUNNING], 1);
	assert_int_equal(job_set_state(&c, &j, JS_RETRY_WAIT), 0);
	assert_int_equal(job_set_state(&c, &j, JS_RUNNING), 0);
	/* interrupted, idempotent: queued again */
	assert_int_equal(job_set_state(&c, &j, JS_QUEUED), 0);
	assert_int_equal(job_set_state(&c, &j, JS_RUNNING), 0);
	assert_int_equal(job_set_state(&c, &j, JS_SUCCEEDED), 0);
	for (int s = 0; s < JS_COUNT; s++)
		assert_int_equal(c.n[s], 0);
}

static void test_refused_transitions(void **state)
{
	struct job_counts c;
	struct job j;
	static const enum job_state final[] = {JS_SUCCEEDED, JS_FAILED, JS_CANCELLED,
	                                       JS_BUDGET_EXHAUSTED};

	(void)state;
	memset(&c, 0, sizeof(c));
	memset(&j, 0, sizeof(j));
	/* queued cannot skip to a verdict of an attempt it never ran */
	job_enter(&c, &j, JS_QUEUED);
	assert_int_equal(job_set_state(&c, &j, JS_SUCCEEDED), -1);
	assert_int_equal(job_set_state(&c, &j, JS_RETRY_WAIT), -1);
	assert_int_equal(j.state, JS_QUEUED);
	assert_int_equal(c.n[JS_QUEUED], 1);
	/* a final state is final */
	for (size_t i = 0; i < sizeof(final) / sizeof(final[0]); i++) {
		struct job k;
		memset(&k, 0, sizeof(k));
		job_enter(&c, &k, final[i]);
		for (int to = 0; to < JS_COUNT; to++)
			assert_int_equal(job_set_state(&c, &k, (enum job_state)to), -1);
		assert_int_equal(k.state, final[i]);
	}
	assert_int_equal(c.n[JS_QUEUED], 1);
	assert_int_equal(job_set_state(&c, &j, JS_CANCELLED), 0);
	assert_int_equal(c.n[JS_QUEUED], 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names_round_trip),
		cmocka_unit_test(test_lifecycle_counts),
		cmocka_unit_test(test_refused_transitions),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for src/job.c: the job state machine (the transition table and
 * the per-state counts behind recoveryd_queue_depth), the names of states,
 * attempt results, attempt error kinds and outcomes, and the row view. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "recoveryd/job.h"
#include "recoveryd/metrics.h"

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

/* Every value of an enum has a name, and no two share one. */
static void assert_names_distinct(const char *(*name)(int), int from, int count)
{
	for (int i = from; i < count; i++) {
		assert_non_null(name(i));
		assert_true(name(i)[0] != '\0');
		assert_string_not_equal(name(i), "unknown");
		for (int k = from; k < i; k++)
			assert_string_not_equal(name(i), name(k));
	}
}

static const char *result_name(int v) { return attempt_result_name((enum attempt_result)v); }
static const char *error_name(int v) { return attempt_error_name((enum attempt_error)v); }
static const char *outcome_name(int v) { return job_outcome_name((enum job_outcome)v); }

static void test_attempt_result_names(void **state)
{
	(void)state;
	assert_names_distinct(result_name, 0, AR_COUNT);
	/* the journal's attempts.result and the result label, as before */
	assert_string_equal(attempt_result_name(AR_SUCCEEDED), "succeeded");
	assert_string_equal(attempt_result_name(AR_FAILED), "failed");
	assert_string_equal(attempt_result_name(AR_TIMEOUT), "timeout");
	assert_string_equal(attempt_result_name(AR_CANCELLED), "cancelled");
	assert_string_equal(attempt_result_name(AR_INTERRUPTED), "interrupted");
	assert_string_equal(attempt_result_name(AR_COUNT), "unknown");
	assert_string_equal(attempt_result_name((enum attempt_result)-1), "unknown");
}

static void test_attempt_error_names(void **state)
{
	(void)state;
	/* AE_NONE is no kind: nothing is counted */
	assert_null(attempt_error_name(AE_NONE));
	assert_names_distinct(error_name, AE_NONE + 1, AE_COUNT);
	/* recoveryd_playbook_errors_total{kind} (docs/configuration.md) */
	assert_string_equal(attempt_error_name(AE_TIMEOUT), "timeout");
	assert_string_equal(attempt_error_name(AE_MEMORY), "memory");
	assert_string_equal(attempt_error_name(AE_LOAD), "load");
	assert_string_equal(attempt_error_name(AE_COUNT), "unknown");
}

static void test_outcome_names(void **state)
{
	(void)state;
	/* OUT_NONE is the journal's NULL: not ended */
	assert_null(job_outcome_name(OUT_NONE));
	assert_names_distinct(outcome_name, OUT_NONE + 1, OUT_COUNT);
	/* the journal, the API and recoveryd_jobs_total spell them so */
	assert_string_equal(job_outcome_name(OUT_SUCCEEDED), "succeeded");
	assert_string_equal(job_outcome_name(OUT_DRY_RUN_SUCCEEDED), "dry_run_succeeded");
	assert_string_equal(job_outcome_name(OUT_FAILED), "failed");
	assert_string_equal(job_outcome_name(OUT_DRY_RUN_FAILED), "dry_run_failed");
	assert_string_equal(job_outcome_name(OUT_CANCELLED), "cancelled");
	assert_string_equal(job_outcome_name(OUT_INTERRUPTED), "interrupted");
	assert_string_equal(job_outcome_name(OUT_POISONED), "poisoned");
	assert_string_equal(job_outcome_name(OUT_BUDGET_EXHAUSTED), "budget_exhausted");
	assert_string_equal(job_outcome_name(OUT_PAUSED), "paused");
	assert_string_equal(job_outcome_name(OUT_REJECTED), "rejected");
	assert_string_equal(job_outcome_name(OUT_APPROVAL_TIMEOUT), "approval_timeout");
	assert_string_equal(job_outcome_name(OUT_COUNT), "unknown");
	/* an outcome that ends a job in a state of the same name reads the
	 * same in both columns */
	static const struct {
		enum job_outcome o;
		enum job_state s;
	} same[] = {{OUT_SUCCEEDED, JS_SUCCEEDED}, {OUT_FAILED, JS_FAILED},
	            {OUT_CANCELLED, JS_CANCELLED}, {OUT_BUDGET_EXHAUSTED, JS_BUDGET_EXHAUSTED},
	            {OUT_PAUSED, JS_PAUSED}};
	for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++)
		assert_string_equal(job_outcome_name(same[i].o), job_state_name(same[i].s));
}

static void test_state_names(void **state)
{
	(void)state;
	for (int s = 0; s < JS_COUNT; s++)
		for (int k = 0; k < s; k++)
			assert_string_not_equal(job_state_name((enum job_state)s),
			                        job_state_name((enum job_state)k));
	/* the journal, the API and the state label spell them so */
	static const char *const want[JS_COUNT] = {
		"queued", "running", "retry_wait", "succeeded", "failed", "cancelled",
		"budget_exhausted", "paused", "awaiting_approval",
	};
	for (int s = 0; s < JS_COUNT; s++)
		assert_string_equal(job_state_name((enum job_state)s), want[s]);
	enum job_state got = JS_RUNNING;
	assert_int_equal(job_state_parse("", &got), -1);
	assert_int_equal(job_state_parse("QUEUED", &got), -1); /* names are exact */
	assert_int_equal(job_state_parse("dry_run_failed", &got), -1); /* an outcome, not a state */
	assert_int_equal(job_state_parse("approval_timeout", &got), -1);
	assert_int_equal(got, JS_RUNNING);
}

/* The journal's jobs.approval: NULL when not required. */
static void test_approval_names(void **state)
{
	enum approval a;

	(void)state;
	assert_null(approval_name(AP_NONE));
	assert_string_equal(approval_name(AP_PENDING), "pending");
	assert_string_equal(approval_name(AP_APPROVED), "approved");
	assert_null(approval_name(AP_COUNT));
	for (int i = AP_PENDING; i < AP_COUNT; i++) {
		a = AP_NONE;
		assert_int_equal(approval_parse(approval_name((enum approval)i), &a), 0);
		assert_int_equal(a, i);
	}
	/* a NULL column is a job that needs no approval */
	a = AP_APPROVED;
	assert_int_equal(approval_parse(NULL, &a), 0);
	assert_int_equal(a, AP_NONE);
	assert_int_equal(approval_parse("rejected", &a), -1);
	assert_int_equal(approval_parse("Approved", &a), -1);
	assert_int_equal(approval_parse("", &a), -1);
}

/* Writes are only planned in a dry run and in an approval plan. */
static void test_plans_only(void **state)
{
	struct job j;

	(void)state;
	memset(&j, 0, sizeof(j));
	assert_false(job_plans_only(&j));
	j.dry_run = 1;
	assert_true(job_plans_only(&j));
	j.dry_run = 0;
	j.planning = 1;
	assert_true(job_plans_only(&j));
	/* approved: the next attempt is real */
	j.planning = 0;
	j.approval = AP_APPROVED;
	j.plan_attempts = 1;
	assert_false(job_plans_only(&j));
}

/* The row the journal writes converts the enums to the store's strings. */
static void test_row_of(void **state)
{
	struct job j;
	struct job_row row;

	(void)state;
	memset(&j, 0, sizeof(j));
	snprintf(j.id, sizeof(j.id), "0123456789abcdef0123456789abcdef");
	j.state = JS_RUNNING;
	job_row_of(&j, &row);
	assert_string_equal(row.id, j.id);
	assert_string_equal(row.state, "running");
	assert_null(row.outcome); /* not ended: NULL in the journal and the API */
	j.state = JS_FAILED;
	j.outcome = OUT_DRY_RUN_FAILED;
	job_row_of(&j, &row);
	assert_string_equal(row.state, "failed");
	assert_string_equal(row.outcome, "dry_run_failed");
	/* who and approval */
	assert_null(row.triggered_by);
	assert_null(row.approval);
	assert_int_equal(row.plan_attempts, 0);
	j.triggered_by = "olga";
	j.cancelled_by = "vic";
	j.approval = AP_PENDING;
	j.plan_attempts = 2;
	job_row_of(&j, &row);
	assert_string_equal(row.triggered_by, "olga");
	assert_string_equal(row.cancelled_by, "vic");
	assert_string_equal(row.approval, "pending");
	assert_null(row.approved_by);
	assert_int_equal(row.plan_attempts, 2);
	j.approval = AP_APPROVED;
	j.approved_by = "root";
	j.state = JS_AWAITING_APPROVAL;
	job_row_of(&j, &row);
	assert_string_equal(row.approval, "approved");
	assert_string_equal(row.approved_by, "root");
	assert_string_equal(row.state, "awaiting_approval");
	for (int o = OUT_NONE + 1; o < OUT_COUNT; o++) {
		j.outcome = (enum job_outcome)o;
		job_row_of(&j, &row);
		assert_string_equal(row.outcome, job_outcome_name((enum job_outcome)o));
	}
}

/* Every transition the table allows, and only those (docs/playbook-guide.md,
 * "Attempts" and "Crashes and shutdown"). */
static void test_transition_table(void **state)
{
	static const int ok[JS_COUNT][JS_COUNT] = {
		[JS_QUEUED] = {[JS_RUNNING] = 1, [JS_CANCELLED] = 1, [JS_FAILED] = 1},
		[JS_RUNNING] = {[JS_SUCCEEDED] = 1, [JS_FAILED] = 1, [JS_CANCELLED] = 1,
		                [JS_RETRY_WAIT] = 1, [JS_QUEUED] = 1, [JS_AWAITING_APPROVAL] = 1},
		[JS_RETRY_WAIT] = {[JS_RUNNING] = 1, [JS_CANCELLED] = 1, [JS_FAILED] = 1},
		/* approved, rejected or cancelled, timed out */
		[JS_AWAITING_APPROVAL] = {[JS_QUEUED] = 1, [JS_CANCELLED] = 1, [JS_FAILED] = 1},
	};

	(void)state;
	for (int from = 0; from < JS_COUNT; from++)
		for (int to = 0; to < JS_COUNT; to++) {
			struct job_counts c;
			struct job j;
			memset(&c, 0, sizeof(c));
			memset(&j, 0, sizeof(j));
			job_enter(&c, &j, (enum job_state)from);
			int rc = job_set_state(&c, &j, (enum job_state)to);
			assert_int_equal(rc, ok[from][to] ? 0 : -1);
			assert_int_equal(j.state, ok[from][to] ? to : from);
			/* the counts follow the job, and never count a final state */
			for (int s = 0; s < JS_COUNT; s++)
				assert_int_equal(c.n[s], s == (int)j.state && !job_state_final(j.state));
		}
	/* out of range is refused, not indexed */
	struct job_counts c;
	struct job j;
	memset(&c, 0, sizeof(c));
	memset(&j, 0, sizeof(j));
	job_enter(&c, &j, JS_QUEUED);
	assert_int_equal(job_set_state(&c, &j, JS_COUNT), -1);
	assert_int_equal(j.state, JS_QUEUED);
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

/* The two gauges move with the state in the same call, so a scrape never
 * shows a job in neither or both (recoveryd_queue_depth and
 * recoveryd_jobs_in_flight). */
static void test_gauges_follow_the_state(void **state)
{
	struct job_counts c;
	struct job a, b;

	(void)state;
	memset(&c, 0, sizeof(c));
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	job_enter(&c, &a, JS_QUEUED);
	job_enter(&c, &b, JS_QUEUED);
	assert_true(metrics_get(M_QUEUE_DEPTH, NULL, NULL) == 2);
	assert_true(metrics_get(M_JOBS_IN_FLIGHT, NULL, NULL) == 0);
	assert_int_equal(job_set_state(&c, &a, JS_RUNNING), 0);
	assert_true(metrics_get(M_QUEUE_DEPTH, NULL, NULL) == 1);
	assert_true(metrics_get(M_JOBS_IN_FLIGHT, NULL, NULL) == 1);
	assert_int_equal(job_set_state(&c, &a, JS_SUCCEEDED), 0);
	assert_true(metrics_get(M_JOBS_IN_FLIGHT, NULL, NULL) == 0);
	assert_int_equal(job_set_state(&c, &b, JS_CANCELLED), 0);
	assert_true(metrics_get(M_QUEUE_DEPTH, NULL, NULL) == 0);
}

static void test_refused_transitions(void **state)
{
	struct job_counts c;
	struct job j;
	static const enum job_state final[] = {JS_SUCCEEDED, JS_FAILED, JS_CANCELLED,
	                                       JS_BUDGET_EXHAUSTED, JS_PAUSED};

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
		cmocka_unit_test(test_state_names),
		cmocka_unit_test(test_attempt_result_names),
		cmocka_unit_test(test_attempt_error_names),
		cmocka_unit_test(test_outcome_names),
		cmocka_unit_test(test_approval_names),
		cmocka_unit_test(test_plans_only),
		cmocka_unit_test(test_row_of),
		cmocka_unit_test(test_transition_table),
		cmocka_unit_test(test_lifecycle_counts),
		cmocka_unit_test(test_gauges_follow_the_state),
		cmocka_unit_test(test_refused_transitions),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the metrics registry: exact rendered lines, escaping,
 * histograms, family layout, concurrency, the series cap, promtool lint. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "recoveryd/common.h"
#include "recoveryd/metrics.h"

#define PROMTOOL "/usr/bin/promtool"
/* Mirrors METRICS_MAX_SERIES in src/metrics.c. */
#define SERIES_CAP 1000

static char *render(void)
{
	size_t len = 0;
	char *s = metrics_render(&len);

	assert_non_null(s);
	assert_int_equal(strlen(s), len);
	assert_true(len > 0 && s[len - 1] == '\n');
	return s;
}

/* True when `line` appears as a complete line of text. */
static int has_line(const char *text, const char *line)
{
	size_t n = strlen(line);

	for (const char *p = text; (p = strstr(p, line)); p++)
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return 1;
	return 0;
}

#define assert_line(text, line)                                               \
	do {                                                                  \
		if (!has_line(text, line))                                    \
			fail_msg("missing line: %s\n--- render ---\n%s", line, text); \
	} while (0)

static int count_prefix(const char *text, const char *prefix)
{
	int n = 0;
	size_t len = strlen(prefix);

	for (const char *p = text; *p;) {
		if (!strncmp(p, prefix, len))
			n++;
		p = strchr(p, '\n');
		if (!p)
			break;
		p++;
	}
	return n;
}

static int setup(void **state)
{
	(void)state;
	metrics_init();
	metrics_reset();
	return 0;
}

static void test_counter_two_labels(void **state)
{
	char *s;

	(void)state;
	metrics_add(M_JOBS, "restart_kong", "succeeded", 1);
	metrics_add(M_JOBS, "restart_kong", "succeeded", 1);
	metrics_add(M_JOBS, "restart_kong", "failed", 1);
	metrics_add(M_WEBHOOK_REQUESTS, "/webhook", "202", 3);
	assert_true(metrics_get(M_JOBS, "restart_kong", "succeeded") == 2);
	assert_true(metrics_get(M_JOBS, "restart_kong", "failed") == 1);
	assert_true(metrics_get(M_JOBS, "restart_kong", "timeout") == 0);
	/* Counters never go down. */
	metrics_add(M_JOBS, "restart_kong", "failed", -5);
	assert_true(metrics_get(M_JOBS, "restart_kong", "failed") == 1);

	s = render();
	assert_line(s, "# HELP recoveryd_jobs_total Recovery jobs finished, by playbook and outcome.");
	assert_line(s, "# TYPE recoveryd_jobs_total counter");
	assert_line(s, "recoveryd_jobs_total{playbook=\"restart_kong\",outcome=\"failed\"} 1");
	assert_line(s, "recoveryd_jobs_total{playbook=\"restart_kong\",outcome=\"succeeded\"} 2");
	assert_line(s, "recoveryd_webhook_requests_total{path=\"/webhook\",code=\"202\"} 3");
	/* Sorted by label values: failed before succeeded. */
	assert_true(strstr(s, "outcome=\"failed\"") < strstr(s, "outcome=\"succeeded\""));
	free(s);
}

static void test_label_escaping(void **state)
{
	char *s;

	(void)state;
	metrics_add(M_JOBS, "a\"b\\c\nd", "succeeded", 1);
	assert_true(metrics_get(M_JOBS, "a\"b\\c\nd", "succeeded") == 1);
	s = render();
	assert_line(s, "recoveryd_jobs_total{playbook=\"a\\\"b\\\\c\\nd\",outcome=\"succeeded\"} 1");
	free(s);
}

static void test_histogram(void **state)
{
	static const char *const want[] = {
		"recoveryd_job_duration_seconds_bucket{playbook=\"p\",le=\"0.1\"} 1",
		"recoveryd_job_duration_seconds_bucket{playbook=\"p\",le=\"0.5\"} 3",
		"recoveryd_job_duration_seconds_bucket{playbook=\"p\",le=\"1\"} 4",
		"recoveryd_job_duration_seconds_bucket{playbook=\"p\",le=\"2.5\"} 4",
		"recoveryd_job_duration_seconds_bucket{playbook=\"p\",le=\"5\"} 5",
		"recoveryd_job_duration_seconds_bucket{playbook=\"p\",le=\"10\"} 5",
		"recoveryd_job_duration_seconds_bucket{playbook=\"p\",le=\"30\"} 5",
		"recoveryd_job_duration_seconds_bucket{playbook=\"p\",le=\"60\"} 5",
		"recoveryd_job_duration_seconds_bucket{playbook=\"p\",le=\"120\"} 5",
		"recoveryd_job_duration_seconds_bucket{playbook=\"p\",le=\"300\"} 5",
		"recoveryd_job_duration_seconds_bucket{playbook=\"p\",le=\"600\"} 5",
		"recoveryd_job_duration_seconds_bucket{playbook=\"p\",le=\"+Inf\"} 6",
		"recoveryd_job_duration_seconds_sum{playbook=\"p\"} 1004.8125",
		"recoveryd_job_duration_seconds_count{playbook=\"p\"} 6",
	};
	char *s, *p;

	(void)state;
	/* Binary-exact values so the sum prints exactly; 0.5 and 1 sit on
	 * bucket bounds (le is inclusive). */
	metrics_observe(M_JOB_DURATION, "p", 0.0625);
	metrics_observe(M_JOB_DURATION, "p", 0.25);
	metrics_observe(M_JOB_DURATION, "p", 0.5);
	metrics_observe(M_JOB_DURATION, "p", 1);
	metrics_observe(M_JOB_DURATION, "p", 3);
	metrics_observe(M_JOB_DURATION, "p", 1000);
	assert_true(metrics_get(M_JOB_DURATION, "p", NULL) == 6);

	s = render();
	assert_line(s, "# TYPE recoveryd_job_duration_seconds histogram");
	/* The lines come in exactly this order, one after the other. */
	p = strstr(s, want[0]);
	assert_non_null(p);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		size_t n = strlen(want[i]);
		if (strncmp(p, want[i], n) || p[n] != '\n')
			fail_msg("expected %s at: %.80s", want[i], p);
		p += n + 1;
	}
	assert_int_equal(count_prefix(s, "recoveryd_job_duration_seconds_bucket"), 12);
	free(s);
}

static void test_family_layout(void **state)
{
	char *s, *line, *save = NULL;
	char cur[128] = "";
	char seen[64][128];
	int nseen = 0, nsamples = 0;

	(void)state;
	metrics_add(M_ALERTS_RECEIVED, "firing", NULL, 2);
	metrics_observe(M_JOB_DURATION, "x", 2);
	metrics_add(M_REJECTED, "too_large", NULL, 1);
	metrics_add(M_ESCALATIONS, "slack", "ok", 1);
	s = render();
	/* Every family has its HELP and TYPE exactly once. */
	assert_int_equal(count_prefix(s, "# HELP "), count_prefix(s, "# TYPE "));
	for (line = strtok_r(s, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!strncmp(line, "# HELP ", 7)) {
			size_t n = strcspn(line + 7, " ");
			assert_true(n < sizeof(cur));
			memcpy(cur, line + 7, n);
			cur[n] = '\0';
			for (int i = 0; i < nseen; i++)
				if (!strcmp(seen[i], cur))
					fail_msg("family %s appears twice", cur);
			assert_true(nseen < 64);
			strcpy(seen[nseen++], cur);
			continue;
		}
		if (!strncmp(line, "# TYPE ", 7)) {
			/* TYPE directly follows its HELP. */
			assert_int_equal(strncmp(line + 7, cur, strlen(cur)), 0);
			assert_int_equal(line[7 + strlen(cur)], ' ');
			continue;
		}
		/* Samples belong to the family whose header came last. */
		nsamples++;
		if (strncmp(line, cur, strlen(cur)))
			fail_msg("sample '%s' outside its family %s", line, cur);
	}
	free(s);
	assert_true(nsamples > 0);

	static const char *const expect[] = {
		"recoveryd_webhook_requests_total", "recoveryd_alerts_received_total",
		"recoveryd_jobs_total", "recoveryd_job_attempts_total",
		"recoveryd_job_duration_seconds", "recoveryd_jobs_in_flight",
		"recoveryd_queue_depth", "recoveryd_admissions_total",
		"recoveryd_escalations_total", "recoveryd_config_reloads_total",
		"recoveryd_build_info", "recoveryd_playbook_errors_total",
		"recoveryd_requests_rejected_total", "recoveryd_journal_errors_total",
		"process_cpu_seconds_total", "process_resident_memory_bytes",
		"process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
		"process_start_time_seconds",
	};
	for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
		int found = 0;
		for (int j = 0; j < nseen; j++)
			found |= !strcmp(seen[j], expect[i]);
		if (!found)
			fail_msg("family %s missing", expect[i]);
	}
}

static void test_defaults(void **state)
{
	char *s;

	(void)state;
	s = render();
	/* Label-less metrics show 0 before first use; labelled ones only
	 * their header; build_info is set by metrics_init and survives reset. */
	assert_line(s, "recoveryd_jobs_in_flight 0");
	assert_line(s, "recoveryd_queue_depth 0");
	assert_line(s, "recoveryd_journal_errors_total 0");
	assert_line(s, "recoveryd_build_info{version=\"" RECOVERYD_VERSION "\"} 1");
	assert_line(s, "# TYPE recoveryd_config_reloads_total counter");
	assert_int_equal(count_prefix(s, "recoveryd_config_reloads_total"), 0);
	assert_int_equal(count_prefix(s, "recoveryd_job_duration_seconds"), 0);
	free(s);

	/* Process metrics are plausible. */
	s = render();
	assert_int_equal(count_prefix(s, "# TYPE process_cpu_seconds_total counter"), 1);
	assert_int_equal(count_prefix(s, "# TYPE process_open_fds gauge"), 1);
	{
		const char *p = strstr(s, "\nprocess_start_time_seconds ");
		double now = rd_now(), v;
		assert_non_null(p);
		v = strtod(p + strlen("\nprocess_start_time_seconds "), NULL);
		assert_true(v > now - 3600 && v <= now + 1);
		p = strstr(s, "\nprocess_resident_memory_bytes ");
		assert_non_null(p);
		assert_true(strtod(p + strlen("\nprocess_resident_memory_bytes "), NULL) > 0);
	}
	free(s);
}

static void test_gauges_and_floats(void **state)
{
	static const struct {
		double v;
		const char *text;
	} cases[] = {
		{ 0, "0" },
		{ 1, "1" },
		{ -2.5, "-2.5" },
		{ 0.1, "0.1" },
		{ 1e6, "1000000" },
		{ 123456789012.0, "123456789012" },
		{ 1.0 / 3.0, "0.3333333333333333" },
		{ 0.1 + 0.2, "0.30000000000000004" },
		{ 1e300, "1e+300" },
		{ 2.5e-7, "2.5e-07" },
	};
	char line[128], *s;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		metrics_set(M_QUEUE_DEPTH, NULL, NULL, cases[i].v);
		s = render();
		snprintf(line, sizeof(line), "recoveryd_queue_depth %s", cases[i].text);
		assert_line(s, line);
		/* And it parses back to the same double. */
		assert_true(strtod(cases[i].text, NULL) == cases[i].v);
		free(s);
	}
	metrics_set(M_QUEUE_DEPTH, NULL, NULL, NAN);
	metrics_set(M_JOBS_IN_FLIGHT, NULL, NULL, INFINITY);
	s = render();
	assert_line(s, "recoveryd_queue_depth NaN");
	assert_line(s, "recoveryd_jobs_in_flight +Inf");
	free(s);
	metrics_set(M_JOBS_IN_FLIGHT, NULL, NULL, -INFINITY);
	s = render();
	assert_line(s, "recoveryd_jobs_in_flight -Inf");
	free(s);

	/* Gauges can be set and added to. */
	metrics_set(M_JOBS_IN_FLIGHT, NULL, NULL, 3);
	metrics_add(M_JOBS_IN_FLIGHT, NULL, NULL, -1);
	assert_true(metrics_get(M_JOBS_IN_FLIGHT, NULL, NULL) == 2);
	/* Setting a counter is refused. */
	metrics_set(M_JOURNAL_ERRORS, NULL, NULL, 7);
	assert_true(metrics_get(M_JOURNAL_ERRORS, NULL, NULL) == 0);
	metrics_add(M_JOURNAL_ERRORS, NULL, NULL, 1);
	s = render();
	assert_line(s, "recoveryd_jobs_in_flight 2");
	assert_line(s, "recoveryd_journal_errors_total 1");
	free(s);
}

static void test_reset(void **state)
{
	char *s;

	(void)state;
	metrics_add(M_ALERTS_RECEIVED, "firing", NULL, 4);
	metrics_observe(M_JOB_DURATION, "p", 1);
	metrics_reset();
	assert_true(metrics_get(M_ALERTS_RECEIVED, "firing", NULL) == 0);
	assert_true(metrics_get(M_JOB_DURATION, "p", NULL) == 0);
	assert_true(metrics_get(M_BUILD_INFO, RECOVERYD_VERSION, NULL) == 1);
	s = render();
	assert_int_equal(count_prefix(s, "recoveryd_alerts_received_total{"), 0);
	free(s);
}

#define NTHREADS 8
#define NITER 20000

static void *hammer(void *arg)
{
	const char *pb = arg;

	for (int i = 0; i < NITER; i++) {
		metrics_add(M_ALERTS_RECEIVED, "firing", NULL, 1);
		metrics_add(M_JOBS, pb, "succeeded", 1);
		metrics_observe(M_JOB_DURATION, "shared", 0.25);
		if (i % 1000 == 0)
			free(metrics_render(NULL));
	}
	return NULL;
}

static void test_concurrency(void **state)
{
	static const char *const pbs[] = { "a", "b" };
	pthread_t th[NTHREADS];
	char *s;

	(void)state;
	for (int i = 0; i < NTHREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, hammer, (void *)pbs[i % 2]), 0);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(th[i], NULL);
	assert_true(metrics_get(M_ALERTS_RECEIVED, "firing", NULL) == NTHREADS * NITER);
	assert_true(metrics_get(M_JOBS, "a", "succeeded") == NTHREADS / 2 * NITER);
	assert_true(metrics_get(M_JOBS, "b", "succeeded") == NTHREADS / 2 * NITER);
	assert_true(metrics_get(M_JOB_DURATION, "shared", NULL) == NTHREADS * NITER);
	s = render();
	assert_line(s, "recoveryd_alerts_received_total{status=\"firing\"} 160000");
	assert_line(s, "recoveryd_job_duration_seconds_sum{playbook=\"shared\"} 40000");
	assert_line(s, "recoveryd_job_duration_seconds_bucket{playbook=\"shared\",le=\"0.1\"} 0");
	assert_line(s, "recoveryd_job_duration_seconds_bucket{playbook=\"shared\",le=\"0.5\"} 160000");
	free(s);
}

static void test_series_cap(void **state)
{
	char name[32], *s;

	(void)state;
	for (int i = 0; i < SERIES_CAP + 200; i++) {
		snprintf(name, sizeof(name), "pb%05d", i);
		metrics_add(M_PLAYBOOK_ERRORS, name, "lua", 1);
	}
	/* Existing series keep counting, new ones are dropped and counted. */
	metrics_add(M_PLAYBOOK_ERRORS, "pb00000", "lua", 1);
	metrics_add(M_PLAYBOOK_ERRORS, "pb99999", "lua", 1);
	assert_true(metrics_get(M_PLAYBOOK_ERRORS, "pb00000", "lua") == 2);
	assert_true(metrics_get(M_PLAYBOOK_ERRORS, "pb00999", "lua") == 1);
	assert_true(metrics_get(M_PLAYBOOK_ERRORS, "pb01000", "lua") == 0);
	s = render();
	assert_int_equal(count_prefix(s, "recoveryd_playbook_errors_total{"), SERIES_CAP);
	assert_line(s, "recoveryd_metrics_series_dropped_total"
	               "{metric=\"recoveryd_playbook_errors_total\"} 201");
	/* Other families are unaffected. */
	metrics_add(M_JOBS, "pb01000", "failed", 1);
	assert_true(metrics_get(M_JOBS, "pb01000", "failed") == 1);
	free(s);
}

static void test_promtool(void **state)
{
	const char *tmp = getenv("TMPDIR");
	char path[256], cmd[512];
	size_t len;
	char *s;
	int fd, rc;

	(void)state;
	if (access(PROMTOOL, X_OK) != 0) {
		print_message("promtool not found, skipping promtool check\n");
		skip();
	}
	metrics_add(M_WEBHOOK_REQUESTS, "/webhook", "200", 5);
	metrics_add(M_ALERTS_RECEIVED, "firing", NULL, 2);
	metrics_add(M_ALERTS_RECEIVED, "resolved", NULL, 1);
	metrics_add(M_JOBS, "weird \"pb\"\\\n", "succeeded", 1);
	metrics_add(M_JOB_ATTEMPTS, "p", "ok", 1);
	metrics_observe(M_JOB_DURATION, "p", 4.2);
	metrics_set(M_JOBS_IN_FLIGHT, NULL, NULL, 1);
	metrics_set(M_QUEUE_DEPTH, NULL, NULL, 3);
	metrics_add(M_ADMISSIONS, "p", "admitted", 1);
	metrics_add(M_ESCALATIONS, "pagerduty", "ok", 1);
	metrics_add(M_CONFIG_RELOADS, "ok", NULL, 1);
	metrics_add(M_PLAYBOOK_ERRORS, "p", "timeout", 1);
	metrics_add(M_REJECTED, "auth", NULL, 1);
	metrics_add(M_JOURNAL_ERRORS, NULL, NULL, 1);
	s = metrics_render(&len);
	assert_non_null(s);
	snprintf(path, sizeof(path), "%s/test_metrics_XXXXXX", tmp && *tmp ? tmp : P_tmpdir);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, s, len), (ssize_t)len);
	close(fd);
	free(s);
	snprintf(cmd, sizeof(cmd), PROMTOOL " check metrics < %s", path);
	rc = system(cmd);
	unlink(path);
	assert_true(WIFEXITED(rc));
	assert_int_equal(WEXITSTATUS(rc), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_counter_two_labels, setup),
		cmocka_unit_test_setup(test_label_escaping, setup),
		cmocka_unit_test_setup(test_histogram, setup),
		cmocka_unit_test_setup(test_family_layout, setup),
		cmocka_unit_test_setup(test_defaults, setup),
		cmocka_unit_test_setup(test_gauges_and_floats, setup),
		cmocka_unit_test_setup(test_reset, setup),
		cmocka_unit_test_setup(test_concurrency, setup),
		cmocka_unit_test_setup(test_series_cap, setup),
		cmocka_unit_test_setup(test_promtool, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the JSON-lines logger: output captured through a pipe
 * (log_set_fd) and parsed back with cJSON. */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "recoveryd/log.h"

/* Must match LOG_LINE_MAX in src/log.c. */
#define LINE_MAX_BYTES 16384
#define MARK "...[truncated]"

static int pfd[2] = { -1, -1 };

static int setup(void **state)
{
	(void)state;
	if (pipe2(pfd, O_CLOEXEC) != 0)
		return -1;
	/* Large enough for every test's output without a reader thread. */
	fcntl(pfd[1], F_SETPIPE_SZ, 1 << 20);
	fcntl(pfd[0], F_SETFL, O_NONBLOCK);
	log_set_fd(pfd[1]);
	log_set_level(LOG_DEBUG);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	log_set_fd(2);
	log_set_level(LOG_INFO);
	close(pfd[0]);
	close(pfd[1]);
	return 0;
}

/* Everything written so far, NUL-terminated; caller frees. */
static char *drain(size_t *len)
{
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);

	assert_non_null(buf);
	for (;;) {
		ssize_t r;
		if (cap - n < 4096) {
			cap *= 2;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		r = read(pfd[0], buf + n, cap - n - 1);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

/* Exactly one line was written: return its raw text (without the newline)
 * in *raw and the parsed object. */
static cJSON *one_line(char **raw)
{
	size_t n;
	char *s = drain(&n);
	cJSON *j;

	assert_true(n > 0);
	assert_int_equal(s[n - 1], '\n');
	assert_ptr_equal(strchr(s, '\n'), s + n - 1);
	s[n - 1] = '\0';
	j = cJSON_Parse(s);
	if (!j)
		fail_msg("not JSON: %.200s", s);
	assert_true(cJSON_IsObject(j));
	if (raw)
		*raw = s;
	else
		free(s);
	return j;
}

static const char *get_str(const cJSON *j, const char *key)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(j, key);

	if (!cJSON_IsString(it))
		fail_msg("no string field %s", key);
	return it->valuestring;
}

static void test_basic_layout(void **state)
{
	char *raw;
	cJSON *j;
	const char *ts;

	(void)state;
	log_kv(LOG_INFO, "abc123", "job started", "playbook", "restart_kong", "attempt", "1",
	       NULL);
	j = one_line(&raw);
	/* Keys in fixed order: ts, level, msg, job, then the fields. */
	assert_int_equal(strncmp(raw, "{\"ts\":\"", 7), 0);
	assert_non_null(strstr(raw, "Z\",\"level\":\"info\",\"msg\":\"job started\","
	                            "\"job\":\"abc123\",\"playbook\":\"restart_kong\","
	                            "\"attempt\":\"1\"}"));
	ts = get_str(j, "ts");
	/* 2026-01-02T03:04:05.678Z */
	assert_int_equal(strlen(ts), 24);
	assert_int_equal(ts[4], '-');
	assert_int_equal(ts[10], 'T');
	assert_int_equal(ts[19], '.');
	assert_int_equal(ts[23], 'Z');
	assert_int_equal(cJSON_GetArraySize(j), 6);
	cJSON_Delete(j);
	free(raw);
}

static void test_no_job(void **state)
{
	char *raw;
	cJSON *j;

	(void)state;
	log_kv(LOG_ERROR, NULL, "boom", "err", NULL, NULL);
	j = one_line(&raw);
	assert_null(cJSON_GetObjectItemCaseSensitive(j, "job"));
	assert_string_equal(get_str(j, "level"), "error");
	assert_string_equal(get_str(j, "msg"), "boom");
	/* A NULL value is logged as null, not dropped. */
	assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "err")));
	assert_non_null(strstr(raw, "\"msg\":\"boom\",\"err\":null}"));
	cJSON_Delete(j);
	free(raw);
}

static void test_escaping(void **state)
{
	static const char nasty[] = "q\"uote b\\ack nl\n cr\r tab\t bel\x07 esc\x1b us\x1f"
	                            " del\x7f utf8 \xc3\xa9\xe2\x9c\x93\xf0\x9f\x94\xa5";
	char *raw;
	cJSON *j;

	(void)state;
	log_kv(LOG_WARN, "j\"1", nasty, "k\n", nasty, NULL);
	j = one_line(&raw);
	assert_string_equal(get_str(j, "msg"), nasty);
	assert_string_equal(get_str(j, "k\n"), nasty);
	assert_string_equal(get_str(j, "job"), "j\"1");
	/* No raw control characters in the line itself. */
	for (const char *p = raw; *p; p++)
		assert_true((unsigned char)*p >= 0x20);
	assert_non_null(strstr(raw, "q\\\"uote b\\\\ack nl\\n cr\\r tab\\t bel\\u0007"
	                            " esc\\u001b us\\u001f del\x7f utf8 \xc3\xa9"));
	/* UTF-8 passes through unescaped. */
	assert_non_null(strstr(raw, "\xe2\x9c\x93\xf0\x9f\x94\xa5\""));
	cJSON_Delete(j);
	free(raw);
}

static void test_invalid_utf8(void **state)
{
	char *raw;
	cJSON *j;

	(void)state;
	/* Stray continuation, overlong '/', surrogate, truncated sequence. */
	log_kv(LOG_INFO, NULL, "bad", "v", "a\x80" "b\xc0\xaf" "c\xed\xa0\x80" "d\xe2\x9c", NULL);
	j = one_line(&raw);
	assert_string_equal(get_str(j, "v"),
	                    "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd"
	                    "c\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" "d\xef\xbf\xbd\xef\xbf\xbd");
	cJSON_Delete(j);
	free(raw);
}

static void test_level_filter(void **state)
{
	size_t n;
	char *s;
	cJSON *j;

	(void)state;
	log_set_level(LOG_WARN);
	log_kv(LOG_DEBUG, NULL, "debug", NULL);
	log_kv(LOG_INFO, NULL, "info", NULL);
	log_json(LOG_INFO, NULL, "info json", NULL);
	s = drain(&n);
	assert_int_equal(n, 0);
	free(s);
	log_kv(LOG_WARN, NULL, "warn", NULL);
	j = one_line(NULL);
	assert_string_equal(get_str(j, "level"), "warn");
	cJSON_Delete(j);
	log_kv(LOG_ERROR, NULL, "error", NULL);
	j = one_line(NULL);
	assert_string_equal(get_str(j, "level"), "error");
	cJSON_Delete(j);
	log_set_level(LOG_DEBUG);
	log_kv(LOG_DEBUG, NULL, "debug", NULL);
	j = one_line(NULL);
	assert_string_equal(get_str(j, "level"), "debug");
	cJSON_Delete(j);
}

static void test_level_names(void **state)
{
	(void)state;
	assert_string_equal(log_level_name(LOG_DEBUG), "debug");
	assert_string_equal(log_level_name(LOG_INFO), "info");
	assert_string_equal(log_level_name(LOG_WARN), "warn");
	assert_string_equal(log_level_name(LOG_ERROR), "error");
}

static void test_log_json(void **state)
{
	cJSON *f = cJSON_CreateObject(), *j, *it;
	char *raw;

	(void)state;
	cJSON_AddStringToObject(f, "s", "x\"y");
	cJSON_AddNumberToObject(f, "i", 42);
	cJSON_AddNumberToObject(f, "d", 1.5);
	cJSON_AddBoolToObject(f, "b", 1);
	cJSON_AddNullToObject(f, "n");
	it = cJSON_AddObjectToObject(f, "o");
	cJSON_AddItemToObject(it, "a", cJSON_CreateIntArray((const int[]){ 1, 2 }, 2));
	cJSON_AddStringToObject(f, "msg", "shadow");

	log_json(LOG_INFO, "job1", "with fields", f);
	j = one_line(&raw);
	assert_string_equal(get_str(j, "s"), "x\"y");
	assert_true(cJSON_GetObjectItemCaseSensitive(j, "i")->valuedouble == 42);
	assert_true(cJSON_GetObjectItemCaseSensitive(j, "d")->valuedouble == 1.5);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "b")));
	assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "n")));
	assert_non_null(strstr(raw, ",\"o\":{\"a\":[1,2]},"));
	/* A field named like a fixed key does not duplicate it. */
	assert_string_equal(get_str(j, "msg"), "with fields");
	assert_string_equal(get_str(j, "_msg"), "shadow");
	assert_non_null(strstr(raw, "\"job\":\"job1\",\"s\":"));
	/* The input object is not consumed. */
	assert_int_equal(cJSON_GetArraySize(f), 7);
	cJSON_Delete(j);
	free(raw);

	/* NULL fields and non-object fields: just the fixed keys. */
	log_json(LOG_INFO, NULL, "none", NULL);
	j = one_line(NULL);
	assert_int_equal(cJSON_GetArraySize(j), 3);
	cJSON_Delete(j);
	cJSON_Delete(f);
}

static char *big(size_t n, char c)
{
	char *s = malloc(n + 1);

	assert_non_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && !strcmp(s + a - b, suffix);
}

static void test_truncation(void **state)
{
	char *huge = big(100000, 'x'), *quotes = big(50000, '"'), *raw;
	cJSON *j, *f;
	const char *v;

	(void)state;
	/* One huge field: cut with the marker, the following field kept. */
	log_kv(LOG_INFO, "j", "big", "out", huge, "after", "kept", NULL);
	j = one_line(&raw);
	assert_true(strlen(raw) + 1 <= LINE_MAX_BYTES);
	v = get_str(j, "out");
	assert_true(ends_with(v, MARK));
	assert_true(strlen(v) > 1000);
	assert_string_equal(get_str(j, "after"), "kept");
	cJSON_Delete(j);
	free(raw);

	/* Several huge fields, a huge message and escapes that expand 2x:
	 * still one valid line within the cap. */
	log_kv(LOG_ERROR, "j", huge, "a", quotes, "b", huge, "c", huge, "d", "small", NULL);
	j = one_line(&raw);
	assert_true(strlen(raw) + 1 <= LINE_MAX_BYTES);
	assert_true(ends_with(get_str(j, "msg"), MARK));
	v = get_str(j, "a");
	assert_true(ends_with(v, MARK));
	/* Cut between escapes, never inside one. */
	for (size_t i = 0; i < strlen(v) - strlen(MARK); i++)
		assert_int_equal(v[i], '"');
	assert_string_equal(get_str(j, "job"), "j");
	cJSON_Delete(j);
	free(raw);

	/* Multibyte characters are never split. */
	{
		size_t n = 30000;
		char *u = malloc(3 * n + 1);
		assert_non_null(u);
		for (size_t i = 0; i < n; i++)
			memcpy(u + 3 * i, "\xe2\x9c\x93", 3);
		u[3 * n] = '\0';
		log_kv(LOG_INFO, NULL, "utf8", "u", u, NULL);
		j = one_line(NULL);
		v = get_str(j, "u");
		assert_true(ends_with(v, MARK));
		assert_int_equal((strlen(v) - strlen(MARK)) % 3, 0);
		cJSON_Delete(j);
		free(u);
	}

	/* Huge nested JSON from log_json becomes a truncated string. */
	f = cJSON_CreateObject();
	{
		cJSON *arr = cJSON_AddArrayToObject(f, "list");
		for (int i = 0; i < 5000; i++)
			cJSON_AddItemToArray(arr, cJSON_CreateString("item"));
	}
	cJSON_AddStringToObject(f, "huge", huge);
	cJSON_AddNumberToObject(f, "n", 7);
	log_json(LOG_INFO, NULL, "nested", f);
	j = one_line(&raw);
	assert_true(strlen(raw) + 1 <= LINE_MAX_BYTES);
	v = get_str(j, "list");
	assert_int_equal(strncmp(v, "[\"item\",\"item\"", 14), 0);
	assert_true(ends_with(v, MARK));
	cJSON_Delete(j);
	free(raw);
	cJSON_Delete(f);

	free(huge);
	free(quotes);
}

#define NTHREADS 4
#define NLINES 200

static void *writer(void *arg)
{
	char id[16];

	snprintf(id, sizeof(id), "t%d", (int)(intptr_t)arg);
	for (int i = 0; i < NLINES; i++)
		log_kv(LOG_INFO, id, "tick", "payload", "0123456789abcdef0123456789abcdef", NULL);
	return NULL;
}

static void test_concurrent_lines(void **state)
{
	pthread_t th[NTHREADS];
	char *s, *line, *save = NULL;
	int count = 0;

	(void)state;
	for (intptr_t i = 0; i < NTHREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, writer, (void *)i), 0);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(th[i], NULL);
	s = drain(NULL);
	for (line = strtok_r(s, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		cJSON *j = cJSON_Parse(line);
		if (!j)
			fail_msg("interleaved or broken line: %.200s", line);
		assert_string_equal(get_str(j, "msg"), "tick");
		cJSON_Delete(j);
		count++;
	}
	assert_int_equal(count, NTHREADS * NLINES);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_basic_layout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_job, setup, teardown),
		cmocka_unit_test_setup_teardown(test_escaping, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_utf8, setup, teardown),
		cmocka_unit_test_setup_teardown(test_level_filter, setup, teardown),
		cmocka_unit_test(test_level_names),
		cmocka_unit_test_setup_teardown(test_log_json, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_lines, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

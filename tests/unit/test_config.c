/* Unit tests for the config loader: Lua config files written to a
 * temporary file and loaded with config_load(--config FILE). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "recoveryd/config.h"

/* Load src (len bytes: it may hold NUL bytes) as the config file. Returns
 * config_load's result; cfg must be released with config_free. */
static int load(struct config *cfg, const char *src, size_t len, char *err, size_t errlen)
{
	char path[] = "/tmp/recoveryd-test-config-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, src, len), (ssize_t)len);
	close(fd);
	char *argv[] = {"--config", path, NULL};
	int rc = config_load(cfg, 2, argv, err, errlen);
	unlink(path);
	return rc;
}

#define LOAD(cfg, lit, err) load(cfg, lit, sizeof(lit) - 1, err, sizeof(err))

static void test_file_settings(void **state)
{
	struct config cfg;
	char err[512] = "";
	(void)state;
	assert_int_equal(LOAD(&cfg,
	                      "return { listen = '127.0.0.1:1', max_jobs = 3, dry_run = true,\n"
	                      "  exec_allow = { '/usr/bin/kubectl' } }",
	                      err),
	                 0);
	assert_string_equal(cfg.listen, "127.0.0.1:1");
	assert_true(cfg.max_jobs == 3);
	assert_int_equal(cfg.dry_run, 1);
	assert_string_equal(cfg.exec_allow[0], "/usr/bin/kubectl");
	assert_null(cfg.exec_allow[1]);
	config_free(&cfg);
}

/* A Lua string may hold NUL bytes; C strings end at the first one. A key or
 * value with one must be refused, not silently cut short ("listen\0junk"
 * read as listen, "127.0.0.1:1\0evil" as 127.0.0.1:1). */
static void test_nul_in_key(void **state)
{
	struct config cfg;
	char err[512] = "";
	(void)state;
	assert_int_equal(LOAD(&cfg, "return { ['listen\\0junk'] = '127.0.0.1:1' }", err), -1);
	assert_non_null(strstr(err, "NUL"));
	config_free(&cfg);
}

static void test_nul_in_value(void **state)
{
	struct config cfg;
	char err[512] = "";
	(void)state;
	assert_int_equal(LOAD(&cfg, "return { listen = '127.0.0.1:1\\0evil' }", err), -1);
	assert_non_null(strstr(err, "listen"));
	assert_non_null(strstr(err, "NUL"));
	config_free(&cfg);
}

static void test_nul_in_list_entry(void **state)
{
	struct config cfg;
	char err[512] = "";
	(void)state;
	assert_int_equal(LOAD(&cfg, "return { exec_allow = { '/bin/true\\0 --evil' } }", err), -1);
	assert_non_null(strstr(err, "exec_allow"));
	assert_non_null(strstr(err, "NUL"));
	config_free(&cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_file_settings),
		cmocka_unit_test(test_nul_in_key),
		cmocka_unit_test(test_nul_in_value),
		cmocka_unit_test(test_nul_in_list_entry),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

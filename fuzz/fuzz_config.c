/* The config loader (src/config.c) on the input as the config file's text:
 * config_load with --config pointing at a memfd that holds the input. A
 * config that never returns is stopped by the loader's own 5 s deadline,
 * which the virtual clock (support.h, fuzz_tick below) turns into a
 * budget of ~500k Lua instructions, or 50 ms of real time for a loop that
 * spends its time in C functions (string.rep ...). Checks: an error message on rejection;
 * on success, settings within their documented ranges. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "support.h"
#include "lua_stack_check.h"
#include "recoveryd/config.h"

static int fd = -1;
static char path[64];

static void check_list(char *const *l, int paths, const char *name)
{
	size_t n = 0;
	for (; l[n]; n++) {
		FUZZ_ASSERT(n < CONFIG_EXEC_ALLOW_MAX, "%s has more than %d entries", name,
		            CONFIG_EXEC_ALLOW_MAX);
		if (paths)
			FUZZ_ASSERT(l[n][0] == '/', "%s entry %s is not absolute", name, l[n]);
	}
}

static void check_num(double v, const char *name)
{
	FUZZ_ASSERT(isfinite(v) && v >= 0, "%s = %g", name, v);
}

static void check_json(const char *s, const char *name)
{
	if (!s)
		return;
	cJSON *j = cJSON_Parse(s);
	FUZZ_ASSERT(cJSON_IsObject(j), "%s is not a JSON object: %s", name, s);
	for (cJSON *c = j->child; c; c = c->next)
		FUZZ_ASSERT(cJSON_IsObject(c), "%s[%s] is not an object", name, c->string);
	cJSON_Delete(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config cfg;
	char err[512];
	char *argv[] = {"--config", path, NULL};

	if (fd < 0) {
		fd = memfd_create("fuzz-config", 0);
		FUZZ_ASSERT(fd >= 0, "memfd_create");
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		fuzz_tick = 0.01;          /* 5 s deadline = 500 hook calls */
		fuzz_realtime_scale = 100; /* or 50 ms spent in C functions */
	}
	FUZZ_ASSERT(ftruncate(fd, 0) == 0 && pwrite(fd, data, size, 0) == (ssize_t)size, "memfd write");
	err[0] = '\0';
	fuzz_stack_reset();
	if (config_load(&cfg, 2, argv, err, sizeof(err)) < 0) {
		FUZZ_ASSERT(err[0], "rejection without a message");
	} else {
		FUZZ_ASSERT(cfg.config && cfg.listen && cfg.playbooks && cfg.lua_path && cfg.state &&
		                    cfg.pagerduty_url && cfg.log_level,
		            "a string setting is NULL");
		FUZZ_ASSERT(!strcmp(cfg.log_level, "debug") || !strcmp(cfg.log_level, "info") ||
		                    !strcmp(cfg.log_level, "warn") || !strcmp(cfg.log_level, "error"),
		            "log_level %s", cfg.log_level);
		FUZZ_ASSERT(!cfg.check_config && !cfg.version && !cfg.help && !cfg.alert,
		            "a flag-only setting was set from the file");
		check_list(cfg.exec_allow, 1, "exec_allow");
		check_list(cfg.read_allow, 1, "read_allow");
		check_list(cfg.env_allow, 0, "env_allow");
		check_list(cfg.escalate_default, 0, "escalate_default");
		for (char **e = cfg.escalate_default; *e; e++)
			FUZZ_ASSERT(!strcmp(*e, "slack") || !strcmp(*e, "pagerduty"), "escalate_default %s",
			            *e);
		check_num(cfg.escalation_retry_initial, "escalation_retry_initial");
		check_num(cfg.escalation_retry_max, "escalation_retry_max");
		check_num(cfg.drain_timeout, "drain_timeout");
		check_num(cfg.conn_limit, "conn_limit");
		check_num(cfg.conn_timeout, "conn_timeout");
		check_num(cfg.conn_per_ip, "conn_per_ip");
		check_num(cfg.http_timeout, "http_timeout");
		check_num(cfg.journal_group_max, "journal_group_max");
		FUZZ_ASSERT(cfg.body_max >= 1024 && isfinite(cfg.body_max), "body_max %g", cfg.body_max);
		FUZZ_ASSERT(cfg.max_jobs >= 1 && cfg.queue_max >= 1 && isfinite(cfg.max_jobs) &&
		                    isfinite(cfg.queue_max),
		            "max_jobs %g queue_max %g", cfg.max_jobs, cfg.queue_max);
		FUZZ_ASSERT(cfg.lua_memory >= 1024 * 1024 && isfinite(cfg.lua_memory), "lua_memory %g",
		            cfg.lua_memory);
		check_json(cfg.playbook_settings, "playbook_settings");
		check_json(cfg.playbook_overrides, "playbook_overrides");
	}
	config_free(&cfg);
	return 0;
}

/* The `recovery` Lua module of DESIGN.md §4. */
#ifndef RECOVERYD_LUA_API_H
#define RECOVERYD_LUA_API_H

#include <lua.h>
#include <cjson/cJSON.h>

struct job;

struct lua_api_conf {
	const char *secrets_dir;     /* NULL: recovery.secret always fails */
	const char *const *exec_allow; /* NULL-terminated absolute paths */
	double http_timeout;         /* default per request, seconds */
	const char *const *env_allow;  /* NULL-terminated variable names recovery.env reads */
	const char *const *read_allow; /* NULL-terminated directories recovery.read_file reads */
	/* Tests of the defences behind the sandbox only (RECOVERYD_TEST_FAULTS=1):
	 * adds recovery._test_stall(seconds), which blocks the event loop in C
	 * where no hook reaches, as a sandbox hole would. */
	int test_faults;
};

/* Deployment overrides of playbook settings: JSON {"<playbook>": {...}}
 * (from the config file's playbook_settings), or NULL. Copied. */
void lua_api_set_playbook_settings(const char *json);
/* Push the override table for playbook (an empty table when none). */
void lua_api_push_settings(lua_State *L, const char *playbook);
/* Set the process-wide settings (copied). */
void lua_api_configure(const struct lua_api_conf *c);
/* Install `recovery` as a global and for require "recovery". job == NULL
 * while loading playbooks: the yielding primitives then raise an error. */
void lua_api_open(lua_State *L, struct job *job);

/* The text of the error value at idx: a string as it is; the reason of
 * the table that recovery.fail and permanent errors raise, with *final set
 * (and *permanent for a permanent error: misuse of the API, which no retry
 * can change); NULL for any other value. Runs no metamethod; outside a
 * protected call, lift the memory budget around it (sandbox no_limit). */
const char *lua_api_error_text(lua_State *L, int idx, int *final, int *permanent);

#endif

/* Internals of the `recovery` module shared by its files: lua_api.c (the
 * module table, the job of a state, the configuration, the small
 * primitives, permanent errors), lua_http.c (recovery.http), lua_exec.c
 * (recovery.exec) and lua_json.c (recovery.json's argument checks).
 * The job's runner is reached only through job->host (recoveryd/op.h). */
#ifndef RECOVERYD_LUA_API_IMPL_H
#define RECOVERYD_LUA_API_IMPL_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include <lua.h>

#include "recoveryd/op.h"

struct job;

/* --- lua_api.c --- */

/* The job whose attempt runs in L, or NULL (loading a playbook). */
struct job *lua_api_job(lua_State *L);
/* The job, after checking that recovery.<fn> may yield to the runner from
 * L: raises otherwise. */
struct job *lua_api_yielding_job(lua_State *L, const char *fn);
/* The job's op_host, with the answers of a job that has none: */
/* record: consumes detail. */
void lua_api_record(struct job *j, const char *type, cJSON *detail, int planned);
/* begin: 0, or -1 with err set (op stays the caller's). */
int lua_api_begin(struct job *j, struct op *op, char *err, size_t errlen);
/* Hand op to the runner and yield until its finish; when the runner
 * refuses it, discard(op) and return nil, err. For the last line of a
 * recovery.<fn> binding: return lua_api_submit(...). */
int lua_api_submit(lua_State *L, struct job *j, struct op *op, void (*discard)(struct op *op));
/* deadline: the attempt's, in rd_mono seconds. */
double lua_api_deadline(struct job *j);

/* Permanent errors: misuse that another attempt cannot change. Each raises
 * the error value of recovery.fail (the job fails without retries), marked
 * permanent, whose reason is the message prefixed by the position of the
 * Lua code that called the binding. They never return. */
int lua_api_fatal(lua_State *L, const char *fmt, ...);
/* "recovery.<fn>: bad argument #<arg> (<msg>)" */
int lua_api_argerror(lua_State *L, const char *fn, int arg, const char *msg);
/* luaL_checktype, luaL_checknumber, luaL_checklstring and
 * sandbox_checkcstr (a string or a number, without NUL bytes), permanent. */
void lua_api_checktype(lua_State *L, const char *fn, int arg, int t);
lua_Number lua_api_checknumber(lua_State *L, const char *fn, int arg);
const char *lua_api_checklstring(lua_State *L, const char *fn, int arg, size_t *len);
const char *lua_api_checkcstr(lua_State *L, const char *fn, int arg);
/* The same for a field's value at idx, named by what ("recovery.http:
 * url"): a string or a number (converted in place), the same without NUL
 * bytes, a number or nil (def), a value of type t. */
const char *lua_api_tolstring(lua_State *L, int idx, const char *what, size_t *len);
const char *lua_api_tocstr(lua_State *L, int idx, const char *what);
lua_Number lua_api_optnumber(lua_State *L, int idx, const char *what, lua_Number def);
void lua_api_checkfield(lua_State *L, int idx, const char *what, int t);
/* Every key of the options table at idx is one of keys (NULL-terminated)
 * or an integer from 1 to n_list (an argv); else a permanent error naming
 * the key and listing the allowed ones. */
void lua_api_check_keys(lua_State *L, int idx, const char *fn, const char *const *keys, lua_Integer n_list);

/* The configuration (lua_api_configure). */
double lua_api_http_timeout(void);
/* Is path inside one of the --read-allow directories (no "..")? */
int lua_api_read_allowed(const char *path);
/* Is prog one of the --exec-allow programs? */
int lua_api_exec_allowed(const char *prog);

/* --- lua_http.c --- */

/* recovery.http */
int lua_http_request(lua_State *L);
/* Register the metatable of recovery.http's responses in L. */
void lua_http_open(lua_State *L);

/* --- lua_exec.c --- */

/* recovery.exec */
int lua_exec_run(lua_State *L);

#endif

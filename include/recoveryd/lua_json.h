/* The Lua<->JSON bridge (src/lua_json.c): recovery.json for playbooks, and
 * the conversions the config and playbook loaders use. */
#ifndef RECOVERYD_LUA_JSON_H
#define RECOVERYD_LUA_JSON_H

#include <lua.h>
#include <cjson/cJSON.h>

/* Register the array mark and push the table {encode, decode, array,
 * null}; recovery.json is this table. */
void lua_json_open(lua_State *L);
/* Push a JSON value as Lua: objects become tables, arrays tables with the
 * array mark (once lua_json_open ran in this state), null becomes
 * recovery.json.null. Raises on a memory error or a too deep value. */
void lua_json_push(lua_State *L, const cJSON *v);
/* The Lua value at idx as JSON; NULL with *err on failure (a cycle or more
 * than 64 levels, NaN, a NUL byte in a string, a type JSON lacks). */
cJSON *lua_json_from(lua_State *L, int idx, const char **err);
/* recovery.json.decode as a lua_CFunction: the text at 1 becomes a value,
 * or nil, err. */
int lua_json_decode(lua_State *L);

#endif

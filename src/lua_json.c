/* The Lua<->JSON bridge: recovery.json (encode, decode, array, null) and
 * the conversions the config and playbook loaders use. JSON arrays carry a
 * protected metatable (the array mark) so that [] encodes back as []. */
#include "recoveryd/lua_json.h"

#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lua_api_impl.h"
#include "recoveryd/common.h"
#include "recoveryd/sandbox.h"

static int null_sentinel;
static const char ARRAY_MT[] = "recoveryd.json.array";

void lua_json_push(lua_State *L, const cJSON *v)
{
	luaL_checkstack(L, 4, "JSON too deep");
	if (cJSON_IsObject(v)) {
		lua_newtable(L);
		for (const cJSON *c = v->child; c; c = c->next) {
			lua_json_push(L, c);
			lua_setfield(L, -2, c->string);
		}
	} else if (cJSON_IsArray(v)) {
		lua_Integer i = 1;
		lua_newtable(L);
		for (const cJSON *c = v->child; c; c = c->next) {
			lua_json_push(L, c);
			lua_seti(L, -2, i++);
		}
		/* Remember it was an array, so that [] encodes back as []. */
		if (luaL_getmetatable(L, ARRAY_MT) == LUA_TTABLE)
			lua_setmetatable(L, -2);
		else
			lua_pop(L, 1);
	} else if (cJSON_IsString(v)) {
		lua_pushstring(L, v->valuestring);
	} else if (cJSON_IsNumber(v)) {
		double d = v->valuedouble;
		if (d == floor(d) && fabs(d) < 9007199254740992.0)
			lua_pushinteger(L, (lua_Integer)d);
		else
			lua_pushnumber(L, d);
	} else if (cJSON_IsBool(v)) {
		lua_pushboolean(L, cJSON_IsTrue(v));
	} else {
		lua_pushlightuserdata(L, &null_sentinel);
	}
}

static cJSON *to_json(lua_State *L, int idx, int depth, const char **err)
{
	idx = lua_absindex(L, idx);
	if (depth > 64) {
		*err = "nesting too deep (or a cycle)";
		return NULL;
	}
	switch (lua_type(L, idx)) {
	case LUA_TNIL:
		return cJSON_CreateNull();
	case LUA_TBOOLEAN:
		return cJSON_CreateBool(lua_toboolean(L, idx));
	case LUA_TNUMBER: {
		double d = lua_tonumber(L, idx);
		if (!isfinite(d)) {
			*err = "cannot encode NaN or infinity";
			return NULL;
		}
		return cJSON_CreateNumber(d);
	}
	case LUA_TSTRING:
		if (sandbox_has_nul(L, idx)) {
			*err = "cannot encode a string holding a NUL byte";
			return NULL;
		}
		return cJSON_CreateString(lua_tostring(L, idx));
	case LUA_TLIGHTUSERDATA:
		if (lua_touserdata(L, idx) == &null_sentinel)
			return cJSON_CreateNull();
		break;
	case LUA_TTABLE: {
		/* A level holds key, value, a key copy and two metatables: C
		 * functions get only LUA_MINSTACK slots unless they ask. */
		if (!lua_checkstack(L, 6)) {
			*err = "nesting too deep (Lua stack exhausted)";
			return NULL;
		}
		lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
		size_t keys = 0;
		int marked = 0;
		if (lua_getmetatable(L, idx)) {
			luaL_getmetatable(L, ARRAY_MT);
			marked = lua_rawequal(L, -1, -2);
			lua_pop(L, 2);
		}
		lua_pushnil(L);
		while (lua_next(L, idx)) {
			keys++;
			lua_pop(L, 1);
		}
		if ((n > 0 || marked) && (size_t)n == keys) {
			cJSON *a = cJSON_CreateArray();
			for (lua_Integer i = 1; i <= n; i++) {
				lua_rawgeti(L, idx, i);
				cJSON *c = to_json(L, -1, depth + 1, err);
				lua_pop(L, 1);
				if (!c) {
					cJSON_Delete(a);
					return NULL;
				}
				cJSON_AddItemToArray(a, c);
			}
			return a;
		}
		cJSON *o = cJSON_CreateObject();
		lua_pushnil(L);
		while (lua_next(L, idx)) {
			if (lua_type(L, -2) != LUA_TSTRING && lua_type(L, -2) != LUA_TNUMBER) {
				*err = "object keys must be strings";
				lua_pop(L, 2);
				cJSON_Delete(o);
				return NULL;
			}
			if (sandbox_has_nul(L, -2)) {
				*err = "cannot encode a key holding a NUL byte";
				lua_pop(L, 2);
				cJSON_Delete(o);
				return NULL;
			}
			lua_pushvalue(L, -2);
			const char *k = lua_tostring(L, -1);
			cJSON *c = to_json(L, -2, depth + 1, err);
			if (!c) {
				lua_pop(L, 3);
				cJSON_Delete(o);
				return NULL;
			}
			cJSON_AddItemToObject(o, k, c);
			lua_pop(L, 2);
		}
		return o;
	}
	default:
		break;
	}
	*err = "cannot encode this Lua type as JSON";
	return NULL;
}

cJSON *lua_json_from(lua_State *L, int idx, const char **err)
{
	return to_json(L, idx, 0, err);
}

static int l_json_encode(lua_State *L)
{
	const char *err = NULL;
	if (lua_isnone(L, 1))
		lua_api_argerror(L, "json.encode", 1, "value expected");
	cJSON *v = to_json(L, 1, 0, &err);
	if (!v) {
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	}
	char *s = cJSON_PrintUnformatted(v);
	cJSON_Delete(v);
	if (!s)
		return luaL_error(L, "out of memory");
	lua_pushstring(L, s);
	free(s);
	return 1;
}

/* recovery.json.array(t): mark t as a JSON array (so {} encodes as []). */
static int l_json_array(lua_State *L)
{
	if (lua_isnoneornil(L, 1))
		lua_newtable(L);
	lua_api_checktype(L, "json.array", 1, LUA_TTABLE);
	lua_settop(L, 1);
	luaL_setmetatable(L, ARRAY_MT);
	return 1;
}

static int push_json_cfn(lua_State *L)
{
	lua_json_push(L, lua_touserdata(L, 1));
	return 1;
}

int lua_json_decode(lua_State *L)
{
	size_t len;
	const char *s = lua_api_checklstring(L, "json.decode", 1, &len);
	const char *end = NULL;
	size_t at;
	char field[64];
	if (rd_json_find_nul(s, len, &at, field, sizeof(field))) {
		lua_pushnil(L);
		lua_pushfstring(L, "JSON holds a NUL character (\\u0000) near byte %d, which recoveryd does not decode",
		                (int)at);
		return 2;
	}
	cJSON *v = cJSON_ParseWithLengthOpts(s, len, &end, 0);

	if (!v) {
		lua_pushnil(L);
		lua_pushfstring(L, "invalid JSON near byte %d", end ? (int)(end - s) : 0);
		return 2;
	}
	for (const char *p = end; p < s + len; p++)
		if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
			cJSON_Delete(v);
			lua_pushnil(L);
			lua_pushfstring(L, "invalid JSON: unexpected data after the JSON value at byte %d",
			                (int)(p - s));
			return 2;
		}
	/* Protected: a memory error half-way must still free the tree. No
	 * Lua code runs in there, so nothing can yield across it. */
	lua_pushcfunction(L, push_json_cfn);
	lua_pushlightuserdata(L, v);
	int st = lua_pcall(L, 1, 1, 0);
	cJSON_Delete(v);
	if (st != LUA_OK)
		return lua_error(L);
	return 1;
}

void lua_json_open(lua_State *L)
{
	static const luaL_Reg fns[] = {{"encode", l_json_encode},
	                               {"decode", lua_json_decode},
	                               {"array", l_json_array},
	                               {NULL, NULL}};

	/* Attached by C (lua_setmetatable, which skips the sandbox's __gc
	 * check), so Lua must never reach it: a __gc added there would run
	 * with hooks off. */
	if (luaL_newmetatable(L, ARRAY_MT))
		sandbox_protect_metatable(L, -1);
	lua_pop(L, 1);
	luaL_newlib(L, fns);
	lua_pushlightuserdata(L, &null_sentinel);
	lua_setfield(L, -2, "null");
}

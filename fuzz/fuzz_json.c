/* The Lua <-> JSON bridge of the `recovery` module (src/lua_api.c) in a
 * sandboxed state with lua_api_open: v1 = recovery.json.decode(input);
 * when that succeeds, s1 = encode(v1), v2 = decode(s1), and v1 and v2 must
 * be equal (same types, keys, array marks; numbers up to cJSON's rounding,
 * see equal()), and encode(v2) must decode back to exactly v2 (integer and
 * float subtypes included). encode may only refuse for the
 * documented reasons (NaN/infinity, nesting beyond 64).
 *
 * Deep tables: each leading tab of the input wraps v1 in 8 more levels of
 * {k = ...} (up to 72) before one more encode, which must succeed up to
 * 64 levels and refuse beyond. With lua_stack_check.c linked, a push past
 * the C API's guaranteed stack slots aborts (finding 1).
 *
 * Last, the input is decoded again with only 16 KiB of Lua memory left:
 * a memory error half-way must leave no leak behind. */
#include <float.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "support.h"
#include "lua_stack_check.h"
#include "recoveryd/lua_api.h"
#include "recoveryd/sandbox.h"

#define MAX_DEPTH 64 /* to_json's documented limit */

#define MEM_MAX (256u << 20)
#define TIGHT_BUDGET (16u << 10) /* bytes beyond what the state holds */

static struct sandbox sb = {.mem_max = MEM_MAX};
static lua_State *L;

/* Call recovery.json.<fn>(value at idx); leaves the results (1 or 2) on the
 * stack and returns the status. */
static int json_call(const char *fn, int idx)
{
	idx = lua_absindex(L, idx);
	fuzz_stack_reset();
	lua_getglobal(L, "recovery");
	lua_getfield(L, -1, "json");
	lua_getfield(L, -1, fn);
	lua_remove(L, -2);
	lua_remove(L, -2);
	lua_pushvalue(L, idx);
	return lua_pcall(L, 1, 2, 0);
}

/* Deep equality of the values at a and b (absolute indices). exact = 0
 * lets numbers differ in the last bits: cJSON prints a double with 15
 * significant digits when that reads back within DBL_EPSILON (relative), so
 * the first encode may round; after that the value must be a fixed point. */
static int equal(int a, int b, int depth, int exact)
{
	int ta = lua_type(L, a), tb = lua_type(L, b), ok = 1;

	if (depth > MAX_DEPTH + 2)
		return 0;
	if (ta != tb)
		return 0;
	switch (ta) {
	case LUA_TNUMBER:
		if (!exact) {
			double x = lua_tonumber(L, a), y = lua_tonumber(L, b);
			return x == y || fabs(x - y) <= fmax(fabs(x), fabs(y)) * 2 * DBL_EPSILON;
		}
		if (lua_isinteger(L, a) != lua_isinteger(L, b))
			return 0;
		if (lua_isinteger(L, a))
			return lua_tointeger(L, a) == lua_tointeger(L, b);
		return lua_tonumber(L, a) == lua_tonumber(L, b);
	case LUA_TTABLE:
		break;
	default:
		return lua_rawequal(L, a, b);
	}
	luaL_checkstack(L, 8, "equal");
	/* Same metatable (the array mark) or none on both. */
	int ma = lua_getmetatable(L, a), mb = lua_getmetatable(L, b);
	if (ma != mb || (ma && !lua_rawequal(L, -1, -2)))
		ok = 0;
	lua_pop(L, ma + mb);
	if (!ok)
		return 0;
	/* Every key of a is in b with an equal value, and b has no more keys. */
	size_t na = 0, nb = 0;
	lua_pushnil(L);
	while (ok && lua_next(L, a)) {
		na++;
		lua_pushvalue(L, -2);
		lua_rawget(L, b);
		ok = equal(lua_gettop(L) - 1, lua_gettop(L), depth + 1, exact);
		lua_pop(L, 2);
	}
	if (!ok) {
		lua_pop(L, 1);
		return 0;
	}
	lua_pushnil(L);
	while (lua_next(L, b)) {
		nb++;
		lua_pop(L, 1);
	}
	return na == nb;
}

static int encode_refusal_ok(const char *err)
{
	return err && (strstr(err, "NaN or infinity") || strstr(err, "nesting too deep"));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t tabs = 0;
	int v1;

	if (!L) {
		L = sandbox_new(&sb);
		FUZZ_ASSERT(L, "sandbox_new");
		lua_api_open(L, NULL);
		lua_settop(L, 0);
	}
	while (tabs < size && data[tabs] == '\t')
		tabs++;
	lua_settop(L, 0);
	lua_pushlstring(L, (const char *)data, size);
	if (json_call("decode", 1) != LUA_OK) {
		/* Only the memory budget may stop decode. */
		FUZZ_ASSERT(sb.mem_max && strstr(lua_tostring(L, -1), "memory"),
		            "decode raised: %s", lua_tostring(L, -1));
		goto out;
	}
	if (lua_isnil(L, -2)) {
		FUZZ_ASSERT(lua_isstring(L, -1), "decode failed without a message");
		goto out;
	}
	lua_pop(L, 1);
	v1 = lua_gettop(L);

	FUZZ_ASSERT(json_call("encode", v1) == LUA_OK, "encode raised: %s", lua_tostring(L, -1));
	if (lua_isnil(L, -2)) {
		FUZZ_ASSERT(encode_refusal_ok(lua_tostring(L, -1)), "encode refused: %s",
		            lua_tostring(L, -1));
	} else {
		lua_pop(L, 1);
		int s1 = lua_gettop(L);
		FUZZ_ASSERT(lua_type(L, s1) == LUA_TSTRING, "encode gave a %s", luaL_typename(L, s1));
		FUZZ_ASSERT(json_call("decode", s1) == LUA_OK && !lua_isnil(L, -2),
		            "encode's output does not decode: %s", lua_tostring(L, s1));
		lua_pop(L, 1);
		int v2 = lua_gettop(L);
		FUZZ_ASSERT(equal(v1, v2, 0, 0), "decode(encode(v)) differs from v: %s",
		            lua_tostring(L, s1));
		FUZZ_ASSERT(json_call("encode", v2) == LUA_OK && !lua_isnil(L, -2),
		            "encode(decode(encode(v))) failed");
		lua_pop(L, 1);
		FUZZ_ASSERT(json_call("decode", -1) == LUA_OK && !lua_isnil(L, -2), "second decode");
		lua_pop(L, 1);
		FUZZ_ASSERT(equal(v2, lua_gettop(L), 0, 1), "second round trip differs: %s",
		            lua_tostring(L, -2));
	}

	if (tabs) {
		int levels = (int)(tabs > 9 ? 9 : tabs) * 8;
		lua_settop(L, v1);
		for (int i = 0; i < levels; i++) {
			lua_createtable(L, 0, 1);
			lua_insert(L, -2);
			lua_setfield(L, -2, "k");
		}
		fuzz_stack_reset();
		FUZZ_ASSERT(json_call("encode", -1) == LUA_OK, "deep encode raised: %s",
		            lua_tostring(L, -1));
		if (lua_isnil(L, -2))
			FUZZ_ASSERT(encode_refusal_ok(lua_tostring(L, -1)), "deep encode refused: %s",
			            lua_tostring(L, -1));
		else
			FUZZ_ASSERT(levels <= MAX_DEPTH, "encode accepted %d levels of nesting", levels);
	}
out:
	/* decode once more under a tight memory budget: running out of Lua
	 * memory half-way must raise a memory error and leak nothing. */
	lua_settop(L, 0);
	lua_gc(L, LUA_GCCOLLECT, 0);
	lua_pushlstring(L, (const char *)data, size);
	sb.mem_max = sb.mem_used + TIGHT_BUDGET;
	/* A stack that cannot grow for want of memory is reported by
	 * luaL_checkstack as a stack overflow. */
	if (json_call("decode", 1) != LUA_OK)
		FUZZ_ASSERT(strstr(lua_tostring(L, -1), "memory") ||
		                    strstr(lua_tostring(L, -1), "stack overflow"),
		            "decode raised: %s", lua_tostring(L, -1));
	sb.mem_max = MEM_MAX;
	lua_settop(L, 0);
	lua_gc(L, LUA_GCSTEP, 0);
	return 0;
}

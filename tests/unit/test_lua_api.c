/* Unit tests for the C side of src/lua_api.c that the integration suite cannot
 * see: the Lua stack discipline of the JSON bridge, and the settings lock
 * around a binding that raises. liblua is not built with
 * AddressSanitizer, so a C function that pushes past the stack it was given
 * writes into the heap unnoticed; here every block the Lua state allocates
 * carries a canary trailer that is checked when the block is resized or
 * freed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "recoveryd/lua_api.h"

#define CANARY 64
#define CANARY_BYTE 0xA5

static unsigned long canary_broken;
static size_t mem_used, mem_max; /* mem_max 0: no limit */

struct hdr {
	size_t size;
	max_align_t pad;
};

static int canary_ok(const struct hdr *h)
{
	const unsigned char *t = (const unsigned char *)(h + 1) + h->size;
	for (size_t i = 0; i < CANARY; i++)
		if (t[i] != CANARY_BYTE)
			return 0;
	return 1;
}

static void *canary_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct hdr *h = ptr ? (struct hdr *)ptr - 1 : NULL;

	size_t old = h ? h->size : 0;

	(void)ud;
	(void)osize;
	if (h && !canary_ok(h))
		canary_broken++;
	if (nsize == 0) {
		mem_used -= old;
		free(h);
		return NULL;
	}
	if (mem_max && nsize > old && mem_used - old + nsize > mem_max)
		return NULL;
	h = realloc(h, sizeof(*h) + nsize + CANARY);
	if (!h)
		return NULL;
	mem_used = mem_used - old + nsize;
	h->size = nsize;
	memset((unsigned char *)(h + 1) + nsize, CANARY_BYTE, CANARY);
	return h + 1;
}

static lua_State *new_state(void)
{
	lua_State *L = lua_newstate(canary_alloc, NULL);
	assert_non_null(L);
	luaL_openlibs(L);
	/* sandbox_new's module table, which lua_api_open registers into */
	lua_newtable(L);
	lua_setfield(L, LUA_REGISTRYINDEX, "recoveryd.sandbox.loaded");
	lua_api_open(L, NULL);
	return L;
}

static void run(lua_State *L, const char *src)
{
	if (luaL_dostring(L, src) != LUA_OK)
		fail_msg("%s", lua_tostring(L, -1));
}

/* Finding 1 of the security review: json.encode of a value nested 12 or more
 * levels deep wrote past the Lua stack. */
static void test_deep_encode_stays_on_the_stack(void **state)
{
	(void)state;
	canary_broken = 0;
	lua_State *L = new_state();
	run(L, "local v = recovery.json.decode(string.rep('{\"k\":',40)..'1'..string.rep('}',40))\n"
	       "for i = 1, 200 do\n"
	       "  local junk = {} for j = 1, 20 do junk[j] = {j} end\n"
	       "  assert(recovery.json.encode(v))\n"
	       "end\n"
	       "local a = recovery.json.decode(string.rep('[',60)..string.rep(']',60))\n"
	       "assert(recovery.json.encode(a) == string.rep('[',60)..string.rep(']',60))\n");
	/* Deeper than the cap: a clean error, not a crash. */
	run(L, "local t = {} local c = t for i = 1, 200 do c.k = {} c = c.k end\n"
	       "local s, err = recovery.json.encode(t)\n"
	       "assert(s == nil and err:find('too deep'), tostring(err))\n");
	lua_close(L);
	assert_int_equal(canary_broken, 0);
}

/* Decoding deep JSON pushes one level per nesting: it must grow the stack or
 * fail with an error, never overrun it. */
static void test_deep_decode(void **state)
{
	(void)state;
	canary_broken = 0;
	lua_State *L = new_state();
	run(L, "local s = string.rep('[',150)..string.rep(']',150)\n"
	       "local ok, v = pcall(recovery.json.decode, s)\n"
	       "assert(ok)\n");
	lua_close(L);
	assert_int_equal(canary_broken, 0);
}

/* Data after the JSON value is an error, as in the webhook parser, not
 * silently dropped. */
static void test_decode_trailing_data(void **state)
{
	(void)state;
	lua_State *L = new_state();
	run(L, "local v, err = recovery.json.decode('1 garbage')\n"
	       "assert(v == nil and err:find('after the JSON value'), tostring(err))\n"
	       "v, err = recovery.json.decode('{\"a\":1}{\"b\":2}')\n"
	       "assert(v == nil and err, 'two values')\n"
	       "assert(recovery.json.decode('{\"a\":1} \\n\\t').a == 1)\n");
	lua_close(L);
}

/* Finding 2: every metatable C hands to Lua is protected, so a playbook can
 * neither read nor change it (a __gc added there would run with hooks off). */
static void test_metatables_protected(void **state)
{
	(void)state;
	lua_State *L = new_state();
	run(L, "local a = recovery.json.array()\n"
	       "assert(type(getmetatable(a)) ~= 'table', 'array metatable exposed')\n"
	       "assert(not pcall(setmetatable, a, {}))\n"
	       "local d = recovery.json.decode('[1]')\n"
	       "assert(type(getmetatable(d)) ~= 'table', 'decoded array metatable exposed')\n"
	       "assert(recovery.json.encode(recovery.json.array()) == '[]')\n"
	       "assert(recovery.json.encode(recovery.json.decode('[]')) == '[]')\n");
	lua_close(L);
}

/* A memory error half-way through turning decoded JSON into Lua must not
 * leak the cJSON tree (LeakSanitizer reports it at exit). */
static void test_decode_out_of_memory(void **state)
{
	(void)state;
	mem_used = 0;
	lua_State *L = new_state();
	run(L, "local parts = {} for i = 1, 3000 do parts[i] = '{\"k\":[1,2,3,\"abcdefgh\"]}' end\n"
	       "s = '[' .. table.concat(parts, ',') .. ']'\n"
	       "collectgarbage()\n");
	mem_max = mem_used + 64 * 1024;
	run(L, "local failed = 0\n"
	       "for i = 1, 20 do\n"
	       "  local ok, err = pcall(recovery.json.decode, s)\n"
	       "  if not ok then failed = failed + 1 end\n"
	       "end\n"
	       "assert(failed == 20, 'the budget did not run out')\n");
	mem_max = 0;
	lua_close(L);
}

/* recovery.http read its default timeout with the settings lock held while
 * luaL_optnumber could raise: a bad timeout left the lock taken, and the
 * next binding that takes it (here recovery.secret) hung the thread. */
static void test_http_bad_timeout_keeps_settings_usable(void **state)
{
	(void)state;
	lua_State *L = new_state();
	run(L, "local ok, err = pcall(recovery.http, {url = 'http://127.0.0.1/', timeout = 'soon'})\n"
	       "assert(not ok and tostring(err):find('number expected'), tostring(err))\n"
	       "local v, e = recovery.secret('token')\n"
	       "assert(v == nil and e:find('no secrets directory'), tostring(e))\n");
	lua_close(L);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_deep_encode_stays_on_the_stack),
		cmocka_unit_test(test_deep_decode),
		cmocka_unit_test(test_metatables_protected),
		cmocka_unit_test(test_decode_out_of_memory),
		cmocka_unit_test(test_decode_trailing_data),
		cmocka_unit_test(test_http_bad_timeout_keeps_settings_usable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

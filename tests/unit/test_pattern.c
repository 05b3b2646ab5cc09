/* The sandbox's pattern functions (src/pattern.c) against the stock Lua
 * string library: the same chunk runs in both and must print the same, and
 * a catastrophically backtracking pattern is stopped by the deadline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

#include "recoveryd/common.h"
#include "recoveryd/sandbox.h"

static char *cases;
static size_t cases_len;

static int setup(void **state)
{
	(void)state;
	cases = rd_read_file(TESTS_DIR "/unit/pattern_cases.lua", 1 << 20, &cases_len, 0);
	return cases ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	free(cases);
	return 0;
}

/* The chunk's output as a C string; %q in the chunk keeps NULs out of it. */
static char *result(lua_State *L)
{
	size_t len;
	const char *s = lua_tolstring(L, -1, &len);
	assert_non_null(s);
	assert_int_equal(strlen(s), len);
	return strdup(s);
}

static char *run_stock(void)
{
	lua_State *L = luaL_newstate();
	char *r;
	luaL_openlibs(L);
	assert_int_equal(luaL_loadbuffer(L, cases, cases_len, "=cases"), LUA_OK);
	assert_int_equal(lua_pcall(L, 0, 1, 0), LUA_OK);
	r = result(L);
	lua_close(L);
	return r;
}

static char *run_sandbox(void)
{
	struct sandbox sb = {.mem_max = 64 << 20};
	lua_State *L = sandbox_new(&sb);
	char *r;
	sb.deadline = rd_mono() + 10;
	assert_int_equal(sandbox_load(L, cases, cases_len, "=cases"), LUA_OK);
	assert_int_equal(sandbox_call(L, 0, 1), LUA_OK);
	r = result(L);
	lua_close(L);
	return r;
}

static void test_same_results_as_stock_lua(void **state)
{
	(void)state;
	char *a = run_stock(), *b = run_sandbox();
	assert_true(strlen(a) > 200); /* the chunk really produced its lines */
	assert_string_equal(b, a);
	free(a);
	free(b);
}

static void expect_deadline(const char *chunk)
{
	struct sandbox sb = {.mem_max = 64 << 20};
	lua_State *L = sandbox_new(&sb);
	double t0 = rd_mono();
	sb.deadline = t0 + 0.5;
	assert_int_equal(sandbox_load(L, chunk, strlen(chunk), "=t"), LUA_OK);
	assert_int_not_equal(sandbox_call(L, 0, 1), LUA_OK);
	assert_true(sb.timed_out);
	assert_true(rd_mono() - t0 < 3.0);
	assert_non_null(strstr(lua_tostring(L, -1), "deadline"));
	lua_close(L);
}

static void test_backtracking_is_stopped(void **state)
{
	(void)state;
	expect_deadline("return string.find(string.rep('a', 40), string.rep('a*', 25) .. 'b')");
	expect_deadline("return ('x'):rep(200000):find('.-y')");
	expect_deadline("for w in ('a'):rep(50):gmatch(('a*'):rep(20) .. 'b') do end");
	expect_deadline("return ('a'):rep(50):gsub(('a-'):rep(20) .. 'b', '')");
}

static void test_backtracking_in_pcall_is_stopped(void **state)
{
	(void)state;
	expect_deadline("while true do pcall(string.match, ('a'):rep(40), ('a*'):rep(25) .. 'b') end");
}

/* The one intended difference from lstrlib: its gmatch iterator, called
 * again after "pattern too complex", has lost the recursion limit (and
 * matches); ours starts every match with the full limit. */
static void test_gmatch_keeps_its_limit_after_an_error(void **state)
{
	(void)state;
	static const char chunk[] = "local it = string.gmatch(('a'):rep(300), ('a?'):rep(250))\n"
	                            "local _, e1 = pcall(it)\n"
	                            "local _, e2 = pcall(it)\n"
	                            "return e1 .. '|' .. e2";
	struct sandbox sb = {.mem_max = 64 << 20};
	lua_State *L = sandbox_new(&sb);
	sb.deadline = rd_mono() + 10;
	assert_int_equal(sandbox_load(L, chunk, strlen(chunk), "=t"), LUA_OK);
	assert_int_equal(sandbox_call(L, 0, 1), LUA_OK);
	assert_string_equal(lua_tostring(L, -1), "pattern too complex|pattern too complex");
	lua_close(L);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_results_as_stock_lua),
		cmocka_unit_test(test_backtracking_is_stopped),
		cmocka_unit_test(test_backtracking_in_pcall_is_stopped),
		cmocka_unit_test(test_gmatch_keeps_its_limit_after_an_error),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}

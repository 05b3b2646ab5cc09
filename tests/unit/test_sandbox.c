/* Unit tests for src/sandbox.c: the allow-list of DESIGN.md §4, require from
 * the Lua path only, the deadline hook (also inside pcall, xpcall and C
 * callbacks) and the memory budget. Every escape attempt must come back as
 * a Lua value or an error status, with this process still running. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "recoveryd/common.h"
#include "recoveryd/sandbox.h"

#define MEM_MAX (16u * 1024 * 1024)
#define DEADLINE 1.0   /* seconds given to every chunk */
#define STOP_WITHIN 3.0 /* a runaway chunk must be stopped by then */

static char lua_dir[256];

struct fx {
	struct sandbox sb;
	lua_State *L;
};

/* ---- temp Lua path ------------------------------------------------------ */

static void write_file(const char *rel, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", lua_dir, rel);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static void make_dir(const char *rel)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", lua_dir, rel);
	assert_int_equal(mkdir(path, 0700), 0);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int group_setup(void **state)
{
	const char *tmp = getenv("TMPDIR");

	(void)state;
	snprintf(lua_dir, sizeof(lua_dir), "%s/rd-sandbox-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(lua_dir))
		return -1;
	/* loads counts how often the module body ran: require must cache */
	write_file("counted.lua", "loads = (loads or 0) + 1\n"
	                          "return { name = ..., value = 42 }\n");
	write_file("nothing.lua", "x_from_nothing = true\n");
	make_dir("pkg");
	write_file("pkg/sub.lua", "return { who = 'pkg.sub' }\n");
	make_dir("pkg2");
	write_file("pkg2/init.lua", "return { who = 'pkg2' }\n");
	write_file("broken.lua", "return {\n");
	write_file("bytecode.lua", "\x1bLua\x54\x00 not really bytecode");
	write_file("spin.lua", "while true do end\n");
	/* a module that requires a sibling, for nested require */
	write_file("outer.lua", "local s = require 'pkg.sub' return { inner = s.who }\n");
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	return nftw(lua_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	f->sb.mem_max = MEM_MAX;
	f->sb.lua_path = lua_dir;
	f->L = sandbox_new(&f->sb);
	if (!f->L) {
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

/* Closing a state must give back every byte it was charged. */
static int teardown(void **state)
{
	struct fx *f = *state;
	int rc = 0;

	if (f->L)
		lua_close(f->L);
	if (f->sb.mem_used != 0) {
		print_error("mem_used after lua_close: %zu\n", f->sb.mem_used);
		rc = -1;
	}
	free(f);
	return rc;
}

/* ---- helpers ------------------------------------------------------------ */

/* Load and run src with nres results; the status of whichever step failed. */
static int run(lua_State *L, const char *src, int nres)
{
	int st;

	sandbox_of(L)->deadline = rd_mono() + DEADLINE;
	st = sandbox_load(L, src, strlen(src), "=test");
	if (st != LUA_OK)
		return st;
	return sandbox_call(L, 0, nres);
}

static void run_ok(lua_State *L, const char *src, int nres)
{
	int top = lua_gettop(L);
	int st = run(L, src, nres);

	if (st != LUA_OK)
		fail_msg("chunk failed (%d): %s\n--\n%s", st, lua_tostring(L, -1), src);
	assert_int_equal(lua_gettop(L), top + nres);
}

/* Run src, expect an error whose message contains want. */
static void run_err(lua_State *L, const char *src, const char *want)
{
	int top = lua_gettop(L);
	int st = run(L, src, 1);
	const char *msg;

	if (st == LUA_OK)
		fail_msg("chunk should have failed\n--\n%s", src);
	assert_int_equal(lua_gettop(L), top + 1);
	msg = lua_tostring(L, -1);
	assert_non_null(msg);
	if (!strstr(msg, want))
		fail_msg("error '%s' does not contain '%s'\n--\n%s", msg, want, src);
	lua_settop(L, top);
}

/* Run src that returns one string, compare it. */
static void expect_str(lua_State *L, const char *src, const char *want)
{
	run_ok(L, src, 1);
	if (lua_type(L, -1) != LUA_TSTRING)
		fail_msg("got a %s, want the string '%s'\n--\n%s", luaL_typename(L, -1), want, src);
	assert_string_equal(lua_tostring(L, -1), want);
	lua_pop(L, 1);
}

/* Run a runaway chunk: it must fail with a deadline message, in time. */
static void expect_stopped(struct fx *f, const char *src)
{
	double t0 = rd_mono(), dt;

	run_err(f->L, src, "deadline exceeded");
	dt = rd_mono() - t0;
	if (dt > STOP_WITHIN)
		fail_msg("stopped after %.2f s (deadline %.1f s)\n--\n%s", dt, DEADLINE, src);
	assert_true(dt >= DEADLINE * 0.9);
	assert_int_equal(f->sb.timed_out, 1);
}

/* ---- the allow-list ----------------------------------------------------- */

static void test_globals_absent(void **state)
{
	struct fx *f = *state;
	static const char *const absent[] = {
		"io", "debug", "package", "dofile", "loadfile", "os.execute", "os.getenv", "os.exit",
		"os.remove", "os.rename", "os.tmpname", "os.setlocale", "string.dump", "('').dump",
		"load('return io')()", "('').dump", "warn",
		/* the shared string metatable is protected */
		"type(getmetatable('')) == 'table' or nil",
	};
	char src[128];

	for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++) {
		snprintf(src, sizeof(src), "local ok, v = pcall(function() return %s end)"
		         " return ok and v == nil and 'nil' or tostring(v)", absent[i]);
		expect_str(f->L, src, "nil");
	}
}

static void test_allowed_present(void **state)
{
	struct fx *f = *state;

	expect_str(f->L, "return type(os.time())", "number");
	expect_str(f->L, "return type(os.clock())", "number");
	expect_str(f->L, "return os.date('!%Y-%m-%d', 86400)", "1970-01-02");
	expect_str(f->L, "return tostring(os.time{year=2020, month=1, day=1, hour=12} > 0)", "true");
	expect_str(f->L, "return string.format('%s-%d', ('ab'):upper(), math.floor(2.5))", "AB-2");
	expect_str(f->L, "local t = {3, 1, 2} table.sort(t) return table.concat(t, ',')", "1,2,3");
	expect_str(f->L, "return utf8.char(0x48, 0x49)", "HI");
	expect_str(f->L, "local co = coroutine.wrap(function(a) local b = coroutine.yield(a + 1)"
	                 " return b * 2 end) return tostring(co(1)) .. ':' .. tostring(co(5))",
	           "2:10");
	expect_str(f->L, "return select('#', pcall(error, 'x')) .. tostring(select(2, pcall(error, 'x')))",
	           "2x");
	expect_str(f->L, "return tostring(xpcall(function(a, b) return a + b end, print, 1, 2))",
	           "true");
	expect_str(f->L, "local ok, s, p = xpcall(function(a, b) return a + b, a * b end,"
	                 " function(m) return m end, 3, 4) return tostring(ok) .. s .. p",
	           "true712");
	expect_str(f->L, "local ok, e = xpcall(function() error('boom', 0) end,"
	                 " function(m) return 'handled:' .. m end) return tostring(ok) .. e",
	           "falsehandled:boom");
}

/* Calling something removed is an ordinary Lua error, nothing more. */
static void test_removed_calls_fail(void **state)
{
	struct fx *f = *state;

	run_err(f->L, "os.exit(3)", "attempt to call a nil value");
	run_err(f->L, "os.execute('true')", "attempt to call a nil value");
	run_err(f->L, "return io.open('/etc/passwd')", "attempt to index a nil value");
	run_err(f->L, "return dofile('/etc/passwd')", "attempt to call a nil value");
	run_err(f->L, "return loadfile('/etc/passwd')", "attempt to call a nil value");
	run_err(f->L, "return package.loadlib('libc.so.6', 'system')", "attempt to index a nil value");
	run_err(f->L, "return debug.sethook()", "attempt to index a nil value");
	/* still alive and well */
	expect_str(f->L, "return 'alive'", "alive");
}

static void test_load_text_only(void **state)
{
	struct fx *f = *state;

	expect_str(f->L, "return tostring(load('return 2 + 3')())", "5");
	expect_str(f->L, "return load('return x', 'chunk', 't', { x = 'env' })()", "env");
	expect_str(f->L, "local fn, e = load('return +') return fn == nil"
	                 " and tostring(e:find('unexpected symbol') ~= nil) or 'loaded'",
	           "true");
	/* a binary chunk: nil and an error, whatever mode is asked for */
	expect_str(f->L, "local fn, e = load('\\27LuaT\\0\\25\\147\\r\\n\\26\\n')"
	                 " return tostring(fn) .. ':' .. tostring(e and e:find('attempt to load a binary chunk', 1, true) ~= nil)",
	           "nil:true");
	expect_str(f->L, "local fn, e = load('\\27Lua junk', 'x', 'b')"
	                 " return tostring(fn) .. ':' .. tostring(e and e:find('attempt to load a binary chunk', 1, true) ~= nil)",
	           "nil:true");
	expect_str(f->L, "local fn, e = load('\\27Lua junk', 'x', 'bt')"
	                 " return tostring(fn) .. ':' .. tostring(e and e:find('attempt to load a binary chunk', 1, true) ~= nil)",
	           "nil:true");
	/* a reader function is refused too (it could deliver bytecode) */
	run_err(f->L, "local n = 0 return load(function() n = n + 1 if n == 1 then"
	              " return 'return 1' end end)",
	        "only string chunks");
}

static void test_sandbox_load_refuses_binary(void **state)
{
	struct fx *f = *state;
	static const char bin[] = "\x1bLuaT\x00\x19\x93\r\n\x1a\n";
	int top = lua_gettop(f->L);

	assert_int_not_equal(sandbox_load(f->L, bin, sizeof(bin) - 1, "=bin"), LUA_OK);
	assert_non_null(strstr(lua_tostring(f->L, -1), "attempt to load a binary chunk"));
	lua_settop(f->L, top);
	assert_int_equal(sandbox_load(f->L, "return 1 +", 10, "=named"), LUA_ERRSYNTAX);
	assert_non_null(strstr(lua_tostring(f->L, -1), "named:1:"));
	lua_settop(f->L, top);
	assert_ptr_equal(sandbox_of(f->L), &f->sb);
}

/* Playbooks are compiled once and loaded as bytecode per attempt: the
 * result and the file:line of errors are those of the text; a compile error
 * comes back as a message; user code still cannot load binary chunks. */
static void test_compiled_chunks(void **state)
{
	struct fx *f = *state;
	static const char src[] = "local t = ...\nif t == 'boom' then error('boom') end\n"
	                          "return (t or 'x') .. type(string)";
	char err[256];
	size_t len = 0;
	char *bc = sandbox_compile(src, sizeof(src) - 1, "@pb.lua", &len, err, sizeof(err));

	assert_non_null(bc);
	assert_true(len > 0);
	assert_int_equal(sandbox_load_compiled(f->L, bc, len, "@pb.lua"), LUA_OK);
	lua_pushliteral(f->L, "ok-");
	assert_int_equal(sandbox_call(f->L, 1, 1), LUA_OK);
	assert_string_equal(lua_tostring(f->L, -1), "ok-table");
	lua_pop(f->L, 1);
	assert_int_equal(sandbox_load_compiled(f->L, bc, len, "@pb.lua"), LUA_OK);
	lua_pushliteral(f->L, "boom");
	assert_int_not_equal(sandbox_call(f->L, 1, 1), LUA_OK);
	assert_non_null(strstr(lua_tostring(f->L, -1), "pb.lua:2: boom"));
	lua_pop(f->L, 1);
	/* text is not bytecode */
	assert_int_not_equal(sandbox_load_compiled(f->L, src, sizeof(src) - 1, "@pb.lua"), LUA_OK);
	lua_pop(f->L, 1);
	free(bc);
	assert_null(sandbox_compile("return 1 +", 10, "@bad.lua", &len, err, sizeof(err)));
	assert_non_null(strstr(err, "bad.lua:1:"));
	/* and the playbook itself still cannot load bytecode */
	expect_str(f->L, "local ok, err = load(string.char(27) .. 'LuaT') return tostring(ok)", "nil");
}

/* ---- sandbox_call's contract -------------------------------------------- */

static void test_call_results_and_args(void **state)
{
	struct fx *f = *state;
	lua_State *L = f->L;
	int top = lua_gettop(L);
	const char *src;

	/* nres pads with nil */
	run_ok(L, "return 1", 3);
	assert_int_equal(lua_tointeger(L, -3), 1);
	assert_true(lua_isnil(L, -2));
	assert_true(lua_isnil(L, -1));
	lua_settop(L, top);
	/* and truncates */
	run_ok(L, "return 'a', 'b', 'c'", 1);
	assert_string_equal(lua_tostring(L, -1), "a");
	lua_settop(L, top);
	/* LUA_MULTRET keeps them all */
	assert_int_equal(run(L, "return 'a', 'b', 'c'", LUA_MULTRET), LUA_OK);
	assert_int_equal(lua_gettop(L), top + 3);
	assert_string_equal(lua_tostring(L, -1), "c");
	lua_settop(L, top);
	/* arguments pushed above the function */
	lua_pushinteger(L, 99); /* something below that must survive */
	src = "local a, b = ... return a * b, a + b";
	assert_int_equal(sandbox_load(L, src, strlen(src), "=args"), LUA_OK);
	lua_pushinteger(L, 6);
	lua_pushinteger(L, 7);
	f->sb.deadline = rd_mono() + DEADLINE;
	assert_int_equal(sandbox_call(L, 2, 2), LUA_OK);
	assert_int_equal(lua_gettop(L), top + 3);
	assert_int_equal(lua_tointeger(L, -2), 42);
	assert_int_equal(lua_tointeger(L, -1), 13);
	assert_int_equal(lua_tointeger(L, -3), 99);
	lua_settop(L, top);
	/* a runtime error leaves just the message */
	lua_pushinteger(L, 99);
	assert_int_equal(run(L, "error('went wrong', 0)", 2), LUA_ERRRUN);
	assert_int_equal(lua_gettop(L), top + 2);
	assert_string_equal(lua_tostring(L, -1), "went wrong");
	assert_int_equal(lua_tointeger(L, -2), 99);
	lua_settop(L, top);
	/* an error value that is not a string is passed through */
	assert_int_equal(run(L, "error({ code = 7 })", 1), LUA_ERRRUN);
	assert_true(lua_istable(L, -1));
	lua_settop(L, top);
	/* yielding out of a non-yielding call is refused */
	run_err(L, "coroutine.yield(1) return 'resumed'", "yield is not allowed");
	assert_int_equal(f->sb.timed_out, 0);
	/* the state is still fine */
	expect_str(L, "return 'ok'", "ok");
}

/* ---- require ------------------------------------------------------------ */

static void test_require_path(void **state)
{
	struct fx *f = *state;

	expect_str(f->L, "local a = require 'counted' local b = require('counted')"
	                 " return tostring(a == b) .. ':' .. a.value .. ':' .. a.name .. ':' .. loads",
	           "true:42:counted:1");
	/* still cached in a later chunk on the same state */
	expect_str(f->L, "return tostring(require('counted').value) .. ':' .. loads", "42:1");
	expect_str(f->L, "return require('pkg.sub').who", "pkg.sub");
	expect_str(f->L, "return require('pkg2').who", "pkg2");
	expect_str(f->L, "return require('outer').inner", "pkg.sub");
	/* a module that returns nothing gives true, and ran once */
	expect_str(f->L, "return tostring(require('nothing')) .. tostring(x_from_nothing)"
	                 " .. tostring(require('nothing'))",
	           "truetruetrue");
}

static void test_require_refused(void **state)
{
	struct fx *f = *state;
	static const struct {
		const char *name;
		const char *want;
	} cases[] = {
		{ "../x", "invalid module name" },
		{ "..counted", "invalid module name" },
		{ ".counted", "invalid module name" },
		{ "/etc/passwd", "invalid module name" },
		{ "pkg/sub", "invalid module name" },
		{ "pkg..sub", "invalid module name" },
		{ "", "invalid module name" },
		{ "a b", "invalid module name" },
		{ "missing", "not found" },
		{ "pkg.missing", "not found" },
		{ "io", "not found" },
		{ "os", "not found" },
		{ "debug", "not found" },
		{ "package", "not found" },
		{ "broken", "broken.lua:" },
		{ "bytecode", "attempt to load a binary chunk" },
	};
	char src[128];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(src, sizeof(src), "return require(\"%s\")", cases[i].name);
		run_err(f->L, src, cases[i].want);
		/* and pcall can catch it */
		snprintf(src, sizeof(src), "local ok, e = pcall(require, \"%s\")"
		         " return tostring(ok) .. ':' .. tostring(e)", cases[i].name);
		run_ok(f->L, src, 1);
		assert_non_null(strstr(lua_tostring(f->L, -1), "false:"));
		assert_non_null(strstr(lua_tostring(f->L, -1), cases[i].want));
		lua_pop(f->L, 1);
	}
	/* a failed require is not cached as a success */
	run_err(f->L, "return require('broken')", "broken.lua:");
	/* the standard library tables are not modules here */
	run_err(f->L, "return require('string')", "not found");
}

static void test_require_without_path(void **state)
{
	struct sandbox sb = { .mem_max = MEM_MAX };
	lua_State *L = sandbox_new(&sb);

	(void)state;
	assert_non_null(L);
	run_err(L, "return require('counted')", "no Lua path");
	lua_close(L);
	assert_int_equal(sb.mem_used, 0);
}

static void test_preload(void **state)
{
	struct fx *f = *state;
	int top = lua_gettop(f->L);

	lua_newtable(f->L);
	lua_pushstring(f->L, "preloaded");
	lua_setfield(f->L, -2, "who");
	sandbox_preload(f->L, "pre");
	assert_int_equal(lua_gettop(f->L), top);
	expect_str(f->L, "return tostring(require('pre') == require('pre')) .. require('pre').who",
	           "truepreloaded");
	/* a preloaded name wins over a file of the same name */
	lua_pushstring(f->L, "not the file");
	sandbox_preload(f->L, "counted");
	expect_str(f->L, "return require('counted')", "not the file");
}

/* ---- the deadline ------------------------------------------------------- */

static void test_deadline_plain_loop(void **state)
{
	expect_stopped(*state, "while true do end");
}

static void test_deadline_pcall(void **state)
{
	expect_stopped(*state, "pcall(function() while true do end end) return 'escaped'");
}

static void test_deadline_xpcall(void **state)
{
	expect_stopped(*state, "xpcall(function() while true do end end, function(m) return m end)"
	                       " return 'escaped'");
}

static void test_deadline_pcall_in_loop(void **state)
{
	expect_stopped(*state, "while true do pcall(function() while true do end end) end");
}

static void test_deadline_nested_pcall(void **state)
{
	expect_stopped(*state, "while true do pcall(pcall, pcall, function()"
	                       " xpcall(function() while true do end end, function() end) end) end");
}

static void test_deadline_sort_comparator(void **state)
{
	expect_stopped(*state, "local t = {} for i = 1, 100 do t[i] = i end"
	                       " table.sort(t, function(a, b) while true do end end)"
	                       " return 'escaped'");
}

/* Where the hook cannot yield it raises; pcall must not swallow that. */
static void test_deadline_sort_in_pcall(void **state)
{
	expect_stopped(*state, "local t = {} for i = 1, 100 do t[i] = i end"
	                       " pcall(table.sort, t, function(a, b) while true do end end)"
	                       " return 'escaped'");
}

static void test_deadline_sort_in_xpcall(void **state)
{
	expect_stopped(*state, "local t = {} for i = 1, 100 do t[i] = i end"
	                       " xpcall(table.sort, function(m) return m end, t,"
	                       " function(a, b) while true do end end) return 'escaped'");
}

static void test_deadline_gsub_callback(void **state)
{
	expect_stopped(*state, "while true do pcall(string.gsub, 'abc', '%w',"
	                       " function() while true do end end) end");
}

static void test_deadline_metamethod(void **state)
{
	expect_stopped(*state, "local t = setmetatable({}, { __index = function()"
	                       " while true do end end }) while true do pcall(function() return t.x end) end");
}

static void test_deadline_coroutines(void **state)
{
	expect_stopped(*state, "while true do local co = coroutine.wrap(function()"
	                       " while true do end end) pcall(co) end");
}

/* Runaways that could hang for good run in a child with a watchdog, so a
 * regression fails this test instead of stalling the whole suite. The child
 * must see the deadline error in time and close its state in time too. */
static void expect_stopped_in_child(const char *src, const char *want)
{
	int status;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sandbox sb = { .mem_max = MEM_MAX, .lua_path = lua_dir };
		lua_State *L = sandbox_new(&sb);
		const char *msg;
		int st;

		alarm((unsigned)(STOP_WITHIN + 2));
		if (!L)
			_exit(12);
		st = run(L, src, 1);
		msg = lua_tostring(L, -1);
		if (st == LUA_OK || !msg || !strstr(msg, want))
			_exit(10);
		lua_close(L);
		_exit(sb.mem_used == 0 ? 0 : 11);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
		fail_msg("not stopped within %.0f s: the hook never fired\n--\n%s", STOP_WITHIN + 2, src);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("child status 0x%x (10: no '%s' error, 11: memory leak)\n--\n%s", status, want,
		         src);
}

static void test_deadline_error_handler(void **state)
{
	(void)state;
	/* the handler's loop is stopped, then the handler runs again for the
	 * hook's own error: it must be stopped that time too */
	expect_stopped_in_child("while true do xpcall(error, function() while true do end end) end",
	                        "deadline exceeded");
	expect_stopped_in_child("xpcall(table.sort, function() while true do end end, {3, 2, 1},"
	                        " function() while true do end end) return 'escaped'",
	                        "deadline exceeded");
}

/* Finalizers run with hooks off: an endless __gc must not be possible. */
static void test_deadline_finalizer(void **state)
{
	(void)state;
	expect_stopped_in_child("setmetatable({}, { __gc = function() while true do end end })"
	                        " collectgarbage() while true do end",
	                        "__gc");
	/* a __gc added after setmetatable is never called (Lua 5.4 semantics) */
	expect_stopped_in_child("local mt = {} local t = setmetatable({}, mt)"
	                        " mt.__gc = function() while true do end end"
	                        " t = nil collectgarbage() collectgarbage() while true do end",
	                        "deadline exceeded");
	/* setmetatable still works without __gc */
	expect_stopped_in_child("local t = setmetatable({}, { __index = function() return 1 end })"
	                        " assert(t.x == 1 and getmetatable(t).__index)"
	                        " while true do end",
	                        "deadline exceeded");
}

static void test_deadline_require(void **state)
{
	expect_stopped(*state, "while true do pcall(require, 'spin') end");
}

/* A short chunk well inside the deadline is untouched by the hook. */
static void test_deadline_not_hit(void **state)
{
	struct fx *f = *state;
	const char *src;

	expect_str(f->L, "local s = 0 for i = 1, 200000 do s = s + i end return tostring(s)",
	           "20000100000");
	assert_int_equal(f->sb.timed_out, 0);
	/* deadline 0 = none */
	src = "local s = 0 for i = 1, 100000 do s = s + 1 end return s";
	assert_int_equal(sandbox_load(f->L, src, strlen(src), "=nodeadline"), LUA_OK);
	f->sb.deadline = 0;
	assert_int_equal(sandbox_call(f->L, 0, 1), LUA_OK);
	assert_int_equal(lua_tointeger(f->L, -1), 100000);
	lua_pop(f->L, 1);
	assert_int_equal(f->sb.timed_out, 0);
}

/* ---- memory ------------------------------------------------------------- */

static void test_memory_bomb(void **state)
{
	struct fx *f = *state;
	int top = lua_gettop(f->L);
	int st;

	st = run(f->L, "local t = {} while true do t[#t + 1] = string.rep('x', 1e5) end", 1);
	assert_int_equal(st, LUA_ERRMEM);
	assert_string_equal(lua_tostring(f->L, -1), "not enough memory");
	assert_true(f->sb.mem_used <= f->sb.mem_max);
	assert_true(f->sb.mem_used > 0);
	lua_settop(f->L, top);
	lua_close(f->L);
	f->L = NULL;
	assert_int_equal(f->sb.mem_used, 0); /* and teardown checks it again */
}

static void test_memory_bomb_in_pcall(void **state)
{
	struct fx *f = *state;
	size_t before;

	run_ok(f->L, "collectgarbage() collectgarbage() return 0", 1);
	lua_pop(f->L, 1);
	before = f->sb.mem_used;
	expect_str(f->L, "local ok, e = pcall(function() local t = {}"
	                 " while true do t[#t + 1] = string.rep('x', 1e5) end end)"
	                 " return tostring(ok) .. ':' .. tostring(e)",
	           "false:not enough memory");
	/* the status says what the message cannot: the budget ran out */
	assert_int_equal(f->sb.caught_status, LUA_ERRMEM);
	assert_true(f->sb.mem_used <= f->sb.mem_max);
	/* the state is still usable, and the garbage can go */
	expect_str(f->L, "collectgarbage() collectgarbage()"
	                 " return tostring(#string.rep('y', 1e6))",
	           "1000000");
	run_ok(f->L, "collectgarbage() collectgarbage() return 0", 1);
	lua_pop(f->L, 1);
	assert_true(f->sb.mem_used < before + 256 * 1024);
	/* one big allocation past the budget fails cleanly too */
	expect_str(f->L, "local ok, e = pcall(string.rep, 'x', 64 * 1024 * 1024)"
	                 " return tostring(ok) .. ':' .. tostring(e)",
	           "false:not enough memory");
	assert_int_equal(f->sb.caught_status, LUA_ERRMEM);
	/* the words in a playbook's own error are a runtime error */
	expect_str(f->L, "local ok, e = pcall(function() error('not enough memory') end)"
	                 " return tostring(ok) .. ':' .. tostring(e)",
	           "false:test:1: not enough memory");
	assert_int_equal(f->sb.caught_status, LUA_ERRRUN);
	expect_str(f->L, "local ok, e = pcall(error, {})"
	                 " return tostring(ok) .. ':' .. type(e)",
	           "false:table");
	assert_int_equal(f->sb.caught_status, LUA_ERRRUN);
	/* Lua 5.4's lua_error raises the memory message itself (exactly that
	 * string, as a caught memory error rethrown with level 0 is) as a
	 * memory error again */
	expect_str(f->L, "local ok, e = pcall(error, 'not enough memory', 0)"
	                 " return tostring(ok) .. ':' .. tostring(e)",
	           "false:not enough memory");
	assert_int_equal(f->sb.caught_status, LUA_ERRMEM);
	expect_str(f->L, "local ok, e = xpcall(string.rep, function(m) return m end, 'x', 64 * 1024 * 1024)"
	                 " return tostring(ok) .. ':' .. tostring(e)",
	           "false:not enough memory");
	assert_int_equal(f->sb.caught_status, LUA_ERRMEM);
	expect_str(f->L, "return tostring(1 + 1)", "2");
}

static void test_memory_budget_respected(void **state)
{
	struct sandbox sb = { .mem_max = 2u * 1024 * 1024 };
	lua_State *L = sandbox_new(&sb);

	(void)state;
	assert_non_null(L);
	expect_str(L, "local ok = pcall(string.rep, 'x', 3 * 1024 * 1024) return tostring(ok)", "false");
	expect_str(L, "local ok = pcall(string.rep, 'x', 512 * 1024) return tostring(ok)", "true");
	assert_true(sb.mem_used <= sb.mem_max);
	lua_close(L);
	assert_int_equal(sb.mem_used, 0);
}

/* After all of the above, in this same process, a new state just works. */
static void test_fresh_sandbox_after_all(void **state)
{
	struct sandbox sb = { .mem_max = MEM_MAX, .lua_path = lua_dir };
	lua_State *L = sandbox_new(&sb);

	(void)state;
	assert_non_null(L);
	assert_int_equal(sb.timed_out, 0);
	run_ok(L, "return 1 + 1", 1);
	assert_int_equal(lua_tointeger(L, -1), 2);
	lua_pop(L, 1);
	expect_str(L, "return require('pkg.sub').who", "pkg.sub");
	lua_close(L);
	assert_int_equal(sb.mem_used, 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_globals_absent),
		T(test_allowed_present),
		T(test_removed_calls_fail),
		T(test_load_text_only),
		T(test_sandbox_load_refuses_binary),
		T(test_compiled_chunks),
		T(test_call_results_and_args),
		T(test_require_path),
		T(test_require_refused),
		cmocka_unit_test(test_require_without_path),
		T(test_preload),
		T(test_deadline_plain_loop),
		T(test_deadline_pcall),
		T(test_deadline_xpcall),
		T(test_deadline_pcall_in_loop),
		T(test_deadline_nested_pcall),
		T(test_deadline_sort_comparator),
		T(test_deadline_sort_in_pcall),
		T(test_deadline_sort_in_xpcall),
		T(test_deadline_gsub_callback),
		T(test_deadline_metamethod),
		T(test_deadline_coroutines),
		cmocka_unit_test(test_deadline_error_handler),
		cmocka_unit_test(test_deadline_finalizer),
		T(test_deadline_require),
		T(test_deadline_not_hit),
		T(test_memory_bomb),
		T(test_memory_bomb_in_pcall),
		cmocka_unit_test(test_memory_budget_respected),
		cmocka_unit_test(test_fresh_sandbox_after_all),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

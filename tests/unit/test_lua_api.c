/* Unit tests for the C side of src/lua_api.c that the integration suite cannot
 * see: the Lua stack discipline of the JSON bridge, the settings lock
 * around a binding that raises, and which errors are permanent (the error
 * value that ends the job without retries). liblua is not built with
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
#include <unistd.h>

#include <cmocka.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "recoveryd/common.h"
#include "recoveryd/job.h"
#include "recoveryd/lua_api.h"
#include "recoveryd/op.h"

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

/* A job whose attempt runs in the state's main thread, with a host that
 * keeps what is recorded and refuses to start anything. */
static lua_State *host_L;
static cJSON *recorded;

static int host_begin(struct job *j, struct op *op, char *err, size_t errlen)
{
	(void)j;
	(void)op;
	snprintf(err, errlen, "not in this test");
	return -1;
}

static double host_deadline(struct job *j)
{
	(void)j;
	return rd_mono() + 10;
}

static lua_State *host_thread(struct job *j)
{
	(void)j;
	return host_L;
}

static void host_record(struct job *j, const char *type, cJSON *detail, int planned)
{
	(void)j;
	cJSON_AddStringToObject(detail, "type", type);
	cJSON_AddBoolToObject(detail, "planned", planned);
	cJSON_AddItemToArray(recorded, detail);
}

static const struct op_host test_host = {host_begin, host_deadline, host_thread, host_record};

static lua_State *new_job_state(struct job *j, int dry_run)
{
	lua_State *L = lua_newstate(canary_alloc, NULL);
	assert_non_null(L);
	luaL_openlibs(L);
	lua_newtable(L);
	lua_setfield(L, LUA_REGISTRYINDEX, "recoveryd.sandbox.loaded");
	memset(j, 0, sizeof(*j));
	snprintf(j->id, sizeof(j->id), "test");
	j->dry_run = dry_run;
	j->host = &test_host;
	host_L = L;
	cJSON_Delete(recorded);
	recorded = cJSON_CreateArray();
	lua_api_open(L, j);
	return L;
}

static void free_job_state(lua_State *L, struct job *j)
{
	lua_close(L);
	for (size_t i = 0; i < j->n_secrets; i++)
		free(j->secrets[i]);
	free(j->secrets);
	cJSON_Delete(recorded);
	recorded = NULL;
	host_L = NULL;
}

/* Lua: permanent(fn, ...) -> the message of the permanent error that
 * fn(...) raises, or raises itself; retryable(fn, ...) -> the plain string
 * error, or nil, err when fn returns that. */
static const char PRELUDE[] =
	"function permanent(fn, ...)\n"
	"  local ok, e = pcall(fn, ...)\n"
	"  assert(not ok, 'did not raise')\n"
	"  assert(type(e) == 'table' and rawget(e, 'recoveryd_final') == true and rawget(e, 'permanent') == true,\n"
	"         'not a permanent error: ' .. tostring(e))\n"
	"  assert(tostring(e) == rawget(e, 'reason'), 'tostring is the reason')\n"
	"  return tostring(e)\n"
	"end\n"
	"function has(s, text) assert(s:find(text, 1, true), s .. ' does not hold ' .. text) end\n";

/* Misuse of the API raises the permanent error value, naming the call
 * site, the function and the problem: bad arguments, values outside the
 * allow-lists, no --secrets-dir. Before, each raised a plain string (or,
 * for the secrets directory, returned nil, err), which the runner retried. */
static void test_misuse_is_permanent(void **state)
{
	static const char *const read_allow[] = {"/nonexistent-rd-read", NULL};
	struct lua_api_conf c = {.http_timeout = 30, .read_allow = read_allow};

	(void)state;
	lua_api_configure(&c);
	lua_State *L = new_state();
	run(L, PRELUDE);
	run(L, "has(permanent(recovery.secret, 'token'), 'no secrets directory is configured (--secrets-dir)')\n"
	       "has(permanent(recovery.secret, '../x'), 'invalid name')\n"
	       "has(permanent(recovery.secret), 'recovery.secret: bad argument #1 (string expected, got no value)')\n"
	       "has(permanent(recovery.env, 'HOME'), \"recovery.env: 'HOME' is not allowed (see --env-allow)\")\n"
	       "has(permanent(recovery.read_file, '/etc/passwd'), 'outside the allowed directories')\n"
	       "has(permanent(recovery.read_file, '/nonexistent-rd-read/x', 'yes'), 'table expected, got string')\n"
	       "has(permanent(recovery.sleep, 'soon'), 'recovery.sleep: bad argument #1 (number expected, got string)')\n"
	       "has(permanent(recovery.sleep, -1), 'seconds must be >= 0')\n"
	       "has(permanent(recovery.log.info, {}), 'recovery.log: bad argument #1 (string expected, got table)')\n"
	       "has(permanent(recovery.log.warn, 'x', {f = print}), 'recovery.log: fields: ')\n"
	       "has(permanent(recovery.json.decode, nil), 'recovery.json.decode: bad argument #1')\n"
	       "has(permanent(recovery.json.array, 'x'), 'recovery.json.array: bad argument #1')\n"
	       "has(permanent(recovery.http, {}), 'recovery.http: url: expected a string, got nil')\n"
	       "has(permanent(recovery.http, {url = 'ftp://x/'}), 'url must start with http:// or https://')\n"
	       "has(permanent(recovery.http, {url = 'http://x/', timeout = 'soon'}), 'timeout: expected a number, got string')\n"
	       "has(permanent(recovery.http, {url = 'http://x/', headers = 'h'}), 'headers: expected a table, got string')\n"
	       "has(permanent(recovery.http, {url = 'http://x/', ca_file = '/etc/ssl/ca.pem'}), 'ca_file')\n"
	       "has(permanent(recovery.exec, {}), 'recovery.exec: bad argument #1 (argv: 1 to 256 strings)')\n"
	       "has(permanent(recovery.exec, {'/bin/echo', {}}), 'argv[2] must be a string')\n"
	       "has(permanent(recovery.exec, {'/bin/echo', env = {A = 1}}), 'env must map names to strings')\n"
	       /* outside run and verify (no job) */
	       "has(permanent(recovery.http, {url = 'http://x/'}), 'only available inside run and verify')\n"
	       "has(permanent(recovery.sleep, 0), 'only available inside run and verify')\n");
	/* The position is the caller's, as with error(). */
	run(L, "local ok, e = pcall(function() recovery.env('HOME') end)\n"
	       "assert(tostring(e):find('^%[string .*%]:1: recovery%.env: '), tostring(e))\n");
	lua_close(L);
	memset(&c, 0, sizeof(c));
	lua_api_configure(&c);
}

/* Option tables refuse keys they do not know, naming the key and the
 * allowed ones: {tmeout = 5} was silently ignored. */
static void test_unknown_option_keys(void **state)
{
	static const char *const read_allow[] = {"/nonexistent-rd-read", NULL};
	struct lua_api_conf c = {.http_timeout = 30, .read_allow = read_allow};

	(void)state;
	lua_api_configure(&c);
	lua_State *L = new_state();
	run(L, PRELUDE);
	run(L, "has(permanent(recovery.http, {url = 'http://x/', tmeout = 5}),\n"
	       "    'recovery.http: unknown option \"tmeout\" (allowed: url, method, headers, body, json, timeout, '\n"
	       "    .. 'mutates, ca_file, ca)')\n"
	       "has(permanent(recovery.http, {'http://x/'}), 'recovery.http: unknown option [1]')\n"
	       "has(permanent(recovery.http, {url = 'http://x/', [true] = 1}), 'unknown option of type boolean')\n"
	       "has(permanent(recovery.exec, {'/bin/echo', 'a', cwd = '/'}),\n"
	       "    'recovery.exec: unknown option \"cwd\" (allowed: [1] to [2], timeout, env, stdin, mutates)')\n"
	       "has(permanent(recovery.exec, {'/bin/echo', [4] = 'x'}), 'recovery.exec: unknown option [4]')\n"
	       "has(permanent(recovery.read_file, '/nonexistent-rd-read/x', {secret = false, trim = true}),\n"
	       "    'recovery.read_file: unknown option \"trim\" (allowed: secret)')\n"
	       /* the known keys pass the check (and fail later, retryably) */
	       "local v, err = recovery.read_file('/nonexistent-rd-read/x', {secret = false})\n"
	       "assert(v == nil and err:find('No such file'), tostring(err))\n");
	lua_close(L);
	memset(&c, 0, sizeof(c));
	lua_api_configure(&c);
}

/* What another attempt may change stays a plain error or nil, err: a
 * secret file that is not there yet, an unreadable file, recovery.fail
 * (final, but not a permanent error), a playbook's own error(). */
static void test_retryable_stays_retryable(void **state)
{
	static const char *const read_allow[] = {"/nonexistent-rd-read", NULL};
	char dir[256];
	const char *tmp = getenv("TMPDIR");
	struct lua_api_conf c = {.http_timeout = 30, .read_allow = read_allow};

	(void)state;
	snprintf(dir, sizeof(dir), "%s/rd-lua-api-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(dir));
	c.secrets_dir = dir;
	lua_api_configure(&c);
	lua_State *L = new_state();
	run(L, PRELUDE);
	run(L, "local v, err = recovery.secret('missing')\n"
	       "assert(v == nil and err:find(\"secret 'missing'\"), tostring(err))\n"
	       "v, err = recovery.read_file('/nonexistent-rd-read/x')\n"
	       "assert(v == nil and err:find('No such file'), tostring(err))\n"
	       "v, err = recovery.json.decode('{')\n"
	       "assert(v == nil and err:find('invalid JSON'), tostring(err))\n"
	       "local ok, e = pcall(recovery.fail, 'precondition')\n"
	       "assert(not ok and rawget(e, 'recoveryd_final') and not rawget(e, 'permanent'), tostring(e))\n"
	       "assert(tostring(e) == 'precondition', tostring(e))\n");
	lua_close(L);
	memset(&c, 0, sizeof(c));
	lua_api_configure(&c);
	rmdir(dir);
}

/* recovery.fatal(msg [, level]): the permanent error for Lua code (the
 * helper library), positioned like error(msg, level). */
static void test_fatal_from_lua(void **state)
{
	(void)state;
	lua_State *L = new_state();
	run(L, PRELUDE);
	run(L, "has(permanent(recovery.fatal, 'plain', 0), 'plain')\n"
	       "assert(permanent(recovery.fatal, 'plain', 0) == 'plain')\n"
	       "local function helper(opts) recovery.fatal('helper: unknown option', 2) end\n"
	       "local function caller() helper({}) end  -- line 4\n"
	       "local m = permanent(caller)\n"
	       "assert(m:find(']:4: helper: unknown option$'), m)\n"
	       "m = permanent(function() recovery.fatal('here') end)  -- line 7\n"
	       "assert(m:find(']:7: here$'), m)\n"
	       "has(permanent(recovery.fatal, {}), 'recovery.fatal: bad argument #1')\n");
	lua_close(L);
}

/* A program outside --exec-allow is refused permanently, in dry-run too
 * (the check comes first), and the refused call is still recorded as an
 * action with its error. It returned nil, err before, and the playbook's
 * error() then waited through every retry to say the same again. */
static void test_exec_not_allowed_is_permanent(void **state)
{
	static const char *const exec_allow[] = {"/bin/echo", NULL};
	struct lua_api_conf c = {.http_timeout = 30, .exec_allow = exec_allow};
	struct job j;

	(void)state;
	lua_api_configure(&c);
	for (int dry = 0; dry <= 1; dry++) {
		lua_State *L = new_job_state(&j, dry);
		run(L, PRELUDE);
		run(L, "local m = permanent(recovery.exec, {'/usr/local/bin/deck', 'gateway', 'sync'})\n"
		       "has(m, 'recovery.exec: program /usr/local/bin/deck is not allowed (see --exec-allow)')\n"
		       "m = permanent(recovery.exec, {'echo', 'x', mutates = false})\n"
		       "has(m, 'program echo is not allowed')\n");
		const cJSON *a = cJSON_GetArrayItem(recorded, 0);
		assert_string_equal(cJSON_GetObjectItem(a, "type")->valuestring, "action");
		assert_string_equal(cJSON_GetObjectItem(a, "kind")->valuestring, "exec");
		assert_string_equal(cJSON_GetObjectItem(a, "error")->valuestring,
		                    "program /usr/local/bin/deck is not allowed (see --exec-allow)");
		assert_false(cJSON_IsTrue(cJSON_GetObjectItem(a, "planned")));
		assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(recorded, 1), "error")->valuestring,
		                    "program echo is not allowed (see --exec-allow)");
		/* The checks that need the job: misuse too. A transfer the
		 * runner refuses is nil, err. */
		run(L, "has(permanent(recovery.http, {url = 'http://x/', json = {f = print}}), 'recovery.http: json: ')\n"
		       "has(permanent(recovery.http, {url = 'http://x/', headers = {A = 'x\\r\\nB: y'}}), 'CR, LF')\n"
		       "has(permanent(recovery.exec, {'/bin/echo', timeout = 'x'}), 'timeout: expected a number')\n"
		       "local v, err = recovery.http{url = 'http://x/'}\n"
		       "assert(v == nil and err == 'not in this test', tostring(err))\n");
		/* From a coroutine: misuse too. */
		run(L, "local co = coroutine.create(function() return recovery.exec{'/bin/echo'} end)\n"
		       "local ok, e = coroutine.resume(co)\n"
		       "assert(not ok and rawget(e, 'permanent'), tostring(e))\n"
		       "has(tostring(e), 'must be called from the playbook itself')\n");
		free_job_state(L, &j);
	}
	memset(&c, 0, sizeof(c));
	lua_api_configure(&c);
}

/* The runner and the playbook loader read the error of a state through
 * lua_api_error_text: a string, or the reason of a final error value. */
static void test_error_text(void **state)
{
	int final, permanent;

	(void)state;
	lua_State *L = new_state();
	assert_int_not_equal(luaL_dostring(L, "recovery.env('HOME')"), LUA_OK);
	assert_string_equal(lua_api_error_text(L, -1, &final, &permanent),
	                    "[string \"recovery.env('HOME')\"]:1: recovery.env: 'HOME' is not allowed (see --env-allow)");
	assert_true(final && permanent);
	lua_settop(L, 0);
	assert_int_not_equal(luaL_dostring(L, "recovery.fail('no drift')"), LUA_OK);
	assert_string_equal(lua_api_error_text(L, -1, &final, &permanent), "no drift");
	assert_true(final && !permanent);
	lua_settop(L, 0);
	assert_int_not_equal(luaL_dostring(L, "error('plain', 0)"), LUA_OK);
	assert_string_equal(lua_api_error_text(L, -1, &final, &permanent), "plain");
	assert_true(!final && !permanent);
	lua_settop(L, 0);
	assert_int_not_equal(luaL_dostring(L, "error({reason = 'x'})"), LUA_OK);
	assert_null(lua_api_error_text(L, -1, &final, &permanent));
	lua_close(L);
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
	       "assert(not ok and tostring(err):find('expected a number'), tostring(err))\n"
	       "local ok2, e = pcall(recovery.secret, 'token')\n"
	       "assert(not ok2 and tostring(e):find('no secrets directory'), tostring(e))\n");
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
		cmocka_unit_test(test_misuse_is_permanent),
		cmocka_unit_test(test_unknown_option_keys),
		cmocka_unit_test(test_retryable_stays_retryable),
		cmocka_unit_test(test_fatal_from_lua),
		cmocka_unit_test(test_exec_not_allowed_is_permanent),
		cmocka_unit_test(test_error_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The Lua sandbox: allow-listed globals, a memory budget through a custom
 * allocator, and a deadline enforced by a count hook that yields (or, where
 * yielding is impossible, raises an error that the wrapped pcall re-raises),
 * so a playbook cannot swallow its own timeout. */
#include "recoveryd/sandbox.h"

#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pattern.h"
#include "recoveryd/common.h"

#define HOOK_EVERY 1000 /* instructions between deadline checks */
#define MODULE_MAX (1024 * 1024)

static const char LOADED_KEY[] = "recoveryd.sandbox.loaded";

static void *sb_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct sandbox *sb = ud;

	if (ptr == NULL)
		osize = 0; /* osize encodes the object type then, not a size */
	if (nsize == 0) {
		free(ptr);
		sb->mem_used -= osize;
		return NULL;
	}
	if (nsize > osize && sb->mem_max && !sb->no_limit && sb->mem_used - osize + nsize > sb->mem_max)
		return NULL;
	void *np = realloc(ptr, nsize);
	if (np)
		sb->mem_used = sb->mem_used - osize + nsize;
	return np;
}

struct sandbox *sandbox_of(lua_State *L)
{
	void *ud;
	lua_getallocf(L, &ud);
	return ud;
}

static void deadline_hook(lua_State *L, lua_Debug *ar)
{
	struct sandbox *sb = sandbox_of(L);

	(void)ar;
	double now = rd_mono();
	if (!sb->timed_out && (sb->deadline == 0 || now < sb->deadline)) {
		if (!sb->preempt_co || now < sb->slice_end)
			return;
		if (L == sb->preempt_co && lua_isyieldable(L)) {
			sb->preempted = 1;
			lua_yield(L, 0); /* other jobs get the thread; resumed later */
		}
		double held = sandbox_held_too_long(sb, now);
		if (held > 0)
			luaL_error(L, "the playbook held the event loop for %d s where it cannot yield "
			              "(a long loop in a table.sort comparator, a gsub callback, a "
			              "metamethod or a coroutine)", (int)held);
		return;
	}
	sb->timed_out = 1;
	if (lua_isyieldable(L))
		lua_yield(L, 0); /* the runner sees timed_out and abandons the state */
	else
		luaL_error(L, "attempt deadline exceeded");
}

/* pcall/xpcall that refuse to swallow the deadline. */
static int finish_pcall(lua_State *L, int status, lua_KContext extra)
{
	if (sandbox_of(L)->timed_out)
		return luaL_error(L, "attempt deadline exceeded");
	if (status != LUA_OK && status != LUA_YIELD) {
		sandbox_of(L)->caught_status = status;
		lua_pushboolean(L, 0);
		lua_pushvalue(L, -2);
		return 2;
	}
	return lua_gettop(L) - (int)extra;
}

static int sb_pcall(lua_State *L)
{
	luaL_checkany(L, 1);
	lua_pushboolean(L, 1);
	lua_insert(L, 1);
	int status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, finish_pcall);
	return finish_pcall(L, status, 0);
}

/* Message handler wrapper: Lua runs handlers of errors raised by the hook
 * with hooks off, so a looping handler would never be stopped. Once the
 * deadline passed, the user's handler is skipped. */
static int sb_msgh(lua_State *L)
{
	if (sandbox_of(L)->timed_out)
		return 1;
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, 1);
	return 1;
}

static int sb_xpcall(lua_State *L)
{
	int n = lua_gettop(L);
	luaL_checktype(L, 2, LUA_TFUNCTION);
	lua_pushvalue(L, 2);
	lua_pushcclosure(L, sb_msgh, 1);
	lua_replace(L, 2);
	lua_pushboolean(L, 1);
	lua_pushvalue(L, 1);
	lua_rotate(L, 3, 2);
	int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, finish_pcall);
	return finish_pcall(L, status, 2);
}

/* setmetatable without __gc: finalizers run with hooks off, so a looping
 * one could never be stopped. */
static int sb_setmetatable(lua_State *L)
{
	if (lua_type(L, 2) == LUA_TTABLE) {
		lua_pushliteral(L, "__gc");
		if (lua_rawget(L, 2) != LUA_TNIL)
			return luaL_error(L, "setmetatable: __gc metamethods are not allowed in the sandbox");
		lua_pop(L, 1);
	}
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, 1);
	return 1;
}

void sandbox_protect_metatable(lua_State *L, int idx)
{
	idx = lua_absindex(L, idx);
	lua_pushliteral(L, "protected by recoveryd");
	lua_setfield(L, idx, "__metatable");
}

double sandbox_held_too_long(const struct sandbox *sb, double now)
{
	double held = now - sb->slice_start;

	return sb->preempt_co && sb->hold_max > 0 && held >= sb->hold_max ? held : 0;
}

int sandbox_has_nul(lua_State *L, int idx)
{
	size_t len;
	const char *s;

	if (lua_type(L, idx) != LUA_TSTRING)
		return 0;
	s = lua_tolstring(L, idx, &len);
	return memchr(s, '\0', len) != NULL;
}

const char *sandbox_checkcstr(lua_State *L, int arg)
{
	size_t len;
	const char *s = luaL_checklstring(L, arg, &len);

	if (memchr(s, '\0', len))
		luaL_argerror(L, arg, "must not contain a NUL byte");
	return s;
}

const char *sandbox_tocstr(lua_State *L, int idx, const char *what)
{
	size_t len;
	const char *s = lua_tolstring(L, idx, &len);

	if (!s)
		luaL_error(L, "%s: expected a string, got %s", what, luaL_typename(L, idx));
	if (memchr(s, '\0', len))
		luaL_error(L, "%s: must not contain a NUL byte", what);
	return s;
}

/* load() for text chunks only: a binary chunk could break memory safety. */
static int sb_load(lua_State *L)
{
	size_t len;
	const char *s = lua_tolstring(L, 1, &len);
	const char *name = luaL_optstring(L, 2, "=(load)");
	int has_env = !lua_isnone(L, 4);

	if (!s)
		return luaL_error(L, "load: only string chunks are allowed in the sandbox");
	int status = luaL_loadbufferx(L, s, len, name, "t");
	if (status != LUA_OK) {
		lua_pushnil(L);
		lua_insert(L, -2);
		return 2;
	}
	if (has_env) {
		lua_pushvalue(L, 4);
		if (!lua_setupvalue(L, -2, 1))
			lua_pop(L, 1);
	}
	return 1;
}

static int valid_module_name(const char *n)
{
	if (!*n || *n == '.' || strstr(n, ".."))
		return 0;
	for (const char *p = n; *p; p++)
		if (!(*p == '.' || *p == '_' || *p == '-' || (*p >= 'a' && *p <= 'z') ||
		      (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
			return 0;
	return 1;
}

/* require: modules only from the configured Lua path, as text. */
static int sb_require(lua_State *L)
{
	const char *name = sandbox_checkcstr(L, 1);
	struct sandbox *sb = sandbox_of(L);
	char path[4096], rel[512];
	char *src = NULL;
	size_t len = 0;

	lua_getfield(L, LUA_REGISTRYINDEX, LOADED_KEY);
	lua_getfield(L, -1, name);
	if (!lua_isnil(L, -1))
		return 1;
	lua_pop(L, 1);
	if (!valid_module_name(name))
		return luaL_error(L, "require '%s': invalid module name", name);
	if (!sb->lua_path)
		return luaL_error(L, "require '%s': no Lua path is configured", name);
	snprintf(rel, sizeof(rel), "%s", name);
	for (char *p = rel; *p; p++)
		if (*p == '.')
			*p = '/';
	const char *forms[] = {"%s/%s.lua", "%s/%s/init.lua"};
	for (size_t i = 0; i < 2 && !src; i++) {
		snprintf(path, sizeof(path), forms[i], sb->lua_path, rel);
		src = rd_read_file(path, MODULE_MAX, &len, 0);
	}
	if (!src)
		return luaL_error(L, "require '%s': module not found in the Lua path", name);
	snprintf(path, sizeof(path), "@%s.lua", rel);
	int status = luaL_loadbufferx(L, src, len, path, "t");
	free(src);
	if (status != LUA_OK)
		return lua_error(L);
	lua_pushstring(L, name);
	lua_call(L, 1, 1);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		lua_pushboolean(L, 1);
	}
	lua_pushvalue(L, -1);
	lua_setfield(L, -3, name);
	return 1;
}

static void keep_only(lua_State *L, const char *lib, const char *const *keep)
{
	lua_getglobal(L, lib);
	lua_newtable(L);
	for (const char *const *k = keep; *k; k++) {
		lua_getfield(L, -2, *k);
		lua_setfield(L, -2, *k);
	}
	lua_setglobal(L, lib);
	lua_pop(L, 1);
}

lua_State *sandbox_new(struct sandbox *sb)
{
	static const luaL_Reg libs[] = {
		{LUA_GNAME, luaopen_base},       {LUA_STRLIBNAME, luaopen_string},
		{LUA_TABLIBNAME, luaopen_table}, {LUA_MATHLIBNAME, luaopen_math},
		{LUA_UTF8LIBNAME, luaopen_utf8}, {LUA_COLIBNAME, luaopen_coroutine},
		{LUA_OSLIBNAME, luaopen_os},     {NULL, NULL}};
	/* warn("@on") would write to the daemon's stderr, outside the JSON log. */
	static const char *const base_drop[] = {"dofile", "loadfile", "warn", NULL};
	static const char *const os_keep[] = {"time", "clock", "date", NULL};
	lua_State *L;

	sb->mem_used = 0;
	sb->timed_out = 0;
	sb->caught_status = LUA_OK;
	L = lua_newstate(sb_alloc, sb);
	if (!L)
		return NULL;
	for (const luaL_Reg *l = libs; l->func; l++) {
		luaL_requiref(L, l->name, l->func, 1);
		lua_pop(L, 1);
	}
	for (const char *const *d = base_drop; *d; d++) {
		lua_pushnil(L);
		lua_setglobal(L, *d);
	}
	keep_only(L, LUA_OSLIBNAME, os_keep);
	pattern_install(L); /* matching that the deadline can stop */
	/* string.dump would hand out bytecode; drop it from the shared table. */
	lua_getglobal(L, LUA_STRLIBNAME);
	lua_pushnil(L);
	lua_setfield(L, -2, "dump");
	lua_pop(L, 1);
	/* The string metatable is shared by every string of the state. */
	lua_pushliteral(L, "");
	if (lua_getmetatable(L, -1)) {
		sandbox_protect_metatable(L, -1);
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	lua_getglobal(L, "setmetatable");
	lua_pushcclosure(L, sb_setmetatable, 1);
	lua_setglobal(L, "setmetatable");
	lua_register(L, "load", sb_load);
	lua_register(L, "pcall", sb_pcall);
	lua_register(L, "xpcall", sb_xpcall);
	lua_register(L, "require", sb_require);
	/* Only our loader table: package.loaded/loadlib are never exposed. */
	lua_newtable(L);
	lua_setfield(L, LUA_REGISTRYINDEX, LOADED_KEY);
	lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
	lua_pushnil(L);
	lua_setfield(L, -2, LUA_LOADLIBNAME);
	lua_pop(L, 1);
	lua_sethook(L, deadline_hook, LUA_MASKCOUNT, HOOK_EVERY);
	return L;
}

void sandbox_preload(lua_State *L, const char *name)
{
	lua_getfield(L, LUA_REGISTRYINDEX, LOADED_KEY);
	lua_insert(L, -2);
	lua_setfield(L, -2, name);
	lua_pop(L, 1);
}

int sandbox_load(lua_State *L, const char *src, size_t len, const char *chunkname)
{
	return luaL_loadbufferx(L, src, len, chunkname, "t");
}

struct dumpbuf {
	char *p;
	size_t len, cap;
};

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud)
{
	struct dumpbuf *b = ud;

	(void)L;
	if (n > b->cap - b->len) {
		size_t ncap = b->cap ? b->cap : 4096;
		while (ncap - b->len < n)
			ncap *= 2;
		char *np = realloc(b->p, ncap);
		if (!np)
			return 1;
		b->p = np;
		b->cap = ncap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	return 0;
}

char *sandbox_compile(const char *src, size_t len, const char *chunkname, size_t *out_len,
                      char *errbuf, size_t errlen)
{
	struct dumpbuf b = {0};
	lua_State *L = luaL_newstate(); /* compiling runs no user code */

	if (!L) {
		snprintf(errbuf, errlen, "out of memory");
		return NULL;
	}
	if (luaL_loadbufferx(L, src, len, chunkname, "t") != LUA_OK) {
		snprintf(errbuf, errlen, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
		lua_close(L);
		return NULL;
	}
	/* Keep the debug information: error messages name file and line. */
	if (lua_dump(L, dump_writer, &b, 0) != 0) {
		free(b.p);
		b.p = NULL;
		snprintf(errbuf, errlen, "out of memory");
	}
	lua_close(L);
	*out_len = b.len;
	return b.p;
}

int sandbox_load_compiled(lua_State *L, const char *bc, size_t len, const char *chunkname)
{
	return luaL_loadbufferx(L, bc, len, chunkname, "b");
}

int sandbox_call(lua_State *L, int nargs, int nres)
{
	struct sandbox *sb = sandbox_of(L);
	lua_State *co;
	int status, got = 0;

	/* Outside a protected call a memory error would be a panic. */
	sb->no_limit = 1;
	co = lua_newthread(L);
	sb->no_limit = 0;

	/* Move the function and its arguments onto the new thread. */
	lua_insert(L, -(nargs + 2));
	lua_xmove(L, co, nargs + 1);
	status = lua_resume(co, L, nargs, &got);
	if (status == LUA_YIELD) {
		lua_pop(L, 1);
		lua_pushstring(L, sb->timed_out ? "deadline exceeded"
		                                : "yield is not allowed here (only inside run/verify)");
		return LUA_ERRRUN;
	}
	if (status != LUA_OK) {
		lua_xmove(co, L, 1);
		lua_remove(L, -2);
		return status;
	}
	if (sb->timed_out) {
		/* A user coroutine absorbed the hook's yield; the deadline still
		 * passed. */
		lua_pop(L, 1);
		lua_pushstring(L, "deadline exceeded");
		return LUA_ERRRUN;
	}
	if (nres != LUA_MULTRET) {
		lua_settop(co, nres); /* truncates, or pads with nil */
		got = nres;
	}
	lua_xmove(co, L, got);
	lua_remove(L, -(got + 1)); /* the thread */
	return LUA_OK;
}

/* A checker for the Lua C API's stack contract, for code the fuzzers link.
 *
 * A C function may push LUA_MINSTACK (20) values; beyond that it must call
 * lua_checkstack/luaL_checkstack first. The Lua library (Debian's, not
 * built with sanitizers) does not check, so a push past the end writes
 * beyond the stack's allocation where ASan cannot see it (finding 1:
 * to_json). The targets that link this file are built with
 * -Wl,--wrap=<each function below>: calls from recoveryd's objects come
 * here, and a push above the guaranteed slots aborts with a stack trace.
 *
 * Guarantee tracked: LUA_MINSTACK, or the top a successful checkstack call
 * made room for. The record is kept per lua_State and cleared by
 * fuzz_stack_reset() before each call the harness makes, so a record left
 * by another frame can only hide a violation, never invent one.
 *
 * RECOVERYD_FUZZ_STACK_GROW=1 in the environment makes room instead of
 * aborting (what the missing lua_checkstack would have done), to fuzz past
 * a known violation until its fix is in. */
#include <lua.h>
#include <sanitizer/common_interface_defs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua_stack_check.h"

#define RECORDS 16

static struct {
	lua_State *L;
	int top; /* slots guaranteed, as a lua_gettop value */
} rec[RECORDS];

void fuzz_stack_reset(void)
{
	for (int i = 0; i < RECORDS; i++)
		rec[i].L = NULL;
}

static void record(lua_State *L, int top)
{
	int free_slot = -1;
	for (int i = 0; i < RECORDS; i++) {
		if (rec[i].L == L) {
			if (top > rec[i].top)
				rec[i].top = top;
			return;
		}
		if (!rec[i].L && free_slot < 0)
			free_slot = i;
	}
	if (free_slot < 0)
		free_slot = 0;
	rec[free_slot].L = L;
	rec[free_slot].top = top;
}

static int grow = -1;

int __real_lua_checkstack(lua_State *L, int n);

static void need(lua_State *L, int n, const char *fn)
{
	int top = lua_gettop(L), limit = LUA_MINSTACK;
	if (grow < 0) {
		const char *e = getenv("RECOVERYD_FUZZ_STACK_GROW");
		grow = e && *e && strcmp(e, "0") != 0;
	}
	for (int i = 0; i < RECORDS; i++)
		if (rec[i].L == L && rec[i].top > limit)
			limit = rec[i].top;
	if (top + n <= limit)
		return;
	if (grow) {
		if (!__real_lua_checkstack(L, n))
			abort(); /* LUAI_MAXSTACK: not reached by the fuzzers' inputs */
		record(L, top + n);
		return;
	}
	fprintf(stderr,
	        "Lua stack overflow: %s pushes slot %d of a C frame guaranteed %d "
	        "(missing lua_checkstack)\n",
	        fn, top + n, limit);
	__sanitizer_print_stack_trace();
	abort();
}

void __real_luaL_checkstack(lua_State *L, int n, const char *msg);
void __real_lua_pushnil(lua_State *L);
void __real_lua_pushvalue(lua_State *L, int idx);
void __real_lua_pushinteger(lua_State *L, lua_Integer n);
void __real_lua_pushnumber(lua_State *L, lua_Number n);
void __real_lua_pushboolean(lua_State *L, int b);
void __real_lua_pushlightuserdata(lua_State *L, void *p);
const char *__real_lua_pushstring(lua_State *L, const char *s);
const char *__real_lua_pushlstring(lua_State *L, const char *s, size_t len);
void __real_lua_createtable(lua_State *L, int narr, int nrec);
int __real_lua_next(lua_State *L, int idx);
int __real_lua_rawgeti(lua_State *L, int idx, lua_Integer n);
int __real_lua_getmetatable(lua_State *L, int idx);
int __real_lua_getfield(lua_State *L, int idx, const char *k);

int __wrap_lua_checkstack(lua_State *L, int n);
void __wrap_luaL_checkstack(lua_State *L, int n, const char *msg);
void __wrap_lua_pushnil(lua_State *L);
void __wrap_lua_pushvalue(lua_State *L, int idx);
void __wrap_lua_pushinteger(lua_State *L, lua_Integer n);
void __wrap_lua_pushnumber(lua_State *L, lua_Number n);
void __wrap_lua_pushboolean(lua_State *L, int b);
void __wrap_lua_pushlightuserdata(lua_State *L, void *p);
const char *__wrap_lua_pushstring(lua_State *L, const char *s);
const char *__wrap_lua_pushlstring(lua_State *L, const char *s, size_t len);
void __wrap_lua_createtable(lua_State *L, int narr, int nrec);
int __wrap_lua_next(lua_State *L, int idx);
int __wrap_lua_rawgeti(lua_State *L, int idx, lua_Integer n);
int __wrap_lua_getmetatable(lua_State *L, int idx);
int __wrap_lua_getfield(lua_State *L, int idx, const char *k);

int __wrap_lua_checkstack(lua_State *L, int n)
{
	int ok = __real_lua_checkstack(L, n);
	if (ok)
		record(L, lua_gettop(L) + n);
	return ok;
}

void __wrap_luaL_checkstack(lua_State *L, int n, const char *msg)
{
	__real_luaL_checkstack(L, n, msg); /* raises on failure */
	record(L, lua_gettop(L) + n);
}

void __wrap_lua_pushnil(lua_State *L)
{
	need(L, 1, "lua_pushnil");
	__real_lua_pushnil(L);
}

void __wrap_lua_pushvalue(lua_State *L, int idx)
{
	need(L, 1, "lua_pushvalue");
	__real_lua_pushvalue(L, idx);
}

void __wrap_lua_pushinteger(lua_State *L, lua_Integer n)
{
	need(L, 1, "lua_pushinteger");
	__real_lua_pushinteger(L, n);
}

void __wrap_lua_pushnumber(lua_State *L, lua_Number n)
{
	need(L, 1, "lua_pushnumber");
	__real_lua_pushnumber(L, n);
}

void __wrap_lua_pushboolean(lua_State *L, int b)
{
	need(L, 1, "lua_pushboolean");
	__real_lua_pushboolean(L, b);
}

void __wrap_lua_pushlightuserdata(lua_State *L, void *p)
{
	need(L, 1, "lua_pushlightuserdata");
	__real_lua_pushlightuserdata(L, p);
}

const char *__wrap_lua_pushstring(lua_State *L, const char *s)
{
	need(L, 1, "lua_pushstring");
	return __real_lua_pushstring(L, s);
}

const char *__wrap_lua_pushlstring(lua_State *L, const char *s, size_t len)
{
	need(L, 1, "lua_pushlstring");
	return __real_lua_pushlstring(L, s, len);
}

void __wrap_lua_createtable(lua_State *L, int narr, int nrec)
{
	need(L, 1, "lua_createtable");
	__real_lua_createtable(L, narr, nrec);
}

int __wrap_lua_next(lua_State *L, int idx)
{
	need(L, 1, "lua_next"); /* pops the key, pushes key and value */
	return __real_lua_next(L, idx);
}

int __wrap_lua_rawgeti(lua_State *L, int idx, lua_Integer n)
{
	need(L, 1, "lua_rawgeti");
	return __real_lua_rawgeti(L, idx, n);
}

int __wrap_lua_getmetatable(lua_State *L, int idx)
{
	need(L, 1, "lua_getmetatable");
	return __real_lua_getmetatable(L, idx);
}

int __wrap_lua_getfield(lua_State *L, int idx, const char *k)
{
	need(L, 1, "lua_getfield");
	return __real_lua_getfield(L, idx, k);
}

/* Allow-listed Lua 5.4 states with a memory budget and a wall-clock
 * deadline enforced from an instruction-count hook. */
#ifndef RECOVERYD_SANDBOX_H
#define RECOVERYD_SANDBOX_H

#include <stddef.h>
#include <lua.h>

struct sandbox {
	size_t mem_used;
	size_t mem_max;      /* bytes; allocations beyond fail with a memory error */
	double deadline;     /* rd_mono() seconds; 0 = none */
	int timed_out;       /* set by the hook once the deadline passed */
	int caught_status;   /* the Lua status of the last error a pcall or xpcall
	                        caught (LUA_ERRMEM for the memory budget, whatever
	                        the message says); LUA_OK before the first */
	int no_limit;        /* set around the runner's own unprotected API calls,
	                        where a memory error would be a panic */
	const char *lua_path;/* directory `require` searches; NULL = none */
	void *owner;         /* the job using this state (lua_api) or NULL */
	/* Time slicing on the runner's shared thread (all zero elsewhere): the
	 * hook yields preempt_co, when it is yieldable, once slice_end passed
	 * (preempted is then set, and the runner resumes it on a later loop
	 * turn); code that cannot yield (a table.sort comparator, a gsub
	 * callback, a user coroutine) fails once it held the thread for
	 * hold_max seconds since slice_start. */
	lua_State *preempt_co;
	double slice_start, slice_end, hold_max;
	int preempted;
};

/* A new state whose globals are the allow-list of DESIGN.md §4: base
 * without dofile/loadfile and with text-only load, string (no dump), table,
 * math, utf8, coroutine, os.time/clock/date, require from lua_path. The
 * `recovery` module is added by lua_api_open. sb must outlive the state. */
lua_State *sandbox_new(struct sandbox *sb);
/* Load a text chunk (never binary) with the given chunk name. Returns a Lua
 * status; on error the message is on the stack. */
int sandbox_load(lua_State *L, const char *src, size_t len, const char *chunkname);
/* Compile a text chunk once, for many states: returns the bytecode (malloc'd,
 * *len set) or NULL with *err (static or Lua's message copied into errbuf). */
char *sandbox_compile(const char *src, size_t len, const char *chunkname, size_t *out_len,
                      char *errbuf, size_t errlen);
/* Load bytecode made by sandbox_compile. Binary chunks are otherwise refused
 * (they could break memory safety); these come from recoveryd itself. */
int sandbox_load_compiled(lua_State *L, const char *bc, size_t len, const char *chunkname);
/* Run the function on top of L's stack with nargs arguments (pushed above it)
 * in a fresh coroutine so that the deadline hook can stop it even inside
 * pcall; for code that must not yield to the runner (config files, playbook
 * loading). Returns LUA_OK with nres results left on L, or an error status
 * with the message on L. */
int sandbox_call(lua_State *L, int nargs, int nres);
/* Make the value on top of the stack what require(name) returns; pops it. */
void sandbox_preload(lua_State *L, const char *name);
/* Give the metatable at idx a __metatable field: getmetatable then returns
 * a string and setmetatable refuses to replace it. Every metatable that C
 * attaches must be protected, since C's lua_setmetatable bypasses the
 * sandbox's refusal of __gc. */
void sandbox_protect_metatable(lua_State *L, int idx);
/* Lua strings may hold NUL bytes; C strings end at the first. Where a Lua
 * string becomes a C string, these refuse one instead of cutting it short:
 *  sandbox_has_nul: the value at idx is a string holding a NUL;
 *  sandbox_checkcstr: luaL_checkstring, raising "bad argument #arg ... NUL";
 *  sandbox_tocstr: the string at idx (a field), raising "<what>: ... NUL". */
int sandbox_has_nul(lua_State *L, int idx);
/* Seconds the runner thread has been held since the slice began, when that
 * is past hold_max (code that cannot yield must fail then), else 0. */
double sandbox_held_too_long(const struct sandbox *sb, double now);
const char *sandbox_checkcstr(lua_State *L, int arg);
const char *sandbox_tocstr(lua_State *L, int idx, const char *what);
/* The sandbox that owns L. */
struct sandbox *sandbox_of(lua_State *L);

#endif

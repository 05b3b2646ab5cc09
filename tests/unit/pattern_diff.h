/* Differential check of recoveryd's pattern functions (src/pattern.c) against
 * the stock Lua 5.4 string library, for tests/unit/test_pattern_diff.c and
 * for a fuzz target. Header only, so that any binary linked with
 * recoveryd_core can include it:
 *
 *     struct pdiff d;                    // must not move once opened
 *     struct pdiff_call c;
 *     if (pdiff_open(&d) != 0) abort();
 *     pdiff_call_from_bytes(&c, data, size);   // or fill c by hand
 *     if (pdiff_run(&d, &c) == 1) {            // 1: the results differ
 *         char what[512];
 *         pdiff_describe(&c, what, sizeof what);
 *         fprintf(stderr, "%s\nstock: %s\nours:  %s\n", what,
 *                 d.out[PDIFF_STOCK].data, d.out[PDIFF_OURS].data);
 *         abort();
 *     }
 *     pdiff_close(&d);
 *
 * One state has the stock library (luaL_openlibs); the other is a recoveryd
 * sandbox (sandbox_new, so pattern_install) without a deadline. The same
 * call runs in both; every returned value (or the error message), and for
 * gmatch every iteration, is serialised to text and the texts compared.
 * The stock matcher cannot be interrupted, so the call runs first in the
 * sandbox under a deadline of d->budget seconds: if that stops it (a
 * catastrophically backtracking pattern), the stock side is not run and
 * pdiff_run returns 2. The two matchers take the same steps, so whatever the
 * sandbox finishes in time the stock side finishes too. */
#ifndef RECOVERYD_TESTS_PATTERN_DIFF_H
#define RECOVERYD_TESTS_PATTERN_DIFF_H

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recoveryd/common.h"
#include "recoveryd/sandbox.h"

enum pdiff_op { PDIFF_FIND, PDIFF_MATCH, PDIFF_GMATCH, PDIFF_GSUB, PDIFF_NOPS };
enum pdiff_repl {
	PDIFF_REPL_STRING,   /* r/lr */
	PDIFF_REPL_INTEGER,  /* 42 */
	PDIFF_REPL_FLOAT,    /* 0.5 */
	PDIFF_REPL_TABLE,    /* PDIFF_TABLE below */
	PDIFF_REPL_FUNCTION, /* PDIFF_FUNCTION below */
	PDIFF_REPL_BOOLEAN,  /* true: an argument error */
	PDIFF_NREPLS
};
enum { PDIFF_STOCK, PDIFF_OURS };

struct pdiff_call {
	enum pdiff_op op;
	const char *s, *p, *r; /* subject, pattern, gsub replacement string */
	size_t ls, lp, lr;
	int has_init;          /* third argument of find, match and gmatch */
	long long init;
	int plain;             /* find's fourth argument: 0 absent, 1 true, 2 false */
	enum pdiff_repl repl;
	int has_max;           /* gsub's fourth argument */
	long long max;
};

struct pdiff_text {
	char *data; /* NUL-terminated, printable (bytes outside 0x20..0x7e escaped) */
	size_t len, cap;
};

struct pdiff {
	struct sandbox sb;
	lua_State *L[2];         /* PDIFF_STOCK, PDIFF_OURS */
	int fn[2], tab[2];       /* registry references of the gsub replacements */
	struct pdiff_text out[2];
	double budget;           /* seconds for one call in the sandbox; 1 by default */
	unsigned long runs, skipped;
};

#define PDIFF_MAX_ITER 256 /* gmatch iterations recorded */

/* Replacements for gsub: stateless, so that both states see the same. */
#define PDIFF_FUNCTION                                                            \
	"return function(...)\n"                                                  \
	"  local t = table.pack(...)\n"                                           \
	"  local k = #tostring(t[1]) % 5\n"                                       \
	"  if k == 0 then return nil end\n"                                       \
	"  if k == 3 then return false end\n"                                     \
	"  if k == 2 then return t.n * 10 + #tostring(t[1]) end\n"                \
	"  if k == 4 and t.n > 1 then return {} end\n"                            \
	"  local r = {}\n"                                                        \
	"  for i = 1, t.n do r[i] = tostring(t[i]) end\n"                         \
	"  return table.concat(r, '|') .. '#' .. t.n\n"                           \
	"end\n"
#define PDIFF_TABLE                                                               \
	"return {a = 'A', b = false, ab = 'AB', x = {}, ['1'] = 'one', [1] = 'p1'," \
	" [2] = 22, [''] = 'empty', ['\\0'] = 'nul', ['a\\0'] = 'a-nul', [' '] = 0.5," \
	" z = true}\n"

static inline void pdiff_put(struct pdiff_text *t, const char *s, size_t n)
{
	if (t->len + n + 1 > t->cap) {
		size_t cap = t->cap ? t->cap : 256;
		while (t->len + n + 1 > cap)
			cap *= 2;
		char *d = realloc(t->data, cap);
		if (!d)
			abort();
		t->data = d;
		t->cap = cap;
	}
	memcpy(t->data + t->len, s, n);
	t->len += n;
	t->data[t->len] = '\0';
}

static inline void pdiff_puts(struct pdiff_text *t, const char *s)
{
	pdiff_put(t, s, strlen(s));
}

/* Bytes as printable text: \\, \" and bytes outside 0x20..0x7e escaped. */
static inline void pdiff_put_escaped(struct pdiff_text *t, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char e[8];
		if (c == '\\' || c == '"') {
			e[0] = '\\';
			e[1] = (char)c;
			pdiff_put(t, e, 2);
		} else if (c < 0x20 || c > 0x7e) {
			snprintf(e, sizeof e, "\\x%02x", c);
			pdiff_put(t, e, 4);
		} else {
			pdiff_put(t, (const char *)&s[i], 1);
		}
	}
}

static inline void pdiff_put_value(struct pdiff_text *t, lua_State *L, int idx)
{
	char num[64];
	switch (lua_type(L, idx)) {
	case LUA_TNIL:
		pdiff_puts(t, "nil");
		break;
	case LUA_TBOOLEAN:
		pdiff_puts(t, lua_toboolean(L, idx) ? "true" : "false");
		break;
	case LUA_TNUMBER:
		if (lua_isinteger(L, idx))
			snprintf(num, sizeof num, "%lld", (long long)lua_tointeger(L, idx));
		else
			snprintf(num, sizeof num, "%.17g", (double)lua_tonumber(L, idx));
		pdiff_puts(t, num);
		break;
	case LUA_TSTRING: {
		size_t n;
		const char *s = lua_tolstring(L, idx, &n);
		pdiff_puts(t, "\"");
		pdiff_put_escaped(t, s, n);
		pdiff_puts(t, "\"");
		break;
	}
	default:
		pdiff_puts(t, luaL_typename(L, idx));
	}
}

/* Results from index base+1 to the top, comma separated. */
static inline void pdiff_put_results(struct pdiff_text *t, lua_State *L, int base)
{
	for (int i = base + 1; i <= lua_gettop(L); i++) {
		if (i > base + 1)
			pdiff_puts(t, ",");
		pdiff_put_value(t, L, i);
	}
}

static inline void pdiff_put_error(struct pdiff_text *t, lua_State *L)
{
	pdiff_puts(t, "error: ");
	pdiff_put_value(t, L, -1);
}

static inline int pdiff_ref_chunk(lua_State *L, const char *chunk)
{
	if (luaL_loadbufferx(L, chunk, strlen(chunk), "=pdiff", "t") != LUA_OK ||
	    lua_pcall(L, 0, 1, 0) != LUA_OK)
		return LUA_NOREF;
	return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* 0 on success. d must stay where it is until pdiff_close (the sandbox
 * state keeps a pointer to d->sb). */
static inline int pdiff_open(struct pdiff *d)
{
	memset(d, 0, sizeof(*d));
	d->sb.mem_max = 256u << 20;
	d->budget = 1.0;
	d->L[PDIFF_STOCK] = luaL_newstate();
	d->L[PDIFF_OURS] = sandbox_new(&d->sb);
	if (!d->L[PDIFF_STOCK] || !d->L[PDIFF_OURS])
		return -1;
	luaL_openlibs(d->L[PDIFF_STOCK]);
	for (int i = 0; i < 2; i++) {
		d->fn[i] = pdiff_ref_chunk(d->L[i], PDIFF_FUNCTION);
		d->tab[i] = pdiff_ref_chunk(d->L[i], PDIFF_TABLE);
		if (d->fn[i] == LUA_NOREF || d->tab[i] == LUA_NOREF)
			return -1;
	}
	return 0;
}

static inline void pdiff_close(struct pdiff *d)
{
	for (int i = 0; i < 2; i++) {
		if (d->L[i])
			lua_close(d->L[i]);
		free(d->out[i].data);
	}
	memset(d, 0, sizeof(*d));
}

static inline const char *pdiff_opname(enum pdiff_op op)
{
	static const char *const names[] = {"find", "match", "gmatch", "gsub"};
	return (unsigned)op < PDIFF_NOPS ? names[op] : "find";
}

/* Run the call in state `which` and write what it gave to d->out[which]. */
static inline void pdiff_exec(struct pdiff *d, int which, const struct pdiff_call *c)
{
	lua_State *L = d->L[which];
	struct pdiff_text *t = &d->out[which];
	int base = lua_gettop(L), nargs = 2;

	t->len = 0;
	pdiff_puts(t, "");
	lua_getglobal(L, "string");
	lua_getfield(L, -1, pdiff_opname(c->op));
	lua_remove(L, -2);
	lua_pushlstring(L, c->s, c->ls);
	lua_pushlstring(L, c->p, c->lp);
	if (c->op == PDIFF_GSUB) {
		switch (c->repl) {
		case PDIFF_REPL_INTEGER: lua_pushinteger(L, 42); break;
		case PDIFF_REPL_FLOAT: lua_pushnumber(L, 0.5); break;
		case PDIFF_REPL_TABLE: lua_rawgeti(L, LUA_REGISTRYINDEX, d->tab[which]); break;
		case PDIFF_REPL_FUNCTION: lua_rawgeti(L, LUA_REGISTRYINDEX, d->fn[which]); break;
		case PDIFF_REPL_BOOLEAN: lua_pushboolean(L, 1); break;
		default: lua_pushlstring(L, c->r ? c->r : "", c->r ? c->lr : 0);
		}
		nargs++;
		if (c->has_max) {
			lua_pushinteger(L, (lua_Integer)c->max);
			nargs++;
		}
	} else if (c->has_init || (c->op == PDIFF_FIND && c->plain)) {
		if (c->has_init)
			lua_pushinteger(L, (lua_Integer)c->init);
		else
			lua_pushnil(L);
		nargs++;
		if (c->op == PDIFF_FIND && c->plain) {
			lua_pushboolean(L, c->plain == 1);
			nargs++;
		}
	}
	if (lua_pcall(L, nargs, LUA_MULTRET, 0) != LUA_OK) {
		pdiff_put_error(t, L);
	} else if (c->op != PDIFF_GMATCH) {
		pdiff_put_results(t, L, base);
	} else {
		int iter = base + 1, n;
		for (n = 0; n < PDIFF_MAX_ITER; n++) {
			int top = lua_gettop(L);
			lua_pushvalue(L, iter);
			if (lua_pcall(L, 0, LUA_MULTRET, 0) != LUA_OK) {
				pdiff_put_error(t, L);
				break;
			}
			if (lua_gettop(L) == top || lua_isnil(L, top + 1)) {
				pdiff_put_results(t, L, top);
				pdiff_puts(t, "end");
				break;
			}
			pdiff_put_results(t, L, top);
			pdiff_puts(t, "; ");
			lua_settop(L, top);
		}
		if (n == PDIFF_MAX_ITER)
			pdiff_puts(t, "...");
	}
	lua_settop(L, base);
}

/* 0 when both states gave the same, 1 otherwise (see d->out), 2 when the
 * sandbox's deadline stopped the call (the stock side was not run). */
static inline int pdiff_run(struct pdiff *d, const struct pdiff_call *c)
{
	d->runs++;
	d->sb.deadline = rd_mono() + d->budget;
	pdiff_exec(d, PDIFF_OURS, c);
	d->sb.deadline = 0;
	if (d->sb.timed_out) {
		d->sb.timed_out = 0;
		d->skipped++;
		return 2;
	}
	pdiff_exec(d, PDIFF_STOCK, c);
	return d->out[PDIFF_STOCK].len != d->out[PDIFF_OURS].len ||
	       memcmp(d->out[PDIFF_STOCK].data, d->out[PDIFF_OURS].data, d->out[PDIFF_STOCK].len) != 0;
}

/* The call as a line of Lua, e.g. string.gsub("a\x00", "%z", "0", 1). */
static inline void pdiff_describe(const struct pdiff_call *c, char *buf, size_t size)
{
	static const char *const repls[] = {NULL, "42", "0.5", "TABLE", "FUNCTION", "true"};
	struct pdiff_text t = {0};
	char num[64];

	pdiff_puts(&t, "string.");
	pdiff_puts(&t, pdiff_opname(c->op));
	pdiff_puts(&t, "(\"");
	pdiff_put_escaped(&t, c->s, c->ls);
	pdiff_puts(&t, "\", \"");
	pdiff_put_escaped(&t, c->p, c->lp);
	pdiff_puts(&t, "\"");
	if (c->op == PDIFF_GSUB) {
		if (c->repl == PDIFF_REPL_STRING || (unsigned)c->repl >= PDIFF_NREPLS) {
			pdiff_puts(&t, ", \"");
			pdiff_put_escaped(&t, c->r ? c->r : "", c->r ? c->lr : 0);
			pdiff_puts(&t, "\"");
		} else {
			pdiff_puts(&t, ", ");
			pdiff_puts(&t, repls[c->repl]);
		}
		if (c->has_max) {
			snprintf(num, sizeof num, ", %lld", c->max);
			pdiff_puts(&t, num);
		}
	} else if (c->has_init || (c->op == PDIFF_FIND && c->plain)) {
		if (c->has_init)
			snprintf(num, sizeof num, ", %lld", c->init);
		else
			snprintf(num, sizeof num, ", nil");
		pdiff_puts(&t, num);
		if (c->op == PDIFF_FIND && c->plain)
			pdiff_puts(&t, c->plain == 1 ? ", true" : ", false");
	}
	pdiff_puts(&t, ")");
	snprintf(buf, size, "%s", t.data);
	free(t.data);
}

/* Decode a fuzzer input into a call; the call points into data. Layout:
 * byte 0 selects the op (bits 0-1), whether init/max is given (bit 2),
 * find's plain flag (bits 3-4) and the replacement kind (bits 5-7, modulo
 * PDIFF_NREPLS); byte 1 is init or max as a signed byte; the rest is
 * subject, pattern and replacement separated by 0xff bytes (missing parts
 * are empty). Subject and pattern are cut to 256 bytes each. */
static inline void pdiff_call_from_bytes(struct pdiff_call *c, const uint8_t *data, size_t size)
{
	const char *part[3] = {"", "", ""};
	size_t len[3] = {0, 0, 0};
	uint8_t b0 = size > 0 ? data[0] : 0;
	int8_t b1 = size > 1 ? (int8_t)data[1] : 0;
	size_t i = size > 2 ? 2 : size;

	for (int k = 0; k < 3 && size > 0 && i <= size; k++) { /* data may be NULL if size is 0 */
		size_t j = i;
		while (j < size && (k == 2 || data[j] != 0xff))
			j++;
		part[k] = (const char *)data + i;
		len[k] = j - i;
		i = j + 1;
	}
	memset(c, 0, sizeof(*c));
	c->op = (enum pdiff_op)(b0 & 3);
	c->has_init = c->has_max = (b0 >> 2) & 1;
	c->init = c->max = b1;
	c->plain = (b0 >> 3) & 3;
	if (c->plain == 3)
		c->plain = 0;
	c->repl = (enum pdiff_repl)((b0 >> 5) % PDIFF_NREPLS);
	c->s = part[0];
	c->ls = len[0] > 256 ? 256 : len[0];
	c->p = part[1];
	c->lp = len[1] > 256 ? 256 : len[1];
	c->r = part[2];
	c->lr = len[2];
	if (c->op != PDIFF_GSUB)
		c->has_max = 0;
	else
		c->has_init = 0;
}

#endif

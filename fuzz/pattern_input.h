/* Shared by fuzz_pattern.c and fuzz_pattern_diff.c: input layout and the
 * calls made on a lua_State's string library.
 *
 * Input: byte 0 = init (signed: the init argument of find/match/gmatch and
 * the max count of one gsub), byte 1 = pattern length, byte 2 = replacement
 * length, then the pattern, the replacement, and the rest is the subject.
 * Every byte value may appear in each part. */
#ifndef RECOVERYD_FUZZ_PATTERN_INPUT_H
#define RECOVERYD_FUZZ_PATTERN_INPUT_H

#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

#define PAT_GMATCH_MAX 64 /* gmatch iterations looked at */

struct pat_input {
	int init;
	const char *p, *r, *s;
	size_t lp, lr, ls;
};

static int pat_decode(const uint8_t *data, size_t size, struct pat_input *in)
{
	if (size < 3)
		return -1;
	in->init = (int8_t)data[0];
	in->lp = data[1];
	in->lr = data[2];
	data += 3;
	size -= 3;
	if (in->lp > size)
		in->lp = size;
	in->p = (const char *)data;
	data += in->lp;
	size -= in->lp;
	if (in->lr > size)
		in->lr = size;
	in->r = (const char *)data;
	in->s = in->r + in->lr;
	in->ls = size - in->lr;
	return 0;
}

/* Results as text: the same text from two states means the same results. */
struct pat_out {
	char *buf;
	size_t len, cap;
};

static void out_add(struct pat_out *o, const char *s, size_t n)
{
	if (o->len + n + 1 > o->cap) {
		o->cap = (o->len + n + 1) * 2;
		o->buf = realloc(o->buf, o->cap);
		if (!o->buf)
			abort();
	}
	memcpy(o->buf + o->len, s, n);
	o->len += n;
	o->buf[o->len] = '\0';
}

static void out_str(struct pat_out *o, const char *s)
{
	out_add(o, s, strlen(s));
}

/* Printable rendering: bytes outside 0x20..0x7e as \xHH. */
static void out_bytes(struct pat_out *o, const char *s, size_t n)
{
	char hex[8];
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\') {
			out_add(o, (const char *)&c, 1);
		} else {
			snprintf(hex, sizeof(hex), "\\x%02x", c);
			out_str(o, hex);
		}
	}
}

static void out_value(struct pat_out *o, lua_State *L, int idx)
{
	char num[64];
	size_t n;
	const char *s;

	switch (lua_type(L, idx)) {
	case LUA_TNIL:
		out_str(o, " nil");
		break;
	case LUA_TBOOLEAN:
		out_str(o, lua_toboolean(L, idx) ? " true" : " false");
		break;
	case LUA_TNUMBER:
		if (lua_isinteger(L, idx))
			snprintf(num, sizeof(num), " %lld", (long long)lua_tointeger(L, idx));
		else
			snprintf(num, sizeof(num), " %.17g", lua_tonumber(L, idx));
		out_str(o, num);
		break;
	case LUA_TSTRING:
		s = lua_tolstring(L, idx, &n);
		out_str(o, " \"");
		out_bytes(o, s, n);
		out_str(o, "\"");
		break;
	default:
		out_str(o, " ");
		out_str(o, luaL_typename(L, idx));
		break;
	}
}

/* gsub replacement function: answers differ with the first capture's length
 * and the number of captures, to cover false (keep), number and string. */
static int pat_repl_fn(lua_State *L)
{
	int n = lua_gettop(L);
	size_t l = 0;
	if (n >= 1 && lua_type(L, 1) == LUA_TSTRING)
		lua_tolstring(L, 1, &l);
	if (l % 3 == 1)
		lua_pushboolean(L, 0);
	else if (l % 3 == 2)
		lua_pushinteger(L, n);
	else
		lua_pushfstring(L, "<%d:%d>", n, (int)l);
	return 1;
}

enum pat_op {
	PAT_FIND,
	PAT_FIND_PLAIN,
	PAT_MATCH,
	PAT_GMATCH,
	PAT_GSUB,
	PAT_GSUB_MAX,
	PAT_GSUB_TABLE,
	PAT_GSUB_FUNCTION,
	PAT_NOPS
};

static const char *const pat_op_name[PAT_NOPS] = {
	"find", "find plain", "match", "gmatch", "gsub", "gsub max", "gsub table", "gsub function"};

struct pat_call {
	const struct pat_input *in;
	enum pat_op op;
	struct pat_out *out;
};

/* lua_CFunction run under lua_pcall: one call of the string library,
 * results appended to the output as they come. */
static int pat_call_protected(lua_State *L)
{
	const struct pat_call *c = lua_touserdata(L, 1);
	const struct pat_input *in = c->in;
	static const char *const fn[PAT_NOPS] = {"find", "find",  "match", "gmatch",
	                                         "gsub", "gsub",  "gsub",  "gsub"};
	int base, nargs = 3;

	lua_settop(L, 0);
	lua_getglobal(L, "string");
	lua_getfield(L, -1, fn[c->op]);
	lua_remove(L, -2);
	base = lua_gettop(L);
	lua_pushlstring(L, in->s, in->ls);
	lua_pushlstring(L, in->p, in->lp);
	switch (c->op) {
	case PAT_FIND:
	case PAT_MATCH:
	case PAT_GMATCH:
		lua_pushinteger(L, in->init);
		break;
	case PAT_FIND_PLAIN:
		lua_pushinteger(L, in->init);
		lua_pushboolean(L, 1);
		nargs = 4;
		break;
	case PAT_GSUB:
		lua_pushlstring(L, in->r, in->lr);
		break;
	case PAT_GSUB_MAX:
		lua_pushlstring(L, in->r, in->lr);
		lua_pushinteger(L, in->init);
		nargs = 4;
		break;
	case PAT_GSUB_TABLE:
		lua_createtable(L, 0, 4);
		lua_pushlstring(L, in->r, in->lr);
		lua_pushliteral(L, "R");
		lua_settable(L, -3);
		lua_pushliteral(L, "A");
		lua_setfield(L, -2, "a");
		lua_pushboolean(L, 0);
		lua_setfield(L, -2, "b");
		lua_pushinteger(L, 7);
		lua_rawseti(L, -2, 1);
		break;
	case PAT_GSUB_FUNCTION:
	default:
		lua_pushcfunction(L, pat_repl_fn);
		break;
	}
	lua_call(L, nargs, LUA_MULTRET);
	if (c->op != PAT_GMATCH) {
		for (int i = base; i <= lua_gettop(L); i++)
			out_value(c->out, L, i);
		return 0;
	}
	/* gmatch: the iterator is at base; call it until it says nil. */
	for (int k = 0; k < PAT_GMATCH_MAX; k++) {
		lua_settop(L, base);
		lua_pushvalue(L, base);
		lua_call(L, 0, LUA_MULTRET);
		out_str(c->out, " |");
		if (lua_gettop(L) == base || lua_isnil(L, base + 1))
			break;
		for (int i = base + 1; i <= lua_gettop(L); i++)
			out_value(c->out, L, i);
	}
	return 0;
}

/* Run op on L; the results or "error: message" go to out. Returns the
 * lua_pcall status. */
static int pat_run(lua_State *L, const struct pat_input *in, enum pat_op op, struct pat_out *out)
{
	struct pat_call c = {in, op, out};
	int st;

	out->len = 0;
	out_str(out, pat_op_name[op]);
	out_str(out, ":");
	lua_settop(L, 0);
	lua_pushcfunction(L, pat_call_protected);
	lua_pushlightuserdata(L, &c);
	st = lua_pcall(L, 1, 0, 0);
	if (st != LUA_OK) {
		size_t n = 0;
		const char *m = lua_tolstring(L, -1, &n);
		out_str(out, " error: ");
		if (m)
			out_bytes(out, m, n);
	}
	lua_settop(L, 0);
	return st;
}

#endif

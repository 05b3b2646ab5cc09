/* Lua pattern matching for the sandbox: string.find, match, gmatch and
 * gsub, written anew so that matching counts its steps. The stock matcher
 * runs in C where the deadline hook never fires, so a pattern that
 * backtracks over an attacker-sized label could hold the runner thread for
 * hours; this one checks the attempt's deadline every few thousand steps.
 *
 * Results and error messages are those of Lua 5.4's lstrlib.c (5.4.4, as
 * Debian ships), including what the manual leaves out: the %z class (NUL;
 * undocumented since 5.2), plain search for a pattern without specials even when it holds a
 * NUL, the 32-capture and 200-level limits. Subjects and patterns are Lua
 * strings, so they may hold NULs: lengths and pointers only, never the C
 * string functions (the terminating NUL that every Lua string has is read
 * at p_end/src_end exactly where lstrlib reads it). One intended difference:
 * lstrlib does not restore its recursion budget when a match raises an
 * error, so a gmatch iterator called again after "pattern too complex"
 * matches without the limit; here every match starts with the full budget.
 * tests/unit/test_pattern_diff.c compares both on random calls. */
#include "pattern.h"

#include <ctype.h>
#include <lauxlib.h>
#include <string.h>

#include "recoveryd/common.h"
#include "recoveryd/sandbox.h"

#define MAXCAPTURES 32
#define MAXDEPTH 200          /* recursion, as the stock matcher (MAXCCALLS) */
#define CHECK_EVERY 4096      /* steps between deadline checks */
#define CAP_UNFINISHED (-1)
#define CAP_POSITION (-2)
#define ESC '%'
#define SPECIALS "^$*+?.([%-"

struct mstate {
	const char *src_init, *src_end, *p_end;
	lua_State *L;
	int depth;
	int level;
	unsigned long steps;
	struct {
		const char *init;
		ptrdiff_t len;
	} capture[MAXCAPTURES];
};

static void step(struct mstate *ms)
{
	if (++ms->steps % CHECK_EVERY)
		return;
	struct sandbox *sb = sandbox_of(ms->L);
	double now = rd_mono();
	if (sb->deadline && now >= sb->deadline) {
		sb->timed_out = 1; /* the sandbox's pcall re-raises */
		luaL_error(ms->L, "attempt deadline exceeded (in pattern matching)");
	}
	/* A match cannot be paused for other jobs: bounded like other code
	 * that cannot yield (sandbox.h). */
	double held = sandbox_held_too_long(sb, now);
	if (held > 0)
		luaL_error(ms->L, "the playbook held the event loop for %d s in pattern matching", (int)held);
}

static int check_capture(struct mstate *ms, int l)
{
	l -= '1';
	if (l < 0 || l >= ms->level || ms->capture[l].len == CAP_UNFINISHED)
		return luaL_error(ms->L, "invalid capture index %%%d", l + 1);
	return l;
}

static int capture_to_close(struct mstate *ms)
{
	for (int level = ms->level - 1; level >= 0; level--)
		if (ms->capture[level].len == CAP_UNFINISHED)
			return level;
	return luaL_error(ms->L, "invalid pattern capture");
}

/* The end of the single-character class starting at p. */
static const char *class_end(struct mstate *ms, const char *p)
{
	switch (*p++) {
	case ESC:
		if (p == ms->p_end)
			luaL_error(ms->L, "malformed pattern (ends with '%%')");
		return p + 1;
	case '[':
		if (*p == '^')
			p++;
		do { /* look for a ']' */
			if (p == ms->p_end)
				luaL_error(ms->L, "malformed pattern (missing ']')");
			if (*(p++) == ESC && p < ms->p_end)
				p++; /* skip escapes (e.g. '%]') */
		} while (*p != ']');
		return p + 1;
	default:
		return p;
	}
}

static int match_class(int c, int cl)
{
	int res;
	switch (tolower(cl)) {
	case 'a': res = isalpha(c); break;
	case 'c': res = iscntrl(c); break;
	case 'd': res = isdigit(c); break;
	case 'g': res = isgraph(c); break;
	case 'l': res = islower(c); break;
	case 'p': res = ispunct(c); break;
	case 's': res = isspace(c); break;
	case 'u': res = isupper(c); break;
	case 'w': res = isalnum(c); break;
	case 'x': res = isxdigit(c); break;
	case 'z': res = c == 0; break; /* out of the manual since 5.2, still in lstrlib */
	default: return cl == c;
	}
	return islower(cl) ? res != 0 : res == 0;
}

/* Does c belong to the set [ ... ] from p (at '[') to ec (at ']')? */
static int match_bracket(int c, const char *p, const char *ec)
{
	int sig = 1;
	if (*(p + 1) == '^') {
		sig = 0;
		p++;
	}
	while (++p < ec) {
		if (*p == ESC) {
			p++;
			if (match_class(c, (unsigned char)*p))
				return sig;
		} else if (*(p + 1) == '-' && p + 2 < ec) {
			p += 2;
			if ((unsigned char)*(p - 2) <= c && c <= (unsigned char)*p)
				return sig;
		} else if ((unsigned char)*p == c) {
			return sig;
		}
	}
	return !sig;
}

static int single_match(struct mstate *ms, const char *s, const char *p, const char *ep)
{
	if (s >= ms->src_end)
		return 0;
	int c = (unsigned char)*s;
	switch (*p) {
	case '.':
		return 1;
	case ESC:
		return match_class(c, (unsigned char)*(p + 1));
	case '[':
		return match_bracket(c, p, ep - 1);
	default:
		return (unsigned char)*p == c;
	}
}

static const char *do_match(struct mstate *ms, const char *s, const char *p);

static const char *match_balance(struct mstate *ms, const char *s, const char *p)
{
	if (p >= ms->p_end - 1)
		luaL_error(ms->L, "malformed pattern (missing arguments to '%%b')");
	if (*s != *p)
		return NULL;
	int b = *p, e = *(p + 1), cont = 1;
	while (++s < ms->src_end) {
		step(ms);
		if (*s == e) {
			if (--cont == 0)
				return s + 1;
		} else if (*s == b) {
			cont++;
		}
	}
	return NULL;
}

static const char *max_expand(struct mstate *ms, const char *s, const char *p, const char *ep)
{
	ptrdiff_t i = 0;
	while (single_match(ms, s + i, p, ep)) {
		step(ms);
		i++;
	}
	/* try with the longest repetition first, then shorter ones */
	while (i >= 0) {
		const char *res = do_match(ms, s + i, ep + 1);
		if (res)
			return res;
		i--;
	}
	return NULL;
}

static const char *min_expand(struct mstate *ms, const char *s, const char *p, const char *ep)
{
	for (;;) {
		const char *res = do_match(ms, s, ep + 1);
		if (res)
			return res;
		if (!single_match(ms, s, p, ep))
			return NULL;
		s++;
	}
}

static const char *start_capture(struct mstate *ms, const char *s, const char *p, int what)
{
	const char *res;
	if (ms->level >= MAXCAPTURES)
		luaL_error(ms->L, "too many captures");
	ms->capture[ms->level].init = s;
	ms->capture[ms->level].len = what;
	ms->level++;
	if ((res = do_match(ms, s, p)) == NULL)
		ms->level--; /* undo */
	return res;
}

static const char *end_capture(struct mstate *ms, const char *s, const char *p)
{
	int l = capture_to_close(ms);
	const char *res;
	ms->capture[l].len = s - ms->capture[l].init;
	if ((res = do_match(ms, s, p)) == NULL)
		ms->capture[l].len = CAP_UNFINISHED;
	return res;
}

static const char *match_capture(struct mstate *ms, const char *s, int l)
{
	size_t len;
	l = check_capture(ms, l);
	len = (size_t)ms->capture[l].len;
	if ((size_t)(ms->src_end - s) >= len && memcmp(ms->capture[l].init, s, len) == 0)
		return s + len;
	return NULL;
}

static const char *do_match(struct mstate *ms, const char *s, const char *p)
{
	if (ms->depth-- == 0)
		luaL_error(ms->L, "pattern too complex");
	step(ms);
	while (p != ms->p_end) {
		switch (*p) {
		case '(':
			if (*(p + 1) == ')')
				s = start_capture(ms, s, p + 2, CAP_POSITION);
			else
				s = start_capture(ms, s, p + 1, CAP_UNFINISHED);
			goto done;
		case ')':
			s = end_capture(ms, s, p + 1);
			goto done;
		case '$':
			if (p + 1 != ms->p_end)
				goto dflt; /* '$' is a plain character here */
			s = s == ms->src_end ? s : NULL;
			goto done;
		case ESC:
			switch (*(p + 1)) {
			case 'b':
				s = match_balance(ms, s, p + 2);
				if (s) {
					p += 4;
					continue;
				}
				goto done;
			case 'f': {
				const char *ep;
				char prev;
				p += 2;
				if (*p != '[')
					luaL_error(ms->L, "missing '[' after '%%f' in pattern");
				ep = class_end(ms, p);
				prev = s == ms->src_init ? '\0' : *(s - 1);
				if (!match_bracket((unsigned char)prev, p, ep - 1) &&
				    match_bracket(s < ms->src_end ? (unsigned char)*s : 0, p, ep - 1)) {
					p = ep;
					continue;
				}
				s = NULL;
				goto done;
			}
			case '0': case '1': case '2': case '3': case '4':
			case '5': case '6': case '7': case '8': case '9':
				s = match_capture(ms, s, (unsigned char)*(p + 1));
				if (s) {
					p += 2;
					continue;
				}
				goto done;
			default:
				goto dflt;
			}
		default:
		dflt: {
			const char *ep = class_end(ms, p);
			if (!single_match(ms, s, p, ep)) {
				if (*ep == '*' || *ep == '?' || *ep == '-') {
					p = ep + 1; /* zero repetitions are fine */
					continue;
				}
				s = NULL;
			} else {
				switch (*ep) {
				case '?': {
					const char *res = do_match(ms, s + 1, ep + 1);
					if (res) {
						s = res;
					} else {
						p = ep + 1;
						continue;
					}
					break;
				}
				case '+':
					s = max_expand(ms, s + 1, p, ep);
					break;
				case '*':
					s = max_expand(ms, s, p, ep);
					break;
				case '-':
					s = min_expand(ms, s, p, ep);
					break;
				default:
					s++;
					p = ep;
					continue;
				}
			}
			goto done;
		}
		}
	}
done:
	ms->depth++;
	return s;
}

/* ---------- captures to Lua values ---------- */

static size_t get_onecapture(struct mstate *ms, int i, const char *s, const char *e, const char **cap)
{
	if (i >= ms->level) {
		if (i != 0)
			luaL_error(ms->L, "invalid capture index %%%d", i + 1);
		*cap = s;
		return (size_t)(e - s);
	}
	ptrdiff_t capl = ms->capture[i].len;
	*cap = ms->capture[i].init;
	if (capl == CAP_UNFINISHED)
		luaL_error(ms->L, "unfinished capture");
	else if (capl == CAP_POSITION)
		lua_pushinteger(ms->L, (ms->capture[i].init - ms->src_init) + 1);
	return (size_t)capl;
}

static void push_onecapture(struct mstate *ms, int i, const char *s, const char *e)
{
	const char *cap;
	ptrdiff_t l = (ptrdiff_t)get_onecapture(ms, i, s, e, &cap);
	if (l != CAP_POSITION)
		lua_pushlstring(ms->L, cap, (size_t)l);
}

static int push_captures(struct mstate *ms, const char *s, const char *e)
{
	int n = (ms->level == 0 && s) ? 1 : ms->level;
	luaL_checkstack(ms->L, n, "too many captures");
	for (int i = 0; i < n; i++)
		push_onecapture(ms, i, s, e);
	return n;
}

static void prepstate(struct mstate *ms, lua_State *L, const char *s, size_t ls, const char *p, size_t lp)
{
	ms->L = L;
	ms->depth = MAXDEPTH;
	ms->src_init = s;
	ms->src_end = s + ls;
	ms->p_end = p + lp;
	ms->steps = 0;
}

/* Unlike lstrlib, also resets the depth: an error leaves it spent. */
static void reprepstate(struct mstate *ms)
{
	ms->level = 0;
	ms->depth = MAXDEPTH;
}

static size_t posrelat(lua_Integer pos, size_t len)
{
	if (pos > 0)
		return (size_t)pos;
	if (pos == 0)
		return 1;
	if (pos < -(lua_Integer)len)
		return 1;
	return len + (size_t)pos + 1;
}

/* No special character in p[0..l) (a NUL is not special: memchr, not
 * strchr, which would find the terminator of SPECIALS). */
static int nospecials(const char *p, size_t l)
{
	for (size_t i = 0; i < l; i++)
		if (memchr(SPECIALS, p[i], sizeof(SPECIALS) - 1))
			return 0;
	return 1;
}

static const char *memfind(const char *s1, size_t l1, const char *s2, size_t l2)
{
	if (l2 == 0)
		return s1;
	if (l2 > l1)
		return NULL;
	return memmem(s1, l1, s2, l2);
}

static int find_aux(lua_State *L, int find)
{
	size_t ls, lp;
	const char *s = luaL_checklstring(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);
	size_t init = posrelat(luaL_optinteger(L, 3, 1), ls) - 1;

	if (init > ls) {
		lua_pushnil(L);
		return 1;
	}
	if (find && (lua_toboolean(L, 4) || nospecials(p, lp))) {
		const char *s2 = memfind(s + init, ls - init, p, lp);
		if (s2) {
			lua_pushinteger(L, (s2 - s) + 1);
			lua_pushinteger(L, (lua_Integer)((s2 - s) + lp));
			return 2;
		}
	} else {
		struct mstate ms;
		const char *s1 = s + init;
		int anchor = *p == '^';
		if (anchor) {
			p++;
			lp--;
		}
		prepstate(&ms, L, s, ls, p, lp);
		do {
			const char *res;
			reprepstate(&ms);
			if ((res = do_match(&ms, s1, p)) != NULL) {
				if (find) {
					lua_pushinteger(L, (s1 - s) + 1);
					lua_pushinteger(L, res - s);
					return push_captures(&ms, NULL, NULL) + 2;
				}
				return push_captures(&ms, s1, res);
			}
		} while (s1++ < ms.src_end && !anchor);
	}
	lua_pushnil(L);
	return 1;
}

static int p_find(lua_State *L)
{
	return find_aux(L, 1);
}

static int p_match(lua_State *L)
{
	return find_aux(L, 0);
}

/* gmatch state lives in a userdata kept as an upvalue of the iterator. */
struct gmatch {
	const char *src, *p, *lastmatch;
	struct mstate ms;
};

static int gmatch_aux(lua_State *L)
{
	struct gmatch *gm = lua_touserdata(L, lua_upvalueindex(3));
	gm->ms.L = L;
	for (const char *src = gm->src; src <= gm->ms.src_end; src++) {
		const char *e;
		reprepstate(&gm->ms);
		if ((e = do_match(&gm->ms, src, gm->p)) != NULL && e != gm->lastmatch) {
			gm->src = gm->lastmatch = e;
			return push_captures(&gm->ms, src, e);
		}
	}
	return 0;
}

static int p_gmatch(lua_State *L)
{
	size_t ls, lp;
	const char *s = luaL_checklstring(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);
	size_t init = posrelat(luaL_optinteger(L, 3, 1), ls) - 1;
	struct gmatch *gm;

	lua_settop(L, 2); /* keep the strings alive as upvalues */
	gm = lua_newuserdatauv(L, sizeof(*gm), 0);
	if (init > ls)
		init = ls + 1; /* start after the end: no match */
	prepstate(&gm->ms, L, s, ls, p, lp);
	gm->src = s + init;
	gm->p = p;
	gm->lastmatch = NULL;
	lua_pushcclosure(L, gmatch_aux, 3);
	return 1;
}

static void add_s(struct mstate *ms, luaL_Buffer *b, const char *s, const char *e)
{
	size_t l;
	lua_State *L = ms->L;
	const char *news = lua_tolstring(L, 3, &l);
	const char *p;

	while ((p = memchr(news, ESC, l)) != NULL) {
		luaL_addlstring(b, news, (size_t)(p - news));
		p++;
		if (*p == ESC) {
			luaL_addchar(b, *p);
		} else if (*p == '0') {
			luaL_addlstring(b, s, (size_t)(e - s)); /* the whole match */
		} else if (isdigit((unsigned char)*p)) {
			const char *cap;
			ptrdiff_t resl = (ptrdiff_t)get_onecapture(ms, *p - '1', s, e, &cap);
			if (resl == CAP_POSITION)
				luaL_addvalue(b);
			else
				luaL_addlstring(b, cap, (size_t)resl);
		} else {
			luaL_error(L, "invalid use of '%c' in replacement string", ESC);
		}
		l -= (size_t)(p + 1 - news);
		news = p + 1;
	}
	luaL_addlstring(b, news, l);
}

static int add_value(struct mstate *ms, luaL_Buffer *b, const char *s, const char *e, int tr)
{
	lua_State *L = ms->L;
	switch (tr) {
	case LUA_TFUNCTION: {
		lua_pushvalue(L, 3);
		int n = push_captures(ms, s, e);
		lua_call(L, n, 1);
		break;
	}
	case LUA_TTABLE:
		push_onecapture(ms, 0, s, e);
		lua_gettable(L, 3);
		break;
	default:
		add_s(ms, b, s, e);
		return 1;
	}
	if (!lua_toboolean(L, -1)) {
		lua_pop(L, 1);
		luaL_addlstring(b, s, (size_t)(e - s)); /* keep the original text */
		return 0;
	}
	if (!lua_isstring(L, -1))
		return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
	luaL_addvalue(b);
	return 1;
}

static int p_gsub(lua_State *L)
{
	size_t srcl, lp;
	const char *src = luaL_checklstring(L, 1, &srcl);
	const char *p = luaL_checklstring(L, 2, &lp);
	const char *lastmatch = NULL;
	int tr = lua_type(L, 3);
	lua_Integer max_s = luaL_optinteger(L, 4, (lua_Integer)srcl + 1);
	int anchor = *p == '^';
	lua_Integer n = 0;
	int changed = 0;
	struct mstate ms;
	luaL_Buffer b;

	luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE, 3,
	                 "string/function/table");
	luaL_buffinit(L, &b);
	if (anchor) {
		p++;
		lp--;
	}
	prepstate(&ms, L, src, srcl, p, lp);
	while (n < max_s) {
		const char *e;
		reprepstate(&ms);
		if ((e = do_match(&ms, src, p)) != NULL && e != lastmatch) {
			n++;
			changed = add_value(&ms, &b, src, e, tr) | changed;
			src = lastmatch = e;
		} else if (src < ms.src_end) {
			luaL_addchar(&b, *src++);
		} else {
			break;
		}
		if (anchor)
			break;
	}
	if (!changed) {
		lua_pushvalue(L, 1);
	} else {
		luaL_addlstring(&b, src, (size_t)(ms.src_end - src));
		luaL_pushresult(&b);
	}
	lua_pushinteger(L, n);
	return 2;
}

void pattern_install(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{"find", p_find}, {"match", p_match}, {"gmatch", p_gmatch}, {"gsub", p_gsub}, {NULL, NULL}};

	lua_getglobal(L, "string");
	luaL_setfuncs(L, fns, 0);
	lua_pop(L, 1);
}

/* Alertmanager matchers in their text form (the UTF-8 parser of 0.27+):
 * `name op value`, optionally a {...} list. Values are unquoted literals or
 * Go-quoted strings. Regexes are Go regexp (RE2) syntax in Alertmanager; we
 * compile them with RE2 itself (re2_shim.h), which matches the whole value
 * the way Alertmanager's ^(?:re)$ does, in linear time. */
#include "recoveryd/matcher.h"
#include "recoveryd/common.h"
#include "re2_shim.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum op { OP_EQ, OP_NE, OP_RE, OP_NRE };

static const char *const op_text[] = { "=", "!=", "=~", "!~" };

struct matcher {
	enum op op;
	char *name;
	char *value;
	char *text;  /* canonical: name op "value" */
	struct re2_shim *re; /* for =~ and !~ */
};

struct matcher_set {
	size_t n, cap;
	struct matcher *v;
};

struct parser {
	const char *s;  /* the whole text, for messages */
	size_t pos;
	char *err;
	size_t errlen;
};

/* ---- small helpers ---------------------------------------------------- */

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Characters allowed in an unquoted name or value (Alertmanager's lexer). */
static int is_unquoted(char c)
{
	return c && !is_space(c) && !strchr("{}!=~,\\\"'`", c);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}


static size_t utf8_put(char *out, uint32_t cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* Copy text for a message: control bytes and invalid UTF-8 escaped, long
 * input cut between characters, so a hostile config line cannot forge log
 * lines or leave half a character. */
static void show_text(const char *s, size_t n, char *buf, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0, i = 0;

	while (i < n && s[i] && o + 8 < len) {
		unsigned char c = (unsigned char)s[i];
		size_t avail = strnlen(s + i, n - i < 4 ? n - i : 4);
		size_t k = rd_utf8_len((const unsigned char *)s + i, avail);

		if (c < 0x20 || c == 0x7f || k == 0) {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 15];
			i++;
		} else {
			memcpy(buf + o, s + i, k);
			o += k;
			i += k;
		}
	}
	if (i < n && s[i]) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
}

static int perr(struct parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "matcher '<text>': <what>"; always returns -1. */
static int perr(struct parser *p, const char *fmt, ...)
{
	char shown[160];
	va_list ap;
	int k;

	if (!p->err || !p->errlen)
		return -1;
	show_text(p->s, strlen(p->s), shown, sizeof(shown));
	k = snprintf(p->err, p->errlen, "matcher '%s': ", shown);
	if (k >= 0 && (size_t)k < p->errlen) {
		va_start(ap, fmt);
		vsnprintf(p->err + k, p->errlen - (size_t)k, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* What stands at pos, for "got ..." in messages. */
static const char *got(const struct parser *p, char *buf, size_t len)
{
	const char *s = p->s + p->pos;
	size_t n = 0;
	char tmp[64];

	if (!*s)
		return "end of input";
	if (is_unquoted(*s))
		while (is_unquoted(s[n]))
			n++;
	else
		n = 1;
	show_text(s, n, tmp, sizeof(tmp));
	snprintf(buf, len, "'%s'", tmp);
	return buf;
}

static void skip_ws(struct parser *p)
{
	while (is_space(p->s[p->pos]))
		p->pos++;
}

/* ---- tokens ------------------------------------------------------------ */

/* A Go double-quoted string starting at pos (on the '"'), decoded into a
 * malloc'd *out. Escapes as strconv.Unquote; NUL is refused since values
 * are C strings. */
static int read_quoted(struct parser *p, char **out)
{
	size_t start = p->pos, o = 0;
	const char *s = p->s;
	char *buf;
	int ret = -1;

	/* Decoding never grows the text. */
	buf = malloc(strlen(s + start) + 1);
	if (!buf)
		return perr(p, "out of memory");
	p->pos++;
	for (;;) {
		char c = s[p->pos];
		uint32_t cp;
		int digits, base;

		if (c == '\0' || c == '\n') {
			perr(p, "unterminated quoted string starting at column %zu", start + 1);
			goto out;
		}
		if (c == '"') {
			p->pos++;
			break;
		}
		if (c != '\\') {
			buf[o++] = c;
			p->pos++;
			continue;
		}
		c = s[p->pos + 1];
		switch (c) {
		case 'a': buf[o++] = '\a'; p->pos += 2; continue;
		case 'b': buf[o++] = '\b'; p->pos += 2; continue;
		case 'f': buf[o++] = '\f'; p->pos += 2; continue;
		case 'n': buf[o++] = '\n'; p->pos += 2; continue;
		case 'r': buf[o++] = '\r'; p->pos += 2; continue;
		case 't': buf[o++] = '\t'; p->pos += 2; continue;
		case 'v': buf[o++] = '\v'; p->pos += 2; continue;
		case '\\': buf[o++] = '\\'; p->pos += 2; continue;
		case '"': buf[o++] = '"'; p->pos += 2; continue;
		case 'x': digits = 2; base = 16; break;
		case 'u': digits = 4; base = 16; break;
		case 'U': digits = 8; base = 16; break;
		case '0': case '1': case '2': case '3':
		case '4': case '5': case '6': case '7':
			digits = 3; base = 8; break;
		default:
			if (c)
				perr(p, "invalid escape '\\%c' at column %zu", c, p->pos + 1);
			else
				perr(p, "unterminated quoted string starting at column %zu", start + 1);
			goto out;
		}
		{
			size_t at = p->pos;
			size_t first = base == 8 ? at + 1 : at + 2;

			cp = 0;
			for (int i = 0; i < digits; i++) {
				int v = hexval(s[first + i]);
				if (v < 0 || v >= base) {
					perr(p, "invalid escape at column %zu: '\\%c' needs %d %s digits",
					     at + 1, c, base == 8 ? 3 : digits,
					     base == 8 ? "octal" : "hex");
					goto out;
				}
				cp = cp * (uint32_t)base + (uint32_t)v;
			}
			p->pos = first + (size_t)digits;
			if (cp == 0) {
				perr(p, "NUL character not allowed in value at column %zu", at + 1);
				goto out;
			}
			if (c == 'x' || base == 8) {
				/* \xNN and octal are single bytes, as in Go. */
				if (cp > 255) {
					perr(p, "octal escape out of range at column %zu", at + 1);
					goto out;
				}
				buf[o++] = (char)cp;
			} else {
				if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
					perr(p, "invalid Unicode code point in escape at column %zu",
					     at + 1);
					goto out;
				}
				o += utf8_put(buf + o, cp);
			}
		}
	}
	buf[o] = '\0';
	*out = buf;
	buf = NULL;
	ret = 0;
out:
	free(buf);
	return ret;
}

/* A name or value: quoted or unquoted. what says which, for messages. */
static int read_token(struct parser *p, const char *what, char **out)
{
	size_t start = p->pos, n = 0;
	char gbuf[80];

	if (p->s[p->pos] == '"')
		return read_quoted(p, out);
	if (p->s[p->pos] == '\'' || p->s[p->pos] == '`')
		return perr(p, "expected %s at column %zu, got %s (only double quotes are allowed)",
		            what, start + 1, got(p, gbuf, sizeof(gbuf)));
	while (is_unquoted(p->s[start + n]))
		n++;
	if (n == 0)
		return perr(p, "expected %s at column %zu, got %s", what, start + 1,
		            got(p, gbuf, sizeof(gbuf)));
	*out = strndup(p->s + start, n);
	if (!*out)
		return perr(p, "out of memory");
	p->pos += n;
	return 0;
}

/* ---- canonical text ------------------------------------------------------ */

/* Go strconv.Quote, close enough for display and round-tripping: escapes
 * quote, backslash, control bytes and invalid UTF-8; keeps valid UTF-8. */
static char *go_quote(const char *name, enum op op, const char *v)
{
	static const char hex[] = "0123456789abcdef";
	size_t cap = strlen(name) + 2 + 2 + strlen(v) * 4 + 1, o;
	char *buf = malloc(cap);
	const unsigned char *s = (const unsigned char *)v;

	if (!buf)
		return NULL;
	o = (size_t)snprintf(buf, cap, "%s%s\"", name, op_text[op]);
	while (*s) {
		int n = (int)rd_utf8_len(s, 4);
		const char *esc = NULL;

		switch (*s) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\a': esc = "\\a"; break;
		case '\b': esc = "\\b"; break;
		case '\f': esc = "\\f"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		case '\v': esc = "\\v"; break;
		default: break;
		}
		if (esc) {
			memcpy(buf + o, esc, 2);
			o += 2;
			s++;
		} else if (n == 0 || *s < 0x20 || *s == 0x7f) {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[*s >> 4];
			buf[o++] = hex[*s & 15];
			s++;
		} else {
			memcpy(buf + o, s, (size_t)n);
			o += (size_t)n;
			s += n;
		}
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

/* ---- set ----------------------------------------------------------------- */

static void matcher_clear(struct matcher *m)
{
	free(m->name);
	free(m->value);
	free(m->text);
	re2_shim_free(m->re);
	memset(m, 0, sizeof(*m));
}

struct matcher_set *matcher_set_new(void)
{
	return calloc(1, sizeof(struct matcher_set));
}

void matcher_set_free(struct matcher_set *ms)
{
	if (!ms)
		return;
	for (size_t i = 0; i < ms->n; i++)
		matcher_clear(&ms->v[i]);
	free(ms->v);
	free(ms);
}

/* Compile m->value for =~ / !~; errors name the matcher as written. The
 * pattern goes to RE2 as written: full-match anchoring needs no wrapping,
 * and an unbalanced ')' stays an error instead of un-anchoring the rest. */
static int compile_re(struct parser *p, struct matcher *m, size_t start)
{
	char why[160] = "", shown[160], cause[200];

	m->re = re2_shim_compile(m->value, strlen(m->value), why, sizeof(why));
	if (m->re)
		return 0;
	if (p->err && p->errlen) {
		show_text(p->s + start, p->pos - start, shown, sizeof(shown));
		show_text(why, strlen(why), cause, sizeof(cause));
		snprintf(p->err, p->errlen, "matcher '%s': invalid regex: %s", shown, cause);
	}
	return -1;
}

/* One `name op value` at pos into m (zeroed by the caller). */
static int parse_one(struct parser *p, struct matcher *m)
{
	size_t start = p->pos;
	char gbuf[80], shown[80];
	const char *s = p->s;

	if (read_token(p, "a label name", &m->name) < 0)
		return -1;
	if (!rd_label_name_valid(m->name)) {
		show_text(m->name, strlen(m->name), shown, sizeof(shown));
		return perr(p, "invalid label name '%s' at column %zu (must match "
		               "[a-zA-Z_][a-zA-Z0-9_]*)", shown, start + 1);
	}
	skip_ws(p);
	if (s[p->pos] == '=' && s[p->pos + 1] == '~') {
		m->op = OP_RE;
		p->pos += 2;
	} else if (s[p->pos] == '=') {
		m->op = OP_EQ;
		p->pos += 1;
	} else if (s[p->pos] == '!' && s[p->pos + 1] == '=') {
		m->op = OP_NE;
		p->pos += 2;
	} else if (s[p->pos] == '!' && s[p->pos + 1] == '~') {
		m->op = OP_NRE;
		p->pos += 2;
	} else {
		return perr(p, "expected an operator (=, !=, =~, !~) after '%s' at column %zu, got %s",
		            m->name, p->pos + 1, got(p, gbuf, sizeof(gbuf)));
	}
	skip_ws(p);
	if (!s[p->pos] || s[p->pos] == ',' || s[p->pos] == '}')
		return perr(p, "missing value after '%s%s' at column %zu (write \"\" for the empty "
		               "string)", m->name, op_text[m->op], p->pos + 1);
	if (read_token(p, "a label value", &m->value) < 0)
		return -1;
	if (!(m->text = go_quote(m->name, m->op, m->value)))
		return perr(p, "out of memory");
	if ((m->op == OP_RE || m->op == OP_NRE) && compile_re(p, m, start) < 0)
		return -1;
	return 0;
}

static int set_push(struct matcher_set *ms, struct matcher **slot)
{
	if (ms->n == ms->cap) {
		size_t ncap = ms->cap ? ms->cap * 2 : 4;
		struct matcher *nv = realloc(ms->v, ncap * sizeof(*nv));
		if (!nv)
			return -1;
		ms->v = nv;
		ms->cap = ncap;
	}
	*slot = &ms->v[ms->n];
	memset(*slot, 0, sizeof(**slot));
	return 0;
}

int matcher_set_add(struct matcher_set *ms, const char *text, char *err, size_t errlen)
{
	struct parser p = { text ? text : "", 0, err, errlen };
	size_t old_n = ms ? ms->n : 0, count = 0;
	int braced = 0, ret = -1;
	char gbuf[80];

	if (err && errlen)
		err[0] = '\0';
	if (!ms || !text) {
		perr(&p, "no matcher given");
		goto out;
	}
	skip_ws(&p);
	if (text[p.pos] == '{') {
		braced = 1;
		p.pos++;
	}
	for (;;) {
		struct matcher *m;

		skip_ws(&p);
		if (braced && text[p.pos] == '}') {
			p.pos++;
			break;
		}
		if (!text[p.pos]) {
			if (braced) {
				perr(&p, "missing closing '}' at end of input");
				goto out;
			}
			if (count == 0) {
				perr(&p, "empty matcher");
				goto out;
			}
			break; /* "a=b," : trailing comma */
		}
		if (text[p.pos] == '}') {
			perr(&p, "unexpected '}' at column %zu without an opening '{'", p.pos + 1);
			goto out;
		}
		if (set_push(ms, &m) < 0) {
			perr(&p, "out of memory");
			goto out;
		}
		ms->n++; /* counted now so a failed matcher is freed below */
		if (parse_one(&p, m) < 0)
			goto out;
		count++;
		skip_ws(&p);
		if (text[p.pos] == ',') {
			p.pos++;
			continue;
		}
		if (braced && text[p.pos] == '}') {
			p.pos++;
			break;
		}
		if (!text[p.pos]) {
			if (braced) {
				perr(&p, "missing closing '}' at end of input");
				goto out;
			}
			break;
		}
		perr(&p, "expected ',' or %s at column %zu, got %s",
		     braced ? "'}'" : "end of input", p.pos + 1, got(&p, gbuf, sizeof(gbuf)));
		goto out;
	}
	skip_ws(&p);
	if (text[p.pos]) {
		perr(&p, "unexpected %s at column %zu after '}'", got(&p, gbuf, sizeof(gbuf)),
		     p.pos + 1);
		goto out;
	}
	ret = 0;
out:
	/* All or nothing: a half-added list would widen what a playbook matches. */
	if (ret < 0 && ms) {
		while (ms->n > old_n)
			matcher_clear(&ms->v[--ms->n]);
	}
	return ret;
}

bool matcher_set_matches(const struct matcher_set *ms, const struct labels *ls)
{
	for (size_t i = 0; ms && i < ms->n; i++) {
		const struct matcher *m = &ms->v[i];
		const char *v = ls ? labels_get(ls, m->name) : NULL;
		bool ok;

		if (!v)
			v = ""; /* Alertmanager: a missing label equals "" */
		switch (m->op) {
		case OP_EQ:
			ok = strcmp(v, m->value) == 0;
			break;
		case OP_NE:
			ok = strcmp(v, m->value) != 0;
			break;
		case OP_RE:
			ok = re2_shim_full_match(m->re, v, strlen(v)) == RE2_SHIM_MATCH;
			break;
		case OP_NRE:
		default:
			/* Out of memory is neither answer: fail closed. */
			ok = re2_shim_full_match(m->re, v, strlen(v)) == RE2_SHIM_NOMATCH;
			break;
		}
		if (!ok)
			return false;
	}
	return true;
}

size_t matcher_set_count(const struct matcher_set *ms)
{
	return ms ? ms->n : 0;
}

const char *matcher_set_text(const struct matcher_set *ms, size_t i)
{
	if (!ms || i >= ms->n)
		return NULL;
	return ms->v[i].text;
}

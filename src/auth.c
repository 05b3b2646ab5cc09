/* Named principals: the tokens file, constant-time look-up, roles. */
#include "recoveryd/auth.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recoveryd/common.h"

#define AUTH_FILE_MAX (1 << 20)

struct principal {
	struct actor who;
	unsigned char digest[32];
};

struct auth {
	struct principal *v;
	size_t n, cap;
};

/* ---------- SHA-256 ---------- */

static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const unsigned char *p)
{
	uint32_t w[64], a, b, c, d, e, f, g, k, t1, t2;

	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
	for (int i = 0; i < 64; i++) {
		t1 = k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
		t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
		k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
	}
	h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

void rd_sha256(const void *data, size_t len, unsigned char out[32])
{
	uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
	                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
	const unsigned char *p = data;
	unsigned char last[128];
	size_t rest = len % 64, tail;
	uint64_t bits = (uint64_t)len * 8;

	for (size_t i = 0; i + 64 <= len; i += 64)
		sha256_block(h, p + i);
	memset(last, 0, sizeof(last));
	if (rest)
		memcpy(last, p + len - rest, rest);
	last[rest] = 0x80;
	tail = rest < 56 ? 64 : 128;
	for (int i = 0; i < 8; i++)
		last[tail - 1 - i] = (unsigned char)(bits >> (8 * i));
	sha256_block(h, last);
	if (tail == 128)
		sha256_block(h, last + 64);
	for (int i = 0; i < 8; i++) {
		out[4 * i] = (unsigned char)(h[i] >> 24);
		out[4 * i + 1] = (unsigned char)(h[i] >> 16);
		out[4 * i + 2] = (unsigned char)(h[i] >> 8);
		out[4 * i + 3] = (unsigned char)h[i];
	}
}

/* ---------- roles ---------- */

static const char *const role_names[ROLE__COUNT] = {
	[ROLE_NONE] = "anonymous", [ROLE_ALERTMANAGER] = "alertmanager", [ROLE_VIEWER] = "viewer",
	[ROLE_OPERATOR] = "operator", [ROLE_ADMIN] = "admin",
};

const char *role_name(enum role r)
{
	return (unsigned)r < ROLE__COUNT ? role_names[r] : "unknown";
}

int role_parse(const char *s, enum role *out)
{
	for (int i = ROLE_ALERTMANAGER; i < ROLE__COUNT; i++)
		if (strcmp(s, role_names[i]) == 0) {
			*out = (enum role)i;
			return 0;
		}
	return -1;
}

int auth_role_admits(enum role have, enum role need)
{
	if (need == ROLE_NONE)
		return 1;
	if (have == ROLE_NONE)
		return 0;
	/* alertmanager is not below viewer: it reads nothing. */
	if (need == ROLE_ALERTMANAGER)
		return have == ROLE_ALERTMANAGER || have >= ROLE_OPERATOR;
	if (have == ROLE_ALERTMANAGER)
		return 0;
	return have >= need;
}

int actor_may_playbook(const struct actor *a, const char *playbook)
{
	char want[ACTOR_SCOPE_MAX + 3];

	if (!a->scope[0])
		return 1;
	if (!playbook || snprintf(want, sizeof(want), ",%s,", playbook) >= (int)sizeof(want))
		return 0;
	return strstr(a->scope, want) != NULL;
}

void actor_init(struct actor *a, const char *name, enum role role, const char *address)
{
	memset(a, 0, sizeof(*a));
	snprintf(a->name, sizeof(a->name), "%s", name);
	a->role = role;
	snprintf(a->address, sizeof(a->address), "%s", address ? address : "");
}

/* ---------- the table ---------- */

struct auth *auth_new(void)
{
	return calloc(1, sizeof(struct auth));
}

void auth_free(struct auth *a)
{
	if (!a)
		return;
	if (a->v)
		explicit_bzero(a->v, a->cap * sizeof(*a->v));
	free(a->v);
	free(a);
}

size_t auth_count(const struct auth *a)
{
	return a ? a->n : 0;
}

static struct principal *add(struct auth *a)
{
	if (a->n == a->cap) {
		size_t ncap = a->cap ? 2 * a->cap : 8;
		struct principal *nv = realloc(a->v, ncap * sizeof(*nv));
		if (!nv)
			return NULL;
		a->v = nv;
		a->cap = ncap;
	}
	memset(&a->v[a->n], 0, sizeof(a->v[0]));
	return &a->v[a->n++];
}

static int name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > ACTOR_NAME_MAX)
		return 0;
	for (; *s; s++)
		if (!(isalnum((unsigned char)*s) || strchr("-_.@", *s)))
			return 0;
	return 1;
}

static int has_name(const struct auth *a, const char *name)
{
	for (size_t i = 0; i < a->n; i++)
		if (strcmp(a->v[i].who.name, name) == 0)
			return 1;
	return 0;
}

int auth_add_token(struct auth *a, const char *name, enum role role, const char *token)
{
	struct principal *p;

	if (!name_ok(name) || has_name(a, name) || !(p = add(a)))
		return -1;
	actor_init(&p->who, name, role, NULL);
	rd_sha256(token, strlen(token), p->digest);
	return 0;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* One line of the tokens file (already split); 0 or -1 with why. */
static int parse_line(struct auth *a, char **f, int nf, char *why, size_t len)
{
	struct principal p;
	enum role role;
	size_t at = 1;

	memset(&p, 0, sizeof(p));
	if (nf < 3 || nf > 4) {
		snprintf(why, len, "expected NAME ROLE SHA256 [PLAYBOOK,...]");
		return -1;
	}
	if (!name_ok(f[0])) {
		snprintf(why, len, "invalid name \"%.64s\" (1 to %d of letters, digits, - _ . @)", f[0],
		         ACTOR_NAME_MAX);
		return -1;
	}
	if (has_name(a, f[0])) {
		snprintf(why, len, "principal %s is listed twice", f[0]);
		return -1;
	}
	if (role_parse(f[1], &role) < 0) {
		snprintf(why, len, "unknown role \"%.32s\" (alertmanager, viewer, operator, admin)", f[1]);
		return -1;
	}
	if (strlen(f[2]) != 64) {
		snprintf(why, len, "the token's SHA-256 must be 64 hex digits (sha256sum of the token)");
		return -1;
	}
	for (int i = 0; i < 32; i++) {
		int hi = hexval((unsigned char)f[2][2 * i]), lo = hexval((unsigned char)f[2][2 * i + 1]);
		if (hi < 0 || lo < 0) {
			snprintf(why, len, "the token's SHA-256 must be 64 hex digits");
			return -1;
		}
		p.digest[i] = (unsigned char)(hi << 4 | lo);
	}
	/* What `echo -n "$UNSET" | sha256sum` gives: nobody can log in with an
	 * empty token, so the line is a mistake. */
	static const unsigned char empty[32] = {
		0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
		0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55};
	if (memcmp(p.digest, empty, 32) == 0) {
		snprintf(why, len, "that is the SHA-256 of an empty token (was the token variable unset?)");
		return -1;
	}
	actor_init(&p.who, f[0], role, NULL);
	if (nf == 4 && strcmp(f[3], "*") != 0) {
		char *save = NULL, *tok;
		p.who.scope[0] = ',';
		for (tok = strtok_r(f[3], ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
			size_t n = strlen(tok);
			if (!name_ok(tok)) {
				snprintf(why, len, "invalid playbook name \"%.64s\"", tok);
				return -1;
			}
			if (at + n + 1 > ACTOR_SCOPE_MAX) {
				snprintf(why, len, "the playbook list is longer than %d characters", ACTOR_SCOPE_MAX);
				return -1;
			}
			memcpy(p.who.scope + at, tok, n);
			at += n;
			p.who.scope[at++] = ',';
		}
		if (at == 1) {
			snprintf(why, len, "empty playbook list");
			return -1;
		}
	}
	struct principal *dst = add(a);
	if (!dst) {
		snprintf(why, len, "out of memory");
		return -1;
	}
	*dst = p;
	return 0;
}

int auth_load_file(struct auth *a, const char *path, char *err, size_t errlen)
{
	size_t len = 0;
	char *buf = rd_read_file(path, AUTH_FILE_MAX, &len, 0), *line, *next;
	int lineno = 0, rc = 0;
	size_t before = a->n;

	if (!buf) {
		snprintf(err, errlen, "tokens file %s: %s", path, strerror(errno));
		return -1;
	}
	if (memchr(buf, '\0', len)) {
		snprintf(err, errlen, "tokens file %s: a NUL byte", path);
		free(buf);
		return -1;
	}
	for (line = buf; line && rc == 0; line = next) {
		char *f[5], *hash, *fs = NULL, *t;
		char why[256];
		int nf = 0;
		if ((next = strchr(line, '\n')))
			*next++ = '\0';
		lineno++;
		/* only once the line is cut: a '#' further on is another line's */
		if ((hash = strchr(line, '#')))
			*hash = '\0';
		for (t = strtok_r(line, " \t\r", &fs); t && nf < 5; t = strtok_r(NULL, " \t\r", &fs))
			f[nf++] = t;
		if (nf == 0)
			continue;
		if (parse_line(a, f, nf, why, sizeof(why)) < 0) {
			snprintf(err, errlen, "tokens file %s: line %d: %s", path, lineno, why);
			rc = -1;
		}
	}
	explicit_bzero(buf, len);
	free(buf);
	if (rc == 0 && a->n == before) {
		snprintf(err, errlen, "tokens file %s lists no principal", path);
		rc = -1;
	}
	return rc;
}

int auth_scope(const struct auth *a, const char *name, char *out, size_t len)
{
	for (size_t i = 0; a && i < a->n; i++)
		if (strcmp(a->v[i].who.name, name) == 0) {
			snprintf(out, len, "%s", a->v[i].who.scope);
			return 0;
		}
	snprintf(out, len, ",");
	return -1;
}

int auth_find(const struct auth *a, const char *tok, size_t n, struct actor *out)
{
	unsigned char d[32];
	size_t hit = (size_t)-1;

	if (!a)
		return -1;
	rd_sha256(tok, n, d);
	for (size_t i = 0; i < a->n; i++) {
		unsigned diff = 0;
		for (int k = 0; k < 32; k++)
			diff |= (unsigned)(d[k] ^ a->v[i].digest[k]);
		/* no branch on the secret beyond this select */
		size_t mask = (size_t)0 - (size_t)(diff == 0);
		hit = (hit & ~mask) | (i & mask);
	}
	if (hit == (size_t)-1)
		return -1;
	/* the address is the caller's (the client's), not the table's "" */
	memcpy(out->name, a->v[hit].who.name, sizeof(out->name));
	out->role = a->v[hit].who.role;
	memcpy(out->scope, a->v[hit].who.scope, sizeof(out->scope));
	return 0;
}

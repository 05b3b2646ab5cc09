/* Differential test of the sandbox's pattern functions (src/pattern.c)
 * against the stock Lua 5.4 string library: random patterns over the
 * special characters, letters, digits, NUL and the class escapes, random
 * subjects with NUL bytes, random find/match/gmatch/gsub arguments; every
 * returned value, every gmatch iteration and every error message must be the
 * same (tests/unit/pattern_diff.h). Fixed seeds, so a failure reproduces;
 * PATTERN_DIFF_RUNS=n in the environment runs n calls per seed instead of
 * 5000 (for a longer search by hand). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pattern_diff.h"

#define RUNS_PER_SEED 5000
static int runs_per_seed = RUNS_PER_SEED;
static const uint64_t seeds[] = {1, 0x5eed, 20261129, 0xdeadbeefcafe};

struct rng {
	uint64_t s;
};

static uint64_t next(struct rng *r) /* splitmix64 */
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static unsigned below(struct rng *r, unsigned n)
{
	return (unsigned)(next(r) % n);
}

struct buf {
	char b[512];
	size_t n;
};

static void add(struct buf *b, const char *s, size_t n)
{
	if (b->n + n <= sizeof(b->b)) {
		memcpy(b->b + b->n, s, n);
		b->n += n;
	}
}

struct tok {
	const char *s;
	size_t n;
};
#define T(lit) {lit, sizeof(lit) - 1}

/* Single-character classes: what may carry a quantifier. */
static const struct tok atoms[] = {
	T("a"), T("a"), T("b"), T("x"), T("A"), T("1"), T("0"), T("\0"), T(" "), T("."), T("."),
	T("%a"), T("%d"), T("%s"), T("%w"), T("%p"), T("%c"), T("%u"), T("%l"), T("%x"), T("%g"),
	T("%z"), T("%A"), T("%D"), T("%S"), T("%W"), T("%P"), T("%C"), T("%U"), T("%L"), T("%X"),
	T("%G"), T("%Z"), T("%%"), T("%."), T("%("), T("%)"), T("%["), T("%]"), T("%-"), T("%\0"),
	T("%$"), T("%^"), T("%*"), T("%y"), T("[ab]"), T("[^a]"), T("[a-c]"), T("[%d%]]"), T("[%z]"),
	T("[^%z]"), T("[a-]"), T("[]a]"), T("[^]]"), T("[%a_]"), T("[\0-\1]"), T("[%Z]"), T("[^%s%z]"),
	T("[-a]"), T("[%]"), T("[a%-z]"), T("$"), T("^"), T("]"),
};
/* Items that take no quantifier. */
static const struct tok others[] = {
	T("%b()"), T("%bab"), T("%b\0a"), T("%f[%w]"), T("%f[%z]"), T("%f[^a]"), T("%f[%Z]"),
	T("%f[a\0]"), T("%1"), T("%2"), T("%0"), T("()"),
};
static const char quants[] = "*+-?";
/* Raw bytes for malformed patterns, replacement strings and subjects. */
static const char pat_bytes[] = "()..%%[]^$*+-?ab1zZfbA\0";
static const char plain_bytes[] = "ab)]z\0\0"; /* no specials: a plain find */
static const char subj_bytes[] = "aaabbxA1 0().%[]-\0\0\1z_B";
static const char repl_bytes[] = "%%%01239ab\0z";

static const struct tok *pick(struct rng *r, const struct tok *t, size_t n)
{
	return &t[below(r, (unsigned)n)];
}
#define PICK(r, arr) pick(r, arr, sizeof(arr) / sizeof(arr[0]))

static void gen_items(struct rng *r, struct buf *b, int depth)
{
	unsigned n = 1 + below(r, depth ? 2 : below(r, 4) ? 3 : 7); /* short: most calls should match */
	for (unsigned i = 0; i < n; i++) {
		unsigned k = below(r, 20);
		if (k < 13) {
			const struct tok *t = PICK(r, atoms);
			add(b, t->s, t->n);
			if (below(r, 3) == 0)
				add(b, &quants[below(r, 4)], 1);
		} else if (k < 16) {
			const struct tok *t = PICK(r, others);
			add(b, t->s, t->n);
		} else if (depth < 2) {
			add(b, "(", 1);
			gen_items(r, b, depth + 1);
			if (below(r, 12))
				add(b, ")", 1); /* sometimes unfinished */
		} else {
			add(b, ")", 1); /* sometimes unbalanced */
		}
	}
}

static void gen_pattern(struct rng *r, struct buf *b)
{
	b->n = 0;
	if (below(r, 8) == 0) {
		unsigned n = below(r, 4);
		for (unsigned i = 0; i < n; i++)
			add(b, &plain_bytes[below(r, sizeof(plain_bytes) - 1)], 1);
		return;
	}
	if (below(r, 4) == 0) { /* raw bytes: mostly malformed */
		unsigned n = below(r, 9);
		for (unsigned i = 0; i < n; i++)
			add(b, &pat_bytes[below(r, sizeof(pat_bytes) - 1)], 1);
		return;
	}
	if (below(r, 5) == 0)
		add(b, "^", 1);
	gen_items(r, b, 0);
	if (below(r, 6) == 0)
		add(b, "$", 1);
}

static void gen_bytes(struct rng *r, struct buf *b, const char *alphabet, size_t alen, unsigned max)
{
	unsigned n = below(r, max + 1);
	b->n = 0;
	for (unsigned i = 0; i < n; i++)
		add(b, &alphabet[below(r, (unsigned)alen)], 1);
}

static void gen_call(struct rng *r, struct pdiff_call *c, struct buf *s, struct buf *p, struct buf *rp)
{
	memset(c, 0, sizeof(*c));
	c->op = (enum pdiff_op)below(r, PDIFF_NOPS);
	gen_bytes(r, s, subj_bytes, sizeof(subj_bytes) - 1, below(r, 8) ? 12 : 40);
	gen_pattern(r, p);
	if (below(r, 3) == 0) { /* the pattern's own bytes, minus the magic, in the subject */
		struct buf t = {.n = 0};
		size_t at = below(r, (unsigned)s->n + 1);
		add(&t, s->b, at);
		for (size_t i = 0; i < p->n; i++)
			if (!memchr("%^$*+?-[]", p->b[i], 9) || below(r, 4) == 0)
				add(&t, &p->b[i], 1);
		add(&t, s->b + at, s->n - at);
		*s = t;
	}
	c->s = s->b;
	c->ls = s->n;
	c->p = p->b;
	c->lp = p->n;
	if (c->op == PDIFF_GSUB) {
		c->repl = below(r, 2) ? PDIFF_REPL_STRING : (enum pdiff_repl)below(r, PDIFF_NREPLS);
		gen_bytes(r, rp, repl_bytes, sizeof(repl_bytes) - 1, 6);
		c->r = rp->b;
		c->lr = rp->n;
		c->has_max = below(r, 4) == 0;
		c->max = (long long)below(r, 6) - 1;
	} else {
		c->has_init = below(r, 3) == 0;
		c->init = (long long)below(r, 20) - 8;
		if (c->op == PDIFF_FIND && below(r, 6) == 0)
			c->plain = 1 + (int)below(r, 2);
	}
}

static void report(struct pdiff *d, const struct pdiff_call *c, uint64_t seed, int run)
{
	char what[2048];
	pdiff_describe(c, what, sizeof what);
	print_error("seed %llu run %d: %s\n  stock: %s\n  ours:  %s\n", (unsigned long long)seed, run, what,
	            d->out[PDIFF_STOCK].data, d->out[PDIFF_OURS].data);
}

static void test_random_calls_match_stock_lua(void **state)
{
	(void)state;
	struct pdiff *d = malloc(sizeof(*d)); /* must not move: the sandbox points into it */
	struct buf s, p, rp;
	unsigned long differ = 0, errors = 0;
	double t0 = rd_mono();
	const char *env = getenv("PATTERN_DIFF_RUNS");

	if (env && atoi(env) > 0)
		runs_per_seed = atoi(env);

	assert_non_null(d);
	assert_int_equal(pdiff_open(d), 0);
	d->budget = 5.0;
	for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
		struct rng r = {seeds[i]};
		for (int run = 0; run < runs_per_seed; run++) {
			struct pdiff_call c;
			gen_call(&r, &c, &s, &p, &rp);
			int rc = pdiff_run(d, &c);
			if (rc == 1 && differ++ < 20)
				report(d, &c, seeds[i], run);
			if (rc == 0 && strncmp(d->out[PDIFF_STOCK].data, "error: ", 7) == 0)
				errors++;
		}
	}
	printf("pattern differential: %lu generated cases compared with stock Lua 5.4 "
	       "(%lu raised the same error), %lu differ, %lu stopped by the deadline, %.2f s\n",
	       d->runs - d->skipped, errors, differ, d->skipped, rd_mono() - t0);
	assert_int_equal(d->skipped, 0);
	assert_true(d->runs == (unsigned long)runs_per_seed * (sizeof(seeds) / sizeof(seeds[0])));
	assert_true(errors > 100); /* the malformed patterns really were compared */
	pdiff_close(d);
	free(d);
	assert_int_equal(differ, 0);
}

/* The decoder a fuzz target uses: any bytes give a call that runs. */
static void test_fuzz_decoder(void **state)
{
	(void)state;
	struct pdiff *d = malloc(sizeof(*d));
	static const uint8_t inputs[][24] = {
		{0x00, 0x01, 'a', ')', 0x00, 'b', 0xff, ')', 0x00},
		{0x01, 0x00, 'a', 0x00, 'b', 0xff, '%', 'z'},
		{0x07, 0xfe, 'h', 'e', 'l', 'l', 'o', 0xff, 'l', '+'},
		{0x23, 0x02, 'a', 'b', 'c', 0xff, '(', '%', 'w', ')', 0xff, '<', '%', '1', '>'},
		{0x83, 0x00, 'a', 'b', 0xff, '%', 'w'},
		{0xff},
		{0},
	};
	struct pdiff_call c;

	assert_non_null(d);
	assert_int_equal(pdiff_open(d), 0);
	pdiff_call_from_bytes(&c, inputs[0], 9);
	assert_int_equal(c.op, PDIFF_FIND);
	assert_int_equal(c.lp, 2);
	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
		for (size_t n = 0; n <= sizeof(inputs[i]); n++) {
			pdiff_call_from_bytes(&c, inputs[i], n);
			int rc = pdiff_run(d, &c);
			if (rc == 1)
				report(d, &c, 0, (int)(i * 100 + n));
			assert_int_equal(rc, 0);
		}
	}
	pdiff_close(d);
	free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_calls_match_stock_lua),
		cmocka_unit_test(test_fuzz_decoder),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

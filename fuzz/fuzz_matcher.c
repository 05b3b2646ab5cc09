/* Matchers: the first line of the input is matcher text for
 * matcher_set_add; every further line is a label "name=value" (split at the
 * first '='; the first occurrence of a name wins; in a value, \n stands for
 * a newline and \\ for a backslash) to match against.
 * Checks: an error message on rejection and an unchanged set (all or
 * nothing); matching is deterministic; each matcher's canonical text
 * (matcher_set_text) parses back to a matcher that decides the same way. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"
#include "recoveryd/alert.h"
#include "recoveryd/matcher.h"

#define MAX_LABELS 128

/* In place: \n -> newline, \\ -> backslash. */
static void unescape(char *s)
{
	char *o = s;
	for (; *s; s++) {
		if (s[0] == '\\' && (s[1] == 'n' || s[1] == '\\')) {
			*o++ = s[1] == 'n' ? '\n' : '\\';
			s++;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = fuzz_strndup(data, size); /* text up to the first NUL */
	char *nl = memchr(buf, '\n', size);
	char *rest = NULL;
	struct label lv[MAX_LABELS];
	struct labels ls = {0, lv};
	char err[256];
	struct matcher_set *ms = matcher_set_new(), *again = matcher_set_new();

	FUZZ_ASSERT(ms && again, "matcher_set_new");
	if (nl) {
		*nl = '\0';
		rest = nl + 1;
	}
	/* Labels: "name=value" lines. The pointers go into buf. */
	while (rest && rest < buf + size && ls.n < MAX_LABELS) {
		char *line = rest, *eol = strchr(rest, '\n'), *eq;
		if (eol) {
			*eol = '\0';
			rest = eol + 1;
		} else {
			rest = NULL;
		}
		eq = strchr(line, '=');
		if (eq) {
			*eq = '\0';
			unescape(eq + 1);
		}
		if (labels_get(&ls, line))
			continue;
		lv[ls.n].name = line;
		lv[ls.n].value = eq ? eq + 1 : line + strlen(line);
		ls.n++;
	}

	/* A set that already holds one matcher, to see that a failed add
	 * leaves it as it was. */
	FUZZ_ASSERT(matcher_set_add(ms, "fuzz_base!=\"x\"", err, sizeof(err)) == 0, "%s", err);
	if (matcher_set_add(ms, buf, err, sizeof(err)) < 0) {
		FUZZ_ASSERT(err[0] && memchr(err, '\0', sizeof(err)), "rejection without a message");
		FUZZ_ASSERT(matcher_set_count(ms) == 1, "failed add left %zu matchers",
		            matcher_set_count(ms));
		goto out;
	}

	size_t n = matcher_set_count(ms);
	FUZZ_ASSERT(n >= 1, "the set lost its matcher"); /* "{}" adds none */
	bool m1 = matcher_set_matches(ms, &ls);
	bool m2 = matcher_set_matches(ms, &ls);
	FUZZ_ASSERT(m1 == m2, "matching is not deterministic");

	/* Canonical text round trip, one matcher at a time. */
	bool all = true;
	for (size_t i = 0; i < n; i++) {
		const char *t = matcher_set_text(ms, i);
		struct matcher_set *one = matcher_set_new();
		FUZZ_ASSERT(t && one, "matcher_set_text(%zu)", i);
		FUZZ_ASSERT(matcher_set_add(one, t, err, sizeof(err)) == 0,
		            "canonical text %s does not parse: %s", t, err);
		FUZZ_ASSERT(matcher_set_count(one) == 1, "canonical text %s gives %zu matchers", t,
		            matcher_set_count(one));
		FUZZ_ASSERT(!strcmp(matcher_set_text(one, 0), t), "canonical text not stable: %s -> %s",
		            t, matcher_set_text(one, 0));
		all = all && matcher_set_matches(one, &ls);
		FUZZ_ASSERT(matcher_set_add(again, t, err, sizeof(err)) == 0, "%s", err);
		matcher_set_free(one);
	}
	FUZZ_ASSERT(all == m1, "the set says %d, its matchers one by one say %d", m1, all);
	FUZZ_ASSERT(matcher_set_matches(again, &ls) == m1, "re-parsed set decides differently");
out:
	matcher_set_free(ms);
	matcher_set_free(again);
	free(buf);
	return 0;
}

/* A C interface to RE2 (src/re2_shim.cc), the engine behind Alertmanager's
 * regex matchers: Go's regexp package is a port of RE2 with the same syntax,
 * and both compile and match in time linear in the pattern and the text.
 *
 * A compiled regex only answers "does the whole text match". The pattern is
 * taken as Alertmanager takes it in ^(?:re)$, except that it must be balanced
 * on its own: "a)|(b" is refused here (Alertmanager would un-anchor it).
 *
 * Ownership: re2_shim_compile() returns a handle the caller frees with
 * re2_shim_free(). A handle is read-only after compiling, so several threads
 * may match with it at once. No C++ exception leaves these functions. */
#ifndef RECOVERYD_RE2_SHIM_H
#define RECOVERYD_RE2_SHIM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct re2_shim; /* opaque */

/* Bound on a compiled program (and on each of its DFA caches): compiling
 * costs time in proportion to it, so a hostile pattern fails fast with
 * "pattern too large" instead of taking a core for seconds. */
#define RE2_SHIM_MAX_MEM (8 << 20)

enum re2_shim_result {
	RE2_SHIM_NOMATCH = 0,
	RE2_SHIM_MATCH = 1,
	RE2_SHIM_ERR = -1, /* out of memory: callers fail closed */
};

/* Compile pattern[0..len) (UTF-8, Go regexp syntax). Returns NULL with err
 * set to RE2's reason (e.g. "missing ): (a", "bad repetition operator: {")
 * when it is invalid, too large or cannot be allocated. */
struct re2_shim *re2_shim_compile(const char *pattern, size_t len, char *err, size_t errlen);

/* Whether all of text[0..len) matches. Each byte that is not part of valid
 * UTF-8 counts as one U+FFFD, as in Go's regexp (and as Alertmanager's JSON
 * decoder stores such bytes in label values before it matches them). */
enum re2_shim_result re2_shim_full_match(const struct re2_shim *re, const char *text, size_t len);

void re2_shim_free(struct re2_shim *re);

#ifdef __cplusplus
}
#endif

#endif

/* Alertmanager matchers in their text form: name="value", name!="v",
 * name=~"re", name!~"re"; an optional {...} list, comma-separated. Regexes are
 * fully anchored; a missing label matches as the empty string. Regex flavour:
 * Alertmanager's (Go regexp, i.e. RE2 syntax and semantics), compiled with
 * RE2 in linear time and bounded size (src/re2_shim.h). */
#ifndef RECOVERYD_MATCHER_H
#define RECOVERYD_MATCHER_H

#include <stdbool.h>
#include <stddef.h>
#include "recoveryd/alert.h"

struct matcher_set; /* opaque; an empty set matches everything */

struct matcher_set *matcher_set_new(void);
void matcher_set_free(struct matcher_set *ms);
/* Parse text (one matcher or a {...} list) and add its matchers to ms.
 * Returns 0, or -1 with err saying what is wrong and where. */
int matcher_set_add(struct matcher_set *ms, const char *text, char *err, size_t errlen);
/* True when every matcher holds for the label set (AND). */
bool matcher_set_matches(const struct matcher_set *ms, const struct labels *ls);
/* Number of matchers, and the canonical text of matcher i: name="value"
 * with the operator, the value Go-quoted. */
size_t matcher_set_count(const struct matcher_set *ms);
const char *matcher_set_text(const struct matcher_set *ms, size_t i);

#endif

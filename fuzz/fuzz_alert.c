/* alert_parse on raw bytes, as the v4 webhook (flags 0) and as /trigger with
 * the manual forms allowed. Besides ASan/UBSan, checks what the rest of the
 * daemon relies on: label sets sorted with unique, valid names; 16-hex
 * fingerprints; an error message on every rejection; and that an accepted
 * alert's normalised JSON (alert.raw) parses back to the same alert. */
#include <stdint.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "support.h"
#include "recoveryd/alert.h"

static void check_set(const struct labels *ls, int is_labels)
{
	for (size_t i = 0; i < ls->n; i++) {
		FUZZ_ASSERT(ls->v[i].name && ls->v[i].value, "label %zu has a NULL string", i);
		FUZZ_ASSERT(ls->v[i].name[0], "empty name");
		if (i)
			FUZZ_ASSERT(strcmp(ls->v[i - 1].name, ls->v[i].name) < 0,
			            "set not sorted or has duplicate names: \"%s\", \"%s\"",
			            ls->v[i - 1].name, ls->v[i].name);
		FUZZ_ASSERT(labels_get(ls, ls->v[i].name) == ls->v[i].value, "labels_get(%s)",
		            ls->v[i].name);
	}
	if (is_labels)
		FUZZ_ASSERT(ls->n > 0, "an accepted alert has no labels");
}

static int same_set(const struct labels *a, const struct labels *b)
{
	if (a->n != b->n)
		return 0;
	for (size_t i = 0; i < a->n; i++)
		if (strcmp(a->v[i].name, b->v[i].name) || strcmp(a->v[i].value, b->v[i].value))
			return 0;
	return 1;
}

static void check_alert(const struct alert *a)
{
	char fp[17];

	check_set(&a->labels, 1);
	check_set(&a->annotations, 0);
	FUZZ_ASSERT(a->fingerprint && strlen(a->fingerprint) == 16, "fingerprint length");
	for (int i = 0; i < 16; i++)
		FUZZ_ASSERT((a->fingerprint[i] >= '0' && a->fingerprint[i] <= '9') ||
		                    (a->fingerprint[i] >= 'a' && a->fingerprint[i] <= 'f'),
		            "fingerprint %s is not lower-case hex", a->fingerprint);
	labels_fingerprint(&a->labels, fp);
	FUZZ_ASSERT(strlen(fp) == 16, "labels_fingerprint length");
	FUZZ_ASSERT(a->starts_at && a->ends_at && a->generator_url, "NULL string member");
	FUZZ_ASSERT(cJSON_IsObject(a->raw), "alert.raw is not an object");

	/* The normalised form must be accepted as a manual trigger body and
	 * give the same alert back. */
	char *text = cJSON_PrintUnformatted(a->raw);
	FUZZ_ASSERT(text, "cJSON_PrintUnformatted(raw) failed");
	struct payload q;
	char err[256];
	enum alert_result r = alert_parse(text, strlen(text), ALERT_ALLOW_MANUAL, &q, err, sizeof(err));
	FUZZ_ASSERT(r == ALERT_OK, "alert.raw does not parse back: %s (%s)", err, text);
	FUZZ_ASSERT(q.n_alerts == 1, "alert.raw gives %zu alerts", q.n_alerts);
	const struct alert *b = &q.alerts[0];
	FUZZ_ASSERT(b->resolved == a->resolved && same_set(&a->labels, &b->labels) &&
	                    same_set(&a->annotations, &b->annotations) &&
	                    !strcmp(a->fingerprint, b->fingerprint) &&
	                    !strcmp(a->starts_at, b->starts_at) && !strcmp(a->ends_at, b->ends_at) &&
	                    !strcmp(a->generator_url, b->generator_url),
	            "alert.raw parses back to a different alert: %s", text);
	payload_free(&q);
	cJSON_free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int flags[] = {0, ALERT_ALLOW_MANUAL};

	for (size_t f = 0; f < sizeof(flags) / sizeof(flags[0]); f++) {
		struct payload p;
		char err[256];
		/* The body is length-delimited: no NUL terminator, so ASan sees
		 * any read past the end. */
		enum alert_result r = alert_parse((const char *)data, size, flags[f], &p, err, sizeof(err));
		if (r != ALERT_OK) {
			FUZZ_ASSERT(r == ALERT_INVALID_JSON || r == ALERT_INVALID_PAYLOAD,
			            "unexpected result %d", (int)r);
			FUZZ_ASSERT(err[0] && memchr(err, '\0', sizeof(err)), "rejection without a message");
			FUZZ_ASSERT(p.n_alerts == 0 && !p.alerts, "payload not cleared on error");
			continue;
		}
		FUZZ_ASSERT(p.n_alerts >= 1 && p.alerts, "accepted payload without alerts");
		FUZZ_ASSERT(p.receiver && p.group_key && p.external_url && p.reason, "NULL member");
		FUZZ_ASSERT(p.truncated >= 0, "truncatedAlerts %ld", p.truncated);
		if (!(flags[f] & ALERT_ALLOW_MANUAL))
			FUZZ_ASSERT(!p.manual, "manual form accepted without ALERT_ALLOW_MANUAL");
		for (size_t i = 0; i < p.n_alerts; i++)
			check_alert(&p.alerts[i]);
		payload_free(&p);
	}
	return 0;
}

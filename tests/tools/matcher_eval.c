/* Test-only: evaluate matchers with the daemon's own code (src/matcher.c),
 * no daemon needed. Reads JSON lines from stdin,
 *   {"matcher": "name=~\"re\"", "labels": {"name": "value", ...}}
 * and writes one JSON line per input line, in order:
 *   {"match": true|false}    the matcher (or {...} list) parsed
 *   {"error": "..."}         it did not (the message --check-config shows)
 * Used by tests/integration/test_matcher_amtool.py to compare recoveryd's
 * decisions with Alertmanager's. Exit status 2 on unusable input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "recoveryd/matcher.h"

#define LINE_MAX_BYTES (1 << 20)
#define LABELS_MAX 256

static int eval_line(const char *line)
{
	cJSON *in = cJSON_Parse(line), *out = cJSON_CreateObject(), *ms_j, *ls_j, *l;
	struct label v[LABELS_MAX];
	struct labels ls = { 0, v };
	struct matcher_set *ms = NULL;
	char err[512], *text = NULL;
	int ret = -1;

	ms_j = cJSON_GetObjectItemCaseSensitive(in, "matcher");
	ls_j = cJSON_GetObjectItemCaseSensitive(in, "labels");
	if (!out || !cJSON_IsString(ms_j) || (ls_j && !cJSON_IsObject(ls_j))) {
		fprintf(stderr, "matcher_eval: want {\"matcher\": string, \"labels\": object}\n");
		goto out;
	}
	cJSON_ArrayForEach(l, ls_j) {
		if (!cJSON_IsString(l) || ls.n == LABELS_MAX) {
			fprintf(stderr, "matcher_eval: label values are strings, at most %d\n",
			        LABELS_MAX);
			goto out;
		}
		v[ls.n].name = l->string;
		v[ls.n].value = l->valuestring;
		ls.n++;
	}
	if (!(ms = matcher_set_new()))
		goto out;
	if (matcher_set_add(ms, ms_j->valuestring, err, sizeof(err)) < 0)
		cJSON_AddStringToObject(out, "error", err);
	else
		cJSON_AddBoolToObject(out, "match", matcher_set_matches(ms, &ls));
	if (!(text = cJSON_PrintUnformatted(out)))
		goto out;
	printf("%s\n", text);
	fflush(stdout);
	ret = 0;
out:
	free(text);
	matcher_set_free(ms);
	cJSON_Delete(out);
	cJSON_Delete(in);
	return ret;
}

int main(void)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int rc = 0;

	while ((n = getline(&line, &cap, stdin)) >= 0) {
		if (n > LINE_MAX_BYTES || eval_line(line) < 0) {
			rc = 2;
			break;
		}
	}
	free(line);
	return rc;
}

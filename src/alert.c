/* Alertmanager webhook payloads (version 4) and manual trigger bodies:
 * cJSON tree -> validated, owned structs. Every rejection names the field
 * path ("alerts[1].labels.job: expected a string, got number") because the
 * message ends up in a 400 answer that a human reads. */
#include "recoveryd/alert.h"
#include "recoveryd/common.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Caps: a real notification is far below these; beyond them the body is more
 * likely a mistake or an attack than an alert group. */
#define MAX_ALERTS 1000
#define MAX_LABELS 128
#define MAX_ANNOTATIONS 128

#define PATH_MAX_LEN 256

struct pctx {
	char *err;
	size_t errlen;
};

static enum alert_result fail(struct pctx *c, enum alert_result r, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static enum alert_result fail(struct pctx *c, enum alert_result r, const char *fmt, ...)
{
	va_list ap;

	if (c->err && c->errlen) {
		va_start(ap, fmt);
		vsnprintf(c->err, c->errlen, fmt, ap);
		va_end(ap);
	}
	return r;
}

static enum alert_result nomem(struct pctx *c)
{
	return fail(c, ALERT_NOMEM, "out of memory");
}

/* Render a user-supplied string for an error message: quoted, control bytes
 * escaped, long values cut, so a hostile value cannot forge log lines. */
static const char *show(const char *s, char *buf, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	buf[o++] = '"';
	for (; *s && o + 8 < len; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\') {
			buf[o++] = '\\';
			buf[o++] = (char)ch;
		} else if (ch < 0x20 || ch == 0x7f) {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[ch >> 4];
			buf[o++] = hex[ch & 15];
		} else {
			buf[o++] = (char)ch;
		}
	}
	if (*s) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

static const char *type_name(const cJSON *j)
{
	if (cJSON_IsObject(j))
		return "object";
	if (cJSON_IsArray(j))
		return "array";
	if (cJSON_IsString(j))
		return "string";
	if (cJSON_IsNumber(j))
		return "number";
	if (cJSON_IsBool(j))
		return "boolean";
	if (cJSON_IsNull(j))
		return "null";
	return "invalid value";
}

/* prefix "" (manual form, top level) gives just the key. */
static void join(char *buf, size_t len, const char *prefix, const char *key)
{
	if (*prefix)
		snprintf(buf, len, "%s.%s", prefix, key);
	else
		snprintf(buf, len, "%s", key);
}

/* cJSON copies bytes through unchecked; Prometheus label values must be
 * UTF-8, and they later travel in JSON to Slack and PagerDuty. */
static int valid_utf8(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;

	while (*s) {
		size_t n = rd_utf8_len(s, 4);
		if (!n)
			return 0;
		s += n;
	}
	return 1;
}

static char *xstrdup(const char *s)
{
	return strdup(s ? s : "");
}

/* Look up an optional string member: absent or null gives def. Returns
 * ALERT_OK with *out set, or an error naming prefix.key. */
static enum alert_result get_string(struct pctx *c, const cJSON *obj, const char *prefix,
                                    const char *key, int required, const char *def,
                                    const char **out)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
	char path[PATH_MAX_LEN];

	join(path, sizeof(path), prefix, key);
	if (!it || (!required && cJSON_IsNull(it))) {
		if (required)
			return fail(c, ALERT_INVALID_PAYLOAD, "%s: missing (expected a string)", path);
		*out = def;
		return ALERT_OK;
	}
	if (!cJSON_IsString(it) || !it->valuestring)
		return fail(c, ALERT_INVALID_PAYLOAD, "%s: expected a string, got %s", path,
		            type_name(it));
	*out = it->valuestring;
	return ALERT_OK;
}

static enum alert_result get_status(struct pctx *c, const cJSON *obj, const char *prefix,
                                    int required, int *resolved)
{
	const char *s = NULL;
	char path[PATH_MAX_LEN], shown[80];
	enum alert_result r = get_string(c, obj, prefix, "status", required, "firing", &s);

	if (r != ALERT_OK)
		return r;
	if (strcmp(s, "firing") == 0) {
		*resolved = 0;
	} else if (strcmp(s, "resolved") == 0) {
		*resolved = 1;
	} else {
		join(path, sizeof(path), prefix, "status");
		return fail(c, ALERT_INVALID_PAYLOAD, "%s: expected \"firing\" or \"resolved\", got %s",
		            path, show(s, shown, sizeof(shown)));
	}
	return ALERT_OK;
}

static void labels_clear(struct labels *ls)
{
	for (size_t i = 0; i < ls->n; i++) {
		free(ls->v[i].name);
		free(ls->v[i].value);
	}
	free(ls->v);
	ls->v = NULL;
	ls->n = 0;
}

static int label_cmp(const void *a, const void *b)
{
	return strcmp(((const struct label *)a)->name, ((const struct label *)b)->name);
}

/* Parse a str->str object at prefix.key into ls, sorted by name (byte order,
 * as Go sorts). is_labels: names must be Prometheus label names, at least one
 * entry is required, and the set is capped at MAX_LABELS. */
static enum alert_result parse_set(struct pctx *c, const cJSON *parent, const char *prefix,
                                   const char *key, int is_labels, struct labels *ls)
{
	const cJSON *obj = cJSON_GetObjectItemCaseSensitive(parent, key);
	const cJSON *it;
	size_t n = 0, cap = is_labels ? MAX_LABELS : MAX_ANNOTATIONS;
	char path[PATH_MAX_LEN], shown[80];
	enum alert_result r = ALERT_OK;

	join(path, sizeof(path), prefix, key);
	if (!obj || (!is_labels && cJSON_IsNull(obj))) {
		if (is_labels)
			return fail(c, ALERT_INVALID_PAYLOAD, "%s: missing (expected an object)", path);
		return ALERT_OK;
	}
	if (!cJSON_IsObject(obj))
		return fail(c, ALERT_INVALID_PAYLOAD, "%s: expected an object, got %s", path,
		            type_name(obj));
	cJSON_ArrayForEach(it, obj)
		n++;
	if (n > cap)
		return fail(c, ALERT_INVALID_PAYLOAD, "%s: too many entries (%zu, at most %zu)", path,
		            n, cap);
	if (n == 0) {
		if (is_labels)
			return fail(c, ALERT_INVALID_PAYLOAD, "%s: must contain at least one label",
			            path);
		return ALERT_OK;
	}
	ls->v = calloc(n, sizeof(*ls->v));
	if (!ls->v)
		return nomem(c);
	cJSON_ArrayForEach(it, obj) {
		const char *name = it->string ? it->string : "";

		if (is_labels && !rd_label_name_valid(name)) {
			r = fail(c, ALERT_INVALID_PAYLOAD,
			         "%s: invalid label name %s (must match [a-zA-Z_][a-zA-Z0-9_]*)", path,
			         show(name, shown, sizeof(shown)));
			goto out;
		}
		if (!is_labels && (!*name || !valid_utf8(name))) {
			r = fail(c, ALERT_INVALID_PAYLOAD, "%s: invalid annotation name %s", path,
			         show(name, shown, sizeof(shown)));
			goto out;
		}
		if (!cJSON_IsString(it) || !it->valuestring) {
			r = fail(c, ALERT_INVALID_PAYLOAD, "%s.%s: expected a string, got %s", path,
			         name, type_name(it));
			goto out;
		}
		if (!valid_utf8(it->valuestring)) {
			r = fail(c, ALERT_INVALID_PAYLOAD, "%s.%s: value is not valid UTF-8", path, name);
			goto out;
		}
		ls->v[ls->n].name = strdup(name);
		ls->v[ls->n].value = strdup(it->valuestring);
		ls->n++;
		if (!ls->v[ls->n - 1].name || !ls->v[ls->n - 1].value) {
			r = nomem(c);
			goto out;
		}
	}
	qsort(ls->v, ls->n, sizeof(*ls->v), label_cmp);
	/* cJSON keeps duplicate keys; Go's decoder would silently keep the
	 * last one. Refuse instead: the two readings would disagree. */
	for (size_t i = 1; i < ls->n; i++) {
		if (strcmp(ls->v[i - 1].name, ls->v[i].name) == 0) {
			r = fail(c, ALERT_INVALID_PAYLOAD, "%s: duplicate name %s", path,
			         show(ls->v[i].name, shown, sizeof(shown)));
			goto out;
		}
	}
out:
	if (r != ALERT_OK)
		labels_clear(ls);
	return r;
}

static cJSON *set_to_json(const struct labels *ls)
{
	cJSON *o = cJSON_CreateObject();

	if (!o)
		return NULL;
	for (size_t i = 0; i < ls->n; i++) {
		if (!cJSON_AddStringToObject(o, ls->v[i].name, ls->v[i].value)) {
			cJSON_Delete(o);
			return NULL;
		}
	}
	return o;
}

static cJSON *alert_to_json(const struct alert *a)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *sub;
	int ok = 0;

	if (!o)
		return NULL;
	if (!(sub = set_to_json(&a->labels)))
		goto out;
	cJSON_AddItemToObject(o, "labels", sub);
	if (!(sub = set_to_json(&a->annotations)))
		goto out;
	cJSON_AddItemToObject(o, "annotations", sub);
	if (!cJSON_AddStringToObject(o, "status", a->resolved ? "resolved" : "firing") ||
	    !cJSON_AddStringToObject(o, "startsAt", a->starts_at) ||
	    !cJSON_AddStringToObject(o, "endsAt", a->ends_at) ||
	    !cJSON_AddStringToObject(o, "generatorURL", a->generator_url) ||
	    !cJSON_AddStringToObject(o, "fingerprint", a->fingerprint))
		goto out;
	ok = 1;
out:
	if (!ok) {
		cJSON_Delete(o);
		o = NULL;
	}
	return o;
}

static void alert_clear(struct alert *a)
{
	labels_clear(&a->labels);
	labels_clear(&a->annotations);
	free(a->starts_at);
	free(a->ends_at);
	free(a->generator_url);
	free(a->fingerprint);
	cJSON_Delete(a->raw);
	memset(a, 0, sizeof(*a));
}

/* One alert object at prefix ("alerts[3]", or "" for the manual form).
 * manual: only labels are required; everything else defaults. */
static enum alert_result parse_alert(struct pctx *c, const cJSON *j, const char *prefix,
                                     int manual, struct alert *a)
{
	const char *starts = "", *ends = "", *url = "", *fp = NULL;
	char path[PATH_MAX_LEN], shown[80];
	enum alert_result r;

	if (!cJSON_IsObject(j))
		return fail(c, ALERT_INVALID_PAYLOAD, "%s: expected an object, got %s", prefix,
		            type_name(j));
	if ((r = get_status(c, j, prefix, !manual, &a->resolved)) != ALERT_OK)
		return r;
	if ((r = parse_set(c, j, prefix, "labels", 1, &a->labels)) != ALERT_OK)
		return r;
	if ((r = parse_set(c, j, prefix, "annotations", 0, &a->annotations)) != ALERT_OK)
		return r;
	if ((r = get_string(c, j, prefix, "startsAt", !manual, "", &starts)) != ALERT_OK ||
	    (r = get_string(c, j, prefix, "endsAt", !manual, "", &ends)) != ALERT_OK ||
	    (r = get_string(c, j, prefix, "generatorURL", !manual, "", &url)) != ALERT_OK ||
	    (r = get_string(c, j, prefix, "fingerprint", 0, NULL, &fp)) != ALERT_OK)
		return r;
	if (fp) {
		size_t i;

		for (i = 0; fp[i] && i < 16; i++)
			if (!((fp[i] >= '0' && fp[i] <= '9') || (fp[i] >= 'a' && fp[i] <= 'f') ||
			      (fp[i] >= 'A' && fp[i] <= 'F')))
				break;
		if (i != 16 || fp[16]) {
			join(path, sizeof(path), prefix, "fingerprint");
			return fail(c, ALERT_INVALID_PAYLOAD,
			            "%s: expected 16 hexadecimal digits, got %s", path,
			            show(fp, shown, sizeof(shown)));
		}
	}
	a->starts_at = xstrdup(starts);
	a->ends_at = xstrdup(ends);
	a->generator_url = xstrdup(url);
	a->fingerprint = malloc(17);
	if (!a->starts_at || !a->ends_at || !a->generator_url || !a->fingerprint)
		return nomem(c);
	if (fp) {
		/* Lower-case so the same alert gives the same job key however
		 * the sender spelled it. */
		for (int i = 0; i < 16; i++)
			a->fingerprint[i] = (fp[i] >= 'A' && fp[i] <= 'F') ? fp[i] - 'A' + 'a' : fp[i];
		a->fingerprint[16] = '\0';
	} else {
		labels_fingerprint(&a->labels, a->fingerprint);
	}
	a->raw = alert_to_json(a);
	if (!a->raw)
		return nomem(c);
	return ALERT_OK;
}

static enum alert_result parse_v4(struct pctx *c, const cJSON *root, struct payload *p)
{
	const cJSON *alerts, *trunc, *it;
	const char *s = NULL;
	char shown[80], prefix[32];
	size_t n = 0, i = 0;
	enum alert_result r;

	if ((r = get_string(c, root, "", "version", 1, NULL, &s)) != ALERT_OK)
		return r;
	if (strcmp(s, "4") != 0)
		return fail(c, ALERT_INVALID_PAYLOAD, "version: expected \"4\", got %s",
		            show(s, shown, sizeof(shown)));
	if ((r = get_status(c, root, "", 1, &p->resolved)) != ALERT_OK)
		return r;
	if ((r = get_string(c, root, "", "receiver", 0, "", &s)) != ALERT_OK)
		return r;
	if (!(p->receiver = xstrdup(s)))
		return nomem(c);
	if ((r = get_string(c, root, "", "groupKey", 0, "", &s)) != ALERT_OK)
		return r;
	if (!(p->group_key = xstrdup(s)))
		return nomem(c);
	if ((r = get_string(c, root, "", "externalURL", 0, "", &s)) != ALERT_OK)
		return r;
	if (!(p->external_url = xstrdup(s)))
		return nomem(c);
	if (!(p->reason = xstrdup("")))
		return nomem(c);

	trunc = cJSON_GetObjectItemCaseSensitive(root, "truncatedAlerts");
	if (trunc && !cJSON_IsNull(trunc)) {
		double v = trunc->valuedouble;

		if (!cJSON_IsNumber(trunc))
			return fail(c, ALERT_INVALID_PAYLOAD,
			            "truncatedAlerts: expected a number, got %s", type_name(trunc));
		/* Range check first so the cast below is defined. */
		if (!(v >= 0 && v <= 1e15) || (double)(long)v != v)
			return fail(c, ALERT_INVALID_PAYLOAD,
			            "truncatedAlerts: expected a non-negative integer");
		p->truncated = (long)v;
	}

	alerts = cJSON_GetObjectItemCaseSensitive(root, "alerts");
	if (!alerts)
		return fail(c, ALERT_INVALID_PAYLOAD, "alerts: missing (expected an array)");
	if (!cJSON_IsArray(alerts))
		return fail(c, ALERT_INVALID_PAYLOAD, "alerts: expected an array, got %s",
		            type_name(alerts));
	cJSON_ArrayForEach(it, alerts)
		n++;
	if (n == 0)
		return fail(c, ALERT_INVALID_PAYLOAD,
		            "alerts: empty array (a notification carries at least one alert)");
	if (n > MAX_ALERTS)
		return fail(c, ALERT_INVALID_PAYLOAD, "alerts: too many alerts (%zu, at most %d)", n,
		            MAX_ALERTS);
	p->alerts = calloc(n, sizeof(*p->alerts));
	if (!p->alerts)
		return nomem(c);
	p->n_alerts = n;
	cJSON_ArrayForEach(it, alerts) {
		snprintf(prefix, sizeof(prefix), "alerts[%zu]", i);
		if ((r = parse_alert(c, it, prefix, 0, &p->alerts[i])) != ALERT_OK)
			return r;
		i++;
	}
	return ALERT_OK;
}

static enum alert_result parse_manual(struct pctx *c, const cJSON *root, struct payload *p)
{
	const char *reason = "";
	enum alert_result r;

	p->manual = 1;
	if ((r = get_string(c, root, "", "reason", 0, "", &reason)) != ALERT_OK)
		return r;
	p->receiver = xstrdup("");
	p->group_key = xstrdup("");
	p->external_url = xstrdup("");
	p->reason = xstrdup(reason);
	p->alerts = calloc(1, sizeof(*p->alerts));
	if (!p->receiver || !p->group_key || !p->external_url || !p->reason || !p->alerts)
		return nomem(c);
	p->n_alerts = 1;
	if ((r = parse_alert(c, root, "", 1, &p->alerts[0])) != ALERT_OK)
		return r;
	p->resolved = p->alerts[0].resolved;
	return ALERT_OK;
}

enum alert_result alert_parse(const char *body, size_t len, int flags, struct payload *out,
                              char *err, size_t errlen)
{
	struct pctx c = { err, errlen };
	const char *end = body;
	cJSON *root = NULL;
	enum alert_result r;

	memset(out, 0, sizeof(*out));
	if (err && errlen)
		err[0] = '\0';
	if (!body || len == 0) {
		r = fail(&c, ALERT_INVALID_JSON, "invalid JSON: empty body");
		goto out;
	}
	{
		size_t at;
		char field[64];
		if (rd_json_find_nul(body, len, &at, field, sizeof(field))) {
			if (field[0])
				r = fail(&c, ALERT_INVALID_PAYLOAD,
				         "field \"%s\": a NUL character (\\u0000) at byte %zu is not allowed "
				         "in names, labels, annotations or reasons", field, at);
			else
				r = fail(&c, ALERT_INVALID_PAYLOAD,
				         "a NUL character (\\u0000) at byte %zu is not allowed", at);
			goto out;
		}
	}
	/* require_null_terminated=0: the body is length-delimited; trailing
	 * bytes are checked below (Alertmanager appends a newline). */
	root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
	if (!root) {
		size_t at = (end && end >= body && end <= body + len) ? (size_t)(end - body) : 0;
		r = fail(&c, ALERT_INVALID_JSON, "invalid JSON near byte %zu", at);
		goto out;
	}
	for (const char *p = end; p < body + len; p++) {
		if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
			r = fail(&c, ALERT_INVALID_JSON,
			         "invalid JSON: unexpected data after the JSON value at byte %zu",
			         (size_t)(p - body));
			goto out;
		}
	}
	if (!cJSON_IsObject(root)) {
		r = fail(&c, ALERT_INVALID_PAYLOAD, "payload: expected a JSON object, got %s",
		         type_name(root));
		goto out;
	}
	if ((flags & ALERT_ALLOW_MANUAL) && !cJSON_HasObjectItem(root, "version") &&
	    !cJSON_HasObjectItem(root, "alerts")) {
		if (!cJSON_HasObjectItem(root, "labels")) {
			r = fail(&c, ALERT_INVALID_PAYLOAD,
			         "labels: missing (expected an Alertmanager v4 payload with \"version\" "
			         "and \"alerts\", or a manual trigger with \"labels\")");
			goto out;
		}
		r = parse_manual(&c, root, out);
	} else {
		r = parse_v4(&c, root, out);
	}
out:
	cJSON_Delete(root);
	if (r != ALERT_OK)
		payload_free(out);
	return r;
}

void payload_free(struct payload *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_alerts; i++)
		alert_clear(&p->alerts[i]);
	free(p->alerts);
	free(p->receiver);
	free(p->group_key);
	free(p->external_url);
	free(p->reason);
	memset(p, 0, sizeof(*p));
}

const char *labels_get(const struct labels *ls, const char *name)
{
	/* Linear: sets are small (<= 128) and a scan does not depend on callers
	 * having kept hand-built sets sorted. */
	for (size_t i = 0; ls && name && i < ls->n; i++)
		if (strcmp(ls->v[i].name, name) == 0)
			return ls->v[i].value;
	return NULL;
}

void labels_fingerprint(const struct labels *ls, char out[17])
{
	/* prometheus/common model.labelSetToFingerprint: FNV-1a 64 over the
	 * sorted set, each name and value followed by the separator 0xff. */
	const uint64_t prime = 1099511628211ULL;
	uint64_t h = 14695981039346656037ULL;

	for (size_t i = 0; ls && i < ls->n; i++) {
		const char *parts[2] = { ls->v[i].name, ls->v[i].value };

		for (int k = 0; k < 2; k++) {
			for (const unsigned char *s = (const unsigned char *)parts[k]; *s; s++) {
				h ^= *s;
				h *= prime;
			}
			h ^= 0xff;
			h *= prime;
		}
	}
	snprintf(out, 17, "%016llx", (unsigned long long)h);
}

/* `recoveryd ctl`: a command-line client of the HTTP API (docs/http-api.md
 * is its contract, docs/ctl.md its manual). One libcurl easy handle, one
 * request at a time; answers are cJSON trees. Human output is tables that
 * fit the terminal and job timelines; -o json prints the server's answer.
 * Every string from the server is untrusted (alert labels reach it): it is
 * made printable before it reaches a terminal. */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "recoveryd/common.h"
#include "recoveryd/ctl.h"

#define DEFAULT_URL "http://127.0.0.1:9095"
#define DEFAULT_TIMEOUT 30.0
#define BODY_MAX (64u << 20) /* a job record of 1000 rows with 4 KiB outputs fits */
#define TOKEN_MAX 4096
#define URL_MAX 4096
#define PAGES_MAX 100        /* jobs --all follows at most this many pages */
#define WAIT_DEFAULT 300     /* trigger --wait without SECONDS: the server's ?wait cap */
#define WATCH_MAX 86400      /* watch without --wait gives up after a day */
#define POLL_SECONDS 1.0
#define ARGS_MAX 256
#define COLS_MAX 8
#define CELL_MAX 4096

/* ---- pure helpers (exported for tests) ---- */

size_t ctl_display_width(const char *s)
{
	size_t w = 0, n;

	for (const unsigned char *p = (const unsigned char *)s; *p; p += n ? n : 1, w++)
		n = rd_utf8_len(p, strlen((const char *)p));
	return w;
}

/* One code point of s (at *p) made printable into out: its bytes, or one
 * replacement character. Returns the bytes consumed. */
static size_t printable(const unsigned char *p, char *out, size_t *outn)
{
	size_t n = rd_utf8_len(p, strlen((const char *)p));

	if (n == 0 || *p == 0x7f || (n == 2 && p[0] == 0xc2 && p[1] < 0xa0)) {
		out[0] = '?'; /* invalid, DEL or C1 (a terminal may read C1 as CSI) */
		*outn = 1;
		return n ? n : 1;
	}
	if (n == 1 && *p < 0x20) {
		out[0] = (*p == '\n' || *p == '\t' || *p == '\r') ? ' ' : '?';
		*outn = 1;
		return 1;
	}
	memcpy(out, p, n);
	*outn = n;
	return n;
}

void ctl_fit_text(const char *s, size_t width, char *out, size_t outlen)
{
	static const char ell[] = "\xe2\x80\xa6"; /* U+2026 */
	size_t total = ctl_display_width(s), used = 0, w = 0;
	size_t keep = total <= width ? total : (width ? width - 1 : 0);
	const unsigned char *p = (const unsigned char *)s;
	char cp[4];
	size_t cpn;

	while (*p && w < keep) {
		size_t adv = printable(p, cp, &cpn);
		if (used + cpn + sizeof(ell) > outlen)
			break; /* out is full; the ellipsis below still fits */
		memcpy(out + used, cp, cpn);
		used += cpn;
		p += adv;
		w++;
	}
	if (*p && width > 0 && used + sizeof(ell) <= outlen) {
		memcpy(out + used, ell, sizeof(ell) - 1);
		used += sizeof(ell) - 1;
	}
	out[used] = '\0';
}

size_t ctl_fit_columns(size_t *widths, const size_t *minw, size_t n, size_t gap, size_t total)
{
	size_t sum = n ? gap * (n - 1) : 0;

	for (size_t i = 0; i < n; i++)
		sum += widths[i];
	while (sum > total) {
		size_t best = n;
		for (size_t i = 0; i < n; i++) /* ties: the later column gives first */
			if (widths[i] > minw[i] && (best == n || widths[i] >= widths[best]))
				best = i;
		if (best == n)
			break;
		widths[best]--;
		sum--;
	}
	return sum;
}

void ctl_format_duration(double secs, char *buf, size_t len)
{
	if (!(secs == secs))
		secs = 0;
	secs = fabs(secs);
	if (secs > 1e12)
		secs = 1e12;
	long long s = (long long)(secs + 0.5);

	if (s < 60)
		snprintf(buf, len, "%llds", s);
	else if (s < 3600)
		snprintf(buf, len, s % 60 ? "%lldm%02llds" : "%lldm", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, len, s % 3600 / 60 ? "%lldh%02lldm" : "%lldh", s / 3600, s % 3600 / 60);
	else
		snprintf(buf, len, s % 86400 / 3600 ? "%lldd%lldh" : "%lldd", s / 86400, s % 86400 / 3600);
}

int ctl_parse_duration(const char *s, double *out)
{
	char *end;
	double mult = 1;

	if (!s || !isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || v == 0 || v > 100000000ULL)
		return -1;
	if (*end) {
		switch (*end) {
		case 's': mult = 1; break;
		case 'm': mult = 60; break;
		case 'h': mult = 3600; break;
		case 'd': mult = 86400; break;
		default: return -1;
		}
		if (end[1])
			return -1;
	}
	*out = (double)v * mult;
	return 0;
}

/* Length of "scheme://authority" at the start of url, or 0. */
static size_t origin_len(const char *url)
{
	const char *s = strstr(url, "://");

	if (!s || s == url)
		return 0;
	for (const char *p = url; p < s; p++)
		if (!isalpha((unsigned char)*p))
			return 0;
	s += 3;
	return (size_t)(s - url) + strcspn(s, "/?#");
}

/* Does the link parameter list [p, end) hold rel="next"? */
static int rel_next(const char *p, const char *end)
{
	while (p < end) {
		const char *semi = memchr(p, ';', (size_t)(end - p));
		const char *stop = semi ? semi : end;
		while (p < stop && isspace((unsigned char)*p))
			p++;
		if (stop - p > 4 && strncasecmp(p, "rel", 3) == 0) {
			const char *v = p + 3;
			while (v < stop && isspace((unsigned char)*v))
				v++;
			if (v < stop && *v == '=') {
				v++;
				while (v < stop && (isspace((unsigned char)*v) || *v == '"'))
					v++;
				/* a space-separated list of relation types */
				while (v < stop && *v != '"') {
					size_t n = strcspn(v, " \t\";,");
					if (v + n > stop)
						n = (size_t)(stop - v);
					if (n == 4 && strncasecmp(v, "next", 4) == 0)
						return 1;
					v += n;
					while (v < stop && (*v == ' ' || *v == '\t'))
						v++;
				}
			}
		}
		p = semi ? semi + 1 : end;
	}
	return 0;
}

int ctl_next_link(const char *link, const char *page_url, char *out, size_t outlen)
{
	const char *p = link;

	while (p && (p = strchr(p, '<'))) {
		const char *gt = strchr(p, '>');
		if (!gt)
			return 0;
		const char *end = strchr(gt, ','); /* the next link-value, or the end */
		if (!end)
			end = gt + strlen(gt);
		if (rel_next(gt + 1, end)) {
			const char *t = p + 1;
			size_t tn = (size_t)(gt - t), ol = origin_len(page_url);
			int n;
			if (ol == 0 || tn == 0)
				return -1;
			if (origin_len(t) > 0) {
				size_t tl = origin_len(t);
				if (tl != ol || strncasecmp(t, page_url, ol) != 0 || (t[tl] != '/' && t[tl] != '?'))
					return -1; /* another origin: never send the token there */
				n = snprintf(out, outlen, "%.*s", (int)tn, t);
			} else if (t[0] == '/' && t[1] != '/') {
				n = snprintf(out, outlen, "%.*s%.*s", (int)ol, page_url, (int)tn, t);
			} else if (t[0] == '?') {
				size_t pl = strcspn(page_url, "?#");
				n = snprintf(out, outlen, "%.*s%.*s", (int)pl, page_url, (int)tn, t);
			} else {
				return -1; /* a network-path or relative-path reference: not ours */
			}
			return n > 0 && (size_t)n < outlen ? 1 : -1;
		}
		p = end;
	}
	return 0;
}

/* ---- a growing string ---- */

struct sb {
	char *p;
	size_t len, cap;
	int full; /* over its cap or out of memory: the content is cut */
};

static void sb_add(struct sb *b, const char *s, size_t n)
{
	if (b->full)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *np = cap <= BODY_MAX + 1 ? realloc(b->p, cap) : NULL;
		if (!np) {
			b->full = 1;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sb *b, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(tmp)) {
		sb_add(b, tmp, (size_t)n);
		return;
	}
	char *big = malloc((size_t)n + 1);
	if (!big) {
		b->full = 1;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	sb_add(b, big, (size_t)n);
	free(big);
}

/* A string literal. */
#define SB_LIT(b, lit) sb_add((b), (lit), sizeof(lit) - 1)

static const char *sb_str(const struct sb *b)
{
	return b->p ? b->p : "";
}

/* ---- the client ---- */

struct opt {
	char name[64];
	const char *val;
};

struct ctl {
	char base[URL_MAX];
	char *token;
	double timeout;
	int json, wide, color;
	size_t cols;
	CURL *curl;
	const char *cmd;
	const char *pos[ARGS_MAX];
	int npos;
	struct opt opts[ARGS_MAX];
	int nopts;
};

__attribute__((format(printf, 1, 2))) static void err(const char *fmt, ...)
{
	char msg[2048], clean[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ctl_fit_text(msg, sizeof(clean) / 4, clean, sizeof(clean));
	fprintf(stderr, "recoveryd ctl: %s\n", clean);
}

static const char *opt_get(const struct ctl *c, const char *name)
{
	const char *v = NULL;

	for (int i = 0; i < c->nopts; i++)
		if (strcmp(c->opts[i].name, name) == 0)
			v = c->opts[i].val ? c->opts[i].val : "";
	return v; /* the last one wins */
}

/* A string member of o, or NULL. */
static const char *jstr(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double jnum(const cJSON *o, const char *k, double dflt)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

/* ---- HTTP ---- */

struct resp {
	long status;
	struct sb body;
	char link[URL_MAX];
};

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
	struct resp *r = ud;

	if (r->body.len + sz * n > BODY_MAX)
		return 0; /* aborts the transfer: an answer this big is not the API's */
	sb_add(&r->body, p, sz * n);
	return r->body.full ? 0 : sz * n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
	struct resp *r = ud;
	size_t len = sz * n;

	if (len > 5 && strncasecmp(p, "Link:", 5) == 0) {
		size_t from = 5;
		while (from < len && (p[from] == ' ' || p[from] == '\t'))
			from++;
		while (len > from && (p[len - 1] == '\r' || p[len - 1] == '\n' || p[len - 1] == ' '))
			len--;
		snprintf(r->link, sizeof(r->link), "%.*s", (int)(len - from), p + from);
	}
	return sz * n;
}

/* One request; url is absolute. 0 with r filled, or -1 (transport error,
 * reported). extra: seconds added to the timeout (a server-side wait). */
static int http_do(struct ctl *c, const char *method, const char *url, const cJSON *body, double extra,
                   struct resp *r)
{
	char errbuf[CURL_ERROR_SIZE] = "", auth[TOKEN_MAX + 64];
	struct curl_slist *h = NULL;
	char *payload = NULL;
	int rc = -1;

	memset(r, 0, sizeof(*r));
	curl_easy_reset(c->curl);
	h = curl_slist_append(h, "Accept: application/json");
	if (c->token) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", c->token);
		h = curl_slist_append(h, auth);
		explicit_bzero(auth, sizeof(auth));
	}
	if (strcmp(method, "POST") == 0) {
		payload = cJSON_PrintUnformatted(body);
		if (!payload) {
			err("out of memory");
			goto out;
		}
		h = curl_slist_append(h, "Content-Type: application/json");
		curl_easy_setopt(c->curl, CURLOPT_POST, 1L);
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, payload);
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
	}
	if (!h) {
		err("out of memory");
		goto out;
	}
	curl_easy_setopt(c->curl, CURLOPT_URL, url);
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c->curl, CURLOPT_USERAGENT, "recoveryd-ctl/" RECOVERYD_VERSION);
	curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c->curl, CURLOPT_FOLLOWLOCATION, 0L); /* the token stays with --url */
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(c->curl, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
	curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, (long)((c->timeout + extra) * 1000));
	curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->timeout * 1000));
	curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(c->curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c->curl, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, errbuf);
	CURLcode cc = curl_easy_perform(c->curl);
	if (cc != CURLE_OK) {
		err("%s %s: %s", method, url, errbuf[0] ? errbuf : curl_easy_strerror(cc));
		goto out;
	}
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &r->status);
	rc = 0;
out:
	/* libcurl keeps copies of the header list only until the next reset */
	for (struct curl_slist *i = h; i; i = i->next)
		explicit_bzero(i->data, strlen(i->data));
	curl_slist_free_all(h);
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
	free(payload);
	return rc;
}

/* A request of the API and its JSON answer (*out, the caller frees).
 * Returns CTL_OK, or the exit code of the failure (reported on stderr). */
static int api(struct ctl *c, const char *method, const char *url, const cJSON *body, double extra,
               cJSON **out, struct resp *r)
{
	struct resp local;
	int rc;

	if (!r)
		r = &local;
	*out = NULL;
	if (http_do(c, method, url, body, extra, r) < 0) {
		rc = CTL_UNAVAILABLE;
		goto out;
	}
	cJSON *doc = cJSON_ParseWithLength(sb_str(&r->body), r->body.len);
	if (r->status >= 200 && r->status < 300 && doc) {
		*out = doc;
		rc = CTL_OK;
		goto out;
	}
	const char *msg = jstr(doc, "message"), *code = jstr(doc, "error");
	if (r->status >= 400 && r->status < 500) {
		err("%s (%ld%s%s)", msg ? msg : "refused", r->status, code ? " " : "", code ? code : "");
		if (r->status == 401 && !c->token)
			err("no token was sent: give --token-file FILE or set RECOVERYD_TOKEN_FILE");
		rc = CTL_REFUSED;
	} else if (r->status >= 500) {
		err("%s (%ld%s%s)", msg ? msg : "server error", r->status, code ? " " : "", code ? code : "");
		rc = CTL_UNAVAILABLE;
	} else {
		err("%s %s: unexpected answer (HTTP %ld%s)", method, url, r->status,
		    doc ? "" : ", not JSON");
		rc = CTL_UNAVAILABLE;
	}
	cJSON_Delete(doc);
out:
	free(r->body.p); /* the caller wants the status and the Link header */
	r->body.p = NULL;
	return rc;
}

/* base + path + query parameters (values escaped) into u. */
static void url_path(struct ctl *c, struct sb *u, const char *path)
{
	sb_printf(u, "%s%s", c->base, path);
}

static void url_escaped(struct ctl *c, struct sb *u, const char *s)
{
	char *e = curl_easy_escape(c->curl, s, 0);
	if (!e) {
		u->full = 1;
		return;
	}
	sb_add(u, e, strlen(e));
	curl_free(e);
}

static void url_param(struct ctl *c, struct sb *u, const char *name, const char *val)
{
	if (!val)
		return;
	sb_add(u, strchr(sb_str(u), '?') ? "&" : "?", 1);
	sb_printf(u, "%s=", name);
	url_escaped(c, u, val);
}

/* ---- output ---- */

static const char *state_color(const char *s)
{
	if (!s)
		return NULL;
	if (!strcmp(s, "succeeded") || !strcmp(s, "dry_run_succeeded") || !strcmp(s, "delivered") ||
	    !strcmp(s, "ok"))
		return "\033[32m";
	if (!strcmp(s, "failed") || !strcmp(s, "dry_run_failed") || !strcmp(s, "budget_exhausted") ||
	    !strcmp(s, "timeout") || !strcmp(s, "interrupted") || !strcmp(s, "approval_timeout"))
		return "\033[31m";
	if (!strcmp(s, "running") || !strcmp(s, "queued") || !strcmp(s, "retry_wait") ||
	    !strcmp(s, "cancelling") || !strcmp(s, "pending") || !strcmp(s, "retrying"))
		return "\033[33m";
	if (!strcmp(s, "awaiting_approval"))
		return "\033[35m";
	if (!strcmp(s, "cancelled") || !strcmp(s, "paused") || !strcmp(s, "rejected") || !strcmp(s, "planned"))
		return "\033[2m";
	return NULL;
}

/* s, made printable, coloured by state when colour is on. */
static void add_state(const struct ctl *c, struct sb *b, const char *s)
{
	char clean[256];
	const char *col = c->color ? state_color(s) : NULL;

	ctl_fit_text(s ? s : "-", 64, clean, sizeof(clean));
	if (col)
		sb_printf(b, "%s%s\033[0m", col, clean);
	else
		sb_add(b, clean, strlen(clean));
}

/* Untrusted text, printable, at most max columns. */
static void add_text(struct sb *b, const char *s, size_t max)
{
	char *clean = malloc(max * 4 + 4);

	if (!clean) {
		b->full = 1;
		return;
	}
	ctl_fit_text(s ? s : "", max, clean, max * 4 + 4);
	sb_add(b, clean, strlen(clean));
	free(clean);
}

/* An API time ("2026-11-29T11:46:16.108Z") in local time: "%H:%M:%S" or
 * with the date; "-" when absent or not a time. */
static void fmt_time(const char *iso, int date, char *buf, size_t len)
{
	double t;
	struct tm tm;

	if (!iso || rd_parse_time(iso, &t) < 0) {
		snprintf(buf, len, "-");
		return;
	}
	time_t s = (time_t)t;
	localtime_r(&s, &tm);
	strftime(buf, len, date ? "%Y-%m-%d %H:%M:%S" : "%H:%M:%S", &tm);
}

/* "3m20s ago" from an API time; "-" when absent. */
static void fmt_ago(const char *iso, char *buf, size_t len)
{
	double t;
	char d[32];

	if (!iso || rd_parse_time(iso, &t) < 0) {
		snprintf(buf, len, "-");
		return;
	}
	double dt = rd_now() - t;
	ctl_format_duration(dt, d, sizeof(d));
	snprintf(buf, len, dt >= 0 ? "%s ago" : "in %s", d);
}

static void print_json(const cJSON *doc)
{
	char *s = cJSON_Print(doc);
	if (s) {
		fputs(s, stdout);
		fputc('\n', stdout);
	}
	free(s);
}

/* A table: rows of cells; the state column (or none, -1) is coloured. */
struct table {
	size_t n;
	const char *head[COLS_MAX];
	size_t minw[COLS_MAX];
	int state_col;
	char **cells; /* rows * n, printable */
	size_t rows, cap;
};

static void table_row(struct table *t, const char *const *cells)
{
	if (t->rows == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		char **nc = realloc(t->cells, cap * t->n * sizeof(*nc));
		if (!nc)
			return;
		t->cells = nc;
		t->cap = cap;
	}
	for (size_t i = 0; i < t->n; i++) {
		char buf[CELL_MAX];
		ctl_fit_text(cells[i] ? cells[i] : "-", CELL_MAX / 4 - 1, buf, sizeof(buf));
		t->cells[t->rows * t->n + i] = strdup(buf);
	}
	t->rows++;
}

static void table_print(const struct ctl *c, struct table *t)
{
	size_t w[COLS_MAX];
	struct sb out = {0};

	for (size_t i = 0; i < t->n; i++) {
		w[i] = strlen(t->head[i]);
		for (size_t r = 0; r < t->rows; r++) {
			const char *s = t->cells[r * t->n + i];
			size_t dw = s ? ctl_display_width(s) : 0;
			if (dw > w[i])
				w[i] = dw;
		}
	}
	if (!c->wide)
		ctl_fit_columns(w, t->minw, t->n, 2, c->cols);
	for (size_t r = 0; r <= t->rows; r++) {
		for (size_t i = 0; i < t->n; i++) {
			const char *s = r ? t->cells[(r - 1) * t->n + i] : t->head[i];
			char cell[CELL_MAX];
			ctl_fit_text(s ? s : "", w[i], cell, sizeof(cell));
			size_t dw = ctl_display_width(cell);
			const char *col = (r && c->color && (int)i == t->state_col) ? state_color(s) : NULL;
			if (col)
				sb_printf(&out, "%s%s\033[0m", col, cell);
			else
				sb_add(&out, cell, strlen(cell));
			if (i + 1 < t->n)
				sb_printf(&out, "%*s", (int)(w[i] - dw + 2), "");
		}
		SB_LIT(&out, "\n");
	}
	fputs(sb_str(&out), stdout);
	free(out.p);
	for (size_t k = 0; k < t->rows * t->n; k++)
		free(t->cells[k]);
	free(t->cells);
}

/* ---- the job timeline ---- */

/* Lines with a key each: `watch` prints a line whose key is new or whose
 * text changed since the last poll. */
struct tl {
	char **key, **text;
	size_t n, cap;
};

static void tl_free(struct tl *t)
{
	for (size_t i = 0; i < t->n; i++) {
		free(t->key[i]);
		free(t->text[i]);
	}
	free(t->key);
	free(t->text);
	memset(t, 0, sizeof(*t));
}

/* Take the text of b as a line keyed key (b is emptied). */
static void tl_take(struct tl *t, const char *key, struct sb *b)
{
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		char **nk = realloc(t->key, cap * sizeof(*nk));
		if (nk)
			t->key = nk;
		char **nt = realloc(t->text, cap * sizeof(*nt));
		if (nt)
			t->text = nt;
		if (!nk || !nt)
			goto out;
		t->cap = cap;
	}
	t->key[t->n] = strdup(key);
	t->text[t->n] = strdup(sb_str(b));
	if (t->key[t->n] && t->text[t->n])
		t->n++;
	else {
		free(t->key[t->n]);
		free(t->text[t->n]);
	}
out:
	free(b->p);
	memset(b, 0, sizeof(*b));
}

static void tl_line(struct tl *t, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void tl_line(struct tl *t, const char *key, const char *fmt, ...)
{
	struct sb b = {0};
	char tmp[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	sb_add(&b, tmp, strlen(tmp));
	tl_take(t, key, &b);
}

/* A header field of the job: "  name        value" (value untrusted). */
static void tl_field(struct tl *t, const char *name, const char *value)
{
	struct sb b = {0};
	char key[64];

	sb_printf(&b, "  %-12s", name);
	add_text(&b, value, 2000);
	snprintf(key, sizeof(key), "h:%s", name);
	tl_take(t, key, &b);
}

static void action_text(struct sb *b, const cJSON *a)
{
	const char *kind = jstr(a, "kind"), *e = jstr(a, "error");
	int planned = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "planned"));

	if (kind && !strcmp(kind, "http")) {
		sb_printf(b, "%s ", jstr(a, "method") ? jstr(a, "method") : "?");
		add_text(b, jstr(a, "url"), 400);
		if (planned)
			SB_LIT(b, " PLANNED");
		else if (e) {
			SB_LIT(b, " -> error: ");
			add_text(b, e, 400);
		} else
			sb_printf(b, " -> %d", (int)jnum(a, "status", 0));
	} else if (kind && !strcmp(kind, "exec")) {
		const cJSON *argv = cJSON_GetObjectItemCaseSensitive(a, "argv"), *v;
		SB_LIT(b, "exec [");
		int first = 1;
		cJSON_ArrayForEach(v, argv)
		{
			if (!first)
				SB_LIT(b, " ");
			first = 0;
			add_text(b, cJSON_IsString(v) ? v->valuestring : "?", 400);
		}
		SB_LIT(b, "]");
		if (planned)
			SB_LIT(b, " PLANNED");
		else if (e) {
			SB_LIT(b, " -> error: ");
			add_text(b, e, 400);
		} else if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(a, "signal")))
			sb_printf(b, " -> signal %d", (int)jnum(a, "signal", 0));
		else
			sb_printf(b, " -> exit %d", (int)jnum(a, "code", -1));
		const char *err_out = jstr(a, "stderr");
		if (!planned && !e && jnum(a, "code", 0) != 0 && err_out && *err_out) {
			SB_LIT(b, "  stderr: ");
			add_text(b, err_out, 200);
		}
	} else if (kind && !strcmp(kind, "sleep")) {
		double s = jnum(a, "seconds", 0);
		char d[32];
		if (s < 60)
			snprintf(d, sizeof(d), "%gs", s);
		else
			ctl_format_duration(s, d, sizeof(d));
		sb_printf(b, "sleep %s", d);
	} else {
		add_text(b, kind ? kind : "?", 40);
	}
	const cJSON *in_plan = cJSON_GetObjectItemCaseSensitive(a, "in_plan");
	if (cJSON_IsFalse(in_plan))
		SB_LIT(b, " (not in the plan)");
}

static void log_text(struct sb *b, const cJSON *l)
{
	const cJSON *fields = cJSON_GetObjectItemCaseSensitive(l, "fields"), *f;

	sb_printf(b, "%-5s ", jstr(l, "level") ? jstr(l, "level") : "log");
	add_text(b, jstr(l, "msg"), 1000);
	cJSON_ArrayForEach(f, fields)
	{
		SB_LIT(b, "  ");
		add_text(b, f->string, 100);
		SB_LIT(b, "=");
		if (cJSON_IsString(f))
			add_text(b, f->valuestring, 200);
		else {
			char *v = cJSON_PrintUnformatted(f);
			add_text(b, v ? v : "?", 200);
			free(v);
		}
	}
}

/* The entries of arr (actions or log) of attempt n, by time, merged. */
static void attempt_entries(struct tl *t, const cJSON *actions, const cJSON *log, int n)
{
	const cJSON *a = actions ? actions->child : NULL, *l = log ? log->child : NULL;
	int ai = 0, li = 0;

	for (;;) {
		while (a && (int)jnum(a, "attempt", -1) != n)
			a = a->next, ai++;
		while (l && (int)jnum(l, "attempt", -1) != n)
			l = l->next, li++;
		if (!a && !l)
			break;
		const char *ta = a ? jstr(a, "ts") : NULL, *tl = l ? jstr(l, "ts") : NULL;
		int take_a = a && (!l || strcmp(ta ? ta : "", tl ? tl : "") <= 0);
		const cJSON *e = take_a ? a : l;
		struct sb b = {0};
		char ts[32], key[96];
		fmt_time(jstr(e, "ts"), 0, ts, sizeof(ts));
		sb_printf(&b, "    %s  ", ts);
		if (take_a) {
			action_text(&b, a);
			snprintf(key, sizeof(key), "a%d:act:%d", n, ai);
			a = a->next, ai++;
		} else {
			log_text(&b, l);
			snprintf(key, sizeof(key), "a%d:log:%d", n, li);
			l = l->next, li++;
		}
		tl_take(t, key, &b);
	}
}

static void labels_text(struct sb *b, const cJSON *labels)
{
	const cJSON *l;
	int first = 1;

	cJSON_ArrayForEach(l, labels)
	{
		if (!first)
			SB_LIT(b, " ");
		first = 0;
		add_text(b, l->string, 200);
		SB_LIT(b, "=");
		add_text(b, cJSON_IsString(l) ? l->valuestring : "?", 400);
	}
}

static void plan_lines(struct tl *t, const cJSON *rec)
{
	const cJSON *plan = cJSON_GetObjectItemCaseSensitive(rec, "plan"), *p;
	const cJSON *diff = cJSON_GetObjectItemCaseSensitive(rec, "plan_diff");
	const cJSON *ap = cJSON_GetObjectItemCaseSensitive(rec, "approval");
	int i = 0;
	char key[64];

	if (cJSON_IsArray(plan)) {
		tl_line(t, "p", "plan (attempt %d)", (int)jnum(ap, "plan_attempt", 0));
		cJSON_ArrayForEach(p, plan)
		{
			struct sb b = {0};
			SB_LIT(&b, "    ");
			add_text(&b, cJSON_IsString(p) ? p->valuestring : "?", 600);
			snprintf(key, sizeof(key), "p:%d", i++);
			tl_take(t, key, &b);
		}
	}
	if (cJSON_IsObject(diff)) {
		int matches = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(diff, "matches"));
		tl_line(t, "d", "plan_diff (attempt %d): %s", (int)jnum(diff, "run_attempt", 0),
		        matches ? "the run matches the plan" : "the run differs from the plan");
		static const char *const lists[2][2] = {{"unplanned", "unplanned"}, {"not_run", "not run"}};
		for (int k = 0; k < 2; k++) {
			i = 0;
			cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(diff, lists[k][0]))
			{
				struct sb b = {0};
				sb_printf(&b, "    %-10s", lists[k][1]);
				add_text(&b, cJSON_IsString(p) ? p->valuestring : "?", 600);
				snprintf(key, sizeof(key), "d:%d:%d", k, i++);
				tl_take(t, key, &b);
			}
		}
	}
}

/* The whole timeline of a job record. */
static void timeline(const struct ctl *c, const cJSON *rec, struct tl *t)
{
	const cJSON *alert = cJSON_GetObjectItemCaseSensitive(rec, "alert");
	const cJSON *actions = cJSON_GetObjectItemCaseSensitive(rec, "actions");
	const cJSON *log = cJSON_GetObjectItemCaseSensitive(rec, "log");
	const cJSON *at, *x;
	struct sb b = {0};
	char key[96], tbuf[64];

	SB_LIT(&b, "job ");
	add_text(&b, jstr(rec, "id"), 64);
	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, "dry_run")))
		SB_LIT(&b, "  (dry-run)");
	tl_take(t, "h", &b);
	tl_field(t, "playbook", jstr(rec, "playbook"));
	sb_printf(&b, "  %-12s", "state");
	add_state(c, &b, jstr(rec, "state"));
	if (jstr(rec, "outcome")) {
		SB_LIT(&b, ", outcome ");
		add_state(c, &b, jstr(rec, "outcome"));
	}
	tl_take(t, "h:state", &b);
	if (jstr(rec, "error"))
		tl_field(t, "error", jstr(rec, "error"));
	tl_field(t, "key", jstr(rec, "key"));
	sb_printf(&b, "  %-12s", "trigger");
	add_text(&b, jstr(rec, "trigger"), 40);
	if (jstr(rec, "triggered_by")) {
		SB_LIT(&b, " by ");
		add_text(&b, jstr(rec, "triggered_by"), 200);
	}
	if (jstr(rec, "reason")) {
		SB_LIT(&b, ": ");
		add_text(&b, jstr(rec, "reason"), 1000);
	}
	tl_take(t, "h:trigger", &b);
	sb_printf(&b, "  %-12s", "labels");
	labels_text(&b, cJSON_GetObjectItemCaseSensitive(alert, "labels"));
	tl_take(t, "h:labels", &b);
	fmt_time(jstr(rec, "created_at"), 1, tbuf, sizeof(tbuf));
	tl_field(t, "created", tbuf);
	if (jstr(rec, "cancelled_by"))
		tl_field(t, "cancelled by", jstr(rec, "cancelled_by"));
	const cJSON *ap = cJSON_GetObjectItemCaseSensitive(rec, "approval");
	if (cJSON_IsObject(ap)) {
		sb_printf(&b, "  %-12s", "approval");
		add_text(&b, jstr(ap, "state"), 40);
		if (jstr(ap, "approved_by")) {
			SB_LIT(&b, " by ");
			add_text(&b, jstr(ap, "approved_by"), 200);
		}
		tl_take(t, "h:approval", &b);
	}
	if (jstr(rec, "next_attempt_at") && !jstr(rec, "outcome")) {
		const char *st = jstr(rec, "state");
		fmt_time(jstr(rec, "next_attempt_at"), 1, tbuf, sizeof(tbuf));
		sb_printf(&b, "  %-12s%s", st && !strcmp(st, "awaiting_approval") ? "approve by" : "next attempt", tbuf);
		tl_take(t, "h:next", &b);
	}

	/* what people did to the job, before the attempts: watch prints
	 * lines as they come, and the trigger comes first */
	int i = 0, heading = 0;
	cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(rec, "events"))
	{
		i++;
		if (!jstr(x, "type") || strcmp(jstr(x, "type"), "audit") != 0)
			continue;
		if (!heading++)
			tl_line(t, "v", "audit");
		fmt_time(jstr(x, "ts"), 0, tbuf, sizeof(tbuf));
		sb_printf(&b, "    %s  ", tbuf);
		add_text(&b, jstr(x, "action"), 20);
		SB_LIT(&b, " by ");
		add_text(&b, jstr(x, "principal"), 200);
		SB_LIT(&b, " (");
		add_text(&b, jstr(x, "role"), 20);
		SB_LIT(&b, ")");
		if (jstr(x, "address") && *jstr(x, "address")) {
			SB_LIT(&b, " from ");
			add_text(&b, jstr(x, "address"), 64);
		}
		if (jstr(x, "reason")) {
			SB_LIT(&b, ": ");
			add_text(&b, jstr(x, "reason"), 1000);
		}
		snprintf(key, sizeof(key), "v:%d", i);
		tl_take(t, key, &b);
	}
	cJSON_ArrayForEach(at, cJSON_GetObjectItemCaseSensitive(rec, "attempts"))
	{
		int n = (int)jnum(at, "n", 0);
		fmt_time(jstr(at, "started_at"), 0, tbuf, sizeof(tbuf));
		snprintf(key, sizeof(key), "a%d", n);
		tl_line(t, key, "attempt %d, started %s", n, tbuf);
		attempt_entries(t, actions, log, n);
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(at, "verify");
		if (cJSON_IsObject(v)) {
			int ok = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(v, "ok"));
			sb_printf(&b, "    %-10s", "verify");
			add_state(c, &b, ok ? "ok" : "failed");
			if (jstr(v, "reason")) {
				SB_LIT(&b, ": ");
				add_text(&b, jstr(v, "reason"), 1000);
			}
			snprintf(key, sizeof(key), "a%d:verify", n);
			tl_take(t, key, &b);
		}
		if (jstr(at, "result")) {
			double t0, t1;
			sb_printf(&b, "    %-10s", "result");
			add_state(c, &b, jstr(at, "result"));
			if (jstr(at, "error")) {
				SB_LIT(&b, ": ");
				add_text(&b, jstr(at, "error"), 1000);
			}
			if (jstr(at, "started_at") && jstr(at, "ended_at") && rd_parse_time(jstr(at, "started_at"), &t0) == 0 &&
			    rd_parse_time(jstr(at, "ended_at"), &t1) == 0)
				sb_printf(&b, " (%.1fs)", t1 - t0);
			snprintf(key, sizeof(key), "a%d:result", n);
			tl_take(t, key, &b);
		}
	}
	const cJSON *esc = cJSON_GetObjectItemCaseSensitive(rec, "escalations");
	if (cJSON_GetArraySize(esc) > 0) {
		tl_line(t, "e", "escalations");
		cJSON_ArrayForEach(x, esc)
		{
			SB_LIT(&b, "    ");
			add_text(&b, jstr(x, "sink"), 20);
			SB_LIT(&b, " ");
			add_text(&b, jstr(x, "kind"), 20);
			SB_LIT(&b, " (");
			add_text(&b, jstr(x, "reason"), 60);
			SB_LIT(&b, ") ");
			add_state(c, &b, jstr(x, "state"));
			if (jstr(x, "last_answer")) {
				SB_LIT(&b, ": ");
				add_text(&b, jstr(x, "last_answer"), 200);
			}
			snprintf(key, sizeof(key), "e:%.40s", jstr(x, "id") ? jstr(x, "id") : "?");
			tl_take(t, key, &b);
		}
	}
	plan_lines(t, rec);
	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, "events_truncated")))
		tl_line(t, "t", "(more than 1000 actions, log lines and events: the newest 1000 are shown)");
	free(b.p);
}

/* The lines of t not in seen (same key and text), printed and added. After
 * the first time the header's changes (keys "h:...") come last: a new state
 * reads after the attempt lines that led to it. */
static void tl_print_new(const struct tl *t, struct tl *seen)
{
	int first = seen->n == 0;

	for (size_t j = 0; j < 2 * t->n; j++) {
		size_t i = j % t->n, k;
		if (!first && (j < t->n) == (strncmp(t->key[i], "h:", 2) == 0))
			continue;
		if (first && j >= t->n)
			break;
		for (k = 0; k < seen->n && strcmp(seen->key[k], t->key[i]) != 0; k++)
			;
		if (k < seen->n && !strcmp(seen->text[k], t->text[i]))
			continue;
		printf("%s\n", t->text[i]);
		char *text = strdup(t->text[i]);
		if (k < seen->n && text) { /* a changed line: the next change of it shows too */
			free(seen->text[k]);
			seen->text[k] = text;
		} else if (text) {
			struct sb b = {text, strlen(text), strlen(text) + 1, 0};
			tl_take(seen, t->key[i], &b);
		}
	}
	fflush(stdout);
}

/* ---- commands ---- */

static int job_url(struct ctl *c, struct sb *u, const char *id, const char *action)
{
	url_path(c, u, "/api/v1/jobs/");
	url_escaped(c, u, id);
	if (action)
		sb_printf(u, "/%s", action);
	return u->full ? -1 : 0;
}

/* How long watch keeps trying while the server cannot be reached. */
#define WATCH_LOST_MAX 60

static int get_job(struct ctl *c, const char *id, cJSON **rec)
{
	struct sb u = {0};
	int rc = job_url(c, &u, id, NULL) < 0 ? CTL_UNAVAILABLE : api(c, "GET", sb_str(&u), NULL, 0, rec, NULL);
	free(u.p);
	return rc;
}

static int outcome_exit(const cJSON *rec)
{
	const char *o = jstr(rec, "outcome");
	return o && (!strcmp(o, "succeeded") || !strcmp(o, "dry_run_succeeded")) ? CTL_OK : CTL_JOB_FAILED;
}

static void sleep_s(double s)
{
	struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Follow job id until it ends (or waits for a human when stop_at_approval)
 * or wait_s passes: its timeline as it grows, or its last record with -o
 * json. */
static int follow(struct ctl *c, const char *id, double wait_s, int stop_at_approval, cJSON **last)
{
	struct tl seen = {0};
	cJSON *rec = NULL;
	double deadline = rd_mono() + wait_s;
	int rc;

	double lost_since = 0, backoff = 1;
	int found = 0;

	for (int settled = 0;;) {
		cJSON_Delete(rec);
		rec = NULL;
		if ((rc = get_job(c, id, &rec)) == CTL_UNAVAILABLE && found) {
			/* Lost after the job was seen (a restart or a failover of the
			 * server): keep following for a while, then give up. */
			double now = rd_mono();
			if (!lost_since)
				lost_since = now;
			if (now - lost_since >= WATCH_LOST_MAX || now >= deadline)
				break;
			err("retrying in %.0fs (for up to %ds)", backoff, WATCH_LOST_MAX);
			sleep_s(backoff);
			backoff = backoff * 2 > 8 ? 8 : backoff * 2;
			continue;
		}
		if (rc != CTL_OK)
			break;
		found = 1;
		lost_since = 0;
		backoff = 1;
		if (!c->json) {
			struct tl t = {0};
			timeline(c, rec, &t);
			tl_print_new(&t, &seen);
			tl_free(&t);
		}
		if (jstr(rec, "outcome")) {
			/* The end's escalation rows are journaled just after the end:
			 * one more look shows them. */
			if (settled++) {
				rc = outcome_exit(rec);
				break;
			}
			sleep_s(0.5);
			continue;
		}
		const char *st = jstr(rec, "state");
		if (stop_at_approval && st && !strcmp(st, "awaiting_approval")) {
			if (!c->json)
				printf("job %s awaits approval: recoveryd ctl approve %s (or reject %s --reason R)\n", id, id,
				       id);
			rc = CTL_NOT_ENDED;
			break;
		}
		if (rd_mono() >= deadline) {
			char d[32];
			ctl_format_duration(wait_s, d, sizeof(d));
			err("job %s has not ended after %s (state %s)", id, d, st ? st : "?");
			rc = CTL_NOT_ENDED;
			break;
		}
		double left = deadline - rd_mono();
		sleep_s(left < POLL_SECONDS ? (left > 0 ? left : 0) : POLL_SECONDS);
	}
	tl_free(&seen);
	if (last)
		*last = rec;
	else
		cJSON_Delete(rec);
	return rc;
}

void ctl_print_job(const cJSON *rec, FILE *out, int color)
{
	struct ctl c = {.color = color, .cols = 80};
	struct tl t = {0};

	timeline(&c, rec, &t);
	for (size_t i = 0; i < t.n; i++)
		fprintf(out, "%s\n", t.text[i]);
	tl_free(&t);
}

static int cmd_job(struct ctl *c)
{
	cJSON *rec;
	int rc = get_job(c, c->pos[0], &rec);

	if (rc != CTL_OK)
		return rc;
	if (c->json)
		print_json(rec);
	else {
		struct tl t = {0};
		timeline(c, rec, &t);
		for (size_t i = 0; i < t.n; i++)
			printf("%s\n", t.text[i]);
		tl_free(&t);
	}
	cJSON_Delete(rec);
	return CTL_OK;
}

static int wait_arg(const char *v, double dflt, double *out)
{
	if (!v || !*v) {
		*out = dflt;
		return 0;
	}
	if (ctl_parse_duration(v, out) < 0) {
		err("--wait takes seconds (or 90s, 15m, 2h), not '%s'", v);
		return -1;
	}
	return 0;
}

static int cmd_watch(struct ctl *c)
{
	double w;
	cJSON *rec = NULL;

	if (wait_arg(opt_get(c, "wait"), WATCH_MAX, &w) < 0)
		return CTL_USAGE;
	int rc = follow(c, c->pos[0], w, 0, &rec);
	if (c->json && rec)
		print_json(rec);
	cJSON_Delete(rec);
	return rc;
}

/* --since T: "15m", "2h", "1d" ago as epoch seconds; anything else as given. */
static const char *since_arg(const char *v, char *buf, size_t len)
{
	double d;
	size_t n = v ? strlen(v) : 0;

	if (n > 1 && isalpha((unsigned char)v[n - 1]) && ctl_parse_duration(v, &d) == 0) {
		snprintf(buf, len, "%.0f", floor(rd_now() - d));
		return buf;
	}
	return v;
}

static void short_id(const struct ctl *c, const char *id, char *buf, size_t len)
{
	snprintf(buf, len, "%.*s", c->wide ? 64 : 12, id ? id : "-");
}

static int cmd_jobs(struct ctl *c)
{
	struct sb u = {0};
	char since[32], next[URL_MAX];
	cJSON *all = cJSON_CreateArray();
	int rc = CTL_OK, all_pages = opt_get(c, "all") != NULL, more = 0;

	url_path(c, &u, "/api/v1/jobs");
	url_param(c, &u, "state", opt_get(c, "state"));
	url_param(c, &u, "playbook", opt_get(c, "playbook"));
	url_param(c, &u, "alertname", opt_get(c, "alertname"));
	url_param(c, &u, "since", since_arg(opt_get(c, "since"), since, sizeof(since)));
	url_param(c, &u, "limit", opt_get(c, "limit"));
	snprintf(next, sizeof(next), "%s", sb_str(&u));
	free(u.p);
	if (!all)
		return CTL_UNAVAILABLE;
	for (int page = 0; page < PAGES_MAX; page++) {
		struct resp r;
		cJSON *doc;
		if ((rc = api(c, "GET", next, NULL, 0, &doc, &r)) != CTL_OK)
			break;
		cJSON *rows = cJSON_IsArray(doc) ? doc : cJSON_GetObjectItemCaseSensitive(doc, "jobs");
		int n = cJSON_GetArraySize(rows);
		while (cJSON_IsArray(rows) && rows->child)
			cJSON_AddItemToArray(all, cJSON_DetachItemViaPointer(rows, rows->child));
		cJSON_Delete(doc);
		char from[URL_MAX]; /* the link is relative to this page */
		snprintf(from, sizeof(from), "%s", next);
		more = r.link[0] ? ctl_next_link(r.link, from, next, sizeof(next)) : 0;
		if (more < 0) {
			err("not following the next page: its link leaves %s", c->base);
			more = 0;
		}
		if (!all_pages || !more || n == 0)
			break;
		if (page + 1 == PAGES_MAX)
			err("stopped after %d pages", PAGES_MAX);
	}
	if (rc != CTL_OK) {
		cJSON_Delete(all);
		return rc;
	}
	if (c->json) {
		print_json(all);
	} else {
		struct table t = {8, {"ID", "PLAYBOOK", "ALERT", "STATE", "OUTCOME", "ATT", "CREATED", "ERROR"},
		                  {c->wide ? 32 : 12, 8, 5, 7, 7, 3, 8, 5}, 3, NULL, 0, 0};
		const cJSON *j;
		cJSON_ArrayForEach(j, all)
		{
			char id[72], att[32], created[64];
			short_id(c, jstr(j, "id"), id, sizeof(id));
			snprintf(att, sizeof(att), "%d/%d", (int)jnum(j, "attempts_made", 0), (int)jnum(j, "max_attempts", 0));
			if (c->wide)
				fmt_time(jstr(j, "created_at"), 1, created, sizeof(created));
			else
				fmt_ago(jstr(j, "created_at"), created, sizeof(created));
			const char *cells[8] = {id, jstr(j, "playbook"), jstr(j, "alertname"), jstr(j, "state"),
			                        jstr(j, "outcome"), att, created, jstr(j, "error")};
			table_row(&t, cells);
		}
		table_print(c, &t);
		if (more && !all_pages)
			err("more jobs than shown: add --all, or a --limit");
	}
	cJSON_Delete(all);
	return CTL_OK;
}

/* POST body to url; prints "job ID: STATE" (or the answer with -o json). */
static int post_action(struct ctl *c, const char *url, cJSON *body, cJSON **out)
{
	cJSON *doc;
	int rc = body ? api(c, "POST", url, body, 0, &doc, NULL) : CTL_UNAVAILABLE;

	cJSON_Delete(body);
	if (rc != CTL_OK)
		return rc;
	if (out)
		*out = doc;
	else {
		if (c->json)
			print_json(doc);
		else {
			struct sb b = {0};
			SB_LIT(&b, "job ");
			add_text(&b, jstr(doc, "id"), 64);
			SB_LIT(&b, ": ");
			add_state(c, &b, jstr(doc, "state"));
			printf("%s\n", sb_str(&b));
			free(b.p);
		}
		cJSON_Delete(doc);
	}
	return CTL_OK;
}

static cJSON *reason_body(const char *reason)
{
	cJSON *b = cJSON_CreateObject();
	if (b && reason && !cJSON_AddStringToObject(b, "reason", reason)) {
		cJSON_Delete(b);
		return NULL;
	}
	return b;
}

static int job_action(struct ctl *c, const char *action, int need_reason)
{
	const char *reason = opt_get(c, "reason");
	struct sb u = {0};

	if (need_reason && (!reason || !*reason)) {
		err("%s needs --reason R (it goes to the audit trail)", action);
		return CTL_USAGE;
	}
	int rc = job_url(c, &u, c->pos[0], action) < 0 ? CTL_UNAVAILABLE
	                                                : post_action(c, sb_str(&u), reason_body(reason), NULL);
	free(u.p);
	return rc;
}

static int cmd_cancel(struct ctl *c)
{
	return job_action(c, "cancel", 1);
}

static int cmd_approve(struct ctl *c)
{
	return job_action(c, "approve", 0);
}

static int cmd_reject(struct ctl *c)
{
	return job_action(c, "reject", 1);
}

static void scope_url(struct ctl *c, struct sb *u, const char *action)
{
	if (c->npos > 0) {
		url_path(c, u, "/api/v1/playbooks/");
		url_escaped(c, u, c->pos[0]);
		sb_printf(u, "/%s", action);
	} else {
		sb_printf(u, "%s/api/v1/%s", c->base, action);
	}
}

static int pause_print(struct ctl *c, cJSON *doc)
{
	struct sb b = {0};
	char tbuf[64];

	if (c->json) {
		print_json(doc);
	} else if (cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(doc, "paused"))) {
		SB_LIT(&b, "resumed ");
		add_text(&b, jstr(doc, "scope"), 200);
	} else {
		SB_LIT(&b, "paused ");
		add_text(&b, jstr(doc, "scope"), 200);
		SB_LIT(&b, " by ");
		add_text(&b, jstr(doc, "by"), 200);
		fmt_time(jstr(doc, "until"), 1, tbuf, sizeof(tbuf));
		sb_printf(&b, " until %s: ", jstr(doc, "until") ? tbuf : "resumed");
		add_text(&b, jstr(doc, "reason"), 1000);
	}
	if (b.p)
		printf("%s\n", b.p);
	free(b.p);
	cJSON_Delete(doc);
	return CTL_OK;
}

static int cmd_pause(struct ctl *c)
{
	const char *reason = opt_get(c, "reason"), *f = opt_get(c, "for"), *until = opt_get(c, "until");
	struct sb u = {0};
	cJSON *doc;
	double secs;

	if (!reason || !*reason) {
		err("pause needs --reason R (it goes to the audit trail)");
		return CTL_USAGE;
	}
	if (f && until) {
		err("pause takes --for or --until, not both");
		return CTL_USAGE;
	}
	if (f && ctl_parse_duration(f, &secs) < 0) {
		err("--for takes seconds (or 90s, 15m, 2h, 1d), not '%s'", f);
		return CTL_USAGE;
	}
	cJSON *body = reason_body(reason);
	if (body && f)
		cJSON_AddNumberToObject(body, "for", secs);
	if (body && until)
		cJSON_AddStringToObject(body, "until", until);
	scope_url(c, &u, "pause");
	int rc = post_action(c, sb_str(&u), body, &doc);
	free(u.p);
	return rc == CTL_OK ? pause_print(c, doc) : rc;
}

static int cmd_resume(struct ctl *c)
{
	struct sb u = {0};
	cJSON *doc;

	scope_url(c, &u, "resume");
	int rc = post_action(c, sb_str(&u), reason_body(opt_get(c, "reason")), &doc);
	free(u.p);
	return rc == CTL_OK ? pause_print(c, doc) : rc;
}

static int cmd_trigger(struct ctl *c)
{
	const char *wait = opt_get(c, "wait");
	cJSON *body = cJSON_CreateObject(), *labels = cJSON_AddObjectToObject(body, "labels"), *doc = NULL;
	struct sb u = {0};
	double w = 0;
	int rc = CTL_USAGE, nlabels = 0;

	if (!labels)
		goto out;
	for (int i = 0; i < c->nopts; i++) {
		if (strcmp(c->opts[i].name, "label") != 0)
			continue;
		const char *kv = c->opts[i].val, *eq = strchr(kv, '=');
		if (!eq || eq == kv) {
			err("--label takes NAME=VALUE, not '%s'", kv);
			goto out;
		}
		char name[256];
		snprintf(name, sizeof(name), "%.*s", (int)(eq - kv), kv);
		cJSON_DeleteItemFromObjectCaseSensitive(labels, name); /* the last one wins */
		cJSON_AddStringToObject(labels, name, eq + 1);
		nlabels++;
	}
	if (!nlabels) {
		err("trigger needs at least one --label NAME=VALUE (the alert's labels)");
		goto out;
	}
	if (opt_get(c, "reason"))
		cJSON_AddStringToObject(body, "reason", opt_get(c, "reason"));
	if (wait && wait_arg(wait, WAIT_DEFAULT, &w) < 0)
		goto out;
	url_path(c, &u, "/trigger/");
	url_escaped(c, &u, c->pos[0]);
	if (opt_get(c, "dry-run"))
		url_param(c, &u, "dry_run", "1");
	if (opt_get(c, "force"))
		url_param(c, &u, "force", "1");
	if ((rc = api(c, "POST", sb_str(&u), body, 0, &doc, NULL)) != CTL_OK)
		goto out;
	if (c->json && !wait)
		print_json(doc);
	const cJSON *j;
	cJSON *records = cJSON_CreateArray();
	cJSON_ArrayForEach(j, cJSON_GetObjectItemCaseSensitive(doc, "jobs"))
	{
		const char *id = jstr(j, "id"), *st = jstr(j, "state");
		int waitable = id && st && (!strcmp(st, "queued") || !strcmp(st, "coalesced"));
		if (!c->json) {
			struct sb b = {0};
			add_text(&b, jstr(j, "playbook"), 200);
			SB_LIT(&b, ": ");
			add_state(c, &b, st);
			if (id) {
				SB_LIT(&b, " job ");
				add_text(&b, id, 64);
			}
			if (st && !strcmp(st, "cooldown"))
				SB_LIT(&b, " (the key rests after its last job; nothing started)");
			printf("%s\n", sb_str(&b));
			fflush(stdout);
			free(b.p);
		}
		if (!wait)
			continue;
		if (!waitable) { /* nothing ran */
			rc = rc > CTL_JOB_FAILED ? rc : CTL_JOB_FAILED;
			continue;
		}
		cJSON *rec = NULL;
		int r = follow(c, id, w, 1, &rec);
		if (rec && records)
			cJSON_AddItemToArray(records, rec);
		else
			cJSON_Delete(rec);
		if (r > rc)
			rc = r; /* of several jobs, the highest code */
	}
	if (c->json && wait && records) {
		int n = cJSON_GetArraySize(records);
		/* one job (the manual form's case): its record, as ?wait answers */
		print_json(n == 1 ? records->child : n > 1 ? records : doc);
	}
	cJSON_Delete(records);
out:
	cJSON_Delete(body);
	cJSON_Delete(doc);
	free(u.p);
	return rc;
}

/* GET the URL in u (freed here). With -o json the answer is printed and
 * *doc is NULL; else *doc is the answer, for the caller to print. */
static int get_doc(struct ctl *c, struct sb *u, cJSON **doc)
{
	int rc = api(c, "GET", sb_str(u), NULL, 0, doc, NULL);

	free(u->p);
	u->p = NULL;
	if (rc == CTL_OK && c->json) {
		print_json(*doc);
		cJSON_Delete(*doc);
		*doc = NULL;
	}
	return rc;
}

static int cmd_playbooks(struct ctl *c)
{
	struct sb u = {0};
	cJSON *doc;

	url_path(c, &u, "/api/v1/playbooks");
	int rc = get_doc(c, &u, &doc);
	if (rc != CTL_OK || !doc)
		return rc;
	const cJSON *list = cJSON_IsArray(doc) ? doc : cJSON_GetObjectItemCaseSensitive(doc, "playbooks"), *p, *m;
	struct table t = {7, {"NAME", "MATCH", "PAUSED", "RETRIES", "TIMEOUT", "BUDGET", "LAST"},
	                  {8, 8, 6, 7, 7, 6, 6}, 6, NULL, 0, 0};
	cJSON_ArrayForEach(p, list)
	{
		struct sb match = {0}, paused = {0}, budget = {0}, last = {0};
		char retries[32], timeout[32], per[32], ago[64];
		cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(p, "match"))
		{
			if (match.len)
				SB_LIT(&match, ", ");
			if (cJSON_IsString(m))
				sb_add(&match, m->valuestring, strlen(m->valuestring));
		}
		const cJSON *pz = cJSON_GetObjectItemCaseSensitive(p, "paused");
		if (cJSON_IsObject(pz)) /* "(all)": the pause of everything holds it */
			sb_printf(&paused, "%sby %s: %s", jstr(pz, "scope") && !strcmp(jstr(pz, "scope"), "*") ? "(all) " : "",
			          jstr(pz, "by") ? jstr(pz, "by") : "?", jstr(pz, "reason") ? jstr(pz, "reason") : "");
		snprintf(retries, sizeof(retries), "%d", (int)jnum(p, "retries", 0));
		ctl_format_duration(jnum(p, "timeout", 0), timeout, sizeof(timeout));
		const cJSON *bud = cJSON_GetObjectItemCaseSensitive(p, "budget");
		const cJSON *stats = cJSON_GetObjectItemCaseSensitive(p, "stats");
		ctl_format_duration(jnum(bud, "per", 0), per, sizeof(per));
		if (jnum(bud, "runs", 0) == 0) /* 0: no budget */
			SB_LIT(&budget, "unlimited");
		else if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(stats, "budget_used")))
			sb_printf(&budget, "%d/%d per %s", (int)jnum(stats, "budget_used", 0), (int)jnum(bud, "runs", 0), per);
		else
			sb_printf(&budget, "%d per %s", (int)jnum(bud, "runs", 0), per);
		const cJSON *lj = cJSON_GetObjectItemCaseSensitive(stats, "last_job");
		if (cJSON_IsObject(lj)) {
			const char *o = jstr(lj, "outcome") ? jstr(lj, "outcome") : jstr(lj, "state");
			fmt_ago(jstr(lj, "ended_at") ? jstr(lj, "ended_at") : jstr(lj, "created_at"), ago, sizeof(ago));
			sb_printf(&last, "%s %s", o ? o : "?", ago);
		}
		const char *cells[7] = {jstr(p, "name"), match.len ? sb_str(&match) : "(every alert)",
		                        paused.len ? sb_str(&paused) : "-", retries, timeout, sb_str(&budget),
		                        last.len ? sb_str(&last) : "-"};
		table_row(&t, cells);
		free(match.p);
		free(paused.p);
		free(budget.p);
		free(last.p);
	}
	table_print(c, &t);
	cJSON_Delete(doc);
	return CTL_OK;
}

static int cmd_audit(struct ctl *c)
{
	struct sb u = {0};
	char since[32];
	cJSON *doc;

	url_path(c, &u, "/api/v1/audit");
	url_param(c, &u, "principal", opt_get(c, "principal"));
	url_param(c, &u, "action", opt_get(c, "action"));
	url_param(c, &u, "since", since_arg(opt_get(c, "since"), since, sizeof(since)));
	url_param(c, &u, "limit", opt_get(c, "limit"));
	int rc = get_doc(c, &u, &doc);
	if (rc != CTL_OK || !doc)
		return rc;
	struct table t = {6, {"TIME", "PRINCIPAL", "ACTION", "PLAYBOOK", "JOB", "REASON"}, {8, 9, 6, 8, 12, 6}, -1,
	                  NULL, 0, 0};
	const cJSON *e;
	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(doc, "entries"))
	{
		char ts[64], who[256], job[72];
		fmt_time(jstr(e, "ts"), 1, ts, sizeof(ts));
		snprintf(who, sizeof(who), "%s (%s)", jstr(e, "principal") ? jstr(e, "principal") : "?",
		         jstr(e, "role") ? jstr(e, "role") : "?");
		short_id(c, jstr(e, "job_id"), job, sizeof(job));
		const char *reason = jstr(e, "reason") ? jstr(e, "reason") : jstr(e, "detail");
		const char *cells[6] = {ts, who, jstr(e, "action"), jstr(e, "playbook"), job, reason};
		table_row(&t, cells);
	}
	table_print(c, &t);
	if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(doc, "next")))
		err("more entries than shown: narrow with --since, --principal, --action, or raise --limit");
	cJSON_Delete(doc);
	return CTL_OK;
}

/* ---- command line ---- */

/* Options: "name" is a flag, "name=" takes a value, "name?" takes an
 * optional value when the next argument looks like one (a duration). */
struct cmd {
	const char *name;
	int (*fn)(struct ctl *);
	int minpos, maxpos;
	const char *opts[10];
	const char *synopsis, *help;
};

static int cmd_whoami(struct ctl *c)
{
	struct sb u = {0};
	cJSON *doc;
	const cJSON *pbs, *p;
	char clean[256];

	url_path(c, &u, "/api/v1/whoami");
	int rc = get_doc(c, &u, &doc);
	if (rc != CTL_OK || !doc)
		return rc;
	ctl_fit_text(jstr(doc, "name"), 64, clean, sizeof(clean));
	printf("%s (%s)", clean, jstr(doc, "role") ? jstr(doc, "role") : "?");
	pbs = cJSON_GetObjectItemCaseSensitive(doc, "playbooks");
	if (cJSON_IsArray(pbs)) {
		printf(", playbooks:");
		cJSON_ArrayForEach(p, pbs)
		{
			ctl_fit_text(cJSON_IsString(p) ? p->valuestring : "?", 128, clean, sizeof(clean));
			printf(" %s", clean);
		}
	}
	printf("\n");
	cJSON_Delete(doc);
	return CTL_OK;
}

static const struct cmd cmds[] = {
	{"jobs", cmd_jobs, 0, 0, {"state=", "playbook=", "alertname=", "since=", "limit=", "all"},
	 "jobs [--state S] [--playbook P] [--alertname A] [--since T] [--limit N] [--all]",
	 "List jobs, newest first. --since takes an RFC 3339 time, epoch seconds, or an age\n"
	 "(15m, 2h, 1d). --all follows the server's next pages (at most 100). -o wide shows\n"
	 "full ids and creation times."},
	{"job", cmd_job, 1, 1, {NULL}, "job ID",
	 "Show a job: its state, alert labels, each attempt with its actions, log, verify\n"
	 "result and error, its escalations, audit events, and its plan (approval jobs)."},
	{"watch", cmd_watch, 1, 1, {"wait="}, "watch ID [--wait SECONDS]",
	 "Follow a job until it ends, printing its timeline as it grows (one poll a second).\n"
	 "Exit 0 when it succeeded, 1 when it ended otherwise, 5 when --wait (default a day)\n"
	 "ran out first."},
	{"trigger", cmd_trigger, 1, 1, {"label=", "reason=", "dry-run", "wait?", "force"},
	 "trigger PLAYBOOK --label NAME=VALUE... [--reason R] [--dry-run] [--wait [SECONDS]] [--force]",
	 "Run a playbook on an alert made of the labels. --wait follows each job started\n"
	 "(default 300 s) and exits like watch; 5 also when the job awaits approval. --force\n"
	 "(admin, with --reason) skips cooldown and run budget."},
	{"cancel", cmd_cancel, 1, 1, {"reason="}, "cancel ID --reason R", "Stop a job's further attempts."},
	{"approve", cmd_approve, 1, 1, {"reason="}, "approve ID [--reason R]", "Run a held plan for real."},
	{"reject", cmd_reject, 1, 1, {"reason="}, "reject ID --reason R", "End a held plan without running it."},
	{"pause", cmd_pause, 0, 1, {"reason=", "for=", "until="},
	 "pause [PLAYBOOK] --reason R [--for DURATION | --until TIME]",
	 "Hold one playbook's alerts, or every playbook's without PLAYBOOK. Held alerts still\n"
	 "escalate. --for takes seconds or 90s, 15m, 2h, 1d; --until an RFC 3339 time."},
	{"resume", cmd_resume, 0, 1, {"reason="}, "resume [PLAYBOOK] [--reason R]",
	 "Lift the pause of one playbook, or of everything."},
	{"playbooks", cmd_playbooks, 0, 0, {NULL}, "playbooks",
	 "List the loaded playbooks: match, pause, retries, timeout, run budget, last job."},
	{"audit", cmd_audit, 0, 0, {"principal=", "action=", "since=", "limit="},
	 "audit [--principal P] [--action A] [--since T] [--limit N]", "Who did what, newest first."},
	{"whoami", cmd_whoami, 0, 0, {NULL}, "whoami",
	 "The principal of the token: its name, role, and the playbooks it is limited to."},
};

#define NCMDS (sizeof(cmds) / sizeof(cmds[0]))

static const char *const global_opts[] = {"url=", "token-file=", "output=", "timeout=", "help", NULL};

static void usage(FILE *f, const struct cmd *cmd)
{
	if (cmd) {
		fprintf(f, "usage: recoveryd ctl %s\n\n%s\n\nOptions of every command: see recoveryd ctl -h\n",
		        cmd->synopsis, cmd->help);
		return;
	}
	fprintf(f, "usage: recoveryd ctl [OPTIONS] COMMAND [ARGS]\n\nCommands:\n");
	for (size_t i = 0; i < NCMDS; i++)
		fprintf(f, "  %s\n", cmds[i].synopsis);
	fprintf(f,
	        "\nOptions (any command):\n"
	        "  --url URL          the server (env RECOVERYD_URL; default " DEFAULT_URL ")\n"
	        "  --token-file FILE  the bearer token (env RECOVERYD_TOKEN_FILE; none: no token sent)\n"
	        "  -o, --output FMT   table (default), wide (full ids, no truncation), json (the answer)\n"
	        "  --timeout SECONDS  for each request (default 30)\n"
	        "  -h, --help         this text; recoveryd ctl COMMAND -h: that command's\n"
	        "\nExit codes: 0 ok; 1 the job ended without success (watch, trigger --wait);\n"
	        "2 usage error; 3 the server refused (4xx); 4 server unavailable (connection,\n"
	        "5xx); 5 the job has not ended (the wait ran out, or it awaits approval).\n"
	        "Documentation: docs/ctl.md\n");
}

/* The spec of --name in list ("name", "name=" or "name?"), or NULL. */
static const char *find_opt(const char *const *list, size_t n, const char *name, size_t len)
{
	for (size_t i = 0; i < n && list[i]; i++)
		if (strcspn(list[i], "=?") == len && strncmp(list[i], name, len) == 0)
			return list[i];
	return NULL;
}

static int parse_args(struct ctl *c, int argc, char **argv, const struct cmd **cmd, int *help)
{
	int only_pos = 0;

	*cmd = NULL;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (only_pos || a[0] != '-' || a[1] == '\0') {
			if (!*cmd) {
				for (size_t k = 0; k < NCMDS; k++)
					if (!strcmp(cmds[k].name, a))
						*cmd = &cmds[k];
				if (!*cmd) {
					err("unknown command '%s' (see recoveryd ctl -h)", a);
					return -1;
				}
				c->cmd = a;
			} else if (c->npos < ARGS_MAX) {
				c->pos[c->npos++] = a;
			}
			continue;
		}
		if (!strcmp(a, "--")) {
			only_pos = 1;
			continue;
		}
		if (!strcmp(a, "-h")) {
			*help = 1;
			continue;
		}
		char tmp[64];
		const char *name = a + 2, *val = NULL, *eq;
		if (!strcmp(a, "-o"))
			name = "output";
		else if (a[1] != '-') {
			err("unknown option '%s' (see recoveryd ctl -h)", a);
			return -1;
		}
		size_t len = (eq = strchr(name, '=')) ? (size_t)(eq - name) : strlen(name);
		const char *spec = find_opt(global_opts, 99, name, len);
		if (!spec && *cmd)
			spec = find_opt((*cmd)->opts, 10, name, len);
		snprintf(tmp, sizeof(tmp), "%.*s", (int)len, name);
		if (!spec) {
			if (*cmd)
				err("unknown option '--%s' for %s (see recoveryd ctl %s -h)", tmp, (*cmd)->name, (*cmd)->name);
			else
				err("unknown option '--%s' (see recoveryd ctl -h)", tmp);
			return -1;
		}
		char kind = spec[len];
		if (eq && kind == '\0') {
			err("--%s takes no value", tmp);
			return -1;
		}
		if (eq)
			val = eq + 1;
		else if (kind == '=') {
			if (i + 1 >= argc) {
				err("--%s needs a value", tmp);
				return -1;
			}
			val = argv[++i];
		} else if (kind == '?' && i + 1 < argc && isdigit((unsigned char)argv[i + 1][0])) {
			val = argv[++i];
		}
		if (!strcmp(tmp, "help")) {
			*help = 1;
			continue;
		}
		if (c->nopts == ARGS_MAX) {
			err("too many options");
			return -1;
		}
		snprintf(c->opts[c->nopts].name, sizeof(c->opts[0].name), "%s", tmp);
		c->opts[c->nopts++].val = val;
	}
	return 0;
}

static int setup(struct ctl *c, const struct cmd *cmd)
{
	const char *url = opt_get(c, "url"), *tf = opt_get(c, "token-file"), *out = opt_get(c, "output");
	const char *to = opt_get(c, "timeout");
	struct winsize ws;

	if (c->npos < cmd->minpos || c->npos > cmd->maxpos) {
		err("usage: recoveryd ctl %s", cmd->synopsis);
		return CTL_USAGE;
	}
	if (!url)
		url = getenv("RECOVERYD_URL");
	if (!url || !*url)
		url = DEFAULT_URL;
	size_t n = strlen(url);
	while (n > 0 && url[n - 1] == '/')
		n--;
	if ((strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0) || n >= sizeof(c->base) ||
	    strpbrk(url, " \t\r\n?#")) {
		err("--url wants http://HOST:PORT or https://..., not '%s'", url);
		return CTL_USAGE;
	}
	snprintf(c->base, sizeof(c->base), "%.*s", (int)n, url);
	if (!tf)
		tf = getenv("RECOVERYD_TOKEN_FILE");
	if (tf && *tf) {
		size_t len;
		c->token = rd_read_file(tf, TOKEN_MAX, &len, 1);
		if (!c->token) {
			err("token file %s: %s", tf, strerror(errno));
			return CTL_USAGE;
		}
		if (!*c->token || strpbrk(c->token, "\r\n")) {
			err("token file %s: %s", tf, *c->token ? "holds more than one line" : "is empty");
			return CTL_USAGE;
		}
	}
	if (out) {
		if (!strcmp(out, "json"))
			c->json = 1;
		else if (!strcmp(out, "wide"))
			c->wide = 1;
		else if (strcmp(out, "table") != 0) {
			err("-o takes table, wide or json, not '%s'", out);
			return CTL_USAGE;
		}
	}
	c->timeout = DEFAULT_TIMEOUT;
	if (to && ctl_parse_duration(to, &c->timeout) < 0) {
		err("--timeout takes seconds, not '%s'", to);
		return CTL_USAGE;
	}
	const char *cols = getenv("COLUMNS"), *nc = getenv("NO_COLOR");
	long cl = cols ? strtol(cols, NULL, 10) : 0;
	if (cl > 0 && cl < 10000)
		c->cols = (size_t)cl;
	else if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		c->cols = ws.ws_col;
	else
		c->cols = 80;
	c->color = isatty(STDOUT_FILENO) && !(nc && *nc);
	return CTL_OK;
}

int ctl_main(int argc, char **argv)
{
	struct ctl *c = calloc(1, sizeof(*c));
	const struct cmd *cmd = NULL;
	int help = 0, rc;

	if (!c) {
		err("out of memory");
		return CTL_UNAVAILABLE;
	}
	if (parse_args(c, argc, argv, &cmd, &help) < 0) {
		rc = CTL_USAGE;
		goto out;
	}
	if (help || !cmd) {
		usage(help ? stdout : stderr, cmd);
		rc = help ? CTL_OK : CTL_USAGE;
		goto out;
	}
	if ((rc = setup(c, cmd)) != CTL_OK)
		goto out;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(c->curl = curl_easy_init())) {
		err("cannot initialise libcurl");
		rc = CTL_UNAVAILABLE;
		goto out;
	}
	rc = cmd->fn(c);
	curl_easy_cleanup(c->curl);
	curl_global_cleanup();
out:
	fflush(stdout);
	if (c->token) {
		explicit_bzero(c->token, strlen(c->token));
		free(c->token);
	}
	free(c);
	return rc;
}

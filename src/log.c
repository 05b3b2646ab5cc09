/* Structured JSON-lines logging. Each line is built in a bounded buffer and
 * handed to the kernel with one write(2), so concurrent lines never mix and
 * a huge field cannot make a line (or memory) grow without bound. */
#include "recoveryd/log.h"
#include "recoveryd/common.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Whole line cap, newline included; well below the 64 KiB pipe buffer. */
#define LOG_LINE_MAX 16384
/* Per-value cap, so one huge field still leaves room for the next ones. */
#define LOG_VALUE_MAX 8192
/* Appended to a cut value; ASCII so it can never split a character. */
#define LOG_TRUNC_MARK "...[truncated]"
#define LOG_MARK_LEN (sizeof(LOG_TRUNC_MARK) - 1)
/* Keys and job ids are identifiers, never long. */
#define LOG_KEY_MAX 256

static atomic_int min_level = LOG_INFO;
static atomic_int out_fd = 2;
/* Serialises write(2) so lines longer than PIPE_BUF, or partial writes,
 * still never interleave between our own threads. */
static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;

/* Lives on the logging thread's stack: no allocation, no shared buffer. */
struct line {
	char p[LOG_LINE_MAX];
	size_t len;
	size_t cap;  /* usable bytes: the closing "}\n" always fits after */
};

void log_set_level(enum log_level min)
{
	atomic_store(&min_level, (int)min);
}

void log_set_fd(int fd)
{
	atomic_store(&out_fd, fd);
}

const char *log_level_name(enum log_level lvl)
{
	switch (lvl) {
	case LOG_DEBUG:
		return "debug";
	case LOG_INFO:
		return "info";
	case LOG_WARN:
		return "warn";
	case LOG_ERROR:
		return "error";
	case LOG_OFF:
		break;
	}
	return "unknown";
}

/* Append raw bytes: 0, or -1 (and nothing written) when they do not fit. */
static int line_raw(struct line *l, const char *s, size_t n)
{
	if (n > l->cap - l->len)
		return -1;
	memcpy(l->p + l->len, s, n);
	l->len += n;
	return 0;
}

/* JSON form of the character at s[0] (n bytes left): sets *out and *olen (esc
 * is scratch space of >= 6 bytes) and returns how many input bytes it
 * consumed. Control characters become \u00XX (short forms for the common
 * ones), invalid UTF-8 becomes U+FFFD, valid UTF-8 passes through. */
static size_t json_char(const unsigned char *s, size_t n, char *esc, const char **out, size_t *olen)
{
	static const char hex[] = "0123456789abcdef";
	size_t len;

	*olen = 2;
	switch (s[0]) {
	case '"':
		*out = "\\\"";
		return 1;
	case '\\':
		*out = "\\\\";
		return 1;
	case '\n':
		*out = "\\n";
		return 1;
	case '\r':
		*out = "\\r";
		return 1;
	case '\t':
		*out = "\\t";
		return 1;
	}
	if (s[0] < 0x20) {
		memcpy(esc, "\\u00", 4);
		esc[4] = hex[s[0] >> 4];
		esc[5] = hex[s[0] & 15];
		*out = esc;
		*olen = 6;
		return 1;
	}
	len = rd_utf8_len(s, n);
	if (!len) {
		*out = "\xef\xbf\xbd";
		*olen = 3;
		return 1;
	}
	*out = (const char *)s;
	*olen = len;
	return len;
}

/* Append str[0..n) as a JSON string taking at most max bytes with its
 * quotes. A value that does not fit is cut at a character boundary and
 * ends in LOG_TRUNC_MARK. 0, or -1 (nothing written) when not even the
 * marker fits. */
static int line_str(struct line *l, const char *str, size_t n, size_t max)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t budget = l->cap - l->len, need = 0, i, step, olen;
	const char *out;
	char esc[8];

	if (budget > max)
		budget = max;
	if (budget < LOG_MARK_LEN + 2)
		return -1;
	budget -= 2;
	/* Most values are plain ASCII that needs no escaping: one copy. */
	for (i = 0; i < n && s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\'; i++)
		;
	if (i == n && n <= budget) {
		l->p[l->len++] = '"';
		memcpy(l->p + l->len, s, n);
		l->len += n;
		l->p[l->len++] = '"';
		return 0;
	}
	/* First pass: does the whole value fit? */
	for (i = 0; i < n && need <= budget; i += step) {
		step = json_char(s + i, n - i, esc, &out, &olen);
		need += olen;
	}
	if (need <= budget)
		budget = SIZE_MAX;
	else
		budget -= LOG_MARK_LEN;
	l->p[l->len++] = '"';
	for (i = 0, need = 0; i < n; i += step) {
		step = json_char(s + i, n - i, esc, &out, &olen);
		if (need + olen > budget)
			break;
		memcpy(l->p + l->len, out, olen);
		l->len += olen;
		need += olen;
	}
	if (i < n) {
		memcpy(l->p + l->len, LOG_TRUNC_MARK, LOG_MARK_LEN);
		l->len += LOG_MARK_LEN;
	}
	l->p[l->len++] = '"';
	return 0;
}

static int line_cstr(struct line *l, const char *s, size_t max)
{
	return line_str(l, s, strlen(s), max);
}

/* Names the fixed part of the line uses; a field with one of them is
 * written as "_name" so log processors never see a duplicate key that
 * would silently override ts or level. */
static int reserved_key(const char *k)
{
	return !strcmp(k, "ts") || !strcmp(k, "level") || !strcmp(k, "msg") || !strcmp(k, "job");
}

/* ,"key": -- all or nothing: 0, or -1 when it does not fit. */
static int line_key(struct line *l, const char *key)
{
	size_t save = l->len;
	char tmp[LOG_KEY_MAX + 2];

	if (reserved_key(key)) {
		snprintf(tmp, sizeof(tmp), "_%s", key);
		key = tmp;
	}
	if (line_raw(l, ",", 1) < 0 || line_str(l, key, strlen(key), LOG_KEY_MAX) < 0 ||
	    line_raw(l, ":", 1) < 0) {
		l->len = save;
		return -1;
	}
	return 0;
}

/* One string field; NULL becomes JSON null. 0, or -1 (nothing written)
 * when the line is full. */
static int line_field_str(struct line *l, const char *key, const char *val)
{
	size_t save = l->len;

	if (line_key(l, key) < 0)
		return -1;
	if ((val ? line_cstr(l, val, LOG_VALUE_MAX) : line_raw(l, "null", 4)) == 0)
		return 0;
	l->len = save;
	return -1;
}

/* One field from a cJSON item: strings escaped, anything else as its JSON
 * text; JSON too long to fit is logged as a truncated string instead.
 * 0, or -1 (nothing written) when the line is full. */
static int line_field_json(struct line *l, const cJSON *item)
{
	size_t save = l->len, room;
	char *txt;
	int rc;

	if (cJSON_IsString(item))
		return line_field_str(l, item->string, item->valuestring);
	if (line_key(l, item->string) < 0)
		return -1;
	txt = cJSON_PrintUnformatted(item);
	if (!txt) {
		rc = line_raw(l, "null", 4);
	} else {
		size_t n = strlen(txt);
		room = l->cap - l->len;
		if (room > LOG_VALUE_MAX)
			room = LOG_VALUE_MAX;
		rc = n <= room ? line_raw(l, txt, n) : line_str(l, txt, n, LOG_VALUE_MAX);
		free(txt);
	}
	if (rc < 0)
		l->len = save;
	return rc;
}

static void line_begin(struct line *l, enum log_level lvl, const char *job, const char *msg)
{
	char ts[32];

	l->len = 0;
	l->cap = sizeof(l->p) - 2;
	rd_time_format(rd_now(), ts, sizeof(ts));
	/* ts and level are short and fixed; they always fit. */
	line_raw(l, "{\"ts\":\"", 7);
	line_raw(l, ts, strlen(ts));
	line_raw(l, "\",\"level\":\"", 11);
	line_raw(l, log_level_name(lvl), strlen(log_level_name(lvl)));
	line_raw(l, "\",\"msg\":", 8);
	line_cstr(l, msg ? msg : "", LOG_VALUE_MAX);
	if (job) {
		size_t save = l->len;
		if (line_raw(l, ",\"job\":", 7) < 0 || line_cstr(l, job, LOG_KEY_MAX) < 0)
			l->len = save;
	}
}

static void line_emit(struct line *l)
{
	size_t off = 0;
	int fd = atomic_load(&out_fd);

	/* cap leaves these two bytes free. */
	l->p[l->len++] = '}';
	l->p[l->len++] = '\n';
	pthread_mutex_lock(&write_lock);
	while (off < l->len) {
		ssize_t r = write(fd, l->p + off, l->len - off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			break; /* nowhere left to report a logging failure */
		}
		off += (size_t)r;
	}
	pthread_mutex_unlock(&write_lock);
}

static int enabled(enum log_level lvl)
{
	return (int)lvl >= atomic_load(&min_level);
}

void log_kv(enum log_level lvl, const char *job, const char *msg, ...)
{
	struct line l;
	const char *key;
	va_list ap;

	if (!enabled(lvl))
		return;
	line_begin(&l, lvl, job, msg);
	va_start(ap, msg);
	while ((key = va_arg(ap, const char *))) {
		const char *val = va_arg(ap, const char *);
		/* Keep consuming pairs after the line is full: nothing else to do. */
		line_field_str(&l, key, val);
	}
	va_end(ap);
	line_emit(&l);
}

void log_json(enum log_level lvl, const char *job, const char *msg, const cJSON *fields)
{
	struct line l;
	const cJSON *it;

	if (!enabled(lvl))
		return;
	line_begin(&l, lvl, job, msg);
	if (cJSON_IsObject(fields)) {
		cJSON_ArrayForEach(it, fields) {
			if (it->string)
				line_field_json(&l, it);
		}
	}
	line_emit(&l);
}

/* Shared outcome codes and small helpers used by every module. */
#ifndef RECOVERYD_COMMON_H
#define RECOVERYD_COMMON_H

#include <stddef.h>
#include <time.h>

#define RECOVERYD_VERSION "0.1.0"

/* Explicit outcomes instead of magic ints (HAProxy style). */
enum rd_status {
	RD_OK = 0,
	RD_AGAIN,   /* not finished yet: come back later */
	RD_TIMEOUT, /* a deadline passed */
	RD_NOMEM,   /* an allocation or a size cap failed */
	RD_ERR,     /* anything else; the message says what */
	RD_FENCED   /* refused: the lease it relied on is another owner's now */
};

/* Wall-clock seconds since the epoch, with sub-second precision. */
double rd_now(void);
/* Monotonic seconds, for deadlines and durations. */
double rd_mono(void);
/* The absolute time secs (>= 0) from now on clock, for
 * pthread_cond_timedwait (the clock the condition variable uses). */
void rd_timespec_in(clockid_t clock, double secs, struct timespec *ts);
/* Format an epoch time as RFC 3339 UTC with milliseconds into buf (>= 32 bytes). */
void rd_time_format(double epoch, char *buf, size_t len);
/* An RFC 3339 time ("2026-12-02T10:00:00Z", offsets and fractions allowed)
 * or epoch seconds ("1796205600") into *out: 0, or -1. */
int rd_parse_time(const char *s, double *out);
/* Constant-time comparison of two byte strings; 1 when equal. */
int rd_ct_equal(const char *a, size_t alen, const char *b, size_t blen);
/* Read a whole file (at most max bytes) into a NUL-terminated malloc'd buffer;
 * trailing whitespace trimmed when trim != 0. NULL on error (errno set). */
char *rd_read_file(const char *path, size_t max, size_t *len, int trim);
/* Length of the valid UTF-8 sequence at s (at most n bytes available), or
 * 0 when it is not one (overlongs, surrogates, > U+10FFFF rejected). On a
 * NUL-terminated string any n works: a NUL never continues a sequence. */
size_t rd_utf8_len(const unsigned char *s, size_t n);
/* Random hex id of 2*nbytes characters into out (size >= 2*nbytes+1). */
/* The word of known (NULL-terminated) closest to word, for "did you
 * mean": at most 2 edits away and fewer than half its length, or NULL. */
const char *rd_closest(const char *word, const char *const *known);
void rd_random_hex(char *out, size_t nbytes);
/* cJSON ends its strings at a NUL, so a JSON string holding \u0000 (or a raw
 * 0 byte) would reach C cut short. Scan JSON text for one: returns 1 and
 * sets *at (byte offset) and field (the object key the string belongs to,
 * or the key itself; "" at the top level or in an array without a key)
 * when found, else 0. Does not validate the JSON. */
int rd_json_find_nul(const char *s, size_t n, size_t *at, char *field, size_t fieldlen);

/* A uniform random number in [0, 1) for backoff jitter (getrandom; the
 * clock when that fails). */
double rd_random_unit(void);
/* A Prometheus label name: [a-zA-Z_][a-zA-Z0-9_]*. */
int rd_label_name_valid(const char *s);

#endif

/* Small helpers shared by every module: clocks, time formatting, constant-time
 * compare, capped file reads, random ids. */
#include "recoveryd/common.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

double rd_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

double rd_mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void rd_timespec_in(clockid_t clock, double secs, struct timespec *ts)
{
	clock_gettime(clock, ts);
	ts->tv_sec += (time_t)secs;
	ts->tv_nsec += (long)((secs - (double)(time_t)secs) * 1e9);
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

void rd_time_format(double epoch, char *buf, size_t len)
{
	time_t secs = (time_t)epoch;
	int ms = (int)((epoch - (double)secs) * 1000.0);
	struct tm tm;

	if (ms < 0)
		ms = 0;
	if (ms > 999)
		ms = 999;
	gmtime_r(&secs, &tm);
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

int rd_ct_equal(const char *a, size_t alen, const char *b, size_t blen)
{
	/* Walk the longer length so timing does not reveal the common prefix;
	 * the length difference is folded into the result. */
	size_t n = alen > blen ? alen : blen;
	unsigned char diff = (unsigned char)(alen != blen);

	for (size_t i = 0; i < n; i++) {
		unsigned char x = i < alen ? (unsigned char)a[i] : 0;
		unsigned char y = i < blen ? (unsigned char)b[i] : 0;
		diff |= x ^ y;
	}
	return diff == 0;
}

char *rd_read_file(const char *path, size_t max, size_t *len, int trim)
{
	char *buf = NULL;
	size_t used = 0, cap = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	for (;;) {
		if (used + 1 >= cap) {
			size_t ncap = cap ? cap * 2 : 4096;
			char *nb;
			if (ncap > max + 1)
				ncap = max + 1;
			if (ncap <= used + 1) {
				errno = EFBIG;
				goto fail;
			}
			nb = realloc(buf, ncap);
			if (!nb)
				goto fail;
			buf = nb;
			cap = ncap;
		}
		ssize_t r = read(fd, buf + used, cap - used - 1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		if (r == 0)
			break;
		used += (size_t)r;
	}
	close(fd);
	if (!buf && !(buf = malloc(1)))
		return NULL;
	buf[used] = '\0';
	if (trim)
		while (used > 0 && strchr(" \t\r\n", buf[used - 1]))
			buf[--used] = '\0';
	if (len)
		*len = used;
	return buf;
fail:
	{
		int e = errno;
		close(fd);
		free(buf);
		errno = e;
	}
	return NULL;
}

void rd_random_hex(char *out, size_t nbytes)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char b[64];

	if (nbytes > sizeof(b))
		nbytes = sizeof(b);
	if (getrandom(b, nbytes, 0) != (ssize_t)nbytes) {
		/* getrandom cannot fail for small sizes once the pool is ready;
		 * fall back to a time-seeded value rather than aborting. */
		unsigned long x = (unsigned long)(rd_mono() * 1e9) ^ (unsigned long)getpid();
		for (size_t i = 0; i < nbytes; i++, x = x * 6364136223846793005UL + 1)
			b[i] = (unsigned char)(x >> 33);
	}
	for (size_t i = 0; i < nbytes; i++) {
		out[2 * i] = hex[b[i] >> 4];
		out[2 * i + 1] = hex[b[i] & 15];
	}
	out[2 * nbytes] = '\0';
}

/* Length of the valid UTF-8 sequence at s (n bytes available), 0 if
 * invalid. Rejects overlongs, surrogates and code points above U+10FFFF so
 * the output is always valid UTF-8. */
size_t rd_utf8_len(const unsigned char *s, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (len > n)
		return 0;
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

static int hex4_zero(const char *p, const char *end)
{
	if (end - p < 4)
		return 0;
	for (int i = 0; i < 4; i++)
		if (p[i] != '0')
			return 0;
	return 1;
}

int rd_json_find_nul(const char *s, size_t n, size_t *at, char *field, size_t fieldlen)
{
	const char *p = s, *end = s + n;
	const char *str = NULL;     /* start of the string being read */
	const char *key = NULL;     /* the last object key, and its length */
	size_t keylen = 0;

	/* The webhook path scans every body: without a raw 0 byte or the text
	 * \u0000 (JSON hex digits of 0 have no case) there is nothing to find. */
	if (!memchr(s, '\0', n) && !memmem(s, n, "\\u0000", 6))
		return 0;
	while (p < end) {
		if (!str) {
			if (*p == '"')
				str = p + 1;
			else if (*p == '\0')
				goto found;
			p++;
			continue;
		}
		if (*p == '\\') {
			if (p + 1 < end && p[1] == 'u' && hex4_zero(p + 2, end))
				goto found;
			p += 2; /* the escaped character is never the closing quote */
			continue;
		}
		if (*p == '\0')
			goto found;
		if (*p == '"') {
			const char *q = p + 1;
			while (q < end && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n'))
				q++;
			if (q < end && *q == ':') {
				key = str;
				keylen = (size_t)(p - str);
			}
			str = NULL;
		}
		p++;
	}
	return 0;
found:
	*at = (size_t)(p - s);
	if (fieldlen) {
		/* A NUL inside a key names that key (up to the NUL). */
		const char *k = str ? str : key;
		size_t kl = str ? (size_t)(p - str) : keylen;
		if (str) {
			const char *q = p;
			/* is this string a key? find its end and a ':' after it */
			while (q < end && *q != '"')
				q += *q == '\\' ? 2 : 1;
			for (q++; q < end && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n'); q++)
				;
			if (!(q < end && *q == ':')) {
				k = key;
				kl = keylen;
			}
		}
		if (!k)
			kl = 0;
		if (kl >= fieldlen)
			kl = fieldlen - 1;
		memcpy(field, k ? k : "", kl);
		field[kl] = '\0';
	}
	return 1;
}

double rd_random_unit(void)
{
	unsigned int x = 0;
	if (getrandom(&x, sizeof(x), 0) != sizeof(x))
		x = (unsigned int)(rd_mono() * 1e6);
	return (double)x / 4294967296.0;
}

int rd_label_name_valid(const char *s)
{
	if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
		return 0;
	for (s++; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_'))
			return 0;
	return 1;
}

/* n decimal digits at s into *v: 0, or -1 (a NUL is no digit, so this
 * never reads past the string). */
static int parse_digits(const char *s, int n, int *v)
{
	*v = 0;
	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		*v = *v * 10 + (s[i] - '0');
	}
	return 0;
}

int rd_parse_time(const char *s, double *out)
{
	static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	struct tm tm;
	const char *p;
	char *end;
	double frac = 0, v;
	long off = 0;
	int y, mo, d, h, mi, sec, oh, om;
	size_t n;
	time_t t;

	if (!s || !*s)
		return -1;
	if (!strchr(s, '-')) {
		/* epoch seconds: digits and maybe a fraction; strtod alone would
		 * also take hex, exponents and blanks */
		n = strspn(s, "0123456789");
		if (n == 0 || (s[n] && (s[n] != '.' || s[n + 1 + strspn(s + n + 1, "0123456789")])))
			return -1;
		errno = 0;
		v = strtod(s, &end);
		if (errno || *end)
			return -1;
		*out = v;
		return 0;
	}
	/* YYYY-MM-DDTHH:MM:SS, each field its exact width (strptime takes
	 * blanks and short fields) */
	if (parse_digits(s, 4, &y) || s[4] != '-' || parse_digits(s + 5, 2, &mo) || s[7] != '-' ||
	    parse_digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
	    parse_digits(s + 11, 2, &h) || s[13] != ':' || parse_digits(s + 14, 2, &mi) ||
	    s[16] != ':' || parse_digits(s + 17, 2, &sec))
		return -1;
	/* timegm would roll 2026-02-30 over into March; 60 is a leap second */
	if (mo < 1 || mo > 12 || d < 1 ||
	    d > mdays[mo - 1] + (mo == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)) ||
	    h > 23 || mi > 59 || sec > 60)
		return -1;
	p = s + 19;
	if (*p == '.') {
		n = strspn(p + 1, "0123456789");
		if (n == 0)
			return -1;
		frac = strtod(p, &end);
		p += 1 + n;
		if (end != p) /* an exponent */
			return -1;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if ((*p == '+' || *p == '-') && !parse_digits(p + 1, 2, &oh) && p[3] == ':' &&
	           !parse_digits(p + 4, 2, &om) && oh <= 23 && om <= 59) {
		off = oh * 3600L + om * 60L;
		if (*p == '-')
			off = -off;
		p += 6;
	} else {
		return -1;
	}
	if (*p)
		return -1;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = timegm(&tm);
	if (t == (time_t)-1)
		return -1;
	*out = (double)t - (double)off + frac;
	return 0;
}

/* Levenshtein distance, capped: short words only (field names). */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[65];

	if (la > 64 || lb > 64)
		return (size_t)-1;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			diag = up;
			row[j] = best;
		}
	}
	return row[lb];
}

const char *rd_closest(const char *word, const char *const *known)
{
	const char *best = NULL;
	size_t bd = 3;

	for (; word && *known; known++) {
		size_t d = edit_distance(word, *known);
		if (d < bd && 2 * d < strlen(*known)) {
			bd = d;
			best = *known;
		}
	}
	return best;
}

/* `recoveryd ctl`: the command-line client of the HTTP API (docs/ctl.md).
 * It speaks only HTTP to a running recoveryd; nothing here touches the
 * daemon's own state. The helpers below are pure and exported for tests. */
#ifndef RECOVERYD_CTL_H
#define RECOVERYD_CTL_H

#include <stddef.h>
#include <stdio.h>
#include <cjson/cJSON.h>

/* Exit codes a script can rely on (docs/ctl.md). */
enum ctl_exit {
	CTL_OK = 0,
	CTL_JOB_FAILED = 1,  /* watch / trigger --wait: the job ended without success */
	CTL_USAGE = 2,       /* bad command line */
	CTL_REFUSED = 3,     /* the server answered 4xx */
	CTL_UNAVAILABLE = 4, /* connection failed, 5xx, or an answer that is not the API's */
	CTL_NOT_ENDED = 5    /* the wait ran out, or the job awaits approval */
};

/* Run `recoveryd ctl ARGS...`; argv[0] is the first argument after "ctl".
 * Returns an enum ctl_exit. */
int ctl_main(int argc, char **argv);

/* Print a job record as `ctl job` does (the timeline) to out; color:
 * state colours. `recoveryd run` prints its jobs with it. */
void ctl_print_job(const cJSON *rec, FILE *out, int color);

/* Terminal columns taken by a UTF-8 string: one per code point (invalid
 * bytes count one each). */
size_t ctl_display_width(const char *s);

/* Copy s into out (outlen > 0), printable and at most width columns: control
 * characters (C0, DEL, C1) and invalid UTF-8 become '?', a longer string is
 * cut at a code point and ends with an ellipsis. */
void ctl_fit_text(const char *s, size_t width, char *out, size_t outlen);

/* Shrink the columns of a table (gap columns between each two) until it
 * fits in total columns: the widest column, never below minw[i], gives one
 * at a time, so the widest ones end up equal. Returns the width it takes. */
size_t ctl_fit_columns(size_t *widths, const size_t *minw, size_t n, size_t gap, size_t total);

/* Seconds as the two largest units, a zero second unit left out: "45s",
 * "3m20s", "1h", "2h05m", "3d4h". Negative seconds print as their absolute. */
void ctl_format_duration(double secs, char *buf, size_t len);

/* "90", "90s", "15m", "2h", "1d" into seconds (> 0): 0, or -1. */
int ctl_parse_duration(const char *s, double *out);

/* The target of rel="next" in a Link header value, resolved against the URL
 * the page came from, into out. Only a target on the same scheme, host and
 * port is taken, so the token never goes elsewhere. 1 when found, 0 when
 * there is none, -1 when it is refused (another origin, an unusable
 * reference, or it does not fit). */
int ctl_next_link(const char *link, const char *page_url, char *out, size_t outlen);

#endif

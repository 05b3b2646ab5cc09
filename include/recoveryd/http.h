/* The HTTP API of DESIGN.md §3 on libmicrohttpd. */
#ifndef RECOVERYD_HTTP_H
#define RECOVERYD_HTTP_H

#include <stddef.h>
#include "recoveryd/common.h"

struct auth;
struct engine;
struct http;

/* The defaults of the flags (config.c starts from these too); a zero in
 * http_config means the default. */
#define HTTP_BODY_MAX_DEFAULT ((size_t)4 << 20)
#define HTTP_CONN_LIMIT_DEFAULT 10000
#define HTTP_CONN_TIMEOUT_DEFAULT 30    /* 0 would mean "never" to MHD */
#define HTTP_REQUEST_TIMEOUT_DEFAULT 15 /* seconds for a request's headers and body */

struct http_config {
	const char *listen;          /* "ADDR:PORT"; port 0 = any free port */
	size_t body_max;             /* bytes; larger bodies get 413 */
	struct auth *auth;           /* taken, even on failure; NULL or empty = no principal */
	int insecure_no_auth;        /* allow running with no tokens at all */
	unsigned conn_limit;         /* simultaneous connections */
	unsigned per_ip_limit;       /* simultaneous connections per client IP */
	unsigned conn_timeout;       /* seconds of inactivity before hang-up */
	double request_timeout;      /* seconds for a request's headers and body; 0 = default */
	const char *job_url_base;    /* unused by http itself; for links */
};

/* Bind and start serving. On success *out is set and *port is the bound
 * port (useful with port 0). */
enum rd_status http_start(const struct http_config *cfg, struct engine *e, struct http **out,
                          unsigned *port, char *err, size_t errlen);
/* Swap the principals after a reload (takes auth). */
void http_set_auth(struct http *h, struct auth *auth);
/* Answer what is parked or queued, stop listening and close every
 * connection; NULL is fine. */
void http_stop(struct http *h);

#endif

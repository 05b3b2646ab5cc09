/* Operations an attempt's coroutine waits on (sleep, HTTP, exec) and the
 * escalation transfers of the outbox, with the bounded buffers they fill.
 * The recovery module (lua_api, lua_http, lua_exec) makes a job's ops; the
 * runner drives them on its loop. The module reaches the runner only
 * through the struct op_host the runner puts into each job (job->host), so
 * it never includes the runner's header.
 *
 * Ownership: an op belongs to its maker until op_host.begin accepts it,
 * then to the runner, which calls finish once and frees it (with free_ctx
 * for ctx). */
#ifndef RECOVERYD_OP_H
#define RECOVERYD_OP_H

#include <stddef.h>
#include <sys/types.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <lua.h>

struct job;

/* A growing byte buffer, NUL-terminated, with a size cap (max; 0 = none). */
struct rbuf {
	char *p;
	size_t len, cap, max;
	int truncated;
};

/* Append n bytes, up to the cap: what does not fit is dropped and marks
 * the buffer truncated. Returns 0, or -1 when bytes were dropped or memory
 * ran out. */
int rbuf_append(struct rbuf *b, const char *p, size_t n);
/* Free the bytes and zero the buffer (it may be reused). */
void rbuf_free(struct rbuf *b);

enum op_kind { OP_SLEEP, OP_HTTP, OP_EXEC };

struct op {
	enum op_kind kind;
	struct job *job;
	double started;         /* rd_mono() */
	double deadline;        /* rd_mono(); 0 = the attempt's */
	int timed_out;
	/* http */
	CURL *easy;
	struct curl_slist *headers;
	char *body;
	struct rbuf resp, resp_headers;
	CURLcode cc;
	char errbuf[CURL_ERROR_SIZE];
	/* exec */
	pid_t pid;
	int pidfd, out_fd, err_fd;
	int exited, wstatus;
	struct rbuf out, err;
	long long timer;        /* the runner's loop timer for it (deadline, poll); 0 = none */
	/* Push the Lua results of the finished op onto co; returns their count.
	 * Also records the action. Called once, on the runner thread. */
	int (*finish)(lua_State *co, struct op *op);
	void *ctx;              /* the maker's data (action detail), freed by finish/free */
	void (*free_ctx)(void *ctx);
};

/* What the runner offers the recovery module for a job's attempt. The
 * runner sets job->host when it takes the job; every call is made on the
 * runner thread, from the attempt's Lua code. */
struct op_host {
	/* Begin waiting on op (whose maker set kind and its fields) for job j;
	 * the calling C function must then return lua_yield(L, 0). Returns 0
	 * (op now belongs to the runner), or -1 with err set (op stays the
	 * caller's). */
	int (*begin)(struct job *j, struct op *op, char *err, size_t errlen);
	/* The running attempt's deadline (rd_mono seconds). */
	double (*deadline)(struct job *j);
	/* The lua_State thread the attempt runs in (yields are only allowed
	 * from it), or NULL. */
	lua_State *(*thread)(struct job *j);
	/* Record into the journal (async, ordered). detail is consumed. */
	void (*record)(struct job *j, const char *type, cJSON *detail, int planned);
};

#endif

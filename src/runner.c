/* The runner: attempts of recovery jobs on one thread, as a client of the
 * generic event loop (loop.c): sleeps are loop timers, recovery.http
 * transfers loop transfers, recovery.exec children loop descriptors (pipes
 * and pidfds). Each attempt is a coroutine in its own sandboxed lua_State
 * that yields on those and is resumed by their callbacks. What a loop turn
 * must persist goes to the journal as one batch; a job goes on when its
 * batch's commit completes, so the loop never waits on the journal. */
#include "recoveryd/runner.h"
#include "recoveryd/watchdog.h"

#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recoveryd/job.h"
#include "recoveryd/log.h"
#include "recoveryd/loop.h"
#include "recoveryd/lua_api.h"
#include "recoveryd/lua_exec.h"
#include "recoveryd/lua_json.h"
#include "recoveryd/metrics.h"
#include "recoveryd/playbook.h"
#include "recoveryd/sandbox.h"
#include "recoveryd/store.h"

#define MAX_WAIT_MS 1000
#define MAX_PROCS 256
/* Ends the error of an attempt that a permanent error ended. */
#define NOT_RETRIED "not retried (a retry cannot change this)"

/* A job has at most one loop timer of each kind (job->timer_id). */
enum timer_kind { T_RETRY, T_DEADLINE, T_SLEEP, T_RESUME, T_APPROVAL, T_KINDS };
_Static_assert(T_KINDS <= sizeof(((struct job *)0)->timer_id) / sizeof(long long),
               "struct job has a timer slot per kind");

/* A running attempt gets the loop for a slice at a time; Lua code that
 * cannot be preempted fails after HOLD_MAX, or half the watchdog's
 * unhealthy threshold when that is shorter, so that a busy playbook is
 * never taken for a hang. */
#define SLICE 0.02
#define HOLD_MAX 3.0

struct attempt_rt {
	struct sandbox sb;
	lua_State *L;
	lua_State *co;
	struct op *op;          /* what the coroutine waits on, or NULL */
	int n;
	int first;              /* the job's first start (not a retry, nor one redone after a crash) */
	int verifying;          /* run returned: verify runs (the driver's verifying()) */
	double started;         /* rd_mono() */
	double started_wall;
	struct job *job;
	struct attempt_rt *prev, *next; /* every attempt the runner holds */
};

struct committed;

struct msg {
	int cancel;
	int approve;            /* by cancel_id: the job's plan was approved */
	char cancel_id[33];     /* cancel: by id, the job may have ended since */
	struct job *job;
	void (*call)(void *arg);  /* runner_call: run call(arg) on the loop */
	void (*drop)(void *arg);  /* ... or drop(arg) if the loop has stopped */
	void *arg;
	struct committed *done; /* a batch of ours has committed */
	struct msg *next;
};

/* What to do with a job once the batch holding its write has committed:
 * run the attempt whose start it records, or hand the ended job back. */
enum cont_kind { C_RUN, C_DONE, C_HELD };

struct cont {
	struct job *job;
	enum cont_kind kind;
};

/* One batch handed to the journal writer, with the jobs waiting on it. */
struct committed {
	struct msg msg;         /* preallocated: the writer's callback cannot fail */
	struct runner *r;
	struct job *job;        /* shared journal: the one job of the batch */
	enum rd_status result;
	size_t n;
	struct cont v[];
};

struct runner {
	struct runner_opts o;
	char *lua_path;
	pthread_t thr;
	int started;
	struct loop *loop;
	int exit_now;           /* [loop] leave after this turn */
	int draining_now;       /* [loop] draining, as seen at this turn's start */

	pthread_mutex_t mu;     /* inbox and flags below */
	struct msg *inbox, *inbox_tail;
	int draining;
	double drain_deadline;
	int stop;

	struct job *ready, *ready_tail;
	size_t in_flight;
	struct attempt_rt *rts; /* the running attempts */
	struct op *procs[MAX_PROCS];
	size_t n_procs;
	char *driver;           /* DRIVER compiled once */
	size_t driver_len;

	/* This turn's journal writes, handed over as one batch before the loop
	 * waits; the jobs in conts continue when it has committed. */
	struct store_batch *batch;
	struct cont *conts;
	size_t n_conts, cap_conts;
	size_t commits_pending;   /* batches whose continuations have not run */
	/* Shared journal: the jobs with writes this turn (one batch each, so
	 * that a fenced write refuses only its own job's), every job held,
	 * and the lease timers. */
	struct job **tjobs;
	size_t n_tjobs, cap_tjobs;
	struct job *held;
	size_t n_held;
	int renewing;             /* [mu] a renewal is on its way */
	double renewed_until;     /* [mu] the expiry the last renewal set (every lease of ours) */
	int poke;                 /* [mu] runner_poke: poll at this turn */
	double next_poll;         /* rd_mono() */
	double next_check;        /* rd_mono(): leases_check, a tenth of a lease apart */
	/* Renewals have a thread of their own: a playbook holding the loop
	 * (up to hold_max per attempt, one after another) must not cost the
	 * replica its leases while it is alive. */
	pthread_t renew_thr;
	int renew_started;
	int renew_stop;           /* [mu] */
	pthread_cond_t renew_cv;  /* [mu] renew_stop set */
	size_t callbacks_out;     /* [mu] batches the writer has not reported */
	pthread_cond_t callbacks_cv; /* [mu] callbacks_out reached 0 */
};


static void attempt_end(struct runner *r, struct job *j, enum attempt_result result,
                        enum attempt_error why, const char *error, int verify_ok,
                        const char *verify_reason);
static void post(struct runner *r, struct msg *head, struct msg *tail);

/* ---------- timers, on the loop ---------- */

static void on_timer(struct job *j, int kind);

/* One callback per kind: the loop's arg is the job's slot, from which the
 * job is found again. */
#define TIMER_FN(KIND)                                                                          \
	static void timer_##KIND(struct loop *l, long long id, void *arg)                         \
	{                                                                                       \
		long long *slot = arg;                                                          \
		struct job *j = (struct job *)((char *)(slot - KIND) - offsetof(struct job, timer_id)); \
		(void)l;                                                                        \
		(void)id;                                                                       \
		*slot = 0;                                                                      \
		on_timer(j, KIND);                                                              \
	}
TIMER_FN(T_RETRY)
TIMER_FN(T_DEADLINE)
TIMER_FN(T_SLEEP)
TIMER_FN(T_RESUME)
TIMER_FN(T_APPROVAL)

static loop_timer_fn *const timer_fns[T_KINDS] = {
	[T_RETRY] = timer_T_RETRY, [T_DEADLINE] = timer_T_DEADLINE,
	[T_SLEEP] = timer_T_SLEEP, [T_RESUME] = timer_T_RESUME, [T_APPROVAL] = timer_T_APPROVAL};

/* A job has at most one timer of each kind: a new one replaces the old. */
static int timer_add(struct runner *r, struct job *j, int kind, double when)
{
	long long id;

	if (j->timer_id[kind])
		loop_timer_del(r->loop, j->timer_id[kind]);
	id = loop_timer_add(r->loop, when, timer_fns[kind], &j->timer_id[kind]);
	j->timer_id[kind] = id > 0 ? id : 0;
	return id > 0 ? 0 : -1;
}

static int has_timer(const struct job *j)
{
	for (int k = 0; k < T_KINDS; k++)
		if (j->timer_id[k])
			return 1;
	return 0;
}

/* Forget j's timer of this kind, or all of them for -1 (it is about to be
 * freed or rescheduled). O(log n) each. */
static void timers_drop_job(struct runner *r, struct job *j, int kind)
{
	for (int k = 0; k < T_KINDS; k++)
		if (j->timer_id[k] && (kind < 0 || kind == k)) {
			loop_timer_del(r->loop, j->timer_id[k]);
			j->timer_id[k] = 0;
		}
}

int runner_timer(struct runner *r, double when, loop_timer_fn *fn, void *arg)
{
	return loop_timer_add(r->loop, when, fn, arg) > 0 ? 0 : -1;
}

int runner_xfer(struct runner *r, CURL *easy, loop_xfer_fn *done, void *arg)
{
	return loop_xfer_add(r->loop, easy, done, arg);
}

/* The FIFO of queued jobs waiting for a free attempt slot. */
static void ready_push(struct runner *r, struct job *j)
{
	j->next = NULL;
	if (r->ready_tail)
		r->ready_tail->next = j;
	else
		r->ready = j;
	r->ready_tail = j;
}

static int ready_remove(struct runner *r, struct job *j)
{
	struct job **pp = &r->ready, *prev = NULL;
	for (; *pp; prev = *pp, pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			if (r->ready_tail == j)
				r->ready_tail = prev;
			return 1;
		}
	return 0;
}

static struct job *ready_pop(struct runner *r)
{
	struct job *j = r->ready;
	if (j) {
		r->ready = j->next;
		if (!r->ready)
			r->ready_tail = NULL;
	}
	return j;
}

/* ---------- journal: one batch per loop turn ---------- */

static void held_remove(struct runner *r, struct job *j)
{
	if (!j->hprev && r->held != j)
		return; /* not held (never scheduled) */
	if (j->hprev)
		j->hprev->hnext = j->hnext;
	else
		r->held = j->hnext;
	if (j->hnext)
		j->hnext->hprev = j->hprev;
	j->hprev = j->hnext = NULL;
	r->n_held--;
	if (r->o.replica)
		metrics_set(M_LEASES_HELD, NULL, NULL, (double)r->n_held);
}

static void held_add(struct runner *r, struct job *j)
{
	j->hprev = NULL;
	j->hnext = r->held;
	if (r->held)
		r->held->hprev = j;
	r->held = j;
	r->n_held++;
	if (r->o.replica)
		metrics_set(M_LEASES_HELD, NULL, NULL, (double)r->n_held);
}

static struct store_batch *turn_batch(struct runner *r, struct job *j)
{
	struct store_batch **slot = r->o.replica ? &j->tb : &r->batch;

	/* The runner's writes wait out a journal that is away (its jobs
	 * pause on their continuations meanwhile): a lost attempt end would
	 * leave a job "running" in the journal. */
	if (*slot)
		return *slot;
	if (!(*slot = store_batch_new()))
		return NULL;
	store_batch_keep(*slot);
	if (r->o.replica) {
		if (r->n_tjobs == r->cap_tjobs) {
			size_t ncap = r->cap_tjobs ? 2 * r->cap_tjobs : 64;
			struct job **nv = realloc(r->tjobs, ncap * sizeof(*nv));
			if (!nv) {
				store_batch_free(*slot);
				return *slot = NULL;
			}
			r->tjobs = nv;
			r->cap_tjobs = ncap;
		}
		r->tjobs[r->n_tjobs++] = j;
		j->tb_update = 0;
	}
	return *slot;
}

static void job_done(struct runner *r, struct job *j)
{
	held_remove(r, j);
	r->o.job_done(r->o.owner, j);
}

static void runner_record(struct job *j, const char *type, cJSON *detail, int planned)
{
	struct runner *r = j->runner;
	struct store_batch *b;
	char *txt;
	int attempt = j->rt ? j->rt->n : 0;

	if (!detail)
		detail = cJSON_CreateObject();
	job_redact_json(j, detail);
	txt = cJSON_PrintUnformatted(detail);
	cJSON_Delete(detail);
	if (!txt || !r)
		goto out;
	if (!(b = turn_batch(r, j)) || store_batch_event(b, j->id, attempt, type, txt, planned, rd_now()) < 0)
		log_kv(LOG_ERROR, j->id, "journal: cannot record an event: out of memory", "type", type, NULL);
out:
	free(txt);
}

static int cont_push(struct runner *r, struct job *j, enum cont_kind kind)
{
	if (r->o.replica) {
		if (j->n_tconts == (int)(sizeof(j->tconts) / sizeof(j->tconts[0])))
			return -1;
		j->tconts[j->n_tconts++] = kind;
		return 0;
	}
	if (r->n_conts == r->cap_conts) {
		size_t ncap = r->cap_conts ? 2 * r->cap_conts : 64;
		struct cont *nc = realloc(r->conts, ncap * sizeof(*nc));
		if (!nc)
			return -1;
		r->conts = nc;
		r->cap_conts = ncap;
	}
	r->conts[r->n_conts++] = (struct cont){j, kind};
	return 0;
}

/* Add the job row (and an attempt row) to this turn's batch; with a
 * continuation, j goes on (kind) once the batch has committed. The loop
 * never waits for the journal: order is kept because the writer commits
 * batches in the order they are handed over. */
static enum rd_status commit_job(struct runner *r, struct job *j, const struct attempt_row *a,
                                 int cont, enum cont_kind kind)
{
	struct store_batch *b = turn_batch(r, j);
	struct job_row row;
	int fail;

	if (!b)
		return RD_NOMEM;
	pthread_mutex_lock(r->o.mu);
	job_row_of(j, &row);
	if (cont && kind == C_RUN)
		row.state = job_state_name(JS_RUNNING); /* ahead of the books: see attempt_start */
	row.updated_at = rd_now();
	fail = store_batch_update_job(b, &row) < 0 || (a && store_batch_attempt(b, j->id, a) < 0);
	pthread_mutex_unlock(r->o.mu);
	j->tb_update |= !fail;
	if (fail || (cont && cont_push(r, j, kind) < 0))
		return RD_NOMEM;
	return RD_OK;
}

/* Writer thread: hand the result to the loop. */
static void on_committed(enum rd_status result, void *arg)
{
	struct committed *c = arg;
	struct runner *r = c->r;

	c->result = result;
	c->msg.done = c;
	pthread_mutex_lock(&r->mu);
	if (r->inbox_tail)
		r->inbox_tail->next = &c->msg;
	else
		r->inbox = &c->msg;
	r->inbox_tail = &c->msg;
	if (--r->callbacks_out == 0)
		pthread_cond_broadcast(&r->callbacks_cv);
	pthread_mutex_unlock(&r->mu);
	loop_wakeup(r->loop);
}

static void conts_run(struct runner *r, enum rd_status result, const struct cont *v, size_t n);

static void flush_job(struct runner *r, struct job *j);

/* Hand b to the writer with a callback that reports to this runner,
 * counted so that runner_free waits for it. 0, or -1 (the journal is
 * closed; done will not be called). */
static int hand_over(struct runner *r, struct store_batch *b, store_done_fn done, void *arg)
{
	pthread_mutex_lock(&r->mu);
	r->callbacks_out++;
	pthread_mutex_unlock(&r->mu);
	if (store_commit_cb(r->o.store, b, done, arg) == RD_OK)
		return 0;
	pthread_mutex_lock(&r->mu);
	r->callbacks_out--;
	pthread_mutex_unlock(&r->mu);
	return -1;
}
static void conts_run_job(struct runner *r, struct job *j, enum rd_status res, const struct cont *v,
                          size_t n);

/* Hand this turn's writes to the journal writer as one batch (a batch per
 * job on a shared journal). */
static void flush_batch(struct runner *r)
{
	struct committed *c;
	struct store_batch *b = r->batch;

	for (size_t i = 0; i < r->n_tjobs; i++)
		flush_job(r, r->tjobs[i]);
	r->n_tjobs = 0;
	if (!b)
		return;
	r->batch = NULL;
	if (r->n_conts == 0) {
		store_commit(r->o.store, b, 0); /* failures are logged and counted by the store */
		return;
	}
	c = malloc(sizeof(*c) + r->n_conts * sizeof(c->v[0]));
	if (!c) {
		/* No memory to go on later: wait for this one batch instead,
		 * which keeps the order. conts_run may queue new ones. */
		struct cont *v = r->conts;
		size_t n = r->n_conts;
		enum rd_status res = store_commit(r->o.store, b, 1);
		r->conts = NULL;
		r->n_conts = r->cap_conts = 0;
		conts_run(r, res, v, n);
		free(v);
		return;
	}
	memset(&c->msg, 0, sizeof(c->msg));
	c->r = r;
	c->job = NULL;
	c->result = RD_ERR;
	c->n = r->n_conts;
	memcpy(c->v, r->conts, r->n_conts * sizeof(c->v[0]));
	r->n_conts = 0;
	r->commits_pending++;
	if (hand_over(r, b, on_committed, c) < 0) {
		/* The journal is closed: go on with the failure, as before. */
		r->commits_pending--;
		conts_run(r, RD_ERR, c->v, c->n);
		free(c);
	}
}

/* Shared journal: j's writes of this turn, with its continuations. Even
 * without any, the batch reports back: a fenced one means the lease is
 * gone. */
static void flush_job(struct runner *r, struct job *j)
{
	struct store_batch *b = j->tb;
	struct committed *c = malloc(sizeof(*c) + sizeof(c->v[0]) * (size_t)j->n_tconts);

	j->tb = NULL;
	/* Its attempt and event rows too are refused once another replica
	 * holds the job: the update of its row is fenced by the token; a batch
	 * without one checks the token (anywhere in it: a batch is all or
	 * nothing). */
	if (!j->tb_update && store_batch_fence(b, j->id, j->lease_token) < 0)
		log_kv(LOG_ERROR, j->id, "journal: cannot fence a write: out of memory", NULL);
	if (!c) {
		/* No memory to go on later: wait for this batch instead. */
		struct cont v[2];
		int n = j->n_tconts;
		for (int i = 0; i < n; i++)
			v[i] = (struct cont){j, (enum cont_kind)j->tconts[i]};
		j->n_tconts = 0;
		j->commits++;
		r->commits_pending++;
		conts_run_job(r, j, store_commit(r->o.store, b, 1), v, (size_t)n);
		return;
	}
	memset(&c->msg, 0, sizeof(c->msg));
	c->r = r;
	c->job = j;
	c->result = RD_ERR;
	c->n = (size_t)j->n_tconts;
	for (int i = 0; i < j->n_tconts; i++)
		c->v[i] = (struct cont){j, (enum cont_kind)j->tconts[i]};
	j->n_tconts = 0;
	j->commits++;
	r->commits_pending++;
	if (hand_over(r, b, on_committed, c) < 0) {
		conts_run_job(r, j, RD_ERR, c->v, c->n);
		free(c);
	}
}

static void set_str(char **dst, const char *s)
{
	free(*dst);
	*dst = s ? strdup(s) : NULL;
}

/* ---------- ops ---------- */

static void op_free(struct op *op)
{
	if (!op)
		return;
	if (op->easy)
		curl_easy_cleanup(op->easy);
	curl_slist_free_all(op->headers);
	free(op->body);
	rbuf_free(&op->resp);
	rbuf_free(&op->resp_headers);
	rbuf_free(&op->out);
	rbuf_free(&op->err);
	if (op->pidfd >= 0)
		close(op->pidfd);
	if (op->out_fd >= 0)
		close(op->out_fd);
	if (op->err_fd >= 0)
		close(op->err_fd);
	if (op->free_ctx)
		op->free_ctx(op->ctx);
	free(op);
}

static void proc_forget(struct runner *r, struct op *op)
{
	for (size_t i = 0; i < r->n_procs; i++)
		if (r->procs[i] == op) {
			r->procs[i] = r->procs[--r->n_procs];
			return;
		}
}

static void finish_op(struct runner *r, struct op *op);

/* ---------- processes of recovery.exec, on the loop ---------- */

static void exec_progress(struct runner *r, struct op *op);

static void exec_fd_ready(struct loop *l, int fd, int mask, void *arg)
{
	struct op *op = arg;

	(void)l;
	(void)fd;
	(void)mask;
	exec_progress(op->job->runner, op);
}

static void exec_timer(struct loop *l, long long id, void *arg)
{
	struct op *op = arg;

	(void)l;
	(void)id;
	op->timer = 0;
	exec_progress(op->job->runner, op);
}

/* Wait for what lua_exec_wait lists: the open pipes, the pidfd, and the
 * deadline (or a short poll without a pidfd). */
static void exec_watch(struct runner *r, struct op *op)
{
	struct curl_waitfd fds[LUA_EXEC_WAITFDS];
	double wait = 3600;
	unsigned n = lua_exec_wait(op, fds, &wait);

	for (unsigned i = 0; i < n; i++)
		if (loop_fd_add(r->loop, fds[i].fd, LOOP_READ, exec_fd_ready, op) < 0)
			wait = 0.05; /* cannot watch it: poll instead */
	long long id = loop_timer_add(r->loop, rd_mono() + wait, exec_timer, op);
	op->timer = id > 0 ? id : 0;
}

/* The loop must let go of the descriptors before lua_exec_poll closes them. */
static void exec_unwatch(struct runner *r, struct op *op)
{
	if (op->out_fd >= 0)
		loop_fd_del(r->loop, op->out_fd);
	if (op->err_fd >= 0)
		loop_fd_del(r->loop, op->err_fd);
	if (op->pidfd >= 0)
		loop_fd_del(r->loop, op->pidfd);
	if (op->timer)
		loop_timer_del(r->loop, op->timer);
	op->timer = 0;
}

static void exec_progress(struct runner *r, struct op *op)
{
	exec_unwatch(r, op);
	if (lua_exec_poll(op, rd_mono())) {
		proc_forget(r, op);
		finish_op(r, op);
	} else {
		exec_watch(r, op);
	}
}

/* Stop whatever op is doing, without resuming anyone. */
static void op_abort(struct runner *r, struct op *op)
{
	switch (op->kind) {
	case OP_HTTP:
		loop_xfer_del(r->loop, op->easy);
		break;
	case OP_EXEC:
		exec_unwatch(r, op);
		proc_forget(r, op);
		lua_exec_abort(op);
		break;
	case OP_SLEEP:
		break;
	}
	timers_drop_job(r, op->job, T_SLEEP);
}

static void http_done(struct loop *l, CURL *easy, CURLcode cc, void *arg)
{
	struct op *op = arg;

	(void)l;
	(void)easy;
	op->cc = cc;
	finish_op(op->job->runner, op);
}

static int runner_begin_op(struct job *j, struct op *op, char *err, size_t errlen)
{
	struct runner *r = j->runner;

	if (!r || !j->rt) {
		snprintf(err, errlen, "no attempt is running");
		return -1;
	}
	op->job = j;
	op->started = rd_mono();
	switch (op->kind) {
	case OP_SLEEP:
		if (timer_add(r, j, T_SLEEP, op->deadline) < 0)
			goto nomem;
		break;
	case OP_HTTP:
		if (loop_xfer_add(r->loop, op->easy, http_done, op) < 0) {
			snprintf(err, errlen, "cannot start the transfer");
			return -1;
		}
		break;
	case OP_EXEC:
		if (r->n_procs == MAX_PROCS) {
			snprintf(err, errlen, "too many processes running (%d)", MAX_PROCS);
			return -1;
		}
		r->procs[r->n_procs++] = op;
		exec_watch(r, op);
		break;
	}
	j->rt->op = op;
	return 0;
nomem:
	snprintf(err, errlen, "out of memory");
	return -1;
}

static double runner_attempt_deadline(struct job *j)
{
	return j->rt ? j->rt->sb.deadline : rd_mono();
}

static lua_State *runner_job_thread(struct job *j)
{
	return j->rt ? j->rt->co : NULL;
}

/* What the recovery module of a job's attempt reaches the runner through
 * (job->host, set in post). */
static const struct op_host host = {
	.begin = runner_begin_op,
	.deadline = runner_attempt_deadline,
	.thread = runner_job_thread,
	.record = runner_record,
};

/* ---------- attempts ---------- */

/* The attempt driver, run as the job's coroutine: run, then verify. pcall
 * here is the sandbox's, which re-raises a passed deadline. nomem (the C
 * function caught_nomem) says whether the error the pcall just caught was a
 * memory error; it is asked before tostring, which may run the playbook's
 * code (a __tostring) and catch errors of its own. The error value of
 * recovery.fail and of permanent errors (lua_api_fatal) ends the job: phase
 * 'final', and for a permanent error the phase it was raised in. */
static const char DRIVER[] =
	"local pb, ctx, nomem, verifying = ...\n"
	"local function final(e) return type(e) == 'table' and rawget(e, 'recoveryd_final') end\n"
	"local function where(e, phase) if rawget(e, 'permanent') then return phase end end\n"
	"local s = {}\n"
	"if type(pb.settings) == 'table' then for k, v in pairs(pb.settings) do s[k] = v end end\n"
	"for k, v in pairs(ctx.settings) do s[k] = v end\n"
	"ctx.settings = s\n"
	"local ok, err = pcall(pb.run, ctx)\n"
	"if not ok then\n"
	"  local mem = nomem()\n"
	"  if final(err) then return 'final', tostring(rawget(err, 'reason')), nil, where(err, 'run') end\n"
	"  return 'run', tostring(err), nil, nil, mem\n"
	"end\n"
	"verifying()\n"
	"local vok, v1, v2 = pcall(pb.verify, ctx)\n"
	"if not vok then\n"
	"  local mem = nomem()\n"
	"  if final(v1) then return 'final', tostring(rawget(v1, 'reason')), nil, where(v1, 'verify') end\n"
	"  return 'verify_error', tostring(v1), nil, nil, mem\n"
	"end\n"
	"if v1 then return 'ok', nil, true, v2 ~= nil and tostring(v2) or nil end\n"
	"return 'verify', nil, false, v2 ~= nil and tostring(v2) or 'verify returned false'\n";

static void push_ctx(lua_State *L, struct job *j, int n)
{
	lua_newtable(L);
	if (j->alert)
		lua_json_push(L, j->alert);
	else
		lua_newtable(L);
	lua_setfield(L, -2, "alert");
	lua_newtable(L);
	lua_pushstring(L, j->id);
	lua_setfield(L, -2, "id");
	lua_pushinteger(L, n);
	lua_setfield(L, -2, "attempt");
	lua_pushinteger(L, j->max_attempts);
	lua_setfield(L, -2, "max_attempts");
	lua_pushstring(L, j->trigger);
	lua_setfield(L, -2, "trigger");
	lua_pushstring(L, j->reason ? j->reason : "");
	lua_setfield(L, -2, "reason");
	lua_pushstring(L, j->key);
	lua_setfield(L, -2, "key");
	lua_pushstring(L, j->playbook_name);
	lua_setfield(L, -2, "playbook");
	lua_setfield(L, -2, "job");
	lua_pushboolean(L, job_plans_only(j));
	lua_setfield(L, -2, "dry_run");
	lua_api_push_settings(L, j->playbook_name); /* merged over pb.settings by the driver */
	lua_setfield(L, -2, "settings");
}

/* The driver's nomem(): the sandbox's pcall records the status it caught. */
static int caught_nomem(lua_State *L)
{
	lua_pushboolean(L, sandbox_of(L)->caught_status == LUA_ERRMEM);
	return 1;
}

/* The driver's verifying(): run returned, verify starts. The attempt's
 * state is the sandbox's container (sb is its first member). */
static int enter_verify(lua_State *L)
{
	((struct attempt_rt *)(void *)sandbox_of(L))->verifying = 1;
	return 0;
}

_Static_assert(offsetof(struct attempt_rt, sb) == 0, "enter_verify finds the attempt from its sandbox");

static void resume(struct runner *r, struct job *j, int nargs);

static void mark_running(struct runner *r, struct job *j)
{
	pthread_mutex_lock(r->o.mu);
	job_set_state(r->o.counts, j, JS_RUNNING);
	pthread_mutex_unlock(r->o.mu);
}

/* Mark the job running and journal the attempt start; the attempt runs
 * (attempt_run) once that is committed, so a crash from the first side
 * effect on is found as "running" at start-up (DESIGN.md §5). */
static void attempt_start(struct runner *r, struct job *j)
{
	struct attempt_rt *rt;
	struct attempt_row a = {0};
	int first;

	pthread_mutex_lock(r->o.mu);
	if (j->state == JS_CANCELLED) {
		pthread_mutex_unlock(r->o.mu);
		job_done(r, j);
		return;
	}
	/* The journal says running from this batch on; the books (and
	 * recoveryd_queue_depth) once it is committed (mark_running). */
	j->attempts++;
	j->next_run_at = 0;
	first = !j->started_at;
	if (first)
		j->started_at = rd_now();
	/* Until a human approves, an attempt only makes the plan. */
	j->planning = j->approval == AP_PENDING;
	pthread_mutex_unlock(r->o.mu);

	rt = calloc(1, sizeof(*rt));
	if (!rt) {
		mark_running(r, j);
		attempt_end(r, j, AR_FAILED, AE_NONE, "out of memory", -1, NULL);
		return;
	}
	j->rt = rt;
	rt->job = j;
	rt->next = r->rts;
	if (r->rts)
		r->rts->prev = rt;
	r->rts = rt;
	rt->n = j->attempts;
	rt->first = first;
	rt->started = rd_mono();
	rt->started_wall = rd_now();
	rt->sb.mem_max = r->o.mem_max;
	rt->sb.lua_path = r->o.lua_path;
	rt->sb.owner = j;
	r->in_flight++;

	a.n = rt->n;
	a.started_at = rt->started_wall;
	a.verify_ok = -1;
	if (commit_job(r, j, &a, 1, C_RUN) != RD_OK) {
		mark_running(r, j);
		attempt_end(r, j, AR_FAILED, AE_NONE, "out of memory", -1, NULL);
	}
}

/* The alert resolved while the attempt verifies: that is what a repair
 * that worked makes Alertmanager send, so verify is left to decide (a
 * verify that fails then ends the job cancelled, without a retry). */
static int verify_decides(struct runner *r, struct job *j)
{
	int by_resolve;

	if (!j->rt || !j->rt->verifying)
		return 0;
	pthread_mutex_lock(r->o.mu);
	by_resolve = j->cancel_by_resolve;
	pthread_mutex_unlock(r->o.mu);
	return by_resolve;
}

/* A cancel asked for meanwhile ends the attempt here (1). */
static int ended_by_cancel(struct runner *r, struct job *j)
{
	int cancel;

	pthread_mutex_lock(r->o.mu);
	cancel = j->cancel_requested;
	pthread_mutex_unlock(r->o.mu);
	if (cancel && verify_decides(r, j))
		return 0;
	if (cancel)
		attempt_end(r, j, AR_CANCELLED, AE_NONE, j->cancel_reason ? j->cancel_reason : "cancelled",
		            -1, NULL);
	return cancel;
}

/* The attempt's start is committed (or could not be: logged): load the
 * playbook into a fresh state and start its coroutine. */
static void attempt_run(struct runner *r, struct job *j)
{
	struct attempt_rt *rt = j->rt;
	char chunk[300], err[512];
	struct playbook *pb = j->pb;

	mark_running(r, j);
	if (ended_by_cancel(r, j))
		return;
	log_kv(LOG_INFO, j->id, "attempt started", "playbook", j->playbook_name, "key", j->key, NULL);
	if (rt->first && r->o.job_started)
		r->o.job_started(r->o.owner, j);
	rt->started = rd_mono(); /* the deadline counts from here */
	rt->L = sandbox_new(&rt->sb);
	if (!rt->L) {
		attempt_end(r, j, AR_FAILED, AE_NONE, "cannot create a Lua state", -1, NULL);
		return;
	}
	lua_api_open(rt->L, j);
	rt->sb.deadline = rt->started + pb->timeout;
	snprintf(chunk, sizeof(chunk), "@%s", pb->file);
	watchdog_enter(r->o.wd, j->id, j->playbook_name);
	int status = sandbox_load_compiled(rt->L, pb->chunk, pb->chunk_len, chunk);
	if (status == LUA_OK)
		status = sandbox_call(rt->L, 0, 1);
	watchdog_leave(r->o.wd);
	if (status != LUA_OK) {
		int final, permanent;
		const char *m;
		rt->sb.no_limit = 1; /* unprotected calls */
		m = lua_api_error_text(rt->L, -1, &final, &permanent);
		snprintf(err, sizeof(err), "loading the playbook: %s%s", m ? m : "error",
		         permanent ? "; " NOT_RETRIED : "");
		rt->sb.no_limit = 0;
		/* recovery.fail or a permanent error in the file's own code */
		if (final)
			j->max_attempts = j->attempts;
		attempt_end(r, j, AR_FAILED, status == LUA_ERRMEM ? AE_MEMORY : AE_LOAD, err, -1, NULL);
		return;
	}
	if (!lua_istable(rt->L, -1)) {
		attempt_end(r, j, AR_FAILED, AE_LOAD, "loading the playbook: did not return a table", -1, NULL);
		return;
	}
	/* Stack: pbtable. Build the coroutine: driver(pbtable, ctx, nomem). These
	 * calls run unprotected, so the budget is lifted around them. */
	rt->sb.no_limit = 1;
	rt->co = lua_newthread(rt->L);
	lua_pushvalue(rt->L, -1);
	lua_setfield(rt->L, LUA_REGISTRYINDEX, "recoveryd.co"); /* keep it alive */
	lua_pop(rt->L, 1);
	if (sandbox_load_compiled(rt->co, r->driver, r->driver_len, "=driver") != LUA_OK) {
		rt->sb.no_limit = 0;
		attempt_end(r, j, AR_FAILED, AE_NONE, "internal: driver does not compile", -1, NULL);
		return;
	}
	lua_pushvalue(rt->L, -1);
	lua_xmove(rt->L, rt->co, 1);
	push_ctx(rt->co, j, rt->n);
	lua_pushcfunction(rt->co, caught_nomem);
	lua_pushcfunction(rt->co, enter_verify);
	rt->sb.no_limit = 0;
	rt->sb.preempt_co = rt->co;
	rt->sb.hold_max = HOLD_MAX;
	if (r->o.wd && watchdog_unhealthy_after(r->o.wd) / 2 < HOLD_MAX)
		rt->sb.hold_max = watchdog_unhealthy_after(r->o.wd) / 2;
	timer_add(r, j, T_DEADLINE, rt->sb.deadline);
	resume(r, j, 4);
}

/* A copy of the Lua string at idx for the job record, with each NUL byte
 * written as \0 so that an error message is never cut short. Plain C: the
 * state may be out of memory or dead here. NULL for a non-string. */
static char *msg_dup(lua_State *L, int idx)
{
	size_t len, n = 0;
	const char *s;
	char *out;

	if (lua_type(L, idx) == LUA_TNUMBER) {
		/* lua_tolstring would convert in place, which allocates */
		char num[64];
		snprintf(num, sizeof(num), "%.14g", (double)lua_tonumber(L, idx));
		return strdup(num);
	}
	if (lua_type(L, idx) != LUA_TSTRING)
		return NULL;
	s = lua_tolstring(L, idx, &len);
	if (!(out = malloc(2 * len + 1)))
		return NULL;
	for (size_t i = 0; i < len; i++) {
		if (s[i]) {
			out[n++] = s[i];
		} else {
			out[n++] = '\\';
			out[n++] = '0';
		}
	}
	out[n] = '\0';
	return out;
}

static void resume(struct runner *r, struct job *j, int nargs)
{
	struct attempt_rt *rt = j->rt;
	int nres = 0, status;

	if (ended_by_cancel(r, j))
		return;
	rt->op = NULL;
	rt->sb.preempted = 0;
	rt->sb.slice_start = rd_mono();
	rt->sb.slice_end = rt->sb.slice_start + SLICE;
	watchdog_enter(r->o.wd, j->id, j->playbook_name);
	status = lua_resume(rt->co, rt->L, nargs, &nres);
	watchdog_leave(r->o.wd);
	/* Progress, even when one turn resumes many jobs in a row, each
	 * bounded by hold_max. */
	watchdog_beat(r->o.wd);
	if (status == LUA_YIELD) {
		char msg[128];
		if (rt->sb.timed_out) {
			snprintf(msg, sizeof(msg), "attempt timed out after %gs", j->pb->timeout);
			attempt_end(r, j, AR_TIMEOUT, AE_TIMEOUT, msg, -1, NULL);
		} else if (rt->sb.preempted && !rt->op) {
			/* Its slice is over: continue after this loop turn. fire_timers
			 * takes only timers due when it started, so this is not
			 * resumed before the loop polls again. */
			if (timer_add(r, j, T_RESUME, rd_mono() + 1e-6) < 0)
				attempt_end(r, j, AR_FAILED, AE_NONE, "out of memory", -1, NULL);
		} else if (!rt->op) {
			attempt_end(r, j, AR_FAILED, AE_NONE,
			            "the playbook yielded outside a recovery call (coroutine.yield at top level)",
			            -1, NULL);
		}
		return; /* waiting on rt->op */
	}
	if (status != LUA_OK) {
		char *m = msg_dup(rt->co, -1);
		if (rt->sb.timed_out)
			attempt_end(r, j, AR_TIMEOUT, AE_TIMEOUT, "attempt deadline exceeded", -1, NULL);
		else
			attempt_end(r, j, AR_FAILED, status == LUA_ERRMEM ? AE_MEMORY : AE_NONE,
			            m ? m : "error", -1, NULL);
		free(m);
		return;
	}
	/* driver returns: phase, err, verify_ok, verify_reason, nomem */
	lua_settop(rt->co, 5);
	const char *phase = lua_tostring(rt->co, 1);
	char *err = msg_dup(rt->co, 2);
	int vok = lua_isnil(rt->co, 3) ? -1 : lua_toboolean(rt->co, 3);
	char *vreason = msg_dup(rt->co, 4);
	enum attempt_error why = lua_toboolean(rt->co, 5) ? AE_MEMORY : AE_NONE;
	char msg[1024];

	if (phase && strcmp(phase, "ok") == 0) {
		attempt_end(r, j, AR_SUCCEEDED, AE_NONE, NULL, 1, vreason);
	} else if (phase && strcmp(phase, "final") == 0) {
		/* recovery.fail() or a permanent error: no further attempts.
		 * verify_reason holds the phase of a permanent error. */
		j->max_attempts = j->attempts;
		if (vreason)
			snprintf(msg, sizeof(msg), "%s: %s; " NOT_RETRIED, vreason, err ? err : "error");
		else
			snprintf(msg, sizeof(msg), "%s", err ? err : "failed");
		attempt_end(r, j, AR_FAILED, AE_NONE, msg, -1, NULL);
	} else if (phase && strcmp(phase, "verify") == 0) {
		snprintf(msg, sizeof(msg), "verify: %s", vreason ? vreason : "false");
		attempt_end(r, j, AR_FAILED, AE_NONE, msg, vok, vreason);
	} else {
		snprintf(msg, sizeof(msg), "%s: %s", phase && strcmp(phase, "run") == 0 ? "run" : "verify",
		         err ? err : "error");
		attempt_end(r, j, AR_FAILED, why, msg, -1, NULL);
	}
	free(err);
	free(vreason);
}

/* Stop j's attempt where it is: abort what it waits on (killing a
 * process, dropping a transfer), close its Lua state, free the slot. a, if
 * given, gets the attempt's number and start. */
static void rt_close(struct runner *r, struct job *j, struct attempt_row *a)
{
	struct attempt_rt *rt = j->rt;

	if (!rt)
		return;
	if (rt->op) {
		op_abort(r, rt->op);
		op_free(rt->op);
		rt->op = NULL;
	}
	timers_drop_job(r, j, T_DEADLINE);
	timers_drop_job(r, j, T_RESUME);
	if (rt->L) {
		/* lua_close runs pending finalizers, with hooks off */
		watchdog_enter(r->o.wd, j->id, j->playbook_name);
		lua_close(rt->L);
		watchdog_leave(r->o.wd);
	}
	if (a) {
		a->n = rt->n;
		a->started_at = rt->started_wall;
	}
	metrics_observe(M_JOB_DURATION, j->playbook_name, rd_mono() - rt->started);
	if (rt->prev)
		rt->prev->next = rt->next;
	else
		r->rts = rt->next;
	if (rt->next)
		rt->next->prev = rt->prev;
	free(rt);
	j->rt = NULL;
	r->in_flight--;
}

/* The attempt ended with result; why is the cause that
 * recoveryd_playbook_errors_total counts (AE_NONE: none), known to the
 * caller from where it ended, never guessed from the error text. */
static void attempt_end(struct runner *r, struct job *j, enum attempt_result result,
                        enum attempt_error why, const char *error, int verify_ok,
                        const char *verify_reason)
{
	struct attempt_rt *rt = j->rt;
	struct attempt_row a = {0};
	char *err_copy = error ? job_redact(j, strdup(error)) : NULL;
	char *vr_copy = verify_reason ? job_redact(j, strdup(verify_reason)) : NULL;
	int final = 0, held = 0;
	enum log_level lvl = LOG_INFO;

	if (rt && j->state != JS_RUNNING)
		mark_running(r, j); /* ended before its start was committed */
	rt_close(r, j, &a);
	a.ended_at = rd_now();
	a.result = attempt_result_name(result);
	a.error = err_copy;
	a.verify_ok = verify_ok;
	a.verify_reason = vr_copy;
	metrics_add(M_JOB_ATTEMPTS, j->playbook_name, attempt_result_name(result), 1);
	if (why != AE_NONE)
		metrics_add(M_PLAYBOOK_ERRORS, j->playbook_name, attempt_error_name(why), 1);

	pthread_mutex_lock(r->o.mu);
	set_str(&j->error, err_copy);
	if (result == AR_SUCCEEDED && j->planning && !j->cancel_requested) {
		/* The plan is made: wait for a human, journaled (C_HELD asks). */
		double t = j->pb->approval_timeout;
		job_set_state(r->o.counts, j, JS_AWAITING_APPROVAL);
		j->plan_attempts = j->attempts;
		j->next_run_at = rd_now() + t;
		timer_add(r, j, T_APPROVAL, rd_mono() + t);
		held = 1;
	} else if (result == AR_SUCCEEDED) {
		job_set_state(r->o.counts, j, JS_SUCCEEDED);
		j->outcome = j->dry_run ? OUT_DRY_RUN_SUCCEEDED : OUT_SUCCEEDED;
		final = 1;
		j->released_at_end = r->o.replica && r->o.ends_quietly && r->o.ends_quietly(r->o.owner, j);
	} else if (j->cancel_requested || result == AR_CANCELLED) {
		job_set_state(r->o.counts, j, JS_CANCELLED);
		j->outcome = OUT_CANCELLED;
		/* A verify that failed after the resolve keeps its reason on the
		 * attempt; the job says why it ended. */
		if (!err_copy || j->cancel_by_resolve)
			set_str(&j->error, j->cancel_reason);
		final = 1;
	} else if (result == AR_INTERRUPTED) {
		/* Drain ran out of time: DESIGN.md §5 crash rules, applied now
		 * (a plan attempt only read: it may run again). */
		if (j->pb->idempotent || j->planning) {
			job_set_state(r->o.counts, j, JS_QUEUED);
			j->attempts--;
		} else {
			job_set_state(r->o.counts, j, JS_FAILED);
			j->outcome = OUT_INTERRUPTED;
			final = 1;
		}
	} else if (j->attempts < j->max_attempts) {
		double d = playbook_backoff(j->pb, j->attempts, rd_random_unit());
		job_set_state(r->o.counts, j, JS_RETRY_WAIT);
		j->next_run_at = rd_now() + d;
		timer_add(r, j, T_RETRY, rd_mono() + d);
		lvl = LOG_WARN;
	} else {
		job_set_state(r->o.counts, j, JS_FAILED);
		/* A dry-run says so in its outcome, and stays out of the
		 * auto-recovery ratio (outcome="succeeded" vs "failed"). */
		j->outcome = j->dry_run ? OUT_DRY_RUN_FAILED : OUT_FAILED;
		final = 1;
		lvl = LOG_ERROR;
	}
	if (final)
		j->ended_at = rd_now();
	j->planning = 0;
	pthread_mutex_unlock(r->o.mu);

	if (commit_job(r, j, &a, final || held, held ? C_HELD : C_DONE) != RD_OK) {
		/* The row is lost for now; the job still ends here. */
		log_kv(LOG_ERROR, j->id, "journal: cannot record the attempt end: out of memory", NULL);
		if (final) {
			final = 0;
			job_done(r, j);
		}
	}
	{
		char n[16];
		snprintf(n, sizeof(n), "%d", a.n);
		log_kv(lvl, j->id, "attempt ended", "playbook", j->playbook_name, "attempt", n, "result",
		       attempt_result_name(result), "error", err_copy ? err_copy : "", "state",
		       job_state_name(j->state), NULL);
	}
	free(err_copy);
	free(vr_copy);
	if (!final && j->state == JS_QUEUED) {
		ready_push(r, j);
	}
}

void runner_call(struct runner *r, void (*fn)(void *arg), void (*drop)(void *arg), void *arg)
{
	struct msg *m = calloc(1, sizeof(*m));

	if (!m) {
		drop(arg);
		return;
	}
	m->call = fn;
	m->drop = drop;
	m->arg = arg;
	post(r, m, m);
}

/* ---------- loop ---------- */

static void cancel_job(struct runner *r, struct job *j)
{
	if (j->rt) {
		if (verify_decides(r, j)) {
			log_kv(LOG_INFO, j->id, "alert resolved during verify: verify decides the outcome", NULL);
			return;
		}
		/* Running: stop now if it waits on an op, else at its next yield. */
		if (j->rt->op)
			attempt_end(r, j, AR_CANCELLED, AE_NONE,
			            j->cancel_reason ? j->cancel_reason : "cancelled", -1, NULL);
		return;
	}
	/* Queued or waiting for a retry: it ends here, without another attempt. */
	if (!ready_remove(r, j) && !has_timer(j))
		return; /* not ours yet (still in the inbox) or already ended */
	timers_drop_job(r, j, -1);
	pthread_mutex_lock(r->o.mu);
	job_set_state(r->o.counts, j, JS_CANCELLED);
	j->outcome = j->rejected ? OUT_REJECTED : OUT_CANCELLED;
	set_str(&j->error, j->cancel_reason ? j->cancel_reason : "cancelled");
	j->next_run_at = 0;
	j->ended_at = rd_now();
	pthread_mutex_unlock(r->o.mu);
	if (commit_job(r, j, NULL, 1, C_DONE) != RD_OK) {
		log_kv(LOG_ERROR, j->id, "journal: cannot record the cancellation: out of memory", NULL);
		job_done(r, j);
	}
}

/* A human approved the plan: the real run starts, with the playbook's
 * retries of its own. */
static void approve_now(struct runner *r, struct job *j)
{
	timers_drop_job(r, j, T_APPROVAL);
	pthread_mutex_lock(r->o.mu);
	job_set_state(r->o.counts, j, JS_QUEUED);
	j->max_attempts = j->attempts + j->pb->retries + 1;
	j->next_run_at = 0;
	pthread_mutex_unlock(r->o.mu);
	if (commit_job(r, j, NULL, 0, C_RUN) != RD_OK)
		log_kv(LOG_ERROR, j->id, "journal: cannot record the approval: out of memory", NULL);
	ready_push(r, j);
}

static void approve_job(struct runner *r, struct job *j)
{
	if (j->state != JS_AWAITING_APPROVAL || !j->timer_id[T_APPROVAL])
		return; /* not ours yet (still in the inbox), or already on its way */
	approve_now(r, j);
}

/* Nobody approved in time: the job fails and escalates approval_timeout. */
static void approval_timeout(struct runner *r, struct job *j)
{
	char msg[128];
	int approved;

	if (j->state != JS_AWAITING_APPROVAL)
		return;
	pthread_mutex_lock(r->o.mu);
	approved = j->approval == AP_APPROVED;
	pthread_mutex_unlock(r->o.mu);
	if (approved) {
		approve_now(r, j); /* approved just now; its message finds it queued */
		return;
	}
	snprintf(msg, sizeof(msg), "no approval within %gs", j->pb->approval_timeout);
	pthread_mutex_lock(r->o.mu);
	job_set_state(r->o.counts, j, JS_FAILED);
	j->outcome = OUT_APPROVAL_TIMEOUT;
	set_str(&j->error, msg);
	j->next_run_at = 0;
	j->ended_at = rd_now();
	pthread_mutex_unlock(r->o.mu);
	log_kv(LOG_WARN, j->id, "approval timed out", "playbook", j->playbook_name, NULL);
	if (commit_job(r, j, NULL, 1, C_DONE) != RD_OK) {
		log_kv(LOG_ERROR, j->id, "journal: cannot record the approval timeout: out of memory", NULL);
		job_done(r, j);
	}
}

static void conts_run(struct runner *r, enum rd_status result, const struct cont *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct job *j = v[i].job;
		if (result != RD_OK)
			log_kv(LOG_ERROR, j->id, v[i].kind == C_RUN ? "journal: cannot record the attempt start"
			                                            : "journal: cannot record the job's end",
			       NULL);
		switch (v[i].kind) {
		case C_RUN:
			attempt_run(r, j);
			break;
		case C_DONE:
			job_done(r, j);
			break;
		case C_HELD:
			/* Awaiting approval, durably: ask for a human. */
			if (j->state == JS_AWAITING_APPROVAL && r->o.job_held)
				r->o.job_held(r->o.owner, j);
			break;
		}
	}
}

/* ---------- leases (a journal shared by several replicas) ---------- */

static void lose_finish(struct runner *r, struct job *j)
{
	held_remove(r, j);
	r->o.job_lost(r->o.owner, j);
}

/* j's lease is gone (expired unrenewed, or a write was fenced): another
 * replica may hold it now, so nothing more of it is done or written here.
 * Its running attempt stops at once (processes killed, transfers
 * dropped); the job is handed back once its batches have reported. */
static void job_lose(struct runner *r, struct job *j, const char *why)
{
	if (j->lost)
		return;
	j->lost = 1;
	log_kv(LOG_WARN, j->id, j->rt ? "lease lost: attempt aborted" : "lease lost: job left to another replica",
	       "playbook", j->playbook_name, "reason", why, NULL);
	metrics_add(M_LEASES_LOST, NULL, NULL, 1);
	rt_close(r, j, NULL);
	ready_remove(r, j);
	timers_drop_job(r, j, -1);
	if (j->tb) {
		for (size_t i = 0; i < r->n_tjobs; i++)
			if (r->tjobs[i] == j) {
				r->tjobs[i] = r->tjobs[--r->n_tjobs];
				break;
			}
		store_batch_free(j->tb);
		j->tb = NULL;
		j->n_tconts = 0;
	}
	if (j->commits == 0)
		lose_finish(r, j);
}

/* Shared journal: the batch of j's writes reported back. */
static void conts_run_job(struct runner *r, struct job *j, enum rd_status res, const struct cont *v,
                          size_t n)
{
	r->commits_pending--;
	j->commits--;
	if (res == RD_FENCED)
		job_lose(r, j, "a write was fenced: another replica holds the job");
	if (j->lost) {
		if (j->commits == 0)
			lose_finish(r, j);
		return;
	}
	conts_run(r, res, v, n);
}

/* A renewal of every lease of this replica, on its way to the journal. */
struct renewal {
	struct runner *r;
	double until;
	size_t n, cap;
	struct renewed {
		char id[33];
		long long token;
	} *v;
};

static void renewal_got(const char *job_id, long long token, void *arg)
{
	struct renewal *rn = arg;

	if (rn->n == rn->cap) {
		size_t ncap = rn->cap ? 2 * rn->cap : 64;
		struct renewed *nv = realloc(rn->v, ncap * sizeof(*nv));
		if (!nv)
			return; /* not extended here: its lease runs out, then it is lost */
		rn->v = nv;
		rn->cap = ncap;
	}
	snprintf(rn->v[rn->n].id, sizeof(rn->v[0].id), "%s", job_id);
	rn->v[rn->n++].token = token;
}

static void renewal_free(void *arg)
{
	struct renewal *rn = arg;

	free(rn->v);
	free(rn);
}

/* Writer thread: the renewed leases are good until rn->until. Set here,
 * under the owner's lock, not on the loop: a loop turn held by playbooks
 * must see the renewals made meanwhile. */
static void renewal_done(enum rd_status res, void *arg)
{
	struct renewal *rn = arg;
	struct runner *r = rn->r;

	pthread_mutex_lock(r->o.mu);
	for (size_t i = 0; res == RD_OK && i < rn->n; i++) {
		struct job *j = r->o.job_find(r->o.owner, rn->v[i].id);
		if (j && j->owner && j->lease_token == rn->v[i].token && rn->until > j->lease_until)
			j->lease_until = rn->until;
	}
	pthread_mutex_unlock(r->o.mu);
	pthread_mutex_lock(&r->mu);
	if (res == RD_OK && rn->until > r->renewed_until)
		r->renewed_until = rn->until;
	pthread_mutex_unlock(&r->mu);
	renewal_free(rn);
	pthread_mutex_lock(&r->mu);
	r->renewing = 0;
	if (--r->callbacks_out == 0)
		pthread_cond_broadcast(&r->callbacks_cv);
	pthread_mutex_unlock(&r->mu);
}

static void renew_leases(struct runner *r)
{
	struct renewal *rn = calloc(1, sizeof(*rn));
	struct store_batch *b = store_batch_new();

	if (!rn || !b)
		goto fail;
	rn->r = r;
	rn->until = rd_now() + r->o.lease;
	if (store_batch_renew(b, r->o.replica, rn->until, renewal_got, rn) < 0)
		goto fail;
	pthread_mutex_lock(&r->mu);
	r->renewing = 1;
	pthread_mutex_unlock(&r->mu);
	if (hand_over(r, b, renewal_done, rn) < 0) {
		pthread_mutex_lock(&r->mu);
		r->renewing = 0;
		pthread_mutex_unlock(&r->mu);
		free(rn);
	}
	return;
fail:
	store_batch_free(b);
	free(rn);
}

static void *renew_main(void *arg)
{
	struct runner *r = arg;
	struct timespec ts;

	pthread_mutex_lock(&r->mu);
	while (!r->renew_stop) {
		if (!r->renewing) {
			pthread_mutex_unlock(&r->mu);
			renew_leases(r);
			pthread_mutex_lock(&r->mu);
		}
		rd_timespec_in(CLOCK_REALTIME, r->o.lease / 3, &ts);
		pthread_cond_timedwait(&r->renew_cv, &r->mu, &ts);
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

/* Before its lease runs out, a job this replica could not renew is given
 * up: the margin keeps this replica's last act ahead of another's claim
 * (clocks agreeing to well within it). */
static void leases_check(struct runner *r)
{
	double now = rd_now(), margin = r->o.lease / 5, renewed;
	struct job *j, *next;
	int out;

	/* A renewal extends every lease this replica holds in the journal; a
	 * job taken over meanwhile is found by the fencing of its next write. */
	pthread_mutex_lock(&r->mu);
	renewed = r->renewed_until;
	pthread_mutex_unlock(&r->mu);
	for (j = r->held; j; j = next) {
		next = j->hnext;
		pthread_mutex_lock(r->o.mu);
		out = j->owner && !j->lost && now >= (renewed > j->lease_until ? renewed : j->lease_until) - margin;
		pthread_mutex_unlock(r->o.mu);
		if (out)
			job_lose(r, j, "the lease ran out: it could not be renewed in time");
	}
}

/* Each loop turn: renew, check, and poll for free work when due. */
static void leases_turn(struct runner *r)
{
	double mono = rd_mono();
	int poke;
	size_t ready = 0, slots;

	if (!r->o.replica)
		return;
	/* Not every turn: a busy loop turns thousands of times a second. */
	if (mono >= r->next_check) {
		r->next_check = mono + r->o.lease / 10;
		leases_check(r);
	}
	pthread_mutex_lock(&r->mu);
	poke = r->poke;
	r->poke = 0;
	pthread_mutex_unlock(&r->mu);
	if ((poke || mono >= r->next_poll) && !r->draining_now && r->o.poll_fn) {
		r->next_poll = mono + r->o.poll;
		for (struct job *j = r->ready; j; j = j->next)
			ready++;
		slots = r->in_flight + ready < r->o.max_in_flight ? r->o.max_in_flight - r->in_flight - ready : 0;
		r->o.poll_fn(r->o.owner, slots);
	}
}

void runner_poke(struct runner *r)
{
	pthread_mutex_lock(&r->mu);
	r->poke = 1;
	pthread_mutex_unlock(&r->mu);
	loop_wakeup(r->loop);
}

/* A job handed over by runner_schedule: it is ours from now on. */
static void schedule_job(struct runner *r, struct job *j)
{
	double delay = j->next_run_at - rd_now();

	held_add(r, j);
	if (j->state == JS_AWAITING_APPROVAL) /* replayed: waits until the journaled deadline */
		timer_add(r, j, T_APPROVAL, rd_mono() + (delay > 0 ? delay : 0));
	else if (j->state == JS_RETRY_WAIT)
		timer_add(r, j, T_RETRY, rd_mono() + (delay > 0 ? delay : 0));
	else
		ready_push(r, j);
}

static void drain_inbox(struct runner *r)
{
	struct msg *m;

	pthread_mutex_lock(&r->mu);
	m = r->inbox;
	r->inbox = r->inbox_tail = NULL;
	pthread_mutex_unlock(&r->mu);
	while (m) {
		struct msg *next = m->next;
		struct job *j = m->job;
		if (m->done) {
			struct committed *c = m->done;
			if (c->job) {
				conts_run_job(r, c->job, c->result, c->v, c->n);
			} else {
				r->commits_pending--;
				conts_run(r, c->result, c->v, c->n);
			}
			free(c);
			m = next;
			continue;
		} else if (m->call) {
			m->call(m->arg);
		} else if (m->cancel) {
			/* Only this thread frees jobs: one still in the table is
			 * alive until this thread ends it. */
			pthread_mutex_lock(r->o.mu);
			j = r->o.job_find(r->o.owner, m->cancel_id);
			pthread_mutex_unlock(r->o.mu);
			if (j)
				m->approve ? approve_job(r, j) : cancel_job(r, j);
		} else {
			schedule_job(r, j);
		}
		free(m);
		m = next;
	}
}

static void on_timer(struct job *j, int kind)
{
	struct runner *r = j->runner;

	switch (kind) {
	case T_RETRY:
		if (r->draining_now)
			break; /* it stays retry_wait in the journal */
		ready_push(r, j);
		break;
	case T_DEADLINE:
		if (j->rt) {
			char msg[128];
			snprintf(msg, sizeof(msg), "attempt timed out after %gs", j->pb->timeout);
			attempt_end(r, j, AR_TIMEOUT, AE_TIMEOUT, msg, -1, NULL);
		}
		break;
	case T_SLEEP:
		if (j->rt && j->rt->op && j->rt->op->kind == OP_SLEEP)
			finish_op(r, j->rt->op);
		break;
	case T_RESUME:
		if (j->rt && !j->rt->op)
			resume(r, j, 0);
		break;
	case T_APPROVAL:
		approval_timeout(r, j);
		break;
	}
}

static void finish_op(struct runner *r, struct op *op)
{
	struct job *j = op->job;
	int n;

	j->rt->op = NULL;
	/* Results are bounded by the op caps; pushing them is unprotected. */
	j->rt->sb.no_limit = 1;
	n = op->finish ? op->finish(j->rt->co, op) : 0;
	j->rt->sb.no_limit = 0;
	op_free(op);
	resume(r, j, n);
}

static void start_ready(struct runner *r)
{
	while (r->ready && r->in_flight < r->o.max_in_flight)
		attempt_start(r, ready_pop(r));
}

/* The start of each loop turn: take what other threads sent, start what
 * may start, hand this turn's writes to the journal, and decide whether to
 * leave. */
static void before_wait(struct loop *l, void *arg)
{
	struct runner *r = arg;
	int stop;
	double drain_deadline;

	watchdog_beat(r->o.wd);
	drain_inbox(r);
	leases_turn(r);
	pthread_mutex_lock(&r->mu);
	r->draining_now = r->draining;
	stop = r->stop;
	drain_deadline = r->drain_deadline;
	pthread_mutex_unlock(&r->mu);
	if (stop) {
		flush_batch(r); /* what is written is not lost */
		r->exit_now = 1;
	} else if (r->draining_now) {
		if (r->in_flight && rd_mono() >= drain_deadline) {
			/* Interrupt what is left; interrupted jobs are recorded as
			 * the crash rules say, so the journal stays consistent. */
			while (r->rts)
				attempt_end(r, r->rts->job, AR_INTERRUPTED, AE_NONE,
				            "interrupted: shutdown grace period ended", -1, NULL);
		}
		flush_batch(r);
		if (r->in_flight == 0 && !r->batch && r->commits_pending == 0)
			r->exit_now = 1;
	} else {
		start_ready(r);
		flush_batch(r);
	}
	if (r->exit_now)
		loop_wakeup(l); /* do not wait */
}

static void *runner_main(void *arg)
{
	struct runner *r = arg;

	watchdog_start(r->o.wd);
	while (!r->exit_now) {
		/* Waits are bounded so that a drain's deadline is seen, and a
		 * lease running out well within its margin. */
		double wait = r->draining_now ? 0.1 : MAX_WAIT_MS / 1000.0;
		if (r->o.replica && r->o.lease / 10 < wait)
			wait = r->o.lease / 10;
		if (loop_run_once(r->loop, wait) < 0 && errno != EINTR) {
			log_kv(LOG_ERROR, NULL, "runner: event loop failed", "error", strerror(errno), NULL);
			usleep(10000); /* do not spin */
		}
	}
	watchdog_stop(r->o.wd); /* leaving on purpose: not a stall */
	return NULL;
}

struct runner *runner_new(const struct runner_opts *o)
{
	struct runner *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->o = *o;
	/* Own the path: the config that lent it is freed on SIGHUP. */
	r->lua_path = o->lua_path ? strdup(o->lua_path) : NULL;
	r->o.lua_path = r->lua_path;
	if (!r->o.max_in_flight)
		r->o.max_in_flight = 16;
	char err[256];
	r->driver = sandbox_compile(DRIVER, sizeof(DRIVER) - 1, "=driver", &r->driver_len, err, sizeof(err));
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->callbacks_cv, NULL);
	pthread_cond_init(&r->renew_cv, NULL);
	r->loop = loop_new();
	if (r->loop)
		loop_set_before_wait(r->loop, before_wait, r);
	if (!r->loop || !r->driver) {
		loop_free(r->loop);
		pthread_cond_destroy(&r->renew_cv);
		pthread_cond_destroy(&r->callbacks_cv);
		pthread_mutex_destroy(&r->mu);
		free(r->driver);
		free(r->lua_path);
		free(r);
		return NULL;
	}
	return r;
}

enum rd_status runner_start(struct runner *r)
{
	if (pthread_create(&r->thr, NULL, runner_main, r) != 0)
		return RD_ERR;
	r->started = 1;
	if (r->o.replica) {
		if (pthread_create(&r->renew_thr, NULL, renew_main, r) != 0)
			return RD_ERR;
		r->renew_started = 1;
	}
	return RD_OK;
}

/* Append a chain of messages to the inbox and wake the loop once. */
static void post(struct runner *r, struct msg *head, struct msg *tail)
{
	if (!head)
		return;
	pthread_mutex_lock(&r->mu);
	if (r->inbox_tail)
		r->inbox_tail->next = head;
	else
		r->inbox = head;
	r->inbox_tail = tail;
	pthread_mutex_unlock(&r->mu);
	loop_wakeup(r->loop);
}

void runner_schedule(struct runner *r, struct job *const *jobs, size_t n)
{
	struct msg *head = NULL, *tail = NULL;

	for (size_t i = 0; i < n; i++) {
		struct msg *m = calloc(1, sizeof(*m));
		if (!m)
			continue; /* the job stays in the journal; it resumes on restart */
		m->job = jobs[i];
		jobs[i]->runner = r;
		jobs[i]->host = &host;
		if (tail)
			tail->next = m;
		else
			head = m;
		tail = m;
	}
	post(r, head, tail);
}

void runner_approve(struct runner *r, const char *job_id)
{
	struct msg *m = calloc(1, sizeof(*m));

	if (!m)
		return; /* the approval is journaled: the timeout still sees it */
	m->cancel = 1;
	m->approve = 1;
	snprintf(m->cancel_id, sizeof(m->cancel_id), "%s", job_id);
	post(r, m, m);
}

void runner_cancel(struct runner *r, const char *job_id)
{
	struct msg *m = calloc(1, sizeof(*m));

	if (!m)
		return; /* the cancel is journaled: the job ends at its next check */
	m->cancel = 1;
	snprintf(m->cancel_id, sizeof(m->cancel_id), "%s", job_id);
	post(r, m, m);
}

void runner_drain(struct runner *r, double grace)
{
	pthread_mutex_lock(&r->mu);
	r->draining = 1;
	r->drain_deadline = rd_mono() + grace;
	pthread_mutex_unlock(&r->mu);
	loop_wakeup(r->loop);
	if (r->started) {
		pthread_join(r->thr, NULL);
		r->started = 0;
	}
}

void runner_free(struct runner *r)
{
	if (!r)
		return;
	if (r->started) {
		pthread_mutex_lock(&r->mu);
		r->stop = 1;
		pthread_mutex_unlock(&r->mu);
		loop_wakeup(r->loop);
		pthread_join(r->thr, NULL);
	}
	if (r->renew_started) {
		pthread_mutex_lock(&r->mu);
		r->renew_stop = 1;
		pthread_cond_broadcast(&r->renew_cv);
		pthread_mutex_unlock(&r->mu);
		pthread_join(r->renew_thr, NULL);
	}
	/* The writer still reports batches handed over: wait for them, so that
	 * no callback touches a freed runner. Their jobs stay the owner's. */
	pthread_mutex_lock(&r->mu);
	while (r->callbacks_out)
		pthread_cond_wait(&r->callbacks_cv, &r->mu);
	pthread_mutex_unlock(&r->mu);
	store_batch_free(r->batch); /* the loop never ran */
	free(r->conts);
	free(r->tjobs);
	/* Jobs still queued or waiting stay in the journal; free their memory. */
	while (r->n_procs)
		op_abort(r, r->procs[0]); /* kills and reaps; op_abort forgets it */
	struct msg *m = r->inbox;
	while (m) {
		struct msg *n = m->next;
		if (m->done) {
			free(m->done); /* the message is part of it */
		} else {
			if (m->drop)
				m->drop(m->arg);
			free(m);
		}
		m = n;
	}
	/* Transfers still in flight belong to their owners (the outbox frees
	 * its own after this): the loop lets go of them, and of its timers. */
	loop_free(r->loop);
	pthread_cond_destroy(&r->renew_cv);
	pthread_cond_destroy(&r->callbacks_cv);
	pthread_mutex_destroy(&r->mu);
	free(r->driver);
	free(r->lua_path);
	free(r);
}

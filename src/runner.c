/* The runner: a single event-loop thread. curl_multi_poll waits on the HTTP
 * transfers, on child-process descriptors (pipes and pidfds) and on a wakeup,
 * with the nearest timer as its timeout. Each attempt is a coroutine in its
 * own sandboxed lua_State; sleep, HTTP and exec yield it, and the loop
 * resumes it when the timer, transfer or process completes. */
#include "recoveryd/runner.h"
#include "recoveryd/watchdog.h"

#include <fcntl.h>
#include <lauxlib.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine_impl.h"
#include "map.h"
#include "recoveryd/escalate.h"
#include "recoveryd/log.h"
#include "recoveryd/lua_api.h"
#include "recoveryd/lua_exec.h"
#include "recoveryd/lua_json.h"
#include "recoveryd/metrics.h"
#include "recoveryd/playbook.h"
#include "recoveryd/sandbox.h"

#define MAX_WAIT_MS 1000
#define MAX_PROCS 256

enum timer_kind { T_RETRY, T_DEADLINE, T_SLEEP, T_DELIVER, T_RESUME, T_KINDS };
_Static_assert(T_KINDS <= sizeof(((struct job *)0)->timer_at) / sizeof(size_t),
               "struct job has a timer slot per kind");

/* A running attempt gets the loop for a slice at a time; Lua code that
 * cannot be preempted fails after HOLD_MAX, or half the watchdog's
 * unhealthy threshold when that is shorter, so that a busy playbook is
 * never taken for a hang. */
#define SLICE 0.02
#define HOLD_MAX 3.0

struct timer {
	double when;            /* rd_mono() */
	struct job *job;        /* NULL for T_DELIVER */
	int kind;
	int attempt;            /* stale once the job moved past this attempt */
	struct delivery *dl;    /* T_DELIVER */
	size_t *at;             /* the job's timer_at slot, kept equal to 1 + index */
};

/* One notification of the escalation outbox, journaled before it is here. */
struct delivery {
	char *id, *job_id, *sink, *kind, *payload, *incident;
	int attempts;
	double created_at;      /* wall clock, for the latency histogram */
	struct op *op;          /* the transfer in flight, or NULL */
	struct delivery *next;  /* every delivery the runner holds */
};

struct attempt_rt {
	struct sandbox sb;
	lua_State *L;
	lua_State *co;
	struct op *op;          /* what the coroutine waits on, or NULL */
	int n;
	double started;         /* rd_mono() */
	double started_wall;
};

struct msg {
	int cancel;
	char cancel_id[33];     /* cancel: by id, the job may have ended since */
	struct job *job;
	struct delivery *dl;    /* a notification to send instead of a job */
	struct msg *next;
};

struct runner {
	struct engine *e;
	struct runner_opts o;
	char *lua_path;
	pthread_t thr;
	int started;
	CURLM *multi;

	pthread_mutex_t mu;     /* inbox and flags below */
	struct msg *inbox, *inbox_tail;
	int draining;
	double drain_deadline;
	int stop;

	struct job *ready, *ready_tail;
	size_t n_ready;
	size_t in_flight;
	struct timer *timers;
	size_t n_timers, cap_timers;
	struct op *procs[MAX_PROCS];
	size_t n_procs;
	struct delivery *deliveries;
	size_t n_deliveries;
	char *driver;           /* DRIVER compiled once */
	size_t driver_len;
};


static void attempt_end(struct runner *r, struct job *j, const char *result, const char *error,
                        int verify_ok, const char *verify_reason);

/* ---------- buffers ---------- */

static size_t dl_body(char *p, size_t sz, size_t n, void *ud)
{
	rbuf_append(ud, p, sz * n); /* beyond the cap: kept short, not an error */
	return sz * n;
}

/* ---------- timers: a small binary heap ---------- */

/* Place t at index i, telling its owner where it is. */
static void heap_set(struct runner *r, size_t i, struct timer t)
{
	r->timers[i] = t;
	if (t.at)
		*t.at = i + 1;
}

static void heap_swap(struct runner *r, size_t a, size_t b)
{
	struct timer t = r->timers[a];
	heap_set(r, a, r->timers[b]);
	heap_set(r, b, t);
}

static void heap_down(struct runner *r, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, m = i;
		if (l < r->n_timers && r->timers[l].when < r->timers[m].when)
			m = l;
		if (l + 1 < r->n_timers && r->timers[l + 1].when < r->timers[m].when)
			m = l + 1;
		if (m == i)
			return;
		heap_swap(r, i, m);
		i = m;
	}
}

static void heap_up(struct runner *r, size_t i)
{
	while (i > 0 && r->timers[(i - 1) / 2].when > r->timers[i].when) {
		heap_swap(r, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static int timer_push(struct runner *r, struct timer t)
{
	if (r->n_timers == r->cap_timers) {
		size_t ncap = r->cap_timers ? r->cap_timers * 2 : 64;
		struct timer *nt = realloc(r->timers, ncap * sizeof(*nt));
		if (!nt)
			return -1;
		r->timers = nt;
		r->cap_timers = ncap;
	}
	heap_set(r, r->n_timers, t);
	heap_up(r, r->n_timers++);
	return 0;
}

/* Remove the timer at index i: O(log n). */
static void heap_remove(struct runner *r, size_t i)
{
	if (r->timers[i].at)
		*r->timers[i].at = 0;
	if (--r->n_timers == i)
		return;
	heap_set(r, i, r->timers[r->n_timers]);
	heap_down(r, i);
	heap_up(r, i);
}

static void heap_pop(struct runner *r)
{
	heap_remove(r, 0);
}

/* A job has at most one timer of each kind: a new one replaces the old. */
static int timer_add(struct runner *r, struct job *j, int kind, double when)
{
	if (j->timer_at[kind])
		heap_remove(r, j->timer_at[kind] - 1);
	return timer_push(r, (struct timer){when, j, kind, j->attempts, NULL, &j->timer_at[kind]});
}

static int timer_add_dl(struct runner *r, struct delivery *d, double when)
{
	return timer_push(r, (struct timer){when, NULL, T_DELIVER, 0, d, NULL});
}

static int timers_has(struct runner *r, struct job *j)
{
	(void)r;
	for (size_t k = 0; k < sizeof(j->timer_at) / sizeof(j->timer_at[0]); k++)
		if (j->timer_at[k])
			return 1;
	return 0;
}

/* Forget j's timer of this kind, or all of them for -1 (it is about to be
 * freed or rescheduled). */
static void timers_drop_job(struct runner *r, struct job *j, int kind)
{
	for (size_t k = 0; k < sizeof(j->timer_at) / sizeof(j->timer_at[0]); k++)
		if (j->timer_at[k] && (kind < 0 || (size_t)kind == k))
			heap_remove(r, j->timer_at[k] - 1);
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
	r->n_ready++;
}

static int ready_remove(struct runner *r, struct job *j)
{
	struct job **pp = &r->ready, *prev = NULL;
	for (; *pp; prev = *pp, pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			if (r->ready_tail == j)
				r->ready_tail = prev;
			r->n_ready--;
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
		r->n_ready--;
	}
	return j;
}

/* ---------- journal helpers ---------- */

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
	b = store_batch_new();
	if (b && store_batch_event(b, j->id, attempt, type, txt, planned, rd_now()) == 0)
		store_commit(r->e->store, b, 0);
	else
		store_batch_free(b);
out:
	free(txt);
}

/* Write the job row (and an attempt row) in one batch. */
static enum rd_status commit_job(struct runner *r, struct job *j, const struct attempt_row *a, int wait)
{
	struct store_batch *b = store_batch_new();
	struct job_row row;

	if (!b)
		return RD_NOMEM;
	pthread_mutex_lock(&r->e->mu);
	job_row_of(j, &row);
	row.updated_at = rd_now();
	if (store_batch_update_job(b, &row) < 0 || (a && store_batch_attempt(b, j->id, a) < 0)) {
		pthread_mutex_unlock(&r->e->mu);
		store_batch_free(b);
		return RD_NOMEM;
	}
	pthread_mutex_unlock(&r->e->mu);
	return store_commit(r->e->store, b, wait);
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

/* Stop whatever op is doing, without resuming anyone. */
static void op_abort(struct runner *r, struct op *op)
{
	switch (op->kind) {
	case OP_HTTP:
		curl_multi_remove_handle(r->multi, op->easy);
		break;
	case OP_EXEC:
		proc_forget(r, op);
		lua_exec_abort(op);
		break;
	case OP_SLEEP:
	case OP_DELIVERY: /* never a job's op */
		break;
	}
	timers_drop_job(r, op->job, T_SLEEP);
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
		curl_easy_setopt(op->easy, CURLOPT_PRIVATE, op);
		if (curl_multi_add_handle(r->multi, op->easy) != CURLM_OK) {
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
		break;
	case OP_DELIVERY:
		snprintf(err, errlen, "internal: a delivery is not a job operation");
		return -1;
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
 * here is the sandbox's, which re-raises a passed deadline. */
static const char DRIVER[] =
	"local pb, ctx = ...\n"
	"local function final(e) return type(e) == 'table' and rawget(e, 'recoveryd_final') end\n"
	"local s = {}\n"
	"if type(pb.settings) == 'table' then for k, v in pairs(pb.settings) do s[k] = v end end\n"
	"for k, v in pairs(ctx.settings) do s[k] = v end\n"
	"ctx.settings = s\n"
	"local ok, err = pcall(pb.run, ctx)\n"
	"if not ok then\n"
	"  if final(err) then return 'final', tostring(rawget(err, 'reason')) end\n"
	"  return 'run', tostring(err)\n"
	"end\n"
	"local vok, v1, v2 = pcall(pb.verify, ctx)\n"
	"if not vok then\n"
	"  if final(v1) then return 'final', tostring(rawget(v1, 'reason')) end\n"
	"  return 'verify_error', tostring(v1)\n"
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
	lua_pushboolean(L, j->dry_run);
	lua_setfield(L, -2, "dry_run");
	lua_api_push_settings(L, j->playbook_name); /* merged over pb.settings by the driver */
	lua_setfield(L, -2, "settings");
}

static void resume(struct runner *r, struct job *j, int nargs);

static void attempt_start(struct runner *r, struct job *j)
{
	struct attempt_rt *rt;
	struct attempt_row a = {0};
	char chunk[300], err[512];
	struct playbook *pb = j->pb;

	pthread_mutex_lock(&r->e->mu);
	if (j->state == JS_CANCELLED) {
		pthread_mutex_unlock(&r->e->mu);
		engine_job_done(r->e, j);
		return;
	}
	job_set_state(&r->e->counts, j, JS_RUNNING);
	j->attempts++;
	j->next_run_at = 0;
	if (!j->started_at)
		j->started_at = rd_now();
	pthread_mutex_unlock(&r->e->mu);

	rt = calloc(1, sizeof(*rt));
	if (!rt) {
		attempt_end(r, j, "failed", "out of memory", -1, NULL);
		return;
	}
	j->rt = rt;
	rt->n = j->attempts;
	rt->started = rd_mono();
	rt->started_wall = rd_now();
	rt->sb.mem_max = r->o.mem_max;
	rt->sb.lua_path = r->o.lua_path;
	rt->sb.owner = j;
	r->in_flight++;
	metrics_set(M_JOBS_IN_FLIGHT, NULL, NULL, (double)r->in_flight);

	/* Mark it running durably before any side effect: a crash from here on
	 * is found as "running" at start-up (DESIGN.md §5). */
	a.n = rt->n;
	a.started_at = rt->started_wall;
	a.verify_ok = -1;
	if (commit_job(r, j, &a, 1) != RD_OK)
		log_kv(LOG_ERROR, j->id, "journal: cannot record the attempt start", NULL);
	log_kv(LOG_INFO, j->id, "attempt started", "playbook", j->playbook_name, "key", j->key, NULL);

	rt->L = sandbox_new(&rt->sb);
	if (!rt->L) {
		attempt_end(r, j, "failed", "cannot create a Lua state", -1, NULL);
		return;
	}
	lua_api_open(rt->L, j);
	rt->sb.deadline = rt->started + pb->timeout;
	snprintf(chunk, sizeof(chunk), "@%s", pb->file);
	watchdog_enter(r->o.wd, j->id, j->playbook_name);
	int loaded = sandbox_load_compiled(rt->L, pb->chunk, pb->chunk_len, chunk) == LUA_OK &&
	             sandbox_call(rt->L, 0, 1) == LUA_OK;
	watchdog_leave(r->o.wd);
	if (!loaded || !lua_istable(rt->L, -1)) {
		snprintf(err, sizeof(err), "loading the playbook: %s",
		         lua_type(rt->L, -1) == LUA_TSTRING ? lua_tostring(rt->L, -1)
		                                             : "did not return a table");
		attempt_end(r, j, "failed", err, -1, NULL);
		return;
	}
	/* Stack: pbtable. Build the coroutine: driver(pbtable, ctx). These
	 * calls run unprotected, so the budget is lifted around them. */
	rt->sb.no_limit = 1;
	rt->co = lua_newthread(rt->L);
	lua_pushvalue(rt->L, -1);
	lua_setfield(rt->L, LUA_REGISTRYINDEX, "recoveryd.co"); /* keep it alive */
	lua_pop(rt->L, 1);
	if (sandbox_load_compiled(rt->co, r->driver, r->driver_len, "=driver") != LUA_OK) {
		rt->sb.no_limit = 0;
		attempt_end(r, j, "failed", "internal: driver does not compile", -1, NULL);
		return;
	}
	lua_pushvalue(rt->L, -1);
	lua_xmove(rt->L, rt->co, 1);
	push_ctx(rt->co, j, rt->n);
	rt->sb.no_limit = 0;
	rt->sb.preempt_co = rt->co;
	rt->sb.hold_max = HOLD_MAX;
	if (r->o.wd && watchdog_unhealthy_after(r->o.wd) / 2 < HOLD_MAX)
		rt->sb.hold_max = watchdog_unhealthy_after(r->o.wd) / 2;
	timer_add(r, j, T_DEADLINE, rt->sb.deadline);
	resume(r, j, 2);
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
	int cancel;

	pthread_mutex_lock(&r->e->mu);
	cancel = j->cancel_requested;
	pthread_mutex_unlock(&r->e->mu);
	if (cancel) {
		attempt_end(r, j, "cancelled", j->cancel_reason ? j->cancel_reason : "cancelled", -1, NULL);
		return;
	}
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
			attempt_end(r, j, "timeout", msg, -1, NULL);
		} else if (rt->sb.preempted && !rt->op) {
			/* Its slice is over: continue after this loop turn. fire_timers
			 * takes only timers due when it started, so this is not
			 * resumed before the loop polls again. */
			if (timer_add(r, j, T_RESUME, rd_mono() + 1e-6) < 0)
				attempt_end(r, j, "failed", "out of memory", -1, NULL);
		} else if (!rt->op) {
			attempt_end(r, j, "failed",
			            "the playbook yielded outside a recovery call (coroutine.yield at top level)",
			            -1, NULL);
		}
		return; /* waiting on rt->op */
	}
	if (status != LUA_OK) {
		char *m = msg_dup(rt->co, -1);
		attempt_end(r, j, rt->sb.timed_out ? "timeout" : "failed",
		            rt->sb.timed_out ? "attempt deadline exceeded" : (m ? m : "error"), -1, NULL);
		free(m);
		return;
	}
	/* driver returns: phase, err, verify_ok, verify_reason */
	lua_settop(rt->co, 4);
	const char *phase = lua_tostring(rt->co, 1);
	char *err = msg_dup(rt->co, 2);
	int vok = lua_isnil(rt->co, 3) ? -1 : lua_toboolean(rt->co, 3);
	char *vreason = msg_dup(rt->co, 4);
	char msg[1024];

	if (phase && strcmp(phase, "ok") == 0) {
		attempt_end(r, j, "succeeded", NULL, 1, vreason);
	} else if (phase && strcmp(phase, "final") == 0) {
		/* recovery.fail(): no further attempts. */
		j->max_attempts = j->attempts;
		snprintf(msg, sizeof(msg), "%s", err ? err : "failed");
		attempt_end(r, j, "failed", msg, -1, NULL);
	} else if (phase && strcmp(phase, "verify") == 0) {
		snprintf(msg, sizeof(msg), "verify: %s", vreason ? vreason : "false");
		attempt_end(r, j, "failed", msg, vok, vreason);
	} else {
		snprintf(msg, sizeof(msg), "%s: %s", phase && strcmp(phase, "run") == 0 ? "run" : "verify",
		         err ? err : "error");
		attempt_end(r, j, "failed", msg, -1, NULL);
	}
	free(err);
	free(vreason);
}

static double jitter_rnd(void)
{
	unsigned int x = 0;
	if (getrandom(&x, sizeof(x), 0) != sizeof(x))
		x = (unsigned int)(rd_mono() * 1e6);
	return (double)x / 4294967296.0;
}

static void attempt_end(struct runner *r, struct job *j, const char *result, const char *error,
                        int verify_ok, const char *verify_reason)
{
	struct attempt_rt *rt = j->rt;
	struct attempt_row a = {0};
	char *err_copy = error ? job_redact(j, strdup(error)) : NULL;
	char *vr_copy = verify_reason ? job_redact(j, strdup(verify_reason)) : NULL;
	int final = 0, interrupted = strcmp(result, "interrupted") == 0;
	enum log_level lvl = LOG_INFO;

	if (rt) {
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
		a.n = rt->n;
		a.started_at = rt->started_wall;
		metrics_observe(M_JOB_DURATION, j->playbook_name, rd_mono() - rt->started);
		free(rt);
		j->rt = NULL;
		r->in_flight--;
		metrics_set(M_JOBS_IN_FLIGHT, NULL, NULL, (double)r->in_flight);
	}
	a.ended_at = rd_now();
	a.result = result;
	a.error = err_copy;
	a.verify_ok = verify_ok;
	a.verify_reason = vr_copy;
	metrics_add(M_JOB_ATTEMPTS, j->playbook_name, result, 1);
	if (strcmp(result, "timeout") == 0)
		metrics_add(M_PLAYBOOK_ERRORS, j->playbook_name, "timeout", 1);
	else if (err_copy && strstr(err_copy, "not enough memory"))
		metrics_add(M_PLAYBOOK_ERRORS, j->playbook_name, "memory", 1);
	else if (err_copy && strncmp(err_copy, "loading the playbook", 20) == 0)
		metrics_add(M_PLAYBOOK_ERRORS, j->playbook_name, "load", 1);

	pthread_mutex_lock(&r->e->mu);
	set_str(&j->error, err_copy);
	if (strcmp(result, "succeeded") == 0) {
		job_set_state(&r->e->counts, j, JS_SUCCEEDED);
		set_str(&j->outcome, j->dry_run ? "dry_run_succeeded" : "succeeded");
		final = 1;
	} else if (j->cancel_requested || strcmp(result, "cancelled") == 0) {
		job_set_state(&r->e->counts, j, JS_CANCELLED);
		set_str(&j->outcome, "cancelled");
		if (!err_copy)
			set_str(&j->error, j->cancel_reason);
		final = 1;
	} else if (interrupted) {
		/* Drain ran out of time: DESIGN.md §5 crash rules, applied now. */
		if (j->pb->idempotent) {
			job_set_state(&r->e->counts, j, JS_QUEUED);
			j->attempts--;
		} else {
			job_set_state(&r->e->counts, j, JS_FAILED);
			set_str(&j->outcome, "interrupted");
			final = 1;
		}
	} else if (j->attempts < j->max_attempts) {
		double d = playbook_backoff(j->pb, j->attempts, jitter_rnd());
		job_set_state(&r->e->counts, j, JS_RETRY_WAIT);
		j->next_run_at = rd_now() + d;
		timer_add(r, j, T_RETRY, rd_mono() + d);
		lvl = LOG_WARN;
	} else {
		job_set_state(&r->e->counts, j, JS_FAILED);
		/* A dry-run says so in its outcome, and stays out of the
		 * auto-recovery ratio (outcome="succeeded" vs "failed"). */
		set_str(&j->outcome, j->dry_run ? "dry_run_failed" : "failed");
		final = 1;
		lvl = LOG_ERROR;
	}
	if (final)
		j->ended_at = rd_now();
	pthread_mutex_unlock(&r->e->mu);

	if (commit_job(r, j, &a, 1) != RD_OK)
		log_kv(LOG_ERROR, j->id, "journal: cannot record the attempt end", NULL);
	{
		char n[16];
		snprintf(n, sizeof(n), "%d", a.n);
		log_kv(lvl, j->id, "attempt ended", "playbook", j->playbook_name, "attempt", n, "result",
		       result, "error", err_copy ? err_copy : "", "state", job_state_name(j->state), NULL);
	}
	free(err_copy);
	free(vr_copy);
	if (final) {
		engine_job_done(r->e, j);
	} else if (j->state == JS_QUEUED) {
		ready_push(r, j);
	}
}

/* ---------- escalation outbox ---------- */

static void delivery_free(struct delivery *d)
{
	if (!d)
		return;
	free(d->id);
	free(d->job_id);
	free(d->sink);
	free(d->kind);
	free(d->payload);
	free(d->incident);
	free(d);
}

static void outbox_gauge(struct runner *r)
{
	metrics_set(M_OUTBOX_DEPTH, NULL, NULL, (double)r->n_deliveries);
}

static void delivery_forget(struct runner *r, struct delivery *d)
{
	for (struct delivery **pp = &r->deliveries; *pp; pp = &(*pp)->next)
		if (*pp == d) {
			*pp = d->next;
			r->n_deliveries--;
			break;
		}
	outbox_gauge(r);
	delivery_free(d);
}

static void delivery_update(struct runner *r, struct delivery *d, const char *state, const char *answer,
                            double next_at, double delivered_at)
{
	struct escalation_row e = {.id = d->id, .state = state, .attempts = d->attempts,
	                           .last_answer = answer, .updated_at = rd_now(),
	                           .next_attempt_at = next_at, .delivered_at = delivered_at};
	struct store_batch *b = store_batch_new();

	if (b && store_batch_escalation_update(b, &e) == 0)
		store_commit(r->e->store, b, 0);
	else
		store_batch_free(b);
}

/* A resolve must not overtake its trigger: PagerDuty drops a resolve for
 * an incident it does not know, and the late trigger would then open one
 * that nobody closes. */
static int waits_for_trigger(struct runner *r, const struct delivery *d)
{
	if (strcmp(d->kind, "resolve") != 0 || !d->incident)
		return 0;
	for (const struct delivery *o = r->deliveries; o; o = o->next)
		if (o != d && strcmp(o->kind, "trigger") == 0 && o->incident &&
		    strcmp(o->incident, d->incident) == 0 && strcmp(o->sink, d->sink) == 0)
			return 1;
	return 0;
}

static void delivery_start(struct runner *r, struct delivery *d)
{
	char *url = NULL, *body = NULL;
	struct op *op;

	if (waits_for_trigger(r, d)) {
		timer_add_dl(r, d, rd_mono() + 0.25);
		return;
	}

	if (escalate_wire(d->sink, d->payload, &url, &body) < 0) {
		log_kv(LOG_ERROR, d->job_id, "escalation: sink is not configured", "sink", d->sink, NULL);
		metrics_add(M_ESCALATIONS, d->sink, "not_configured", 1);
		delivery_update(r, d, "failed", "sink not configured", 0, 0);
		delivery_forget(r, d);
		return;
	}
	op = calloc(1, sizeof(*op));
	if (!op || !(op->easy = curl_easy_init())) {
		free(op);
		free(url);
		free(body);
		timer_add_dl(r, d, rd_mono() + 1); /* try again shortly */
		return;
	}
	op->kind = OP_DELIVERY;
	op->pidfd = op->out_fd = op->err_fd = -1;
	op->ctx = d;
	op->body = body;
	op->started = rd_mono();
	op->resp.max = 64 * 1024;
	op->resp_headers.max = 64 * 1024;
	op->headers = curl_slist_append(NULL, "Content-Type: application/json");
	op->headers = curl_slist_append(op->headers, "Expect:");
	curl_easy_setopt(op->easy, CURLOPT_URL, url);
	curl_easy_setopt(op->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(op->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(op->easy, CURLOPT_TIMEOUT, 15L);
	curl_easy_setopt(op->easy, CURLOPT_POSTFIELDS, op->body);
	curl_easy_setopt(op->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(op->body));
	curl_easy_setopt(op->easy, CURLOPT_HTTPHEADER, op->headers);
	curl_easy_setopt(op->easy, CURLOPT_WRITEFUNCTION, dl_body);
	curl_easy_setopt(op->easy, CURLOPT_WRITEDATA, &op->resp);
	curl_easy_setopt(op->easy, CURLOPT_HEADERFUNCTION, dl_body);
	curl_easy_setopt(op->easy, CURLOPT_HEADERDATA, &op->resp_headers);
	curl_easy_setopt(op->easy, CURLOPT_ERRORBUFFER, op->errbuf);
	curl_easy_setopt(op->easy, CURLOPT_USERAGENT, "recoveryd/" RECOVERYD_VERSION);
	curl_easy_setopt(op->easy, CURLOPT_PRIVATE, op);
	explicit_bzero(url, strlen(url)); /* the Slack URL is the secret */
	free(url);
	d->op = op;
	d->attempts++;
	curl_multi_add_handle(r->multi, op->easy);
}

/* Retry-After in seconds from the raw response headers, or -1. */
static double retry_after(const struct rbuf *h)
{
	for (const char *p = h->p; p && *p;) {
		if (strncasecmp(p, "retry-after:", 12) == 0) {
			char *end;
			double v = strtod(p + 12, &end);
			return end != p + 12 && v >= 0 ? v : -1;
		}
		const char *nl = strchr(p, '\n');
		p = nl ? nl + 1 : NULL;
	}
	return -1;
}

static void delivery_done(struct runner *r, struct op *op)
{
	struct delivery *d = op->ctx;
	long status = 0;
	double delay = 0;
	char answer[640];
	enum esc_verdict v;

	d->op = NULL;
	if (op->cc == CURLE_OK)
		curl_easy_getinfo(op->easy, CURLINFO_RESPONSE_CODE, &status);
	v = escalate_classify(d->sink, op->cc, status, op->resp.p ? op->resp.p : "", retry_after(&op->resp_headers),
	                      d->attempts, jitter_rnd(), &delay);
	if (op->cc != CURLE_OK)
		snprintf(answer, sizeof(answer), "%s", op->errbuf[0] ? op->errbuf : curl_easy_strerror(op->cc));
	else
		snprintf(answer, sizeof(answer), "%ld %.600s", status, op->resp.p ? op->resp.p : "");
	curl_multi_remove_handle(r->multi, op->easy);
	op->ctx = NULL;
	op_free(op);

	switch (v) {
	case ESC_DELIVERED:
		metrics_add(M_ESCALATIONS, d->sink, "delivered", 1);
		metrics_observe(M_ESCALATION_LATENCY, d->sink, rd_now() - d->created_at);
		log_kv(LOG_INFO, d->job_id, "escalation delivered", "sink", d->sink, "kind", d->kind, "answer",
		       answer, NULL);
		delivery_update(r, d, "delivered", answer, 0, rd_now());
		delivery_forget(r, d);
		break;
	case ESC_FAILED:
		metrics_add(M_ESCALATIONS, d->sink, "failed", 1);
		log_kv(LOG_ERROR, d->job_id, "escalation failed permanently", "sink", d->sink, "kind", d->kind,
		       "answer", answer, NULL);
		delivery_update(r, d, "failed", answer, 0, 0);
		delivery_forget(r, d);
		break;
	case ESC_RETRY: {
		char dl[32];
		metrics_add(M_ESCALATIONS, d->sink, "retried", 1);
		snprintf(dl, sizeof(dl), "%.3f", delay);
		log_kv(LOG_WARN, d->job_id, "escalation will be retried", "sink", d->sink, "kind", d->kind,
		       "answer", answer, "retry_in_seconds", dl, NULL);
		delivery_update(r, d, "retrying", answer, rd_now() + delay, 0);
		timer_add_dl(r, d, rd_mono() + delay);
		break;
	}
	}
}

void runner_deliver(struct runner *r, const struct escalation_row *e)
{
	struct delivery *d = calloc(1, sizeof(*d));
	struct msg *m = calloc(1, sizeof(*m));

	if (!d || !m || !(d->id = strdup(e->id)) || !(d->job_id = strdup(e->job_id)) ||
	    !(d->sink = strdup(e->sink)) || !(d->kind = strdup(e->kind ? e->kind : "trigger")) ||
	    !(d->payload = strdup(e->payload ? e->payload : "{}"))) {
		delivery_free(d);
		free(m);
		return; /* journaled as pending: sent after the next restart */
	}
	d->attempts = e->attempts;
	d->created_at = e->created_at;
	d->incident = e->incident_key ? strdup(e->incident_key) : NULL;
	m->dl = d;
	m->job = NULL;
	pthread_mutex_lock(&r->mu);
	if (r->inbox_tail)
		r->inbox_tail->next = m;
	else
		r->inbox = m;
	r->inbox_tail = m;
	pthread_mutex_unlock(&r->mu);
	curl_multi_wakeup(r->multi);
}

/* ---------- loop ---------- */

static void cancel_job(struct runner *r, struct job *j)
{
	if (j->rt) {
		/* Running: stop now if it waits on an op, else at its next yield. */
		if (j->rt->op)
			attempt_end(r, j, "cancelled", j->cancel_reason ? j->cancel_reason : "cancelled", -1,
			            NULL);
		return;
	}
	/* Queued or waiting for a retry: it ends here, without another attempt. */
	if (!ready_remove(r, j) && !timers_has(r, j))
		return; /* not ours yet (still in the inbox) or already ended */
	timers_drop_job(r, j, -1);
	pthread_mutex_lock(&r->e->mu);
	job_set_state(&r->e->counts, j, JS_CANCELLED);
	set_str(&j->outcome, "cancelled");
	set_str(&j->error, j->cancel_reason ? j->cancel_reason : "cancelled");
	j->next_run_at = 0;
	j->ended_at = rd_now();
	pthread_mutex_unlock(&r->e->mu);
	if (commit_job(r, j, NULL, 1) != RD_OK)
		log_kv(LOG_ERROR, j->id, "journal: cannot record the cancellation", NULL);
	engine_job_done(r->e, j);
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
		if (m->dl) {
			m->dl->next = r->deliveries;
			r->deliveries = m->dl;
			r->n_deliveries++;
			outbox_gauge(r);
			delivery_start(r, m->dl);
		} else if (m->cancel) {
			/* Only this thread frees jobs: one still in the table is
			 * alive until this thread ends it. */
			pthread_mutex_lock(&r->e->mu);
			j = map_get(r->e->active_by_id, m->cancel_id);
			pthread_mutex_unlock(&r->e->mu);
			if (j)
				cancel_job(r, j);
		} else if (j->state == JS_RETRY_WAIT) {
			double delay = j->next_run_at - rd_now();
			timer_add(r, j, T_RETRY, rd_mono() + (delay > 0 ? delay : 0));
		} else {
			ready_push(r, j);
		}
		free(m);
		m = next;
	}
}

static void finish_op(struct runner *r, struct op *op);

static void fire_timers(struct runner *r, int draining)
{
	double now = rd_mono();

	while (r->n_timers && r->timers[0].when <= now) {
		struct timer t = r->timers[0];
		heap_pop(r);
		struct job *j = t.job;
		switch (t.kind) {
		case T_RETRY:
			if (draining) {
				/* keep it: it stays retry_wait in the journal */
				continue;
			}
			ready_push(r, j);
			break;
		case T_DEADLINE:
			if (j->rt && j->rt->n == t.attempt) {
				char msg[128];
				snprintf(msg, sizeof(msg), "attempt timed out after %gs", j->pb->timeout);
				attempt_end(r, j, "timeout", msg, -1, NULL);
			}
			break;
		case T_DELIVER:
			delivery_start(r, t.dl);
			break;
		case T_SLEEP:
			if (j->rt && j->rt->op && j->rt->op->kind == OP_SLEEP) {
				finish_op(r, j->rt->op);
			}
			break;
		case T_RESUME:
			if (j->rt && j->rt->n == t.attempt && !j->rt->op)
				resume(r, j, 0);
			break;
		}
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

static void check_transfers(struct runner *r)
{
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(r->multi, &left))) {
		struct op *op = NULL;
		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&op);
		op->cc = m->data.result;
		if (op->kind == OP_DELIVERY) {
			delivery_done(r, op);
			continue;
		}
		curl_multi_remove_handle(r->multi, m->easy_handle);
		finish_op(r, op);
	}
}

static void check_procs(struct runner *r)
{
	double now = rd_mono();

	for (size_t i = 0; i < r->n_procs;) {
		struct op *op = r->procs[i];
		if (lua_exec_poll(op, now)) {
			r->procs[i] = r->procs[--r->n_procs];
			finish_op(r, op);
			continue;
		}
		i++;
	}
}

static void start_ready(struct runner *r)
{
	while (r->ready && r->in_flight < r->o.max_in_flight)
		attempt_start(r, ready_pop(r));
}

static void *loop(void *arg)
{
	struct runner *r = arg;
	struct curl_waitfd fds[LUA_EXEC_WAITFDS * MAX_PROCS];

	watchdog_start(r->o.wd);
	for (;;) {
		int draining, stop;
		double drain_deadline;

		watchdog_beat(r->o.wd);
		drain_inbox(r);
		pthread_mutex_lock(&r->mu);
		draining = r->draining;
		stop = r->stop;
		drain_deadline = r->drain_deadline;
		pthread_mutex_unlock(&r->mu);
		if (stop)
			break;
		if (draining) {
			if (r->in_flight == 0)
				break;
			if (rd_mono() >= drain_deadline) {
				/* Interrupt what is left; interrupted jobs are recorded as
				 * the crash rules say, so the journal stays consistent. */
				for (size_t i = 0; i < r->n_timers; i++)
					if (r->timers[i].kind == T_DEADLINE && r->timers[i].job->rt) {
						attempt_end(r, r->timers[i].job, "interrupted",
						            "interrupted: shutdown grace period ended", -1, NULL);
						i = (size_t)-1; /* the heap changed: rescan */
					}
				continue;
			}
		} else {
			start_ready(r);
		}

		double wait = MAX_WAIT_MS / 1000.0;
		if (r->n_timers) {
			double d = r->timers[0].when - rd_mono();
			if (d < wait)
				wait = d < 0 ? 0 : d;
		}
		unsigned nfds = 0;
		for (size_t i = 0; i < r->n_procs; i++)
			nfds += lua_exec_wait(r->procs[i], fds + nfds, &wait);
		if (draining && wait > 0.1)
			wait = 0.1;
		curl_multi_poll(r->multi, fds, nfds, (int)ceil(wait * 1000), NULL);
		int running;
		curl_multi_perform(r->multi, &running);
		check_transfers(r);
		if (r->n_procs)
			check_procs(r);
		fire_timers(r, draining);
	}
	watchdog_stop(r->o.wd); /* leaving on purpose: not a stall */
	return NULL;
}

struct runner *runner_new(struct engine *e, const struct runner_opts *o)
{
	struct runner *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->e = e;
	r->o = *o;
	/* Own the path: the config that lent it is freed on SIGHUP. */
	r->lua_path = o->lua_path ? strdup(o->lua_path) : NULL;
	r->o.lua_path = r->lua_path;
	if (!r->o.max_in_flight)
		r->o.max_in_flight = 16;
	char err[256];
	r->driver = sandbox_compile(DRIVER, sizeof(DRIVER) - 1, "=driver", &r->driver_len, err, sizeof(err));
	pthread_mutex_init(&r->mu, NULL);
	r->multi = curl_multi_init();
	if (!r->multi || !r->driver) {
		if (r->multi)
			curl_multi_cleanup(r->multi);
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
	if (pthread_create(&r->thr, NULL, loop, r) != 0)
		return RD_ERR;
	r->started = 1;
	return RD_OK;
}

/* Hand the runner a job to schedule (j), or the id of a job to cancel. */
static void post(struct runner *r, struct job *j, const char *cancel_id)
{
	struct msg *m = calloc(1, sizeof(*m));

	if (!m)
		return; /* the job stays in the journal; it resumes on restart */
	m->cancel = cancel_id != NULL;
	if (cancel_id) {
		snprintf(m->cancel_id, sizeof(m->cancel_id), "%s", cancel_id);
	} else {
		m->job = j;
		j->runner = r;
		j->host = &host;
	}
	pthread_mutex_lock(&r->mu);
	if (r->inbox_tail)
		r->inbox_tail->next = m;
	else
		r->inbox = m;
	r->inbox_tail = m;
	pthread_mutex_unlock(&r->mu);
	curl_multi_wakeup(r->multi);
}

void runner_schedule(struct runner *r, struct job *j)
{
	post(r, j, NULL);
}

void runner_cancel(struct runner *r, const char *job_id)
{
	post(r, NULL, job_id);
}

void runner_drain(struct runner *r, double grace)
{
	pthread_mutex_lock(&r->mu);
	r->draining = 1;
	r->drain_deadline = rd_mono() + grace;
	pthread_mutex_unlock(&r->mu);
	curl_multi_wakeup(r->multi);
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
		curl_multi_wakeup(r->multi);
		pthread_join(r->thr, NULL);
	}
	/* Jobs still queued or waiting stay in the journal; free their memory. */
	for (size_t i = 0; i < r->n_procs; i++)
		op_abort(r, r->procs[i]);
	struct msg *m = r->inbox;
	while (m) {
		struct msg *n = m->next;
		delivery_free(m->dl);
		free(m);
		m = n;
	}
	/* Undelivered notifications stay pending in the journal. */
	while (r->deliveries) {
		struct delivery *d = r->deliveries;
		r->deliveries = d->next;
		if (d->op) {
			curl_multi_remove_handle(r->multi, d->op->easy);
			d->op->ctx = NULL;
			op_free(d->op);
		}
		delivery_free(d);
	}
	curl_multi_cleanup(r->multi);
	free(r->timers);
	pthread_mutex_destroy(&r->mu);
	free(r->driver);
	free(r->lua_path);
	free(r);
}

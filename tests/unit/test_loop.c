/* Unit tests for src/loop.c: timer order and O(log n) deletion by id, the
 * "added during dispatch runs next turn" rule, fds (stale events of an fd
 * deleted in the same turn), wakeups from a thread and a signal handler, a
 * child watched through its pidfd, and curl transfers against an HTTP server
 * on 127.0.0.1 run by the test itself. Every wait is bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "recoveryd/common.h"
#include "recoveryd/loop.h"

#define DEADLINE 10.0 /* seconds any single wait in these tests may take */

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static uint64_t rnd_next(uint64_t *s)
{
	*s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
	return *s >> 33;
}

/* ---------- timers ---------- */

struct tlog {
	int *tags;
	size_t n, cap;
};

struct tnode {
	struct tlog *log;
	int tag;
	double when;
	long long id;
	long long victim; /* a timer to delete when this one runs, or 0 */
	int victim_rc;
	int self_rc;      /* loop_timer_del of its own id from its callback */
};

static void on_timer(struct loop *l, long long id, void *arg)
{
	struct tnode *t = arg;

	assert_int_equal(id, t->id);
	assert_true(t->log->n < t->log->cap);
	t->log->tags[t->log->n++] = t->tag;
	t->self_rc = loop_timer_del(l, id);
	if (t->victim)
		t->victim_rc = loop_timer_del(l, t->victim);
}

static void add_node(struct loop *l, struct tnode *t, struct tlog *log, int tag, double when)
{
	memset(t, 0, sizeof(*t));
	t->log = log;
	t->tag = tag;
	t->when = when;
	t->id = loop_timer_add(l, when, on_timer, t);
	assert_true(t->id > 0);
}

static void test_timer_order(void **state)
{
	static const double offs[] = {3, 1, 4, 1, 5, 9, 2, 6};
	static const int expect[] = {1, 3, 6, 0, 2, 4, 7, 5}; /* by when, ties as added */
	struct loop *l = loop_new();
	struct tnode t[9];
	int tags[16];
	struct tlog log = {tags, 0, 16};
	double base = rd_mono() - 100, t0;

	(void)state;
	assert_non_null(l);
	assert_int_equal(loop_timer_count(l), 0);
	assert_true(loop_next_timer(l) < 0);
	for (int i = 0; i < 8; i++)
		add_node(l, &t[i], &log, i, base + offs[i]);
	add_node(l, &t[8], &log, 8, rd_mono() + 3600); /* not due */
	assert_int_equal(loop_timer_count(l), 9);
	assert_true(loop_next_timer(l) == base + 1);
	assert_int_equal(loop_run_once(l, 0), 8);
	assert_int_equal(log.n, 8);
	for (int i = 0; i < 8; i++)
		assert_int_equal(tags[i], expect[i]);
	assert_int_equal(loop_timer_count(l), 1);
	assert_true(loop_next_timer(l) == t[8].when);
	assert_int_equal(loop_timer_del(l, t[8].id), 0);
	assert_int_equal(loop_timer_count(l), 0);
	assert_true(loop_next_timer(l) < 0);

	/* A near timer cuts a long wait short, and not before it is due. */
	log.n = 0;
	add_node(l, &t[0], &log, 42, rd_mono() + 0.05);
	t0 = rd_mono();
	assert_int_equal(loop_run_once(l, 30.0), 1);
	assert_true(rd_mono() - t0 >= 0.045);
	assert_true(rd_mono() - t0 < DEADLINE);
	assert_int_equal(log.n, 1);
	assert_int_equal(tags[0], 42);

	/* Bad arguments. */
	assert_int_equal(loop_timer_add(l, 0.0 / 0.0, on_timer, NULL), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(loop_timer_add(l, 0, NULL, NULL), -1);
	/* Freed with a timer pending: dropped, not run, not leaked. */
	assert_true(loop_timer_add(l, rd_mono() + 3600, on_timer, &t[0]) > 0);
	loop_free(l);
	assert_int_equal(log.n, 1);
}

static void test_timer_del_large_heap(void **state)
{
	enum { N = 10000 };
	struct loop *l = loop_new();
	struct tnode *t = calloc(N, sizeof(*t));
	int *seen = calloc(N, sizeof(*seen));
	size_t *del = calloc(N, sizeof(*del));
	struct tlog log = {calloc(N, sizeof(int)), 0, N};
	double base = rd_mono() - 1000;
	uint64_t seed = 12345;
	size_t ndel = 0;

	(void)state;
	assert_non_null(l);
	assert_non_null(t);
	assert_non_null(seen);
	assert_non_null(del);
	assert_non_null(log.tags);
	/* Random times in the past, some equal (ties keep the order added). */
	for (int i = 0; i < N; i++)
		add_node(l, &t[i], &log, i, base + (double)(rnd_next(&seed) % 5000) / 10.0);
	assert_int_equal(loop_timer_count(l), N);
	for (size_t i = 0; i < N; i += 3)
		del[ndel++] = i;
	for (size_t i = ndel - 1; i > 0; i--) { /* shuffle: delete from all over the heap */
		size_t j = (size_t)(rnd_next(&seed) % (i + 1)), x = del[i];
		del[i] = del[j];
		del[j] = x;
	}
	for (size_t i = 0; i < ndel; i++)
		assert_int_equal(loop_timer_del(l, t[del[i]].id), 0);
	for (size_t i = 0; i < ndel; i++) {
		assert_int_equal(loop_timer_del(l, t[del[i]].id), -1);
		assert_int_equal(errno, ENOENT);
	}
	assert_int_equal(loop_timer_count(l), N - ndel);

	assert_int_equal(loop_run_once(l, 0), (int)(N - ndel));
	assert_int_equal(log.n, N - ndel);
	for (size_t k = 0; k < log.n; k++) {
		int i = log.tags[k];
		assert_true(i % 3 != 0); /* a deleted timer never fires */
		assert_int_equal(seen[i], 0);
		seen[i] = 1;
		if (k > 0) {
			struct tnode *p = &t[log.tags[k - 1]];
			assert_true(p->when < t[i].when || (p->when == t[i].when && p->tag < i));
		}
	}
	assert_int_equal(loop_timer_count(l), 0);
	assert_int_equal(loop_run_once(l, 0), 0);
	free(log.tags);
	free(del);
	free(seen);
	free(t);
	loop_free(l);
}

static void test_timer_del_fired(void **state)
{
	struct loop *l = loop_new();
	struct tnode a, b;
	int tags[4];
	struct tlog log = {tags, 0, 4};

	(void)state;
	add_node(l, &a, &log, 1, 0);
	assert_int_equal(loop_run_once(l, 0), 1);
	assert_int_equal(a.self_rc, -1); /* gone before its callback ran */
	assert_int_equal(loop_timer_del(l, a.id), -1);
	assert_int_equal(loop_timer_del(l, a.id), -1);
	/* The next timer reuses the slot: the old id must not reach it. */
	add_node(l, &b, &log, 2, 0);
	assert_true(b.id != a.id);
	assert_int_equal(loop_timer_del(l, a.id), -1);
	assert_int_equal(loop_timer_count(l), 1);
	assert_int_equal(loop_timer_del(l, 0), -1);
	assert_int_equal(loop_timer_del(l, -7), -1);
	assert_int_equal(loop_timer_del(l, 0x7fffffffffffffffLL), -1);
	assert_int_equal(loop_run_once(l, 0), 1);
	assert_int_equal(log.n, 2);
	assert_int_equal(tags[1], 2);
	assert_int_equal(loop_timer_del(l, b.id), -1);
	loop_free(l);
}

static void test_timer_cb_deletes_other(void **state)
{
	struct loop *l = loop_new();
	struct tnode a, b, c;
	int tags[4];
	struct tlog log = {tags, 0, 4};
	double base = rd_mono() - 10;

	(void)state;
	add_node(l, &a, &log, 1, base + 1);
	add_node(l, &b, &log, 2, base + 2);
	add_node(l, &c, &log, 3, base + 3);
	a.victim = b.id; /* due in this turn too */
	assert_int_equal(loop_run_once(l, 0), 2);
	assert_int_equal(a.victim_rc, 0);
	assert_int_equal(log.n, 2);
	assert_int_equal(tags[0], 1);
	assert_int_equal(tags[1], 3);
	assert_int_equal(loop_run_once(l, 0), 0);
	assert_int_equal(log.n, 2);
	loop_free(l);
}

/* A timer or fd callback that schedules more timers while dispatching. */
struct spawner {
	struct tlog *log;
	struct tnode kids[2];
	double kid_when[2];
	int nkids;
	int fd;
};

static void spawn(struct loop *l, struct spawner *s)
{
	for (int i = 0; i < s->nkids; i++)
		add_node(l, &s->kids[i], s->log, s->kids[i].tag, s->kid_when[i] < 0 ? rd_mono() : s->kid_when[i]);
}

static void on_spawn_timer(struct loop *l, long long id, void *arg)
{
	struct spawner *s = arg;

	(void)id;
	s->log->tags[s->log->n++] = 100;
	spawn(l, s);
}

static void on_spawn_fd(struct loop *l, int fd, int mask, void *arg)
{
	struct spawner *s = arg;

	assert_int_equal(mask, LOOP_READ);
	loop_fd_del(l, fd);
	spawn(l, s);
}

static void test_timer_added_during_dispatch(void **state)
{
	struct loop *l = loop_new();
	int tags[8], p[2];
	struct tlog log = {tags, 0, 8};
	struct spawner ts, fs;
	struct tnode old;
	double now = rd_mono();

	(void)state;
	memset(&ts, 0, sizeof(ts));
	memset(&fs, 0, sizeof(fs));
	/* A due timer that adds a far-past one and a "now" one. */
	ts.log = &log;
	ts.nkids = 2;
	ts.kids[0].tag = 2;
	ts.kid_when[0] = 0;
	ts.kids[1].tag = 3;
	ts.kid_when[1] = -1; /* rd_mono() at the time of the call */
	assert_true(loop_timer_add(l, now - 0.5, on_spawn_timer, &ts) > 0);
	/* An fd callback, dispatched before timers, adds one due even earlier
	 * than the old timer: it must neither run now nor hold the old one. */
	fs.log = &log;
	fs.nkids = 1;
	fs.kids[0].tag = 4;
	fs.kid_when[0] = now - 10;
	assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	assert_int_equal(loop_fd_add(l, p[0], LOOP_READ, on_spawn_fd, &fs), 0);
	assert_int_equal(write(p[1], "x", 1), 1);
	add_node(l, &old, &log, 1, now - 0.25);

	assert_int_equal(loop_run_once(l, 0), 3); /* the fd, the spawner, old */
	assert_int_equal(log.n, 2);
	assert_int_equal(tags[0], 100);
	assert_int_equal(tags[1], 1);
	assert_int_equal(loop_timer_count(l), 3);
	/* Next turn: all three, the overdue ones in the order added. */
	assert_int_equal(loop_run_once(l, 0), 3);
	assert_int_equal(log.n, 5);
	assert_int_equal(tags[2], 4);
	assert_int_equal(tags[3], 2);
	assert_int_equal(tags[4], 3);
	assert_int_equal(loop_timer_count(l), 0);
	close(p[0]);
	close(p[1]);
	loop_free(l);
}

/* before_wait: runs every turn; a due timer it adds runs in that turn. */
struct hook {
	int calls;
	struct tlog *log;
	struct tnode node;
	int nested_rc, nested_errno;
};

static void on_hook(struct loop *l, void *arg)
{
	struct hook *h = arg;

	if (h->calls++ == 0)
		add_node(l, &h->node, h->log, 9, 0);
	h->nested_rc = loop_run_once(l, 0);
	h->nested_errno = errno;
}

static void test_before_wait(void **state)
{
	struct loop *l = loop_new();
	int tags[4];
	struct tlog log = {tags, 0, 4};
	struct hook h;
	struct loop_stats st;

	(void)state;
	memset(&h, 0, sizeof(h));
	h.log = &log;
	loop_set_before_wait(l, on_hook, &h);
	assert_int_equal(loop_run_once(l, 0), 1);
	assert_int_equal(h.calls, 1);
	assert_int_equal(log.n, 1);
	assert_int_equal(h.nested_rc, -1); /* no turn inside a turn */
	assert_int_equal(h.nested_errno, EBUSY);
	assert_int_equal(loop_run_once(l, 0), 0);
	assert_int_equal(h.calls, 2);
	loop_set_before_wait(l, NULL, NULL);
	assert_int_equal(loop_run_once(l, 0), 0);
	assert_int_equal(h.calls, 2);
	loop_get_stats(l, &st);
	assert_int_equal(st.turns, 3);
	assert_int_equal(st.timers_run, 1);
	loop_free(l);
}

/* ---------- file descriptors ---------- */

struct fdrec {
	int calls, last_fd, last_mask;
	char buf[16];
	ssize_t got;
};

static void on_fd(struct loop *l, int fd, int mask, void *arg)
{
	struct fdrec *r = arg;

	(void)l;
	r->calls++;
	r->last_fd = fd;
	r->last_mask = mask;
	if (mask & LOOP_READ)
		r->got = read(fd, r->buf, sizeof(r->buf));
}

static void test_fd_pipe(void **state)
{
	struct loop *l = loop_new();
	struct fdrec r, w;
	int p[2];
	FILE *f;

	(void)state;
	memset(&r, 0, sizeof(r));
	memset(&w, 0, sizeof(w));
	assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	assert_int_equal(loop_fd_add(l, p[0], LOOP_READ, on_fd, &r), 0);
	assert_int_equal(loop_run_once(l, 0), 0);
	assert_int_equal(r.calls, 0);
	assert_int_equal(write(p[1], "hi", 2), 2);
	assert_int_equal(loop_run_once(l, DEADLINE), 1);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.last_fd, p[0]);
	assert_int_equal(r.last_mask, LOOP_READ);
	assert_int_equal(r.got, 2);
	assert_memory_equal(r.buf, "hi", 2);
	/* Drained: level-triggered, so nothing more. */
	assert_int_equal(loop_run_once(l, 0), 0);

	/* The write end is writable; adding again replaces the mask. */
	assert_int_equal(loop_fd_add(l, p[1], LOOP_READ, on_fd, &w), 0);
	assert_int_equal(loop_run_once(l, 0), 0);
	assert_int_equal(loop_fd_add(l, p[1], LOOP_WRITE, on_fd, &w), 0);
	assert_int_equal(loop_run_once(l, 0), 1);
	assert_int_equal(w.last_mask, LOOP_WRITE);
	loop_fd_del(l, p[1]);
	loop_fd_del(l, p[1]); /* twice: a no-op */

	/* Deleted: not dispatched even when readable. */
	loop_fd_del(l, p[0]);
	assert_int_equal(write(p[1], "x", 1), 1);
	assert_int_equal(loop_run_once(l, 0), 0);
	assert_int_equal(r.calls, 1);

	/* Hang-up reports as readable; read sees the byte, then EOF. */
	assert_int_equal(loop_fd_add(l, p[0], LOOP_READ, on_fd, &r), 0);
	close(p[1]);
	assert_int_equal(loop_run_once(l, DEADLINE), 1);
	assert_int_equal(r.last_mask, LOOP_READ);
	assert_int_equal(r.got, 1);
	assert_int_equal(loop_run_once(l, DEADLINE), 1);
	assert_int_equal(r.got, 0);
	loop_fd_del(l, p[0]);
	close(p[0]);

	/* Bad arguments; a regular file cannot be polled. */
	assert_int_equal(loop_fd_add(l, -1, LOOP_READ, on_fd, &r), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(loop_fd_add(l, 0, 0, on_fd, &r), -1);
	assert_int_equal(loop_fd_add(l, 0, 4, on_fd, &r), -1);
	assert_int_equal(loop_fd_add(l, 0, LOOP_READ, NULL, &r), -1);
	f = tmpfile();
	assert_non_null(f);
	assert_int_equal(loop_fd_add(l, fileno(f), LOOP_READ, on_fd, &r), -1);
	fclose(f);
	assert_int_equal(loop_fd_add(l, (1 << 30) + 5, LOOP_READ, on_fd, &r), -1);
	assert_int_equal(errno, EBADF); /* not open: refused before any table growth */
	loop_fd_del(l, 1 << 20); /* never watched: a no-op */
	loop_free(l);
}

/* Two readable pipes whose callbacks each delete the other; the first to
 * run also closes the other's fd and puts a fresh, empty pipe on the same
 * number, registered to a callback that must not run this turn. */
struct rival {
	struct rival *other;
	int fd;
	int calls;
	struct fdrec *stranger;
};

static void on_rival(struct loop *l, int fd, int mask, void *arg)
{
	struct rival *r = arg;
	int q[2];

	(void)mask;
	r->calls++;
	loop_fd_del(l, r->other->fd);
	/* dup2 closes the other fd and reuses its number in one step. */
	assert_int_equal(pipe2(q, O_NONBLOCK | O_CLOEXEC), 0);
	assert_int_equal(dup2(q[0], r->other->fd), r->other->fd);
	close(q[0]);
	close(q[1]); /* the new number is a pipe with no writer: hang-up */
	assert_int_equal(loop_fd_add(l, r->other->fd, LOOP_READ, on_fd, r->stranger), 0);
	loop_fd_del(l, fd);
}

static void test_fd_deleted_same_turn(void **state)
{
	struct loop *l = loop_new();
	struct rival a, b;
	struct fdrec stranger;
	int pa[2], pb[2];

	(void)state;
	memset(&stranger, 0, sizeof(stranger));
	assert_int_equal(pipe2(pa, O_NONBLOCK | O_CLOEXEC), 0);
	assert_int_equal(pipe2(pb, O_NONBLOCK | O_CLOEXEC), 0);
	a = (struct rival){&b, pa[0], 0, &stranger};
	b = (struct rival){&a, pb[0], 0, &stranger};
	assert_int_equal(loop_fd_add(l, pa[0], LOOP_READ, on_rival, &a), 0);
	assert_int_equal(loop_fd_add(l, pb[0], LOOP_READ, on_rival, &b), 0);
	assert_int_equal(write(pa[1], "a", 1), 1);
	assert_int_equal(write(pb[1], "b", 1), 1);
	/* Both events are in one batch; only the first may be dispatched. */
	assert_int_equal(loop_run_once(l, DEADLINE), 1);
	assert_int_equal(a.calls + b.calls, 1);
	assert_int_equal(stranger.calls, 0);
	/* The new registration works from the next turn (hang-up, EOF). */
	assert_int_equal(loop_run_once(l, DEADLINE), 1);
	assert_int_equal(stranger.calls, 1);
	assert_int_equal(stranger.got, 0);
	loop_fd_del(l, stranger.last_fd);
	close(pa[0]);
	close(pa[1]);
	close(pb[0]);
	close(pb[1]);
	loop_free(l);
}

/* ---------- wakeups ---------- */

struct waker {
	struct loop *l;
	pthread_t target;
	int by_signal;
};

static void *waker_main(void *arg)
{
	struct waker *w = arg;

	sleep_ms(50);
	if (w->by_signal) {
		union sigval v;
		v.sival_ptr = w->l;
		pthread_sigqueue(w->target, SIGUSR1, v);
	} else {
		loop_wakeup(w->l);
	}
	return NULL;
}

static void on_sigusr1(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	loop_wakeup(si->si_value.sival_ptr);
}

static void test_wakeup(void **state)
{
	struct loop *l = loop_new();
	struct waker w = {l, pthread_self(), 0};
	struct loop_stats st;
	struct sigaction sa, old;
	pthread_t th;
	double t0;

	(void)state;
	/* From another thread: a blocking turn ends promptly. */
	assert_int_equal(pthread_create(&th, NULL, waker_main, &w), 0);
	t0 = rd_mono();
	assert_int_equal(loop_run_once(l, 30.0), 0);
	assert_true(rd_mono() - t0 < DEADLINE);
	pthread_join(th, NULL);
	loop_get_stats(l, &st);
	assert_int_equal(st.wakeups, 1);

	/* A wakeup before the turn is not lost. */
	loop_wakeup(l);
	t0 = rd_mono();
	assert_int_equal(loop_run_once(l, 30.0), 0);
	assert_true(rd_mono() - t0 < DEADLINE);

	/* From a signal handler on the loop's own thread: epoll_wait sees
	 * EINTR (not an error) or the eventfd, and the turn ends either way. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigusr1;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);
	w.by_signal = 1;
	assert_int_equal(pthread_create(&th, NULL, waker_main, &w), 0);
	t0 = rd_mono();
	assert_int_equal(loop_run_once(l, 30.0), 0);
	assert_true(rd_mono() - t0 < DEADLINE);
	pthread_join(th, NULL);
	assert_int_equal(sigaction(SIGUSR1, &old, NULL), 0);
	assert_int_equal(loop_run_once(l, 0), 0); /* drains it if EINTR came first */
	t0 = rd_mono();
	assert_int_equal(loop_run_once(l, 0.05), 0); /* nothing left pending */
	assert_true(rd_mono() - t0 >= 0.045);
	loop_free(l);
}

/* ---------- a child through its pidfd ---------- */

struct child {
	pid_t pid;
	int status, reaped;
};

static void on_child(struct loop *l, int fd, int mask, void *arg)
{
	struct child *c = arg;

	assert_int_equal(mask, LOOP_READ);
	assert_int_equal(waitpid(c->pid, &c->status, WNOHANG), c->pid);
	c->reaped = 1;
	loop_fd_del(l, fd);
}

static void test_pidfd_child(void **state)
{
#ifdef SYS_pidfd_open
	struct loop *l = loop_new();
	struct child c = {0, 0, 0};
	double deadline;
	int pfd, go[2];

	(void)state;
	/* The child waits for a byte on go[0]: it is alive until told. */
	assert_int_equal(pipe2(go, O_CLOEXEC), 0);
	c.pid = fork();
	assert_true(c.pid >= 0);
	if (c.pid == 0) {
		char b;
		close(go[1]);
		_exit(read(go[0], &b, 1) == 1 ? 7 : 1);
	}
	close(go[0]);
	pfd = (int)syscall(SYS_pidfd_open, c.pid, 0);
	if (pfd < 0 && (errno == ENOSYS || errno == EPERM)) {
		close(go[1]);
		waitpid(c.pid, NULL, 0);
		loop_free(l);
		skip();
	}
	assert_true(pfd >= 0);
	assert_int_equal(loop_fd_add(l, pfd, LOOP_READ, on_child, &c), 0);
	assert_int_equal(loop_run_once(l, 0.05), 0); /* alive: not readable */
	assert_int_equal(c.reaped, 0);
	assert_int_equal(write(go[1], "x", 1), 1);
	close(go[1]);
	deadline = rd_mono() + DEADLINE;
	while (!c.reaped && rd_mono() < deadline)
		assert_true(loop_run_once(l, 1.0) >= 0);
	assert_true(c.reaped);
	assert_true(WIFEXITED(c.status));
	assert_int_equal(WEXITSTATUS(c.status), 7);
	close(pfd);
	loop_free(l);
#else
	(void)state;
	skip();
#endif
}

/* ---------- curl ---------- */

/* A one-thread HTTP server on 127.0.0.1 for nconns connections: it answers
 * each request with a fixed 200 or, with answer == 0, holds every
 * connection open until its client goes away (bounded by DEADLINE). */
struct server {
	int lfd, port, nconns, answer;
	int stop[2];
	atomic_int accepted, closed; /* closed: held connections the client ended */
	pthread_t th;
};

/* Wait for fd to be readable, or the stop pipe, for at most DEADLINE. */
static int srv_wait(struct server *s, int fd)
{
	struct pollfd pf[2] = {{fd, POLLIN, 0}, {s->stop[0], POLLIN, 0}};

	if (poll(pf, 2, (int)(DEADLINE * 1000)) <= 0 || pf[1].revents)
		return -1;
	return 0;
}

static void *server_main(void *arg)
{
	static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
	                           "Content-Length: 2\r\nConnection: close\r\n\r\nok";
	struct server *s = arg;
	int held[4], nheld = 0;

	for (int c = 0; c < s->nconns; c++) {
		char req[4096];
		size_t n = 0;
		int cfd;

		if (srv_wait(s, s->lfd) < 0)
			break;
		cfd = accept(s->lfd, NULL, NULL);
		if (cfd < 0)
			break;
		atomic_fetch_add(&s->accepted, 1);
		/* Read the request head (the tests send no body). */
		while (n < sizeof(req) - 1 && srv_wait(s, cfd) == 0) {
			ssize_t r = recv(cfd, req + n, sizeof(req) - 1 - n, 0);
			if (r <= 0)
				break;
			n += (size_t)r;
			req[n] = '\0';
			if (strstr(req, "\r\n\r\n"))
				break;
		}
		if (!s->answer && nheld < 4) {
			held[nheld++] = cfd; /* held open: accept the next one meanwhile */
			continue;
		}
		if (send(cfd, resp, sizeof(resp) - 1, MSG_NOSIGNAL) < 0) {
			/* the client gave up: nothing to do */
		}
		close(cfd);
	}
	/* Hold what was not answered until each client goes away. */
	while (nheld > 0) {
		struct pollfd pf[5];
		char buf[256];
		int k = 0;

		for (int i = 0; i < nheld; i++)
			pf[i] = (struct pollfd){held[i], POLLIN, 0};
		pf[nheld] = (struct pollfd){s->stop[0], POLLIN, 0};
		if (poll(pf, (nfds_t)nheld + 1, (int)(DEADLINE * 1000)) <= 0 || pf[nheld].revents)
			break;
		for (int i = 0; i < nheld; i++) {
			if (pf[i].revents && recv(held[i], buf, sizeof(buf), 0) <= 0) {
				close(held[i]);
				atomic_fetch_add(&s->closed, 1);
			} else
				held[k++] = held[i];
		}
		nheld = k;
	}
	for (int i = 0; i < nheld; i++)
		close(held[i]);
	return NULL;
}

/* On the heap: a test that fails leaves its server thread behind, and it
 * must not point into a stack frame that is gone. */
static struct server *server_start(int nconns, int answer)
{
	struct server *s = calloc(1, sizeof(*s));
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);
	int one = 1;

	assert_non_null(s);
	s->nconns = nconns;
	s->answer = answer;
	assert_int_equal(pipe2(s->stop, O_CLOEXEC), 0);
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s->lfd >= 0);
	setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = 0;
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(s->lfd, 8), 0);
	assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &alen), 0);
	s->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&s->th, NULL, server_main, s), 0);
	return s;
}

static void server_stop(struct server *s)
{
	assert_int_equal(write(s->stop[1], "x", 1), 1);
	pthread_join(s->th, NULL);
	close(s->lfd);
	close(s->stop[0]);
	close(s->stop[1]);
	free(s);
}

struct xrec {
	int calls, readd;
	CURLcode cc[2];
	long code[2];
	char body[64];
	size_t len;
};

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
	struct xrec *x = arg;
	size_t k = sz * n;

	if (k > sizeof(x->body) - 1 - x->len)
		return 0; /* over the cap: fail the transfer */
	memcpy(x->body + x->len, p, k);
	x->len += k;
	x->body[x->len] = '\0';
	return k;
}

static void on_done(struct loop *l, CURL *easy, CURLcode cc, void *arg)
{
	struct xrec *x = arg;

	assert_true(x->calls < 2);
	x->cc[x->calls] = cc;
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &x->code[x->calls]);
	x->calls++;
	if (x->readd) { /* the retry pattern: same handle, from done */
		x->readd = 0;
		x->len = 0;
		assert_int_equal(loop_xfer_add(l, easy, on_done, x), 0);
	}
}

static CURL *easy_new(int port, struct xrec *x)
{
	CURL *e = curl_easy_init();
	char url[64];

	assert_non_null(e);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/ping", port);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(DEADLINE * 2000));
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	return e;
}

/* Turn until *flag >= want or DEADLINE. */
static void run_until(struct loop *l, const int *flag, int want)
{
	double deadline = rd_mono() + DEADLINE;

	while (*flag < want && rd_mono() < deadline)
		assert_true(loop_run_once(l, 0.5) >= 0);
}

static void test_curl_ok(void **state)
{
	struct loop *l = loop_new();
	struct server *s;
	struct xrec x;
	struct loop_stats st;
	CURL *e;

	(void)state;
	s = server_start(2, 1);
	memset(&x, 0, sizeof(x));
	x.readd = 1;
	e = easy_new(s->port, &x);
	assert_int_equal(loop_xfer_add(l, e, on_done, &x), 0);
	assert_int_equal(loop_xfer_add(l, e, on_done, &x), -1);
	assert_int_equal(errno, EEXIST);
	assert_int_equal(loop_xfer_count(l), 1);
	assert_int_equal(loop_timer_count(l), 0); /* libcurl's timer is not the caller's */
	assert_true(loop_next_timer(l) < 0);
	{
		/* With libcurl's timer at the root, the caller's nearest is
		 * still found, whichever of its children that is. */
		struct tnode a, b;
		int tags[2];
		struct tlog log = {tags, 0, 2};
		double now = rd_mono();
		add_node(l, &a, &log, 1, now + 3600);
		add_node(l, &b, &log, 2, now + 1800);
		assert_true(loop_next_timer(l) == now + 1800);
		assert_int_equal(loop_timer_count(l), 2);
		assert_int_equal(loop_timer_del(l, b.id), 0);
		assert_true(loop_next_timer(l) == now + 3600);
		assert_int_equal(loop_timer_del(l, a.id), 0);
	}
	run_until(l, &x.calls, 2);
	assert_int_equal(x.calls, 2);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(x.cc[i], CURLE_OK);
		assert_int_equal(x.code[i], 200);
	}
	assert_string_equal(x.body, "ok");
	assert_int_equal(loop_xfer_count(l), 0);
	loop_get_stats(l, &st);
	assert_int_equal(st.xfers_done, 2);
	loop_free(l);
	curl_easy_cleanup(e);
	server_stop(s);
}

static void test_curl_errors(void **state)
{
	struct loop *l = loop_new();
	struct server *s;
	struct xrec x, y;
	CURL *e, *f;
	double t0;
	int refused_port;

	(void)state;
	/* A closed port: the error reaches done. */
	s = server_start(1, 0);
	memset(&x, 0, sizeof(x));
	memset(&y, 0, sizeof(y));
	{
		struct sockaddr_in a;
		socklen_t alen = sizeof(a);
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		memset(&a, 0, sizeof(a));
		a.sin_family = AF_INET;
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
		assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
		refused_port = ntohs(a.sin_port);
		close(fd); /* bound, never listened: refused */
	}
	e = easy_new(refused_port, &x);
	assert_int_equal(loop_xfer_add(l, e, on_done, &x), 0);
	run_until(l, &x.calls, 1);
	assert_int_equal(x.calls, 1);
	assert_int_equal(x.cc[0], CURLE_COULDNT_CONNECT);

	/* A server that never answers: only libcurl's timer can end this, so
	 * it tests that the timer is kept armed. */
	f = easy_new(s->port, &y);
	curl_easy_setopt(f, CURLOPT_TIMEOUT_MS, 300L);
	t0 = rd_mono();
	assert_int_equal(loop_xfer_add(l, f, on_done, &y), 0);
	run_until(l, &y.calls, 1);
	assert_int_equal(y.calls, 1);
	assert_int_equal(y.cc[0], CURLE_OPERATION_TIMEDOUT);
	assert_true(rd_mono() - t0 >= 0.25);
	loop_free(l);
	curl_easy_cleanup(e);
	curl_easy_cleanup(f);
	server_stop(s);
}

static void test_curl_xfer_del(void **state)
{
	struct loop *l = loop_new();
	struct server *s;
	struct xrec x, y;
	CURL *e, *f;
	double deadline, t0;

	(void)state;
	s = server_start(2, 0);
	memset(&x, 0, sizeof(x));
	memset(&y, 0, sizeof(y));
	e = easy_new(s->port, &x);
	f = easy_new(s->port, &y);
	/* e would time out soon if it were still in flight after the delete. */
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 500L);
	t0 = rd_mono();
	assert_int_equal(loop_xfer_add(l, e, on_done, &x), 0);
	assert_int_equal(loop_xfer_add(l, f, on_done, &y), 0);
	/* Both connected and waiting for an answer that never comes. */
	deadline = rd_mono() + DEADLINE;
	while (atomic_load(&s->accepted) < 2 && rd_mono() < deadline)
		assert_true(loop_run_once(l, 0.05) >= 0);
	assert_int_equal(atomic_load(&s->accepted), 2);
	for (int i = 0; i < 5; i++)
		assert_true(loop_run_once(l, 0.02) >= 0);

	loop_xfer_del(l, e);
	loop_xfer_del(l, e); /* no longer in flight: a no-op */
	assert_int_equal(loop_xfer_count(l), 1);
	/* Out of the multi handle: it can be added again (and deleted again
	 * before any turn, so it never connects). */
	assert_int_equal(loop_xfer_add(l, e, on_done, &x), 0);
	loop_xfer_del(l, e);
	assert_int_equal(loop_xfer_count(l), 1);
	/* Really abandoned: its connection closes, and its timeout passes
	 * without a done. */
	deadline = t0 + 0.8;
	while (rd_mono() < deadline || (atomic_load(&s->closed) < 1 && rd_mono() < t0 + DEADLINE))
		assert_true(loop_run_once(l, 0.05) >= 0);
	assert_int_equal(atomic_load(&s->closed), 1);
	assert_int_equal(x.calls, 0);
	assert_int_equal(y.calls, 0);
	curl_easy_cleanup(e); /* the caller's to free once deleted */
	/* loop_free drops the one still in flight without calling done. */
	loop_free(l);
	assert_int_equal(y.calls, 0);
	curl_easy_cleanup(f);
	server_stop(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_timer_order),
		cmocka_unit_test(test_timer_del_large_heap),
		cmocka_unit_test(test_timer_del_fired),
		cmocka_unit_test(test_timer_cb_deletes_other),
		cmocka_unit_test(test_timer_added_during_dispatch),
		cmocka_unit_test(test_before_wait),
		cmocka_unit_test(test_fd_pipe),
		cmocka_unit_test(test_fd_deleted_same_turn),
		cmocka_unit_test(test_wakeup),
		cmocka_unit_test(test_pidfd_child),
		cmocka_unit_test(test_curl_ok),
		cmocka_unit_test(test_curl_errors),
		cmocka_unit_test(test_curl_xfer_del),
	};
	int rc;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return 1;
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}

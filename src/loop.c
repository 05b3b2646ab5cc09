/* The event loop (include/recoveryd/loop.h): one epoll set for the caller's
 * fds, libcurl's sockets and a wakeup eventfd; a binary heap of one-shot
 * timers; libcurl's multi_socket API driven from both.
 *
 * Timers live in a slot table (the "id -> node" map): an id is the slot
 * index in its low 32 bits and the slot's generation above, so lookup is
 * O(1), a stale id (fired, deleted, slot reused) fails the generation
 * check, and no hash is needed. Each slot knows its heap index, so a delete
 * is O(log n). The heap holds (when, seq, slot) by value: comparisons do
 * not chase pointers, and seq orders ties in the order added.
 *
 * fd events carry (generation << 32 | fd) as epoll data: an event whose fd
 * was deleted, or deleted and registered again, earlier in the same batch
 * no longer matches the table and is dropped instead of dispatched. */
#include "recoveryd/loop.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "recoveryd/common.h"

#define MAX_EVENTS 128          /* per wait; level-triggered, so the rest come next turn */
#define TIMERS_MIN 64
#define TIMERS_MAX (1u << 30)   /* slots: keeps sizes and 2i+1 far from overflow */
#define GEN_MAX 0x7fffffffu     /* id = gen << 32 | slot stays a positive long long */
#define NO_SLOT UINT32_MAX
#define XFER_BUCKETS_MIN 16

enum fd_kind { FD_NONE, FD_USER, FD_CURL, FD_WAKE };

struct fdent {
	loop_fd_fn *fn;
	void *arg;
	uint32_t gen;  /* bumped by each new registration of this fd number */
	uint8_t kind;  /* enum fd_kind */
	uint8_t mask;  /* LOOP_READ | LOOP_WRITE */
};

struct tslot {
	loop_timer_fn *fn;
	void *arg;
	uint32_t gen;
	uint32_t pos;  /* heap index while live, else the next free slot */
	uint8_t live;
};

struct hent {
	double when;
	uint64_t seq;
	uint32_t slot;
};

struct xfer {
	CURL *easy;
	loop_xfer_fn *done;
	void *arg;
	struct xfer *next;
};

struct loop {
	int epfd, wakefd;
	CURLM *multi;

	struct tslot *slots;
	struct hent *heap;
	uint32_t nslots, tcap, nheap, free_head;
	uint64_t seq;
	long long curl_timer;  /* the one timer libcurl asked for, or 0 */

	struct fdent *fds;     /* indexed by fd */
	size_t nfds;

	struct xfer **xb;      /* easy -> transfer; CURLOPT_PRIVATE is the caller's */
	size_t nxb, nxfers;

	loop_hook_fn *before_wait;
	void *before_arg;

	int running, dispatching;
	double now0;           /* rd_mono() when this turn's dispatch started */
	uint64_t seq0;         /* timers with seq >= seq0 were added during it */
	unsigned long long ndisp;
	struct loop_stats st;
	struct epoll_event ev[MAX_EVENTS];
};

/* ---------- timers ---------- */

static long long timer_id(uint32_t gen, uint32_t slot)
{
	return (long long)(((uint64_t)gen << 32) | slot);
}

static int hent_less(const struct hent *a, const struct hent *b)
{
	return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void heap_place(struct loop *l, uint32_t i, struct hent h)
{
	l->heap[i] = h;
	l->slots[h.slot].pos = i;
}

static void heap_up(struct loop *l, uint32_t i)
{
	struct hent h = l->heap[i];

	while (i > 0) {
		uint32_t p = (i - 1) / 2;
		if (!hent_less(&h, &l->heap[p]))
			break;
		heap_place(l, i, l->heap[p]);
		i = p;
	}
	heap_place(l, i, h);
}

static void heap_down(struct loop *l, uint32_t i)
{
	struct hent h = l->heap[i];

	for (;;) {
		uint32_t c = 2 * i + 1;
		if (c >= l->nheap)
			break;
		if (c + 1 < l->nheap && hent_less(&l->heap[c + 1], &l->heap[c]))
			c++;
		if (!hent_less(&l->heap[c], &h))
			break;
		heap_place(l, i, l->heap[c]);
		i = c;
	}
	heap_place(l, i, h);
}

static void heap_remove(struct loop *l, uint32_t i)
{
	if (--l->nheap == i)
		return;
	heap_place(l, i, l->heap[l->nheap]);
	if (i > 0 && hent_less(&l->heap[i], &l->heap[(i - 1) / 2]))
		heap_up(l, i);
	else
		heap_down(l, i);
}

static void slot_release(struct loop *l, uint32_t s)
{
	struct tslot *t = &l->slots[s];

	t->live = 0;
	t->fn = NULL;
	t->arg = NULL;
	t->gen = t->gen >= GEN_MAX ? 1 : t->gen + 1;
	t->pos = l->free_head;
	l->free_head = s;
}

/* Grow the slot table and the heap together: the heap never holds more
 * entries than there are slots, so it never needs a growth of its own. */
static int timers_grow(struct loop *l)
{
	uint32_t ncap = l->tcap ? l->tcap * 2 : TIMERS_MIN;
	struct tslot *s;
	struct hent *h;

	if (l->tcap >= TIMERS_MAX) {
		errno = ENOMEM;
		return -1;
	}
	s = realloc(l->slots, ncap * sizeof(*s));
	if (!s)
		return -1;
	l->slots = s;
	h = realloc(l->heap, ncap * sizeof(*h));
	if (!h)
		return -1; /* the larger slot table is harmless: tcap is unchanged */
	l->heap = h;
	l->tcap = ncap;
	return 0;
}

long long loop_timer_add(struct loop *l, double when, loop_timer_fn *fn, void *arg)
{
	uint32_t s;

	if (!l || !fn || isnan(when)) {
		errno = EINVAL;
		return -1;
	}
	if (l->free_head != NO_SLOT) {
		s = l->free_head;
		l->free_head = l->slots[s].pos;
	} else {
		if (l->nslots == l->tcap && timers_grow(l) < 0)
			return -1;
		s = l->nslots++;
		l->slots[s].gen = 1;
	}
	/* Added during dispatch and already due: sort it after every timer due
	 * at the turn's start (seq does the rest), so that it cannot hide them
	 * from this turn and does not run in it. */
	if (l->dispatching && when < l->now0)
		when = l->now0;
	l->slots[s].fn = fn;
	l->slots[s].arg = arg;
	l->slots[s].live = 1;
	l->heap[l->nheap] = (struct hent){when, l->seq++, s};
	heap_up(l, l->nheap++);
	return timer_id(l->slots[s].gen, s);
}

/* The live slot of id, or NO_SLOT. */
static uint32_t timer_find(const struct loop *l, long long id)
{
	uint64_t u = (uint64_t)id;
	uint32_t s = (uint32_t)u;

	if (id <= 0 || s >= l->nslots)
		return NO_SLOT;
	if (!l->slots[s].live || l->slots[s].gen != (uint32_t)(u >> 32))
		return NO_SLOT;
	return s;
}

int loop_timer_del(struct loop *l, long long id)
{
	uint32_t s;

	if (!l) {
		errno = EINVAL;
		return -1;
	}
	s = timer_find(l, id);
	if (s == NO_SLOT) {
		errno = ENOENT;
		return -1;
	}
	heap_remove(l, l->slots[s].pos);
	slot_release(l, s);
	return 0;
}

static int is_curl_slot(const struct loop *l, uint32_t s)
{
	return l->curl_timer && (uint32_t)(uint64_t)l->curl_timer == s;
}

double loop_next_timer(const struct loop *l)
{
	uint32_t c;

	if (!l || !l->nheap)
		return -1;
	if (!is_curl_slot(l, l->heap[0].slot))
		return l->heap[0].when;
	/* libcurl's timer is the root: the caller's nearest is a child of it. */
	if (l->nheap < 2)
		return -1;
	c = l->nheap > 2 && hent_less(&l->heap[2], &l->heap[1]) ? 2 : 1;
	return l->heap[c].when;
}

size_t loop_timer_count(const struct loop *l)
{
	if (!l)
		return 0;
	return l->nheap - (l->curl_timer ? 1 : 0);
}

static void curl_timer_fire(struct loop *l, long long id, void *arg);

/* Run the timers that were due when the dispatch started, in order. A
 * callback may add or delete timers: each step looks at the heap afresh. */
static void timers_run_due(struct loop *l)
{
	while (l->nheap) {
		struct hent h = l->heap[0];
		struct tslot *t = &l->slots[h.slot];
		loop_timer_fn *fn;
		void *arg;
		long long id;

		if (h.when > l->now0 || h.seq >= l->seq0)
			break;
		fn = t->fn;
		arg = t->arg;
		id = timer_id(t->gen, h.slot);
		/* Gone before the call: deleting its own id returns -1. */
		heap_remove(l, 0);
		slot_release(l, h.slot);
		if (fn != curl_timer_fire) {
			l->st.timers_run++;
			l->ndisp++;
		}
		fn(l, id, arg);
	}
}

/* ---------- file descriptors ---------- */

static int fds_reserve(struct loop *l, int fd)
{
	size_t n = l->nfds ? l->nfds : 64;
	struct fdent *p;

	if ((size_t)fd < l->nfds)
		return 0;
	while (n <= (size_t)fd)
		n *= 2;
	p = realloc(l->fds, n * sizeof(*p));
	if (!p)
		return -1;
	memset(p + l->nfds, 0, (n - l->nfds) * sizeof(*p));
	l->fds = p;
	l->nfds = n;
	return 0;
}

/* Tell epoll about fd. The table and the kernel can disagree when an fd
 * was closed while watched (the kernel forgot it): retry with the other op. */
static int ep_set(struct loop *l, int fd, int mask, uint32_t gen, int known)
{
	struct epoll_event ev;
	int op = known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;

	memset(&ev, 0, sizeof(ev));
	ev.events = (mask & LOOP_READ ? EPOLLIN : 0) | (mask & LOOP_WRITE ? EPOLLOUT : 0);
	ev.data.u64 = ((uint64_t)gen << 32) | (uint32_t)fd;
	if (epoll_ctl(l->epfd, op, fd, &ev) == 0)
		return 0;
	if (op == EPOLL_CTL_MOD && errno == ENOENT)
		op = EPOLL_CTL_ADD;
	else if (op == EPOLL_CTL_ADD && errno == EEXIST)
		op = EPOLL_CTL_MOD;
	else
		return -1;
	return epoll_ctl(l->epfd, op, fd, &ev);
}

static void ep_forget(struct loop *l, int fd)
{
	struct fdent *e = &l->fds[fd];

	/* EBADF/ENOENT when the fd is already closed: nothing left to undo. */
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
	e->kind = FD_NONE;
	e->mask = 0;
	e->fn = NULL;
	e->arg = NULL;
}

int loop_fd_add(struct loop *l, int fd, int mask, loop_fd_fn *fn, void *arg)
{
	struct fdent *e;
	uint32_t gen = 1;
	int known = 0, err;

	if (!l || fd < 0 || !fn || !mask || (mask & ~(LOOP_READ | LOOP_WRITE))) {
		errno = EINVAL;
		return -1;
	}
	if ((size_t)fd < l->nfds) {
		e = &l->fds[fd];
		if (e->kind != FD_NONE && e->kind != FD_USER) {
			errno = EEXIST; /* the loop's own eventfd or one of libcurl's sockets */
			return -1;
		}
		known = e->kind == FD_USER;
		gen = known ? e->gen : e->gen + 1;
	}
	/* The kernel first: it refuses an fd that is not open (EBADF) before
	 * the table grows to a bogus fd number. */
	if (ep_set(l, fd, mask, gen, known) < 0)
		return -1;
	if (fds_reserve(l, fd) < 0) {
		err = errno;
		epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
		errno = err;
		return -1;
	}
	e = &l->fds[fd];
	e->gen = gen;
	e->kind = FD_USER;
	e->mask = (uint8_t)mask;
	e->fn = fn;
	e->arg = arg;
	return 0;
}

void loop_fd_del(struct loop *l, int fd)
{
	if (!l || fd < 0 || (size_t)fd >= l->nfds || l->fds[fd].kind != FD_USER)
		return;
	ep_forget(l, fd);
}

static void wake_drain(struct loop *l)
{
	uint64_t v;

	/* One read resets the counter; EAGAIN means another turn drained it. */
	if (read(l->wakefd, &v, sizeof(v)) < 0)
		return;
}

static void fds_dispatch(struct loop *l, int n)
{
	for (int i = 0; i < n; i++) {
		uint64_t data = l->ev[i].data.u64;
		uint32_t evs = l->ev[i].events;
		int fd = (int)(uint32_t)data;
		struct fdent *e;

		/* Re-read the table each time: a callback may have grown it,
		 * deleted this fd, or registered the number anew. */
		if ((size_t)fd >= l->nfds)
			continue;
		e = &l->fds[fd];
		if (e->kind == FD_NONE || e->gen != (uint32_t)(data >> 32))
			continue;
		if (e->kind == FD_WAKE) {
			wake_drain(l);
			l->st.wakeups++;
		} else if (e->kind == FD_CURL) {
			int act = 0, running;
			if (evs & (EPOLLIN | EPOLLHUP))
				act |= CURL_CSELECT_IN;
			if (evs & EPOLLOUT)
				act |= CURL_CSELECT_OUT;
			if (evs & EPOLLERR)
				act |= CURL_CSELECT_ERR;
			curl_multi_socket_action(l->multi, fd, act, &running);
		} else {
			int mask = 0;
			loop_fd_fn *fn = e->fn;
			if (evs & EPOLLIN)
				mask |= LOOP_READ;
			if (evs & EPOLLOUT)
				mask |= LOOP_WRITE;
			if (evs & (EPOLLERR | EPOLLHUP))
				mask |= LOOP_READ | LOOP_WRITE; /* let the reader see it */
			mask &= e->mask;
			if (!mask)
				continue;
			l->st.fd_events++;
			l->ndisp++;
			fn(l, fd, mask, e->arg);
		}
	}
}

/* ---------- curl ---------- */

static size_t xfer_bucket(const struct loop *l, const CURL *easy)
{
	uint64_t h = (uint64_t)(uintptr_t)easy * 0x9E3779B97F4A7C15ull;
	return (size_t)(h >> 32) & (l->nxb - 1);
}

static struct xfer **xfer_link(const struct loop *l, const CURL *easy)
{
	struct xfer **pp = &l->xb[xfer_bucket(l, easy)];

	while (*pp && (*pp)->easy != easy)
		pp = &(*pp)->next;
	return pp;
}

/* Take easy's record out of the table; NULL when it is not there. */
static struct xfer *xfer_unlink(struct loop *l, const CURL *easy)
{
	struct xfer **pp = xfer_link(l, easy), *x = *pp;

	if (x) {
		*pp = x->next;
		l->nxfers--;
	}
	return x;
}

/* Double the buckets when the chains get long; on failure keep the old
 * ones (slower, still correct). */
static void xfer_rehash(struct loop *l)
{
	size_t old = l->nxb;
	struct xfer **ob = l->xb, **nb;

	if (l->nxfers < old || old > SIZE_MAX / 2 / sizeof(*nb))
		return;
	nb = calloc(old * 2, sizeof(*nb));
	if (!nb)
		return;
	l->xb = nb;
	l->nxb = old * 2;
	for (size_t i = 0; i < old; i++)
		while (ob[i]) {
			struct xfer *x = ob[i], **pp;
			ob[i] = x->next;
			pp = &l->xb[xfer_bucket(l, x->easy)];
			x->next = *pp;
			*pp = x;
		}
	free(ob);
}

/* Hand finished transfers to their owners. The record goes and the handle
 * leaves the multi before done runs, so done may re-add or clean it up. */
static void xfers_dispatch_done(struct loop *l)
{
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(l->multi, &left))) {
		CURL *easy = m->easy_handle;
		CURLcode cc = m->data.result;
		struct xfer *x;
		loop_xfer_fn *done;
		void *arg;

		if (m->msg != CURLMSG_DONE)
			continue;
		x = xfer_unlink(l, easy);
		if (!x)
			continue; /* not ours: loop_xfer_add is the only way in */
		done = x->done;
		arg = x->arg;
		free(x);
		/* m is invalid from here on: removing a handle frees messages. */
		curl_multi_remove_handle(l->multi, easy);
		l->st.xfers_done++;
		l->ndisp++;
		done(l, easy, cc, arg);
	}
}

static int curl_timer_cb(CURLM *multi, long ms, void *userp);

/* libcurl's timer is due. Runs within timers_run_due, never inside a
 * libcurl callback. */
static void curl_timer_fire(struct loop *l, long long id, void *arg)
{
	int running;
	long ms = -1;

	(void)id;
	(void)arg;
	l->curl_timer = 0; /* fired: the id is dead */
	curl_multi_socket_action(l->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	/* libcurl calls the timer callback only when its expiry changes. Had
	 * this timer fired before libcurl's own clock (CLOCK_MONOTONIC_RAW vs
	 * rd_mono's CLOCK_MONOTONIC, ms rounding) saw it expire, nothing would
	 * have changed and no timer would be left: re-arm from libcurl's
	 * answer. */
	if (!l->curl_timer && curl_multi_timeout(l->multi, &ms) == CURLM_OK && ms >= 0)
		curl_timer_cb(l->multi, ms, l);
	xfers_dispatch_done(l);
}

/* CURLMOPT_TIMERFUNCTION: keep exactly one loop timer at libcurl's expiry.
 * Called from inside libcurl, so it only touches the heap. A 0 ms timeout
 * asked for during dispatch lands on the next turn (see loop_timer_add): a
 * socket_action that keeps asking for 0 cannot pin a turn. */
static int curl_timer_cb(CURLM *multi, long ms, void *userp)
{
	struct loop *l = userp;
	long long id;

	(void)multi;
	if (l->curl_timer) {
		loop_timer_del(l, l->curl_timer);
		l->curl_timer = 0;
	}
	if (ms < 0)
		return 0;
	/* After the delete the freed slot is reused: this allocates only when
	 * no timer was set, and a failure makes libcurl fail the transfers. */
	id = loop_timer_add(l, rd_mono() + (double)ms / 1000.0, curl_timer_fire, NULL);
	if (id < 0)
		return -1;
	l->curl_timer = id;
	return 0;
}

/* CURLMOPT_SOCKETFUNCTION: mirror libcurl's sockets in the epoll set. */
static int curl_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct loop *l = userp;
	struct fdent *e;
	uint32_t gen;
	int mask;

	(void)easy;
	(void)socketp;
	if (s < 0)
		return 0;
	if (what == CURL_POLL_REMOVE) {
		if ((size_t)s < l->nfds && l->fds[s].kind == FD_CURL)
			ep_forget(l, s);
		return 0;
	}
	mask = (what & CURL_POLL_IN ? LOOP_READ : 0) | (what & CURL_POLL_OUT ? LOOP_WRITE : 0);
	if (fds_reserve(l, s) < 0)
		return -1;
	e = &l->fds[s];
	if (e->kind == FD_WAKE)
		return -1; /* cannot be: the eventfd is open */
	/* A FD_USER entry here is one the caller closed without loop_fd_del:
	 * the number is libcurl's now. */
	gen = e->kind == FD_CURL ? e->gen : e->gen + 1;
	if (ep_set(l, s, mask, gen, e->kind != FD_NONE) < 0)
		return -1;
	e->gen = gen;
	e->kind = FD_CURL;
	e->mask = (uint8_t)mask;
	e->fn = NULL;
	e->arg = NULL;
	return 0;
}

int loop_xfer_add(struct loop *l, CURL *easy, loop_xfer_fn *done, void *arg)
{
	struct xfer *x, **pp;
	CURLMcode mc;

	if (!l || !easy || !done) {
		errno = EINVAL;
		return -1;
	}
	pp = xfer_link(l, easy);
	if (*pp) {
		errno = EEXIST;
		return -1;
	}
	x = malloc(sizeof(*x));
	if (!x)
		return -1;
	*x = (struct xfer){easy, done, arg, NULL};
	*pp = x;
	l->nxfers++;
	mc = curl_multi_add_handle(l->multi, easy);
	if (mc != CURLM_OK) {
		xfer_unlink(l, easy);
		free(x);
		errno = mc == CURLM_OUT_OF_MEMORY ? ENOMEM : mc == CURLM_ADDED_ALREADY ? EEXIST : EINVAL;
		return -1;
	}
	xfer_rehash(l);
	return 0;
}

void loop_xfer_del(struct loop *l, CURL *easy)
{
	struct xfer *x;

	if (!l || !easy)
		return;
	x = xfer_unlink(l, easy);
	if (!x)
		return;
	curl_multi_remove_handle(l->multi, easy);
	free(x);
}

size_t loop_xfer_count(const struct loop *l)
{
	return l ? l->nxfers : 0;
}

/* ---------- the loop ---------- */

struct loop *loop_new(void)
{
	struct loop *l = calloc(1, sizeof(*l));
	int err;

	if (!l)
		return NULL;
	l->epfd = l->wakefd = -1;
	l->free_head = NO_SLOT;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0)
		goto fail;
	l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (l->wakefd < 0)
		goto fail;
	if (timers_grow(l) < 0 || fds_reserve(l, l->wakefd) < 0)
		goto fail;
	l->nxb = XFER_BUCKETS_MIN;
	l->xb = calloc(l->nxb, sizeof(*l->xb));
	if (!l->xb)
		goto fail;
	l->fds[l->wakefd] = (struct fdent){NULL, NULL, 1, FD_WAKE, LOOP_READ};
	if (ep_set(l, l->wakefd, LOOP_READ, 1, 0) < 0)
		goto fail;
	l->multi = curl_multi_init();
	if (!l->multi) {
		errno = ENOMEM;
		goto fail;
	}
	if (curl_multi_setopt(l->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb) != CURLM_OK ||
	    curl_multi_setopt(l->multi, CURLMOPT_SOCKETDATA, l) != CURLM_OK ||
	    curl_multi_setopt(l->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb) != CURLM_OK ||
	    curl_multi_setopt(l->multi, CURLMOPT_TIMERDATA, l) != CURLM_OK) {
		errno = EINVAL;
		goto fail;
	}
	return l;
fail:
	err = errno;
	loop_free(l);
	errno = err;
	return NULL;
}

void loop_free(struct loop *l)
{
	if (!l)
		return;
	/* Take the handles out first: removing one may call back into the
	 * socket and timer callbacks, which need the tables intact. */
	for (size_t i = 0; l->xb && i < l->nxb; i++)
		while (l->xb[i]) {
			struct xfer *x = l->xb[i];
			l->xb[i] = x->next;
			curl_multi_remove_handle(l->multi, x->easy);
			free(x);
		}
	l->nxfers = 0;
	if (l->multi)
		curl_multi_cleanup(l->multi);
	free(l->xb);
	free(l->slots);
	free(l->heap);
	free(l->fds);
	if (l->wakefd >= 0)
		close(l->wakefd);
	if (l->epfd >= 0)
		close(l->epfd);
	free(l);
}

void loop_wakeup(struct loop *l)
{
	int saved = errno;
	uint64_t one = 1;

	if (!l)
		return;
	/* EAGAIN: the counter is at its maximum, a wakeup is pending anyway. */
	if (write(l->wakefd, &one, sizeof(one)) < 0) {
		/* nothing to do: see above */
	}
	errno = saved;
}

void loop_set_before_wait(struct loop *l, loop_hook_fn *fn, void *arg)
{
	if (!l)
		return;
	l->before_wait = fn;
	l->before_arg = fn ? arg : NULL;
}

/* Milliseconds for epoll_wait: max_wait (< 0: none), cut to the nearest
 * timer, libcurl's included. */
static int wait_ms(const struct loop *l, double max_wait)
{
	double w = isnan(max_wait) ? 0 : max_wait;

	if (l->nheap) {
		double d = l->heap[0].when - rd_mono();
		if (d < 0)
			d = 0;
		if (w < 0 || d < w)
			w = d;
	}
	if (w < 0)
		return -1;
	if (w >= INT_MAX / 1000.0)
		return INT_MAX;
	/* Round up: rounding down would wake before the timer is due and spin
	 * through empty 0 ms turns for the last fraction of a millisecond. */
	return (int)ceil(w * 1000.0);
}

int loop_run_once(struct loop *l, double max_wait)
{
	int n;

	if (!l) {
		errno = EINVAL;
		return -1;
	}
	if (l->running) {
		errno = EBUSY;
		return -1;
	}
	l->running = 1;
	l->st.turns++;
	if (l->before_wait)
		l->before_wait(l, l->before_arg);
	n = epoll_wait(l->epfd, l->ev, MAX_EVENTS, wait_ms(l, max_wait));
	if (n < 0) {
		if (errno != EINTR) {
			l->running = 0;
			return -1;
		}
		n = 0;
	}
	l->dispatching = 1;
	l->now0 = rd_mono();
	l->seq0 = l->seq;
	l->ndisp = 0;
	fds_dispatch(l, n);
	xfers_dispatch_done(l);
	timers_run_due(l);
	l->dispatching = 0;
	l->running = 0;
	return l->ndisp > INT_MAX ? INT_MAX : (int)l->ndisp;
}

void loop_get_stats(const struct loop *l, struct loop_stats *st)
{
	if (!st)
		return;
	if (!l)
		memset(st, 0, sizeof(*st));
	else
		*st = l->st;
}

/* A generic event loop in the shape of Redis ae.c: one-shot timers with ids,
 * file descriptors, curl transfers (multi_socket API) and a cross-thread
 * wakeup, all behind one epoll set. It knows nothing about jobs.
 *
 * Ownership: the loop owns its epoll fd, its eventfd, its CURLM and its timer
 * and transfer records; loop_free releases them. It never owns what the
 * caller hands it: file descriptors are never closed, easy handles never
 * cleaned up, callback args never freed. A timer ends when it fires, a
 * transfer when done is called, any registration when the caller deletes
 * it; loop_free drops what is left without calling anything.
 *
 * Threads: every function runs on the loop's thread, from a callback or
 * not, except loop_wakeup (any thread, and signal handlers). Callbacks may
 * add and delete any registration, their own included; they must not call
 * loop_free. Callbacks never run inside a libcurl callback, so they may
 * call curl_easy_* and loop_xfer_* freely.
 *
 * Functions returning int return 0 (or a count) on success and -1 with
 * errno set on failure: EINVAL (bad argument), ENOMEM, EEXIST (already
 * registered), EBUSY (loop_run_once called from a callback), or epoll's own
 * (EBADF for a closed fd, EPERM for a regular file). */
#ifndef RECOVERYD_LOOP_H
#define RECOVERYD_LOOP_H

#include <stddef.h>

#include <curl/curl.h>

#define LOOP_READ 1
#define LOOP_WRITE 2

struct loop;

typedef void loop_timer_fn(struct loop *l, long long id, void *arg);
typedef void loop_fd_fn(struct loop *l, int fd, int mask, void *arg);
typedef void loop_xfer_fn(struct loop *l, CURL *easy, CURLcode cc, void *arg);
typedef void loop_hook_fn(struct loop *l, void *arg);

/* NULL on failure (errno set). Call curl_global_init before the first one. */
struct loop *loop_new(void);
/* Drops pending timers, fd registrations and transfers (removed from the
 * multi handle, done not called; the easy handles stay the caller's). */
void loop_free(struct loop *l);

/* ---- timers: one-shot, ordered by `when`, ties in the order added ---- */

/* Run fn(l, id, arg) once at rd_mono() time `when` (a past time: due at
 * once). Returns the timer's id or -1. Ids are > 0 and not ordered; an id
 * comes back only after its slot was reused 2^31 times, so deleting a stale
 * id is safe (it returns -1). A timer added while a turn dispatches never
 * runs in that turn, even when already due: it is treated as due at the
 * turn's start and runs on the next one, after the timers that were due
 * before it (callers time-slice on that). */
long long loop_timer_add(struct loop *l, double when, loop_timer_fn *fn, void *arg);
/* Cancel a pending timer: 0, or -1 (ENOENT) when no such timer is pending
 * (already fired, already deleted, or never was). O(log n). */
int loop_timer_del(struct loop *l, long long id);
/* rd_mono() time of the caller's nearest timer, or -1 when there is none. */
double loop_next_timer(const struct loop *l);
/* Number of the caller's pending timers (the loop's own curl timer is not
 * counted by either function). */
size_t loop_timer_count(const struct loop *l);

/* ---- file descriptors (level-triggered) ---- */

/* Watch fd for mask (LOOP_READ and/or LOOP_WRITE); fn gets the ready subset
 * of mask (an error or hang-up reports as every watched direction). Adding
 * an fd that is already watched replaces its mask, fn and arg. The fd stays
 * the caller's: loop_fd_del it before closing it.
 * A child process is watched through its pidfd (pidfd_open(2), Linux 5.3+)
 * with LOOP_READ: it turns readable once the child exits; reap it with
 * waitpid(pid, .., WNOHANG) in fn, then loop_fd_del and close the pidfd. */
int loop_fd_add(struct loop *l, int fd, int mask, loop_fd_fn *fn, void *arg);
/* Stop watching fd; a no-op when it is not watched. Safe from any callback:
 * an event of the current turn for a deleted fd is never dispatched, even
 * when the number was reused and registered again in the same turn. */
void loop_fd_del(struct loop *l, int fd);

/* ---- curl transfers ---- */

/* Start a transfer of a configured easy handle; done(l, easy, cc, arg) is
 * called once when it ends, with the handle already out of the multi (done
 * may clean it up, or re-add it for another transfer). The loop does not
 * use CURLOPT_PRIVATE: it stays the caller's. -1 with EEXIST when easy is
 * already in flight. */
int loop_xfer_add(struct loop *l, CURL *easy, loop_xfer_fn *done, void *arg);
/* Abandon a transfer in flight without calling done; a no-op when easy is
 * not in flight. The handle may be cleaned up afterwards. */
void loop_xfer_del(struct loop *l, CURL *easy);
/* Number of transfers in flight. */
size_t loop_xfer_count(const struct loop *l);

/* ---- turns ---- */

/* Make a blocking or future loop_run_once return promptly. Any thread;
 * async-signal-safe (one write(2) to an eventfd; errno preserved). */
void loop_wakeup(struct loop *l);
/* fn(l, arg) runs at the start of each turn, before the wait (ae's
 * beforesleep): what it adds is accounted for in that turn's wait, and a
 * timer it adds that is already due runs in that turn. NULL fn clears it. */
void loop_set_before_wait(struct loop *l, loop_hook_fn *fn, void *arg);
/* One turn: before_wait; wait at most max_wait seconds (0 = do not block,
 * < 0 = no limit) and never past the nearest timer or a wakeup; then
 * dispatch ready fds, finished transfers, and the timers due when the
 * dispatch started. Returns the number of callbacks run (fd, transfer,
 * timer; 0 after a wakeup or a timeout), or -1 on error (EBUSY from a
 * callback; epoll failure). EINTR is not an error: the turn goes on. */
int loop_run_once(struct loop *l, double max_wait);

/* Counters since loop_new, for metrics and tests. */
struct loop_stats {
	unsigned long long turns;
	unsigned long long fd_events;  /* fd callbacks run */
	unsigned long long xfers_done; /* done callbacks run */
	unsigned long long timers_run; /* the caller's timer callbacks run */
	unsigned long long wakeups;    /* turns woken by loop_wakeup */
};
void loop_get_stats(const struct loop *l, struct loop_stats *st);

#endif

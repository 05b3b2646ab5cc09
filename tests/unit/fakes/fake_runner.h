/* A stand-in for include/recoveryd/runner.h, for unit tests of the code
 * above the runner (tests/unit/test_engine.c). It runs nothing: every call
 * is recorded, in order, as a JSON object in one process-wide log:
 *
 *   {"call":"new","max_in_flight":N}        runner_new
 *   {"call":"start"} {"call":"drain","grace":S} {"call":"free"}
 *   {"call":"schedule","id","key","playbook","state","dry_run","attempts",
 *    "next_run_at"}                          runner_schedule (the job as handed over)
 *   {"call":"cancel","id"}                   runner_cancel
 *   {"call":"deliver","url"}                 runner_xfer (the outbox sending a row;
 *                                            kept until fake_runner_complete)
 *   {"call":"timer","in"}                    runner_timer (kept until
 *                                            fake_runner_fire)
 *
 * runner_call runs its function at once. Scheduled jobs stay the caller's
 * (the engine frees them); an attempt never runs here. */
#ifndef RECOVERYD_TESTS_FAKE_RUNNER_H
#define RECOVERYD_TESTS_FAKE_RUNNER_H

#include <cjson/cJSON.h>

/* Forget the log (and the hook). */
void fake_runner_reset(void);
/* The log so far (owned by the fake). */
const cJSON *fake_runner_log(void);
/* The calls named call ("schedule", "cancel", ...), in order: a new array
 * the caller deletes. */
cJSON *fake_runner_calls(const char *call);
/* Called synchronously inside runner_schedule, runner_cancel and
 * runner_xfer with the call's log entry, so that a test can check what
 * was true at that moment (was it committed yet?). NULL: none. */
void fake_runner_set_hook(void (*hook)(const cJSON *call, void *arg), void *arg);

/* Transfers started (runner_xfer) and not completed; timers set
 * (runner_timer) and not fired. Their easy handles and args stay the
 * caller's: reset only forgets them. */
int fake_runner_xfers(void);
int fake_runner_timers(void);
/* Complete the oldest pending transfer whose URL contains url_part (NULL:
 * any): perform it for real (curl_easy_perform, blocking) and call its done
 * with the CURLcode. 0, or -1 when there is none. */
int fake_runner_complete(const char *url_part);
/* Fire the oldest pending timer now, whatever its time: 0, or -1 when
 * there is none. */
int fake_runner_fire(void);
/* End scheduled job id as the runner would after one attempt: failed, or
 * succeeded; then its job_done (the job is the engine's again). 0, or -1
 * when no such job was scheduled. */
int fake_runner_end(const char *id, int failed);

#endif

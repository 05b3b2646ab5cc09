/* recovery.exec's processes, as the runner's loop drives them: an exec op
 * (struct op of kind OP_EXEC, made by recovery.exec) is a child in a
 * process group of its own with its stdout and stderr on non-blocking
 * pipes. The runner waits on the descriptors lua_exec_wait lists, polls
 * each running op and finishes those lua_exec_poll reports done. All on
 * the runner thread. */
#ifndef RECOVERYD_LUA_EXEC_H
#define RECOVERYD_LUA_EXEC_H

#include <curl/curl.h>

#include "recoveryd/op.h"

/* Room lua_exec_wait needs in fds per op. */
#define LUA_EXEC_WAITFDS 3

/* Put the descriptors to wait on for op (its open pipes, its pidfd while it
 * runs) into fds (room for LUA_EXEC_WAITFDS) and return their count. Lowers
 * *wait (seconds) to op's deadline, and to a short poll interval when there
 * is no pidfd to report the exit. */
unsigned lua_exec_wait(const struct op *op, struct curl_waitfd *fds, double *wait);
/* Read what the pipes hold, kill the process group once the deadline (now,
 * rd_mono seconds) has passed, and reap the child. Returns 1 when op is
 * done: the child exited and the pipes are closed; a group that keeps them
 * open after the child exited is killed, so nothing outlives the command.
 * Returns 0 while it runs. */
int lua_exec_poll(struct op *op, double now);
/* Stop op at once: kill its process group and reap the child. */
void lua_exec_abort(struct op *op);

#endif

/* recovery.exec{argv..., timeout, env, stdin, mutates} (DESIGN.md §4) and
 * the life of its processes. A call goes parse (the arguments into a struct
 * exec_req, every check that can raise) → build (argv, the record detail,
 * the allow-list, dry-run planning, the environment) → spawn (posix_spawn
 * in a process group of its own) → submit (to the job's runner, then
 * yield). The runner's loop then waits on what lua_exec_wait lists and
 * calls lua_exec_poll until the command is done; finish_exec records the
 * action and pushes {code, stdout, stderr} or nil, err. */
#include "recoveryd/lua_exec.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lua_api_impl.h"
#include "recoveryd/common.h"
#include "recoveryd/job.h"
#include "recoveryd/sandbox.h"

#define EXEC_OUT_MAX (1024 * 1024)
#define EXEC_ARGS_MAX 256
#define RECORD_OUT_MAX 4096 /* stdout/stderr bytes kept in the job record */

/* ---------- the result ---------- */

struct exec_ctx {
	cJSON *detail;
	double timeout;
};

static void free_exec_ctx(void *p)
{
	struct exec_ctx *c = p;
	if (c) {
		cJSON_Delete(c->detail);
		free(c);
	}
}

/* The head of a command's output for the job record, marked when cut. */
static void record_output(cJSON *detail, const char *name, const struct rbuf *b)
{
	char buf[RECORD_OUT_MAX + 64];
	size_t n = b->len > RECORD_OUT_MAX ? RECORD_OUT_MAX : b->len;

	memcpy(buf, b->p ? b->p : "", n);
	if (b->len > RECORD_OUT_MAX || b->truncated)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\n...[truncated: %zu bytes in all]",
		                      b->len);
	buf[n] = '\0';
	cJSON_AddStringToObject(detail, name, buf);
}

static int finish_exec(lua_State *co, struct op *op)
{
	struct exec_ctx *c = op->ctx;
	int code = -1, sig = 0;

	if (WIFEXITED(op->wstatus))
		code = WEXITSTATUS(op->wstatus);
	else if (WIFSIGNALED(op->wstatus))
		sig = WTERMSIG(op->wstatus);
	cJSON_AddNumberToObject(c->detail, "duration_seconds", rd_mono() - op->started);
	if (op->timed_out) {
		char msg[96];
		snprintf(msg, sizeof(msg), "timeout after %gs (process group killed)", c->timeout);
		cJSON_AddStringToObject(c->detail, "error", msg);
		lua_api_record(op->job, "action", c->detail, 0);
		c->detail = NULL;
		lua_pushnil(co);
		lua_pushstring(co, msg);
		return 2;
	}
	cJSON_AddNumberToObject(c->detail, "code", sig ? 128 + sig : code);
	if (sig)
		cJSON_AddNumberToObject(c->detail, "signal", sig);
	record_output(c->detail, "stdout", &op->out);
	record_output(c->detail, "stderr", &op->err);
	lua_api_record(op->job, "action", c->detail, 0);
	c->detail = NULL;
	lua_newtable(co);
	lua_pushinteger(co, sig ? 128 + sig : code);
	lua_setfield(co, -2, "code");
	if (sig) {
		lua_pushinteger(co, sig);
		lua_setfield(co, -2, "signal");
	}
	lua_pushlstring(co, op->out.p ? op->out.p : "", op->out.len);
	lua_setfield(co, -2, "stdout");
	lua_pushlstring(co, op->err.p ? op->err.p : "", op->err.len);
	lua_setfield(co, -2, "stderr");
	if (op->out.truncated || op->err.truncated) {
		lua_pushboolean(co, 1);
		lua_setfield(co, -2, "truncated");
	}
	return 1;
}

static void free_strv(char **v)
{
	for (char **p = v; p && *p; p++)
		free(*p);
	free(v);
}

/* ---------- parse ---------- */

/* One call's arguments, checked. argv is the array part of the table at
 * stack index 1; stdin_data is borrowed from a value the call keeps on its
 * stack. */
struct exec_req {
	size_t argc;
	int mutates;            /* recorded as planned in dry-run */
	const char *stdin_data; /* or NULL: /dev/null */
	size_t stdin_len;
	int env;                /* stack index of the env table, or 0 */
	double timeout;         /* seconds, within the attempt's deadline */
};

/* Check the arguments of recovery.exec into q and return the job; misuse
 * raises a permanent error. Allocates nothing. */
static struct job *exec_parse(lua_State *L, struct exec_req *q)
{
	static const char *const keys[] = {"timeout", "env", "stdin", "mutates", NULL};
	struct job *j;
	double remaining;

	memset(q, 0, sizeof(*q));
	lua_api_checktype(L, "exec", 1, LUA_TTABLE);
	q->argc = lua_rawlen(L, 1);
	if (q->argc < 1 || q->argc > EXEC_ARGS_MAX)
		lua_api_argerror(L, "exec", 1, "argv: 1 to 256 strings");
	lua_api_check_keys(L, 1, "exec", keys, (lua_Integer)q->argc);
	for (size_t i = 1; i <= q->argc; i++) {
		lua_rawgeti(L, 1, (lua_Integer)i);
		if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
			lua_api_fatal(L, "recovery.exec: argv[%d] must be a string", (int)i);
		if (sandbox_has_nul(L, -1))
			lua_api_fatal(L, "recovery.exec: argv[%d] must not contain a NUL byte", (int)i);
		lua_pop(L, 1);
	}
	lua_getfield(L, 1, "mutates");
	q->mutates = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
	lua_getfield(L, 1, "stdin");
	if (!lua_isnil(L, -1))
		q->stdin_data = lua_api_tolstring(L, -1, "recovery.exec: stdin", &q->stdin_len);
	lua_getfield(L, 1, "env");
	if (!lua_isnil(L, -1)) {
		lua_api_checkfield(L, -1, "recovery.exec: env", LUA_TTABLE);
		q->env = lua_gettop(L);
		lua_pushnil(L);
		size_t n = 0;
		while (lua_next(L, q->env)) {
			/* Refuse what cannot be passed whole, rather than drop it. */
			if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
				lua_api_fatal(L, "recovery.exec: env must map names to strings");
			if (sandbox_has_nul(L, -2) || sandbox_has_nul(L, -1))
				lua_api_fatal(L, "recovery.exec: env names and values must not contain a NUL byte");
			if (!*lua_tostring(L, -2) || strchr(lua_tostring(L, -2), '='))
				lua_api_fatal(L, "recovery.exec: env name '%s' is empty or holds '='", lua_tostring(L, -2));
			if (++n >= EXEC_ARGS_MAX)
				lua_api_fatal(L, "recovery.exec: at most %d env entries", EXEC_ARGS_MAX - 1);
			lua_pop(L, 1);
		}
	}
	lua_getfield(L, 1, "timeout");
	j = lua_api_yielding_job(L, "exec");
	remaining = lua_api_deadline(j) - rd_mono();
	q->timeout = lua_api_optnumber(L, -1, "recovery.exec: timeout", remaining);
	if (q->timeout > remaining)
		q->timeout = remaining;
	lua_pop(L, 1);
	return j;
}

/* ---------- build ---------- */

/* What a request becomes: the command to start and its record. */
struct exec_cmd {
	char **argv;            /* NULL-terminated */
	char **envp;            /* NULL-terminated; NULL until built */
	struct exec_ctx *c;     /* the action's record detail and the timeout */
};

static void exec_cmd_free(struct exec_cmd *cmd)
{
	free_strv(cmd->argv);
	free_strv(cmd->envp);
	free_exec_ctx(cmd->c);
	memset(cmd, 0, sizeof(*cmd));
}

enum exec_step {
	EXEC_OK,                /* go on to the next step */
	EXEC_PLANNED,           /* dry-run: recorded as planned, nothing to start */
	EXEC_FAILED,            /* err says why: recorded with the action, nil, err */
	EXEC_REFUSED,           /* as EXEC_FAILED, but a permanent error (not allowed) */
	EXEC_NOMEM,
};

/* Make q's command into cmd (the caller's to free in every case): argv,
 * the record detail, then the checks that end the call without starting
 * anything (the allow-list, dry-run), then the environment. */
static enum exec_step exec_build(lua_State *L, struct job *j, const struct exec_req *q, struct exec_cmd *cmd,
                                 char *err, size_t errlen)
{
	size_t envc = 0;
	cJSON *argj;

	memset(cmd, 0, sizeof(*cmd));
	cmd->argv = calloc(q->argc + 1, sizeof(char *));
	if (!cmd->argv)
		return EXEC_NOMEM;
	argj = cJSON_CreateArray();
	for (size_t i = 0; i < q->argc; i++) {
		lua_rawgeti(L, 1, (lua_Integer)i + 1);
		cmd->argv[i] = strdup(lua_tostring(L, -1));
		lua_pop(L, 1);
		if (!cmd->argv[i]) {
			cJSON_Delete(argj);
			return EXEC_NOMEM;
		}
		cJSON_AddItemToArray(argj, cJSON_CreateString(cmd->argv[i]));
	}
	cmd->c = calloc(1, sizeof(*cmd->c));
	if (!cmd->c) {
		cJSON_Delete(argj);
		return EXEC_NOMEM;
	}
	cmd->c->timeout = q->timeout;
	cmd->c->detail = cJSON_CreateObject();
	cJSON_AddStringToObject(cmd->c->detail, "kind", "exec");
	cJSON_AddItemToObject(cmd->c->detail, "argv", argj);
	if (!q->mutates)
		cJSON_AddBoolToObject(cmd->c->detail, "mutates", 0);

	if (cmd->argv[0][0] != '/' || !lua_api_exec_allowed(cmd->argv[0])) {
		snprintf(err, errlen, "program %s is not allowed (see --exec-allow)", cmd->argv[0]);
		return EXEC_REFUSED;
	}
	if (job_plans_only(j) && q->mutates) {
		lua_api_record(j, "action", cmd->c->detail, 1);
		cmd->c->detail = NULL;
		return EXEC_PLANNED;
	}

	/* A minimal environment: the daemon's own (tokens, paths) is not passed. */
	cmd->envp = calloc(EXEC_ARGS_MAX + 2, sizeof(char *));
	if (!cmd->envp)
		return EXEC_NOMEM;
	cmd->envp[envc++] = strdup("PATH=/usr/local/bin:/usr/bin:/bin");
	if (q->env) {
		/* Checked by exec_parse: string names without '=' or NUL, string
		 * values, fewer than EXEC_ARGS_MAX of them. */
		lua_pushnil(L);
		while (lua_next(L, q->env)) {
			const char *k = lua_tostring(L, -2), *v = lua_tostring(L, -1);
			char *e = malloc(strlen(k) + strlen(v) + 2);
			if (!e) {
				lua_pop(L, 2);
				return EXEC_NOMEM;
			}
			sprintf(e, "%s=%s", k, v);
			cmd->envp[envc++] = e;
			lua_pop(L, 1);
		}
	}
	return EXEC_OK;
}

/* ---------- spawn ---------- */

/* Start argv[0] in a process group of its own, with in/out/err as its
 * stdin/stdout/stderr, no other descriptor, default signal dispositions and
 * an empty mask. posix_spawn (glibc: clone with CLONE_VM|CLONE_VFORK) does
 * not copy the daemon's page tables as fork would, and reports a failed
 * exec as its result. Returns 0 or an errno value. */
static int spawn(char **argv, char **envp, int in, int out, int errfd, pid_t *pid)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, all;
	int rc;

	if ((rc = posix_spawn_file_actions_init(&fa)) != 0)
		return rc;
	if ((rc = posix_spawnattr_init(&at)) != 0) {
		posix_spawn_file_actions_destroy(&fa);
		return rc;
	}
	sigemptyset(&none);
	sigfillset(&all);
	if ((rc = posix_spawn_file_actions_adddup2(&fa, in, 0)) != 0 ||
	    (rc = posix_spawn_file_actions_adddup2(&fa, out, 1)) != 0 ||
	    (rc = posix_spawn_file_actions_adddup2(&fa, errfd, 2)) != 0 ||
	    (rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3)) != 0 ||
	    (rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
	                                            POSIX_SPAWN_SETSIGDEF)) != 0 ||
	    (rc = posix_spawnattr_setpgroup(&at, 0)) != 0 ||
	    (rc = posix_spawnattr_setsigmask(&at, &none)) != 0 ||
	    (rc = posix_spawnattr_setsigdefault(&at, &all)) != 0)
		goto out;
	rc = posix_spawn(pid, argv[0], &fa, &at, argv, envp);
out:
	posix_spawnattr_destroy(&at);
	posix_spawn_file_actions_destroy(&fa);
	return rc;
}

/* Start cmd with stdin from q (a memfd) or /dev/null and stdout and stderr
 * on non-blocking pipes; *opp is the op that watches the process, and owns
 * cmd's record from then on. */
static enum exec_step exec_spawn(const struct exec_req *q, struct exec_cmd *cmd, struct op **opp, char *err,
                                 size_t errlen)
{
	int out[2] = {-1, -1}, errp[2] = {-1, -1}, in_fd = -1, rc;
	enum exec_step st = EXEC_FAILED;
	struct op *op;
	pid_t pid;

	*opp = NULL;
	if (q->stdin_data) {
		in_fd = memfd_create("recoveryd-stdin", MFD_CLOEXEC);
		if (in_fd < 0 || write(in_fd, q->stdin_data, q->stdin_len) != (ssize_t)q->stdin_len ||
		    lseek(in_fd, 0, SEEK_SET) != 0) {
			snprintf(err, errlen, "cannot prepare stdin: %s", strerror(errno));
			goto out;
		}
	} else {
		in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	if (pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		goto out;
	}
	if ((rc = spawn(cmd->argv, cmd->envp, in_fd, out[1], errp[1], &pid)) != 0) {
		snprintf(err, errlen, "cannot start %s: %s", cmd->argv[0], strerror(rc));
		goto out;
	}
	/* The child holds its ends now. */
	close(out[1]);
	close(errp[1]);
	close(in_fd);
	out[1] = errp[1] = in_fd = -1;
	op = calloc(1, sizeof(*op));
	if (!op) {
		kill(-pid, SIGKILL);
		waitpid(pid, NULL, 0);
		st = EXEC_NOMEM;
		goto out;
	}
	op->kind = OP_EXEC;
	op->pid = pid;
	op->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	op->out_fd = out[0];
	op->err_fd = errp[0];
	out[0] = errp[0] = -1;
	fcntl(op->out_fd, F_SETFL, O_NONBLOCK);
	fcntl(op->err_fd, F_SETFL, O_NONBLOCK);
	op->out.max = op->err.max = EXEC_OUT_MAX;
	op->deadline = rd_mono() + q->timeout;
	op->ctx = cmd->c;
	op->free_ctx = free_exec_ctx;
	op->finish = finish_exec;
	cmd->c = NULL;
	*opp = op;
	st = EXEC_OK;
out:
	for (int i = 0; i < 2; i++) {
		if (out[i] >= 0)
			close(out[i]);
		if (errp[i] >= 0)
			close(errp[i]);
	}
	if (in_fd >= 0)
		close(in_fd);
	return st;
}

/* ---------- submit ---------- */

/* Release an exec op that never reached the runner: kill and reap its
 * process, close its descriptors. */
static void exec_op_discard(struct op *op)
{
	lua_exec_abort(op);
	close(op->out_fd);
	close(op->err_fd);
	if (op->pidfd >= 0)
		close(op->pidfd);
	free_exec_ctx(op->ctx);
	free(op);
}

int lua_exec_run(lua_State *L)
{
	struct exec_req q;
	struct exec_cmd cmd;
	struct op *op = NULL;
	char err[256];
	struct job *j = exec_parse(L, &q);
	enum exec_step st = exec_build(L, j, &q, &cmd, err, sizeof(err));

	if (st == EXEC_OK)
		st = exec_spawn(&q, &cmd, &op, err, sizeof(err));
	switch (st) {
	case EXEC_OK:
		exec_cmd_free(&cmd);
		return lua_api_submit(L, j, op, exec_op_discard);
	case EXEC_PLANNED:
		exec_cmd_free(&cmd);
		lua_newtable(L);
		lua_pushinteger(L, 0);
		lua_setfield(L, -2, "code");
		lua_pushliteral(L, "");
		lua_setfield(L, -2, "stdout");
		lua_pushliteral(L, "");
		lua_setfield(L, -2, "stderr");
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, "planned");
		return 1;
	case EXEC_FAILED:
	case EXEC_REFUSED:
		if (cmd.c && cmd.c->detail) {
			cJSON_AddStringToObject(cmd.c->detail, "error", err);
			lua_api_record(j, "action", cmd.c->detail, 0);
			cmd.c->detail = NULL;
		}
		exec_cmd_free(&cmd);
		/* No retry puts a program into --exec-allow. */
		if (st == EXEC_REFUSED)
			return lua_api_fatal(L, "recovery.exec: %s", err);
		lua_pushnil(L);
		lua_pushstring(L, err);
		return 2;
	case EXEC_NOMEM:
		break;
	}
	exec_cmd_free(&cmd);
	return luaL_error(L, "out of memory");
}

/* ---------- the process on the runner's loop ---------- */

/* Append what fd holds to b; close it at end of file or on an error. */
static void read_fd(int *fd, struct rbuf *b)
{
	char buf[8192];

	while (*fd >= 0) {
		ssize_t n = read(*fd, buf, sizeof(buf));
		if (n > 0) {
			rbuf_append(b, buf, (size_t)n); /* beyond the cap: dropped, marked */
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		close(*fd);
		*fd = -1;
	}
}

unsigned lua_exec_wait(const struct op *op, struct curl_waitfd *fds, double *wait)
{
	unsigned n = 0;

	if (op->out_fd >= 0)
		fds[n++] = (struct curl_waitfd){op->out_fd, CURL_WAIT_POLLIN, 0};
	if (op->err_fd >= 0)
		fds[n++] = (struct curl_waitfd){op->err_fd, CURL_WAIT_POLLIN, 0};
	if (op->pidfd >= 0 && !op->exited)
		fds[n++] = (struct curl_waitfd){op->pidfd, CURL_WAIT_POLLIN, 0};
	else if (*wait > 0.05)
		*wait = 0.05; /* no pidfd: poll for the exit */
	if (op->deadline) {
		double d = op->deadline - rd_mono();
		if (d < *wait)
			*wait = d < 0 ? 0 : d;
	}
	return n;
}

int lua_exec_poll(struct op *op, double now)
{
	read_fd(&op->out_fd, &op->out);
	read_fd(&op->err_fd, &op->err);
	if (!op->exited && op->deadline && now >= op->deadline && !op->timed_out) {
		op->timed_out = 1;
		kill(-op->pid, SIGKILL); /* the whole process group */
	}
	if (!op->exited && waitpid(op->pid, &op->wstatus, WNOHANG) == op->pid)
		op->exited = 1;
	if (!op->exited)
		return 0;
	/* Done once the child exited and the pipes closed, or the child exited
	 * and something in its group keeps them open: then kill the group so
	 * nothing outlives the command. */
	if (op->out_fd >= 0 || op->err_fd >= 0) {
		kill(-op->pid, SIGKILL);
		read_fd(&op->out_fd, &op->out);
		read_fd(&op->err_fd, &op->err);
		if (op->out_fd >= 0) {
			close(op->out_fd);
			op->out_fd = -1;
		}
		if (op->err_fd >= 0) {
			close(op->err_fd);
			op->err_fd = -1;
		}
	}
	return 1;
}

void lua_exec_abort(struct op *op)
{
	if (!op->exited) {
		kill(-op->pid, SIGKILL);
		waitpid(op->pid, &op->wstatus, 0); /* SIGKILL: prompt */
		op->exited = 1;
	}
}

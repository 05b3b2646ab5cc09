/* Playbooks: Lua files returning a table (DESIGN.md §4). A set is loaded
 * whole or not at all, then shared read-only and reference-counted, so a
 * SIGHUP reload swaps sets atomically while jobs finish on the old one. */
#ifndef RECOVERYD_PLAYBOOK_H
#define RECOVERYD_PLAYBOOK_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include "recoveryd/alert.h"
#include "recoveryd/common.h"

struct playbook {
	char *name;
	char *description;
	char *file;            /* file name inside the playbook directory */
	char *source;          /* the chunk text */
	size_t source_len;
	char *chunk;           /* source compiled once (sandbox_compile), loaded into each attempt */
	size_t chunk_len;
	struct matcher_set *match;
	int retries;           /* attempts after the first */
	double backoff_initial, backoff_factor, backoff_max;
	double timeout;        /* seconds per attempt */
	double cooldown;       /* seconds a key rests after its job ends */
	int budget_runs;       /* starts per window; 0 = unlimited */
	double budget_per;     /* window in seconds */
	char **escalate;       /* sink names */
	size_t n_escalate;
	int escalate_set;      /* 0: use the global default sinks */
	char **notify_success; /* sinks told when the job succeeds (notify.on_success) */
	size_t n_notify_success;
	char **notify_start;   /* sinks told when the first attempt starts (notify.on_start) */
	size_t n_notify_start;
	int no_annotations;    /* notify.grafana = false: no Grafana regions for its jobs */
	int idempotent;        /* safe to re-run after a crash mid-attempt */
	int approval_required; /* attempts are plans until a human approves */
	double approval_timeout; /* seconds a plan waits for approval */
};

struct playbook_set {
	struct playbook **v;
	size_t n;
	int refs;              /* guarded by playbook_set_ref/unref's lock */
};

struct playbook_load_opts {
	const char *dir;
	const char *lua_path;
	size_t mem_max;
	/* JSON {"<playbook>": {retries, timeout, cooldown, backoff, budget, approval}}:
	 * the deployment's limits, over the playbook's own; NULL = none. */
	const char *overrides_json;
	/* Set (`recoveryd check`): a playbook that fails to load is told here
	 * and left out, and the others still load. Unset: the first failure
	 * fails the whole set. */
	void (*problem)(void *arg, const char *file, const char *msg);
	void *problem_arg;
};

/* Load every *.lua in opts->dir (sorted). On any error nothing is returned
 * and err names the file and the problem. An empty directory is valid. */
enum rd_status playbook_set_load(const struct playbook_load_opts *opts, struct playbook_set **out,
                                 char *err, size_t errlen);
struct playbook *playbook_set_find(struct playbook_set *set, const char *name);
void playbook_set_ref(struct playbook_set *set);
void playbook_set_unref(struct playbook_set *set);
/* The public description of a playbook (GET /api/v1/playbooks). */
cJSON *playbook_json(const struct playbook *pb);
/* Delay before attempt n+1 after attempt n failed (n >= 1): exponential from
 * backoff_initial by backoff_factor, capped at backoff_max, then jittered
 * into [d/2, d]. rnd is uniform in [0,1). */
double playbook_backoff(const struct playbook *pb, int n, double rnd);

#endif

/* Job helpers: state, result and outcome names, the row view for the journal, redaction. */
#include "recoveryd/job.h"

#include <stdlib.h>
#include <string.h>

#include "recoveryd/log.h"
#include "recoveryd/metrics.h"

static const char *const names[] = {
	[JS_QUEUED] = "queued",       [JS_RUNNING] = "running",
	[JS_RETRY_WAIT] = "retry_wait", [JS_SUCCEEDED] = "succeeded",
	[JS_FAILED] = "failed",       [JS_CANCELLED] = "cancelled",
	[JS_BUDGET_EXHAUSTED] = "budget_exhausted", [JS_PAUSED] = "paused",
	[JS_AWAITING_APPROVAL] = "awaiting_approval",
};
_Static_assert(sizeof(names) / sizeof(names[0]) == JS_COUNT, "a name per state");

const char *job_state_name(enum job_state s)
{
	return (size_t)s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

int job_state_parse(const char *s, enum job_state *out)
{
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(names[i], s) == 0) {
			*out = (enum job_state)i;
			return 0;
		}
	return -1;
}

static const char *const result_names[] = {
	[AR_SUCCEEDED] = "succeeded", [AR_FAILED] = "failed",           [AR_TIMEOUT] = "timeout",
	[AR_CANCELLED] = "cancelled", [AR_INTERRUPTED] = "interrupted",
};
_Static_assert(sizeof(result_names) / sizeof(result_names[0]) == AR_COUNT, "a name per result");

const char *attempt_result_name(enum attempt_result r)
{
	return (unsigned)r < AR_COUNT ? result_names[r] : "unknown";
}

/* The kind label of recoveryd_playbook_errors_total (docs/configuration.md). */
static const char *const error_names[] = {
	[AE_NONE] = NULL, [AE_TIMEOUT] = "timeout", [AE_MEMORY] = "memory", [AE_LOAD] = "load",
};
_Static_assert(sizeof(error_names) / sizeof(error_names[0]) == AE_COUNT, "a name per error kind");

const char *attempt_error_name(enum attempt_error e)
{
	return (unsigned)e < AE_COUNT ? error_names[e] : "unknown";
}

static const char *const outcome_names[] = {
	[OUT_NONE] = NULL,
	[OUT_SUCCEEDED] = "succeeded",
	[OUT_DRY_RUN_SUCCEEDED] = "dry_run_succeeded",
	[OUT_FAILED] = "failed",
	[OUT_DRY_RUN_FAILED] = "dry_run_failed",
	[OUT_CANCELLED] = "cancelled",
	[OUT_INTERRUPTED] = "interrupted",
	[OUT_POISONED] = "poisoned",
	[OUT_BUDGET_EXHAUSTED] = "budget_exhausted",
	[OUT_PAUSED] = "paused",
	[OUT_REJECTED] = "rejected",
	[OUT_APPROVAL_TIMEOUT] = "approval_timeout",
};
_Static_assert(sizeof(outcome_names) / sizeof(outcome_names[0]) == OUT_COUNT, "a name per outcome");

const char *job_outcome_name(enum job_outcome o)
{
	return (unsigned)o < OUT_COUNT ? outcome_names[o] : "unknown";
}

int job_outcome_parse(const char *s, enum job_outcome *out)
{
	*out = OUT_NONE;
	for (int o = OUT_NONE + 1; s && o < OUT_COUNT; o++)
		if (outcome_names[o] && strcmp(s, outcome_names[o]) == 0) {
			*out = (enum job_outcome)o;
			return 0;
		}
	return -1;
}

int job_state_final(enum job_state s)
{
	return s == JS_SUCCEEDED || s == JS_FAILED || s == JS_CANCELLED || s == JS_BUDGET_EXHAUSTED ||
	       s == JS_PAUSED;
}

static const char *const approval_names[] = {
	[AP_NONE] = NULL, [AP_PENDING] = "pending", [AP_APPROVED] = "approved",
};
_Static_assert(sizeof(approval_names) / sizeof(approval_names[0]) == AP_COUNT, "a name per approval");

const char *approval_name(enum approval a)
{
	return (unsigned)a < AP_COUNT ? approval_names[a] : NULL;
}

int approval_parse(const char *s, enum approval *out)
{
	*out = AP_NONE;
	if (!s)
		return 0;
	for (int i = AP_PENDING; i < AP_COUNT; i++)
		if (strcmp(s, approval_names[i]) == 0) {
			*out = (enum approval)i;
			return 0;
		}
	return -1;
}

int job_plans_only(const struct job *j)
{
	return j->dry_run || j->planning;
}

#define TO(s) (1u << (s))

/* allowed[from]: the states a job may move to (docs/playbook-guide.md,
 * "Attempts" and "Crashes and shutdown"). */
static const unsigned allowed[JS_COUNT] = {
	/* started, cancelled, or failed at replay (playbook gone) */
	[JS_QUEUED] = TO(JS_RUNNING) | TO(JS_CANCELLED) | TO(JS_FAILED),
	/* the attempt's end; queued again when an idempotent one was
	 * interrupted */
	[JS_RUNNING] = TO(JS_SUCCEEDED) | TO(JS_FAILED) | TO(JS_CANCELLED) | TO(JS_RETRY_WAIT) |
	               TO(JS_QUEUED) | TO(JS_AWAITING_APPROVAL),
	[JS_RETRY_WAIT] = TO(JS_RUNNING) | TO(JS_CANCELLED) | TO(JS_FAILED),
	/* approved (queued for the real run), rejected or cancelled, timed out */
	[JS_AWAITING_APPROVAL] = TO(JS_QUEUED) | TO(JS_CANCELLED) | TO(JS_FAILED),
};

static void count(struct job_counts *c, enum job_state st, int delta)
{
	if (job_state_final(st))
		return;
	c->n[st] += (size_t)delta; /* wraps back for -1 of a counted job */
	/* Both gauges move with the state, under the same lock, so one scrape
	 * never shows a job in neither or in both. */
	if (st == JS_QUEUED)
		metrics_set(M_QUEUE_DEPTH, NULL, NULL, (double)c->n[JS_QUEUED]);
	else if (st == JS_RUNNING)
		metrics_set(M_JOBS_IN_FLIGHT, NULL, NULL, (double)c->n[JS_RUNNING]);
}

void job_enter(struct job_counts *c, struct job *j, enum job_state st)
{
	j->state = st;
	count(c, st, 1);
}

int job_set_state(struct job_counts *c, struct job *j, enum job_state to)
{
	enum job_state from = j->state;

	if ((unsigned)from >= JS_COUNT || (unsigned)to >= JS_COUNT || !(allowed[from] & TO(to))) {
		log_kv(LOG_ERROR, j->id, "job state: transition refused", "from", job_state_name(from), "to",
		       job_state_name(to), NULL);
		return -1;
	}
	count(c, from, -1);
	count(c, to, 1);
	j->state = to;
	return 0;
}

void job_leave(struct job_counts *c, struct job *j)
{
	count(c, j->state, -1);
}

void job_row_of(const struct job *j, struct job_row *row)
{
	memset(row, 0, sizeof(*row));
	row->id = j->id;
	row->playbook = j->playbook_name;
	row->key = j->key;
	row->trigger = j->trigger;
	row->reason = j->reason;
	row->alert_json = j->alert_json;
	row->dry_run = j->dry_run;
	row->state = job_state_name(j->state);
	row->outcome = job_outcome_name(j->outcome);
	row->error = j->error;
	row->attempts = j->attempts;
	row->max_attempts = j->max_attempts;
	row->notifications = j->notifications;
	row->created_at = j->created_at;
	row->started_at = j->started_at;
	row->ended_at = j->ended_at;
	row->next_run_at = j->next_run_at;
	row->triggered_by = j->triggered_by;
	row->cancelled_by = j->cancelled_by;
	row->approval = approval_name(j->approval);
	row->approved_by = j->approved_by;
	row->plan_attempts = j->plan_attempts;
	/* An ended job keeps its lease (no longer renewed) until what its
	 * end causes is journaled (store_batch_release): if its replica dies
	 * in between, another claims it to escalate. The token fences. */
	row->owner = j->released_at_end ? NULL : j->owner;
	row->lease_until = row->owner ? j->lease_until : 0;
	row->lease_token = j->owner ? j->lease_token : 0;
}

void job_free(struct job *j)
{
	if (!j)
		return;
	free(j->playbook_name);
	free(j->key);
	free(j->trigger);
	free(j->reason);
	free(j->alert_json);
	cJSON_Delete(j->alert);
	free(j->cancel_reason);
	free(j->error);
	free(j->triggered_by);
	free(j->cancelled_by);
	free(j->approved_by);
	for (size_t i = 0; i < j->n_secrets; i++) {
		explicit_bzero(j->secrets[i], strlen(j->secrets[i]));
		free(j->secrets[i]);
	}
	free(j->secrets);
	if (j->set_unref)
		j->set_unref(j->set);
	free(j);
}

char *job_redact(const struct job *j, char *s)
{
	static const char mask[] = "[REDACTED]";

	for (size_t i = 0; s && i < j->n_secrets; i++) {
		const char *sec = j->secrets[i];
		size_t sl = strlen(sec);
		char *hit;
		while ((hit = strstr(s, sec))) {
			size_t pre = (size_t)(hit - s), rest = strlen(hit + sl);
			char *n = malloc(pre + sizeof(mask) + rest);
			if (!n) {
				memset(hit, '*', sl); /* cannot grow: mask in place */
				continue;
			}
			memcpy(n, s, pre);
			memcpy(n + pre, mask, sizeof(mask) - 1);
			memcpy(n + pre + sizeof(mask) - 1, hit + sl, rest + 1);
			free(s);
			s = n;
		}
	}
	return s;
}

void job_redact_json(const struct job *j, cJSON *v)
{
	if (!j->n_secrets || !v)
		return;
	if (cJSON_IsString(v) && v->valuestring) {
		v->valuestring = job_redact(j, v->valuestring);
		return;
	}
	for (cJSON *c = v->child; c; c = c->next)
		job_redact_json(j, c);
}

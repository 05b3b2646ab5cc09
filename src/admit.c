/* Admission bookkeeping: last end time per key, start times per playbook. */
#include "recoveryd/admit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "map.h"

struct ended {
	double when;
	char id[33];
};

/* Start times of one playbook, oldest first. */
struct starts {
	double *t;
	size_t n, cap;
};

struct admit {
	struct map *ended;  /* key -> struct ended */
	struct map *starts; /* playbook -> struct starts */
};

static void free_starts(void *p)
{
	struct starts *s = p;
	if (s) {
		free(s->t);
		free(s);
	}
}

struct admit *admit_new(void)
{
	struct admit *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->ended = map_new();
	a->starts = map_new();
	if (!a->ended || !a->starts) {
		admit_free(a);
		return NULL;
	}
	return a;
}

void admit_free(struct admit *a)
{
	if (!a)
		return;
	map_free(a->ended, free);
	map_free(a->starts, free_starts);
	free(a);
}

static struct starts *starts_of(struct admit *a, const char *playbook)
{
	struct starts *s = map_get(a->starts, playbook);
	int oom;

	if (s)
		return s;
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	map_put(a->starts, playbook, s, &oom);
	if (oom) {
		free(s);
		return NULL;
	}
	return s;
}

static size_t count_since(const struct starts *s, double since)
{
	size_t c = 0;
	for (size_t i = 0; s && i < s->n; i++)
		c += s->t[i] > since;
	return c;
}

void admit_started(struct admit *a, const char *playbook, double when)
{
	struct starts *s = starts_of(a, playbook);
	size_t i;

	if (!s)
		return;
	if (s->n == s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 8;
		double *nt = realloc(s->t, ncap * sizeof(double));
		if (!nt)
			return;
		s->t = nt;
		s->cap = ncap;
	}
	/* keep sorted: journal replay may not come in time order */
	for (i = s->n; i > 0 && s->t[i - 1] > when; i--)
		s->t[i] = s->t[i - 1];
	s->t[i] = when;
	s->n++;
}

void admit_reset_starts(struct admit *a, const char *playbook)
{
	struct starts *s = map_get(a->starts, playbook);

	if (s)
		s->n = 0;
}

void admit_unstart(struct admit *a, const char *playbook, double when)
{
	struct starts *s = map_get(a->starts, playbook);
	for (size_t i = 0; s && i < s->n; i++)
		if (s->t[i] == when) {
			memmove(&s->t[i], &s->t[i + 1], (s->n - i - 1) * sizeof(double));
			s->n--;
			return;
		}
}

void admit_ended(struct admit *a, const char *key, const char *job_id, double when)
{
	struct ended *e = map_get(a->ended, key);
	int oom;

	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e)
			return;
		map_put(a->ended, key, e, &oom);
		if (oom) {
			free(e);
			return;
		}
	}
	if (when >= e->when) {
		e->when = when;
		snprintf(e->id, sizeof(e->id), "%s", job_id ? job_id : "");
	}
}

enum admit_decision admit_firing(struct admit *a, const char *playbook, const char *key, int active,
                                 const struct admit_policy *p, double now, const char **last_id)
{
	struct ended *e;

	if (last_id)
		*last_id = NULL;
	if (active)
		return ADMIT_COALESCED;
	if (!p->manual) {
		e = map_get(a->ended, key);
		if (e && now - e->when < p->cooldown) {
			if (last_id)
				*last_id = e->id;
			return ADMIT_COOLDOWN;
		}
		if (p->budget_runs > 0 &&
		    count_since(map_get(a->starts, playbook), now - p->budget_per) >= (size_t)p->budget_runs)
			return ADMIT_BUDGET_EXHAUSTED;
	}
	admit_started(a, playbook, now);
	return ADMIT_QUEUED;
}

struct prune_arg {
	double cutoff;
};

static int prune_ended(const char *key, void *val, void *arg)
{
	struct ended *e = val;
	(void)key;
	if (e->when < ((struct prune_arg *)arg)->cutoff) {
		free(e);
		return 1;
	}
	return 0;
}

static int prune_starts(const char *key, void *val, void *arg)
{
	struct starts *s = val;
	double cutoff = ((struct prune_arg *)arg)->cutoff;
	size_t k = 0;
	(void)key;
	while (k < s->n && s->t[k] < cutoff)
		k++;
	memmove(s->t, s->t + k, (s->n - k) * sizeof(double));
	s->n -= k;
	return 0;
}

void admit_prune(struct admit *a, double now, double horizon)
{
	struct prune_arg pa = {now - horizon};
	map_each(a->ended, prune_ended, &pa);
	map_each(a->starts, prune_starts, &pa);
}

const char *admit_decision_name(enum admit_decision d)
{
	switch (d) {
	case ADMIT_QUEUED:
		return "queued";
	case ADMIT_COALESCED:
		return "coalesced";
	case ADMIT_COOLDOWN:
		return "cooldown";
	case ADMIT_BUDGET_EXHAUSTED:
		return "budget_exhausted";
	case ADMIT_CANCELLED:
		return "cancelled";
	}
	return "unknown";
}

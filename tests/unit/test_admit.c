/* Unit tests for src/admit.c: coalescing, cooldown, run budget and their
 * bookkeeping (DESIGN.md §1, §4). Each scenario is a table of steps run
 * against one struct admit, so the time line reads top to bottom. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "recoveryd/admit.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

enum op {
	FIRE,    /* admit_firing; expect want (and want_id when set) */
	END,     /* admit_ended(key, id, t) */
	STARTED, /* admit_started(playbook, t) */
	UNSTART, /* admit_unstart(playbook, t) */
	PRUNE,   /* admit_prune(t, horizon) */
};

struct step {
	enum op op;
	double t;
	const char *playbook;
	const char *key;
	int active;
	int manual;
	enum admit_decision want;
	const char *id;     /* END: the job id; FIRE: the expected last_id */
	double horizon;
};

struct scenario {
	const char *name;
	double cooldown;
	int budget_runs;
	double budget_per;
	const struct step *steps;
	size_t n;
};

#define PB "pb"
#define K1 "pb/aaaa"
#define K2 "pb/bbbb"

#define F(t_, key_, want_) { .op = FIRE, .t = (t_), .playbook = PB, .key = (key_), .want = (want_) }
#define FA(t_, key_, want_) \
	{ .op = FIRE, .t = (t_), .playbook = PB, .key = (key_), .active = 1, .want = (want_) }
#define FM(t_, key_, active_, want_) \
	{ .op = FIRE, .t = (t_), .playbook = PB, .key = (key_), .active = (active_), .manual = 1, \
	  .want = (want_) }
#define FC(t_, key_, id_) \
	{ .op = FIRE, .t = (t_), .playbook = PB, .key = (key_), .want = ADMIT_COOLDOWN, .id = (id_) }
#define E(t_, key_, id_) { .op = END, .t = (t_), .key = (key_), .id = (id_) }
#define S(t_) { .op = STARTED, .t = (t_), .playbook = PB }
#define U(t_) { .op = UNSTART, .t = (t_), .playbook = PB }
#define P(t_, h_) { .op = PRUNE, .t = (t_), .horizon = (h_) }

static void run_scenario(const struct scenario *sc)
{
	struct admit *a = admit_new();
	struct admit_policy pol = {
		.cooldown = sc->cooldown,
		.budget_runs = sc->budget_runs,
		.budget_per = sc->budget_per,
	};

	assert_non_null(a);
	for (size_t i = 0; i < sc->n; i++) {
		const struct step *s = &sc->steps[i];
		const char *last = "untouched";
		enum admit_decision got;

		switch (s->op) {
		case FIRE:
			pol.manual = s->manual;
			got = admit_firing(a, s->playbook, s->key, s->active, &pol, s->t, &last);
			if (got != s->want)
				fail_msg("%s step %zu (t=%g %s): got %s, want %s", sc->name, i, s->t, s->key,
				         admit_decision_name(got), admit_decision_name(s->want));
			if (s->want == ADMIT_COOLDOWN) {
				assert_non_null(last);
				if (s->id)
					assert_string_equal(last, s->id);
			} else if (last != NULL) {
				fail_msg("%s step %zu: last_id should be NULL for %s, is '%s'", sc->name, i,
				         admit_decision_name(got), last);
			}
			break;
		case END:
			admit_ended(a, s->key, s->id, s->t);
			break;
		case STARTED:
			admit_started(a, s->playbook, s->t);
			break;
		case UNSTART:
			admit_unstart(a, s->playbook, s->t);
			break;
		case PRUNE:
			admit_prune(a, s->t, s->horizon);
			break;
		}
	}
	admit_free(a);
}

/* Budget large enough that only cooldown and coalescing matter. */
static const struct step coalesce_cooldown[] = {
	F(100, K1, ADMIT_QUEUED),
	FA(101, K1, ADMIT_COALESCED),
	FA(500, K1, ADMIT_COALESCED),
	E(600, K1, "0123456789abcdef0123456789abcdef"),
	FC(600, K1, "0123456789abcdef0123456789abcdef"),
	FC(1499.5, K1, "0123456789abcdef0123456789abcdef"),
	F(1499.5, K2, ADMIT_QUEUED),       /* another key is not resting */
	F(1500, K1, ADMIT_QUEUED),         /* exactly the cooldown later */
};

static const struct step cooldown_latest_end[] = {
	E(100, K1, "job-old"),
	E(200, K1, "job-new"),
	FC(250, K1, "job-new"),
	E(150, K1, "job-stale"),           /* an older end does not win */
	FC(250, K1, "job-new"),
	F(1100, K1, ADMIT_QUEUED),
};

static const struct step cooldown_zero[] = {
	E(100, K1, "j1"),
	F(100, K1, ADMIT_QUEUED),
};

static const struct step manual[] = {
	E(100, K1, "j1"),
	FC(110, K1, "j1"),
	FM(110, K1, 0, ADMIT_QUEUED),      /* cooldown does not apply */
	FM(111, K1, 1, ADMIT_COALESCED),   /* but an active job still coalesces */
	FM(112, K2, 0, ADMIT_QUEUED),
	FM(113, K2, 0, ADMIT_QUEUED),      /* budget (2) does not apply */
	F(114, "pb/cccc", ADMIT_BUDGET_EXHAUSTED), /* manual starts did count */
};

static const struct step budget[] = {
	F(0, K1, ADMIT_QUEUED),
	F(1, K2, ADMIT_QUEUED),
	F(2, "pb/cccc", ADMIT_BUDGET_EXHAUSTED),
	F(59.9, "pb/cccc", ADMIT_BUDGET_EXHAUSTED),
	F(60, "pb/cccc", ADMIT_QUEUED),    /* the start at 0 slid out */
	F(60.5, "pb/dddd", ADMIT_BUDGET_EXHAUSTED),
	F(61, "pb/dddd", ADMIT_QUEUED),    /* the start at 1 slid out */
	F(61, "pb/eeee", ADMIT_BUDGET_EXHAUSTED),
};

static const struct step budget_per_playbook[] = {
	F(0, K1, ADMIT_QUEUED),
	F(1, K2, ADMIT_QUEUED),
	{ .op = FIRE, .t = 2, .playbook = "other", .key = "other/aaaa", .want = ADMIT_QUEUED },
	F(2, "pb/cccc", ADMIT_BUDGET_EXHAUSTED),
};

static const struct step unstart[] = {
	F(10, K1, ADMIT_QUEUED),
	F(20, K2, ADMIT_QUEUED),
	F(30, "pb/cccc", ADMIT_BUDGET_EXHAUSTED),
	U(20),                             /* the commit of the start at 20 failed */
	F(31, "pb/cccc", ADMIT_QUEUED),
	F(32, "pb/dddd", ADMIT_BUDGET_EXHAUSTED),
	U(999),                            /* no such start: nothing changes */
	F(33, "pb/dddd", ADMIT_BUDGET_EXHAUSTED),
};

static const struct step unstart_unknown_playbook[] = {
	U(5),
	F(10, K1, ADMIT_QUEUED),
};

static const struct step replay[] = {
	S(50),                             /* journal order, not time order */
	S(10),
	S(70),
	F(71, K1, ADMIT_BUDGET_EXHAUSTED), /* 50 and 70 are in (11, 71] */
	F(109.9, K1, ADMIT_BUDGET_EXHAUSTED),
	F(110, K1, ADMIT_QUEUED),          /* only 70 left in (50, 110] */
	F(111, K2, ADMIT_BUDGET_EXHAUSTED),
};

/* Replayed starts are kept in time order, so pruning drops the oldest. */
static const struct step replay_prune[] = {
	S(50),
	S(10),
	S(70),
	F(100, K1, ADMIT_BUDGET_EXHAUSTED),
	P(100, 60),                        /* forget starts before 40: only 10 */
	F(100, K1, ADMIT_QUEUED),
	F(101, K2, ADMIT_BUDGET_EXHAUSTED), /* 50, 70, 100 */
};

static const struct step prune_ended[] = {
	E(0, K1, "j1"),
	E(450, K2, "j2"),
	FC(500, K1, "j1"),
	P(500, 100),                       /* forget anything before 400 */
	F(500, K1, ADMIT_QUEUED),
	FC(500, K2, "j2"),
};

static const struct step prune_starts[] = {
	S(0),
	S(1),
	F(2, K1, ADMIT_BUDGET_EXHAUSTED),
	P(2, 1.5),                         /* forget starts before 0.5 */
	F(2, K1, ADMIT_QUEUED),
	F(3, K2, ADMIT_BUDGET_EXHAUSTED),  /* 1 and 2 are kept */
};

static const struct step unlimited[] = {
	F(0, "pb/1", ADMIT_QUEUED),
	F(0, "pb/2", ADMIT_QUEUED),
	F(0, "pb/3", ADMIT_QUEUED),
	F(0, "pb/4", ADMIT_QUEUED),
	F(0, "pb/5", ADMIT_QUEUED),
	F(1, "pb/6", ADMIT_QUEUED),
};

#define SC(name_, cd_, runs_, per_) { #name_, cd_, runs_, per_, name_, ARRAY_SIZE(name_) }

static const struct scenario scenarios[] = {
	SC(coalesce_cooldown, 900, 100, 3600),
	SC(cooldown_latest_end, 900, 0, 3600),
	SC(cooldown_zero, 0, 0, 3600),
	SC(manual, 900, 2, 60),
	SC(budget, 0, 2, 60),
	SC(budget_per_playbook, 0, 2, 60),
	SC(unstart, 0, 2, 60),
	SC(unstart_unknown_playbook, 0, 1, 60),
	SC(replay, 0, 2, 60),
	SC(replay_prune, 0, 3, 1000),
	SC(prune_ended, 900, 0, 60),
	SC(prune_starts, 0, 2, 60),
	SC(unlimited, 0, 0, 60),
};

static void test_scenarios(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(scenarios); i++)
		run_scenario(&scenarios[i]);
}

/* The cooldown's last_id is the id of the job that put the key there. */
static void test_cooldown_last_id(void **state)
{
	struct admit *a = admit_new();
	struct admit_policy pol = { .cooldown = 60, .budget_runs = 0, .budget_per = 60 };
	const char *last = NULL;

	(void)state;
	assert_non_null(a);
	assert_int_equal(admit_firing(a, PB, K1, 0, &pol, 10, &last), ADMIT_QUEUED);
	assert_null(last);
	admit_ended(a, K1, "fedcba9876543210fedcba9876543210", 20);
	assert_int_equal(admit_firing(a, PB, K1, 0, &pol, 30, &last), ADMIT_COOLDOWN);
	assert_non_null(last);
	assert_string_equal(last, "fedcba9876543210fedcba9876543210");
	/* last_id may be NULL when the caller does not want it */
	assert_int_equal(admit_firing(a, PB, K1, 0, &pol, 31, NULL), ADMIT_COOLDOWN);
	/* and is reset on a decision that is not a cooldown */
	last = "stale";
	assert_int_equal(admit_firing(a, PB, K1, 1, &pol, 32, &last), ADMIT_COALESCED);
	assert_null(last);
	last = "stale";
	assert_int_equal(admit_firing(a, PB, K1, 0, &pol, 80, &last), ADMIT_QUEUED);
	assert_null(last);
	admit_free(a);
}

/* Many keys and playbooks: the maps grow and keep every entry. */
static void test_many_keys(void **state)
{
	struct admit *a = admit_new();
	struct admit_policy pol = { .cooldown = 100, .budget_runs = 0, .budget_per = 60 };
	char key[64], id[33];
	const char *last;

	(void)state;
	assert_non_null(a);
	for (int i = 0; i < 2000; i++) {
		snprintf(key, sizeof(key), "pb%d/%08x", i % 7, (unsigned)i * 2654435761u);
		snprintf(id, sizeof(id), "%032d", i);
		admit_ended(a, key, id, 1000 + i % 50);
	}
	for (int i = 0; i < 2000; i++) {
		snprintf(key, sizeof(key), "pb%d/%08x", i % 7, (unsigned)i * 2654435761u);
		snprintf(id, sizeof(id), "%032d", i);
		last = NULL;
		assert_int_equal(admit_firing(a, "pb", key, 0, &pol, 1060, &last), ADMIT_COOLDOWN);
		assert_non_null(last);
		assert_string_equal(last, id);
	}
	/* cutoff 1025: ends at 1000..1024 go, 1025..1049 stay */
	admit_prune(a, 1060, 35);
	for (int i = 0; i < 2000; i++) {
		snprintf(key, sizeof(key), "pb%d/%08x", i % 7, (unsigned)i * 2654435761u);
		assert_int_equal(admit_firing(a, "pb", key, 0, &pol, 1060, NULL),
		                 i % 50 < 25 ? ADMIT_QUEUED : ADMIT_COOLDOWN);
	}
	admit_free(a);
}

static void test_decision_names(void **state)
{
	static const struct {
		enum admit_decision d;
		const char *name;
	} names[] = {
		{ ADMIT_QUEUED, "queued" },
		{ ADMIT_COALESCED, "coalesced" },
		{ ADMIT_COOLDOWN, "cooldown" },
		{ ADMIT_BUDGET_EXHAUSTED, "budget_exhausted" },
		{ ADMIT_CANCELLED, "cancelled" },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		assert_string_equal(admit_decision_name(names[i].d), names[i].name);
	assert_string_equal(admit_decision_name((enum admit_decision)42), "unknown");
}

static void test_free_null(void **state)
{
	(void)state;
	admit_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scenarios),
		cmocka_unit_test(test_cooldown_last_id),
		cmocka_unit_test(test_many_keys),
		cmocka_unit_test(test_decision_names),
		cmocka_unit_test(test_free_null),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

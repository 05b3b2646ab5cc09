/* Unit tests for src/playbook.c: backoff with jitter, loading a directory
 * of playbooks (values, defaults, order), the all-or-nothing validation with
 * errors that name the file and the field, and the JSON description. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "recoveryd/common.h"
#include "recoveryd/matcher.h"
#include "recoveryd/playbook.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MEM_MAX (16u * 1024 * 1024)
#define RND_TOP 0.999999

/* cmocka 1.1 has no assert_double_equal. */
#define assert_near(got, want, eps) assert_near_at((got), (want), (eps), __FILE__, __LINE__)

static void assert_near_at(double got, double want, double eps, const char *file, int line)
{
	if (!(got >= want - eps && got <= want + eps)) {
		print_error("%.17g != %.17g (+/- %g)\n", got, want, eps);
		_fail(file, line);
	}
}

/* ---- a temporary playbook directory --------------------------------------- */

struct pdir {
	char path[256];
};

static void pdir_new(struct pdir *d)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(d->path, sizeof(d->path), "%s/rd-playbooks-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(d->path));
}

static void pdir_write(const struct pdir *d, const char *name, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", d->path, name);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void pdir_free(struct pdir *d)
{
	assert_int_equal(nftw(d->path, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

static enum rd_status load(const struct pdir *d, struct playbook_set **out, char *err, size_t errlen)
{
	struct playbook_load_opts o = { .dir = d->path, .lua_path = NULL, .mem_max = MEM_MAX };

	err[0] = '\0';
	return playbook_set_load(&o, out, err, errlen);
}

/* ---- backoff -------------------------------------------------------------- */

static void test_backoff_growth(void **state)
{
	struct playbook pb = { .backoff_initial = 10, .backoff_factor = 2, .backoff_max = 120 };
	static const double nominal[] = { 10, 20, 40, 80, 120, 120, 120, 120 };

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(nominal); i++) {
		int n = (int)i + 1;
		double d = nominal[i];

		assert_near(playbook_backoff(&pb, n, 0), d / 2, 1e-9);
		assert_near(playbook_backoff(&pb, n, 0.5), d * 0.75, 1e-9);
		double hi = playbook_backoff(&pb, n, RND_TOP);
		assert_true(hi <= d);
		assert_true(hi > d * 0.9999);
	}
	/* far past the cap: still the cap, never inf or nan */
	assert_near(playbook_backoff(&pb, 1000, 0), 60, 1e-9);
	assert_near(playbook_backoff(&pb, 100000, RND_TOP), 120 * (0.5 + 0.5 * RND_TOP), 1e-9);
}

static void test_backoff_shapes(void **state)
{
	static const struct {
		double initial, factor, max;
		int n;
		double want; /* nominal delay before jitter */
	} cases[] = {
		{ 10, 2, 120, 1, 10 },     /* n = 1 is the initial delay */
		{ 10, 3, 1000, 3, 90 },
		{ 5, 1, 120, 7, 5 },       /* factor 1: constant */
		{ 300, 2, 120, 1, 120 },   /* initial above max: capped */
		{ 1.5, 2, 100, 4, 12 },
		{ 0, 2, 120, 5, 0 },       /* no delay at all */
		{ 10, 2, 0, 3, 0 },        /* max 0: no delay */
		{ 10, 10, 1e300, 400, 1e300 },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct playbook pb = {
			.backoff_initial = cases[i].initial,
			.backoff_factor = cases[i].factor,
			.backoff_max = cases[i].max,
		};
		double d = cases[i].want, lo, hi;

		lo = playbook_backoff(&pb, cases[i].n, 0);
		hi = playbook_backoff(&pb, cases[i].n, RND_TOP);
		if (lo != d / 2 || hi > d || hi < d * (0.5 + 0.5 * RND_TOP) * (1 - 1e-12))
			fail_msg("case %zu: n=%d nominal %g: got [%g, %g]", i, cases[i].n, d, lo, hi);
	}
}

/* Jitter stays in [d/2, d] and actually spreads. */
static void test_backoff_jitter_bounds(void **state)
{
	struct playbook pb = { .backoff_initial = 10, .backoff_factor = 2, .backoff_max = 120 };
	double min = 1e9, max = 0;

	(void)state;
	for (int k = 0; k < 1000; k++) {
		double rnd = k / 1000.0;
		double v = playbook_backoff(&pb, 3, rnd);

		assert_true(v >= 20 && v < 40);
		min = v < min ? v : min;
		max = v > max ? v : max;
		/* monotonic in rnd */
		if (k)
			assert_true(v > playbook_backoff(&pb, 3, (k - 1) / 1000.0));
	}
	assert_near(min, 20, 1e-9);
	assert_true(max > 39.9);
}

/* ---- loading -------------------------------------------------------------- */

static const char full_pb[] =
	"-- every field set\n"
	"local r = require 'recovery'\n"
	"assert(type(r.now()) == 'number' and recovery == r)\n"
	"return {\n"
	"  name        = 'settings-sync-recovery',\n"
	"  description = 'Restart the settings sync job and check that sync succeeds again',\n"
	"  match       = { 'alertname=\"SettingsSyncJobFailure\"', 'severity=~\"critical|page\"' },\n"
	"  retries     = 3,\n"
	"  backoff     = { initial = 5, factor = 3, max = 60 },\n"
	"  timeout     = 120,\n"
	"  cooldown    = 600,\n"
	"  budget      = { runs = 4, per = 1800 },\n"
	"  escalate    = { 'slack', 'pagerduty' },\n"
	"  idempotent  = true,\n"
	"  run    = function(ctx) error('not at load time') end,\n"
	"  verify = function(ctx) return true end,\n"
	"}\n";

static const char minimal_pb[] =
	"return { name = 'minimal', run = function() end, verify = function() return true end }\n";

static void test_load_full_and_defaults(void **state)
{
	struct pdir d;
	struct playbook_set *set = NULL;
	struct playbook *pb;
	char err[512];
	struct label lv[] = {
		{ "alertname", "SettingsSyncJobFailure" },
		{ "severity", "page" },
	};
	struct labels ls = { 2, lv };

	(void)state;
	pdir_new(&d);
	/* written out of order: the set is sorted by file name */
	pdir_write(&d, "20-minimal.lua", minimal_pb);
	pdir_write(&d, "10-full.lua", full_pb);
	if (load(&d, &set, err, sizeof(err)) != RD_OK)
		fail_msg("load failed: %s", err);
	assert_non_null(set);
	assert_int_equal(set->n, 2);
	assert_int_equal(set->refs, 1);

	pb = set->v[0];
	assert_string_equal(pb->file, "10-full.lua");
	assert_string_equal(pb->name, "settings-sync-recovery");
	assert_string_equal(pb->description,
	                    "Restart the settings sync job and check that sync succeeds again");
	assert_int_equal(pb->source_len, strlen(full_pb));
	assert_memory_equal(pb->source, full_pb, pb->source_len);
	assert_int_equal(matcher_set_count(pb->match), 2);
	assert_string_equal(matcher_set_text(pb->match, 0), "alertname=\"SettingsSyncJobFailure\"");
	assert_string_equal(matcher_set_text(pb->match, 1), "severity=~\"critical|page\"");
	assert_true(matcher_set_matches(pb->match, &ls));
	lv[1].value = "warning";
	assert_false(matcher_set_matches(pb->match, &ls));
	assert_int_equal(pb->retries, 3);
	assert_near(pb->backoff_initial, 5, 0);
	assert_near(pb->backoff_factor, 3, 0);
	assert_near(pb->backoff_max, 60, 0);
	assert_near(pb->timeout, 120, 0);
	assert_near(pb->cooldown, 600, 0);
	assert_int_equal(pb->budget_runs, 4);
	assert_near(pb->budget_per, 1800, 0);
	assert_int_equal(pb->n_escalate, 2);
	assert_string_equal(pb->escalate[0], "slack");
	assert_string_equal(pb->escalate[1], "pagerduty");
	assert_int_equal(pb->idempotent, 1);
	/* the loaded values drive the backoff */
	assert_near(playbook_backoff(pb, 2, 0), 7.5, 1e-9);
	assert_near(playbook_backoff(pb, 3, 0), 22.5, 1e-9);
	assert_near(playbook_backoff(pb, 4, 0), 30, 1e-9);

	pb = set->v[1];
	assert_string_equal(pb->file, "20-minimal.lua");
	assert_string_equal(pb->name, "minimal");
	assert_string_equal(pb->description, "");
	assert_int_equal(matcher_set_count(pb->match), 0);
	assert_int_equal(pb->retries, 2);
	assert_near(pb->backoff_initial, 10, 0);
	assert_near(pb->backoff_factor, 2, 0);
	assert_near(pb->backoff_max, 120, 0);
	assert_near(pb->timeout, 300, 0);
	assert_near(pb->cooldown, 900, 0);
	assert_int_equal(pb->budget_runs, 3);
	assert_near(pb->budget_per, 3600, 0);
	assert_int_equal(pb->n_escalate, 0);
	assert_int_equal(pb->idempotent, 0);

	assert_ptr_equal(playbook_set_find(set, "minimal"), set->v[1]);
	assert_ptr_equal(playbook_set_find(set, "settings-sync-recovery"), set->v[0]);
	assert_null(playbook_set_find(set, "Minimal"));
	assert_null(playbook_set_find(set, "20-minimal.lua"));
	assert_null(playbook_set_find(NULL, "minimal"));

	/* shared: the last unref frees it (ASan checks) */
	playbook_set_ref(set);
	assert_int_equal(set->refs, 2);
	playbook_set_unref(set);
	assert_int_equal(set->refs, 1);
	assert_non_null(playbook_set_find(set, "minimal"));
	playbook_set_unref(set);
	playbook_set_unref(NULL);
	pdir_free(&d);
}

/* Partial tables: omitted sub-fields take their defaults. */
static void test_load_partial_tables(void **state)
{
	struct pdir d;
	struct playbook_set *set = NULL;
	char err[512];
	struct playbook *pb;

	(void)state;
	pdir_new(&d);
	pdir_write(&d, "p.lua", "return { name = 'p', match = 'job=\"x\"', backoff = { factor = 4 },"
	                        " budget = { runs = 0 }, escalate = {}, retries = 0, cooldown = 0,"
	                        " idempotent = true, run = print, verify = function() end,"
	                        " _helper = function() end }\n");
	if (load(&d, &set, err, sizeof(err)) != RD_OK)
		fail_msg("load failed: %s", err);
	assert_int_equal(set->n, 1);
	pb = set->v[0];
	assert_int_equal(matcher_set_count(pb->match), 1);
	assert_string_equal(matcher_set_text(pb->match, 0), "job=\"x\"");
	assert_near(pb->backoff_initial, 10, 0);
	assert_near(pb->backoff_factor, 4, 0);
	assert_near(pb->backoff_max, 120, 0);
	assert_int_equal(pb->budget_runs, 0);
	assert_near(pb->budget_per, 3600, 0);
	assert_int_equal(pb->n_escalate, 0);
	assert_int_equal(pb->retries, 0);
	assert_near(pb->cooldown, 0, 0);
	assert_int_equal(pb->idempotent, 1);
	playbook_set_unref(set);
	pdir_free(&d);
}

struct bad_case {
	const char *what;
	const char *file;     /* the bad file, written as is */
	const char *text;
	const char *want[4];  /* substrings of the error, besides "playbook <file>:" */
};

#define GOOD_FNS " run = function() end, verify = function() return true end"

static const struct bad_case bad_cases[] = {
	{ "syntax error", "syntax.lua", "return { name = 'x',\n  run = function() end\n",
	  { "syntax.lua:", "expected" } },
	{ "runtime error", "boom.lua", "error('kaboom')\n", { "boom.lua:1:", "kaboom" } },
	{ "not a table", "num.lua", "return 42\n", { "must return a table", "number" } },
	{ "returns nothing", "nil.lua", "local x = 1\n", { "must return a table", "nil" } },
	{ "missing name", "noname.lua", "return {" GOOD_FNS " }\n", { "name:", "expected a string", "nil" } },
	{ "name not a string", "numname.lua", "return { name = 7," GOOD_FNS " }\n",
	  { "name:", "number" } },
	{ "bad name characters", "badname.lua", "return { name = 'has space/slash'," GOOD_FNS " }\n",
	  { "name:", "'has space/slash'", "[A-Za-z0-9._-]" } },
	{ "empty name", "emptyname.lua", "return { name = ''," GOOD_FNS " }\n", { "name:", "''" } },
	{ "name too long", "longname.lua",
	  "return { name = string.rep('n', 65)," GOOD_FNS " }\n", { "name:", "1-64" } },
	{ "description not a string", "desc.lua", "return { name = 'd', description = {}," GOOD_FNS " }\n",
	  { "description:", "table" } },
	{ "bad regex matcher", "regex.lua",
	  "return { name = 'r', match = { 'job=\"a\"', 'alertname=~\"(\"' }," GOOD_FNS " }\n",
	  { "match[2]", "alertname=~\"(\"", "regex" } },
	{ "matcher not a string", "matchnum.lua", "return { name = 'm', match = { 5 }," GOOD_FNS " }\n",
	  { "match[1]", "matcher string" } },
	{ "match of a wrong type", "matchtype.lua", "return { name = 'm', match = 5," GOOD_FNS " }\n",
	  { "match:" } },
	{ "retries not a number", "retries.lua", "return { name = 'r', retries = 'x'," GOOD_FNS " }\n",
	  { "retries:", "expected a number", "string" } },
	{ "retries too many", "retries2.lua", "return { name = 'r', retries = 101," GOOD_FNS " }\n",
	  { "retries:", "100" } },
	{ "negative retries", "retries3.lua", "return { name = 'r', retries = -1," GOOD_FNS " }\n",
	  { "retries:", ">= 0" } },
	{ "negative timeout", "timeout.lua", "return { name = 't', timeout = -5," GOOD_FNS " }\n",
	  { "timeout:", ">= 0.001" } },
	{ "zero timeout", "timeout0.lua", "return { name = 't', timeout = 0," GOOD_FNS " }\n",
	  { "timeout:" } },
	{ "infinite timeout", "timeoutinf.lua", "return { name = 't', timeout = math.huge," GOOD_FNS " }\n",
	  { "timeout:" } },
	{ "negative cooldown", "cooldown.lua", "return { name = 'c', cooldown = -1," GOOD_FNS " }\n",
	  { "cooldown:" } },
	{ "backoff factor below 1", "factor.lua",
	  "return { name = 'b', backoff = { factor = 0.5 }," GOOD_FNS " }\n", { "backoff.factor:", ">= 1" } },
	{ "backoff initial wrong type", "initial.lua",
	  "return { name = 'b', backoff = { initial = 'soon' }," GOOD_FNS " }\n", { "backoff.initial:" } },
	{ "backoff not a table", "backoff.lua", "return { name = 'b', backoff = 10," GOOD_FNS " }\n",
	  { "backoff:" } },
	{ "budget per zero", "per.lua", "return { name = 'b', budget = { per = 0 }," GOOD_FNS " }\n",
	  { "budget.per:" } },
	{ "budget runs negative", "runs.lua", "return { name = 'b', budget = { runs = -1 }," GOOD_FNS " }\n",
	  { "budget.runs:" } },
	{ "budget not a table", "budget.lua", "return { name = 'b', budget = 3," GOOD_FNS " }\n",
	  { "budget:" } },
	{ "unknown sink", "sink.lua",
	  "return { name = 's', escalate = { 'slack', 'email' }," GOOD_FNS " }\n",
	  { "escalate[2]", "slack", "pagerduty" } },
	{ "sink not a string", "sinknum.lua", "return { name = 's', escalate = { {} }," GOOD_FNS " }\n",
	  { "escalate[1]" } },
	{ "escalate not a list", "esc.lua", "return { name = 's', escalate = 'slack'," GOOD_FNS " }\n",
	  { "escalate:" } },
	{ "grafana as an escalation sink", "escgraf.lua",
	  "return { name = 's', escalate = { 'grafana' }," GOOD_FNS " }\n",
	  { "escalate[1]", "not notifications", "notify = { grafana = false }" } },
	{ "notify misspelt key", "ntypo.lua",
	  "return { name = 'n', notify = { on_succes = { 'slack' } }," GOOD_FNS " }\n",
	  { "notify: unknown key 'on_succes'", "on_start, on_success, grafana" } },
	{ "notify.on_start to pagerduty", "nstart.lua",
	  "return { name = 'n', notify = { on_start = { 'pagerduty' } }," GOOD_FNS " }\n",
	  { "notify.on_start:", "only \"slack\"" } },
	{ "notify.on_start unknown sink", "nstart2.lua",
	  "return { name = 'n', notify = { on_start = { 'email' } }," GOOD_FNS " }\n",
	  { "notify.on_start[1]" } },
	{ "notify.on_start not a list", "nstart3.lua",
	  "return { name = 'n', notify = { on_start = 'slack' }," GOOD_FNS " }\n",
	  { "notify.on_start:", "list" } },
	{ "notify.grafana not a boolean", "ngraf.lua",
	  "return { name = 'n', notify = { grafana = 'off' }," GOOD_FNS " }\n",
	  { "notify.grafana:", "boolean", "string" } },
	{ "idempotent not a boolean", "idem.lua", "return { name = 'i', idempotent = 1," GOOD_FNS " }\n",
	  { "idempotent:", "boolean", "number" } },
	{ "misspelt field", "typo.lua", "return { name = 't', retires = 5," GOOD_FNS " }\n",
	  { "unknown field 'retires'" } },
	{ "non-string key", "key.lua", "return { name = 'k', [1] = 'x'," GOOD_FNS " }\n",
	  { "unknown field" } },
	{ "too many matchers", "many.lua",
	  "local m = {} for i = 1, 1000 do m[i] = 'a=\"b\"' end\n"
	  "return { name = 'm', match = m," GOOD_FNS " }\n",
	  { "match:", "at most" } },
	{ "run not a function", "run.lua",
	  "return { name = 'r', run = 'restart', verify = function() end }\n",
	  { "run:", "expected a function", "string" } },
	{ "run missing", "norun.lua", "return { name = 'r', verify = function() end }\n",
	  { "run:", "nil" } },
	{ "verify missing", "noverify.lua", "return { name = 'v', run = function() end }\n",
	  { "verify:", "expected a function", "nil" } },
	{ "yield at load time", "sleep.lua", "recovery.sleep(1)\nreturn { name = 's'," GOOD_FNS " }\n",
	  { "sleep.lua:1:", "sleep" } },
	{ "io at load time", "io.lua", "io.open('x')\nreturn { name = 'i'," GOOD_FNS " }\n",
	  { "io.lua:1:", "nil" } },
	{ "approval not a table", "appr.lua", "return { name = 'a', approval = true," GOOD_FNS " }\n",
	  { "approval:", "expected a table" } },
	{ "approval.required not a boolean", "apreq.lua",
	  "return { name = 'a', approval = { required = 'yes' }," GOOD_FNS " }\n",
	  { "approval.required:", "expected a boolean", "string" } },
	{ "approval.required a number", "apreq1.lua",
	  "return { name = 'a', approval = { required = 1 }," GOOD_FNS " }\n",
	  { "approval.required:", "boolean", "number" } },
	{ "approval.timeout not a number", "aptime.lua",
	  "return { name = 'a', approval = { required = true, timeout = '15m' }," GOOD_FNS " }\n",
	  { "approval.timeout:", "expected a number", "string" } },
	{ "approval.timeout zero", "aptime0.lua",
	  "return { name = 'a', approval = { timeout = 0 }," GOOD_FNS " }\n",
	  { "approval.timeout:", ">= 1" } },
	{ "approval.timeout below a second", "aptimeh.lua",
	  "return { name = 'a', approval = { timeout = 0.5 }," GOOD_FNS " }\n",
	  { "approval.timeout:", ">= 1" } },
	{ "approval.timeout negative", "aptimen.lua",
	  "return { name = 'a', approval = { timeout = -60 }," GOOD_FNS " }\n",
	  { "approval.timeout:" } },
	{ "approval.timeout infinite", "aptimei.lua",
	  "return { name = 'a', approval = { timeout = math.huge }," GOOD_FNS " }\n",
	  { "approval.timeout:" } },
	{ "approval misspelt key", "aptypo.lua",
	  "return { name = 'a', approval = { requried = true }," GOOD_FNS " }\n",
	  { "approval.requried:", "unknown", "required, timeout" } },
	{ "approval list entry", "aplist.lua",
	  "return { name = 'a', approval = { true }," GOOD_FNS " }\n",
	  { "approval.", "unknown" } },
	{ "memory bomb", "mem.lua",
	  "local t = {} while true do t[#t + 1] = string.rep('x', 1e5) end\n",
	  { "not enough memory" } },
};

/* Each bad file, next to a good one, fails the whole set; out is untouched
 * and the error starts with the file's name. */
static void test_load_errors(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(bad_cases); i++) {
		const struct bad_case *c = &bad_cases[i];
		struct playbook_set *sentinel = (struct playbook_set *)&sentinel, *set = sentinel;
		char err[512], prefix[128];
		struct pdir d;
		enum rd_status rc;

		pdir_new(&d);
		pdir_write(&d, "00-good.lua", minimal_pb);
		pdir_write(&d, c->file, c->text);
		rc = load(&d, &set, err, sizeof(err));
		if (rc == RD_OK)
			fail_msg("%s: loaded, want an error", c->what);
		assert_ptr_equal(set, sentinel);
		snprintf(prefix, sizeof(prefix), "playbook %s: ", c->file);
		if (strncmp(err, prefix, strlen(prefix)) != 0)
			fail_msg("%s: error '%s' does not start with '%s'", c->what, err, prefix);
		for (size_t k = 0; k < ARRAY_SIZE(c->want) && c->want[k]; k++)
			if (!strstr(err, c->want[k]))
				fail_msg("%s: error '%s' does not contain '%s'", c->what, err, c->want[k]);
		pdir_free(&d);
	}
}

static void test_load_duplicate_names(void **state)
{
	struct playbook_set *set = NULL;
	char err[512];
	struct pdir d;

	(void)state;
	pdir_new(&d);
	pdir_write(&d, "a-first.lua", "return { name = 'same'," GOOD_FNS " }\n");
	pdir_write(&d, "b-second.lua", "return { name = 'same'," GOOD_FNS " }\n");
	assert_int_equal(load(&d, &set, err, sizeof(err)), RD_ERR);
	assert_null(set);
	assert_non_null(strstr(err, "playbook b-second.lua:"));
	assert_non_null(strstr(err, "'same'"));
	assert_non_null(strstr(err, "a-first.lua"));
	pdir_free(&d);
}

/* A runaway top level is stopped by the load deadline, not waited for. */
static void test_load_infinite_loop(void **state)
{
	struct playbook_set *set = NULL;
	char err[512];
	struct pdir d;
	double t0, dt;

	(void)state;
	pdir_new(&d);
	pdir_write(&d, "spin.lua", "while true do end\nreturn {}\n");
	t0 = rd_mono();
	assert_int_equal(load(&d, &set, err, sizeof(err)), RD_ERR);
	dt = rd_mono() - t0;
	assert_null(set);
	assert_non_null(strstr(err, "playbook spin.lua:"));
	assert_non_null(strstr(err, "deadline"));
	if (dt > 8)
		fail_msg("took %.1f s to give up", dt);
	/* and inside pcall */
	pdir_write(&d, "spin.lua", "while true do pcall(function() while true do end end) end\n");
	t0 = rd_mono();
	assert_int_equal(load(&d, &set, err, sizeof(err)), RD_ERR);
	dt = rd_mono() - t0;
	assert_non_null(strstr(err, "playbook spin.lua:"));
	assert_non_null(strstr(err, "deadline"));
	assert_true(dt < 8);
	pdir_free(&d);
}

/* The returned table is user code too: metamethods of its fields run while
 * it is validated. A bad one must be a load error, never a crash or a hang
 * of the loading process, so each case runs in a child with a watchdog.
 * want == NULL: the file must load. */
static void expect_in_child(const char *text, const char *want)
{
	struct pdir d;
	int status;
	pid_t pid;

	pdir_new(&d);
	pdir_write(&d, "hostile.lua", text);
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct playbook_set *set = NULL;
		enum rd_status rc;
		char err[512];

		alarm(15);
		rc = load(&d, &set, err, sizeof(err));
		if (!want) {
			if (rc != RD_OK)
				_exit(12);
			/* a lying __len is not believed */
			_exit(set->n == 1 && set->v[0]->n_escalate == 1 ? 0 : 13);
		}
		if (rc != RD_ERR)
			_exit(10);
		if (!strstr(err, "playbook hostile.lua:") || !strstr(err, want))
			_exit(11);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	pdir_free(&d);
	if (WIFSIGNALED(status))
		fail_msg("the loader died of signal %d\n--\n%s", WTERMSIG(status), text);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("child exit %d (10: loaded, 11: error text, 12: failed, 13: values,"
		         " else a sanitizer)\n--\n%s",
		         WIFEXITED(status) ? WEXITSTATUS(status) : -1, text);
}

/* A returned table with a metatable is refused outright. */
static void test_load_hostile_metatable(void **state)
{
	(void)state;
	expect_in_child("return setmetatable({}, { __index = function(t, k)"
	                " error('no field ' .. k) end })\n",
	                "plain table");
	expect_in_child("return setmetatable({ name = 'x'," GOOD_FNS " }, {})\n", "plain table");
}

/* __index of a field's table raising while it is read */
static void test_load_hostile_index_error(void **state)
{
	(void)state;
	expect_in_child("return { name = 'x'," GOOD_FNS ", backoff = setmetatable({},"
	                " { __index = function(t, k) error('no field ' .. k) end }) }\n",
	                "no field initial");
}

/* __index looping while a field's table is read: the load deadline applies */
static void test_load_hostile_index_loop(void **state)
{
	double t0 = rd_mono();

	(void)state;
	expect_in_child("return { name = 'x'," GOOD_FNS ", budget = setmetatable({},"
	                " { __index = function() while true do end end }) }\n",
	                "deadline");
	assert_true(rd_mono() - t0 < 10);
}

/* a list whose __len lies */
static void test_load_hostile_len(void **state)
{
	(void)state;
	expect_in_child("return { name = 'x'," GOOD_FNS ", escalate = setmetatable({ 'slack' },"
	                " { __len = function() return 2^40 end }) }\n",
	                NULL);
	expect_in_child("return { name = 'x'," GOOD_FNS ", escalate = { 'slack' },"
	                " match = setmetatable({}, { __len = function() error('len') end }) }\n",
	                NULL);
}

static void test_load_empty_and_ignored(void **state)
{
	struct playbook_set *set = NULL;
	char err[512];
	struct pdir d;

	(void)state;
	pdir_new(&d);
	assert_int_equal(load(&d, &set, err, sizeof(err)), RD_OK);
	assert_non_null(set);
	assert_int_equal(set->n, 0);
	assert_null(playbook_set_find(set, "x"));
	playbook_set_unref(set);

	/* none of these is a playbook, even though they would not load */
	pdir_write(&d, "README.md", "not lua at all {{{");
	pdir_write(&d, "old.lua.bak", "return 1");
	pdir_write(&d, "notes.txt", "return 1");
	pdir_write(&d, ".hidden.lua", "return 1");
	pdir_write(&d, ".lua", "return 1");
	pdir_write(&d, "x.LUA", "return 1");
	pdir_write(&d, "lua", "return 1");
	set = NULL;
	if (load(&d, &set, err, sizeof(err)) != RD_OK)
		fail_msg("load failed: %s", err);
	assert_int_equal(set->n, 0);
	playbook_set_unref(set);

	pdir_write(&d, "only.lua", minimal_pb);
	set = NULL;
	if (load(&d, &set, err, sizeof(err)) != RD_OK)
		fail_msg("load failed: %s", err);
	assert_int_equal(set->n, 1);
	assert_string_equal(set->v[0]->file, "only.lua");
	playbook_set_unref(set);
	pdir_free(&d);
}

static void test_load_missing_dir(void **state)
{
	struct playbook_set *set = NULL;
	char err[512];
	struct pdir d;

	(void)state;
	pdir_new(&d);
	pdir_free(&d); /* the name is now free */
	assert_int_equal(load(&d, &set, err, sizeof(err)), RD_ERR);
	assert_null(set);
	assert_non_null(strstr(err, d.path));
	assert_non_null(strstr(err, "No such file"));
}

/* ---- JSON ----------------------------------------------------------------- */

static double num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	assert_true(cJSON_IsNumber(v));
	return v->valuedouble;
}

static const char *str(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	assert_true(cJSON_IsString(v));
	return v->valuestring;
}

/* approval = { required, timeout }: attempts are plans until a human
 * approves, for at most timeout seconds. */
static void test_load_approval(void **state)
{
	static const struct {
		const char *field;  /* the approval field as written, or "" */
		int required;
		double timeout;
	} cases[] = {
		{ "", 0, 900 },
		{ "approval = {},", 0, 900 },
		{ "approval = { required = true },", 1, 900 },
		{ "approval = { required = false },", 0, 900 },
		{ "approval = { timeout = 60 },", 0, 60 },
		{ "approval = { required = true, timeout = 1 },", 1, 1 },
		{ "approval = { required = true, timeout = 86400.5 },", 1, 86400.5 },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct playbook_set *set = NULL;
		char err[512], text[512];
		struct pdir d;

		pdir_new(&d);
		snprintf(text, sizeof(text), "return { name = 'a', %s" GOOD_FNS " }\n", cases[i].field);
		pdir_write(&d, "a.lua", text);
		if (load(&d, &set, err, sizeof(err)) != RD_OK)
			fail_msg("'%s': %s", cases[i].field, err);
		if (set->v[0]->approval_required != cases[i].required ||
		    set->v[0]->approval_timeout != cases[i].timeout)
			fail_msg("'%s': required %d timeout %g, want %d %g", cases[i].field,
			         set->v[0]->approval_required, set->v[0]->approval_timeout, cases[i].required,
			         cases[i].timeout);
		playbook_set_unref(set);
		pdir_free(&d);
	}
}

/* Load the directory with these overrides; RD_OK with *set, or the error. */
static enum rd_status load_over(const struct pdir *d, const char *json, struct playbook_set **set,
                                char *err, size_t errlen)
{
	struct playbook_load_opts o = { .dir = d->path, .mem_max = MEM_MAX, .overrides_json = json };

	err[0] = '\0';
	*set = NULL;
	return playbook_set_load(&o, set, err, errlen);
}

/* The deployment may require approval where the playbook does not, or
 * lift it, or change the timeout; what it leaves out stays. */
static void test_load_approval_overrides(void **state)
{
	static const struct {
		const char *json;
		int required;
		double timeout;
	} good[] = {
		{ "{\"p\":{\"approval\":{\"required\":true,\"timeout\":60}}}", 1, 60 },
		{ "{\"p\":{\"approval\":{\"required\":true}}}", 1, 900 },
		{ "{\"p\":{\"approval\":{\"timeout\":5}}}", 0, 5 },
		{ "{\"p\":{\"approval\":{}}}", 0, 900 },
		{ "{\"other\":{\"approval\":{\"required\":true}}}", 0, 900 },
	};
	static const struct {
		const char *json;
		const char *want[3];
	} bad[] = {
		{ "{\"p\":{\"approval\":true}}", { "playbook_overrides[\"p\"].approval:", "expected a table" } },
		{ "{\"p\":{\"approval\":{\"required\":\"yes\"}}}",
		  { "playbook_overrides[\"p\"].approval.required:", "expected a boolean" } },
		{ "{\"p\":{\"approval\":{\"required\":1}}}", { "approval.required:", "boolean" } },
		{ "{\"p\":{\"approval\":{\"timeout\":0}}}", { "playbook_overrides[\"p\"].approval.timeout:", ">= 1" } },
		{ "{\"p\":{\"approval\":{\"timeout\":\"1h\"}}}", { "approval.timeout:", "expected a number" } },
		{ "{\"p\":{\"approval\":{\"needed\":true}}}", { "approval.needed:", "unknown" } },
	};
	struct playbook_set *set;
	char err[512];
	struct pdir d;

	(void)state;
	pdir_new(&d);
	pdir_write(&d, "p.lua", "return { name = 'p'," GOOD_FNS " }\n");
	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		if (load_over(&d, good[i].json, &set, err, sizeof(err)) != RD_OK)
			fail_msg("%s: %s", good[i].json, err);
		if (set->v[0]->approval_required != good[i].required ||
		    set->v[0]->approval_timeout != good[i].timeout)
			fail_msg("%s: required %d timeout %g, want %d %g", good[i].json,
			         set->v[0]->approval_required, set->v[0]->approval_timeout, good[i].required,
			         good[i].timeout);
		playbook_set_unref(set);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		if (load_over(&d, bad[i].json, &set, err, sizeof(err)) == RD_OK)
			fail_msg("%s: loaded, want an error", bad[i].json);
		assert_null(set);
		for (size_t k = 0; k < ARRAY_SIZE(bad[i].want) && bad[i].want[k]; k++)
			if (!strstr(err, bad[i].want[k]))
				fail_msg("%s: error '%s' does not contain '%s'", bad[i].json, err, bad[i].want[k]);
	}

	/* over a playbook that requires approval: lifted, or only retimed */
	pdir_write(&d, "p.lua",
	           "return { name = 'p', approval = { required = true, timeout = 120 }," GOOD_FNS " }\n");
	assert_int_equal(load_over(&d, "{\"p\":{\"approval\":{\"required\":false}}}", &set, err, sizeof(err)),
	                 RD_OK);
	assert_int_equal(set->v[0]->approval_required, 0);
	assert_near(set->v[0]->approval_timeout, 120, 0);
	playbook_set_unref(set);
	assert_int_equal(load_over(&d, "{\"p\":{\"approval\":{\"timeout\":30}}}", &set, err, sizeof(err)), RD_OK);
	assert_int_equal(set->v[0]->approval_required, 1);
	assert_near(set->v[0]->approval_timeout, 30, 0);
	playbook_set_unref(set);
	/* and overrides without approval leave it alone */
	assert_int_equal(load_over(&d, "{\"p\":{\"retries\":0}}", &set, err, sizeof(err)), RD_OK);
	assert_int_equal(set->v[0]->approval_required, 1);
	assert_near(set->v[0]->approval_timeout, 120, 0);
	playbook_set_unref(set);
	pdir_free(&d);
}

/* Deployment overrides of the limits (config key playbook_overrides). */
static void test_load_overrides(void **state)
{
	struct pdir d;
	struct playbook_set *set = NULL;
	struct playbook *pb;
	char err[512];
	struct playbook_load_opts o = { .mem_max = MEM_MAX };

	(void)state;
	pdir_new(&d);
	pdir_write(&d, "a.lua", minimal_pb);
	o.dir = d.path;
	if (playbook_set_load(&o, &set, err, sizeof(err)) != RD_OK)
		fail_msg("load failed: %s", err);
	const char *name = "minimal";
	assert_string_equal(set->v[0]->name, name);
	char json[512];
	snprintf(json, sizeof(json),
	         "{\"%s\":{\"retries\":0,\"backoff\":{\"initial\":0.5},\"budget\":{\"runs\":9},\"cooldown\":7}}",
	         name);
	playbook_set_unref(set);
	set = NULL;
	o.overrides_json = json;
	if (playbook_set_load(&o, &set, err, sizeof(err)) != RD_OK)
		fail_msg("load with overrides failed: %s", err);
	pb = set->v[0];
	assert_int_equal(pb->retries, 0);
	assert_near(pb->backoff_initial, 0.5, 1e-9);
	assert_near(pb->backoff_factor, 2, 1e-9); /* left out: the playbook's value */
	assert_int_equal(pb->budget_runs, 9);
	assert_near(pb->budget_per, 3600, 1e-9);
	assert_near(pb->cooldown, 7, 1e-9);
	playbook_set_unref(set);
	set = NULL;

	/* a typo is an error that names it; a bad value is validated */
	snprintf(json, sizeof(json), "{\"%s\":{\"retires\":1}}", name);
	assert_int_not_equal(playbook_set_load(&o, &set, err, sizeof(err)), RD_OK);
	assert_non_null(strstr(err, "retires"));
	snprintf(json, sizeof(json), "{\"%s\":{\"timeout\":-1}}", name);
	assert_int_not_equal(playbook_set_load(&o, &set, err, sizeof(err)), RD_OK);
	assert_non_null(strstr(err, "timeout"));
	assert_null(set);
	pdir_free(&d);
}

static void test_json(void **state)
{
	struct playbook_set *set = NULL;
	char err[512];
	struct pdir d;
	cJSON *j, *a, *b;

	(void)state;
	pdir_new(&d);
	pdir_write(&d, "full.lua", full_pb);
	pdir_write(&d, "minimal.lua", minimal_pb);
	if (load(&d, &set, err, sizeof(err)) != RD_OK)
		fail_msg("load failed: %s", err);

	j = playbook_json(playbook_set_find(set, "settings-sync-recovery"));
	assert_non_null(j);
	assert_string_equal(str(j, "name"), "settings-sync-recovery");
	assert_string_equal(str(j, "description"),
	                    "Restart the settings sync job and check that sync succeeds again");
	assert_string_equal(str(j, "file"), "full.lua");
	a = cJSON_GetObjectItemCaseSensitive(j, "match");
	assert_true(cJSON_IsArray(a));
	assert_int_equal(cJSON_GetArraySize(a), 2);
	assert_string_equal(cJSON_GetArrayItem(a, 0)->valuestring, "alertname=\"SettingsSyncJobFailure\"");
	assert_string_equal(cJSON_GetArrayItem(a, 1)->valuestring, "severity=~\"critical|page\"");
	assert_near(num(j, "retries"), 3, 0);
	b = cJSON_GetObjectItemCaseSensitive(j, "backoff");
	assert_true(cJSON_IsObject(b));
	assert_near(num(b, "initial"), 5, 0);
	assert_near(num(b, "factor"), 3, 0);
	assert_near(num(b, "max"), 60, 0);
	assert_near(num(j, "timeout"), 120, 0);
	assert_near(num(j, "cooldown"), 600, 0);
	b = cJSON_GetObjectItemCaseSensitive(j, "budget");
	assert_true(cJSON_IsObject(b));
	assert_near(num(b, "runs"), 4, 0);
	assert_near(num(b, "per"), 1800, 0);
	a = cJSON_GetObjectItemCaseSensitive(j, "escalate");
	assert_true(cJSON_IsArray(a));
	assert_int_equal(cJSON_GetArraySize(a), 2);
	assert_string_equal(cJSON_GetArrayItem(a, 0)->valuestring, "slack");
	assert_string_equal(cJSON_GetArrayItem(a, 1)->valuestring, "pagerduty");
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "idempotent")));
	/* approval, not asked for: its defaults */
	b = cJSON_GetObjectItemCaseSensitive(j, "approval");
	assert_true(cJSON_IsObject(b));
	assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(b, "required")));
	assert_near(num(b, "timeout"), 900, 0);
	/* no code, no source in the public description */
	assert_null(cJSON_GetObjectItemCaseSensitive(j, "source"));
	assert_null(cJSON_GetObjectItemCaseSensitive(j, "run"));
	cJSON_Delete(j);

	j = playbook_json(playbook_set_find(set, "minimal"));
	assert_non_null(j);
	assert_string_equal(str(j, "description"), "");
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "match")), 0);
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "escalate")), 0);
	assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "idempotent")));
	assert_near(num(j, "timeout"), 300, 0);
	assert_near(num(cJSON_GetObjectItemCaseSensitive(j, "budget"), "runs"), 3, 0);
	/* it prints as valid JSON */
	{
		char *text = cJSON_PrintUnformatted(j);
		cJSON *back;

		assert_non_null(text);
		back = cJSON_Parse(text);
		assert_non_null(back);
		assert_true(cJSON_Compare(j, back, 1));
		cJSON_Delete(back);
		free(text);
	}
	cJSON_Delete(j);
	playbook_set_unref(set);
	pdir_free(&d);
}

/* notify: the start and success notices, and the opt-out of annotations,
 * loaded and shown in GET /api/v1/playbooks. */
static void test_load_notify(void **state)
{
	struct playbook_set *set = NULL;
	const struct playbook *pb;
	char err[512];
	struct pdir d;
	cJSON *j, *n;

	(void)state;
	pdir_new(&d);
	pdir_write(&d, "a.lua", "return { name = 'a', notify = { on_start = { 'slack' }, grafana = false },"
	                        " run = function() end, verify = function() return true end }\n");
	pdir_write(&d, "b.lua", "return { name = 'b', notify = { on_success = { 'slack' }, grafana = true },"
	                        " run = function() end, verify = function() return true end }\n");
	if (load(&d, &set, err, sizeof(err)) != RD_OK)
		fail_msg("load failed: %s", err);
	pb = playbook_set_find(set, "a");
	assert_int_equal(pb->n_notify_start, 1);
	assert_string_equal(pb->notify_start[0], "slack");
	assert_int_equal(pb->n_notify_success, 0);
	assert_int_equal(pb->no_annotations, 1);
	j = playbook_json(pb);
	n = cJSON_GetObjectItemCaseSensitive(j, "notify");
	assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(n, "on_start"), 0)->valuestring,
	                    "slack");
	assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(n, "grafana")));
	cJSON_Delete(j);

	pb = playbook_set_find(set, "b");
	assert_int_equal(pb->n_notify_start, 0);
	assert_int_equal(pb->n_notify_success, 1);
	assert_int_equal(pb->no_annotations, 0);
	j = playbook_json(pb);
	n = cJSON_GetObjectItemCaseSensitive(j, "notify");
	assert_null(cJSON_GetObjectItemCaseSensitive(n, "on_start"));
	assert_null(cJSON_GetObjectItemCaseSensitive(n, "grafana"));
	cJSON_Delete(j);
	playbook_set_unref(set);
	pdir_free(&d);
}

static void test_json_approval(void **state)
{
	struct playbook_set *set = NULL;
	struct playbook_load_opts o = { .mem_max = MEM_MAX };
	char err[512];
	struct pdir d;
	cJSON *j, *ap;

	(void)state;
	pdir_new(&d);
	pdir_write(&d, "a.lua", "return { name = 'a', approval = { required = true, timeout = 45 }," GOOD_FNS " }\n");
	pdir_write(&d, "b.lua", "return { name = 'b'," GOOD_FNS " }\n");
	o.dir = d.path;
	/* b's requirement comes from the deployment */
	o.overrides_json = "{\"b\":{\"approval\":{\"required\":true,\"timeout\":60}}}";
	if (playbook_set_load(&o, &set, err, sizeof(err)) != RD_OK)
		fail_msg("load failed: %s", err);
	j = playbook_json(playbook_set_find(set, "a"));
	ap = cJSON_GetObjectItemCaseSensitive(j, "approval");
	assert_true(cJSON_IsObject(ap));
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ap, "required")));
	assert_near(num(ap, "timeout"), 45, 0);
	assert_int_equal(cJSON_GetArraySize(ap), 2);
	cJSON_Delete(j);
	j = playbook_json(playbook_set_find(set, "b"));
	ap = cJSON_GetObjectItemCaseSensitive(j, "approval");
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ap, "required")));
	assert_near(num(ap, "timeout"), 60, 0);
	cJSON_Delete(j);
	playbook_set_unref(set);
	pdir_free(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff_growth),
		cmocka_unit_test(test_backoff_shapes),
		cmocka_unit_test(test_backoff_jitter_bounds),
		cmocka_unit_test(test_load_full_and_defaults),
		cmocka_unit_test(test_load_partial_tables),
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_load_duplicate_names),
		cmocka_unit_test(test_load_infinite_loop),
		cmocka_unit_test(test_load_hostile_metatable),
		cmocka_unit_test(test_load_hostile_index_error),
		cmocka_unit_test(test_load_hostile_index_loop),
		cmocka_unit_test(test_load_hostile_len),
		cmocka_unit_test(test_load_empty_and_ignored),
		cmocka_unit_test(test_load_missing_dir),
		cmocka_unit_test(test_load_overrides),
		cmocka_unit_test(test_load_approval),
		cmocka_unit_test(test_load_approval_overrides),
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_load_notify),
		cmocka_unit_test(test_json_approval),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

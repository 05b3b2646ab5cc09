/* Process-wide Prometheus registry: a fixed table of families (one per
 * enum metric_id), series created on first use, rendered in text format
 * 0.0.4 together with the standard process_* metrics read from /proc. */
#include "recoveryd/metrics.h"
#include "recoveryd/common.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Label values come from requests and config; cap the series per family so
 * no input can grow memory without bound. Extra label sets are dropped and
 * counted in recoveryd_metrics_series_dropped_total. */
#define METRICS_MAX_SERIES 1000
/* Render output cap: 1000 series x 14 families stays far below this. */
#define METRICS_RENDER_MAX (16u << 20)

enum metric_type { MT_COUNTER, MT_GAUGE, MT_HISTOGRAM };

/* Job durations in seconds: sub-second API calls up to 10-minute rollouts. */
static const double job_buckets[] = { 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600 };
#define JOB_NBUCKETS (sizeof(job_buckets) / sizeof(job_buckets[0]))
static const double esc_buckets[] = { 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900 };
#define ESC_NBUCKETS (sizeof(esc_buckets) / sizeof(esc_buckets[0]))

struct family_def {
	const char *name;
	const char *help;
	enum metric_type type;
	int nlabels;
	const char *labels[2];
	const double *buckets;
	size_t nbuckets;
};

static const struct family_def defs[M__COUNT] = {
	[M_WEBHOOK_REQUESTS] = { "recoveryd_webhook_requests_total",
		"HTTP requests received, by path and status code.",
		MT_COUNTER, 2, { "path", "code" }, NULL, 0 },
	[M_ALERTS_RECEIVED] = { "recoveryd_alerts_received_total",
		"Alerts received from Alertmanager, by status.",
		MT_COUNTER, 1, { "status", NULL }, NULL, 0 },
	[M_JOBS] = { "recoveryd_jobs_total",
		"Recovery jobs finished, by playbook and outcome.",
		MT_COUNTER, 2, { "playbook", "outcome" }, NULL, 0 },
	[M_JOB_ATTEMPTS] = { "recoveryd_job_attempts_total",
		"Playbook attempts run, by playbook and result.",
		MT_COUNTER, 2, { "playbook", "result" }, NULL, 0 },
	[M_JOB_DURATION] = { "recoveryd_job_duration_seconds",
		"Run time of recovery jobs in seconds.",
		MT_HISTOGRAM, 1, { "playbook", NULL }, job_buckets, JOB_NBUCKETS },
	[M_JOBS_IN_FLIGHT] = { "recoveryd_jobs_in_flight",
		"Recovery jobs currently running.",
		MT_GAUGE, 0, { NULL, NULL }, NULL, 0 },
	[M_QUEUE_DEPTH] = { "recoveryd_queue_depth",
		"Recovery jobs waiting in the queue.",
		MT_GAUGE, 0, { NULL, NULL }, NULL, 0 },
	[M_LOOP_STALL] = { "recoveryd_event_loop_stall_seconds",
		"Seconds since the runner's event loop last turned (below 1 while healthy; the watchdog exits at --watchdog-exit).",
		MT_GAUGE, 0, { NULL, NULL }, NULL, 0 },
	[M_ADMISSIONS] = { "recoveryd_admissions_total",
		"Admission decisions for alerts, by playbook and decision.",
		MT_COUNTER, 2, { "playbook", "decision" }, NULL, 0 },
	[M_ESCALATIONS] = { "recoveryd_escalations_total",
		"Escalations to humans, by sink and result.",
		MT_COUNTER, 2, { "sink", "result" }, NULL, 0 },
	[M_CONFIG_RELOADS] = { "recoveryd_config_reloads_total",
		"Configuration reloads, by result.",
		MT_COUNTER, 1, { "result", NULL }, NULL, 0 },
	[M_BUILD_INFO] = { "recoveryd_build_info",
		"Build information; the value is always 1.",
		MT_GAUGE, 1, { "version", NULL }, NULL, 0 },
	[M_PLAYBOOK_ERRORS] = { "recoveryd_playbook_errors_total",
		"Playbook errors, by playbook and kind.",
		MT_COUNTER, 2, { "playbook", "kind" }, NULL, 0 },
	[M_REJECTED] = { "recoveryd_requests_rejected_total",
		"Requests rejected before processing, by reason.",
		MT_COUNTER, 1, { "reason", NULL }, NULL, 0 },
	[M_JOURNAL_ERRORS] = { "recoveryd_journal_errors_total",
		"Errors reading or writing the job journal.",
		MT_COUNTER, 0, { NULL, NULL }, NULL, 0 },
	[M_OUTBOX_DEPTH] = { "recoveryd_escalation_outbox_depth",
		"Escalation notifications journaled but not yet delivered.",
		MT_GAUGE, 0, { NULL, NULL }, NULL, 0 },
	[M_ESCALATION_LATENCY] = { "recoveryd_escalation_delivery_seconds",
		"Seconds from journaling an escalation to its delivery.",
		MT_HISTOGRAM, 1, { "sink", NULL }, esc_buckets, ESC_NBUCKETS },
	[M_CONN_DROPPED] = { "recoveryd_http_connections_dropped_total",
		"HTTP connections closed by recoveryd before a request was complete, by reason.",
		MT_COUNTER, 1, { "reason", NULL }, NULL, 0 },
	[M_AUTH_FAILURES] = { "recoveryd_auth_failures_total",
		"Requests refused by authentication or authorization, by reason.",
		MT_COUNTER, 1, { "reason", NULL }, NULL, 0 },
	[M_PAUSED] = { "recoveryd_paused",
		"1 while the playbook is paused (by its own pause or a pause of everything).",
		MT_GAUGE, 1, { "playbook", NULL }, NULL, 0 },
	[M_LEASES_HELD] = { "recoveryd_leases_held",
		"Jobs this replica holds the lease of (a journal shared by several replicas).",
		MT_GAUGE, 0, { NULL, NULL }, NULL, 0 },
	[M_TAKEOVERS] = { "recoveryd_takeovers_total",
		"Jobs and escalations this replica claimed after another replica's lease ran out, by kind.",
		MT_COUNTER, 1, { "kind", NULL }, NULL, 0 },
	[M_LEASES_LOST] = { "recoveryd_leases_lost_total",
		"Jobs this replica gave up because their lease ran out or a write of theirs was fenced.",
		MT_COUNTER, 0, { NULL, NULL }, NULL, 0 },
	[M_STORE_ERRORS] = { "recoveryd_store_errors_total",
		"Journal transactions that failed as a whole (the database unreachable or failing).",
		MT_COUNTER, 0, { NULL, NULL }, NULL, 0 },
	[M_RETAINED] = { "recoveryd_retention_deleted_total",
		"Ended jobs and audit rows deleted because they were older than --retain, by what.",
		MT_COUNTER, 1, { "what", NULL }, NULL, 0 },
};

struct series {
	char *lv[2];         /* copied label values; "" for unused */
	double value;        /* counter / gauge */
	uint64_t *counts;    /* histogram: per bucket, non-cumulative; [nbuckets] is +Inf */
	double sum;
	uint64_t count;
};

struct family {
	struct series **s;   /* sorted by label values for stable output */
	size_t n, cap;
	uint64_t dropped;    /* label sets refused because of the cap */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct family fams[M__COUNT];

/* ---- growable output buffer -------------------------------------------- */

struct buf {
	char *p;
	size_t len, cap;
	int err;
};

static void buf_put(struct buf *b, const char *s, size_t n)
{
	if (b->err)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t ncap = b->cap ? b->cap : 4096;
		char *np;
		while (ncap < b->len + n + 1)
			ncap *= 2;
		if (ncap > METRICS_RENDER_MAX) {
			b->err = 1;
			return;
		}
		np = realloc(b->p, ncap);
		if (!np) {
			b->err = 1;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void buf_puts(struct buf *b, const char *s)
{
	buf_put(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3)))
static void buf_printf(struct buf *b, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		b->err = 1;
		return;
	}
	buf_put(b, tmp, (size_t)n);
}

/* Shortest "%g" form that parses back to the same double, like Go's
 * strconv 'g' -1 (except that integers below 1e15 keep all their digits,
 * which every Prometheus parser accepts). out needs >= 32 bytes. */
static void fmt_float(char *out, size_t len, double v)
{
	if (isnan(v)) {
		snprintf(out, len, "NaN");
		return;
	}
	if (isinf(v)) {
		snprintf(out, len, v > 0 ? "+Inf" : "-Inf");
		return;
	}
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(out, len, "%.*g", prec, v);
		if (strtod(out, NULL) == v)
			return;
	}
}

static void buf_float(struct buf *b, double v)
{
	char tmp[40];

	fmt_float(tmp, sizeof(tmp), v);
	buf_puts(b, tmp);
}

/* Text format escaping: HELP escapes \ and newline; label values also ". */
static void buf_escaped(struct buf *b, const char *s, int quote)
{
	const char *run = s;

	for (; *s; s++) {
		const char *rep = NULL;
		if (*s == '\\')
			rep = "\\\\";
		else if (*s == '\n')
			rep = "\\n";
		else if (quote && *s == '"')
			rep = "\\\"";
		if (rep) {
			buf_put(b, run, (size_t)(s - run));
			buf_puts(b, rep);
			run = s + 1;
		}
	}
	buf_put(b, run, (size_t)(s - run));
}

/* ---- series lookup ----------------------------------------------------- */

static int series_cmp(const struct series *s, const char *l1, const char *l2)
{
	int c = strcmp(s->lv[0], l1);
	return c ? c : strcmp(s->lv[1], l2);
}

static void series_free(struct series *s)
{
	if (!s)
		return;
	free(s->lv[0]);
	free(s->lv[1]);
	free(s->counts);
	free(s);
}

/* Find or create the series for (l1, l2) of family id; NULL when the cap
 * is reached or memory is short. Caller holds lock. Labels the family does
 * not have are ignored, missing ones become "" (≡ absent in Prometheus). */
static struct series *series_get(enum metric_id id, const char *l1, const char *l2, int create)
{
	const struct family_def *d = &defs[id];
	struct family *f = &fams[id];
	size_t lo = 0, hi = f->n;
	struct series *s;

	l1 = d->nlabels >= 1 && l1 ? l1 : "";
	l2 = d->nlabels >= 2 && l2 ? l2 : "";
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = series_cmp(f->s[mid], l1, l2);
		if (c == 0)
			return f->s[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!create)
		return NULL;
	if (f->n >= METRICS_MAX_SERIES) {
		f->dropped++;
		return NULL;
	}
	if (f->n == f->cap) {
		size_t ncap = f->cap ? f->cap * 2 : 8;
		struct series **ns = realloc(f->s, ncap * sizeof(*ns));
		if (!ns)
			return NULL;
		f->s = ns;
		f->cap = ncap;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->lv[0] = strdup(l1);
	s->lv[1] = strdup(l2);
	if (d->type == MT_HISTOGRAM)
		s->counts = calloc(d->nbuckets + 1, sizeof(*s->counts));
	if (!s->lv[0] || !s->lv[1] || (d->type == MT_HISTOGRAM && !s->counts)) {
		series_free(s);
		return NULL;
	}
	memmove(&f->s[lo + 1], &f->s[lo], (f->n - lo) * sizeof(*f->s));
	f->s[lo] = s;
	f->n++;
	return s;
}

static int valid_id(enum metric_id id)
{
	return (unsigned)id < M__COUNT;
}

/* ---- public API -------------------------------------------------------- */

void metrics_init(void)
{
	/* Setting an info gauge is idempotent, so no once-guard is needed. */
	metrics_set(M_BUILD_INFO, RECOVERYD_VERSION, NULL, 1);
}

void metrics_add(enum metric_id id, const char *l1, const char *l2, double v)
{
	struct series *s;

	if (!valid_id(id) || defs[id].type == MT_HISTOGRAM)
		return;
	/* Counters only go up; a negative add is a caller bug, not data. */
	if (defs[id].type == MT_COUNTER && !(v >= 0))
		return;
	pthread_mutex_lock(&lock);
	s = series_get(id, l1, l2, 1);
	if (s)
		s->value += v;
	pthread_mutex_unlock(&lock);
}

void metrics_set(enum metric_id id, const char *l1, const char *l2, double v)
{
	struct series *s;

	/* Setting a counter would break monotonicity; only gauges are set. */
	if (!valid_id(id) || defs[id].type != MT_GAUGE)
		return;
	pthread_mutex_lock(&lock);
	s = series_get(id, l1, l2, 1);
	if (s)
		s->value = v;
	pthread_mutex_unlock(&lock);
}

void metrics_observe(enum metric_id id, const char *l1, double v)
{
	const struct family_def *d;
	struct series *s;
	size_t i;

	if (!valid_id(id) || defs[id].type != MT_HISTOGRAM)
		return;
	d = &defs[id];
	/* Same rule as client_golang: first bucket whose bound is >= v; NaN
	 * lands only in +Inf. */
	for (i = 0; i < d->nbuckets; i++)
		if (v <= d->buckets[i])
			break;
	pthread_mutex_lock(&lock);
	s = series_get(id, l1, NULL, 1);
	if (s) {
		s->counts[i]++;
		s->count++;
		s->sum += v;
	}
	pthread_mutex_unlock(&lock);
}

double metrics_get(enum metric_id id, const char *l1, const char *l2)
{
	struct series *s;
	double v = 0;

	if (!valid_id(id))
		return 0;
	pthread_mutex_lock(&lock);
	s = series_get(id, l1, l2, 0);
	if (s)
		v = defs[id].type == MT_HISTOGRAM ? (double)s->count : s->value;
	pthread_mutex_unlock(&lock);
	return v;
}

void metrics_reset(void)
{
	pthread_mutex_lock(&lock);
	for (int i = 0; i < M__COUNT; i++) {
		for (size_t j = 0; j < fams[i].n; j++)
			series_free(fams[i].s[j]);
		free(fams[i].s);
		memset(&fams[i], 0, sizeof(fams[i]));
	}
	pthread_mutex_unlock(&lock);
	/* build_info describes the binary, not runtime state: keep it. */
	metrics_init();
}

/* ---- rendering --------------------------------------------------------- */

static void render_header(struct buf *b, const char *name, const char *help, const char *type)
{
	buf_puts(b, "# HELP ");
	buf_puts(b, name);
	buf_puts(b, " ");
	buf_escaped(b, help, 0);
	buf_puts(b, "\n# TYPE ");
	buf_puts(b, name);
	buf_puts(b, " ");
	buf_puts(b, type);
	buf_puts(b, "\n");
}

/* name{l1="v1",l2="v2"[,le="x"]}; empty label values are omitted, which
 * Prometheus treats the same as an empty value. */
static void render_labels(struct buf *b, const struct family_def *d, const struct series *s,
                          const char *le)
{
	int first = 1;

	for (int i = 0; i < d->nlabels; i++) {
		if (!s->lv[i][0])
			continue;
		buf_puts(b, first ? "{" : ",");
		buf_puts(b, d->labels[i]);
		buf_puts(b, "=\"");
		buf_escaped(b, s->lv[i], 1);
		buf_puts(b, "\"");
		first = 0;
	}
	if (le) {
		buf_puts(b, first ? "{" : ",");
		buf_puts(b, "le=\"");
		buf_puts(b, le);
		buf_puts(b, "\"");
		first = 0;
	}
	if (!first)
		buf_puts(b, "}");
}

static void render_sample(struct buf *b, const char *name, const char *suffix,
                          const struct family_def *d, const struct series *s,
                          const char *le, double v)
{
	buf_puts(b, name);
	buf_puts(b, suffix);
	render_labels(b, d, s, le);
	buf_puts(b, " ");
	buf_float(b, v);
	buf_puts(b, "\n");
}

static void render_series(struct buf *b, const struct family_def *d, const struct series *s)
{
	uint64_t cum = 0;
	char le[40];

	if (d->type != MT_HISTOGRAM) {
		render_sample(b, d->name, "", d, s, NULL, s->value);
		return;
	}
	for (size_t i = 0; i < d->nbuckets; i++) {
		cum += s->counts[i];
		fmt_float(le, sizeof(le), d->buckets[i]);
		render_sample(b, d->name, "_bucket", d, s, le, (double)cum);
	}
	/* +Inf is the total by construction, matching _count exactly. */
	render_sample(b, d->name, "_bucket", d, s, "+Inf", (double)s->count);
	render_sample(b, d->name, "_sum", d, s, NULL, s->sum);
	render_sample(b, d->name, "_count", d, s, NULL, (double)s->count);
}

static void render_family(struct buf *b, enum metric_id id)
{
	static const char *const tnames[] = { "counter", "gauge", "histogram" };
	const struct family_def *d = &defs[id];
	const struct family *f = &fams[id];

	render_header(b, d->name, d->help, tnames[d->type]);
	if (f->n == 0 && d->nlabels == 0) {
		/* A label-less metric exists from the start (as a plain
		 * client_golang Counter/Gauge does): show its zero value. */
		uint64_t zero[JOB_NBUCKETS + 1] = { 0 };
		struct series z = { { "", "" }, 0, zero, 0, 0 };
		render_series(b, d, &z);
		return;
	}
	for (size_t i = 0; i < f->n; i++)
		render_series(b, d, f->s[i]);
}

static void render_dropped(struct buf *b)
{
	static const char name[] = "recoveryd_metrics_series_dropped_total";

	render_header(b, name, "Label sets dropped because a metric reached its series cap.",
	              "counter");
	for (int i = 0; i < M__COUNT; i++) {
		if (!fams[i].dropped)
			continue;
		buf_printf(b, "%s{metric=\"%s\"} %llu\n", name, defs[i].name,
		           (unsigned long long)fams[i].dropped);
	}
}

/* The process_* collector of client_golang, from /proc/self. */
struct proc_stats {
	int have_stat;
	double cpu, vsize, rss, start;
	int have_fds;
	double open_fds;
	int have_max;
	double max_fds;
};

static double boot_time(void)
{
	char *s = rd_read_file("/proc/stat", 1 << 20, NULL, 0);
	const char *p;
	double bt = -1;

	if (!s)
		return -1;
	p = strstr(s, "\nbtime ");
	if (p)
		bt = strtod(p + 7, NULL);
	free(s);
	return bt;
}

static void proc_read(struct proc_stats *ps)
{
	char *s = rd_read_file("/proc/self/stat", 4096, NULL, 0);
	struct rlimit rl;
	DIR *dir;

	memset(ps, 0, sizeof(*ps));
	if (s) {
		/* comm may contain spaces and ')': fields start after the last ')'. */
		char *p = strrchr(s, ')');
		unsigned long long utime = 0, stime = 0, start = 0, vsize = 0;
		long long rss = 0;
		long tck = sysconf(_SC_CLK_TCK);
		double bt = boot_time();

		if (p && tck > 0 && bt >= 0 &&
		    sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu"
		           " %*d %*d %*d %*d %*d %*d %llu %llu %lld",
		           &utime, &stime, &start, &vsize, &rss) == 5) {
			ps->have_stat = 1;
			ps->cpu = (double)(utime + stime) / (double)tck;
			ps->vsize = (double)vsize;
			ps->rss = (double)rss * (double)sysconf(_SC_PAGESIZE);
			ps->start = bt + (double)start / (double)tck;
		}
		free(s);
	}
	dir = opendir("/proc/self/fd");
	if (dir) {
		struct dirent *de;
		long n = 0;
		while ((de = readdir(dir)))
			if (de->d_name[0] != '.')
				n++;
		closedir(dir);
		/* Do not count the descriptor opendir itself used. */
		ps->open_fds = (double)(n > 0 ? n - 1 : 0);
		ps->have_fds = 1;
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		ps->max_fds = rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur;
		ps->have_max = 1;
	}
}

static void render_proc_one(struct buf *b, const char *name, const char *help, const char *type,
                            double v)
{
	render_header(b, name, help, type);
	buf_puts(b, name);
	buf_puts(b, " ");
	buf_float(b, v);
	buf_puts(b, "\n");
}

static void render_proc(struct buf *b, const struct proc_stats *ps)
{
	if (ps->have_stat)
		render_proc_one(b, "process_cpu_seconds_total",
		                "Total user and system CPU time spent in seconds.", "counter",
		                ps->cpu);
	if (ps->have_max)
		render_proc_one(b, "process_max_fds", "Maximum number of open file descriptors.",
		                "gauge", ps->max_fds);
	if (ps->have_fds)
		render_proc_one(b, "process_open_fds", "Number of open file descriptors.", "gauge",
		                ps->open_fds);
	if (ps->have_stat) {
		render_proc_one(b, "process_resident_memory_bytes", "Resident memory size in bytes.",
		                "gauge", ps->rss);
		render_proc_one(b, "process_start_time_seconds",
		                "Start time of the process since unix epoch in seconds.", "gauge",
		                ps->start);
		render_proc_one(b, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
		                "gauge", ps->vsize);
	}
}

char *metrics_render(size_t *len)
{
	struct buf b = { 0 };
	struct proc_stats ps;

	/* /proc reads happen outside the lock: they can be slow-ish and do
	 * not touch the registry. */
	proc_read(&ps);
	pthread_mutex_lock(&lock);
	for (int i = 0; i < M__COUNT; i++)
		render_family(&b, (enum metric_id)i);
	render_dropped(&b);
	pthread_mutex_unlock(&lock);
	render_proc(&b, &ps);
	if (!b.err && !b.p)
		buf_put(&b, "", 0);
	if (b.err) {
		free(b.p);
		return NULL;
	}
	if (len)
		*len = b.len;
	return b.p;
}

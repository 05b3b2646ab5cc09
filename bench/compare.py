#!/usr/bin/env python3
"""Side-by-side benchmark: recoveryd against adnanh/webhook and nginx.

Started by bench/run.sh (which installs wrk, nginx-light and webhook and builds
the release binary); see bench/README.md for what every figure means.

  python3 bench/compare.py BUILD/recoveryd [--smoke] [--duration S] [--reps N]

Every server runs on its own free loopback port with its own directory in one
temporary directory (removed at the end). wrk (one thread) loads them in turn,
interleaved per repetition and connection count, so drift on the machine hits
all of them alike. After the load, the script measures recoveryd's first-action
latency, an alert storm and many jobs waiting at once, each on a fresh daemon.

Prints tables and writes the figures as JSON (--json, default
bench/out/compare.json). Exit status: 0 when every server started, answered
and ran actions; 1 when something is broken. Speed never fails the run.
"""
import argparse
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(HERE)

# ---------------------------------------------------------------- helpers


def free_port():
    """A loopback port that was free a moment ago (for servers that cannot
    bind port 0 and report it: nginx, webhook)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def proc_status(pid):
    """(RSS KiB, threads) of one process, or (0, 0) when it is gone."""
    rss = thr = 0
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("Threads:"):
                    thr = int(line.split()[1])
    except OSError:
        pass
    return rss, thr


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def http_req(port, method, path, body=None, headers=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body, headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def metrics(port):
    """{(name, frozenset(labels)): value} of a Prometheus text page."""
    st, body = http_req(port, "GET", "/metrics", timeout=10)
    out = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)', line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def msum(ms, name, **want):
    return sum(v for (n, ls), v in ms.items()
               if n == name and all((k, str(x)) in ls for k, x in want.items()))


def codes(ms, name="recoveryd_webhook_requests_total"):
    """{status code: count} of recoveryd's answers on /webhook."""
    out = {}
    for (n, ls), v in ms.items():
        d = dict(ls)
        if n == name and d.get("path") == "/webhook":
            out[d.get("code")] = out.get(d.get("code"), 0) + v
    return out


def pct(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def alert(labels, status="firing"):
    return {"status": status, "labels": labels, "annotations": {"summary": "bench"},
            "startsAt": "2026-11-29T10:45:43.885Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": ""}


def notification(alerts):
    return json.dumps({"version": "4", "status": "firing", "receiver": "recovery",
                       "groupKey": "{}:{}", "truncatedAlerts": 0, "alerts": alerts}).encode()


class Sampler:
    """Peak RSS and thread count of a process tree while a load runs."""

    def __init__(self, pids_fn, interval=0.1):
        self.pids_fn, self.interval = pids_fn, interval
        self.rss = self.threads = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def sample(self):
        rss = thr = 0
        for p in self.pids_fn():
            r, t = proc_status(p)
            rss += r
            thr += t
        self.rss, self.threads = max(self.rss, rss), max(self.threads, thr)

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self.sample()
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()
        self.sample()


# ---------------------------------------------------------------- servers


class Server:
    name = "?"

    def __init__(self, root, name):
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir)
        self.proc = None
        self.port = None
        self.name = name

    def pids(self):
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid] + children(self.proc.pid)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start_on_free_port(self, what, argv_for):
        """Start argv_for(port) on a free loopback port; tries a few ports,
        since one can be taken between the choice and the bind."""
        for _ in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(argv_for(self.port), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL,
                                         stderr=open(os.path.join(self.dir, "stderr.log"), "w"))
            if wait_port(self.port, self.proc):
                return self
            self.stop()
        raise RuntimeError("%s: %s did not start (see %s)" % (self.name, what, self.dir))

    def stop(self, grace=10):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Nginx(Server):
    """nginx with one worker. Every request is answered `return 200`; with
    count_log, requests to it are also counted (2 bytes of access log each)."""

    def __init__(self, root, name, count_log=False):
        super().__init__(root, name)
        os.chmod(self.dir, 0o755)  # the worker may run as another user
        self.count_path = os.path.join(self.dir, "count.log") if count_log else None

    def start(self):
        def argv(port):
            log = ('log_format count "x";\n  access_log %s count;' % self.count_path
                   if self.count_path else "access_log off;")
            conf = os.path.join(self.dir, "nginx.conf")
            with open(conf, "w") as f:
                f.write("""worker_processes 1;
daemon off;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn;
events { worker_connections 4096; }
http {
  %(log)s
  keepalive_requests 1000000;
  client_body_temp_path %(d)s/body;
  proxy_temp_path %(d)s/proxy;
  fastcgi_temp_path %(d)s/fastcgi;
  uwsgi_temp_path %(d)s/uwsgi;
  scgi_temp_path %(d)s/scgi;
  server {
    listen 127.0.0.1:%(port)d;
    location / { return 200; }
  }
}
""" % {"d": self.dir, "port": port, "log": log})
            return ["nginx", "-p", self.dir, "-c", conf, "-e", os.path.join(self.dir, "error.log")]

        return self.start_on_free_port("nginx", argv)

    def count(self):
        try:
            return os.path.getsize(self.count_path) // 2
        except OSError:
            return 0

    url_path = "/"


class Webhook(Server):
    """adnanh/webhook with one async hook: the answer is sent at once, the
    command runs afterwards. The command is /bin/sh appending one byte to a
    file (the shell's builtin echo: one exec per hook, like /bin/true), so the
    file's size is the number of commands that really ran."""

    url_path = "/hooks/bench"

    def start(self):
        self.count_path = os.path.join(self.dir, "count")
        open(self.count_path, "w").close()
        hooks = os.path.join(self.dir, "hooks.json")
        with open(hooks, "w") as f:
            json.dump([{"id": "bench", "execute-command": "/bin/sh",
                        "command-working-directory": self.dir,
                        "pass-arguments-to-command": [
                            {"source": "string", "name": "-c"},
                            {"source": "string", "name": "echo >> '%s'" % self.count_path}],
                        "include-command-output-in-response": False,
                        "response-message": "ok", "http-methods": ["POST"]}], f)
        return self.start_on_free_port(
            "webhook", lambda port: ["webhook", "-hooks", hooks, "-ip", "127.0.0.1",
                                     "-port", str(port), "-nopanic"])

    def count(self):
        return os.path.getsize(self.count_path)

    def pids(self):
        # Only the server: the hook commands come and go.
        return [self.proc.pid] if self.alive() else []


PLAYBOOK = """return {
  name = %(name)s, match = { %(match)s },
  retries = 0, timeout = %(timeout)d, cooldown = %(cooldown)d, budget = { runs = 0, per = 1 },
  run = function(ctx)
%(run)s
  end,
  verify = function(ctx) return true end,
}
"""


def lua_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def playbook(name, alertname, run="", timeout=30, cooldown=0):
    return PLAYBOOK % {"name": lua_str(name), "match": lua_str('alertname="%s"' % alertname),
                       "timeout": timeout, "cooldown": cooldown, "run": run}


def http_post(url):
    return ('    local r, err = recovery.http{method = "POST", url = %s, body = "x", timeout = 30}\n'
            '    if not r then error(err) end' % url)


class Recoveryd(Server):
    """recoveryd with a webhook token (the requests carry it, as Alertmanager's
    do), the journal on, and the given playbooks."""

    url_path = "/webhook"

    def __init__(self, root, name, binary, playbooks, extra=()):
        super().__init__(root, name)
        self.binary = binary
        self.token = secrets.token_urlsafe(24)
        pdir = os.path.join(self.dir, "playbooks")
        os.makedirs(pdir)
        for n, src in playbooks.items():
            with open(os.path.join(pdir, n + ".lua"), "w") as f:
                f.write(src)
        tok = os.path.join(self.dir, "webhook.token")
        with open(tok, "w") as f:
            f.write(self.token + "\n")
        os.chmod(tok, 0o600)
        self.argv = [binary, "--listen", "127.0.0.1:0", "--playbooks", pdir,
                     "--lua-path", os.path.join(SOURCE_DIR, "lua"),
                     "--state", os.path.join(self.dir, "journal.db"),
                     "--webhook-token-file", tok, "--queue-max", "1000000",
                     "--conn-per-ip", "0", "--drain-timeout", "1"] + list(extra)

    def start(self):
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.stderr_path, "w"), cwd=self.dir)
        deadline = time.monotonic() + getattr(self, "start_timeout", 15)
        while time.monotonic() < deadline and self.proc.poll() is None:
            with open(self.stderr_path) as f:
                m = re.search(r'"msg":"listening".*?"port":"(\d+)"', f.read())
            if m:
                self.port = int(m.group(1))
                return self
            time.sleep(0.05)
        tail = open(self.stderr_path).read()[-2000:]
        self.stop()
        raise RuntimeError("%s: recoveryd did not start:\n%s" % (self.name, tail))

    def headers(self):
        return {"Content-Type": "application/json", "Authorization": "Bearer " + self.token}

    def post(self, body, timeout=60):
        return http_req(self.port, "POST", "/webhook", body, self.headers(), timeout)

    def counts(self):
        """(jobs created, jobs ended, jobs running) from /metrics. Also notes
        the largest gap seen between recoveryd_queue_depth and the jobs that
        are neither running nor ended (the queued ones: the bench playbooks
        never retry) in self.queue_gap."""
        ms = metrics(self.port)
        c = (msum(ms, "recoveryd_admissions_total", decision="queued"),
             msum(ms, "recoveryd_jobs_total"), msum(ms, "recoveryd_jobs_in_flight"))
        queued = c[0] - c[1] - c[2]
        gap = abs(msum(ms, "recoveryd_queue_depth") - queued)
        if gap > getattr(self, "queue_gap", 0):
            self.queue_gap = gap
            self.queue_gap_at = (msum(ms, "recoveryd_queue_depth"), queued)
        return c

    def wait_ended(self, n, t0, limit, poll):
        """Seconds from t0 until n jobs have ended (None after limit)."""
        while time.monotonic() - t0 < limit:
            _, ended, _ = self.counts()
            if ended >= n:
                return time.monotonic() - t0
            time.sleep(poll)
        return None

    def wait_drained(self, limit, poll=0.05):
        """Seconds until every created job has ended (None after limit)."""
        t0 = time.monotonic()
        while True:
            created, ended, _ = self.counts()
            if ended >= created:
                return time.monotonic() - t0
            if time.monotonic() - t0 > limit:
                return None
            time.sleep(poll)


# ---------------------------------------------------------------- wrk


def wrk(url, script, conns, seconds, env):
    e = dict(os.environ)
    e.update(env)
    cmd = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--timeout", "10s",
           "-s", os.path.join(HERE, script), url]
    p = subprocess.run(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=seconds + 60)
    for line in p.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            r = json.loads(line[len("BENCHJSON "):])
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
            r["errors_total"] = sum(r["errors"].values())
            return r
    raise RuntimeError("wrk printed no result (exit %d):\n%s" % (p.returncode, p.stdout[-2000:]))


# ---------------------------------------------------------------- load matrix


class Bench:
    def __init__(self, a, root):
        self.a = a
        self.root = root
        self.results = []  # one dict per wrk run
        self.problems = []
        self.seq = 0

    def tag(self):
        self.seq += 1
        return "r%d-%s" % (self.seq, secrets.token_hex(3))

    def run_one(self, case, server, conns, rep, script, alertname=None):
        tag = self.tag()
        env = {"BENCH_TAG": tag}
        if alertname:
            env["BENCH_ALERTNAME"] = alertname
        if isinstance(server, Recoveryd):
            env["BENCH_TOKEN"] = server.token
            before = server.counts()
            codes_before = codes(metrics(server.port))
            sink_before = self.sink.count()
        elif isinstance(server, Webhook):
            before = server.count()
        url = "http://127.0.0.1:%d%s" % (server.port, server.url_path)
        with Sampler(server.pids) as smp:
            r = wrk(url, script, conns, self.a.duration, env)
        row = {"case": case, "server": server.name, "conns": conns, "rep": rep,
               "rps": r["rps"], "requests": r["requests"], "errors": r["errors"],
               "errors_total": r["errors_total"], "latency_us": r["latency_us"],
               "rss_kib": smp.rss, "threads": smp.threads}
        acked = r["requests"] - r["errors"]["status"]
        row["acked"] = acked
        if not server.alive():
            self.problems.append("%s died during %s c%d" % (server.name, case, conns))
            self.results.append(row)
            return row
        if isinstance(server, Recoveryd):
            c0, e0, _ = server.counts()
            row["backlog"] = c0 - e0
            cb = codes(metrics(server.port))
            # the daemon's own count of its answers by status (wrk only says "non-2xx")
            row["codes"] = {k: v - codes_before.get(k, 0) for k, v in cb.items()
                            if v - codes_before.get(k, 0)}
            d = server.wait_drained(self.a.drain_limit)
            c1, e1, _ = server.counts()
            row["jobs_created"] = c1 - before[0]
            row["jobs_ended"] = e1 - before[1]
            row["drain_s"] = d
            if d is None:
                self.problems.append("%s: jobs did not drain within %ds" % (server.name, self.a.drain_limit))
            elif d > 0.2 and row["backlog"] > 0:
                row["drain_jobs_per_s"] = row["backlog"] / d
            # total completion rate over load + drain
            row["jobs_per_s"] = row["jobs_ended"] / (r["duration_us"] / 1e6 + (d or 0))
            row["queue_depth_gap"] = getattr(server, "queue_gap", 0)
            row["queue_depth_gap_at"] = getattr(server, "queue_gap_at", None)
            server.queue_gap, server.queue_gap_at = 0, None
            if server.name.endswith("http"):
                time.sleep(0.2)  # the sink's log write follows its answer
                row["completed"] = self.sink.count() - sink_before
            else:
                row["completed"] = row["jobs_ended"]
        elif isinstance(server, Webhook):
            # wait until the hook commands stop coming (bounded)
            last, stable_since, t0 = server.count(), time.monotonic(), time.monotonic()
            while time.monotonic() - t0 < self.a.drain_limit:
                time.sleep(0.2)
                n = server.count()
                if n != last:
                    last, stable_since = n, time.monotonic()
                elif time.monotonic() - stable_since >= (0.5 if self.a.smoke else 1.0):
                    break
            row["completed"] = server.count() - before
            row["drain_s"] = stable_since - t0
        self.results.append(row)
        self.report_line(row)
        return row

    def report_line(self, row):
        l = row["latency_us"]
        extra = ""
        if "completed" in row:
            extra = " acked %d completed %d" % (row["acked"], row["completed"])
        if row.get("drain_s") is not None and isinstance(row.get("backlog"), (int, float)):
            extra += " backlog %d drain %.1fs" % (row["backlog"], row["drain_s"])
        print("  %-9s %-15s c%-3d rep%d %8.0f req/s p50 %6.2f ms p99 %7.2f ms rss %6.1f MiB thr %3d err %d%s"
              % (row["case"], row["server"], row["conns"], row["rep"], row["rps"], l["p50"] / 1000,
                 l["p99"] / 1000, row["rss_kib"] / 1024, row["threads"], row["errors_total"], extra),
              flush=True)

    def matrix(self):
        a = self.a
        root = self.root
        self.sink = Nginx(root, "sink", count_log=True).start()
        sink_url = lua_str("http://127.0.0.1:%d/sink" % self.sink.port)
        nginx = Nginx(root, "nginx").start()
        hook = Webhook(root, "webhook").start()
        rd_empty = Recoveryd(root, "recoveryd-empty", a.binary, {
            "empty": playbook("empty", "BenchAlert"),
            "same": playbook("same", "BenchSame", cooldown=3600)}).start()
        rd_http = Recoveryd(root, "recoveryd-http", a.binary, {
            "http": playbook("http", "BenchAlert", run=http_post(sink_url)),
            "same": playbook("same", "BenchSame", run=http_post(sink_url), cooldown=3600)}).start()
        self.servers = [self.sink, nginx, hook, rd_empty, rd_http]
        print("servers: nginx :%d, webhook :%d, recoveryd-empty :%d, recoveryd-http :%d, sink :%d"
              % (nginx.port, hook.port, rd_empty.port, rd_http.port, self.sink.port), flush=True)
        idle = {s.name: Sampler(s.pids) for s in self.servers}
        for s in idle.values():
            s.sample()
        self.idle = {k: {"rss_kib": v.rss, "threads": v.threads} for k, v in idle.items()}
        try:
            for rep in range(1, a.reps + 1):
                for conns in a.conns:
                    for srv in (nginx, hook, rd_empty, rd_http):
                        self.run_one("new", srv, conns, rep, "new_alert.lua")
                    for srv in (hook, rd_http):
                        row = self.run_one("same", srv, conns, rep, "same_alert.lua", "BenchSame")
                        if isinstance(srv, Recoveryd) and row.get("jobs_created", 1) != 1:
                            self.problems.append("%s: the repeated notification made %s jobs (want 1)"
                                                 % (srv.name, row.get("jobs_created")))
        finally:
            for s in self.servers:
                s.stop()
        self.check_matrix()

    @staticmethod
    def only_503(r):
        codes = {k: v for k, v in (r.get("codes") or {}).items() if not k.startswith("2") and v}
        errs = r.get("errors") or {}
        return (r["server"].startswith("recoveryd") and list(codes) == ["503"]
                and errs.get("status", 0) == r["errors_total"])

    def check_matrix(self):
        for r in self.results:
            where = "%s %s c%d rep%d" % (r["case"], r["server"], r["conns"], r["rep"])
            if r["requests"] == 0:
                self.problems.append("%s: no request answered" % where)
            elif r["errors_total"] > 0 and self.only_503(r):
                # 503 is recoveryd's "retry later" (Alertmanager retries it):
                # reported, not a breakage
                print("note: %s: %d answers 503 (retry later)" % (where, r["errors_total"]))
            elif r["errors_total"] > 0:
                self.problems.append("%s: %d errors %s%s" % (
                    where, r["errors_total"], r["errors"],
                    (" answers by status: %s" % r["codes"]) if r.get("codes") else ""))
            if r["server"].startswith("recoveryd") or r["server"] == "webhook":
                if r.get("completed", 0) == 0:
                    self.problems.append("%s: no completed action" % where)
            if r["server"].startswith("recoveryd") and r["case"] == "new":
                if r.get("jobs_ended", 0) < r["acked"]:
                    self.problems.append("%s: %d acknowledged, %d jobs ended"
                                         % (where, r["acked"], r.get("jobs_ended", 0)))
                if r["server"].endswith("http") and r.get("completed", 0) < r.get("jobs_ended", 0):
                    self.problems.append("%s: %d jobs ended, the sink saw %d actions"
                                         % (where, r["jobs_ended"], r["completed"]))

    # ------------------------------------------------------------ recoveryd-only figures

    def first_action(self):
        """Webhook sent -> the playbook's first action reaches a sink, on an
        idle daemon, N times one after the other."""
        arrivals = {}
        lock = threading.Lock()
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen(64)
        port = srv.getsockname()[1]
        stop = threading.Event()

        def conn_loop(c):
            buf = b""
            c.settimeout(1.0)
            while not stop.is_set():
                try:
                    data = c.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    break
                if not data:
                    break
                now = time.monotonic()
                if not buf:
                    m = re.match(rb"[A-Z]+ /first/(\d+) ", data)
                    if m:
                        with lock:
                            arrivals.setdefault(int(m.group(1)), now)
                buf += data
                while b"\r\n\r\n" in buf:
                    head, rest = buf.split(b"\r\n\r\n", 1)
                    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
                    n = int(m.group(1)) if m else 0
                    if len(rest) < n:
                        break
                    buf = rest[n:]
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    if buf:
                        m = re.match(rb"[A-Z]+ /first/(\d+) ", buf)
                        if m:
                            with lock:
                                arrivals.setdefault(int(m.group(1)), now)
            c.close()

        def accept_loop():
            srv.settimeout(0.5)
            while not stop.is_set():
                try:
                    c, _ = srv.accept()
                except socket.timeout:
                    continue
                except OSError:
                    break
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                threading.Thread(target=conn_loop, args=(c,), daemon=True).start()

        threading.Thread(target=accept_loop, daemon=True).start()
        url = "http://127.0.0.1:%d/first/" % port
        rd = Recoveryd(self.root, "recoveryd-first", self.a.binary, {
            "first": playbook("first", "BenchFirst",
                              run=http_post(lua_str(url) + " .. ctx.alert.labels.seq"))}).start()
        lat, sent = [], {}
        ack = []
        try:
            conn = http.client.HTTPConnection("127.0.0.1", rd.port, timeout=30)
            t_end = time.monotonic() + self.a.first_limit
            for i in range(self.a.first_n):
                if time.monotonic() > t_end:
                    break
                body = notification([alert({"alertname": "BenchFirst", "seq": str(i)})])
                t0 = time.monotonic()
                conn.request("POST", "/webhook", body, rd.headers())
                r = conn.getresponse()
                r.read()
                t1 = time.monotonic()
                if r.status != 202:
                    self.problems.append("first-action: webhook answered %d" % r.status)
                    break
                sent[i] = t0
                ack.append(t1 - t0)
                # wait for the action (bounded) before the next webhook: idle daemon
                w_end = time.monotonic() + 5
                while time.monotonic() < w_end:
                    with lock:
                        if i in arrivals:
                            break
                    time.sleep(0.0002)
                with lock:
                    if i in arrivals:
                        lat.append(arrivals[i] - t0)
            conn.close()
        finally:
            stop.set()
            srv.close()
            rd.stop()
        out = {"n": len(sent), "actions": len(lat),
               "p50_ms": pct(lat, 0.50) * 1000, "p99_ms": pct(lat, 0.99) * 1000,
               "max_ms": max(lat) * 1000 if lat else float("nan"),
               "ack_p50_ms": pct(ack, 0.50) * 1000, "ack_p99_ms": pct(ack, 0.99) * 1000}
        if len(lat) < len(sent) or not lat:
            self.problems.append("first-action: %d webhooks, %d actions arrived" % (len(sent), len(lat)))
        return out

    def completion(self):
        """Jobs completed per second from a fixed backlog: N jobs posted at
        once (notifications of 1,000 alerts), timed from the first post until
        all have ended, for the empty playbook, one recovery.http POST and one
        recovery.exec of /bin/true."""
        n = self.a.backlog
        sink = Nginx(self.root, "sink-completion", count_log=True).start()
        url = lua_str("http://127.0.0.1:%d/sink" % sink.port)
        kinds = (("empty", "", []),
                 ("http", http_post(url), []),
                 ("exec", '    local r, err = recovery.exec{"/bin/true", timeout = 30}\n'
                          '    if not r or r.code ~= 0 then error(err or "exit code") end',
                  ["--exec-allow", "/bin/true"]))
        out = {}
        try:
            for name, run, extra in kinds:
                rd = Recoveryd(self.root, "recoveryd-backlog-" + name, self.a.binary,
                               {name: playbook(name, "BenchBacklog", run=run)}, extra=extra).start()
                try:
                    s0 = sink.count()
                    t0 = time.monotonic()
                    for start in range(0, n, 1000):
                        body = notification([alert({"alertname": "BenchBacklog", "instance": "b%d" % i})
                                             for i in range(start, min(n, start + 1000))])
                        st, _ = rd.post(body, timeout=120)
                        if st != 202:
                            self.problems.append("backlog %s: answered %d" % (name, st))
                            break
                    t_posted = time.monotonic() - t0
                    done = rd.wait_ended(n, t0, self.a.drain_limit, 0.02)
                    r = {"jobs": n, "posted_s": t_posted, "all_ended_s": done,
                         "jobs_per_s": n / done if done else None,
                         "queue_depth_gap": getattr(rd, "queue_gap", 0),
                         "queue_depth_gap_at": getattr(rd, "queue_gap_at", None)}
                    if name == "http":
                        time.sleep(0.2)
                        r["sink"] = sink.count() - s0
                        if r["sink"] < n:
                            self.problems.append("backlog http: %d jobs, the sink saw %d" % (n, r["sink"]))
                    if done is None:
                        self.problems.append("backlog %s: %d jobs did not end within %ds"
                                             % (name, n, self.a.drain_limit))
                    out[name] = r
                    print("  backlog %-5s %d jobs: all ended after %s s (%s jobs/s)"
                          % (name, n, fmt(done, "%.2f"), fmt(r["jobs_per_s"])), flush=True)
                finally:
                    rd.stop()
        finally:
            sink.stop()
        return out

    def storm(self):
        """One notification with N firing alerts: time to the answer, and
        until all N jobs (empty playbook) have ended."""
        rd = Recoveryd(self.root, "recoveryd-storm", self.a.binary, {
            "storm": playbook("storm", "BenchStorm")}).start()
        n = self.a.storm
        try:
            body = notification([alert({"alertname": "BenchStorm", "instance": "s%d" % i})
                                 for i in range(n)])
            t0 = time.monotonic()
            st, resp = rd.post(body)
            t_ack = time.monotonic() - t0
            if st != 202:
                self.problems.append("storm: answered %d" % st)
                return {"alerts": n, "status": st}
            queued = sum(1 for j in json.loads(resp)["jobs"] if j["state"] == "queued")
            done = rd.wait_ended(n, t0, self.a.drain_limit, 0.005)
            if done is None:
                self.problems.append("storm: %d jobs did not end within %ds" % (n, self.a.drain_limit))
            return {"alerts": n, "status": st, "queued": queued, "answer_ms": t_ack * 1000,
                    "all_ended_s": done}
        finally:
            rd.stop()

    def waiting(self):
        """N jobs waiting in recovery.sleep at once: threads and RSS."""
        n = self.a.waiting
        rd = Recoveryd(self.root, "recoveryd-waiting", self.a.binary, {
            "wait": playbook("wait", "BenchWait", run="    recovery.sleep(%d)" % self.a.sleep,
                             timeout=self.a.sleep + 60)},
            extra=["--max-jobs", str(n)]).start()
        try:
            time.sleep(0.3)
            rss0, thr0 = proc_status(rd.proc.pid)
            t0 = time.monotonic()
            for start in range(0, n, 1000):
                body = notification([alert({"alertname": "BenchWait", "instance": "w%d" % i})
                                     for i in range(start, min(n, start + 1000))])
                st, _ = rd.post(body, timeout=120)
                if st != 202:
                    self.problems.append("waiting: answered %d" % st)
                    return {"jobs": n, "status": st}
            peak = {"running": 0}
            limit = min(self.a.sleep * 0.8, self.a.drain_limit)
            while time.monotonic() - t0 < limit:
                _, _, running = rd.counts()
                rss, thr = proc_status(rd.proc.pid)
                if running >= peak["running"]:
                    peak = {"running": int(running), "rss_kib": rss, "threads": thr,
                            "after_s": time.monotonic() - t0}
                if running >= n:
                    break
                time.sleep(0.2)
            time.sleep(0.5)
            rss, thr = proc_status(rd.proc.pid)
            _, _, running = rd.counts()
            if running >= peak["running"]:
                peak.update({"running": int(running), "rss_kib": max(rss, peak.get("rss_kib", 0)),
                             "threads": max(thr, peak.get("threads", 0))})
            out = {"jobs": n, "sleep_s": self.a.sleep, "idle_rss_kib": rss0, "idle_threads": thr0}
            out.update(peak)
            if peak["running"]:
                out["kib_per_job"] = (peak["rss_kib"] - rss0) / peak["running"]
                out["kib_per_job_total"] = peak["rss_kib"] / peak["running"]
            if peak["running"] < n:
                self.problems.append("waiting: only %d of %d jobs were running at once"
                                     % (peak["running"], n))
            return out
        finally:
            rd.proc.kill()
            rd.proc.wait(timeout=10)


    def idle_conns(self):
        """N idle keep-alive connections at once (each sent nothing): threads and RSS."""
        n = self.a.idle
        rd = Recoveryd(self.root, "recoveryd-idle", self.a.binary, {
            "empty": playbook("empty", "BenchIdle", run="    return")},
            extra=["--conn-per-ip", str(n + 64)]).start()  # all from 127.0.0.1
        socks = []
        try:
            time.sleep(0.3)
            rss0, thr0 = proc_status(rd.proc.pid)
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", rd.port), timeout=10)
                socks.append(s)
            time.sleep(1.0)
            rss, thr = proc_status(rd.proc.pid)
            open_conns = sum(1 for s in socks if not closed_by_peer(s))
            # still served while they idle
            st, _ = rd.post(notification([alert({"alertname": "BenchIdle", "instance": "i"})]), timeout=30)
            if st != 202:
                self.problems.append("idle: a webhook next to %d idle connections answered %d" % (n, st))
            if open_conns < n:
                self.problems.append("idle: %d of %d connections were closed by recoveryd" % (n - open_conns, n))
            return {"connections": n, "open": open_conns, "idle_rss_kib": rss0, "idle_threads": thr0, "rss_kib": rss,
                    "threads": thr, "kib_per_conn": (rss - rss0) / n if n else 0, "webhook_status": st}
        finally:
            for s in socks:
                s.close()
            rd.proc.kill()
            rd.proc.wait(timeout=10)


def closed_by_peer(s):
    """True when the server closed s (EOF or reset waiting to be read)."""
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)


# ---------------------------------------------------------------- report


def summarize(results):
    """Median (and range) over the repetitions, per case, server, conns."""
    groups = {}
    for r in results:
        groups.setdefault((r["case"], r["server"], r["conns"]), []).append(r)
    out = []
    for (case, server, conns), rs in groups.items():
        def med(f):
            vals = [f(r) for r in rs if f(r) is not None]
            return statistics.median(vals) if vals else None
        s = {"case": case, "server": server, "conns": conns, "reps": len(rs),
             "rps": med(lambda r: r["rps"]),
             "rps_min": min(r["rps"] for r in rs), "rps_max": max(r["rps"] for r in rs),
             "p50_ms": med(lambda r: r["latency_us"]["p50"] / 1000),
             "p99_ms": med(lambda r: r["latency_us"]["p99"] / 1000),
             "rss_mib": max(r["rss_kib"] for r in rs) / 1024,
             "threads": max(r["threads"] for r in rs),
             "acked": sum(r["acked"] for r in rs),
             "errors": sum(r["errors_total"] for r in rs)}
        if any("completed" in r for r in rs):
            s["completed"] = sum(r.get("completed", 0) for r in rs)
        if any("jobs_created" in r for r in rs):
            s["jobs_created"] = sum(r.get("jobs_created", 0) for r in rs)
        if any("queue_depth_gap" in r for r in rs):
            s["queue_depth_gap"] = max(r.get("queue_depth_gap", 0) for r in rs)
        if any(r.get("drain_jobs_per_s") for r in rs):
            s["drain_jobs_per_s"] = med(lambda r: r.get("drain_jobs_per_s"))
            s["drain_s"] = med(lambda r: r.get("drain_s"))
            s["backlog"] = med(lambda r: r.get("backlog"))
        out.append(s)
    return out


def fmt(v, f="%.0f"):
    return "-" if v is None else f % v


def print_tables(summary, ratios, extra):
    print()
    print("Load (median of the repetitions; req/s range in brackets; RSS and threads: peak)")
    print("%-5s %-16s %4s %8s %17s %8s %8s %8s %5s %9s %9s %6s %8s" % (
        "case", "server", "conn", "req/s", "(min-max)", "p50 ms", "p99 ms", "RSS MiB", "thr",
        "acked", "completed", "done%", "drain/s"))
    order = {"nginx": 0, "webhook": 1, "recoveryd-empty": 2, "recoveryd-http": 3}
    for s in sorted(summary, key=lambda s: (s["case"] != "new", s["case"], order.get(s["server"], 9),
                                            s["conns"])):
        done = ""
        if "completed" in s and s["acked"] and s["case"] == "new":
            done = "%.0f" % (100.0 * s["completed"] / s["acked"])
        print("%-5s %-16s %4d %8.0f %17s %8.2f %8.2f %8.1f %5d %9d %9s %6s %8s" % (
            s["case"], s["server"], s["conns"], s["rps"],
            "(%.0f-%.0f)" % (s["rps_min"], s["rps_max"]), s["p50_ms"], s["p99_ms"], s["rss_mib"],
            s["threads"], s["acked"], fmt(s.get("completed"), "%d"), done,
            fmt(s.get("drain_jobs_per_s"))))
    print()
    for k, v in ratios.items():
        print("ratio %-40s %s" % (k, fmt(v, "%.3f")))
    for k, v in extra.items():
        print("%-13s %s" % (k, json.dumps(v, sort_keys=True, default=lambda x: None)))


def ratios_of(summary):
    def rps(server, conns, case="new"):
        for s in summary:
            if (s["case"], s["server"], s["conns"]) == (case, server, conns):
                return s["rps"]
        return None
    out = {}
    for rd in ("recoveryd-empty", "recoveryd-http"):
        for other, c in (("nginx", 64), ("nginx", 16), ("webhook", 16), ("webhook", 64)):
            a, b = rps(rd, c), rps(other, c)
            if a is not None and b:
                out["%s/%s req/s at %d" % (rd, other, c)] = a / b
    return out


def versions(binary):
    def run(cmd):
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=10)
            return p.stdout.strip().splitlines()[0] if p.stdout.strip() else ""
        except (OSError, subprocess.TimeoutExpired):
            return ""
    return {"nproc": os.cpu_count(), "wrk": run(["wrk", "--version"]).split(" Copyright")[0],
            "nginx": run(["nginx", "-v"]), "webhook": run(["webhook", "-version"]),
            "recoveryd": run([binary, "--version"]),
            "git": run(["git", "-C", SOURCE_DIR, "describe", "--always", "--dirty", "--tags"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--smoke", action="store_true", help="tiny version of everything (CI)")
    ap.add_argument("--duration", type=int, help="seconds per wrk run (default 3; smoke 1)")
    ap.add_argument("--reps", type=int, help="repetitions (default 3; smoke 1)")
    ap.add_argument("--conns", help="connection counts, comma-separated (default 1,16,64)")
    ap.add_argument("--first-n", type=int, help="first-action samples (default 1000; smoke 50)")
    ap.add_argument("--storm", type=int, help="alerts in the storm notification (default 1000; smoke 100)")
    ap.add_argument("--waiting", type=int, help="jobs waiting at once (default 10000; smoke 200)")
    ap.add_argument("--backlog", type=int, help="jobs in the backlog figure (default 5000; smoke 200)")
    ap.add_argument("--idle", type=int, help="idle connections at once (default 2000; smoke 100)")
    ap.add_argument("--only", default="matrix,first,backlog,storm,waiting,idle",
                    help="parts to run (default matrix,first,backlog,storm,waiting)")
    ap.add_argument("--json", help="where to write the results (default bench/out/compare.json)")
    a = ap.parse_args()
    smoke = a.smoke
    a.duration = a.duration or (1 if smoke else 3)
    a.reps = a.reps or (1 if smoke else 3)
    a.conns = [int(x) for x in (a.conns or ("16" if smoke else "1,16,64")).split(",")]
    a.first_n = a.first_n or (50 if smoke else 1000)
    a.first_limit = 10 if smoke else 120
    a.storm = a.storm or (100 if smoke else 1000)
    a.backlog = a.backlog or (200 if smoke else 5000)
    a.waiting = a.waiting or (200 if smoke else 10000)
    a.idle = a.idle or (100 if smoke else 2000)
    a.sleep = 20 if smoke else 60
    a.drain_limit = 60 if smoke else 300
    a.binary = os.path.abspath(a.binary)
    parts = set(a.only.split(","))
    missing = [p for p in ("wrk", "nginx", "webhook") if not shutil.which(p)]
    if missing and "matrix" in parts:
        # 77: ctest's SKIP_RETURN_CODE (bench.smoke skips where they are absent)
        print("SKIP: not installed: %s (bash bench/run.sh installs them)" % " ".join(missing))
        return 77

    info = versions(a.binary)
    info["command"] = " ".join(["bench/run.sh"] + (["--smoke"] if smoke else []))
    info["settings"] = {"duration_s": a.duration, "reps": a.reps, "conns": a.conns,
                        "first_n": a.first_n, "storm": a.storm, "backlog": a.backlog, "waiting": a.waiting, "idle": a.idle,
                        "sleep_s": a.sleep}
    print("nproc %s | %s | %s | %s | recoveryd %s (%s)" % (
        info["nproc"], info["wrk"], info["nginx"], info["webhook"], info["recoveryd"], info["git"]),
        flush=True)
    root = tempfile.mkdtemp(prefix="recoveryd-compare-")
    b = Bench(a, root)
    t_start = time.monotonic()
    extra = {}
    try:
        if "matrix" in parts:
            b.matrix()
        if "first" in parts:
            extra["first_action"] = b.first_action()
            print("first action: %s" % json.dumps(extra["first_action"]), flush=True)
        if "backlog" in parts:
            extra["backlog"] = b.completion()
        if "storm" in parts:
            extra["storm"] = b.storm()
            print("storm: %s" % json.dumps(extra["storm"]), flush=True)
        if "waiting" in parts:
            extra["waiting"] = b.waiting()
            print("waiting: %s" % json.dumps(extra["waiting"]), flush=True)
        if "idle" in parts:
            extra["idle"] = b.idle_conns()
            print("idle: %s" % json.dumps(extra["idle"]), flush=True)
    except Exception as e:  # a server that did not start, wrk that failed
        b.problems.append("%s: %s" % (type(e).__name__, e))
    finally:
        for s in getattr(b, "servers", []):
            s.stop()
        if os.environ.get("BENCH_KEEP_TMP"):
            print("kept %s" % root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    summary = summarize(b.results)
    ratios = ratios_of(summary)
    print_tables(summary, ratios, extra)
    wall = time.monotonic() - t_start
    out = {"info": info, "summary": summary, "ratios": ratios, "runs": b.results,
           "problems": b.problems, "wall_s": wall}
    out.update(extra)
    path = a.json or os.path.join(HERE, "out", "smoke.json" if smoke else "compare.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
    print("results: %s (%.0f s)" % (os.path.relpath(path), wall))
    if b.problems:
        print("PROBLEMS:")
        for p in b.problems:
            print("  " + p)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

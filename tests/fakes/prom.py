#!/usr/bin/env python3
"""Prometheus helpers for tests. Python 3 standard library only.

Exporter: a /metrics endpoint on 127.0.0.1 whose values the test sets.

    exp = Exporter().start()
    exp.set("settings_sync_healthy", 0, {"job": "settings-sync"})           # gauge
    exp.set("settings_sync_errors_total", 3, {"job": "s"}, kind="counter")
    exp.inc("settings_sync_errors_total", 1, {"job": "s"})
    exp.url                     # http://127.0.0.1:PORT  (exp.address: 127.0.0.1:PORT)
    exp.stop()

  HTTP /set (any method) changes a value, so a playbook can "repair" it:
    POST /set?name=settings_sync_healthy&value=1&job=settings-sync
  every query parameter other than name, value and kind is a label.

RealPrometheus: Debian's /usr/bin/prometheus scraping exporters every second.

    if not prometheus_binary(): skip("...")
    prom = RealPrometheus(tmpdir, targets=[exp.address], rules={"r.yml": "..."}).start()
    prom.url; prom.query("up"); prom.wait_for("settings_sync_healthy == 0", timeout=15)
    prom.stop()

FakePromAPI: a scripted GET /api/v1/query (and /api/v1/query_range) for
result types or errors that real Prometheus makes awkward to produce.

    api = FakePromAPI().start()
    api.answer("up", vector([({"job": "x"}, 1)]))
    api.answer("bad(", error("bad_data", "1:5: parse error: unclosed left parenthesis"), status=400)
    api.answer("raw", "<html>oops</html>", status=502)       # not an API response
    api.queries()               # [(expr, params dict), ...]

Envelope builders: vector(), scalar(), string(), matrix(), error().

Command line (tests/fakes/fakeserver.py: --port, --host, the ready line, SIGTERM):
    python3 prom.py [exporter] --port N         # /metrics, values changed with /set
    python3 prom.py api --port N [--answers F]  # F: JSON {expr: envelope}
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler

import fakeserver

PROMETHEUS_BIN = "/usr/bin/prometheus"


def free_port():
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


class _Base(fakeserver.FakeServer):
    def __init__(self, port=0, host="127.0.0.1"):
        self._fake_init(host, port)
        self._lock = threading.Lock()


class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def send_body(self, status, data, ctype):
        if isinstance(data, str):
            data = data.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""


# ---------------------------------------------------------------- exporter

def _escape_label(v):
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt_value(v):
    v = float(v)
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    return repr(int(v)) if v.is_integer() and abs(v) < 2 ** 53 else repr(v)


class _ExporterHandler(_QuietHandler):
    def _handle(self):
        exp = self.server.fake
        split = urllib.parse.urlsplit(self.path)
        self.read_body()
        if split.path == "/metrics":
            self.send_body(200, exp.render(), "text/plain; version=0.0.4; charset=utf-8")
            return
        if split.path == "/set":
            q = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
            name, value = q.pop("name", None), q.pop("value", None)
            kind = q.pop("kind", None)
            try:
                exp.set(name, float(value), q, kind=kind)
            except (TypeError, ValueError) as e:
                self.send_body(400, json.dumps({"error": str(e)}), "application/json")
                return
            exp._sets.append((self.command, name, float(value), q))
            self.send_body(200, json.dumps({"ok": True}), "application/json")
            return
        self.send_body(404, "not found\n", "text/plain")

    do_GET = do_POST = do_PUT = do_HEAD = _handle


class Exporter(_Base):
    """Serves /metrics in the text format 0.0.4 with values set by the test."""
    handler_class = _ExporterHandler
    thread_name = "exporter"

    def __init__(self, port=0, host="127.0.0.1"):
        super().__init__(port, host)
        self._families = {}  # name -> {"kind":, "help":, "samples": {labels tuple: value}}
        self._sets = []      # /set calls: (method, name, value, labels)

    def set(self, name, value, labels=None, kind=None, help=None):
        if not name or not name.replace("_", "a").replace(":", "a").isalnum() or name[0].isdigit():
            raise ValueError("bad metric name %r" % (name,))
        key = tuple(sorted((labels or {}).items()))
        with self._lock:
            fam = self._families.setdefault(name, {"kind": kind or "gauge", "help": help or name, "samples": {}})
            if kind:
                fam["kind"] = kind
            if help:
                fam["help"] = help
            fam["samples"][key] = float(value)

    def inc(self, name, by=1, labels=None):
        key = tuple(sorted((labels or {}).items()))
        with self._lock:
            fam = self._families.setdefault(name, {"kind": "counter", "help": name, "samples": {}})
            fam["samples"][key] = fam["samples"].get(key, 0.0) + float(by)

    def remove(self, name, labels=None):
        """Drop one series (labels given) or the whole family."""
        with self._lock:
            if labels is None:
                self._families.pop(name, None)
            elif name in self._families:
                self._families[name]["samples"].pop(tuple(sorted(labels.items())), None)

    def get(self, name, labels=None):
        with self._lock:
            fam = self._families.get(name)
            return None if fam is None else fam["samples"].get(tuple(sorted((labels or {}).items())))

    def set_calls(self):
        with self._lock:
            return list(self._sets)

    def render(self):
        out = []
        with self._lock:
            for name in sorted(self._families):
                fam = self._families[name]
                out.append("# HELP %s %s" % (name, fam["help"].replace("\\", "\\\\").replace("\n", "\\n")))
                out.append("# TYPE %s %s" % (name, fam["kind"]))
                for key in sorted(fam["samples"]):
                    lbl = ",".join('%s="%s"' % (k, _escape_label(str(v))) for k, v in key)
                    out.append("%s%s %s" % (name, "{%s}" % lbl if lbl else "", _fmt_value(fam["samples"][key])))
        return "\n".join(out) + "\n"


# ---------------------------------------------------------------- real Prometheus

def prometheus_binary():
    """Path of a usable prometheus binary, or None."""
    for p in (os.environ.get("PROMETHEUS_BIN"), PROMETHEUS_BIN, shutil.which("prometheus")):
        if p and os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def skip_without_prometheus(testcase_or_cls=None):
    """Raise unittest.SkipTest when no Prometheus is installed."""
    import unittest
    if not prometheus_binary():
        raise unittest.SkipTest("Prometheus is not installed (apt-get install prometheus); skipping")


class PrometheusError(AssertionError):
    pass


class RealPrometheus:
    """One prometheus process with its config and TSDB in a directory."""

    def __init__(self, workdir=None, targets=(), rules=None, scrape_interval="1s",
                 evaluation_interval="1s", job="test", binary=None, extra_args=()):
        self.binary = binary or prometheus_binary()
        if not self.binary:
            raise PrometheusError("Prometheus is not installed")
        self._own_dir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="prom-test-")
        os.makedirs(self.workdir, exist_ok=True)
        self.targets = list(targets)
        self.rules = dict(rules or {})
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.job = job
        self.extra_args = list(extra_args)
        self.port = None
        self.proc = None
        self.log_path = os.path.join(self.workdir, "prometheus.log")

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def write_config(self):
        rule_paths = []
        for name, text in self.rules.items():
            p = os.path.join(self.workdir, name)
            with open(p, "w") as f:
                f.write(text)
            rule_paths.append(p)
        lines = ["global:",
                 "  scrape_interval: %s" % self.scrape_interval,
                 "  scrape_timeout: %s" % self.scrape_interval,
                 "  evaluation_interval: %s" % self.evaluation_interval]
        if rule_paths:
            lines.append("rule_files:")
            lines += ["  - %s" % json.dumps(p) for p in rule_paths]
        lines += ["scrape_configs:",
                  "  - job_name: %s" % json.dumps(self.job),
                  "    static_configs:",
                  "      - targets: %s" % json.dumps(self.targets)]
        path = os.path.join(self.workdir, "prometheus.yml")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def start(self, timeout=30.0):
        cfg = self.write_config()
        tsdb = os.path.join(self.workdir, "tsdb")
        os.makedirs(tsdb, exist_ok=True)
        last = None
        for _ in range(3):  # a free port may be taken between probe and bind
            self.port = free_port()
            argv = [self.binary, "--config.file=" + cfg, "--storage.tsdb.path=" + tsdb,
                    "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"] + self.extra_args
            logf = open(self.log_path, "ab")
            try:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                             cwd=self.workdir, preexec_fn=_die_with_parent)
            finally:
                logf.close()
            try:
                self._wait_ready(timeout)
                return self
            except PrometheusError as e:
                last = e
                self.stop()
        raise last

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError("prometheus exited with %s\n%s" % (self.proc.returncode, self.log_tail()))
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise PrometheusError("prometheus not ready within %.0fs\n%s" % (timeout, self.log_tail()))

    def log_tail(self, n=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def cleanup(self):
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def query(self, expr):
        """Instant query -> the API envelope (dict); errors return the error envelope."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read().decode())
        except urllib.error.HTTPError as e:
            return json.loads(e.read().decode())

    def wait_for(self, expr, predicate=None, timeout=20.0, interval=0.2):
        """Poll until predicate(result list) holds (default: non-empty); return the result."""
        predicate = predicate or (lambda res: len(res) > 0)
        deadline = time.monotonic() + timeout
        doc = None
        while True:
            doc = self.query(expr)
            if doc.get("status") == "success" and predicate(doc["data"]["result"]):
                return doc["data"]["result"]
            if time.monotonic() > deadline:
                raise PrometheusError("%s: condition not met within %.0fs; last answer %r" % (expr, timeout, doc))
            time.sleep(interval)

    def generator_url(self, expr, base=None):
        """A generatorURL as Prometheus builds it for an alerting rule."""
        return "%s/graph?g0.expr=%s&g0.tab=1" % (base or self.url, urllib.parse.quote_plus(expr))


def _die_with_parent():
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


# ---------------------------------------------------------------- fake query API

def _ts():
    return round(time.time(), 3)


def vector(samples):
    """samples: [(labels dict, value), ...]"""
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": dict(m), "value": [_ts(), _fmt_value(v)]} for m, v in samples]}}


def scalar(value):
    return {"status": "success", "data": {"resultType": "scalar", "result": [_ts(), _fmt_value(value)]}}


def string(value):
    return {"status": "success", "data": {"resultType": "string", "result": [_ts(), value]}}


def matrix(series):
    """series: [(labels dict, [(ts, value), ...]), ...]"""
    return {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": dict(m), "values": [[t, _fmt_value(v)] for t, v in pts]} for m, pts in series]}}


def error(error_type, message):
    return {"status": "error", "errorType": error_type, "error": message}


class _FakeAPIHandler(_QuietHandler):
    def _handle(self):
        api = self.server.fake
        split = urllib.parse.urlsplit(self.path)
        body = self.read_body()
        params = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        if self.command == "POST" and "form-urlencoded" in (self.headers.get("Content-Type") or ""):
            params.update(urllib.parse.parse_qs(body.decode(), keep_blank_values=True))
        flat = {k: v[0] for k, v in params.items()}
        api._record(split.path, flat, list(self.headers.items()))
        if not split.path.endswith(("/api/v1/query", "/api/v1/query_range")):
            self.send_body(404, "404 page not found\n", "text/plain; charset=utf-8")
            return
        expr = flat.get("query")
        if expr is None:
            self.send_body(400, json.dumps(error("bad_data", 'invalid parameter "query": unknown position: parse error: no expression found in input')), "application/json")
            return
        status, doc = api._lookup(expr)
        if isinstance(doc, (dict, list)):
            self.send_body(status, json.dumps(doc), "application/json")
        else:
            self.send_body(status, doc, "text/plain; charset=utf-8")

    do_GET = do_POST = do_HEAD = _handle


class FakePromAPI(_Base):
    """Answers /api/v1/query from a table expr -> (status, envelope). Unknown
    expressions get an empty vector."""
    handler_class = _FakeAPIHandler
    thread_name = "prom-api"

    def __init__(self, port=0, host="127.0.0.1"):
        super().__init__(port, host)
        self._answers = {}
        self._log = []

    def answer(self, expr, doc, status=None):
        if status is None:
            status = 200
            if isinstance(doc, dict) and doc.get("status") == "error":
                status = {"bad_data": 400, "execution": 422, "timeout": 503,
                          "canceled": 503, "internal": 500, "unavailable": 503}.get(doc.get("errorType"), 400)
        with self._lock:
            self._answers[expr] = (status, doc)

    def _lookup(self, expr):
        with self._lock:
            return self._answers.get(expr, (200, vector([])))

    def _record(self, path, params, headers):
        with self._lock:
            self._log.append((path, params, headers))

    def queries(self):
        with self._lock:
            return [(p.get("query"), p) for path, p, h in self._log]

    def requests(self):
        with self._lock:
            return list(self._log)


def main(argv=None):
    ap = fakeserver.parser("Prometheus exporter (default) or scripted query API fake")
    ap.add_argument("kind", nargs="?", choices=("exporter", "api"), default="exporter")
    ap.add_argument("--answers", help="api: JSON file {expr: envelope}; other expressions get an empty vector")
    args = ap.parse_args(argv)
    if args.kind == "exporter":
        if args.answers:
            ap.error("--answers is for api")
        return fakeserver.serve(Exporter(port=args.port, host=args.host))
    api = FakePromAPI(port=args.port, host=args.host)
    if args.answers:
        with open(args.answers) as f:
            for expr, doc in json.load(f).items():
                api.answer(expr, doc)
    return fakeserver.serve(api)


if __name__ == "__main__":
    sys.exit(main())

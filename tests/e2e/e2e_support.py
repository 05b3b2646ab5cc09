"""End-to-end support: the real Prometheus and Alertmanager on loopback, wired
to the real recoveryd with the SHIPPED alert rule, Alertmanager route and
playbook, plus the fakes (Kubernetes API, settings registry, PagerDuty,
Slack) and a small exporter standing in for the settings sync job.

    exporter  --scrape 1s-->  Prometheus (shipped rule, scaled)  --alerts-->
    Alertmanager (shipped route, scaled)  --webhook + bearer-->  recoveryd
    (shipped playbook)  --PATCH-->  Kubernetes fake  --on_request-->  the
    exporter's error counter stops  -->  verify (PromQL on Prometheus)  -->
    resolved notification.

Scaling: every duration of the shipped files is divided by SCALE (60: one
minute becomes one second): the rule's `for:` and the range windows / offsets
of its expression, and the route's group_wait, group_interval and
repeat_interval. Prometheus scrapes and evaluates every second.

Environment: the integration harness's (RECOVERYD_BIN, RECOVERYD_SOURCE_DIR,
RECOVERYD_KEEP_TMP=1), plus
  RECOVERYD_E2E_MONITORING_DIR  read alert-rules.yml / alertmanager.yml from
                                this directory instead of k8s/monitoring/
                                (to try a candidate before it is committed)
  PROMETHEUS_BIN, ALERTMANAGER_BIN  other binaries than Debian's
"""

import base64
import copy
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
_INTEGRATION = os.path.normpath(os.path.join(HERE, "..", "integration"))
if _INTEGRATION not in sys.path:
    sys.path.insert(0, _INTEGRATION)

import harness  # noqa: E402  (puts tests/fakes on sys.path)
from harness import Recoveryd, SOURCE_DIR, lua_value  # noqa: E402
from prom import Exporter, RealPrometheus, PrometheusError, prometheus_binary  # noqa: E402

try:
    import yaml  # Debian: python3-yaml
except ImportError:  # pragma: no cover - depends on the machine
    yaml = None

ALERTNAME = "SettingsSyncJobFailure"
PLAYBOOK = "settings-sync-recovery"
METRIC = "settings_sync_errors_total"
SCALE = 60.0

MONITORING_DIR = os.environ.get("RECOVERYD_E2E_MONITORING_DIR") or os.path.join(SOURCE_DIR, "k8s", "monitoring")
RULES_FILE = os.path.join(MONITORING_DIR, "alert-rules.yml")
ALERTMANAGER_FILE = os.path.join(MONITORING_DIR, "alertmanager.yml")
PLAYBOOK_FILE = os.path.join(SOURCE_DIR, "playbooks", PLAYBOOK + ".lua")
REGISTRY_FAKE_FILE = os.path.join(harness.FAKES_DIR, "settings_registry.py")
ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"


class ChainError(AssertionError):
    pass


# ---------------------------------------------------------------- prerequisites

def alertmanager_binary():
    for p in (os.environ.get("ALERTMANAGER_BIN"), ALERTMANAGER_BIN, shutil.which("prometheus-alertmanager"),
              shutil.which("alertmanager")):
        if p and os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def missing_prerequisites():
    """Why the chain cannot run here (list of sentences), empty when it can."""
    why = []
    if not harness.binary():
        why.append("RECOVERYD_BIN is not set (run through ctest)")
    if not prometheus_binary():
        why.append("Prometheus is not installed (apt-get install prometheus)")
    if not alertmanager_binary():
        why.append("Alertmanager is not installed (apt-get install prometheus-alertmanager)")
    if yaml is None:
        why.append("PyYAML is missing (apt-get install python3-yaml)")
    for path, what in ((RULES_FILE, "the shipped alert rules"),
                       (ALERTMANAGER_FILE, "the shipped Alertmanager route"),
                       (PLAYBOOK_FILE, "the shipped playbook"),
                       (REGISTRY_FAKE_FILE, "the settings registry fake")):
        if not os.path.isfile(path):
            why.append("%s (%s) does not exist yet" % (what, os.path.relpath(path, SOURCE_DIR)))
    return why


def free_port():
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def _die_with_parent():
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


# ---------------------------------------------------------------- durations

_DUR_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DUR_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_DUR_FULL = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w|y))+$")


def parse_duration(text):
    """Prometheus/Alertmanager duration ("1h30m", "90s", "500ms") -> seconds."""
    text = str(text).strip()
    if not _DUR_FULL.match(text):
        raise ValueError("not a duration: %r" % (text,))
    return sum(float(n) * _DUR_UNITS[u] for n, u in _DUR_PART.findall(text))


def fmt_seconds(sec):
    """Seconds -> a duration string Prometheus and Alertmanager accept."""
    ms = int(round(sec * 1000))
    if ms % 1000 == 0:
        return "%ds" % (ms // 1000)
    return "%dms" % ms


def scaled(text, minimum=1.0):
    """A duration divided by SCALE, at least `minimum` seconds."""
    return fmt_seconds(max(minimum, round(parse_duration(text) / SCALE)))


_RANGE = re.compile(r"\[\s*([0-9][0-9a-z.]*)\s*(?::\s*([0-9][0-9a-z.]*)?\s*)?\]")
_OFFSET = re.compile(r"\boffset\s+(-?)([0-9][0-9a-z.]*)")


def scale_expr(expr):
    """The expression with range windows, subquery steps and offsets scaled.
    Range windows stay >= 4s so rate()/increase() see several 1s samples."""
    def rng(m):
        out = "[" + scaled(m.group(1), minimum=4)
        if m.group(0).find(":") >= 0:
            out += ":" + (scaled(m.group(2)) if m.group(2) else "")
        return out + "]"

    def off(m):
        return "offset " + m.group(1) + scaled(m.group(2))
    return _OFFSET.sub(off, _RANGE.sub(rng, expr))


# ---------------------------------------------------------------- shipped YAML

def _yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _embedded_texts(doc):
    """Text values of a ConfigMap's data or a Secret's data/stringData."""
    out = []
    for key in ("stringData", "data"):
        for name, val in (doc.get(key) or {}).items():
            if not isinstance(val, str):
                continue
            if key == "data" and doc.get("kind") == "Secret":
                try:
                    val = base64.b64decode(val).decode("utf-8")
                except Exception:
                    continue
            out.append((name, val))
    return out


def load_rule_groups(path=RULES_FILE):
    """Rule groups of the shipped file, whatever wraps them: a plain
    Prometheus rules file, a PrometheusRule (spec.groups), or a ConfigMap
    whose data holds a rules file. Returns (groups, form)."""
    groups, forms = [], []
    for doc in _yaml_docs(path):
        if not isinstance(doc, dict):
            continue
        if isinstance(doc.get("groups"), list):
            groups += doc["groups"]
            forms.append("rules file")
        elif isinstance((doc.get("spec") or {}).get("groups"), list):
            groups += doc["spec"]["groups"]
            forms.append(doc.get("kind") or "spec.groups")
        else:
            for name, text in _embedded_texts(doc):
                inner = yaml.safe_load(text)
                if isinstance(inner, dict) and isinstance(inner.get("groups"), list):
                    groups += inner["groups"]
                    forms.append("%s %s" % (doc.get("kind"), name))
    if not groups:
        raise ChainError("%s: no rule groups found (expected `groups:`, a PrometheusRule's spec.groups, "
                         "or a ConfigMap holding a rules file)" % os.path.relpath(path, SOURCE_DIR))
    return groups, ", ".join(forms)


def scale_rule_groups(groups):
    """Deep copy with `for:` durations and expressions scaled; group
    `interval:` removed (the global 1s evaluation interval applies)."""
    out = copy.deepcopy(groups)
    for g in out:
        g.pop("interval", None)
        for r in g.get("rules") or []:
            if "for" in r:
                r["for"] = scaled(r["for"])
            if "keep_firing_for" in r:
                r["keep_firing_for"] = scaled(r["keep_firing_for"])
            if isinstance(r.get("expr"), str):
                r["expr"] = scale_expr(r["expr"])
    return out


def find_rule(groups, alertname=ALERTNAME):
    """(group, rule) of the alerting rule called alertname."""
    found = [(g, r) for g in groups for r in (g.get("rules") or []) if r.get("alert") == alertname]
    if not found:
        names = [r.get("alert") or r.get("record") for g in groups for r in (g.get("rules") or [])]
        raise ChainError("the shipped rules have no alert %s (rules: %s)" % (alertname, names))
    if len(found) > 1:
        raise ChainError("the shipped rules define alert %s %d times" % (alertname, len(found)))
    return found[0]


_SELECTOR = re.compile(re.escape(METRIC) + r"\s*(\{([^}]*)\})?")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!=|!~|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')


def series_labels(expr):
    """Labels the exporter's series must carry to be selected by expr:
    (scrape job name or None, {label: value}). Only '=' matchers (and '=~'
    with a plain alternation: the first alternative) are honoured."""
    m = _SELECTOR.search(expr)
    if not m:
        raise ChainError("the rule's expression does not select %s: %s" % (METRIC, expr))
    job, labels = None, {}
    for name, op, val in _MATCHER.findall(m.group(2) or ""):
        if op == "=":
            v = val
        elif op == "=~" and re.match(r"^[A-Za-z0-9_.:/-]+(\|[A-Za-z0-9_.:/-]+)*$", val):
            v = val.split("|")[0]
        else:
            continue
        if name == "job":
            job = v
        else:
            labels[name] = v
    return job, labels


def load_alertmanager_config(path=ALERTMANAGER_FILE):
    """The Alertmanager configuration in the shipped file: a plain
    alertmanager.yml, or a Secret/ConfigMap holding one. Returns (config, form)."""
    for doc in _yaml_docs(path):
        if not isinstance(doc, dict):
            continue
        if "route" in doc and "receivers" in doc:
            return doc, "alertmanager.yml"
        for name, text in _embedded_texts(doc):
            inner = yaml.safe_load(text)
            if isinstance(inner, dict) and "route" in inner:
                return inner, "%s %s" % (doc.get("kind"), name)
        if doc.get("kind") == "AlertmanagerConfig":
            raise ChainError("%s is an AlertmanagerConfig resource: this test reads a plain Alertmanager "
                             "configuration (or a Secret/ConfigMap holding one)" % path)
    raise ChainError("%s: no Alertmanager configuration (with route: and receivers:) found"
                     % os.path.relpath(path, SOURCE_DIR))


def _is_recoveryd_webhook(wc):
    url = str(wc.get("url") or "")
    u = urllib.parse.urlsplit(url)
    return "recoveryd" in (u.hostname or "") or u.path == "/webhook" or u.path.startswith("/trigger/")


def rewrite_alertmanager_config(cfg, recoveryd_url, token_file):
    """A copy of the shipped configuration for loopback:
    - every webhook_config that targets recoveryd keeps its path and query
      but goes to recoveryd_url; its credentials come from token_file;
    - every other integration (Slack, PagerDuty, e-mail, other webhooks) is
      removed: nothing may leave the machine;
    - group_wait / group_interval / repeat_interval are scaled;
    - templates and global URLs/secrets are dropped.
    Returns (config, notes, recoveryd_receivers)."""
    cfg = copy.deepcopy(cfg)
    notes, targets = [], []
    base = urllib.parse.urlsplit(recoveryd_url)
    for rcv in cfg.get("receivers") or []:
        name = rcv.get("name")
        for key in list(rcv):
            if not key.endswith("_configs"):
                continue
            kept = []
            for ic in rcv.get(key) or []:
                if key == "webhook_configs" and "url_file" in ic and "url" not in ic:
                    notes.append("receiver %s: webhook url_file %s replaced by a url" % (name, ic["url_file"]))
                    ic["url"] = "http://recoveryd/webhook"
                    ic.pop("url_file")
                if key == "webhook_configs" and _is_recoveryd_webhook(ic):
                    old = urllib.parse.urlsplit(str(ic["url"]))
                    ic["url"] = urllib.parse.urlunsplit((base.scheme, base.netloc, old.path or "/", old.query, ""))
                    hc = ic.get("http_config") or {}
                    auth = hc.get("authorization")
                    if isinstance(auth, dict):
                        auth.pop("credentials", None)
                        auth["credentials_file"] = token_file
                    for legacy in ("bearer_token", "bearer_token_file"):
                        if legacy in hc:
                            hc.pop(legacy)
                            hc["bearer_token_file"] = token_file
                    hc.pop("tls_config", None)
                    hc.pop("proxy_url", None)
                    targets.append((name, ic["url"], bool(hc.get("authorization") or hc.get("bearer_token_file")
                                                          or hc.get("basic_auth"))))
                    kept.append(ic)
                else:
                    notes.append("receiver %s: %s entry removed (no traffic may leave the machine)" % (name, key))
            if kept:
                rcv[key] = kept
            else:
                rcv.pop(key)
    cfg.pop("templates", None)
    g = cfg.get("global") or {}
    for k in list(g):
        if k.endswith("_url") or k.endswith("_file") or k.startswith("smtp_") or k.endswith("_api_key") \
                or k == "http_config":
            g.pop(k)
    timings = []

    def walk(route, depth):
        for k in ("group_wait", "group_interval", "repeat_interval"):
            if k in route:
                old = route[k]
                route[k] = scaled(old)
                timings.append("%s%s %s -> %s" % ("  " * depth, k, old, route[k]))
        for child in route.get("routes") or []:
            walk(child, depth + 1)
    root = cfg.get("route") or {}
    # the defaults (30s, 5m, 4h) scaled too, when the root route leaves them out
    for k, dflt in (("group_wait", "30s"), ("group_interval", "5m"), ("repeat_interval", "4h")):
        if k not in root:
            root[k] = dflt
    walk(root, 0)
    notes += ["timing: " + t for t in timings]
    return cfg, notes, targets


# ---------------------------------------------------------------- HTTP helpers

def http_json(url, timeout=5.0, method="GET", data=None):
    req = urllib.request.Request(url, method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        raw = e.read().decode("utf-8", "replace")
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def http_text(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode("utf-8", "replace")


def wait_until(pred, timeout, what, interval=0.2, detail=None):
    """Poll pred() until it returns a truthy value (returned); ChainError
    naming `what` (and detail() if given) after timeout seconds."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except (OSError, ValueError, KeyError) as e:  # a server still starting
            last_exc = e
        if time.monotonic() > deadline:
            extra = ""
            if detail is not None:
                try:
                    extra = "\n" + str(detail())
                except Exception as e:  # the detail must not hide the timeout
                    extra = "\n(detail failed: %r)" % (e,)
            if last_exc is not None:
                extra += "\nlast error: %r" % (last_exc,)
            raise ChainError("timed out after %.0fs waiting for: %s%s" % (timeout, what, extra))
        time.sleep(interval)


# ---------------------------------------------------------------- Prometheus

class ChainPrometheus(RealPrometheus):
    """prom.py's RealPrometheus with an alerting section (the Alertmanager on
    loopback), an external URL on loopback, the alert resend delay at 1s, and
    one scrape job named like the rule expects."""

    def __init__(self, workdir, exporter_address, job, rules_text, alertmanager_address):
        super().__init__(workdir, targets=[exporter_address], rules={"alert-rules.yml": rules_text},
                         scrape_interval="1s", evaluation_interval="1s", job=job)
        self.alertmanager_address = alertmanager_address

    def write_config(self):
        """Like RealPrometheus's, plus honor_labels (the exporter sets
        `instance` per scenario, as separate pods of the sync job would
        have) and the alerting section."""
        rule_paths = []
        for name, text in self.rules.items():
            p = os.path.join(self.workdir, name)
            with open(p, "w") as f:
                f.write(text)
            rule_paths.append(p)
        cfg = {"global": {"scrape_interval": self.scrape_interval, "scrape_timeout": self.scrape_interval,
                          "evaluation_interval": self.evaluation_interval},
               "rule_files": rule_paths,
               "alerting": {"alertmanagers": [{"static_configs": [{"targets": [self.alertmanager_address]}]}]},
               "scrape_configs": [{"job_name": self.job, "honor_labels": True,
                                   "static_configs": [{"targets": self.targets}]}]}
        path = os.path.join(self.workdir, "prometheus.yml")
        with open(path, "w") as f:
            json.dump(cfg, f, indent=1)  # JSON is YAML
        return path

    def start(self, timeout=30.0):
        cfg = self.write_config()
        tsdb = os.path.join(self.workdir, "tsdb")
        os.makedirs(tsdb, exist_ok=True)
        last = None
        for _ in range(3):
            self.port = free_port()
            argv = [self.binary, "--config.file=" + cfg, "--storage.tsdb.path=" + tsdb,
                    "--web.listen-address=127.0.0.1:%d" % self.port,
                    "--web.external-url=http://127.0.0.1:%d" % self.port,
                    "--rules.alert.resend-delay=1s", "--log.level=info"]
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

    def alerts(self, alertname=ALERTNAME):
        doc = http_json(self.url + "/api/v1/alerts")
        return [a for a in doc["data"]["alerts"] if a["labels"].get("alertname") == alertname]


# ---------------------------------------------------------------- Alertmanager

class Alertmanager:
    """Debian's Alertmanager on loopback, clustering off, state in workdir."""

    def __init__(self, workdir, config):
        self.binary = alertmanager_binary()
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.config_path = os.path.join(workdir, "alertmanager.yml")
        self.log_path = os.path.join(workdir, "alertmanager.log")
        self.storage = os.path.join(workdir, "data")
        self.port = None
        self.proc = None
        self.write_config(config)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def write_config(self, config):
        with open(self.config_path, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)

    def check_config(self):
        """amtool check-config on our copy: (ok, output)."""
        amtool = shutil.which("amtool")
        if not amtool:
            return True, "amtool not installed"
        r = subprocess.run([amtool, "check-config", self.config_path], capture_output=True, text=True, timeout=30)
        return r.returncode == 0, (r.stdout + r.stderr).strip()

    def start(self, timeout=30.0):
        os.makedirs(self.storage, exist_ok=True)
        last = None
        for _ in range(3):
            self.port = free_port()
            argv = [self.binary, "--config.file=" + self.config_path, "--storage.path=" + self.storage,
                    "--web.listen-address=127.0.0.1:%d" % self.port, "--cluster.listen-address=",
                    "--web.external-url=http://127.0.0.1:%d" % self.port, "--log.level=debug"]
            logf = open(self.log_path, "ab")
            try:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                             cwd=self.workdir, preexec_fn=_die_with_parent)
            finally:
                logf.close()
            try:
                self._wait_ready(timeout)
                return self
            except ChainError as e:
                last = e
                self.stop()
        raise last

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ChainError("alertmanager exited with %s\n%s" % (self.proc.returncode, self.log_tail()))
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise ChainError("alertmanager not ready within %.0fs\n%s" % (timeout, self.log_tail()))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def log_tail(self, n=40, grep=None):
        try:
            with open(self.log_path, errors="replace") as f:
                lines = f.readlines()
        except OSError:
            return ""
        if grep:
            lines = [l for l in lines if grep in l]
        return "".join(lines[-n:])

    def alerts(self, alertname=ALERTNAME):
        """Active (not resolved) alerts of that name: /api/v2/alerts."""
        q = urllib.parse.urlencode({"filter": 'alertname="%s"' % alertname})
        return http_json(self.url + "/api/v2/alerts?" + q)

    def metric(self, name, labels=None):
        return harness.metric_value(http_text(self.url + "/metrics"), name, labels) or 0.0

    def routes_test(self, labels):
        """amtool config routes test: the receivers the shipped route picks."""
        amtool = shutil.which("amtool")
        if not amtool:
            return None
        args = [amtool, "config", "routes", "test", "--config.file=" + self.config_path]
        args += ["%s=%s" % (k, v) for k, v in sorted(labels.items())]
        r = subprocess.run(args, capture_output=True, text=True, timeout=30)
        return r.stdout.strip() if r.returncode == 0 else "error: " + (r.stdout + r.stderr).strip()


# ---------------------------------------------------------------- the sync job

class SyncJob:
    """The settings sync job as Prometheus sees it: one series of the error
    counter on the exporter, per scenario (label `pod`). fail() makes it
    climb (one error every `period` seconds), heal() stops it."""

    def __init__(self, exporter, labels, period=0.5):
        self.exporter = exporter
        self.labels = dict(labels)
        self.period = period
        self._stop = threading.Event()
        self._thread = None
        self.failing_since = None
        self.healed_at = None
        exporter.set(METRIC, 0, self.labels, kind="counter",
                     help="Settings sync runs that failed (stand-in for the sync job)")

    def value(self):
        return self.exporter.get(METRIC, self.labels)

    def fail(self):
        if self._thread is not None:
            return
        self._stop.clear()
        self.failing_since = time.time()

        def climb():
            while not self._stop.wait(self.period):
                self.exporter.inc(METRIC, 1, self.labels)
        self.exporter.inc(METRIC, 1, self.labels)
        self._thread = threading.Thread(target=climb, name="sync-job-errors", daemon=True)
        self._thread.start()

    def heal(self):
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._thread = None
        self.healed_at = time.time()


# ---------------------------------------------------------------- recoveryd

class ChainRecoveryd(Recoveryd):
    """The harness's Recoveryd on a fixed loopback port (the one the
    Alertmanager route was rewritten to)."""

    def __init__(self, tmpdir, port, **kw):
        self.fixed_port = port
        super().__init__(tmpdir, start=False, **kw)

    def base_args(self, listen=True, state=True):
        args = super().base_args(listen=False, state=state)
        if listen:
            args = ["--listen", "127.0.0.1:%d" % self.fixed_port] + args
        return args

    def ts_of(self, msg, **fields):
        """Wall-clock time (epoch seconds) of the first log line msg with fields."""
        for r in self.log_records():
            if r.get("msg") == msg and all(r.get(k) == v for k, v in fields.items()):
                return parse_ts(r.get("ts"))
        return None


def write_config_lua(path, settings, overrides=None):
    """The daemon's config: playbook_settings point the shipped playbook at
    the fakes; playbook_overrides (optional) scale its limits (backoff)."""
    with open(path, "w") as f:
        f.write("-- written by tests/e2e: the settings-sync-recovery playbook pointed at the fakes\n")
        f.write("return {\n  playbook_settings = {\n    [%s] = %s,\n  },\n" % (lua_value(PLAYBOOK), lua_value(settings)))
        if overrides:
            f.write("  playbook_overrides = {\n    [%s] = %s,\n  },\n" % (lua_value(PLAYBOOK), lua_value(overrides)))
        f.write("}\n")
    return path


# ---------------------------------------------------------------- timeline

def parse_ts(text):
    """RFC 3339 -> epoch seconds (None when empty or Go's zero time)."""
    if not text or text.startswith("0001-01-01"):
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if not m:
        return None
    base = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    frac = float(m.group(2) or 0)
    tz = m.group(3)
    off = 0
    if tz != "Z":
        off = (int(tz[1:3]) * 60 + int(tz[4:6])) * 60 * (1 if tz[0] == "+" else -1)
    return base.replace(tzinfo=datetime.timezone.utc).timestamp() + frac - off


def fmt_wall(t):
    d = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return d.strftime("%H:%M:%S.") + "%03d" % (d.microsecond // 1000)


class Timeline:
    def __init__(self):
        self._lock = threading.Lock()
        self.events = []  # (t, label, detail)

    def add(self, label, t=None, detail=""):
        with self._lock:
            self.events.append((time.time() if t is None else t, label, detail))

    def first(self, label):
        with self._lock:
            for t, l, _ in self.events:
                if l == label:
                    return t
        return None

    def has(self, label):
        return self.first(label) is not None

    def render(self, title):
        with self._lock:
            evs = sorted(self.events, key=lambda e: e[0])
        if not evs:
            return title + ": (no events)\n"
        t0 = evs[0][0]
        day = datetime.datetime.fromtimestamp(t0, datetime.timezone.utc).strftime("%Y-%m-%d")
        lines = ["%s (UTC, %s; +seconds from the first event)" % (title, day)]
        for t, label, detail in evs:
            lines.append("  %s  %+7.2fs  %s%s" % (fmt_wall(t), t - t0, label, ("  [" + detail + "]") if detail else ""))
        return "\n".join(lines) + "\n"


class ChainWatcher:
    """Polls Prometheus, Alertmanager and recoveryd every `interval` seconds
    and records in `seen` (a Timeline) when it first saw the alert move along
    the chain. The tests wait on these; the printed timeline takes the exact
    times from the systems' own records instead (see chain_events)."""

    def __init__(self, prom, am, daemon, match_labels, interval=0.1):
        self.seen = Timeline()
        self.prom, self.am, self.d = prom, am, daemon
        self.match = dict(match_labels)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = None
        self.prom_state = None
        self.am_seen = None
        self.am_receivers = set()
        self.webhook_posts = []     # (t, code, count) of /webhook answers seen through the metric
        self._last = {}
        self.errors = []

    def _mine(self, labels):
        return all(labels.get(k) == v for k, v in self.match.items() if k in labels)

    def start(self):
        self._thread = threading.Thread(target=self._run, name="chain-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as e:  # keep watching; keep the last errors for the failure message
                self.errors = (self.errors + [repr(e)])[-5:]
            self._stop.wait(self.interval)

    def poll(self):
        seen = self.seen
        now = time.time()
        # Prometheus: pending -> firing -> gone
        mine = [a for a in self.prom.alerts() if self._mine(a["labels"])]
        state = mine[0]["state"] if mine else None
        if state != self.prom_state:
            if state == "pending" and not seen.has("prometheus pending"):
                seen.add("prometheus pending", now)
            elif state == "firing" and not seen.has("prometheus firing"):
                seen.add("prometheus firing", now)
            elif state is None and self.prom_state == "firing" and not seen.has("prometheus resolved"):
                seen.add("prometheus resolved", now)
            self.prom_state = state
        # Alertmanager: present (active) -> gone (resolved)
        now = time.time()
        am = [a for a in self.am.alerts() if self._mine(a.get("labels") or {})]
        if am:
            self.am_receivers |= {r.get("name") for r in am[0].get("receivers") or []}
            if self.am_seen is None:
                self.am_seen = now
                seen.add("alertmanager active", now)
        elif self.am_seen is not None and not seen.has("alertmanager resolved"):
            seen.add("alertmanager resolved", now)
        # recoveryd: alerts in accepted notifications, by status
        if self.d.port is not None and self.d.alive():
            now = time.time()
            text = http_text(self.d.url + "/metrics")
            for status in ("firing", "resolved"):
                v = harness.metric_value(text, "recoveryd_alerts_received_total", {"status": status}) or 0.0
                if v > self._last.get(status, 0.0):
                    # only a notification sent after Alertmanager saw our
                    # alert resolve can carry its resolve; under load the
                    # notification can reach recoveryd before this poll
                    # sees Alertmanager's side, so remember it a while
                    if status == "resolved" and not seen.has("recoveryd resolved"):
                        if seen.has("alertmanager resolved"):
                            seen.add("recoveryd resolved", now)
                        else:
                            self._early_resolved = now
                    self._last[status] = v
            early = getattr(self, "_early_resolved", None)
            if early is not None and seen.has("alertmanager resolved") and \
                    not seen.has("recoveryd resolved") and now - early < 10:
                seen.add("recoveryd resolved", early)
            for code in ("202", "401", "503", "400"):
                v = harness.metric_value(text, "recoveryd_webhook_requests_total",
                                         {"path": "/webhook", "code": code}) or 0.0
                key = "code" + code
                if v > self._last.get(key, 0.0):
                    self.webhook_posts.append((now, code, int(v)))
                    self._last[key] = v


# ---------------------------------------------------------------- exact times

_AM_LINE = re.compile(r'^ts=(\S+) ')
_AM_RECEIVED = re.compile(r'msg="Received alert" alert=(\w+)\[([0-9a-f]+)\]\[(active|resolved)\]')
_AM_FLUSH = re.compile(r'msg=flushing alerts="?\[(.*?)\]"?\s*$')
_AM_NOTIFY = re.compile(r'receiver=(\S+) integration=(\S+) msg="Notify success"')
_AM_ALERT = re.compile(r'(\w+)\[([0-9a-f]+)\]\[(active|resolved)\]')


def alertmanager_events(log_path, fingerprint, receivers, since=0.0):
    """From Alertmanager's debug log: when it first received our alert from
    Prometheus (active, then resolved), and when it first delivered a
    notification to a recoveryd receiver after flushing our alert as active,
    then as resolved. Returns {name: epoch seconds}."""
    short = fingerprint[:7]
    out = {}
    flushed = {}
    try:
        with open(log_path, errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return out
    for line in lines:
        m = _AM_LINE.match(line)
        if not m:
            continue
        t = parse_ts(m.group(1))
        if t is None or t < since:
            continue
        r = _AM_RECEIVED.search(line)
        if r and r.group(2) == short:
            out.setdefault("received " + r.group(3), t)
            continue
        fl = _AM_FLUSH.search(line)
        if fl:
            for _, fp, state in _AM_ALERT.findall(fl.group(1)):
                if fp == short:
                    flushed.setdefault(state, t)
            continue
        n = _AM_NOTIFY.search(line)
        if n and n.group(1) in receivers:
            for state in ("active", "resolved"):
                if state in flushed and "notified " + state not in out and t >= flushed[state]:
                    out["notified " + state] = t
    return out


def prometheus_events(prom, match_labels, window="15m"):
    """From Prometheus' own ALERTS series (raw samples, exact evaluation
    times): first pending sample, first firing sample, last firing sample.
    Returns {name: epoch seconds}."""
    sel = ",".join('%s="%s"' % (k, v) for k, v in sorted(match_labels.items()))
    doc = prom.query('ALERTS{alertname="%s",%s}[%s]' % (ALERTNAME, sel, window))
    out = {}
    for series in doc.get("data", {}).get("result", []):
        state = series["metric"].get("alertstate")
        ts = [float(t) for t, _ in series.get("values", [])]
        if ts:
            out["first " + state] = min(ts)
            out["last " + state] = max(ts)
    return out


def chain_events(timeline, prom, am, match_labels, fingerprint, receivers, eval_interval=1.0, since=0.0):
    """Add the exact Prometheus and Alertmanager times to the timeline."""
    pe = prometheus_events(prom, match_labels)
    if "first pending" in pe:
        timeline.add("Prometheus: rule pending", pe["first pending"], "first ALERTS{alertstate=\"pending\"} sample")
    if "first firing" in pe:
        timeline.add("Prometheus: rule firing", pe["first firing"], "first ALERTS{alertstate=\"firing\"} sample")
    ae = alertmanager_events(am.log_path, fingerprint, receivers, since=since)
    if "received active" in ae:
        timeline.add("Alertmanager: alert received from Prometheus", ae["received active"],
                     "fingerprint " + fingerprint)
    if "notified active" in ae:
        timeline.add("Alertmanager: notification sent to recoveryd", ae["notified active"], "Notify success")
    if "last firing" in pe and "received resolved" in ae:
        timeline.add("Prometheus: alert resolved", pe["last firing"] + eval_interval,
                     "evaluation after the last firing sample")
    if "received resolved" in ae:
        timeline.add("Alertmanager: resolved alert received from Prometheus", ae["received resolved"])
    if "notified resolved" in ae:
        timeline.add("Alertmanager: resolved notification sent to recoveryd", ae["notified resolved"],
                     "Notify success")
    return pe, ae

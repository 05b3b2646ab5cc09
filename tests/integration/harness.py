"""Integration-test harness: start the real recoveryd binary on a free loopback
port and talk HTTP to it. Python 3 standard library only.

Environment (set by ctest, see tests/CMakeLists.txt):
  RECOVERYD_BIN         path of the built binary (tests are skipped when unset)
  RECOVERYD_SOURCE_DIR  repository root (default: two levels above this file)
  RECOVERYD_KEEP_TMP=1  keep each test's temporary directory for inspection
  RECOVERYD_TEST_PG_URL a PostgreSQL role that may create databases: each daemon
                        journals to a fresh database of that server (pg.integration.*)
  RECOVERYD_TEST_PG_DIR the directory of scripts/pg.sh's cluster (datadir, port):
                        pg_superuser() reaches it as its superuser
"""

import http.client
import json
import os
import re
import secrets as _secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("RECOVERYD_SOURCE_DIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
FIXTURES_DIR = os.path.join(SOURCE_DIR, "tests", "fixtures")
FAKES_DIR = os.path.join(SOURCE_DIR, "tests", "fakes")
LUA_PATH = os.path.join(SOURCE_DIR, "lua")

if FAKES_DIR not in sys.path:
    sys.path.insert(0, FAKES_DIR)
from recorder import Recorder  # noqa: E402  (tests/fakes/recorder.py)

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "budget_exhausted", "paused"})
START_TIMEOUT = 10.0


def binary():
    """Path of the recoveryd binary, or None when RECOVERYD_BIN is unset."""
    b = os.environ.get("RECOVERYD_BIN")
    return b or None


def require_binary(testcase):
    b = binary()
    if not b:
        testcase.skipTest("RECOVERYD_BIN is not set (run through ctest)")
    if not os.access(b, os.X_OK):
        raise AssertionError("RECOVERYD_BIN=%r is not an executable file" % b)
    return b


# ---------------------------------------------------------------- fixtures

def fixture_bytes(name):
    with open(os.path.join(FIXTURES_DIR, name), "rb") as f:
        return f.read()


def fixture(name):
    return json.loads(fixture_bytes(name).decode("utf-8"))


FP_SINGLE = "38b819126bb9adce"   # firing-single.json / resolved.json
FP_CRITICAL = "fcc06a8620c88f68"  # firing-critical.json
FP_GROUPED = ["ac763dc0c7007516", "678b6cee1d35cc9f", "e82159be3b9c7d44"]
FP_TRUNCATED = ["dd5aa200fbc9a131", "20f75d9f48b09cac"]


def variant(name, **labels):
    """A copy of fixture `name` whose first alert has the given labels changed
    and a different fingerprint (so it is a different alert)."""
    doc = fixture(name)
    a = doc["alerts"][0]
    a["labels"].update(labels)
    a["fingerprint"] = fingerprint(a["labels"])
    doc["commonLabels"] = dict(a["labels"])
    return doc


def fingerprint(labels):
    """Alertmanager's fingerprint: FNV-1a 64 over the sorted label set, each
    name and value followed by 0xFF, as 16 lowercase hex digits."""
    h = 0xcbf29ce484222325
    for k in sorted(labels):
        for s in (k, labels[k]):
            for b in s.encode("utf-8") + b"\xff":
                h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


# ---------------------------------------------------------------- Lua helpers

def lua_str(s):
    """A Python string as a Lua string literal (any bytes survive)."""
    out = ['"']
    for ch in s.encode("utf-8"):
        c = chr(ch)
        if c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif c == "\n":
            out.append("\\n")
        elif 32 <= ch < 127:
            out.append(c)
        else:
            out.append("\\%03d" % ch)
    out.append('"')
    return "".join(out)


_LUA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LUA_KEYWORDS = {"and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto",
                 "if", "in", "local", "nil", "not", "or", "repeat", "return", "then", "true",
                 "until", "while"}


def lua_value(v):
    """A Python value (None, bool, int, float, str, list, tuple, dict) as a Lua
    constructor expression."""
    if v is None:
        return "nil"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return lua_str(v)
    if isinstance(v, (list, tuple)):
        return "{" + ", ".join(lua_value(x) for x in v) + "}"
    if isinstance(v, dict):
        parts = []
        for k, x in v.items():
            if isinstance(k, str) and _LUA_NAME.match(k) and k not in _LUA_KEYWORDS:
                parts.append("%s = %s" % (k, lua_value(x)))
            else:
                parts.append("[%s] = %s" % (lua_value(k), lua_value(x)))
        return "{" + ", ".join(parts) + "}"
    raise TypeError("no Lua form for %r" % (v,))


def playbook(name, run, verify="return true", match=None, fake=None, description=None,
             retries=0, backoff=None, timeout=5, cooldown=60, budget=None, idempotent=None,
             escalate=None, prelude=""):
    """Lua source of a playbook.

    run / verify: Lua statements forming the body of function(ctx) ... end.
    fake: a Recorder or base URL; available to the bodies as the local FAKE.
    The prelude also defines must(v, err) = v or error(err).
    Numbers may be fractional (seconds)."""
    fields = {"name": name,
              "description": description or ("integration test playbook " + name),
              "match": list(match or []),
              "retries": retries,
              "backoff": backoff or {"initial": 0.1, "factor": 2, "max": 1},
              "timeout": timeout,
              "cooldown": cooldown,
              "budget": budget or {"runs": 100, "per": 60}}
    if idempotent is not None:
        fields["idempotent"] = idempotent
    if escalate is not None:
        fields["escalate"] = escalate
    fake_url = fake.url if hasattr(fake, "url") else fake
    lines = []
    if fake_url:
        lines.append("local FAKE = %s" % lua_str(fake_url))
    lines.append("local function must(v, err) if v == nil then error(tostring(err), 2) end return v end")
    if prelude:
        lines.append(prelude)
    lines.append("return {")
    for k, v in fields.items():
        lines.append("  %s = %s," % (k, lua_value(v)))
    lines.append("  run = function(ctx)\n%s\n  end," % _indent(run))
    lines.append("  verify = function(ctx)\n%s\n  end," % _indent(verify))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _indent(body, n=4):
    return "\n".join((" " * n + ln) if ln.strip() else ln for ln in body.strip("\n").splitlines())


# ---------------------------------------------------------------- metrics

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?\s*$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _unescape_label(v):
    return re.sub(r'\\(.)', lambda m: {"n": "\n", "\\": "\\", '"': '"'}.get(m.group(1), "\\" + m.group(1)), v)


def parse_metrics(text):
    """Prometheus text format 0.0.4 -> list of (name, {labels}, float)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError("unparsable metrics line: %r" % line)
        name, _, lbl, val = m.group(1), m.group(2), m.group(3), m.group(4)
        labels = {}
        if lbl:
            pos = 0
            while pos < len(lbl):
                lm = _LABEL.match(lbl, pos)
                if not lm:
                    raise ValueError("bad labels in line: %r" % line)
                labels[lm.group(1)] = _unescape_label(lm.group(2))
                pos = lm.end()
        out.append((name, labels, float(val)))
    return out


def metric_value(text, name, labels=None):
    """Sum of the samples called name whose labels include every pair of
    labels; None when there is no such sample."""
    labels = labels or {}
    total = None
    for n, ls, v in parse_metrics(text):
        if n != name:
            continue
        if all(ls.get(k) == str(val) for k, val in labels.items()):
            total = (total or 0.0) + v
    return total


# ---------------------------------------------------------------- job record helpers

def flat_strings(obj):
    """Every string/number found anywhere inside obj, as strings."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append(str(k))
            out.extend(flat_strings(v))
    elif isinstance(obj, list):
        for v in obj:
            out.extend(flat_strings(v))
    elif obj is not None and not isinstance(obj, bool):
        out.append(str(obj))
    return out


def find_actions(record, method=None, url_contains=None, planned=None):
    """Actions of a job record that mention the HTTP method (as a value) and
    a URL containing url_contains (anywhere in the action's values)."""
    found = []
    for a in record.get("actions") or []:
        vals = flat_strings(a)
        if method is not None and not any(v.upper() == method.upper() for v in vals):
            continue
        if url_contains is not None and not any(url_contains in v for v in vals):
            continue
        if planned is not None and bool(a.get("planned")) != planned:
            continue
        found.append(a)
    return found


# ---------------------------------------------------------------- the daemon

class StartError(AssertionError):
    pass


class Recoveryd:
    """One recoveryd process plus its temporary files.

    tmpdir: a directory owned by the test. playbooks: {name: lua source},
    written to tmpdir/playbooks/<name>.lua. tokens: None = generate both,
    dict {"webhook": .., "operator": ..} = use these (a missing or None entry
    means: no such flag), False = pass no token flags at all."""

    def __init__(self, tmpdir, playbooks=None, extra_args=(), tokens=None, secrets=None,
                 start=True, env=None, journal=None, replica_id=None):
        """journal: the --state to use as it is (a PostgreSQL URL that other
        daemons share, or a SQLite path) instead of a journal of its own.
        replica_id: passed as --replica-id (shared mode)."""
        self.bin = binary()
        if not self.bin:
            raise unittest.SkipTest("RECOVERYD_BIN is not set (run through ctest)")
        self.tmpdir = tmpdir
        self.playbooks_dir = os.path.join(tmpdir, "playbooks")
        self.secrets_dir = os.path.join(tmpdir, "secrets")
        self.journal = os.path.join(tmpdir, "journal.db")
        # RECOVERYD_TEST_PG_URL (a role that may create databases): each
        # daemon journals to a fresh PostgreSQL database instead.
        pg = os.environ.get("RECOVERYD_TEST_PG_URL")
        if journal is not None:
            self.journal = journal
        elif pg:
            self.journal = _pg_database(pg)
        self.replica_id = replica_id
        self.stderr_path = os.path.join(tmpdir, "stderr.log")
        self.stdout_path = os.path.join(tmpdir, "stdout.log")
        self.extra_args = list(extra_args)
        if replica_id is not None:
            self.extra_args = ["--replica-id", replica_id] + self.extra_args
        self.env = env
        os.makedirs(self.playbooks_dir, exist_ok=True)
        os.makedirs(self.secrets_dir, exist_ok=True)
        for name, src in (playbooks or {}).items():
            self.write_playbook(name, src)
        for name, value in (secrets or {}).items():
            self.write_secret(name, value)

        if tokens is False:
            self.tokens = {}
        elif tokens is None:
            self.tokens = {"webhook": _secrets.token_urlsafe(32), "operator": _secrets.token_urlsafe(32)}
        else:
            self.tokens = {k: v for k, v in tokens.items() if v is not None}
        self.token_files = {}
        self.principal_tokens = {}
        self.tokens_file = None
        for kind, value in self.tokens.items():
            path = os.path.join(tmpdir, "%s.token" % kind)
            with open(path, "w") as f:
                f.write(value + "\n")
            os.chmod(path, 0o600)
            self.token_files[kind] = path

        self.proc = None
        self._stderr_reader = None
        self.port = None
        self.generation = 0
        self._lines = []          # (generation, raw line) of stderr, all runs
        self._lines_lock = threading.Lock()
        self._listening = threading.Event()
        self._threads = []
        if start:
            self.start()

    def set_principals(self, principals):
        """Write a tokens file of named principals and use it (from the next
        start or SIGHUP). principals: {name: (role, token[, "pb1,pb2"])}.
        The file holds each token's SHA-256, never the token; requests name
        the principal (token="alice")."""
        import hashlib
        path = os.path.join(self.tmpdir, "tokens")
        lines = ["# name role sha256(token) [playbooks]"]
        for name, spec in principals.items():
            role, tok = spec[0], spec[1]
            scope = (" " + spec[2]) if len(spec) > 2 and spec[2] else ""
            lines.append("%s %s %s%s" % (name, role, hashlib.sha256(tok.encode()).hexdigest(), scope))
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        self.tokens_file = path
        self.principal_tokens = {name: spec[1] for name, spec in principals.items()}

    # -- files -----------------------------------------------------------
    def write_playbook(self, name, src):
        path = os.path.join(self.playbooks_dir, name + ".lua")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(src)
        os.replace(tmp, path)  # atomic: a reload never sees half a file
        return path

    def remove_playbook(self, name):
        os.unlink(os.path.join(self.playbooks_dir, name + ".lua"))

    def write_secret(self, name, value):
        path = os.path.join(self.secrets_dir, name)
        with open(path, "w") as f:
            f.write(value)
        os.chmod(path, 0o600)
        return path

    # -- command line ----------------------------------------------------
    def base_args(self, listen=True, state=True):
        """Flags shared by the daemon, --check-config and `run`."""
        args = []
        if listen:
            args += ["--listen", "127.0.0.1:0"]
        args += ["--playbooks", self.playbooks_dir, "--lua-path", LUA_PATH]
        if state:
            args += ["--state", self.journal]
        if "webhook" in self.token_files:
            args += ["--webhook-token-file", self.token_files["webhook"]]
        if "operator" in self.token_files:
            args += ["--operator-token-file", self.token_files["operator"]]
        if self.tokens_file:
            args += ["--tokens-file", self.tokens_file]
        args += ["--secrets-dir", self.secrets_dir]
        return args

    def argv(self):
        args = [self.bin] + self.base_args()
        if _is_pg_url(self.journal) and "--replica-id" not in self.extra_args:
            # One name across restarts: a restarted replica takes back at
            # once what its previous life held.
            args += ["--replica-id", "t%d-%s" % (os.getpid(), os.path.basename(self.tmpdir)[-12:])]
        return args + self.extra_args

    # -- process ---------------------------------------------------------
    def start(self, timeout=START_TIMEOUT):
        """Start the daemon and wait for its "listening" log line.

        Call it from the thread that outlives the daemon (the test's own):
        the child gets SIGKILL when the thread that started it ends
        (PR_SET_PDEATHSIG is per thread)."""
        self.spawn()
        return self.wait_listening(timeout)

    def spawn(self):
        """Start the process without waiting for it (see start)."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("recoveryd already running")
        self.generation += 1
        self._listening.clear()
        self.port = None
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, cwd=self.tmpdir,
                                     preexec_fn=_die_with_parent)
        gen = self.generation
        t1 = threading.Thread(target=self._read_stderr, args=(self.proc, gen), daemon=True)
        t2 = threading.Thread(target=self._read_stdout, args=(self.proc,), daemon=True)
        t1.start()
        t2.start()
        self._threads += [t1, t2]
        self._stderr_reader = t1
        return self

    def wait_listening(self, timeout=START_TIMEOUT):
        """Wait for the "listening" line of the process spawn() started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._listening.wait(0.05):
                return self
            if self.proc.poll() is not None:
                # let the reader drain what is left
                self._stderr_reader.join(timeout=1)
                raise StartError("recoveryd exited with %s before listening\n%s"
                                 % (self.proc.returncode, self.log_tail()))
        self._force_kill()
        raise StartError("recoveryd did not log \"listening\" within %.0fs\n%s" % (timeout, self.log_tail()))

    def _read_stderr(self, proc, gen):
        with open(self.stderr_path, "ab") as logf:
            logf.write(("--- recoveryd start #%d ---\n" % gen).encode())
            logf.flush()
            for raw in iter(proc.stderr.readline, b""):
                logf.write(raw)
                logf.flush()
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                with self._lines_lock:
                    self._lines.append((gen, line))
                if not self._listening.is_set():
                    port = _listening_port(line)
                    if port is not None and gen == self.generation:
                        self.port = port
                        self._listening.set()
        proc.stderr.close()

    def _read_stdout(self, proc):
        with open(self.stdout_path, "ab") as f:
            for raw in iter(proc.stdout.readline, b""):
                f.write(raw)
                f.flush()
        proc.stdout.close()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid

    def kill(self, sig=signal.SIGKILL):
        """Send sig to the daemon."""
        if self.alive():
            self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """Wait for the process to end; return its exit status, or None on timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def _force_kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def stop(self, grace=10.0):
        """SIGTERM, wait up to grace seconds, then SIGKILL. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait_exit(grace) is None:
                self._force_kill()
        for t in self._threads:
            t.join(timeout=2)
        self._threads = []
        return self.proc.returncode

    def restart(self, timeout=START_TIMEOUT):
        """Stop (if still running) and start again on the same journal."""
        if self.alive():
            self.stop()
        else:
            for t in self._threads:
                t.join(timeout=2)
            self._threads = []
        return self.start(timeout)

    # -- logs ------------------------------------------------------------
    def log_lines(self, all_runs=True):
        with self._lines_lock:
            return [l for g, l in self._lines if all_runs or g == self.generation]

    def log_records(self, all_runs=True):
        """stderr lines that parse as JSON objects."""
        out = []
        for l in self.log_lines(all_runs):
            try:
                obj = json.loads(l)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def log_text(self):
        return "\n".join(self.log_lines())

    def log_tail(self, n=60):
        lines = self.log_lines()
        return "---- recoveryd stderr (last %d of %d lines) ----\n%s\n----" % (
            min(n, len(lines)), len(lines), "\n".join(lines[-n:]))

    def wait_log(self, predicate, timeout=10.0):
        """Wait until predicate(json_record) holds for some log record; return it."""
        deadline = time.monotonic() + timeout
        while True:
            for r in self.log_records():
                if predicate(r):
                    return r
            if time.monotonic() > deadline:
                raise AssertionError("no matching log line within %.0fs\n%s" % (timeout, self.log_tail()))
            time.sleep(0.05)

    def sanitizer_reports(self):
        """ASan/LSan/UBSan reports in the daemon's stderr, all runs."""
        try:
            with open(self.stderr_path, errors="replace") as f:
                text = f.read()
        except OSError:
            return []
        out = []
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if ("ERROR: AddressSanitizer" in line or "ERROR: LeakSanitizer" in line
                    or "runtime error:" in line):
                out.append("\n".join(lines[i:i + 25]))
        return out

    # -- HTTP ------------------------------------------------------------
    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def _auth(self, token):
        if token is None:
            return None
        if token in ("webhook", "operator"):
            return self.tokens.get(token)
        return self.principal_tokens.get(token, token)

    def request(self, method, path, body=None, token="operator", content_type="application/json",
                headers=None, timeout=30.0):
        """One HTTP request; returns (status, headers, json-or-text).
        Connection errors propagate (ConnectionRefusedError etc.)."""
        if self.port is None:
            raise RuntimeError("recoveryd is not listening")
        hdrs = {"User-Agent": "Alertmanager/0.25.0"}
        data = None
        if body is not None:
            if isinstance(body, (dict, list)):
                data = json.dumps(body).encode("utf-8")
            elif isinstance(body, str):
                data = body.encode("utf-8")
            else:
                data = bytes(body)
            if content_type is not None:
                hdrs["Content-Type"] = content_type
        elif method in ("POST", "PUT"):
            data = b""
        tok = self._auth(token)
        if tok is not None:
            hdrs["Authorization"] = "Bearer " + tok
        if headers:
            hdrs.update(headers)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, resp.headers, _decode(raw)
        finally:
            conn.close()

    def api(self, method, path, body=None, token="operator"):
        """request() for helpers: a dead or unreachable daemon becomes an
        AssertionError that carries the exit status and the log."""
        try:
            return self.request(method, path, body, token)
        except (OSError, http.client.HTTPException) as e:
            state = "alive" if self.alive() else "exited with %s" % (self.proc.returncode if self.proc else None)
            raise AssertionError("%s %s failed: %r (recoveryd %s)\n%s"
                                 % (method, path, e, state, self.log_tail())) from e

    def post(self, path, body, token="webhook", content_type="application/json", headers=None, timeout=30.0):
        return self.request("POST", path, body, token, content_type, headers, timeout)

    def get(self, path, token="operator", headers=None, timeout=30.0):
        return self.request("GET", path, None, token, None, headers, timeout)

    def webhook(self, body, token="webhook"):
        """POST /webhook and insist on 202; returns the JSON answer."""
        if isinstance(body, str) and body.endswith(".json"):
            body = fixture_bytes(body)
        st, _, doc = self.post("/webhook", body, token=token)
        if st != 202:
            raise AssertionError("POST /webhook -> %s %r\n%s" % (st, doc, self.log_tail()))
        return doc

    def trigger(self, playbook_name, body, query="", token="operator", timeout=30.0):
        path = "/trigger/" + urllib.parse.quote(playbook_name, safe="")
        if query:
            path += "?" + query
        return self.post(path, body, token=token, timeout=timeout)

    def job(self, job_id):
        st, _, doc = self.api("GET", "/api/v1/jobs/" + urllib.parse.quote(job_id, safe=""))
        if st != 200:
            raise AssertionError("GET job %s -> %s %r\n%s" % (job_id, st, doc, self.log_tail()))
        return doc

    def jobs(self, **filters):
        q = urllib.parse.urlencode(filters)
        st, _, doc = self.api("GET", "/api/v1/jobs" + ("?" + q if q else ""))
        if st != 200:
            raise AssertionError("GET /api/v1/jobs -> %s %r" % (st, doc))
        if isinstance(doc, dict):
            doc = doc.get("jobs", doc)
        return doc

    def playbook_names(self):
        st, _, doc = self.api("GET", "/api/v1/playbooks")
        if st != 200:
            raise AssertionError("GET /api/v1/playbooks -> %s %r" % (st, doc))
        if isinstance(doc, dict):
            doc = doc.get("playbooks", [])
        return sorted(p["name"] for p in doc)

    def wait_job(self, job_id, states=TERMINAL_STATES, timeout=15.0, interval=0.05):
        """Poll the job until its state is in states; return the record."""
        if isinstance(states, str):
            states = {states}
        deadline = time.monotonic() + timeout
        rec = None
        while True:
            rec = self.job(job_id)
            if rec.get("state") in states:
                return rec
            if time.monotonic() > deadline:
                raise AssertionError("job %s not in %s within %.1fs; last record:\n%s\n%s"
                                     % (job_id, sorted(states), timeout,
                                        json.dumps(rec, indent=1)[:4000], self.log_tail()))
            time.sleep(interval)

    def metrics(self):
        st, _, text = self.api("GET", "/metrics", token=None)
        if st != 200:
            raise AssertionError("GET /metrics -> %s" % st)
        return text if isinstance(text, str) else json.dumps(text)

    metric_value = staticmethod(metric_value)

    def metric(self, name, labels=None, default=0.0):
        v = metric_value(self.metrics(), name, labels)
        return default if v is None else v

    def wait_metric(self, name, labels, predicate, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            v = self.metric(name, labels)
            if predicate(v):
                return v
            if time.monotonic() > deadline:
                raise AssertionError("%s%r = %r did not reach the expected value within %.0fs\n%s"
                                     % (name, labels, v, timeout, self.log_tail()))
            time.sleep(0.05)

    # -- foreground commands ---------------------------------------------
    def run_cli(self, args, timeout=60.0):
        """Run the binary in the foreground (check-config, run ...);
        returns CompletedProcess with text stdout/stderr."""
        return subprocess.run([self.bin] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, cwd=self.tmpdir, text=True, errors="replace")


def _pg_database(url):
    """A new, empty database on the server of url; its URL."""
    name = "it_" + _secrets.token_hex(6)
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", "CREATE DATABASE " + name],
                   check=True, capture_output=True, timeout=30)
    base = url.rsplit("/", 1)[0]
    query = ""
    if "?" in url.rsplit("/", 1)[1]:
        query = "?" + url.split("?", 1)[1]
    return base + "/" + name + query


def _is_pg_url(s):
    return s.startswith("postgres://") or s.startswith("postgresql://")


def pg_mode():
    return bool(os.environ.get("RECOVERYD_TEST_PG_URL"))


def create_pg_database():
    """A new, empty database on the server of RECOVERYD_TEST_PG_URL, made by
    that role; its URL. For daemons that share one journal (shared mode):
    pass it to each as journal=. Skips the test outside PostgreSQL mode."""
    url = os.environ.get("RECOVERYD_TEST_PG_URL")
    if not url:
        raise unittest.SkipTest("RECOVERYD_TEST_PG_URL is not set: PostgreSQL only")
    return _pg_database(url)


def pg_url_parts(url):
    """(user, host:port, database, query) of a postgres:// URL."""
    split = urllib.parse.urlsplit(url)
    user, _, hostport = split.netloc.rpartition("@")
    return user, hostport, split.path.lstrip("/"), split.query


def pg_url_with_user(url, user):
    """url with its role replaced by user (no password: it comes from a
    password file, PGPASSFILE)."""
    split = urllib.parse.urlsplit(url)
    hostport = split.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((split.scheme, user + "@" + hostport, split.path, split.query, ""))


def pg_superuser_available():
    d = os.environ.get("RECOVERYD_TEST_PG_DIR")
    return bool(d) and os.path.isfile(os.path.join(d, "datadir")) and os.path.isfile(os.path.join(d, "port"))


def pg_superuser(sql, database="postgres", timeout=30):
    """Run sql with psql as the superuser of scripts/pg.sh's cluster (over
    its unix socket in the data directory, where `postgres` is trusted).
    Returns psql's unaligned, tuples-only output, stripped. Needs
    RECOVERYD_TEST_PG_DIR; raises SkipTest without it. Cluster-wide
    changes (roles, terminated backends) want RUN_SERIAL in ctest."""
    if not pg_superuser_available():
        raise unittest.SkipTest("RECOVERYD_TEST_PG_DIR (scripts/pg.sh's cluster) is not set")
    d = os.environ["RECOVERYD_TEST_PG_DIR"]
    with open(os.path.join(d, "datadir")) as f:
        datadir = f.read().strip()
    with open(os.path.join(d, "port")) as f:
        port = f.read().strip()
    r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", datadir, "-p", port,
                        "-U", "postgres", "-d", database, "-c", sql],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError("psql as superuser failed (%s): %s\n%s" % (r.returncode, sql, r.stderr))
    return r.stdout.strip()


def _die_with_parent():
    """In the child before exec: get SIGKILL when the test runner dies (a
    ctest timeout), so no daemon outlives the suite. Linux only; harmless
    elsewhere."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _listening_port(line):
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("msg") != "listening":
        return None
    addr = obj.get("addr")
    if isinstance(addr, str):
        m = re.search(r":(\d+)$", addr)
        if m and int(m.group(1)) > 0:
            return int(m.group(1))
    port = obj.get("port")
    if isinstance(port, int) and port > 0:
        return port
    if isinstance(port, str) and port.isdigit() and int(port) > 0:
        return int(port)
    return None


def _decode(raw):
    text = raw.decode("utf-8", errors="replace")
    if not text.strip():
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def start_all(daemons, timeout=START_TIMEOUT):
    """Start the daemons at the same time (all spawned, then each awaited),
    from the calling thread (see Recoveryd.start)."""
    for d in daemons:
        d.spawn()
    deadline = time.monotonic() + timeout
    for d in daemons:
        d.wait_listening(max(0.1, deadline - time.monotonic()))
    return daemons


# ---------------------------------------------------------------- test base

class RecoverydTestCase(unittest.TestCase):
    """Gives each test its own temporary directory, and cleans up every
    daemon and fake it started (daemons first, with a SIGTERM then SIGKILL)."""

    def setUp(self):
        require_binary(self)
        self.tmpdir = tempfile.mkdtemp(prefix="recoveryd-it-")
        if os.environ.get("RECOVERYD_KEEP_TMP") != "1":
            self.addCleanup(shutil.rmtree, self.tmpdir, ignore_errors=True)
        self._daemons = []
        self.addCleanup(self._stop_daemons)

    def _stop_daemons(self):
        reports = []
        for d in self._daemons:
            try:
                d.stop(grace=5)
            except Exception:  # cleanup must not mask the test's own failure
                pass
            reports += d.sanitizer_reports()
        # A sanitizer report of the daemon (a leak at exit, a use after free
        # that did not crash) fails the test that ran it.
        if reports:
            raise AssertionError("the daemon's sanitizer reported:\n" + "\n".join(reports)[:6000])

    def fake(self, **kw):
        rec = Recorder(**kw).start()
        self.addCleanup(rec.stop)
        return rec

    def daemon(self, playbooks=None, extra_args=(), tokens=None, secrets=None, start=True, subdir=None,
               journal=None, replica_id=None, env=None):
        d_dir = self.tmpdir if subdir is None else os.path.join(self.tmpdir, subdir)
        os.makedirs(d_dir, exist_ok=True)
        d = Recoveryd(d_dir, playbooks, extra_args, tokens, secrets, start=False, env=env, journal=journal,
                      replica_id=replica_id)
        self._daemons.append(d)
        if start:
            d.start()
        return d

    def replicas(self, n, playbooks=None, extra_args=(), ids=None, journal=None, tokens=None, env=None,
                 start=True):
        """n daemons in shared mode: ONE PostgreSQL database (a new one unless
        journal, a URL, is given) for all, each with its own --replica-id,
        port and directory (tmpdir/<replica id>), the same playbooks and the
        same tokens. ids: the replica ids (default: rep1..repN plus a suffix
        unique to this set, as application_name is cluster-wide). Each
        daemon's environment has RECOVERYD_REPLICA_ID=<its id> (for
        playbooks, with --env-allow RECOVERYD_REPLICA_ID). extra_args: a list
        for all, or a function (replica id, directory) -> list. start: the
        daemons are started together (concurrent schema set-up included).
        Skips the test outside PostgreSQL mode. Returns the list."""
        if journal is None:
            journal = create_pg_database()
        if ids is None:
            tag = _secrets.token_hex(3)
            ids = ["rep%d-%s" % (i + 1, tag) for i in range(n)]
        if len(ids) != n or len(set(ids)) != n:
            raise ValueError("need %d distinct replica ids, got %r" % (n, ids))
        if tokens is None:
            tokens = {"webhook": _secrets.token_urlsafe(32), "operator": _secrets.token_urlsafe(32)}
        out = []
        for rid in ids:
            d_dir = os.path.join(self.tmpdir, rid)
            args = extra_args(rid, d_dir) if callable(extra_args) else extra_args
            d_env = {"RECOVERYD_REPLICA_ID": rid}
            d_env.update(env or {})
            out.append(self.daemon(playbooks, extra_args=args, tokens=tokens, start=False, subdir=rid,
                                   journal=journal, replica_id=rid, env=d_env))
        if start:
            start_all(out)
        return out

    # assertions that show the daemon's log on failure
    def assertStatus(self, got, want, d=None, doc=None):
        if got != want:
            self.fail("HTTP status %s, want %s; body %r%s" % (got, want, doc,
                                                            ("\n" + d.log_tail()) if d else ""))

    def assertError(self, resp, status, code):
        st, _, doc = resp
        self.assertEqual(st, status, "body: %r" % (doc,))
        self.assertIsInstance(doc, dict, "error body must be JSON: %r" % (doc,))
        self.assertEqual(doc.get("error"), code, doc)
        self.assertIsInstance(doc.get("message"), str, doc)
        return doc

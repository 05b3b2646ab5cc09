#!/usr/bin/env python3
"""A loopback fake of the settings registry's health endpoint, for tests of
the settings-sync-recovery playbook. Python 3 standard library only.

    from settings_registry import SettingsRegistry
    reg = SettingsRegistry(token_file=path).start()   # 127.0.0.1, a free port
    reg.health_url                # http://127.0.0.1:PORT/api/settings/health
    reg.set_up(False)             # 503 {"status":"DOWN"} from now on
    reg.script([False, True])     # per request, consumed in order; the last one stays
    reg.requests(path="/api/settings/health")
    reg.stop()

Endpoints:
  GET /api/settings/health  200 {"status":"UP"} or 503 {"status":"DOWN"}
                            (Spring Boot actuator style; `status_code` may force
                            any other status, e.g. 500, with the DOWN body)
  anything else             404 {"status":404,"error":"Not Found"}
Auth: when token_file is set, `Authorization: Bearer <token>` must equal the
file's content (re-read on every request, white space trimmed), else 401
{"status":401,"error":"Unauthorized"}. A missing or empty file rejects every
request.

Command line (tests/fakes/fakeserver.py: --port, --host, the ready line, SIGTERM):
    python3 settings_registry.py --port N [--token-file F] [--down]
prints one JSON line per request after the ready line.
"""

import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler
import fakeserver

HEALTH_PATH = "/api/settings/health"


class Request:
    __slots__ = ("t", "method", "path", "query", "headers", "status")

    def __init__(self, t, method, path, query, headers):
        self.t, self.method, self.path, self.query, self.headers = t, method, path, query, headers
        self.status = None

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def as_dict(self):
        return {"t": self.t, "method": self.method, "path": self.path, "query": self.query, "status": self.status}

    def __repr__(self):
        return "<%s %s -> %s>" % (self.method, self.path, self.status)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "settings-registry-fake/1"

    def log_message(self, fmt, *args):
        pass

    def _handle(self):
        fake = self.server.fake
        split = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        req = Request(time.time(), self.command, split.path, split.query, list(self.headers.items()))
        status, doc = fake._answer(req)
        req.status = status
        if fake.on_request:
            try:
                fake.on_request(req)
            except Exception:
                pass
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle


class SettingsRegistry(fakeserver.FakeServer):
    handler_class = _Handler
    thread_name = "settings-registry-fake"

    def __init__(self, port=0, host="127.0.0.1", token_file=None, up=True):
        self._fake_init(host, port)
        self._lock = threading.Lock()
        self._requests = []
        self._script = []
        self.token_file = token_file
        self.up = up
        self.status_code = None     # force this status (with the DOWN body) when set
        self.on_request = None      # callable(Request) after answering (tests, CLI)

    @property
    def health_url(self):
        return self.url + HEALTH_PATH

    # -- scripting
    def set_up(self, up=True, status_code=None):
        with self._lock:
            self.up = bool(up)
            self.status_code = status_code
            self._script = []

    def script(self, states):
        """Per health request: True (UP) / False (DOWN), consumed in order;
        the last one stays in effect."""
        with self._lock:
            self._script = [bool(s) for s in states]

    def requests(self, method=None, path=None):
        with self._lock:
            return [r for r in self._requests
                    if (method is None or r.method == method) and (path is None or r.path == path)]

    # -- answers
    def _token(self):
        try:
            with open(self.token_file) as f:
                return f.read().strip()
        except OSError:
            return ""

    def _answer(self, req):
        with self._lock:
            self._requests.append(req)
        if self.token_file is not None:
            want = self._token()
            if not want or req.header("Authorization") != "Bearer " + want:
                return 401, {"status": 401, "error": "Unauthorized"}
        if req.path != HEALTH_PATH:
            return 404, {"status": 404, "error": "Not Found", "path": req.path}
        if req.method not in ("GET", "HEAD"):
            return 405, {"status": 405, "error": "Method Not Allowed"}
        with self._lock:
            up = self.up
            if self._script:
                up = self._script[0]
                if len(self._script) > 1:
                    self._script.pop(0)
                else:
                    self.up = up
                    self._script = []
            forced = self.status_code
        if forced is not None:
            return forced, {"status": "UP" if up and forced < 300 else "DOWN"}
        if up:
            return 200, {"status": "UP"}
        return 503, {"status": "DOWN"}


def main(argv=None):
    ap = fakeserver.parser("settings registry health fake")
    ap.add_argument("--token-file", help="require Authorization: Bearer <the file's content>")
    ap.add_argument("--down", action="store_true", help="answer 503 DOWN")
    args = ap.parse_args(argv)
    fake = SettingsRegistry(port=args.port, host=args.host, token_file=args.token_file, up=not args.down)
    fake.on_request = fakeserver.json_printer()
    return fakeserver.serve(fake)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A loopback fake of Kong's Admin API health endpoints (and the Status API's
/status/ready). Python 3 standard library only.

    from kong_admin import KongAdmin
    kong = KongAdmin(token="s3cret").start()      # 127.0.0.1, a free port
    kong.set(reachable=False)                     # database down (still HTTP 200)
    kong.set(ready=False, ready_message="failed to connect to database")
    kong.script([{"reachable": False}, {"reachable": True}])  # per GET /status, last repeats
    ... kong.url ...
    kong.requests(path="/status")                 # recorded requests
    kong.stop()

Endpoints:
  GET /status        200 with the shape of Kong's /status (database.reachable,
                     memory, server, and configuration_hash when dbless=True);
                     or `status_code` if set (e.g. 500).
  GET /status/ready  200 {"message":"ready"} or 503 {"message": ready_message}.
  GET /              200 a small node-info document.
Auth: when `token` is set, Admin API paths need the header Kong-Admin-Token
with that value, else 401 {"message":"Invalid credentials. Token or User
credentials required"}. /status/ready belongs to the Status API, which has no
RBAC: it is open unless ready_requires_auth=True.
Anything else: 404 {"message":"Not found"}.

Command line (tests/fakes/fakeserver.py: --port, --host, the ready line, SIGTERM):
    python3 kong_admin.py --port N [--token T] [--dbless]
"""

import json
import threading
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler
import fakeserver

INVALID_CREDENTIALS = "Invalid credentials. Token or User credentials required"


class Request:
    __slots__ = ("t", "method", "path", "query", "headers")

    def __init__(self, t, method, path, query, headers):
        self.t, self.method, self.path, self.query, self.headers = t, method, path, query, headers

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def __repr__(self):
        return "<%s %s%s>" % (self.method, self.path, "?" + self.query if self.query else "")


def status_document(state):
    doc = {
        "database": {"reachable": bool(state["reachable"])},
        "memory": {
            "workers_lua_vms": [{"http_allocated_gc": "40.12 MiB", "pid": 1234}],
            "lua_shared_dicts": {"kong": {"allocated_slabs": "0.04 MiB", "capacity": "5.00 MiB"},
                                 "kong_db_cache": {"allocated_slabs": "0.80 MiB", "capacity": "128.00 MiB"}},
        },
        "server": {"connections_active": 1, "connections_reading": 0, "connections_writing": 1,
                   "connections_waiting": 0, "connections_accepted": 10, "connections_handled": 10,
                   "total_requests": state["total_requests"]},
    }
    if state["dbless"]:
        doc["configuration_hash"] = state["configuration_hash"]
    return doc


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kong/3.4.2"

    def log_message(self, fmt, *args):
        pass

    def _send(self, status, doc):
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Kong-Admin-Latency", "1")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _handle(self):
        fake = self.server.fake
        split = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        req = Request(time.time(), self.command, split.path, split.query, list(self.headers.items()))
        status, doc = fake._answer(req)
        self._send(status, doc)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class KongAdmin(fakeserver.FakeServer):
    handler_class = _Handler
    thread_name = "kong-admin-fake"

    def __init__(self, port=0, token=None, dbless=False, host="127.0.0.1", ready_requires_auth=False):
        self._fake_init(host, port)
        self._lock = threading.Lock()
        self._requests = []
        self._script = []
        self.token = token
        self.ready_requires_auth = ready_requires_auth
        self.state = {"reachable": True, "ready": True, "ready_message": "ready",
                      "status_code": 200, "dbless": dbless,
                      "configuration_hash": "a9a166c59873245db8f1a747ba9a80a7", "total_requests": 0}

    # -- scripting
    def set(self, **kw):
        """Change the state: reachable, ready, ready_message, status_code,
        dbless, configuration_hash, token."""
        with self._lock:
            if "token" in kw:
                self.token = kw.pop("token")
            unknown = set(kw) - set(self.state)
            if unknown:
                raise KeyError("unknown state keys %s" % sorted(unknown))
            self.state.update(kw)
            if "ready" in kw and "ready_message" not in kw:
                self.state["ready_message"] = "ready" if kw["ready"] else "failed to connect to database"

    def script(self, states):
        """Per-request state overrides for GET /status and /status/ready,
        consumed in order; the last one stays in effect."""
        with self._lock:
            self._script = [dict(s) for s in states]

    def requests(self, method=None, path=None):
        with self._lock:
            return [r for r in self._requests
                    if (method is None or r.method == method) and (path is None or r.path == path)]

    # -- answers
    def _answer(self, req):
        with self._lock:
            self._requests.append(req)
            state = dict(self.state)
            if self._script and req.path in ("/status", "/status/ready"):
                state.update(self._script[0])
                if len(self._script) > 1:
                    self._script.pop(0)
                else:
                    self.state.update(self._script[0])
                    self._script = []
            self.state["total_requests"] += 1
            state["total_requests"] = self.state["total_requests"]
            token = self.token
        admin_path = req.path != "/status/ready" or self.ready_requires_auth
        if token is not None and admin_path and req.header("Kong-Admin-Token") != token:
            return 401, {"message": INVALID_CREDENTIALS}
        if req.method not in ("GET", "HEAD"):
            return 405, {"message": "Method not allowed"}
        if req.path == "/status":
            if state["status_code"] != 200:
                return state["status_code"], {"message": "An unexpected error occurred"}
            return 200, status_document(state)
        if req.path == "/status/ready":
            if state["ready"]:
                return 200, {"message": "ready"}
            return 503, {"message": state["ready_message"] or "failed to connect to database"}
        if req.path == "/":
            return 200, {"version": "3.4.2", "hostname": "kong-fake", "tagline": "Welcome to kong",
                         "configuration": {"database": "off" if state["dbless"] else "postgres"}}
        return 404, {"message": "Not found"}


def main(argv=None):
    ap = fakeserver.parser("Kong Admin API health fake")
    ap.add_argument("--token", help="require this Kong-Admin-Token")
    ap.add_argument("--dbless", action="store_true", help="/status carries configuration_hash")
    args = ap.parse_args(argv)
    return fakeserver.serve(KongAdmin(port=args.port, host=args.host, token=args.token, dbless=args.dbless))


if __name__ == "__main__":
    sys.exit(main())

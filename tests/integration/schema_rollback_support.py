"""Support for test_playbook_schema_rollback.py: a fake Prometheus query API
that knows the fake registry's registration times, the shipped playbook, and a
config file with its settings (playbook_settings). Python 3 standard library
only."""

import json
import os
import re
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import FAKES_DIR, SOURCE_DIR
from playbook_support import shipped_playbook as _shipped, write_config

if FAKES_DIR not in sys.path:
    sys.path.insert(0, FAKES_DIR)

PLAYBOOK_FILE = os.path.join(SOURCE_DIR, "playbooks", "schema-rollback.lua")
ALERT_FIXTURE = os.path.join(SOURCE_DIR, "tests", "fixtures", "event-validation-spike.json")

CREATED_METRIC = "schema_registry_subject_version_created_timestamp_seconds"
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def shipped_playbook(fields=None):
    """The text of playbooks/schema-rollback.lua, optionally with top-level
    fields of the returned table replaced (`fields={"backoff": {...}}`, one
    line each, for speed). Settings are not edited in the file: tests pass
    them with config_file()."""
    return _shipped("schema-rollback", fields)


def config_file(path, **settings):
    """A recoveryd config file overriding the playbook's settings
    (playbook_settings = {["schema-rollback"] = {...}})."""
    return write_config(path, {"schema-rollback": settings})


class FakePrometheus:
    """GET /api/v1/query on 127.0.0.1.

    * queries on schema_registry_subject_version_created_timestamp_seconds
      answer the registration time the fake registry holds for the
      subject/version named in the query (empty when unknown, or when
      `created_known` is False);
    * every other query is the validation-error rate: `rates` is consumed in
      order (the last value repeats). A comparison `... > X` (the alert's own
      expression) answers a sample labelled `series_labels` only when the
      rate is above X; anything else answers the rate as one sample."""

    def __init__(self, registry=None, rates=(0.0,), series_labels=None):
        self.registry = registry
        self.rates = list(rates)
        self.series_labels = dict(series_labels or {"topic": "orders", "job": "event-validator"})
        self.created_known = True
        self.queries = []
        self.lock = threading.Lock()
        self._server = None
        self._thread = None

    def start(self):
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _PromHandler)
        self._server.daemon_threads = True
        self._server.prom = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        srv, self._server = self._server, None
        if srv:
            srv.shutdown()
            srv.server_close()
            self._thread.join(timeout=5)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    def rate_queries(self):
        with self.lock:
            return [q for q in self.queries if CREATED_METRIC not in q]

    def _next_rate(self):
        with self.lock:
            return self.rates.pop(0) if len(self.rates) > 1 else self.rates[0]

    def answer(self, query):
        with self.lock:
            self.queries.append(query)
        now = time.time()
        if CREATED_METRIC in query:
            labels = dict((k, v.replace('\\"', '"').replace("\\\\", "\\")) for k, v in _LABEL.findall(query))
            ts = None
            if self.created_known and self.registry is not None and "subject" in labels and "version" in labels:
                ts = self.registry.created(labels["subject"], int(labels["version"]))
            result = [] if ts is None else [{"metric": {"subject": labels["subject"], "version": labels["version"]},
                                             "value": [now, repr(float(ts))]}]
            return {"status": "success", "data": {"resultType": "vector", "result": result}}
        rate = self._next_rate()
        m = re.search(r">\s*([0-9.eE+-]+)\s*$", query)
        if m:
            result = [{"metric": dict(self.series_labels), "value": [now, repr(rate)]}] if rate > float(m.group(1)) else []
        else:
            result = [{"metric": {}, "value": [now, repr(rate)]}]
        return {"status": "success", "data": {"resultType": "vector", "result": result}}


class _PromHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # headers and body are separate writes: without this, Nagle + delayed ACK cost 40 ms a request
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        split = urllib.parse.urlsplit(self.path)
        if split.path != "/api/v1/query":
            status, doc = 404, {"status": "error", "errorType": "not_found", "error": "not found"}
        else:
            q = urllib.parse.parse_qs(split.query).get("query", [""])[0]
            status, doc = 200, self.server.prom.answer(q)
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

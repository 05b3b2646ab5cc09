#!/usr/bin/env python3
"""A loopback HTTP fake that records every request and answers as scripted.

It stands for "whatever remote service a playbook talks to" (a Kubernetes API,
Kong's Admin API, Prometheus, Slack, PagerDuty ...). Python 3 standard library
only.

Library use:

    from recorder import Recorder
    fake = Recorder()                 # 127.0.0.1, a free port
    fake.start()
    fake.set_responses("GET", "/health", [(503, {}, "down"), (200, {}, {"ok": True})])
    ... fake.url + "/restart" ...
    fake.wait_for(lambda reqs: [r for r in reqs if r.path == "/restart"], timeout=5)
    fake.stop()

Answers are scripted per (method, path prefix): a list of (status, headers, body)
or (status, headers, body, delay_seconds) consumed in order, the last one
repeating. The longest matching prefix wins; method "*" matches every method.
Unscripted requests get 200 {"ok":true}. body may be bytes, str, or any
JSON-serialisable value (sent as application/json unless headers say otherwise).

Command line (tests/fakes/fakeserver.py: --port, --host, the ready line, SIGTERM):
    python3 recorder.py --port N [--delay S]
prints one JSON line per request after the ready line.
"""

import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler
import fakeserver

DEFAULT_RESPONSE = (200, {"Content-Type": "application/json"}, b'{"ok":true}')
MAX_BODY = 64 * 1024 * 1024


class RecordedRequest:
    """One request as the fake saw it."""

    __slots__ = ("t", "method", "path", "query", "headers", "body", "client")

    def __init__(self, t, method, path, query, headers, body, client):
        self.t = t                # time.time() when the body had been read
        self.method = method      # "GET", "POST", ...
        self.path = path          # path without the query string
        self.query = query        # raw query string ("" when none)
        self.headers = headers    # list of (name, value) as sent
        self.body = body          # bytes
        self.client = client      # (host, port) of the peer

    def header(self, name, default=None):
        """Value of the first header called name (case-insensitive)."""
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return default

    @property
    def params(self):
        """Query string parsed into a dict of lists."""
        return urllib.parse.parse_qs(self.query, keep_blank_values=True)

    def json(self):
        """Body decoded as JSON (raises ValueError when it is not JSON)."""
        return json.loads(self.body.decode("utf-8"))

    def text(self):
        return self.body.decode("utf-8", errors="replace")

    def as_dict(self):
        return {
            "t": self.t,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": [[k, v] for k, v in self.headers],
            "body": self.text(),
        }

    def __repr__(self):
        body = self.body[:200]
        return "<%s %s%s t=%.3f body=%r>" % (self.method, self.path,
                                             "?" + self.query if self.query else "", self.t, body)


def _encode_body(headers, body):
    headers = dict(headers or {})
    if body is None:
        data = b""
    elif isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode("utf-8")
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "text/plain; charset=utf-8"
    else:
        data = json.dumps(body).encode("utf-8")
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
    return headers, data


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "recorder/1"

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            total = 0
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    break
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until the empty line
                    while True:
                        t = self.rfile.readline(65537)
                        if not t or t in (b"\r\n", b"\n"):
                            break
                    break
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)  # CRLF after the chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self):
        rec = self.server.fake
        split = urllib.parse.urlsplit(self.path)
        # "Expect: 100-continue" (libcurl sends it for big bodies) is
        # answered by BaseHTTPRequestHandler.handle_expect_100 already.
        try:
            body = self._read_body()
        except ValueError:
            self.send_error(413)
            return
        req = RecordedRequest(time.time(), self.command, split.path, split.query,
                              list(self.headers.items()), body, self.client_address)
        rec._record(req)
        status, headers, data, delay = rec._next_response(self.command, split.path)
        if delay:
            time.sleep(delay)
        self._reply(status, headers, data)

    def _reply(self, status, headers, data):
        """Send an answer: headers (a dict) but the framing ones, then data."""
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() in ("content-length", "connection"):
                continue
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class SinkHandler(_Handler):
    """The handler of a validating sink fake (Slack, PagerDuty, Grafana):
    each request becomes a request_class(t, method, path, query, headers,
    body, client), which the fake's _answer judges, returning (status,
    headers, answer[, delay]); it is recorded with its answer before the
    answer is sent."""

    request_class = None

    def _encode(self, req, status, headers, answer):
        """(headers, bytes) to send; keeps the answer on req. Answers are
        bytes here; a fake that answers with JSON values overrides it."""
        req.status, req.answer_headers, req.answer = status, headers, answer
        return headers, answer

    def _handle(self):
        fake = self.server.fake
        path, _, query = self.path.partition("?")
        try:
            body = self._read_body()
        except ValueError:
            self.send_error(413)
            return
        req = self.request_class(time.time(), self.command, path, query, list(self.headers.items()), body,
                                 self.client_address)
        out = fake._answer(req)
        status, headers, answer = out[:3]
        headers, data = self._encode(req, status, headers, answer)
        fake._record(req)
        if len(out) > 3 and out[3]:
            time.sleep(out[3])
        self._reply(status, headers, data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class Recorder(fakeserver.FakeServer):
    """Recording, scriptable HTTP fake on 127.0.0.1."""

    handler_class = _Handler
    thread_name = "recorder"

    def __init__(self, port=0, delay=0.0, host="127.0.0.1"):
        self._fake_init(host, port)
        self._delay = float(delay or 0.0)
        self._lock = threading.RLock()  # re-entrant: predicates may call requests()
        self._cond = threading.Condition(self._lock)
        self._requests = []
        self._scripts = {}  # (METHOD or "*", prefix) -> [responses], consumed in order

    # -- scripting -----------------------------------------------------
    def set_responses(self, method, path, responses):
        """Script the answers for method (or "*") and every path starting
        with path. responses: non-empty list of (status, headers, body) or
        (status, headers, body, delay); consumed in order, the last repeats."""
        if not responses:
            raise ValueError("responses must not be empty")
        norm = []
        for r in responses:
            if len(r) == 3:
                status, headers, body = r
                delay = None
            elif len(r) == 4:
                status, headers, body, delay = r
            else:
                raise ValueError("response must be (status, headers, body[, delay])")
            headers, data = _encode_body(headers, body)
            norm.append((int(status), headers, data, delay))
        with self._lock:
            self._scripts[((method or "*").upper(), path)] = norm

    def set_delay(self, seconds):
        """Delay applied before every answer that has no delay of its own."""
        with self._lock:
            self._delay = float(seconds or 0.0)

    def _next_response(self, method, path):
        with self._lock:
            best = None
            for (m, prefix), lst in self._scripts.items():
                if m not in ("*", method) or not path.startswith(prefix):
                    continue
                # longest prefix wins; an exact method beats "*"
                rank = (len(prefix), m != "*")
                if best is None or rank > best[0]:
                    best = (rank, lst)
            if best is None:
                st, h, d = DEFAULT_RESPONSE
                return st, dict(h), d, self._delay
            lst = best[1]
            resp = lst.pop(0) if len(lst) > 1 else lst[0]
            status, headers, data, delay = resp
            return status, dict(headers), data, self._delay if delay is None else delay

    # -- recording -----------------------------------------------------
    def _record(self, req):
        with self._cond:
            self._requests.append(req)
            self._cond.notify_all()

    def requests(self, method=None, path=None, prefix=None):
        """Snapshot of the recorded requests, oldest first, optionally
        filtered by method, exact path, or path prefix."""
        with self._lock:
            reqs = list(self._requests)
        return _filter(reqs, method, path, prefix)

    def count(self, method=None, path=None, prefix=None):
        return len(self.requests(method, path, prefix))

    def clear(self):
        with self._lock:
            self._requests.clear()

    def wait_count(self, n, method=None, path=None, prefix=None, timeout=5.0):
        """Wait until at least n matching requests arrived; return them."""
        def pred(reqs):
            got = _filter(reqs, method, path, prefix)
            return got if len(got) >= n else None
        return self.wait_for(pred, timeout)


def _filter(reqs, method=None, path=None, prefix=None):
    return [r for r in reqs
            if (method is None or r.method == method.upper())
            and (path is None or r.path == path)
            and (prefix is None or r.path.startswith(prefix))]


def main(argv=None):
    ap = fakeserver.parser("recording HTTP fake")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = ap.parse_args(argv)
    rec = Recorder(port=args.port, host=args.host, delay=args.delay)
    show = fakeserver.json_printer()
    record = rec._record

    def record_and_print(req):
        record(req)
        show(req)

    rec._record = record_and_print
    return fakeserver.serve(rec)


if __name__ == "__main__":
    sys.exit(main())

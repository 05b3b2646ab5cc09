#!/usr/bin/env python3
"""A loopback fake of Grafana's annotations HTTP API (the legacy /api one).

  POST  /api/annotations        create: {"time", "timeEnd", "tags", "text",
                                "dashboardUID", "panelId", ...} -> 200
                                {"id": N, "message": "Annotation added"}
  PATCH /api/annotations/{id}   update text, tags, time, timeEnd -> 200
                                {"message": "Annotation patched"}
  GET   /api/annotations        what it holds, newest first, as Grafana lists
                                them (from, to, tags (AND), limit)

Answers and error shapes are Grafana's (pkg/api/annotations.go):

  401 {"message": "Unauthorized"}               no `Authorization: Bearer <token>`,
                                                or another token
  400 {"message": "bad request data"}           not JSON, a field of the wrong type
  400 {"message": "Failed to save annotation"}  POST without text
  400 {"message": "annotationId is invalid"}    PATCH /api/annotations/abc
  404 {"message": "Annotation not found"}       PATCH of an unknown id
  404 {"message": "Not found"}                  any other path

It is stricter than Grafana where recoveryd could get it silently wrong:
POST and PATCH need `Content-Type: application/json`, `time` and `timeEnd`
must be integers in milliseconds (a value in seconds is refused),
`timeEnd` must not be before `time`, tags must be a list of strings, and
fields the endpoint does not take are refused (PATCH takes only text,
tags, time, timeEnd). Each refusal is a 400 `bad request data` whose
reasons are kept in the request's `details`.

Forced answers come before everything but the route (GET is never forced,
so tests can read while writes fail): fail(times, status) -> 500
{"message": "Failed to save annotation"} etc., rate_limit(times,
retry_after) -> 429, outage(...) until heal(). Every request is recorded
with its arrival time and answer. Python 3 standard library only.

Library use:

    from grafana_fake import GrafanaFake
    grafana = GrafanaFake().start()       # grafana.token: what the token file holds
    grafana.fail(2, status=500)
    ... --grafana-url grafana.url --grafana-token-file F ...
    grafana.wait_for(lambda reqs: ..., timeout=5)
    grafana.annotations(tags=["recoveryd"])
    grafana.stop()

Command line (tests/fakes/fakeserver.py: --port, --host, the ready line, SIGTERM):
    python3 grafana_fake.py --port N [--token T]
prints one JSON line per request after the ready line.
"""

import json
import os
import re
import secrets
import sys
import threading
import time
import urllib.parse

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from recorder import SinkHandler  # noqa: E402  (body reading, chunked included; the answer)
import fakeserver  # noqa: E402

API = "/api/annotations"
MIN_MS = 10 ** 12        # 2001-09-09 in milliseconds; in seconds that is year 33658
POST_FIELDS = {"dashboardUID": str, "dashboardId": int, "panelId": int, "time": int, "timeEnd": int,
               "tags": list, "text": str, "data": dict}
PATCH_FIELDS = {"time": int, "timeEnd": int, "tags": list, "text": str, "data": dict}


class GrafanaRequest:
    """One request as the fake saw it, with the answer it got."""

    __slots__ = ("t", "method", "path", "query", "headers", "body", "client",
                 "status", "answer", "forced", "details")

    def __init__(self, t, method, path, query, headers, body, client):
        self.t = t
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.client = client
        self.status = None
        self.answer = None      # the JSON answer (decoded)
        self.forced = False
        self.details = None     # why a 400 was given (list of strings)

    def header(self, name, default=None):
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return default

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def text(self):
        return self.body.decode("utf-8", errors="replace")

    def as_dict(self):
        return {"t": self.t, "method": self.method, "path": self.path, "query": self.query,
                "body": self.text(), "status": self.status, "answer": self.answer,
                "forced": self.forced, "details": self.details}

    def __repr__(self):
        return "<%s %s t=%.3f -> %s %s body=%r>" % (self.method, self.path, self.t, self.status,
                                                  json.dumps(self.answer), self.body[:200])


class _Handler(SinkHandler):
    server_version = "grafana-fake/1"
    request_class = GrafanaRequest

    def _encode(self, req, status, headers, answer):
        """Grafana answers JSON: the value stays on req, its text is sent."""
        req.status, req.answer = status, answer
        return dict(headers, **{"Content-Type": "application/json"}), json.dumps(answer).encode("utf-8")


def _msg(status, message, headers=None):
    return int(status), dict(headers or {}), {"message": message}


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def field_errors(doc, allowed):
    """Why a POST or PATCH body is refused (list of strings; empty = ok)."""
    if not isinstance(doc, dict):
        return ["the body is not a JSON object"]
    errs = []
    for k, v in doc.items():
        want = allowed.get(k)
        if want is None:
            errs.append("unknown field %r (this endpoint takes %s)" % (k, ", ".join(sorted(allowed))))
        elif want is int and not _is_int(v):
            errs.append("%s: expected an integer, got %s" % (k, type(v).__name__))
        elif want is not int and not isinstance(v, want):
            errs.append("%s: expected %s, got %s" % (k, want.__name__, type(v).__name__))
    for k in ("time", "timeEnd"):
        if _is_int(doc.get(k)) and 0 < doc[k] < MIN_MS:
            errs.append("%s: %d is not epoch milliseconds (seconds?)" % (k, doc[k]))
    if isinstance(doc.get("tags"), list) and not all(isinstance(t, str) for t in doc["tags"]):
        errs.append("tags: expected a list of strings")
    if _is_int(doc.get("time")) and _is_int(doc.get("timeEnd")) and doc["timeEnd"] and \
            doc["timeEnd"] < doc["time"]:
        errs.append("timeEnd before time")
    return errs


class GrafanaFake(fakeserver.FakeServer):
    """Validating, scriptable fake of Grafana's annotations API."""

    handler_class = _Handler
    thread_name = "grafana-fake"

    def __init__(self, port=0, host="127.0.0.1", token=None):
        self._fake_init(host, port)
        self.token = token or "glsa_" + secrets.token_hex(16)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._requests = []
        self._items = {}        # id -> annotation (Grafana's fields)
        self._next_id = 1
        self._forced = []       # [(status, headers, answer)]
        self._outage = None
        self.on_request = None

    # -- scripting -----------------------------------------------------
    def force(self, status, message=None, headers=None, times=1):
        """Queue `times` forced answers for the next writes (POST, PATCH)."""
        if message is None:
            message = {429: "Too many requests", 503: "Service unavailable"}.get(int(status),
                                                                                "Failed to save annotation")
        with self._lock:
            for _ in range(times):
                self._forced.append(_msg(status, message, headers))
        return self

    def fail(self, times, status=500, message=None):
        return self.force(status, message, None, times)

    def rate_limit(self, times=1, retry_after=1):
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return self.force(429, None, headers, times)

    def outage(self, status=500, message=None):
        """Answer every write with status until heal()."""
        with self._lock:
            self._outage = _msg(status, message or "Failed to save annotation")
        return self

    def heal(self):
        with self._lock:
            self._outage = None
            self._forced.clear()
        return self

    # -- answering -----------------------------------------------------
    def _answer(self, req):
        m = re.fullmatch(API + r"(?:/([^/]*))?", req.path)
        if not m:
            return _msg(404, "Not found")
        auth = req.header("Authorization") or ""
        scheme, _, cred = auth.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(cred.strip(), self.token):
            return _msg(401, "Unauthorized")
        ref = m.group(1)
        if req.method in ("GET", "HEAD") and ref is None:
            return 200, {}, self._find(urllib.parse.parse_qs(req.query))
        if req.method == "DELETE" and ref is not None:
            # Grafana's DeleteAnnotationByID: gone, or it never was
            with self._lock:
                if not re.fullmatch(r"[0-9]+", ref) or self._items.pop(int(ref), None) is None:
                    return _msg(404, "Annotation not found")
            return 200, {}, {"message": "Annotation deleted"}
        if (req.method, ref is None) not in (("POST", True), ("PATCH", False)):
            return _msg(405, "Method Not Allowed")
        with self._lock:
            if self._forced:
                req.forced = True
                return self._forced.pop(0)
            if self._outage is not None:
                req.forced = True
                return self._outage
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        try:
            doc = json.loads(req.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            doc = None
        errs = [] if ctype == "application/json" else ["Content-Type is %r, not application/json" % ctype]
        if req.method == "PATCH" and not re.fullmatch(r"[0-9]+", ref):
            return _msg(400, "annotationId is invalid")
        errs += ["the body is not JSON"] if doc is None else \
            field_errors(doc, POST_FIELDS if req.method == "POST" else PATCH_FIELDS)
        if errs:
            req.details = errs
            return _msg(400, "bad request data")
        with self._lock:
            if req.method == "POST":
                if not doc.get("text"):
                    req.details = ["text field should not be empty"]
                    return _msg(400, "Failed to save annotation")
                now = int(time.time() * 1000)
                item = {"id": self._next_id, "dashboardUID": doc.get("dashboardUID", ""),
                        "panelId": doc.get("panelId", 0), "time": doc.get("time") or now,
                        "text": doc["text"], "tags": list(doc.get("tags") or []), "created": now,
                        "updated": now}
                item["timeEnd"] = doc.get("timeEnd") or item["time"]
                self._items[item["id"]] = item
                self._next_id += 1
                return 200, {}, {"id": item["id"], "message": "Annotation added"}
            item = self._items.get(int(ref))
            if item is None:
                return _msg(404, "Annotation not found")
            # Grafana's PatchAnnotation: what is given and set replaces
            if doc.get("tags") is not None:
                item["tags"] = list(doc["tags"])
            if doc.get("text"):
                item["text"] = doc["text"]
            if doc.get("time", 0) > 0:
                item["time"] = doc["time"]
            if doc.get("timeEnd", 0) > 0:
                item["timeEnd"] = doc["timeEnd"]
            if item["timeEnd"] < item["time"]:
                item["timeEnd"] = item["time"]
            item["updated"] = int(time.time() * 1000)
            return 200, {}, {"message": "Annotation patched"}

    def _find(self, params):
        def one(k, default=None):
            v = params.get(k)
            return v[0] if v else default
        try:
            t_from, t_to = int(one("from", 0)), int(one("to", 0))
            limit = int(one("limit", 100))
        except ValueError:
            return []
        tags = params.get("tags", [])
        with self._lock:
            items = sorted(self._items.values(), key=lambda i: (-i["time"], -i["id"]))
            out = [dict(i, tags=list(i["tags"])) for i in items
                   if all(t in i["tags"] for t in tags)
                   and (not t_from or i["timeEnd"] >= t_from) and (not t_to or i["time"] <= t_to)]
        return out[:limit]

    # -- reading -------------------------------------------------------
    def annotations(self, tags=()):
        """What the fake holds (as GET /api/annotations lists it), newest first."""
        return self._find({"tags": list(tags), "limit": ["1000000"]})

    def _record(self, req):
        with self._cond:
            self._requests.append(req)
            self._cond.notify_all()
        cb = self.on_request
        if cb is not None:
            cb(req)

    def requests(self, method=None, status=None, forced=None):
        """Snapshot of every request, oldest first."""
        with self._lock:
            reqs = list(self._requests)
        return _filter(reqs, method, status, forced)

    def count(self, method=None, status=None, forced=None):
        return len(self.requests(method, status, forced))


def _filter(reqs, method=None, status=None, forced=None):
    return [r for r in reqs if (method is None or r.method == method)
            and (status is None or r.status == status) and (forced is None or r.forced == forced)]


def main(argv=None):
    ap = fakeserver.parser("Grafana annotations API fake")
    ap.add_argument("--token", default=None, help="the bearer token it accepts (default: printed)")
    args = ap.parse_args(argv)
    fake = GrafanaFake(port=args.port, host=args.host, token=args.token)
    if args.token is None:
        sys.stderr.write("token: %s\n" % fake.token)
    fake.on_request = fakeserver.json_printer()
    return fakeserver.serve(fake)


if __name__ == "__main__":
    sys.exit(main())

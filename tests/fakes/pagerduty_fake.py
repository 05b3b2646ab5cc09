#!/usr/bin/env python3
"""A loopback fake of the PagerDuty Events API v2 (POST /v2/enqueue).

It validates events the way the real service does (see
docs/escalation.md and the protocol reference, section 2), tracks the
incidents the events would open and close, records every request with its
arrival time, and can be scripted to misbehave (outages, rate limits).
Python 3 standard library only.

Library use:

    from pagerduty_fake import PagerDutyFake
    pd = PagerDutyFake().start()          # 127.0.0.1, a free port
    pd.fail(3, 503)                       # the next three requests get 503
    ... --pagerduty-url pd.enqueue_url ...
    pd.wait_count(1, action="trigger", status=202, timeout=5)
    pd.incidents_opened                   # incidents opened so far
    pd.stop()

Answers:
  202 {"status":"success","message":"Event processed","dedup_key":"<key>"}
      for a valid event (the dedup_key is generated when a trigger has none).
  400 {"status":"invalid event","message":"Event object is invalid",
       "errors":[...]} for an invalid one, every problem listed, e.g.
      "Length of 'routing_key' is incorrect (should be 32 characters)".
  Forced answers (fail(), rate_limit(), force(), outage()) come first.

routing_keys: None accepts every 32-character key. A list makes the fake
behave like PagerDuty with an unknown integration key: still 202 (the Events
API does not reveal which keys exist) but the event is dropped: it opens,
acknowledges and resolves nothing (`dropped` is True in its record).

Incidents are tracked per (routing_key, dedup_key): a trigger opens one unless
one is open already (then it is added to that incident's log); resolve closes
the open one; acknowledge marks it; ack/resolve of an unknown or closed key
is dropped, as PagerDuty does. After a resolve, a trigger with the same key
opens a new incident.

Command line (tests/fakes/fakeserver.py: --port, --host, the ready line, SIGTERM):
    python3 pagerduty_fake.py --port N [--routing-key K ...]
prints one JSON line per request after the ready line.
"""

import json
import os
import sys
import threading
import time
import uuid

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from recorder import SinkHandler  # noqa: E402  (body reading, chunked included; the answer)
import fakeserver  # noqa: E402

ENQUEUE_PATH = "/v2/enqueue"
ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")
MAX_EVENT_BYTES = 512000
ROUTING_KEY_LEN = 32
SUMMARY_MAX = 1024
DEDUP_KEY_MAX = 255


def _json_bytes(doc):
    return json.dumps(doc).encode("utf-8")


def invalid_event(errors):
    """The 400 body PagerDuty sends for an invalid event."""
    return {"status": "invalid event", "message": "Event object is invalid", "errors": list(errors)}


def validate_event(ev):
    """List of PagerDuty-style error strings for the decoded event (empty
    when it is valid)."""
    if not isinstance(ev, dict):
        return ["Event object is not a JSON object"]
    errors = []

    rk = ev.get("routing_key")
    if rk is None or rk == "":
        errors.append("'routing_key' is missing or blank")
    elif not isinstance(rk, str):
        errors.append("'routing_key' must be a string")
    elif len(rk) != ROUTING_KEY_LEN:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")

    action = ev.get("event_action")
    if action is None or action == "":
        errors.append("'event_action' is missing or blank")
    elif action not in ACTIONS:
        errors.append("'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")

    dk = ev.get("dedup_key")
    if dk is not None:
        if not isinstance(dk, str):
            errors.append("'dedup_key' must be a string")
        elif len(dk) > DEDUP_KEY_MAX:
            errors.append("Length of 'dedup_key' is too long (maximum 255 characters)")
    if action in ("acknowledge", "resolve") and (dk is None or dk == ""):
        errors.append("'dedup_key' is missing or blank (required for %s events)" % action)

    if action == "trigger":
        p = ev.get("payload")
        if p is None:
            errors.append("'payload' is missing or blank")
        elif not isinstance(p, dict):
            errors.append("'payload' must be an object")
        else:
            s = p.get("summary")
            if s is None or s == "":
                errors.append("'payload.summary' is missing or blank")
            elif not isinstance(s, str):
                errors.append("'payload.summary' must be a string")
            elif len(s) > SUMMARY_MAX:
                errors.append("Length of 'payload.summary' is too long (maximum 1024 characters)")
            src = p.get("source")
            if src is None or src == "":
                errors.append("'payload.source' is missing or blank")
            elif not isinstance(src, str):
                errors.append("'payload.source' must be a string")
            sev = p.get("severity")
            if sev is None or sev == "":
                errors.append("'payload.severity' is missing or blank")
            elif sev not in SEVERITIES:
                errors.append("'payload.severity' is invalid (must be one of: critical, error, warning, info)")
            for f in ("component", "group", "class", "timestamp"):
                if f in p and not isinstance(p[f], str):
                    errors.append("'payload.%s' must be a string" % f)
            if "custom_details" in p and p["custom_details"] is None:
                errors.append("'payload.custom_details' must not be null")

    links = ev.get("links")
    if links is not None:
        if not isinstance(links, list):
            errors.append("'links' must be an array")
        else:
            for i, link in enumerate(links):
                if not isinstance(link, dict) or not isinstance(link.get("href"), str) or not link["href"]:
                    errors.append("'links[%d].href' is missing or blank" % i)
                elif "text" in link and not isinstance(link["text"], str):
                    errors.append("'links[%d].text' must be a string" % i)
    images = ev.get("images")
    if images is not None:
        if not isinstance(images, list):
            errors.append("'images' must be an array")
        else:
            for i, img in enumerate(images):
                if not isinstance(img, dict) or not isinstance(img.get("src"), str) or not img["src"]:
                    errors.append("'images[%d].src' is missing or blank" % i)
    for f in ("client", "client_url"):
        if f in ev and not isinstance(ev[f], str):
            errors.append("'%s' must be a string" % f)
    return errors


class PDRequest:
    """One request as the fake saw it, with the answer it got."""

    __slots__ = ("t", "method", "path", "query", "headers", "body", "client",
                 "status", "answer", "answer_headers", "forced", "dropped", "event")

    def __init__(self, t, method, path, query, headers, body, client):
        self.t = t                  # time.time() when the body had been read
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers      # list of (name, value)
        self.body = body            # bytes
        self.client = client
        self.status = None          # answer status
        self.answer = b""           # answer body (bytes)
        self.answer_headers = {}
        self.forced = False         # answered from the forced queue / outage
        self.dropped = False        # accepted but dropped (unknown key, nothing to ack/resolve)
        self.event = None           # decoded JSON body, or None

    def header(self, name, default=None):
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return default

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def answer_json(self):
        return json.loads(self.answer.decode("utf-8"))

    @property
    def action(self):
        return self.event.get("event_action") if isinstance(self.event, dict) else None

    @property
    def dedup_key(self):
        return self.event.get("dedup_key") if isinstance(self.event, dict) else None

    def as_dict(self):
        return {"t": self.t, "method": self.method, "path": self.path, "query": self.query,
                "headers": [[k, v] for k, v in self.headers], "body": self.body.decode("utf-8", "replace"),
                "status": self.status, "answer": self.answer.decode("utf-8", "replace"),
                "forced": self.forced, "dropped": self.dropped}

    def __repr__(self):
        return "<%s %s t=%.3f -> %s action=%s dedup_key=%r%s>" % (
            self.method, self.path, self.t, self.status, self.action, self.dedup_key,
            " forced" if self.forced else "")


class Incident:
    """What PagerDuty would have made of the events for one
    (routing_key, dedup_key) while it was open."""

    def __init__(self, routing_key, dedup_key, event, t):
        self.routing_key = routing_key
        self.dedup_key = dedup_key
        self.opened_at = t
        self.resolved_at = None
        self.acknowledged = False
        self.events = [event]       # trigger, further triggers, ack, resolve (decoded bodies)

    @property
    def open(self):
        return self.resolved_at is None

    @property
    def summary(self):
        return (self.events[0].get("payload") or {}).get("summary")

    @property
    def triggers(self):
        return [e for e in self.events if e.get("event_action") == "trigger"]

    def __repr__(self):
        return "<Incident %s %s triggers=%d%s>" % (self.dedup_key, "open" if self.open else "resolved",
                                                  len(self.triggers), " acked" if self.acknowledged else "")


class _Handler(SinkHandler):
    server_version = "pagerduty-fake/1"
    request_class = PDRequest


class PagerDutyFake(fakeserver.FakeServer):
    """Validating, incident-tracking, scriptable fake of /v2/enqueue."""

    handler_class = _Handler
    thread_name = "pagerduty-fake"

    def __init__(self, port=0, host="127.0.0.1", routing_keys=None):
        self._fake_init(host, port)
        self.routing_keys = None if routing_keys is None else set(routing_keys)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._requests = []
        self._forced = []           # [(status, headers, body bytes, delay)], consumed in order
        self._outage = None         # (status, headers, body bytes) answered until heal()
        self._incidents = []        # every Incident, oldest first
        self._open = {}             # (routing_key, dedup_key) -> open Incident
        self.on_request = None      # optional callback(PDRequest), e.g. for printing

    @property
    def enqueue_url(self):
        """The events endpoint: give this to --pagerduty-url."""
        return self.url + ENQUEUE_PATH

    # -- scripting -----------------------------------------------------
    def force(self, status, body=None, headers=None, times=1, delay=None):
        """Queue `times` forced answers; they are used before any validation,
        oldest first. body: dict (JSON), str or bytes; default: PagerDuty's
        error shape for the status."""
        h, data = _encode(status, body, headers)
        with self._lock:
            for _ in range(times):
                self._forced.append((int(status), dict(h), data, delay))
        return self

    def fail(self, times, status=503, retry_after=None, body=None):
        """The next `times` requests get `status` (with Retry-After when given)."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return self.force(status, body=body, headers=headers, times=times)

    def rate_limit(self, times=1, retry_after=None):
        """The next `times` requests get 429, with or without Retry-After."""
        return self.fail(times, 429, retry_after=retry_after)

    def outage(self, status=503, retry_after=None, body=None):
        """Answer every request with `status` until heal()."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        h, data = _encode(status, body, headers)
        with self._lock:
            self._outage = (int(status), dict(h), data)
        return self

    def heal(self):
        """End an outage and drop the forced answers still queued."""
        with self._lock:
            self._outage = None
            self._forced.clear()
        return self

    # -- answering -----------------------------------------------------
    def _answer(self, req):
        with self._lock:
            if req.path != ENQUEUE_PATH:
                return _reply(404, {"status": "not found", "message": "Not Found",
                                    "errors": ["No route for %s" % req.path]})
            if req.method != "POST":
                st, h, d = _reply(405, {"status": "method not allowed", "message": "Method Not Allowed",
                                        "errors": ["Use POST"]})[:3]
                h["Allow"] = "POST"
                return st, h, d, None
            try:
                req.event = json.loads(req.body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                req.event = None
            if self._forced:
                st, h, d, delay = self._forced.pop(0)
                req.forced = True
                return st, dict(h), d, delay
            if self._outage is not None:
                st, h, d = self._outage
                req.forced = True
                return st, dict(h), d, None
            if req.event is None:
                return _reply(400, invalid_event(["Could not parse the request body as JSON"]))
            if len(req.body) > MAX_EVENT_BYTES:
                return _reply(400, invalid_event(["Event object is too large (maximum 512000 bytes)"]))
            errors = validate_event(req.event)
            if errors:
                return _reply(400, invalid_event(errors))
            ev = req.event
            dk = ev.get("dedup_key") or uuid.uuid4().hex
            self._apply(req, ev, dk)
            return _reply(202, {"status": "success", "message": "Event processed", "dedup_key": dk})

    def _apply(self, req, ev, dk):
        rk = ev["routing_key"]
        if self.routing_keys is not None and rk not in self.routing_keys:
            req.dropped = True
            return
        action = ev["event_action"]
        k = (rk, dk)
        inc = self._open.get(k)
        if action == "trigger":
            if inc is None:
                inc = Incident(rk, dk, ev, req.t)
                self._incidents.append(inc)
                self._open[k] = inc
            else:
                inc.events.append(ev)
        elif inc is None:
            req.dropped = True        # ack/resolve for an unknown or resolved key
        elif action == "acknowledge":
            inc.acknowledged = True
            inc.events.append(ev)
        else:
            inc.events.append(ev)
            inc.resolved_at = req.t
            del self._open[k]

    # -- recording -----------------------------------------------------
    def _record(self, req):
        with self._cond:
            self._requests.append(req)
            self._cond.notify_all()
        cb = self.on_request
        if cb is not None:
            cb(req)

    def requests(self, action=None, status=None, forced=None):
        """Snapshot of the requests, oldest first, optionally filtered by
        event_action, answer status and forced-ness."""
        with self._lock:
            reqs = list(self._requests)
        return _filter(reqs, action, status, forced)

    def events(self, action=None):
        """Decoded bodies of the accepted (202) events."""
        return [r.event for r in self.requests(action=action, status=202)]

    def count(self, action=None, status=None, forced=None):
        return len(self.requests(action, status, forced))

    def clear(self):
        with self._lock:
            self._requests.clear()

    @property
    def incidents(self):
        with self._lock:
            return list(self._incidents)

    @property
    def incidents_opened(self):
        with self._lock:
            return len(self._incidents)

    def open_incidents(self):
        with self._lock:
            return list(self._open.values())

    def incident(self, dedup_key, routing_key=None):
        """The newest incident with that dedup key (and routing key), or None."""
        with self._lock:
            for inc in reversed(self._incidents):
                if inc.dedup_key == dedup_key and (routing_key is None or inc.routing_key == routing_key):
                    return inc
        return None

    def wait_count(self, n, action=None, status=None, forced=None, timeout=5.0):
        """Wait until at least n matching requests arrived; return them."""
        def pred(reqs):
            got = _filter(reqs, action, status, forced)
            return got if len(got) >= n else None
        return self.wait_for(pred, timeout)


def _filter(reqs, action=None, status=None, forced=None):
    return [r for r in reqs
            if (action is None or r.action == action)
            and (status is None or r.status == status)
            and (forced is None or r.forced == forced)]


def _encode(status, body, headers):
    h = dict(headers or {})
    if body is None:
        if int(status) == 429:
            body = {"status": "throttle event",
                    "message": "Requests for this service are arriving too quickly.  Please retry later."}
        else:
            body = {"status": "error", "message": "Internal Server Error",
                    "errors": ["Simulated %d from the fake" % int(status)]}
    if isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode("utf-8")
        h.setdefault("Content-Type", "text/plain; charset=utf-8")
    else:
        data = _json_bytes(body)
        h.setdefault("Content-Type", "application/json")
    return h, data


def _reply(status, doc):
    return status, {"Content-Type": "application/json"}, _json_bytes(doc), None


def main(argv=None):
    ap = fakeserver.parser("PagerDuty Events API v2 fake")
    ap.add_argument("--routing-key", action="append", default=None,
                    help="a known routing key (repeatable; default: every 32-character key)")
    args = ap.parse_args(argv)
    fake = PagerDutyFake(port=args.port, host=args.host, routing_keys=args.routing_key)
    fake.on_request = fakeserver.json_printer()
    return fakeserver.serve(fake)   # events go to URL/v2/enqueue


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A loopback fake of a Slack incoming webhook.

POST <webhook path> (default /services/T000/B000/XXXX) with a JSON body
(or the legacy form encoding payload=<json>). Answers like Slack:

  200 text/plain `ok`               the message was posted
  400 `invalid_payload`             the body is not a JSON object, or it has
                                    none of text, blocks, attachments
  400 `invalid_blocks`              blocks that Block Kit would refuse (not a
                                    list, > 50 blocks, a block without type,
                                    a header whose text is not plain_text or
                                    > 150 chars, a section without text or
                                    fields, section text > 3000 chars, ...)
  404 `no_team`                     any other path (a revoked or mistyped URL)

Forced answers come first: rate_limit(times, retry_after) -> 429
`rate_limited` with Retry-After, fail(times, status) -> 500 `rollup_error`
etc., outage(...) until heal(). Every request is recorded with its arrival
time (time.time()) and the answer it got. Python 3 standard library only.

Library use:

    from slack_fake import SlackFake
    slack = SlackFake().start()
    slack.rate_limit(1, retry_after=1)
    ... --slack-webhook-url-file containing slack.webhook_url ...
    msgs = slack.wait_count(1, status=200, timeout=5)
    msgs[0].json()["text"]
    slack.stop()

Command line (tests/fakes/fakeserver.py: --port, --host, the ready line, SIGTERM):
    python3 slack_fake.py --port N [--path /services/...]
prints one JSON line per request after the ready line.
"""

import json
import os
import sys
import threading
import time
import urllib.parse

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from recorder import SinkHandler  # noqa: E402  (body reading, chunked included; the answer)
import fakeserver  # noqa: E402

DEFAULT_PATH = "/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"
MAX_BLOCKS = 50
HEADER_TEXT_MAX = 150
SECTION_TEXT_MAX = 3000
FIELD_TEXT_MAX = 2000
MAX_FIELDS = 10
CONTEXT_ELEMENTS_MAX = 10
TEXT_TYPES = ("plain_text", "mrkdwn")
KNOWN_BLOCKS = ("header", "section", "context", "divider", "actions", "image", "rich_text", "input",
                "file", "video", "markdown")

# The error strings Slack answers with, and their statuses.
ERRORS = {
    "invalid_payload": 400,
    "invalid_blocks": 400,
    "no_text": 400,
    "no_team": 404,
    "no_service": 404,
    "channel_not_found": 404,
    "action_prohibited": 403,
    "invalid_token": 403,
    "channel_is_archived": 410,
    "rate_limited": 429,
    "rollup_error": 500,
}


def _text_object_error(obj, max_len, where, plain_only=False):
    if not isinstance(obj, dict):
        return "%s: expected a text object" % where
    t = obj.get("type")
    if t not in (("plain_text",) if plain_only else TEXT_TYPES):
        return "%s: text type must be %s" % (where, "plain_text" if plain_only else "plain_text or mrkdwn")
    s = obj.get("text")
    if not isinstance(s, str) or s == "":
        return "%s: text must be a non-empty string" % where
    if len(s) > max_len:
        return "%s: text longer than %d characters" % (where, max_len)
    return None


def block_errors(blocks):
    """Why Block Kit would refuse these blocks (list of strings; empty = ok).
    Checks the common blocks closely and accepts other known types as they are."""
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    if len(blocks) > MAX_BLOCKS:
        return ["more than %d blocks" % MAX_BLOCKS]
    errs = []
    for i, b in enumerate(blocks):
        where = "blocks[%d]" % i
        if not isinstance(b, dict) or not isinstance(b.get("type"), str):
            errs.append("%s: a block must be an object with a type" % where)
            continue
        t = b["type"]
        if "block_id" in b and (not isinstance(b["block_id"], str) or len(b["block_id"]) > 255):
            errs.append("%s: block_id must be a string of at most 255 characters" % where)
        if t not in KNOWN_BLOCKS:
            errs.append("%s: unknown block type %r" % (where, t))
        elif t == "header":
            e = _text_object_error(b.get("text"), HEADER_TEXT_MAX, where + ".text", plain_only=True)
            if e:
                errs.append(e)
        elif t == "section":
            if "text" not in b and "fields" not in b:
                errs.append("%s: a section needs text or fields" % where)
            if "text" in b:
                e = _text_object_error(b["text"], SECTION_TEXT_MAX, where + ".text")
                if e:
                    errs.append(e)
            if "fields" in b:
                f = b["fields"]
                if not isinstance(f, list) or not f or len(f) > MAX_FIELDS:
                    errs.append("%s.fields: 1 to %d text objects" % (where, MAX_FIELDS))
                else:
                    for j, x in enumerate(f):
                        e = _text_object_error(x, FIELD_TEXT_MAX, "%s.fields[%d]" % (where, j))
                        if e:
                            errs.append(e)
        elif t == "context":
            el = b.get("elements")
            if not isinstance(el, list) or not el or len(el) > CONTEXT_ELEMENTS_MAX:
                errs.append("%s.elements: 1 to %d elements" % (where, CONTEXT_ELEMENTS_MAX))
            else:
                for j, x in enumerate(el):
                    if isinstance(x, dict) and x.get("type") == "image":
                        if not x.get("image_url") or not x.get("alt_text"):
                            errs.append("%s.elements[%d]: image needs image_url and alt_text" % (where, j))
                        continue
                    e = _text_object_error(x, SECTION_TEXT_MAX, "%s.elements[%d]" % (where, j))
                    if e:
                        errs.append(e)
        elif t == "actions":
            el = b.get("elements")
            if not isinstance(el, list) or not el or len(el) > 25:
                errs.append("%s.elements: 1 to 25 elements" % where)
        elif t == "image":
            if not b.get("image_url") or not b.get("alt_text"):
                errs.append("%s: image needs image_url and alt_text" % where)
    return errs


def message_error(doc):
    """(error string, details) for a decoded message body, or (None, None)."""
    if not isinstance(doc, dict):
        return "invalid_payload", ["the body is not a JSON object"]
    text = doc.get("text")
    if text is not None and not isinstance(text, str):
        return "invalid_payload", ["text must be a string"]
    has_text = isinstance(text, str) and text.strip() != ""
    has_blocks = "blocks" in doc and doc["blocks"] not in (None, [])
    has_attachments = isinstance(doc.get("attachments"), list) and doc["attachments"] != []
    if not (has_text or has_blocks or has_attachments):
        return "invalid_payload", ["neither text, blocks nor attachments"]
    if "blocks" in doc and doc["blocks"] is not None:
        errs = block_errors(doc["blocks"])
        if errs:
            return "invalid_blocks", errs
    return None, None


class SlackRequest:
    """One request as the fake saw it, with the answer it got."""

    __slots__ = ("t", "method", "path", "query", "headers", "body", "client",
                 "status", "answer", "answer_headers", "forced", "message", "details")

    def __init__(self, t, method, path, query, headers, body, client):
        self.t = t
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.client = client
        self.status = None
        self.answer = b""
        self.answer_headers = {}
        self.forced = False
        self.message = None     # the decoded message (JSON or payload= form), or None
        self.details = None     # why a 400 was given (list of strings)

    def header(self, name, default=None):
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return default

    def json(self):
        """The message as sent (decoded from JSON or from payload=)."""
        if self.message is None:
            raise ValueError("request body is not a Slack message: %r" % self.body[:200])
        return self.message

    def text(self):
        return self.body.decode("utf-8", errors="replace")

    @property
    def answer_text(self):
        return self.answer.decode("utf-8", errors="replace")

    def as_dict(self):
        return {"t": self.t, "method": self.method, "path": self.path, "query": self.query,
                "headers": [[k, v] for k, v in self.headers], "body": self.text(),
                "status": self.status, "answer": self.answer_text, "forced": self.forced,
                "details": self.details}

    def __repr__(self):
        return "<%s %s t=%.3f -> %s %s body=%r>" % (self.method, self.path, self.t, self.status,
                                                  self.answer_text, self.body[:160])


class _Handler(SinkHandler):
    server_version = "slack-fake/1"
    request_class = SlackRequest


def _plain(status, text, headers=None):
    h = {"Content-Type": "text/plain; charset=utf-8"}
    h.update(headers or {})
    return int(status), h, text.encode("utf-8")


class SlackFake(fakeserver.FakeServer):
    """Validating, scriptable fake of one Slack incoming webhook."""

    handler_class = _Handler
    thread_name = "slack-fake"

    def __init__(self, port=0, host="127.0.0.1", path=DEFAULT_PATH):
        self._fake_init(host, port)
        self.path = path
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._requests = []
        self._forced = []       # [(status, headers, body bytes)]
        self._outage = None
        self.on_request = None

    @property
    def webhook_url(self):
        """The full webhook URL (what the URL file holds)."""
        return self.url + self.path

    # -- scripting -----------------------------------------------------
    def force(self, status, text=None, headers=None, times=1):
        """Queue `times` forced plain-text answers, used before validation."""
        if text is None:
            text = {429: "rate_limited", 500: "rollup_error", 503: "service_unavailable"}.get(int(status),
                                                                                           "error")
        answer = _plain(status, text, headers)
        with self._lock:
            for _ in range(times):
                self._forced.append(answer)
        return self

    def rate_limit(self, times=1, retry_after=1):
        """The next `times` requests get 429 rate_limited (Retry-After: N unless None)."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return self.force(429, "rate_limited", headers, times)

    def fail(self, times, status=500, text=None):
        return self.force(status, text, None, times)

    def outage(self, status=500, text=None, retry_after=None):
        """Answer every request with status until heal()."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        if text is None:
            text = "rate_limited" if int(status) == 429 else "rollup_error"
        with self._lock:
            self._outage = _plain(status, text, headers)
        return self

    def heal(self):
        with self._lock:
            self._outage = None
            self._forced.clear()
        return self

    # -- answering -----------------------------------------------------
    def _answer(self, req):
        req.message = _decode_message(req)
        with self._lock:
            if req.path != self.path:
                return _plain(404, "no_team")
            if req.method != "POST":
                return _plain(405, "invalid_method", {"Allow": "POST"})
            if self._forced:
                req.forced = True
                return self._forced.pop(0)
            if self._outage is not None:
                req.forced = True
                return self._outage
        err, details = message_error(req.message) if req.message is not None else \
            ("invalid_payload", ["the body is not JSON"])
        if err:
            req.details = details
            return _plain(ERRORS[err], err)
        return _plain(200, "ok")

    # -- recording -----------------------------------------------------
    def _record(self, req):
        with self._cond:
            self._requests.append(req)
            self._cond.notify_all()
        cb = self.on_request
        if cb is not None:
            cb(req)

    def requests(self, status=None, forced=None):
        """Snapshot of every request, oldest first."""
        with self._lock:
            reqs = list(self._requests)
        return _filter(reqs, status, forced)

    def messages(self):
        """Decoded bodies of the messages Slack would have posted (200)."""
        return [r.message for r in self.requests(status=200)]

    def count(self, status=None, forced=None):
        return len(self.requests(status, forced))

    def clear(self):
        with self._lock:
            self._requests.clear()

    def wait_count(self, n, status=None, forced=None, timeout=5.0):
        def pred(reqs):
            got = _filter(reqs, status, forced)
            return got if len(got) >= n else None
        return self.wait_for(pred, timeout)


def _decode_message(req):
    """The message in a request: a JSON body, or the legacy form body
    payload=<urlencoded JSON>. None when neither decodes."""
    ctype = (req.header("Content-Type") or "").lower()
    raw = req.body
    if ctype.startswith("application/x-www-form-urlencoded"):
        try:
            form = urllib.parse.parse_qs(raw.decode("utf-8"), strict_parsing=True)
            raw = form["payload"][0].encode("utf-8")
        except (UnicodeDecodeError, ValueError, KeyError, IndexError):
            return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _filter(reqs, status=None, forced=None):
    return [r for r in reqs
            if (status is None or r.status == status) and (forced is None or r.forced == forced)]


def main(argv=None):
    ap = fakeserver.parser("Slack incoming-webhook fake")
    ap.add_argument("--path", default=DEFAULT_PATH, help="the webhook path (default %(default)s)")
    args = ap.parse_args(argv)
    fake = SlackFake(port=args.port, host=args.host, path=args.path)
    fake.on_request = fakeserver.json_printer()
    return fakeserver.serve(fake)   # the webhook URL is URL + --path


if __name__ == "__main__":
    sys.exit(main())

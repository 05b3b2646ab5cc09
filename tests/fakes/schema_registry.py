#!/usr/bin/env python3
"""A loopback fake of a schema registry with the Confluent-compatible REST API
(the subset the schema-rollback playbook uses), plus Apicurio-style version
metadata. Python 3 standard library only.

Semantics follow Confluent Schema Registry (shared by Karapace, Redpanda and
Apicurio's ccompat API):

  * registering a schema that is already registered under the subject (as a
    live version) returns its existing id and creates NO new version;
  * a schema new to the subject gets the next version; the same schema text
    (and type and references) gets the same id across subjects;
  * DELETE /subjects/{s}/versions/{v} is a soft delete: the version disappears
    from listings (unless ?deleted=true) and from "latest", but its schema id
    stays readable under /schemas/ids/{id};
  * errors use the registry's bodies and codes:
      404 {"error_code":40401,"message":"Subject 'x' not found."}
      404 {"error_code":40402,"message":"Version 7 not found."}
      404 {"error_code":40403,"message":"Schema 9 not found"}
      409 {"error_code":409,"message":"Schema being registered is incompatible with an earlier schema ..."}
      422 {"error_code":42201,"message":"Invalid schema ..."}
      422 {"error_code":42202,"message":"The specified version 'x' is not a valid version id. ..."}
      401 {"error_code":401,"message":"Unauthorized"}
      500 {"error_code":50001,"message":"Error in the backend data store"}

Endpoints:
  GET    /subjects[?deleted=true]
  GET    /subjects/{s}/versions[?deleted=true]
  GET    /subjects/{s}/versions/{v|latest|-1}[?deleted=true]
  POST   /subjects/{s}/versions                      register
  DELETE /subjects/{s}/versions/{v}                  soft delete
  POST   /compatibility/subjects/{s}/versions/{v}[?verbose=true]
  GET    /schemas/ids/{id}
  GET    /schemas/ids/{id}/versions
  GET    /apis/registry/v3/groups/{g}/artifacts/{a}/versions/{v}        Apicurio v3 metadata
  GET    /apis/registry/v2/groups/{g}/artifacts/{a}/versions/{v}/meta   Apicurio v2 metadata

Library use:

    from schema_registry import SchemaRegistry
    reg = SchemaRegistry().start()          # 127.0.0.1, a free port
    reg.add("orders-value", AVRO_V1, created=time.time() - 86400 * 30)
    reg.add("orders-value", AVRO_V2, created=time.time() - 60)
    reg.compatible = False                  # verdict of the compatibility endpoint
    ... reg.url ...
    reg.requests("POST")                    # what it received
    reg.stop()

Command line (tests/fakes/fakeserver.py: --port, --host, the ready line, SIGTERM):
    python3 schema_registry.py --port N [--seed] [--incompatible]
prints one JSON line per request after the ready line.
"""

import base64
import json
import re
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler

import fakeserver

CT = "application/vnd.schemaregistry.v1+json"


class Request:
    """One request as the fake saw it."""

    __slots__ = ("t", "method", "path", "query", "headers", "body")

    def __init__(self, t, method, path, query, headers, body):
        self.t, self.method, self.path, self.query, self.headers, self.body = t, method, path, query, headers, body

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def as_dict(self):
        return {"t": self.t, "method": self.method, "path": self.path, "query": self.query,
                "headers": [[k, v] for k, v in self.headers], "body": self.body.decode("utf-8", "replace")}

    def __repr__(self):
        return "<%s %s%s %r>" % (self.method, self.path, "?" + self.query if self.query else "", self.body[:120])


class HTTPError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class SchemaRegistry(fakeserver.FakeServer):
    """The fake. State is guarded by one lock; every field below may be
    changed by a test between requests."""

    thread_name = "schema-registry"    # handler_class: _Handler, set below its definition

    def __init__(self, port=0, host="127.0.0.1", auth=None):
        self._fake_init(host, port)
        self.auth = auth                # None, ("user", "pass") or "Bearer token" (the full header value)
        self.compatible = True          # verdict of /compatibility (bool or callable(subject, version, body) -> bool)
        self.compatibility_messages = ["READER_FIELD_MISSING_DEFAULT_VALUE: field 'total' (fake)"]
        self.register_compatible = None  # verdict for registering a NEW schema; None = follow self.compatible
        self.append_on_reregister = False  # True: a schema already under the subject gets a new version anyway
        self.now = time.time            # clock for "created" of registered versions
        self.lock = threading.RLock()
        self._subjects = {}             # subject -> [version dicts]
        self._ids = {}                  # (type, schema, refs json) -> id
        self._schemas = {}              # id -> {"schema", "schemaType", "references"}
        self._next_id = 1
        self._requests = []
        self._failures = []             # [(method, path prefix, status, body, remaining count)]
        self.on_request = None          # callable(Request) as each request arrives (the command line prints it)

    # -- state -----------------------------------------------------------
    def _id_for(self, schema, schema_type, refs):
        key = (schema_type, schema, json.dumps(refs or [], sort_keys=True))
        if key not in self._ids:
            self._ids[key] = self._next_id
            self._schemas[self._next_id] = {"schema": schema, "schemaType": schema_type, "references": refs or []}
            self._next_id += 1
        return self._ids[key]

    def add(self, subject, schema, schema_type="AVRO", references=None, created=None):
        """Register a version directly (no compatibility check); returns
        (id, version)."""
        with self.lock:
            sid = self._id_for(schema, schema_type, references)
            vs = self._subjects.setdefault(subject, [])
            version = (max(v["version"] for v in vs) + 1) if vs else 1
            vs.append({"version": version, "id": sid, "deleted": False,
                       "created": self.now() if created is None else created})
            return sid, version

    def set_created(self, subject, version, ts):
        with self.lock:
            self._version(subject, version, deleted=True)["created"] = ts

    def created(self, subject, version):
        """Registration time of a version (also of a soft-deleted one), or None."""
        with self.lock:
            for v in self._subjects.get(subject, []):
                if v["version"] == version:
                    return v["created"]
        return None

    def versions(self, subject, deleted=False):
        with self.lock:
            return [v["version"] for v in self._subjects.get(subject, []) if deleted or not v["deleted"]]

    def latest(self, subject):
        """{"version", "id", "schema", ...} of the latest live version, or None."""
        with self.lock:
            live = [v for v in self._subjects.get(subject, []) if not v["deleted"]]
            if not live:
                return None
            v = live[-1]
            return dict(self._schemas[v["id"]], version=v["version"], id=v["id"], subject=subject)

    def fail_next(self, method, path_prefix, status=500, body=None, count=1):
        """The next `count` requests of method to a path starting with
        path_prefix get this answer (default: 500 50001)."""
        if body is None:
            body = {"error_code": 50001, "message": "Error in the backend data store"}
        with self.lock:
            self._failures.append([method.upper(), path_prefix, status, body, count])

    # -- recording -------------------------------------------------------
    def requests(self, method=None, prefix=None):
        with self.lock:
            return [r for r in self._requests
                    if (method is None or r.method == method.upper()) and (prefix is None or r.path.startswith(prefix))]

    def writes(self):
        """Requests that change state: register and delete (compatibility
        checks are POSTs but read-only)."""
        return [r for r in self.requests() if r.method in ("POST", "PUT", "DELETE")
                and not r.path.startswith("/compatibility/")]

    def clear(self):
        with self.lock:
            self._requests.clear()

    # -- request handling ----------------------------------------------------
    def _version(self, subject, ref, deleted=False):
        vs = self._subjects.get(subject)
        if not vs or (not deleted and all(v["deleted"] for v in vs)):
            raise HTTPError(404, 40401, "Subject '%s' not found." % subject)
        live = [v for v in vs if deleted or not v["deleted"]]
        if ref in ("latest", "-1"):
            return live[-1]
        if not re.fullmatch(r"[0-9]+", ref) or int(ref) < 1 or int(ref) > 2147483647:
            raise HTTPError(422, 42202, "The specified version '%s' is not a valid version id. Allowed values are "
                            "between [1, 2^31-1] and the string \"latest\"" % ref)
        for v in live:
            if v["version"] == int(ref):
                return v
        raise HTTPError(404, 40402, "Version %s not found." % ref)

    def _record(self, v, subject):
        s = self._schemas[v["id"]]
        out = {"subject": subject, "version": v["version"], "id": v["id"], "schema": s["schema"]}
        if s["schemaType"] != "AVRO":
            out["schemaType"] = s["schemaType"]
        if s["references"]:
            out["references"] = s["references"]
        return out

    @staticmethod
    def _parse_schema(body):
        try:
            doc = json.loads(body.decode("utf-8") or "null")
        except ValueError:
            raise HTTPError(422, 42201, "Invalid schema: the request body is not JSON")
        if not isinstance(doc, dict) or not isinstance(doc.get("schema"), str):
            raise HTTPError(422, 42201, "Invalid schema: no schema in the request")
        stype = doc.get("schemaType") or "AVRO"
        if stype not in ("AVRO", "JSON", "PROTOBUF"):
            raise HTTPError(422, 42201, "Invalid schema type %s" % stype)
        if stype in ("AVRO", "JSON"):
            try:
                json.loads(doc["schema"])
            except ValueError:
                raise HTTPError(422, 42201, "Invalid schema %s with refs [] of type %s" % (doc["schema"][:80], stype))
        return doc["schema"], stype, doc.get("references") or []

    def _verdict(self, fn_or_bool, subject, version, body):
        return fn_or_bool(subject, version, body) if callable(fn_or_bool) else bool(fn_or_bool)

    def handle(self, method, path, query, headers, body):
        """Returns (status, json-able body)."""
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        deleted = params.get("deleted", ["false"])[0] == "true"
        with self.lock:
            for f in self._failures:
                if f[0] == method and path.startswith(f[1]) and f[4] > 0:
                    f[4] -= 1
                    return f[2], f[3]
            if self.auth is not None:
                want = self.auth if isinstance(self.auth, str) else \
                    "Basic " + base64.b64encode(("%s:%s" % self.auth).encode()).decode()
                got = dict((k.lower(), v) for k, v in headers).get("authorization")
                if got != want:
                    return 401, {"error_code": 401, "message": "Unauthorized"}
            seg = [urllib.parse.unquote(p) for p in path.split("/")[1:]]
            try:
                return self._route(method, seg, params, deleted, body)
            except HTTPError as e:
                return e.status, {"error_code": e.code, "message": e.message}

    def _route(self, method, seg, params, deleted, body):
        n = len(seg)
        if method == "GET" and seg == ["subjects"]:
            return 200, sorted(s for s, vs in self._subjects.items() if any(deleted or not v["deleted"] for v in vs))
        if n >= 3 and seg[0] == "subjects" and seg[2] == "versions":
            subject = seg[1]
            if n == 3 and method == "GET":
                self._version(subject, "latest", deleted)  # 40401 when there is none
                return 200, self.versions(subject, deleted)
            if n == 3 and method == "POST":
                return self._register(subject, body)
            if n == 4 and method == "GET":
                return 200, self._record(self._version(subject, seg[3], deleted), subject)
            if n == 4 and method == "DELETE":
                v = self._version(subject, seg[3])
                v["deleted"] = True
                return 200, v["version"]
        if n == 5 and method == "POST" and seg[:2] == ["compatibility", "subjects"] and seg[3] == "versions":
            subject = seg[2]
            v = self._version(subject, seg[4])
            self._parse_schema(body)
            ok = self._verdict(self.compatible, subject, v["version"], body)
            out = {"is_compatible": ok}
            if not ok and params.get("verbose", ["false"])[0] == "true":
                out["messages"] = list(self.compatibility_messages)
            return 200, out
        if n in (3, 4) and seg[:2] == ["schemas", "ids"] and method == "GET":
            try:
                sid = int(seg[2])
            except ValueError:
                raise HTTPError(404, 40403, "Schema %s not found" % seg[2])
            if sid not in self._schemas:
                raise HTTPError(404, 40403, "Schema %d not found" % sid)
            if n == 3:
                s = self._schemas[sid]
                out = {"schema": s["schema"]}
                if s["schemaType"] != "AVRO":
                    out["schemaType"] = s["schemaType"]
                return 200, out
            if seg[3] == "versions":
                return 200, [{"subject": subj, "version": v["version"]}
                             for subj, vs in sorted(self._subjects.items()) for v in vs
                             if v["id"] == sid and (deleted or not v["deleted"])]
        # Apicurio native metadata (v3: .../versions/{v}; v2: .../versions/{v}/meta)
        if method == "GET" and n >= 9 and seg[:3] == ["apis", "registry", "v3"] and seg[3] == "groups" \
                and seg[5] == "artifacts" and seg[7] == "versions" and n == 9:
            return self._apicurio_meta(seg[6], seg[8], seg[4], iso=True)
        if method == "GET" and n == 10 and seg[:3] == ["apis", "registry", "v2"] and seg[3] == "groups" \
                and seg[5] == "artifacts" and seg[7] == "versions" and seg[9] == "meta":
            return self._apicurio_meta(seg[6], seg[8], seg[4], iso=False)
        raise HTTPError(404, 404, "HTTP 404 Not Found")

    def _apicurio_meta(self, artifact, version, group, iso):
        vs = self._subjects.get(artifact)
        match = [v for v in vs or [] if str(v["version"]) == version]
        if not match:
            return 404, {"error_code": 404, "message": "No version '%s' found for artifact with ID '%s' in group '%s'."
                         % (version, artifact, group)}
        v = match[0]
        created = v["created"]
        return 200, {"groupId": group, "artifactId": artifact, "version": str(v["version"]),
                     "globalId": v["id"], "contentId": v["id"],
                     # v3 documents "2023-10-11T14:15:28Z"; v2 answers "...+0000"
                     "createdOn": _iso(created) if iso else _iso(created).replace("Z", "+0000"),
                     "state": "DISABLED" if v["deleted"] else "ENABLED"}

    def _register(self, subject, body):
        schema, stype, refs = self._parse_schema(body)
        key = (stype, schema, json.dumps(refs, sort_keys=True))
        sid = self._ids.get(key)
        live = [v for v in self._subjects.get(subject, []) if not v["deleted"]]
        if sid is not None and not self.append_on_reregister and any(v["id"] == sid for v in live):
            return 200, {"id": sid}
        if live:
            verdict = self.register_compatible if self.register_compatible is not None else self.compatible
            if not self._verdict(verdict, subject, live[-1]["version"], body):
                raise HTTPError(409, 409, "Schema being registered is incompatible with an earlier schema for "
                                "subject \"%s\", details: [%s]" % (subject, "; ".join(self.compatibility_messages)))
        sid, _ = self.add(subject, schema, stype, refs)
        return 200, {"id": sid}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-schema-registry/1"

    def setup(self):
        super().setup()
        # headers and body are separate writes: without this, Nagle + delayed ACK cost 40 ms a request
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        pass

    def _handle(self):
        reg = self.server.fake
        split = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        req = Request(time.time(), self.command, split.path, split.query, list(self.headers.items()), body)
        with reg.lock:
            reg._requests.append(req)
        if reg.on_request:
            reg.on_request(req)
        status, doc = reg.handle(self.command, split.path, split.query, req.headers, body)
        data = json.dumps(doc).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", CT)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


SchemaRegistry.handler_class = _Handler


# Two Avro versions of an "orders" event: v2 made a new field required.
ORDER_V1 = json.dumps({"type": "record", "name": "OrderCreated", "namespace": "com.example.events",
                       "fields": [{"name": "id", "type": "string"},
                                  {"name": "total", "type": "double", "default": 0.0}]})
ORDER_V2 = json.dumps({"type": "record", "name": "OrderCreated", "namespace": "com.example.events",
                       "fields": [{"name": "id", "type": "string"},
                                  {"name": "total", "type": "double", "default": 0.0},
                                  {"name": "currency", "type": "string"}]})


def seed(reg, subject="orders-value", latest_age=60.0):
    """Two versions of subject; the latest registered latest_age seconds ago."""
    now = time.time()
    reg.add(subject, ORDER_V1, created=now - 30 * 86400)
    return reg.add(subject, ORDER_V2, created=now - latest_age)


def main(argv=None):
    ap = fakeserver.parser("fake Confluent-compatible schema registry")
    ap.add_argument("--seed", action="store_true", help="add orders-value v1 (30 days old) and v2 (60 s old)")
    ap.add_argument("--incompatible", action="store_true", help="the compatibility endpoint says false")
    args = ap.parse_args(argv)
    reg = SchemaRegistry(port=args.port, host=args.host)
    reg.compatible = not args.incompatible
    if args.seed:
        seed(reg)
    reg.on_request = fakeserver.json_printer()
    return fakeserver.serve(reg)


if __name__ == "__main__":
    sys.exit(main())

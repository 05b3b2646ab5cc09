#!/usr/bin/env python3
"""A loopback fake of a subset of the Kubernetes API, for tests of the Lua
helper library recovery.k8s. Python 3 standard library only, plain HTTP.

What it serves (namespaced only, every path under /api/v1 or /apis/G/V):

  pods          GET one, list (labelSelector with = == != in notin exists !key,
                limit/continue pagination), DELETE one (DeleteOptions body or
                query; preconditions.uid -> 409 Conflict on mismatch)
  deployments, statefulsets, daemonsets (apps/v1)
                GET one, list, PATCH (strategic-merge / merge: both applied as
                an RFC 7386 merge patch, which is what they do for maps).
                A spec change bumps metadata.generation and starts a rollout
                whose status advances one step per GET of the object (or every
                `rollout_step` seconds when that is a number), so kubectl's
                rollout-status rules first see "waiting" and then "done".
                A workload listed in fail_rollouts gets stuck and, for a
                Deployment, the condition Progressing=False with reason
                ProgressDeadlineExceeded. A paused Deployment never rolls.
  .../scale     GET, PATCH (merge), PUT (autoscaling/v1 Scale, resourceVersion
                checked) for deployments, statefulsets and replicasets
  cronjobs      GET one, list
  jobs          GET one, list, POST (201; 409 AlreadyExists; 422 Invalid for a
                bad name), DELETE. A created Job completes after `job_delay`
                seconds, or fails (condition Failed, BackoffLimitExceeded) when
                its name or its owning CronJob's name is in fail_jobs.

Authentication: `Authorization: Bearer <token>` must equal the content of the
token file, RE-READ on every request (a test may rotate it). Otherwise 401
Status Unauthorized. No token file = no authentication.
Authorisation: deny rules {"verb": "delete", "resource": "pods",
"namespace": opt, "name": opt} answer 403 Forbidden like RBAC does.
Errors are Status objects shaped exactly like the API server's.

Every request is recorded (method, path, query, headers, body); see
K8sFake.requests().

Library use:

    from k8s_fake import K8sFake
    fake = K8sFake(token_file=path, seed={"objects": [...]}).start()
    ... fake.url ...
    fake.requests(method="PATCH")
    fake.stop()

Command line (tests/fakes/fakeserver.py: --port, --host, the ready line, SIGTERM):
    python3 k8s_fake.py --port N [--token-file F] [--state FILE]
FILE is JSON: a list of objects, or {"objects": [...], "deny": [...],
"fail_rollouts": [...], "fail_jobs": [...], "job_delay": S, "rollout_step": "get"|S}.
Prints one JSON line per request after the ready line.
"""

import base64
import copy
import json
import re
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler

import fakeserver

USER = "system:serviceaccount:ops:recoveryd"
MAX_BODY = 16 * 1024 * 1024

# resource (plural) -> (group, version, Kind)
RESOURCES = {
    "pods": ("", "v1", "Pod"),
    "deployments": ("apps", "v1", "Deployment"),
    "statefulsets": ("apps", "v1", "StatefulSet"),
    "daemonsets": ("apps", "v1", "DaemonSet"),
    "replicasets": ("apps", "v1", "ReplicaSet"),
    "cronjobs": ("batch", "v1", "CronJob"),
    "jobs": ("batch", "v1", "Job"),
}
KIND_TO_RESOURCE = {v[2]: k for k, v in RESOURCES.items()}
WORKLOADS = ("deployments", "statefulsets", "daemonsets")
SCALABLE = ("deployments", "statefulsets", "replicasets")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PATCH_TYPES = ("application/strategic-merge-patch+json", "application/merge-patch+json")


def now_rfc3339(t=None):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


# ---------------------------------------------------------------- errors

class ApiError(Exception):
    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self):
        """The Status object the API server sends."""
        doc = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason}
        if self.details is not None:
            doc["details"] = self.details
        doc["code"] = self.code
        return doc


def qualified(resource):
    group = RESOURCES.get(resource, ("",))[0]
    return resource + ("." + group if group else "")


def details(resource, name=None):
    d = {}
    if name:
        d["name"] = name
    group = RESOURCES.get(resource.split("/")[0], ("",))[0]
    if group:
        d["group"] = group
    d["kind"] = resource.split("/")[0]
    return d


def not_found(resource, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (qualified(resource), name), details(resource, name))


def already_exists(resource, name):
    return ApiError(409, "AlreadyExists", '%s "%s" already exists' % (qualified(resource), name),
                    details(resource, name))


def conflict(resource, name, why):
    return ApiError(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": %s' % (qualified(resource), name, why),
                    details(resource, name))


def forbidden(verb, resource, ns, name):
    base, _, sub = resource.partition("/")
    group = RESOURCES.get(base, ("",))[0]
    who = ('%s "%s"' % (qualified(base), name)) if name else qualified(base)
    msg = '%s is forbidden: User "%s" cannot %s resource "%s" in API group "%s" in the namespace "%s"' % (
        who, USER, verb, resource, group, ns)
    return ApiError(403, "Forbidden", msg, details(base, name))


UNAUTHORIZED = ApiError(401, "Unauthorized", "Unauthorized")
NOT_FOUND_PATH = ApiError(404, "NotFound", "the server could not find the requested resource", {})


def bad_request(msg):
    return ApiError(400, "BadRequest", msg)


# ---------------------------------------------------------------- label selectors

def parse_selector(sel):
    """A label selector string -> list of (key, op, values). Raises ValueError."""
    reqs = []
    if not sel or not sel.strip():
        return reqs
    terms, depth, cur = [], 0, ""
    for ch in sel:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    terms.append(cur)
    for t in terms:
        t = t.strip()
        if not t:
            raise ValueError("found '', expected: identifier")
        m = re.match(r"^([A-Za-z0-9._/-]+)\s+(in|notin)\s+\(([^)]*)\)$", t)
        if m:
            vals = [v.strip() for v in m.group(3).split(",") if v.strip()]
            reqs.append((m.group(1), m.group(2), vals))
            continue
        m = re.match(r"^([A-Za-z0-9._/-]+)\s*(==|!=|=)\s*([A-Za-z0-9._-]*)$", t)
        if m:
            op = {"==": "=", "=": "=", "!=": "!="}[m.group(2)]
            reqs.append((m.group(1), op, [m.group(3)]))
            continue
        m = re.match(r"^!\s*([A-Za-z0-9._/-]+)$", t)
        if m:
            reqs.append((m.group(1), "!", []))
            continue
        m = re.match(r"^([A-Za-z0-9._/-]+)$", t)
        if m:
            reqs.append((m.group(1), "exists", []))
            continue
        raise ValueError("unable to parse requirement: %r" % t)
    return reqs


def selector_matches(reqs, labels):
    labels = labels or {}
    for key, op, vals in reqs:
        has = key in labels
        v = labels.get(key)
        if op == "=" and not (has and v == vals[0]):
            return False
        if op == "!=" and has and v == vals[0]:
            return False
        if op == "in" and not (has and v in vals):
            return False
        if op == "notin" and has and v in vals:
            return False
        if op == "exists" and not has:
            return False
        if op == "!" and has:
            return False
    return True


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch (in place on a copy)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# ---------------------------------------------------------------- recorded requests

class Request:
    __slots__ = ("t", "method", "path", "query", "headers", "body", "status")

    def __init__(self, t, method, path, query, headers, body):
        self.t, self.method, self.path, self.query = t, method, path, query
        self.headers, self.body, self.status = headers, body, None

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    @property
    def params(self):
        return urllib.parse.parse_qs(self.query, keep_blank_values=True)

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def as_dict(self):
        return {"t": self.t, "method": self.method, "path": self.path, "query": self.query,
                "headers": [[k, v] for k, v in self.headers], "body": self.body.decode("utf-8", "replace"),
                "status": self.status}

    def __repr__(self):
        return "<%s %s%s -> %s>" % (self.method, self.path, "?" + self.query if self.query else "", self.status)


# ---------------------------------------------------------------- the fake

class K8sFake(fakeserver.FakeServer):
    thread_name = "k8s-fake"    # handler_class: _Handler, set below its definition

    def __init__(self, token_file=None, seed=None, port=0, host="127.0.0.1", deny=None,
                 fail_rollouts=(), fail_jobs=(), job_delay=0.3, rollout_step="get"):
        self._fake_init(host, port)
        self.token_file = token_file
        self._lock = threading.RLock()
        self._requests = []
        self._objects = {}     # (resource, ns, name) -> object
        self._rollouts = {}    # (resource, ns, name) -> {"steps": [...], "i": n, "t0": time}
        self._rv = 1000
        self.deny_rules = list(deny or [])
        self.fail_rollouts = set(fail_rollouts)   # "deployment/ns/name" or "deployments/ns/name"
        self.fail_jobs = set(fail_jobs)           # job names or owning cronjob names
        self.job_delay = job_delay
        self.rollout_step = rollout_step          # "get" or seconds per step
        self.on_request = None                    # callable(Request) after recording (tests)
        if seed:
            self.seed(seed)

    # -- configuration
    def seed(self, seed):
        if isinstance(seed, list):
            seed = {"objects": seed}
        for obj in seed.get("objects", []):
            self.add(obj)
        self.deny_rules += seed.get("deny", [])
        self.fail_rollouts |= set(seed.get("fail_rollouts", []))
        self.fail_jobs |= set(seed.get("fail_jobs", []))
        if "job_delay" in seed:
            self.job_delay = seed["job_delay"]
        if "rollout_step" in seed:
            self.rollout_step = seed["rollout_step"]

    def deny(self, verb, resource, namespace=None, name=None):
        self.deny_rules.append({"verb": verb, "resource": resource, "namespace": namespace, "name": name})

    def _next_rv(self):
        self._rv += 1
        return str(self._rv)

    def add(self, obj):
        """Store an object (a dict with kind and metadata.name), filling in
        what the API server would: uid, resourceVersion, generation,
        defaults and a settled status."""
        obj = copy.deepcopy(obj)
        resource = KIND_TO_RESOURCE[obj["kind"]]
        group, version, kind = RESOURCES[resource]
        obj["apiVersion"] = (group + "/" if group else "") + version
        md = obj.setdefault("metadata", {})
        md.setdefault("namespace", "default")
        md.setdefault("uid", str(uuid.uuid4()))
        md.setdefault("creationTimestamp", now_rfc3339())
        with self._lock:
            md["resourceVersion"] = self._next_rv()
            if resource in WORKLOADS or resource == "replicasets":
                md.setdefault("generation", 1)
                spec = obj.setdefault("spec", {})
                if resource != "daemonsets":
                    spec.setdefault("replicas", 1)
                if resource == "deployments":
                    spec.setdefault("strategy", {"type": "RollingUpdate",
                                                 "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
                elif resource == "statefulsets":
                    spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
                elif resource == "daemonsets":
                    spec.setdefault("updateStrategy", {"type": "RollingUpdate",
                                                       "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
                spec.setdefault("template", {"metadata": {}, "spec": {}})
                if "status" not in obj:
                    obj["status"] = self._settled_status(resource, obj)
            elif resource == "pods":
                obj.setdefault("status", {"phase": "Running"})
            elif resource == "jobs":
                obj.setdefault("status", {})
            self._objects[(resource, md["namespace"], md["name"])] = obj
        return obj

    def get_object(self, kind, ns, name):
        """The stored object (a copy) or None. kind: Kind or plural."""
        resource = KIND_TO_RESOURCE.get(kind, kind)
        with self._lock:
            o = self._objects.get((resource, ns, name))
            return copy.deepcopy(o)

    def objects(self, kind, ns=None):
        resource = KIND_TO_RESOURCE.get(kind, kind)
        with self._lock:
            return [copy.deepcopy(o) for (r, n, _), o in sorted(self._objects.items())
                    if r == resource and (ns is None or n == ns)]

    # -- recorded requests
    def requests(self, method=None, path=None, path_prefix=None):
        with self._lock:
            return [r for r in self._requests
                    if (method is None or r.method == method)
                    and (path is None or r.path == path)
                    and (path_prefix is None or r.path.startswith(path_prefix))]

    def writes(self):
        return [r for r in self.requests() if r.method not in ("GET", "HEAD")]

    def clear_requests(self):
        with self._lock:
            self._requests = []

    def _record(self, req):
        with self._lock:
            self._requests.append(req)

    # -- status simulation
    def _settled_status(self, resource, obj):
        gen = obj["metadata"].get("generation", 1)
        r = obj["spec"].get("replicas", 1)
        if resource == "deployments":
            return {"observedGeneration": gen, "replicas": r, "updatedReplicas": r, "readyReplicas": r,
                    "availableReplicas": r,
                    "conditions": [
                        {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                         "message": "Deployment has minimum availability."},
                        {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                         "message": 'ReplicaSet "%s-5d8f7c9b4" has successfully progressed.'
                                    % obj["metadata"]["name"]}]}
        if resource == "statefulsets":
            rev = "%s-%s" % (obj["metadata"]["name"], "6c8d5b7f9")
            return {"observedGeneration": gen, "replicas": r, "readyReplicas": r, "currentReplicas": r,
                    "updatedReplicas": r, "availableReplicas": r, "currentRevision": rev, "updateRevision": rev}
        if resource == "daemonsets":
            d = obj.get("_desired", 2)
            return {"observedGeneration": gen, "desiredNumberScheduled": d, "currentNumberScheduled": d,
                    "updatedNumberScheduled": d, "numberAvailable": d, "numberReady": d, "numberMisscheduled": 0}
        return {"observedGeneration": gen, "replicas": r, "readyReplicas": r, "availableReplicas": r}

    def _is_failing(self, resource, ns, name):
        kind = RESOURCES[resource][2].lower()
        return any(k in self.fail_rollouts for k in ("%s/%s/%s" % (kind, ns, name), "%s/%s/%s" % (resource, ns, name),
                                                     "%s/%s" % (kind, name), name))

    def _start_rollout(self, resource, obj, old_status):
        """Steps of status the controller would go through after a spec change."""
        md, spec = obj["metadata"], obj["spec"]
        ns, name, gen = md["namespace"], md["name"], md["generation"]
        r = spec.get("replicas", 1)
        failing = self._is_failing(resource, ns, name)
        steps = [copy.deepcopy(old_status)]          # not observed yet
        if resource == "deployments":
            def st(updated, replicas, available, conds_reason="ReplicaSetUpdated", cstatus="True"):
                return {"observedGeneration": gen, "replicas": replicas, "updatedReplicas": updated,
                        "readyReplicas": available, "availableReplicas": available,
                        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                                        "message": "Deployment has minimum availability."},
                                       {"type": "Progressing", "status": cstatus, "reason": conds_reason,
                                        "message": 'ReplicaSet "%s-7b9c6d5f8" is progressing.' % name}]}
            if spec.get("paused"):
                s = st(0, old_status.get("replicas", r), old_status.get("availableReplicas", r),
                       "DeploymentPaused", "Unknown")
                return [s]
            steps.append(st(0, r, r))
            if failing:
                steps.append(st(min(1, r), r + 1, r))
                stuck = st(min(1, r), r + 1, r, "ProgressDeadlineExceeded", "False")
                stuck["conditions"][1]["message"] = 'ReplicaSet "%s-7b9c6d5f8" has timed out progressing.' % name
                steps.append(stuck)
                return steps
            for i in range(1, r + 1):
                steps.append(st(i, r + 1, r))
            if r > 0:
                steps.append(st(r, r, r - 1))
            final = st(r, r, r, "NewReplicaSetAvailable")
            final["conditions"][1]["message"] = 'ReplicaSet "%s-7b9c6d5f8" has successfully progressed.' % name
            steps.append(final)
        elif resource == "statefulsets":
            cur = old_status.get("currentRevision") or "%s-6c8d5b7f9" % name
            new = "%s-%08x" % (name, gen * 2654435761 & 0xffffffff)
            def st(updated, ready, current_rev):
                return {"observedGeneration": gen, "replicas": r, "readyReplicas": ready, "availableReplicas": ready,
                        "currentReplicas": r - updated if current_rev != new else r, "updatedReplicas": updated,
                        "currentRevision": current_rev, "updateRevision": new}
            if failing:  # the first new pod never gets ready
                steps.append(st(0, max(r - 1, 0), cur))
                return steps
            for i in range(0, r + 1):
                steps.append(st(i, max(r - 1, 0) if i < r else r, cur))
            steps.append(st(r, r, new))
        elif resource == "daemonsets":
            d = old_status.get("desiredNumberScheduled", 2)
            def st(updated, available):
                return {"observedGeneration": gen, "desiredNumberScheduled": d, "currentNumberScheduled": d,
                        "updatedNumberScheduled": updated, "numberAvailable": available, "numberReady": available,
                        "numberMisscheduled": 0}
            for i in range(0, d + 1):
                steps.append(st(i, max(d - 1, 0)))
                if failing:
                    break
            if not failing:
                steps.append(st(d, d))
        else:
            steps.append(self._settled_status(resource, obj))
        return steps

    def _advance(self, key, obj, on_get):
        ro = self._rollouts.get(key)
        if not ro:
            return
        if self.rollout_step == "get":
            if on_get:
                ro["i"] = min(ro["i"] + 1, len(ro["steps"]) - 1)
        else:
            ro["i"] = min(int((time.time() - ro["t0"]) / float(self.rollout_step)), len(ro["steps"]) - 1)
        obj["status"] = copy.deepcopy(ro["steps"][max(ro["i"], 0)])

    def _job_status(self, job):
        """Status of a Job as time passes since its creation."""
        md = job["metadata"]
        owners = [o.get("name") for o in md.get("ownerReferences", [])]
        failing = md["name"] in self.fail_jobs or any(o in self.fail_jobs for o in owners)
        start = job.setdefault("_created", time.time())
        st = {"startTime": now_rfc3339(start)}
        if time.time() - start < self.job_delay:
            st["active"] = 1
            st["ready"] = 0
            return st
        end = now_rfc3339(start + self.job_delay)
        if failing:
            st["failed"] = 1
            st["conditions"] = [
                {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit", "lastTransitionTime": end},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit", "lastTransitionTime": end}]
        else:
            st["succeeded"] = 1
            st["completionTime"] = end
            st["conditions"] = [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": end},
                {"type": "Complete", "status": "True", "lastTransitionTime": end}]
        return st

    # -- request handling
    def _authenticate(self, req):
        if not self.token_file:
            return
        try:
            with open(self.token_file, "r") as f:
                want = f.read().strip()
        except OSError:
            raise UNAUTHORIZED
        auth = req.header("Authorization") or ""
        if not want or auth != "Bearer " + want:
            raise UNAUTHORIZED

    def _authorize(self, verb, resource, ns, name):
        for rule in self.deny_rules:
            if rule.get("verb") not in (None, "*", verb):
                continue
            if rule.get("resource") not in (None, "*", resource):
                continue
            if rule.get("namespace") not in (None, ns):
                continue
            if rule.get("name") not in (None, name):
                continue
            raise forbidden(verb, resource, ns, name)

    @staticmethod
    def _route(path):
        """-> (resource, ns, name, sub) or raises NOT_FOUND_PATH."""
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise NOT_FOUND_PATH
        if len(rest) < 3 or rest[0] != "namespaces" or len(rest) > 5:
            raise NOT_FOUND_PATH
        ns, resource = rest[1], rest[2]
        name = rest[3] if len(rest) > 3 else None
        sub = rest[4] if len(rest) > 4 else None
        if resource not in RESOURCES or RESOURCES[resource][:2] != (group, version):
            raise NOT_FOUND_PATH
        if sub is not None and not (sub == "scale" and resource in SCALABLE):
            raise NOT_FOUND_PATH
        return resource, ns, name, sub

    def handle(self, req):
        """-> (status, body dict)."""
        self._authenticate(req)
        resource, ns, name, sub = self._route(req.path)
        m = req.method
        verb = {"GET": "get" if name else "list", "POST": "create", "PATCH": "patch", "PUT": "update",
                "DELETE": "delete" if name else "deletecollection"}.get(m)
        if verb is None:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        self._authorize(verb, resource + ("/" + sub if sub else ""), ns, name)
        with self._lock:
            if sub == "scale":
                return self._scale(req, resource, ns, name)
            if m == "GET" and name:
                return 200, self._get(resource, ns, name)
            if m == "GET":
                return 200, self._list(req, resource, ns)
            if m == "POST" and not name and resource == "jobs":
                return self._create_job(req, ns)
            if m == "PATCH" and name and resource in WORKLOADS:
                return 200, self._patch(req, resource, ns, name)
            if m == "DELETE" and name and resource in ("pods", "jobs"):
                return 200, self._delete(req, resource, ns, name)
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _public(self, obj):
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    def _get(self, resource, ns, name, on_get=True):
        key = (resource, ns, name)
        obj = self._objects.get(key)
        if obj is None:
            raise not_found(resource, name)
        if resource in WORKLOADS:
            self._advance(key, obj, on_get)
        if resource == "jobs":
            obj["status"] = self._job_status(obj)
        return copy.deepcopy(self._public(obj))

    def _list(self, req, resource, ns):
        p = req.params
        try:
            reqs = parse_selector(p.get("labelSelector", [""])[0])
        except ValueError as e:
            raise bad_request(str(e))
        names = sorted(n for (r, s, n) in self._objects if r == resource and s == ns)
        items = []
        for n in names:
            o = self._objects[(resource, ns, n)]
            if selector_matches(reqs, o["metadata"].get("labels")):
                items.append(self._get(resource, ns, n, on_get=False))
        start = 0
        cont = p.get("continue", [""])[0]
        if cont:
            try:
                start = int(json.loads(base64.b64decode(cont).decode())["start"])
            except Exception:
                raise bad_request("continue key is not valid: illegal base64 data at input byte 0")
        limit = int(p.get("limit", ["0"])[0] or 0)
        md = {"resourceVersion": str(self._rv)}
        page = items[start:]
        if limit > 0 and len(page) > limit:
            page = page[:limit]
            md["continue"] = base64.b64encode(json.dumps({"start": start + limit}).encode()).decode()
            md["remainingItemCount"] = len(items) - start - limit
        kind = RESOURCES[resource][2] + "List"
        group, version, _ = RESOURCES[resource]
        return {"kind": kind, "apiVersion": (group + "/" if group else "") + version, "metadata": md, "items": page}

    def _body_json(self, req):
        try:
            return json.loads(req.body.decode("utf-8")) if req.body else None
        except ValueError as e:
            raise bad_request("error decoding the request body: %s" % e)

    def _patch(self, req, resource, ns, name):
        ctype = (req.header("Content-Type") or "").split(";")[0].strip()
        if ctype not in PATCH_TYPES:
            raise ApiError(415, "UnsupportedMediaType",
                           "the body of the request was in an unknown format - accepted media types include: "
                           "application/json-patch+json, application/merge-patch+json, "
                           "application/apply-patch+yaml, application/strategic-merge-patch+json")
        patch = self._body_json(req)
        if not isinstance(patch, dict):
            raise bad_request("the request body must be a JSON object")
        key = (resource, ns, name)
        obj = self._objects.get(key)
        if obj is None:
            raise not_found(resource, name)
        self._advance(key, obj, False)
        new = merge_patch(obj, patch)
        for f in ("uid", "name", "namespace", "creationTimestamp", "generation", "resourceVersion"):
            if f in obj["metadata"]:
                new["metadata"][f] = obj["metadata"][f]
        new["status"] = obj["status"]
        if new.get("spec") != obj.get("spec"):
            new["metadata"]["generation"] = obj["metadata"]["generation"] + 1
            steps = self._start_rollout(resource, new, obj["status"])
            self._rollouts[key] = {"steps": steps, "i": -1, "t0": time.time()}  # the next GET shows steps[0]
            new["status"] = copy.deepcopy(steps[0])
        new["metadata"]["resourceVersion"] = self._next_rv()
        self._objects[key] = new
        return copy.deepcopy(self._public(new))

    def _delete(self, req, resource, ns, name):
        key = (resource, ns, name)
        opts = self._body_json(req) or {}
        obj = self._objects.get(key)
        if obj is None:
            raise not_found(resource, name)
        want_uid = (opts.get("preconditions") or {}).get("uid")
        if want_uid is not None and want_uid != obj["metadata"]["uid"]:
            raise conflict(resource, name, "Precondition failed: UID in precondition: %s, UID in object meta: %s"
                           % (want_uid, obj["metadata"]["uid"]))
        want_rv = (opts.get("preconditions") or {}).get("resourceVersion")
        if want_rv is not None and want_rv != obj["metadata"]["resourceVersion"]:
            raise conflict(resource, name, "Precondition failed: ResourceVersion in precondition: %s, "
                           "ResourceVersion in object meta: %s" % (want_rv, obj["metadata"]["resourceVersion"]))
        del self._objects[key]
        out = copy.deepcopy(self._public(obj))
        out["metadata"]["deletionTimestamp"] = now_rfc3339()
        out["metadata"]["deletionGracePeriodSeconds"] = opts.get("gracePeriodSeconds", 30)
        return out

    def _create_job(self, req, ns):
        job = self._body_json(req)
        if not isinstance(job, dict) or job.get("kind") != "Job" or job.get("apiVersion") != "batch/v1":
            raise bad_request("the body must be a batch/v1 Job")
        md = job.setdefault("metadata", {})
        name = md.get("name")
        if not name or not isinstance(name, str):
            raise ApiError(422, "Invalid", 'Job.batch "" is invalid: metadata.name: Required value: name or '
                           'generateName is required',
                           {"group": "batch", "kind": "Job", "causes": [
                               {"reason": "FieldValueRequired", "message": "Required value: name or generateName "
                                "is required", "field": "metadata.name"}]})
        if len(name) > 63 or not DNS1123_LABEL.match(name):
            msg = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                   "and must start and end with an alphanumeric character") if len(name) <= 63 else \
                "must be no more than 63 characters"
            raise ApiError(422, "Invalid", 'Job.batch "%s" is invalid: metadata.name: Invalid value: "%s": %s'
                           % (name, name, msg),
                           {"name": name, "group": "batch", "kind": "Job", "causes": [
                               {"reason": "FieldValueInvalid", "message": "Invalid value: \"%s\": %s" % (name, msg),
                                "field": "metadata.name"}]})
        if md.get("namespace") not in (None, ns):
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        if ("jobs", ns, name) in self._objects:
            raise already_exists("jobs", name)
        md["namespace"] = ns
        md["uid"] = str(uuid.uuid4())
        md["creationTimestamp"] = now_rfc3339()
        md["resourceVersion"] = self._next_rv()
        md["generation"] = 1
        job["_created"] = time.time()
        job["status"] = {}
        self._objects[("jobs", ns, name)] = job
        return 201, copy.deepcopy(self._public(job))

    def _scale(self, req, resource, ns, name):
        key = (resource, ns, name)
        obj = self._objects.get(key)
        if obj is None:
            raise not_found(resource, name)

        def scale_obj(o):
            sel = ",".join("%s=%s" % kv for kv in sorted(
                ((o["spec"].get("selector") or {}).get("matchLabels") or {}).items()))
            return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                    "metadata": {"name": name, "namespace": ns, "uid": o["metadata"]["uid"],
                                 "resourceVersion": o["metadata"]["resourceVersion"],
                                 "creationTimestamp": o["metadata"]["creationTimestamp"]},
                    "spec": {"replicas": o["spec"].get("replicas", 1)},
                    "status": {"replicas": o["status"].get("replicas", 0), "selector": sel}}

        if req.method == "GET":
            return 200, scale_obj(obj)
        body = self._body_json(req)
        if req.method == "PATCH":
            ctype = (req.header("Content-Type") or "").split(";")[0].strip()
            if ctype not in PATCH_TYPES:
                raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format")
            new = merge_patch(scale_obj(obj), body or {})
        elif req.method == "PUT":
            if not isinstance(body, dict) or body.get("kind") != "Scale":
                raise bad_request("the body must be an autoscaling/v1 Scale")
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if rv and rv != obj["metadata"]["resourceVersion"]:
                raise conflict(resource, name, "the object has been modified; please apply your changes to the "
                               "latest version and try again")
            new = body
        else:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        replicas = (new.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, "Invalid", 'Scale.autoscaling "%s" is invalid: spec.replicas: Invalid value: %s: '
                           'must be greater than or equal to 0' % (name, json.dumps(replicas)),
                           {"name": name, "group": "autoscaling", "kind": "Scale"})
        if replicas != obj["spec"].get("replicas"):
            obj["spec"]["replicas"] = replicas
            obj["metadata"]["generation"] += 1
            self._rollouts.pop(key, None)
            obj["status"] = self._settled_status(resource, obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        return 200, scale_obj(obj)


# ---------------------------------------------------------------- HTTP

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "k8s-fake/1"

    def log_message(self, fmt, *args):
        pass

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16) if line else 0
                if size == 0:
                    while True:
                        t = self.rfile.readline(65537)
                        if not t or t in (b"\r\n", b"\n"):
                            break
                    break
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(n) if n > 0 else b""

    def _handle(self):
        fake = self.server.fake
        split = urllib.parse.urlsplit(self.path)
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            return self._send(413, ApiError(413, "RequestEntityTooLarge", "request entity too large").status())
        req = Request(time.time(), self.command, split.path, split.query, list(self.headers.items()), body)
        fake._record(req)
        try:
            status, doc = fake.handle(req)
        except ApiError as e:
            status, doc = e.code, e.status()
        except Exception as e:  # a bug in the fake: show it as the API server would
            status, doc = 500, ApiError(500, "InternalError", "fake: %r" % (e,)).status()
        req.status = status
        if fake.on_request:
            try:
                fake.on_request(req)
            except Exception:
                pass
        self._send(status, doc)

    def _send(self, status, doc):
        data = json.dumps(doc, separators=(",", ":")).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


K8sFake.handler_class = _Handler


def main(argv=None):
    ap = fakeserver.parser("Fake Kubernetes API (plain HTTP)")
    ap.add_argument("--token-file", help="require Authorization: Bearer <the file's content>")
    ap.add_argument("--state", help="JSON seed: a list of objects or {objects, deny, fail_rollouts, ...}")
    a = ap.parse_args(argv)
    seed = None
    if a.state:
        with open(a.state) as f:
            seed = json.load(f)
    fake = K8sFake(token_file=a.token_file, seed=seed, port=a.port, host=a.host)
    fake.on_request = fakeserver.json_printer()
    return fakeserver.serve(fake)


if __name__ == "__main__":
    sys.exit(main())

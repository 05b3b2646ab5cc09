"""The Lua helper recovery.k8s inside the real daemon, against the fake
Kubernetes API of tests/fakes/k8s_fake.py."""

import json
import re
import time
import unittest
import urllib.error
import urllib.request

from harness import find_actions, flat_strings
from k8s_fake import K8sFake, parse_selector, selector_matches
from k8s_support import K8sTestCase, default_objects

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def first_error(rec):
    return str((rec.get("attempts") or [{}])[-1].get("error"))


class RolloutTest(K8sTestCase):

    def check_kubectl_patch(self, req, resource, name, t0):
        self.assertEqual(req.path, "/apis/apps/v1/namespaces/default/%s/%s" % (resource, name))
        self.assertEqual(req.params, {"fieldManager": ["kubectl-rollout"]})
        self.assertEqual(req.header("Content-Type"), "application/strategic-merge-patch+json")
        self.assertEqual(req.header("Authorization"), "Bearer " + self.token)
        self.assertEqual(req.header("Accept"), "application/json")
        body = req.json()
        ts = body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
        self.assertEqual(body, {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: ts}}}}})
        self.assertRegex(ts, RFC3339)
        when = time.mktime(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        self.assertLessEqual(abs(when - t0), 10, ts)
        # exactly kubectl's bytes: compact, one key per level
        self.assertEqual(req.body.decode(), json.dumps(body, separators=(",", ":")))

    def test_restart_and_wait_deployment(self):
        fake = self.k8s_fake()
        run = '''
local c = client()
local ok, info = c:rollout_restart("deployment", "web")
check(ok, "restart: " .. tostring(info))
check(info.metadata.generation == 2, "generation after the patch")
local done, msg = c:wait_rollout("deployment", "web", { timeout = 10, interval = 0.05 })
check(done, "wait: " .. tostring(msg))
recovery.log.info("rolled", { msg = msg })
'''
        t0 = time.time()
        rec = self.run_playbook(fake, run)
        self.assertSucceeded(rec)
        patches = fake.requests(method="PATCH")
        self.assertEqual(len(patches), 1, fake.requests())
        self.check_kubectl_patch(patches[0], "deployments", "web", t0)
        self.assertEqual(self.log_fields(rec, "rolled"), [{"msg": 'deployment "web" successfully rolled out'}])
        gets = fake.requests(method="GET", path="/apis/apps/v1/namespaces/default/deployments/web")
        self.assertGreaterEqual(len(gets), 4, "the rollout was watched while it progressed")
        dep = fake.get_object("Deployment", "default", "web")
        self.assertEqual(dep["metadata"]["generation"], 2)
        self.assertIn(RESTARTED_AT, dep["spec"]["template"]["metadata"]["annotations"])
        self.assertEqual(dep["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.27", "patch merged")
        self.assertEqual(fake.writes(), patches)
        # the token never reaches the record or the log
        self.assertNotIn(self.token, json.dumps(rec))
        self.assertNotIn(self.token, self.daemon_.log_text())

    def test_restart_statefulset_and_daemonset(self):
        fake = self.k8s_fake()
        run = '''
local c = client()
for _, kind in ipairs({ "statefulset", "daemonset" }) do
  local name = kind == "statefulset" and "db" or "agent"
  local ok, err = c:rollout_restart(kind, name)
  check(ok, tostring(err))
  local done, msg = c:wait_rollout(kind, name, { timeout = 10, interval = 0.05 })
  check(done, tostring(msg))
  recovery.log.info("rolled", { msg = msg })
end
'''
        t0 = time.time()
        rec = self.run_playbook(fake, run)
        self.assertSucceeded(rec)
        patches = fake.requests(method="PATCH")
        self.assertEqual(len(patches), 2)
        self.check_kubectl_patch(patches[0], "statefulsets", "db", t0)
        self.check_kubectl_patch(patches[1], "daemonsets", "agent", t0)
        self.assertEqual([f["msg"] for f in self.log_fields(rec, "rolled")],
                         ["partitioned roll out complete: 2 new pods have been updated...",
                          'daemon set "agent" successfully rolled out'])

    def test_progress_deadline_exceeded_fails_the_attempt(self):
        fake = self.k8s_fake(fail_rollouts={"deployment/default/web"})
        run = '''
local c = client()
must(c:rollout_restart("deployment", "web"))
local ok, err = c:wait_rollout("deployment", "web", { timeout = 10, interval = 0.05 })
check(not ok and err.reason == "ProgressDeadlineExceeded", "unexpected: " .. tostring(err))
error(err)
'''
        t0 = time.monotonic()
        rec = self.run_playbook(fake, run)
        self.assertEqual(rec["state"], "failed", rec)
        self.assertIn('ProgressDeadlineExceeded (0): deployment "web" exceeded its progress deadline', first_error(rec))
        self.assertLess(time.monotonic() - t0, 8, "failed fast, not after the wait's timeout")

    def test_paused_deployment_is_refused(self):
        fake = self.k8s_fake()
        run = '''
local ok, err = client():rollout_restart("deployment", "paused")
check(not ok, "a paused deployment was restarted")
error(err)
'''
        rec = self.run_playbook(fake, run)
        self.assertEqual(rec["state"], "failed")
        self.assertIn('deployments.apps "paused" can\'t restart paused deployment (run rollout resume first)',
                      first_error(rec))
        self.assertEqual(fake.writes(), [])

    def test_scale(self):
        fake = self.k8s_fake()
        run = '''
local s = must(client():scale("deployment", "web", 5))
check(s.kind == "Scale" and s.spec.replicas == 5, "scale answer")
'''
        rec = self.run_playbook(fake, run)
        self.assertSucceeded(rec)
        (p,) = fake.writes()
        self.assertEqual((p.method, p.path), ("PATCH", "/apis/apps/v1/namespaces/default/deployments/web/scale"))
        self.assertEqual(p.header("Content-Type"), "application/merge-patch+json")
        self.assertEqual(p.json(), {"spec": {"replicas": 5}})
        self.assertEqual(fake.get_object("Deployment", "default", "web")["spec"]["replicas"], 5)


class PodsTest(K8sTestCase):

    def test_delete_pods_by_selector(self):
        fake = self.k8s_fake()
        uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in fake.objects("Pod")}
        run = '''
local names, info = client():delete_pods("app=web,tier!=canary", { grace = 0 })
check(names, "delete: " .. tostring(info))
recovery.log.info("deleted", { names = names, replaced = #info.replaced })
'''
        rec = self.run_playbook(fake, run)
        self.assertSucceeded(rec)
        self.assertEqual(self.log_fields(rec, "deleted"), [{"names": ["web-7d9f-a", "web-7d9f-b"], "replaced": 0}])
        (lst,) = fake.requests(method="GET")
        self.assertEqual(lst.path, "/api/v1/namespaces/default/pods")
        self.assertEqual(lst.params["labelSelector"], ["app=web,tier!=canary"])
        self.assertIn("labelSelector=app%3Dweb%2Ctier%21%3Dcanary", lst.query)
        deletes = fake.requests(method="DELETE")
        self.assertEqual([r.path for r in deletes], ["/api/v1/namespaces/default/pods/web-7d9f-a",
                                                     "/api/v1/namespaces/default/pods/web-7d9f-b"])
        for r in deletes:
            name = r.path.rsplit("/", 1)[1]
            self.assertEqual(r.json(), {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                                        "propagationPolicy": "Background", "preconditions": {"uid": uids[name]}})
            self.assertEqual(r.status, 200)
        left = sorted(p["metadata"]["name"] for p in fake.objects("Pod"))
        self.assertEqual(left, ["db-0", "other-ns-web", "web-canary"])

    def test_delete_pods_paginates_and_skips_replaced(self):
        objects = [{"kind": "Pod", "metadata": {"name": "p-%02d" % i, "labels": {"app": "many"}}} for i in range(7)]
        fake = self.k8s_fake(objects=objects)
        lists = []

        def recreate_p03(req):
            # a controller recreates p-03 (new uid) after the list, while p-00 is deleted
            if req.method == "GET" and req.path.endswith("/pods"):
                lists.append(req)
            if req.method == "DELETE" and req.path.endswith("/p-00"):
                fake.add({"kind": "Pod", "metadata": {"name": "p-03", "labels": {"app": "many"}}})
        fake.on_request = recreate_p03
        run = '''
local c = k8s.client{ base_url = K8S, token_file = TOKEN_FILE, namespace = "default", page_size = 3 }
local names, info = c:delete_pods("app in (many)")
check(names, tostring(info))
recovery.log.info("deleted", { n = #names, replaced = info.replaced })
'''
        rec = self.run_playbook(fake, run)
        self.assertSucceeded(rec)
        self.assertEqual(self.log_fields(rec, "deleted"), [{"n": 6, "replaced": ["p-03"]}])
        conflict = [r for r in fake.requests(method="DELETE") if r.status == 409]
        self.assertEqual([r.path.rsplit("/", 1)[1] for r in conflict], ["p-03"])
        self.assertEqual([p["metadata"]["name"] for p in fake.objects("Pod")], ["p-03"])
        self.assertEqual([r.params.get("limit") for r in lists], [["3"]] * 3, "7 pods in pages of 3")
        self.assertEqual([bool(r.params.get("continue")) for r in lists], [False, True, True])


class JobTest(K8sTestCase):

    def test_job_from_cronjob_and_wait(self):
        fake = self.k8s_fake()
        run = '''
local c = client()
local name, obj = c:job_from_cronjob("nightly-sync")
check(name, "create: " .. tostring(obj))
check(obj.metadata.name == name, "created object")
local ok, msg = c:wait_job(name, { timeout = 10, interval = 0.05 })
check(ok, "wait: " .. tostring(msg))
recovery.log.info("job", { name = name, msg = msg })
'''
        t0 = int(time.time())
        rec = self.run_playbook(fake, run)
        self.assertSucceeded(rec)
        (post,) = fake.requests(method="POST")
        self.assertEqual(post.path, "/apis/batch/v1/namespaces/default/jobs")
        self.assertEqual(post.header("Content-Type"), "application/json")
        self.assertEqual(post.status, 201)
        job = post.json()
        cj = fake.get_object("CronJob", "default", "nightly-sync")
        name = job["metadata"]["name"]
        m = re.match(r"^nightly-sync-manual-(\d+)$", name)
        self.assertTrue(m, name)
        self.assertLessEqual(abs(int(m.group(1)) - t0), 10)
        self.assertEqual(job, {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name,
                         "annotations": {"cronjob.kubernetes.io/instantiate": "manual", "owner": "platform"},
                         "labels": {"app": "nightly-sync"},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly-sync",
                                              "uid": cj["metadata"]["uid"], "controller": True}]},
            "spec": cj["spec"]["jobTemplate"]["spec"]})
        self.assertIn('"args":[],"env":[]', post.body.decode(), "empty lists survive the copy")
        self.assertEqual(self.log_fields(rec, "job")[0]["name"], name)
        self.assertIn("completed", self.log_fields(rec, "job")[0]["msg"])
        self.assertEqual([r.path for r in fake.requests(method="GET")][0],
                         "/apis/batch/v1/namespaces/default/cronjobs/nightly-sync")

    def test_failed_job(self):
        fake = self.k8s_fake(fail_jobs={"nightly-sync"})
        run = '''
local c = client()
local name = must(c:job_from_cronjob("nightly-sync", { name = "sync-by-hand" }))
local ok, err = c:wait_job(name, { timeout = 10, interval = 0.05 })
check(not ok and err.reason == "JobFailed", "unexpected: " .. tostring(err))
error(err)
'''
        rec = self.run_playbook(fake, run)
        self.assertEqual(rec["state"], "failed")
        self.assertIn("JobFailed (0): job sync-by-hand failed: BackoffLimitExceeded: "
                      "Job has reached the specified backoff limit", first_error(rec))


class ErrorsTest(K8sTestCase):

    def test_404_403_409_are_nil_err(self):
        fake = self.k8s_fake()
        fake.deny("delete", "pods")
        fake.add({"kind": "Job", "metadata": {"name": "taken"}, "spec": {}})
        run = '''
local c = client()
local v, e404 = c:get("deployment", "missing")
check(v == nil and e404.code == 404 and e404.reason == "NotFound", "404: " .. tostring(e404))
check(e404.status.details.name == "missing" and e404.status.details.group == "apps", "404 details")
local n, e403 = c:delete_pods("app=db")
check(n == nil and e403.code == 403 and e403.reason == "Forbidden", "403: " .. tostring(e403))
local j, e409 = c:job_from_cronjob("nightly-sync", { name = "taken" })
check(j == nil and e409.code == 409 and e409.reason == "AlreadyExists", "409: " .. tostring(e409))
local r, ecj = c:job_from_cronjob("no-such-cronjob")
check(r == nil and ecj.code == 404, "cronjob 404")
error(table.concat({ tostring(e404), tostring(e403), tostring(e409) }, " | "))
'''
        rec = self.run_playbook(fake, run)
        self.assertEqual(rec["state"], "failed")
        err = first_error(rec)
        self.assertIn('NotFound (404): deployments.apps "missing" not found', err)
        self.assertIn('Forbidden (403): pods "db-0" is forbidden: User "system:serviceaccount:ops:recoveryd" '
                      'cannot delete resource "pods" in API group "" in the namespace "default"', err)
        self.assertIn('AlreadyExists (409): jobs.batch "taken" already exists', err)
        self.assertTrue(fake.get_object("Pod", "default", "db-0"), "the denied delete did not happen")

    def test_token_rotation(self):
        fake = self.k8s_fake()
        old = self.token
        state = {}

        def rotate_after_first(req):
            # the kubelet rotates the projected token right after the first request
            if req.status == 200 and "new" not in state:
                state["new"] = self.write_token()
        fake.on_request = rotate_after_first
        run = '''
local c = client()
must(c:get("deployment", "web"))
local ok, info = c:rollout_restart("deployment", "web")
check(ok, "restart after rotation: " .. tostring(info))
'''
        rec = self.run_playbook(fake, run)
        self.assertSucceeded(rec)
        new = state["new"]
        seen = [(r.method, r.status, r.header("Authorization")) for r in fake.requests()]
        self.assertEqual(seen, [("GET", 200, "Bearer " + old),
                                ("GET", 401, "Bearer " + old),   # cached token: rejected
                                ("GET", 200, "Bearer " + new),   # re-read and retried once
                                ("PATCH", 200, "Bearer " + new)])
        self.assertEqual(fake.requests()[1].path, fake.requests()[2].path)
        for tok in (old, new):
            self.assertNotIn(tok, json.dumps(rec))

    def test_wrong_token_gives_unauthorized(self):
        fake = self.k8s_fake()
        run = '''
local c = k8s.client{ base_url = K8S, token = "not-the-token", namespace = "default" }
local v, err = c:get("pod", "db-0")
check(v == nil and err.code == 401 and err.reason == "Unauthorized", tostring(err))
error(err)
'''
        rec = self.run_playbook(fake, run)
        self.assertEqual(rec["state"], "failed")
        self.assertIn("Unauthorized (401): Unauthorized", first_error(rec))
        self.assertEqual(len(fake.requests()), 1, "a fixed token is not retried")

    def test_token_file_outside_read_allow_raises(self):
        fake = self.k8s_fake()
        run = '''
local c = k8s.client{ base_url = K8S, token_file = "/etc/hostname", namespace = "default" }
c:get("pod", "db-0")
'''
        rec = self.run_playbook(fake, run)
        self.assertEqual(rec["state"], "failed")
        self.assertIn("outside the allowed directories", first_error(rec))
        self.assertEqual(fake.requests(), [])


class DryRunTest(K8sTestCase):

    def test_dry_run_plans_writes(self):
        fake = self.k8s_fake()
        run = '''
local c = client()
local ok, info = c:rollout_restart("deployment", "web")
check(ok == true and info.planned == true, "restart planned")
local done, note = c:wait_rollout("deployment", "web", { timeout = 10 })
check(done == true and note:find("^planned"), "wait: " .. tostring(note))
local names, dinfo = c:delete_pods("app=web")
check(#names == 3 and dinfo.planned, "deletes planned")
local job, jinfo = c:job_from_cronjob("nightly-sync")
check(job and jinfo.planned, "job planned")
check(c:wait_job(job), "wait_job planned")
local s = must(c:scale("deployment", "web", 0))
check(s.planned, "scale planned")
recovery.log.info("planned", { note = note })
'''
        rec = self.run_playbook(fake, run, dry_run=True)
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertIs(rec["dry_run"], True)
        self.assertEqual(rec["outcome"], "dry_run_succeeded")
        self.assertEqual(fake.writes(), [], "the fake received a write in dry-run")
        self.assertTrue(all(r.method == "GET" for r in fake.requests()))
        planned = find_actions(rec, "PATCH", "/deployments/web?fieldManager=kubectl-rollout", planned=True)
        self.assertEqual(len(planned), 1, rec.get("actions"))
        self.assertEqual(len(find_actions(rec, "DELETE", "/pods/", planned=True)), 3)
        self.assertEqual(len(find_actions(rec, "POST", "/jobs", planned=True)), 1)
        self.assertEqual(len(find_actions(rec, "PATCH", "/scale", planned=True)), 1)
        dep = fake.get_object("Deployment", "default", "web")
        self.assertEqual(dep["metadata"]["generation"], 1)
        self.assertNotIn("kubectl.kubernetes.io/restartedAt", json.dumps(dep))
        self.assertNotIn(self.token, "\n".join(flat_strings(rec)))


class FakeSelfTest(unittest.TestCase):
    """The fake itself (no daemon): selectors, progressing status, errors."""

    def setUp(self):
        self.fake = K8sFake(seed={"objects": default_objects()}).start()  # no token file: no auth
        self.addCleanup(self.fake.stop)

    def call(self, method, path, body=None, ctype="application/json"):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.fake.url + path, data=data, method=method, headers={"Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def test_selectors(self):
        labels = {"app": "web", "tier": "canary"}
        for sel, want in [("app=web", True), ("app==web", True), ("app!=web", False), ("tier in (a,canary)", True),
                          ("tier notin (canary)", False), ("app", True), ("!app", False), ("!zone", True),
                          ("zone!=x", True), ("app=web,tier!=canary", False), ("", True)]:
            self.assertEqual(selector_matches(parse_selector(sel), labels), want, sel)
        self.assertRaises(ValueError, parse_selector, "app=web,,x")
        st, doc = self.call("GET", "/api/v1/namespaces/default/pods?labelSelector=app%3D%28x")
        self.assertEqual((st, doc["reason"]), (400, "BadRequest"))
        st, doc = self.call("GET", "/api/v1/namespaces/default/pods?labelSelector=tier%20notin%20%28canary%29")
        self.assertEqual([p["metadata"]["name"] for p in doc["items"]], ["db-0", "web-7d9f-a", "web-7d9f-b"])

    def test_rollout_progresses_per_get(self):
        path = "/apis/apps/v1/namespaces/default/deployments/web"
        patch = {"spec": {"template": {"metadata": {"annotations": {"x": "1"}}}}}
        st, obj = self.call("PATCH", path, patch, "application/strategic-merge-patch+json")
        self.assertEqual((st, obj["metadata"]["generation"], obj["status"]["observedGeneration"]), (200, 2, 1))
        seen = []
        for _ in range(10):
            seen.append(self.call("GET", path)[1]["status"])
        self.assertEqual(seen[0]["observedGeneration"], 1, "first GET: not observed yet")
        self.assertEqual([s["updatedReplicas"] for s in seen[1:5]], [0, 1, 2, 2])
        self.assertEqual(seen[-1]["availableReplicas"], 2)
        self.assertEqual(self.call("PATCH", path, patch, "application/json-patch+json")[0], 415)

    def test_time_based_rollout_and_failures(self):
        self.fake.rollout_step = 0.05
        self.fake.fail_rollouts.add("statefulset/default/db")
        path = "/apis/apps/v1/namespaces/default/statefulsets/db"
        self.call("PATCH", path, {"spec": {"template": {"metadata": {"annotations": {"x": "1"}}}}},
                  "application/merge-patch+json")
        time.sleep(0.3)
        st = self.call("GET", path)[1]["status"]
        self.assertEqual((st["observedGeneration"], st["readyReplicas"], st["updatedReplicas"]), (2, 1, 0), st)

    def test_jobs_and_errors(self):
        path = "/apis/batch/v1/namespaces/default/jobs"
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j1"}, "spec": {}}
        self.assertEqual(self.call("POST", path, job)[0], 201)
        st, doc = self.call("POST", path, job)
        self.assertEqual((st, doc["reason"], doc["details"]), (409, "AlreadyExists",
                                                               {"name": "j1", "group": "batch", "kind": "jobs"}))
        long = dict(job, metadata={"name": "x" * 64})
        self.assertEqual(self.call("POST", path, long)[1]["reason"], "Invalid")
        st, doc = self.call("GET", "/apis/apps/v1/namespaces/default/deployments/nope")
        self.assertEqual(doc, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": 'deployments.apps "nope" not found', "reason": "NotFound",
                               "details": {"name": "nope", "group": "apps", "kind": "deployments"}, "code": 404})
        self.assertEqual(self.call("GET", "/api/v1/namespaces/default/widgets")[1]["message"],
                         "the server could not find the requested resource")
        self.fake.deny("patch", "deployments/scale")
        st, doc = self.call("PATCH", "/apis/apps/v1/namespaces/default/deployments/web/scale",
                            {"spec": {"replicas": 1}}, "application/merge-patch+json")
        self.assertEqual((st, doc["reason"]), (403, "Forbidden"))
        self.assertIn('cannot patch resource "deployments/scale" in API group "apps"', doc["message"])
        st, scale = self.call("GET", "/apis/apps/v1/namespaces/default/statefulsets/db/scale")
        self.assertEqual((scale["kind"], scale["spec"]["replicas"], scale["status"]["selector"]), ("Scale", 2, "app=db"))


if __name__ == "__main__":
    unittest.main()

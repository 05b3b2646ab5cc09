"""Support for tests of the Lua helper recovery.k8s against tests/fakes/k8s_fake.py.

K8sTestCase gives each test a service-account directory in its temporary
directory (token file, passed to the daemon with --read-allow), a fake API
server that checks that token, and playbooks whose prelude defines:

    k8s, util      require "recovery.k8s", require "recovery.util"
    K8S            the fake's base URL (also FAKE)
    TOKEN_FILE     the token file
    client()       k8s.client{base_url = K8S, token_file = TOKEN_FILE, namespace = "default", timeout = 5}
    check(cond, msg)  error(msg) unless cond
"""

import os
import secrets
import tempfile

from harness import RecoverydTestCase, lua_str, playbook
from k8s_fake import K8sFake  # tests/fakes is on sys.path (harness.py puts it there)

MATCH = ['alertname="K8sLibTest"']

PRELUDE = """local k8s = require "recovery.k8s"
local util = require "recovery.util"
local K8S = FAKE
local TOKEN_FILE = %s
local function client() return k8s.client{base_url = K8S, token_file = TOKEN_FILE, namespace = "default", timeout = 5} end
local function check(cond, msg) if not cond then error(msg, 2) end end"""


def default_objects():
    """The cluster most tests start from (namespace "default")."""
    tmpl = {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}
    return [
        {"kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": tmpl}},
        {"kind": "Deployment", "metadata": {"name": "paused"},
         "spec": {"replicas": 1, "paused": True, "selector": {"matchLabels": {"app": "paused"}},
                  "template": {"metadata": {"labels": {"app": "paused"}}, "spec": {}}}},
        {"kind": "StatefulSet", "metadata": {"name": "db"},
         "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                  "template": {"metadata": {"labels": {"app": "db"}}, "spec": {}}}},
        {"kind": "DaemonSet", "metadata": {"name": "agent"},
         "spec": {"selector": {"matchLabels": {"app": "agent"}},
                  "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {}}}},
        {"kind": "Pod", "metadata": {"name": "web-7d9f-a", "labels": {"app": "web", "tier": "frontend"}}},
        {"kind": "Pod", "metadata": {"name": "web-7d9f-b", "labels": {"app": "web", "tier": "frontend"}}},
        {"kind": "Pod", "metadata": {"name": "web-canary", "labels": {"app": "web", "tier": "canary"}}},
        {"kind": "Pod", "metadata": {"name": "db-0", "labels": {"app": "db"}}},
        {"kind": "Pod", "metadata": {"name": "other-ns-web", "namespace": "other", "labels": {"app": "web"}}},
        {"kind": "CronJob", "metadata": {"name": "nightly-sync", "labels": {"team": "platform"}},
         "spec": {"schedule": "0 3 * * *", "jobTemplate": {
             "metadata": {"labels": {"app": "nightly-sync"}, "annotations": {"owner": "platform"}},
             "spec": {"backoffLimit": 1, "template": {"spec": {
                 "restartPolicy": "Never",
                 "containers": [{"name": "sync", "image": "sync:1", "args": [], "env": []}],
                 "volumes": [{"name": "scratch", "emptyDir": {}}]}}}}}},
    ]


class K8sTestCase(RecoverydTestCase):

    def setUp(self):
        super().setUp()
        # The service-account directory: a sibling of the daemon's files.
        self.sa_dir = tempfile.mkdtemp(prefix="sa-", dir=self.tmpdir)
        self.token_file = os.path.join(self.sa_dir, "token")
        self.token = self.write_token()

    def write_token(self, value=None):
        """(Re)write the token file atomically, as the kubelet does; returns the token."""
        value = value or ("tok-" + secrets.token_hex(16))
        tmp = self.token_file + ".new"
        with open(tmp, "w") as f:
            f.write(value + "\n")
        os.replace(tmp, self.token_file)
        return value

    def k8s_fake(self, objects=None, **kw):
        kw.setdefault("job_delay", 0.2)
        fake = K8sFake(token_file=self.token_file, seed={"objects": default_objects() if objects is None else objects},
                       **kw).start()
        self.addCleanup(fake.stop)
        return fake

    def k8s_playbook(self, name, run, verify="return true", fake=None, **kw):
        kw.setdefault("match", MATCH)
        kw.setdefault("timeout", 20)
        return playbook(name, run, verify, fake=fake, prelude=PRELUDE % lua_str(self.token_file), **kw)

    def k8s_daemon(self, playbooks, dry_run=False, extra=()):
        args = ["--read-allow", self.sa_dir] + (["--dry-run"] if dry_run else []) + list(extra)
        return self.daemon(playbooks, extra_args=args)

    def run_job(self, d, name, timeout=20):
        st, _, doc = d.trigger(name, {"labels": {"alertname": "K8sLibTest", "instance": name}, "reason": "test"})
        self.assertStatus(st, 202, d, doc)
        return d.wait_job(doc["jobs"][0]["id"], timeout=timeout)

    def run_playbook(self, fake, run, verify="return true", dry_run=False, timeout=20, **kw):
        """Start a daemon with one playbook "k" and run it to the end; returns the job record."""
        d = self.k8s_daemon({"k": self.k8s_playbook("k", run, verify, fake=fake, **kw)}, dry_run=dry_run)
        self.daemon_ = d
        return self.run_job(d, "k", timeout=timeout)

    def assertSucceeded(self, rec):
        if rec.get("state") != "succeeded":
            self.fail("job did not succeed: state %s, error %r\nattempts %r\nlog %r\n%s" % (
                rec.get("state"), rec.get("error"), rec.get("attempts"), rec.get("log"),
                self.daemon_.log_tail() if getattr(self, "daemon_", None) else ""))

    @staticmethod
    def log_fields(rec, msg):
        """fields of the job's log lines whose msg is msg."""
        return [l.get("fields") or {} for l in rec.get("log") or [] if l.get("msg") == msg]

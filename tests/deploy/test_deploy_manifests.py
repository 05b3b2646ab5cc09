"""The Kubernetes base in k8s/: the kustomizations are complete and
consistent, the copies of the playbooks and the Lua library match their
sources, the Deployment follows the rules of docs/operations.md (one replica,
Recreate, non-root, probes, grace > drain timeout, only real flags), the RBAC
is namespaced and bound to recoveryd's ServiceAccount, and the shipped config
passes the real binary's --check-config.

kubectl/kustomize are not needed (CI has neither): the kustomization is
checked structurally. When kubectl happens to be installed, a `kubectl
kustomize` build runs as well.
"""

import filecmp
import os
import re
import shutil
import tempfile
import unittest

import deploy_support as ds

BASE = "k8s/kustomization.yaml"
MON = "k8s/monitoring/kustomization.yaml"

# Files under k8s/ that are not loaded by a kustomization, and why.
NOT_KUSTOMIZE = {
    "k8s/monitoring/alert-rules.yml": "Prometheus rule file, source of prometheusrule.yaml",
    "k8s/monitoring/alert-rules.test.yml": "promtool unit tests",
    "k8s/monitoring/alertmanager.yml": "Alertmanager configuration file",
}


def kustomization_files(kfile):
    """(resources, generator files) of a kustomization, relative to the repo."""
    k = ds.load_yaml(kfile)
    base = os.path.dirname(kfile)
    resources = [os.path.normpath(os.path.join(base, r)) for r in k.get("resources") or []]
    generated = []
    for gen in (k.get("configMapGenerator") or []) + (k.get("secretGenerator") or []):
        for f in gen.get("files") or []:
            f = f.split("=", 1)[-1]  # key=path
            generated.append(os.path.normpath(os.path.join(base, f)))
    return k, resources, generated


def objects(files):
    out = []
    for f in files:
        for doc in ds.load_yaml_all(f):
            out.append((f, doc))
    return out


class KustomizationTest(unittest.TestCase):

    def test_every_listed_file_exists(self):
        for kfile in (BASE, MON):
            k, resources, generated = kustomization_files(kfile)
            self.assertEqual(k.get("kind"), "Kustomization", kfile)
            for f in resources + generated:
                self.assertTrue(os.path.isfile(ds.path(f)), "%s lists %s, which does not exist" % (kfile, f))
                self.assertFalse(f.startswith(".."), "%s: %s is outside the base (kustomize refuses it)" % (kfile, f))

    def test_every_file_is_listed(self):
        listed = set()
        for kfile in (BASE, MON):
            _, resources, generated = kustomization_files(kfile)
            for f in resources + generated:
                self.assertNotIn(f, listed, "%s is listed twice" % f)
                listed.add(f)
        listed |= {BASE, MON}
        missing = []
        for dirpath, _, names in os.walk(ds.K8S):
            for n in names:
                rel = os.path.relpath(os.path.join(dirpath, n), ds.ROOT)
                if rel not in listed and rel not in NOT_KUSTOMIZE:
                    missing.append(rel)
        self.assertEqual(missing, [], "files under k8s/ that no kustomization.yaml lists (add them to "
                                      "resources or configMapGenerator, or to NOT_KUSTOMIZE in this test)")
        for f in NOT_KUSTOMIZE:
            self.assertTrue(os.path.isfile(ds.path(f)), f)

    def test_resources_are_kubernetes_objects(self):
        for kfile in (BASE, MON):
            _, resources, _ = kustomization_files(kfile)
            for f, doc in objects(resources):
                self.assertIn("apiVersion", doc, f)
                self.assertIn("kind", doc, f)
                self.assertTrue(doc.get("metadata", {}).get("name"), "%s: %s without a name" % (f, doc.get("kind")))
                if doc["kind"] != "Namespace":
                    self.assertTrue(doc["metadata"].get("namespace"),
                                    "%s: %s/%s has no namespace (the base sets them explicitly)"
                                    % (f, doc["kind"], doc["metadata"]["name"]))

    def test_generated_configmaps_have_a_namespace(self):
        for kfile in (BASE, MON):
            k, _, _ = kustomization_files(kfile)
            for gen in k.get("configMapGenerator") or []:
                self.assertTrue(gen.get("namespace"), "%s: configMapGenerator %s without namespace" % (kfile, gen["name"]))

    def test_copies_match_their_sources(self):
        pairs = [("playbooks", "k8s/playbooks"), ("lua/recovery", "k8s/lua/recovery")]
        for src, dst in pairs:
            want = sorted(n for n in os.listdir(ds.path(src)) if n.endswith(".lua"))
            have = sorted(n for n in os.listdir(ds.path(dst)) if n.endswith(".lua"))
            fix = "cp %s/*.lua %s/ (and list new files in k8s/kustomization.yaml)" % (src, dst)
            self.assertEqual(have, want, "%s must hold exactly the files of %s: %s" % (dst, src, fix))
            for n in want:
                self.assertTrue(filecmp.cmp(ds.path(src, n), ds.path(dst, n), shallow=False),
                                "%s/%s differs from %s/%s: %s" % (dst, n, src, n, fix))

    @unittest.skipUnless(shutil.which("kubectl"), "kubectl not installed (optional check)")
    def test_kubectl_kustomize_builds(self):
        for d in ("k8s", "k8s/monitoring"):
            p = ds.run(["kubectl", "kustomize", d], timeout=120)
            self.assertEqual(p.returncode, 0, "kubectl kustomize %s:\n%s" % (d, p.stderr))
            self.assertIn("kind:", p.stdout)


class DeploymentTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        _, resources, _ = kustomization_files(BASE)
        cls.objs = [doc for _, doc in objects(resources)]
        cls.k = ds.load_yaml(BASE)

    def one(self, kind, name=None):
        found = [o for o in self.objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
        self.assertEqual(len(found), 1, "expected one %s %s, found %d" % (kind, name or "", len(found)))
        return found[0]

    def container(self):
        d = self.one("Deployment", "recoveryd")
        cs = d["spec"]["template"]["spec"]["containers"]
        self.assertEqual(len(cs), 1)
        return d, cs[0]

    def args(self):
        _, c = self.container()
        out = {}
        for a in c["args"]:
            self.assertTrue(a.startswith("--") and "=" in a, "write args as --flag=value: %r" % a)
            k, v = a[2:].split("=", 1)
            out.setdefault(k, []).append(v)
        return out

    def test_single_replica_recreate(self):
        d, _ = self.container()
        self.assertEqual(d["spec"]["replicas"], 1, "one journal, no leader election: exactly one replica")
        self.assertEqual(d["spec"]["strategy"]["type"], "Recreate", "two pods must never open the same journal")
        pvc = self.one("PersistentVolumeClaim")
        self.assertEqual(pvc["spec"]["accessModes"], ["ReadWriteOnce"])

    def test_security_context(self):
        d, c = self.container()
        pod = d["spec"]["template"]["spec"]["securityContext"]
        sc = c["securityContext"]
        self.assertTrue(pod["runAsNonRoot"])
        self.assertEqual(pod["runAsUser"], 65532)
        self.assertEqual(pod["seccompProfile"]["type"], "RuntimeDefault")
        self.assertTrue(sc["runAsNonRoot"])
        self.assertEqual(sc["runAsUser"], 65532)
        self.assertTrue(sc["readOnlyRootFilesystem"])
        self.assertFalse(sc["allowPrivilegeEscalation"])
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        self.assertNotIn("add", sc["capabilities"])
        self.assertEqual(sc["seccompProfile"]["type"], "RuntimeDefault")

    def test_probes_resources_and_grace(self):
        d, c = self.container()
        self.assertEqual(c["livenessProbe"]["httpGet"]["path"], "/healthz")
        self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/readyz")
        port_names = {p["name"]: p["containerPort"] for p in c["ports"]}
        self.assertEqual(port_names.get("http"), 9095)
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            self.assertIn(c[probe]["httpGet"]["port"], ("http", 9095), probe)
        for k in ("requests", "limits"):
            self.assertIn("memory", c["resources"][k])
            self.assertIn("cpu", c["resources"][k])
        drain = float(self.args().get("drain-timeout", ["30"])[-1])
        grace = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        self.assertGreaterEqual(grace, drain + 10, "terminationGracePeriodSeconds must exceed --drain-timeout")

    def test_args_are_real_flags(self):
        flags = ds.config_flags()
        self.assertIn("drain-timeout", flags, "could not read src/config.c's option table")
        args = self.args()
        for name in args:
            self.assertIn(name, flags, "--%s is not a recoveryd flag (src/config.c)" % name)
        for need in ("config", "listen", "playbooks", "lua-path", "state", "webhook-token-file",
                     "operator-token-file", "slack-webhook-url-file", "pagerduty-routing-key-file",
                     "secrets-dir", "exec-allow", "external-url"):
            self.assertIn(need, args, "--%s is missing from the Deployment's args" % need)
        self.assertNotIn("insecure-no-auth", args)
        self.assertNotIn("dry-run", args, "production runs real recoveries (staging: an overlay adds --dry-run)")
        self.assertEqual(args["listen"], ["0.0.0.0:9095"])
        self.assertEqual(args["exec-allow"], ["/usr/local/bin/deck"])

    def test_file_flags_point_into_mounts(self):
        d, c = self.container()
        spec = d["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = c["volumeMounts"]
        for m in mounts:
            self.assertIn(m["name"], volumes, "volumeMount %s has no volume" % m["name"])
        args = self.args()
        for flag in ("config", "playbooks", "state", "webhook-token-file", "operator-token-file",
                     "slack-webhook-url-file", "pagerduty-routing-key-file", "secrets-dir"):
            p = args[flag][0]
            covering = [m for m in mounts if p == m["mountPath"] or p.startswith(m["mountPath"].rstrip("/") + "/")]
            self.assertTrue(covering, "--%s=%s is not on a mounted volume" % (flag, p))
        # the Lua library ConfigMap is mounted as <lua-path>/recovery
        self.assertIn(args["lua-path"][0] + "/recovery", [m["mountPath"] for m in mounts])
        # secret files named in args exist as keys of the mounted Secret
        secrets = {o["metadata"]["name"]: o for o in self.objs if o["kind"] == "Secret"}
        for flag in ("webhook-token-file", "operator-token-file", "slack-webhook-url-file",
                     "pagerduty-routing-key-file"):
            p = args[flag][0]
            m = [m for m in mounts if p.startswith(m["mountPath"].rstrip("/") + "/")][0]
            vol = volumes[m["name"]]
            self.assertIn("secret", vol, "--%s must come from a Secret" % flag)
            sec = secrets[vol["secret"]["secretName"]]
            self.assertIn(p[len(m["mountPath"].rstrip("/")) + 1:], sec["stringData"], "--%s" % flag)
        # ConfigMaps: generated by the kustomization (or explicitly optional)
        generated = {g["name"] for g in self.k.get("configMapGenerator") or []}
        for v in spec["volumes"]:
            if "configMap" in v:
                name = v["configMap"]["name"]
                self.assertTrue(name in generated or v["configMap"].get("optional"),
                                "volume %s: ConfigMap %s is neither generated nor optional" % (v["name"], name))
        for v in spec["volumes"]:
            if "persistentVolumeClaim" in v:
                self.one("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"])
        self.assertIn("/tmp", [m["mountPath"] for m in mounts], "read-only root: /tmp must be an emptyDir")

    def test_service_and_serviceaccount(self):
        d, c = self.container()
        svc = self.one("Service", "recoveryd")
        port = svc["spec"]["ports"][0]
        self.assertEqual((port["name"], port["port"]), ("http", 9095))
        labels = d["spec"]["template"]["metadata"]["labels"]
        for k, v in svc["spec"]["selector"].items():
            self.assertEqual(labels.get(k), v, "the Service selector must match the pod labels")
        for k, v in d["spec"]["selector"]["matchLabels"].items():
            self.assertEqual(labels.get(k), v)
        sa = self.one("ServiceAccount", d["spec"]["template"]["spec"]["serviceAccountName"])
        self.assertEqual(sa["metadata"]["namespace"], d["metadata"]["namespace"])

    def test_rbac_is_namespaced_and_bound(self):
        kinds = {o["kind"] for o in self.objs}
        self.assertNotIn("ClusterRole", kinds, "least privilege: namespaced Roles only")
        self.assertNotIn("ClusterRoleBinding", kinds)
        roles = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in self.objs if o["kind"] == "Role"}
        self.assertTrue(roles)
        bindings = [o for o in self.objs if o["kind"] == "RoleBinding"]
        d, _ = self.container()
        sa = d["spec"]["template"]["spec"]["serviceAccountName"]
        bound = set()
        for b in bindings:
            ns = b["metadata"]["namespace"]
            self.assertEqual(b["roleRef"]["kind"], "Role")
            self.assertIn((ns, b["roleRef"]["name"]), roles, "RoleBinding %s: no such Role in %s" % (b["metadata"]["name"], ns))
            self.assertEqual(b["subjects"], [{"kind": "ServiceAccount", "name": sa,
                                              "namespace": d["metadata"]["namespace"]}])
            bound.add((ns, b["roleRef"]["name"]))
        self.assertEqual(bound, set(roles), "every Role is bound")
        for role in roles.values():
            for rule in role["rules"]:
                self.assertNotIn("*", rule["verbs"])
                self.assertNotIn("*", rule["resources"])
                for v in ("escalate", "bind", "impersonate", "deletecollection"):
                    self.assertNotIn(v, rule["verbs"])

    def test_settings_sync_role_covers_the_playbook(self):
        """The verbs the k8s helper calls of settings-sync-recovery need."""
        role = self.one("Role", "recoveryd-settings-sync-recovery")
        grants = set()
        for rule in role["rules"]:
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        grants.add((g, r, v))
        need = {("apps", "deployments", "get"), ("apps", "deployments", "patch"),  # rollout_restart / wait_rollout
                ("apps", "statefulsets", "get"), ("apps", "statefulsets", "patch"),
                ("", "pods", "list"), ("", "pods", "delete"),                       # list_pods / delete_pods
                ("batch", "cronjobs", "get"),                                        # job_from_cronjob
                ("batch", "jobs", "create"), ("batch", "jobs", "get")}               # job_from_cronjob / wait_job
        self.assertEqual(need - grants, set())
        self.assertEqual(grants - need, set(), "grants beyond what the playbook calls")
        cfg = ds.read("k8s", "config", "config.lua")
        m = re.search(r'\["settings-sync-recovery"\]\s*=\s*\{.*?target_namespace\s*=\s*"([^"]+)"', cfg, re.S)
        self.assertTrue(m, "config.lua sets target_namespace for settings-sync-recovery")
        self.assertEqual(role["metadata"]["namespace"], m.group(1),
                         "the Role lives in the namespace the playbook acts on")


def lua_table_keys(block):
    """Keys `name =` at the first nesting level of a Lua table body."""
    keys, depth = set(), 0
    for line in block.splitlines():
        code = line.split("--", 1)[0]
        if depth == 0:
            m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", code)
            if m:
                keys.add(m.group(1))
        depth += code.count("{") - code.count("}")
    return keys


def config_playbook_settings():
    """{playbook: set of keys} of playbook_settings in k8s/config/config.lua."""
    cfg = ds.read("k8s", "config", "config.lua")
    out = {}
    for m in re.finditer(r'\["([A-Za-z0-9_.-]+)"\]\s*=\s*\{(.*?)\n\s*\},', cfg, re.S):
        out[m.group(1)] = lua_table_keys(m.group(2))
    return out


def playbook_setting_keys(name):
    src = ds.read("playbooks", name + ".lua")
    m = re.search(r"^local settings = \{\n(.*?)^\}", src, re.M | re.S)
    return lua_table_keys(m.group(1)) if m else set()


class ConfigTest(unittest.TestCase):

    def test_playbook_settings_keys_exist(self):
        """recoveryd checks the playbook names of playbook_settings; this
        checks each key against the playbook's own settings table, so a
        misspelt key does not silently keep the default."""
        ps = config_playbook_settings()
        self.assertIn("settings-sync-recovery", ps)
        for pb, keys in ps.items():
            self.assertTrue(os.path.isfile(ds.path("playbooks", pb + ".lua")), "no playbook " + pb)
            known = playbook_setting_keys(pb)
            self.assertTrue(known, "playbooks/%s.lua has no `local settings = {` table" % pb)
            self.assertEqual(keys - known, set(), "config.lua: unknown settings of %s" % pb)

    def test_secret_names_in_settings_exist(self):
        """*_secret settings name keys of the recoveryd-playbook-secrets template."""
        cfg = ds.read("k8s", "config", "config.lua")
        secrets = [o for o in ds.load_yaml_all("k8s/secrets.yaml")
                   if o["metadata"]["name"] == "recoveryd-playbook-secrets"][0]["stringData"]
        for m in re.finditer(r'_secret\s*=\s*"([^"]+)"', cfg):
            self.assertIn(m.group(1), secrets)


class CheckConfigTest(unittest.TestCase):
    """The real binary accepts k8s/config/config.lua with the deployed
    playbooks and library (paths of the pod replaced by temporary ones)."""

    def test_check_config(self):
        b = ds.binary()
        if not b:
            self.skipTest("RECOVERYD_BIN is not set (run through ctest)")
        with tempfile.TemporaryDirectory() as tmp:
            files = {}
            for name, value in (("webhook-token", "w" * 32), ("operator-token", "o" * 32),
                                ("slack-webhook-url", "https://hooks.slack.com/services/T0/B0/x"),
                                ("pagerduty-routing-key", "k" * 32)):
                files[name] = os.path.join(tmp, name)
                with open(files[name], "w") as f:
                    f.write(value + "\n")
            secrets = os.path.join(tmp, "secrets")
            os.mkdir(secrets)
            deck = os.path.join(tmp, "deck")
            with open(deck, "w") as f:
                f.write("#!/bin/sh\nexit 0\n")
            os.chmod(deck, 0o755)
            argv = [b, "--check-config", "--config", ds.path("k8s", "config", "config.lua"),
                    "--playbooks", ds.path("k8s", "playbooks"), "--lua-path", ds.path("k8s", "lua"),
                    "--state", os.path.join(tmp, "journal.db"),
                    "--webhook-token-file", files["webhook-token"], "--operator-token-file", files["operator-token"],
                    "--slack-webhook-url-file", files["slack-webhook-url"],
                    "--pagerduty-routing-key-file", files["pagerduty-routing-key"],
                    "--secrets-dir", secrets, "--exec-allow", deck]
            p = ds.run(argv, cwd=tmp, timeout=60)
            self.assertEqual(p.returncode, 0, "recoveryd --check-config:\n%s%s" % (p.stdout, p.stderr))
            self.assertIn("config ok", p.stdout + p.stderr)
            for name in sorted(os.listdir(ds.path("k8s", "playbooks"))):
                self.assertIn(name[:-4], p.stdout + p.stderr, "playbook %s not loaded" % name)


if __name__ == "__main__":
    unittest.main()

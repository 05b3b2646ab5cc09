"""The Kubernetes kit in k8s/: the kustomizations (k8s/ itself, the base
k8s/base/, k8s/monitoring/ and the overlays k8s/overlays/*) are complete and
consistent, the copies of the playbooks and the Lua library match their
sources, the Deployment follows the rules of docs/operations.md (one replica,
Recreate, non-root, probes, grace > drain timeout, only real flags), the RBAC
is namespaced and bound to recoveryd's ServiceAccount, and the config of the
base and of each overlay passes the real binary's --check-config with the
Deployment's own flags.

kubectl/kustomize are not needed (CI has neither): the kustomizations are
checked structurally. When kubectl happens to be installed, a `kubectl
kustomize` build runs as well. What the overlays change is checked in
test_deploy_overlays.py.
"""

import filecmp
import os
import re
import shutil
import sys
import tempfile
import unittest

import deploy_support as ds

BASE = ds.BASE
KUSTOMIZATIONS = ds.KUSTOMIZATIONS

# Files under k8s/ that are not loaded by a kustomization, and why.
NOT_KUSTOMIZE = {
    "k8s/monitoring/alert-rules.yml": "Prometheus rule file, source of prometheusrule.yaml",
    "k8s/monitoring/alert-rules.test.yml": "promtool unit tests",
    "k8s/monitoring/alertmanager.yml": "Alertmanager configuration file",
    "k8s/overlays/ha/postgres-cnpg.example.yaml": "example database, needs the CloudNativePG operator",
}


def kustomization_files(kfile):
    """(kustomization, resource files, resource directories, generator
    files) of a kustomization, relative to the repo. A resource that is a
    directory is another kustomization (a base)."""
    k = ds.load_yaml(kfile)
    here = os.path.dirname(kfile)
    files, dirs = [], []
    for r in k.get("resources") or []:
        r = os.path.normpath(os.path.join(here, r))
        (dirs if os.path.isdir(ds.path(r)) else files).append(r)
    generated = []
    for gen in (k.get("configMapGenerator") or []) + (k.get("secretGenerator") or []):
        for f in gen.get("files") or []:
            f = f.split("=", 1)[-1]  # key=path
            generated.append(os.path.normpath(os.path.join(here, f)))
    return k, files, dirs, generated


def patch_files(kfile):
    """The files named by `patches: - path:` of a kustomization, relative to
    the repo (inline patches name none)."""
    here = os.path.dirname(kfile)
    return [os.path.normpath(os.path.join(here, p["path"]))
            for p in ds.load_yaml(kfile).get("patches") or [] if p.get("path")]


def bases(kfile):
    """The kustomization files of kfile's directory resources, recursively."""
    _, _, dirs, _ = kustomization_files(kfile)
    out = []
    for d in dirs:
        sub = os.path.join(d, "kustomization.yaml")
        out += [sub] + bases(sub)
    return out


def objects(files):
    out = []
    for f in files:
        for doc in ds.load_yaml_all(f):
            out.append((f, doc))
    return out


def resource_objects(kfile):
    """(file, object) of every resource file of kfile and of its bases."""
    out = []
    for kf in [kfile] + bases(kfile):
        _, files, _, _ = kustomization_files(kf)
        out += objects(files)
    return out


def outside(f, kfile):
    return os.path.relpath(f, os.path.dirname(kfile)).startswith("..")


class KustomizationTest(unittest.TestCase):

    def test_every_listed_file_exists(self):
        for kfile in KUSTOMIZATIONS:
            k, files, dirs, generated = kustomization_files(kfile)
            self.assertEqual(k.get("kind"), "Kustomization", kfile)
            for f in files + generated + patch_files(kfile):
                self.assertTrue(os.path.isfile(ds.path(f)), "%s lists %s, which does not exist" % (kfile, f))
                # kustomize loads files only from inside the kustomization's directory
                self.assertFalse(outside(f, kfile), "%s: %s is outside its directory (kustomize refuses it)"
                                 % (kfile, f))
            for d in dirs:
                # A directory is another kustomization (an overlay's base), which may be
                # outside, but not above: kustomize refuses a base that contains the
                # kustomization using it ("cycle detected").
                self.assertTrue(os.path.isfile(ds.path(d, "kustomization.yaml")),
                                "%s lists the directory %s, which has no kustomization.yaml" % (kfile, d))
                self.assertTrue(os.path.relpath(os.path.dirname(kfile), d).startswith(".."),
                                "%s: its base %s contains it (kustomize: cycle detected)" % (kfile, d))
                self.assertFalse(os.path.relpath(d, "k8s").startswith(".."), "%s: %s is outside k8s/" % (kfile, d))

    def test_every_file_is_listed(self):
        listed = set()
        for kfile in KUSTOMIZATIONS:
            _, files, _, generated = kustomization_files(kfile)
            for f in files + generated + patch_files(kfile):
                self.assertNotIn(f, listed, "%s is listed twice" % f)
                listed.add(f)
        listed |= set(KUSTOMIZATIONS)
        missing = []
        for dirpath, _, names in os.walk(ds.K8S):
            for n in names:
                rel = os.path.relpath(os.path.join(dirpath, n), ds.ROOT)
                if rel not in listed and rel not in NOT_KUSTOMIZE:
                    missing.append(rel)
        self.assertEqual(missing, [], "files under k8s/ that no kustomization.yaml lists (add them to "
                                      "resources, patches or configMapGenerator, or to NOT_KUSTOMIZE in "
                                      "this test)")
        for f in NOT_KUSTOMIZE:
            self.assertTrue(os.path.isfile(ds.path(f)), f)

    def test_every_kustomization_is_known(self):
        found = set()
        for dirpath, _, names in os.walk(ds.K8S):
            if "kustomization.yaml" in names:
                found.add(os.path.relpath(os.path.join(dirpath, "kustomization.yaml"), ds.ROOT))
        self.assertEqual(found, set(KUSTOMIZATIONS), "list every kustomization in deploy_support.KUSTOMIZATIONS")

    def test_top_level_is_the_base(self):
        """`kubectl apply -k k8s/` deploys the base as it is, as it always did."""
        k, files, dirs, generated = kustomization_files(ds.TOP)
        self.assertEqual((files, dirs, generated), ([], ["k8s/base"], []))
        self.assertEqual(set(k) - {"apiVersion", "kind", "resources"}, set(), "k8s/kustomization.yaml changes nothing")

    def test_resources_are_kubernetes_objects(self):
        for kfile in KUSTOMIZATIONS:
            for f, doc in resource_objects(kfile):
                self.assertIn("apiVersion", doc, f)
                self.assertIn("kind", doc, f)
                self.assertTrue(doc.get("metadata", {}).get("name"), "%s: %s without a name" % (f, doc.get("kind")))
                if doc["kind"] != "Namespace":
                    self.assertTrue(doc["metadata"].get("namespace"),
                                    "%s: %s/%s has no namespace (the base sets them explicitly)"
                                    % (f, doc["kind"], doc["metadata"]["name"]))

    def test_generated_configmaps_have_a_namespace(self):
        for kfile in KUSTOMIZATIONS:
            k, _, _, _ = kustomization_files(kfile)
            for gen in k.get("configMapGenerator") or []:
                self.assertTrue(gen.get("namespace"), "%s: configMapGenerator %s without namespace" % (kfile, gen["name"]))

    def test_overlay_generators_replace_a_base_generator(self):
        """`behavior: replace` or `merge` only works on a generator of the same
        name and namespace in a base; a new one (`create`, the default) must
        not reuse such a name."""
        for kfile in KUSTOMIZATIONS:
            k, _, _, _ = kustomization_files(kfile)
            below = set()
            for b in bases(kfile):
                for gen in ds.load_yaml(b).get("configMapGenerator") or []:
                    below.add((gen["name"], gen.get("namespace")))
            for gen in k.get("configMapGenerator") or []:
                key = (gen["name"], gen.get("namespace"))
                if gen.get("behavior", "create") in ("replace", "merge"):
                    self.assertIn(key, below, "%s: configMapGenerator %s/%s has behavior %s but no base generates it"
                                  % (kfile, key[1], key[0], gen["behavior"]))
                else:
                    self.assertNotIn(key, below, "%s: %s/%s is generated by a base too: say behavior: replace"
                                     % (kfile, key[1], key[0]))

    def test_copies_match_their_sources(self):
        p = ds.run([sys.executable, ds.path("scripts", "gen-k8s.py"), "--check"])
        self.assertEqual(p.returncode, 0, "scripts/gen-k8s.py --check:\n" + p.stderr)

    def test_gen_k8s_names_stale_copies_and_fixes_them(self):
        root = tempfile.mkdtemp(prefix="gen-k8s-")
        self.addCleanup(shutil.rmtree, root)
        for d in ("playbooks", "lua", "k8s/base"):
            shutil.copytree(ds.path(d), os.path.join(root, d))
        with open(os.path.join(root, "playbooks", "new-one.lua"), "w") as f:
            f.write("return {}\n")
        with open(os.path.join(root, "lua", "recovery", "util.lua"), "a") as f:
            f.write("-- changed\n")
        os.remove(os.path.join(root, "lua", "recovery", "kong.lua"))
        script = [sys.executable, ds.path("scripts", "gen-k8s.py"), "--root", root]

        p = ds.run(script + ["--check"])
        self.assertEqual(p.returncode, 1, p.stderr)
        for line in ("k8s/base/playbooks/new-one.lua: missing", "k8s/base/lua/recovery/util.lua: differs",
                     "k8s/base/lua/recovery/kong.lua: has no source: stale",
                     "k8s/base/kustomization.yaml: the ConfigMap file lists differ",
                     "run python3 scripts/gen-k8s.py"):
            self.assertIn(line, p.stderr)
        self.assertTrue(os.path.exists(os.path.join(root, "k8s/base/lua/recovery/kong.lua")), "--check changes nothing")

        p = ds.run(script)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(ds.run(script + ["--check"]).returncode, 0, "regenerated copies pass the check")
        self.assertFalse(os.path.exists(os.path.join(root, "k8s/base/lua/recovery/kong.lua")), "stale copy removed")
        for src, dst in (("playbooks/new-one.lua", "k8s/base/playbooks/new-one.lua"),
                         ("lua/recovery/util.lua", "k8s/base/lua/recovery/util.lua")):
            self.assertTrue(filecmp.cmp(os.path.join(root, src), os.path.join(root, dst), shallow=False), dst)
        k = ds.load_yaml(os.path.join(root, "k8s/base/kustomization.yaml"))
        files = {g["name"]: g["files"] for g in k["configMapGenerator"]}
        self.assertIn("playbooks/new-one.lua", files["recoveryd-playbooks"])
        self.assertNotIn("lua/recovery/kong.lua", files["recoveryd-lua"])
        self.assertIn("lua/recovery/util.lua", files["recoveryd-lua"])

    @unittest.skipUnless(shutil.which("kubectl"), "kubectl not installed (optional check)")
    def test_kubectl_kustomize_builds(self):
        for d in (os.path.dirname(k) for k in KUSTOMIZATIONS):
            p = ds.run(["kubectl", "kustomize", d], timeout=120)
            self.assertEqual(p.returncode, 0, "kubectl kustomize %s:\n%s" % (d, p.stderr))
            self.assertIn("kind:", p.stdout)


class DeploymentTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.objs = [doc for _, doc in resource_objects(BASE)]
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
                     "operator-token-file", "tokens-file", "slack-webhook-url-file", "pagerduty-routing-key-file",
                     "secrets-dir", "exec-allow", "external-url"):
            self.assertIn(need, args, "--%s is missing from the Deployment's args" % need)
        self.assertNotIn("insecure-no-auth", args)
        self.assertNotIn("dry-run", args, "the config decides dry_run (staging's sets it): a flag would win over "
                                          "every overlay's config")
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
        for flag in ("config", "playbooks", "state", "webhook-token-file", "operator-token-file", "tokens-file",
                     "slack-webhook-url-file", "pagerduty-routing-key-file", "secrets-dir"):
            p = args[flag][0]
            covering = [m for m in mounts if p == m["mountPath"] or p.startswith(m["mountPath"].rstrip("/") + "/")]
            self.assertTrue(covering, "--%s=%s is not on a mounted volume" % (flag, p))
        # the Lua library ConfigMap is mounted as <lua-path>/recovery
        self.assertIn(args["lua-path"][0] + "/recovery", [m["mountPath"] for m in mounts])
        # secret files named in args exist as keys of the mounted Secret
        secrets = {o["metadata"]["name"]: o for o in self.objs if o["kind"] == "Secret"}
        for flag in ("webhook-token-file", "operator-token-file", "tokens-file", "slack-webhook-url-file",
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
        cfg = ds.read("k8s", "base", "config", "config.lua")
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
    """{playbook: set of keys} of playbook_settings in k8s/base/config/config.lua."""
    cfg = ds.read("k8s", "base", "config", "config.lua")
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
        cfg = ds.read("k8s", "base", "config", "config.lua")
        secrets = [o for o in ds.load_yaml_all("k8s/base/secrets.yaml")
                   if o["metadata"]["name"] == "recoveryd-playbook-secrets"][0]["stringData"]
        for m in re.finditer(r'_secret\s*=\s*"([^"]+)"', cfg):
            self.assertIn(m.group(1), secrets)


class CheckConfigTest(unittest.TestCase):
    """The real binary accepts the config of the base and of each overlay
    with the Deployment's own flags (the pod's paths replaced by local ones:
    deploy_support.local_argv) and the tokens file of the Secret template
    with its placeholders filled in."""

    @classmethod
    def setUpClass(cls):
        objs = [doc for _, doc in resource_objects(BASE)]
        dep = [o for o in objs if o["kind"] == "Deployment"][0]
        cls.args = dep["spec"]["template"]["spec"]["containers"][0]["args"]

    def check_config(self, config, tokens_text):
        b = ds.binary()
        if not b:
            self.skipTest("RECOVERYD_BIN is not set (run through ctest)")
        with tempfile.TemporaryDirectory() as tmp:
            argv = [b, "--check-config"] + ds.local_argv(self.args, tmp, config, tokens_text)
            return ds.run(argv, cwd=tmp, timeout=60)

    def test_check_config(self):
        tokens, _ = ds.fill_tokens(ds.tokens_template())
        for env, config in ds.CONFIGS.items():
            with self.subTest(env=env):
                p = self.check_config(config, tokens)
                self.assertEqual(p.returncode, 0, "%s: recoveryd --check-config:\n%s%s" % (config, p.stdout, p.stderr))
                self.assertIn("config ok", p.stdout + p.stderr)
                for name in sorted(os.listdir(ds.path("k8s", "base", "playbooks"))):
                    self.assertIn(name[:-4], p.stdout + p.stderr, "playbook %s not loaded" % name)

    def test_tokens_template(self):
        """Names, roles and playbook lists of the template are valid; the names
        of the legacy files' principals are not reused; and the template as
        shipped is refused (a REPLACE-ME digest admits nobody)."""
        text = ds.tokens_template()
        lines = [l.split("#", 1)[0].split() for l in text.splitlines()]
        lines = [f for f in lines if f]
        self.assertTrue(lines, "the tokens template lists no principal")
        playbooks = {n[:-4] for n in os.listdir(ds.path("k8s", "base", "playbooks"))}
        for f in lines:
            self.assertIn(len(f), (3, 4), f)
            self.assertNotIn(f[0], ("alertmanager", "operator"), "the legacy token files' principals")
            self.assertIn(f[1], ("alertmanager", "viewer", "operator", "admin"), f)
            self.assertTrue(f[2].startswith("REPLACE-ME"), "the template holds placeholders, not digests: %s" % f)
            if len(f) == 4:
                self.assertEqual(set(f[3].split(",")) - playbooks, set(), "unknown playbook in %s" % f)
        p = self.check_config(ds.CONFIGS["base"], text)
        self.assertNotEqual(p.returncode, 0, "the unfilled template must be refused")
        self.assertIn("64 hex digits", p.stderr)


if __name__ == "__main__":
    unittest.main()

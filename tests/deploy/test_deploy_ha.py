"""The ha overlay (k8s/overlays/ha/): several replicas on one PostgreSQL
journal (shared mode, docs/operations.md "Running several replicas").

The overlay, as built, is the base with:
  - three replicas, RollingUpdate (never more unavailable than the
    PodDisruptionBudget allows), a PodDisruptionBudget minAvailable 2, and
    pod anti-affinity on the hostname;
  - no PVC and no volume or mount of one;
  - --state a postgres:// URL without a password; the password in a libpq
    password file named by PGPASSFILE, mode 0400 on a read-only mount, made
    from a Secret whose line matches the URL;
  - --replica-id=$(POD_NAME) with POD_NAME from the downward API, and
    --lease-timeout=15;
and nothing else changed. postgres-cnpg.example.yaml is a CloudNativePG
Cluster giving the URL's host, kept out of the kustomization.

kubectl is optional (CI has none), so the overlay is built twice: by a small
local renderer (the kustomization's resources, its delete, strategic-merge
and JSON patches, and its replacement; anything else it does not know fails)
on every run, and by `kubectl kustomize` when kubectl is installed. The same
checks run on both builds, and the two Deployments must agree.
"""

import copy
import os
import re
import shutil
import tempfile
import unittest
from urllib.parse import parse_qs, urlparse

import deploy_support as ds

HA = ds.HA
HA_DIR = os.path.dirname(HA)
URL = "postgres://recoveryd@recoveryd-db-rw:5432/recoveryd"
EXAMPLE = os.path.join(HA_DIR, "postgres-cnpg.example.yaml")
SHARED_FLAGS = ("replica-id", "lease-timeout")  # shared mode's flags (src/main.c, being built)
REPLICAS, MIN_AVAILABLE = 3, 2


# ---------------------------------------------------------------- the local renderer

# Strategic merge: the lists of the pod spec that merge by a key; every other
# list is replaced, as in Kubernetes.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "env": "name",
              "volumeMounts": "mountPath", "ports": "containerPort"}


def _no_directive(d, where):
    for k in d:
        if isinstance(k, str) and k.startswith("$"):
            raise AssertionError("%s: %s is not known to the local renderer of test_deploy_ha.py" % (where, k))


def merge(base, patch, where):
    """A strategic merge patch (a dict) applied to base (a copy is returned)."""
    _no_directive(patch, where)
    out = copy.deepcopy(base)
    for k, v in patch.items():
        here = "%s.%s" % (where, k)
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list) and k in MERGE_KEYS:
            out[k] = merge_list(out.get(k) or [], v, MERGE_KEYS[k], here)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v, here)
        else:
            if isinstance(v, dict):
                _no_directive(v, here)
            out[k] = copy.deepcopy(v)
    return out


def merge_list(base, patch, key, where):
    out = copy.deepcopy(base)
    for item in patch:
        item = dict(item)
        directive = item.pop("$patch", None)
        at = [i for i, b in enumerate(out) if b.get(key) == item.get(key)]
        if directive == "delete":
            # kustomize ignores the delete of a missing item; here it fails, so
            # that a base that renamed the item is noticed.
            if not at:
                raise AssertionError("%s: deletes %s=%s, which the base does not have" % (where, key, item.get(key)))
            del out[at[0]]
        elif directive is not None:
            raise AssertionError("%s: $patch: %s is not known to the local renderer" % (where, directive))
        elif at:
            out[at[0]] = merge(out[at[0]], item, "%s[%s]" % (where, item.get(key)))
        else:
            _no_directive(item, where)
            out.append(item)
    return out


def _pointer(path):
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def json_patch(obj, ops, where):
    """RFC 6902 operations test, replace, add and remove, applied in place."""
    for op in ops:
        parts = _pointer(op["path"])
        parent = obj
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        idx = (len(parent) if last == "-" else int(last)) if isinstance(parent, list) else last
        if op["op"] == "test":
            if parent[idx] != op["value"]:
                raise AssertionError("%s: test of %s failed: %r is not %r" % (where, op["path"], parent[idx],
                                                                              op["value"]))
        elif op["op"] == "replace":
            parent[idx] = copy.deepcopy(op["value"])
        elif op["op"] == "add":
            if isinstance(parent, list):
                parent.insert(idx, copy.deepcopy(op["value"]))
            else:
                parent[idx] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del parent[idx]
        else:
            raise AssertionError("%s: op %s is not known to the local renderer" % (where, op["op"]))


def _field(obj, path, value=None, set_it=False):
    """kustomize's field paths: a.b.[name=x].c"""
    parts = path.split(".")
    cur = obj
    for i, p in enumerate(parts):
        m = re.fullmatch(r"\[(\w+)=([^\]]+)\]", p)
        if m:
            found = [e for e in cur if e.get(m.group(1)) == m.group(2)]
            if len(found) != 1:
                raise AssertionError("field path %s: no single element %s" % (path, p))
            nxt = found[0]
        elif i == len(parts) - 1:
            if set_it:
                cur[p] = value
                return None
            return cur[p]
        else:
            nxt = cur[p]
        cur = nxt
    raise AssertionError("field path %s ends in a selector" % path)


def key(o):
    return (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])


def matches(o, sel):
    return all((k == "kind" and o["kind"] == v) or (k == "name" and o["metadata"]["name"] == v) or
               (k == "namespace" and o["metadata"].get("namespace") == v) or
               (k in ("group", "version") and o["apiVersion"].split("/")[0 if k == "group" else -1] == v)
               for k, v in sel.items())


def resources(kfile):
    """Objects of kfile's resource files and of its bases, recursively (the
    generated ConfigMaps are not made)."""
    here = os.path.dirname(kfile)
    out = []
    for r in ds.load_yaml(kfile).get("resources") or []:
        r = os.path.normpath(os.path.join(here, r))
        if os.path.isdir(ds.path(r)):
            out += resources(os.path.join(r, "kustomization.yaml"))
        else:
            out += ds.load_yaml_all(r)
    return out


def local_build(kfile):
    k = ds.load_yaml(kfile)
    for field in k:
        if field not in ("apiVersion", "kind", "resources", "patches", "replacements"):
            raise AssertionError("%s: %s is not known to the local renderer of test_deploy_ha.py" % (kfile, field))
    objs = resources(kfile)
    here = os.path.dirname(kfile)
    for p in k.get("patches") or []:
        where = "%s: patch %s" % (kfile, p.get("path", "(inline)"))
        text = p["patch"] if "patch" in p else ds.read(here, p["path"])
        docs = [d for d in ds.yaml_module().safe_load_all(text) if d is not None]
        if len(docs) == 1 and isinstance(docs[0], list):   # JSON 6902, needs a target
            hits = [o for o in objs if matches(o, p["target"])]
            if len(hits) != 1:
                raise AssertionError("%s: the target matches %d objects" % (where, len(hits)))
            json_patch(hits[0], docs[0], where)
            continue
        for d in docs:
            hits = [i for i, o in enumerate(objs) if key(o) == key(d) and o["apiVersion"] == d["apiVersion"]]
            if len(hits) != 1:
                raise AssertionError("%s: %s matches %d objects" % (where, key(d), len(hits)))
            if d.get("$patch") == "delete":
                del objs[hits[0]]
            else:
                objs[hits[0]] = merge(objs[hits[0]], d, where)
    for r in k.get("replacements") or []:
        src = [o for o in objs if matches(o, {f: v for f, v in r["source"].items() if f != "fieldPath"})]
        if len(src) != 1:
            raise AssertionError("%s: replacement source matches %d objects" % (kfile, len(src)))
        value = _field(src[0], r["source"]["fieldPath"])
        for t in r["targets"]:
            for o in (o for o in objs if matches(o, t["select"])):
                for fp in t["fieldPaths"]:
                    _field(o, fp, copy.deepcopy(value), set_it=True)
    return objs


def kubectl_build(kfile):
    p = ds.run(["kubectl", "kustomize", os.path.dirname(kfile)], timeout=120)
    if p.returncode != 0:
        raise AssertionError("kubectl kustomize %s:\n%s" % (os.path.dirname(kfile), p.stderr))
    return [d for d in ds.yaml_module().safe_load_all(p.stdout) if d]


# ---------------------------------------------------------------- helpers

def one(objs, kind, name=None):
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    if len(found) != 1:
        raise AssertionError("expected one %s %s, found %d" % (kind, name or "", len(found)))
    return found[0]


def flag_values(args):
    out = {}
    for a in args:
        if not (a.startswith("--") and "=" in a):
            raise AssertionError("write args as --flag=value: %r" % a)
        k, v = a[2:].split("=", 1)
        out.setdefault(k, []).append(v)
    return out


def expand(args, env, pod_name):
    """The args as the kubelet passes them: $(VAR) of a variable defined in
    env replaced ($$ is a literal $); fieldRef metadata.name is pod_name."""
    values = {}
    for e in env:
        if "value" in e:
            values[e["name"]] = e["value"]
        elif (e.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            values[e["name"]] = pod_name

    def one_arg(a):
        return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                      lambda m: "$" if m.group(0) == "$$" else values.get(m.group(1), m.group(0)), a)
    return [one_arg(a) for a in args]


def covering_mount(mounts, p):
    """The mount whose directory holds the file p (the deepest one)."""
    found = [m for m in mounts if p.startswith(m["mountPath"].rstrip("/") + "/")]
    return max(found, key=lambda m: len(m["mountPath"])) if found else None


def secret_file_mode(vol, name):
    items = {i["key"]: i for i in vol["secret"].get("items") or []}
    return items.get(name, {}).get("mode", vol["secret"].get("defaultMode", 0o644))


def normalized(dep):
    """A Deployment with what kustomize's other transformers add left out:
    the base's labels, the images (`images:`), the hashes of generated
    ConfigMap names; merged lists sorted by their key."""
    d = copy.deepcopy(dep)
    d["metadata"].get("labels", {}).pop("app.kubernetes.io/part-of", None)
    spec = d["spec"]["template"]["spec"]
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        c["image"] = "IMAGE"
        for f in ("env", "volumeMounts"):
            if f in c:
                c[f] = sorted(c[f], key=lambda x: x[MERGE_KEYS[f]])
    for v in spec.get("volumes", []):
        cm = v.get("configMap")
        if cm:
            cm["name"] = re.sub(r"^(recoveryd-(?:config|playbooks|lua))-[a-z0-9]{10}$", r"\1", cm["name"])
    spec["volumes"] = sorted(spec.get("volumes", []), key=lambda x: x["name"])
    return d


# ---------------------------------------------------------------- the checks

class HaChecks:
    """The checks of a built ha overlay (self.objs, self.build)."""

    def deployment(self):
        return one(self.objs, "Deployment", "recoveryd")

    def pod(self):
        return self.deployment()["spec"]["template"]

    def container(self):
        cs = self.pod()["spec"]["containers"]
        self.assertEqual([c["name"] for c in cs], ["recoveryd"], self.build)
        return cs[0]

    def args(self):
        return flag_values(self.container()["args"])

    def env(self):
        return {e["name"]: e for e in self.container().get("env") or []}

    def test_replicas_and_strategy(self):
        d = self.deployment()["spec"]
        self.assertEqual(d["replicas"], REPLICAS, self.build)
        self.assertEqual(d["strategy"]["type"], "RollingUpdate",
                         "%s: several replicas share the journal: replace them one by one, not all at once"
                         % self.build)
        ru = d["strategy"].get("rollingUpdate") or {}
        self.assertIsInstance(ru.get("maxUnavailable"), int, "%s: maxUnavailable as a number" % self.build)
        self.assertLessEqual(ru["maxUnavailable"], REPLICAS - MIN_AVAILABLE,
                             "%s: a rollout must not take more replicas than the PodDisruptionBudget allows"
                             % self.build)

    def test_pod_disruption_budget(self):
        pdb = one(self.objs, "PodDisruptionBudget")
        self.assertEqual(pdb["apiVersion"], "policy/v1")
        self.assertEqual(pdb["metadata"]["namespace"], self.deployment()["metadata"]["namespace"])
        self.assertEqual(pdb["spec"].get("minAvailable"), MIN_AVAILABLE, self.build)
        self.assertNotIn("maxUnavailable", pdb["spec"])
        labels = self.pod()["metadata"]["labels"]
        sel = pdb["spec"]["selector"]["matchLabels"]
        self.assertTrue(sel)
        for k, v in sel.items():
            self.assertEqual(labels.get(k), v, "%s: the PodDisruptionBudget selects recoveryd's pods" % self.build)

    def test_anti_affinity_on_hostname(self):
        anti = (self.pod()["spec"].get("affinity") or {}).get("podAntiAffinity") or {}
        terms = list(anti.get("requiredDuringSchedulingIgnoredDuringExecution") or [])
        terms += [p["podAffinityTerm"] for p in anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []]
        labels = self.pod()["metadata"]["labels"]
        on_host = [t for t in terms if t["topologyKey"] == "kubernetes.io/hostname"]
        self.assertTrue(on_host, "%s: pod anti-affinity on kubernetes.io/hostname" % self.build)
        for t in on_host:
            sel = t["labelSelector"]["matchLabels"]
            self.assertTrue(sel)
            for k, v in sel.items():
                self.assertEqual(labels.get(k), v, "%s: the anti-affinity term selects recoveryd's pods" % self.build)

    def test_no_volume_claim(self):
        self.assertEqual([key(o) for o in self.objs if o["kind"] == "PersistentVolumeClaim"], [],
                         "%s: the journal is PostgreSQL: no PVC" % self.build)
        spec = self.pod()["spec"]
        vols = {v["name"]: v for v in spec["volumes"]}
        self.assertEqual([n for n, v in vols.items() if "persistentVolumeClaim" in v], [], self.build)
        self.assertNotIn("volumeClaimTemplates", self.deployment()["spec"])
        used = set()
        for c in spec["containers"] + spec.get("initContainers", []):
            for m in c.get("volumeMounts") or []:
                self.assertIn(m["name"], vols, "%s: %s mounts %s, which is no volume" % (self.build, c["name"],
                                                                                       m["name"]))
                used.add(m["name"])
            self.assertNotIn("/var/lib/recoveryd", [m["mountPath"] for m in c.get("volumeMounts") or []])
        self.assertEqual(set(vols) - used, set(), "%s: volumes nobody mounts" % self.build)

    def test_state_is_a_postgres_url_without_password(self):
        args = self.args()
        self.assertEqual(args["state"], [URL], self.build)
        u = urlparse(args["state"][0])
        self.assertIn(u.scheme, ("postgres", "postgresql"))
        self.assertIsNone(u.password, "%s: no password in the URL" % self.build)
        self.assertEqual({k.lower() for k in parse_qs(u.query)} & {"password", "passfile"}, set())
        for a in self.container()["args"] + self.container().get("command", []):
            self.assertNotIn("REPLACE-ME", a)
            self.assertNotRegex(a.lower(), r"password", "%s: a password on the command line: %s" % (self.build, a))
        self.assertNotIn("PGPASSWORD", self.env(), "%s: the password comes from a file" % self.build)

    def test_password_file(self):
        """PGPASSFILE names a file mode 0400 on a read-only mount: a Secret's
        file mode 0400, or an init container's copy of one (libpq ignores a
        file the group may read, and fsGroup gives a Secret's files group
        read). The Secret's line matches the URL."""
        env = self.env()
        self.assertIn("PGPASSFILE", env, self.build)
        p = env["PGPASSFILE"].get("value")
        self.assertTrue(p and p.startswith("/"), "%s: PGPASSFILE is an absolute path" % self.build)
        spec = self.pod()["spec"]
        vols = {v["name"]: v for v in spec["volumes"]}
        m = covering_mount(self.container()["volumeMounts"], p)
        self.assertIsNotNone(m, "%s: PGPASSFILE=%s is on no mount" % (self.build, p))
        self.assertTrue(m.get("readOnly"), "%s: the password file's mount is read-only" % self.build)
        self.assertNotIn("subPath", m, "a subPath mount never sees a changed Secret")
        vol = vols[m["name"]]
        name = p[len(m["mountPath"].rstrip("/")) + 1:]
        if "secret" in vol:
            secret, mode = vol["secret"]["secretName"], secret_file_mode(vol, name)
            self.assertEqual(mode, 0o400, "%s: the password file's mode" % self.build)
            secret_key = name
        else:
            self.assertIn("emptyDir", vol, "%s: the password file comes from a Secret or an init container's copy"
                          % self.build)
            self.assertEqual(vol["emptyDir"].get("medium"), "Memory", "%s: the copy stays off disk" % self.build)
            copiers = [c for c in spec.get("initContainers") or []
                       if m["name"] in [x["name"] for x in c.get("volumeMounts") or []]]
            self.assertEqual(len(copiers), 1, "%s: one init container writes %s" % (self.build, m["name"]))
            ic = copiers[0]
            cmd = ic.get("command") or []
            self.assertEqual(cmd[:3], ["install", "-m", "0400"], "%s: %s copies with mode 0400" % (self.build,
                                                                                                ic["name"]))
            self.assertEqual(cmd[-1], p, "%s: %s writes PGPASSFILE" % (self.build, ic["name"]))
            src = cmd[-2]
            sm = covering_mount(ic["volumeMounts"], src)
            self.assertIsNotNone(sm, src)
            self.assertTrue(sm.get("readOnly"), "%s: the Secret is mounted read-only" % self.build)
            svol = vols[sm["name"]]
            self.assertIn("secret", svol, "%s: %s copies from a Secret" % (self.build, ic["name"]))
            secret_key = src[len(sm["mountPath"].rstrip("/")) + 1:]
            secret = svol["secret"]["secretName"]
            self.assertEqual(secret_file_mode(svol, secret_key), 0o400, "%s: the Secret's file mode" % self.build)
            self.assertEqual(ic["image"], self.container()["image"], "%s: the init container runs recoveryd's "
                                                                     "image" % self.build)
            self.assertEqual(ic["securityContext"], self.container()["securityContext"],
                             "%s: the init container runs as confined as recoveryd" % self.build)
        sec = one(self.objs, "Secret", secret)
        line = [l for l in sec["stringData"][secret_key].splitlines() if l.strip() and not l.startswith("#")]
        self.assertEqual(len(line), 1, "%s: one line in the password file template" % self.build)
        host, port, db, user, password = line[0].split(":", 4)
        u = urlparse(URL)
        self.assertEqual((host, int(port), db, user), (u.hostname, u.port, u.path.lstrip("/"), u.username),
                         "%s: the password file's line matches --state" % self.build)
        self.assertTrue(password.startswith("REPLACE-ME"), "the template holds a placeholder, not a password")

    def test_replica_id_and_lease(self):
        args = self.args()
        self.assertEqual(args.get("replica-id"), ["$(POD_NAME)"], self.build)
        self.assertEqual(args.get("lease-timeout"), ["15"], self.build)
        self.assertEqual(self.env().get("POD_NAME"),
                         {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                         "%s: POD_NAME from the downward API" % self.build)
        # $(POD_NAME) is expanded only from a variable defined in env
        self.assertEqual(flag_values(expand(self.container()["args"], self.container()["env"], "recoveryd-abc"))
                         ["replica-id"], ["recoveryd-abc"])

    def test_grace_and_probes(self):
        spec = self.pod()["spec"]
        drain = float(self.args().get("drain-timeout", ["30"])[-1])
        self.assertGreaterEqual(spec["terminationGracePeriodSeconds"], drain + 10)
        self.assertEqual(self.container()["readinessProbe"]["httpGet"]["path"], "/readyz",
                         "a replica without its database leaves the Service")


class LocalBuildTest(HaChecks, unittest.TestCase):
    """The checks on the local renderer's build (always)."""

    @classmethod
    def setUpClass(cls):
        cls.objs = local_build(HA)
        cls.build = "k8s/overlays/ha (local build)"


@unittest.skipUnless(shutil.which("kubectl"), "kubectl not installed (optional check)")
class KubectlBuildTest(HaChecks, unittest.TestCase):
    """The checks on `kubectl kustomize k8s/overlays/ha`, which must agree with
    the local build, and differ from the base only as the overlay says."""

    @classmethod
    def setUpClass(cls):
        cls.objs = kubectl_build(HA)
        cls.build = "kubectl kustomize k8s/overlays/ha"

    def test_agrees_with_the_local_build(self):
        local = one(local_build(HA), "Deployment", "recoveryd")
        self.assertEqual(normalized(local), normalized(self.deployment()),
                         "the local renderer of test_deploy_ha.py and kustomize disagree")

    def test_same_image(self):
        spec = self.pod()["spec"]
        base = one(kubectl_build(ds.TOP), "Deployment", "recoveryd")["spec"]["template"]["spec"]
        for c in spec["containers"] + spec.get("initContainers", []):
            self.assertEqual(c["image"], base["containers"][0]["image"], "%s: the base's pinned image" % c["name"])

    def test_rest_is_the_base(self):
        base = {key(o): o for o in kubectl_build(ds.TOP)}
        have = {key(o): o for o in self.objs}
        added = set(have) - set(base)
        self.assertEqual({k[:1] + k[2:] for k in added},
                         {("PodDisruptionBudget", "recoveryd"), ("Secret", "recoveryd-db-pgpass")})
        self.assertEqual(set(base) - set(have), {("PersistentVolumeClaim", "recoveryd", "recoveryd-journal")})
        for k in set(have) & set(base):
            if k[0] != "Deployment":
                self.assertEqual(have[k], base[k], "%s differs from the base" % (k,))
        for o in (have[k] for k in added):
            self.assertEqual(o["metadata"]["namespace"], "recoveryd")
            self.assertEqual(o["metadata"]["labels"].get("app.kubernetes.io/part-of"), "recoveryd")


class LayoutTest(unittest.TestCase):

    def test_overlay_of_the_base(self):
        k = ds.load_yaml(HA)
        self.assertEqual(k["resources"][0], "../../base")
        self.assertNotIn(os.path.basename(EXAMPLE), k["resources"],
                         "the CloudNativePG Cluster needs the operator's CRD: not in the kustomization")
        self.assertNotIn("configMapGenerator", k, "the ha overlay keeps the base's config")
        self.assertIn("kubectl apply -k %s/" % HA_DIR, ds.read(HA))
        self.assertIn(HA_DIR + "/", ds.read(ds.TOP), "k8s/kustomization.yaml says when to use the ha overlay")

    def test_cnpg_example(self):
        docs = ds.load_yaml_all(EXAMPLE)
        self.assertEqual(len(docs), 1)
        c = docs[0]
        self.assertEqual((c["apiVersion"], c["kind"]), ("postgresql.cnpg.io/v1", "Cluster"))
        self.assertEqual(c["metadata"]["namespace"], "recoveryd")
        # CloudNativePG's read-write Service is <cluster>-rw: the host of --state
        self.assertEqual(c["metadata"]["name"] + "-rw", urlparse(URL).hostname)
        self.assertEqual(c["spec"]["instances"], 3)
        self.assertEqual(c["spec"]["bootstrap"]["initdb"], {"database": "recoveryd", "owner": "recoveryd"})
        self.assertEqual(urlparse(URL).username, "recoveryd")
        self.assertEqual(urlparse(URL).path, "/recoveryd")
        text = ds.read(EXAMPLE)
        self.assertIn("NOT part of kustomization.yaml", text)
        self.assertIn("operator", text)


class FlagsTest(unittest.TestCase):
    """The ha args against the real binary: its option table, and
    --check-config with the pod's paths replaced by local ones (--state stays
    the URL: --check-config opens no journal). Shared mode's flags are being
    added to src/; until they are, these checks skip."""

    @classmethod
    def setUpClass(cls):
        dep = one(local_build(HA), "Deployment", "recoveryd")
        cls.c = dep["spec"]["template"]["spec"]["containers"][0]

    def shared_flags_or_skip(self, flags):
        absent = [f for f in SHARED_FLAGS if f not in flags]
        if absent:
            self.skipTest("src/config.c has no %s yet (shared mode)" % ", ".join("--" + f for f in absent))

    def test_args_are_real_flags(self):
        flags = ds.config_flags()
        self.assertIn("state", flags, "could not read src/config.c's option table")
        args = flag_values(self.c["args"])
        self.assertEqual([f for f in args if f not in flags and f not in SHARED_FLAGS], [],
                         "flags of the ha Deployment that recoveryd does not have")
        self.shared_flags_or_skip(flags)

    def test_check_config(self):
        self.shared_flags_or_skip(ds.config_flags())
        b = ds.binary()
        if not b:
            self.skipTest("RECOVERYD_BIN is not set (run through ctest)")
        tokens, _ = ds.fill_tokens(ds.tokens_template())
        args = expand(self.c["args"], self.c["env"], "recoveryd-7d9f-x2x4q")
        with tempfile.TemporaryDirectory() as tmp:
            argv = [b, "--check-config"] + ds.local_argv(args, tmp, ds.CONFIGS["base"], tokens, keep=("state",))
            p = ds.run(argv, cwd=tmp, timeout=60)
        self.assertEqual(p.returncode, 0, "recoveryd --check-config with the ha args:\n%s%s" % (p.stdout, p.stderr))
        self.assertIn("config ok", p.stdout + p.stderr)


if __name__ == "__main__":
    unittest.main()

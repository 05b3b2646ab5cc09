"""The environments of k8s/: the production and staging overlays
(k8s/overlays/*) are the base with only their config replaced, and each
config is the base's plus exactly its own settings:

  production  playbook_overrides: approval (timeout 900 s) for
              kong-deck-rollback and schema-rollback, none for
              settings-sync-recovery
  staging     dry_run = true, no approval
  k8s/        (the base as it is) neither

Then the real binary, started with the Deployment's flags and each config,
shows it: the "listening" log line says whether it runs in dry-run, GET
/api/v1/playbooks which playbooks need approval, and a job triggered while
everything is paused (so nothing runs) is a dry-run only in staging and
waits for approval only in production. When kubectl is installed, the
overlays are also built and the rendered ConfigMap and Deployment checked.
"""

import copy
import os
import shutil
import sys
import tempfile
import unittest

import deploy_support as ds

sys.path.insert(0, os.path.join(ds.ROOT, "tests", "integration"))
import harness  # noqa: E402  (tests/integration/harness.py)

APPROVAL = {"required": True, "timeout": 900}
GATED = {"kong-deck-rollback", "schema-rollback"}
PLAYBOOKS = {"kong-deck-rollback", "schema-rollback", "settings-sync-recovery"}
ALERTS = {"kong-deck-rollback": "GatewayLatencyHigh", "schema-rollback": "EventValidationFailureSpike",
          "settings-sync-recovery": "SettingsSyncJobFailure"}

# environment: (kustomization, dry-run, playbooks that need approval)
ENVIRONMENTS = {
    "base": (ds.TOP, False, set()),
    "production": (ds.PRODUCTION, False, GATED),
    "staging": (ds.STAGING, True, set()),
}


def base_deployment(docs):
    deps = [d for d in docs if d.get("kind") == "Deployment" and d["metadata"]["name"] == "recoveryd"]
    if len(deps) != 1:
        raise AssertionError("expected one Deployment recoveryd, found %d" % len(deps))
    return deps[0]


def base_args():
    return base_deployment(ds.load_yaml_all("k8s", "base", "deployment.yaml"))["spec"]["template"]["spec"][
        "containers"][0]["args"]


def kubectl_build(kfile):
    p = ds.run(["kubectl", "kustomize", os.path.dirname(kfile)], timeout=120)
    if p.returncode != 0:
        raise AssertionError("kubectl kustomize %s:\n%s" % (os.path.dirname(kfile), p.stderr))
    return [d for d in ds.yaml_module().safe_load_all(p.stdout) if d]


def deployment_args(kfile):
    """The container args the environment deploys: from a `kubectl
    kustomize` build when kubectl is installed, else the base's (the
    structural test below makes sure no overlay patches the Deployment)."""
    if shutil.which("kubectl"):
        return base_deployment(kubectl_build(kfile))["spec"]["template"]["spec"]["containers"][0]["args"]
    return base_args()


class OverlayLayoutTest(unittest.TestCase):

    def test_overlays_replace_only_the_config(self):
        for kfile in ds.OVERLAYS:
            with self.subTest(overlay=kfile):
                k = ds.load_yaml(kfile)
                self.assertEqual(k["resources"], ["../../base"], "%s: the base and nothing else" % kfile)
                self.assertEqual(k["configMapGenerator"], [{
                    "name": "recoveryd-config", "namespace": "recoveryd", "behavior": "replace",
                    "files": ["config.lua"]}], kfile)
                # The key of the ConfigMap is the file name: the Deployment mounts subPath config.lua.
                self.assertTrue(os.path.isfile(ds.path(os.path.dirname(kfile), "config.lua")))
                for old in ("patchesStrategicMerge", "patchesJson6902", "replacements", "vars"):
                    self.assertNotIn(old, k, "%s: %s is not expected in an overlay here" % (kfile, old))
                for p in k.get("patches") or []:
                    body = p.get("patch") or ds.read(os.path.dirname(kfile), p["path"])
                    kind = (p.get("target") or {}).get("kind", "")
                    self.assertFalse(kind == "Deployment" or "kind: Deployment" in body,
                                     "%s patches the Deployment: the dry-run and flag checks of "
                                     "test_deploy_overlays.py assume the base's args without kubectl" % kfile)

    def test_comments_say_which_to_use(self):
        top = ds.read(ds.TOP)
        for d in ("k8s/overlays/production/", "k8s/overlays/staging/"):
            self.assertIn(d, top, "k8s/kustomization.yaml says when to use " + d)
        for kfile in ds.OVERLAYS:
            self.assertIn("kubectl apply -k %s/" % os.path.dirname(kfile), ds.read(kfile))


class OverlayConfigTest(unittest.TestCase):
    """Each config.lua as lua5.4 evaluates it: the base's settings, plus only
    what makes the environment."""

    @classmethod
    def setUpClass(cls):
        cls.cfg = {env: ds.lua_config(path) for env, path in ds.CONFIGS.items()}

    def test_base_has_neither(self):
        base = self.cfg["base"]
        self.assertNotIn("dry_run", base, "the base (and so production) runs real recoveries")
        self.assertNotIn("playbook_overrides", base, "approval is production's, in its overlay")
        self.assertEqual(set(base["playbook_settings"]), PLAYBOOKS)

    def test_production_requires_approval_for_exactly_the_two_rollbacks(self):
        prod = dict(self.cfg["production"])
        overrides = prod.pop("playbook_overrides", None)
        self.assertEqual(prod, self.cfg["base"],
                         "k8s/overlays/production/config.lua: the base's settings plus playbook_overrides only "
                         "(copy changes of k8s/base/config/config.lua to it)")
        self.assertIsNotNone(overrides, "production: playbook_overrides")
        need = {pb for pb, o in overrides.items() if o.get("approval", {}).get("required")}
        self.assertEqual(need, GATED, "production: approval for exactly kong-deck-rollback and schema-rollback")
        self.assertNotIn("settings-sync-recovery", overrides, "restarting the sync job needs no approval")
        for pb in GATED:
            self.assertEqual(overrides[pb], {"approval": APPROVAL}, pb)
        self.assertNotIn("dry_run", prod)

    def test_staging_is_dry_run_without_approval(self):
        stag = dict(self.cfg["staging"])
        self.assertIs(stag.pop("dry_run", None), True, "staging: dry_run = true")
        self.assertNotIn("playbook_overrides", stag, "staging: no approval (a dry-run has nothing to hold)")
        self.assertEqual(stag, self.cfg["base"],
                         "k8s/overlays/staging/config.lua: the base's settings plus dry_run only "
                         "(copy changes of k8s/base/config/config.lua to it)")

    def test_no_dry_run_flag_overrides_the_configs(self):
        """Flags win over the config file: a --dry-run flag would make
        production plan only, --dry-run=false would make staging act."""
        for env, (kfile, _, _) in ENVIRONMENTS.items():
            with self.subTest(env=env):
                args = deployment_args(kfile)
                self.assertEqual([a for a in args if a.split("=", 1)[0] == "--dry-run"], [], kfile)
                self.assertIn("--config=/etc/recoveryd/config.lua", args)


def unhashed(obj):
    """obj with the generated name of recoveryd-config (which changes with
    its content) replaced by the generator's name."""
    obj = copy.deepcopy(obj)
    if obj["kind"] == "Deployment":
        for v in obj["spec"]["template"]["spec"].get("volumes") or []:
            if (v.get("configMap") or {}).get("name", "").startswith("recoveryd-config-"):
                v["configMap"]["name"] = "recoveryd-config"
    return obj


@unittest.skipUnless(shutil.which("kubectl"), "kubectl not installed (optional check)")
class KubectlBuildTest(unittest.TestCase):
    """What kustomize makes of each environment: one recoveryd-config
    ConfigMap holding that environment's config.lua, mounted by the
    Deployment, and otherwise the base's objects (less the Secret templates,
    which an overlay may drop)."""

    def test_rendered_config(self):
        base_objs = kubectl_build(ds.TOP)
        for env, (kfile, _, _) in ENVIRONMENTS.items():
            with self.subTest(env=env):
                objs = base_objs if kfile == ds.TOP else kubectl_build(kfile)
                cms = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("recoveryd-config-")]
                self.assertEqual(len(cms), 1, "%s: one recoveryd-config ConfigMap" % kfile)
                cm = cms[0]
                self.assertEqual(cm["metadata"]["namespace"], "recoveryd")
                self.assertEqual(cm["data"], {"config.lua": ds.read(ds.CONFIGS[env])}, kfile)
                dep = base_deployment(objs)
                vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
                self.assertEqual(vols["config"]["configMap"]["name"], cm["metadata"]["name"],
                                 "%s: the Deployment mounts the replaced ConfigMap" % kfile)
                # nothing else differs from the base
                def key(o):
                    return (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
                strip = [o for o in objs if o is not cm]
                want = [o for o in base_objs if not (o["kind"] == "ConfigMap" and
                                                     o["metadata"]["name"].startswith("recoveryd-config-"))]
                have, base = {key(o): o for o in strip}, {key(o): o for o in want}
                self.assertEqual(set(have) - set(base), set(), "%s adds objects to the base" % kfile)
                dropped = set(base) - set(have)
                self.assertEqual({k for k in dropped if k[0] != "Secret"}, set(),
                                 "%s: an overlay may drop the Secret templates (docs/operations.md), "
                                 "nothing else" % kfile)
                for k, o in have.items():
                    o, b = unhashed(o), unhashed(base[k])
                    self.assertEqual(o, b, "%s: %s differs from the base" % (kfile, k))


class EffectiveTest(unittest.TestCase):
    """The real binary with each environment's flags and config."""

    def start(self, env):
        harness.require_binary(self)
        kfile, _, _ = ENVIRONMENTS[env]
        tmp = tempfile.TemporaryDirectory(prefix="recoveryd-deploy-")
        self.addCleanup(tmp.cleanup)
        tokens_text, tokens = ds.fill_tokens(ds.tokens_template())
        argv = ds.local_argv(deployment_args(kfile), tmp.name, ds.CONFIGS[env], tokens_text)
        d = harness.Recoveryd(tmp.name, tokens=False, start=False)
        d.argv = lambda: [d.bin] + argv
        # the legacy files (local_argv writes them) and the named principals
        d.tokens = {"webhook": "w" * 32, "operator": "o" * 32}
        d.principal_tokens = tokens
        d.start()
        self.addCleanup(d.stop)
        return d

    def roles(self):
        """A principal of each role in the tokens template."""
        out = {}
        for line in ds.tokens_template().splitlines():
            f = line.split("#", 1)[0].split()
            if len(f) == 3:
                out.setdefault(f[1], f[0])
        return out

    def test_environments(self):
        roles = self.roles()
        for need in ("viewer", "operator"):
            self.assertIn(need, roles, "the tokens template has an unscoped %s" % need)
        for env, (kfile, dry_run, gated) in ENVIRONMENTS.items():
            with self.subTest(env=env):
                d = self.start(env)
                rec = d.wait_log(lambda r: r.get("msg") == "listening")
                self.assertEqual(rec.get("dry_run"), "true" if dry_run else "false", "%s: %s" % (env, rec))

                st, _, doc = d.api("GET", "/api/v1/playbooks", token=roles["viewer"])
                self.assertEqual(st, 200, doc)
                pbs = doc.get("playbooks", doc) if isinstance(doc, dict) else doc
                self.assertEqual({p["name"] for p in pbs}, PLAYBOOKS)
                self.assertEqual({p["name"] for p in pbs if p["approval"]["required"]}, gated, env)
                for p in pbs:
                    if p["name"] in gated:
                        self.assertEqual(p["approval"], APPROVAL, p["name"])

                # Alertmanager's token (the legacy webhook-token file) still admits /webhook.
                alert = harness.variant("firing-single.json", alertname="DeployTestNoPlaybook")
                self.assertEqual(d.webhook(alert)["jobs"], [])

                # An alert of each playbook while all automation is paused: each gets a
                # job that does not run (state paused), made as the environment makes it.
                st, _, doc = d.api("POST", "/api/v1/pause", {"reason": "deploy test"}, token=roles["operator"])
                self.assertEqual(st, 200, doc)
                for pb, alertname in ALERTS.items():
                    jobs = d.webhook(harness.variant("firing-single.json", alertname=alertname))["jobs"]
                    self.assertEqual(len(jobs), 1, "%s %s: %s" % (env, alertname, jobs))
                    job = d.job(jobs[0]["id"])
                    self.assertEqual((job["playbook"], job["state"]), (pb, "paused"), "%s: %s" % (env, job))
                    self.assertIs(job["dry_run"], dry_run, "%s %s: a dry-run job?" % (env, pb))
                    # A dry-run job never waits for approval, whatever the playbook says.
                    self.assertEqual(job["approval"] is not None, pb in gated and not dry_run,
                                     "%s %s: approval %s" % (env, pb, job["approval"]))
                d.stop()


if __name__ == "__main__":
    unittest.main()

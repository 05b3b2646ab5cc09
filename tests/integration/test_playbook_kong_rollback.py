"""The shipped kong-deck-rollback playbook (playbooks/kong-deck-rollback.lua)
run by the real daemon against the decK stand-in (tests/fakes/deck), the Kong
Admin API fake (tests/fakes/kong_admin.py) and the scripted Prometheus query
API (tests/fakes/prom.py).

The playbook is copied unchanged (only its backoff is shortened where a test
goes through retries); its settings come from a config file with
`playbook_settings`, passed with --config."""

import hashlib
import json
import os
import time
import unittest

from harness import LUA_PATH, RecoverydTestCase
from playbook_support import (DECK, FAST_BACKOFF, FIXTURES_DIR, DeckFake, alert_doc, capture, log_text,
                              shipped_playbook, write_config)

import prom  # noqa: E402  (tests/fakes, on sys.path through harness)
from kong_admin import KongAdmin  # noqa: E402

NAME = "kong-deck-rollback"
FIXTURE = "gateway-latency-high.json"
EXPR = "histogram_quantile(0.95, http_request_duration_seconds_bucket{service=~'api.*'}) > 0.2"
SERIES = {"service": "api-gateway", "job": "kong", "instance": "10.42.1.5:8100"}
TOKEN = "kong-admin-tok-5678"
DRIFT = ("updating plugin rate-limiting (global)  {\n-  \"config\": {\"minute\": 1000}\n+  \"config\": {\"minute\": 5}\n}\n"
         "Summary:\n  Created: 0\n  Updated: 1\n  Deleted: 0\n")
CLEAN = "Summary:\n  Created: 0\n  Updated: 0\n  Deleted: 0\n"
SYNCED = "updating plugin rate-limiting (global)\nSummary:\n  Created: 0\n  Updated: 1\n  Deleted: 0\n"
DEPLOY_QUERY = "max(kong_config_deploy_timestamp_seconds)"


def big_state(n_routes=300):
    """A decK dump larger than dump_log_max (16 KiB)."""
    lines = ['_format_version: "3.0"', "services:", "- name: settings-api", "  host: settings-api.settings.svc",
             "  port: 8080", "  protocol: http", "  routes:"]
    for i in range(n_routes):
        lines += ["  - name: route-%03d" % i, "    paths:", "    - /api/v1/tenant-%03d" % i,
                  "    strip_path: true", "    tags:", "    - recoveryd"]
    lines += ["plugins:", "- name: rate-limiting", "  config:", "    minute: 5", "    policy: local"]
    return "\n".join(lines) + "\n"


class KongRollbackTest(RecoverydTestCase):

    def setUp(self):
        super().setUp()
        self.kong = KongAdmin(token=TOKEN).start()
        self.addCleanup(self.kong.stop)
        self.api = prom.FakePromAPI().start()
        self.addCleanup(self.api.stop)
        self.api.answer(EXPR, prom.vector([(SERIES, 0.43)]))
        self.deck = DeckFake(os.path.join(self.tmpdir, "deck"))
        self.addCleanup(self.deck.stop)
        self.good = os.path.join(self.tmpdir, "last-known-good.yaml")
        with open(self.good, "w") as f:
            f.write('_format_version: "3.0"\nplugins:\n- name: rate-limiting\n  config:\n    minute: 1000\n')
        self.state = big_state()
        self.scenario(diff=[{"exit": 2, "stdout": DRIFT}, {"exit": 0, "stdout": CLEAN}])

    def scenario(self, **subs):
        doc = {"dump": [{"exit": 0, "stdout": self.state}], "sync": [{"exit": 0, "stdout": SYNCED}]}
        doc.update(subs)
        self.deck.set_scenario(doc)

    def settings(self, **over):
        s = {"good_state_files": [self.good], "deck_bin": DECK, "deck_env": self.deck.env(),
             "kong_admin_url": self.kong.url, "kong_status_url": self.kong.url,
             "kong_admin_token_secret": "kong-admin-token", "deck_select_tags": ["recoveryd"],
             "prometheus_url": self.api.url, "verify_wait": 2, "verify_interval": 0.2}
        s.update(over)
        return s

    def config(self, **over):
        return write_config(os.path.join(self.tmpdir, "config.lua"), {NAME: self.settings(**over)},
                            exec_allow=[DECK])

    def start(self, extra_args=(), fields=None, **over):
        return self.daemon({NAME: shipped_playbook(NAME, fields)},
                           extra_args=["--config", self.config(**over)] + list(extra_args),
                           secrets={"kong-admin-token": TOKEN + "\n"})

    def fire(self, d, doc=None, timeout=60):
        ans = d.webhook(doc or alert_doc(FIXTURE))
        self.assertEqual(len(ans["jobs"]), 1, ans)
        self.assertEqual(ans["jobs"][0]["playbook"], NAME)
        return d.wait_job(ans["jobs"][0]["id"], timeout=timeout)

    def clear_on_sync(self):
        self.deck.on_call("sync", lambda: self.api.answer(EXPR, prom.vector([])))

    def dump(self, rec):
        return json.dumps(rec, indent=1)[:4000]

    # ---------------------------------------------------------------- success

    def test_rolls_back_to_the_known_good_state_and_verifies(self):
        self.clear_on_sync()
        d = self.start()
        rec = self.fire(d)
        capture("kong-rollback-success", rec)
        self.assertEqual(rec["state"], "succeeded", self.dump(rec))
        self.assertEqual(len(rec["attempts"]), 1)
        reason = rec["attempts"][0]["verify"]["reason"]
        self.assertIn("deck diff clean", reason)
        self.assertIn("kong /status ok and ready", reason)
        self.assertIn("alert condition cleared: " + EXPR, reason)

        # dump (for undo), diff (precondition), sync, diff (verify)
        self.assertEqual(self.deck.subs(), ["dump", "diff", "sync", "diff"])
        sync = self.deck.calls("sync")[0]
        self.assertEqual(sync["files"], [self.good])
        self.assertEqual(sync["argv"][:2], ["gateway", "sync"])
        self.assertIn("Kong-Admin-Token:" + TOKEN, sync["argv"])
        self.assertEqual(sync["argv"][sync["argv"].index("--select-tag") + 1], "recoveryd")
        self.assertEqual(self.deck.calls("dump")[0]["argv"][:4], ["gateway", "dump", "-o", "-"])

        # the pre-rollback state is in the log: size, SHA-256, the first 16 KiB
        entry = [l for l in rec["log"] if l["msg"].startswith("current Kong state before the rollback")]
        self.assertEqual(len(entry), 1, rec["log"])
        f = entry[0]["fields"]
        self.assertEqual(f["bytes"], len(self.state.encode()))
        self.assertEqual(f["sha256"], hashlib.sha256(self.state.encode()).hexdigest())
        self.assertTrue(f["truncated"])
        self.assertEqual(f["state"], self.state[:16384])
        self.assertEqual(f["select_tags"], ["recoveryd"])
        self.assertIn("sha256 " + f["sha256"], entry[0]["msg"])
        self.assertIn("drift from the known-good state: updating plugin rate-limiting (global) ...; "
                      "created 0, updated 1, deleted 0", log_text(rec))
        self.assertIn("synced the known-good state", log_text(rec))

        # Kong's health endpoints, with the admin token; the token is redacted
        self.assertEqual(len(self.kong.requests("GET", "/status")), 1)
        self.assertEqual(len(self.kong.requests("GET", "/status/ready")), 1)
        self.assertEqual(self.kong.requests("GET", "/status")[0].header("Kong-Admin-Token"), TOKEN)
        self.assertNotIn(TOKEN, json.dumps(rec))

    def test_recent_deploy_and_verify_query_below_threshold(self):
        """deploy_time_query: a deploy 2 minutes ago passes the window; an
        alert without a generatorURL is verified with verify_query."""
        self.clear_on_sync()
        self.api.answer(DEPLOY_QUERY, prom.vector([({}, time.time() - 120)]))
        q = "p95_latency_seconds"
        self.api.answer(q, prom.vector([({}, 0.05)]))
        d = self.start(deploy_time_query=DEPLOY_QUERY, verify_query=q)
        rec = self.fire(d, alert_doc(FIXTURE, drop_generator=True))
        self.assertEqual(rec["state"], "succeeded", self.dump(rec))
        self.assertIn("p95_latency_seconds = 0.05, below 0.2", rec["attempts"][0]["verify"]["reason"])
        self.assertIn("last policy deploy 2m", log_text(rec))
        self.assertEqual(len(self.deck.calls("sync")), 1)

    # ---------------------------------------------------------------- preconditions

    def test_no_drift_fails_at_once(self):
        self.scenario(diff=[{"exit": 0, "stdout": CLEAN}])
        d = self.start()
        rec = self.fire(d)
        capture("kong-rollback-no-drift", rec)
        self.assertEqual(rec["state"], "failed", self.dump(rec))
        self.assertEqual(len(rec["attempts"]), 1, "recovery.fail: no retries")
        self.assertTrue(rec["attempts"][0]["error"].startswith("no policy drift: not a bad deploy"),
                        rec["attempts"][0]["error"])
        self.assertEqual(self.deck.subs(), ["dump", "diff"], "nothing synced")
        self.assertEqual(self.kong.requests(), [])

    def test_old_deploy_fails_at_once(self):
        self.api.answer(DEPLOY_QUERY, prom.vector([({}, time.time() - 3 * 86400)]))
        d = self.start(deploy_time_query=DEPLOY_QUERY)
        rec = self.fire(d)
        self.assertEqual(rec["state"], "failed", self.dump(rec))
        self.assertEqual(len(rec["attempts"]), 1)
        self.assertIn("the last policy deploy was 72h 0m ago, outside the 1h 0m window: not a bad deploy",
                      rec["attempts"][0]["error"])
        self.assertEqual(self.deck.subs(), ["dump", "diff"])

    # ---------------------------------------------------------------- failures

    def test_latency_stays_high_retries_once_without_a_second_sync(self):
        d = self.start(fields=FAST_BACKOFF, verify_wait=0.6)
        rec = self.fire(d)
        self.assertEqual(rec["state"], "failed", self.dump(rec))
        self.assertEqual(len(rec["attempts"]), 2, "retries = 1")
        for a in rec["attempts"]:
            self.assertIn("verify: timed out after 0.6s: alert condition still holds: " + EXPR, a["error"])
        self.assertEqual(len(self.deck.calls("sync")), 1, "attempt 2 found the rollback in place")
        self.assertIn("an earlier attempt already rolled back", log_text(rec))

    def test_kong_not_ready_fails_verify(self):
        self.clear_on_sync()
        self.kong.set(ready=False)
        d = self.start(fields=FAST_BACKOFF)
        rec = self.fire(d)
        self.assertEqual(rec["state"], "failed", self.dump(rec))
        self.assertIn("verify: kong unhealthy: kong /status/ready: not ready: failed to connect to database",
                      rec["attempts"][0]["error"])

    # ---------------------------------------------------------------- dry-run

    def test_dry_run_plans_the_sync_and_runs_only_reads(self):
        d = self.start(extra_args=["--dry-run"])
        rec = self.fire(d)
        capture("kong-rollback-dry-run", rec)
        self.assertEqual(rec["outcome"], "dry_run_succeeded", self.dump(rec))
        planned = [a for a in rec["actions"] if a.get("planned")]
        self.assertEqual(len(planned), 1, planned)
        self.assertEqual(planned[0]["kind"], "exec")
        self.assertEqual(planned[0]["argv"][:3], [DECK, "gateway", "sync"])
        self.assertEqual(self.deck.subs(), ["dump", "diff"], "dump and diff are reads; sync never ran")
        self.assertEqual([r.method for r in self.kong.requests()], ["GET", "GET"])
        self.assertIn("dry-run: would deck sync " + self.good, log_text(rec))
        self.assertIn("dry-run: nothing was changed", rec["attempts"][0]["verify"]["reason"])

    def test_cli_run_dry_run_offline(self):
        d = self.daemon({NAME: shipped_playbook(NAME)}, start=False, secrets={"kong-admin-token": TOKEN + "\n"})
        p = d.run_cli(["run", NAME, "--alert", os.path.join(FIXTURES_DIR, FIXTURE), "--config", self.config(),
                       "--dry-run", "--playbooks", d.playbooks_dir, "--lua-path", LUA_PATH, "--secrets-dir", d.secrets_dir], timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("(dry-run)", p.stdout.splitlines()[0])
        planned = [l for l in p.stdout.splitlines() if "PLANNED" in l]
        self.assertEqual(len(planned), 1, p.stdout)
        self.assertRegex(planned[0], r"exec \[\S*deck\S* gateway sync .*\] PLANNED$")
        self.assertIn("outcome dry_run_succeeded", p.stdout)
        self.assertEqual(self.deck.subs(), ["dump", "diff"])
        if os.environ.get("RECOVERYD_CAPTURE_DIR"):
            with open(os.path.join(os.environ["RECOVERYD_CAPTURE_DIR"], "kong-rollback-cli-run.txt"), "w") as f:
                f.write(p.stdout)


if __name__ == "__main__":
    unittest.main()

"""The foreground commands: `recoveryd run PLAYBOOK --alert FILE`,
`recoveryd check` and `--check-config`, plus --version and --help."""

import json
import os
import time
import subprocess
import unittest

from harness import LUA_PATH, SOURCE_DIR, RecoverydTestCase, fixture, pg_mode, playbook

SETTINGS = 'alertname="SettingsSyncJobFailure"'

RUN = '''
must(recovery.http{method = "POST", url = FAKE .. "/cli-restart", json = {instance = ctx.alert.labels.instance}})
'''
VERIFY = '''
local r = must(recovery.http{method = "GET", url = FAKE .. "/cli-health"})
if r.status == 200 then return true end
return false, "still broken"
'''


class CliTest(RecoverydTestCase):

    def setup_dirs(self, playbooks):
        # start=False: only the directories, token files and argv helpers
        return self.daemon(playbooks, start=False)

    def alert_file(self, doc, name="alert.json"):
        path = os.path.join(self.tmpdir, name)
        with open(path, "w") as f:
            json.dump(doc, f)
        return path

    def run_cmd(self, d, name, alert, *extra):
        return d.run_cli(["run", name, "--alert", alert, "--playbooks", d.playbooks_dir,
                          "--lua-path", LUA_PATH] + list(extra), timeout=60)

    def test_run_succeeding_playbook(self):
        fake = self.fake()
        d = self.setup_dirs({"cli": playbook("cli", RUN, VERIFY, match=[SETTINGS], fake=fake)})
        p = self.run_cmd(d, "cli", self.alert_file(fixture("firing-single.json")))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("succeeded", p.stdout)
        self.assertIn("/cli-restart", p.stdout, "the action log lists the calls")
        self.assertIn("/cli-health", p.stdout)
        posts = fake.requests("POST", "/cli-restart")
        self.assertEqual(len(posts), 1)
        self.assertEqual(posts[0].json()["instance"], "settings-sync-job-7f9c")

    def test_run_single_alert_object(self):
        fake = self.fake()
        d = self.setup_dirs({"cli": playbook("cli", RUN, VERIFY, match=[SETTINGS], fake=fake)})
        alert = fixture("firing-critical.json")["alerts"][0]
        p = self.run_cmd(d, "cli", self.alert_file(alert))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(fake.requests("POST", "/cli-restart")[0].json()["instance"], "event-validator-0")

    def test_run_failing_playbook(self):
        fake = self.fake()
        fake.set_responses("GET", "/cli-health", [(503, {}, "down")])
        d = self.setup_dirs({"cli": playbook("cli", RUN, VERIFY, match=[SETTINGS], fake=fake, retries=1,
                                             backoff={"initial": 0.1, "factor": 1, "max": 0.1})})
        p = self.run_cmd(d, "cli", self.alert_file(fixture("firing-single.json")))
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("state       failed, outcome failed", p.stdout)
        # Each attempt in plain words: the calls with their answers, the
        # verify reason, the result.
        self.assertEqual(p.stdout.count("-> 503"), 2, p.stdout)
        self.assertEqual(p.stdout.count("verify    failed: still broken"), 2, p.stdout)
        self.assertRegex(p.stdout, r"attempt 2, started")
        self.assertEqual(fake.count("POST", "/cli-restart"), 2, "1 + retries attempts")
        # No log lines mixed in: the daemon's log is for --verbose.
        self.assertEqual(p.stderr, "")

    def test_run_no_retries_verbose_and_json(self):
        fake = self.fake()
        fake.set_responses("GET", "/cli-health", [(503, {}, "down")])
        d = self.setup_dirs({"cli": playbook("cli", RUN, VERIFY, match=[SETTINGS], fake=fake, retries=3,
                                             backoff={"initial": 0.1, "factor": 1, "max": 0.1})})
        alert = self.alert_file(fixture("firing-single.json"))
        p = self.run_cmd(d, "cli", alert, "--no-retries", "--verbose")
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertEqual(fake.count("POST", "/cli-restart"), 1, "--no-retries: one attempt")
        self.assertNotIn("attempt 2", p.stdout)
        self.assertIn('"msg":"job ended"', p.stderr, "--verbose: the log lines")
        p = self.run_cmd(d, "cli", alert, "--no-retries", "--output", "json")
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        recs = json.loads(p.stdout)
        self.assertEqual(len(recs), 1)
        self.assertEqual((recs[0]["playbook"], recs[0]["outcome"], recs[0]["max_attempts"]), ("cli", "failed", 1))
        self.assertEqual(recs[0]["attempts"][0]["verify"], {"ok": False, "reason": "still broken"})
        p = self.run_cmd(d, "cli", alert, "--output", "yaml")
        self.assertEqual(p.returncode, 2)
        self.assertIn("--output: expected text or json", p.stderr)

    def test_run_prints_every_job_of_the_payload(self):
        fake = self.fake()
        d = self.setup_dirs({"cli": playbook("cli", RUN, VERIFY, match=['alertname="GatewayLatencyHigh"'],
                                             fake=fake)})
        doc = fixture("firing-grouped.json")
        p = self.run_cmd(d, "cli", self.alert_file(doc), "--dry-run")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(p.stdout.count("outcome dry_run_succeeded"), len(doc["alerts"]), p.stdout)
        for a in doc["alerts"]:
            self.assertIn("instance=" + a["labels"]["instance"], p.stdout)

    def test_run_dry_run(self):
        fake = self.fake()
        d = self.setup_dirs({"cli": playbook("cli", RUN, VERIFY, match=[SETTINGS], fake=fake)})
        p = self.run_cmd(d, "cli", self.alert_file(fixture("firing-single.json")), "--dry-run")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(fake.count("POST"), 0, fake.requests())
        self.assertEqual(fake.count("GET", "/cli-health"), 1)
        self.assertRegex(p.stdout, r"POST http://127\.0\.0\.1:\d+/cli-restart PLANNED")
        self.assertRegex(p.stdout, r"GET http://127\.0\.0\.1:\d+/cli-health -> 200")
        self.assertIn("outcome dry_run_succeeded", p.stdout)

    def test_run_unknown_playbook(self):
        d = self.setup_dirs({"cli": playbook("cli", "return", match=[SETTINGS]),
                             "cli-two": playbook("cli-two", "return", match=[SETTINGS])})
        p = self.run_cmd(d, "nope", self.alert_file(fixture("firing-single.json")))
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("nope", p.stderr)
        # what the person could have meant: the names that are loaded
        self.assertRegex(p.stderr, r"loaded: cli, cli-two\b", p.stderr)

    def check_config(self, d):
        return d.run_cli(d.base_args(listen=False) + ["--check-config"], timeout=30)

    def test_check_config_good(self):
        d = self.setup_dirs({"a": playbook("a", "return", match=[SETTINGS]),
                             "b": playbook("b", "return", match=['alertname=~"Gateway.*"', 'severity!="info"'])})
        p = self.check_config(d)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_check_config_syntax_error(self):
        d = self.setup_dirs({"a": playbook("a", "return", match=[SETTINGS])})
        d.write_playbook("broken", 'return {\n  name = "broken",\n  run = function(ctx) recovery.sleep( end,\n}\n')
        p = self.check_config(d)
        out = p.stdout + p.stderr
        self.assertNotEqual(p.returncode, 0, out)
        self.assertIn("broken.lua", out)
        self.assertIn("near", out, "the Lua parser's message is shown")

    def test_check_config_validation_errors(self):
        cases = {
            "norun": ('return {name = "norun", match = {\'alertname="X"\'}, verify = function() return true end}',
                      "run"),
            "badmatch": (playbook("badmatch", "return", match=['alertname=~"(unclosed"']), "match"),
            "badretries": (playbook("badretries", "return", match=[SETTINGS], retries="three"), "retries"),
        }
        for name, (src, word) in cases.items():
            with self.subTest(name=name):
                d = self.daemon({"ok": playbook("ok", "return", match=[SETTINGS]), name: src},
                                start=False, subdir=name)
                p = self.check_config(d)
                out = p.stdout + p.stderr
                self.assertNotEqual(p.returncode, 0, out)
                self.assertIn(name + ".lua", out)
                self.assertIn(word, out)

    def test_check_reports_every_problem_in_one_run(self):
        d = self.setup_dirs({"good": playbook("good", "return", match=[SETTINGS], escalate=["pagerduty"])})
        d.write_playbook("typo", 'return {name = "typo", retires = 3, run = function() end}\n')
        d.write_playbook("syntax", 'return {\n  name = "syntax",\n  run = function(ctx) recovery.sleep( end,\n}\n')
        d.write_playbook("raises", '\n\nerror("top-level boom")\n')
        d.write_playbook("badtype", playbook("badtype", "return", match=[SETTINGS], retries="three"))
        # No token and no sink file: only warnings for `check`.
        p = d.run_cli(["check", d.playbooks_dir, "--lua-path", LUA_PATH], timeout=30)
        errors = [l for l in p.stderr.splitlines() if ": error:" in l]
        where = d.playbooks_dir + "/"
        self.assertEqual(sorted(errors), [
            where + "badtype.lua: error: retries: expected a number, got string",
            where + "raises.lua:3: error: top-level boom",
            where + "syntax.lua:3: error: unexpected symbol near 'end'",
            where + "typo.lua: error: unknown field 'retires' (did you mean 'retries'?)",
        ], p.stderr)
        self.assertIn("warning: no token configured", p.stderr)
        self.assertIn("warning: playbook good (good.lua) escalates to sink 'pagerduty', which is not configured",
                      p.stderr)
        self.assertIn(d.playbooks_dir + ": 1 playbook loaded (good)", p.stdout)
        self.assertEqual(p.stdout.splitlines()[-1], "4 errors, 2 warnings")
        self.assertEqual(p.returncode, 1)
        # --check-config: the same problems, and the sink and token are errors.
        p = d.run_cli(["--check-config", "--playbooks", d.playbooks_dir, "--lua-path", LUA_PATH], timeout=30)
        self.assertEqual(p.stdout.splitlines()[-1], "6 errors, 0 warnings", p.stdout + p.stderr)
        self.assertEqual(p.returncode, 1)

    def test_check_passes_the_shipped_playbooks_without_secrets(self):
        d = self.setup_dirs({})
        p = d.run_cli(["check", os.path.join(SOURCE_DIR, "playbooks"), "--lua-path", LUA_PATH])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertNotIn("error", p.stderr)
        self.assertIn("3 playbooks loaded (kong-deck-rollback, schema-rollback, settings-sync-recovery)",
                      p.stdout)
        self.assertRegex(p.stdout.splitlines()[-1], r"^config ok: 3 playbooks, \d+ warnings$")

    def test_check_config_regex_time_is_bounded(self):
        # glibc's regcomp took 28 s on the 22-'+' form of the first pattern;
        # RE2 (like Alertmanager's Go regexp) refuses it at once. The bound is
        # a regression guard for slow CI, not a benchmark.
        cases = {
            "stacked": ('namespace=~".' + "+" * 24 + '"', "bad repetition operator: ++"),
            "nested": ('namespace=~"' + "(" * 24 + ".+" + ")+" * 24 + '"', None),
            "huge": ('namespace=~"[\\\\pL\\\\pN]{1000}"', "pattern too large"),
        }
        for name, (matcher, error) in cases.items():
            with self.subTest(name=name):
                d = self.daemon({name: playbook(name, "return", match=[SETTINGS, matcher])},
                                start=False, subdir=name)
                t = time.monotonic()
                p = self.check_config(d)
                elapsed = time.monotonic() - t
                out = p.stdout + p.stderr
                self.assertLess(elapsed, 10.0, out)
                if error is None:
                    self.assertEqual(p.returncode, 0, out)
                else:
                    self.assertNotEqual(p.returncode, 0, out)
                    self.assertIn(name + ".lua", out)
                    self.assertIn("invalid regex: " + error, out)

    def test_check_config_duplicate_names(self):
        d = self.setup_dirs({"one": playbook("same", "return", match=[SETTINGS]),
                             "two": playbook("same", "return", match=[SETTINGS])})
        p = self.check_config(d)
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("same", p.stdout + p.stderr)

    def test_migrate_creates_the_schema_and_refuses_a_newer_one(self):
        """`recoveryd migrate` brings the journal (a file, or PostgreSQL when
        the suite runs against it) to this build's schema and says so; a
        journal written by a newer build is refused, by migrate and daemon."""
        d = self.daemon({}, start=False)
        p = d.run_cli(["migrate", "--state", d.journal], timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), "journal schema at version 4")
        self.assertEqual(p.stderr, "")
        p = d.run_cli(["migrate", "--state", d.journal], timeout=30)  # again: nothing to do
        self.assertEqual((p.returncode, p.stdout.strip()), (0, "journal schema at version 4"), p.stderr)
        if pg_mode():
            subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", d.journal, "-c",
                            "UPDATE recoveryd_schema SET version = 99"], check=True, capture_output=True)
        else:
            import sqlite3
            db = sqlite3.connect(d.journal)
            db.execute("PRAGMA user_version = 99")
            db.close()
        p = d.run_cli(["migrate", "--state", d.journal], timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("schema version 99 is newer than supported 4", p.stderr)
        p = d.run_cli(d.base_args() + ["--insecure-no-auth"], timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("schema version 99 is newer than supported 4", p.stderr)

    def test_migrate_refuses_a_password_in_the_url(self):
        d = self.daemon({}, start=False)
        p = d.run_cli(["migrate", "--state", "postgres://alice:s3cr3t-pw@127.0.0.1:1/recoveryd"], timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("a password in the URL is refused", p.stderr)
        self.assertIn("alice:****@127.0.0.1", p.stderr)
        self.assertNotIn("s3cr3t-pw", p.stderr)

    def test_version_and_help(self):
        d = self.setup_dirs({})
        p = d.run_cli(["--version"], timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout + p.stderr, r"\d+\.\d+\.\d+")
        p = d.run_cli(["--help"], timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        for flag in ("--listen", "--playbooks", "--check-config", "--exec-allow"):
            self.assertIn(flag, p.stdout + p.stderr)
        # as people type them
        for argv in (["version"], ["-V"]):
            p = d.run_cli(argv, timeout=10)
            self.assertEqual(p.returncode, 0, "%s: %s" % (argv, p.stderr))
            self.assertRegex(p.stdout, r"^recoveryd \d+\.\d+\.\d+", argv)
        for argv in (["-h"], ["help"]):
            p = d.run_cli(argv, timeout=10)
            self.assertEqual(p.returncode, 0, "%s: %s" % (argv, p.stderr))
            self.assertIn("--playbooks", p.stdout, argv)
            self.assertIn("recoveryd run PLAYBOOK", p.stdout, argv)


if __name__ == "__main__":
    unittest.main()

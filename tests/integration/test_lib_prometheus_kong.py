"""The helper modules recovery.prometheus and recovery.kong, run by the real
daemon: against Debian's real Prometheus scraping a test exporter, a scripted
query-API fake, the decK stand-in (tests/fakes/deck) and a Kong Admin API
fake (tests/fakes/kong_admin.py)."""

import json
import os
import secrets
import shutil
import tempfile
import unittest
import urllib.parse

from harness import FAKES_DIR, RecoverydTestCase, find_actions, flat_strings, lua_str, playbook, variant

import kong_admin  # noqa: E402  (tests/fakes, put on sys.path by harness)
import prom  # noqa: E402

DECK = os.path.join(FAKES_DIR, "deck")
ANY = ['alertname="LibTest"']


def manual(reason="test"):
    return {"labels": {"alertname": "LibTest", "instance": "a"}, "annotations": {}, "reason": reason}


def report(expr):
    """Lua: POST the table expr to FAKE/report."""
    return 'must(recovery.http{method = "POST", url = FAKE .. "/report", json = %s})' % expr


def report_get(expr):
    """Lua: GET FAKE/report?data=<json> (a read: it also runs in dry-run)."""
    return ('local _data = recovery.json.encode(%s):gsub("[^%%w%%-_%%.~]", '
            'function(c) return string.format("%%%%%%02X", c:byte()) end)\n'
            'must(recovery.http{method = "GET", url = FAKE .. "/report?data=" .. _data})' % expr)


def reported(fake):
    out = []
    for r in fake.requests(path="/report"):
        out.append(json.loads(r.params["data"][0]) if r.method == "GET" else r.json())
    return out


def alert_with_generator_url(url, alertname="LibTest"):
    doc = variant("firing-single.json", alertname=alertname)
    doc["alerts"][0]["generatorURL"] = url
    doc["groupLabels"] = {"alertname": alertname}
    return doc


# ---------------------------------------------------------------- real Prometheus

class RealPrometheusTest(RecoverydTestCase):
    """One Prometheus (1 s scrapes) and one exporter for the whole class."""

    @classmethod
    def setUpClass(cls):
        if not os.environ.get("RECOVERYD_BIN"):
            raise unittest.SkipTest("RECOVERYD_BIN is not set (run through ctest)")
        prom.skip_without_prometheus()
        cls.exporter = prom.Exporter().start()
        cls.exporter.set("settings_sync_healthy", 0, {"deployment": "settings-sync"},
                         help="1 when the last settings sync succeeded")
        cls.exporter.set("settings_sync_errors_total", 7, {"deployment": "settings-sync"}, kind="counter")
        cls.promdir = tempfile.mkdtemp(prefix="recoveryd-prom-")
        cls.prom = prom.RealPrometheus(cls.promdir, targets=[cls.exporter.address], job="settings")
        try:
            cls.prom.start()
            cls.prom.wait_for('settings_sync_errors_total{deployment="settings-sync"}', timeout=20)
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "prom", None) is not None:
            cls.prom.stop()
        if getattr(cls, "exporter", None) is not None:
            cls.exporter.stop()
        if getattr(cls, "promdir", None):
            shutil.rmtree(cls.promdir, ignore_errors=True)

    def test_verify_reevaluates_the_alert_expression(self):
        """Attempt 1 repairs nothing: verify sees the alert's own expression
        still return a series and fails. Attempt 2's run "restarts" the
        service (POST to the exporter's /set); verify polls until Prometheus
        no longer returns a series."""
        expr = 'settings_sync_healthy{deployment="settings-sync"} == 0'
        self.exporter.set("settings_sync_healthy", 0, {"deployment": "settings-sync"})
        self.prom.wait_for(expr, timeout=10)
        fake = self.fake()
        prelude = ('local prometheus = require "recovery.prometheus"\n'
                   'local PROM = %s\nlocal EXPORTER = %s' % (lua_str(self.prom.url), lua_str(self.exporter.url)))
        run = '''
if ctx.job.attempt >= 2 then
  must(recovery.http{method = "POST",
    url = EXPORTER .. "/set?name=settings_sync_healthy&value=1&deployment=settings-sync"})
end
'''
        verify = '''
local holds, detail, samples = prometheus.alert_holds(ctx, {url = PROM})
''' + report("{attempt = ctx.job.attempt, holds = holds, detail = detail, n = samples and #samples}") + '''
if ctx.job.attempt == 1 then
  if holds then return false, "alert condition still holds: " .. detail end
  return true, detail
end
return prometheus.alert_cleared(ctx, {url = PROM, wait = 10, interval = 0.3})
'''
        d = self.daemon({"p": playbook("p", run, verify, match=['alertname="SettingsSyncUnhealthy"'], fake=fake,
                                       retries=1, backoff={"initial": 0.05, "factor": 1, "max": 0.1},
                                       timeout=20, prelude=prelude)})
        # the generatorURL names the in-cluster service; url= overrides the base
        gen = "http://prometheus.monitoring.svc:9090/graph?g0.expr=%s&g0.tab=1" % urllib.parse.quote_plus(expr)
        job_id = d.webhook(alert_with_generator_url(gen, "SettingsSyncUnhealthy"))["jobs"][0]["id"]
        rec = d.wait_job(job_id, timeout=30)
        self.assertEqual(rec["state"], "succeeded", json.dumps(rec, indent=1)[:3000])
        a1, a2 = rec["attempts"]
        self.assertEqual(a1["result"], "failed", a1)
        self.assertIn("alert condition still holds", a1["error"])
        self.assertIn('settings_sync_healthy{deployment="settings-sync", instance=', a1["error"])
        self.assertEqual(a2["result"], "succeeded", a2)
        first = reported(fake)[0]
        self.assertEqual((first["attempt"], first["holds"], first["n"]), (1, True, 1), first)
        self.assertEqual([c[:3] for c in self.exporter.set_calls()], [("POST", "settings_sync_healthy", 1.0)])
        # the queries went to the real Prometheus: an action per query
        self.assertTrue(find_actions(rec, "GET", self.prom.url + "/api/v1/query?query="), rec.get("actions"))

    def test_query_value_holds_and_error_envelope(self):
        fake = self.fake()
        prelude = 'local prometheus = require "recovery.prometheus"\nlocal PROM = %s' % lua_str(self.prom.url)
        run = '''
local c = prometheus.client{url = PROM, timeout = 5}
local v, verr = c:value('settings_sync_errors_total{deployment="settings-sync"}')
local r = must(c:query('settings_sync_errors_total', {time = recovery.now()}))
local sc = must(c:query('scalar(vector(42))'))
local s42 = c:value('scalar(vector(42))')
local h1, hs1 = c:holds('settings_sync_errors_total > 5')
local h2, hs2 = c:holds('settings_sync_errors_total > 100')
local h3, herr3 = c:holds('scalar(vector(1))')
local nd, nderr = c:value('no_such_metric_anywhere')
local bad, berr = c:query('rate(settings_sync_errors_total[30s]')
''' + report('''{v = v, verr = verr, rtype = r.type, n = #r.samples, job = r.samples[1].metric.job,
  name = r.samples[1].metric.__name__, ts = r.samples[1].ts, sctype = sc.type, s42 = s42,
  h1 = h1, hn1 = #hs1, h2 = h2, hn2 = #hs2, h3 = tostring(h3), herr3 = herr3,
  nd = tostring(nd), nderr = nderr, bad = tostring(bad), berr = berr}''')
        d = self.daemon({"q": playbook("q", run, match=ANY, fake=fake, timeout=15, prelude=prelude)})
        st, _, doc = d.trigger("q", manual())
        self.assertStatus(st, 202, d, doc)
        rec = d.wait_job(doc["jobs"][0]["id"], timeout=20)
        self.assertEqual(rec["state"], "succeeded", rec)
        got = reported(fake)[0]
        self.assertEqual(got["v"], 7, got)
        self.assertEqual((got["rtype"], got["n"], got["job"], got["name"]),
                         ("vector", 1, "settings", "settings_sync_errors_total"), got)
        self.assertIsInstance(got["ts"], (int, float))
        self.assertEqual((got["sctype"], got["s42"]), ("scalar", 42))
        self.assertEqual((got["h1"], got["hn1"], got["h2"], got["hn2"]), (True, 1, False, 0), got)
        self.assertEqual(got["h3"], "nil")
        self.assertIn("scalar, not an instant vector", got["herr3"])
        self.assertEqual((got["nd"], got["nderr"]), ("nil", "no data"))
        # Prometheus' error envelope: HTTP 400, errorType bad_data
        self.assertEqual(got["bad"], "nil")
        self.assertIn("bad_data:", got["berr"])
        self.assertIn("parse error", got["berr"])


# ---------------------------------------------------------------- scripted query API

class FakePromAPITest(RecoverydTestCase):

    def test_result_types_errors_headers_and_path_prefix(self):
        api = prom.FakePromAPI().start()
        self.addCleanup(api.stop)
        api.answer("m", prom.matrix([({"job": "a"}, [(1.0, 1), (2.0, 5)])]))
        api.answer("s", prom.string("hello"))
        api.answer("nan", prom.vector([({"job": "a"}, float("nan"))]))
        api.answer("slow", prom.error("timeout", "query timed out in expression evaluation"))
        api.answer("exec", prom.error("execution", "found duplicate series for the match group"))
        api.answer("html", "<html>502 Bad Gateway</html>", status=502)
        api.answer('up{job="x"} == 0', prom.vector([({"job": "x", "instance": "i1"}, 0),
                                                    ({"job": "x", "instance": "i2"}, 0)]))
        fake = self.fake()
        prelude = 'local prometheus = require "recovery.prometheus"\nlocal API = %s' % lua_str(api.url)
        run = '''
local tok = must(recovery.secret("prom-token"))
local c = prometheus.client{url = API .. "/", headers = {Authorization = "Bearer " .. tok}}
local m = must(c:query("m"))
local s = must(c:value("s"))
local nan = must(c:value("nan"))
local _, eslow = c:query("slow")
local _, eexec = c:query("exec")
local _, ehtml = c:query("html")
local mh, merr = c:holds("m")
-- the alert's generatorURL points at a path prefix; no url override
local holds, detail = prometheus.alert_holds(ctx, {headers = {Authorization = "Bearer " .. tok}})
''' + report('''{mtype = m.type, mvals = #m.samples[1].values, mlast = m.samples[1].value, s = s,
  nan_is_nan = (nan ~= nan), eslow = eslow, eexec = eexec, ehtml = ehtml, mh = tostring(mh), merr = merr,
  holds = holds, detail = detail}''')
        token = "prom-" + secrets.token_hex(12)
        d = self.daemon({"f": playbook("f", run, match=['alertname="PrefixTest"'], fake=fake, prelude=prelude)},
                        secrets={"prom-token": token})
        gen = api.url + "/prometheus/graph?g0.expr=" + urllib.parse.quote_plus('up{job="x"} == 0') + "\u0026g0.tab=1"
        job_id = d.webhook(alert_with_generator_url(gen, "PrefixTest"))["jobs"][0]["id"]
        rec = d.wait_job(job_id)
        self.assertEqual(rec["state"], "succeeded", rec)
        got = reported(fake)[0]
        self.assertEqual((got["mtype"], got["mvals"], got["mlast"]), ("matrix", 2, 5), got)
        self.assertEqual(got["s"], "hello")
        self.assertIs(got["nan_is_nan"], True)
        self.assertIn("timeout: query timed out", got["eslow"])
        self.assertIn("execution: found duplicate series", got["eexec"])
        self.assertIn("HTTP 502", got["ehtml"])
        self.assertIn("not an API response", got["ehtml"])
        self.assertEqual(got["mh"], "nil")
        self.assertIn("matrix, not an instant vector", got["merr"])
        self.assertIs(got["holds"], True)
        self.assertIn("returns 2 series", got["detail"])
        reqs = api.requests()
        paths = [p for p, _, _ in reqs]
        self.assertEqual(paths[-1], "/prometheus/api/v1/query", paths)
        self.assertEqual(reqs[-1][1]["query"], 'up{job="x"} == 0')
        self.assertTrue(all(p == "/api/v1/query" for p in paths[:-1]), paths)
        for _, _, headers in reqs:
            self.assertIn(("Authorization", "Bearer " + token), headers)
        self.assertNotIn(token, json.dumps(rec))


# ---------------------------------------------------------------- decK stand-in

class DeckTest(RecoverydTestCase):

    def setUp(self):
        super().setUp()
        self.deck_log = os.path.join(self.tmpdir, "deck-log.jsonl")
        self.scenario = os.path.join(self.tmpdir, "deck-scenario.json")
        self.state = os.path.join(self.tmpdir, "kong.yaml")
        with open(self.state, "w") as f:
            f.write('_format_version: "3.0"\nservices: []\n')
        self.set_scenario({})

    def set_scenario(self, doc):
        with open(self.scenario, "w") as f:
            json.dump(doc, f)

    def invocations(self):
        if not os.path.exists(self.deck_log):
            return []
        with open(self.deck_log) as f:
            return [json.loads(l) for l in f if l.strip()]

    def prelude(self, kong_addr="http://kong-admin.kong.svc:8001"):
        return "\n".join([
            'local kong = require "recovery.kong"',
            "local DECK = %s" % lua_str(DECK),
            "local KONG = %s" % lua_str(kong_addr),
            "local STATE = %s" % lua_str(self.state),
            "local ENV = {DECK_FAKE_LOG = %s, DECK_FAKE_SCENARIO = %s}" % (lua_str(self.deck_log),
                                                                          lua_str(self.scenario)),
        ])

    def run_playbook(self, run, secrets_=None, extra=(), retries=0):
        fake = self.fake()
        d = self.daemon({"k": playbook("k", run, match=ANY, fake=fake, timeout=20, retries=retries,
                                       prelude=self.prelude())},
                        extra_args=["--exec-allow", DECK] + list(extra), secrets=secrets_)
        st, _, doc = d.trigger("k", manual())
        self.assertStatus(st, 202, d, doc)
        return d, fake, d.wait_job(doc["jobs"][0]["id"], timeout=30)

    def test_diff_maps_exit_codes(self):
        drift = "updating service settings-api  {\n-  \"port\": 8080\n+  \"port\": 8081\n}\n\nSummary:\n  Created: 0\n  Updated: 1\n  Deleted: 0\n"
        self.set_scenario({"diff": [
            {"exit": 0, "stdout": "Summary:\n  Created: 0\n  Updated: 0\n  Deleted: 0\n"},
            {"exit": 2, "stdout": drift},
            {"exit": 1, "stderr": "Error: reading configuration from Kong: Get \"http://kong-admin.kong.svc:8001/\": dial tcp: connection refused\n"},
        ]})
        run = '''
local d = kong.deck{bin = DECK, kong_addr = KONG, env = ENV, timeout = 10}
local a1, o1 = d:diff(STATE)
local a2, o2 = d:diff({STATE})
local a3, o3 = d:diff(STATE)
local a4, o4 = d:diff(STATE .. ".missing")
''' + report("{a1 = tostring(a1), o1 = o1, a2 = tostring(a2), o2 = o2, a3 = tostring(a3), o3 = o3, "
             "a4 = tostring(a4), o4 = o4}")
        d, fake, rec = self.run_playbook(run)
        self.assertEqual(rec["state"], "succeeded", rec)
        got = reported(fake)[0]
        self.assertEqual(got["a1"], "true", got)
        self.assertIn("Updated: 0", got["o1"])
        self.assertEqual(got["a2"], "false", got)
        self.assertEqual(got["o2"], drift)
        self.assertEqual(got["a3"], "nil", got)
        self.assertIn("deck diff exited 1", got["o3"])
        self.assertIn("connection refused", got["o3"])
        self.assertEqual(got["a4"], "nil", got)
        self.assertIn("no such file or directory", got["o4"])
        inv = self.invocations()
        self.assertEqual(len(inv), 4, inv)
        self.assertEqual(inv[0]["prog"], DECK)
        self.assertEqual(inv[0]["argv"], ["gateway", "diff", "--non-zero-exit-code", "--kong-addr",
                                          "http://kong-admin.kong.svc:8001", "--no-color", "--analytics=false",
                                          self.state])

    def test_sync_argv_with_secret_headers_and_tags(self):
        token = "kat-" + secrets.token_hex(16)
        self.set_scenario({"require_headers": ["Kong-Admin-Token:" + token]})
        run = '''
local tok = must(recovery.secret("kong-admin-token"))
local opts = {bin = DECK, kong_addr = KONG, headers = {"Kong-Admin-Token:" .. tok},
              select_tags = {"recoveryd", "settings"}, env = ENV}
local d = kong.deck(opts)
must(d:ping())
local state = must(d:dump())
local ok, out, planned = d:sync{stdin = state}
must(ok, out)
must(d:sync(STATE))
opts.legacy = true
must(kong.deck(opts):sync(STATE))
local bad = kong.deck{bin = DECK, kong_addr = KONG, headers = {"Kong-Admin-Token:wrong"}, env = ENV}
local r, err = bad:sync(STATE)
''' + report("{planned = planned, dumped = state, bad = tostring(r), err = err}")
        d, fake, rec = self.run_playbook(run, secrets_={"kong-admin-token": token + "\n"})
        self.assertEqual(rec["state"], "succeeded", rec)
        got = reported(fake)[0]
        self.assertIs(got["planned"], False)
        self.assertIn("name: settings-api", got["dumped"])
        self.assertEqual(got["bad"], "nil")
        self.assertIn("deck sync exited 1", got["err"])
        self.assertIn("401", got["err"])
        g = ["--kong-addr", "http://kong-admin.kong.svc:8001", "--headers", "Kong-Admin-Token:" + token]
        tags = ["--select-tag", "recoveryd", "--select-tag", "settings"]
        tail = ["--no-color", "--analytics=false"]
        inv = self.invocations()
        self.assertEqual([i["argv"] for i in inv], [
            ["gateway", "ping"] + g + tail,
            ["gateway", "dump", "-o", "-"] + g + tags + tail,
            ["gateway", "sync"] + g + tags + tail + ["-"],
            ["gateway", "sync"] + g + tags + tail + [self.state],
            ["sync", "-s", self.state] + g + tags + tail,
            ["gateway", "sync", "--kong-addr", "http://kong-admin.kong.svc:8001",
             "--headers", "Kong-Admin-Token:wrong"] + tail + [self.state],
        ])
        self.assertEqual(inv[2]["stdin"], got["dumped"], "sync {stdin=} feeds the dump back through '-'")
        # the token never shows up in the record or the log; argv is redacted
        self.assertNotIn(token, json.dumps(rec))
        self.assertNotIn(token, d.log_text())
        execs = find_actions(rec, None, DECK)
        self.assertEqual(len(execs), 6, rec.get("actions"))
        self.assertTrue(any("[REDACTED]" in s for s in flat_strings(execs[0])), execs[0])

    def test_dry_run_plans_sync_but_runs_reads(self):
        run = '''
local d = kong.deck{bin = DECK, kong_addr = KONG, select_tags = {"recoveryd"}, env = ENV}
must(d:ping())
local state = must(d:dump())
local in_sync = d:diff(STATE)
local ok, out, planned = d:sync(STATE)
''' + report_get("{in_sync = in_sync, ok = ok, out = out, planned = planned, dumped = #state}")
        d, fake, rec = self.run_playbook(run, extra=["--dry-run"])
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertIs(rec["dry_run"], True)
        self.assertIn("dry_run_succeeded", str(rec.get("outcome")), rec)
        got = reported(fake)[0]
        self.assertEqual(got, {"in_sync": True, "ok": True, "out": "", "planned": True,
                               "dumped": got["dumped"]}, got)
        self.assertGreater(got["dumped"], 0)
        subs = [i.get("sub") for i in self.invocations()]
        self.assertEqual(subs, ["ping", "dump", "diff"], "sync must not run in dry-run")
        planned = [a for a in find_actions(rec, None, DECK) if a.get("planned")]
        self.assertEqual(len(planned), 1, rec.get("actions"))
        self.assertIn("sync", flat_strings(planned[0]))

    def test_failed_sync_fails_the_attempt(self):
        self.set_scenario({"sync": [{"exit": 1, "stdout": "creating service settings-api\n",
                                     "stderr": "Error: 1 errors occurred:\n\tcreate service settings-api failed: "
                                               "HTTP status 500 (message: \"An unexpected error occurred\")\n"},
                                    {"exit": 0}]})
        run = 'must(kong.deck{bin = DECK, kong_addr = KONG, env = ENV}:sync(STATE))'
        d, fake, rec = self.run_playbook(run, retries=1)
        self.assertEqual(rec["state"], "succeeded", rec)
        a1, a2 = rec["attempts"]
        self.assertEqual(a1["result"], "failed")
        self.assertIn("deck sync exited 1", a1["error"])
        self.assertIn("HTTP status 500", a1["error"])
        self.assertEqual(a2["result"], "succeeded")
        self.assertEqual([i.get("sub") for i in self.invocations()], ["sync", "sync"])


# ---------------------------------------------------------------- Kong Admin API

class KongAdminTest(RecoverydTestCase):

    def test_healthy_unhealthy_ready_and_auth(self):
        token = "kong-" + secrets.token_hex(12)
        ok = kong_admin.KongAdmin(token=token).start()
        self.addCleanup(ok.stop)
        down = kong_admin.KongAdmin(token=token, dbless=True).start()
        self.addCleanup(down.stop)
        down.set(reachable=False, ready=False, ready_message="no configuration available (empty configuration present)")
        flappy = kong_admin.KongAdmin().start()
        self.addCleanup(flappy.stop)
        flappy.script([{"status_code": 500}, {"reachable": True}])
        fake = self.fake()
        prelude = 'local kong = require "recovery.kong"\nlocal OK, DOWN, FLAPPY = %s, %s, %s' % (
            lua_str(ok.url), lua_str(down.url), lua_str(flappy.url))
        run = '''
local tok = must(recovery.secret("kong-admin-token"))
local a = kong.admin{url = OK, headers = {["Kong-Admin-Token"] = tok}, timeout = 5}
local st = must(a:status())
local h1, r1 = a:healthy()
local y1, ry1 = a:ready()
local b = kong.admin{url = DOWN, headers = {"Kong-Admin-Token:" .. tok}}
local bst = must(b:status())
local h2, r2 = b:healthy()
local y2, ry2 = b:ready(DOWN .. "/")
local w = kong.admin{url = OK, headers = {["Kong-Admin-Token"] = "wrong-token"}}
local h3, r3 = w:healthy()
local s3, e3 = w:status()
local f = kong.admin{url = FLAPPY}
local h4, r4 = f:healthy()
local h5 = f:healthy()
local u = kong.admin{url = "http://127.0.0.1:1", timeout = 2}
local h6, r6 = u:healthy()
local y6, ry6 = u:ready()
''' + report('''{total = st.server.total_requests, hash = bst.configuration_hash,
  h1 = h1, r1 = r1, y1 = y1, ry1 = ry1, h2 = h2, r2 = r2, y2 = y2, ry2 = ry2,
  h3 = h3, r3 = r3, s3 = tostring(s3), e3 = e3, h4 = h4, r4 = r4, h5 = h5,
  h6 = h6, r6 = r6, y6 = y6, ry6 = ry6}''')
        d = self.daemon({"a": playbook("a", run, match=ANY, fake=fake, timeout=15, prelude=prelude)},
                        secrets={"kong-admin-token": token})
        st, _, doc = d.trigger("a", manual())
        self.assertStatus(st, 202, d, doc)
        rec = d.wait_job(doc["jobs"][0]["id"], timeout=20)
        self.assertEqual(rec["state"], "succeeded", rec)
        got = reported(fake)[0]
        self.assertIsInstance(got["total"], int)
        self.assertEqual(len(got["hash"]), 32)
        self.assertEqual((got["h1"], got["y1"], got["ry1"]), (True, True, "ready"), got)
        self.assertEqual((got["h2"], got["r2"]), (False, "kong database unreachable"), got)
        self.assertIs(got["y2"], False)
        self.assertIn("not ready: no configuration available", got["ry2"])
        self.assertIs(got["h3"], False)
        self.assertIn("HTTP 401: Invalid credentials. Token or User credentials required", got["r3"])
        self.assertEqual(got["s3"], "nil")
        self.assertIn("401", got["e3"])
        self.assertIs(got["h4"], False)
        self.assertIn("HTTP 500", got["r4"])
        self.assertIs(got["h5"], True)
        self.assertIs(got["h6"], False)
        self.assertIn("kong /status:", got["r6"])
        self.assertIs(got["y6"], False)
        # every Admin API request to the token-protected fakes carried the token
        for r in ok.requests(path="/status") + down.requests(path="/status"):
            if r.header("Kong-Admin-Token") != "wrong-token":
                self.assertEqual(r.header("Kong-Admin-Token"), token)
        self.assertEqual(len(ok.requests(path="/status")), 4)
        self.assertNotIn(token, json.dumps(rec))


if __name__ == "__main__":
    unittest.main()

"""Journal durability across kill -9, SIGHUP reloads, SIGTERM drain."""

import http.client
import signal
import time
import unittest

from harness import FP_CRITICAL, FP_SINGLE, RecoverydTestCase, fixture_bytes, playbook

SETTINGS = 'alertname="SettingsSyncJobFailure"'
CRITICAL = 'alertname="EventValidationFailureSpike"'
GATEWAY = 'alertname="GatewayLatencyHigh"'


def beacon_run(tag, sleep):
    return '''
must(recovery.http{method = "POST", url = FAKE .. "/%(tag)s/start", json = {job = ctx.job.id, attempt = ctx.job.attempt,
  instance = ctx.alert.labels.instance}})
recovery.sleep(%(sleep)s)
must(recovery.http{method = "POST", url = FAKE .. "/%(tag)s/done", json = {job = ctx.job.id, attempt = ctx.job.attempt,
  instance = ctx.alert.labels.instance}})
''' % {"tag": tag, "sleep": sleep}


CONNECTION_CLOSED = (ConnectionRefusedError, ConnectionResetError, BrokenPipeError,
                     http.client.RemoteDisconnected, http.client.BadStatusLine, TimeoutError)


class CrashTest(RecoverydTestCase):

    def test_kill_9_and_restart_on_the_same_journal(self):
        fake = self.fake()
        d = self.daemon({
            "slow": playbook("slow", beacon_run("slow", 3), match=[SETTINGS], fake=fake, idempotent=False),
            "idem": playbook("idem", beacon_run("idem", 3), match=[CRITICAL], fake=fake, idempotent=True),
            "bulk": playbook("bulk", beacon_run("bulk", 0.5), match=[GATEWAY], fake=fake, idempotent=True),
        })
        slow = d.webhook("firing-single.json")["jobs"][0]
        idem = d.webhook("firing-critical.json")["jobs"][0]
        self.assertEqual((slow["key"], idem["key"]), ("slow/" + FP_SINGLE, "idem/" + FP_CRITICAL))
        fake.wait_count(1, "POST", "/slow/start", timeout=5)
        fake.wait_count(1, "POST", "/idem/start", timeout=5)
        self.assertEqual(d.wait_job(slow["id"], {"running"}, timeout=2)["state"], "running")
        self.assertEqual(d.wait_job(idem["id"], {"running"}, timeout=2)["state"], "running")
        bulk = d.webhook("firing-grouped.json")["jobs"]
        self.assertEqual(len(bulk), 3)
        acked = [slow["id"], idem["id"]] + [j["id"] for j in bulk]

        d.kill(signal.SIGKILL)
        self.assertEqual(d.wait_exit(5), -signal.SIGKILL)
        t_kill = time.time()
        d.restart()

        # every acknowledged job survived
        for job_id in acked:
            d.job(job_id)

        # the non-idempotent job that was running is failed as interrupted, not re-run
        rec = d.wait_job(slow["id"], timeout=10)
        self.assertEqual(rec["state"], "failed", rec)
        self.assertIn("interrupted", "%s %s" % (rec.get("outcome"), rec.get("error")), rec)

        # the idempotent one is resumed and succeeds
        rec = d.wait_job(idem["id"], timeout=15)
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertTrue([r for r in fake.requests("POST", "/idem/start") if r.t > t_kill], fake.requests())
        self.assertEqual(fake.count("POST", "/idem/done"), 1)

        # the grouped ones (queued or running at the kill) all end succeeded
        for j in bulk:
            self.assertEqual(d.wait_job(j["id"], timeout=15)["state"], "succeeded")
        done = sorted({r.json()["instance"] for r in fake.requests("POST", "/bulk/done")})
        self.assertEqual(done, ["gw-1", "gw-2", "gw-3"])

        time.sleep(0.3)
        self.assertEqual(fake.count("POST", "/slow/start"), 1, "interrupted job must not run again")
        self.assertEqual(fake.count("POST", "/slow/done"), 0)

    def test_retry_wait_job_resumes_after_kill(self):
        fake = self.fake()
        run = '''
must(recovery.http{method = "POST", url = FAKE .. "/attempt", json = {job = ctx.job.id, attempt = ctx.job.attempt}})
if ctx.job.attempt == 1 then error("first attempt fails") end
'''
        d = self.daemon({"flaky": playbook("flaky", run, "return true", match=[SETTINGS], fake=fake,
                                           retries=2, backoff={"initial": 2, "factor": 1, "max": 2})})
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        d.wait_job(job_id, {"retry_wait"}, timeout=10)
        d.kill(signal.SIGKILL)
        self.assertEqual(d.wait_exit(5), -signal.SIGKILL)
        d.restart()
        rec = d.wait_job(job_id, timeout=15)
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual([r.json()["attempt"] for r in fake.requests("POST", "/attempt")], [1, 2])
        self.assertEqual([a["result"] for a in rec["attempts"]], ["failed", "succeeded"])
        self.assertIn("first attempt fails", str(rec["attempts"][0].get("error")))


class ReloadTest(RecoverydTestCase):

    def test_sighup_with_broken_playbook_keeps_old_set(self):
        fake = self.fake()
        good = lambda name: playbook(name, 'must(recovery.http{method = "POST", url = FAKE .. "/%s"})' % name,
                                     "return true", match=['alertname="%s"' % name], fake=fake)
        d = self.daemon({"alpha": good("alpha")})
        self.assertEqual(d.playbook_names(), ["alpha"])
        fail0 = d.metric("recoveryd_config_reloads_total", {"result": "failure"})
        ok0 = d.metric("recoveryd_config_reloads_total", {"result": "success"})

        # a new good file and a broken one: nothing of the new set is loaded
        d.write_playbook("gamma", good("gamma"))
        d.write_playbook("broken", 'return {\n  name = "beta",\n  run = function(ctx) recovery.sleep( end,\n}\n')
        d.kill(signal.SIGHUP)
        d.wait_metric("recoveryd_config_reloads_total", {"result": "failure"}, lambda v: v >= fail0 + 1)
        self.assertEqual(d.playbook_names(), ["alpha"])
        self.assertTrue(d.alive())
        d.wait_log(lambda r: r.get("level") == "error" and "broken.lua" in str(r))
        st, _, rec = d.trigger("alpha", {"labels": {"alertname": "alpha"}, "annotations": {}, "reason": "r"},
                               "wait=10")
        self.assertStatus(st, 200, d, rec)
        self.assertEqual(rec["state"], "succeeded")
        self.assertError(d.trigger("gamma", {"labels": {"alertname": "gamma"}, "annotations": {}, "reason": "r"}),
                         404, "unknown_playbook")
        self.assertEqual(d.metric("recoveryd_config_reloads_total", {"result": "success"}), ok0)

        # fixed: the whole new set is loaded
        d.write_playbook("broken", good("beta"))
        d.kill(signal.SIGHUP)
        d.wait_metric("recoveryd_config_reloads_total", {"result": "success"}, lambda v: v >= ok0 + 1)
        self.assertEqual(d.playbook_names(), ["alpha", "beta", "gamma"])
        self.assertEqual(d.metric("recoveryd_config_reloads_total", {"result": "failure"}), fail0 + 1)
        for name in ("beta", "gamma"):
            st, _, rec = d.trigger(name, {"labels": {"alertname": name}, "annotations": {}, "reason": "r"},
                                   "wait=10")
            self.assertStatus(st, 200, d, rec)
            self.assertEqual(rec["state"], "succeeded", rec)
            self.assertEqual(fake.count("POST", "/" + name), 1)


class DrainTest(RecoverydTestCase):

    def test_sigterm_drains_running_job(self):
        fake = self.fake()
        d = self.daemon({"p": playbook("p", beacon_run("p", 1.5), match=[SETTINGS], fake=fake)})
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        fake.wait_count(1, "POST", "/p/start", timeout=5)
        d.kill(signal.SIGTERM)
        t_term = time.monotonic()
        # The signal is taken by the main thread: a request that overtakes
        # it is still served. From the moment /readyz says so, every
        # notification must get 503.
        while d.alive() and time.monotonic() - t_term < 5:
            try:
                if d.get("/readyz", timeout=5)[0] == 503:
                    break
            except CONNECTION_CLOSED:
                break
            time.sleep(0.01)

        answers = []
        body = fixture_bytes("firing-critical.json")
        while d.alive() and time.monotonic() - t_term < 20:
            try:
                st, hdrs, doc = d.post("/webhook", body, timeout=5)
                answers.append(st)
                self.assertEqual(st, 503, "while draining /webhook must answer 503, got %s %r" % (st, doc))
                self.assertEqual(doc.get("error"), "unavailable", doc)
                self.assertTrue(hdrs.get("Retry-After", "").strip().isdigit(), dict(hdrs))
            except CONNECTION_CLOSED:
                answers.append("closed")
            time.sleep(0.05)
        code = d.wait_exit(20 - (time.monotonic() - t_term))
        t_exit = time.time()
        self.assertEqual(code, 0, "exit status after SIGTERM\n" + d.log_tail())
        self.assertTrue(answers, "no request was attempted while draining")

        # the running job was finished before the exit, not abandoned
        done = fake.requests("POST", "/p/done")
        self.assertEqual(len(done), 1, fake.requests())
        self.assertLess(done[0].t, t_exit)

        d.start()
        rec = d.job(job_id)
        self.assertEqual(rec["state"], "succeeded", rec)
        time.sleep(0.3)
        self.assertEqual(fake.count("POST", "/p/start"), 1, "the drained job must not run again")
        self.assertEqual(d.jobs(playbook="p")[0]["id"], job_id)


if __name__ == "__main__":
    unittest.main()

"""Escalation to PagerDuty (Events API v2) and Slack (incoming webhook):
what is sent when a recovery fails, retries through outages and restarts,
resolves, dry-run, success notices, and --check-config of the sinks.

The sinks are the validating fakes in tests/fakes/ (pagerduty_fake.py,
slack_fake.py); retries use small delays (--escalation-retry-initial 0.2,
--escalation-retry-max 1 unless a test says otherwise)."""

import signal
import time
import unittest

from escalation_support import (EscalationTestCase, contains_url, has_word, job_url, strings_of,
                                with_notify)
from harness import FP_SINGLE, fixture, playbook, variant

SETTINGS = 'alertname="SettingsSyncJobFailure"'
ALERT = fixture("firing-single.json")["alerts"][0]
RUNBOOK = ALERT["annotations"]["runbook_url"]
GENERATOR = ALERT["generatorURL"]
INSTANCE = ALERT["labels"]["instance"]          # settings-sync-job-7f9c
ALERTNAME = ALERT["labels"]["alertname"]        # SettingsSyncJobFailure

RUN_RESTART = 'must(recovery.http{method = "POST", url = FAKE .. "/restart", json = {job = ctx.job.id}})'
VERIFY_HEALTH = '''
local resp = must(recovery.http{method = "GET", url = FAKE .. "/health"})
if resp.status == 200 then return true end
return false, "still broken"
'''


def failing(name, retries=1, **kw):
    """A playbook whose every attempt fails verification with "still broken"."""
    kw.setdefault("match", [SETTINGS])
    return playbook(name, "return", 'return false, "still broken"', retries=retries,
                    backoff={"initial": 0.05, "factor": 1, "max": 0.1}, **kw)


def manual(labels, annotations=None, reason="on-call test"):
    return {"labels": labels, "annotations": annotations or {}, "reason": reason}


class EscalationTest(EscalationTestCase):

    # ------------------------------------------------------------ helpers
    def metric(self, d, sink, result):
        return d.metric("recoveryd_escalations_total", {"sink": sink, "result": result})

    def trigger_job(self, d, name, body, query=""):
        st, _, doc = d.trigger(name, body, query)
        self.assertStatus(st, 202, d, doc)
        return doc["jobs"][0]

    def check_pd_trigger(self, req, job_id, playbook_name, reason, n_attempts):
        """The PagerDuty trigger for a failed job of firing-single.json."""
        self.assertIn("application/json", req.header("Content-Type", ""), req)
        self.assertEqual(req.status, 202, req.answer)
        ev = req.event
        self.assertEqual(ev["routing_key"], self.routing_key)
        self.assertEqual(ev["event_action"], "trigger")
        self.assertEqual(ev["dedup_key"], "recoveryd/%s/%s" % (playbook_name, FP_SINGLE))
        p = ev["payload"]
        s = p["summary"]
        self.assertLessEqual(len(s), 1024)
        for word in (ALERTNAME, INSTANCE, playbook_name):
            self.assertIn(word, s, "summary must name %r: %r" % (word, s))
        self.assertIn(reason if reason != "failed" else "fail", s.lower(), "summary must give the outcome: %r" % s)
        self.assertTrue(has_word(s, str(n_attempts)), "summary must give the attempts (%d): %r" % (n_attempts, s))
        self.assertEqual(p["source"], INSTANCE)
        self.assertEqual(p["severity"], "warning")
        self.assertEqual(p.get("component"), "settings-sync-job")
        self.assertIsNone(p.get("group"), "no group/namespace label, so no group: %r" % p)
        self.assertEqual(p.get("class"), ALERTNAME)
        cd = p["custom_details"]
        self.assertEqual(cd["playbook"], playbook_name)
        self.assertEqual(cd["reason"], reason)
        self.assertEqual(cd["job_id"], job_id)
        self.assertEqual(cd["alert_labels"], ALERT["labels"])
        self.assertEqual([a["n"] for a in cd["attempts"]], list(range(1, n_attempts + 1)), cd)
        for a in cd["attempts"]:
            self.assertEqual(a["result"], "failed", a)
            self.assertIn("still broken", str(a.get("error")), a)
        self.assertEqual(cd["last_verify_reason"], "still broken")
        links = {l["href"]: l for l in ev["links"]}
        for href in (RUNBOOK, job_url(job_id), GENERATOR):
            self.assertIn(href, links, ev["links"])
            self.assertIsInstance(links[href].get("text"), str, links[href])
            self.assertTrue(links[href]["text"], links[href])
        self.assertEqual(ev.get("client"), "recoveryd")
        self.assertEqual(ev.get("client_url"), job_url(job_id))

    def check_slack_failure(self, req, job_id, playbook_name, outcome_word="fail"):
        self.assertIn("application/json", req.header("Content-Type", ""), req)
        self.assertEqual(req.status, 200, req.answer_text)
        msg = req.json()
        text = msg["text"]
        for word in (ALERTNAME, INSTANCE, playbook_name):
            self.assertIn(word, text, "fallback text must name %r: %r" % (word, text))
        self.assertIn(outcome_word, text.lower(), text)
        blocks = msg["blocks"]
        self.assertIsInstance(blocks, list)
        self.assertTrue(blocks)
        types = [b["type"] for b in blocks]
        self.assertIn("section", types, blocks)
        self.assertTrue(set(types) <= {"header", "section", "context", "divider", "actions"}, types)
        btext = "\n".join(strings_of(blocks))
        for word in (ALERTNAME, INSTANCE, playbook_name):
            self.assertIn(word, btext, "blocks must name %r" % word)
        self.assertIn(outcome_word, btext.lower())
        for url in (RUNBOOK, job_url(job_id), GENERATOR):
            self.assertTrue(contains_url(btext, url), "blocks must link %s:\n%s" % (url, btext))
        return msg

    # ------------------------------------------------------------ tests
    def test_failed_job_pages_once_and_posts_once(self):
        pd, slack = self.pagerduty(), self.slack()
        d = self.esc_daemon({"settings-sync": failing("settings-sync")}, pd=pd, slack=slack)
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        rec = d.wait_job(job_id)
        self.assertEqual(rec["state"], "failed", rec)

        rows = self.wait_states(d, job_id, {"pagerduty": "delivered", "slack": "delivered"})
        pd.wait_count(1, timeout=5)
        slack.wait_count(1, timeout=5)
        self.assertQuiet([pd, slack], 0.6)
        self.assertEqual(pd.count(), 1, pd.requests())
        self.assertEqual(slack.count(), 1, slack.requests())
        self.assertEqual(pd.incidents_opened, 1)

        self.check_pd_trigger(pd.requests()[0], job_id, "settings-sync", "failed", 2)
        self.check_slack_failure(slack.requests()[0], job_id, "settings-sync")

        for sink, answer in (("pagerduty", "202"), ("slack", "200")):
            row = rows[sink]
            self.assertEscalationRow(row, sink, "trigger", "failed", "delivered")
            self.assertEqual(row["attempts"], 1, row)
            self.assertTrue(str(row["last_answer"]).startswith(answer), row)
        self.assertIn("Event processed", rows["pagerduty"]["last_answer"])
        self.assertEqual(len(self.escalations(d, job_id)), 2)

        text = d.metrics()
        for sink in ("pagerduty", "slack"):
            self.assertEqual(d.metric_value(text, "recoveryd_escalations_total",
                                            {"sink": sink, "result": "delivered"}), 1, sink)
            self.assertIn(d.metric_value(text, "recoveryd_escalations_total",
                                         {"sink": sink, "result": "retried"}), (None, 0.0))
            self.assertEqual(d.metric_value(text, "recoveryd_escalation_delivery_seconds_count",
                                            {"sink": sink}), 1, sink)
        self.assertEqual(d.metric_value(text, "recoveryd_escalation_outbox_depth"), 0)

    def test_wait_answer_shows_the_escalations_of_the_end(self):
        # The person who triggers with ?wait reads the answer: a failed job
        # whose escalation is not in it reads as "nobody was paged".
        pd, slack = self.pagerduty(), self.slack()
        d = self.esc_daemon({"settings-sync": failing("settings-sync", retries=0)}, pd=pd, slack=slack)
        for i in range(5):  # the journaling races the answer: a few tries make a miss likely
            st, _, rec = d.trigger("settings-sync", manual({"alertname": ALERTNAME, "instance": "w%d" % i}),
                                   "wait=30")
            self.assertStatus(st, 200, d, rec)
            self.assertEqual(rec["state"], "failed", rec)
            got = sorted((e.get("sink"), e.get("kind")) for e in rec.get("escalations") or [])
            self.assertEqual(got, [("pagerduty", "trigger"), ("slack", "trigger")],
                             "the ?wait answer of job %s lacks the escalations its end decided: %r"
                             % (rec.get("id"), rec.get("escalations")))

    def test_pagerduty_503_three_times_then_delivered_with_growing_backoff(self):
        pd = self.pagerduty()
        pd.fail(3, 503)
        d = self.esc_daemon({"settings-sync": failing("settings-sync")}, pd=pd, retry=(0.4, 2))
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        pd.wait_count(1, timeout=10)
        row = self.wait_states(d, job_id, {"pagerduty": "retrying"}, timeout=5)["pagerduty"]
        self.assertTrue(str(row["last_answer"]).startswith("503"), row)
        self.assertGreaterEqual(d.metric("recoveryd_escalation_outbox_depth"), 1)

        row = self.wait_states(d, job_id, {"pagerduty": "delivered"}, timeout=15)["pagerduty"]
        self.assertQuiet([pd], 0.5)
        reqs = pd.requests()
        self.assertEqual([r.status for r in reqs], [503, 503, 503, 202], reqs)
        self.assertEqual({r.event["dedup_key"] for r in reqs}, {"recoveryd/settings-sync/" + FP_SINGLE})
        gaps = [b.t - a.t for a, b in zip(reqs, reqs[1:])]
        # d = 0.4, 0.8, 1.6 (x2, under the 2 s cap), jittered in [d/2, d]
        for gap, dly in zip(gaps, (0.4, 0.8, 1.6)):
            self.assertGreaterEqual(gap, dly / 2 - 0.03, gaps)
            self.assertLess(gap, dly + 1.0, gaps)
        self.assertGreater(gaps[2], gaps[0], "backoff must grow: %r" % gaps)
        self.assertEqual(row["attempts"], 4, row)
        self.assertTrue(str(row["last_answer"]).startswith("202"), row)
        self.assertEqual(pd.incidents_opened, 1)
        self.assertEqual(self.metric(d, "pagerduty", "retried"), 3)
        self.assertEqual(self.metric(d, "pagerduty", "delivered"), 1)
        self.assertEqual(self.metric(d, "pagerduty", "failed"), 0)
        self.assertEqual(d.metric("recoveryd_escalation_outbox_depth"), 0)

    def test_slack_429_retry_after_is_honoured(self):
        slack = self.slack()
        slack.rate_limit(1, retry_after=1)
        d = self.esc_daemon({"settings-sync": failing("settings-sync")}, slack=slack)  # Slack only
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        row = self.wait_states(d, job_id, {"slack": "delivered"}, timeout=10)["slack"]
        reqs = slack.requests()
        self.assertEqual([r.status for r in reqs], [429, 200], reqs)
        gap = reqs[1].t - reqs[0].t
        self.assertGreaterEqual(gap, 0.95, "Retry-After: 1 must be honoured (retry-initial is 0.2)")
        self.assertLess(gap, 3.0)
        self.assertEqual(row["attempts"], 2, row)
        self.assertEqual(self.escalations(d, job_id, sink="pagerduty"), [],
                         "PagerDuty is not configured, so the default sinks are Slack only")
        self.assertEqual(self.metric(d, "slack", "retried"), 1)
        self.assertEqual(self.metric(d, "slack", "delivered"), 1)

    def test_pagerduty_429_retry_after_and_slack_500_are_retried(self):
        pd, slack = self.pagerduty(), self.slack()
        pd.rate_limit(1, retry_after=1)
        slack.fail(1, 500)
        d = self.esc_daemon({"settings-sync": failing("settings-sync")}, pd=pd, slack=slack)
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        self.wait_states(d, job_id, {"pagerduty": "delivered", "slack": "delivered"}, timeout=10)
        p, s = pd.requests(), slack.requests()
        self.assertEqual([r.status for r in p], [429, 202], p)
        self.assertEqual([r.status for r in s], [500, 200], s)
        self.assertGreaterEqual(p[1].t - p[0].t, 0.95, p)
        self.assertGreaterEqual(s[1].t - s[0].t, 0.1 - 0.03, s)  # d/2 of the 0.2 s initial delay
        self.assertLess(s[1].t - s[0].t, 1.5, s)
        self.assertEqual(pd.incidents_opened, 1)

    def test_network_error_is_retried_until_pagerduty_is_back(self):
        down = self.pagerduty()
        port, enqueue_url = down.port, down.enqueue_url
        down.stop()                                   # nothing listens there now
        d = self.esc_daemon({"settings-sync": failing("settings-sync")}, pd=enqueue_url)
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        row = self.wait_escalations(
            d, job_id, lambda rows: [e for e in rows if e.get("sink") == "pagerduty" and e.get("attempts", 0) >= 2
                                     and e.get("state") == "retrying"],
            timeout=10, what="two failed connection attempts")[0]
        self.assertTrue(row["last_answer"], row)
        self.assertFalse(str(row["last_answer"])[:3].isdigit(),
                         "a transport error, not an HTTP status: %r" % row["last_answer"])
        up = self.pagerduty(port=port)                # the service is back on the same address
        self.assertEqual(up.enqueue_url, enqueue_url)
        self.wait_states(d, job_id, {"pagerduty": "delivered"}, timeout=10)
        self.assertEqual(up.count(status=202), 1, up.requests())
        self.assertGreaterEqual(self.metric(d, "pagerduty", "retried"), 2)
        self.assertEqual(self.metric(d, "pagerduty", "delivered"), 1)

    def test_pending_deliveries_survive_kill_9(self):
        pd, slack = self.pagerduty(), self.slack()
        pd.outage(503)
        slack.outage(500)
        d = self.esc_daemon({"settings-sync": failing("settings-sync")}, pd=pd, slack=slack, retry=(0.2, 0.5))
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        self.assertEqual(d.wait_job(job_id)["state"], "failed")
        pd.wait_count(2, timeout=10)
        slack.wait_count(2, timeout=10)
        self.wait_states(d, job_id, {"pagerduty": "retrying", "slack": "retrying"}, timeout=5)
        self.assertEqual(d.metric("recoveryd_escalation_outbox_depth"), 2)

        d.kill(signal.SIGKILL)
        self.assertEqual(d.wait_exit(5), -signal.SIGKILL)
        pd.heal()
        slack.heal()
        t_restart = time.time()
        d.restart()

        rows = self.wait_states(d, job_id, {"pagerduty": "delivered", "slack": "delivered"}, timeout=10)
        ok_pd = pd.wait_count(1, status=202, timeout=5)
        ok_slack = slack.wait_count(1, status=200, timeout=5)
        self.assertQuiet([pd, slack], 0.6)
        self.assertEqual(len(pd.requests(status=202)), 1, pd.requests())
        self.assertEqual(len(slack.requests(status=200)), 1, slack.requests())
        self.assertGreater(ok_pd[0].t, t_restart)
        self.assertGreater(ok_slack[0].t, t_restart)
        self.assertEqual({r.event["dedup_key"] for r in pd.requests()}, {"recoveryd/settings-sync/" + FP_SINGLE})
        self.assertEqual(pd.incidents_opened, 1)
        self.check_pd_trigger(ok_pd[0], job_id, "settings-sync", "failed", 2)
        for sink in ("pagerduty", "slack"):
            self.assertGreaterEqual(rows[sink]["attempts"], 2, rows[sink])
        self.assertEqual(len(self.escalations(d, job_id)), 2, "a restart must not duplicate the outbox")
        self.assertEqual(d.metric("recoveryd_escalation_outbox_depth"), 0)

    def test_interrupted_job_escalates(self):
        svc, pd, slack = self.fake(), self.pagerduty(), self.slack()
        run = RUN_RESTART + "\nrecovery.sleep(5)"
        d = self.esc_daemon({"slow": playbook("slow", run, match=[SETTINGS], fake=svc, idempotent=False)},
                            pd=pd, slack=slack)
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        svc.wait_count(1, "POST", "/restart", timeout=5)
        d.wait_job(job_id, {"running"}, timeout=3)
        d.kill(signal.SIGKILL)
        self.assertEqual(d.wait_exit(5), -signal.SIGKILL)
        self.assertEqual(pd.count() + slack.count(), 0)
        d.restart()
        self.assertEqual(d.wait_job(job_id, timeout=10)["state"], "failed")
        rows = self.wait_states(d, job_id, {"pagerduty": "delivered", "slack": "delivered"})
        for sink in ("pagerduty", "slack"):
            self.assertEscalationRow(rows[sink], sink, "trigger", "interrupted", "delivered")
        ev = pd.events("trigger")[0]
        self.assertEqual(ev["dedup_key"], "recoveryd/slow/" + FP_SINGLE)
        self.assertEqual(ev["payload"]["custom_details"]["reason"], "interrupted")
        self.assertIn("interrupt", ev["payload"]["summary"].lower())
        msg = slack.messages()[0]
        self.assertIn("interrupt", (msg["text"] + "\n".join(strings_of(msg.get("blocks")))).lower())

    def test_resolved_alert_sends_resolve_with_same_dedup_key(self):
        pd, slack = self.pagerduty(), self.slack()
        d = self.esc_daemon({"settings-sync": failing("settings-sync")}, pd=pd, slack=slack)
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        self.wait_states(d, job_id, {"pagerduty": "delivered", "slack": "delivered"})
        trig = pd.events("trigger")[0]
        self.assertTrue(pd.incident(trig["dedup_key"]).open)

        d.webhook("resolved.json")
        rows = self.wait_states(d, job_id, {"pagerduty": "delivered", "slack": "delivered"}, kind="resolve")
        for sink in ("pagerduty", "slack"):
            self.assertEscalationRow(rows[sink], sink, "resolve", state="delivered")
        res = pd.wait_count(1, action="resolve", timeout=5)[0]
        self.assertEqual(res.status, 202, res.answer)
        self.assertFalse(res.dropped, "the resolve must reach the open incident")
        self.assertEqual(res.event["routing_key"], self.routing_key)
        self.assertEqual(res.event["dedup_key"], trig["dedup_key"])
        self.assertEqual(res.event["dedup_key"], "recoveryd/settings-sync/" + FP_SINGLE)
        self.assertFalse(pd.incident(trig["dedup_key"]).open)
        self.assertEqual(pd.incidents_opened, 1)

        msgs = slack.wait_count(2, status=200, timeout=5)
        follow = msgs[1].json()
        ftext = follow["text"] + "\n" + "\n".join(strings_of(follow.get("blocks")))
        self.assertIn(ALERTNAME, ftext)
        self.assertIn("resolv", ftext.lower())
        self.assertQuiet([pd, slack], 0.5)
        self.assertEqual((pd.count(), slack.count()), (2, 2))
        self.assertEqual(self.metric(d, "pagerduty", "delivered"), 2)
        self.assertEqual(self.metric(d, "slack", "delivered"), 2)

    def test_resolve_while_the_trigger_is_still_pending_leaves_no_open_incident(self):
        # PagerDuty drops a resolve for a key it has no open incident for, so a
        # resolve that overtakes its trigger in the outbox would leave on-call
        # with an incident nobody closes.
        pd = self.pagerduty()
        pd.outage(503)
        d = self.esc_daemon({"settings-sync": failing("settings-sync")}, pd=pd, retry=(0.2, 2))
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        pd.wait_count(3, action="trigger", timeout=10)   # its next try is >= 0.4 s away
        pd.heal()
        d.webhook("resolved.json")                       # the alert resolves meanwhile
        d.wait_metric("recoveryd_escalation_outbox_depth", None, lambda v: v == 0, timeout=15)
        time.sleep(0.3)
        self.assertEqual(pd.open_incidents(), [], "an incident stays open: %r" % pd.requests())
        triggers = pd.requests(action="trigger", status=202)
        resolves = pd.requests(action="resolve", status=202)
        if triggers:
            self.assertTrue([r for r in resolves if r.t > triggers[0].t and not r.dropped], pd.requests())
        self.assertEqual(self.escalations(d, job_id, kind="trigger")[0]["sink"], "pagerduty")

    def test_slack_text_escapes_label_values(self):
        # Label values come from whoever exports the metric: "<!channel>" must
        # not ping the channel and "<url|text>" must not become a link.
        pd, slack = self.pagerduty(), self.slack()
        d = self.esc_daemon({"settings-sync": failing("settings-sync")}, pd=pd, slack=slack)
        hostile = "<!channel> & <https://evil.example.invalid|click me>"
        self.trigger_job(d, "settings-sync", manual({"alertname": ALERTNAME, "instance": hostile}))
        msg = slack.wait_count(1, timeout=10)[0].json()
        for where, text in [("text", msg["text"])] + [("blocks", t) for t in strings_of(msg.get("blocks"))]:
            self.assertNotIn("<!channel>", text, where)
            self.assertNotIn("<https://evil.example.invalid|", text, where)
        everything = msg["text"] + "\n".join(strings_of(msg.get("blocks")))
        self.assertIn("channel", everything, "the value is shown, escaped, not dropped")
        self.assertIn("evil.example.invalid", everything)
        ev = pd.wait_count(1, timeout=5)[0].event
        self.assertIn(hostile, ev["payload"]["summary"], "PagerDuty summaries are plain text")
        self.assertEqual(ev["payload"]["source"], hostile)

    def test_open_incident_is_resolved_after_a_restart(self):
        pd, slack = self.pagerduty(), self.slack()
        d = self.esc_daemon({"settings-sync": failing("settings-sync")}, pd=pd, slack=slack)
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        self.wait_states(d, job_id, {"pagerduty": "delivered", "slack": "delivered"})
        d.kill(signal.SIGKILL)
        self.assertEqual(d.wait_exit(5), -signal.SIGKILL)
        d.restart()
        self.assertQuiet([pd, slack], 0.5, counts=[1, 1])   # nothing re-sent after the restart
        d.webhook("resolved.json")
        self.wait_states(d, job_id, {"pagerduty": "delivered", "slack": "delivered"}, kind="resolve")
        res = pd.wait_count(1, action="resolve", status=202, timeout=5)[0]
        self.assertEqual(res.event["dedup_key"], "recoveryd/settings-sync/" + FP_SINGLE)
        self.assertEqual(pd.open_incidents(), [])

    def test_repeated_resolved_notifications_send_one_resolve(self):
        # Alertmanager repeats resolved notifications (HA peers, group_interval).
        pd, slack = self.pagerduty(), self.slack()
        d = self.esc_daemon({"settings-sync": failing("settings-sync")}, pd=pd, slack=slack)
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        self.wait_states(d, job_id, {"pagerduty": "delivered", "slack": "delivered"})
        d.webhook("resolved.json")
        self.wait_states(d, job_id, {"pagerduty": "delivered", "slack": "delivered"}, kind="resolve")
        d.webhook("resolved.json")
        self.assertQuiet([pd, slack], 1.0)
        self.assertEqual(pd.count(action="resolve"), 1, pd.requests())
        self.assertEqual(slack.count(), 2, slack.requests())

    def test_later_successful_job_for_the_same_key_resolves(self):
        svc, pd, slack = self.fake(), self.pagerduty(), self.slack()
        svc.set_responses("GET", "/health", [(503, {}, "down")])
        d = self.esc_daemon({"settings-sync": playbook("settings-sync", RUN_RESTART, VERIFY_HEALTH,
                                                       match=[SETTINGS], fake=svc, retries=0, cooldown=0.5)},
                            pd=pd, slack=slack)
        labels = {"alertname": ALERTNAME, "instance": INSTANCE, "severity": "critical"}
        body = manual(labels, {"runbook_url": RUNBOOK})

        j1 = self.trigger_job(d, "settings-sync", body)
        self.assertEqual(d.wait_job(j1["id"])["state"], "failed")
        self.wait_states(d, j1["id"], {"pagerduty": "delivered", "slack": "delivered"})
        dedup = "recoveryd/" + j1["key"]
        ev = pd.events("trigger")[0]
        self.assertEqual(ev["dedup_key"], dedup)
        self.assertEqual(ev["payload"]["severity"], "critical")
        self.assertIn(RUNBOOK, [l["href"] for l in ev["links"]])

        # a second failed job for the key: triggered again, still one incident
        time.sleep(0.7)
        j2 = self.trigger_job(d, "settings-sync", body)
        self.assertEqual(j2["key"], j1["key"])
        self.assertNotEqual(j2["id"], j1["id"], j2)
        self.assertEqual(d.wait_job(j2["id"])["state"], "failed")
        self.wait_states(d, j2["id"], {"pagerduty": "delivered"})
        self.assertEqual([e["dedup_key"] for e in pd.events("trigger")], [dedup, dedup])
        self.assertEqual(pd.incidents_opened, 1)

        # the service heals: the next job succeeds and resolves the incident
        svc.set_responses("GET", "/health", [(200, {}, "up")])
        time.sleep(0.7)
        j3 = self.trigger_job(d, "settings-sync", body)
        self.assertEqual(d.wait_job(j3["id"])["state"], "succeeded")
        res = pd.wait_count(1, action="resolve", timeout=10)[0]
        self.assertEqual(res.event["dedup_key"], dedup)
        self.assertEqual(res.status, 202)
        self.assertFalse(pd.incident(dedup).open)
        slack.wait_count(3, status=200, timeout=10)   # two failures, one follow-up
        self.assertQuiet([pd, slack], 0.6)
        self.assertEqual(pd.count(action="resolve"), 1)
        self.assertEqual(slack.count(), 3)
        self.assertIn("resolv", slack.messages()[2]["text"].lower())

        resolves = {}
        for j in (j1, j2, j3):
            for e in self.escalations(d, j["id"], kind="resolve"):
                resolves.setdefault(e["sink"], []).append((j["id"], e))
        self.assertEqual(sorted(resolves), ["pagerduty", "slack"], resolves)
        for sink, found in resolves.items():
            self.assertEqual(len(found), 1, found)
            where, row = found[0]
            self.assertIn(where, (j1["id"], j2["id"]), "a resolve is listed on the escalated job")
            self.assertEqual(row["state"], "delivered", row)
        self.assertEqual(self.escalations(d, j3["id"], kind="trigger"), [])
        self.assertEqual(self.escalations(d, j3["id"], kind="notice"), [])

    def test_never_escalated_key_sends_no_resolve(self):
        pd, slack = self.pagerduty(), self.slack()
        verify = 'if ctx.alert.labels.instance == "%s" then return true end\nreturn false, "still broken"' % INSTANCE
        d = self.esc_daemon({"p": playbook("p", "return", verify, match=[SETTINGS])}, pd=pd, slack=slack)
        other = variant("firing-single.json", instance="settings-sync-job-other")
        bad = d.webhook(other)["jobs"][0]                       # fails, escalated
        good = d.webhook("firing-single.json")["jobs"][0]       # succeeds
        self.assertEqual(d.wait_job(bad["id"])["state"], "failed")
        self.assertEqual(d.wait_job(good["id"])["state"], "succeeded")
        self.wait_states(d, bad["id"], {"pagerduty": "delivered", "slack": "delivered"})
        self.assertEqual(self.escalations(d, good["id"]), [])

        d.webhook("resolved.json")                                          # the succeeded key
        d.webhook(variant("resolved.json", instance="settings-sync-job-ghost"))  # a key without a job
        self.assertQuiet([pd, slack], 1.2, counts=[1, 1])
        self.assertEqual(pd.count(action="resolve"), 0)
        self.assertEqual(self.escalations(d, good["id"]), [])
        self.assertEqual(self.escalations(d, bad["id"], kind="resolve"), [])
        self.assertTrue(pd.incident("recoveryd/p/" + other["alerts"][0]["fingerprint"]).open)

    def test_wrong_routing_key_and_revoked_slack_url_fail_permanently(self):
        pd, slack = self.pagerduty(), self.slack()
        d = self.esc_daemon({"settings-sync": failing("settings-sync")}, pd=pd, slack=slack,
                            routing_key="0123456789abcdef",             # 16 characters
                            slack_url=slack.url + "/services/T000/B000/revoked")
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        rows = self.wait_states(d, job_id, {"pagerduty": "failed", "slack": "failed"}, timeout=10)
        self.assertQuiet([pd, slack], 1.2, counts=[1, 1])   # 4xx: no retries (retry-initial is 0.2)
        self.assertEqual(pd.requests()[0].status, 400)
        self.assertEqual(slack.requests()[0].status, 404)

        pdrow, slrow = rows["pagerduty"], rows["slack"]
        self.assertEscalationRow(pdrow, "pagerduty", "trigger", "failed", "failed")
        self.assertEqual(pdrow["attempts"], 1, pdrow)
        self.assertTrue(str(pdrow["last_answer"]).startswith("400"), pdrow)
        self.assertIn("Length of 'routing_key' is incorrect (should be 32 characters)", pdrow["last_answer"])
        self.assertEscalationRow(slrow, "slack", "trigger", "failed", "failed")
        self.assertEqual(slrow["attempts"], 1, slrow)
        self.assertTrue(str(slrow["last_answer"]).startswith("404"), slrow)
        self.assertIn("no_team", slrow["last_answer"])

        for sink in ("pagerduty", "slack"):
            self.assertEqual(self.metric(d, sink, "failed"), 1, sink)
            self.assertEqual(self.metric(d, sink, "retried"), 0, sink)
            self.assertEqual(self.metric(d, sink, "delivered"), 0, sink)

    def test_budget_exhausted_escalates(self):
        pd, slack = self.pagerduty(), self.slack()
        d = self.esc_daemon({"p": playbook("p", "return", "return true", match=[SETTINGS],
                                           budget={"runs": 1, "per": 60})}, pd=pd, slack=slack)
        first = d.webhook("firing-single.json")["jobs"][0]
        self.assertEqual(first["state"], "queued")
        other = variant("firing-single.json", instance="settings-sync-job-other", severity="page")
        second = d.webhook(other)["jobs"][0]
        self.assertEqual(second["state"], "budget_exhausted")
        self.assertEqual(d.wait_job(first["id"])["state"], "succeeded")

        rows = self.wait_states(d, second["id"], {"pagerduty": "delivered", "slack": "delivered"})
        for sink in ("pagerduty", "slack"):
            self.assertEscalationRow(rows[sink], sink, "trigger", "budget_exhausted", "delivered")
        self.assertEqual(self.escalations(d, first["id"]), [])
        ev = pd.events("trigger")[0]
        p = ev["payload"]
        self.assertEqual(ev["dedup_key"], "recoveryd/p/" + other["alerts"][0]["fingerprint"])
        self.assertEqual(p["custom_details"]["reason"], "budget_exhausted")
        self.assertEqual(p["custom_details"]["attempts"], [])
        self.assertEqual(p["source"], "settings-sync-job-other")
        self.assertEqual(p["severity"], "error", "an unknown severity label maps to error")
        self.assertIn("budget", p["summary"].lower())
        self.assertIn("settings-sync-job-other", p["summary"])
        self.assertIn("budget", slack.messages()[0]["text"].lower())
        self.assertQuiet([pd, slack], 0.4, counts=[1, 1])

    def test_dry_run_escalations_are_planned_and_never_sent(self):
        for mode in ("flag", "query"):
            with self.subTest(mode=mode):
                pd, slack = self.pagerduty(), self.slack()
                extra = ["--dry-run"] if mode == "flag" else []
                d = self.esc_daemon({"settings-sync": failing("settings-sync")}, pd=pd, slack=slack,
                                    extra_args=extra, subdir=mode)
                if mode == "flag":
                    job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
                else:
                    job_id = self.trigger_job(d, "settings-sync", manual({"alertname": ALERTNAME,
                                                                         "instance": INSTANCE}),
                                              "dry_run=1")["id"]
                rec = d.wait_job(job_id)
                self.assertIs(rec["dry_run"], True)
                self.assertEqual(rec["state"], "failed", rec)
                rows = self.wait_states(d, job_id, {"pagerduty": "planned", "slack": "planned"})
                for sink in ("pagerduty", "slack"):
                    self.assertEscalationRow(rows[sink], sink, "trigger", "failed", "planned")
                if mode == "flag":
                    d.webhook("resolved.json")
                self.assertQuiet([pd, slack], 1.0, counts=[0, 0])
                text = d.metrics()
                for sink in ("pagerduty", "slack"):
                    self.assertEqual(d.metric_value(text, "recoveryd_escalations_total",
                                                    {"sink": sink, "result": "planned"}), 1, sink)
                    self.assertIn(d.metric_value(text, "recoveryd_escalations_total",
                                                 {"sink": sink, "result": "delivered"}), (None, 0.0))
                self.assertEqual(d.metric_value(text, "recoveryd_escalation_outbox_depth"), 0)
                self.assertEqual(self.escalations(d, job_id, kind="resolve"), [])

    def test_success_notice_only_when_asked(self):
        pd, slack = self.pagerduty(), self.slack()
        noisy = with_notify(playbook("noisy", "return", "return true", match=[SETTINGS]),
                            {"on_success": ["slack"]})
        quiet = playbook("quiet", "return", "return true", match=['alertname="Other"'])
        d = self.esc_daemon({"noisy": noisy, "quiet": quiet}, pd=pd, slack=slack)
        j1 = self.trigger_job(d, "noisy", manual({"alertname": ALERTNAME, "instance": "notice-1"}))
        j2 = self.trigger_job(d, "quiet", manual({"alertname": "Other", "instance": "notice-2"}))
        self.assertEqual(d.wait_job(j1["id"])["state"], "succeeded")
        self.assertEqual(d.wait_job(j2["id"])["state"], "succeeded")
        row = self.wait_states(d, j1["id"], {"slack": "delivered"}, kind="notice")["slack"]
        self.assertEscalationRow(row, "slack", "notice", state="delivered")
        self.assertEqual(self.escalations(d, j1["id"], sink="pagerduty"), [])
        self.assertEqual(self.escalations(d, j2["id"]), [])
        self.assertQuiet([pd, slack], 0.6, counts=[0, 1])
        msg = slack.messages()[0]
        text = msg["text"] + "\n" + "\n".join(strings_of(msg.get("blocks")))
        for word in (ALERTNAME, "notice-1", "noisy"):
            self.assertIn(word, text)
        self.assertRegex(text.lower(), r"succe|recover")
        self.assertNotIn("notice-2", text)

    def test_escalate_lists_and_default_sinks(self):
        pd, slack = self.pagerduty(), self.slack()
        d = self.esc_daemon({"silent": failing("silent", escalate={}),
                             "chat": failing("chat", escalate=["slack"]),
                             "dflt": failing("dflt")},
                            pd=pd, slack=slack, escalate_default=["pagerduty"])
        js = self.trigger_job(d, "silent", manual({"alertname": "Silent", "instance": "s-1"}))
        jc = self.trigger_job(d, "chat", manual({"alertname": "Chat", "instance": "c-1"}))
        jd = self.trigger_job(d, "dflt", manual({"alertname": "OnlyJob", "job": "batch-runner",
                                                 "namespace": "payments"}))
        for j in (js, jc, jd):
            self.assertEqual(d.wait_job(j["id"])["state"], "failed")
        self.wait_states(d, jc["id"], {"slack": "delivered"})
        self.wait_states(d, jd["id"], {"pagerduty": "delivered"})
        self.assertQuiet([pd, slack], 0.8, counts=[1, 1])
        self.assertEqual(self.escalations(d, js["id"]), [], "escalate = {} never escalates")
        self.assertEqual(self.escalations(d, jc["id"], sink="pagerduty"), [])
        self.assertEqual(self.escalations(d, jd["id"], sink="slack"), [], "--escalate-default pagerduty")
        self.assertIn("Chat", slack.messages()[0]["text"])

        # target, source, group and class fall back as documented
        ev = pd.events("trigger")[0]
        p = ev["payload"]
        self.assertEqual(ev["dedup_key"], "recoveryd/" + jd["key"])
        self.assertEqual(p["source"], "batch-runner", "no instance label: source is the job label")
        self.assertIn("batch-runner", p["summary"])
        self.assertIn("OnlyJob", p["summary"])
        self.assertEqual(p["severity"], "error", "no severity label maps to error")
        self.assertEqual(p.get("group"), "payments")
        self.assertEqual(p.get("class"), "OnlyJob")
        self.assertIsNone(p.get("component"))
        hrefs = [l["href"] for l in ev.get("links", [])]
        self.assertIn(job_url(jd["id"]), hrefs)

    def test_unconfigured_sink_is_recorded_as_not_configured(self):
        # Start-up only warns (--check-config is the gate); the escalation
        # to the missing sink is recorded, failed, and counted.
        slack = self.slack()
        d = self.esc_daemon({"settings-sync": failing("settings-sync", escalate=["slack", "pagerduty"])},
                            slack=slack)
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        rows = self.wait_states(d, job_id, {"slack": "delivered", "pagerduty": "failed"})
        self.assertIn("not configured", str(rows["pagerduty"]["last_answer"]), rows["pagerduty"])
        self.assertEqual(self.metric(d, "pagerduty", "not_configured"), 1)
        self.assertEqual(self.metric(d, "slack", "delivered"), 1)
        self.assertEqual(slack.count(), 1)

    def test_check_config_reports_unconfigured_sink(self):
        cases = [
            # (name, playbook, configured sinks, --escalate-default, exit 0?, words in the message)
            ("pd-missing", failing("kong-restart", escalate=["pagerduty"]), (), (), False,
             ("pagerduty", "kong-restart")),
            ("pd-present", failing("kong-restart", escalate=["pagerduty"]), ("pagerduty",), (), True, ()),
            ("slack-missing", failing("kong-restart", escalate=["slack"]), ("pagerduty",), (), False,
             ("slack", "kong-restart")),
            ("none-wanted", failing("kong-restart", escalate={}), (), (), True, ()),
        ]
        for name, src, sinks, default, ok, words in cases:
            with self.subTest(case=name):
                self.check_config_case(name, src, sinks, default, ok, words)

    def test_check_config_reports_unconfigured_default_sink(self):
        # A playbook without `escalate` uses the --escalate-default sinks, so
        # a default sink that is not configured is the same mistake.
        self.check_config_case("default-missing", failing("kong-restart"), ("pagerduty",), ("slack",), False,
                               ("slack",))

    def check_config_case(self, name, src, sinks, default, ok, words):
        d = self.daemon({"kong-restart": src}, start=False, subdir=name)
        args = self.escalation_args(
            d.tmpdir, routing_key=self.routing_key if "pagerduty" in sinks else None,
            slack_url="http://127.0.0.1:9/services/T000/B000/X" if "slack" in sinks else None,
            escalate_default=default)
        p = d.run_cli(d.base_args(listen=False) + args + ["--check-config"], timeout=30)
        out = p.stdout + p.stderr
        if ok:
            self.assertEqual(p.returncode, 0, out)
        else:
            self.assertNotEqual(p.returncode, 0, out)
            for w in words:
                self.assertIn(w, out)


if __name__ == "__main__":
    unittest.main()

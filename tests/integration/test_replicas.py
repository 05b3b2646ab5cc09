"""Shared mode: several replicas on ONE PostgreSQL journal, with leases,
takeover and fencing.

Every replica takes webhooks; admission (coalescing, cooldown, run budget)
is decided in the journal, so it holds across replicas. A job is held by one
replica (its lease, renewed every lease/3); when the holder dies or loses the
database, another replica takes the job over once the lease expired: an
idempotent playbook runs again (the cut attempt is `interrupted`), a
non-idempotent one ends `failed` with outcome `interrupted` and is escalated
once. A replica that lost its lease aborts its attempt, and its late writes
are refused (fenced by the lease token).

Runs only against PostgreSQL, as pg.integration.test_replicas (RUN_SERIAL:
the fencing test changes a role of the shared cluster and terminates
backends). RECOVERYD_CHAOS_SECONDS (default 45) sets how long the chaos test
kills replicas, RECOVERYD_CHAOS_SEED its random choices."""

import collections
import concurrent.futures
import http.client
import json
import os
import random
import re
import secrets
import signal
import sys
import threading
import time
import unittest

from harness import (TERMINAL_STATES, lua_value, fingerprint, pg_mode, pg_superuser, pg_superuser_available,
                     pg_url_parts, pg_url_with_user, playbook)
from escalation_support import EscalationTestCase

LEASE = 3            # --lease-timeout (seconds); renewed every LEASE/3
POLL = 0.5           # --poll-interval (seconds)
TAKEOVER_BOUND = LEASE + POLL + 1.0   # kill -> takeover event and a new attempt
REPLICA_ARGS = ["--lease-timeout", str(LEASE), "--poll-interval", str(POLL),
                "--env-allow", "RECOVERYD_REPLICA_ID"]
NOT_LIMITED = {"runs": 0, "per": 60}  # budget: unlimited
JOB_ID = re.compile(r"^[0-9a-f]{32}$")


# ---------------------------------------------------------------- helpers

def notification(alertname, n, **labels):
    """A firing v4 notification of one alert, distinct per (alertname, n)."""
    lbl = {"alertname": alertname, "n": str(n)}
    lbl.update({k: str(v) for k, v in labels.items()})
    return {"receiver": "recoveryd", "status": "firing", "version": "4", "groupKey": "{}:{}",
            "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": dict(lbl), "commonAnnotations": {},
            "externalURL": "http://am", "alerts": [{
                "status": "firing", "labels": lbl, "annotations": {},
                "startsAt": "2026-12-02T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "", "fingerprint": fingerprint(lbl)}]}


def record_run(path):
    """Lua: POST {job, attempt, replica} to the recording fake at path (the
    replica's id comes from its environment, see harness.replicas)."""
    return ('local r = must(recovery.http{method = "POST", url = FAKE .. "%s", json = {job = ctx.job.id, '
            'attempt = ctx.job.attempt, replica = recovery.env("RECOVERYD_REPLICA_ID")}})\n'
            'if r.status ~= 200 then error("the fake answered " .. r.status) end\n' % path)


def runs_by_job(fake, path):
    """{job id: [posted documents]} of the POSTs record_run(path) made."""
    out = collections.defaultdict(list)
    for r in fake.requests("POST", path):
        try:
            doc = r.json()
        except ValueError:
            continue
        out[doc.get("job")].append(doc)
    return out


def tails(daemons, n=40):
    return "\n".join("[replica %s, %s]\n%s" % (d.replica_id, "alive" if d.alive() else "dead", d.log_tail(n))
                     for d in daemons)


def short(rec, limit=3000):
    return json.dumps(rec, indent=1)[:limit]


def events(rec, type_):
    return [e for e in rec.get("events") or [] if e.get("type") == type_]


def takeover_of(ev):
    """(from, by) of a takeover event: its detail may be merged into the
    event (as admission events are) or kept under "detail"."""
    det = ev.get("detail") if isinstance(ev.get("detail"), dict) else {}
    return ev.get("from", det.get("from")), ev.get("by", det.get("by"))


def results(rec):
    return [a.get("result") for a in rec.get("attempts") or []]


def started_since(rec, ts):
    """Attempts of the record that started at or after ts (journal times
    are RFC 3339 UTC with milliseconds: they compare as strings)."""
    return [a for a in rec.get("attempts") or [] if (a.get("started_at") or "") >= ts]


def has_family(metrics_text, name):
    """The metric family is exposed (its TYPE line or a sample)."""
    return re.search(r"^(# TYPE %s |%s(\{| ))" % (re.escape(name), re.escape(name)), metrics_text, re.M) is not None


def wait_released(d, jid, timeout=10.0):
    """An ended job keeps its lease until what its end causes (escalation)
    is journaled with its release, a moment after the end: wait for that."""
    def released():
        rec = d.job(jid)
        return rec if "owner" in rec and rec["owner"] is None else None
    return wait_until(released, timeout, "job %s released by its replica" % jid, lambda: short(d.job(jid)))


def wait_until(fn, timeout, what, context=lambda: "", interval=0.1):
    """Poll fn() until it returns something truthy; return it. On timeout
    fail with what, fn's last value and context()."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError("%s: not within %.1fs (last: %r)\n%s" % (what, timeout, last, context()))
        time.sleep(interval)


@unittest.skipUnless(pg_mode(), "shared mode needs PostgreSQL (RECOVERYD_TEST_PG_URL)")
class ReplicaTestCase(EscalationTestCase):

    def start_replicas(self, n, playbooks, escalation=None, extra=()):
        """n replicas on one new database, fast leases; escalation: (pd, slack) fakes."""
        args = list(REPLICA_ARGS) + list(extra)
        if escalation is not None:
            pd, slack = escalation
            args += self.escalation_args(self.tmpdir, pd=pd, slack=slack)
        return self.replicas(n, playbooks, extra_args=args)

    def post(self, d, body, reps):
        """POST /webhook to d; insist on 202 and one job; return that job's answer."""
        st, _, doc = d.post("/webhook", body, timeout=20)
        if st != 202 or not isinstance(doc, dict) or len(doc.get("jobs") or []) != 1:
            self.fail("POST /webhook to %s -> %s %r (want 202 with one job)\n%s"
                      % (d.replica_id, st, doc, tails(reps)))
        return doc["jobs"][0]

    def wait_running_on(self, d, job_id, owner, reps, timeout=10.0):
        """Wait until the job runs with owner holding its lease; return the record."""
        def running():
            rec = d.job(job_id)
            if rec.get("state") in TERMINAL_STATES:
                self.fail("job %s ended before it was seen running:\n%s\n%s" % (job_id, short(rec), tails(reps)))
            if rec.get("state") == "running" and "owner" not in rec:
                self.fail("the record of running job %s has no \"owner\":\n%s" % (job_id, short(rec)))
            return rec if rec.get("state") == "running" and rec.get("owner") is not None else None
        rec = wait_until(running, timeout, "job %s running with an owner" % job_id,
                         lambda: short(d.job(job_id)) + "\n" + tails(reps))
        self.assertEqual(rec["owner"], owner,
                         "job %s was admitted by %s, which has free slots, so it must hold it:\n%s"
                         % (job_id, owner, short(rec)))
        return rec

    def wait_takeover(self, d, job_id, victim, t_kill, reps, new_attempt=True):
        """Wait for the takeover of job_id after victim was killed at t_kill:
        a takeover event from victim (and, for new_attempt, an attempt
        started after it). Returns (record, taker id, seconds after the kill)."""
        def taken():
            rec = d.job(job_id)
            evs = events(rec, "takeover")
            if not evs:
                return None
            if new_attempt and not started_since(rec, evs[0].get("ts") or "~"):
                return None
            return rec
        rec = wait_until(taken, TAKEOVER_BOUND + 10, "takeover of job %s from %s" % (job_id, victim.replica_id),
                         lambda: short(d.job(job_id)) + "\n" + tails(reps), interval=0.05)
        took = time.monotonic() - t_kill
        evs = events(rec, "takeover")
        self.assertEqual(len(evs), 1, "one takeover expected: %s" % short(rec))
        frm, by = takeover_of(evs[0])
        self.assertEqual(frm, victim.replica_id, "takeover event: %r" % evs[0])
        survivors = {r.replica_id for r in reps if r is not victim}
        self.assertIn(by, survivors, "takeover event by a live replica: %r" % evs[0])
        self.assertLessEqual(took, TAKEOVER_BOUND,
                             "job %s taken over %.2fs after the kill; want <= lease %ss + poll %ss + 1s\n%s"
                             % (job_id, took, LEASE, POLL, short(rec)))
        return rec, by, took

    def assertRanAgainAfterTakeover(self, rec, taker):
        """The record of an idempotent job taken over and run to success:
        the cut attempt is recorded interrupted and exactly one attempt,
        started after the takeover, succeeded. The cut attempt has a row of
        its own (["interrupted", "succeeded"]) or, as after a restart of a
        single replica (see test_approval: an interrupted attempt does not
        count, its row is reused), its row was taken by the new attempt
        (["succeeded"]); then its actions still show that it ran."""
        ctx = short(rec, 6000)
        evs = events(rec, "takeover")
        self.assertEqual(len(evs), 1, ctx)
        self.assertEqual(takeover_of(evs[0])[1], taker, ctx)
        res = results(rec)
        self.assertIn(res, (["interrupted", "succeeded"], ["succeeded"]),
                      "the cut attempt interrupted, then exactly one succeeded:\n" + ctx)
        after = started_since(rec, evs[0]["ts"])
        self.assertEqual([a.get("result") for a in after], ["succeeded"],
                         "exactly one attempt started after the takeover, and it succeeded:\n" + ctx)
        if res == ["succeeded"]:
            before = [a for a in rec.get("actions") or [] if (a.get("ts") or "") < evs[0]["ts"]]
            self.assertTrue(before, "no trace of the attempt that was cut (row reused):\n" + ctx)

    def replica(self, reps, rid):
        return next(r for r in reps if r.replica_id == rid)

    def assertMetricsExposed(self, d):
        text = d.metrics()
        self.assertIsNotNone(d.metric_value(text, "recoveryd_leases_held"),
                             "%s: no recoveryd_leases_held sample in /metrics" % d.replica_id)
        for name in ("recoveryd_takeovers_total", "recoveryd_store_errors_total"):
            self.assertTrue(has_family(text, name), "%s: no %s in /metrics" % (d.replica_id, name))
        return text


# ---------------------------------------------------------------- 1. load

class LoadTest(ReplicaTestCase):

    N = 60

    def test_load_through_three_replicas_runs_every_job_once(self):
        fake = self.fake()
        reps = self.start_replicas(3, {"load": playbook("load", record_run("/ran") + "recovery.sleep(0.1)",
                                               match=['alertname="Load"'], fake=fake, retries=0, timeout=30,
                                               cooldown=0, budget=NOT_LIMITED, idempotent=True)})

        def post(n):
            d = reps[n % 3]
            try:
                st, _, doc = d.post("/webhook", notification("Load", n), timeout=30)
            except (OSError, http.client.HTTPException) as e:
                return n, d, None, repr(e)
            return n, d, st, doc

        with concurrent.futures.ThreadPoolExecutor(6) as ex:
            answers = list(ex.map(post, range(self.N)))

        acked = {}
        for n, d, st, doc in answers:
            if st != 202 or not isinstance(doc, dict) or len(doc.get("jobs") or []) != 1:
                self.fail("alert %d to %s -> %s %r (want 202 with one job)\n%s"
                          % (n, d.replica_id, st, doc, tails(reps)))
            j = doc["jobs"][0]
            self.assertEqual(j["state"], "queued", "alert %d to %s: %r" % (n, d.replica_id, doc))
            self.assertRegex(j["id"], JOB_ID)
            self.assertNotIn(j["id"], acked, "job id %s answered for alerts %s and %s"
                             % (j["id"], acked.get(j["id"]), n))
            acked[j["id"]] = n
        self.assertEqual(len(acked), self.N)

        # Every job ends succeeded, read through a replica other than its admitter.
        deadline = time.monotonic() + 60
        for jid, n in acked.items():
            d = reps[(n + 1) % 3]
            rec = d.wait_job(jid, timeout=max(1.0, deadline - time.monotonic()), interval=0.1)
            self.assertEqual(rec["state"], "succeeded", "job %s (alert %d):\n%s" % (jid, n, short(rec)))
            self.assertEqual(results(rec), ["succeeded"],
                             "job %s: one attempt, no takeover among healthy replicas:\n%s" % (jid, short(rec)))
            self.assertEqual(events(rec, "takeover"), [], "job %s:\n%s" % (jid, short(rec)))
            self.assertTrue("owner" in rec, "the job record has no \"owner\": %s" % short(rec))
            wait_released(d, jid)

        # Every replica lists exactly the acknowledged jobs, each once.
        for d in reps:
            ids = [j["id"] for j in d.jobs(limit=1000)]
            dup = [i for i, c in collections.Counter(ids).items() if c > 1]
            self.assertEqual(dup, [], "%s lists jobs twice: %r" % (d.replica_id, dup))
            self.assertEqual(set(ids), set(acked), "%s: listed %d jobs, acknowledged %d; missing %r, extra %r"
                             % (d.replica_id, len(ids), len(acked), sorted(set(acked) - set(ids))[:5],
                                sorted(set(ids) - set(acked))[:5]))

        # Each job's run happened exactly once, on some replica.
        runs = runs_by_job(fake, "/ran")
        twice = {j: docs for j, docs in runs.items() if len(docs) != 1}
        self.assertEqual(twice, {}, "jobs that did not run exactly once")
        self.assertEqual(set(runs), set(acked), "jobs that never ran: %r" % sorted(set(acked) - set(runs))[:5])
        by_replica = collections.Counter(docs[0].get("replica") for docs in runs.values())
        print("\nload: runs per replica %s" % dict(by_replica), file=sys.stderr)
        self.assertLessEqual(set(by_replica), {d.replica_id for d in reps}, by_replica)

        for d in reps:
            self.assertMetricsExposed(d)
            d.wait_metric("recoveryd_leases_held", None, lambda v: v == 0, timeout=5)


# ---------------------------------------------------------------- 2. admission across replicas

class AdmissionTest(ReplicaTestCase):

    ROUNDS = 4

    def race(self, posts, reps):
        """posts: [(daemon, body)], sent at once (threads released by a
        barrier). Returns [(daemon, status, doc)] in the same order."""
        barrier = threading.Barrier(len(posts))
        out = [None] * len(posts)

        def go(i, d, body):
            try:
                barrier.wait(10)
                st, _, doc = d.post("/webhook", body, timeout=20)
                out[i] = (d, st, doc)
            except Exception as e:  # reported below with the logs
                out[i] = (d, None, repr(e))
        threads = [threading.Thread(target=go, args=(i, d, b)) for i, (d, b) in enumerate(posts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for d, st, doc in out:
            if st != 202 or not isinstance(doc, dict) or len(doc.get("jobs") or []) != 1:
                self.fail("POST /webhook to %s -> %s %r (want 202 with one job)\n%s"
                          % (d.replica_id, st, doc, tails(reps)))
        return out

    def test_same_alert_at_once_on_three_replicas_makes_one_job(self):
        pb = playbook("slow", "recovery.sleep(2)", match=['alertname="Same"'], retries=0, timeout=30, cooldown=600,
                      budget=NOT_LIMITED, idempotent=True)
        reps = self.start_replicas(3, {"slow": pb})
        jobs = []
        for rnd in range(self.ROUNDS):
            body = notification("Same", rnd)
            out = self.race([(d, body) for d in reps], reps)
            answers = [(d.replica_id, doc["jobs"][0]["state"], doc["jobs"][0]["id"]) for d, _, doc in out]
            self.assertEqual(sorted(s for _, s, _ in answers), ["coalesced", "coalesced", "queued"],
                             "round %d: one job and two coalesced answers: %r" % (rnd, answers))
            self.assertEqual(len({i for _, _, i in answers}), 1, "round %d: answers name different jobs: %r"
                             % (rnd, answers))
            jobs.append(answers[0][2])
        for jid in jobs:
            rec = reps[2].wait_job(jid, timeout=20)
            self.assertEqual(rec["state"], "succeeded", short(rec))
            self.assertEqual(rec["notifications"], 3, "three notifications folded into job %s:\n%s"
                             % (jid, short(rec)))
            self.assertEqual(len(rec["attempts"]), 1, short(rec))
        listed = [j["id"] for j in reps[0].jobs(playbook="slow", limit=1000)]
        self.assertEqual(sorted(listed), sorted(jobs), "one job per alert, whatever the replica")

    def test_run_budget_holds_across_replicas(self):
        pb = playbook("budget", "return", match=['alertname="Budget"'], retries=0, cooldown=0,
                      budget={"runs": 2, "per": 600})
        a, b, c = reps = self.start_replicas(3, {"budget": pb})
        first = self.post(a, notification("Budget", 1), reps)
        second = self.post(b, notification("Budget", 2), reps)
        self.assertEqual([first["state"], second["state"]], ["queued", "queued"], (first, second))
        for j in (first, second):
            self.assertEqual(c.wait_job(j["id"], timeout=15)["state"], "succeeded")
        # Two started jobs of the playbook: the budget is spent, on every
        # replica, also on those that admitted none or one of them.
        for n, d in ((3, c), (4, a), (5, b)):
            j = self.post(d, notification("Budget", n), reps)
            self.assertEqual(j["state"], "budget_exhausted",
                             "alert %d to %s after 2 started jobs: %r\n%s" % (n, d.replica_id, j, tails(reps)))
            rec = d.job(j["id"])
            self.assertEqual(rec["state"], "budget_exhausted", short(rec))
            self.assertEqual(rec["attempts_made"], 0, short(rec))

    def test_run_budget_holds_when_replicas_admit_at_once(self):
        pb = playbook("race", "return", match=['alertname="Race"'], retries=0, cooldown=0,
                      budget={"runs": 2, "per": 600})
        reps = self.start_replicas(3, {"race": pb})
        out = self.race([(reps[n % 3], notification("Race", n)) for n in range(6)], reps)
        states = collections.Counter(doc["jobs"][0]["state"] for _, _, doc in out)
        self.assertEqual(states, {"queued": 2, "budget_exhausted": 4},
                         "6 alerts at once against a budget of 2: %r" % ([(d.replica_id, doc) for d, _, doc in out],))
        ends = collections.Counter(reps[0].wait_job(doc["jobs"][0]["id"], timeout=15)["state"] for _, _, doc in out)
        self.assertEqual(ends, {"succeeded": 2, "budget_exhausted": 4})


    def test_recovery_on_one_replica_resolves_the_incident_another_opened(self):
        """A's job of the alert fails and pages; the alert fires again and
        B's job recovers: B resolves the incident A opened, which only the
        journal tells it (a key new to the journal needs no such look)."""
        fake, pd, slack = self.fake(), self.pagerduty(), self.slack()
        fake.set_responses("POST", "/flaky", [(500, {}, "down"), (200, {}, "up")])
        run = ('local r = must(recovery.http{method = "POST", url = FAKE .. "/flaky", body = "x"})\n'
               'if r.status ~= 200 then error("the service answered " .. r.status) end\n')
        pb = playbook("flaky", run, match=['alertname="Flaky"'], fake=fake, retries=0, timeout=30, cooldown=0,
                      budget=NOT_LIMITED)
        reps = self.start_replicas(2, {"flaky": pb}, escalation=(pd, slack))
        a, b = reps
        j1 = self.post(a, notification("Flaky", 1), reps)["id"]
        rec = a.wait_job(j1, timeout=20)
        self.assertEqual(rec["state"], "failed", short(rec))
        self.wait_states(a, j1, {"pagerduty": "delivered", "slack": "delivered"})
        j2 = self.post(b, notification("Flaky", 1), reps)["id"]
        self.assertNotEqual(j2, j1, "the first job ended: the alert firing again is a new job")
        rec = b.wait_job(j2, timeout=20)
        self.assertEqual(rec["state"], "succeeded", short(rec) + "\n" + tails(reps))
        rows = self.wait_states(b, j1, {"pagerduty": "delivered", "slack": "delivered"}, kind="resolve",
                                timeout=15)
        for sink in ("pagerduty", "slack"):
            self.assertEqual(rows[sink]["reason"], "recovered", rows)
        res = pd.wait_count(1, action="resolve", timeout=10)[0]
        self.assertFalse(res.dropped, "the resolve must reach the incident A opened")
        trig = pd.requests(action="trigger")[0]
        self.assertEqual(json.loads(res.body)["dedup_key"], json.loads(trig.body)["dedup_key"])


# ---------------------------------------------------------------- 3. failover

class FailoverTest(ReplicaTestCase):

    def test_idempotent_job_of_a_killed_replica_runs_again_elsewhere(self):
        fake = self.fake()
        # The first attempt is killed in its sleep; the second sleeps too, then records itself.
        pb = playbook("idem", "recovery.sleep(3)\n" + record_run("/done"), match=['alertname="Failover"'],
                      fake=fake, retries=0, timeout=60, cooldown=0, budget=NOT_LIMITED, idempotent=True)
        reps = self.start_replicas(3, {"idem": pb})
        a = reps[0]
        jid = self.post(a, notification("Failover", 1), reps)["id"]
        self.wait_running_on(a, jid, a.replica_id, reps)

        a.kill()
        self.assertIsNotNone(a.wait_exit(10), "kill -9 did not end %s" % a.replica_id)
        t_kill = time.monotonic()
        b = reps[1]
        rec, by, took = self.wait_takeover(b, jid, a, t_kill, reps)
        print("\nfailover: %s took job %s over %.2fs after the kill" % (by, jid, took), file=sys.stderr)
        if rec["state"] == "running":
            self.assertEqual(rec.get("owner"), by, "the taker holds the lease: %s" % short(rec))

        rec = b.wait_job(jid, timeout=20)
        self.assertEqual(rec["state"], "succeeded", "job %s after the takeover:\n%s\n%s"
                         % (jid, short(rec), tails(reps)))
        self.assertRanAgainAfterTakeover(rec, by)
        wait_released(b, jid)
        done = runs_by_job(fake, "/done").get(jid, [])
        self.assertEqual(len(done), 1, "the killed attempt never got past its sleep: %r" % done)
        self.assertEqual(done[0].get("replica"), by, "the run was the taker's: %r" % done)

        taker = self.replica(reps, by)
        taker.wait_metric("recoveryd_takeovers_total", {"kind": "job"}, lambda v: v >= 1, timeout=5)
        for d in reps[1:]:
            self.assertMetricsExposed(d)

    def test_non_idempotent_job_of_a_killed_replica_fails_interrupted_and_escalates_once(self):
        fake, pd, slack = self.fake(), self.pagerduty(), self.slack()
        pb = playbook("once", record_run("/start") + "recovery.sleep(30)\n" + record_run("/end"),
                      match=['alertname="Once"'], fake=fake, retries=0, timeout=60, cooldown=0,
                      budget=NOT_LIMITED, idempotent=False)
        reps = self.start_replicas(3, {"once": pb}, escalation=(pd, slack))
        a = reps[0]
        jid = self.post(a, notification("Once", 1), reps)["id"]
        self.wait_running_on(a, jid, a.replica_id, reps)
        fake.wait_for(lambda reqs: runs_by_job(fake, "/start").get(jid), timeout=10)

        a.kill()
        self.assertIsNotNone(a.wait_exit(10), "kill -9 did not end %s" % a.replica_id)
        t_kill = time.monotonic()
        b = reps[1]
        rec, by, took = self.wait_takeover(b, jid, a, t_kill, reps, new_attempt=False)
        rec = b.wait_job(jid, timeout=10)
        self.assertEqual((rec["state"], rec["outcome"]), ("failed", "interrupted"),
                         "job %s:\n%s\n%s" % (jid, short(rec), tails(reps)))
        self.assertEqual(results(rec), ["interrupted"],
                         "no second attempt of a non-idempotent job: %s" % short(rec))
        self.assertEqual(len(runs_by_job(fake, "/start").get(jid, [])), 1, "the action ran once")
        self.assertEqual(runs_by_job(fake, "/end").get(jid, []), [])

        # Escalated once: one trigger row per sink, delivered once.
        rows = self.wait_escalations(b, jid, lambda rs: len(rs) >= 2 and all(r["state"] == "delivered" for r in rs),
                                     timeout=15, what="both trigger rows delivered")
        self.assertEqual(sorted((r["sink"], r["kind"], r["reason"]) for r in rows),
                         [("pagerduty", "trigger", "interrupted"), ("slack", "trigger", "interrupted")], rows)
        pd.wait_for(lambda reqs: [r for r in reqs if jid in r.body.decode("utf-8", "replace")], timeout=10)
        slack.wait_for(lambda reqs: [r for r in reqs if jid in r.text()], timeout=10)
        self.assertQuiet([pd, slack], seconds=1.0)  # a second send would come within the retry delay (0.2-1 s)
        pd_got = [r for r in pd.requests(action="trigger", status=202)
                  if jid in r.body.decode("utf-8", "replace")]
        slack_got = [r for r in slack.requests(status=200) if jid in r.text()]
        self.assertEqual(len(pd_got), 1, "PagerDuty triggers for job %s: %r" % (jid, pd.requests()))
        self.assertEqual(len(slack_got), 1, "Slack messages for job %s: %r" % (jid, slack.requests()))
        self.replica(reps, by).wait_metric("recoveryd_takeovers_total", {"kind": "job"}, lambda v: v >= 1,
                                           timeout=5)

    def test_a_draining_replica_leaves_its_queue_to_the_others_at_once(self):
        """SIGTERM: the jobs a replica still holds queued are freed and the
        others told, so they run within moments, not after a 10 s lease."""
        pb = playbook("slow", "recovery.sleep(1)", match=['alertname="Drain"'], retries=0, timeout=30,
                      cooldown=0, budget=NOT_LIMITED, idempotent=True)
        reps = self.start_replicas(2, {"slow": pb},
                                   extra=["--lease-timeout", "10", "--poll-interval", "10", "--max-jobs", "1"])
        a, b = reps
        ids = [self.post(a, notification("Drain", 20 + n), reps)["id"] for n in range(3)]
        self.wait_running_on(a, ids[0], a.replica_id, reps)
        t0 = time.monotonic()
        a.kill(signal.SIGTERM)
        self.assertEqual(a.wait_exit(15), 0, a.log_tail())
        for jid in ids[1:]:
            rec = b.wait_job(jid, timeout=20, interval=0.05)
            self.assertEqual(rec["state"], "succeeded", short(rec))
            self.assertEqual(events(rec, "takeover"), [], "a freed job is claimed, not taken over: %s" % short(rec))
        took = time.monotonic() - t0
        # two 1 s jobs one after the other on B, after A's drain (up to 1 s)
        self.assertLess(took, 6.0, "the queue of the drained replica waited for its lease\n%s" % tails(reps))
        self.assertIn("drained: unfinished jobs left to the other replicas", [r.get("msg") for r in a.log_records()])


# ---------------------------------------------------------------- 4. fencing

@unittest.skipUnless(pg_superuser_available(), "needs the cluster's superuser (RECOVERYD_TEST_PG_DIR)")
class FencingTest(ReplicaTestCase):

    def make_role(self):
        """A login role that is a member of the role of RECOVERYD_TEST_PG_URL
        (so it has that role's rights on the shared database), with its own
        password in a password file of this test. Returns (role, pgpass)."""
        base = os.environ["RECOVERYD_TEST_PG_URL"]
        owner = pg_url_parts(base)[0]
        role = "it_fence_" + secrets.token_hex(4)
        pw = secrets.token_hex(16)
        pg_superuser("CREATE ROLE %s LOGIN PASSWORD '%s' IN ROLE %s" % (role, pw, owner))
        self.addCleanup(self.drop_role, role)
        # Whatever it creates belongs to the shared owner, as the other replica's would.
        pg_superuser("ALTER ROLE %s SET role = '%s'" % (role, owner))
        pgpass = os.path.join(self.tmpdir, "pgpass-" + role)
        with open(pgpass, "w") as f:
            f.write("*:*:*:%s:%s\n" % (role, pw))
            src = os.environ.get("PGPASSFILE")
            if src and os.path.isfile(src):
                with open(src) as g:
                    f.write(g.read())
        os.chmod(pgpass, 0o600)
        return role, pgpass

    def drop_role(self, role):
        """Cleanup (before the harness's): stop the daemons that log in as
        role, end its sessions, drop it."""
        for d in self._daemons:
            if pg_url_parts(d.journal)[0] == role:
                d.stop(grace=5)
        try:
            pg_superuser("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '%s'" % role)
            pg_superuser("DROP ROLE IF EXISTS %s" % role)
        except AssertionError as e:  # must not mask the test's own failure
            print("cleanup: %s" % e, file=sys.stderr)

    def backends(self, rid, db):
        return int(pg_superuser("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'recoveryd/%s' "
                                "AND datname = '%s'" % (rid, db)) or 0)

    def test_replica_cut_off_from_the_database_is_fenced(self):
        fake = self.fake()
        sleep = 3 * LEASE
        pb = playbook("fenced", "recovery.sleep(%d)\n" % sleep + record_run("/done"), match=['alertname="Fence"'],
                      fake=fake, retries=0, timeout=sleep + 30, cooldown=0, budget=NOT_LIMITED, idempotent=True)
        role, pgpass = self.make_role()
        tag = secrets.token_hex(3)
        a_id, b_id = "fenceA-" + tag, "fenceB-" + tag

        # B (the usual role) first: it creates the schema. A logs in as the role.
        b = self.replicas(1, {"fenced": pb}, extra_args=REPLICA_ARGS, ids=[b_id])[0]
        journal = b.journal
        db = pg_url_parts(journal)[2]
        a = self.daemon({"fenced": pb}, extra_args=REPLICA_ARGS, tokens=b.tokens, subdir=a_id,
                        journal=pg_url_with_user(journal, role), replica_id=a_id,
                        env={"RECOVERYD_REPLICA_ID": a_id, "PGPASSFILE": pgpass})
        reps = [a, b]
        wait_until(lambda: self.backends(a_id, db) > 0, 10,
                   "%s's connections carry application_name recoveryd/%s" % (a_id, a_id), lambda: tails(reps))

        jid = self.post(a, notification("Fence", 1), reps)["id"]
        self.wait_running_on(b, jid, a_id, reps)
        t_start = time.monotonic()

        # Cut A off: it may not log in again, and its connections are ended.
        pg_superuser("ALTER ROLE %s NOLOGIN" % role)
        cut = pg_superuser("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                           "WHERE application_name = 'recoveryd/%s' AND datname = '%s'" % (a_id, db))
        t_cut = time.monotonic()
        self.assertGreater(int(cut or 0), 0, "no backend of %s to terminate" % a_id)
        wait_until(lambda: self.backends(a_id, db) == 0, 5, "every backend of %s gone" % a_id)

        # A cannot renew its lease. When it runs out, B takes the job over
        # (and runs it), and A aborts its attempt.
        rec, by, took = self.wait_takeover(b, jid, a, t_cut, reps)
        self.assertEqual(by, b_id)
        a.wait_log(lambda r: "lease lost" in str(r.get("msg")) and "attempt aborted" in str(r.get("msg"))
                   and r.get("job") == jid, timeout=LEASE + 5)
        self.assertTrue(a.alive(), "%s must survive losing the database (exit status %s)\n%s"
                        % (a_id, a.proc.returncode, a.log_tail()))

        # A may log in again; its late writes are fenced.
        pg_superuser("ALTER ROLE %s LOGIN" % role)
        wait_until(lambda: self.backends(a_id, db) > 0, 15, "%s reconnected" % a_id, lambda: tails(reps))
        wait_until(lambda: a.get("/readyz", token=None)[0] == 200, 15, "%s ready again" % a_id, lambda: tails(reps))

        rec = b.wait_job(jid, timeout=sleep + 20)
        self.assertEqual(rec["state"], "succeeded", "job %s:\n%s\n%s" % (jid, short(rec), tails(reps)))
        self.assertRanAgainAfterTakeover(rec, b_id)  # A's attempt interrupted, B's succeeded
        # A's attempt, had it not been aborted, would have posted `sleep`
        # seconds after it started: that time has passed (B started later).
        left = t_start + sleep + 1.0 - time.monotonic()
        if left > 0:
            time.sleep(left)
        done = runs_by_job(fake, "/done")
        self.assertEqual([d.get("replica") for d in done.get(jid, [])], [b_id],
                         "exactly one POST for job %s, B's: %r\n%s" % (jid, dict(done), tails(reps)))
        self.assertEqual(a.job(jid)["state"], "succeeded", "A reads the same journal again")
        self.assertTrue(a.alive(), "%s exited with %s\n%s" % (a_id, a.proc.returncode, a.log_tail()))


# ---------------------------------------------------------------- 5. chaos

class RequestsTest(ReplicaTestCase):
    """Cancel, approve and reject sent to a replica that does not hold the job:
    journaled, then done by the replica that holds it at its next poll."""

    def approval_playbook(self, name, fake):
        src = playbook(name, record_run("/" + name), match=['alertname="%s"' % name.capitalize()], fake=fake,
                       retries=0, timeout=30, cooldown=0, budget=NOT_LIMITED, idempotent=True)
        marker = "return {\n"
        return src.replace(marker, marker + "  approval = %s,\n" % lua_value({"required": True, "timeout": 120}), 1)

    def test_cancel_approve_reject_through_another_replica(self):
        fake = self.fake()
        slow = playbook("slow", "recovery.sleep(30)", match=['alertname="Slow"'], retries=0, timeout=60,
                        cooldown=0, budget=NOT_LIMITED, idempotent=True)
        reps = self.start_replicas(3, {"slow": slow, "gated": self.approval_playbook("gated", fake)})
        a, b, c = reps

        # cancel: the job runs on A, the operator asks B
        jid = self.post(a, notification("Slow", 1), reps)["id"]
        self.wait_running_on(a, jid, a.replica_id, reps)
        st, _, doc = b.api("POST", "/api/v1/jobs/%s/cancel" % jid, {"reason": "through b"})
        self.assertEqual((st, doc.get("state")), (200, "cancelling"), doc)
        rec = a.wait_job(jid, timeout=LEASE + POLL + 5)
        self.assertEqual((rec["state"], rec["outcome"]), ("cancelled", "cancelled"), short(rec))
        self.assertIsNotNone(rec["cancelled_by"], short(rec))
        self.assertNotIn("reject:", rec["cancelled_by"], short(rec))

        # approve: the plan waits on A, the operator approves through C
        g1 = self.post(a, notification("Gated", 2), reps)["id"]
        rec = a.wait_job(g1, {"awaiting_approval"}, timeout=10)
        self.assertEqual(runs_by_job(fake, "/gated").get(g1, []), [], "a plan only plans")
        st, _, doc = c.api("POST", "/api/v1/jobs/%s/approve" % g1, {})
        self.assertEqual((st, doc.get("state")), (200, "queued"), doc)
        rec = a.wait_job(g1, timeout=LEASE + POLL + 10)
        self.assertEqual(rec["state"], "succeeded", short(rec))
        self.assertEqual(rec["approval"]["state"], "approved", short(rec))
        self.assertEqual(len(runs_by_job(fake, "/gated").get(g1, [])), 1, "the real run ran once")

        # reject: another plan waits on A, rejected through B
        g2 = self.post(a, notification("Gated", 3), reps)["id"]
        a.wait_job(g2, {"awaiting_approval"}, timeout=10)
        st, _, doc = b.api("POST", "/api/v1/jobs/%s/reject" % g2, {"reason": "not now"})
        self.assertEqual(st, 200, doc)
        rec = a.wait_job(g2, timeout=LEASE + POLL + 5)
        self.assertEqual((rec["state"], rec["outcome"]), ("cancelled", "rejected"), short(rec))
        self.assertEqual(runs_by_job(fake, "/gated").get(g2, []), [], "a rejected plan never runs")

        # an ended job: 409 from any replica
        st, _, doc = c.api("POST", "/api/v1/jobs/%s/cancel" % jid, {"reason": "late"})
        self.assertEqual(st, 409, doc)

    def test_a_resolve_through_another_replica_lets_verify_decide(self):
        """As on one replica (test_admission): a resolve that reaches another
        replica while the holder's attempt verifies does not cut the verify."""
        fake = self.fake()
        verify = ('must(recovery.http{method = "POST", url = FAKE .. "/verifying", json = {job = ctx.job.id}})\n'
                  'recovery.sleep(1.5)\nreturn true, "healthy again"')
        fix = playbook("fix", "return", verify, match=['alertname="Fix"'], retries=2, timeout=30, cooldown=0,
                       budget=NOT_LIMITED, fake=fake)
        reps = self.start_replicas(2, {"fix": fix})
        a, b = reps
        firing = notification("Fix", 1)
        jid = self.post(a, firing, reps)["id"]
        fake.wait_count(1, "POST", "/verifying", timeout=10)
        self.assertEqual(a.job(jid)["owner"], a.replica_id)
        resolved = json.loads(json.dumps(firing))
        resolved["status"] = resolved["alerts"][0]["status"] = "resolved"
        resolved["alerts"][0]["endsAt"] = "2026-12-02T10:05:00Z"
        st, _, doc = b.post("/webhook", resolved, timeout=20)
        self.assertEqual((st, [j["state"] for j in doc["jobs"]]), (202, ["cancelled"]), doc)
        rec = a.wait_job(jid, timeout=LEASE + POLL + 5)
        self.assertEqual((rec["state"], rec["outcome"]), ("succeeded", "succeeded"), short(rec))
        self.assertEqual(rec["attempts"][0]["verify"], {"ok": True, "reason": "healthy again"})

    def test_requests_wake_the_holder_at_once(self):
        """LISTEN/NOTIFY: with a 10 s poll, a cancel through another replica
        still ends the job within a moment (without the notification, each
        would wait up to a poll: all three under 2 s by chance is < 1 %)."""
        slow = playbook("slow", "recovery.sleep(60)", match=['alertname="Slow"'], retries=0, timeout=90,
                        cooldown=0, budget=NOT_LIMITED, idempotent=True)
        reps = self.start_replicas(2, {"slow": slow}, extra=["--lease-timeout", "10", "--poll-interval", "10"])
        a, b = reps
        for n in range(3):
            jid = self.post(a, notification("Slow", 10 + n), reps)["id"]
            self.wait_running_on(a, jid, a.replica_id, reps)
            t0 = time.monotonic()
            st, _, doc = b.api("POST", "/api/v1/jobs/%s/cancel" % jid, {"reason": "notify"})
            self.assertEqual(st, 200, doc)
            rec = a.wait_job(jid, timeout=15, interval=0.02)
            took = time.monotonic() - t0
            self.assertEqual(rec["state"], "cancelled", short(rec))
            self.assertLess(took, 2.0, "cancel %d took %.2fs: the holder was not woken\n%s" % (n, took, tails(reps)))


class ChaosTest(ReplicaTestCase):

    SECONDS = float(os.environ.get("RECOVERYD_CHAOS_SECONDS") or 45)
    MAX_ALERTS = 600   # below the 1000 of one job listing
    KINDS = ("idem", "once", "fail")

    def test_kill_replicas_at_random_under_load(self):
        seed = int(os.environ.get("RECOVERYD_CHAOS_SEED") or random.randrange(1 << 30))
        print("\nchaos: seed %d (RECOVERYD_CHAOS_SEED), %.0fs" % (seed, self.SECONDS), file=sys.stderr)
        fake, pd, slack = self.fake(), self.pagerduty(), self.slack()
        # Each sleeps 0.2-1.4 s (by the alert's n) so that kills land in attempts.
        nap = "recovery.sleep(0.2 + (tonumber(ctx.alert.labels.n) % 5) * 0.3)\n"
        common = dict(fake=fake, retries=0, timeout=30, cooldown=0, budget=NOT_LIMITED,
                      escalate=["slack", "pagerduty"])
        playbooks = {
            "idem": playbook("idem", nap + record_run("/idem"), match=['alertname="Chaos"', 'kind="idem"'],
                             idempotent=True, **common),
            "once": playbook("once", record_run("/once") + nap, match=['alertname="Chaos"', 'kind="once"'],
                             idempotent=False, **common),
            "fail": playbook("fail", nap + 'error("chaos: this playbook always fails")',
                             match=['alertname="Chaos"', 'kind="fail"'], idempotent=True, **common),
        }
        reps = self.start_replicas(3, playbooks, escalation=(pd, slack))
        rng = random.Random(seed)
        client_rng = random.Random(seed + 1)
        live = {d.replica_id: True for d in reps}
        acked = {}           # job id -> (kind, n, answer state)
        unacked = []         # n of alerts no replica acknowledged
        bad_answers = []
        kills = []           # (t, replica id)
        chaos_errors = []
        stop = threading.Event()
        lock = threading.Lock()

        def client():
            try:
                post_alerts()
            except Exception as e:  # reported by the test, not lost with the thread
                bad_answers.append(("client thread", repr(e)))

        def post_alerts():
            n = 0
            while not stop.is_set() and n < self.MAX_ALERTS:
                kind = self.KINDS[n % 3]
                body = notification("Chaos", n, kind=kind)
                ok = False
                for _ in range(50):  # Alertmanager retries too (on 503 and on errors)
                    if stop.is_set() and _ > 10:
                        break
                    with lock:
                        up = [d for d in reps if live[d.replica_id]]
                    d = client_rng.choice(up or reps)
                    try:
                        st, _h, doc = d.post("/webhook", body, timeout=5)
                    except (OSError, http.client.HTTPException, RuntimeError):
                        time.sleep(0.05)  # killed or restarting (RuntimeError: not listening yet)
                        continue
                    if st == 503:
                        time.sleep(0.05)
                        continue
                    if st != 202 or not isinstance(doc, dict) or len(doc.get("jobs") or []) != 1:
                        bad_answers.append((n, d.replica_id, st, doc))
                        break
                    j = doc["jobs"][0]
                    if j["state"] not in ("queued", "coalesced"):
                        bad_answers.append((n, d.replica_id, st, doc))
                        break
                    with lock:
                        acked[j["id"]] = (kind, n, j["state"])
                    ok = True
                    break
                if not ok:
                    unacked.append(n)
                n += 1
                time.sleep(0.08)

        def chaos():
            # In the test's own thread: a daemon dies with the thread that
            # started it (harness.Recoveryd.start), so no helper thread may
            # restart one.
            end = time.monotonic() + self.SECONDS
            while True:
                pause = rng.uniform(3, 5)
                if time.monotonic() + pause > end:
                    break
                time.sleep(pause)
                died = ["%s (exit status %s)" % (d.replica_id, d.proc.returncode) for d in reps if not d.alive()]
                if died:
                    chaos_errors.append("replicas died on their own: %s" % ", ".join(died))
                    return
                victim = rng.choice(reps)
                with lock:
                    live[victim.replica_id] = False
                victim.kill()
                if victim.wait_exit(10) is None:
                    chaos_errors.append("%s did not die on SIGKILL" % victim.replica_id)
                    return
                kills.append((time.monotonic(), victim.replica_id))
                try:
                    victim.restart()
                except Exception as e:
                    chaos_errors.append("restart of %s: %s" % (victim.replica_id, e))
                    return
                with lock:
                    live[victim.replica_id] = True

        tc = threading.Thread(target=client, name="chaos-client")
        tc.start()
        try:
            chaos()
        finally:
            stop.set()
            tc.join(60)
        self.assertFalse(tc.is_alive(), "the client thread did not end")
        self.assertEqual(chaos_errors, [], "\n" + tails(reps))
        self.assertEqual(bad_answers, [], "answers other than 202 queued/coalesced")
        died = ["%s (exit status %s)" % (d.replica_id, d.proc.returncode) for d in reps if not d.alive()]
        self.assertEqual(died, [], "replicas died on their own\n%s" % tails(reps))
        self.assertGreaterEqual(len(kills), max(1, int(self.SECONDS / 8)), "too few kills: %r" % kills)
        print("chaos: %d kills %s; %d alerts acknowledged, %d not"
              % (len(kills), collections.Counter(r for _, r in kills), len(acked), len(unacked)), file=sys.stderr)
        self.assertGreater(len(acked), 50, "too few notifications got through")

        # Settle: leases of the last kill expire, every job ends.
        d0 = reps[0]
        all_jobs = {}

        def settled():
            listing = d0.jobs(limit=1000)
            all_jobs.clear()
            all_jobs.update({j["id"]: j for j in listing})
            open_ = [j for j in listing if j["state"] not in TERMINAL_STATES]
            missing = set(acked) - set(all_jobs)
            return not open_ and not missing
        wait_until(settled, 90, "every job ended",
                   lambda: "open: %r\n%s" % ([(j["id"], j["playbook"], j["state"]) for j in all_jobs.values()
                                              if j["state"] not in TERMINAL_STATES][:10], tails(reps)), interval=0.5)

        idem_runs = runs_by_job(fake, "/idem")
        once_runs = runs_by_job(fake, "/once")
        # A non-idempotent action never runs twice for a job, acknowledged or not.
        twice = {j: docs for j, docs in once_runs.items() if len(docs) > 1}
        self.assertEqual(twice, {}, "non-idempotent actions that ran twice (job: runs)")

        outcomes = collections.Counter()
        failed = []
        for jid, (kind, n, _) in sorted(acked.items(), key=lambda kv: kv[1][1]):
            rec = wait_released(d0, jid, timeout=LEASE + POLL + 10)
            outcomes[(kind, rec["state"], rec.get("outcome"))] += 1
            ctx = "job %s (%s, alert %d):\n%s" % (jid, kind, n, short(rec))
            if kind == "idem":
                self.assertEqual(rec["state"], "succeeded", ctx)
                self.assertGreaterEqual(len(idem_runs.get(jid, [])), 1, "succeeded without its run: " + ctx)
                self.assertEqual(results(rec)[-1], "succeeded", ctx)
                self.assertEqual(set(results(rec)[:-1]) - {"interrupted"}, set(), ctx)
            elif kind == "once":
                self.assertIn((rec["state"], rec.get("outcome")),
                              {("succeeded", "succeeded"), ("failed", "interrupted")}, ctx)
                self.assertEqual(len(rec["attempts"]), 1, "a non-idempotent job has one attempt: " + ctx)
                if rec["state"] == "succeeded":
                    self.assertEqual(len(once_runs.get(jid, [])), 1, ctx)
                else:
                    failed.append(jid)
            else:
                self.assertEqual(rec["state"], "failed", ctx)
                self.assertIn(rec.get("outcome"), ("failed", "interrupted"), ctx)
                failed.append(jid)
        print("chaos: outcomes %s" % dict(outcomes), file=sys.stderr)

        # Every escalation of a failed job reaches both sinks. Duplicates are
        # allowed, but only as many as there were kills: a replica killed
        # after a sink accepted a notification but before it journaled the
        # delivery leaves the row undelivered, and once the row's claim
        # expires another replica sends it again. Each kill can repeat a
        # given row at most once (one replica holds a row at a time), so a
        # row arrives at most 1 + kills times. (The total over all rows is
        # not bounded by the kills: one kill can catch several rows in flight.)
        def delivered(jid):
            rows = d0.job(jid).get("escalations") or []
            return rows if len(rows) >= 2 and all(r.get("state") == "delivered" for r in rows) else None
        deadline = time.monotonic() + 60
        rows_of = {}
        for jid in failed:
            rows_of[jid] = wait_until(lambda: delivered(jid), max(1.0, deadline - time.monotonic()),
                                      "escalations of job %s delivered" % jid,
                                      lambda: short(d0.job(jid)) + "\n" + tails(reps), interval=0.2)
        time.sleep(1.5)  # resends still under way come within the retry delay
        pd_by_job = collections.Counter()
        for r in pd.requests(action="trigger", status=202):
            pd_by_job.update(j for j in failed if j in r.body.decode("utf-8", "replace"))
        slack_by_job = collections.Counter()
        for r in slack.requests(status=200):
            slack_by_job.update(j for j in failed if j in r.text())
        dups = 0
        for jid in failed:
            rows = rows_of[jid]
            self.assertEqual(sorted((r["sink"], r["kind"]) for r in rows),
                             [("pagerduty", "trigger"), ("slack", "trigger")],
                             "job %s is escalated once to each sink: %r" % (jid, rows))
            for sink, got in (("pagerduty", pd_by_job[jid]), ("slack", slack_by_job[jid])):
                self.assertGreaterEqual(got, 1, "job %s: its %s row is delivered but the fake got nothing"
                                        % (jid, sink))
                self.assertLessEqual(got, 1 + len(kills), "job %s: %d %s deliveries with %d kills"
                                     % (jid, got, sink, len(kills)))
                dups += got - 1
        print("chaos: %d escalated jobs, %d duplicate deliveries" % (len(failed), dups), file=sys.stderr)


if __name__ == "__main__":
    unittest.main()

"""The PostgreSQL server restarts under load (a restart, a failover): while
it is down, notifications are answered 503 (Alertmanager retries them) and
/readyz fails; when it is back, recoveryd resumes, and every notification it
acknowledged became a job that ends: nothing acknowledged is lost, and the
runner's writes made during the outage are committed, not dropped.

Runs only against PostgreSQL (pg.integration.test_db_restart), where the
suite's cluster can be restarted (scripts/pg.sh restart)."""

import json
import os
import subprocess
import threading
import time
import unittest

from harness import RecoverydTestCase, pg_mode, playbook

SOURCE_DIR = os.environ.get("RECOVERYD_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))


def notification(i):
    return {"receiver": "recoveryd", "status": "firing", "version": "4", "groupKey": "{}:{}",
            "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://am", "alerts": [{
                "status": "firing", "labels": {"alertname": "Restart", "n": str(i)}, "annotations": {},
                "startsAt": "2026-12-02T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "", "fingerprint": "%016x" % (0xd0000000 + i)}]}


@unittest.skipUnless(pg_mode() and os.environ.get("RECOVERYD_TEST_PG_DIR"),
                     "a database server restart: PostgreSQL only")
class DatabaseRestartTest(RecoverydTestCase):

    def restart_db(self, down):
        subprocess.run(["bash", os.path.join(SOURCE_DIR, "scripts", "pg.sh"), "restart",
                        os.environ["RECOVERYD_TEST_PG_DIR"], str(down)],
                       check=True, capture_output=True, timeout=120)

    def test_restart_under_load_loses_nothing_acknowledged(self):
        # Each job sleeps a little, so that attempts are running (and their
        # ends are written) while the server is down.
        d = self.daemon({"p": playbook("p", "recovery.sleep(0.3)", match=['alertname="Restart"'],
                                       cooldown=0, budget={"runs": 0, "per": 60}, idempotent=True)})
        answers = {}
        stop = threading.Event()

        def post_loop():
            i = 0
            while not stop.is_set() and i < 400:  # bounded in count and time
                st, _, doc = d.post("/webhook", notification(i), timeout=20)
                answers[i] = (st, doc)
                i += 1
                time.sleep(0.02)

        poster = threading.Thread(target=post_loop)
        poster.start()
        time.sleep(1.0)
        ready_down = []
        restarter = threading.Thread(target=self.restart_db, args=(2,))
        restarter.start()
        t0 = time.monotonic()
        while restarter.is_alive() and time.monotonic() - t0 < 60:
            ready_down.append(d.get("/readyz", token=None)[0])
            time.sleep(0.2)
        restarter.join(timeout=60)
        time.sleep(1.5)
        stop.set()
        poster.join(timeout=60)

        codes = [st for st, _ in answers.values()]
        self.assertIn(503, codes, "no notification met the outage: %s" % sorted(set(codes)))
        self.assertIn(202, codes)
        self.assertEqual(set(codes) - {202, 503}, set(), codes)
        self.assertIn(503, ready_down, "/readyz never failed while the server was down")
        for st, doc in answers.values():
            if st == 503:
                self.assertEqual(doc["error"], "unavailable", doc)

        # Every acknowledged notification is a job, and every job ends.
        acked = [doc["jobs"][0]["id"] for st, doc in answers.values() if st == 202]
        deadline = time.monotonic() + 60
        for jid in acked:
            rec = d.wait_job(jid, timeout=max(1, deadline - time.monotonic()))
            self.assertEqual(rec["state"], "succeeded", json.dumps(rec)[:2000])
        self.assertEqual(d.get("/readyz", token=None)[0], 200)
        self.assertTrue(d.alive())
        self.assertIn("journal back", d.log_text())
        # Every acknowledged job is in the journal. A request whose COMMIT
        # reached the server just before the connection was cut is answered
        # 503 although its job was written (the answer to COMMIT was lost):
        # at most one per cut connection.
        jobs = d.jobs(limit=1000)
        ids = {j["id"] for j in jobs}
        self.assertEqual(set(acked) - ids, set())
        self.assertLessEqual(len(jobs), len(acked) + 2, "more unacknowledged jobs than cut commits")


if __name__ == "__main__":
    unittest.main()

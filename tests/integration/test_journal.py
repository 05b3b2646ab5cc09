"""The journal cannot commit: the webhook answers 503 (the one code
Alertmanager retries), nothing half-admitted is left behind, and recoveryd
recovers once the journal is writable again."""

import contextlib
import os
import sqlite3
import subprocess
import time
import unittest

from harness import RecoverydTestCase, fixture_bytes, pg_mode, playbook

SETTINGS = 'alertname="SettingsSyncJobFailure"'


@contextlib.contextmanager
def journal_refuses_writes(d):
    """SQLite: another process holds the write lock longer than the busy
    timeout. PostgreSQL: the database takes no connections, and recoveryd's
    are cut (as when the server restarts)."""
    if not pg_mode():
        lock = sqlite3.connect(os.path.join(d.tmpdir, "journal.db"), isolation_level=None, timeout=1)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        return

    admin = os.environ["RECOVERYD_TEST_PG_URL"]
    db = d.journal.rsplit("/", 1)[1].split("?")[0]

    def psql(sql):
        subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", admin, "-c", sql], check=True,
                       capture_output=True, timeout=30)
    psql("ALTER DATABASE %s ALLOW_CONNECTIONS false" % db)
    psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s'" % db)
    try:
        yield
    finally:
        psql("ALTER DATABASE %s ALLOW_CONNECTIONS true" % db)


class JournalFailureTest(RecoverydTestCase):

    def test_locked_journal_answers_503_then_recovers(self):
        fake = self.fake()
        d = self.daemon({"p": playbook("p", 'must(recovery.http{method = "POST", url = FAKE .. "/restart"})',
                                       match=[SETTINGS], fake=fake)})
        with journal_refuses_writes(d):
            t0 = time.time()
            st, headers, doc = d.post("/webhook", fixture_bytes("firing-single.json"))
            self.assertEqual(st, 503, doc)
            self.assertEqual(doc["error"], "unavailable", doc)
            self.assertIn("journal", doc["message"])
            retry_after = {k.lower(): v for k, v in headers.items()}.get("retry-after")
            self.assertTrue(retry_after and retry_after.isdigit(), headers)
            self.assertLess(time.time() - t0, 9, "answered before Alertmanager's 10 s hang-up")
            st, _, doc = d.get("/readyz")
            self.assertEqual(st, 503, doc)
            self.assertEqual(d.metric("recoveryd_requests_rejected_total", {"reason": "journal_error"}), 1)
            self.assertIn("journal commit failed", d.log_text())

        # Nothing was admitted: the same alert is queued anew, not coalesced.
        doc = d.webhook("firing-single.json")
        self.assertEqual(doc["jobs"][0]["state"], "queued", doc)
        rec = d.wait_job(doc["jobs"][0]["id"])
        self.assertEqual(rec["state"], "succeeded", rec)
        self.assertEqual(fake.count("POST", "/restart"), 1)
        self.assertEqual(d.get("/readyz")[0], 200)
        self.assertEqual(len(d.jobs()), 1)


class DatabaseGoneTest(RecoverydTestCase):

    @unittest.skipUnless(pg_mode(), "a database server that goes away: PostgreSQL only")
    def test_readyz_fails_while_the_database_is_unreachable(self):
        """Nothing is written meanwhile: readiness asks the server itself."""
        d = self.daemon({"p": playbook("p", "return", match=[SETTINGS])})
        self.assertEqual(d.get("/readyz", token=None)[0], 200)
        with journal_refuses_writes(d):
            deadline = time.monotonic() + 5
            while d.get("/readyz", token=None)[0] != 503:
                self.assertLess(time.monotonic(), deadline, "still ready with the database gone")
                time.sleep(0.2)
            st, _, doc = d.get("/readyz", token=None)
            self.assertIn("journal", doc["message"])
        deadline = time.monotonic() + 5
        while d.get("/readyz", token=None)[0] != 200:
            self.assertLess(time.monotonic(), deadline, "not ready again with the database back")
            time.sleep(0.2)
        self.assertEqual(d.webhook("firing-single.json")["jobs"][0]["state"], "queued")


if __name__ == "__main__":
    unittest.main()

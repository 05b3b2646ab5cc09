"""History: GET /api/v1/jobs pages with a cursor (Link: rel="next") and
filters by time range and alertname; --retain: ended jobs (with their attempts, events and escalations) and
audit rows older than the retention are deleted; unfinished and recent
ones stay, and so do jobs whose incident is still open."""

import os
import re
import sqlite3
import subprocess
import time

from harness import RecoverydTestCase, pg_mode, playbook, variant

DAY = 86400.0


def journal_sql(d, sql):
    """Run sql on the daemon's journal (SQLite file or PostgreSQL URL)."""
    if pg_mode():
        subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", d.journal, "-c", sql], check=True,
                       capture_output=True, timeout=30)
        return
    db = sqlite3.connect(os.path.join(d.tmpdir, "journal.db"), isolation_level=None, timeout=10)
    try:
        db.executescript(sql)
    finally:
        db.close()


class RetentionTest(RecoverydTestCase):

    def run_jobs(self, d, n):
        ids = []
        for i in range(n):
            st, _, doc = d.trigger("quick", {"labels": {"alertname": "Quick", "i": str(i)},
                                             "reason": "retention %d" % i}, query="wait=20")
            self.assertEqual(st, 200, doc)
            self.assertEqual(doc["state"], "succeeded", doc)
            ids.append(doc["id"])
        return ids

    def test_old_jobs_and_audit_rows_go_recent_ones_stay(self):
        d = self.daemon({"quick": playbook("quick", 'recovery.log.info("ran")')},
                        extra_args=["--retain", "0"])
        old1, old2, recent = self.run_jobs(d, 3)
        d.stop()
        # Two jobs and their audit rows ended 40 days ago.
        journal_sql(d, "UPDATE jobs SET created_at = created_at - %d, ended_at = ended_at - %d "
                       "WHERE id IN ('%s', '%s'); UPDATE audit SET ts = ts - %d WHERE job_id IN ('%s', '%s');"
                    % (40 * DAY, 40 * DAY, old1, old2, 40 * DAY, old1, old2))

        # --retain 0 keeps everything.
        d.restart()
        time.sleep(2.0)
        for i in (old1, old2, recent):
            self.assertEqual(d.get("/api/v1/jobs/" + i)[0], 200)
        self.assertEqual(d.metric("recoveryd_retention_deleted_total", {"what": "jobs"}), 0)

        # The default, 30 days: the two old ones go, with their rows.
        d.extra_args = []
        d.restart()
        d.wait_metric("recoveryd_retention_deleted_total", {"what": "jobs"}, lambda v: v == 2, timeout=15)
        self.assertEqual(d.metric("recoveryd_retention_deleted_total", {"what": "audit"}), 2)
        for i in (old1, old2):
            st, _, doc = d.get("/api/v1/jobs/" + i)
            self.assertEqual(st, 404, doc)
        st, _, doc = d.get("/api/v1/jobs/" + recent)
        self.assertEqual(st, 200, doc)
        self.assertEqual(len(doc["attempts"]), 1, doc)
        self.assertEqual([j["id"] for j in d.jobs()], [recent])
        st, _, audit = d.get("/api/v1/audit")
        self.assertEqual([e["job_id"] for e in audit["entries"] if e["action"] == "trigger"], [recent])
        rec = d.wait_log(lambda r: r.get("msg", "").startswith("retention: deleted"))
        self.assertEqual((rec.get("jobs"), rec.get("audit_rows"), rec.get("retain_days")), ("2", "2", "30"))

    def test_retain_out_of_range_is_refused(self):
        d = self.daemon({"quick": playbook("quick", 'recovery.log.info("ran")')}, start=False)
        r = d.run_cli(d.base_args() + ["--retain", "0.01"], timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--retain must be 0 (keep forever) or from 0.042 (an hour)", r.stderr)


class PagingTest(RecoverydTestCase):

    def test_pages_follow_the_link_and_keep_the_filters(self):
        d = self.daemon({"quick": playbook("quick", 'recovery.log.info("ran")')})
        names = ["Disk", "Cpu", "Disk", "Disk", "Cpu", "Disk"]
        ids = []
        for i, name in enumerate(names):
            st, _, doc = d.trigger("quick", {"labels": {"alertname": name, "i": str(i)}, "reason": "page"},
                                   query="wait=20")
            self.assertEqual(st, 200, doc)
            ids.append(doc["id"])
        mid = d.job(ids[2])["created_at"]

        def pages(path):
            seen, links = [], []
            for _ in range(10):
                st, headers, doc = d.get(path)
                self.assertEqual(st, 200, doc)
                seen.append([(j["id"], j["alertname"]) for j in doc])
                link = headers.get("Link")
                if not link:
                    return seen, links
                links.append(link)
                m = re.fullmatch(r'<(/api/v1/jobs\?[^>]+)>; rel="next"', link)
                self.assertIsNotNone(m, link)
                path = m.group(1)
            self.fail("more than 10 pages")

        # Newest first, 2 + 2 + 2, the last page without a Link.
        seen, links = pages("/api/v1/jobs?limit=2")
        self.assertEqual([[i for i, _ in p] for p in seen], [ids[5:3:-1], ids[3:1:-1], ids[1::-1]])
        self.assertEqual(len(links), 2)
        # The next link keeps the filters: alertname=Disk, 3 + 1.
        seen, links = pages("/api/v1/jobs?limit=3&alertname=Disk&playbook=quick&state=succeeded")
        self.assertEqual(seen, [[(ids[5], "Disk"), (ids[3], "Disk"), (ids[2], "Disk")], [(ids[0], "Disk")]])
        self.assertIn("alertname=Disk", links[0])
        self.assertIn("state=succeeded", links[0])
        # A time range: from the third job on (RFC 3339, inclusive).
        seen, _ = pages("/api/v1/jobs?since=" + mid)
        self.assertEqual([i for i, _ in seen[0]], ids[:1:-1])
        seen, _ = pages("/api/v1/jobs?until=" + mid + "&alertname=Cpu")
        self.assertEqual([i for i, _ in seen[0]], [ids[1]])
        st, _, doc = d.get("/api/v1/jobs?since=last-week")
        self.assertEqual((st, doc["error"]), (400, "invalid_request"), doc)


class PlaybookStatsTest(RecoverydTestCase):

    def test_playbooks_show_budget_cooldowns_and_last_job(self):
        d = self.daemon({"quick": playbook("quick", 'recovery.log.info("ran")', match=['alertname="Quick"'],
                                           cooldown=600, budget={"runs": 5, "per": 3600})})
        st, _, doc = d.get("/api/v1/playbooks")
        self.assertEqual(st, 200, doc)
        self.assertEqual(doc[0]["stats"], {"budget_used": 0, "cooldowns": [], "last_job": None})
        ans = d.webhook(variant("firing-single.json", alertname="Quick"))
        job = d.wait_job(ans["jobs"][0]["id"])
        self.assertEqual(job["state"], "succeeded", job)
        # A manual trigger spends the budget too, but starts no cooldown.
        st, _, man = d.trigger("quick", {"labels": {"alertname": "Quick", "instance": "b"}, "reason": "x"},
                               query="wait=20")
        self.assertEqual(man["state"], "succeeded", man)
        st, _, doc = d.get("/api/v1/playbooks")
        stats = doc[0]["stats"]
        self.assertEqual(stats["budget_used"], 2, stats)
        self.assertEqual([c["key"] for c in stats["cooldowns"]], [job["key"]], stats)
        self.assertGreater(stats["cooldowns"][0]["until"], job["ended_at"])
        self.assertEqual(stats["last_job"]["id"], man["id"])
        self.assertEqual(stats["last_job"]["outcome"], "succeeded")

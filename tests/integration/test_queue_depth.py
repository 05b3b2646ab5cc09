"""recoveryd_queue_depth is the number of jobs in state queued: jobs
committed and not yet started, whether they wait for a free slot, in the
runner's inbox, or were queued again at start-up."""

import time
import unittest

from harness import pg_mode, RecoverydTestCase, playbook

MATCH = ['alertname="Depth"']


def manual(i):
    return {"labels": {"alertname": "Depth", "i": str(i)}, "reason": "depth"}


class QueueDepthTest(RecoverydTestCase):

    def queued(self, d):
        return len(d.jobs(state="queued", limit=1000))

    def wait_depth(self, d, want, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            got, listed = d.metric("recoveryd_queue_depth"), self.queued(d)
            if got == want and listed == want:
                return
            if time.monotonic() > deadline:
                self.fail("queue_depth %s, jobs listed queued %s, want %s\n%s"
                          % (got, listed, want, d.log_tail()))
            time.sleep(0.05)

    def test_depth_follows_queued_jobs(self):
        d = self.daemon({"slow": playbook("slow", "recovery.sleep(30)", match=MATCH, timeout=60,
                                          idempotent=True)},
                        extra_args=["--max-jobs", "2"])
        ids = []
        for i in range(12):
            st, _, doc = d.trigger("slow", manual(i), token="operator")
            self.assertStatus(st, 202, d, doc)
            ids.append(doc["jobs"][0]["id"])
        # two run, ten wait for a slot
        self.wait_depth(d, 10)
        self.assertEqual(d.metric("recoveryd_jobs_in_flight"), 2)
        # cancelling queued jobs takes them off the queue
        for jid in ids[-3:]:
            st, _, doc = d.api("POST", "/api/v1/jobs/%s/cancel" % jid, {"reason": "depth test"})
            self.assertEqual(st, 200, doc)
        self.wait_depth(d, 7)
        # after a crash: the two running ones are idempotent and queued again
        d.kill()
        d.wait_exit(10)
        d.start()
        # at start-up 9 are queued; two of them start at once
        if pg_mode():
            # A shared journal: a replica claims only what it can run now;
            # the rest stay queued in the journal, free for any replica, and
            # its gauge counts what it holds.
            d.wait_metric("recoveryd_jobs_in_flight", None, lambda v: v == 2)
            self.assertEqual(self.queued(d), 7)
            self.assertEqual(d.metric("recoveryd_queue_depth"), 0)
            return
        self.wait_depth(d, 7)
        self.assertEqual(d.metric("recoveryd_jobs_in_flight"), 2)


if __name__ == "__main__":
    unittest.main()

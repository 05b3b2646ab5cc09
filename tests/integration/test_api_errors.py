"""Auth, request validation, error bodies, health endpoints and /metrics."""

import json
import os
import subprocess
import unittest

from harness import FP_SINGLE, RecoverydTestCase, StartError, fixture, fixture_bytes, playbook

SETTINGS = 'alertname="SettingsSyncJobFailure"'
PROMTOOL = "/usr/bin/promtool"


def simple(name="p"):
    return {name: playbook(name, "return", "return true", match=[SETTINGS])}


class AuthTest(RecoverydTestCase):

    def test_tokens(self):
        d = self.daemon(simple())
        body = fixture_bytes("firing-single.json")
        wh, op = d.tokens["webhook"], d.tokens["operator"]
        self.assertGreaterEqual(min(len(wh), len(op)), 32)

        # missing or wrong credentials
        for tok in (None, "wrong-token-" + "x" * 32, wh + "x", wh[:-1], op[:-1]):
            self.assertError(d.post("/webhook", body, token=tok), 401, "unauthorized")
            self.assertError(d.post("/trigger/p", body, token=tok), 401, "unauthorized")
        self.assertError(d.post("/webhook", body, token=None, headers={"Authorization": "Basic " + wh}),
                         401, "unauthorized")
        self.assertError(d.post("/webhook", body, token=None, headers={"Authorization": "Bearer"}),
                         401, "unauthorized")
        self.assertEqual(d.jobs(), [], "a rejected request must not create jobs")

        # the webhook token does not open the operator API
        for path in ("/api/v1/jobs", "/api/v1/playbooks", "/api/v1/jobs/whatever"):
            self.assertError(d.get(path, token="webhook"), 403, "forbidden")
            self.assertError(d.get(path, token=None), 401, "unauthorized")

        # the webhook token admits /webhook only (test_token_scope.py has the rest)
        st, _, doc = d.post("/webhook", body, token="webhook")
        self.assertStatus(st, 202, d, doc)
        self.assertEqual(doc["jobs"][0]["key"], "p/" + FP_SINGLE)
        self.assertError(d.post("/trigger/p", {"labels": {"alertname": "A"}, "annotations": {}, "reason": "r"},
                                token="webhook"), 403, "forbidden")

        # the operator token admits everything
        st, _, doc = d.post("/webhook", body, token="operator")
        self.assertStatus(st, 202, d, doc)
        st, _, doc = d.post("/trigger/p", {"labels": {"alertname": "B"}, "annotations": {}, "reason": "r"},
                            token="operator")
        self.assertStatus(st, 202, d, doc)
        for path in ("/api/v1/jobs", "/api/v1/playbooks", "/metrics", "/healthz"):
            st, _, doc = d.get(path, token="operator")
            self.assertStatus(st, 200, d, doc)
        self.assertEqual(d.playbook_names(), ["p"])

        # open endpoints
        for path in ("/metrics", "/healthz", "/readyz"):
            st, _, doc = d.get(path, token=None)
            self.assertStatus(st, 200, d, doc)

    def test_no_tokens_requires_insecure_flag(self):
        d = self.daemon(simple(), tokens=False, start=False)
        with self.assertRaises(StartError):
            d.start(timeout=10)
        self.assertGreater(d.proc.returncode, 0, "must exit with an error, not hang or crash")

        d2 = self.daemon(simple(), tokens=False, extra_args=["--insecure-no-auth"], subdir="insecure")
        st, _, doc = d2.post("/webhook", fixture_bytes("firing-single.json"), token=None)
        self.assertStatus(st, 202, d2, doc)
        st, _, doc = d2.get("/api/v1/jobs", token=None)
        self.assertStatus(st, 200, d2, doc)

    def test_unreadable_token_file_fails_start(self):
        d = self.daemon(simple(), start=False)
        os.unlink(d.token_files["webhook"])
        with self.assertRaises(StartError):
            d.start(timeout=10)
        self.assertGreater(d.proc.returncode, 0)


class RequestErrorTest(RecoverydTestCase):

    def test_bad_requests(self):
        d = self.daemon(simple())
        doc = self.assertError(d.post("/webhook", b'{"version": "4", "alerts": [', token="webhook"),
                               400, "invalid_json")

        no_version = fixture("firing-single.json")
        del no_version["version"]
        doc = self.assertError(d.post("/webhook", no_version), 400, "invalid_payload")
        self.assertIn("version", doc["message"])

        bad_label = fixture("firing-single.json")
        bad_label["alerts"][0]["labels"]["job"] = 5
        doc = self.assertError(d.post("/webhook", bad_label), 400, "invalid_payload")
        self.assertIn("alerts[0].labels.job", doc["message"])

        no_alerts = fixture("firing-single.json")
        del no_alerts["alerts"]
        doc = self.assertError(d.post("/webhook", no_alerts), 400, "invalid_payload")
        self.assertIn("alerts", doc["message"])

        # the manual form is for /trigger only
        self.assertError(d.post("/webhook", {"labels": {"alertname": "X"}, "annotations": {}, "reason": "r"}),
                         400, "invalid_payload")

        self.assertError(d.post("/webhook", fixture_bytes("firing-single.json"), content_type="text/plain"),
                         415, "unsupported_media_type")
        st, _, doc = d.post("/webhook", fixture_bytes("firing-single.json"),
                            content_type="application/json; charset=utf-8")
        self.assertStatus(st, 202, d, doc)

        self.assertError(d.post("/trigger/nope", fixture_bytes("firing-single.json"), token="operator"), 404,
                         "unknown_playbook")
        self.assertError(d.get("/api/v1/jobs/does-not-exist"), 404, "not_found")
        self.assertError(d.get("/no/such/path"), 404, "not_found")
        st, _, doc = d.get("/webhook", token="webhook")
        self.assertEqual(st, 405, doc)

        # nothing of the above created more than the one good job
        self.assertEqual(len(d.jobs()), 1)
        st, _, _ = d.get("/healthz", token=None)
        self.assertEqual(st, 200)

    def test_body_max(self):
        d = self.daemon(simple(), extra_args=["--body-max", "4096"])

        def padded(size):
            doc = fixture("firing-single.json")
            doc["alerts"][0]["annotations"]["pad"] = ""
            base = len(json.dumps(doc).encode())
            doc["alerts"][0]["annotations"]["pad"] = "x" * (size - base)
            raw = json.dumps(doc).encode()
            assert len(raw) == size, len(raw)
            return raw

        self.assertError(d.post("/webhook", padded(5000)), 413, "payload_too_large")
        st, _, doc = d.post("/webhook", padded(4000))
        self.assertStatus(st, 202, d, doc)
        self.assertEqual(doc["jobs"][0]["state"], "queued")
        self.assertEqual(len(d.jobs()), 1)


class MetricsTest(RecoverydTestCase):

    def test_metrics_exposition(self):
        d = self.daemon(simple())
        job_id = d.webhook("firing-single.json")["jobs"][0]["id"]
        self.assertEqual(d.wait_job(job_id)["state"], "succeeded")
        # the journal shows the end a moment before the books count it
        d.wait_metric("recoveryd_jobs_total", {"playbook": "p", "outcome": "succeeded"}, lambda v: v >= 1)

        st, hdrs, text = d.get("/metrics", token=None)
        self.assertEqual(st, 200)
        ctype = hdrs.get("Content-Type", "")
        self.assertIn("text/plain", ctype)
        self.assertIn("0.0.4", ctype)
        self.assertIsInstance(text, str)

        mv = d.metric_value
        self.assertEqual(mv(text, "recoveryd_jobs_total", {"playbook": "p", "outcome": "succeeded"}), 1)
        self.assertEqual(mv(text, "recoveryd_job_attempts_total", {"playbook": "p", "result": "succeeded"}), 1)
        self.assertEqual(mv(text, "recoveryd_alerts_received_total", {"status": "firing"}), 1)
        self.assertEqual(mv(text, "recoveryd_webhook_requests_total", {"path": "/webhook", "code": "202"}), 1)
        self.assertEqual(mv(text, "recoveryd_admissions_total", {"playbook": "p", "decision": "queued"}), 1)
        self.assertEqual(mv(text, "recoveryd_job_duration_seconds_count", {"playbook": "p"}), 1)
        self.assertEqual(mv(text, "recoveryd_job_duration_seconds_bucket", {"playbook": "p", "le": "+Inf"}), 1)
        self.assertIsNotNone(mv(text, "recoveryd_job_duration_seconds_sum", {"playbook": "p"}))
        self.assertEqual(mv(text, "recoveryd_jobs_in_flight"), 0)
        self.assertEqual(mv(text, "recoveryd_queue_depth"), 0)
        self.assertEqual(mv(text, "recoveryd_build_info"), 1)
        self.assertRegex(text, r'recoveryd_build_info\{[^}]*version="[^"]+"')
        for family, kind in (("recoveryd_jobs_total", "counter"), ("recoveryd_job_duration_seconds", "histogram"),
                             ("recoveryd_jobs_in_flight", "gauge"), ("recoveryd_admissions_total", "counter")):
            self.assertRegex(text, r"(?m)^# TYPE %s %s$" % (family, kind))
        self.assertRegex(text, r"(?m)^process_[a-z_]+ ", "standard process_* metrics")

        if not os.path.exists(PROMTOOL):
            self.skipTest("promtool not installed; the rest of the exposition was checked")
        p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 0, "promtool check metrics:\n%s%s" % (p.stdout, p.stderr))


if __name__ == "__main__":
    unittest.main()

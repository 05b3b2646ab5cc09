"""Every fake in tests/fakes runs as a process (tests/fakes/fakeserver.py):
--port 0 binds a free port on 127.0.0.1, one ready line
`listening on http://127.0.0.1:PORT` comes first, the fake answers, and
SIGTERM ends it with exit status 0 and nothing on stderr."""

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

FAKES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes")
READY_TIMEOUT = 10.0
EXIT_TIMEOUT = 10.0

# fake -> (extra flags, method, path, headers, body or None, expected status, check(body bytes))
CASES = {
    "grafana_fake.py": (["--token", "t0k"], "GET", "/api/annotations", {"Authorization": "Bearer t0k"}, None, 200,
                        lambda b: json.loads(b) == []),
    "k8s_fake.py": ([], "GET", "/api/v1/namespaces/default/pods", {}, None, 200,
                    lambda b: json.loads(b)["kind"] == "PodList"),
    "kong_admin.py": ([], "GET", "/status", {}, None, 200,
                      lambda b: json.loads(b)["database"]["reachable"] is True),
    "pagerduty_fake.py": ([], "POST", "/v2/enqueue", {},
                          {"routing_key": "r" * 32, "event_action": "trigger",
                           "payload": {"summary": "s", "source": "test", "severity": "error"}},
                          202, lambda b: json.loads(b)["status"] == "success"),
    "prom.py": ([], "GET", "/metrics", {}, None, 200, lambda b: b == b"\n"),
    "recorder.py": ([], "GET", "/anything", {}, None, 200, lambda b: json.loads(b) == {"ok": True}),
    "schema_registry.py": (["--seed"], "GET", "/subjects", {}, None, 200,
                           lambda b: json.loads(b) == ["orders-value"]),
    "settings_registry.py": ([], "GET", "/api/settings/health", {}, None, 200,
                             lambda b: json.loads(b) == {"status": "UP"}),
    "slack_fake.py": (["--path", "/services/T1/B1/x"], "POST", "/services/T1/B1/x", {}, {"text": "hi"}, 200,
                      lambda b: b == b"ok"),
}


def free_port():
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


class Standalone:
    """One fake as a child process; the ready line is read with a deadline."""

    def __init__(self, script, args):
        self.proc = subprocess.Popen([sys.executable, os.path.join(FAKES_DIR, script)] + list(args),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def ready_line(self):
        deadline = time.monotonic() + READY_TIMEOUT
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise AssertionError("no ready line within %.0fs (exit %s): stdout %r, stderr %r"
                                     % (READY_TIMEOUT, self.proc.poll(), buf, self._stderr()))
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    continue
                buf += chunk
        return buf.split(b"\n", 1)[0].decode()

    def terminate(self):
        """SIGTERM; the exit status and stderr."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("still running %.0fs after SIGTERM" % EXIT_TIMEOUT)
        return rc, self._stderr()

    def _stderr(self):
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stderr.read().decode(errors="replace")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def request(url, method, body, headers=None):
    data = None if body is None else json.dumps(body).encode()
    headers = dict(headers or {})
    if data:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class FakesStandaloneTest(unittest.TestCase):
    def run_fake(self, script, extra, port_args=("--port", "0")):
        fake = Standalone(script, list(port_args) + list(extra))
        self.addCleanup(fake.close)
        line = fake.ready_line()
        prefix = "listening on http://127.0.0.1:"
        self.assertTrue(line.startswith(prefix), "ready line of %s: %r" % (script, line))
        port = int(line[len(prefix):])
        self.assertGreater(port, 0)
        return fake, "http://127.0.0.1:%d" % port

    def test_every_fake_is_covered(self):
        fakes = sorted(f for f in os.listdir(FAKES_DIR) if f.endswith(".py") and f != "fakeserver.py")
        self.assertEqual([f for f in fakes if f not in CASES], [], "every fake needs a case in CASES of this file")
        for f in fakes:
            with open(os.path.join(FAKES_DIR, f)) as src:
                self.assertIn("fakeserver.serve(", src.read(), "%s does not run through fakeserver.serve" % f)

    def test_each_fake_starts_answers_and_exits_0_on_sigterm(self):
        for script, (extra, method, path, headers, body, status, check) in sorted(CASES.items()):
            with self.subTest(fake=script):
                if not os.path.exists(os.path.join(FAKES_DIR, script)):
                    self.skipTest("%s is not in this checkout" % script)
                fake, url = self.run_fake(script, extra)
                got, data = request(url + path, method, body, headers)
                self.assertEqual(got, status, "%s %s%s: %r" % (method, url, path, data[:300]))
                self.assertTrue(check(data), "%s %s: unexpected body %r" % (method, path, data[:300]))
                rc, err = fake.terminate()
                self.assertEqual(rc, 0, "%s exited %s after SIGTERM; stderr:\n%s" % (script, rc, err))
                self.assertEqual(err, "", "%s wrote to stderr" % script)

    def test_given_port_and_host_are_used(self):
        port = free_port()
        fake, url = self.run_fake("recorder.py", [], ("--port", str(port), "--host", "127.0.0.1"))
        self.assertEqual(url, "http://127.0.0.1:%d" % port)
        self.assertEqual(request(url + "/x", "GET", None)[0], 200)
        self.assertEqual(fake.terminate()[0], 0)

    def test_sigint_also_exits_0(self):
        fake, url = self.run_fake("kong_admin.py", [])
        fake.proc.send_signal(signal.SIGINT)
        self.assertEqual(fake.proc.wait(EXIT_TIMEOUT), 0)

    def test_prom_api_answers_from_its_file(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"up": {"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {"job": "x"}, "value": [1, "1"]}]}}}, f)
        self.addCleanup(os.unlink, f.name)
        fake, url = self.run_fake("prom.py", ["api", "--answers", f.name])
        status, data = request(url + "/api/v1/query?query=up", "GET", None)
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(data)["data"]["result"][0]["metric"], {"job": "x"})
        status, data = request(url + "/api/v1/query?query=other", "GET", None)
        self.assertEqual(json.loads(data)["data"]["result"], [])
        self.assertEqual(fake.terminate()[0], 0)


if __name__ == "__main__":
    unittest.main()

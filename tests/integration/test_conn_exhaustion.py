"""Connection exhaustion: slow (trickling) and idle connections from a few
addresses must not lock Alertmanager out, and a request that is not complete
within --request-timeout is closed."""

import errno
import json
import resource
import select
import socket
import time
import unittest

from harness import RecoverydTestCase, fixture_bytes, playbook

SETTINGS = 'alertname="SettingsSyncJobFailure"'

TRICKLE_ADDRS = ["127.0.0.%d" % i for i in range(2, 7)]        # 5 addresses
IDLE_ADDRS = ["127.0.1.%d" % i for i in range(1, 33)]          # 32 addresses
N_TRICKLE = 300
N_IDLE = 2000
REQUEST_TIMEOUT = 3
CONNECT_BUDGET = 20.0     # seconds to open every attack connection


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = N_TRICKLE + N_IDLE + 512
    if hard != resource.RLIM_INFINITY and hard < want:
        raise unittest.SkipTest("RLIMIT_NOFILE hard limit %d is below %d" % (hard, want))
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else want, hard))


def open_from(addrs, n, port, deadline):
    """n non-blocking connections spread over addrs; waits until each is
    established (bounded by deadline)."""
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.bind((addrs[i % len(addrs)], 0))
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        socks.append(s)
    pending = {s.fileno(): s for s in socks}
    poller = select.poll()   # select() cannot take descriptors above 1023
    for fd in pending:
        poller.register(fd, select.POLLOUT)
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(500):
            s = pending.pop(fd)
            poller.unregister(fd)
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise AssertionError("attack connection failed: %s" % errno.errorcode.get(err, err))
    if pending:
        raise AssertionError("%d attack connections not established in time" % len(pending))
    return socks


def closed_by_peer(s):
    """True when the server closed s (EOF or reset); False while it is open."""
    try:
        data = s.recv(4096)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return data == b""


def timed_request(port, method, path, body=None, token=None, timeout=5.0):
    """One request from 127.0.0.1; returns (seconds, status, json)."""
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        hdrs = ["%s %s HTTP/1.1" % (method, path), "Host: recoveryd", "Connection: close"]
        if token:
            hdrs.append("Authorization: Bearer " + token)
        if body is not None:
            hdrs += ["Content-Type: application/json", "Content-Length: %d" % len(body)]
        s.sendall(("\r\n".join(hdrs) + "\r\n\r\n").encode() + (body or b""))
        raw = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
    finally:
        s.close()
    took = time.monotonic() - t0
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return took, status, json.loads(payload.decode() or "null")


class ConnectionExhaustionTest(RecoverydTestCase):

    def test_trickle_and_idle_flood_do_not_lock_out_alertmanager(self):
        raise_nofile()
        d = self.daemon({"p": playbook("p", "return", match=[SETTINGS])},
                        extra_args=["--request-timeout", str(REQUEST_TIMEOUT)])
        socks = []
        try:
            t_start = time.monotonic()
            deadline = t_start + CONNECT_BUDGET
            trickle = open_from(TRICKLE_ADDRS, N_TRICKLE, d.port, deadline)
            socks += trickle
            for s in trickle:
                s.send(b"POST /webhook HTTP/1.1\r\n")
            t_trickle = time.monotonic()
            idle = open_from(IDLE_ADDRS, N_IDLE, d.port, deadline)
            socks += idle
            # Every attack connection is still open (the server took them all).
            time.sleep(0.3)
            self.assertFalse([s for s in socks if closed_by_peer(s)][:1],
                             "attack connections should be held until their deadline")

            # Alertmanager and the kubelet, from another address, within 1 s.
            took, st, doc = timed_request(d.port, "POST", "/webhook", fixture_bytes("firing-single.json"),
                                          d.tokens["webhook"])
            self.assertEqual(st, 202, doc)
            self.assertLess(took, 1.0)
            took, st, doc = timed_request(d.port, "GET", "/healthz")
            self.assertEqual((st, doc), (200, {"status": "ok"}))
            self.assertLess(took, 1.0)

            # The trickling connections keep sending a byte now and then, which
            # an idle timeout would never stop; the request deadline does.
            open_trickle = set(trickle)
            limit = t_trickle + REQUEST_TIMEOUT + 5.0
            while open_trickle and time.monotonic() < limit:
                for s in list(open_trickle):
                    if closed_by_peer(s):
                        open_trickle.discard(s)
                        continue
                    try:
                        s.send(b"X")
                    except OSError:
                        open_trickle.discard(s)
                time.sleep(0.5)
            elapsed = time.monotonic() - t_trickle
            self.assertEqual(len(open_trickle), 0,
                             "%d trickling connections still open %.1fs after their request began"
                             % (len(open_trickle), elapsed))
            self.assertGreaterEqual(elapsed, REQUEST_TIMEOUT - 0.5, "closed before the deadline")
            # Idle connections had their deadline too.
            limit = time.monotonic() + 5.0
            still = [s for s in idle if not closed_by_peer(s)]
            while still and time.monotonic() < limit:
                time.sleep(0.2)
                still = [s for s in still if not closed_by_peer(s)]
            self.assertEqual(len(still), 0, "idle connections outlived the request deadline")

            text = d.metrics()
            closed = d.metric_value(text, "recoveryd_http_connections_dropped_total",
                                    {"reason": "request_timeout"})
            self.assertGreaterEqual(closed, N_TRICKLE + N_IDLE)
            self.assertTrue(d.wait_log(lambda r: "request deadline" in r.get("msg", ""), timeout=5))
            # Still serving.
            took, st, _ = timed_request(d.port, "GET", "/healthz")
            self.assertEqual(st, 200)
        finally:
            for s in socks:
                s.close()

    def test_connection_limit_is_clamped_to_the_fd_limit(self):
        d = self.daemon({"p": playbook("p", "return", match=[SETTINGS])},
                        extra_args=["--conn-limit", "100000000"])
        rec = d.wait_log(lambda r: "connection limit" in r.get("msg", ""), timeout=5)
        self.assertLess(int(rec["conn_limit"]), 100000000, rec)
        st, _, _ = d.get("/healthz", token=None)
        self.assertEqual(st, 200)


if __name__ == "__main__":
    unittest.main()

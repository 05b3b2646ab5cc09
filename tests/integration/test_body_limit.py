"""Bodies over --body-max: the client reads a 413 with the JSON error, whether
it announced the length (without Expect: 100-continue) or sent it chunked."""

import json
import select
import socket
import time
import unittest

from harness import RecoverydTestCase, playbook

SETTINGS = 'alertname="SettingsSyncJobFailure"'
MiB = 1 << 20
STEP = 64 * 1024


def send_and_read(port, token, head, body_iter, timeout=20.0, read_early=True):
    """Send head, then the body pieces while reading whatever the server
    answers (a server that stops reading must not deadlock us). Returns the
    raw bytes the server sent, and whether the connection was reset before
    we could read them all. read_early=False: a simple client that reads
    only once it has sent everything (or the server stopped taking it)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setblocking(False)
    deadline = time.monotonic() + timeout
    out = bytearray(head)
    raw = bytearray()
    reset = False
    eof = False
    body = iter(body_iter)
    sending = True
    try:
        while time.monotonic() < deadline and not eof:
            if sending and not out:
                piece = next(body, None)
                if piece is None:
                    sending = False
                else:
                    out += piece
            r, w, _ = select.select([s] if read_early or not sending else [],
                                    [s] if sending and out else [], [], 0.5)
            if r:
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    reset = True
                    break
                if not chunk:
                    eof = True
                raw += chunk
                # Stop uploading once a whole answer is in: a real client does too.
                if b"\r\n\r\n" in raw:
                    hdr, _, rest = bytes(raw).partition(b"\r\n\r\n")
                    for line in hdr.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            if len(rest) >= int(line.split(b":")[1]):
                                return bytes(raw), reset
            if w:
                try:
                    n = s.send(out)
                    del out[:n]
                except BlockingIOError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    sending = False
                    out.clear()
    finally:
        s.close()
    return bytes(raw), reset


def parse(raw):
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else None
    try:
        doc = json.loads(payload.decode())
    except ValueError:
        doc = None
    return status, doc


class OversizedBodyTest(RecoverydTestCase):

    def head(self, d, extra):
        return ("POST /webhook HTTP/1.1\r\nHost: recoveryd\r\nAuthorization: Bearer %s\r\n"
                "Content-Type: application/json\r\n%s\r\n" % (d.tokens["webhook"], extra)).encode()

    def assert413(self, raw, reset, what):
        status, doc = parse(raw)
        self.assertEqual(status, 413, "%s: got %r (reset=%s)" % (what, raw[:200], reset))
        self.assertEqual(doc["error"], "payload_too_large", doc)
        self.assertIn("message", doc)

    def test_content_length_over_cap_without_expect(self):
        d = self.daemon({"p": playbook("p", "return", match=[SETTINGS])})
        size = 20 * MiB
        pieces = (b" " * STEP for _ in range(size // STEP))
        raw, reset = send_and_read(d.port, None, self.head(d, "Content-Length: %d\r\n" % size), pieces)
        self.assert413(raw, reset, "Content-Length 20 MiB")
        # A client that reads only after sending the whole body gets it too.
        pieces = (b" " * STEP for _ in range(size // STEP))
        raw, reset = send_and_read(d.port, None, self.head(d, "Content-Length: %d\r\n" % size), pieces,
                                   read_early=False)
        self.assert413(raw, reset, "Content-Length 20 MiB, read after sending")
        self.assertEqual(d.jobs(), [])

    def test_chunked_body_of_20_mib(self):
        d = self.daemon({"p": playbook("p", "return", match=[SETTINGS])})
        size = 20 * MiB

        def chunks():
            for _ in range(size // STEP):
                yield b"%x\r\n%s\r\n" % (STEP, b" " * STEP)
            yield b"0\r\n\r\n"

        raw, reset = send_and_read(d.port, None, self.head(d, "Transfer-Encoding: chunked\r\n"), chunks())
        self.assert413(raw, reset, "chunked 20 MiB")
        self.assertEqual(d.jobs(), [])
        st, _, _ = d.get("/healthz", token=None)
        self.assertEqual(st, 200)


if __name__ == "__main__":
    unittest.main()

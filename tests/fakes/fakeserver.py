"""The lifecycle every fake in tests/fakes shares. Python 3 standard library only.

In-process (what the tests use): a fake subclasses FakeServer, names its
handler class (and a server class when it needs another one), calls
_fake_init(host, port) in __init__, and gets start(), stop(), `with`, .port,
.address and .url. Handlers reach the fake as self.server.fake.

    fake = SomeFake().start()         # 127.0.0.1, a free port
    ... fake.url ...                  # http://127.0.0.1:PORT
    fake.stop()

As a process: every fake's main() builds its options on parser() and ends
with serve(fake):

    python3 tests/fakes/<fake>.py --port 0 [--host 127.0.0.1] [fake's own flags]

binds, prints one ready line `listening on http://HOST:PORT` (flushed), then
one JSON line per request for the fakes that print them, serves until SIGTERM
or SIGINT and exits 0."""

import argparse
import json
import signal
import sys
import threading
import time
from http.server import ThreadingHTTPServer

READY_PREFIX = "listening on "
_out = threading.Lock()   # requests arrive on several threads: lines are written whole


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128   # bursts of parallel connections from the daemon's tests


class FakeServer:
    server_class = Server
    handler_class = None    # a BaseHTTPRequestHandler subclass
    thread_name = "fake"

    def _fake_init(self, host="127.0.0.1", port=0):
        self._host, self._port = host, port
        self._server = None
        self._thread = None

    def start(self):
        if self._server is not None:
            return self
        self._server = self.server_class((self._host, self._port), self.handler_class)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        srv, self._server = self._server, None
        if srv is None:
            return
        srv.shutdown()
        srv.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def wait_for(self, predicate, timeout=5.0):
        """Wait until predicate(snapshot of the requests) is truthy and return
        its value; raise TimeoutError naming the last requests after timeout.
        For fakes that keep self._requests under the condition self._cond."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate(list(self._requests))
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    got = "\n  ".join(repr(r) for r in self._requests[-20:]) or "(none)"
                    raise TimeoutError("%s: condition not met within %.1fs; last requests:\n  %s"
                                       % (self.thread_name, timeout, got))
                self._cond.wait(min(left, 0.2))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        if self._server is None:
            raise RuntimeError("%s not started" % self.thread_name)
        return self._server.server_address[1]

    @property
    def address(self):
        """host:port, e.g. 127.0.0.1:41234 (a Prometheus scrape target)."""
        return "%s:%d" % (self._host, self.port)

    @property
    def url(self):
        """Base URL without a trailing slash, e.g. http://127.0.0.1:41234."""
        return "http://" + self.address


def parser(description):
    """An ArgumentParser with the flags every fake takes; add the fake's own."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--port", type=int, default=0, help="port (0 = pick a free one)")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    return ap


def json_printer():
    """A callable(request) printing request.as_dict() as one JSON line."""
    def show(req):
        _write(json.dumps(req.as_dict()))
    return show


def _write(line):
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def serve(fake):
    """Start fake, print the ready line, serve until SIGTERM or SIGINT, stop
    it and return 0 (the exit status)."""
    stop = threading.Event()
    # installed before the ready line: a signal right after it must still stop cleanly
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fake.start()
    _write(READY_PREFIX + fake.url)
    while not stop.wait(0.2):
        pass
    fake.stop()
    return 0

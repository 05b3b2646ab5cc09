"""Lifecycle shared by the loopback fakes: a ThreadingHTTPServer on
127.0.0.1 (port 0 = any free port) served from a daemon thread. The server's
`fake` attribute points back at the fake, so handlers reach its state.

A fake subclasses LoopbackService, names its server and handler classes,
calls _loopback_init(host, port) in __init__, and gets start(), stop(),
`with`, .port and .url."""

import threading


class LoopbackService:
    server_class = None     # a ThreadingHTTPServer subclass
    handler_class = None    # its BaseHTTPRequestHandler
    thread_name = "fake"

    def _loopback_init(self, host="127.0.0.1", port=0):
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
    def url(self):
        """Base URL, e.g. http://127.0.0.1:41234."""
        return "http://%s:%d" % (self._host, self.port)

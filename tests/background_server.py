"""A local HTTP server in a background thread: the shell of the test stand-ins for judge and reward servers."""

import threading
from http.server import ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops concurrent connects, and each dropped SYN costs the client a
    # one-second retransmit: far from a real server (uvicorn: 2048).
    request_queue_size = 1024


class BackgroundServer:
    """Serve ``handler_class`` on 127.0.0.1 (a free port) while used as a context manager."""

    def __init__(self, handler_class):
        self._server = _Server(("127.0.0.1", 0), handler_class)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

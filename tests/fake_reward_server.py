"""A local stand-in for a reward server that misbehaves on demand, for the RemoteReward tests (127.0.0.1).

The first path segment picks the behaviour, so one server serves every case:
``http://127.0.0.1:PORT/<mode>`` (the client appends ``/score`` or ``/health``) with ``mode`` one of

- ``good``: ``{"scores": [score, ...]}``, one per image; ``/health`` lists ``rewards``;
- ``slow``: like ``good`` after ``slow_seconds`` (longer than a client's timeout);
- ``error``: HTTP 500;
- ``flaky``: HTTP 500 for the first ``flaky_failures`` hits, then like ``good``;
- ``reject``: HTTP 400 ``{"error": REJECT_MESSAGE}``;
- ``garbage``: HTTP 200 with a body that is not JSON;
- ``short``: HTTP 200 with one score fewer than images;
- ``drop``: reads the request, then closes the connection without a word;
- ``trickle``: sends its headers, then one byte every 50 ms for ``trickle_seconds``;
- ``endless``: HTTP 200 without Content-Length, then ``endless_bytes`` of filler.

``hits[mode]`` counts requests (``/health`` included).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler

from background_server import BackgroundServer

REJECT_MESSAGE = "unknown reward 'nope'; this server hosts ['fake']"




class FakeRewardServer(BackgroundServer):
    """Serve fake rewards on 127.0.0.1 in a background thread; use as a context manager."""

    def __init__(self, score: float = 0.5, rewards=("fake",), slow_seconds: float = 1.5, flaky_failures: int = 1,
                 trickle_seconds: float = 3.0, endless_bytes: int = 8 << 20):
        self.score, self.rewards, self.slow_seconds = score, list(rewards), slow_seconds
        self.flaky_failures, self.trickle_seconds, self.endless_bytes = flaky_failures, trickle_seconds, endless_bytes
        self.hits: Counter = Counter()
        self._lock = threading.Lock()
        super().__init__(self._handler_class())

    def url(self, mode: str = "good") -> str:
        """The ``url`` to give :class:`~gotr1.rewards.remote.RemoteReward` for ``mode``."""
        return f"http://127.0.0.1:{self.port}/{mode}"

    def _trickle(self):
        """One byte every 50 ms for ``trickle_seconds``: each read completes, the reply never does."""
        end = time.monotonic() + self.trickle_seconds
        while time.monotonic() < end:
            yield b" "
            time.sleep(0.05)

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                self._handle(b"")

            def do_POST(self):
                self._handle(self.rfile.read(int(self.headers.get("Content-Length", 0))))

            def _handle(self, body: bytes):
                mode = self.path.strip("/").split("/")[0]
                with server._lock:
                    server.hits[mode] += 1
                    hit = server.hits[mode]
                try:
                    self._answer(mode, hit, body)
                except OSError:
                    pass  # the client gave up (its timeout); nothing to answer

            def _answer(self, mode: str, hit: int, body: bytes):
                if mode == "error" or (mode == "flaky" and hit <= server.flaky_failures):
                    return self._reply(500, [b'{"error": "CUDA out of memory"}'])
                if mode == "reject":
                    return self._reply(400, [json.dumps({"error": REJECT_MESSAGE}).encode()])
                if mode == "garbage":
                    return self._reply(200, [b"<html>bad gateway</html>"])
                if mode == "drop":
                    return  # the connection closes without a status line
                if mode == "trickle":
                    return self._reply(200, server._trickle(), length=100_000)
                if mode == "endless":
                    block = b" " * (1 << 16)
                    return self._reply(200, (block for _ in range(server.endless_bytes // len(block))), length=None)
                if mode == "slow":
                    time.sleep(server.slow_seconds)
                if self.path.rstrip("/").endswith("/health"):
                    return self._reply(200, [json.dumps({"rewards": server.rewards}).encode()])
                n = len(json.loads(body)["images"])
                scores = [server.score] * (n - 1 if mode == "short" else n)
                self._reply(200, [json.dumps({"scores": scores}).encode()])

            def _reply(self, status: int, chunks, length: int | None = -1):
                """Send ``chunks`` as they come; Content-Length is their total (-1), ``length``, or absent (None)."""
                if length == -1:
                    chunks = [b"".join(chunks)]
                    length = len(chunks[0])
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if length is not None:
                    self.send_header("Content-Length", str(length))
                self.end_headers()
                for chunk in chunks:
                    self.wfile.write(chunk)
                    self.wfile.flush()

        return Handler

"""A local stand-in for an OpenAI-compatible judge server, for tests and benchmarks (127.0.0.1, any port).

The first path segment picks the behaviour, so one server serves every case:
``http://127.0.0.1:PORT/<mode>/v1`` with ``mode`` one of

- ``good``: answers like Qwen2.5-VL would: a grounding box for "Locate the ..." requests,
  ``{"score": score}`` otherwise (after ``latency`` seconds);
- ``slow``: answers well after ``slow_seconds`` (longer than a client's timeout);
- ``error``: HTTP 500;
- ``flaky``: HTTP 500 for the first ``flaky_failures`` hits, then like ``good``;
- ``garbage``: HTTP 200 with a reply text that holds no score or box;
- ``notjson``: HTTP 200 with a body that is not JSON;
- ``trickle``: sends its headers, then one byte at a time, each within a client's socket timeout (for the
  first ``trickle_hits`` requests; after those it answers like ``good``);
- ``endless``: HTTP 200 without Content-Length, then ``endless_bytes`` of filler as fast as it can.

``hits[mode]`` counts requests; ``payloads`` keeps the decoded request bodies of ``good`` requests.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler

from background_server import BackgroundServer


class FakeOpenAIServer(BackgroundServer):
    """Serve fake chat completions on 127.0.0.1 in a background thread; use as a context manager.

    Parameters
    ----------
    latency : float
        Seconds ``good`` (and recovered ``flaky``) requests wait before answering.
    score : int
        The score ``good`` answers with.
    box : tuple of 4 ints
        The grounding answer of ``good``, in the judge's resized pixels.
    slow_seconds, flaky_failures, trickle_seconds, trickle_hits, endless_bytes : float, int, float, int, int
        Knobs of the ``slow``, ``flaky``, ``trickle`` and ``endless`` modes.
    """

    def __init__(self, latency: float = 0.0, score: int = 7, box=(0, 0, 196, 196), slow_seconds: float = 1.5,
                 flaky_failures: int = 1, trickle_seconds: float = 3.0, trickle_hits: int | None = None,
                 endless_bytes: int = 64 << 20):
        self.latency, self.score, self.box = latency, score, tuple(box)
        self.slow_seconds, self.flaky_failures, self.trickle_seconds = slow_seconds, flaky_failures, trickle_seconds
        self.trickle_hits, self.endless_bytes = trickle_hits, endless_bytes
        self.hits: Counter = Counter()
        self.payloads: list[dict] = []
        self.headers: list[dict] = []
        self._lock = threading.Lock()
        super().__init__(self._handler_class())

    def url(self, mode: str = "good") -> str:
        """The ``base_url`` to give :class:`~gotr1.rewards.OpenAIJudge` for ``mode``."""
        return f"http://127.0.0.1:{self.port}/{mode}/v1"

    def reply_text(self, payload: dict) -> str:
        """What ``good`` answers to a request body."""
        text = " ".join(p.get("text", "") for m in payload["messages"] for p in m["content"] if p["type"] == "text")
        if "Locate the" in text:
            name = text.split("Locate the", 1)[1].split(",", 1)[0].strip()
            return json.dumps([{"bbox_2d": list(self.box), "label": name}])
        return f'```json\n{{"score": {self.score}}}\n```'

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                mode = self.path.strip("/").split("/")[0]
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with server._lock:
                    server.hits[mode] += 1
                    hit = server.hits[mode]
                try:
                    self._answer(mode, hit, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout); nothing to answer

            def _answer(self, mode: str, hit: int, body: bytes):
                if mode == "error" or (mode == "flaky" and hit <= server.flaky_failures):
                    return self._send(500, b'{"error": "overloaded"}')
                if mode == "notjson":
                    return self._send(200, b"<html>bad gateway</html>")
                if mode == "trickle" and (server.trickle_hits is None or hit <= server.trickle_hits):
                    return self._trickle()
                if mode == "endless":
                    return self._endless()
                payload = json.loads(body)
                if mode == "slow":
                    time.sleep(server.slow_seconds)
                elif server.latency:
                    time.sleep(server.latency)
                if mode in ("good", "trickle"):
                    with server._lock:
                        server.payloads.append(payload)
                        server.headers.append(dict(self.headers))
                text = "Lorem ipsum, the picture is nice." if mode == "garbage" else server.reply_text(payload)
                answer = {"id": "x", "object": "chat.completion",
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
                self._send(200, json.dumps(answer).encode())

            def _send(self, status: int, data: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _trickle(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                end = time.monotonic() + server.trickle_seconds
                while time.monotonic() < end:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.05)

            def _endless(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                block = b" " * (1 << 20)
                try:
                    for _ in range(server.endless_bytes // len(block)):
                        self.wfile.write(block)
                except OSError:  # the client hung up, as it should
                    pass
                self.close_connection = True

        return Handler

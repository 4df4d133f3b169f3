"""Image reward models on their own GPUs, behind a small HTTP server that several training nodes share.

Any :class:`~gotr1.metrics.metric.Metric` (CLIPScore, BLIP-VQA, GenEval, ...) can be served; the client,
:class:`~gotr1.rewards.remote.RemoteReward`, is itself a metric, so a trainer uses a remote model exactly
as a local one. Standard library only (``http.server``), JSON over HTTP/1.0, one request per connection.

Protocol
--------
``GET /health``
    200 ``{"rewards": [name, ...]}``: the rewards this server hosts.
``POST /score``
    Body ``{"reward": name, "prompts": [str, ...], "images": [base64 PNG, ...]}`` (one prompt per image;
    any format PIL reads is accepted), at most ``max_request_bytes`` (:data:`MAX_REQUEST_BYTES` by default),
    images of at most :data:`~gotr1.rewards.score_requests.MAX_IMAGE_PIXELS` pixels each, and at most
    ``max_pixels`` decoded pixels in all.
    200 ``{"scores": [float | null, ...]}``: one score in [0, 1] per image, in order, ``null`` where the
    model cannot score the image (NaN).

With an API key (``api_key``; ``gotr1 serve-rewards --api-key`` or ``$GOTR1_REWARD_API_KEY``) every request
must carry ``Authorization: Bearer <key>`` (compared in constant time), as vLLM's server asks; without it the
answer is 401. A server that listens beyond the loopback interface refuses to start without a key unless
``insecure`` is set: anyone who reaches the port could otherwise use the GPUs behind it. The key is never
logged.

Errors answer ``{"error": "what went wrong"}``: 400 for a bad request (unknown reward, malformed JSON,
prompts and images that do not pair up, an undecodable or oversized image, a body over the limit: read and
dropped, so a client still sending it gets this answer rather than a reset), 401 without the API key, 404
for another path, 413 for images that decode to more than ``max_pixels`` (the budget named), 500 when the
model raises or returns scores that break the contract, 503 while shutting down. The server keeps running
after any of them.

Memory: ``max_pixels`` (:data:`~gotr1.rewards.score_requests.MAX_PIXELS` by default, about 200 MB of decoded
RGB, sized for one GPU worker) bounds both one request's decoded images and the decoded pixels held at once
across every request and model. A request keeps its images encoded (only their headers are read, for the
sizes) until its model's worker takes a batch: the worker reserves the batch's pixels from the shared budget
(waiting while other batches hold it), decodes, scores, and lets them go.

Batching: one worker thread per reward drains that reward's queue, joining pending requests up to
``max_batch`` images and ``max_pixels`` pixels (waiting at most ``max_wait`` seconds for more) into one
``score`` call, and hands each request its slice; a larger request is scored in slices. A model is only ever
called from its worker thread (in-process models are not re-entrant). When a joined batch raises, its
requests are scored again one by one, so one bad request fails alone.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from gotr1.rewards.score_requests import (
    MAX_PIXELS,
    BadRequest,
    EncodedImage,
    PixelBudget,
    parse_score_request,
)

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 256 << 20  # a GRPO step's 128 images of 384 px as PNG are ~60 MiB of base64
_STOP = object()


# ---------------------------------------------------------------------------------------------
# One worker per model
# ---------------------------------------------------------------------------------------------


def _checked_scores(scores, n: int) -> np.ndarray:
    """A model's scores as float64 ``[n]`` in [0, 1] or NaN; ValueError if it broke that contract."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (n,):
        raise ValueError(f"returned scores of shape {scores.shape} for {n} images")
    if np.any((scores < 0) | (scores > 1)):
        raise ValueError(f"returned scores outside [0, 1]: {scores[(scores < 0) | (scores > 1)][:4].tolist()}")
    return scores


@dataclass
class _Job:
    """One ``/score`` request: its images are scored in one or more pieces; ``done`` is set after the last."""

    prompts: list[str]
    images: list[EncodedImage]
    pieces: int
    scores: np.ndarray = field(init=False)
    status: int = 200
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self.scores = np.full(len(self.images), np.nan)


@dataclass
class _Piece:
    job: _Job
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def pixels(self) -> int:
        return sum(image.pixels for image in self.job.images[self.start:self.stop])

    def decode(self) -> list[np.ndarray] | None:
        """This piece's images decoded, or None after answering its request 400 (an image broken past its header)."""
        try:
            return [image.decode() for image in self.job.images[self.start:self.stop]]
        except BadRequest as err:
            _ModelWorker._finish(self, error=str(err), status=err.status)
            return None


class _ModelWorker:
    """The only thread that calls one model: drains its queue in batches of up to ``max_batch`` images whose
    pixels fit ``budget`` (decoded only while the batch holds them)."""

    def __init__(self, name: str, model, max_batch: int, max_wait: float, budget: PixelBudget):
        self.name, self.model, self.max_batch, self.max_wait, self.budget = name, model, max_batch, max_wait, budget
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"reward-{name}", daemon=True)
        self._open = False
        self._lock = threading.Lock()  # no piece is queued after the stop mark, so none waits forever

    def start(self) -> None:
        with self._lock:
            self._open = True
            self._thread.start()

    def stop(self) -> None:
        """Score what is queued, then end the thread; later requests answer 503."""
        with self._lock:
            if not self._open:
                return
            self._open = False
            self._queue.put(_STOP)
        self._thread.join()

    def submit(self, prompts: list[str], images: list[EncodedImage]) -> _Job:
        """Queue a request (at most ``budget.limit`` pixels) and wait for it; the returned job holds ``scores``,
        or ``status`` and ``error``."""
        pieces, start, pixels = [], 0, 0
        for index, image in enumerate(images):  # pieces of at most max_batch images and the budget's pixels
            if index - start == self.max_batch or pixels + image.pixels > self.budget.limit:
                pieces.append((start, index))
                start, pixels = index, 0
            pixels += image.pixels
        if images:
            pieces.append((start, len(images)))
        job = _Job(prompts, images, pieces=len(pieces))
        with self._lock:
            if not self._open:
                job.status, job.error = 503, "the server is shutting down"
                return job
            for start, stop in pieces:
                self._queue.put(_Piece(job, start, stop))
        if job.pieces:
            job.done.wait()
        return job

    def _run(self) -> None:
        carry = None
        while True:
            first, carry = (carry if carry is not None else self._queue.get()), None
            if first is _STOP:
                return
            batch, size, pixels, end = [first], len(first), first.pixels, time.monotonic() + self.max_wait
            while size < self.max_batch:
                try:
                    piece = self._queue.get(timeout=max(0.0, end - time.monotonic()))
                except queue.Empty:
                    break
                if piece is _STOP or size + len(piece) > self.max_batch or pixels + piece.pixels > self.budget.limit:
                    carry = piece
                    break
                batch.append(piece)
                size, pixels = size + len(piece), pixels + piece.pixels
            self._score(batch)

    def _score(self, batch: list[_Piece]) -> None:
        with self.budget.hold(sum(piece.pixels for piece in batch)):
            decoded = [(piece, piece.decode()) for piece in batch]
            batch = [piece for piece, images in decoded if images is not None]
            prompts = [p for piece in batch for p in piece.job.prompts[piece.start:piece.stop]]
            images = [image for _, piece_images in decoded if piece_images is not None for image in piece_images]
            del decoded
            if not batch:
                return
            try:
                scores = _checked_scores(self.model.score(prompts, images), len(images))
            except Exception as err:  # any model failure: a 500 for its requests, never a dead server
                if len(batch) == 1:
                    log.exception("reward %s: score() failed on %d images", self.name, len(images))
                    self._finish(batch[0], error=f"{type(err).__name__}: {err}")
                    return
                scores = None
            del images  # the pixels go before the budget lets the next batch decode
        if scores is None:  # find which request fails; the others still get their scores
            for piece in batch:
                self._score([piece])
            return
        offset = 0
        for piece in batch:
            self._finish(piece, scores=scores[offset:offset + len(piece)])
            offset += len(piece)

    @staticmethod
    def _finish(piece: _Piece, scores=None, error: str | None = None, status: int = 500) -> None:
        job = piece.job
        if error is None:
            job.scores[piece.start:piece.stop] = scores
        elif job.error is None:
            job.status, job.error = status, error
        job.pieces -= 1
        if job.pieces == 0:
            job.done.set()


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine alone (``localhost``, 127.0.0.0/8, ::1); a name is not trusted to be."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # many nodes connect at once; the default of 5 drops SYNs (1 s retransmits)

    def __init__(self, address, owner: "RewardServer"):
        self.owner = owner
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server_version = "gotr1-reward"
    timeout = 60  # seconds a client may stall mid-request before its thread is freed

    def log_message(self, format, *args):
        log.debug("%s %s", self.address_string(), format % args)

    def _authorized(self) -> bool:
        """Whether the request carries the server's API key (any request does when it has none)."""
        key = self.server.owner._api_key
        if key is None:
            return True
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())

    def _unauthorized(self):
        self._send(401, {"error": "this reward server needs its API key: send 'Authorization: Bearer <key>' "
                                  "(RemoteReward: api_key, or $GOTR1_REWARD_API_KEY)"},
                   {"WWW-Authenticate": "Bearer"})

    def do_GET(self):
        if not self._authorized():
            return self._unauthorized()
        if self.path.rstrip("/") == "/health":
            return self._send(200, {"rewards": sorted(self.server.owner.rewards)})
        self._send(404, {"error": f"no such path {self.path!r}; use GET /health or POST /score"})

    def do_POST(self):
        owner = self.server.owner
        if self.path.rstrip("/") != "/score":
            return self._send(404, {"error": f"no such path {self.path!r}; use POST /score"})
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if length < 0:
            return self._send(400, {"error": "a Content-Length header is required"})
        try:
            if not self._authorized():
                self._discard(min(length, owner.max_request_bytes))
                return self._unauthorized()
            if length > owner.max_request_bytes:
                self._discard(length)
                raise BadRequest(f"body of {length} bytes is over the limit of {owner.max_request_bytes}")
            reward, prompts, images = parse_score_request(self.rfile.read(length), owner.rewards, owner.max_pixels)
        except BadRequest as err:
            return self._send(err.status, {"error": str(err)})
        except OSError:
            return  # the client stalled past the handler's timeout, or hung up
        job = owner._workers[reward].submit(prompts, images)
        if job.error is not None:
            return self._send(job.status, {"error": f"reward {reward}: {job.error}"})
        self._send(200, {"scores": [None if math.isnan(s) else float(s) for s in job.scores]})

    def _discard(self, length: int):
        """Read and drop an oversized body, so the client (still sending it) gets the 400, not a reset."""
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                return
            length -= len(chunk)

    def _send(self, status: int, answer: dict, headers: dict | None = None):
        data = json.dumps(answer).encode()
        try:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up (its timeout); nothing to answer


class RewardServer:
    """Serve image reward models over HTTP, batching concurrent requests per model.

    Parameters
    ----------
    rewards : dict[str, Metric]
        Served name -> model with ``score(prompts, images) -> float64 [N]`` in [0, 1] (NaN: not scorable).
    host, port : str, int
        Where to listen; port 0 picks a free one (see :attr:`url`).
    max_batch : int
        Most images in one ``score`` call.
    max_wait : float
        Seconds a batch waits for more requests once its first has arrived.
    max_request_bytes : int
        Largest ``/score`` body accepted.
    max_pixels : int
        Decoded pixels one request may hold, and all requests together at once (see the module docstring).
    api_key : str, optional
        Answer only requests that carry ``Authorization: Bearer <api_key>`` (401 otherwise).
    insecure : bool
        Allow listening beyond the loopback interface without ``api_key``.

    Examples
    --------
    >>> with RewardServer({"clip": clip_score}) as server:           # doctest: +SKIP
    ...     reward = RemoteReward(server.url, "clip")
    """

    def __init__(self, rewards: dict, host: str = "127.0.0.1", port: int = 0, max_batch: int = 32,
                 max_wait: float = 0.01, max_request_bytes: int = MAX_REQUEST_BYTES, max_pixels: int = MAX_PIXELS,
                 api_key: str | None = None, insecure: bool = False):
        if not rewards:
            raise ValueError("RewardServer needs at least one reward")
        for name, model in rewards.items():
            if not callable(getattr(model, "score", None)):
                raise TypeError(f"rewards[{name!r}]: expected a Metric with score(prompts, images), "
                                f"got {type(model).__name__}")
        if max_batch < 1 or max_wait < 0 or max_request_bytes < 1 or max_pixels < 1:
            raise ValueError(f"RewardServer needs max_batch >= 1, max_wait >= 0, max_request_bytes >= 1, max_pixels "
                             f">= 1; got {max_batch}, {max_wait}, {max_request_bytes}, {max_pixels}")
        if not api_key and not insecure and not _is_loopback(host):
            raise ValueError(f"host={host!r} reaches beyond this machine, and without an API key anyone who reaches "
                             "the port could use the GPUs behind it: set --api-key (or $GOTR1_REWARD_API_KEY), or "
                             "pass --insecure on a network you trust")
        self.rewards = dict(rewards)
        self.max_request_bytes, self.max_pixels = max_request_bytes, max_pixels
        self._api_key = api_key or None
        self.budget = PixelBudget(max_pixels)
        self._workers = {name: _ModelWorker(name, model, max_batch, max_wait, self.budget)
                         for name, model in self.rewards.items()}
        self._http = _HTTPServer((host, port), self)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the server (the port it bound)."""
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    def describe(self) -> str:
        """One line for the log: the URL and each reward with its model."""
        models = ", ".join(f"{name} ({getattr(model, 'describe', lambda: type(model).__name__)()})"
                           for name, model in sorted(self.rewards.items()))
        access = "API key required" if self._api_key else "no API key"
        return f"reward server at {self.url}: {models} ({access}; up to {self.max_pixels} decoded pixels in flight)"

    def start(self) -> RewardServer:
        """Start the model workers and serve from a background thread."""
        for worker in self._workers.values():
            worker.start()
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="reward-server", daemon=True)  # close() waits one poll at most
        self._thread.start()
        log.info("%s", self.describe())
        return self

    def close(self) -> None:
        """Stop serving, let the workers score what is queued, release the port."""
        if self._thread is not None:
            self._http.shutdown()
            self._thread.join()
            self._thread = None
        self._http.server_close()
        for worker in self._workers.values():
            worker.stop()

    def serve_forever(self) -> None:
        """Print :meth:`describe` and serve until Ctrl-C or SIGTERM, for the command line.

        Both signals get a handler of their own: a process started in the background inherits SIGINT ignored,
        and a service manager stops with SIGTERM.
        """
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
        self.start()
        print(self.describe(), flush=True)
        try:
            while not stop.wait(0.5):
                pass
        finally:
            self.close()

    def __enter__(self) -> RewardServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

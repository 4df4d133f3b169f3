"""A reward model served by :class:`~gotr1.rewards.server.RewardServer`, used as if it were local.

:class:`RemoteReward` is a :class:`~gotr1.metrics.metric.Metric`: ``score(prompts, images)`` sends the
images as PNG to the server's ``POST /score`` and returns its float64 ``[N]`` (NaN: not scorable), so it
plugs in wherever a local model does, while the model runs on other GPUs. Standard library only.

Failure contract (as :class:`~gotr1.rewards.openai_judge.OpenAIJudge`): one ``score`` call is one request.
Each attempt is bounded by ``timeout`` seconds of wall time, connect to last byte (every socket operation
gets the time left), and its reply by ``max_reply_bytes``. Timeouts, refused or dropped connections, 5xx,
408 and 429 answers, and garbage or oversized replies are retried up to ``max_retries`` times with
exponential backoff; other 4xx answers (a wrong reward name, a bug on our side) are not. A request that
still fails scores 0 for each of its images (never NaN, never a good score) and is counted (``failures``,
``last_failures``, ``last_error``), so the trainer sees it. After ``breaker_after`` failed requests in a
row, calls fail fast without touching the network for ``breaker_cooldown`` seconds (a circuit breaker),
then one request probes the server again. One call therefore returns within :attr:`RemoteReward.max_seconds`,
``(max_retries + 1) * timeout + backoff * (2**max_retries - 1)``, plus the time to encode its images.

A server started with an API key answers 401 without it: ``api_key`` (else ``$GOTR1_REWARD_API_KEY``) is sent
as ``Authorization: Bearer <key>`` with every request, and :meth:`RemoteReward.check` says when it is missing or
refused. The key is never logged nor shown by ``describe``.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.parse

import numpy as np

from gotr1.metrics.metric import Metric, check_batch, rgb_images
from gotr1.rewards.openai_judge import png_data_url

log = logging.getLogger(__name__)

MAX_REPLY_BYTES = 1 << 20  # ~40,000 scores; a reply is a list of floats
API_KEY_ENV = "GOTR1_REWARD_API_KEY"
"""The environment variable holding the reward server's API key, read by the server command and the client."""
_RETRY_STATUS = {408, 429}


class RewardUnavailableError(RuntimeError):
    """The reward server cannot be reached or does not host the reward; training against it would learn nothing."""


class _Retryable(Exception):
    """A failure worth another attempt (timeout, dropped connection, overload, a garbled reply)."""


class _Rejected(Exception):
    """The server refused the request (4xx): asking again would get the same answer."""


def png_base64(image) -> str:
    """A PIL image or uint8 array ``[H, W, 3]`` as base64 PNG text, the protocol's image encoding."""
    return png_data_url(image).partition(",")[2]


def _error_text(body: bytes) -> str:
    """The server's ``{"error": ...}`` message, or the start of whatever it sent."""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")


def _hosted(body: bytes) -> list[str] | None:
    """The reward names of a ``/health`` reply, or None if it is not one."""
    try:
        hosted = json.loads(body)["rewards"]
    except (ValueError, KeyError, TypeError):
        return None
    return hosted if isinstance(hosted, list) and all(isinstance(name, str) for name in hosted) else None


def _parse_scores(body: bytes, n: int) -> np.ndarray:
    """``{"scores": [...]}`` as float64 ``[n]`` (null: NaN); :class:`_Retryable` for anything else."""
    try:
        scores = json.loads(body)["scores"]
    except (ValueError, KeyError, TypeError) as err:
        raise _Retryable(f"reply is not {{'scores': [...]}}: {body[:80]!r}") from err
    if not isinstance(scores, list) or len(scores) != n:
        raise _Retryable(f"reply holds {len(scores) if isinstance(scores, list) else 'no'} scores for {n} images")
    if not all(s is None or (isinstance(s, (int, float)) and not isinstance(s, bool) and 0 <= s <= 1) for s in scores):
        raise _Retryable(f"reply holds scores that are not numbers in [0, 1] or null: {scores[:4]}")
    return np.array([np.nan if s is None else s for s in scores], dtype=np.float64)


class RemoteReward(Metric):
    """Client of one reward on a :class:`~gotr1.rewards.server.RewardServer`; a Metric named ``reward``.

    Parameters
    ----------
    url : str
        The server root, e.g. ``http://10.0.0.5:8100`` (``/score`` and ``/health`` are appended).
    reward : str
        The served reward's name; also this metric's ``name``.
    timeout : float
        Seconds per attempt, connect to last byte. The server batches and queues: allow for that.
    max_retries : int
        Further attempts after the first, for retryable failures only.
    backoff : float
        Base delay in seconds; attempt ``k`` (from 0) waits ``backoff * 2**k`` times a jitter in [0.5, 1].
    max_reply_bytes : int
        Largest reply read; a longer one is cut off and counts as a failed attempt.
    breaker_after, breaker_cooldown :
        Failed requests in a row that open the circuit breaker, and the seconds it then fails fast.
    api_key : str, optional
        The server's API key (default ``$GOTR1_REWARD_API_KEY``; none when unset).

    Attributes
    ----------
    requests, failures : int
        Images sent to be scored, and those that scored 0 because their request failed (cumulative).
    last_failures : int
        Images of the last ``score`` call that scored 0 because its request failed (0 or all of them).
    last_error : str or None
        Why the last call failed (the server's message for a 4xx), None after a success.
    """

    def __init__(self, url: str, reward: str, timeout: float = 30.0, max_retries: int = 2, backoff: float = 0.5,
                 max_reply_bytes: int = MAX_REPLY_BYTES, breaker_after: int = 8, breaker_cooldown: float = 30.0,
                 api_key: str | None = None):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http(s)://host[:port][/path], got {url!r}")
        if timeout <= 0 or max_retries < 0 or backoff < 0 or max_reply_bytes < 1:
            raise ValueError(f"RemoteReward needs timeout > 0, max_retries >= 0, backoff >= 0, max_reply_bytes >= 1; "
                             f"got {timeout}, {max_retries}, {backoff}, {max_reply_bytes}")
        if breaker_after < 1 or breaker_cooldown < 0:
            raise ValueError(f"RemoteReward needs breaker_after >= 1 and breaker_cooldown >= 0; got {breaker_after}, "
                             f"{breaker_cooldown}")
        self.url, self.name = url.rstrip("/"), reward
        self._api_key = api_key or os.environ.get(API_KEY_ENV) or None
        self._connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._host, self._port, self._root = parts.hostname, parts.port, parts.path.rstrip("/")
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.max_reply_bytes = max_reply_bytes
        self.breaker_after, self.breaker_cooldown = breaker_after, breaker_cooldown
        self.requests = self.failures = self.last_failures = 0
        self.last_error: str | None = None
        self._failures_in_a_row, self._open_until = 0, 0.0
        self._lock = threading.Lock()

    @property
    def max_seconds(self) -> float:
        """Worst-case wall time of one ``score`` call, network and backoff (image encoding not included)."""
        return (self.max_retries + 1) * self.timeout + self.backoff * (2**self.max_retries - 1)

    def describe(self) -> str:
        return f"{self.name} at {self.url}"

    def score(self, prompts: list[str], images) -> np.ndarray:
        """One score per image, float64 ``[N]`` in [0, 1] (NaN: not scorable); 0 for each image of a failed request."""
        images = rgb_images(images)
        check_batch(prompts, images)
        if not images:
            with self._lock:
                self.last_failures, self.last_error = 0, None
            return np.zeros(0)
        if time.monotonic() < self._open_until:
            scores, error = None, f"circuit breaker open after {self.breaker_after} failed requests in a row: not sent"
        else:
            payload = json.dumps({"reward": self.name, "prompts": list(prompts),
                                  "images": [png_base64(image) for image in images]}).encode()
            scores, error = self._attempts(payload, len(images))
            self._update_breaker(error)
        with self._lock:
            self.requests += len(images)
            self.last_failures = 0 if error is None else len(images)
            self.failures += self.last_failures
            self.last_error = error
        if error is not None:
            log.warning("RemoteReward %s: %d images scored 0: %s", self.describe(), len(images), error)
            return np.zeros(len(images))
        return scores

    def check(self) -> None:
        """One ``GET /health``; :class:`RewardUnavailableError` naming the URL and the reward unless it is served."""
        try:
            status, body = self._exchange("GET", "/health", None)
        except _Retryable as err:
            raise RewardUnavailableError(f"reward server {self.url} is unreachable ({err}) for reward {self.name!r}; "
                                         "start it or fix the reward server url before training") from err
        if status == 401:
            refused = "refused the API key given" if self._api_key else "needs an API key and none was given"
            raise RewardUnavailableError(f"reward server {self.url} {refused} for reward {self.name!r}; set api_key in "
                                         f"the reward entry or ${API_KEY_ENV} to the server's key")
        hosted = _hosted(body) if status == 200 else None
        if hosted is None:
            raise RewardUnavailableError(f"{self.url} did not answer /health as a reward server (HTTP {status}: "
                                         f"{_error_text(body)}) for reward {self.name!r}; fix the reward server url")
        if self.name not in hosted:
            raise RewardUnavailableError(f"reward server {self.url} does not host reward {self.name!r} (it hosts "
                                         f"{hosted}); fix the reward name or start the server with it")

    # -----------------------------------------------------------------------------------------

    def _update_breaker(self, error: str | None) -> None:
        with self._lock:
            if error is None:
                self._failures_in_a_row = 0
                return
            self._failures_in_a_row += 1
            if self._failures_in_a_row >= self.breaker_after and time.monotonic() >= self._open_until:
                self._open_until = time.monotonic() + self.breaker_cooldown
                log.warning("RemoteReward %s: %d requests in a row failed (last: %s); failing fast for %.0f s",
                            self.describe(), self._failures_in_a_row, error, self.breaker_cooldown)

    def _attempts(self, payload: bytes, n: int) -> tuple[np.ndarray | None, str | None]:
        """``(scores, None)``, or ``(None, what went wrong)`` once retries are spent or the server refused."""
        for attempt in range(self.max_retries + 1):
            try:
                status, body = self._exchange("POST", "/score", payload)
                if status == 200:
                    return _parse_scores(body, n), None
                if status >= 500 or status in _RETRY_STATUS:
                    raise _Retryable(f"HTTP {status}: {_error_text(body)}")
                raise _Rejected(f"HTTP {status}: {_error_text(body)}")
            except _Retryable as err:
                log.debug("RemoteReward %s: attempt %d failed: %s", self.describe(), attempt + 1, err)
                if attempt < self.max_retries:
                    time.sleep(self.backoff * 2**attempt * random.uniform(0.5, 1.0))
                last = f"{err} (after {attempt + 1} attempts)"
            except _Rejected as err:
                return None, f"not retried: {err}"
        return None, last

    def _exchange(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        """``(status, reply body)`` of one HTTP exchange within ``timeout``; :class:`_Retryable` if it fails."""
        end = time.monotonic() + self.timeout

        def time_left() -> float:
            left = end - time.monotonic()
            if left <= 0:
                raise _Retryable(f"no complete reply within {self.timeout} s")
            return left

        connection = self._connection_class(self._host, self._port, timeout=time_left())
        try:
            connection.connect()
            sock = connection.sock  # kept: http.client lets go of it once a reply says the connection closes
            sock.settimeout(time_left())
            headers = {"Content-Type": "application/json"} if body is not None else {}
            if self._api_key:
                headers["Authorization"] = f"Bearer {self._api_key}"
            connection.request(method, self._root + path, body=body, headers=headers)
            sock.settimeout(time_left())
            response = connection.getresponse()
            chunks, size = [], 0
            while True:
                sock.settimeout(time_left())
                chunk = response.read1(1 << 16)
                if not chunk:
                    return response.status, b"".join(chunks)
                size += len(chunk)
                if size > self.max_reply_bytes:
                    raise _Retryable(f"reply larger than {self.max_reply_bytes} bytes")
                chunks.append(chunk)
        except (OSError, http.client.HTTPException) as err:  # timeouts, refused or dropped connections
            raise _Retryable(repr(err)) from err
        finally:
            connection.close()

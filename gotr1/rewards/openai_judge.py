"""A judge behind any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, SGLang, ...).

This is how the judge scales past one process: serve Qwen2.5-VL-7B with vLLM or SGLang on as many GPUs
as needed and point :class:`OpenAIJudge` at it. Standard library only (urllib, a thread pool).

Failure contract: every attempt is bounded by ``timeout`` seconds of wall time, connect to last byte,
and a reply by :data:`MAX_REPLY_BYTES`, so a server that trickles bytes or streams without end frees its
thread (and closes its connection) instead of holding it; 5xx, 408, 429, timeouts and connection errors are
retried up to ``max_retries`` times with exponential backoff (jittered); other 4xx answers, oversized and
malformed bodies are not retried. A request that still fails returns None, and a whole ``chat`` call
returns within ``deadline`` seconds. After ``breaker_after`` requests in a row have failed, the judge stops
sending for ``breaker_cooldown`` seconds and answers None at once (a circuit breaker), so a dead server
costs seconds, not hours of timeouts; then one request probes it again.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import math
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait

from gotr1.rewards.coords import QWEN_FACTOR, QWEN_MAX_PIXELS, QWEN_MIN_PIXELS, smart_resize
from gotr1.images import as_rgb_array
from gotr1.rewards.judges import message_parts, request_images

log = logging.getLogger(__name__)

_RETRY_STATUS = {408, 429}
MAX_REPLY_BYTES = 8 << 20  # a chat completion of a few hundred tokens is kilobytes


class _Retryable(Exception):
    """A failure worth another attempt (server overload, timeout, dropped connection)."""


def _read_bounded(response, end: float) -> bytes:
    """The reply body, read until ``end`` (monotonic time) and at most :data:`MAX_REPLY_BYTES`."""
    chunks, size = [], 0
    while chunk := response.read1(1 << 16):
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            raise ValueError(f"reply larger than {MAX_REPLY_BYTES} bytes")
        if time.monotonic() > end:
            raise _Retryable("reply not complete within the timeout")
        chunks.append(chunk)
    return b"".join(chunks)


def png_data_url(image) -> str:
    """A PIL image or uint8 array ``[H, W, 3]`` as a ``data:image/png;base64,...`` URL (fast, lossless PNG)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(as_rgb_array(image)).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def to_openai_messages(request: list[dict], encode=png_data_url) -> list[dict]:
    """Judge messages in the chat-completions schema: images become ``image_url`` parts, ``encode(image)`` URLs."""
    messages = []
    for message in request:
        content = []
        for part in message_parts(message):
            if part["type"] == "text":
                content.append({"type": "text", "text": part["text"]})
            else:
                content.append({"type": "image_url", "image_url": {"url": encode(part["image"])}})
        messages.append({"role": message["role"], "content": content})
    return messages


def _reply_text(body: bytes) -> str:
    data = json.loads(body)
    content = data["choices"][0]["message"]["content"]
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise ValueError(f"message content is {type(content).__name__}, not text")
    return content


class OpenAIJudge:
    """Chat-completions client with bounded concurrency, timeouts and retries.

    Parameters
    ----------
    base_url : str
        The server root, e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is appended).
    model : str
        The served model name.
    api_key : str, optional
        Sent as ``Authorization: Bearer``.
    concurrency : int
        Requests in flight at once (threads of the pool).
    timeout : float
        Seconds per attempt, connect to last byte.
    max_retries : int
        Further attempts after the first, for retryable failures only.
    backoff : float
        Base delay in seconds; attempt ``k`` (from 0) waits ``backoff * 2**k`` times a jitter in [0.5, 1].
    deadline : float, optional
        Wall-clock bound on one ``chat`` call. Default: the worst case of one request,
        ``(max_retries + 1) * timeout + backoff * (2**max_retries - 1)`` plus a second, times the number of
        rounds ``ceil(len(requests) / concurrency)``, so that only a server breaking its own timeouts hits it.
    max_tokens : int
        Reply length bound sent with each request; ``temperature`` is 0 (greedy, as in the paper's judge).
    breaker_after, breaker_cooldown :
        Failed requests in a row that open the circuit breaker, and the seconds it then fails fast.
    min_pixels, max_pixels, factor : int
        The server's Qwen2.5-VL processor settings, used by :meth:`grounding_size` (smart_resize; defaults are
        Qwen2.5-VL-7B-Instruct's). Change them if the server runs with other ``mm_processor_kwargs``.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, concurrency: int = 16,
                 timeout: float = 60.0, max_retries: int = 3, backoff: float = 0.5, deadline: float | None = None,
                 max_tokens: int = 128, min_pixels: int = QWEN_MIN_PIXELS, max_pixels: int = QWEN_MAX_PIXELS,
                 factor: int = QWEN_FACTOR, breaker_after: int = 32, breaker_cooldown: float = 30.0):
        if concurrency <= 0:
            raise ValueError(f"concurrency must be positive, got {concurrency}")
        if timeout <= 0 or max_retries < 0 or backoff < 0:
            raise ValueError(f"OpenAIJudge needs timeout > 0, max_retries >= 0, backoff >= 0; got timeout={timeout}, "
                             f"max_retries={max_retries}, backoff={backoff}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.deadline = deadline
        self.max_tokens = max_tokens
        self.min_pixels, self.max_pixels, self.factor = min_pixels, max_pixels, factor
        if breaker_after < 1 or breaker_cooldown < 0:
            raise ValueError(f"OpenAIJudge needs breaker_after >= 1 and breaker_cooldown >= 0; got {breaker_after}, "
                             f"{breaker_cooldown}")
        self.breaker_after, self.breaker_cooldown = breaker_after, breaker_cooldown
        self._failures_in_a_row, self._open_until = 0, 0.0
        self._breaker_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="openai-judge")

    def grounding_size(self, width: int, height: int) -> tuple[int, int]:
        """``(w, h)`` the server's Qwen2.5-VL processor resizes a ``width`` x ``height`` image to."""
        h, w = smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)
        return w, h

    def chat(self, requests: Sequence[list[dict]]) -> list[str | None]:
        """All requests at once, ``concurrency`` in flight; None for each that failed or missed the deadline."""
        # A generated image goes out with R_PI and every R_RI question about it: encode it once, and
        # before the requests that need it (the pool is first in, first out, so no request waits on an
        # encoding that has not started).
        encoded = {}
        for image in (image for r in requests for image in request_images(r)):
            if id(image) not in encoded:
                encoded[id(image)] = self._pool.submit(png_data_url, image)
        futures = [self._pool.submit(self._complete, r, encoded) for r in requests]
        done, pending = wait(futures, timeout=self._deadline(len(requests)))
        for future in [*pending, *encoded.values()]:
            future.cancel()  # those not started yet never run
        outcomes = [self._outcome(f) if f in done else (None, "missed the chat deadline") for f in futures]
        errors = [error for _, error in outcomes if error is not None]
        if errors:
            log.warning("OpenAIJudge: %d of %d requests failed; first error: %s", len(errors), len(requests), errors[0])
        return [reply for reply, _ in outcomes]

    def _deadline(self, n_requests: int) -> float:
        if self.deadline is not None:
            return self.deadline
        one = (self.max_retries + 1) * self.timeout + self.backoff * (2**self.max_retries - 1) + 1.0
        return one * max(1, math.ceil(n_requests / self.concurrency))

    @staticmethod
    def _outcome(future) -> tuple[str | None, str | None]:
        error = future.exception()
        if error is not None:  # _complete handles every expected failure; this is the safety net
            return None, f"unexpected {error!r}"
        return future.result()

    def close(self) -> None:
        """Stop taking requests; threads still running finish on their own timeouts."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "OpenAIJudge":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _complete(self, request: list[dict], encoded: dict) -> tuple[str | None, str | None]:
        """``(reply, None)``, or ``(None, what went wrong)`` once retries are spent or the breaker is open."""
        if time.monotonic() < self._open_until:
            return None, f"circuit breaker open after {self.breaker_after} failed requests in a row: not sent"
        reply, error = self._attempts(request, encoded)
        with self._breaker_lock:
            if reply is not None:
                self._failures_in_a_row = 0
            else:
                self._failures_in_a_row += 1
                if self._failures_in_a_row >= self.breaker_after and time.monotonic() >= self._open_until:
                    self._open_until = time.monotonic() + self.breaker_cooldown
                    log.warning("OpenAIJudge: %d requests in a row failed (last: %s); failing fast for %.0f s",
                                self._failures_in_a_row, error, self.breaker_cooldown)
        return reply, error

    def _attempts(self, request: list[dict], encoded: dict) -> tuple[str | None, str | None]:
        try:
            payload = json.dumps({
                "model": self.model,
                "messages": to_openai_messages(request, lambda image: encoded[id(image)].result()),
                "max_tokens": self.max_tokens,
                "temperature": 0.0,
            }).encode()
        except (TypeError, ValueError) as err:
            return None, f"cannot encode the request: {err!r}"
        for attempt in range(self.max_retries + 1):
            try:
                return self._post(payload), None
            except _Retryable as err:
                log.debug("OpenAIJudge: attempt %d failed: %s", attempt + 1, err)
                if attempt < self.max_retries:
                    time.sleep(self.backoff * 2**attempt * random.uniform(0.5, 1.0))
                last = f"{err} (after {attempt + 1} attempts)"
            except (ValueError, KeyError, IndexError, TypeError, urllib.error.HTTPError) as err:
                return None, f"not retried: {err!r}"
        return None, last

    def _post(self, payload: bytes) -> str:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        post = urllib.request.Request(self.url, data=payload, headers=headers, method="POST")
        end = time.monotonic() + self.timeout
        try:
            with urllib.request.urlopen(post, timeout=self.timeout) as response:
                body = _read_bounded(response, end)
        except urllib.error.HTTPError as err:
            if err.code >= 500 or err.code in _RETRY_STATUS:
                raise _Retryable(f"HTTP {err.code}") from err
            raise
        except (OSError, http.client.HTTPException) as err:  # timeouts, refused or dropped connections
            raise _Retryable(repr(err)) from err
        return _reply_text(body)

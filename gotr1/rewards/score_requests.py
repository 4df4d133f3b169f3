"""A ``/score`` request of the reward server (:mod:`gotr1.rewards.server`): parsed and checked, its images kept
encoded, and the budget of decoded pixels that every request shares.

An image's header is read when the request arrives (its size, and whether it is an image at all); its pixels
are decoded only when a model worker scores it, while that worker's batch holds its share of the
:class:`PixelBudget`. So a request's memory is its encoded body until then, and the decoded pixels of all
requests together never pass the budget. Requests whose images would decode to more than the budget are
refused whole (:class:`OverBudget`, HTTP 413).
"""

from __future__ import annotations

import base64
import io
import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image

MAX_IMAGE_PIXELS = 4096 * 4096  # refuses decompression bombs before they are decoded
MAX_PIXELS = 64 << 20  # decoded pixels per request and in flight: ~200 MB of RGB, 455 images of 384 px


class BadRequest(ValueError):
    """A request the server refuses (HTTP ``status``, 400 by default); the message names the problem."""

    status = 400


class OverBudget(BadRequest):
    """Images that would decode to more pixels than the server's budget (HTTP 413)."""

    status = 413


@dataclass
class EncodedImage:
    """An image of a request as sent, its size read from its header; decoded only when a worker scores it."""

    data: bytes
    index: int
    pixels: int

    def decode(self) -> np.ndarray:
        """uint8 ``[H, W, 3]``; :class:`BadRequest` if the data past the header is broken."""
        try:
            with Image.open(io.BytesIO(self.data)) as image:
                return np.asarray(image.convert("RGB"))
        except Exception as err:  # PIL's plugins raise many types; each means: not an image we can score
            raise BadRequest(f"images[{self.index}]: not a decodable image ({type(err).__name__}: {err})") from err


def read_image(text, index: int) -> EncodedImage:
    """Base64 image ``text`` (request position ``index``), its header checked; else :class:`BadRequest`."""
    if not isinstance(text, str):
        raise BadRequest(f"images[{index}]: expected a base64 string, got {type(text).__name__}")
    try:
        data = base64.b64decode(text, validate=True)
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
    except Exception as err:  # PIL's plugins raise many types; each means the same: not an image we can score
        raise BadRequest(f"images[{index}]: not a decodable base64 image ({type(err).__name__}: {err})") from err
    if width * height > MAX_IMAGE_PIXELS:
        raise BadRequest(f"images[{index}]: {width}x{height} is over {MAX_IMAGE_PIXELS} pixels")
    return EncodedImage(data, index, width * height)


def parse_score_request(body: bytes, rewards,
                        max_pixels: int = MAX_PIXELS) -> tuple[str, list[str], list[EncodedImage]]:
    """``(reward, prompts, images)`` of a ``/score`` body, the images still encoded; :class:`BadRequest`
    naming what is wrong (:class:`OverBudget` when they would decode to more than ``max_pixels``)."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadRequest(f"body is not JSON ({err})") from err
    if not isinstance(request, dict):
        raise BadRequest(f"body must be a JSON object, got {type(request).__name__}")
    reward, prompts, images = request.get("reward"), request.get("prompts"), request.get("images")
    if reward not in rewards:
        raise BadRequest(f"unknown reward {reward!r}; this server hosts {sorted(rewards)}")
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise BadRequest("prompts: expected a list of str")
    if not isinstance(images, list):
        raise BadRequest("images: expected a list of base64 strings")
    if len(prompts) != len(images):
        raise BadRequest(f"prompts and images: {len(prompts)} prompts for {len(images)} images")
    images = [read_image(text, i) for i, text in enumerate(images)]
    total = sum(image.pixels for image in images)
    if total > max_pixels:
        raise OverBudget(f"images decode to {total} pixels, over this server's budget of {max_pixels} decoded "
                         "pixels per request (--max-pixels); send fewer or smaller images per request")
    return reward, prompts, images


class PixelBudget:
    """Decoded pixels held at once by every model worker together: a batch waits until its pixels fit.

    ``peak`` is the most ever held (what the budget promises to bound).
    """

    def __init__(self, limit: int):
        self.limit, self.held, self.peak = limit, 0, 0
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, pixels: int):
        with self._changed:
            self._changed.wait_for(lambda: self.held + pixels <= self.limit)
            self.held += pixels
            self.peak = max(self.peak, self.held)
        try:
            yield
        finally:
            with self._changed:
                self.held -= pixels
                self._changed.notify_all()

"""GoT-R1's judge rewards (R_sem, R_spa, R_RI, R_PI) and the batched scorer behind them.

Every reward has the signature ``(prompts, chains, images, judge) -> (scores, details)``: ``prompts``
a list of N strings, ``chains`` N chain texts or parsed :class:`~gotr1.chain.Chain`, ``images`` a uint8
array ``[N, H, W, 3]`` or N PIL images / arrays (None where a reward needs none), and ``scores`` float32
``[N]`` in [0, 1], NaN where the reward does not apply (an image reward without images).

Throughput: :func:`score_batch` turns a whole rollout batch into judge requests (the four rewards
interleaved) and sends them in ONE ``judge.chat`` call, so a batched or concurrent judge sees all of them
at once. Identical requests inside a batch are sent once, and a :class:`RewardCache` remembers R_sem by
(prompt, chain caption) and R_spa by (prompt, chain objects and boxes): the two inputs the judge sees.

Failure path: a request the judge could not answer, or a reply without a readable score or box, scores
0 (never a good score); ``details`` counts them per component, lists the samples they touched
(``failed_samples``: an evaluation reports those as not scored) and keeps the first raw replies, and one
warning per batch is logged. A chain without objects gets R_spa = R_RI = 0 without asking the judge.
R_RI grounds each distinct object name of a chain once; each chain box scores its best IoU against the
boxes returned for its name (0 when none), and the sample scores the mean over its objects.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from gotr1.chain import Chain, parse_chain, strip_boxes
from gotr1.rewards.combine import RewardConfig, combine
from gotr1.rewards.coords import best_iou, pixels_to_unit
from gotr1.images import image_size
from gotr1.rewards.parsing import parse_bboxes, parse_score
from gotr1.rewards.templates import GROUNDING, PROMPT_IMAGE, SEMANTIC, SPATIAL

log = logging.getLogger(__name__)

JUDGE_COMPONENTS = ("sem", "spa", "ri", "pi")
_SCORE_TEMPLATES = {"sem": SEMANTIC, "spa": SPATIAL, "pi": PROMPT_IMAGE}
MAX_KEPT_FAILURES = 16
MAX_RAW_CHARS = 500


class RewardCache:
    """Judge scores by request content, least recently used evicted; safe to share between threads.

    Keys are built by the scorer: ``("sem", prompt, caption)`` and ``("spa", prompt, size, objects)``.
    Only parsed replies are stored (a failed request is asked again next time). One cache belongs to one
    judge: scores from another judge or rubric are not interchangeable.
    """

    def __init__(self, max_size: int = 65536):
        if max_size <= 0:
            raise ValueError(f"RewardCache max_size must be positive, got {max_size}")
        self.max_size = max_size
        self._data: OrderedDict[tuple, float] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> float | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: tuple, value: float) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


@dataclass
class RewardBatch:
    """Every reward of a batch. Components float32 ``[N]`` in [0, 1] (NaN: not requested or not applicable)."""

    sem: np.ndarray
    spa: np.ndarray
    ri: np.ndarray
    pi: np.ndarray
    total: np.ndarray
    aes: np.ndarray | None = None
    details: dict = field(default_factory=dict)


@dataclass
class _Job:
    """One judge request and the samples its reply scores (several when identical requests were merged)."""

    component: str
    samples: list[int]
    request: list[dict]
    key: tuple | None = None
    name: str | None = None


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def _prepare(prompts, chains, images) -> tuple[list[str], list[Chain], list]:
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a list of str")
    n = len(prompts)
    if len(chains) != n:
        raise ValueError(f"chains has {len(chains)} entries for {n} prompts")
    parsed = [c if isinstance(c, Chain) else parse_chain(c) for c in chains]
    if images is None:
        return list(prompts), parsed, [None] * n
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    if len(images) != n:
        raise ValueError(f"images has {len(images)} entries for {n} prompts")
    return list(prompts), parsed, list(images)


# ---------------------------------------------------------------------------------------------
# Planning: which requests a batch needs
# ---------------------------------------------------------------------------------------------


class _Plan:
    """The requests of one batch, with scores already known (cache hits, empty chains) filled in."""

    def __init__(self, n: int, cache: RewardCache | None):
        self.scores = {c: np.full(n, np.nan) for c in JUDGE_COMPONENTS}
        self.jobs: list[_Job] = []
        self.cache = cache
        self.cache_hits = 0
        self.merged = 0
        self._by_key: dict[tuple, _Job] = {}

    def add_cached(self, component: str, sample: int, key: tuple) -> _Job | None:
        """Score from the cache, or join an identical pending request; else queue a job and return it.

        The caller fills the new job's ``request``, so costly inputs (layout canvases) are built only for
        requests that are really sent.
        """
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None:
            self.scores[component][sample] = cached
            self.cache_hits += 1
            return None
        if key in self._by_key:
            self._by_key[key].samples.append(sample)
            self.merged += 1
            return None
        job = _Job(component, [sample], [], key=key)
        self._by_key[key] = job
        self.jobs.append(job)
        return job


def _plan_requests(prompts, chains, images, components, cache, layout_size) -> _Plan:
    plan = _Plan(len(prompts), cache)
    if "sem" in components:
        for i, (prompt, chain) in enumerate(zip(prompts, chains)):
            caption = strip_boxes(chain.text)
            if job := plan.add_cached("sem", i, ("sem", prompt, caption)):
                job.request = SEMANTIC.request(prompt=prompt, reasoning=caption)
    if "spa" in components:
        _plan_spatial(plan, prompts, chains, layout_size)
    for i, (prompt, chain, image) in enumerate(zip(prompts, chains, images)):
        if "ri" in components and image is not None:
            if not chain.objects:
                plan.scores["ri"][i] = 0.0
            for name in dict.fromkeys(chain.names):
                plan.jobs.append(_Job("ri", [i], GROUNDING.request(image=image, object=name), name=name))
        if "pi" in components and image is not None:
            plan.jobs.append(_Job("pi", [i], PROMPT_IMAGE.request(image=image, prompt=prompt)))
    return plan


def _plan_spatial(plan: _Plan, prompts, chains, layout_size: int) -> None:
    new_jobs = []
    for i, (prompt, chain) in enumerate(zip(prompts, chains)):
        if not chain.objects:
            plan.scores["spa"][i] = 0.0
            continue
        # The judge sees the prompt and the canvas, and the canvas depends only on names and boxes.
        objects = tuple((o.name, o.box.as_tuple()) for o in chain.objects)
        if job := plan.add_cached("spa", i, ("spa", prompt, layout_size, objects)):
            new_jobs.append(job)
    if not new_jobs:
        return
    from gotr1.layout import render_layouts  # drawn by the layout module, as `gotr1 layout` shows it

    canvases = render_layouts([chains[job.samples[0]] for job in new_jobs], size=layout_size)
    for job, canvas in zip(new_jobs, canvases):
        job.request = SPATIAL.request(image=canvas, prompt=prompts[job.samples[0]])


# ---------------------------------------------------------------------------------------------
# Reading the replies
# ---------------------------------------------------------------------------------------------


class _Tally:
    """Failure counts per component and the first raw replies, for ``details`` and the log."""

    def __init__(self):
        self.failed = dict.fromkeys(JUDGE_COMPONENTS, 0)
        self.unparsed = dict.fromkeys(JUDGE_COMPONENTS, 0)
        self.kept: list[dict] = []
        self.samples: set[int] = set()

    def record(self, job: _Job, reply: str | None) -> None:
        reason = "request failed" if reply is None else "unparseable reply"
        (self.failed if reply is None else self.unparsed)[job.component] += 1
        self.samples.update(job.samples)
        raw = None if reply is None else reply[:MAX_RAW_CHARS]
        log.debug("reward %s, sample %d: %s: %r", job.component, job.samples[0], reason, raw)
        if len(self.kept) < MAX_KEPT_FAILURES:
            self.kept.append({"component": job.component, "sample": job.samples[0], "object": job.name,
                              "reason": reason, "raw": raw})

    def log_summary(self, n_requests: int) -> None:
        failed, unparsed = sum(self.failed.values()), sum(self.unparsed.values())
        if failed or unparsed:
            first = next((k["raw"] for k in self.kept if k["raw"] is not None), None)
            log.warning("judge: %d of %d requests failed, %d replies unparseable (scored 0); failed=%s "
                        "unparsed=%s; first unparseable reply: %r",
                        failed, n_requests, unparsed, self.failed, self.unparsed, first)


def _read_replies(plan: _Plan, replies, chains, images, judge, tally: _Tally) -> list[list[float]]:
    """Fill ``plan.scores`` from the replies; return each sample's per-object IoUs (R_RI)."""
    grounded: dict[tuple[int, str], np.ndarray] = {}
    for job, reply in zip(plan.jobs, replies):
        if job.component == "ri":
            boxes = parse_bboxes(reply)
            if boxes is None:
                tally.record(job, reply)
                boxes = []
            sample = job.samples[0]
            frame = judge.grounding_size(*image_size(images[sample]))
            grounded[(sample, job.name)] = pixels_to_unit(boxes, *frame)
            continue
        value = parse_score(reply, _SCORE_TEMPLATES[job.component].scale)
        if value is None:
            tally.record(job, reply)
        elif job.key is not None and plan.cache is not None:
            plan.cache.put(job.key, value)
        plan.scores[job.component][job.samples] = 0.0 if value is None else value
    object_iou = []
    for i, chain in enumerate(chains):
        ious = [float(best_iou([o.box.as_tuple()], grounded[(i, o.name)])[0])
                for o in chain.objects if (i, o.name) in grounded]
        object_iou.append(ious)
        if ious:
            plan.scores["ri"][i] = float(np.mean(ious))
    return object_iou


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def _score(prompts, chains, images, judge, components, cache=None, layout_size=384) -> tuple[dict, dict]:
    if judge is None:
        raise ValueError("judge rewards need a judge (TransformersJudge, OpenAIJudge or tiny_judge()), got None")
    prompts, chains, images = _prepare(prompts, chains, images)
    plan = _plan_requests(prompts, chains, images, components, cache, layout_size)
    requests = [job.request for job in plan.jobs]
    details: dict = {}
    try:
        replies = judge.chat(requests) if requests else []
        if len(replies) != len(requests):
            raise ValueError(f"judge.chat returned {len(replies)} replies for {len(requests)} requests")
    except Exception as err:  # a broken judge fails into the scored-0 path instead of ending the run
        log.warning("judge.chat raised: %r", err)
        details["judge_error"] = repr(err)
        replies = [None] * len(requests)
    tally = _Tally()
    object_iou = _read_replies(plan, replies, chains, images, judge, tally)
    tally.log_summary(len(requests))
    details.update(requests=len(requests), cache_hits=plan.cache_hits, merged=plan.merged,
                   failed=sum(tally.failed.values()), unparsed=sum(tally.unparsed.values()),
                   failed_per_component=tally.failed, unparsed_per_component=tally.unparsed,
                   failures=tally.kept, failed_samples=sorted(tally.samples), object_iou=object_iou)
    scores = {c: plan.scores[c].astype(np.float32) for c in components}
    return scores, details


def score_batch(prompts, chains, images, judge, config: RewardConfig | None = None, *,
                cache: RewardCache | None = None, aesthetic=None) -> RewardBatch:
    """All rewards of a rollout batch from ONE ``judge.chat`` call, and their combination.

    Parameters
    ----------
    prompts, chains, images, judge
        As for every reward (see the module docstring); ``images`` None leaves R_RI and R_PI NaN.
    config : RewardConfig, optional
        Weights and mode; components with weight 0 are not requested (their arrays are NaN).
    cache : RewardCache, optional
        Reuse R_sem / R_spa across batches.
    aesthetic : callable, optional
        A reward with the common signature, required when ``config.w_aes > 0`` (GoT-R1's optional factor).

    Returns
    -------
    RewardBatch
        ``sem``, ``spa``, ``ri``, ``pi`` and ``total`` float32 ``[N]``; ``details``: ``requests`` sent,
        ``cache_hits``, ``merged`` (identical requests sent once), ``failed`` (no reply) and ``unparsed``
        (unreadable reply) totals and their ``*_per_component`` counts, ``failures`` (the first 16, with
        component, sample, object, reason and raw reply), ``object_iou`` (per sample, per chain object).
    """
    config = config or RewardConfig()
    wanted = tuple(c for c in JUDGE_COMPONENTS if c in config.active)
    scores, details = _score(prompts, chains, images, judge, wanted, cache, config.layout_size)
    aes = None
    if config.w_aes > 0:
        if aesthetic is None:
            raise ValueError("RewardConfig.w_aes > 0 needs an aesthetic reward: pass score_batch(..., aesthetic=fn)")
        aes, details["aesthetic"] = aesthetic(prompts, chains, images, judge)
        aes = np.asarray(aes, dtype=np.float32)
    n = len(prompts)
    full = {c: scores.get(c, np.full(n, np.nan, dtype=np.float32)) for c in JUDGE_COMPONENTS}
    total = combine(**full, aes=aes, config=config)
    return RewardBatch(**full, total=total, aes=aes, details=details)


def semantic_reward(prompts, chains, images, judge, *, cache: RewardCache | None = None):
    """R_sem: the chain's caption (``strip_boxes``) judged against the prompt, 0-10 mapped to [0, 1].

    Returns ``(scores float32 [N], details)``; ``images`` is unused (may be None).
    """
    scores, details = _score(prompts, chains, images, judge, ("sem",), cache)
    return scores["sem"], details


def spatial_reward(prompts, chains, images, judge, *, cache: RewardCache | None = None, layout_size: int = 384):
    """R_spa: the chain's boxes drawn by ``gotr1.layout.render_layouts`` on a ``layout_size`` canvas, judged
    against the prompt, 0-10 mapped to [0, 1]; a chain without objects scores 0.

    Returns ``(scores float32 [N], details)``; ``images`` is unused (may be None).
    """
    scores, details = _score(prompts, chains, images, judge, ("spa",), cache, layout_size)
    return scores["spa"], details


def grounding_reward(prompts, chains, images, judge):
    """R_RI: mean IoU between each chain box and the judge's grounding of its object in the generated image.

    Qwen2.5-VL answers in pixels of its resized input (``judge.grounding_size``); both boxes are compared
    on the 0-1000 scale. A chain without objects scores 0, an object the judge cannot ground 0; NaN when
    ``images`` is None. Returns ``(scores float32 [N], details)``, ``details["object_iou"]`` per object.
    """
    scores, details = _score(prompts, chains, images, judge, ("ri",))
    return scores["ri"], details


def prompt_image_reward(prompts, chains, images, judge):
    """R_PI: the generated image's compositional accuracy against the prompt, 0-10 mapped to [0, 1].

    NaN when ``images`` is None. Returns ``(scores float32 [N], details)``.
    """
    scores, details = _score(prompts, chains, images, judge, ("pi",))
    return scores["pi"], details

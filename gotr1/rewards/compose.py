"""Rewards composed from the judge and reward models, as a config describes them, and the presets of the papers.

A reward spec is a mapping (a YAML ``reward:`` block, or ``--reward '{...}'``)::

    reward:
      judge: true                 # GoT-R1's four MLLM rewards (or {w_sem: 1, w_spa: 1, w_ri: 1, w_pi: 1})
      hps: {weight: 1, device: cuda:1}          # a reward model on its own GPU
      pickscore: {url: http://host:8100}        # ... or served by `gotr1 serve-rewards`
      clipscore: {monitor: true}                # logged every step, not optimised (a hacking monitor)
      combine: product            # or sum
      weights: {pickscore: 0.5}   # per component (also `weight:` inside an entry)

Model entries: ``hps``, ``pickscore``, ``clipscore`` (:mod:`gotr1.metrics.preference`), ``blip_vqa``,
``spatial`` (:mod:`gotr1.metrics.compbench`), ``geneval`` (:mod:`gotr1.metrics.geneval`); each takes
``weight``, ``device``, ``model`` (a hub id or folder instead of the default), ``url`` (score on a reward
server instead of in process), ``api_key`` (that server's key; default ``$GOTR1_REWARD_API_KEY``) and
``monitor``. Presets (``reward_preset``):

* ``got-r1``: the published GoT-R1, ``R = R_PI * (R_sem + R_spa) / 2 * R_RI * R_HPS``;
* ``got-r1-arxiv``: the arXiv version, the same product without R_HPS;
* ``t2i-r1``: T2I-R1's ensemble, the mean of HPS, a VQA model (BLIP-VQA), an object detector (the detector
  spatial score; T2I-R1 uses GroundingDINO) and an outcome reward model (T2I-R1 fine-tunes one; the judge's
  prompt-image rubric R_PI stands in).

Every component is combined by :func:`~gotr1.rewards.combine.combine_scores` (one NaN rule; the judge's
R_sem and R_spa enter a product as their mean). A component scored by a failing server scores 0 and is
counted in ``ScoredBatch.failed`` (``failures`` / ``requests`` stay the judge's), never a good score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gotr1.rewards.combine import RewardConfig, combine_scores
from gotr1.rewards.policy_reward import JudgeReward, JudgeUnavailableError, PolicyReward, ScoredBatch

JUDGE_COMPONENTS = ("sem", "spa", "ri", "pi")
MODEL_REWARDS = ("hps", "pickscore", "clipscore", "blip_vqa", "spatial", "geneval")
ENTRY_FIELDS = ("weight", "device", "model", "url", "monitor", "api_key")

PRESETS = {
    "got-r1": {"judge": True, "hps": {}, "combine": "product"},
    "got-r1-arxiv": {"judge": True, "combine": "product"},
    "t2i-r1": {"judge": {"w_sem": 0, "w_spa": 0, "w_ri": 0, "w_pi": 1}, "hps": {}, "blip_vqa": {}, "spatial": {},
               "combine": "sum"},
}


@dataclass(frozen=True)
class ModelEntry:
    """One reward model of a spec."""

    name: str
    weight: float = 1.0
    device: str | None = None
    model: str | None = None
    url: str | None = None
    monitor: bool = False
    api_key: str | None = field(default=None, repr=False)  # never printed


@dataclass(frozen=True)
class RewardSpec:
    """A parsed reward mapping: judge weights (None: no judge), model entries, the combination."""

    judge: dict | None
    models: tuple[ModelEntry, ...] = ()
    combine: str = "product"
    judge_monitor: bool = False
    weights: dict = field(default_factory=dict)


def _bad(path: str, message: str) -> ValueError:
    return ValueError(f"reward.{path}: {message}")


def _entry(name: str, value, weights: dict) -> ModelEntry:
    if value is True or value is None:
        value = {}
    if not isinstance(value, dict):
        raise _bad(name, f"expected a mapping of {', '.join(ENTRY_FIELDS)} (or true), got {value!r}")
    unknown = sorted(set(value) - set(ENTRY_FIELDS))
    if unknown:
        raise _bad(name, f"unknown field(s) {unknown}; known: {', '.join(ENTRY_FIELDS)}")
    weight = float(value.get("weight", weights.get(name, 1.0)))
    if not np.isfinite(weight) or weight < 0:
        raise _bad(f"{name}.weight", f"must be a finite number >= 0, got {weight}")
    return ModelEntry(name, weight, value.get("device"), value.get("model"), value.get("url"),
                      bool(value.get("monitor", False)), value.get("api_key"))


def parse_reward_spec(value: dict | None = None, preset: str | None = None) -> RewardSpec:
    """A :class:`RewardSpec` from a mapping (see the module docstring) laid over a preset; errors name the field."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"reward_preset: {preset!r} is not one of {', '.join(PRESETS)}")
    mapping = {**PRESETS.get(preset, {}), **(value or {})}
    if not mapping:
        raise ValueError("reward: give a reward mapping or a reward_preset")
    known = {"judge", "combine", "weights", *MODEL_REWARDS}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise _bad(unknown[0], f"unknown reward; known: {', '.join(sorted(known))}")
    combine = mapping.get("combine", "product")
    if combine not in ("product", "sum"):
        raise _bad("combine", f"must be 'product' or 'sum', got {combine!r}")
    weights = dict(mapping.get("weights") or {})
    unknown = sorted(set(weights) - {*MODEL_REWARDS, *JUDGE_COMPONENTS})
    if unknown:
        raise _bad("weights", f"unknown component(s) {unknown}")
    judge = mapping.get("judge", False)
    judge_monitor = isinstance(judge, dict) and bool(judge.get("monitor", False))
    if judge is True:
        judge = {}
    if isinstance(judge, dict):
        judge = {f"w_{c}": float(judge.get(f"w_{c}", weights.get(c, 1.0))) for c in JUDGE_COMPONENTS}
        RewardConfig(**judge)  # validates the weights, naming the field
    elif judge is not False and judge is not None:
        raise _bad("judge", f"expected true, false or a mapping of w_sem, w_spa, w_ri, w_pi; got {judge!r}")
    else:
        judge = None
    models = tuple(_entry(name, mapping[name], weights) for name in MODEL_REWARDS
                   if name in mapping and mapping[name] is not False)
    if judge is None and not models:
        raise ValueError("reward: no component left (no judge and no reward model)")
    return RewardSpec(judge, models, combine, judge_monitor, weights)


class ComposedReward(PolicyReward):
    """A policy reward: the judge's components and each reward model's score, combined into one total.

    Parameters
    ----------
    judge : JudgeReward or None
        GoT-R1's four judge rewards (their weights are the ``JudgeReward``'s ``RewardConfig``).
    models : dict[str, tuple[Metric, float, bool]]
        Component name -> (model with ``score(prompts, images)``, weight, monitor). A monitor is scored and
        logged but left out of the total.
    combine : {"product", "sum"}
    judge_monitor : bool
        Log the judge's components without optimising them.
    """

    def __init__(self, judge: JudgeReward | None, models: dict, combine: str = "product", judge_monitor: bool = False):
        if judge is None and not models:
            raise ValueError("ComposedReward needs a judge or at least one reward model")
        self.judge, self.models, self.combine, self.judge_monitor = judge, dict(models), combine, judge_monitor

    @property
    def monitors(self) -> tuple[str, ...]:
        """Components logged but not optimised."""
        judged = JUDGE_COMPONENTS if self.judge_monitor and self.judge is not None else ()
        return (*judged, *(name for name, (_, _, monitor) in self.models.items() if monitor))

    def __call__(self, prompts, chains, images) -> ScoredBatch:
        n = len(prompts)
        components, weights, failed, details = {}, {}, {}, {}
        failures = requests = 0
        if self.judge is not None:
            judged = self.judge(prompts, chains, images)
            components.update(judged.components)
            failed.update(judged.failed)
            weights.update({c: self.judge.config.weight(c) for c in judged.components})
            failures, requests, details["judge"] = judged.failures, judged.requests, judged.details
        for name, (model, weight, _) in self.models.items():
            if images is None:
                components[name] = np.full(n, np.nan)
                continue
            components[name] = np.asarray(model.score(list(prompts), images), dtype=np.float64)
            failed[name] = int(getattr(model, "last_failures", 0)) / max(n, 1)  # a remote reward's lost images
            weights[name] = weight
        optimised = {name: v for name, v in components.items() if name not in self.monitors}
        total = combine_scores(optimised, self.combine, weights, averaged=("sem", "spa"))
        return ScoredBatch(total, {k: np.asarray(v, dtype=np.float32) for k, v in components.items()}, failures,
                           details, requests, failed)

    def check(self) -> None:
        """Before training: the judge answers and every remote reward server hosts its reward."""
        if self.judge is not None:
            self.judge.check()
        for name, (model, _, _) in self.models.items():
            if hasattr(model, "check"):
                try:
                    model.check()
                except Exception as err:  # an unreachable server means the same as a dead judge
                    raise JudgeUnavailableError(f"reward {name}: {err}") from err


def load_reward_model(entry: ModelEntry, tiny: bool = False):
    """The model of one entry: a :class:`~gotr1.rewards.remote.RemoteReward` when it has a ``url``, else the
    metric class loaded on ``entry.device`` (``tiny``: random tiny weights, for offline smoke runs)."""
    if entry.url:
        from gotr1.rewards.remote import RemoteReward

        return RemoteReward(entry.url, entry.name, api_key=entry.api_key)
    device = entry.device or "cpu"
    if entry.name in ("hps", "pickscore", "clipscore"):
        from gotr1.metrics import preference

        if tiny:
            return preference.tiny(entry.name)
        cls = preference.PREFERENCE_MODELS[entry.name]
        return cls.from_pretrained(entry.model, device=device) if entry.model else cls.from_pretrained(device=device)
    if entry.name == "geneval":
        from gotr1.metrics.geneval import GenEvalScore, tiny_mask2former
        from gotr1.metrics.tiny_models import tiny_clip

        return GenEvalScore(*tiny_mask2former(), *tiny_clip()) if tiny else GenEvalScore.from_pretrained(device=device)
    from gotr1.metrics.compbench import BlipVQAScore, SpatialScore, load_metrics

    if entry.name == "blip_vqa":
        if tiny:
            return load_metrics(["color"], tiny=True)["color"]
        return BlipVQAScore.from_pretrained(entry.model, device=device) if entry.model else BlipVQAScore.from_pretrained(device=device)
    # As a reward the detector is asked for every noun: UniDet's closed vocabulary (the benchmark's) would
    # score every prompt with another noun 0 whatever the image shows, a signal that carries nothing.
    if tiny:
        detector = load_metrics(["spatial"], tiny=True)["spatial"]
        return SpatialScore(detector.model, detector.processor, detector.batch_size, detector.threshold, vocabulary="open")
    return SpatialScore.from_pretrained(entry.model or SpatialScore.DEFAULT_ID, device=device, vocabulary="open")


def build_composed_reward(spec: RewardSpec, judge_factory=None, tiny: bool = False) -> ComposedReward:
    """The :class:`ComposedReward` of ``spec``; ``judge_factory()`` builds the judge when the spec has one."""
    judge = None
    if spec.judge is not None:
        if judge_factory is None:
            raise ValueError("reward.judge: the spec has a judge but no judge was given")
        judge = JudgeReward(judge_factory(), RewardConfig(**spec.judge, mode=spec.combine))
    models = {e.name: (load_reward_model(e, tiny), e.weight, e.monitor) for e in spec.models}
    return ComposedReward(judge, models, spec.combine, spec.judge_monitor)

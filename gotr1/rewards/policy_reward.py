"""What a trainer asks of a reward: one call per rollout batch, every component, a total, failures.

A *policy reward* is a callable ``(prompts, chains, images) -> ScoredBatch``. Two adapters cover everything ``gotr1.rewards`` offers:

* :class:`JudgeReward` runs GoT-R1's four MLLM rewards in one batched judge call
  (:func:`gotr1.rewards.mllm.score_batch`), cached R_sem / R_spa, weighed by
  :class:`~gotr1.rewards.combine.RewardConfig`;
* :class:`RuleReward` combines offline rewards with the common ``(prompts, chains, images, judge)``
  signature (e.g. ``LayoutRuleReward`` for the chain stage, ``ColorRuleReward`` for the image stage).

Both combine through :func:`~gotr1.rewards.combine.combine_scores` (one NaN rule). A NaN total means "no
usable score": :func:`gotr1.kernels.advantages.group_advantages` gives it advantage 0. Judge failures and unparsable replies score 0 inside ``score_batch`` (never a good score) and are counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gotr1.rewards.combine import RewardConfig, combine_scores, nan_stat
from gotr1.rewards.mllm import RewardCache, score_batch


@dataclass
class ScoredBatch:
    """Rewards of one rollout batch: ``total`` float32 ``[N]`` and each named component ``[N]``."""

    total: np.ndarray
    components: dict[str, np.ndarray]
    failures: int = 0
    details: dict = field(default_factory=dict)
    requests: int = 0
    """Judge requests behind the scores (0 for rule rewards); ``failures`` counts those that failed."""
    failed: dict[str, float] = field(default_factory=dict)
    """Per component, the share of samples whose score came from a failure (scored 0): a dead reward server
    or judge shows here before it shows in the mean."""

    def means(self) -> dict[str, float]:
        """Mean of each component and of ``total`` over the samples where it applies."""
        return {**{name: nan_stat(v) for name, v in self.components.items()}, "total": nan_stat(self.total)}


class PolicyReward:
    """What a trainer calls once per rollout batch: ``(prompts, chains, images) -> ScoredBatch``.

    Subclasses: :class:`JudgeReward`, :class:`RuleReward`, :class:`~gotr1.rewards.compose.ComposedReward`. An
    optional ``check()`` is run before the first step; an optional ``monitors`` names components that are
    logged but not optimised.
    """

    def __call__(self, prompts, chains, images) -> ScoredBatch:
        raise NotImplementedError


class JudgeUnavailableError(RuntimeError):
    """The judge cannot be reached or keeps failing; training against it would learn nothing."""


def _describe(judge) -> str:
    url = getattr(judge, "url", None)  # OpenAIJudge's endpoint; in-process judges have none
    return f"{type(judge).__name__}({url})" if url else type(judge).__name__


class JudgeReward(PolicyReward):
    """GoT-R1's dual-stage MLLM reward: R = R_PI * (R_sem + R_spa) / 2 * R_RI by default.

    Parameters
    ----------
    judge : Judge
        ``TransformersJudge`` in process, or ``OpenAIJudge`` against a vLLM / SGLang server.
    config : RewardConfig, optional
        Weights and product / sum mode.
    cache : bool
        Reuse R_sem / R_spa of a (prompt, chain) pair seen before.
    aesthetic : callable, optional
        A reward with the common signature, required when ``config.w_aes > 0`` (GoT-R1's optional factor).
    """

    def __init__(self, judge, config: RewardConfig | None = None, cache: bool = True, aesthetic=None):
        self.judge = judge
        self.config = config or RewardConfig()
        self.cache = RewardCache() if cache else None
        self.aesthetic = aesthetic

    def __call__(self, prompts, chains, images) -> ScoredBatch:
        batch = score_batch(prompts, chains, images, self.judge, self.config, cache=self.cache,
                            aesthetic=self.aesthetic)
        components = {name: getattr(batch, name) for name in ("sem", "spa", "ri", "pi") if self.config.weight(name) > 0}
        failures = int(batch.details.get("failed", 0)) + int(batch.details.get("unparsed", 0))
        n = max(len(prompts), 1)
        failed = {name: min(1.0, (batch.details.get("failed_per_component", {}).get(name, 0)
                                  + batch.details.get("unparsed_per_component", {}).get(name, 0)) / n)
                  for name in components}
        return ScoredBatch(batch.total, components, failures, batch.details, int(batch.details.get("requests", 0)),
                           failed)

    def check(self) -> None:
        """Ask the judge one small question before training; raise :class:`JudgeUnavailableError` without a reply.

        A dead or misconfigured judge server would otherwise score every sample 0 and let the run go on
        with zero advantages.
        """
        request = [{"role": "user", "content": 'Reply with the JSON {"score": 5} and nothing else.'}]
        try:
            reply = self.judge.chat([request])[0]
        except Exception as err:  # any failure here means the same: no judge to train against
            reply, reason = None, repr(err)
        else:
            reason = "no reply"
        if reply is None:
            raise JudgeUnavailableError(f"the judge {_describe(self.judge)} did not answer a check request ({reason}); "
                                        "start it or fix judge_url / judge_model before training")


class RuleReward(PolicyReward):
    """Offline rewards combined into one total.

    Parameters
    ----------
    rewards : dict[str, callable]
        Component name -> reward with the common signature ``(prompts, chains, images, judge) ->
        (float32 [N], details)``.
    mode : {"product", "sum"}
        ``product`` multiplies the components (GoT-R1's form); ``sum`` takes their mean. A NaN component
        (not applicable to that prompt, e.g. no colour asked for) is left out of either; all NaN gives NaN
        (:func:`~gotr1.rewards.combine.combine_scores`).
    """

    def __init__(self, rewards: dict, mode: str = "product"):
        if not rewards:
            raise ValueError("RuleReward needs at least one reward")
        if mode not in ("product", "sum"):
            raise ValueError(f"mode must be 'product' or 'sum', got {mode!r}")
        self.rewards, self.mode = dict(rewards), mode

    def __call__(self, prompts, chains, images) -> ScoredBatch:
        components, details = {}, {}
        for name, reward in self.rewards.items():
            scores, details[name] = reward(prompts, chains, images, None)
            components[name] = np.asarray(scores, dtype=np.float32)
        total = combine_scores(components, self.mode)
        return ScoredBatch(total, components, 0, details)


def as_policy_reward(reward, mode: str = "product"):
    """``reward`` as a callable ``(prompts, chains, images) -> ScoredBatch``.

    Accepts a :class:`PolicyReward` (returned as is), a dict of rule rewards, or one rule reward with the
    common signature.
    """
    if isinstance(reward, PolicyReward):
        return reward
    if isinstance(reward, dict):
        return RuleReward(reward, mode)
    if callable(reward):
        return RuleReward({getattr(reward, "__name__", "reward"): reward}, mode)
    raise TypeError(f"reward must be a JudgeReward, a RuleReward, a dict of rewards or a reward callable, got {type(reward).__name__}")

"""GoT-R1's rewards: an MLLM judge scores the reasoning chain and the image; the scores multiply.

Every reward is a callable ``(prompts, chains, images, judge) -> (scores float32 [N] in [0, 1], details)``
(NaN: not applicable). Judge rewards: :func:`semantic_reward` (R_sem), :func:`spatial_reward` (R_spa),
:func:`grounding_reward` (R_RI), :func:`prompt_image_reward` (R_PI); :func:`score_batch` computes all of
them from one batched judge call and :func:`combine` forms the paper's product
``R = R_PI * ((R_sem + R_spa) / 2) * R_RI`` (through :func:`combine_scores`, the one combiner and NaN rule). Judges: :class:`TransformersJudge` (in-process Qwen2.5-VL),
:class:`OpenAIJudge` (vLLM / SGLang servers), :func:`tiny_judge` (random weights, for tests). Offline rule
rewards: :class:`LayoutRuleReward`, :class:`ColorRuleReward`. What a trainer calls, once per rollout batch:
a policy reward, :class:`JudgeReward` or :class:`RuleReward` (:mod:`gotr1.rewards.policy_reward`);
:class:`RewardWorker` scores batch k on a background thread while the trainer goes on.

How this departs from the paper (arXiv 2505.17022): the rubric wording is ours (the criteria are the
paper's); scores of 0-100 are accepted and unreadable replies score 0; R_RI grounds each distinct object
name once and takes each chain box's best IoU among the returned boxes; R_sem and R_spa are cached.
"""

from gotr1.rewards.combine import COMPONENTS, RewardConfig, combine, combine_scores, nan_stat
from gotr1.rewards.coords import best_iou, pixels_to_unit, smart_resize
from gotr1.rewards.judges import Judge, TransformersJudge, tiny_judge
from gotr1.rewards.mllm import (
    RewardBatch,
    RewardCache,
    grounding_reward,
    prompt_image_reward,
    score_batch,
    semantic_reward,
    spatial_reward,
)
from gotr1.rewards.openai_judge import OpenAIJudge
from gotr1.rewards.parsing import extract_json, normalize_score, parse_bboxes, parse_score
from gotr1.rewards.policy_reward import (
    JudgeReward,
    JudgeUnavailableError,
    PolicyReward,
    RuleReward,
    ScoredBatch,
    as_policy_reward,
)
from gotr1.rewards.rules import ColorRuleReward, LayoutRuleReward, read_prompt, relation_holds
from gotr1.rewards.templates import TEMPLATES, PromptTemplate
from gotr1.rewards.worker import RewardWorker

__all__ = [
    "COMPONENTS",
    "ColorRuleReward",
    "Judge",
    "JudgeReward",
    "JudgeUnavailableError",
    "LayoutRuleReward",
    "OpenAIJudge",
    "PolicyReward",
    "PromptTemplate",
    "RewardBatch",
    "RewardCache",
    "RewardConfig",
    "RewardWorker",
    "RuleReward",
    "ScoredBatch",
    "TEMPLATES",
    "TransformersJudge",
    "as_policy_reward",
    "best_iou",
    "combine",
    "combine_scores",
    "extract_json",
    "grounding_reward",
    "nan_stat",
    "normalize_score",
    "parse_bboxes",
    "parse_score",
    "pixels_to_unit",
    "prompt_image_reward",
    "read_prompt",
    "relation_holds",
    "score_batch",
    "semantic_reward",
    "smart_resize",
    "spatial_reward",
    "tiny_judge",
]

"""The MLLM judge's prompt-image rubric (R_PI) as an evaluator metric (``gotr1 eval --benchmark judge``)."""

from __future__ import annotations

import numpy as np

from gotr1.metrics.metric import Metric, check_batch, rgb_images
from gotr1.rewards.mllm import prompt_image_reward


class JudgeRubricScore(Metric):
    """R_PI of each image: 0-10 from the judge, mapped to [0, 1]; NaN where the judge gave no usable reply
    (a failed request is "not scored", never a 0 in an evaluation table)."""

    name = "judge_pi"

    def __init__(self, judge):
        self.judge = judge

    def score(self, prompts, images) -> np.ndarray:
        images = rgb_images(images)
        check_batch(prompts, images)
        scores, details = prompt_image_reward(list(prompts), [""] * len(prompts), images, self.judge)
        scores = np.asarray(scores, dtype=np.float64)
        scores[details.get("failed_samples", [])] = np.nan
        return scores

"""GRPO plumbing proofs: a reward on one stage alone drives that stage to its maximum and leaves the other be.

Each run starts from the same random tiny policy and trains with the whole-output loss (chain and image
tokens, as GoT-R1). A chain-only reward (the share of digits in the chain text) must reach 0.9 within 60
steps, an image-only reward (the share of one codebook entry among the image tokens) within 30; in each run
the other stage's statistic must stay within 0.1 of where it started. Together they show that the sign,
the group advantages, the token masks and both heads' gradients are right, whatever the demo's task is.
"""

import numpy as np
import pytest
import torch

from gotr1.grpo.config import GRPOConfig
from gotr1.grpo.trainer import GRPOTrainer
from gotr1.kernels import _dispatch
from gotr1.policy.model import tiny_janus
from gotr1.rollout import Sampling, rollout

PROMPTS = ["a red square on the left of a blue circle", "two green triangles", "a yellow circle above a black square",
           "a pink square and a brown triangle"]
CHAIN_TOKENS = 12
CHAIN_STEPS, IMAGE_STEPS = 60, 30  # the learning rate decays to 0 over these (cosine)


def digit_share(prompts, chains, images=None, judge=None):
    """Chain-only reward: the share of the chain text's characters that are digits."""
    return np.array([sum(ch.isdigit() for ch in c.text) / max(len(c.text), 1) for c in chains], dtype=np.float32), {}


digit_share.__name__ = "digits"


class RecordingTrainer(GRPOTrainer):
    """Keeps the last rollout's image tokens, which an image-token reward reads."""

    def _rollout(self, prompts, extra=0):
        r = super()._rollout(prompts, extra)
        self.last_image_ids = r.image_ids
        return r


def _code_share_reward(trainer_box: list, code: int):
    def code_share(prompts, chains, images, judge=None):
        return (trainer_box[0].last_image_ids == code).float().mean(1).numpy(), {}

    code_share.__name__ = "code_share"
    return code_share


def _held_out_statistics(model, processor, code: int | None = None) -> tuple[float, torch.Tensor, float]:
    """Digit share of chains, image tokens and share of ``code`` over 4 prompts x 16 samples at a fixed seed."""
    r = rollout(model.eval(), processor, PROMPTS, 16, Sampling(max_chain_tokens=CHAIN_TOKENS, seed=123))
    digits = float(digit_share(PROMPTS, r.chains)[0].mean())
    share = float((r.image_ids == code).float().mean()) if code is not None else float("nan")
    return digits, r.image_ids, share


def _train(tmp_path, model, processor, reward, lr: float, steps: int, trainer_box: list):
    config = GRPOConfig(output_dir=str(tmp_path), use_lora=False, beta=0.0, lr=lr, max_steps=steps, warmup_steps=0,
                        prompts_per_step=4, group_size=8, max_chain_tokens=CHAIN_TOKENS, micro_batch_size=32,
                        save_every=steps, sample_every=0, progress=False)
    trainer = RecordingTrainer(model, processor, reward, config, PROMPTS)
    trainer_box.append(trainer)
    return trainer, trainer.train()


@pytest.fixture(scope="module")
def start():
    """The fixed starting policy, its held-out statistics, and the codebook entry it draws most often.

    The kernels' torch references run throughout, as in a CPU user's run: the kernels are checked against
    them in their own tests, and under the Triton interpreter these GRPO runs would take minutes.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_dispatch, "INTERPRETING", False)
        model, processor = tiny_janus(seed=0)
        digits, image_ids, _ = _held_out_statistics(model, processor)
        code = int(torch.bincount(image_ids.flatten()).argmax())
        share = float((image_ids == code).float().mean())
        yield model.state_dict(), processor, digits, code, share


def _policy(start):
    model, _ = tiny_janus(seed=0)
    model.load_state_dict(start[0])
    return model


@pytest.mark.slow  # the image-only twin below keeps the stage split in the default run
def test_a_chain_only_reward_is_maximised_and_the_images_are_left_alone(tmp_path, start):
    _, processor, digits_before, code, share_before = start
    box = []
    trainer, log = _train(tmp_path, _policy(start), processor, digit_share, lr=1e-2, steps=CHAIN_STEPS, trainer_box=box)
    digits_after, _, share_after = _held_out_statistics(trainer.model, processor, code)
    assert digits_before < 0.3, digits_before
    assert digits_after >= 0.9, f"chain reward {digits_before:.3f} -> {digits_after:.3f}; per step {[round(m['reward_mean'], 2) for m in log]}"
    assert abs(share_after - share_before) <= 0.1, f"image tokens moved without an image reward: {share_before:.3f} -> {share_after:.3f}"


def test_an_image_only_reward_is_maximised_and_the_chains_are_left_alone(tmp_path, start):
    _, processor, digits_before, code, share_before = start
    box = []
    trainer, log = _train(tmp_path, _policy(start), processor, _code_share_reward(box, code), lr=5e-3, steps=IMAGE_STEPS,
                          trainer_box=box)
    digits_after, _, share_after = _held_out_statistics(trainer.model, processor, code)
    assert share_before < 0.2, share_before
    assert share_after >= 0.9, f"image reward {share_before:.3f} -> {share_after:.3f}; per step {[round(m['reward_mean'], 2) for m in log]}"
    assert abs(digits_after - digits_before) <= 0.1, f"chains moved without a chain reward: {digits_before:.3f} -> {digits_after:.3f}"

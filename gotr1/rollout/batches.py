"""The data a rollout produces: :class:`Rollout` (what rewards and the GRPO loss consume) and its phases.

A :class:`Rollout` *is* a :class:`~gotr1.policy.tokens.TokenBatch`, so the loss reads its tokens and
``chain_mask`` directly, with no repacking. Row ``i * num_samples + s`` holds sample ``s`` of prompt ``i``
throughout (``group[row] == i``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from gotr1.policy.tokens import LogProbs, TokenBatch
from gotr1.rollout.kv_cache import RowCache
from gotr1.rollout.sampling import Sampling


@dataclass
class Rollout(TokenBatch):
    """One GRPO rollout: the :class:`TokenBatch` of ``B = len(prompts) * num_samples`` rows, plus what
    generated it, its log-probabilities, texts and pixels.

    Attributes
    ----------
    prompts : list of str
        The prompts, one per group.
    num_samples : int
    group : Tensor
        int64 ``[B]``: the prompt index of each row.
    chain_logprobs : Tensor
        float32 ``[B, T]``: log-probability of each sampled chain token under ``softmax(logits / temperature)``
        (0 where ``chain_mask`` is False).
    image_logprobs : Tensor
        float32 ``[B, N]`` (the conditional branch by default, see :func:`gotr1.rollout.images.generate_images`).
    texts : list of str
        Decoded chains (GoT tags kept, ``<begin_of_image>`` dropped).
    chains : list of Chain
        ``parse_chain(text)`` of each row.
    images : Tensor or None
        uint8 ``[B, S, S, 3]`` on the CPU; None when the rollout was asked not to decode.
    sampling : Sampling
        What generated it (GRPO recomputes log-probabilities at the same temperature).
    """

    prompts: list
    num_samples: int
    group: torch.Tensor
    chain_logprobs: torch.Tensor
    image_logprobs: torch.Tensor
    texts: list
    chains: list
    images: torch.Tensor | None
    sampling: Sampling

    @property
    def logprobs(self) -> LogProbs:
        """The rollout's log-probabilities: the old policy's in GRPO's ratio (with one update per rollout)."""
        return LogProbs(self.chain_logprobs, self.image_logprobs)

    @property
    def row_prompts(self) -> list[str]:
        """The prompt of each row."""
        return [self.prompts[g] for g in self.group.tolist()]


@dataclass
class ImageBatch:
    """Image tokens of a :class:`ChainBatch`, row for row.

    Attributes
    ----------
    image_ids : Tensor
        int64 ``[B, N]`` VQ codebook indices in raster order (``N = (image_size / 16) ** 2``).
    image_logprobs : Tensor
        float32 ``[B, N]`` log-probabilities of those tokens.
    """

    image_ids: torch.Tensor
    image_logprobs: torch.Tensor


@dataclass
class ChainBatch(Rollout):
    """A :class:`Rollout` after its chain phase: no image tokens yet (``image_ids`` ``[B, 0]``), and the
    state the image phase continues from.

    Attributes
    ----------
    cache : RowCache or None
        The conditional KV cache, kept for :func:`~gotr1.rollout.images.generate_images`, which consumes it
        (then None).
    boi_hidden : Tensor or None
        ``[B, H]`` final hidden state at each row's ``<begin_of_image>``: the first image token's input.
    """

    cache: RowCache | None = None
    boi_hidden: torch.Tensor | None = None

    def with_images(self, images: ImageBatch, pixels: torch.Tensor | None) -> Rollout:
        """The finished :class:`Rollout`: these chains with their image tokens and decoded pixels."""
        done = {f.name: getattr(self, f.name) for f in dataclasses.fields(Rollout)}
        return Rollout(**{**done, "image_ids": images.image_ids, "image_logprobs": images.image_logprobs,
                          "images": pixels})

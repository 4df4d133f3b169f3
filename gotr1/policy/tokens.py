"""The token layout every stage shares: the prompt format, the batch type and its log-probabilities.

A row is ``BOS + chat(prompt)`` (left-padded), then the chain ending in ``<begin_of_image>`` (right-padded),
then ``N`` image tokens. Generation lays out its KV cache this way (:mod:`gotr1.rollout`), SFT builds its
batches this way (:mod:`gotr1.train.sft`) and the teacher-forced forward (:mod:`gotr1.policy.forward`) reads
it, so a rollout is scored by the loss exactly as it was sampled. See ``docs/architecture.md``.

Prompt format: the GoT-R1 instruction ``Follow the caption to generate an image through a chain of
thought process: {prompt}`` in Janus-Pro's chat format with an empty system prompt,
``<|User|>: {instruction}\\n\\n<|Assistant|>:`` preceded by BOS, which is what GoT-R1's reference
inference builds (``apply_sft_template_for_multi_turn_prompts(..., system_prompt="")``). transformers'
``JanusProcessor`` only appends ``<begin_of_image>`` in image mode and leaves the chat format to the
checkpoint's template, so gotr1 writes the format itself and tokenizes without added special tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gotr1.policy.model import GoTTokens

PROMPT_TEMPLATE = "Follow the caption to generate an image through a chain of thought process: {prompt}"
CHAT_FORMAT = "<|User|>: {content}\n\n<|Assistant|>:"


def format_prompt(prompt: str) -> str:
    """The chat text of one prompt (without BOS, which :func:`encode_prompt` adds as a token)."""
    return CHAT_FORMAT.format(content=PROMPT_TEMPLATE.format(prompt=prompt))


def encode_prompt(tokenizer, prompt: str, bos: int) -> list[int]:
    """Token ids of one prompt as the policy sees it: BOS, then the chat text of :func:`format_prompt`."""
    return [bos] + tokenizer(format_prompt(prompt), add_special_tokens=False)["input_ids"]


def pad_sequences(sequences: list[list[int]], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 ids and bool mask ``[N, max_len]`` of token lists, padded on the left (prompts) or right (chains)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, seq in enumerate(sequences):
        cols = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, cols] = torch.tensor(seq, dtype=torch.long)
        mask[row, cols] = True
    return ids, mask


@dataclass
class TokenBatch:
    """Prompt, chain and image tokens of ``B`` rows: what the teacher-forced forward and the losses consume.

    Attributes
    ----------
    prompt_ids, prompt_mask : Tensor
        int64 / bool ``[B, P]``: BOS + chat text, left-padded.
    chain_ids : Tensor
        int64 ``[B, T]``: chain tokens then ``<begin_of_image>``, right-padded.
    chain_mask : Tensor
        bool ``[B, T]``: the chain tokens a loss covers. In a rollout, the tokens the policy sampled (not
        padding, not a ``<begin_of_image>`` appended at the length cap); in an SFT batch, the real chain
        tokens of conditional rows.
    chain_lengths : Tensor
        int64 ``[B]``: chain tokens per row including ``<begin_of_image>`` (what attention sees).
    image_ids : Tensor
        int64 ``[B, N]``: VQ codebook indices in raster order.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    chain_ids: torch.Tensor
    chain_mask: torch.Tensor
    chain_lengths: torch.Tensor
    image_ids: torch.Tensor

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def rows(self, index: slice) -> TokenBatch:
        """The rows ``index`` as a :class:`TokenBatch` (views, no copies): one micro-batch."""
        return TokenBatch(self.prompt_ids[index], self.prompt_mask[index], self.chain_ids[index],
                          self.chain_mask[index], self.chain_lengths[index], self.image_ids[index])

    def to(self, device) -> TokenBatch:
        """The same rows on ``device``."""
        return TokenBatch(*(t.to(device) for t in (self.prompt_ids, self.prompt_mask, self.chain_ids,
                                                   self.chain_mask, self.chain_lengths, self.image_ids)))


@dataclass
class LogProbs:
    """float32 log-probabilities of a batch's chain tokens ``[B, T]`` and image tokens ``[B, N]``."""

    chain: torch.Tensor
    image: torch.Tensor

    def rows(self, index: slice) -> LogProbs:
        return LogProbs(self.chain[index], self.image[index])


def chain_token_mask(batch: TokenBatch) -> torch.Tensor:
    """bool ``[B, T]``: the real chain tokens (``<begin_of_image>`` included) of each row."""
    width = batch.chain_ids.shape[1]
    return torch.arange(width, device=batch.chain_ids.device)[None] < batch.chain_lengths[:, None]


def unconditional(batch: TokenBatch, rows: torch.Tensor, tokens: GoTTokens) -> TokenBatch:
    """A copy of ``batch`` where ``rows`` (bool ``[B]``) become classifier-free-guidance rows.

    Janus trains CFG by replacing the caption with padding: such a row keeps BOS and
    ``<begin_of_image>``, every token between becomes the pad token and stays attended, and only its
    image tokens are learned (its ``chain_mask`` is cleared). This mirrors the unconditional rows of
    :func:`gotr1.rollout.images.generate_images`.
    """
    prompt_ids, chain_ids = batch.prompt_ids.clone(), batch.chain_ids.clone()
    drop_prompt = rows[:, None] & batch.prompt_mask & (prompt_ids != tokens.bos)
    prompt_ids[drop_prompt] = tokens.pad
    real = chain_token_mask(batch)
    last = torch.arange(chain_ids.shape[1], device=chain_ids.device)[None] == (batch.chain_lengths - 1)[:, None]
    chain_ids[rows[:, None] & real & ~last] = tokens.pad
    return TokenBatch(prompt_ids, batch.prompt_mask, chain_ids, batch.chain_mask & ~rows[:, None],
                      batch.chain_lengths, batch.image_ids)

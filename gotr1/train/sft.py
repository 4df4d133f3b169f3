"""Stage 1 of GoT-R1: supervised fine-tuning of Janus-Pro on GoT data (chain tokens and image tokens).

Each row becomes ``BOS + chat(prompt) + chain + <begin_of_image> + image tokens``, laid out like a
rollout (:mod:`gotr1.policy.tokens`), so SFT trains exactly the sequences generation produces. The
chain tokens (``<begin_of_image>`` included) are learned through the text head, the image tokens through
the generation head. A ``cfg_dropout`` fraction of rows replace prompt and chain by padding, as Janus
trains classifier-free guidance; those rows learn only their image tokens.

Departures from the paper: GoT-R1 trains 70k steps on LAHR-, JourneyDB- and FLUX-GoT; gotr1 trains on any
GoT JSONL file (the synthetic one of :mod:`gotr1.demo.synthetic` offline). ``<end_of_image>`` is not appended:
nothing is predicted after the last image token, so it would only cost compute.

Run: ``gotr1 sft --config configs/sft_demo.yaml`` or, in Python,
``SFTTrainer(model, processor, SFTConfig(data="data.jsonl")).train()``.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from gotr1.policy.forward import teacher_forced_hidden
from gotr1.policy.model import got_token_ids, janus_parts
from gotr1.policy.precision import autocast
from gotr1.policy.tokens import TokenBatch, encode_prompt, pad_sequences, unconditional
from gotr1.train.config import SFTConfig
from gotr1.train.data import GoTDataset
from gotr1.train.image_tokens import ImageTokenCache
from gotr1.train.shell import TrainerShell


class SFTTrainer(TrainerShell):
    """Supervised fine-tuning of a Janus-Pro policy on a GoT data file.

    Parameters
    ----------
    model, processor :
        From :func:`gotr1.policy.model.load_policy` or :func:`gotr1.policy.model.tiny_janus`.
    config : SFTConfig
    dataset : GoTDataset, optional
        Default: ``GoTDataset(config.data, config.skip_invalid)``.
    """

    name = "sft"

    def __init__(self, model, processor, config: SFTConfig, dataset: GoTDataset | None = None):
        self.config = config
        self.processor = processor
        self.tokens = got_token_ids(processor)
        if dataset is None:
            if not config.data:
                raise ValueError("SFTConfig.data: give a GoT JSONL file (or pass dataset=)")
            dataset = GoTDataset(config.data, skip_invalid=config.skip_invalid)
        self.dataset = dataset
        self._prepare(model, len(dataset))
        self.image_cache = ImageTokenCache(self.model, config.image_cache_dir or self.output_dir / "image_tokens")

    # -----------------------------------------------------------------------------------------
    # Data
    # -----------------------------------------------------------------------------------------

    def _tokenize_chain(self, row) -> list[int]:
        ids = self.processor.tokenizer(row.chain, add_special_tokens=False)["input_ids"] + [self.tokens.boi]
        if len(ids) > self.config.max_chain_tokens:
            raise ValueError(f"{row.file or self.dataset.path}:{row.line}: chain has {len(ids)} tokens, more than "
                             f"SFTConfig.max_chain_tokens={self.config.max_chain_tokens}")
        return ids

    def make_batch(self, rows, generator: torch.Generator) -> TokenBatch:
        """The rows as a :class:`TokenBatch` on the policy's device, CFG dropout applied (a dropped row's
        caption and chain become padding, out of ``chain_mask``: only its image tokens are learned)."""
        prompts = [encode_prompt(self.processor.tokenizer, r.prompt, self.tokens.bos) for r in rows]
        prompt_ids, prompt_mask = pad_sequences(prompts, self.tokens.pad, left=True)
        chains = [self._tokenize_chain(r) for r in rows]
        chain_ids, chain_mask = pad_sequences(chains, self.tokens.pad, left=False)
        batch = TokenBatch(prompt_ids, prompt_mask, chain_ids, chain_mask, torch.tensor([len(c) for c in chains]),
                           self.image_cache.encode([r.image_path for r in rows]))
        dropped = torch.rand(len(rows), generator=generator) < self.config.cfg_dropout
        if dropped.any():
            batch = unconditional(batch, dropped, self.tokens)
        return batch.to(next(self.model.parameters()).device)

    # -----------------------------------------------------------------------------------------
    # Loss and steps
    # -----------------------------------------------------------------------------------------

    def loss(self, batch: TokenBatch) -> tuple[torch.Tensor, dict]:
        """Weighted chain + image cross-entropy (token means) of one micro-batch, and its parts."""
        janus = janus_parts(self.model)
        device_type = batch.prompt_ids.device.type
        with autocast(device_type, self.config.mixed_precision):
            chain_hidden, image_hidden = teacher_forced_hidden(self.model, batch)
            chain_mask = batch.chain_mask
            chain_logits = janus.lm_head(chain_hidden[chain_mask])
            image_logits = janus.model.generation_head(image_hidden)
        zero = image_logits.new_zeros((), dtype=torch.float32)
        chain_loss = F.cross_entropy(chain_logits.float(), batch.chain_ids[chain_mask]) if chain_mask.any() else zero
        image_loss = F.cross_entropy(image_logits.float().flatten(0, 1), batch.image_ids.flatten())
        total = self.config.chain_loss_weight * chain_loss + self.config.image_loss_weight * image_loss
        parts = {"chain_loss": chain_loss.item(), "image_loss": image_loss.item(),
                 "tokens": int(chain_mask.sum()) + batch.image_ids.numel()}
        return total, parts

    def train_step(self) -> dict:
        """One optimizer step over ``grad_accum`` micro-batches; returns its metrics."""
        cfg = self.config
        start = time.perf_counter()
        totals = {"loss": 0.0, "chain_loss": 0.0, "image_loss": 0.0, "tokens": 0}
        for micro in range(cfg.grad_accum):
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step * cfg.grad_accum + micro)
            rows = [self.dataset[i] for i in self.sampler.take(cfg.batch_size)]
            loss, parts = self.loss(self.make_batch(rows, generator))
            (loss / cfg.grad_accum).backward()
            totals["loss"] += loss.item() / cfg.grad_accum
            totals["chain_loss"] += parts["chain_loss"] / cfg.grad_accum
            totals["image_loss"] += parts["image_loss"] / cfg.grad_accum
            totals["tokens"] += parts["tokens"]
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm else float("inf"))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        seconds = time.perf_counter() - start
        return {"step": self.step, **totals, "lr": lr, "grad_norm": float(norm), "epoch": self.sampler.epoch,
                "tokens_per_s": totals["tokens"] / seconds, "rows_per_s": cfg.batch_size * cfg.grad_accum / seconds,
                "seconds": seconds}

    def _trainer_state(self) -> dict:
        return {"skipped_rows": len(self.dataset.skipped)}

    def _before_loop(self) -> None:
        if self.dataset.skipped:
            print(f"{self.dataset.path}: skipped {len(self.dataset.skipped)} invalid rows "
                  f"(first: line {self.dataset.skipped[0][0]}: {self.dataset.skipped[0][1]})")

    def _postfix(self, metrics: dict) -> dict:
        return {"loss": f"{metrics['loss']:.3f}", "chain": f"{metrics['chain_loss']:.3f}",
                "image": f"{metrics['image_loss']:.3f}"}

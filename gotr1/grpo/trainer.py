"""Stage 2 of GoT-R1: GRPO with dual-stage rewards over the whole output (chain and image tokens).

One step: draw ``prompts_per_step`` prompts -> :func:`gotr1.rollout.rollout` (``group_size`` chains and
images each, one batch) -> rewards (a policy reward, :mod:`gotr1.rewards.policy_reward`), scored on a
:class:`~gotr1.rewards.worker.RewardWorker` thread while the reference log-probs are computed ->
group-relative advantages -> ``num_iterations`` updates with the fused GRPO loss (:mod:`gotr1.grpo.update`)
-> AdamW step. The loop, resume and checkpoint cadence are :class:`~gotr1.train.shell.TrainerShell`'s. With LoRA the reference policy
is the base model with adapters disabled (no second copy); with ``beta == 0`` there is no reference pass.

Departures from the paper: the paper gives no clip range, KL weight or estimator; gotr1 uses the conventions
of ``docs/architecture.md`` (eps 0.2/0.2, beta 0.04, k3). Besides the LoRA matrices, the rows of the four GoT
tags in the embedding and text head are trained (see :mod:`gotr1.policy.lora`). With ``importance_level="sequence"`` a
sequence's chain and image parts get one ratio each.

Loss options beyond the paper (``GRPOConfig``, tabled in the README's "GRPO loss options"): ``dapo`` /
``cispo`` loss types; DAPO's dynamic sampling (``filter_zero_std_groups``: groups of equal rewards are dropped
and more prompts drawn, at most ``max_extra_rollouts`` more rollouts a step; the reference and teacher-forced
passes then follow the last scoring instead of overlapping it); masking of chains cut by the cap; truncated
importance sampling against the rollout (``tis_cap``); an entropy bonus and high-entropy-token selection.
Every step the trainer's teacher-forced log-probs of the rollout are computed and their gap to the rollout's
logged (``logprob_gap_mean``, ``logprob_gap_max``); rollout, log-prob passes and loss share one precision
(``mixed_precision``), so the gap is rounding. Before the first step the rollout's KV memory is estimated for
chains at the cap and checked against the device (:mod:`gotr1.rollout.memory`).

Distributed: under ``torchrun`` (with ``torch.distributed`` initialised by the caller, see ``gotr1 grpo``)
each rank generates whole groups; rewards are gathered so advantages and loss normalisation are global,
and the logged metrics cover every rank. Replicated (``fsdp=False``): each rank holds the whole model and
gradients are summed across ranks before the step, so every rank keeps identical weights. Sharded
(``fsdp=True``, :mod:`gotr1.policy.sharding`): FSDP2 splits weights, gradients and AdamW state across ranks,
gathers the weights for the rollout and layer by layer for the update, and reduce-scatters gradients.
Rank 0 writes checkpoints (whole, unsharded weights either way), logs and grids.

Run: ``gotr1 grpo --config configs/grpo_demo.yaml`` or
``GRPOTrainer(model, processor, reward, GRPOConfig(...), prompts).train()``.
"""

from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from gotr1.grpo.config import GRPOConfig
from gotr1.grpo.guard import RewardTrends
from gotr1.grpo.sample_grid import save_sample_grid
from gotr1.grpo.update import (
    logprob_gap,
    loss_and_backward,
    loss_normalizer,
    policy_logprobs,
    token_selection,
    truncated_chains,
)
from gotr1.kernels.grpo_loss import METRIC_NAMES, group_advantages
from gotr1.policy.model import got_token_ids, janus_parts
from gotr1.policy.precision import autocast, autocast_dtype
from gotr1.policy.sharding import (
    full_model_state,
    full_optimizer_state,
    full_tensor,
    gathered,
    load_full_optimizer_state,
    release,
    shard_policy,
)
from gotr1.policy.tokens import LogProbs, encode_prompt
from gotr1.rewards.combine import nan_stat
from gotr1.rewards.policy_reward import JudgeUnavailableError, ScoredBatch, as_policy_reward
from gotr1.rewards.worker import RewardWorker
from gotr1.rollout.batches import Rollout
from gotr1.rollout.generate import rollout
from gotr1.rollout.kv_cache import decoder_weight
from gotr1.rollout.memory import RolloutMemory, available_bytes, check_rollout_memory
from gotr1.train.checkpoint import read_trainer_state
from gotr1.train.distributed import gather_rows, rank_and_world, sum_over_ranks
from gotr1.train.shell import TrainerShell


_EXTRA_ROLLOUT_STREAM = 1_000_000  # beyond any step count: extra rollouts never reuse a step's noise


class NonFiniteLossError(RuntimeError):
    """Raised when ``max_bad_steps`` consecutive steps had a non-finite loss or gradient."""


class GRPOTrainer(TrainerShell):
    """GRPO for a Janus-Pro policy that writes GoT chains.

    Parameters
    ----------
    model, processor :
        The policy (usually an SFT checkpoint) from :func:`gotr1.policy.model.load_policy`.
    reward :
        A :class:`~gotr1.rewards.JudgeReward`, a :class:`~gotr1.rewards.RuleReward`, a dict of rule
        rewards or one rule reward (see :func:`~gotr1.rewards.as_policy_reward`; a dict multiplies).
    config : GRPOConfig
    prompts : list of str
        The training prompts; a seeded permutation per epoch is drawn from them.
    """

    name = "grpo"

    def __init__(self, model, processor, reward, config: GRPOConfig, prompts: list[str]):
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ValueError("prompts must be a non-empty list of non-empty strings")
        self.rank, self.world = rank_and_world()
        if config.fsdp and not dist.is_initialized():
            raise ValueError("GRPOConfig.fsdp=True needs torch.distributed initialised: run under torchrun "
                             "(`gotr1 grpo` joins the process group torchrun describes)")
        if config.prompts_per_step % self.world:
            raise ValueError(f"GRPOConfig.prompts_per_step={config.prompts_per_step} must divide evenly over "
                             f"{self.world} ranks")
        self.config, self.processor, self.prompts = config, processor, list(prompts)
        self.tokens = got_token_ids(processor)
        self.reward = as_policy_reward(reward)
        # Full fine-tuning needs a frozen copy for the KL term; LoRA disables its adapters instead.
        self.ref_model = None
        if config.beta > 0 and not config.use_lora:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
            if config.fsdp:  # at once: a second whole copy of a 7B model would crowd the GPU
                self.ref_model = shard_policy(self.ref_model)
        state = self._prepare(model, len(self.prompts), shard=shard_policy if config.fsdp else None)
        self.device = next(self.model.parameters()).device
        self.bad_in_row, self.skipped_steps = 0, state.get("skipped_steps", 0)
        self.reference_passes, self.outage_steps = 0, 0
        self.trends = RewardTrends(config.alarm_window, config.alarm_delta)
        self.tb = None
        if config.tensorboard and self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(self.output_dir / "tb")
        self.reward_worker = RewardWorker(self.reward)
        self.rollout_memory = self._check_rollout_memory()

    def _check_rollout_memory(self) -> RolloutMemory:
        """The worst-case KV memory of this rank's rollouts (every chain at the cap, the widest prompt), checked
        before the first step against what the device can still allocate, less the AdamW state the first step
        will add; a rollout that cannot fit stops here, with the settings that would."""
        cfg = self.config
        janus = janus_parts(self.model)
        width = max(len(encode_prompt(self.processor.tokenizer, p, self.tokens.bos)) for p in self.prompts)
        dtype = autocast_dtype(self.device.type, cfg.mixed_precision, decoder_weight(janus.model.language_model).dtype)
        available = available_bytes(self.device)
        if available is not None:
            local = [p.to_local() if hasattr(p, "to_local") else p for p in self.model.parameters()]
            available -= 2 * sum(p.numel() * p.element_size() for p in local if p.requires_grad)  # AdamW's moments
            if cfg.fsdp:  # the rollout gathers every weight in bf16
                available -= 2 * sum(p.numel() for p in self.model.parameters())
        rows = cfg.prompts_per_step // self.world * cfg.group_size
        return check_rollout_memory(janus.config, rows, width, cfg.sampling, dtype, available,
                                    rows_setting=f"prompts_per_step x group_size / {self.world} rank(s)")

    def _check_resumable(self, checkpoint: Path) -> None:
        saved_fsdp = read_trainer_state(checkpoint).get("fsdp", False)
        if saved_fsdp != self.config.fsdp:
            raise ValueError(f"resume_from={self.config.resume_from!r} was saved with fsdp={saved_fsdp}; resume it "
                             f"with GRPOConfig.fsdp={saved_fsdp} (its optimizer state is stored differently)")

    def _optimizer_loader(self):
        return partial(load_full_optimizer_state, self.model, self.optimizer) if self.config.fsdp else None

    # -----------------------------------------------------------------------------------------
    # One step
    # -----------------------------------------------------------------------------------------

    def _rollout(self, prompts: list[str], extra: int = 0):
        cfg = self.config
        self.model.eval()
        try:
            with gathered(self.model), autocast(self.device.type, cfg.mixed_precision):
                stream = self.step + extra * _EXTRA_ROLLOUT_STREAM  # an extra rollout gets noise of its own
                sampling = cfg.sampling.with_seed(cfg.seed * 1_000_003 + stream * self.world + self.rank)
                return rollout(self.model, self.processor, prompts, cfg.group_size, sampling,
                               logprob_of="mixed" if cfg.cfg_in_loss else "cond", cuda_graph=cfg.cuda_graph)
        finally:
            self.model.train()

    def _reference_logprobs(self, batch) -> LogProbs | None:
        cfg = self.config
        if cfg.beta == 0:
            return None
        self.reference_passes += 1
        if self.ref_model is not None:
            model, frozen = self.ref_model, nullcontext()
        else:
            model, frozen = self.model, self.model.disable_adapter()
        with frozen:
            ref = policy_logprobs(model, batch, cfg, self.tokens)
            # Reshard before PEFT re-enables the adapters: it sets requires_grad on the parameters it finds,
            # which must be the sharded ones the optimizer holds.
            release(model)
        return ref

    def _sync_gradients(self) -> None:
        if self.world == 1 or self.config.fsdp:  # FSDP has reduce-scattered (summed) them in the backward
            return
        for p in self.model.parameters():
            if p.requires_grad:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)  # sum: every rank's loss is already divided by the global normaliser

    def _draw(self, extra: int = 0):
        """This rank's share of ``prompts_per_step`` fresh prompts, rolled out; returns it and its pending scores."""
        cfg = self.config
        local = cfg.prompts_per_step // self.world
        indices = self.sampler.take(cfg.prompts_per_step)[self.rank * local : (self.rank + 1) * local]
        r = self._rollout([self.prompts[i] for i in indices], extra)
        return r, self.reward_worker.submit(r.row_prompts, r.chains, None if r.images is None else r.images.numpy())

    def _fill_informative_groups(self, r, scored) -> tuple:
        """DAPO's dynamic sampling: draw more rollouts until this rank holds its share of informative groups
        (rewards not all equal) or ``max_extra_rollouts`` were drawn. Every rank draws as long as any is short
        (a rollout is collective under FSDP). Returns the batch (informative groups first, slots still empty
        filled with dropped groups), its scores, bool ``[B]`` rows in the loss, and counts to log."""
        cfg, local, G = self.config, len(r.prompts), self.config.group_size
        drawn = [(r, scored, informative_groups(scored.total, G))]
        extra = 0
        while extra < cfg.max_extra_rollouts:
            have = sum(int(keep.sum()) for *_, keep in drawn)
            if not sum_over_ranks({"short": int(have < local)}, self.device)["short"]:
                break
            extra += 1
            more, pending = self._draw(extra)
            more_scored = pending.result()
            drawn.append((more, more_scored, informative_groups(more_scored.total, G)))
        picks = [(i, g) for i, (*_, keep) in enumerate(drawn) for g in np.flatnonzero(keep)][:local]
        in_loss = len(picks)
        picks += [(i, g) for i, (*_, keep) in enumerate(drawn) for g in np.flatnonzero(~keep)][: local - in_loss]
        dropped = sum(int((~keep).sum()) for *_, keep in drawn)
        rows_in_loss = torch.arange(local * G, device=r.chain_ids.device) < in_loss * G
        if len(drawn) == 1 and [g for _, g in picks] == list(range(local)):
            return r, scored, rows_in_loss, len(drawn) * local, dropped
        batch = merge_groups([(drawn[i][0], g) for i, g in picks], self.tokens.pad)
        scores = merge_scores([(drawn[i][1], g) for i, g in picks], [s for _, s, _ in drawn], G)
        return batch, scores, rows_in_loss, len(drawn) * local, dropped

    def _teacher_forced(self, batch):
        """The trainer's own log-probs of the rollout (and per-token entropies when the loss selects by them)."""
        cfg = self.config
        if cfg.top_entropy_quantile < 1:
            return policy_logprobs(self.model, batch, cfg, self.tokens, with_entropy=True)
        return policy_logprobs(self.model, batch, cfg, self.tokens), None

    def train_step(self) -> dict:
        """Rollout, rewards, advantages and ``num_iterations`` updates; returns the step's metrics."""
        cfg = self.config
        t0 = time.perf_counter()
        r, pending = self._draw()
        t1 = time.perf_counter()
        if cfg.filter_zero_std_groups:
            r, scored, rows_in_loss, drawn, dropped = self._fill_informative_groups(r, pending.result())
        ref = self._reference_logprobs(r)  # overlaps with the judge unless groups were filtered
        train_lp, entropy = self._teacher_forced(r)
        if not cfg.filter_zero_std_groups:
            scored = pending.result()
            rows_in_loss, drawn, dropped = torch.ones(len(r), dtype=torch.bool, device=r.chain_ids.device), len(r.prompts), 0
        t2 = time.perf_counter()

        device = r.chain_ids.device
        totals = torch.as_tensor(scored.total, dtype=torch.float32, device=device)
        all_rewards = gather_rows(totals)
        all_advantages = group_advantages(all_rewards, cfg.group_size, scale=cfg.scale_rewards)
        advantages = all_advantages[self.rank * len(r) : (self.rank + 1) * len(r)].to(device)
        selection = token_selection(r, cfg, rows_in_loss=rows_in_loss, train=train_lp, rollout=r.logprobs,
                                    entropy=entropy)
        gap_sum, gap_count, gap_max = logprob_gap(train_lp, r.logprobs, selection, cfg)
        counts = sum_over_ranks({"rows": int(rows_in_loss.sum()), "tokens": selection.num_tokens(cfg),
                                 "gap_sum": gap_sum, "gap_count": gap_count}, self.device)
        normalizer = loss_normalizer(r, cfg, int(counts["rows"]), int(counts["tokens"]))
        # TIS weights correct the rollout -> trainer mismatch, so the ratio's old policy is the trainer's.
        old = train_lp if cfg.num_iterations > 1 or cfg.tis_cap is not None else r.logprobs

        lr = self.scheduler.get_last_lr()[0]
        metrics = {}
        for _ in range(cfg.num_iterations):
            update = loss_and_backward(self.model, r, advantages, old=old, ref=ref, config=cfg, normalizer=normalizer,
                                       tokens=self.tokens, selection=selection)
            metrics = self._optimizer_step(update)
        self.scheduler.step()  # once per step: the schedule spans max_steps whatever num_iterations is
        t3 = time.perf_counter()
        self.step += 1
        counted = sum_over_ranks({
            "generated": int(r.chain_mask.sum()) + r.image_ids.numel(), "chain_tokens": int(r.chain_lengths.sum()),
            "judge_failures": scored.failures, "judge_requests": scored.requests,
            "parse_failures": sum(1 for c in r.chains if c.errors or not c.objects),
            "truncated_chains": int(truncated_chains(r).sum()), "groups_drawn": drawn, "groups_dropped": dropped,
            "groups_trained": int(rows_in_loss.sum()) // cfg.group_size}, self.device)
        metrics.update(self._reward_metrics(scored, all_rewards, all_advantages))
        metrics.update(step=self.step, lr=lr, seconds_rollout=t1 - t0, seconds_reward=t2 - t1,
                       seconds_update=t3 - t2, tokens_per_s=counted["generated"] / max(t1 - t0, 1e-9),
                       chain_length=counted["chain_tokens"] / len(all_rewards), skipped_steps=self.skipped_steps,
                       judge_failures=int(counted["judge_failures"]), judge_requests=int(counted["judge_requests"]),
                       parse_failures=int(counted["parse_failures"]), truncated_chains=int(counted["truncated_chains"]),
                       groups_drawn=int(counted["groups_drawn"]), groups_dropped=int(counted["groups_dropped"]),
                       groups_trained=int(counted["groups_trained"]),
                       logprob_gap_mean=counts["gap_sum"] / max(counts["gap_count"], 1.0),
                       logprob_gap_max=max_over_ranks(gap_max, self.device))
        self._maybe_grid(r, scored)
        return metrics

    def _optimizer_step(self, update: dict) -> dict:
        cfg = self.config
        self._sync_gradients()
        update = sum_over_ranks(update, self.device)  # the global loss and metric sums
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = full_tensor(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or float("inf")))
        finite = bool(torch.isfinite(norm)) and np.isfinite(update["loss"])
        if finite:
            self.optimizer.step()
            self.bad_in_row = 0
        else:
            self.skipped_steps += 1
            self.bad_in_row += 1
            if self.bad_in_row >= cfg.max_bad_steps:
                raise NonFiniteLossError(f"{self.bad_in_row} consecutive steps had a non-finite loss or gradient "
                                         f"(limit GRPOConfig.max_bad_steps={cfg.max_bad_steps})")
        self.optimizer.zero_grad(set_to_none=True)
        tokens = max(update["num_tokens"], 1.0)
        return {"loss": update["loss"], "grad_norm": float(norm), "step_skipped": not finite,
                **{name: update[name] / tokens for name in METRIC_NAMES},
                "entropy_chain": update["entropy_chain"] / max(update["chain_tokens"], 1.0),
                "entropy_image": update["entropy_image"] / max(update["image_tokens"], 1.0)}

    def _reward_metrics(self, scored, all_rewards: torch.Tensor, all_advantages: torch.Tensor) -> dict:
        """Reward and advantage statistics over every rank's samples."""
        rewards = all_rewards.cpu().numpy()
        out = {"reward_mean": nan_stat(rewards), "reward_std": nan_stat(rewards, np.nanstd),
               "rewards_missing": int(np.isnan(rewards).sum()),
               "advantage_mean": float(all_advantages.mean()),
               "advantage_abs_mean": float(all_advantages.abs().mean())}
        monitors = set(getattr(self.reward, "monitors", ()))
        for name in sorted(scored.components):
            values = torch.as_tensor(np.asarray(scored.components[name], dtype=np.float32), device=self.device)
            values = gather_rows(values).cpu().numpy()
            lost = torch.as_tensor([scored.failed.get(name, 0.0) * len(scored.total)], device=self.device)
            out[f"reward_{name}"] = nan_stat(values)
            out[f"reward_{name}_std"] = nan_stat(values, np.nanstd)
            out[f"reward_{name}_failed"] = float(gather_rows(lost).sum()) / len(values)
            if name in monitors:
                out[f"reward_{name}_monitor"] = True
        out["reward_alarms"] = self.trends.update({name: out[f"reward_{name}"] for name in scored.components})
        return out

    def _maybe_grid(self, r, scored) -> None:
        every = self.config.sample_every
        if self.rank != 0 or not every or self.step % every:
            return
        titles = [f"reward {t:.3f} | " + " ".join(f"{name} {scored.components[name][row]:.2f}"
                                                  for name in sorted(scored.components))
                  for row, t in enumerate(scored.total)]
        save_sample_grid(self.output_dir / "samples" / f"step-{self.step:07d}.png", r.row_prompts, r.chains,
                         None if r.images is None else r.images.numpy(), titles=titles)

    # -----------------------------------------------------------------------------------------
    # Loop, checkpoints
    # -----------------------------------------------------------------------------------------

    def _full_states(self) -> tuple[dict | None, dict | None]:
        if not self.config.fsdp:
            return None, None
        return full_model_state(self.model), full_optimizer_state(self.model, self.optimizer)

    def _trainer_state(self) -> dict:
        return {"skipped_steps": self.skipped_steps, "fsdp": self.config.fsdp}

    def _before_loop(self) -> None:
        self.outage_steps = 0
        if hasattr(self.reward, "check"):
            self.reward.check()  # a dead judge is refused before the first rollout, not after 1000 zero steps

    def _write_metrics(self, metrics: dict) -> None:
        super()._write_metrics(metrics)
        if self.tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, self.step)

    def _postfix(self, metrics: dict) -> dict:
        return {"reward": f"{metrics['reward_mean']:.3f}", "kl": f"{metrics['kl_mean']:.4f}"}

    def _after_step(self, metrics: dict) -> None:
        """Stop, with a checkpoint written, after ``max_judge_outage_steps`` consecutive judge-outage steps."""
        cfg = self.config
        self.outage_steps = self.outage_steps + 1 if self._judge_outage(metrics) else 0
        if not cfg.max_judge_outage_steps or self.outage_steps < cfg.max_judge_outage_steps:
            return
        if self.step % cfg.save_every:  # every rank decides alike: the counts are summed over ranks
            self.save_everywhere()
        raise JudgeUnavailableError(
            f"the judge or a reward model failed more than {cfg.judge_outage_rate:.0%} of its requests for "
            f"{self.outage_steps} consecutive steps (last: judge {metrics['judge_failures']} of "
            f"{metrics['judge_requests']}; {self._failed_models(metrics)}); stopped at step {self.step}, checkpoint "
            f"{self.output_dir / f'step-{self.step:07d}'} written. Fix the judge or reward server, then resume "
            f"(--resume {self.output_dir})")

    def _judge_outage(self, metrics: dict) -> bool:
        """More than ``judge_outage_rate`` of the judge's requests, or of any reward model's samples, failed."""
        requests = metrics.get("judge_requests", 0)
        rate = self.config.judge_outage_rate
        models = [v for k, v in metrics.items() if k.startswith("reward_") and k.endswith("_failed")]
        return (requests > 0 and metrics["judge_failures"] / requests > rate) or any(v > rate for v in models)

    @staticmethod
    def _failed_models(metrics: dict) -> str:
        shares = {k[7:-7]: v for k, v in metrics.items() if k.startswith("reward_") and k.endswith("_failed") and v}
        return ", ".join(f"{name} {share:.0%} failed" for name, share in sorted(shares.items())) or "no reward model failed"

    def close(self) -> None:
        self.reward_worker.close()
        if self.tb is not None:
            self.tb.close()
        super().close()


# ---------------------------------------------------------------------------------------------
# Dynamic sampling: which groups a step keeps
# ---------------------------------------------------------------------------------------------

def informative_groups(rewards: np.ndarray, group_size: int) -> np.ndarray:
    """bool ``[num_groups]``: groups with at least two rewards that are not NaN and not all equal (the others
    get advantage 0 whatever the scaling)."""
    groups = np.asarray(rewards, dtype=np.float64).reshape(-1, group_size)
    valid = ~np.isnan(groups)
    high = np.where(valid, groups, -np.inf).max(1)
    low = np.where(valid, groups, np.inf).min(1)
    return (valid.sum(1) >= 2) & (high > low)


def merge_groups(picks: list[tuple[Rollout, int]], pad: int) -> Rollout:
    """One :class:`Rollout` of the groups ``(rollout, group index)`` in order: prompts left-padded, chains
    right-padded to the widest (``pad``, out of ``chain_mask``), rows renumbered."""
    first = picks[0][0]
    G = first.num_samples
    parts = [(r, slice(g * G, (g + 1) * G)) for r, g in picks]
    prompt_width = max(r.prompt_ids.shape[1] for r, _ in parts)
    chain_width = max(r.chain_ids.shape[1] for r, _ in parts)

    def cat(name: str, width: int | None = None, left: bool = False, value=0):
        out = []
        for r, rows in parts:
            t = getattr(r, name)[rows]
            if width is not None and t.shape[1] < width:
                fill = t.new_full((t.shape[0], width - t.shape[1]), value)
                t = torch.cat([fill, t] if left else [t, fill], 1)
            out.append(t)
        return torch.cat(out)

    per_row = lambda name: [x for r, rows in parts for x in getattr(r, name)[rows]]  # noqa: E731
    return Rollout(
        prompt_ids=cat("prompt_ids", prompt_width, left=True, value=pad),
        prompt_mask=cat("prompt_mask", prompt_width, left=True, value=False),
        chain_ids=cat("chain_ids", chain_width, value=pad), chain_mask=cat("chain_mask", chain_width, value=False),
        chain_lengths=cat("chain_lengths"), image_ids=cat("image_ids"),
        prompts=[r.prompts[g] for r, g in picks], num_samples=G,
        group=torch.arange(len(picks), device=first.group.device).repeat_interleave(G),
        chain_logprobs=cat("chain_logprobs", chain_width, value=0.0), image_logprobs=cat("image_logprobs"),
        texts=per_row("texts"), chains=per_row("chains"),
        images=None if first.images is None else cat("images"), sampling=first.sampling)


def merge_scores(picks: list[tuple[ScoredBatch, int]], every: list[ScoredBatch], group_size: int) -> ScoredBatch:
    """The :class:`ScoredBatch` of the picked groups ``(scores, group index)``; judge requests, failures and
    failed shares count every scored batch in ``every`` (all the judge's work)."""
    rows = lambda values, g: np.asarray(values)[g * group_size : (g + 1) * group_size]  # noqa: E731
    names = sorted(picks[0][0].components)
    total_rows = sum(len(s.total) for s in every)
    return ScoredBatch(
        total=np.concatenate([rows(s.total, g) for s, g in picks]),
        components={n: np.concatenate([rows(s.components[n], g) for s, g in picks]) for n in names},
        failures=sum(s.failures for s in every), requests=sum(s.requests for s in every),
        failed={n: sum(s.failed.get(n, 0.0) * len(s.total) for s in every) / total_rows
                for n in sorted({n for s in every for n in s.failed})})


def max_over_ranks(value: float, device) -> float:
    """``value``'s maximum over the ranks."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor)

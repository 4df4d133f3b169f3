"""The shell both trainers share: setting up a fresh or resumed run, the step loop, checkpoint and log cadence.

A trainer (:class:`~gotr1.train.sft.SFTTrainer`, :class:`~gotr1.grpo.trainer.GRPOTrainer`) subclasses
:class:`TrainerShell`, calls :meth:`TrainerShell._prepare` from its constructor and implements
``train_step()``; everything about *when* things happen (resume, log every ``log_every`` steps, checkpoint
every ``save_every`` steps and at the end, the progress bar) lives here once.

A run owns its ``output_dir`` from construction to :meth:`TrainerShell.close` (or the end of the process):
it claims the folder (:mod:`gotr1.train.run_folder`: an OS lock, no mixing with an earlier run unless it
resumes it, ``overwrite`` to move that run aside), on rank 0 only under ``torchrun``.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import torch.distributed as dist

from gotr1.progress import progress_bar
from gotr1.train.checkpoint import (
    in_run_folder,
    load_model_weights,
    load_training_state,
    resume_checkpoint,
    save_checkpoint,
)
from gotr1.train.distributed import rank_and_world
from gotr1.train.metrics_log import MetricsLog
from gotr1.train.optim import build_optimizer, prepare_policy
from gotr1.train.run_folder import check_run_folder, claim_on_rank_zero
from gotr1.train.sampler import EpochSampler


def check_run(config) -> Path | None:
    """The checkpoint a run of ``config`` (a :class:`~gotr1.train.config.TrainingConfig`) resumes from, verified
    (None for a fresh run), after refusing what the run-folder rules would refuse. Changes nothing: the command
    line calls it before loading the model, so a refused run costs seconds, not a model load."""
    checkpoint = _resume_point(config)
    if rank_and_world()[0] == 0:
        check_run_folder(config.output_dir, resume=_continues(checkpoint, config), overwrite=config.overwrite)
    return checkpoint


def _resume_point(config) -> Path | None:
    """The verified checkpoint ``config.resume_from`` names (None for a fresh run)."""
    if not config.resume_from:
        return None
    return resume_checkpoint(config.resume_from, config.output_dir, config.trust_unverified)


def _continues(checkpoint: Path | None, config) -> bool:
    """Whether the run continues the one in its ``output_dir`` (the only case where that folder may hold a run)."""
    return checkpoint is not None and in_run_folder(checkpoint, config.output_dir)


class TrainerShell:
    """Resume, loop, checkpoints and metrics of a training run; subclasses supply the step.

    Subclass contract: set ``config`` (a :class:`~gotr1.train.config.TrainingConfig`) and ``processor``, call
    :meth:`_prepare`, implement :meth:`train_step`; optionally override the ``_`` hooks.
    """

    name = "train"
    """Progress-bar label."""
    rank, world = 0, 1
    run_folder = None
    """This run's claim on ``output_dir`` (rank 0), released by :meth:`close`."""

    # -----------------------------------------------------------------------------------------
    # Setup
    # -----------------------------------------------------------------------------------------

    def _prepare(self, model, num_items: int, shard=None) -> dict:
        """The trainable policy, optimizer, data order and metrics log of a fresh or resumed run.

        ``num_items`` is what the sampler draws from (rows, prompts); ``shard`` wraps the policy after its
        weights are restored (FSDP). Returns the resumed checkpoint's trainer state (empty for a fresh run).
        """
        cfg = self.config
        self.output_dir = Path(cfg.output_dir)
        checkpoint = _resume_point(cfg)
        if checkpoint is not None:
            self._check_resumable(checkpoint)
        self.run_folder = claim_on_rank_zero(self.output_dir, resume=_continues(checkpoint, cfg),
                                             overwrite=cfg.overwrite)
        if self.run_folder is not None:
            weakref.finalize(self, self.run_folder.release)  # a trainer dropped without close() lets go too
        try:
            return self._restore(model, num_items, shard, checkpoint)
        except BaseException:
            self.close()
            raise

    def _restore(self, model, num_items: int, shard, checkpoint: Path | None) -> dict:
        """:meth:`_prepare` once the run folder is claimed."""
        cfg = self.config
        self.model = prepare_policy(model, self.processor, cfg)
        if checkpoint is not None:
            load_model_weights(self.model, checkpoint / "model")  # whole weights, before any sharding
        if shard is not None:
            self.model = shard(self.model)
        self.optimizer, self.scheduler = build_optimizer(self.model, cfg)
        self.step, self.sampler, state = 0, EpochSampler(num_items, cfg.seed), {}
        if checkpoint is not None:
            state = load_training_state(checkpoint, self.optimizer, self.scheduler, self._optimizer_loader())
            self.step = state["step"]
            self.sampler = EpochSampler(num_items, cfg.seed, state["epoch"], state["cursor"])
        self.log = MetricsLog(self.output_dir / "metrics.jsonl", resume_step=self.step) if self.rank == 0 else None
        return state

    def close(self) -> None:
        """Release the run folder (idempotent); a trainer that is not closed releases it when collected."""
        if self.run_folder is not None:
            self.run_folder.release()

    def _check_resumable(self, checkpoint: Path) -> None:
        """Refuse a checkpoint this trainer cannot continue (before anything loads)."""

    def _optimizer_loader(self):
        """How to load ``optimizer.pt`` (None: ``optimizer.load_state_dict``)."""
        return None

    # -----------------------------------------------------------------------------------------
    # Checkpoints
    # -----------------------------------------------------------------------------------------

    def save(self) -> Path | None:
        """Write a checkpoint from rank 0 (every rank must call it: a sharded run gathers its states first)."""
        model_state, optimizer_state = self._full_states()
        if self.rank != 0:
            return None
        state = {**self.sampler.state(), **self._trainer_state()}
        return save_checkpoint(self.output_dir, self.step, self.model, self.optimizer, self.scheduler, state,
                               keep_last=self.config.keep_last, processor=self.processor,
                               model_state=model_state, optimizer_state=optimizer_state)

    def _full_states(self) -> tuple[dict | None, dict | None]:
        """Whole model and optimizer states gathered from shards (None, None: read them from the objects)."""
        return None, None

    def _trainer_state(self) -> dict:
        """What ``state.json`` records beyond the step and data position."""
        return {}

    # -----------------------------------------------------------------------------------------
    # The loop
    # -----------------------------------------------------------------------------------------

    def train_step(self) -> dict:
        """One optimizer step; returns its metrics (with ``step``)."""
        raise NotImplementedError

    def train(self, max_steps: int | None = None) -> list[dict]:
        """Run until ``config.max_steps`` (or ``max_steps`` more steps, to stop early).

        Returns the metrics of every step this call ran, the same list on every rank (``metrics.jsonl``
        holds the whole run's logged steps).
        """
        cfg = self.config
        end = cfg.max_steps if max_steps is None else min(cfg.max_steps, self.step + max_steps)
        if self.step < end:
            self._before_loop()
        bar = progress_bar(total=cfg.max_steps, initial=self.step, desc=self.name,
                           enabled=cfg.progress and self.rank == 0)
        history = []
        try:
            while self.step < end:
                metrics = self.train_step()
                history.append(metrics)
                if self.step % cfg.log_every == 0 or self.step == end:
                    self._write_metrics(metrics)
                if self.step % cfg.save_every == 0 or self.step == end:
                    self.save_everywhere()
                bar.update(1)
                bar.set_postfix(self._postfix(metrics))
                self._after_step(metrics)
        finally:
            bar.close()
        return history

    def save_everywhere(self) -> None:
        """:meth:`save` on every rank, then wait for rank 0 to finish writing."""
        self.save()
        if self.world > 1:
            dist.barrier()

    def _before_loop(self) -> None:
        """Checks before the first step of a call that will run steps."""

    def _write_metrics(self, metrics: dict) -> None:
        if self.log is not None:
            self.log.write(metrics)

    def _postfix(self, metrics: dict) -> dict:
        """What the progress bar shows after a step."""
        return {"loss": f"{metrics['loss']:.3f}"}

    def _after_step(self, metrics: dict) -> None:
        """Run after each step is logged and checkpointed; may raise to stop the run."""

"""Score rollout batch k in the background while the policy works on the next one."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from gotr1.rewards.policy_reward import ScoredBatch


class RewardWorker:
    """A one-thread queue in front of a policy reward (``(prompts, chains, images) -> ScoredBatch``).

    Batches are scored in submission order, one at a time (an in-process judge is not re-entrant; a
    concurrent :class:`~gotr1.rewards.openai_judge.OpenAIJudge` parallelises inside each batch). ``submit``
    returns at once, so the caller can go on (the GRPO trainer computes the reference log-probs meanwhile),
    then call ``future.result()`` when it needs the rewards.

    Examples
    --------
    >>> with RewardWorker(JudgeReward(judge)) as worker:           # doctest: +SKIP
    ...     pending = worker.submit(prompts, chains, images)
    ...     next_rollout = rollout(model, processor, next_prompts, 8)
    ...     rewards = pending.result().total
    """

    def __init__(self, reward):
        if not callable(reward):
            raise TypeError(f"reward must be a policy reward callable, got {type(reward).__name__}")
        self.reward = reward
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward-worker")

    def submit(self, prompts, chains, images) -> Future[ScoredBatch]:
        """Queue one batch; the future holds the reward's :class:`ScoredBatch`."""
        return self._pool.submit(self.reward, list(prompts), list(chains), images)

    def close(self, wait: bool = True) -> None:
        """Stop accepting batches; with ``wait``, finish the queued ones first."""
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    def __enter__(self) -> RewardWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Score rollout batch k in the background while the policy generates batch k+1."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from gotr1.rewards.combine import RewardConfig
from gotr1.rewards.mllm import RewardBatch, RewardCache, score_batch


class RewardWorker:
    """A one-thread queue in front of :func:`score_batch`.

    Batches are scored in submission order, one at a time (an in-process judge is not re-entrant; a
    concurrent :class:`~gotr1.rewards.OpenAIJudge` parallelises inside each batch). ``submit`` returns at
    once, so the caller can start generating the next batch, then call ``future.result()`` when it needs
    the rewards. A cache shared across batches is created unless one is given.

    Examples
    --------
    >>> with RewardWorker(judge) as worker:                      # doctest: +SKIP
    ...     pending = worker.submit(prompts, chains, images)
    ...     next_rollout = policy.generate(next_prompts)
    ...     rewards = pending.result().total
    """

    def __init__(self, judge, config: RewardConfig | None = None, cache: RewardCache | None = None, aesthetic=None):
        self.judge = judge
        self.config = config or RewardConfig()
        self.cache = cache if cache is not None else RewardCache()
        self.aesthetic = aesthetic
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward-worker")

    def submit(self, prompts, chains, images) -> Future[RewardBatch]:
        """Queue one batch (arguments as for every reward); the future holds its :class:`RewardBatch`."""
        return self._pool.submit(score_batch, list(prompts), list(chains), images, self.judge, self.config,
                                 cache=self.cache, aesthetic=self.aesthetic)

    def close(self, wait: bool = True) -> None:
        """Stop accepting batches; with ``wait``, finish the queued ones first."""
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    def __enter__(self) -> "RewardWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

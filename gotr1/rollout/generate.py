"""Whole rollouts: chains, then images, then pixels, for prompts x samples (GoT-R1's sampling, batched).

:func:`rollout` runs the chain phase (:mod:`gotr1.rollout.chains`), the image phase, which continues from
the chains' KV cache (:mod:`gotr1.rollout.images`), and the VQ decoder, and returns a
:class:`~gotr1.rollout.batches.Rollout`, the unit rewards and GRPO consume. :func:`generate_batched` does
the same for a long prompt list, a few prompts at a time (``gotr1 generate``, ``gotr1 eval``).
"""

from __future__ import annotations

from gotr1.progress import progress_bar
from gotr1.rollout.batches import Rollout
from gotr1.rollout.chains import generate_chains
from gotr1.rollout.images import decode_images, generate_images
from gotr1.rollout.sampling import Sampling


def rollout(model, processor, prompts: list, num_samples: int, sampling: Sampling = Sampling(), *,
            logprob_of: str = "cond", decode: bool = True, cuda_graph: bool = False) -> Rollout:
    """Chains, images and pixels for ``prompts`` x ``num_samples``.

    ``sampling`` serves both phases (the chain seed is ``sampling.seed``; the image phase draws from its own
    stream of the same seed); ``logprob_of`` / ``cuda_graph`` go to
    :func:`~gotr1.rollout.images.generate_images`; ``decode=False`` skips the VQ decoder (``images`` is None).
    It computes in the ambient autocast: GRPO runs it inside :func:`gotr1.policy.precision.autocast`, as its loss.
    """
    chains = generate_chains(model, processor, prompts, num_samples, sampling)
    images = generate_images(model, processor, chains, logprob_of=logprob_of, cuda_graph=cuda_graph)
    return chains.with_images(images, decode_images(model, images.image_ids) if decode else None)


def generate_batched(model, processor, prompts: list[str], *, num_samples: int = 1, batch_size: int = 8,
                     sampling: Sampling = Sampling(), desc: str = "generate", progress: bool = True):
    """Rollouts for ``prompts`` in batches of ``batch_size`` prompts; yields ``(prompts, Rollout)``.

    Batch ``k`` (starting at prompt ``start``) uses seed ``sampling.seed + start``.
    """
    for start in progress_bar(range(0, len(prompts), batch_size), desc=desc, enabled=progress):
        chunk = prompts[start : start + batch_size]
        yield chunk, rollout(model, processor, chunk, num_samples, sampling.with_seed(sampling.seed + start))

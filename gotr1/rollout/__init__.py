"""Stage: rollouts. Batched, KV-cached generation of GoT chains and their images (see ``docs/architecture.md``)."""

from gotr1.rollout.batches import ChainBatch, ImageBatch, Rollout
from gotr1.rollout.chains import generate_chains
from gotr1.rollout.generate import generate_batched, rollout
from gotr1.rollout.images import decode_images, generate_images
from gotr1.rollout.sampling import Sampling

__all__ = ["ChainBatch", "ImageBatch", "Rollout", "Sampling", "decode_images", "generate_batched",
           "generate_chains", "generate_images", "rollout"]

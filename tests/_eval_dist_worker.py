"""Run by test_eval_runner.py under torchrun with gloo: ``python -m torch.distributed.run --nproc_per_node=N
_eval_dist_worker.py OUT``: a T2I-CompBench run of the tiny policy, scored by the brightness stand-in metric."""

import sys

import numpy as np
import torch.distributed as dist

from gotr1.metrics.metric import Metric
from gotr1.eval.protocols import CompBench
from gotr1.eval.runner import run_benchmark
from gotr1.policy.model import tiny_janus
from gotr1.rollout import Sampling


class PixelMean(Metric):
    name = "pixel_mean"

    def score(self, prompts, images):
        return np.array([float(np.asarray(i).mean()) / 255 for i in images])


def main(out: str) -> None:
    dist.init_process_group("gloo")
    model, processor = tiny_janus(seed=0)
    metric = PixelMean()
    run_benchmark(CompBench(), {"color": metric, "spatial": metric}, out, model=model, processor=processor,
                  categories=["color", "spatial"], limit=3, per_prompt=2, batch_size=2,
                  sampling=Sampling(max_chain_tokens=6, seed=3), progress=False)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])

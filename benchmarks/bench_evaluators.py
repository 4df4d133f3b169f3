"""Evaluator throughput: images scored per second by each metric, batched vs one image at a time.

Random-weight models (nothing is downloaded): on the CPU the tiny configs of :mod:`gotr1.metrics.tiny_models`
(the pipeline's overhead: processors, parsing, post-processing); with ``--size base`` real widths (CLIP and
OWLv2 and BLIP towers of width 768 x 12 layers at their real image sizes; GenEval's Mask2Former stays tiny),
which is what ``benchmarks/gpu_check.sh`` runs on a GPU. The baseline, in the same run, is the same metric
called on one image at a time. Prints a Markdown table.

    python benchmarks/bench_evaluators.py                  # tiny configs, CPU, 32 images
    python benchmarks/bench_evaluators.py --size base      # real widths (GPU)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from gotr1.metrics.compbench import BlipVQAScore, CLIPScore, SpatialScore
from gotr1.metrics.geneval import GenEvalScore, load_metadata, tiny_mask2former
from gotr1.eval.protocols import CompBench
from gotr1.metrics.tiny_models import tiny_blip_vqa, tiny_clip, tiny_detector

# (width, layers, patch, image size) per model at --size base: ViT-B/32 CLIP, BLIP-VQA base at 480 px, OWLv2 base.
BASE = {"clip": (768, 12, 32, 224), "blip": (768, 12, 16, 480), "owl": (768, 12, 16, 960)}
TINY = {"clip": (32, 2, 8, 32), "blip": (32, 2, 8, 32), "owl": (32, 2, 8, 32)}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def metrics(size: str, device: str) -> dict:
    """name -> (metric, prompts its category uses)."""
    shapes = BASE if size == "base" else TINY
    build = lambda builder, key: builder(seed=0, image_size=shapes[key][3], width=shapes[key][0],  # noqa: E731
                                         layers=shapes[key][1], patch=shapes[key][2])
    moved = lambda pair: (pair[0].to(device).eval(), pair[1])  # noqa: E731
    compbench = CompBench()
    prompts = lambda category: [i.prompt for i in compbench.items([category], 64)]  # noqa: E731
    geneval = [row["prompt"] for row in load_metadata()[:64]]
    return {
        "BLIP-VQA (color)": (BlipVQAScore(*moved(build(tiny_blip_vqa, "blip")), image_size=shapes["blip"][3]),
                             prompts("color")),
        "CLIPScore (non-spatial)": (CLIPScore(*moved(build(tiny_clip, "clip"))), prompts("non_spatial")),
        "detector spatial (2D-spatial)": (SpatialScore(*moved(build(tiny_detector, "owl"))), prompts("spatial")),
        "GenEval (Mask2Former + CLIP)": (GenEvalScore(*moved(tiny_mask2former()), *moved(build(tiny_clip, "clip"))),
                                         geneval),
    }


def timed(metric, prompts, images, device, one_at_a_time: bool, repeats: int) -> float:
    """Median images per second over ``repeats`` passes."""
    rates = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        if one_at_a_time:
            for prompt, image in zip(prompts, images):
                metric.score([prompt], [image])
        else:
            metric.score(prompts, images)
        _sync(device)
        rates.append(len(images) / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "base"), default="tiny")
    parser.add_argument("--images", type=int, default=32, help="images per pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--markdown", default=None, help="also append the table to this file")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (384, 384, 3), dtype=np.uint8) for _ in range(args.images)]
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "CPU"
    lines = [f"Evaluators, {args.size} configs (random weights), {args.images} images of 384 px, on {name} "
             f"({torch.get_num_threads()} threads); median of {args.repeats} passes, baseline: one image at a time",
             "", "| metric | images/s batched | images/s one at a time | x one at a time |", "|---|---|---|---|"]
    for label, (metric, prompts) in metrics(args.size, args.device).items():
        prompts = [prompts[i % len(prompts)] for i in range(args.images)]
        timed(metric, prompts[:2], images[:2], args.device, False, 1)  # warm-up
        batched = timed(metric, prompts, images, args.device, False, args.repeats)
        single = timed(metric, prompts, images, args.device, True, args.repeats)
        lines.append(f"| {label} | {batched:.1f} | {single:.1f} | {batched / single:.1f} |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as f:
            f.write(table + "\n\n")


if __name__ == "__main__":
    main()

"""Image metrics: batched ``score(prompts, images) -> float64 [N]`` scorers that serve both as evaluation
metrics (:mod:`gotr1.eval`) and as GRPO rewards (:mod:`gotr1.rewards`): T2I-CompBench's (BLIP-VQA, CLIPScore,
the detector spatial score, 3-in-1), GenEval's correctness, the judge's rubric, and random-weight tiny
builders for tests (see ``docs/architecture.md``)."""

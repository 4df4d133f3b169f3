"""The judge rewards: exact values with a scripted judge, and the tiny random Qwen2.5-VL end to end."""

import threading
import time

import numpy as np
import pytest

from gotr1.chain import parse_chain
from gotr1.rewards import (
    Judge,
    JudgeReward,
    RewardCache,
    RewardConfig,
    RewardWorker,
    TransformersJudge,
    grounding_reward,
    prompt_image_reward,
    score_batch,
    semantic_reward,
    smart_resize,
    spatial_reward,
    tiny_judge,
)
from gotr1.rewards.judges import render_chat

CAT_DOG = (
    "a <|obj_start|>cat<|obj_end|> <|box_start|>(0,0),(500,500)<|box_end|> left of a "
    "<|obj_start|>dog<|obj_end|> <|box_start|>(500,500),(1000,1000)<|box_end|>"
)
PROMPTS = ["a cat left of a dog", "a red apple", "two cats"]
CHAINS = [CAT_DOG, "a red apple on a table", "<|obj_start|>cat<|obj_end|> <|box_start|>(0,0),(500,1000)<|box_end|> and "
          "<|obj_start|>cat<|obj_end|> <|box_start|>(500,0),(1000,1000)<|box_end|>"]


class ScriptedJudge:
    """Answers by the first matching key of ``script`` found in a request's text; counts its calls."""

    def __init__(self, script, frame=(392, 392)):
        self.script, self.frame, self.calls = script, frame, []

    def grounding_size(self, width, height):
        h, w = smart_resize(height, width)
        return w, h

    def chat(self, requests):
        self.calls.append(len(requests))
        replies = []
        for request in requests:
            text = " ".join(p["text"] for m in request for p in m["content"] if p["type"] == "text")
            replies.append(next((v for k, v in self.script.items() if k in text), None))
        return replies


SCRIPT = {
    # grounding: the cat exactly; the dog half-overlapping; cats: one box covering the left cat.
    "Locate the cat": '[{"bbox_2d": [0, 0, 196, 196], "label": "cat"}, {"bbox_2d": [0, 0, 196, 392]}]',
    "Locate the dog": '```json\n[{"bbox_2d": [196, 294, 392, 392], "label": "dog"}]\n```',
    "Locate the": "I don't see it.",
    "planned for a picture": '{"score": 6}',  # spatial
    "plan a text-to-image": "Score: 9/10",  # semantic
    "generated image follows": '{"score": "80"}',  # prompt-image, a 0-100 answer
}


def test_scripted_judge_gives_the_hand_computed_rewards():
    judge = ScriptedJudge(SCRIPT)
    assert isinstance(judge, Judge)
    images = np.zeros((3, 384, 384, 3), np.uint8)
    batch = score_batch(PROMPTS, CHAINS, images, judge)
    # One chat call: 3 sem + 2 spa (the apple chain has no objects) + (2 + 0 + 1) ri + 3 pi.
    assert judge.calls == [11]
    np.testing.assert_allclose(batch.sem, [0.9, 0.9, 0.9])
    np.testing.assert_allclose(batch.spa, [0.6, 0.0, 0.6])
    np.testing.assert_allclose(batch.pi, [0.8, 0.8, 0.8])
    # cat: IoU 1 with its best box; dog: (500,750)-(1000,1000) vs (500,500)-(1000,1000) = 0.5.
    # two cats: both chain boxes meet the returned (0,0)-(500,1000) box; left exact, right 0.
    np.testing.assert_allclose(batch.ri, [0.75, 0.0, 0.5])
    assert batch.details["object_iou"] == [[1.0, 0.5], [], [1.0, 0.0]]
    expected = np.array([0.8 * (0.9 + 0.6) / 2 * 0.75, 0.0, 0.8 * (0.9 + 0.6) / 2 * 0.5])
    np.testing.assert_allclose(batch.total, expected, rtol=1e-6)
    for name in ("sem", "spa", "ri", "pi", "total"):
        assert getattr(batch, name).dtype == np.float32 and getattr(batch, name).shape == (3,)


def test_failures_score_zero_and_are_counted_with_raw_text():
    judge = ScriptedJudge({"Locate the cat": "nothing useful", "plan a text-to-image": "{'score': 'great'}"})
    images = [np.zeros((100, 200, 3), np.uint8)] * 3
    batch = score_batch(PROMPTS, CHAINS, images, judge)
    np.testing.assert_array_equal(batch.sem, [0, 0, 0])
    np.testing.assert_array_equal(batch.ri, [0, 0, 0])
    np.testing.assert_array_equal(batch.total, [0, 0, 0])
    d = batch.details
    assert d["unparsed_per_component"] == {"sem": 3, "spa": 0, "ri": 2, "pi": 0} and d["unparsed"] == 5
    assert d["failed_per_component"] == {"sem": 0, "spa": 2, "ri": 1, "pi": 3} and d["failed"] == 6
    raws = {f["raw"] for f in d["failures"]}
    assert "{'score': 'great'}" in raws and "nothing useful" in raws and None in raws


def test_a_raising_judge_fails_into_zero_scores():
    class Broken(ScriptedJudge):
        def chat(self, requests):
            raise RuntimeError("server on fire")

    batch = score_batch(PROMPTS[:1], CHAINS[:1], None, Broken({}), RewardConfig(w_ri=0, w_pi=0))
    assert batch.sem[0] == 0 and batch.spa[0] == 0 and "server on fire" in batch.details["judge_error"]


def test_single_rewards_images_none_cache_and_config_selection():
    judge = ScriptedJudge(SCRIPT)
    for reward in (grounding_reward, prompt_image_reward):
        scores, _ = reward(PROMPTS, CHAINS, None, judge)
        assert np.isnan(scores).all()  # not applicable without images
    assert judge.calls == []  # nothing to ask, no call
    cache = RewardCache()
    spatial_reward(PROMPTS, [parse_chain(c) for c in CHAINS], None, judge, cache=cache)
    scores, details = spatial_reward(PROMPTS, CHAINS, None, judge, cache=cache)
    np.testing.assert_allclose(scores, [0.6, 0.0, 0.6])
    assert details["requests"] == 0 and details["cache_hits"] == 2
    # R_sem's key is the caption: moving a box does not ask the judge again.
    semantic_reward(PROMPTS[:1], CHAINS[:1], None, judge, cache=cache)
    moved = CAT_DOG.replace("(0,0),(500,500)", "(0,0),(400,400)")
    assert semantic_reward(PROMPTS[:1], [moved], None, judge, cache=cache)[1]["cache_hits"] == 1
    batch = score_batch(PROMPTS, CHAINS, None, judge, RewardConfig(w_ri=0, w_pi=0))
    assert np.isnan(batch.ri).all() and np.isnan(batch.pi).all()
    np.testing.assert_allclose(batch.total, [0.75, 0.45, 0.75])
    with pytest.raises(ValueError, match="need a judge"):
        semantic_reward(PROMPTS, CHAINS, None, None)
    with pytest.raises(ValueError, match="chains has 1 entries for 3 prompts"):
        semantic_reward(PROMPTS, CHAINS[:1], None, judge)
    with pytest.raises(ValueError, match="aesthetic"):
        score_batch(PROMPTS, CHAINS, None, judge, RewardConfig(w_aes=1))


def test_reward_worker_scores_in_the_background():
    class SlowJudge(ScriptedJudge):
        def chat(self, requests):
            self.thread = threading.current_thread().name
            time.sleep(0.2)
            return super().chat(requests)

    judge = SlowJudge(SCRIPT)
    with RewardWorker(JudgeReward(judge, RewardConfig(w_ri=0, w_pi=0))) as worker:
        first = worker.submit(PROMPTS, CHAINS, None)
        second = worker.submit(PROMPTS, CHAINS, None)
        assert not first.done()  # submit returned before the judge (0.2 s a batch) could have answered
        np.testing.assert_allclose(first.result(timeout=5).total, [0.75, 0.45, 0.75])
        assert second.result(timeout=5).details["cache_hits"] == 5  # the worker's cache carries over
    assert judge.thread.startswith("reward-worker")


# ---------------------------------------------------------------------------------------------
# The tiny random Qwen2.5-VL judge
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return tiny_judge(seed=0)


def test_tiny_judge_builds_quickly_and_resizes_like_its_processor(tiny):
    start = time.monotonic()
    other = tiny_judge(seed=1)
    assert time.monotonic() - start < 3.0
    assert isinstance(other, TransformersJudge) and isinstance(other, Judge)
    assert tiny.grounding_size(384, 384) == (56, 56)
    processed = tiny.image_processor(images=[np.zeros((384, 384, 3), np.uint8)], return_tensors="np")
    assert processed["image_grid_thw"].tolist() == [[1, 4, 4]]  # 56 px / patch 14
    text = render_chat([{"role": "user", "content": [{"type": "image", "image": None},
                                                      {"type": "text", "text": "hi"}]}], iter([4]))
    assert text == ("<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * 4 + "<|vision_end|>hi<|im_end|>\n"
                    "<|im_start|>assistant\n")


def test_tiny_judge_chat_is_batched_and_padding_safe(tiny):
    image = np.random.default_rng(0).integers(0, 256, (384, 384, 3), dtype=np.uint8)
    short = [{"role": "user", "content": "score?"}]
    with_image = [{"role": "user", "content": [{"type": "image", "image": image},
                                                {"type": "text", "text": "Locate the cat, report the bbox."}]}]
    alone = tiny.chat([with_image])
    batched = tiny.chat([short, with_image, short])
    assert len(batched) == 3 and all(isinstance(r, str) for r in batched)
    # Left padding and mrope positions: a request's greedy reply does not depend on its batch.
    assert batched[1] == alone[0]
    assert batched[0] == batched[2]
    # A request the processor rejects fails alone; the rest of its batch is answered.
    broken = [{"role": "user", "content": [{"type": "image", "image": np.zeros((8, 8, 3), np.float32)}]}]
    replies = tiny.chat([short, broken, with_image])
    assert replies[1] is None and replies[0] == batched[0] and replies[2] == alone[0]


def test_tiny_judge_every_reward_returns_one_score_in_unit_interval(tiny):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 384, 384, 3), dtype=np.uint8)
    for reward in (semantic_reward, spatial_reward, grounding_reward, prompt_image_reward):
        scores, details = reward(PROMPTS, CHAINS, images, tiny)
        assert scores.shape == (3,) and scores.dtype == np.float32
        assert np.all((scores >= 0) & (scores <= 1)), (reward.__name__, scores)
        assert details["requests"] > 0
    batch = score_batch(PROMPTS, CHAINS, [images[0], images[1], images[2]], tiny)
    assert batch.total.shape == (3,) and np.all((batch.total >= 0) & (batch.total <= 1))


def test_from_pretrained_loads_a_saved_checkpoint_with_pixel_overrides(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    tiny.image_processor.save_pretrained(tmp_path)
    loaded = TransformersJudge.from_pretrained(str(tmp_path), device="cpu", max_pixels=120 * 120, max_new_tokens=4)
    assert loaded.grounding_size(384, 384) == (112, 112) and loaded.min_pixels == tiny.min_pixels
    request = [{"role": "user", "content": "score?"}]
    assert loaded.chat([request]) == TransformersJudge(tiny.model, tiny.tokenizer, tiny.image_processor,
                                                       max_new_tokens=4).chat([request])


@pytest.mark.gpu
def test_tiny_judge_on_cuda_in_bf16():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    judge = tiny_judge(seed=0)
    judge.model.to("cuda", torch.bfloat16)
    images = np.random.default_rng(0).integers(0, 256, (3, 384, 384, 3), dtype=np.uint8)
    batch = score_batch(PROMPTS, CHAINS, images, judge)
    assert batch.details["requests"] == 11 and batch.details["failed"] == 0
    for name in ("sem", "spa", "ri", "pi", "total"):
        scores = getattr(batch, name)
        assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1)), name

"""OpenAIJudge against a local server that answers well, slowly, with 500s, with garbage, or never finishes."""

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image

from gotr1.rewards import OpenAIJudge, RewardCache, score_batch, semantic_reward
from fake_judge_server import FakeOpenAIServer

TIMEOUT = 0.5
CHAIN = (
    "a <|obj_start|>cat<|obj_end|> <|box_start|>(0,0),(500,500)<|box_end|> left of a "
    "<|obj_start|>dog<|obj_end|> <|box_start|>(500,500),(1000,1000)<|box_end|>"
)


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(score=7, box=(0, 0, 196, 196), slow_seconds=1.5) as fake:
        yield fake


def judge_for(server, mode, **kwargs):
    options = dict(timeout=TIMEOUT, max_retries=2, backoff=0.01, concurrency=8)
    options.update(kwargs)
    return OpenAIJudge(server.url(mode), model="qwen2.5-vl-7b", **options)


def requests(n):
    image = np.full((384, 384, 3), 200, np.uint8)
    return [[{"role": "user", "content": [{"type": "image", "image": image},
                                          {"type": "text", "text": f"rate {i}"}]}] for i in range(n)]


def test_good_server_answers_every_request_with_png_data_urls(server):
    with judge_for(server, "good", api_key="secret") as judge:
        replies = judge.chat(requests(5))
    assert replies == ['```json\n{"score": 7}\n```'] * 5
    payload = server.payloads[-1]
    assert payload["model"] == "qwen2.5-vl-7b" and payload["temperature"] == 0.0 and payload["max_tokens"] == 128
    image_part, text_part = payload["messages"][0]["content"]
    assert text_part["type"] == "text" and text_part["text"].startswith("rate ")
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    np.testing.assert_array_equal(decoded, np.full((384, 384, 3), 200, np.uint8))
    assert server.headers[-1]["Authorization"] == "Bearer secret"


def test_all_rewards_through_the_server_in_one_chat_call(server):
    judge = judge_for(server, "good")
    calls = []
    chat = judge.chat
    judge.chat = lambda reqs: calls.append(len(reqs)) or chat(reqs)
    images = np.zeros((2, 384, 384, 3), np.uint8)
    batch = score_batch(["a cat left of a dog", "a cat"], [CHAIN, "no objects here"], images, judge)
    # 2 sem + 1 spa (the empty chain scores 0 without a request) + 2 ri + 2 pi, sent together.
    assert calls == [7] and batch.details["requests"] == 7
    np.testing.assert_allclose(batch.sem, [0.7, 0.7])
    np.testing.assert_allclose(batch.spa, [0.7, 0.0])
    np.testing.assert_allclose(batch.pi, [0.7, 0.7])
    # The server grounds every object at (0,0)-(196,196) of its 392x392 frame, i.e. (0,0)-(500,500):
    # the cat matches exactly, the dog not at all.
    np.testing.assert_allclose(batch.ri, [0.5, 0.0])
    assert batch.details["object_iou"] == [[1.0, 0.0], []]
    np.testing.assert_allclose(batch.total, [0.7 * 0.7 * 0.5, 0.0], rtol=1e-6)
    judge.close()


@pytest.mark.parametrize("mode, attempts_per_request", [("error", 3), ("slow", 3), ("notjson", 1)])
def test_failures_are_bounded_in_time_scored_zero_and_counted(server, mode, attempts_per_request):
    judge = judge_for(server, mode, concurrency=4)
    before = server.hits[mode]
    start = time.monotonic()
    scores, details = semantic_reward(["p0", "p1", "p2", "p3"], [CHAIN] * 4, None, judge)
    elapsed = time.monotonic() - start
    # One request per distinct (prompt, caption); each retried at most max_retries times.
    assert server.hits[mode] - before == 4 * attempts_per_request
    assert elapsed < 3 * (TIMEOUT + 0.1) + 1.0, elapsed
    np.testing.assert_array_equal(scores, np.zeros(4, np.float32))
    assert details["failed_per_component"]["sem"] == 4 and details["failed"] == 4 and details["unparsed"] == 0
    assert all(f["reason"] == "request failed" and f["raw"] is None for f in details["failures"])
    judge.close()


def test_garbage_replies_score_zero_and_keep_the_raw_text(server):
    judge = judge_for(server, "garbage")
    scores, details = semantic_reward(["a", "b"], [CHAIN, CHAIN], None, judge)
    np.testing.assert_array_equal(scores, [0.0, 0.0])
    assert details["unparsed_per_component"]["sem"] == 2 and details["unparsed"] == 2 and details["failed"] == 0
    assert details["failures"][0]["raw"] == "Lorem ipsum, the picture is nice."
    judge.close()


def test_retries_recover_from_a_transient_500(server):
    judge = judge_for(server, "flaky", concurrency=1)
    assert judge.chat(requests(1)) == ['```json\n{"score": 7}\n```']
    assert server.hits["flaky"] == 2
    judge.close()


def test_a_trickling_server_cannot_hang_a_batch(server):
    judge = judge_for(server, "trickle", max_retries=0, deadline=1.0)
    start = time.monotonic()
    assert judge.chat(requests(2)) == [None, None]
    assert time.monotonic() - start < 2.0
    judge.close()


def test_unreachable_server_and_cache(server):
    # A closed port: connection refused, retried, then None.
    judge = OpenAIJudge("http://127.0.0.1:9/v1", model="m", timeout=TIMEOUT, max_retries=1, backoff=0.01)
    assert judge.chat(requests(1)) == [None]
    judge.close()
    # A cached R_sem is not asked again; identical requests in one batch are sent once.
    judge = judge_for(server, "good")
    cache = RewardCache()
    before = server.hits["good"]
    scores, details = semantic_reward(["a", "a", "b"], [CHAIN, CHAIN, CHAIN], None, judge, cache=cache)
    assert details["requests"] == 2 and details["merged"] == 1
    scores, details = semantic_reward(["a", "b"], [CHAIN, CHAIN], None, judge, cache=cache)
    assert details["requests"] == 0 and details["cache_hits"] == 2
    np.testing.assert_allclose(scores, [0.7, 0.7])
    assert server.hits["good"] - before == 2
    judge.close()


def test_openai_judge_grounding_size_and_validation():
    judge = OpenAIJudge("http://127.0.0.1:9/v1", model="m")
    assert judge.grounding_size(384, 384) == (392, 392)
    assert judge.grounding_size(640, 480) == (644, 476)
    small = OpenAIJudge("http://127.0.0.1:9/v1", model="m", max_pixels=256 * 28 * 28)
    assert small.grounding_size(1024, 1024) == (448, 448)
    with pytest.raises(ValueError, match="concurrency"):
        OpenAIJudge("http://x/v1", model="m", concurrency=0)
    judge.close()
    small.close()


def test_a_trickling_server_frees_its_threads_so_the_judge_recovers():
    """The first requests trickle for far longer than the timeout; once the server answers again, the next
    chat works: stuck reads are cut at the per-attempt timeout, so no thread is held (nothing poisoned)."""
    with FakeOpenAIServer(trickle_seconds=20.0, trickle_hits=2) as fake:
        judge = judge_for(fake, "trickle", max_retries=0, concurrency=2, deadline=2.0)
        start = time.monotonic()
        assert judge.chat(requests(2)) == [None, None]
        time.sleep(TIMEOUT + 0.3)  # the cut reads have let go of their threads
        assert judge.chat(requests(2)) == ['```json\n{"score": 7}\n```'] * 2
        assert time.monotonic() - start < 6.0
        judge.close()


def test_an_endless_reply_is_cut_off_and_not_retried(server):
    import gotr1.rewards.openai_judge as openai_judge

    judge = judge_for(server, "endless", max_retries=2, timeout=5.0)
    before, start = server.hits["endless"], time.monotonic()
    assert judge.chat(requests(1)) == [None]
    assert time.monotonic() - start < 5.0 and server.hits["endless"] - before == 1  # oversized: refused, not retried
    assert openai_judge.MAX_REPLY_BYTES < server.endless_bytes
    judge.close()


def test_the_circuit_breaker_fails_fast_after_repeated_failures(server):
    judge = judge_for(server, "error", max_retries=0, breaker_after=3, breaker_cooldown=60.0, concurrency=1)
    before = server.hits["error"]
    assert judge.chat(requests(3)) == [None] * 3 and server.hits["error"] - before == 3
    start = time.monotonic()
    assert judge.chat(requests(5)) == [None] * 5
    assert server.hits["error"] - before == 3 and time.monotonic() - start < 0.5  # nothing sent while open
    judge.close()
    with pytest.raises(ValueError, match="breaker_after"):
        OpenAIJudge("http://127.0.0.1:9/v1", "m", breaker_after=0)

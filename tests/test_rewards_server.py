"""RewardServer and RemoteReward: a round trip equals the model called directly, concurrent requests share
batches, bad requests and model errors are answered without killing the server, and every fault of the
network or the server scores 0, is counted, and returns within the client's documented wall-time bound."""

import base64
import http.client
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from gotr1.metrics.metric import Metric, check_batch, rgb_images
from gotr1.rewards.remote import RemoteReward, RewardUnavailableError, png_base64
from gotr1.rewards.server import RewardServer
from fake_reward_server import REJECT_MESSAGE, FakeRewardServer

TIMEOUT = 0.5


class Brightness(Metric):
    """Mean brightness / 255; NaN for a prompt with "skip"; raises for "boom"; waits on ``gate`` for "wait"."""

    name = "brightness"

    def __init__(self):
        self.batch_sizes, self.threads, self.gate = [], set(), threading.Event()

    def score(self, prompts, images):
        images = rgb_images(images)
        check_batch(prompts, images)
        self.batch_sizes.append(len(images))
        self.threads.add(threading.get_ident())
        if any("boom" in p for p in prompts):
            raise RuntimeError("boom: the model fell over")
        if any("wait" in p for p in prompts):
            self.gate.wait(5.0)
        return np.array([np.nan if "skip" in p else image.mean() / 255 for p, image in zip(prompts, images)])


class OutOfRange(Metric):
    name = "out_of_range"

    def score(self, prompts, images):
        return np.full(len(images), 2.0)


def gray(value: int, size=(8, 8)) -> np.ndarray:
    return np.full((*size, 3), value, np.uint8)


def post(url: str, body: bytes, path: str = "/score") -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5.0)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def score_body(reward="brightness", prompts=("a",), images=None) -> bytes:
    images = [png_base64(gray(100))] * len(prompts) if images is None else images
    return json.dumps({"reward": reward, "prompts": list(prompts), "images": images}).encode()


def dead_url() -> str:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def fake():
    with FakeRewardServer(score=0.5, slow_seconds=1.5, trickle_seconds=3.0, endless_bytes=4 << 20) as server:
        yield server


def client(url, reward="fake", **kwargs):
    options = dict(timeout=TIMEOUT, max_retries=2, backoff=0.01)
    options.update(kwargs)
    return RemoteReward(url, reward, **options)


# ---------------------------------------------------------------------------------------------
# Server and client together
# ---------------------------------------------------------------------------------------------


def test_a_round_trip_gives_the_numbers_of_the_model_called_directly():
    model = Brightness()
    images = [gray(0), gray(255, (5, 7)), Image.fromarray(gray(37, (16, 4))),
              np.arange(48, dtype=np.uint8).reshape(4, 4, 3), np.full((6, 6), 200, np.uint8)]
    prompts = ["a", "b", "skip this one", "c", "d"]
    with RewardServer({"brightness": model}) as server:
        reward = RemoteReward(server.url, "brightness")
        reward.check()
        scores = reward(prompts, images)
        stacked = reward(["x", "y"], np.stack([gray(10), gray(20)]))
        empty = reward.score([], [])
    assert isinstance(reward, Metric) and reward.name == "brightness"
    assert scores.dtype == np.float64 and scores.shape == (5,)
    np.testing.assert_array_equal(scores, Brightness().score(prompts, images))  # PNG is lossless, JSON floats exact
    assert np.isnan(scores[2])
    np.testing.assert_array_equal(stacked, [10 / 255, 20 / 255])
    assert empty.shape == (0,)
    assert (reward.requests, reward.failures, reward.last_failures, reward.last_error) == (7, 0, 0, None)


def test_concurrent_requests_share_batches_and_each_gets_its_own_slice():
    model = Brightness()
    n_threads, results, errors = 8, {}, []
    start = threading.Barrier(n_threads)

    def ask(t):
        try:
            reward = RemoteReward(server.url, "brightness", timeout=10.0)
            start.wait(5.0)
            results[t] = reward([f"t{t} first", f"t{t} second"], [gray(10 * t), gray(10 * t + 5)])
        except Exception as err:  # surfaced below, with the thread's number
            errors.append((t, err))

    with RewardServer({"brightness": model}, max_batch=32, max_wait=0.2) as server:
        threads = [threading.Thread(target=ask, args=(t,)) for t in range(n_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10.0)
    assert errors == []
    for t in range(n_threads):
        np.testing.assert_array_equal(results[t], [10 * t / 255, (10 * t + 5) / 255], err_msg=f"thread {t}")
    assert sum(model.batch_sizes) == 2 * n_threads and max(model.batch_sizes) > 2, model.batch_sizes
    assert len(model.threads) == 1 and threading.get_ident() not in model.threads  # only its worker calls it


def test_a_request_larger_than_max_batch_is_scored_in_slices():
    model = Brightness()
    with RewardServer({"brightness": model}, max_batch=2) as server:
        scores = RemoteReward(server.url, "brightness")(list("abcde"), [gray(v) for v in (1, 2, 3, 4, 5)])
    np.testing.assert_array_equal(scores, np.arange(1, 6) / 255)
    assert sorted(model.batch_sizes) == [1, 2, 2]


@pytest.mark.parametrize("body, problem", [
    (score_body(reward="nope"), "unknown reward 'nope'"),
    (score_body(prompts=("a", "b"), images=[png_base64(gray(1))]), "2 prompts for 1 images"),
    (b"{not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (score_body(prompts=("a",), images=[base64.b64encode(b"not a png").decode()]), "images[0]"),
    (score_body(prompts=("a",), images=["%%% not base64"]), "images[0]"),
    (score_body(prompts=("a",), images=[7]), "images[0]"),
    (json.dumps({"reward": "brightness", "prompts": "a", "images": []}).encode(), "prompts"),
    (score_body(prompts=["a"] * 40), "over the limit"),
], ids=["unknown-reward", "count-mismatch", "garbage-json", "not-an-object", "undecodable-image", "not-base64",
        "image-not-a-string", "prompts-not-a-list", "too-large"])
def test_bad_requests_answer_400_naming_the_problem_and_the_server_goes_on(body, problem):
    with RewardServer({"brightness": Brightness()}, max_request_bytes=2_000) as server:
        status, answer = post(server.url, body)
        assert status == 400 and problem in answer["error"], answer
        assert post(server.url, score_body(prompts=("a",))) == (200, {"scores": [100 / 255]})


def test_unknown_paths_answer_404_and_health_lists_the_rewards():
    with RewardServer({"brightness": Brightness(), "out_of_range": OutOfRange()}) as server:
        assert post(server.url, b"{}", path="/nope")[0] == 404
        connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=5.0)
        connection.request("GET", "/health")
        assert json.loads(connection.getresponse().read()) == {"rewards": ["brightness", "out_of_range"]}
        connection.close()
        assert server.url in server.describe() and "brightness" in server.describe()


def test_a_model_that_raises_answers_500_alone_and_the_server_goes_on():
    model = Brightness()
    answers = {}

    def ask(name, prompt):
        answers[name] = post(server.url, score_body(prompts=(prompt,)))

    with RewardServer({"brightness": model, "out_of_range": OutOfRange()}, max_wait=0.05) as server:
        # The first request holds the worker; the failing one and a good one queue up behind it and are
        # batched together: the good one must still get its score.
        blocker = threading.Thread(target=ask, args=("blocker", "wait"))
        blocker.start()
        time.sleep(0.2)
        threads = [threading.Thread(target=ask, args=pair) for pair in (("bad", "boom"), ("ok", "fine"))]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        model.gate.set()
        for thread in [blocker, *threads]:
            thread.join(10.0)
        status, answer = answers["bad"]
        assert status == 500 and "RuntimeError: boom: the model fell over" in answer["error"]
        assert answers["ok"] == (200, {"scores": [100 / 255]}) and answers["blocker"][0] == 200
        assert 2 in model.batch_sizes, model.batch_sizes  # the two were one batch, then scored alone
        status, answer = post(server.url, score_body(reward="out_of_range"))
        assert status == 500 and "outside [0, 1]" in answer["error"]
        assert post(server.url, score_body())[0] == 200


def test_a_wrong_reward_name_scores_zero_without_retries_and_keeps_the_message():
    with RewardServer({"brightness": Brightness()}) as server:
        reward = client(server.url, "brightnes")
        np.testing.assert_array_equal(reward(["a", "b"], [gray(1), gray(2)]), [0.0, 0.0])
        assert reward.failures == reward.last_failures == 2 and "unknown reward 'brightnes'" in reward.last_error
        with pytest.raises(RewardUnavailableError, match="does not host reward 'brightnes'") as raised:
            reward.check()
        assert server.url in str(raised.value)


def test_an_oversized_request_is_refused_by_name_not_by_a_reset():
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)  # ~250 kB of PNG
    with RewardServer({"brightness": Brightness()}, max_request_bytes=10_000) as server:
        reward = client(server.url, "brightness")
        np.testing.assert_array_equal(reward(["a"], [noise]), [0.0])
        assert "HTTP 400" in reward.last_error and "over the limit of 10000" in reward.last_error


def test_serve_forever_prints_its_url_and_stops_on_ctrl_c(tmp_path):
    code = ("import numpy as np\n"
            "from gotr1.metrics.metric import Metric\n"
            "from gotr1.rewards.server import RewardServer\n"
            "class Half(Metric):\n"
            "    def score(self, prompts, images):\n"
            "        return np.full(len(images), 0.5)\n"
            "RewardServer({'half': Half()}).serve_forever()\n")
    # From tmp_path: from the checkout, the source tree (not the installed package) would be imported.
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = process.stdout.readline()
        assert line.startswith("reward server at http://127.0.0.1:") and "half" in line, line
        reward = client(line.split()[3].rstrip(":"), "half")
        reward.check()
        np.testing.assert_array_equal(reward(["a"], [gray(1)]), [0.5])
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10.0) == 0
    finally:
        process.kill()
        process.stdout.close()


# ---------------------------------------------------------------------------------------------
# The client against faults
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["slow", "error", "garbage", "short", "drop", "trickle", "endless"])
def test_faults_are_retried_then_score_zero_counted_and_bounded_in_time(fake, mode):
    reward = client(fake.url(mode), max_reply_bytes=64 << 10)
    before = fake.hits[mode]
    start = time.monotonic()
    scores = reward(["a", "b", "c"], [gray(1)] * 3)
    elapsed = time.monotonic() - start
    np.testing.assert_array_equal(scores, np.zeros(3))
    assert scores.dtype == np.float64 and not np.isnan(scores).any()
    assert fake.hits[mode] - before == 3  # the first attempt and max_retries more
    assert (reward.requests, reward.failures, reward.last_failures) == (3, 3, 3)
    assert "after 3 attempts" in reward.last_error
    assert elapsed < reward.max_seconds + 1.0, elapsed  # 3 x 0.5 s + backoff; generous: hangs, not speed


def test_a_dead_port_scores_zero_counted_and_check_names_the_url():
    url = dead_url()
    reward = client(url, "clip", max_retries=1)
    start = time.monotonic()
    np.testing.assert_array_equal(reward(["a"], [gray(1)]), [0.0])
    assert time.monotonic() - start < reward.max_seconds + 1.0
    assert reward.failures == 1 and "Connection" in reward.last_error
    with pytest.raises(RewardUnavailableError, match="unreachable") as raised:
        reward.check()
    assert url in str(raised.value) and "'clip'" in str(raised.value)


def test_a_4xx_is_not_retried_and_its_message_is_kept(fake):
    reward = client(fake.url("reject"))
    before = fake.hits["reject"]
    np.testing.assert_array_equal(reward(["a"], [gray(1)]), [0.0])
    assert fake.hits["reject"] - before == 1 and reward.failures == 1
    assert REJECT_MESSAGE in reward.last_error and "HTTP 400" in reward.last_error


def test_a_transient_500_is_retried_and_recovers(fake):
    reward = client(fake.url("flaky"))
    np.testing.assert_array_equal(reward(["a", "b"], [gray(1), gray(2)]), [0.5, 0.5])
    assert fake.hits["flaky"] == 2 and reward.failures == 0 and reward.last_error is None


def test_check_passes_for_a_hosted_reward_and_refuses_garbage(fake):
    client(fake.url("good"), "fake").check()
    with pytest.raises(RewardUnavailableError, match="does not host reward 'other'"):
        client(fake.url("good"), "other").check()
    with pytest.raises(RewardUnavailableError, match="did not answer") as raised:
        client(fake.url("garbage"), "fake").check()
    assert fake.url("garbage") in str(raised.value)


def test_the_circuit_breaker_fails_fast_without_network_then_probes_again(fake):
    reward = client(fake.url("error"), max_retries=0, breaker_after=3, breaker_cooldown=1.0)
    before = fake.hits["error"]
    for _ in range(3):
        reward(["a"], [gray(1)])
    assert fake.hits["error"] - before == 3
    start = time.monotonic()
    for _ in range(5):
        np.testing.assert_array_equal(reward(["a", "b"], [gray(1), gray(2)]), [0.0, 0.0])
    assert time.monotonic() - start < 0.5 and fake.hits["error"] - before == 3  # nothing sent while open
    assert reward.failures == 3 + 10 and reward.last_failures == 2 and "circuit breaker" in reward.last_error
    time.sleep(1.0)  # the cooldown is over: the next request probes the server again
    reward(["a"], [gray(1)])
    assert fake.hits["error"] - before == 4


def test_validation_names_the_argument():
    with pytest.raises(ValueError, match="url"):
        RemoteReward("ftp://host", "clip")
    with pytest.raises(ValueError, match="breaker_after"):
        RemoteReward("http://127.0.0.1:9", "clip", breaker_after=0)
    with pytest.raises(ValueError, match="at least one reward"):
        RewardServer({})
    with pytest.raises(TypeError, match="rewards\\['x'\\]"):
        RewardServer({"x": object()})


# ---------------------------------------------------------------------------------------------
# Decoded pixels: bounded per request and in flight
# ---------------------------------------------------------------------------------------------


def _decodes(monkeypatch, server=None) -> list[int]:
    """Record each image decode (its pixels); with ``server``, check the decode happens under the budget."""
    from gotr1.rewards.score_requests import EncodedImage

    decoded, real = [], EncodedImage.decode

    def counting(self):
        if server is not None:
            assert server.budget.held >= self.pixels, "an image decoded outside the pixel budget"
        decoded.append(self.pixels)
        return real(self)

    monkeypatch.setattr(EncodedImage, "decode", counting)
    return decoded


def test_images_over_the_pixel_budget_answer_413_naming_it_without_being_decoded(monkeypatch):
    from gotr1.rewards.score_requests import MAX_PIXELS

    decoded = _decodes(monkeypatch)
    huge = png_base64(np.zeros((4096, 4096, 3), np.uint8))  # ~50 kB of PNG, 16.7 M pixels once decoded
    model = Brightness()
    with RewardServer({"brightness": model}) as server:
        status, answer = post(server.url, score_body(prompts=["a"] * 24, images=[huge] * 24))
        assert status == 413, answer
        assert f"402653184 pixels, over this server's budget of {MAX_PIXELS} decoded pixels per request" in \
            answer["error"]
        assert decoded == [] and model.batch_sizes == []
        reward = client(server.url, "brightness", timeout=60.0)
        np.testing.assert_array_equal(reward(["a", "b"], [gray(0), gray(255)]), [0.0, 1.0])  # the server goes on
        white = np.full((4096, 4096, 3), 255, np.uint8)
        np.testing.assert_array_equal(reward(["a"] * 2, [white] * 2), [1.0, 1.0])  # two fit the default budget
    assert len(decoded) == 4


def test_decoded_pixels_in_flight_stay_within_the_budget_across_requests(monkeypatch):
    side, budget = 32, 3 * 32 * 32  # each request fits; two at once do not
    model = Brightness()
    with RewardServer({"brightness": model}, max_batch=8, max_wait=0.05, max_pixels=budget) as server:
        decoded = _decodes(monkeypatch, server)
        results, errors = {}, []

        def ask(t):
            try:
                values = [(7 * t + k) % 256 for k in range(3)]
                results[t] = (values, RemoteReward(server.url, "brightness", timeout=30.0)(
                    [f"r{t}"] * 3, [gray(v, (side, side)) for v in values]))
            except Exception as err:  # surfaced below with the thread's number
                errors.append((t, err))

        threads = [threading.Thread(target=ask, args=(t,)) for t in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60.0)
        status, answer = post(server.url, score_body(prompts=["a"] * 4, images=[png_base64(gray(1, (side, side)))] * 4))
    assert errors == []
    for t, (values, scores) in results.items():
        np.testing.assert_array_equal(scores, np.array(values) / 255, err_msg=f"request {t}")
    assert len(decoded) == 36 and server.budget.peak == budget and server.budget.held == 0
    assert max(model.batch_sizes) == 3, model.batch_sizes  # one request's pixels per batch: the budget's share
    assert status == 413 and f"budget of {budget} decoded pixels" in answer["error"]


# ---------------------------------------------------------------------------------------------
# The API key
# ---------------------------------------------------------------------------------------------

KEY = "s3cret-key-0123"


def _get_health(url: str, key: str | None) -> tuple[int, dict, str | None]:
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=5.0)
    try:
        connection.request("GET", "/health", headers={"Authorization": f"Bearer {key}"} if key else {})
        response = connection.getresponse()
        return response.status, json.loads(response.read()), response.getheader("WWW-Authenticate")
    finally:
        connection.close()


def test_a_server_with_an_api_key_answers_401_without_it_and_never_logs_it(monkeypatch, caplog):
    from gotr1.rewards.remote import API_KEY_ENV

    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    with RewardServer({"brightness": Brightness()}, api_key=KEY) as server:
        for key in (None, "wrong", KEY[:-1]):
            status, answer, challenge = _get_health(server.url, key)
            assert status == 401 and "Authorization: Bearer <key>" in answer["error"] and challenge == "Bearer"
        assert _get_health(server.url, KEY)[:2] == (200, {"rewards": ["brightness"]})
        assert post(server.url, score_body())[0] == 401

        anonymous = client(server.url, "brightness")
        with pytest.raises(RewardUnavailableError, match="needs an API key and none was given"):
            anonymous.check()
        hits = server.budget.peak
        np.testing.assert_array_equal(anonymous(["a"], [gray(9)]), [0.0])
        assert "not retried: HTTP 401" in anonymous.last_error and server.budget.peak == hits
        with pytest.raises(RewardUnavailableError, match="refused the API key given"):
            client(server.url, "brightness", api_key="wrong").check()

        keyed = client(server.url, "brightness", api_key=KEY)
        keyed.check()
        np.testing.assert_array_equal(keyed(["a"], [gray(51)]), [0.2])
        monkeypatch.setenv(API_KEY_ENV, KEY)  # the environment variable, for the client too
        np.testing.assert_array_equal(client(server.url, "brightness")(["a"], [gray(51)]), [0.2])
        assert KEY not in server.describe() and KEY not in keyed.describe() and "API key required" in server.describe()
    assert KEY not in caplog.text


def test_a_server_beyond_loopback_needs_a_key_or_insecure():
    with pytest.raises(ValueError, match=r"host='0.0.0.0' reaches beyond this machine.*--api-key.*--insecure"):
        RewardServer({"brightness": Brightness()}, host="0.0.0.0")
    for options in ({"api_key": KEY}, {"insecure": True}):
        RewardServer({"brightness": Brightness()}, host="0.0.0.0", **options).close()
    for host in ("127.0.0.1", "localhost", "::1"):
        try:
            RewardServer({"brightness": Brightness()}, host=host).close()
        except OSError as err:  # no IPv6 here: the point is that the key check let it through
            assert host == "::1", err


# ---------------------------------------------------------------------------------------------
# The tiny reward models: answers that tell requests apart
# ---------------------------------------------------------------------------------------------


def test_200_concurrent_requests_each_get_their_own_tiny_scores_in_order():
    from concurrent.futures import ThreadPoolExecutor

    from gotr1.metrics.preference import tiny
    from gotr1.metrics.tiny_models import _corpus

    models = {"clipscore": tiny("clipscore"), "pickscore": tiny("pickscore")}
    rng = np.random.default_rng(0)
    corpus = _corpus()
    requests = [(name, [corpus[(7 * i + k) % 500] for k in range(2)],
                 list(rng.integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)))
                for i, name in enumerate(["clipscore", "pickscore"] * 100)]
    expected = [None] * len(requests)
    for name, model in models.items():  # each model's references in one call: 2 scores per request
        mine = [i for i, r in enumerate(requests) if r[0] == name]
        scores = model.score([p for i in mine for p in requests[i][1]], [im for i in mine for im in requests[i][2]])
        for k, i in enumerate(mine):
            expected[i] = scores[2 * k : 2 * k + 2]
    every = np.concatenate(expected)
    assert np.mean((every > 0) & (every < 1)) > 0.9 and np.std(every) > 0.05, "scores inside the ranges, spread"

    with RewardServer(models, max_batch=32, max_wait=0.01) as server:
        clients = {name: RemoteReward(server.url, name, timeout=60.0) for name in models}
        with ThreadPoolExecutor(16) as pool:  # 16 connections at a time, 200 requests
            answers = list(pool.map(lambda r: clients[r[0]](r[1], r[2]), requests))
    assert all(c.failures == 0 for c in clients.values())
    told_apart = 0
    for i, (answer, own) in enumerate(zip(answers, expected)):
        # Batched with other requests the model's float sums may round differently: 1e-5 is far below the gaps.
        np.testing.assert_allclose(answer, own, atol=1e-5, err_msg=f"request {i}")
        told_apart += min(np.abs(answer - other).max() for j, other in enumerate(expected) if j != i) > 1e-4
    assert told_apart >= 190, f"only {told_apart} of 200 answers differ from every other request's"

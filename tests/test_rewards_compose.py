"""gotr1.rewards.compose and the GRPO guard rails: specs and presets, composition arithmetic, monitors,
failures, per-component logging, trend alarms."""

import numpy as np
import pytest

from gotr1.cli.jobs import GRPOJob
from gotr1.grpo.config import GRPOConfig
from gotr1.grpo.guard import RewardTrends
from gotr1.grpo.trainer import GRPOTrainer
from gotr1.metrics.metric import Metric
from gotr1.policy.model import tiny_janus
from gotr1.rewards import JudgeReward, RewardConfig
from gotr1.rewards.compose import PRESETS, ComposedReward, build_composed_reward, parse_reward_spec

PROMPTS = ["a red square on the left of a blue circle", "two green triangles"]
CHAIN = "a <|obj_start|>red square<|obj_end|> <|box_start|>(0,0),(400,400)<|box_end|>"


class ScoreJudge:
    """A judge whose every reply is the score ``score`` out of 10."""

    def __init__(self, score=7):
        self.reply = f'{{"score": {score}}}'

    def chat(self, requests):
        return [self.reply] * len(requests)

    def grounding_size(self, width, height):
        return width, height


class Fixed(Metric):
    """A reward model returning fixed scores (and optionally losing some images, as a failing server does)."""

    def __init__(self, name, scores, lost=0):
        self.name, self.scores, self.last_failures = name, np.asarray(scores, dtype=np.float64), lost

    def score(self, prompts, images):
        return self.scores[: len(prompts)]


def _images(n):
    return np.zeros((n, 8, 8, 3), dtype=np.uint8)


def test_presets_and_mappings_parse_and_bad_fields_are_named():
    got_r1 = parse_reward_spec(preset="got-r1")
    assert got_r1.judge == {"w_sem": 1.0, "w_spa": 1.0, "w_ri": 1.0, "w_pi": 1.0} and got_r1.combine == "product"
    assert [m.name for m in got_r1.models] == ["hps"]
    assert [m.name for m in parse_reward_spec(preset="got-r1-arxiv").models] == []
    t2i = parse_reward_spec(preset="t2i-r1")
    assert t2i.combine == "sum" and {m.name for m in t2i.models} == {"hps", "blip_vqa", "spatial"}
    spec = parse_reward_spec({"hps": {"weight": 2, "device": "cuda:1"}, "pickscore": {"monitor": True},
                              "weights": {"pi": 0.5}}, preset="got-r1-arxiv")
    hps, pick = spec.models
    assert (hps.weight, hps.device, pick.monitor) == (2.0, "cuda:1", True) and spec.judge["w_pi"] == 0.5
    for value, field in [({"hsp": {}}, "reward.hsp"), ({"hps": {"weight": -1}}, "reward.hps.weight"),
                         ({"hps": {"gpu": 1}}, "reward.hps"), ({"hps": {}, "combine": "max"}, "reward.combine"),
                         ({"judge": {"w_pi": -1}}, "w_pi"), ({"hps": False}, "no component")]:
        with pytest.raises(ValueError, match=field):
            parse_reward_spec(value)
    with pytest.raises(ValueError, match="reward_preset"):
        parse_reward_spec(preset="flow-grpo")
    assert set(PRESETS) == {"got-r1", "got-r1-arxiv", "t2i-r1"}


def test_the_command_line_takes_a_mapping_as_yaml_text():
    job = GRPOJob(reward="{hps: {weight: 2}, combine: sum}", reward_preset="got-r1")
    assert job.composed and job.reward == {"hps": {"weight": 2}, "combine": "sum"}
    with pytest.raises(ValueError, match="GRPOJob.reward"):
        GRPOJob(reward="judges")


def test_got_r1_product_with_hps_and_the_sum_ablation():
    hps = [0.5, 1.0, np.nan]
    judge = JudgeReward(ScoreJudge(7), RewardConfig(w_ri=0))  # R_RI needs grounding replies: left out here
    product = ComposedReward(judge, {"hps": (Fixed("hps", hps), 1.0, False)})(PROMPTS + ["x"], [CHAIN] * 3, _images(3))
    # R_PI * (R_sem + R_spa) / 2 * R_HPS; a sample where HPS does not apply keeps the judge's product.
    np.testing.assert_allclose(product.total, [0.7 * 0.7 * 0.5, 0.7 * 0.7, 0.7 * 0.7], rtol=1e-6)
    assert set(product.components) == {"sem", "spa", "pi", "hps"}
    summed = ComposedReward(JudgeReward(ScoreJudge(7), RewardConfig(w_ri=0, mode="sum")),
                            {"hps": (Fixed("hps", hps), 3.0, False)}, combine="sum")(PROMPTS + ["x"], [CHAIN] * 3, _images(3))
    np.testing.assert_allclose(summed.total, [(0.7 * 3 + 3 * 0.5) / 6, (0.7 * 3 + 3 * 1.0) / 6, 0.7], rtol=1e-6)


def test_a_monitor_is_logged_not_optimised_and_failures_score_zero_and_count():
    models = {"hps": (Fixed("hps", [0.5, 0.5]), 1.0, False), "pickscore": (Fixed("pickscore", [0.0, 1.0]), 1.0, True),
              "remote": (Fixed("remote", [0.0, 0.9], lost=1), 1.0, False)}
    reward = ComposedReward(None, models, combine="sum")
    scored = reward(PROMPTS, [""] * 2, _images(2))
    assert reward.monitors == ("pickscore",)
    np.testing.assert_allclose(scored.total, [(0.5 + 0.0) / 2, (0.5 + 0.9) / 2], rtol=1e-6)
    np.testing.assert_allclose(scored.components["pickscore"], [0.0, 1.0])
    assert scored.failed == {"hps": 0.0, "pickscore": 0.0, "remote": 0.5}
    no_images = reward(PROMPTS, [""] * 2, None)
    assert np.isnan(no_images.total).all(), "image rewards without images: nothing to score"


def test_tiny_reward_models_build_from_a_spec_and_score():
    spec = parse_reward_spec({"clipscore": {}, "pickscore": {"monitor": True}})
    reward = build_composed_reward(spec, tiny=True)
    rng = np.random.default_rng(0)
    scored = reward(PROMPTS, [""] * 2, rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    assert scored.total.shape == (2,) and np.all((scored.total >= 0) & (scored.total <= 1))
    with pytest.raises(ValueError, match="judge"):
        build_composed_reward(parse_reward_spec(preset="got-r1-arxiv"))


def test_the_spatial_reward_asks_its_detector_for_every_noun():
    """UniDet's closed vocabulary belongs to the benchmark: as a reward it would score "a wallet left of a
    cow" 0 whatever the image shows."""
    from gotr1.rewards.compose import ModelEntry, load_reward_model

    detector = load_reward_model(ModelEntry("spatial"), tiny=True)
    assert detector.vocabulary == "open" and detector.query("wallet") == "wallet"


def test_a_grpo_step_with_judge_and_reward_model_logs_every_component(tmp_path):
    scores = np.linspace(0.1, 0.9, 6)
    # R_spa and R_RI read the chain's boxes, which a random policy rarely writes: left out of this test.
    reward = ComposedReward(JudgeReward(ScoreJudge(7), RewardConfig(w_ri=0, w_spa=0)),
                            {"hps": (Fixed("hps", scores), 1.0, False), "clipscore": (Fixed("clipscore", scores), 1.0, True)})
    config = GRPOConfig(output_dir=str(tmp_path), prompts_per_step=2, group_size=3, max_chain_tokens=8, max_steps=1,
                        micro_batch_size=6, lora_rank=4, progress=False, sample_every=1)
    trainer = GRPOTrainer(*tiny_janus(seed=0), reward, config, PROMPTS)
    (metrics,) = trainer.train()
    trainer.close()
    for name in ("sem", "pi", "hps", "clipscore"):
        assert {f"reward_{name}", f"reward_{name}_std", f"reward_{name}_failed"} <= set(metrics), name
    assert metrics["reward_sem"] == pytest.approx(0.7) and metrics["reward_hps_failed"] == 0.0
    assert metrics["reward_hps"] == pytest.approx(scores.mean()) and metrics["reward_hps_std"] == pytest.approx(scores.std())
    assert metrics["reward_clipscore_monitor"] is True and metrics["reward_alarms"] == []
    assert metrics["reward_mean"] == pytest.approx(0.49 * scores.mean(), rel=1e-5)  # the monitor is not in it
    assert (tmp_path / "samples" / "step-0000001.png").is_file()


def test_a_component_rising_while_another_falls_raises_an_alarm():
    trends = RewardTrends(window=3, delta=0.05)
    alarms = []
    for step in range(6):
        alarms = trends.update({"hps": 0.5 + 0.05 * step, "pi": 0.8 - 0.05 * step, "sem": 0.5})
    assert len(alarms) == 1 and alarms[0].startswith("hps rose") and "pi (" in alarms[0]
    calm = RewardTrends(window=3, delta=0.05)
    assert all(calm.update({"hps": 0.5 + 0.05 * s, "pi": 0.5 + 0.05 * s}) == [] for s in range(6))
    assert RewardTrends(window=0).update({"hps": 1.0}) == []


def test_a_reward_served_by_gotr1_serve_rewards_scores_like_the_local_model(tmp_path, monkeypatch):
    """`gotr1 serve-rewards` in its own process with an API key from the environment, reached through a spec
    entry's url and api_key; the key is never printed, and a spec without it is refused by check()."""
    import os
    import re
    import signal
    import subprocess
    import sys

    from gotr1.rewards.policy_reward import JudgeUnavailableError
    from gotr1.rewards.remote import API_KEY_ENV

    key = "serve-key-5678"
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    log = open(tmp_path / "server.log", "w")  # a file, not a pipe nobody reads: the server can never block on it
    server = subprocess.Popen([sys.executable, "-m", "gotr1.cli", "serve-rewards", "--rewards", "clipscore",
                               "--tiny", "--port", "0"], stdout=subprocess.PIPE, stderr=log, text=True, cwd=tmp_path,
                              env={**os.environ, API_KEY_ENV: key})
    try:
        line = server.stdout.readline()
        url = re.search(r"http://[\d.]+:\d+", line).group(0)
        assert "API key required" in line and key not in line, line
        images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
        remote = build_composed_reward(parse_reward_spec({"clipscore": {"url": url, "api_key": key}}))
        local = build_composed_reward(parse_reward_spec({"clipscore": {}}), tiny=True)
        remote.check()
        served, here = remote(PROMPTS, [""] * 2, images), local(PROMPTS, [""] * 2, images)
        np.testing.assert_allclose(served.total, here.total, atol=1e-6)
        assert served.failed == {"clipscore": 0.0} and 0 < served.total.min() and served.total.max() < 1
        with pytest.raises(JudgeUnavailableError, match="needs an API key and none was given"):
            build_composed_reward(parse_reward_spec({"clipscore": {"url": url}})).check()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            code = "hung"
        log.close()
        assert code == 0, (tmp_path / "server.log").read_text()[-3000:]
    assert key not in (tmp_path / "server.log").read_text()


def test_an_api_key_is_kept_out_of_reprs_and_run_configs():
    from gotr1.cli.config_io import dump_config
    from gotr1.cli.jobs import GRPOJob

    spec = parse_reward_spec({"pickscore": {"url": "http://h:8100", "api_key": "k-9999"}})
    assert spec.models[0].api_key == "k-9999" and "k-9999" not in repr(spec)
    job = GRPOJob(reward={"judge": True, "pickscore": {"url": "http://h:8100", "api_key": "k-9999"}})
    dumped = dump_config(job)
    assert "k-9999" not in dumped and "http://h:8100" in dumped

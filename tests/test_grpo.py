"""The GRPO trainer on the tiny model: a step's effects and metrics, micro-batching vs one big batch, resume,
two-rank runs (replicated and FSDP2-sharded)."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gotr1.grpo.config import GRPOConfig
from gotr1.grpo.trainer import GRPOTrainer
from gotr1.grpo.update import loss_and_backward, loss_normalizer
from gotr1.kernels.grpo_loss import grpo_loss_reference
from gotr1.policy.forward import teacher_forced_hidden
from gotr1.policy.model import got_token_ids, load_policy, tiny_janus
from gotr1.policy.tokens import LogProbs
from gotr1.rewards.policy_reward import RuleReward
from gotr1.rollout import Sampling, rollout

PROMPTS = ["a red square on the left of a blue circle", "two green triangles", "a yellow circle above a black square",
           "a pink square and a brown triangle"]
METRICS = {"loss", "grad_norm", "ratio_mean", "clip_low_frac", "clip_high_frac", "kl_mean", "reward_mean",
           "reward_std", "advantage_mean", "judge_failures", "judge_requests", "parse_failures", "tokens_per_s", "seconds_rollout",
           "seconds_reward", "seconds_update", "chain_length", "skipped_steps", "reward_length", "lr"}


def length_reward(prompts, chains, images, judge=None):
    """A reward that varies within every group (chain lengths differ), so advantages are non-zero."""
    return np.array([(len(c.text) % 13) / 12 for c in chains], dtype=np.float32), {}


length_reward.__name__ = "length"


def _config(tmp_path, **overrides):
    base = dict(output_dir=str(tmp_path), prompts_per_step=2, group_size=3, max_chain_tokens=12, max_steps=2,
                micro_batch_size=6, lr=5e-3, lora_rank=4, progress=False, sample_every=0, temperature=1.0)
    return GRPOConfig(**{**base, **overrides})


def _trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_one_step_changes_the_policy_and_logs_every_metric(tmp_path, beta):
    trainer = GRPOTrainer(*tiny_janus(seed=0), length_reward, _config(tmp_path, beta=beta, max_steps=1, sample_every=1), PROMPTS)
    before = _trainable(trainer.model)
    (metrics,) = trainer.train()
    after = _trainable(trainer.model)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert METRICS <= set(metrics), METRICS - set(metrics)
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-4)  # on-policy: rollout log-probs == recomputed
    assert trainer.reference_passes == (0 if beta == 0 else 1)
    assert (tmp_path / "samples" / "step-0000001.png").is_file()
    assert (tmp_path / "step-0000001" / "model" / "adapter_model.safetensors").is_file()


def _bf16_step(tmp_path, monkeypatch, rollout_precision: str) -> dict:
    """One LoRA step under CPU bf16 autocast (``mixed_precision="bf16"``: what CUDA runs), its rollout in
    ``rollout_precision``; adapters and tag rows moved off their initial values so that LoRA counts."""
    import gotr1.grpo.trainer as grpo_trainer
    from gotr1.policy.precision import autocast

    monkeypatch.setattr(grpo_trainer, "autocast", lambda device_type, _: autocast(device_type, rollout_precision))
    cfg = _config(tmp_path, mixed_precision="bf16", beta=0.04, max_steps=1, prompts_per_step=3, group_size=4)
    trainer = GRPOTrainer(*tiny_janus(seed=0), length_reward, cfg, PROMPTS)
    with torch.no_grad():
        for param in (p for p in trainer.model.parameters() if p.requires_grad):
            param.add_(torch.randn_like(param) * 0.05)
    metrics = trainer.train_step()
    trainer.close()
    return metrics


def test_bf16_rollout_and_loss_agree_on_policy(tmp_path, monkeypatch):
    """Rollout, log-prob passes and loss run in one precision, so the first iteration is on-policy: the ratio is 1
    and the rollout's log-probs equal the trainer's within bf16 rounding (kernels of other shapes round
    differently: ~0.004 mean here). A rollout left in float32 while the loss runs in bf16 (the mismatch the
    shared precision removes) misses by several times that."""
    agreed = _bf16_step(tmp_path / "agreed", monkeypatch, "bf16")
    assert abs(agreed["ratio_mean"] - 1.0) < 2**-8, agreed["ratio_mean"]
    assert agreed["logprob_gap_mean"] < 0.012, agreed["logprob_gap_mean"]
    mismatched = _bf16_step(tmp_path / "mismatched", monkeypatch, "off")
    assert mismatched["logprob_gap_mean"] > 2 * agreed["logprob_gap_mean"], (mismatched, agreed)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_micro_batched_update_equals_one_big_batch_reference(tmp_path, loss_type):
    cfg = _config(tmp_path, loss_type=loss_type, micro_batch_size=2, beta=0.04, use_lora=False)
    trainer = GRPOTrainer(*tiny_janus(seed=1), length_reward, cfg, PROMPTS)
    r = trainer._rollout(PROMPTS[:2])
    model, janus = trainer.model, trainer.model
    tokens = got_token_ids(trainer.processor)
    advantages = torch.tensor([1.0, -0.5, 0.25, -1.0, 0.5, 0.0])
    old = LogProbs(r.chain_logprobs, r.image_logprobs)
    ref = LogProbs(r.chain_logprobs - 0.01, r.image_logprobs + 0.02)  # a reference that differs a little
    chain_tokens = int(r.chain_mask.sum())
    normalizer = loss_normalizer(r, cfg, len(r), chain_tokens + r.image_ids.numel())
    loss_and_backward(model, r, advantages, old=old, ref=ref, config=cfg, normalizer=normalizer, tokens=tokens)
    micro = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    # Reference: one forward over the whole batch, plain-torch loss over materialised logits, in float64.
    chain_hidden, image_hidden = teacher_forced_hidden(model, r)
    chain_logits = janus.lm_head(chain_hidden).double()
    image_logits = janus.model.generation_head(image_hidden).double()
    kw = dict(beta=0.04, loss_type="grpo", reduction="none")
    chain_sum, cm = grpo_loss_reference(chain_logits, r.chain_ids, r.chain_mask, advantages.double(), old.chain.double(), ref.chain.double(), **kw)
    image_mask = torch.ones_like(r.image_ids, dtype=torch.bool)
    image_sum, im = grpo_loss_reference(image_logits, r.image_ids, image_mask, advantages.double(), old.image.double(), ref.image.double(), **kw)
    per_seq, counts = chain_sum + image_sum, cm["token_counts"] + im["token_counts"]
    if loss_type == "grpo":
        loss = (per_seq / counts).mean()
    elif loss_type == "bnpo":
        loss = per_seq.sum() / counts.sum()
    else:
        loss = per_seq.sum() / (len(r) * (r.chain_ids.shape[1] + r.image_ids.shape[1]))
    loss.backward()
    big = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert micro.keys() == big.keys()
    for name in big:
        torch.testing.assert_close(micro[name], big[name].to(micro[name].dtype), rtol=1e-4, atol=1e-6, msg=name)


def test_an_update_reads_the_device_once_not_per_micro_batch(tmp_path):
    """Three micro-batches cost no more host synchronisations than one, beyond the three at most each forward
    needs (the fused loss counting its tokens, transformers checking its padding mask once or twice): the metric
    sums stay on the device until the end (they were ~20 reads per micro-batch)."""
    from op_audit import OpAudit

    model, processor = tiny_janus(seed=0)
    tokens = got_token_ids(processor)
    r = rollout(model, processor, PROMPTS[:2], 3, Sampling(max_chain_tokens=6, seed=1), decode=False)
    advantages = torch.linspace(-1.0, 1.0, len(r))
    syncs = []
    for micro in (6, 2):
        cfg = _config(tmp_path, micro_batch_size=micro, use_lora=False)
        with OpAudit() as audit:
            loss_and_backward(model, r, advantages, old=r.logprobs, ref=r.logprobs, config=cfg,
                              normalizer=loss_normalizer(r, cfg, len(r), 100), tokens=tokens)
        syncs.append(len(audit.kinds("host_sync", "data_dependent")))
    assert syncs[1] - syncs[0] <= 2 * 3, (syncs, audit.findings)


def test_kill_and_resume_continues_with_the_same_prompts_and_streams(tmp_path):
    straight = GRPOTrainer(*tiny_janus(seed=2), length_reward, _config(tmp_path / "a", max_steps=3), PROMPTS)
    straight.train()
    first = GRPOTrainer(*tiny_janus(seed=2), length_reward, _config(tmp_path / "b", max_steps=3, save_every=1), PROMPTS)
    first.train(max_steps=2)
    # "Killed" after step 2 and before its save: the last checkpoint is step 1, metrics.jsonl runs to step 2.
    shutil.rmtree(tmp_path / "b" / "step-0000002")
    (tmp_path / "b" / "latest").write_text("step-0000001")
    resumed = GRPOTrainer(*tiny_janus(seed=2), length_reward,
                          _config(tmp_path / "b", max_steps=3, save_every=1, resume_from=str(tmp_path / "b" / "step-0000001")), PROMPTS)
    assert resumed.step == 1
    resumed.train()
    expected, got = _trainable(straight.model), _trainable(resumed.model)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)
    assert [m["step"] for m in resumed.log.read()] == [1, 2, 3]
    assert [m["reward_mean"] for m in resumed.log.read()] == [m["reward_mean"] for m in straight.log.read()]


def test_non_finite_steps_are_skipped_counted_and_abort_after_the_limit(tmp_path):
    def nan_reward(prompts, chains, images, judge=None):
        return np.full(len(chains), np.nan, dtype=np.float32), {}

    trainer = GRPOTrainer(*tiny_janus(seed=3), {"nan": nan_reward}, _config(tmp_path, max_steps=1), PROMPTS)
    (metrics,) = trainer.train()  # NaN rewards: advantages 0, a finite (zero) update
    assert metrics["rewards_missing"] == 6 and metrics["advantage_abs_mean"] == 0 and not metrics["step_skipped"]

    trainer = GRPOTrainer(*tiny_janus(seed=3), length_reward, _config(tmp_path / "bad", max_steps=5, max_bad_steps=2), PROMPTS)
    with torch.no_grad():
        # a LoRA matrix every forward uses (the GoT tag rows only matter when a tag is sampled)
        next(p for n, p in trainer.model.named_parameters() if p.requires_grad and "lora_A" in n).fill_(float("nan"))
    with pytest.raises(RuntimeError, match="max_bad_steps=2"):
        trainer.train()
    assert trainer.skipped_steps == 2


def test_rule_reward_product_skips_components_that_do_not_apply():
    a = lambda p, c, i, j: (np.array([0.5, np.nan, np.nan], dtype=np.float32), {})
    b = lambda p, c, i, j: (np.array([0.5, 0.25, np.nan], dtype=np.float32), {})
    product = RuleReward({"a": a, "b": b})([""] * 3, [None] * 3, None)
    np.testing.assert_allclose(product.total, [0.25, 0.25, np.nan])
    mean = RuleReward({"a": a, "b": b}, mode="sum")([""] * 3, [None] * 3, None)
    np.testing.assert_allclose(mean.total, [0.5, 0.25, np.nan])


def test_bad_configuration_is_rejected_with_the_field_name(tmp_path):
    with pytest.raises(ValueError, match="prompts"):
        GRPOTrainer(*tiny_janus(), length_reward, _config(tmp_path), [])
    with pytest.raises(ValueError, match="GRPOConfig.group_size"):
        _config(tmp_path, group_size=1)
    with pytest.raises(TypeError, match="reward must be"):
        GRPOTrainer(*tiny_janus(), 3, _config(tmp_path), PROMPTS)
    with pytest.raises(ValueError, match=r"GRPOConfig.temperature must be > 0, got 0"):
        _config(tmp_path, temperature=0)
    with pytest.raises(ValueError, match=r"GRPOConfig.top_p must be in \(0, 1\] or None"):
        _config(tmp_path, top_p=1.5)
    with pytest.raises(ValueError, match=r"GRPOConfig.mixed_precision must be one of"):
        _config(tmp_path, mixed_precision="fp16")


def test_the_config_samples_with_its_own_fields_and_sampling_defaults():
    config = GRPOConfig(temperature=0.7, top_k=5, guidance=3.0, max_chain_tokens=64, seed=9)
    assert config.sampling == Sampling(max_chain_tokens=64, temperature=0.7, top_k=5, guidance=3.0, seed=9)
    defaults, sampling = GRPOConfig(), Sampling()
    assert (defaults.max_chain_tokens, defaults.temperature, defaults.top_k, defaults.top_p, defaults.guidance) == \
        (sampling.max_chain_tokens, sampling.temperature, sampling.top_k, sampling.top_p, sampling.guidance)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sampling.temperature = 2.0
    assert sampling.with_seed(4).seed == 4 and sampling.seed == 0


def _torchrun_worker(mode: str, out: Path) -> None:
    """Run tests/_grpo_dist_worker.py MODE on two gloo ranks."""
    worker = Path(__file__).with_name("_grpo_dist_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(worker), mode, str(out)], capture_output=True, text=True, timeout=600, env=env, cwd=out)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_ranks_with_gloo_end_with_identical_parameters(tmp_path):
    _torchrun_worker("replicated", tmp_path)
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert rank0.keys() == rank1.keys() and rank0
    for name in rank0:
        torch.testing.assert_close(rank0[name], rank1[name], rtol=0, atol=0, msg=name)
    steps = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if line]
    assert len(steps) == 2  # rank 0 alone logs
    # train() returns the same steps on every rank: the metrics are summed over ranks (timings are each rank's own).
    returned = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    global_keys = [k for k in steps[0] if not k.startswith(("seconds", "tokens_per_s"))]
    for r in (0, 1):
        assert [{k: m[k] for k in global_keys} for m in returned[r]] == [{k: m[k] for k in global_keys} for m in steps]
    assert any("lora_B" in n and rank0[n].abs().sum() > 0 for n in rank0), "the adapters did not move"


@pytest.mark.slow  # four processes; the replicated gloo test above stays in the default run
def test_fsdp_trains_like_the_replicated_model_and_resumes_exactly(tmp_path):
    """Full fine-tuning with a KL reference on two gloo ranks: FSDP2-sharded weights, gradients and AdamW
    state end where the replicated run ends; a sharded run resumed from its step-1 checkpoint ends
    bit for bit where the uninterrupted one does; the sharded checkpoint holds whole weights that load."""
    _torchrun_worker("fsdp", tmp_path)
    replicated, sharded, resumed = (torch.load(tmp_path / f"{run}.pt") for run in ("replicated", "fsdp", "resumed"))
    assert replicated.keys() == sharded.keys() == resumed.keys() and sharded
    initial = dict(tiny_janus(seed=0)[0].named_parameters())
    assert any(not torch.equal(sharded[n], initial[n]) for n in sharded), "the sharded run did not train"
    for name in sharded:
        torch.testing.assert_close(sharded[name], replicated[name], rtol=1e-4, atol=1e-5, msg=name)
        torch.testing.assert_close(resumed[name], sharded[name], rtol=0, atol=0, msg=name)
    saved, _ = load_policy(tmp_path / "fsdp" / "step-0000002" / "model")
    saved = dict(saved.named_parameters())
    for name in sharded:
        torch.testing.assert_close(saved[name], sharded[name], rtol=0, atol=0, msg=name)
    log = [json.loads(line) for line in (tmp_path / "fsdp" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in log] == [1, 2] and all(m["kl_mean"] >= 0 for m in log)
    # LoRA: the adapters and the GoT tag rows train under FSDP as they do replicated (Adam magnifies the
    # summation-order noise of gradients that start at zero, hence the looser tolerance).
    lora, lora_sharded = torch.load(tmp_path / "lora_replicated.pt"), torch.load(tmp_path / "lora_fsdp.pt")
    assert lora.keys() == lora_sharded.keys() and any("trainable_tokens_delta" in n for n in lora)
    lora_resumed = torch.load(tmp_path / "lora_resumed.pt")
    for name in lora:
        torch.testing.assert_close(lora_sharded[name], lora[name], rtol=1e-3, atol=1e-4, msg=name)
        torch.testing.assert_close(lora_resumed[name], lora_sharded[name], rtol=0, atol=0, msg=name)


def test_fsdp_without_a_process_group_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="GRPOConfig.fsdp=True needs torch.distributed"):
        GRPOTrainer(*tiny_janus(), length_reward, _config(tmp_path, fsdp=True), PROMPTS)


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "threads"), [(0, 1), (1, 2)])
def test_the_demo_learns_in_both_stages(tmp_path, seed, threads):
    """`gotr1 demo` as users run it (its own process, no Triton interpreter), at one configuration per thread
    count: SFT makes the chains copy the prompts and the images beat the shuffled control; GRPO then raises the
    held-out total by >= 0.10 and >= 4 standard errors, layout and colour each by >= 2 standard errors, while the
    chains keep their language (exact copy >= 0.90) and their boxes stay in the data's range (the demo's goals)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "gotr1.cli", "demo", "--out", str(tmp_path), "--no-progress",
                           "--seed", str(seed), "--threads", str(threads)],
                          capture_output=True, text=True, timeout=1800, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "summary.json").read_text())
    after_sft = result["stages"]["after SFT"]
    assert result["threads"] == threads and result["sft_exact"] >= 0.6, result
    assert result["chains_cut_by_cap"]["after SFT"] == 0, result
    assert after_sft["color"]["mean"] > result["color_shuffled_control"]["after SFT"] + 0.05, result
    assert result["vq"]["color_reconstructed"] >= 0.8, result["vq"]
    gain = result["grpo_gain"]
    assert gain["total"]["mean"] >= 0.10 and gain["total"]["mean"] >= 4 * gain["total"]["se"], gain
    for name in ("layout", "color"):
        assert gain[name]["mean"] >= 2 * gain[name]["se"], (name, gain)
    assert result["exact"]["after GRPO"] >= 0.90, result["exact"]
    assert result["within_data_range"]["after GRPO"] == {"box_area": True, "pairwise_iou": True}, result


def test_judge_failures_score_zero_are_counted_and_the_run_goes_on(tmp_path):
    """A random judge writes unparsable replies: the step completes, no sample gets a good score from it, and the
    failures are in the metrics (one outage step is below the abort limit)."""
    from gotr1.rewards import tiny_judge
    from gotr1.rewards.policy_reward import JudgeReward

    trainer = GRPOTrainer(*tiny_janus(seed=5), JudgeReward(tiny_judge(seed=0, max_new_tokens=4)),
                          _config(tmp_path, max_steps=1), PROMPTS)
    (metrics,) = trainer.train()
    assert 0 < metrics["judge_failures"] <= metrics["judge_requests"]
    assert {"reward_sem", "reward_spa", "reward_ri", "reward_pi"} <= set(metrics)


def test_a_dead_judge_is_refused_before_the_first_step(tmp_path):
    from gotr1.rewards import OpenAIJudge
    from gotr1.rewards.policy_reward import JudgeReward, JudgeUnavailableError

    judge = OpenAIJudge("http://127.0.0.1:9/v1", "judge", timeout=0.5, max_retries=1, backoff=0.01)
    trainer = GRPOTrainer(*tiny_janus(seed=5), JudgeReward(judge), _config(tmp_path, max_steps=2), PROMPTS)
    with pytest.raises(JudgeUnavailableError, match=r"127\.0\.0\.1:9.*did not answer a check request"):
        trainer.train()
    assert trainer.step == 0 and not list(tmp_path.glob("step-*"))


def test_consecutive_judge_outages_stop_the_run_with_a_checkpoint(tmp_path):
    from gotr1.rewards import tiny_judge
    from gotr1.rewards.policy_reward import JudgeReward, JudgeUnavailableError

    config = _config(tmp_path, max_steps=5, save_every=100, max_judge_outage_steps=2)
    trainer = GRPOTrainer(*tiny_janus(seed=5), JudgeReward(tiny_judge(seed=0, max_new_tokens=4)), config, PROMPTS)
    with pytest.raises(JudgeUnavailableError, match="for 2 consecutive steps"):
        trainer.train()
    assert trainer.step == 2 and (tmp_path / "latest").read_text() == "step-0000002"
    with pytest.raises(ValueError, match="GRPOConfig.judge_outage_rate"):
        _config(tmp_path, judge_outage_rate=1.0)


def test_several_updates_per_rollout_move_the_ratio_and_keep_one_schedule_step(tmp_path):
    trainer = GRPOTrainer(*tiny_janus(seed=6), length_reward, _config(tmp_path, max_steps=2, num_iterations=3), PROMPTS)
    log = trainer.train()
    assert trainer.scheduler.last_epoch == 2  # one schedule step per GRPO step, not per update
    assert abs(log[0]["ratio_mean"] - 1.0) > 1e-4  # the last update saw a policy that had already moved


def test_lora_adapters_start_from_the_config_seed_whatever_was_drawn_before(tmp_path):
    adapters = []
    for drawn in (1, 2):
        model, processor = tiny_janus(seed=0)
        torch.manual_seed(drawn)  # another process, another history of random draws
        trainer = GRPOTrainer(model, processor, length_reward, _config(tmp_path / str(drawn), seed=7), PROMPTS)
        adapters.append({n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n})
    assert adapters[0] and adapters[0].keys() == adapters[1].keys()
    assert all(torch.equal(adapters[0][n], adapters[1][n]) for n in adapters[0])


_TWO_STEPS = """
import json, sys
import numpy as np
from gotr1.grpo.config import GRPOConfig
from gotr1.grpo.trainer import GRPOTrainer
from gotr1.policy.model import load_policy
def length(prompts, chains, images, judge=None):
    return np.array([(len(c.text) % 13) / 12 for c in chains], dtype=np.float32), {}
folder, out, use_lora = sys.argv[1], sys.argv[2], sys.argv[3] == "lora"
config = GRPOConfig(output_dir=out, prompts_per_step=2, group_size=3, max_chain_tokens=12, max_steps=2, micro_batch_size=6,
                    lr=5e-3, lora_rank=4, use_lora=use_lora, progress=False, sample_every=0, seed=11)
prompts = ["a red square on the left of a blue circle", "two green triangles", "a yellow circle above a black square"]
log = GRPOTrainer(*load_policy(folder), {"length": length}, config, prompts).train()
print(json.dumps([{k: v for k, v in m.items() if not k.startswith(("seconds", "tokens_per_s"))} for m in log]))
"""


@pytest.mark.parametrize("use_lora", [pytest.param("lora", marks=pytest.mark.slow), "full"])
def test_two_processes_of_one_config_log_identical_metrics(tmp_path, use_lora):
    """A policy loaded from a folder, trained twice in fresh processes: the same metrics, bit for bit."""
    model, processor = tiny_janus(seed=2)
    model.save_pretrained(tmp_path / "policy")
    processor.save_pretrained(tmp_path / "policy")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    logs = []
    for run in ("a", "b"):
        done = subprocess.run([sys.executable, "-c", _TWO_STEPS, str(tmp_path / "policy"), str(tmp_path / run), use_lora],
                              capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        logs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert len(logs[0]) == 2 and logs[0] == logs[1]
    assert all(row["grad_norm"] > 0 for row in logs[0])

"""The GRPO variants on the trainer side: DAPO dynamic sampling, truncated-chain masking, dapo's global
normalisation, the rollout/trainer log-prob gap and truncated importance sampling, entropy metrics."""

import numpy as np
import pytest
import torch

from gotr1.grpo.config import GRPOConfig
from gotr1.grpo.trainer import GRPOTrainer, informative_groups
from gotr1.grpo.update import (
    loss_and_backward,
    loss_normalizer,
    policy_logprobs,
    tis_weights,
    token_selection,
    truncated_chains,
)
from gotr1.policy.model import got_token_ids, tiny_janus

PROMPTS = ["a red square on the left of a blue circle", "two green triangles", "a yellow circle above a black square",
           "a pink square and a brown triangle"]


def _config(tmp_path, **overrides):
    base = dict(output_dir=str(tmp_path), prompts_per_step=2, group_size=3, max_chain_tokens=12, max_steps=1,
                micro_batch_size=6, lr=5e-3, lora_rank=4, progress=False, sample_every=0, temperature=1.0)
    return GRPOConfig(**{**base, **overrides})


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def first_prompt_constant(prompts, chains, images, judge=None):
    """Constant on the first prompt's groups, varied (by chain length) on the others."""
    return np.array([0.5 if p == PROMPTS[0] else (len(c.text) % 13) / 12 for p, c in zip(prompts, chains)],
                    dtype=np.float32), {}


first_prompt_constant.__name__ = "mixed"


def constant_reward(prompts, chains, images, judge=None):
    return np.full(len(chains), 0.5, dtype=np.float32), {}


constant_reward.__name__ = "constant"


# --- dynamic sampling ------------------------------------------------------------------------

def test_informative_groups_are_nan_aware():
    nan = np.nan
    rewards = [1, 1, 1, 0, 1, nan, nan, nan, nan, 1, nan, nan, 2, 2, nan, 0, 1, 0]
    np.testing.assert_array_equal(informative_groups(np.array(rewards), 3), [False, True, False, False, False, True])


def test_dynamic_sampling_fills_the_step_with_informative_groups(tmp_path):
    cfg = _config(tmp_path, max_steps=3, filter_zero_std_groups=True, max_extra_rollouts=8)
    trainer = GRPOTrainer(*tiny_janus(seed=0), first_prompt_constant, cfg, PROMPTS)
    log = trainer.train()
    assert len(log) == 3
    for m in log:
        assert m["groups_trained"] == cfg.prompts_per_step, m
        assert m["groups_drawn"] >= cfg.prompts_per_step and m["groups_dropped"] <= m["groups_drawn"]
        assert m["advantage_abs_mean"] > 0
    # The first prompt's groups are constant: every epoch of 4 prompts drops at least one group.
    assert sum(m["groups_dropped"] for m in log) >= 1


def test_a_constant_reward_completes_the_step_and_logs_the_drops(tmp_path):
    cfg = _config(tmp_path, max_steps=2, filter_zero_std_groups=True, max_extra_rollouts=2)
    trainer = GRPOTrainer(*tiny_janus(seed=1), constant_reward, cfg, PROMPTS)
    log = trainer.train()
    assert [m["step"] for m in log] == [1, 2]
    for m in log:
        drawn = cfg.prompts_per_step * (1 + cfg.max_extra_rollouts)
        assert m["groups_drawn"] == drawn and m["groups_dropped"] == drawn and m["groups_trained"] == 0, m
        assert m["advantage_abs_mean"] == 0 and m["loss"] == 0 and not m["step_skipped"]


def test_without_filtering_nothing_is_dropped(tmp_path):
    trainer = GRPOTrainer(*tiny_janus(seed=1), constant_reward, _config(tmp_path), PROMPTS)
    (m,) = trainer.train()
    assert (m["groups_drawn"], m["groups_dropped"], m["groups_trained"]) == (2, 0, 2)


# --- truncated chains ------------------------------------------------------------------------

def _capped_rollout(trainer):
    """A rollout with both kinds of rows: chains cut by the cap and (row 0, rewritten if need be) a chain that
    stopped on its own, sampling ``<begin_of_image>`` one token before the cap."""
    r = trainer._rollout(PROMPTS[:2])
    cut = truncated_chains(r)
    if not cut.any():
        pytest.skip("the random policy stopped every chain on its own")
    if cut.all():
        n = int(r.chain_lengths[0]) - 1  # the appended <begin_of_image>'s column
        r.chain_ids[0, n - 1], r.chain_ids[0, n] = trainer.tokens.boi, trainer.tokens.pad
        r.chain_mask[0, n] = False
        r.chain_lengths[0] = n
    return r, truncated_chains(r)


def test_truncated_chains_leave_the_loss_but_their_image_tokens_stay(tmp_path):
    cfg = _config(tmp_path, max_chain_tokens=3, mask_truncated_chains=True, beta=0.0, use_lora=False)
    trainer = GRPOTrainer(*tiny_janus(seed=2), constant_reward, cfg, PROMPTS)
    r, cut = _capped_rollout(trainer)
    tokens = got_token_ids(trainer.processor)
    # The flag reads chain tokens only: the last one of a capped row was appended (not sampled).
    last = r.chain_ids.gather(1, (r.chain_lengths - 1)[:, None]).squeeze(1)
    assert torch.equal(last[cut], torch.full_like(last[cut], tokens.boi))
    assert cut.any() and not cut[0]
    selection = token_selection(r, cfg)
    assert not selection.chain[cut].any()
    assert torch.equal(selection.chain[~cut], r.chain_mask[~cut])  # a row that stopped on its own keeps its chain
    assert selection.image.all()  # image tokens of every row, capped or not

    # Gradient: with only the image loss, masking changes nothing; with only the chain loss, the capped rows'
    # advantages do not matter.
    model = trainer.model
    for image_only in (True, False):
        grads = []
        for mask_truncated in (False, True):
            c = _config(tmp_path, max_chain_tokens=3, mask_truncated_chains=mask_truncated, beta=0.0,
                        chain_loss=not image_only, image_loss=image_only)
            adv = torch.linspace(-1, 1, len(r))
            sel = token_selection(r, c)
            norm = loss_normalizer(r, c, len(r), sel.num_tokens(c))
            norm = type(norm)(norm.per_sequence, 1.0)  # the same scale, to compare sums
            loss_and_backward(model, r, adv, old=None, ref=None, config=c, normalizer=norm, tokens=tokens,
                              selection=sel)
            grads.append(_grads(model))
            model.zero_grad(set_to_none=True)
        if image_only:
            for n in grads[0]:
                torch.testing.assert_close(grads[1][n], grads[0][n], msg=n)
        else:
            c = _config(tmp_path, max_chain_tokens=3, mask_truncated_chains=True, beta=0.0, image_loss=False)
            adv = torch.linspace(-1, 1, len(r)).masked_fill(cut, 7.0)  # capped rows: any advantage
            sel = token_selection(r, c)
            loss_and_backward(model, r, adv, old=None, ref=None, config=c,
                              normalizer=type(norm)(norm.per_sequence, 1.0), tokens=tokens, selection=sel)
            changed = _grads(model)
            model.zero_grad(set_to_none=True)
            for n in grads[1]:
                torch.testing.assert_close(changed[n], grads[1][n], msg=n)
            assert any(not torch.allclose(grads[0][n], grads[1][n]) for n in grads[0])


def test_truncated_chains_are_logged(tmp_path):
    trainer = GRPOTrainer(*tiny_janus(seed=2), first_prompt_constant,
                          _config(tmp_path, max_chain_tokens=3, mask_truncated_chains=True), PROMPTS)
    (m,) = trainer.train()
    assert 0 <= m["truncated_chains"] <= 6 and np.isfinite(m["loss"])


# --- dapo normalisation ----------------------------------------------------------------------

def test_dapo_gradients_do_not_depend_on_the_micro_batch_size(tmp_path):
    grads = []
    for micro in (6, 4, 1):
        cfg = _config(tmp_path, loss_type="dapo", micro_batch_size=micro, beta=0.04, use_lora=False)
        trainer = GRPOTrainer(*tiny_janus(seed=3), constant_reward, cfg, PROMPTS)
        r = trainer._rollout(PROMPTS[:2])
        sel = token_selection(r, cfg)
        norm = loss_normalizer(r, cfg, len(r), sel.num_tokens(cfg))
        assert not norm.per_sequence and norm.scale == int(r.chain_mask.sum()) + r.image_ids.numel()
        ref = policy_logprobs(trainer.model, r, cfg, trainer.tokens)
        loss_and_backward(trainer.model, r, torch.tensor([1.0, -0.5, 0.25, -1.0, 0.5, 0.0]), old=r.logprobs,
                          ref=type(ref)(ref.chain - 0.01, ref.image + 0.02), config=cfg, normalizer=norm,
                          tokens=trainer.tokens, selection=sel)
        grads.append(_grads(trainer.model))
    for other in grads[1:]:
        assert other.keys() == grads[0].keys()
        for n in grads[0]:
            torch.testing.assert_close(other[n], grads[0][n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("loss_type", ["dapo", "cispo"])
def test_the_new_loss_types_train(tmp_path, loss_type):
    trainer = GRPOTrainer(*tiny_janus(seed=4), first_prompt_constant, _config(tmp_path, loss_type=loss_type), PROMPTS)
    (m,) = trainer.train()
    assert np.isfinite(m["loss"]) and m["grad_norm"] > 0


# --- off-policy gap, TIS, entropy ------------------------------------------------------------

def test_gap_metrics_are_zero_on_policy_and_entropies_are_logged(tmp_path):
    trainer = GRPOTrainer(*tiny_janus(seed=5), first_prompt_constant, _config(tmp_path, entropy_coef=0.01), PROMPTS)
    (m,) = trainer.train()
    assert {"logprob_gap_mean", "logprob_gap_max", "entropy_chain", "entropy_image", "truncated_chains"} <= set(m)
    assert 0 <= m["logprob_gap_mean"] <= m["logprob_gap_max"] < 1e-3
    assert m["entropy_chain"] > 0 and m["entropy_image"] > 0


def test_a_huge_tis_cap_equals_no_tis(tmp_path):
    cfg = _config(tmp_path, tis_cap=1e30, use_lora=False, beta=0.0)
    trainer = GRPOTrainer(*tiny_janus(seed=6), constant_reward, cfg, PROMPTS)
    r = trainer._rollout(PROMPTS[:2])
    train = policy_logprobs(trainer.model, r, cfg, trainer.tokens)
    shifted = type(train)(r.chain_logprobs + 0.3 * r.chain_mask, r.image_logprobs - 0.2)  # a rollout off-policy
    for level in ("token", "sequence"):
        sel = token_selection(r, _config(tmp_path, tis_cap=1e30, tis_level=level), train=train, rollout=shifted)
        chain_w, image_w = tis_weights(train, shifted, sel, 1e30, level)
        torch.testing.assert_close(sel.chain_weights, chain_w)
        if level == "token":
            torch.testing.assert_close(image_w, (train.image - shifted.image).exp())
    # On-policy weights are 1 wherever the loss looks; capped at tis_cap.
    sel = token_selection(r, cfg, train=train, rollout=r.logprobs)
    torch.testing.assert_close(sel.image_weights, torch.ones_like(sel.image_weights), atol=1e-4, rtol=0)
    capped = tis_weights(train, shifted, sel, 1.1, "token")[0]
    assert capped.max() <= 1.1 + 1e-6
    # The update with weights of ~1 equals the update without TIS.
    adv = torch.tensor([1.0, -0.5, 0.25, -1.0, 0.5, 0.0])
    out = []
    for tis in (None, 1e30):
        c = _config(tmp_path, tis_cap=tis, use_lora=False, beta=0.0)
        sel = token_selection(r, c, train=train, rollout=train)
        norm = loss_normalizer(r, c, len(r), sel.num_tokens(c))
        loss_and_backward(trainer.model, r, adv, old=train, ref=None, config=c, normalizer=norm,
                          tokens=trainer.tokens, selection=sel)
        out.append(_grads(trainer.model))
        trainer.model.zero_grad(set_to_none=True)
    for n in out[0]:
        torch.testing.assert_close(out[1][n], out[0][n], msg=n)


def test_top_entropy_quantile_and_tis_train_a_step(tmp_path):
    cfg = _config(tmp_path, top_entropy_quantile=0.5, tis_cap=2.0, tis_level="sequence", entropy_coef=0.01)
    trainer = GRPOTrainer(*tiny_janus(seed=7), first_prompt_constant, cfg, PROMPTS)
    r = trainer._rollout(PROMPTS[:2])
    train, entropy = policy_logprobs(trainer.model, r, cfg, trainer.tokens, with_entropy=True)
    sel = token_selection(r, cfg, train=train, rollout=r.logprobs, entropy=entropy)
    kept = (sel.image_weights > 0).float().mean()
    assert 0.4 <= float(kept) <= 0.6  # about half of the image tokens keep weight
    (m,) = trainer.train()
    assert np.isfinite(m["loss"])


def test_bad_options_are_rejected_with_the_field_name(tmp_path):
    for field, value in [("tis_cap", 0.0), ("tis_level", "row"), ("top_entropy_quantile", 0.0),
                         ("top_entropy_quantile", 1.5), ("entropy_coef", -1.0), ("max_extra_rollouts", -1),
                         ("cispo_eps_high", 0.0), ("loss_type", "ppo")]:
        with pytest.raises(ValueError, match=f"GRPOConfig.{field}"):
            _config(tmp_path, **{field: value})

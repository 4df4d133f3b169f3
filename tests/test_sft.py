"""Stage 1 SFT on the tiny model and synthetic GoT data: learning, exact resume, LoRA, data errors, token cache."""

import json
import shutil

import pytest
import torch

from gotr1.chain import parse_chain
from gotr1.demo.synthetic import write_synthetic_dataset
from gotr1.policy.model import tiny_janus
from gotr1.rollout import Sampling, generate_chains
from gotr1.train.config import SFTConfig
from gotr1.train.data import GoTDataError
from gotr1.train.sft import SFTTrainer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("got"), num_samples=8, image_size=64, seed=0)


def _config(data, out, **overrides):
    base = dict(data=str(data), output_dir=str(out), batch_size=4, lr=3e-3, warmup_steps=2, max_steps=40,
                save_every=1000, progress=False, cfg_dropout=0.1)
    return SFTConfig(**{**base, **overrides})


def test_loss_falls_and_the_model_then_writes_parsable_chains(data, tmp_path):
    model, processor = tiny_janus(seed=0)
    trainer = SFTTrainer(model, processor, _config(data, tmp_path, max_steps=60, cfg_dropout=0.0))
    log = trainer.train()
    first, last = sum(m["loss"] for m in log[:3]) / 3, sum(m["loss"] for m in log[-3:]) / 3
    assert last < 0.5 * first, (first, last)
    assert log[-1]["chain_loss"] < 1.0 and log[-1]["image_loss"] < log[0]["image_loss"]
    assert {"lr", "grad_norm", "tokens_per_s", "chain_loss", "image_loss"} <= set(log[-1])
    prompts = [trainer.dataset[i].prompt for i in range(4)]
    chains = generate_chains(trainer.model.eval(), processor, prompts, sampling=Sampling(max_chain_tokens=120, top_k=1))
    parsed = [parse_chain(text) for text in chains.texts]
    assert sum(len(c.objects) > 0 for c in parsed) >= 3, chains.texts
    # The metrics log and the final checkpoint are on disk.
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 60
    assert (tmp_path / "latest").read_text() == "step-0000060"


def _trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("use_lora", [False, True])
def test_resume_after_interruption_equals_an_uninterrupted_run(data, tmp_path, use_lora):
    straight = SFTTrainer(*tiny_janus(seed=1), _config(data, tmp_path / "a", max_steps=5, grad_accum=2, use_lora=use_lora, lora_rank=4))
    straight.train()
    first = SFTTrainer(*tiny_janus(seed=1), _config(data, tmp_path / "b", max_steps=5, grad_accum=2, save_every=2, use_lora=use_lora, lora_rank=4))
    first.train(max_steps=3)
    assert (tmp_path / "b" / "latest").read_text() == "step-0000003"
    # "Killed" after step 3 and before its save: the last checkpoint is step 2, metrics.jsonl runs to step 3.
    shutil.rmtree(tmp_path / "b" / "step-0000003")
    (tmp_path / "b" / "latest").write_text("step-0000002")
    resumed = SFTTrainer(*tiny_janus(seed=1), _config(data, tmp_path / "b", max_steps=5, grad_accum=2, save_every=2,
                                                      use_lora=use_lora, lora_rank=4, resume_from=str(tmp_path / "b" / "step-0000002")))
    assert resumed.step == 2
    resumed.train()
    expected, got = _trainable(straight.model), _trainable(resumed.model)
    assert expected.keys() == got.keys() and expected
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)
    steps = [m["step"] for m in resumed.log.read()]
    assert steps == [1, 2, 3, 4, 5]


def test_lora_trains_adapters_and_the_got_tag_rows_only(data, tmp_path):
    model, processor = tiny_janus(seed=2)
    trainer = SFTTrainer(model, processor, _config(data, tmp_path, max_steps=1, use_lora=True, lora_rank=4))
    names = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or "trainable_tokens" in n for n in names), names
    assert any("vision" not in n and "language_model" in n for n in names)
    trainer.train()
    saved = tmp_path / "step-0000001" / "model"
    assert (saved / "adapter_model.safetensors").is_file() and (saved / "tokenizer_config.json").is_file()


def test_image_tokens_are_cached_and_reused_on_the_second_pass(data, tmp_path):
    trainer = SFTTrainer(*tiny_janus(seed=3), _config(data, tmp_path, max_steps=4, batch_size=4))
    trainer.train()  # 16 rows seen: two passes over the 8 images
    assert trainer.image_cache.misses == 8 and trainer.image_cache.hits == 8
    again = SFTTrainer(*tiny_janus(seed=3), _config(data, tmp_path / "again", max_steps=1, image_cache_dir=str(tmp_path / "image_tokens")))
    again.train()
    assert again.image_cache.misses == 0 and again.image_cache.hits == 4


def test_bad_rows_error_with_file_and_line_or_are_skipped_and_counted(data, tmp_path):
    rows = data.read_text().splitlines()
    bad = json.loads(rows[1])
    bad["chain"] = "no tags at all"
    path = data.parent / "with_bad.jsonl"
    path.write_text("\n".join([rows[0], json.dumps(bad)] + rows[2:]) + "\n")
    with pytest.raises(GoTDataError, match=r"with_bad\.jsonl:2: .*no tagged objects"):
        SFTTrainer(*tiny_janus(), _config(path, tmp_path / "a"))
    trainer = SFTTrainer(*tiny_janus(), _config(path, tmp_path / "b", max_steps=1, skip_invalid=True))
    trainer.train()
    assert len(trainer.dataset) == 7
    state = json.loads((tmp_path / "b" / "step-0000001" / "state.json").read_text())
    assert state["skipped_rows"] == 1


def test_config_errors_name_the_field(data, tmp_path):
    with pytest.raises(ValueError, match="SFTConfig.data"):
        SFTTrainer(*tiny_janus(), SFTConfig(output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="SFTConfig.grad_accum must be >= 1"):
        SFTConfig(grad_accum=0)
    with pytest.raises(FileNotFoundError, match="resume_from"):
        SFTTrainer(*tiny_janus(), SFTConfig(data=str(data), output_dir=str(tmp_path / "run"), resume_from=str(tmp_path)))


def test_resuming_an_older_step_never_overwrites_newer_checkpoints(data, tmp_path):
    run = tmp_path / "run"
    SFTTrainer(*tiny_janus(seed=0), _config(data, run, max_steps=6, save_every=2, keep_last=None)).train()
    before = sorted(p.name for p in run.glob("step-*"))
    assert before == ["step-0000002", "step-0000004", "step-0000006"]
    with pytest.raises(ValueError, match=r"older than step-0000006 .*new folder to branch"):
        SFTTrainer(*tiny_janus(seed=0), _config(data, run, max_steps=6, save_every=2, resume_from=str(run / "step-0000004")))
    assert sorted(p.name for p in run.glob("step-*")) == before and (run / "latest").read_text() == "step-0000006"
    branch = tmp_path / "branch"  # a branch goes to its own folder, leaving the run whole
    SFTTrainer(*tiny_janus(seed=0), _config(data, branch, max_steps=6, save_every=2, keep_last=1,
                                             resume_from=str(run / "step-0000004"))).train()
    assert sorted(p.name for p in branch.glob("step-*")) == ["step-0000006"]
    assert sorted(p.name for p in run.glob("step-*")) == before


def test_metrics_log_survives_a_torn_last_line_and_names_a_broken_one(tmp_path):
    from gotr1.train.metrics_log import MetricsLog

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    with pytest.warns(UserWarning, match=r"metrics.jsonl:3: dropping a torn last line"):
        log = MetricsLog(path, resume_step=2)
    assert [r["step"] for r in log.read()] == [1, 2] and not list(tmp_path.glob(".*tmp"))
    path.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: unreadable metrics line"):
        MetricsLog(path, resume_step=3)


@pytest.mark.parametrize("damage", ["0xff_weights", "truncated_weights", "empty_scheduler", "truncated_optimizer",
                                    "state_without_step", "state_not_json"])
def test_a_damaged_checkpoint_is_refused_by_name_before_training(data, tmp_path, damage):
    from gotr1.train.checkpoint import CorruptCheckpointError

    run = tmp_path / "run"
    SFTTrainer(*tiny_janus(seed=0), _config(data, run, max_steps=4, save_every=2, keep_last=None)).train()
    step = run / "step-0000004"
    target = {"0xff_weights": "model/model.safetensors", "truncated_weights": "model/model.safetensors",
              "empty_scheduler": "scheduler.pt", "truncated_optimizer": "optimizer.pt",
              "state_without_step": "state.json", "state_not_json": "state.json"}[damage]
    path = step / target
    raw = bytearray(path.read_bytes())
    if damage == "0xff_weights":
        raw[len(raw) // 2: len(raw) // 2 + 4096] = b"\xff" * 4096
    elif damage.startswith("truncated"):
        raw = raw[: len(raw) // 3]
    elif damage == "empty_scheduler":
        raw = b""
    elif damage == "state_without_step":
        raw = b'{"epoch": 0, "cursor": 8}'
    else:
        raw = b'{"step": 4,'
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpointError, match=str(path).replace("\\", "\\\\")) as refused:
        SFTTrainer(*tiny_janus(seed=0), _config(data, tmp_path / "resumed", max_steps=6, resume_from=str(run)))
    assert "newest intact checkpoint is" in str(refused.value) and "step-0000002" in str(refused.value)
    (step / "checksums.json").unlink()  # a hand-made checkpoint, trusted unverified: the loaders name the file
    if damage != "0xff_weights":  # 0xFF in the middle of weight data can still parse, and is caught as non-finite
        with pytest.warns(UserWarning, match="resuming it unverified"), \
                pytest.raises(CorruptCheckpointError, match=str(path).replace("\\", "\\\\")):
            SFTTrainer(*tiny_janus(seed=0), _config(data, tmp_path / "resumed", max_steps=6, resume_from=str(run),
                                                     trust_unverified=True))


def test_nan_weights_in_a_checkpoint_without_checksums_are_refused(data, tmp_path):
    from safetensors.torch import load_file, save_file

    from gotr1.train.checkpoint import CorruptCheckpointError

    run = tmp_path / "run"
    SFTTrainer(*tiny_janus(seed=0), _config(data, run, max_steps=2, save_every=2)).train()
    weights = run / "step-0000002" / "model" / "model.safetensors"
    tensors = load_file(weights)
    name = next(n for n, t in tensors.items() if t.is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, weights, metadata={"format": "pt"})
    (run / "step-0000002" / "checksums.json").unlink()
    with pytest.warns(UserWarning, match="unverified"), pytest.raises(CorruptCheckpointError, match="non-finite values"):
        SFTTrainer(*tiny_janus(seed=0), _config(data, tmp_path / "resumed", max_steps=4, resume_from=str(run),
                                                 trust_unverified=True))


def test_a_damaged_image_token_cache_entry_is_encoded_again(data, tmp_path):
    from gotr1.train.data import GoTDataset
    from gotr1.train.image_tokens import ImageTokenCache

    model, _ = tiny_janus(seed=0)
    cache = ImageTokenCache(model, tmp_path / "cache")
    paths = [row.image_path for row in GoTDataset(data)][:2]
    first = cache.encode(paths)
    entry = next((tmp_path / "cache").rglob("*.npy"))
    entry.write_bytes(b"not numpy")
    with pytest.warns(UserWarning, match="is damaged"):
        again = cache.encode(paths)
    assert torch.equal(first, again)
